//! The runtime's one error type. Every variant has a kind, so the CLI and the coming Engine API
//! branch on what went wrong (docker-py and compose look at 404 and 409) without parsing text.

use std::path::PathBuf;

use kiln_error::ErrorKind;
use kiln_store::{ContainerError, StateError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such container, an ambiguous prefix, a name in use (the store's container errors).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The container's state forbids the operation (running, not running).
    #[error("{}", state_message(name, source))]
    State {
        name: String,
        #[source]
        source: StateError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    #[error(transparent)]
    Network(#[from] kiln_network::NetworkError),
    #[error(transparent)]
    Image(#[from] kiln_images::ImageError),
    #[error(transparent)]
    Layer(#[from] kiln_layer::LayerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// dockerd's text, which clients match.
    #[error("logger: no log driver named '{0}' is registered")]
    LogDriver(String),
    /// A link to a container that cannot be linked that way.
    #[error("cannot link to container {name}: {reason}")]
    Link { name: String, reason: &'static str },
    #[error("invalid mount {spec:?}: {reason}")]
    InvalidMount { spec: String, reason: String },
    #[error(
        "no command specified: the image has no ENTRYPOINT or CMD; give one after the image name"
    )]
    NoCommand,
    /// The container's recorded spec cannot be read back.
    #[error("{path}: {message}")]
    CorruptSpec { path: PathBuf, message: String },
    /// The container could not start; `exit_code` is Docker's (125, 126, 127).
    #[error("{message}")]
    StartFailed { message: String, exit_code: i32 },
    /// The supervisor ended before it started the container.
    #[error("the supervisor of container {name} exited before starting it ({status}): {log}")]
    SupervisorDied {
        name: String,
        status: String,
        log: String,
    },
    /// The supervisor did not report within its start time.
    #[error("the supervisor of container {name} did not start it within {seconds} s")]
    SupervisorTimeout { name: String, seconds: u64 },
    /// Waited for a container that was removed and left no exit code.
    #[error("container {0} was removed when it exited")]
    RemovedWithoutCode(String),
    #[error("no such exec instance: {0}")]
    NoSuchExec(String),
    #[error("exec instance {0} was already started")]
    ExecStarted(String),
    #[error("container {0} has no log (it never started)")]
    NoLog(String),
    /// The caller stopped waiting (its client went away).
    #[error("stopped waiting for container {0}")]
    WaitCancelled(String),
    /// A path that is not in the container's filesystem (dockerd's words).
    #[error("Could not find the file {path} in container {container}")]
    NoSuchPath { path: String, container: String },
}

impl RuntimeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Container(e) => e.kind(),
            RuntimeError::State { source, .. } => source.kind(),
            RuntimeError::Store(e) => e.kind(),
            RuntimeError::Sandbox(e) => e.kind(),
            RuntimeError::Network(e) => e.kind(),
            RuntimeError::Image(e) => e.kind(),
            RuntimeError::Layer(e) => e.kind(),
            RuntimeError::Invalid { .. }
            | RuntimeError::LogDriver(_)
            | RuntimeError::InvalidMount { .. }
            | RuntimeError::Link { .. }
            | RuntimeError::NoCommand => ErrorKind::InvalidArgument,
            RuntimeError::NoLog(_)
            | RuntimeError::NoSuchPath { .. }
            | RuntimeError::RemovedWithoutCode(_)
            | RuntimeError::NoSuchExec(_) => ErrorKind::NotFound,
            RuntimeError::ExecStarted(_) => ErrorKind::Conflict,
            RuntimeError::WaitCancelled(_) => ErrorKind::Cancelled,
            RuntimeError::StartFailed { exit_code, .. } if *exit_code != 125 => {
                ErrorKind::InvalidArgument
            }
            RuntimeError::Io { .. }
            | RuntimeError::CorruptSpec { .. }
            | RuntimeError::StartFailed { .. }
            | RuntimeError::SupervisorDied { .. }
            | RuntimeError::SupervisorTimeout { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { path, source }
    }

    pub(crate) fn state(name: &str) -> impl FnOnce(StateError) -> RuntimeError {
        let name = name.to_owned();
        move |source| RuntimeError::State { name, source }
    }
}

/// Docker's wording: `container web is not running`, and for a refused removal
/// `cannot remove container "/web": container is running: …`.
fn state_message(name: &str, error: &StateError) -> String {
    match error {
        StateError::RemoveRunning => {
            format!("cannot remove container \"/{name}\": container {error}")
        }
        _ => format!("container {name} {error}"),
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
