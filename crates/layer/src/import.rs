//! An existing tarball (a rootfs for `kiln import`) stored as a layer blob.

use std::io::{self, Read, Write};

use kiln_image::{DiffId, LayerRef};
use kiln_store::Store;

use crate::LayerError;
use crate::compression::Compression;
use crate::encode::Encoder;
use crate::hashing::HashingWriter;
use crate::write::commit_layer;

/// Stores an existing tar stream (plain or compressed; e.g. a rootfs tarball for `kiln import`)
/// as a layer blob, re-compressed with `compression`. Every entry is parsed on the way through,
/// so a file that is not a tar archive is refused before anything is published.
pub fn import_tar(
    store: &Store,
    tarball: impl Read,
    compression: Compression,
) -> Result<LayerRef, LayerError> {
    let encoder = Encoder::new(store.blob_writer()?, compression)?;
    let tee = TeeReader {
        inner: crate::compression::decompressed(tarball).map_err(LayerError::Archive)?,
        out: HashingWriter::new(encoder),
    };
    let mut archive = tar::Archive::new(tee);
    let mut entries = 0u64;
    for entry in archive.entries().map_err(LayerError::Archive)? {
        let mut entry = entry.map_err(LayerError::Archive)?;
        io::copy(&mut entry, &mut io::sink()).map_err(LayerError::Archive)?;
        entries += 1;
    }
    if entries == 0 {
        return Err(LayerError::Archive(io::Error::new(
            io::ErrorKind::InvalidData,
            "the archive has no entries",
        )));
    }
    let mut tee = archive.into_inner();
    // Trailing padding after the end blocks is part of the tar, and so of its diffID.
    io::copy(&mut tee, &mut io::sink()).map_err(LayerError::Archive)?;
    let tmp = store.root().join("tmp");
    let (encoder, diff_id) = tee.out.finish();
    let blob = encoder.finish().map_err(LayerError::io(&tmp))?;
    commit_layer(store, blob, DiffId::from_tar_digest(diff_id), compression)
}

/// Copies everything read through it into `out`.
struct TeeReader<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{dir, file, gunzip, gzip, raw_tar};

    #[test]
    fn tarball_becomes_a_gzip_layer_with_the_tars_diff_id() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let tar = raw_tar(&[dir("etc/"), file("etc/hostname", b"kiln\n")]);
        // The input may itself be compressed; the diffID is always that of the plain tar.
        let layer = import_tar(&store, &gzip(&tar)[..], Compression::default()).unwrap();
        assert_eq!(layer.diff_id, DiffId::of_tar(&tar));
        let blob = store.read_blob(&layer.digest).unwrap();
        assert_eq!(blob.len() as u64, layer.size);
        assert_eq!(gunzip(&blob), tar);
        assert_eq!(layer.media_type, Compression::default().media_type());
    }

    #[test]
    fn not_a_tarball_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let garbage = vec![0x42u8; 4096];
        assert!(import_tar(&store, &garbage[..], Compression::default()).is_err());
        assert!(import_tar(&store, &b""[..], Compression::default()).is_err());
        let blobs = std::fs::read_dir(tmp.path().join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 0);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
