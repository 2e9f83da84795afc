//! Containers of `kiln run`, kept in the store so that every kiln process sees the containers
//! any other one started (kiln has no daemon to ask).
//!
//! ```text
//! containers/.lock              flock: creating/removing containers and volumes (names unique)
//! containers/<id>/container.json  the record: config, mounts, state (rewritten atomically)
//! containers/<id>/record.lock   flock around each read-modify-write of container.json
//! containers/<id>/running.lock  flock held exclusively by the process that owns the running
//!                               container (its supervisor); probes and waiters take it shared
//! containers/<id>/start.lock    flock held exclusively by that supervisor too, taken without
//!                               waiting: a second start fails at once instead of queueing
//! containers/<id>/upper, work   the writable layer (overlay upper and work dirs)
//! ```
//!
//! Whether a container runs is decided by `running.lock`, not by the record alone: a holder
//! killed with `kill -9` releases its lock, so its container reads as exited instead of
//! running forever.

use std::io;
use std::path::{Path, PathBuf};

use kiln_error::ErrorKind;
use kiln_image::Digest;
use rustix::fs::FlockOperation;

use crate::container_names::generate_name;
use crate::container_record::{ContainerRecord, ContainerStatus};
use crate::locks::lock_file;
use crate::{Store, StoreError, StoreLock};

/// Errors about containers and volumes, worded as Docker words them.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("{query:?} matches {count} containers; give more of the ID or the name")]
    AmbiguousContainer { query: String, count: usize },
    #[error(
        "the container name \"/{name}\" is already in use by container \"{id}\"; remove (or rename) that container to reuse the name"
    )]
    NameInUse { name: String, id: String },
    #[error("invalid {what} name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { what: &'static str, name: String },
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    #[error("volume {name} is in use by container(s) {}", containers.join(", "))]
    VolumeInUse {
        name: String,
        containers: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ContainerError {
    /// What kind of failure this is, as Docker's daemon classifies the same errors: unknown
    /// containers and volumes are [`ErrorKind::NotFound`], a name or volume in use is
    /// [`ErrorKind::Conflict`], an ambiguous ID prefix or a malformed name is
    /// [`ErrorKind::InvalidArgument`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            ContainerError::NoSuchContainer(_) | ContainerError::NoSuchVolume(_) => {
                ErrorKind::NotFound
            }
            ContainerError::NameInUse { .. } | ContainerError::VolumeInUse { .. } => {
                ErrorKind::Conflict
            }
            ContainerError::AmbiguousContainer { .. } | ContainerError::InvalidName { .. } => {
                ErrorKind::InvalidArgument
            }
            ContainerError::Store(e) => e.kind(),
        }
    }
}

pub type ContainerResult<T> = std::result::Result<T, ContainerError>;

const RECORD_FILE: &str = "container.json";

impl Store {
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `containers/<id>/`: the record, locks, writable layer and log of one container.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// Held while containers or volumes are created or removed, so that names stay unique and
    /// a volume is never removed while a container starts using it.
    pub(crate) fn lock_containers(&self) -> Result<StoreLock, StoreError> {
        let dir = self.containers_dir();
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        lock_file(&dir.join(".lock"), FlockOperation::LockExclusive)
    }

    /// A fresh container ID: 64 hex digits that depend on the time, the pid and `seed`.
    pub fn new_container_id(&self, seed: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Digest::of(format!("{seed}\0{nanos}\0{}", std::process::id()).as_bytes())
            .hex()
            .to_owned()
    }

