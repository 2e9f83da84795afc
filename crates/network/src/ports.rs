//! Published ports: the host side of `-p`. A container's supervisor binds every published
//! port's host socket before the container starts — so a port already in use is an error
//! before anything runs, and the port stays reserved for as long as the container runs — and
//! then serves those sockets with a small proxy of its own threads that passes each
//! connection (or UDP exchange) into the container.
//!
//! That proxy is one half of dockerd's pair. As root on a bridge network, traffic from
//! outside is sent to the container by a DNAT rule ([`crate::nft::publish`]) before it ever
//! reaches the bound socket, and the proxy only sees what the host itself sends (its loopback
//! above all, which DNAT cannot serve without `route_localnet`): dockerd's `docker-proxy`,
//! without the extra process. On the default network (slirp4netns, rootless and root alike)
//! there is no DNAT: the proxy serves every connection and dials the container from a thread
//! that entered the container's network namespace (`setns`, which needs no root over a
//! namespace the caller's user namespace owns) — RootlessKit's `builtin` port driver's design,
//! without a child process. A rootless kiln's container on a user-defined network is dialled
//! the same way, from its address's namespace: a thread enters the per-user network namespace
//! its bridges live in and connects to the container's address there (no DNAT: the host's
//! own namespace has no route to those bridges).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// How long a dial into the container may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP exchange with no reply for this long is forgotten (its socket closed).
const UDP_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// `tcp` or `udp` (Docker also knows `sctp`, which kiln does not publish).
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// One published port as asked for: the container's port, the host address (`None`: every
/// address) and the host ports to try (`0..=0`: one the kernel picks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub container_port: u16,
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port_first: u16,
    pub host_port_last: u16,
}

/// One published port as bound: what inspect and `kiln port` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Published {
    pub protocol: Protocol,
    pub container_port: u16,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A bound host socket, not yet served.
#[derive(Debug)]
pub struct Bound {
    pub published: Published,
    socket: Socket,
}

/// Binds the host side of every spec. The first port that cannot be bound is the error (and
/// the sockets bound so far close with the returned vector's drop: nothing stays reserved).
pub fn bind(specs: &[PortSpec]) -> Result<Vec<Bound>> {
    specs.iter().map(bind_one).collect()
}

fn bind_one(spec: &PortSpec) -> Result<Bound> {
    let ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut last_error = None;
    // A range gives the first free port of it, as dockerd's allocator does.
    for port in spec.host_port_first..=spec.host_port_last.max(spec.host_port_first) {
        let address = SocketAddr::from((ip, port));
        let bound = match spec.protocol {
            Protocol::Tcp => TcpListener::bind(address).map(Socket::Tcp),
            Protocol::Udp => UdpSocket::bind(address).map(Socket::Udp),
        };
        match bound {
            Ok(socket) => {
                let local = match &socket {
                    Socket::Tcp(s) => s.local_addr(),
                    Socket::Udp(s) => s.local_addr(),
                }
                .map_err(NetworkError::io(format!("{address}")))?;
                return Ok(Bound {
                    published: Published {
                        protocol: spec.protocol,
                        container_port: spec.container_port,
                        host_ip: ip,
                        host_port: local.port(),
                    },
                    socket,
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    let ports = if spec.host_port_first == spec.host_port_last {
        spec.host_port_first.to_string()
    } else {
        format!("{}-{}", spec.host_port_first, spec.host_port_last)
    };
    Err(NetworkError::PortInUse {
        address: format!("{ip}:{ports}"),
        protocol: spec.protocol.name(),
        reason: match last_error {
            Some(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                "port is already allocated".into()
            }
            Some(e) => e.to_string(),
            None => "no port in the range".into(),
        },
    })
}

/// Where the proxy sends what it accepts.
#[derive(Debug, Clone)]
pub enum Target {
    /// The container's address on a bridge, reached from the host's namespace.
    Address(Ipv4Addr),
    /// A namespace entered by the dialing thread — the namespace of `/proc/PID/ns/net`, held
    /// open for as long as the proxy serves — and the address dialled there: the container's
    /// own namespace and its loopback, or the per-user network namespace and the container's
    /// address on a bridge there.
    Namespace(Arc<File>, Ipv4Addr),
}

impl Target {
    /// The namespace of process `pid`.
    pub fn namespace_of(pid: u32) -> Result<Target> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let file = File::open(&path).map_err(NetworkError::io(&path))?;
        Ok(Target::Namespace(Arc::new(file), Ipv4Addr::LOCALHOST))
    }

    /// The address `ip` as seen from the namespace of process `pid` (the per-user network
    /// namespace's keeper).
    pub fn address_in(pid: u32, ip: Ipv4Addr) -> Result<Target> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let file = File::open(&path).map_err(NetworkError::io(&path))?;
        Ok(Target::Namespace(Arc::new(file), ip))
    }

    /// Runs `f` where the container's port is reached: in the host's namespace for an
    /// address, else on a thread that entered the container's (a socket stays in the
    /// namespace it was made in, so the thread may end once it has made it).
    fn within<T: Send>(&self, f: impl FnOnce(Ipv4Addr) -> std::io::Result<T> + Send) -> Option<T> {
        match self {
            Target::Address(ip) => f(*ip).ok(),
            Target::Namespace(ns, ip) => std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        rustix::thread::move_into_link_name_space(
                            ns.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )
                        .ok()?;
                        f(*ip).ok()
                    })
                    .join()
                    .ok()
                    .flatten()
            }),
        }
    }
}

