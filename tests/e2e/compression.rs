//! Layer compression end to end: `kiln build --compression zstd`, images that skopeo, umoci and
//! `kiln run` accept, push/pull round trips, and `kiln push --compression` re-encoding each layer
//! once and reusing the result.

use std::path::Path;

use super::harness::{Kiln, assert_success, stderr, stdout};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A context whose COPY layer spans several gzip members (1 MiB chunks) and zstdmt jobs.
fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY big.txt /big.txt\nRUN echo built > /built.txt\n",
    )
    .unwrap();
    let mut big = String::new();
    let mut x: u64 = 1;
    while big.len() < 5_500_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        big.push_str(&format!("row {} {:x}\n", x % 977, x >> 44));
    }
    std::fs::write(ctx.path().join("big.txt"), &big).unwrap();
    ctx
}

fn build(k: &Kiln, ctx: &Path, tag: &str, extra: &[&str]) -> std::process::Output {
    let base = format!("BASE={}", k.base);
    let mut args = vec!["build", "-t", tag, "--build-arg", &base];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    k.cmd(&args)
}

/// The layer descriptors (media type, digest) of a manifest in `root`'s store.
fn stored_layers(root: &Path, manifest_digest: &str) -> Vec<(String, String)> {
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(root.join("blobs/sha256").join(hex)).unwrap();
    layers_of(&bytes)
}

fn layers_of(manifest: &[u8]) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_owned(),
                l["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn blob_head(root: &Path, digest: &str) -> Vec<u8> {
    let path = root
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    std::fs::read(path).unwrap()[..4].to_vec()
}

