//! The few raw system calls the sandbox needs that have no safe wrapper: fork, execve, signal
//! masks, inherited fds, `unshare` and the loopback ioctl.
// Unsafe is confined to this module because these calls are inherently unsafe FFI; each block
// is a single call whose preconditions are stated beside it.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals that report faults of this very process; they must stay deliverable.
const SYNCHRONOUS_SIGNALS: [libc::c_int; 7] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
];

/// Makes `fds` survive the `exec` of `command` (they are created close-on-exec so that no other
/// concurrently spawned child inherits them).
pub(crate) fn keep_fds_across_exec(command: &mut Command, fds: Vec<RawFd>) {
    let hook = move || {
        for &fd in &fds {
            // SAFETY: fcntl on an fd number only changes that fd's flags; it is
            // async-signal-safe, as required between fork and exec.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls fcntl, which is async-signal-safe and allocates nothing.
    unsafe { command.pre_exec(hook) };
}

/// Fd numbers already turned into an [`OwnedFd`] by [`take_inherited_fd`] in this process.
static TAKEN_FDS: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

/// Takes ownership of an fd inherited through exec, after checking it is open and was not
/// taken before (a second owner would close it under the first).
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the fd's flags.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not open"),
        ));
    }
    let mut taken = TAKEN_FDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if taken.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} was already taken"),
        ));
    }
    taken.push(fd);
    // SAFETY: the fd is open (checked above) and the number was given to this process by the
    // host that started it, naming one of the fds it passed through exec for this process's
    // exclusive use. Nothing else in this process owns it: an open inherited fd's number is
    // never handed out by a later open, and `TAKEN_FDS` rules out a second `OwnedFd`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fork()`. Returns `None` in the child, the child's pid in the parent. Refuses to run in a
/// multi-threaded process, where the child could inherit locks held by other threads.
pub(crate) fn fork() -> io::Result<Option<i32>> {
    fork_checked(&SingleThreaded::check()?)
}

/// Proof that the process had one thread when checked. The check reads `/proc/self`, which a
/// process that joined another PID namespace's mounts cannot see itself in, so such a process
/// checks first (and starts no thread in between).
#[derive(Debug)]
pub(crate) struct SingleThreaded(());

impl SingleThreaded {
    pub(crate) fn check() -> io::Result<SingleThreaded> {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 {
            return Err(io::Error::other(format!(
                "cannot fork: process has {threads} threads"
            )));
        }
        Ok(SingleThreaded(()))
    }
}

/// `fork()` after an earlier [`SingleThreaded::check`].
pub(crate) fn fork_checked(_checked: &SingleThreaded) -> io::Result<Option<i32>> {
    // SAFETY: the process is single-threaded (checked by the token's maker, and kiln's init
    // code starts no threads), so the child's memory is consistent and every libc function
    // remains usable in it.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// `unshare(flags)`, refusing `CLONE_FILES`.
pub(crate) fn unshare(flags: rustix::thread::UnshareFlags) -> io::Result<()> {
    if flags.contains(rustix::thread::UnshareFlags::FILES) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unshare(CLONE_FILES) is not supported",
        ));
    }
    // SAFETY: rustix's only precondition concerns CLONE_FILES (another thread could be left
    // holding fd numbers of a table this thread no longer shares), refused just above; the
    // namespace flags and CLONE_FS change no fd and no memory.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

fn forwardable_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset/sigdelset only write into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in SYNCHRONOUS_SIGNALS {
            libc::sigdelset(&mut set, sig);
        }
        set
    }
}

/// Blocks every asynchronous signal so that [`wait_for_signal`] can collect them, including
/// those a PID namespace init would otherwise drop for lack of a handler.
pub(crate) fn block_signals() -> io::Result<()> {
    let set = forwardable_signals();
    // SAFETY: `set` is a valid signal set; the old mask is not wanted.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits for one of the signals blocked by [`block_signals`] and returns its number.
pub(crate) fn wait_for_signal() -> io::Result<i32> {
    let set = forwardable_signals();
    loop {
        // SAFETY: `set` is valid; a null info pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig != -1 {
            return Ok(sig);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Gives the process about to exec a clean signal state: nothing blocked and every disposition
/// at its default (SIGPIPE in particular, which the Rust runtime ignores and exec would keep).
pub(crate) fn reset_signals() -> io::Result<()> {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set is valid; the old mask is not wanted.
    let rc = unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut())
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `kill(pid, sig)`; works for real-time signals too, unlike rustix's `Signal`.
pub(crate) fn send_signal(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Marks every fd from 3 up close-on-exec, so the process inherits only stdin/out/err.
pub(crate) fn cloexec_fds_from_3() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk the fd table instead.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC changes only flags; a stale number just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// `execve(path, argv, envp)`; only returns on failure.
pub(crate) fn execve(path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: path, argv and envp are NUL-terminated C strings kept alive by the borrowed
    // slices for the duration of the call, and both arrays end with a null pointer.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Sets IFF_UP on the `lo` interface of the current network namespace.
pub(crate) fn set_loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own, which names a NUL-terminated interface.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `fd` to become readable (data or end of file): `Ok(true)` if
/// it did, `Ok(false)` on timeout.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd owned by this frame for the duration of the call.
    match unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Makes `fds` the only descriptors above 2 that survive the `exec` of `command`: every other
/// one is marked close-on-exec first. For helpers that must not keep a pipe of kiln's open
/// (a step's output pipe created without close-on-exec would otherwise never see end of file
/// while the helper lives). On kernels without `CLOSE_RANGE_CLOEXEC` (before 5.11) only the
/// `fds` part happens.
pub(crate) fn pass_only_fds_across_exec(command: &mut Command, fds: Vec<RawFd>) {
    let hook = move || {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds; it allocates
        // nothing and is async-signal-safe, as required between fork and exec.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        for &fd in &fds {
            // SAFETY: as in `keep_fds_across_exec`.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes syscalls that are async-signal-safe and allocates nothing.
    unsafe { command.pre_exec(hook) };
}

/// Makes the child of `command` enter the network namespace `ns` before it executes (the
/// parent may be multi-threaded; `setns` into a network namespace is for the one thread the
/// child has).
pub(crate) fn enter_network_namespace_before_exec(command: &mut Command, ns: OwnedFd) {
    use std::os::fd::AsFd;
    let hook = move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(io::Error::from)
    };
    // SAFETY: the hook makes one setns system call (async-signal-safe, no allocation) on an
    // fd the closure owns, which stays open until the Command is dropped.
    unsafe { command.pre_exec(hook) };
}

/// Installs a seccomp BPF filter on the calling thread (the process is single-threaded here).
/// Without no_new_privs this needs CAP_SYS_ADMIN, so the caller orders it accordingly.
pub(crate) fn install_seccomp_filter(program: &[crate::seccomp::Instruction]) -> io::Result<()> {
    let filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filters.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filters.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    #[test]
    fn an_inherited_fd_is_taken_once() {
        let (read, _write) = rustix::pipe::pipe().unwrap();
        let raw = read.into_raw_fd();
        let owned = take_inherited_fd(raw).unwrap();
        let again = take_inherited_fd(raw).unwrap_err();
        assert!(again.to_string().contains("already taken"), "{again}");
        drop(owned);
    }

    #[test]
    fn standard_streams_are_never_taken() {
        assert!(take_inherited_fd(2).is_err());
    }

    #[test]
    fn unsharing_the_fd_table_is_refused() {
        let err = unshare(rustix::thread::UnshareFlags::FILES).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
