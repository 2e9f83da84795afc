//! Recording a build into the build history (`docs/build-history.md`), and the history's
//! part of `kiln system df` and `kiln prune`. A helper, not a command: `kiln build` records,
//! `kiln system` counts and prunes, `kiln build history` reads, and none of them imports
//! another.
//!
//! The recording is a [`Renderer`] in front of the build's own: it hands the same events to
//! `kiln_solve::history` (steps with their cache result and explain reason, timings, each
//! output line appended to the build's log as it arrives), so the full output is on disk
//! whatever the progress view showed. Recording never fails a build: when the store cannot take
//! the record, the build goes on with a warning.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use kiln_solve::history::BuildHistory;
use kiln_solve::{ProgressEvent, SolveError};
use kiln_store::{BuildInputs, BuildStatus, HistoryRetention, Store};

use crate::progress::{Outcome, Renderer};

/// Retention settings from the environment (`KILN_HISTORY_MAX_BUILDS`,
/// `KILN_HISTORY_MAX_AGE`), else the defaults.
pub fn retention() -> Result<HistoryRetention> {
    HistoryRetention::from_env().map_err(anyhow::Error::msg)
}

/// Records one build from its progress events (`kiln_solve::history`), then hands them on
/// to `inner`.
pub struct Recorder {
    inner: Arc<dyn Renderer>,
    history: Option<BuildHistory>,
}

impl Recorder {
    /// Starts the record; on failure the build is not recorded (a warning says so), nor with
    /// `KILN_NO_BUILD_HISTORY=1` (to measure what recording costs, or for builds whose output
    /// must not be kept).
    pub fn begin(
        store: &Store,
        inputs: BuildInputs,
        retention: HistoryRetention,
        inner: Arc<dyn Renderer>,
    ) -> Arc<Recorder> {
        let off = std::env::var_os("KILN_NO_BUILD_HISTORY").is_some_and(|v| !v.is_empty());
        let history = match (!off).then(|| BuildHistory::begin(store, inputs, retention)) {
            None => None,
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                inner.event(ProgressEvent::Warning(format!(
                    "this build is not recorded in the build history: {e}"
                )));
                None
            }
        };
        Arc::new(Recorder { inner, history })
    }

    /// Ends the record with the engine's outcome; then the retention rules drop what is now
    /// too old or too many.
    pub fn finish(&self, outcome: Result<&kiln_solve::BuildResult, &SolveError>) {
        let Some(history) = &self.history else {
            return;
        };
        for warning in history.finish(outcome) {
            self.inner.event(ProgressEvent::Warning(warning));
        }
    }
}

impl Renderer for Recorder {
    fn event(&self, event: ProgressEvent) {
        if let Some(history) = &self.history {
            history.event(&event);
        }
        self.inner.event(event);
    }

    fn finish(&self, outcome: Outcome<'_>) {
        self.inner.finish(outcome);
    }

    fn hold(&self, held: bool) {
        self.inner.hold(held);
    }
}

/// The history's row of `kiln system df`: builds, running ones (active), bytes, and what
/// `kiln prune --all` frees (every finished build).
pub fn usage_row(store: &Store) -> Result<kiln_store::UsageRow> {
    let mut row = kiln_store::UsageRow {
        total: 0,
        active: 0,
        bytes: 0,
        reclaimable: 0,
    };
    for record in store.history_list()? {
        let size = store.history_size(&record.id);
        row.total += 1;
        row.bytes += size;
        if record.status == BuildStatus::Running {
            row.active += 1;
        } else {
            row.reclaimable += size;
        }
    }
    Ok(row)
}

/// `kiln prune`'s part of the history: the retention rules, or with `all` every finished
/// build. Returns the builds removed and their bytes.
pub fn prune(store: &Store, all: bool) -> Result<(usize, u64)> {
    let mut r = retention()?;
    if all {
        r.max_builds = 0;
        r.max_age = Duration::ZERO;
    }
    let (removed, bytes) = store.history_prune(r, Utc::now())?;
    Ok((removed.len(), bytes))
}
