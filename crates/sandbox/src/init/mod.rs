//! The re-executed side of the sandbox. `/proc/self/exe __kiln-sandbox-init SPEC_FD STATUS_FD`
//! runs three generations, each single-threaded so that forking is safe:
//!
//! 1. the outer init (this module): reads the spec, creates the user namespace when rootless
//!    and the PID namespace, forks, forwards signals to its child and exits with its code;
//! 2. the namespace init ([`container`]), PID 1 of the new PID namespace: creates the other
//!    namespaces, builds the root filesystem ([`rootfs`]), pivots into it, then forks the
//!    process and acts as its init (signal forwarding, zombie reaping, [`supervise`]);
//! 3. the process itself ([`process`]): drops privileges ([`security`]) and executes.
//!
//! Both inits make themselves non-dumpable first: their `/proc/<pid>/exe` is the host's kiln
//! binary, and a non-dumpable process's `exe`, `fd/`, `root` and `mem` are closed to a process
//! without CAP_SYS_PTRACE, so nothing in the sandbox can reopen the binary for writing
//! (runc CVE-2019-5736) or reach the inits' descriptors.
//!
//! The outer init stays outside the new mount namespace, so when it reaps the namespace init
//! every mount of the sandbox is already gone.

pub(crate) mod container;
mod masks;
pub(crate) mod process;
pub(crate) mod rootfs;
pub(crate) mod security;
pub(crate) mod supervise;
mod workdir;

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;

use rustix::io::FdFlags;
use rustix::thread::UnshareFlags;

use crate::error::InitFailure;
use crate::protocol::{INIT_MARKER, InitRequest, StatusMessage, send};
use crate::spec::NetworkMode;
use crate::sys;

/// Exit status of an init that failed before executing the process (Docker uses 125 for
/// "the container runtime failed"). The status pipe carries the reason.
const SETUP_FAILED: i32 = 125;

/// Runs the sandbox init and exits if this process was started as one; otherwise returns at
/// once. Call it as the very first thing in `main`, before any thread is started.
#[allow(
    clippy::print_stderr,
    reason = "runs as the init's own process (kiln re-executed): where no status pipe to the \
              host is usable, its stderr is the only channel left"
)]
pub fn maybe_run_init() {
    let mut args = std::env::args_os();
    let marker = args.nth(1);
    if marker.as_deref() == Some(OsStr::new(crate::netns_keeper::KEEPER_MARKER)) {
        let fds: Vec<i32> = args.filter_map(|a| a.to_str()?.parse().ok()).collect();
        let code = match fds[..] {
            [ready, exit] => crate::netns_keeper::run_keeper(ready, exit),
            _ => SETUP_FAILED,
        };
        std::process::exit(code);
    }
    let exec = marker.as_deref() == Some(OsStr::new(crate::exec::EXEC_MARKER));
    if !exec && marker.as_deref() != Some(OsStr::new(INIT_MARKER)) {
        return;
    }
    let fds: Vec<Option<i32>> = args
        .map(|a| a.to_str().and_then(|s| s.parse().ok()))
        .collect();
    let code = match fds[..] {
        [Some(spec_fd), Some(status_fd)] if exec => crate::exec::run_helper(spec_fd, status_fd),
        [Some(spec_fd), Some(status_fd)] => run_outer(spec_fd, status_fd),
        _ => {
            eprintln!("kiln sandbox init: expected SPEC_FD STATUS_FD arguments");
            SETUP_FAILED
        }
    };
    std::process::exit(code);
}

