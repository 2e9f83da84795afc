//! `pause`/`unpause`, `top`, `stats` and `update` through `kiln serve` (raw HTTP, the docker
//! CLI) and the CLI's verbs, on real containers with and without cgroups of their own.

use std::time::Duration;

use super::super::harness::Kiln;
use super::Daemon;
use super::docker_cli::Docker;

fn create(k: &Kiln, d: &Daemon, name: &str, cmd: &str, host: serde_json::Value) -> String {
    let mut host_config = serde_json::json!({ "NetworkMode": "none" });
    for (key, value) in host.as_object().unwrap() {
        host_config[key] = value.clone();
    }
    let body = serde_json::json!({
        "Image": k.base, "Cmd": ["sh", "-c", cmd], "HostConfig": host_config,
    });
    let created = d.request(
        "POST",
        &format!("/containers/create?name={name}"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let started = d.request("POST", &format!("/containers/{name}/start"), &[], b"");
    assert_eq!(started.status, 204, "{}", started.text());
    created.json()["Id"].as_str().unwrap().to_owned()
}

fn post_json(d: &Daemon, path: &str, body: serde_json::Value) -> super::Response {
    d.request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// The container's v1 or v2 cgroup file `file` of `controller`, from its PID 1.
fn cgroup_file(pid: u64, controller: &str, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let dir = if controllers.split(',').any(|c| c == controller) {
            format!("/sys/fs/cgroup/{controller}{path}")
        } else if controllers.is_empty()
            && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            format!("/sys/fs/cgroup{path}")
        } else {
            continue;
        };
        return std::fs::read_to_string(format!("{dir}/{file}")).ok();
    }
    None
}

#[test]
fn top_stats_update_pause_and_unpause() {
    let k = Kiln::new();
    let d = Daemon::start(&k, &[], &[]);
    k.ok(&["pull", &k.base]);
    let limited = create(
        &k,
        &d,
        "res1",
        "exec sleep 600",
        serde_json::json!({ "Memory": 64 << 20, "PidsLimit": 100 }),
    );
    let pid = d.get("/containers/res1/json").json()["State"]["Pid"]
        .as_u64()
        .unwrap();
    assert!(pid > 0);

    // top: its one process, `-ef` columns by default.
    let top = d.get("/containers/res1/top").json();
    assert_eq!(
        top["Titles"],
        serde_json::json!(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"])
    );
    let rows = top["Processes"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{top}");
    // Its command, a child of the sandbox's init (the container's PID 1, not shown).
    assert_eq!(rows[0][2], pid.to_string());
    assert_eq!(rows[0][7], "sleep 600");
    let aux = d.get("/containers/res1/top?ps_args=aux").json();
    assert_eq!(aux["Titles"].as_array().unwrap().len(), 11);
    let fields = d.get("/containers/res1/top?ps_args=-o%20pid,comm").json();
    assert_eq!(fields["Processes"][0][1], "sleep");
    assert_eq!(d.get("/containers/res1/top?ps_args=--forest").status, 400);
    assert_eq!(d.get("/containers/nope/top").status, 404);

    // stats: one object with a previous sample, in dockerd's shape; no networks without one.
    let stats = d.get("/containers/res1/stats?stream=false");
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = stats.json();
    for key in [
        "read",
        "preread",
        "precpu_stats",
        "cpu_stats",
        "memory_stats",
        "blkio_stats",
        "pids_stats",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing: {stats}");
    }
    assert!(stats.get("networks").is_none(), "{stats}");
    assert_eq!(stats["memory_stats"]["limit"], 64 << 20);
    assert!(stats["memory_stats"]["usage"].as_u64().unwrap() > 0);
    assert_eq!(
        stats["pids_stats"],
        serde_json::json!({ "current": 1, "limit": 100 })
    );
    assert!(stats["precpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0);
    assert!(
        stats["cpu_stats"]["system_cpu_usage"].as_u64()
            > stats["precpu_stats"]["system_cpu_usage"].as_u64()
    );
    assert_eq!(stats["name"], "/res1");
    let one_shot = d
        .get("/containers/res1/stats?stream=false&one-shot=true")
        .json();
    assert_eq!(one_shot["preread"], "0001-01-01T00:00:00Z");

    // update: the live cgroup and the spec (inspect); what kiln cannot set is a 400.
    let updated = post_json(
        &d,
        "/containers/res1/update",
        serde_json::json!({ "Memory": 128 << 20 }),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["Warnings"], serde_json::Value::Null);
    assert_eq!(
        d.get("/containers/res1/json").json()["HostConfig"]["Memory"],
        128 << 20
    );
    assert_eq!(
        cgroup_file(pid, "memory", "memory.limit_in_bytes")
            .or_else(|| cgroup_file(pid, "memory", "memory.max"))
            .unwrap()
            .trim(),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        post_json(
            &d,
            "/containers/res1/update",
            serde_json::json!({ "CpuShares": 3 })
        )
        .status,
        400
    );
    assert_eq!(
        post_json(
            &d,
            "/containers/res1/update",
            serde_json::json!({ "RestartPolicy": { "Name": "sometimes" } })
        )
        .status,
        400
    );
    assert_eq!(
        post_json(
            &d,
            "/containers/res1/update",
            serde_json::json!({ "Memory": 1024 })
        )
        .status,
        400
    );

    // A container without limits has no cgroup to change: the spec changes, with a warning.
    create(&k, &d, "res2", "exec sleep 600", serde_json::json!({}));
    let warned = post_json(
        &d,
        "/containers/res2/update",
        serde_json::json!({ "Memory": 100 << 20 }),
    )
    .json();
    assert!(
        warned["Warnings"][0]
            .as_str()
            .unwrap()
            .contains("next start"),
        "{warned}"
    );
    assert_eq!(
        d.get("/containers/res2/json").json()["HostConfig"]["Memory"],
        100 << 20
    );

    // pause: frozen, `paused` everywhere, exec refused; unpause thaws.
    assert_eq!(
        d.request("POST", "/containers/res1/pause", &[], b"").status,
        204
    );
    let state = d.get("/containers/res1/json").json()["State"].clone();
    assert_eq!(
        (
            state["Status"].as_str(),
            state["Paused"].as_bool(),
            state["Running"].as_bool()
        ),
        (Some("paused"), Some(true), Some(true))
    );
    if let Some(freezer) = cgroup_file(pid, "freezer", "freezer.state") {
        assert_eq!(freezer.trim(), "FROZEN");
    }
    assert_eq!(
        d.request("POST", "/containers/res1/pause", &[], b"").status,
        409
    );
    let exec = post_json(
        &d,
        "/containers/res1/exec",
        serde_json::json!({ "Cmd": ["true"] }),
    );
    assert_eq!(exec.status, 409, "{}", exec.text());
    assert!(exec.text().contains("paused"), "{}", exec.text());
    let listed = d
        .get("/containers/json?filters=%7B%22status%22%3A%5B%22paused%22%5D%7D")
        .json();
    assert_eq!(listed[0]["Id"], limited);
    assert!(k.ok(&["ps"]).contains("(Paused)"));
    // A commit of a paused container leaves it paused.
    let committed = d.request("POST", "/commit?container=res1&repo=frozen", &[], b"");
    assert_eq!(committed.status, 201, "{}", committed.text());
    assert_eq!(
        d.get("/containers/res1/json").json()["State"]["Status"],
        "paused"
    );
    if let Some(freezer) = cgroup_file(pid, "freezer", "freezer.state") {
        assert_eq!(freezer.trim(), "FROZEN");
    }
    assert_eq!(
        d.request("POST", "/containers/res1/unpause", &[], b"")
            .status,
        204
    );
    assert_eq!(
        d.get("/containers/res1/json").json()["State"]["Status"],
        "running"
    );
    assert_eq!(
        d.request("POST", "/containers/res1/unpause", &[], b"")
            .status,
        409
    );
    assert_eq!(
        d.request("POST", "/containers/nope/pause", &[], b"").status,
        404
    );

    // The CLI's verbs and the docker CLI over the same calls.
    let top = k.ok(&["top", "res1"]);
    assert!(top.starts_with("UID") && top.contains("sleep 600"), "{top}");
    let stats = k.ok(&["stats", "--no-stream", "res1"]);
    assert!(
        stats.contains("res1") && stats.contains("B / 128MiB"),
        "{stats}"
    );
    k.ok(&["update", "--memory", "96m", "res1"]);
    assert_eq!(
        d.get("/containers/res1/json").json()["HostConfig"]["Memory"],
        96 << 20
    );
    let docker = Docker::new(&d);
    let rendered = docker.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
        "res1",
    ]);
    assert!(
        rendered.starts_with("res1 ")
            && rendered.contains("96MiB")
            && rendered.trim().ends_with(" 1"),
        "{rendered}"
    );
    assert!(docker.ok(&["top", "res1"]).contains("sleep 600"));
    docker.ok(&["pause", "res1"]);
    assert!(k.ok(&["ps"]).contains("(Paused)"));
    docker.ok(&["unpause", "res1"]);
    k.ok(&["pause", "res1"]);
    // SIGKILL reaches a paused container (it is thawed for it).
    assert_eq!(
        d.request("POST", "/containers/res1/kill", &[], b"").status,
        204
    );
    let waited = d.request("POST", "/containers/res1/wait", &[], b"").json();
    assert_eq!(waited["StatusCode"], 137, "{waited}");
    assert_eq!(
        d.get("/containers/res1/json").json()["State"]["Status"],
        "exited"
    );
    assert_eq!(d.get("/containers/res1/top").status, 409);
    assert_eq!(d.get("/containers/res1/stats?stream=false").status, 409);

    // A stream ends when the container does.
    create(&k, &d, "res3", "sleep 2", serde_json::json!({}));
    std::thread::sleep(Duration::from_millis(200));
    let streamed = d.get("/containers/res3/stats");
    assert_eq!(streamed.status, 200);
    let lines = streamed.lines();
    assert!(lines.len() >= 2, "{}", streamed.text());
    assert_eq!(
        lines[1]["precpu_stats"]["cpu_usage"],
        lines[0]["cpu_stats"]["cpu_usage"]
    );
    let _ = d.request("DELETE", "/containers/res2?force=1", &[], b"");
}
