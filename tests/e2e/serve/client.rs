//! `kiln --host`: the kiln CLI as a client of `kiln serve`, over the UNIX socket and over
//! mutual TLS. The client runs with a store of its own that must stay empty, so every command
//! is shown to have gone through the API rather than run in-process.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::super::harness::{Kiln, assert_success, stderr, stdout};
use super::Daemon;

/// `kiln` against `host`, with an empty store of its own and `KILN_HOST` unset unless given.
struct ClientCli {
    host: String,
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl ClientCli {
    fn new(host: String) -> ClientCli {
        ClientCli {
            host,
            root: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_ROOT", self.root.path())
            .env_remove("KILN_HOST")
            .env_remove("KILN_TLS_VERIFY")
            .env_remove("KILN_CERT_PATH")
            .env("DOCKER_CONFIG", self.root.path().join("docker-config"))
            .args(["--host", &self.host])
            .args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kiln")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert_success(&out, args);
        stdout(&out)
    }

    /// Fails with a message containing `needle` (on stderr), without a panic.
    fn fails(&self, args: &[&str], needle: &str) -> Output {
        let out = self.cmd(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            stdout(&out)
        );
        let err = stderr(&out);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        out
    }

    /// The client's own store holds no image, so nothing ran in-process.
    fn assert_local_store_unused(&self) {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", self.root.path())
            .env_remove("KILN_HOST")
            .arg("images")
            .output()
            .unwrap();
        assert_success(&out, &["images"]);
        assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    }
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// Runs the client with `input` on its stdin; its stdout, after checking it succeeded.
fn with_stdin(c: &ClientCli, args: &[&str], input: &[u8]) -> String {
    let mut child = c
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, args);
    stdout(&out)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_kiln_cli_drives_kiln_serve_through_the_api() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let c = ClientCli::new(d.host());
    let registry = k.registry.addr();

    let pulled = c.ok(&["pull", &k.base]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    assert!(pulled.contains("Status: "), "{pulled}");
    let images = c.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&format!("{registry}/busybox")) && l.contains("latest")),
        "{images}"
    );

