//! The container lifecycle: `run -d`, `ps`, `logs`, `exec`, `stop` with the image's
//! STOPSIGNAL, `kill`, `wait`, `rm`, `commit`, health checks, `-it` on a pty, and the errors.
//! Every kiln command is a separate process, so each check also shows that the state lives in
//! the store.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::harness::{Kiln, assert_success, stderr, stdout};

/// Removes every container of the store (killing running ones, which ends their supervisors)
/// when a test ends, passed or not, and checks that no process of that store is left.
pub struct Cleanup<'a>(pub &'a Kiln);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let ids = stdout(&self.0.cmd(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.0.cmd(&["rm", "-f", "-v", id]);
        }
        let root = self.0.root.path().to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_using(&root).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = processes_using(&root);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "processes left behind: {left:?}");
        }
    }
}

/// Pids and command lines of the supervisors of the store `root` (they carry `--root ROOT`).
pub fn processes_using(root: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(root)
                && cmdline.contains(kiln_runtime::supervisor::SUPERVISOR_MARKER)
            {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

/// Builds `tag` from a Dockerfile whose first lines are `ARG BASE` / `FROM ${BASE}`.
pub fn image(k: &Kiln, tag: &str, body: &str) {
    let out = k.build_dockerfile(tag, &format!("ARG BASE\nFROM ${{BASE}}\n{body}"), &[]);
    assert_success(&out, &["build", tag]);
}

/// Polls `check` every 100 ms for up to 30 s.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn failure(k: &Kiln, args: &[&str]) -> String {
    let out = k.cmd(args);
    assert!(
        !out.status.success(),
        "kiln {args:?} should have failed: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[test]
fn detached_container_lifecycle() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    image(
        &k,
        "svc:1",
        "STOPSIGNAL SIGUSR1\nRUN echo from-the-image > /greeting\n\
         CMD [\"sh\", \"-c\", \"trap 'echo stopping; exit 7' USR1; echo started; echo warn >&2; while true; do sleep 0.1; done\"]\n",
    );
    let id = k.ok(&["run", "-d", "--name", "web", "svc:1"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the container ID: {id}");

    // ps (another process) sees it running, by name and by short ID.
    let ps = k.ok(&["ps"]);
    let header = ps.lines().next().unwrap();
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = ps.lines().find(|l| l.ends_with("web")).expect("web in ps");
    assert!(row.starts_with(&id[..12]) && row.contains("Up "), "{row}");

    eventually("the log", || k.ok(&["logs", "web"]).contains("started"));
    let logs = k.cmd(&["logs", "web"]);
    assert_eq!(stdout(&logs), "started\n");
    assert_eq!(stderr(&logs), "warn\n", "stderr stays stderr");
    let raw = std::fs::read_to_string(
        k.root
            .path()
            .join("containers")
            .join(id)
            .join("container.log"),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert!(
        first["stream"].is_string() && first["time"].is_string(),
        "{first}"
    );

    // exec joins the container: its files, its processes, its hostname.
    let seen = k.ok(&["exec", &id[..12], "sh", "-c", "cat /greeting; hostname; ps"]);
    assert!(
        seen.starts_with(&format!("from-the-image\n{}\n", &id[..12])),
        "{seen}"
    );
    assert!(
        seen.contains("sleep 0.1") || seen.contains("while true"),
        "{seen}"
    );
    let out = k.cmd(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "1 /tmp 1000\n");

    // Clear errors.
    assert!(failure(&k, &["run", "-d", "--name", "web", "svc:1"]).contains("already in use"));
    assert!(failure(&k, &["rm", "web"]).contains("container is running"));
    assert!(failure(&k, &["stop", "nope"]).contains("no such container: nope"));
    assert!(failure(&k, &["exec", "nope", "true"]).contains("no such container"));

    // stop sends the image's STOPSIGNAL; the trap's exit code is recorded; wait prints it.
    let waiter = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["wait", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(k.ok(&["stop", "web"]), "web\n");
    assert_eq!(stdout(&waiter.wait_with_output().unwrap()), "7\n");
    assert_eq!(k.ok(&["wait", "web"]), "7\n");
    assert!(k.ok(&["logs", "web"]).ends_with("stopping\n"));
    assert!(
        !k.ok(&["ps"]).contains("web"),
        "ps hides stopped containers"
    );
    assert!(k.ok(&["ps", "-a"]).contains("Exited (7)"));
    let state = &k.inspect("web")["State"];
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["Running"], false);
    assert_eq!(state["ExitCode"], 7);
    assert!(failure(&k, &["exec", "web", "true"]).contains("is not running"));

    assert_eq!(k.ok(&["rm", "web"]), "web\n");
    assert!(!k.root.path().join("containers").join(id).exists());
    assert!(failure(&k, &["inspect", "web"]).contains("no such container or image: web"));
}

#[test]
fn stop_kills_after_the_grace_time_and_rm_f_kills() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let base = k.base.as_str();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        base,
        "sh",
        "-c",
        "trap '' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    let started = Instant::now();
    k.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        k.ok(&["wait", "stubborn"]),
        "137\n",
        "SIGKILL after the grace time"
    );

    k.ok(&["run", "-d", "--name", "forced", base, "sleep", "600"]);
    k.ok(&["kill", "-s", "TERM", "forced"]);
    assert_eq!(k.ok(&["wait", "forced"]), "143\n");
    k.ok(&["run", "-d", "--name", "again", base, "sleep", "600"]);
    k.ok(&["rm", "-f", "again"]);
    assert!(!k.ok(&["ps", "-a"]).contains("again"));

    // --rm on a detached container: gone once it exits; logs -f follows it to the end, and
    // wait still gets its exit code.
    let id = k.ok(&[
        "run",
        "-d",
        "--rm",
        base,
        "sh",
        "-c",
        "echo one; sleep 1; echo two; exit 3",
    ]);
    let waiter = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["wait", id.trim()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let follow = k.ok(&["logs", "-f", id.trim()]);
    assert_eq!(follow, "one\ntwo\n");
    assert_eq!(stdout(&waiter.wait_with_output().unwrap()), "3\n");
    eventually("--rm removal", || !k.ok(&["ps", "-aq"]).contains(&id[..12]));

    // -dt: the process has a terminal, its output is logged from the pty.
    let id = k.ok(&["run", "-dt", base, "sh", "-c", "test -t 1 && echo on-a-tty"]);
    assert_eq!(k.ok(&["wait", id.trim()]), "0\n");
    assert_eq!(k.ok(&["logs", id.trim()]), "on-a-tty\r\n");

    // A program that does not exist: Docker's 127, the error, a container left to inspect.
    let out = k.cmd(&["run", "-d", "--name", "broken", base, "no-such-program"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );
    assert_eq!(k.inspect("broken")["State"]["ExitCode"], 127);
    let out = k.cmd(&["run", "--rm", base, "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("executable file not found"),
        "{}",
        stderr(&out)
    );

    // A supervisor killed with SIGKILL takes its container with it, and the record says so.
    // (`sleep 613`: a command line no other test runs.)
    k.ok(&["run", "-d", "--name", "orphan", base, "sleep", "613"]);
    let root = k.root.path().to_string_lossy().into_owned();
    let supervisors = processes_using(&root);
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    let pid = rustix::process::Pid::from_raw(supervisors[0].0).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    eventually("the orphan's end", || {
        k.ok(&["ps", "-a"]).contains("Exited (255)")
    });
    assert_eq!(k.ok(&["wait", "orphan"]), "255\n");
    eventually("no sleep 613 left", || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00613\x00")
        })
    });

    // A generated name, and --init accepted.
    k.ok(&["run", "-d", "--init", base, "sleep", "600"]);
    let ps = k.ok(&["ps"]);
    let name = ps
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    assert!(name.contains('_'), "adjective_surname: {name}");
}

#[test]
fn foreground_container_is_visible_to_other_kiln_processes() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let mut fg = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args([
            "run",
            "--name",
            "fg",
            &k.base,
            "sh",
            "-c",
            "echo hi > /tmp/mark; exec sleep 600",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("fg running", || k.ok(&["ps"]).contains("fg"));
    eventually("fg's file", || {
        k.cmd(&["exec", "fg", "cat", "/tmp/mark"]).status.success()
    });
    assert_eq!(k.ok(&["exec", "fg", "cat", "/tmp/mark"]), "hi\n");
    k.ok(&["kill", "fg"]);
    assert_eq!(fg.wait().unwrap().code(), Some(137));
    assert_eq!(k.inspect("fg")["State"]["ExitCode"], 137);
}

#[test]
fn healthcheck_goes_healthy_then_unhealthy() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    image(
        &k,
        "checked:1",
        "HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD test -f /tmp/ok && echo fine\n\
         CMD [\"sleep\", \"600\"]\n",
    );
    image(
        &k,
        "patient:1",
        "HEALTHCHECK --interval=1s --start-period=120s --start-interval=1s --retries=1 CMD test -f /tmp/ok\n\
         CMD [\"sleep\", \"600\"]\n",
    );
    k.ok(&["run", "-d", "--name", "hc", "checked:1"]);
    k.ok(&["run", "-d", "--name", "patient", "patient:1"]);
    let health = |name: &str| k.inspect(name)["State"]["Health"].clone();
    let status = || {
        health("hc")["Status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // Failures during the start period do not count: still starting after two of them.
    eventually("two probes", || {
        health("patient")["Log"]
            .as_array()
            .is_some_and(|l| l.len() >= 2)
    });
    let patient = health("patient");
    assert_eq!(patient["Status"], "starting", "{patient}");
    assert_eq!(patient["FailingStreak"], 0);
    assert!(k.ok(&["ps"]).contains("(health: starting)"));
    // A success in the start period counts at once.
    k.ok(&["exec", "patient", "touch", "/tmp/ok"]);
    eventually("patient healthy", || {
        health("patient")["Status"] == "healthy"
    });

    eventually("unhealthy", || status() == "unhealthy");
    assert!(k.ok(&["ps"]).contains("(unhealthy)"));
    k.ok(&["exec", "hc", "touch", "/tmp/ok"]);
    eventually("healthy", || status() == "healthy");
    assert!(k.ok(&["ps"]).contains("(healthy)"));
    let health = &k.inspect("hc")["State"]["Health"];
    assert_eq!(health["FailingStreak"], 0);
    let log = health["Log"].as_array().unwrap();
    assert!(log.len() <= 5);
    assert_eq!(log.last().unwrap()["Output"], "fine\n");
    assert_eq!(log.last().unwrap()["ExitCode"], 0);
}

/// Runs kiln with a pty of the test's as its terminal (33x77), answering the shell's output,
/// and resizing the terminal (with the SIGWINCH a terminal emulator would cause) midway.
/// Returns the exit code and everything kiln wrote.
fn drive_on_a_pty(k: &Kiln, args: &[&str]) -> (Option<i32>, String) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use rustix::termios::{LocalModes, Winsize, tcgetattr, tcsetwinsize};
    let size = |rows, cols| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    tcsetwinsize(&master, size(33, 77)).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut child = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(args)
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(master);
    let mut reader = master.try_clone().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    master.write_all(b"stty size\n").unwrap();
    eventually("the first window size", || {
        seen.lock().unwrap().contains("33 77")
    });
    tcsetwinsize(&master, size(40, 100)).unwrap();
    let kiln = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(kiln, rustix::process::Signal::WINCH).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    master
        .write_all(b"stty size; test -t 0 && echo is-a-$((6*7)); exit 5\n")
        .unwrap();
    let status = child.wait().unwrap();
    let modes = tcgetattr(&slave).unwrap().local_modes;
    assert!(
        modes.contains(LocalModes::ICANON | LocalModes::ECHO),
        "raw mode is undone at exit: {modes:?}"
    );
    drop(slave);
    output.join().unwrap();
    let out = seen.lock().unwrap().clone();
    (status.code(), out)
}

#[test]
fn run_it_and_exec_it_use_a_pty_with_the_callers_window_size() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let (code, out) = drive_on_a_pty(&k, &["run", "-it", "--rm", &k.base, "sh"]);
    assert_eq!(code, Some(5), "the shell's exit code: {out:?}");
    assert!(out.contains("40 100"), "SIGWINCH forwarded: {out:?}");
    assert!(out.contains("is-a-42"), "stdin is a terminal: {out:?}");

    k.ok(&["run", "-d", "--name", "box", &k.base, "sleep", "600"]);
    let (code, out) = drive_on_a_pty(&k, &["exec", "-it", "box", "sh"]);
    assert_eq!(code, Some(5), "{out:?}");
    assert!(out.contains("40 100") && out.contains("is-a-42"), "{out:?}");
}

#[test]
fn commit_makes_an_image_of_the_changes() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    k.ok(&[
        "run",
        "--name",
        "changer",
        "-e",
        "MODE=committed",
        &k.base,
        "sh",
        "-c",
        "echo changed > /new.txt; rm /etc/group; echo done-changing; echo err >&2",
    ]);
    // A foreground container's output reached the caller and is in its log, as in Docker.
    let logs = k.cmd(&["logs", "changer"]);
    assert_eq!(
        (stdout(&logs).as_str(), stderr(&logs).as_str()),
        ("done-changing\n", "err\n")
    );
    let id = k.ok(&["commit", "-m", "my change", "changer", "snap:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let img = k.inspect("snap:1");
    assert_eq!(
        img["History"].as_array().unwrap().last().unwrap()["comment"],
        "my change"
    );
    assert_eq!(
        img["Config"]["Cmd"][0], "sh",
        "the container's command becomes CMD"
    );
    let out = k.ok(&[
        "run",
        "--rm",
        "snap:1",
        "sh",
        "-c",
        "cat /new.txt; echo $MODE; test -e /etc/group || echo no-group",
    ]);
    assert_eq!(out, "changed\ncommitted\nno-group\n");
    assert!(failure(&k, &["commit", "nope", "x:1"]).contains("no such container"));
}
