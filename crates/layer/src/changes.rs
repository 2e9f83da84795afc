//! The changes an overlay upper dir makes to its lower dirs, as `docker diff` lists them: each
//! path with a kind (modified, added, deleted), for a container's writable layer.
//!
//! The upper dir alone says what was touched; the lower dirs say whether a touched path was
//! there before (modified) or not (added). Two rules follow dockerd's overlay driver so the
//! lists match: a directory that exists below with the same mode, size and mtime was only
//! copied up on the way to something inside it and is not itself listed, and the parent of an
//! added or deleted path is always listed as modified (once, before its children). A whiteout
//! (a 0:0 character device, or a file with overlayfs's whiteout xattr) is a deletion; an opaque
//! directory is a directory that replaced the one below, so it is modified, not deleted.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::LayerError;
use crate::xattrs::FileXattrs;

/// What happened to a path, with Docker's numbers (`Kind` of `GET /containers/{id}/changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path (absolute, as seen inside the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// The changes of `upper` over `lowers` (topmost first), in sorted walk order.
pub fn upper_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, LayerError> {
    let mut walk = Walk {
        lowers,
        changes: Vec::new(),
        listed_dirs: Vec::new(),
    };
    match std::fs::symlink_metadata(upper) {
        Ok(_) => walk.dir(upper, "")?,
        // A container that never ran has no writable layer yet: no changes.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LayerError::io(upper)(e)),
    }
    Ok(walk.changes)
}

struct Walk<'a> {
    lowers: &'a [PathBuf],
    changes: Vec<Change>,
    /// Directories already listed (as changes or as walked-into parents), so a parent is
    /// listed once.
    listed_dirs: Vec<String>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &str) -> Result<(), LayerError> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(LayerError::io(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(LayerError::io(dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let child = format!("{rel}/{}", name.to_string_lossy());
            let meta = std::fs::symlink_metadata(&path).map_err(LayerError::io(&path))?;
            let xattrs = FileXattrs::read(&path).map_err(LayerError::io(&path))?;
            let whiteout = (meta.file_type().is_char_device() && meta.rdev() == 0)
                || (meta.is_file() && xattrs.is_whiteout());
            let kind = if whiteout {
                Some(ChangeKind::Deleted)
            } else {
                match self.below(&child)? {
                    None => Some(ChangeKind::Added),
                    Some(old) if meta.is_dir() && old.is_dir() && same_dir(&meta, &old) => {
                        // Copied up only because something inside changed; unless overlayfs
                        // made it opaque, which replaced what was below.
                        xattrs
                            .is_opaque(&path)
                            .map_err(LayerError::io(&path))?
                            .then_some(ChangeKind::Modified)
                    }
                    Some(_) => Some(ChangeKind::Modified),
                }
            };
            if meta.is_dir() && !whiteout {
                // Its children's changes name it as their parent; once listed, never again.
                if kind.is_some() {
                    self.listed_dirs.push(child.clone());
                }
            }
            if let Some(kind) = kind {
                if matches!(kind, ChangeKind::Added | ChangeKind::Deleted)
                    && !rel.is_empty()
                    && !self.listed_dirs.iter().any(|d| d == rel)
                {
                    self.changes.push(Change {
                        path: rel.to_owned(),
                        kind: ChangeKind::Modified,
                    });
                    self.listed_dirs.push(rel.to_owned());
                }
                self.changes.push(Change {
                    path: child.clone(),
                    kind,
                });
            }
            if meta.is_dir() && !whiteout {
                self.dir(&path, &child)?;
            }
        }
        Ok(())
    }

    /// The topmost lower dir's entry at `rel`, if a lower dir has one that is not hidden.
    fn below(&self, rel: &str) -> Result<Option<std::fs::Metadata>, LayerError> {
        for lower in self.lowers {
            let path = lower.join(rel.trim_start_matches('/'));
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_char_device() && meta.rdev() == 0 => {
                    // A whiteout in a lower layer: gone from there down.
                    return Ok(None);
                }
                Ok(meta) => return Ok(Some(meta)),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {}
                Err(e) => return Err(LayerError::io(&path)(e)),
            }
        }
        Ok(None)
    }
}

/// dockerd's test for a directory that was only copied up: same mode, size and mtime.
fn same_dir(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.mode() == b.mode()
        && a.size() == b.size()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn adds_modifications_and_whiteouts_are_listed_with_their_parents() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let (l, u) = (lower.path(), upper.path());
        for d in ["etc", "bin", "var/lib"] {
            std::fs::create_dir_all(l.join(d)).unwrap();
        }
        std::fs::write(l.join("etc/passwd"), "root").unwrap();
        std::fs::write(l.join("bin/sh"), "sh").unwrap();
        // Upper: /etc copied up with the same metadata, passwd changed, a new file in it;
        // /bin/sh deleted; a new top-level dir with a file.
        std::fs::create_dir(u.join("etc")).unwrap();
        std::fs::write(u.join("etc/passwd"), "root\nuser").unwrap();
        std::fs::write(u.join("etc/new"), "x").unwrap();
        std::fs::create_dir(u.join("bin")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            u.join("bin/sh"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::create_dir(u.join("opt")).unwrap();
        std::fs::write(u.join("opt/tool"), "t").unwrap();
        // Make upper's /etc and /bin look like pure copy-ups.
        for d in ["etc", "bin"] {
            let m = std::fs::metadata(l.join(d)).unwrap();
            let t = filetime_of(&m);
            set_times(&u.join(d), t);
            std::fs::set_permissions(u.join(d), m.permissions()).unwrap();
        }
        let changes = upper_changes(u, &[l.to_path_buf()]).unwrap();
        assert_eq!(
            changes,
            vec![
                change("/bin", ChangeKind::Modified),
                change("/bin/sh", ChangeKind::Deleted),
                change("/etc", ChangeKind::Modified),
                change("/etc/new", ChangeKind::Added),
                change("/etc/passwd", ChangeKind::Modified),
                change("/opt", ChangeKind::Added),
                change("/opt/tool", ChangeKind::Added),
            ]
        );
        let letters: String = changes.iter().map(|c| c.kind.letter()).collect();
        assert_eq!(letters, "CDCACAA");
    }

    #[test]
    fn a_directory_with_new_metadata_is_modified_and_a_missing_upper_is_no_change() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("data")).unwrap();
        std::fs::create_dir(upper.path().join("data")).unwrap();
        std::fs::set_permissions(
            upper.path().join("data"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let changes = upper_changes(upper.path(), &[lower.path().to_path_buf()]).unwrap();
        assert_eq!(changes, vec![change("/data", ChangeKind::Modified)]);
        let none = upper_changes(&upper.path().join("absent"), &[]).unwrap();
        assert!(none.is_empty());
    }

    fn filetime_of(m: &std::fs::Metadata) -> rustix::fs::Timespec {
        rustix::fs::Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        }
    }

    fn set_times(path: &Path, t: rustix::fs::Timespec) {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
}
