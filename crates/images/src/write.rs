//! New images in the store: written from a config and layers, committed from a directory of
//! changes (a container's upper dir), imported from a root filesystem tarball, or converted to
//! another layer compression for a push.

use std::io::Read;
use std::path::Path;

use kiln_image::{
    Descriptor, History, ImageConfig, LayerRef, Manifest, Platform, media_type, to_canonical_json,
};
use kiln_layer::{Compression, CompressionRequest};
use kiln_store::Store;

use crate::error::Result;
use crate::stored::StoredImage;

/// Writes `config` and an OCI manifest over `layers` into the store. The image gets no name
/// (see [`crate::tag`]).
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
) -> Result<StoredImage> {
    write_image_annotated(store, config, layers, Default::default())
}

/// [`write_image`] with `annotations` on the manifest (`--annotation`).
pub fn write_image_annotated(
    store: &Store,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<StoredImage> {
    let config_bytes = to_canonical_json(config);
    let config_digest = store.write_blob(&config_bytes)?;
    let config_desc = Descriptor::new(
        media_type::OCI_CONFIG,
        config_digest.clone(),
        config_bytes.len() as u64,
    );
    let mut manifest = Manifest::oci(config_desc, layers);
    manifest.annotations = annotations;
    let manifest_digest = store.write_blob(&to_canonical_json(&manifest))?;
    Ok(StoredImage {
        index_digest: None,
        manifest_digest,
        manifest,
        config_digest,
        config: config.clone(),
    })
}

/// An OCI image index of `images` (one per platform, each entry with its config's platform),
/// written after the manifests it names; returns its digest. What a multi-platform build's
/// names point at.
pub fn write_index(store: &Store, images: &[StoredImage]) -> Result<kiln_image::Digest> {
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        let mut d = Descriptor::new(
            image.manifest.effective_media_type(),
            image.manifest_digest.clone(),
            store.blob_size(&image.manifest_digest)?,
        );
        d.platform = Some(crate::stored::config_platform(&image.config));
        manifests.push(d);
    }
    let index = kiln_image::Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests,
        annotations: Default::default(),
    };
    Ok(store.write_blob(&to_canonical_json(&index))?)
}

/// A new image: `base`'s layers plus one layer of the changes in `upper` (an overlay upper dir:
/// whiteouts become `.wh.` entries), with `config` (the caller derives it from `base`'s) and
/// `history` appended. No changes add no layer; the history entry is then marked empty.
pub fn commit_layer(
    store: &Store,
    base: &StoredImage,
    upper: &Path,
    mut config: ImageConfig,
    mut history: History,
) -> Result<StoredImage> {
    let layer = kiln_layer::write_layer(store, upper, Compression::default())?;
    let mut layers = base.manifest.layers.clone();
    config.rootfs.diff_ids = base.config.rootfs.diff_ids.clone();
    history.empty_layer = layer.is_none();
    config.history.push(history);
    if let Some(layer) = layer {
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        layers.push(layer.descriptor());
    }
    write_image(store, &config, layers)
}

/// An image of one layer from a root filesystem tarball (plain or compressed), for the host's
/// platform, as `docker import` makes one. `created` is RFC 3339; `created_by` goes into the
/// history.
pub fn import_rootfs(
    store: &Store,
    tarball: impl Read,
    created: &str,
    created_by: String,
) -> Result<StoredImage> {
    let layer = kiln_layer::import_tar(store, tarball, Compression::default())?;
    let platform = Platform::host();
    let mut config = ImageConfig {
        created: Some(created.to_owned()),
        architecture: platform.architecture,
        os: platform.os,
        variant: platform.variant,
        ..Default::default()
    };
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created.to_owned()),
        created_by: Some(created_by),
        comment: Some("Imported from tarball".into()),
        ..Default::default()
    });
    let layers = vec![layer.descriptor()];
    write_image(store, &config, layers)
}

