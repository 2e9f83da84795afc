//! Syscall-level escapes, tried by a small static C program (busybox has no applet for most of
//! them): keyctl (keys are not namespaced), user and mount namespaces (the way to regain
//! capabilities), Shocker's `open_by_handle_at`, mount/umount, ptrace and kill of processes
//! outside, bpf, perf, kexec, modules, reboot, swap, the clock, userfaultfd, personality,
//! AF_VSOCK, keystrokes pushed into the terminal kiln runs on (TIOCSTI). Each prints
//! `name=ERRNO` (or `name=ok`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use super::super::harness::Kiln;
use super::{HostWatch, assert_built, build_in, run_in};

const ATTACK_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc == -1) printf("%s=%s\n", name, strerrorname_np(errno));
    else printf("%s=ok\n", name);
}

int main(int argc, char **argv) {
    pid_t outside = argc > 1 ? atoi(argv[1]) : 1;
    report("keyctl", syscall(SYS_keyctl, 1 /* JOIN_SESSION_KEYRING */, "kiln-attack"));
    report("add_key", syscall(SYS_add_key, "user", "kiln", "x", 1, -3 /* session */));
    report("request_key", syscall(SYS_request_key, "user", "kiln", NULL, -3));
    report("unshare_user", unshare(CLONE_NEWUSER));
    report("unshare_mount", unshare(CLONE_NEWNS));
    long child = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (child == 0) _exit(0);
    if (child > 0) waitpid(child, NULL, 0);
    report("clone_newuser", child);
    report("setns", setns(-1, 0));
    report("mount", mount("none", "/mnt", "tmpfs", 0, NULL));
    report("umount2", umount2("/proc", MNT_DETACH));
    report("pivot_root", syscall(SYS_pivot_root, "/", "/"));
    /* Shocker: a handle for inode 2 (a filesystem's root), opened relative to any fd. */
    struct { unsigned int bytes; int type; unsigned char h[8]; } handle = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
    int root = open("/", O_RDONLY);
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, root, &handle, O_RDONLY));
    report("ptrace_init", ptrace(PTRACE_ATTACH, 1, 0, 0));
    report("ptrace_outside", ptrace(PTRACE_ATTACH, outside, 0, 0));
    report("kill_outside", kill(outside, 0));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    report("swapon", swapon("/dev/null", 0));
    report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, NULL));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("personality", personality(0x0040000 /* ADDR_NO_RANDOMIZE */));
    report("socket_vsock", socket(40, SOCK_STREAM, 0));
    report("sethostname", sethostname("x", 1));
    report("open_dev_tty", open("/dev/tty", O_RDWR));
    char key = '#';
    report("tiocsti_stdout", ioctl(1, TIOCSTI, &key));
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    report("fork", pid);
    return 0;
}
"#;

/// Compiles the attack program statically (gcc and libc6-dev come from scripts/setup.sh).
fn attack_binary() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("attack.c"), ATTACK_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o", "attack", "attack.c"])
        .current_dir(dir.path())
        .output()
        .expect("gcc is needed for the syscall attack tests (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("attack")).unwrap()
}

