//! Containers through `kiln serve`: the real docker CLI (`run --rm`, `run -d --name`, `ps`,
//! `logs`, `exec`, `stop`, `kill`, `wait`, `rm -f`, `inspect`), and raw HTTP for the statuses
//! clients branch on (304, 404, 409) and the attach upgrade.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::super::harness::{Kiln, stderr, stdout};
use super::Daemon;
use super::docker_cli::Docker;

#[test]
fn docker_cli_runs_lists_stops_and_removes_containers() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    // The image is not in the store: create answers 404, the CLI pulls and creates again.
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &k.base,
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(out, "out\n");
    let failed = docker.run(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &k.base,
            "sh",
            "-c",
            "exit 3",
        ],
        b"",
        None,
    );
    assert_eq!(failed.status.code(), Some(3), "{}", stderr(&failed));
    // -it under a pty: the container's stdio is a terminal.
    let tty = script(
        &d,
        &format!(
            "docker -H {} run --rm -it --network none {} sh -c 'test -t 0 && echo is-a-tty; echo in-tty'",
            d.host(),
            k.base
        ),
    );
    assert!(tty.contains("is-a-tty") && tty.contains("in-tty"), "{tty}");
    // --rm removed them.
    assert_eq!(docker.ok(&["ps", "-aq"]).trim(), "");

    let id = docker
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--label",
            "tier=front",
            "--network",
            "none",
            &k.base,
            "sh",
            "-c",
            "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let ps = docker.ok(&["ps", "--format", "{{.ID}} {{.Names}} {{.Status}}"]);
    assert!(ps.starts_with(&format!("{} web Up", &id[..12])), "{ps}");
    let by_label = docker.ok(&["ps", "-q", "--filter", "label=tier=front"]);
    assert_eq!(by_label.trim(), &id[..12]);
    assert_eq!(
        docker
            .ok(&["ps", "-q", "--filter", "label=tier=back"])
            .trim(),
        ""
    );
    // Inspect: the image ID, the state, dockerd's fields.
    let image_id = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &k.base]);
    let inspected = docker.ok(&[
        "inspect",
        "--format",
        "{{.Image}} {{.State.Status}} {{.Name}} {{.HostConfig.NetworkMode}} {{.RestartCount}}",
        "web",
    ]);
    assert_eq!(
        inspected.trim(),
        format!("{} running /web none 0", image_id.trim())
    );
    // A second container of that name is a conflict.
    let dup = docker.run(&["run", "-d", "--name", "web", &k.base, "true"], b"", None);
    assert!(!dup.status.success());
    assert!(
        stderr(&dup).contains("is already in use"),
        "{}",
        stderr(&dup)
    );
    // exec: output on both streams, stdin, the exit code, detached, a tty.
    let out = docker.run(
        &["exec", "web", "sh", "-c", "echo hi; echo oops >&2; exit 4"],
        b"",
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("hi\n", "oops\n")
    );
    let piped = docker.run(
        &["exec", "-i", "web", "sh", "-c", "tr a-z A-Z"],
        b"shout\n",
        None,
    );
    assert_eq!(stdout(&piped), "SHOUT\n", "{}", stderr(&piped));
    docker.ok(&["exec", "-d", "web", "sh", "-c", "echo detached > /tmp/d"]);
    wait_for(|| {
        docker
            .run(&["exec", "web", "cat", "/tmp/d"], b"", None)
            .stdout
            == b"detached\n"
    });
    let tty = script(
        &d,
        &format!(
            "docker -H {} exec -it web sh -c 'test -t 0 && echo is-a-tty; echo in-tty'",
            d.host()
        ),
    );
    assert!(tty.contains("is-a-tty") && tty.contains("in-tty"), "{tty}");
    // Logs, the stop signal, wait.
    wait_for(|| docker.ok(&["logs", "web"]).contains("started"));
    docker.ok(&["stop", "-t", "5", "web"]);
    assert_eq!(docker.ok(&["wait", "web"]).trim(), "0");
    let logs = docker.ok(&["logs", "web"]);
    assert_eq!(logs, "started\nbye\n");
    let status = docker.ok(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(status.starts_with("web Exited (0)"), "{status}");
    // kill: a running container ends with the signal's code.
    docker.ok(&["start", "web"]);
    docker.ok(&["kill", "web"]);
    assert_eq!(docker.ok(&["wait", "web"]).trim(), "137");
    // The kiln CLI sees the same containers.
    let kiln_ps = k.ok(&["ps", "-a"]);
    assert!(kiln_ps.contains("web"), "{kiln_ps}");
    docker.ok(&["start", "web"]);
    let refused = docker.run(&["rm", "web"], b"", None);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("container is running"),
        "{}",
        stderr(&refused)
    );
    docker.ok(&["rm", "-f", "web"]);
    let gone = docker.run(&["inspect", "web"], b"", None);
    assert!(stderr(&gone).contains("No such"), "{}", stderr(&gone));
    let events = docker.events_so_far(
        &["type=container", "container=web"],
        "{{.Action}} {{.Actor.Attributes.exitCode}}",
    );
    for expected in ["create", "start", "die 0", "kill", "die 137", "destroy"] {
        assert!(
            events.contains(expected),
            "{expected:?} missing from:\n{events}"
        );
    }
}

