use super::*;
use crate::test_support::{entry_names, gunzip, set_all_mtimes};
use kiln_image::{DiffId, Digest};
use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn make_tree(root: &Path, reversed: bool) {
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| std::fs::create_dir_all(root.join("etc/conf.d")).unwrap()),
        Box::new(|| std::fs::write(root.join("a.txt"), b"alpha").unwrap()),
        Box::new(|| std::fs::write(root.join("b.txt"), b"beta").unwrap()),
        Box::new(|| std::fs::create_dir_all(root.join("z/y")).unwrap()),
        Box::new(|| {
            std::fs::create_dir_all(root.join("z/y")).unwrap();
            std::fs::write(root.join("z/y/file"), b"deep").unwrap()
        }),
    ];
    if reversed {
        steps.reverse();
    }
    for step in steps {
        step();
    }
    set_all_mtimes(root, 1_700_000_000);
}

#[test]
fn same_tree_gives_the_same_digest_whatever_the_creation_order() {
    let (_d, store) = store();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    make_tree(one.path(), false);
    make_tree(two.path(), true);
    let a = write_layer(&store, one.path(), Compression::default())
        .unwrap()
        .unwrap();
    let a_again = write_layer(&store, one.path(), Compression::default())
        .unwrap()
        .unwrap();
    let b = write_layer(&store, two.path(), Compression::default())
        .unwrap()
        .unwrap();
    assert_eq!(a, a_again);
    assert_eq!(a, b);
    let names = entry_names(&gunzip(&store.read_blob(&a.digest).unwrap()));
    assert_eq!(
        names,
        [
            "a.txt",
            "b.txt",
            "etc/",
            "etc/conf.d/",
            "z/",
            "z/y/",
            "z/y/file"
        ]
    );
}

#[test]
fn digest_size_and_diff_id_match_the_stored_blob() {
    let (_d, store) = store();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let gz = write_layer(&store, src.path(), Compression::Gzip { level: 9 })
        .unwrap()
        .unwrap();
    let blob = store.read_blob(&gz.digest).unwrap();
    assert_eq!(Digest::of(&blob), gz.digest);
    assert_eq!(blob.len() as u64, gz.size);
    assert_eq!(DiffId::of_tar(&gunzip(&blob)), gz.diff_id);
    assert_eq!(gz.media_type, kiln_image::media_type::OCI_LAYER_GZIP);

    let plain = write_layer(&store, src.path(), Compression::None)
        .unwrap()
        .unwrap();
    assert_eq!(&plain.digest, plain.diff_id.as_tar_digest());
    assert_eq!(
        plain.diff_id, gz.diff_id,
        "the same tar under either compression"
    );
    assert_eq!(plain.media_type, kiln_image::media_type::OCI_LAYER);
    assert!(matches!(
        write_layer(&store, src.path(), Compression::Gzip { level: 10 }),
        Err(LayerError::InvalidCompression(_))
    ));

    let zst = write_layer(&store, src.path(), Compression::Zstd { level: 3 })
        .unwrap()
        .unwrap();
    let blob = store.read_blob(&zst.digest).unwrap();
    assert_eq!(Digest::of(&blob), zst.digest);
    assert_eq!(blob.len() as u64, zst.size);
    assert_eq!(
        DiffId::of_tar(&zstd::stream::decode_all(&blob[..]).unwrap()),
        gz.diff_id
    );
    assert_eq!(zst.media_type, kiln_image::media_type::OCI_LAYER_ZSTD);

    // Every blob written is recorded as its layer's variant for that setting.
    let variants: Vec<(String, Digest)> = store
        .layer_variants(&gz.diff_id)
        .unwrap()
        .into_iter()
        .map(|v| (v.compression, v.digest))
        .collect();
    assert_eq!(
        variants,
        [
            ("gzip-9".to_owned(), gz.digest.clone()),
            ("uncompressed".to_owned(), plain.digest.clone()),
            ("zstd-3".to_owned(), zst.digest.clone()),
        ]
    );
}

