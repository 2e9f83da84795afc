//! What a container asks of networks at create: `HostConfig.NetworkMode` and
//! `NetworkingConfig.EndpointsConfig` (Docker's JSON names) turned into the sandbox's network
//! mode and the bridge networks to connect, with each endpoint's aliases, addresses and MAC.

use std::collections::BTreeMap;

use kiln_sandbox::NetworkMode;
use serde::{Deserialize, Serialize};

use crate::create::{HostConfig, invalid};
use crate::error::Result;

/// `NetworkingConfig`: per network, what the container's endpoint asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: BTreeMap<String, EndpointSettings>,
}

/// One network's entry of `EndpointsConfig` (the fields kiln takes from a request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    /// `null` from some clients.
    #[serde(deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(rename = "IPAMConfig", skip_serializing_if = "Option::is_none")]
    pub ipam_config: Option<EndpointIpamConfig>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub driver_opts: BTreeMap<String, String>,
    /// `NAME[:ALIAS]` each: names this container alone resolves on the network.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub links: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointIpamConfig {
    #[serde(rename = "IPv4Address", skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
    #[serde(
        rename = "LinkLocalIPs",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub link_local_ips: Vec<String>,
}

pub(crate) fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl EndpointSettings {
    /// What the network is asked for: aliases and the `--ip` address, checked.
    pub fn request(&self) -> Result<kiln_network::EndpointRequest> {
        let ip = match self.ipam_config.as_ref().map(|c| c.ipv4_address.as_str()) {
            None | Some("") => None,
            Some(ip) => Some(ip.parse().map_err(|_| {
                invalid(
                    "IP address",
                    ip,
                    "expected an IPv4 address such as 172.20.0.5",
                )
            })?),
        };
        let mac = match self.mac_address.as_str() {
            "" => None,
            mac => Some(kiln_network::parse_mac(mac).ok_or_else(|| {
                invalid(
                    "MAC address",
                    mac,
                    "expected six hex bytes such as 02:42:ac:11:00:02",
                )
            })?),
        };
        let link_local = self
            .ipam_config
            .iter()
            .flat_map(|c| &c.link_local_ips)
            .map(|ip| {
                ip.parse().map_err(|_| {
                    invalid(
                        "link-local address",
                        ip,
                        "expected an IPv4 address (no IPv6 yet)",
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(kiln_network::EndpointRequest {
            aliases: self.aliases.clone(),
            ip,
            first_interface: 0,
            mac,
            link_local,
            driver_opts: self.driver_opts.clone(),
            links: self
                .links
                .iter()
                .map(|l| Ok(crate::links::Link::parse(l)?.endpoint_form()))
                .collect::<Result<_>>()?,
        })
    }
}

/// The container's network as the sandbox gets it, and the bridge networks it is connected
/// to at create (the first gives the default route).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkChoice {
    pub mode: NetworkMode,
    pub networks: Vec<(String, EndpointSettings)>,
}

/// The environment variable that keeps a root kiln's containers on the user-mode network.
const DEFAULT_NETWORK_VAR: &str = "KILN_DEFAULT_NETWORK";

/// What a container started without a network (and `--network bridge`) joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultNetwork {
    /// The real default bridge network (`bridge`, 172.17.0.0/16 on `kiln0`), as dockerd's.
    Bridge,
    /// slirp4netns' user-mode NAT in the container's own namespace.
    UserMode,
}

impl DefaultNetwork {
    /// A root kiln's default is the bridge, as Docker's; a rootless kiln's is slirp4netns
    /// (its bridges live in the per-user namespace, reached only through published ports).
    /// `KILN_DEFAULT_NETWORK=slirp4netns` keeps a root kiln on the user-mode network, so it
    /// makes no bridge or nftables rules in the host's namespace unless a network is named
    /// (the role of dockerd's `--bridge=none`; the e2e tests that run in the machine's own
    /// namespace use it); `bridge` asks for the default explicitly.
    pub(crate) fn of_this_kiln() -> Result<DefaultNetwork> {
        let root = kiln_network::privileged();
        match std::env::var(DEFAULT_NETWORK_VAR).as_deref() {
            Err(_) | Ok("") | Ok("bridge") if root => Ok(DefaultNetwork::Bridge),
            Err(_) | Ok("") | Ok("bridge") | Ok("slirp4netns") => Ok(DefaultNetwork::UserMode),
            Ok(other) => Err(invalid(
                DEFAULT_NETWORK_VAR,
                other,
                "expected bridge or slirp4netns",
            )),
        }
    }
}

impl HostConfig {
    /// The network, as the sandbox names it.
    pub fn network(&self) -> Result<NetworkMode> {
        Ok(self.network_choice(None)?.mode)
    }

    /// The network the container joins: `none`, `host`, the default network, or bridge
    /// networks (any other name is a user-defined one). `endpoints` adds the networks
    /// `NetworkingConfig` names, with their settings. The default (no `NetworkMode`, `""`,
    /// `"default"`, and `bridge`) is the default bridge for a root kiln, slirp4netns for a
    /// rootless one or with `KILN_DEFAULT_NETWORK=slirp4netns`.
    pub fn network_choice(&self, endpoints: Option<&NetworkingConfig>) -> Result<NetworkChoice> {
        self.network_choice_with(endpoints, DefaultNetwork::of_this_kiln()?)
    }

    fn network_choice_with(
        &self,
        endpoints: Option<&NetworkingConfig>,
        default: DefaultNetwork,
    ) -> Result<NetworkChoice> {
        let endpoints = endpoints.map(|n| &n.endpoints_config);
        let settings = |name: &str| {
            endpoints
                .and_then(|e| e.get(name))
                .cloned()
                .unwrap_or_default()
        };
        let simple = |mode| NetworkChoice {
            mode,
            networks: Vec::new(),
        };
        let primary = match self.network_mode.as_deref().unwrap_or("") {
            "none" => return Ok(simple(NetworkMode::None)),
            "host" => return Ok(simple(NetworkMode::Host)),
            "bridge" if default == DefaultNetwork::UserMode => {
                return Ok(simple(NetworkMode::Default));
            }
            "" | "default" => match endpoints.and_then(|e| e.keys().find(|n| !is_default(n))) {
                // Clients such as compose name the network only in EndpointsConfig.
                Some(first) => first.clone(),
                None if default == DefaultNetwork::Bridge => {
                    kiln_network::DEFAULT_BRIDGE.to_owned()
                }
                None => return Ok(simple(NetworkMode::Default)),
            },
            other if other.starts_with("container:") => {
                return Err(invalid(
                    "network",
                    other,
                    "joining another container's network is not supported",
                ));
            }
            other => other.to_owned(),
        };
        let mut networks = vec![(primary.clone(), settings(&primary))];
        for (name, s) in endpoints.into_iter().flatten() {
            // The docker CLI (API 1.44 and later behaviour, also sent at 1.41) names the
            // network mode itself, `default`, in EndpointsConfig: that is no network's name.
            if *name != primary && !is_default(name) {
                networks.push((name.clone(), s.clone()));
            }
        }
        Ok(NetworkChoice {
            mode: NetworkMode::Prepared,
            networks,
        })
    }
}

/// `default`, the name of the network mode a container gets without `--network`, as clients
/// write it in `NetworkingConfig` too.
fn is_default(name: &str) -> bool {
    name == "default"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_choice_names_the_bridge_networks_in_order() {
        let with_mode = |mode: &str| HostConfig {
            network_mode: Some(mode.into()),
            ..HostConfig::default()
        };
        let endpoints: NetworkingConfig = serde_json::from_value(serde_json::json!({
            "EndpointsConfig": {
                "back": { "Aliases": null },
                "front": { "Aliases": ["web"], "IPAMConfig": { "IPv4Address": "10.1.0.9" } },
            }
        }))
        .unwrap();
        let choice = with_mode("front").network_choice(Some(&endpoints)).unwrap();
        assert_eq!(choice.mode, NetworkMode::Prepared);
        let names: Vec<&str> = choice.networks.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["front", "back"]);
        let front = choice.networks[0].1.request().unwrap();
        assert_eq!(front.aliases, ["web"]);
        assert_eq!(front.ip, Some("10.1.0.9".parse().unwrap()));
        // compose names its network only in EndpointsConfig.
        let choice = HostConfig::default()
            .network_choice(Some(&endpoints))
            .unwrap();
        assert_eq!(choice.networks[0].0, "back");
        // The docker CLI names the mode itself, `default`, in EndpointsConfig: no network.
        let cli: NetworkingConfig = serde_json::from_value(serde_json::json!({
            "EndpointsConfig": { "default": { "Aliases": null } }
        }))
        .unwrap();
        for mode in ["", "default"] {
            let choice = with_mode(mode)
                .network_choice_with(Some(&cli), DefaultNetwork::UserMode)
                .unwrap();
            assert_eq!(choice.mode, NetworkMode::Default, "mode {mode:?}");
            assert!(choice.networks.is_empty());
            let choice = with_mode(mode)
                .network_choice_with(Some(&cli), DefaultNetwork::Bridge)
                .unwrap();
            let names: Vec<&str> = choice.networks.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["bridge"], "mode {mode:?}");
        }
        for (mode, expected) in [("none", NetworkMode::None), ("host", NetworkMode::Host)] {
            let choice = with_mode(mode).network_choice(Some(&endpoints)).unwrap();
            assert_eq!(choice.mode, expected);
            assert!(choice.networks.is_empty());
        }
        // No network: the default bridge, or the user-mode network (rootless, or asked for).
        let choice = HostConfig::default()
            .network_choice_with(None, DefaultNetwork::Bridge)
            .unwrap();
        assert_eq!(choice.mode, NetworkMode::Prepared);
        assert_eq!(choice.networks[0].0, "bridge");
        for mode in ["", "default", "bridge"] {
            let choice = with_mode(mode)
                .network_choice_with(None, DefaultNetwork::UserMode)
                .unwrap();
            assert_eq!(choice.mode, NetworkMode::Default, "{mode:?}");
            assert!(choice.networks.is_empty());
        }
        let bad = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: "10.1.0.300".into(),
                ..EndpointIpamConfig::default()
            }),
            ..EndpointSettings::default()
        };
        assert!(
            bad.request()
                .unwrap_err()
                .to_string()
                .contains("10.1.0.300")
        );
    }
}
