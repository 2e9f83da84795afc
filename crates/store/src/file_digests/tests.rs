use std::path::Path;

use super::*;

/// Metadata of a file last changed long ago (2001), so never racy.
fn old_stat(size: u64) -> FileStat {
    FileStat {
        size,
        mtime_ns: 1_000_000_000_123_456_789,
        ctime_ns: 1_000_000_000_123_456_789,
        inode: 42,
        device: 7,
        mode: 0o100644,
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn index_files(store: &Store) -> Vec<PathBuf> {
    match std::fs::read_dir(store.root().join("context-index")) {
        Ok(dir) => dir.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn recorded_digests_survive_a_reload_and_need_identical_metadata() {
    let (_dir, store) = store();
    let context = Path::new("/src/app");
    let digest = Digest::of(b"content");
    let mut index = store.file_digest_index(context);
    assert!(index.is_empty());
    index.insert(b"src/main.rs", old_stat(7), digest.clone());
    index.save(&store).unwrap();

    let mut index = store.file_digest_index(context);
    assert_eq!(index.lookup(b"src/main.rs", &old_stat(7)), Some(digest));
    assert_eq!(index.lookup(b"src/other.rs", &old_stat(7)), None);
    // Every field of the metadata counts.
    let changes: [fn(&mut FileStat); 6] = [
        |s| s.size += 1,
        |s| s.mtime_ns += 1,
        |s| s.ctime_ns += 1,
        |s| s.inode += 1,
        |s| s.device += 1,
        |s| s.mode ^= 0o100,
    ];
    for change in changes {
        let mut stat = old_stat(7);
        change(&mut stat);
        assert_eq!(index.lookup(b"src/main.rs", &stat), None, "{stat:?}");
    }
    // Indexes are per context directory.
    let mut other = store.file_digest_index(Path::new("/src/other"));
    assert_eq!(other.lookup(b"src/main.rs", &old_stat(7)), None);
}

#[test]
fn files_changed_around_the_session_start_are_never_trusted() {
    let (_dir, store) = store();
    let context = Path::new("/ctx");
    let mut index = store.file_digest_index(context);
    let now = now_ns();
    let fresh = FileStat {
        mtime_ns: now,
        ctime_ns: now,
        ..old_stat(1)
    };
    // Changed just before the session started, within the clock's granularity.
    let just_before = FileStat {
        mtime_ns: now - FINE_GRANULARITY_NS / 2,
        ctime_ns: now - FINE_GRANULARITY_NS / 2,
        ..old_stat(2)
    };
    // An old mtime (set by `touch -d`) does not hide a fresh ctime.
    let backdated = FileStat {
        ctime_ns: now,
        ..old_stat(3)
    };
    // Whole-second timestamps: two seconds are not old enough to be sure.
    let coarse_second = (now / 1_000_000_000 - 1) * 1_000_000_000;
    let coarse = FileStat {
        mtime_ns: coarse_second,
        ctime_ns: coarse_second,
        ..old_stat(4)
    };
    for (name, stat) in [
        (&b"fresh"[..], fresh),
        (b"just-before", just_before),
        (b"backdated", backdated),
        (b"coarse", coarse),
        (b"old", old_stat(5)),
    ] {
        index.insert(name, stat, Digest::of(name));
    }
    assert_eq!(index.lookup(b"fresh", &fresh), None);
    assert_eq!(index.lookup(b"just-before", &just_before), None);
    assert_eq!(index.lookup(b"backdated", &backdated), None);
    assert_eq!(index.lookup(b"coarse", &coarse), None);
    assert!(index.lookup(b"old", &old_stat(5)).is_some());
    index.save(&store).unwrap();
    let index = store.file_digest_index(context);
    assert_eq!(index.len(), 1, "only the old file is remembered");
}

#[test]
fn a_damaged_index_is_ignored_and_rewritten() {
    let (_dir, store) = store();
    let context = Path::new("/ctx");
    let mut index = store.file_digest_index(context);
    index.insert(b"a", old_stat(1), Digest::of(b"a"));
    index.insert(b"b", old_stat(2), Digest::of(b"b"));
    index.save(&store).unwrap();
    let [file] = index_files(&store).try_into().unwrap();
    let good = std::fs::read(&file).unwrap();
    assert_eq!(store.file_digest_index(context).len(), 2);

    let mut flipped = good.clone();
    flipped[20] ^= 1;
    let damaged: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"garbage".to_vec(),
        good[..good.len() - 1].to_vec(),
        good[..good.len() / 2].to_vec(),
        flipped,
    ];
    for bytes in damaged {
        std::fs::write(&file, &bytes).unwrap();
        let mut index = store.file_digest_index(context);
        assert!(index.is_empty(), "{} bytes", bytes.len());
        index.insert(b"c", old_stat(3), Digest::of(b"c"));
        index.save(&store).unwrap();
        assert_eq!(store.file_digest_index(context).len(), 1);
    }

    // A valid file for another directory (a name collision, or a copied store) is not used.
    std::fs::write(&file, &good).unwrap();
    let other = store.file_digest_index(Path::new("/elsewhere"));
    std::fs::copy(&file, &other.path).unwrap();
    assert!(store.file_digest_index(Path::new("/elsewhere")).is_empty());
}

#[test]
fn nothing_is_written_when_nothing_was_recorded() {
    let (_dir, store) = store();
    let mut index = store.file_digest_index(Path::new("/ctx"));
    assert_eq!(index.lookup(b"a", &old_stat(1)), None);
    index.save(&store).unwrap();
    assert!(index_files(&store).is_empty());
}

#[test]
fn entries_unused_for_many_saves_are_dropped() {
    let (_dir, store) = store();
    let context = Path::new("/ctx");
    let mut index = store.file_digest_index(context);
    index.insert(b"kept", old_stat(1), Digest::of(b"kept"));
    index.insert(b"deleted", old_stat(2), Digest::of(b"deleted"));
    index.save(&store).unwrap();
    for round in 0..MAX_IDLE_SAVES {
        let mut index = store.file_digest_index(context);
        assert!(index.lookup(b"kept", &old_stat(1)).is_some(), "{round}");
        // A build that hashed something new (so the index is saved) but not `deleted`.
        index.insert(b"new", old_stat(round), Digest::of(b"new"));
        index.save(&store).unwrap();
    }
    let mut index = store.file_digest_index(context);
    assert!(index.lookup(b"kept", &old_stat(1)).is_some());
    assert_eq!(index.lookup(b"deleted", &old_stat(2)), None);
}

#[test]
fn only_the_most_recently_saved_contexts_are_remembered() {
    let (_dir, store) = store();
    for n in 0..MAX_INDEXES + 3 {
        let context = PathBuf::from(format!("/ctx/{n}"));
        let mut index = store.file_digest_index(&context);
        index.insert(b"f", old_stat(1), Digest::of(b"f"));
        index.save(&store).unwrap();
        assert!(index.path.exists());
    }
    assert_eq!(index_files(&store).len(), MAX_INDEXES);
}
