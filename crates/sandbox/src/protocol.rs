//! What the host and the re-executed init say to each other. The host writes one
//! [`InitRequest`] as JSON on the spec pipe and closes it; the init answers with
//! newline-delimited [`StatusMessage`]s on the status pipe, whose last copy closes when the
//! user's process is executed (close-on-exec) or when the init gives up.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::InitFailure;
use crate::spec::{ProcessSpec, SandboxSpec};
use crate::stubs::Stub;

/// argv[1] marking a re-executed binary as the sandbox init.
pub(crate) const INIT_MARKER: &str = "__kiln-sandbox-init";

/// Everything the init needs, sent by the host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitRequest {
    pub sandbox: SandboxSpec,
    pub process: ProcessSpec,
    /// Host-side scratch directory holding `root/` (the overlay mount point), `empty/` (an empty
    /// lower dir for scratch roots), `hosts` and `resolv.conf`.
    pub state_dir: PathBuf,
    /// Set when the caller is not root: the init creates a user namespace mapping these host
    /// ids to 0.
    pub id_map: Option<IdMap>,
    /// Set when overlayfs cannot be mounted: `sandbox.upper_dir` then is a plain directory
    /// holding a copy of the layers (see `copy_root`), bind-mounted as the root.
    #[serde(default)]
    pub copied_root: bool,
    /// With the default network: the inherited fd on which the outer init, after creating the
    /// network namespace and sending [`StatusMessage::NetworkNamespace`], waits for one byte
    /// saying the host has connected it (see `network.rs`).
    pub network_go_ahead_fd: Option<i32>,
}

/// The caller's ids, mapped to root inside a user namespace.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct IdMap {
    pub uid: u32,
    pub gid: u32,
}

/// One report from the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum StatusMessage {
    /// The first report of the init and of the exec helper, sent as soon as they run: the host
    /// keeps its unmounts waiting until then (see `fork_window`).
    Started,
    /// Sent by the outer init once it is in the sandbox's new network namespace (default
    /// network only): the host now connects it, then writes on the go-ahead fd.
    NetworkNamespace,
    /// Mount points the init had to create in the overlay, in creation order.
    Stubs(Vec<Stub>),
    /// Sent by the final child just before `execve`; if the pipe then closes without a
    /// `Failed`, the process is running.
    Exec,
    /// The init gave up before the process could run.
    Failed(InitFailure),
}

/// Writes one message as a single JSON line.
pub(crate) fn send(out: &mut impl Write, message: &StatusMessage) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}
