//! The persistent metadata cache of build contexts: for each context directory, the content
//! digest of every regular file it has hashed, remembered together with the file's metadata, so a
//! rebuild reads only the files whose metadata changed.
//!
//! ```text
//! context-index/<sha256 of the canonical context path>
//! ```
//!
//! One binary file per context directory (format below), read whole at the start of a build and
//! rewritten (temp file + rename) at its end when something changed. The file is a cache and
//! nothing more: one that is missing, truncated, corrupt (its trailing checksum does not match),
//! of another version or for another directory is ignored and rebuilt, never an error.
//!
//! An entry is trusted when the file's size, mtime, ctime, inode, device and mode are all as
//! recorded. That fails if a file is rewritten within one tick of the filesystem clock after it
//! was hashed (the "racy git" problem: both writes leave the same timestamps). So entries whose
//! ctime or mtime is not older than the start of the build that hashed them (less the clock's
//! granularity) are never trusted: such files are hashed again next time, and remembered once
//! they are old enough.
//!
//! Size is bounded: an entry not used by [`MAX_IDLE_SAVES`] saves of its index is dropped, an
//! index holds at most [`MAX_ENTRIES`] entries, and at most [`MAX_INDEXES`] context directories
//! are remembered (the least recently saved go first).
//!
//! Format (integers little-endian):
//! ```text
//! "KILNFDX1"  u32 len, canonical context path   u64 generation   u64 entry count
//! entries: u32 len, relative path, u64 size, i64 mtime_ns, i64 ctime_ns, u64 inode, u64 device,
//!          u32 mode, u64 last used generation, 64 hex digits of the content's sha256
//! 64 hex digits: sha256 of everything above
//! ```

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_image::{Digest, Sha256Hasher};

use crate::{Result, Store, StoreError};

const MAGIC: &[u8; 8] = b"KILNFDX1";
/// Entries beyond this many are dropped (unused ones first) when an index is saved.
pub const MAX_ENTRIES: usize = 400_000;
/// An entry that this many saves of its index did not use is dropped (its file is gone or no
/// longer copied by anything).
pub const MAX_IDLE_SAVES: u64 = 16;
/// Context directories remembered at once; saving one more forgets the least recently saved.
pub const MAX_INDEXES: usize = 64;
/// The clock granularity assumed for files with sub-second timestamps: the kernel stamps files
/// from a clock that only advances once per scheduler tick (1–10 ms), so a rewrite up to a tick
/// after a hash can carry the same timestamps.
const FINE_GRANULARITY_NS: i64 = 100_000_000;
/// For filesystems whose timestamps are whole seconds (ctime with no nanoseconds), e.g. FAT's two
/// seconds.
const COARSE_GRANULARITY_NS: i64 = 2_000_000_000;

/// The metadata of a regular file that decides whether its recorded digest still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub device: u64,
    pub mode: u32,
}

impl FileStat {
    /// Takes the fields from an `lstat`/`stat` result.
    pub fn from_metadata(metadata: &std::fs::Metadata) -> FileStat {
        FileStat {
            size: metadata.size(),
            mtime_ns: metadata
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.mtime_nsec()),
            ctime_ns: metadata
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
            mode: metadata.mode(),
        }
    }

    /// Whether a write after `hashed_at` could have left these timestamps unchanged.
    fn is_racy(&self, hashed_at_ns: i64) -> bool {
        let granularity = if self.ctime_ns % 1_000_000_000 == 0 {
            COARSE_GRANULARITY_NS
        } else {
            FINE_GRANULARITY_NS
        };
        let trusted_before = hashed_at_ns.saturating_sub(granularity);
        self.mtime_ns >= trusted_before || self.ctime_ns >= trusted_before
    }
}

#[derive(Debug, Clone)]
struct Entry {
    stat: FileStat,
    digest: Digest,
    last_used: u64,
    /// Recorded in this session from a file that may still change within the clock's tick: kept
    /// out of lookups and out of the saved file.
    racy: bool,
}

/// The digests known for one context directory; see the module docs.
#[derive(Debug)]
pub struct FileDigestIndex {
    path: PathBuf,
    context: Vec<u8>,
    generation: u64,
    entries: HashMap<Box<[u8]>, Entry>,
    /// When this session started: files changed after it are racy.
    session_started_ns: i64,
    dirty: bool,
}

impl Store {
    /// The digest index of the context directory `context` (canonical), empty when there is none
    /// or it cannot be read. Files changed after this call are not trusted by what it records.
    pub fn file_digest_index(&self, context: &Path) -> FileDigestIndex {
        let key = Digest::of(context.as_os_str().as_bytes());
        let path = self.root.join("context-index").join(key.hex());
        let mut index = FileDigestIndex {
            path,
            context: context.as_os_str().as_bytes().to_vec(),
            generation: 0,
            entries: HashMap::new(),
            session_started_ns: now_ns(),
            dirty: false,
        };
        if let Ok(bytes) = std::fs::read(&index.path) {
            // Whatever is wrong with the file, the index starts empty and is rewritten.
            if let Some((generation, entries)) = decode(&bytes, &index.context) {
                index.generation = generation;
                index.entries = entries;
            }
        }
        index
    }
}

