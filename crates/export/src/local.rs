//! An image's final filesystem in a directory, as BuildKit's `local` exporter writes it.

use std::path::Path;

use kiln_image::{Digest, LayerRef};
use kiln_store::Store;

use crate::{ExportError, Result};

/// Applies the layers of the image whose manifest is `manifest_digest` into `dest` (created if
/// missing; existing files are replaced, directories merged), bottom layer first, deleting what
/// each layer's whiteouts hide. Extraction stays inside `dest` (see [`kiln_layer::apply_layer`]);
/// every layer's content is checked against the diffID its config records.
pub fn export_filesystem(store: &Store, manifest_digest: &Digest, dest: &Path) -> Result<()> {
    let invalid = |entry: String, e: kiln_image::InvalidImage| ExportError::Invalid {
        entry,
        message: e.to_string(),
    };
    let manifest = kiln_image::parse_manifest(&store.read_blob(manifest_digest)?)
        .map_err(|e| invalid(format!("manifest {manifest_digest}"), e))?;
    let config_digest = &manifest.config.digest;
    let config = kiln_image::parse_config(&manifest, &store.read_blob(config_digest)?).map_err(
        |e| match e {
            kiln_image::InvalidImage::Config(_) => invalid(format!("config {config_digest}"), e),
            _ => invalid(format!("image {manifest_digest}"), e),
        },
    )?;
    std::fs::create_dir_all(dest).map_err(|source| ExportError::Io {
        path: dest.to_owned(),
        source,
    })?;
    for layer in LayerRef::pair_all(&manifest.layers, &config.rootfs.diff_ids) {
        let blob = store.open_blob(&layer.digest)?;
        let actual =
            kiln_layer::apply_layer(std::io::BufReader::with_capacity(256 * 1024, blob), dest)?;
        kiln_image::check_diff_id(&actual, &layer.diff_id)
            .map_err(|e| invalid(format!("layer {}", layer.digest), e))?;
    }
    Ok(())
}
