//! The per-user network namespace of a rootless kiln, and the process that keeps it.
//!
//! A rootless kiln's user-defined networks need one network namespace that outlives every
//! kiln command (its bridges, rules and the containers' host-side veth ends live there), owned
//! by a user namespace in which kiln has `CAP_NET_ADMIN`. A bind mount of the namespace would
//! keep only the network namespace, and only in the mount namespace that made it; so a small
//! keeper process holds it instead, as podman's pause process does: `/proc/self/exe
//! __kiln-netns-keeper READY_FD EXIT_FD` unshares a network namespace, says so, and then waits
//! to be killed. Its user namespace is the one of the kiln that started it; later rootless
//! kiln commands join that user namespace (`rootless::reexec_in_user_namespace` with a
//! namespace to join) and so have every capability over the network namespace too.
//!
//! The way out is slirp4netns attached to the keeper's namespace (`tap0`, 10.0.2.100, default
//! route via 10.0.2.2), started from the caller's — the host's — network namespace so its
//! sockets are the host's. Its `--exit-fd` pipe's write end is held by the keeper alone, so
//! slirp4netns exits with the keeper and no one has to track it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::pipe::PipeFlags;
use rustix::thread::UnshareFlags;

use crate::error::SandboxError;
use crate::network::{HelperConfig, find_helper, wait_ready};
use crate::sys;

/// The first argument of a re-executed kiln that is to be a keeper.
pub(crate) const KEEPER_MARKER: &str = "__kiln-netns-keeper";

/// The interface slirp4netns gives the keeper's namespace.
pub const OUTBOUND_INTERFACE: &str = "tap0";

/// How long slirp4netns may take to configure the keeper's namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running keeper: its pid, and its start time (clock ticks since boot, field 22 of
/// `/proc/PID/stat`), which tells it from a later process that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeper {
    pub pid: u32,
    pub start_time: u64,
}

impl Keeper {
    /// Whether this keeper still runs (a zombie does not: its namespaces are gone).
    pub fn is_alive(&self) -> bool {
        process_start(self.pid)
            .is_some_and(|(start, state)| start == self.start_time && state != 'Z')
    }

    /// Ends the keeper (its network namespace goes with it, and slirp4netns with its exit
    /// pipe), and reaps it when it is this process's child (a daemon that made it).
    pub fn stop(&self) {
        if !self.is_alive() {
            return;
        }
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return;
        };
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        for _ in 0..200 {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
            if !self.is_alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The start time and state of process `pid`, from `/proc/PID/stat`.
fn process_start(pid: u32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall is the 20th after the name (state is field 3).
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// The keeper whose pid and start time were recorded, if it still runs.
pub fn find_keeper(pid: u32, start_time: u64) -> Option<Keeper> {
    let keeper = Keeper { pid, start_time };
    keeper.is_alive().then_some(keeper)
}

/// Starts a keeper with a new network namespace and slirp4netns attached to it (its output in
/// `log`). The keeper outlives the caller, in a process group of its own; on failure nothing
/// is left running.
pub fn start_keeper(log: &Path) -> Result<Keeper, SandboxError> {
    let helper = find_helper()?;
    let pipe = |what: &str| {
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| {
            SandboxError::io(format!("create the {what} pipe of the network keeper"))(e.into())
        })
    };
    let (ready_read, ready_write) = pipe("ready")?;
    let (exit_read, exit_write) = pipe("exit")?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("kiln-netns-keeper")
        .arg(KEEPER_MARKER)
        .arg(ready_write.as_raw_fd().to_string())
        .arg(exit_write.as_raw_fd().to_string())
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in the caller's process group: a terminal's ^C must not end every network.
        .process_group(0);
    sys::pass_only_fds_across_exec(
        &mut command,
        vec![ready_write.as_raw_fd(), exit_write.as_raw_fd()],
    );
    let mut child = command
        .spawn()
        .map_err(SandboxError::io("start the network namespace keeper"))?;
    drop((ready_write, exit_write));
    let pid = child.id();
    let ready = wait_ready(ready_read, READY_TIMEOUT);
    let keeper = process_start(pid).map(|(start_time, _)| Keeper { pid, start_time });
    let keeper = match (ready, keeper) {
        (Ok(true), Some(keeper)) => keeper,
        (outcome, _) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::NetworkSetup(format!(
                "the network namespace keeper did not start: {}",
                match outcome {
                    Ok(_) => "it exited before making its namespace".to_string(),
                    Err(e) => e.to_string(),
                }
            )));
        }
    };
    // The keeper is left running; `std::process::Child` neither kills nor waits when dropped.
    drop(child);
    if let Err(e) = attach_outbound(&helper, keeper.pid, exit_read, log) {
        keeper.stop();
        return Err(e);
    }
    Ok(keeper)
}

