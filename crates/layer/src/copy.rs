//! Copying files out of and into a container's root directory (`docker cp`, `docker export`):
//! the stat of a path, a tar of a path, and the extraction of a tar into a directory.
//!
//! The key decision, after docker CVE-2018-15664 (a symlink swapped in while `docker cp` ran
//! resolved on the host): no path inside the root is ever resolved by the host's rules. The
//! directory part of a requested path is opened with `openat2(RESOLVE_IN_ROOT)` from a
//! descriptor of the root, so `..` and symlinks (absolute or relative) stay inside; the final
//! component and everything below it is reached with `*at` calls on descriptors that never
//! follow a symlink (`O_NOFOLLOW`), so a symlink is archived as a link, and one swapped in
//! during the walk makes that open fail instead of leading outside. Extraction goes through
//! the same confined extractor as `ADD` (entries resolve with the destination as their root).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tar::{EntryType, Header};

use crate::LayerError;
use crate::extract::{Extractor, Whiteouts};
use crate::space_guard::{SpaceGuard, guard_dir};

/// What `X-Docker-Container-Path-Stat` says about a path: its name, size, mode as Go's
/// `os.FileMode` bits, mtime, and for a symlink the path it points to inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub link_target: String,
}

/// Where a requested path is: its parent directory, opened inside the root, and its last
/// component (`None` for a path that names a directory itself: `/`, `dir/`, `dir/.`).
struct Located {
    parent: OwnedFd,
    last: Option<OsString>,
    /// The name entries are archived under (the path's base name, `.` for `dir/.`).
    name: String,
    /// The path's directory part, absolute and clean, for symlink targets.
    dir: String,
}

const PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::CLOEXEC);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Go's `os.FileMode` type bits.
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;

fn open_root(root: &Path) -> Result<OwnedFd, LayerError> {
    rustix::fs::open(root, PATH_FLAGS | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| LayerError::io(root)(e.into()))
}

/// Opens `path` (relative to the root, any form) inside `root` with `flags`, following
/// symlinks as the container would, never out of it.
fn open_in(root: &OwnedFd, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let path = if path.trim_matches('/').is_empty() {
        "."
    } else {
        path.trim_start_matches('/')
    };
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(
            root,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // A concurrent rename raced the resolution; the kernel asks for a retry.
            Err(Errno::AGAIN | Errno::INTR) if attempts < 32 => attempts += 1,
            other => return other,
        }
    }
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file: {path}"))
}

fn locate(root: &OwnedFd, path: &str) -> Result<Located, LayerError> {
    let err = |e: Errno| -> LayerError {
        if e == Errno::NOENT || e == Errno::NOTDIR {
            LayerError::io(path)(not_found(path))
        } else {
            LayerError::io(path)(e.into())
        }
    };
    let trimmed = path.trim_end_matches('/');
    let names_dir =
        trimmed.is_empty() || path.ends_with('/') || trimmed.ends_with("/.") || trimmed == ".";
    let (dir, last) = match trimmed.rsplit_once('/') {
        Some((dir, last)) => (dir, last),
        None => ("", trimmed),
    };
    if names_dir {
        // The directory itself, following every symlink on the way (`dir/` means the dir).
        let parent = open_in(root, trimmed, PATH_FLAGS | OFlags::DIRECTORY).map_err(err)?;
        let name = if trimmed.ends_with("/.") || trimmed == "." {
            ".".to_owned()
        } else if last.is_empty() {
            "/".to_owned()
        } else {
            last.to_owned()
        };
        return Ok(Located {
            parent,
            last: None,
            name,
            dir: clean_abs(trimmed),
        });
    }
    let parent = open_in(root, dir, PATH_FLAGS | OFlags::DIRECTORY).map_err(err)?;
    let last = if last == ".." {
        // `a/..` names a directory: let the kernel resolve it, confined, as the parent.
        let p = open_in(root, trimmed, PATH_FLAGS | OFlags::DIRECTORY).map_err(err)?;
        return Ok(Located {
            parent: p,
            last: None,
            name: "..".into(),
            dir: clean_abs(trimmed),
        });
    } else {
        OsString::from(last)
    };
    Ok(Located {
        parent,
        last: Some(last),
        name: last_name(trimmed),
        dir: clean_abs(dir),
    })
}

