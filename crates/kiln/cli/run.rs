//! The flags of the commands that start processes in containers: `kiln run`/`create`
//! (`RunArgs`, with the confinement flags), `kiln exec` and `kiln logs`.

use clap::Args;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with its time (RFC 3339, nanoseconds)
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only output since this time (RFC 3339) or this long ago (10m, 1h30m)
    #[arg(long)]
    pub since: Option<String>,
    /// Only output until this time (RFC 3339) or this long ago
    #[arg(long)]
    pub until: Option<String>,
    /// Number of lines from the end, or "all"
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// User (name|uid[:group|gid])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Set an environment variable (K=V, or K to take it from the environment)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    pub container: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Default)]
pub struct ConfinementArgs {
    /// Add a Linux capability (e.g. NET_ADMIN, or ALL) to Docker's default set
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (or ALL) from Docker's default set
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// no-new-privileges, or seccomp=unconfined
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Memory limit (e.g. 512m, 2g)
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Most processes and threads the container may have at once
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Number of CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<f64>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container (and its anonymous volumes) when it exits
    #[arg(long)]
    pub rm: bool,
    /// Restart policy when the container exits: no, always, unless-stopped, on-failure[:N]
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Run in the background and print the container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keys that detach this terminal from a -t container and leave it running
    #[arg(
        long = "detach-keys",
        value_name = "KEYS",
        default_value = "ctrl-p,ctrl-q"
    )]
    pub detach_keys: String,
    /// Name of the container [default: a generated adjective_surname]
    #[arg(long)]
    pub name: Option<String>,
    /// Platform to pick from a multi-platform image (os/arch[/variant]) [default: the host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Keep stdin open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run an init as PID 1 that forwards signals and reaps zombies (kiln always does)
    #[arg(long)]
    pub init: bool,
    /// Mount: type=volume|bind|tmpfs,src=…,dst=…[,readonly]
    #[arg(long = "mount", value_name = "type=TYPE,…")]
    pub mounts: Vec<String>,
    /// Set an environment variable (K=V, or K to take it from the environment)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// A volume or bind mount: NAME:/PATH[:ro], /HOST/PATH:/PATH[:ro], or /PATH (anonymous)
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Network: default (private, NAT to the outside through slirp4netns), none, host,
    /// bridge (as root the default bridge network, else the default), or the name of a
    /// network made with `kiln network create` [default: default]
    #[arg(long)]
    pub network: Option<String>,
    /// Address on the --network (a user-defined network)
    #[arg(long)]
    pub ip: Option<String>,
    /// Another name of the container on the --network (a user-defined network); may be
    /// repeated
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// Container NIS domain name (the UTS domain name; HOSTNAME.DOMAIN in /etc/hosts)
    #[arg(long)]
    pub domainname: Option<String>,
    /// A nameserver for /etc/resolv.conf (on a user-defined network: where the embedded DNS
    /// server sends names it does not know); may be repeated
    #[arg(long = "dns", value_name = "ADDRESS")]
    pub dns: Vec<String>,
    /// A search domain for /etc/resolv.conf instead of the host's ("." for none); may be
    /// repeated
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// An option for /etc/resolv.conf instead of the host's (ndots:2, timeout:3, …); may be
    /// repeated
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Link another container as NAME[:ALIAS]: on the default bridge an /etc/hosts line and
    /// ALIAS_* variables, on a user-defined network a name only this container resolves;
    /// may be repeated
    #[arg(long = "link", value_name = "NAME[:ALIAS]")]
    pub link: Vec<String>,
    /// Add a line to the container's /etc/hosts: NAME:ADDRESS; may be repeated
    #[arg(long = "add-host", value_name = "NAME:ADDRESS")]
    pub add_host: Vec<String>,
    /// Publish a container's port on the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp],
    /// ranges such as 8000-8001:80-81; no host port: one the kernel picks. May be repeated
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Publish every exposed port (the image's EXPOSE and --expose) on ports the kernel picks
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or range (PORT[/PROTOCOL]) without publishing it; may be repeated
    #[arg(long, value_name = "PORT")]
    pub expose: Vec<String>,
    #[command(flatten)]
    pub confinement: ConfinementArgs,
    /// Image to run
    pub image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
