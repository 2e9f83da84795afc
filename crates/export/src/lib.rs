//! Images leaving and entering the store other than through a registry.
//!
//! - [`write_archive`]: images as one tar, either an OCI image layout (`--output type=oci`) or the
//!   `docker save` format (`--output type=docker`, `kiln save`), streaming every blob from the
//!   store into the tar.
//! - [`read_archive`]: the reverse (`kiln load`), for both formats. Every blob is streamed into a
//!   staged store file and checked against its digest; nothing is published until the whole
//!   archive has been read and every manifest's blobs are accounted for
//!   ([`StagedArchive::commit`]), so a bad archive leaves the store as it was.
//! - [`export_filesystem`]: an image's final filesystem in a directory (`--output type=local`).
//!
//! Names are plain strings here: the caller (the `kiln` binary) normalises them as references.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod load;
mod local;
mod write;

use std::io;

use kiln_image::Digest;

pub use load::{LoadedImage, StagedArchive, read_archive};
pub use local::export_filesystem;
pub use write::{ArchiveFormat, write_archive};

/// Errors from exporting or loading images. Each names the archive entry, blob or image.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the archive: {0}")]
    Write(io::Error),
    #[error("reading the archive: {0} (is it truncated or not a tar?)")]
    Read(io::Error),
    #[error("archive entry {entry:?} refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("archive entry {entry:?} has digest {actual}, not the {expected} its name says")]
    DigestMismatch {
        entry: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} is not in the archive (referenced by {referenced_by})")]
    MissingBlob { what: String, referenced_by: String },
    #[error("{entry} is invalid: {message}")]
    Invalid { entry: String, message: String },
    #[error("{0}")]
    Format(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Layer(#[from] kiln_layer::LayerError),
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;
