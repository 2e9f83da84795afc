//! An image whose manifest and config are in the store, loaded and checked.

use kiln_image::{Digest, ImageConfig, LayerRef, Manifest, Reference};
use kiln_store::Store;

use crate::error::{ImageError, Result};

/// An image whose manifest and config are in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl StoredImage {
    /// Loads the image whose manifest is `manifest_digest`.
    pub fn load(store: &Store, manifest_digest: &Digest) -> Result<StoredImage> {
        let invalid = |source| ImageError::Invalid {
            reference: manifest_digest.to_string(),
            source,
        };
        let manifest =
            kiln_image::parse_manifest(&store.read_blob(manifest_digest)?).map_err(invalid)?;
        let config_digest = manifest.config.digest.clone();
        let config = kiln_image::parse_config(&manifest, &store.read_blob(&config_digest)?)
            .map_err(invalid)?;
        Ok(StoredImage {
            manifest_digest: manifest_digest.clone(),
            manifest,
            config_digest,
            config,
        })
    }

    /// Loads the image a local name points at (a digest reference: that manifest, if stored).
    pub fn load_by_name(store: &Store, reference: &Reference) -> Result<Option<StoredImage>> {
        if let Some(digest) = reference.digest() {
            if store.has_blob(digest) {
                return StoredImage::load(store, digest).map(Some);
            }
            return Ok(None);
        }
        match store.get_name(&reference.to_string())? {
            Some(d) => StoredImage::load(store, &d).map(Some),
            None => Ok(None),
        }
    }

    /// The image's layers (each blob with its diffID), bottom first.
    pub fn layers(&self) -> impl Iterator<Item = LayerRef> + '_ {
        LayerRef::pair_all(&self.manifest.layers, &self.config.rootfs.diff_ids)
    }

    /// Total size of the image's blobs in the store, as `kiln images` shows it: a layer the
    /// image lists several times is stored, and counted, once.
    pub fn size(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        let layers = self
            .manifest
            .layers
            .iter()
            .filter(|l| seen.insert(&l.digest));
        layers.map(|l| l.size).sum::<u64>() + self.manifest.config.size
    }

    /// Docker's image ID: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }
}
