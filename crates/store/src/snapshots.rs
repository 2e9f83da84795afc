//! Snapshots: one directory per layer diffID holding that layer's files, unpacked once and then
//! used read-only as an overlay lower dir by every step and container that needs the layer.

use std::path::{Path, PathBuf};

use kiln_image::Digest;

use crate::{Result, Store, StoreError};

impl Store {
    /// The directory of the snapshot for `diff_id` (whether or not it exists).
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_path(diff_id).is_dir()
    }

    /// A staging directory to unpack a layer into; [`Store::commit_snapshot`] publishes it.
    pub fn snapshot_staging(&self) -> Result<SnapshotStaging> {
        let dir = self.temp_dir("snapshot-")?;
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).map_err(StoreError::io(&path))?;
        Ok(SnapshotStaging { dir, path })
    }

    /// Publishes a fully unpacked staging directory as the snapshot of `diff_id`. If another
    /// process published the same snapshot first, ours is discarded: both have the same content.
    pub fn commit_snapshot(&self, staging: SnapshotStaging, diff_id: &Digest) -> Result<PathBuf> {
        self.adopt_snapshot(&staging.path, diff_id)
    }

    /// Publishes any fully written directory under `tmp/` (an overlay upper dir, say) as the
    /// snapshot of `diff_id` by renaming it. The caller must know it holds exactly that layer.
    pub fn adopt_snapshot(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.snapshot_path(diff_id);
        match std::fs::rename(dir, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => Ok(dest),
            Err(e) => Err(StoreError::Io {
                path: dest,
                source: e,
            }),
        }
    }
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

    #[test]
    fn staging_commit_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let id = Digest::of(b"layer");
        let st = s.snapshot_staging().unwrap();
        std::fs::write(st.path().join("f"), b"x").unwrap();
        let p = s.commit_snapshot(st, &id).unwrap();
        assert_eq!(std::fs::read(p.join("f")).unwrap(), b"x");
        assert!(s.has_snapshot(&id));

        let st = s.snapshot_staging().unwrap();
        std::fs::write(st.path().join("g"), b"y").unwrap();
        drop(st);
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}
