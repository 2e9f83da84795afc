//! Walking a resolved source and hashing what the walk sees.
//!
//! The walk never follows symlinks, visits children in byte order of their names, and applies
//! `.dockerignore` and `--exclude` (the latter relative to the source): an excluded directory is skipped unless a later exception may re-include
//! something inside it; such a directory is then reported just before its first visible
//! descendant (BuildKit sends the parents of re-included files the same way), so a consumer
//! always sees a parent before its children.

use std::collections::VecDeque;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kiln_image::{Digest, Sha256Hasher};

use std::sync::Arc;

use super::{ContextError, Source, SourceFilter, io_error, path_to_slash};
use crate::cache::FileFingerprint;
use crate::dockerignore::IgnoreMatcher;

/// One thing a source walk found.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Where it is on the host.
    pub host_path: PathBuf,
    /// Relative to the source; empty for the source itself.
    pub rel: PathBuf,
    /// `lstat` of it (symlinks are not followed).
    pub metadata: Metadata,
}

/// Iterator over a source and its visible descendants; see [`Source::entries`].
pub struct SourceEntries {
    walk: walkdir::IntoIter,
    root: PathBuf,
    filter: Option<SourceFilter>,
    exclude: Option<Arc<IgnoreMatcher>>,
    /// Excluded directories on the current path, held back until something below them shows.
    deferred: Vec<(usize, SourceEntry)>,
    ready: VecDeque<SourceEntry>,
}

impl std::fmt::Debug for SourceEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceEntries")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SourceEntries {
    pub(super) fn new(source: &Source) -> Self {
        let walk = walkdir::WalkDir::new(&source.host_path)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .into_iter();
        SourceEntries {
            walk,
            root: source.host_path.clone(),
            filter: source.filter.clone(),
            exclude: source.exclude.clone(),
            deferred: Vec::new(),
            ready: VecDeque::new(),
        }
    }
}

impl Iterator for SourceEntries {
    type Item = Result<SourceEntry, ContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(entry));
            }
            let found = match self.walk.next()? {
                Ok(found) => found,
                Err(error) => {
                    let path = error.path().unwrap_or(&self.root).to_path_buf();
                    let source = error
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("symlink loop during walk"));
                    return Some(Err(ContextError::Io { path, source }));
                }
            };
            let metadata = match found.metadata() {
                Ok(metadata) => metadata,
                Err(error) => {
                    let source = error
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("cannot stat"));
                    return Some(Err(io_error(found.path())(source)));
                }
            };
            let depth = found.depth();
            let entry = SourceEntry {
                rel: found
                    .path()
                    .strip_prefix(&self.root)
                    .unwrap_or(Path::new(""))
                    .to_path_buf(),
                host_path: found.into_path(),
                metadata,
            };
            if depth == 0 || (self.filter.is_none() && self.exclude.is_none()) {
                return Some(Ok(entry));
            }
            // Pre-order walk: anything deferred at this depth or deeper is not an ancestor.
            self.deferred
                .retain(|(deferred_depth, _)| *deferred_depth < depth);
            let rel = path_to_slash(&entry.rel);
            // Each matcher says whether it hides the entry and, for a directory, whether
            // something below could still show; the entry shows only if neither hides it.
            let mut hidden = false;
            let mut may_show_below = true;
            if let Some(filter) = &self.filter {
                let tree_path = filter.tree_path(&rel);
                if filter.ignore.is_excluded(&tree_path) {
                    hidden = true;
                    may_show_below &= filter.ignore.may_include_below(&tree_path);
                }
            }
            if let Some(exclude) = &self.exclude
                && exclude.is_excluded(&rel)
            {
                hidden = true;
                may_show_below &= exclude.may_include_below(&rel);
            }
            if hidden {
                if entry.metadata.is_dir() {
                    if may_show_below {
                        self.deferred.push((depth, entry));
                    } else {
                        self.walk.skip_current_dir();
                    }
                }
                continue;
            }
            self.ready
                .extend(self.deferred.drain(..).map(|(_, ancestor)| ancestor));
            self.ready.push_back(entry);
        }
    }
}

