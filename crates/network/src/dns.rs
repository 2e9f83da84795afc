//! The embedded DNS server of user-defined networks, in the role of dockerd's 127.0.0.11: a
//! container on a user-defined network resolves the names of the containers it shares a
//! network with — their names, their aliases on that network and their short IDs — and every
//! other name through the host's resolvers.
//!
//! One server per running container, started by its supervisor when the namespace is
//! connected: a UDP socket bound to 127.0.0.11:53 *inside* the container's namespace (made by
//! a thread that entered it; a socket stays in the namespace it was made in), served by a
//! thread in the supervisor, which lives in the host's namespace — so forwarded queries leave
//! from the host and reach its resolvers even when they listen on the host's loopback
//! (systemd-resolved), with no NAT rule. The server reads the network records at each query,
//! so a container connected a moment ago resolves at once, and it stops when the container's
//! init exits (a pidfd in its poll), releasing the namespace.
//!
//! UDP and TCP (RFC 7766: a resolver retries over TCP when a UDP answer is truncated, and
//! some clients ask over TCP only): a TCP listener on the same address, each connection served
//! by a thread of its own. Forwarded queries go to the host's resolvers over UDP and again
//! over TCP when that answer is truncated (`dns/forward.rs`); a UDP client whose answer is more
//! than it takes gets the question back with the TC bit, so it asks again over TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod forward;
pub mod wire;

pub use wire::{Query, answer, parse_query};

use crate::error::{NetworkError, Result};
use crate::state::StateFiles;

/// Where containers find the server, as with dockerd.
pub const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// How long answers of local names may be cached (dockerd's 600 s).
const TTL: u32 = 600;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
const MAX_TCP_CONNECTIONS: usize = 16;
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// The addresses `name` has for `container_id`: on each user-defined network the container is
/// on, the endpoints of running containers (`running` says which) whose container name,
/// alias or short ID it is. `None`: not a local name.
///
/// A stopped container keeps its endpoint and address in kiln's records (until removal), but
/// is no name, as with dockerd, whose endpoints live only while a container runs: compose
/// recreates a service by stopping and renaming the old container, which keeps the service's
/// alias, while the new one starts, and the alias must lead to the new one only.
pub fn lookup(
    files: &StateFiles,
    container_id: &str,
    name: &str,
    running: impl Fn(&str) -> bool,
) -> Result<Option<Vec<Ipv4Addr>>> {
    let lock = files.lock(false)?;
    let state = files.read(&lock)?;
    let mut found = None::<Vec<Ipv4Addr>>;
    for network in state
        .networks
        .iter()
        .filter(|n| !n.predefined && n.endpoints.contains_key(container_id))
    {
        // A link of the asking container's on this network (`target:alias`): the alias is
        // the target's name for it alone.
        let linked = network.endpoints[container_id]
            .links
            .iter()
            .filter_map(|link| link.split_once(':'))
            .find(|(_, alias)| alias.eq_ignore_ascii_case(name))
            .map(|(target, _)| target);
        for (id, endpoint) in &network.endpoints {
            let matches = endpoint.container_name.eq_ignore_ascii_case(name)
                || linked.is_some_and(|t| endpoint.container_name.eq_ignore_ascii_case(t))
                || endpoint
                    .aliases
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name))
                || (name.len() == 12 && id.starts_with(name));
            if matches && running(id) {
                let list = found.get_or_insert_with(Vec::new);
                list.extend(endpoint.ip.filter(|ip| !list.contains(ip)));
            }
        }
    }
    Ok(found)
}

