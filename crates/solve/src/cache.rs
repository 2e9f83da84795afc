//! Cache keys and cache records.
//!
//! A step's [`CacheKey`](kiln_image::Digest) is a hash over its parent's key and everything that
//! can change its result, written as length-prefixed fields so no two different inputs can
//! serialise alike. The record under a key says which layer (if any) the step produced and when,
//! so a rebuild with unchanged inputs reproduces the same image byte for byte.

use kiln_image::{Digest, Sha256Hasher};
use kiln_store::Store;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Accumulates the inputs of one step.
#[derive(Debug)]
pub struct KeyBuilder {
    hasher: Sha256Hasher,
}

impl KeyBuilder {
    /// Starts a key for a step of `kind` on top of `parent`. The version string is bumped whenever
    /// the meaning of a key changes, so old records are never misread.
    pub fn new(kind: &str, parent: Option<&Digest>) -> Self {
        let mut k = KeyBuilder {
            hasher: Sha256Hasher::new(),
        };
        k.field("kiln-cache-v1", kind);
        k.field("parent", &parent.map(|p| p.to_string()).unwrap_or_default());
        k
    }

    /// Adds one named input.
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        for part in [name.as_bytes(), value.as_bytes()] {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self
    }

    /// Adds a list of values under one name.
    pub fn list<'a>(&mut self, name: &str, values: impl IntoIterator<Item = &'a str>) -> &mut Self {
        let values: Vec<&str> = values.into_iter().collect();
        self.field(name, &values.len().to_string());
        for v in values {
            self.field(name, v);
        }
        self
    }

    pub fn finish(self) -> Digest {
        self.hasher.finish()
    }
}

/// A layer a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What a step produced, stored under its cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub layer: Option<LayerRecord>,
    /// When the step first ran (RFC 3339); reused on every hit so image bytes stay stable.
    pub created: String,
}

impl CacheRecord {
    /// The record for `key`, if one exists and everything it points at is still in the store.
    pub fn load(store: &Store, key: &Digest) -> Result<Option<CacheRecord>> {
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

    pub fn save(&self, store: &Store, key: &Digest) -> Result<()> {
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
    fn parent_and_kind_change_the_key() {
        let p = Digest::of(b"p");
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
        let key = Digest::of(b"key");
        let blob = store.write_blob(b"layer").unwrap();
        let rec = CacheRecord {
            layer: Some(LayerRecord {
                digest: blob.clone(),
                diff_id: Digest::of(b"x"),
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
}
