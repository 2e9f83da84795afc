//! Published ports as a create request asks for them, in Docker's shapes: `-p` strings,
//! `HostConfig.PortBindings` (`{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`),
//! `PublishAllPorts` and `Config.ExposedPorts`, turned at create into the
//! [`kiln_network::ports::PortSpec`]s of the container's spec. The host sockets are bound at
//! each start by the supervisor (`kiln_network::ports`), which records what it bound in
//! `containers/<id>/ports.json` for inspect and `kiln port`; the file goes when the container
//! stops, so a stopped container shows no bindings (as dockerd).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use kiln_network::ports::{PortSpec, Protocol, Published};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::create::invalid;
use crate::error::{Result, RuntimeError};

/// One entry of a `PortBindings` list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// `PortBindings`: `"80/tcp"` → its bindings (`null` from some clients: none).
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

/// What the container's spec keeps of its ports: the requested shapes (shown again by
/// inspect) and what the supervisor binds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortsSpec {
    /// `"80/tcp"` keys: the image's EXPOSE, `ExposedPorts` and every published port.
    pub exposed: BTreeSet<String>,
    pub bindings: BTreeMap<String, Vec<PortBinding>>,
    pub publish_all: bool,
    pub publish: Vec<PortSpec>,
}

/// `80`, `80/udp` → the port and protocol (`tcp` when not said).
fn parse_key(key: &str) -> Result<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = Protocol::parse(proto)
        .ok_or_else(|| invalid("port protocol", key, "expected tcp or udp"))?;
    let port = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid("port", key, "expected a port number from 1 to 65535"))?;
    Ok((port, protocol))
}

/// `80` or `8000-8010` → the first and last port.
fn parse_range(text: &str, what: &'static str) -> Result<(u16, u16)> {
    let bad = || {
        invalid(
            what,
            text,
            "expected a port (1-65535) or a range such as 8000-8010",
        )
    };
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let first: u16 = first.parse().map_err(|_| bad())?;
    let last: u16 = last.parse().map_err(|_| bad())?;
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok((first, last))
}

/// A `-p`/`--publish` value, `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]` with ranges, as the
/// docker CLI reads it: the `PortBindings` entries it makes, in order.
pub fn parse_publish(text: &str) -> Result<Vec<(String, PortBinding)>> {
    let bad = |reason| invalid("published port", text, reason);
    let (rest, proto) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    let protocol = Protocol::parse(proto).ok_or_else(|| bad("the protocol must be tcp or udp"))?;
    let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
    let (container, host_port, host_ip) = match parts[..] {
        [c] => (c, "", ""),
        [c, h] => (c, h, ""),
        [c, h, ip] => (c, h, ip),
        _ => return Err(bad("expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]")),
    };
    if container.is_empty() {
        return Err(bad("no container port"));
    }
    let host_ip = host_ip.trim_start_matches('[').trim_end_matches(']');
    if !host_ip.is_empty() && host_ip.parse::<Ipv4Addr>().is_err() {
        return Err(bad(
            "the host address must be an IPv4 address (no IPv6 yet)",
        ));
    }
    let ports = "ports must be numbers from 1 to 65535, or ranges such as 8000-8010";
    let (c_first, c_last) = parse_range(container, "container port").map_err(|_| bad(ports))?;
    let count = c_last - c_first;
    let host = if host_port.is_empty() {
        None
    } else {
        Some(parse_range(host_port, "host port").map_err(|_| bad(ports))?)
    };
    if let Some((h_first, h_last)) = host
        && count > 0
        && h_last - h_first != count
    {
        return Err(bad(
            "a range of container ports needs a host range of the same length",
        ));
    }
    Ok((0..=count)
        .map(|i| {
            let host_port = match host {
                None => String::new(),
                // One container port and a host range: the first free port of the range.
                Some((f, l)) if count == 0 && l > f => format!("{f}-{l}"),
                Some((f, _)) => (f + i).to_string(),
            };
            (
                format!("{}/{}", c_first + i, protocol.name()),
                PortBinding {
                    host_ip: host_ip.to_owned(),
                    host_port,
                },
            )
        })
        .collect())
}

/// The ports of a new container: `exposed` is the image's and the request's `ExposedPorts`;
/// `-P` publishes every exposed port that has no binding on a port the kernel picks.
pub fn ports_spec(
    bindings: &PortMap,
    publish_all: bool,
    exposed: impl IntoIterator<Item = String>,
) -> Result<PortsSpec> {
    let mut spec = PortsSpec {
        publish_all,
        ..PortsSpec::default()
    };
    let mut add_spec = |key: &str, b: &PortBinding| -> Result<()> {
        let (container_port, protocol) = parse_key(key)?;
        let host_ip = match b.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            ip => Some(ip.parse().map_err(|_| {
                invalid("host address", ip, "expected an IPv4 address (no IPv6 yet)")
            })?),
        };
        let (first, last) = match b.host_port.as_str() {
            "" | "0" => (0, 0),
            p => parse_range(p, "host port")?,
        };
        spec.publish.push(PortSpec {
            protocol,
            container_port,
            host_ip,
            host_port_first: first,
            host_port_last: last,
        });
        Ok(())
    };
    for (key, list) in bindings {
        let list = list.clone().unwrap_or_default();
        let normal = {
            let (port, protocol) = parse_key(key)?;
            format!("{port}/{}", protocol.name())
        };
        // `"80/tcp": []` or `null` exposes the port without publishing it, as dockerd.
        for b in &list {
            add_spec(&normal, b)?;
        }
        spec.exposed.insert(normal.clone());
        spec.bindings.insert(normal, list);
    }
    for key in exposed {
        let (port, protocol) = parse_key(&key)?;
        spec.exposed.insert(format!("{port}/{}", protocol.name()));
    }
    if publish_all {
        let unbound: Vec<String> = spec
            .exposed
            .iter()
            .filter(|k| spec.bindings.get(*k).is_none_or(Vec::is_empty))
            .cloned()
            .collect();
        for key in unbound {
            add_spec(&key, &PortBinding::default())?;
        }
    }
    Ok(spec)
}

