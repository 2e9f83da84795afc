//! The build-cache hash of a source set, computed in parallel and without re-reading files
//! whose metadata has not changed.
//!
//! The calling thread walks the sources in order and serialises each entry (name, type, mode,
//! link target…). A regular file's content digest comes from the context's
//! [`FileDigestIndex`] when its metadata is unchanged; otherwise it is read by a small pool of
//! worker threads, each streaming the file through a fixed buffer. Entries wait in a bounded
//! window until their digests are known and are folded into the hash in walk order, so the
//! result does not depend on scheduling and memory stays bounded however large the tree.

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use kiln_image::{Digest, Sha256Hasher};
use kiln_store::{FileDigestIndex, FileStat};

use super::{ContextError, Source, SourceEntry, io_error};
use crate::cache::FileFingerprint;

/// Most threads that read files at once. More rarely helps: one core hashes ~1.5 GB/s with
/// SHA-NI, so a few threads already outrun most disks.
const MAX_WORKERS: usize = 8;
/// Entries walked ahead of the oldest one still waiting for its digest.
const WINDOW: usize = 4096;
/// Each worker reads through one buffer of this size; files are never held whole.
const READ_BUFFER: usize = 256 * 1024;

/// The digests of one tree's files, remembered across builds (the build context's).
#[derive(Debug)]
pub struct DigestCache {
    /// The tree root the index's relative paths start from.
    root: PathBuf,
    index: Mutex<FileDigestIndex>,
}

impl DigestCache {
    pub fn new(root: PathBuf, index: FileDigestIndex) -> Self {
        DigestCache {
            root,
            index: Mutex::new(index),
        }
    }

    /// Writes what was learnt back into the store.
    pub fn save(&self, store: &kiln_store::Store) -> Result<(), kiln_store::StoreError> {
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .save(store)
    }
}

/// What goes into a source-set hash beyond content, names and modes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashOptions<'a> {
    /// Known digests of the tree's files.
    pub cache: Option<&'a DigestCache>,
    /// Also hash each entry's uid and gid: `COPY --from` without `--chown` keeps them.
    pub include_owner: bool,
    /// Stop between entries once cancelled (a large context can take a while).
    pub cancel: Option<&'a crate::CancelToken>,
}

/// How much work a hash took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Entries walked (files, directories, links…).
    pub entries: u64,
    /// Regular files among them.
    pub files: u64,
    /// Regular files whose content was read (the others' digests were known).
    pub files_read: u64,
    /// Bytes read from those files.
    pub bytes_read: u64,
}

/// A source set's hash and what computing it cost.
#[derive(Debug, Clone)]
pub struct SourcesDigest {
    pub digest: Digest,
    pub stats: HashStats,
    /// What was hashed, entry by entry, for `--explain` to name the files that changed.
    pub manifest: Vec<FileFingerprint>,
}

/// The build-cache key of a source set: for every source its matched path, and for every entry
/// its name, file type, permission bits and content (or link target, or device number), and its
/// owner with [`HashOptions::include_owner`]. Timestamps, inode numbers and where the tree lives
/// on the host are left out, so two checkouts of the same content hash the same.
pub fn hash_sources(
    sources: &[Source],
    options: &HashOptions<'_>,
) -> Result<SourcesDigest, ContextError> {
    let index = options.cache.map(|cache| CacheView {
        root: cache.root.as_path(),
        index: cache
            .index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    });
    let bytes_read = AtomicU64::new(0);
    let (digest, mut stats, manifest) = std::thread::scope(|scope| {
        let mut pipeline = Pipeline::new(scope, &bytes_read, index);
        let mut hasher = Sha256Hasher::new();
        hasher.update(b"kiln source set v1\0");
        put_u64(&mut hasher, sources.len() as u64);
        for source in sources {
            let mut header = Vec::new();
            put_bytes(&mut header, source.rel_path.as_bytes());
            header.push(u8::from(source.is_dir));
            pipeline.push(&mut hasher, Pending::ready(header))?;
            for entry in source.entries() {
                if options.cancel.is_some_and(crate::CancelToken::is_cancelled) {
                    return Err(ContextError::Cancelled);
                }
                let entry = entry?;
                let mut pending = pipeline.describe(&entry, options.include_owner)?;
                pending.path = Some(manifest_path(&source.rel_path, &entry.rel));
                pipeline.push(&mut hasher, pending)?;
            }
            // Ends the source so entries of consecutive sources cannot be regrouped.
            pipeline.push(&mut hasher, Pending::ready(b"\xff".to_vec()))?;
        }
        pipeline.finish(&mut hasher)?;
        Ok::<_, ContextError>((hasher.finish(), pipeline.stats, pipeline.manifest))
    })?;
    stats.bytes_read = bytes_read.load(Ordering::Relaxed);
    Ok(SourcesDigest {
        digest,
        stats,
        manifest,
    })
}

