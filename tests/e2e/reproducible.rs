//! Reproducible builds (`SOURCE_DATE_EPOCH`, issue 14): two clean builds of the same Dockerfile
//! and context, on two stores, from two context directories, at two times, give the same
//! manifest, the same `--output` tars and the same `kiln save` archive; another epoch gives
//! another image; layer mtimes are clamped to the epoch (older ones kept); a malformed epoch is
//! an error before any step runs.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::harness::{Kiln, assert_success, stderr};

const EPOCH: u64 = 1_700_000_000;
/// Older than [`EPOCH`]: kept as it is in the layer.
const OLD_MTIME: i64 = 1_000_000;

/// COPY only: the context's files, one of them older than the epoch.
const COPY_ONLY: &str = "ARG BASE\nFROM $BASE\nCOPY . /app/\nENV GREETING=hi\nLABEL a=b\n";
/// COPY, WORKDIR and RUN steps whose commands are deterministic (their files only get the
/// time they ran at, which the epoch clamps).
const WITH_RUN: &str = "ARG BASE\nFROM $BASE\nCOPY . /app/\nWORKDIR /work/dir\n\
    RUN echo built > /work/dir/out && mkdir -p /var/made && cp /app/new.txt /var/made/ \
    && rm /app/remove-me\nCMD [\"cat\", \"/work/dir/out\"]\n";

/// A context directory `name` under `parent` with the same content whatever the directory:
/// files get the current time except `old.txt`.
fn context(parent: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.join("new.txt"), "new\n").unwrap();
    std::fs::write(dir.join("sub/nested.txt"), "nested\n").unwrap();
    std::fs::write(dir.join("remove-me"), "x\n").unwrap();
    std::fs::write(dir.join("old.txt"), "old\n").unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(OLD_MTIME as u64);
    std::fs::File::options()
        .write(true)
        .open(dir.join("old.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    dir
}

/// What one build left behind: its manifest digest and its exported archives.
struct Built {
    manifest: String,
    oci: Vec<u8>,
    docker: Vec<u8>,
    fs_tar: Vec<u8>,
    saved: Vec<u8>,
}

fn kiln_in(root: &Path, epoch_env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = crate::e2e::harness::kiln_command();
    cmd.env("KILN_ROOT", root).env_remove("SOURCE_DATE_EPOCH");
    if let Some(epoch) = epoch_env {
        cmd.env("SOURCE_DATE_EPOCH", epoch);
    }
    cmd.args(args).output().expect("run kiln")
}

/// Builds `ctx` into the store at `root` as `repro:1`, with the epoch as a build arg or from
/// the environment, writing every kind of archive; then `kiln save`s it.
fn build(k: &Kiln, root: &Path, ctx: &Path, epoch: &str, from_env: bool) -> Built {
    let out_dir = tempfile::tempdir().unwrap();
    let o = |name: &str| out_dir.path().join(name).to_str().unwrap().to_owned();
    let base = format!("BASE={}", k.base);
    let epoch_arg = format!("SOURCE_DATE_EPOCH={epoch}");
    let (oci, docker, fs_tar, meta) = (
        format!("type=oci,dest={}", o("oci.tar")),
        format!("type=docker,dest={}", o("docker.tar")),
        format!("type=tar,dest={}", o("fs.tar")),
        o("meta.json"),
    );
    let mut args = vec!["build", "-t", "repro:1", "--build-arg", &base];
    if !from_env {
        args.extend(["--build-arg", &epoch_arg]);
    }
    args.extend(["--output", &oci, "--output", &docker, "--output", &fs_tar]);
    args.extend(["--metadata-file", &meta, ctx.to_str().unwrap()]);
    let out = kiln_in(root, from_env.then_some(epoch), &args);
    assert_success(&out, &args);
    // The engine reads it whether or not an ARG declares it: never "unused".
    assert!(!stderr(&out).contains("not consumed"), "{}", stderr(&out));
    let saved = o("saved.tar");
    let out = kiln_in(root, None, &["save", "-o", &saved, "repro:1"]);
    assert_success(&out, &["save"]);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let read = |name: &str| std::fs::read(o(name)).unwrap();
    Built {
        manifest: meta["containerimage.digest"].as_str().unwrap().to_owned(),
        oci: read("oci.tar"),
        docker: read("docker.tar"),
        fs_tar: read("fs.tar"),
        saved: read("saved.tar"),
    }
}

/// Two clean builds of `dockerfile`: different stores, context paths and times, the epoch once
/// as a build arg and once from the environment.
fn two_clean_builds(dockerfile: &str) -> (Kiln, Built, Built) {
    let k = Kiln::new();
    let parent = tempfile::tempdir().unwrap();
    let first = build(
        &k,
        k.root.path(),
        &context(parent.path(), "one", dockerfile),
        &EPOCH.to_string(),
        false,
    );
    // The second build's files and steps are at least a second younger.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let other = k.fresh_store();
    let second = build(
        &k,
        other.path(),
        &context(parent.path(), "somewhere/else/two", dockerfile),
        &EPOCH.to_string(),
        true,
    );
    (k, first, second)
}

fn assert_identical(a: &Built, b: &Built) {
    assert_eq!(a.manifest, b.manifest, "manifest digests");
    for (what, x, y) in [
        ("--output type=oci", &a.oci, &b.oci),
        ("--output type=docker", &a.docker, &b.docker),
        ("--output type=tar", &a.fs_tar, &b.fs_tar),
        ("kiln save", &a.saved, &b.saved),
    ] {
        assert!(
            x == y,
            "{what} archives differ ({} and {} bytes)",
            x.len(),
            y.len()
        );
    }
}

/// A tar entry: name, mtime, content (empty but for regular files).
type Entry = (String, u64, Vec<u8>);

/// The entries of a tar, in order.
fn tar_entries(bytes: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mtime = entry.header().mtime().unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        out.push((name, mtime, data));
    }
    out
}

