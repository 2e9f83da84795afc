//! `kiln network`'s subcommands and flags (docker's names).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network
    Create {
        name: String,
        /// Driver (only bridge)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR notation (default: the first free of 172.18-31.0.0/16, then
        /// 192.168.N.0/20)
        #[arg(long)]
        subnet: Option<String>,
        /// The bridge's address (default: the subnet's first)
        #[arg(long)]
        gateway: Option<String>,
        /// Give containers addresses from this part of the subnet only
        #[arg(long = "ip-range")]
        ip_range: Option<String>,
        /// No way out: no NAT, nothing forwarded off the network
        #[arg(long)]
        internal: bool,
        /// Set metadata (KEY=VALUE)
        #[arg(long = "label")]
        labels: Vec<String>,
        /// An address of the subnet never given to a container (NAME=ADDRESS); may be repeated
        #[arg(long = "aux-address")]
        aux_addresses: Vec<String>,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only print network IDs
        #[arg(short, long)]
        quiet: bool,
        /// Print full IDs
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Show details of networks as JSON
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (not while containers are connected)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove all user-defined networks no container is connected to
    Prune {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a container to a network
    Connect {
        network: String,
        container: String,
        /// Another name of the container on this network; may be repeated
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The container's address on this network
        #[arg(long)]
        ip: Option<String>,
    },
    /// Disconnect a container from a network
    Disconnect {
        network: String,
        container: String,
        /// Accepted for docker's syntax
        #[arg(short, long)]
        force: bool,
    },
}
