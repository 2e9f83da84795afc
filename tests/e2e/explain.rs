//! `--explain`, `--progress` and `--no-cache-filter`: real builds whose inputs change one at a
//! time, checking the exact reason kiln gives for every miss, and the JSON event stream.

use std::path::Path;

use super::harness::{Kiln, assert_success, stderr};

const DOCKERFILE: &str = r#"ARG BASE
FROM $BASE
COPY src/ /app/
ARG VERSION=1.0
ENV MODE=debug
RUN echo "$VERSION $MODE" | tee /app/info
"#;

const RUN_LABEL: &str = r#"[stage-0 5/5] RUN echo "$VERSION $MODE" | tee /app/info"#;

/// The `MISS` lines of a `--explain` build's plain output.
fn misses(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("] MISS "))
        .map(|l| l.replacen(" MISS ", " ", 1))
        .collect()
}

fn build(k: &Kiln, dir: &Path, extra: &[&str]) -> String {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "build",
        "-t",
        "explained",
        "--progress=plain",
        "--build-arg",
        "BASE=explainbase",
    ];
    args.extend_from_slice(extra);
    args.push(dir);
    let out = k.cmd(&args);
    assert_success(&out, &args);
    stderr(&out)
}

/// Builds `explainbase:<tag>` from busybox with `/base` holding `tag`.
fn build_base(k: &Kiln, tag: &str) -> String {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN echo {tag} > /base\n", k.base),
    )
    .unwrap();
    let name = format!("explainbase:{tag}");
    k.ok(&["build", "-q", "-t", &name, ctx.path().to_str().unwrap()]);
    k.inspect(&name)["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn short(digest: &str) -> String {
    format!("sha256:{}…", &digest["sha256:".len()..][..12])
}

