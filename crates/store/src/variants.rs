//! Compressed variants of a layer: for one diffID (one uncompressed tar), the blobs that hold it
//! compressed with each setting kiln has used, so a layer is compressed once per setting and every
//! tag, build and push afterwards reuses that blob.
//!
//! Each variant is its own small file, `layer-variants/<diffID hex>/<setting>.json`, written
//! atomically: two processes recording the same variant write the same bytes (compression is
//! deterministic), so there is no read-modify-write and no lock to take.

use std::io;

use kiln_image::{DiffId, Digest};
use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError};

/// One stored blob holding a layer, compressed with the setting named `compression`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerVariant {
    /// The setting that produced the blob, e.g. `gzip-6`, `zstd-3`, `uncompressed`. Opaque to the
    /// store; the layer crate names settings.
    pub compression: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Store {
    /// Every recorded variant of the layer `diff_id` whose blob is still in the store, sorted by
    /// setting name.
    pub fn layer_variants(&self, diff_id: &DiffId) -> Result<Vec<LayerVariant>> {
        let dir = self.root.join("layer-variants").join(diff_id.hex());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        let mut variants = Vec::new();
        for entry in entries {
            let path = entry.map_err(StoreError::io(&dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(StoreError::io(&path))?;
            // A record we cannot read is ignored: at worst the layer is compressed again and the
            // record rewritten.
            let Ok(variant) = serde_json::from_slice::<LayerVariant>(&bytes) else {
                continue;
            };
            if self.has_blob(&variant.digest) {
                variants.push(variant);
            }
        }
        variants.sort_by(|a, b| a.compression.cmp(&b.compression));
        Ok(variants)
    }

    /// Records that the blob `variant.digest` holds the layer `diff_id` compressed with
    /// `variant.compression`, replacing an earlier record for the same setting.
    pub fn record_layer_variant(&self, diff_id: &DiffId, variant: &LayerVariant) -> Result<()> {
        let name = &variant.compression;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StoreError::Corrupt {
                path: self.root.join("layer-variants"),
                message: format!("invalid compression setting name {name:?}"),
            });
        }
        let dir = self.root.join("layer-variants").join(diff_id.hex());
        std::fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
        let bytes = serde_json::to_vec(variant).expect("variants serialise");
        self.write_atomic(&dir.join(format!("{name}.json")), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_recorded_per_setting_and_only_listed_while_their_blob_exists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let diff_id = DiffId::of_tar(b"tar");
        assert!(store.layer_variants(&diff_id).unwrap().is_empty());

        let gz = store.write_blob(b"gzip bytes").unwrap();
        let zst = store.write_blob(b"zstd bytes").unwrap();
        let variant = |compression: &str, digest: &Digest| LayerVariant {
            compression: compression.into(),
            media_type: format!("m/{compression}"),
            digest: digest.clone(),
            size: 10,
        };
        store
            .record_layer_variant(&diff_id, &variant("zstd-3", &zst))
            .unwrap();
        store
            .record_layer_variant(&diff_id, &variant("gzip-6", &zst))
            .unwrap();
        // The same setting again replaces the record.
        store
            .record_layer_variant(&diff_id, &variant("gzip-6", &gz))
            .unwrap();
        assert_eq!(
            store.layer_variants(&diff_id).unwrap(),
            [variant("gzip-6", &gz), variant("zstd-3", &zst)]
        );
        assert!(
            store
                .layer_variants(&DiffId::of_tar(b"other"))
                .unwrap()
                .is_empty()
        );

        std::fs::remove_file(store.blob_path(&zst)).unwrap();
        assert_eq!(
            store.layer_variants(&diff_id).unwrap(),
            [variant("gzip-6", &gz)]
        );
        assert!(
            store
                .record_layer_variant(&diff_id, &variant("../x", &gz))
                .is_err()
        );
    }
}
