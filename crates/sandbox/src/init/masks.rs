//! Docker's masked and read-only kernel paths. Under the fresh /proc and /sys of the sandbox,
//! files that leak host state or let root change the host (kernel memory, keys, timers,
//! firmware, sysctls, SysRq) are hidden or made read-only, as runc does for Docker's defaults
//! (moby `oci/defaults.go`): masked files get /dev/null bound over them, masked directories an
//! empty read-only tmpfs, read-only paths a read-only bind of themselves. Paths this kernel
//! does not have are skipped.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::MountFlags;

use super::rootfs::{fd_path, remount_read_only};
use crate::error::InitFailure;

/// Hidden from the process.
pub(crate) const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Visible but not writable (all of /sys is read-only already).
pub(crate) const READ_ONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Applies both lists under `root` (the new root, before `pivot_root`).
pub(super) fn mask_kernel_paths(root: &OwnedFd) -> Result<(), InitFailure> {
    for path in READ_ONLY_PATHS {
        let Some(fd) = open_existing(root, path)? else {
            continue;
        };
        let target = fd_path(&fd);
        rustix::mount::mount_bind_recursive(&target, &target)
            .map_err(|e| InitFailure::setup(format!("bind {path} onto itself"))(e.into()))?;
        // Re-resolved: the old fd names what is now under the bind mount.
        let mounted = open_existing(root, path)?.ok_or_else(|| InitFailure::Setup {
            step: format!("make {path} read-only"),
            message: "vanished".into(),
        })?;
        remount_read_only(&mounted, path)?;
    }
    for path in MASKED_PATHS {
        let Some(fd) = open_existing(root, path)? else {
            continue;
        };
        let failed = |e: Errno| InitFailure::setup(format!("mask {path}"))(e.into());
        let is_dir =
            rustix::fs::fstat(&fd).map_err(failed)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            let flags =
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            rustix::mount::mount("tmpfs", fd_path(&fd), "tmpfs", flags, c"size=0,mode=555")
                .map_err(failed)?;
        } else {
            rustix::mount::mount_bind(Path::new("/dev/null"), fd_path(&fd)).map_err(failed)?;
        }
    }
    Ok(())
}

/// An `O_PATH` fd for `path` inside the root, `None` if it does not exist.
fn open_existing(root: &OwnedFd, path: &str) -> Result<Option<OwnedFd>, InitFailure> {
    match rustix::fs::openat2(
        root,
        path.trim_start_matches('/'),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(InitFailure::setup(format!("open {path}"))(e.into())),
    }
}
