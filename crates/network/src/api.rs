//! dockerd's `Network` object (what `network inspect` prints and `GET /networks/{id}`
//! answers), made here so the CLI and the Engine API show the same thing.

use serde_json::{Value, json};

use crate::state::{Driver, NetworkRecord};

impl NetworkRecord {
    /// The network as dockerd shows it; `with_containers` lists its endpoints (`network ls`
    /// and `GET /networks` leave them out, as dockerd does).
    pub fn to_api(&self, with_containers: bool) -> Value {
        let config: Vec<Value> = self
            .addressing
            .iter()
            .map(|a| {
                let mut c = json!({
                    "Subnet": a.subnet.to_string(),
                    "Gateway": a.gateway.to_string(),
                });
                if let Some(range) = a.ip_range {
                    c["IPRange"] = json!(range.to_string());
                }
                if !self.aux_addresses.is_empty() {
                    c["AuxiliaryAddresses"] = json!(self.aux_addresses);
                }
                c
            })
            .collect();
        let containers: serde_json::Map<String, Value> = if with_containers {
            self.endpoints
                .iter()
                .map(|(id, e)| {
                    let address = match (e.ip, self.addressing) {
                        (Some(ip), Some(a)) => format!("{ip}/{}", a.subnet.prefix()),
                        _ => String::new(),
                    };
                    (
                        id.clone(),
                        json!({
                            "Name": e.container_name,
                            "EndpointID": e.endpoint_id,
                            "MacAddress": e.mac,
                            "IPv4Address": address,
                            "IPv6Address": "",
                        }),
                    )
                })
                .collect()
        } else {
            serde_json::Map::new()
        };
        // Only the default bridge shows driver options, as dockerd's does: a user-defined
        // network shows what its creator gave (kiln takes none), and docker-compose 1.29
        // compares these with its file's `driver_opts` on every `up`, refusing a network
        // whose options "changed" (its bridge's name is `kiln-` and the ID's first 10 hex).
        let mut options = serde_json::Map::new();
        if self.driver == Driver::Bridge && self.predefined {
            options.insert("com.docker.network.bridge.name".into(), json!(self.bridge));
            options.insert(
                "com.docker.network.bridge.default_bridge".into(),
                json!("true"),
            );
        }
        json!({
            "Name": self.name,
            "Id": self.id,
            "Created": self.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "Scope": "local",
            "Driver": self.driver.name(),
            "EnableIPv6": false,
            "IPAM": { "Driver": "default", "Options": null, "Config": config },
            "Internal": self.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": options,
            "Labels": self.labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn record(predefined: bool) -> NetworkRecord {
        NetworkRecord {
            id: "ab".repeat(32),
            name: if predefined { "bridge" } else { "app_default" }.into(),
            driver: Driver::Bridge,
            created: chrono::Utc::now(),
            addressing: None,
            internal: false,
            labels: BTreeMap::new(),
            bridge: if predefined {
                "kiln0"
            } else {
                "kiln-ababababab"
            }
            .into(),
            predefined,
            endpoints: BTreeMap::new(),
            aux_addresses: BTreeMap::new(),
        }
    }

    #[test]
    fn only_the_default_bridge_shows_driver_options() {
        assert_eq!(record(false).to_api(true)["Options"], json!({}));
        let default = record(true).to_api(true);
        assert_eq!(
            default["Options"]["com.docker.network.bridge.name"],
            json!("kiln0")
        );
        assert_eq!(
            default["Options"]["com.docker.network.bridge.default_bridge"],
            json!("true")
        );
    }
}