fn results(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every escape refused with the errno Docker's profile gives, during a build and in `kiln run`;
/// with the filter off and CAP_SYS_ADMIN the same calls get past seccomp (to fail on their
/// arguments or succeed harmlessly inside the namespaces), which shows it is the filter that
/// refuses them by default.
#[test]
fn dangerous_syscalls_are_refused_in_run_steps_and_containers() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let outside = std::process::id().to_string();
    let dockerfile = format!(
        "ARG BASE\nFROM ${{BASE}}\nCOPY attack.bin /attack\n\
         RUN /attack {outside} > /result 2>&1; (sleep 987652 &) ; true\n"
    );
    let binary = attack_binary();
    let out = build_in(&k, "attack:1", &dockerfile, &[("attack.bin", &binary)], &[]);
    assert_built(&out);
    let seen = results(&run_in(&k, "attack:1", &["cat", "/result"]));

    let refused = [
        "keyctl",
        "add_key",
        "request_key",
        "unshare_user",
        "unshare_mount",
        "clone_newuser",
        "setns",
        "mount",
        "umount2",
        "pivot_root",
        "open_by_handle_at",
        "bpf",
        "perf_event_open",
        "kexec_load",
        "init_module",
        "finit_module",
        "reboot",
        "swapon",
        "clock_settime",
        "userfaultfd",
        "personality",
        "socket_vsock",
        "sethostname",
        // Allowed by the filter (as in Docker on kernels >= 4.8), refused by the kernel: PID 1
        // is non-dumpable and holds capabilities the process lacks.
        "ptrace_init",
    ];
    for name in refused {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some("EPERM"),
            "{name}: {seen:?}"
        );
    }
    // The test process is in another PID namespace: it does not exist in there.
    for name in ["ptrace_outside", "kill_outside"] {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some("ESRCH"),
            "{name}: {seen:?}"
        );
    }
    assert_eq!(seen.get("fork").map(String::as_str), Some("ok"));
    host.check(&k, "987652");

    // The same in `kiln run`.
    let seen = results(&run_in(&k, "attack:1", &["/attack", &outside]));
    for name in [
        "keyctl",
        "unshare_user",
        "open_by_handle_at",
        "mount",
        "setns",
    ] {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some("EPERM"),
            "run {name}: {seen:?}"
        );
    }
    // Unconfined, with CAP_SYS_ADMIN: setns reaches the kernel, which finds no fd -1.
    let seen = results(&k.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "attack:1",
        "/attack",
        &outside,
    ]));
    assert_eq!(
        seen.get("setns").map(String::as_str),
        Some("EBADF"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("unshare_mount").map(String::as_str),
        Some("ok"),
        "{seen:?}"
    );
    host.check(&k, "987652");
    assert!(Path::new(&host.canary).exists());
}

/// The terminal kiln runs on is out of reach: the process has a session of its own, so
/// `/dev/tty` does not open and TIOCSTI on an inherited terminal fd is refused (it would type
/// commands into the user's shell). kiln runs under `script`, which gives it a pty.
#[test]
fn the_terminal_kiln_runs_on_cannot_be_typed_into() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let dockerfile =
        "ARG BASE\nFROM ${BASE}\nCOPY attack.bin /attack\nRUN /attack > /result 2>&1; true\n";
    let binary = attack_binary();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.path().join("attack.bin"), &binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx.path().join("attack.bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let on_a_terminal = |command: String| {
        let mut script = Command::new("script");
        crate::e2e::harness::in_the_machines_netns(&mut script);
        let out = script
            .args(["-qec", &command, "/dev/null"])
            .env("KILN_ROOT", k.root.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script (util-linux)");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    on_a_terminal(format!(
        "{kiln} build --progress=plain -t tty:1 --build-arg BASE={} {}",
        k.base,
        ctx.path().display()
    ));
    let seen = results(&run_in(&k, "tty:1", &["cat", "/result"]));
    assert_eq!(
        seen.get("open_dev_tty").map(String::as_str),
        Some("ENXIO"),
        "{seen:?}"
    );

    let seen = results(&on_a_terminal(format!("{kiln} run --rm tty:1 /attack")));
    assert_eq!(
        seen.get("open_dev_tty").map(String::as_str),
        Some("ENXIO"),
        "{seen:?}"
    );
    let tiocsti = seen.get("tiocsti_stdout").map(String::as_str);
    // ENOTTY: `kiln run` passes output through a pipe (it is also logged), so the process never
    // holds the caller's terminal at all; EPERM: a terminal that is not the process's controlling
    // one; EIO where the kernel disables TIOCSTI. Never "ok".
    assert!(
        matches!(tiocsti, Some("ENOTTY" | "EPERM" | "EIO")),
        "{seen:?}"
    );
    host.check(&k, super::NO_MARKER);
}
