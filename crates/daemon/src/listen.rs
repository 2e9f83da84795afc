//! Where the daemon listens: `--host unix://PATH` sockets, set up as dockerd sets up its own.
//!
//! As root the default is `/run/kiln/kiln.sock`: the directory is made 0755 and the socket
//! 0660 with group `kiln` when that group exists (its members may use the daemon, as with
//! dockerd's `docker` group), else 0600. Rootless it is `$XDG_RUNTIME_DIR/kiln/kiln.sock`,
//! the user's own. A socket file left by a dead daemon (nothing accepts on it) is replaced; a
//! live one is an error, so two daemons never share a socket. Plain `tcp://` is refused: it
//! would give root's engine to anyone who can reach the port; `tcp://` is accepted only with
//! mutual TLS (`tls.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::DaemonError;

/// The socket a daemon listens on when no `--host` is given, for the current user.
pub fn default_host() -> String {
    if rustix::process::geteuid().is_root() {
        return "unix:///run/kiln/kiln.sock".to_owned();
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!("/run/user/{}", rustix::process::getuid().as_raw()))
        });
    format!("unix://{}", runtime.join("kiln/kiln.sock").display())
}

/// Where a `--host` says to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    /// `host:port`, only with mutual TLS.
    Tcp(String),
}

/// Parses a `--host`: `unix:///PATH`, or `tcp://HOST:PORT` when `mutual_tls` is on.
pub fn parse_host(host: &str, mutual_tls: bool) -> Result<Host, DaemonError> {
    if let Some(addr) = host.strip_prefix("tcp://") {
        if !mutual_tls {
            return Err(DaemonError::PlainTcp {
                host: host.to_owned(),
            });
        }
        let addr = addr.trim_end_matches('/');
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(DaemonError::BadHost {
                host: host.to_owned(),
                reason: "expected tcp://HOST:PORT".into(),
            });
        }
        return Ok(Host::Tcp(addr.to_owned()));
    }
    socket_path(host).map(Host::Unix)
}

/// The path of a `unix://PATH` host; any other scheme is refused with the reason.
pub fn socket_path(host: &str) -> Result<PathBuf, DaemonError> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() || !path.starts_with('/') {
            return Err(DaemonError::BadHost {
                host: host.to_owned(),
                reason: "expected unix:///absolute/path".into(),
            });
        }
        return Ok(PathBuf::from(path));
    }
    if host.starts_with("tcp://") || host.starts_with("http://") || host.starts_with("https://") {
        return Err(DaemonError::PlainTcp {
            host: host.to_owned(),
        });
    }
    Err(DaemonError::BadHost {
        host: host.to_owned(),
        reason: "kiln serve listens on unix:// sockets".into(),
    })
}

/// Binds the socket at `path`: its directory created (0755 when kiln makes it), a dead
/// daemon's socket replaced, the permissions set before anyone can connect.
pub fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let err = |source| DaemonError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    // Under the socket's lock: a daemon that is finishing removes its socket only after
    // checking that it is still its own, and that check and this replacement must not
    // interleave (it would remove the socket bound here).
    let mut lock = socket_lock(path).map_err(err)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; not replacing it",
                )));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(DaemonError::SocketInUse {
                        path: path.to_owned(),
                    });
                }
                // Nobody accepts: the daemon that made it is gone.
                Err(_) => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                    _ => {}
                },
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Bound under a umask that leaves it owner-only, then opened up to the group: no moment
    // where it is wider than it ends up.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(err)?;
    // The socket's owner, for `remove_socket_if_ours`: a file's (device, inode) alone does not
    // tell, since a replaced socket's inode number is free to be reused at once.
    {
        use std::io::{Seek, Write};
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .map_err(err)?;
    }
    if rustix::process::geteuid().is_root()
        && let Some(gid) = group_id("kiln")
    {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .map_err(|e| err(e.into()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    }
    Ok(listener)
}

/// The file at `path` as (device, inode): tells a daemon's own socket from a successor's.
pub fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Removes the socket at `path` if it is still the one this process bound (its pid in the
/// socket's lock file, and the file the one with `identity`): a daemon started while this one
/// finished its requests has replaced it with its own, which must stay.
pub fn remove_socket_if_ours(path: &Path, identity: (u64, u64)) {
    use std::io::Read;
    let Ok(mut lock) = socket_lock(path) else {
        return;
    };
    let mut owner = String::new();
    let ours = lock.read_to_string(&mut owner).is_ok()
        && owner.trim() == std::process::id().to_string()
        && socket_identity(path) == Some(identity);
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// An exclusive lock on `<socket>.lock`, held while a socket is checked and replaced or
/// removed; released when the file is dropped.
fn socket_lock(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(PathBuf::from(name))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// The gid of group `name` from `/etc/group`, when it exists.
fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    group_id_in(&groups, name)
}

fn group_id_in(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_unix_sockets_only() {
        assert_eq!(
            socket_path("unix:///tmp/k.sock").unwrap(),
            PathBuf::from("/tmp/k.sock")
        );
        assert!(matches!(
            socket_path("tcp://0.0.0.0:2375"),
            Err(DaemonError::PlainTcp { .. })
        ));
        assert!(matches!(
            socket_path("unix://rel.sock"),
            Err(DaemonError::BadHost { .. })
        ));
        assert!(matches!(
            socket_path("fd://"),
            Err(DaemonError::BadHost { .. })
        ));
    }

    #[test]
    fn group_lookup_reads_the_gid_field() {
        let groups = "root:x:0:\nkilnx:x:7:\nkiln:x:998:alice,bob\n";
        assert_eq!(group_id_in(groups, "kiln"), Some(998));
        assert_eq!(group_id_in(groups, "docker"), None);
    }

    #[test]
    fn a_dead_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.sock");
        let first = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert!(mode == 0o600 || mode == 0o660, "{mode:o}");
        assert!(matches!(
            bind_unix(&path),
            Err(DaemonError::SocketInUse { .. })
        ));
        drop(first);
        // The file is still there, but nobody accepts on it.
        assert!(path.exists());
        bind_unix(&path).unwrap();
        let plain = dir.path().join("file");
        std::fs::write(&plain, "x").unwrap();
        assert!(bind_unix(&plain).is_err());
    }
}