#[test]
fn explain_names_the_cause_of_every_miss() {
    let k = Kiln::new();
    let base_a = build_base(&k, "a");
    let base_b = build_base(&k, "b");
    k.ok(&["tag", "explainbase:a", "explainbase:latest"]);

    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("src")).unwrap();
    std::fs::write(ctx.path().join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(ctx.path().join("src/lib.rs"), "\n").unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();

    // First build: nothing recorded yet.
    let out = build(&k, ctx.path(), &["--explain"]);
    assert_eq!(
        misses(&out),
        vec![
            "[stage-0 1/5] FROM explainbase: no previous build of this step".to_owned(),
            "[stage-0 2/5] COPY src/ /app/: no previous build of this step".to_owned(),
            format!("{RUN_LABEL}: no previous build of this step"),
        ],
        "{out}"
    );

    // Unchanged: everything cached, nothing to explain.
    let out = build(&k, ctx.path(), &["--explain"]);
    assert!(misses(&out).is_empty(), "{out}");
    assert_eq!(out.matches("CACHED").count(), 2, "{out}");

    // Without --explain the reasons are not printed.
    std::fs::write(ctx.path().join("src/main.rs"), "fn main() { run() }\n").unwrap();
    let out = build(&k, ctx.path(), &[]);
    assert!(misses(&out).is_empty(), "{out}");

    // One file changed, then the step after it misses because of it.
    std::fs::write(ctx.path().join("src/main.rs"), "fn main() { go() }\n").unwrap();
    std::fs::write(ctx.path().join("src/new.rs"), "\n").unwrap();
    let out = build(&k, ctx.path(), &["--explain"]);
    let copy_cause = "[stage-0 2/5] COPY src/ /app/: 1 file changed: src/main.rs; \
                      1 file added: src/new.rs";
    assert_eq!(
        misses(&out),
        vec![
            copy_cause.to_owned(),
            format!("{RUN_LABEL}: parent step changed; first cause: {copy_cause}"),
        ],
        "{out}"
    );

    // A build-arg: only the RUN sees it.
    let out = build(&k, ctx.path(), &["--explain", "--build-arg", "VERSION=1.1"]);
    assert_eq!(
        misses(&out),
        vec![format!("{RUN_LABEL}: build-arg VERSION 1.0 → 1.1")],
        "{out}"
    );

    // An ENV value: named, its value not shown.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        DOCKERFILE.replace("MODE=debug", "MODE=release"),
    )
    .unwrap();
    let out = build(&k, ctx.path(), &["--explain", "--build-arg", "VERSION=1.1"]);
    assert_eq!(
        misses(&out),
        vec![format!("{RUN_LABEL}: ENV MODE changed")],
        "{out}"
    );

    // The base image name now points at another image.
    k.ok(&["tag", "explainbase:b", "explainbase:latest"]);
    let out = build(&k, ctx.path(), &["--explain", "--build-arg", "VERSION=1.1"]);
    let from_cause = format!(
        "[stage-0 1/5] FROM explainbase: base image digest changed ({} → {})",
        short(&base_a),
        short(&base_b)
    );
    assert_eq!(
        misses(&out),
        vec![
            from_cause.clone(),
            format!(
                "[stage-0 2/5] COPY src/ /app/: parent step changed; first cause: {from_cause}"
            ),
            format!("{RUN_LABEL}: parent step changed; first cause: {from_cause}"),
        ],
        "{out}"
    );

    // --no-cache and --no-cache-filter say so.
    let out = build(
        &k,
        ctx.path(),
        &["--explain", "--build-arg", "VERSION=1.1", "--no-cache"],
    );
    assert_eq!(
        misses(&out),
        vec![
            "[stage-0 2/5] COPY src/ /app/: --no-cache".to_owned(),
            format!("{RUN_LABEL}: --no-cache"),
        ],
        "{out}"
    );
    let out = build(
        &k,
        ctx.path(),
        &[
            "--explain",
            "--build-arg",
            "VERSION=1.1",
            "--no-cache-filter",
            "0",
        ],
    );
    assert_eq!(
        misses(&out),
        vec![
            "[stage-0 2/5] COPY src/ /app/: --no-cache-filter".to_owned(),
            format!("{RUN_LABEL}: --no-cache-filter"),
        ],
        "{out}"
    );

    // The JSON stream: one object per line, with the expected kinds and the explain record.
    std::fs::write(ctx.path().join("src/lib.rs"), "// changed\n").unwrap();
    let dir = ctx.path().to_str().unwrap();
    let args = [
        "build",
        "-t",
        "explained",
        "--progress=rawjson",
        "--build-arg",
        "BASE=explainbase",
        "--build-arg",
        "VERSION=1.1",
        dir,
    ];
    let out = k.cmd(&args);
    assert_success(&out, &args);
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "step.started",
        "step.done",
        "step.explain",
        "step.output",
        "image.written",
        "image.tagged",
        "build.done",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let explain: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "step.explain")
        .collect();
    assert_eq!(explain.len(), 2, "{explain:?}");
    assert_eq!(explain[0]["step"]["text"], "COPY src/ /app/");
    assert_eq!(explain[0]["cause"], "inputs-changed");
    assert_eq!(explain[0]["reason"], "1 file changed: src/lib.rs");
    assert_eq!(explain[1]["cause"], "parent-changed");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "build.done");
    assert_eq!(done["image"].as_str().unwrap(), k.image_id("explained"));
    assert_eq!(done["steps"], 3);
    assert_eq!(done["cached"], 0);
}

#[test]
fn no_cache_filter_rebuilds_only_the_named_stages() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {base} AS builder\nRUN echo built > /out\n\
             FROM {base} AS tools\nRUN echo tools > /tools\n\
             FROM {base}\nCOPY --from=builder /out /out\nCOPY --from=tools /tools /tools\n\
             RUN cat /out /tools\n",
            base = k.base
        ),
    )
    .unwrap();
    let dir = ctx.path().to_str().unwrap();
    k.ok(&["build", "-q", "-t", "filtered", dir]);
    let args = [
        "build",
        "-t",
        "filtered",
        "--progress=plain",
        "--explain",
        "--no-cache-filter",
        "builder,tools",
        dir,
    ];
    let out = k.cmd(&args);
    assert_success(&out, &args);
    let text = stderr(&out);
    // The two stages build side by side: their lines may come in either order.
    let mut missed = misses(&text);
    missed.sort();
    assert_eq!(
        missed,
        vec![
            "[builder 2/2] RUN echo built > /out: --no-cache-filter",
            "[tools 2/2] RUN echo tools > /tools: --no-cache-filter",
        ],
        "{text}"
    );
    // The final stage copies the same bytes, so it is still cached.
    assert!(text.contains("[stage-2 2/4] CACHED"), "{text}");
    assert!(text.contains("[stage-2 4/4] CACHED"), "{text}");

    let out = k.cmd(&["build", "--no-cache-filter", "nosuch", dir]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--no-cache-filter: no stage named \"nosuch\""),
        "{}",
        stderr(&out)
    );
}
