//! Detach keys on the kiln CLI: `kiln run -it` and `kiln attach` on a pty of the test's end on
//! ctrl-p ctrl-q (or `--detach-keys`), exit 0, and leave the container running.

use std::io::Write;
use std::time::{Duration, Instant};

use super::containers::{Cleanup, eventually};
use super::harness::{Kiln, kiln_on_a_pty, stderr};

/// Types a line and `keys` (one at a time, as a user does) into kiln on a pty; kiln must
/// then end with 0 and leave the container running.
fn detach_on_a_pty(k: &Kiln, args: &[&str], line: &str, keys: &[u8], container: &str) {
    let (mut child, mut master, seen) = kiln_on_a_pty(k, args);
    let running = || {
        let out = k.cmd(&["inspect", container]);
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        inspected[0]["State"]["Status"] == "running"
    };
    eventually("the container up", running);
    master.write_all(format!("{line}\n").as_bytes()).unwrap();
    eventually("the echo", || seen.lock().unwrap().contains(line));
    for key in keys {
        master.write_all(&[*key]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "kiln {args:?} ignored the detach keys: {}",
                seen.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", seen.lock().unwrap());
    assert!(running(), "the container stopped with the detach");
}

#[test]
fn detach_keys_leave_run_it_and_attach_containers_running() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let run = [
        "run",
        "-it",
        "--name",
        "term",
        "--network",
        "none",
        &k.base,
        "cat",
    ];
    detach_on_a_pty(&k, &run, "hello", &[0x10, 0x11], "term");
    let attach = ["attach", "--detach-keys", "ctrl-x", "term"];
    detach_on_a_pty(&k, &attach, "again", &[0x18], "term");
    let bad = k.cmd(&["attach", "--detach-keys", "ctrl-1", "term"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid detach keys"),
        "{}",
        stderr(&bad)
    );
}

/// The same through `kiln serve`: `kiln --host … run -it` and `attach` send the keys to the
/// daemon, which detaches; the client then ends with 0 instead of waiting for the container.
#[test]
fn detach_keys_through_the_api_leave_the_container_running() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    k.ok(&["pull", &k.base]);
    let mut daemon = super::serve::Daemon::start(&k, &[], &[]);
    let host = daemon.host();
    let run = [
        "--host",
        &host,
        "run",
        "-it",
        "--name",
        "remote-term",
        "--network",
        "none",
        &k.base,
        "cat",
    ];
    detach_on_a_pty(&k, &run, "hello", &[0x10, 0x11], "remote-term");
    let attach = [
        "--host",
        &host,
        "attach",
        "--detach-keys",
        "ctrl-x",
        "remote-term",
    ];
    detach_on_a_pty(&k, &attach, "again", &[0x18], "remote-term");
    daemon.terminate();
}
