//! SSH agent forwarding (`--ssh`, `RUN --mount=type=ssh`), as buildx offers it: `default`
//! forwards the agent at `$SSH_AUTH_SOCK`, `ID=SOCKET` another agent, `ID=KEY[,KEY…]` an
//! agent kiln starts (Debian's `ssh-agent`) holding those keys for the build's duration.
//!
//! The key decision: the sandbox never sees the agent's own socket. Each RUN that mounts one
//! gets a fresh socket in its scratch directory, owned and moded as the mount asks (BuildKit's
//! 0600 root by default), and a thread relays every connection to the agent: so an agent
//! that only answers its own user (OpenSSH's checks the peer's uid) still serves a RUN as
//! another user, and the socket is bound over the step's root, removed with the mount
//! point, and never part of a layer. Agents are checked (connected to, keys loaded) before
//! the build starts, so an unreachable agent or an unreadable key fails early, naming it.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one `--ssh` id forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's socket.
    Socket(PathBuf),
    /// Private key files to load into an agent of kiln's own.
    Keys(Vec<PathBuf>),
}

/// An `--ssh` value kiln cannot use, naming it.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("invalid --ssh {value:?}: {reason}")]
    Syntax { value: String, reason: String },
    #[error("--ssh {id}: cannot reach the SSH agent at {}: {cause}", socket.display())]
    Unreachable {
        id: String,
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("--ssh {id}: key {}: {reason}", key.display())]
    Key {
        id: String,
        key: PathBuf,
        reason: String,
    },
    #[error("--ssh {id}: cannot start ssh-agent: {reason}")]
    Agent { id: String, reason: String },
}

impl SshError {
    pub fn kind(&self) -> kiln_error::ErrorKind {
        use kiln_error::ErrorKind;
        match self {
            SshError::Syntax { .. } => ErrorKind::InvalidArgument,
            SshError::Unreachable { .. } => ErrorKind::Unavailable,
            SshError::Key { .. } => ErrorKind::NotFound,
            SshError::Agent { .. } => ErrorKind::Internal,
        }
    }
}

