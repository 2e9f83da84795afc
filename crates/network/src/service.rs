//! The network operations the CLI and the Engine API share: create, list, inspect, remove,
//! prune, connect, disconnect, and, for the runtime, attaching a starting container's network
//! namespace and releasing a removed container's addresses.
//!
//! Records change under the records' exclusive lock, and the kernel objects (bridge, nftables
//! table, veth pairs) are made before the record that names them is written and removed
//! again if anything after them fails, so a failed operation leaves neither a record without
//! its objects nor objects without a record.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::{NetworkError, Result};
use crate::ipam::{Addressing, Ipv4Net, default_pools, mac_for, mac_string};
use crate::kernel::{bring_up, tear_down};
use crate::netlink;
use crate::state::{
    Driver, EndpointRecord, NetworkRecord, SCHEMA_VERSION, State, StateFiles, StateLock, random_id,
    validate_name,
};
use crate::user_netns;

mod containers;

/// The default bridge network's name, subnet and interface (Docker's `bridge`/`docker0`).
pub const DEFAULT_BRIDGE: &str = "bridge";
pub const DEFAULT_BRIDGE_INTERFACE: &str = "kiln0";
const DEFAULT_SUBNET: &str = "172.17.0.0/16";

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    /// `bridge` when `None`.
    pub driver: Option<String>,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Addresses of the subnet never handed out, by name.
    pub aux_addresses: BTreeMap<String, Ipv4Addr>,
}

/// What a container asks of a network when connected (`--network-alias`, `--ip`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRequest {
    pub aliases: Vec<String>,
    pub ip: Option<Ipv4Addr>,
    /// The lowest `ethN` the interface may be named (1 when the container's `eth0` is the
    /// default network's, slirp4netns).
    pub first_interface: u32,
    /// `MacAddress` (else Docker's, from the address).
    pub mac: Option<[u8; 6]>,
    /// `LinkLocalIPs`.
    pub link_local: Vec<Ipv4Addr>,
    pub driver_opts: BTreeMap<String, String>,
    /// `Links`: `container:alias` each (a bare name is its own alias).
    pub links: Vec<String>,
}

/// The network operations over one store's records.
#[derive(Debug, Clone)]
pub struct Networks {
    pub(crate) files: StateFiles,
    pub(crate) store_root: PathBuf,
}

/// Whether this kiln may make bridges, veth pairs and rules: root of the host's user
/// namespace (rootless kiln is root of a user namespace of its own, whose network namespace
/// it does not own).
pub fn privileged() -> bool {
    rustix::process::geteuid().is_root() && !kiln_store::in_user_namespace()
}

/// Whether this is a rootless kiln: root of a user namespace of its own, whose user-defined
/// networks live in the per-user network namespace (`user_netns`).
pub fn rootless() -> bool {
    rustix::process::geteuid().is_root() && kiln_store::in_user_namespace()
}

/// Bridge networks need either.
pub(crate) fn require_root() -> Result<()> {
    if privileged() || rootless() {
        Ok(())
    } else {
        Err(NetworkError::NeedsRoot)
    }
}

/// Where this kiln's bridges, rules and host-side veth ends are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The caller's network namespace (root).
    Host,
    /// The per-user network namespace, of the keeper with this pid (rootless).
    User(u32),
    /// Rootless, and no per-user namespace exists: no kernel object to remove either.
    Nowhere,
}

impl Place {
    fn netns(self) -> Option<u32> {
        match self {
            Place::User(pid) => Some(pid),
            Place::Host | Place::Nowhere => None,
        }
    }
}

/// The host end of an endpoint's veth pair, named from the endpoint's ID (15 characters, the
/// kernel's limit) so removal finds it without asking the container.
pub fn host_interface(endpoint: &EndpointRecord) -> String {
    format!("veth{}", &endpoint.endpoint_id[..11])
}

impl Networks {
    pub fn open(store_root: &Path) -> Networks {
        Networks {
            files: StateFiles::new(store_root),
            store_root: store_root.to_owned(),
        }
    }

    /// Where the bridges are; a rootless kiln starts the per-user namespace when `start` (call
    /// with the records' exclusive lock held).
    fn place(&self, start: bool) -> Result<Place> {
        if !rootless() {
            return Ok(Place::Host);
        }
        if start {
            return user_netns::ensure(&self.store_root).map(Place::User);
        }
        Ok(user_netns::find(&self.store_root)?.map_or(Place::Nowhere, Place::User))
    }

