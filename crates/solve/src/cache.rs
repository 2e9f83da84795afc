//! Cache keys and cache records.
//!
//! A step's [`CacheKey`] is a hash over its parent's key and everything that
//! can change its result, written as length-prefixed fields so no two different inputs can
//! serialise alike. The record under a key says which layer (if any) the step produced and when,
//! so a rebuild with unchanged inputs reproduces the same image byte for byte.
//!
//! The builder also records every input by name ([`KeyInput`]), so that `--explain` can later
//! diff a step's inputs against those of its last build and say why it missed.

use kiln_image::{Digest, LayerRef, Sha256Hasher};
use kiln_store::{CacheKey, Store};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Values longer than this are recorded by digest: they are still compared, but a record stays
/// small and a long value (a script, say) is not copied into the explain records.
const MAX_RECORDED_VALUE: usize = 1024;

/// One named input of a cache key, as recorded for explaining misses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInput {
    pub name: String,
    pub value: InputValue,
}

/// The recorded form of an input's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum InputValue {
    Text(String),
    List(Vec<String>),
    /// For COPY/ADD: relative path → fingerprint (type, mode, content digest) of every file the
    /// sources select. Explain-only detail: the key hashes the same content as one digest.
    Files(Vec<FileFingerprint>),
}

/// One entry of a COPY/ADD source manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// Relative to the source tree (`src/main.rs`).
    pub path: String,
    /// `f 644 <sha256 hex>`, `d 755`, `l 777 -> target`, …: equal iff the entry is unchanged.
    pub fingerprint: String,
}

/// A value as it is recorded: itself when short, else its digest.
fn recorded(value: &str) -> String {
    if value.len() > MAX_RECORDED_VALUE {
        Digest::of(value.as_bytes()).to_string()
    } else {
        value.to_owned()
    }
}

/// Accumulates the inputs of one step.
#[derive(Debug)]
pub struct KeyBuilder {
    hasher: Sha256Hasher,
    inputs: Vec<KeyInput>,
}

impl KeyBuilder {
    /// Starts a key for a step of `kind` on top of `parent`. The version string is bumped whenever
    /// the meaning of a key changes, so old records are never misread.
    pub fn new(kind: &str, parent: Option<&CacheKey>) -> Self {
        let mut k = KeyBuilder {
            hasher: Sha256Hasher::new(),
            inputs: Vec::new(),
        };
        k.field("kiln-cache-v1", kind);
        k.field("parent", &parent.map(|p| p.to_string()).unwrap_or_default());
        k
    }

    fn hash_field(&mut self, name: &str, value: &str) {
        for part in [name.as_bytes(), value.as_bytes()] {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
    }

    /// Adds one named input.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        self.hash_field(name, value);
        self.inputs.push(KeyInput {
            name: name.to_owned(),
            value: InputValue::Text(recorded(value)),
        });
        self
    }

    /// Adds a list of values under one name.
    pub fn list<'a>(&mut self, name: &str, values: impl IntoIterator<Item = &'a str>) -> &mut Self {
        let values: Vec<&str> = values.into_iter().collect();
        self.hash_field(name, &values.len().to_string());
        for v in &values {
            self.hash_field(name, v);
        }
        self.inputs.push(KeyInput {
            name: name.to_owned(),
            value: InputValue::List(values.iter().map(|v| recorded(v)).collect()),
        });
        self
    }

    /// Records the per-file detail of an input already hashed as a whole (a COPY's content
    /// digest), so a miss can name the files that changed. It does not change the key.
    pub fn detail(&mut self, name: &str, files: Vec<FileFingerprint>) -> &mut Self {
        self.inputs.push(KeyInput {
            name: name.to_owned(),
            value: InputValue::Files(files),
        });
        self
    }

    pub fn finish(self) -> CacheKey {
        CacheKey::from_hash(self.hasher.finish())
    }

    /// The key and the inputs it was built from, in the order they were added.
    pub fn finish_recorded(self) -> (CacheKey, Vec<KeyInput>) {
        (CacheKey::from_hash(self.hasher.finish()), self.inputs)
    }

    /// The hash of the inputs, for something keyed the same way that is not a build step (a
    /// cache mount's directory): a plain digest, so it cannot be taken for a step's key.
    pub fn finish_hash(self) -> Digest {
        self.hasher.finish()
    }
}

/// What a step produced, stored under its cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer the step produced (its JSON form is the record's `layer` object as it has
    /// always been written).
    pub layer: Option<LayerRef>,
    /// When the step first ran (RFC 3339); reused on every hit so image bytes stay stable.
    pub created: String,
}