#[allow(
    clippy::print_stderr,
    reason = "runs as the init's own process (kiln re-executed): where no status pipe to the \
              host is usable, its stderr is the only channel left"
)]
fn run_outer(spec_fd: i32, status_fd: i32) -> i32 {
    // kiln is our parent: if it is killed (even with SIGKILL), the sandbox must not outlive it
    // and keep writing into a build's staging directory. The namespace init dies with us.
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("kiln sandbox init: set the parent-death signal: {e}");
        return SETUP_FAILED;
    }
    let status = match sys::take_inherited_fd(status_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("kiln sandbox init: status pipe: {e}");
            return SETUP_FAILED;
        }
    };
    // Re-armed so that the user's process does not inherit it: its closing tells the host
    // that exec succeeded.
    let _ = rustix::io::fcntl_setfd(&status, FdFlags::CLOEXEC);
    let mut status = File::from(status);
    if send(&mut status, &StatusMessage::Started).is_err() {
        return SETUP_FAILED;
    }

    // Non-dumpable only once the id maps are written (that makes /proc/self root's, and a
    // rootless init could no longer write its own uid_map) and the network helper has joined
    // the namespace.
    let request = match read_request(spec_fd)
        .and_then(|r| enter_outer_namespaces(&r).map(|_| r))
        .and_then(|r| await_network(&r, &mut status).map(|_| r))
        .and_then(|r| make_non_dumpable().map(|_| r))
    {
        Ok(request) => request,
        Err(failure) => return report_failure(&mut status, failure),
    };
    match sys::fork() {
        Err(e) => report_failure(
            &mut status,
            InitFailure::setup("fork the namespace init")(e),
        ),
        Ok(None) => container::run(&request, status),
        Ok(Some(pid)) => {
            drop(status);
            supervise::supervise(pid)
        }
    }
}

/// With the default network: tells the host the namespace exists and waits until the host has
/// connected it, so the process never starts without its network.
fn await_network(request: &InitRequest, status: &mut File) -> Result<(), InitFailure> {
    let Some(fd) = request.network_go_ahead_fd else {
        return Ok(());
    };
    send(status, &StatusMessage::NetworkNamespace)
        .map_err(InitFailure::setup("report the network namespace"))?;
    crate::network::await_go_ahead(fd)
}

/// See the module documentation: keeps `/proc/<pid>/exe` and friends of an init closed.
pub(crate) fn make_non_dumpable() -> Result<(), InitFailure> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| InitFailure::setup("make the init non-dumpable")(e.into()))
}

/// Sends `failure` to the host (or, if the host is gone, to stderr) and gives the exit status
/// for it.
#[allow(
    clippy::print_stderr,
    reason = "runs as the init's own process (kiln re-executed): where no status pipe to the \
              host is usable, its stderr is the only channel left"
)]
pub(crate) fn report_failure(status: &mut File, failure: InitFailure) -> i32 {
    if send(status, &StatusMessage::Failed(failure.clone())).is_err() {
        eprintln!("kiln sandbox init: {failure}");
    }
    SETUP_FAILED
}

fn read_request(spec_fd: i32) -> Result<InitRequest, InitFailure> {
    let fd = sys::take_inherited_fd(spec_fd).map_err(InitFailure::setup("spec pipe"))?;
    let mut json = Vec::new();
    File::from(fd)
        .read_to_end(&mut json)
        .map_err(InitFailure::setup("read the spec"))?;
    serde_json::from_slice(&json).map_err(|e| InitFailure::Setup {
        step: "parse the spec".into(),
        message: e.to_string(),
    })
}

/// Creates the PID namespace (entered by the next child), with the default network the
/// network namespace (here, so that the host can name it by this process's pid), and, when
/// rootless, the user namespace owning all the others, mapping the caller to root.
fn enter_outer_namespaces(request: &InitRequest) -> Result<(), InitFailure> {
    sys::block_signals().map_err(InitFailure::setup("block signals"))?;
    let mut namespaces = UnshareFlags::NEWPID;
    if matches!(
        request.sandbox.network,
        NetworkMode::Default | NetworkMode::Prepared
    ) {
        namespaces |= UnshareFlags::NEWNET;
    }
    let Some(map) = request.id_map else {
        return sys::unshare(namespaces).map_err(InitFailure::setup("create namespaces"));
    };
    // One call: the user namespace is created first and owns the others.
    sys::unshare(UnshareFlags::NEWUSER | namespaces)
        .map_err(InitFailure::setup("create the user namespace and others"))?;
    // setgroups must be denied before an unprivileged process may write its gid_map.
    for (file, contents) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {} 1\n", map.uid)),
        ("/proc/self/gid_map", format!("0 {} 1\n", map.gid)),
    ] {
        std::fs::write(file, contents).map_err(InitFailure::setup(format!("write {file}")))?;
    }
    Ok(())
}
