//! Images whose layer list holds the same layer (diffID) more than once (issue 10): a `RUN`
//! that changes nothing but metadata, steps that write what is already there, pulled images
//! that repeat a layer. Each must build, run and be built upon, and every command that walks
//! an image's layers (save, load, push, pull, `-o type=local`, commit, check, df, prune, the
//! copying fallback for overlayfs) must take the repeat in its stride.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use kiln_image::Digest;

use super::containers::Cleanup;
use super::harness::{Kiln, assert_success, stderr, stdout};

/// The Dockerfile: the file is already executable, so `chmod +x` changes nothing and
/// its layer is byte for byte the COPY's.
const CHMOD_AFTER_COPY: &str = "ARG BASE
FROM $BASE
COPY entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
RUN echo after > /after
ENTRYPOINT [\"/entrypoint.sh\"]
";

/// A build context holding `Dockerfile` and an executable `entrypoint.sh`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let script = ctx.path().join("entrypoint.sh");
    std::fs::write(&script, "#!/bin/sh\necho entrypoint says \"$@\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    ctx
}

/// `kiln build -t TAG CTX` into the store at `root`, with `env` set.
fn build_in(k: &Kiln, root: &Path, env: &[(&str, &str)], tag: &str, ctx: &Path) -> Output {
    let base = format!("BASE={}", k.base);
    crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", root)
        .envs(env.iter().copied())
        .args(["build", "-t", tag, "--build-arg", &base])
        .arg(ctx)
        .output()
        .expect("run kiln")
}

fn build(k: &Kiln, tag: &str, ctx: &Path) {
    let out = build_in(k, k.root.path(), &[], tag, ctx);
    assert_success(&out, &["build", tag]);
}

/// The diffIDs of image `name` in the store at `root`, bottom first.
fn diff_ids_in(k: &Kiln, root: &Path, name: &str) -> Vec<String> {
    let out = k.cmd_in(root, &["inspect", name]);
    assert_success(&out, &["inspect", name]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

fn diff_ids(k: &Kiln, name: &str) -> Vec<String> {
    diff_ids_in(k, k.root.path(), name)
}

/// Asserts the image's diffIDs repeat exactly as `pattern` says: one letter per layer, bottom
/// first, equal letters for equal diffIDs ("abbc": the second and third are the same layer).
fn assert_layer_pattern(k: &Kiln, name: &str, pattern: &str) {
    let ids = diff_ids(k, name);
    assert_eq!(ids.len(), pattern.len(), "{name}: {ids:?}");
    let letters: Vec<char> = pattern.chars().collect();
    for i in 0..ids.len() {
        for j in 0..i {
            assert_eq!(
                ids[i] == ids[j],
                letters[i] == letters[j],
                "{name}: layers {j} and {i} of {ids:?} should follow {pattern}"
            );
        }
    }
}

#[test]
fn chmod_of_a_copied_executable_builds_runs_and_exports() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let ctx = context(CHMOD_AFTER_COPY);
    build(&k, "chmod", ctx.path());
    assert_layer_pattern(&k, "chmod", "abbc");
    let id = k.image_id("chmod");

    // It runs, and a container of it sees every layer.
    assert_eq!(
        k.ok(&["run", "--rm", "chmod", "hello"]),
        "entrypoint says hello\n"
    );
    let out = k.ok(&["run", "--rm", "--entrypoint", "cat", "chmod", "/after"]);
    assert_eq!(out, "after\n");

    // The rebuild hits the cache at every step (the two records name one layer) and gives the
    // same image.
    let out = build_in(&k, k.root.path(), &[], "chmod", ctx.path());
    assert_success(&out, &["rebuild"]);
    assert_eq!(k.image_id("chmod"), id);

    // Built upon, by a Dockerfile and by commit.
    let upon = context("FROM chmod\nRUN cat /after > /again\nRUN chmod +x /entrypoint.sh\n");
    build(&k, "upon", upon.path());
    assert_layer_pattern(&k, "upon", "abbcdb");
    k.ok(&[
        "run",
        "--name",
        "changer",
        "--entrypoint",
        "sh",
        "upon",
        "-c",
        "echo committed > /committed",
    ]);
    k.ok(&["commit", "changer", "committed"]);
    assert_layer_pattern(&k, "committed", "abbcdbe");
    let out = k.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "committed",
        "/after",
        "/again",
        "/committed",
    ]);
    assert_eq!(out, "after\nafter\ncommitted\n");

    // The final filesystem, exported.
    let dest = tempfile::tempdir().unwrap();
    let local = format!("type=local,dest={}", dest.path().display());
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["build", "-o", &local, "--build-arg"])
        .arg(format!("BASE={}", k.base))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out, &["build", "-o", "type=local"]);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("after")).unwrap(),
        "after\n"
    );
    let mode = std::fs::metadata(dest.path().join("entrypoint.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // save → load into an empty store: the archive holds the layer once and lists it twice.
    let saved = tempfile::tempdir().unwrap();
    let archive = saved.path().join("chmod.tar");
    k.ok(&["save", "-o", archive.to_str().unwrap(), "chmod"]);
    let listing = Command::new("tar")
        .args(["-tf"])
        .arg(&archive)
        .output()
        .unwrap();
    let repeated = diff_ids(&k, "chmod")[1].clone();
    let layer_digest = k.inspect("chmod")["Layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob_entry = format!("blobs/sha256/{}", &layer_digest["sha256:".len()..]);
    assert_eq!(
        stdout(&listing)
            .lines()
            .filter(|l| *l == blob_entry)
            .count(),
        1,
        "{}",
        stdout(&listing)
    );
    let other = k.fresh_store();
    let out = k.cmd_in(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_success(&out, &["load"]);
    assert_eq!(
        diff_ids_in(&k, other.path(), "chmod"),
        diff_ids(&k, "chmod")
    );
    let out = k.cmd_in(other.path(), &["run", "--rm", "chmod", "loaded"]);
    assert_success(&out, &["run", "loaded"]);
    assert_eq!(stdout(&out), "entrypoint says loaded\n");

    // push: the repeated blob is sent once; skopeo sees it listed twice; pulled back, it runs.
    let remote = format!("{}/chmod:1", k.registry.addr());
    k.ok(&["tag", "chmod", &remote]);
    let out = k.ok(&["push", &remote]);
    let short = layer_digest.trim_start_matches("sha256:");
    // Only outcome lines count: a loaded machine may also print a retry of the one upload.
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split(':')
                .next()
                .is_some_and(|d| !d.is_empty() && short.starts_with(d))
                && (l.ends_with(": Pushed") || l.ends_with(": Layer already exists"))
        })
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    let info = kiln_testkit::skopeo_inspect(&remote).unwrap();
    let layers = info["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert_eq!(layers[1], layers[2]);
    let pulled = k.fresh_store();
    let out = k.cmd_in(pulled.path(), &["run", "--rm", &remote, "pulled"]);
    assert_success(&out, &["run", "pulled"]);
    assert_eq!(stdout(&out), "entrypoint says pulled\n");

    // Pushed in another compression: three distinct layers are compressed, once each, and the
    // manifest still lists the repeated one twice.
    let zstd = format!("{}/chmod:zstd", k.registry.addr());
    k.ok(&["tag", "chmod", &zstd]);
    let out = k.ok(&["push", "--compression", "zstd", &zstd]);
    assert!(out.contains("Compressed 3 layers as zstd"), "{out}");
    let info = kiln_testkit::skopeo_inspect(&zstd).unwrap();
    let layers = info["Layers"].as_array().unwrap();
    assert_eq!((layers.len(), &layers[1]), (4, &layers[2]));
    let out = k.cmd_in(pulled.path(), &["run", "--rm", &zstd, "zstd"]);
    assert_success(&out, &["run", "zstd"]);
    assert_eq!(stdout(&out), "entrypoint says zstd\n");

    // The store's own views: df counts the layer and its snapshot once, check is content, and
    // prune keeps what the tagged images need.
    let df = k.ok(&["system", "df", "-v"]);
    let repeated_hex = &repeated["sha256:".len()..];
    assert_eq!(
        df.lines()
            .filter(|l| l.contains(&repeated_hex[..12]))
            .count(),
        1,
        "one snapshot line for the repeated layer: {df}"
    );
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
    k.ok(&["rm", "changer"]);
    k.ok(&["prune", "--all", "-f"]);
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "committed",
            "/committed"
        ]),
        "committed\n"
    );
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
}

