//! Walking a resolved source (the hash over what the walk sees is in `hashing`).
//!
//! The walk never follows symlinks, visits children in byte order of their names, and applies
//! `.dockerignore` and `--exclude` (the latter relative to the source): an excluded directory is skipped unless a later exception may re-include
//! something inside it; such a directory is then reported just before its first visible
//! descendant (BuildKit sends the parents of re-included files the same way), so a consumer
//! always sees a parent before its children.
//!
//! Listing a directory (`getdents`, one `lstat` per child, the ignore matchers) is what a walk
//! of a big context spends its time on, so directories are listed by a small pool of threads
//! (`listing`) ahead of the iterator, which only stitches the sorted listings together in
//! pre-order. The output is therefore the same whatever the threads did first.

mod listing;

use std::collections::VecDeque;
use std::fs::Metadata;
use std::path::PathBuf;
use std::sync::Arc;

use listing::{Child, DirSlot, Lister, Visibility};

use super::{ContextError, Source, io_error};

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
    lister: Arc<Lister>,
    root: PathBuf,
    started: bool,
    /// The directories on the current path, innermost last.
    stack: Vec<Frame>,
    /// Excluded directories on the current path, held back until something below them shows.
    deferred: Vec<(usize, SourceEntry)>,
    ready: VecDeque<SourceEntry>,
}

/// A directory being walked: its listing once fetched, and where it is.
struct Frame {
    slot: Arc<DirSlot>,
    children: Option<std::vec::IntoIter<Child>>,
    /// Relative to the source.
    rel: PathBuf,
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
        let lister = Lister::new(source.filter.clone(), source.exclude.clone());
        SourceEntries::with_lister(source, lister)
    }

    fn with_lister(source: &Source, lister: Arc<Lister>) -> Self {
        SourceEntries {
            lister,
            root: source.host_path.clone(),
            started: false,
            stack: Vec::new(),
            deferred: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The source itself (`lstat`, so a symlink source is the link); a directory is entered.
    fn start(&mut self) -> Result<SourceEntry, ContextError> {
        let metadata = std::fs::symlink_metadata(&self.root).map_err(io_error(&self.root))?;
        if metadata.is_dir() {
            self.stack.push(Frame {
                slot: DirSlot::new(self.root.clone(), String::new()),
                children: None,
                rel: PathBuf::new(),
            });
        }
        Ok(SourceEntry {
            host_path: self.root.clone(),
            rel: PathBuf::new(),
            metadata,
        })
    }
}

impl Drop for SourceEntries {
    fn drop(&mut self) {
        // A caller that stops early (`next()` once, an error) leaves nothing to prefetch for.
        self.lister.cancel();
    }
}

impl Iterator for SourceEntries {
    type Item = Result<SourceEntry, ContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            return Some(self.start());
        }
        loop {
            if let Some(entry) = self.ready.pop_front() {
                return Some(Ok(entry));
            }
            // The root is depth 0, so the children of the innermost directory are at this depth.
            let depth = self.stack.len();
            let frame = self.stack.last_mut()?;
            let children = match &mut frame.children {
                Some(children) => children,
                None => match self.lister.take(&frame.slot) {
                    Ok(children) => frame.children.insert(children.into_iter()),
                    Err(error) => {
                        // Reported once; the walk goes on with the next directory up.
                        self.stack.pop();
                        return Some(Err(error));
                    }
                },
            };
            let Some(child) = children.next() else {
                self.stack.pop();
                continue;
            };
            let rel = frame.rel.join(&child.name);
            let host_path = frame.slot.host_path().join(&child.name);
            let metadata = match child.metadata {
                Ok(metadata) => metadata,
                Err(source) => {
                    return Some(Err(ContextError::Io {
                        path: host_path,
                        source,
                    }));
                }
            };
            // Pre-order walk: anything deferred at this depth or deeper is not an ancestor.
            self.deferred
                .retain(|(deferred_depth, _)| *deferred_depth < depth);
            let entry = SourceEntry {
                host_path,
                rel: rel.clone(),
                metadata,
            };
            if let Some(slot) = child.subdir {
                self.stack.push(Frame {
                    slot,
                    children: None,
                    rel,
                });
            }
            match child.visibility {
                Visibility::Shown => {
                    self.ready
                        .extend(self.deferred.drain(..).map(|(_, ancestor)| ancestor));
                    self.ready.push_back(entry);
                }
                Visibility::HiddenMayShowBelow => self.deferred.push((depth, entry)),
                Visibility::Hidden => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
