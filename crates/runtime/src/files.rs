//! A container's files from the host: the stat and tar of a path (`docker cp` out), the
//! extraction of a tar into a directory (`docker cp` in), and the whole filesystem as a tar
//! (`docker export`), for running and stopped containers alike.
//!
//! The key decision: the runtime only picks the view of the container's root
//! (`kiln_sandbox::RootView`: a running container's own root through its PID 1, or a stopped
//! one's layers and volumes mounted for the call) and hands it to `kiln_layer`, which never
//! resolves a path inside it by the host's rules. A running container is checked to still run
//! after its root was opened, so a pid reused by another process is never mistaken for it.

use std::io::{Read, Write};

use kiln_layer::{CopyInOptions, PathStat};
use kiln_sandbox::RootView;
use kiln_store::{ContainerRecord, StoreLock};

use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::spec::ContainerSpec;

/// How `copy_in` writes the archive's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyInRequest {
    /// Refuse to replace a directory with a non-directory or back (`noOverwriteDirNonDir`).
    pub no_overwrite_dir_non_dir: bool,
    /// Own the files by the container's user instead of the archive's owners (`copyUIDGID`,
    /// `docker cp -a`).
    pub copy_uid_gid: bool,
}

/// A view and what keeps it valid.
struct View {
    root: RootView,
    /// The store lock, shared, while a stopped container's root is mounted in the store's
    /// temp dir (so `prune`, which empties it, waits).
    _lock: Option<StoreLock>,
    _scratch: Option<tempfile::TempDir>,
}

impl<H: Host> Runtime<H> {
    /// The container's root with its volumes: its own if it runs, else mounted.
    fn view(&self, c: &ContainerRecord) -> Result<View> {
        if c.state.is_running() && c.state.pid != 0 {
            let root = RootView::live(c.state.pid)?;
            if self.host.is_running(&c.id)? {
                return Ok(View {
                    root,
                    _lock: None,
                    _scratch: None,
                });
            }
        }
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        let lock = self.store.lock_shared()?;
        let scratch = self.store.temp_dir("cp-")?;
        let root = RootView::mount(&spec.sandbox, scratch.path())?;
        Ok(View {
            root,
            _lock: Some(lock),
            _scratch: Some(scratch),
        })
    }

    fn no_such_path(
        c: &ContainerRecord,
        path: &str,
    ) -> impl FnOnce(kiln_layer::LayerError) -> RuntimeError {
        let (name, path) = (c.name.clone(), path.to_owned());
        move |e| {
            if e.kind() == kiln_error::ErrorKind::NotFound {
                RuntimeError::NoSuchPath {
                    path,
                    container: name,
                }
            } else {
                e.into()
            }
        }
    }

    /// The stat of `path` in the container (not following a final symlink).
    pub fn stat_path(&self, query: &str, path: &str) -> Result<PathStat> {
        let c = self.container(query)?;
        let view = self.view(&c)?;
        kiln_layer::stat_in_root(view.root.path(), path).map_err(Self::no_such_path(&c, path))
    }

    /// Writes a tar of `path` in the container to `out`, entries under the path's base name
    /// or `name`.
    pub fn copy_out<W: Write>(
        &self,
        query: &str,
        path: &str,
        name: Option<&str>,
        out: W,
    ) -> Result<W> {
        let c = self.container(query)?;
        let view = self.view(&c)?;
        kiln_layer::tar_path_in_root(view.root.path(), path, name, out)
            .map_err(Self::no_such_path(&c, path))
    }

    /// Extracts the tar read from `archive` into the existing directory `path` of the
    /// container.
    pub fn copy_in(
        &self,
        query: &str,
        path: &str,
        archive: impl Read,
        request: &CopyInRequest,
    ) -> Result<()> {
        let c = self.container(query)?;
        let view = self.view(&c)?;
        let owner = if request.copy_uid_gid {
            Some(view.root.user_ids(&c.config.user)?)
        } else {
            None
        };
        let options = CopyInOptions {
            owner,
            no_overwrite_dir_non_dir: request.no_overwrite_dir_non_dir,
        };
        kiln_layer::copy_into_root(archive, view.root.path(), path, &options)
            .map_err(Self::no_such_path(&c, path))
    }

    /// Writes the container's filesystem (its layers and writable layer, without volumes)
    /// as a tar to `out`, as `docker export` does.
    pub fn export<W: Write>(&self, query: &str, out: W) -> Result<W> {
        let c = self.container(query)?;
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        let _lock = self.store.lock_shared()?;
        let scratch = self.store.temp_dir("export-")?;
        let root = RootView::layers(&spec.sandbox, scratch.path())?;
        Ok(kiln_layer::tar_root(root.path(), out)?)
    }
}
