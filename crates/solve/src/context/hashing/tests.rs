//! The parallel, cached hash against a plain sequential one, and the metadata cache's rules.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::Duration;

use kiln_store::Store;

use super::*;
use crate::context::BuildContext;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// The hash as a single thread computes it from the walk, reading every file: the reference the
/// pipeline must reproduce byte for byte.
fn sequential_hash(sources: &[Source], include_owner: bool) -> Digest {
    let mut hasher = Sha256Hasher::new();
    hasher.update(b"kiln source set v1\0");
    put_u64(&mut hasher, sources.len() as u64);
    for source in sources {
        let mut header = Vec::new();
        put_bytes(&mut header, source.rel_path.as_bytes());
        header.push(u8::from(source.is_dir));
        hasher.update(&header);
        for entry in source.entries() {
            let entry = entry.unwrap();
            let metadata = &entry.metadata;
            let mut head = vec![b'E'];
            put_bytes(&mut head, entry.rel.as_os_str().as_bytes());
            let file_type = metadata.file_type();
            head.push(if file_type.is_file() {
                b'f'
            } else if file_type.is_dir() {
                b'd'
            } else if file_type.is_symlink() {
                b'l'
            } else {
                b'?'
            });
            head.extend_from_slice(&(metadata.mode() & 0o7777).to_le_bytes());
            if include_owner {
                head.push(b'o');
                head.extend_from_slice(&metadata.uid().to_le_bytes());
                head.extend_from_slice(&metadata.gid().to_le_bytes());
            }
            if file_type.is_symlink() {
                let target = std::fs::read_link(&entry.host_path).unwrap();
                put_bytes(&mut head, target.as_os_str().as_bytes());
            }
            hasher.update(&head);
            if file_type.is_file() {
                let content = std::fs::read(&entry.host_path).unwrap();
                put_u64(&mut hasher, content.len() as u64);
                hasher.update(Digest::of(&content).hex().as_bytes());
            }
        }
        hasher.update(b"\xff");
    }
    hasher.finish()
}

/// A tree wider than the pipeline's window, with empty files, links, nested and empty dirs.
fn big_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..WINDOW + 700 {
        let content = format!("file {n}\n").repeat(n % 7);
        write(dir.path(), &format!("d{}/f{n}", n % 13), content.as_bytes());
    }
    write(dir.path(), "big.bin", &vec![7u8; 3 * READ_BUFFER + 11]);
    std::fs::create_dir_all(dir.path().join("empty/dir")).unwrap();
    symlink("d1/f1", dir.path().join("link")).unwrap();
    symlink("/nowhere", dir.path().join("dangling")).unwrap();
    dir
}

fn all(context: &BuildContext) -> Vec<Source> {
    context.resolve_sources(&[".".to_string()]).unwrap()
}

/// Waits until files written so far are older than the clock granularity the cache allows for.
fn let_files_settle() {
    std::thread::sleep(Duration::from_millis(250));
}

#[test]
fn parallel_hash_matches_the_sequential_reference() {
    let dir = big_tree();
    let context = BuildContext::open(dir.path()).unwrap();
    let sources = all(&context);
    let hashed = context.digest_sources(&sources, false).unwrap();
    assert_eq!(hashed.digest, sequential_hash(&sources, false));
    let files = (WINDOW + 700 + 1) as u64;
    assert_eq!(hashed.stats.files, files);
    // Empty files are known without reading them.
    let empty = (0..WINDOW + 700).filter(|n| n % 7 == 0).count() as u64;
    assert_eq!(hashed.stats.files_read, files - empty);
    let on_disk: u64 = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .map(|entry| entry.unwrap().metadata().unwrap())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum();
    assert_eq!(hashed.stats.bytes_read, on_disk);

    // Several sources, one of them a single file, and owners.
    let sources = context
        .resolve_sources(&["d3".to_string(), "big.bin".to_string(), "link".to_string()])
        .unwrap();
    let hashed = context.digest_sources(&sources, true).unwrap();
    assert_eq!(hashed.digest, sequential_hash(&sources, true));
}

#[test]
fn owners_count_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "f", b"x");
    let context = BuildContext::open(dir.path()).unwrap();
    let sources = all(&context);
    let without = context.digest_sources(&sources, false).unwrap().digest;
    let with = context.digest_sources(&sources, true).unwrap().digest;
    std::os::unix::fs::chown(dir.path().join("f"), Some(4242), Some(4343)).unwrap();
    assert_eq!(
        context.digest_sources(&sources, false).unwrap().digest,
        without
    );
    assert_ne!(context.digest_sources(&sources, true).unwrap().digest, with);
}

