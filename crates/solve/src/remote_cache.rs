//! The build cache shared through a registry or a directory (`--cache-to`, `--cache-from`).
//!
//! Import: each `--cache-from` export (an OCI manifest whose config is a [`CacheDocument`]) is
//! read once at the start of the build; its records join the local ones as a second place
//! to look a step's key up. A step found there is a hit without downloading anything: its
//! layer's blob is fetched (verified, streamed) only when something needs the bytes — a later
//! step that runs on top of it (its snapshot), a `COPY --from` or mount of its stage, a
//! compression the blob is not in, the final image, or an export. Records whose layer is then
//! in the store are written into the local cache, so the next build needs no import.
//!
//! Export: every filesystem step of the build (hit or run) is noted with its stage; each
//! `--cache-to` writes those of the final image's stage chain (`mode=min`) or of every stage
//! (`mode=max`) as a document, and pushes it (or writes it as an OCI layout) with the layers.

mod document;
mod location;
mod mounts;
mod spec;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use futures_util::TryStreamExt;
use kiln_image::{Descriptor, DiffId, Digest, LayerRef, to_canonical_json};
use kiln_layer::CompressionRequest;
use kiln_plan::{Base, BuildPlan};
use kiln_store::{CacheKey, LayerVariant, Store};

pub use document::{CACHE_CONFIG_MEDIA_TYPE, CacheAlias, CacheDocument, CachedLayer, CachedStep};
pub use mounts::CachedMount;
pub use spec::{
    CacheExport, CacheImport, CacheLocation, CacheMode, DEFAULT_CACHE_MOUNT_LIMIT, InvalidCacheSpec,
};

use crate::build::Engine;
use crate::cache::CacheRecord;
use crate::error::{Result, SolveError};
use crate::progress::{Progress, ProgressEvent};
use location::ReadFailure;

/// Blobs fetched from a cache at the same time.
const CONCURRENT_FETCHES: usize = 3;

/// A record of an imported export, and which `--cache-from` it came from.
struct Imported {
    step: CachedStep,
    source: usize,
}

/// A layer blob some imported record names: where to get it and what it holds.
struct RemoteBlob {
    cached: CachedLayer,
    source: usize,
}

/// A filesystem step of this build, as an export would record it.
struct NotedStep {
    stage: usize,
    key: CacheKey,
    record: CacheRecord,
}

/// A step found in an imported cache.
pub(crate) struct RemoteHit {
    pub record: CacheRecord,
    /// The `--cache-from` it came from, for progress.
    pub source: String,
}

/// The imported caches of one build, and what it will export.
pub(crate) struct RemoteCache {
    sources: Vec<CacheLocation>,
    records: HashMap<CacheKey, Imported>,
    blobs: HashMap<Digest, RemoteBlob>,
    /// Imported `COPY --from` definition keys → the step keys they stand for.
    aliases: HashMap<CacheKey, CacheKey>,
    noted: Mutex<Vec<NotedStep>>,
    /// `COPY --from` definition keys of this build, with their stage, for the exports.
    noted_aliases: Mutex<Vec<(usize, CacheAlias)>>,
    /// Keys hit from an import, to record locally once their layer is in the store.
    hits: Mutex<Vec<CacheKey>>,
    /// Imported cache mount directories by key (`cache-mounts=true` exports).
    mounts: HashMap<Digest, mounts::ImportedMount>,
    /// Per source: the largest cache mount blob to import, `None` for none.
    mount_limits: Vec<Option<u64>>,
    /// Cache mounts this build's RUNs use, with their stage, for the exports.
    noted_mounts: Mutex<Vec<mounts::NotedMount>>,
}

