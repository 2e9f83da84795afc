//! An image whose manifest and config are in the store, loaded and checked.

use kiln_image::{Digest, ImageConfig, Index, LayerRef, Manifest, Platform, Reference};
use kiln_store::Store;

use crate::error::{ImageError, Result};

/// An image whose manifest and config are in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The image index the image was reached through (a name pointing at an index: a build
    /// with attestations), which pushes and archives send whole; `None` for a bare manifest.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl StoredImage {
    /// Loads the image whose manifest is `manifest_digest`. An image index stands for its
    /// image for this host's platform (else its first image: a multi-platform build for other
    /// platforms is still listed, pushed and exported as its index): attestation manifests
    /// and other entries without a real platform are never chosen.
    pub fn load(store: &Store, manifest_digest: &Digest) -> Result<StoredImage> {
        let bytes = store.read_blob(manifest_digest)?;
        if let Some(index) = as_index(&bytes) {
            let chosen = index
                .select(&Platform::host())
                .or_else(|| {
                    index.manifests.iter().find(|d| {
                        kiln_image::media_type::is_manifest(&d.media_type)
                            && d.platform.as_ref().is_some_and(|p| p.os != "unknown")
                    })
                })
                .ok_or_else(|| ImageError::NoPlatform {
                    index: manifest_digest.clone(),
                })?;
            let mut image = StoredImage::load_manifest(store, &chosen.digest)?;
            image.index_digest = Some(manifest_digest.clone());
            return Ok(image);
        }
        StoredImage::load_manifest(store, manifest_digest)
    }

    /// Loads the image for `platform` that `digest` stands for: an index's entry for it, or a
    /// manifest whatever its platform (the caller checks the config). An index without such an
    /// entry is [`ImageError::PlatformNotInIndex`], listing the platforms it has.
    pub fn load_for_platform(
        store: &Store,
        digest: &Digest,
        platform: &Platform,
    ) -> Result<StoredImage> {
        let bytes = store.read_blob(digest)?;
        let Some(index) = as_index(&bytes) else {
            return StoredImage::load_manifest(store, digest);
        };
        let Some(chosen) = index.select(platform) else {
            return Err(ImageError::PlatformNotInIndex {
                index: digest.clone(),
                platform: platform.to_string(),
                available: platforms_of(&index).join(", "),
            });
        };
        let mut image = StoredImage::load_manifest(store, &chosen.digest)?;
        image.index_digest = Some(digest.clone());
        Ok(image)
    }

    /// The platforms of the images a name's index holds (attestations left out); empty for a
    /// name pointing at a single manifest.
    pub fn index_platforms(store: &Store, digest: &Digest) -> Result<Vec<String>> {
        Ok(as_index(&store.read_blob(digest)?)
            .map(|index| platforms_of(&index))
            .unwrap_or_default())
    }

    /// Loads the image manifest `manifest_digest` (not an index).
    fn load_manifest(store: &Store, manifest_digest: &Digest) -> Result<StoredImage> {
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
            index_digest: None,
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

    /// What a name of this image points at: the index when there is one, else the manifest.
    pub fn root_digest(&self) -> &Digest {
        self.index_digest.as_ref().unwrap_or(&self.manifest_digest)
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

/// The platform an image's config names.
pub fn config_platform(config: &ImageConfig) -> Platform {
    Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os_version: None,
    }
}

/// The platforms of an index's image entries (not attestations), as `os/arch[/variant]`.
fn platforms_of(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter(|d| kiln_image::media_type::is_manifest(&d.media_type))
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect()
}

/// `bytes` as an image index, when its media type (or, without one, its shape) says it is one.
fn as_index(bytes: &[u8]) -> Option<Index> {
    let probe: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let is_index = match probe.get("mediaType").and_then(|m| m.as_str()) {
        Some(mt) => kiln_image::media_type::is_index(mt),
        None => probe.get("manifests").is_some(),
    };
    if is_index {
        serde_json::from_value(probe).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support;
    use kiln_image::{Descriptor, media_type, to_canonical_json};

    #[test]
    fn an_index_loads_as_its_image_for_this_platform_never_its_attestation() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let img = test_support::image(&store, "indexed");
        let attestation = test_support::image(&store, "attestation");
        let mut image_desc = Descriptor::new(
            media_type::OCI_MANIFEST,
            img.manifest_digest.clone(),
            store.blob_size(&img.manifest_digest).unwrap(),
        );
        image_desc.platform = Some(Platform::host());
        let mut att_desc = Descriptor::new(
            media_type::OCI_MANIFEST,
            attestation.manifest_digest.clone(),
            store.blob_size(&attestation.manifest_digest).unwrap(),
        );
        att_desc.platform = Some(Platform::new("unknown", "unknown"));
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            // The attestation first: order must not matter.
            manifests: vec![att_desc.clone(), image_desc],
            annotations: Default::default(),
        };
        let index_digest = store.write_blob(&to_canonical_json(&index)).unwrap();
        let loaded = StoredImage::load(&store, &index_digest).unwrap();
        assert_eq!(loaded.manifest_digest, img.manifest_digest);
        assert_eq!(loaded.index_digest.as_ref(), Some(&index_digest));
        assert_eq!(loaded.root_digest(), &index_digest);
        assert_eq!(
            img.root_digest(),
            &img.manifest_digest,
            "a bare manifest is its own root"
        );

        // An index with nothing for this platform (only the attestation) is a clear error.
        let only_att = Index {
            manifests: vec![att_desc],
            ..index
        };
        let d = store.write_blob(&to_canonical_json(&only_att)).unwrap();
        let err = StoredImage::load(&store, &d).unwrap_err();
        assert!(matches!(err, ImageError::NoPlatform { .. }), "{err}");
    }

    #[test]
    fn a_written_index_gives_each_platform_its_image_and_names_what_it_lacks() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let amd = test_support::image(&store, "amd");
        let mut arm_config = test_support::config("arm");
        arm_config.architecture = "arm64".into();
        let arm = crate::write_image(&store, &arm_config, Vec::new()).unwrap();
        let index = crate::write_index(&store, &[arm.clone(), amd.clone()]).unwrap();
        assert_eq!(
            StoredImage::index_platforms(&store, &index).unwrap(),
            ["linux/arm64", "linux/amd64"]
        );
        let picked = |p: &str| {
            StoredImage::load_for_platform(&store, &index, &p.parse().unwrap())
                .map(|i| (i.manifest_digest, i.index_digest))
        };
        assert_eq!(
            picked("linux/arm64").unwrap(),
            (arm.manifest_digest.clone(), Some(index.clone()))
        );
        assert_eq!(picked("linux/amd64").unwrap().0, amd.manifest_digest);
        let err = picked("linux/s390x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "image index {index} has no image for linux/s390x; it has: linux/arm64, linux/amd64"
            )
        );
        // A plain manifest is its own image for any platform asked (the caller checks it).
        assert_eq!(
            StoredImage::load_for_platform(
                &store,
                &amd.manifest_digest,
                &"linux/arm64".parse().unwrap()
            )
            .unwrap()
            .index_digest,
            None
        );
        assert!(
            StoredImage::index_platforms(&store, &amd.manifest_digest)
                .unwrap()
                .is_empty()
        );
    }
}
