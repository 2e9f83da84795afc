//! `kiln system df`, `kiln prune` and `kiln check` on real builds: the numbers add up, prune
//! keeps tagged images runnable and removes the rest (all of it, down to `--keep-storage`, or
//! only what `until` allows), and a corrupted blob is named by `kiln check`.

use std::path::Path;

use super::harness::{Kiln, assert_success, stdout};

/// Builds `dockerfile` (with `BASE` set) as `tag` from a fresh context.
fn build(k: &Kiln, tag: &str, dockerfile: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let base = format!("BASE={}", k.base);
    k.ok(&[
        "build",
        "-t",
        tag,
        "--build-arg",
        &base,
        ctx.path().to_str().unwrap(),
    ]);
}

/// A Dockerfile whose RUN writes `mb` MB of random data (a layer of that size).
fn random_layer(name: &str, mb: u32) -> String {
    format!(
        "ARG BASE\nFROM ${{BASE}}\nRUN head -c {mb}000000 /dev/urandom > /{name}\nCMD ls /{name}\n"
    )
}

/// One row of `kiln system df`: (total, active, size, reclaimable) in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    total: usize,
    active: usize,
    size: f64,
    reclaimable: f64,
}

fn parse_human(s: &str) -> f64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let n: f64 = s[..split].parse().unwrap();
    n * match &s[split..] {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => panic!("unit {u}"),
    }
}

fn df(k: &Kiln) -> std::collections::BTreeMap<String, Row> {
    let out = k.ok(&["system", "df"]);
    let mut rows = std::collections::BTreeMap::new();
    for line in out.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let n = words.len();
        assert!(n >= 6, "{out}");
        rows.insert(
            words[..n - 5].join(" "),
            Row {
                total: words[n - 5].parse().unwrap(),
                active: words[n - 4].parse().unwrap(),
                size: parse_human(words[n - 3]),
                reclaimable: parse_human(words[n - 2]),
            },
        );
    }
    rows
}