/// Where a running container's bound ports are recorded.
pub fn published_path(store: &kiln_store::Store, id: &str) -> PathBuf {
    store.container_dir(id).join("ports.json")
}

/// The ports a running container has bound (none when it is not running).
pub fn read_published(store: &kiln_store::Store, id: &str) -> Vec<Published> {
    std::fs::read(published_path(store, id))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub(crate) fn write_published(
    store: &kiln_store::Store,
    id: &str,
    published: &[Published],
) -> Result<()> {
    let path = published_path(store, id);
    let bytes = serde_json::to_vec(published).map_err(|e| RuntimeError::CorruptSpec {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&path, bytes).map_err(RuntimeError::io(path))
}

/// dockerd's `NetworkSettings.Ports`: every exposed port, with its bindings while the
/// container runs (`null` for one not published); `{}` for a stopped container.
pub fn network_settings_ports(spec: &PortsSpec, published: &[Published], running: bool) -> Value {
    let mut ports = serde_json::Map::new();
    if !running {
        return Value::Object(ports);
    }
    for key in &spec.exposed {
        let bound: Vec<Value> = published
            .iter()
            .filter(|p| format!("{}/{}", p.container_port, p.protocol.name()) == *key)
            .map(|p| json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}))
            .collect();
        ports.insert(
            key.clone(),
            if bound.is_empty() {
                Value::Null
            } else {
                Value::Array(bound)
            },
        );
    }
    Value::Object(ports)
}

/// `containers/json`'s `Ports`: each binding, then each exposed port not published.
pub fn summary_ports(spec: &PortsSpec, published: &[Published]) -> Value {
    let mut out: Vec<Value> = published
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip.to_string(), "PrivatePort": p.container_port,
                "PublicPort": p.host_port, "Type": p.protocol.name()})
        })
        .collect();
    for key in &spec.exposed {
        let Ok((port, protocol)) = parse_key(key) else {
            continue;
        };
        if !published
            .iter()
            .any(|p| p.container_port == port && p.protocol == protocol)
        {
            out.push(json!({"PrivatePort": port, "Type": protocol.name()}));
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: ip.into(),
            host_port: port.into(),
        }
    }

    #[test]
    fn publish_flags_read_as_the_docker_cli_reads_them() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            [("80/tcp".into(), binding("", "8080"))]
        );
        assert_eq!(
            parse_publish("127.0.0.1::53/udp").unwrap(),
            [("53/udp".into(), binding("127.0.0.1", ""))]
        );
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            [
                ("80/tcp".into(), binding("", "8000")),
                ("81/tcp".into(), binding("", "8001"))
            ]
        );
        assert_eq!(
            parse_publish("8000-8010:80").unwrap(),
            [("80/tcp".into(), binding("", "8000-8010"))]
        );
        assert_eq!(
            parse_publish("80").unwrap(),
            [("80/tcp".into(), binding("", ""))]
        );
        for bad in [
            "8080:80/sctp",
            "x:80",
            "8000-8002:80-81",
            "1.2.3:80:80",
            "0",
            "",
        ] {
            let err = parse_publish(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn publish_all_binds_every_exposed_port_without_a_binding() {
        let bindings: PortMap = [
            ("80/tcp".to_owned(), Some(vec![binding("", "8080")])),
            ("90".to_owned(), None),
        ]
        .into();
        let spec = ports_spec(&bindings, true, ["53/udp".to_owned()]).unwrap();
        assert_eq!(
            spec.exposed.iter().collect::<Vec<_>>(),
            ["53/udp", "80/tcp", "90/tcp"]
        );
        let published: Vec<(u16, u16)> = spec
            .publish
            .iter()
            .map(|p| (p.container_port, p.host_port_first))
            .collect();
        assert_eq!(published, [(80, 8080), (53, 0), (90, 0)]);
        let spec = ports_spec(&bindings, false, []).unwrap();
        assert_eq!(spec.publish.len(), 1);
        let bound = [Published {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
        }];
        assert_eq!(
            network_settings_ports(&spec, &bound, true),
            json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "90/tcp": null})
        );
        assert_eq!(network_settings_ports(&spec, &bound, false), json!({}));
        assert_eq!(
            summary_ports(&spec, &bound),
            json!([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"PrivatePort": 90, "Type": "tcp"}])
        );
        assert!(ports_spec(&[("x/tcp".into(), None)].into(), false, []).is_err());
    }
}
