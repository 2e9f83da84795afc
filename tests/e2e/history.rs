//! Build history (issue 15, item 3): every build is recorded with its inputs, steps (cache hit
//! or miss and why), result and full logs; `kiln build history ls|inspect|logs|rm|prune`;
//! retention; a killed build reads as interrupted; plain and rawjson output is never cut.

use super::containers::Cleanup;
use super::harness::{Kiln, assert_success, stderr, stdout};

/// A line longer than BuildKit's 2 MiB log limit, then many short ones.
const LONG: usize = 3_000_000;
const LINES: usize = 20_000;

fn dockerfile(extra: &str) -> String {
    format!(
        "ARG BASE\nFROM $BASE\nRUN head -c {LONG} /dev/zero | tr '\\0' a && echo && seq 1 {LINES}\n\
         ARG FLAVOR=plain\nRUN echo flavor=$FLAVOR\n{extra}"
    )
}

fn history(k: &Kiln, args: &[&str]) -> String {
    let mut all = vec!["build", "history"];
    all.extend_from_slice(args);
    k.ok(&all)
}

fn record(k: &Kiln, id: &str) -> serde_json::Value {
    serde_json::from_str(&history(k, &["inspect", "--json", id])).unwrap()
}

/// The newest build's ID.
fn newest(k: &Kiln) -> String {
    history(k, &["ls", "-q"])
        .lines()
        .next()
        .expect("a recorded build")
        .to_owned()
}

fn expected_output() -> String {
    let mut s = "a".repeat(LONG);
    s.push('\n');
    for n in 1..=LINES {
        s.push_str(&format!("{n}\n"));
    }
    s
}

