//! The image service: everything kiln does with images in its store, for the solver, the CLI
//! and (later) the daemon alike.
//!
//! - finding an image by name, ID or ID prefix (an ambiguous prefix is an error, as for
//!   containers), and its names: tag, untag, remove with Docker's in-use rules (`names`);
//! - the `kiln images` listing with `reference`, `dangling` and `label` filters (`list`);
//! - resolving a reference for a platform locally or pulling it (`resolve`), pushing under
//!   names (`push`), both reporting progress as events;
//! - layers unpacked into snapshots and the lower dirs of an overlay over an image
//!   (`snapshots`);
//! - new images: written from a config and layers, committed from a container's changes,
//!   imported from a rootfs tarball, converted to another layer compression (`write`).
//!
//! The key decision: images are reached through the store's names and containers' records
//! only, never through the build engine, so running, committing, importing and pushing need
//! no solver; the solver itself resolves its base images through this crate. What makes a
//! manifest and a config one image is checked in `kiln_image` (`parse_config`,
//! `check_diff_id`), shared with the exporter.

// A library reports through its return values and events; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod list;
mod names;
mod prune;
mod push;
mod resolve;
mod snapshots;
mod stored;
mod write;

#[cfg(test)]
mod test_support;

pub use error::{ImageError, Result};
pub use list::{ImageSummary, ListFilter, list_images};
pub use names::{Removed, find_image, names_of, remove, tag, untag, users};
pub use prune::{ImagesPruned, PruneFilter, prune_images};
pub use push::{PushProgress, Pushed, push_image};
pub use resolve::{ImageEvent, ImageEvents, pull, pull_image, resolve, resolve_image};
pub use snapshots::{ensure_snapshot, lower_dirs};
pub use stored::{StoredImage, config_platform};
pub use write::{
    commit_layer, image_in_compression, import_rootfs, oci_layer_media_type, write_image,
    write_image_annotated, write_index,
};
