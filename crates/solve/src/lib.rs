//! The build engine: turns a Dockerfile and a context into an image in the store.
//!
//! [`Engine::build`] parses and plans the Dockerfile, resolves base images (locally or from a
//! registry), then builds each needed stage step by step: every step that changes the filesystem
//! has a cache key; a hit reuses the recorded layer, a miss runs the step (in the sandbox for
//! `RUN`, through an overlay mount for `COPY`/`ADD`/`WORKDIR`) and commits the overlay's upper dir
//! as a layer. The engine never prints: it reports [`ProgressEvent`]s.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod build;
mod cache;
mod cancel;
mod compress;
pub mod context;
mod context_tar;
pub mod copy;
mod cpu_load;
pub mod dockerignore;
mod download;
mod emulation;
mod epoch;
mod error;
mod exec;
pub mod explain;
mod failed_step;
mod fsops;
mod heredoc;
pub mod history;
mod metadata;
pub mod mounts;
pub mod named_context;
mod onbuild;
pub mod outline;
mod pins;
mod progress;
pub mod remote_cache;
pub mod remote_context;
mod scan_stages;
mod schedule;
mod shared_layers;
pub mod ssh;
mod stage;

pub use build::{BuildRequest, BuildResult, BuildSettings, Engine, location_in};
pub use cache::{FileFingerprint, InputValue, KeyInput};
pub use cancel::{CancelOnDrop, CancelToken};
pub use context_tar::{UnpackedContext, looks_like_archive};
pub use emulation::cannot_run_as;
pub use epoch::{EpochError, EpochOrigin, SOURCE_DATE_EPOCH, SourceDateEpoch};
pub use error::{Location, Result, SolveError};
pub use explain::MissCause;
pub use failed_step::{FailedRun, OnRunFailure};
pub use pins::ResolvedBase;
pub use progress::{OutputStream, Progress, ProgressEvent, StepLabel};
pub use remote_cache::{CacheExport, CacheImport, CacheLocation, CacheMode};
pub use scan_stages::StageLayers;
pub use stage::DEFAULT_PATH;
