//! Multi-platform builds (`--platform linux/amd64,linux/arm64`): one image index under the
//! tag, each platform's RUN steps executed (arm64's under qemu-user through binfmt_misc), the
//! index listed, run per platform, pushed and read back by skopeo and umoci; a
//! `FROM --platform=$BUILDPLATFORM` stage built once for every target; bad platforms and
//! missing emulation refused before any step runs.
//!
//! The base is the testkit's two-platform busybox index (the host's busybox and Debian's
//! arm64 busybox-static), pushed to the loopback registry.

use std::process::Command;

use crate::e2e::harness::{Kiln, assert_success, stderr, stdout};

/// What `uname -m` prints for the host's image.
fn host_machine() -> &'static str {
    std::env::consts::ARCH
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn build(k: &Kiln, ctx: &tempfile::TempDir, tag: &str, extra: &[&str]) -> std::process::Output {
    let dir = ctx.path().to_str().unwrap().to_owned();
    let mut args = vec!["build", "--progress", "plain", "-t", tag];
    args.extend_from_slice(extra);
    args.push(&dir);
    k.cmd(&args)
}

fn index_base(k: &Kiln) -> String {
    kiln_testkit::push_busybox_index(&k.registry, "busybox-index:latest").expect("push index")
}

#[test]
fn a_two_platform_build_is_one_index_that_runs_pushes_and_unpacks_per_platform() {
    let k = Kiln::new();
    let base = index_base(&k);
    let ctx = context(&format!(
        "FROM {base}\n\
         ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM\n\
         RUN uname -m > /machine && echo \"$TARGETPLATFORM $TARGETARCH on $BUILDPLATFORM\" > /target\n\
         CMD [\"cat\", \"/machine\", \"/target\"]\n"
    ));
    let out = build(&k, &ctx, "app", &["--platform", "linux/amd64,linux/arm64"]);
    assert_success(&out, &["build --platform linux/amd64,linux/arm64"]);
    let progress = stderr(&out);
    assert!(progress.contains("linux/arm64 stage-0"), "{progress}");
    assert!(progress.contains("linux/amd64 stage-0"), "{progress}");

    // One row, with both platforms.
    let listing = k.ok(&["images"]);
    let rows: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("/app ") || l.starts_with("app "))
        .collect();
    assert_eq!(rows.len(), 1, "{listing}");
    assert!(rows[0].ends_with("linux/amd64,linux/arm64"), "{listing}");

    // Each platform's image ran its RUN on its own CPU: arm64's under emulation.
    let arm = k.ok(&["run", "--rm", "--platform", "linux/arm64", "app"]);
    assert_eq!(arm, "aarch64\nlinux/arm64 arm64 on linux/amd64\n");
    let native = k.ok(&["run", "--rm", "app"]);
    assert!(
        native.starts_with(&format!("{}\n", host_machine())),
        "{native}"
    );
    let amd = k.ok(&["run", "--rm", "--platform", "linux/amd64", "app"]);
    assert_eq!(amd, "x86_64\nlinux/amd64 amd64 on linux/amd64\n");
    let refused = k.cmd(&["run", "--rm", "--platform", "linux/s390x", "app"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("has no image for linux/s390x; it has: linux/amd64, linux/arm64"),
        "{}",
        stderr(&refused)
    );

    // Pushed as the index with both manifests; skopeo picks arm64's, umoci unpacks it.
    let pushed = format!("{}/app:multi", k.registry.addr());
    k.ok(&["tag", "app", &pushed]);
    let push_out = k.cmd(&["push", &pushed]);
    assert_success(&push_out, &["push", &pushed]);
    let raw = kiln_testkit::skopeo_inspect_raw(&pushed).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    let layout = tempfile::tempdir().unwrap();
    let copied = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "--override-arch",
            "arm64",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{pushed}"))
        .arg(format!("oci:{}/layout:arm", layout.path().display()))
        .output()
        .unwrap();
    assert_success(&copied, &["skopeo copy --override-arch arm64"]);
    let bundle = layout.path().join("bundle");
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}/layout:arm", layout.path().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert_success(&unpacked, &["umoci unpack"]);
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/machine")).unwrap(),
        "aarch64\n"
    );
    let busybox = std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap();
    // ELF e_machine 0xb7: AArch64.
    assert_eq!(&busybox[18..20], &[0xb7, 0x00]);
}

