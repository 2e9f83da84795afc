//! `kiln check`: verifies the whole store and optionally repairs what can be repaired.
//!
//! Checked: every blob's content against its digest; every image name → manifest (or index) →
//! config and layers; every cache record's layer blob; every snapshot's completion marker; and
//! leftovers in `tmp/` (what a killed process leaves behind). Leftovers are harmless and only
//! reported; anything else is corruption. `repair` removes what can be rebuilt or is garbage:
//! leftovers, corrupt blobs (a rebuild or pull writes them again), unreadable or dangling cache
//! records, incomplete snapshots and stale lock files. Broken images are only reported: their
//! names are the user's to remove.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use kiln_image::{DiffId, Digest, ImageConfig, Sha256Hasher};

use crate::images::{ImageBlob, parse_image_blob};
use crate::locks::StoreLock;
use crate::records::{hex_digest, hex_key, record_layer};
use crate::snapshots::{COMPLETE_MARKER, snapshot_is_complete};
use crate::{Result, Store, StoreError};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The store is inconsistent: something named is missing or wrong.
    Corrupt,
    /// Garbage left by an interrupted process; nothing refers to it.
    Leftover,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// What is wrong, naming the object (`blob sha256:…`, `image app:latest`, `tmp/…`).
    pub object: String,
    pub problem: String,
    /// Whether `repair` removed it.
    pub repaired: bool,
}

/// The outcome of [`Store::check`].
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub blobs: usize,
    pub names: usize,
    pub cache_records: usize,
    pub snapshots: usize,
}

impl CheckReport {
    /// True when no corruption is left (leftovers and repaired problems do not count).
    pub fn is_consistent(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.severity == Severity::Corrupt && !f.repaired)
    }

    fn add(&mut self, severity: Severity, object: String, problem: String, repaired: bool) {
        self.findings.push(Finding {
            severity,
            object,
            problem,
            repaired,
        });
    }
}

impl Store {
    /// Checks the store. Needs the exclusive store lock (`_held`): with builds running, their
    /// staging files would look like leftovers.
    pub fn check(&self, _held: &StoreLock, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        self.check_blobs(repair, &mut report)?;
        self.check_names(&mut report)?;
        self.check_records(repair, &mut report)?;
        self.check_snapshots(repair, &mut report)?;
        self.check_tmp(repair, &mut report)?;
        if repair {
            self.clear_object_locks(_held)?;
        }
        Ok(report)
    }

    fn check_blobs(&self, repair: bool, report: &mut CheckReport) -> Result<()> {
        let dir = self.root.join("blobs/sha256");
        for entry in sorted_entries(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let Some(digest) = hex_digest(&name).filter(|_| path.is_file()) else {
                let repaired = repair && remove_any(&path).is_ok();
                report.add(
                    Severity::Leftover,
                    format!("blobs/sha256/{name}"),
                    "not a blob".into(),
                    repaired,
                );
                continue;
            };
            report.blobs += 1;
            let actual = hash_file(&path)?;
            if actual != digest {
                let repaired = repair && std::fs::remove_file(&path).is_ok();
                report.add(
                    Severity::Corrupt,
                    format!("blob {digest}"),
                    format!("content hashes to {actual}"),
                    repaired,
                );
            }
        }
        Ok(())
    }

