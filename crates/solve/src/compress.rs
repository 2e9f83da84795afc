//! Layers in the compression a build or push asks for (`--compression`, `--compression-level`).
//!
//! A step that runs writes its layer in the requested setting directly. A cache hit or a push may
//! find the layer stored in another setting; it then gets the layer's variant for the requested
//! setting from the store, made once by re-encoding (`kiln_layer::layer_in_compression`). Base
//! image layers are kept as pulled during a build (as BuildKit does without `force-compression`);
//! a push with `--compression` converts every layer.

use kiln_image::{Descriptor, Manifest, media_type, to_canonical_json};
use kiln_layer::CompressionRequest;
use kiln_store::Store;

use crate::cache::{CacheRecord, LayerRecord};
use crate::error::Result;
use crate::images::StoredImage;

/// `record` with its layer (if any) in the requested compression.
pub(crate) fn record_in_compression(
    store: &Store,
    record: CacheRecord,
    request: &CompressionRequest,
) -> Result<CacheRecord> {
    let Some(layer) = &record.layer else {
        return Ok(record);
    };
    let stored = Descriptor::new(layer.media_type.clone(), layer.digest.clone(), layer.size);
    let chosen = kiln_layer::layer_in_compression(store, &stored, &layer.diff_id, request)?;
    Ok(CacheRecord {
        layer: Some(LayerRecord {
            digest: chosen.descriptor.digest,
            diff_id: layer.diff_id.clone(),
            size: chosen.descriptor.size,
            media_type: chosen.descriptor.media_type,
        }),
        created: record.created,
    })
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
    for (layer, diff_id) in image.layers() {
        let chosen = kiln_layer::layer_in_compression(store, layer, diff_id, request)?;
        reencoded += usize::from(chosen.reencoded);
        let mut descriptor = chosen.descriptor;
        // Keep what the descriptor said beyond its blob (annotations, URLs).
        descriptor.annotations = layer.annotations.clone();
        descriptor.urls = layer.urls.clone();
        layers.push(descriptor);
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
        l.media_type = crate::images::oci_layer_media_type(&l.media_type).to_owned();
    }
    let mut manifest = Manifest::oci(config, layers);
    manifest.annotations = image.manifest.annotations.clone();
    let manifest_digest = store.write_blob(&to_canonical_json(&manifest))?;
    let converted = StoredImage {
        manifest_digest,
        manifest,
        config_digest: image.config_digest.clone(),
        config: image.config.clone(),
    };
    Ok((converted, reencoded))
}
