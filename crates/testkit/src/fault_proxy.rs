//! A fault-injecting TCP proxy on loopback, put between a client and a real registry to check
//! that transfers survive what networks do: connections cut midway, `503`s, stalls.
//!
//! Faults are budgeted (`times`): after that many the proxy forwards faithfully, so a client with
//! retries completes, and [`FaultProxy::faults_injected`] tells the test the faults happened.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// What the proxy does wrong.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Cut a connection once `bytes` bytes have gone through it in one direction (a request
    /// body on upload, a response on download).
    DropAfter { bytes: u64, times: usize },
    /// Answer a connection's first request with `503 Service Unavailable` and close it.
    Unavailable { times: usize },
    /// Accept a connection, then neither forward nor answer for `duration`, then close it.
    Stall { duration: Duration, times: usize },
}

impl Fault {
    fn budget(&self) -> usize {
        match *self {
            Fault::DropAfter { times, .. }
            | Fault::Unavailable { times }
            | Fault::Stall { times, .. } => times,
        }
    }
}

/// A running proxy; it stops accepting when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    injected: Arc<AtomicUsize>,
    listener: Arc<TcpListener>,
}

impl FaultProxy {
    /// Proxies `127.0.0.1:<new port>` to `127.0.0.1:<upstream_port>` with `fault`.
    pub fn start(upstream_port: u16, fault: Fault) -> Result<FaultProxy> {
        let listener = Arc::new(
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the fault proxy")?,
        );
        let port = listener.local_addr()?.port();
        let injected = Arc::new(AtomicUsize::new(0));
        let accepting = listener.clone();
        let counter = injected.clone();
        thread::spawn(move || {
            for conn in accepting.incoming() {
                let Ok(client) = conn else { break };
                let counter = counter.clone();
                thread::spawn(move || {
                    let _ = serve(client, upstream_port, fault, &counter);
                });
            }
        });
        Ok(FaultProxy {
            port,
            injected,
            listener,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of references through the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many faults the proxy has injected so far.
    pub fn faults_injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Wake the accept loop with a connection it will see after the listener is unusable;
        // nonblocking makes later accepts fail so the thread ends.
        let _ = self.listener.set_nonblocking(true);
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Takes one fault from the budget, if any is left.
fn claim(counter: &AtomicUsize, budget: usize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < budget).then_some(n + 1)
        })
        .is_ok()
}

fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    fault: Fault,
    counter: &AtomicUsize,
) -> io::Result<()> {
    match fault {
        Fault::Unavailable { times } if claim(counter, times) => {
            read_request_head(&mut client)?;
            client.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return client.shutdown(Shutdown::Both);
        }
        Fault::Stall { duration, times } if claim(counter, times) => {
            thread::sleep(duration);
            return client.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    let upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port))?;
    let drop_after = match fault {
        Fault::DropAfter { bytes, .. } => Some(bytes),
        _ => None,
    };
    let budget = fault.budget();
    let (client_read, upstream_write) = (client.try_clone()?, upstream.try_clone()?);
    thread::scope(|scope| {
        scope.spawn(|| pipe(client_read, upstream_write, drop_after, budget, counter));
        pipe(upstream, client, drop_after, budget, counter);
    });
    Ok(())
}

/// Copies `from` to `to` until either side closes, or cuts both after `drop_after` bytes when the
/// fault budget allows.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    drop_after: Option<u64>,
    budget: usize,
    counter: &AtomicUsize,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(limit) = drop_after
            && copied + n as u64 > limit
            && claim(counter, budget)
        {
            let keep = (limit - copied.min(limit)) as usize;
            let _ = to.write_all(&buf[..keep]);
            let _ = to.flush();
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        copied += n as u64;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn read_request_head(client: &mut TcpStream) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if client.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every connection with `body` and closes.
    fn upstream(body: &'static [u8]) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                let _ = conn.write_all(body);
            }
        });
        port
    }

    fn fetch(port: u16) -> Vec<u8> {
        let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = conn.read_to_end(&mut out);
        out
    }

    #[test]
    fn drops_after_n_bytes_within_budget_then_forwards() {
        let body: &'static [u8] = &[7u8; 100_000];
        let proxy = FaultProxy::start(
            upstream(body),
            Fault::DropAfter {
                bytes: 1000,
                times: 1,
            },
        )
        .unwrap();
        assert_eq!(fetch(proxy.port).len(), 1000);
        assert_eq!(fetch(proxy.port).len(), body.len());
        assert_eq!(proxy.faults_injected(), 1);
    }

    #[test]
    fn answers_503_then_forwards_and_stalls() {
        let proxy = FaultProxy::start(
            upstream(b"HTTP/1.1 200 OK\r\n\r\nok"),
            Fault::Unavailable { times: 2 },
        )
        .unwrap();
        for _ in 0..2 {
            assert!(fetch(proxy.port).starts_with(b"HTTP/1.1 503 "));
        }
        assert!(fetch(proxy.port).starts_with(b"HTTP/1.1 200 OK"));

        let proxy = FaultProxy::start(
            upstream(b"HTTP/1.1 200 OK\r\n\r\nok"),
            Fault::Stall {
                duration: Duration::from_millis(300),
                times: 1,
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert!(fetch(proxy.port).is_empty());
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(fetch(proxy.port).starts_with(b"HTTP/1.1 200 OK"));
    }
}
