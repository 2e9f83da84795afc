//! Published ports end to end (`kiln run -p/-P`, `kiln port`, the Engine API's
//! `PortBindings`): a published port answers from the test namespace's loopback (the
//! supervisor's proxy) and from another namespace outside it (DNAT), a taken port is a clear
//! error that leaves nothing, and removal frees the port and leaves no rule.
//!
//! As in `bridges`, every kiln runs inside a network namespace the test makes; clients are
//! the host's busybox `nc` run in that namespace (or in the "outside" one).

use std::process::Command;

use super::bridges::{TestNet, daemon_in, server};
use super::containers::eventually;
use super::harness::{Kiln, assert_success, stdout};
use super::rootless::{RANGED_USER, user};

/// What `nc` run in namespace `netns` reads from `address`:`port` (empty when it cannot
/// connect).
pub(super) fn fetch_in(netns: &str, address: &str, port: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["busybox", "nc", "-w", "3", address, port])
        .output()
        .expect("run nsenter busybox nc");
    stdout(&out)
}

/// The `ports-…` chains of kiln's nftables tables in the test's namespace.
fn port_chains(net: &TestNet<'_>) -> Vec<String> {
    net.host(&["nft", "list", "ruleset"])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain ports-"))
        .map(|c| c.trim_end_matches(" {").to_owned())
        .collect()
}

