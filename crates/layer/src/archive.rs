//! Archives given to `ADD`: recognising them, and extracting them into a build step's rootfs.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::LayerError;
use crate::compression;
use crate::extract::{Extractor, Whiteouts};
use crate::safe_fs;
use crate::space_guard::{SpaceGuard, guard_dir};

/// Whether the file at `path` is a tar archive `ADD` should extract: a plain, gzip-, bzip2-, xz-
/// or zstd-compressed tar, judged by content (magic bytes and a valid first tar header), not by
/// name. As in Docker, a compressed file that does not hold a tar (`notes.txt.gz`) is not an
/// archive: ADD copies it as it is, still compressed.
pub fn is_archive(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let Ok(mut tar) = compression::decompressed(file) else {
        return Ok(false);
    };
    let mut header = [0u8; 512];
    let mut filled = 0;
    while filled < header.len() {
        match tar.read(&mut header[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Corrupt compressed data: not an archive we could extract.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData
                        | io::ErrorKind::InvalidInput
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(has_valid_checksum(&header))
}

/// A tar header's checksum: the byte sum of the block with the checksum field read as spaces.
fn has_valid_checksum(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let Ok(stored) = tar::Header::from_byte_slice(block).cksum() else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// Extracts a (possibly compressed) tar into `root` at `dest_in_root`, an absolute path inside
/// the container made if missing. `dest_in_root` is resolved inside `root` as a chroot would
/// (symlinks in the existing tree are followed but cannot leave `root`); the archive's entries
/// are then resolved with the destination directory as their root, as BuildKit does (its file
/// backend unpacks with `chrootarchive.Untar` into the destination): a symlink `link -> ..` or
/// `link -> /` in the archive, or already under the destination, leads back to the destination,
/// never above it. Existing files are replaced, existing directories merged; `.wh.` names are
/// plain files; ownership, modes and portable xattrs come from the archive; pax global headers
/// create nothing. Entries with a `..` component are refused.
pub fn extract_archive(
    archive: impl Read,
    root: &Path,
    dest_in_root: &str,
) -> Result<(), LayerError> {
    // `..` in the destination comes from the Dockerfile, not from the archive: resolve it
    // lexically, clamped at `/`.
    let mut base: Vec<OsString> = Vec::new();
    for part in dest_in_root.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                base.pop();
            }
            _ => base.push(part.into()),
        }
    }
    let tar = compression::decompressed(archive).map_err(LayerError::Archive)?;
    let tar = SpaceGuard::new(tar, guard_dir(root)?);
    let root_fd = safe_fs::open_root(root).map_err(LayerError::io(root))?;
    let dest = safe_fs::open_dir(&root_fd, &base, true).map_err(LayerError::io(
        root.join(dest_in_root.trim_start_matches('/')),
    ))?;
    Extractor::in_dir(dest, Whiteouts::Literal).extract(tar)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{dir, file, gzip, raw_tar, symlink};
    use std::os::unix::fs::symlink as make_symlink;

    #[test]
    fn add_follows_symlinks_in_the_rootfs_but_stays_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/existing"), b"old").unwrap();
        make_symlink("/etc", r.join("dst")).unwrap();
        let name = format!("kiln-add-test-{}", std::process::id());
        let archive = gzip(&raw_tar(&[
            file(&name, b"hello"),
            file("existing", b"new"),
            dir("sub"),
            file("sub/.wh.x", b"wh"),
        ]));

        extract_archive(&archive[..], r, "/dst").unwrap();
        assert_eq!(std::fs::read(r.join("etc").join(&name)).unwrap(), b"hello");
        assert!(
            !Path::new("/etc").join(&name).exists(),
            "host /etc untouched"
        );
        assert_eq!(
            std::fs::read(r.join("etc/existing")).unwrap(),
            b"new",
            "existing files are overwritten"
        );
        assert_eq!(
            std::fs::read(r.join("etc/sub/.wh.x")).unwrap(),
            b"wh",
            "whiteout names are plain files"
        );
    }

    #[test]
    fn add_creates_the_destination_and_confines_archive_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let o = outside.path().to_str().unwrap();
        let archive = raw_tar(&[symlink("out", o), file("out/f", b"x"), file("plain", b"p")]);
        // The archive's symlink points at the host dir's path; inside the root that path does
        // not exist, so the entry through it fails and nothing is written outside.
        let err = extract_archive(&archive[..], r, "new/../made/here").unwrap_err();
        assert!(err.to_string().contains("out/f"), "{err}");
        assert!(
            r.join("made/here/out")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let err = extract_archive(&raw_tar(&[file("../../escape", b"x")])[..], r, "/").unwrap_err();
        assert!(matches!(err, LayerError::UnsafeEntry { .. }), "{err}");
    }

    /// BuildKit unpacks an ADD archive with `chrootarchive.Untar(file, dest)`
    /// (solver/llbsolver/file/unpack.go): the destination is the root the archive's own paths
    /// and symlinks resolve in. An entry under `link -> ..` lands below the destination
    /// (`/testsubdir/etc/myfile`), never at `/etc/myfile`; so does one under `abs -> /`.
    #[test]
    fn archive_symlinks_resolve_with_the_destination_as_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("etc")).unwrap();
        let archive = raw_tar(&[
            symlink("link", ".."),
            file("link/etc/myfile", b"up"),
            symlink("abs", "/"),
            file("abs/top", b"abs"),
        ]);
        extract_archive(&archive[..], r, "/testsubdir").unwrap();
        assert_eq!(
            std::fs::read(r.join("testsubdir/etc/myfile")).unwrap(),
            b"up"
        );
        assert_eq!(std::fs::read(r.join("testsubdir/top")).unwrap(), b"abs");
        assert!(!r.join("etc/myfile").exists());
        assert!(!r.join("top").exists());
        // The destination itself still resolves in the whole root (the Dockerfile names it).
        make_symlink("/testsubdir", r.join("via")).unwrap();
        extract_archive(&raw_tar(&[file("again", b"a")])[..], r, "/via").unwrap();
        assert_eq!(std::fs::read(r.join("testsubdir/again")).unwrap(), b"a");
    }

    /// A pax global header (type `g`, named `/tmp/GlobalHead.N.M` by GNU tar) creates no path:
    /// moby/go-archive's `Unpack` skips it before making parent directories.
    #[test]
    fn a_pax_global_header_creates_nothing() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut global = file("/tmp/GlobalHead.0.0", b"8 a=bcd\n");
        global.kind = tar::EntryType::XGlobalHeader;
        let archive = raw_tar(&[global, file("kept", b"k")]);
        extract_archive(&archive[..], r, "/dst").unwrap();
        assert!(!r.join("tmp").exists());
        assert!(!r.join("dst/tmp").exists());
        assert_eq!(std::fs::read(r.join("dst/kept")).unwrap(), b"k");
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let tar_bytes = raw_tar(&[file("a", b"a")]);
        let bzip2 = |bytes: &[u8]| {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            std::io::Write::write_all(&mut enc, bytes).unwrap();
            enc.finish().unwrap()
        };
        let xz = |bytes: &[u8]| {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            std::io::Write::write_all(&mut enc, bytes).unwrap();
            enc.finish().unwrap()
        };
        let cases: [(&str, Vec<u8>, bool); 10] = [
            ("plain.tar", tar_bytes.clone(), true),
            ("x.tar.gz", gzip(&tar_bytes), true),
            (
                "x.tar.zst",
                zstd::stream::encode_all(&tar_bytes[..], 3).unwrap(),
                true,
            ),
            (
                "text.tar",
                b"just some text that is not a tar".repeat(40),
                false,
            ),
            ("text.gz", gzip(&b"not a tar either".repeat(100)), false),
            ("x.tar.bz2", bzip2(&tar_bytes), true),
            ("x.tar.xz", xz(&tar_bytes), true),
            ("text.bz2", bzip2(b"plain words"), false),
            ("text.xz", xz(b"plain words"), false),
            ("zeros", vec![0u8; 2048], false),
        ];
        for (name, bytes, want) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(is_archive(&path).unwrap(), want, "{name}");
        }
        assert!(is_archive(&dir.path().join("missing")).is_err());
    }
}
