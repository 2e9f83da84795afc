//! When the cache is not simply there: a missing import, a failing export, a registry behind
//! token auth, and a connection cut in the middle of a layer.

use std::path::Path;

use serde_json::Value;

use super::super::harness::{Kiln, assert_success, stderr};
use super::{SINGLE, build_json, context, ctx_path, from_import, of_type, ran};

#[test]
fn a_missing_import_warns_and_a_failed_export_fails_naming_the_ref() {
    let k = Kiln::new();
    let ctx = context(SINGLE, "x\n");
    let missing = format!("type=registry,ref={}/ci/none:nothing", k.registry.addr());
    let events = build_json(
        &k,
        k.root.path(),
        "w:1",
        &ctx_path(&ctx),
        &["--cache-from", &missing],
    );
    let warnings = of_type(&events, "warning");
    assert!(
        warnings.iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("ci/none:nothing not found")),
        "{warnings:?}"
    );
    // An image that is not a kiln cache (BuildKit's, or any image) is skipped with a warning.
    let not_cache = format!("type=registry,ref={}", k.base);
    let events = build_json(
        &k,
        k.root.path(),
        "w:2",
        &ctx_path(&ctx),
        &["--cache-from", &not_cache],
    );
    assert!(
        of_type(&events, "warning").iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("not a kiln build cache")),
        "{events:?}"
    );

    // Nothing listens on port 1 of loopback.
    let base = format!("BASE={}", k.base);
    let ctx = ctx_path(&ctx);
    let args = [
        "build",
        "--build-arg",
        &base,
        "--cache-to",
        "type=registry,ref=127.0.0.1:1/ci/app:cache",
        &ctx,
    ];
    let out = k.cmd(&args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cache 127.0.0.1:1/ci/app:cache"),
        "{}",
        stderr(&out)
    );
    // ignore-error=true turns it into a warning.
    let args = [
        "build",
        "--build-arg",
        &base,
        "--cache-to",
        "type=registry,ref=127.0.0.1:1/ci/app:cache,ignore-error=true",
        &ctx,
    ];
    let out = k.cmd(&args);
    assert_success(&out, &args);
    assert!(stderr(&out).contains("WARNING: cache export failed (ignored)"));

    // A bad value is refused before anything is built.
    let out = k.cmd(&["build", "--cache-to", "type=gha", &ctx]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not supported"), "{}", stderr(&out));
}

#[test]
fn a_cache_behind_token_auth_uses_the_docker_credentials() {
    let k = Kiln::new();
    let reg = kiln_testkit::TokenRegistry::start(&[("ci", "t0ken")]).unwrap();
    let cache = format!("{}/ci/app:cache", reg.registry.addr());
    let certs = tempfile::tempdir().unwrap();
    let no_credentials = tempfile::tempdir().unwrap();
    let with_credentials = tempfile::tempdir().unwrap();
    let login = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .env("DOCKER_CONFIG", with_credentials.path())
        .env("KILN_REGISTRY_CERTS_DIR", certs.path())
        .args(["login", "-u", "ci", "-p", "t0ken", &reg.registry.addr()])
        .output()
        .unwrap();
    assert_success(&login, &["login"]);
    let ctx = context(SINGLE, "auth\n");
    let ctx = ctx_path(&ctx);
    let base = format!("BASE={}", k.base);
    let run = |root: &Path, config: &Path, cache_flag: &str, value: &str| {
        let args = [
            "build",
            "-t",
            "authed",
            "--progress=rawjson",
            "--build-arg",
            &base,
            cache_flag,
            value,
            &ctx,
        ];
        crate::e2e::harness::kiln_command()
            .env("KILN_ROOT", root)
            .env("DOCKER_CONFIG", config)
            .env("KILN_REGISTRY_CERTS_DIR", certs.path())
            .args(args)
            .output()
            .unwrap()
    };
    let to = format!("type=registry,ref={cache}");

    // Without credentials the export is refused: an error naming the cache.
    let out = run(k.root.path(), no_credentials.path(), "--cache-to", &to);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("cache {cache}")), "{err}");
    assert!(err.contains("unauthorized"), "{err}");

    let out = run(k.root.path(), with_credentials.path(), "--cache-to", &to);
    assert_success(&out, &["build --cache-to (token auth)"]);

    // Importing without credentials is only a warning; with them every step is cached.
    let root_b = k.fresh_store();
    let out = run(root_b.path(), no_credentials.path(), "--cache-from", &to);
    assert_success(&out, &["build --cache-from (no credentials)"]);
    assert!(
        stderr(&out).contains("cannot import cache"),
        "{}",
        stderr(&out)
    );
    let root_c = k.fresh_store();
    let out = run(root_c.path(), with_credentials.path(), "--cache-from", &to);
    assert_success(&out, &["build --cache-from (token auth)"]);
    let events: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(ran(&events).is_empty(), "{events:?}");
    assert_eq!(from_import(&events).len(), 5);
}

#[test]
fn an_import_survives_a_connection_cut_mid_layer() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM $BASE\nRUN head -c 400000 /dev/urandom > /big\n";
    let ctx = context(dockerfile, "");
    let cache = format!("{}/ci/big:cache", k.registry.addr());
    build_json(
        &k,
        k.root.path(),
        "big:a",
        &ctx_path(&ctx),
        &["--cache-to", &format!("type=registry,ref={cache}")],
    );
    // The same registry behind a proxy that cuts the first connection after 200 kB.
    let proxy = kiln_testkit::FaultProxy::start(
        k.registry.port(),
        kiln_testkit::Fault::DropAfter {
            bytes: 200_000,
            times: 1,
        },
    )
    .unwrap();
    let through_proxy = format!("type=registry,ref={}/ci/big:cache", proxy.addr());
    let root_b = k.fresh_store();
    let b = build_json(
        &k,
        root_b.path(),
        "big:b",
        &ctx_path(&ctx),
        &["--cache-from", &through_proxy],
    );
    assert!(ran(&b).is_empty(), "{b:?}");
    assert_eq!(proxy.faults_injected(), 1);
    assert_eq!(
        k.image_id_in(root_b.path(), "big:b"),
        k.image_id_in(k.root.path(), "big:a")
    );
}