/// The packets the DNAT rules of the test's namespace counted.
fn dnat_packets(net: &TestNet<'_>) -> u64 {
    net.host(&["nft", "list", "ruleset"])
        .lines()
        .filter(|l| l.contains("dnat to"))
        .filter_map(|l| {
            l.split("counter packets ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn published_ports_answer_from_loopback_and_outside_and_leave_nothing() {
    let k = Kiln::new();
    let mut net = TestNet::new(&k);
    net.add_world();
    let world = format!("{}-w", net.name);
    server(&net, "web", &["--network", "bridge", "-p", "8080:80"]);
    // The loopback of the test's namespace: the proxy.
    eventually("web answers on 127.0.0.1:8080", || {
        fetch_in(&net.name, "127.0.0.1", "8080").contains("hello from web")
    });
    assert_eq!(
        dnat_packets(&net),
        0,
        "the host's own traffic is not DNATed"
    );
    // From outside, to the namespace's other address: DNAT straight to the container (the
    // proxy listens there too, so the rule's counter tells which path served it).
    eventually("web answers on 198.51.100.2:8080 from outside", || {
        fetch_in(&world, "198.51.100.2", "8080").contains("hello from web")
    });
    assert!(
        dnat_packets(&net) > 0,
        "{}",
        net.host(&["nft", "list", "ruleset"])
    );
    assert_eq!(port_chains(&net).len(), 1, "{:?}", port_chains(&net));
    assert_eq!(net.ok(&["port", "web"]).trim(), "80/tcp -> 0.0.0.0:8080");
    assert_eq!(net.ok(&["port", "web", "80"]).trim(), "0.0.0.0:8080");
    let ps = net.ok(&["ps"]);
    assert!(ps.lines().next().unwrap().contains("PORTS"), "{ps}");
    assert!(ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    let err = net.fails(&["port", "web", "81"]);
    assert!(
        err.contains("no public port '81/tcp' published for web"),
        "{err}"
    );

    // A taken port: a clear error before the container runs, and no rule of it.
    let err = net.fails(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-p",
        "8080:80",
        &k.base,
        "true",
    ]);
    assert!(
        err.contains("Bind for 0.0.0.0:8080/tcp failed: port is already allocated"),
        "{err}"
    );
    assert_eq!(port_chains(&net).len(), 1, "{:?}", port_chains(&net));
    // The `--rm` container goes too (its supervisor removes it after reporting).
    eventually("the failed --rm container to go", || {
        net.ok(&["ps", "-aq"]).lines().count() == 1
    });

    // Removal frees the port and removes the rules; the port can be published again.
    net.ok(&["rm", "-f", "web"]);
    assert!(port_chains(&net).is_empty(), "{:?}", port_chains(&net));
    assert_eq!(fetch_in(&net.name, "127.0.0.1", "8080"), "");
    server(&net, "again", &["--network", "bridge", "-p", "8080:80"]);
    eventually("again answers on 127.0.0.1:8080", || {
        fetch_in(&net.name, "127.0.0.1", "8080").contains("hello from again")
    });
    // A chain a crash left (its container gone): `kiln check` reports it, `--repair` removes it.
    net.host(&[
        "nft",
        "add",
        "chain",
        "ip",
        "kiln0",
        "ports-0123456789ab",
        "{ type nat hook prerouting priority -100; }",
    ]);
    let check = net.kiln(&["check"]);
    assert!(
        stdout(&check).contains("ports-0123456789ab"),
        "{}",
        stdout(&check)
    );
    net.kiln(&["check", "--repair"]);
    assert_eq!(port_chains(&net).len(), 1, "{:?}", port_chains(&net));
    // Stopping takes the rules away too (dockerd keeps no mapping for a stopped container).
    net.ok(&["stop", "-t", "0", "again"]);
    assert!(port_chains(&net).is_empty(), "{:?}", port_chains(&net));
    assert_eq!(net.ok(&["port", "again"]).trim(), "");
    // A start binds and publishes again.
    net.ok(&["start", "again"]);
    eventually("again answers after its restart", || {
        fetch_in(&world, "198.51.100.2", "8080").contains("hello from again")
    });
    assert_eq!(port_chains(&net).len(), 1, "{:?}", port_chains(&net));
}

#[test]
fn publish_all_and_the_default_network_use_ports_the_kernel_picks() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    // -P publishes --expose'd ports; on the default network (slirp4netns) the proxy dials
    // into the container's namespace.
    server(&net, "all", &["--expose", "80", "-P"]);
    let line = net.ok(&["port", "all", "80"]);
    let port = line
        .trim()
        .strip_prefix("0.0.0.0:")
        .expect(&line)
        .to_owned();
    assert_ne!(port, "0");
    eventually("all answers on its ephemeral port", || {
        fetch_in(&net.name, "127.0.0.1", &port).contains("hello from all")
    });
    // An address and a UDP port: `127.0.0.1::53/udp` binds loopback only.
    let out = net.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "127.0.0.1::53/udp",
        &k.base,
        "sleep",
        "60",
    ]);
    assert!(!out.trim().is_empty());
    let line = net.ok(&["port", "udp"]);
    assert!(line.starts_with("53/udp -> 127.0.0.1:"), "{line}");
    // Bad specs name themselves.
    let err = net.fails(&["run", "--rm", "-p", "8000-8002:80-81", &k.base, "true"]);
    assert!(err.contains("8000-8002:80-81"), "{err}");
    let err = net.fails(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "80",
        &k.base,
        "true",
    ]);
    assert!(err.contains("none"), "{err}");
    // On the host network they are discarded, as dockerd does (the ports are the host's).
    net.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "-p",
        "80",
        &k.base,
        "true",
    ]);
}

