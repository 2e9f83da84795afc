//! `GET /containers/json` and `GET /containers/{id}/json` in dockerd's shapes.
//!
//! The inspect object starts from the runtime's (`Runtime::inspect`, shared with `kiln
//! inspect`) and adds what dockerd writes and kiln has no notion of, with dockerd's values for
//! "none" (`null`, `""`, `0`, `{}` as dockerd has them), so clients that index into it find
//! every field. What kiln records (network, limits, read-only root) comes from the container's
//! spec.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use kiln_runtime::{ContainerSpec, Host};
use kiln_store::{ContainerRecord, ContainerStatus};
use serde_json::{Value, json};

use super::{blocking, runtime};
use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::stream::{self, Body};

/// The filters `containers/json` implements.
const FILTERS: &[&str] = &["label", "status", "name", "id", "ancestor", "exited"];

/// `GET /containers/json?all=&limit=&filters=`: running containers, or all with `all`, newest
/// first.
pub async fn list(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(FILTERS)?;
    let all = query.bool("all");
    let limit = query.int("limit")?.filter(|l| *l > 0);
    for s in filters.get("status") {
        if !matches!(
            s.as_str(),
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'status={s}': expected created, restarting, running, removing, paused, exited or dead"
            )));
        }
    }
    let rt = runtime(&daemon);
    let mut containers = blocking("", move || {
        let mut out = Vec::new();
        for mut c in rt.store.list_containers()? {
            let running = rt.host.is_running(&c.id)?;
            if running {
                c.state.status = ContainerStatus::Running;
            } else if c.state.status == ContainerStatus::Running {
                c.state.status = ContainerStatus::Exited;
            }
            out.push(c);
        }
        Ok(out)
    })
    .await?;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created));
    // With a status filter, `all` is implied (dockerd).
    let all = all || !filters.get("status").is_empty() || limit.is_some();
    let any = |name: &str, test: &dyn Fn(&str) -> bool| {
        let values = filters.get(name);
        values.is_empty() || values.iter().any(|v| test(v))
    };
    let mut out = Vec::new();
    for c in &containers {
        let keep = (all || c.state.status == ContainerStatus::Running)
            && any("status", &|v| v == c.state.docker_status())
            && any("id", &|v| c.id.starts_with(v))
            && any("name", &|v| c.name.contains(v.trim_start_matches('/')))
            && any("ancestor", &|v| {
                c.image == v
                    || c.image_id == v
                    || c.image_id
                        .strip_prefix("sha256:")
                        .is_some_and(|h| h.starts_with(v.trim_start_matches("sha256:")))
                    || (!v.contains(':') && c.image == format!("{v}:latest"))
            })
            && any("exited", &|v| {
                c.state.status == ContainerStatus::Exited && v == c.state.exit_code.to_string()
            })
            && filters.get("label").iter().all(|v| {
                let (key, value) = v
                    .split_once('=')
                    .map_or((v.as_str(), None), |(k, v)| (k, Some(v)));
                match c.config.labels.get(key) {
                    Some(have) => value.is_none_or(|value| have == value),
                    None => false,
                }
            });
        if keep {
            out.push(c.clone());
        }
    }
    if let Some(limit) = limit {
        out.truncate(limit as usize);
    }
    // Each entry's networks as inspect shows them (dockerd's list has the same endpoint
    // objects; `docker ps --format {{.Networks}}` and docker-py's sparse lists read them). A
    // container removed meanwhile, or whose spec cannot be read, lists `{}`.
    let rt = runtime(&daemon);
    let out = blocking("", move || {
        Ok(out
            .iter()
            .map(|c| {
                let mut entry = summary(c, &rt.store);
                if let Ok(settings) = rt.network_settings(c) {
                    entry["NetworkSettings"]["Networks"] = settings["Networks"].clone();
                }
                // As inspect writes it: the default network is `bridge`.
                if let Ok(mode) = rt.network_mode_name(c) {
                    let mode = if mode == "default" { "bridge" } else { &mode };
                    entry["HostConfig"]["NetworkMode"] = json!(mode);
                }
                entry
            })
            .collect())
    })
    .await?;
    Ok(stream::json(StatusCode::OK, &Value::Array(out)))
}

