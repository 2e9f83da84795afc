//! The checks that make a manifest and a config one image, shared by every reader of stored
//! images (the image service, the `local` exporter) so that they refuse the same things with the
//! same words.

use crate::{DiffId, ImageConfig, Manifest};

/// Why a manifest, a config or a layer does not belong to a well-formed image. The message
/// names no object; the caller says which image or blob it read.
#[derive(Debug, thiserror::Error)]
pub enum InvalidImage {
    #[error("manifest is not valid JSON: {0}")]
    Manifest(serde_json::Error),
    #[error("config is not valid JSON: {0}")]
    Config(serde_json::Error),
    #[error("config lists {diff_ids} diff_ids but the manifest has {layers} layers")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("layer content has diffID {actual} but the image config says {expected}")]
    DiffIdMismatch { actual: DiffId, expected: DiffId },
}

impl InvalidImage {
    /// Always [`kiln_error::ErrorKind::Internal`]: stored images are verified when they are
    /// written, so a malformed one is damage, not a caller's mistake.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::Internal
    }
}

/// Parses a manifest blob.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, InvalidImage> {
    serde_json::from_slice(bytes).map_err(InvalidImage::Manifest)
}

/// Parses a config blob and checks that it gives a diffID for each of `manifest`'s layers.
pub fn parse_config(manifest: &Manifest, bytes: &[u8]) -> Result<ImageConfig, InvalidImage> {
    let config: ImageConfig = serde_json::from_slice(bytes).map_err(InvalidImage::Config)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(InvalidImage::LayerCount {
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }
    Ok(config)
}

/// Checks an unpacked layer's diffID against the one its image's config records.
pub fn check_diff_id(actual: &DiffId, expected: &DiffId) -> Result<(), InvalidImage> {
    if actual == expected {
        Ok(())
    } else {
        Err(InvalidImage::DiffIdMismatch {
            actual: actual.clone(),
            expected: expected.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Descriptor, Digest};

    #[test]
    fn a_config_must_name_one_diff_id_per_layer() {
        let layer = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar",
            Digest::of(b"l"),
            1,
        );
        let manifest = Manifest::oci(
            Descriptor::new(
                "application/vnd.oci.image.config.v1+json",
                Digest::of(b"c"),
                1,
            ),
            vec![layer],
        );
        let config = serde_json::to_vec(&ImageConfig::default()).unwrap();
        let err = parse_config(&manifest, &config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config lists 0 diff_ids but the manifest has 1 layers"
        );
        assert!(parse_manifest(b"{").is_err());
        assert!(check_diff_id(&DiffId::of_tar(b"a"), &DiffId::of_tar(b"a")).is_ok());
        assert!(check_diff_id(&DiffId::of_tar(b"a"), &DiffId::of_tar(b"b")).is_err());
    }
}
