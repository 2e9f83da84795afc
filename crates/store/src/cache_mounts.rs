//! Persistent directories for `RUN --mount=type=cache`. They outlive builds and are never part
//! of a layer: the engine mounts one over the step's root and nothing written there is
//! committed.
//!
//! ```text
//! cache-mounts/<key>/0/        the main instance of a cache (key: the solver's hash of its id
//! cache-mounts/<key>/0.lock    and settings); further instances 1/, 2/, ... exist only for
//! cache-mounts/<key>/1/        `sharing=private` users that found the others busy
//! ```
//!
//! Sharing is enforced with `flock` on the instance's lock file, held for as long as the
//! returned [`CacheMountLease`] lives: `shared` takes a shared lock (any number of users at
//! once), `locked` an exclusive one (waiting for every other user), and `private` an exclusive
//! one without waiting, moving on to the next instance (created if needed) when it is busy.
//! The locks are per open file, so they also separate users within one process.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_image::Digest;
use rustix::fs::FlockOperation::{LockExclusive, LockShared};

use crate::locks::{lock_file, try_lock_file};
use crate::{Result, Store, StoreError, StoreLock, in_user_namespace};

/// How concurrent users of one cache mount share it (BuildKit's `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheSharing {
    /// Everyone uses the same directory at the same time.
    #[default]
    Shared,
    /// A user that finds the directory in use gets another one of its own.
    Private,
    /// Users take turns: each waits until the previous one is done.
    Locked,
}

/// How a cache directory looks when it is first created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheDirSettings {
    /// Permission bits of the directory.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Default for CacheDirSettings {
    fn default() -> Self {
        CacheDirSettings {
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }
}

/// A cache directory in use. The lock that enforces its sharing mode is released on drop.
#[derive(Debug)]
pub struct CacheMountLease {
    path: PathBuf,
    _lock: StoreLock,
}

impl CacheMountLease {
    /// The directory to mount.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store {
    /// The directory holding every instance of the cache mount `key`.
    pub fn cache_mount_dir(&self, key: &Digest) -> PathBuf {
        self.root.join("cache-mounts").join(key.hex())
    }

    /// Takes an instance of the cache mount `key` as `sharing` allows, creating it if needed
    /// with `settings` and then `seed` (called on the new, still private directory, for example
    /// to copy initial content into it).
    pub fn acquire_cache_mount(
        &self,
        key: &Digest,
        sharing: CacheSharing,
        settings: CacheDirSettings,
        seed: &dyn Fn(&Path) -> io::Result<()>,
    ) -> Result<CacheMountLease> {
        let base = self.cache_mount_dir(key);
        std::fs::create_dir_all(&base).map_err(StoreError::io(&base))?;
        let (instance, lock) = match sharing {
            CacheSharing::Shared => (0, lock_file(&instance_lock_path(&base, 0), LockShared)?),
            CacheSharing::Locked => (0, lock_file(&instance_lock_path(&base, 0), LockExclusive)?),
            CacheSharing::Private => {
                let mut n = 0;
                loop {
                    match try_lock_file(&instance_lock_path(&base, n))? {
                        Some(lock) => break (n, lock),
                        None => n += 1,
                    }
                }
            }
        };
        let path = base.join(instance.to_string());
        if !path.is_dir() {
            self.create_cache_instance(&path, settings, seed)?;
        }
        Ok(CacheMountLease { path, _lock: lock })
    }