    /// The pid of the per-user network namespace's keeper when this kiln is rootless and has
    /// one (a published port's proxy dials containers' addresses from there).
    pub fn user_netns_pid(&self) -> Result<Option<u32>> {
        Ok(self.place(false)?.netns())
    }

    /// A rootless kiln with no user-defined network left ends its per-user namespace. Call
    /// with the records' exclusive lock held.
    fn stop_user_netns_if_unused(&self, state: &State) {
        if rootless() && !state.networks.iter().any(|n| !n.predefined) {
            user_netns::stop(&self.store_root);
        }
    }

    /// Whether the container `id` exists and is stopped. The endpoint of a container that
    /// no longer exists (a removal cut short) keeps its address until `kiln check --repair`.
    fn container_stopped(&self, id: &str) -> bool {
        kiln_store::Store::open(&self.store_root).is_ok_and(|store| {
            store.find_container(id).is_ok() && store.container_is_running(id).is_ok_and(|r| !r)
        })
    }

    /// The records, locked, with the predefined networks (`bridge`, `host`, `none`) added the
    /// first time.
    fn load(&self, exclusive: bool) -> Result<(StateLock, State)> {
        let lock = self.files.lock(exclusive)?;
        let state = self.files.read(&lock)?;
        if state.networks.iter().filter(|n| n.predefined).count() == 3 {
            return Ok((lock, state));
        }
        drop(lock);
        let lock = self.files.lock(true)?;
        let mut state = self.files.read(&lock)?;
        let now = chrono::Utc::now();
        for (name, driver) in [
            (DEFAULT_BRIDGE, Driver::Bridge),
            ("host", Driver::Host),
            ("none", Driver::Null),
        ] {
            if state
                .networks
                .iter()
                .any(|n| n.predefined && n.name == name)
            {
                continue;
            }
            let addressing = (driver == Driver::Bridge)
                .then(|| Addressing::new(DEFAULT_SUBNET.parse()?, None, None))
                .transpose()?;
            state.networks.push(NetworkRecord {
                id: random_id()?,
                name: name.to_owned(),
                driver,
                created: now,
                addressing,
                internal: false,
                labels: BTreeMap::new(),
                bridge: if driver == Driver::Bridge {
                    DEFAULT_BRIDGE_INTERFACE.to_owned()
                } else {
                    String::new()
                },
                predefined: true,
                endpoints: BTreeMap::new(),
                aux_addresses: BTreeMap::new(),
            });
        }
        state.schema_version = SCHEMA_VERSION;
        self.files.write(&lock, &state)?;
        Ok((lock, state))
    }

    pub fn list(&self) -> Result<Vec<NetworkRecord>> {
        Ok(self.load(false)?.1.networks)
    }

    pub fn inspect(&self, name_or_id: &str) -> Result<NetworkRecord> {
        self.load(false)?.1.find(name_or_id).cloned()
    }