#[test]
fn empty_upper_adds_no_layer_and_leaves_no_temp_file() {
    let (_d, store) = store();
    let upper = tempfile::tempdir().unwrap();
    assert_eq!(
        write_layer(&store, upper.path(), Compression::default()).unwrap(),
        None
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn headers_carry_metadata_links_and_long_names() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    std::fs::write(root.join("suid"), b"x").unwrap();
    rustix::fs::chown(
        root.join("suid"),
        Some(rustix::fs::Uid::from_raw(1000)),
        Some(rustix::fs::Gid::from_raw(50)),
    )
    .unwrap();
    std::fs::set_permissions(root.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(root.join("suid"), root.join("twin")).unwrap();
    symlink("suid", root.join("link")).unwrap();
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "f".repeat(130));
    std::fs::create_dir(root.join(&long_dir)).unwrap();
    std::fs::write(root.join(&long_name), b"long").unwrap();
    rustix::fs::lsetxattr(
        root.join("suid"),
        "user.note",
        b"hi",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // Overlay's own xattrs never leave the host.
    rustix::fs::lsetxattr(
        root.join("suid"),
        "trusted.overlay.origin",
        b"o",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let (tar_bytes, count) = write_tar(root, SourceKind::Plain, Vec::new()).unwrap();
    assert_eq!(count, 5);
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let h = entry.header().clone();
        let xattrs: Vec<String> = entry
            .pax_extensions()
            .unwrap()
            .map(|p| {
                p.filter_map(|r| r.ok())
                    .filter_map(|r| r.key().ok().map(str::to_owned))
                    .filter(|k| k.starts_with("SCHILY"))
                    .collect()
            })
            .unwrap_or_default();
        match name.as_str() {
            "suid" => {
                assert_eq!(h.mode().unwrap(), 0o4755);
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 50));
                assert_eq!(xattrs, ["SCHILY.xattr.user.note"]);
                assert_eq!(h.entry_type(), EntryType::Regular);
            }
            "twin" => {
                assert_eq!(h.entry_type(), EntryType::Link);
                assert_eq!(h.link_name_bytes().unwrap().as_ref(), b"suid");
            }
            "link" => assert_eq!(entry.link_name_bytes().unwrap().as_ref(), b"suid"),
            n if n == long_name => assert_eq!(h.size().unwrap(), 4),
            n if n == format!("{long_dir}/") => assert!(h.entry_type().is_dir()),
            other => panic!("unexpected entry {other}"),
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], format!("{long_dir}/"));
}

#[test]
fn name_fields_hold_short_split_and_overlong_names() {
    let mut h = Header::new_ustar();
    assert!(set_name(&mut h, b"short"));
    assert_eq!(h.path_bytes().as_ref(), b"short");
    let split = format!("{}/{}", "p".repeat(150), "n".repeat(99));
    let mut h = Header::new_ustar();
    assert!(set_name(&mut h, split.as_bytes()));
    assert_eq!(h.path_bytes().as_ref(), split.as_bytes());
    let mut h = Header::new_ustar();
    assert!(!set_name(&mut h, "x".repeat(300).as_bytes()));
}

/// (name, mtime) of every entry of a tar.
fn entry_mtimes(tar_bytes: &[u8]) -> Vec<(String, u64)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().mtime().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_mtime_ceiling_clamps_newer_times_and_keeps_older_ones() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    std::fs::create_dir(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/new"), b"new").unwrap();
    std::fs::write(root.join("old"), b"old").unwrap();
    std::fs::hard_link(root.join("dir/new"), root.join("link")).unwrap();
    symlink("old", root.join("sym")).unwrap();
    crate::test_support::set_mtime(&root.join("dir/new"), 2_000_000_000);
    crate::test_support::set_mtime(&root.join("old"), 1_000);
    crate::test_support::set_mtime(&root.join("sym"), 1_500_000_001);
    crate::test_support::set_mtime(&root.join("dir"), 1_500_000_000);
    let options = TarOptions {
        mtime_ceiling: Some(1_500_000_000),
    };
    let (clamped, n) = write_tar_with(root, SourceKind::Plain, options, Vec::new()).unwrap();
    assert_eq!(n, 5);
    assert_eq!(
        entry_mtimes(&clamped),
        [
            ("dir/".to_owned(), 1_500_000_000),
            ("dir/new".to_owned(), 1_500_000_000),
            ("link".to_owned(), 1_500_000_000),
            ("old".to_owned(), 1_000),
            ("sym".to_owned(), 1_500_000_000),
        ]
    );
    // Only the headers change: the tree on disk keeps its times.
    let meta = std::fs::metadata(root.join("dir/new")).unwrap();
    assert_eq!(meta.mtime(), 2_000_000_000);
    // Without a ceiling the times are written as they are.
    let (plain, _) = write_tar(root, SourceKind::Plain, Vec::new()).unwrap();
    let times: BTreeMap<String, u64> = entry_mtimes(&plain).into_iter().collect();
    assert_eq!(times["dir/new"], 2_000_000_000);
    assert_eq!(times["sym"], 1_500_000_001);
    assert_ne!(plain, clamped);
}

#[test]
fn a_ceiling_above_every_mtime_writes_the_same_layer_as_none() {
    let (_d, store) = store();
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), false);
    let plain = write_layer(&store, src.path(), Compression::default())
        .unwrap()
        .unwrap();
    let high = TarOptions {
        mtime_ceiling: Some(1_700_000_000),
    };
    let same = write_layer_with(&store, src.path(), Compression::default(), high)
        .unwrap()
        .unwrap();
    assert_eq!(plain, same);
    let low = TarOptions {
        mtime_ceiling: Some(1_600_000_000),
    };
    let clamped = write_layer_with(&store, src.path(), Compression::default(), low)
        .unwrap()
        .unwrap();
    assert_ne!(plain.diff_id, clamped.diff_id);
    let tar_bytes = gunzip(&store.read_blob(&clamped.digest).unwrap());
    assert!(
        entry_mtimes(&tar_bytes)
            .iter()
            .all(|(_, t)| *t == 1_600_000_000)
    );
}
