//! A hijacked attach or exec on the client's side: the terminal in raw mode with `-t` (and
//! its size sent to the daemon, again on every SIGWINCH), stdin read on a thread of its own
//! with `-i`, the output written as it comes, and without a tty SIGINT/SIGTERM passed on to
//! the container (`docker run`'s sig-proxy; with a tty ^C is a byte the container's terminal
//! turns into its own SIGINT).

use std::io::{Read, Write};

use anyhow::Result;
use bytes::Bytes;
use kiln_client::{Hijacked, Output};
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
}

/// Reads stdin on a thread into a channel; the channel closes at the end of stdin. The thread
/// may stay blocked in a read after the session ends, and ends with the process.
fn stdin_chunks() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut input = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
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
    pub async fn relay(&self, hijacked: Hijacked) -> Result<()> {
        let raw = if self.tty { RawMode::enter()? } else { None };
        if self.tty {
            self.send_size().await;
        }
        let input = self.stdin.then(stdin_chunks);
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
        Ok(result?)
    }
}