/// Serves every bound socket from threads of this process until it exits (the supervisor
/// ends with its container, and the sockets with it).
pub fn serve(bound: Vec<Bound>, target: &Target) -> Result<()> {
    for b in bound {
        let target = target.clone();
        let port = b.published.container_port;
        let name = format!("port {}/{}", port, b.published.protocol.name());
        let spawned = match b.socket {
            Socket::Tcp(listener) => std::thread::Builder::new()
                .name(name)
                .spawn(move || serve_tcp(listener, target, port)),
            Socket::Udp(socket) => std::thread::Builder::new()
                .name(name)
                .spawn(move || serve_udp(socket, target, port)),
        };
        spawned.map_err(NetworkError::io("port proxy thread"))?;
    }
    Ok(())
}

fn serve_tcp(listener: TcpListener, target: Target, port: u16) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let target = target.clone();
        std::thread::spawn(move || {
            let dialed = target.within(|ip| {
                TcpStream::connect_timeout(&SocketAddr::from((ip, port)), DIAL_TIMEOUT)
            });
            // Nothing listens in the container: the client sees its connection closed.
            if let Some(upstream) = dialed {
                splice(client, upstream);
            }
        });
    }
}

/// Copies both ways until both directions ended, passing each end of stream on as a
/// half-close (a client that shuts its sending side still gets the answer).
fn splice(client: TcpStream, upstream: TcpStream) {
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || copy(upstream2, client2));
    copy(client, upstream);
    let _ = back.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// One host socket, one socket into the container per client address; replies go back from
/// the host socket to that client.
fn serve_udp(socket: UdpSocket, target: Target, port: u16) {
    let exchanges: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let existing = exchanges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(upstream) = target.within(|ip| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                    s.connect((ip, port))?;
                    Ok(s)
                }) else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                let Ok(reply) = socket.try_clone() else {
                    continue;
                };
                exchanges
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, upstream.clone());
                let (exchanges, theirs) = (exchanges.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = theirs.set_read_timeout(Some(UDP_IDLE));
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = theirs.recv(&mut buf) {
                        let _ = reply.send_to(&buf[..n], client);
                    }
                    exchanges
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&client);
                });
                upstream
            }
        };
        let _ = upstream.send(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(protocol: Protocol, first: u16, last: u16) -> PortSpec {
        PortSpec {
            protocol,
            container_port: 80,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port_first: first,
            host_port_last: last,
        }
    }

    #[test]
    fn a_taken_port_is_an_error_naming_it_and_a_range_takes_the_next() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind(&[spec(Protocol::Tcp, port, port)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Bind for 127.0.0.1:{port}/tcp failed: port is already allocated")
        );
        assert_eq!(err.kind(), kiln_error::ErrorKind::Conflict);
        // The kernel's pick, then a range whose first port is taken.
        let bound = bind(&[spec(Protocol::Udp, 0, 0)]).unwrap();
        assert_ne!(bound[0].published.host_port, 0);
        if let Some(next) = port.checked_add(1)
            && TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_ok()
        {
            let bound = bind(&[spec(Protocol::Tcp, port, next)]).unwrap();
            assert_eq!(bound[0].published.host_port, next);
        }
    }

    #[test]
    fn the_proxy_passes_tcp_and_udp_to_the_target_address() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        std::thread::spawn(move || {
            for mut conn in server.incoming().flatten() {
                let mut line = String::new();
                let _ = conn.read_to_string(&mut line);
                let _ = conn.write_all(format!("got {line}").as_bytes());
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 100];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let mut specs = vec![spec(Protocol::Tcp, 0, 0), spec(Protocol::Udp, 0, 0)];
        for s in &mut specs {
            s.container_port = port;
        }
        let bound = bind(&specs).unwrap();
        let (tcp, udp) = (bound[0].published.host_port, bound[1].published.host_port);
        serve(bound, &Target::Address(Ipv4Addr::LOCALHOST)).unwrap();

        let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, tcp)).unwrap();
        conn.write_all(b"hello").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "got hello");

        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"ping", (Ipv4Addr::LOCALHOST, udp)).unwrap();
        let mut buf = [0u8; 10];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}
