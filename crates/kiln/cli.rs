//! Command-line syntax, modelled on the `docker` CLI.
// clap turns these doc comments into `--help` text, where `[:port]` and the like are literal.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod build;
mod container;
mod history;
mod network;
mod remote;
mod run;
mod volume;
pub use build::BuildxArgs;
pub use container::ContainerCommand;
pub use history::{HistoryCommand, build_history_words};
pub use network::NetworkCommand;
pub use remote::RemoteOpts;
pub use run::{ConfinementArgs, ExecArgs, LogsArgs, RunArgs};
pub use volume::VolumeCommand;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI images from Dockerfiles, push them, run them. No daemon."
)]
pub struct Cli {
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Store directory [default: /var/lib/kiln as root, else $XDG_DATA_HOME/kiln]
    #[arg(long, global = true, env = "KILN_ROOT")]
    pub root: Option<PathBuf>,
    /// Registry (host[:port]) to reach over plain HTTP; loopback registries always are.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Per-registry CAs and client certificates: DIR/<host:port>/{*.crt,client.cert,client.key}
    #[arg(
        long = "registry-certs-dir",
        global = true,
        env = "KILN_REGISTRY_CERTS_DIR",
        value_name = "DIR",
        default_value = kiln_registry::DEFAULT_CERTS_DIR
    )]
    pub registry_certs_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (`kiln build history --help`: the recorded builds)
    Build(Box<BuildArgs>),
    /// Recorded builds: `kiln build history ls|inspect|logs|rm|prune`
    #[command(name = "build-history", hide = true)]
    BuildHistory {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Run a command in a new container of an image
    Run(Box<RunArgs>),
    /// Create a new container of an image without starting it (prints its ID)
    Create(Box<RunArgs>),
    /// Start created or stopped containers
    Start {
        /// Attach to the container's output (and stdin with -i) until it exits
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin (with -a)
        #[arg(short, long)]
        interactive: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Attach this terminal to a running container's input and output
    Attach {
        /// Do not attach stdin
        #[arg(long = "no-stdin")]
        no_stdin: bool,
        /// Keys that detach this terminal and leave the container running (with a tty)
        #[arg(
            long = "detach-keys",
            value_name = "KEYS",
            default_value = "ctrl-p,ctrl-q"
        )]
        detach_keys: String,
        container: String,
    },
    /// Stop (as `stop` does) and start containers again
    Restart {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List images
    Images {
        /// Show only images that match: reference=PATTERN, dangling=true|false,
        /// label=KEY[=VALUE] (repeatable)
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Remove one or more images, by name or ID
    Rmi {
        /// Remove the last name of an image a stopped container uses, or every name of an
        /// image given by ID
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a name TARGET that refers to SOURCE
    Tag { source: String, target: String },
    /// Show details of containers or images as JSON
    Inspect {
        #[arg(required = true, value_name = "CONTAINER|IMAGE")]
        images: Vec<String>,
        /// Print the images' SBOM attestations (in-toto statements with SPDX documents)
        #[arg(long, conflicts_with = "provenance")]
        sbom: bool,
        /// Print the images' provenance attestations (in-toto statements, SLSA v0.2 or v1)
        #[arg(long)]
        provenance: bool,
    },
    /// List containers (running ones; -a for all)
    Ps {
        /// Show all containers, not only running ones
        #[arg(short, long)]
        all: bool,
        /// Only print container IDs
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print a container's output
    Logs(LogsArgs),
    /// Stop containers: the image's STOPSIGNAL (default SIGTERM), then SIGKILL after a grace time
    Stop {
        /// Seconds to wait before SIGKILL
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers
    Kill {
        /// Signal name or number
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait for containers to exit and print their exit codes
    Wait {
        /// not-running (at once if stopped), next-exit, or removed
        #[arg(long, default_value = "not-running")]
        condition: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Run a command in a running container
    Exec(ExecArgs),
    /// List a container's published ports, or the host side of one (PORT[/PROTOCOL])
    Port {
        container: String,
        port: Option<String>,
    },
    /// Remove containers
    Rm {
        /// Kill running containers first
        #[arg(short, long)]
        force: bool,
        /// Also remove the containers' anonymous volumes
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Create an image from a container's changes
    Commit {
        container: String,
        /// Name for the new image (none: an unnamed image, printed by ID)
        image: Option<String>,
        /// Commit message (the history entry's comment)
        #[arg(short, long)]
        message: Option<String>,
        /// Author of the image
        #[arg(short, long)]
        author: Option<String>,
    },
    /// List the files a container changed: C modified, A added, D deleted
    Diff { container: String },
    /// Rename a container
    Rename { container: String, new_name: String },
    /// Copy files between a container and the host: `kiln cp CONTAINER:PATH DEST` or
    /// `kiln cp SRC CONTAINER:PATH` (`-`: a tar on stdin or stdout)
    Cp {
        src: String,
        dest: String,
        /// Own copied files by the container's user (docker cp -a)
        #[arg(short, long)]
        archive: bool,
    },
    /// Freeze every process of running containers
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a running container's processes (`ps` options: -ef by default, aux, -o FIELDS)
    Top {
        container: String,
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        ps_args: Vec<String>,
    },
    /// Show running containers' CPU, memory, network, block I/O and pids (every second)
    Stats {
        /// Print one sample and exit
        #[arg(long = "no-stream")]
        no_stream: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Change containers' resource limits (applied at once where the container has a cgroup
    /// for them, else from its next start)
    Update {
        /// Memory limit (bytes, or with k, m, g)
        #[arg(short, long)]
        memory: Option<String>,
        /// Number of CPUs (1.5 = one and a half)
        #[arg(long)]
        cpus: Option<f64>,
        /// Most processes at once (-1: no limit)
        #[arg(long = "pids-limit", allow_hyphen_values = true)]
        pids_limit: Option<i64>,
        /// Restart policy: no, always, unless-stopped, on-failure[:N]
        #[arg(long, value_name = "POLICY")]
        restart: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Write a container's filesystem as a tar (to stdout by default)
    Export {
        container: String,
        /// Write to this file instead of stdout
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Manage containers
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Manage volumes
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Manage networks
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Serve Docker's Engine API (v1.41) on a UNIX socket, for docker, docker-py and compose
    Serve(ServeArgs),
    /// Pull an image from a registry
    Pull {
        image: String,
        /// Platform to select from a multi-platform image (os/arch[/variant])
        #[arg(long)]
        platform: Option<String>,
    },
    /// Push images to a registry (`kiln push a:1 a:2`, or `--all-tags REPOSITORY`)
    Push(PushArgs),
    /// Log in to a registry (credentials go to $DOCKER_CONFIG/config.json or its helper)
    Login(LoginArgs),
    /// Log out from a registry
    Logout {
        /// Registry host[:port] [default: docker.io]
        registry: Option<String>,
    },
    /// Verify the store: every blob's digest, every image's manifest, config and layers, every
    /// cache record's layer, every snapshot; report leftovers of interrupted processes
    Check {
        /// Remove leftovers, corrupt blobs, dangling cache records and incomplete snapshots
        #[arg(long)]
        repair: bool,
    },
    /// Manage the store
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
    /// Remove build cache and data no tagged image needs, least recently used first
    Prune(PruneArgs),
    /// Save images to a tar archive (`docker save` format), to stdout by default
    Save {
        /// Write to this file instead of stdout
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a docker-archive or OCI layout tar, from stdin by default
    Load {
        /// Read from this file instead of stdin
        #[arg(short = 'i', long)]
        input: Option<PathBuf>,
        /// Do not print the loaded names
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Create an image from a root filesystem tarball (like `docker import`)
    Import {
        /// A tar archive (optionally gzip-compressed), or `-` for stdin
        file: PathBuf,
        /// Name for the new image
        image: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage: images, build cache, snapshots, cache mounts, and what prune --all frees
    Df {
        /// List every image, cache record, snapshot and cache mount
        #[arg(short, long)]
        verbose: bool,
    },
    /// Show the binfmt_misc handlers that run other CPUs' binaries (qemu-user), which RUN for
    /// a foreign --platform needs
    Binfmt {
        /// Register Debian's qemu-user-static handlers (/usr/lib/binfmt.d/qemu-*.conf) with
        /// the F flag (kernel-wide; needs root)
        #[arg(long)]
        install: bool,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove untagged images, all build cache and cache mounts
    #[arg(short, long)]
    pub all: bool,
    /// Stop once the store is no larger than this (e.g. 10GB, 500MB; K/M/G are powers of 1024)
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Only what was unused for a while: until=DURATION (e.g. until=24h)
    #[arg(long = "filter", value_name = "until=DURATION")]
    pub filters: Vec<String>,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Names to push (name:tag); with --all-tags, one repository
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Push every tag of the repository in the local store
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    #[command(flatten)]
    pub output: PushOutputArgs,
    #[command(flatten)]
    pub compression: CompressionArgs,
}

/// How a push is made and reported; shared by `kiln push` and `kiln build --push`.
#[derive(Debug, Args)]
pub struct PushOutputArgs {
    /// Manifest media types: oci or docker (Docker v2 schema 2) [default: as stored]
    #[arg(long, value_name = "oci|docker")]
    pub format: Option<String>,
    /// Write the image's digests and names as JSON to this file, as BuildKit's --metadata-file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host[:port] [default: docker.io]
    pub registry: Option<String>,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (visible to other users of this machine; prefer --password-stdin)
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password (or token) from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory; `-` for a tar (`-f` then names the Dockerfile inside it)
    /// or a lone Dockerfile on stdin; a git URL (https://host/org/repo.git#REF:SUBDIR,
    /// git@host:org/repo.git); or an http(s) URL of a tarball
    pub context: PathBuf,
    /// Name and optionally a tag (name:tag); may be repeated
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Dockerfile path [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable (NAME=VALUE, or NAME to take it from the environment)
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long)]
    pub target: Option<String>,
    /// Network for RUN steps: default (private, NAT to the outside; needs slirp4netns), none
    /// or host [default: default]
    #[arg(long)]
    pub network: Option<String>,
    /// Add a line to /etc/hosts of every RUN step: NAME:ADDRESS; may be repeated
    #[arg(long = "add-host", value_name = "NAME:ADDRESS")]
    pub add_host: Vec<String>,
    /// Secret for RUN --mount=type=secret: id=NAME[,src=FILE] or type=env,id=NAME[,env=VAR];
    /// may be repeated
    #[arg(long = "secret", value_name = "id=NAME[,src=FILE|,env=VAR]")]
    pub secrets: Vec<String>,
    /// Grant an entitlement; only network.host (lets RUN use --network=host)
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the build cache for these stages (names or indexes); may be repeated
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Also take steps from this exported cache: type=registry,ref=REF or type=local,src=DIR
    /// (a bare REF is a registry); may be repeated, earlier ones preferred. Cache mounts it
    /// carries seed new ones unless cache-mounts=false; cache-mounts-max-size=SIZE (1g)
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// Export the build cache: type=registry,ref=REF or type=local,dest=DIR, with
    /// mode=min (the final image's stages; default) or mode=max (every stage);
    /// cache-mounts=true also exports RUN --mount=type=cache directories; may be repeated
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=max]")]
    pub cache_to: Vec<String>,
    /// Say why each step that missed the cache missed (e.g. "COPY . /app: 1 file changed: a.rs")
    #[arg(long)]
    pub explain: bool,
    /// When a RUN fails: fail (default); shell (an interactive /bin/sh in the failed step's
    /// sandbox as it was, needs a terminal), shell:CMD (CMD there instead), or keep (keep it as
    /// a stopped container for ps -a, start -ai, commit, rm)
    #[arg(long = "on-error", value_name = "fail|shell[:CMD]|keep")]
    pub on_error: Option<String>,
    /// Always re-resolve base image tags against their registries
    #[arg(long)]
    pub pull: bool,
    /// Target platforms (os/arch[/variant], several separated by commas: one image index)
    /// [default: $DOCKER_DEFAULT_PLATFORM, else the host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// How many independent stages may be busy at once; a RUN that only waits (sleep, network)
    /// lends its stage's slot [default: the number of CPUs]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Progress output: auto (tty on a terminal, else plain), tty, plain, rawjson or quiet
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Also export the result: type=oci|docker,dest=FILE (image tar), type=local,dest=DIR (final
    /// filesystem), type=tar,dest=FILE; dest=- is stdout; `-o DIR` is type=local
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    pub outputs: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Print only the image ID
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Push every -t tag to its registry after the build
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub push_output: PushOutputArgs,
    /// Run the build checks and report their warnings without building (--call=check)
    #[arg(long)]
    pub check: bool,
    /// Attach an SBOM attestation: true or false (`generator=IMAGE` is accepted and ignored:
    /// kiln scans the image itself)
    #[arg(
        long,
        value_name = "true|false",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub sbom: Option<String>,
    /// Attach a SLSA provenance attestation: true (mode=min), false, mode=min or mode=max,
    /// with version=v1 for SLSA v1 (else v0.2)
    /// [default: mode=min with --push or --output type=oci, as buildx; else none]
    #[arg(
        long,
        value_name = "mode=min|max[,version=v0.2|v1]|false",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub provenance: Option<String>,
    /// Attach an attestation: type=sbom or type=provenance[,mode=min|max][,version=v0.2|v1];
    /// may be repeated
    #[arg(long = "attest", value_name = "type=sbom|provenance[,mode=…]")]
    pub attest: Vec<String>,
    #[command(flatten)]
    pub compression: CompressionArgs,
    #[command(flatten)]
    pub buildx: BuildxArgs,
}

/// Layer compression, as BuildKit's `compression` and `compression-level` export options.
#[derive(Debug, Args)]
pub struct CompressionArgs {
    /// Layer compression: gzip, zstd or uncompressed [build default: gzip; push default: as
    /// stored]
    #[arg(long, value_name = "ALGORITHM")]
    pub compression: Option<String>,
    /// Compression level (gzip 0-9, zstd 1-22) [default: gzip 6, zstd 3]; existing layers are
    /// re-encoded unless they were written at exactly this level
    #[arg(
        long = "compression-level",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub compression_level: Option<i32>,
}

/// Privileges and resource limits of a container (Docker's flags and defaults).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen, unix:///PATH or (with --tlsverify) tcp://HOST:PORT; repeatable
    /// [default: unix:///run/kiln/kiln.sock as root, else unix://$XDG_RUNTIME_DIR/kiln/kiln.sock].
    /// Plain tcp:// is refused.
    #[arg(short = 'H', long = "host", value_name = "URL")]
    pub hosts: Vec<String>,
    /// Serve tcp:// hosts with mutual TLS: clients need a certificate from --tlscacert
    #[arg(long)]
    pub tlsverify: bool,
    /// CA certificate (PEM) that client certificates must be signed by
    #[arg(long, value_name = "FILE", requires = "tlsverify")]
    pub tlscacert: Option<PathBuf>,
    /// The server's certificate (PEM)
    #[arg(long, value_name = "FILE", requires = "tlsverify")]
    pub tlscert: Option<PathBuf>,
    /// The server's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tlsverify")]
    pub tlskey: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers
    #[arg(long, default_value_t = 10, hide = true)]
    pub header_timeout: u64,
}
