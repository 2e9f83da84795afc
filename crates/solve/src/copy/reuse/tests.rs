//! The reuse decision and the links, on plain directories standing for upper dirs (root needed,
//! as for the other copy tests: files are chowned).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use super::*;
use crate::context::{BuildContext, SelectOptions, SourceTree};
use crate::copy::{CopyOptions, copy_into_reusing};

/// A build context and the snapshots of successive copies of it.
struct Builds {
    context: tempfile::TempDir,
    snapshots: Vec<tempfile::TempDir>,
    /// What each snapshot's copy recorded, by the snapshot's index.
    written: Vec<BTreeMap<String, String>>,
    /// A file the next snapshot already holds before the copy (as a lower layer's would be).
    preexisting: Option<&'static str>,
}

impl Builds {
    fn new() -> Self {
        let builds = Builds {
            context: tempfile::tempdir().unwrap(),
            snapshots: Vec::new(),
            written: Vec::new(),
            preexisting: None,
        };
        for (rel, content, mode) in [
            ("a.txt", "alpha", 0o644),
            ("b.txt", "beta", 0o600),
            ("dir/c.txt", "gamma", 0o755),
            ("dir/sub/d.txt", "delta", 0o644),
        ] {
            builds.write(rel, content, mode);
        }
        builds
    }

    fn write(&self, rel: &str, content: &str, mode: u32) {
        let path = self.context.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // A fixed mtime, so "unchanged" does not depend on when the test runs.
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    /// `COPY . /ctx/` into a fresh snapshot, reusing from `previous` (an index into the
    /// snapshots); returns the snapshot's index, what was written and the link counts.
    fn copy(
        &mut self,
        opts: &CopyOptions,
        previous: Option<usize>,
    ) -> (usize, CopyOutcome, ReuseStats) {
        let previous = previous.map(|index| self.previous(index));
        self.copy_reusing(opts, previous.as_ref())
    }

    fn copy_reusing(
        &mut self,
        opts: &CopyOptions,
        previous: Option<&PreviousCopy>,
    ) -> (usize, CopyOutcome, ReuseStats) {
        let context = BuildContext::open(self.context.path()).unwrap();
        let tree = SourceTree::Context(context);
        let sources = tree
            .select(&[".".to_owned()], &SelectOptions::default())
            .unwrap();
        let manifest = tree.digest_sources(&sources, false).unwrap().manifest;
        let fingerprints: HashMap<String, String> = manifest
            .into_iter()
            .map(|file| (file.path, file.fingerprint))
            .collect();
        let snapshot = tempfile::tempdir().unwrap();
        if let Some(rel) = self.preexisting {
            let path = snapshot.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "in the way").unwrap();
        }
        let reuse = CopyReuse {
            fingerprints: Some(&fingerprints),
            previous,
            upper: Some(snapshot.path()),
        };
        let outcome = copy_into_reusing(snapshot.path(), &sources, "/ctx/", opts, reuse).unwrap();
        let stats = link_reused(snapshot.path(), &outcome).unwrap();
        self.snapshots.push(snapshot);
        (self.snapshots.len() - 1, outcome, stats)
    }

    fn previous(&self, index: usize) -> PreviousCopy {
        // What the step recorded is what a copy without reuse writes: take it from one.
        let written = self.written[index].clone();
        PreviousCopy {
            snapshot: self.snapshots[index].path().to_owned(),
            files: written.into_iter().collect(),
        }
    }

    fn path(&self, index: usize, rel: &str) -> PathBuf {
        self.snapshots[index].path().join(rel)
    }

    fn inode(&self, index: usize, rel: &str) -> u64 {
        std::fs::symlink_metadata(self.path(index, rel))
            .unwrap()
            .ino()
    }
}

/// Every entry of a tree with the metadata a layer keeps, and file contents.
fn listing(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let content = if meta.is_file() {
                std::fs::read_to_string(entry.path()).unwrap()
            } else {
                String::new()
            };
            format!(
                "{} {:o} {}:{} {}.{} {content}",
                entry.path().strip_prefix(root).unwrap().display(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec(),
            )
        })
        .collect()
}

fn tar_of(root: &Path) -> Vec<u8> {
    kiln_layer::write_tar(root, kiln_layer::SourceKind::OverlayUpper, Vec::new())
        .unwrap()
        .0
}

#[test]
fn unchanged_files_are_linked_and_the_changed_one_is_copied() {
    let mut builds = Builds::new();
    let opts = CopyOptions::default();
    let (first, written, stats) = builds.copy(&opts, None);
    assert_eq!(
        stats,
        ReuseStats::default(),
        "nothing to reuse the first time"
    );
    assert_eq!(written.written.len(), 4, "{:?}", written.written);
    builds.written.push(written.written);

    builds.write("dir/c.txt", "gamma, edited", 0o755);
    let (second, outcome, stats) = builds.copy(&opts, Some(first));
    assert_eq!(
        stats,
        ReuseStats {
            linked: 3,
            copied: 0
        }
    );
    for unchanged in ["ctx/a.txt", "ctx/b.txt", "ctx/dir/sub/d.txt"] {
        assert_eq!(
            builds.inode(first, unchanged),
            builds.inode(second, unchanged),
            "{unchanged}"
        );
    }
    assert_ne!(
        builds.inode(first, "ctx/dir/c.txt"),
        builds.inode(second, "ctx/dir/c.txt")
    );
    assert_eq!(
        std::fs::read_to_string(builds.path(second, "ctx/dir/c.txt")).unwrap(),
        "gamma, edited"
    );
    builds.written.push(outcome.written);

    // The same as a copy that reuses nothing, down to directory times and the layer tar (the
    // shared inodes have two links, which must not make tar hard links).
    let (cold, _, _) = builds.copy(&opts, None);
    assert_eq!(
        listing(builds.snapshots[second].path()),
        listing(builds.snapshots[cold].path())
    );
    assert_eq!(
        tar_of(builds.snapshots[second].path()),
        tar_of(builds.snapshots[cold].path())
    );
    assert!(
        std::fs::symlink_metadata(builds.path(second, "ctx/a.txt"))
            .unwrap()
            .nlink()
            > 1
    );
}

