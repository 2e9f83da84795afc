//! Directory operations inside a container root that can never touch anything outside it.
//!
//! Every directory is opened with `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so the kernel treats `root` as `/` for any symlink or `..` on the way; names are then created
//! relative to such a directory fd, one component at a time, never following the last one. A
//! symlink met while creating directories (`/app -> /etc`, or a dangling `/evil -> /tmp/x`) is
//! followed the way a chroot would, and missing targets are created inside the root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use super::CopyError;

/// The same bound Linux uses for symlinks in one path resolution.
const MAX_SYMLINKS: usize = 40;

/// A container root filesystem opened for confined access.
#[derive(Debug)]
pub(super) struct ConfinedRoot {
    fd: OwnedFd,
}

/// Shows a root-relative path the way the user wrote it: absolute inside the container.
pub(super) fn display(rel: &Path) -> String {
    format!("/{}", rel.display())
}

fn io_at(rel: &Path) -> impl FnOnce(Errno) -> CopyError + '_ {
    move |errno| CopyError::Io {
        path: display(rel),
        source: errno.into(),
    }
}

/// `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, close-on-exec. The kernel
/// answers `EAGAIN` when a rename or mount anywhere on the system raced the resolution (other
/// builds of this process and others rename all the time) and asks the caller to retry, as
/// the layer crate's extraction does.
pub(crate) fn openat2_in_root(
    root: impl std::os::fd::AsFd,
    path: &OsStr,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(
            root.as_fd(),
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::AGAIN | Errno::INTR) if attempts < 32 => attempts += 1,
            other => return other,
        }
    }
}

impl ConfinedRoot {
    pub(super) fn open(root: &Path) -> Result<Self, CopyError> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| CopyError::Io {
            path: root.display().to_string(),
            source: errno.into(),
        })?;
        Ok(ConfinedRoot { fd })
    }

    /// Opens `rel` (relative to the root) with the kernel confining the resolution to the root.
    pub(super) fn open_in_root(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let path: &OsStr = if rel.as_os_str().is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        openat2_in_root(&self.fd, path, flags)
    }

    fn open_dir(&self, rel: &Path) -> Result<OwnedFd, CopyError> {
        self.open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            .map_err(io_at(rel))
    }

    /// Whether `rel` names a directory, following symlinks inside the root.
    pub(super) fn is_dir(&self, rel: &Path) -> Result<bool, CopyError> {
        match self.open_in_root(rel, OFlags::PATH) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(&fd).map_err(io_at(rel))?;
                Ok(FileType::from_raw_mode(stat.st_mode) == FileType::Directory)
            }
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(errno) => Err(io_at(rel)(errno)),
        }
    }

    /// Makes sure the directory `rel` exists, creating missing ones (mode 0755, owned by
    /// `owner`) and following symlinks inside the root. Returns the open directory and its real
    /// path relative to the root.
    pub(super) fn ensure_dir(
        &self,
        rel: &Path,
        owner: (u32, u32),
    ) -> Result<(OwnedFd, PathBuf), CopyError> {
        let mut resolved = PathBuf::new();
        let mut pending: VecDeque<OsString> = components(rel).collect();
        let mut current = self.open_dir(&resolved)?;
        let mut links_followed = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                resolved.pop();
                current = self.open_dir(&resolved)?;
                continue;
            }
            let here = resolved.join(&name);
            match rustix::fs::statat(&current, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        links_followed += 1;
                        if links_followed > MAX_SYMLINKS {
                            return Err(CopyError::SymlinkLoop { path: display(rel) });
                        }
                        let target = rustix::fs::readlinkat(&current, &name, Vec::new())
                            .map_err(io_at(&here))?;
                        let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                        if target.is_absolute() {
                            resolved = PathBuf::new();
                        }
                        for part in components(&target).collect::<Vec<_>>().into_iter().rev() {
                            pending.push_front(part);
                        }
                        current = self.open_dir(&resolved)?;
                        continue;
                    }
                    _ => {
                        return Err(CopyError::NotADirectory {
                            path: display(&here),
                        });
                    }
                },
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&current, &name, Mode::from_raw_mode(0o755)) {
                        // Lost a race with someone creating it: fine, look again.
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(errno) => return Err(io_at(&here)(errno)),
                    }
                    let created = self.open_dir(&here)?;
                    set_owner_and_mode(&created, owner, 0o755).map_err(io_at(&here))?;
                }
                Err(errno) => return Err(io_at(&here)(errno)),
            }
            resolved = here;
            current = self.open_dir(&resolved)?;
        }
        Ok((current, resolved))
    }

    /// Reopens a directory found earlier by `ensure_dir`, to set its times after its contents.
    pub(super) fn reopen_dir(&self, resolved: &Path) -> Result<OwnedFd, CopyError> {
        self.open_dir(resolved)
    }
}

/// The normal and `..` components of a path (root and `.` carry no meaning here).
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// chown before chmod: chown clears set-uid/set-gid bits.
pub(super) fn set_owner_and_mode(
    fd: &OwnedFd,
    (uid, gid): (u32, u32),
    mode: u32,
) -> rustix::io::Result<()> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
}

/// The last component of a root-relative target path, and its parent.
pub(super) fn split_target(target: &Path) -> Option<(&Path, &OsStr)> {
    let name = target.file_name()?;
    // `file_name` is None for `..`, so the name is always a plain component.
    debug_assert!(!name.as_bytes().contains(&b'/'));
    Some((target.parent().unwrap_or(Path::new("")), name))
}
