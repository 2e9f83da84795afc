//! A snapshot of what the store holds and what refers to what, for `df` and `prune`: blobs,
//! images (tagged: reachable from a name; untagged: every other manifest or index), cache
//! records, snapshots and cache mounts, with their sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use kiln_image::{DiffId, Digest};

use crate::images::{ImageBlob, Reachable};
use crate::records::{RecordEntry, hex_digest};
use crate::{Result, Store, StoreError};

/// An image no name points at.
#[derive(Debug, Clone)]
pub struct UntaggedImage {
    /// Its manifest, or the index listing its manifests.
    pub root: Digest,
    pub reach: ReachSummary,
    /// When it was written (the root blob's modification time).
    pub written: SystemTime,
}

/// What an image needs.
#[derive(Debug, Clone, Default)]
pub struct ReachSummary {
    pub manifests: BTreeSet<Digest>,
    pub blobs: BTreeSet<Digest>,
    pub diff_ids: BTreeSet<DiffId>,
}

impl From<Reachable> for ReachSummary {
    fn from(r: Reachable) -> Self {
        ReachSummary {
            manifests: r.manifests,
            blobs: r.blobs,
            diff_ids: r.diff_ids,
        }
    }
}

/// One directory (a snapshot, named by diffID, or a cache mount, by a digest of its settings)
/// and the disk space it takes.
#[derive(Debug, Clone)]
pub struct DirUsage<Id> {
    pub id: Id,
    pub disk_bytes: u64,
    pub modified: SystemTime,
    /// For snapshots: whether its completion marker is there.
    pub complete: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Inventory {
    /// Every blob and its size.
    pub blobs: BTreeMap<Digest, u64>,
    pub names: Vec<(String, Digest)>,
    /// What the named images need.
    pub tagged: ReachSummary,
    pub untagged: Vec<UntaggedImage>,
    pub records: Vec<RecordEntry>,
    pub snapshots: Vec<DirUsage<DiffId>>,
    pub cache_mounts: Vec<DirUsage<Digest>>,
}

impl Inventory {
    pub fn blob_size(&self, d: &Digest) -> u64 {
        self.blobs.get(d).copied().unwrap_or(0)
    }
}

impl Store {
    pub(crate) fn inventory(&self) -> Result<Inventory> {
        let blob_list = self.list_blobs()?;
        let names = self.list_names()?;
        let mut tagged = Reachable::default();
        for (_, manifest) in &names {
            self.reach(manifest, &mut tagged)?;
        }
        // A container's image is its lower dirs: kept like a tagged one while the container
        // exists, even if its name was removed.
        for container in self.list_containers()? {
            if let Ok(manifest) = container.manifest.parse::<Digest>()
                && self.has_blob(&manifest)
            {
                self.reach(&manifest, &mut tagged)?;
            }
        }
        // Untagged images: indexes first, so the manifests they list are part of them.
        let mut roots = self.list_image_roots(&blob_list)?;
        roots.sort_by_key(|(_, b)| matches!(b, ImageBlob::Manifest(_)));
        let mut seen: BTreeSet<Digest> = tagged.blobs.clone();
        let mut untagged = Vec::new();
        for (digest, _) in roots {
            if seen.contains(&digest) {
                continue;
            }
            let mut reach = Reachable::default();
            self.reach(&digest, &mut reach)?;
            seen.extend(reach.manifests.iter().cloned());
            seen.insert(digest.clone());
            let written = std::fs::metadata(self.blob_path(&digest))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            untagged.push(UntaggedImage {
                root: digest,
                reach: reach.into(),
                written,
            });
        }
        Ok(Inventory {
            blobs: blob_list.into_iter().collect(),
            names,
            tagged: tagged.into(),
            untagged,
            records: self.list_cache_records()?,
            snapshots: self.dir_usages(
                "snapshots",
                |name| DiffId::from_hex(name).ok(),
                crate::snapshots::snapshot_is_complete,
            )?,
            cache_mounts: self.dir_usages("cache-mounts", hex_digest, |_, _| true)?,
        })
    }

    /// The directories under `sub` whose names `parse` reads as an id; `complete` says whether
    /// one is whole (a snapshot's marker).
    fn dir_usages<Id: Ord>(
        &self,
        sub: &str,
        parse: impl Fn(&str) -> Option<Id>,
        complete: impl Fn(&Path, &Id) -> bool,
    ) -> Result<Vec<DirUsage<Id>>> {
        let dir = self.root.join(sub);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let Some(id) = entry.file_name().to_str().and_then(&parse) else {
                continue;
            };
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let complete = complete(&path, &id);
            out.push(DirUsage {
                id,
                disk_bytes: disk_usage(&path),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                complete,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Disk space under `path` (allocated blocks), without following symlinks. Unreadable parts
/// count as nothing. A file with several links counts `1/nlink` of its blocks at each one:
/// snapshots share unchanged files with the snapshot of the same COPY's previous build (see
/// `kiln-solve`'s `copy/reuse.rs`), and so the sizes of all snapshots add up to the space they
/// take together instead of counting a shared file once per snapshot.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![path.to_owned()];
    while let Some(p) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let links = if meta.is_dir() {
            1
        } else {
            meta.nlink().max(1)
        };
        total += meta.blocks() * 512 / links;
        if meta.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            todo.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

#[cfg(test)]
mod disk_usage_tests {
    use super::disk_usage;

    #[test]
    fn files_shared_between_trees_are_split_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("shared"), vec![7u8; 64 * 1024]).unwrap();
        std::fs::write(a.join("own"), vec![8u8; 64 * 1024]).unwrap();
        let alone = disk_usage(&a);
        std::fs::hard_link(a.join("shared"), b.join("shared")).unwrap();
        std::fs::hard_link(a.join("shared"), a.join("twin")).unwrap();
        // Three links to one file: the two in `a` make two thirds of it, `b`'s one third, and
        // the parts add up to the whole.
        assert!(disk_usage(&b) < alone / 2, "{} of {alone}", disk_usage(&b));
        assert_eq!(disk_usage(dir.path()) - disk_usage(&a) - disk_usage(&b), {
            let meta = std::fs::symlink_metadata(dir.path()).unwrap();
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
        });
    }
}
