//! Cache mounts that travel: `RUN --mount=type=cache` directories carried in a cache export
//! (`--cache-to …,cache-mounts=true`) and put back by `--cache-from` on another machine.
//!
//! BuildKit never exports cache mounts (moby/buildkit#1512), so every CI machine downloads the
//! same packages again. Here each directory a build mounted becomes one more blob of the
//! export: a tar of the directory (the layer writer's deterministic tar, so an unchanged cache
//! is the same blob and a push skips it), compressed like a layer, listed in the document by
//! the directory's key — the hash of its id and settings the solver already names it by, so
//! it matches across machines — and among the manifest's layers, so the registry keeps it.
//!
//! Key decisions:
//! - **Read under an exclusive lock.** The export takes the directory's main instance as a
//!   `locked` user would, whatever its sharing mode: it waits for every other user (another
//!   build sharing the store) to finish, so the tar is one consistent state, never a cache
//!   half-written by a concurrent `shared` user.
//! - **Imported only when a RUN that mounts it runs, and only into a new directory.** The import
//!   is the directory's seed: it happens when the step's mounts are set up (never on a cache
//!   hit) and only when the store has no such directory yet, so a machine's own cache wins.
//!   The blob is fetched as layers are (digest and size verified while it streams, a
//!   mismatch is an error naming the blob), extracted with the layer code's confinement, and
//!   its diffID checked against the document; the directory is built in `tmp/` and renamed
//!   into place, so a failure leaves nothing behind.
//! - **A size limit, never a failed build.** A blob over `cache-mounts-max-size` (default
//!   1 GiB, checked against the size the manifest declares, before anything is downloaded), or
//!   one whose tar expands past it while it is extracted, is skipped with a warning: the step
//!   runs with an empty cache, as it would without the import.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::PoisonError;

use kiln_image::Digest;
use kiln_layer::{Compression, SourceKind};
use kiln_store::{CacheDirSettings, CacheSharing};
use serde::{Deserialize, Serialize};

use super::document::CachedLayer;
use super::{RemoteCache, location};
use crate::build::Engine;
use crate::error::{Result, SolveError};
use crate::progress::{Progress, ProgressEvent};

/// One cache mount directory in an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedMount {
    /// The mount's `id` (its target when it named none), for messages.
    pub id: String,
    /// The directory's key in the store: a hash of the id and the directory's settings.
    pub key: Digest,
    /// The directory's content as a layer blob (a plain tree, no whiteouts).
    pub layer: CachedLayer,
}

/// A cache mount some RUN of this build uses, noted for the exports.
#[derive(Debug, Clone)]
pub(crate) struct NotedMount {
    pub stage: usize,
    pub id: String,
    pub key: Digest,
    pub settings: CacheDirSettings,
}

/// A cache mount of an imported export, and which `--cache-from` it came from.
pub(super) struct ImportedMount {
    pub mount: CachedMount,
    pub source: usize,
}

impl RemoteCache {
    /// Notes that a RUN of stage `stage` mounts the cache `id` kept under `key` (run or hit:
    /// a hit's cache is exported as well, from the store or from the import it came from).
    pub(crate) fn note_cache_mount(
        &self,
        stage: usize,
        id: &str,
        key: &Digest,
        settings: CacheDirSettings,
    ) {
        self.noted_mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(NotedMount {
                stage,
                id: id.to_owned(),
                key: key.clone(),
                settings,
            });
    }

    /// Fills `dir`, the new directory of the cache mount `key`, from an imported export, if
    /// one has it. Returns whether it did. A blob over its source's limit is skipped with a
    /// warning; one that cannot be fetched, fails verification or does not extract is an
    /// error naming it.
    pub(crate) fn import_cache_mount(
        &self,
        engine: &Engine,
        key: &Digest,
        dir: &Path,
        progress: Progress<'_>,
    ) -> Result<bool> {
        let Some(imported) = self.mounts.get(key) else {
            return Ok(false);
        };
        let location = &self.sources[imported.source];
        let mount = &imported.mount;
        let layer = &mount.layer.layer;
        let limit = self.mount_limits[imported.source].unwrap_or(0);
        if layer.size > limit {
            progress(ProgressEvent::Warning(format!(
                "cache mount {:?} from {location} is {} bytes, over the {limit}-byte limit \
                 (cache-mounts-max-size): not imported, the step starts with an empty cache",
                mount.id, layer.size
            )));
            return Ok(false);
        }
        let failed = |message: String| SolveError::Cache {
            location: location.to_string(),
            message: format!(
                "cache mount {:?} blob {}: {message}",
                mount.id, layer.digest
            ),
        };
        let fetched = engine
            .block_on(location::fetch_blob(engine, location, &layer.descriptor()))?
            .map_err(failed)?;
        progress(ProgressEvent::BlobFetched {
            digest: layer.digest.clone(),
            cached: !fetched,
        });
        let blob = engine.store.open_blob(&layer.digest)?;
        let diff_id =
            match kiln_layer::apply_layer_limited(std::io::BufReader::new(blob), dir, limit) {
                Ok(diff_id) => diff_id,
                Err(kiln_layer::LayerError::TooLarge { .. }) => {
                    // A small blob that expands past the limit: skipped like a big one. The
                    // directory is still private (in the store's tmp/), so it is emptied.
                    std::fs::remove_dir_all(dir)
                        .and_then(|()| std::fs::create_dir(dir))
                        .map_err(|source| SolveError::ReadFile {
                            path: dir.to_owned(),
                            source,
                        })?;
                    progress(ProgressEvent::Warning(format!(
                        "cache mount {:?} from {location} expands past the {limit}-byte limit \
                         (cache-mounts-max-size): not imported, the step starts with an empty \
                         cache",
                        mount.id
                    )));
                    return Ok(false);
                }
                Err(e) => return Err(failed(e.to_string())),
            };
        if diff_id != layer.diff_id {
            return Err(failed(format!(
                "its content is {diff_id}, not the {} the export names",
                layer.diff_id
            )));
        }
        Ok(true)
    }

