//! `kiln container`'s subcommands (docker's names).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove every stopped container
    Prune {
        /// Only those matching: until=TIME|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
        #[arg(long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
        /// Do not ask for confirmation (kiln never asks)
        #[arg(short, long)]
        force: bool,
    },
}
