//! Processes beyond the sandbox's own: `spawn_in` joining a running sandbox, and a process
//! started with a terminal.

use std::io::Read;

use super::*;

/// `spawn_in` joins a running sandbox: same files, same processes, same hostname, a fresh pid
/// in its PID namespace, the sandbox's user database.
pub(super) fn exec_joins_a_running_sandbox(l: &Layers) -> Result<(), String> {
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
pub(super) fn terminal_process_owns_its_pty(l: &Layers) -> Result<(), String> {
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
