//! Rootless user-defined networks: a non-root kiln's networks live in one per-user network
//! namespace (kept by a keeper process, found again by every later kiln of the store), with
//! the same names and isolation as root's, published ports answering on the loopback of the
//! namespace kiln runs in, and nothing left once the networks are removed.
//!
//! kiln runs as a real unprivileged user inside a network namespace the test makes (with
//! `/dev/net/tun` given in a mount namespace of the command's own, for slirp4netns); the
//! per-user namespace is kiln's own, made as that user.

use std::process::Output;

use super::super::containers::eventually;
use super::super::harness::{assert_success, stderr, stdout};
use super::super::rootless::{RANGED_USER, RootlessUser, user};
use super::{Kiln, TestNet};

/// The keeper's pid recorded in the store, if any.
fn keeper(store: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(store.join("networks/user-netns.json")).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    record["pid"].as_u64().map(|p| p as u32)
}

/// Link names in the network namespace of process `pid`.
fn links_of(pid: u32) -> Vec<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-o", "link", "show"])
        .output()
        .expect("nsenter ip link");
    assert_success(&out, &["ip link in the per-user namespace"]);
    stdout(&out)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

struct Rootless<'a> {
    user: RootlessUser,
    store: tempfile::TempDir,
    net: &'a TestNet<'a>,
}

impl Rootless<'_> {
    fn kiln(&self, args: &[&str]) -> Output {
        self.user
            .kiln_in_netns(&self.net.name, self.store.path(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert_success(&out, args);
        stdout(&out)
    }

    /// What a client container on `network` reads from `address`:80.
    fn fetch(&self, network: &str, address: &str) -> String {
        stdout(&self.kiln(&[
            "run",
            "--rm",
            "--network",
            network,
            &self.net.k.base,
            "nc",
            "-w",
            "3",
            address,
            "80",
        ]))
    }

    fn server(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        let script = format!("while true; do echo hello from {name} | nc -l -p 80; done");
        args.extend_from_slice(&[&self.net.k.base, "sh", "-c", &script]);
        self.ok(&args);
    }
}

#[test]
fn rootless_user_networks_live_in_one_per_user_namespace() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let user = user(RANGED_USER, true);
    let store = user.owned_dir();
    user.ok(store.path(), &["pull", &k.base]);
    let rl = Rootless {
        user,
        store,
        net: &net,
    };
    let root = rl.store.path();
    assert_eq!(keeper(root), None, "no per-user namespace before a network");

    rl.ok(&["network", "create", "front"]);
    let first = keeper(root).expect("a keeper once a network exists");
    // A second kiln finds the same namespace and puts its bridge there.
    rl.ok(&["network", "create", "--subnet", "10.89.0.0/24", "back"]);
    assert_eq!(keeper(root), Some(first));
    let bridges: Vec<String> = links_of(first)
        .into_iter()
        .filter(|l| l.starts_with("kiln-"))
        .collect();
    assert_eq!(bridges.len(), 2, "{bridges:?}");
    assert!(
        links_of(first).iter().any(|l| l == "tap0"),
        "slirp4netns' way out: {:?}",
        links_of(first)
    );
    // Nothing of it in the namespace kiln runs in.
    assert!(
        !net.links().iter().any(|l| l.starts_with("kiln")),
        "{:?}",
        net.links()
    );

    rl.server(
        "web",
        &[
            "--network",
            "front",
            "--network-alias",
            "www",
            "-p",
            "8095:80",
        ],
    );
    rl.server("other", &["--network", "back"]);
    // By name and by alias on the same network.
    eventually("web answers by name", || {
        rl.fetch("front", "web").contains("hello from web")
    });
    assert!(rl.fetch("front", "www").contains("hello from web"));
    // Not across networks: neither the name nor the address.
    let inspect: serde_json::Value = serde_json::from_str(&rl.ok(&["inspect", "other"])).unwrap();
    let inspect = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    let other_ip = inspect["NetworkSettings"]["Networks"]["back"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(other_ip.starts_with("10.89.0."), "{other_ip}");
    assert!(rl.fetch("back", &other_ip).contains("hello from other"));
    assert_eq!(
        rl.fetch("front", &other_ip),
        "",
        "isolation between networks"
    );
    assert_eq!(rl.fetch("front", "other"), "", "no name across networks");
    // The published port answers on the loopback of the namespace kiln runs in.
    eventually("web answers on 127.0.0.1:8095", || {
        super::super::ports::fetch_in(&net.name, "127.0.0.1", "8095").contains("hello from web")
    });

    // A network in use stays; removal of containers and networks leaves nothing.
    let err = stderr(&rl.kiln(&["network", "rm", "front"]));
    assert!(err.contains("active endpoints"), "{err}");
    rl.ok(&["rm", "-f", "web", "other"]);
    rl.ok(&["network", "rm", "front"]);
    assert_eq!(keeper(root), Some(first), "kept while a network is left");
    let bridges: Vec<String> = links_of(first)
        .into_iter()
        .filter(|l| l.starts_with("kiln-") || l.starts_with("veth"))
        .collect();
    assert_eq!(bridges.len(), 1, "{bridges:?}");
    rl.ok(&["network", "rm", "back"]);
    assert_eq!(
        keeper(root),
        None,
        "the last network took the namespace along"
    );
    // Gone, or a zombie waiting for the machine's init to reap it (it runs nothing).
    eventually("the keeper to end", || {
        std::fs::read_to_string(format!("/proc/{first}/stat")).map_or(true, |stat| {
            stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
        })
    });
    assert_eq!(
        super::super::ports::fetch_in(&net.name, "127.0.0.1", "8095"),
        ""
    );
    rl.user.assert_no_processes();
}
