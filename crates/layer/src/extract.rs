//! The tar extraction engine shared by [`crate::unpack_layer`] and [`crate::extract_archive`].
//!
//! Entry names are cleaned first: a leading `/` and `.` components are dropped, and a name with
//! a `..` component is refused (so are hard links whose target has one). The parent directory
//! is then opened inside the root (see [`crate::safe_fs`]) and the final component is created
//! with `*at` calls that never follow it. A later entry replaces an earlier one of the same name,
//! except that a directory over a directory merges. Directory mtimes are set at the end, since
//! creating their children changes them.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use tar::EntryType;

use crate::LayerError;
use crate::safe_fs;
use crate::userns;
use crate::write::{OPAQUE_MARKER, WHITEOUT_PREFIX};

mod meta;
mod reuse;

use meta::{apply_fd_meta, chown_at, read_meta, timestamps};
pub(crate) use reuse::Reuse;

/// What `.wh.` names mean to this extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whiteouts {
    /// Layer semantics, into a dir that will be an overlay lower dir: `.wh.x` becomes a char
    /// device 0:0 named `x`, `.wh..wh..opq` makes its directory opaque.
    ToOverlay,
    /// Ordinary files (`ADD` of a tarball).
    Literal,
    /// Layer semantics applied to a flattened filesystem (`--output type=local`): `.wh.x`
    /// deletes `x`, `.wh..wh..opq` empties its directory, except for what this layer adds.
    Apply,
}

/// Extracts tar entries into `root`, which is also the root that every path (and every symlink
/// met on the way) resolves in.
pub(crate) struct Extractor {
    root: OwnedFd,
    whiteouts: Whiteouts,
    /// Directories whose mtime to set once all entries are in, in creation order.
    dir_times: Vec<(Vec<OsString>, i64)>,
    /// With [`Whiteouts::Apply`], the paths this layer has written, which its own whiteouts
    /// must not delete.
    written: std::collections::HashSet<Vec<OsString>>,
    /// A build context: entries that could reach outside the tree are refused, not cleaned
    /// (see `context_tar`).
    context: bool,
    /// Extracting over the previous content of the directory, keeping what is unchanged (see
    /// `reuse`).
    reuse: Option<Reuse>,
    /// Every entry owned by this uid and gid instead of the archive's (`docker cp -a`).
    owner: Option<(u32, u32)>,
    /// Refuse to replace a directory with a non-directory or the other way round
    /// (`noOverwriteDirNonDir` of the Engine API).
    keep_kinds: bool,
}

impl Extractor {
    pub(crate) fn new(root: &Path, whiteouts: Whiteouts) -> Result<Extractor, LayerError> {
        let root_fd = safe_fs::open_root(root).map_err(LayerError::io(root))?;
        Ok(Extractor::in_dir(root_fd, whiteouts))
    }

    /// Extracts into the already open directory `root`.
    pub(crate) fn in_dir(root: OwnedFd, whiteouts: Whiteouts) -> Extractor {
        Extractor {
            root,
            whiteouts,
            dir_times: Vec::new(),
            written: std::collections::HashSet::new(),
            context: false,
            reuse: None,
            owner: None,
            keep_kinds: false,
        }
    }

    /// Extract over what the directory already holds: see [`Reuse`].
    pub(crate) fn reusing(mut self) -> Extractor {
        self.reuse = Some(Reuse::default());
        self
    }

    /// Owns every entry by `uid:gid` instead of the archive's owners.
    pub(crate) fn owned_by(mut self, owner: Option<(u32, u32)>) -> Extractor {
        self.owner = owner;
        self
    }

    /// Refuses entries that would turn a directory into a non-directory or back.
    pub(crate) fn keeping_kinds(mut self, keep: bool) -> Extractor {
        self.keep_kinds = keep;
        self
    }

    /// Refuse, instead of cleaning, what a build context cannot hold.
    pub(crate) fn confined_to_context(mut self) -> Extractor {
        self.context = true;
        self
    }

