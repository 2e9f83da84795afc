//! `--build-context NAME=VALUE` (issue 15): a directory, `docker-image://REF` and
//! `oci-layout://PATH[:TAG|@DIGEST]` standing for the image NAME in `FROM`, `COPY --from`
//! and `RUN --mount=from`; bad values are refused naming them, leaving nothing behind.

use super::harness::{Kiln, assert_success, stderr, stdout};

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

#[test]
fn a_directory_stands_for_an_image_in_from_copy_and_mounts() {
    let k = Kiln::new();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("version"), "1.0\n").unwrap();
    let ctx = context(
        "ARG BASE\nFROM project AS p\nFROM $BASE\nCOPY --from=project /version /copied\n\
         COPY --from=p /version /staged\n\
         RUN --mount=from=project,target=/src cat /src/version > /mounted\n",
    );
    let named = format!("project={}", project.path().display());
    let dir = ctx.path().to_str().unwrap();
    let args = ["build", "named:1", "--build-context", &named, dir];
    let build = || k.build_offline("named:1", &["--build-context", &named], dir);
    assert_success(&build(), &args);
    for path in ["/copied", "/staged", "/mounted"] {
        assert_eq!(k.cat("named:1", path), "1.0\n", "{path}");
    }
    // Unchanged, the directory is the same image: every step hits the cache.
    let again = build();
    assert_success(&again, &args);
    assert_eq!(
        stderr(&again).matches("CACHED").count(),
        3,
        "{}",
        stderr(&again)
    );
    // Changed, the steps reading it run again.
    std::fs::write(project.path().join("version"), "2.0\n").unwrap();
    assert_success(&build(), &args);
    assert_eq!(k.cat("named:1", "/mounted"), "2.0\n");
}

#[test]
fn docker_images_and_oci_layouts_stand_for_an_image() {
    let k = Kiln::new();
    // An image exported as an OCI layout, then unpacked into a directory.
    let src = context("ARG BASE\nFROM $BASE\nRUN echo from-layout > /marker\n");
    let base = format!("BASE={}", k.base);
    let out_dir = tempfile::tempdir().unwrap();
    let archive = out_dir.path().join("img.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let dir = src.path().to_str().unwrap();
    let args = [
        "build",
        "-t",
        "layoutsrc:v1",
        "--network",
        "none",
        "--build-arg",
        &base,
        "-o",
        &dest,
        dir,
    ];
    assert_success(&k.cmd(&args), &args);
    let layout = out_dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let untar = std::process::Command::new("tar")
        .args([
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(untar.success());

    let ctx = context("FROM app\nRUN cat /marker > /seen\n");
    let dir = ctx.path().to_str().unwrap();
    let fresh = k.fresh_store();
    for (tag, value) in [
        (
            "fromlayout:1",
            format!("app=oci-layout://{}:v1", layout.display()),
        ),
        ("fromimage:1", format!("app=docker-image://{}", k.base)),
    ] {
        let args = [
            "build",
            "-t",
            tag,
            "--network",
            "none",
            "--build-context",
            &value,
            dir,
        ];
        let out = k.cmd_in(fresh.path(), &args);
        if tag == "fromimage:1" {
            // busybox has no /marker: the RUN fails, which shows the name meant busybox.
            assert!(!out.status.success());
            assert!(stderr(&out).contains("cat /marker"), "{}", stderr(&out));
        } else {
            assert_success(&out, &args);
            let run = k.cmd_in(
                fresh.path(),
                &["run", "--rm", "--network", "none", tag, "cat", "/seen"],
            );
            assert_eq!(stdout(&run), "from-layout\n");
        }
    }
    let missing_tag = format!("app=oci-layout://{}:v9", layout.display());
    let out = k.cmd_in(
        fresh.path(),
        &["build", "--build-context", &missing_tag, dir],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("v9"), "{}", stderr(&out));
}

#[test]
fn bad_build_contexts_are_refused_naming_them() {
    let k = Kiln::new();
    let ctx = context("FROM project\n");
    let dir = ctx.path().to_str().unwrap();
    let gone = tempfile::tempdir().unwrap().path().join("gone");
    let missing = format!("project={}", gone.display());
    let not_layout = format!("project=oci-layout://{}", ctx.path().display());
    for (value, expect) in [
        (missing.as_str(), gone.to_str().unwrap()),
        (not_layout.as_str(), "index.json"),
        ("project=docker-image://UPPER", "UPPER"),
        ("project", "NAME=VALUE"),
    ] {
        let out = k.cmd(&["build", "--build-context", value, dir]);
        assert!(!out.status.success(), "{value} was accepted");
        assert!(stderr(&out).contains(expect), "{value}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    // Nothing reached the store.
    let blobs = k.root.path().join("blobs/sha256");
    assert!(std::fs::read_dir(&blobs).map_or(true, |mut d| d.next().is_none()));
    // A stage of the same name would hide the context: refused.
    let staged = context("FROM scratch AS project\nFROM project\n");
    let here = format!("project={}", ctx.path().display());
    let out = k.cmd(&[
        "build",
        "--build-context",
        &here,
        staged.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a stage is named"),
        "{}",
        stderr(&out)
    );
}