#[test]
fn three_identical_layers_in_a_row_and_the_copying_fallback() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE
FROM $BASE
COPY entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
RUN chmod 755 /entrypoint.sh
RUN test -x /entrypoint.sh && echo after > /after
";
    let ctx = context(dockerfile);
    build(&k, "three", ctx.path());
    assert_layer_pattern(&k, "three", "abbbc");
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "three",
            "sh",
            "-c",
            "cat /after; /entrypoint.sh x"
        ]),
        "after\nentrypoint says x\n"
    );

    // Where overlayfs cannot be mounted (rootless on old kernels), the layers are copied
    // instead; the same Dockerfile builds and runs that way in a store of its own.
    let copied = k.fresh_store();
    let copy = [("KILN_OVERLAY", "copy")];
    let out = build_in(&k, copied.path(), &copy, "three", ctx.path());
    assert_success(&out, &["build", "KILN_OVERLAY=copy"]);
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", copied.path())
        .envs(copy)
        .args(["run", "--rm", "three", "cat", "/after"])
        .output()
        .unwrap();
    assert_success(&out, &["run", "KILN_OVERLAY=copy"]);
    assert_eq!(stdout(&out), "after\n");
    // The last layer holds a file the RUN wrote at its own time; those before are the same.
    assert_eq!(
        diff_ids_in(&k, copied.path(), "three")[..4],
        diff_ids(&k, "three")[..4],
        "copying gives the layers an overlay gives"
    );
}

