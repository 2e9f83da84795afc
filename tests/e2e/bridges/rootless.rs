//! Rootless user-defined networks: a non-root kiln's networks live in one per-user network
//! namespace (kept by a keeper process, found again by every later kiln of the store), with
//! the same names and isolation as root's, published ports answering on the loopback of the
//! namespace kiln runs in, and nothing left once the networks are removed.
//!
//! kiln runs as a real unprivileged user inside a network namespace the test makes (with
//! `/dev/net/tun` given in a mount namespace of the command's own, for slirp4netns); the
//! per-user namespace is kiln's own, made as that user.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};

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

/// Whether process `pid` runs (a zombie, waiting for the machine's init to reap it, runs
/// nothing).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|s| !s.starts_with('Z'))
    })
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
    let mut net = TestNet::new(&k);
    net.add_world();
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
    // A daemon started before the per-user namespace existed runs in a user namespace of its
    // own, which has no capability over the namespace: a clear error, nothing made.
    let early = RootlessDaemon::start(&rl);

    rl.ok(&["network", "create", "front"]);
    let refused = early.request("POST", "/v1.41/networks/create", r#"{"Name":"late"}"#);
    assert!(
        refused.contains("belongs to another user namespace than this kiln's"),
        "{refused}"
    );
    drop(early);
    assert!(!rl.ok(&["network", "ls"]).contains("late"));
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
    // A bridge nothing names there (a crash): `kiln check` reports it and, the namespace
    // being this store's alone, `--repair` removes it.
    let stray = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{first}/ns/net"))
        .args(["ip", "link", "add", "kiln-0123456789", "type", "bridge"])
        .output()
        .unwrap();
    assert_success(&stray, &["ip link add in the per-user namespace"]);
    let report = rl.ok(&["check"]);
    assert!(
        report.contains("bridge kiln-0123456789 of the per-user network namespace"),
        "{report}"
    );
    rl.ok(&["check", "--repair"]);
    assert!(!links_of(first).contains(&"kiln-0123456789".to_owned()));
    assert_eq!(keeper(root), Some(first), "repair keeps a namespace in use");
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
    // A running container connected to a second network gets an interface there at once,
    // and loses it again.
    rl.ok(&["network", "connect", "back", "web"]);
    assert!(rl.fetch("back", "web").contains("hello from web"));
    rl.ok(&["network", "disconnect", "back", "web"]);
    assert_eq!(rl.fetch("back", "web"), "");
    // The published port answers on the loopback of the namespace kiln runs in.
    eventually("web answers on 127.0.0.1:8095", || {
        super::super::ports::fetch_in(&net.name, "127.0.0.1", "8095").contains("hello from web")
    });

    // The way out: slirp4netns on the per-user namespace, the bridge masqueraded behind it,
    // to a server outside the test's namespace; an --internal network has none.
    let outside = Listener::start(&format!("{}-w", net.name));
    let reach_out = |network: &str| {
        stdout(&rl.kiln(&[
            "run",
            "--rm",
            "--network",
            network,
            &k.base,
            "nc",
            "-w",
            "3",
            "198.51.100.1",
            "9000",
        ]))
    };
    eventually("front reaches outside", || {
        reach_out("front").contains("hello from outside")
    });
    rl.ok(&["network", "create", "--internal", "sealed"]);
    assert_eq!(
        reach_out("sealed"),
        "",
        "an internal network has no way out"
    );
    rl.ok(&["network", "rm", "sealed"]);
    drop(outside);

    // `kiln serve` of the same user and store runs in the same namespace: a container it
    // starts reaches web by name.
    let daemon = RootlessDaemon::start(&rl);
    let out = rl.user.client(
        &daemon.host,
        &[
            "run",
            "--rm",
            "--network",
            "front",
            &k.base,
            "nc",
            "-w",
            "3",
            "web",
            "80",
        ],
    );
    assert!(
        stdout(&out).contains("hello from web"),
        "{}{}\n{}",
        stdout(&out),
        stderr(&out),
        daemon.log()
    );
    let listed = daemon.get("/v1.41/networks");
    assert!(
        listed.contains("\"front\"") && listed.contains("\"back\""),
        "{listed}"
    );
    drop(daemon);
    assert_eq!(keeper(root), Some(first));

    // A network in use stays; removal of containers and networks leaves nothing.
    let err = stderr(&rl.kiln(&["network", "rm", "front"]));
    assert!(err.contains("active endpoints"), "{err}");
    rl.ok(&["rm", "-f", "web", "other"]);

    // After a reboot (the keeper gone, the records kept) a container's start makes the
    // namespace again, and its network's bridge and rules from the records.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .output()
        .unwrap();
    assert_success(&killed, &["kill the keeper"]);
    eventually("the killed keeper to end", || !alive(first));
    rl.server("again", &["--network", "front"]);
    let second = keeper(root).expect("a new keeper");
    assert_ne!(second, first);
    eventually("again answers by name", || {
        rl.fetch("front", "again").contains("hello from again")
    });
    rl.ok(&["rm", "-f", "again"]);

    rl.ok(&["network", "rm", "front"]);
    assert_eq!(keeper(root), Some(second), "kept while a network is left");
    // `back` was not made again: nothing needed it since.
    let bridges: Vec<String> = links_of(second)
        .into_iter()
        .filter(|l| l.starts_with("kiln-") || l.starts_with("veth"))
        .collect();
    assert_eq!(bridges.len(), 0, "{bridges:?}");
    rl.ok(&["network", "rm", "back"]);
    assert_eq!(
        keeper(root),
        None,
        "the last network took the namespace along"
    );
    // Gone, or a zombie waiting for the machine's init to reap it (it runs nothing).
    eventually("the keeper to end", || !alive(second));
    assert_eq!(
        super::super::ports::fetch_in(&net.name, "127.0.0.1", "8095"),
        ""
    );
    rl.user.assert_no_processes();
}