#[test]
fn other_metadata_is_never_reused() {
    let mut builds = Builds::new();
    let (first, written, _) = builds.copy(&CopyOptions::default(), None);
    builds.written.push(written.written);

    // --chmod and --chown change what would be written: nothing matches (no file is 0640).
    let chmod = CopyOptions {
        chmod: Some(crate::copy::Chmod::parse("640").unwrap()),
        ..CopyOptions::default()
    };
    let (_, _, stats) = builds.copy(&chmod, Some(first));
    assert_eq!(stats.linked, 0);
    builds.written.push(BTreeMap::new());
    let chown = CopyOptions {
        owner: Some((1000, 1000)),
        ..CopyOptions::default()
    };
    let (chowned, _, stats) = builds.copy(&chown, Some(first));
    assert_eq!(stats.linked, 0);
    assert_eq!(
        std::fs::symlink_metadata(builds.path(chowned, "ctx/a.txt"))
            .unwrap()
            .uid(),
        1000
    );
    builds.written.push(BTreeMap::new());

    // A new mtime alone (same content) is a different file in the layer.
    let path = builds.context.path().join("a.txt");
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    let (touched, _, stats) = builds.copy(&CopyOptions::default(), Some(first));
    assert_eq!(stats.linked, 3);
    assert_ne!(
        builds.inode(first, "ctx/a.txt"),
        builds.inode(touched, "ctx/a.txt")
    );
}

#[test]
fn a_record_that_does_not_match_the_snapshot_is_not_trusted() {
    let mut builds = Builds::new();
    let (first, written, _) = builds.copy(&CopyOptions::default(), None);
    builds.written.push(written.written);

    // The record says another content for a.txt: copied, not linked.
    let mut previous = builds.previous(first);
    previous
        .files
        .insert("ctx/a.txt".into(), "f 644 0000".into());
    // And b.txt's file in the snapshot is not what it was (a snapshot is never written, but
    // the check does not rely on it).
    std::fs::set_permissions(
        builds.path(first, "ctx/b.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let (second, _, stats) = builds.copy_reusing(&CopyOptions::default(), Some(&previous));
    assert_eq!(stats.linked, 2);
    for copied in ["ctx/a.txt", "ctx/b.txt"] {
        assert_ne!(builds.inode(first, copied), builds.inode(second, copied));
    }
    assert_eq!(
        std::fs::symlink_metadata(builds.path(second, "ctx/b.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn a_file_gone_from_the_previous_snapshot_is_copied_instead() {
    let mut builds = Builds::new();
    let (first, written, _) = builds.copy(&CopyOptions::default(), None);
    builds.written.push(written.written);
    let previous = builds.previous(first);

    // Decided while the file was there, removed (a prune) before the link.
    let context = BuildContext::open(builds.context.path()).unwrap();
    let tree = SourceTree::Context(context);
    let sources = tree
        .select(&[".".to_owned()], &SelectOptions::default())
        .unwrap();
    let fingerprints: HashMap<String, String> = tree
        .digest_sources(&sources, false)
        .unwrap()
        .manifest
        .into_iter()
        .map(|file| (file.path, file.fingerprint))
        .collect();
    let snapshot = tempfile::tempdir().unwrap();
    let reuse = CopyReuse {
        fingerprints: Some(&fingerprints),
        previous: Some(&previous),
        upper: Some(snapshot.path()),
    };
    let opts = CopyOptions::default();
    let outcome = copy_into_reusing(snapshot.path(), &sources, "/ctx/", &opts, reuse).unwrap();
    assert_eq!(outcome.links.len(), 4);
    std::fs::remove_file(builds.path(first, "ctx/dir/c.txt")).unwrap();
    let stats = link_reused(snapshot.path(), &outcome).unwrap();
    assert_eq!(
        stats,
        ReuseStats {
            linked: 3,
            copied: 1
        }
    );
    let copied = snapshot.path().join("ctx/dir/c.txt");
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "gamma");
    let meta = std::fs::symlink_metadata(&copied).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.mtime()),
        (0o755, 0, 1_600_000_000)
    );
}

#[test]
fn a_file_that_replaces_one_is_linked_over_its_placeholder() {
    let mut builds = Builds::new();
    let (first, written, _) = builds.copy(&CopyOptions::default(), None);
    builds.written.push(written.written);

    // ctx/b.txt is already there (say from a lower layer): the copy replaces it, through a
    // placeholder that the link then takes the place of.
    builds.preexisting = Some("ctx/b.txt");
    let (second, outcome, stats) = builds.copy(&CopyOptions::default(), Some(first));
    assert!(outcome.links[Path::new("ctx/b.txt")].placeholder);
    assert!(!outcome.links[Path::new("ctx/a.txt")].placeholder);
    assert_eq!(
        stats,
        ReuseStats {
            linked: 4,
            copied: 0
        }
    );
    assert_eq!(
        builds.inode(first, "ctx/b.txt"),
        builds.inode(second, "ctx/b.txt")
    );
    assert_eq!(
        std::fs::read_to_string(builds.path(second, "ctx/b.txt")).unwrap(),
        "beta"
    );
}
