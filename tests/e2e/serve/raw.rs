//! The wire details, over raw HTTP on the daemon's socket: headers on every response,
//! versioned and bare paths, JSON 404s, 400s for bad input (the daemon keeps serving), a
//! hostile build context refused, a dropped connection cancelling its build, events, and
//! SIGTERM / stale-socket handling.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::super::harness::{Kiln, assert_success, stderr};
use super::{Daemon, tar_of};

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
    // Huge headers: refused by the HTTP layer.
    let huge = "x".repeat(200 * 1024);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n");
    let mut first = String::new();
    let _ = BufReader::new(&s).read_line(&mut first);
    assert!(first.is_empty() || first.contains("431"), "{first}");
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
fn a_hostile_build_context_is_refused_and_nothing_is_written_outside() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("escaped");
    let rel = marker.to_str().unwrap().trim_start_matches('/').to_owned();
    let deep = format!("../../../../../../../../{rel}");
    let absolute = marker.to_str().unwrap().to_owned();
    for name in [deep.as_str(), absolute.as_str()] {
        let tar = tar_of(&[("Dockerfile", b"FROM scratch\n"), (name, b"x")]);
        let r = d.request(
            "POST",
            "/build?t=evil",
            &[("Content-Type", "application/x-tar")],
            &tar,
        );
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(name),
            "{}",
            r.text()
        );
        assert!(!marker.exists(), "{name} wrote outside the context");
    }
    let tmp: Vec<_> = std::fs::read_dir(k.root.path().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
    // A missing Dockerfile fails before the stream starts: a real status, not 200.
    let r = d.request(
        "POST",
        "/build?dockerfile=nope",
        &[],
        &tar_of(&[("Dockerfile", b"FROM scratch\n")]),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Cannot locate specified Dockerfile"),
        "{}",
        r.text()
    );
    assert_eq!(d.get("/_ping").status, 200);
    assert_eq!(d.get("/images/evil/json").status, 404);
}

