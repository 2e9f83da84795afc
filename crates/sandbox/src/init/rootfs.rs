//! Building the sandbox's root filesystem inside the new mount namespace: the overlay, the
//! kernel filesystems (with Docker's masked and read-only paths, [`super::masks`]), the minimal
//! /dev, /etc/hosts and /etc/resolv.conf, the caller's bind mounts; then `pivot_root` into it.
//!
//! No device node but the few bound from the host's /dev can be opened: the root and /dev are
//! `nodev`, so a node made with CAP_MKNOD (say the host's disk, `mknod sda b 8 0`) is inert,
//! which is what Docker's device cgroup achieves.
//!
//! Mount points are resolved with `openat2(RESOLVE_IN_ROOT)` and mounted through their
//! `/proc/self/fd/N` path, so a symlink in the image (say `/etc -> /`) is followed inside the
//! root and can never make us mount over a host path.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::InitFailure;
use crate::overlay::mount_layers;
use crate::protocol::{IdMap, InitRequest};
use crate::spec::{BindMount, FileMount, Mount, SecurityOptions};
use crate::stubs::{Stub, StubKind};

/// Device nodes shared from the host's /dev (bind mounts work in a user namespace, where mknod
/// does not).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Mounts everything under `<state_dir>/root` and makes it the process's root.
pub(super) fn build_and_enter(
    request: &InitRequest,
    stubs: &mut Vec<Stub>,
) -> Result<(), InitFailure> {
    let spec = &request.sandbox;
    let root = request.state_dir.join("root");
    let mounted = if request.copied_root {
        rustix::mount::mount_bind(&spec.upper_dir, &root).map_err(std::io::Error::from)
    } else {
        mount_layers(
            &spec.lower_dirs,
            Some((&spec.upper_dir, &spec.work_dir)),
            &root,
            &request.state_dir.join("empty"),
            request.id_map.is_some() || crate::rootless::in_user_namespace(),
        )
    };
    mounted.map_err(InitFailure::setup(format!(
        "mount the overlay root (upper {}, work {})",
        spec.upper_dir.display(),
        spec.work_dir.display()
    )))?;

    let mut points = MountPoints::open(&root, &spec.upper_dir, request.id_map, stubs)?;
    let nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;

    let proc_dir = points.ensure("/proc", PointKind::Dir)?;
    mount("proc", &proc_dir, "proc", nodev_noexec, None, "/proc")?;

    let dev_dir = points.ensure("/dev", PointKind::Dir)?;
    let dev_flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::STRICTATIME;
    mount(
        "tmpfs",
        &dev_dir,
        "tmpfs",
        dev_flags,
        Some(c"mode=755,size=65536k"),
        "/dev",
    )?;
    // Re-resolved: the old fd still names the directory under the new tmpfs.
    populate_dev(
        &points.ensure("/dev", PointKind::Dir)?,
        request.id_map.is_none() && crate::rootless::gid_is_mapped(5),
        spec.shm_size,
    )?;

    let sys_dir = points.ensure("/sys", PointKind::Dir)?;
    mount_sys(&sys_dir);
    super::masks::mask_kernel_paths(&points.root)?;

    let etc_hostname = spec
        .names
        .etc_hostname
        .then_some(("hostname", "/etc/hostname"));
    for (file, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")]
        .into_iter()
        .chain(etc_hostname)
    {
        let point = points.ensure(target, PointKind::File)?;
        bind(&request.state_dir.join(file), &point, false, target)?;
    }
    let mut files = FileMountArea::new(request.state_dir.join("files"), request.id_map);
    for extra in &spec.mounts {
        match extra {
            Mount::Bind(bind_mount) => mount_bind(&mut points, bind_mount)?,
            Mount::Tmpfs(tmpfs) => {
                let point = points.ensure(&tmpfs.target, PointKind::Dir)?;
                let options = match tmpfs.size {
                    Some(size) => format!("mode=1777,size={size}"),
                    None => "mode=1777".to_owned(),
                };
                let options = std::ffi::CString::new(options).expect("no NUL in tmpfs options");
                mount(
                    "tmpfs",
                    &point,
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    Some(&options),
                    &tmpfs.target,
                )?;
            }
            Mount::File(file) => {
                let source = files.write(file)?;
                let point = points.ensure(&file.target, PointKind::File)?;
                bind(&source, &point, false, &file.target)?;
                let mounted = points.ensure(&file.target, PointKind::File)?;
                remount_read_only(&mounted, &file.target)?;
            }
        }
    }
    drop(points);
    pivot_into(&root)?;
    restrict_root(&spec.security)
}

/// Makes the root mount `nodev` (and read-only for `--read-only`); mounts on top keep theirs.
fn restrict_root(security: &SecurityOptions) -> Result<(), InitFailure> {
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InitFailure::setup("open the new root")(e.into()))?;
    remount_with(
        &root,
        "/",
        MountFlags::NODEV
            | if security.read_only_root {
                MountFlags::RDONLY
            } else {
                MountFlags::empty()
            },
    )
}

