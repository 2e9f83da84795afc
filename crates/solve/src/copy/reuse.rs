//! Reusing the files of the previous build of a COPY/ADD step instead of copying them again.
//!
//! A COPY whose sources changed by one file still has to produce the whole layer, and copying
//! every unchanged file into the step's new upper dir was most of a big-context rebuild. The
//! previous build's snapshot of the same Dockerfile step already holds those files, and
//! snapshots are never written after they are committed, so the new snapshot can share their
//! inodes (hard links) instead.
//!
//! A file is reused only when the previous snapshot holds, at the very path the file is written
//! to, a regular file that the previous copy recorded with the same fingerprint (type, mode,
//! content digest) and whose owner, mode, size, modification time and xattrs equal what the
//! copy would write now; anything else is copied as before. So the layer is byte for byte what
//! a cold build writes: the tar writer only sees the same metadata and content, and it turns
//! inodes into tar hard links only when two paths *of the same layer* share one.
//!
//! While the overlay is mounted the copy cannot link across filesystems, so it only notes where a
//! reused file goes, and [`link_reused`] makes the links once the overlay is unmounted,
//! restoring the times of the directories it touched. Where the name replaces something or its
//! directory is not in the upper dir yet, the copy first creates an empty placeholder (with the
//! final owner, mode and times) so that the overlay does its part (copy the directory up, hide
//! what is replaced), and the link takes the placeholder's place. When a link cannot be made
//! (the old snapshot was pruned meanwhile, too many links) the file is copied instead.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::CopyError;

/// What the last build of the step wrote, to reuse from.
#[derive(Debug, Clone, Default)]
pub struct PreviousCopy {
    /// The snapshot (upper dir) that build committed.
    pub snapshot: PathBuf,
    /// Root-relative path written → fingerprint of the source file it came from.
    pub files: HashMap<String, String>,
}

/// What a copy knows that lets it reuse files; the default reuses nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyReuse<'a> {
    /// The sources' fingerprints by manifest path (`src/main.rs`), as hashing recorded them.
    pub fingerprints: Option<&'a HashMap<String, String>>,
    /// The previous build's files.
    pub previous: Option<&'a PreviousCopy>,
    /// The upper dir the copy's writes land in (the root itself when it is not an overlay).
    pub upper: Option<&'a Path>,
}

/// The result of a copy: what it wrote, and the links still to be made.
#[derive(Debug, Default)]
pub struct CopyOutcome {
    /// Root-relative path → fingerprint of every regular file the copy wrote with a known
    /// fingerprint; what the next build of the step may reuse (see [`PreviousCopy::files`]).
    pub written: BTreeMap<String, String>,
    /// Files to link from the previous snapshot, by root-relative path.
    pub links: BTreeMap<PathBuf, PendingLink>,
    /// How many file sources replaced the file an earlier source of the same copy wrote at the
    /// destination (several sources, a destination that is not a directory).
    pub replaced_at_dest: usize,
}

/// One file to link from the previous snapshot.
#[derive(Debug, Clone)]
pub struct PendingLink {
    /// The file in the previous snapshot.
    pub(super) previous: PathBuf,
    /// The source on the host, copied instead when the link cannot be made.
    pub(super) source: PathBuf,
    pub(super) times: Timestamps,
    pub(super) mode: u32,
    pub(super) owner: (u32, u32),
    /// Whether the copy left an empty placeholder there (else the name is free).
    pub(super) placeholder: bool,
}

/// What the file written for a source entry will look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    pub size: u64,
    pub mode: u32,
    pub owner: (u32, u32),
    pub mtime: (i64, i64),
}

/// Whether `previous` (a path in the previous snapshot) is a file that equals, in metadata,
/// what the copy would write; its content was checked by fingerprint already.
pub(super) fn previous_matches(previous: &Path, expected: &Expected) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(previous) else {
        return false;
    };
    meta.file_type().is_file()
        && meta.len() == expected.size
        && meta.mode() & 0o7777 == expected.mode
        && (meta.uid(), meta.gid()) == expected.owner
        && (meta.mtime(), meta.mtime_nsec()) == expected.mtime
}

