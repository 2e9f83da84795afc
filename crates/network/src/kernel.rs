//! The kernel side of a bridge network: its bridge and nftables table made (undone again if
//! anything after them fails) or removed, and a container's veth pair attached to it. The
//! records are the service's; these functions only act on what a record describes.

use crate::error::{NetworkError, Result};
use crate::ipam::mac_for;
use crate::netlink::{self, VethPlan};
use crate::nft::{self, BridgeRules};
use crate::service::{host_interface, parse_mac, require_root};
use crate::state::{EndpointRecord, NetworkRecord};

/// Makes a bridge network's bridge and rules (and lets the host forward for it); on failure
/// removes what it made.
pub(crate) fn bring_up(network: &NetworkRecord) -> Result<()> {
    require_root()?;
    let addressing = network
        .addressing
        .ok_or_else(|| NetworkError::Unsupported {
            network: network.name.clone(),
            what: "a bridge",
        })?;
    let created = netlink::ensure_bridge(
        &network.bridge,
        addressing.gateway,
        addressing.subnet.prefix(),
    )?;
    let rules = BridgeRules {
        bridge: &network.bridge,
        subnet: addressing.subnet,
        internal: network.internal,
    };
    let outcome = nft::apply(&rules).and_then(|()| {
        if network.internal {
            Ok(())
        } else {
            enable_forwarding()
        }
    });
    if outcome.is_err() {
        let _ = nft::remove(&network.bridge);
        if created {
            let _ = netlink::delete_link(&network.bridge);
        }
    }
    outcome
}

pub(crate) fn tear_down(network: &NetworkRecord) {
    let _ = nft::remove(&network.bridge);
    let _ = netlink::delete_link(&network.bridge);
}

/// Routing between the bridges and the outside needs IPv4 forwarding in this namespace.
fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, b"1").map_err(NetworkError::io(path))
}

pub(crate) fn attach(
    network: &NetworkRecord,
    endpoint: &EndpointRecord,
    netns_pid: u32,
    default_route: bool,
) -> Result<()> {
    let addressing = network
        .addressing
        .ok_or_else(|| NetworkError::Unsupported {
            network: network.name.clone(),
            what: "addresses",
        })?;
    let ip = endpoint.ip.ok_or_else(|| NetworkError::Unsupported {
        network: network.name.clone(),
        what: "an endpoint without an address",
    })?;
    // The default bridge is made when first used, and any bridge again after a reboot.
    if !netlink::link_exists(&network.bridge)? {
        bring_up(network)?;
    }
    let host_name = host_interface(endpoint);
    // A stale host end (a crashed start) would make the pair's creation fail.
    netlink::delete_link(&host_name)?;
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
    })
}
