use std::io::Write;

use kiln_image::layout::{NamedManifest, blob_path};
use kiln_image::{Descriptor, Digest, ImageConfig, Manifest, media_type, to_canonical_json};
use kiln_store::Store;

use super::*;
use crate::{ArchiveFormat, write_archive};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    (dir, store)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn layer_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// A two-layer image written straight into `store`; returns its manifest descriptor.
fn put_image(store: &Store) -> Descriptor {
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    let mut layers = Vec::new();
    for (name, data) in [("a", &b"first"[..]), ("b", &b"second"[..])] {
        let tar = layer_tar(name, data);
        config
            .rootfs
            .diff_ids
            .push(kiln_image::DiffId::of_tar(&tar));
        let blob = gzip(&tar);
        let digest = store.write_blob(&blob).unwrap();
        layers.push(Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            digest,
            blob.len() as u64,
        ));
    }
    let config_bytes = to_canonical_json(&config);
    let config_digest = store.write_blob(&config_bytes).unwrap();
    let manifest = Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers,
    );
    let bytes = to_canonical_json(&manifest);
    let digest = store.write_blob(&bytes).unwrap();
    Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64)
}

fn archive_of(format: ArchiveFormat) -> (tempfile::TempDir, Store, Descriptor, Vec<u8>) {
    let (dir, store) = store();
    let manifest = put_image(&store);
    let images = [NamedManifest {
        manifest: manifest.clone(),
        names: vec!["docker.io/library/app:latest".into()],
    }];
    let bytes = write_archive(&store, &images, format, Vec::new()).unwrap();
    (dir, store, manifest, bytes)
}

fn entries(tar_bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(tar_bytes)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

/// Nothing published and nothing left staged.
fn assert_untouched(store: &Store) {
    for sub in ["blobs/sha256", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(store.root().join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}: {left:?}");
    }
}

#[test]
fn both_formats_round_trip_with_the_same_digests() {
    for format in [ArchiveFormat::Oci, ArchiveFormat::Docker] {
        let (_d, src, manifest, bytes) = archive_of(format);
        let names = entries(&bytes);
        assert_eq!(names[0], "oci-layout");
        assert!(names.contains(&"index.json".to_owned()));
        assert_eq!(
            names.contains(&"manifest.json".to_owned()),
            format == ArchiveFormat::Docker
        );
        assert!(names.contains(&blob_path(&manifest.digest)));

        let (_d2, dest) = store();
        let loaded = read_archive(&dest, bytes.as_slice())
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].manifest_digest, manifest.digest, "{format:?}");
        let want_name = match format {
            ArchiveFormat::Oci => "docker.io/library/app:latest",
            ArchiveFormat::Docker => "app:latest",
        };
        assert_eq!(loaded[0].names, [want_name]);
        let m: Manifest =
            serde_json::from_slice(&dest.read_blob(&manifest.digest).unwrap()).unwrap();
        for blob in m.layers.iter().map(|l| &l.digest).chain([&m.config.digest]) {
            assert_eq!(dest.read_blob(blob).unwrap(), src.read_blob(blob).unwrap());
        }
        assert!(
            std::fs::read_dir(dest.root().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }
}

#[test]
fn writing_twice_gives_the_same_bytes() {
    let (_d, store, manifest, first) = archive_of(ArchiveFormat::Docker);
    let images = [NamedManifest {
        manifest,
        names: vec!["docker.io/library/app:latest".into()],
    }];
    let second = write_archive(&store, &images, ArchiveFormat::Docker, Vec::new()).unwrap();
    assert_eq!(first, second);
}

/// A docker archive as older `docker save` writes it: plain-tar layers under `<id>/layer.tar`,
/// the config as `<id>.json`, no index: kiln makes an OCI manifest for it.
#[test]
fn legacy_docker_archives_load() {
    let tar = layer_tar("hello", b"hi");
    let config = ImageConfig {
        rootfs: kiln_image::RootFs {
            kind: "layers".into(),
            diff_ids: vec![kiln_image::DiffId::of_tar(&tar)],
        },
        ..Default::default()
    };
    let config_bytes = to_canonical_json(&config);
    let manifest_json =
        br#"[{"Config":"c0ffee.json","RepoTags":["old:1"],"Layers":["l1/layer.tar"]}]"#;
    let archive = raw_archive(&[
        ("l1/layer.tar", &tar),
        ("c0ffee.json", &config_bytes),
        ("manifest.json", manifest_json),
    ]);
    let (_d, dest) = store();
    let loaded = read_archive(&dest, archive.as_slice())
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(loaded[0].names, ["old:1"]);
    assert_eq!(loaded[0].config_digest, Digest::of(&config_bytes));
    let m: Manifest =
        serde_json::from_slice(&dest.read_blob(&loaded[0].manifest_digest).unwrap()).unwrap();
    assert_eq!(m.layers[0].media_type, media_type::OCI_LAYER);
    assert_eq!(m.layers[0].digest, Digest::of(&tar));
}

/// A tar with raw names and types, bypassing the `tar` crate's own path checks.
fn raw_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        out.extend(raw_header(name, data.len() as u64, b'0', ""));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend([0u8; 1024]);
    out
}

