//! [`CacheKey`]: the name of a build step's result in the cache.
//!
//! A cache key is a SHA-256 over everything that can change a step's result (the solver's
//! `KeyBuilder` decides what goes in). It lives here, not in the solver, because the store is
//! the lowest crate that needs it: cache records, step locks, prune and `system df` are keyed
//! by it. It has a digest's text form (`sha256:<hex>`, the record's file name being the hex) and
//! serialises exactly as a digest did, so explain records, cache documents and the cache
//! directory of existing stores read unchanged; but it is its own type, so a key is never
//! passed where a blob digest or a diffID is meant.

use std::fmt;
use std::str::FromStr;

use kiln_image::{Digest, DigestError};

/// The cache key of one build step (or of a base image, the first link of a chain).
///
/// A key is neither a blob digest nor a diffID, so neither of these compiles:
///
/// ```compile_fail
/// fn has_blob(_: &kiln_image::Digest) {}
/// has_blob(&kiln_store::CacheKey::from_hash(kiln_image::Digest::of(b"")));
/// ```
///
/// ```compile_fail
/// fn cache_get(_: &kiln_store::CacheKey) {}
/// cache_get(&kiln_image::Digest::of(b""));
/// ```
///
/// ```
/// fn cache_get(_: &kiln_store::CacheKey) {}
/// cache_get(&kiln_store::CacheKey::from_hash(kiln_image::Digest::of(b"")));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CacheKey(Digest);

impl CacheKey {
    /// The key whose hash is `hash`: what a key builder's SHA-256 over a step's inputs gave.
    pub fn from_hash(hash: Digest) -> CacheKey {
        CacheKey(hash)
    }

    /// Builds a key from 64 lowercase hex characters (a cache record's file name).
    pub fn from_hex(hex: &str) -> Result<CacheKey, DigestError> {
        Digest::from_hex(hex).map(CacheKey)
    }

    /// The hash as a plain digest (to feed into another hash).
    pub fn as_hash(&self) -> &Digest {
        &self.0
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl FromStr for CacheKey {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<CacheKey, DigestError> {
        s.parse().map(CacheKey)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_displays_and_serialises_as_a_digest() {
        let key: CacheKey = TEXT.parse().unwrap();
        assert_eq!(key.to_string(), TEXT);
        assert_eq!(key, CacheKey::from_hash(Digest::of(b"")));
        assert_eq!(key.as_hash(), &Digest::of(b""));
        assert_eq!(CacheKey::from_hex(key.hex()).unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, serde_json::to_string(&Digest::of(b"")).unwrap());
        assert_eq!(serde_json::from_str::<CacheKey>(&json).unwrap(), key);
        // As a map key too (the cache document's aliases are keyed by key).
        let map: std::collections::BTreeMap<CacheKey, u8> =
            serde_json::from_str(&format!(r#"{{"{TEXT}":1}}"#)).unwrap();
        assert_eq!(map.get(&key), Some(&1));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!("e3b0".parse::<CacheKey>().is_err());
        assert!("sha512:00".parse::<CacheKey>().is_err());
        assert!(CacheKey::from_hex("README").is_err());
        assert!(serde_json::from_str::<CacheKey>(r#""sha256:xyz""#).is_err());
        assert!(serde_json::from_str::<CacheKey>("null").is_err());
    }
}