/// The OCI archive's image: its config and its layers' tar entries, bottom first.
fn image_of(oci: &[u8]) -> (serde_json::Value, Vec<Vec<Entry>>) {
    let files: std::collections::BTreeMap<String, Vec<u8>> = tar_entries(oci)
        .into_iter()
        .map(|(name, _, data)| (name, data))
        .collect();
    let blob = |digest: &serde_json::Value| {
        let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
        files[&format!("blobs/sha256/{hex}")].clone()
    };
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
    // With buildx's default provenance the archive holds an index: its first entry is the
    // image (the second, the attestation manifest).
    if manifest.get("manifests").is_some() {
        manifest = serde_json::from_slice(&blob(&manifest["manifests"][0]["digest"])).unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let gz = blob(&l["digest"]);
            // A gzip member with no name, comment or extra field (FLG 0) and no time.
            assert_eq!(gz[..2], [0x1f, 0x8b], "{l}");
            assert_eq!(gz[3], 0, "gzip flags of {l}");
            assert_eq!(gz[4..8], [0, 0, 0, 0], "gzip mtime of {l}");
            let mut tar = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar)
                .unwrap();
            tar_entries(&tar)
        })
        .collect();
    (config, layers)
}

#[test]
fn two_clean_copy_only_builds_give_the_same_bytes() {
    let (_k, a, b) = two_clean_builds(COPY_ONLY);
    assert_identical(&a, &b);
}