/// `src` + `main.rs` → `src/main.rs`; the root of a `.` source is `.`.
pub(crate) fn manifest_path(source: &str, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    match (source.trim_matches('/'), rel.as_ref()) {
        ("", "") => ".".to_owned(),
        ("", r) => r.to_owned(),
        (s, "") => s.to_owned(),
        (s, r) => format!("{s}/{r}"),
    }
}

/// The index of the tree being hashed, locked for the whole hash (by the calling thread only).
struct CacheView<'a> {
    root: &'a Path,
    index: std::sync::MutexGuard<'a, FileDigestIndex>,
}

/// One serialised entry, maybe still waiting for its file's content digest.
struct Pending {
    /// Everything before the content digest.
    head: Vec<u8>,
    content: Content,
    /// For an entry (not a source's header or end): its path in the manifest and its
    /// fingerprint so far (type, mode, owner, link target); a file's digest is added once known.
    path: Option<String>,
    fingerprint: String,
}

enum Content {
    /// Nothing more to add.
    None,
    /// A regular file's digest, known.
    Known { size: u64, digest: Digest },
    /// A regular file being read; recorded in the cache under `rel` with `stat` once known.
    Waiting(FileRead),
    /// A worker's answer, not yet folded in.
    Read(FileRead, Result<(u64, Digest), ContextError>),
}

/// What the index needs to remember a file's digest once it is read.
struct FileRead {
    /// Relative to the cached tree's root; `None` outside it or without a cache.
    rel: Option<Vec<u8>>,
    /// The metadata seen before the read.
    stat: FileStat,
}

impl Pending {
    fn ready(head: Vec<u8>) -> Pending {
        Pending {
            head,
            content: Content::None,
            path: None,
            fingerprint: String::new(),
        }
    }
}

struct Job {
    slot: u64,
    path: PathBuf,
}

type JobResult = (u64, Result<(u64, Digest), ContextError>);

/// The in-order window of entries and the worker pool that reads files for it.
struct Pipeline<'scope, 'env, 'cache> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    bytes_read: &'env AtomicU64,
    cache: Option<CacheView<'cache>>,
    /// Created with the first file that has to be read.
    workers: Option<Workers>,
    window: VecDeque<Pending>,
    /// Slot number of `window[0]`.
    first_slot: u64,
    in_flight: usize,
    stats: HashStats,
    manifest: Vec<FileFingerprint>,
}

struct Workers {
    jobs: mpsc::SyncSender<Job>,
    results: mpsc::Receiver<JobResult>,
    count: usize,
}

impl<'scope, 'env, 'cache> Pipeline<'scope, 'env, 'cache> {
    fn new(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        bytes_read: &'env AtomicU64,
        cache: Option<CacheView<'cache>>,
    ) -> Self {
        Pipeline {
            scope,
            bytes_read,
            cache,
            workers: None,
            window: VecDeque::new(),
            first_slot: 0,
            in_flight: 0,
            stats: HashStats::default(),
            manifest: Vec::new(),
        }
    }

