//! `--cache-to` / `--cache-from`: a build cache shared through the real registry (and an OCI
//! layout directory). A second store — a second CI machine — builds the same Dockerfile from a
//! copy of the context at another path with every step taken from the exported cache, fetching
//! only the layers it needs, and gets the same image.

mod errors;
mod local;
mod registry;

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