fn last_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// `path` made absolute and clean lexically (`..` stops at `/`).
fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn stat_of(loc: &Located) -> io::Result<rustix::fs::Stat> {
    Ok(match &loc.last {
        Some(name) => rustix::fs::statat(&loc.parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)?,
        None => rustix::fs::fstat(&loc.parent)?,
    })
}

/// Go's `os.FileMode` of a `st_mode`.
fn go_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    let bit = |flag: u32, go: u32| if st_mode & flag != 0 { go } else { 0 };
    mode |= bit(0o4000, GO_SETUID) | bit(0o2000, GO_SETGID) | bit(0o1000, GO_STICKY);
    mode |= match FileType::from_raw_mode(st_mode) {
        FileType::Directory => GO_DIR,
        FileType::Symlink => GO_SYMLINK,
        FileType::CharacterDevice => GO_DEVICE | GO_CHAR,
        FileType::BlockDevice => GO_DEVICE,
        FileType::Fifo => GO_PIPE,
        FileType::Socket => GO_SOCKET,
        _ => 0,
    };
    mode
}

/// The stat of `path` inside `root`, not following a final symlink (as dockerd's).
pub fn stat_in_root(root: &Path, path: &str) -> Result<PathStat, LayerError> {
    let root_fd = open_root(root)?;
    let loc = locate(&root_fd, path)?;
    let st = stat_of(&loc).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            LayerError::io(path)(not_found(path))
        } else {
            LayerError::io(path)(e)
        }
    })?;
    let link_target = match (&loc.last, FileType::from_raw_mode(st.st_mode)) {
        (Some(name), FileType::Symlink) => {
            let target = rustix::fs::readlinkat(&loc.parent, name.as_os_str(), Vec::new())
                .map_err(|e| LayerError::io(path)(e.into()))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                clean_abs(&target)
            } else {
                clean_abs(&format!("{}/{target}", loc.dir))
            }
        }
        _ => String::new(),
    };
    Ok(PathStat {
        name: loc.name.clone(),
        size: st.st_size as u64,
        mode: go_mode(st.st_mode),
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        link_target,
    })
}

/// Writes a tar of `path` inside `root` to `out`, its entries named under the path's base
/// name or `name` (`docker cp`'s archive; the CLI renames a copy with it). A symlink is
/// archived as the link.
pub fn tar_path_in_root<W: Write>(
    root: &Path,
    path: &str,
    name: Option<&str>,
    out: W,
) -> Result<W, LayerError> {
    let root_fd = open_root(root)?;
    let mut loc = locate(&root_fd, path)?;
    if let Some(name) = name {
        loc.name = name.to_owned();
    }
    let mut w = TarWalk::new(out);
    match &loc.last {
        Some(name) => w.entry(&loc.parent, name, &loc.name),
        None => {
            let dir = reopen_dir(&loc.parent).map_err(LayerError::io(path))?;
            let name = if loc.name == "/" {
                "."
            } else {
                loc.name.as_str()
            };
            w.dir_entry(&dir, name, true)
        }
    }
    .map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            LayerError::io(path)(not_found(path))
        } else {
            LayerError::io(path)(e)
        }
    })?;
    w.finish().map_err(LayerError::io(path))
}

/// Writes a tar of everything in `root`, entries named relative to it (`docker export`).
pub fn tar_root<W: Write>(root: &Path, out: W) -> Result<W, LayerError> {
    let root_fd = open_root(root)?;
    let dir = reopen_dir(&root_fd).map_err(LayerError::io(root))?;
    let mut w = TarWalk::new(out);
    w.children(&dir, "").map_err(LayerError::io(root))?;
    w.finish().map_err(LayerError::io(root))
}

fn reopen_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(fd, ".", DIR_FLAGS, Mode::empty())?)
}

/// How `copy_into_root` treats what the archive holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyInOptions {
    /// Own every entry by this uid and gid (`docker cp -a`: the container's user).
    pub owner: Option<(u32, u32)>,
    /// Refuse to replace a directory with a non-directory or the other way round.
    pub no_overwrite_dir_non_dir: bool,
}