    /// Serialises an entry; a regular file's digest is taken from the index when its metadata
    /// is unchanged.
    fn describe(
        &mut self,
        entry: &SourceEntry,
        include_owner: bool,
    ) -> Result<Pending, ContextError> {
        self.stats.entries += 1;
        let metadata = &entry.metadata;
        let file_type = metadata.file_type();
        let mut head = Vec::with_capacity(64);
        head.push(b'E');
        put_bytes(&mut head, entry.rel.as_os_str().as_bytes());
        head.push(if file_type.is_file() {
            b'f'
        } else if file_type.is_dir() {
            b'd'
        } else if file_type.is_symlink() {
            b'l'
        } else if file_type.is_fifo() {
            b'p'
        } else if file_type.is_char_device() {
            b'c'
        } else if file_type.is_block_device() {
            b'b'
        } else {
            b's'
        });
        let mode = metadata.mode() & 0o7777;
        head.extend_from_slice(&mode.to_le_bytes());
        // The type tag pushed just before the mode.
        let tag = char::from(head[head.len() - std::mem::size_of_val(&mode) - 1]);
        let mut fingerprint = format!("{tag} {mode:o}");
        if include_owner {
            head.push(b'o');
            head.extend_from_slice(&metadata.uid().to_le_bytes());
            head.extend_from_slice(&metadata.gid().to_le_bytes());
            fingerprint.push_str(&format!(" {}:{}", metadata.uid(), metadata.gid()));
        }
        let content = if file_type.is_file() {
            self.stats.files += 1;
            let stat = FileStat::from_metadata(metadata);
            let rel = self.cache.as_ref().and_then(|cache| {
                entry
                    .host_path
                    .strip_prefix(cache.root)
                    .ok()
                    .map(|rel| rel.as_os_str().as_bytes().to_vec())
            });
            let known = match (&rel, self.cache.as_mut()) {
                (Some(rel), Some(cache)) => cache.index.lookup(rel, &stat),
                _ => None,
            };
            match known {
                Some(digest) => Content::Known {
                    size: stat.size,
                    digest,
                },
                None if stat.size == 0 => Content::Known {
                    size: 0,
                    digest: Digest::of(b""),
                },
                None => {
                    self.stats.files_read += 1;
                    self.start_read(entry.host_path.clone());
                    Content::Waiting(FileRead { rel, stat })
                }
            }
        } else {
            if file_type.is_symlink() {
                let target =
                    std::fs::read_link(&entry.host_path).map_err(io_error(&entry.host_path))?;
                put_bytes(&mut head, target.as_os_str().as_bytes());
                fingerprint.push_str(&format!(" -> {}", target.display()));
            } else if file_type.is_char_device() || file_type.is_block_device() {
                head.extend_from_slice(&metadata.rdev().to_le_bytes());
                fingerprint.push_str(&format!(" {}", metadata.rdev()));
            }
            Content::None
        };
        Ok(Pending {
            head,
            content,
            path: None,
            fingerprint,
        })
    }