fn raw_header(name: &str, size: u64, kind: u8, link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn hostile_paths_and_links_are_refused() {
    for (name, kind, link) in [
        ("../evil", b'0', ""),
        ("blobs/../../evil", b'0', ""),
        ("/etc/evil", b'0', ""),
        ("blobs/sha256/link", b'2', "/etc/passwd"),
        ("blobs/sha256/up", b'2', "../../../etc/passwd"),
        ("blobs/sha256/hard", b'1', "../x"),
    ] {
        let mut archive = raw_header(name, 0, kind, link);
        archive.extend([0u8; 1024]);
        let (_d, dest) = store();
        let err = read_archive(&dest, archive.as_slice()).unwrap_err();
        assert!(
            matches!(err, ExportError::UnsafeEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
        assert_untouched(&dest);
    }
}

/// Relative links inside the archive are aliases, as Docker's legacy format uses them.
#[test]
fn links_inside_the_archive_alias_their_targets() {
    let tar = layer_tar("hello", b"hi");
    let config = ImageConfig {
        rootfs: kiln_image::RootFs {
            kind: "layers".into(),
            diff_ids: vec![
                kiln_image::DiffId::of_tar(&tar),
                kiln_image::DiffId::of_tar(&tar),
            ],
        },
        ..Default::default()
    };
    let config_bytes = to_canonical_json(&config);
    let manifest_json =
        br#"[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar","b/layer.tar"]}]"#;
    let mut archive = Vec::new();
    for (name, data) in [("a/layer.tar", &tar[..]), ("c.json", &config_bytes)] {
        archive.extend(raw_header(name, data.len() as u64, b'0', ""));
        archive.extend_from_slice(data);
        archive.resize(archive.len().next_multiple_of(512), 0);
    }
    archive.extend(raw_header("b/layer.tar", 0, b'2', "../a/layer.tar"));
    archive.extend(raw_header(
        "manifest.json",
        manifest_json.len() as u64,
        b'0',
        "",
    ));
    archive.extend_from_slice(manifest_json);
    archive.resize(archive.len().next_multiple_of(512) + 1024, 0);
    let (_d, dest) = store();
    let loaded = read_archive(&dest, archive.as_slice())
        .unwrap()
        .commit()
        .unwrap();
    let m: Manifest =
        serde_json::from_slice(&dest.read_blob(&loaded[0].manifest_digest).unwrap()).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.layers[0].digest, m.layers[1].digest);
    assert!(loaded[0].names.is_empty());
}

#[test]
fn a_blob_whose_content_does_not_match_its_name_is_refused() {
    let name = blob_path(&Digest::of(b"expected"));
    let archive = raw_archive(&[(&name, b"something else")]);
    let (_d, dest) = store();
    let err = read_archive(&dest, archive.as_slice()).unwrap_err();
    assert!(matches!(err, ExportError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert_untouched(&dest);
}

#[test]
fn a_manifest_naming_a_missing_blob_publishes_nothing() {
    let (_d, _src, manifest, bytes) = archive_of(ArchiveFormat::Oci);
    // Drop one layer from the archive, keep everything else.
    let mut src = tar::Archive::new(bytes.as_slice());
    let mut files = Vec::new();
    let mut dropped = None;
    for entry in src.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if dropped.is_none() && path.starts_with("blobs/") && data.starts_with(&[0x1f, 0x8b]) {
            dropped = Some(path);
            continue;
        }
        files.push((path, data));
    }
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let archive = raw_archive(&files);
    let (_d2, dest) = store();
    let err = read_archive(&dest, archive.as_slice()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExportError::MissingBlob { .. }), "{text}");
    let dropped = dropped.unwrap().replace("blobs/sha256/", "sha256:");
    assert!(text.contains(&dropped), "{text}");
    assert!(text.contains(&manifest.digest.to_string()), "{text}");
    assert_untouched(&dest);
}

#[test]
fn truncated_archives_are_refused() {
    let (_d, _src, _m, bytes) = archive_of(ArchiveFormat::Docker);
    for cut in [100, 700, bytes.len() / 2, bytes.len() - 1100] {
        let (_d2, dest) = store();
        let err = read_archive(&dest, &bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Read(_) | ExportError::NotAnArchive | ExportError::NoImages
            ),
            "cut at {cut}: {err}"
        );
        assert_eq!(
            err.kind(),
            kiln_error::ErrorKind::InvalidArgument,
            "cut at {cut}: {err}"
        );
        assert_untouched(&dest);
    }
}

#[test]
fn something_that_is_not_an_image_archive_is_named_as_such() {
    let archive = raw_archive(&[("hello.txt", b"hi")]);
    let (_d, dest) = store();
    let err = read_archive(&dest, archive.as_slice()).unwrap_err();
    assert!(err.to_string().contains("not an image archive"), "{err}");
    assert_untouched(&dest);
}