/// One entry of `containers/json`.
pub(crate) fn summary(c: &ContainerRecord, store: &kiln_store::Store) -> Value {
    let command = c.config.command();
    // A stopped container has no bindings and shows no ports (dockerd).
    let ports = match ContainerSpec::read(store, &c.id) {
        Ok(spec) if c.state.status == ContainerStatus::Running => {
            kiln_runtime::ports::summary_ports(
                &spec.ports,
                &kiln_runtime::ports::read_published(store, &c.id),
            )
        }
        _ => json!([]),
    };
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": command.join(" "),
        "Created": c.created.timestamp(),
        "Ports": ports,
        "Labels": c.config.labels,
        "State": c.state.docker_status(),
        "Status": kiln_runtime::status_text(c, chrono::Utc::now()),
        "HostConfig": { "NetworkMode": "default" },
        "NetworkSettings": { "Networks": {} },
        "Mounts": c.mounts.iter().map(|m| json!({
            "Type": m.kind.as_str(),
            "Name": m.name,
            "Source": m.source,
            "Destination": m.destination,
            "Driver": if m.kind == kiln_store::MountKind::Volume { "local" } else { "" },
            "Mode": "",
            "RW": m.rw,
            "Propagation": "",
        })).collect::<Vec<_>>(),
    })
}

/// `GET /containers/{id}/json`.
pub async fn inspect(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let rt = runtime(&daemon);
    let query = id.to_owned();
    let (record, mut value, spec, mode) = blocking(id, move || {
        let record = rt.container(&query)?;
        let value = rt.inspect(&record.id)?;
        // A container whose spec cannot be read is still inspected, with defaults.
        let spec = ContainerSpec::read(&rt.store, &record.id).ok();
        let mode = rt.network_mode_name(&record).ok();
        Ok((record, value, spec, mode))
    })
    .await?;
    complete(&daemon, &record, &mut value, spec.as_ref(), mode);
    Ok(stream::json(StatusCode::OK, &value))
}

