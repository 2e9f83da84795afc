//! A cache exported to an OCI layout directory (`type=local`) and imported from it.

use serde_json::Value;

use super::super::harness::{Kiln, assert_success, stderr};
use super::{SINGLE, build_json, context, ctx_path, from_import, manifest_of, ran};

#[test]
fn a_local_directory_cache_round_trips() {
    let k = Kiln::new();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache");
    let ctx_a = context(SINGLE, "local\n");
    build_json(
        &k,
        k.root.path(),
        "local:a",
        &ctx_path(&ctx_a),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", dest.display()),
        ],
    );
    // An OCI image layout whose index names the export `latest`.
    let layout: Value =
        serde_json::from_slice(&std::fs::read(dest.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );

    let root_b = k.fresh_store();
    let ctx_b = context(SINGLE, "local\n");
    let b = build_json(
        &k,
        root_b.path(),
        "local:b",
        &ctx_path(&ctx_b),
        &[
            "--cache-from",
            &format!("type=local,src={}", dest.display()),
        ],
    );
    assert!(ran(&b).is_empty(), "{b:?}");
    assert_eq!(from_import(&b).len(), 5);
    assert_eq!(
        k.image_id_in(root_b.path(), "local:b"),
        k.image_id_in(k.root.path(), "local:a")
    );
    // The plain progress says where a step came from.
    let base = format!("BASE={}", k.base);
    let root_c = k.fresh_store();
    let src = format!("type=local,src={}", dest.display());
    let ctx = ctx_path(&ctx_b);
    let args = [
        "build",
        "--progress=plain",
        "--build-arg",
        &base,
        "--cache-from",
        &src,
        &ctx,
    ];
    let out = k.cmd_in(root_c.path(), &args);
    assert_success(&out, &args);
    assert!(
        stderr(&out).contains(&format!("CACHED (from {}:latest)", dest.display())),
        "{}",
        stderr(&out)
    );

    // Another compression still takes every step from the cache: the imported gzip layers
    // are fetched and re-encoded once, nothing runs.
    let root_d = k.fresh_store();
    let d = build_json(
        &k,
        root_d.path(),
        "local:zstd",
        &ctx_path(&ctx_b),
        &["--compression", "zstd", "--cache-from", &src],
    );
    assert!(ran(&d).is_empty(), "{d:?}");
    assert_eq!(from_import(&d).len(), 5);
    let manifest = manifest_of(root_d.path(), "local:zstd");
    let layers = manifest["layers"].as_array().unwrap();
    assert!(
        layers[1..]
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{manifest}"
    );
}
