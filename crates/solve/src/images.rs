//! Images in the store: loading them by name or digest, pulling what is missing, unpacking their
//! layers into snapshots, and writing new ones.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use kiln_image::{
    Descriptor, Digest, ImageConfig, Manifest, Platform, media_type, to_canonical_json,
};
use kiln_registry::{PullEvent, Reference, RegistryClient};
use kiln_store::Store;

use crate::cancel::CancelToken;
use crate::error::{Result, SolveError};
use crate::progress::{Progress, ProgressEvent};

/// An image whose manifest and config are in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl StoredImage {
    /// Loads the image whose manifest is `manifest_digest`.
    pub fn load(store: &Store, manifest_digest: &Digest) -> Result<StoredImage> {
        let bad = |message: String| SolveError::BadImage {
            reference: manifest_digest.to_string(),
            message,
        };
        let bytes = store.read_blob(manifest_digest)?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest is not valid JSON: {e}")))?;
        let config_digest = manifest.config.digest.clone();
        let config_bytes = store.read_blob(&config_digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(format!("config is not valid JSON: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "config lists {} diff_ids but the manifest has {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        Ok(StoredImage {
            manifest_digest: manifest_digest.clone(),
            manifest,
            config_digest,
            config,
        })
    }

    /// Loads the image a local name points at.
    pub fn load_by_name(store: &Store, reference: &Reference) -> Result<Option<StoredImage>> {
        if let Some(digest) = reference.digest() {
            if store.has_blob(digest) {
                return StoredImage::load(store, digest).map(Some);
            }
            return Ok(None);
        }
        match store.get_name(&reference.to_string())? {
            Some(d) => StoredImage::load(store, &d).map(Some),
            None => Ok(None),
        }
    }

    /// Layers paired with their diffIDs, bottom first.
    pub fn layers(&self) -> impl Iterator<Item = (&Descriptor, &Digest)> {
        self.manifest
            .layers
            .iter()
            .zip(self.config.rootfs.diff_ids.iter())
    }

    /// Total size of the image's blobs in the store, as `kiln images` shows it: a layer the
    /// image lists several times is stored, and counted, once.
    pub fn size(&self) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        let layers = self
            .manifest
            .layers
            .iter()
            .filter(|l| seen.insert(&l.digest));
        layers.map(|l| l.size).sum::<u64>() + self.manifest.config.size
    }
}

/// The images one build has resolved, by reference and platform: every stage, `COPY --from`
/// and `RUN --mount=from=` naming the same image gets the same manifest, even if its tag moves
/// while the build runs, and it is resolved (or pulled) once however many stages name it, also
/// when they ask at the same time.
#[derive(Default)]
pub(crate) struct ImagePins {
    cells: std::sync::Mutex<std::collections::HashMap<PinKey, Arc<OnceLock<PinResult>>>>,
}

/// A reference and a platform, as text.
type PinKey = (String, String);
type PinResult = std::result::Result<StoredImage, String>;

impl ImagePins {
    /// [`resolve_image`], once per build for each reference and platform. The error is the
    /// first resolution's message, for every asker.
    pub fn resolve(
        &self,
        engine: &crate::Engine,
        reference: &Reference,
        platform: &Platform,
        pull: bool,
        progress: Progress<'_>,
    ) -> PinResult {
        let key = (reference.to_string(), platform.to_string());
        let cell = Arc::clone(
            self.cells
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        // Concurrent askers of one image block here until the first one has it.
        cell.get_or_init(|| {
            resolve_image_until(
                &engine.store,
                &engine.registry,
                &engine.rt,
                reference,
                platform,
                pull,
                progress,
                &engine.cancel,
            )
            .map_err(|e| e.to_string())
        })
        .clone()
    }
}

/// Finds `reference` locally or pulls it. With `pull`, tags are re-resolved against the registry.
pub fn resolve_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
    progress: Progress<'_>,
) -> Result<StoredImage> {
    let never = CancelToken::new();
    resolve_image_until(
        store, registry, rt, reference, platform, pull, progress, &never,
    )
}

/// [`resolve_image`], giving up with [`SolveError::Cancelled`] once `cancel` is cancelled.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resolve_image_until(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    pull: bool,
    progress: Progress<'_>,
    cancel: &CancelToken,
) -> Result<StoredImage> {
    let mut local_platform = None;
    if (!pull || reference.digest().is_some())
        && let Some(img) = StoredImage::load_by_name(store, reference)?
    {
        if is_for_platform(&img.config, platform) {
            return Ok(img);
        }
        local_platform = Some(config_platform(&img.config));
    }
    pull_image_until(store, registry, rt, reference, platform, progress, cancel).map_err(|e| {
        match (local_platform, e) {
            (_, SolveError::Cancelled) => SolveError::Cancelled,
            // Say why a local image was not used, or the pull error alone is puzzling.
            (Some(local), e) => SolveError::LocalImageForOtherPlatform {
                image: reference.familiar(),
                local: local.to_string(),
                platform: platform.to_string(),
                pull_error: Box::new(e),
            },
            (None, e) => e,
        }
    })
}

fn config_platform(config: &ImageConfig) -> Platform {
    Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os_version: None,
    }
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

/// Pulls `reference` into the store and names it locally (tags only; digests need no name).
pub fn pull_image(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    progress: Progress<'_>,
) -> Result<StoredImage> {
    let never = CancelToken::new();
    pull_image_until(store, registry, rt, reference, platform, progress, &never)
}

/// [`pull_image`], dropped (nothing published: blobs appear only once complete) with
/// [`SolveError::Cancelled`] once `cancel` is cancelled.
fn pull_image_until(
    store: &Store,
    registry: &RegistryClient,
    rt: &tokio::runtime::Handle,
    reference: &Reference,
    platform: &Platform,
    progress: Progress<'_>,
    cancel: &CancelToken,
) -> Result<StoredImage> {
    progress(ProgressEvent::Pulling {
        reference: reference.familiar(),
    });
    let on_event = |e: PullEvent| {
        if let Some(ev) = pull_progress(e) {
            progress(ev)
        }
    };
    let pulled = crate::cancel::block_on(
        rt,
        cancel,
        registry.pull(store, reference, platform, &on_event),
    )??;
    if reference.digest().is_none() {
        store.set_name(&reference.to_string(), &pulled.manifest_digest)?;
    }
    StoredImage::load(store, &pulled.manifest_digest)
}

fn pull_progress(e: PullEvent) -> Option<ProgressEvent> {
    match e {
        PullEvent::LayerDone { digest } => Some(ProgressEvent::BlobFetched {
            digest,
            cached: false,
        }),
        PullEvent::LayerCached { digest } => Some(ProgressEvent::BlobFetched {
            digest,
            cached: true,
        }),
        _ => None,
    }
}

/// The snapshot directory of a layer, unpacking the blob first if needed.
pub fn ensure_snapshot(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
    if store.has_snapshot(diff_id) {
        return Ok(store.snapshot_path(diff_id));
    }
    // One unpacker per layer across builds: the others wait, then find it published.
    let _lock = store.lock_object(kiln_store::ObjectLock::Snapshot, diff_id)?;
    if store.has_snapshot(diff_id) {
        return Ok(store.snapshot_path(diff_id));
    }
    let blob = store.open_blob(&layer.digest)?;
    let staging = store.snapshot_staging()?;
    let actual = kiln_layer::unpack_layer(
        std::io::BufReader::with_capacity(256 * 1024, blob),
        staging.path(),
    )?;
    if &actual != diff_id {
        return Err(SolveError::BadImage {
            reference: layer.digest.to_string(),
            message: format!(
                "layer content has diffID {actual} but the image config says {diff_id}"
            ),
        });
    }
    Ok(store.commit_snapshot(staging, diff_id)?)
}

/// Snapshot directories for an overlay of `layers` (bottom first in), topmost layer first, each
/// directory once.
///
/// An image may list one layer several times: a `RUN chmod` that changes nothing copies up the
/// files the `COPY` before it wrote and so gives the same tar, a `RUN true`-like step after a
/// `COPY` of the same files likewise, and published images repeat layers. Snapshots are named
/// by diffID, so the same directory would reach one overlay mount twice, which overlayfs
/// refuses (ELOOP). Only the topmost occurrence is kept, and that is exact rather than an
/// approximation: overlayfs resolves a name from the top down, and the higher copy of a layer
/// holds every name the lower copy holds (the same files, directories, whiteouts and opaque
/// markers), so a lookup that would reach the lower copy has always been answered by the
/// higher one first, and a merged directory gets no name from the lower copy that the higher
/// one does not already give it. Applying the layers in order agrees: the higher copy writes
/// again everything the lower one wrote. So snapshots stay one per diffID and shared by every
/// image and position that uses the layer, and the store's layout is unchanged.
pub fn lower_dirs<'a>(
    store: &Store,
    layers: impl Iterator<Item = (&'a Descriptor, &'a Digest)>,
) -> Result<Vec<PathBuf>> {
    let layers: Vec<_> = layers.collect();
    let mut dirs = topmost_occurrences(layers.iter().map(|(_, d)| *d))
        .into_iter()
        .map(|i| ensure_snapshot(store, layers[i].0, layers[i].1))
        .collect::<Result<Vec<_>>>()?;
    dirs.reverse();
    Ok(dirs)
}