/// A TCP server answering `hello from outside` on port 9000 in namespace `netns`, in a
/// process group of its own that is ended when dropped.
struct Listener(Child);

impl Listener {
    fn start(netns: &str) -> Listener {
        let script = "while true; do echo hello from outside | busybox nc -l -p 9000; done";
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the outside listener");
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(group) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

/// `kiln serve` as the rootless user, inside the test's namespace; ended (SIGTERM to the
/// daemon itself, the re-executed kiln in its user namespace) when dropped.
struct RootlessDaemon {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
    _devices: tempfile::TempDir,
}

impl RootlessDaemon {
    fn start(rl: &Rootless<'_>) -> RootlessDaemon {
        let dir = rl.user.owned_dir();
        let socket = dir.path().join("kiln.sock");
        let host = format!("unix://{}", socket.display());
        let (mut command, devices) = rl.user.kiln_in_netns_command(
            &rl.net.name,
            rl.store.path(),
            &["serve", "--host", &host],
        );
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rootless kiln serve");
        let daemon = RootlessDaemon {
            child,
            dir,
            host,
            _devices: devices,
        };
        eventually("rootless kiln serve to listen", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// The daemon: the process of the chain (nsenter, unshare, sh, runuser, kiln) whose
    /// command line names the socket and that kiln re-executed in its user namespace.
    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let mut args = cmdline.split(|b| *b == 0);
                let reexecuted = args.next()? == b"/proc/self/exe";
                let names_socket = String::from_utf8_lossy(&cmdline).contains(self.host.as_str());
                (reexecuted && names_socket).then_some(pid)
            })
    }

    /// A GET of the Engine API: the whole response.
    fn get(&self, path: &str) -> String {
        self.request("GET", path, "")
    }

    /// An Engine API request with a JSON body: the whole response (status line first).
    fn request(&self, method: &str, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let socket = self.host.trim_start_matches("unix://");
        let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: kiln\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for RootlessDaemon {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
