//! Bad input gets a clear error naming the file and line, a non-zero exit, and no panic.

use super::harness::{Kiln, stderr};

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
    // The plain progress marks the RUN's stderr apart from its stdout.
    assert!(
        err.contains("] | about to fail") && err.contains("] ! on stderr"),
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
    let out = k.build_dockerfile(
        "err",
        "ARG BASE\nFROM ${BASE}\nRUN true\nFORM busybox\n",
        &[],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:4"), "{err}");
    assert!(err.to_lowercase().contains("unknown instruction"), "{err}");
    assert!(err.contains("FORM busybox"), "the line is shown: {err}");

    let out = k.build_dockerfile("err", "ARG BASE\nFROM ${BASE}\nCOPY missing.txt /\n", &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("missing.txt") && err.contains("Dockerfile:3"),
        "{err}"
    );

    let out = k.build_dockerfile("err", "FROM 127.0.0.1:1/nothing-listens-here\n", &[]);
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

#[test]
fn parse_mistakes_are_reported_like_a_compiler_before_anything_runs() {
    let k = Kiln::new();
    // (Dockerfile, message, the snippet's location line, the underlined line + caret)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "ARG BASE\nFROM ${BASE}\nRUN echo SHOULD-NOT-RUN\nCOPPY a /b\n",
            "unknown instruction: COPPY (did you mean COPY?)",
            "Dockerfile:4:1",
            "4 | COPPY a /b\n  | ^^^^^\n",
        ),
        (
            "ARG BASE\nFROM ${BASE}\nRUN echo SHOULD-NOT-RUN\n  COPY --chmode=755 a /b\n",
            "unknown flag for COPY: --chmode",
            "Dockerfile:4:3",
            "4 |   COPY --chmode=755 a /b\n  |   ^^^^\n",
        ),
        (
            "ARG BASE\nFROM ${BASE}\nRUN echo SHOULD-NOT-RUN\nSHELL /bin/sh -c\n",
            "SHELL requires the arguments to be a non-empty JSON array",
            "Dockerfile:4:1",
            "4 | SHELL /bin/sh -c\n  | ^^^^^\n",
        ),
        (
            "ARG BASE\nFROM ${BASE}\nRUN echo SHOULD-NOT-RUN\nONBUILD ONBUILD RUN x\n",
            "ONBUILD isn't allowed as an ONBUILD trigger",
            "Dockerfile:4:1",
            "4 | ONBUILD ONBUILD RUN x\n  | ^^^^^^^\n",
        ),
    ];
    for (dockerfile, message, at, snippet) in cases {
        for check_only in [false, true] {
            let ctx = tempfile::tempdir().unwrap();
            std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
            let base = format!("BASE={}", k.base);
            let dir = ctx.path().to_str().unwrap();
            let mut args = vec!["build", "-t", "err", "--build-arg", &base];
            if check_only {
                args.push("--check");
            }
            args.push(dir);
            let out = k.cmd(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{dockerfile}\n{err}");
            assert!(err.contains(message), "{err}");
            assert!(err.contains(at), "{err}");
            assert!(err.contains(snippet), "{err}");
            assert!(!err.contains("SHOULD-NOT-RUN"), "nothing ran: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