#[test]
fn identical_layers_separated_by_a_different_one_keep_the_upper_ones_effect() {
    let k = Kiln::new();
    // Layer 1 writes /entrypoint.sh, layer 2 deletes it, layer 3 writes it again: the same tar
    // as layer 1. The file must exist afterwards (the higher copy decides), for a later RUN
    // and for a container.
    let dockerfile = "ARG BASE
FROM $BASE
COPY entrypoint.sh /entrypoint.sh
RUN rm /entrypoint.sh
COPY entrypoint.sh /entrypoint.sh
RUN /entrypoint.sh from-run > /seen
";
    let ctx = context(dockerfile);
    build(&k, "sep", ctx.path());
    assert_layer_pattern(&k, "sep", "abcbd");
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "sep",
            "sh",
            "-c",
            "cat /seen; /entrypoint.sh x"
        ]),
        "entrypoint says from-run\nentrypoint says x\n"
    );

    // Its filesystem as the source of `COPY --from`, of `RUN --mount=from=` and of a volume
    // filled at first use: each mounts the image's layers.
    let ctx = context(
        "ARG BASE
FROM sep AS src
FROM $BASE
COPY --from=src /seen /seen
RUN --mount=from=src,target=/m /m/entrypoint.sh from-mount > /mounted
",
    );
    build(&k, "user", ctx.path());
    assert_eq!(
        k.ok(&["run", "--rm", "user", "cat", "/seen", "/mounted"]),
        "entrypoint says from-run\nentrypoint says from-mount\n"
    );
    let _cleanup = Cleanup(&k);
    assert_eq!(
        k.ok(&[
            "run",
            "--rm",
            "-v",
            "filled:/etc",
            "sep",
            "sh",
            "-c",
            "grep -c ^root: /etc/passwd"
        ]),
        "1\n"
    );
}

