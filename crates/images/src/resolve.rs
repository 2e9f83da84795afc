//! Finding an image for a platform locally, or pulling it.

use kiln_image::{Digest, ImageConfig, Platform, Reference};
use kiln_registry::{PullEvent, RegistryClient};
use kiln_store::Store;

use crate::error::{ImageError, Result};
use crate::stored::{StoredImage, config_platform};

/// What a pull reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEvent {
    /// The image is being pulled (familiar name).
    Pulling { reference: String },
    /// A blob of the pulled image was fetched, or was already in the store (`cached`).
    BlobFetched { digest: Digest, cached: bool },
}

/// Where pull events go.
pub type ImageEvents<'a> = &'a (dyn Fn(ImageEvent) + Send + Sync);

/// Finds `reference` locally or pulls it. With `pull`, tags are re-resolved against the
/// registry. A local image for another platform is pulled again for `platform`. From
/// synchronous code, on `rt`; not for a runtime worker thread: async callers await [`resolve`].
pub fn resolve_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
    on_event: ImageEvents<'_>,
) -> Result<StoredImage> {
    rt.block_on(resolve(
        store, registry, reference, platform, pull, on_event,
    ))
}

/// [`resolve_image`] for async callers. Dropping the future stops a pull in progress (blobs
/// are published only once complete, so nothing half-written stays).
pub async fn resolve(
    store: &Store,
    registry: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
    on_event: ImageEvents<'_>,
) -> Result<StoredImage> {
    let mut local_platform = None;
    if (!pull || reference.digest().is_some())
        && let Some(digest) = local_digest(store, reference)?
    {
        match StoredImage::load_for_platform(store, &digest, platform) {
            Ok(img) if is_for_platform(&img.config, platform) => return Ok(img),
            Ok(img) => local_platform = Some(config_platform(&img.config).to_string()),
            // A local index (a multi-platform build) without the platform: say what it has.
            Err(ImageError::PlatformNotInIndex { available, .. }) => {
                local_platform = Some(format!("an index of {available}"))
            }
            Err(e) => return Err(e),
        }
    }
    self::pull(store, registry, reference, platform, on_event)
        .await
        .map_err(|e| match local_platform {
            // Say why a local image was not used, or the pull error alone is puzzling.
            Some(local) => ImageError::LocalImageForOtherPlatform {
                image: reference.familiar(),
                local,
                platform: platform.to_string(),
                pull_error: Box::new(e),
            },
            None => e,
        })
}

/// What a local name (or a stored digest) points at.
fn local_digest(store: &Store, reference: &Reference) -> Result<Option<Digest>> {
    if let Some(digest) = reference.digest() {
        return Ok(store.has_blob(digest).then(|| digest.clone()));
    }
    Ok(store.get_name(&reference.to_string())?)
}

/// Whether an image's config is for `platform`. A local name holds one platform's image, so
/// a build for another platform pulls again. Configs that name no platform (some imported
/// images) fit any.
fn is_for_platform(config: &ImageConfig, platform: &Platform) -> bool {
    if config.architecture.is_empty() || config.os.is_empty() {
        return true;
    }
    platform.matches(&config_platform(config))
}

/// [`pull`] from synchronous code, on `rt`. Not for a runtime worker thread: async callers
/// await [`pull`] itself.
pub fn pull_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    on_event: ImageEvents<'_>,
) -> Result<StoredImage> {
    rt.block_on(pull(store, registry, reference, platform, on_event))
}

/// Pulls `reference` into the store and names it locally (tags only; digests need no name).
pub async fn pull(
    store: &Store,
    registry: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
    on_event: ImageEvents<'_>,
) -> Result<StoredImage> {
    on_event(ImageEvent::Pulling {
        reference: reference.familiar(),
    });
    let on_pull = |e: PullEvent| match e {
        PullEvent::LayerDone { digest } => on_event(ImageEvent::BlobFetched {
            digest,
            cached: false,
        }),
        PullEvent::LayerCached { digest } => on_event(ImageEvent::BlobFetched {
            digest,
            cached: true,
        }),
        _ => {}
    };
    let pulled = registry.pull(store, reference, platform, &on_pull).await?;
    // The name points at the index when the image came with attestations, so inspect
    // --sbom/--provenance read them and a push sends them; a digest reference needs no name.
    if reference.digest().is_none() {
        store.set_name(&reference.to_string(), &pulled.root_digest)?;
    }
    let mut image = StoredImage::load(store, &pulled.root_digest)?;
    if image.manifest_digest != pulled.manifest_digest {
        // An index kept for its attestations but holding an image for another platform than
        // this host's (`--platform`): the pulled image, reached through that index.
        image = StoredImage::load(store, &pulled.manifest_digest)?;
        image.index_digest = Some(pulled.root_digest.clone());
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_a_platform_fits_any() {
        let linux_arm = "linux/arm64".parse::<Platform>().unwrap();
        let mut config = ImageConfig::default();
        assert!(is_for_platform(&config, &linux_arm));
        config.os = "linux".into();
        config.architecture = "amd64".into();
        assert!(!is_for_platform(&config, &linux_arm));
        config.architecture = "arm64".into();
        assert!(is_for_platform(&config, &linux_arm));
    }
}