    /// Queues the file for the slot about to be pushed.
    fn start_read(&mut self, path: PathBuf) {
        let slot = self.first_slot + self.window.len() as u64;
        let bytes_read = self.bytes_read;
        let workers = self.workers.get_or_insert_with(|| {
            let count = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, MAX_WORKERS);
            let (jobs, job_queue) = mpsc::sync_channel::<Job>(count * 4);
            let (answers, results) = mpsc::channel::<JobResult>();
            let job_queue = Arc::new(Mutex::new(job_queue));
            for _ in 0..count {
                let job_queue = Arc::clone(&job_queue);
                let answers = answers.clone();
                self.scope.spawn(move || {
                    let mut buffer = vec![0u8; READ_BUFFER];
                    loop {
                        let job = {
                            let queue = job_queue.lock().unwrap_or_else(|p| p.into_inner());
                            queue.recv()
                        };
                        let Ok(job) = job else { return };
                        let result = digest_file(&job.path, &mut buffer, bytes_read);
                        // The receiver is gone only when the hash was abandoned on an error.
                        if answers.send((job.slot, result)).is_err() {
                            return;
                        }
                    }
                });
            }
            Workers {
                jobs,
                results,
                count,
            }
        });
        workers
            .jobs
            .send(Job { slot, path })
            .expect("workers live as long as the pipeline");
        self.in_flight += 1;
    }

    /// Appends an entry, folds every leading entry whose digest is known, and waits for the
    /// workers while the window is full.
    fn push(&mut self, hasher: &mut Sha256Hasher, pending: Pending) -> Result<(), ContextError> {
        self.window.push_back(pending);
        self.drain(hasher)?;
        while self.window.len() >= WINDOW || self.workers_saturated() {
            self.receive_one();
            self.drain(hasher)?;
        }
        Ok(())
    }

    fn workers_saturated(&self) -> bool {
        self.workers
            .as_ref()
            .is_some_and(|workers| self.in_flight >= workers.count * 4)
    }

    /// Waits for every outstanding read and folds everything.
    fn finish(&mut self, hasher: &mut Sha256Hasher) -> Result<(), ContextError> {
        while !self.window.is_empty() {
            if !self.front_ready() {
                self.receive_one();
            }
            self.drain(hasher)?;
        }
        Ok(())
    }

    fn front_ready(&self) -> bool {
        self.window
            .front()
            .is_some_and(|front| !matches!(front.content, Content::Waiting(_)))
    }

    /// Waits for one worker's answer and puts it in its slot.
    fn receive_one(&mut self) {
        let workers = self
            .workers
            .as_ref()
            .expect("only waited on with reads out");
        let (slot, result) = workers
            .results
            .recv()
            .expect("workers answer every job they take");
        self.in_flight -= 1;
        let at = usize::try_from(slot - self.first_slot).expect("slot is in the window");
        let content = &mut self.window[at].content;
        let Content::Waiting(read) = std::mem::replace(content, Content::None) else {
            unreachable!("only waiting slots get answers");
        };
        *content = Content::Read(read, result);
    }

    /// Folds the leading entries whose content is known into `hasher`.
    /// Remembers the digests files turned out to have.
    fn drain(&mut self, hasher: &mut Sha256Hasher) -> Result<(), ContextError> {
        while self.front_ready() {
            let pending = self.window.pop_front().expect("front is ready");
            self.first_slot += 1;
            hasher.update(&pending.head);
            let (size, digest) = match pending.content {
                Content::None => {
                    if let Some(path) = pending.path {
                        self.manifest.push(FileFingerprint {
                            path,
                            fingerprint: pending.fingerprint,
                        });
                    }
                    continue;
                }
                Content::Known { size, digest } => (size, digest),
                Content::Read(read, result) => {
                    let (size, digest) = result?;
                    if let (Some(rel), Some(cache)) = (read.rel, self.cache.as_mut()) {
                        cache.index.insert(&rel, read.stat, digest.clone());
                    }
                    (size, digest)
                }
                Content::Waiting(_) => unreachable!("front is ready"),
            };
            put_u64(hasher, size);
            hasher.update(digest.hex().as_bytes());
            if let Some(path) = pending.path {
                self.manifest.push(FileFingerprint {
                    path,
                    fingerprint: format!("{} {}", pending.fingerprint, digest.hex()),
                });
            }
        }
        Ok(())
    }
}

/// Streams a file through `buffer` into SHA-256.
fn digest_file(
    path: &Path,
    buffer: &mut [u8],
    bytes_read: &AtomicU64,
) -> Result<(u64, Digest), ContextError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256Hasher::new();
    loop {
        let n = match file.read(buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(io_error(path)(error)),
        };
        bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        hasher.update(&buffer[..n]);
    }
    Ok((hasher.len(), hasher.finish()))
}

fn put_u64(hasher: &mut Sha256Hasher, value: u64) {
    hasher.update(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests;
