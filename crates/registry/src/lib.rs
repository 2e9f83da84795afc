//! kiln's OCI distribution client: pulls images from registries into the store and pushes them
//! from it.
//!
//! - [`reference`](mod@reference): image references and Docker's normalisation rules.
//! - [`RegistryClient`] (`transport`): scheme choice, URLs, the request-sending seam.
//! - [`credentials`]: `~/.docker/config.json` and credential helpers, as the Docker CLI uses them.
//! - `auth`: `WWW-Authenticate` challenges and the Bearer token flow (anonymous, with
//!   credentials, or with an identity token).
//! - `tls`: per-registry CAs and client certificates from `certs.d`.
//! - `pull` / `push`: the two operations, streaming blobs to and from the store.
//! - `upload`: chunked uploads that resume after a dropped connection.
//! - `artifact`: one manifest or one blob at a time, for the build cache's artifacts.
//! - `format`: OCI ↔ Docker v2 schema 2 media types for `push --format`.
//!
//! Everything fetched is verified against its digest before it gets a name in the store.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod artifact;
mod auth;
mod content;
pub mod credentials;
mod error;
mod format;
mod pull;
mod push;
pub mod reference;
mod repo;
mod response;
mod tls;
mod transport;
mod upload;
mod urls;

pub use artifact::FetchedImageManifest;
pub use credentials::{Credential, CredentialStore};
pub use error::RegistryError;
pub use format::{PushFormat, manifest_in_format};
pub use pull::{PullEvent, PulledImage};
pub use push::PushEvent;
pub use reference::{Reference, ReferenceError};
pub use response::error_chain;
pub use transport::{DEFAULT_CERTS_DIR, RegistryClient, RegistryConfig};
