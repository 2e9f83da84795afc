//! The kiln cache document: the config blob of an exported build cache.
//!
//! An export is an OCI image manifest whose config (media type [`CACHE_CONFIG_MEDIA_TYPE`]) is
//! this document and whose layers are every layer blob a record names, so the registry keeps
//! them and any OCI tool sees a valid manifest. Each record is one filesystem step: its cache
//! key, the layer it produced (or none) and when it first ran. A record does not repeat the
//! layers below it: keys chain through their parent's key, so the layers under a step are
//! those of the records of its parents (and of the base image, keyed by manifest digest),
//! which the importing build has already applied when it reaches the step.

use std::collections::BTreeMap;

use kiln_image::{Descriptor, DiffId, Digest, LayerRef, Manifest, to_canonical_json};
use kiln_store::CacheKey;
use serde::{Deserialize, Serialize};

use super::mounts::CachedMount;
use crate::cache::CacheRecord;

/// The media type of the cache document, as the export manifest's config.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";
/// The document version this kiln writes and reads.
const SCHEMA_VERSION: u32 = 1;

/// Every exported step of one cache export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheDocument {
    pub schema_version: u32,
    /// Sorted by key, one per key.
    pub records: Vec<CachedStep>,
    /// Definition keys of `COPY --from=<stage>` steps: sorted, one per alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<CacheAlias>,
    /// `RUN --mount=type=cache` directories (`cache-mounts=true`): sorted by key, one per
    /// key. Absent in older exports, which older kilns read without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_mounts: Vec<CachedMount>,
}

/// A `COPY --from=<stage>` step's definition key (its parent's key, its own arguments and the
/// source stage's key) and the content key it had (which hashes the files it copied). An
/// importer that finds the definition key knows the step's key without reading the source
/// stage, so a cached stage that only feeds a cached copy is never downloaded — BuildKit's
/// definition-based cache key beside its content checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheAlias {
    pub alias: CacheKey,
    pub key: CacheKey,
}

/// One step's cache record, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedStep {
    pub key: CacheKey,
    /// When the step first ran (RFC 3339): reused on a hit, so the image bytes stay the same.
    pub created: String,
    /// `None` for a step that changed no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<CachedLayer>,
}

/// The layer of a step and, when the exporter knew it, the compression setting that made its
/// blob (`gzip-6`, …): an importer asked for an exact level reuses the blob only if it matches.
///
/// In the document it is one flat object in the OCI descriptor's spelling (`mediaType`,
/// `digest`, `size`, `diffID`, `compression`), as exports have always been written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CachedLayerJson", into = "CachedLayerJson")]
pub struct CachedLayer {
    pub layer: LayerRef,
    pub compression: Option<String>,
}

/// [`CachedLayer`] as the document spells it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedLayerJson {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(rename = "diffID")]
    diff_id: DiffId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compression: Option<String>,
}

impl From<CachedLayerJson> for CachedLayer {
    fn from(j: CachedLayerJson) -> Self {
        CachedLayer {
            layer: LayerRef {
                digest: j.digest,
                diff_id: j.diff_id,
                size: j.size,
                media_type: j.media_type,
            },
            compression: j.compression,
        }
    }
}

impl From<CachedLayer> for CachedLayerJson {
    fn from(c: CachedLayer) -> Self {
        CachedLayerJson {
            media_type: c.layer.media_type,
            digest: c.layer.digest,
            size: c.layer.size,
            diff_id: c.layer.diff_id,
            compression: c.compression,
        }
    }
}

/// Why bytes are not a cache document kiln can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("not a kiln cache document: {0}")]
    Invalid(String),
    #[error("cache document version {0} is not supported (this kiln reads version 1)")]
    Version(u32),
}

impl CachedStep {
    /// The step as exported: `record` under `key`, its layer made with `compression`.
    pub fn new(key: CacheKey, record: &CacheRecord, compression: Option<String>) -> Self {
        CachedStep {
            key,
            created: record.created.clone(),
            layer: record.layer.as_ref().map(|l| CachedLayer {
                layer: l.clone(),
                compression,
            }),
        }
    }

    /// The local cache record this step stands for.
    pub fn record(&self) -> CacheRecord {
        CacheRecord {
            layer: self.layer.as_ref().map(|l| l.layer.clone()),
            created: self.created.clone(),
        }
    }
}

