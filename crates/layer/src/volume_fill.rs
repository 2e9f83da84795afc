//! Filling an empty volume with an image's content at the volume's mount path, as Docker does
//! the first time a container mounts an empty volume.
//!
//! The volume may already be mounted into a running container, which can put anything in it at
//! any moment — symlinks to host paths included. So nothing here writes into the volume by path:
//!
//! - The copy goes into a private staging directory beside the volume's data directory (same
//!   filesystem, out of every container's reach), written with `*at` calls that never follow a
//!   symlink and `O_EXCL` creates.
//! - It is published by renaming each top-level entry into the data directory with
//!   `RENAME_NOREPLACE`, relative to a descriptor of that directory: a rename never follows the
//!   name it replaces, and a name some container made meanwhile stays theirs.
//! - "Only when empty" is decided under an exclusive `flock` on a lock file beside the data
//!   directory, so two kiln processes starting containers on one volume fill it once; and the
//!   emptiness is checked again just before publishing, so a volume a container wrote to while
//!   the copy ran is left as that container made it.
//!
//! The image side is read from a root the caller mounted read-only; its path is walked one
//! component at a time without following symlinks, so a `VOLUME` path that is (or passes
//! through) a link copies nothing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, FlockOperation, Gid, Mode, OFlags, RenameFlags, Uid};
use rustix::io::Errno;

use crate::LayerError;
use crate::safe_fs::{self, existing};
use crate::userns::squash_unmapped_owner;

/// The lock file and the staging directory, beside the volume's data directory.
const LOCK_FILE: &str = ".fill.lock";
const STAGING_DIR: &str = ".fill.staging";

/// What [`fill_volume`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFill {
    /// The volume was empty and now holds the image's content (entries a container created
    /// while the copy was published are kept instead of the image's).
    Filled,
    /// The volume was not empty (or stopped being empty while the copy ran): left unchanged.
    NotEmpty,
    /// The image has no directory at the path (or only a symlink): nothing to copy.
    NothingToCopy,
}

/// Copies the directory at `path` inside `image_root` into the volume data directory `data`,
/// if `data` is empty; owners, modes and symlinks (as links) are kept, other special files
/// skipped. The lock file and the staging directory go in `data`'s parent, which must be on
/// the same filesystem and out of reach of any container (the volume's own directory).
pub fn fill_volume(image_root: &Path, path: &str, data: &Path) -> Result<VolumeFill, LayerError> {
    let work = data.parent().ok_or_else(|| LayerError::Unsupported {
        path: data.to_path_buf(),
        reason: "a volume data directory needs a parent for its staging area".into(),
    })?;
    let lock = open_lock(&work.join(LOCK_FILE))?;
    rustix::fs::flock(&lock, FlockOperation::LockExclusive)
        .map_err(|e| LayerError::io(work.join(LOCK_FILE))(e.into()))?;

    let data_fd = open_dir_nofollow(data).map_err(LayerError::io(data))?;
    if !is_empty(&data_fd).map_err(LayerError::io(data))? {
        return Ok(VolumeFill::NotEmpty);
    }
    let root = safe_fs::open_root(image_root).map_err(LayerError::io(image_root))?;
    let source_path = image_root.join(path.trim_start_matches('/'));
    let Some(source) = open_source(&root, path).map_err(LayerError::io(&source_path))? else {
        return Ok(VolumeFill::NothingToCopy);
    };

    let work_fd = open_dir_nofollow(work).map_err(LayerError::io(work))?;
    let staging_path = work.join(STAGING_DIR);
    let staging_error = LayerError::io(&staging_path);
    // A staging directory left by a fill that crashed; the lock says nobody else uses it.
    let staging = safe_fs::remove(&work_fd, OsStr::new(STAGING_DIR))
        .and_then(|()| {
            rustix::fs::mkdirat(&work_fd, STAGING_DIR, Mode::from_raw_mode(0o700))?;
            safe_fs::open_child_dir(&work_fd, OsStr::new(STAGING_DIR))
        })
        .map_err(staging_error)?;

    let result = copy_dir(&source, &staging, &staging_path).and_then(|()| {
        if !is_empty(&data_fd).map_err(LayerError::io(data))? {
            return Ok(VolumeFill::NotEmpty);
        }
        publish(&staging, &data_fd).map_err(LayerError::io(data))?;
        copy_metadata(&source, &data_fd).map_err(LayerError::io(data))?;
        Ok(VolumeFill::Filled)
    });
    let cleanup = safe_fs::remove(&work_fd, OsStr::new(STAGING_DIR));
    let filled = result?;
    cleanup.map_err(LayerError::io(&staging_path))?;
    Ok(filled)
}

