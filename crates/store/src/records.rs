//! What the store knows about cache records beyond their bytes: when each was last used (for
//! least-recently-used pruning) and which layer it holds (so prune and check can follow it).
//!
//! The last use is the record file's modification time: set when the record is written and
//! refreshed on every cache hit with one `utimensat`, so a hit stays as cheap as a file read.
//! The solver owns the record format; the store reads only its `layer`, a
//! [`LayerRef`](kiln_image::LayerRef). Every kiln since the first has written all four of its
//! fields (digest, diff_id, size, media_type) in that form, so reading them strictly loses no
//! record; one without them is damage, which `kiln check` reports.

use std::path::PathBuf;
use std::time::SystemTime;

use kiln_image::{Digest, LayerRef};
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_NOW};
use serde::Deserialize;

use crate::{CacheKey, Result, Store, StoreError};

#[derive(Deserialize)]
struct RecordView {
    #[serde(default)]
    layer: Option<LayerRef>,
}

/// One cache record found in the store.
#[derive(Debug, Clone)]
pub struct RecordEntry {
    pub key: CacheKey,
    /// The layer it holds; `None` for a step that changed no file.
    pub layer: Option<LayerRef>,
    pub last_used: SystemTime,
    /// Size of the record file itself.
    pub file_size: u64,
}

/// Reads the layer out of a record's bytes; `Err` when they are not a record.
pub fn record_layer(bytes: &[u8]) -> Result<Option<LayerRef>, serde_json::Error> {
    serde_json::from_slice::<RecordView>(bytes).map(|v| v.layer)
}

impl Store {
    pub(crate) fn cache_record_path(&self, key: &CacheKey) -> PathBuf {
        self.root.join("cache").join(key.hex())
    }

    /// Marks the record under `key` as used now. A record that vanished meanwhile (pruned) is
    /// not an error: the caller already holds its contents.
    pub fn cache_touch(&self, key: &CacheKey) -> Result<()> {
        let path = self.cache_record_path(key);
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        };
        let times = Timestamps {
            last_access: now,
            last_modification: now,
        };
        match rustix::fs::utimensat(CWD, &path, &times, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(StoreError::io(path)(e.into())),
        }
    }

    /// Removes the record under `key`, if any.
    pub fn cache_remove(&self, key: &CacheKey) -> Result<()> {
        let path = self.cache_record_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path)(e)),
        }
    }

    /// Every readable cache record with its last use. Files that are not records (bad names,
    /// unparsable contents) are skipped here; `kiln check` reports them.
    pub fn list_cache_records(&self) -> Result<Vec<RecordEntry>> {
        let dir = self.root.join("cache");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let Some(key) = entry.file_name().to_str().and_then(hex_key) else {
                continue;
            };
            let path = entry.path();
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(path)(e)),
            };
            let Ok(layer) = record_layer(&bytes) else {
                continue;
            };
            let meta = std::fs::metadata(&path).map_err(StoreError::io(&path))?;
            out.push(RecordEntry {
                key,
                layer,
                last_used: meta.modified().map_err(StoreError::io(&path))?,
                file_size: meta.len(),
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// The digest a store file name (64 lowercase hex digits) stands for.
pub(crate) fn hex_digest(name: &str) -> Option<Digest> {
    Digest::from_hex(name).ok()
}

/// The cache key a record's file name (64 lowercase hex digits) stands for.
pub(crate) fn hex_key(name: &str) -> Option<CacheKey> {
    CacheKey::from_hex(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_hit_refreshes_the_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let key = CacheKey::from_hash(Digest::of(b"k"));
        let layer = Digest::of(b"l");
        let rec = format!(
            r#"{{"layer":{{"digest":"{layer}","diff_id":"{layer}","size":7,"media_type":"m"}},"created":"x"}}"#
        );
        s.cache_put(&key, rec.as_bytes()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3 * 86400);
        std::fs::File::options()
            .write(true)
            .open(s.cache_record_path(&key))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let listed = s.list_cache_records().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used <= old + Duration::from_secs(1));
        assert_eq!(listed[0].layer.as_ref().unwrap().size, 7);

        s.cache_touch(&key).unwrap();
        let listed = s.list_cache_records().unwrap();
        assert!(listed[0].last_used > SystemTime::now() - Duration::from_secs(60));

        s.cache_remove(&key).unwrap();
        s.cache_touch(&key).unwrap();
        assert!(s.list_cache_records().unwrap().is_empty());
    }

    #[test]
    fn layerless_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.cache_put(
            &CacheKey::from_hash(Digest::of(b"a")),
            br#"{"layer":null,"created":"x"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("cache/README"), "not a record").unwrap();
        s.cache_put(&CacheKey::from_hash(Digest::of(b"b")), b"garbage")
            .unwrap();
        let listed = s.list_cache_records().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].layer.is_none());
    }
}
