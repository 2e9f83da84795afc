//! A build context sent as a tar stream (`docker build -` and the Engine API's `POST /build`
//! send one), unpacked into a directory the build then reads like any context directory.
//!
//! The key decision: a context is the user's files, never a filesystem image, so anything that
//! could only be an attempt to reach outside it is refused with an error naming the entry, not
//! cleaned up silently as a layer's names are: absolute names, `..`, symlinks whose target is
//! absolute or climbs out of the context, hard links to such names, and device nodes and FIFOs
//! (nothing a `COPY` needs, and not something to create under the store). Link targets are
//! judged as written; a chain of links can still lead out, so whoever reads the context must
//! resolve paths inside it (solve does). Extraction itself is the layer crate's confined one
//! (`openat2(RESOLVE_IN_ROOT)`, final components never followed), so even an accepted tree
//! cannot make a later entry write outside the directory.

use std::io::Read;
use std::path::Path;

use crate::LayerError;
use crate::compression;
use crate::extract::{Extractor, Whiteouts};
use crate::space_guard::{SpaceGuard, guard_dir};

/// Unpacks a (possibly gzip/zstd/… compressed) tar of a build context into the existing,
/// empty directory `dest`. An entry that could reach outside the context fails the whole
/// extraction with [`LayerError::UnsafeEntry`]; the caller removes `dest`.
pub fn extract_build_context(tar: impl Read, dest: &Path) -> Result<(), LayerError> {
    let tar = compression::decompressed(tar).map_err(LayerError::Archive)?;
    let tar = SpaceGuard::new(tar, guard_dir(dest)?);
    Extractor::new(dest, Whiteouts::Literal)?
        .confined_to_context()
        .extract(tar)?;
    Ok(())
}

/// As [`extract_build_context`], into a directory that may hold an earlier context unpacked
/// the same way: afterwards it holds exactly what extracting into an empty directory would
/// give, but a file whose content is unchanged is kept as it is (same inode), so that a
/// rebuild creates no files for the same context and its digest index still knows them.
/// Should this fail, the directory's content is undefined: the caller empties it.
pub fn sync_build_context(tar: impl Read, dest: &Path) -> Result<(), LayerError> {
    let tar = compression::decompressed(tar).map_err(LayerError::Archive)?;
    let tar = SpaceGuard::new(tar, guard_dir(dest)?);
    Extractor::new(dest, Whiteouts::Literal)?
        .confined_to_context()
        .reusing()
        .extract(tar)?;
    Ok(())
}

