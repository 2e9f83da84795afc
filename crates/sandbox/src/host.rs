//! The caller's side: prepare the scratch directory, re-execute the current binary as the init,
//! hand it the spec, wait for it to report that the process runs, and later collect the exit
//! code and clean up mount-point stubs.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use rustix::pipe::PipeFlags;

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::fork_window;
use crate::network::{self, HelperConfig, UserModeNetwork};
use crate::protocol::{INIT_MARKER, IdMap, InitRequest, StatusMessage};
use crate::spec::{NetworkMode, ProcessSpec, SandboxSpec, Stdio};
use crate::stubs::{Stub, remove_stubs};
use crate::sys;

/// The host's resolver configuration, the source of the sandbox's.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

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
    /// slirp4netns serving the default network; stopped when the sandbox ends.
    network: Option<UserModeNetwork>,
    /// Holds the hosts/resolv.conf files mounted into the sandbox; removed after it exits.
    state_dir: Option<tempfile::TempDir>,
    /// The copy of the layers used as the root where overlayfs cannot be mounted.
    copied: Option<crate::copy_root::CopiedRoot>,
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
    spawn_inner(spec, process, stdio, None)
}

/// How a [`NetworkMode::Prepared`] sandbox's namespace is connected: called with the pid of a
/// process in the new network namespace (the outer init), before anything runs in it. An
/// error stops the sandbox with that message.
pub type PrepareNetwork<'a> = &'a mut dyn FnMut(u32) -> Result<(), String>;

/// [`spawn`] for a sandbox whose network the caller connects: `prepare` runs once the network
/// namespace exists and before the process starts — with [`NetworkMode::Default`] after
/// slirp4netns configured `eth0` (the caller adds more interfaces), with
/// [`NetworkMode::Prepared`] on a namespace with loopback only.
pub fn spawn_prepared(
    spec: &SandboxSpec,
    process: &ProcessSpec,
    stdio: Stdio,
    prepare: PrepareNetwork<'_>,
) -> Result<SandboxChild, SandboxError> {
    if !matches!(spec.network, NetworkMode::Prepared | NetworkMode::Default) {
        return Err(SandboxError::InvalidSpec(format!(
            "a network callback was given for network mode {}",
            spec.network.name()
        )));
    }
    spawn_inner(spec, process, stdio, Some(prepare))
}

fn spawn_inner(
    spec: &SandboxSpec,
    process: &ProcessSpec,
    stdio: Stdio,
    mut prepare: Option<PrepareNetwork<'_>>,
) -> Result<SandboxChild, SandboxError> {
    if spec.network == NetworkMode::Prepared && prepare.is_none() {
        return Err(SandboxError::InvalidSpec(
            "a prepared network needs the caller's callback (spawn_prepared)".into(),
        ));
    }
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
    // Before anything starts: a missing helper is the caller's to handle (see `network_helper`).
    let helper = match spec.network {
        NetworkMode::Default => Some(network::find_helper()?),
        NetworkMode::None | NetworkMode::Host | NetworkMode::Prepared => None,
    };
    let host_resolv = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
    let state_dir = crate::etc_files::prepare_state_dir(spec, &host_resolv)?;
    let go_ahead = match helper.is_some() || prepare.is_some() {
        true => {
            Some(rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| pipe_error(e.into()))?)
        }
        false => None,
    };
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
    let copied = crate::copy_root::copy_layers_if_needed(spec, !euid.is_root())?;
    let mut sandbox_spec = spec.clone();
    if let Some(copied) = &copied {
        sandbox_spec.upper_dir = copied.merged.path().to_path_buf();
        sandbox_spec.lower_dirs.clear();
    }
    let go_ahead_fd = go_ahead.as_ref().map(|(read, _)| read.as_raw_fd());
    let request = InitRequest {
        copied_root: copied.is_some(),
        sandbox: sandbox_spec,
        process: process.clone(),
        state_dir: state_dir.path().to_path_buf(),
        id_map: (!euid.is_root()).then(|| IdMap {
            uid: euid.as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }),
        network_go_ahead_fd: go_ahead_fd,
    };
    let request =
        serde_json::to_vec(&request).map_err(|e| SandboxError::Protocol(e.to_string()))?;

    let HelperProcess {
        child,
        spec_write,
        status_read,
    } = spawn_helper(INIT_MARKER, "sandbox init", stdio, go_ahead_fd)?;
    // The init holds the read end now; ours would keep it from ever seeing end of file.
    let mut go_ahead = go_ahead.map(|(_, write)| write);

    let mut sandbox = SandboxChild {
        child,
        upper_dir: spec.upper_dir.clone(),
        stubs: Vec::new(),
        network: None,
        state_dir: Some(state_dir),
        copied,
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
    let network = go_ahead.take().map(|go_ahead| NetworkStart {
        helper: helper
            .as_deref()
            .map(|program| (program, host_resolv.as_str())),
        prepare: prepare.take(),
        go_ahead,
    });
    read_status(&mut sandbox, status_read, network)?;
    Ok(sandbox)
}

