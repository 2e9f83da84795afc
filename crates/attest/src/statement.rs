//! in-toto statements (<https://github.com/in-toto/attestation>, Statement layer v0.1, the
//! version BuildKit writes): a subject — the image manifest, by purl name and digest — and a
//! typed predicate.

use std::collections::BTreeMap;

use kiln_image::{Digest, Platform};
use serde::{Deserialize, Serialize};

/// The statement type BuildKit writes and tools that read its attestations expect.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
/// SPDX documents, as BuildKit labels its SBOM statements.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// SLSA provenance v0.2, BuildKit's default provenance format.
pub const SLSA_V02_PREDICATE: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1.0 (`version=v1`).
pub const SLSA_V1_PREDICATE: &str = "https://slsa.dev/provenance/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub subject: Vec<Subject>,
    pub predicate: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// The image manifest `digest`, named as BuildKit names it: the purl of the image
    /// (`pkg:docker/<name>@<tag>?platform=linux%2Famd64`), or the bare digest's purl when
    /// the image has no name.
    pub fn image(
        name: Option<&kiln_image::Reference>,
        platform: &Platform,
        digest: &Digest,
    ) -> Subject {
        Subject {
            name: image_purl(name, platform),
            digest: [("sha256".to_owned(), digest.hex().to_owned())].into(),
        }
    }
}

/// `pkg:docker/<repository>@<tag>?platform=…`, the purl type BuildKit uses for images.
pub fn image_purl(name: Option<&kiln_image::Reference>, platform: &Platform) -> String {
    let qualifier = format!("platform={}", crate::scan::encode(&platform.to_string()));
    match name {
        Some(r) => {
            let full = r.to_string();
            let (repo, version) = match (r.digest(), full.rsplit_once(':')) {
                (Some(d), _) => (
                    full.split('@').next().unwrap_or(&full).to_owned(),
                    d.to_string(),
                ),
                (None, Some((repo, tag))) if !tag.contains('/') => {
                    (repo.to_owned(), tag.to_owned())
                }
                _ => (full.clone(), "latest".to_owned()),
            };
            format!(
                "pkg:docker/{repo}@{}?{qualifier}",
                crate::scan::encode(&version)
            )
        }
        None => format!("pkg:docker/image?{qualifier}"),
    }
}

impl Statement {
    pub fn new(predicate_type: &str, subject: Vec<Subject>, predicate: serde_json::Value) -> Self {
        Statement {
            statement_type: STATEMENT_TYPE.to_owned(),
            predicate_type: predicate_type.to_owned(),
            subject,
            predicate,
        }
    }

    /// The statement as stored: canonical JSON (sorted keys, no spaces).
    pub fn to_bytes(&self) -> Vec<u8> {
        kiln_image::to_canonical_json(self)
    }
}
