//! The sandbox's hardening as the process sees it: Docker's capability sets, the seccomp
//! filter, no_new_privs, masked and read-only kernel paths, inert device nodes, a working
//! directory that cannot leave the root, non-dumpable inits, a read-only root, cgroup limits.

use super::*;
use kiln_sandbox::{Capabilities, ResourceLimits, SeccompProfile, SecurityOptions};

/// `CapBnd` of a default Docker container.
const DOCKER_CAPS: &str = "00000000a80425fb";

fn status_field(stdout: &str, field: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn run_with(
    l: &Layers,
    security: SecurityOptions,
    user: Option<&str>,
    script: &str,
) -> Result<Output, String> {
    let s = scratch();
    let mut sandbox = spec(&[&l.etc, &l.base], &s, NetworkMode::None);
    sandbox.security = security;
    let mut p = process(script);
    p.user = user.map(str::to_string);
    run(&sandbox, &p).map_err(|e| e.to_string())
}

pub(crate) fn capabilities_are_dockers(l: &Layers) -> Result<(), String> {
    let status = "cat /proc/self/status";
    let out = run_with(l, SecurityOptions::default(), None, status)?;
    for (field, want) in [
        ("CapBnd", DOCKER_CAPS),
        ("CapEff", DOCKER_CAPS),
        ("CapPrm", DOCKER_CAPS),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "0"),
        ("Seccomp", "2"),
    ] {
        expect_eq(
            field,
            status_field(&out.stdout, field).as_deref(),
            Some(want),
        )?;
    }
    if rustix::process::geteuid().is_root() {
        // A non-root user keeps the bounding set (for setuid tools) but holds nothing.
        let out = run_with(l, SecurityOptions::default(), Some("1234"), status)?;
        for (field, want) in [
            ("CapBnd", DOCKER_CAPS),
            ("CapEff", "0000000000000000"),
            ("CapPrm", "0000000000000000"),
        ] {
            expect_eq(
                &format!("user {field}"),
                status_field(&out.stdout, field).as_deref(),
                Some(want),
            )?;
        }
    }
    let tweaked = SecurityOptions {
        capabilities: Capabilities::docker_default()
            .adjusted(&["NET_ADMIN".into()], &["ALL".into()])
            .unwrap(),
        no_new_privileges: true,
        seccomp: SeccompProfile::Unconfined,
        read_only_root: false,
    };
    let out = run_with(l, tweaked, None, status)?;
    for (field, want) in [
        ("CapBnd", "0000000000001000"),
        ("CapEff", "0000000000001000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "0"),
    ] {
        expect_eq(
            &format!("tweaked {field}"),
            status_field(&out.stdout, field).as_deref(),
            Some(want),
        )?;
    }
    Ok(())
}

pub(crate) fn seccomp_refuses_what_docker_refuses(l: &Layers) -> Result<(), String> {
    // Each must fail with EPERM ("Operation not permitted"; busybox mount says "permission
    // denied").
    for script in [
        "unshare -U true",
        "unshare -m true",
        "mount -t tmpfs none /mnt",
        "umount /proc",
        "swapoff /dev/null",
        "dmesg",
    ] {
        let out = run_with(l, SecurityOptions::default(), None, script)?;
        expect(
            &format!(
                "{script:?} refused (code {}, stderr {:?})",
                out.code, out.stderr
            ),
            !out.code.success()
                && (out.stderr.contains("not permitted")
                    || out.stderr.contains("permission denied")),
        )?;
    }
    // Ordinary work and fork/clone without namespace flags still go through.
    let out = run_with(
        l,
        SecurityOptions::default(),
        None,
        "(echo sub) && sleep 0 & wait; chroot / true && echo chroot-ok",
    )?;
    expect_eq("ordinary syscalls", out.stdout.as_str(), "sub\nchroot-ok\n")?;
    // CAP_SYS_ADMIN opens mount, as in Docker's profile.
    let admin = SecurityOptions {
        capabilities: Capabilities::docker_default()
            .adjusted(&["SYS_ADMIN".into()], &[])
            .unwrap(),
        ..Default::default()
    };
    let out = run_with(
        l,
        admin,
        None,
        "mkdir -p /mnt && mount -t tmpfs none /mnt && echo ok",
    )?;
    expect_eq(
        &format!("mount with SYS_ADMIN ({})", out.stderr),
        out.stdout.as_str(),
        "ok\n",
    )
}

pub(crate) fn kernel_paths_are_masked_and_read_only(l: &Layers) -> Result<(), String> {
    let script = "\
        echo kcore=$(head -c 64 /proc/kcore 2>/dev/null | wc -c); \
        echo keys=$(cat /proc/keys | wc -c); \
        echo timer_list=$(cat /proc/timer_list | wc -c); \
        echo firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l); \
        echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo sysctl-written; \
        echo c > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written; \
        touch /sys/kernel/x 2>/dev/null && echo sys-written; \
        cat /proc/sys/kernel/ostype";
    let out = run_with(l, SecurityOptions::default(), None, script)?;
    expect_eq(
        &format!("masked paths (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        "kcore=0\nkeys=0\ntimer_list=0\nfirmware=0\nLinux\n",
    )
}

pub(crate) fn device_nodes_are_inert(l: &Layers) -> Result<(), String> {
    // CAP_MKNOD is in Docker's set: the node can be made, but not opened anywhere writable.
    let script = "\
        mknod /sda b 8 0 && echo made; \
        head -c 1 /sda >/dev/null 2>&1 || echo root-refused; \
        mknod /dev/sda b 8 0 && (head -c 1 /dev/sda >/dev/null 2>&1 || echo dev-refused); \
        mknod /dev/shm/mem c 1 1 && (head -c 1 /dev/shm/mem >/dev/null 2>&1 || echo shm-refused); \
        echo x > /dev/null && echo null-works";
    let out = run_with(l, SecurityOptions::default(), None, script)?;
    // In a user namespace (rootless) the kernel refuses mknod of devices outright.
    let want = if rustix::process::geteuid().is_root() {
        "made\nroot-refused\ndev-refused\nshm-refused\nnull-works\n"
    } else {
        "root-refused\nnull-works\n"
    };
    expect_eq(
        &format!("device nodes (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        want,
    )
}

pub(crate) fn working_directory_stays_in_the_root(l: &Layers) -> Result<(), String> {
    for cwd in ["/proc/self/fd/3", "/proc/1/cwd/x", "/proc/self/root/etc"] {
        let s = scratch();
        let mut p = process("pwd");
        p.cwd = cwd.into();
        match run(&spec(&[&l.base], &s, NetworkMode::None), &p) {
            Err(SandboxError::Init(failure @ InitFailure::Setup { .. })) => expect(
                &format!("{cwd}: {failure}"),
                failure.to_string().contains("magic link"),
            )?,
            other => return Err(format!("{cwd}: got {:?}", other.map(|o| o.stdout))),
        }
    }
    // `..` cannot climb out either: it stops at the root, as in the kernel.
    let s = scratch();
    let mut p = process("pwd");
    p.cwd = "/../../tmp/../work".into();
    let out = run(&spec(&[&l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    expect_eq("pwd", out.stdout.as_str(), "/work\n")
}

pub(crate) fn inits_are_not_dumpable(l: &Layers) -> Result<(), String> {
    let script = "\
        readlink /proc/1/exe || echo exe-hidden; \
        readlink /proc/1/fd/0 >/dev/null 2>&1 || echo fd-hidden; \
        ls /proc/1/root/ >/dev/null 2>&1 || echo root-hidden; \
        echo x > /proc/1/exe 2>/dev/null || echo exe-unwritable; \
        cat /proc/1/environ >/dev/null 2>&1 || echo environ-hidden";
    let out = run_with(l, SecurityOptions::default(), None, script)?;
    expect_eq(
        &format!("init's /proc entries (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        "exe-hidden\nfd-hidden\nroot-hidden\nexe-unwritable\nenviron-hidden\n",
    )
}

pub(crate) fn read_only_root(l: &Layers) -> Result<(), String> {
    let security = SecurityOptions {
        read_only_root: true,
        ..Default::default()
    };
    let out = run_with(
        l,
        security,
        None,
        "touch /x 2>/dev/null || echo root-ro; touch /dev/shm/x && echo shm-rw",
    )?;
    expect_eq("read-only root", out.stdout.as_str(), "root-ro\nshm-rw\n")
}

pub(crate) fn cgroup_limits(l: &Layers) -> Result<(), String> {
    let limited = |limits: ResourceLimits, script: &str| {
        let s = scratch();
        let mut sandbox = spec(&[&l.base], &s, NetworkMode::None);
        sandbox.resources = limits;
        run(&sandbox, &process(script)).map_err(|e| e.to_string())
    };
    let pids = ResourceLimits {
        pids: Some(4),
        ..Default::default()
    };
    let out = limited(pids, "for i in 1 2 3 4 5 6; do sleep 1 & done; wait")?;
    expect(
        &format!("fork refused past pids.max (stderr {:?})", out.stderr),
        out.stderr.contains("fork"),
    )?;
    let memory = ResourceLimits {
        memory_bytes: Some(16 << 20),
        ..Default::default()
    };
    // dd's 48 MiB buffer is more than memory + swap (twice the limit, as Docker allows).
    let out = limited(
        memory,
        "dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null; echo dd=$?",
    )?;
    expect_eq(
        "dd killed by the OOM killer",
        out.stdout.as_str(),
        "dd=137\n",
    )?;

    // The limits are where the kernel reads them, and the cgroup goes with the sandbox.
    let s = scratch();
    let mut sandbox = spec(&[&l.base], &s, NetworkMode::None);
    sandbox.resources = ResourceLimits {
        memory_bytes: Some(64 << 20),
        pids: Some(50),
        nano_cpus: Some(500_000_000),
    };
    let child = kiln_sandbox::spawn(&sandbox, &process("sleep 1"), Stdio::null())
        .map_err(|e| e.to_string())?;
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dir_of = |controller: &str| -> PathBuf {
        let line = own
            .lines()
            .find(|line| {
                let controllers = line.split(':').nth(1).unwrap_or("");
                if unified {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == controller)
                }
            })
            .unwrap_or_default();
        let path = line
            .splitn(3, ':')
            .nth(2)
            .unwrap_or("/")
            .trim_start_matches('/');
        if unified {
            Path::new("/sys/fs/cgroup").join(path)
        } else {
            Path::new("/sys/fs/cgroup").join(controller).join(path)
        }
    };
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(dir_of(controller).join(file))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("<{e}>"))
    };
    let dirs = [dir_of("memory"), dir_of("pids"), dir_of("cpu")];
    let checks = if unified {
        vec![
            (
                "memory",
                read("memory", "memory.max"),
                "67108864".to_string(),
            ),
            ("pids", read("pids", "pids.max"), "50".to_string()),
            ("cpu", read("cpu", "cpu.max"), "50000 100000".to_string()),
        ]
    } else {
        vec![
            (
                "memory",
                read("memory", "memory.limit_in_bytes"),
                "67108864".to_string(),
            ),
            ("pids", read("pids", "pids.max"), "50".to_string()),
            ("cpu", read("cpu", "cpu.cfs_quota_us"), "50000".to_string()),
        ]
    };
    let code = child.wait().map_err(|e| e.to_string())?;
    expect_eq("exit", code, ExitCode(0))?;
    for (what, got, want) in checks {
        expect_eq(what, got, want)?;
    }
    for dir in dirs {
        expect(
            &format!("cgroup {} removed", dir.display()),
            dir.to_string_lossy().contains("kiln-") && !dir.exists(),
        )?;
    }
    Ok(())
}

pub(crate) fn magic_link_programs_are_refused(l: &Layers) -> Result<(), String> {
    // A script whose interpreter is the host's kiln binary, as in CVE-2019-5736.
    let script_layer = tempfile::tempdir().unwrap();
    std::fs::write(script_layer.path().join("evil"), "#!/proc/self/exe\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        script_layer.path().join("evil"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for program in ["/proc/self/exe", "/proc/1/exe", "/evil"] {
        let s = scratch();
        let mut p = process("");
        p.args = vec![program.into()];
        match run(
            &spec(&[script_layer.path(), &l.base], &s, NetworkMode::None),
            &p,
        ) {
            Err(SandboxError::Init(failure @ InitFailure::Exec { .. })) => expect(
                &format!("{program}: {failure}"),
                failure.to_string().contains("magic link"),
            )?,
            other => return Err(format!("{program}: got {:?}", other.map(|o| o.code))),
        }
    }
    Ok(())
}

pub(crate) fn the_process_has_a_session_of_its_own(l: &Layers) -> Result<(), String> {
    // Field 6 of /proc/PID/stat is the session: the shell's own pid (2; the init is 1), so no
    // controlling terminal is shared with kiln. Orphans in other sessions are still reaped.
    let script = "cut -d' ' -f6 /proc/self/stat; (sh -c 'sleep 0' &); sleep 0.2; \
                  grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l";
    let out = run_with(l, SecurityOptions::default(), None, script)?;
    expect_eq("session, zombies", out.stdout.as_str(), "2\n0\n")
}
