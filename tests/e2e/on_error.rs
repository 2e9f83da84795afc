//! `kiln build --on-error=shell|keep` (issue 15, item 2): a shell on a pty of the test's in the
//! failed RUN's sandbox sees the step's file, environment, working directory and mounts; a
//! kept step is a container that `ps -a`, `start -ai`, `commit` and `rm` work on.

use std::io::Write;
use std::process::Stdio;
use std::sync::Mutex;

use super::containers::{Cleanup, eventually};
use super::harness::{Kiln, kiln_on_a_pty, stderr, stdout};

/// The failing step writes computed values, so the typed commands and the Dockerfile's text
/// (which the progress output shows) never contain what the test looks for.
const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nENV STEP_MARK=env-mark\nWORKDIR /work/dir\n\
RUN chown 1000 /work/dir\nUSER 1000\n\
RUN --mount=type=cache,id=oe,target=/cache,uid=1000 --mount=type=secret,id=tok,uid=1000 \
--mount=type=bind,target=/ctx \
echo \"c-$((6*7))\" > /cache/c && echo \"m-$((5*5))\" > made.txt && exit 3\n";

/// A context with the Dockerfile and a secret file; returns (context, secret flag).
fn context() -> (tempfile::TempDir, String) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let secret = ctx.path().join("tok.txt");
    std::fs::write(&secret, "s3cr3t-t0ken").unwrap();
    std::fs::write(ctx.path().join("bound.txt"), "from-the-bind\n").unwrap();
    let flag = format!("id=tok,src={}", secret.display());
    (ctx, flag)
}

/// Waits for the child with a deadline, so a shell that never ends fails the test.
fn wait_for(child: &mut std::process::Child, seen: &Mutex<String>) -> Option<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln did not end: {}", seen.lock().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn shell_opens_in_the_failed_steps_sandbox_as_it_was() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let (ctx, secret) = context();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let args = [
        "build",
        "--progress=plain",
        "--on-error=shell",
        "--build-arg",
        &base,
        "--secret",
        &secret,
        "-t",
        "oe:shell",
        dir,
    ];

    // Without a terminal on stdin it is refused before anything is built.
    let out = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("--on-error=shell needs a terminal on stdin"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("RUN"),
        "nothing was built: {}",
        stderr(&out)
    );

    // Plain progress, and the live view, which must not draw over the shell.
    for progress in ["--progress=plain", "--progress=tty"] {
        let mut args = args;
        args[1] = progress;
        let (mut child, mut master, seen) = kiln_on_a_pty(&k, &args);
        eventually("the shell", || {
            seen.lock().unwrap().contains("in its sandbox as it was")
        });
        master
            .write_all(
                b"cat made.txt; echo \"[$STEP_MARK]\"; pwd | tr / :; cat /cache/c; \
                  cat /run/secrets/tok; echo; cat /ctx/bound.txt; test -t 0 && echo tty-$((2*3)); \
                  echo uid-$(id -u); \
                  exit 0\n",
            )
            .unwrap();
        let code = wait_for(&mut child, &seen);
        let out = seen.lock().unwrap().clone();
        assert_eq!(
            code,
            Some(1),
            "{progress}: the build's failure is the result: {out}"
        );
        // The live view drew nothing while the shell had the terminal (its redraws start by
        // erasing the region below the cursor).
        let shell = &out[out.find("in its sandbox as it was").unwrap()..];
        let shell = &shell[..shell.find("uid-1000").unwrap_or(shell.len())];
        assert!(
            !shell.contains("\x1b[J"),
            "{progress}: drawn over the shell: {shell:?}"
        );
        for expected in [
            "m-25",          // the file the failed command wrote
            "[env-mark]",    // the step's environment
            ":work:dir",     // its working directory
            "c-42",          // its cache mount, with what it wrote there
            "s3cr3t-t0ken",  // its secret
            "from-the-bind", // its bind mount of the context
            "tty-6",         // on a terminal
            "uid-1000",      // as the step's user
            "exit code 3",   // and then the step's error
        ] {
            assert!(out.contains(expected), "{progress}: {expected} in {out}");
        }
    }
    // The build failed: no image, nothing kept.
    assert_ne!(k.cmd(&["inspect", "oe:shell"]).status.code(), Some(0));
    assert_eq!(stdout(&k.cmd(&["ps", "-aq"])).trim(), "");
}

