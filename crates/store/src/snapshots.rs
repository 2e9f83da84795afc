//! Snapshots: one directory per layer diffID holding that layer's files, unpacked once and then
//! used read-only as an overlay lower dir by every step and container that needs the layer. An
//! image listing one layer several times still has one snapshot of it: the overlay gets it
//! once, at its topmost position (`kiln_images::lower_dirs` says why that is exact).
//!
//! ```text
//! snapshots/<hex>/fs/        the layer's files (the overlay lower dir)
//! snapshots/<hex>/complete   marker holding the diffID, written before publishing
//! ```
//!
//! A snapshot is assembled in `tmp/` (files first, the marker last) and published by renaming
//! the whole directory, so a process killed at any moment leaves either nothing or a complete
//! snapshot under `snapshots/`. A directory there without the marker (from an older layout or
//! outside interference) is not trusted: it is replaced when the snapshot is next needed and
//! reported by `kiln check`.
//!
//! Publishing is safe without a lock (a rename that loses the race discards its copy), but
//! callers take [`ObjectLock::Snapshot`](crate::ObjectLock) around "look up, else unpack and
//! publish" so two builds do not unpack the same layer twice at once.

use std::path::{Path, PathBuf};

use kiln_image::DiffId;

use crate::{Result, Store, StoreError};

/// The marker file's name inside a snapshot directory.
pub(crate) const COMPLETE_MARKER: &str = "complete";
/// The layer files' directory inside a snapshot directory.
pub(crate) const FILES_DIR: &str = "fs";

impl Store {
    /// The directory holding snapshot `diff_id` with its marker.
    pub(crate) fn snapshot_dir(&self, diff_id: &DiffId) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// The files of the snapshot for `diff_id`: the overlay lower dir (whether or not it exists).
    pub fn snapshot_path(&self, diff_id: &DiffId) -> PathBuf {
        self.snapshot_dir(diff_id).join(FILES_DIR)
    }

    /// Whether a complete snapshot of `diff_id` is published.
    pub fn has_snapshot(&self, diff_id: &DiffId) -> bool {
        snapshot_is_complete(&self.snapshot_dir(diff_id), diff_id)
    }

    /// A staging directory to unpack a layer into; [`Store::commit_snapshot`] publishes it.
    pub fn snapshot_staging(&self) -> Result<SnapshotStaging> {
        let dir = self.temp_dir("snapshot-")?;
        let path = dir.path().join(FILES_DIR);
        std::fs::create_dir(&path).map_err(StoreError::io(&path))?;
        Ok(SnapshotStaging { dir, path })
    }

    /// Publishes a fully unpacked staging directory as the snapshot of `diff_id`. If another
    /// process published the same snapshot first, ours is discarded: both have the same content.
    pub fn commit_snapshot(&self, staging: SnapshotStaging, diff_id: &DiffId) -> Result<PathBuf> {
        self.publish_snapshot(staging.dir, diff_id)
    }

    /// Publishes any fully written directory under `tmp/` (an overlay upper dir, say) as the
    /// snapshot of `diff_id` by moving it. The caller must know it holds exactly that layer.
    pub fn adopt_snapshot(&self, dir: &Path, diff_id: &DiffId) -> Result<PathBuf> {
        if self.has_snapshot(diff_id) {
            return Ok(self.snapshot_path(diff_id));
        }
        let wrapper = self.temp_dir("snapshot-")?;
        let files = wrapper.path().join(FILES_DIR);
        std::fs::rename(dir, &files).map_err(StoreError::io(dir))?;
        self.publish_snapshot(wrapper, diff_id)
    }

    /// Writes the marker into `wrapper` (which holds `fs/`) and renames it into place.
    fn publish_snapshot(&self, wrapper: tempfile::TempDir, diff_id: &DiffId) -> Result<PathBuf> {
        let marker = wrapper.path().join(COMPLETE_MARKER);
        std::fs::write(&marker, diff_id.to_string()).map_err(StoreError::io(&marker))?;
        let dest = self.snapshot_dir(diff_id);
        for _attempt in 0..2 {
            match std::fs::rename(wrapper.path(), &dest) {
                Ok(()) => {
                    // Renamed away: nothing left for the TempDir to delete.
                    let _ = wrapper.keep();
                    return Ok(dest.join(FILES_DIR));
                }
                Err(_) if self.has_snapshot(diff_id) => return Ok(dest.join(FILES_DIR)),
                Err(_) if dest.exists() => self.discard_dir(&dest)?,
                Err(e) => return Err(StoreError::io(&dest)(e)),
            }
        }
        Err(StoreError::Corrupt {
            path: dest,
            message: "cannot replace an incomplete snapshot".into(),
        })
    }

