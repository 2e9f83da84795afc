//! A store written before diffIDs, cache keys and layer references were types of their own
//! (`testdata/stores/typed-ids`, made by the previous kiln; its README says how) still works
//! with this kiln: its cache records hit, its layer-variant records are found, its snapshots are
//! used, its image exports and its layers run, and `check`, `system df` and `prune` read it.
//!
//! The cache hit is shown by the image ID: a rebuild that missed would stamp the layers with
//! the time of this run, while a hit reuses the `created` times the old records hold, so only a
//! hit reproduces the fixture's ID.

use std::path::Path;

use super::harness::{Kiln, assert_success, testdata};

/// The ID of `fixture:old` in the fixture store.
const FIXTURE_ID: &str = "sha256:c859d742c00491a5f69bc360d77ba4a9448d54b64e049e95bb6cb7a17b1c9dff";
/// The context the fixture's image was built from.
const CONTEXT: &str = "typed-ids-store";

/// Copies the fixture store into `dest` (so the test never writes into the repository).
fn copy_tree(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dest.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A kiln whose store starts as a copy of the fixture.
fn kiln_on_old_store() -> Kiln {
    let k = Kiln::new();
    copy_tree(&testdata("stores/typed-ids"), k.root.path());
    k
}

#[test]
fn a_store_written_before_typed_ids_builds_exports_and_runs() {
    if std::env::consts::ARCH != "x86_64" {
        // The fixture's cache keys include the platform it was built for (linux/amd64).
        return;
    }
    let k = kiln_on_old_store();
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
    assert_eq!(k.image_id("fixture:old"), FIXTURE_ID);

    // Every filesystem step hits the old records: nothing runs, the ID is the fixture's.
    let log = k.build_ok(CONTEXT, "fixture:again", &[]);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    assert!(
        !log.contains("2/4] DONE") && !log.contains("3/4] DONE"),
        "{log}"
    );
    assert_eq!(k.image_id("fixture:again"), FIXTURE_ID);

    // Another compression takes the recorded layers and re-encodes them (a new variant beside
    // the old gzip record); asking for gzip again finds the old blobs through those records.
    let log = k.build_ok(CONTEXT, "fixture:zstd", &["--compression", "zstd"]);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    // The same config (so the same ID) over other blobs.
    assert_eq!(k.image_id("fixture:zstd"), FIXTURE_ID);
    let variants = std::fs::read_dir(k.root.path().join("layer-variants"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .collect::<Vec<_>>();
    assert_eq!(
        variants,
        vec![2, 2],
        "gzip-6 (old) and zstd-3 (new) per layer"
    );
    let log = k.build_ok(
        CONTEXT,
        "fixture:gzip",
        &["--compression", "gzip", "--compression-level", "6"],
    );
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    assert_eq!(k.image_id("fixture:gzip"), FIXTURE_ID);

    // The image exports as its filesystem.
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    k.build_ok(CONTEXT, "fixture:old", &["-o", dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dest.join("hello.txt")).unwrap(),
        "hello from a store written before typed ids\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/nested.txt")).unwrap(),
        "nested\n"
    );

    // Its layers (through the old snapshots) go under a busybox image that runs.
    let build = k.build_dockerfile(
        "on-old",
        "ARG BASE\nFROM ${BASE}\nCOPY --from=fixture:old / /old/\nRUN cat /old/sub/nested.txt\n",
        &[],
    );
    assert_success(&build, &["build", "on-old"]);
    let ran = k.ok(&["run", "--rm", "on-old", "cat", "/old/hello.txt"]);
    assert_eq!(ran, "hello from a store written before typed ids\n");

    // Usage and prune read the old records; the named images and their layers stay.
    let df = k.ok(&["system", "df", "-v"]);
    for record in ["29a24a96c604", "e5fcdeb24f0c"] {
        assert!(df.contains(record), "the old cache record {record}: {df}");
    }
    k.ok(&["prune", "-f"]);
    assert_eq!(k.image_id("fixture:old"), FIXTURE_ID);
    let log = k.build_ok(CONTEXT, "fixture:after-prune", &[]);
    assert_eq!(log.matches("CACHED").count(), 2, "{log}");
    let check = k.ok(&["check"]);
    assert!(check.contains("the store is consistent"), "{check}");
}