    /// Records a new container. An empty `record.name` gets a generated one; a name in use is
    /// an error. The container directory is created (empty but for the record).
    pub fn create_container(&self, record: &mut ContainerRecord) -> ContainerResult<()> {
        let _lock = self.lock_containers()?;
        let existing = self.list_containers()?;
        if record.name.is_empty() {
            let mut attempt = 0u32;
            record.name = loop {
                let name = generate_name(&record.id, attempt);
                if !existing.iter().any(|c| c.name == name) {
                    break name;
                }
                attempt += 1;
            };
        } else {
            record.name = record.name.trim_start_matches('/').to_owned();
            validate_name(&record.name, "container")?;
            if let Some(other) = existing.iter().find(|c| c.name == record.name) {
                return Err(ContainerError::NameInUse {
                    name: record.name.clone(),
                    id: other.id.clone(),
                });
            }
        }
        let dir = self.container_dir(&record.id);
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        record.schema_version = crate::CONTAINER_SCHEMA_VERSION;
        self.write_record(record)?;
        Ok(())
    }

    fn write_record(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let dir = self.container_dir(&record.id);
        let path = dir.join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Staged in the container's own directory: supervisors rewrite records without the
        // store lock, so `kiln prune` may be cleaning `tmp/` at the same time.
        self.write_atomic_via(&dir, &path, &json)
    }

    fn read_record(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let path = self.container_dir(id).join(RECORD_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(path)(e)),
        };
        let mut record: ContainerRecord =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        // The record says running, but its owner's lock is free: the owner died without
        // writing the exit (kill -9, a crash of the machine).
        if record.state.status == ContainerStatus::Running && !self.container_is_running(id)? {
            record.state.status = ContainerStatus::Exited;
            record.state.pid = 0;
            record.state.exit_code = 255;
            record.state.error = "the container's supervisor died".into();
            record.state.paused = false;
        }
        Ok(Some(record))
    }

    /// Every container, newest first. Directories without a record (a creation cut short)
    /// are skipped.
    pub fn list_containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let dir = self.containers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().filter(|n| is_container_id(n)) else {
                continue;
            };
            if let Some(record) = self.read_record(id)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(records)
    }

    /// The container named by `query`: its full ID, its name (with or without a leading `/`)
    /// or an unambiguous prefix of its ID, as Docker resolves them.
    pub fn find_container(&self, query: &str) -> ContainerResult<ContainerRecord> {
        let all = self.list_containers()?;
        let name = query.trim_start_matches('/');
        if let Some(c) = all.iter().find(|c| c.id == query || c.name == name) {
            return Ok(c.clone());
        }
        let mut by_prefix = all
            .into_iter()
            .filter(|c| !query.is_empty() && c.id.starts_with(query));
        match (by_prefix.next(), by_prefix.count()) {
            (Some(c), 0) => Ok(c),
            (Some(_), more) => Err(ContainerError::AmbiguousContainer {
                query: query.to_owned(),
                count: more + 1,
            }),
            (None, _) => Err(ContainerError::NoSuchContainer(query.to_owned())),
        }
    }

    /// Changes a container's record under its lock and returns the new record.
    pub fn update_container(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> ContainerResult<ContainerRecord> {
        let dir = self.container_dir(id);
        let _lock = lock_file(&dir.join("record.lock"), FlockOperation::LockExclusive)?;
        let mut record = self
            .read_record(id)?
            .ok_or_else(|| ContainerError::NoSuchContainer(id.to_owned()))?;
        change(&mut record);
        // A rewrite is in this code's schema (it read the old one into the new types).
        record.schema_version = crate::CONTAINER_SCHEMA_VERSION;
        self.write_record(&record)?;
        Ok(record)
    }

    /// Deletes a container: its record, writable layer and log. Its volumes are left alone;
    /// the caller removes anonymous ones if asked to.
    pub fn remove_container(&self, id: &str) -> ContainerResult<()> {
        let _lock = self.lock_containers()?;
        let dir = self.container_dir(id);
        // The record goes first, so a crash mid-way leaves a directory list_containers skips.
        match std::fs::remove_file(dir.join(RECORD_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ContainerError::NoSuchContainer(id.to_owned()));
            }
            Err(e) => return Err(StoreError::io(dir.join(RECORD_FILE))(e).into()),
        }
        remove_tree(&dir).map_err(StoreError::io(&dir))?;
        Ok(())
    }
}

