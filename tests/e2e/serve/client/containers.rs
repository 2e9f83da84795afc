//! The kiln CLI through `kiln serve` over its UNIX socket: pull, build, images, tag, the
//! container lifecycle (run -d, foreground run, exec, attach, start -a, -t under a pty),
//! push and pull back, errors and refusals.

use std::process::Command;
use std::time::{Duration, Instant};

use super::super::super::harness::{Kiln, assert_success, stderr, stdout};
use super::super::Daemon;
use super::{ClientCli, context, wait_for, with_stdin};

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
    // --shm-size and --ulimit travel as `shmsize` and `ulimits`.
    let limits = context(&[(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nRUN df -k /dev/shm | tail -1 && echo \"nofile $(ulimit -n) $(ulimit -Hn)\"\n",
    )]);
    let out = c.cmd(&[
        "build",
        "--build-arg",
        &base_arg,
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=1234:2345",
        limits.path().to_str().unwrap(),
    ]);
    assert_success(&out, &["build", "--shm-size", "--ulimit"]);
    assert!(stderr(&out).contains(" 131072 "), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nofile 1234 2345"),
        "{}",
        stderr(&out)
    );

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
    c.fails(
        &[
            "build",
            "--build-context",
            "lib=.",
            "--ssh",
            "default",
            ctx.path().to_str().unwrap(),
        ],
        "--build-context, --ssh cannot go through --host",
    );
    // Nothing of this ran in the client's own store.
    c.assert_local_store_unused();

    // KILN_HOST does what --host does.
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", c.root.path())
        .env("KILN_HOST", d.host())
        .args(["images", "--filter", "reference=client-app"])
        .output()
        .unwrap();
    assert_success(&out, &["images"]);
    assert!(stdout(&out).contains("client-app"), "{}", stdout(&out));
}
