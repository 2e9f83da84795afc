//! The container runtime through the CLI: every container runs under its own supervisor, so a
//! foreground `kiln run` gets health probes, `create`/`start -a`/`attach`/`restart` work on the
//! same state, several clients attach at once, and killing a client leaves the container
//! running.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::containers::{Cleanup, eventually, image};
use super::harness::{Kiln, stderr, stdout};

fn spawn(k: &Kiln, args: &[&str], stdin: Stdio) -> Child {
    crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln")
}

fn running(k: &Kiln, name: &str) -> bool {
    k.inspect(name)["State"]["Running"] == true
}

/// Reads lines from `child`'s stdout on a thread; the receiver gets each line.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &std::sync::mpsc::Receiver<String>, want: &str, who: &str) {
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{who} saw no line (wanted {want:?}): {e}"));
    assert_eq!(line, want, "{who}");
}

#[test]
fn a_foreground_run_is_health_checked() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    image(
        &k,
        "probed:1",
        "HEALTHCHECK --interval=1s --timeout=5s CMD true\nCMD [\"sleep\", \"4\"]\n",
    );
    let out = k.cmd(&["run", "--name", "fg", "probed:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let health = k.inspect("fg")["State"]["Health"].clone();
    assert_eq!(health["Status"], "healthy", "{health}");
    assert!(
        !health["Log"].as_array().unwrap().is_empty(),
        "probes are logged: {health}"
    );
}

#[test]
fn attach_from_other_processes_echoes_stdin_to_every_client() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    k.ok(&["run", "-d", "-i", "--name", "xa", &k.base, "cat"]);
    assert!(running(&k, "xa"));

    let mut writer = spawn(&k, &["attach", "xa"], Stdio::piped());
    let mut watcher = spawn(&k, &["attach", "--no-stdin", "xa"], Stdio::null());
    let (from_writer, from_watcher) = (lines(&mut writer), lines(&mut watcher));
    // Both are attached once the supervisor relays what the writer sends; the first lines
    // may go before the watcher is connected, so keep sending until it sees one.
    let mut input = writer.stdin.take().unwrap();
    let mut seen = None;
    for i in 0..100 {
        writeln!(input, "ping {i}").unwrap();
        input.flush().unwrap();
        if let Ok(line) = from_watcher.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let seen = seen.expect("the second client never saw the output");
    assert!(seen.starts_with("ping "), "{seen}");
    writeln!(input, "hello").unwrap();
    input.flush().unwrap();
    // The writer sees its own lines echoed by cat, in order, ending with hello.
    let mut last = String::new();
    while last != "hello" {
        last = from_writer
            .recv_timeout(Duration::from_secs(20))
            .expect("the writer's echo");
    }
    let mut last = String::new();
    while last != "hello" {
        last = from_watcher
            .recv_timeout(Duration::from_secs(20))
            .expect("the watcher's copy");
    }

    // Killing a client (even with SIGKILL) leaves the container running, and its stdin open
    // for the next client.
    writer.kill().unwrap();
    writer.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(running(&k, "xa"), "killing an attach stopped the container");
    let mut again = spawn(&k, &["attach", "xa"], Stdio::piped());
    let from_again = lines(&mut again);
    let mut input = again.stdin.take().unwrap();
    writeln!(input, "still here").unwrap();
    input.flush().unwrap();
    expect_line(&from_again, "still here", "a later client");
    expect_line(&from_watcher, "still here", "the watcher");

    // The container's end ends every client, with the container's exit code.
    k.ok(&["kill", "xa"]);
    let status = watcher.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(137),
        "attach exits with the container's code"
    );
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn start_attached_streams_a_created_containers_output() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let id = k.ok(&[
        "create",
        "--name",
        "cc",
        &k.base,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert_eq!(k.inspect("cc")["State"]["Status"], "created");
    let out = k.cmd(&["start", "-a", "cc"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // Started again (not attached), it runs again: the log keeps both runs, apart.
    k.ok(&["start", "cc"]);
    assert_eq!(k.ok(&["wait", "cc"]).trim(), "3");
    let logs = k.cmd(&["logs", "cc"]);
    assert_eq!(stdout(&logs), "out\nout\n");
    assert_eq!(stderr(&logs), "err\nerr\n");
    // The last two lines are the second run's (its stdout and stderr, in either order).
    let tail = k.cmd(&["logs", "--tail", "2", "cc"]);
    assert_eq!(
        (stdout(&tail).as_str(), stderr(&tail).as_str()),
        ("out\n", "err\n")
    );
    let stamped = k.ok(&["logs", "-t", "--tail", "2", "cc"]);
    assert!(stamped.ends_with("Z out\n"), "{stamped}");
    let future = k.ok(&["logs", "--since", "2999-01-01T00:00:00Z", "cc"]);
    assert_eq!(future, "");

    // Attaching to a container that is not running is a conflict, named.
    let out = k.cmd(&["attach", "cc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("container cc is not running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn killing_the_foreground_client_leaves_the_container_running() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let mut client = spawn(
        &k,
        &["run", "--name", "fg", &k.base, "sleep", "600"],
        Stdio::null(),
    );
    eventually("the container to run", || {
        k.cmd(&["inspect", "fg"]).status.success() && running(&k, "fg")
    });
    client.kill().unwrap();
    client.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(running(&k, "fg"), "the container died with its client");

    // An exec is an instance with its own record: its exit code is kept.
    let out = k.cmd(&["exec", "fg", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let id = k.inspect("fg")["Id"].as_str().unwrap().to_owned();
    let execs: Vec<serde_json::Value> =
        std::fs::read_dir(k.root.path().join("containers").join(&id).join("execs"))
            .unwrap()
            .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
            .collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(execs[0]["ExitCode"], 5);
    assert_eq!(execs[0]["Running"], false);

    // restart: stopped and started again, a new start time, still running.
    let before = k.inspect("fg")["State"]["StartedAt"].clone();
    k.ok(&["restart", "-t", "1", "fg"]);
    assert!(running(&k, "fg"));
    assert_ne!(k.inspect("fg")["State"]["StartedAt"], before);

    // A signal to a foreground `kiln run` goes to the container (Docker's sig-proxy).
    let mut client = spawn(
        &k,
        &["run", "--name", "proxied", &k.base, "sleep", "600"],
        Stdio::null(),
    );
    eventually("the second container to run", || {
        k.cmd(&["inspect", "proxied"]).status.success() && running(&k, "proxied")
    });
    let pid = rustix::process::Pid::from_raw(client.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = client.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "the container's exit by SIGTERM: client {status:?}, container {}",
        k.inspect("proxied")["State"]
    );
    assert_eq!(k.inspect("proxied")["State"]["Running"], false);
}

#[test]
fn commit_of_a_container_that_writes_is_one_moment_of_its_files() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    // The writer counts, writing each number to /a and then to /z, so at any one moment /z
    // holds /a's number or the one before. The layer is written in name order, with 20 MB of
    // random bytes (/m) between the two: a read spread over that time finds /z ahead of /a.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        &k.base,
        "sh",
        "-c",
        "head -c 20000000 /dev/urandom > /m; i=0; \
         while :; do i=$((i+1)); echo $i > /a; echo $i > /z; done",
    ]);
    eventually("the writer to count", || {
        k.cmd(&["exec", "writer", "test", "-s", "/z"])
            .status
            .success()
    });
    for round in 0..3 {
        let tag = format!("moment:{round}");
        let out = k.cmd(&["commit", "writer", &tag]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        let seen = k.ok(&["run", "--rm", &tag, "sh", "-c", "echo $(cat /a) $(cat /z)"]);
        let numbers: Vec<u64> = seen
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        // One of the two may be empty (caught between its truncation and its write), not both.
        assert!(!numbers.is_empty(), "round {round}: /a and /z both empty");
        if let [a, z] = numbers[..] {
            assert!(
                a == z || a == z + 1,
                "round {round}: /a {a} and /z {z} are not one moment"
            );
        }
    }
    // The container ran on through the commits.
    assert!(running(&k, "writer"));
    let frozen_left = std::fs::read_dir("/sys/fs/cgroup/freezer")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("kiln-commit-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(frozen_left, 0, "a commit left its freezer cgroup behind");
}

#[test]
fn two_starts_at_once_run_the_container_once() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    k.ok(&["create", "--name", "twice", &k.base, "sleep", "600"]);
    let starts: Vec<Child> = (0..2)
        .map(|_| spawn(&k, &["start", "twice"], Stdio::null()))
        .collect();
    for start in starts {
        let out = start.wait_with_output().unwrap();
        // Each start either started it or found it running, as Docker's does.
        assert!(
            out.status.success() || stderr(&out).contains("twice is already running"),
            "{}",
            stderr(&out)
        );
    }
    assert!(running(&k, "twice"));
    let root = k.root.path().to_string_lossy().into_owned();
    std::thread::sleep(Duration::from_millis(300));
    let supervisors = super::containers::processes_using(&root);
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
}