    /// Removes a directory under `snapshots/` by first moving it into `tmp/`, so a crash halfway
    /// through the deletion never leaves a partial snapshot under its real name.
    pub(crate) fn discard_dir(&self, dir: &Path) -> Result<()> {
        let grave = self.temp_dir("discard-")?;
        let target = grave.path().join("snapshot");
        match std::fs::rename(dir, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(dir)(e)),
        }
        // Dropping the TempDir deletes it; do it here to report failures.
        std::fs::remove_dir_all(grave.path()).map_err(StoreError::io(grave.path()))?;
        Ok(())
    }
}

/// Whether `dir` is a published snapshot of `diff_id`: files and a marker naming it.
pub(crate) fn snapshot_is_complete(dir: &Path, diff_id: &DiffId) -> bool {
    std::fs::read_to_string(dir.join(COMPLETE_MARKER))
        .is_ok_and(|m| m.trim() == diff_id.to_string())
        && dir.join(FILES_DIR).is_dir()
}

/// A directory being filled with a layer's files; removed if dropped uncommitted.
#[derive(Debug)]
pub struct SnapshotStaging {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl SnapshotStaging {
    /// Where to unpack.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The private temp directory around `path`, for sibling work files.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_is_empty(root: &Path) -> bool {
        std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn staging_commit_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = DiffId::of_tar(b"layer");
        let st = s.snapshot_staging().unwrap();
        std::fs::write(st.path().join("f"), b"x").unwrap();
        let p = s.commit_snapshot(st, &id).unwrap();
        assert_eq!(p, s.snapshot_path(&id));
        assert_eq!(std::fs::read(p.join("f")).unwrap(), b"x");
        assert!(s.has_snapshot(&id));
        assert!(tmp_is_empty(dir.path()));

        let st = s.snapshot_staging().unwrap();
        std::fs::write(st.path().join("g"), b"y").unwrap();
        drop(st);
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn second_publisher_keeps_the_first_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = DiffId::of_tar(b"layer");
        let a = s.snapshot_staging().unwrap();
        std::fs::write(a.path().join("f"), b"first").unwrap();
        let b = s.snapshot_staging().unwrap();
        std::fs::write(b.path().join("f"), b"second").unwrap();
        s.commit_snapshot(a, &id).unwrap();
        let p = s.commit_snapshot(b, &id).unwrap();
        assert_eq!(std::fs::read(p.join("f")).unwrap(), b"first");
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn adopting_a_directory_moves_it_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = DiffId::of_tar(b"upper");
        let work = s.temp_dir("run-").unwrap();
        let upper = work.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        std::fs::write(upper.join("made-by-run"), b"1").unwrap();
        let p = s.adopt_snapshot(&upper, &id).unwrap();
        assert!(p.join("made-by-run").is_file());
        assert!(!upper.exists());
        assert!(s.has_snapshot(&id));
    }

    #[test]
    fn a_directory_without_marker_is_not_a_snapshot_and_gets_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = DiffId::of_tar(b"layer");
        // As a crash of an older kiln, or a partial copy, would leave it.
        let stale = s.snapshot_dir(&id);
        std::fs::create_dir_all(stale.join("half")).unwrap();
        assert!(!s.has_snapshot(&id));
        let st = s.snapshot_staging().unwrap();
        std::fs::write(st.path().join("whole"), b"").unwrap();
        let p = s.commit_snapshot(st, &id).unwrap();
        assert!(s.has_snapshot(&id));
        assert!(p.join("whole").is_file());
        assert!(!stale.join("half").exists());
        assert!(tmp_is_empty(dir.path()));
    }
}