/// Writes into the OCI layout at `layout` a copy of image `from` whose manifest and config
/// list its layers followed by `extra` (indexes into its own layer list), tagged `to`.
fn repeat_layers(layout: &Path, from: &str, to: &str, extra: &[usize]) {
    let read_json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob_path = |d: &str| layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    let write_blob = |v: &serde_json::Value| -> (String, u64) {
        let bytes = serde_json::to_vec(v).unwrap();
        let digest = Digest::of(&bytes).to_string();
        std::fs::write(blob_path(&digest), &bytes).unwrap();
        (digest, bytes.len() as u64)
    };
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == from)
        .unwrap()
        .clone();
    let mut manifest = read_json(&blob_path(entry["digest"].as_str().unwrap()));
    let mut config = read_json(&blob_path(manifest["config"]["digest"].as_str().unwrap()));
    for &i in extra {
        let layer = manifest["layers"][i].clone();
        manifest["layers"].as_array_mut().unwrap().push(layer);
        let diff_id = config["rootfs"]["diff_ids"][i].clone();
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(diff_id);
        if let Some(history) = config["history"].as_array_mut() {
            history.push(serde_json::json!({ "created_by": format!("repeat layer {i}") }));
        }
    }
    let (config_digest, config_size) = write_blob(&config);
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (manifest_digest, manifest_size) = write_blob(&manifest);
    let mut new_entry = entry;
    new_entry["digest"] = manifest_digest.into();
    new_entry["size"] = manifest_size.into();
    new_entry["annotations"]["org.opencontainers.image.ref.name"] = to.into();
    index["manifests"].as_array_mut().unwrap().push(new_entry);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn an_image_pulled_with_a_repeated_layer_runs_and_can_be_built_upon() {
    let k = Kiln::new();
    // busybox (b), a layer deleting /etc/passwd (w), then busybox again: the file is back.
    let layout = tempfile::tempdir().unwrap();
    kiln_testkit::busybox_oci_layout(layout.path(), "bww").unwrap();
    kiln_testkit::umoci_insert_whiteout(layout.path(), "bww", "/etc/passwd").unwrap();
    repeat_layers(layout.path(), "bww", "bwb", &[0]);
    let deleted = format!("{}/repeat:deleted", k.registry.addr());
    let repeated = format!("{}/repeat:bwb", k.registry.addr());
    kiln_testkit::skopeo_copy_oci_layout_to(layout.path(), "bww", &deleted).unwrap();
    kiln_testkit::skopeo_copy_oci_layout_to(layout.path(), "bwb", &repeated).unwrap();

    k.ok(&["pull", &deleted]);
    let out = k.cmd(&["pull", &repeated]);
    assert_success(&out, &["pull", &repeated]);
    assert_layer_pattern(&k, &repeated, "aba");
    // The repeated blob is fetched (here: found present) once, not once per listing.
    let busybox_layer = k.inspect(&repeated)["Layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = &busybox_layer["sha256:".len()..][..12];
    let progress = stderr(&out);
    assert_eq!(
        progress.lines().filter(|l| l.contains(short)).count(),
        1,
        "{progress}"
    );
    let test_passwd = "test -e /etc/passwd && echo present || echo absent";
    assert_eq!(
        k.ok(&["run", "--rm", &deleted, "sh", "-c", test_passwd]),
        "absent\n",
        "the whiteout layer deletes the file"
    );
    assert_eq!(
        k.ok(&["run", "--rm", &repeated, "sh", "-c", test_passwd]),
        "present\n",
        "the repeated layer above it brings it back"
    );

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {repeated}\nRUN grep -c root /etc/passwd > /count\nRUN cat /count\n"),
    )
    .unwrap();
    k.ok(&["build", "-t", "upon", ctx.path().to_str().unwrap()]);
    assert_layer_pattern(&k, "upon", "abac");
    assert_eq!(k.ok(&["run", "--rm", "upon", "cat", "/count"]), "1\n");
}