pub(crate) fn mount_bind(
    points: &mut MountPoints<'_>,
    mount: &BindMount,
) -> Result<(), InitFailure> {
    let source = std::fs::metadata(&mount.source).map_err(InitFailure::setup(format!(
        "bind mount source {}",
        mount.source.display()
    )))?;
    let kind = if source.is_dir() {
        PointKind::Dir
    } else {
        PointKind::File
    };
    let point = points.ensure(&mount.target, kind)?;
    bind(&mount.source, &point, true, &mount.target)?;
    if mount.readonly {
        let mounted = points.ensure(&mount.target, kind)?;
        remount_read_only(&mounted, &mount.target)?;
    }
    Ok(())
}

/// Where the files of [`FileMount`]s are written before being bound into place: a tmpfs on the
/// state dir's `files/`, mounted on first use. It exists only in the sandbox's mount namespace
/// and becomes unreachable (except through the binds) once the old root is detached.
struct FileMountArea {
    dir: PathBuf,
    id_map: Option<IdMap>,
    mounted: bool,
    count: usize,
}

impl FileMountArea {
    fn new(dir: PathBuf, id_map: Option<IdMap>) -> Self {
        FileMountArea {
            dir,
            id_map,
            mounted: false,
            count: 0,
        }
    }

    /// Writes one file with its mode and owner and returns its path.
    fn write(&mut self, file: &FileMount) -> Result<PathBuf, InitFailure> {
        let failed = |what: &str| InitFailure::setup(format!("{what} for {}", file.target));
        if !self.mounted {
            rustix::mount::mount(
                "tmpfs",
                &self.dir,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"mode=755",
            )
            .map_err(|e| failed("mount the file tmpfs")(e.into()))?;
            self.mounted = true;
        }
        self.count += 1;
        let path = self.dir.join(self.count.to_string());
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(failed("create the file"))?;
            out.write_all(&file.contents)
                .map_err(failed("write the file"))?;
        }
        // Inside a user namespace only root (the caller) is mapped: other owners cannot exist.
        if self.id_map.is_none() {
            rustix::fs::chown(
                &path,
                Some(rustix::fs::Uid::from_raw(file.uid)),
                Some(rustix::fs::Gid::from_raw(file.gid)),
            )
            .map_err(|e| failed("set the owner")(e.into()))?;
        }
        rustix::fs::chmod(&path, Mode::from_raw_mode(file.mode & 0o7777))
            .map_err(|e| failed("set the mode")(e.into()))?;
        Ok(path)
    }
}

/// The `/proc/self/fd/N` path through which a mount point fd can be mounted on.
pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn mount(
    source: &str,
    target: &OwnedFd,
    fs_type: &str,
    flags: MountFlags,
    data: Option<&std::ffi::CStr>,
    name: &str,
) -> Result<(), InitFailure> {
    rustix::mount::mount(source, fd_path(target), fs_type, flags, data)
        .map_err(|e| InitFailure::setup(format!("mount {fs_type} on {name}"))(e.into()))
}

fn bind(source: &Path, target: &OwnedFd, recursive: bool, name: &str) -> Result<(), InitFailure> {
    let result = if recursive {
        rustix::mount::mount_bind_recursive(source, fd_path(target))
    } else {
        rustix::mount::mount_bind(source, fd_path(target))
    };
    result.map_err(|e| InitFailure::setup(format!("bind {} on {name}", source.display()))(e.into()))
}

/// Remounts a bind mount read-only, keeping the flags the kernel locks in a user namespace.
pub(super) fn remount_read_only(target: &OwnedFd, name: &str) -> Result<(), InitFailure> {
    remount_with(target, name, MountFlags::RDONLY)
}

/// Changes the flags of the mount at `target` to its current ones (the kernel locks those in a
/// user namespace) plus `extra`.
fn remount_with(target: &OwnedFd, name: &str, extra: MountFlags) -> Result<(), InitFailure> {
    use rustix::fs::StatVfsMountFlags as Vfs;
    let path = fd_path(target);
    let mut flags = MountFlags::BIND | extra;
    if let Ok(stat) = rustix::fs::statvfs(&path) {
        for (vfs, mount) in [
            (Vfs::NOSUID, MountFlags::NOSUID),
            (Vfs::NODEV, MountFlags::NODEV),
            (Vfs::NOEXEC, MountFlags::NOEXEC),
            (Vfs::RDONLY, MountFlags::RDONLY),
        ] {
            if stat.f_flag.contains(vfs) {
                flags |= mount;
            }
        }
    }
    rustix::mount::mount_remount(&path, flags, "")
        .map_err(|e| InitFailure::setup(format!("remount {name} with {extra:?}"))(e.into()))
}

