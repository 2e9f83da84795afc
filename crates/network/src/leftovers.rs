//! What a crash can leave of kiln's networks, for `kiln check` and a starting daemon:
//! endpoints of containers that are gone, port chains of containers that are gone (both in
//! this store's own records and tables, so `repair` removes them), and bridges, host ends of
//! veth pairs and nftables tables no network or endpoint of this store names (only reported:
//! another store on the machine may own them, and nothing on a link says which). A rootless
//! kiln's per-user network namespace is its store's alone, so there such bridges and tables
//! are removed with `repair`, and a namespace no user-defined network needs any more is ended.

use crate::error::Result;
use crate::netlink;
use crate::nft;
use crate::service::{Networks, privileged, rootless};
use crate::state::{Driver, State};
use crate::user_netns;

/// Something of kiln's networks that nothing owns any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is: `network NAME`, `bridge NAME`, `nftables table NAME`.
    pub object: String,
    pub problem: String,
    /// Removed (with `repair`).
    pub repaired: bool,
}

impl Networks {
    /// What a crash can leave: endpoints of containers that are gone (a removal that died
    /// between the container's record and the release of its addresses), removed with
    /// `repair`; and — when this kiln may look at the network — kiln bridges and nftables
    /// tables no network record of this store names (a `network rm` or `create` that died
    /// half-way), only reported: another store on the same machine may own them, and nothing
    /// on a bridge tells which; port chains in this store's tables of containers that are
    /// gone, removed with `repair`. `containers` are the IDs of every container that exists.
    pub fn leftovers(
        &self,
        containers: &std::collections::BTreeSet<String>,
        repair: bool,
    ) -> Result<Vec<Leftover>> {
        let lock = self.files.lock(repair)?;
        let mut state = self.files.read(&lock)?;
        let mut found = Vec::new();
        for network in &mut state.networks {
            let gone: Vec<String> = network
                .endpoints
                .keys()
                .filter(|id| !containers.contains(*id))
                .cloned()
                .collect();
            for id in gone {
                let endpoint = if repair {
                    network.endpoints.remove(&id)
                } else {
                    network.endpoints.get(&id).cloned()
                };
                let name = endpoint.map(|e| e.container_name).unwrap_or_default();
                found.push(Leftover {
                    object: format!("network {}", network.name),
                    problem: format!(
                        "endpoint of container {name} ({}), which no longer exists",
                        &id[..12.min(id.len())]
                    ),
                    repaired: repair,
                });
            }
        }
        if repair && !found.is_empty() {
            self.files.write(&lock, &state)?;
        }
        if rootless() {
            found.extend(self.user_netns_leftovers(&state, repair)?);
            return Ok(found);
        }
        if !privileged() {
            return Ok(found);
        }
        let bridges: std::collections::BTreeSet<&str> = state
            .networks
            .iter()
            .filter(|n| n.driver == Driver::Bridge)
            .map(|n| n.bridge.as_str())
            .collect();
        let host_ends: std::collections::BTreeSet<String> = state
            .networks
            .iter()
            .flat_map(|n| n.endpoints.values())
            .map(crate::service::host_interface)
            .collect();
        for link in netlink::link_names()? {
            if link.starts_with("kiln-") && !bridges.contains(link.as_str()) {
                found.push(Leftover {
                    object: format!("bridge {link}"),
                    problem: format!(
                        "no network of this store names it (unless another kiln store \
                         does: ip link del {link})"
                    ),
                    repaired: false,
                });
            }
            // A host end of kiln's veth pairs (`veth` and 11 hex digits of an endpoint ID:
            // Docker's have 7) whose endpoint is gone: a disconnect that died half-way.
            if is_kiln_host_end(&link) && !host_ends.contains(&link) {
                found.push(Leftover {
                    object: format!("veth {link}"),
                    problem: format!(
                        "no endpoint of this store names it (unless another kiln store \
                         does: ip link del {link})"
                    ),
                    repaired: false,
                });
            }
        }
        // Port rules of containers that are gone (a supervisor killed, then its record
        // removed by hand): in this store's own tables, so they are removed with `repair`.
        for bridge in &bridges {
            for prefix in nft::port_chains(bridge) {
                if containers.iter().any(|id| id.starts_with(&prefix)) {
                    continue;
                }
                let repaired = repair && nft::unpublish(bridge, &prefix).is_ok();
                found.push(Leftover {
                    object: format!("nftables chain ports-{prefix} of table {bridge}"),
                    problem: format!("port rules of container {prefix}, which no longer exists"),
                    repaired,
                });
            }
        }
        // `nft` may be missing where no bridge network was ever made: then there is no table.
        // The default bridge's table is every root store's on this machine (as docker0 is
        // dockerd's): it stays while any of them uses it, so it is no store's leftover.
        for table in nft::kiln_tables().unwrap_or_default() {
            if !bridges.contains(table.as_str()) && table != crate::DEFAULT_BRIDGE_INTERFACE {
                found.push(Leftover {
                    object: format!("nftables table {table}"),
                    problem: format!(
                        "no network of this store names it (unless another kiln store \
                         does: nft delete table ip {table})"
                    ),
                    repaired: false,
                });
            }
        }
        Ok(found)
    }

    /// A rootless kiln's leftovers in its per-user network namespace: the namespace itself
    /// when no user-defined network is left (a `network rm` that died before ending it), and
    /// bridges and tables there that no network names. All of it this store's: `repair`
    /// removes it.
    fn user_netns_leftovers(&self, state: &State, repair: bool) -> Result<Vec<Leftover>> {
        let Some(pid) = user_netns::find(&self.store_root)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        if !state.networks.iter().any(|n| !n.predefined) {
            if repair {
                user_netns::stop(&self.store_root);
            }
            found.push(Leftover {
                object: format!("per-user network namespace (kept by pid {pid})"),
                problem: "no user-defined network needs it".into(),
                repaired: repair,
            });
            return Ok(found);
        }
        let bridges: std::collections::BTreeSet<&str> = state
            .networks
            .iter()
            .filter(|n| n.driver == Driver::Bridge && !n.predefined)
            .map(|n| n.bridge.as_str())
            .collect();
        for link in netlink::names_in(Some(pid))? {
            if link.starts_with("kiln-") && !bridges.contains(link.as_str()) {
                let repaired = repair && netlink::delete_link_in(Some(pid), &link).is_ok();
                found.push(Leftover {
                    object: format!("bridge {link} of the per-user network namespace"),
                    problem: "no network of this store names it".into(),
                    repaired,
                });
            }
        }
        for table in nft::kiln_tables_in(Some(pid)).unwrap_or_default() {
            if !bridges.contains(table.as_str()) {
                let repaired = repair && nft::remove_in(Some(pid), &table).is_ok();
                found.push(Leftover {
                    object: format!("nftables table {table} of the per-user network namespace"),
                    problem: "no network of this store names it".into(),
                    repaired,
                });
            }
        }
        Ok(found)
    }
}

/// Whether a link's name is what kiln names the host end of a container's veth pair.
fn is_kiln_host_end(link: &str) -> bool {
    link.strip_prefix("veth")
        .is_some_and(|hex| hex.len() == 11 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kiln_host_ends_are_told_from_dockers_and_others() {
        assert!(super::is_kiln_host_end("veth0123456789a"));
        for other in [
            "veth1a2b3c4",
            "veth0123456789ab",
            "vethxyz456789ab",
            "eth0",
            "kiln0",
        ] {
            assert!(!super::is_kiln_host_end(other), "{other}");
        }
    }
}
