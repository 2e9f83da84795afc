//! Test helpers for kiln's end-to-end and integration tests (a dev-only crate).
//!
//! Everything here drives real tools installed from Debian packages, so tests check kiln
//! against independent implementations rather than against itself:
//!
//! - [`TestRegistry`]: a CNCF distribution registry (`docker-registry`) on a loopback port;
//!   [`TlsRegistry`] (TLS from a test CA, htpasswd, optional client certificates) and
//!   [`TokenRegistry`] (`auth: token` with a loopback token issuer) for the auth flows.
//! - [`busybox_rootfs_tar`], [`busybox_oci_layout`], [`push_busybox`]: a tiny base image made
//!   from `busybox-static`, as a tar, an OCI layout, or pushed to a registry;
//!   [`push_busybox_index`]: with arm64's busybox, a two-platform index.
//! - [`skopeo_inspect`], [`skopeo_copy_to_oci_layout`], [`umoci_unpack_oci_layout`],
//!   [`oci_image_tool_validate`]: third-party readers of what kiln writes.
//! - [`FaultProxy`]: a loopback TCP proxy that cuts connections, answers 503 or stalls.
//! - [`HttpsFileServer`]: files over HTTPS from a test CA (`openssl s_server`), with certs.d.
//! - [`GitDaemon`], [`GitHttpServer`], [`HttpFileServer`]: `git daemon`, `git http-backend`
//!   (CGI of `python3 -m http.server`) and plain files over HTTP on loopback, for remote
//!   build contexts.
//! - [`ScriptedHttp`]: a loopback HTTP server answering from a script, for transport error paths.
//! - [`assert_golden`]: compare output with a checked-in file, `KILN_BLESS=1` to rewrite it.
//!
//! Errors are `anyhow` errors carrying the tool's stderr, since their only reader is a human
//! looking at a failed test.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod auth;
mod busybox;
mod busybox_arm64;
mod fault_proxy;
mod golden;
mod https_files;
mod loopback_servers;
mod net;
pub mod processes;
mod registry;
mod rng;
mod scripted_http;
mod tools;

pub use auth::{TestCa, TlsRegistry, TokenRegistry, TokenRequestRecord, htpasswd_line};
pub use busybox::{busybox_oci_layout, busybox_rootfs_tar, push_busybox, rootfs_script_path};
pub use busybox_arm64::{ARM64_BUSYBOX, arm64_busybox, busybox_index_layout, push_busybox_index};
pub use fault_proxy::{Fault, FaultProxy};
pub use golden::assert_golden;
pub use https_files::HttpsFileServer;
pub use loopback_servers::{GitDaemon, GitHttpServer, HttpFileServer, git};
pub use net::free_port;
pub use registry::{RegistrySetup, TestRegistry};
pub use rng::SeededRng;
pub use scripted_http::{ScriptedHttp, response as http_response};
pub use tools::{
    oci_image_tool_validate, skopeo_copy_oci_layout_to, skopeo_copy_to_oci_layout, skopeo_inspect,
    skopeo_inspect_raw, umoci_insert_whiteout, umoci_unpack_oci_layout,
};