fn open_lock(path: &Path) -> Result<OwnedFd, LayerError> {
    rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| LayerError::io(path)(e.into()))
}

fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The image's directory at `path`, reached without following any symlink; `None` when a
/// component is missing, not a directory, or a link.
fn open_source(root: &OwnedFd, path: &str) -> io::Result<Option<OwnedFd>> {
    let mut dir = safe_fs::open_child_dir(root, OsStr::new("."))?;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Ok(None);
        }
        dir = match safe_fs::open_child_dir(&dir, OsStr::new(part)) {
            Ok(fd) => fd,
            Err(e) => {
                return match Errno::from_io_error(&e) {
                    Some(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
                    _ => Err(e),
                };
            }
        };
    }
    Ok(Some(dir))
}

/// The names in `dir` other than `.` and `..`, sorted.
fn entries(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_empty(dir: &OwnedFd) -> io::Result<bool> {
    Ok(entries(dir)?.is_empty())
}

/// Copies what `from` holds into the fresh directory `to` (`to_path` only names it in errors).
fn copy_dir(from: &OwnedFd, to: &OwnedFd, to_path: &Path) -> Result<(), LayerError> {
    for name in entries(from).map_err(LayerError::io(to_path))? {
        let path = to_path.join(&name);
        let error = LayerError::io(&path);
        let Some((source, copy, st)) = copy_entry(from, to, &name).map_err(error)? else {
            continue;
        };
        copy_dir(&source, &copy, &path)?;
        set_owner_and_mode(&copy, &st).map_err(LayerError::io(&path))?;
    }
    Ok(())
}

/// Copies one entry; for a directory, makes it and returns both sides (and the source's
/// metadata, applied once its content is in) for the caller to recurse into.
fn copy_entry(
    from: &OwnedFd,
    to: &OwnedFd,
    name: &OsStr,
) -> io::Result<Option<(OwnedFd, OwnedFd, rustix::fs::Stat)>> {
    let Some(st) = existing(from, name)? else {
        return Ok(None);
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            rustix::fs::mkdirat(to, name, Mode::from_raw_mode(0o700))?;
            let source = safe_fs::open_child_dir(from, name)?;
            let copy = safe_fs::open_child_dir(to, name)?;
            return Ok(Some((source, copy, st)));
        }
        FileType::RegularFile => {
            let mut source = File::from(rustix::fs::openat(
                from,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
            let mut copy = File::from(rustix::fs::openat(
                to,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?);
            io::copy(&mut source, &mut copy)?;
            set_owner_and_mode(&OwnedFd::from(copy), &st)?;
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(from, name, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), to, name)?;
            let chown = |uid, gid| {
                rustix::fs::chownat(to, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
            };
            match chown(Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid)) {
                Err(e) if squash_unmapped_owner(e) => chown(Uid::ROOT, Gid::ROOT)?,
                other => other?,
            }
        }
        // Sockets, FIFOs and device nodes are not copied (as before: a volume's seed content
        // has no use for them).
        _ => {}
    }
    Ok(None)
}

/// Gives `fd` the owner and permission bits of `st`. The mode is set after the owner, since
/// `chown` clears the set-id bits.
fn set_owner_and_mode(fd: &OwnedFd, st: &rustix::fs::Stat) -> io::Result<()> {
    let chown = |uid, gid| rustix::fs::fchown(fd, Some(uid), Some(gid));
    match chown(Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid)) {
        Err(e) if squash_unmapped_owner(e) => chown(Uid::ROOT, Gid::ROOT)?,
        other => other?,
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(())
}

/// The volume's own directory gets the owner and mode of the image's directory.
fn copy_metadata(source: &OwnedFd, data: &OwnedFd) -> io::Result<()> {
    set_owner_and_mode(data, &rustix::fs::fstat(source)?)
}

/// Moves every entry of `staging` into `data`, never replacing a name `data` already holds
/// (whatever it is: a file, a directory, a symlink a container planted). Returns the names
/// left out that way.
fn publish(staging: &OwnedFd, data: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut kept = Vec::new();
    for name in entries(staging)? {
        match rustix::fs::renameat_with(staging, &name, data, &name, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(Errno::EXIST) => kept.push(name),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    /// An image root and a volume (`<dir>/_data`), as the store lays them out.
    struct Fixture {
        image: tempfile::TempDir,
        volume: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let f = Fixture {
                image: tempfile::tempdir().unwrap(),
                volume: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir(f.data()).unwrap();
            f
        }

        fn data(&self) -> std::path::PathBuf {
            self.volume.path().join("_data")
        }

        fn fill(&self, path: &str) -> VolumeFill {
            fill_volume(self.image.path(), path, &self.data()).unwrap()
        }
    }

    #[test]
    fn copies_files_directories_links_owners_and_modes() {
        let f = Fixture::new();
        let app = f.image.path().join("app");
        std::fs::create_dir_all(app.join("sub")).unwrap();
        std::fs::write(app.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(app.join("sub/f"), std::fs::Permissions::from_mode(0o4751))
            .unwrap();
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o750)).unwrap();
        symlink("/etc", app.join("link")).unwrap();
        assert_eq!(f.fill("/app"), VolumeFill::Filled);

        let data = f.data();
        assert_eq!(std::fs::read_to_string(data.join("sub/f")).unwrap(), "x");
        let meta = std::fs::metadata(data.join("sub/f")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o4751);
        assert_eq!(
            meta.uid(),
            std::fs::metadata(app.join("sub/f")).unwrap().uid()
        );
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o7777, 0o750);
        // The staging directory is gone; only the lock file stays beside the data.
        let beside: Vec<_> = std::fs::read_dir(f.volume.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside.len(), 2, "{beside:?}");
        assert!(!f.volume.path().join(STAGING_DIR).exists());
    }

    #[test]
    fn volume_paths_through_links_copy_nothing() {
        let f = Fixture::new();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), f.image.path().join("escape")).unwrap();
        std::fs::create_dir(f.image.path().join("real")).unwrap();
        symlink(outside.path(), f.image.path().join("real/inner")).unwrap();
        for path in [
            "/escape",
            "/real/inner",
            "/real/inner/x",
            "/missing",
            "/../escape",
        ] {
            assert_eq!(f.fill(path), VolumeFill::NothingToCopy, "{path}");
            assert!(std::fs::read_dir(f.data()).unwrap().next().is_none());
        }
    }

    #[test]
    fn a_volume_that_is_not_empty_is_left_alone() {
        let f = Fixture::new();
        std::fs::create_dir(f.image.path().join("app")).unwrap();
        std::fs::write(f.image.path().join("app/f"), "image").unwrap();
        // A link a container planted, aimed at a host directory.
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), f.data().join("f")).unwrap();
        assert_eq!(f.fill("/app"), VolumeFill::NotEmpty);
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(
            std::fs::symlink_metadata(f.data().join("f"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn publishing_never_replaces_or_follows_what_a_container_made_meanwhile() {
        let outside = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for name in ["a", "dir", "z"] {
            std::fs::create_dir(staging.path().join(name)).unwrap();
            std::fs::write(staging.path().join(name).join("f"), name).unwrap();
        }
        symlink(outside.path(), data.path().join("dir")).unwrap();
        std::fs::write(data.path().join("z"), "theirs").unwrap();
        let kept = publish(
            &open_dir_nofollow(staging.path()).unwrap(),
            &open_dir_nofollow(data.path()).unwrap(),
        )
        .unwrap();
        assert_eq!(kept, ["dir", "z"]);
        assert_eq!(
            std::fs::read_to_string(data.path().join("a/f")).unwrap(),
            "a"
        );
        assert_eq!(
            std::fs::read_to_string(data.path().join("z")).unwrap(),
            "theirs"
        );
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn concurrent_fills_of_one_volume_copy_once() {
        let f = Fixture::new();
        let app = f.image.path().join("app");
        std::fs::create_dir(&app).unwrap();
        for i in 0..200 {
            std::fs::write(app.join(format!("f{i}")), "x").unwrap();
        }
        // A stale staging directory from a fill that crashed is replaced.
        std::fs::create_dir(f.volume.path().join(STAGING_DIR)).unwrap();
        std::fs::write(f.volume.path().join(STAGING_DIR).join("stale"), "").unwrap();
        let results: Vec<VolumeFill> = std::thread::scope(|s| {
            let fills: Vec<_> = (0..4).map(|_| s.spawn(|| f.fill("/app"))).collect();
            fills.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let filled = results.iter().filter(|r| **r == VolumeFill::Filled).count();
        assert_eq!(filled, 1, "{results:?}");
        assert_eq!(std::fs::read_dir(f.data()).unwrap().count(), 200);
        assert!(!f.data().join("stale").exists());
    }

    #[test]
    fn errors_name_the_volume() {
        let f = Fixture::new();
        std::fs::create_dir(f.image.path().join("app")).unwrap();
        let missing = f.volume.path().join("gone/_data");
        let error = fill_volume(f.image.path(), "/app", &missing).unwrap_err();
        assert!(error.to_string().contains("gone"), "{error}");
    }
}
