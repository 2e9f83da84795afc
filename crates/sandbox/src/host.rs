//! The caller's side: prepare the scratch directory, re-execute the current binary as the init,
//! hand it the spec, wait for it to report that the process runs, and later collect the exit
//! code and clean up mount-point stubs.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use rustix::pipe::PipeFlags;

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::protocol::{INIT_MARKER, IdMap, InitRequest, StatusMessage};
use crate::spec::{NetworkMode, ProcessSpec, SandboxSpec, Stdio};
use crate::stubs::{Stub, remove_stubs};
use crate::sys;

/// Resolver configuration for a sandbox without network: no nameserver at all, so lookups
/// fail at once (the resolver's fallback, 127.0.0.1, refuses) instead of timing out.
const ISOLATED_RESOLV_CONF: &str = "# kiln: this sandbox has no network\n";

/// How a sandboxed process ended: its exit status, or 128 + the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitCode(pub i32);

impl ExitCode {
    pub fn code(self) -> i32 {
        self.0
    }

    pub fn success(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

/// A running sandbox. Dropping it without [`SandboxChild::wait`] kills the sandbox.
#[derive(Debug)]
pub struct SandboxChild {
    child: Child,
    upper_dir: PathBuf,
    stubs: Vec<Stub>,
    /// Holds the hosts/resolv.conf files mounted into the sandbox; removed after it exits.
    state_dir: Option<tempfile::TempDir>,
    /// The sandbox's own cgroup when it has resource limits; removed after it exits.
    cgroup: Option<Cgroup>,
    finished: bool,
}

/// Starts `process` in a new sandbox described by `spec`. Blocks until the process has been
/// executed (or the init failed, which is returned as [`SandboxError::Init`]); call it from a
/// blocking context in async code.
pub fn spawn(
    spec: &SandboxSpec,
    process: &ProcessSpec,
    stdio: Stdio,
) -> Result<SandboxChild, SandboxError> {
    if process.args.is_empty() {
        return Err(SandboxError::InvalidSpec(
            "the command line is empty".into(),
        ));
    }
    for mount in &spec.mounts {
        if !mount.target().starts_with('/') {
            return Err(SandboxError::InvalidSpec(format!(
                "mount target {:?} is not an absolute path",
                mount.target()
            )));
        }
    }
    let state_dir = prepare_state_dir(spec)?;
    let cgroup = if spec.resources.any() {
        let name = state_dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Some(Cgroup::create(&name, &spec.resources)?)
    } else {
        None
    };
    let euid = rustix::process::geteuid();
    let request = InitRequest {
        sandbox: spec.clone(),
        process: process.clone(),
        state_dir: state_dir.path().to_path_buf(),
        id_map: (!euid.is_root()).then(|| IdMap {
            uid: euid.as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }),
    };
    let request =
        serde_json::to_vec(&request).map_err(|e| SandboxError::Protocol(e.to_string()))?;

    let (spec_read, spec_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| pipe_error(e.into()))?;
    let (status_read, status_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| pipe_error(e.into()))?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(INIT_MARKER)
        .arg(spec_read.as_raw_fd().to_string())
        .arg(status_write.as_raw_fd().to_string())
        .env_clear()
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr);
    sys::keep_fds_across_exec(
        &mut command,
        vec![spec_read.as_raw_fd(), status_write.as_raw_fd()],
    );
    let child = command
        .spawn()
        .map_err(SandboxError::io("start the sandbox init /proc/self/exe"))?;
    drop((spec_read, status_write));

    let mut sandbox = SandboxChild {
        child,
        upper_dir: spec.upper_dir.clone(),
        stubs: Vec::new(),
        state_dir: Some(state_dir),
        cgroup,
        finished: false,
    };
    // The init blocks reading its spec until we write it, so it is inside the cgroup before it
    // can start anything.
    if let Some(cgroup) = &sandbox.cgroup {
        cgroup.add(sandbox.child.id())?;
    }
    // A write error means the init already died; its status tells why.
    let _ = std::fs::File::from(spec_write).write_all(&request);

    let mut exec_reached = false;
    let mut failure = None;
    for line in BufReader::new(std::fs::File::from(status_read)).lines() {
        let line = line.map_err(SandboxError::io("read the sandbox init's status pipe"))?;
        match serde_json::from_str(&line)
            .map_err(|e| SandboxError::Protocol(format!("{e}: {line}")))?
        {
            StatusMessage::Stubs(stubs) => sandbox.stubs.extend(stubs),
            StatusMessage::Exec => exec_reached = true,
            StatusMessage::Failed(f) => failure = Some(f),
        }
    }
    match (failure, exec_reached) {
        (None, true) => Ok(sandbox),
        (Some(failure), _) => {
            sandbox.finish()?;
            Err(SandboxError::Init(failure))
        }
        (None, false) => {
            let code = sandbox.finish()?;
            Err(SandboxError::InitDied {
                status: code.to_string(),
            })
        }
    }
}

fn pipe_error(e: std::io::Error) -> SandboxError {
    SandboxError::io("create a pipe to the sandbox init")(e)
}

/// Creates the host-side scratch directory described in [`InitRequest::state_dir`].
fn prepare_state_dir(spec: &SandboxSpec) -> Result<tempfile::TempDir, SandboxError> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-sandbox-")
        .tempdir()
        .map_err(SandboxError::io("create the sandbox scratch directory"))?;
    let create_dir = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).map_err(SandboxError::io(format!("create {}", path.display())))
    };
    create_dir("root")?;
    create_dir("empty")?;
    // Mount point of the sandbox's private tmpfs for file mounts (see `FileMount`).
    create_dir("files")?;
    let hosts = hosts_file(&spec.hostname);
    write_file(&dir.path().join("hosts"), hosts.as_bytes())?;
    let resolv = match spec.network {
        NetworkMode::Host => std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        NetworkMode::None => ISOLATED_RESOLV_CONF.as_bytes().to_vec(),
    };
    write_file(&dir.path().join("resolv.conf"), &resolv)?;
    Ok(dir)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), SandboxError> {
    std::fs::write(path, contents).map_err(SandboxError::io(format!("write {}", path.display())))
}