#[test]
fn a_build_platform_stage_is_built_once_for_every_target() {
    let k = Kiln::new();
    let base = index_base(&k);
    // `date +%s%N` makes the stage's output differ from run to run: if it ran once per
    // target (--no-cache looks nothing up), the two images would differ.
    let ctx = context(&format!(
        "FROM --platform=$BUILDPLATFORM {base} AS tools\n\
         RUN echo shared-step-ran; date +%s%N > /stamp\n\
         FROM {base}\n\
         COPY --from=tools /stamp /stamp\n\
         CMD [\"cat\", \"/stamp\"]\n"
    ));
    let out = build(
        &k,
        &ctx,
        "cross",
        &["--no-cache", "--platform", "linux/amd64,linux/arm64"],
    );
    assert_success(&out, &["build"]);
    let progress = stderr(&out);
    // Its RUN started once and printed once (each line also shows the step's label).
    assert_eq!(
        progress.matches("] RUN echo shared-step-ran").count(),
        1,
        "{progress}"
    );
    assert_eq!(
        progress.matches("| shared-step-ran").count(),
        1,
        "{progress}"
    );
    assert!(
        !progress.contains("linux/arm64 tools"),
        "the shared stage carries no platform: {progress}"
    );
    let arm = k.ok(&["run", "--rm", "--platform", "linux/arm64", "cross"]);
    let amd = k.ok(&["run", "--rm", "--platform", "linux/amd64", "cross"]);
    assert_eq!(arm, amd, "one stage, one stamp");
    let inspect = k.inspect("cross");
    assert_eq!(inspect["Architecture"], "amd64");
}

#[test]
fn bad_platforms_and_missing_emulation_fail_before_any_step() {
    let k = Kiln::new();
    let base = index_base(&k);
    let ctx = context(&format!("FROM {base}\nRUN echo step-$((40+2))\n"));

    let unknown = build(&k, &ctx, "bad", &["--platform", "linux/amd64,linux/sparc9"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("unknown platform \"linux/sparc9\": architecture \"sparc9\""),
        "{}",
        stderr(&unknown)
    );

    let missing = build(&k, &ctx, "bad", &["--platform", "linux/amd64,linux/s390x"]);
    let err = stderr(&missing);
    assert!(!missing.status.success());
    assert!(err.contains("failed to resolve base image"), "{err}");
    assert!(err.contains("busybox-index"), "{err}");
    assert!(
        err.contains("no image for platform linux/s390x; available: linux/amd64, linux/arm64"),
        "{err}"
    );
    assert!(!err.contains("step-42"), "no step ran: {err}");

    // As if no handler were registered (they are kernel-wide: the test only hides them).
    let no_handlers = tempfile::tempdir().unwrap();
    let dir = ctx.path().to_str().unwrap();
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .env("KILN_BINFMT_MISC", no_handlers.path())
        .args(["build", "--progress", "plain", "-t", "bad"])
        .args(["--platform", "linux/amd64,linux/arm64", dir])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "RUN needs linux/arm64 but this machine runs linux/amd64 and has no emulation \
             (binfmt_misc/qemu) registered; to emulate it: apt-get install qemu-user-static, \
             then kiln system binfmt --install"
        ),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!err.contains("step-42"), "no step ran: {err}");
    assert!(!k.ok(&["images"]).contains("bad"), "nothing named");

    // Running an arm64 image without emulation is refused up front, saying how to get it.
    let copy_only = context(&format!("FROM {base}\nCOPY Dockerfile /\n"));
    let built = build(
        &k,
        &copy_only,
        "copied",
        &["--platform", "linux/arm64,linux/amd64"],
    );
    assert_success(&built, &["build copy-only"]);
    let run = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .env("KILN_BINFMT_MISC", no_handlers.path())
        .args(["run", "--rm", "--platform", "linux/arm64", "copied", "true"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains("the container needs linux/arm64 but this machine runs linux/amd64"),
        "{}",
        stderr(&run)
    );
    let _ = stdout(&out);
}

#[test]
fn system_binfmt_lists_handlers_with_their_flags() {
    let k = Kiln::new();
    let out = k.ok(&["system", "binfmt"]);
    assert!(
        out.starts_with("HANDLER") || out.contains("not mounted"),
        "{out}"
    );
    if std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_ok_and(|t| {
        t.contains("flags: ")
            && t.lines()
                .any(|l| l.starts_with("flags:") && l.contains('F'))
    }) {
        let row = out
            .lines()
            .find(|l| l.starts_with("qemu-aarch64 "))
            .unwrap();
        assert!(row.contains(" yes "), "{row}");
        assert!(row.contains("aarch64-binfmt"), "{row}");
    }
}

