//! `--ssh` with `RUN --mount=type=ssh` (issue 15): an `ssh-agent` the test starts, forwarded
//! by socket (`default` from `$SSH_AUTH_SOCK`), or keys made with `ssh-keygen` loaded into an
//! agent of kiln's own; the RUN lists the agent's keys with the host's `ssh-add` (bound in
//! from a named context), also as a non-root user. The socket never reaches the image; an
//! unreachable agent, a missing key or a required agent not given fail naming it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// An `ssh-agent` on a socket in a temp dir, holding one new ed25519 key.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        let keygen = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "kiln-agent-key",
                "-f",
            ])
            .arg(&key)
            .status()
            .unwrap();
        assert!(keygen.success());
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let add = Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .status()
            .unwrap();
        assert!(add.success());
        Agent { child, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host's `ssh-add` with the libraries it links and their loader, for a named context.
fn ssh_add_tools() -> tempfile::TempDir {
    let tools = tempfile::tempdir().unwrap();
    let ldd = Command::new("ldd")
        .arg("/usr/bin/ssh-add")
        .output()
        .unwrap();
    let mut files = vec![PathBuf::from("/usr/bin/ssh-add")];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        files.extend(path);
    }
    for file in files {
        let name = file.file_name().unwrap();
        std::fs::copy(&file, tools.path().join(name)).unwrap();
    }
    // One name for the loader, whatever the architecture calls it.
    let loader = std::fs::read_dir(tools.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ld-linux")
        })
        .unwrap();
    std::fs::rename(loader, tools.path().join("ld.so")).unwrap();
    tools
}

fn kiln(k: &Kiln, args: &[&str], auth_sock: Option<&Path>) -> Output {
    let mut cmd = crate::e2e::harness::kiln_command();
    cmd.env("KILN_ROOT", k.root.path()).args(args);
    match auth_sock {
        Some(sock) => cmd.env("SSH_AUTH_SOCK", sock),
        None => cmd.env_remove("SSH_AUTH_SOCK"),
    };
    cmd.output().unwrap()
}

const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\n\
RUN --mount=type=ssh --mount=type=bind,from=tools,target=/tools \
    /tools/ld.so --library-path /tools /tools/ssh-add -l && echo \"sock=$SSH_AUTH_SOCK\"\n\
USER 1000\n\
RUN --mount=type=ssh,id=deploy,uid=1000,target=/tmp/agent \
    --mount=type=bind,from=tools,target=/tools \
    /tools/ld.so --library-path /tools /tools/ssh-add -l && echo \"user=$(id -u)\"\n";

#[test]
fn agents_and_keys_are_forwarded_into_run_steps() {
    let k = Kiln::new();
    let agent = Agent::start();
    let tools = ssh_add_tools();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let base = format!("BASE={}", k.base);
    let named = format!("tools={}", tools.path().display());
    let key = agent.dir.path().join("id_ed25519");
    let deploy = format!("deploy={}", key.display());
    let dir = ctx.path().to_str().unwrap();
    let args = [
        "build",
        "-t",
        "ssh:1",
        "--progress",
        "plain",
        "--network",
        "none",
        "--build-arg",
        &base,
        "--build-context",
        &named,
        "--ssh",
        "default",
        "--ssh",
        &deploy,
        dir,
    ];
    let out = kiln(&k, &args, Some(&agent.socket()));
    assert_success(&out, &args);
    let log = stderr(&out);
    // Both agents list the key: the test's own, and kiln's loaded from the key file.
    assert_eq!(log.matches("kiln-agent-key (ED25519)").count(), 2, "{log}");
    assert!(log.contains("sock=/run/buildkit/ssh_agent.0"), "{log}");
    assert!(log.contains("user=1000"), "{log}");
    // Nothing of the sockets is in the image.
    for path in ["/run/buildkit", "/tmp/agent"] {
        let out = k.cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            "ssh:1",
            "ls",
            "-a",
            path,
        ]);
        assert!(
            !out.status.success(),
            "{path} is in the image: {}",
            stdout(&out)
        );
    }
    // kiln's own agent is gone with the build; tmp/ holds nothing.
    let tmp = k.root.path().join("tmp");
    assert!(std::fs::read_dir(&tmp).map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn unreachable_agents_and_missing_keys_are_named() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nRUN --mount=type=ssh,required=true true\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let dead = tempfile::tempdir().unwrap();
    // A socket nobody listens on any more.
    let sock = dead.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let missing_key = dead.path().join("no_such_key");
    let missing = format!("deploy={}", missing_key.display());
    let cases: [(&[&str], Option<&Path>, &str); 4] = [
        (&["--ssh", "default"], Some(&sock), "dead.sock"),
        (&["--ssh", "default"], None, "SSH_AUTH_SOCK"),
        (&["--ssh", &missing], None, "no_such_key"),
        (&[], None, "ssh agent default is required"),
    ];
    for (flags, auth_sock, expect) in cases {
        let mut args = vec!["build", "--network", "none", "--build-arg", &base];
        args.extend_from_slice(flags);
        args.push(dir);
        let out = kiln(&k, &args, auth_sock);
        assert!(!out.status.success(), "{flags:?} built");
        assert!(stderr(&out).contains(expect), "{flags:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}
