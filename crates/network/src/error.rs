//! The network crate's one error type; every variant has a kind, so the CLI's exit and the
//! daemon's HTTP status come from what went wrong, not from the text.

use std::path::PathBuf;

use kiln_error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("network name {0:?} is ambiguous: it matches more than one network")]
    Ambiguous(String),
    #[error("network with name {0} already exists")]
    NameInUse(String),
    #[error("invalid network name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("subnet {subnet} overlaps with network {other} ({other_subnet})")]
    Overlap {
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("no free subnet left for a new network: give one with --subnet")]
    NoFreeSubnet,
    #[error("address {address} on network {network} is already in use")]
    AddressInUse { address: String, network: String },
    #[error("no free address left on network {0}")]
    Exhausted(String),
    #[error("{name} is a pre-defined network and cannot be {action}")]
    Predefined { name: String, action: &'static str },
    #[error("error while removing network: network {name} has active endpoints ({containers})")]
    InUse { name: String, containers: String },
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("network {network} does not support {what}")]
    Unsupported { network: String, what: &'static str },
    #[error(
        "bridge networks need root, or a rootless kiln (which runs in a user namespace of its \
         own): use the default network, none or host"
    )]
    NeedsRoot,
    /// The per-user network namespace was made by a kiln in another user namespace than this
    /// one (a `kiln serve` started before it): this kiln has no capability over it.
    #[error(
        "the per-user network namespace (kept by pid {pid}) belongs to another user namespace \
         than this kiln's: restart this kiln (kiln serve) so that it joins it"
    )]
    ForeignUserNamespace { pid: u32 },
    /// The per-user network namespace of a rootless kiln could not be made.
    #[error("cannot make the per-user network namespace of rootless networks: {0}")]
    UserNamespace(Box<kiln_sandbox::SandboxError>),
    /// A netlink request the kernel refused or could not be sent.
    #[error("{action}: {message}")]
    Netlink { action: String, message: String },
    /// nftables refused the rules, or the `nft` program is missing.
    #[error("{action}: {message}")]
    Nftables { action: String, message: String },
    /// A published port's host side cannot be bound (dockerd's wording).
    #[error("Bind for {address}/{protocol} failed: {reason}")]
    PortInUse {
        address: String,
        protocol: &'static str,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: damaged network records: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The store the records live in (the DNS server asks it which containers run).
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

impl NetworkError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetworkError::NoSuchNetwork(_) | NetworkError::NotConnected { .. } => {
                ErrorKind::NotFound
            }
            NetworkError::NameInUse(_)
            | NetworkError::AddressInUse { .. }
            | NetworkError::InUse { .. }
            | NetworkError::AlreadyConnected { .. }
            | NetworkError::PortInUse { .. } => ErrorKind::Conflict,
            NetworkError::Ambiguous(_)
            | NetworkError::InvalidName { .. }
            | NetworkError::Invalid { .. }
            | NetworkError::Overlap { .. }
            | NetworkError::Predefined { .. }
            | NetworkError::Unsupported { .. } => ErrorKind::InvalidArgument,
            NetworkError::NoFreeSubnet | NetworkError::Exhausted(_) => ErrorKind::Unavailable,
            NetworkError::NeedsRoot => ErrorKind::Unauthorized,
            NetworkError::Netlink { .. }
            | NetworkError::Nftables { .. }
            | NetworkError::Io { .. }
            | NetworkError::Corrupt { .. } => ErrorKind::Internal,
            NetworkError::Store(e) => e.kind(),
            NetworkError::ForeignUserNamespace { .. } => ErrorKind::Unavailable,
            NetworkError::UserNamespace(e) => e.kind(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetworkError {
        let path = path.into();
        move |source| NetworkError::Io { path, source }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> NetworkError {
        NetworkError::Invalid {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
