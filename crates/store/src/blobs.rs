//! Content-addressed blobs: streamed in, verified, published by rename.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use kiln_image::{Digest, Sha256Hasher};

use crate::{Result, Store, StoreError};

impl Store {
    /// Where the blob with `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Opens a stored blob for streaming reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::Io { path, source: e },
        })
    }

    /// Reads a whole (small) blob: manifests, configs, indexes.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::Io { path, source: e },
        })
    }

    /// Stores a small in-memory blob and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(StoreError::io(w.temp_path()))?;
        let (digest, _) = w.commit(None)?;
        Ok(digest)
    }

    /// A writer that hashes what it is given into a temp file; [`BlobWriter::commit`] publishes
    /// it under its digest. Dropping it uncommitted deletes the temp file.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = self.root.join("tmp");
        let file = tempfile::NamedTempFile::new_in(&tmp).map_err(StoreError::io(&tmp))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256Hasher::new(),
        })
    }
}

/// A blob being written. See [`Store::blob_writer`].
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256Hasher,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    fn temp_path(&self) -> PathBuf {
        self.file.get_ref().path().to_owned()
    }

    /// Syncs and publishes the blob. With `expected`, the content must have exactly that digest
    /// and size or nothing is published. Returns the digest and size.
    pub fn commit(self, expected: Option<(&Digest, u64)>) -> Result<(Digest, u64)> {
        let size = self.hasher.len();
        let digest = self.hasher.finish();
        if let Some((want, want_size)) = expected {
            if &digest != want {
                return Err(StoreError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                });
            }
            if size != want_size {
                return Err(StoreError::SizeMismatch {
                    digest,
                    expected: want_size,
                    actual: size,
                });
            }
        }
        let file = self.file.into_inner().map_err(|e| StoreError::Io {
            path: PathBuf::from("blob"),
            source: e.into_error(),
        })?;
        let dest = self.store.blob_path(&digest);
        if dest.is_file() {
            // Content-addressed: an existing blob with this name already has these bytes.
            return Ok((digest, size));
        }
        file.as_file()
            .sync_all()
            .map_err(StoreError::io(file.path()))?;
        file.persist(&dest).map_err(|e| StoreError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use kiln_error::ErrorKind;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("root")).unwrap();
        (dir, s)
    }

    fn tmp_is_empty(s: &Store) -> bool {
        std::fs::read_dir(s.root().join("tmp"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn write_read_round_trip() {
        let (_d, s) = store();
        let d = s.write_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(s.has_blob(&d));
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        assert_eq!(s.blob_size(&d).unwrap(), 5);
        assert!(tmp_is_empty(&s));
    }

    #[test]
    fn mismatched_content_is_never_published() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"evil").unwrap();
        let want = Digest::of(b"good");
        let err = w.commit(Some((&want, 4))).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(!s.has_blob(&want));
        assert!(!s.has_blob(&Digest::of(b"evil")));
        assert!(tmp_is_empty(&s), "the temp file is removed");

        let mut w = s.blob_writer().unwrap();
        w.write_all(b"good").unwrap();
        let err = w.commit(Some((&want, 5))).unwrap_err();
        assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");
        assert!(!s.has_blob(&want));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(tmp_is_empty(&s));
        assert!(matches!(
            s.read_blob(&Digest::of(b"partial")),
            Err(StoreError::BlobNotFound(_))
        ));
    }

    #[test]
    fn a_missing_blob_is_not_found_and_a_damaged_record_internal() {
        let (_d, s) = store();
        let missing = s.open_blob(&Digest::of(b"never written")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        std::fs::write(s.root().join("names.json"), "{not json").unwrap();
        let corrupt = s.list_names().unwrap_err();
        assert!(matches!(corrupt, StoreError::Corrupt { .. }), "{corrupt}");
        assert_eq!(corrupt.kind(), ErrorKind::Internal);
    }
}
