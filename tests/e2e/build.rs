//! Building images: instructions, caching, multi-stage, files and whiteouts.

use super::harness::{Kiln, stderr, stdout, testdata};

#[test]
fn app_image_has_the_dockerfile_metadata_and_runs() {
    let k = Kiln::new();
    let log = k.build_ok(
        "app",
        "app:1",
        &["--build-arg", "VERSION=2.5", "-t", "app:latest"],
    );
    assert!(
        log.contains("version 2.5 in /srv/app"),
        "RUN output is shown:\n{log}"
    );
    assert!(
        log.contains("| 1000"),
        "RUN as USER 1000 prints its uid:\n{log}"
    );
    assert!(log.contains("exec form"), "{log}");

    let img = k.inspect("app:1");
    let cfg = &img["Config"];
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"APP_HOME=/srv/app"), "{env:?}");
    assert!(env.contains(&"APP_VERSION=2.5"), "{env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "the base image's PATH is kept: {env:?}"
    );
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["User"], "root");
    assert_eq!(
        cfg["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(cfg["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(cfg["Labels"]["com.example.name"], "app");
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    let layers = img["RootFS"]["Layers"].as_array().unwrap().len();
    // busybox + WORKDIR + COPY + the two RUNs that write files. The two echo RUNs change
    // nothing, so they add no layer (and the sandbox's mount points leave no trace).
    assert_eq!(layers, 5, "layers: {img}");
    let empty: Vec<bool> = img["History"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(
        empty.iter().filter(|e| !**e).count(),
        5,
        "history agrees with the layers"
    );
    let history = img["History"].as_array().unwrap();
    assert!(
        history.iter().any(|h| h["created_by"]
            .as_str()
            .unwrap_or("")
            .contains("COPY hello.txt")),
        "{history:?}"
    );
    assert_eq!(
        img["RepoTags"].as_array().unwrap().len(),
        2,
        "both -t names point at the image"
    );

    let out = k.ok(&["run", "--rm", "app:1"]);
    assert_eq!(
        out,
        "version 2.5 in /srv/app\nhello from the context\nuid=1000\n"
    );

    let images = k.ok(&["images"]);
    let header = images.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{images}");
    }
    let id = img["Id"].as_str().unwrap();
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("app ") && l.contains(" 1 ") && l.contains(&id[7..19])),
        "{images}"
    );
}

#[test]
fn rebuilding_unchanged_inputs_gives_the_same_image_and_changes_miss() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    let src = testdata("contexts/app");
    for f in ["Dockerfile", "hello.txt"] {
        std::fs::copy(src.join(f), ctx.path().join(f)).unwrap();
    }
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let build = |k: &Kiln| {
        let out = k.cmd(&["build", "-t", "cached", "--build-arg", &base, dir]);
        assert!(out.status.success(), "{}", stderr(&out));
        (k.image_id("cached"), stderr(&out))
    };
    let (first, _) = build(&k);
    let (second, log) = build(&k);
    assert_eq!(first, second, "same inputs, same image ID");
    let ran: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DONE") && !l.contains(" 1/"))
        .collect();
    assert!(
        ran.is_empty(),
        "every step after FROM is cached on the rebuild:\n{log}"
    );
    assert!(log.contains("CACHED"), "{log}");

    // The mtime alone does not matter...
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("hello.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(f);
    assert_eq!(build(&k).0, first, "touching a file keeps the cache");
    // ...the content does, and only from the COPY on.
    std::fs::write(ctx.path().join("hello.txt"), "changed\n").unwrap();
    let (third, log) = build(&k);
    assert_ne!(third, first);
    assert!(
        log.contains("COPY hello.txt .") && log.contains("DONE"),
        "{log}"
    );
    let out = k.ok(&["run", "--rm", "cached"]);
    assert!(out.contains("changed"), "{out}");

    // --no-cache runs everything again.
    let out = k.cmd(&[
        "build",
        "--no-cache",
        "-t",
        "cached",
        "--build-arg",
        &base,
        dir,
    ]);
    assert!(!stderr(&out).contains("CACHED"), "{}", stderr(&out));
}

#[test]
fn multistage_builds_only_what_the_target_needs() {
    let k = Kiln::new();
    let log = k.build_ok("multistage", "multi", &[]);
    assert!(
        !log.contains("this stage is not needed"),
        "the unused stage is skipped:\n{log}"
    );
    assert_eq!(k.ok(&["run", "--rm", "multi"]), "built in builder\n");
    let img = k.inspect("multi");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "FROM scratch + two COPY layers"
    );

    // --target picks an earlier stage.
    k.build_ok("multistage", "builder-only", &["--target", "builder"]);
    assert_eq!(
        k.ok(&["run", "--rm", "builder-only", "cat", "/out/artifact.txt"]),
        "built in builder\n"
    );
    // ...and the stage that fails fails when it is the target.
    let out = k.build("multistage", "unused", &["--target", "unused"]);
    assert!(!out.status.success());
    let out = k.build("multistage", "x", &["--target", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn copy_add_dockerignore_chown_chmod() {
    let k = Kiln::new();
    let log = k.build_ok("files", "files", &[]);
    assert!(log.contains("one.txt two.txt"), "{log}");
    let out = k.ok(&["run", "--rm", "files"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "one.txt two.txt",
        "ignored.txt is excluded by .dockerignore: {out}"
    );
    assert_eq!(lines[1], "1000:1000 640");
    assert_eq!(lines[2], "nested file");
    assert_eq!(lines[3], "from the archive", "ADD extracts a local tar.gz");
    assert_eq!(lines[4], "plain data, not an archive");
}

#[test]
fn deletions_become_whiteouts() {
    let k = Kiln::new();
    k.build_ok("whiteouts", "wh", &[]);
    let out = k.ok(&["run", "--rm", "wh"]);
    assert_eq!(
        out, "c\ngone-absent\nkeep\n",
        "a deleted file stays deleted and a replaced dir is opaque"
    );
}

#[test]
fn import_and_scratch_base() {
    let k = Kiln::new();
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("rootfs.tar");
    kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
    let id = k.ok(&["import", tar.to_str().unwrap(), "imported:v1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        k.ok(&["run", "--rm", "imported:v1", "echo", "imported ok"]),
        "imported ok\n"
    );
    let images = k.ok(&["images"]);
    assert!(images.contains("imported"), "{images}");
    k.ok(&["tag", "imported:v1", "other/name:v2"]);
    assert!(k.ok(&["images"]).contains("other/name"));
    k.ok(&["rmi", "imported:v1"]);
    let images = k.ok(&["images"]);
    assert!(
        !images.lines().any(|l| l.starts_with("imported ")),
        "{images}"
    );
    let out = k.cmd(&["rmi", "imported:v1"]);
    assert!(
        !out.status.success(),
        "removing a missing name fails: {}",
        stdout(&out)
    );
}