#[test]
fn a_rebuild_reads_only_files_whose_metadata_changed() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for n in 0..50 {
        write(
            dir.path(),
            &format!("src/{n}.rs"),
            format!("fn f{n}() {{}}").as_bytes(),
        );
    }
    write(dir.path(), "README", b"hello");
    let_files_settle();
    let build = || {
        let context = BuildContext::open(dir.path())
            .unwrap()
            .with_digest_cache(&store);
        let hashed = context.digest_sources(&all(&context), false).unwrap();
        context.save_digest_cache(&store).unwrap();
        assert_eq!(hashed.digest, sequential_hash(&all(&context), false));
        hashed
    };
    let cold = build();
    assert_eq!((cold.stats.files, cold.stats.files_read), (51, 51));
    let noop = build();
    assert_eq!(noop.digest, cold.digest);
    assert_eq!((noop.stats.files_read, noop.stats.bytes_read), (0, 0));

    // Same size, content changed, mtime put back: the ctime still gives it away.
    let readme = dir.path().join("README");
    let mtime = std::fs::metadata(&readme).unwrap().modified().unwrap();
    write(dir.path(), "README", b"hellO");
    std::fs::File::options()
        .write(true)
        .open(&readme)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = build();
    assert_ne!(changed.digest, cold.digest);
    assert_eq!(changed.stats.files_read, 1);
    // Just changed, so maybe not trusted yet (how soon it is depends on the machine's speed);
    // once it is old enough it is remembered.
    let again = build();
    assert_eq!(again.digest, changed.digest);
    assert!(again.stats.files_read <= 1);
    let_files_settle();
    assert!(build().stats.files_read <= 1);
    assert_eq!(build().stats.files_read, 0);

    // The same content elsewhere: another context, same key, its own cache entries.
    let copy = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(dir.path()).min_depth(1) {
        let entry = entry.unwrap();
        let target = copy
            .path()
            .join(entry.path().strip_prefix(dir.path()).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    let context = BuildContext::open(copy.path())
        .unwrap()
        .with_digest_cache(&store);
    let elsewhere = context.digest_sources(&all(&context), false).unwrap();
    assert_eq!(elsewhere.digest, changed.digest);
    assert_eq!(elsewhere.stats.files_read, 51);
}

#[test]
fn a_file_rewritten_within_one_build_is_read_again() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "f", b"one");
    let context = BuildContext::open(dir.path())
        .unwrap()
        .with_digest_cache(&store);
    let first = context.digest_sources(&all(&context), false).unwrap();
    // Same size and, on a coarse clock, possibly the same timestamps.
    write(dir.path(), "f", b"two");
    let second = context.digest_sources(&all(&context), false).unwrap();
    assert_ne!(first.digest, second.digest);
    assert_eq!(second.stats.files_read, 1);
}

#[test]
fn a_damaged_cache_only_costs_a_rehash() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", b"a");
    write(dir.path(), "b", b"b");
    std::fs::set_permissions(dir.path().join("b"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let_files_settle();
    let hash = || {
        let context = BuildContext::open(dir.path())
            .unwrap()
            .with_digest_cache(&store);
        let hashed = context.digest_sources(&all(&context), false).unwrap();
        context.save_digest_cache(&store).unwrap();
        hashed
    };
    let cold = hash();
    let index_dir = store.root().join("context-index");
    let [file] = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 70;
    bytes[last] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let rebuilt = hash();
    assert_eq!(rebuilt.digest, cold.digest);
    assert_eq!(rebuilt.stats.files_read, 2);
    assert_eq!(hash().stats.files_read, 0);
}

#[test]
fn the_selection_decides_what_changes_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/a.rs", b"a");
    write(dir.path(), "src/b.rs", b"b");
    write(dir.path(), "other.txt", b"o");
    write(dir.path(), "build.log", b"l");
    write(dir.path(), ".dockerignore", b"*.log\n");
    let hash = |patterns: &[&str]| {
        // Reopened each time: .dockerignore is read when the context is opened.
        let context = BuildContext::open(dir.path()).unwrap();
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let sources = context.resolve_sources(&patterns).unwrap();
        context.digest_sources(&sources, false).unwrap().digest
    };
    let src = hash(&["src"]);
    let everything = hash(&["."]);

    // Outside the selection, or ignored: no change.
    write(dir.path(), "other.txt", b"changed");
    assert_eq!(hash(&["src"]), src);
    let everything = {
        assert_ne!(hash(&["."]), everything);
        hash(&["."])
    };
    write(dir.path(), "build.log", b"changed");
    assert_eq!(hash(&["."]), everything);

    // A file added to, then removed from, a copied directory.
    write(dir.path(), "src/c.rs", b"");
    assert_ne!(hash(&["src"]), src);
    std::fs::remove_file(dir.path().join("src/c.rs")).unwrap();
    assert_eq!(hash(&["src"]), src);
    // An empty directory counts too.
    std::fs::create_dir(dir.path().join("src/empty")).unwrap();
    assert_ne!(hash(&["src"]), src);
    std::fs::remove_dir(dir.path().join("src/empty")).unwrap();

    // Un-ignoring a file adds it to `.`, not to `src`.
    write(dir.path(), ".dockerignore", b"*.tmp\n");
    assert_ne!(hash(&["."]), everything);
    assert_eq!(hash(&["src"]), src);

    // The same files matched by another pattern are another selection.
    assert_ne!(hash(&["src/*.rs"]), src);
    assert_eq!(hash(&["src/*.rs"]), hash(&["src/a.rs", "src/b.rs"]));
}
