//! `kiln build` flags that come from `docker buildx build`: image metadata, RUN limits,
//! named contexts, SSH forwarding and the `--call` subrequests. Kept apart from the flags
//! kiln had first so `BuildArgs` stays readable; clap flattens them into one `--help`.

use clap::Args;

#[derive(Debug, Args)]
pub struct BuildxArgs {
    /// Set a label on the image: KEY=VALUE (over a LABEL of the same key); may be repeated
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Annotate the image manifest: [manifest:]KEY=VALUE; may be repeated
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Size of /dev/shm in RUN steps, e.g. 128m [default: 64m]
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// Resource limit of RUN steps: NAME=SOFT[:HARD] (e.g. nofile=1024:2048; -1 is
    /// unlimited); may be repeated
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Additional build contexts: NAME=VALUE, VALUE a directory, docker-image://REF,
    /// oci-layout://PATH[@DIGEST|:TAG], a git URL or an http(s) tarball URL; FROM NAME,
    /// COPY --from=NAME and RUN --mount=from=NAME then read it; may be repeated
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// SSH agent socket or keys to expose to RUN --mount=type=ssh (and to git for ssh
    /// contexts): default|ID[=SOCKET|KEY[,KEY…]]; may be repeated
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEY[,KEY…]]")]
    pub ssh: Vec<String>,
    /// Load the result into the local image store: what kiln always does (accepted so that
    /// buildx scripts run unchanged)
    #[arg(long)]
    pub load: bool,
    /// How to evaluate the build: build (the default), check (as --check), outline (the build
    /// args, secrets and SSH agents it reads) or targets (its stages)
    #[arg(long = "call", value_name = "METHOD", default_value = "build")]
    pub call: String,
    /// Shorthand for --call=outline|targets (as buildx's --print)
    #[arg(long = "print", value_name = "METHOD", hide = true)]
    pub print: Option<String>,
}