fn hosts_file(hostname: &str) -> String {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() && hostname != "localhost" {
        hosts.push_str(&format!("127.0.0.1\t{hostname}\n"));
    }
    hosts
}

impl SandboxChild {
    /// The pid (in the caller's namespace) of the sandbox's outer init process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Sends `signal` (a raw signal number such as `libc::SIGTERM`) to the process; the inits
    /// forward it.
    pub fn signal(&self, signal: i32) -> Result<(), SandboxError> {
        let pid = i32::try_from(self.child.id())
            .map_err(|_| SandboxError::InvalidSpec("pid out of range".into()))?;
        sys::send_signal(pid, signal).map_err(SandboxError::io(format!(
            "send signal {signal} to sandbox {pid}"
        )))
    }

    /// Kills every process in the sandbox at once.
    pub fn kill(&mut self) -> Result<(), SandboxError> {
        // The outer init dies; its child, the namespace's PID 1, has it as death signal
        // parent and takes the whole PID namespace with it.
        self.child.kill().map_err(SandboxError::io(format!(
            "kill sandbox {}",
            self.child.id()
        )))
    }

    /// Waits for the process to end, then removes the mount-point stubs from the upper dir.
    pub fn wait(mut self) -> Result<ExitCode, SandboxError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<ExitCode, SandboxError> {
        let pid = self.child.id();
        let status = self
            .child
            .wait()
            .map_err(SandboxError::io(format!("wait for sandbox {pid}")))?;
        self.finished = true;
        use std::os::unix::process::ExitStatusExt;
        let code = match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        };
        self.state_dir = None;
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove()?;
        }
        remove_stubs(&self.upper_dir, &std::mem::take(&mut self.stubs))?;
        Ok(ExitCode(code))
    }
}

impl Drop for SandboxChild {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_names_localhost_and_the_hostname() {
        let hosts = hosts_file("builder");
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("127.0.0.1\tbuilder\n"));
        assert!(!hosts_file("").contains("\t\n"));
    }

    #[test]
    fn empty_command_line_is_rejected_before_anything_runs() {
        let spec = SandboxSpec {
            lower_dirs: vec![],
            upper_dir: "/nonexistent".into(),
            work_dir: "/nonexistent".into(),
            network: NetworkMode::None,
            hostname: "x".into(),
            mounts: vec![],
            security: Default::default(),
            resources: Default::default(),
        };
        let process = ProcessSpec {
            args: vec![],
            env: vec![],
            cwd: "/".into(),
            user: None,
        };
        let err = spawn(&spec, &process, Stdio::null()).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidSpec(_)), "{err}");
    }
}
