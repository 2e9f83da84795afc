//! `kiln prune`: removes what no tagged image needs, least recently used first.
//!
//! Removable, in order:
//! 1. leftovers in `tmp/` (the exclusive store lock proves no process is using them);
//! 2. blobs nothing refers to and snapshots nothing can use (no record or image names their
//!    diffID, or incomplete);
//! 3. cache records whose layer no kept image holds — and, with `all`, every cache record and
//!    every untagged image — oldest last use first, each taking with it the blobs and
//!    snapshots only it held;
//! 4. with `all`, cache mounts;
//! 5. layer-variant records whose blob is gone, and explain records whose Dockerfile is gone
//!    (every explain record with `all`): see `sidecars`.
//!
//! A tagged image's manifest, config, layers and their snapshots are never candidates. Each
//! removal drops the referrer before what it refers to (a record before its layer, a manifest
//! before its config and layers), so a prune killed halfway leaves no dangling reference,
//! only garbage the next prune collects. `keep_storage` stops the pass as soon as the store is
//! no larger than it; `unused_for` spares everything used (or written) more recently.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kiln_image::{DiffId, Digest};

use crate::inventory::Inventory;
use crate::locks::StoreLock;
use crate::{CacheKey, Result, Store, StoreError};

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also untagged images (with [`PruneScope::Everything`]), all cache records and cache
    /// mounts.
    pub all: bool,
    /// Stop once the store takes at most this many bytes.
    pub keep_storage: Option<u64>,
    /// Only what was last used at least this long ago.
    pub unused_for: Option<Duration>,
    pub scope: PruneScope,
}

/// Which kinds of objects a prune may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PruneScope {
    /// `kiln prune`: leftovers, garbage and the build cache, and with `all` untagged images
    /// and cache mounts.
    #[default]
    Everything,
    /// The build cache (`docker builder prune`): leftovers, garbage, cache records and with
    /// `all` cache mounts; never an image.
    BuildCache,
    /// Only these untagged images (by manifest digest), with the blobs and snapshots only they
    /// hold (`docker image prune`); nothing of the build cache.
    UntaggedImages(Vec<Digest>),
}

/// What kind of object was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PrunedKind {
    Leftover,
    Blob,
    Snapshot,
    CacheRecord,
    Image,
    CacheMount,
    /// A `--explain` record of a step (`explain/<step identity>`).
    ExplainRecord,
    /// A record of which blob holds a layer in one compression (`layer-variants/…`).
    LayerVariant,
}

/// One removed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub kind: PrunedKind,
    /// A digest, cache key or `tmp/` name.
    pub id: String,
    /// Bytes freed by removing it (for records and images: the blobs only they held, and
    /// those blobs are not listed again as `Blob`).
    pub bytes: u64,
}

/// The outcome of [`Store::prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub removed: Vec<Pruned>,
    /// Bytes the store took before and after.
    pub before: u64,
    pub after: u64,
}

impl PruneReport {
    pub fn reclaimed(&self) -> u64 {
        self.removed.iter().map(|p| p.bytes).sum()
    }

    pub fn count(&self, kind: PrunedKind) -> usize {
        self.removed.iter().filter(|p| p.kind == kind).count()
    }
}

/// Something a candidate holds: a blob, or a diffID whose snapshot it keeps useful.
#[derive(Debug, Default)]
struct Holds {
    blobs: Vec<Digest>,
    diff_ids: Vec<DiffId>,
}

enum Candidate {
    Record(CacheKey),
    Image(Digest),
}

struct Pass<'a> {
    store: &'a Store,
    opts: &'a PruneOptions,
    now: SystemTime,
    size: u64,
    report: PruneReport,
    /// How many remaining records and untagged images hold each blob / diffID.
    blob_refs: BTreeMap<Digest, usize>,
    diff_refs: BTreeMap<DiffId, usize>,
    inv: &'a Inventory,
    snapshot_bytes: BTreeMap<DiffId, u64>,
}

impl Store {
    /// Prunes the store. Needs the exclusive store lock (`held`), so no build is using what
    /// gets removed.
    pub fn prune(&self, held: &StoreLock, opts: &PruneOptions) -> Result<PruneReport> {
        let leftovers = self.tmp_entries()?;
        let slots = self.free_context_slots()?;
        let inv = self.inventory()?;
        let size = inv.blobs.values().sum::<u64>()
            + inv.snapshots.iter().map(|s| s.disk_bytes).sum::<u64>()
            + inv.cache_mounts.iter().map(|c| c.disk_bytes).sum::<u64>()
            + leftovers.iter().map(|(_, b)| b).sum::<u64>()
            + slots.iter().map(|s| s.bytes).sum::<u64>();
        let mut pass = Pass {
            store: self,
            opts,
            now: SystemTime::now(),
            size,
            report: PruneReport {
                before: size,
                ..Default::default()
            },
            blob_refs: BTreeMap::new(),
            diff_refs: BTreeMap::new(),
            inv: &inv,
            snapshot_bytes: inv
                .snapshots
                .iter()
                .map(|s| (s.id.clone(), s.disk_bytes))
                .collect(),
        };
        let images_only = matches!(opts.scope, PruneScope::UntaggedImages(_));
        if !images_only {
            pass.leftovers(leftovers)?;
            pass.context_slots(slots)?;
        }
        let candidates = pass.count_holders();
        if !images_only {
            pass.garbage()?;
        }
        pass.candidates(candidates)?;
        if opts.all && !images_only {
            pass.cache_mounts()?;
        }
        if !images_only {
            pass.layer_variants()?;
            pass.explain_records()?;
        }
        self.clear_object_locks(held)?;
        pass.report.after = pass.size;
        Ok(pass.report)
    }

