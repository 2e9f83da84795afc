//! The kiln CLI's registry credentials going with pushes through the daemon, a tty
//! container's logs, a build context from stdin, and the daemon over TCP with mutual TLS.

use std::path::Path;
use std::time::{Duration, Instant};

use super::super::super::harness::{Kiln, assert_success, stderr, stdout};
use super::super::Daemon;
use super::{ClientCli, wait_for};

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
        let mut command = crate::e2e::harness::kiln_command();
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
    let tar = super::super::tar_of(&[
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
