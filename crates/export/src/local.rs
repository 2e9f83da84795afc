//! An image's final filesystem in a directory, as BuildKit's `local` exporter writes it.

use std::path::Path;

use kiln_image::{Digest, ImageConfig, Manifest};
use kiln_store::Store;

use crate::{ExportError, Result};

/// Applies the layers of the image whose manifest is `manifest_digest` into `dest` (created if
/// missing; existing files are replaced, directories merged), bottom layer first, deleting what
/// each layer's whiteouts hide. Extraction stays inside `dest` (see [`kiln_layer::apply_layer`]);
/// every layer's content is checked against the diffID its config records.
pub fn export_filesystem(store: &Store, manifest_digest: &Digest, dest: &Path) -> Result<()> {
    let invalid = |entry: String, message: String| ExportError::Invalid { entry, message };
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(manifest_digest)?)
        .map_err(|e| invalid(format!("manifest {manifest_digest}"), e.to_string()))?;
    let config_digest = &manifest.config.digest;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(config_digest)?)
        .map_err(|e| invalid(format!("config {config_digest}"), e.to_string()))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            format!("image {manifest_digest}"),
            format!(
                "config lists {} diff_ids but the manifest has {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    std::fs::create_dir_all(dest).map_err(|source| ExportError::Io {
        path: dest.to_owned(),
        source,
    })?;
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let blob = store.open_blob(&layer.digest)?;
        let actual =
            kiln_layer::apply_layer(std::io::BufReader::with_capacity(256 * 1024, blob), dest)?;
        if &actual != diff_id {
            return Err(invalid(
                format!("layer {}", layer.digest),
                format!("its content has diffID {actual} but the image config says {diff_id}"),
            ));
        }
    }
    Ok(())
}
