//! Mount-point stubs. A mount needs an existing target, and creating a missing one in the
//! overlay (say `/proc` on a scratch root) would put it in the upper dir and so in the layer.
//! The init records each stub it creates, plus each directory the kernel had to copy up to
//! hold one; after the sandbox is gone the host removes those that are still untouched. Current
//! BuildKit does the same, parents included (moby/buildkit#3307, #3314, `executor/stubs.go`);
//! `tests/e2e/semantics/buildkit_edges.rs` pins it for Dockerfile builds.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// Something the init put into the upper dir only to have a mount point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stub {
    /// Path relative to the root, symlinks already resolved.
    pub path: PathBuf,
    pub kind: StubKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StubKind {
    /// A directory created as a mount point.
    Dir,
    /// An empty file created as a mount point.
    File,
    /// A lower-layer directory the overlay copied up because a stub was created in it; its
    /// ownership and mode at that time let us tell whether the process changed it since.
    CopiedUpDir { mode: u32, uid: u32, gid: u32 },
}

/// Removes from `upper_dir` the stubs that are still as the init left them, newest first so
/// that children go before their parents. Anything the process changed stays.
pub(crate) fn remove_stubs(upper_dir: &Path, stubs: &[Stub]) -> Result<(), SandboxError> {
    for stub in stubs.iter().rev() {
        let path = upper_dir.join(&stub.path);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SandboxError::io(format!("inspect stub {}", path.display()))(e)),
        };
        let removable = match stub.kind {
            StubKind::File => meta.file_type().is_file() && meta.len() == 0,
            StubKind::Dir => meta.is_dir() && is_plain_empty_dir(&path)?,
            StubKind::CopiedUpDir { mode, uid, gid } => {
                meta.is_dir()
                    && meta.mode() & 0o7777 == mode & 0o7777
                    && meta.uid() == uid
                    && meta.gid() == gid
                    && is_plain_empty_dir(&path)?
            }
        };
        if !removable {
            continue;
        }
        let removed = if meta.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(SandboxError::io(format!("remove stub {}", path.display())))?;
    }
    Ok(())
}

/// An empty directory that is not an overlay "opaque" one: an opaque directory hides the lower
/// layers' content, so removing it would change what the layer means.
fn is_plain_empty_dir(path: &Path) -> Result<bool, SandboxError> {
    let mut entries =
        std::fs::read_dir(path).map_err(SandboxError::io(format!("read {}", path.display())))?;
    if entries.next().is_some() {
        return Ok(false);
    }
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if rustix::fs::lgetxattr_query(path, name).is_ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stub(path: &str, kind: StubKind) -> Stub {
        Stub {
            path: path.into(),
            kind,
        }
    }

    #[test]
    fn untouched_stubs_are_removed_children_first() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/hosts"), "").unwrap();
        std::fs::create_dir(upper.path().join("proc")).unwrap();
        let stubs = [
            stub("proc", StubKind::Dir),
            stub("etc", StubKind::Dir),
            stub("etc/hosts", StubKind::File),
        ];
        remove_stubs(upper.path(), &stubs).unwrap();
        assert_eq!(std::fs::read_dir(upper.path()).unwrap().count(), 0);
    }

    #[test]
    fn changed_stubs_stay() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(upper.path().join("etc/hosts"), "written by the process").unwrap();
        std::fs::create_dir_all(upper.path().join("dev/x")).unwrap();
        let stubs = [
            stub("etc", StubKind::Dir),
            stub("etc/hosts", StubKind::File),
            stub("dev", StubKind::Dir),
            stub("gone", StubKind::Dir),
        ];
        remove_stubs(upper.path(), &stubs).unwrap();
        assert!(upper.path().join("etc/hosts").exists());
        assert!(upper.path().join("dev/x").exists());
    }

    #[test]
    fn copied_up_dir_is_removed_only_if_metadata_is_unchanged() {
        let upper = tempfile::tempdir().unwrap();
        let dir = upper.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        let recorded = StubKind::CopiedUpDir {
            mode: 0o700,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        remove_stubs(upper.path(), &[stub("etc", recorded)]).unwrap();
        assert!(
            dir.exists(),
            "mode differs from the recorded one, so the process chmodded it"
        );

        let recorded = StubKind::CopiedUpDir {
            mode: 0o755,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        remove_stubs(upper.path(), &[stub("etc", recorded)]).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn a_file_where_a_dir_stub_was_is_kept() {
        let upper = tempfile::tempdir().unwrap();
        std::fs::write(upper.path().join("proc"), "").unwrap();
        remove_stubs(upper.path(), &[stub("proc", StubKind::Dir)]).unwrap();
        assert!(upper.path().join("proc").exists());
    }
}
