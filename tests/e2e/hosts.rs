//! The sandbox's `/etc/hosts` entries from `--add-host`, for RUN steps and containers (no
//! network is needed: every check runs with `--network none`).

use super::harness::{Kiln, assert_success, stderr, stdout};

/// `--add-host` (`kiln build`, `kiln run`): the entries are in `/etc/hosts` after Docker's
/// standard lines, resolve by name, are part of a RUN's cache key (as in BuildKit, where they
/// belong to the exec op) and never reach the layer; a malformed value fails before anything
/// runs, naming it.
#[test]
fn add_host_entries_resolve_in_run_steps_and_containers() {
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM $BASE\n\
                      RUN ping -c1 -W1 db.test >/dev/null && grep db.test /etc/hosts > /seen\n";
    let flags = ["--network", "none", "--add-host", "db.test:127.0.0.1"];
    let out = k.build_dockerfile("addhost:1", dockerfile, &flags);
    assert_success(&out, &["build", "--add-host"]);
    let out = k.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "addhost:1",
        "cat",
        "/seen",
    ]);
    assert_success(&out, &["run", "addhost:1"]);
    assert_eq!(stdout(&out), "127.0.0.1\tdb.test\n");
    // The layer holds what the RUN wrote, not the sandbox's /etc/hosts.
    let out = k.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "addhost:1",
        "cat",
        "/etc/hosts",
    ]);
    assert!(!stdout(&out).contains("db.test"), "{}", stdout(&out));

    // The same entry again hits the cache; another address does not.
    let again = k.build_dockerfile("addhost:1", dockerfile, &flags);
    assert_success(&again, &["build", "again"]);
    assert!(stderr(&again).contains("CACHED"), "{}", stderr(&again));
    let other = ["--network", "none", "--add-host", "db.test:127.0.0.2"];
    let other = k.build_dockerfile("addhost:2", dockerfile, &other);
    assert_success(&other, &["build", "another address"]);
    assert!(!stderr(&other).contains("CACHED"), "{}", stderr(&other));

    // A container's entries, IPv6 ones included, in order before its own hostname line.
    let out = k.cmd(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--hostname",
        "box",
        "--add-host",
        "a.test:10.1.2.3",
        "--add-host",
        "b.test:::1",
        "addhost:1",
        "cat",
        "/etc/hosts",
    ]);
    assert_success(&out, &["run", "--add-host"]);
    assert!(
        stdout(&out).ends_with("10.1.2.3\ta.test\n::1\tb.test\n127.0.0.1\tbox\n"),
        "{}",
        stdout(&out)
    );

    for bad in [
        vec!["build", "--add-host", "nocolon", "."],
        vec![
            "run",
            "--rm",
            "--add-host",
            "x:not-an-ip",
            "addhost:1",
            "true",
        ],
    ] {
        let out = k.cmd(&bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("nocolon") || err.contains("not-an-ip"),
            "{err}"
        );
    }
}