/// Why a symlink from `entry` (components, its own name last) to `target` leaves the tree, if
/// it does: an absolute target, or more `..` than there are directories above the link.
pub(crate) fn link_leaves_tree(entry_depth: usize, target: &[u8]) -> Option<&'static str> {
    if target.starts_with(b"/") {
        return Some("symlink to an absolute path, outside the context");
    }
    // The directories above the link, less one per `..`, plus one per name.
    let mut depth = entry_depth.saturating_sub(1);
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if depth == 0 => return Some("symlink pointing outside the context"),
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{dir, file, gzip, hard_link, raw_tar, symlink};

    fn unpack(
        entries: &[crate::test_support::RawEntry<'_>],
    ) -> (tempfile::TempDir, Result<(), LayerError>) {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("context");
        std::fs::create_dir(&dest).unwrap();
        let result = extract_build_context(&raw_tar(entries)[..], &dest);
        (outer, result)
    }

    fn refused(entries: &[crate::test_support::RawEntry<'_>], entry: &str, reason: &str) {
        let (outer, result) = unpack(entries);
        match result {
            Err(LayerError::UnsafeEntry {
                entry: e,
                reason: r,
            }) => {
                assert_eq!(e, entry);
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("{entry} accepted: {other:?}"),
        }
        // Nothing was written beside the context directory.
        let beside: Vec<_> = std::fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, ["context"]);
    }

    #[test]
    fn an_ordinary_context_unpacks_with_links_inside_it() {
        let tar = gzip(&raw_tar(&[
            file("Dockerfile", b"FROM scratch\n"),
            dir("src/"),
            file("src/main.c", b"int main;"),
            symlink("src/again", "../Dockerfile"),
            symlink("latest", "src/main.c"),
            hard_link("src/copy.c", "src/main.c"),
        ]));
        let dest = tempfile::tempdir().unwrap();
        extract_build_context(&tar[..], dest.path()).unwrap();
        let d = dest.path();
        assert_eq!(
            std::fs::read(d.join("Dockerfile")).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(
            std::fs::read(d.join("src/again")).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(std::fs::read(d.join("latest")).unwrap(), b"int main;");
        assert_eq!(std::fs::read(d.join("src/copy.c")).unwrap(), b"int main;");
    }

    #[test]
    fn names_and_links_reaching_outside_are_refused_naming_the_entry() {
        let ok = file("Dockerfile", b"FROM scratch\n");
        refused(&[file("../escape", b"x")], "../escape", "`..`");
        refused(&[file("a/../../escape", b"x")], "a/../../escape", "`..`");
        refused(&[file("/etc/cron.d/x", b"x")], "/etc/cron.d/x", "absolute");
        refused(&[symlink("up", "..")], "up", "outside the context");
        refused(
            &[dir("a/"), symlink("a/up", "../../x")],
            "a/up",
            "outside the context",
        );
        refused(&[symlink("etc", "/etc")], "etc", "absolute");
        refused(&[file("f", b"x"), hard_link("h", "/f")], "h", "absolute");
        refused(&[file("f", b"x"), hard_link("h", "../f")], "h", "`..`");
        let mut fifo = file("pipe", b"");
        fifo.kind = tar::EntryType::Fifo;
        refused(&[ok, fifo], "pipe", "not allowed in a build context");
        let mut device = file("disk", b"");
        device.kind = tar::EntryType::Block;
        refused(&[device], "disk", "not allowed in a build context");
    }

    #[test]
    fn a_link_then_a_file_through_it_stays_inside() {
        // Even where a link is accepted (it points inside), a later entry through it is
        // resolved inside the context.
        let (outer, result) = unpack(&[dir("a/"), symlink("a/b", "."), file("a/b/f", b"inside")]);
        result.unwrap();
        assert_eq!(
            std::fs::read(outer.path().join("context/a/f")).unwrap(),
            b"inside"
        );
    }

    /// Every path under `root` with its kind, content or target, and mode: what a build sees.
    fn tree(root: &Path) -> Vec<(String, String)> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let what = if meta.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    format!("dir {:o}", meta.permissions().mode() & 0o7777)
                } else {
                    format!(
                        "{:?} {:o} {}",
                        String::from_utf8_lossy(&std::fs::read(&path).unwrap()),
                        meta.permissions().mode() & 0o7777,
                        meta.mtime()
                    )
                };
                out.push((rel, what));
            }
        }
        out.sort();
        out
    }

    /// Syncs `entries` into `dest` and checks the result against a fresh extraction.
    fn sync_matches_fresh(dest: &Path, entries: &[crate::test_support::RawEntry<'_>]) {
        let tar = raw_tar(entries);
        sync_build_context(&tar[..], dest).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        extract_build_context(&tar[..], fresh.path()).unwrap();
        assert_eq!(tree(dest), tree(fresh.path()));
    }

    fn inode(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn a_sync_keeps_unchanged_files_and_ends_as_a_fresh_extraction() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        sync_matches_fresh(
            d,
            &[
                file("Dockerfile", b"FROM scratch\n"),
                dir("src/"),
                file("src/keep.c", b"int keep;"),
                file("src/edit.c", b"int v1;"),
                file("src/gone.c", b"int gone;"),
                dir("old/"),
                file("old/x", b"x"),
                symlink("link", "src/keep.c"),
            ],
        );
        let kept = inode(&d.join("src/keep.c"));
        let ctime = std::os::unix::fs::MetadataExt::ctime_nsec(
            &std::fs::metadata(d.join("src/keep.c")).unwrap(),
        );
        let mut exec = file("src/mode.sh", b"#!/bin/sh\n");
        exec.mode = 0o755;
        sync_matches_fresh(
            d,
            &[
                file("Dockerfile", b"FROM scratch\n"),
                dir("src/"),
                file("src/keep.c", b"int keep;"),
                file("src/edit.c", b"int v2;"),
                exec,
                file("new.txt", b"new"),
            ],
        );
        // Same inode and untouched metadata: the digest index still trusts it.
        assert_eq!(inode(&d.join("src/keep.c")), kept);
        let after = std::os::unix::fs::MetadataExt::ctime_nsec(
            &std::fs::metadata(d.join("src/keep.c")).unwrap(),
        );
        assert_eq!(after, ctime);
        assert!(!d.join("old").exists() && !d.join("link").exists());
        // The same content with another mode: kept, its mode set.
        let mut again = file("src/keep.c", b"int keep;");
        again.mode = 0o600;
        sync_matches_fresh(d, &[dir("src/"), again]);
        assert_eq!(inode(&d.join("src/keep.c")), kept);
    }

    #[test]
    fn a_sync_never_writes_through_or_links_to_the_previous_contexts_leftovers() {
        let dest = tempfile::tempdir().unwrap();
        let d = dest.path();
        sync_matches_fresh(
            d,
            &[
                dir("real/"),
                symlink("via", "real"),
                file("stale", b"old secret"),
            ],
        );
        // `via/f` without a `via/` entry: a fresh extraction makes `via` a directory.
        sync_matches_fresh(d, &[dir("real/"), file("via/f", b"f")]);
        assert!(!d.join("real/f").exists());
        // Files deep down without entries for their directories (docker-py sends these).
        sync_matches_fresh(d, &[file("a/b/c/f", b"deep"), file("a/b/g", b"g")]);
        // A hard link to a name the tar has not written is refused, as in an empty directory.
        sync_build_context(&raw_tar(&[file("stale", b"old secret")])[..], d).unwrap();
        let err = sync_build_context(&raw_tar(&[hard_link("h", "stale")])[..], d).unwrap_err();
        assert!(
            err.to_string().contains("not in the archive before it"),
            "{err}"
        );
        // What a context may not hold is refused over a previous one too.
        let err = sync_build_context(&raw_tar(&[symlink("up", "..")])[..], d).unwrap_err();
        assert!(matches!(err, LayerError::UnsafeEntry { .. }), "{err}");
    }

    #[test]
    fn depth_counts_directories_above_the_link() {
        assert_eq!(link_leaves_tree(1, b"x"), None);
        assert_eq!(link_leaves_tree(2, b"../x"), None);
        assert!(link_leaves_tree(2, b"../../x").is_some());
        assert_eq!(link_leaves_tree(3, b"./../b/../../y"), None);
        assert!(link_leaves_tree(1, b"a/../../y").is_some());
        assert!(link_leaves_tree(1, b"/").is_some());
    }
}
