use std::time::{Duration, SystemTime};

use super::*;
use crate::test_support::{TestImage, key as cache_key, store};

/// A cache record holding `layer` (written as a blob), last used `age` ago, with a snapshot.
fn record(s: &Store, key: &[u8], layer: &[u8], age: Duration) -> (CacheKey, Digest) {
    let blob = s.write_blob(layer).unwrap();
    let diff_id = TestImage::diff_id_of(layer);
    snapshot(s, &diff_id);
    let rec = format!(
        r#"{{"layer":{{"digest":"{blob}","diff_id":"{diff_id}","size":{},"media_type":"m"}},"created":"x"}}"#,
        layer.len()
    );
    let key = cache_key(key);
    s.cache_put(&key, rec.as_bytes()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(s.cache_record_path(&key))
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
    (key, blob)
}

fn snapshot(s: &Store, diff_id: &DiffId) {
    let st = s.snapshot_staging().unwrap();
    std::fs::write(st.path().join("f"), vec![7u8; 10_000]).unwrap();
    s.commit_snapshot(st, diff_id).unwrap();
}

const HOUR: Duration = Duration::from_secs(3600);

/// `prune --all`: everything not held by a tag or a container goes.
fn prune_all(s: &Store, lock: &StoreLock) -> PruneReport {
    let all = PruneOptions {
        all: true,
        ..Default::default()
    };
    s.prune(lock, &all).unwrap()
}

#[test]
fn prune_keeps_tagged_images_and_removes_cache_and_garbage() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "app:latest", &[b"base layer", b"app layer"]);
    for d in &img.diff_ids {
        snapshot(&s, d);
    }
    // A record for a layer of the tagged image stays (it frees nothing and keeps it cached).
    let (kept_key, _) = record(&s, b"k-in-image", b"app layer", HOUR);
    let (old_key, old_blob) = record(&s, b"k-old", b"old layer", 10 * HOUR);
    let orphan = s.write_blob(b"left by rmi").unwrap();
    let untagged = TestImage::write(&s, "", &[b"untagged layer"]);
    let _ = s.temp_dir("run-").unwrap().keep();

    let lock = s.lock_exclusive().unwrap();
    let r = s.prune(&lock, &PruneOptions::default()).unwrap();
    assert_eq!(r.count(PrunedKind::Leftover), 1);
    assert_eq!(r.count(PrunedKind::CacheRecord), 1);
    assert!(s.cache_get(&kept_key).unwrap().is_some());
    assert!(s.cache_get(&old_key).unwrap().is_none());
    assert!(!s.has_blob(&old_blob));
    assert!(!s.has_snapshot(&TestImage::diff_id_of(b"old layer")));
    assert!(!s.has_blob(&orphan));
    // Untagged images go only with `all`.
    assert!(s.has_blob(&untagged.manifest) && s.has_blob(&untagged.layers[0]));
    for b in [&img.manifest, &img.config, &img.layers[0], &img.layers[1]] {
        assert!(s.has_blob(b));
    }
    assert!(img.diff_ids.iter().all(|d| s.has_snapshot(d)));
    assert_eq!(r.before - r.after, r.reclaimed());
    assert!(s.check(&lock, false).unwrap().is_consistent());

    let r = prune_all(&s, &lock);
    assert_eq!(r.count(PrunedKind::Image), 1);
    assert!(!s.has_blob(&untagged.manifest) && !s.has_blob(&untagged.layers[0]));
    assert!(!s.has_blob(&untagged.config));
    assert!(
        s.cache_get(&kept_key).unwrap().is_none(),
        "all: every record"
    );
    for b in [&img.manifest, &img.config, &img.layers[0], &img.layers[1]] {
        assert!(s.has_blob(b), "a tagged image is never pruned");
    }
    assert!(img.diff_ids.iter().all(|d| s.has_snapshot(d)));
    let usage = s.disk_usage().unwrap();
    assert_eq!(usage.images.reclaimable, 0);
    assert_eq!(usage.cache_records.total, 0);
    assert_eq!(usage.unreferenced_blobs.total, 0);
}

