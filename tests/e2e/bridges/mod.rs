//! Bridge networks end to end (`kiln network …`, `kiln run --network NAME`): containers on one
//! user-defined network reach each other over TCP, containers on different networks cannot,
//! an `--internal` network has no way out, bad input fails with nothing half made, and
//! removal leaves no link and no nftables table behind.
//!
//! Every kiln here runs inside a network namespace the test makes (`nsenter --net`, which
//! enters only the network namespace, unlike `ip netns exec`), so bridges, addresses and rules
//! never touch the machine's own network. The image is pulled first, outside it, from the
//! loopback registry.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

mod api;
mod names;
mod rootless;

use super::containers::eventually;
use super::harness::{Kiln, assert_success, stderr, stdout};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace of the test's (with kiln's containers in it), removed on drop.
pub(super) struct TestNet<'a> {
    pub(super) k: &'a Kiln,
    pub(super) name: String,
    extra: Vec<String>,
}

impl<'a> TestNet<'a> {
    pub(super) fn new(k: &'a Kiln) -> TestNet<'a> {
        let name = format!(
            "kiln-br-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // The image comes from the registry on the host's loopback, before anything runs in
        // the namespace.
        k.ok(&["pull", &k.base]);
        TestNet {
            k,
            name,
            extra: Vec::new(),
        }
    }

    /// kiln inside the namespace.
    pub(super) fn kiln(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_ROOT", self.k.root.path())
            .output()
            .expect("run nsenter kiln")
    }

    pub(super) fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert_success(&out, args);
        stdout(&out)
    }

    pub(super) fn fails(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert!(
            !out.status.success(),
            "kiln {args:?} should have failed: {}",
            stdout(&out)
        );
        stderr(&out)
    }

    /// A command's output inside the namespace (not in a container).
    pub(super) fn host(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .args(args)
            .output()
            .expect("run nsenter");
        assert_success(&out, args);
        stdout(&out)
    }

    /// The namespace's link names.
    pub(super) fn links(&self) -> Vec<String> {
        self.host(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }

    fn tables(&self) -> String {
        self.host(&["nft", "list", "tables"])
    }

    /// An "outside" the namespace routes to: another namespace at 198.51.100.1 behind a
    /// veth pair.
    pub(super) fn add_world(&mut self) {
        let world = format!("{}-w", self.name);
        ip(&["netns", "add", &world]);
        self.extra.push(world.clone());
        ip(&[
            "-n", &self.name, "link", "add", "out0", "type", "veth", "peer", "name", "out1",
            "netns", &world,
        ]);
        ip(&[
            "-n",
            &self.name,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "out0",
        ]);
        ip(&["-n", &self.name, "link", "set", "out0", "up"]);
        ip(&[
            "-n",
            &world,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "out1",
        ]);
        ip(&["-n", &world, "link", "set", "out1", "up"]);
    }
}

impl Drop for TestNet<'_> {
    fn drop(&mut self) {
        let ids = stdout(&self.kiln(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.kiln(&["rm", "-f", id]);
        }
        for name in std::iter::once(&self.name).chain(&self.extra) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert_success(&out, args);
}

fn ip_of(net: &TestNet<'_>, container: &str, network: &str) -> String {
    let inspect: serde_json::Value =
        serde_json::from_str(&net.ok(&["inspect", container])).unwrap();
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    inspect["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A detached busybox answering `hello from NAME` on TCP port 80, over and over.
pub(super) fn server(net: &TestNet<'_>, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    let script = format!("while true; do echo hello from {name} | nc -l -p 80; done");
    args.extend_from_slice(&[&net.k.base, "sh", "-c", &script]);
    net.ok(&args);
}

/// What a client container on `network` reads from `address`:80 (empty when it cannot
/// connect).
fn fetch(net: &TestNet<'_>, network: &str, address: &str) -> String {
    let out = net.kiln(&[
        "run",
        "--rm",
        "--network",
        network,
        &net.k.base,
        "nc",
        "-w",
        "3",
        address,
        "80",
    ]);
    stdout(&out)
}

#[test]
fn containers_on_a_user_network_talk_and_other_networks_cannot() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "--subnet", "10.88.0.0/24", "front"]);
    net.ok(&["network", "create", "back"]);
    let listed = net.ok(&["network", "ls"]);
    for name in ["bridge", "host", "none", "front", "back"] {
        assert!(listed.contains(name), "{listed}");
    }
    server(
        &net,
        "web",
        &[
            "--network",
            "front",
            "--ip",
            "10.88.0.10",
            "--network-alias",
            "www",
        ],
    );
    server(&net, "db", &["--network", "back"]);
    let db = ip_of(&net, "db", "back");
    assert!(db.starts_with("172.18."), "{db}");

    // Same network: TCP both ways round the bridge.
    eventually("web answers on front", || {
        fetch(&net, "front", "10.88.0.10").contains("hello from web")
    });
    // Another network: nothing gets through, in either direction.
    assert_eq!(fetch(&net, "back", "10.88.0.10"), "");
    assert_eq!(fetch(&net, "front", &db), "");
    assert!(fetch(&net, "back", &db).contains("hello from db"));

    // Inspect: address, gateway, MAC, aliases with the short ID, on both sides.
    let inspect: serde_json::Value = serde_json::from_str(&net.ok(&["inspect", "web"])).unwrap();
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    let front = &inspect["NetworkSettings"]["Networks"]["front"];
    assert_eq!(front["IPAddress"], "10.88.0.10");
    assert_eq!(front["Gateway"], "10.88.0.1");
    assert_eq!(front["MacAddress"], "02:42:0a:58:00:0a");
    assert_eq!(front["IPAMConfig"]["IPv4Address"], "10.88.0.10");
    let id = inspect["Id"].as_str().unwrap();
    assert_eq!(front["Aliases"], serde_json::json!(["www", &id[..12]]));
    let network: serde_json::Value =
        serde_json::from_str(&net.ok(&["network", "inspect", "front"])).unwrap();
    assert_eq!(network[0]["Containers"][id]["IPv4Address"], "10.88.0.10/24");
    assert_eq!(network[0]["IPAM"]["Config"][0]["Subnet"], "10.88.0.0/24");

    // connect: db joins front too and reaches web there; disconnect takes it off again.
    net.ok(&["network", "connect", "--alias", "data", "front", "db"]);
    let on_front = ip_of(&net, "db", "front");
    assert!(on_front.starts_with("10.88.0."), "{on_front}");
    let reach = net.kiln(&["exec", "db", "nc", "-w", "3", "10.88.0.10", "80"]);
    assert!(
        stdout(&reach).contains("hello from web"),
        "{}",
        stderr(&reach)
    );
    net.ok(&["network", "disconnect", "front", "db"]);
    let reach = net.kiln(&["exec", "db", "nc", "-w", "3", "10.88.0.10", "80"]);
    assert_eq!(stdout(&reach), "");
}

#[test]
fn an_internal_network_has_no_way_out_and_the_default_bridge_has_one() {
    let k = Kiln::new();
    let mut net = TestNet::new(&k);
    net.add_world();
    net.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.89.0.0/24",
        "closed",
    ]);
    let ping = |network: &str| {
        net.kiln(&[
            "run",
            "--rm",
            "--network",
            network,
            &net.k.base,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "198.51.100.1",
        ])
        .status
        .success()
    };
    // The default bridge masquerades out (the world has no route back to 172.17/16).
    assert!(ping("bridge"), "the default bridge routes out");
    assert!(!ping("closed"), "an internal network must have no way out");
    // Even a container that adds its own route gets nowhere: the rules drop it.
    let out = net.kiln(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "--network",
        "closed",
        &net.k.base,
        "sh",
        "-c",
        "ip route add default via 10.89.0.1 && ping -c 1 -W 2 198.51.100.1",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
}

/// A requested address only a stopped container holds is handed over (compose recreates a
/// service with a fixed address before removing the old container); the stopped one cannot
/// start while the new holder runs, and can once it has stopped.
#[test]
fn a_stopped_containers_requested_address_is_handed_over() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "--subnet", "10.91.0.0/24", "fixed"]);
    let fixed = ["--network", "fixed", "--ip", "10.91.0.7"];
    server(&net, "first", &fixed);
    let err = net.fails(
        &[
            &["run", "-d", "--name", "clash"][..],
            &fixed,
            &[&k.base, "true"],
        ]
        .concat(),
    );
    assert!(err.contains("already in use"), "{err}");
    net.ok(&["stop", "-t", "0", "first"]);
    server(&net, "second", &fixed);
    assert_eq!(ip_of(&net, "second", "fixed"), "10.91.0.7");
    eventually("second to answer", || {
        fetch(&net, "fixed", "10.91.0.7").contains("hello from second")
    });
    let err = net.fails(&["start", "first"]);
    assert!(
        err.contains("10.91.0.7") && err.contains("already in use"),
        "{err}"
    );
    net.ok(&["rm", "-f", "second"]);
    net.ok(&["start", "first"]);
    eventually("first to answer again", || {
        fetch(&net, "fixed", "10.91.0.7").contains("hello from first")
    });
}

