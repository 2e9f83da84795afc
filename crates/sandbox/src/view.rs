//! A container's root filesystem as the host sees it, for copying files in and out
//! (`docker cp`) and exporting it, whether the container runs or not.
//!
//! The key decision: a running container's root is reached through its PID 1's
//! `/proc/<pid>/root`, so what is copied is exactly what the container sees (its volumes
//! included) and nothing is mounted twice; a stopped container's root is assembled in the
//! caller's private mount namespace the way the init assembles it (the overlay of its layers
//! and writable layer, then its bind mounts and volumes on mount points resolved inside the
//! root), and mount points created for that are removed again when the view is dropped. Either
//! way the view is only a directory: callers must resolve paths in it with
//! `openat2(RESOLVE_IN_ROOT)` (or never follow a symlink), since a symlink in the container
//! (`/etc -> /`) means the container's `/`, not the host's.

use std::path::{Path, PathBuf};

use crate::error::SandboxError;
use crate::overlay::OverlayMount;
use crate::spec::{Mount, SandboxSpec};
use crate::stubs::{Stub, remove_stubs};

/// A container's root, live or mounted for the view's lifetime.
#[derive(Debug)]
pub struct RootView {
    root: PathBuf,
    /// A live root, held open so the path (`/proc/self/fd/N`) keeps naming the container's
    /// root even if its pid is reused by another process after the view was made.
    _live: Option<std::os::fd::OwnedFd>,
    _mounted: Option<Mounted>,
}

#[derive(Debug)]
struct Mounted {
    /// `None` once unmounted.
    overlay: Option<OverlayMount>,
    upper: Option<PathBuf>,
    stubs: Vec<Stub>,
    _dir: tempfile::TempDir,
}

impl RootView {
    /// The root of the running container whose PID 1 is `pid`. The caller checks that the
    /// container still runs after this returns: then the pid was the container's when the
    /// root was opened.
    pub fn live(pid: u32) -> Result<RootView, SandboxError> {
        use std::os::fd::AsRawFd;
        let proc_root = format!("/proc/{pid}/root");
        let fd = rustix::fs::open(
            &proc_root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| SandboxError::io(format!("open {proc_root}"))(e.into()))?;
        Ok(RootView {
            root: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            _live: Some(fd),
            _mounted: None,
        })
    }

    /// Mounts a stopped container's root under `scratch` (a directory on the store's
    /// filesystem): its overlay, read-write, and its bind mounts (volumes) as the init makes
    /// them. Only while the container is not running: its writable layer must not be
    /// mounted twice.
    pub fn mount(spec: &SandboxSpec, scratch: &Path) -> Result<RootView, SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-root-")
            .tempdir_in(scratch)
            .map_err(SandboxError::io(format!(
                "create a mount point in {}",
                scratch.display()
            )))?;
        let target = dir.path().join("root");
        for d in [&target, &spec.upper_dir, &spec.work_dir] {
            std::fs::create_dir_all(d)
                .map_err(SandboxError::io(format!("create {}", d.display())))?;
        }
        let overlay = OverlayMount::mount(
            &spec.lower_dirs,
            Some((&spec.upper_dir, &spec.work_dir)),
            &target,
        )?;
        let copied = overlay.is_copied();
        let mut mounted = Mounted {
            overlay: Some(overlay),
            upper: Some(spec.upper_dir.clone()),
            stubs: Vec::new(),
            _dir: dir,
        };
        // A copied stack is emptied when it is finished; a volume mounted in it would be too.
        if !copied {
            let mut stubs = Vec::new();
            {
                let mut points = crate::init::rootfs::MountPoints::open(
                    &target,
                    &spec.upper_dir,
                    None,
                    &mut stubs,
                )?;
                for m in &spec.mounts {
                    if let Mount::Bind(bind) = m {
                        crate::init::rootfs::mount_bind(&mut points, bind)?;
                    }
                }
            }
            mounted.stubs = stubs;
        }
        Ok(RootView {
            root: target,
            _live: None,
            _mounted: Some(mounted),
        })
    }

    /// Mounts, read-only under `scratch`, the container's layers with its writable layer as
    /// the topmost lower dir: its filesystem without volumes, as `docker export` writes it.
    /// Safe while the container runs (nothing is written, and the writable layer is only
    /// read).
    pub fn layers(spec: &SandboxSpec, scratch: &Path) -> Result<RootView, SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-root-")
            .tempdir_in(scratch)
            .map_err(SandboxError::io(format!(
                "create a mount point in {}",
                scratch.display()
            )))?;
        let target = dir.path().join("root");
        std::fs::create_dir(&target)
            .map_err(SandboxError::io(format!("create {}", target.display())))?;
        let mut lowers = Vec::with_capacity(spec.lower_dirs.len() + 1);
        // A container that never ran has no writable layer yet.
        if spec.upper_dir.is_dir() {
            lowers.push(spec.upper_dir.clone());
        }
        lowers.extend(spec.lower_dirs.iter().cloned());
        let overlay = OverlayMount::mount(&lowers, None, &target)?;
        Ok(RootView {
            root: target,
            _live: None,
            _mounted: Some(Mounted {
                overlay: Some(overlay),
                upper: None,
                stubs: Vec::new(),
                _dir: dir,
            }),
        })
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The uid and gid of `user` (`name`, `uid`, `name:group`, ...; empty is root) as the
    /// container's `/etc/passwd` and `/etc/group` say, read as data (never through the host's
    /// NSS, which would load the container's libraries: docker CVE-2019-14271).
    pub fn user_ids(&self, user: &str) -> Result<(u32, u32), SandboxError> {
        let read = |path: &str| -> Option<String> {
            let root = rustix::fs::open(
                &self.root,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok()?;
            let file = rustix::fs::openat2(
                &root,
                path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
                rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
            )
            .ok()?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(file), &mut text).ok()?;
            Some(text)
        };
        let spec = Some(user).filter(|u| !u.is_empty());
        let resolved = crate::user::resolve_user(
            spec,
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )?;
        Ok((resolved.uid, resolved.gid))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Unmounting the overlay detaches the binds mounted inside it too.
        if let Some(overlay) = self.overlay.take() {
            drop(overlay);
        }
        if let Some(upper) = &self.upper {
            let _ = remove_stubs(upper, &self.stubs);
        }
    }
}
