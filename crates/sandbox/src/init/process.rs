//! The last generation: become the requested user and execute the program.

use std::ffi::CString;
use std::fs::File;
use std::io;

use rustix::process::{Gid, Uid};

use super::report_failure;
use crate::error::InitFailure;
use crate::protocol::{StatusMessage, send};
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
}

/// Drops privileges and executes; returns only the exit code for a failure.
pub(crate) fn exec(prepared: &Prepared, mut status: File) -> i32 {
    if let Err(failure) = take_terminal(prepared)
        .and_then(|()| become_user(prepared))
        .and_then(|()| {
            sys::reset_signals().map_err(InitFailure::setup("reset signal handling"))?;
            sys::cloexec_fds_from_3().map_err(InitFailure::setup("close inherited descriptors"))
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

/// With a terminal on stdin, leads a new session whose controlling terminal it is, so that
/// job control, `^C` and window size changes reach the process as on a login terminal.
fn take_terminal(prepared: &Prepared) -> Result<(), InitFailure> {
    if !prepared.terminal {
        return Ok(());
    }
    let failed = |what: &str| {
        let what = what.to_owned();
        move |e: rustix::io::Errno| InitFailure::setup(what)(e.into())
    };
    rustix::process::setsid().map_err(failed("start a session"))?;
    rustix::process::ioctl_tiocsctty(std::io::stdin())
        .map_err(failed("make stdin the controlling terminal"))
}

fn become_user(prepared: &Prepared) -> Result<(), InitFailure> {
    let user = &prepared.user;
    let failed = |what: String| move |e: rustix::io::Errno| InitFailure::setup(what)(e.into());
    if prepared.set_groups {
        let groups: Vec<Gid> = user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        rustix::thread::set_thread_groups(&groups).map_err(failed(format!(
            "set supplementary groups {:?}",
            user.groups
        )))?;
    }
    rustix::thread::set_thread_gid(Gid::from_raw(user.gid))
        .map_err(failed(format!("set gid {}", user.gid)))?;
    rustix::thread::set_thread_uid(Uid::from_raw(user.uid))
        .map_err(failed(format!("set uid {}", user.uid)))
}
