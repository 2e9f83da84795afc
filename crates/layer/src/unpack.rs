//! Layer blob → a directory ready to be one overlay lower dir.

use std::io::Read;
use std::path::Path;

use kiln_image::DiffId;

use crate::LayerError;
use crate::compression::decompressed;
use crate::extract::{Extractor, Whiteouts};
use crate::hashing::HashingReader;
use crate::space_guard::{SpaceGuard, guard_dir};

/// Unpacks a layer blob (gzip, zstd or plain tar, detected by magic bytes) into `dest`, an empty
/// directory that will hold this layer alone as an overlay lower dir. Returns the diffID, the
/// digest of the uncompressed tar. The blob is read to its end, so a caller hashing it sees
/// every byte.
///
/// `.wh.<name>` entries become overlay whiteouts (char device 0:0 `<name>`), `.wh..wh..opq`
/// marks its directory opaque (`trusted.overlay.opaque=y`), other `.wh..wh.` names are ignored.
/// A directory that replaces a whiteout in the same layer is made opaque too. Entries with a
/// `..` component are refused; symlinks met on the way to an entry are resolved inside `dest`
/// (as in a chroot); the entry itself never follows a symlink. `dest` gets mode 0755 unless the
/// layer has an entry for its root (`./`).
pub fn unpack_layer(blob: impl Read, dest: &Path) -> Result<DiffId, LayerError> {
    std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(LayerError::io(dest))?;
    let tar = SpaceGuard::new(
        decompressed(blob).map_err(LayerError::Archive)?,
        guard_dir(dest)?,
    );
    let tar = HashingReader::new(tar);
    let tar = Extractor::new(dest, Whiteouts::ToOverlay)?.extract(tar)?;
    tar.drain_and_finish()
        .map(DiffId::from_tar_digest)
        .map_err(LayerError::Archive)
}

/// Applies a layer blob onto `root`, a flattened filesystem holding the layers below it (the
/// final filesystem BuildKit's `local` exporter writes): entries are extracted as by
/// [`unpack_layer`], but `.wh.<name>` deletes `<name>` and `.wh..wh..opq` empties its directory,
/// sparing only what this layer itself adds. Returns the diffID.
pub fn apply_layer(blob: impl Read, root: &Path) -> Result<DiffId, LayerError> {
    let tar = SpaceGuard::new(
        decompressed(blob).map_err(LayerError::Archive)?,
        guard_dir(root)?,
    );
    let tar = HashingReader::new(tar);
    let tar = Extractor::new(root, Whiteouts::Apply)?.extract(tar)?;
    tar.drain_and_finish()
        .map(DiffId::from_tar_digest)
        .map_err(LayerError::Archive)
}

/// [`apply_layer`] that stops once the uncompressed tar passes `limit` bytes, with
/// [`LayerError::TooLarge`]: a blob whose compressed size was checked can still expand
/// without bound. What was extracted before the stop stays in `root` (the caller extracts
/// into a directory it can drop).
pub fn apply_layer_limited(blob: impl Read, root: &Path, limit: u64) -> Result<DiffId, LayerError> {
    let exceeded = std::cell::Cell::new(false);
    let tar = SpaceGuard::new(
        decompressed(blob).map_err(LayerError::Archive)?,
        guard_dir(root)?,
    );
    let tar = HashingReader::new(Limited {
        inner: tar,
        left: limit,
        exceeded: &exceeded,
    });
    let result = Extractor::new(root, Whiteouts::Apply)?
        .extract(tar)
        .and_then(|tar| tar.drain_and_finish().map_err(LayerError::Archive));
    match result {
        _ if exceeded.get() => Err(LayerError::TooLarge { limit }),
        Ok(digest) => Ok(DiffId::from_tar_digest(digest)),
        Err(e) => Err(e),
    }
}

