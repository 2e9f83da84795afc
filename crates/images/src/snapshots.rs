//! Layers unpacked into snapshot directories, and the lower dirs of an overlay over an image.

use std::path::PathBuf;

use kiln_image::{DiffId, LayerRef};
use kiln_store::Store;

use crate::error::{ImageError, Result};

/// The snapshot directory of a layer, unpacking the blob first if needed.
pub fn ensure_snapshot(store: &Store, layer: &LayerRef) -> Result<PathBuf> {
    let diff_id = &layer.diff_id;
    if store.has_snapshot(diff_id) {
        return Ok(store.snapshot_path(diff_id));
    }
    // One unpacker per layer across builds: the others wait, then find it published.
    let _lock = store.lock_object(kiln_store::ObjectLock::Snapshot(diff_id))?;
    if store.has_snapshot(diff_id) {
        return Ok(store.snapshot_path(diff_id));
    }
    let blob = store.open_blob(&layer.digest)?;
    let staging = store.snapshot_staging()?;
    let actual = kiln_layer::unpack_layer(
        std::io::BufReader::with_capacity(256 * 1024, blob),
        staging.path(),
    )?;
    kiln_image::check_diff_id(&actual, diff_id).map_err(|source| ImageError::Invalid {
        reference: layer.digest.to_string(),
        source,
    })?;
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
pub fn lower_dirs(
    store: &Store,
    layers: impl IntoIterator<Item = LayerRef>,
) -> Result<Vec<PathBuf>> {
    let layers: Vec<_> = layers.into_iter().collect();
    let mut dirs = topmost_occurrences(layers.iter().map(|l| &l.diff_id))
        .into_iter()
        .map(|i| ensure_snapshot(store, &layers[i]))
        .collect::<Result<Vec<_>>>()?;
    dirs.reverse();
    Ok(dirs)
}

/// The positions (bottom first, ascending) of the topmost occurrence of each diffID in a layer
/// list given bottom first.
fn topmost_occurrences<'a>(diff_ids: impl Iterator<Item = &'a DiffId>) -> Vec<usize> {
    let mut topmost = std::collections::HashMap::new();
    for (i, d) in diff_ids.enumerate() {
        topmost.insert(d, i);
    }
    let mut positions: Vec<usize> = topmost.into_values().collect();
    positions.sort_unstable();
    positions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::layer;

    #[test]
    fn a_repeated_layer_is_passed_once_at_its_topmost_position() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b, c) = (layer(&store, "a"), layer(&store, "b"), layer(&store, "c"));
        // Bottom first: a, b, a, then c three times in a row, then b again.
        let list = [&a, &b, &a, &c, &c, &c, &b];
        let dirs = lower_dirs(&store, list.into_iter().cloned()).unwrap();
        let snapshot = |l: &LayerRef| store.snapshot_path(&l.diff_id);
        assert_eq!(dirs, vec![snapshot(&b), snapshot(&c), snapshot(&a)]);
        for (dir, name) in dirs.iter().zip(["b", "c", "a"]) {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), name.as_bytes());
        }
    }

    #[test]
    fn a_list_without_repeats_keeps_every_layer_in_order() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b) = (layer(&store, "a"), layer(&store, "b"));
        let dirs = lower_dirs(&store, [a.clone(), b.clone()]).unwrap();
        assert_eq!(
            dirs,
            vec![
                store.snapshot_path(&b.diff_id),
                store.snapshot_path(&a.diff_id)
            ]
        );
        assert!(lower_dirs(&store, std::iter::empty()).unwrap().is_empty());
    }

    #[test]
    fn a_layer_whose_content_is_not_its_diff_id_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let (a, b) = (layer(&store, "a"), layer(&store, "b"));
        let mislabelled = LayerRef {
            diff_id: b.diff_id.clone(),
            ..a.clone()
        };
        let err = ensure_snapshot(&store, &mislabelled).unwrap_err();
        assert_eq!(err.kind(), kiln_error::ErrorKind::Internal);
        assert!(err.to_string().contains(&a.digest.to_string()), "{err}");
        assert!(!store.has_snapshot(&b.diff_id));
    }
}