impl FileDigestIndex {
    /// The recorded digest of the file at `rel` (relative to the context), if its metadata is
    /// exactly `stat` and the record is not racy.
    pub fn lookup(&mut self, rel: &[u8], stat: &FileStat) -> Option<Digest> {
        let next_generation = self.generation + 1;
        let entry = self.entries.get_mut(rel)?;
        if entry.racy || entry.stat != *stat {
            return None;
        }
        if entry.last_used != next_generation {
            entry.last_used = next_generation;
        }
        Some(entry.digest.clone())
    }

    /// Records the digest of the file at `rel`, whose metadata was `stat` before it was read.
    pub fn insert(&mut self, rel: &[u8], stat: FileStat, digest: Digest) {
        let entry = Entry {
            stat,
            digest,
            last_used: self.generation + 1,
            racy: stat.is_racy(self.session_started_ns),
        };
        self.entries.insert(rel.into(), entry);
        self.dirty = true;
    }

    /// Entries held (racy ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the index back into `store` if anything was recorded since it was loaded, dropping
    /// racy, long-unused and excess entries, and forgets the least recently saved contexts
    /// beyond `MAX_INDEXES`.
    pub fn save(&mut self, store: &Store) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.generation += 1;
        let generation = self.generation;
        self.entries.retain(|_, entry| {
            !entry.racy && generation.saturating_sub(entry.last_used) < MAX_IDLE_SAVES
        });
        if self.entries.len() > MAX_ENTRIES {
            // Keep the most recently used; ties broken by path so the choice is stable.
            let mut ranked: Vec<(u64, Box<[u8]>)> = self
                .entries
                .iter()
                .map(|(rel, entry)| (entry.last_used, rel.clone()))
                .collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            for (_, rel) in ranked.drain(MAX_ENTRIES..) {
                self.entries.remove(&rel);
            }
        }
        let dir = self.path.parent().expect("index lives in a directory");
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        store.write_atomic(
            &self.path,
            &encode(&self.context, generation, &self.entries),
        )?;
        self.dirty = false;
        forget_old_indexes(dir, &self.path)
    }
}

fn now_ns() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// Removes the least recently written index files beyond [`MAX_INDEXES`], never `keep`.
fn forget_old_indexes(dir: &Path, keep: &Path) -> Result<()> {
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map_err(StoreError::io(dir))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, entry.path()))
        })
        .filter(|(_, path)| path != keep)
        .collect();
    if files.len() < MAX_INDEXES {
        return Ok(());
    }
    files.sort();
    let excess = files.len() + 1 - MAX_INDEXES;
    for (_, path) in files.into_iter().take(excess) {
        // Another build may have removed it first; either way it is gone.
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

fn encode(context: &[u8], generation: u64, entries: &HashMap<Box<[u8]>, Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 160);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, context);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    // Sorted so equal indexes are equal files.
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (rel, entry) in sorted {
        put_bytes(&mut out, rel);
        let stat = &entry.stat;
        out.extend_from_slice(&stat.size.to_le_bytes());
        out.extend_from_slice(&stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&stat.inode.to_le_bytes());
        out.extend_from_slice(&stat.device.to_le_bytes());
        out.extend_from_slice(&stat.mode.to_le_bytes());
        out.extend_from_slice(&entry.last_used.to_le_bytes());
        out.extend_from_slice(entry.digest.hex().as_bytes());
    }
    let checksum = Digest::of(&out);
    out.extend_from_slice(checksum.hex().as_bytes());
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("paths are shorter than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

type Decoded = (u64, HashMap<Box<[u8]>, Entry>);

/// Parses an index file; `None` when it is not a valid index for `context`.
fn decode(bytes: &[u8], context: &[u8]) -> Option<Decoded> {
    let body_len = bytes.len().checked_sub(64)?;
    let (body, checksum) = bytes.split_at(body_len);
    let mut hasher = Sha256Hasher::new();
    hasher.update(body);
    if hasher.finish().hex().as_bytes() != checksum {
        return None;
    }
    let mut reader = Reader { bytes: body };
    if reader.take(MAGIC.len())? != MAGIC || reader.bytes_field()? != context {
        return None;
    }
    let generation = reader.u64()?;
    let count = usize::try_from(reader.u64()?).ok()?;
    let mut entries = HashMap::with_capacity(count.min(MAX_ENTRIES));
    for _ in 0..count {
        let rel: Box<[u8]> = reader.bytes_field()?.into();
        let stat = FileStat {
            size: reader.u64()?,
            mtime_ns: reader.u64()? as i64,
            ctime_ns: reader.u64()? as i64,
            inode: reader.u64()?,
            device: reader.u64()?,
            mode: u32::from_le_bytes(reader.take(4)?.try_into().ok()?),
        };
        let last_used = reader.u64()?;
        let digest = Digest::from_hex(std::str::from_utf8(reader.take(64)?).ok()?).ok()?;
        let entry = Entry {
            stat,
            digest,
            last_used,
            racy: false,
        };
        entries.insert(rel, entry);
    }
    reader.bytes.is_empty().then_some((generation, entries))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < len {
            return None;
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes_field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests;
