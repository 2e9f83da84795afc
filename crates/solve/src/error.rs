//! The engine's error type. Errors that come from a Dockerfile instruction carry its location
//! so the binary can point at the line like a compiler.

use std::path::PathBuf;

use kiln_error::ErrorKind;

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
    /// A system call or file operation of the engine failed; `what` names the object. (The
    /// cause is part of the message, so it is not also reported as the source.)
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// Finding, pulling, unpacking or writing an image. (Boxed, like the registry's error,
    /// so that every `Result` of the engine stays small.)
    #[error(transparent)]
    Image(Box<kiln_images::ImageError>),
    #[error(transparent)]
    Reference(#[from] kiln_image::ReferenceError),
    #[error(transparent)]
    Registry(Box<kiln_registry::RegistryError>),
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
    #[error(transparent)]
    Layer(#[from] kiln_layer::LayerError),
    #[error(transparent)]
    Sandbox(#[from] kiln_sandbox::SandboxError),
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A malformed `SOURCE_DATE_EPOCH`, rejected before anything is built.
    #[error(transparent)]
    SourceDateEpoch(#[from] crate::epoch::EpochError),
    /// Copying into a mount's directory failed. The cause is part of the message, so it is not
    /// also reported as the source.
    #[error("{0}")]
    Copy(crate::copy::CopyError),
    /// A `RUN --mount=type=cache,from=…` source that is not a directory.
    #[error("cache source {path} is not a directory")]
    CacheSourceNotADirectory { path: String },
    /// A `--cache-to` export (or a blob of a `--cache-from` import the build needed) failed.
    #[error("cache {location}: {message}")]
    Cache { location: String, message: String },
    /// The step was not started because the build is stopping (another stage failed).
    #[error("cancelled: {reason}")]
    Abandoned { reason: String },
    /// The build's [`crate::CancelToken`] was cancelled; whatever was interrupted left
    /// nothing half-written in the store.
    #[error("build cancelled")]
    Cancelled,
    /// A stage this stage reads did not finish (its own error is the build's error).
    #[error("stage {stage} failed before this stage could use it")]
    DependencyFailed { stage: usize },
    /// The engine lost track of a stage it built: a bug in the scheduler.
    #[error("stage {stage} was not built before it was needed")]
    StageNotBuilt { stage: usize },
    /// Likewise for the target stage, once every stage has finished.
    #[error("the target stage was not built")]
    TargetNotBuilt,
    /// A request naming no target platform at all.
    #[error("no target platform: a build needs at least one")]
    NoPlatform,
}

impl SolveError {
    /// What kind of failure this is. A Dockerfile the engine cannot carry out — including a
    /// `RUN` that exits non-zero, which fails the same way when repeated — is
    /// [`ErrorKind::InvalidArgument`]; a base image missing locally [`ErrorKind::NotFound`];
    /// a cache export or import that failed [`ErrorKind::Unavailable`]; a stage abandoned
    /// because the build is stopping [`ErrorKind::Cancelled`]. Errors of the libraries the
    /// engine drives keep their own kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SolveError::Dockerfile { .. }
            | SolveError::RunFailed { .. }
            | SolveError::CacheSourceNotADirectory { .. } => ErrorKind::InvalidArgument,
            SolveError::Step { source, .. } => source.kind(),
            SolveError::ReadFile { source, .. } | SolveError::Io { cause: source, .. } => {
                ErrorKind::of_io(source)
            }
            SolveError::StageNotBuilt { .. } | SolveError::TargetNotBuilt => ErrorKind::Internal,
            SolveError::NoPlatform => ErrorKind::InvalidArgument,
            SolveError::Image(e) => e.kind(),
            SolveError::Reference(e) => e.kind(),
            SolveError::Registry(e) => e.kind(),
            SolveError::Store(e) => e.kind(),
            SolveError::Layer(e) => e.kind(),
            SolveError::Sandbox(e) => e.kind(),
            SolveError::Context(e) => e.kind(),
            SolveError::SourceDateEpoch(e) => e.kind(),
            SolveError::Copy(e) => e.kind(),
            SolveError::Cache { .. } => ErrorKind::Unavailable,
            SolveError::Cancelled
            | SolveError::Abandoned { .. }
            | SolveError::DependencyFailed { .. } => ErrorKind::Cancelled,
        }
    }

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

impl From<kiln_images::ImageError> for SolveError {
    fn from(e: kiln_images::ImageError) -> Self {
        SolveError::Image(Box::new(e))
    }
}

impl From<kiln_registry::RegistryError> for SolveError {
    fn from(e: kiln_registry::RegistryError) -> Self {
        SolveError::Registry(Box::new(e))
    }
}

pub type Result<T, E = SolveError> = std::result::Result<T, E>;

// The kinds of the engine's other public errors live here, beside `SolveError::kind`, so that
// the rules read in one place.

impl crate::context::ContextError {
    /// A missing context directory or a COPY source matching nothing is
    /// [`ErrorKind::NotFound`]; a bad pattern, symlink loop or non-directory context is
    /// [`ErrorKind::InvalidArgument`]; other I/O is what [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        use crate::context::ContextError as E;
        match self {
            E::OpenRoot { source, .. } | E::Io { source, .. } => ErrorKind::of_io(source),
            E::NoSourceMatch { .. } => ErrorKind::NotFound,
            E::RootNotDirectory { .. } | E::BadPattern { .. } | E::SymlinkLoop { .. } => {
                ErrorKind::InvalidArgument
            }
            E::Ignore(e) => e.kind(),
            E::Cancelled => ErrorKind::Cancelled,
        }
    }
}

impl crate::copy::CopyError {
    /// [`ErrorKind::InvalidArgument`] for a copy the destination or the flags make impossible
    /// (`--chown`/`--chmod` values, a directory in the way); a source error keeps its kind and
    /// I/O is what [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        use crate::copy::CopyError as E;
        match self {
            E::Source(e) => e.kind(),
            E::Io { source, .. } => ErrorKind::of_io(source),
            E::NotADirectory { .. }
            | E::DirectoryInTheWay { .. }
            | E::SymlinkLoop { .. }
            | E::BadOwner { .. }
            | E::UnknownUser { .. }
            | E::UnknownGroup { .. }
            | E::BadChmod { .. } => ErrorKind::InvalidArgument,
        }
    }
}