/// What the host needs to connect the sandbox's default network once the init reports its
/// namespace.
pub(crate) struct NetworkStart<'a, 'p> {
    /// slirp4netns (the default network) and the host's resolv.conf.
    helper: Option<(&'a Path, &'a str)>,
    /// The caller's callback, after the helper if there is one.
    prepare: Option<PrepareNetwork<'p>>,
    go_ahead: OwnedFd,
}

/// Reads the init's (or exec helper's) reports until the pipe closes: Ok once the process was
/// executed; otherwise the child is reaped and the failure returned.
pub(crate) fn read_status(
    sandbox: &mut SandboxChild,
    status_read: OwnedFd,
    mut network: Option<NetworkStart<'_, '_>>,
) -> Result<(), SandboxError> {
    let mut exec_reached = false;
    let mut failure = None;
    for line in BufReader::new(std::fs::File::from(status_read)).lines() {
        let line = line.map_err(SandboxError::io("read the sandbox init's status pipe"))?;
        match serde_json::from_str(&line)
            .map_err(|e| SandboxError::Protocol(format!("{e}: {line}")))?
        {
            StatusMessage::Stubs(stubs) => sandbox.stubs.extend(stubs),
            StatusMessage::NetworkNamespace => {
                let Some(start) = network.take() else {
                    return Err(SandboxError::Protocol(
                        "the init created a network namespace it was not asked for".into(),
                    ));
                };
                if let Some((program, host_resolv)) = start.helper {
                    sandbox.connect_network(program, host_resolv)?;
                }
                // On failure the go-ahead pipe closes unwritten: the init stops with a setup
                // error, and this one is what the caller sees.
                if let Some(prepare) = start.prepare {
                    prepare(sandbox.child.id()).map_err(SandboxError::NetworkSetup)?;
                }
                std::fs::File::from(start.go_ahead)
                    .write_all(b"1")
                    .map_err(SandboxError::io(
                        "signal the sandbox init that the network is up",
                    ))?;
            }
            StatusMessage::Exec => exec_reached = true,
            StatusMessage::Started => {}
            StatusMessage::Failed(f) => failure = Some(f),
        }
    }
    match (failure, exec_reached) {
        (None, true) => Ok(()),
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

/// A re-executed helper (the init or the exec helper) that is running: it blocks reading its
/// request from `spec_write` and reports on `status_read` (see [`read_status`]).
pub(crate) struct HelperProcess {
    pub(crate) child: Child,
    pub(crate) spec_write: OwnedFd,
    pub(crate) status_read: OwnedFd,
}

/// Re-executes this binary as `/proc/self/exe MARKER SPEC_FD STATUS_FD` with a clean
/// environment; `extra_fd` (the init's network go-ahead) is kept open across the exec too.
/// `what` names the helper in errors.
pub(crate) fn spawn_helper(
    marker: &str,
    what: &str,
    stdio: Stdio,
    extra_fd: Option<RawFd>,
) -> Result<HelperProcess, SandboxError> {
    let pipe = || {
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
            .map_err(|e| SandboxError::io(format!("create a pipe to the {what}"))(e.into()))
    };
    let (spec_read, spec_write) = pipe()?;
    let (status_read, status_write) = pipe()?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(marker)
        .arg(spec_read.as_raw_fd().to_string())
        .arg(status_write.as_raw_fd().to_string())
        .env_clear()
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr);
    let mut inherited = vec![spec_read.as_raw_fd(), status_write.as_raw_fd()];
    inherited.extend(extra_fd);
    sys::keep_fds_across_exec(&mut command, inherited);
    let window = fork_window::spawning();
    let child = command
        .spawn()
        .map_err(SandboxError::io(format!("start the {what} /proc/self/exe")))?;
    // The helper holds these ends now; ours would keep it from ever seeing end of file.
    drop((spec_read, status_write));
    await_started(&status_read, what)?;
    drop(window);
    Ok(HelperProcess {
        child,
        spec_write,
        status_read,
    })
}

/// Reads the helper's first report, `Started`, byte by byte (what follows is left in the pipe
/// for [`read_status`]). End of file means the helper died first; `read_status` reports that.
fn await_started(status_read: &OwnedFd, what: &str) -> Result<(), SandboxError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(status_read, &mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SandboxError::io(format!("read the {what}'s status pipe"))(
                    e.into(),
                ));
            }
        }
    }
    match serde_json::from_slice(&line) {
        Ok(StatusMessage::Started) => Ok(()),
        _ => Err(SandboxError::Protocol(format!(
            "the {what} did not report its start first: {}",
            String::from_utf8_lossy(&line)
        ))),
    }
}

