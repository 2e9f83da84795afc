//! Loopback port picking and the minimal HTTP probe used to see whether a server is up.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// Ports this process has already handed out. The kernel may give the same ephemeral port to
/// two quick `bind(0)` calls once the first listener is closed; remembering them keeps two
/// registries started by parallel tests from racing for one port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before. Panics if no loopback port can be bound at all (the test host is broken).
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("cannot bind a port on 127.0.0.1: {e}"))
}

pub(crate) fn try_free_port() -> io::Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::other(
        "the kernel kept returning ports already handed out",
    ))
}

/// Sends `GET path HTTP/1.0` to 127.0.0.1:`port` and returns the status code. HTTP/1.0 makes the
/// server close the connection after the response, so reading to the end is enough.
pub(crate) fn http_get_status(port: u16, path: &str) -> io::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Generous: a loaded CI machine can take seconds to schedule the server's thread.
    let timeout = Duration::from_secs(15);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: `write!` on a socket may send each formatted piece as its own segment.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    parse_status_line(&response).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "response has no HTTP status line",
        )
    })
}

/// The status code of an HTTP response's first line (`HTTP/1.1 200 OK`).
fn parse_status_line(response: &[u8]) -> Option<u16> {
    let line_end = response
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(response.len());
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "ports repeated: {ports:?}");
        TcpListener::bind((Ipv4Addr::LOCALHOST, ports[0])).expect("a free port is bindable");
    }

    #[test]
    fn status_line_parses_and_rejects_garbage() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n{}"),
            Some(200)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 401 Unauthorized\r\n"),
            Some(401)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn http_get_reads_the_status_of_a_loopback_server() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        // Tests running beside this one probe ports that `free_port` handed out and released;
        // the kernel may give this listener one of them, so connections other than this
        // test's own are answered 503 and the server waits on for its own.
        let server = thread::spawn(move || {
            loop {
                let (mut conn, _) = listener.accept().unwrap();
                // Read the whole head: a request may arrive in several segments, and
                // answering early would close the socket under the client's next write.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&head).into_owned();
                if request.starts_with("GET /teapot-probe ") {
                    conn.write_all(b"HTTP/1.0 418 I'm a teapot\r\n\r\n")
                        .unwrap();
                    return request;
                }
                let _ = conn.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
            }
        });
        assert_eq!(http_get_status(port, "/teapot-probe").unwrap(), 418);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /teapot-probe HTTP/1.0\r\n"),
            "{request}"
        );
    }
}
