//! `kiln network create|ls|inspect|rm|prune|connect|disconnect`: flags → the network service
//! (connect and disconnect through the runtime, which knows whether the container runs) →
//! docker's output.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_network::{CreateRequest, Networks};
use kiln_runtime::{EndpointIpamConfig, EndpointSettings, Runtime};
use kiln_store::Store;

use crate::cli::NetworkCommand;

fn parse<T: std::str::FromStr>(what: &str, value: Option<String>) -> Result<Option<T>> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| anyhow::anyhow!("invalid {what} {v:?}"))
        })
        .transpose()
}

pub fn network_command(store: &Store, command: NetworkCommand) -> Result<ExitCode> {
    let networks = Networks::open(store.root());
    let mut out = std::io::stdout().lock();
    match command {
        NetworkCommand::Create {
            name,
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            labels,
            aux_addresses,
        } => {
            let request = CreateRequest {
                name,
                driver: Some(driver),
                subnet: subnet.map(|s| s.parse()).transpose()?,
                gateway: parse("gateway", gateway)?,
                ip_range: ip_range.map(|s| s.parse()).transpose()?,
                internal,
                labels: labels
                    .iter()
                    .map(|l| {
                        let (k, v) = l.split_once('=').unwrap_or((l, ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
                aux_addresses: aux_addresses
                    .iter()
                    .map(|a| {
                        let (name, ip) = a.split_once('=').ok_or_else(|| {
                            anyhow::anyhow!("invalid --aux-address {a:?}: expected NAME=ADDRESS")
                        })?;
                        let ip = ip.parse().map_err(|_| {
                            anyhow::anyhow!("invalid --aux-address {a:?}: not an IPv4 address")
                        })?;
                        Ok((name.to_owned(), ip))
                    })
                    .collect::<Result<_>>()?,
            };
            let network = networks.create(&request)?;
            writeln!(out, "{}", network.id)?;
        }
        NetworkCommand::Ls { quiet, no_trunc } => {
            let mut list = networks.list()?;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if !quiet {
                writeln!(
                    out,
                    "{:<14}{:<20}{:<10}SCOPE",
                    "NETWORK ID", "NAME", "DRIVER"
                )?;
            }
            for n in list {
                let id = if no_trunc {
                    n.id.as_str()
                } else {
                    n.short_id()
                };
                if quiet {
                    writeln!(out, "{id}")?;
                } else {
                    writeln!(out, "{id:<14}{:<20}{:<10}local", n.name, n.driver.name())?;
                }
            }
        }
        NetworkCommand::Inspect { networks: names } => {
            let mut all = Vec::new();
            for name in &names {
                all.push(networks.inspect(name)?.to_api(true));
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        }
        NetworkCommand::Rm { networks: names } => {
            let removed = crate::render::each_reporting(&names, |name| {
                networks.remove(name)?;
                writeln!(out, "{name}")?;
                Ok(())
            });
            if !removed {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCommand::Prune { force: _ } => {
            let removed = networks.prune()?;
            if !removed.is_empty() {
                writeln!(out, "Deleted Networks:")?;
                for name in removed {
                    writeln!(out, "{name}")?;
                }
            }
        }
        NetworkCommand::Connect {
            network,
            container,
            aliases,
            ip,
        } => {
            let settings = EndpointSettings {
                aliases,
                ipam_config: ip.map(|ip| EndpointIpamConfig {
                    ipv4_address: ip,
                    ..EndpointIpamConfig::default()
                }),
                ..EndpointSettings::default()
            };
            Runtime::new(store.clone())
                .connect_network(&container, &network, &settings)
                .with_context(|| format!("connecting {container} to network {network}"))?;
        }
        NetworkCommand::Disconnect {
            network,
            container,
            force: _,
        } => {
            Runtime::new(store.clone())
                .disconnect_network(&container, &network)
                .with_context(|| format!("disconnecting {container} from network {network}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