impl crate::dockerignore::IgnoreError {
    /// A malformed `.dockerignore` or `--exclude` is [`ErrorKind::InvalidArgument`]; reading
    /// the file is what [`ErrorKind::of_io`] says.
    pub fn kind(&self) -> ErrorKind {
        use crate::dockerignore::IgnoreError as E;
        match self {
            E::BareExclusion { .. } | E::BadPattern { .. } | E::BadExclude { .. } => {
                ErrorKind::InvalidArgument
            }
            E::Read { source, .. } => ErrorKind::of_io(source),
        }
    }
}

impl crate::dockerignore::GlobError {
    /// Always [`ErrorKind::InvalidArgument`]: the pattern came from the caller.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

impl crate::mounts::MountError {
    /// Always [`ErrorKind::InvalidArgument`]: the `--mount` value came from the Dockerfile.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{BuildContext, ContextError};
    use crate::copy::{CopyError, parse_chown};
    use crate::dockerignore::IgnoreMatcher;
    use crate::mounts::parse_mount;

    #[test]
    fn context_errors_say_what_is_missing_and_what_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = BuildContext::open(&dir.path().join("nope")).unwrap_err();
        assert!(
            matches!(missing, ContextError::OpenRoot { .. }),
            "{missing}"
        );
        assert_eq!(missing.kind(), ErrorKind::NotFound);

        std::fs::write(dir.path().join("file"), "x").unwrap();
        let not_dir = BuildContext::open(&dir.path().join("file")).unwrap_err();
        assert_eq!(not_dir.kind(), ErrorKind::InvalidArgument, "{not_dir}");

        let context = BuildContext::open(dir.path()).unwrap();
        let no_match = context.resolve_sources(&["absent.txt".into()]).unwrap_err();
        assert!(
            matches!(no_match, ContextError::NoSourceMatch { .. }),
            "{no_match}"
        );
        assert_eq!(no_match.kind(), ErrorKind::NotFound);
        let through_copy = SolveError::Copy(CopyError::Source(no_match));
        assert_eq!(through_copy.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn malformed_flags_and_files_are_invalid_arguments() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        let chown = parse_chown("nobody", root.path()).unwrap_err();
        assert_eq!(chown.kind(), ErrorKind::InvalidArgument, "{chown}");
        let ignore = IgnoreMatcher::parse("ok\n!\n").unwrap_err();
        assert_eq!(ignore.kind(), ErrorKind::InvalidArgument, "{ignore}");
        let mount =
            parse_mount("type=tmpfs,target=/t,size=lots", &|w| Ok(w.to_owned())).unwrap_err();
        assert_eq!(mount.kind(), ErrorKind::InvalidArgument, "{mount}");
    }

    #[test]
    fn engine_errors_keep_the_kind_of_what_failed_under_them() {
        let missing_blob: SolveError =
            kiln_store::StoreError::BlobNotFound(kiln_image::Digest::of(b"x")).into();
        assert_eq!(missing_blob.kind(), ErrorKind::NotFound);
        let step = SolveError::Step {
            step: "[2/3] RUN make".into(),
            location: Box::new(Location {
                file: "Dockerfile".into(),
                line: 2,
                col: 1,
                len: 3,
                line_text: "RUN make".into(),
            }),
            source: Box::new(missing_blob),
        };
        assert_eq!(step.kind(), ErrorKind::NotFound);
        let after_pull = SolveError::from(kiln_images::ImageError::LocalImageForOtherPlatform {
            image: "app".into(),
            local: "linux/arm64".into(),
            platform: "linux/amd64".into(),
            pull_error: Box::new(kiln_images::ImageError::NotFound("app".into())),
        });
        assert_eq!(after_pull.kind(), ErrorKind::NotFound);
        assert_eq!(SolveError::Cancelled.kind(), ErrorKind::Cancelled);
        let stopped = SolveError::Abandoned {
            reason: "another stage failed".into(),
        };
        assert_eq!(stopped.kind(), ErrorKind::Cancelled);
        assert_eq!(stopped.to_string(), "cancelled: another stage failed");
        assert_eq!(
            SolveError::DependencyFailed { stage: 1 }.kind(),
            ErrorKind::Cancelled
        );
        assert_eq!(SolveError::TargetNotBuilt.kind(), ErrorKind::Internal);
    }
}
