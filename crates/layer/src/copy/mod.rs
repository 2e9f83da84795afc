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

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::LayerError;
use crate::extract::{Extractor, Whiteouts};

mod walk;

use crate::space_guard::{SpaceGuard, guard_dir};
use walk::TarWalk;
#[cfg(test)]
use walk::append_raw;

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
pub(super) const DIR_FLAGS: OFlags = OFlags::RDONLY
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tar::{EntryType, Header};

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

    /// docker CVE-2018-15664: a path component swapped for a symlink to a host directory
    /// while copies run. Every copy must see the container's directory or fail, never read or
    /// write the host's.
    #[test]
    fn a_symlink_swapped_in_during_copies_never_leads_out() {
        let root = tree();
        let r = root.path().to_owned();
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("f"), vec![b'h'; 12345]).unwrap();
        let (real, parked) = (r.join("etc/sub"), r.join("etc/sub.real"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, real, parked, target) = (
                stop.clone(),
                real.clone(),
                parked.clone(),
                host.path().to_owned(),
            );
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Directory out, symlink to the host in; then back.
                    std::fs::rename(&real, &parked).unwrap();
                    symlink(&target, &real).unwrap();
                    std::thread::yield_now();
                    std::fs::remove_file(&real).unwrap();
                    std::fs::rename(&parked, &real).unwrap();
                }
            })
        };
        let new = tar_of(&[("dropped", EntryType::Regular, "x")]);
        for _ in 0..300 {
            if let Ok(tar) = tar_path_in_root(&r, "/etc", None, Vec::new()) {
                let mut archive = tar::Archive::new(&tar[..]);
                for entry in archive.entries().unwrap() {
                    let entry = entry.unwrap();
                    assert_ne!(
                        entry.header().size().unwrap(),
                        12345,
                        "the host's file was read"
                    );
                }
            }
            if let Ok(st) = stat_in_root(&r, "/etc/sub/f") {
                assert_ne!(st.size, 12345, "the host's file was seen");
            }
            let _ = copy_into_root(&new[..], &r, "/etc/sub", &CopyInOptions::default());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(
            !host.path().join("dropped").exists(),
            "a copy wrote into the host's directory"
        );
    }
}
