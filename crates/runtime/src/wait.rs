//! Docker's `wait`: until a container is not running, has run again and stopped, or is
//! removed, with its exit code. Most waits block on the container's running lock; the ones
//! that cannot (a start or a removal announces itself by no lock) poll the record, and a
//! caller that may stop caring (the daemon, whose client can leave) gets a wait that checks
//! it between short slices instead of holding a thread for the container's lifetime.

use std::time::Duration;

use kiln_store::ContainerError;

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;

/// How often the waits that cannot block on a lock look again.
const POLL: Duration = Duration::from_millis(50);

/// Docker's `condition` of `wait`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once for a container that is not running, else when it stops.
    #[default]
    NotRunning,
    /// Waits for the container's next exit (starting first, if it is not running).
    NextExit,
    /// Waits until the container is removed.
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            _ => Err(RuntimeError::Invalid {
                what: "wait condition",
                value: s.to_owned(),
                reason: "expected not-running, next-exit or removed",
            }),
        }
    }
}

impl<H: Host> Runtime<H> {
    /// Waits for `condition` and returns the container's exit code.
    pub fn wait(&self, query: &str, condition: WaitCondition) -> Result<i32> {
        self.wait_unless(query, condition, None)
    }

    /// [`Runtime::wait`] for a caller that may stop caring (a daemon whose client went away):
    /// `cancelled` is asked at least every 50 ms, and once it says so the wait ends with
    /// [`RuntimeError::WaitCancelled`] instead of keeping a thread for as long as the
    /// container lives (or, for `removed`, forever, when it is never removed).
    pub fn wait_unless(
        &self,
        query: &str,
        condition: WaitCondition,
        cancelled: Option<&dyn Fn() -> bool>,
    ) -> Result<i32> {
        let record = self.container(query)?;
        let check = || match cancelled {
            Some(cancelled) if cancelled() => Err(RuntimeError::WaitCancelled(record.name.clone())),
            _ => Ok(()),
        };
        match condition {
            WaitCondition::NotRunning => {}
            WaitCondition::NextExit => {
                // Until it starts (again): a new start shows as a new start time, which a
                // run too short to be seen running still leaves.
                while !self.host.is_running(&record.id)? {
                    match self.store.find_container(&record.id) {
                        Ok(now) if now.state.started_at != record.state.started_at => break,
                        Ok(_) => {
                            check()?;
                            std::thread::sleep(POLL);
                        }
                        Err(ContainerError::NoSuchContainer(_)) => {
                            return Err(RuntimeError::RemovedWithoutCode(record.name));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            WaitCondition::Removed => {
                let (_, code) = self.stopped_unless(&record.id, cancelled.is_some(), &check)?;
                loop {
                    match self.store.find_container(&record.id) {
                        Ok(_) => {
                            check()?;
                            std::thread::sleep(POLL);
                        }
                        Err(ContainerError::NoSuchContainer(_)) => {
                            return code.ok_or(RuntimeError::RemovedWithoutCode(record.name));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let (_, left_in_lock) = self.stopped_unless(&record.id, cancelled.is_some(), &check)?;
        // A `--rm` container is gone by now; its supervisor left the code in the lock file.
        match self.container(&record.id) {
            Ok(after) => Ok(left_in_lock.unwrap_or(after.state.exit_code)),
            Err(RuntimeError::Container(ContainerError::NoSuchContainer(_))) => {
                left_in_lock.ok_or(RuntimeError::RemovedWithoutCode(record.name))
            }
            Err(e) => Err(e),
        }
    }

    /// Until the container stops: blocked on its lock, or (`cancellable`, or a container its
    /// restart policy restarts) in slices of [`POLL`] with `check` between them. A run that
    /// ends and is restarted counts as a stop, as in dockerd (whose `restarting` state wakes
    /// the waiters): its end shows as a new finish time in the record, with its exit code.
    fn stopped_unless(
        &self,
        id: &str,
        cancellable: bool,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<(bool, Option<i32>)> {
        let restarts = crate::spec::ContainerSpec::read(&self.store, id)
            .is_ok_and(|s| s.restart_policy.restarts());
        if !cancellable && !restarts {
            return self.host.wait_stopped(id, None);
        }
        let finished = |id: &str| {
            self.store
                .find_container(id)
                .map(|r| (r.state.finished_at, r.state.exit_code))
                .ok()
        };
        let before = restarts.then(|| finished(id)).flatten().map(|f| f.0);
        loop {
            let (stopped, code) = self.host.wait_stopped(id, Some(POLL))?;
            if stopped {
                return Ok((true, code));
            }
            if let Some(before) = before
                && let Some((Some(now), code)) = finished(id)
                && Some(now) != before
            {
                return Ok((true, Some(code)));
            }
            check()?;
        }
    }
}
