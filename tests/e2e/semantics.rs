//! Dockerfile semantics in real builds: multi-stage and `--target`, stage errors, ARG scoping
//! and where variables expand, ONBUILD, the config instructions (HEALTHCHECK, EXPOSE, LABEL,
//! USER, WORKDIR, …), `--platform`, and the edge cases where kiln follows current BuildKit.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use super::harness::{Kiln, assert_success, stderr};

mod buildkit_edges;
mod config;
mod onbuild;
mod platform;

/// A build context in a tempdir: a Dockerfile (with `@BASE@` replaced by the registry's
/// busybox) and extra files.
fn context(k: &Kiln, dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        dockerfile.replace("@BASE@", &k.base),
    )
    .unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn build_in(k: &Kiln, dir: &Path, tag: &str, extra: &[&str]) -> Output {
    let mut args = vec!["build", "-t", tag];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    k.cmd(&args)
}

/// Builds and returns the build log (stderr), panicking on failure.
fn build_ok(k: &Kiln, dir: &Path, tag: &str, extra: &[&str]) -> String {
    let out = build_in(k, dir, tag, extra);
    assert_success(&out, &["build", tag]);
    stderr(&out)
}

fn history_texts(img: &Value) -> Vec<(String, bool)> {
    img["History"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn multistage_from_stage_copy_from_name_index_and_image_with_target() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
FROM @BASE@ AS build
RUN mkdir /out && echo built > /out/a

FROM @BASE@ AS broken
RUN echo BROKEN-STAGE-RAN && exit 7

FROM build AS derived
RUN echo derived > /out/b

FROM scratch AS final
COPY --from=derived /out /out
COPY --from=0 /bin/busybox /bin/busybox
COPY --from=@BASE@ /etc/passwd /etc/passwd
ENTRYPOINT [\"/bin/busybox\"]
CMD [\"cat\", \"/out/a\", \"/out/b\"]
",
        &[],
    );
    let log = build_ok(&k, ctx.path(), "multi", &[]);
    assert!(
        !log.contains("BROKEN-STAGE-RAN"),
        "a failing RUN in a stage the target does not need never runs:\n{log}"
    );
    assert_eq!(k.ok(&["run", "--rm", "multi"]), "built\nderived\n");
    assert_eq!(
        k.ok(&["run", "--rm", "multi", "head", "-1", "/etc/passwd"]),
        "root:x:0:0:root:/root:/bin/sh\n",
        "COPY --from=<image ref> pulls that image"
    );

    // --target picks a stage (names are case-insensitive) and builds only what it needs.
    let log = build_ok(&k, ctx.path(), "derived", &["--target", "DERIVED"]);
    assert!(log.contains("derived"), "{log}");
    assert!(!log.contains("BROKEN-STAGE-RAN"), "{log}");
    assert_eq!(
        k.ok(&["run", "--rm", "derived", "cat", "/out/a", "/out/b"]),
        "built\nderived\n"
    );
    let out = build_in(&k, ctx.path(), "broken", &["--target", "broken"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exit code 7"), "{}", stderr(&out));
}

#[test]
fn stage_mistakes_fail_before_anything_runs() {
    let k = Kiln::new();
    let cases: [(&str, &[&str], &str, &str); 5] = [
        (
            "FROM @BASE@ AS a\nRUN echo SHOULD-NOT-RUN\n",
            &["--target", "nope"],
            "target stage \"nope\" not found",
            "",
        ),
        (
            "FROM @BASE@ AS a\nRUN echo SHOULD-NOT-RUN\nCOPY --from=b /x /x\nFROM @BASE@ AS b\n",
            &[],
            "needs to be defined before the current stage \"a\"",
            "Dockerfile:3",
        ),
        (
            "FROM @BASE@ AS a\nRUN echo SHOULD-NOT-RUN\nCOPY --from=a /x /x\n",
            &[],
            "circular dependency detected on stage: a",
            "Dockerfile:3",
        ),
        (
            "FROM @BASE@\nRUN echo SHOULD-NOT-RUN\nFROM later\nFROM @BASE@ AS later\n",
            &[],
            "names a stage defined later (line 4)",
            "Dockerfile:3",
        ),
        (
            "FROM @BASE@ AS x\nRUN echo SHOULD-NOT-RUN\nFROM @BASE@ AS X\n",
            &[],
            // Reported by the DuplicateStageName check, before planning.
            "Duplicate stage name \"x\"",
            "Dockerfile:3",
        ),
    ];
    for (dockerfile, extra, message, line) in cases {
        let ctx = context(&k, dockerfile, &[]);
        let out = build_in(&k, ctx.path(), "bad", extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}\n{err}");
        assert!(err.contains(message), "{dockerfile}\n{err}");
        assert!(err.contains(line), "{dockerfile}\n{err}");
        assert!(!err.contains("SHOULD-NOT-RUN"), "{dockerfile}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn arg_scoping_predefined_and_proxy_args() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
ARG GLOBAL=global-default
ARG OVERRIDDEN=dockerfile
ARG IMAGE=@BASE@
FROM ${IMAGE} AS first
RUN echo \"before=[$GLOBAL]\"
ARG GLOBAL
ARG OVERRIDDEN
ARG LOCAL=local-$GLOBAL
ARG TARGETARCH
ARG TARGETPLATFORM
RUN echo \"global=[$GLOBAL] over=[$OVERRIDDEN] local=[$LOCAL] arch=[$TARGETARCH] platform=[$TARGETPLATFORM] buildarch=[$BUILDARCH] proxy=[$HTTP_PROXY]\"
ENV FROM_ARG=$LOCAL
FROM ${IMAGE} AS second
ARG SECOND_ONLY
RUN echo \"second=[$GLOBAL][$LOCAL]\"
",
        &[],
    );
    let arch = kiln_image::Platform::host().architecture;
    let build = |proxy: &str, over: &str| -> String {
        let proxy = format!("HTTP_PROXY={proxy}");
        let over = format!("OVERRIDDEN={over}");
        build_ok(
            &k,
            ctx.path(),
            "args",
            &[
                "--target",
                "first",
                "--build-arg",
                &proxy,
                "--build-arg",
                &over,
                "--build-arg",
                "NOT_USED=1",
                "--build-arg",
                "BUILDKIT_INLINE_CACHE=1",
            ],
        )
    };
    let log = build("http://proxy.invalid:3128", "cli");
    assert!(
        log.contains("before=[]"),
        "a global ARG is not visible in a stage until re-declared:\n{log}"
    );
    let expected = format!(
        "global=[global-default] over=[cli] local=[local-global-default] arch=[{arch}] \
         platform=[linux/{arch}] buildarch=[] proxy=[http://proxy.invalid:3128]"
    );
    assert!(log.contains(&expected), "{expected}\n{log}");
    assert!(
        log.contains("NOT_USED") && log.to_lowercase().contains("not consumed"),
        "unused build args are warned about:\n{log}"
    );
    assert!(
        !log.contains("\"HTTP_PROXY\"") && !log.contains("\"BUILDKIT_INLINE_CACHE\""),
        "proxy and BUILDKIT_ options are never reported unused:\n{log}"
    );

    let img = k.inspect("args");
    let env: Vec<&str> = img["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"FROM_ARG=local-global-default"), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("GLOBAL=") || e.starts_with("LOCAL=")),
        "ARGs are not persisted in the image config: {env:?}"
    );
    let history = serde_json::to_string(&img["History"]).unwrap();
    assert!(
        !history.contains("proxy.invalid"),
        "proxy values stay out of the history: {history}"
    );
    assert!(
        history.contains("RUN |5 GLOBAL=global-default LOCAL=local-global-default OVERRIDDEN=cli"),
        "RUN history lists the ARGs in scope as BuildKit does: {history}"
    );
    assert!(
        !history.contains("OVERRIDDEN=cli\"") && history.contains("\"ARG OVERRIDDEN\""),
        "ARG history shows the declaration, not the --build-arg value: {history}"
    );

    // Proxies are not part of the cache key; other build args are.
    let id = k.image_id("args");
    let log = build("http://other-proxy.invalid:8080", "cli");
    assert_eq!(k.image_id("args"), id, "{log}");
    build("http://other-proxy.invalid:8080", "changed");
    assert_ne!(k.image_id("args"), id);

    // BUILDKIT_SANDBOX_HOSTNAME is the BuildKit option that changes what RUN sees.
    let hostname_ctx = context(&k, "FROM @BASE@\nRUN echo \"host=$(hostname)\"\n", &[]);
    let log = build_ok(&k, hostname_ctx.path(), "host", &[]);
    assert!(log.contains("host=kiln"), "{log}");
    let log = build_ok(
        &k,
        hostname_ctx.path(),
        "host",
        &["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=builder-box"],
    );
    assert!(log.contains("host=builder-box"), "{log}");
    assert!(!log.contains("not consumed"), "{log}");

    // ARGs belong to their stage: the next stage sees neither GLOBAL nor LOCAL.
    let log = build_ok(&k, ctx.path(), "second", &["--build-arg", "SECOND_ONLY=1"]);
    assert!(log.contains("second=[][]"), "{log}");
    assert!(!log.contains("not consumed"), "{log}");
    let log = build_ok(
        &k,
        ctx.path(),
        "first",
        &["--target", "first", "--build-arg", "SECOND_ONLY=1"],
    );
    assert!(
        log.contains("SECOND_ONLY"),
        "an ARG of a stage the target does not need consumes nothing:\n{log}"
    );
}

#[test]
fn variables_expand_only_where_docker_expands_them() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
FROM @BASE@
ARG DIR=/opt/app PORT=8080 SIG=SIGINT WHO=kiln VOL=/data NAME=lbl
ENV GREETING=hello DEST=${DIR}/conf
COPY file.txt $DEST/
ADD file.txt ${DIR}/added.txt
WORKDIR $DIR
EXPOSE $PORT
LABEL $NAME=\"$GREETING world\"
STOPSIGNAL $SIG
VOLUME $VOL
RUN echo 'shell-sees [$GREETING]' \"shell-expands [$GREETING]\"
RUN [\"echo\", \"exec-sees [$GREETING]\"]
USER $WHO
CMD echo \"$GREETING\"
ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo $GREETING from entrypoint; exec \\\"$@\\\"\", \"sh\"]
",
        &[("file.txt", "payload\n")],
    );
    let log = build_ok(&k, ctx.path(), "expand", &[]);
    assert!(
        log.contains("shell-sees [$GREETING] shell-expands [hello]"),
        "RUN's shell form goes to the shell untouched:\n{log}"
    );
    assert!(
        log.contains("exec-sees [$GREETING]"),
        "exec form is not expanded:\n{log}"
    );
    let img = k.inspect("expand");
    let cfg = &img["Config"];
    assert_eq!(cfg["WorkingDir"], "/opt/app");
    assert_eq!(cfg["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(cfg["Labels"], json!({"lbl": "hello world"}));
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert_eq!(cfg["Volumes"], json!({"/data": {}}));
    assert_eq!(cfg["User"], "kiln");
    assert_eq!(
        cfg["Cmd"],
        json!(["/bin/sh", "-c", "echo \"$GREETING\""]),
        "CMD keeps its variables for run time"
    );
    assert_eq!(
        cfg["Entrypoint"][2],
        "echo $GREETING from entrypoint; exec \"$@\""
    );
    let out = k.ok(&[
        "run",
        "--rm",
        "expand",
        "cat",
        "/opt/app/conf/file.txt",
        "/opt/app/added.txt",
    ]);
    assert_eq!(out, "hello from entrypoint\npayload\npayload\n");
}
