//! The caller-facing description of a sandbox (filesystem, network, mounts) and of the process
//! to run in it. These types are also what the host serializes to the init.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::caps::Capabilities;

/// The environment a sandboxed process runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Read-only layers, topmost first. May be empty (a `FROM scratch` root).
    pub lower_dirs: Vec<PathBuf>,
    /// Overlay upper directory: every change the process makes lands here.
    pub upper_dir: PathBuf,
    /// Overlay work directory: empty, on the same filesystem as `upper_dir`, and not nested
    /// inside it (nor it inside this).
    pub work_dir: PathBuf,
    pub network: NetworkMode,
    pub hostname: String,
    /// Extra mounts, applied after the standard ones, in order (a mount inside another's
    /// target must come after it).
    pub mounts: Vec<Mount>,
    /// Capabilities, seccomp, no_new_privs, read-only root: Docker's defaults by default.
    #[serde(default)]
    pub security: SecurityOptions,
    /// cgroup limits; none by default.
    #[serde(default)]
    pub resources: ResourceLimits,
    /// Extra `/etc/hosts` entries (`--add-host`), written after the standard ones in order.
    #[serde(default)]
    pub extra_hosts: Vec<ExtraHost>,
    /// Nameservers for `/etc/resolv.conf` instead of the host's (a bridge network's embedded
    /// DNS server); the host's `search` and `options` lines are kept.
    #[serde(default)]
    pub dns: Vec<std::net::IpAddr>,
    /// Size of the `/dev/shm` tmpfs in bytes (`--shm-size`); Docker's 64 MiB when absent.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Resource limits the process starts with (`--ulimit`), set by the init before it
    /// executes the program; the inherited ones when empty.
    #[serde(default)]
    pub ulimits: Vec<crate::Ulimit>,
    /// `/etc/hostname`, the domain name and resolv.conf's search domains and options.
    #[serde(default, skip_serializing_if = "NameSettings::is_default")]
    pub names: NameSettings,
}

/// What a container's `/etc/hostname`, UTS domain name and `/etc/resolv.conf` say beyond
/// the defaults (Docker's `--domainname`, `--dns-search`, `--dns-option`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NameSettings {
    /// Write `/etc/hostname` and mount it, as Docker does for containers (build steps have
    /// none: the mount point would end up in the layer).
    pub etc_hostname: bool,
    /// The UTS domain name, and `HOSTNAME.DOMAIN` before the hostname in `/etc/hosts`.
    pub domainname: String,
    /// Search domains instead of the host's (`.` alone: none).
    pub dns_search: Option<Vec<String>>,
    /// resolv.conf options instead of the host's.
    pub dns_options: Option<Vec<String>>,
}

impl NameSettings {
    pub fn is_default(&self) -> bool {
        *self == NameSettings::default()
    }

    /// The names of the hostname's line in `/etc/hosts`: `HOST.DOMAIN HOST` with a domain
    /// name, as dockerd writes it.
    pub fn hosts_names(&self, hostname: &str) -> String {
        if self.domainname.is_empty() {
            hostname.to_owned()
        } else {
            format!("{hostname}.{} {hostname}", self.domainname)
        }
    }
}

/// One `--add-host NAME:ADDRESS` entry of a sandbox's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    pub address: std::net::IpAddr,
}

impl ExtraHost {
    /// Parses Docker's `NAME:ADDRESS` (split at the first `:`, so `NAME:::1` is an IPv6
    /// entry; an address may also be bracketed, `NAME:[::1]`) or BuildKit's newer `NAME=ADDRESS`.
    /// Docker's special address `host-gateway` is refused: kiln's sandboxes have no bridge
    /// whose gateway is the host.
    pub fn parse(value: &str) -> Result<ExtraHost, ExtraHostError> {
        let bad = |why: &'static str| ExtraHostError {
            value: value.to_owned(),
            why,
        };
        let (name, address) = value
            .split_once('=')
            .or_else(|| value.split_once(':'))
            .ok_or_else(|| bad("expected NAME:ADDRESS"))?;
        let name = name.trim();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(bad("the name must be non-empty, without spaces or '#'"));
        }
        let address = address.trim();
        if address == "host-gateway" {
            return Err(bad(
                "host-gateway is not supported (kiln's sandboxes have no bridge to the host)",
            ));
        }
        let address = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        let address = address
            .parse()
            .map_err(|_| bad("the address is not an IPv4 or IPv6 address"))?;
        Ok(ExtraHost {
            name: name.to_owned(),
            address,
        })
    }
}

impl std::fmt::Display for ExtraHost {
    /// Docker's `NAME:ADDRESS` form, which [`ExtraHost::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.address)
    }
}

