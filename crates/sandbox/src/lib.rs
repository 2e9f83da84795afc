//! Runs a process in Linux namespaces (mount, PID, IPC, UTS, network unless shared, user when
//! not root) on an overlay root built from layer directories, the way a container runtime
//! does. It knows nothing of images, layers or Dockerfiles.
//!
//! The binary using this crate must call [`maybe_run_init`] first thing in `main`: [`spawn`]
//! re-executes `/proc/self/exe` as the sandbox's init, which sets up the namespaces and
//! filesystem, then runs the process as a child of a small PID-1 init that forwards signals
//! and reaps zombies.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod binfmt;
mod caps;
mod cgroup;
mod copy_root;
mod error;
mod etc_files;
mod exec;
pub mod fork_window;
mod host;
mod init;
pub mod netns_keeper;
mod network;
mod overlay;
mod protocol;
pub mod rootless;
mod seccomp;
mod spec;
mod stubs;
mod sys;
mod ulimit;
mod user;
mod view;

pub use caps::{Capabilities, UnknownCapability};
pub use cgroup::apply_limits;
pub use error::{InitFailure, SandboxError};
pub use exec::spawn_in;
pub use host::{ExitCode, PrepareNetwork, SandboxChild, spawn, spawn_prepared};
pub use init::maybe_run_init;
pub use network::{HELPER_PACKAGE, SANDBOX_ADDRESS, find_helper as network_helper};
pub use overlay::OverlayMount;
pub use seccomp::denied_syscalls;
pub use spec::{
    BindMount, ExtraHost, ExtraHostError, FileMount, Mount, NameSettings, NetworkMode, ProcessSpec,
    ResourceLimits, SandboxSpec, SeccompProfile, SecurityOptError, SecurityOptions, Stdio,
    TmpfsMount,
};
pub use ulimit::{Ulimit, UlimitError};
pub use view::RootView;

/// Leaves the calling process's parent: forks, the parent exits at once (status 0) and the
/// child returns from here, reparented to init (or the nearest subreaper) when its old
/// parent has reaped that exit. So a long-lived process that starts this one (`kiln serve`
/// starting a supervisor) never parents it: it neither collects its exit nor keeps a zombie
/// of it. Must run before any thread is started (fork copies only the calling thread).
pub fn leave_parent() -> Result<(), SandboxError> {
    match sys::fork().map_err(SandboxError::io("fork away from the parent"))? {
        Some(_) => std::process::exit(0),
        None => Ok(()),
    }
}

/// Moves the calling process into a mount namespace of its own whose mounts receive the
/// host's but never propagate back, so every mount it makes (for example an
/// [`OverlayMount`]) vanishes when it exits. Needs root, and must run before any thread is
/// started: the kernel refuses to unshare the mount namespace of a multi-threaded process.
pub fn enter_private_mount_namespace() -> Result<(), SandboxError> {
    use rustix::mount::MountPropagationFlags;
    sys::unshare(rustix::thread::UnshareFlags::NEWNS)
        .map_err(SandboxError::io("create a private mount namespace"))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| SandboxError::io("make / a slave mount")(e.into()))
}
