//! `POST /build` over raw HTTP: the legacy stream, a hostile context refused with nothing
//! written outside the store, a dropped connection cancelling its build, concurrent builds.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::super::harness::Kiln;
use super::{Daemon, tar_of};

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

    // The three builds are in the build history, the abandoned one as cancelled.
    let statuses = || -> Vec<(String, serde_json::Value)> {
        let ls: serde_json::Value =
            serde_json::from_str(&k.ok(&["build", "history", "ls", "--json"])).unwrap();
        ls.as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|r| (r["status"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while statuses().last().is_some_and(|(s, _)| s == "running") {
        assert!(Instant::now() < deadline, "the cancelled build's record");
        std::thread::sleep(Duration::from_millis(100));
    }
    let builds = statuses();
    let names: Vec<&str> = builds.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["succeeded", "failed", "cancelled"]);
    // The engine's image: `labels` then makes the labelled one the client gets.
    assert!(
        builds[0].1["image"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(
        builds[1].1["inputs"]["context"],
        "(uploaded through the Engine API)"
    );
    assert_eq!(builds[1].1["error"]["line"], 2, "{}", builds[1].1);
    let logs = k.ok(&[
        "build",
        "history",
        "logs",
        builds[2].1["id"].as_str().unwrap(),
    ]);
    assert!(logs.contains("long-started"), "{logs}");
}

#[test]
fn the_build_stream_numbers_every_instruction_and_colours_run_stderr_as_dockerd() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let dockerfile = format!(
        "FROM {}\nENV FOO=bar\nRUN echo to-out && echo to-err >&2\nLABEL stage=one\n",
        k.base
    );
    let tar = tar_of(&[("Dockerfile", dockerfile.as_bytes())]);
    let build = |query: &str| {
        let r = d.request("POST", &format!("/build?{query}"), &[], &tar);
        assert_eq!(r.status, 200, "{}", r.text());
        let chunks: Vec<String> = r
            .lines()
            .iter()
            .filter_map(|l| l["stream"].as_str().map(str::to_owned))
            .collect();
        assert!(
            chunks.iter().any(|c| c.starts_with("Successfully built ")),
            "{chunks:?}"
        );
        chunks
    };
    let using_cache =
        |chunks: &[String]| chunks.iter().filter(|c| c.contains("Using cache")).count();
    // The first build: every instruction has its Step line, in order; nothing from cache.
    let first = build("t=stream%3A1");
    let steps: Vec<&str> = first
        .iter()
        .filter(|c| c.starts_with("Step "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        steps,
        [
            format!("Step 1/4 : FROM {}\n", k.base).as_str(),
            "Step 2/4 : ENV FOO=bar\n",
            "Step 3/4 : RUN echo to-out && echo to-err >&2\n",
            "Step 4/4 : LABEL stage=one\n",
        ],
        "{first:?}"
    );
    assert_eq!(using_cache(&first), 0, "{first:?}");
    // stdout as it is; stderr alone in a chunk wrapped in dockerd's red, as docker-py expects.
    assert!(first.iter().any(|c| c == "to-out\n"), "{first:?}");
    assert!(
        first.iter().any(|c| c == "\x1b[91mto-err\n\x1b[0m"),
        "{first:?}"
    );
    // Again: ENV, RUN and LABEL all from cache (docker-py's test_build_with_cache_from
    // counts these lines).
    let again = build("t=stream%3A2&cachefrom=%5B%22stream%3A1%22%5D");
    assert_eq!(using_cache(&again), 3, "{again:?}");
    let red = "\x1b[91mto-err\n\x1b[0m";
    assert!(!again.iter().any(|c| c == red), "{again:?}");
    // Several stages: numbered across the Dockerfile, global ARGs included, as dockerd does.
    let staged = format!(
        "ARG B={}\nFROM $B AS First\nRUN echo one > /one\nFROM $B\nCOPY --from=First /one /one\n",
        k.base
    );
    let r = d.request(
        "POST",
        "/build?t=stages",
        &[],
        &tar_of(&[("Dockerfile", staged.as_bytes())]),
    );
    let text: String = r
        .lines()
        .iter()
        .filter_map(|l| l["stream"].as_str().map(str::to_owned))
        .collect();
    for line in [
        format!("Step 1/5 : ARG B={}\n", k.base),
        format!("Step 2/5 : FROM {}\n", k.base),
        "Step 3/5 : RUN echo one > /one\n".to_owned(),
        format!("Step 4/5 : FROM {}\n", k.base),
        "Step 5/5 : COPY --from=First /one /one\n".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} missing:\n{text}");
    }
    // From an image that does not exist, or with nocache: nothing from cache.
    let none = build("t=stream%3A3&cachefrom=%5B%22nosuchtag%22%5D");
    assert_eq!(using_cache(&none), 0, "{none:?}");
    assert!(none.iter().any(|c| c == red), "{none:?}");
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

/// `shmsize` and `ulimits` (what `docker build --shm-size --ulimit` sends) reach every RUN
/// step; an unknown limit is a 400 naming it.
#[test]
fn shmsize_and_ulimits_reach_run_steps() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let dockerfile = format!(
        "FROM {}\nRUN df -k /dev/shm | tail -1 && echo \"nofile $(ulimit -n) $(ulimit -Hn)\"\n",
        k.base
    );
    let tar = tar_of(&[("Dockerfile", dockerfile.as_bytes())]);
    let ulimits = "%5B%7B%22Name%22%3A%22nofile%22%2C%22Soft%22%3A1234%2C%22Hard%22%3A2345%7D%5D";
    let r = d.request(
        "POST",
        &format!("/build?t=limits&networkmode=none&shmsize=134217728&ulimits={ulimits}"),
        &[],
        &tar,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text: String = r
        .lines()
        .iter()
        .filter_map(|l| l["stream"].as_str().map(str::to_owned))
        .collect();
    assert!(
        text.contains(" 131072 "),
        "/dev/shm is not 128 MiB:\n{text}"
    );
    assert!(text.contains("nofile 1234 2345"), "{text}");
    let bad = "%5B%7B%22Name%22%3A%22nofiles%22%2C%22Soft%22%3A1%2C%22Hard%22%3A1%7D%5D";
    let r = d.request("POST", &format!("/build?t=bad&ulimits={bad}"), &[], &tar);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("nofiles"), "{}", r.text());
}
