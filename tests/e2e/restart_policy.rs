//! Restart policies carried out by the container's supervisor, through the kiln CLI (no
//! daemon): `on-failure:N` stops after N restarts, `always` restarts after a clean exit until
//! a user's stop, and the log, `RestartCount` and the `restarting` state say what happened.

use std::time::{Duration, Instant};

use super::containers::{Cleanup, eventually};
use super::harness::Kiln;

/// The container's inspect object.
fn inspect(k: &Kiln, name: &str) -> serde_json::Value {
    let out = k.ok(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    match v {
        serde_json::Value::Array(mut a) => a.remove(0),
        other => other,
    }
}

fn failure(k: &Kiln, args: &[&str]) -> String {
    let out = k.cmd(args);
    assert!(!out.status.success(), "kiln {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn on_failure_restarts_up_to_its_count_and_always_until_a_stop() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let base = k.base.as_str();

    // on-failure:2 with a failing command: three runs, then exited with the last code.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--network",
        "none",
        "--restart",
        "on-failure:2",
        base,
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    // A wait ends with the first run, as dockerd's (its `restarting` state wakes waiters).
    assert_eq!(k.ok(&["wait", "flaky"]), "3\n");
    eventually("the last run", || {
        inspect(&k, "flaky")["State"]["Status"] == "exited"
    });
    let v = inspect(&k, "flaky");
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["State"]["Restarting"], false, "{v}");
    assert_eq!(v["State"]["ExitCode"], 3, "{v}");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    // Every run wrote into the same log.
    assert_eq!(k.ok(&["logs", "flaky"]), "run\nrun\nrun\n");

    // A clean exit ends an on-failure container at once.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--network",
        "none",
        "--restart",
        "on-failure",
        base,
        "true",
    ]);
    assert_eq!(k.ok(&["wait", "clean"]), "0\n");
    assert_eq!(inspect(&k, "clean")["RestartCount"], 0);

    // always: restarted after exit 0, with a growing delay during which it is `restarting`.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "forever",
        "--network",
        "none",
        "--restart",
        "always",
        base,
        "sh",
        "-c",
        "echo tick",
    ]);
    eventually("three restarts", || {
        inspect(&k, "forever")["RestartCount"].as_u64() >= Some(3)
    });
    eventually("the restarting state", || {
        let v = inspect(&k, "forever");
        v["State"]["Restarting"] == true && v["State"]["Status"] == "restarting"
    });
    let ps = k.ok(&["ps"]);
    assert!(
        ps.lines().any(|l| l.ends_with("forever")),
        "a restarting container is listed as running: {ps}"
    );
    assert!(k.ok(&["logs", "forever"]).lines().count() >= 3);
    // exec has no process to join between two runs (dockerd's refusal).
    let refused = k.cmd(&["exec", "forever", "true"]);
    if !refused.status.success() {
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(
            text.contains("restarting") || text.contains("not running"),
            "{text}"
        );
    }

    // A user's stop ends it for good: no restart after it, however long one waits.
    k.ok(&["stop", "-t", "1", "forever"]);
    let stopped = inspect(&k, "forever");
    assert_eq!(stopped["State"]["Status"], "exited", "{stopped}");
    let count = stopped["RestartCount"].clone();
    std::thread::sleep(Duration::from_secs(2));
    let later = inspect(&k, "forever");
    assert_eq!(later["State"]["Status"], "exited", "{later}");
    assert_eq!(
        later["RestartCount"], count,
        "restarted after a user's stop"
    );

    // A user's start brings it back and counts anew.
    k.ok(&["start", "forever"]);
    eventually("a restart after the user's start", || {
        inspect(&k, "forever")["RestartCount"].as_u64() >= Some(1)
    });
    // kill (SIGKILL) ends the restarting too, even of a running process.
    k.ok(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "none",
        "--restart",
        "always",
        base,
        "sleep",
        "1000",
    ]);
    k.ok(&["kill", "sleeper"]);
    assert_eq!(k.ok(&["wait", "sleeper"]), "137\n");
    std::thread::sleep(Duration::from_millis(500));
    let v = inspect(&k, "sleeper");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["RestartCount"], 0, "{v}");
    k.ok(&["stop", "-t", "1", "forever"]);
}

#[test]
fn restart_policies_are_checked_and_updated() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    let base = k.base.as_str();
    let bad = failure(&k, &["run", "-d", "--restart", "sometimes", base, "true"]);
    assert!(
        bad.contains("restart policy") && bad.contains("sometimes"),
        "{bad}"
    );
    let bad = failure(&k, &["run", "-d", "--restart", "always:3", base, "true"]);
    assert!(bad.contains("on-failure"), "{bad}");
    let bad = failure(&k, &["run", "--rm", "--restart", "always", base, "true"]);
    assert!(bad.contains("AutoRemove"), "{bad}");
    assert_eq!(k.ok(&["ps", "-aq"]), "", "a refused run left a container");

    // `update --restart` changes the policy of an existing container, for its next exit.
    k.ok(&[
        "create",
        "--name",
        "later",
        "--network",
        "none",
        base,
        "sh",
        "-c",
        "echo x; exit 1",
    ]);
    k.ok(&["update", "--restart", "on-failure:1", "later"]);
    assert_eq!(
        inspect(&k, "later")["HostConfig"]["RestartPolicy"]["Name"],
        "on-failure"
    );
    let began = Instant::now();
    k.ok(&["start", "later"]);
    assert_eq!(k.ok(&["wait", "later"]), "1\n");
    eventually("the restarted run's end", || {
        inspect(&k, "later")["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(&k, "later")["RestartCount"], 1);
    assert!(began.elapsed() >= Duration::from_millis(100), "no backoff");
    // A --rm container's policy cannot be set afterwards either.
    k.ok(&[
        "create",
        "--rm",
        "--name",
        "gone",
        "--network",
        "none",
        base,
        "true",
    ]);
    let bad = failure(&k, &["update", "--restart", "always", "gone"]);
    assert!(bad.contains("AutoRemove"), "{bad}");
}
