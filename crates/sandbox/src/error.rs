//! Error types: [`SandboxError`] for everything the host side sees, and [`InitFailure`], the
//! serializable subset that the in-namespace init reports back over its status pipe.

use std::io;

use serde::{Deserialize, Serialize};

/// Anything that can go wrong while preparing, running or cleaning up a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A host-side filesystem or syscall operation failed; `what` names the object involved.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The caller's spec is unusable (for example an empty command line).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    /// The init failed before the process was started; the cause is described by the init.
    #[error(transparent)]
    Init(#[from] InitFailure),
    /// The init process died without saying why (crash, killed, protocol mismatch).
    #[error("sandbox init exited unexpectedly ({status}) before starting the process")]
    InitDied { status: String },
    /// The default network needs a user-mode networking program that is not installed.
    #[error(
        "the default network needs {program}, which is not installed \
         (Debian/Ubuntu: apt-get install {package})"
    )]
    NetworkHelperMissing {
        program: &'static str,
        package: &'static str,
    },
    /// The user-mode networking helper is installed but cannot work for this user.
    #[error("the default network is unavailable: {0}")]
    NetworkUnavailable(String),
    /// The user-mode networking helper failed to connect the sandbox.
    #[error("cannot connect the sandbox to the default network: slirp4netns failed: {0}")]
    NetworkSetup(String),
    /// A re-executed rootless kiln could not enter its user namespace.
    #[error("rootless setup failed: {0}")]
    RootlessSetup(String),
    /// The init sent something that is not a status message.
    #[error("sandbox init sent an unreadable status message: {0}")]
    Protocol(String),
}

impl SandboxError {
    /// Adapter for `map_err` that names the object an I/O error is about.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
        let what = what.into();
        move |source| SandboxError::Io { what, source }
    }
}

/// A failure inside the sandbox before the user's process was executed. It travels from the
/// init to the caller as JSON, so it carries strings rather than `io::Error`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InitFailure {
    /// A user name that is not in the container's /etc/passwd.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UserNotFound { user: String },
    /// A group name that is not in the container's /etc/group.
    #[error("unable to find group {group}: no matching entries in group file")]
    GroupNotFound { group: String },
    /// A `user[:group]` string that cannot be parsed.
    #[error("invalid user {spec:?}: {reason}")]
    InvalidUser { spec: String, reason: String },
    /// `args[0]` has no slash and is not found in the PATH of the process environment.
    #[error("exec: {name:?}: executable file not found in $PATH")]
    ExecutableNotFound { name: String },
    /// `execve` itself failed.
    #[error("exec {path:?}: {message}")]
    Exec { path: String, message: String },
    /// A setup step (namespace, mount, pivot_root, hostname, ...) failed.
    #[error("sandbox setup: {step}: {message}")]
    Setup { step: String, message: String },
}

impl InitFailure {
    /// Adapter for `map_err` describing a failed setup step.
    pub(crate) fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> InitFailure {
        let step = step.into();
        move |e| InitFailure::Setup {
            step,
            message: e.to_string(),
        }
    }
}
