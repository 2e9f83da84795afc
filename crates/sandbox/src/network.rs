//! The sandbox's default network, like Docker's bridge: a private network namespace connected
//! to the outside through `slirp4netns`, a user-mode TCP/IP stack running on the host side.
//! The sandbox sees one interface, `eth0` (10.0.2.100/24, gateway 10.0.2.2); slirp4netns turns
//! its connections into ordinary sockets of the host, so it reaches whatever the host reaches
//! except the host's loopback (`--disable-host-loopback`: 10.0.2.2 is not a way back to
//! 127.0.0.1). The same code works without root, because slirp4netns needs no privileges.
//!
//! Sequence (see also `protocol.rs`): the outer init creates the network namespace and reports
//! [`StatusMessage::NetworkNamespace`](crate::protocol::StatusMessage); the host starts
//! slirp4netns against the outer init's pid and, once slirp4netns says the interface is
//! configured (`--ready-fd`), writes one byte on the go-ahead pipe the init waits on. The host
//! keeps the write end of slirp4netns' `--exit-fd` pipe; closing it (when the sandbox ends, or
//! when kiln dies and the kernel closes it) makes slirp4netns exit, so none outlives its sandbox.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::pipe::PipeFlags;

use crate::error::{InitFailure, SandboxError};
use crate::fork_window;
use crate::sys;

/// The user-mode networking program and the Debian package that has it.
pub const HELPER_PROGRAM: &str = "slirp4netns";
pub const HELPER_PACKAGE: &str = "slirp4netns";

/// Name of the sandbox's interface, as Docker names a container's.
const INTERFACE: &str = "eth0";
/// slirp4netns' fixed addresses in its default 10.0.2.0/24 network.
pub const SANDBOX_ADDRESS: &str = "10.0.2.100";
/// The largest MTU slirp4netns takes short of its maximum, as rootless Podman and RootlessKit
/// use: far fewer packets through the user-mode stack than with 1500.
const MTU: u32 = 65520;
/// How long slirp4netns may take to configure the interface before the sandbox gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long slirp4netns gets to exit after its exit fd closed before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The device slirp4netns creates the sandbox's interface with.
const TUN_DEVICE: &str = "/dev/net/tun";

/// Where the user-mode networking helper is: the first `slirp4netns` in `PATH` (or in the
/// standard system directories when `PATH` is unset). Also checks that it can work for this
/// user: it needs read-write access to /dev/net/tun, which is 0666 on most systems but not in
/// every container.
pub fn find_helper() -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let program = std::env::split_paths(&path)
        .map(|dir| dir.join(HELPER_PROGRAM))
        .find(|candidate| is_executable(candidate))
        .ok_or(SandboxError::NetworkHelperMissing {
            program: HELPER_PROGRAM,
            package: HELPER_PACKAGE,
        })?;
    use rustix::fs::{Access, access};
    access(TUN_DEVICE, Access::READ_OK | Access::WRITE_OK).map_err(|e| {
        SandboxError::NetworkUnavailable(format!(
            "{HELPER_PROGRAM} needs read-write access to {TUN_DEVICE}: {e}"
        ))
    })?;
    Ok(program)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A running slirp4netns serving one sandbox's network namespace.
#[derive(Debug)]
pub(crate) struct UserModeNetwork {
    helper: Child,
    /// Closing this makes slirp4netns exit (`--exit-fd`).
    exit_fd: Option<OwnedFd>,
}

/// How slirp4netns is told to run. Kept apart from the spawning so the command line can be
/// checked without starting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelperConfig {
    /// Pid (in kiln's PID namespace) of a process inside the sandbox's network namespace.
    pub target_pid: u32,
    /// The user namespace owning the network namespace, when the sandbox is rootless:
    /// slirp4netns must join it to configure the interface.
    pub userns: Option<PathBuf>,
    /// Whether the host's resolver can be reached directly: then the sandbox uses it and
    /// slirp4netns' DNS forwarder (a path to the host's loopback when the host resolver listens
    /// there) is turned off.
    pub disable_dns: bool,
    /// `--enable-sandbox`: slirp4netns drops its capabilities and sees only /etc and /run.
    pub sandbox_helper: bool,
}

