//! Cancelling a build with Ctrl-C (SIGINT to `kiln build`): the first one stops the build
//! cleanly — its RUN's sandbox killed, nothing of the cancelled step recorded, no name
//! published, the store consistent — and a rebuild works; a second one exits at once.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::crash::processes_using;
use super::harness::{Kiln, assert_success, stderr, stdout};

const DOCKERFILE: &str = "\
ARG BASE
FROM ${BASE}
RUN echo done-before > /before
ARG PAUSE=300
RUN echo long-step-started && sleep $PAUSE && echo finished > /after
";

/// Starts `kiln build` of [`DOCKERFILE`] and returns it once its long RUN is running, with the
/// rest of its stderr collected on a thread.
fn start_long_build(k: &Kiln, ctx: &std::path::Path) -> (Child, mpsc::Receiver<String>) {
    let base = format!("BASE={}", k.base);
    let mut child = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--build-arg",
            &base,
        ])
        .arg(ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (log_tx, log_rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            // The step's output line, not its header (which holds the command).
            if line.ends_with("| long-step-started") {
                let _ = started_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        let _ = log_tx.send(log);
    });
    if started_rx.recv_timeout(Duration::from_secs(120)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the long RUN never started:\n{}",
            log_rx.recv().unwrap_or_default()
        );
    }
    (child, log_rx)
}

fn interrupt(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

fn wait_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln build still running {limit:?} after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_no_survivors(k: &Kiln) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_using(k.root.path()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        processes_using(k.root.path()),
        Vec::<u32>::new(),
        "a sandbox process outlived the cancelled build"
    );
}

#[test]
fn ctrl_c_cancels_a_build_cleanly_and_a_rebuild_works() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let (mut child, log) = start_long_build(&k, ctx.path());

    let sent = Instant::now();
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(30));
    let log = log.recv().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exit code of a cancelled build:\n{log}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "the RUN was not stopped (took {:?})",
        sent.elapsed()
    );
    assert!(log.contains("cancelling the build"), "{log}");
    assert!(log.contains("error: build cancelled"), "{log}");
    assert!(!log.contains("4/4] DONE"), "{log}");
    assert_no_survivors(&k);

    // Nothing was named, and what is in the store is whole.
    assert!(!k.cmd(&["inspect", "app"]).status.success(), "{log}");
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
    let tmp: Vec<_> = std::fs::read_dir(k.root.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "temp files left behind: {tmp:?}");

    // The step that completed before the cancel is reused; the cancelled one runs again.
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let out = k.cmd(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "app",
        "--build-arg",
        &base,
        "--build-arg",
        "PAUSE=0",
        dir,
    ]);
    assert_success(&out, &["rebuild"]);
    let rebuild = stderr(&out);
    assert_eq!(rebuild.matches("] CACHED").count(), 1, "{rebuild}");
    let run = k.cmd(&["run", "--rm", "app", "cat", "/before", "/after"]);
    assert_success(&run, &["run"]);
    assert_eq!(stdout(&run), "done-before\nfinished\n");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let k = Kiln::new();
    let ctx = tempfile::tempdir().unwrap();
    // The second Ctrl-C does not wait for the cancelled build to wind down; the sandbox still
    // dies with kiln (its parent-death signal), and what is left is only garbage.
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let (mut child, log) = start_long_build(&k, ctx.path());
    interrupt(&child);
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(10));
    let log = log.recv().unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert_no_survivors(&k);
    assert!(!k.cmd(&["inspect", "app"]).status.success());
    let check = k.ok(&["check"]);
    assert!(!check.contains("corrupt"), "{check}");
}
