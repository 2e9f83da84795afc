//! `network connect` and `disconnect` of containers: the records go through the network
//! crate, and a running container's namespace gets (or loses) its interface at once.

use kiln_network::Networks;
use kiln_sandbox::NetworkMode;

use crate::create::EndpointSettings;
use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::spec::ContainerSpec;

impl<H: Host> Runtime<H> {
    fn networks(&self) -> Networks {
        Networks::open(self.store.root())
    }

    /// Connects `container` to `network`. The container must have a namespace of its own with
    /// a way out (bridge networks or the default network, not `none` or `host`); a running one
    /// gets its interface now, a stopped one at each start.
    pub fn connect_network(
        &self,
        container: &str,
        network: &str,
        settings: &EndpointSettings,
    ) -> Result<()> {
        let mut request = settings.request()?;
        let record = self.store.find_container(container)?;
        let spec = ContainerSpec::read(&self.store, &record.id)?;
        if spec.sandbox.network == NetworkMode::Default {
            request.first_interface = 1;
        }
        // The default network's namespace is the container's own too (slirp4netns gives it
        // eth0, bridges add more); `none` and `host` stay as they are, as with Docker.
        if !matches!(
            spec.sandbox.network,
            NetworkMode::Prepared | NetworkMode::Default
        ) {
            return Err(RuntimeError::Invalid {
                what: "network connect of container",
                value: record.name.clone(),
                reason: "it is on the none or host network, which cannot be combined with others",
            });
        }
        let networks = self.networks();
        let (net, endpoint) = networks.connect(network, &record.id, &record.name, &request)?;
        if record.state.is_running()
            && let Err(e) = networks.attach_endpoint(&net, &endpoint, record.state.pid)
        {
            // Nothing half-connected: the record goes again.
            let _ = networks.disconnect(&net.id, &record.id, &record.name, None);
            return Err(e.into());
        }
        Ok(())
    }

    /// Disconnects `container` from `network`, removing its interface when it runs.
    pub fn disconnect_network(&self, container: &str, network: &str) -> Result<()> {
        let record = self.store.find_container(container)?;
        let pid = record.state.is_running().then_some(record.state.pid);
        self.networks()
            .disconnect(network, &record.id, &record.name, pid)?;
        Ok(())
    }
}

impl<H: Host> Runtime<H> {
    /// The network mode to show (`HostConfig.NetworkMode`): `none`, `host`, `default` (the
    /// slirp4netns network), or the name of the container's first bridge network.
    pub fn network_mode_name(&self, c: &kiln_store::ContainerRecord) -> Result<String> {
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        Ok(match spec.sandbox.network {
            NetworkMode::Prepared => self
                .networks()
                .endpoints_of(&c.id)?
                .into_iter()
                .min_by_key(|(_, e)| e.interface.clone())
                .map(|(n, _)| n.name)
                .unwrap_or_else(|| "none".into()),
            mode => mode.name().to_owned(),
        })
    }

    /// dockerd's `NetworkSettings` of a container: per network its endpoint (addresses are
    /// shown while it runs, as dockerd, which allocates them at start), and the default
    /// bridge's endpoint again at the top level.
    pub fn network_settings(&self, c: &kiln_store::ContainerRecord) -> Result<serde_json::Value> {
        use serde_json::{Value, json};
        let running = c.state.is_running();
        let mut settings = json!({
            "Bridge": "", "SandboxID": "", "HairpinMode": false,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
            "SandboxKey": "", "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
            "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
            "Networks": {},
        });
        let spec = ContainerSpec::read(&self.store, &c.id)?;
        let networks = self.networks();
        let mut entries = serde_json::Map::new();
        let empty = |network_id: &str| {
            json!({
                "IPAMConfig": null, "Links": null, "Aliases": null,
                "NetworkID": network_id, "EndpointID": "", "Gateway": "", "IPAddress": "",
                "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": null,
            })
        };
        match spec.sandbox.network {
            NetworkMode::None | NetworkMode::Host => {
                let name = spec.sandbox.network.name();
                let id = networks.inspect(name).map(|n| n.id).unwrap_or_default();
                entries.insert(name.to_owned(), empty(&id));
            }
            NetworkMode::Prepared | NetworkMode::Default => {
                for (network, endpoint) in networks.endpoints_of(&c.id)? {
                    let mut entry = empty(&network.id);
                    let addressing = network.addressing;
                    if endpoint.requested_ip || !endpoint.link_local.is_empty() {
                        let mut ipam = json!({});
                        if let (true, Some(ip)) = (endpoint.requested_ip, endpoint.ip) {
                            ipam["IPv4Address"] = json!(ip.to_string());
                        }
                        if !endpoint.link_local.is_empty() {
                            ipam["LinkLocalIPs"] = json!(endpoint.link_local);
                        }
                        entry["IPAMConfig"] = ipam;
                    }
                    if !endpoint.links.is_empty() {
                        entry["Links"] = json!(endpoint.links);
                    }
                    if !endpoint.driver_opts.is_empty() {
                        entry["DriverOpts"] = json!(endpoint.driver_opts);
                    }
                    if endpoint.requested_mac {
                        entry["MacAddress"] = json!(endpoint.mac);
                    }
                    if !network.predefined {
                        // dockerd adds the short ID, which compose looks for (and passes
                        // itself when it connects a container: listed once).
                        let mut aliases = endpoint.aliases.clone();
                        let short = &c.id[..12];
                        if !aliases.iter().any(|a| a == short) {
                            aliases.push(short.to_owned());
                        }
                        entry["Aliases"] = json!(aliases);
                    }
                    if running {
                        entry["EndpointID"] = json!(endpoint.endpoint_id);
                        entry["Gateway"] = json!(
                            addressing
                                .map(|a| a.gateway.to_string())
                                .unwrap_or_default()
                        );
                        entry["IPAddress"] =
                            json!(endpoint.ip.map(|ip| ip.to_string()).unwrap_or_default());
                        entry["IPPrefixLen"] = json!(addressing.map_or(0, |a| a.subnet.prefix()));
                        entry["MacAddress"] = json!(endpoint.mac);
                        if network.predefined {
                            for key in [
                                "EndpointID",
                                "Gateway",
                                "IPAddress",
                                "IPPrefixLen",
                                "MacAddress",
                            ] {
                                settings[key] = entry[key].clone();
                            }
                        }
                    }
                    entries.insert(network.name.clone(), entry);
                }
            }
            _ => {}
        }
        settings["Networks"] = Value::Object(entries);
        settings["Ports"] = crate::ports::network_settings_ports(
            &spec.ports,
            &crate::ports::read_published(&self.store, &c.id),
            running,
        );
        Ok(settings)
    }
}