#[test]
fn two_clean_builds_with_deterministic_runs_give_the_same_bytes() {
    let (k, a, b) = two_clean_builds(WITH_RUN);
    assert_identical(&a, &b);
    // The image runs, and its RUN step did write what the test expects.
    let out = kiln_in(k.root.path(), None, &["run", "--rm", "repro:1"]);
    assert_success(&out, &["run"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "built\n");
}

#[test]
fn layer_times_are_clamped_to_the_epoch_and_older_ones_kept() {
    let (_k, a, _) = two_clean_builds(WITH_RUN);
    let (config, layers) = image_of(&a.oci);
    let epoch_text = "2023-11-14T22:13:20Z";
    assert_eq!(config["created"], epoch_text);
    let history = config["history"].as_array().unwrap();
    // busybox's own entry keeps its time; every entry this build added has the epoch.
    assert_eq!(history[0]["created"], "1970-01-01T00:00:00Z");
    assert!(history.len() > 2, "{config}");
    for entry in &history[1..] {
        assert_eq!(entry["created"], epoch_text, "{entry}");
    }
    // The layers the build wrote (above busybox's): nothing newer than the epoch, and the
    // context's old file kept its time.
    let built = &layers[1..];
    assert_eq!(built.len(), 3, "COPY, WORKDIR and RUN layers");
    let mut clamped = 0;
    for (name, mtime, _) in built.iter().flatten() {
        assert!(*mtime <= EPOCH, "{name} has mtime {mtime}");
        if name == "app/old.txt" {
            assert_eq!(*mtime, OLD_MTIME as u64);
        } else if *mtime == EPOCH {
            clamped += 1;
        }
    }
    let copy = &built[0];
    assert!(
        copy.iter()
            .any(|(n, t, _)| n == "app/old.txt" && *t == OLD_MTIME as u64)
    );
    assert!(
        copy.iter()
            .any(|(n, t, _)| n == "app/new.txt" && *t == EPOCH)
    );
    let run = &built[2];
    assert!(
        run.iter()
            .any(|(n, t, d)| n == "work/dir/out" && *t == EPOCH && d == b"built\n")
    );
    assert!(clamped >= 5, "only {clamped} entries were clamped");
    // The `type=tar` filesystem: the same rule.
    for (name, mtime, _) in tar_entries(&a.fs_tar) {
        assert!(
            mtime <= EPOCH,
            "{name} in the filesystem tar has mtime {mtime}"
        );
    }
}

#[test]
fn another_epoch_gives_another_image_and_never_the_first_ones_layers() {
    let k = Kiln::new();
    let parent = tempfile::tempdir().unwrap();
    let ctx = context(parent.path(), "ctx", WITH_RUN);
    let first = build(&k, k.root.path(), &ctx, &EPOCH.to_string(), false);
    // Same store, same context: only the epoch differs, so no step may be taken from the first
    // build's cache, and every layer carries the new time.
    let later = EPOCH + 86_400;
    let second = build(&k, k.root.path(), &ctx, &later.to_string(), false);
    assert_ne!(first.manifest, second.manifest);
    assert_ne!(first.fs_tar, second.fs_tar);
    let (config, layers) = image_of(&second.oci);
    assert_eq!(config["created"], "2023-11-15T22:13:20Z");
    let copy = &layers[1];
    assert!(
        copy.iter()
            .any(|(n, t, _)| n == "app/new.txt" && *t == later)
    );
    let run = &layers[3];
    assert!(
        run.iter()
            .any(|(n, t, _)| n == "work/dir/out" && *t == later)
    );
    // And the first epoch again is a cache hit giving the first image back.
    let again = build(&k, k.root.path(), &ctx, &EPOCH.to_string(), false);
    assert_identical(&first, &again);
    // Without an epoch the image has the build's own time, not the epoch.
    let base = format!("BASE={}", k.base);
    let args = [
        "build",
        "-t",
        "plain",
        "--build-arg",
        &base,
        ctx.to_str().unwrap(),
    ];
    let out = kiln_in(k.root.path(), None, &args);
    assert_success(&out, &args);
    let out = kiln_in(k.root.path(), None, &["inspect", "plain"]);
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let created = inspect[0]["Created"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!created.starts_with("2023-11-1"), "{inspect}");
}

#[test]
fn a_malformed_epoch_fails_before_any_step_and_names_its_origin() {
    let k = Kiln::new();
    let parent = tempfile::tempdir().unwrap();
    let ctx = context(parent.path(), "ctx", WITH_RUN);
    let base = format!("BASE={}", k.base);
    let ctx_arg = ctx.to_str().unwrap();
    for (value, from_env) in [
        ("-1", false),
        ("1.5", false),
        ("yesterday", true),
        ("12 ", true),
    ] {
        let epoch_arg = format!("SOURCE_DATE_EPOCH={value}");
        let mut args = vec!["build", "-t", "bad", "--build-arg", &base];
        if !from_env {
            args.extend(["--build-arg", &epoch_arg]);
        }
        args.push(ctx_arg);
        let out = kiln_in(k.root.path(), from_env.then_some(value), &args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{value:?} was accepted: {err}");
        let origin = if from_env {
            "environment variable"
        } else {
            "build arg"
        };
        assert!(
            err.contains(&format!(
                "{origin} SOURCE_DATE_EPOCH={value:?} is not a valid time"
            )),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // Nothing ran: no step was reported, and nothing was named.
        assert!(!err.contains("stage-0"), "{err}");
        let out = kiln_in(k.root.path(), None, &["inspect", "bad"]);
        assert!(!out.status.success());
    }
    // The build arg wins over a malformed environment variable.
    let args = [
        "build",
        "-t",
        "good",
        "--build-arg",
        &base,
        "--build-arg",
        "SOURCE_DATE_EPOCH=5",
        ctx_arg,
    ];
    let out = kiln_in(k.root.path(), Some("garbage"), &args);
    assert_success(&out, &args);
    let out = kiln_in(k.root.path(), None, &["inspect", "good"]);
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect[0]["Created"], "1970-01-01T00:00:05Z", "{inspect}");
}

#[test]
fn check_warns_about_what_makes_a_reproducible_build_differ() {
    let k = Kiln::new();
    let parent = tempfile::tempdir().unwrap();
    let dockerfile = "ARG BASE=busybox\nFROM $BASE\nADD https://127.0.0.1:9/file /file\n\
        COPY --from=127.0.0.1:9/tools:1 /bin/tool /bin/\n";
    let ctx = context(parent.path(), "ctx", dockerfile);
    let ctx = ctx.to_str().unwrap();
    let base = format!("BASE={}", k.base);
    let epoch = "SOURCE_DATE_EPOCH=0";
    let args = [
        "build",
        "--check",
        "--build-arg",
        &base,
        "--build-arg",
        epoch,
        ctx,
    ];
    let out = kiln_in(k.root.path(), None, &args);
    assert_success(&out, &args);
    let err = stderr(&out);
    for (rule, line) in [
        ("UnpinnedImage", "Dockerfile:2"),
        ("RemoteAddWithoutChecksum", "Dockerfile:3"),
        ("UnpinnedImage", "Dockerfile:4"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("WARNING: {rule}: "))),
            "{rule}: {err}"
        );
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(
        err.contains("docs/reproducible-builds.md#unpinnedimage"),
        "{err}"
    );
    assert!(err.contains("3 warnings have been found"), "{err}");
    // From the environment too; and the base pinned by digest by a build arg is fine.
    // (The check looks at the words only: no image is resolved.)
    let repo = k.base.rsplit_once(':').unwrap().0;
    let pinned = format!("BASE={repo}@sha256:{}", "0".repeat(64));
    let args = ["build", "--check", "--build-arg", &pinned, ctx];
    let out = kiln_in(k.root.path(), Some("0"), &args);
    let err = stderr(&out);
    assert!(err.contains("2 warnings have been found"), "{err}");
    assert!(!err.contains("Dockerfile:2"), "{err}");
    // A build without an epoch does not ask to be reproducible: no such warnings.
    let args = ["build", "--check", "--build-arg", &base, ctx];
    let out = kiln_in(k.root.path(), None, &args);
    let err = stderr(&out);
    assert!(
        !err.contains("UnpinnedImage") && !err.contains("RemoteAdd"),
        "{err}"
    );
}

/// Two stages, a `COPY --link` (keyed without its parent) and a `COPY --from` of a stage (whose
/// definition key an export carries): every kind of key the epoch must be part of.
const STAGES: &str = "ARG BASE\nFROM $BASE AS tools\nRUN echo tool > /tool\n\
    FROM $BASE\nCOPY --link new.txt /linked/\nCOPY --from=tools /tool /tool\n\
    RUN cat /tool > /out\n";

/// Builds `ctx` into a fresh store with `epoch`, importing (and exporting) a local cache.
fn build_with_cache(
    k: &Kiln,
    ctx: &Path,
    epoch: u64,
    cache: &Path,
    export: bool,
) -> (String, String, Vec<u8>) {
    let store = k.fresh_store();
    let out_dir = tempfile::tempdir().unwrap();
    let oci = out_dir.path().join("oci.tar");
    let base = format!("BASE={}", k.base);
    let epoch_arg = format!("SOURCE_DATE_EPOCH={epoch}");
    let from = format!("type=local,src={}", cache.display());
    let to = format!("type=local,dest={},mode=max", cache.display());
    let output = format!("type=oci,dest={}", oci.display());
    let meta = out_dir.path().join("meta.json");
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "-t",
        "staged",
        "--build-arg",
        &base,
    ];
    args.extend(["--build-arg", &epoch_arg, "--output", &output]);
    args.extend(["--metadata-file", meta.to_str().unwrap()]);
    if cache.join("index.json").exists() {
        args.extend(["--cache-from", &from]);
    }
    if export {
        args.extend(["--cache-to", &to]);
    }
    args.push(ctx.to_str().unwrap());
    let out = kiln_in(store.path(), None, &args);
    assert_success(&out, &args);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    (
        meta["containerimage.digest"].as_str().unwrap().to_owned(),
        stderr(&out),
        std::fs::read(&oci).unwrap(),
    )
}

