//! Integration tests for the sandbox. They need the re-exec hook in `main` (hence
//! `harness = false`), root, overlayfs and /bin/busybox (Debian's busybox-static).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

#[path = "sandbox/hardening.rs"]
mod hardening;

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

fn isolated_network(l: &Layers) -> Result<(), String> {
    let out = run_script(
        &[&l.base],
        NetworkMode::None,
        "cat /proc/net/dev; ip -o link show lo",
    )?;
    let interfaces: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|') && name.parse::<u32>().is_err())
        .collect();
    expect_eq("interfaces", interfaces, vec!["lo"])?;
    expect(
        &format!("lo is up: {}", out.stdout),
        out.stdout.contains(",UP"),
    )
}

fn host_port_reachable_only_with_host_network(l: &Layers) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().unwrap().port();
    // Accept and hang up at once: nc only exits when the peer closes.
    let server = std::thread::spawn(move || listener.accept().is_ok());
    let script = format!("nc -w 2 127.0.0.1 {port} </dev/null && echo connected");
    let out = run_script(&[&l.base], NetworkMode::None, &script)?;
    expect_eq("None reaches host", out.stdout.as_str(), "")?;
    let out = run_script(&[&l.base], NetworkMode::Host, &script)?;
    expect_eq(
        &format!("Host reaches host (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        "connected\n",
    )?;
    expect("listener saw the connection", server.join().unwrap())
}

