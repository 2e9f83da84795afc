//! Error types: [`SandboxError`] for everything the host side sees, and [`InitFailure`], the
//! serializable subset that the in-namespace init reports back over its status pipe.

use std::io;

use kiln_error::ErrorKind;
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
    /// What kind of failure this is. A spec the caller got wrong and a process that cannot be
    /// started as configured (unknown user, missing executable) are
    /// [`ErrorKind::InvalidArgument`], as Docker's daemon classifies a container start that
    /// fails for its configuration; a missing or failing network helper is
    /// [`ErrorKind::Unavailable`]; an init that fails or dies otherwise is
    /// [`ErrorKind::Internal`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::Io { source, .. } => ErrorKind::of_io(source),
            SandboxError::InvalidSpec(_) => ErrorKind::InvalidArgument,
            SandboxError::Init(failure) => failure.kind(),
            SandboxError::NetworkHelperMissing { .. }
            | SandboxError::NetworkUnavailable(_)
            | SandboxError::NetworkSetup(_) => ErrorKind::Unavailable,
            SandboxError::InitDied { .. }
            | SandboxError::RootlessSetup(_)
            | SandboxError::Protocol(_) => ErrorKind::Internal,
        }
    }

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
    /// [`ErrorKind::InvalidArgument`] for a user, group or executable the configuration names
    /// but the root filesystem does not have (or cannot execute); [`ErrorKind::Internal`] for
    /// a failed setup step.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InitFailure::UserNotFound { .. }
            | InitFailure::GroupNotFound { .. }
            | InitFailure::InvalidUser { .. }
            | InitFailure::ExecutableNotFound { .. }
            | InitFailure::Exec { .. } => ErrorKind::InvalidArgument,
            InitFailure::Setup { .. } => ErrorKind::Internal,
        }
    }

    /// Adapter for `map_err` describing a failed setup step.
    pub(crate) fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> InitFailure {
        let step = step.into();
        move |e| InitFailure::Setup {
            step,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_cannot_start_as_configured_is_the_callers_error() {
        let not_found = SandboxError::Init(InitFailure::ExecutableNotFound {
            name: "nope".into(),
        });
        assert_eq!(not_found.kind(), ErrorKind::InvalidArgument);
        let no_user = SandboxError::Init(InitFailure::UserNotFound { user: "app".into() });
        assert_eq!(no_user.kind(), ErrorKind::InvalidArgument);
        let setup = SandboxError::Init(InitFailure::Setup {
            step: "pivot_root".into(),
            message: "EINVAL".into(),
        });
        assert_eq!(setup.kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_missing_network_helper_is_unavailable_and_io_keeps_its_kind() {
        let missing = SandboxError::NetworkHelperMissing {
            program: "slirp4netns",
            package: "slirp4netns",
        };
        assert_eq!(missing.kind(), ErrorKind::Unavailable);
        let io = SandboxError::io("/sys/fs/cgroup/kiln")(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(io.kind(), ErrorKind::NotFound);
    }
}
