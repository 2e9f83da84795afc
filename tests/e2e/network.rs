//! The sandbox's networks end to end: RUN's default network (a private namespace with
//! slirp4netns' NAT) reaches the outside but not the host's loopback, `--network host` does,
//! `none` has only `lo`, and `kiln run` defaults to the same bridge-like network.
//!
//! Network use stays on loopback or inside network namespaces the tests create: "the outside"
//! is a namespace joined to kiln's own namespace by a veth pair, serving HTTP with busybox httpd.
//! Probes use `timeout 10 wget`, not `wget -T`: busybox 1.35's static wget crashes (SIGSEGV)
//! when given `-T`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::e2e::harness::{Kiln, assert_success, stderr, stdout};

fn require_slirp4netns() {
    assert!(
        Command::new("slirp4netns")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "slirp4netns is missing: run scripts/setup.sh"
    );
}

/// A loopback HTTP server answering every request with `body`; counts the connections.
struct LoopbackServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl LoopbackServer {
    fn start(body: &'static str) -> LoopbackServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        // Runs until the test process ends; the listener is never reused.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        LoopbackServer { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Builds `dockerfile` and exports the final filesystem into `out` (`-o type=local`).
fn build_to(k: &Kiln, dockerfile: &str, out: &Path, extra: &[&str]) -> Output {
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec!["-o", dest.as_str()];
    args.extend_from_slice(extra);
    k.build_dockerfile("net:test", dockerfile, &args)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn default_run_cannot_reach_host_loopback_but_network_host_can() {
    require_slirp4netns();
    let k = Kiln::new();
    let server = LoopbackServer::start("hello-from-host-loopback");
    let port = server.port;
    let out = tempfile::tempdir().unwrap();
    // Every probe writes what happened, so an unexpected success shows in the file.
    let dockerfile = format!(
        "ARG BASE\nFROM ${{BASE}}\n\
         RUN (timeout 10 wget -q -O - http://127.0.0.1:{port}/ || echo loopback-unreachable) > /default.txt; \
             (timeout 10 wget -q -O - http://10.0.2.2:{port}/ || echo gateway-unreachable) >> /default.txt; \
             ip -o -4 addr show eth0 >> /default.txt\n\
         RUN --network=host timeout 10 wget -q -O - http://127.0.0.1:{port}/ > /host.txt\n"
    );
    let built = build_to(&k, &dockerfile, out.path(), &["--allow", "network.host"]);
    assert_success(&built, &["build", "loopback probes"]);
    let default = read(&out.path().join("default.txt"));
    assert!(default.contains("loopback-unreachable"), "{default}");
    assert!(default.contains("gateway-unreachable"), "{default}");
    assert!(!default.contains("hello-from-host-loopback"), "{default}");
    // The probes failed on a network that is up, not for want of one.
    assert!(default.contains("inet 10.0.2.100/24"), "{default}");
    assert_eq!(
        read(&out.path().join("host.txt")),
        "hello-from-host-loopback"
    );
    assert_eq!(
        server.connections(),
        1,
        "only the host-network RUN connected"
    );

    // `kiln run` defaults to the same network (Docker's bridge); `--network host` opts out.
    let probe = format!("timeout 10 wget -q -O - http://127.0.0.1:{port}/ || echo unreachable");
    let run = k.ok(&["run", "--rm", &k.base, "sh", "-c", &probe]);
    assert_eq!(run.trim(), "unreachable");
    let run = k.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        &k.base,
        "sh",
        "-c",
        &probe,
    ]);
    assert_eq!(run.trim(), "hello-from-host-loopback");
    assert_eq!(server.connections(), 2);
}

#[test]
fn none_has_only_loopback_and_is_keyed_apart_from_default() {
    require_slirp4netns();
    let k = Kiln::new();
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN ls /sys/class/net > /ifaces; cat /etc/resolv.conf > /resolv\n\
                      RUN --network=none ls /sys/class/net > /ifaces-none\n";
    let out = tempfile::tempdir().unwrap();
    assert_success(
        &build_to(&k, dockerfile, out.path(), &["--network", "none"]),
        &["build", "--network none"],
    );
    let words = |file: &str| -> Vec<String> {
        read(&out.path().join(file))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(words("ifaces"), ["lo"]);
    assert_eq!(words("ifaces-none"), ["lo"]);
    assert!(!read(&out.path().join("resolv")).contains("nameserver"));

    // The same Dockerfile on the default network must run again, not reuse the `none` result.
    let out = tempfile::tempdir().unwrap();
    assert_success(
        &build_to(&k, dockerfile, out.path(), &[]),
        &["build", "default network"],
    );
    assert_eq!(words_in(&out.path().join("ifaces")), ["eth0", "lo"]);
    assert_eq!(words_in(&out.path().join("ifaces-none")), ["lo"]);
    assert!(read(&out.path().join("resolv")).contains("nameserver"));

    let ifaces = k.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &k.base,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(ifaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // `--network bridge` as root is the real default bridge network, which would be made in
    // this (the machine's) namespace: tests/e2e/bridges.rs runs it in a namespace of its own.
    let ifaces = k.ok(&[
        "run",
        "--rm",
        "--network",
        "default",
        &k.base,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(
        ifaces.split_whitespace().collect::<Vec<_>>(),
        ["eth0", "lo"]
    );
    let hosts = k.ok(&[
        "run",
        "--rm",
        "--hostname",
        "web",
        &k.base,
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.contains("10.0.2.100\tweb\n"), "{hosts}");
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");

    let bad = k.build_dockerfile("net:bad", dockerfile, &["--network", "bridge"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("expected default, none, host"),
        "{}",
        stderr(&bad)
    );
    let bad = k.build_dockerfile(
        "net:bad",
        "ARG BASE\nFROM ${BASE}\nRUN --network=slirp true\n",
        &[],
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("Dockerfile:3"), "{}", stderr(&bad));
}

fn words_in(path: &Path) -> Vec<String> {
    read(path).split_whitespace().map(String::from).collect()
}

#[test]
fn without_slirp4netns_the_implicit_default_falls_back_and_an_explicit_one_fails() {
    let k = Kiln::new();
    // A PATH where slirp4netns cannot be found (kiln needs nothing else from PATH to build).
    let empty = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nRUN ls /sys/class/net\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "--no-cache",
            "--progress=plain",
            "--build-arg",
            &base,
        ];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        crate::e2e::harness::kiln_command()
            .env("KILN_ROOT", k.root.path())
            .env("PATH", empty.path())
            .args(&args)
            .output()
            .unwrap()
    };
    let implicit = build(&[]);
    assert_success(&implicit, &["build", "without slirp4netns"]);
    let log = stderr(&implicit);
    assert!(
        log.contains("WARNING: the default network needs slirp4netns, which is not installed"),
        "{log}"
    );
    assert!(log.contains("apt-get install slirp4netns"), "{log}");
    assert!(log.contains("using --network none instead"), "{log}");
    assert!(!log.contains("eth0"), "fell back to none: {log}");

    let explicit = build(&["--network", "default"]);
    assert!(!explicit.status.success());
    let err = stderr(&explicit);
    assert!(err.contains("apt-get install slirp4netns"), "{err}");
    assert!(err.contains("or use --network none"), "{err}");
}

/// Network namespaces made with `ip netns`, processes and threads serving in them, and their
/// `/etc/netns/<name>` files (which `ip netns exec` mounts over /etc); all removed on drop.
struct Namespaces {
    names: Vec<String>,
    children: Vec<Child>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    etc_dirs: Vec<PathBuf>,
}

impl Namespaces {
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn add(&mut self, name: &str) {
        self.ip(&["netns", "add", name]);
        self.names.push(name.to_owned());
        self.ip(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Makes `ip netns exec NAME` show `contents` as /etc/resolv.conf.
    fn resolv_conf(&mut self, name: &str, contents: &str) {
        let parent = Path::new("/etc/netns");
        if !parent.exists() {
            // Removed last (and only if empty), after the namespace's own directory.
            self.etc_dirs.push(parent.to_path_buf());
        }
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.etc_dirs.push(dir.clone());
        std::fs::write(dir.join("resolv.conf"), contents).unwrap();
    }

    /// A DNS server on `listen`:53 inside `netns`, answering every A query with `answer` and
    /// other queries with no records. Its thread enters the namespace itself (setns is per
    /// thread), so the test process stays where it is.
    fn dns_in(&mut self, netns: &str, listen: Ipv4Addr, answer: Ipv4Addr) {
        let ns = std::fs::File::open(Path::new("/run/netns").join(netns)).unwrap();
        let stop = self.stop.clone();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        self.threads.push(std::thread::spawn(move || {
            use std::os::fd::AsFd;
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the outside namespace");
            let socket = UdpSocket::bind((listen, 53)).expect("bind the test DNS server");
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            bound_tx.send(()).unwrap();
            let mut query = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let Ok((len, peer)) = socket.recv_from(&mut query) else {
                    continue;
                };
                if let Some(response) = dns_answer(&query[..len], answer) {
                    let _ = socket.send_to(&response, peer);
                }
            }
        }));
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the test DNS server started");
    }

    fn spawn_in(&mut self, netns: &str, program: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .args(program)
            .stdin(Stdio::null())
            .spawn()
            .expect("start a process in a test namespace");
        self.children.push(child);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for dir in self.etc_dirs.iter().rev() {
            if dir.ends_with("netns") {
                let _ = std::fs::remove_dir(dir);
            } else {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The response to a one-question DNS query (RFC 1035 §4.1): the question echoed, and for an
/// A query one answer with `address`. `None` for anything that is not a query.
fn dns_answer(query: &[u8], address: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root label, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
    let mut response = vec![
        query[0],
        query[1],
        0x81,
        0x80,
        0,
        1,
        0,
        u8::from(is_a),
        0,
        0,
        0,
        0,
    ];
    response.extend_from_slice(question);
    if is_a {
        // Name: a pointer to the question's (offset 12); type A, class IN, TTL 60, 4 bytes.
        response.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        response.extend_from_slice(&address.octets());
    }
    Some(response)
}

/// The inode of a network namespace, to recognise processes inside it.
fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Processes named `comm` whose network namespace is the one with inode `netns`.
fn processes_in(netns: u64, comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == comm)
                && netns_inode(&dir.join("ns/net")) == Some(netns)
        })
        .collect()
}

#[test]
fn default_network_reaches_the_outside_through_nat_but_not_kilns_loopback() {
    require_slirp4netns();
    let k = Kiln::new();
    // The base comes from the registry on the host's loopback, out of reach from the
    // namespaces: pull it first so the build finds it in the store.
    k.ok(&["pull", &k.base]);

    let id = std::process::id();
    let (outside, inner) = (format!("kiln-out-{id}"), format!("kiln-in-{id}"));
    let (veth_out, veth_in) = (format!("kvo{id}"), format!("kvi{id}"));
    let mut ns = Namespaces {
        names: Vec::new(),
        children: Vec::new(),
        threads: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        etc_dirs: Vec::new(),
    };
    ns.add(&outside);
    ns.add(&inner);
    ns.ip(&[
        "link", "add", &veth_out, "type", "veth", "peer", "name", &veth_in,
    ]);
    ns.ip(&["link", "set", &veth_out, "netns", &outside]);
    ns.ip(&["link", "set", &veth_in, "netns", &inner]);
    ns.ip(&[
        "-n",
        &outside,
        "addr",
        "add",
        "10.203.0.1/24",
        "dev",
        &veth_out,
    ]);
    ns.ip(&[
        "-n",
        &inner,
        "addr",
        "add",
        "10.203.0.2/24",
        "dev",
        &veth_in,
    ]);
    ns.ip(&["-n", &outside, "link", "set", &veth_out, "up"]);
    ns.ip(&["-n", &inner, "link", "set", &veth_in, "up"]);
    ns.ip(&["-n", &inner, "route", "add", "default", "via", "10.203.0.1"]);

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello-from-outside\n").unwrap();
    std::fs::write(www.path().join("secret.html"), "kilns-own-loopback\n").unwrap();
    let docroot = www.path().to_str().unwrap();
    ns.spawn_in(
        &outside,
        &[
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "10.203.0.1:8080",
            "-h",
            docroot,
        ],
    );
    // A service on the loopback of kiln's own namespace: what the sandbox must not reach.
    ns.spawn_in(
        &inner,
        &[
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "127.0.0.1:8081",
            "-h",
            docroot,
        ],
    );
    // kiln's namespace resolves through the outside's DNS server, as a host would through
    // its network's: the sandbox gets that nameserver (not on loopback) and reaches it by NAT.
    ns.resolv_conf(&inner, "nameserver 10.203.0.1\n");
    ns.dns_in(
        &outside,
        Ipv4Addr::new(10, 203, 0, 1),
        Ipv4Addr::new(10, 203, 0, 77),
    );
    std::thread::sleep(Duration::from_millis(300));

    let out = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\n\
         RUN timeout 20 wget -q -O /outside.txt http://10.203.0.1:8080/index.html && \
             (timeout 10 wget -q -O - http://127.0.0.1:8081/secret.html || echo loopback-unreachable; \
              timeout 10 wget -q -O - http://10.0.2.2:8081/secret.html || echo gateway-unreachable) > /loopback.txt\n\
         RUN cat /etc/resolv.conf > /resolv.txt; timeout 20 nslookup outside.kiln.test > /dns.txt\n",
    )
    .unwrap();
    let base = format!("BASE={}", k.base);
    let dest = format!("type=local,dest={}", out.path().display());
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let built = Command::new("ip")
        .args([
            "netns",
            "exec",
            &inner,
            kiln,
            "build",
            "--build-arg",
            &base,
            "-o",
            &dest,
        ])
        .arg(ctx.path())
        .env("KILN_ROOT", k.root.path())
        .output()
        .unwrap();
    assert_success(&built, &["build", "in a namespace with an outside"]);
    assert_eq!(
        read(&out.path().join("outside.txt")),
        "hello-from-outside\n"
    );
    let loopback = read(&out.path().join("loopback.txt"));
    assert_eq!(
        loopback,
        "loopback-unreachable\ngateway-unreachable\n",
        "{}",
        stdout(&built)
    );

    let resolv = read(&out.path().join("resolv.txt"));
    assert!(resolv.contains("nameserver 10.203.0.1\n"), "{resolv}");
    let dns = read(&out.path().join("dns.txt"));
    assert!(dns.contains("10.203.0.77"), "{dns}");

    let inode = netns_inode(&Path::new("/run/netns").join(&inner)).expect("inner netns");
    assert_eq!(
        processes_in(inode, "slirp4netns"),
        Vec::<u32>::new(),
        "slirp4netns outlived the build"
    );
}