impl HelperConfig {
    /// The arguments after the program name, without the ready and exit fds.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--configure".to_string(),
            format!("--mtu={MTU}"),
            "--disable-host-loopback".to_string(),
        ];
        if self.disable_dns {
            args.push("--disable-dns".into());
        }
        if self.sandbox_helper {
            args.push("--enable-sandbox".into());
            args.push("--enable-seccomp".into());
        }
        if let Some(userns) = &self.userns {
            args.push(format!("--userns-path={}", userns.display()));
        }
        args.push("--netns-type=pid".into());
        args.push(self.target_pid.to_string());
        args.push(INTERFACE.into());
        args
    }
}

impl UserModeNetwork {
    /// Starts slirp4netns for the network namespace of `config.target_pid` and waits until it
    /// has configured the interface. Its output goes to `log` (shown in the error if it fails).
    pub(crate) fn start(
        program: &Path,
        config: &HelperConfig,
        log: &Path,
    ) -> Result<UserModeNetwork, SandboxError> {
        let pipe = |what: &str| {
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| {
                SandboxError::io(format!("create the {what} pipe of slirp4netns"))(e.into())
            })
        };
        let (ready_read, ready_write) = pipe("ready")?;
        let (exit_read, exit_write) = pipe("exit")?;
        let log_file =
            File::create(log).map_err(SandboxError::io(format!("create {}", log.display())))?;
        let log_err = log_file
            .try_clone()
            .map_err(SandboxError::io(format!("open {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .arg(format!("--ready-fd={}", ready_write.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_read.as_raw_fd()))
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        sys::pass_only_fds_across_exec(
            &mut command,
            vec![ready_write.as_raw_fd(), exit_read.as_raw_fd()],
        );
        // Its ready fd is written from its own program: the window closes there.
        let window = fork_window::spawning();
        let helper = command.spawn().map_err(SandboxError::io(format!(
            "start {} (the default network's helper)",
            program.display()
        )))?;
        // Only slirp4netns may hold these: its exit closes `ready`, kiln's exit closes `exit`.
        drop((ready_write, exit_read));
        let mut network = UserModeNetwork {
            helper,
            exit_fd: Some(exit_write),
        };
        let ready = wait_ready(ready_read, READY_TIMEOUT);
        drop(window);
        match ready {
            Ok(true) => Ok(network),
            outcome => {
                network.stop();
                let mut reason = match outcome {
                    Ok(_) => "it exited before configuring the interface".to_string(),
                    Err(e) => e.to_string(),
                };
                let output = std::fs::read_to_string(log).unwrap_or_default();
                let output = output.trim();
                if !output.is_empty() {
                    reason.push_str(": ");
                    reason.push_str(output);
                }
                Err(SandboxError::NetworkSetup(reason))
            }
        }
    }

    /// Makes slirp4netns exit and reaps it (killing it if it does not go in time).
    pub(crate) fn stop(&mut self) {
        if self.exit_fd.take().is_none() {
            return;
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match self.helper.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.helper.kill();
                    let _ = self.helper.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for UserModeNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads slirp4netns' ready fd: `Ok(true)` once it wrote "1", `Ok(false)` if it closed the fd
/// without (it failed), an error on timeout.
pub(crate) fn wait_ready(ready: OwnedFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("it did not configure the interface within {timeout:?}"),
            ));
        }
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        match sys::poll_readable(ready.as_raw_fd(), millis) {
            Ok(true) => break,
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let mut byte = [0u8; 1];
    let n = File::from(ready).read(&mut byte)?;
    Ok(n == 1 && byte[0] == b'1')
}

/// Whether slirp4netns' `--enable-sandbox` can be used: it mounts only /etc and /run of the
/// host, so the host's resolv.conf must not lead elsewhere (its documented requirement).
pub(crate) fn helper_sandbox_usable(resolv_conf: &Path) -> bool {
    match std::fs::canonicalize(resolv_conf) {
        Ok(target) => target.starts_with("/etc") || target.starts_with("/run"),
        Err(_) => true,
    }
}

/// The sandbox side: waits for the host's go-ahead (one byte) after the network namespace was
/// reported. End of file means the host could not connect the network.
pub(crate) fn await_go_ahead(fd: i32) -> Result<(), InitFailure> {
    let fd = sys::take_inherited_fd(fd).map_err(InitFailure::setup("network go-ahead pipe"))?;
    let mut byte = [0u8; 1];
    match File::from(fd).read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err(InitFailure::Setup {
            step: "connect the network".into(),
            message: "the host did not start the network helper".into(),
        }),
        Err(e) => Err(InitFailure::setup("wait for the network")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_command_line() {
        let config = HelperConfig {
            target_pid: 4242,
            userns: None,
            disable_dns: true,
            sandbox_helper: true,
        };
        assert_eq!(
            config.args(),
            [
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--disable-dns",
                "--enable-sandbox",
                "--enable-seccomp",
                "--netns-type=pid",
                "4242",
                "eth0",
            ]
        );
        let rootless = HelperConfig {
            target_pid: 7,
            userns: Some("/proc/7/ns/user".into()),
            disable_dns: false,
            sandbox_helper: false,
        };
        let args = rootless.args();
        assert!(args.contains(&"--userns-path=/proc/7/ns/user".to_string()));
        assert!(
            !args
                .iter()
                .any(|a| a == "--disable-dns" || a == "--enable-sandbox")
        );
        // The host's loopback is never reachable, whatever else is configured.
        assert!(args.contains(&"--disable-host-loopback".to_string()));
        assert_eq!(args[args.len() - 2..], ["7", "eth0"]);
    }

    #[test]
    fn helper_sandbox_needs_resolv_conf_under_etc_or_run() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("resolv.conf");
        std::fs::write(&outside, "nameserver 192.0.2.1\n").unwrap();
        // tempdirs live under /tmp, which slirp4netns' sandbox does not mount.
        assert!(!helper_sandbox_usable(&outside));
        assert!(helper_sandbox_usable(Path::new("/nonexistent/resolv.conf")));
    }

    #[test]
    fn missing_helper_names_the_package() {
        let err = SandboxError::NetworkHelperMissing {
            program: HELPER_PROGRAM,
            package: HELPER_PACKAGE,
        };
        let message = err.to_string();
        assert!(message.contains("slirp4netns"), "{message}");
        assert!(message.contains("apt-get install slirp4netns"), "{message}");
    }

    #[test]
    fn a_helper_that_fails_is_reported_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-slirp");
        std::fs::write(&fake, "#!/bin/sh\necho 'cannot join netns' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config = HelperConfig {
            target_pid: 1,
            userns: None,
            disable_dns: true,
            sandbox_helper: false,
        };
        let err = UserModeNetwork::start(&fake, &config, &dir.path().join("log")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cannot join netns"), "{message}");
    }

    #[test]
    fn the_helper_inherits_no_other_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-slirp");
        // Lists its open fds into the log, then says ready.
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a; do case $a in --ready-fd=*) r=${a#*=};; esac; done\n\
             ls /proc/$$/fd; printf 1 > /proc/$$/fd/$r\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        // Like a step's output pipe: created without close-on-exec.
        let (leaky_read, leaky_write) = rustix::pipe::pipe().unwrap();
        let config = HelperConfig {
            target_pid: 1,
            userns: None,
            disable_dns: true,
            sandbox_helper: false,
        };
        let log = dir.path().join("log");
        let network = UserModeNetwork::start(&fake, &config, &log).unwrap();
        drop(network);
        let fds: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        for leaked in [leaky_read.as_raw_fd(), leaky_write.as_raw_fd()] {
            assert!(
                !fds.contains(&leaked.to_string()),
                "fd {leaked} leaked: {fds:?}"
            );
        }
    }

    #[test]
    fn a_ready_helper_is_stopped_by_closing_its_exit_fd() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-slirp");
        // Parses --ready-fd/--exit-fd like slirp4netns, says ready, then waits for the exit fd
        // (through /proc: dash only redirects single-digit fds).
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a; do case $a in --ready-fd=*) r=${a#*=};; --exit-fd=*) e=${a#*=};; esac; done\n\
             printf 1 > /proc/$$/fd/$r; cat < /proc/$$/fd/$e; echo stopped > \"$0.done\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config = HelperConfig {
            target_pid: 1,
            userns: None,
            disable_dns: true,
            sandbox_helper: false,
        };
        let mut network = UserModeNetwork::start(&fake, &config, &dir.path().join("log")).unwrap();
        let pid = network.helper.id();
        let started = Instant::now();
        network.stop();
        assert!(
            started.elapsed() < EXIT_TIMEOUT,
            "stopped by the exit fd, not killed"
        );
        assert!(dir.path().join("fake-slirp.done").exists());
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "reaped");
    }
}
