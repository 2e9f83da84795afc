//! Directory listings for a walk, made ahead of it by a small pool of threads.
//!
//! Every directory the walk will enter gets a [`DirSlot`] as soon as its parent is listed, and
//! the slot is queued. Worker threads take queued slots (newest first, so they move through the
//! tree depth-first, roughly in the order the walk consumes it) and list them: read the
//! directory, `lstat` each child, sort by name, and decide what `.dockerignore`/`--exclude`
//! hide. The walk takes a slot's listing when it reaches that directory; if no worker has
//! started it yet, the walk lists it itself rather than wait, so it never depends on a worker
//! being scheduled. Workers start only once a listing has subdirectories to hand out, leave
//! when the queue is empty, and stop listing ahead once [`PREFETCH_BUDGET`] children wait
//! unread, which bounds memory on huge trees.

use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::super::{ContextError, SourceFilter, io_error, join_rel};
use crate::dockerignore::IgnoreMatcher;

/// Most listing threads per walk: listing is `lstat`-bound, and a few threads already keep
/// the kernel's dentry cache busy.
const MAX_THREADS: usize = 8;
/// Children listed ahead of the walk before the workers wait for it (a few MB of metadata).
const PREFETCH_BUDGET: usize = 32 * 1024;

/// What the ignore matchers make of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Visibility {
    Shown,
    /// An excluded directory that an exception may re-include something below.
    HiddenMayShowBelow,
    Hidden,
}

/// One child of a listed directory.
#[derive(Debug)]
pub(super) struct Child {
    pub name: OsString,
    /// `lstat` of it; an error is reported at its place in the walk.
    pub metadata: std::io::Result<Metadata>,
    pub visibility: Visibility,
    /// For a directory the walk enters: where its listing will be.
    pub subdir: Option<Arc<DirSlot>>,
}

/// A directory to be listed, and its listing once made.
#[derive(Debug)]
pub(super) struct DirSlot {
    host_path: PathBuf,
    /// Relative to the source, `/`-separated, as the matchers take it.
    rel: String,
    state: Mutex<SlotState>,
    listed: Condvar,
}

#[derive(Debug)]
enum SlotState {
    Queued,
    Listing,
    Listed {
        children: Result<Vec<Child>, ContextError>,
        /// Counted in the prefetch budget (listed by a worker).
        prefetched: usize,
    },
    Taken,
}

impl DirSlot {
    pub fn new(host_path: PathBuf, rel: String) -> Arc<DirSlot> {
        Arc::new(DirSlot {
            host_path,
            rel,
            state: Mutex::new(SlotState::Queued),
            listed: Condvar::new(),
        })
    }

    pub fn host_path(&self) -> &Path {
        &self.host_path
    }
}

