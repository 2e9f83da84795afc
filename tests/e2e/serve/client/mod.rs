//! `kiln --host`: the kiln CLI as a client of `kiln serve`, over the UNIX socket and over
//! mutual TLS. The client runs with a store of its own that must stay empty, so every command
//! is shown to have gone through the API rather than run in-process. `containers.rs`: images,
//! builds and the container lifecycle; `registry.rs`: pull/push with credentials, and mutual
//! TLS; `archives.rs`: volumes, commit, save/load/import.

mod archives;
mod containers;
mod registry;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::super::harness::{assert_success, stderr, stdout};

/// `kiln` against `host`, with an empty store of its own and `KILN_HOST` unset unless given.
pub struct ClientCli {
    host: String,
    pub root: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl ClientCli {
    pub fn new(host: String) -> ClientCli {
        ClientCli {
            host,
            root: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = crate::e2e::harness::kiln_command();
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

    pub fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kiln")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert_success(&out, args);
        stdout(&out)
    }

    /// Fails with a message containing `needle` (on stderr), without a panic.
    pub fn fails(&self, args: &[&str], needle: &str) -> Output {
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
    pub fn assert_local_store_unused(&self) {
        let out = crate::e2e::harness::kiln_command()
            .env("KILN_ROOT", self.root.path())
            .env_remove("KILN_HOST")
            .arg("images")
            .output()
            .unwrap();
        assert_success(&out, &["images"]);
        assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    }
}

pub fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// Runs the client with `input` on its stdin; its stdout, after checking it succeeded.
pub fn with_stdin(c: &ClientCli, args: &[&str], input: &[u8]) -> String {
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

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
