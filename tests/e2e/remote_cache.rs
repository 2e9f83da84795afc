//! `--cache-to` / `--cache-from`: a build cache shared through the real registry (and an OCI
//! layout directory). A second store — a second CI machine — builds the same Dockerfile from a
//! copy of the context at another path with every step taken from the exported cache, fetching
//! only the layers it needs, and gets the same image.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::harness::{Kiln, assert_success, stderr};

const CACHE_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";

/// Single stage: every RUN writes something random, so a step that ran again cannot give the
/// same image.
const SINGLE: &str = r#"ARG BASE
FROM $BASE
RUN head -c 32 /dev/urandom > /seed
COPY app.txt /app/
ENV MODE=release
RUN cat /app/app.txt /seed > /app/out && head -c 8 /dev/urandom >> /app/out
WORKDIR /app
RUN touch /app/empty-dir-marker && rm /app/empty-dir-marker
"#;

/// Two stages: `tools` makes a big layer and a small one; `app` copies the small file.
const MULTI: &str = r#"ARG BASE
FROM $BASE AS tools
RUN head -c 200000 /dev/urandom > /big
RUN head -c 16 /dev/urandom > /tool
FROM $BASE AS app
COPY --from=tools /tool /tool
RUN cat /tool > /copied && head -c 16 /dev/urandom > /rand
"#;