/// A reader that fails (and says so in `exceeded`) once more than `left` bytes went through.
struct Limited<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a std::cell::Cell<bool>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(std::io::Error::other("the archive is larger than allowed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::{Compression, SourceKind, write_layer, write_tar};
    use kiln_store::Store;
    use rustix::fs::{FileType, Mode, XattrFlags};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink as make_symlink};
    use std::process::Command;

    fn chown(path: &Path, uid: u32, gid: u32) {
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(u),
            Some(g),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mknod(path: &Path, file_type: FileType, major: u32, minor: u32) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            file_type,
            Mode::from_raw_mode(0o640),
            rustix::fs::makedev(major, minor),
        )
        .unwrap();
    }

    fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<DiffId, LayerError>) {
        let dest = tempfile::tempdir().unwrap();
        let result = unpack_layer(bytes, dest.path());
        (dest, result)
    }

    #[test]
    fn directory_round_trips_through_a_layer() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("usr/bin")).unwrap();
        std::fs::create_dir(s.join("private")).unwrap();
        chmod(&s.join("private"), 0o1750);
        chown(&s.join("private"), 1000, 1001);
        std::fs::write(s.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        chown(&s.join("usr/bin/tool"), 0, 50);
        chmod(&s.join("usr/bin/tool"), 0o4755);
        rustix::fs::setxattr(
            s.join("usr/bin/tool"),
            "user.origin",
            b"test",
            XattrFlags::empty(),
        )
        .unwrap();
        std::fs::hard_link(s.join("usr/bin/tool"), s.join("usr/bin/tool-alias")).unwrap();
        make_symlink("usr/bin", s.join("bin")).unwrap();
        make_symlink("/nonexistent/target", s.join("dangling")).unwrap();
        chown(&s.join("dangling"), 7, 8);
        mknod(&s.join("null"), FileType::CharacterDevice, 1, 3);
        mknod(&s.join("disk"), FileType::BlockDevice, 8, 1);
        mknod(&s.join("pipe"), FileType::Fifo, 0, 0);
        std::fs::write(s.join("private/empty"), b"").unwrap();
        chmod(&s.join("private/empty"), 0o2600);
        std::fs::write(s.join("big"), vec![7u8; 3 * 1024 * 1024 + 5]).unwrap();
        set_all_mtimes(s, 1_600_000_000);
        crate::test_support::set_mtime(&s.join("usr/bin/tool"), 1_234_567_890);

        let (tar_bytes, _) = write_tar(s, SourceKind::Plain, Vec::new()).unwrap();
        let (dest, diff_id) = unpack_bytes(&gzip(&tar_bytes));
        assert_eq!(diff_id.unwrap(), DiffId::of_tar(&tar_bytes));
        assert_eq!(describe_tree(dest.path()), describe_tree(s));
        assert_eq!(dest.path().metadata().unwrap().mode() & 0o7777, 0o755);
    }

    /// An upper dir as overlayfs leaves it, made by hand.
    #[test]
    fn whiteouts_and_opaque_dirs_convert_both_ways() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        mknod(&u.join("gone"), FileType::CharacterDevice, 0, 0);
        // Overlayfs shares one whiteout inode among many names: these must not become links.
        std::fs::create_dir(u.join("etc")).unwrap();
        std::fs::hard_link(u.join("gone"), u.join("etc/gone-too")).unwrap();
        std::fs::write(u.join("xattr-gone"), b"").unwrap();
        rustix::fs::setxattr(
            u.join("xattr-gone"),
            "trusted.overlay.whiteout",
            b"",
            XattrFlags::empty(),
        )
        .unwrap();
        std::fs::create_dir(u.join("opq")).unwrap();
        rustix::fs::setxattr(
            u.join("opq"),
            "trusted.overlay.opaque",
            b"y",
            XattrFlags::empty(),
        )
        .unwrap();
        std::fs::write(u.join("opq/kept"), b"new").unwrap();
        set_all_mtimes(u, 1_600_000_000);

        let layer = write_layer(&store, u, Compression::default())
            .unwrap()
            .unwrap();
        let blob = store.read_blob(&layer.digest).unwrap();
        let names = entry_names(&gunzip(&blob));
        // In the order of the upper dir's names: `etc` < `gone` < `opq` < `xattr-gone`.
        assert_eq!(
            names,
            [
                "etc/",
                "etc/.wh.gone-too",
                ".wh.gone",
                "opq/",
                "opq/.wh..wh..opq",
                "opq/kept",
                ".wh.xattr-gone"
            ]
        );

        let (dest, diff_id) = unpack_bytes(&blob);
        assert_eq!(diff_id.unwrap(), layer.diff_id);
        let tree = describe_tree(dest.path());
        assert!(tree["gone"].starts_with("char 0:0"), "{tree:?}");
        assert!(tree["etc/gone-too"].starts_with("char 0:0"), "{tree:?}");
        assert!(tree["xattr-gone"].starts_with("char 0:0"), "{tree:?}");
        assert!(tree["opq"].contains("trusted.overlay.opaque=y"), "{tree:?}");
        assert!(tree["opq/kept"].starts_with("file"), "{tree:?}");
        assert_eq!(tree.len(), 6, "{tree:?}");
    }

    #[test]
    fn applied_layers_delete_what_their_whiteouts_hide() {
        let root = tempfile::tempdir().unwrap();
        let lower = raw_tar(&[
            dir("etc"),
            file("etc/a", b"a"),
            file("etc/b", b"b"),
            dir("opq"),
            file("opq/old", b"o"),
            dir("opq/sub"),
            file("opq/sub/deep", b"d"),
            file("gone", b"g"),
        ]);
        let lower_id = apply_layer(lower.as_slice(), root.path()).unwrap();
        assert_eq!(lower_id, DiffId::of_tar(&lower));
        let upper = raw_tar(&[
            file("etc/.wh.a", b""),
            dir("opq"),
            file("opq/.wh..wh..opq", b""),
            file("opq/new", b"n"),
            file(".wh.gone", b""),
            file("fresh", b"f"),
            file(".wh.fresh", b""),
        ]);
        apply_layer(gzip(&upper).as_slice(), root.path()).unwrap();
        let tree = describe_tree(root.path());
        let names: Vec<&str> = tree.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["etc", "etc/b", "fresh", "opq", "opq/new"],
            "{tree:?}"
        );
        assert!(
            !tree["opq"].contains("opaque"),
            "no overlay xattrs: {tree:?}"
        );
    }

    #[test]
    fn applied_layers_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"v").unwrap();
        let root = tempfile::tempdir().unwrap();
        let link = format!("{}", outside.path().display());
        let first = raw_tar(&[symlink("esc", &link)]);
        apply_layer(first.as_slice(), root.path()).unwrap();
        // The whiteout's parent resolves inside the root, so the victim outside survives.
        let second = raw_tar(&[file("esc/.wh.victim", b"")]);
        let _ = apply_layer(second.as_slice(), root.path());
        assert!(outside.path().join("victim").exists());
        let third = raw_tar(&[file("../victim", b"x")]);
        let err = apply_layer(third.as_slice(), root.path()).unwrap_err();
        assert!(matches!(err, LayerError::UnsafeEntry { .. }), "{err}");
    }

    #[test]
    fn whiteouts_never_hide_what_the_same_layer_adds() {
        let tar_bytes = raw_tar(&[
            file("keep", b"k"),
            file(".wh.keep", b""),
            dir("d"),
            file(".wh.d", b""),
            dir("e"),
            file(".wh..wh.plnk", b""),
        ]);
        let (dest, result) = unpack_bytes(&tar_bytes);
        result.unwrap();
        let tree = describe_tree(dest.path());
        assert!(tree["keep"].starts_with("file"), "{tree:?}");
        // A deleted-then-recreated dir hides the lower one's contents.
        assert!(tree["d"].contains("trusted.overlay.opaque=y"), "{tree:?}");
        assert!(!tree["e"].contains("opaque"), "{tree:?}");
        assert_eq!(tree.len(), 3, "{tree:?}");

        let tar_bytes = raw_tar(&[file(".wh.x", b""), dir("x"), file("x/new", b"n")]);
        let (dest, result) = unpack_bytes(&tar_bytes);
        result.unwrap();
        assert!(describe_tree(dest.path())["x"].contains("trusted.overlay.opaque=y"));
    }

    fn mount_overlay(lower: &str, upper_work: Option<(&Path, &Path)>, merged: &Path) {
        let mut opts = format!("lowerdir={lower}");
        if let Some((upper, work)) = upper_work {
            opts += &format!(
                ",upperdir={},workdir={},redirect_dir=off,metacopy=off",
                upper.display(),
                work.display()
            );
        }
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(merged)
            .status()
            .unwrap();
        assert!(status.success(), "mount overlay {opts}");
    }

    fn umount(path: &Path) {
        assert!(Command::new("umount").arg(path).status().unwrap().success());
    }

    /// The whole path a build step takes: change files through a real overlay, turn the upper
    /// dir into a layer, unpack it, and stack it on the base again.
    #[test]
    fn real_overlay_changes_survive_the_round_trip() {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        for d in ["base", "upper", "work", "merged", "layer", "view"] {
            std::fs::create_dir(w.join(d)).unwrap();
        }
        std::fs::write(w.join("base/deleted"), b"old").unwrap();
        std::fs::create_dir_all(w.join("base/replaced/sub")).unwrap();
        std::fs::write(w.join("base/replaced/old"), b"old").unwrap();
        std::fs::write(w.join("base/kept"), b"kept").unwrap();

        mount_overlay(
            w.join("base").to_str().unwrap(),
            Some((&w.join("upper"), &w.join("work"))),
            &w.join("merged"),
        );
        let m = w.join("merged");
        let changes = (|| -> std::io::Result<()> {
            std::fs::remove_file(m.join("deleted"))?;
            std::fs::remove_dir_all(m.join("replaced"))?;
            std::fs::create_dir(m.join("replaced"))?;
            std::fs::write(m.join("replaced/new"), b"new")?;
            std::fs::write(m.join("added"), b"added")
        })();
        umount(&m);
        changes.unwrap();

        let store = Store::open(w.join("store")).unwrap();
        let layer = write_layer(&store, &w.join("upper"), Compression::default())
            .unwrap()
            .unwrap();
        let names = entry_names(&gunzip(&store.read_blob(&layer.digest).unwrap()));
        assert!(names.contains(&".wh.deleted".to_owned()), "{names:?}");
        assert!(
            names.contains(&"replaced/.wh..wh..opq".to_owned()),
            "{names:?}"
        );

        unpack_layer(store.open_blob(&layer.digest).unwrap(), &w.join("layer")).unwrap();
        let lower = format!("{}:{}", w.join("layer").display(), w.join("base").display());
        mount_overlay(&lower, None, &w.join("view"));
        let v = w.join("view");
        let mut seen: Vec<String> = walkdir::WalkDir::new(&v)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(&v)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let added = std::fs::read(v.join("added"));
        umount(&v);
        seen.sort();
        assert_eq!(seen, ["added", "kept", "replaced", "replaced/new"]);
        assert_eq!(added.unwrap(), b"added");
    }

    /// Everything a hostile layer might try, each against a sentinel outside `dest`.
    #[test]
    fn hostile_entries_never_write_outside_dest() {
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        std::fs::write(o.join("victim"), b"precious").unwrap();
        let victim = o.join("victim");
        let victim_str = victim.to_str().unwrap();
        let o_str = o.to_str().unwrap();

        // `..` is refused, naming the entry.
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let err = unpack_layer(&raw_tar(&[file("../x", b"evil")])[..], &dest).unwrap_err();
        assert!(
            matches!(&err, LayerError::UnsafeEntry { entry, .. } if entry == "../x"),
            "{err}"
        );
        assert!(!parent.path().join("x").exists());

        // An absolute name lands inside dest.
        let abs = format!("{o_str}/abs-file");
        let (d, r) = unpack_bytes(&raw_tar(&[file(&abs, b"a")]));
        r.unwrap();
        assert!(!Path::new(&abs).exists());
        assert!(d.path().join(abs.trim_start_matches('/')).is_file());

        // A symlink to the outside, then a file through it: resolved inside dest, where the
        // target does not exist, so the entry fails.
        let (_d, r) = unpack_bytes(&raw_tar(&[
            symlink("evil", o_str),
            file("evil/victim", b"pwned"),
        ]));
        let err = r.unwrap_err();
        assert!(err.to_string().contains("evil/victim"), "{err}");
        // A relative symlink climbing out is clamped at dest the same way.
        let (d, r) = unpack_bytes(&raw_tar(&[
            symlink("up", "../../../../.."),
            file("up/victim", b"pwned"),
        ]));
        r.unwrap();
        assert!(d.path().join("victim").is_file());

        // Hard links out of dest: by `..`, by absolute path, and through a symlink.
        let (_d, r) = unpack_bytes(&raw_tar(&[hard_link("pw", "../../etc/passwd")]));
        assert!(matches!(r, Err(LayerError::UnsafeEntry { .. })));
        let (_d, r) = unpack_bytes(&raw_tar(&[hard_link("pw", victim_str)]));
        assert!(
            r.is_err(),
            "the target is looked up inside dest, where it is absent"
        );
        let (d, r) = unpack_bytes(&raw_tar(&[symlink("s", victim_str), hard_link("h", "s")]));
        r.unwrap();
        assert!(
            d.path()
                .join("h")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink(),
            "links the symlink itself"
        );

        // A symlink then a dir or a file of the same name replaces the symlink.
        let (d, r) = unpack_bytes(&raw_tar(&[
            symlink("d", o_str),
            dir("d"),
            file("d/victim", b"pwned"),
        ]));
        r.unwrap();
        assert!(d.path().join("d").symlink_metadata().unwrap().is_dir());
        assert!(d.path().join("d/victim").is_file());
        let (d, r) = unpack_bytes(&raw_tar(&[symlink("f", victim_str), file("f", b"pwned")]));
        r.unwrap();
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"pwned");

        // A whiteout through a symlink lands inside dest too.
        let (_d, r) = unpack_bytes(&raw_tar(&[symlink("w", o_str), file("w/.wh.victim", b"")]));
        assert!(r.is_err());

        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(victim.metadata().unwrap().nlink(), 1);
        assert_eq!(
            std::fs::read_dir(o).unwrap().count(),
            1,
            "nothing new outside"
        );
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().nlink(), 1);
    }

    #[test]
    fn zstd_layers_and_trailing_bytes_count_in_the_diff_id() {
        let mut tar_bytes = raw_tar(&[file("a", b"data")]);
        tar_bytes.extend(std::iter::repeat_n(0u8, 10 * 512));
        let z = zstd::stream::encode_all(&tar_bytes[..], 3).unwrap();
        let (dest, r) = unpack_bytes(&z);
        assert_eq!(r.unwrap(), DiffId::of_tar(&tar_bytes));
        assert_eq!(std::fs::read(dest.path().join("a")).unwrap(), b"data");

        // Two gzip members, split mid-tar.
        let mut two = gzip(&tar_bytes[..700]);
        two.extend(gzip(&tar_bytes[700..]));
        let (_d, r) = unpack_bytes(&two);
        assert_eq!(r.unwrap(), DiffId::of_tar(&tar_bytes));
    }

    #[test]
    fn later_entries_replace_earlier_ones_and_dirs_merge() {
        let tar_bytes = raw_tar(&[
            dir("d"),
            file("d/a", b"1"),
            file("x", b"file"),
            dir("x"),
            file("d/a", b"2"),
            dir("d"),
            file("d/b", b"b"),
            file("v7dir/", b""),
        ]);
        let (dest, r) = unpack_bytes(&tar_bytes);
        r.unwrap();
        let d = dest.path();
        assert_eq!(std::fs::read(d.join("d/a")).unwrap(), b"2");
        assert!(d.join("d/b").is_file());
        assert!(d.join("x").is_dir());
        assert!(
            d.join("v7dir").is_dir(),
            "a regular entry named with a trailing slash is a dir"
        );
    }

    #[test]
    fn a_limited_apply_stops_once_the_tar_expands_past_the_limit() {
        // 1 MiB of zeros: a gzip blob of a few KiB that expands to over a MiB.
        let zeros = vec![0u8; 1 << 20];
        let tar = raw_tar(&[dir("cache/"), file("cache/zeros", &zeros)]);
        let blob = gzip(&tar);
        assert!(blob.len() < 64 << 10);

        let root = tempfile::tempdir().unwrap();
        let err = apply_layer_limited(blob.as_slice(), root.path(), 64 << 10).unwrap_err();
        assert!(
            matches!(err, LayerError::TooLarge { limit } if limit == 64 << 10),
            "{err:?}"
        );
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);

        let root = tempfile::tempdir().unwrap();
        let limited = apply_layer_limited(blob.as_slice(), root.path(), tar.len() as u64).unwrap();
        assert_eq!(limited, DiffId::of_tar(&tar));
        assert_eq!(
            std::fs::read(root.path().join("cache/zeros")).unwrap(),
            zeros
        );
    }
}
