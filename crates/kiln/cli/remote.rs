//! `kiln --host`: where a daemon is and how to reach it, as the docker CLI's `-H` and TLS flags.

use std::path::PathBuf;

use clap::Args;

/// Flags before the command (`kiln --host unix:///run/kiln/kiln.sock ps`); not `global`, since
/// `kiln serve` has a `--host` of its own: where to listen.
#[derive(Debug, Clone, Default, Args)]
pub struct RemoteOpts {
    /// Send commands to this daemon's Engine API instead of running them in-process:
    /// unix:///PATH or tcp://HOST:PORT (TCP only with --tlsverify)
    #[arg(short = 'H', long = "host", env = "KILN_HOST", value_name = "URL")]
    pub host: Option<String>,
    /// Use mutual TLS and verify the daemon (needed for tcp:// hosts) [env: KILN_TLS_VERIFY]
    #[arg(long)]
    pub tlsverify: bool,
    /// CA the daemon's certificate must be signed by [default: $KILN_CERT_PATH/ca.pem]
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// This client's certificate [default: $KILN_CERT_PATH/cert.pem]
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// This client's key [default: $KILN_CERT_PATH/key.pem]
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}
