//! `kiln system df`: what the store spends its space on, by kind, and how much of it
//! `kiln prune --all` would give back.
//!
//! Every blob is counted in exactly one row, so the rows add up to the store's size: a blob a
//! tagged or untagged image needs is an image's; else one only cache records hold is the
//! cache's; anything else is unreferenced (left by `kiln rmi`, or by a killed process).

use std::collections::BTreeSet;
use std::time::SystemTime;

use kiln_image::Digest;

use crate::inventory::Inventory;
use crate::{CacheKey, Result, Store};

/// One row of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    pub total: usize,
    /// Items a tagged image needs (kept by every prune).
    pub active: usize,
    pub bytes: u64,
    /// Bytes `kiln prune --all` frees.
    pub reclaimable: u64,
}

/// An image in the verbose listing.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    /// Its names; empty when untagged.
    pub names: Vec<String>,
    pub manifest: Digest,
    /// Size of every blob it needs.
    pub bytes: u64,
    /// Of those, bytes shared with other images.
    pub shared_bytes: u64,
}

/// A cache record in the verbose listing.
#[derive(Debug, Clone)]
pub struct RecordUsage {
    pub key: CacheKey,
    pub layer: Option<Digest>,
    /// Size of the layer if only cache records hold it, else 0.
    pub bytes: u64,
    /// Whether an image holds its layer too.
    pub in_image: bool,
    pub last_used: SystemTime,
}

/// A snapshot or cache mount in the verbose listing.
#[derive(Debug, Clone)]
pub struct DirItem {
    pub id: Digest,
    pub bytes: u64,
    /// Whether a tagged image needs it (snapshots) — always false for cache mounts.
    pub active: bool,
}

/// The whole `df` answer.
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    pub images: UsageRow,
    pub cache_records: UsageRow,
    pub snapshots: UsageRow,
    pub cache_mounts: UsageRow,
    pub unreferenced_blobs: UsageRow,
    pub image_list: Vec<ImageUsage>,
    pub record_list: Vec<RecordUsage>,
    pub snapshot_list: Vec<DirItem>,
    pub cache_mount_list: Vec<DirItem>,
    pub unreferenced_list: Vec<(Digest, u64)>,
}

impl DiskUsage {
    /// The sum of every row's bytes.
    pub fn total_bytes(&self) -> u64 {
        [
            &self.images,
            &self.cache_records,
            &self.snapshots,
            &self.cache_mounts,
            &self.unreferenced_blobs,
        ]
        .iter()
        .map(|r| r.bytes)
        .sum()
    }
}

impl Store {
    /// Measures the store. Reads without locking: a build running meanwhile may make the
    /// numbers slightly stale, never wrong about what exists.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        self.usage_of(&self.inventory()?)
    }
}

impl Store {
    pub(crate) fn usage_of(&self, inv: &Inventory) -> Result<DiskUsage> {
        let mut u = DiskUsage::default();
        let untagged_blobs: BTreeSet<&Digest> = inv
            .untagged
            .iter()
            .flat_map(|i| &i.reach.blobs)
            .filter(|d| !inv.tagged.blobs.contains(*d))
            .collect();
        let image_blobs: BTreeSet<&Digest> = inv
            .tagged
            .blobs
            .iter()
            .chain(untagged_blobs.iter().copied())
            .collect();

        // Images: tagged ones grouped by manifest, then untagged ones.
        let mut by_manifest: std::collections::BTreeMap<&Digest, Vec<String>> = Default::default();
        for (name, m) in &inv.names {
            by_manifest.entry(m).or_default().push(name.clone());
        }
        let mut holders: std::collections::BTreeMap<&Digest, usize> = Default::default();
        let mut images: Vec<(Vec<String>, &Digest, crate::inventory::ReachSummary)> = Vec::new();
        for (m, names) in by_manifest {
            // Walked once for all names in the inventory; again per image for per-image sizes.
            let mut reach = crate::images::Reachable::default();
            self.reach(m, &mut reach)?;
            images.push((names, m, reach.into()));
        }
        for img in &inv.untagged {
            images.push((Vec::new(), &img.root, img.reach.clone()));
        }
        for (_, _, r) in &images {
            for b in &r.blobs {
                *holders.entry(b).or_default() += 1;
            }
        }
        for (names, manifest, reach) in &images {
            let bytes: u64 = reach.blobs.iter().map(|b| inv.blob_size(b)).sum();
            let shared_bytes = reach
                .blobs
                .iter()
                .filter(|b| holders.get(b).copied().unwrap_or(0) > 1)
                .map(|b| inv.blob_size(b))
                .sum();
            u.image_list.push(ImageUsage {
                names: names.clone(),
                manifest: (*manifest).clone(),
                bytes,
                shared_bytes,
            });
        }
        u.images = UsageRow {
            total: inv.tagged.manifests.len()
                + inv
                    .untagged
                    .iter()
                    .map(|i| i.reach.manifests.len().max(1))
                    .sum::<usize>(),
            active: inv.tagged.manifests.len(),
            bytes: image_blobs.iter().map(|b| inv.blob_size(b)).sum(),
            reclaimable: untagged_blobs.iter().map(|b| inv.blob_size(b)).sum(),
        };

        // Cache records: the layers only they hold.
        let mut record_only: BTreeSet<&Digest> = BTreeSet::new();
        for r in &inv.records {
            let layer = r.layer.as_ref().map(|l| &l.digest);
            let in_image = layer.is_some_and(|d| image_blobs.contains(d));
            let present = layer.is_some_and(|d| inv.blobs.contains_key(d));
            let only_cache = layer.filter(|_| present && !in_image);
            let first = only_cache.is_some_and(|d| record_only.insert(d));
            u.record_list.push(RecordUsage {
                key: r.key.clone(),
                layer: layer.cloned(),
                bytes: if first {
                    only_cache.map_or(0, |d| inv.blob_size(d))
                } else {
                    0
                },
                in_image,
                last_used: r.last_used,
            });
            if layer.is_some_and(|d| inv.tagged.blobs.contains(d)) {
                u.cache_records.active += 1;
            }
        }
        let record_bytes: u64 = record_only.iter().map(|d| inv.blob_size(d)).sum();
        u.cache_records.total = inv.records.len();
        u.cache_records.bytes = record_bytes;
        u.cache_records.reclaimable = record_bytes;

        // Snapshots: those a tagged image needs stay.
        for s in &inv.snapshots {
            let active = s.complete && inv.tagged.diff_ids.contains(&s.id);
            u.snapshots.total += 1;
            u.snapshots.bytes += s.disk_bytes;
            if active {
                u.snapshots.active += 1;
            } else {
                u.snapshots.reclaimable += s.disk_bytes;
            }
            u.snapshot_list.push(DirItem {
                // The listing names a directory: the diffID's digest text.
                id: s.id.as_tar_digest().clone(),
                bytes: s.disk_bytes,
                active,
            });
        }

        for c in &inv.cache_mounts {
            u.cache_mounts.total += 1;
            u.cache_mounts.bytes += c.disk_bytes;
            u.cache_mounts.reclaimable += c.disk_bytes;
            u.cache_mount_list.push(DirItem {
                id: c.id.clone(),
                bytes: c.disk_bytes,
                active: false,
            });
        }

        for (d, size) in &inv.blobs {
            if !image_blobs.contains(d) && !record_only.contains(d) {
                u.unreferenced_blobs.total += 1;
                u.unreferenced_blobs.bytes += size;
                u.unreferenced_list.push((d.clone(), *size));
            }
        }
        u.unreferenced_blobs.reclaimable = u.unreferenced_blobs.bytes;
        Ok(u)
    }
}
