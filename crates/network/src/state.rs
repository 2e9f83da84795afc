//! The network records on disk: one JSON file for every network and its endpoints, read and
//! rewritten whole under a lock.
//!
//! ```text
//! networks/networks.json   schema version; each network: ID, name, driver, addressing,
//!                          options, labels, and its endpoints (container ID → address, MAC,
//!                          aliases)
//! networks/networks.lock   flock held for each read-modify-write (shared for reads)
//! ```
//!
//! One file rather than one per network because an address must be checked against the
//! whole network and a new subnet against every network: both are one look at one file under
//! one lock, and each change lands with one rename, so a crash leaves the old file or the new.
//! The endpoints of a network are its IPAM record: an address is taken while an endpoint
//! holds it and free once the endpoint is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};
use crate::ipam::{Addressing, Ipv4Net};

pub const SCHEMA_VERSION: u32 = 1;

/// The drivers kiln knows, by Docker's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    Null,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }
}

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub created: chrono::DateTime<chrono::Utc>,
    /// `None` for `host` and `none`.
    #[serde(default)]
    pub addressing: Option<Addressing>,
    /// No way out: no masquerade, nothing forwarded off the bridge.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The bridge's interface name (`kiln0`, `kiln-<10 hex>`).
    #[serde(default)]
    pub bridge: String,
    /// `bridge`, `host` and `none`: made by kiln, never removed.
    #[serde(default)]
    pub predefined: bool,
    /// Container ID → its endpoint.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointRecord>,
    /// `--aux-address`/`AuxiliaryAddresses`: name → an address of the subnet never handed
    /// out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

/// A container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointRecord {
    /// 64 hex digits.
    pub endpoint_id: String,
    pub container_name: String,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// `aa:bb:…` or empty.
    #[serde(default)]
    pub mac: String,
    /// `--network-alias`/`--alias` (the short ID is added when shown, as Docker does).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether `--ip` chose the address (kept across restarts, shown as `IPAMConfig`).
    #[serde(default)]
    pub requested_ip: bool,
    /// The interface's name in the container (`eth0`, `eth1`, …), fixed at connect time.
    #[serde(default)]
    pub interface: String,
    /// Whether the MAC address was asked for (`MacAddress`), so it is shown before start.
    #[serde(default)]
    pub requested_mac: bool,
    /// `LinkLocalIPs`: more addresses of the interface (each a /16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local: Vec<Ipv4Addr>,
    /// `DriverOpts`, kept and shown as given (the bridge driver has none per endpoint).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `Links` on a user-defined network: `container:alias` each, names only this container
    /// resolves (dockerd's links there are container-scoped DNS aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

impl NetworkRecord {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Addresses held on this network: the gateway and each endpoint's.
    pub fn taken(&self) -> BTreeSet<Ipv4Addr> {
        self.endpoints
            .values()
            .filter_map(|e| e.ip)
            .chain(self.aux_addresses.values().copied())
            .collect()
    }

    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.addressing.map(|a| a.subnet)
    }

    /// The addressing `what` needs; a network without one (`none`, `host`) cannot give it.
    pub(crate) fn addressing_for(&self, what: &'static str) -> Result<Addressing> {
        self.addressing.ok_or_else(|| NetworkError::Unsupported {
            network: self.name.clone(),
            what,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    pub schema_version: u32,
    pub networks: Vec<NetworkRecord>,
}

impl State {
    /// Finds a network as Docker does: full ID, then exact name, then unique ID prefix.
    pub fn find(&self, name_or_id: &str) -> Result<&NetworkRecord> {
        let index = self.position(name_or_id)?;
        Ok(&self.networks[index])
    }

    pub fn find_mut(&mut self, name_or_id: &str) -> Result<&mut NetworkRecord> {
        let index = self.position(name_or_id)?;
        Ok(&mut self.networks[index])
    }

    fn position(&self, name_or_id: &str) -> Result<usize> {
        if name_or_id.is_empty() {
            return Err(NetworkError::NoSuchNetwork(String::new()));
        }
        if let Some(i) = self.networks.iter().position(|n| n.id == name_or_id) {
            return Ok(i);
        }
        if let Some(i) = self.networks.iter().position(|n| n.name == name_or_id) {
            return Ok(i);
        }
        let mut matches = self
            .networks
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.starts_with(name_or_id));
        match (matches.next(), matches.next()) {
            (Some((i, _)), None) => Ok(i),
            (Some(_), Some(_)) => Err(NetworkError::Ambiguous(name_or_id.to_owned())),
            _ => Err(NetworkError::NoSuchNetwork(name_or_id.to_owned())),
        }
    }

    /// The networks a container is on, with its endpoint on each.
    pub fn endpoints_of<'a>(
        &'a self,
        container_id: &'a str,
    ) -> impl Iterator<Item = (&'a NetworkRecord, &'a EndpointRecord)> + 'a {
        self.networks
            .iter()
            .filter_map(move |n| n.endpoints.get(container_id).map(|e| (n, e)))
    }
}

/// The records' files under a store root.
#[derive(Debug, Clone)]
pub struct StateFiles {
    dir: PathBuf,
}