/// A context directory holding `dockerfile` and `app.txt`, under a directory of its own so
/// two copies have different paths.
fn context(dockerfile: &str, app: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("some/where/ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.join("app.txt"), app).unwrap();
    dir
}

fn ctx_path(dir: &tempfile::TempDir) -> String {
    dir.path()
        .join("some/where/ctx")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Builds `ctx` in the store at `root` with a JSON progress stream; returns the events.
fn build_json(k: &Kiln, root: &Path, tag: &str, ctx: &str, extra: &[&str]) -> Vec<Value> {
    let base = format!("BASE={}", k.base);
    let mut args = vec![
        "build",
        "-t",
        tag,
        "--progress=rawjson",
        "--build-arg",
        &base,
    ];
    args.extend_from_slice(extra);
    args.push(ctx);
    let out = k.cmd_in(root, &args);
    assert_success(&out, &args);
    stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The texts of the steps that ran (FROM is always reported as started: it resolves the base).
fn ran(events: &[Value]) -> Vec<String> {
    of_type(events, "step.started")
        .iter()
        .filter(|e| e["step"]["position"] != 1)
        .map(|e| e["step"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The texts of the steps taken from an imported cache.
fn from_import(events: &[Value]) -> Vec<String> {
    of_type(events, "step.cached")
        .iter()
        .filter(|e| e.get("source").is_some())
        .map(|e| e["step"]["text"].as_str().unwrap().to_owned())
        .collect()
}

fn image_id(k: &Kiln, root: &Path, name: &str) -> String {
    let out = k.cmd_in(root, &["inspect", name]);
    assert_success(&out, &["inspect", name]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["Id"].as_str().unwrap().to_owned()
}

/// The layer digests of the image `name` in the store at `root`.
fn layers_of(root: &Path, name: &str) -> Vec<String> {
    digests(&manifest_of(root, name)["layers"])
}

/// The manifest of the image `name` in the store at `root`.
fn manifest_of(root: &Path, name: &str) -> Value {
    let names: Value =
        serde_json::from_slice(&std::fs::read(root.join("names.json")).unwrap()).unwrap();
    let full = names
        .as_object()
        .unwrap()
        .iter()
        .find(|(n, _)| n.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no {name} in {names}"))
        .1["manifest"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_json::from_slice(
        &std::fs::read(root.join("blobs/sha256").join(&full["sha256:".len()..])).unwrap(),
    )
    .unwrap()
}

fn digests(layers: &Value) -> Vec<String> {
    layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn has_blob(root: &Path, digest: &str) -> bool {
    root.join("blobs/sha256")
        .join(&digest["sha256:".len()..])
        .is_file()
}

fn cache_manifest(reference: &str) -> Value {
    serde_json::from_slice(&kiln_testkit::skopeo_inspect_raw(reference).unwrap()).unwrap()
}

#[test]
fn a_fresh_store_builds_everything_from_a_registry_cache() {
    let k = Kiln::new();
    let cache = format!("{}/ci/app:buildcache", k.registry.addr());
    let to = format!("type=registry,ref={cache}");
    let from = to.clone();

    // Machine A builds and exports (mode=min, the default).
    let ctx_a = context(SINGLE, "hello\n");
    let a = build_json(
        &k,
        k.root.path(),
        "app:a",
        &ctx_path(&ctx_a),
        &["--cache-to", &to],
    );
    assert_eq!(ran(&a).len(), 5, "{a:?}");
    let exported = of_type(&a, "cache.exported");
    assert_eq!(exported.len(), 1, "{a:?}");
    assert_eq!(exported[0]["records"], 5);
    assert_eq!(
        exported[0]["layers"], 4,
        "WORKDIR's directory exists already: no layer"
    );

    // Any OCI tool sees a manifest with the kiln cache document as config and the layers.
    let manifest = cache_manifest(&cache);
    assert_eq!(
        manifest["config"]["mediaType"], CACHE_MEDIA_TYPE,
        "{manifest}"
    );
    let image_a_layers = layers_of(k.root.path(), "app:a");
    let cached_layers: BTreeSet<String> = digests(&manifest["layers"]).into_iter().collect();
    for layer in &image_a_layers[1..] {
        assert!(cached_layers.contains(layer), "{layer} not in {manifest}");
    }

    // Machine B: an empty store, the context copied elsewhere.
    let root_b = k.fresh_store();
    let ctx_b = context(SINGLE, "hello\n");
    let b = build_json(
        &k,
        root_b.path(),
        "app:b",
        &ctx_path(&ctx_b),
        &["--cache-from", &from],
    );
    assert!(ran(&b).is_empty(), "nothing runs: {:?}", ran(&b));
    assert_eq!(from_import(&b).len(), 5, "{b:?}");
    assert_eq!(of_type(&b, "cache.imported")[0]["records"], 5);
    assert_eq!(
        image_id(&k, root_b.path(), "app:b"),
        image_id(&k, k.root.path(), "app:a")
    );
    // Only what the image needs came over: the base's and the image's own blobs.
    let layers_b = layers_of(root_b.path(), "app:b");
    assert_eq!(layers_b, image_a_layers);
    let blobs_b = std::fs::read_dir(root_b.path().join("blobs/sha256"))
        .unwrap()
        .count();
    // Base manifest + config + layer, the image's manifest + config + 4 layers, the cache
    // document.
    assert_eq!(blobs_b, 3 + 2 + 4 + 1, "{layers_b:?}");

    // Nothing dangles: every record written locally has its layer.
    let check = k.cmd_in(root_b.path(), &["check"]);
    assert_success(&check, &["check"]);

    // The imported records are now local: a third build needs no import.
    let again = build_json(&k, root_b.path(), "app:c", &ctx_path(&ctx_b), &[]);
    assert!(ran(&again).is_empty(), "{again:?}");
    assert!(from_import(&again).is_empty());
    assert_eq!(of_type(&again, "step.cached").len(), 5);

    // A changed source misses from its COPY on; the steps before it still come from the cache.
    let ctx_c = context(SINGLE, "changed\n");
    let root_c = k.fresh_store();
    let changed = build_json(
        &k,
        root_c.path(),
        "app:d",
        &ctx_path(&ctx_c),
        &["--cache-from", &from],
    );
    assert_eq!(
        from_import(&changed),
        vec!["RUN head -c 32 /dev/urandom > /seed"]
    );
    assert_eq!(
        ran(&changed),
        vec![
            "COPY app.txt /app/",
            "RUN cat /app/app.txt /seed > /app/out && head -c 8 /dev/urandom >> /app/out",
            "WORKDIR /app",
            "RUN touch /app/empty-dir-marker && rm /app/empty-dir-marker",
        ]
    );
    // The RUN on top of the imported step needed its layer unpacked: fetched, not rebuilt.
    assert_eq!(
        layers_of(root_c.path(), "app:d")[1],
        image_a_layers[1],
        "the /seed layer is the exported one"
    );
}

#[test]
fn mode_max_serves_other_targets_and_mode_min_does_not() {
    let k = Kiln::new();
    let max = format!("{}/ci/multi:max", k.registry.addr());
    let min = format!("{}/ci/multi:min", k.registry.addr());
    let ctx_a = context(MULTI, "");
    let a = build_json(
        &k,
        k.root.path(),
        "multi:a",
        &ctx_path(&ctx_a),
        &[
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={min}"),
        ],
    );
    let exported = of_type(&a, "cache.exported");
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["records"], 4, "max: both stages");
    assert_eq!(exported[1]["records"], 2, "min: the app stage");
    let app_layers = layers_of(k.root.path(), "multi:a");
    let app_run_layer = app_layers.last().unwrap().clone();

    // The intermediate stage as the target, on machine A (local cache) and on B (max import).
    build_json(
        &k,
        k.root.path(),
        "tools:a",
        &ctx_path(&ctx_a),
        &["--target", "tools"],
    );
    let tools_a_layers = layers_of(k.root.path(), "tools:a");
    let root_b = k.fresh_store();
    let ctx_b = context(MULTI, "");
    let b = build_json(
        &k,
        root_b.path(),
        "tools:b",
        &ctx_path(&ctx_b),
        &[
            "--target",
            "tools",
            "--cache-from",
            &format!("type=registry,ref={max}"),
        ],
    );
    assert!(ran(&b).is_empty(), "{b:?}");
    assert_eq!(from_import(&b).len(), 2);
    assert_eq!(
        image_id(&k, root_b.path(), "tools:b"),
        image_id(&k, k.root.path(), "tools:a")
    );
    assert!(
        !has_blob(root_b.path(), &app_run_layer),
        "the app stage's layer is cached but not needed, so not fetched"
    );

    // The full build on another empty store: every step of both stages comes from the
    // cache, and the COPY --from is known by its definition, so the tools stage — cached but
    // not in the final image — is never fetched.
    let root_d = k.fresh_store();
    let full = build_json(
        &k,
        root_d.path(),
        "multi:d",
        &ctx_path(&ctx_b),
        &["--cache-from", &format!("type=registry,ref={max}")],
    );
    assert!(ran(&full).is_empty(), "{full:?}");
    assert_eq!(from_import(&full).len(), 4, "{full:?}");
    assert_eq!(
        image_id(&k, root_d.path(), "multi:d"),
        image_id(&k, k.root.path(), "multi:a")
    );
    // (The /tool layer may be fetched: the COPY's layer can be the same bytes.)
    let big_layer = &tools_a_layers[1];
    assert!(
        !has_blob(root_d.path(), big_layer),
        "{big_layer} was fetched"
    );
    for layer in &app_layers {
        assert!(has_blob(root_d.path(), layer));
    }

    // A changed later step still hits everything before it (mode=max): here a new RUN at the
    // end of the app stage.
    let changed = MULTI.replace(
        "head -c 16 /dev/urandom > /rand\n",
        "head -c 16 /dev/urandom > /rand\nRUN echo more > /more\n",
    );
    assert_ne!(changed, MULTI);
    let ctx_e = context(&changed, "");
    let root_e = k.fresh_store();
    let e = build_json(
        &k,
        root_e.path(),
        "multi:e",
        &ctx_path(&ctx_e),
        &["--cache-from", &format!("type=registry,ref={max}")],
    );
    assert_eq!(ran(&e), vec!["RUN echo more > /more"], "{e:?}");
    assert_eq!(
        layers_of(root_e.path(), "multi:e")[..app_layers.len()],
        app_layers[..]
    );

    // min holds only the app stage: another machine must build tools itself.
    let root_c = k.fresh_store();
    let c = build_json(
        &k,
        root_c.path(),
        "tools:c",
        &ctx_path(&ctx_b),
        &[
            "--target",
            "tools",
            "--cache-from",
            &format!("type=registry,ref={min}"),
        ],
    );
    assert_eq!(ran(&c).len(), 2, "{c:?}");
}

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
        image_id(&k, root_b.path(), "local:b"),
        image_id(&k, k.root.path(), "local:a")
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
    let login = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
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
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
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
        image_id(&k, root_b.path(), "big:b"),
        image_id(&k, k.root.path(), "big:a")
    );
}