#[test]
fn bad_input_fails_cleanly_and_removal_leaves_nothing() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&[
        "network",
        "create",
        "--subnet",
        "10.90.0.0/24",
        "--label",
        "a=b",
        "one",
    ]);
    for (args, expected) in [
        (
            vec!["network", "create", "--subnet", "10.90.0.128/25", "two"],
            "overlaps with network one",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.91.0.0/24",
                "--gateway",
                "10.92.0.1",
                "two",
            ],
            "not inside the subnet 10.91.0.0/24",
        ),
        (vec!["network", "create", "one"], "already exists"),
        (
            vec!["network", "create", "bad/name"],
            "invalid network name",
        ),
        (vec!["network", "rm", "bridge"], "pre-defined network"),
        (vec!["network", "rm", "nope"], "network nope not found"),
    ] {
        let err = net.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    server(&net, "alpha", &["--network", "one", "--ip", "10.90.0.5"]);
    // An address taken: no container is left, the network still has one endpoint.
    let err = net.fails(&[
        "run",
        "-d",
        "--name",
        "beta",
        "--network",
        "one",
        "--ip",
        "10.90.0.5",
        &net.k.base,
        "true",
    ]);
    assert!(
        err.contains("10.90.0.5") && err.contains("already in use"),
        "{err}"
    );
    assert!(!net.ok(&["ps", "-a"]).contains("beta"));
    let err = net.fails(&["run", "--rm", "--network", "nope", &net.k.base, "true"]);
    assert!(err.contains("network nope not found"), "{err}");
    let inspect: serde_json::Value =
        serde_json::from_str(&net.ok(&["network", "inspect", "one"])).unwrap();
    assert_eq!(inspect[0]["Containers"].as_object().unwrap().len(), 1);
    assert_eq!(inspect[0]["Labels"]["a"], "b");
    // In use: refused, naming the container.
    let err = net.fails(&["network", "rm", "one"]);
    assert!(err.contains("active endpoints (alpha)"), "{err}");

    // A user-defined network's bridge is `kiln-` and the ID's first 10 hex (its inspect shows
    // no driver options, as dockerd's).
    let bridge = format!("kiln-{}", &inspect[0]["Id"].as_str().unwrap()[..10]);
    let links = net.links();
    assert!(links.contains(&bridge), "{links:?}");
    assert!(links.iter().any(|l| l.starts_with("veth")), "{links:?}");
    assert!(net.tables().contains(&bridge));

    net.ok(&["rm", "-f", "alpha"]);
    eventually("the container's veth pair to go", || {
        !net.links().iter().any(|l| l.starts_with("veth"))
    });
    net.ok(&["network", "rm", "one"]);
    let links = net.links();
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("kiln") || l.starts_with("veth")),
        "{links:?}"
    );
    assert!(!net.tables().contains("kiln"), "{}", net.tables());
    // The address went back: a new network with the same subnet hands out the same one.
    net.ok(&["network", "create", "--subnet", "10.90.0.0/24", "again"]);
    assert_eq!(
        net.ok(&["network", "prune", "-f"]).trim(),
        "Deleted Networks:\nagain"
    );
}