#[test]
fn keep_leaves_a_stopped_container_to_start_commit_and_remove() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let (ctx, secret) = context();
    let base = format!("BASE={}", k.base);
    let dir = ctx.path().to_str().unwrap();
    let out = k.cmd(&[
        "build",
        "--progress=plain",
        "--on-error=keep",
        "--build-arg",
        &base,
        "--secret",
        &secret,
        dir,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let name = err
        .split("as container ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no kept container named in {err}"))
        .to_owned();
    let ps = k.ok(&["ps", "-a"]);
    assert!(ps.contains(&name), "{ps}");

    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["inspect", &name])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["WorkingDir"], "/work/dir", "{config}");
    assert_eq!(config["User"], "1000", "{config}");
    let env = config["Env"].to_string();
    assert!(env.contains("STEP_MARK=env-mark"), "{env}");
    assert!(
        config["Labels"]["kiln.build.failed-step"]
            .as_str()
            .unwrap()
            .contains("RUN --mount"),
        "{config}"
    );

    // `start -ai` opens its shell, in the step's state.
    let (mut child, mut master, seen) = kiln_on_a_pty(&k, &["start", "-ai", &name]);
    master
        .write_all(
            b"cat made.txt; echo \"[$STEP_MARK]\"; pwd | tr / :; echo uid-$(id -u); exit 4\n",
        )
        .unwrap();
    let code = wait_for(&mut child, &seen);
    let out = seen.lock().unwrap().clone();
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("m-25")
            && out.contains("[env-mark]")
            && out.contains(":work:dir")
            && out.contains("uid-1000"),
        "{out}"
    );

    // `commit` makes an image of it; the secret was never written into it.
    k.ok(&["commit", &name, "oe:kept"]);
    let run = k.ok(&[
        "run",
        "--rm",
        "oe:kept",
        "sh",
        "-c",
        "cat /work/dir/made.txt; cat /run/secrets/tok 2>/dev/null || echo no-secret",
    ]);
    assert_eq!(run, "m-25\nno-secret\n");

    k.ok(&["rm", &name]);
    assert!(!k.ok(&["ps", "-a"]).contains(&name));

    // With rawjson the stream stays JSON: the kept container is named in a warning event.
    let out = k.cmd(&[
        "build",
        "--progress=rawjson",
        "--on-error=keep",
        "--build-arg",
        &base,
        "--secret",
        &secret,
        dir,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kept = events
        .iter()
        .find(|e| e["type"] == "warning" && e["message"].as_str().unwrap().contains("as container"))
        .unwrap_or_else(|| panic!("{}", stderr(&out)));
    let last = events.last().unwrap();
    assert_eq!(last["type"], "build.error", "{last}");
    let name = kept["message"]
        .as_str()
        .unwrap()
        .split("as container ")
        .nth(1)
        .unwrap();
    k.ok(&["rm", name.split_whitespace().next().unwrap()]);
}

#[test]
fn a_step_killed_by_ctrl_c_is_not_kept() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let (mut child, _ctx) = k.build_running_until(
        "ARG BASE\nFROM $BASE\nRUN echo started-$((4*4)) && sleep 60\n",
        &["--on-error=keep"],
        "started-16",
    );
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let seen = Mutex::new(String::new());
    assert_eq!(wait_for(&mut child, &seen), Some(130));
    assert_eq!(stdout(&k.cmd(&["ps", "-aq"])).trim(), "", "nothing kept");
}
