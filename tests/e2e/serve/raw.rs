//! The wire details, over raw HTTP on the daemon's socket: headers on every response,
//! versioned and bare paths, JSON 404s, 400s for bad input (the daemon keeps serving), SIGTERM
//! and stale-socket handling.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::super::harness::{Kiln, assert_success, stderr};
use super::Daemon;

fn assert_api_headers(r: &super::Response) {
    assert_eq!(r.header("Api-Version"), Some("1.41"), "{:?}", r.headers);
    assert_eq!(r.header("Ostype"), Some("linux"));
    assert_eq!(r.header("Docker-Experimental"), Some("false"));
}

#[test]
fn ping_versions_and_json_errors() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    for path in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
        for method in ["GET", "HEAD"] {
            let r = d.request(method, path, &[], b"");
            assert_eq!(r.status, 200, "{method} {path}");
            assert_api_headers(&r);
            assert_eq!(r.header("Builder-Version"), Some("1"));
            assert_eq!(r.header("Swarm"), Some("inactive"));
            let expect: &[u8] = if method == "GET" { b"OK" } else { b"" };
            assert_eq!(r.body, expect);
        }
    }
    let v = d.get("/v1.41/version").json();
    assert_eq!(v["ApiVersion"], "1.41");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Components"][0]["Name"], "Engine");
    let info = d.get("/info").json();
    assert_eq!(info["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(info["Images"], 0);
    assert_eq!(info["ExperimentalBuild"], false);

    let too_new = d.get("/v1.99/info");
    assert_eq!(too_new.status, 400);
    assert!(
        too_new
            .text()
            .contains("Maximum supported API version is 1.41")
    );
    assert!(d.get("/v1.12/version").text().contains("too old"));
    for (path, status, text) in [
        ("/nope", 404, "page not found"),
        ("/v1.41/containers/x/frobnicate", 404, "page not found"),
        ("/swarm", 404, "not supported"),
        ("/v1.41/plugins", 404, "not supported"),
        ("/images/nope:1/json", 404, "No such image: nope:1"),
        ("/v1.41/images/nope/get", 404, "No such image: nope"),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_api_headers(&r);
        assert_eq!(r.header("Content-Type"), Some("application/json"), "{path}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(text),
            "{path}: {}",
            r.text()
        );
    }
    let r = d.request("DELETE", "/images/nope", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "No such image: nope");
}

#[test]
fn bad_input_is_a_400_and_the_daemon_keeps_serving() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &["--header-timeout", "1"]);
    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        (
            "GET",
            "/images/json?filters=%7Bnot-json",
            b"",
            400,
            "invalid filter",
        ),
        (
            "GET",
            "/images/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
            b"",
            400,
            "invalid filter 'bogus'",
        ),
        ("POST", "/auth", b"{not json", 400, "invalid JSON"),
        ("POST", "/images/create", b"", 400, "fromImage"),
        (
            "POST",
            "/images/create?fromImage=UPPER%2F..bad",
            b"",
            400,
            "invalid reference",
        ),
        ("POST", "/build?buildargs=%7Bx", b"", 400, "buildargs"),
        (
            "POST",
            "/images/nope/tag?repo=a%2F..%2Fb",
            b"",
            400,
            "invalid reference",
        ),
        ("GET", "/events?since=yesterday", b"", 400, "since"),
        (
            "POST",
            "/build?remote=https%3A%2F%2Fexample.com%2Fctx.git",
            b"",
            400,
            "remote",
        ),
    ];
    for (method, path, body, status, text) in cases {
        let r = d.request(method, path, &[], body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(text),
            "{path}: {}",
            r.text()
        );
    }
    // Empty and null JSON parameters are accepted (old clients send them).
    let r = d.get("/images/json?filters=&all=0");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!([]));
    // A body too large for its operation.
    let big = vec![b' '; 2 << 20];
    assert_eq!(d.request("POST", "/auth", &[], &big).status, 413);
    // Huge headers: 431, whether hyper's buffer or the router's check catches them.
    for size in [100 * 1024, 400 * 1024] {
        let huge = "x".repeat(size);
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = write!(s, "GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n");
        let mut first = String::new();
        let _ = BufReader::new(&s).read_line(&mut first);
        assert!(first.contains("431"), "{size}: {first}");
    }
    // A slow client that never finishes its headers is dropped after the header timeout.
    let mut slow = UnixStream::connect(&d.socket).unwrap();
    slow.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "slow client kept"
    );
    // Still serving.
    assert_eq!(d.get("/_ping").status, 200);
}

#[test]
fn sigterm_stops_cleanly_stale_sockets_are_replaced_live_ones_refused() {
    let k = Kiln::new();
    let mut d = Daemon::start(&k, &[], &[]);
    // A second daemon on the same socket is refused while the first lives.
    let second = k.cmd(&["serve", "--host", &d.host()]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("another daemon is listening"),
        "{}",
        stderr(&second)
    );
    // An open event stream does not hold up the shutdown.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = d.terminate();
    assert!(status.success(), "{status}: {}", d.log());
    assert!(!d.socket.exists(), "the socket outlived its daemon");
    // A daemon killed outright leaves its socket file; the next one replaces it.
    let mut killed = Daemon::start(&k, &[], &[]);
    let socket = killed.socket.clone();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    assert!(socket.exists());
    let mut again = crate::e2e::harness::kiln_command()
        .env("KILN_ROOT", k.root.path())
        .args(["serve", "--host", &format!("unix://{}", socket.display())])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the stale socket was not replaced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = again.kill();
    let _ = again.wait();
    // Plain TCP is refused with the reason.
    let tcp = k.cmd(&["serve", "--host", "tcp://127.0.0.1:2375"]);
    assert!(!tcp.status.success());
    assert!(stderr(&tcp).contains("plain TCP"), "{}", stderr(&tcp));
    assert_success(&k.cmd(&["images"]), &["images"]);
}