impl CacheDocument {
    /// A document of `steps` and `aliases`, sorted; of two with one key the first is kept.
    /// An alias whose step is not among `steps` is left out.
    pub fn new(
        steps: impl IntoIterator<Item = CachedStep>,
        aliases: impl IntoIterator<Item = CacheAlias>,
    ) -> Self {
        let mut by_key = BTreeMap::new();
        for step in steps {
            by_key.entry(step.key.clone()).or_insert(step);
        }
        let mut by_alias = BTreeMap::new();
        for alias in aliases.into_iter().filter(|a| by_key.contains_key(&a.key)) {
            by_alias.entry(alias.alias.clone()).or_insert(alias);
        }
        CacheDocument {
            schema_version: SCHEMA_VERSION,
            records: by_key.into_values().collect(),
            aliases: by_alias.into_values().collect(),
            cache_mounts: Vec::new(),
        }
    }

    /// The document with `mounts` as its cache mounts, sorted; of two with one key the
    /// first is kept.
    pub fn with_cache_mounts(mut self, mounts: impl IntoIterator<Item = CachedMount>) -> Self {
        let mut by_key = BTreeMap::new();
        for mount in mounts {
            by_key.entry(mount.key.clone()).or_insert(mount);
        }
        self.cache_mounts = by_key.into_values().collect();
        self
    }