/// A held lock on the records; released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateFiles {
    pub fn new(store_root: &Path) -> StateFiles {
        StateFiles {
            dir: store_root.join("networks"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("networks.json")
    }

    /// Locks the records: `exclusive` for a change, shared for a read.
    pub fn lock(&self, exclusive: bool) -> Result<StateLock> {
        std::fs::create_dir_all(&self.dir).map_err(NetworkError::io(&self.dir))?;
        let path = self.dir.join("networks.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(NetworkError::io(&path))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(&file, op).map_err(|e| NetworkError::io(&path)(e.into()))?;
        Ok(StateLock { _file: file })
    }

    /// Reads the records (an empty state when there are none yet). Hold a lock.
    pub fn read(&self, _lock: &StateLock) -> Result<State> {
        let path = self.file();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    schema_version: SCHEMA_VERSION,
                    networks: Vec::new(),
                });
            }
            Err(e) => return Err(NetworkError::io(path)(e)),
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| NetworkError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.schema_version > SCHEMA_VERSION {
            return Err(NetworkError::Corrupt {
                path,
                message: format!(
                    "schema version {} is newer than this kiln's {SCHEMA_VERSION}",
                    state.schema_version
                ),
            });
        }
        Ok(state)
    }

    /// Replaces the records (write to a temporary file, fsync, rename). Hold the lock
    /// exclusively.
    pub fn write(&self, _lock: &StateLock, state: &State) -> Result<()> {
        let path = self.file();
        let tmp = self.dir.join("networks.json.tmp");
        let json = serde_json::to_vec_pretty(state).map_err(|e| NetworkError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(NetworkError::io(&tmp))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(NetworkError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(NetworkError::io(&path))
    }
}

/// Checks a network name. dockerd takes almost any name (`test 01` included, which docker-py
/// checks); kiln refuses what would break a path or a listing: an empty name, `/`, control
/// characters, `.`/`..`, more than 128 bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| NetworkError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.trim().is_empty() {
        return Err(bad("the name is empty"));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(bad("'/' and control characters are not allowed"));
    }
    if name == "." || name == ".." {
        return Err(bad("'.' and '..' are not names"));
    }
    if name.len() > 128 {
        return Err(bad("it is longer than 128 characters"));
    }
    Ok(())
}

/// 64 random hex digits, for network and endpoint IDs.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let path = "/dev/urandom";
    std::io::Read::read_exact(
        &mut File::open(path).map_err(NetworkError::io(path))?,
        &mut bytes,
    )
    .map_err(NetworkError::io(path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> NetworkRecord {
        NetworkRecord {
            id: id.into(),
            name: name.into(),
            driver: Driver::Bridge,
            created: chrono::Utc::now(),
            addressing: None,
            internal: false,
            labels: BTreeMap::new(),
            bridge: String::new(),
            predefined: false,
            endpoints: BTreeMap::new(),
            aux_addresses: BTreeMap::new(),
        }
    }

    #[test]
    fn find_by_id_name_and_unique_prefix() {
        let state = State {
            schema_version: SCHEMA_VERSION,
            networks: vec![
                record(&"ab".repeat(32), "front"),
                record(&format!("ac{}", "0".repeat(62)), "back"),
                // A name that is another network's ID prefix: the name wins.
                record(&"cd".repeat(32), "ab"),
            ],
        };
        assert_eq!(state.find("front").unwrap().name, "front");
        assert_eq!(state.find("abab").unwrap().name, "front");
        assert_eq!(state.find("ab").unwrap().name, "ab");
        assert!(matches!(state.find("a"), Err(NetworkError::Ambiguous(_))));
        let err = state.find("nope").unwrap_err();
        assert_eq!(err.to_string(), "network nope not found");
        assert_eq!(err.kind(), kiln_error::ErrorKind::NotFound);
    }

    #[test]
    fn names_as_docker_allows() {
        for good in ["a", "my-net", "n_1.x", "9lives", "test 01", "-x"] {
            validate_name(good).unwrap();
        }
        for bad in ["", " ", "a/b", "a\nb", "..", "."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        let lock = files.lock(true).unwrap();
        let mut state = files.read(&lock).unwrap();
        assert!(state.networks.is_empty());
        let mut net = record(&random_id().unwrap(), "n");
        net.endpoints.insert(
            "c".repeat(64),
            EndpointRecord {
                endpoint_id: random_id().unwrap(),
                container_name: "web".into(),
                ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
                mac: "02:42:0a:00:00:02".into(),
                aliases: vec!["w".into()],
                requested_ip: false,
                interface: "eth0".into(),
                requested_mac: false,
                link_local: Vec::new(),
                driver_opts: BTreeMap::new(),
                links: Vec::new(),
            },
        );
        state.networks.push(net.clone());
        files.write(&lock, &state).unwrap();
        let again = files.read(&lock).unwrap();
        assert_eq!(again.networks, vec![net]);
        std::fs::write(dir.path().join("networks/networks.json"), b"{").unwrap();
        assert!(matches!(
            files.read(&lock),
            Err(NetworkError::Corrupt { .. })
        ));
    }
}