/// Starts slirp4netns on the keeper's namespace and waits until it configured `tap0`.
fn attach_outbound(
    helper: &Path,
    keeper_pid: u32,
    exit_read: OwnedFd,
    log: &Path,
) -> Result<(), SandboxError> {
    let (ready_read, ready_write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::io("create the ready pipe of slirp4netns")(e.into()))?;
    let config = HelperConfig {
        target_pid: keeper_pid,
        // kiln runs in the keeper's user namespace already, with every capability over it.
        userns: None,
        // The containers' names and outside names are the embedded DNS server's, which
        // forwards from the host's namespace: slirp4netns' forwarder is not needed.
        disable_dns: true,
        // The keeper's slirp4netns lives on after this kiln: no sandbox of its own whose
        // view of /etc could go stale.
        sandbox_helper: false,
    };
    let mut args = config.args();
    // The interface name is the last argument.
    if let Some(last) = args.last_mut() {
        *last = OUTBOUND_INTERFACE.to_owned();
    }
    let log_file =
        File::create(log).map_err(SandboxError::io(format!("create {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(SandboxError::io(format!("open {}", log.display())))?;
    let mut command = Command::new(helper);
    command
        .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
        .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    sys::pass_only_fds_across_exec(
        &mut command,
        vec![ready_write.as_raw_fd(), exit_read.as_raw_fd()],
    );
    let mut child = command.spawn().map_err(SandboxError::io(format!(
        "start {} for the per-user network namespace",
        helper.display()
    )))?;
    drop((ready_write, exit_read));
    match wait_ready(ready_read, READY_TIMEOUT) {
        Ok(true) => Ok(()),
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            let mut reason = match outcome {
                Ok(_) => "it exited before configuring the interface".to_string(),
                Err(e) => e.to_string(),
            };
            let output = std::fs::read_to_string(log).unwrap_or_default();
            if !output.trim().is_empty() {
                reason.push_str(": ");
                reason.push_str(output.trim());
            }
            Err(SandboxError::NetworkSetup(reason))
        }
    }
}

/// The keeper's side: `READY_FD EXIT_FD` are its arguments. Returns its exit code only when it
/// could not make its namespace; otherwise it waits until it is killed.
pub(crate) fn run_keeper(ready_fd: i32, exit_fd: i32) -> i32 {
    let Ok(ready) = sys::take_inherited_fd(ready_fd) else {
        return 125;
    };
    // Held, never written: slirp4netns exits when the keeper's end closes.
    let Ok(_exit) = sys::take_inherited_fd(exit_fd) else {
        return 125;
    };
    if sys::unshare(UnshareFlags::NEWNET).is_err() {
        return 125;
    }
    // Its loopback, so a published port dialled to 127.0.0.1 here would not be refused.
    let _ = sys::set_loopback_up();
    if io::Write::write_all(&mut File::from(ready), b"1").is_err() {
        return 125;
    }
    // Nothing to do but exist; SIGTERM (its default action) ends it.
    loop {
        std::thread::park();
    }
}

/// Makes `command` run in the network namespace of process `pid` (the keeper's, for `nft`).
pub fn run_in_network_namespace_of(command: &mut Command, pid: u32) -> Result<(), SandboxError> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path).map_err(SandboxError::io(format!("open {path}")))?;
    sys::enter_network_namespace_before_exec(command, ns.into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keeper_is_alive_while_its_process_runs_with_the_same_start_time() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let (start, state) = process_start(pid).expect("the child's stat");
        assert!(start > 0);
        assert_ne!(state, 'Z');
        let keeper = find_keeper(pid, start).expect("alive");
        // Another start time is another process that got the same pid.
        assert_eq!(find_keeper(pid, start + 1), None);
        child.kill().unwrap();
        // Killed but not reaped: a zombie, which keeps no namespace.
        for _ in 0..200 {
            if process_start(pid).is_some_and(|(_, s)| s == 'Z') {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!keeper.is_alive());
        child.wait().unwrap();
        assert!(!keeper.is_alive());
    }
}
