//! The last generation: drop privileges to what the spec grants and execute the program.

use std::ffi::CString;
use std::fs::File;
use std::io;

use super::report_failure;
use super::security::apply_process_security;
use crate::error::InitFailure;
use crate::protocol::{StatusMessage, send};
use crate::spec::SecurityOptions;
use crate::sys;
use crate::user::ResolvedUser;

/// Everything resolved by the namespace init, ready for `execve`.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub program: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub user: ResolvedUser,
    /// False in a rootless user namespace, where setgroups has been denied.
    pub set_groups: bool,
    /// Make stdin the controlling terminal of a new session (see `ProcessSpec::terminal`).
    pub terminal: bool,
    pub security: SecurityOptions,
}

/// Drops privileges and executes; returns only the exit code for a failure.
pub(crate) fn exec(prepared: &Prepared, mut status: File) -> i32 {
    // A session of its own: without a terminal of its own, the process must not share the
    // terminal kiln runs on, or it could push keystrokes into the user's shell (TIOCSTI) or
    // open it as /dev/tty. The inits still forward the terminal's signals. With `-t`, the
    // session's controlling terminal is the container's own pty.
    if let Err(failure) = new_session(prepared.terminal) {
        return report_failure(&mut status, failure);
    }
    // Every descriptor above 2 (the status pipe included: its closing on exec tells the host
    // the process runs) is closed by `execve`, so nothing of the host's reaches the process.
    if let Err(failure) = sys::reset_signals()
        .map_err(InitFailure::setup("reset signal handling"))
        .and_then(|()| {
            sys::cloexec_fds_from_3().map_err(InitFailure::setup("close inherited descriptors"))
        })
        .and_then(|()| {
            apply_process_security(&prepared.security, &prepared.user, prepared.set_groups)
        })
    {
        return report_failure(&mut status, failure);
    }
    if send(&mut status, &StatusMessage::Exec).is_err() {
        // The host is gone; nobody would collect the process.
        return 125;
    }
    let error = sys::execve(&prepared.program, &prepared.args, &prepared.env);
    let code = if error.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let failure = InitFailure::Exec {
        path: prepared.program.to_string_lossy().into_owned(),
        message: error.to_string(),
    };
    report_failure(&mut status, failure);
    code
}

/// Leads a new session; with a terminal on stdin, makes it the session's controlling terminal
/// so that job control, `^C` and window size changes reach the process as on a login terminal.
fn new_session(terminal: bool) -> Result<(), InitFailure> {
    let failed = |what: &str| {
        let what = what.to_owned();
        move |e: rustix::io::Errno| InitFailure::setup(what)(e.into())
    };
    rustix::process::setsid().map_err(failed("start a new session"))?;
    if terminal {
        rustix::process::ioctl_tiocsctty(std::io::stdin())
            .map_err(failed("make stdin the controlling terminal"))?;
    }
    Ok(())
}