/// Shell convention for a child's end: its exit status, or 128 + the signal that killed it.
pub(crate) fn shell_exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 255,
    }
}

fn pipe_error(e: std::io::Error) -> SandboxError {
    SandboxError::io("create a pipe to the sandbox init")(e)
}

impl SandboxChild {
    /// A process started in a running sandbox: no upper dir or scratch directory of its own.
    pub(crate) fn for_exec(child: Child) -> SandboxChild {
        SandboxChild {
            child,
            upper_dir: PathBuf::new(),
            stubs: Vec::new(),
            state_dir: None,
            finished: false,
            copied: None,
            network: None,
            cgroup: None,
        }
    }

    /// Host pid of the sandbox's PID 1 (the namespace init), whose namespaces
    /// [`crate::spawn_in`] joins. `None` once it is gone.
    pub fn namespace_init_pid(&self) -> Option<u32> {
        let outer = self.child.id();
        // The outer init has exactly one child. `children` needs CONFIG_PROC_CHILDREN; without
        // it, the process whose parent is the outer init is found by its stat line.
        if let Ok(children) =
            std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
        {
            return children.split_whitespace().next()?.parse().ok();
        }
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                (parent_in_stat(&stat)? == outer).then_some(pid)
            })
    }

    /// Starts slirp4netns for the init's new network namespace (the caller then lets the init
    /// go on).
    fn connect_network(&mut self, program: &Path, host_resolv: &str) -> Result<(), SandboxError> {
        let pid = self.child.id();
        let config = HelperConfig {
            target_pid: pid,
            userns: (!rustix::process::geteuid().is_root())
                .then(|| PathBuf::from(format!("/proc/{pid}/ns/user"))),
            disable_dns: crate::etc_files::host_dns_reachable(host_resolv),
            sandbox_helper: network::helper_sandbox_usable(Path::new(HOST_RESOLV_CONF)),
        };
        let log = self
            .state_dir
            .as_ref()
            .map(|d| d.path().join("slirp4netns.log"))
            .ok_or_else(|| SandboxError::Protocol("the sandbox has ended".into()))?;
        self.network = Some(UserModeNetwork::start(program, &config, &log)?);
        Ok(())
    }

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

    /// The exit code if the process has ended (then cleaned up as by [`SandboxChild::wait`]),
    /// `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitCode>, SandboxError> {
        if self.finished {
            return Err(SandboxError::InvalidSpec(
                "the sandbox was already waited for".into(),
            ));
        }
        let pid = self.child.id();
        match self
            .child
            .try_wait()
            .map_err(SandboxError::io(format!("wait for sandbox {pid}")))?
        {
            Some(_) => self.finish().map(Some),
            None => Ok(None),
        }
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
        if let Some(mut network) = self.network.take() {
            network.stop();
        }
        let code = shell_exit_code(status);
        self.state_dir = None;
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove()?;
        }
        let stubs = std::mem::take(&mut self.stubs);
        match self.copied.take() {
            // The stubs go before the diff, so they never reach the upper dir.
            Some(copied) => {
                remove_stubs(copied.merged.path(), &stubs)?;
                crate::copy_root::write_diff(
                    copied.merged.path(),
                    &copied.baseline,
                    &self.upper_dir,
                )
                .map_err(SandboxError::io(format!(
                    "write the changes of the copied root to {}",
                    self.upper_dir.display()
                )))?;
            }
            None => remove_stubs(&self.upper_dir, &stubs)?,
        }
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

/// The parent pid from a `/proc/<pid>/stat` line; the command name, in parentheses, may itself
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parent_in_stat(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_from_a_stat_line_with_an_awkward_name() {
        assert_eq!(parent_in_stat("42 (a) b) c) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_in_stat("garbage"), None);
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
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
            names: Default::default(),
        };
        let process = ProcessSpec {
            args: vec![],
            env: vec![],
            cwd: "/".into(),
            user: None,
            terminal: false,
        };
        let err = spawn(&spec, &process, Stdio::null()).unwrap_err();
        assert!(matches!(err, SandboxError::InvalidSpec(_)), "{err}");
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
    }
}