/// Extracts a (possibly compressed) tar into the existing directory `dest` inside `root`
/// (symlinks on the way followed inside the root). A missing `dest` is a not-found error, one
/// that is not a directory an invalid argument.
pub fn copy_into_root(
    archive: impl Read,
    root: &Path,
    dest: &str,
    options: &CopyInOptions,
) -> Result<(), LayerError> {
    let root_fd = open_root(root)?;
    let dest_fd = match open_in(&root_fd, dest, DIR_FLAGS) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Err(LayerError::io(dest)(not_found(dest))),
        Err(Errno::NOTDIR) => {
            return Err(LayerError::Unsupported {
                path: dest.into(),
                reason: "extraction point is not a directory".into(),
            });
        }
        Err(e) => return Err(LayerError::io(dest)(e.into())),
    };
    let tar = crate::compression::decompressed(archive).map_err(LayerError::Archive)?;
    let tar = SpaceGuard::new(tar, guard_dir(root)?);
    Extractor::in_dir(dest_fd, Whiteouts::Literal)
        .owned_by(options.owner)
        .keeping_kinds(options.no_overwrite_dir_non_dir)
        .extract(tar)?;
    Ok(())
}

/// Filesystems whose contents are the kernel's, not files: a running container's `/proc`,
/// `/sys` and the like are archived as empty directories (dockerd's copy of a container's
/// root has only their mount points).
const KERNEL_FS: [i64; 7] = [
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x7363_6673, // securityfs
];

struct TarWalk<W: Write> {
    builder: tar::Builder<W>,
    /// (dev, inode) of regular files with several links → the name first archived.
    links: HashMap<(u64, u64), String>,
}

/// Appends an entry named exactly `name` (the tar crate would drop a leading `./`, which
/// `docker cp` of `dir/.` keeps), with GNU long-name records where a name or link target does
/// not fit its field.
fn append_raw<W: Write>(
    builder: &mut tar::Builder<W>,
    mut header: Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    for (bytes, kind) in [
        (Some(name), EntryType::GNULongName),
        (link, EntryType::GNULongLink),
    ] {
        if let Some(bytes) = bytes.filter(|b| b.len() > 100) {
            let mut long = Header::new_gnu();
            long.as_gnu_mut().expect("made as GNU").name[..13].copy_from_slice(b"././@LongLink");
            long.set_entry_type(kind);
            long.set_mode(0o644);
            long.set_size(bytes.len() as u64 + 1);
            long.set_cksum();
            builder.append(&long, bytes.chain(&[0u8][..]))?;
        }
    }
    let old = header.as_old_mut();
    let n = name.len().min(100);
    old.name = [0; 100];
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let n = link.len().min(100);
        old.linkname = [0; 100];
        old.linkname[..n].copy_from_slice(&link[..n]);
    }
    header.set_cksum();
    builder.append(&header, data)
}

