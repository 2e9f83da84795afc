//! Walking a resolved source (the hash over what the walk sees is in `hashing`).
//!
//! The walk never follows symlinks, visits children in byte order of their names, and applies
//! `.dockerignore` and `--exclude` (the latter relative to the source): an excluded directory is skipped unless a later exception may re-include
//! something inside it; such a directory is then reported just before its first visible
//! descendant (BuildKit sends the parents of re-included files the same way), so a consumer
//! always sees a parent before its children.

use std::collections::VecDeque;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::{ContextError, Source, SourceFilter, io_error, path_to_slash};
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
