//! The seccomp filter with the effect of Docker's default profile (moby
//! `profiles/seccomp/default.json`), written as classic BPF.
//!
//! Docker's profile is an allowlist; this is the same policy stated as a denylist: every
//! syscall the profile refuses for a container with the given capabilities returns `EPERM`
//! (`clone3` without CAP_SYS_ADMIN returns `ENOSYS`, so that libc falls back to `clone`, whose
//! namespace flags can be checked). Syscalls newer than the profile stay allowed, so new libc
//! versions keep working; the dangerous ones are all gated by capabilities the sandbox does not
//! grant anyway. Foreign ABIs (32-bit x86 or ARM, x32) could name the same syscalls by other
//! numbers, so they are refused outright. The list is pure data and tested through a small BPF
//! interpreter below; the init installs the program (`sys::install_seccomp_filter`).

use crate::caps::Capabilities;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcodes (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
pub(crate) const RET_ALLOW: u32 = 0x7fff_0000;
pub(crate) const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then six 64-bit args
// (little-endian on every architecture handled here, so an arg's low half comes first).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn arg_low(index: u32) -> u32 {
    16 + 8 * index
}
const fn arg_high(index: u32) -> u32 {
    16 + 8 * index + 4
}

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// x32 syscalls share AUDIT_ARCH_X86_64 but carry this bit in their number.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The namespace flags `clone` may not use without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// The `personality` values Docker's profile allows (PER_LINUX, UNAME26, PER_LINUX32, their
/// combination, and the query 0xffffffff).
const ALLOWED_PERSONALITIES: [u32; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u32 = 40;

/// A syscall by name and number.
type Syscall = (&'static str, libc::c_long);
/// Syscalls allowed only with one of the named capabilities.
type Gated = (&'static [&'static str], Vec<Syscall>);

/// Syscalls Docker's profile allows to no one.
fn always_denied() -> Vec<Syscall> {
    let mut list = vec![
        ("add_key", libc::SYS_add_key),
        ("keyctl", libc::SYS_keyctl),
        ("request_key", libc::SYS_request_key),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("migrate_pages", libc::SYS_migrate_pages),
        ("move_pages", libc::SYS_move_pages),
        ("pivot_root", libc::SYS_pivot_root),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("nfsservctl", libc::SYS_nfsservctl),
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        ("_sysctl", libc::SYS__sysctl),
        ("uselib", libc::SYS_uselib),
        ("ustat", libc::SYS_ustat),
        ("sysfs", libc::SYS_sysfs),
        ("afs_syscall", libc::SYS_afs_syscall),
        ("getpmsg", libc::SYS_getpmsg),
        ("putpmsg", libc::SYS_putpmsg),
        ("security", libc::SYS_security),
        ("tuxcall", libc::SYS_tuxcall),
        ("vserver", libc::SYS_vserver),
    ]);
    list
}