impl CacheRecord {
    /// The record for `key`, if one exists and everything it points at is still in the store.
    pub fn load(store: &Store, key: &CacheKey) -> Result<Option<CacheRecord>> {
        let Some(bytes) = store.cache_get(key)? else {
            return Ok(None);
        };
        // A record we cannot read is treated as a miss: the step is re-run and the record replaced.
        let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            return Ok(None);
        };
        if let Some(layer) = &record.layer
            && !store.has_blob(&layer.digest)
        {
            return Ok(None);
        }
        // The last-use stamp `kiln prune` orders by.
        store.cache_touch(key)?;
        Ok(Some(record))
    }

    pub fn save(&self, store: &Store, key: &CacheKey) -> Result<()> {
        let bytes = serde_json::to_vec(self).expect("cache records serialise");
        store.cache_put(key, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unambiguous() {
        let mut a = KeyBuilder::new("RUN", None);
        a.field("cmd", "ab").field("env", "c");
        let mut b = KeyBuilder::new("RUN", None);
        b.field("cmd", "a").field("env", "bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn inputs_are_recorded_and_details_do_not_change_the_key() {
        let mut a = KeyBuilder::new("COPY", None);
        a.field("dest", "/app").list("sources", ["a", "b"]);
        let mut b = KeyBuilder::new("COPY", None);
        b.field("dest", "/app").list("sources", ["a", "b"]);
        b.detail(
            "content-files",
            vec![FileFingerprint {
                path: "a".into(),
                fingerprint: "f 644 00".into(),
            }],
        );
        let (key_a, inputs_a) = a.finish_recorded();
        let (key_b, inputs_b) = b.finish_recorded();
        assert_eq!(key_a, key_b);
        assert_eq!(inputs_a.len(), 4);
        assert_eq!(inputs_b.len(), 5);
        assert_eq!(inputs_a[2].name, "dest");
        assert_eq!(
            inputs_a[3].value,
            InputValue::List(vec!["a".into(), "b".into()])
        );
        let long = "x".repeat(MAX_RECORDED_VALUE + 1);
        let mut c = KeyBuilder::new("RUN", None);
        c.field("argv", &long);
        let (_, inputs_c) = c.finish_recorded();
        assert_eq!(
            inputs_c[2].value,
            InputValue::Text(Digest::of(long.as_bytes()).to_string())
        );
    }

    #[test]
    fn list_hashes_as_before() {
        // A list is its length then each element, all under the list's name.
        let mut a = KeyBuilder::new("RUN", None);
        a.list("env", ["A=1", "B=2"]);
        let mut b = KeyBuilder::new("RUN", None);
        b.field("env", "2").field("env", "A=1").field("env", "B=2");
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn parent_and_kind_change_the_key() {
        let p = CacheKey::from_hash(Digest::of(b"p"));
        let k = |kind, parent| {
            let mut k = KeyBuilder::new(kind, parent);
            k.field("x", "1");
            k.finish()
        };
        assert_eq!(k("RUN", Some(&p)), k("RUN", Some(&p)));
        assert_ne!(k("RUN", Some(&p)), k("RUN", None));
        assert_ne!(k("RUN", Some(&p)), k("COPY", Some(&p)));
    }

    #[test]
    fn record_with_missing_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = CacheKey::from_hash(Digest::of(b"key"));
        let blob = store.write_blob(b"layer").unwrap();
        let rec = CacheRecord {
            layer: Some(LayerRef {
                digest: blob.clone(),
                diff_id: kiln_image::DiffId::of_tar(b"x"),
                size: 5,
                media_type: "m".into(),
            }),
            created: "2020-01-01T00:00:00Z".into(),
        };
        rec.save(&store, &key).unwrap();
        assert_eq!(CacheRecord::load(&store, &key).unwrap(), Some(rec));
        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(CacheRecord::load(&store, &key).unwrap(), None);
    }

    /// The cache records of a store written before cache keys, diffIDs and layer references
    /// were types (`testdata/stores/typed-ids`) load, and are written back byte for byte.
    #[test]
    fn records_written_before_typed_ids_load_and_write_the_same_bytes() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/stores/typed-ids");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut loaded = 0;
        for entry in std::fs::read_dir(fixture.join("cache")).unwrap() {
            let entry = entry.unwrap();
            let key = CacheKey::from_hex(entry.file_name().to_str().unwrap()).unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            let record: CacheRecord = serde_json::from_slice(&bytes).unwrap();
            let layer = record.layer.clone().unwrap();
            let blob = std::fs::read(fixture.join("blobs/sha256").join(layer.digest.hex()));
            assert_eq!(store.write_blob(&blob.unwrap()).unwrap(), layer.digest);
            store.cache_put(&key, &bytes).unwrap();
            assert_eq!(
                CacheRecord::load(&store, &key).unwrap(),
                Some(record.clone())
            );
            record.save(&store, &key).unwrap();
            assert_eq!(store.cache_get(&key).unwrap().unwrap(), bytes);
            loaded += 1;
        }
        assert_eq!(loaded, 2);
    }
}