impl RemoteCache {
    /// Reads every `--cache-from`. One that is missing or unreadable is a warning: the build
    /// goes on without it, as under BuildKit. Earlier imports win when two hold a key.
    pub fn import(engine: &Engine, imports: &[CacheImport], progress: Progress<'_>) -> Self {
        let mut cache = RemoteCache {
            sources: imports.iter().map(|i| i.location.clone()).collect(),
            records: HashMap::new(),
            blobs: HashMap::new(),
            aliases: HashMap::new(),
            noted: Mutex::new(Vec::new()),
            noted_aliases: Mutex::new(Vec::new()),
            hits: Mutex::new(Vec::new()),
            mounts: HashMap::new(),
            mount_limits: imports.iter().map(|i| i.cache_mount_limit).collect(),
            noted_mounts: Mutex::new(Vec::new()),
        };
        for (source, import) in imports.iter().enumerate() {
            let location = &import.location;
            let (manifest, document) = match location::read_export(engine, location) {
                Ok(export) => export,
                Err(ReadFailure::NotFound(message)) => {
                    progress(ProgressEvent::Warning(format!(
                        "cache {location} not found, building without it: {message}"
                    )));
                    continue;
                }
                Err(ReadFailure::Failed(message)) => {
                    progress(ProgressEvent::Warning(format!(
                        "cannot import cache {location}, building without it: {message}"
                    )));
                    continue;
                }
            };
            let steps = document.usable_records(&manifest);
            progress(ProgressEvent::CacheImported {
                source: location.to_string(),
                records: steps.len(),
            });
            for step in steps {
                if let Some(layer) = &step.layer {
                    cache
                        .blobs
                        .entry(layer.layer.digest.clone())
                        .or_insert_with(|| RemoteBlob {
                            cached: layer.clone(),
                            source,
                        });
                }
                cache
                    .records
                    .entry(step.key.clone())
                    .or_insert(Imported { step, source });
            }
            for alias in document.aliases {
                cache.aliases.entry(alias.alias).or_insert(alias.key);
            }
            if import.cache_mount_limit.is_some() {
                for mount in mounts::usable_mounts(&document.cache_mounts, &manifest) {
                    // Known as a blob too, so an export passing it on can fetch it.
                    cache
                        .blobs
                        .entry(mount.layer.layer.digest.clone())
                        .or_insert_with(|| RemoteBlob {
                            cached: mount.layer.clone(),
                            source,
                        });
                    cache
                        .mounts
                        .entry(mount.key.clone())
                        .or_insert(mounts::ImportedMount { mount, source });
                }
            }
        }
        cache
    }

    /// The key of the step an imported `COPY --from` definition key stands for, when the
    /// imports hold that step's record.
    pub fn alias_target(&self, alias: &CacheKey) -> Option<CacheKey> {
        self.aliases
            .get(alias)
            .filter(|key| self.records.contains_key(*key))
            .cloned()
    }