/// `kiln serve` inside the test's namespace.
pub(super) fn daemon_in(net: &TestNet<'_>) -> super::serve::Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kiln.sock");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.name))
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--host", &format!("unix://{}", socket.display())])
        .env("KILN_ROOT", net.k.root.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kiln serve");
    let daemon = super::serve::Daemon { child, dir, socket };
    eventually("kiln serve to listen", || {
        std::os::unix::net::UnixStream::connect(&daemon.socket).is_ok()
    });
    daemon
}

#[test]
fn names_aliases_and_short_ids_resolve_on_user_networks_but_not_on_the_default_bridge() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "apps"]);
    server(
        &net,
        "api",
        &["--network", "apps", "--network-alias", "backend"],
    );
    let inspect: serde_json::Value = serde_json::from_str(&net.ok(&["inspect", "api"])).unwrap();
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    let short = inspect["Id"].as_str().unwrap()[..12].to_owned();
    for name in ["api", "backend", short.as_str()] {
        eventually(&format!("api to answer as {name}"), || {
            fetch(&net, "apps", name).contains("hello from api")
        });
    }
    let conf = net.ok(&[
        "run",
        "--rm",
        "--network",
        "apps",
        &net.k.base,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(conf.starts_with("nameserver 127.0.0.11\n"), "{conf}");
    // The default bridge has no DNS by name, as Docker's.
    server(&net, "lone", &["--network", "bridge"]);
    let out = net.kiln(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        &net.k.base,
        "nslookup",
        "lone",
    ]);
    assert!(
        !stdout(&out).contains("Address: 172.17."),
        "{}",
        stdout(&out)
    );
}

