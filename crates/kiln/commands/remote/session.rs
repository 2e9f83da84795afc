//! A hijacked attach or exec on the client's side: the terminal in raw mode with `-t` (and
//! its size sent to the daemon, again on every SIGWINCH), stdin read on a thread of its own
//! with `-i`, the output written as it comes, and without a tty SIGINT/SIGTERM passed on to
//! the container (`docker run`'s sig-proxy; with a tty ^C is a byte the container's terminal
//! turns into its own SIGINT). The detach keys (`--detach-keys`) are the daemon's to act on; the
//! client notes them so that it does not wait for a container it left running.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use bytes::Bytes;
use kiln_client::{Hijacked, Output};
use kiln_runtime::{DetachKeys, DetachWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::Remote;
use crate::commands::containers::terminal::RawMode;

/// What a window size change is sent to.
pub enum Resize {
    Container(String),
    Exec(String),
}

pub struct Session<'a> {
    pub remote: &'a Remote,
    pub tty: bool,
    /// Send this process's stdin.
    pub stdin: bool,
    pub resize: Option<Resize>,
    /// The container that SIGINT and SIGTERM go to (without a tty).
    pub signals_to: Option<String>,
    /// The keys the daemon detaches on (sent as `detachKeys`); watched here too, so that an
    /// output that ends after them is known to be a detach, not the container's end.
    pub detach_keys: Option<DetachKeys>,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The daemon ended the output: the container (or process) is done with its streams.
    Ended,
    /// The detach keys were typed: the container keeps running without this client.
    Detached,
}

/// Reads stdin on a thread into a channel; the channel closes at the end of stdin. The thread
/// may stay blocked in a read after the session ends, and ends with the process.
/// Every byte goes to the daemon, which detaches on the keys itself; `watch` only notes in
/// `detached` that they were typed.
fn stdin_chunks(
    mut watch: Option<DetachWatch>,
    detached: Arc<AtomicBool>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut input = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        let mut ignored = Vec::new();
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(watch) = watch.as_mut() {
                        ignored.clear();
                        if watch.feed(&buf[..n], &mut ignored) {
                            detached.store(true, Ordering::SeqCst);
                        }
                    }
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn window_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// The next delivery of `signal`; never, without one.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

impl Session<'_> {
    async fn send_size(&self) {
        let (Some(target), Some((rows, cols))) = (&self.resize, window_size()) else {
            return;
        };
        let client = &self.remote.client;
        // A resize that fails (the process just ended) changes nothing worth reporting.
        let _ = match target {
            Resize::Container(id) => client.container_resize(id, rows, cols).await,
            Resize::Exec(id) => client.exec_resize(id, rows, cols).await,
        };
    }

    /// Relays `hijacked` until the daemon ends the output.
    pub async fn relay(&self, hijacked: Hijacked) -> Result<Relayed> {
        let raw = if self.tty { RawMode::enter()? } else { None };
        if self.tty {
            self.send_size().await;
        }
        // The daemon watches only a tty's input for the keys (as dockerd), so only that here.
        let watch = match (&self.detach_keys, self.tty) {
            (Some(keys), true) => Some(keys.watch()),
            _ => None,
        };
        let detached = Arc::new(AtomicBool::new(false));
        let input = self
            .stdin
            .then(|| stdin_chunks(watch, Arc::clone(&detached)));
        let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
        let mut write = |output, data: &[u8]| match output {
            Output::Stdout => stdout.write_all(data).and_then(|()| stdout.flush()),
            Output::Stderr => stderr.write_all(data),
        };
        let relay = hijacked.relay(self.tty, input, &mut write);
        tokio::pin!(relay);
        let mut resized = signal(SignalKind::window_change())?;
        // Only where they are passed on: otherwise they end this process, as by default.
        let proxied = match (&self.signals_to, self.tty) {
            (Some(id), false) => Some((
                id.as_str(),
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )),
            _ => None,
        };
        let (target, mut interrupt, mut terminate) = match proxied {
            Some((id, i, t)) => (Some(id), Some(i), Some(t)),
            None => (None, None, None),
        };
        let client = &self.remote.client;
        let result = loop {
            tokio::select! {
                done = &mut relay => break done,
                _ = resized.recv() => self.send_size().await,
                Some(_) = recv(&mut interrupt) => {
                    if let Some(id) = target {
                        let _ = client.container_kill(id, "SIGINT").await;
                    }
                }
                Some(_) = recv(&mut terminate) => {
                    if let Some(id) = target {
                        let _ = client.container_kill(id, "SIGTERM").await;
                    }
                }
            }
        };
        drop(raw);
        result?;
        Ok(if detached.load(Ordering::SeqCst) {
            Relayed::Detached
        } else {
            Relayed::Ended
        })
    }
}