#[test]
fn outputs_and_metadata_of_a_two_platform_build() {
    let k = Kiln::new();
    let base = index_base(&k);
    let ctx = context(&format!(
        "FROM {base}\nCOPY Dockerfile /built-from\nLABEL kind=copy-only\n"
    ));
    let out_dir = tempfile::tempdir().unwrap();
    let local = out_dir.path().join("local");
    let tar = out_dir.path().join("fs.tar");
    let oci = out_dir.path().join("oci.tar");
    let metadata = out_dir.path().join("metadata.json");
    let outputs = [
        format!("type=local,dest={}", local.display()),
        format!("type=tar,dest={}", tar.display()),
        format!("type=oci,dest={}", oci.display()),
    ];
    let mut extra = vec!["--platform", "linux/arm64,linux/amd64"];
    for o in &outputs {
        extra.extend(["--output", o.as_str()]);
    }
    let metadata_arg = metadata.to_str().unwrap().to_owned();
    extra.extend(["--metadata-file", &metadata_arg]);
    let out = build(&k, &ctx, "outs", &extra);
    assert_success(&out, &["build with outputs"]);

    // local: a directory per platform, each that platform's filesystem.
    for (dir, machine) in [("linux_amd64", [0x3e, 0x00]), ("linux_arm64", [0xb7, 0x00])] {
        let root = local.join(dir);
        assert!(root.join("built-from").is_file(), "{}", root.display());
        let busybox = std::fs::read(root.join("bin/busybox")).unwrap();
        assert_eq!(&busybox[18..20], &machine, "{dir}");
    }
    // tar: the same directories in one tar.
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert_success(&listing, &["tar -tf"]);
    let names = stdout(&listing);
    for entry in ["linux_amd64/built-from", "linux_arm64/built-from"] {
        assert!(names.lines().any(|l| l == entry), "{entry} in {names}");
    }
    // oci: the index, with both manifests in the platforms' order.
    let unpacked = out_dir.path().join("oci");
    std::fs::create_dir(&unpacked).unwrap();
    let x = Command::new("tar")
        .arg("-xf")
        .arg(&oci)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert_success(&x, &["tar -xf oci.tar"]);
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let root = top["manifests"][0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let blob = |d: &str| {
        std::fs::read(
            unpacked
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&blob(&root)).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    let archs: Vec<&str> = entries
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    // buildx's default provenance for type=oci: one attestation manifest per image, after it.
    assert_eq!(archs, ["arm64", "unknown", "amd64", "unknown"]);
    for pair in entries.chunks(2) {
        assert_eq!(
            pair[1]["annotations"]["vnd.docker.reference.digest"],
            pair[0]["digest"]
        );
    }

    // metadata: the index, and no single config digest.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], root.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");

    // Cache keys are per platform: one platform alone is all cache hits and the very image
    // the index holds for it.
    let again = build(&k, &ctx, "arm-only", &["--platform", "linux/arm64"]);
    assert_success(&again, &["build --platform linux/arm64"]);
    assert!(stderr(&again).contains("CACHED"), "{}", stderr(&again));
    let arm_manifest = k.inspect("arm-only")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(index["manifests"][0]["digest"], arm_manifest.as_str());

    // A cache exported by a two-platform build serves both platforms to an empty store.
    let cache = out_dir.path().join("cache");
    let cache_to = format!("type=local,dest={},mode=max", cache.display());
    let exported = build(
        &k,
        &ctx,
        "outs",
        &[
            "--platform",
            "linux/arm64,linux/amd64",
            "--cache-to",
            &cache_to,
        ],
    );
    assert_success(&exported, &["build --cache-to"]);
    let fresh = k.fresh_store();
    let cache_from = format!("type=local,src={}", cache.display());
    let dir = ctx.path().to_str().unwrap();
    let imported = k.cmd_in(
        fresh.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "outs",
            "--platform",
            "linux/arm64,linux/amd64",
            "--cache-from",
            &cache_from,
            dir,
        ],
    );
    assert_success(&imported, &["build --cache-from in a fresh store"]);
    let log = stderr(&imported);
    for platform in ["linux/arm64", "linux/amd64"] {
        let steps: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("[{platform} stage-0 2/")))
            .collect();
        assert!(
            steps.iter().any(|l| l.contains("CACHED")),
            "{platform}: {log}"
        );
    }

    // type=docker cannot hold an index: refused before the build.
    let docker = format!(
        "type=docker,dest={}",
        out_dir.path().join("d.tar").display()
    );
    let refused = build(
        &k,
        &ctx,
        "outs",
        &["--platform", "linux/arm64,linux/amd64", "--output", &docker],
    );
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("use type=oci for the index"), "{err}");
    assert!(!err.contains("FROM"), "refused before any step: {err}");
}