/// A read-only sysfs when the namespaces allow one, else the host's, read-only, else nothing:
/// builds rarely need /sys.
fn mount_sys(target: &OwnedFd) {
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if rustix::mount::mount("sysfs", fd_path(target), "sysfs", flags, None).is_ok() {
        return;
    }
    if rustix::mount::mount_bind_recursive("/sys", fd_path(target)).is_ok() {
        let remounted = rustix::mount::mount_remount(
            fd_path(target),
            MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC,
            "",
        );
        if remounted.is_err() {
            let _ = rustix::mount::unmount(fd_path(target), UnmountFlags::DETACH);
        }
    }
}

/// Fills the fresh /dev tmpfs: shared device nodes, a private devpts, /dev/shm and the usual
/// symlinks.
fn populate_dev(dev: &OwnedFd, real_root: bool, shm_size: Option<u64>) -> Result<(), InitFailure> {
    let dev = fd_path(dev);
    let setup = |what: &str| InitFailure::setup(format!("{what} in /dev"));
    for name in DEVICES {
        let node = dev.join(name);
        std::fs::File::create(&node).map_err(setup(&format!("create {name}")))?;
        rustix::mount::mount_bind(Path::new("/dev").join(name), &node)
            .map_err(|e| setup(&format!("bind {name}"))(e.into()))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(setup("create pts"))?;
    // gid=5 (tty) only exists for a real root; in a user namespace it is not mapped.
    let pts_options: &std::ffi::CStr = if real_root {
        c"newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        c"newinstance,ptmxmode=0666,mode=0620"
    };
    rustix::mount::mount(
        "devpts",
        &pts,
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        pts_options,
    )
    .map_err(|e| setup("mount devpts")(e.into()))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(setup("create shm"))?;
    let shm_flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // Docker's default is 64 MiB; `--shm-size` sets it in bytes.
    let shm_options =
        std::ffi::CString::new(format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20)))
            .map_err(|e| setup("shm options")(std::io::Error::other(e)))?;
    rustix::mount::mount("shm", &shm, "tmpfs", shm_flags, shm_options.as_c_str())
        .map_err(|e| setup("mount shm")(e.into()))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))
            .map_err(setup(&format!("link {link}")))?;
    }
    Ok(())
}

