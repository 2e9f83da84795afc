//! Integration tests for the sandbox. They need the re-exec hook in `main` (hence
//! `harness = false`), root, overlayfs and /bin/busybox (Debian's busybox-static).

use std::io::Read;
use std::path::{Path, PathBuf};

#[path = "sandbox/exec.rs"]
mod exec;
#[path = "sandbox/hardening.rs"]
mod hardening;
#[path = "sandbox/mounts.rs"]
mod mounts;
#[path = "sandbox/network.rs"]
mod network;

use kiln_sandbox::{
    BindMount, ExitCode, FileMount, InitFailure, Mount, NetworkMode, OverlayMount, ProcessSpec,
    SandboxError, SandboxSpec, Stdio, TmpfsMount,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "hostname", "ls", "ps", "nc", "wget", "sleep", "kill", "touch",
    "mkdir", "pwd", "env", "true", "false", "test", "wc", "grep", "head", "ip", "rm", "cut",
    "stty", "unshare", "mount", "umount", "swapoff", "dmesg", "chroot", "mknod", "readlink", "dd",
];

/// Shared read-only layers: `base` has only /bin (busybox), `etc` adds users and groups.
struct Layers {
    _dir: tempfile::TempDir,
    base: PathBuf,
    etc: PathBuf,
}

impl Layers {
    fn build() -> Layers {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
        }
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("etc")).unwrap();
        std::fs::write(
            etc.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1234:2345::/home/builder:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("etc/group"),
            "root:x:0:\nbuilder:x:2345:\nextra:x:3000:builder\n",
        )
        .unwrap();
        Layers {
            _dir: dir,
            base,
            etc,
        }
    }
}

/// One sandbox's writable side.
struct Scratch {
    _dir: tempfile::TempDir,
    upper: PathBuf,
    work: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    Scratch {
        _dir: dir,
        upper,
        work,
    }
}

fn spec(lowers: &[&Path], scratch: &Scratch, network: NetworkMode) -> SandboxSpec {
    SandboxSpec {
        lower_dirs: lowers.iter().map(|p| p.to_path_buf()).collect(),
        upper_dir: scratch.upper.clone(),
        work_dir: scratch.work.clone(),
        network,
        hostname: "kiln-test".into(),
        mounts: vec![],
        security: Default::default(),
        resources: Default::default(),
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        shm_size: None,
        ulimits: Vec::new(),
        names: Default::default(),
    }
}

fn process(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: None,
        terminal: false,
    }
}

struct Output {
    code: ExitCode,
    stdout: String,
    stderr: String,
}

fn run(spec: &SandboxSpec, process: &ProcessSpec) -> Result<Output, SandboxError> {
    let mut child = kiln_sandbox::spawn(spec, process, Stdio::piped())?;
    let mut stderr_pipe = child.take_stderr().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        stderr_pipe.read_to_string(&mut s).map(|_| s)
    });
    let mut stdout = String::new();
    child
        .take_stdout()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let code = child.wait()?;
    Ok(Output {
        code,
        stdout,
        stderr: stderr.join().unwrap().unwrap(),
    })
}

fn run_script(layers: &[&Path], network: NetworkMode, script: &str) -> Result<Output, String> {
    let scratch = scratch();
    run(&spec(layers, &scratch, network), &process(script)).map_err(|e| e.to_string())
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn expect(what: &str, condition: bool) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(format!("{what}: false"))
    }
}

fn exit_codes(l: &Layers) -> Result<(), String> {
    for (script, want) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
    ] {
        let out = run_script(&[&l.base], NetworkMode::None, script)?;
        expect_eq(script, out.code, ExitCode(want))?;
    }
    Ok(())
}

