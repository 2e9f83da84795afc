//! Bridge networks against the kernel: every test moves its own thread into a network
//! namespace it made (a `unshare --net` process holds it), so bridges, rules and addresses
//! never touch the machine's own network. Stand-in "containers" are more `unshare --net`
//! processes, whose namespaces the crate connects as it does a sandbox's. Needs root.

use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};

use kiln_network::{CreateRequest, EndpointRequest, NetworkError, Networks, netlink, nft};

/// A process holding a fresh network namespace until dropped.
struct Namespace(Child);

impl Namespace {
    fn new() -> Namespace {
        let mut child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        // Wait until it is in its own namespace.
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        for _ in 0..500 {
            if let Ok(theirs) = std::fs::read_link(format!("/proc/{}/ns/net", child.id()))
                && theirs != mine
                && std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
                    .is_ok_and(|c| c.trim() == "sleep")
            {
                return Namespace(child);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("unshare did not start");
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Moves the calling thread into this namespace (and so everything it starts).
    fn enter(&self) {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
    }

    /// Runs a command inside this namespace; its success.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> bool {
    rustix::process::geteuid().is_root()
}

fn request(name: &str, subnet: Option<&str>) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        ..Default::default()
    }
}

fn ping(from: &Namespace, to: std::net::Ipv4Addr) -> bool {
    from.run(&["busybox", "ping", "-c", "1", "-W", "1", &to.to_string()])
        .status
        .success()
}

#[test]
fn containers_on_one_network_talk_and_networks_are_isolated() {
    assert!(root(), "the network tests need root");
    let host = Namespace::new();
    host.enter();
    let store = tempfile::tempdir().unwrap();
    let networks = Networks::open(store.path());
    let front = networks
        .create(&request("front", Some("10.31.0.0/24")))
        .unwrap();
    let back = networks.create(&request("back", None)).unwrap();
    assert_eq!(back.subnet().unwrap().to_string(), "172.18.0.0/16");
    let tables = nft::kiln_tables().unwrap();
    assert!(
        tables.contains(&front.bridge) && tables.contains(&back.bridge),
        "{tables:?}"
    );

    let (a, b, c) = (Namespace::new(), Namespace::new(), Namespace::new());
    let id = |n: char| n.to_string().repeat(64);
    let mut ips = Vec::new();
    for (ns, name, network) in [(&a, 'a', "front"), (&b, 'b', "front"), (&c, 'c', "back")] {
        let (_, endpoint) = networks
            .connect(
                network,
                &id(name),
                &name.to_string(),
                &EndpointRequest::default(),
            )
            .unwrap();
        networks.attach_container(&id(name), ns.pid()).unwrap();
        ips.push(endpoint.ip.unwrap());
    }
    assert_eq!(ips[0].to_string(), "10.31.0.2");
    assert_eq!(ips[1].to_string(), "10.31.0.3");
    let shown =
        String::from_utf8(a.run(&["ip", "-o", "-4", "addr", "show", "eth0"]).stdout).unwrap();
    assert!(shown.contains("10.31.0.2/24"), "{shown}");
    assert!(ping(&a, ips[1]), "same network");
    assert!(ping(&c, back.addressing.unwrap().gateway), "own gateway");
    assert!(!ping(&a, ips[2]), "another network must be unreachable");
    assert!(!ping(&c, ips[0]), "another network must be unreachable");

    // An address taken is refused; a network in use is not removed.
    let taken = EndpointRequest {
        ip: Some(ips[0]),
        ..Default::default()
    };
    let err = networks
        .connect("front", &id('d'), "d", &taken)
        .unwrap_err();
    assert!(matches!(err, NetworkError::AddressInUse { .. }), "{err}");
    let err = networks.remove("front").unwrap_err();
    assert!(err.to_string().contains("active endpoints"), "{err}");

    // Removal: endpoints released, then the network, its bridge and its rules.
    let host_ends: Vec<String> = networks
        .endpoints_of(&id('a'))
        .unwrap()
        .iter()
        .map(|(_, e)| kiln_network::host_interface(e))
        .collect();
    // The containers end (their namespaces with them, and so their pairs), then are removed.
    drop((a, b, c));
    for name in ['a', 'b', 'c'] {
        networks.release_container(&id(name)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let links = netlink::link_names().unwrap();
        if !links.iter().any(|l| l.starts_with("veth")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{links:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !netlink::link_names()
            .unwrap()
            .iter()
            .any(|l| host_ends.contains(l))
    );
    networks.remove("front").unwrap();
    assert_eq!(networks.prune().unwrap(), ["back"]);
    let links = netlink::link_names().unwrap();
    assert!(!links.iter().any(|l| l.starts_with("kiln")), "{links:?}");
    assert!(nft::kiln_tables().unwrap().is_empty());
    let names: Vec<String> = networks
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["bridge", "host", "none"]);
}

#[test]
fn internal_networks_have_no_way_out() {
    assert!(root(), "the network tests need root");
    let host = Namespace::new();
    host.enter();
    let store = tempfile::tempdir().unwrap();
    let networks = Networks::open(store.path());
    // The "outside": another namespace behind a veth pair of the test's host namespace.
    let world = Namespace::new();
    let setup = format!(
        "ip link add out0 type veth peer name out1 netns {} && ip addr add 198.51.100.2/24 dev out0 && ip link set out0 up",
        world.pid()
    );
    let out = host.run(&["sh", "-c", &setup]);
    assert!(out.status.success(), "{out:?}");
    let out = world.run(&[
        "sh",
        "-c",
        "ip addr add 198.51.100.1/24 dev out1 && ip link set out1 up",
    ]);
    assert!(out.status.success(), "{out:?}");
    networks
        .create(&request("open", Some("10.32.0.0/24")))
        .unwrap();
    let internal = CreateRequest {
        internal: true,
        ..request("closed", Some("10.33.0.0/24"))
    };
    networks.create(&internal).unwrap();
    let (a, b) = (Namespace::new(), Namespace::new());
    for (ns, id, network) in [(&a, "a", "open"), (&b, "b", "closed")] {
        networks
            .connect(network, &id.repeat(64), id, &EndpointRequest::default())
            .unwrap();
        networks.attach_container(&id.repeat(64), ns.pid()).unwrap();
    }
    let outside = "198.51.100.1".parse().unwrap();
    assert!(ping(&a, outside), "the open network routes out");
    assert!(
        !ping(&b, outside),
        "the internal network must have no way out"
    );
    let routes = String::from_utf8(b.run(&["ip", "route"]).stdout).unwrap();
    assert!(!routes.contains("default"), "{routes}");
    // Even with a route of its own, the rules drop what leaves the bridge.
    let out = b.run(&["ip", "route", "add", "default", "via", "10.33.0.1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !ping(&b, outside),
        "the internal network must have no way out"
    );
    assert!(ping(&a, outside), "the open network still routes out");
}

#[test]
fn a_failed_create_leaves_nothing() {
    assert!(root(), "the network tests need root");
    let host = Namespace::new();
    host.enter();
    let store = tempfile::tempdir().unwrap();
    let networks = Networks::open(store.path());
    networks
        .create(&request("one", Some("10.40.0.0/16")))
        .unwrap();
    for (bad, expected) in [
        (
            request("two", Some("10.40.3.0/24")),
            "overlaps with network one",
        ),
        (request("one", Some("10.41.0.0/24")), "already exists"),
        (request("bad/name", None), "invalid network name"),
        (
            CreateRequest {
                gateway: Some("10.50.0.1".parse().unwrap()),
                ..request("three", Some("10.42.0.0/24"))
            },
            "not inside the subnet",
        ),
        (request("four", Some("10.43.0.1/24")), "host bits"),
    ] {
        let err = networks.create(&bad).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    // An attach that fails half-way (the namespace is gone by the time the pair is moved)
    // removes the pair it made.
    let gone = Namespace::new();
    let pid = gone.pid();
    drop(gone);
    networks
        .connect("one", &"e".repeat(64), "e", &EndpointRequest::default())
        .unwrap();
    let err = networks.attach_container(&"e".repeat(64), pid).unwrap_err();
    assert!(err.to_string().contains("namespace"), "{err}");
    networks.release_container(&"e".repeat(64)).unwrap();
    let links_before = netlink::link_names().unwrap();
    let names: Vec<String> = networks
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["bridge", "host", "none", "one"]);
    assert_eq!(nft::kiln_tables().unwrap().len(), 1);
    assert_eq!(
        links_before
            .iter()
            .filter(|l| l.starts_with("kiln"))
            .count(),
        1
    );
    assert!(
        !links_before
            .iter()
            .any(|l| l.starts_with("veth") || l.starts_with("kt")),
        "{links_before:?}"
    );
}