#[test]
fn a_build_streams_legacy_lines_and_a_dropped_connection_cancels_it() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let dockerfile = format!("FROM {}\nRUN echo built-through-the-api\n", k.base);
    let tar = tar_of(&[("Dockerfile", dockerfile.as_bytes())]);
    let labels = "%7B%22team%22%3A%22kiln%22%7D";
    let r = d.request(
        "POST",
        &format!("/v1.41/build?t=api%3A1&t=api%3A2&labels={labels}&buildargs=%7B%7D&cachefrom=%5B%5D&rm=1"),
        &[("Content-Type", "application/x-tar"), ("X-Registry-Config", "e30=")],
        &tar,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(
        r.header("Transfer-Encoding")
            .is_some_and(|t| t.contains("chunked"))
    );
    let lines = r.lines();
    let streams: String = lines.iter().filter_map(|l| l["stream"].as_str()).collect();
    assert!(
        streams.contains("Step 2/2 : RUN echo built-through-the-api"),
        "{streams}"
    );
    assert!(streams.contains("built-through-the-api\n"), "{streams}");
    let id = lines
        .iter()
        .find_map(|l| l["aux"]["ID"].as_str())
        .expect("aux ID")
        .to_owned();
    assert!(
        streams.contains(&format!("Successfully built {}", &id[7..19])),
        "{streams}"
    );
    assert!(
        streams.contains("Successfully tagged api:1\n")
            && streams.contains("Successfully tagged api:2\n")
    );
    let inspect = d.get("/images/api:2/json").json();
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(inspect["Config"]["Labels"]["team"], "kiln");
    // The CLI sees the same image in the same store.
    assert_eq!(k.image_id("api:1"), id);

    // A failing RUN after the stream started: in-band errorDetail and error.
    let failing = format!("FROM {}\nRUN exit 3\n", k.base);
    let r = d.request(
        "POST",
        "/build?t=bad",
        &[],
        &tar_of(&[("Dockerfile", failing.as_bytes())]),
    );
    assert_eq!(r.status, 200);
    let last = r.lines().pop().unwrap();
    assert!(
        last["errorDetail"]["message"]
            .as_str()
            .unwrap()
            .contains("returned a non-zero code: 3"),
        "{last}"
    );
    assert_eq!(last["error"], last["errorDetail"]["message"]);
    assert_eq!(last["errorDetail"]["code"], 3);

    // The client leaves during a long RUN: the build is cancelled, its sandbox killed, no name.
    let long = format!("FROM {}\nRUN echo long-started && sleep 987\n", k.base);
    let body = tar_of(&[("Dockerfile", long.as_bytes())]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /build?t=cancelled HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut seen = String::new();
    while !seen.contains("long-started\\n") {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "stream ended: {seen}"
        );
        seen.push_str(&line);
    }
    // The echo ran; the sleep is exec'd right after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleepers() == 0 {
        assert!(Instant::now() < deadline, "the RUN is not running");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(reader);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleepers() > 0 {
        assert!(
            Instant::now() < deadline,
            "the build's RUN outlived its client\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.get("/images/cancelled/json").status, 404);
    assert_eq!(d.get("/_ping").status, 200);
}

/// Processes running the long RUN's `sleep 987`.
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00987\x00"))
        .count()
}

#[test]
fn image_operations_report_events() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let since = chrono::Utc::now().timestamp() - 1;
    let r = d.request(
        "POST",
        &format!("/images/create?fromImage={}", k.base),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    assert!(
        lines.iter().any(|l| l["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("Digest: sha256:"))),
        "{lines:?}"
    );
    let id = d.get(&format!("/images/{}/json", k.base)).json()["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d.request(
            "POST",
            &format!("/images/{}/tag?repo=ev&tag=1", k.base),
            &[],
            b""
        )
        .status,
        201
    );
    let removed = d.request("DELETE", "/images/ev:1", &[], b"").json();
    assert_eq!(removed, serde_json::json!([{ "Untagged": "ev:1" }]));
    // A missing image in a reachable registry is an HTTP 404 before any stream.
    let missing = d.request(
        "POST",
        &format!(
            "/images/create?fromImage={}/nothere&tag=1",
            k.registry.addr()
        ),
        &[],
        b"",
    );
    assert_eq!(missing.status, 404, "{}", missing.text());
    let until = chrono::Utc::now().timestamp() + 1;
    let r = d.get(&format!("/events?since={since}&until={until}"));
    assert_eq!(r.status, 200);
    let events = r.lines();
    let actions: Vec<&str> = events.iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(actions, ["pull", "tag", "untag"], "{events:?}");
    assert_eq!(events[1]["Actor"]["ID"], id.as_str());
    assert_eq!(events[1]["Actor"]["Attributes"]["name"], "ev:1");
    assert_eq!(events[1]["Type"], "image");
    let filtered = d
        .get(&format!(
            "/events?since={since}&until={until}&filters=%7B%22event%22%3A%5B%22untag%22%5D%7D"
        ))
        .lines();
    assert_eq!(filtered.len(), 1);
    // A live stream sees what happens after it opened.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        d.request("POST", &format!("/images/{id}/tag?repo=live"), &[], b"")
            .status,
        201
    );
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = String::new();
    while !got.contains("\"live:latest\"") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{got}");
        got.push_str(&line);
    }
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
    let mut again = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
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

#[test]
fn import_with_changes_and_load_errors_in_band() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let rootfs = tar_of(&[("hello.txt", b"imported\n")]);
    let r = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=imp&tag=1&changes=USER%20foobar&changes=CMD%20%5B%22echo%22%5D",
        &[("Content-Type", "application/x-tar")],
        &rootfs,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.lines().pop().unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    let inspect = d.get(&format!("/images/{}/json", &id[7..19])).json();
    assert_eq!(inspect["Config"]["User"], "foobar");
    assert_eq!(inspect["Config"]["Cmd"], serde_json::json!(["echo"]));
    assert_eq!(inspect["RepoTags"], serde_json::json!(["imp:1"]));
    // A change that cannot apply is refused before anything is imported.
    let bad = d.request(
        "POST",
        "/images/create?fromSrc=-&repo=imp2&changes=RUN%20true",
        &[],
        &rootfs,
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(d.get("/images/imp2/json").status, 404);
    // A fromSrc URL is not fetched.
    assert_eq!(
        d.request(
            "POST",
            "/images/create?fromSrc=http%3A%2F%2Fx%2Fa.tar",
            &[],
            b""
        )
        .status,
        501
    );
    // images/load reports a bad archive in-band (docker-py raises ImageLoadError from it).
    let r = d.request(
        "POST",
        "/images/load",
        &[("Content-Type", "application/x-tar")],
        b"abc",
    );
    assert_eq!(r.status, 200);
    let last = r.lines().pop().unwrap();
    assert!(last["errorDetail"]["message"].is_string(), "{last}");
    // An unnamed image (no -t) is found by its ID, as dockerd finds it.
    let tar = tar_of(&[(
        "Dockerfile",
        format!("FROM {}\nRUN echo unnamed > /u\n", k.base).as_bytes(),
    )]);
    let r = d.request("POST", "/build", &[], &tar);
    let built = r
        .lines()
        .iter()
        .find_map(|l| l["aux"]["ID"].as_str().map(str::to_owned))
        .expect("aux ID");
    assert_eq!(
        d.get(&format!("/images/{}/json", &built[7..19])).json()["Id"],
        built.as_str()
    );
}

#[test]
fn a_client_that_leaves_mid_pull_cancels_it() {
    use kiln_testkit::{Fault, FaultProxy};
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let stall = Fault::Stall {
        duration: Duration::from_secs(3),
        times: 1,
    };
    // Control: a pull whose first connection stalls completes once the registry client retries.
    let proxy = FaultProxy::start(k.registry.port(), stall).unwrap();
    let name = format!("{}/busybox", proxy.addr());
    let r = d.request(
        "POST",
        &format!("/images/create?fromImage={name}&tag=latest"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get(&format!("/images/{name}:latest/json")).status, 200);
    assert_eq!(
        d.request("DELETE", &format!("/images/{name}:latest"), &[], b"")
            .status,
        200
    );

    // The same pull, its client gone during the stall: it never completes.
    let proxy = FaultProxy::start(k.registry.port(), stall).unwrap();
    let name = format!("{}/busybox", proxy.addr());
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /images/create?fromImage={name}&tag=latest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    std::thread::sleep(Duration::from_secs(8));
    let r = d.get(&format!("/images/{name}:latest/json"));
    assert_eq!(r.status, 404, "the abandoned pull completed: {}", r.text());
    assert_eq!(d.get("/_ping").status, 200);
}

#[test]
fn four_concurrent_builds_through_the_api_all_succeed() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let results: Vec<(String, super::Response)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let d = &d;
                let base = k.base.clone();
                s.spawn(move || {
                    let dockerfile =
                        format!("FROM {base}\nRUN echo build-{i} > /which && sleep 1\nCOPY f /f\n");
                    let tar = tar_of(&[
                        ("Dockerfile", dockerfile.as_bytes()),
                        ("f", format!("file {i}").as_bytes()),
                    ]);
                    (
                        format!("par:{i}"),
                        d.request("POST", &format!("/build?t=par%3A{i}"), &[], &tar),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = std::collections::BTreeSet::new();
    for (name, r) in results {
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert!(
            r.lines().iter().all(|l| l.get("errorDetail").is_none()),
            "{name}: {}",
            r.text()
        );
        let inspect = d.get(&format!("/images/{name}/json"));
        assert_eq!(inspect.status, 200, "{name}");
        ids.insert(inspect.json()["Id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 4, "the four builds should give four images");
}

#[test]
fn removing_an_image_a_container_uses_is_a_409() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    k.ok(&["tag", &k.base, "used:1"]);
    // A stopped container of the CLI, in the store the daemon shares.
    k.ok(&[
        "run",
        "--name",
        "user-of-used",
        "--network",
        "none",
        "used:1",
        "true",
    ]);
    // Another name of the image goes freely, as with dockerd; the last one is refused.
    let other = d.request("DELETE", &format!("/images/{}", k.base), &[], b"");
    assert_eq!(other.status, 200, "{}", other.text());
    let r = d.request("DELETE", "/v1.41/images/used:1", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("unable to remove repository reference") && message.contains("must force"),
        "{message}"
    );
    let forced = d.request("DELETE", "/images/used:1?force=1", &[], b"");
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(forced.json(), serde_json::json!([{ "Untagged": "used:1" }]));
}
