//! The container lifecycle through `kiln serve` under concurrency: `docker run --rm`'s own
//! sequence (create → hijacked attach → wait for removal → start) many times at once over raw
//! HTTP, where a start once raced the daemon's own looks at the container; and the attach and
//! exec details clients read byte by byte: exec output framed as the start says, an exec's
//! 127, detach keys, a log replay sent after the 101 head.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::super::harness::Kiln;
use super::Daemon;

/// How long one step of a run may take before the test fails naming it.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Sends a request on a fresh connection and returns it after the response head (the rest is
/// the body, or the hijacked stream).
fn send(d: &Daemon, method: &str, path: &str, body: &[u8], extra: &str) -> (UnixStream, String) {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(STEP_LIMIT)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if let Err(e) = s.read_exact(&mut byte) {
            panic!(
                "{method} {path}: no response head ({e}): {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// What is left of a response, read to its end (the connection closes).
fn rest(mut s: UnixStream, what: &str) -> String {
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        panic!(
            "{what}: the stream did not end ({e}); so far {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `docker run --rm ... sh -c 'exit 3'` as the CLI drives it.
fn run_like_the_cli(d: &Daemon, image: &str, n: usize) {
    let body = serde_json::json!({
        "Image": image, "Cmd": ["sh", "-c", format!("echo run-{n}; exit 3")],
        "AttachStdout": true, "AttachStderr": true,
        "HostConfig": { "AutoRemove": true, "NetworkMode": "none" },
    });
    let (s, head) = send(
        d,
        "POST",
        "/v1.41/containers/create",
        body.to_string().as_bytes(),
        "Connection: close\r\n",
    );
    let created = super::dechunk_if(&head, rest(s, "create").as_bytes());
    let text = String::from_utf8_lossy(&created);
    assert!(
        head.starts_with("HTTP/1.1 201"),
        "run {n}: create: {head}{text}"
    );
    let id = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (attach, head) = send(
        d,
        "POST",
        &format!("/v1.41/containers/{id}/attach?stream=1&stdout=1&stderr=1"),
        b"",
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "run {n}: attach: {head}");
    let (wait, head) = send(
        d,
        "POST",
        &format!("/v1.41/containers/{id}/wait?condition=removed"),
        b"",
        "Connection: close\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "run {n}: wait: {head}");
    // Another client inspects the container all through its start, as `docker ps` and
    // `docker inspect` do: each look takes its running lock for a moment, which once made
    // a start that met one fail (409) or be skipped (304).
    let starting = std::sync::atomic::AtomicBool::new(true);
    let (head, started) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while starting.load(std::sync::atomic::Ordering::SeqCst) {
                let (s, _) = send(
                    d,
                    "GET",
                    &format!("/containers/{id}/json"),
                    b"",
                    "Connection: close\r\n",
                );
                drop(rest(s, "inspect"));
            }
        });
        let (start, head) = send(
            d,
            "POST",
            &format!("/v1.41/containers/{id}/start"),
            b"",
            "Connection: close\r\n",
        );
        let started = rest(start, "start");
        starting.store(false, std::sync::atomic::Ordering::SeqCst);
        (head, started)
    });
    assert!(
        head.starts_with("HTTP/1.1 204"),
        "run {n}: start of {id}: {head}{started}"
    );
    let output = rest(attach, &format!("run {n}: attach to {id}"));
    assert!(
        output.ends_with(&format!("run-{n}\n")),
        "run {n}: attach output {output:?}"
    );
    let waited = rest(wait, &format!("run {n}: wait for the removal of {id}"));
    assert!(
        waited.contains(r#""StatusCode":3"#),
        "run {n}: wait answered {waited}"
    );
}

#[test]
fn concurrent_attached_rm_runs_all_start_and_end() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let (runs, at_once) = (30, 4);
    std::thread::scope(|scope| {
        for worker in 0..at_once {
            let (d, image) = (&d, k.base.as_str());
            scope.spawn(move || {
                for n in (worker..runs).step_by(at_once) {
                    run_like_the_cli(d, image, n);
                }
            });
        }
    });
    // Every one removed itself.
    let left = d.get("/containers/json?all=1").json();
    assert_eq!(left, serde_json::json!([]), "{}", d.log());
}

/// Creates an exec in `container` and starts it hijacked with `start` as the body; returns
/// the exec's ID and everything it sent.
fn exec_hijacked(
    d: &Daemon,
    container: &str,
    create: serde_json::Value,
    start: &str,
) -> (String, Vec<u8>) {
    let created = d.request(
        "POST",
        &format!("/v1.41/containers/{container}/exec"),
        &[("Content-Type", "application/json")],
        create.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    let (mut s, head) = send(
        d,
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        start.as_bytes(),
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "exec start: {head}");
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    (id, out)
}

#[test]
fn exec_output_is_framed_as_the_start_says_and_a_missing_program_is_127() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let body = serde_json::json!({
        "Image": k.base, "Cmd": ["cat"], "OpenStdin": true,
        "HostConfig": { "NetworkMode": "none" },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=host",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        d.request("POST", "/containers/host/start", &[], b"").status,
        204
    );
    let line = "yay, interactive exec!";
    let printf = serde_json::json!({
        "Cmd": ["printf", line], "Tty": true, "AttachStdout": true, "AttachStderr": true,
    });
    // A -t exec started without Tty (docker-py's exec_start(socket=True)): frames, as dockerd.
    let (_, framed) = exec_hijacked(&d, "host", printf.clone(), r#"{"Detach":false}"#);
    let mut expected = vec![1, 0, 0, 0, 0, 0, 0, line.len() as u8];
    expected.extend_from_slice(line.as_bytes());
    assert_eq!(framed, expected, "{:?}", String::from_utf8_lossy(&framed));
    // Started with Tty (the docker CLI's exec -t): the terminal's bytes, raw.
    let (_, raw) = exec_hijacked(&d, "host", printf, r#"{"Detach":false,"Tty":true}"#);
    assert_eq!(String::from_utf8_lossy(&raw), line);
    // A program the container does not have: its error on the stream, and dockerd's 127
    // as the exec's exit code.
    let missing = serde_json::json!({
        "Cmd": ["non-existent"], "AttachStdout": true, "AttachStderr": true,
    });
    let (id, out) = exec_hijacked(&d, "host", missing, "{}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("executable file not found"), "{text}");
    let inspected = d.get(&format!("/exec/{id}/json")).json();
    assert_eq!(inspected["ExitCode"], 127, "{inspected}");
    assert_eq!(inspected["Running"], false);
    assert_eq!(
        d.request("DELETE", "/containers/host?force=1", &[], b"")
            .status,
        204
    );
}

/// Reads from `s` until what was read contains `needle`.
fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "the stream ended before {needle:?}: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no {needle:?} ({e}): {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Types `keys` one at a time (as a user does), then expects the daemon to have closed the
/// connection: the output ends and a write fails.
fn detach_with(s: &mut UnixStream, keys: &[u8]) {
    for key in keys {
        s.write_all(&[*key]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("the attach did not end after the detach keys: {e}"));
    // The connection is closed whole: a write after it fails (docker-py checks this).
    let mut refused = false;
    for _ in 0..10 {
        if s.write_all(b"still there?\n").is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "the connection stayed open after the detach keys");
}

#[test]
fn detach_keys_end_attaches_and_execs_and_the_container_runs_on() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let body = serde_json::json!({
        "Image": k.base, "Cmd": ["cat"], "Tty": true, "OpenStdin": true,
        "HostConfig": { "NetworkMode": "none" },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=term",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        d.request("POST", "/containers/term/start", &[], b"").status,
        204
    );
    let attach = |query: &str| {
        let (s, head) = send(
            &d,
            "POST",
            &format!("/containers/term/attach?stream=1&stdin=1&stdout=1{query}"),
            b"",
            "Connection: Upgrade\r\nUpgrade: tcp\r\n",
        );
        assert!(head.starts_with("HTTP/1.1 101"), "attach: {head}");
        s
    };
    let running = || d.get("/containers/term/json").json()["State"]["Running"] == true;

    // The default keys, ctrl-p ctrl-q; a ctrl-p that is not followed by ctrl-q is typed on.
    let mut s = attach("");
    s.write_all(b"one\n").unwrap();
    read_until(&mut s, "one");
    detach_with(&mut s, &[0x10, b'x', 0x10, 0x11]);
    assert!(running(), "{}", d.log());
    // Keys of the client's own: ctrl-x. The container's stdin was kept open.
    let mut s = attach("&detachKeys=ctrl-x");
    s.write_all(b"two\n").unwrap();
    read_until(&mut s, "two");
    detach_with(&mut s, &[0x18]);
    assert!(running());
    let bad = d.request(
        "POST",
        "/containers/term/attach?stream=1&detachKeys=ctrl-1",
        &[],
        b"",
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("detach keys"), "{}", bad.text());

    // An exec with a tty: detaching leaves its process running.
    let exec = serde_json::json!({
        "Cmd": ["cat"], "Tty": true, "AttachStdin": true, "AttachStdout": true,
        "detachKeys": "ctrl-p",
    });
    let created = d.request(
        "POST",
        "/containers/term/exec",
        &[("Content-Type", "application/json")],
        exec.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    let (mut s, head) = send(
        &d,
        "POST",
        &format!("/exec/{id}/start"),
        br#"{"Tty":true}"#,
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 101"), "exec start: {head}");
    s.write_all(b"three\n").unwrap();
    read_until(&mut s, "three");
    detach_with(&mut s, &[0x10]);
    let inspected = d.get(&format!("/exec/{id}/json")).json();
    assert_eq!(inspected["Running"], true, "{inspected}");
    assert!(running());
    assert_eq!(
        d.request("DELETE", "/containers/term?force=1", &[], b"")
            .status,
        204
    );
}

#[test]
fn an_attach_replaying_the_log_sends_it_after_the_head() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let body = serde_json::json!({
        "Image": k.base, "Cmd": ["echo", "hello"], "HostConfig": { "NetworkMode": "none" },
    });
    let created = d.request(
        "POST",
        "/containers/create?name=said",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(
        d.request("POST", "/containers/said/start", &[], b"").status,
        204
    );
    let waited = d.request("POST", "/containers/said/wait", &[], b"");
    assert_eq!(waited.json()["StatusCode"], 0);
    // As docker-py reads it: one buffered read takes the head and whatever came with it, and
    // only what comes later is read from the socket as the stream.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(STEP_LIMIT)).unwrap();
    s.write_all(
        b"POST /containers/said/attach?logs=1&stream=0&stdout=1&stderr=1 HTTP/1.1\r\n\
          Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("HTTP/1.1 101"), "{first}");
    assert!(
        first.ends_with("\r\n\r\n"),
        "the log came with the head: {first:?}"
    );
    let stream = rest(s, "attach with logs");
    assert_eq!(stream.as_bytes(), b"\x01\0\0\0\0\0\0\x06hello\n");
}
