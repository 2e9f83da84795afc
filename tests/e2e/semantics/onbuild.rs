//! ONBUILD: triggers recorded in the image, run once by the next build FROM it.

use serde_json::{Value, json};

use super::{build_in, build_ok, context};
use crate::e2e::harness::{Kiln, stderr};

#[test]
fn onbuild_triggers_run_once_in_the_child() {
    let k = Kiln::new();
    let parent = context(
        &k,
        "\
FROM @BASE@
ONBUILD RUN echo \"trigger ran with $TRIGGER_ARG\" > /trigger.txt
ONBUILD ENV TRIGGERED=yes
ONBUILD COPY ctx.txt /from-child-context.txt
ONBUILD ARG TRIGGER_ARG=default
",
        &[],
    );
    build_ok(&k, parent.path(), "parent", &[]);
    let cfg = &k.inspect("parent")["Config"];
    assert_eq!(
        cfg["OnBuild"],
        json!([
            "RUN echo \"trigger ran with $TRIGGER_ARG\" > /trigger.txt",
            "ENV TRIGGERED=yes",
            "COPY ctx.txt /from-child-context.txt",
            "ARG TRIGGER_ARG=default"
        ]),
        "triggers are recorded as written"
    );

    let child = context(
        &k,
        "FROM parent\nRUN cat /trigger.txt /from-child-context.txt && echo \"env=$TRIGGERED\"\n",
        &[("ctx.txt", "child context file\n")],
    );
    let log = build_ok(&k, child.path(), "child", &[]);
    let output: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("] | ").map(|(_, out)| out.trim_end()))
        .collect();
    assert_eq!(
        output,
        ["trigger ran with", "child context file", "env=yes"],
        "triggers run right after FROM, in order (the ARG trigger comes after the RUN):\n{log}"
    );
    let img = k.inspect("child");
    assert_eq!(
        img["Config"]["OnBuild"],
        Value::Null,
        "triggers are cleared"
    );
    assert!(
        img["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&json!("TRIGGERED=yes"))
    );

    // A grandchild does not run them again: its context lacks ctx.txt, which a second COPY
    // trigger would fail on.
    let grandchild = context(&k, "FROM child\nRUN test -f /trigger.txt\n", &[]);
    build_ok(&k, grandchild.path(), "grandchild", &[]);

    // Triggers declared in a stage run in a stage built FROM it.
    let stages = context(
        &k,
        "\
FROM @BASE@ AS base
ONBUILD RUN echo from-stage-trigger > /stage-trigger.txt
FROM base
RUN cat /stage-trigger.txt
",
        &[],
    );
    let log = build_ok(&k, stages.path(), "stage-trigger", &[]);
    assert!(log.contains("from-stage-trigger"), "{log}");

    // A trigger may copy from a stage of the child's Dockerfile that nothing else needs:
    // that stage is built because of it.
    let copying_parent = context(
        &k,
        "FROM @BASE@\nONBUILD COPY --from=assets /asset.txt /asset.txt\n",
        &[],
    );
    build_ok(&k, copying_parent.path(), "copying-parent", &[]);
    let with_assets = context(
        &k,
        "FROM @BASE@ AS assets\nRUN echo asset-from-stage > /asset.txt\nFROM copying-parent\nRUN cat /asset.txt\n",
        &[],
    );
    let log = build_ok(&k, with_assets.path(), "with-assets", &[]);
    assert!(log.contains("| asset-from-stage"), "{log}");

    // A failing trigger names itself and points at the FROM that ran it.
    let bad_parent = context(&k, "FROM @BASE@\nONBUILD RUN exit 5\n", &[]);
    build_ok(&k, bad_parent.path(), "bad-parent", &[]);
    let bad_child = context(&k, "# comment\nFROM bad-parent\nRUN true\n", &[]);
    let out = build_in(&k, bad_child.path(), "bad-child", &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("ONBUILD RUN exit 5") && err.contains("exit code 5"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");

    let bad_copy = context(&k, "FROM parent\n", &[]);
    let out = build_in(&k, bad_copy.path(), "bad-copy", &[]);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("ONBUILD trigger \"COPY ctx.txt /from-child-context.txt\"")
            && err.contains("Dockerfile:1"),
        "{err}"
    );

    for bad in [
        "ONBUILD ONBUILD RUN x",
        "ONBUILD FROM x",
        "ONBUILD MAINTAINER x",
    ] {
        let ctx = context(&k, &format!("FROM @BASE@\n{bad}\n"), &[]);
        let out = build_in(&k, ctx.path(), "bad", &[]);
        let err = stderr(&out);
        assert!(
            !out.status.success()
                && err.contains("isn't allowed as an ONBUILD trigger")
                && err.contains("Dockerfile:2"),
            "{bad}: {err}"
        );
    }
}
