//! Where rootless mode, the container runner and the sandbox's hardening meet: rootless
//! containers driven by several kiln processes of their user (each in a user namespace of its
//! own), resource limits without root, `kiln exec` under the container's cgroup limits on
//! cgroup v1, and cache mounts under a single-id map.

use std::process::Command;

use super::containers::{Cleanup, eventually, image};
use super::harness::{Kiln, assert_success, stderr};
use super::rootless::{RANGED_USER, SINGLE_ID_USER, context, user};

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> String {
    let out = Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Force-removes the named containers of a rootless user's store when a test ends, so a failed
/// check does not leave one running for the user's next test. Holds the test's `kiln` closure.
struct RemoveOnDrop<'a>(&'a dyn Fn(&[&str]) -> std::process::Output, &'a [&'a str]);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let mut args = vec!["rm", "-f"];
        args.extend_from_slice(self.1);
        let _ = (self.0)(&args);
    }
}

#[test]
fn rootless_detached_container_is_driven_by_other_kiln_processes() {
    let k = Kiln::new();
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    let kiln = |args: &[&str]| user.kiln(store.path(), args);
    let ok = |args: &[&str]| user.ok(store.path(), args);
    // A failed check must not leave the container running for the next test of the user.
    let _cleanup = RemoveOnDrop(&kiln, &["svc"]);

    let id = ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        &k.base,
        "sh",
        "-c",
        "echo started; while true; do sleep 0.2; done",
    ]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");

    // The kiln that started it has exited (and its user namespace with it, but for the
    // supervisor): every later command is another process in a sibling namespace.
    let ps = ok(&["ps"]);
    let row = ps.lines().find(|l| l.ends_with("svc")).expect("svc in ps");
    assert!(row.contains("Up "), "{ps}");
    eventually("the log", || ok(&["logs", "svc"]).contains("started"));

    // exec joins the container's own user namespace (the mapping of the container, uid 0 in
    // it being the user), its PID namespace and its root.
    let seen = ok(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "head -1 /proc/self/uid_map; id -u; ps -o comm; touch /from-exec",
    ]);
    let mut lines = seen.lines();
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{seen}");
    assert_eq!(lines.next(), Some("0"), "{seen}");
    assert!(seen.contains("sleep"), "the container's processes: {seen}");
    let out = ok(&["exec", "svc", "ls", "/from-exec"]);
    assert_eq!(out, "/from-exec\n");
    let out = kiln(&["exec", "svc", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // stop signals it from yet another namespace.
    let out = kiln(&["stop", "-t", "1", "svc"]);
    assert_success(&out, &["stop (rootless)"]);
    let ps = ok(&["ps", "-a"]);
    let row = ps
        .lines()
        .find(|l| l.ends_with("svc"))
        .expect("svc in ps -a");
    assert!(row.contains("Exited"), "{ps}");
    let out = kiln(&["rm", "svc"]);
    assert_success(&out, &["rm (rootless)"]);
    assert_eq!(ok(&["ps", "-aq"]), "");
    assert!(!store.path().join("containers").join(&id).exists());
    user.assert_no_processes();
}

#[test]
fn rootless_resource_limits_are_a_clear_error() {
    let k = Kiln::new();
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    for (mode, limit) in [
        ("--rm", &["--memory", "64m"][..]),
        ("--rm", &["--pids-limit", "10"][..]),
        // Detached, the error comes back from the supervisor through the record.
        ("-d", &["--cpus", "0.5"][..]),
    ] {
        let mut args = vec!["run", mode];
        args.extend_from_slice(limit);
        args.extend_from_slice(&[&k.base, "true"]);
        let out = user.kiln(store.path(), &args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr(&out).contains("need root or a delegated cgroup v2 subtree"),
            "{}",
            stderr(&out)
        );
    }
    // A detached run that failed to start leaves a record, as Docker's `created` container.
    let left = user.ok(store.path(), &["ps", "-aq"]);
    for id in left.split_whitespace() {
        user.ok(store.path(), &["rm", id]);
    }
    user.assert_no_processes();
}

#[test]
fn exec_joins_the_containers_cgroups() {
    let k = Kiln::new();
    let _cleanup = Cleanup(&k);
    image(
        &k,
        "limited:1",
        "CMD [\"sh\", \"-c\", \"while true; do sleep 0.2; done\"]\n",
    );
    let id = k.ok(&[
        "run",
        "-d",
        "--pids-limit",
        "12",
        "--memory",
        "64m",
        "limited:1",
    ]);
    let id = id.trim();

    // The exec'd process sits in the container's groups, in every hierarchy that limits it.
    let groups = k.ok(&["exec", id, "cat", "/proc/self/cgroup"]);
    for controller in ["pids", "memory"] {
        let line = groups
            .lines()
            .find(|l| l.split(':').nth(1) == Some(controller))
            .unwrap_or_else(|| panic!("no {controller} line: {groups}"));
        assert!(line.contains("/kiln-"), "{controller}: {groups}");
    }

    // So the pids limit counts what exec starts: a fork bomb through exec is contained.
    let out = k.cmd(&[
        "exec",
        id,
        "sh",
        "-c",
        "i=0; while [ $i -lt 32 ]; do sleep 876543 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned",
    ]);
    assert!(stderr(&out).contains("can't fork"), "{}", stderr(&out));
    assert!(processes_with("sleep 876543").lines().count() < 12);
    k.ok(&["rm", "-f", id]);
    eventually("the exec'd processes to go", || {
        processes_with("sleep 876543").is_empty()
    });
}

#[test]
fn single_id_cache_mount_with_another_owner_is_squashed() {
    let k = Kiln::new();
    let user = user(SINGLE_ID_USER, false);
    let store = user.owned_dir();
    let ctx = context(
        &user,
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=cache,target=/cache,uid=1000,gid=1000 \
         stat -c %u:%g /cache > /owner && echo kept > /cache/f\n\
         RUN --mount=type=cache,target=/cache,uid=1000,gid=1000 cat /cache/f > /again\n",
    );
    let base = format!("BASE={}", k.base);
    let out = user.kiln(
        store.path(),
        &[
            "build",
            "--progress=plain",
            "-t",
            "cached",
            "--build-arg",
            &base,
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_success(&out, &["build (single id, cache mount)"]);
    assert!(
        stderr(&out).contains("single id"),
        "the single-id map is announced: {}",
        stderr(&out)
    );
    let out = user.ok(
        store.path(),
        &["run", "--rm", "cached", "cat", "/owner", "/again"],
    );
    assert_eq!(out, "0:0\nkept\n", "{out}");
    user.assert_no_processes();
}

#[test]
fn rootless_health_checks_kill_wait_and_forced_rm() {
    let k = Kiln::new();
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    let kiln = |args: &[&str]| user.kiln(store.path(), args);
    let ok = |args: &[&str]| user.ok(store.path(), args);
    let _cleanup = RemoveOnDrop(&kiln, &["hc", "doomed"]);
    let ctx = context(
        &user,
        "ARG BASE\nFROM $BASE\n\
         RUN echo 'app:x:1000:1000::/:/bin/sh' >> /etc/passwd\n\
         HEALTHCHECK --interval=1s --timeout=2s --retries=1 CMD test -f /tmp/ok\n\
         CMD [\"sleep\", \"600\"]\n",
    );
    let base = format!("BASE={}", k.base);
    ok(&[
        "build",
        "-t",
        "checked",
        "--build-arg",
        &base,
        ctx.path().to_str().unwrap(),
    ]);
    ok(&["run", "-d", "--name", "hc", "checked"]);

    // Probes run in the supervisor (the container's own namespace); an exec from another
    // kiln process, as another user of the container, makes them pass.
    let inspect = |name: &str| -> serde_json::Value {
        let text = ok(&["inspect", name]);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value.as_array().map_or(value.clone(), |a| a[0].clone())
    };
    eventually("unhealthy", || {
        inspect("hc")["State"]["Health"]["Status"] == "unhealthy"
    });
    assert_eq!(ok(&["exec", "-u", "1000", "hc", "id", "-u"]), "1000\n");
    ok(&["exec", "hc", "touch", "/tmp/ok"]);
    eventually("healthy", || ok(&["ps"]).contains("(healthy)"));

    // kill and wait from sibling namespaces.
    let waiter = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| kiln(&["wait", "hc"]));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = kiln(&["kill", "hc"]);
        assert_success(&out, &["kill (rootless)"]);
        waiting.join().unwrap()
    });
    assert_success(&waiter, &["wait (rootless)"]);
    assert_eq!(String::from_utf8_lossy(&waiter.stdout), "137\n");

    // rm -f of a running container whose writable layer holds files of a subordinate id.
    ok(&[
        "run",
        "-d",
        "--name",
        "doomed",
        "checked",
        "sh",
        "-c",
        "mkdir /own && chown 1000:1000 /own && touch /own/f && sleep 600",
    ]);
    eventually("the container's files", || {
        kiln(&["exec", "doomed", "test", "-f", "/own/f"])
            .status
            .success()
    });
    let out = kiln(&["rm", "-f", "doomed", "hc"]);
    assert_success(&out, &["rm -f (rootless)"]);
    assert_eq!(ok(&["ps", "-aq"]), "");
    let left: Vec<_> = std::fs::read_dir(store.path().join("containers"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    user.assert_no_processes();
}
