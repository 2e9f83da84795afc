//! The manifest media types of a push (`kiln push --format oci|docker`): an image stored with OCI
//! types can be pushed with Docker v2 schema 2 types (for registries and tools that only take
//! those) and the other way round. Only descriptor and manifest media types change; configs and
//! layers are the same bytes, so the converted manifest refers to blobs already in the store.

use std::str::FromStr;

use kiln_image::{Digest, Manifest, media_type};
use kiln_store::Store;

use crate::content::{ParsedManifest, parse_manifest};
use crate::error::RegistryError;

/// `application/vnd.docker.image.rootfs.diff.tar`: an uncompressed Docker layer.
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The media types a manifest is pushed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFormat {
    Oci,
    Docker,
}

impl PushFormat {
    pub fn name(self) -> &'static str {
        match self {
            PushFormat::Oci => "oci",
            PushFormat::Docker => "docker",
        }
    }
}

impl FromStr for PushFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oci" => Ok(PushFormat::Oci),
            "docker" => Ok(PushFormat::Docker),
            other => Err(format!(
                "unknown push format {other:?}: expected oci or docker"
            )),
        }
    }
}

/// The digest of the image manifest `digest` with `format`'s media types, writing the converted
/// manifest to the store when it differs. A manifest already in `format` is returned unchanged,
/// so its digest (and a later push of it) stays the same.
pub fn manifest_in_format(
    store: &Store,
    digest: &Digest,
    format: PushFormat,
) -> Result<Digest, RegistryError> {
    let object = format!("manifest {digest}");
    let local = |source| RegistryError::LocalStore {
        object: object.clone(),
        source: Box::new(source),
    };
    let bytes = store.read_blob(digest).map_err(local)?;
    let incompatible = |message: String| RegistryError::IncompatibleFormat {
        manifest: digest.clone(),
        format: format.name(),
        message,
    };
    let manifest = match parse_manifest(None, &bytes) {
        Ok(ParsedManifest::Image { manifest, .. }) => manifest,
        Ok(ParsedManifest::Index { .. }) => {
            return Err(incompatible(
                "converting a multi-platform index is not supported; push it as stored".into(),
            ));
        }
        Err(e) => return Err(incompatible(format!("{e:?}"))),
    };
    let converted = convert(&manifest, format).map_err(incompatible)?;
    if converted == manifest {
        return Ok(digest.clone());
    }
    let bytes = serde_json::to_vec(&converted).expect("manifests serialise");
    store.write_blob(&bytes).map_err(local)
}

/// `manifest` with `format`'s media types; an error names a layer that cannot be expressed in it.
pub(crate) fn convert(manifest: &Manifest, format: PushFormat) -> Result<Manifest, String> {
    let mut out = manifest.clone();
    match format {
        PushFormat::Docker => {
            out.media_type = Some(media_type::DOCKER_MANIFEST.to_owned());
            out.config.media_type = media_type::DOCKER_CONFIG.to_owned();
            // Docker schema 2 has no annotations; Docker's own converter drops them too.
            out.annotations.clear();
            for layer in &mut out.layers {
                layer.media_type = match layer.media_type.as_str() {
                    media_type::OCI_LAYER_GZIP | media_type::DOCKER_LAYER_GZIP => {
                        media_type::DOCKER_LAYER_GZIP
                    }
                    media_type::OCI_LAYER | DOCKER_LAYER => DOCKER_LAYER,
                    media_type::DOCKER_FOREIGN_LAYER_GZIP => media_type::DOCKER_FOREIGN_LAYER_GZIP,
                    media_type::OCI_LAYER_ZSTD => {
                        return Err(format!(
                            "layer {} is zstd-compressed, which Docker media types cannot \
                             express; push with --format oci, or with --compression gzip",
                            layer.digest
                        ));
                    }
                    other => {
                        return Err(format!(
                            "layer {} has media type {other}, which has no Docker equivalent",
                            layer.digest
                        ));
                    }
                }
                .to_owned();
                layer.annotations.clear();
            }
        }
        PushFormat::Oci => {
            out.media_type = Some(media_type::OCI_MANIFEST.to_owned());
            out.config.media_type = media_type::OCI_CONFIG.to_owned();
            for layer in &mut out.layers {
                layer.media_type = match layer.media_type.as_str() {
                    media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
                    DOCKER_LAYER => media_type::OCI_LAYER,
                    media_type::DOCKER_FOREIGN_LAYER_GZIP => {
                        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                    }
                    other => other,
                }
                .to_owned();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::Descriptor;

    fn oci_image(layer_type: &str) -> Manifest {
        let mut m = Manifest::oci(
            Descriptor::new(media_type::OCI_CONFIG, Digest::of(b"config"), 6),
            vec![
                Descriptor::new(media_type::OCI_LAYER_GZIP, Digest::of(b"a"), 1),
                Descriptor::new(layer_type, Digest::of(b"b"), 1),
            ],
        );
        m.annotations
            .insert("org.opencontainers.image.created".into(), "x".into());
        m
    }

    #[test]
    fn oci_to_docker_changes_every_media_type_and_keeps_the_blobs() {
        let oci = oci_image(media_type::OCI_LAYER);
        let docker = convert(&oci, PushFormat::Docker).unwrap();
        assert_eq!(
            docker.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST)
        );
        assert_eq!(docker.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(docker.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
        assert_eq!(docker.layers[1].media_type, DOCKER_LAYER);
        assert!(docker.annotations.is_empty());
        assert_eq!(docker.config.digest, oci.config.digest);
        assert_eq!(docker.layers[1].digest, oci.layers[1].digest);

        // And back: the OCI types return (annotations are gone for good, as with Docker).
        let back = convert(&docker, PushFormat::Oci).unwrap();
        assert_eq!(back.media_type.as_deref(), Some(media_type::OCI_MANIFEST));
        assert_eq!(back.config.media_type, media_type::OCI_CONFIG);
        assert_eq!(back.layers[0].media_type, media_type::OCI_LAYER_GZIP);
        assert_eq!(back.layers[1].media_type, media_type::OCI_LAYER);
    }

    #[test]
    fn zstd_layers_cannot_be_docker() {
        let err = convert(&oci_image(media_type::OCI_LAYER_ZSTD), PushFormat::Docker).unwrap_err();
        assert!(err.contains("zstd"), "{err}");
        assert!(err.contains(&Digest::of(b"b").to_string()), "{err}");
    }

    #[test]
    fn stored_manifests_are_converted_once_and_unchanged_ones_keep_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let oci = oci_image(media_type::OCI_LAYER);
        let digest = store
            .write_blob(&serde_json::to_vec(&oci).unwrap())
            .unwrap();
        assert_eq!(
            manifest_in_format(&store, &digest, PushFormat::Oci).unwrap(),
            digest
        );
        let docker = manifest_in_format(&store, &digest, PushFormat::Docker).unwrap();
        assert_ne!(docker, digest);
        let stored: Manifest = serde_json::from_slice(&store.read_blob(&docker).unwrap()).unwrap();
        assert_eq!(
            stored.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST)
        );
        assert_eq!(
            manifest_in_format(&store, &docker, PushFormat::Docker).unwrap(),
            docker
        );

        let zstd = oci_image(media_type::OCI_LAYER_ZSTD);
        let digest = store
            .write_blob(&serde_json::to_vec(&zstd).unwrap())
            .unwrap();
        let err = manifest_in_format(&store, &digest, PushFormat::Docker)
            .unwrap_err()
            .to_string();
        assert!(err.contains("zstd") && err.contains("docker"), "{err}");
    }
}