    fn check_names(&self, report: &mut CheckReport) -> Result<()> {
        let names = match self.list_names() {
            Ok(n) => n,
            Err(StoreError::Corrupt { path, message }) => {
                report.add(
                    Severity::Corrupt,
                    path.display().to_string(),
                    message,
                    false,
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut checked = BTreeSet::new();
        for (name, digest) in names {
            report.names += 1;
            let object = format!("image {name}");
            self.check_image(&object, &digest, &mut checked, report)?;
        }
        Ok(())
    }

    /// Follows a manifest or index and reports what is missing or unreadable below it.
    fn check_image(
        &self,
        object: &str,
        digest: &Digest,
        checked: &mut BTreeSet<Digest>,
        report: &mut CheckReport,
    ) -> Result<()> {
        if !checked.insert(digest.clone()) {
            return Ok(());
        }
        let mut broken = |what: String| {
            report.add(Severity::Corrupt, object.to_owned(), what, false);
        };
        let bytes = match self.read_blob(digest) {
            Ok(b) => b,
            Err(StoreError::BlobNotFound(_)) => {
                broken(format!("manifest {digest} is missing"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let manifest = match parse_image_blob(&bytes) {
            Some(ImageBlob::Manifest(m)) => m,
            Some(ImageBlob::Index(index)) => {
                // A pull keeps only the platform it needed: absent children are fine.
                for child in index.manifests {
                    if self.has_blob(&child.digest) {
                        self.check_image(object, &child.digest, checked, report)?;
                    }
                }
                return Ok(());
            }
            None => {
                broken(format!("{digest} is not a manifest or index"));
                return Ok(());
            }
        };
        let config = &manifest.config.digest;
        match self.read_blob(config) {
            Ok(b) => match serde_json::from_slice::<ImageConfig>(&b) {
                Ok(cfg) if cfg.rootfs.diff_ids.len() != manifest.layers.len() => broken(format!(
                    "config {config} lists {} layers, manifest {digest} {}",
                    cfg.rootfs.diff_ids.len(),
                    manifest.layers.len()
                )),
                Ok(_) => {}
                Err(e) => broken(format!("config {config} is unreadable: {e}")),
            },
            Err(StoreError::BlobNotFound(_)) => broken(format!("config {config} is missing")),
            Err(e) => return Err(e),
        }
        for layer in &manifest.layers {
            if !self.has_blob(&layer.digest) {
                broken(format!("layer {} is missing", layer.digest));
            }
        }
        Ok(())
    }

    fn check_records(&self, repair: bool, report: &mut CheckReport) -> Result<()> {
        let dir = self.root.join("cache");
        for entry in sorted_entries(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let Some(key) = hex_key(&name).filter(|_| path.is_file()) else {
                let repaired = repair && remove_any(&path).is_ok();
                report.add(
                    Severity::Leftover,
                    format!("cache/{name}"),
                    "not a cache record".into(),
                    repaired,
                );
                continue;
            };
            report.cache_records += 1;
            let object = format!("cache record {}", key.hex());
            let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
            let problem = match record_layer(&bytes) {
                Err(e) => format!("unreadable: {e}"),
                Ok(Some(layer)) if !self.has_blob(&layer.digest) => {
                    format!("layer blob {} is missing", layer.digest)
                }
                Ok(_) => continue,
            };
            let repaired = repair && self.cache_remove(&key).is_ok();
            report.add(Severity::Corrupt, object, problem, repaired);
        }
        Ok(())
    }

    fn check_snapshots(&self, repair: bool, report: &mut CheckReport) -> Result<()> {
        let dir = self.root.join("snapshots");
        for entry in sorted_entries(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let Some(diff_id) = DiffId::from_hex(&name).ok().filter(|_| path.is_dir()) else {
                let repaired = repair && remove_any(&path).is_ok();
                report.add(
                    Severity::Leftover,
                    format!("snapshots/{name}"),
                    "not a snapshot".into(),
                    repaired,
                );
                continue;
            };
            report.snapshots += 1;
            if !snapshot_is_complete(&path, &diff_id) {
                let repaired = repair && self.discard_dir(&path).is_ok();
                report.add(
                    Severity::Corrupt,
                    format!("snapshot {diff_id}"),
                    format!("incomplete (no valid `{COMPLETE_MARKER}` marker)"),
                    repaired,
                );
            }
        }
        Ok(())
    }

    fn check_tmp(&self, repair: bool, report: &mut CheckReport) -> Result<()> {
        let dir = self.root.join("tmp");
        for entry in sorted_entries(&dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let repaired = repair && remove_any(&entry.path()).is_ok();
            report.add(
                Severity::Leftover,
                format!("tmp/{name}"),
                "left by an interrupted process".into(),
                repaired,
            );
        }
        Ok(())
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(StoreError::io(dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Removes a file or a whole directory tree (without following symlinks).
pub(crate) fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn hash_file(path: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(path).map_err(StoreError::io(path))?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(StoreError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests;
