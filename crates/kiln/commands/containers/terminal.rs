//! `-t` on the caller's side: raw mode on our terminal (so keys such as ^C reach the
//! container's line discipline, not kiln), restored on exit, and for `kiln exec -t` the relay
//! between our terminal and the exec'd process's pty.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use kiln_runtime::pty::{Pty, PtyReader};
use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcgetwinsize, tcsetattr};

use super::super::Env;

/// Copies the window size of `from` (the caller's terminal) to the pty, if it is a terminal.
pub fn copy_window_size(from: impl AsFd, pty_master: impl AsFd) {
    if let Ok(size) = tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(pty_master, size);
    }
}

/// Raw mode on the caller's terminal for as long as it lives.
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal (nothing to change).
    pub fn enter() -> Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !isatty(&stdin) {
            return Ok(None);
        }
        let fd = stdin.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&fd).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&fd, OptionalActions::Now, &raw).context("setting raw mode")?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
    }
}

/// Connects the caller's terminal to a started exec whose process runs on `pty` until it exits: raw
/// mode, input (with `-i`), output, window size changes. Returns the exit code.
pub fn attach_terminal(
    env: &Env,
    pty: Pty,
    exec: kiln_runtime::Exec,
    interactive: bool,
) -> Result<i32> {
    let Pty { master, slave } = pty;
    // Only the process keeps the slave open, so reading the master ends when it exits.
    drop(slave);
    let raw = RawMode::enter()?;
    if interactive {
        relay_input(master.try_clone()?);
    }
    forward_window_changes(&env.rt, master.try_clone()?);
    let output = std::thread::spawn(move || {
        let _ = std::io::copy(&mut PtyReader(master), &mut std::io::stdout());
    });
    let code = exec.wait()?;
    let _ = output.join();
    drop(raw);
    Ok(code)
}

/// Copies stdin to the pty until stdin ends. Detached: it may block on a read after the
/// process exits, and then ends with kiln.
pub fn relay_input(mut master: File) {
    std::thread::spawn(move || {
        let mut input = std::io::stdin();
        let mut buf = [0u8; 4096];
        while let Ok(n) = input.read(&mut buf) {
            if n == 0 || master.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

/// Forwards SIGWINCH: the caller's new window size goes to the pty (the kernel then signals
/// the process's foreground process group).
fn forward_window_changes(rt: &tokio::runtime::Runtime, master: File) {
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut changes) = signal(SignalKind::window_change()) else {
            return;
        };
        while changes.recv().await.is_some() {
            copy_window_size(std::io::stdin(), &master);
        }
    });
}