    /// Builds a new instance in `tmp/` and renames it into place; if another process got there
    /// first, its directory wins and ours is dropped.
    fn create_cache_instance(
        &self,
        path: &Path,
        settings: CacheDirSettings,
        seed: &dyn Fn(&Path) -> io::Result<()>,
    ) -> Result<()> {
        let staging = self.temp_dir("cache-mount-")?;
        let dir = staging.path().join("dir");
        std::fs::create_dir(&dir).map_err(StoreError::io(&dir))?;
        seed(&dir).map_err(StoreError::io(&dir))?;
        if rustix::process::geteuid().is_root() {
            chown_or_squash(&dir, settings.uid, settings.gid)
                .map_err(|e| StoreError::io(&dir)(e.into()))?;
        }
        // Set after chown, which clears set-id bits; and explicitly, as mkdir is subject to
        // the umask.
        std::fs::set_permissions(
            &dir,
            std::fs::Permissions::from_mode(settings.mode & 0o7777),
        )
        .map_err(StoreError::io(&dir))?;
        match std::fs::rename(&dir, path) {
            Ok(()) => Ok(()),
            Err(_) if path.is_dir() => Ok(()),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }
}

/// Gives `dir` to `uid:gid`. Inside a user namespace with a single-id map (a rootless user
/// without `/etc/subuid` ranges) only id 0 exists and any other id fails with `EINVAL`; the
/// directory then stays root's (the namespace's only id), as layer extraction squashes owners
/// there (`kiln_layer`'s userns rules; the binary warns about the single-id map once).
fn chown_or_squash(dir: &Path, uid: u32, gid: u32) -> rustix::io::Result<()> {
    use rustix::fs::{Gid, Uid, chown};
    match chown(dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))) {
        Err(rustix::io::Errno::INVAL) if in_user_namespace() => {
            chown(dir, Some(Uid::ROOT), Some(Gid::ROOT))
        }
        other => other,
    }
}

/// The lock file of cache instance `instance` under `base`.
fn instance_lock_path(base: &Path, instance: usize) -> PathBuf {
    base.join(format!("{instance}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::mpsc;
    use std::time::Duration;

    fn no_seed(_: &Path) -> io::Result<()> {
        Ok(())
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn content_survives_between_leases_and_settings_apply_on_creation() {
        let (_dir, store) = store();
        let key = Digest::of(b"id=/root/.cache");
        let settings = CacheDirSettings {
            mode: 0o750,
            uid: 0,
            gid: 0,
        };
        let seed = |dir: &Path| std::fs::write(dir.join("seeded"), "s");
        let lease = store
            .acquire_cache_mount(&key, CacheSharing::Shared, settings, &seed)
            .unwrap();
        assert_eq!(
            std::fs::metadata(lease.path()).unwrap().mode() & 0o7777,
            0o750
        );
        assert!(lease.path().join("seeded").is_file());
        std::fs::write(lease.path().join("written"), "w").unwrap();
        let first = lease.path().to_owned();
        drop(lease);
        let again = store
            .acquire_cache_mount(&key, CacheSharing::Shared, settings, &no_seed)
            .unwrap();
        assert_eq!(again.path(), first);
        assert!(again.path().join("written").is_file());
        assert!(first.starts_with(store.root().join("cache-mounts")));
    }

    #[test]
    fn shared_users_get_the_same_directory_at_once() {
        let (_dir, store) = store();
        let key = Digest::of(b"k");
        let s = CacheDirSettings::default();
        let a = store
            .acquire_cache_mount(&key, CacheSharing::Shared, s, &no_seed)
            .unwrap();
        let b = store
            .acquire_cache_mount(&key, CacheSharing::Shared, s, &no_seed)
            .unwrap();
        assert_eq!(a.path(), b.path());
    }

    #[test]
    fn private_users_get_a_fresh_directory_while_one_is_busy() {
        let (_dir, store) = store();
        let key = Digest::of(b"k");
        let s = CacheDirSettings::default();
        let a = store
            .acquire_cache_mount(&key, CacheSharing::Private, s, &no_seed)
            .unwrap();
        std::fs::write(a.path().join("mine"), "").unwrap();
        let b = store
            .acquire_cache_mount(&key, CacheSharing::Private, s, &no_seed)
            .unwrap();
        assert_ne!(a.path(), b.path());
        assert!(!b.path().join("mine").exists());
        let a_path = a.path().to_owned();
        drop(a);
        let c = store
            .acquire_cache_mount(&key, CacheSharing::Private, s, &no_seed)
            .unwrap();
        assert_eq!(c.path(), a_path, "a free instance is reused");
    }

    #[test]
    fn locked_users_wait_for_each_other() {
        let (_dir, store) = store();
        let key = Digest::of(b"k");
        let s = CacheDirSettings::default();
        let first = store
            .acquire_cache_mount(&key, CacheSharing::Locked, s, &no_seed)
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let other = store.clone();
        let waiter = std::thread::spawn(move || {
            let lease = other
                .acquire_cache_mount(&key, CacheSharing::Locked, s, &no_seed)
                .unwrap();
            tx.send(lease.path().to_owned()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second user must wait while the first holds the cache"
        );
        let path = first.path().to_owned();
        drop(first);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), path);
        waiter.join().unwrap();
    }
}
