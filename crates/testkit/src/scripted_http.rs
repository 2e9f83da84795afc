//! A loopback HTTP/1.1 server that answers from a script.
//!
//! For the transport's error paths, which no real server takes on cue: a 503 and then a 200,
//! a 404, three failures in a row, and counting how many requests a build made. Downloads that
//! only need to succeed go to real servers ([`crate::HttpsFileServer`], the registry). Every
//! response closes its connection, so each request is one connection and the script's order
//! is the order of requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running scripted server; its thread ends with the test process.
#[derive(Debug)]
pub struct ScriptedHttp {
    base: String,
    hits: Arc<AtomicUsize>,
}

/// How the server picks a response for a request path.
#[derive(Debug)]
enum Script {
    /// One response per connection, in order; connections after the last get none.
    InOrder(Vec<Vec<u8>>),
    /// `200` with the body of the listed path, `404` for any other.
    Routes(Vec<(String, Vec<u8>)>),
}

impl ScriptedHttp {
    /// Answers the n-th connection with `responses[n]` (status line, headers and body, as
    /// [`response`] makes them).
    pub fn in_order(responses: Vec<Vec<u8>>) -> ScriptedHttp {
        ScriptedHttp::start(Script::InOrder(responses))
    }

    /// Serves each `(path, body)` as a `200` with a fixed `Last-Modified`; any other path is a
    /// `404`. Answers at most 64 requests (a test makes a handful).
    pub fn routes(routes: Vec<(&str, Vec<u8>)>) -> ScriptedHttp {
        let routes = routes
            .into_iter()
            .map(|(path, body)| (path.to_owned(), body))
            .collect();
        ScriptedHttp::start(Script::Routes(routes))
    }

    fn start(script: Script) -> ScriptedHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            let limit = match &script {
                Script::InOrder(responses) => responses.len(),
                Script::Routes(_) => 64,
            };
            for (n, stream) in listener.incoming().take(limit).enumerate() {
                let Ok(mut stream) = stream else { continue };
                let path = read_request_path(&mut stream);
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = match &script {
                    Script::InOrder(responses) => responses[n].clone(),
                    Script::Routes(routes) => match routes.iter().find(|(p, _)| *p == path) {
                        Some((_, body)) => response(
                            "200 OK",
                            "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
                            body,
                        ),
                        None => response("404 Not Found", "", b""),
                    },
                };
                // The client may have given up (a cancelled download): nothing to report.
                let _ = stream.write_all(&answer);
            }
        });
        ScriptedHttp { base, hits }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// How many requests have been answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Shows the base URL, so `format!("{server}/path")` names a path on it.
impl std::fmt::Display for ScriptedHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// A complete response: `status` such as `"503 Service Unavailable"`, `extra_headers` each
/// ending in `\r\n`, and `body` with its `Content-Length`.
pub fn response(status: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// Reads the request head and returns its path (`/` if it cannot be read).
fn read_request_path(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&request)
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str) -> String {
        let address = url.trim_start_matches("http://");
        let (host, path) = address.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).unwrap();
        write!(stream, "GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn answers_in_order_and_by_route() {
        let server = ScriptedHttp::in_order(vec![
            response("503 Service Unavailable", "", b""),
            response("200 OK", "", b"late"),
        ]);
        assert!(get(&server.url("/a")).starts_with("HTTP/1.1 503"));
        let second = get(&server.url("/a"));
        assert!(second.starts_with("HTTP/1.1 200") && second.ends_with("late"));
        assert_eq!(server.hits(), 2);

        let server = ScriptedHttp::routes(vec![("/f", b"body".to_vec())]);
        assert!(get(&server.url("/f")).ends_with("\r\n\r\nbody"));
        assert!(get(&server.url("/g")).starts_with("HTTP/1.1 404"));
        assert_eq!(server.hits(), 2);
    }
}
