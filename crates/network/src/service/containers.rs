//! The network records' side of a container's life, for the runtime: checking its addresses
//! and attaching its new network namespace when it starts, carrying a rename, releasing its
//! endpoints when it is removed. Apart from the network operations in `service.rs` (create,
//! connect, remove, ...) because these are driven by the container's life, not by a network
//! command.

use super::{Networks, Place};
use crate::error::{NetworkError, Result};
use crate::kernel::attach;
use crate::netlink;
use crate::state::{EndpointRecord, NetworkRecord};

impl Networks {
    /// Whether the container `id` runs (its running lock in the store is held). A probe that
    /// fails counts as running: an address is then kept rather than given twice.
    fn container_runs(&self, id: &str) -> bool {
        kiln_store::Store::open(&self.store_root)
            .and_then(|store| store.container_is_running(id))
            .unwrap_or(true)
    }

    /// Removes all of a removed container's endpoints, releasing their addresses.
    pub fn release_container(&self, container_id: &str) -> Result<()> {
        // The records as they are: removing a container that was on no network writes nothing.
        let lock = self.files.lock(true)?;
        let mut state = self.files.read(&lock)?;
        let mut released = Vec::new();
        for network in &mut state.networks {
            released.extend(network.endpoints.remove(container_id));
        }
        if released.is_empty() {
            return Ok(());
        }
        // No link to remove: a removed container is not running, and its pairs went with its
        // namespace (the kernel removes them, asynchronously; an explicit removal would wait
        // for an RCU grace period per link). A stale host end is removed before the next
        // pair of that name is made.
        self.files.write(&lock, &state)
    }

    /// A renamed container's endpoints carry its new name, which the embedded DNS answers
    /// from then on (and the old one no more), as dockerd's does.
    pub fn rename_container(&self, container_id: &str, new_name: &str) -> Result<()> {
        let lock = self.files.lock(true)?;
        let mut state = self.files.read(&lock)?;
        let mut changed = false;
        for network in &mut state.networks {
            if let Some(endpoint) = network.endpoints.get_mut(container_id) {
                changed |= endpoint.container_name != new_name;
                endpoint.container_name = new_name.to_owned();
            }
        }
        if !changed {
            return Ok(());
        }
        self.files.write(&lock, &state)
    }

    /// The networks a container is on, each with its endpoint.
    pub fn endpoints_of(&self, container_id: &str) -> Result<Vec<(NetworkRecord, EndpointRecord)>> {
        let lock = self.files.lock(false)?;
        let state = self.files.read(&lock)?;
        Ok(state
            .endpoints_of(container_id)
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect())
    }

    /// Before a container starts: none of its addresses is held by another running container
    /// (a requested address handed over from a stopped container by [`Networks::connect`]
    /// is refused while that one runs again). Checked before the sandbox exists, so the
    /// failure leaves nothing to undo.
    pub fn check_addresses_free(&self, container_id: &str) -> Result<()> {
        let lock = self.files.lock(false)?;
        let state = self.files.read(&lock)?;
        for (network, endpoint) in state.endpoints_of(container_id) {
            let Some(ip) = endpoint.ip else { continue };
            let clash = network.endpoints.iter().any(|(id, other)| {
                id != container_id && other.ip == Some(ip) && self.container_runs(id)
            });
            if clash {
                return Err(NetworkError::AddressInUse {
                    address: ip.to_string(),
                    network: network.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Connects the new network namespace of a starting container (`netns_pid` is in it) to
    /// every network it has an endpoint on, in the order of its interfaces.
    pub fn attach_container(&self, container_id: &str, netns_pid: u32) -> Result<()> {
        // Exclusive: two starts must not both make a missing bridge.
        let lock = self.files.lock(true)?;
        let state = self.files.read(&lock)?;
        let mut endpoints: Vec<(&NetworkRecord, &EndpointRecord)> =
            state.endpoints_of(container_id).collect();
        endpoints.sort_by_key(|(_, e)| interface_number(&e.interface));
        // A rootless kiln's per-user namespace is made again when it is gone (a reboot),
        // and its bridges with it.
        let place = if endpoints.is_empty() {
            Place::Nowhere
        } else {
            self.place(true)?
        };
        for (i, (network, endpoint)) in endpoints.into_iter().enumerate() {
            attach(network, endpoint, netns_pid, i == 0, place.netns())?;
        }
        netlink::loopback_up(netns_pid)
    }

    /// Connects one endpoint into a running container's namespace (`network connect`).
    pub fn attach_endpoint(
        &self,
        network: &NetworkRecord,
        endpoint: &EndpointRecord,
        netns_pid: u32,
    ) -> Result<()> {
        let _lock = self.files.lock(true)?;
        let place = self.place(true)?;
        attach(network, endpoint, netns_pid, false, place.netns())
    }
}

fn interface_number(name: &str) -> u32 {
    name.strip_prefix("eth")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}
