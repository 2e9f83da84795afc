//! Restart policies as the daemon sees them: what it starts when it starts (dockerd's
//! restore: `always` containers, `unless-stopped` ones no user stopped, failed `on-failure`
//! ones), and the `die` / `start` events of the restarts the containers' supervisors make.
//!
//! Decision: the restarts themselves are the supervisors' (a container restarts whether the
//! daemon, the CLI, or a daemon since stopped started it), and a supervisor tells nobody; the
//! daemon's events come from watching the record of each container it started, as its `die`
//! comes from watching the running lock. So a restart is reported within [`POLL`], and only
//! for containers this daemon started (as every container event is, `events.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_runtime::ContainerSpec;
use kiln_store::ContainerRecord;

use super::{event, runtime};
use crate::Daemon;
use crate::error::ApiError;

/// How often a restarting container's record is looked at.
const POLL: Duration = Duration::from_millis(100);

/// Starts, as dockerd does when it starts, every container that is not running and whose
/// restart policy says so (a container never started stays created). Returns the names of
/// those that failed, with why; the others are started with their events and exit watchers.
pub async fn start_restartable(daemon: &Arc<Daemon>) -> Vec<(String, ApiError)> {
    let store = daemon.store().clone();
    let candidates = tokio::task::spawn_blocking(move || -> Vec<ContainerRecord> {
        let rt = kiln_runtime::Runtime::new(store.clone());
        let Ok(records) = store.list_containers() else {
            return Vec::new();
        };
        records
            .into_iter()
            .filter_map(|r| rt.container(&r.id).ok())
            .filter(|c| !c.state.is_running() && c.state.started_at.is_some() && !c.auto_remove)
            .filter(|c| {
                ContainerSpec::read(&store, &c.id).is_ok_and(|s| {
                    s.restart_policy
                        .restarts_at_boot(c.state.exit_code, c.state.manually_stopped)
                })
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let mut failed = Vec::new();
    for c in candidates {
        if let Err(e) = super::start_container(Arc::clone(daemon), &c.id).await {
            failed.push((c.name, e));
        }
    }
    failed
}

/// Reports `die` (with `exitCode`) when a container the daemon started stops, and hands the
/// code to the waits that began before the start.
pub(super) fn watch_exit(
    daemon: &Arc<Daemon>,
    record: ContainerRecord,
    exit: kiln_store::ExitWatch,
) {
    let daemon = Arc::clone(daemon);
    // Restarts happen within one supervisor's life: their events come from its record.
    let restarts = Arc::new(Restarts::default());
    let restarts_watch = ContainerSpec::read(daemon.store(), &record.id)
        .is_ok_and(|s| s.restart_policy.restarts())
        .then(|| watch_restarts(&daemon, &record, Arc::clone(&restarts)));
    tokio::task::spawn_blocking(move || {
        let ended = exit.wait();
        restarts.ended.store(true, Ordering::SeqCst);
        if let Some(watch) = restarts_watch {
            let _ = watch.join();
        }
        let code = match ended {
            Ok(Some(code)) => code,
            Ok(None) => runtime(&daemon)
                .container(&record.id)
                .map(|c| c.state.exit_code)
                .unwrap_or(-1),
            Err(_) => return,
        };
        // A user's stop between two runs ends no process: its `die` was sent already.
        if !restarts.died.load(Ordering::SeqCst) {
            event(&daemon, "die", &record, &[("exitCode", code.to_string())]);
        }
        daemon.exits.exited(&record.id, code);
        if record.auto_remove {
            event(&daemon, "destroy", &record, &[]);
        }
    });
}

/// What the watcher of one container's restarts reported last.
#[derive(Debug, Default)]
pub(super) struct Restarts {
    /// The container ended (its exit watcher saw the running lock go).
    pub ended: AtomicBool,
    /// The last event sent was a `die` of a run its policy restarts, with no `start` since:
    /// the exit watcher then sends no second `die` when a user stops it between two runs.
    pub died: AtomicBool,
}

/// Watches a container the daemon started whose policy restarts it, sending `die` when a run
/// ends and is to be restarted and `start` when the next run began, until `restarts.ended`
/// (after which one more look reports what happened since the last). Returns the thread.
pub(super) fn watch_restarts(
    daemon: &Arc<Daemon>,
    record: &ContainerRecord,
    restarts: Arc<Restarts>,
) -> std::thread::JoinHandle<()> {
    let daemon = Arc::clone(daemon);
    let record = record.clone();
    std::thread::spawn(move || {
        let rt = runtime(&daemon);
        let Ok(first) = rt.store.find_container(&record.id) else {
            return;
        };
        let mut seen = first.state.restart_count;
        // When the last run whose `start` was sent began: a later time is a new run.
        let mut reported = first.state.started_at;
        loop {
            let last = restarts.ended.load(Ordering::SeqCst);
            let Ok(now) = rt.store.find_container(&record.id) else {
                return;
            };
            let count = now.state.restart_count;
            // Restarts not seen yet: each was a `die` and (but for the last, whose run may
            // not have begun) a `start`.
            if seen < count {
                while seen < count {
                    seen += 1;
                    if restarts.died.swap(true, Ordering::SeqCst) {
                        event(&daemon, "start", &record, &[]);
                    }
                    let code = now.state.exit_code.to_string();
                    event(&daemon, "die", &record, &[("exitCode", code)]);
                }
                // Between two runs, the record's start time is the last reported run's.
                if now.state.restarting {
                    reported = now.state.started_at;
                }
            }
            if restarts.died.load(Ordering::SeqCst) && now.state.started_at != reported {
                restarts.died.store(false, Ordering::SeqCst);
                reported = now.state.started_at;
                event(&daemon, "start", &record, &[]);
            }
            if last {
                return;
            }
            std::thread::sleep(POLL);
        }
    })
}
