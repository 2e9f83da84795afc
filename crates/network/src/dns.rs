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
//! init exits (a pidfd in its poll), releasing the namespace. Only UDP; a truncated forwarded
//! answer is relayed as it is (the client may retry over TCP, which is not served yet).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{NetworkError, Result};
use crate::state::StateFiles;

/// Where containers find the server, as with dockerd.
pub const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// How long answers of local names may be cached (dockerd's 600 s).
const TTL: u32 = 600;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// A parsed query: the ID, flags, the (lower-cased, dot-less) name and type of its one
/// question, and where the question ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    question_end: usize,
}

/// Parses a query with exactly one question; `None` for anything else (ignored).
pub fn parse_query(packet: &[u8]) -> Option<Query> {
    if packet.len() < 12 {
        return None;
    }
    let word = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let flags = word(2);
    // A response, or not a standard query: not ours to answer.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || word(4) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers have no place in a question.
        if len > 63 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    let qclass = u16::from_be_bytes([*packet.get(at + 2)?, *packet.get(at + 3)?]);
    Some(Query {
        id: word(0),
        flags,
        name: labels.join("."),
        qtype,
        qclass,
        question_end: at + 4,
    })
}

/// The answer to `query` (as it came in `packet`) with `addresses` as A records (none: an
/// empty NOERROR answer, as for a local name asked for another type) or `rcode`.
pub fn answer(packet: &[u8], query: &Query, addresses: &[Ipv4Addr], rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(query.question_end + 16 * addresses.len());
    out.extend_from_slice(&query.id.to_be_bytes());
    // QR, the opcode and RD as asked, AA, RA, the rcode.
    let flags = 0x8000 | (query.flags & 0x7900) | 0x0400 | 0x0080 | u16::from(rcode & 0xf);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&packet[12..query.question_end]);
    for ip in addresses {
        // The name: a pointer to the question's, at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

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

/// Starts the server for `container_id`, whose namespace holds `netns_pid` (the sandbox's
/// init, whose exit stops it). Does nothing for a container on no user-defined network (the
/// default bridge has no DNS, as Docker's). Returns whether a server was started.
pub fn start(store_root: &Path, container_id: &str, netns_pid: u32) -> Result<bool> {
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
    if !user_defined {
        return Ok(false);
    }
    let socket = bind_inside(netns_pid)?;
    let pid = rustix::process::Pid::from_raw(netns_pid as i32).ok_or_else(|| {
        NetworkError::io(format!("/proc/{netns_pid}"))(std::io::ErrorKind::NotFound.into())
    })?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| NetworkError::io(format!("/proc/{netns_pid}"))(e.into()))?;
    // A container only on `--internal` networks has no way out, for names either (dockerd's
    // resolver does not forward for internal networks either).
    let upstream = if way_out {
        upstream_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        Vec::new()
    };
    let server = Server {
        files,
        store: kiln_store::Store::open(store_root)?,
        container_id: container_id.to_owned(),
        upstream,
    };
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || server.serve(socket, pidfd))
        .map_err(NetworkError::io("dns thread"))?;
    Ok(true)
}

/// A UDP socket on 127.0.0.11:53 in the namespace of `netns_pid`.
fn bind_inside(netns_pid: u32) -> Result<UdpSocket> {
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
                UdpSocket::bind((DNS_ADDRESS, 53)).map_err(NetworkError::io(format!(
                    "{DNS_ADDRESS}:53 in the container"
                )))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::io(&path)(std::io::Error::other(
                    "the thread binding the DNS socket panicked",
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
}

impl Server {
    fn serve(self, socket: UdpSocket, pidfd: OwnedFd) {
        use rustix::event::{PollFd, PollFlags, poll};
        let mut buf = [0u8; 1500];
        loop {
            let mut fds = [
                PollFd::new(&socket, PollFlags::IN),
                PollFd::new(&pidfd, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
            // The container's init is gone: so is its namespace, once this socket closes.
            if !fds[1].revents().is_empty() {
                return;
            }
            if fds[0].revents().is_empty() {
                continue;
            }
            let Ok((n, client)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let packet = &buf[..n];
            let Some(query) = parse_query(packet) else {
                continue;
            };
            // A probe that fails counts as running: a name answered rather than lost.
            let running = |id: &str| self.store.container_is_running(id).unwrap_or(true);
            match lookup(&self.files, &self.container_id, &query.name, running) {
                Ok(Some(addresses)) => {
                    let wanted =
                        query.qclass == CLASS_IN && matches!(query.qtype, TYPE_A | TYPE_ANY);
                    let addresses = if wanted { addresses } else { Vec::new() };
                    let _ = socket.send_to(&answer(packet, &query, &addresses, 0), client);
                }
                // Records unreadable: SERVFAIL rather than a wrong "no such name".
                Err(_) => {
                    let _ = socket.send_to(&answer(packet, &query, &[], 2), client);
                }
                Ok(None) => self.forward(&socket, packet.to_vec(), query, client),
            }
        }
    }

    /// Passes a query to the host's resolvers on a thread of its own and relays the first
    /// answer; SERVFAIL when none answers.
    fn forward(&self, socket: &UdpSocket, packet: Vec<u8>, query: Query, client: SocketAddr) {
        let (Ok(reply_socket), upstream) = (socket.try_clone(), self.upstream.clone()) else {
            return;
        };
        std::thread::spawn(move || {
            for server in upstream {
                let bind: SocketAddr = if server.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let Ok(out) = UdpSocket::bind(bind) else {
                    continue;
                };
                let _ = out.set_read_timeout(Some(FORWARD_TIMEOUT));
                if out.send_to(&packet, server).is_err() {
                    continue;
                }
                let mut buf = [0u8; 4096];
                while let Ok((n, from)) = out.recv_from(&mut buf) {
                    if from == server && n >= 2 && buf[..2] == packet[..2] {
                        let _ = reply_socket.send_to(&buf[..n], client);
                        return;
                    }
                }
            }
            let _ = reply_socket.send_to(&answer(&packet, &query, &[], 2), client);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of `qtype`, ID 0x1234, recursion desired.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        p
    }

    #[test]
    fn parses_one_question_and_ignores_the_rest() {
        let q = parse_query(&query("Web.Example", TYPE_A)).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "web.example", TYPE_A)
        );
        let mut response = query("web", TYPE_A);
        response[2] |= 0x80;
        assert!(parse_query(&response).is_none());
        assert!(parse_query(&query("web", TYPE_A)[..14]).is_none());
        assert!(parse_query(&[0; 5]).is_none());
        let mut pointer = query("web", TYPE_A);
        pointer[12] = 0xc0;
        assert!(parse_query(&pointer).is_none());
    }

    #[test]
    fn answers_carry_the_question_and_a_records() {
        let packet = query("db", TYPE_A);
        let q = parse_query(&packet).unwrap();
        let ips = [Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 2, 0, 7)];
        let a = answer(&packet, &q, &ips, 0);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        // QR, RD kept, AA, RA, NOERROR.
        assert_eq!(u16::from_be_bytes([a[2], a[3]]), 0x8580);
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 2);
        assert_eq!(&a[12..packet.len()], &packet[12..]);
        assert_eq!(&a[a.len() - 4..], &[10, 2, 0, 7]);
        let fail = answer(&packet, &q, &[], 2);
        assert_eq!(fail[3] & 0xf, 2);
        assert_eq!(fail.len(), packet.len());
    }

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
