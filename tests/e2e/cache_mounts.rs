//! Cache mounts that travel (`--cache-to …,cache-mounts=true`, docs/cache-mounts.md): a second
//! store — a fresh CI machine — imports the `RUN --mount=type=cache` directory an earlier
//! build exported, and its package step downloads nothing the exporting build downloaded.
//!
//! The "package manager" is busybox `wget` filling a download cache only with what is absent,
//! from a package index the test serves on loopback and counts requests at. testkit's busybox
//! image has no pip or npm, and putting the host's Python or Node (with their shared libraries)
//! into a test image would copy hundreds of megabytes per run; what is measured — which files
//! the step fetches given the cache directory's content — is the same for a download cache
//! filled by `pip download` or `npm ci`, which also fetch only what their cache lacks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::harness::{Kiln, assert_success, stderr};

/// A loopback HTTP server of "packages" (`/<name>.tar`, a few KiB each) counting the GETs of
/// each path.
struct PackageIndex {
    port: u16,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl PackageIndex {
    fn start() -> PackageIndex {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Read the headers up to the blank line.
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if header.trim().is_empty() => break,
                        Ok(_) => {}
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                *counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let body = package_bytes(path.trim_start_matches('/'));
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        PackageIndex { port, requests }
    }

    /// The paths requested since the last call, with their counts.
    fn take(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

/// A package's content: 64 KiB of noise seeded by its name (incompressible, like a wheel).
fn package_bytes(name: &str) -> Vec<u8> {
    let mut state = name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |a, b| {
        (a ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A step that installs `$PKGS` through a download cache, fetching only what it lacks.
const DOCKERFILE: &str = r#"ARG BASE
FROM $BASE
ARG PKGS
ARG INDEX
RUN --network=host --mount=type=cache,id=pkgs,target=/var/cache/pkgs,sharing=locked \
    mkdir -p /opt/pkgs && for p in $PKGS; do \
      [ -f /var/cache/pkgs/$p.tar ] || { wget -q -O /var/cache/pkgs/$p.part $INDEX/$p.tar && mv /var/cache/pkgs/$p.part /var/cache/pkgs/$p.tar; } || exit 1; \
      cp /var/cache/pkgs/$p.tar /opt/pkgs/; \
    done
"#;

/// Builds `DOCKERFILE` installing `pkgs` in the store at `root`.
fn build(k: &Kiln, index: &PackageIndex, root: &Path, pkgs: &str, extra: &[&str]) -> String {
    let out = try_build(k, index, root, pkgs, extra);
    let args = [&["build", pkgs][..], extra].concat();
    assert_success(&out, &args);
    stderr(&out)
}

fn try_build(
    k: &Kiln,
    index: &PackageIndex,
    root: &Path,
    pkgs: &str,
    extra: &[&str],
) -> std::process::Output {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let base = format!("BASE={}", k.base);
    let pkgs = format!("PKGS={pkgs}");
    let url = format!("INDEX=http://127.0.0.1:{}", index.port);
    let mut args = vec![
        "build",
        "--progress=plain",
        "--allow",
        "network.host",
        "--build-arg",
        &base,
        "--build-arg",
        &pkgs,
        "--build-arg",
        &url,
    ];
    args.extend_from_slice(extra);
    let ctx = ctx.path().to_str().unwrap().to_owned();
    args.push(&ctx);
    k.cmd_in(root, &args)
}

fn fetched(requests: &BTreeMap<String, usize>) -> Vec<&str> {
    requests.keys().map(String::as_str).collect()
}

/// The cache mount directories (instances with content) in the store at `root`.
fn cache_mount_dirs(root: &Path) -> usize {
    std::fs::read_dir(root.join("cache-mounts"))
        .map(|dirs| {
            dirs.filter(|d| d.as_ref().unwrap().path().join("0").is_dir())
                .count()
        })
        .unwrap_or(0)
}

/// The cache document of the OCI layout `dir` (tag `latest`).
fn layout_document(dir: &Path) -> Value {
    let read = |digest: &str| -> Value {
        let path = dir.join("blobs/sha256").join(&digest["sha256:".len()..]);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    read(manifest["config"]["digest"].as_str().unwrap())
}

#[test]
fn an_imported_cache_mount_saves_every_download_the_exporter_made() {
    let k = Kiln::new();
    let index = PackageIndex::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", cache.display());
    let from = format!("type=local,src={}", cache.display());

    // The exporting build downloads three packages and exports its cache mount.
    build(&k, &index, k.root.path(), "a b c", &["--cache-to", &to]);
    assert_eq!(fetched(&index.take()), ["/a.tar", "/b.tar", "/c.tar"]);
    let document = layout_document(&cache);
    let mounts = document["cacheMounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{document}");
    assert_eq!(mounts[0]["id"], "pkgs");

    // A fresh store adding a package: the step runs (its key changed) and fetches only the
    // new package; the three others come from the imported cache mount.
    let fresh = k.fresh_store();
    build(
        &k,
        &index,
        fresh.path(),
        "a b c d",
        &["--cache-from", &from],
    );
    assert_eq!(fetched(&index.take()), ["/d.tar"]);

    // Without the mounts (cache-mounts=false), the same build downloads all four.
    let control = k.fresh_store();
    let no_mounts = format!("{from},cache-mounts=false");
    build(
        &k,
        &index,
        control.path(),
        "a b c d",
        &["--cache-from", &no_mounts],
    );
    assert_eq!(
        fetched(&index.take()),
        ["/a.tar", "/b.tar", "/c.tar", "/d.tar"]
    );

    // A full cache hit does not run the step, so nothing is imported: no cache directory,
    // no request.
    let hit = k.fresh_store();
    let out = build(&k, &index, hit.path(), "a b c", &["--cache-from", &from]);
    assert!(out.contains("CACHED"), "{out}");
    assert!(index.take().is_empty());
    assert_eq!(cache_mount_dirs(hit.path()), 0);

    // Over the size limit: a warning, the build goes on with an empty cache.
    let small = k.fresh_store();
    let limited = format!("{from},cache-mounts-max-size=64k");
    let out = build(
        &k,
        &index,
        small.path(),
        "a b c d",
        &["--cache-from", &limited],
    );
    assert!(out.contains("over the 65536-byte limit"), "{out}");
    assert_eq!(fetched(&index.take()).len(), 4);

    // A re-export from the importing store (its step hit, its mount came from the import)
    // passes the mount on unchanged.
    let again = dir.path().join("again");
    let to_again = format!("type=local,dest={},cache-mounts=true", again.display());
    build(
        &k,
        &index,
        hit.path(),
        "a b c",
        &["--cache-from", &from, "--cache-to", &to_again],
    );
    assert_eq!(
        layout_document(&again)["cacheMounts"],
        document["cacheMounts"]
    );
}

#[test]
fn a_tampered_cache_mount_blob_is_an_error_naming_it() {
    let k = Kiln::new();
    let index = PackageIndex::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", cache.display());
    build(&k, &index, k.root.path(), "a", &["--cache-to", &to]);
    index.take();
    let document = layout_document(&cache);
    let digest = document["cacheMounts"][0]["layer"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = cache.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let fresh = k.fresh_store();
    let from = format!("type=local,src={}", cache.display());
    let out = try_build(&k, &index, fresh.path(), "a b", &["--cache-from", &from]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&digest), "{err}");
    assert!(err.contains("\"pkgs\""), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Nothing half-made: no cache directory, no stray blob, nothing downloaded.
    assert_eq!(cache_mount_dirs(fresh.path()), 0);
    assert!(
        !fresh
            .path()
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..])
            .exists()
    );
    assert!(index.take().is_empty());
}

#[test]
fn cache_mounts_travel_through_the_registry() {
    let k = Kiln::new();
    let index = PackageIndex::start();
    let reference = format!("{}/ci/pkgs:buildcache", k.registry.addr());
    let to = format!("type=registry,ref={reference},cache-mounts=true");
    build(&k, &index, k.root.path(), "a b c", &["--cache-to", &to]);
    assert_eq!(index.take().len(), 3);
    // The mount's blob is one of the manifest's layers, so the registry keeps it.
    let manifest: Value =
        serde_json::from_slice(&kiln_testkit::skopeo_inspect_raw(&reference).unwrap()).unwrap();
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers.len(),
        2,
        "the RUN's layer and the cache mount: {manifest}"
    );

    let fresh = k.fresh_store();
    let from = format!("type=registry,ref={reference}");
    build(
        &k,
        &index,
        fresh.path(),
        "a b c d",
        &["--cache-from", &from],
    );
    assert_eq!(fetched(&index.take()), ["/d.tar"]);
    assert_eq!(cache_mount_dirs(fresh.path()), 1);
}

#[test]
fn a_cache_that_expands_past_the_limit_is_skipped_with_a_warning() {
    let k = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let ctx = tempfile::tempdir().unwrap();
    // 1 MiB of zeros: a blob of about a KiB that expands to a MiB.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nARG X\n\
         RUN --mount=type=cache,id=zeros,target=/c echo \"run $X: cache had $(ls /c | wc -l) files\" \
         && head -c 1048576 /dev/zero > /c/zeros\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let ctx = ctx.path().to_str().unwrap();
    let build = |root: &Path, x: &str, extra: &[&str]| {
        let x = format!("X={x}");
        let mut args = vec![
            "build",
            "--progress=plain",
            "--build-arg",
            &base,
            "--build-arg",
            &x,
        ];
        args.extend_from_slice(extra);
        args.push(ctx);
        let out = k.cmd_in(root, &args);
        assert_success(&out, &args);
        stderr(&out)
    };
    let to = format!("type=local,dest={},cache-mounts=true", cache.display());
    let out = build(k.root.path(), "1", &["--cache-to", &to]);
    assert!(out.contains("run 1: cache had 0 files"), "{out}");
    let size = layout_document(&cache)["cacheMounts"][0]["layer"]["size"]
        .as_u64()
        .unwrap();
    assert!(size < 64 << 10, "{size}");

    let limited = format!(
        "type=local,src={},cache-mounts-max-size=64k",
        cache.display()
    );
    let fresh = k.fresh_store();
    let out = build(fresh.path(), "2", &["--cache-from", &limited]);
    assert!(out.contains("expands past the 65536-byte limit"), "{out}");
    assert!(out.contains("run 2: cache had 0 files"), "{out}");

    let fresh = k.fresh_store();
    let from = format!("type=local,src={}", cache.display());
    let out = build(fresh.path(), "3", &["--cache-from", &from]);
    assert!(out.contains("run 3: cache had 1 files"), "{out}");
}

#[test]
fn the_export_reads_a_cache_only_once_no_other_build_uses_it() {
    let k = Kiln::new();
    let index = PackageIndex::start();
    let dir = tempfile::tempdir().unwrap();
    build(&k, &index, k.root.path(), "a", &[]);
    index.take();
    let mounts: Vec<_> = std::fs::read_dir(k.root.path().join("cache-mounts"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(mounts.len(), 1);
    // Another user (util-linux flock, as a concurrent `locked` build would) holds the cache.
    // `--no-fork`: the lock's holder is the process killed below, not a child outliving it.
    let mut holder = KillOnDrop(
        std::process::Command::new("flock")
            .args(["-x", "--no-fork"])
            .arg(mounts[0].join("0.lock"))
            .args(["sleep", "600"])
            .spawn()
            .unwrap(),
    );
    while std::process::Command::new("flock")
        .args(["-n", "-s"])
        .arg(mounts[0].join("0.lock"))
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A full cache hit (no RUN takes the cache) exporting it: the export waits for the lock.
    let cache = dir.path().join("cache");
    let to = format!("type=local,dest={},cache-mounts=true", cache.display());
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let base = format!("BASE={}", k.base);
    let url = format!("INDEX=http://127.0.0.1:{}", index.port);
    let mut exporter = super::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["build", "--allow", "network.host", "--build-arg", &base])
        .args([
            "--build-arg",
            "PKGS=a",
            "--build-arg",
            &url,
            "--cache-to",
            &to,
        ])
        .arg(ctx.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        exporter.try_wait().unwrap().is_none(),
        "the export must wait while another user holds the cache"
    );
    assert!(!cache.join("index.json").exists());
    // What the other user wrote while it held the cache is in the export.
    let instance = mounts[0].join("0");
    std::fs::write(instance.join("written-while-locked"), "x").unwrap();
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let out = exporter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = layout_document(&cache)["cacheMounts"][0]["layer"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = std::fs::read(cache.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap();
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob.as_slice()));
    for entry in tar.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    let has = |name: &str| names.iter().any(|n| n.trim_start_matches("./") == name);
    assert!(has("written-while-locked"), "{names:?}");
    assert!(has("a.tar"), "{names:?}");
    assert!(index.take().is_empty(), "the step was a cache hit");
}

/// A child process killed when the test ends, also when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