/// Maps Docker layer media types to their OCI names so a derived OCI manifest is uniform. The
/// bytes are identical; only the label differs.
pub fn oci_layer_media_type(mt: &str) -> &str {
    match mt {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => media_type::OCI_LAYER,
        other => other,
    }
}

/// The image converted for a push with `--compression`: `image` itself when every layer already
/// is as requested, else a new OCI manifest (same config, each layer's variant in the requested
/// setting) written to the store. Returns the image to push and how many layers were
/// compressed anew.
pub fn image_in_compression(
    store: &Store,
    image: &StoredImage,
    request: &CompressionRequest,
) -> Result<(StoredImage, usize)> {
    let mut layers = Vec::with_capacity(image.manifest.layers.len());
    let mut reencoded = 0;
    for (descriptor, diff_id) in image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
    {
        let layer = LayerRef::from_descriptor(descriptor, diff_id.clone());
        let chosen = kiln_layer::layer_in_compression(store, &layer, request)?;
        reencoded += usize::from(chosen.reencoded);
        if chosen.layer == layer {
            layers.push(descriptor.clone());
            continue;
        }
        // Keep what the descriptor said beyond its blob (annotations, URLs).
        let mut converted = chosen.layer.descriptor();
        converted.annotations = descriptor.annotations.clone();
        converted.urls = descriptor.urls.clone();
        layers.push(converted);
    }
    if layers == image.manifest.layers {
        return Ok((image.clone(), 0));
    }
    // Docker's schema 2 has no zstd or uncompressed-layer types worth relying on: the converted
    // manifest is OCI, the config bytes unchanged (the two config formats are the same JSON).
    let mut config = image.manifest.config.clone();
    if config.media_type == media_type::DOCKER_CONFIG {
        config.media_type = media_type::OCI_CONFIG.to_owned();
    }
    for l in &mut layers {
        l.media_type = oci_layer_media_type(&l.media_type).to_owned();
    }
    let mut manifest = Manifest::oci(config, layers);
    manifest.annotations = image.manifest.annotations.clone();
    let manifest_digest = store.write_blob(&to_canonical_json(&manifest))?;
    let converted = StoredImage {
        index_digest: None,
        manifest_digest,
        manifest,
        config_digest: image.config_digest.clone(),
        config: image.config.clone(),
    };
    Ok((converted, reencoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::layer;

    #[test]
    fn a_repeated_layer_counts_once_in_the_image_size() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b) = (layer(&store, "a"), layer(&store, "b"));
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids = vec![a.diff_id.clone(), b.diff_id.clone(), a.diff_id.clone()];
        let img = write_image(
            &store,
            &config,
            vec![a.descriptor(), b.descriptor(), a.descriptor()],
        )
        .unwrap();
        let img = StoredImage::load(&store, &img.manifest_digest).unwrap();
        assert_eq!(img.size(), a.size + b.size + img.manifest.config.size);
    }

    #[test]
    fn a_commit_adds_the_changes_as_one_layer_and_an_empty_one_none() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = layer(&store, "a");
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids = vec![a.diff_id.clone()];
        let base = write_image(&store, &config, vec![a.descriptor()]).unwrap();
        let upper = tempfile::tempdir().unwrap();
        let empty = commit_layer(
            &store,
            &base,
            upper.path(),
            base.config.clone(),
            History::default(),
        )
        .unwrap();
        assert_eq!(empty.manifest.layers, base.manifest.layers);
        assert!(empty.config.history.last().unwrap().empty_layer);
        std::fs::write(upper.path().join("new"), "x").unwrap();
        let img = commit_layer(
            &store,
            &base,
            upper.path(),
            base.config.clone(),
            History::default(),
        )
        .unwrap();
        let img = StoredImage::load(&store, &img.manifest_digest).unwrap();
        assert_eq!(img.manifest.layers.len(), 2);
        assert_eq!(img.config.rootfs.diff_ids.len(), 2);
        assert!(!img.config.history.last().unwrap().empty_layer);
    }
}
