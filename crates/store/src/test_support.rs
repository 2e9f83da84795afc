//! Helpers for the store's unit tests: a fresh store and small images written into it.

use kiln_image::{Descriptor, DiffId, Digest, ImageConfig, Manifest, media_type};

use crate::{CacheKey, Store};

/// The cache key hashed from `seed`.
pub(crate) fn key(seed: &[u8]) -> CacheKey {
    CacheKey::from_hash(Digest::of(seed))
}

pub(crate) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("root")).unwrap();
    (dir, s)
}

/// An image written straight into a store: a layer blob per byte string (its "diffID" is the
/// digest of the same bytes with a prefix), a config and a manifest.
#[derive(Debug, Clone)]
pub(crate) struct TestImage {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub diff_ids: Vec<DiffId>,
}

impl TestImage {
    pub fn diff_id_of(layer: &[u8]) -> DiffId {
        DiffId::of_tar(&[b"diff:".as_slice(), layer].concat())
    }

    /// Writes the image; with a non-empty `name`, tags it.
    pub fn write(s: &Store, name: &str, layers: &[&[u8]]) -> TestImage {
        let mut config = ImageConfig::default();
        let mut descs = Vec::new();
        for l in layers {
            let d = s.write_blob(l).unwrap();
            descs.push(Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                d,
                l.len() as u64,
            ));
            config.rootfs.diff_ids.push(Self::diff_id_of(l));
        }
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = s.write_blob(&config_bytes).unwrap();
        let manifest = Manifest::oci(
            Descriptor::new(
                media_type::OCI_CONFIG,
                config_digest.clone(),
                config_bytes.len() as u64,
            ),
            descs.clone(),
        );
        let manifest_digest = s
            .write_blob(&serde_json::to_vec(&manifest).unwrap())
            .unwrap();
        if !name.is_empty() {
            s.set_name(name, &manifest_digest).unwrap();
        }
        TestImage {
            manifest: manifest_digest,
            config: config_digest,
            layers: descs.into_iter().map(|d| d.digest).collect(),
            diff_ids: config.rootfs.diff_ids,
        }
    }
}