/// Runs `command` under a pty (`script`), as a terminal user would, and returns its output.
pub(super) fn script(d: &Daemon, command: &str) -> String {
    let config = tempfile::tempdir().unwrap();
    let mut script = std::process::Command::new("script");
    script
        .args(["-qec", command, "/dev/null"])
        .env("DOCKER_CONFIG", config.path());
    let out = super::output_within(script, b"", super::CLIENT_LIMIT);
    assert!(
        out.status.success(),
        "{command}: {}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log()
    );
    stdout(&out)
}

pub(super) fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("condition not met within 10 s");
}

#[test]
fn container_statuses_and_the_attach_upgrade() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let create = |name: &str, cmd: &str| {
        let body = serde_json::json!({
            "Image": k.base, "Cmd": ["sh", "-c", cmd], "OpenStdin": true, "StdinOnce": true,
            "HostConfig": { "NetworkMode": "none" }, "Unknown": {"ignored": true},
        });
        d.request(
            "POST",
            &format!("/v1.41/containers/create?name={name}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let missing = d.request(
        "POST",
        "/containers/create",
        &[("Content-Type", "application/json")],
        br#"{"Image":"nope:1"}"#,
    );
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "No such image: nope:1");
    assert_eq!(
        d.request("POST", "/containers/create", &[], b"{bad").status,
        400
    );
    let created = create("c1", "cat; echo done");
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    assert_eq!(create("c1", "true").status, 409);
    assert_eq!(
        d.get("/containers/nope/json").json()["message"],
        "No such container: nope"
    );
    assert_eq!(
        d.request("POST", "/containers/nope/start", &[], b"").status,
        404
    );

    // Attach before start, hijacked: 101, then stdin in and framed output out.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"POST /v1.41/containers/c1/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n\
          Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: tcp"), "{head}");
    assert_eq!(
        d.request("POST", "/containers/c1/start", &[], b"").status,
        204
    );
    assert_eq!(
        d.request("POST", "/containers/c1/start", &[], b"").status,
        304
    );
    let running_rm = d.request("DELETE", "/containers/c1", &[], b"");
    assert_eq!(running_rm.status, 409, "{}", running_rm.text());
    s.write_all(b"hello\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let mut text = Vec::new();
    let mut rest = &out[..];
    while rest.len() >= 8 {
        assert_eq!(rest[0], 1, "stdout frame: {out:?}");
        let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        text.extend_from_slice(&rest[8..8 + n]);
        rest = &rest[8 + n..];
    }
    assert_eq!(String::from_utf8_lossy(&text), "hello\ndone\n");
    let waited = d.request("POST", "/containers/c1/wait", &[], b"");
    assert_eq!(waited.json()["StatusCode"], 0);
    assert_eq!(
        d.request("POST", "/containers/c1/stop", &[], b"").status,
        304
    );
    let inspect = d.get(&format!("/containers/{}/json", &id[..12])).json();
    assert_eq!(inspect["State"]["Status"], "exited");
    assert_eq!(inspect["Config"]["Cmd"][2], "cat; echo done");
    let logs = d.get("/containers/c1/logs?stdout=1&timestamps=1&tail=1");
    assert_eq!(logs.status, 200);
    assert_eq!(logs.body[0], 1);
    assert!(
        String::from_utf8_lossy(&logs.body[8..]).ends_with("Z done\n"),
        "{}",
        logs.text()
    );
    let list = d
        .get("/containers/json?all=1&filters=%7B%22name%22%3A%5B%22c1%22%5D%7D")
        .json();
    assert_eq!(list[0]["Id"], id);
    assert_eq!(list[0]["Names"][0], "/c1");
    assert_eq!(
        d.get("/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D")
            .status,
        400
    );
    assert_eq!(d.request("DELETE", "/containers/c1", &[], b"").status, 204);
    assert_eq!(d.request("DELETE", "/containers/c1", &[], b"").status, 404);
}

/// Reads an HTTP response head byte by byte (what follows it belongs to the hijacked stream).
fn read_head(s: &mut UnixStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn docker_cli_volumes_are_the_stores() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    let docker = Docker::new(&d);
    assert_eq!(
        docker
            .ok(&["volume", "create", "--label", "a=b", "data"])
            .trim(),
        "data"
    );
    assert_eq!(docker.ok(&["volume", "ls", "-q"]).trim(), "data");
    assert_eq!(
        docker
            .ok(&["volume", "ls", "-q", "--filter", "label=a=c"])
            .trim(),
        ""
    );
    let driver = docker.ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{.Labels.a}}",
        "data",
    ]);
    assert_eq!(driver.trim(), "local b");
    docker.ok(&[
        "run",
        "--name",
        "user",
        "--network",
        "none",
        "-v",
        "data:/data",
        &k.base,
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/data",
        &k.base,
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "kept\n");
    let in_use = docker.run(&["volume", "rm", "data"], b"", None);
    assert!(
        stderr(&in_use).contains("volume is in use"),
        "{}",
        stderr(&in_use)
    );
    docker.ok(&["rm", "user"]);
    docker.ok(&["volume", "rm", "data"]);
    let gone = docker.run(&["volume", "inspect", "data"], b"", None);
    assert!(
        stderr(&gone).contains("no such volume"),
        "{}",
        stderr(&gone)
    );
    // The kiln CLI shares them.
    assert_eq!(k.ok(&["volume", "ls", "-q"]).trim(), "");
}

