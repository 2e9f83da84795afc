//! Entering the process's working directory inside the new root, never outside it.
//!
//! runc CVE-2024-21626: a working directory such as `/proc/self/fd/7` resolved through a
//! descriptor the runtime had leaked and landed on the host. Here every component is resolved
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the root, so `..` and symlinks
//! stay inside and `/proc/<pid>/fd/*`, `/proc/<pid>/cwd` or `/proc/<pid>/root` are refused;
//! missing directories are created one by one in the directory just resolved.

use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::rootfs::normalize;
use crate::error::InitFailure;

/// Creates `cwd` if missing (as Docker does for WORKDIR) and makes it the current directory.
/// Must run after `pivot_root`, when `/` is the sandbox's root.
pub(super) fn enter_workdir(cwd: &str) -> Result<(), InitFailure> {
    let failed = |what: &str| {
        let step = format!("{what} working directory {cwd}");
        move |e: Errno| {
            let mut failure = InitFailure::setup(step)(e.into());
            if e == Errno::LOOP
                && let InitFailure::Setup { message, .. } = &mut failure
            {
                message.push_str(" (it leads through a /proc magic link out of the root)");
            }
            failure
        }
    };
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed("open the root for"))?;
    let mut current = open_dir(&root, ".").map_err(failed("open"))?;
    let mut prefix = String::new();
    // Lexical cleaning first (`..` stops at the root), as Docker joins a working directory to
    // the root; symlinks met later are still resolved inside the root by openat2.
    for name in normalize(cwd) {
        prefix.push_str(&name);
        prefix.push('/');
        current = match open_dir(&root, &prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&current, name.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(failed("create")(e)),
                }
                open_dir(&root, &prefix).map_err(failed("open"))?
            }
            Err(e) => return Err(failed("open")(e)),
        };
    }
    rustix::process::fchdir(&current).map_err(failed("enter"))
}

fn open_dir(root: &OwnedFd, path: &str) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}
