//! Recognising manifest bytes: an image manifest, an index (manifest list), or something kiln does
//! not handle (Docker schema 1, artifacts of other types).

use kiln_image::{Index, Manifest, media_type};
use serde::Deserialize;

/// The media types kiln asks registries for, most preferred first.
pub(crate) const MANIFEST_ACCEPT: &str = concat!(
    "application/vnd.oci.image.index.v1+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.docker.distribution.manifest.v2+json"
);

/// The largest manifest kiln reads (containerd uses the same limit).
pub(crate) const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug)]
pub(crate) enum ParsedManifest {
    Image {
        manifest: Manifest,
        media_type: String,
    },
    Index {
        index: Index,
        media_type: String,
    },
}

impl ParsedManifest {
    pub fn media_type(&self) -> &str {
        match self {
            ParsedManifest::Image { media_type, .. } | ParsedManifest::Index { media_type, .. } => {
                media_type
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ManifestError {
    /// Recognised, but not a type kiln handles; carries the media type.
    Unsupported(String),
    Invalid(String),
}

/// Just the fields that tell manifest kinds apart.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// Classifies and parses manifest bytes. The `mediaType` field wins over the HTTP
/// `content_type` (which some registries get wrong); with neither, the shape decides.
pub(crate) fn parse_manifest(
    content_type: Option<&str>,
    bytes: &[u8],
) -> Result<ParsedManifest, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| ManifestError::Invalid(format!("manifest is not valid JSON: {e}")))?;
    let header_type = content_type
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim().to_owned())
        .filter(|ct| !ct.is_empty() && ct != "application/json" && ct != "text/plain");
    if probe.schema_version == Some(1) {
        return Err(ManifestError::Unsupported(
            header_type.unwrap_or_else(|| DOCKER_SCHEMA1.to_owned()),
        ));
    }
    let media_type = match probe.media_type.or(header_type) {
        Some(mt) => mt,
        None if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
        None if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
        None => {
            return Err(ManifestError::Invalid(
                "manifest has no mediaType and is neither an image nor an index".into(),
            ));
        }
    };
    if media_type::is_index(&media_type) {
        let index = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("invalid index: {e}")))?;
        Ok(ParsedManifest::Index { index, media_type })
    } else if media_type::is_manifest(&media_type) {
        let manifest = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("invalid image manifest: {e}")))?;
        Ok(ParsedManifest::Image {
            manifest,
            media_type,
        })
    } else {
        Err(ManifestError::Unsupported(media_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}"#;

    #[test]
    fn recognises_image_manifests_by_field_header_or_shape() {
        let with_field = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{CONFIG},"layers":[]}}"#,
            media_type::DOCKER_MANIFEST
        );
        let p = parse_manifest(Some("application/json"), with_field.as_bytes()).unwrap();
        assert!(matches!(&p, ParsedManifest::Image { .. }));
        assert_eq!(p.media_type(), media_type::DOCKER_MANIFEST);

        let bare = format!(r#"{{"schemaVersion":2,"config":{CONFIG},"layers":[]}}"#);
        let p = parse_manifest(
            Some(&format!("{}; charset=utf-8", media_type::OCI_MANIFEST)),
            bare.as_bytes(),
        )
        .unwrap();
        assert_eq!(p.media_type(), media_type::OCI_MANIFEST);
        let p = parse_manifest(None, bare.as_bytes()).unwrap();
        assert_eq!(p.media_type(), media_type::OCI_MANIFEST);
    }

    #[test]
    fn recognises_indexes() {
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media_type::DOCKER_MANIFEST_LIST
        );
        assert!(matches!(
            parse_manifest(None, list.as_bytes()),
            Ok(ParsedManifest::Index { .. })
        ));
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        let p = parse_manifest(None, bare.as_bytes()).unwrap();
        assert_eq!(p.media_type(), media_type::OCI_INDEX);
    }

    #[test]
    fn rejects_schema1_other_types_and_garbage() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(
            parse_manifest(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                schema1.as_bytes()
            )
            .unwrap_err(),
            ManifestError::Unsupported(
                "application/vnd.docker.distribution.manifest.v1+prettyjws".into()
            )
        );
        assert_eq!(
            parse_manifest(None, schema1.as_bytes()).unwrap_err(),
            ManifestError::Unsupported(DOCKER_SCHEMA1.into())
        );
        let helm = r#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart.v1"}"#;
        assert!(matches!(
            parse_manifest(None, helm.as_bytes()),
            Err(ManifestError::Unsupported(_))
        ));
        assert!(matches!(
            parse_manifest(None, b"not json"),
            Err(ManifestError::Invalid(_))
        ));
        assert!(matches!(
            parse_manifest(None, br#"{"schemaVersion":2}"#),
            Err(ManifestError::Invalid(_))
        ));
        let broken = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        assert!(matches!(
            parse_manifest(None, broken.as_bytes()),
            Err(ManifestError::Invalid(_))
        ));
    }
}
