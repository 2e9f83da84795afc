//! Dockerfile semantics in real builds: multi-stage and `--target`, stage errors, ARG scoping
//! and where variables expand, ONBUILD, the config instructions (HEALTHCHECK, EXPOSE, LABEL,
//! USER, WORKDIR, …) and `--platform`.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use super::harness::{Kiln, assert_success, stderr};

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
            "duplicate stage name",
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

#[test]
fn config_instructions_land_in_the_image_config() {
    let k = Kiln::new();
    let ctx = context(
        &k,
        "\
FROM @BASE@
MAINTAINER Jane Doe <jane@example.com>
LABEL a=1 \"b c\"=\"d e\" f='g h'
LABEL legacy value with spaces
EXPOSE 80 80/tcp 53/UDP 8000-8002
VOLUME [\"/data\", \"/logs\"]
VOLUME /cache /tmp/x
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m30s --start-interval=2s --retries=4 \\
  CMD wget -q -O- http://localhost/ || exit 1
SHELL [\"/bin/sh\", \"-ec\"]
RUN echo \"shell-flags=$-\"
WORKDIR app
WORKDIR src
USER kiln:kiln
WORKDIR /home/kiln/made-by-user
WORKDIR /home/kiln/made-by-user
ENTRYPOINT [\"/bin/sh\", \"-c\", \"id -u; id -g; pwd; stat -c %U /home/kiln/made-by-user\"]
",
        &[],
    );
    let log = build_ok(&k, ctx.path(), "cfg", &[]);
    let flags = log
        .lines()
        .find_map(|l| l.split("| shell-flags=").nth(1))
        .unwrap_or_else(|| panic!("no RUN output:\n{log}"));
    assert!(
        flags.contains('e'),
        "SHELL [\"/bin/sh\", \"-ec\"] runs later RUNs with -e: {flags:?}\n{log}"
    );
    let img = k.inspect("cfg");
    let cfg = &img["Config"];
    assert_eq!(img["Author"], "Jane Doe <jane@example.com>");
    assert_eq!(
        cfg["Labels"],
        json!({"a": "1", "b c": "d e", "f": "g h", "legacy": "value with spaces"})
    );
    assert_eq!(
        cfg["ExposedPorts"],
        json!({"53/udp": {}, "80/tcp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}})
    );
    assert_eq!(
        cfg["Volumes"],
        json!({"/cache": {}, "/data": {}, "/logs": {}, "/tmp/x": {}})
    );
    assert_eq!(cfg["StopSignal"], "SIGQUIT");
    assert_eq!(
        cfg["Healthcheck"],
        json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
            "Interval": 30_000_000_000i64,
            "Timeout": 5_000_000_000i64,
            "StartPeriod": 90_000_000_000i64,
            "StartInterval": 2_000_000_000i64,
            "Retries": 4
        })
    );
    assert_eq!(cfg["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(cfg["User"], "kiln:kiln");
    assert_eq!(cfg["WorkingDir"], "/home/kiln/made-by-user");
    assert_eq!(
        cfg["Cmd"],
        Value::Null,
        "ENTRYPOINT resets the CMD inherited from busybox"
    );
    let out = k.ok(&["run", "--rm", "cfg"]);
    assert_eq!(
        out, "1000\n1000\n/home/kiln/made-by-user\nkiln\n",
        "USER name:group, and WORKDIR creates the directory owned by USER"
    );

    // History: BuildKit's wording; only steps that changed files have layers.
    let history = history_texts(&img);
    let layers = img["RootFS"]["Layers"].as_array().unwrap().len();
    assert_eq!(
        history.iter().filter(|(_, empty)| !empty).count(),
        layers,
        "{history:?}"
    );
    let find = |prefix: &str| {
        history
            .iter()
            .find(|(text, _)| text.starts_with(prefix))
            .unwrap_or_else(|| panic!("no history entry {prefix:?} in {history:?}"))
            .clone()
    };
    assert_eq!(
        find("EXPOSE"),
        (
            "EXPOSE map[53/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]".into(),
            true
        )
    );
    assert_eq!(
        find("VOLUME [/cache"),
        ("VOLUME [/cache /tmp/x]".into(), true)
    );
    assert_eq!(
        find("HEALTHCHECK"),
        (
            "HEALTHCHECK [\"CMD-SHELL\" \"wget -q -O- http://localhost/ || exit 1\"]".into(),
            true
        )
    );
    assert_eq!(
        find("ENTRYPOINT"),
        (
            "ENTRYPOINT [\"/bin/sh\" \"-c\" \"id -u; id -g; pwd; stat -c %U /home/kiln/made-by-user\"]"
                .into(),
            true
        )
    );
    assert_eq!(find("LABEL a=1"), ("LABEL a=1 b c=d e f=g h".into(), true));
    assert!(find("MAINTAINER").1);
    assert_eq!(
        find("RUN"),
        (
            "RUN /bin/sh -ec echo \"shell-flags=$-\" # buildkit".into(),
            true
        ),
        "a RUN that changes nothing adds no layer"
    );
    assert!(!find("WORKDIR /app").1, "WORKDIR app created /app");
    assert!(!find("WORKDIR /app/src").1);
    let made: Vec<&(String, bool)> = history
        .iter()
        .filter(|(t, _)| t == "WORKDIR /home/kiln/made-by-user")
        .collect();
    assert_eq!(
        made.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
        [false, true],
        "a WORKDIR that creates nothing adds no layer"
    );

    // HEALTHCHECK NONE disables the inherited check; CMD set after ENTRYPOINT stays.
    let ctx = context(
        &k,
        "FROM cfg\nHEALTHCHECK NONE\nCMD [\"x\"]\nENTRYPOINT [\"/bin/true\"]\nHEALTHCHECK CMD [\"/bin/true\", \"-v\"]\nHEALTHCHECK NONE\n",
        &[],
    );
    build_ok(&k, ctx.path(), "cfg-child", &[]);
    let cfg = &k.inspect("cfg-child")["Config"];
    assert_eq!(cfg["Healthcheck"], json!({"Test": ["NONE"]}));
    assert_eq!(cfg["Cmd"], json!(["x"]), "a CMD set in this stage survives");
    let ctx = context(
        &k,
        "FROM @BASE@ AS a\nCMD [\"x\"]\nFROM a\nENTRYPOINT [\"/bin/true\"]\n",
        &[],
    );
    build_ok(&k, ctx.path(), "cfg-stage", &[]);
    assert_eq!(
        k.inspect("cfg-stage")["Config"]["Cmd"],
        Value::Null,
        "a CMD from the base stage is inherited, so ENTRYPOINT resets it"
    );

    let ctx = context(&k, "FROM @BASE@\nHEALTHCHECK --interval=1 CMD true\n", &[]);
    let out = build_in(&k, ctx.path(), "bad", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Dockerfile:2") && stderr(&out).contains("--interval=1"),
        "{}",
        stderr(&out)
    );
    let ctx = context(&k, "FROM @BASE@\nEXPOSE 9-8\n", &[]);
    let out = build_in(&k, ctx.path(), "bad", &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("Dockerfile:2"),
        "{}",
        stderr(&out)
    );
}

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

/// Pushes `<registry>/busybox-multi:latest`: an OCI index whose host entry is the busybox
/// image and whose `linux/arm64` (or, on an arm64 host, `linux/amd64`) entry has the same
/// layers under a config naming that other architecture. The layers are only data to kiln
/// as long as nothing executes them, which is what a COPY-only foreign build relies on.
fn push_multi_platform_busybox(k: &Kiln) -> (String, kiln_image::Platform) {
    use kiln_image::{Descriptor, Digest, ImageConfig, Index, Manifest, media_type};

    let host = kiln_image::Platform::host();
    let foreign = if host.architecture == "arm64" {
        kiln_image::Platform::new("linux", "amd64")
    } else {
        kiln_image::Platform::new("linux", "arm64")
    };
    let layout = tempfile::tempdir().unwrap();
    kiln_testkit::busybox_oci_layout(layout.path(), "host").unwrap();
    let blobs = layout.path().join("blobs/sha256");
    let read = |d: &Digest| std::fs::read(blobs.join(d.hex())).unwrap();
    let write = |bytes: Vec<u8>, media: &str| {
        let digest = Digest::of(&bytes);
        std::fs::write(blobs.join(digest.hex()), &bytes).unwrap();
        Descriptor::new(media, digest, bytes.len() as u64)
    };
    let top: Index =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    let mut host_entry = top.manifests[0].clone();
    host_entry.annotations.clear();
    host_entry.platform = Some(host.clone());
    let manifest: Manifest = serde_json::from_slice(&read(&host_entry.digest)).unwrap();
    let mut config: ImageConfig = serde_json::from_slice(&read(&manifest.config.digest)).unwrap();
    config.architecture = foreign.architecture.clone();
    config.variant = None;
    let config_desc = write(
        kiln_image::to_canonical_json(&config),
        media_type::OCI_CONFIG,
    );
    let foreign_manifest = Manifest::oci(config_desc, manifest.layers.clone());
    let mut foreign_entry = write(
        kiln_image::to_canonical_json(&foreign_manifest),
        media_type::OCI_MANIFEST,
    );
    foreign_entry.platform = Some(foreign.clone());
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![host_entry, foreign_entry],
        annotations: Default::default(),
    };
    let mut index_entry = write(kiln_image::to_canonical_json(&index), media_type::OCI_INDEX);
    index_entry
        .annotations
        .insert("org.opencontainers.image.ref.name".into(), "multi".into());
    let outer = Index {
        manifests: vec![index_entry],
        ..index
    };
    std::fs::write(
        layout.path().join("index.json"),
        kiln_image::to_canonical_json(&outer),
    )
    .unwrap();
    let reference = format!("{}/busybox-multi:latest", k.registry.addr());
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert_success(&out, &["skopeo copy --all"]);
    (reference, foreign)
}

#[test]
fn platform_selects_the_base_manifest_and_guards_run() {
    let k = Kiln::new();
    let (multi, foreign) = push_multi_platform_busybox(&k);
    let foreign_name = foreign.to_string();
    let ctx = context(
        &k,
        &format!("FROM {multi}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n"),
        &[("hello.txt", "hello\n")],
    );
    build_ok(&k, ctx.path(), "foreign", &["--platform", &foreign_name]);
    let img = k.inspect("foreign");
    assert_eq!(img["Architecture"], foreign.architecture.as_str());
    assert_eq!(img["Os"], "linux");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "the base's layers plus the COPY"
    );

    // The same name for the host platform selects the host manifest (re-pulling, since the
    // local name now holds the foreign image) and runs.
    build_ok(&k, ctx.path(), "native", &[]);
    let img = k.inspect("native");
    assert_eq!(
        img["Architecture"],
        kiln_image::Platform::host().architecture.as_str()
    );
    assert_eq!(k.ok(&["run", "--rm", "native"]), "hello\n");

    // RUN in a foreign stage needs emulation; without it the error says so.
    let run_ctx = context(&k, &format!("FROM {multi}\nRUN echo hi\n"), &[]);
    let out = build_in(
        &k,
        run_ctx.path(),
        "foreign-run",
        &["--platform", &foreign_name],
    );
    let binfmt_name = if foreign.architecture == "arm64" {
        "/proc/sys/fs/binfmt_misc/qemu-aarch64"
    } else {
        "/proc/sys/fs/binfmt_misc/qemu-x86_64"
    };
    let emulated = std::fs::read_to_string(binfmt_name).is_ok_and(|t| t.starts_with("enabled"));
    if !emulated {
        let err = stderr(&out);
        assert!(!out.status.success());
        let expected = format!(
            "RUN needs {foreign_name} but this machine runs {} and has no emulation \
             (binfmt_misc/qemu) registered",
            kiln_image::Platform::host()
        );
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("Dockerfile:2"), "{err}");
    }

    // The cross-compilation pattern: build on the build platform, copy into the target.
    let cross = context(
        &k,
        &format!(
            "\
FROM --platform=$BUILDPLATFORM {multi} AS build
ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM
RUN echo \"built on $BUILDPLATFORM for $TARGETPLATFORM ($TARGETARCH)\" > /out.txt
FROM {multi}
COPY --from=build /out.txt /out.txt
"
        ),
        &[],
    );
    let log = build_ok(&k, cross.path(), "cross", &["--platform", &foreign_name]);
    assert!(!log.contains("error"), "{log}");
    let img = k.inspect("cross");
    assert_eq!(img["Architecture"], foreign.architecture.as_str());
    // Read the file through a host image: a foreign stage FROM the result, copied from.
    let check = context(
        &k,
        &format!(
            "FROM --platform={foreign_name} cross AS result\nFROM {multi}\nCOPY --from=result /out.txt /out.txt\n"
        ),
        &[],
    );
    build_ok(&k, check.path(), "cross-check", &[]);
    assert_eq!(
        k.ok(&["run", "--rm", "cross-check", "cat", "/out.txt"]),
        format!(
            "built on {} for {foreign_name} ({})\n",
            kiln_image::Platform::host(),
            foreign.architecture
        )
    );

    // A local image for another platform is not silently used for this one.
    let local_only = format!("{}/cross-local:1", k.registry.addr());
    k.ok(&["tag", "cross", &local_only]);
    let uses_local = context(&k, &format!("FROM {local_only}\n"), &[]);
    let out = build_in(&k, uses_local.path(), "bad", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "is for {foreign_name}, not {}",
            kiln_image::Platform::host()
        )),
        "{}",
        stderr(&out)
    );

    let bad = build_in(&k, ctx.path(), "bad", &["--platform", "linux"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("os/arch"), "{}", stderr(&bad));
}
