//! The docker 20.10 client (Debian bookworm's `docker.io`, API 1.41, the legacy builder by
//! default) against `kiln serve`: a client that negotiates the version kiln speaks rather than
//! a newer one, driving a build, a container's whole life and inspection.
//!
//! The binary is the package's client only, extracted by scripts/setup.sh into
//! `/var/cache/kiln/docker-20.10/docker` (`KILN_DOCKER_2010` names another); the daemon of that
//! package is not installed for the tests.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::super::harness::{Kiln, stderr, stdout};
use super::Daemon;

fn client() -> PathBuf {
    let path = std::env::var_os("KILN_DOCKER_2010")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kiln/docker-20.10/docker"));
    assert!(
        path.is_file(),
        "the docker 20.10 client is not at {} (scripts/setup.sh extracts it)",
        path.display()
    );
    path
}

struct Docker2010<'a> {
    daemon: &'a Daemon,
    binary: PathBuf,
    config: tempfile::TempDir,
}

impl Docker2010<'_> {
    fn run(&self, args: &[&str], dir: Option<&std::path::Path>) -> Output {
        let mut command = Command::new(&self.binary);
        command
            .env("DOCKER_CONFIG", self.config.path())
            // 20.10 builds with the legacy builder unless told otherwise; say so anyway.
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_API_VERSION")
            .args(["-H", &self.daemon.host()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command.output().expect("run the docker 20.10 client")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "docker 20.10 {args:?} failed\n--- stdout\n{}\n--- stderr\n{}\n--- daemon\n{}",
            stdout(&out),
            stderr(&out),
            self.daemon.log()
        );
        stdout(&out)
    }
}

#[test]
fn the_docker_2010_client_builds_runs_and_inspects_through_kiln_serve() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker2010 {
        daemon: &d,
        binary: client(),
        config: tempfile::tempdir().unwrap(),
    };
    let version = docker.ok(&[
        "version",
        "--format",
        "{{.Client.Version}} {{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}",
    ]);
    assert!(version.starts_with("20.10."), "{version}");
    assert!(version.trim().ends_with(" 1.41 1.41 1.24"), "{version}");

    // A legacy build: every instruction numbered, the RUN's output, the cache on a rebuild.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}\nENV GREETING=hello\nCOPY msg /msg\nRUN cat /msg\nCMD [\"sh\", \"-c\", \"echo $GREETING from 2010; cat /msg\"]\n",
            k.base
        ),
    )
    .unwrap();
    std::fs::write(ctx.path().join("msg"), "built by docker 20.10\n").unwrap();
    let build = |tag: &str| {
        let out = docker.run(&["build", "-t", tag, "."], Some(ctx.path()));
        assert!(
            out.status.success(),
            "{}\n{}\n{}",
            stdout(&out),
            stderr(&out),
            d.log()
        );
        stdout(&out)
    };
    let log = build("old:1");
    for line in [
        "Step 2/5 : ENV GREETING=hello",
        "Step 5/5 : CMD",
        "built by docker 20.10",
        "Successfully tagged old:1",
    ] {
        assert!(log.contains(line), "{line:?} missing:\n{log}");
    }
    let again = build("old:2");
    assert_eq!(again.matches("Using cache").count(), 4, "{again}");

    let images = docker.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.contains("old:1") && images.contains("old:2"),
        "{images}"
    );

    // run --rm: the output, then nothing left behind.
    let said = docker.ok(&["run", "--rm", "--network", "none", "old:1"]);
    assert_eq!(said, "hello from 2010\nbuilt by docker 20.10\n");
    let failing = docker.run(&["run", "--rm", "old:1", "sh", "-c", "exit 5"], None);
    assert_eq!(failing.status.code(), Some(5), "{}", stderr(&failing));

    // A detached, named container: ps, logs, exec, inspect, stop, rm -f.
    let id = docker.ok(&[
        "run",
        "-d",
        "--name",
        "old-web",
        "old:1",
        "sh",
        "-c",
        "echo up; echo warn >&2; exec sleep 300",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let ps = docker.ok(&["ps", "-a", "--format", "{{.Names}} {{.Image}} {{.State}}"]);
    assert!(ps.contains("old-web old:1 running"), "{ps}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = docker.run(&["logs", "old-web"], None);
        if stdout(&out) == "up\n" && stderr(&out) == "warn\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs: {:?} / {:?}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let exec = docker.run(
        &[
            "exec",
            "old-web",
            "sh",
            "-c",
            "echo $GREETING in exec; exit 3",
        ],
        None,
    );
    assert_eq!(stdout(&exec), "hello in exec\n");
    assert_eq!(exec.status.code(), Some(3));
    let inspected = docker.ok(&[
        "inspect",
        "--format",
        "{{.Id}} {{.Name}} {{.State.Running}} {{.Config.Image}}",
        "old-web",
    ]);
    assert_eq!(inspected.trim(), format!("{id} /old-web true old:1"));
    let image_id = docker.ok(&["inspect", "--format", "{{.Id}}", "old:1"]);
    assert_eq!(image_id.trim(), k.image_id("old:1"));
    docker.ok(&["stop", "-t", "1", "old-web"]);
    let stopped = docker.ok(&[
        "ps",
        "-a",
        "--filter",
        "name=old-web",
        "--format",
        "{{.State}}",
    ]);
    assert_eq!(stopped.trim(), "exited");
    docker.ok(&["start", "old-web"]);
    docker.ok(&["rm", "-f", "old-web"]);
    let gone = docker.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!gone.contains("old-web"), "{gone}");
    let missing = docker.run(&["inspect", "old-web"], None);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("No such object: old-web"),
        "{}",
        stderr(&missing)
    );
}
