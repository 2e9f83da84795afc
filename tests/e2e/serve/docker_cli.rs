//! The real docker CLI (on PATH) against `kiln serve`: version, info, a legacy build, images,
//! inspect, tag, rmi, save and load, and login + push + pull against a TLS registry with
//! htpasswd auth.

use std::path::Path;
use std::process::{Command, Output};

use kiln_testkit::TlsRegistry;

use super::super::harness::{Kiln, stderr, stdout};
use super::Daemon;

pub(super) struct Docker<'a> {
    daemon: &'a Daemon,
    config: tempfile::TempDir,
}

impl Docker<'_> {
    pub(super) fn new(daemon: &Daemon) -> Docker<'_> {
        Docker {
            daemon,
            config: tempfile::tempdir().unwrap(),
        }
    }

    pub(super) fn run(&self, args: &[&str], stdin: &[u8], dir: Option<&Path>) -> Output {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_HOST")
            .args(["-H", &self.daemon.host()])
            .args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        super::output_within(command, stdin, super::CLIENT_LIMIT)
    }

    /// `docker events` from the daemon's first event up to a second from now (so the command
    /// ends), with `--filter` for each of `filters`, each event printed with `format`.
    pub(super) fn events_so_far(&self, filters: &[&str], format: &str) -> String {
        let until = (chrono::Utc::now().timestamp() + 1).to_string();
        let mut args = vec!["events", "--since", "0", "--until", &until];
        for filter in filters {
            args.extend(["--filter", filter]);
        }
        args.extend(["--format", format]);
        self.ok(&args)
    }

    pub(super) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, b"", None);
        assert!(
            out.status.success(),
            "docker {args:?} failed\n--- stdout\n{}\n--- stderr\n{}\n--- daemon\n{}",
            stdout(&out),
            stderr(&out),
            self.daemon.log()
        );
        stdout(&out)
    }
}