/// The default network: lo and eth0 (slirp4netns' 10.0.2.100), the hostname on that address,
/// the host's loopback unreachable both directly and through the gateway, and no slirp4netns
/// left once the sandbox ended.
fn default_network_hides_host_loopback(l: &Layers) -> Result<(), String> {
    if let Err(e) = kiln_sandbox::network_helper() {
        // Missing (scripts/setup.sh installs it), or /dev/net/tun closed to this user.
        println!("  (skipped: {e})");
        return Ok(());
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "ls /sys/class/net; ip -o -4 addr show eth0; grep kiln-test /etc/hosts; \
         nc -w 2 127.0.0.1 {port} </dev/null && echo reached-loopback; \
         nc -w 2 10.0.2.2 {port} </dev/null && echo reached-gateway; echo done"
    );
    let out = run_script(&[&l.base], NetworkMode::Default, &script)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    expect_eq(
        &format!("interfaces (stderr {:?})", out.stderr),
        lines.get(..2),
        Some(&["eth0", "lo"][..]),
    )?;
    expect(
        &format!("eth0 has 10.0.2.100: {}", out.stdout),
        out.stdout.contains("inet 10.0.2.100/24"),
    )?;
    expect(
        "hosts names the hostname on eth0's address",
        out.stdout.contains("10.0.2.100\tkiln-test"),
    )?;
    expect(
        &format!("host loopback unreachable: {}", out.stdout),
        !out.stdout.contains("reached") && out.stdout.ends_with("done\n"),
    )?;
    expect(
        "no connection reached the listener",
        listener.accept().is_err(),
    )?;
    let me = std::process::id().to_string();
    let helpers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let dir = e.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Field 4 of stat is the parent pid (after the parenthesised command name).
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            comm.trim() == "slirp4netns" && ppid == Some(me.as_str())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    expect_eq("slirp4netns children left", helpers, Vec::<String>::new())
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

fn mount_stubs_are_cleaned(l: &Layers) -> Result<(), String> {
    for (name, layers) in [
        ("scratch+busybox", vec![&*l.base]),
        ("with /etc", vec![&*l.etc, &*l.base]),
    ] {
        let s = scratch();
        let out = run(&spec(&layers, &s, NetworkMode::None), &process("true"))
            .map_err(|e| e.to_string())?;
        expect_eq("exit", out.code, ExitCode(0))?;
        let left: Vec<_> = std::fs::read_dir(&s.upper)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        expect_eq(&format!("{name}: upper after `true`"), left, vec![])?;
    }
    // A stub the process wrote into stays (and so does what it wrote).
    let s = scratch();
    let out = run(
        &spec(&[&l.base], &s, NetworkMode::None),
        &process("echo x > /etc/kept"),
    )
    .map_err(|e| e.to_string())?;
    expect_eq("exit", out.code, ExitCode(0))?;
    expect("written file kept", s.upper.join("etc/kept").is_file())?;
    expect("hosts stub removed", !s.upper.join("etc/hosts").exists())
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

fn bind_mounts(l: &Layers) -> Result<(), String> {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("file"), "hello").unwrap();
    let s = scratch();
    let mut sp = spec(&[&l.base], &s, NetworkMode::None);
    sp.mounts = vec![
        BindMount {
            source: data.path().into(),
            target: "/mnt/ro".into(),
            readonly: true,
        }
        .into(),
        BindMount {
            source: data.path().join("file"),
            target: "/rw-file".into(),
            readonly: false,
        }
        .into(),
    ];
    let script = "cat /mnt/ro/file; echo; touch /mnt/ro/x 2>/dev/null && echo writable; echo -n bye > /rw-file";
    let out = run(&sp, &process(script)).map_err(|e| e.to_string())?;
    expect_eq("output", out.stdout.as_str(), "hello\n")?;
    expect_eq(
        "rw bind wrote through",
        std::fs::read_to_string(data.path().join("file")).ok(),
        Some("bye".into()),
    )?;
    let left: Vec<_> = std::fs::read_dir(&s.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    expect_eq("bind stubs cleaned", left, vec![])
}

fn tmpfs_and_file_mounts(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let mut sp = spec(&[&l.base], &s, NetworkMode::None);
    sp.mounts = vec![
        Mount::Tmpfs(TmpfsMount {
            target: "/scratch/tmp".into(),
            size: Some(1 << 20),
        }),
        Mount::File(FileMount {
            target: "/run/secrets/token".into(),
            contents: b"s3cret".to_vec(),
            mode: 0o440,
            uid: 0,
            gid: 0,
        }),
    ];
    let script = "echo data > /scratch/tmp/f && cat /scratch/tmp/f; \
        cat /run/secrets/token; echo; ls -ln /run/secrets/token | cut -c1-10; \
        echo x > /run/secrets/token 2>/dev/null && echo writable; \
        grep -c ' /scratch/tmp tmpfs ' /proc/mounts";
    let out = run(&sp, &process(script)).map_err(|e| e.to_string())?;
    expect_eq(
        "output",
        out.stdout.as_str(),
        "data\ns3cret\n-r--r-----\n1\n",
    )?;
    let left: Vec<_> = std::fs::read_dir(&s.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    expect_eq("tmpfs and secret stubs cleaned", left, vec![])
}

fn overlay_mounts_on_host(l: &Layers) -> Result<(), String> {
    let target = tempfile::tempdir().unwrap();
    let m = OverlayMount::mount(&[l.etc.clone(), l.base.clone()], None, target.path())
        .map_err(|e| e.to_string())?;
    expect(
        "two lowers merged",
        m.path().join("etc/passwd").is_file() && m.path().join("bin/busybox").is_file(),
    )?;
    expect("read-only", std::fs::write(m.path().join("x"), "").is_err())?;
    m.unmount().map_err(|e| e.to_string())?;

    let m = OverlayMount::mount(std::slice::from_ref(&l.base), None, target.path())
        .map_err(|e| e.to_string())?;
    expect(
        "single lower visible",
        m.path().join("bin/busybox").is_file(),
    )?;
    expect(
        "single lower read-only",
        std::fs::write(m.path().join("x"), "").is_err(),
    )?;
    drop(m);
    expect("unmounted on drop", !target.path().join("bin").exists())?;

    let s = scratch();
    let m = OverlayMount::mount(&[], Some((&s.upper, &s.work)), target.path())
        .map_err(|e| e.to_string())?;
    std::fs::write(m.path().join("copied"), "c").map_err(|e| e.to_string())?;
    m.unmount().map_err(|e| e.to_string())?;
    expect("upper-only write landed", s.upper.join("copied").is_file())
}

/// `spawn_in` joins a running sandbox: same files, same processes, same hostname, a fresh pid
/// in its PID namespace, the sandbox's user database.
fn exec_joins_a_running_sandbox(l: &Layers) -> Result<(), String> {
    let s = scratch();
    let spec = spec(&[&l.etc, &l.base], &s, NetworkMode::None);
    let mut sandbox = kiln_sandbox::spawn(
        &spec,
        &process("echo started > /marker; exec sleep 60"),
        Stdio::null(),
    )
    .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.upper.join("marker").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = sandbox
        .namespace_init_pid()
        .ok_or("the sandbox has no PID 1")?;
    let mut exec = process(
        "cat /marker; hostname; echo pid=$$; ps; grep -E '^(CapBnd|Seccomp):' /proc/self/status; id -un",
    );
    exec.user = Some("builder".into());
    let mut child = kiln_sandbox::spawn_in(pid, &exec, &spec.security, Stdio::piped())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    child
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let code = child.wait().map_err(|e| e.to_string())?;
    let mut absent = process("");
    absent.args = vec!["no-such-program".into()];
    let missing = kiln_sandbox::spawn_in(pid, &absent, &spec.security, Stdio::null()).map(|_| ());
    sandbox.kill().map_err(|e| e.to_string())?;
    drop(sandbox);
    expect_eq("exec exit code", code.code(), 0)?;
    expect(
        &format!("sees the sandbox's files: {out}"),
        out.starts_with("started\nkiln-test\n"),
    )?;
    expect(
        &format!("a pid in the sandbox's namespace: {out}"),
        !out.contains("pid=1\n"),
    )?;
    expect(
        &format!("sees the sandbox's processes: {out}"),
        out.contains("sleep 60"),
    )?;
    expect(
        &format!("runs as the sandbox's user: {out}"),
        out.ends_with("builder\n"),
    )?;
    expect(
        &format!("confined as the sandbox's own process (caps, seccomp): {out}"),
        out.contains("CapBnd:\t00000000a80425fb\n") && out.contains("Seccomp:\t2\n"),
    )?;
    expect(
        &format!("a missing program is the init's error: {missing:?}"),
        matches!(
            missing,
            Err(SandboxError::Init(InitFailure::ExecutableNotFound { .. }))
        ),
    )?;
    let gone = kiln_sandbox::spawn_in(pid, &process("true"), &spec.security, Stdio::null());
    expect("a finished sandbox cannot be joined", gone.is_err())
}

/// A process with `terminal` leads its own session with the pty as controlling terminal and
/// sees the window size set on it.
fn terminal_process_owns_its_pty(l: &Layers) -> Result<(), String> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).map_err(|e| e.to_string())?;
    grantpt(&master).map_err(|e| e.to_string())?;
    unlockpt(&master).map_err(|e| e.to_string())?;
    let name = ptsname(&master, Vec::new()).map_err(|e| e.to_string())?;
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 33,
            ws_col: 77,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(|e| e.to_string())?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .map_err(|e| e.to_string())?;
    let s = scratch();
    let mut p = process(
        "read pid comm state ppid pgrp sid tty rest < /proc/$$/stat; echo \"$pid $sid $tty\"; stty size",
    );
    p.terminal = true;
    let stdio = Stdio {
        stdin: slave.try_clone().unwrap().into(),
        stdout: slave.try_clone().unwrap().into(),
        stderr: slave.into(),
    };
    let child = kiln_sandbox::spawn(&spec(&[&l.base], &s, NetworkMode::None), &p, stdio)
        .map_err(|e| e.to_string())?;
    let code = child.wait().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The slave is closed: read until EIO.
    while let Ok(n) = rustix::io::read(&master, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out).replace('\r', "");
    expect_eq("exit code", code.code(), 0)?;
    let mut lines = out.lines();
    let ids: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    expect(
        &format!("session leader with a tty: {out:?}"),
        ids.len() == 3 && ids[0] == ids[1] && ids[2] != "0",
    )?;
    expect_eq("window size", lines.next(), Some("33 77"))
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
        ("isolated_network", isolated_network),
        (
            "host_port_reachable_only_with_host_network",
            host_port_reachable_only_with_host_network,
        ),
        (
            "default_network_hides_host_loopback",
            default_network_hides_host_loopback,
        ),
        ("writes_land_in_upper", writes_land_in_upper),
        ("mount_stubs_are_cleaned", mount_stubs_are_cleaned),
        (
            "missing_executable_is_a_clear_error",
            missing_executable_is_a_clear_error,
        ),
        ("inherited_fds_are_closed", inherited_fds_are_closed),
        ("bind_mounts", bind_mounts),
        ("tmpfs_and_file_mounts", tmpfs_and_file_mounts),
        ("overlay_mounts_on_host", overlay_mounts_on_host),
        ("exec_joins_a_running_sandbox", exec_joins_a_running_sandbox),
        (
            "terminal_process_owns_its_pty",
            terminal_process_owns_its_pty,
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
