//! kiln's OCI distribution client: pulls images from registries into the store and pushes them
//! from it.
//!
//! - [`reference`]: image references and Docker's normalisation rules.
//! - [`RegistryClient`] (`transport`): scheme choice, URLs, the request-sending seam.
//! - `auth`: `WWW-Authenticate` challenges and anonymous Bearer tokens.
//! - `pull` / `push`: the two operations, streaming blobs to and from the store.
//!
//! Everything fetched is verified against its digest before it gets a name in the store.

mod auth;
mod content;
mod error;
mod pull;
mod push;
pub mod reference;
mod transport;

pub use error::RegistryError;
pub use pull::{PullEvent, PulledImage};
pub use push::PushEvent;
pub use reference::{Reference, ReferenceError};
pub use transport::{RegistryClient, RegistryConfig};