fn exact_environment(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut p = process("echo \"$FOO\"; env");
    p.env.push("FOO=bar baz".into());
    let out = run(&spec(&[&l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    expect_eq("$FOO", out.stdout.lines().next(), Some("bar baz"))?;
    expect("PATH passed", out.stdout.lines().any(|l| l == "PATH=/bin"))?;
    let leaked: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("CARGO"))
        .collect();
    expect_eq("host variables", leaked, vec![])
}

fn working_directory_is_created(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut p = process("pwd");
    p.cwd = "/work/dir".into();
    let out = run(&spec(&[&l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    expect_eq("pwd", out.stdout.as_str(), "/work/dir\n")?;
    expect("cwd in upper", s.upper.join("work/dir").is_dir())
}

fn users_numeric_and_named(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut p = process("id -u; id -g; id -G");
    p.user = Some("1000:1000".into());
    let out = run(&spec(&[&l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    expect_eq("1000:1000", out.stdout.as_str(), "1000\n1000\n1000\n")?;

    let s = scratch();
    p.user = Some("builder".into());
    let out =
        run(&spec(&[&l.etc, &l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    expect_eq("builder", out.stdout.as_str(), "1234\n2345\n2345 3000\n")?;

    let s = scratch();
    p.user = Some("nobody-here".into());
    match run(&spec(&[&l.etc, &l.base], &s, NetworkMode::None), &p) {
        Err(SandboxError::Init(InitFailure::UserNotFound { user })) => {
            expect_eq("user", user.as_str(), "nobody-here")
        }
        other => Err(format!("unknown user: got {:?}", other.map(|o| o.code))),
    }
}

fn fresh_pid_namespace(l: &Layers) -> Result<(), String> {
    let out = run_script(
        &[&l.base],
        NetworkMode::None,
        "echo $$; ls /proc | grep -c '^[0-9]'",
    )?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    expect_eq("shell pid (init is 1)", lines.first().copied(), Some("2"))?;
    let count: u32 = lines
        .get(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad output {lines:?}"))?;
    expect(&format!("few processes visible ({count})"), count <= 5)
}

fn hostname_and_hosts(l: &Layers) -> Result<(), String> {
    let out = run_script(&[&l.base], NetworkMode::None, "hostname; cat /etc/hosts")?;
    expect_eq("hostname", out.stdout.lines().next(), Some("kiln-test"))?;
    expect(
        "hosts names the host",
        out.stdout.contains("127.0.0.1\tkiln-test"),
    )?;
    expect(
        "hosts names localhost",
        out.stdout.contains("127.0.0.1\tlocalhost"),
    )
}

fn devices_and_proc(l: &Layers) -> Result<(), String> {
    let script = "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c \
                  && test -c /dev/pts/ptmx && test -L /dev/ptmx && touch /dev/shm/x \
                  && test -r /proc/self/status && test -L /dev/stdout && echo ok";
    let out = run_script(&[&l.base], NetworkMode::None, script)?;
    expect_eq(
        &format!("devices (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        "4\n4\nok\n",
    )
}

fn writes_land_in_upper(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let out = run(
        &spec(&[&l.base], &s, NetworkMode::None),
        &process("echo data > /new; rm /bin/cat"),
    )
    .map_err(|e| e.to_string())?;
    expect_eq("exit", out.code, ExitCode(0))?;
    expect_eq(
        "upper file",
        std::fs::read_to_string(s.upper.join("new")).ok(),
        Some("data\n".into()),
    )?;
    expect(
        "lower untouched",
        !l.base.join("new").exists() && l.base.join("bin/cat").exists(),
    )
}

fn missing_executable_is_a_clear_error(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut p = process("");
    p.args = vec!["no-such-tool".into()];
    match run(&spec(&[&l.base], &s, NetworkMode::None), &p) {
        Err(e @ SandboxError::Init(InitFailure::ExecutableNotFound { .. })) => expect_eq(
            "message",
            e.to_string().as_str(),
            "exec: \"no-such-tool\": executable file not found in $PATH",
        )?,
        other => return Err(format!("got {:?}", other.map(|o| o.code))),
    }
    let left: Vec<_> = std::fs::read_dir(&s.upper).unwrap().collect();
    expect_eq("stubs cleaned after failure", left.len(), 0)?;
    p.args = vec!["/bin/nothing".into()];
    match run(&spec(&[&l.base], &s, NetworkMode::None), &p) {
        Err(SandboxError::Init(InitFailure::Exec { path, .. })) => {
            expect_eq("path", path.as_str(), "/bin/nothing")
        }
        other => Err(format!("got {:?}", other.map(|o| o.code))),
    }
}

fn inherited_fds_are_closed(l: &Layers) -> Result<(), String> {
    // A descriptor deliberately left inheritable by the caller must still not get through.
    let leaked = std::fs::File::open("/bin/busybox").unwrap();
    rustix::io::fcntl_setfd(&leaked, rustix::io::FdFlags::empty()).unwrap();
    let s = scratch();
    let mut p = process("");
    p.args = vec!["ls".into(), "/proc/self/fd".into()];
    let out = run(&spec(&[&l.base], &s, NetworkMode::None), &p).map_err(|e| e.to_string())?;
    drop(leaked);
    // 0-2 plus the one ls opens to read the directory.
    expect_eq(
        "fds",
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "1", "2", "3"],
    )
}

type Case = fn(&Layers) -> Result<(), String>;

fn main() {
    kiln_sandbox::maybe_run_init();
    // Rootless runs exercise the user-namespace path; host-side overlay mounts need root.
    let root = rustix::process::geteuid().is_root();
    if root {
        kiln_sandbox::enter_private_mount_namespace().expect("private mount namespace");
    }
    let layers = Layers::build();
    let cases: &[(&str, Case)] = &[
        ("exit_codes", exit_codes),
        ("exact_environment", exact_environment),
        ("working_directory_is_created", working_directory_is_created),
        ("users_numeric_and_named", users_numeric_and_named),
        ("fresh_pid_namespace", fresh_pid_namespace),
        ("hostname_and_hosts", hostname_and_hosts),
        ("devices_and_proc", devices_and_proc),
        ("isolated_network", network::isolated_network),
        (
            "host_port_reachable_only_with_host_network",
            network::host_port_reachable_only_with_host_network,
        ),
        (
            "default_network_hides_host_loopback",
            network::default_network_hides_host_loopback,
        ),
        ("writes_land_in_upper", writes_land_in_upper),
        ("mount_stubs_are_cleaned", mounts::mount_stubs_are_cleaned),
        (
            "missing_executable_is_a_clear_error",
            missing_executable_is_a_clear_error,
        ),
        ("inherited_fds_are_closed", inherited_fds_are_closed),
        ("bind_mounts", mounts::bind_mounts),
        ("tmpfs_and_file_mounts", mounts::tmpfs_and_file_mounts),
        ("overlay_mounts_on_host", mounts::overlay_mounts_on_host),
        (
            "exec_joins_a_running_sandbox",
            exec::exec_joins_a_running_sandbox,
        ),
        (
            "terminal_process_owns_its_pty",
            exec::terminal_process_owns_its_pty,
        ),
        (
            "capabilities_are_dockers",
            hardening::capabilities_are_dockers,
        ),
        (
            "seccomp_refuses_what_docker_refuses",
            hardening::seccomp_refuses_what_docker_refuses,
        ),
        (
            "kernel_paths_are_masked_and_read_only",
            hardening::kernel_paths_are_masked_and_read_only,
        ),
        ("device_nodes_are_inert", hardening::device_nodes_are_inert),
        (
            "working_directory_stays_in_the_root",
            hardening::working_directory_stays_in_the_root,
        ),
        ("inits_are_not_dumpable", hardening::inits_are_not_dumpable),
        ("read_only_root", hardening::read_only_root),
        (
            "magic_link_programs_are_refused",
            hardening::magic_link_programs_are_refused,
        ),
        ("cgroup_limits", hardening::cgroup_limits),
        (
            "the_process_has_a_session_of_its_own",
            hardening::the_process_has_a_session_of_its_own,
        ),
    ];
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in cases {
        // Rootless sandboxes map a single id, so other users inside need subuid ranges (later).
        let needs_root = matches!(
            *name,
            "overlay_mounts_on_host"
                | "users_numeric_and_named"
                | "exec_joins_a_running_sandbox"
                | "cgroup_limits"
        );
        if filter.as_deref().is_some_and(|f| !name.contains(f)) || (needs_root && !root) {
            continue;
        }
        match case(&layers) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(message) => {
                failed += 1;
                println!("test {name} ... FAILED: {message}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