    /// The cache mounts an export of `stages` carries: each directory those stages' RUNs
    /// mount, read from the store under an exclusive lock and written as a blob; one the
    /// store does not have (every step that mounts it was a hit) is passed on from the import
    /// it came from. Empty directories are left out.
    pub(super) fn export_cache_mounts(
        &self,
        engine: &Engine,
        stages: &std::collections::BTreeSet<usize>,
    ) -> Result<Vec<CachedMount>> {
        let noted: BTreeMap<Digest, NotedMount> = self
            .noted_mounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|m| stages.contains(&m.stage))
            .map(|m| (m.key.clone(), m.clone()))
            .collect();
        let mut exported = Vec::new();
        for (key, mount) in noted {
            let main = engine.store.cache_mount_dir(&key).join("0");
            if !main.is_dir() {
                if let Some(imported) = self.mounts.get(&key) {
                    exported.push(imported.mount.clone());
                }
                continue;
            }
            let no_seed = |_: &Path| Ok(());
            let lease = engine.store.acquire_cache_mount(
                &key,
                CacheSharing::Locked,
                mount.settings,
                &no_seed,
            )?;
            let compression = Compression::default();
            let layer = kiln_layer::write_layer_from(
                &engine.store,
                lease.path(),
                SourceKind::Plain,
                compression,
            )
            .map_err(|e| SolveError::Cache {
                location: format!("cache mount {:?}", mount.id),
                message: e.to_string(),
            })?;
            drop(lease);
            if let Some(layer) = layer {
                exported.push(CachedMount {
                    id: mount.id,
                    key,
                    layer: CachedLayer {
                        layer,
                        compression: Some(compression.setting_name()),
                    },
                });
            }
        }
        Ok(exported)
    }
}

/// The cache mounts of `mounts` whose blob `manifest` lists with the same size, as
/// [`super::CacheDocument::usable_records`] does for steps.
pub(super) fn usable_mounts(
    mounts: &[CachedMount],
    manifest: &kiln_image::Manifest,
) -> Vec<CachedMount> {
    mounts
        .iter()
        .filter(|m| {
            manifest
                .layers
                .iter()
                .any(|l| l.digest == m.layer.layer.digest && l.size == m.layer.layer.size)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_cache::CacheDocument;
    use kiln_image::{DiffId, LayerRef, media_type};

    fn mount(id: &str, blob: &[u8]) -> CachedMount {
        CachedMount {
            id: id.into(),
            key: Digest::of(id.as_bytes()),
            layer: CachedLayer {
                layer: LayerRef {
                    digest: Digest::of(blob),
                    diff_id: DiffId::of_tar(blob),
                    size: blob.len() as u64,
                    media_type: media_type::OCI_LAYER_GZIP.into(),
                },
                compression: Some("gzip-6".into()),
            },
        }
    }

    #[test]
    fn mounts_round_trip_and_their_blobs_are_manifest_layers() {
        let document = CacheDocument::new([], []).with_cache_mounts([
            mount("/root/.cache/pip", b"pip"),
            mount("npm", b"npm"),
            mount(
                "/root/.cache/pip",
                b"other bytes, same key: the first is kept",
            ),
        ]);
        assert_eq!(document.cache_mounts.len(), 2);
        let decoded = CacheDocument::decode(&document.encode()).unwrap();
        assert_eq!(decoded, document);
        let manifest = document.manifest(Digest::of(b"config"), 6);
        assert_eq!(manifest.layers.len(), 2);
        assert_eq!(usable_mounts(&document.cache_mounts, &manifest).len(), 2);

        // A mount whose blob the manifest does not list (or lists with another size) is
        // not used: the registry keeps only what manifests reference.
        let mut partial = manifest.clone();
        partial.layers.retain(|l| l.digest == Digest::of(b"npm"));
        let usable = usable_mounts(&document.cache_mounts, &partial);
        assert_eq!(usable.len(), 1);
        assert_eq!(usable[0].id, "npm");
        let mut resized = manifest;
        for l in &mut resized.layers {
            l.size += 1;
        }
        assert!(usable_mounts(&document.cache_mounts, &resized).is_empty());

        // Documents without mounts are written as before.
        let plain = CacheDocument::new([], []).encode();
        assert!(!String::from_utf8(plain).unwrap().contains("cacheMounts"));
    }
}