#[test]
fn kiln_check_finds_what_a_crash_left_of_networks() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "--subnet", "10.97.0.0/24", "crashy"]);
    let id = net
        .ok(&[
            "create",
            "--name",
            "ghost",
            "--network",
            "crashy",
            "--ip",
            "10.97.0.9",
            &k.base,
            "true",
        ])
        .trim()
        .to_owned();
    // A removal that died after the container's record went, before its address was
    // released.
    std::fs::remove_dir_all(k.root.path().join("containers").join(&id)).unwrap();
    let err = net.fails(&[
        "create",
        "--network",
        "crashy",
        "--ip",
        "10.97.0.9",
        &k.base,
        "true",
    ]);
    assert!(err.contains("already in use"), "{err}");
    // And a bridge no network names (another store's, or a crashed `network rm`'s).
    net.host(&["ip", "link", "add", "kiln-0123456789", "type", "bridge"]);
    // And the host end of a veth pair no endpoint names, while a running container's own
    // host end is not a leftover.
    net.host(&[
        "ip",
        "link",
        "add",
        "veth0123456789a",
        "type",
        "veth",
        "peer",
        "name",
        "strayend",
    ]);
    server(&net, "alive", &["--network", "crashy"]);

    let report = net.ok(&["check"]);
    assert!(
        report.contains("leftover: network crashy: endpoint of container ghost"),
        "{report}"
    );
    assert!(
        report.contains("leftover: bridge kiln-0123456789"),
        "{report}"
    );
    assert!(
        report.contains("leftover: veth veth0123456789a"),
        "{report}"
    );
    assert_eq!(report.matches("leftover: veth").count(), 1, "{report}");
    let repaired = net.ok(&["check", "--repair"]);
    assert!(
        repaired.contains("ghost") && repaired.contains("(removed)"),
        "{repaired}"
    );
    // The address is free again; the unknown bridge is only reported, never removed.
    net.ok(&[
        "create",
        "--network",
        "crashy",
        "--ip",
        "10.97.0.9",
        &k.base,
        "true",
    ]);
    assert!(net.links().contains(&"kiln-0123456789".to_owned()));
    assert!(!net.ok(&["check"]).contains("ghost"));
}