/// The shared state of one walk's listings.
#[derive(Debug)]
pub(super) struct Lister {
    filter: Option<SourceFilter>,
    exclude: Option<Arc<IgnoreMatcher>>,
    threads: usize,
    /// Children listed ahead of the walk before the workers wait for it.
    prefetch_budget: usize,
    queue: Mutex<Queue>,
    /// Signalled when budget is freed or the walk is cancelled.
    budget: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// Slots to list, the next one last.
    jobs: Vec<Arc<DirSlot>>,
    /// Children listed by workers and not yet taken by the walk.
    prefetched: usize,
    workers: usize,
    cancelled: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lister {
    pub fn new(filter: Option<SourceFilter>, exclude: Option<Arc<IgnoreMatcher>>) -> Arc<Lister> {
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(MAX_THREADS);
        Lister::with_threads(filter, exclude, threads, PREFETCH_BUDGET)
    }

    /// `threads == 0`: the walk lists every directory itself.
    pub fn with_threads(
        filter: Option<SourceFilter>,
        exclude: Option<Arc<IgnoreMatcher>>,
        threads: usize,
        prefetch_budget: usize,
    ) -> Arc<Lister> {
        Arc::new(Lister {
            filter,
            exclude,
            threads,
            prefetch_budget,
            queue: Mutex::new(Queue::default()),
            budget: Condvar::new(),
        })
    }

    /// The listing of `slot`, made here if no worker has started it, else waited for.
    pub fn take(self: &Arc<Self>, slot: &DirSlot) -> Result<Vec<Child>, ContextError> {
        let mut state = lock(&slot.state);
        loop {
            match std::mem::replace(&mut *state, SlotState::Taken) {
                SlotState::Queued => {
                    drop(state);
                    return self.list(slot);
                }
                SlotState::Listing => {
                    *state = SlotState::Listing;
                    state = slot
                        .listed
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                SlotState::Listed {
                    children,
                    prefetched,
                } => {
                    drop(state);
                    if prefetched > 0 {
                        lock(&self.queue).prefetched -= prefetched;
                        self.budget.notify_all();
                    }
                    return children;
                }
                // Each directory is entered once; a second take has nothing left to give.
                SlotState::Taken => return Ok(Vec::new()),
            }
        }
    }

    /// Stops the workers: the walk is over or abandoned.
    pub fn cancel(&self) {
        let mut queue = lock(&self.queue);
        queue.cancelled = true;
        queue.jobs.clear();
        drop(queue);
        self.budget.notify_all();
    }

    /// Reads, stats, sorts and classifies one directory's children, and queues the
    /// subdirectories the walk will enter.
    fn list(self: &Arc<Self>, slot: &DirSlot) -> Result<Vec<Child>, ContextError> {
        let directory = &slot.host_path;
        let mut children = Vec::new();
        for found in std::fs::read_dir(directory).map_err(io_error(directory))? {
            let found = found.map_err(io_error(directory))?;
            // `DirEntry::metadata` is an `fstatat` without following links.
            children.push(Child {
                metadata: found.metadata(),
                name: found.file_name(),
                visibility: Visibility::Shown,
                subdir: None,
            });
        }
        children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for child in &mut children {
            let is_dir = child.metadata.as_ref().is_ok_and(Metadata::is_dir);
            if self.filter.is_some() || self.exclude.is_some() {
                let rel = join_rel(&slot.rel, &child.name.to_string_lossy());
                child.visibility = self.visibility(&rel, is_dir);
                if is_dir && child.visibility != Visibility::Hidden {
                    let subdir = DirSlot::new(directory.join(&child.name), rel);
                    subdirs.push(Arc::clone(&subdir));
                    child.subdir = Some(subdir);
                }
            } else if is_dir {
                // Without matchers the relative path is never looked at.
                let subdir = DirSlot::new(directory.join(&child.name), String::new());
                subdirs.push(Arc::clone(&subdir));
                child.subdir = Some(subdir);
            }
        }
        self.queue_all(subdirs);
        Ok(children)
    }

    /// Each matcher says whether it hides the path and, for a directory, whether something
    /// below could still show; the path shows only if neither hides it.
    fn visibility(&self, rel: &str, is_dir: bool) -> Visibility {
        let mut hidden = false;
        let mut may_show_below = true;
        if let Some(filter) = &self.filter {
            let tree_path = filter.tree_path(rel);
            if filter.ignore.is_excluded(&tree_path) {
                hidden = true;
                may_show_below &= filter.ignore.may_include_below(&tree_path);
            }
        }
        if let Some(exclude) = &self.exclude
            && exclude.is_excluded(rel)
        {
            hidden = true;
            may_show_below &= exclude.may_include_below(rel);
        }
        match (hidden, is_dir && may_show_below) {
            (false, _) => Visibility::Shown,
            (true, true) => Visibility::HiddenMayShowBelow,
            (true, false) => Visibility::Hidden,
        }
    }

    fn queue_all(self: &Arc<Self>, subdirs: Vec<Arc<DirSlot>>) {
        if subdirs.is_empty() || self.threads == 0 {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.cancelled {
            return;
        }
        // Reversed, so the first child is listed first.
        queue.jobs.extend(subdirs.into_iter().rev());
        let wanted = self.threads.min(queue.jobs.len());
        while queue.workers < wanted {
            let lister = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("kiln-walk".into())
                .spawn(move || lister.work());
            // Without a thread the walk lists every directory itself.
            if spawned.is_err() {
                break;
            }
            queue.workers += 1;
        }
    }

    /// A worker: lists queued slots until the queue is empty or the walk is cancelled.
    fn work(self: Arc<Self>) {
        loop {
            let slot = {
                let mut queue = lock(&self.queue);
                loop {
                    if queue.cancelled {
                        queue.workers -= 1;
                        return;
                    }
                    if queue.prefetched >= self.prefetch_budget {
                        queue = self
                            .budget
                            .wait(queue)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        continue;
                    }
                    match queue.jobs.pop() {
                        Some(slot) => break slot,
                        None => {
                            queue.workers -= 1;
                            return;
                        }
                    }
                }
            };
            {
                let mut state = lock(&slot.state);
                // The walk got there first and listed it itself.
                if !matches!(*state, SlotState::Queued) {
                    continue;
                }
                *state = SlotState::Listing;
            }
            let children = self.list(&slot);
            let prefetched = children.as_ref().map_or(0, Vec::len);
            // Counted before it can be taken, so taking never finds the count short.
            lock(&self.queue).prefetched += prefetched;
            *lock(&slot.state) = SlotState::Listed {
                children,
                prefetched,
            };
            slot.listed.notify_all();
        }
    }
}