/// Adds dockerd's fields the runtime's object does not have.
fn complete(
    daemon: &Daemon,
    c: &ContainerRecord,
    v: &mut Value,
    spec: Option<&ContainerSpec>,
    network_mode: Option<String>,
) {
    let dir = daemon.store().container_dir(&c.id);
    // The runtime's `NetworkSettings` stays; the mode is the bridge network's name for one
    // on bridge networks, and `bridge` for the default network, as the docker CLI expects.
    let network = network_mode.unwrap_or_else(|| "default".into());
    let network = if network == "default" {
        "bridge".to_owned()
    } else {
        network
    };
    let limits = spec.map(|s| s.sandbox.resources).unwrap_or_default();
    let read_only = spec.is_some_and(|s| s.sandbox.security.read_only_root);
    let binds: Vec<String> = c
        .mounts
        .iter()
        .filter(|m| m.kind == kiln_store::MountKind::Bind)
        .map(|m| {
            let mode = if m.rw { "" } else { ":ro" };
            format!("{}:{}{mode}", m.source.display(), m.destination)
        })
        .collect();
    let obj = match v.as_object_mut() {
        Some(o) => o,
        None => return,
    };
    let set = |o: &mut serde_json::Map<String, Value>, k: &str, val: Value| {
        o.insert(k.to_owned(), val);
    };
    set(obj, "ResolvConfPath", json!(dir.join("resolv.conf")));
    set(obj, "HostnamePath", json!(dir.join("hostname")));
    set(obj, "HostsPath", json!(dir.join("hosts")));
    set(obj, "LogPath", json!(dir.join("container.log")));
    set(obj, "RestartCount", json!(c.state.restart_count));
    set(obj, "Driver", json!("overlay2"));
    set(obj, "Platform", json!("linux"));
    set(obj, "MountLabel", json!(""));
    set(obj, "ProcessLabel", json!(""));
    set(obj, "AppArmorProfile", json!(""));
    set(obj, "ExecIDs", Value::Null);
    set(
        obj,
        "GraphDriver",
        json!({
            "Name": "overlay2",
            "Data": {
                "UpperDir": dir.join("upper"),
                "WorkDir": dir.join("work"),
            },
        }),
    );
    set(
        obj,
        "HostConfig",
        json!({
            "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
            "ContainerIDFile": "",
            "LogConfig": { "Type": "json-file", "Config": {} },
            "NetworkMode": network,
            "PortBindings": spec.map_or(json!({}), |s| json!(s.ports.bindings)),
            "RestartPolicy": spec.map_or_else(
                || json!({ "Name": "no", "MaximumRetryCount": 0 }),
                |s| json!({
                    "Name": if s.restart_policy.name.is_empty() { "no" } else { s.restart_policy.name.as_str() },
                    "MaximumRetryCount": s.restart_policy.maximum_retry_count,
                }),
            ),
            "AutoRemove": c.auto_remove,
            "VolumeDriver": "",
            "VolumesFrom": null,
            "CapAdd": null,
            "CapDrop": null,
            "CgroupnsMode": "private",
            "Dns": spec.map_or(json!([]), |s| json!(s.dns_upstream)),
            "DnsOptions": spec.map_or(json!([]), |s| json!(s.sandbox.names.dns_options.clone().unwrap_or_default())),
            "DnsSearch": spec.map_or(json!([]), |s| json!(s.sandbox.names.dns_search.clone().unwrap_or_default())),
            "ExtraHosts": null,
            "GroupAdd": null,
            "IpcMode": "private",
            "Cgroup": "",
            "Links": spec
                .filter(|s| !s.links.is_empty())
                .map_or(Value::Null, |s| json!(s.links)),
            "OomScoreAdj": 0,
            "PidMode": "",
            "Privileged": false,
            "PublishAllPorts": spec.is_some_and(|s| s.ports.publish_all),
            "ReadonlyRootfs": read_only,
            "SecurityOpt": null,
            "UTSMode": "",
            "UsernsMode": "",
            "ShmSize": 67108864,
            "Runtime": "runc",
            "ConsoleSize": [0, 0],
            "Isolation": "",
            "CpuShares": 0,
            "Memory": limits.memory_bytes.unwrap_or(0),
            "NanoCpus": limits.nano_cpus.unwrap_or(0),
            "CgroupParent": "",
            "BlkioWeight": 0,
            "BlkioWeightDevice": [],
            "BlkioDeviceReadBps": null,
            "BlkioDeviceWriteBps": null,
            "BlkioDeviceReadIOps": null,
            "BlkioDeviceWriteIOps": null,
            "CpuPeriod": 0,
            "CpuQuota": 0,
            "CpuRealtimePeriod": 0,
            "CpuRealtimeRuntime": 0,
            "CpusetCpus": "",
            "CpusetMems": "",
            "Devices": [],
            "DeviceCgroupRules": null,
            "DeviceRequests": null,
            "KernelMemory": 0,
            "KernelMemoryTCP": 0,
            "MemoryReservation": 0,
            "MemorySwap": 0,
            "MemorySwappiness": null,
            "OomKillDisable": false,
            "PidsLimit": limits.pids,
            "Ulimits": null,
            "CpuCount": 0,
            "CpuPercent": 0,
            "IOMaximumIOps": 0,
            "IOMaximumBandwidth": 0,
            "MaskedPaths": [],
            "ReadonlyPaths": [],
        }),
    );
    if let Some(config) = obj.get_mut("Config").and_then(Value::as_object_mut) {
        let attach = !c.config.open_stdin;
        set(config, "AttachStdin", json!(c.config.open_stdin));
        set(config, "AttachStdout", json!(attach || c.config.open_stdin));
        set(config, "AttachStderr", json!(attach || c.config.open_stdin));
        // dockerd's `{"80/tcp": {}}`, or `null` for none.
        let exposed: serde_json::Map<String, Value> = spec
            .iter()
            .flat_map(|s| &s.ports.exposed)
            .map(|k| (k.clone(), json!({})))
            .collect();
        set(
            config,
            "ExposedPorts",
            if exposed.is_empty() {
                Value::Null
            } else {
                Value::Object(exposed)
            },
        );
        set(config, "Volumes", Value::Null);
        set(config, "OnBuild", Value::Null);
        // dockerd writes `null` for an empty entrypoint, and the CLI prints it so.
        if c.config.entrypoint.is_empty() {
            set(config, "Entrypoint", Value::Null);
        }
        if !config.contains_key("Healthcheck") || config["Healthcheck"].is_null() {
            config.remove("Healthcheck");
        }
    }
}