#[test]
fn docker_cli_builds_lists_inspects_tags_saves_loads_and_removes() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    let version = docker.ok(&[
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.Os}}",
    ]);
    assert_eq!(version.trim(), "1.41 linux");
    let info = docker.ok(&["info", "--format", "{{.Swarm.LocalNodeState}} {{.OSType}}"]);
    assert_eq!(info.trim(), "inactive linux");

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY hello /hello\nRUN cat /hello\nLABEL via=docker\n",
            k.base
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("hello"), "hello through docker build\n").unwrap();
    let iid = ctx.path().join("iid");
    let out = docker.run(
        &[
            "build",
            "-t",
            "web:1",
            "--iidfile",
            iid.to_str().unwrap(),
            ".",
        ],
        b"",
        Some(ctx.path()),
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log()
    );
    let log = stdout(&out);
    assert!(log.contains("hello through docker build"), "{log}");
    assert!(log.contains("Successfully tagged web:1"), "{log}");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");

    let images = docker.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        images.contains(&format!("web:1 {}", &id[7..19])),
        "{images}"
    );
    let inspected = docker.ok(&[
        "inspect",
        "--format",
        "{{.Id}} {{index .Config.Labels \"via\"}}",
        "web:1",
    ]);
    assert_eq!(inspected.trim(), format!("{id} docker"));
    let history = docker.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}",
        "web:1",
    ]);
    let first = history.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("{id}|")), "{history}");
    assert!(history.contains("COPY hello /hello"), "{history}");
    docker.ok(&["tag", "web:1", "web:2"]);
    let filtered = docker.ok(&[
        "images",
        "--filter",
        "reference=web:2",
        "--format",
        "{{.Tag}}",
    ]);
    assert_eq!(filtered.trim(), "2");

    // save, remove, load: the same ID comes back under its names.
    let archive = ctx.path().join("web.tar");
    docker.ok(&["save", "-o", archive.to_str().unwrap(), "web:1"]);
    let removed = docker.ok(&["rmi", "web:1", "web:2"]);
    assert!(
        removed.contains("Untagged: web:1") && removed.contains("Untagged: web:2"),
        "{removed}"
    );
    let gone = docker.run(&["inspect", "web:1"], b"", None);
    assert!(!gone.status.success());
    let loaded = docker.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: web:1"), "{loaded}");
    let again = docker.ok(&["inspect", "--format", "{{.Id}}", "web:1"]);
    assert_eq!(again.trim(), id);
    // The kiln CLI shares the store.
    assert_eq!(k.image_id("web:1"), id);
    // docker events replays what the daemon did.
    let events = docker.events_so_far(&["type=image"], "{{.Action}} {{.Actor.Attributes.name}}");
    for expected in [
        "tag web:1",
        "tag web:2",
        "untag web:1",
        "untag web:2",
        "load",
    ] {
        assert!(
            events.contains(expected),
            "{expected:?} missing from:\n{events}"
        );
    }
    // A failing RUN: the CLI shows dockerd's message and exits with the RUN's code.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nRUN exit 7\n", k.base),
    )
    .unwrap();
    let failed = docker.run(&["build", "-t", "broken", "."], b"", Some(ctx.path()));
    assert_eq!(failed.status.code(), Some(7), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("returned a non-zero code: 7"),
        "{}",
        stderr(&failed)
    );
    let missing = docker.run(&["rmi", "nope:1"], b"", None);
    assert!(
        stderr(&missing).contains("No such image: nope:1"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn docker_login_push_and_pull_through_kiln_serve() {
    let k = Kiln::new();
    let tls = TlsRegistry::start(&[("alice", "s3cret")], false).unwrap();
    let d = Daemon::start(
        &k,
        &[("KILN_REGISTRY_CERTS_DIR", tls.certs_dir.path())],
        &[],
    );
    let docker = Docker::new(&d);
    let registry = tls.registry.addr();
    docker.ok(&["pull", &k.base]);
    let remote = format!("{registry}/team/app:1");
    docker.ok(&["tag", &k.base, &remote]);

    let refused = docker.run(
        &["login", "-u", "alice", "--password-stdin", &registry],
        b"wrong\n",
        None,
    );
    assert!(!refused.status.success(), "a wrong password logged in");
    let unauthenticated = docker.run(&["push", &remote], b"", None);
    assert!(
        !unauthenticated.status.success(),
        "pushed without credentials"
    );

    let login = docker.run(
        &["login", "-u", "alice", "--password-stdin", &registry],
        b"s3cret\n",
        None,
    );
    assert!(login.status.success(), "{}\n{}", stderr(&login), d.log());
    assert!(stdout(&login).contains("Login Succeeded"));
    let pushed = docker.ok(&["push", &remote]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    docker.ok(&["rmi", &remote]);
    let pulled = docker.ok(&["pull", &remote]);
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    let id = docker.ok(&["inspect", "--format", "{{.Id}}", &remote]);
    let base_id = docker.ok(&["inspect", "--format", "{{.Id}}", &k.base]);
    assert_eq!(id, base_id);
}

#[test]
fn tcp_needs_mutual_tls_and_the_right_client_certificate() {
    let k = Kiln::new();
    let ca = kiln_testkit::TestCa::new().unwrap();
    let (server_cert, server_key) = ca.issue("server", false).unwrap();
    let (client_cert, client_key) = ca.issue("client", true).unwrap();
    let other = kiln_testkit::TestCa::new().unwrap();
    let (stranger_cert, stranger_key) = other.issue("stranger", true).unwrap();
    let port = kiln_testkit::free_port();
    let host = format!("tcp://127.0.0.1:{port}");
    let d = Daemon::start(
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
    let docker = |cert: Option<(&Path, &Path)>| {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_CONFIG", d.dir.path())
            .env_remove("DOCKER_HOST")
            .args(["-H", &host, "--tlscacert", ca.cert_path().to_str().unwrap()]);
        match cert {
            Some((c, key)) => command.args([
                "--tlsverify",
                "--tlscert",
                c.to_str().unwrap(),
                "--tlskey",
                key.to_str().unwrap(),
            ]),
            // --tls: the server is verified, no client certificate is sent.
            None => command.args(["--tls"]),
        };
        command.args(["version", "--format", "{{.Server.APIVersion}}"]);
        super::output_within(command, b"", super::CLIENT_LIMIT)
    };
    let good = docker(Some((&client_cert, &client_key)));
    assert!(good.status.success(), "{}\n{}", stderr(&good), d.log());
    assert_eq!(stdout(&good).trim(), "1.41");
    let anonymous = docker(None);
    assert!(
        !anonymous.status.success(),
        "served a client without a certificate"
    );
    let stranger = docker(Some((&stranger_cert, &stranger_key)));
    assert!(
        !stranger.status.success(),
        "served a certificate from another CA"
    );
    // The UNIX socket is served beside it, and the daemon is still up.
    assert_eq!(d.get("/_ping").status, 200);
    // tcp:// without --tlsverify is refused; --tlsverify without its files too.
    let plain = k.cmd(&["serve", "--host", &host]);
    assert!(stderr(&plain).contains("plain TCP"), "{}", stderr(&plain));
    let partial = k.cmd(&["serve", "--host", &host, "--tlsverify"]);
    assert!(
        stderr(&partial).contains("--tlscacert"),
        "{}",
        stderr(&partial)
    );
}
