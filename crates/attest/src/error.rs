//! The attestation crate's errors.

use kiln_error::ErrorKind;

pub type Result<T, E = AttestError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A `--sbom`, `--provenance` or `--attest` value kiln does not understand.
    #[error("{flag} {value:?}: {reason}")]
    InvalidOption {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    /// A file of the image that could not be read (hashing an output's files).
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A blob that should be an index, a manifest or a statement is not one.
    #[error("{object} is not a valid {what}: {message}")]
    Invalid {
        object: String,
        what: &'static str,
        message: String,
    },
    /// The image carries no attestation of the kind asked for.
    #[error("image {image} has no {what} attestation (build it with {flag})")]
    NoAttestation {
        image: String,
        what: &'static str,
        flag: &'static str,
    },
}

impl AttestError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AttestError::InvalidOption { .. } | AttestError::Invalid { .. } => {
                ErrorKind::InvalidArgument
            }
            AttestError::Store(e) => e.kind(),
            AttestError::Io { source, .. } => ErrorKind::of_io(source),
            AttestError::NoAttestation { .. } => ErrorKind::NotFound,
        }
    }
}
