//! `docker buildx build` habits (issue 15): image metadata and RUN limits (`--label`,
//! `--annotation`, `--shm-size`, `--ulimit`), Dockerfiles and contexts on stdin (`-f -`,
//! `-` with a lone Dockerfile), `<Dockerfile>.dockerignore`, and `--call`/`--print`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// Runs `kiln build ARGS` with `input` on stdin.
fn build_with_stdin(k: &Kiln, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .arg("build")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The manifest a `--metadata-file` names, read from the store.
fn manifest_of(k: &Kiln, metadata: &std::path::Path) -> serde_json::Value {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(metadata).unwrap()).unwrap();
    let digest = meta["containerimage.digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = k.root.path().join("blobs/sha256").join(hex);
    serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
}

/// `--label` goes on the config over a `LABEL` of the same name, `--annotation` on the
/// manifest; `--shm-size` and `--ulimit` are what RUN sees, and part of its cache key.
#[test]
fn labels_annotations_and_run_limits() {
    let k = Kiln::new();
    let meta_dir = tempfile::tempdir().unwrap();
    let meta = meta_dir.path().join("meta.json");
    let meta_arg = meta.to_str().unwrap();
    let dockerfile = "ARG BASE\nFROM $BASE\nLABEL a=dockerfile keep=yes\n\
                      RUN df -k /dev/shm | tail -1 && echo \"nofile $(ulimit -n) $(ulimit -Hn)\"\n";
    let flags = [
        "--network",
        "none",
        "--progress",
        "plain",
        "--label",
        "a=flag",
        "--label",
        "b=2",
        "--annotation",
        "org.opencontainers.image.title=app",
        "--annotation",
        "manifest:com.example.note=x=y",
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=1234:2345",
        "--metadata-file",
        meta_arg,
    ];
    let out = k.build_dockerfile("limits:1", dockerfile, &flags);
    assert_success(&out, &["build", "limits"]);
    let log = stderr(&out);
    assert!(log.contains(" 131072 "), "/dev/shm is not 128 MiB:\n{log}");
    assert!(log.contains("nofile 1234 2345"), "{log}");
    let labels = &k.inspect("limits:1")["Config"]["Labels"];
    assert_eq!(labels["a"], "flag");
    assert_eq!(labels["b"], "2");
    assert_eq!(labels["keep"], "yes");
    let manifest = manifest_of(&k, &meta);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "app"
    );
    assert_eq!(manifest["annotations"]["com.example.note"], "x=y");

    // Without the flags: Docker's 64 MiB and the inherited limits, and a RUN of its own.
    let out = k.build_dockerfile(
        "limits:2",
        dockerfile,
        &["--network", "none", "--progress", "plain"],
    );
    assert_success(&out, &["build", "no limits"]);
    let log = stderr(&out);
    assert!(log.contains(" 65536 "), "{log}");
    assert!(!log.contains("nofile 1234"), "{log}");
    assert!(
        !log.contains("CACHED"),
        "a RUN with other limits hit the cache:\n{log}"
    );

    for (flag, value) in [
        ("--ulimit", "nofiles=10"),
        ("--ulimit", "nofile=20:10"),
        ("--shm-size", "lots"),
        ("--annotation", "index:a=b"),
        ("--annotation", "novalue"),
        ("--label", "=x"),
    ] {
        let out = k.build_dockerfile("bad:1", dockerfile, &[flag, value]);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(
            stderr(&out).contains(value),
            "{flag} {value}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

/// `--secret type=env,id=X[,env=Y]`: the secret comes from kiln's environment, from the
/// variable named like the id or the one `env=` names; a variable that is not set fails
/// naming it.
#[test]
fn secrets_from_the_environment() {
    let k = Kiln::new();
    let base = format!("BASE={}", k.base);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=secret,id=GH_TOKEN --mount=type=secret,id=npm \
         echo \"gh=$(cat /run/secrets/GH_TOKEN) npm=$(cat /run/secrets/npm)\"\n",
    )
    .unwrap();
    let dir = ctx.path().to_str().unwrap();
    let build = |flags: &[&str], env: &[(&str, &str)]| {
        let mut cmd = crate::e2e::harness::kiln_command();
        cmd.env("KILN_ROOT", k.root.path())
            .args([
                "build",
                "--progress",
                "plain",
                "--network",
                "none",
                "--build-arg",
                &base,
            ])
            .args(flags)
            .arg(dir);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.output().unwrap()
    };
    let flags = [
        "--secret",
        "type=env,id=GH_TOKEN",
        "--secret",
        "type=env,id=npm,env=KILN_E2E_NPM",
    ];
    let out = build(
        &flags,
        &[("GH_TOKEN", "gh-value"), ("KILN_E2E_NPM", "npm-value")],
    );
    assert_success(&out, &["build", "--secret type=env"]);
    assert!(
        stderr(&out).contains("gh=gh-value npm=npm-value"),
        "{}",
        stderr(&out)
    );
    let out = build(&flags, &[("GH_TOKEN", "gh-value")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("KILN_E2E_NPM"), "{}", stderr(&out));
}

/// `-f -` reads the Dockerfile from stdin with a directory context; `-` with a Dockerfile
/// (not a tar) on stdin builds it with an empty context, as `docker build - < Dockerfile`.
#[test]
fn dockerfiles_on_stdin() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("hello"), "from the context\n").unwrap();
    let base = format!("BASE={}", k.base);
    let dockerfile = b"ARG BASE\nFROM $BASE\nCOPY hello /hello\nRUN cat /hello\n";
    let dir = ctx.path().to_str().unwrap();
    let args = [
        "-t",
        "stdin:1",
        "--network",
        "none",
        "--progress",
        "plain",
        "--build-arg",
        &base,
        "-f",
        "-",
        dir,
    ];
    let out = build_with_stdin(&k, &args, dockerfile);
    assert_success(&out, &["build", "-f -"]);
    assert!(
        stderr(&out).contains("from the context"),
        "{}",
        stderr(&out)
    );

    let lone = b"ARG BASE\nFROM $BASE\nRUN echo lone > /lone\n";
    let args = [
        "-t",
        "stdin:2",
        "--network",
        "none",
        "--build-arg",
        &base,
        "-",
    ];
    let out = build_with_stdin(&k, &args, lone);
    assert_success(&out, &["build", "- < Dockerfile"]);
    let out = k.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "stdin:2",
        "cat",
        "/lone",
    ]);
    assert_eq!(stdout(&out), "lone\n");
    // A lone Dockerfile has no context to COPY from.
    let out = build_with_stdin(&k, &args, dockerfile);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hello"), "{}", stderr(&out));

    let args = ["-f", "-", "-"];
    let out = build_with_stdin(&k, &args, lone);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("both"), "{}", stderr(&out));
}

