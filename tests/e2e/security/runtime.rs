//! Escapes through the runtime itself: the kiln binary behind `/proc/self/exe` (runc
//! CVE-2019-5736), a working directory through a leaked descriptor (runc CVE-2024-21626),
//! writes through /proc and /sys, an image's /dev/null swapped for a link to a sysctl (runc
//! CVE-2025-31133 class), device nodes for the host's disk, and resource exhaustion against
//! `kiln run`'s limits. Plus the privileges a RUN step and a container get by default.

use std::os::unix::fs::MetadataExt;

use super::super::harness::{Kiln, stdout};
use super::{HostWatch, assert_built, assert_failed_with, build_in, run_in};

/// Docker's default capability mask as /proc/self/status prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
fn runc_cve_2019_5736_the_kiln_binary_cannot_be_reached_or_overwritten() {
    let k = Kiln::new();
    let host = HostWatch::new();
    // Every way a process could try to open the runtime's binary, recorded in /result.
    let dockerfile = "ARG BASE\nFROM ${BASE}\n\
        RUN for p in /proc/self/exe /proc/1/exe /proc/2/exe; do \
              (echo pwned > $p) 2>/dev/null && echo \"wrote $p\"; \
              readlink $p >/dev/null 2>&1 && echo \"resolved $p\"; \
            done > /result; (sleep 987653 &); true\n";
    assert_built(&build_in(&k, "exe:1", dockerfile, &[], &[]));
    // The shell's own exe is busybox in the image; PID 1's (kiln) stays out of reach.
    assert_eq!(
        run_in(&k, "exe:1", &["cat", "/result"]),
        "resolved /proc/self/exe\nresolved /proc/2/exe\n"
    );
    host.check(&k, "987653");

    // Executing the init's binary directly, or as a script's interpreter, is refused clearly.
    for (dockerfile, files) in [
        (
            "ARG BASE\nFROM ${BASE}\nRUN [\"/proc/self/exe\", \"--version\"]\n",
            vec![],
        ),
        (
            "ARG BASE\nFROM ${BASE}\nCOPY evil.bin /evil\nRUN [\"/evil\"]\n",
            vec![("evil.bin", &b"#!/proc/self/exe\n"[..])],
        ),
    ] {
        let out = build_in(&k, "exe:2", dockerfile, &files, &[]);
        assert_failed_with(&out, &["magic link", "Dockerfile:"]);
    }
    let out = k.cmd(&["run", "--rm", "exe:1", "/proc/1/exe"]);
    assert_failed_with(&out, &["magic link"]);
    host.check(&k, "987653");
}

#[test]
fn runc_cve_2024_21626_workdir_and_descriptors_stay_inside() {
    let k = Kiln::new();
    let host = HostWatch::new();
    // A descriptor the init does not hold is simply not there; magic links are refused.
    let dockerfile = "ARG BASE\nFROM ${BASE}\nWORKDIR /proc/self/fd/7\nRUN pwd\n";
    let out = build_in(&k, "wd:1", dockerfile, &[], &[]);
    assert_failed_with(&out, &["working directory /proc/self/fd/7", "Dockerfile:4"]);
    for workdir in ["/proc/self/cwd", "/proc/1/root", "/proc/self/fd/2"] {
        let dockerfile = format!("ARG BASE\nFROM ${{BASE}}\nWORKDIR {workdir}\nRUN pwd\n");
        let out = build_in(&k, "wd:1", &dockerfile, &[], &[]);
        assert_failed_with(&out, &["working directory", "magic link", "Dockerfile:4"]);
    }
    let out = k.cmd(&["run", "--rm", "-w", "/proc/self/root/tmp", &k.base, "pwd"]);
    assert_failed_with(&out, &["magic link"]);

    // Only stdin, stdout and stderr reach the process (ls adds the one it reads with).
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN ls /proc/self/fd > /fds; for fd in 4 5 6 7 8 9; do test -e /proc/self/fd/$fd && echo $fd >> /escaped; done; true\n";
    assert_built(&build_in(&k, "wd:2", dockerfile, &[], &[]));
    assert_eq!(run_in(&k, "wd:2", &["cat", "/fds"]), "0\n1\n2\n3\n");
    let root_entries = run_in(&k, "wd:2", &["ls", "/"]);
    assert!(
        !root_entries.contains("escaped"),
        "fds above 2: {root_entries}"
    );
    host.check(&k, super::NO_MARKER);
}