/// `POST /containers/{id}/rename`, which docker-compose uses to set a container aside before
/// recreating it: 204, the new name found and the old one not, 409 for a name in use, 400
/// for a missing or invalid one, 404 for no such container, and the `rename` event.
#[test]
fn containers_are_renamed() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let since = chrono::Utc::now().timestamp();
    let create = |name: &str| {
        let body = serde_json::json!({
            "Image": k.base, "Cmd": ["true"], "HostConfig": { "NetworkMode": "none" },
        });
        let r = d.request(
            "POST",
            &format!("/containers/create?name={name}"),
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["Id"].as_str().unwrap().to_owned()
    };
    let rename = |id: &str, query: &str| {
        d.request("POST", &format!("/containers/{id}/rename{query}"), &[], b"")
    };
    let web = create("web");
    let other = create("other");

    let r = rename(&web[..12], "?name=a02701bda961_web");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        d.get("/containers/a02701bda961_web/json").json()["Id"],
        web.as_str()
    );
    assert_eq!(
        d.get(&format!("/containers/{web}/json")).json()["Name"],
        "/a02701bda961_web"
    );
    assert_eq!(d.get("/containers/web/json").status, 404);
    // The freed name is free for a new container, as compose's recreate needs.
    create("web");

    let taken = rename(&other, "?name=web");
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert!(
        taken.json()["message"]
            .as_str()
            .unwrap()
            .contains("already in use")
    );
    assert_eq!(rename(&other, "").status, 400);
    assert_eq!(rename(&other, "?name=a/b").status, 400);
    assert_eq!(rename("nope", "?name=x1").status, 404);
    assert_eq!(d.get("/containers/other/json").status, 200);

    let until = chrono::Utc::now().timestamp() + 1;
    let events = d
        .get(&format!(
            "/events?since={since}&until={until}&filters=%7B%22event%22%3A%5B%22rename%22%5D%7D"
        ))
        .lines();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["Actor"]["ID"], web.as_str());
    assert_eq!(events[0]["Actor"]["Attributes"]["name"], "a02701bda961_web");
    assert_eq!(events[0]["Actor"]["Attributes"]["oldName"], "/web");
}
