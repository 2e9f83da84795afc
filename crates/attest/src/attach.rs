//! Attestations in the store, attached as BuildKit attaches them: an OCI image index holding
//! the image manifest (with its platform) and, per image, an attestation manifest — platform
//! `unknown/unknown`, annotations `vnd.docker.reference.type: attestation-manifest` and
//! `vnd.docker.reference.digest: <image manifest>` — whose layers are the in-toto statements
//! (`application/vnd.in-toto+json`, annotated with `in-toto.io/predicate-type`).
//!
//! The key decision: the result is an index even for one platform, so a multi-platform build
//! adds its manifests to it, and registries and tools that read BuildKit's attestations (they
//! skip the `unknown/unknown` entry when pulling, follow the reference annotations when
//! inspecting) read kiln's. Blobs are written before the index that names them, and the
//! caller points names at the index last, so an interrupted attach leaves only garbage.

use std::collections::BTreeMap;

use kiln_image::{Descriptor, Digest, Index, Manifest, Platform, media_type, to_canonical_json};
use kiln_store::Store;

use crate::error::{AttestError, Result};
use crate::statement::Statement;

pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
pub use kiln_image::attestation::{
    ATTESTATION_MANIFEST, REFERENCE_DIGEST_ANNOTATION, REFERENCE_TYPE_ANNOTATION,
};

/// The image manifest an index was built around, with its platform.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub manifest: Digest,
    pub media_type: String,
    pub platform: Platform,
}

/// Writes the statements as an attestation manifest for `image` and an index of both; returns
/// the index's digest.
pub fn attach(store: &Store, image: &ImageEntry, statements: &[Statement]) -> Result<Digest> {
    let mut layers = Vec::new();
    for s in statements {
        let bytes = s.to_bytes();
        let digest = store.write_blob(&bytes)?;
        let mut d = Descriptor::new(IN_TOTO_MEDIA_TYPE, digest, bytes.len() as u64);
        d.annotations
            .insert(PREDICATE_TYPE_ANNOTATION.into(), s.predicate_type.clone());
        layers.push(d);
    }
    // The config BuildKit writes for attestation manifests: no platform, the statements as
    // the "layers", so generic OCI tooling that checks diff IDs is satisfied.
    let config = serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
    });
    let config_bytes = to_canonical_json(&config);
    let config_digest = store.write_blob(&config_bytes)?;
    let manifest = Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
    );
    let manifest_bytes = to_canonical_json(&manifest);
    let manifest_digest = store.write_blob(&manifest_bytes)?;
    let image_size = store.blob_size(&image.manifest)?;
    let mut image_desc = Descriptor::new(&image.media_type, image.manifest.clone(), image_size);
    image_desc.platform = Some(image.platform.clone());
    let mut att_desc = Descriptor::new(
        media_type::OCI_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    att_desc.platform = Some(Platform::new("unknown", "unknown"));
    att_desc.annotations = BTreeMap::from([
        (
            REFERENCE_DIGEST_ANNOTATION.to_owned(),
            image.manifest.to_string(),
        ),
        (
            REFERENCE_TYPE_ANNOTATION.to_owned(),
            ATTESTATION_MANIFEST.to_owned(),
        ),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests: vec![image_desc, att_desc],
        annotations: BTreeMap::new(),
    };
    Ok(store.write_blob(&to_canonical_json(&index))?)
}

/// The statements of `predicate_type` attached to `image_manifest` in the index `index`.
pub fn find(
    store: &Store,
    index: &Digest,
    image_manifest: &Digest,
    predicate_type: &str,
) -> Result<Vec<Statement>> {
    let invalid = |object: &Digest, what, e: serde_json::Error| AttestError::Invalid {
        object: object.to_string(),
        what,
        message: e.to_string(),
    };
    let idx: Index = serde_json::from_slice(&store.read_blob(index)?)
        .map_err(|e| invalid(index, "image index", e))?;
    let mut out = Vec::new();
    for d in kiln_image::attestation::of(&idx, image_manifest) {
        let m: Manifest = serde_json::from_slice(&store.read_blob(&d.digest)?)
            .map_err(|e| invalid(&d.digest, "attestation manifest", e))?;
        for layer in &m.layers {
            if layer
                .annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .map(String::as_str)
                == Some(predicate_type)
            {
                let s: Statement = serde_json::from_slice(&store.read_blob(&layer.digest)?)
                    .map_err(|e| invalid(&layer.digest, "in-toto statement", e))?;
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{SLSA_V02_PREDICATE, SPDX_PREDICATE, Subject};

    #[test]
    fn the_index_lists_the_image_and_an_attestation_manifest_that_find_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path()).unwrap();
        let image_manifest = store.write_blob(br#"{"schemaVersion":2}"#).unwrap();
        let image = ImageEntry {
            manifest: image_manifest.clone(),
            media_type: media_type::OCI_MANIFEST.to_owned(),
            platform: Platform::new("linux", "amd64"),
        };
        let subject = vec![Subject::image(None, &image.platform, &image_manifest)];
        let sbom = Statement::new(SPDX_PREDICATE, subject.clone(), serde_json::json!({"a": 1}));
        let prov = Statement::new(SLSA_V02_PREDICATE, subject, serde_json::json!({"b": 2}));
        let index = attach(&store, &image, &[sbom.clone(), prov.clone()]).unwrap();

        let idx: Index = serde_json::from_slice(&store.read_blob(&index).unwrap()).unwrap();
        assert_eq!(idx.media_type.as_deref(), Some(media_type::OCI_INDEX));
        assert_eq!(idx.manifests[0].digest, image_manifest);
        assert_eq!(
            idx.select(&Platform::new("linux", "amd64")).unwrap().digest,
            image_manifest
        );
        let att = &idx.manifests[1];
        assert_eq!(att.platform, Some(Platform::new("unknown", "unknown")));
        assert_eq!(
            att.annotations[REFERENCE_TYPE_ANNOTATION],
            ATTESTATION_MANIFEST
        );
        assert_eq!(
            att.annotations[REFERENCE_DIGEST_ANNOTATION],
            image_manifest.to_string()
        );
        let m: Manifest = serde_json::from_slice(&store.read_blob(&att.digest).unwrap()).unwrap();
        assert!(m.layers.iter().all(|l| l.media_type == IN_TOTO_MEDIA_TYPE));

        assert_eq!(
            find(&store, &index, &image_manifest, SPDX_PREDICATE).unwrap(),
            [sbom]
        );
        assert_eq!(
            find(&store, &index, &image_manifest, SLSA_V02_PREDICATE).unwrap(),
            [prov]
        );
        let other = Digest::of(b"another image");
        assert!(
            find(&store, &index, &other, SPDX_PREDICATE)
                .unwrap()
                .is_empty()
        );
    }
}
