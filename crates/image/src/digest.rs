//! Content digests (`sha256:<64 hex>`), the addresses of everything in the store, and
//! [`DiffId`], the digest of a layer's uncompressed tar.
//!
//! A diffID and a blob digest have the same text form but name different things (a snapshot
//! and the tar it unpacks from, versus a stored blob, usually compressed), so they are two types:
//! passing one where the other is meant does not compile. The conversions between them are
//! named methods, used only where a tar digest really becomes a diffID (after hashing a tar)
//! or a diffID is really compared with a blob digest (an uncompressed layer).

use std::fmt;
use std::str::FromStr;

use kiln_error::ErrorKind;
use sha2::{Digest as _, Sha256};

/// A validated content digest. Only `sha256` is accepted: it is the only algorithm registries
/// and runtimes agree on, and accepting others would let a manifest name blobs kiln cannot verify.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<hex>)")]
    NoAlgorithm(String),
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex characters")]
    BadHex(String),
}

impl DigestError {
    /// Always [`ErrorKind::InvalidArgument`]: the string came from the caller or a document.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

impl Digest {
    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Sha256Hasher::new();
        h.update(bytes);
        h.finish()
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(DigestError::BadHex(hex.to_owned()))
        }
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The first 12 hex characters, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(s.to_owned()));
        };
        if alg != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_owned()));
        }
        Digest::from_hex(hex).map_err(|_| DigestError::BadHex(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of a layer's *uncompressed* tar (the OCI config's `rootfs.diff_ids` entry): the
/// name of the layer's content, whatever blob (gzip, zstd, none) holds it. Serialised exactly
/// as a [`Digest`] (`sha256:<hex>`), so image configs and store records read and write the same
/// bytes as before the type existed.
///
/// A diffID is not a blob digest, so this does not compile:
///
/// ```compile_fail
/// fn open_blob(_: &kiln_image::Digest) {}
/// open_blob(&kiln_image::DiffId::of_tar(b""));
/// ```
///
/// while the named conversion does, where a caller means the tar's digest:
///
/// ```
/// fn open_blob(_: &kiln_image::Digest) {}
/// open_blob(kiln_image::DiffId::of_tar(b"").as_tar_digest());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DiffId(Digest);

impl DiffId {
    /// The diffID of a tar whose digest is `digest` (hashed while the tar was written or read).
    pub fn from_tar_digest(digest: Digest) -> DiffId {
        DiffId(digest)
    }

    /// The diffID of an uncompressed tar held in memory.
    pub fn of_tar(tar: &[u8]) -> DiffId {
        DiffId(Digest::of(tar))
    }

    /// Builds a diffID from 64 lowercase hex characters (a store directory's name).
    pub fn from_hex(hex: &str) -> Result<DiffId, DigestError> {
        Digest::from_hex(hex).map(DiffId)
    }

    /// The diffID as a plain digest: the digest an uncompressed blob of this layer would have.
    pub fn as_tar_digest(&self) -> &Digest {
        &self.0
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl FromStr for DiffId {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<DiffId, DigestError> {
        s.parse().map(DiffId)
    }
}

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Incremental SHA-256 that yields a [`Digest`]; also an `io::Write` so it can sit in a writer chain.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Hasher")
            .field("len", &self.len)
            .finish()
    }
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            hex: hex::encode(self.inner.finalize()),
        }
    }
}

impl std::io::Write for Sha256Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(matches!(
            "e3b0".parse::<Digest>(),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            "sha256:ZZ".parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(
            upper.parse::<Digest>().is_err(),
            "uppercase hex is not canonical"
        );
        assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
    }

    #[test]
    fn hasher_counts_and_matches_one_shot() {
        let mut h = Sha256Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    #[test]
    fn a_diff_id_reads_and_writes_the_digest_form() {
        let text = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: DiffId = text.parse().unwrap();
        assert_eq!(d.to_string(), text);
        assert_eq!(d, DiffId::of_tar(b""));
        assert_eq!(d.as_tar_digest(), &Digest::of(b""));
        assert_eq!(DiffId::from_hex(d.hex()).unwrap(), d);
        // Serialised exactly as a digest: a JSON string, the same bytes as before the type.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, serde_json::to_string(&Digest::of(b"")).unwrap());
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<DiffId>(&json).unwrap(), d);
        let list: Vec<DiffId> = serde_json::from_str(&format!("[\"{text}\"]")).unwrap();
        assert_eq!(list, vec![d]);
    }

    #[test]
    fn a_malformed_diff_id_is_refused() {
        assert!(matches!(
            "e3b0".parse::<DiffId>(),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            "sha512:00".parse::<DiffId>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(DiffId::from_hex("../etc").is_err());
        assert!(serde_json::from_str::<DiffId>("\"sha256:abc\"").is_err());
        assert!(serde_json::from_str::<DiffId>("17").is_err());
    }
}
