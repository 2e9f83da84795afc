//! The seam between the lifecycle rules and the machine: whether a container runs, signals,
//! waiting for an exit, launching a supervisor. [`SystemHost`] is the real one (running locks,
//! `kill(2)`, a supervisor process); the unit tests put a fake process table behind the trait
//! (`kiln_testkit::processes`), so the rules are tested without root or namespaces.

use std::time::Duration;

use kiln_store::{ContainerRecord, Store};

use crate::error::{Result, RuntimeError};

/// Called while a supervisor starts, before the container's process does; returns true once
/// it is done (e.g. it connected to the attach socket), false to be called again shortly.
pub type BeforeStart<'a> = &'a mut dyn FnMut() -> Result<bool>;

pub trait Host: Send + Sync {
    /// True while the container's supervisor holds it running.
    fn is_running(&self, id: &str) -> Result<bool>;

    /// Sends `signal` to the running container `record`.
    fn signal(&self, record: &ContainerRecord, signal: i32) -> Result<()>;

    /// Blocks until the container is not running, at most `timeout` (`None`: no limit).
    /// Returns whether it stopped and the exit code its supervisor left, if any.
    fn wait_stopped(&self, id: &str, timeout: Option<Duration>) -> Result<(bool, Option<i32>)>;

    /// Starts the container's supervisor and returns once the container runs (or its start
    /// failed: [`RuntimeError::StartFailed`]). With `before_start`, the supervisor waits for
    /// its first attached client before it starts the process, and `before_start` is called
    /// until it connected one.
    fn launch(&self, record: &ContainerRecord, before_start: Option<BeforeStart<'_>>)
    -> Result<()>;

    /// Freezes every process of the running container `record` until `resume`.
    fn pause(&self, record: &ContainerRecord) -> Result<()>;

    /// Thaws a container `pause` froze.
    fn resume(&self, record: &ContainerRecord) -> Result<()>;
}

/// The machine itself.
#[derive(Debug, Clone)]
pub struct SystemHost {
    pub(crate) store: Store,
}

impl SystemHost {
    pub fn new(store: Store) -> Self {
        SystemHost { store }
    }
}

impl SystemHost {
    /// The record once its running container's process is recorded, for at most
    /// [`crate::supervisor::START_LIMIT`]; as it is when the container stops or is between two
    /// runs of its restart policy.
    fn started_pid(&self, record: &ContainerRecord) -> Result<ContainerRecord> {
        let deadline = std::time::Instant::now() + crate::supervisor::START_LIMIT;
        loop {
            let now = self.store.find_container(&record.id)?;
            if now.state.sandbox_pid != 0
                || now.state.restarting
                || !self.store.container_is_running(&record.id)?
                || std::time::Instant::now() >= deadline
            {
                return Ok(now);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Host for SystemHost {
    fn is_running(&self, id: &str) -> Result<bool> {
        Ok(self.store.container_is_running(id)?)
    }

    fn signal(&self, record: &ContainerRecord, signal: i32) -> Result<()> {
        // A supervisor holds the lock a moment before it records the process it started (the
        // sandbox's start, slow on a loaded machine): a signal then waits for the pid.
        let fresh;
        let record = if record.state.sandbox_pid == 0 {
            fresh = self.started_pid(record)?;
            &fresh
        } else {
            record
        };
        // The running lock says the pid is still the container's (not a reused one).
        if !self.store.container_is_running(&record.id)? || record.state.sandbox_pid == 0 {
            return Err(RuntimeError::state(&record.name)(
                kiln_store::StateError::NotRunning,
            ));
        }
        let pid = rustix::process::Pid::from_raw(record.state.sandbox_pid as i32).ok_or(
            RuntimeError::Invalid {
                what: "pid",
                value: record.state.sandbox_pid.to_string(),
                reason: "not a process id",
            },
        )?;
        let signal =
            rustix::process::Signal::from_named_raw(signal).ok_or(RuntimeError::Invalid {
                what: "signal",
                value: signal.to_string(),
                reason: "not a signal number",
            })?;
        match rustix::process::kill_process(pid, signal) {
            Ok(()) => Ok(()),
            // Its process ended after the check, while the supervisor still records the exit:
            // the container is no longer running (reaped, so the pid was not reused).
            Err(rustix::io::Errno::SRCH) => Err(RuntimeError::state(&record.name)(
                kiln_store::StateError::NotRunning,
            )),
            Err(e) => Err(RuntimeError::Io {
                path: format!("/proc/{}", record.state.sandbox_pid).into(),
                source: e.into(),
            }),
        }
    }

    fn wait_stopped(&self, id: &str, timeout: Option<Duration>) -> Result<(bool, Option<i32>)> {
        match timeout {
            None => Ok((true, self.store.wait_container_stopped(id)?)),
            Some(limit) => {
                let deadline = std::time::Instant::now() + limit;
                while self.store.container_is_running(id)? {
                    if std::time::Instant::now() >= deadline {
                        return Ok((false, None));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok((true, self.store.wait_container_stopped(id)?))
            }
        }
    }

    fn launch(
        &self,
        record: &ContainerRecord,
        before_start: Option<BeforeStart<'_>>,
    ) -> Result<()> {
        crate::launch::launch(&self.store, record, before_start)
    }

    fn pause(&self, record: &ContainerRecord) -> Result<()> {
        crate::freeze::pause(record.state.pid, &record.id)
    }

    fn resume(&self, record: &ContainerRecord) -> Result<()> {
        crate::freeze::resume(record.state.pid)
    }
}
