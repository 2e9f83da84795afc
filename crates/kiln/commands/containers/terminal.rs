//! `-t`: a pseudo-terminal for the container's process. kiln keeps the master side and relays
//! it to its own stdin/stdout; the caller's terminal is put in raw mode (so keys such as ^C
//! reach the container's line discipline, not kiln) and restored on exit; its window size is
//! copied to the pty at start and on every SIGWINCH.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};

use super::logfile::{LogWriter, PtyReader, Tee};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcgetwinsize, tcsetattr};

/// A pty pair: kiln keeps `master`; `slave` becomes the process's stdio.
#[derive(Debug)]
pub struct Pty {
    pub master: File,
    pub slave: File,
}

impl Pty {
    pub fn open() -> Result<Pty> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .context("opening a pseudo-terminal")?;
        grantpt(&master).context("granting the pseudo-terminal")?;
        unlockpt(&master).context("unlocking the pseudo-terminal")?;
        let name = ptsname(&master, Vec::new()).context("naming the pseudo-terminal")?;
        let name = name.to_string_lossy().into_owned();
        // O_NOCTTY: a session leader without a terminal (the supervisor) must not make this
        // one its own, or the process could not take it and its end would hang us up.
        use std::os::unix::fs::OpenOptionsExt;
        let slave = File::options()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(&name)
            .with_context(|| format!("opening {name}"))?;
        Ok(Pty {
            master: File::from(master),
            slave,
        })
    }

    /// The three stdio handles for the process, all on the slave side.
    pub fn stdio(&self) -> Result<kiln_sandbox::Stdio> {
        Ok(kiln_sandbox::Stdio {
            stdin: self.slave.try_clone()?.into(),
            stdout: self.slave.try_clone()?.into(),
            stderr: self.slave.try_clone()?.into(),
        })
    }
}

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

/// Copies the pty's output to stdout, and into `log` when given, until every slave is closed.
pub fn relay_output(master: File, log: Option<LogWriter>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut output = Tee {
            input: PtyReader(master),
            echo: std::io::stdout(),
        };
        match log {
            Some(log) => {
                let _ = log.copy("stdout", output);
            }
            None => {
                let _ = std::io::copy(&mut output, &mut std::io::sink());
            }
        }
    })
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
/// the container's foreground process group).
pub fn forward_window_changes(rt: &tokio::runtime::Runtime, master: File) {
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