#[test]
fn least_recently_used_go_first_and_keep_storage_stops_the_pass() {
    let (_d, s) = store();
    let big = vec![1u8; 100_000];
    let mut big2 = big.clone();
    big2[0] = 2;
    let mut big3 = big.clone();
    big3[0] = 3;
    let (oldest, _) = record(&s, b"a", &big, 30 * HOUR);
    let (middle, _) = record(&s, b"b", &big2, 20 * HOUR);
    let (newest, _) = record(&s, b"c", &big3, HOUR);
    // A hit makes the oldest the newest.
    s.cache_touch(&oldest).unwrap();

    let lock = s.lock_exclusive().unwrap();
    let before = s.disk_usage().unwrap().total_bytes();
    let r = s
        .prune(
            &lock,
            &PruneOptions {
                keep_storage: Some(before - 50_000),
                ..Default::default()
            },
        )
        .unwrap();
    let gone: Vec<_> = r
        .removed
        .iter()
        .filter(|p| p.kind == PrunedKind::CacheRecord)
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(gone, vec![middle.hex().to_owned()]);
    assert!(r.after <= before - 50_000);
    assert!(s.cache_get(&newest).unwrap().is_some());
    assert!(s.cache_get(&oldest).unwrap().is_some());
}

#[test]
fn until_spares_what_was_used_recently() {
    let (_d, s) = store();
    let (old, _) = record(&s, b"old", b"old", 48 * HOUR);
    let (recent, _) = record(&s, b"recent", b"recent", HOUR);
    let lock = s.lock_exclusive().unwrap();
    let r = s
        .prune(
            &lock,
            &PruneOptions {
                unused_for: Some(24 * HOUR),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.count(PrunedKind::CacheRecord), 1);
    assert!(s.cache_get(&old).unwrap().is_none());
    assert!(s.cache_get(&recent).unwrap().is_some());
}

#[test]
fn df_rows_add_up_and_say_what_prune_all_frees() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "app:latest", &[b"shared layer"]);
    s.set_name("alias:latest", &img.manifest).unwrap();
    TestImage::write(&s, "", &[b"shared layer", b"own layer"]);
    record(&s, b"r", b"cache-only layer", HOUR);
    s.write_blob(b"orphan").unwrap();
    let u = s.disk_usage().unwrap();
    assert_eq!((u.images.total, u.images.active), (2, 1));
    assert_eq!(u.image_list.len(), 2);
    assert_eq!(u.cache_records.total, 1);
    assert_eq!(u.cache_records.bytes, b"cache-only layer".len() as u64);
    assert_eq!(u.unreferenced_blobs.total, 1);
    assert_eq!(u.unreferenced_blobs.bytes, 6);
    assert_eq!(u.snapshots.total, 1);
    assert!(u.snapshots.bytes >= 10_000);
    let blobs: u64 = s.list_blobs().unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(
        u.images.bytes + u.cache_records.bytes + u.unreferenced_blobs.bytes,
        blobs
    );
    let reclaimable = u.images.reclaimable
        + u.cache_records.reclaimable
        + u.snapshots.reclaimable
        + u.unreferenced_blobs.reclaimable;
    let lock = s.lock_exclusive().unwrap();
    let r = prune_all(&s, &lock);
    assert_eq!(r.reclaimed(), reclaimable);
    let after = s.disk_usage().unwrap();
    assert_eq!(after.total_bytes(), u.total_bytes() - reclaimable);
}

#[test]
fn prune_keeps_the_images_of_containers() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "", &[b"container layer"]);
    for d in &img.diff_ids {
        snapshot(&s, d);
    }
    let mut c = crate::containers::tests::record(&s, "user", "t");
    c.manifest = img.manifest.to_string();
    s.create_container(&mut c).unwrap();
    let lock = s.lock_exclusive().unwrap();
    prune_all(&s, &lock);
    assert!(s.has_blob(&img.manifest) && s.has_blob(&img.layers[0]));
    assert!(s.has_snapshot(&img.diff_ids[0]));
    s.remove_container(&c.id).unwrap();
    let r = prune_all(&s, &lock);
    assert_eq!(r.count(PrunedKind::Image), 1);
    assert!(!s.has_blob(&img.manifest));
}

