//! Passing a query to the host's resolvers: over UDP, and again over TCP to the same server
//! when its UDP answer comes back truncated (RFC 7766: a truncated answer means "ask over
//! TCP"), so a client of the embedded server gets the whole answer when it asked over TCP,
//! and when it fits its UDP limit.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::wire::{read_framed, truncated, write_framed};

/// The first answer of `upstream`, in order: a server that does not answer within `timeout`
/// is skipped. `None`: none answered.
pub fn forward(packet: &[u8], upstream: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    upstream.iter().find_map(|server| {
        let reply = over_udp(packet, *server, timeout)?;
        if truncated(&reply) {
            // The truncated answer is still an answer if TCP fails.
            return Some(over_tcp(packet, *server, timeout).unwrap_or(reply));
        }
        Some(reply)
    })
}

fn over_udp(packet: &[u8], server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.send_to(packet, server).ok()?;
    let mut buf = vec![0u8; 65535];
    // Only the server's answer to this ID counts (anything else on the port is noise).
    while let Ok((n, from)) = socket.recv_from(&mut buf) {
        if from == server && n >= 2 && buf[..2] == packet[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

fn over_tcp(packet: &[u8], server: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write_framed(&mut stream, packet).ok()?;
    let reply = read_framed(&mut stream).ok()??;
    (reply.len() >= 2 && reply[..2] == packet[..2]).then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{answer, parse_query, tests::query};
    use std::net::TcpListener;

    /// A resolver on loopback whose UDP answers are truncated and whose TCP answers are
    /// whole (an A record), as a server answers a name with too many records.
    #[test]
    fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, client) = udp.recv_from(&mut buf).unwrap();
            let q = parse_query(&buf[..n]).unwrap();
            let mut cut = answer(&buf[..n], &q, &[], 0);
            cut[2] |= 0x02;
            udp.send_to(&cut, client).unwrap();
            let (mut stream, _) = tcp.accept().unwrap();
            let packet = read_framed(&mut stream).unwrap().unwrap();
            let q = parse_query(&packet).unwrap();
            write_framed(
                &mut stream,
                &answer(&packet, &q, &[[10, 9, 8, 7].into()], 0),
            )
            .unwrap();
        });
        // A silent server first: skipped after the timeout.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let packet = query("many.example", 1);
        let reply = forward(
            &packet,
            &[silent.local_addr().unwrap(), ([127, 0, 0, 1], port).into()],
            Duration::from_millis(500),
        )
        .unwrap();
        server.join().unwrap();
        assert!(!truncated(&reply));
        assert_eq!(&reply[reply.len() - 4..], &[10, 9, 8, 7]);
        assert!(
            forward(
                &packet,
                &[silent.local_addr().unwrap()],
                Duration::from_millis(100)
            )
            .is_none()
        );
    }
}