/// An `--add-host` value that is not `NAME:ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --add-host {value:?}: {why}")]
pub struct ExtraHostError {
    value: String,
    why: &'static str,
}

impl ExtraHostError {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the value came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }
}

/// How much the process may do, with Docker's defaults for a container (and BuildKit's for a
/// RUN step) as [`Default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SecurityOptions {
    /// The bounding set, and the effective and permitted sets of a root process (a non-root
    /// user starts with none effective or permitted, as after `execve`).
    pub capabilities: Capabilities,
    /// `--security-opt no-new-privileges`: setuid binaries and file capabilities stop working.
    pub no_new_privileges: bool,
    pub seccomp: SeccompProfile,
    /// `--read-only`: the root filesystem is mounted read-only (mounts stay as they are).
    pub read_only_root: bool,
}

/// Which seccomp filter the process runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SeccompProfile {
    /// The effect of Docker's default profile (see [`denied_syscalls`](crate::denied_syscalls)).
    #[default]
    Default,
    /// `--security-opt seccomp=unconfined`: no filter.
    Unconfined,
}

impl SecurityOptions {
    /// Applies one Docker `--security-opt` value: `no-new-privileges[=true|false]` (also with
    /// `:`) or `seccomp=unconfined`. Anything else is an error naming it.
    pub fn apply_security_opt(&mut self, option: &str) -> Result<(), SecurityOptError> {
        let (key, value) = match option.split_once(['=', ':']) {
            Some((key, value)) => (key, Some(value)),
            None => (option, None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => self.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => self.no_new_privileges = false,
            ("seccomp", Some("unconfined")) => self.seccomp = SeccompProfile::Unconfined,
            ("seccomp", Some(_)) => {
                return Err(SecurityOptError::CustomSeccomp(option.to_owned()));
            }
            _ => return Err(SecurityOptError::Unsupported(option.to_owned())),
        }
        Ok(())
    }
}

/// A `--security-opt` value kiln does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityOptError {
    #[error(
        "security option {0:?}: only seccomp=unconfined is supported \
         (custom seccomp profiles are not)"
    )]
    CustomSeccomp(String),
    #[error("unsupported security option {0:?} (expected no-new-privileges or seccomp=unconfined)")]
    Unsupported(String),
}

impl SecurityOptError {
    /// Always [`kiln_error::ErrorKind::InvalidArgument`]: the option came from the caller.
    pub fn kind(&self) -> kiln_error::ErrorKind {
        kiln_error::ErrorKind::InvalidArgument
    }
}

/// cgroup limits for the whole sandbox (`kiln run --memory/--pids-limit/--cpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourceLimits {
    /// Memory in bytes (`memory.max` / `memory.limit_in_bytes`).
    pub memory_bytes: Option<u64>,
    /// Most processes and threads at once (`pids.max`).
    pub pids: Option<u64>,
    /// CPU time in billionths of a CPU, as Docker's `NanoCpus` (`--cpus 1.5` = 1_500_000_000).
    pub nano_cpus: Option<u64>,
}

impl ResourceLimits {
    /// Whether any limit is set (a sandbox without limits gets no cgroup of its own).
    pub fn any(&self) -> bool {
        self.memory_bytes.is_some() || self.pids.is_some() || self.nano_cpus.is_some()
    }
}

/// How the sandbox is connected to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NetworkMode {
    /// A fresh network namespace with only a loopback interface (brought up).
    None,
    /// The host's network namespace, shared.
    Host,
    /// Like Docker's bridge: a fresh network namespace with loopback and an `eth0` that reaches
    /// what the host reaches through user-mode NAT (slirp4netns), except the host's loopback.
    /// Needs `slirp4netns` installed ([`crate::network_helper`] tells whether it is).
    Default,
    /// A fresh network namespace with loopback only, which the caller connects (the callback
    /// of [`crate::spawn_prepared`]: a bridge network's veth pair) before the process runs.
    /// The sandbox knows nothing of what is attached.
    Prepared,
}

impl NetworkMode {
    /// The mode's name as BuildKit spells it (`none`, `host`, `default`).
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
            NetworkMode::Default => "default",
            NetworkMode::Prepared => "prepared",
        }
    }
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Host path (file or directory); must exist.
    pub source: PathBuf,
    /// Absolute path inside the sandbox; created (and cleaned up afterwards) if missing.
    pub target: String,
    pub readonly: bool,
}

/// Something mounted into the sandbox at an absolute target path. Missing targets are created
/// (and removed afterwards if still untouched, so they never show in the upper dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    Bind(BindMount),
    Tmpfs(TmpfsMount),
    File(FileMount),
}