/// The host's nameservers (all of them: the server runs in the host's namespace).
fn upstream_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|server| server.split('%').next()?.parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Where the host's resolver settings are (read at each use: they change, e.g. with DHCP).
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Whether every nameserver of the host's resolv.conf is on the host's loopback (as
/// systemd-resolved's 127.0.0.53), so a container with a network namespace of its own cannot
/// ask any of them directly. dockerd then falls back to systemd-resolved's upstream list or
/// public resolvers; kiln gives default-bridge containers this server as a forwarder instead,
/// which asks the host's own resolvers from the host's namespace (and so keeps the host's
/// split DNS, VPN domains and caching). `false` with no nameserver at all.
pub fn host_resolvers_loopback_only() -> bool {
    loopback_only(&std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default())
}

fn loopback_only(resolv_conf: &str) -> bool {
    let servers = upstream_servers(resolv_conf);
    !servers.is_empty() && servers.iter().all(|s| s.ip().is_loopback())
}

/// Starts the server for `container_id`, whose namespace holds `netns_pid` (the sandbox's
/// init, whose exit stops it). On user-defined networks it answers the names of containers
/// and forwards other names; on the default bridge alone (no DNS by name, as Docker's) it is
/// started only when `forwarder` (the container's resolv.conf names it because the host's
/// resolvers are all on loopback: [`host_resolvers_loopback_only`]), and only forwards:
/// [`lookup`] never answers from the default bridge's endpoints. `upstream`: the container's
/// `--dns` servers, which other names go to instead of the host's resolvers (as dockerd's).
/// Returns whether a server was started.
pub fn start(
    store_root: &Path,
    container_id: &str,
    netns_pid: u32,
    upstream: &[IpAddr],
    forwarder: bool,
) -> Result<bool> {
    let files = StateFiles::new(store_root);
    let (user_defined, way_out) = {
        let lock = files.lock(false)?;
        let state = files.read(&lock)?;
        let mine = || {
            state
                .networks
                .iter()
                .filter(|n| n.endpoints.contains_key(container_id))
        };
        (mine().any(|n| !n.predefined), mine().any(|n| !n.internal))
    };
    if !user_defined && !forwarder {
        return Ok(false);
    }
    let (socket, listener) = bind_inside(netns_pid)?;
    let pid = rustix::process::Pid::from_raw(netns_pid as i32).ok_or_else(|| {
        NetworkError::io(format!("/proc/{netns_pid}"))(std::io::ErrorKind::NotFound.into())
    })?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| NetworkError::io(format!("/proc/{netns_pid}"))(e.into()))?;
    // A container only on `--internal` networks has no way out, for names either (dockerd's
    // resolver does not forward for internal networks either).
    let upstream = if way_out && !upstream.is_empty() {
        upstream.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
    } else if way_out {
        upstream_servers(&std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default())
    } else {
        Vec::new()
    };
    let server = Arc::new(Server {
        files,
        store: kiln_store::Store::open(store_root)?,
        container_id: container_id.to_owned(),
        upstream,
        connections: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || server.serve(socket, listener, pidfd))
        .map_err(NetworkError::io("dns thread"))?;
    Ok(true)
}

/// The server's sockets on 127.0.0.11:53 (UDP and TCP) in the namespace of `netns_pid`.
fn bind_inside(netns_pid: u32) -> Result<(UdpSocket, TcpListener)> {
    let path = PathBuf::from(format!("/proc/{netns_pid}/ns/net"));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(&path).map_err(NetworkError::io(&path))?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| NetworkError::io(&path)(e.into()))?;
                let what = || format!("{DNS_ADDRESS}:53 in the container");
                let udp = UdpSocket::bind((DNS_ADDRESS, 53)).map_err(NetworkError::io(what()))?;
                let tcp = TcpListener::bind((DNS_ADDRESS, 53)).map_err(NetworkError::io(what()))?;
                Ok((udp, tcp))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::io(&path)(std::io::Error::other(
                    "the thread binding the DNS sockets panicked",
                )))
            })
    })
}

struct Server {
    files: StateFiles,
    container_id: String,
    upstream: Vec<SocketAddr>,
    /// Asked which containers run (their running locks).
    store: kiln_store::Store,
    /// TCP connections being served.
    connections: AtomicUsize,
}

/// What the server does with a query.
enum Reply {
    /// Not a query (ignored).
    None,
    /// A local name's answer (or SERVFAIL when the records cannot be read).
    Local(Vec<u8>),
    /// Another name: the host's resolvers answer it.
    Forward(Query),
}