    /// Extracts every entry of the tar read from `reader`, then returns the reader, positioned
    /// after the tar's end blocks.
    pub(crate) fn extract<R: Read>(mut self, reader: R) -> Result<R, LayerError> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(LayerError::Archive)? {
            let mut entry = entry.map_err(LayerError::Archive)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.apply(&mut entry, &name)?;
        }
        // Before the directory times: removing entries changes their directories' mtimes.
        if let Some(reuse) = self.reuse.take() {
            reuse.prune(&self.root)?;
        }
        for (components, mtime) in std::mem::take(&mut self.dir_times).into_iter().rev() {
            self.set_dir_time(&components, mtime)
                .map_err(|source| LayerError::Entry {
                    entry: String::from_utf8_lossy(join_bytes(&components).as_slice()).into_owned(),
                    source,
                })?;
        }
        Ok(archive.into_inner())
    }

    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), LayerError> {
        let mut kind = entry.header().entry_type();
        // A pax global header (GNU tar names it like `/tmp/GlobalHead.0.0`) describes the
        // archive, not a file: like Go's archive/tar readers in moby/go-archive's `Unpack`,
        // skip it before its name can create any directory.
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let rel = clean(&entry.path_bytes()).map_err(|reason| unsafe_entry(name, reason))?;
        if self.context {
            context_check(entry, kind, rel.len()).map_err(|reason| unsafe_entry(name, reason))?;
        }
        // Pre-POSIX tars mark directories only by a trailing slash.
        if kind == EntryType::Regular && entry.path_bytes().ends_with(b"/") {
            kind = EntryType::Directory;
        }
        if let Some(last) = rel.last()
            && last.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
        {
            match self.whiteouts {
                Whiteouts::ToOverlay => return self.whiteout(&rel, name),
                Whiteouts::Apply => return self.apply_whiteout(&rel, name),
                Whiteouts::Literal => {}
            }
        }
        if self.whiteouts == Whiteouts::Apply {
            self.written.insert(rel.clone());
        }
        let Some((file_name, parent)) = rel.split_last() else {
            // The archive's own root (`./`). A layer's root dir is the lower dir itself; an ADD
            // archive's root is the existing destination, whose metadata is left alone.
            if self.whiteouts == Whiteouts::ToOverlay && kind.is_dir() {
                let meta = read_meta(entry, self.owner).map_err(LayerError::entry(name))?;
                apply_fd_meta(&self.root, &meta).map_err(LayerError::entry(name))?;
                self.dir_times.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let parent_components = parent;
        if let Some(reuse) = &mut self.reuse {
            reuse
                .entry(&self.root, &rel)
                .map_err(LayerError::entry(name))?;
        }
        let parent = safe_fs::open_dir(&self.root, parent_components, true)
            .map_err(LayerError::entry(name))?;
        let file_name = file_name.as_os_str();
        if self.keep_kinds
            && let Some(st) =
                safe_fs::existing(&parent, file_name).map_err(LayerError::entry(name))?
            && safe_fs::is_dir(&st) != kind.is_dir()
        {
            return Err(unsafe_entry(
                name,
                if kind.is_dir() {
                    "cannot overwrite a non-directory with a directory"
                } else {
                    "cannot overwrite a directory with a non-directory"
                },
            ));
        }
        let owner = self.owner;
        let result = match kind {
            EntryType::Directory => self.directory(entry, &parent, file_name, parent_components),
            EntryType::Regular | EntryType::Continuous if self.reuse.is_some() => {
                reuse::regular(entry, &parent, file_name, owner)
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                regular(entry, &parent, file_name, owner)
            }
            EntryType::Symlink => symlink(entry, &parent, file_name, owner),
            EntryType::Link => return self.hard_link(entry, &parent, file_name, &rel, name),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                special(entry, &parent, file_name, kind, owner)
            }
            // Other types (volume labels, multi-volume parts, unknown vendor types) carry nothing
            // a container filesystem can hold.
            _ => Ok(()),
        };
        result.map_err(LayerError::entry(name))
    }

    fn directory<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        parent_components: &[OsString],
    ) -> io::Result<()> {
        let meta = read_meta(entry, self.owner)?;
        let mut opaque = false;
        match safe_fs::existing(parent, name)? {
            Some(st) if safe_fs::is_dir(&st) => {}
            existing => {
                // A directory replacing a whiteout of the same layer: the lower directory was
                // deleted and a new one made, so nothing below may show through.
                opaque = self.whiteouts == Whiteouts::ToOverlay
                    && existing.is_some_and(|st| safe_fs::is_whiteout(&st));
                safe_fs::remove(parent, name)?;
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
            }
        }
        let dir = safe_fs::open_child_dir(parent, name)?;
        apply_fd_meta(&dir, &meta)?;
        if opaque {
            rustix::fs::fsetxattr(&dir, userns::opaque_xattr(), b"y", XattrFlags::empty())?;
        }
        let mut components = parent_components.to_vec();
        components.push(name.to_owned());
        self.dir_times.push((components, meta.mtime));
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        name: &OsStr,
        rel: &[OsString],
        entry_name: &str,
    ) -> Result<(), LayerError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| unsafe_entry(entry_name, "hard link without a target"))?;
        let target = clean(&target)
            .map_err(|reason| unsafe_entry(entry_name, format!("hard link target: {reason}")))?;
        if target == rel {
            return Ok(()); // a link to itself: already there
        }
        let Some((target_name, target_parent)) = target.split_last() else {
            return Err(unsafe_entry(entry_name, "hard link to the archive root"));
        };
        // Over a previous context, a leftover of the same name is not "in the archive".
        let target_seen = self.reuse.as_ref().is_none_or(|r| r.seen(&target));
        let link = || -> io::Result<()> {
            if !target_seen {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "hard link target is not in the archive before it",
                ));
            }
            let target_dir = safe_fs::open_dir(&self.root, target_parent, false)?;
            if safe_fs::existing(&target_dir, target_name)?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "hard link target is not in the archive before it",
                ));
            }
            safe_fs::remove(parent, name)?;
            // No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never what it points to.
            rustix::fs::linkat(
                &target_dir,
                target_name.as_os_str(),
                parent,
                name,
                AtFlags::empty(),
            )?;
            Ok(())
        };
        link().map_err(LayerError::entry(entry_name))
    }

    fn whiteout(&mut self, rel: &[OsString], name: &str) -> Result<(), LayerError> {
        let (marker, parent) = rel.split_last().expect("called with a last component");
        let run = || -> io::Result<()> {
            let parent = safe_fs::open_dir(&self.root, parent, true)?;
            let marker = marker.as_bytes();
            if marker == OPAQUE_MARKER.as_bytes() {
                rustix::fs::fsetxattr(&parent, userns::opaque_xattr(), b"y", XattrFlags::empty())?;
                return Ok(());
            }
            if marker.starts_with(b".wh..wh.") {
                return Ok(()); // other AUFS bookkeeping (hard link dirs): nothing to do here
            }
            let hidden = OsStr::from_bytes(&marker[WHITEOUT_PREFIX.len()..]);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "whiteout of no name",
                ));
            }
            match safe_fs::existing(&parent, hidden)? {
                None => {
                    rustix::fs::mknodat(
                        &parent,
                        hidden,
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rustix::fs::makedev(0, 0),
                    )?;
                }
                // Whiteouts only hide lower layers, never what this layer itself adds. A
                // directory added here must still hide the deleted lower one's contents.
                Some(st) if safe_fs::is_dir(&st) => {
                    let dir = safe_fs::open_child_dir(&parent, hidden)?;
                    rustix::fs::fsetxattr(&dir, userns::opaque_xattr(), b"y", XattrFlags::empty())?;
                }
                Some(_) => {}
            }
            Ok(())
        };
        run().map_err(LayerError::entry(name))
    }

    /// A whiteout applied to a flattened tree: delete what it hides, now.
    fn apply_whiteout(&mut self, rel: &[OsString], name: &str) -> Result<(), LayerError> {
        let (marker, parent) = rel.split_last().expect("called with a last component");
        let run = || -> io::Result<()> {
            let parent_fd = match safe_fs::open_dir(&self.root, parent, false) {
                Ok(fd) => fd,
                // Nothing below a missing directory to hide.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let marker = marker.as_bytes();
            let written_here = |child: &OsStr| {
                let mut path = parent.to_vec();
                path.push(child.to_owned());
                self.written.contains(&path)
            };
            if marker == OPAQUE_MARKER.as_bytes() {
                let mut children = Vec::new();
                for entry in rustix::fs::Dir::read_from(&parent_fd)? {
                    let entry = entry?;
                    let child = OsStr::from_bytes(entry.file_name().to_bytes());
                    if child != "." && child != ".." && !written_here(child) {
                        children.push(child.to_owned());
                    }
                }
                for child in children {
                    safe_fs::remove(&parent_fd, &child)?;
                }
                return Ok(());
            }
            if marker.starts_with(b".wh..wh.") {
                return Ok(());
            }
            let hidden = OsStr::from_bytes(&marker[WHITEOUT_PREFIX.len()..]);
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "whiteout of no name",
                ));
            }
            if !written_here(hidden) {
                safe_fs::remove(&parent_fd, hidden)?;
            }
            Ok(())
        };
        run().map_err(LayerError::entry(name))
    }

    fn set_dir_time(&self, components: &[OsString], mtime: i64) -> io::Result<()> {
        let times = timestamps(mtime);
        match components.split_last() {
            None => Ok(rustix::fs::futimens(&self.root, &times)?),
            Some((name, parent)) => {
                let parent = match safe_fs::open_dir(&self.root, parent, false) {
                    Ok(p) => p,
                    // Replaced by a later entry: its time no longer applies.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                match safe_fs::existing(&parent, name)? {
                    Some(st) if safe_fs::is_dir(&st) => Ok(rustix::fs::utimensat(
                        &parent,
                        name.as_os_str(),
                        &times,
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?),
                    _ => Ok(()),
                }
            }
        }
    }
}

