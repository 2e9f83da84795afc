//! Filesystem operations confined to a root directory, for extracting untrusted archives.
//!
//! Directories are opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to a
//! descriptor of the root, so `..` and symlinks (absolute or relative) are resolved as if the
//! root were `/`: nothing can name a path outside it. Every operation on the final component
//! goes through `*at` calls on that parent descriptor and never follows a symlink.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// A relative path inside the root as its components (none of them `.`, `..` or empty).
pub(crate) type Components = [OsString];

/// Opens the directory at `components` inside `root`. With `create`, missing directories are
/// made (mode 0755, owned by the caller), like `mkdir -p` run in a chroot.
pub(crate) fn open_dir(
    root: &OwnedFd,
    components: &Components,
    create: bool,
) -> io::Result<OwnedFd> {
    match open_in_root(root, &join(components)) {
        Err(Errno::NOENT) if create => {}
        other => return other.map_err(io::Error::from),
    }
    let mut dir = open_in_root(root, OsStr::new("."))?;
    for depth in 1..=components.len() {
        let prefix = join(&components[..depth]);
        dir = match open_in_root(root, &prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let name = &components[depth - 1];
                match rustix::fs::mkdirat(&dir, name.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) => {
                        let fd = open_in_root(root, &prefix)?;
                        // mkdir's mode is filtered by the umask; be independent of it.
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
                        fd
                    }
                    // Something is there yet does not resolve: a dangling symlink. `mkdir -p`
                    // fails the same way.
                    Err(Errno::EXIST) => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{:?} is a dangling symlink", prefix),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(dir)
}

fn open_in_root(root: &OwnedFd, path: &OsStr) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    // EAGAIN means a concurrent rename raced the resolution; the kernel asks us to retry.
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(root, path, DIR_FLAGS, Mode::empty(), resolve) {
            Err(Errno::AGAIN | Errno::INTR) if attempts < 32 => attempts += 1,
            other => return other,
        }
    }
}

fn join(components: &Components) -> OsString {
    if components.is_empty() {
        return OsString::from(".");
    }
    let mut path = OsString::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            path.push("/");
        }
        path.push(c);
    }
    path
}

/// Opens a real (non-symlink) directory entry of `parent` for reading and metadata changes.
pub(crate) fn open_child_dir(parent: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        DIR_FLAGS | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// What is at `name` in `parent` (not following a symlink), if anything.
pub(crate) fn existing(parent: &OwnedFd, name: &OsStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn is_dir(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Whether `st` is an overlay whiteout (char device 0:0).
pub(crate) fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Removes whatever is at `name` in `parent`, recursively for a directory. Nothing there is fine.
pub(crate) fn remove(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match existing(parent, name)? {
        None => Ok(()),
        Some(st) if is_dir(&st) => remove_dir_all(parent, name),
        Some(_) => Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?),
    }
}

fn remove_dir_all(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let dir = open_child_dir(parent, name)?;
    let mut children = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push((OsStr::from_bytes(child).to_owned(), entry.file_type()));
        }
    }
    for (child, file_type) in children {
        let is_dir = match file_type {
            FileType::Directory => true,
            FileType::Unknown => existing(&dir, &child)?.is_some_and(|st| is_dir(&st)),
            _ => false,
        };
        if is_dir {
            remove_dir_all(&dir, &child)?;
        } else {
            rustix::fs::unlinkat(&dir, child.as_os_str(), AtFlags::empty())?;
        }
    }
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Opens the extraction root itself.
pub(crate) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(path: &str) -> Vec<OsString> {
        path.split('/').map(OsString::from).collect()
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        symlink(outside.path(), root.path().join("abs")).unwrap();
        symlink("/etc", root.path().join("to_etc")).unwrap();
        symlink("../../../../etc", root.path().join("up")).unwrap();
        let rootfd = open_root(root.path()).unwrap();

        // An absolute symlink to a host dir resolves inside the root, where it does not exist.
        let err = open_dir(&rootfd, &comps("abs"), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // With `create`, the dangling symlink is an error, and nothing is made outside.
        assert!(open_dir(&rootfd, &comps("abs/sub"), true).is_err());
        assert!(!outside.path().join("sub").exists());

        for link in ["to_etc", "up"] {
            let fd = open_dir(&rootfd, &comps(&format!("{link}/new")), true).unwrap();
            rustix::fs::mkdirat(&fd, "marker", Mode::from_raw_mode(0o755)).unwrap();
            assert!(root.path().join("etc/new/marker").is_dir(), "{link}");
            std::fs::remove_dir_all(root.path().join("etc/new")).unwrap();
        }
    }

    #[test]
    fn remove_deletes_trees_without_following_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"k").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("d/e")).unwrap();
        std::fs::write(root.path().join("d/e/f"), b"f").unwrap();
        symlink(outside.path(), root.path().join("d/link")).unwrap();
        let rootfd = open_root(root.path()).unwrap();
        remove(&rootfd, OsStr::new("d")).unwrap();
        assert!(!root.path().join("d").exists());
        assert!(outside.path().join("keep").exists());
        remove(&rootfd, OsStr::new("absent")).unwrap();
    }
}