    /// Creates a bridge network: checks the name and addressing against every network, makes
    /// the bridge and its rules, then records it.
    pub fn create(&self, request: &CreateRequest) -> Result<NetworkRecord> {
        validate_name(&request.name)?;
        match request.driver.as_deref().unwrap_or("bridge") {
            "bridge" => {}
            other => {
                return Err(NetworkError::invalid(
                    "driver",
                    other,
                    "only the bridge driver can be created",
                ));
            }
        }
        if request.gateway.is_some() && request.subnet.is_none() {
            return Err(NetworkError::invalid(
                "gateway",
                request.gateway.map(|g| g.to_string()).unwrap_or_default(),
                "a gateway needs a --subnet",
            ));
        }
        if request.ip_range.is_some() && request.subnet.is_none() {
            return Err(NetworkError::invalid(
                "ip range",
                request.ip_range.map(|r| r.to_string()).unwrap_or_default(),
                "an IP range needs a --subnet",
            ));
        }
        require_root()?;
        let (lock, mut state) = self.load(true)?;
        if state.networks.iter().any(|n| n.name == request.name) {
            return Err(NetworkError::NameInUse(request.name.clone()));
        }
        // A rootless kiln's per-user namespace reaches the outside through slirp4netns'
        // network, which no bridge may overlap.
        let outbound: Ipv4Net = "10.0.2.0/24".parse()?;
        let subnet = match request.subnet {
            Some(subnet) if rootless() && subnet.overlaps(outbound) => {
                return Err(NetworkError::Overlap {
                    subnet: subnet.to_string(),
                    other: "slirp4netns (the rootless networks' way out)".into(),
                    other_subnet: outbound.to_string(),
                });
            }
            Some(subnet) => {
                if subnet.has_host_bits() {
                    return Err(NetworkError::invalid(
                        "subnet",
                        subnet,
                        format!(
                            "host bits are set: did you mean {}/{}?",
                            subnet.network(),
                            subnet.prefix()
                        ),
                    ));
                }
                if let Some(other) = state
                    .networks
                    .iter()
                    .find(|n| n.subnet().is_some_and(|s| s.overlaps(subnet)))
                {
                    return Err(NetworkError::Overlap {
                        subnet: subnet.to_string(),
                        other: other.name.clone(),
                        other_subnet: other.subnet().map(|s| s.to_string()).unwrap_or_default(),
                    });
                }
                subnet
            }
            None => default_pools()
                .find(|pool| {
                    !state
                        .networks
                        .iter()
                        .any(|n| n.subnet().is_some_and(|s| s.overlaps(*pool)))
                })
                .ok_or(NetworkError::NoFreeSubnet)?,
        };
        let addressing = Addressing::new(subnet, request.gateway, request.ip_range)?;
        for (name, ip) in &request.aux_addresses {
            if !subnet.contains(*ip) || *ip == addressing.gateway {
                return Err(NetworkError::invalid(
                    "auxiliary address",
                    format!("{name}={ip}"),
                    format!("not a free address of the subnet {subnet}"),
                ));
            }
        }
        let id = random_id()?;
        let bridge = format!("kiln-{}", &id[..10]);
        let record = NetworkRecord {
            id,
            name: request.name.clone(),
            driver: Driver::Bridge,
            created: chrono::Utc::now(),
            addressing: Some(addressing),
            internal: request.internal,
            labels: request.labels.clone(),
            bridge,
            predefined: false,
            endpoints: BTreeMap::new(),
            aux_addresses: request.aux_addresses.clone(),
        };
        let place = self.place(true)?;
        if let Err(e) = bring_up(&record, place.netns()) {
            self.stop_user_netns_if_unused(&state);
            return Err(e);
        }
        state.networks.push(record.clone());
        if let Err(e) = self.files.write(&lock, &state) {
            let _ = tear_down(&record, place.netns());
            state.networks.retain(|n| n.id != record.id);
            self.stop_user_netns_if_unused(&state);
            return Err(e);
        }
        Ok(record)
    }

    /// Removes a network no container is connected to: its rules, its bridge, its record.
    pub fn remove(&self, name_or_id: &str) -> Result<NetworkRecord> {
        let (lock, mut state) = self.load(true)?;
        let record = state.find(name_or_id)?.clone();
        if record.predefined {
            return Err(NetworkError::Predefined {
                name: record.name,
                action: "removed",
            });
        }
        if !record.endpoints.is_empty() {
            let containers: Vec<&str> = record
                .endpoints
                .values()
                .map(|e| e.container_name.as_str())
                .collect();
            return Err(NetworkError::InUse {
                name: record.name.clone(),
                containers: containers.join(", "),
            });
        }
        require_root()?;
        let place = self.place(false)?;
        if place != Place::Nowhere {
            tear_down(&record, place.netns())?;
        }
        state.networks.retain(|n| n.id != record.id);
        self.files.write(&lock, &state)?;
        self.stop_user_netns_if_unused(&state);
        Ok(record)
    }

