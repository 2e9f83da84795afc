//! Build attestations: what is inside an image (an SBOM) and how it was made (a provenance),
//! as in-toto statements attached to the image the way BuildKit attaches them.
//!
//! - `rootfs`: the image's filesystem merged from its layers' snapshot directories (overlay
//!   rules applied in user space: no mount, no second unpack);
//! - `scan`: installed packages — dpkg, apk, Python distributions, npm packages and lockfiles,
//!   Go build info, `cargo auditable` data — each parser a pure function of file bytes;
//! - `spdx`, `provenance`, `statement`: SPDX 2.3 documents, SLSA v0.2 and v1 provenance predicates,
//!   in-toto statements;
//! - `options`: the `--sbom`, `--provenance` and `--attest` flags and buildx's defaults;
//! - `files`: the statements as files beside a filesystem output (`type=local|tar`), as
//!   BuildKit writes them;
//! - `attach`: the image index with its attestation manifest, written to the store and read
//!   back.
//!
//! The key decision: attestations are made after the build from what the build left — the
//! final image's snapshots, its manifest, the base images it pinned — so the engine needs no
//! knowledge of them, and scanning costs one walk of the final filesystem.

// A library reports through its return values; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod attach;
mod error;
pub mod files;
pub mod make;
pub mod options;
pub mod provenance;
pub mod rootfs;
pub mod scan;
pub mod spdx;
pub mod statement;

pub use error::{AttestError, Result};
