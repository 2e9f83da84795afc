use super::*;
use crate::CacheKey;
use crate::test_support::{TestImage, store};

fn problems(r: &CheckReport) -> Vec<String> {
    r.findings
        .iter()
        .map(|f| format!("{:?} {}: {}", f.severity, f.object, f.problem))
        .collect()
}

#[test]
fn a_sound_store_passes() {
    let (_d, s) = store();
    TestImage::write(&s, "app:latest", &[b"layer one", b"layer two"]);
    let lock = s.lock_exclusive().unwrap();
    let r = s.check(&lock, false).unwrap();
    assert!(r.findings.is_empty(), "{:?}", problems(&r));
    assert!(r.is_consistent());
    assert_eq!(r.names, 1);
    assert_eq!(r.blobs, 4);
}

#[test]
fn a_corrupt_blob_is_named_and_repair_exposes_the_broken_image() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "app:latest", &[b"layer one"]);
    let layer = &img.layers[0];
    std::fs::write(s.blob_path(layer), b"bit rot").unwrap();
    let lock = s.lock_exclusive().unwrap();
    let r = s.check(&lock, false).unwrap();
    assert!(!r.is_consistent());
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains(&format!("blob {layer}")), "{p:?}");
    assert!(p[0].contains(&Digest::of(b"bit rot").to_string()), "{p:?}");

    let r = s.check(&lock, true).unwrap();
    assert!(!s.has_blob(layer));
    // The blob is gone, so the image that needs it is now reported as broken.
    let r2 = s.check(&lock, false).unwrap();
    assert!(r.findings[0].repaired);
    let p = problems(&r2);
    assert!(
        p.iter()
            .any(|p| p.contains("image app:latest") && p.contains("missing")),
        "{p:?}"
    );
    assert!(!r2.is_consistent());
}

#[test]
fn missing_manifest_config_and_layers_are_reported_by_image() {
    let (_d, s) = store();
    let img = TestImage::write(&s, "app:latest", &[b"l1"]);
    s.set_name("gone:latest", &Digest::of(b"no such manifest"))
        .unwrap();
    std::fs::remove_file(s.blob_path(&img.config)).unwrap();
    let lock = s.lock_exclusive().unwrap();
    let p = problems(&s.check(&lock, false).unwrap());
    assert!(
        p.iter()
            .any(|p| p.contains("image gone:latest") && p.contains("is missing")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.contains("image app:latest")
            && p.contains(&format!("config {} is missing", img.config))),
        "{p:?}"
    );
}

#[test]
fn leftovers_are_reported_and_repaired_without_failing() {
    let (_d, s) = store();
    TestImage::write(&s, "app:latest", &[b"l1"]);
    let stale = s.temp_dir("run-").unwrap().keep();
    std::fs::create_dir_all(stale.join("upper/deep")).unwrap();
    std::fs::write(s.root().join("tmp/.tmpXYZ"), b"half a blob").unwrap();
    let lock = s.lock_exclusive().unwrap();
    let r = s.check(&lock, false).unwrap();
    assert!(r.is_consistent());
    assert_eq!(r.findings.len(), 2, "{:?}", problems(&r));
    assert!(r.findings.iter().all(|f| f.severity == Severity::Leftover));
    let r = s.check(&lock, true).unwrap();
    assert!(r.findings.iter().all(|f| f.repaired));
    assert!(s.check(&lock, false).unwrap().findings.is_empty());
}

#[test]
fn dangling_and_unreadable_records_and_incomplete_snapshots() {
    let (_d, s) = store();
    let missing = Digest::of(b"missing layer");
    let rec = format!(
        r#"{{"layer":{{"digest":"{missing}","diff_id":"{missing}","size":1,"media_type":"m"}},"created":"x"}}"#
    );
    let dangling = CacheKey::from_hash(Digest::of(b"k1"));
    s.cache_put(&dangling, rec.as_bytes()).unwrap();
    let garbage = CacheKey::from_hash(Digest::of(b"k2"));
    s.cache_put(&garbage, b"{{{").unwrap();
    let half = DiffId::of_tar(b"half");
    std::fs::create_dir_all(s.snapshot_path(&half)).unwrap();

    let lock = s.lock_exclusive().unwrap();
    let r = s.check(&lock, false).unwrap();
    let p = problems(&r);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(
        p.iter()
            .any(|p| p.contains(dangling.hex()) && p.contains("missing"))
    );
    assert!(
        p.iter()
            .any(|p| p.contains(garbage.hex()) && p.contains("unreadable"))
    );
    assert!(p.iter().any(|p| p.contains(&format!("snapshot {half}"))));
    assert!(!r.is_consistent());

    let r = s.check(&lock, true).unwrap();
    assert!(r.is_consistent(), "{:?}", problems(&r));
    assert!(s.check(&lock, false).unwrap().findings.is_empty());
    assert!(s.cache_get(&dangling).unwrap().is_none());
}