/// Syscalls Docker's profile allows only to a container holding one of the capabilities.
fn capability_gated() -> Vec<Gated> {
    let mut groups: Vec<Gated> = vec![
        (
            &["SYS_ADMIN"],
            vec![
                ("fanotify_init", libc::SYS_fanotify_init),
                ("fsconfig", libc::SYS_fsconfig),
                ("fsmount", libc::SYS_fsmount),
                ("fsopen", libc::SYS_fsopen),
                ("fspick", libc::SYS_fspick),
                ("lookup_dcookie", libc::SYS_lookup_dcookie),
                ("mount", libc::SYS_mount),
                ("mount_setattr", libc::SYS_mount_setattr),
                ("move_mount", libc::SYS_move_mount),
                ("open_tree", libc::SYS_open_tree),
                ("quotactl", libc::SYS_quotactl),
                ("quotactl_fd", libc::SYS_quotactl_fd),
                ("setdomainname", libc::SYS_setdomainname),
                ("sethostname", libc::SYS_sethostname),
                ("setns", libc::SYS_setns),
                ("umount2", libc::SYS_umount2),
                ("unshare", libc::SYS_unshare),
            ],
        ),
        (&["SYS_ADMIN", "SYSLOG"], vec![("syslog", libc::SYS_syslog)]),
        (&["SYS_ADMIN", "BPF"], vec![("bpf", libc::SYS_bpf)]),
        (
            &["SYS_ADMIN", "PERFMON"],
            vec![("perf_event_open", libc::SYS_perf_event_open)],
        ),
        (&["SYS_BOOT"], vec![("reboot", libc::SYS_reboot)]),
        (&["SYS_CHROOT"], vec![("chroot", libc::SYS_chroot)]),
        (
            &["SYS_MODULE"],
            vec![
                ("init_module", libc::SYS_init_module),
                ("finit_module", libc::SYS_finit_module),
                ("delete_module", libc::SYS_delete_module),
            ],
        ),
        (&["SYS_PACCT"], vec![("acct", libc::SYS_acct)]),
        (
            &["SYS_PTRACE"],
            vec![
                ("kcmp", libc::SYS_kcmp),
                ("pidfd_getfd", libc::SYS_pidfd_getfd),
                ("process_madvise", libc::SYS_process_madvise),
            ],
        ),
        (
            &["SYS_TIME"],
            vec![
                ("settimeofday", libc::SYS_settimeofday),
                ("clock_settime", libc::SYS_clock_settime),
            ],
        ),
        (&["SYS_TTY_CONFIG"], vec![("vhangup", libc::SYS_vhangup)]),
        (
            &["SYS_NICE"],
            vec![
                ("get_mempolicy", libc::SYS_get_mempolicy),
                ("mbind", libc::SYS_mbind),
                ("set_mempolicy", libc::SYS_set_mempolicy),
                ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
            ],
        ),
        (
            &["DAC_READ_SEARCH"],
            vec![("open_by_handle_at", libc::SYS_open_by_handle_at)],
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    groups.push((
        &["SYS_RAWIO"],
        vec![("iopl", libc::SYS_iopl), ("ioperm", libc::SYS_ioperm)],
    ));
    groups
}

/// The names of the syscalls refused outright (EPERM) to a process holding `caps`, sorted.
/// `clone` with namespace flags, `clone3`, `personality` with unusual values and
/// `socket(AF_VSOCK)` are refused besides.
pub fn denied_syscalls(caps: Capabilities) -> Vec<&'static str> {
    let mut names: Vec<&str> = denied_numbers(caps).into_iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    names
}

fn denied_numbers(caps: Capabilities) -> Vec<Syscall> {
    let mut list = always_denied();
    for (needed, syscalls) in capability_gated() {
        if !needed.iter().any(|cap| caps.contains(cap)) {
            list.extend(syscalls);
        }
    }
    list
}

/// Assembles the filter for a process holding `caps`.
pub(crate) fn filter(caps: Capabilities) -> Vec<Instruction> {
    let stmt = |code, k| Instruction {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| Instruction { code, jt, jf, k };
    let errno = |e: i32| stmt(RET_K, RET_ERRNO | e as u32);
    let eperm = errno(libc::EPERM);
    let allow = stmt(RET_K, RET_ALLOW);

    let mut program = vec![
        stmt(LD_W_ABS, OFFSET_ARCH),
        jump(JEQ_K, NATIVE_ARCH, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_KILL_PROCESS),
    ]);
    // One `if (nr == N) return EPERM;` per syscall: two instructions each, so no jump ever
    // needs more than the 8-bit offset a BPF jump has.
    for (_, nr) in denied_numbers(caps) {
        program.push(jump(JEQ_K, nr as u32, 0, 1));
        program.push(eperm);
    }
    // A block guarded by `if (nr == N) { block }`, the block ending in returns.
    let mut guarded = |nr: libc::c_long, block: Vec<Instruction>| {
        program.push(jump(JEQ_K, nr as u32, 0, block.len() as u8));
        program.extend(block);
    };
    if !caps.contains("SYS_ADMIN") {
        guarded(
            libc::SYS_clone,
            vec![
                stmt(LD_W_ABS, arg_low(0)),
                stmt(AND_K, CLONE_NAMESPACE_FLAGS),
                jump(JEQ_K, 0, 0, 1),
                allow,
                eperm,
            ],
        );
        guarded(libc::SYS_clone3, vec![errno(libc::ENOSYS)]);
    }
    let mut personality = vec![stmt(LD_W_ABS, arg_high(0)), jump(JEQ_K, 0, 1, 0), eperm];
    personality.push(stmt(LD_W_ABS, arg_low(0)));
    let count = ALLOWED_PERSONALITIES.len();
    for (i, value) in ALLOWED_PERSONALITIES.into_iter().enumerate() {
        // On a match jump over the remaining tests and the EPERM to the ALLOW.
        personality.push(jump(JEQ_K, value, (count - i) as u8, 0));
    }
    personality.extend([eperm, allow]);
    guarded(libc::SYS_personality, personality);
    // The kernel reads the domain as an int: only the low half matters.
    guarded(
        libc::SYS_socket,
        vec![
            stmt(LD_W_ABS, arg_low(0)),
            jump(JEQ_K, AF_VSOCK, 0, 1),
            eperm,
            allow,
        ],
    );
    program.push(allow);
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel would pass the filter: nr, arch and the six arguments.
    struct Call {
        nr: libc::c_long,
        arch: u32,
        args: [u64; 6],
    }

    fn call(nr: libc::c_long, args: &[u64]) -> Call {
        let mut all = [0; 6];
        all[..args.len()].copy_from_slice(args);
        Call {
            nr,
            arch: NATIVE_ARCH,
            args: all,
        }
    }

    /// A classic BPF interpreter for the few opcodes the filter uses.
    fn run(program: &[Instruction], call: &Call) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend((call.nr as u32).to_le_bytes());
        data.extend(call.arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for arg in call.args {
            data.extend(arg.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = program[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    let at = ins.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                AND_K => acc &= ins.k,
                JEQ_K | JGE_K => {
                    let taken = if ins.code == JEQ_K {
                        acc == ins.k
                    } else {
                        acc >= ins.k
                    };
                    pc += if taken { ins.jt } else { ins.jf } as usize;
                }
                RET_K => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn dangerous_syscalls_get_eperm_and_ordinary_ones_pass() {
        let program = filter(Capabilities::docker_default());
        for nr in [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_open_by_handle_at,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_reboot,
            libc::SYS_swapon,
            libc::SYS_settimeofday,
            libc::SYS_userfaultfd,
            libc::SYS_pivot_root,
        ] {
            assert_eq!(run(&program, &call(nr, &[])), EPERM, "syscall {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_chroot,
            libc::SYS_ptrace,
            libc::SYS_name_to_handle_at,
            libc::SYS_setuid,
            libc::SYS_mknodat,
        ] {
            assert_eq!(run(&program, &call(nr, &[])), RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn clone_is_refused_only_with_namespace_flags() {
        let program = filter(Capabilities::docker_default());
        let fork_like = (libc::CLONE_CHILD_SETTID | libc::SIGCHLD) as u64;
        assert_eq!(
            run(&program, &call(libc::SYS_clone, &[fork_like])),
            RET_ALLOW
        );
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            let flags = fork_like | flag as u64;
            assert_eq!(run(&program, &call(libc::SYS_clone, &[flags])), EPERM);
        }
        assert_eq!(
            run(&program, &call(libc::SYS_clone3, &[])),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn personality_and_vsock() {
        let program = filter(Capabilities::docker_default());
        let personality = |value: u64| run(&program, &call(libc::SYS_personality, &[value]));
        assert_eq!(personality(0), RET_ALLOW);
        assert_eq!(personality(0xffff_ffff), RET_ALLOW);
        assert_eq!(personality(0x20008), RET_ALLOW);
        assert_eq!(personality(0x0040000), EPERM); // ADDR_NO_RANDOMIZE
        assert_eq!(personality(1 << 32), EPERM);
        let socket = |domain: u64| run(&program, &call(libc::SYS_socket, &[domain, 1, 0]));
        assert_eq!(socket(libc::AF_INET as u64), RET_ALLOW);
        assert_eq!(socket(40), EPERM);
        assert_eq!(socket((1 << 32) | 40), EPERM);
    }

    #[test]
    fn capabilities_open_their_syscalls_as_in_docker() {
        let admin = Capabilities::docker_default()
            .adjusted(&["SYS_ADMIN".into()], &[])
            .unwrap();
        let program = filter(admin);
        for nr in [libc::SYS_mount, libc::SYS_unshare, libc::SYS_bpf] {
            assert_eq!(run(&program, &call(nr, &[])), RET_ALLOW);
        }
        let flags = libc::CLONE_NEWUSER as u64;
        assert_eq!(run(&program, &call(libc::SYS_clone, &[flags])), RET_ALLOW);
        assert_eq!(run(&program, &call(libc::SYS_keyctl, &[])), EPERM);

        let no_chroot = Capabilities::docker_default()
            .adjusted(&[], &["SYS_CHROOT".into()])
            .unwrap();
        assert_eq!(run(&filter(no_chroot), &call(libc::SYS_chroot, &[])), EPERM);
        assert!(denied_syscalls(Capabilities::docker_default()).contains(&"keyctl"));
        assert!(!denied_syscalls(Capabilities::docker_default()).contains(&"chroot"));
    }

    #[test]
    fn foreign_abis_are_killed() {
        let program = filter(Capabilities::docker_default());
        let mut foreign = call(libc::SYS_read, &[]);
        foreign.arch = 0x4000_0003; // AUDIT_ARCH_I386
        assert_eq!(run(&program, &foreign), RET_KILL_PROCESS);
        #[cfg(target_arch = "x86_64")]
        {
            let x32 = call(libc::SYS_keyctl | X32_SYSCALL_BIT as libc::c_long, &[]);
            assert_eq!(run(&program, &x32), RET_KILL_PROCESS);
        }
        assert!(program.len() < 4096, "the kernel's BPF length limit");
    }
}
