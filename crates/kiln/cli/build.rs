//! `kiln build` flags that come from `docker buildx build`: image metadata, RUN limits,
//! named contexts, SSH forwarding and the `--call` subrequests. Kept apart from the flags
//! kiln had first so `BuildArgs` stays readable; clap flattens them into one `--help`.

use clap::Args;

#[derive(Debug, Args)]
pub struct BuildxArgs {
    /// Set metadata for an image: KEY=VALUE; may be repeated
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Add annotation to the image: [manifest:]KEY=VALUE (the image manifest's); may be
    /// repeated
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Shared memory size for RUN steps (/dev/shm), e.g. 128m [default: 64m]
    #[arg(long = "shm-size", value_name = "BYTES")]
    pub shm_size: Option<String>,
    /// Ulimit options for RUN steps: NAME=SOFT[:HARD] (e.g. nofile=1024:2048, -1 unlimited);
    /// may be repeated
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
    /// Set evaluation methods for the frontend: build (default), check, outline or targets
    #[arg(long = "call", value_name = "METHOD", default_value = "build")]
    pub call: String,
    /// Shorthand for --call=outline|targets (as buildx's --print)
    #[arg(long = "print", value_name = "METHOD", hide = true)]
    pub print: Option<String>,
}