#[test]
fn a_shared_cache_never_hands_a_build_layers_of_another_epoch() {
    let k = Kiln::new();
    let parent = tempfile::tempdir().unwrap();
    let ctx = context(parent.path(), "ctx", STAGES);
    let cache = parent.path().join("cache");
    let (first, log, _) = build_with_cache(&k, &ctx, EPOCH, &cache, true);
    assert!(!log.contains("CACHED"), "{log}");
    // Another machine, another epoch: nothing comes from the cache, and every layer it writes
    // has the new time.
    let later = EPOCH + 3_600;
    let (second, log, oci) = build_with_cache(&k, &ctx, later, &cache, false);
    assert_ne!(first, second);
    let steps_cached = log.lines().filter(|l| l.contains("CACHED")).count();
    assert_eq!(steps_cached, 0, "{log}");
    let (_, layers) = image_of(&oci);
    let linked = layers
        .iter()
        .flatten()
        .find(|(n, ..)| n == "linked/new.txt");
    assert_eq!(linked.map(|(_, t, _)| *t), Some(later));
    let tool = layers.iter().flatten().find(|(n, ..)| n == "tool");
    assert_eq!(tool.map(|(_, t, _)| *t), Some(later));
    // A third machine with the first epoch takes every step from the cache and gets the first
    // image.
    let (third, log, _) = build_with_cache(&k, &ctx, EPOCH, &cache, false);
    assert_eq!(first, third);
    assert!(log.contains("CACHED (from"), "{log}");
    // Only the FROM lines (position 1) report DONE: every other step was a hit.
    let ran = log
        .lines()
        .filter(|l| l.contains("] DONE") && !l.contains(" 1/"))
        .count();
    assert_eq!(ran, 0, "{log}");
}