/// The positions (bottom first, ascending) of the topmost occurrence of each diffID in a layer
/// list given bottom first.
fn topmost_occurrences<'a>(diff_ids: impl Iterator<Item = &'a Digest>) -> Vec<usize> {
    let mut topmost = std::collections::HashMap::new();
    for (i, d) in diff_ids.enumerate() {
        topmost.insert(d, i);
    }
    let mut positions: Vec<usize> = topmost.into_values().collect();
    positions.sort_unstable();
    positions
}

/// Maps Docker layer media types to their OCI names so a derived OCI manifest is uniform. The
/// bytes are identical; only the label differs.
pub fn oci_layer_media_type(mt: &str) -> &str {
    match mt {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => media_type::OCI_LAYER,
        other => other,
    }
}

/// Writes `config` and an OCI manifest over `layers` into the store.
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
) -> Result<StoredImage> {
    let config_bytes = to_canonical_json(config);
    let config_digest = store.write_blob(&config_bytes)?;
    let config_desc = Descriptor::new(
        media_type::OCI_CONFIG,
        config_digest.clone(),
        config_bytes.len() as u64,
    );
    let manifest = Manifest::oci(config_desc, layers);
    let manifest_digest = store.write_blob(&to_canonical_json(&manifest))?;
    Ok(StoredImage {
        manifest_digest,
        manifest,
        config_digest,
        config: config.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer holding one file named `name`, written into the store as a blob only.
    fn layer(store: &Store, name: &str) -> (Descriptor, Digest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), name).unwrap();
        let l = kiln_layer::write_layer(store, dir.path(), kiln_layer::Compression::default())
            .unwrap()
            .unwrap();
        (Descriptor::new(l.media_type, l.digest, l.size), l.diff_id)
    }

    #[test]
    fn a_repeated_layer_is_passed_once_at_its_topmost_position() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b, c) = (layer(&store, "a"), layer(&store, "b"), layer(&store, "c"));
        // Bottom first: a, b, a, then c three times in a row, then b again.
        let list = [&a, &b, &a, &c, &c, &c, &b];
        let dirs = lower_dirs(&store, list.iter().map(|(l, d)| (l, d))).unwrap();
        let snapshot = |(_, d): &(Descriptor, Digest)| store.snapshot_path(d);
        assert_eq!(dirs, vec![snapshot(&b), snapshot(&c), snapshot(&a)]);
        for (dir, name) in dirs.iter().zip(["b", "c", "a"]) {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), name.as_bytes());
        }
    }

    #[test]
    fn a_repeated_layer_counts_once_in_the_image_size() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b) = (layer(&store, "a"), layer(&store, "b"));
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids = vec![a.1.clone(), b.1.clone(), a.1.clone()];
        let img =
            write_image(&store, &config, vec![a.0.clone(), b.0.clone(), a.0.clone()]).unwrap();
        let img = StoredImage::load(&store, &img.manifest_digest).unwrap();
        assert_eq!(img.size(), a.0.size + b.0.size + img.manifest.config.size);
    }

    #[test]
    fn a_list_without_repeats_keeps_every_layer_in_order() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b) = (layer(&store, "a"), layer(&store, "b"));
        let dirs = lower_dirs(&store, [&a, &b].iter().map(|(l, d)| (l, d))).unwrap();
        assert_eq!(
            dirs,
            vec![store.snapshot_path(&b.1), store.snapshot_path(&a.1)]
        );
        assert!(lower_dirs(&store, std::iter::empty()).unwrap().is_empty());
    }
}
