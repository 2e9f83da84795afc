//! Layer compression: what kiln writes ([`Compression`]) and what it recognises when reading
//! (gzip, zstd, bzip2, xz or plain tar, told apart by their magic bytes rather than by a media type that a
//! registry or a user may have got wrong).

use std::io::{self, Read};

use kiln_image::media_type;

use crate::LayerError;

/// How a new layer blob is compressed: an algorithm and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`); digest and diffID are equal.
    None,
    /// gzip at `level` 0..=9 (`…tar+gzip`).
    Gzip { level: u32 },
    /// zstd at `level` 1..=22 (`…tar+zstd`).
    Zstd { level: i32 },
}

/// gzip's usual default (and BuildKit's): a good ratio at a fair speed.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
/// zstd's own default level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

/// A compression algorithm without a level, as a layer's media type tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Uncompressed,
    Gzip,
    Zstd,
}

impl Algorithm {
    /// The algorithm a layer media type says its blob uses (OCI and Docker names); `None` for a
    /// media type that is not a layer kiln can re-encode (foreign or unknown layers).
    pub fn of_media_type(media_type: &str) -> Option<Algorithm> {
        match media_type {
            media_type::OCI_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Algorithm::Uncompressed)
            }
            media_type::OCI_LAYER_GZIP | media_type::DOCKER_LAYER_GZIP => Some(Algorithm::Gzip),
            media_type::OCI_LAYER_ZSTD => Some(Algorithm::Zstd),
            _ => None,
        }
    }

    /// This algorithm at its default level.
    pub fn with_default_level(self) -> Compression {
        match self {
            Algorithm::Uncompressed => Compression::None,
            Algorithm::Gzip => Compression::Gzip {
                level: DEFAULT_GZIP_LEVEL,
            },
            Algorithm::Zstd => Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            },
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = LayerError;

    /// The names `--compression` takes (BuildKit's: `uncompressed`, `gzip`, `zstd`).
    fn from_str(s: &str) -> Result<Algorithm, LayerError> {
        match s {
            "uncompressed" => Ok(Algorithm::Uncompressed),
            "gzip" => Ok(Algorithm::Gzip),
            "zstd" => Ok(Algorithm::Zstd),
            other => Err(LayerError::InvalidCompression(format!(
                "unknown compression {other:?} (uncompressed, gzip or zstd)"
            ))),
        }
    }
}

impl Compression {
    /// `algorithm` at `level` (its default level when `None`), with the level checked.
    pub fn new(algorithm: Algorithm, level: Option<i32>) -> Result<Compression, LayerError> {
        let Some(level) = level else {
            return Ok(algorithm.with_default_level());
        };
        let compression = match algorithm {
            Algorithm::Uncompressed => {
                return Err(LayerError::InvalidCompression(
                    "a compression level needs gzip or zstd compression".into(),
                ));
            }
            Algorithm::Gzip => Compression::Gzip {
                level: u32::try_from(level).unwrap_or(u32::MAX),
            },
            Algorithm::Zstd => Compression::Zstd { level },
        };
        compression.validate()?;
        Ok(compression)
    }

    /// Checks the level is one the algorithm has.
    pub fn validate(&self) -> Result<(), LayerError> {
        match *self {
            Compression::None => Ok(()),
            Compression::Gzip { level } if level <= 9 => Ok(()),
            Compression::Gzip { level } => Err(LayerError::InvalidCompression(format!(
                "gzip compression level {level} is out of range (0..=9)"
            ))),
            Compression::Zstd { level } if (1..=22).contains(&level) => Ok(()),
            Compression::Zstd { level } => Err(LayerError::InvalidCompression(format!(
                "zstd compression level {level} is out of range (1..=22)"
            ))),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Compression::None => Algorithm::Uncompressed,
            Compression::Gzip { .. } => Algorithm::Gzip,
            Compression::Zstd { .. } => Algorithm::Zstd,
        }
    }

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::None => media_type::OCI_LAYER,
            Compression::Gzip { .. } => media_type::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => media_type::OCI_LAYER_ZSTD,
        }
    }

    /// The name of this setting, under which the store records a layer's variant: `gzip-6`,
    /// `zstd-3`, `uncompressed`. It also names kiln's encoding (chunk size), which fixes the
    /// output bytes: bump the suffix if the encoder's output format ever changes.
    pub fn setting_name(&self) -> String {
        match self {
            Compression::None => "uncompressed".into(),
            Compression::Gzip { level } => format!("gzip-{level}"),
            Compression::Zstd { level } => format!("zstd-{level}"),
        }
    }
}

