//! Layer compression: what kiln writes ([`Compression`]) and what it recognises when reading
//! (gzip, zstd, bzip2, xz or plain tar, told apart by their magic bytes rather than by a media type that a
//! registry or a user may have got wrong).

use std::io::{self, Read};

use kiln_image::media_type;

/// How a new layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`); digest and diffID are equal.
    None,
    /// gzip at `level` 0..=9 (`…tar+gzip`).
    Gzip { level: u32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::None => media_type::OCI_LAYER,
            Compression::Gzip { .. } => media_type::OCI_LAYER_GZIP,
        }
    }
}

/// A stream format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
    /// Anything else, taken to be a plain tar.
    Uncompressed,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The stream with its first bytes read back in front of it.
pub(crate) type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads enough of `reader` to recognise its format, and returns the format and a reader that
/// still yields every byte.
pub(crate) fn sniff<R: Read>(mut reader: R) -> io::Result<(Format, Sniffed<R>)> {
    let mut head = vec![0u8; XZ_MAGIC.len()];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    let format = if head.starts_with(GZIP_MAGIC) {
        Format::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Format::Zstd
    } else if head.starts_with(BZIP2_MAGIC) {
        Format::Bzip2
    } else if head.starts_with(XZ_MAGIC) {
        Format::Xz
    } else {
        Format::Uncompressed
    };
    Ok((format, io::Cursor::new(head).chain(reader)))
}

/// A reader of the uncompressed tar inside `reader`, whatever its (supported) compression.
pub(crate) fn decompressed<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let (format, reader) = sniff(reader)?;
    Ok(match format {
        // Multi-member: pigz and some registries' tooling concatenate gzip members, and a
        // single-member decoder would silently stop after the first one.
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
        // Multi-stream for the same reason as gzip: `pbzip2` and `pixz`/`xz -T` write several.
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(reader)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader)),
        Format::Uncompressed => Box::new(reader),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn sniffing_keeps_every_byte_and_names_the_format() {
        for (bytes, want) in [
            (gzip(b"x"), Format::Gzip),
            (
                zstd::stream::encode_all(&b"x"[..], 1).unwrap(),
                Format::Zstd,
            ),
            (b"BZh91AY".to_vec(), Format::Bzip2),
            (XZ_MAGIC.to_vec(), Format::Xz),
            (b"plain text".to_vec(), Format::Uncompressed),
            (b"a".to_vec(), Format::Uncompressed),
            (Vec::new(), Format::Uncompressed),
        ] {
            let (format, rest) = sniff(&bytes[..]).unwrap();
            assert_eq!(format, want, "{bytes:?}");
            assert_eq!(read_all(rest), bytes);
        }
    }

    #[test]
    fn decompression_reads_every_gzip_member_zstd_bzip2_and_xz() {
        let mut two_members = gzip(b"first ");
        two_members.extend(gzip(b"second"));
        assert_eq!(
            read_all(decompressed(&two_members[..]).unwrap()),
            b"first second"
        );
        let z = zstd::stream::encode_all(&b"zstd data"[..], 3).unwrap();
        assert_eq!(read_all(decompressed(&z[..]).unwrap()), b"zstd data");
        assert_eq!(read_all(decompressed(&b"raw"[..]).unwrap()), b"raw");

        let mut bz = Vec::new();
        for part in [&b"bzip2 "[..], b"streams"] {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(part).unwrap();
            bz.extend(enc.finish().unwrap());
        }
        assert_eq!(read_all(decompressed(&bz[..]).unwrap()), b"bzip2 streams");

        let mut xz = Vec::new();
        for part in [&b"xz "[..], b"streams"] {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(part).unwrap();
            xz.extend(enc.finish().unwrap());
        }
        assert_eq!(read_all(decompressed(&xz[..]).unwrap()), b"xz streams");

        // A truncated stream is an error, not a short read.
        let mut broken = Vec::new();
        let _ = decompressed(&xz[..xz.len() / 2])
            .unwrap()
            .read_to_end(&mut broken)
            .unwrap_err();
    }

    #[test]
    fn media_types_follow_compression() {
        assert_eq!(Compression::default(), Compression::Gzip { level: 6 });
        assert_eq!(Compression::None.media_type(), media_type::OCI_LAYER);
        assert_eq!(
            Compression::default().media_type(),
            media_type::OCI_LAYER_GZIP
        );
    }
}
