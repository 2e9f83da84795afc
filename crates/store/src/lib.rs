//! kiln's local content store, rooted at `$KILN_ROOT`.
//!
//! Layout (see `docs/architecture.md`):
//! ```text
//! blobs/sha256/<hex>      content-addressed blobs (layers, configs, manifests), immutable
//! names.json              image name → manifest digest
//! cache/<hex>             cache records by cache key (opaque bytes, typed by the solver)
//! snapshots/<hex>/        one unpacked layer per diffID (`fs/`, the overlay lower dir) + marker
//! cache-mounts/<hex>/     persistent directories of `RUN --mount=type=cache`, by cache id
//! blob-sources/<registry>/<hex>.json  repositories of a registry known to hold a blob (for mounts)
//! layer-variants/<hex>/   per diffID, the blob of each compression setting used (`gzip-6.json`)
//! context-index/<hex>     file metadata → content digest, per build context directory
//! build-contexts/<n>/     tar build contexts kept for the next build (kiln-solve's; `<n>.lock`
//!                         is held by the build using one); prune removes the free ones
//! containers/<id>/        `kiln run` containers: record, locks, writable layer, log
//! volumes/<name>/         volumes: `_data/` and `volume.json`
//! store.lock, locks/      flock files: the store-wide lock and per-step/per-snapshot locks
//! tmp/                    staging for everything above; same filesystem, so commits are renames
//! ```
//! Every write is staged in `tmp/` and published by an atomic rename after `fsync`, so a crash or a
//! failed verification never leaves a half-written object under a real name.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod blob_sources;
mod blobs;
mod cache_key;
mod cache_mounts;
mod check;
mod container_names;
mod container_record;
mod container_running;
mod containers;
mod file_digests;
mod gc;
mod history;
mod images;
mod inventory;
mod locks;
mod names;
mod records;
mod snapshots;
#[cfg(test)]
mod test_support;
mod usage;
mod userns;
mod variants;
mod volumes;

use std::io;
use std::path::{Path, PathBuf};

use kiln_error::ErrorKind;

/// The directory (under the store root) of the tar contexts kept between builds: `<n>/` each,
/// with `<n>.lock` flock'd by whoever uses it.
pub const BUILD_CONTEXTS: &str = "build-contexts";

pub use blobs::BlobWriter;
pub use cache_key::CacheKey;
pub use cache_mounts::{CacheDirSettings, CacheMountLease, CacheSharing};
pub use check::{CheckReport, Finding, Severity};
pub use container_record::{
    CONTAINER_SCHEMA_VERSION, ContainerRecord, ContainerState, ContainerStatus, Health,
    HealthProbe, HealthStatus, MountKind, MountRecord, RunConfig, StateError, Timestamp,
};
pub use container_running::ExitWatch;
pub use containers::{ContainerError, ContainerResult};
pub use file_digests::{FileDigestIndex, FileStat};
pub use gc::{PruneOptions, PruneReport, PruneScope, Pruned, PrunedKind};
pub use history::{
    BuildFailure, BuildInputs, BuildRecord, BuildStatus, HISTORY_SCHEMA, HistoryRetention,
    HistoryWriter, LogLine, StepRecord, StepStatus,
};
pub use kiln_image::Digest;
pub use locks::{ObjectLock, StoreLock};
pub use records::{RecordEntry, record_layer};
pub use snapshots::SnapshotStaging;
pub use usage::{DirItem, DiskUsage, ImageUsage, RecordUsage, UsageRow};
pub use userns::in_user_namespace;
pub use variants::LayerVariant;
pub use volumes::VolumeRecord;

/// Errors from the store. Each names the object or path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content of {digest} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl StoreError {
    /// What kind of failure this is: a missing blob is [`ErrorKind::NotFound`], content that
    /// does not match the digest or size it was given under is [`ErrorKind::InvalidArgument`]
    /// (the writer's input is wrong), a damaged store file is [`ErrorKind::Internal`], and an
    /// I/O error is what [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Io { source, .. } => ErrorKind::of_io(source),
            StoreError::BlobNotFound(_) => ErrorKind::NotFound,
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            StoreError::Corrupt { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on one store directory. Cheap to clone; safe to share between threads and between
/// processes (names are updated under a file lock; blobs and snapshots are immutable once named).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for sub in ["blobs/sha256", "cache", "snapshots", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
        Ok(Store { root })
    }

    /// `$KILN_ROOT`, else `/var/lib/kiln` for root, else `$XDG_DATA_HOME/kiln`
    /// (`~/.local/share/kiln`).
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|r| !r.is_empty()) {
            return PathBuf::from(x).join("kiln");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        home.join(".local/share/kiln")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh private directory under `tmp/`, removed when dropped. Work directories (overlay
    /// upper/work dirs, extraction targets) live here so a commit into the store is a rename.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(StoreError::io(tmp))
    }

    /// The raw record stored under a cache key, if any.
    pub fn cache_get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        let path = self.root.join("cache").join(key.hex());
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Stores a cache record atomically, replacing any earlier one for the same key.
    pub fn cache_put(&self, key: &CacheKey, record: &[u8]) -> Result<()> {
        let path = self.root.join("cache").join(key.hex());
        self.write_atomic(&path, record)
    }

    /// Writes `bytes` to `path` via a synced temp file and a rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.write_atomic_via(&self.root.join("tmp"), path, bytes)
    }

    /// [`Store::write_atomic`] staging in `tmp`, which must be on the same filesystem as
    /// `path`. Records that processes outside the store lock rewrite (containers) stage next
    /// to themselves, where `kiln prune`'s cleaning of `tmp/` cannot take a file mid-write.
    pub(crate) fn write_atomic_via(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new_in(tmp).map_err(StoreError::io(tmp))?;
        f.write_all(bytes).map_err(StoreError::io(f.path()))?;
        f.as_file().sync_all().map_err(StoreError::io(path))?;
        f.persist(path).map_err(|e| StoreError::Io {
            path: path.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }
}
