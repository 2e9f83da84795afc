//! `kiln volume`'s subcommands and flags (docker's names).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (an anonymous one without a name)
    Create {
        name: Option<String>,
        /// Set metadata (KEY=VALUE)
        #[arg(short, long = "label")]
        labels: Vec<String>,
    },
    /// List volumes
    Ls {
        /// Only print volume names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show details of volumes as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (not while a container uses them)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (-a: unused named ones too)
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
}