/// Counts of what [`link_reused`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReuseStats {
    pub linked: usize,
    /// Placeholders filled by copying because the link could not be made or did not fit.
    pub copied: usize,
}

/// Makes the links `outcome` asks for under `upper` (no longer mounted), in place of their
/// placeholders, keeping every directory's times as the copy left them.
pub fn link_reused(upper: &Path, outcome: &CopyOutcome) -> Result<ReuseStats, CopyError> {
    let mut stats = ReuseStats::default();
    // Each touched directory's times before the first change in it.
    let mut dir_times: BTreeMap<PathBuf, Timestamps> = BTreeMap::new();
    for (rel, link) in &outcome.links {
        let target = upper.join(rel);
        let parent = target.parent().expect("a file has a parent").to_owned();
        if !dir_times.contains_key(&parent) {
            let meta = std::fs::symlink_metadata(&parent).map_err(io(&parent))?;
            dir_times.insert(parent.clone(), times_of(&meta));
        }
        // A new file gets no xattrs; a placeholder may have been given some by the overlay.
        let expected_xattrs = if link.placeholder {
            let placeholder = std::fs::symlink_metadata(&target).map_err(io(&target))?;
            if !placeholder.file_type().is_file() || placeholder.len() != 0 {
                // The copy itself put something else here; it is not ours to replace.
                continue;
            }
            let xattrs = xattrs_of(&target).map_err(io(&target))?;
            std::fs::remove_file(&target).map_err(io(&target))?;
            xattrs
        } else {
            Vec::new()
        };
        let same_xattrs = xattrs_of(&link.previous).is_ok_and(|xattrs| xattrs == expected_xattrs);
        let linked = same_xattrs && hard_link(&link.previous, &target).is_ok();
        if linked {
            stats.linked += 1;
        } else {
            fill_by_copy(&target, link)?;
            stats.copied += 1;
        }
    }
    // Deepest first, so setting a directory's times is not undone by its children.
    for (dir, times) in dir_times.iter().rev() {
        rustix::fs::utimensat(rustix::fs::CWD, dir, times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|errno| io(dir)(errno.into()))?;
    }
    Ok(stats)
}

/// Links `previous` at `target`. Only a whiteout the overlay left for this very name can be in
/// the way (the merged view showed no file there), and the link is meant to replace it.
fn hard_link(previous: &Path, target: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(previous, target) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(target)?;
            std::fs::hard_link(previous, target)
        }
        other => other,
    }
}

/// Writes the source's content at `target` (free) with the copy's owner, mode and times.
fn fill_by_copy(target: &Path, link: &PendingLink) -> Result<(), CopyError> {
    let created = rustix::fs::open(
        target,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| io(target)(errno.into()))?;
    let mut output = File::from(created);
    let mut input = File::open(&link.source).map_err(io(&link.source))?;
    std::io::copy(&mut input, &mut output).map_err(io(target))?;
    let fd: std::os::fd::OwnedFd = output.into();
    super::confined::set_owner_and_mode(&fd, link.owner, link.mode)
        .map_err(|errno| io(target)(errno.into()))?;
    rustix::fs::futimens(&fd, &link.times).map_err(|errno| io(target)(errno.into()))?;
    Ok(())
}

/// Every xattr of `path` (not following a symlink), sorted by name.
pub(crate) fn xattrs_of(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(errno) => return Err(errno.into()),
        }
    };
    let mut pairs = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let value_len = loop {
            match rustix::fs::lgetxattr(path, name_os, &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(errno) => return Err(errno.into()),
            }
        };
        value.truncate(value_len);
        pairs.push((name.to_vec(), value));
    }
    pairs.sort();
    Ok(pairs)
}

fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
