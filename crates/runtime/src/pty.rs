//! Pseudo-terminals for `-t` containers: the supervisor keeps the master side (output to the
//! log and the attached clients, input from them, window size from their resize requests); the
//! process gets the slave as its stdio.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::error::{Result, RuntimeError};

/// A pty pair.
#[derive(Debug)]
pub struct Pty {
    pub master: File,
    pub slave: File,
}

impl Pty {
    pub fn open() -> Result<Pty> {
        let err = |e: rustix::io::Errno| RuntimeError::Io {
            path: "/dev/ptmx".into(),
            source: e.into(),
        };
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(err)?;
        grantpt(&master).map_err(err)?;
        unlockpt(&master).map_err(err)?;
        let name = ptsname(&master, Vec::new()).map_err(err)?;
        let name = name.to_string_lossy().into_owned();
        // O_NOCTTY: a session leader without a terminal (the supervisor) must not make this
        // one its own, or the process could not take it and its end would hang us up.
        let slave = File::options()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(&name)
            .map_err(RuntimeError::io(&name))?;
        Ok(Pty {
            master: File::from(master),
            slave,
        })
    }

    /// The three stdio handles for the process, all on the slave side.
    pub fn stdio(&self) -> Result<kiln_sandbox::Stdio> {
        let dup = || {
            self.slave
                .try_clone()
                .map_err(RuntimeError::io("pty slave"))
        };
        Ok(kiln_sandbox::Stdio {
            stdin: dup()?.into(),
            stdout: dup()?.into(),
            stderr: dup()?.into(),
        })
    }
}

/// Sets a pty's window size (rows, columns).
pub fn set_window_size(master: &File, rows: u16, cols: u16) {
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, size);
}

/// A pty master read until the slave side is gone, which Linux reports as EIO, not EOF.
#[derive(Debug)]
pub struct PtyReader(pub File);

impl Read for PtyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => Ok(0),
            other => other,
        }
    }
}
