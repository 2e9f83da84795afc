//! Locks that let several `kiln` processes share one store.
//!
//! Every lock is a `flock` on a file, so the kernel releases it when its holder dies: a build
//! killed with `kill -9` never leaves a lock behind that blocks the next one.
//!
//! ```text
//! store.lock                  store-wide: commands that read or add objects (build, run, pull,
//!                             push, import) hold it shared; prune and check hold it exclusive,
//!                             so nothing they might remove or judge is in use or half written
//! locks/step-<key>.lock       one build step's "look the key up, else run it and record it",
//!                             so two builds never compute the same step at once
//! locks/snapshot-<id>.lock    unpacking (or publishing) the snapshot of one diffID
//! ```
//!
//! Lock files under `locks/` are only ever deleted by a holder of the exclusive store lock:
//! deleting a lock file another process has open would let a third one lock a new file of the
//! same name at the same time.

use std::fs::File;
use std::path::{Path, PathBuf};

use kiln_image::DiffId;
use rustix::fs::{FlockOperation, flock};

use crate::{CacheKey, Result, Store, StoreError};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    /// A second lock held for as long as this one (a container's start lock beside its
    /// running lock). Declared first, so it is released first: whoever waits for the main
    /// lock to be free may then take both.
    _with: Option<File>,
    _file: File,
}

impl StoreLock {
    fn of(file: File) -> StoreLock {
        StoreLock {
            _file: file,
            _with: None,
        }
    }

    /// This lock, also holding `other` until it is dropped.
    pub(crate) fn with(mut self, other: StoreLock) -> StoreLock {
        self._with = Some(other._file);
        self
    }

    /// Replaces what the lock file holds (a note for the next holder, such as an exit code).
    pub(crate) fn set_contents(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        let mut file = &self._file;
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(bytes)
    }

    /// What the lock file holds.
    pub(crate) fn contents(&self) -> String {
        use std::io::{Read, Seek};
        let mut file = &self._file;
        let mut text = String::new();
        let _ = file
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        text
    }
}

/// Which per-object lock to take under `locks/`, and the object's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLock<'a> {
    /// A build step, by cache key.
    Step(&'a CacheKey),
    /// A snapshot, by diffID.
    Snapshot(&'a DiffId),
}

impl ObjectLock<'_> {
    /// The lock file's name: `<kind>-<hex>.lock`.
    fn file_name(self) -> String {
        match self {
            ObjectLock::Step(key) => format!("step-{}.lock", key.hex()),
            ObjectLock::Snapshot(diff_id) => format!("snapshot-{}.lock", diff_id.hex()),
        }
    }
}

impl Store {
    fn store_lock_path(&self) -> PathBuf {
        self.root.join("store.lock")
    }

    /// Holds the store open for adding and reading objects. Any number of processes may hold it
    /// at once; it keeps `prune` and `check` out until they are done.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        lock_file(&self.store_lock_path(), FlockOperation::LockShared)
    }

    /// Waits until no other process uses the store, then keeps every other user out.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        lock_file(&self.store_lock_path(), FlockOperation::LockExclusive)
    }

    /// The exclusive store lock if nobody else holds the store, else `None` (so a caller can say
    /// that it is waiting before calling [`Store::lock_exclusive`]).
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>> {
        try_lock_file(&self.store_lock_path())
    }

    /// Takes the exclusive lock on one object (waiting for its holder). Never call it while
    /// holding the same lock: the locks are per open file, so that would wait forever.
    pub fn lock_object(&self, object: ObjectLock<'_>) -> Result<StoreLock> {
        lock_file(
            &self.object_lock_path(object)?,
            FlockOperation::LockExclusive,
        )
    }

    /// The lock on one object if nobody holds it, else `None`: for a caller that must be able
    /// to stop waiting (a cancelled build) and so polls instead of blocking in `flock`.
    pub fn try_lock_object(&self, object: ObjectLock<'_>) -> Result<Option<StoreLock>> {
        try_lock_file(&self.object_lock_path(object)?)
    }

    fn object_lock_path(&self, object: ObjectLock<'_>) -> Result<PathBuf> {
        let dir = self.root.join("locks");
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        Ok(dir.join(object.file_name()))
    }

    /// Deletes the per-object lock files. Only with the exclusive store lock held (`_held`).
    pub(crate) fn clear_object_locks(&self, _held: &StoreLock) -> Result<usize> {
        let dir = self.root.join("locks");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io(&dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&dir))?;
            std::fs::remove_file(entry.path()).map_err(StoreError::io(entry.path()))?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(StoreError::io(path))
}

pub(crate) fn lock_file(path: &Path, op: FlockOperation) -> Result<StoreLock> {
    let file = open_lock_file(path)?;
    flock(&file, op).map_err(|e| StoreError::io(path)(e.into()))?;
    Ok(StoreLock::of(file))
}

pub(crate) fn try_lock_file(path: &Path) -> Result<Option<StoreLock>> {
    try_lock_file_as(path, FlockOperation::NonBlockingLockExclusive)
}

/// `flock` without waiting, shared or exclusive as `op` says; `None` if it would wait.
pub(crate) fn try_lock_file_as(path: &Path, op: FlockOperation) -> Result<Option<StoreLock>> {
    let file = open_lock_file(path)?;
    match flock(&file, op) {
        Ok(()) => Ok(Some(StoreLock::of(file))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(StoreError::io(path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::Digest;
    use std::sync::mpsc;
    use std::time::Duration;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn shared_holders_coexist_and_keep_the_exclusive_lock_out() {
        let (_d, s) = store();
        let a = s.lock_shared().unwrap();
        let b = s.lock_shared().unwrap();
        assert!(s.try_lock_exclusive().unwrap().is_none());
        drop(a);
        assert!(s.try_lock_exclusive().unwrap().is_none());
        drop(b);
        let x = s.try_lock_exclusive().unwrap();
        assert!(x.is_some());
    }

    #[test]
    fn object_lock_makes_the_second_taker_wait() {
        let (_d, s) = store();
        let key = CacheKey::from_hash(Digest::of(b"step"));
        let first = s.lock_object(ObjectLock::Step(&key)).unwrap();
        let (tx, rx) = mpsc::channel();
        let s2 = s.clone();
        let k2 = key.clone();
        let t = std::thread::spawn(move || {
            let _l = s2.lock_object(ObjectLock::Step(&k2)).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        assert!(s.try_lock_object(ObjectLock::Step(&key)).unwrap().is_none());
        // A different object is not blocked, even one whose name has the same hex.
        let same_hex = DiffId::from_tar_digest(key.as_hash().clone());
        let other = s.lock_object(ObjectLock::Snapshot(&same_hex)).unwrap();
        drop(other);
        drop(first);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn clearing_lock_files_needs_the_exclusive_lock_and_removes_them() {
        let (_d, s) = store();
        let key = CacheKey::from_hash(Digest::of(b"a"));
        drop(s.lock_object(ObjectLock::Step(&key)).unwrap());
        let diff_id = DiffId::of_tar(b"b");
        drop(s.lock_object(ObjectLock::Snapshot(&diff_id)).unwrap());
        let held = s.lock_exclusive().unwrap();
        assert_eq!(s.clear_object_locks(&held).unwrap(), 2);
        assert_eq!(s.clear_object_locks(&held).unwrap(), 0);
    }
}
