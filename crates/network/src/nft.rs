//! NAT and isolation rules through nftables: one table per bridge network, named after its
//! bridge, so a network's rules are made and removed as one object and never touch another
//! network's or the host's own rules.
//!
//! The rules go to the `nft` program as JSON (`nft -j -f -`), one transaction per change. JSON
//! rather than nft's text syntax because it is nft's stable machine interface (no quoting of
//! interface names); the program rather than raw nf_tables netlink because the expression
//! bytecode nft compiles (payload offsets, registers) is what nobody should hand-write, and no
//! pure-Rust nf_tables library is mature. kiln builds the few objects it needs with serde_json
//! instead of a crate of nftables schema types.
//!
//! Each table has:
//! - `postrouting` (nat, srcnat priority): traffic from the subnet leaving by another interface
//!   is masqueraded — not for `--internal` networks;
//! - `forward` (filter): drops traffic from this bridge to any other kiln bridge (isolation
//!   between networks; each network's table drops its own side, and a drop in any base chain
//!   is final), and for `--internal` everything leaving or entering the bridge from elsewhere.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// Every kiln bridge's name starts so (`kiln0`, `kiln-<id>`): nftables matches `kiln*`.
pub const BRIDGE_PREFIX: &str = "kiln";

/// What the rules of one bridge network depend on.
#[derive(Debug, Clone, Copy)]
pub struct BridgeRules<'a> {
    pub bridge: &'a str,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

fn table(name: &str) -> Value {
    json!({"family": "ip", "name": name})
}

fn meta_match(key: &str, op: &str, value: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}})
}

fn rule(table: &str, chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "ip", "table": table, "chain": chain, "expr": expr}}})
}

