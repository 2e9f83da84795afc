//! Compatibility for in-flight branches; remove after merge.
//!
//! The image helpers that lived here moved to the image service, `kiln_images`; new code calls
//! that crate. `resolve_image` and `pull_image` keep their old signatures (engine progress,
//! engine error) for callers written against them.

pub use kiln_images::{
    StoredImage, ensure_snapshot, image_in_compression, lower_dirs, oci_layer_media_type,
    write_image,
};

use kiln_image::{Platform, Reference};
use kiln_registry::RegistryClient;
use kiln_store::Store;

use crate::error::Result;
use crate::progress::Progress;

/// [`kiln_images::resolve_image`] reporting engine progress events.
pub fn resolve_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
    progress: Progress<'_>,
) -> Result<StoredImage> {
    let on_event = |e: kiln_images::ImageEvent| progress(e.into());
    Ok(kiln_images::resolve_image(
        store, registry, rt, reference, platform, pull, &on_event,
    )?)
}

/// [`kiln_images::pull_image`] reporting engine progress events.
pub fn pull_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    progress: Progress<'_>,
) -> Result<StoredImage> {
    let on_event = |e: kiln_images::ImageEvent| progress(e.into());
    Ok(kiln_images::pull_image(
        store, registry, rt, reference, platform, &on_event,
    )?)
}