    /// Removes every user-defined network without containers; gives their names.
    pub fn prune(&self) -> Result<Vec<String>> {
        let unused: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|n| !n.predefined && n.endpoints.is_empty())
            .map(|n| n.id)
            .collect();
        let mut removed = Vec::new();
        for id in unused {
            match self.remove(&id) {
                Ok(record) => removed.push(record.name),
                // Connected to or removed in the meantime: not unused any more.
                Err(NetworkError::InUse { .. } | NetworkError::NoSuchNetwork(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Records a container's endpoint on a network: checks what it asks for and gives it an
    /// address. Connecting a running container's namespace is [`Networks::attach_endpoint`].
    pub fn connect(
        &self,
        name_or_id: &str,
        container_id: &str,
        container_name: &str,
        request: &EndpointRequest,
    ) -> Result<(NetworkRecord, EndpointRecord)> {
        require_root()?;
        let (lock, mut state) = self.load(true)?;
        // The interface name: the lowest ethN the container does not use yet.
        let used: Vec<String> = state
            .endpoints_of(container_id)
            .map(|(_, e)| e.interface.clone())
            .collect();
        let interface = (request.first_interface..)
            .map(|i| format!("eth{i}"))
            .find(|name| !used.contains(name))
            .unwrap_or_default();
        let network = state.find_mut(name_or_id)?;
        if network.driver != Driver::Bridge {
            return Err(NetworkError::Unsupported {
                network: network.name.clone(),
                what: "connecting containers (use --network host or none when creating them)",
            });
        }
        if network.endpoints.contains_key(container_id) {
            return Err(NetworkError::AlreadyConnected {
                container: container_name.to_owned(),
                network: network.name.clone(),
            });
        }
        if network.predefined && rootless() {
            return Err(NetworkError::Unsupported {
                network: network.name.clone(),
                what: "containers of a rootless kiln (its default network is slirp4netns; \
                       user-defined networks work)",
            });
        }
        if network.predefined
            && (!request.aliases.is_empty() || request.ip.is_some() || !request.links.is_empty())
        {
            return Err(NetworkError::Unsupported {
                network: network.name.clone(),
                what: "aliases, links and user-chosen addresses (only user-defined networks do; \
                       the default bridge's links are HostConfig.Links)",
            });
        }
        let addressing = network.addressing_for("addresses")?;
        let mut taken = network.taken();
        let ip = match request.ip {
            Some(ip) => {
                // An address a stopped container holds is handed over, as dockerd frees
                // addresses at stop: compose recreates a service with a fixed
                // `ipv4_address` by creating the new container before it removes the old,
                // stopped one. Whichever of the two starts while the other runs fails then
                // (`check_addresses_free`).
                let stopped_holder = network
                    .endpoints
                    .iter()
                    .any(|(id, e)| e.ip == Some(ip) && self.container_stopped(id));
                if stopped_holder && !network.aux_addresses.values().any(|a| *a == ip) {
                    taken.remove(&ip);
                }
                addressing.check_requested(ip, &taken, &network.name)?;
                ip
            }
            None => addressing.allocate(&taken, &network.name)?,
        };
        let endpoint = EndpointRecord {
            endpoint_id: random_id()?,
            container_name: container_name.to_owned(),
            ip: Some(ip),
            mac: mac_string(request.mac.unwrap_or_else(|| mac_for(ip))),
            aliases: request.aliases.clone(),
            requested_ip: request.ip.is_some(),
            interface,
            requested_mac: request.mac.is_some(),
            link_local: request.link_local.clone(),
            driver_opts: request.driver_opts.clone(),
            links: request.links.clone(),
        };
        network
            .endpoints
            .insert(container_id.to_owned(), endpoint.clone());
        let network = network.clone();
        self.files.write(&lock, &state)?;
        Ok((network, endpoint))
    }

    /// Removes a container's endpoint from a network (and its interface, when the container
    /// runs in the namespace of `netns_pid`), releasing its address.
    pub fn disconnect(
        &self,
        name_or_id: &str,
        container_id: &str,
        container_name: &str,
        netns_pid: Option<u32>,
    ) -> Result<NetworkRecord> {
        let (lock, mut state) = self.load(true)?;
        let network = state.find_mut(name_or_id)?;
        let Some(endpoint) = network.endpoints.remove(container_id) else {
            return Err(NetworkError::NotConnected {
                container: container_name.to_owned(),
                network: network.name.clone(),
            });
        };
        let network = network.clone();
        if let Some(pid) = netns_pid {
            netlink::detach_inside(pid, &endpoint.interface)?;
        }
        let place = self.place(false)?;
        if place != Place::Nowhere {
            netlink::delete_link_in(place.netns(), &host_interface(&endpoint))?;
        }
        self.files.write(&lock, &state)?;
        Ok(network)
    }
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}
