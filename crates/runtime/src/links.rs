//! Legacy links (`--link NAME[:ALIAS]`, `HostConfig.Links`, compose's `links`): another
//! container known to this one under an alias.
//!
//! As with dockerd, what a link does depends on the network. On the default bridge (no DNS)
//! the linked container's address goes into this container's `/etc/hosts` — `ADDRESS ALIAS
//! HOSTNAME NAME`, dockerd's line — with the environment variables dockerd sets
//! (`ALIAS_NAME`, `ALIAS_PORT…` for each port the linked container exposes, `ALIAS_ENV_…` for
//! its environment but `HOME` and `PATH`); the address
//! is the one it holds at this create, kiln keeping addresses from create to removal. On a
//! user-defined network a link is a name this container alone resolves through the embedded
//! DNS server (the endpoint's `Links`), so the linked container need not exist yet.
//! Inspect shows `HostConfig.Links` as dockerd writes them, `/NAME:/CONTAINER/ALIAS`.

use kiln_sandbox::ExtraHost;
use kiln_store::Store;

use crate::create::invalid;
use crate::error::{Result, RuntimeError};

/// One `NAME[:ALIAS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub alias: String,
}

impl Link {
    /// `NAME[:ALIAS]` (a bare name is its own alias; a leading `/` of either is dropped, as
    /// the docker CLI may send `/name:alias`).
    pub fn parse(text: &str) -> Result<Link> {
        let (name, alias) = text.split_once(':').unwrap_or((text, text));
        let (name, alias) = (name.trim_start_matches('/'), alias.trim_start_matches('/'));
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        };
        if !valid(name) || !valid(alias) {
            return Err(invalid(
                "link",
                text,
                "expected NAME[:ALIAS], a container's name and another name for it",
            ));
        }
        Ok(Link {
            name: name.to_owned(),
            alias: alias.to_owned(),
        })
    }

    /// `NAME:ALIAS`, as an endpoint's `Links` shows it.
    pub fn endpoint_form(&self) -> String {
        format!("{}:{}", self.name, self.alias)
    }

    /// dockerd's `HostConfig.Links` entry for a link of `container`.
    pub fn host_config_form(&self, container: &str) -> String {
        format!("/{}:/{container}/{}", self.name, self.alias)
    }
}

/// What links on the default bridge add to a container: `/etc/hosts` lines and environment
/// variables.
#[derive(Debug, Default)]
pub struct BridgeLinks {
    pub hosts: Vec<ExtraHost>,
    pub env: Vec<String>,
}

/// The `/etc/hosts` lines and variables of `links` for the container named `container` on
/// the default bridge. Each linked container must exist and be on the default bridge.
pub fn bridge_links(store: &Store, container: &str, links: &[Link]) -> Result<BridgeLinks> {
    let networks = kiln_network::Networks::open(store.root());
    let mut out = BridgeLinks::default();
    for link in links {
        let target = store.find_container(&link.name)?;
        let address = networks
            .endpoints_of(&target.id)?
            .into_iter()
            .find(|(network, _)| network.name == kiln_network::DEFAULT_BRIDGE)
            .and_then(|(_, endpoint)| endpoint.ip)
            .ok_or_else(|| RuntimeError::Link {
                name: link.name.clone(),
                reason: "it is not on the default bridge network",
            })?;
        // dockerd's line: the alias, the linked container's hostname, then its name when
        // that differs from the alias.
        let mut names = format!("{} {}", link.alias, target.config.hostname);
        if target.name != link.alias {
            names.push(' ');
            names.push_str(&target.name);
        }
        out.hosts.push(ExtraHost {
            name: names,
            address: address.into(),
        });
        let prefix = env_prefix(&link.alias);
        out.env
            .push(format!("{prefix}_NAME=/{container}/{}", link.alias));
        let exposed = crate::spec::ContainerSpec::read(store, &target.id)
            .map(|s| s.ports.exposed)
            .unwrap_or_default();
        out.env.extend(port_variables(&prefix, address, &exposed));
        // The linked container's own variables, but for the two every image has.
        out.env.extend(target.config.env.iter().filter_map(|var| {
            let (key, value) = var.split_once('=')?;
            (key != "HOME" && key != "PATH").then(|| format!("{prefix}_ENV_{key}={value}"))
        }));
    }
    Ok(out)
}

/// `db-1` → `DB_1`, as dockerd names a link's variables.
fn env_prefix(alias: &str) -> String {
    alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// dockerd's port variables of a link: `P_PORT` (the lowest port's URL) and, per port,
/// `P_PORT_80_TCP`, `…_ADDR`, `…_PORT`, `…_PROTO`.
fn port_variables(
    prefix: &str,
    address: std::net::Ipv4Addr,
    exposed: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut ports: Vec<(u16, &str)> = exposed
        .iter()
        .filter_map(|key| {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            Some((port.parse().ok()?, proto))
        })
        .collect();
    ports.sort();
    let mut env = Vec::new();
    if let Some((port, proto)) = ports.first() {
        env.push(format!("{prefix}_PORT={proto}://{address}:{port}"));
    }
    for (port, proto) in ports {
        let upper = proto.to_ascii_uppercase();
        let var = format!("{prefix}_PORT_{port}_{upper}");
        env.push(format!("{var}={proto}://{address}:{port}"));
        env.push(format!("{var}_ADDR={address}"));
        env.push(format!("{var}_PORT={port}"));
        env.push(format!("{var}_PROTO={proto}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_as_docker_writes_them() {
        let link = Link::parse("db:data").unwrap();
        assert_eq!(link.endpoint_form(), "db:data");
        assert_eq!(link.host_config_form("web"), "/db:/web/data");
        assert_eq!(Link::parse("/db").unwrap().endpoint_form(), "db:db");
        for bad in ["", ":x", "db:", "a b:c"] {
            let err = Link::parse(bad).unwrap_err();
            assert!(err.to_string().contains("NAME[:ALIAS]"), "{bad}: {err}");
        }
    }

    #[test]
    fn port_variables_are_dockerds() {
        let exposed = ["8080/tcp".to_owned(), "53/udp".to_owned()].into();
        let env = port_variables(&env_prefix("my-db"), [172, 17, 0, 3].into(), &exposed);
        assert_eq!(env[0], "MY_DB_PORT=udp://172.17.0.3:53");
        assert!(env.contains(&"MY_DB_PORT_8080_TCP=tcp://172.17.0.3:8080".to_owned()));
        assert!(env.contains(&"MY_DB_PORT_8080_TCP_ADDR=172.17.0.3".to_owned()));
        assert!(env.contains(&"MY_DB_PORT_53_UDP_PROTO=udp".to_owned()));
        assert_eq!(env.len(), 9);
    }
}
