//! The container lifecycle on top of the [`Host`] seam: start, stop, kill, restart and
//! remove (wait in `wait.rs`), each checking the state rules (`ContainerState::can_*`) first, so an operation the
//! state forbids is a typed error (Docker's 409) and never reaches a process.
//!
//! Whether a container runs is the host's answer, not the record's: the record may say
//! running while its supervisor died (the store reads that as exited), and the fake host of
//! the tests runs containers no record update announces.

use std::time::Duration;

use kiln_store::{ContainerError, ContainerRecord, ContainerStatus, MountKind, Store};

use crate::attach::{AttachRequest, AttachStream};
use crate::error::{Result, RuntimeError};
use crate::host::{Host, SystemHost};
use crate::signals::parse_signal;

/// The container runtime: the store plus the host it runs containers on.
#[derive(Debug, Clone)]
pub struct Runtime<H: Host = SystemHost> {
    pub store: Store,
    pub host: H,
}

impl Runtime<SystemHost> {
    pub fn new(store: Store) -> Self {
        let host = SystemHost::new(store.clone());
        Runtime { store, host }
    }
}

impl<H: Host> Runtime<H> {
    pub fn with_host(store: Store, host: H) -> Self {
        Runtime { store, host }
    }

    /// The container `query` names (ID, name, or ID prefix), with its status as the host
    /// sees it.
    pub fn container(&self, query: &str) -> Result<ContainerRecord> {
        let mut record = self.store.find_container(query)?;
        let running = self.host.is_running(&record.id)?;
        if running {
            record.state.status = ContainerStatus::Running;
        } else {
            if record.state.status == ContainerStatus::Running {
                record.state.status = ContainerStatus::Exited;
            }
            // A container that stopped while paused is not paused any more, nor restarting
            // when its supervisor died between two runs.
            record.state.paused = false;
            record.state.restarting = false;
        }
        Ok(record)
    }

    /// Starts a created or exited container in its supervisor. Returns once it runs; a start
    /// failure (no such program, …) is [`RuntimeError::StartFailed`] with Docker's exit code,
    /// also recorded in the container's state.
    pub fn start(&self, query: &str) -> Result<ContainerRecord> {
        let record = self.container(query)?;
        record
            .state
            .can_start()
            .map_err(RuntimeError::state(&record.name))?;
        self.clear_stale_marks(&record)?;
        self.host
            .launch(&record, None)
            .inspect_err(|_| self.remove_unstarted(&record))?;
        self.container(&record.id)
    }

    /// After a failed start, a `--rm` container that is not running goes, as dockerd removes
    /// it: a client waiting for its removal (`docker run --rm`) would otherwise wait forever.
    fn remove_unstarted(&self, record: &ContainerRecord) {
        if record.auto_remove && !self.host.is_running(&record.id).unwrap_or(true) {
            let _ = remove_record(&self.store, record, true);
        }
    }

    /// Starts a container with a client attached before its process starts, so the client
    /// sees all of its output (`kiln run` in the foreground, `kiln start -a`).
    pub fn start_attached(&self, query: &str, request: AttachRequest) -> Result<AttachStream> {
        let record = self.container(query)?;
        record
            .state
            .can_start()
            .map_err(RuntimeError::state(&record.name))?;
        self.clear_stale_marks(&record)?;
        let mut stream = None;
        let mut connect = || -> Result<bool> {
            stream = crate::attach::try_connect(&self.store, &record, &request)?;
            Ok(stream.is_some())
        };
        self.host
            .launch(&record, Some(&mut connect))
            .inspect_err(|_| self.remove_unstarted(&record))?;
        stream.ok_or_else(|| RuntimeError::SupervisorTimeout {
            name: record.name.clone(),
            seconds: 0,
        })
    }

    /// Attaches to a running container's streams.
    pub fn attach(&self, query: &str, request: AttachRequest) -> Result<AttachStream> {
        let record = self.container(query)?;
        record
            .state
            .can_attach()
            .map_err(RuntimeError::state(&record.name))?;
        crate::attach::connect(&self.store, &record, &request)
    }

    /// Sends `signal` (a name or number) to a running container.
    pub fn kill(&self, query: &str, signal: &str) -> Result<()> {
        let signal = parse_signal(signal)?;
        let record = self.container(query)?;
        record
            .state
            .can_kill()
            .map_err(RuntimeError::state(&record.name))?;
        // The signals that end a container end its restarting too (dockerd: the stop signal
        // and SIGKILL); any other is passed on and the policy still applies.
        let stop_signal = self.stop_signal(&record)?;
        if signal == stop_signal || signal == rustix::process::Signal::KILL {
            self.mark_manually_stopped(&record)?;
            // Between two runs there is no process: the supervisor sees the mark and ends.
            if record.state.is_restarting() {
                return Ok(());
            }
        }
        self.host.signal(&record, signal.as_raw())?;
        // A frozen process dies only once thawed (dockerd unpauses for SIGKILL too); any other
        // signal waits for the unpause.
        if record.state.is_paused() && signal.as_raw() == rustix::process::Signal::KILL.as_raw() {
            self.unpause(&record.id)?;
        }
        Ok(())
    }

