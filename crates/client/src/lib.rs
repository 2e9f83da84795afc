//! An Engine API (v1.41) client: what `kiln --host` sends its commands through, to a `kiln
//! serve` (or, the protocol being Docker's, a dockerd) on a UNIX socket or behind mutual TLS.
//!
//! hyper 1's HTTP/1.1 connection API over tokio's UNIX and TCP streams, rustls (ring, as the
//! rest of kiln) for TLS. Requests are typed where the answer is read (image and container
//! rows, create results, build options); objects kiln only passes on (`inspect`) stay JSON
//! values, so every field dockerd sends reaches the user. A request body is anything
//! `Serialize` (the CLI sends the runtime's `ContainerCreateRequest`, the daemon's own type).
//! Errors keep the daemon's words: `{"message"}` bodies verbatim, with the kind their status
//! stands for.

// A library reports through its return values; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod archives;
mod build;
mod containers;
pub mod context;
mod error;
mod hijack;
mod host;
mod images;
mod stream;
mod transport;

pub use archives::VolumeSummary;
pub use build::BuildOptions;
pub use containers::{AttachedOutput, ContainerSummary, Created, LogsOptions, PendingWait};
pub use context::{Context, ContextFilter, EverythingFilter, Upload};
pub use error::{ClientError, kind_of_status};
pub use hijack::Hijacked;
pub use host::{DEFAULT_TLS_PORT, Host, TlsFiles};
pub use images::{DeleteItem, ImageSummary, RegistryAuth};
pub use stream::{ErrorDetail, JsonMessage, Output};
pub use transport::{API_VERSION, Client};
