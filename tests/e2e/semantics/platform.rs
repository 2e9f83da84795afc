//! `--platform` and `FROM --platform`: manifest selection from an index, the result's
//! platform, and RUN in a stage for a platform this machine cannot execute.

use super::{build_in, build_ok, context};
use crate::e2e::harness::{Kiln, stderr};

/// Pushes `<registry>/busybox-multi:latest`: an OCI index whose host entry is the busybox
/// image and whose `linux/arm64` (or, on an arm64 host, `linux/amd64`) entry has the same
/// layers under a config naming that other architecture. The layers are only data to kiln
/// as long as nothing executes them, which is what a COPY-only foreign build relies on.
fn push_multi_platform_busybox(k: &Kiln) -> (String, kiln_image::Platform) {
    use kiln_image::{Descriptor, Digest, ImageConfig, Index, Manifest, media_type};

    let host = kiln_image::Platform::host();
    let foreign = if host.architecture == "arm64" {
        kiln_image::Platform::new("linux", "amd64")
    } else {
        kiln_image::Platform::new("linux", "arm64")
    };
    let layout = tempfile::tempdir().unwrap();
    kiln_testkit::busybox_oci_layout(layout.path(), "host").unwrap();
    let blobs = layout.path().join("blobs/sha256");
    let read = |d: &Digest| std::fs::read(blobs.join(d.hex())).unwrap();
    let write = |bytes: Vec<u8>, media: &str| {
        let digest = Digest::of(&bytes);
        std::fs::write(blobs.join(digest.hex()), &bytes).unwrap();
        Descriptor::new(media, digest, bytes.len() as u64)
    };
    let top: Index =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let mut host_entry = top.manifests[0].clone();
    host_entry.annotations.clear();
    host_entry.platform = Some(host.clone());
    let manifest: Manifest = serde_json::from_slice(&read(&host_entry.digest)).unwrap();
    let mut config: ImageConfig = serde_json::from_slice(&read(&manifest.config.digest)).unwrap();
    config.architecture = foreign.architecture.clone();
    config.variant = None;
    let config_desc = write(
        kiln_image::to_canonical_json(&config),
        media_type::OCI_CONFIG,
    );
    let foreign_manifest = Manifest::oci(config_desc, manifest.layers.clone());
    let mut foreign_entry = write(
        kiln_image::to_canonical_json(&foreign_manifest),
        media_type::OCI_MANIFEST,
    );
    foreign_entry.platform = Some(foreign.clone());
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![host_entry, foreign_entry],
        annotations: Default::default(),
    };
    let mut index_entry = write(kiln_image::to_canonical_json(&index), media_type::OCI_INDEX);
    index_entry
        .annotations
        .insert("org.opencontainers.image.ref.name".into(), "multi".into());
    let outer = Index {
        manifests: vec![index_entry],
        ..index
    };
    std::fs::write(
        layout.path().join("index.json"),
        kiln_image::to_canonical_json(&outer),
    )
    .unwrap();
    let reference = format!("{}/busybox-multi:latest", k.registry.addr());
    kiln_testkit::skopeo_copy_oci_layout_to(layout.path(), "multi", &reference).unwrap();
    (reference, foreign)
}

#[test]
fn platform_selects_the_base_manifest_and_guards_run() {
    let k = Kiln::new();
    let (multi, foreign) = push_multi_platform_busybox(&k);
    let foreign_name = foreign.to_string();
    let ctx = context(
        &k,
        &format!("FROM {multi}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"),
        &[("hello.txt", "hello\n")],
    );
    build_ok(&k, ctx.path(), "foreign", &["--platform", &foreign_name]);
    let img = k.inspect("foreign");
    assert_eq!(img["Architecture"], foreign.architecture.as_str());
    assert_eq!(img["Os"], "linux");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "the base's layers plus the COPY"
    );

    // The same name for the host platform selects the host manifest (re-pulling, since the
    // local name now holds the foreign image) and runs.
    build_ok(&k, ctx.path(), "native", &[]);
    let img = k.inspect("native");
    assert_eq!(
        img["Architecture"],
        kiln_image::Platform::host().architecture.as_str()
    );
    assert_eq!(k.ok(&["run", "--rm", "native"]), "hello\n");

    // RUN in a foreign stage needs emulation; without it the error says so.
    let run_ctx = context(&k, &format!("FROM {multi}\nRUN echo hi\n"), &[]);
    let out = build_in(
        &k,
        run_ctx.path(),
        "foreign-run",
        &["--platform", &foreign_name],
    );
    let binfmt_name = if foreign.architecture == "arm64" {
        "/proc/sys/fs/binfmt_misc/qemu-aarch64"
    } else {
        "/proc/sys/fs/binfmt_misc/qemu-x86_64"
    };
    let emulated = std::fs::read_to_string(binfmt_name).is_ok_and(|t| t.starts_with("enabled"));
    if !emulated {
        let err = stderr(&out);
        assert!(!out.status.success());
        let expected = format!(
            "RUN needs {foreign_name} but this machine runs {} and has no emulation \
             (binfmt_misc/qemu) registered",
            kiln_image::Platform::host()
        );
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("Dockerfile:2"), "{err}");
    }

    // The cross-compilation pattern: build on the build platform, copy into the target.
    let cross = context(
        &k,
        &format!(
            "\
FROM --platform=$BUILDPLATFORM {multi} AS build
ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM
RUN echo \"built on $BUILDPLATFORM for $TARGETPLATFORM ($TARGETARCH)\" > /out.txt
FROM {multi}
COPY --from=build /out.txt /out.txt
"
        ),
        &[],
    );
    let log = build_ok(&k, cross.path(), "cross", &["--platform", &foreign_name]);
    assert!(!log.contains("error"), "{log}");
    let img = k.inspect("cross");
    assert_eq!(img["Architecture"], foreign.architecture.as_str());
    // Read the file through a host image: a foreign stage FROM the result, copied from.
    let check = context(
        &k,
        &format!(
            "FROM --platform={foreign_name} cross AS result\nFROM {multi}\nCOPY --from=result /out.txt /out.txt\n"
        ),
        &[],
    );
    build_ok(&k, check.path(), "cross-check", &[]);
    assert_eq!(
        k.ok(&["run", "--rm", "cross-check", "cat", "/out.txt"]),
        format!(
            "built on {} for {foreign_name} ({})\n",
            kiln_image::Platform::host(),
            foreign.architecture
        )
    );

    // A local image for another platform is not silently used for this one.
    let local_only = format!("{}/cross-local:1", k.registry.addr());
    k.ok(&["tag", "cross", &local_only]);
    let uses_local = context(&k, &format!("FROM {local_only}\n"), &[]);
    let out = build_in(&k, uses_local.path(), "bad", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "is for {foreign_name}, not {}",
            kiln_image::Platform::host()
        )),
        "{}",
        stderr(&out)
    );

    let bad = build_in(&k, ctx.path(), "bad", &["--platform", "linux"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("os/arch"), "{}", stderr(&bad));
    // Both platforms at once (COPY-only, so no emulation): one name, an index of both.
    let both = format!("{},{foreign_name}", kiln_image::Platform::host());
    build_ok(&k, ctx.path(), "both", &["--platform", &both]);
    assert_eq!(k.ok(&["run", "--rm", "both"]), "hello\n");
    let listing = k.ok(&["images"]);
    let row = listing.lines().find(|l| l.starts_with("both ")).unwrap();
    assert!(row.ends_with(&both), "{listing}");
}