fn du(path: &Path) -> f64 {
    let out = std::process::Command::new("du")
        .args(["-s", "--block-size=1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.max(b) + 64.0 * 1024.0
}

#[test]
fn df_adds_up_and_prune_keeps_tagged_images_runnable() {
    let k = Kiln::new();
    build(&k, "keep", &random_layer("kept", 2));
    build(&k, "gone", &random_layer("dropped", 3));
    k.ok(&["rmi", "gone"]);

    let rows = df(&k);
    let images = rows["Images"];
    // busybox (pulled as a base) and `keep` are tagged; `gone`'s manifest is left untagged.
    assert_eq!((images.total, images.active), (3, 2), "{rows:?}");
    // The untagged image's 3 MB layer is reclaimable as the image's (each blob counts once).
    assert!(
        images.reclaimable > 2.9e6 && images.reclaimable < 3.5e6,
        "{rows:?}"
    );
    let blobs = rows["Images"].size + rows["Build cache"].size + rows["Unreferenced blobs"].size;
    assert!(
        close(blobs, du(&k.root.path().join("blobs")), 0.05),
        "{rows:?}"
    );
    let snapshots = rows["Snapshots"];
    assert!(close(
        snapshots.size,
        du(&k.root.path().join("snapshots")),
        0.05
    ));
    assert!(snapshots.total >= 3 && snapshots.active >= 2, "{rows:?}");
    assert!(
        snapshots.reclaimable > 2.9e6,
        "the dropped layer's snapshot: {rows:?}"
    );

    let verbose = k.ok(&["system", "df", "-v"]);
    assert!(
        verbose.contains("docker.io/library/keep:latest"),
        "{verbose}"
    );
    assert!(verbose.contains("<none>"), "{verbose}");
    assert!(verbose.contains("Build cache usage"), "{verbose}");

    // Default prune: build cache no tagged image needs, and garbage; untagged images stay.
    let out = k.ok(&["prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let after = df(&k);
    assert_eq!(after["Build cache"].size, 0.0, "{after:?}");
    assert_eq!(after["Images"].total, 3);

    // The tagged image's own steps are still cached (their records hold its layers).
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), random_layer("kept", 2)).unwrap();
    let base = format!("BASE={}", k.base);
    let out = k.cmd(&[
        "build",
        "-t",
        "keep",
        "--build-arg",
        &base,
        ctx.path().to_str().unwrap(),
    ]);
    assert_success(&out, &["rebuild keep"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CACHED"));

    let out = k.ok(&["prune", "--all", "-f"]);
    assert!(out.contains("1 untagged images"), "{out}");
    let after = df(&k);
    assert_eq!((after["Images"].total, after["Images"].active), (2, 2));
    assert_eq!(after["Images"].reclaimable, 0.0);
    assert_eq!(after["Snapshots"].reclaimable, 0.0, "{after:?}");
    assert_eq!(after["Unreferenced blobs"].total, 0);
    assert!(after["Images"].size > 2e6);

    // What stays runs, and the store is consistent.
    assert_eq!(k.ok(&["run", "--rm", "keep"]), "/kept\n");
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
}

#[test]
fn keep_storage_and_until_limit_what_prune_removes() {
    let k = Kiln::new();
    for (tag, mb) in [("a", 2), ("b", 2), ("c", 2)] {
        build(&k, tag, &random_layer(tag, mb));
    }
    for tag in ["a", "b", "c"] {
        k.ok(&["rmi", tag]);
    }
    // Everything was used just now: `until=1h` spares it all.
    let out = k.ok(&["prune", "--all", "--filter", "until=1h", "-f"]);
    assert!(out.contains("0 cache records, 0 untagged images"), "{out}");
    let bad = k.cmd(&["prune", "--filter", "since=1h", "-f"]);
    assert!(!bad.status.success());

    let rows = df(&k);
    let total: f64 = rows.values().map(|r| r.size).sum();
    // Keep all but about one layer (with its snapshot): the least recently used image goes.
    let keep = (total - 5e6).max(0.0) as u64;
    let out = k.ok(&["prune", "--all", "--keep-storage", &keep.to_string(), "-f"]);
    let after = df(&k);
    let remaining: f64 = after.values().map(|r| r.size).sum();
    assert!(remaining <= keep as f64 * 1.001, "{out}\n{after:?}");
    assert!(
        after["Images"].total >= 2,
        "stops once under the limit: {out}\n{after:?}"
    );
    let out = k.ok(&["prune", "--all", "-f"]);
    assert!(out.contains("Total reclaimed space"));
    let after = df(&k);
    assert_eq!(after["Images"].total, 1, "only busybox is left: {after:?}");
    assert_eq!(after["Build cache"].total, 0);
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
}

#[test]
fn check_names_a_corrupted_blob_and_a_rebuild_recovers() {
    let k = Kiln::new();
    let dockerfile = random_layer("data", 1);
    build(&k, "app", &dockerfile);
    assert!(k.ok(&["check"]).contains("the store is consistent"));

    // The top layer of `app`, found through names.json and its manifest.
    let root = k.root.path();
    let names: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("names.json")).unwrap()).unwrap();
    let manifest = names["docker.io/library/app:latest"]["manifest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = |d: &str| {
        root.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest)).unwrap()).unwrap();
    let layer = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bytes = std::fs::read(blob(&layer)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(blob(&layer), bytes).unwrap();

    let out = k.cmd(&["check"]);
    assert!(!out.status.success());
    let report = stdout(&out);
    assert!(
        report.contains(&format!("corrupt: blob {layer}: content hashes to")),
        "{report}"
    );
    // Repair removes the bad blob; the image needing it is then reported broken.
    let out = k.cmd(&["check", "--repair"]);
    assert!(!out.status.success());
    let report = stdout(&out);
    assert!(report.contains("(removed)"), "{report}");
    assert!(
        report.contains("image docker.io/library/app:latest")
            && report.contains(&format!("layer {layer} is missing")),
        "{report}"
    );
    // The cache record lost its layer, so a rebuild runs the step again and fixes the name.
    build(&k, "app", &dockerfile);
    assert_eq!(k.ok(&["run", "--rm", "app"]), "/data\n");
    let report = k.ok(&["check"]);
    assert!(report.contains("the store is consistent"), "{report}");
}

/// The explain records in the store: file name → the Dockerfile each names.
fn explain_records(k: &Kiln) -> std::collections::BTreeMap<String, String> {
    let dir = k.root.path().join("explain");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .map(|entry| {
                    let entry = entry.unwrap();
                    let record: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        record["dockerfile"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every `layer-variants/<layer>/<setting>.json` and the blob digest it names.
fn layer_variants(k: &Kiln) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    let Ok(layers) = std::fs::read_dir(k.root.path().join("layer-variants")) else {
        return found;
    };
    for layer in layers {
        for variant in std::fs::read_dir(layer.unwrap().path()).unwrap() {
            let path = variant.unwrap().path();
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            found.push((path, record["digest"].as_str().unwrap().to_owned()));
        }
    }
    found
}

fn has_blob(k: &Kiln, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").unwrap();
    k.root.path().join("blobs/sha256").join(hex).exists()
}

#[test]
fn prune_drops_explain_records_of_gone_dockerfiles_and_variants_of_gone_blobs() {
    let k = Kiln::new();
    let base = format!("BASE={}", k.base);
    let dockerfile = random_layer("data", 1);
    let kept_context = tempfile::tempdir().unwrap();
    std::fs::write(kept_context.path().join("Dockerfile"), &dockerfile).unwrap();
    let kept = kept_context.path().to_str().unwrap();
    // The same layer in zstd, then (a cache hit) in gzip: two variants of one layer; the zstd
    // build's image is then untagged, so only its cache record holds the zstd blob.
    k.ok(&[
        "build",
        "-q",
        "--compression",
        "zstd",
        "-t",
        "zst",
        "--build-arg",
        &base,
        kept,
    ]);
    k.ok(&["build", "-q", "-t", "gz", "--build-arg", &base, kept]);
    k.ok(&["rmi", "zst"]);
    let variants = layer_variants(&k);
    assert!(variants.len() >= 2, "{variants:?}");
    // A build from a context that is then deleted leaves records of a Dockerfile that is gone.
    build(&k, "other", &random_layer("other", 1));
    let before = explain_records(&k);
    let kept_dockerfile = std::fs::canonicalize(kept_context.path().join("Dockerfile")).unwrap();
    let kept_dockerfile = kept_dockerfile.to_str().unwrap();
    let (live, orphaned): (Vec<_>, Vec<_>) =
        before.values().partition(|d| d.as_str() == kept_dockerfile);
    assert!(!live.is_empty() && !orphaned.is_empty(), "{before:?}");

    let out = k.ok(&["prune", "-f"]);
    assert!(out.contains("deleted explain record"), "{out}");
    let after = explain_records(&k);
    assert_eq!(after.len(), live.len(), "{after:?}");
    assert!(after.values().all(|d| d == kept_dockerfile), "{after:?}");

    // `--all` removes the untagged zstd image and the cache records, so the zstd blob goes,
    // and its variant record with it; the gzip one, held by the tagged image, stays.
    let out = k.ok(&["prune", "-f", "--all"]);
    assert!(out.contains("deleted layer variant record"), "{out}");
    assert!(explain_records(&k).is_empty());
    let variants = layer_variants(&k);
    assert!(!variants.is_empty());
    for (path, digest) in &variants {
        assert!(
            has_blob(&k, digest),
            "{} names a missing blob",
            path.display()
        );
    }
    k.ok(&["check"]);
}