    /// The document's bytes: canonical JSON, so equal caches export identical blobs.
    pub fn encode(&self) -> Vec<u8> {
        to_canonical_json(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DocumentError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            schema_version: u32,
        }
        let version: Version =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Invalid(e.to_string()))?;
        if version.schema_version != SCHEMA_VERSION {
            return Err(DocumentError::Version(version.schema_version));
        }
        serde_json::from_slice(bytes).map_err(|e| DocumentError::Invalid(e.to_string()))
    }

    /// Every layer blob a record or cache mount names, once each, sorted by digest.
    pub fn layer_descriptors(&self) -> Vec<Descriptor> {
        let mut layers = BTreeMap::new();
        for layer in self
            .records
            .iter()
            .filter_map(|r| r.layer.as_ref().map(|l| &l.layer))
            .chain(self.cache_mounts.iter().map(|m| &m.layer.layer))
        {
            layers
                .entry(layer.digest.clone())
                .or_insert_with(|| layer.descriptor());
        }
        layers.into_values().collect()
    }

    /// The export manifest: this document (stored as `config_digest`, `config_size` bytes) as
    /// config, and every layer blob it names as layers.
    pub fn manifest(&self, config_digest: Digest, config_size: u64) -> Manifest {
        Manifest::oci(
            Descriptor::new(CACHE_CONFIG_MEDIA_TYPE, config_digest, config_size),
            self.layer_descriptors(),
        )
    }

    /// The records an importer may use from an export whose manifest is `manifest`: only those
    /// whose layer the manifest lists with the same size, so the blob is where the manifest
    /// says (a registry keeps exactly the blobs its manifests reference).
    pub fn usable_records(&self, manifest: &Manifest) -> Vec<CachedStep> {
        let listed: BTreeMap<&Digest, u64> = manifest
            .layers
            .iter()
            .map(|l| (&l.digest, l.size))
            .collect();
        self.records
            .iter()
            .filter(|r| match &r.layer {
                None => true,
                Some(l) => listed.get(&l.layer.digest) == Some(&l.layer.size),
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: &[u8]) -> CacheKey {
        CacheKey::from_hash(Digest::of(seed))
    }

    fn record(layer: Option<(&[u8], u64)>) -> CacheRecord {
        CacheRecord {
            layer: layer.map(|(blob, size)| LayerRef {
                digest: Digest::of(blob),
                diff_id: DiffId::of_tar(&[blob, b"-tar"].concat()),
                size,
                media_type: kiln_image::media_type::OCI_LAYER_GZIP.to_owned(),
            }),
            created: "2026-01-02T03:04:05Z".into(),
        }
    }

    fn sample() -> CacheDocument {
        let aliases = [
            CacheAlias {
                alias: key(b"def-of-k4"),
                key: key(b"k4"),
            },
            CacheAlias {
                alias: key(b"def-of-nothing"),
                key: key(b"not a step"),
            },
        ];
        let steps = [
            CachedStep::new(key(b"k2"), &record(Some((b"b", 20))), None),
            CachedStep::new(key(b"k1"), &record(Some((b"a", 10))), Some("gzip-6".into())),
            CachedStep::new(key(b"k3"), &record(None), None),
            // The same layer from another step, and a duplicate key.
            CachedStep::new(key(b"k4"), &record(Some((b"a", 10))), None),
            CachedStep::new(key(b"k1"), &record(None), None),
        ];
        CacheDocument::new(steps, aliases)
    }

    #[test]
    fn round_trips_sorted_and_deduplicated() {
        let doc = sample();
        assert_eq!(doc.records.len(), 4);
        let keys: Vec<_> = doc.records.iter().map(|r| r.key.clone()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let first = doc.records.iter().find(|r| r.key == key(b"k1")).unwrap();
        assert!(first.layer.is_some(), "the first step of a key is kept");
        assert_eq!(
            doc.aliases,
            vec![CacheAlias {
                alias: key(b"def-of-k4"),
                key: key(b"k4")
            }],
            "an alias of no exported step is dropped"
        );

        let bytes = doc.encode();
        assert_eq!(CacheDocument::decode(&bytes).unwrap(), doc);
        assert_eq!(sample().encode(), bytes, "encoding is deterministic");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""schemaVersion":1"#), "{text}");
        assert!(text.contains(r#""diffID":"sha256:"#), "{text}");
        assert!(text.contains(r#""compression":"gzip-6""#), "{text}");

        // A record's own form comes back exactly.
        let step = CachedStep::new(key(b"k"), &record(Some((b"c", 3))), None);
        assert_eq!(step.record(), record(Some((b"c", 3))));
        assert_eq!(
            CachedStep::new(key(b"k"), &record(None), None).record(),
            record(None)
        );
    }

    #[test]
    fn manifest_lists_each_layer_once() {
        let doc = sample();
        let bytes = doc.encode();
        let manifest = doc.manifest(Digest::of(&bytes), bytes.len() as u64);
        assert_eq!(manifest.config.media_type, CACHE_CONFIG_MEDIA_TYPE);
        assert_eq!(manifest.config.size, bytes.len() as u64);
        let digests: Vec<_> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        let mut want = vec![Digest::of(b"a"), Digest::of(b"b")];
        want.sort();
        assert_eq!(digests, want);
        assert_eq!(
            manifest.media_type.as_deref(),
            Some(kiln_image::media_type::OCI_MANIFEST)
        );
    }

    #[test]
    fn records_whose_layer_the_manifest_lacks_are_dropped() {
        let doc = sample();
        let mut manifest = doc.manifest(Digest::of(b"c"), 1);
        manifest.layers.retain(|l| l.digest == Digest::of(b"a"));
        let usable = doc.usable_records(&manifest);
        assert_eq!(usable.len(), 3, "k1, k3 (no layer) and k4");
        assert!(usable.iter().all(|r| r.key != key(b"k2")));

        let mut wrong_size = sample().manifest(Digest::of(b"c"), 1);
        for l in &mut wrong_size.layers {
            l.size += 1;
        }
        assert_eq!(sample().usable_records(&wrong_size).len(), 1);
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        assert_eq!(
            CacheDocument::decode(br#"{"schemaVersion":2,"records":[]}"#),
            Err(DocumentError::Version(2))
        );
        assert!(matches!(
            CacheDocument::decode(b"{}"),
            Err(DocumentError::Invalid(_))
        ));
        assert!(matches!(
            CacheDocument::decode(br#"{"schemaVersion":1,"records":[{"key":"nope"}]}"#),
            Err(DocumentError::Invalid(_))
        ));
        let empty = CacheDocument::decode(br#"{"schemaVersion":1,"records":[]}"#).unwrap();
        assert!(empty.records.is_empty());
    }

    #[test]
    fn a_layer_is_written_in_the_documents_own_spelling() {
        let layer = CachedLayer {
            layer: record(Some((b"a", 10))).layer.unwrap(),
            compression: Some("gzip-6".into()),
        };
        let json = serde_json::to_string(&layer).unwrap();
        let expected = format!(
            r#"{{"mediaType":"{}","digest":"{}","size":10,"diffID":"{}","compression":"gzip-6"}}"#,
            kiln_image::media_type::OCI_LAYER_GZIP,
            Digest::of(b"a"),
            Digest::of(b"a-tar"),
        );
        assert_eq!(json, expected);
        assert_eq!(
            serde_json::from_str::<CachedLayer>(&expected).unwrap(),
            layer
        );
        let without = CachedLayer {
            compression: None,
            ..layer
        };
        let json = serde_json::to_string(&without).unwrap();
        assert!(!json.contains("compression"), "{json}");
        assert_eq!(serde_json::from_str::<CachedLayer>(&json).unwrap(), without);
        let bad = expected.replace(&Digest::of(b"a-tar").to_string(), "sha256:00");
        assert!(serde_json::from_str::<CachedLayer>(&bad).is_err());
    }
}
