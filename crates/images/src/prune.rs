//! `docker image prune`: removing the images nothing uses, dangling (unnamed) ones by default
//! or every unused one, with Docker's `until` and `label` filters.
//!
//! The key decision: the images crate only chooses (no container uses it, the filters keep
//! it not) and untags; the store's collector then removes exactly those images with the
//! blobs and snapshots no other image, container or cache record holds, so a prune never
//! takes a layer something else still needs and never touches the build cache.

use kiln_image::{Digest, Reference};
use kiln_store::{PruneOptions, PruneScope, PrunedKind, Store, StoreLock, Timestamp};

use crate::error::{ImageError, Result};
use crate::list::{ListFilter, list_images};
use crate::names::{untag, users};

/// Which images a prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneFilter {
    /// Only unnamed images (Docker's default `dangling=true`); `false`: every unused image.
    pub dangling_only: bool,
    /// Only images created before this time.
    pub until: Option<Timestamp>,
    /// `(key, value, negated)`: `label=k[=v]` must match, `label!=k[=v]` must not.
    pub labels: Vec<(String, Option<String>, bool)>,
}

impl Default for PruneFilter {
    fn default() -> Self {
        PruneFilter {
            dangling_only: true,
            until: None,
            labels: Vec::new(),
        }
    }
}

impl PruneFilter {
    /// Parses Docker's filters as `(key, value)` pairs; `until` is given already parsed by
    /// the caller's time rules (`parse_until`), as a function of the value.
    pub fn parse(
        filters: &[(String, String)],
        parse_until: impl Fn(&str) -> Option<Timestamp>,
    ) -> Result<PruneFilter> {
        let mut out = PruneFilter::default();
        for (key, value) in filters {
            let bad = || ImageError::BadPruneFilter(format!("{key}={value}"));
            match key.as_str() {
                "dangling" => {
                    out.dangling_only = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    }
                }
                "until" => out.until = Some(parse_until(value).ok_or_else(bad)?),
                "label" | "label!" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (value.clone(), None),
                    };
                    out.labels.push((k, v, key == "label!"));
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }

    fn keeps(&self, img: &crate::StoredImage) -> bool {
        let created = img
            .config
            .created
            .as_deref()
            .and_then(|c| c.parse::<Timestamp>().ok());
        if let (Some(until), Some(created)) = (self.until, created)
            && created >= until
        {
            return true;
        }
        let labels = &img.config.config.labels;
        !self.labels.iter().all(|(k, v, negated)| {
            let matches = match (labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (found, None) => found.is_some(),
                (None, Some(_)) => false,
            };
            matches != *negated
        })
    }
}

/// What a prune did, in the order Docker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesPruned {
    pub untagged: Vec<Reference>,
    /// The image IDs (config digests) removed.
    pub deleted: Vec<Digest>,
    pub reclaimed: u64,
}

/// Removes the images `filter` selects that no container uses. Needs the exclusive store
/// lock (`held`), as every prune.
pub fn prune_images(store: &Store, held: &StoreLock, filter: &PruneFilter) -> Result<ImagesPruned> {
    let listing = ListFilter::default().with_unnamed(true);
    let mut out = ImagesPruned::default();
    // manifest → image ID, for each image chosen.
    let mut chosen: Vec<(Digest, Digest)> = Vec::new();
    let rows = list_images(store, &listing)?;
    for row in &rows {
        if filter.dangling_only && row.name.is_some() {
            continue;
        }
        if filter.keeps(&row.image) || !users(store, &row.image)?.is_empty() {
            continue;
        }
        // An image keeps every name or loses them all: one kept name keeps it.
        let names: Vec<&Reference> = rows
            .iter()
            .filter(|r| r.image.manifest_digest == row.image.manifest_digest)
            .filter_map(|r| r.name.as_ref())
            .collect();
        if let Some(name) = &row.name {
            untag(store, name)?;
            out.untagged.push(name.clone());
        }
        let last = row.name.as_ref().is_none_or(|n| names.last() == Some(&n));
        if last && !chosen.iter().any(|(m, _)| *m == row.image.manifest_digest) {
            chosen.push((
                row.image.manifest_digest.clone(),
                row.image.config_digest.clone(),
            ));
        }
    }
    if chosen.is_empty() {
        return Ok(out);
    }
    let options = PruneOptions {
        scope: PruneScope::UntaggedImages(chosen.iter().map(|(m, _)| m.clone()).collect()),
        ..PruneOptions::default()
    };
    let report = store.prune(held, &options)?;
    for removed in report
        .removed
        .iter()
        .filter(|p| p.kind == PrunedKind::Image)
    {
        if let Some((_, id)) = chosen.iter().find(|(m, _)| m.to_string() == removed.id) {
            out.deleted.push(id.clone());
            out.reclaimed += removed.bytes;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{container_on, image};
    use kiln_store::ContainerStatus;

    #[test]
    fn dangling_images_go_and_used_or_named_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dangling = image(&store, "2026-01-01T00:00:00Z");
        let used = image(&store, "2026-01-02T00:00:00Z");
        let (_c, _lock) = container_on(&store, &used, ContainerStatus::Exited);
        let named = image(&store, "2026-01-03T00:00:00Z");
        store
            .set_name("docker.io/library/app:1", &named.manifest_digest)
            .unwrap();
        let held = store.lock_exclusive().unwrap();

        let pruned = prune_images(&store, &held, &PruneFilter::default()).unwrap();
        assert_eq!(
            pruned.deleted,
            std::slice::from_ref(&dangling.config_digest)
        );
        assert!(pruned.untagged.is_empty());
        assert!(!store.has_blob(&dangling.manifest_digest));
        assert!(store.has_blob(&used.manifest_digest));

        // Not only dangling: the named one too, untagged first; the used one stays.
        let all = PruneFilter::parse(&[("dangling".into(), "false".into())], |_| None).unwrap();
        let pruned = prune_images(&store, &held, &all).unwrap();
        assert_eq!(pruned.untagged.len(), 1);
        assert_eq!(pruned.deleted, std::slice::from_ref(&named.config_digest));
        assert!(store.has_blob(&used.manifest_digest));

        let bad = PruneFilter::parse(&[("reference".into(), "x".into())], |_| None).unwrap_err();
        assert_eq!(bad.kind(), kiln_error::ErrorKind::InvalidArgument);
    }

    #[test]
    fn until_and_labels_keep_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = image(&store, "2020-01-01T00:00:00Z");
        let new = image(&store, "2026-06-01T00:00:00Z");
        let held = store.lock_exclusive().unwrap();
        let until = PruneFilter::parse(&[("until".into(), "2025".into())], |_| {
            Some("2025-01-01T00:00:00Z".parse().unwrap())
        })
        .unwrap();
        let pruned = prune_images(&store, &held, &until).unwrap();
        assert_eq!(pruned.deleted, std::slice::from_ref(&old.config_digest));
        let labelled = PruneFilter::parse(&[("label".into(), "keep".into())], |_| None).unwrap();
        assert!(
            prune_images(&store, &held, &labelled)
                .unwrap()
                .deleted
                .is_empty()
        );
        assert!(store.has_blob(&new.manifest_digest));
    }
}
