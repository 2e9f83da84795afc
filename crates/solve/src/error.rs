//! The engine's error type. Errors that come from a Dockerfile instruction carry its location
//! so the binary can point at the line like a compiler.

use std::path::PathBuf;

/// A place in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line and column.
    pub line: usize,
    pub col: usize,
    /// Length of the highlighted part (at least 1).
    pub len: usize,
    /// The text of the line, for the snippet.
    pub line_text: String,
}

/// Why a build (or pull, push, run) failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A problem with the Dockerfile itself or with an instruction's inputs.
    #[error("{message}")]
    Dockerfile {
        location: Box<Location>,
        message: String,
    },
    /// A `RUN` command exited non-zero.
    #[error("{step}: process \"{command}\" did not complete successfully: exit code {code}")]
    RunFailed {
        step: String,
        command: String,
        code: i32,
        output_tail: Vec<String>,
        location: Box<Location>,
    },
    /// A step failed for a reason outside the Dockerfile (I/O, sandbox, layer writing).
    #[error("{step}: {source}")]
    Step {
        step: String,
        location: Box<Location>,
        source: Box<SolveError>,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {0} not found locally; pull it or build it first")]
    ImageNotFound(String),
    #[error("image {reference}: {message}")]
    BadImage { reference: String, message: String },
    #[error(transparent)]
    Reference(#[from] kiln_registry::ReferenceError),
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Layer(#[from] kiln_layer::LayerError),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A `--cache-to` export (or a blob of a `--cache-from` import the build needed) failed.
    #[error("cache {location}: {message}")]
    Cache { location: String, message: String },
    /// The build's [`crate::CancelToken`] was cancelled; whatever was interrupted left
    /// nothing half-written in the store.
    #[error("build cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

impl SolveError {
    /// The Dockerfile location the error is about, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            SolveError::Dockerfile { location, .. }
            | SolveError::RunFailed { location, .. }
            | SolveError::Step { location, .. } => Some(location),
            _ => None,
        }
    }
}

pub type Result<T, E = SolveError> = std::result::Result<T, E>;