/// What a build or push asks of the layers it writes or sends: a setting, and whether its level
/// matters for blobs that already exist.
///
/// As in BuildKit without `force-compression`, an existing blob of the right algorithm is reused
/// whatever its level unless a level was asked for explicitly (`--compression-level`); then only
/// a blob recorded with exactly that setting will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionRequest {
    pub compression: Compression,
    pub exact_level: bool,
}

impl CompressionRequest {
    /// The request `--compression ALGORITHM [--compression-level LEVEL]` makes.
    pub fn from_flags(algorithm: &str, level: Option<i32>) -> Result<Self, LayerError> {
        Ok(CompressionRequest {
            compression: Compression::new(algorithm.parse()?, level)?,
            exact_level: level.is_some(),
        })
    }

    /// Whether a blob of `media_type`, recorded (if at all) as made with `setting`, will do.
    pub fn accepts(&self, media_type: &str, setting: Option<&str>) -> bool {
        if Algorithm::of_media_type(media_type) != Some(self.compression.algorithm()) {
            return false;
        }
        !self.exact_level
            || self.compression == Compression::None
            || setting == Some(self.compression.setting_name().as_str())
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
    fn flags_parse_into_checked_settings() {
        let req = |a: &str, l: Option<i32>| CompressionRequest::from_flags(a, l);
        assert_eq!(
            req("zstd", None).unwrap(),
            CompressionRequest {
                compression: Compression::Zstd { level: 3 },
                exact_level: false
            }
        );
        assert_eq!(
            req("gzip", Some(9)).unwrap(),
            CompressionRequest {
                compression: Compression::Gzip { level: 9 },
                exact_level: true
            }
        );
        assert_eq!(
            req("uncompressed", None).unwrap().compression,
            Compression::None
        );
        for (a, l, message) in [
            ("brotli", None, "unknown compression \"brotli\""),
            (
                "gzip",
                Some(10),
                "gzip compression level 10 is out of range",
            ),
            ("gzip", Some(-1), "out of range (0..=9)"),
            ("zstd", Some(0), "zstd compression level 0 is out of range"),
            ("zstd", Some(23), "out of range (1..=22)"),
            ("uncompressed", Some(1), "needs gzip or zstd"),
        ] {
            let err = req(a, l).unwrap_err().to_string();
            assert!(err.contains(message), "{a} {l:?}: {err}");
        }
        assert_eq!(Compression::Zstd { level: 19 }.setting_name(), "zstd-19");
        assert_eq!(Compression::None.setting_name(), "uncompressed");
    }

    #[test]
    fn requests_accept_blobs_by_algorithm_and_by_level_only_when_asked() {
        let gz = media_type::OCI_LAYER_GZIP;
        let any_gzip = CompressionRequest::default();
        assert!(any_gzip.accepts(gz, None));
        assert!(any_gzip.accepts(media_type::DOCKER_LAYER_GZIP, Some("gzip-1")));
        assert!(!any_gzip.accepts(media_type::OCI_LAYER_ZSTD, None));
        assert!(!any_gzip.accepts(media_type::OCI_LAYER, None));
        assert!(!any_gzip.accepts("application/x-foreign", None));
        let gzip9 = CompressionRequest::from_flags("gzip", Some(9)).unwrap();
        assert!(gzip9.accepts(gz, Some("gzip-9")));
        assert!(!gzip9.accepts(gz, Some("gzip-6")));
        assert!(!gzip9.accepts(gz, None), "a pulled blob's level is unknown");
        let zstd = CompressionRequest::from_flags("zstd", None).unwrap();
        assert!(zstd.accepts(media_type::OCI_LAYER_ZSTD, None));
    }

    #[test]
    fn media_types_follow_compression() {
        assert_eq!(Compression::default(), Compression::Gzip { level: 6 });
        assert_eq!(Compression::None.media_type(), media_type::OCI_LAYER);
        assert_eq!(
            Compression::default().media_type(),
            media_type::OCI_LAYER_GZIP
        );
        assert_eq!(
            Compression::Zstd { level: 3 }.media_type(),
            media_type::OCI_LAYER_ZSTD
        );
        for c in [
            Compression::None,
            Compression::default(),
            Compression::Zstd { level: 3 },
        ] {
            assert_eq!(
                Algorithm::of_media_type(c.media_type()),
                Some(c.algorithm())
            );
        }
    }
}