fn regular<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let meta = read_meta(entry, owner)?;
    safe_fs::remove(parent, name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::openat(
        parent,
        name,
        flags,
        Mode::from_raw_mode(0o600),
    )?);
    io::copy(entry, &mut file)?;
    apply_fd_meta(&file, &meta)
}

fn symlink<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let meta = read_meta(entry, owner)?;
    let target = entry
        .link_name_bytes()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "symlink without a target"))?;
    safe_fs::remove(parent, name)?;
    rustix::fs::symlinkat(OsStr::from_bytes(&target), parent, name)?;
    chown_at(parent, name, &meta)?;
    rustix::fs::utimensat(
        parent,
        name,
        &timestamps(meta.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn special<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &OsStr,
    kind: EntryType,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let meta = read_meta(entry, owner)?;
    let header = entry.header();
    let (file_type, dev) = match kind {
        EntryType::Fifo => (FileType::Fifo, 0),
        _ => {
            let major = header.device_major()?.unwrap_or(0);
            let minor = header.device_minor()?.unwrap_or(0);
            let file_type = if kind == EntryType::Char {
                FileType::CharacterDevice
            } else {
                FileType::BlockDevice
            };
            (file_type, rustix::fs::makedev(major, minor))
        }
    };
    safe_fs::remove(parent, name)?;
    match rustix::fs::mknodat(parent, name, file_type, Mode::empty(), dev) {
        Err(e) if file_type != FileType::Fifo && userns::skip_device_node(e) => return Ok(()),
        other => other?,
    }
    chown_at(parent, name, &meta)?;
    // Just created by us as a non-symlink, so following is moot.
    rustix::fs::chmodat(
        parent,
        name,
        Mode::from_raw_mode(meta.mode),
        AtFlags::empty(),
    )?;
    rustix::fs::utimensat(
        parent,
        name,
        &timestamps(meta.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// The components of an entry name: a leading `/`, empty and `.` components are dropped; `..`
/// is refused, since in a layer or an archive it can only be an attempt to escape.
pub(crate) fn clean(name: &[u8]) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path contains `..`".into()),
            _ if part.contains(&0) => return Err("path contains a NUL byte".into()),
            _ => out.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    Ok(out)
}

/// Why a build context cannot hold `entry` (`depth` components deep), if it cannot.
fn context_check<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: EntryType,
    depth: usize,
) -> Result<(), String> {
    if entry.path_bytes().starts_with(b"/") {
        return Err("absolute path in a build context".into());
    }
    let target = entry.link_name_bytes().unwrap_or_default();
    match kind {
        EntryType::Symlink => match crate::context_tar::link_leaves_tree(depth, &target) {
            Some(reason) => Err(reason.into()),
            None => Ok(()),
        },
        EntryType::Link if target.starts_with(b"/") => {
            Err("hard link to an absolute path in a build context".into())
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            Err("device nodes and FIFOs are not allowed in a build context".into())
        }
        _ => Ok(()),
    }
}

fn join_bytes(components: &[OsString]) -> Vec<u8> {
    components
        .iter()
        .map(|c| c.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/')
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> LayerError {
    LayerError::UnsafeEntry {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_dotdot_refused() {
        let c = |s: &str| {
            clean(s.as_bytes()).map(|v| {
                v.into_iter()
                    .map(|c| c.into_string().unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(c("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(c("/abs//x").unwrap(), ["abs", "x"]);
        assert_eq!(c("./").unwrap(), Vec::<String>::new());
        assert_eq!(c("..a/b..").unwrap(), ["..a", "b.."]);
        assert!(c("../x").is_err());
        assert!(c("a/../../x").is_err());
    }
}
