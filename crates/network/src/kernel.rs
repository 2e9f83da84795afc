//! The kernel side of a bridge network: its bridge and nftables table made (undone again if
//! anything after them fails) or removed, and a container's veth pair attached to it. The
//! records are the service's; these functions only act on what a record describes.
//!
//! Each takes the namespace the bridges live in: `None` for the caller's (root), or the pid
//! of the per-user network namespace's keeper (a rootless kiln, `user_netns`).

use crate::error::{NetworkError, Result};
use crate::ipam::mac_for;
use crate::netlink::{self, VethPlan};
use crate::nft::{self, BridgeRules};
use crate::service::{host_interface, parse_mac};
use crate::state::{EndpointRecord, NetworkRecord};

/// Makes a bridge network's bridge and rules (and lets the host forward for it); on failure
/// removes what it made.
pub(crate) fn bring_up(network: &NetworkRecord, netns: Option<u32>) -> Result<()> {
    let addressing = network.addressing_for("a bridge")?;
    let created = netlink::ensure_bridge(
        netns,
        &network.bridge,
        addressing.gateway,
        addressing.subnet.prefix(),
    )?;
    let rules = BridgeRules {
        bridge: &network.bridge,
        subnet: addressing.subnet,
        internal: network.internal,
    };
    let outcome = nft::apply(netns, &rules).and_then(|()| {
        if network.internal {
            Ok(())
        } else {
            enable_forwarding(netns)
        }
    });
    if outcome.is_err() {
        let _ = nft::remove_in(netns, &network.bridge);
        if created {
            let _ = netlink::delete_link_in(netns, &network.bridge);
        }
    }
    outcome
}

pub(crate) fn tear_down(network: &NetworkRecord, netns: Option<u32>) -> Result<()> {
    nft::remove_in(netns, &network.bridge)?;
    netlink::delete_link_in(netns, &network.bridge)
}

/// Routing between the bridges and the outside needs IPv4 forwarding in their namespace
/// (`/proc/sys/net` is the calling thread's namespace's, so another namespace's is written
/// from a thread that entered it).
fn enable_forwarding(netns: Option<u32>) -> Result<()> {
    let enable = || {
        let path = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        std::fs::write(path, b"1").map_err(NetworkError::io(path))
    };
    let Some(pid) = netns else {
        return enable();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let path = format!("/proc/{pid}/ns/net");
                let ns = std::fs::File::open(&path).map_err(NetworkError::io(&path))?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&ns),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| NetworkError::io(&path)(e.into()))?;
                enable()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::io("ip_forward")(std::io::Error::other(
                    "the thread panicked",
                )))
            })
    })
}

pub(crate) fn attach(
    network: &NetworkRecord,
    endpoint: &EndpointRecord,
    netns_pid: u32,
    default_route: bool,
    bridge_netns: Option<u32>,
) -> Result<()> {
    let addressing = network.addressing_for("addresses")?;
    let ip = endpoint.ip.ok_or_else(|| NetworkError::Unsupported {
        network: network.name.clone(),
        what: "an endpoint without an address",
    })?;
    // The default bridge is made when first used, and any bridge again after a reboot.
    if !netlink::link_exists_in(bridge_netns, &network.bridge)? {
        bring_up(network, bridge_netns)?;
    }
    let host_name = host_interface(endpoint);
    // A stale host end (a crashed start) would make the pair's creation fail.
    netlink::delete_link_in(bridge_netns, &host_name)?;
    netlink::attach_veth(&VethPlan {
        bridge: &network.bridge,
        host_name: &host_name,
        inner_name: &endpoint.interface,
        address: ip,
        prefix: addressing.subnet.prefix(),
        mac: parse_mac(&endpoint.mac).unwrap_or_else(|| mac_for(ip)),
        link_local: &endpoint.link_local,
        // An internal network has no way out, so no default route through it.
        gateway: (default_route && !network.internal).then_some(addressing.gateway),
        netns_pid,
        bridge_netns_pid: bridge_netns,
    })
}