/// The transaction that (re)writes a network's table: created empty if missing, deleted, and
/// made anew, so applying it twice gives the same rules once.
pub fn table_commands(rules: &BridgeRules<'_>) -> Value {
    let name = rules.bridge;
    let wildcard = format!("{BRIDGE_PREFIX}*");
    let mut commands = vec![
        json!({"add": {"table": table(name)}}),
        json!({"delete": {"table": table(name)}}),
        json!({"add": {"table": table(name)}}),
        json!({"add": {"chain": {"family": "ip", "table": name, "name": "forward",
            "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}),
        // Isolation: nothing from this bridge into another kiln bridge.
        rule(
            name,
            "forward",
            vec![
                meta_match("iifname", "==", name),
                meta_match("oifname", "==", &wildcard),
                meta_match("oifname", "!=", name),
                json!({"drop": null}),
            ],
        ),
    ];
    if rules.internal {
        for (this, other) in [("iifname", "oifname"), ("oifname", "iifname")] {
            commands.push(rule(
                name,
                "forward",
                vec![
                    meta_match(this, "==", name),
                    meta_match(other, "!=", name),
                    json!({"drop": null}),
                ],
            ));
        }
    } else {
        commands.push(json!({"add": {"chain": {"family": "ip", "table": name,
            "name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100,
            "policy": "accept"}}}));
        let subnet = rules.subnet;
        commands.push(rule(
            name,
            "postrouting",
            vec![
                json!({"match": {"op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": {"prefix": {"addr": subnet.network().to_string(),
                        "len": subnet.prefix()}}}}),
                meta_match("oifname", "!=", name),
                json!({"masquerade": null}),
            ],
        ));
    }
    json!({"nftables": commands})
}

/// Writes (or rewrites) the rules of a bridge network, in the namespace of `netns_pid` (the
/// caller's when `None`).
pub fn apply(netns_pid: Option<u32>, rules: &BridgeRules<'_>) -> Result<()> {
    run_nft_in(
        netns_pid,
        &format!("write the nftables rules of bridge {}", rules.bridge),
        &table_commands(rules),
    )
}

/// Removes a bridge network's table; one that is not there is no error.
pub fn remove(bridge: &str) -> Result<()> {
    remove_in(None, bridge)
}

/// [`remove`] in the namespace of `netns_pid` (the caller's when `None`).
pub fn remove_in(netns_pid: Option<u32>, bridge: &str) -> Result<()> {
    let commands = json!({"nftables": [
        {"add": {"table": table(bridge)}},
        {"delete": {"table": table(bridge)}},
    ]});
    run_nft_in(
        netns_pid,
        &format!("remove the nftables rules of bridge {bridge}"),
        &commands,
    )
}

/// The chain of a container's published ports in its network's table: one base chain per
/// container (nftables lets several chains hook the same place), so publishing and removing
/// a container's ports touch no other container's rules and need no rule handles.
pub fn port_chain(container_id: &str) -> String {
    format!("ports-{}", &container_id[..container_id.len().min(12)])
}

/// The transaction that (re)writes a container's DNAT rules in the table of `bridge`: each
/// published port's traffic for a local address of the host (or the one address it was
/// published on) that comes from anywhere but the bridge itself goes to `container` — what
/// dockerd's `DOCKER` chain does. Traffic the host sends itself (its loopback) does not pass
/// prerouting: the supervisor's proxy serves it.
pub fn publish_commands(
    bridge: &str,
    container_id: &str,
    container: std::net::Ipv4Addr,
    ports: &[crate::ports::Published],
) -> Value {
    let chain = port_chain(container_id);
    let mut commands = vec![
        json!({"add": {"chain": {"family": "ip", "table": bridge, "name": chain,
            "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}}),
        json!({"flush": {"chain": {"family": "ip", "table": bridge, "name": chain}}}),
    ];
    for port in ports {
        let destination = if port.host_ip.is_unspecified() {
            json!({"match": {"op": "==",
                "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
        } else {
            json!({"match": {"op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": port.host_ip.to_string()}})
        };
        commands.push(rule(
            bridge,
            &chain,
            vec![
                destination,
                meta_match("iifname", "!=", bridge),
                json!({"match": {"op": "==",
                    "left": {"payload": {"protocol": port.protocol.name(), "field": "dport"}},
                    "right": port.host_port}}),
                // Counted, so `nft list` shows whether outside traffic took this path.
                json!({"counter": null}),
                json!({"dnat": {"addr": container.to_string(), "port": port.container_port}}),
            ],
        ));
    }
    json!({"nftables": commands})
}

/// Writes a container's DNAT rules into its network's table.
pub fn publish(
    bridge: &str,
    container_id: &str,
    container: std::net::Ipv4Addr,
    ports: &[crate::ports::Published],
) -> Result<()> {
    run_nft(
        &format!("write the port rules of container {container_id} on bridge {bridge}"),
        &publish_commands(bridge, container_id, container, ports),
    )
}

/// Removes a container's DNAT rules from the table of `bridge`; rules (or a table) that are
/// not there are no error.
pub fn unpublish(bridge: &str, container_id: &str) -> Result<()> {
    let chain = json!({"family": "ip", "table": bridge, "name": port_chain(container_id)});
    // Flushed first: kernels before 5.x refuse to delete a chain that still has rules.
    let commands = json!({"nftables": [{"flush": {"chain": chain}}, {"delete": {"chain": chain}}]});
    match run_nft(
        &format!("remove the port rules of container {container_id} on bridge {bridge}"),
        &commands,
    ) {
        Err(NetworkError::Nftables { message, .. })
            if message.contains("No such file or directory") =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Whether the table of `bridge` has a port chain for `container_id` (for tests and
/// `kiln check`).
pub fn has_port_chain(bridge: &str, container_id: &str) -> bool {
    let mut command = Command::new("nft");
    command
        .args(["list", "chain", "ip", bridge, &port_chain(container_id)])
        .stdin(Stdio::null());
    kiln_sandbox::fork_window::output(&mut command).is_ok_and(|out| out.status.success())
}

/// The container ID prefixes of the port chains in the table of `bridge` (none when the
/// table or `nft` is missing).
pub fn port_chains(bridge: &str) -> Vec<String> {
    let mut command = Command::new("nft");
    command
        .args(["-j", "list", "table", "ip", bridge])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let Ok(output) = kiln_sandbox::fork_window::output(&mut command) else {
        return Vec::new();
    };
    let listing: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["chain"]["name"].as_str()?.strip_prefix("ports-"))
        .map(str::to_owned)
        .collect()
}

/// The names of the `ip` tables that belong to kiln bridges.
pub fn kiln_tables() -> Result<Vec<String>> {
    kiln_tables_in(None)
}

/// [`kiln_tables`] of the namespace of `netns_pid` (the caller's when `None`).
pub fn kiln_tables_in(netns_pid: Option<u32>) -> Result<Vec<String>> {
    let mut command = Command::new("nft");
    if let Some(pid) = netns_pid {
        kiln_sandbox::netns_keeper::run_in_network_namespace_of(&mut command, pid).map_err(
            |e| NetworkError::Nftables {
                action: "list the nftables tables".into(),
                message: e.to_string(),
            },
        )?;
    }
    command
        .args(["-j", "list", "tables", "ip"])
        .stdin(Stdio::null());
    let output = kiln_sandbox::fork_window::output(&mut command)
        .map_err(missing_nft("list the nftables tables"))?;
    if !output.status.success() {
        return Err(NetworkError::Nftables {
            action: "list the nftables tables".into(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let listing: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| NetworkError::Nftables {
            action: "list the nftables tables".into(),
            message: e.to_string(),
        })?;
    Ok(listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["table"]["name"].as_str())
        .filter(|name| name.starts_with(BRIDGE_PREFIX))
        .map(str::to_owned)
        .collect())
}

fn missing_nft(action: &str) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |e| NetworkError::Nftables {
        action: action.to_owned(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "the nft program is not installed (apt-get install nftables)".into()
        } else {
            format!("cannot run nft: {e}")
        },
    }
}

fn run_nft(action: &str, commands: &Value) -> Result<()> {
    run_nft_in(None, action, commands)
}

/// Runs one nft transaction, in the namespace of `netns_pid` when given (`nft` is started
/// there, so its netlink socket and the rules are that namespace's).
fn run_nft_in(netns_pid: Option<u32>, action: &str, commands: &Value) -> Result<()> {
    let mut command = Command::new("nft");
    if let Some(pid) = netns_pid {
        kiln_sandbox::netns_keeper::run_in_network_namespace_of(&mut command, pid).map_err(
            |e| NetworkError::Nftables {
                action: action.to_owned(),
                message: e.to_string(),
            },
        )?;
    }
    // nft's run is short: the window lasts until it ends (a daemon unmounts build overlays
    // meanwhile: see `kiln_sandbox::fork_window`).
    let _window = kiln_sandbox::fork_window::spawning();
    let mut child = command
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(missing_nft(action))?;
    let body = commands.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means nft exited early; its status and stderr say why.
        let _ = stdin.write_all(body.as_bytes());
    }
    let output = child.wait_with_output().map_err(NetworkError::io("nft"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nftables {
            action: action.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_networks_drop_instead_of_masquerading() {
        let subnet = "10.7.0.0/24".parse().unwrap();
        let open = table_commands(&BridgeRules {
            bridge: "kiln-abc",
            subnet,
            internal: false,
        })
        .to_string();
        assert!(open.contains("masquerade"), "{open}");
        assert!(open.contains(r#""addr":"10.7.0.0","len":24"#), "{open}");
        assert!(open.contains(r#""right":"kiln*""#), "{open}");
        let internal = table_commands(&BridgeRules {
            bridge: "kiln-abc",
            subnet,
            internal: true,
        })
        .to_string();
        assert!(!internal.contains("masquerade"), "{internal}");
        assert_eq!(internal.matches(r#""drop":null"#).count(), 3, "{internal}");
    }

    #[test]
    fn published_ports_are_dnat_rules_in_a_chain_of_the_container() {
        use crate::ports::{Protocol, Published};
        let ports = [
            Published {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_ip: std::net::Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
            },
            Published {
                protocol: Protocol::Udp,
                container_port: 53,
                host_ip: "10.9.0.1".parse().unwrap(),
                host_port: 5353,
            },
        ];
        let id = "0123456789abcdef";
        let text = publish_commands("kiln0", id, "172.17.0.2".parse().unwrap(), &ports).to_string();
        assert!(text.contains(r#""name":"ports-0123456789ab""#), "{text}");
        assert!(text.contains(r#""hook":"prerouting""#), "{text}");
        assert!(
            text.contains(r#""dnat":{"addr":"172.17.0.2","port":80}"#),
            "{text}"
        );
        assert!(text.contains(r#""right":"local""#), "{text}");
        assert!(text.contains(r#""right":"10.9.0.1""#), "{text}");
        assert!(
            text.contains(r#""field":"dport","protocol":"udp"}},"op":"==","right":5353"#),
            "{text}"
        );
    }
}
