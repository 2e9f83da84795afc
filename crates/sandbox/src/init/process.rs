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
pub(super) struct Prepared {
    pub program: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub user: ResolvedUser,
    /// False in a rootless user namespace, where setgroups has been denied.
    pub set_groups: bool,
    pub security: SecurityOptions,
}

/// Drops privileges and executes; returns only the exit code for a failure.
pub(super) fn exec(prepared: &Prepared, mut status: File) -> i32 {
    // A session of its own and so no controlling terminal: otherwise the process would share
    // the terminal kiln runs on and could push keystrokes into the user's shell (TIOCSTI) or
    // open it as /dev/tty. The inits still forward the terminal's signals.
    if let Err(e) = rustix::process::setsid() {
        return report_failure(
            &mut status,
            InitFailure::setup("start a new session")(e.into()),
        );
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
