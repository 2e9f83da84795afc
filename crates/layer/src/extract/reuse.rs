//! Extracting a build context over the previous one in the same directory, so that a rebuild
//! sent the same files creates none of them again.
//!
//! Why: creating a file is the expensive part of unpacking a small context (on ext4, allocating
//! inodes right after the last context's were freed), and a new inode also defeats the
//! context's file digest index, which trusts a file by inode and ctime. So a regular entry whose
//! content equals the file already at its name is not written: the file stays (same inode, same
//! ctime unless its owner, mode or mtime has to be set again). Content is compared byte for byte
//! against the entry's data, one entry at a time and only for files up to [`REUSE_MAX`]; larger
//! ones are written as usual, so memory stays bounded whatever the context holds.
//!
//! The result must be exactly what extracting into an empty directory gives:
//! - whatever the tar does not name is removed at the end ([`Reuse::prune`]);
//! - a directory on the way to an entry that this tar has not itself created or kept as a
//!   directory, but that is a leftover symlink or file, is removed first, so that an entry is
//!   never written through the previous context's links;
//! - a hard link's target must have been written by this tar before it, as in an empty
//!   directory;
//! - a kept file with more than one link is not kept (setting its metadata would change the
//!   other name too).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Mode, OFlags};

use super::meta::{Meta, apply_fd_meta, read_meta};
use super::{LayerError, join_bytes};
use crate::safe_fs;

/// The largest regular file whose content is compared with the one already there.
pub(crate) const REUSE_MAX: u64 = 1 << 20;

/// What one extraction over a previous context has seen.
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    /// Every path the tar names, and every directory above one.
    seen: HashSet<Vec<OsString>>,
    /// Directories (and prefixes named by the tar) already checked or made by this tar.
    checked: HashSet<Vec<OsString>>,
}

impl Reuse {
    /// Called for each entry (its cleaned components) before it is applied: removes leftovers
    /// that are not directories on its way, and records it as part of the new context.
    pub(crate) fn entry(&mut self, root: &OwnedFd, rel: &[OsString]) -> io::Result<()> {
        for depth in 1..rel.len() {
            let prefix = &rel[..depth];
            if self.checked.contains(prefix) {
                continue;
            }
            self.checked.insert(prefix.to_vec());
            self.seen.insert(prefix.to_vec());
            // The parent was checked at the previous depth (or is the root). Missing, nothing
            // below it is left over: the rest of the way is made by the extraction.
            let parent = match safe_fs::open_dir(root, &prefix[..depth - 1], false) {
                Ok(parent) => parent,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = prefix[depth - 1].as_os_str();
            if let Some(st) = safe_fs::existing(&parent, name)?
                && !safe_fs::is_dir(&st)
            {
                safe_fs::remove(&parent, name)?;
            }
        }
        // The entry itself replaces what is there; once applied it is this tar's, whatever it is
        // (a symlink named by the tar is followed by later entries, as in an empty directory).
        self.checked.insert(rel.to_vec());
        self.seen.insert(rel.to_vec());
        Ok(())
    }

    /// Whether the tar named `rel` (or a directory above a name) before now.
    pub(crate) fn seen(&self, rel: &[OsString]) -> bool {
        self.seen.contains(rel)
    }

    /// Removes everything under the root that the tar did not name.
    pub(crate) fn prune(&self, root: &OwnedFd) -> Result<(), LayerError> {
        let mut prefix = Vec::new();
        self.prune_dir(root, &mut prefix)
    }

    fn prune_dir(&self, dir: &OwnedFd, prefix: &mut Vec<OsString>) -> Result<(), LayerError> {
        let error = |prefix: &[OsString]| {
            let entry = String::from_utf8_lossy(&join_bytes(prefix)).into_owned();
            move |source| LayerError::Entry { entry, source }
        };
        let mut children = Vec::new();
        let entries = rustix::fs::Dir::read_from(dir)
            .map_err(io::Error::from)
            .map_err(error(prefix))?;
        for entry in entries {
            let entry = entry.map_err(io::Error::from).map_err(error(prefix))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                children.push(OsStr::from_bytes(name).to_owned());
            }
        }
        for child in children {
            prefix.push(child);
            let name = prefix.last().map(OsString::as_os_str).unwrap_or_default();
            if !self.seen.contains(prefix.as_slice()) {
                safe_fs::remove(dir, name).map_err(error(prefix))?;
            } else if safe_fs::existing(dir, name)
                .map_err(error(prefix))?
                .is_some_and(|st| safe_fs::is_dir(&st))
            {
                let child = safe_fs::open_child_dir(dir, name).map_err(error(prefix))?;
                self.prune_dir(&child, prefix)?;
            }
            prefix.pop();
        }
        Ok(())
    }
}

/// A regular entry over what may be the same file from the previous context.
pub(crate) fn regular<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let size = entry.size();
    let candidate = match safe_fs::existing(parent, name)? {
        Some(st)
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && st.st_nlink == 1
                && u64::try_from(st.st_size) == Ok(size)
                && size <= REUSE_MAX =>
        {
            st
        }
        _ => return super::regular(entry, parent, name, owner),
    };
    let meta = read_meta(entry, owner)?;
    let mut data = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut data)?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut existing = File::from(rustix::fs::openat(parent, name, flags, Mode::empty())?);
    let mut old = Vec::with_capacity(data.len());
    (&mut existing).take(REUSE_MAX + 1).read_to_end(&mut old)?;
    if old == data {
        if !same_meta(&candidate, &meta) {
            apply_fd_meta(&existing, &meta)?;
        }
        return Ok(());
    }
    drop(existing);
    safe_fs::remove(parent, name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::openat(
        parent,
        name,
        flags,
        Mode::from_raw_mode(0o600),
    )?);
    file.write_all(&data)?;
    apply_fd_meta(&file, &meta)
}

/// Whether a kept file already has the entry's metadata (so that setting it again, which
/// would change its ctime and so its standing in the digest index, can be skipped).
fn same_meta(st: &rustix::fs::Stat, meta: &Meta) -> bool {
    st.st_mode & 0o7777 == meta.mode
        && st.st_uid == meta.uid
        && st.st_gid == meta.gid
        && st.st_mtime == meta.mtime
        && st.st_mtime_nsec == 0
        && meta.xattrs.is_empty()
}
