//! `kiln port CONTAINER [PORT]`: a container's published ports as `docker port` prints them,
//! from dockerd's `NetworkSettings.Ports` shape — built from the store in process, or read
//! from the daemon's inspect with `--host` — so both paths print the same.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_store::Store;
use serde_json::Value;

pub fn port(store: &Store, query: &str, port: Option<&str>) -> Result<ExitCode> {
    let record = store.find_container(query)?;
    let spec = kiln_runtime::ContainerSpec::read(store, &record.id)?;
    let running = record.state.status == kiln_store::ContainerStatus::Running;
    let ports = kiln_runtime::ports::network_settings_ports(
        &spec.ports,
        &kiln_runtime::ports::read_published(store, &record.id),
        running,
    );
    print(query, &ports, port)
}

/// The lines of `docker port`: `80/tcp -> 0.0.0.0:8080` for each binding, or only the host
/// side of `port` (`80`, `80/udp`).
pub fn lines(container: &str, ports: &Value, port: Option<&str>) -> Result<Vec<String>> {
    let wanted = port.map(|p| {
        if p.contains('/') {
            p.to_owned()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut out = Vec::new();
    for (key, bindings) in ports.as_object().into_iter().flatten() {
        if wanted.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for b in bindings.as_array().into_iter().flatten() {
            let host = format!(
                "{}:{}",
                b["HostIp"].as_str().unwrap_or_default(),
                b["HostPort"].as_str().unwrap_or_default()
            );
            out.push(match wanted {
                Some(_) => host,
                None => format!("{key} -> {host}"),
            });
        }
    }
    if let Some(w) = wanted
        && out.is_empty()
    {
        bail!("no public port '{w}' published for {container}");
    }
    Ok(out)
}

/// The PORTS column of `ps` from `containers/json`'s `Ports`: `0.0.0.0:8080->80/tcp` for a
/// binding, `90/tcp` for a port only exposed, as the docker CLI writes them.
pub fn ps_column(ports: &Value) -> String {
    ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = format!(
                "{}/{}",
                p["PrivatePort"],
                p["Type"].as_str().unwrap_or("tcp")
            );
            match (p["IP"].as_str(), p["PublicPort"].as_u64()) {
                (Some(ip), Some(public)) => format!("{ip}:{public}->{private}"),
                _ => private,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The PORTS column of `ps` for a container of the store (nothing when it is not running).
pub fn ps_column_of(store: &Store, c: &kiln_store::ContainerRecord) -> String {
    if c.state.status != kiln_store::ContainerStatus::Running {
        return String::new();
    }
    match kiln_runtime::ContainerSpec::read(store, &c.id) {
        Ok(spec) => ps_column(&kiln_runtime::ports::summary_ports(
            &spec.ports,
            &kiln_runtime::ports::read_published(store, &c.id),
        )),
        Err(_) => String::new(),
    }
}

pub fn print(container: &str, ports: &Value, port: Option<&str>) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for line in lines(container, ports, port)? {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_prints_as_docker_port() {
        let ports = serde_json::json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "90/tcp": null,
        });
        assert_eq!(
            lines("web", &ports, None).unwrap(),
            ["53/udp -> 127.0.0.1:5353", "80/tcp -> 0.0.0.0:8080"]
        );
        assert_eq!(lines("web", &ports, Some("80")).unwrap(), ["0.0.0.0:8080"]);
        let err = lines("web", &ports, Some("90")).unwrap_err().to_string();
        assert_eq!(err, "no public port '90/tcp' published for web");
        let summary = serde_json::json!([
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 90, "Type": "udp"},
        ]);
        assert_eq!(ps_column(&summary), "0.0.0.0:8080->80/tcp, 90/udp");
    }
}
