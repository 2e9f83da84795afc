//! Filesystem ⇄ OCI layer tar.
//!
//! - [`write_layer`] turns the upper dir of an overlay mount into one compressed layer blob in the
//!   store (whiteouts and opaque dirs converted to their `.wh.` names), hashing the tar (diffID)
//!   and the blob (digest) in the same streaming pass. [`write_tar`] is the seam underneath it, for
//!   any directory and any writer.
//! - [`layer_in_compression`] gives the blob of a layer compressed as a build or push asks,
//!   re-encoding it once per setting and recording the result in the store.
//! - [`unpack_layer`] turns a layer blob back into a directory that can serve as an overlay lower
//!   dir (`.wh.` names become overlay whiteouts and opaque xattrs).
//! - [`extract_archive`] extracts a tarball for `ADD` into an existing root filesystem, with every
//!   path resolved inside that root as a chroot would.
//! - [`extract_build_context`] unpacks a build context sent as a tar, refusing any entry that
//!   could reach outside it.
//! - [`fill_volume`] seeds an empty volume with an image's directory, safely against the
//!   containers that may have that volume mounted and be writing to it.
//!
//! Extraction never writes outside its root: every parent directory is opened with `openat2`
//! (`RESOLVE_IN_ROOT`), and the final component of an entry is never followed.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod archive;
mod changes;
mod compression;
mod context_tar;
mod copy;
mod encode;
mod extract;
mod hashing;
mod import;
mod safe_fs;
mod space_guard;
mod unpack;
mod userns;
mod variants;
mod volume_fill;
mod write;
mod xattrs;

#[cfg(test)]
mod test_support;

use std::io;
use std::path::PathBuf;

use kiln_error::ErrorKind;

pub use archive::{extract_archive, is_archive};
pub use changes::{Change, ChangeKind, upper_changes};
pub use compression::{
    Algorithm, Compression, CompressionRequest, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL,
};
pub use context_tar::{extract_build_context, sync_build_context};
pub use copy::{CopyInOptions, PathStat, copy_into_root, stat_in_root, tar_path_in_root, tar_root};
pub use encode::{compress_stream, compression_threads};
pub use import::import_tar;
pub use unpack::{apply_layer, apply_layer_limited, unpack_layer};
pub use variants::{LayerInCompression, layer_in_compression};
pub use volume_fill::{VolumeFill, fill_volume};
pub use write::{
    SourceKind, TarOptions, write_layer, write_layer_from, write_layer_with, write_tar,
    write_tar_with,
};

/// Errors from building or extracting layers. Each names the path or tar entry involved.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem or stream operation on `path` failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Extracting one entry of an archive failed.
    #[error("archive entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    /// An archive entry tries to reach outside the extraction root, or is otherwise refused.
    #[error("archive entry {entry:?} refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// Reading the archive stream itself (decompression, tar framing) failed.
    #[error("reading the archive: {0}")]
    Archive(io::Error),
    /// The directory uses a feature that cannot be expressed as a layer.
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// An unknown compression or a level the algorithm does not have.
    #[error("{0}")]
    InvalidCompression(String),
    /// The uncompressed archive is larger than the caller allows
    /// ([`apply_layer_limited`]).
    #[error("the uncompressed archive is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

impl LayerError {
    /// What kind of failure this is. An archive or directory kiln refuses, a malformed archive
    /// stream and an unknown compression are the caller's input
    /// ([`ErrorKind::InvalidArgument`]); I/O on a path is what [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LayerError::Io { source, .. } => ErrorKind::of_io(source),
            LayerError::Entry { source, .. } | LayerError::Archive(source) => {
                ErrorKind::of_input_io(source)
            }
            LayerError::UnsafeEntry { .. }
            | LayerError::Unsupported { .. }
            | LayerError::InvalidCompression(_)
            | LayerError::TooLarge { .. } => ErrorKind::InvalidArgument,
            LayerError::Store(e) => e.kind(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LayerError {
        let path = path.into();
        move |source| LayerError::Io { path, source }
    }

    pub(crate) fn entry(entry: &str) -> impl FnOnce(io::Error) -> LayerError + '_ {
        move |source| LayerError::Entry {
            entry: entry.to_owned(),
            source,
        }
    }
}