impl<W: Write> TarWalk<W> {
    fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        TarWalk {
            builder,
            links: HashMap::new(),
        }
    }

    fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    fn header(st: &rustix::fs::Stat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Archives `name` of `parent` as `tar_name`, recursively for a directory.
    fn entry(&mut self, parent: &OwnedFd, name: &OsStr, tar_name: &str) -> io::Result<()> {
        let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let dir =
                    rustix::fs::openat(parent, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
                self.dir_entry(&dir, tar_name, true)
            }
            FileType::RegularFile => self.file(parent, name, tar_name, &st),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(parent, name, Vec::new())?;
                let h = Self::header(&st, EntryType::Symlink);
                append_raw(
                    &mut self.builder,
                    h,
                    tar_name.as_bytes(),
                    Some(target.as_bytes()),
                    io::empty(),
                )
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                let entry_type = match kind {
                    FileType::CharacterDevice => EntryType::Char,
                    FileType::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = Self::header(&st, entry_type);
                if entry_type != EntryType::Fifo {
                    h.set_device_major(rustix::fs::major(st.st_rdev))?;
                    h.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                }
                append_raw(&mut self.builder, h, tar_name.as_bytes(), None, io::empty())
            }
            // Sockets cannot be archived (tar has no type for them), as in Docker.
            _ => Ok(()),
        }
    }

    fn file(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        tar_name: &str,
        st: &rustix::fs::Stat,
    ) -> io::Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let h = Self::header(st, EntryType::Link);
                let first = first.clone();
                return append_raw(
                    &mut self.builder,
                    h,
                    tar_name.as_bytes(),
                    Some(first.as_bytes()),
                    io::empty(),
                );
            }
            self.links.insert(key, tar_name.to_owned());
        }
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // The size of what was opened, not of what was looked at before.
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{tar_name} changed while being archived"
            )));
        }
        let mut h = Self::header(&st, EntryType::Regular);
        h.set_size(st.st_size as u64);
        let file = std::fs::File::from(fd);
        // A file that shrinks meanwhile is padded, one that grows cut: the header's size holds.
        let data = file
            .take(st.st_size as u64)
            .chain(io::repeat(0))
            .take(st.st_size as u64);
        append_raw(&mut self.builder, h, tar_name.as_bytes(), None, data)
    }

    /// Archives the open directory `dir` as `tar_name` (with its children when `recurse`).
    fn dir_entry(&mut self, dir: &OwnedFd, tar_name: &str, recurse: bool) -> io::Result<()> {
        let st = rustix::fs::fstat(dir)?;
        if tar_name != "." || !recurse {
            let mut h = Self::header(&st, EntryType::Directory);
            self.builder.append_data(
                &mut h,
                format!("{}/", tar_name.trim_end_matches('/')),
                io::empty(),
            )?;
        } else {
            let mut h = Self::header(&st, EntryType::Directory);
            self.builder.append_data(&mut h, "./", io::empty())?;
        }
        let kernel = rustix::fs::fstatfs(dir)
            // `f_type`'s width differs between architectures.
            .map(|s| {
                #[allow(clippy::unnecessary_cast)]
                let magic = s.f_type as i64;
                KERNEL_FS.contains(&magic)
            })
            .unwrap_or(false);
        if recurse && !kernel {
            let prefix = if tar_name == "." {
                "./".to_owned()
            } else {
                format!("{}/", tar_name.trim_end_matches('/'))
            };
            self.children(dir, &prefix)?;
        }
        Ok(())
    }

    /// Archives the entries of `dir`, sorted, named `prefix` + name.
    fn children(&mut self, dir: &OwnedFd, prefix: &str) -> io::Result<()> {
        let mut names: Vec<OsString> = Vec::new();
        for entry in rustix::fs::Dir::read_from(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        for name in names {
            let tar_name = format!("{prefix}{}", name.to_string_lossy());
            match self.entry(dir, &name, &tar_name) {
                // Removed since it was listed: a running container changes its files.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(tar: &[u8]) -> Vec<String> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    }

    fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/sub")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:34::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/sub/f"), "f").unwrap();
        // Escapes a host-side resolution would follow.
        symlink("/", r.join("up")).unwrap();
        symlink("../../../../", r.join("etc/rel")).unwrap();
        root
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let root = tree();
        let r = root.path();
        // Through an absolute symlink to /: the root's /etc, not the host's.
        let st = stat_in_root(r, "/up/etc/passwd").unwrap();
        assert_eq!((st.name.as_str(), st.size), ("passwd", 49));
        assert_eq!(st.mode, 0o644);
        let st = stat_in_root(r, "/etc/rel/etc/sub").unwrap();
        assert_eq!(st.mode & GO_DIR, GO_DIR);
        // The final symlink is not followed; its target is given inside the container.
        let link = stat_in_root(r, "/etc/rel").unwrap();
        assert_eq!(link.mode & GO_SYMLINK, GO_SYMLINK);
        assert_eq!(link.link_target, "/");
        // The host's /etc/shadow is not reachable by any spelling.
        for path in [
            "/etc/shadow",
            "/up/etc/shadow",
            "/../../etc/shadow",
            "/etc/rel/etc/shadow",
        ] {
            let err = stat_in_root(r, path).unwrap_err();
            assert_eq!(err.kind(), kiln_error::ErrorKind::NotFound, "{path}: {err}");
        }
    }

    #[test]
    fn a_tar_of_a_directory_keeps_links_as_links() {
        let root = tree();
        let r = root.path();
        let tar = tar_path_in_root(r, "/etc", None, Vec::new()).unwrap();
        assert_eq!(
            names(&tar),
            ["etc/", "etc/passwd", "etc/rel", "etc/sub/", "etc/sub/f"]
        );
        let mut archive = tar::Archive::new(&tar[..]);
        let rel = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path_bytes().as_ref() == b"etc/rel")
            .unwrap();
        assert_eq!(rel.header().entry_type(), EntryType::Symlink);
        // A symlink named directly is archived as the link, not what it points to.
        assert_eq!(
            names(&tar_path_in_root(r, "/up", None, Vec::new()).unwrap()),
            ["up"]
        );
        // `dir/.` is the directory's contents under `.`.
        let dot = names(&tar_path_in_root(r, "/etc/sub/.", None, Vec::new()).unwrap());
        assert_eq!(dot, ["./", "./f"]);
        let renamed = names(&tar_path_in_root(r, "/etc/sub", Some("copy"), Vec::new()).unwrap());
        assert_eq!(renamed, ["copy/", "copy/f"]);
        let all = names(&tar_root(r, Vec::new()).unwrap());
        assert!(
            all.contains(&"etc/sub/f".to_owned()) && all.contains(&"up".to_owned()),
            "{all:?}"
        );
    }

    fn tar_of(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(1234);
            h.set_gid(1234);
            // Names written as given (`..` included), as a hostile client would.
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    h.set_size(0);
                    append_raw(
                        &mut b,
                        h,
                        name.as_bytes(),
                        Some(data.as_bytes()),
                        io::empty(),
                    )
                    .unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    append_raw(&mut b, h, name.as_bytes(), None, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_stays_in_the_destination_and_can_keep_kinds_and_set_owners() {
        let root = tree();
        let r = root.path();
        let host_marker = format!("kiln-cp-test-{}", std::process::id());
        // A symlink in the archive, then a write through it: lands in the destination.
        let evil = tar_of(&[
            ("esc", EntryType::Symlink, "/"),
            (&format!("esc/tmp/{host_marker}"), EntryType::Regular, "x"),
            ("../dotdot", EntryType::Regular, "x"),
        ]);
        let err = copy_into_root(&evil[..], r, "/up/etc", &CopyInOptions::default());
        assert!(err.is_err(), "a `..` entry is refused");
        assert!(
            !Path::new("/tmp").join(&host_marker).exists(),
            "host /tmp untouched"
        );
        assert!(!Path::new("/dotdot").exists());
        let through = tar_of(&[
            ("esc", EntryType::Symlink, "/"),
            (&format!("esc/tmp/{host_marker}"), EntryType::Regular, "x"),
        ]);
        copy_into_root(&through[..], r, "/up/etc", &CopyInOptions::default()).unwrap();
        assert!(
            !Path::new("/tmp").join(&host_marker).exists(),
            "host /tmp untouched"
        );
        assert!(
            r.join("etc/tmp").join(&host_marker).exists(),
            "confined to the destination"
        );

        let plain = tar_of(&[("new", EntryType::Regular, "hello")]);
        let options = CopyInOptions {
            owner: Some((33, 34)),
            ..CopyInOptions::default()
        };
        // Through the in-root symlink /up -> / : the root's /etc.
        copy_into_root(&plain[..], r, "/up/etc", &options).unwrap();
        let meta = std::fs::metadata(r.join("etc/new")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (33, 34));

        let missing = copy_into_root(&plain[..], r, "/nope", &options).unwrap_err();
        assert_eq!(missing.kind(), kiln_error::ErrorKind::NotFound);
        let not_dir = copy_into_root(&plain[..], r, "/etc/passwd", &options).unwrap_err();
        assert_eq!(not_dir.kind(), kiln_error::ErrorKind::InvalidArgument);

        let swap = tar_of(&[("sub", EntryType::Regular, "was a dir")]);
        let keep = CopyInOptions {
            no_overwrite_dir_non_dir: true,
            ..CopyInOptions::default()
        };
        assert!(copy_into_root(&swap[..], r, "/etc", &keep).is_err());
        assert!(r.join("etc/sub/f").exists());
        copy_into_root(&swap[..], r, "/etc", &CopyInOptions::default()).unwrap();
        assert_eq!(std::fs::read(r.join("etc/sub")).unwrap(), b"was a dir");
    }
}
