use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;

use super::listing::Lister;
use super::*;
use crate::context::{BuildContext, path_to_slash};
use crate::dockerignore::IgnoreMatcher;

/// A small deterministic generator, so a failing tree can be rebuilt from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A tree of nested directories with files, empty directories and symlinks (one pointing out
/// of the tree, one at a directory inside it).
fn random_tree(root: &Path, seed: u64) {
    let mut rng = Lcg(seed);
    let mut dirs = vec![root.to_path_buf()];
    for n in 0..60 {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let dir = parent.join(format!("d{n}"));
        std::fs::create_dir(&dir).unwrap();
        dirs.push(dir);
    }
    for n in 0..400 {
        let parent = &dirs[rng.below(dirs.len() as u64) as usize];
        // Names that sort differently by bytes and by case-insensitive or numeric order.
        let name = match n % 4 {
            0 => format!("F{n}.log"),
            1 => format!("f{n}.txt"),
            2 => format!("_{n}"),
            _ => format!("z{n}.log"),
        };
        std::fs::write(parent.join(name), n.to_string()).unwrap();
    }
    symlink("/etc", dirs[3].join("outside")).unwrap();
    symlink("../d1", dirs[5].join("inside")).unwrap();
}

fn names(entries: SourceEntries) -> Vec<String> {
    entries
        .map(|entry| path_to_slash(&entry.unwrap().rel))
        .collect()
}

fn walk_with(source: &Source, threads: usize, budget: usize) -> Vec<String> {
    let lister = Lister::with_threads(
        source.filter.clone(),
        source.exclude.clone(),
        threads,
        budget,
    );
    names(SourceEntries::with_lister(source, lister))
}

#[test]
fn parallel_walk_is_the_sorted_preorder_walk_whatever_the_threads() {
    for seed in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        random_tree(dir.path(), seed);
        let context = BuildContext::open(dir.path()).unwrap();
        let source = &context.resolve_sources(&[".".into()]).unwrap()[0];
        // The reference: walkdir's sorted, link-preserving pre-order walk.
        let expected: Vec<String> = walkdir::WalkDir::new(dir.path())
            .sort_by_file_name()
            .into_iter()
            .map(|entry| {
                let entry = entry.unwrap();
                path_to_slash(entry.path().strip_prefix(dir.path()).unwrap())
            })
            .collect();
        assert_eq!(walk_with(source, 0, 1 << 20), expected, "seed {seed}");
        for threads in [1, 2, 8] {
            // A budget of one listing ahead makes the workers wait on the walk constantly.
            for budget in [1, 1 << 20] {
                assert_eq!(
                    walk_with(source, threads, budget),
                    expected,
                    "seed {seed}, {threads} threads, budget {budget}"
                );
            }
        }
        assert_eq!(names(source.entries()), expected);
    }
}

#[test]
fn symlinks_are_entries_and_never_entered() {
    let dir = tempfile::tempdir().unwrap();
    random_tree(dir.path(), 7);
    let context = BuildContext::open(dir.path()).unwrap();
    let source = &context.resolve_sources(&[".".into()]).unwrap()[0];
    let walked = walk_with(source, 4, 1 << 20);
    let links: Vec<&String> = walked
        .iter()
        .filter(|name| name.ends_with("/outside") || name.ends_with("/inside"))
        .collect();
    assert_eq!(links.len(), 2, "{walked:?}");
    assert!(
        !walked
            .iter()
            .any(|name| name.contains("/outside/") || name.contains("/inside/")),
        "{walked:?}"
    );
}

#[test]
fn ignore_rules_and_exceptions_are_the_same_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    random_tree(dir.path(), 11);
    // Hide every .log file and d2 (but re-include one file deep inside it), and all of d4.
    std::fs::write(
        dir.path().join(".dockerignore"),
        "**/*.log\nd2\n!d2/**/f*.txt\nd4\n",
    )
    .unwrap();
    let context = BuildContext::open(dir.path()).unwrap();
    let source = context.resolve_sources(&[".".into()]).unwrap().remove(0);
    let exclude = Arc::new(IgnoreMatcher::from_patterns(&["**/_*".to_string()]).unwrap());
    let source = source.excluding(&exclude).unwrap();
    let sequential = walk_with(&source, 0, 1 << 20);
    assert!(sequential.iter().all(|name| !name.ends_with(".log")));
    assert!(
        sequential
            .iter()
            .all(|name| !name.rsplit('/').next().unwrap().starts_with('_'))
    );
    assert!(sequential.iter().all(|name| !name.starts_with("d4")));
    // A parent shows only just before something it holds, and always before its children.
    for (position, name) in sequential.iter().enumerate().skip(1) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            assert!(
                sequential[..position].iter().any(|seen| seen == parent),
                "{name}"
            );
        }
    }
    for threads in [1, 3] {
        assert_eq!(walk_with(&source, threads, 2), sequential);
    }
}

#[test]
fn an_abandoned_walk_stops_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    random_tree(dir.path(), 5);
    let context = BuildContext::open(dir.path()).unwrap();
    let source = &context.resolve_sources(&[".".into()]).unwrap()[0];
    let lister = Lister::with_threads(None, None, 4, 1 << 20);
    let mut entries = SourceEntries::with_lister(source, Arc::clone(&lister));
    // The root and its first child: the root's listing has queued every subdirectory.
    entries.next().unwrap().unwrap();
    entries.next().unwrap().unwrap();
    drop(entries);
    // Each worker holds the lister; they all let go once they see the cancellation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&lister) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "workers still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_vanished_directory_is_an_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    for rel in ["a/x", "b/y", "c/z"] {
        std::fs::create_dir_all(dir.path().join(rel).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(rel), rel).unwrap();
    }
    let context = BuildContext::open(dir.path()).unwrap();
    let source = &context.resolve_sources(&[".".into()]).unwrap()[0];
    // Sequential, so b is listed only when the walk reaches it, after it is gone.
    let lister = Lister::with_threads(None, None, 0, 1 << 20);
    let entries = SourceEntries::with_lister(source, lister);
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let name = path_to_slash(&entry.rel);
                if name == "b" {
                    std::fs::remove_dir_all(dir.path().join("b")).unwrap();
                }
                seen.push(name);
            }
            Err(error) => errors.push(error.to_string()),
        }
    }
    assert_eq!(seen, ["", "a", "a/x", "b", "c", "c/z"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("/b:"), "{errors:?}");
}