    /// The `build-contexts/<n>/` directories no build holds (their `<n>.lock` flock taken
    /// here, kept until they are removed): the last tar contexts, kept only to make the next
    /// build of the same context cheaper.
    fn free_context_slots(&self) -> Result<Vec<ContextSlot>> {
        use rustix::fs::{FlockOperation, flock};
        let dir = self.root.join(crate::BUILD_CONTEXTS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() {
                continue;
            }
            let lock_path = dir.join(format!("{name}.lock"));
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(StoreError::io(&lock_path))?;
            if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
                continue; // a build is reading it
            }
            out.push(ContextSlot {
                bytes: crate::inventory::disk_usage(&entry.path()),
                name,
                _lock: lock,
            });
        }
        Ok(out)
    }

    fn tmp_entries(&self) -> Result<Vec<(String, u64)>> {
        let dir = self.root.join("tmp");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let entry = entry.map_err(StoreError::io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push((name, crate::inventory::disk_usage(&entry.path())));
        }
        Ok(out)
    }
}

/// A kept tar context no build holds, locked for the prune.
struct ContextSlot {
    name: String,
    bytes: u64,
    _lock: std::fs::File,
}

impl Pass<'_> {
    fn over_limit(&self) -> bool {
        self.opts.keep_storage.is_none_or(|limit| self.size > limit)
    }

    fn old_enough(&self, last_used: SystemTime) -> bool {
        match self.opts.unused_for {
            None => true,
            Some(d) => self.now.duration_since(last_used).is_ok_and(|age| age >= d),
        }
    }

    fn removed(&mut self, kind: PrunedKind, id: String, bytes: u64) {
        self.size = self.size.saturating_sub(bytes);
        self.report.removed.push(Pruned { kind, id, bytes });
    }

    fn leftovers(&mut self, entries: Vec<(String, u64)>) -> Result<()> {
        for (name, bytes) in entries {
            if !self.over_limit() {
                break;
            }
            let path = self.store.root.join("tmp").join(&name);
            crate::check::remove_any(&path).map_err(StoreError::io(&path))?;
            self.removed(PrunedKind::Leftover, format!("tmp/{name}"), bytes);
        }
        Ok(())
    }

    fn context_slots(&mut self, slots: Vec<ContextSlot>) -> Result<()> {
        for slot in slots {
            if !self.over_limit() {
                break;
            }
            let path = self.store.root.join(crate::BUILD_CONTEXTS).join(&slot.name);
            crate::check::remove_any(&path).map_err(StoreError::io(&path))?;
            self.removed(
                PrunedKind::Leftover,
                format!("{}/{}", crate::BUILD_CONTEXTS, slot.name),
                slot.bytes,
            );
        }
        Ok(())
    }

    fn record_holds(&self, key: &CacheKey) -> Holds {
        let mut h = Holds::default();
        if let Some(l) = self
            .inv
            .records
            .iter()
            .find(|r| &r.key == key)
            .and_then(|r| r.layer.as_ref())
        {
            h.blobs.push(l.digest.clone());
            h.diff_ids.push(l.diff_id.clone());
        }
        h
    }

    fn image_holds(&self, root: &Digest) -> Holds {
        let img = self.inv.untagged.iter().find(|i| &i.root == root);
        Holds {
            blobs: img
                .map(|i| i.reach.blobs.iter().cloned().collect())
                .unwrap_or_default(),
            diff_ids: img
                .map(|i| i.reach.diff_ids.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Counts who holds each blob and diffID, and returns the removable records and images,
    /// least recently used first.
    fn count_holders(&mut self) -> Vec<(SystemTime, Candidate)> {
        let inv = self.inv;
        let mut candidates = Vec::new();
        for img in &inv.untagged {
            for b in &img.reach.blobs {
                *self.blob_refs.entry(b.clone()).or_default() += 1;
            }
            for d in &img.reach.diff_ids {
                *self.diff_refs.entry(d.clone()).or_default() += 1;
            }
            let candidate = match &self.opts.scope {
                PruneScope::Everything => self.opts.all,
                PruneScope::BuildCache => false,
                PruneScope::UntaggedImages(list) => list.contains(&img.root),
            };
            if candidate {
                candidates.push((img.written, Candidate::Image(img.root.clone())));
            }
        }
        let records = !matches!(self.opts.scope, PruneScope::UntaggedImages(_));
        for r in &inv.records {
            let holds = self.record_holds(&r.key);
            for b in &holds.blobs {
                *self.blob_refs.entry(b.clone()).or_default() += 1;
            }
            for d in &holds.diff_ids {
                *self.diff_refs.entry(d.clone()).or_default() += 1;
            }
            // Without `all`, a record whose layer an image keeps anyway frees nothing and
            // keeps that image's rebuild cached: it stays.
            let in_kept_image = holds.blobs.iter().any(|b| {
                inv.tagged.blobs.contains(b)
                    || (!self.opts.all && inv.untagged.iter().any(|i| i.reach.blobs.contains(b)))
            });
            if records && (self.opts.all || !in_kept_image) {
                candidates.push((r.last_used, Candidate::Record(r.key.clone())));
            }
        }
        candidates.sort_by_key(|(t, _)| *t);
        candidates
    }

    fn pinned_blob(&self, d: &Digest) -> bool {
        self.inv.tagged.blobs.contains(d) || self.blob_refs.get(d).is_some_and(|n| *n > 0)
    }

    fn pinned_diff(&self, d: &DiffId) -> bool {
        self.inv.tagged.diff_ids.contains(d) || self.diff_refs.get(d).is_some_and(|n| *n > 0)
    }

    /// Blobs and snapshots that nothing refers to.
    fn garbage(&mut self) -> Result<()> {
        let blobs: Vec<(Digest, u64)> = self
            .inv
            .blobs
            .iter()
            .filter(|(d, _)| !self.pinned_blob(d))
            .map(|(d, s)| (d.clone(), *s))
            .collect();
        for (d, size) in blobs {
            if !self.over_limit() {
                return Ok(());
            }
            let written = std::fs::metadata(self.store.blob_path(&d))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if !self.old_enough(written) {
                continue;
            }
            self.remove_blob(&d)?;
            self.removed(PrunedKind::Blob, d.to_string(), size);
        }
        let snapshots: Vec<(DiffId, u64, bool)> = self
            .inv
            .snapshots
            .iter()
            .map(|s| (s.id.clone(), s.disk_bytes, s.complete))
            .collect();
        for (id, bytes, complete) in snapshots {
            if !self.over_limit() {
                return Ok(());
            }
            if complete && self.pinned_diff(&id) {
                continue;
            }
            self.store.discard_dir(&self.store.snapshot_dir(&id))?;
            self.snapshot_bytes.remove(&id);
            self.removed(PrunedKind::Snapshot, id.to_string(), bytes);
        }
        Ok(())
    }

    fn candidates(&mut self, candidates: Vec<(SystemTime, Candidate)>) -> Result<()> {
        for (last_used, c) in candidates {
            if !self.over_limit() {
                return Ok(());
            }
            if !self.old_enough(last_used) {
                continue;
            }
            let (kind, id, holds) = match &c {
                Candidate::Record(key) => {
                    self.store.cache_remove(key)?;
                    (
                        PrunedKind::CacheRecord,
                        key.hex().to_owned(),
                        self.record_holds(key),
                    )
                }
                Candidate::Image(root) => {
                    // The root first: once it is gone nothing refers to the rest.
                    self.remove_blob(root)?;
                    (PrunedKind::Image, root.to_string(), self.image_holds(root))
                }
            };
            let mut freed = 0;
            for b in &holds.blobs {
                if let Some(n) = self.blob_refs.get_mut(b) {
                    *n = n.saturating_sub(1);
                }
                if matches!(&c, Candidate::Image(root) if root == b) {
                    freed += self.inv.blob_size(b);
                } else if !self.pinned_blob(b) && self.store.has_blob(b) {
                    self.remove_blob(b)?;
                    freed += self.inv.blob_size(b);
                }
            }
            for d in &holds.diff_ids {
                if let Some(n) = self.diff_refs.get_mut(d) {
                    *n = n.saturating_sub(1);
                }
                if !self.pinned_diff(d)
                    && let Some(bytes) = self.snapshot_bytes.remove(d)
                {
                    self.store.discard_dir(&self.store.snapshot_dir(d))?;
                    freed += bytes;
                }
            }
            self.removed(kind, id, freed);
        }
        Ok(())
    }

    fn cache_mounts(&mut self) -> Result<()> {
        for c in &self.inv.cache_mounts {
            if !self.over_limit() {
                return Ok(());
            }
            if !self.old_enough(c.modified) {
                continue;
            }
            let dir = self.store.cache_mount_dir(&c.id);
            // Moved into tmp/ first, like a snapshot: never half a cache under its name.
            self.store.discard_dir(&dir)?;
            self.size = self.size.saturating_sub(c.disk_bytes);
            self.report.removed.push(Pruned {
                kind: PrunedKind::CacheMount,
                id: c.id.to_string(),
                bytes: c.disk_bytes,
            });
        }
        Ok(())
    }

    fn remove_blob(&self, d: &Digest) -> Result<()> {
        remove_file(&self.store.blob_path(d))
    }
}

/// Removes a file; one already gone (removed by a racing `rm`, or never there) is no error.
fn remove_file(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path)(e)),
    }
}

mod sidecars;
#[cfg(test)]
mod tests;