#[test]
fn builds_are_recorded_with_full_logs_cache_results_and_errors() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    let df = dockerfile("");
    std::fs::write(ctx.path().join("Dockerfile"), &df).unwrap();
    let dir = ctx.path().to_str().unwrap();
    let base = format!("BASE={}", k.base);

    // Plain progress: nothing is cut.
    let out = k.cmd(&[
        "build",
        "--progress=plain",
        "--build-arg",
        &base,
        "-t",
        "hist:1",
        dir,
    ]);
    assert_success(&out, &["build"]);
    let err = stderr(&out);
    let long_line = format!("| {}\n", "a".repeat(LONG));
    assert!(
        err.contains(&long_line),
        "the 3 MB line is whole in plain output"
    );
    assert!(err.contains(&format!("| {LINES}\n")));

    let first = newest(&k);
    let r = record(&k, &first);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["image"], k.image_id("hist:1"));
    let digest = format!("sha256:{}", kiln_image::Digest::of(df.as_bytes()).hex());
    assert_eq!(r["inputs"]["dockerfile_digest"], digest);
    assert_eq!(r["inputs"]["build_args"]["BASE"], k.base);
    assert_eq!(r["inputs"]["tags"][0], "docker.io/library/hist:1");
    assert!(
        r["inputs"]["platform"]
            .as_str()
            .unwrap()
            .starts_with("linux/")
    );
    let steps = r["steps"].as_array().unwrap();
    let run = steps
        .iter()
        .find(|s| s["text"].as_str().unwrap().starts_with("RUN head"))
        .expect("the RUN step");
    assert_eq!(run["status"], "done");
    assert_eq!(run["miss_cause"], "no-previous-build");
    assert_eq!(run["output_lines"], (LINES + 1) as u64);
    assert!(run["duration_ms"].is_u64());

    // `logs --step N` gives exactly what the step printed.
    let step = run["index"].to_string();
    let logs = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["build", "history", "logs", &first[..10], "--step", &step])
        .output()
        .unwrap();
    assert_success(&logs, &["build", "history", "logs"]);
    assert!(
        stdout(&logs) == expected_output(),
        "the step's whole output"
    );

    // rawjson, a changed build arg: the first RUN is cached, the second misses and says why.
    let out = k.cmd(&[
        "build",
        "--progress=rawjson",
        "--build-arg",
        &base,
        "--build-arg",
        "FLAVOR=spicy",
        dir,
    ]);
    assert_success(&out, &["build", "rawjson"]);
    let second = newest(&k);
    assert_ne!(second, first);
    let r = record(&k, &second);
    let steps = r["steps"].as_array().unwrap();
    let status = |prefix: &str| {
        steps
            .iter()
            .find(|s| s["text"].as_str().unwrap().starts_with(prefix))
            .unwrap()
            .clone()
    };
    assert_eq!(status("RUN head")["status"], "cached");
    let flavor = status("RUN echo flavor");
    assert_eq!(flavor["status"], "done");
    assert_eq!(flavor["miss_cause"], "inputs-changed", "{flavor}");
    assert!(
        flavor["miss_reason"].as_str().unwrap().contains("FLAVOR"),
        "{flavor}"
    );
    let text = history(&k, &["inspect", &second]);
    assert!(text.contains("cache miss (inputs-changed)"), "{text}");

    // rawjson carries the long line whole too.
    let out = k.cmd(&[
        "build",
        "--progress=rawjson",
        "--no-cache",
        "--build-arg",
        &base,
        dir,
    ]);
    assert_success(&out, &["build", "--no-cache"]);
    let longest = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "step.output")
        .map(|v| v["line"].as_str().unwrap().len())
        .max();
    assert_eq!(longest, Some(LONG));

    // A failed build: its error with file:line, the failed step, its output.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN echo before-the-fail && exit 7\n",
    )
    .unwrap();
    let out = k.cmd(&["build", "--build-arg", &base, bad.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let failed = newest(&k);
    let r = record(&k, &failed);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["line"], 3);
    assert!(
        r["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("/Dockerfile")
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit code 7")
    );
    let last = r["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "failed", "{r}");
    let logs = history(&k, &["logs", &failed]);
    assert!(logs.contains("before-the-fail"), "{logs}");
    let text = history(&k, &["inspect", &failed]);
    assert!(
        text.contains("Error at:") && text.contains("Dockerfile:3"),
        "{text}"
    );

    // ls, df, rm, and an unknown ID.
    let ls = history(&k, &["ls"]);
    assert_eq!(ls.lines().count(), 5, "a header and four builds: {ls}");
    assert!(ls.contains("failed") && ls.contains("succeeded"), "{ls}");
    let df = k.ok(&["system", "df"]);
    let row = df
        .lines()
        .find(|l| l.starts_with("Build history"))
        .unwrap_or_else(|| panic!("{df}"));
    assert!(row.split_whitespace().nth(2) == Some("4"), "{row}");
    history(&k, &["rm", &failed]);
    let out = k.cmd(&["build", "history", "inspect", &failed]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no build"), "{}", stderr(&out));

    // Retention by count, applied after a build.
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .env("KILN_HISTORY_MAX_BUILDS", "2")
        .args(["build", "-q", "--build-arg", &base, dir])
        .output()
        .unwrap();
    assert_success(&out, &["build", "retention"]);
    assert_eq!(history(&k, &["ls", "-q"]).lines().count(), 2);
    // `prune --all` removes every finished build.
    let out = k.ok(&["prune", "-f", "--all"]);
    assert!(out.contains("Build history: 2 builds removed"), "{out}");
    assert_eq!(history(&k, &["ls", "-q"]), "");
}

#[test]
fn a_killed_build_is_recorded_as_interrupted_and_the_store_stays_sound() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let (mut child, _ctx) = k.build_running_until(
        "ARG BASE\nFROM $BASE\nRUN echo started-$((3*3)) && sleep 60\n",
        &[],
        "started-9",
    );
    let id = newest(&k);
    assert_eq!(record(&k, &id)["status"], "running");
    // A running build cannot be removed.
    assert_ne!(
        k.cmd(&["build", "history", "rm", &id]).status.code(),
        Some(0)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let r = record(&k, &id);
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(history(&k, &["ls"]).contains("interrupted"));
    assert!(history(&k, &["logs", &id]).contains("started-9"));
    k.ok(&["check"]);
    // Removable now.
    history(&k, &["rm", &id]);
    assert_eq!(history(&k, &["ls", "-q"]), "");
}