    /// Docker's stop: the container's stop signal, then SIGKILL after `grace`. A container
    /// that is not running is left as it is (not an error, as in Docker).
    pub fn stop(&self, query: &str, grace: Duration) -> Result<()> {
        let record = self.container(query)?;
        if !record.state.is_running() {
            return Ok(());
        }
        // A frozen container could not act on its stop signal.
        if record.state.is_paused() {
            self.unpause(&record.id)?;
        }
        let signal = self.stop_signal(&record)?;
        // Its restart policy must not start it again (until a user's next start).
        self.mark_manually_stopped(&record)?;
        // It may stop by itself between the check and the signal (its process gone while the
        // supervisor still records the exit, or the record already says so), or be between
        // two runs of its restart policy (whose supervisor ends on seeing the mark).
        if !record.state.is_restarting() {
            match self.host.signal(&record, signal.as_raw()) {
                Ok(())
                | Err(RuntimeError::State {
                    source: kiln_store::StateError::NotRunning,
                    ..
                }) => {}
                Err(e)
                    if self.host.is_running(&record.id)?
                        && !self.container(&record.id)?.state.is_restarting() =>
                {
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        let (stopped, _) = self.host.wait_stopped(&record.id, Some(grace))?;
        if !stopped {
            let _ = self
                .host
                .signal(&record, rustix::process::Signal::KILL.as_raw());
            self.host.wait_stopped(&record.id, None)?;
        }
        Ok(())
    }

    /// Stops the container if it runs (`grace` as for stop), then starts it again.
    pub fn restart(&self, query: &str, grace: Duration) -> Result<ContainerRecord> {
        let record = self.container(query)?;
        self.stop(&record.id, grace)?;
        self.start(&record.id)
    }

    /// Removes a container; a running one only with `force` (killed first). With `volumes`,
    /// its anonymous volumes go too.
    pub fn remove(&self, query: &str, force: bool, volumes: bool) -> Result<()> {
        let record = self.container(query)?;
        record
            .state
            .can_remove(force)
            .map_err(RuntimeError::state(&record.name))?;
        if record.state.is_running() {
            self.mark_manually_stopped(&record)?;
            let _ = self
                .host
                .signal(&record, rustix::process::Signal::KILL.as_raw());
            if record.state.is_paused() {
                self.host.resume(&record)?;
            }
            self.host.wait_stopped(&record.id, None)?;
        }
        remove_record(&self.store, &record, volumes)
    }
}

impl<H: Host> Runtime<H> {
    /// Freezes a running container (Docker's `pause`): its processes stop where they are,
    /// unnoticed, until `unpause`; exec is refused meanwhile.
    pub fn pause(&self, query: &str) -> Result<ContainerRecord> {
        let record = self.container(query)?;
        record
            .state
            .can_pause()
            .map_err(RuntimeError::state(&record.name))?;
        self.host.pause(&record)?;
        self.store
            .update_container(&record.id, |r| r.state.paused = true)?;
        self.container(&record.id)
    }

    /// Thaws a paused container.
    pub fn unpause(&self, query: &str) -> Result<ContainerRecord> {
        let record = self.container(query)?;
        record
            .state
            .can_unpause()
            .map_err(RuntimeError::state(&record.name))?;
        self.host.resume(&record)?;
        self.store
            .update_container(&record.id, |r| r.state.paused = false)?;
        self.container(&record.id)
    }

    /// The signal `stop` sends: the container's `StopSignal`, else SIGTERM.
    fn stop_signal(&self, record: &ContainerRecord) -> Result<rustix::process::Signal> {
        parse_signal(if record.config.stop_signal.is_empty() {
            "SIGTERM"
        } else {
            &record.config.stop_signal
        })
    }

    /// Records that a user stopped the container: its supervisor then does not restart it,
    /// and a daemon's start leaves an `unless-stopped` one stopped.
    fn mark_manually_stopped(&self, record: &ContainerRecord) -> Result<()> {
        self.store
            .update_container(&record.id, |r| r.state.manually_stopped = true)?;
        Ok(())
    }

    /// A record of a stopped container may still say paused (it died frozen): a start must
    /// not inherit that.
    /// A user's start also ends what a user's stop began (the restart policy applies again);
    /// cleared here, before the supervisor exists, so a stop during the start is not undone.
    fn clear_stale_marks(&self, record: &ContainerRecord) -> Result<()> {
        let stored = self.store.find_container(&record.id)?;
        if stored.state.paused || stored.state.manually_stopped {
            self.store.update_container(&record.id, |r| {
                r.state.paused = false;
                r.state.manually_stopped = false;
            })?;
        }
        Ok(())
    }
}

/// Removes a stopped container and, with `volumes`, its anonymous volumes. A container
/// removed by its own `--rm` at the same time is not an error.
pub(crate) fn remove_record(store: &Store, c: &ContainerRecord, volumes: bool) -> Result<()> {
    // The port rules of a container whose supervisor was killed are still there.
    if let Ok(spec) = crate::spec::ContainerSpec::read(store, &c.id) {
        crate::supervisor::unpublish(store, &spec, &c.id);
    }
    match store.remove_container(&c.id) {
        Ok(()) | Err(ContainerError::NoSuchContainer(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Its addresses go back to their networks (its interfaces went with its namespace).
    kiln_network::Networks::open(store.root()).release_container(&c.id)?;
    if volumes {
        remove_anonymous_volumes(store, c)?;
    }
    Ok(())
}

/// Removes the anonymous volumes of a container that is gone; one another container uses is
/// kept.
fn remove_anonymous_volumes(store: &Store, c: &ContainerRecord) -> Result<()> {
    for m in c.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
        match store.volume(&m.name) {
            Ok(v) if v.anonymous => match store.remove_volume(&v.name) {
                Ok(()) | Err(ContainerError::VolumeInUse { .. }) => {}
                Err(e) => return Err(e.into()),
            },
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