impl Mount {
    /// Where the mount appears inside the sandbox.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind(m) => &m.target,
            Mount::Tmpfs(m) => &m.target,
            Mount::File(m) => &m.target,
        }
    }
}

impl From<BindMount> for Mount {
    fn from(mount: BindMount) -> Self {
        Mount::Bind(mount)
    }
}

/// A fresh, empty in-memory filesystem, gone when the sandbox exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    pub target: String,
    /// Size limit in bytes; `None` is the kernel's default (half of RAM).
    pub size: Option<u64>,
}

/// A read-only file with the given bytes (a build secret). The bytes travel to the init over
/// its spec pipe and live only in a tmpfs private to the sandbox's mount namespace, so they
/// never touch a disk; the mount point stub is removed afterwards like every other.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    pub target: String,
    pub contents: Vec<u8>,
    /// Permission bits of the file.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for FileMount {
    // The contents are secret: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMount")
            .field("target", &self.target)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

/// The process to run inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Command line; `args[0]` is looked up in the `PATH` of `env` unless it contains a slash.
    pub args: Vec<String>,
    /// The exact environment (`KEY=value`) the process gets; nothing is added.
    pub env: Vec<String>,
    /// Working directory inside the sandbox; created if missing, as Docker does for WORKDIR.
    pub cwd: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; `None` runs as root (uid 0, gid 0).
    pub user: Option<String>,
    /// Stdin is a terminal (a pty the caller opened) that becomes the process's controlling
    /// terminal, the process leading a session of its own (`kiln run -t`).
    #[serde(default)]
    pub terminal: bool,
}

/// The standard streams of the sandboxed process.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: std::process::Stdio,
    pub stdout: std::process::Stdio,
    pub stderr: std::process::Stdio,
}

impl Stdio {
    /// All three streams shared with the caller (for `kiln run`).
    pub fn inherit() -> Self {
        Stdio {
            stdin: std::process::Stdio::inherit(),
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        }
    }

    /// No stdin, stdout and stderr captured through pipes (for build steps).
    pub fn piped() -> Self {
        Stdio {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::piped(),
            stderr: std::process::Stdio::piped(),
        }
    }

    /// All three streams connected to /dev/null.
    pub fn null() -> Self {
        Stdio {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::null(),
            stderr: std::process::Stdio::null(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_values_parse_as_docker_and_buildkit_write_them() {
        let host = ExtraHost::parse("db.local:10.0.0.5").unwrap();
        assert_eq!(host.name, "db.local");
        assert_eq!(host.address.to_string(), "10.0.0.5");
        assert_eq!(host.to_string(), "db.local:10.0.0.5");
        assert_eq!(
            ExtraHost::parse("v6:::1").unwrap().address.to_string(),
            "::1"
        );
        assert_eq!(
            ExtraHost::parse("v6:[fe80::1]")
                .unwrap()
                .address
                .to_string(),
            "fe80::1"
        );
        assert_eq!(ExtraHost::parse("eq=192.168.1.1").unwrap().name, "eq");
        for bad in [
            "nocolon",
            ":1.2.3.4",
            "a b:1.2.3.4",
            "x:not-an-ip",
            "x:host-gateway",
            "x:",
        ] {
            let err = ExtraHost::parse(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn security_opts_as_docker_spells_them() {
        let mut options = SecurityOptions::default();
        assert!(!options.no_new_privileges);
        assert_eq!(options.seccomp, SeccompProfile::Default);
        assert_eq!(options.capabilities, Capabilities::docker_default());
        options.apply_security_opt("no-new-privileges").unwrap();
        assert!(options.no_new_privileges);
        options
            .apply_security_opt("no-new-privileges:false")
            .unwrap();
        assert!(!options.no_new_privileges);
        options
            .apply_security_opt("no-new-privileges=true")
            .unwrap();
        assert!(options.no_new_privileges);
        options.apply_security_opt("seccomp=unconfined").unwrap();
        assert_eq!(options.seccomp, SeccompProfile::Unconfined);
        let err = options
            .apply_security_opt("seccomp=/etc/profile.json")
            .unwrap_err();
        assert!(err.to_string().contains("only seccomp=unconfined"), "{err}");
        assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
        let err = options.apply_security_opt("apparmor=x").unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported security option \"apparmor=x\""),
            "{err}"
        );
    }

    #[test]
    fn older_specs_without_the_new_fields_still_parse() {
        let json = r#"{"lower_dirs":[],"upper_dir":"/u","work_dir":"/w","network":"None",
            "hostname":"h","mounts":[]}"#;
        let spec: SandboxSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.security, SecurityOptions::default());
        assert!(!spec.resources.any());
    }
}