#[test]
fn the_engine_api_publishes_ports_in_dockerd_shapes() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let d = daemon_in(&net);
    let created = d.request(
        "POST",
        "/v1.41/containers/create?name=apiweb",
        &[("Content-Type", "application/json")],
        serde_json::json!({
            "Image": k.base,
            "Cmd": ["sh", "-c", "while true; do echo hello from api | nc -l -p 80; done"],
            "ExposedPorts": {"80/tcp": {}, "90/tcp": {}},
            "HostConfig": {
                "NetworkMode": "bridge",
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8081"}]},
                "PublishAllPorts": false,
            },
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["Id"].as_str().unwrap().to_owned();
    // Created, not started: the exposed ports, no bindings yet.
    let inspect = d.get(&format!("/v1.41/containers/{id}/json")).json();
    assert_eq!(inspect["NetworkSettings"]["Ports"], serde_json::json!({}));
    assert_eq!(
        inspect["Config"]["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "90/tcp": {}})
    );
    assert_eq!(
        inspect["HostConfig"]["PortBindings"],
        serde_json::json!({"80/tcp": [{"HostIp": "", "HostPort": "8081"}]})
    );
    let started = d.request("POST", &format!("/v1.41/containers/{id}/start"), &[], b"");
    assert_eq!(started.status, 204, "{}", started.text());
    let inspect = d.get(&format!("/v1.41/containers/{id}/json")).json();
    assert_eq!(
        inspect["NetworkSettings"]["Ports"],
        serde_json::json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}],
            "90/tcp": null,
        })
    );
    let listed = d.get("/v1.41/containers/json").json();
    assert_eq!(
        listed[0]["Ports"],
        serde_json::json!([
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8081, "Type": "tcp"},
            {"PrivatePort": 90, "Type": "tcp"},
        ])
    );
    eventually("apiweb answers on 127.0.0.1:8081", || {
        fetch_in(&net.name, "127.0.0.1", "8081").contains("hello from api")
    });
    // A second container on the same port: created, and its start fails naming the port.
    let second = d.request(
        "POST",
        "/v1.41/containers/create",
        &[("Content-Type", "application/json")],
        serde_json::json!({
            "Image": k.base, "Cmd": ["true"],
            "HostConfig": {"NetworkMode": "bridge",
                "PortBindings": {"80/tcp": [{"HostPort": "8081"}]}},
        })
        .to_string()
        .as_bytes(),
    );
    assert_eq!(second.status, 201, "{}", second.text());
    let second = second.json()["Id"].as_str().unwrap().to_owned();
    let taken = d.request(
        "POST",
        &format!("/v1.41/containers/{second}/start"),
        &[],
        b"",
    );
    assert_eq!(taken.status, 500, "{}", taken.text());
    assert!(
        taken
            .text()
            .contains("Bind for 0.0.0.0:8081/tcp failed: port is already allocated"),
        "{}",
        taken.text()
    );
    assert_eq!(port_chains(&net).len(), 1, "{:?}", port_chains(&net));
    // `kiln --host … port` reads the same shape from the daemon.
    let host = format!("unix://{}", d.socket.display());
    let ps = net.ok(&["--host", &host, "ps"]);
    assert!(ps.contains("0.0.0.0:8081->80/tcp, 90/tcp"), "{ps}");
    assert_eq!(
        net.ok(&["--host", &host, "port", "apiweb"]).trim(),
        "80/tcp -> 0.0.0.0:8081"
    );
    let removed = d.request(
        "DELETE",
        &format!("/v1.41/containers/{id}?force=1"),
        &[],
        b"",
    );
    assert_eq!(removed.status, 204, "{}", removed.text());
    assert!(port_chains(&net).is_empty(), "{:?}", port_chains(&net));
}

#[test]
fn rootless_kiln_publishes_through_a_listener_that_dials_into_the_container() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    user.ok(store.path(), &["pull", &k.base]);
    let run = |args: &[&str]| {
        let out = user.kiln_in_netns(&net.name, store.path(), args);
        assert_success(&out, args);
        stdout(&out)
    };
    let script = "while true; do echo hello from rootless | nc -l -p 80; done";
    run(&[
        "run", "-d", "--name", "rl", "-p", "8090:80", &k.base, "sh", "-c", script,
    ]);
    let answered = (0..100).any(|_| {
        let got = fetch_in(&net.name, "127.0.0.1", "8090");
        got.contains("hello from rootless") || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    });
    let port = run(&["port", "rl"]);
    run(&["rm", "-f", "rl"]);
    assert!(answered, "no answer on 127.0.0.1:8090");
    assert_eq!(port.trim(), "80/tcp -> 0.0.0.0:8090");
    user.assert_no_processes();
    // The port is free again once the container is gone.
    assert_eq!(fetch_in(&net.name, "127.0.0.1", "8090"), "");
}
