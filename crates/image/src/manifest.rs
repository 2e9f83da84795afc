//! Descriptors, image manifests and indexes (OCI and Docker v2 schema 2 share one shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Digest, Platform};

/// Media types kiln reads and writes.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// True for media types that name a single-platform image manifest.
    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }

    /// True for media types that name a list of manifests (one per platform).
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
}

/// A typed pointer to content: what it is, its digest and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            urls: Vec::new(),
        }
    }
}

/// A single-platform image: a config and an ordered list of layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// An OCI manifest for `config` and `layers`.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }

    /// The media type to send in `Content-Type` (the field, or OCI when a manifest omits it).
    pub fn effective_media_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(media_type::OCI_MANIFEST)
    }
}

/// A list of manifests, one per platform (OCI index or Docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The manifest for `want`, by the OCI platform-matching rules (os and architecture must
    /// match; a variant, when both sides name one, must match too). Entries without a platform
    /// never match: they are attestations or other artifacts.
    pub fn select(&self, want: &Platform) -> Option<&Descriptor> {
        let candidates = self
            .manifests
            .iter()
            .filter(|d| media_type::is_manifest(&d.media_type))
            .filter(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)));
        // Prefer an exact variant match over an entry that leaves the variant open.
        let mut best: Option<&Descriptor> = None;
        for d in candidates {
            let exact =
                d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref();
            if exact {
                return Some(d);
            }
            best.get_or_insert(d);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_canonical_json;

    fn desc(mt: &str, data: &[u8]) -> Descriptor {
        Descriptor::new(mt, Digest::of(data), data.len() as u64)
    }

    #[test]
    fn manifest_serialises_canonically_and_oci_spec_reads_it() {
        let m = Manifest::oci(
            desc(media_type::OCI_CONFIG, b"{}"),
            vec![desc(media_type::OCI_LAYER_GZIP, b"layer")],
        );
        let bytes = to_canonical_json(&m);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"config":{"digest":"sha256:"#),
            "{text}"
        );
        assert!(
            !text.contains("annotations"),
            "empty maps are omitted: {text}"
        );
        let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed.layers().len(), 1);
        assert_eq!(serde_json::from_slice::<Manifest>(&bytes).unwrap(), m);
    }

    #[test]
    fn index_selects_host_platform_and_skips_attestations() {
        let json = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1,
             "platform":{"architecture":"arm","os":"linux","variant":"v7"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":1,
             "platform":{"architecture":"amd64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":1,
             "platform":{"architecture":"unknown","os":"unknown"}}
          ]}"#;
        let idx: Index = serde_json::from_str(json).unwrap();
        let amd = idx.select(&Platform::new("linux", "amd64")).unwrap();
        assert!(amd.digest.hex().starts_with("2222"));
        let arm = idx.select(&Platform {
            variant: Some("v7".into()),
            ..Platform::new("linux", "arm")
        });
        assert!(arm.unwrap().digest.hex().starts_with("1111"));
        let arm6 = idx.select(&Platform {
            variant: Some("v6".into()),
            ..Platform::new("linux", "arm")
        });
        assert!(arm6.is_none());
        assert!(idx.select(&Platform::new("linux", "s390x")).is_none());
    }
}
