//! Bad input gets a clear error naming the file and line, a non-zero exit, and no panic.

use super::harness::{Kiln, stderr};

fn build_text(k: &Kiln, dockerfile: &str) -> std::process::Output {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let base = format!("BASE={}", k.base);
    k.cmd(&[
        "build",
        "-t",
        "err",
        "--build-arg",
        &base,
        ctx.path().to_str().unwrap(),
    ])
}

#[test]
fn failing_run_names_step_command_exit_code_and_output() {
    let k = Kiln::new();
    let out = k.build("failing", "failing", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exit code 3"), "{err}");
    assert!(
        err.contains("echo \"about to fail\"; echo \"on stderr\" >&2; exit 3"),
        "the command is shown: {err}"
    );
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains("last output:") && err.contains("about to fail") && err.contains("on stderr"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !k.ok(&["images"]).contains("failing"),
        "no image is named after a failed build"
    );
}

#[test]
fn dockerfile_mistakes_point_at_the_line() {
    let k = Kiln::new();
    let out = build_text(&k, "ARG BASE\nFROM ${BASE}\nRUN true\nFORM busybox\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:4"), "{err}");
    assert!(err.to_lowercase().contains("unknown instruction"), "{err}");
    assert!(err.contains("FORM busybox"), "the line is shown: {err}");

    let out = build_text(&k, "ARG BASE\nFROM ${BASE}\nCOPY missing.txt /\n");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("missing.txt") && err.contains("Dockerfile:3"),
        "{err}"
    );

    let out = build_text(&k, "FROM 127.0.0.1:1/nothing-listens-here\n");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("127.0.0.1:1"),
        "an unreachable registry is named: {err}"
    );

    let ctx = tempfile::tempdir().unwrap();
    let out = k.cmd(&["build", ctx.path().to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("Dockerfile"),
        "a missing Dockerfile is named: {err}"
    );
}