    /// Notes that the `COPY --from` step of stage `stage` with definition key `alias` had the
    /// key `key`, for the exports.
    pub fn note_alias(&self, stage: usize, alias: CacheKey, key: CacheKey) {
        self.noted_aliases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stage, CacheAlias { alias, key }));
    }

    /// The imported record for `key`, if any. Its layer is usually left where it is; it is
    /// fetched now only when the build's compression cannot take it as it is (an exact level
    /// the exporter did not use, another algorithm), because the conversion reads it.
    pub fn hit(
        &self,
        engine: &Engine,
        key: &CacheKey,
        compression: &CompressionRequest,
        progress: Progress<'_>,
    ) -> Result<Option<RemoteHit>> {
        let Some(imported) = self.records.get(key) else {
            return Ok(None);
        };
        if let Some(layer) = &imported.step.layer
            && !compression.accepts(&layer.layer.media_type, layer.compression.as_deref())
        {
            self.fetch(engine, vec![&layer.layer.digest], progress)?;
        }
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key.clone());
        Ok(Some(RemoteHit {
            record: imported.step.record(),
            source: self.sources[imported.source].to_string(),
        }))
    }

    /// Notes a filesystem step of stage `stage` for the exports.
    pub fn note(&self, stage: usize, key: &CacheKey, record: &CacheRecord) {
        self.noted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(NotedStep {
                stage,
                key: key.clone(),
                record: record.clone(),
            });
    }

    /// Fetches the blobs of those `layers` that must be unpacked and are neither unpacked
    /// nor in the store but in an imported cache.
    pub fn fetch_for_snapshots(
        &self,
        engine: &Engine,
        layers: &[LayerRef],
        progress: Progress<'_>,
    ) -> Result<()> {
        let missing = layers
            .iter()
            .filter(|layer| !engine.store.has_snapshot(&layer.diff_id))
            .map(|layer| &layer.digest)
            .collect();
        self.fetch(engine, missing, progress)
    }

    /// Fetches the blobs of `layers` that are not in the store but in an imported cache.
    pub fn fetch_blobs(
        &self,
        engine: &Engine,
        layers: &[Descriptor],
        progress: Progress<'_>,
    ) -> Result<()> {
        self.fetch(engine, layers.iter().map(|l| &l.digest).collect(), progress)
    }

    /// Fetches `digests` that the store lacks and an import has, a few at a time. Each
    /// fetched layer is recorded as its diffID's variant in the compression the exporter
    /// named, so a later build asking for that setting reuses it.
    fn fetch(&self, engine: &Engine, digests: Vec<&Digest>, progress: Progress<'_>) -> Result<()> {
        let wanted: Vec<&RemoteBlob> = digests
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|d| !engine.store.has_blob(d))
            .filter_map(|d| self.blobs.get(d))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        engine.block_on(
            futures_util::stream::iter(wanted.into_iter().map(Ok))
                .try_for_each_concurrent(CONCURRENT_FETCHES, |blob| {
                    self.fetch_one(engine, blob, progress)
                }),
        )?
    }

    /// Fetches one imported layer blob into the store.
    async fn fetch_one(
        &self,
        engine: &Engine,
        blob: &RemoteBlob,
        progress: Progress<'_>,
    ) -> Result<()> {
        let location = &self.sources[blob.source];
        let layer = &blob.cached.layer;
        let fetched = location::fetch_blob(engine, location, &layer.descriptor())
            .await
            .map_err(|message| SolveError::Cache {
                location: location.to_string(),
                message: format!("layer {}: {message}", layer.digest),
            })?;
        if let Some(setting) = &blob.cached.compression {
            // Losing the hint only costs a re-encoding later.
            let _ = engine.store.record_layer_variant(
                &layer.diff_id,
                &LayerVariant {
                    compression: setting.clone(),
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: layer.size,
                },
            );
        }
        progress(ProgressEvent::BlobFetched {
            digest: layer.digest.clone(),
            cached: !fetched,
        });
        Ok(())
    }

    /// Writes the imported records this build hit into the local cache, once their layer is
    /// in the store (a record whose blob is missing would be a dangling record).
    pub fn record_hits_locally(&self, store: &Store) -> Result<()> {
        let hits = std::mem::take(&mut *self.hits.lock().unwrap_or_else(PoisonError::into_inner));
        for key in hits {
            let record = self.records[&key].step.record();
            let present = record
                .layer
                .as_ref()
                .is_none_or(|l| store.has_blob(&l.digest));
            if present {
                record.save(store, &key)?;
            }
        }
        Ok(())
    }

    /// Writes every `--cache-to`. A failure fails the build, naming the destination, unless
    /// that export says `ignore-error=true`.
    pub fn export(
        &self,
        engine: &Engine,
        plan: &BuildPlan,
        exports: &[CacheExport],
        progress: Progress<'_>,
    ) -> Result<()> {
        for export in exports {
            match self.export_one(engine, plan, export, progress) {
                Ok(event) => progress(event),
                Err(e) if export.ignore_error => progress(ProgressEvent::Warning(format!(
                    "cache export failed (ignored): {e}"
                ))),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn export_one(
        &self,
        engine: &Engine,
        plan: &BuildPlan,
        export: &CacheExport,
        progress: Progress<'_>,
    ) -> Result<ProgressEvent> {
        let failed = |message: String| SolveError::Cache {
            location: export.location.to_string(),
            message,
        };
        let stages = exported_stages(plan, export.mode);
        let document = {
            let noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
            let steps: Vec<CachedStep> = noted
                .iter()
                .filter(|n| stages.contains(&n.stage))
                .map(|n| {
                    let compression =
                        n.record.layer.as_ref().and_then(|l| {
                            self.compression_of(&engine.store, &l.digest, &l.diff_id)
                        });
                    CachedStep::new(n.key.clone(), &n.record, compression)
                })
                .collect();
            let aliases: Vec<CacheAlias> = self
                .noted_aliases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(stage, _)| stages.contains(stage))
                .map(|(_, alias)| alias.clone())
                .collect();
            CacheDocument::new(steps, aliases)
        };
        let document = if export.cache_mounts {
            document.with_cache_mounts(self.export_cache_mounts(engine, &stages)?)
        } else {
            document
        };
        // Every layer is sent from the store: those of hits not downloaded yet come first.
        let layers = document.layer_descriptors();
        self.fetch_blobs(engine, &layers, progress)?;
        if let Some(missing) = layers.iter().find(|l| !engine.store.has_blob(&l.digest)) {
            return Err(failed(format!(
                "layer {} is not in the store (pruned while building?)",
                missing.digest
            )));
        }
        let bytes = document.encode();
        let config_digest = engine.store.write_blob(&bytes)?;
        let manifest = document.manifest(config_digest, bytes.len() as u64);
        let manifest_digest = engine.store.write_blob(&to_canonical_json(&manifest))?;
        let sent = location::write_export(engine, &export.location, &manifest_digest, &manifest)
            .map_err(failed)?;
        Ok(ProgressEvent::CacheExported {
            destination: export.location.to_string(),
            records: document.records.len(),
            layers: layers.len(),
            sent,
        })
    }

    /// The compression setting that made the blob `digest` of layer `diff_id`, if known.
    fn compression_of(&self, store: &Store, digest: &Digest, diff_id: &DiffId) -> Option<String> {
        if let Some(blob) = self.blobs.get(digest) {
            return blob.cached.compression.clone();
        }
        store
            .layer_variants(diff_id)
            .ok()?
            .into_iter()
            .find(|v| &v.digest == digest)
            .map(|v| v.compression)
    }
}

/// The stages whose steps an export of `mode` holds: the target and the stages it is built
/// `FROM` (min), or every stage (max; those not built have no steps to give).
fn exported_stages(plan: &BuildPlan, mode: CacheMode) -> BTreeSet<usize> {
    match mode {
        CacheMode::Max => plan.stages.iter().map(|s| s.index).collect(),
        CacheMode::Min => {
            let mut chain = BTreeSet::new();
            let mut stage = Some(plan.target);
            while let Some(index) = stage {
                if !chain.insert(index) {
                    break;
                }
                stage = match plan.stages[index].base {
                    Base::Stage(base) => Some(base),
                    _ => None,
                };
            }
            chain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dockerfile: &str, target: Option<&str>) -> BuildPlan {
        let parsed = kiln_dockerfile::parse(dockerfile).unwrap();
        let opts = kiln_plan::BuildOptions {
            build_args: Default::default(),
            target: target.map(str::to_owned),
            platform: kiln_image::Platform::new("linux", "amd64"),
            build_platform: kiln_image::Platform::new("linux", "amd64"),
        };
        kiln_plan::plan(&parsed, &opts).unwrap()
    }

    #[test]
    fn min_mode_follows_the_from_chain_and_max_takes_every_stage() {
        let dockerfile = "FROM scratch AS tools\nCOPY a /a\n\
                          FROM scratch AS base\nCOPY b /b\n\
                          FROM base AS app\nCOPY --from=tools /a /a\n\
                          FROM app\nCOPY c /c\n";
        let full = plan(dockerfile, None);
        assert_eq!(
            exported_stages(&full, CacheMode::Min),
            BTreeSet::from([1, 2, 3])
        );
        assert_eq!(
            exported_stages(&full, CacheMode::Max),
            BTreeSet::from([0, 1, 2, 3])
        );
        let tools = plan(dockerfile, Some("tools"));
        assert_eq!(exported_stages(&tools, CacheMode::Min), BTreeSet::from([0]));
    }
}