/// Removes a directory tree, first making every directory in it writable (a container's
/// process may leave read-only directories in its writable layer).
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            use std::os::unix::fs::PermissionsExt;
            for entry in walk_dirs(dir) {
                let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o700));
            }
            std::fs::remove_dir_all(dir)
        }
        Ok(()) => Ok(()),
    }
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

fn is_container_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Docker's rule for container and volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(crate) fn validate_name(name: &str, what: &'static str) -> ContainerResult<()> {
    let mut bytes = name.bytes();
    let valid = name.len() >= 2
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ContainerError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::locks::try_lock_file_as;
    use crate::test_support::store;
    use crate::{ContainerState, RunConfig};

    pub(crate) fn record(store: &Store, name: &str, created: &str) -> ContainerRecord {
        ContainerRecord {
            schema_version: crate::CONTAINER_SCHEMA_VERSION,
            id: store.new_container_id(name),
            name: name.into(),
            created: created.parse().unwrap_or_default(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            manifest: "sha256:11".into(),
            config: RunConfig::default(),
            mounts: Vec::new(),
            auto_remove: false,
            state: ContainerState::default(),
        }
    }

    #[test]
    fn containers_are_found_by_id_name_and_prefix() {
        let (_d, s) = store();
        let mut a = record(&s, "web", "2026-01-01T00:00:00Z");
        s.create_container(&mut a).unwrap();
        let mut b = record(&s, "", "2026-01-02T00:00:00Z");
        s.create_container(&mut b).unwrap();
        assert!(b.name.contains('_'), "generated name {}", b.name);
        assert_eq!(s.find_container("web").unwrap().id, a.id);
        assert_eq!(s.find_container("/web").unwrap().id, a.id);
        assert_eq!(s.find_container(&a.id).unwrap().id, a.id);
        assert_eq!(s.find_container(&b.id[..12]).unwrap().id, b.id);
        assert!(matches!(
            s.find_container("nope"),
            Err(ContainerError::NoSuchContainer(_))
        ));
        let names: Vec<_> = s
            .list_containers()
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(names, vec![b.id.clone(), a.id.clone()], "newest first");
    }

    #[test]
    fn names_are_unique_and_validated() {
        let (_d, s) = store();
        let mut a = record(&s, "web", "t");
        s.create_container(&mut a).unwrap();
        let mut dup = record(&s, "web", "t");
        dup.id = s.new_container_id("other");
        let err = s.create_container(&mut dup).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        let mut bad = record(&s, "-bad name", "t");
        assert!(matches!(
            s.create_container(&mut bad),
            Err(ContainerError::InvalidName { .. })
        ));
    }

    #[test]
    fn renames_keep_names_unique() {
        let (_d, s) = store();
        let mut a = record(&s, "web", "t");
        s.create_container(&mut a).unwrap();
        // Not a hex string: "db" was also a prefix of one container ID in 256.
        let mut b = record(&s, "postgres", "t");
        s.create_container(&mut b).unwrap();
        let taken = s.rename_container(&b.id, "web").unwrap_err();
        assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");
        let bad = s.rename_container(&b.id, "a/b").unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert_eq!(s.rename_container(&b.id, "/store").unwrap().name, "store");
        assert_eq!(s.find_container("store").unwrap().id, b.id);
        assert!(s.find_container("postgres").is_err());
        let missing = s.rename_container(&"f".repeat(64), "other").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    }

    #[test]
    fn errors_have_dockers_kinds() {
        let (_d, s) = store();
        let missing = s.find_container("nope").unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        let mut a = record(&s, "web", "t");
        a.id = format!("abc{}", "0".repeat(61));
        s.create_container(&mut a).unwrap();
        let mut b = record(&s, "db", "t");
        b.id = format!("abd{}", "0".repeat(61));
        s.create_container(&mut b).unwrap();
        let ambiguous = s.find_container("ab").unwrap_err();
        assert!(
            matches!(
                ambiguous,
                ContainerError::AmbiguousContainer { count: 2, .. }
            ),
            "{ambiguous}"
        );
        assert_eq!(ambiguous.kind(), ErrorKind::InvalidArgument);
        let mut clash = record(&s, "web", "t");
        let in_use = s.create_container(&mut clash).unwrap_err();
        assert_eq!(in_use.kind(), ErrorKind::Conflict, "{in_use}");
        let mut bad = record(&s, "-bad name", "t");
        let invalid = s.create_container(&mut bad).unwrap_err();
        assert_eq!(invalid.kind(), ErrorKind::InvalidArgument, "{invalid}");
    }

    #[test]
    fn a_running_record_without_its_owner_reads_as_exited() {
        let (_d, s) = store();
        let mut a = record(&s, "job", "t");
        s.create_container(&mut a).unwrap();
        let held = s.hold_container_running(&a.id).unwrap();
        s.update_container(&a.id, |r| r.state.status = ContainerStatus::Running)
            .unwrap();
        assert!(s.container_is_running(&a.id).unwrap());
        assert_eq!(
            s.find_container("job").unwrap().state.status,
            ContainerStatus::Running
        );
        drop(held);
        let after = s.find_container("job").unwrap();
        assert_eq!(after.state.status, ContainerStatus::Exited);
        assert_eq!(after.state.exit_code, 255);
        assert_eq!(s.wait_container_stopped(&a.id).unwrap(), None);
    }

    #[test]
    fn probes_neither_block_a_start_nor_read_as_running() {
        let (_d, s) = store();
        let mut a = record(&s, "probed", "t");
        s.create_container(&mut a).unwrap();
        // A probe or waiter holding the running lock for a moment, as another thread of
        // the daemon does while a supervisor starts.
        let path = s.container_dir(&a.id).join("running.lock");
        let probe = try_lock_file_as(&path, FlockOperation::NonBlockingLockShared)
            .unwrap()
            .unwrap();
        assert!(
            !s.container_is_running(&a.id).unwrap(),
            "a probe read as running"
        );
        let (s2, id) = (s.clone(), a.id.clone());
        let starter = std::thread::spawn(move || s2.try_hold_container_running(&id).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(probe);
        let held = starter
            .join()
            .unwrap()
            .expect("the start gave up behind a probe");
        assert!(s.container_is_running(&a.id).unwrap());
        // A second start fails at once: the first holds the start lock.
        let begun = std::time::Instant::now();
        assert!(s.try_hold_container_running(&a.id).unwrap().is_none());
        assert!(begun.elapsed() < std::time::Duration::from_secs(1));
        drop(held);
        assert!(!s.container_is_running(&a.id).unwrap());
        assert!(s.try_hold_container_running(&a.id).unwrap().is_some());
    }

    #[test]
    fn waiters_get_the_exit_code_even_after_removal() {
        let (_d, s) = store();
        let mut a = record(&s, "short", "t");
        s.create_container(&mut a).unwrap();
        let held = s.hold_container_running(&a.id).unwrap();
        let (s2, id) = (s.clone(), a.id.clone());
        let waiter = std::thread::spawn(move || s2.wait_container_stopped(&id).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.record_exit_in_lock(&held, 42).unwrap();
        s.remove_container(&a.id).unwrap();
        drop(held);
        assert_eq!(waiter.join().unwrap(), Some(42));
        assert_eq!(s.wait_container_stopped(&a.id).unwrap(), None);
    }

    #[test]
    fn removal_deletes_the_directory_and_the_name() {
        let (_d, s) = store();
        let mut a = record(&s, "gone", "t");
        s.create_container(&mut a).unwrap();
        std::fs::create_dir_all(s.container_dir(&a.id).join("upper/x")).unwrap();
        s.remove_container(&a.id).unwrap();
        assert!(!s.container_dir(&a.id).exists());
        assert!(s.find_container("gone").is_err());
        assert!(matches!(
            s.remove_container(&a.id),
            Err(ContainerError::NoSuchContainer(_))
        ));
    }
}
