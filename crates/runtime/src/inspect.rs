//! Docker's inspect object for a container, built from its record (Docker's field names and
//! its zero time for "never"), for `kiln inspect` and the API's container JSON alike.

use kiln_store::{ContainerStatus, MountKind, Timestamp};
use serde_json::json;

use crate::error::Result;
use crate::host::Host;
use crate::lifecycle::Runtime;

fn rfc3339_or_zero(t: Option<Timestamp>) -> String {
    match t {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => "0001-01-01T00:00:00Z".to_owned(),
    }
}

impl<H: Host> Runtime<H> {
    /// Docker's `inspect` object for the container `query` (what `GET /containers/{id}/json`
    /// answers).
    pub fn inspect(&self, query: &str) -> Result<serde_json::Value> {
        let c = self.container(query)?;
        let mut args: Vec<&String> = c.config.entrypoint.iter().chain(&c.config.cmd).collect();
        let path = if args.is_empty() {
            String::new()
        } else {
            args.remove(0).clone()
        };
        let health = c.state.health.as_ref().map(|h| {
            json!({
                "Status": h.status.as_str(),
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|p| json!({
                    "Start": rfc3339_or_zero(Some(p.start)),
                    "End": rfc3339_or_zero(Some(p.end)),
                    "ExitCode": p.exit_code,
                    "Output": p.output,
                })).collect::<Vec<_>>(),
            })
        });
        let running = c.state.status == ContainerStatus::Running;
        // Older containers' specs, or one that cannot be read: defaults.
        let spec = crate::spec::ContainerSpec::read(&self.store, &c.id).ok();
        let names = spec
            .as_ref()
            .map(|s| s.sandbox.names.clone())
            .unwrap_or_default();
        let mut state = json!({
            "Status": c.state.docker_status(),
            "Running": running,
            "Paused": c.state.is_paused(),
            "Restarting": c.state.is_restarting(),
            "OOMKilled": false,
            "Dead": false,
            "Pid": if running { c.state.pid } else { 0 },
            "ExitCode": c.state.exit_code,
            "Error": c.state.error,
            "StartedAt": rfc3339_or_zero(c.state.started_at),
            "FinishedAt": rfc3339_or_zero(c.state.finished_at),
        });
        if let Some(h) = health {
            state["Health"] = h;
        }
        Ok(json!({
            "Id": c.id,
            "Created": rfc3339_or_zero(Some(c.created)),
            "Path": path,
            "Args": args,
            "State": state,
            "Image": c.image_id,
            "Name": format!("/{}", c.name),
            "Mounts": c.mounts.iter().map(|m| json!({
                "Type": m.kind.as_str(),
                "Name": if m.name.is_empty() { None } else { Some(&m.name) },
                "Source": m.source,
                "Destination": m.destination,
                "Driver": if m.kind == MountKind::Volume { "local" } else { "" },
                "Mode": "",
                "RW": m.rw,
                "Propagation": "",
            })).collect::<Vec<_>>(),
            "Config": {
                "Hostname": c.config.hostname,
                "Domainname": names.domainname,
                "User": c.config.user,
                "Tty": c.config.tty,
                "OpenStdin": c.config.open_stdin,
                "StdinOnce": c.config.stdin_once,
                "Env": c.config.env,
                "Cmd": c.config.cmd,
                "Entrypoint": c.config.entrypoint,
                "Image": c.image,
                "WorkingDir": c.config.working_dir,
                "Labels": c.config.labels,
                "StopSignal": c.config.stop_signal,
                "Healthcheck": c.config.healthcheck,
            },
            "RestartCount": c.state.restart_count,
            "HostConfig": {
                "AutoRemove": c.auto_remove,
                "RestartPolicy": spec.as_ref().map(|s| {
                    let p = &s.restart_policy;
                    serde_json::json!({
                        "Name": if p.name.is_empty() { "no" } else { p.name.as_str() },
                        "MaximumRetryCount": p.maximum_retry_count,
                    })
                }),
                "Links": spec.as_ref().filter(|s| !s.links.is_empty()).map(|s| &s.links),
                "Dns": spec.as_ref().map_or(&[][..], |s| &s.dns_upstream[..]),
                "DnsSearch": names.dns_search.clone().unwrap_or_default(),
                "DnsOptions": names.dns_options.clone().unwrap_or_default(),
            },
            "NetworkSettings": self.network_settings(&c)?,
        }))
    }
}