/// Parses buildx's `default`, `ID`, `ID=PATH[,PATH…]`. A bare id forwards `auth_sock` (the
/// caller's `$SSH_AUTH_SOCK`); a single path that is a socket is an agent, anything else
/// key files.
pub fn parse_ssh_flag(
    value: &str,
    auth_sock: Option<&Path>,
) -> Result<(String, SshSource), SshError> {
    let bad = |reason: &str| SshError::Syntax {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let (id, paths) = match value.split_once('=') {
        Some((id, paths)) => (id, Some(paths)),
        None => (value, None),
    };
    if id.is_empty() || id.contains(',') {
        return Err(bad("expected default or ID[=SOCKET|KEY[,KEY…]]"));
    }
    let source = match paths {
        None | Some("") => match auth_sock {
            Some(sock) => SshSource::Socket(sock.to_owned()),
            None => {
                return Err(bad(
                    "SSH_AUTH_SOCK is not set: name a socket or keys (ID=PATH)",
                ));
            }
        },
        Some(paths) => {
            let paths: Vec<PathBuf> = paths.split(',').map(PathBuf::from).collect();
            let is_socket = |p: &Path| {
                use std::os::unix::fs::FileTypeExt;
                std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
            };
            match paths.as_slice() {
                [one] if is_socket(one) => SshSource::Socket(one.clone()),
                _ => SshSource::Keys(paths),
            }
        }
    };
    Ok((id.to_owned(), source))
}

/// The agents of one build, by id: forwarded sockets and agents kiln started. The agents it
/// started are stopped when this is dropped.
#[derive(Debug)]
pub struct SshAgents {
    sockets: BTreeMap<String, PathBuf>,
    children: Vec<Child>,
}

impl SshAgents {
    /// Checks every forwarded agent and starts one for every set of keys, with its socket in
    /// `dir` (private to the caller, kept while the build runs).
    pub fn start(sources: &BTreeMap<String, SshSource>, dir: &Path) -> Result<SshAgents, SshError> {
        let mut agents = SshAgents {
            sockets: BTreeMap::new(),
            children: Vec::new(),
        };
        for (n, (id, source)) in sources.iter().enumerate() {
            let socket = match source {
                SshSource::Socket(socket) => socket.clone(),
                SshSource::Keys(keys) => {
                    let socket = dir.join(format!("agent-{n}.sock"));
                    let child = start_agent(id, &socket)?;
                    agents.children.push(child);
                    for key in keys {
                        add_key(id, &socket, key)?;
                    }
                    socket
                }
            };
            UnixStream::connect(&socket).map_err(|cause| SshError::Unreachable {
                id: id.clone(),
                socket: socket.clone(),
                cause,
            })?;
            agents.sockets.insert(id.clone(), socket);
        }
        Ok(agents)
    }

    /// The agent socket of each id, for [`crate::BuildSettings::ssh`].
    pub fn sockets(&self) -> &BTreeMap<String, PathBuf> {
        &self.sockets
    }
}

impl Drop for SshAgents {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ssh-agent -D -a SOCKET`, waited for until its socket exists.
fn start_agent(id: &str, socket: &Path) -> Result<Child, SshError> {
    let fail = |reason: String| SshError::Agent {
        id: id.to_owned(),
        reason,
    };
    // Until its socket answers (its own program runs): see `kiln_sandbox::fork_window`.
    let _window = kiln_sandbox::fork_window::spawning();
    let mut child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Err(fail(format!("{status}: {}", err.trim())));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("its socket did not appear".to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(child)
}

/// `ssh-add KEY` into the agent at `socket`; a key needing a passphrase fails (no prompt).
fn add_key(id: &str, socket: &Path, key: &Path) -> Result<(), SshError> {
    let fail = |reason: String| SshError::Key {
        id: id.to_owned(),
        key: key.to_owned(),
        reason,
    };
    std::fs::metadata(key).map_err(|e| fail(e.to_string()))?;
    let mut command = Command::new("ssh-add");
    command
        .arg("-q")
        .arg(key)
        .env("SSH_AUTH_SOCK", socket)
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env_remove("DISPLAY")
        .stdin(Stdio::null());
    let out = kiln_sandbox::fork_window::output(&mut command)
        .map_err(|e| fail(format!("cannot run ssh-add: {e}")))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

/// A socket one RUN step connects to, relaying each connection to an agent. Stops accepting
/// when dropped.
#[derive(Debug)]
pub(crate) struct SshProxy {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl SshProxy {
    /// Listens at `path` (a new file in the step's scratch dir), owned `uid:gid` with
    /// `mode`, relaying to `agent`.
    pub fn start(
        agent: &Path,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> std::io::Result<SshProxy> {
        let listener = UnixListener::bind(path)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let agent = agent.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                // An agent that went away closes the client: ssh then says it cannot
                // reach the agent, as it would without forwarding.
                if let Ok(upstream) = UnixStream::connect(&agent) {
                    relay(client, upstream);
                }
            }
        });
        Ok(SshProxy {
            path: path.to_owned(),
            stop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SshProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies both ways between `a` and `b` on two threads until either side closes.
fn relay(a: UnixStream, b: UnixStream) {
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_buildx_spells_them() {
        let sock = Path::new("/run/agent.sock");
        assert_eq!(
            parse_ssh_flag("default", Some(sock)).unwrap(),
            ("default".to_owned(), SshSource::Socket(sock.to_owned()))
        );
        assert_eq!(
            parse_ssh_flag("deploy=/k/a,/k/b", None).unwrap(),
            (
                "deploy".to_owned(),
                SshSource::Keys(vec!["/k/a".into(), "/k/b".into()])
            )
        );
        let e = parse_ssh_flag("default", None).unwrap_err();
        assert!(e.to_string().contains("SSH_AUTH_SOCK"), "{e}");
        assert!(parse_ssh_flag("=x", None).is_err());
    }

    #[test]
    fn an_unreachable_agent_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone.sock");
        let sources = BTreeMap::from([("default".to_owned(), SshSource::Socket(gone.clone()))]);
        let e = SshAgents::start(&sources, dir.path()).unwrap_err();
        assert!(e.to_string().contains(gone.to_str().unwrap()), "{e}");
        assert_eq!(e.kind(), kiln_error::ErrorKind::Unavailable);
    }
}
