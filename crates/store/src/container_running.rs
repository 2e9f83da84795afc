//! Whether a container runs: `running.lock`, held exclusively by its supervisor for as long
//! as it runs (probes and waiters take it shared, for an instant), and `start.lock`, taken
//! without waiting, which alone decides that a second start is refused. The exit code is left
//! in the running lock just before it is released, for whoever waits on it.

use std::io;
use std::path::PathBuf;

use rustix::fs::FlockOperation;

use crate::locks::{lock_file, try_lock_file, try_lock_file_as};
use crate::{Store, StoreError, StoreLock};

impl Store {
    /// Taken by whoever runs the container, for as long as it runs.
    pub fn hold_container_running(&self, id: &str) -> Result<StoreLock, StoreError> {
        lock_file(
            &self.container_dir(id).join("running.lock"),
            FlockOperation::LockExclusive,
        )
    }

    /// The running lock if no other supervisor holds it (a second start of the same container
    /// must not queue behind the first and run it again once it ends).
    ///
    /// Whether another supervisor holds it is decided by `start.lock`, taken without waiting
    /// and held with the running lock: the running lock itself is also taken, for an instant,
    /// by every process that asks whether the container runs or waits for its end, and a
    /// start that took such a probe for a running container would fail (or, worse, leave an
    /// attached `docker run --rm` waiting forever for a container that never started). The
    /// running lock is then taken by retrying for up to 5 s: probes hold it
    /// for microseconds, and only a supervisor of an older kiln (which took no start lock)
    /// holds it longer.
    pub fn try_hold_container_running(&self, id: &str) -> Result<Option<StoreLock>, StoreError> {
        let dir = self.container_dir(id);
        let Some(start) = try_lock_file(&dir.join("start.lock"))? else {
            return Ok(None);
        };
        let deadline = std::time::Instant::now() + RUNNING_LOCK_PATIENCE;
        loop {
            if let Some(running) = try_lock_file(&dir.join("running.lock"))? {
                return Ok(Some(running.with(start)));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// True while some process holds the container's running lock. The probe is a shared
    /// lock, so probes and waiters never keep each other (or a starting supervisor) out: only
    /// the owner's exclusive hold makes it fail.
    pub fn container_is_running(&self, id: &str) -> Result<bool, StoreError> {
        let path = self.container_dir(id).join("running.lock");
        if !path.exists() {
            return Ok(false);
        }
        match try_lock_file_as(&path, FlockOperation::NonBlockingLockShared) {
            Ok(probe) => Ok(probe.is_none()),
            // Removed in the meantime (`--rm`): it runs no more.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Blocks until the container's owner releases its running lock (the container exited).
    /// Returns the exit code the owner left in the lock file, which outlives a `--rm`
    /// removal for whoever had the file open.
    pub fn wait_container_stopped(&self, id: &str) -> Result<Option<i32>, StoreError> {
        let path = self.container_dir(id).join("running.lock");
        let lock = match lock_file(&path, FlockOperation::LockShared) {
            Ok(lock) => lock,
            // Removed in the meantime: nothing left to wait for, nor a code to read.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(lock.contents().trim().parse().ok())
    }

    /// Opens the container's running lock now, so that [`ExitWatch::wait`] can read the exit
    /// code later even if the container is removed (`--rm`) in between.
    pub fn watch_container_exit(&self, id: &str) -> Result<ExitWatch, StoreError> {
        let path = self.container_dir(id).join("running.lock");
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        Ok(ExitWatch { file, path })
    }

    /// Leaves the container's exit code in its running lock, just before releasing it.
    pub fn record_exit_in_lock(&self, lock: &StoreLock, code: i32) -> Result<(), StoreError> {
        lock.set_contents(code.to_string().as_bytes())
            .map_err(StoreError::io(self.containers_dir()))
    }
}

/// How long a starting supervisor retries the running lock that probes hold for an instant.
const RUNNING_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A container's running lock, opened ahead of its exit.
#[derive(Debug)]
pub struct ExitWatch {
    file: std::fs::File,
    path: PathBuf,
}

impl ExitWatch {
    /// Blocks until no process holds the container running, then gives the exit code its
    /// supervisor left (none if it never ran or died without writing one).
    pub fn wait(self) -> Result<Option<i32>, StoreError> {
        use std::io::{Read, Seek};
        rustix::fs::flock(&self.file, FlockOperation::LockShared)
            .map_err(|e| StoreError::io(&self.path)(e.into()))?;
        let mut file = &self.file;
        let mut text = String::new();
        file.seek(std::io::SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text))
            .map_err(StoreError::io(&self.path))?;
        Ok(text.trim().parse().ok())
    }
}
