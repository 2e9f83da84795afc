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

use kiln_error::ErrorKind;
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
    #[error(
        "not an image archive: it has neither manifest.json (docker save format) nor \
         index.json (OCI image layout)"
    )]
    NotAnArchive,
    #[error("oci-layout: unsupported image layout version {0:?}")]
    UnsupportedLayoutVersion(String),
    #[error("the archive holds no images")]
    NoImages,
    #[error("index {index} has no image for {platform}")]
    NoImageForPlatform { index: Digest, platform: String },
    /// An image to export whose manifest is an index or another artifact.
    #[error("{0} is not a single-platform image manifest")]
    NotAnImageManifest(Digest),
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

impl ExportError {
    /// What kind of failure this is. An archive that is malformed, incomplete, unsafe or not
    /// an image archive at all is the caller's input ([`ErrorKind::InvalidArgument`]), and so
    /// is an image that cannot be exported as asked; an index without the host's image is
    /// [`ErrorKind::NotFound`], as for a pull; writing the archive and other I/O is what
    /// [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExportError::Write(source) | ExportError::Io { source, .. } => ErrorKind::of_io(source),
            ExportError::Read(source) => ErrorKind::of_input_io(source),
            ExportError::UnsafeEntry { .. }
            | ExportError::DigestMismatch { .. }
            | ExportError::MissingBlob { .. }
            | ExportError::Invalid { .. }
            | ExportError::NotAnArchive
            | ExportError::UnsupportedLayoutVersion(_)
            | ExportError::NoImages
            | ExportError::NotAnImageManifest(_) => ErrorKind::InvalidArgument,
            ExportError::NoImageForPlatform { .. } => ErrorKind::NotFound,
            ExportError::Store(e) => e.kind(),
            ExportError::Layer(e) => e.kind(),
        }
    }
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;
