//! Layers in the compression a build or push asks for (`--compression`, `--compression-level`).
//!
//! A step that runs writes its layer in the requested setting directly. A cache hit or a push may
//! find the layer stored in another setting; it then gets the layer's variant for the requested
//! setting from the store, made once by re-encoding (`kiln_layer::layer_in_compression`). Base
//! image layers are kept as pulled during a build (as BuildKit does without `force-compression`);
//! a push with `--compression` converts every layer (`kiln_images::image_in_compression`).

use kiln_layer::CompressionRequest;
use kiln_store::Store;

use crate::cache::CacheRecord;
use crate::error::Result;

/// `record` with its layer (if any) in the requested compression.
pub(crate) fn record_in_compression(
    store: &Store,
    record: CacheRecord,
    request: &CompressionRequest,
) -> Result<CacheRecord> {
    let Some(layer) = &record.layer else {
        return Ok(record);
    };
    let chosen = kiln_layer::layer_in_compression(store, layer, request)?;
    Ok(CacheRecord {
        layer: Some(chosen.layer),
        created: record.created,
    })
}
