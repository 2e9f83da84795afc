//! The default bridge as the default network of a root kiln: a container started without
//! `--network` is on `bridge` (172.17.0.0/16 on `kiln0`), reaches a linked container by its
//! link name, and gets the resolvers it can use — the host's non-loopback nameservers, or,
//! when the host's are all on its loopback (systemd-resolved's 127.0.0.53), the embedded
//! server at 127.0.0.11 as a forwarder only (no container names, as Docker's default bridge).
//!
//! The host's resolv.conf is the test's: kiln runs in a mount namespace of its own where a
//! file of the test's is bound over /etc/resolv.conf, inside the test's network namespace,
//! where a small UDP resolver on that namespace's loopback plays the host's.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use super::super::containers::eventually;
use super::super::harness::{Kiln, assert_success, stdout};
use super::{TestNet, ip_of, server};

#[test]
fn a_container_without_a_network_is_on_the_default_bridge() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    server(&net, "one", &[]);
    let address = ip_of(&net, "one", "bridge");
    assert!(address.starts_with("172.17."), "{address:?}");
    assert!(
        net.links().iter().any(|l| l == "kiln0"),
        "{:?}",
        net.links()
    );
    // `kiln create` and `start` too; a link on the default bridge names its target in
    // /etc/hosts (no DNS there), and the two talk over the bridge.
    net.ok(&[
        "create",
        "--name",
        "client",
        "--link",
        "one:peer",
        &k.base,
        "sh",
        "-c",
        "grep -w peer /etc/hosts; nc -w 3 peer 80",
    ]);
    eventually("one to answer its link", || {
        let _ = net.kiln(&["start", "-a", "client"]);
        net.ok(&["logs", "client"]).contains("hello from one")
    });
    let logs = net.ok(&["logs", "client"]);
    assert!(logs.contains(&format!("{address}\t")), "{logs}");
}

/// A UDP resolver on `127.0.0.53:53` in the test's namespace answering `outside.example` with
/// 10.1.2.3 (and NXDOMAIN for any other name); killed on drop.
struct Resolver(Child);

const RESOLVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += q[i] + 1
    qtype = int.from_bytes(q[i + 1:i + 3], "big")
    known = ".".join(labels) == "outside.example"
    hit = known and qtype == 1
    r = q[:2] + (b"\x81\x80" if known else b"\x81\x83") + b"\x00\x01"
    r += (b"\x00\x01" if hit else b"\x00\x00") + b"\x00\x00\x00\x00" + q[12:i + 5]
    if hit:
        r += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 1, 2, 3])
    s.sendto(r, peer)
"#;

impl Resolver {
    fn start(net: &TestNet<'_>) -> Resolver {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", net.name))
            .args(["/usr/bin/python3", "-c", RESOLVER])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test's resolver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Resolver(child)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// kiln in the test's namespace with `resolv_conf` as the host's /etc/resolv.conf.
fn kiln_with_resolv(net: &TestNet<'_>, resolv_conf: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.name))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(resolv_conf)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_ROOT", net.k.root.path())
        .output()
        .expect("run kiln with the test's resolv.conf")
}

#[test]
fn the_default_bridge_forwards_names_when_the_hosts_resolvers_are_on_loopback() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let _resolver = Resolver::start(&net);
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    server(&net, "lone", &[]);

    // Only loopback resolvers: the embedded server, forwarding to them from the host's side.
    std::fs::write(
        &resolv_conf,
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n",
    )
    .unwrap();
    let script = "cat /etc/resolv.conf; echo ---; nslookup outside.example; echo ---; \
                  nslookup lone; true";
    let args = ["run", "--rm", &k.base, "sh", "-c", script];
    let out = kiln_with_resolv(&net, &resolv_conf, &args);
    assert_success(&out, &args);
    let out = stdout(&out);
    let mut parts = out.split("---\n");
    let (conf, outside, lone) = (
        parts.next().unwrap(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert_eq!(
        conf, "nameserver 127.0.0.11\nsearch corp.example\noptions ndots:0\n",
        "{out}"
    );
    assert!(outside.contains("Address: 10.1.2.3"), "{out}");
    // Forwarding only: the default bridge's containers are no names.
    assert!(!lone.contains("172.17."), "{out}");

    // A resolver off loopback: written as it is, no embedded server.
    std::fs::write(&resolv_conf, "nameserver 192.0.2.53\nsearch corp.example\n").unwrap();
    let args = ["run", "--rm", &k.base, "cat", "/etc/resolv.conf"];
    let out = kiln_with_resolv(&net, &resolv_conf, &args);
    assert_success(&out, &args);
    let conf = stdout(&out);
    assert!(conf.contains("nameserver 192.0.2.53\n"), "{conf}");
    assert!(!conf.contains("127.0.0.11"), "{conf}");
}
