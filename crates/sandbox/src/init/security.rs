//! Turning the forked child into the sandboxed process's identity: capability bounding set,
//! seccomp, user and groups, the remaining capability sets, no_new_privs. This is the one place
//! where privileges are dropped, in runc's order, so that every way of starting a process in a
//! sandbox (the sandbox's own process now, `kiln exec` later) does it identically.

use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::error::InitFailure;
use crate::seccomp;
use crate::spec::{SeccompProfile, SecurityOptions};
use crate::sys;
use crate::user::ResolvedUser;

/// Drops from full root (inside the sandbox's namespaces) to `user` with what `options`
/// grants. Call it in the process to be executed, right before `execve`; the seccomp filter
/// then also covers the rest of the setup, which uses only allowed syscalls.
///
/// Order, as runc's: the bounding set first (it needs CAP_SETPCAP); the seccomp filter next
/// when no_new_privs is off, because installing one then needs CAP_SYS_ADMIN, which the user
/// may not keep; then the ids, with PR_SET_KEEPCAPS so a non-root user's permitted set
/// survives setuid until it is set explicitly; then effective/permitted/inheritable and the
/// ambient set; finally no_new_privs and, under it, the filter as late as possible.
pub(crate) fn apply_process_security(
    options: &SecurityOptions,
    user: &ResolvedUser,
    set_groups: bool,
) -> Result<(), InitFailure> {
    let failed = |what: &'static str| move |e: Errno| InitFailure::setup(what)(e.into());
    let supported = supported_capabilities();
    let granted = CapabilitySet::from_bits_retain(options.capabilities.bits()) & supported;

    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if supported.contains(cap) && !granted.contains(cap) {
            rustix::thread::remove_capability_from_bounding_set(cap)
                .map_err(failed("drop capabilities from the bounding set"))?;
        }
    }
    let filter = match options.seccomp {
        SeccompProfile::Default => Some(seccomp::filter(options.capabilities)),
        SeccompProfile::Unconfined => None,
    };
    let install = |program: &[seccomp::Instruction]| {
        sys::install_seccomp_filter(program)
            .map_err(InitFailure::setup("install the seccomp filter"))
    };
    if !options.no_new_privileges
        && let Some(program) = &filter
    {
        install(program)?;
    }

    rustix::thread::set_keep_capabilities(true).map_err(failed("keep capabilities"))?;
    become_user(user, set_groups)?;
    rustix::thread::set_keep_capabilities(false).map_err(failed("reset keep capabilities"))?;

    // Docker gives a non-root user no effective or permitted capabilities, as `execve` of a
    // non-setuid binary would; the bounding set still lets setuid tools such as `su` work.
    let process_caps = if user.uid == 0 {
        granted
    } else {
        CapabilitySet::empty()
    };
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: process_caps,
            permitted: process_caps,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(failed("set capabilities"))?;
    match rustix::thread::clear_ambient_capability_set() {
        // Kernels before 4.3 have no ambient set.
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(failed("clear the ambient capabilities")(e)),
    }

    if options.no_new_privileges {
        rustix::thread::set_no_new_privs(true).map_err(failed("set no_new_privs"))?;
        if let Some(program) = &filter {
            install(program)?;
        }
    }
    Ok(())
}

/// The capabilities this kernel knows (PR_CAPBSET_READ fails with EINVAL past the last one).
fn supported_capabilities() -> CapabilitySet {
    let mut set = CapabilitySet::empty();
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if rustix::thread::capability_is_in_bounding_set(cap).is_err() {
            break;
        }
        set |= cap;
    }
    set
}

fn become_user(user: &ResolvedUser, set_groups: bool) -> Result<(), InitFailure> {
    let failed = |what: String| move |e: Errno| InitFailure::setup(what)(e.into());
    if set_groups {
        let groups: Vec<Gid> = user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        rustix::thread::set_thread_groups(&groups).map_err(failed(format!(
            "set supplementary groups {:?}",
            user.groups
        )))?;
    }
    rustix::thread::set_thread_gid(Gid::from_raw(user.gid))
        .map_err(failed(format!("set gid {}", user.gid)))?;
    rustix::thread::set_thread_uid(Uid::from_raw(user.uid))
        .map_err(failed(format!("set uid {}", user.uid)))
}