    // build: the context goes as a tar without what .dockerignore names (and the Dockerfile
    // goes even though it is ignored), build args reach the daemon, the ID comes back.
    let ctx = context(&[
        (
            "Dockerfile",
            "ARG BASE\nFROM $BASE\nCOPY . /ctx\nRUN test -e /ctx/keep/a.txt && test ! -e /ctx/secret.txt && echo context-ok\n",
        ),
        (".dockerignore", "secret.txt\nDockerfile\n"),
        ("keep/a.txt", "a"),
        ("secret.txt", "do not send"),
    ]);
    let iid = c.root.path().join("iid");
    let base_arg = format!("BASE={}", k.base);
    let built = c.cmd(&[
        "build",
        "-t",
        "client-app:1",
        "--build-arg",
        &base_arg,
        "--iidfile",
        iid.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    assert_success(&built, &["build"]);
    let progress = stderr(&built);
    assert!(progress.contains("Step 1/"), "{progress}");
    assert!(progress.contains("context-ok"), "{progress}");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    let inspected: serde_json::Value =
        serde_json::from_str(&c.ok(&["inspect", "client-app:1"])).unwrap();
    assert_eq!(inspected[0]["Id"], id.as_str());
    // -q: only the ID, on stdout.
    let quiet = c.ok(&[
        "build",
        "-q",
        "-t",
        "client-app:1",
        "--build-arg",
        &base_arg,
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(quiet.trim(), id);

    c.ok(&["tag", "client-app:1", "client-app:2"]);
    let images = c.ok(&["images", "--filter", "reference=client-app"]);
    assert_eq!(images.lines().count(), 3, "{images}");
    assert!(images.contains(&id["sha256:".len()..][..12]), "{images}");

    // run -d, ps, logs, stop, rm.
    let started = c.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "client-app:1",
        "sh",
        "-c",
        "echo hello; echo oops >&2; sleep 60",
    ]);
    let cid = started.trim().to_owned();
    assert_eq!(cid.len(), 64, "{started}");
    let ps = c.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    let row = ps
        .lines()
        .find(|l| l.ends_with("web"))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(row.starts_with(&cid[..12]) && row.contains("Up "), "{ps}");
    assert_eq!(c.ok(&["ps", "-q"]).trim(), &cid[..12]);
    wait_for("the container's output", || {
        c.ok(&["logs", "web"]).contains("hello")
    });
    let logs = c.cmd(&["logs", "web"]);
    assert_eq!(stdout(&logs), "hello\n");
    assert_eq!(stderr(&logs), "oops\n");
    // logs -f follows until the container ends.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "counter",
        "client-app:1",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ]);
    let followed = c.ok(&["logs", "-f", "counter"]);
    assert_eq!(followed, "line1\nline2\nline3\n");
    // exec, attach, start -a, run -i and -t: hijacked connections.
    let exec = c.cmd(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo in-exec; echo e >&2; exit 4",
    ]);
    assert_eq!(exec.status.code(), Some(4), "{}", stderr(&exec));
    assert_eq!(
        (stdout(&exec).as_str(), stderr(&exec).as_str()),
        ("in-exec\n", "e\n")
    );
    assert_eq!(
        with_stdin(&c, &["exec", "-i", "web", "cat"], b"to-exec\n"),
        "to-exec\n"
    );
    assert_eq!(
        with_stdin(
            &c,
            &["run", "--rm", "-i", "client-app:1", "cat"],
            b"to-run\n"
        ),
        "to-run\n"
    );
    c.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "att",
        "client-app:1",
        "sh",
        "-c",
        "read line; echo got $line",
    ]);
    assert_eq!(with_stdin(&c, &["attach", "att"], b"x\n"), "got x\n");
    c.ok(&[
        "create",
        "--name",
        "sa",
        "client-app:1",
        "sh",
        "-c",
        "echo started; exit 5",
    ]);
    let started = c.cmd(&["start", "-a", "sa"]);
    assert_eq!(started.status.code(), Some(5), "{}", stderr(&started));
    assert_eq!(stdout(&started), "started\n");
    // -t: under a pty, as a terminal user runs it; the container's output comes raw.
    let under_pty = |args: &[&str]| {
        let line = c.command(args);
        let mut words = vec![line.get_program().to_string_lossy().into_owned()];
        words.extend(
            line.get_args()
                .map(|a| format!("'{}'", a.to_string_lossy())),
        );
        let out = Command::new("script")
            .args(["-qec", &words.join(" "), "/dev/null"])
            .env("KILN_ROOT", c.root.path())
            .env_remove("KILN_HOST")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{words:?}: {}", stdout(&out));
        stdout(&out)
    };
    let tty = under_pty(&[
        "run",
        "--rm",
        "-t",
        "client-app:1",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo hi-tty",
    ]);
    assert!(tty.contains("hi-tty"), "{tty}");
    let tty = under_pty(&[
        "exec",
        "-t",
        "web",
        "sh",
        "-c",
        "test -t 0 && echo exec-tty",
    ]);
    assert!(tty.contains("exec-tty"), "{tty}");
    c.ok(&["rm", "att", "sa"]);
    assert_eq!(c.ok(&["stop", "-t", "1", "web"]).trim(), "web");
    assert!(!c.ok(&["ps"]).contains("web"));
    let all = c.ok(&["ps", "-a"]);
    assert!(all.contains("web") && all.contains("Exited"), "{all}");
    assert_eq!(c.ok(&["rm", "web", "counter"]), "web\ncounter\n");
    assert!(!c.ok(&["ps", "-a"]).contains("web"));

    // A foreground run: its output on the client's streams, its exit code the client's, and
    // with --rm nothing left.
    let fg = c.cmd(&[
        "run",
        "--rm",
        "--name",
        "fg",
        "client-app:1",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(fg.status.code(), Some(7), "{}", stderr(&fg));
    assert_eq!(
        (stdout(&fg).as_str(), stderr(&fg).as_str()),
        ("out\n", "err\n")
    );
    assert!(!c.ok(&["ps", "-a"]).contains("fg"));
    // create, start, restart, kill, wait.
    let created = c.ok(&["create", "--name", "life", "client-app:1", "sleep", "60"]);
    assert_eq!(created.trim().len(), 64, "{created}");
    assert!(c.ok(&["ps", "-a"]).contains("Created"));
    assert_eq!(c.ok(&["start", "life"]), "life\n");
    assert_eq!(c.ok(&["restart", "-t", "1", "life"]), "life\n");
    assert_eq!(c.ok(&["kill", "life"]), "life\n");
    assert_eq!(c.ok(&["wait", "life"]), "137\n");
    c.ok(&["rm", "life"]);
    // SIGINT to a foreground client reaches the container (docker run's sig-proxy).
    let mut child = c
        .command(&[
            "run",
            "--name",
            "sig",
            "client-app:1",
            "sh",
            "-c",
            "trap 'echo got-int; exit 3' INT; echo ready; while true; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the foreground container", || {
        stdout(&c.cmd(&["logs", "sig"])).contains("ready")
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ready\ngot-int\n");
    c.ok(&["rm", "sig"]);

    // push to the loopback registry, remove, pull back.
    let remote = format!("{registry}/client-pushed:1");
    c.ok(&["tag", "client-app:1", &remote]);
    let pushed = c.ok(&["push", &remote]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    assert_eq!(
        c.ok(&["rmi", &remote]).trim(),
        format!("Untagged: {remote}")
    );
    c.ok(&["pull", &remote]);
    let again: serde_json::Value = serde_json::from_str(&c.ok(&["inspect", &remote])).unwrap();
    assert_eq!(again[0]["Id"], id.as_str());
    assert!(
        c.ok(&["rmi", "client-app:2"])
            .contains("Untagged: client-app:2")
    );

    // Errors: the daemon's words, a non-zero exit, no panic.
    c.fails(&["rmi", "nothere:1"], "No such image: nothere:1");
    c.fails(
        &["inspect", "nothere"],
        "no such container or image: nothere",
    );
    c.fails(&["stop", "nothere"], "No such container: nothere");
    let missing = format!("{registry}/nothere:1");
    let out = c.fails(&["run", "-d", &missing], "nothere");
    assert!(
        stderr(&out).contains("Unable to find image"),
        "{}",
        stderr(&out)
    );
    let failing = context(&[("Dockerfile", "ARG BASE\nFROM $BASE\nRUN exit 3\n")]);
    let out = c.fails(
        &[
            "build",
            "--build-arg",
            &base_arg,
            failing.path().to_str().unwrap(),
        ],
        "returned a non-zero code: 3",
    );
    assert_eq!(out.status.code(), Some(3));
    // What cannot go through the API is refused by name.
    c.fails(&["check"], "kiln check does not go through the Engine API");
    c.fails(
        &["build", "--sbom", ctx.path().to_str().unwrap()],
        "--sbom cannot go through --host",
    );
    // Nothing of this ran in the client's own store.
    c.assert_local_store_unused();

    // KILN_HOST does what --host does.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_ROOT", c.root.path())
        .env("KILN_HOST", d.host())
        .args(["images", "--filter", "reference=client-app"])
        .output()
        .unwrap();
    assert_success(&out, &["images"]);
    assert!(stdout(&out).contains("client-app"), "{}", stdout(&out));
}

fn copy_as(from: &Path, dir: &Path, name: &str) {
    std::fs::copy(from, dir.join(name)).unwrap();
}

#[test]
fn the_kiln_cli_reaches_a_tcp_daemon_only_over_mutual_tls() {
    let k = Kiln::new();
    let ca = kiln_testkit::TestCa::new().unwrap();
    let (server_cert, server_key) = ca.issue("server", false).unwrap();
    let (client_cert, client_key) = ca.issue("client", true).unwrap();
    let other = kiln_testkit::TestCa::new().unwrap();
    let (stranger_cert, stranger_key) = other.issue("stranger", true).unwrap();
    let port = kiln_testkit::free_port();
    let host = format!("tcp://127.0.0.1:{port}");
    let _d = Daemon::start(
        &k,
        &[],
        &[
            "--host",
            &host,
            "--tlsverify",
            "--tlscacert",
            ca.cert_path().to_str().unwrap(),
            "--tlscert",
            server_cert.to_str().unwrap(),
            "--tlskey",
            server_key.to_str().unwrap(),
        ],
    );
    // KILN_TLS_VERIFY + KILN_CERT_PATH (ca.pem, cert.pem, key.pem), as DOCKER_CERT_PATH.
    let certs = tempfile::tempdir().unwrap();
    copy_as(&ca.cert_path(), certs.path(), "ca.pem");
    copy_as(&client_cert, certs.path(), "cert.pem");
    copy_as(&client_key, certs.path(), "key.pem");
    let mut c = ClientCli::new(host.clone());
    c.env = vec![
        ("KILN_TLS_VERIFY".into(), "1".into()),
        (
            "KILN_CERT_PATH".into(),
            certs.path().to_str().unwrap().into(),
        ),
    ];
    c.ok(&["pull", &k.base]);
    assert!(c.ok(&["images"]).contains("busybox"));
    // The flags work without the environment; a certificate of another CA does not.
    c.env.clear();
    let flags = |cert: &Path, key: &Path| {
        vec![
            "--tlsverify".to_owned(),
            "--tlscacert".to_owned(),
            ca.cert_path().to_str().unwrap().to_owned(),
            "--tlscert".to_owned(),
            cert.to_str().unwrap().to_owned(),
            "--tlskey".to_owned(),
            key.to_str().unwrap().to_owned(),
        ]
    };
    let run = |extra: Vec<String>, args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .env("KILN_ROOT", c.root.path())
            .env_remove("KILN_HOST")
            .env_remove("KILN_TLS_VERIFY")
            .env_remove("KILN_CERT_PATH")
            .args(["--host", &host])
            .args(&extra)
            .args(args);
        command.output().unwrap()
    };
    let good = run(flags(&client_cert, &client_key), &["ps", "-a"]);
    assert_success(&good, &["ps"]);
    let stranger = run(flags(&stranger_cert, &stranger_key), &["ps"]);
    assert!(!stranger.status.success());
    assert!(
        stderr(&stranger).contains(&format!(
            "the daemon at {host} refused this client over TLS"
        )),
        "{}",
        stderr(&stranger)
    );
    // tcp:// without TLS: refused by the client before anything is sent.
    let started = Instant::now();
    let plain = c.fails(&["ps"], "refusing tcp://127.0.0.1");
    assert!(stderr(&plain).contains("--tlsverify"), "{}", stderr(&plain));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A host the client cannot parse is named.
    let bad = ClientCli::new("ssh://builder".into());
    bad.fails(&["ps"], "invalid host \"ssh://builder\"");
}

#[test]
fn credentials_tty_logs_and_a_context_from_stdin_go_through_the_api() {
    let k = Kiln::new();
    let tls = kiln_testkit::TlsRegistry::start(&[("alice", "s3cret")], false).unwrap();
    let d = Daemon::start(
        &k,
        &[("KILN_REGISTRY_CERTS_DIR", tls.certs_dir.path())],
        &[],
    );
    let c = ClientCli::new(d.host());
    let registry = tls.registry.addr();
    c.ok(&["pull", &k.base]);
    let remote = format!("{registry}/team/app:1");
    c.ok(&["tag", &k.base, &remote]);
    // The daemon has no credentials of its own: without the client's, the push is refused.
    let refused = c.cmd(&["push", &remote]);
    assert!(!refused.status.success(), "pushed without credentials");
    assert!(!stderr(&refused).contains("panicked"));
    // `kiln login` stays with the client (its DOCKER_CONFIG), and its credentials go along.
    let mut login = c.command(&["login", "-u", "alice", "--password-stdin", &registry]);
    login
        .env("KILN_REGISTRY_CERTS_DIR", tls.certs_dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["login"]);
    let pushed = c.ok(&["push", &remote]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    c.ok(&["rmi", &remote]);
    let pulled = c.ok(&["pull", &remote]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");

    // A container with a tty: its log is one raw stream, all on stdout.
    c.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "tty",
        &k.base,
        "sh",
        "-c",
        "echo tty-out; echo tty-err >&2; sleep 30",
    ]);
    wait_for("the tty container's output", || {
        c.ok(&["logs", "tty"]).contains("tty-err")
    });
    let logs = c.cmd(&["logs", "tty"]);
    assert!(stdout(&logs).contains("tty-out"), "{}", stdout(&logs));
    assert_eq!(stderr(&logs), "");
    c.ok(&["rm", "-f", "tty"]);

    // `kiln build -`: a tar on stdin passes through as the context.
    let dockerfile = format!("FROM {}\nCOPY a.txt /\nRUN cat /a.txt\n", k.base);
    let tar = super::tar_of(&[
        ("Dockerfile", dockerfile.as_bytes()),
        ("a.txt", b"from-stdin\n"),
    ]);
    let mut build = c.command(&["build", "-t", "from-stdin:1", "-"]);
    build
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = build.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &tar).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &["build", "-"]);
    assert!(stderr(&out).contains("from-stdin"), "{}", stderr(&out));
    assert!(c.ok(&["images"]).contains("from-stdin"));
    c.assert_local_store_unused();
}

#[test]
fn volumes_commit_save_load_and_import_go_through_the_api() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let c = ClientCli::new(d.host());
    c.ok(&["pull", &k.base]);

    assert_eq!(c.ok(&["volume", "create", "--label", "a=b", "v1"]), "v1\n");
    assert!(c.ok(&["volume", "ls"]).contains("local     v1\n"));
    assert_eq!(c.ok(&["volume", "ls", "-q"]), "v1\n");
    let inspected: serde_json::Value =
        serde_json::from_str(&c.ok(&["volume", "inspect", "v1"])).unwrap();
    assert_eq!(inspected[0]["Labels"]["a"], "b");
    assert_eq!(c.ok(&["volume", "rm", "v1"]), "v1\n");
    c.fails(&["volume", "rm", "v1"], "v1");
    c.fails(
        &["volume", "prune"],
        "kiln volume prune does not go through",
    );

    // commit a container's change, run the new image.
    c.ok(&[
        "run",
        "-d",
        "--name",
        "cm",
        &k.base,
        "sh",
        "-c",
        "echo hi > /made && echo done && sleep 60",
    ]);
    wait_for("the container's change", || {
        stdout(&c.cmd(&["logs", "cm"])).contains("done")
    });
    let id = c.ok(&["commit", "-m", "made it", "cm", "committed:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    c.ok(&["rm", "-f", "cm"]);
    assert_eq!(
        c.ok(&["run", "--rm", "committed:1", "cat", "/made"]),
        "hi\n"
    );

    // save to a file and to stdout, rmi, load back.
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("committed.tar");
    c.ok(&["save", "-o", archive.to_str().unwrap(), "committed:1"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    let piped = c.command(&["save", "committed:1"]).output().unwrap();
    assert_success(&piped, &["save"]);
    assert_eq!(piped.stdout.len() as u64, archive.metadata().unwrap().len());
    let missing = dir.path().join("missing.tar");
    c.fails(
        &["save", "-o", missing.to_str().unwrap(), "nothere:1"],
        "nothere",
    );
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    c.ok(&["rmi", "committed:1"]);
    let loaded = c.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: committed:1"), "{loaded}");
    assert_eq!(
        c.ok(&["run", "--rm", "committed:1", "cat", "/made"]),
        "hi\n"
    );
    c.fails(&["load", "-i", "/nonexistent.tar"], "/nonexistent.tar");

    // import a root filesystem tar.
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, super::tar_of(&[("hello.txt", b"hello\n")])).unwrap();
    let imported = c.ok(&["import", rootfs.to_str().unwrap(), "imported:1"]);
    assert!(imported.starts_with("sha256:"), "{imported}");
    let inspected: serde_json::Value =
        serde_json::from_str(&c.ok(&["inspect", "imported:1"])).unwrap();
    assert_eq!(inspected[0]["Id"], imported.trim());
    c.assert_local_store_unused();
}