#[test]
fn zstd_build_runs_pushes_pulls_and_a_gzip_push_reencodes_once() {
    let k = Kiln::new();
    let ctx = context();
    let root = k.root.path();
    assert_success(
        &build(&k, ctx.path(), "zimg", &["--compression", "zstd"]),
        &["build --compression zstd"],
    );
    let manifest = k.inspect("zimg")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let layers = stored_layers(root, &manifest);
    assert_eq!(layers.len(), 3, "{layers:?}");
    // The base layer stays as pulled; the layers kiln wrote are zstd, and really are.
    assert_eq!(layers[0].0, GZIP);
    for (media_type, digest) in &layers[1..] {
        assert_eq!(media_type, ZSTD);
        assert_eq!(blob_head(root, digest), [0x28, 0xb5, 0x2f, 0xfd]);
    }

    let out = k.ok(&[
        "run",
        "--rm",
        "zimg",
        "sh",
        "-c",
        "cat /built.txt; wc -c < /big.txt",
    ]);
    let big_len = std::fs::metadata(ctx.path().join("big.txt")).unwrap().len();
    assert_eq!(out, format!("built\n{big_len}\n"));

    // Pushed as built: the registry serves the zstd media types and skopeo copies the image
    // (verifying every blob). umoci 0.4.7 (Debian's) refuses zstd layers outright ("blob is not
    // correct mediatype"), so the layers are checked with the zstd and tar CLIs instead; umoci
    // unpacks the gzip push below.
    let remote = format!("{}/comp/zimg:zstd", k.registry.addr());
    k.ok(&["tag", "zimg", &remote]);
    let out = k.ok(&["push", &remote]);
    assert!(!out.contains("Compressed"), "{out}");
    let served = layers_of(&kiln_testkit::skopeo_inspect_raw(&remote).unwrap());
    assert_eq!(served, layers);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    kiln_testkit::skopeo_copy_to_oci_layout(&remote, &layout, "z").unwrap();
    let copy_layer = layout
        .join("blobs/sha256")
        .join(layers[1].1.strip_prefix("sha256:").unwrap());
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc {} | tar -tvf -", copy_layer.display()))
        .output()
        .unwrap();
    assert_success(&listing, &["zstd -dc | tar -t"]);
    assert!(
        stdout(&listing).contains(&format!(" {big_len} ")) && stdout(&listing).contains("big.txt"),
        "{}",
        stdout(&listing)
    );

    // A pull into an empty store gets the same image and runs it.
    let other = k.fresh_store();
    assert_success(&k.cmd_in(other.path(), &["pull", &remote]), &["pull"]);
    let out = k.cmd_in(other.path(), &["run", "--rm", &remote, "cat", "/built.txt"]);
    assert_success(&out, &["run pulled"]);
    assert_eq!(stdout(&out), "built\n");
    assert_eq!(stored_layers(other.path(), &manifest), layers);

    // A gzip push re-encodes the two zstd layers (the base already is gzip), once.
    let gz_remote = format!("{}/comp/zimg:gzip", k.registry.addr());
    k.ok(&["tag", "zimg", &gz_remote]);
    let out = k.ok(&["push", "--compression", "gzip", &gz_remote]);
    assert!(out.contains("Compressed 2 layers as gzip-6"), "{out}");
    let gz_layers = layers_of(&kiln_testkit::skopeo_inspect_raw(&gz_remote).unwrap());
    assert_eq!(gz_layers.len(), 3);
    assert_eq!(gz_layers[0], layers[0]);
    for (media_type, digest) in &gz_layers[1..] {
        assert_eq!(media_type, GZIP);
        assert_eq!(blob_head(root, digest)[..2], [0x1f, 0x8b]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    kiln_testkit::skopeo_copy_to_oci_layout(&gz_remote, &layout, "g").unwrap();
    let bundle = tmp.path().join("bundle");
    kiln_testkit::umoci_unpack_oci_layout(&layout, "g", &bundle).unwrap();
    assert_eq!(
        std::fs::read(bundle.join("rootfs/big.txt")).unwrap(),
        std::fs::read(ctx.path().join("big.txt")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/built.txt")).unwrap(),
        "built\n"
    );
    let again = k.ok(&["push", "--compression", "gzip", &gz_remote]);
    assert!(
        !again.contains("Compressed"),
        "reused, not re-encoded: {again}"
    );
    assert!(!again.contains("Pushed"), "{again}");

    // The gzip image pulls and runs.
    let third = k.fresh_store();
    assert_success(
        &k.cmd_in(third.path(), &["pull", &gz_remote]),
        &["pull gzip"],
    );
    let out = k.cmd_in(
        third.path(),
        &["run", "--rm", &gz_remote, "cat", "/built.txt"],
    );
    assert_success(&out, &["run gzip"]);
    assert_eq!(stdout(&out), "built\n");

    // A default (gzip) rebuild hits the cache and reuses the gzip variants the push made.
    let out = build(&k, ctx.path(), "gimg", &[]);
    assert_success(&out, &["build gzip"]);
    assert!(stderr(&out).contains("CACHED"), "{}", stderr(&out));
    let gimg = k.inspect("gimg")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stored_layers(root, &gimg), gz_layers);
    // Same config: compression changes only the manifest.
    assert_eq!(k.image_id("gimg"), k.image_id("zimg"));

    // An explicit level that no stored blob has gives new blobs.
    assert_success(
        &build(
            &k,
            ctx.path(),
            "g1",
            &["--compression", "gzip", "--compression-level", "1"],
        ),
        &["build level 1"],
    );
    let g1 = k.inspect("g1")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let g1_layers = stored_layers(root, &g1);
    assert_eq!(g1_layers[0], layers[0]);
    assert_eq!(g1_layers[1].0, GZIP);
    assert_ne!(g1_layers[1], gz_layers[1]);
}

#[test]
fn uncompressed_layers_and_bad_settings() {
    let k = Kiln::new();
    let ctx = context();
    assert_success(
        &build(&k, ctx.path(), "raw", &["--compression", "uncompressed"]),
        &["build uncompressed"],
    );
    let manifest = k.inspect("raw")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let layers = stored_layers(k.root.path(), &manifest);
    assert_eq!(layers[1].0, "application/vnd.oci.image.layer.v1.tar");
    assert_eq!(
        k.inspect("raw")["RootFS"]["Layers"][1].as_str().unwrap(),
        layers[1].1,
        "an uncompressed layer's digest is its diffID"
    );

    for (flags, message) in [
        (
            &["--compression", "brotli"][..],
            "unknown compression \"brotli\"",
        ),
        (
            &["--compression", "zstd", "--compression-level", "23"],
            "zstd compression level 23 is out of range (1..=22)",
        ),
        (&["--compression-level", "10"], "gzip compression level 10"),
        (
            &["--compression", "uncompressed", "--compression-level", "3"],
            "needs gzip or zstd",
        ),
    ] {
        let out = build(&k, ctx.path(), "bad", flags);
        assert!(!out.status.success(), "{flags:?} succeeded");
        assert!(
            stderr(&out).contains(message),
            "{flags:?}: {}",
            stderr(&out)
        );
    }
    let out = k.cmd(&["push", "--compression-level", "3", "raw"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--compression-level needs --compression"),
        "{}",
        stderr(&out)
    );
}