#[test]
fn kernel_interfaces_are_masked_or_read_only() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN { \
        (echo 0 > /proc/sys/kernel/sysrq) 2>/dev/null && echo sysrq-sysctl; \
        (echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core_pattern; \
        (echo b > /proc/sysrq-trigger) 2>/dev/null && echo sysrq-trigger; \
        (echo /tmp/pwn > /sys/kernel/uevent_helper) 2>/dev/null && echo uevent_helper; \
        (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null && echo drop_caches; \
        echo kcore=$(head -c 4096 /proc/kcore 2>/dev/null | wc -c); \
        echo keys=$(cat /proc/keys | wc -c); \
        echo sched_debug=$(cat /proc/sched_debug 2>/dev/null | wc -c); \
        echo firmware=$(ls -A /sys/firmware | wc -l); \
        echo ostype=$(cat /proc/sys/kernel/ostype); \
        } > /result 2>&1; true\n";
    assert_built(&build_in(&k, "proc:1", dockerfile, &[], &[]));
    assert_eq!(
        run_in(&k, "proc:1", &["cat", "/result"]),
        "kcore=0\nkeys=0\nsched_debug=0\nfirmware=0\nostype=Linux\n"
    );
    host.check(&k, super::NO_MARKER);
}

#[test]
fn an_image_cannot_replace_dev_null_or_reach_the_host_disk() {
    let k = Kiln::new();
    let host = HostWatch::new();
    // runc CVE-2025-31133 class: the image ships /dev/null as a link to a sysctl; kiln's /dev
    // is its own tmpfs, so writes to /dev/null go to the real null device.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir(ctx.path().join("dev")).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", ctx.path().join("dev/null"))
        .unwrap();
    let root_dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = (rustix::fs::major(root_dev), rustix::fs::minor(root_dev));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "ARG BASE\nFROM ${{BASE}}\nCOPY dev /dev\n\
             RUN echo '|/tmp/pwn' > /dev/null; test -c /dev/null && echo null-is-a-device > /result; \
             mknod /hostdisk b {major} {minor} && echo made >> /result; \
             (head -c 512 /hostdisk > /dev/null) 2>/dev/null && echo read-host-disk >> /result; \
             (echo x > /hostdisk) 2>/dev/null && echo wrote-host-disk >> /result; \
             mknod /dev/kmem c 1 2 && ((head -c 1 /dev/kmem > /dev/null) 2>/dev/null && echo read-kmem >> /result); \
             true\n"
        ),
    )
    .unwrap();
    assert_built(&super::build_context(&k, "dev:1", ctx.path(), &[]));
    assert_eq!(
        run_in(&k, "dev:1", &["cat", "/result"]),
        "null-is-a-device\nmade\n"
    );
    // The device node is an inert part of the image; opening it fails in a container too.
    let out = k.cmd(&["run", "--rm", "dev:1", "head", "-c", "1", "/hostdisk"]);
    assert!(!out.status.success());
    host.check(&k, super::NO_MARKER);
}

#[test]
fn run_steps_and_containers_get_dockers_privileges_and_limits() {
    let k = Kiln::new();
    let host = HostWatch::new();
    let status = "grep -E '^(CapBnd|CapEff|CapPrm|CapInh|NoNewPrivs|Seccomp):' /proc/self/status";
    let dockerfile = format!(
        "ARG BASE\nFROM ${{BASE}}\nRUN {status} > /root-status\nUSER 1000\nRUN {status} > /tmp/user-status\n"
    );
    assert_built(&build_in(&k, "caps:1", &dockerfile, &[], &[]));
    let root = run_in(&k, "caps:1", &["cat", "/root-status"]);
    for want in [
        format!("CapBnd:\t{DOCKER_CAPS}"),
        format!("CapEff:\t{DOCKER_CAPS}"),
        "CapInh:\t0000000000000000".into(),
        "NoNewPrivs:\t0".into(),
        "Seccomp:\t2".into(),
    ] {
        assert!(root.contains(&want), "RUN as root lacks {want:?}:\n{root}");
    }
    let user = run_in(&k, "caps:1", &["cat", "/tmp/user-status"]);
    assert!(user.contains("CapEff:\t0000000000000000"), "{user}");
    assert!(user.contains(&format!("CapBnd:\t{DOCKER_CAPS}")), "{user}");

    let run = |flags: &[&str], cmd: &str| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[k.base.as_str(), "sh", "-c", cmd]);
        k.cmd(&args)
    };
    let out = run(
        &["--cap-drop", "ALL", "--security-opt", "no-new-privileges"],
        status,
    );
    let text = stdout(&out);
    assert!(
        text.contains("CapEff:\t0000000000000000") && text.contains("NoNewPrivs:\t1"),
        "{text}"
    );
    let out = run(
        &["--cap-add", "NET_ADMIN"],
        "ip link set lo mtu 1500 && echo ok",
    );
    assert_eq!(stdout(&out), "ok\n", "{}", super::stderr(&out));
    let out = run(&["--read-only"], "touch /x 2>/dev/null || echo read-only");
    assert_eq!(stdout(&out), "read-only\n");

    // A fork bomb against --pids-limit, and memory against --memory: contained, and nothing
    // left behind.
    let out = run(
        &["--pids-limit", "16"],
        "i=0; while [ $i -lt 64 ]; do sleep 987654 & i=$((i+1)); done; echo started",
    );
    assert!(
        super::stderr(&out).contains("can't fork"),
        "{}",
        super::stderr(&out)
    );
    let out = run(
        &["--memory", "16m"],
        "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo dd=$?",
    );
    assert_eq!(stdout(&out), "dd=137\n", "{}", super::stderr(&out));
    host.check(&k, "987654");

    for (flags, needle) in [
        (&["--cap-add", "FLY"][..], "unknown capability"),
        (
            &["--security-opt", "apparmor=x"][..],
            "unsupported security option",
        ),
        (&["--memory", "1k"][..], "minimum memory"),
    ] {
        let out = run(flags, "true");
        assert_failed_with(&out, &[needle]);
    }
}
