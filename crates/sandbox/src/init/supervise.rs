//! The init loop: forward every signal to the main child, reap every child (orphans included,
//! as PID 1 inherits them), and finish with the main child's exit code.

use rustix::process::{WaitOptions, WaitStatus};

use crate::sys;

/// Runs until `main_pid` ends and returns its exit code, or 128 + the signal that killed it.
/// Signals must already be blocked (see [`sys::block_signals`]) so none is lost before this.
pub(crate) fn supervise(main_pid: i32) -> i32 {
    loop {
        let signal = match sys::wait_for_signal() {
            Ok(signal) => signal,
            // Not expected; still, the child's exit code matters more than forwarding.
            Err(_) => return wait_blocking(main_pid),
        };
        if signal != libc::SIGCHLD {
            let _ = sys::send_signal(main_pid, signal);
            continue;
        }
        // One SIGCHLD may stand for several exited children. `wait` is any child: rustix's
        // `waitpid(None)` is only those of our own process group, and the process and the
        // orphans PID 1 inherits live in sessions of their own.
        while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
            if pid.as_raw_nonzero().get() == main_pid {
                return exit_code(status);
            }
        }
    }
}

fn wait_blocking(main_pid: i32) -> i32 {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == main_pid => {
                return exit_code(status);
            }
            Ok(_) => continue,
            Err(_) => return 255,
        }
    }
}

/// Shell convention: the exit status, or 128 + signal number.
fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        _ => 255,
    }
}
