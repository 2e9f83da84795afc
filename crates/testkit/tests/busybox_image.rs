//! Checks the busybox base image the other crates' tests build on, using the real tools:
//! the rootfs tar's contents, the OCI layout (umoci, oci-image-tool), and a push to a
//! registry (skopeo).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln_image::{Digest, Index, Manifest, Platform};
use kiln_testkit::{
    TestRegistry, busybox_oci_layout, busybox_rootfs_tar, oci_image_tool_validate, push_busybox,
    skopeo_copy_to_oci_layout, skopeo_inspect, skopeo_inspect_raw, umoci_unpack_oci_layout,
};

struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    mtime: u64,
    link: Option<String>,
}

fn tar_entries(path: &Path) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let header = entry.header();
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let info = TarEntry {
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                uid: header.uid().unwrap(),
                mtime: header.mtime().unwrap(),
                link,
            };
            (name, info)
        })
        .collect()
}

#[test]
fn rootfs_tar_is_reproducible_sorted_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    busybox_rootfs_tar(&first).unwrap();
    busybox_rootfs_tar(&second).unwrap();
    assert_eq!(
        fs::read(&first).unwrap(),
        fs::read(&second).unwrap(),
        "two runs differ"
    );

    let entries = tar_entries(&first);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are not in sorted order");
    let by_name: BTreeMap<&str, &TarEntry> = entries.iter().map(|(n, e)| (n.as_str(), e)).collect();

    for (name, entry) in &by_name {
        assert_eq!(entry.mtime, 0, "{name} has a non-zero mtime");
        let expected_uid = if *name == "home/kiln" { 1000 } else { 0 };
        assert_eq!(entry.uid, expected_uid, "{name} has uid {}", entry.uid);
    }
    let busybox = by_name["bin/busybox"];
    assert!(
        busybox.kind.is_file() && busybox.mode & 0o111 == 0o111,
        "bin/busybox not executable"
    );
    for applet in ["bin/sh", "bin/ls", "usr/bin/wget", "sbin/ifconfig"] {
        let entry = by_name
            .get(applet)
            .unwrap_or_else(|| panic!("{applet} missing"));
        assert!(entry.kind.is_symlink(), "{applet} is not a symlink");
        assert_eq!(entry.link.as_deref(), Some("/bin/busybox"), "{applet}");
    }
    assert!(!by_name.contains_key("linuxrc"));
    assert_eq!(by_name["tmp"].mode, 0o1777);
    assert_eq!(by_name["root"].mode, 0o700);
    for dir in ["home", "var", "etc", "usr/bin"] {
        assert!(by_name[dir].kind.is_dir(), "{dir} is not a directory");
    }
    let mut archive = tar::Archive::new(File::open(&first).unwrap());
    let unpacked = dir.path().join("unpacked");
    archive.unpack(&unpacked).unwrap();
    let passwd = fs::read_to_string(unpacked.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"),
        "{passwd}"
    );
    assert!(passwd.contains("\nkiln:x:1000:1000:"), "{passwd}");
    assert!(passwd.contains("nobody:x:65534:65534:"), "{passwd}");
    let group = fs::read_to_string(unpacked.join("etc/group")).unwrap();
    assert!(
        group.contains("root:x:0:")
            && group.contains("nogroup:x:65534:")
            && group.contains("kiln:x:1000:")
    );
}

#[test]
fn script_fails_clearly_without_busybox() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("bash")
        .arg(kiln_testkit::rootfs_script_path())
        .arg(dir.path().join("x.tar"))
        .env("BUSYBOX", dir.path().join("no-busybox"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install busybox-static"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.tar").exists());
}

#[test]
fn layout_is_valid_and_unpacks_with_umoci() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    busybox_oci_layout(&layout, "v1").unwrap();
    // A second tag is added beside the first; re-adding a tag replaces it.
    busybox_oci_layout(&layout, "v2").unwrap();
    busybox_oci_layout(&layout, "v2").unwrap();

    let index: Index =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 2, "{index:?}");
    let entry = &index.manifests[0];
    assert_eq!(entry.annotations["org.opencontainers.image.ref.name"], "v1");
    let blob = |d: &Digest| fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap();
    let manifest_bytes = blob(&entry.digest);
    assert_eq!(Digest::of(&manifest_bytes), entry.digest);
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest.layers.len(), 1);
    let config: kiln_image::ImageConfig =
        serde_json::from_slice(&blob(&manifest.config.digest)).unwrap();
    assert_eq!(config.architecture, Platform::host().architecture);
    assert_eq!(config.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(config.rootfs.diff_ids.len(), 1);
    assert_eq!(
        blob(&manifest.layers[0].digest).len() as u64,
        manifest.layers[0].size
    );

    oci_image_tool_validate(&layout, "v1").unwrap();

    let bundle = dir.path().join("bundle");
    umoci_unpack_oci_layout(&layout, "v1", &bundle).unwrap();
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let mode = fs::metadata(rootfs.join("bin/busybox"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "bin/busybox mode {mode:o}");
    assert_eq!(
        fs::metadata(rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );

    // The validator really checks: a config blob that no longer matches its descriptor fails.
    let config_path = layout
        .join("blobs/sha256")
        .join(manifest.config.digest.hex());
    fs::write(&config_path, b"{}").unwrap();
    let err = oci_image_tool_validate(&layout, "v1").unwrap_err();
    assert!(format!("{err:#}").contains("mismatch"), "{err:#}");
}

#[test]
fn push_busybox_then_inspect_and_copy_back() {
    let registry = TestRegistry::start().unwrap();
    let reference = push_busybox(&registry, "busybox:latest").unwrap();
    assert_eq!(reference, format!("{}/busybox:latest", registry.addr()));

    let info = skopeo_inspect(&reference).unwrap();
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(
        info["Architecture"],
        Platform::host().architecture.as_str(),
        "{info}"
    );
    assert_eq!(info["Os"], "linux");

    let raw = skopeo_inspect_raw(&reference).unwrap();
    let manifest: Manifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest.effective_media_type(),
        kiln_image::media_type::OCI_MANIFEST
    );
    assert_eq!(
        info["Digest"],
        Digest::of(&raw).to_string(),
        "the digest covers the raw bytes"
    );

    // The same cached layout goes to a second repository with the same manifest digest.
    let other = push_busybox(&registry, "library/other:1").unwrap();
    assert_eq!(skopeo_inspect_raw(&other).unwrap(), raw);

    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("copied");
    skopeo_copy_to_oci_layout(&reference, &layout, "copied").unwrap();
    oci_image_tool_validate(&layout, "copied").unwrap();
    let bundle = dir.path().join("bundle");
    umoci_unpack_oci_layout(&layout, "copied", &bundle).unwrap();
    assert!(bundle.join("rootfs/bin/busybox").is_file());
}
