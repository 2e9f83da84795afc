//! A failed `RUN` step, handed to the caller before anything of it is thrown away
//! (`kiln build --on-error=shell|keep`, `docs/on-error.md`).
//!
//! The key decision: the engine does not open shells or make containers itself (it knows no
//! terminal and no runtime); it calls the request's [`OnRunFailure`] hook on the failing stage's
//! thread, after the command exited and while its sandbox's pieces still exist — the upper dir
//! with the step's changes, the lower dirs, every `--mount` (cache directories still locked,
//! secrets still in their in-memory files, the context copy of a bind) — and only then cleans
//! up and fails the build. The hook sees exactly what the command saw, so a shell started
//! from [`FailedRun::sandbox`] and [`FailedRun::process`] is the step as it was when it failed.

use std::sync::Arc;

use kiln_image::{Descriptor, ImageConfig};
use kiln_sandbox::{ProcessSpec, SandboxSpec};
use kiln_store::Store;

use crate::error::Location;
use crate::progress::StepLabel;

/// A `RUN` whose command exited non-zero, as it was at that moment. Borrowed: it is only valid
/// during the hook, after which the build cleans up.
#[derive(Debug)]
pub struct FailedRun<'a> {
    pub step: &'a StepLabel,
    pub location: &'a Location,
    /// The command's exit code.
    pub code: i32,
    /// The sandbox the command ran in: its `upper_dir` holds the step's changes (the overlay
    /// is unmounted, so another sandbox may mount the same dirs), its mounts are still in place.
    pub sandbox: &'a SandboxSpec,
    /// The command's process: environment (secrets as variables included), user, working
    /// directory. A caller runs something else in its place by changing `args`.
    pub process: &'a ProcessSpec,
    /// The variables of `process.env` that came from `RUN --mount=type=secret,env=…`: a caller
    /// that writes the state to disk (a kept container) leaves them out.
    pub secret_vars: Vec<String>,
    /// The stage's image config and layers before the step (what `upper_dir` goes on top of).
    pub config: &'a ImageConfig,
    pub layers: &'a [Descriptor],
    /// The store the build runs on.
    pub store: &'a Store,
}

/// What the caller does with a failed `RUN` ([`crate::BuildRequest::on_run_failure`]). Called
/// at most once per failing step, on the stage's thread, while other stages may still be
/// finishing their running steps; the build fails with the step's error when it returns.
#[derive(Clone)]
pub struct OnRunFailure(pub Arc<dyn Fn(&FailedRun<'_>) + Send + Sync>);

impl OnRunFailure {
    pub fn new(hook: impl Fn(&FailedRun<'_>) + Send + Sync + 'static) -> OnRunFailure {
        OnRunFailure(Arc::new(hook))
    }
}

impl std::fmt::Debug for OnRunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRunFailure(..)")
    }
}
