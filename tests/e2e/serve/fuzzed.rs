//! What scripts/schemathesis.sh found in `kiln serve`, each kept as a test here so it stays
//! fixed without a fuzzing run.

use std::time::{Duration, Instant};

use super::super::harness::Kiln;
use super::Daemon;

fn json_post(d: &Daemon, path: &str, body: &serde_json::Value) -> super::Response {
    d.request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// A detached exec with `Tty` was a 500 ("make stdin the controlling terminal"): it had no
/// terminal. It gets its pty, runs, and can be resized, as with dockerd.
#[test]
fn a_detached_tty_exec_runs() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let created = json_post(
        &d,
        "/containers/create?name=fuzzed-exec",
        &serde_json::json!({
            "Image": k.base, "Cmd": ["sleep", "60"], "HostConfig": { "NetworkMode": "none" },
        }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let started = d.request("POST", "/containers/fuzzed-exec/start", &[], b"");
    assert_eq!(started.status, 204, "{}", started.text());
    let exec = json_post(
        &d,
        "/containers/fuzzed-exec/exec",
        &serde_json::json!({ "Cmd": ["sh", "-c", "test -t 0 && sleep 30"], "Tty": true }),
    );
    assert_eq!(exec.status, 201, "{}", exec.text());
    let id = exec.json()["Id"].as_str().unwrap().to_owned();
    let start = json_post(
        &d,
        &format!("/exec/{id}/start"),
        &serde_json::json!({ "Detach": true, "Tty": true }),
    );
    assert_eq!(start.status, 200, "{}", start.text());
    // `test -t 0` holds only on a terminal: the exec still runs a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let inspected = d.get(&format!("/exec/{id}/json")).json();
    assert_eq!(inspected["Running"], true, "{inspected}");
    let resized = d.request("POST", &format!("/exec/{id}/resize?h=30&w=100"), &[], b"");
    assert!(resized.status < 300, "{}", resized.text());
    let removed = d.request("DELETE", "/containers/fuzzed-exec?force=1", &[], b"");
    assert_eq!(removed.status, 204, "{}", removed.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get(&format!("/exec/{id}/json")).json()["Running"] == true {
        assert!(Instant::now() < deadline, "the exec outlived its container");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An image's `GraphDriver.Data` was `null`, which moby's spec forbids (`x-nullable: false`).
#[test]
fn image_inspect_graph_driver_data_is_an_object() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let inspected = d.get(&format!("/images/{}/json", k.base)).json();
    assert!(
        inspected["GraphDriver"]["Data"].is_object(),
        "{}",
        inspected["GraphDriver"]
    );
    assert_eq!(inspected["GraphDriver"]["Name"], "overlay2");
}
