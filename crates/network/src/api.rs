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
        let mut options = serde_json::Map::new();
        if self.driver == Driver::Bridge {
            options.insert("com.docker.network.bridge.name".into(), json!(self.bridge));
            if self.predefined {
                options.insert(
                    "com.docker.network.bridge.default_bridge".into(),
                    json!("true"),
                );
            }
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