impl Server {
    fn serve(self: Arc<Self>, socket: UdpSocket, listener: TcpListener, pidfd: OwnedFd) {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut buf = [0u8; 1500];
        loop {
            let mut fds = [
                PollFd::new(&socket, PollFlags::IN),
                PollFd::new(&listener, PollFlags::IN),
                PollFd::new(&pidfd, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
            // The container's init is gone: so is its namespace, once these sockets close.
            if !fds[2].revents().is_empty() {
                return;
            }
            if !fds[1].revents().is_empty()
                && let Ok((stream, _)) = listener.accept()
            {
                self.clone().serve_tcp(stream);
            }
            if fds[0].revents().is_empty() {
                continue;
            }
            let Ok((n, client)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let packet = &buf[..n];
            match self.reply(packet) {
                Reply::None => {}
                Reply::Local(answer) => {
                    let _ = socket.send_to(&answer, client);
                }
                Reply::Forward(query) => self.forward_udp(&socket, packet.to_vec(), query, client),
            }
        }
    }

    /// The local answer to `packet`, or that it is forwarded.
    fn reply(&self, packet: &[u8]) -> Reply {
        let Some(query) = parse_query(packet) else {
            return Reply::None;
        };
        // A probe that fails counts as running: a name answered rather than lost.
        let running = |id: &str| self.store.container_is_running(id).unwrap_or(true);
        match lookup(&self.files, &self.container_id, &query.name, running) {
            Ok(Some(addresses)) => {
                let wanted = query.qclass == CLASS_IN && matches!(query.qtype, TYPE_A | TYPE_ANY);
                let addresses = if wanted { addresses } else { Vec::new() };
                Reply::Local(answer(packet, &query, &addresses, 0))
            }
            // Records unreadable: SERVFAIL rather than a wrong "no such name".
            Err(_) => Reply::Local(answer(packet, &query, &[], 2)),
            Ok(None) => Reply::Forward(query),
        }
    }

    /// Passes a UDP query to the host's resolvers on a thread of its own and relays the
    /// first answer — cut to the question with the TC bit when the whole answer (asked again
    /// over TCP) is more than the client takes over UDP, so it asks again over TCP —
    /// SERVFAIL when none answers.
    fn forward_udp(&self, socket: &UdpSocket, packet: Vec<u8>, query: Query, client: SocketAddr) {
        let (Ok(reply_socket), upstream) = (socket.try_clone(), self.upstream.clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let reply = match forward::forward(&packet, &upstream, FORWARD_TIMEOUT) {
                Some(reply) if reply.len() > wire::udp_limit(&packet, &query) => {
                    let mut cut = answer(&packet, &query, &[], reply[3] & 0xf);
                    cut[2] |= 0x02;
                    cut
                }
                Some(reply) => reply,
                None => answer(&packet, &query, &[], 2),
            };
            let _ = reply_socket.send_to(&reply, client);
        });
    }

    /// Serves one TCP connection on a thread of its own: length-prefixed queries, one after
    /// another, until the client closes it or is idle for `TCP_IDLE`. At most
    /// `MAX_TCP_CONNECTIONS` at once (a container cannot make the supervisor spawn threads
    /// without bound); more are closed at once.
    fn serve_tcp(self: Arc<Self>, mut stream: TcpStream) {
        if self.connections.fetch_add(1, Ordering::SeqCst) >= MAX_TCP_CONNECTIONS {
            self.connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let server = self.clone();
        let spawned = std::thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || {
                let _ = stream.set_read_timeout(Some(TCP_IDLE));
                let _ = stream.set_write_timeout(Some(TCP_IDLE));
                while let Ok(Some(packet)) = wire::read_framed(&mut stream) {
                    let reply = match server.reply(&packet) {
                        Reply::None => continue,
                        Reply::Local(answer) => answer,
                        Reply::Forward(query) => {
                            forward::forward(&packet, &server.upstream, FORWARD_TIMEOUT)
                                .unwrap_or_else(|| answer(&packet, &query, &[], 2))
                        }
                    };
                    if wire::write_framed(&mut stream, &reply).is_err() {
                        break;
                    }
                }
                server.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_containers_sharing_a_user_network_resolve() {
        use crate::state::{Driver, EndpointRecord, NetworkRecord, State};
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        let endpoint = |name: &str, ip: [u8; 4], aliases: &[&str]| EndpointRecord {
            endpoint_id: "e".repeat(64),
            container_name: name.into(),
            ip: Some(ip.into()),
            mac: String::new(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            requested_ip: false,
            interface: "eth0".into(),
            requested_mac: false,
            link_local: Vec::new(),
            driver_opts: Default::default(),
            links: Vec::new(),
        };
        let network = |name: &str, predefined: bool, endpoints: Vec<(String, EndpointRecord)>| {
            NetworkRecord {
                id: name.repeat(64)[..64].to_owned(),
                name: name.into(),
                driver: Driver::Bridge,
                created: chrono::Utc::now(),
                addressing: None,
                internal: false,
                labels: Default::default(),
                bridge: String::new(),
                predefined,
                endpoints: endpoints.into_iter().collect(),
                aux_addresses: Default::default(),
            }
        };
        let (a, b, c, d) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        let state = State {
            schema_version: 1,
            networks: vec![
                network(
                    "one",
                    false,
                    vec![
                        (a.clone(), endpoint("web", [10, 0, 0, 2], &[])),
                        (b.clone(), endpoint("db", [10, 0, 0, 3], &["data"])),
                        (d.clone(), endpoint("db_new", [10, 0, 0, 4], &["data"])),
                    ],
                ),
                network(
                    "two",
                    false,
                    vec![(c.clone(), endpoint("other", [10, 1, 0, 2], &[]))],
                ),
                network(
                    "bridge",
                    true,
                    vec![
                        (a.clone(), endpoint("web", [172, 17, 0, 2], &[])),
                        (c.clone(), endpoint("other", [172, 17, 0, 3], &[])),
                    ],
                ),
            ],
        };
        let mut state = state;
        // web links db as `database`: a name for web alone.
        state.networks[0].endpoints.get_mut(&a).unwrap().links = vec!["db:Database".into()];
        let lock = files.lock(true).unwrap();
        files.write(&lock, &state).unwrap();
        drop(lock);
        let ip = |s: [u8; 4]| vec![Ipv4Addr::from(s)];
        // A stopped container (compose's old one, renamed aside while its replacement
        // starts) is no name: its alias leads to the running one only.
        let stopped = |id: &str| id != b;
        assert_eq!(
            lookup(&files, &a, "data", stopped).unwrap(),
            Some(ip([10, 0, 0, 4]))
        );
        assert_eq!(lookup(&files, &a, "db", stopped).unwrap(), None);
        assert_eq!(lookup(&files, &a, "bbbbbbbbbbbb", stopped).unwrap(), None);
        let lookup = |from: &str, name: &str| lookup(&files, from, name, |_| true).unwrap();
        assert_eq!(lookup(&a, "db"), Some(ip([10, 0, 0, 3])));
        assert_eq!(
            lookup(&a, "DATA"),
            Some(vec![[10, 0, 0, 3].into(), [10, 0, 0, 4].into()])
        );
        assert_eq!(lookup(&a, "bbbbbbbbbbbb"), Some(ip([10, 0, 0, 3])));
        // Another network's container, even one shared on the default bridge: not a name.
        assert_eq!(lookup(&a, "other"), None);
        assert_eq!(lookup(&c, "web"), None);
        assert_eq!(lookup(&a, "bbbb"), None);
        assert_eq!(lookup(&a, "DATABASE"), Some(ip([10, 0, 0, 3])));
        assert_eq!(lookup(&d, "database"), None);
    }

    #[test]
    fn only_loopback_resolvers_need_the_forwarder() {
        assert!(loopback_only(
            "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
        ));
        assert!(loopback_only("nameserver 127.0.0.1\nnameserver ::1\n"));
        assert!(!loopback_only(
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\n"
        ));
        assert!(!loopback_only("nameserver 192.0.2.1\n"));
        assert!(!loopback_only("search example.org\n"));
    }

    #[test]
    fn nameservers_of_the_host_all_count() {
        let servers = upstream_servers(
            "nameserver 127.0.0.53\nsearch x\nnameserver fe80::1%eth0\nnameserver bad\n",
        );
        assert_eq!(
            servers,
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
