//! OCI image types, pure: no I/O, no clocks.
//!
//! The store holds bytes; this crate gives them types. Every type here serialises
//! deterministically (maps are `BTreeMap`s, optional fields are omitted when empty) so that the
//! same image always has the same digest. Unknown fields of a base image's config are kept in a
//! flattened catch-all so a round trip through kiln loses nothing (Docker's `Healthcheck`,
//! `OnBuild`, `Shell`, …). `oci-spec` is used only in tests, as an independent reader of what
//! kiln writes: its maps are `HashMap`s, which would make digests unstable.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod attestation;
mod config;
mod digest;
mod layer_ref;
pub mod layout;
mod manifest;
mod platform;
pub mod reference;
mod validate;

pub use config::{ContainerConfig, HealthConfig, History, ImageConfig, RootFs};
pub use digest::{DiffId, Digest, DigestError, Sha256Hasher};
pub use layer_ref::LayerRef;
pub use manifest::{Descriptor, Index, Manifest, media_type};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use validate::{InvalidImage, check_diff_id, parse_config, parse_manifest};

/// Serialises a value to the canonical JSON kiln stores and hashes: compact, keys sorted.
pub fn to_canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Going through `Value` sorts every object's keys (serde_json's map is a BTreeMap), which
    // also covers structs whose field order would otherwise be declaration order.
    let value = serde_json::to_value(value).expect("image types always serialise");
    serde_json::to_vec(&value).expect("a Value always serialises")
}