#[test]
fn prune_drops_variant_records_of_gone_blobs_and_explain_records_of_gone_dockerfiles() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "app:latest", &[b"layer"]);
    let variant = |compression: &str, digest: &Digest| crate::LayerVariant {
        compression: compression.into(),
        media_type: "m".into(),
        digest: digest.clone(),
        size: 5,
    };
    let layer = &img.diff_ids[0];
    let other_layer = DiffId::of_tar(b"another tar");
    let gone = Digest::of(b"a blob pruned long ago");
    s.record_layer_variant(layer, &variant("gzip-6", &img.layers[0]))
        .unwrap();
    s.record_layer_variant(layer, &variant("zstd-3", &gone))
        .unwrap();
    s.record_layer_variant(&other_layer, &variant("gzip-6", &gone))
        .unwrap();

    let context = tempfile::tempdir().unwrap();
    let dockerfile = context.path().join("Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
    let explain = s.root().join("explain");
    std::fs::create_dir_all(&explain).unwrap();
    let write = |name: &str, text: String| std::fs::write(explain.join(name), text).unwrap();
    write(
        "live",
        format!(r#"{{"version":1,"dockerfile":{:?},"key":"x"}}"#, dockerfile),
    );
    write(
        "removed-dockerfile",
        r#"{"version":1,"dockerfile":"/nonexistent/Dockerfile"}"#.into(),
    );
    write("before-the-field", r#"{"version":1,"key":"x"}"#.into());
    write("damaged", "{not json".into());

    // `until` spares what was written recently.
    let lock = s.lock_exclusive().unwrap();
    let spared = s
        .prune(
            &lock,
            &PruneOptions {
                unused_for: Some(HOUR),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(spared.count(PrunedKind::ExplainRecord), 0);
    // A variant whose blob is gone is a dangling reference, removed whatever its age.
    assert_eq!(spared.count(PrunedKind::LayerVariant), 2);

    let r = s.prune(&lock, &PruneOptions::default()).unwrap();
    let mut explained: Vec<&str> = r
        .removed
        .iter()
        .filter(|p| p.kind == PrunedKind::ExplainRecord)
        .map(|p| p.id.as_str())
        .collect();
    explained.sort_unstable();
    assert_eq!(
        explained,
        ["before-the-field", "damaged", "removed-dockerfile"]
    );
    assert!(explain.join("live").exists());
    assert_eq!(
        s.layer_variants(layer).unwrap(),
        [variant("gzip-6", &img.layers[0])]
    );
    assert!(
        !s.root()
            .join("layer-variants")
            .join(other_layer.hex())
            .exists()
    );
    assert!(s.has_blob(&img.layers[0]), "the tagged image's layer stays");

    // `all` takes the rest of the build cache's explain records too.
    let r = prune_all(&s, &lock);
    assert_eq!(r.count(PrunedKind::ExplainRecord), 1);
    assert!(!explain.join("live").exists());
}

#[test]
fn prune_removes_kept_build_contexts_no_build_holds() {
    use rustix::fs::{FlockOperation, flock};
    let (_d, s) = store();
    let slots = s.root().join(crate::BUILD_CONTEXTS);
    for n in ["0", "1"] {
        std::fs::create_dir_all(slots.join(n).join("context")).unwrap();
        std::fs::write(slots.join(n).join("context/file"), b"user file").unwrap();
    }
    // Slot 1 is in use by a build.
    let held = std::fs::File::create(slots.join("1.lock")).unwrap();
    flock(&held, FlockOperation::LockExclusive).unwrap();
    let lock = s.lock_exclusive().unwrap();
    let r = s.prune(&lock, &PruneOptions::default()).unwrap();
    let removed: Vec<_> = r
        .removed
        .iter()
        .filter(|p| p.kind == PrunedKind::Leftover)
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(removed, ["build-contexts/0"]);
    assert!(!slots.join("0").exists());
    assert!(slots.join("1/context/file").exists());
}

#[test]
fn scopes_keep_images_and_cache_apart() {
    let (_d, s) = store();
    let (key, blob) = record(&s, b"k-cache", b"cached layer", 10 * HOUR);
    let one = TestImage::write(&s, "", &[b"first untagged"]);
    let two = TestImage::write(&s, "", &[b"second untagged"]);
    let lock = s.lock_exclusive().unwrap();

    // The build cache only: records go, untagged images stay even with `all`.
    let builder = PruneOptions {
        all: true,
        scope: PruneScope::BuildCache,
        ..Default::default()
    };
    let r = s.prune(&lock, &builder).unwrap();
    assert_eq!(r.count(PrunedKind::CacheRecord), 1);
    assert_eq!(r.count(PrunedKind::Image), 0);
    assert!(s.cache_get(&key).unwrap().is_none() && !s.has_blob(&blob));
    assert!(s.has_blob(&one.manifest) && s.has_blob(&two.manifest));

    // Images only: the listed one with what only it holds; the other and records stay.
    let (key2, _) = record(&s, b"k-cache-2", b"cached layer 2", 10 * HOUR);
    let images = PruneOptions {
        scope: PruneScope::UntaggedImages(vec![one.manifest.clone()]),
        ..Default::default()
    };
    let r = s.prune(&lock, &images).unwrap();
    assert_eq!(r.count(PrunedKind::Image), 1);
    assert_eq!(r.count(PrunedKind::CacheRecord), 0);
    assert!(r.reclaimed() > 0);
    assert!(!s.has_blob(&one.manifest) && !s.has_blob(&one.layers[0]));
    assert!(s.has_blob(&two.manifest) && s.cache_get(&key2).unwrap().is_some());
}