/// `pivot_root` into `root`, detaching the old root so that no host path stays reachable.
fn pivot_into(root: &Path) -> Result<(), InitFailure> {
    let failed = |step: &str| {
        let step = step.to_string();
        move |e: Errno| InitFailure::setup(step)(e.into())
    };
    rustix::process::chdir(root).map_err(failed("enter the new root"))?;
    // Stacking the old root on top of the new one avoids needing a directory for it.
    rustix::process::pivot_root(".", ".").map_err(failed("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(failed("detach the old root"))?;
    rustix::process::chdir("/").map_err(failed("enter /"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointKind {
    Dir,
    File,
}

/// Finds or creates mount points inside the root, recording in `stubs` what it creates on
/// the overlay.
pub(crate) struct MountPoints<'a> {
    root: OwnedFd,
    /// The root's path as the kernel reports it, to turn resolved fds into relative paths.
    root_path: PathBuf,
    root_dev: u64,
    upper_dir: &'a Path,
    id_map: Option<IdMap>,
    stubs: &'a mut Vec<Stub>,
}

impl<'a> MountPoints<'a> {
    pub(crate) fn open(
        root: &Path,
        upper_dir: &'a Path,
        id_map: Option<IdMap>,
        stubs: &'a mut Vec<Stub>,
    ) -> Result<Self, InitFailure> {
        let failed = |e: Errno| InitFailure::setup(format!("open {}", root.display()))(e.into());
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed)?;
        let root_dev = rustix::fs::fstat(&root_fd).map_err(failed)?.st_dev;
        let root_path =
            resolved_path(&root_fd).map_err(InitFailure::setup("resolve the root path"))?;
        Ok(MountPoints {
            root: root_fd,
            root_path,
            root_dev,
            upper_dir,
            id_map,
            stubs,
        })
    }

    /// An fd for `target` (an absolute path inside the root), creating it and any missing
    /// parent directories.
    fn ensure(&mut self, target: &str, kind: PointKind) -> Result<OwnedFd, InitFailure> {
        let failed = |what: &str| {
            let step = format!("{what} mount point {target}");
            move |e: Errno| InitFailure::setup(step)(e.into())
        };
        let components = normalize(target);
        if components.is_empty() {
            return Err(InitFailure::Setup {
                step: format!("mount point {target}"),
                message: "cannot mount over the root".into(),
            });
        }
        let mut current = self
            .open_in_root(".", OFlags::PATH)
            .map_err(failed("open"))?;
        for i in 0..components.len() {
            let prefix = components[..=i].join("/");
            match self.open_in_root(&prefix, OFlags::PATH) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(failed("resolve")(e)),
            }
            let on_overlay = rustix::fs::fstat(&current)
                .map_err(failed("inspect"))?
                .st_dev
                == self.root_dev;
            if on_overlay {
                self.record_copied_up_parents(&current)?;
            }
            let last = i + 1 == components.len();
            let (created, stub_kind) = if last && kind == PointKind::File {
                let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOCTTY | OFlags::CLOEXEC;
                let fd = rustix::fs::openat2(
                    &self.root,
                    &prefix,
                    flags,
                    Mode::from_raw_mode(0o644),
                    ResolveFlags::IN_ROOT,
                )
                .map_err(failed("create"))?;
                (fd, StubKind::File)
            } else {
                rustix::fs::mkdirat(&current, components[i].as_str(), Mode::from_raw_mode(0o755))
                    .map_err(failed("create"))?;
                (
                    self.open_in_root(&prefix, OFlags::PATH)
                        .map_err(failed("open"))?,
                    StubKind::Dir,
                )
            };
            if on_overlay {
                self.record(&created, stub_kind)?;
            }
            current = created;
        }
        let is_dir = rustix::fs::fstat(&current)
            .map_err(failed("inspect"))?
            .st_mode
            & libc::S_IFMT
            == libc::S_IFDIR;
        if is_dir != (kind == PointKind::Dir) {
            return Err(InitFailure::Setup {
                step: format!("mount point {target}"),
                message: if is_dir {
                    "is a directory, a file is needed"
                } else {
                    "is not a directory"
                }
                .into(),
            });
        }
        Ok(current)
    }

    fn open_in_root(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            &self.root,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
    }

    fn relative(&self, fd: &impl AsFd) -> Result<Option<PathBuf>, InitFailure> {
        let path = resolved_path(fd).map_err(InitFailure::setup("resolve a mount point"))?;
        Ok(path
            .strip_prefix(&self.root_path)
            .ok()
            .map(Path::to_path_buf))
    }

    fn record(&mut self, fd: &OwnedFd, kind: StubKind) -> Result<(), InitFailure> {
        if let Some(path) = self.relative(fd)? {
            self.stubs.push(Stub { path, kind });
        }
        Ok(())
    }

    /// Before creating something in `parent`, notes each directory on its path that the
    /// overlay does not hold in the upper dir yet: creating the stub will copy it up.
    fn record_copied_up_parents(&mut self, parent: &OwnedFd) -> Result<(), InitFailure> {
        let Some(parent) = self.relative(parent)? else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if std::fs::symlink_metadata(self.upper_dir.join(&prefix)).is_ok() {
                continue;
            }
            let merged = self.root_path.join(&prefix);
            let meta = std::fs::symlink_metadata(&merged)
                .map_err(InitFailure::setup(format!("inspect {}", merged.display())))?;
            // Seen from inside a user namespace, our root is the caller's host id.
            let host_id =
                |id: u32, mapped: Option<u32>| if id == 0 { mapped.unwrap_or(0) } else { id };
            self.stubs.push(Stub {
                path: prefix.clone(),
                kind: StubKind::CopiedUpDir {
                    mode: meta.mode() & 0o7777,
                    uid: host_id(meta.uid(), self.id_map.map(|m| m.uid)),
                    gid: host_id(meta.gid(), self.id_map.map(|m| m.gid)),
                },
            });
        }
        Ok(())
    }
}

fn resolved_path(fd: &impl AsFd) -> std::io::Result<PathBuf> {
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    std::fs::read_link(link)
}

/// Lexically normalizes an in-container path into its components (`..` stops at the root).
pub(super) fn normalize(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => out.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_stays_inside_the_root() {
        assert_eq!(normalize("/etc/hosts"), ["etc", "hosts"]);
        assert_eq!(normalize("/a/./b//c/"), ["a", "b", "c"]);
        assert_eq!(normalize("/../../etc"), ["etc"]);
        assert_eq!(normalize("/a/b/../c"), ["a", "c"]);
        assert!(normalize("/").is_empty());
        // Working directories go through it too (workdir.rs), relative ones included.
        assert_eq!(normalize("/../../tmp/../work"), ["work"]);
        assert_eq!(normalize("a/./b//c/"), ["a", "b", "c"]);
        assert!(normalize("/..").is_empty());
    }
}