/// `<Dockerfile>.dockerignore` beside the Dockerfile replaces the context's `.dockerignore`.
#[test]
fn a_dockerfiles_own_ignore_file_wins() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    let p = ctx.path();
    for name in ["a.txt", "b.txt"] {
        std::fs::write(p.join(name), name).unwrap();
    }
    std::fs::write(p.join(".dockerignore"), "a.txt\n").unwrap();
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY . /ctx\nRUN ls /ctx\n";
    std::fs::write(p.join("Dockerfile"), dockerfile).unwrap();
    std::fs::create_dir(p.join("sub")).unwrap();
    std::fs::write(p.join("sub/app.Dockerfile"), dockerfile).unwrap();
    std::fs::write(p.join("sub/app.Dockerfile.dockerignore"), "b.txt\n").unwrap();
    let base = format!("BASE={}", k.base);
    let dir = p.to_str().unwrap();
    let listing = |tag: &str, extra: &[&str]| {
        assert_success(&k.build_offline(tag, extra, dir), &[tag]);
        let out = k.cmd(&["run", "--rm", "--network", "none", tag, "ls", "/ctx"]);
        stdout(&out)
    };
    let plain = listing("ign:1", &[]);
    assert!(
        !plain.contains("a.txt") && plain.contains("b.txt"),
        "{plain}"
    );
    let file = p.join("sub/app.Dockerfile");
    let own = listing("ign:2", &["-f", file.to_str().unwrap()]);
    assert!(own.contains("a.txt") && !own.contains("b.txt"), "{own}");

    // The same context as a tar on stdin, `-f` naming the Dockerfile inside it.
    let tar = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(p)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let args = [
        "-t",
        "ign:3",
        "--network",
        "none",
        "--build-arg",
        &base,
        "-f",
        "sub/app.Dockerfile",
        "-",
    ];
    assert_success(&build_with_stdin(&k, &args, &tar.stdout), &args);
    let out = k.cmd(&["run", "--rm", "--network", "none", "ign:3", "ls", "/ctx"]);
    let from_tar = stdout(&out);
    assert!(
        from_tar.contains("a.txt") && !from_tar.contains("b.txt"),
        "{from_tar}"
    );
}

/// `--call targets|outline|check` and `--print` describe the build without running it.
#[test]
fn call_targets_and_outline() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    let dockerfile = "\
ARG BASE=busybox
# base the starting point
FROM ${BASE} AS base
# VERSION what gets stamped
ARG VERSION=dev
RUN --mount=type=secret,id=token,required=true --mount=type=ssh true
# tools never built for the default target
FROM base AS tools
ARG TOOLS_ONLY
FROM base
";
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let dir = ctx.path().to_str().unwrap();
    // Columns are padded to the widest cell; compare words.
    let words = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let targets = words(&k.ok(&["build", "--call", "targets", dir]));
    assert_eq!(
        targets,
        [
            "TARGET LINE DESCRIPTION",
            "base Dockerfile:3 the starting point",
            "tools Dockerfile:8 never built for the default target",
            "stage-2 (default) Dockerfile:10"
        ]
    );
    let outline = words(&k.ok(&["build", "--print", "outline", dir]));
    assert_eq!(
        outline,
        [
            "TARGET: stage-2",
            "",
            "BUILD ARG VALUE LINE DESCRIPTION",
            "BASE busybox Dockerfile:1",
            "VERSION dev Dockerfile:5 what gets stamped",
            "",
            "SECRET REQUIRED LINE",
            "token true Dockerfile:6",
            "",
            "SSH REQUIRED LINE",
            "default false Dockerfile:6"
        ]
    );
    let tools = k.ok(&["build", "--call", "outline", "--target", "tools", dir]);
    assert!(tools.contains("TOOLS_ONLY"), "{tools}");
    // Nothing was built or pulled: the store holds no blob.
    let blobs = k.root.path().join("blobs/sha256");
    assert!(
        std::fs::read_dir(&blobs).map_or(true, |mut d| d.next().is_none()),
        "--call wrote blobs"
    );

    let check = k.cmd(&["build", "--call", "check", dir]);
    assert_success(&check, &["--call check"]);
    assert!(
        stderr(&check).contains("Check complete"),
        "{}",
        stderr(&check)
    );
    let bad = k.cmd(&["build", "--call", "lint", dir]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("\"lint\""), "{}", stderr(&bad));
    let missing = k.cmd(&["build", "--call", "outline", "--target", "nope", dir]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
}