/// The build-cache key of a source set: for every source its matched path, and for every entry
/// its name, file type, permission bits and content (or link target, or device number).
/// Ownership, timestamps, inode numbers and where the tree lives on the host are left out, so
/// two checkouts of the same content hash the same.
pub fn hash_sources(sources: &[Source]) -> Result<Digest, ContextError> {
    hash_sources_with_manifest(sources).map(|(digest, _)| digest)
}

/// [`hash_sources`], plus a manifest of what it hashed: each entry's path (the source's matched
/// path joined with the entry's path below it) and a fingerprint that changes exactly when the
/// entry's hashed inputs do. `--explain` diffs manifests to name the files that changed.
pub fn hash_sources_with_manifest(
    sources: &[Source],
) -> Result<(Digest, Vec<FileFingerprint>), ContextError> {
    let mut hasher = Sha256Hasher::new();
    let mut manifest = Vec::new();
    hasher.update(b"kiln source set v1\0");
    put_u64(&mut hasher, sources.len() as u64);
    for source in sources {
        put_bytes(&mut hasher, source.rel_path.as_bytes());
        hasher.update(&[u8::from(source.is_dir)]);
        for entry in source.entries() {
            let entry = entry?;
            let fingerprint = hash_entry(&mut hasher, &entry)?;
            manifest.push(FileFingerprint {
                path: manifest_path(&source.rel_path, &entry.rel),
                fingerprint,
            });
        }
        // Ends the source so entries of consecutive sources cannot be regrouped.
        hasher.update(b"\xff");
    }
    Ok((hasher.finish(), manifest))
}

/// `src` + `main.rs` → `src/main.rs`; the root of a `.` source is `.`.
fn manifest_path(source: &str, rel: &Path) -> String {
    let rel = path_to_slash(rel);
    match (source.trim_matches('/'), rel.as_str()) {
        ("", "") => ".".to_owned(),
        ("", r) => r.to_owned(),
        (s, "") => s.to_owned(),
        (s, r) => format!("{s}/{r}"),
    }
}

/// Feeds one entry into `hasher` and returns its fingerprint for the manifest.
fn hash_entry(hasher: &mut Sha256Hasher, entry: &SourceEntry) -> Result<String, ContextError> {
    let file_type = entry.metadata.file_type();
    hasher.update(b"E");
    put_bytes(hasher, entry.rel.as_os_str().as_bytes());
    let tag: &[u8] = if file_type.is_file() {
        b"f"
    } else if file_type.is_dir() {
        b"d"
    } else if file_type.is_symlink() {
        b"l"
    } else if file_type.is_fifo() {
        b"p"
    } else if file_type.is_char_device() {
        b"c"
    } else if file_type.is_block_device() {
        b"b"
    } else {
        b"s"
    };
    hasher.update(tag);
    let mode = entry.metadata.mode() & 0o7777;
    hasher.update(&mode.to_le_bytes());
    let mut fingerprint = format!("{} {mode:o}", String::from_utf8_lossy(tag));
    if file_type.is_file() {
        let mut file = std::fs::File::open(&entry.host_path).map_err(io_error(&entry.host_path))?;
        let mut content = Sha256Hasher::new();
        std::io::copy(&mut file, &mut content).map_err(io_error(&entry.host_path))?;
        put_u64(hasher, content.len());
        let hex = content.finish().hex().to_owned();
        hasher.update(hex.as_bytes());
        fingerprint.push(' ');
        fingerprint.push_str(&hex);
    } else if file_type.is_symlink() {
        let target = std::fs::read_link(&entry.host_path).map_err(io_error(&entry.host_path))?;
        put_bytes(hasher, target.as_os_str().as_bytes());
        fingerprint.push_str(&format!(" -> {}", target.display()));
    } else if file_type.is_char_device() || file_type.is_block_device() {
        put_u64(hasher, entry.metadata.rdev());
        fingerprint.push_str(&format!(" {}", entry.metadata.rdev()));
    }
    Ok(fingerprint)
}

fn put_u64(hasher: &mut Sha256Hasher, value: u64) {
    hasher.update(&value.to_le_bytes());
}

fn put_bytes(hasher: &mut Sha256Hasher, bytes: &[u8]) {
    put_u64(hasher, bytes.len() as u64);
    hasher.update(bytes);
}
