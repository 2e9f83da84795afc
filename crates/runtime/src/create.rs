//! `create`: a new container from a [`ContainerCreateRequest`], the Engine API's
//! `ContainerCreateRequest` (Config + HostConfig, Docker's JSON names), which `kiln run` and
//! `kiln create` fill from their flags and a daemon will fill from the request body. The
//! container is recorded, its writable layer, volumes and spec are made; nothing is started.
//!
//! Only the fields kiln implements are here; serde ignores the others, so a full request from
//! the docker CLI parses.

use std::collections::BTreeMap;

use kiln_image::HealthConfig;
use kiln_images::{StoredImage, lower_dirs};
use kiln_sandbox::{ExtraHost, NetworkMode, ProcessSpec, SandboxSpec};
use kiln_store::{CONTAINER_SCHEMA_VERSION, ContainerRecord, ContainerState, RunConfig};
use serde::{Deserialize, Serialize};

pub use crate::create_options::LogConfig;
use crate::error::{Result, RuntimeError};
use crate::host::Host;
use crate::lifecycle::Runtime;
use crate::links::Link;
use crate::mounts::{ApiMount, MountRequest, create_mounts};
pub use crate::network_request::{
    EndpointIpamConfig, EndpointSettings, NetworkChoice, NetworkingConfig,
};
use crate::process::entrypoint;
pub use crate::process::process_spec;
use crate::spec::{ContainerSpec, RestartPolicy};
use checks::name_settings;

mod checks;

/// PATH for a container whose image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The body of `POST /containers/create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreateRequest {
    #[serde(flatten)]
    pub config: ContainerConfig,
    #[serde(default)]
    pub host_config: HostConfig,
    /// The networks to connect at create, with their aliases and addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking_config: Option<NetworkingConfig>,
}

/// The container's `Config`: what it runs. `None` and empty fields take the image's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The UTS domain name (`--domainname`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domainname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Close stdin when the first attached client's input ends.
    pub stdin_once: bool,
    /// `K=V` (or `K`, taken from the caller's environment by the CLI before it gets here),
    /// added over the image's.
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `Some([])` or `Some([""])`: no entrypoint (and then the image's CMD is dropped too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `Volumes`: paths that get an anonymous volume, as the image's `VOLUME`s do (the values
    /// are empty objects).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// `{"80/tcp": {}}`: ports the container listens on, added to the image's EXPOSE.
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
}

/// The container's `HostConfig`: how it is confined and what it mounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `-v` strings.
    pub binds: Vec<String>,
    /// Kept in the spec, reported by inspect, carried out by the supervisor.
    #[serde(skip_serializing_if = "RestartPolicy::is_no")]
    pub restart_policy: RestartPolicy,
    pub mounts: Vec<ApiMount>,
    /// `default`/`bridge`, `none` or `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    pub auto_remove: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub readonly_rootfs: bool,
    /// Bytes; 0 for no limit.
    pub memory: i64,
    /// CPUs × 10⁹; 0 for no limit.
    pub nano_cpus: i64,
    /// `None`, 0 or -1 for no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// `--add-host` entries, `NAME:ADDRESS` each.
    pub extra_hosts: Vec<String>,
    /// Target → tmpfs options (`size=64m`), mounted after `Mounts` (`create_options.rs`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Only `json-file` (or empty): see `create_options.rs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
    /// Only the container's own PID namespace (`""`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pid_mode: String,
    /// Only the container's own UTS namespace (`""`).
    #[serde(rename = "UTSMode", skip_serializing_if = "String::is_empty")]
    pub uts_mode: String,
    /// `-p`: `"80/tcp"` → host addresses and ports (`crate::ports`).
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_bindings: crate::ports::PortMap,
    /// `-P`: every exposed port on a port the kernel picks.
    pub publish_all_ports: bool,
    /// `--link NAME[:ALIAS]` (`crate::links`).
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub links: Vec<String>,
    /// `--dns`: nameservers (on a user-defined network, the embedded server's upstreams).
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<String>,
    /// `--dns-search`: search domains instead of the host's.
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_search: Vec<String>,
    /// `--dns-option`: resolv.conf options instead of the host's.
    #[serde(
        deserialize_with = "crate::network_request::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns_options: Vec<String>,
}

pub(crate) fn invalid(
    what: &'static str,
    value: impl ToString,
    reason: &'static str,
) -> RuntimeError {
    RuntimeError::Invalid {
        what,
        value: value.to_string(),
        reason,
    }
}

impl<H: Host> Runtime<H> {
    /// Creates a container of `img` (which the caller found or pulled) as `request` says,
    /// named `name` (or a generated name). On any error nothing of it is left.
    pub fn create(
        &self,
        name: Option<&str>,
        request: &ContainerCreateRequest,
        img: &StoredImage,
    ) -> Result<ContainerRecord> {
        // Everything is checked before anything is created.
        request.host_config.check_options()?;
        let requests = request.host_config.mount_requests()?;
        let network = request
            .host_config
            .network_choice(request.networking_config.as_ref())?;
        let mut endpoint_requests = network
            .networks
            .iter()
            .map(|(name, settings)| Ok((name.clone(), settings.request()?)))
            .collect::<Result<Vec<_>>>()?;
        let links = request
            .host_config
            .links
            .iter()
            .map(|l| Link::parse(l))
            .collect::<Result<Vec<_>>>()?;
        // On a user-defined network a link is a name for this container's DNS alone; on the
        // default bridge, /etc/hosts lines (below, once this container has its name).
        let bridge_links = match endpoint_requests.first_mut() {
            _ if links.is_empty() => &[][..],
            Some((name, _)) if name == kiln_network::DEFAULT_BRIDGE => &links[..],
            Some((_, first)) if network.mode == NetworkMode::Prepared => {
                first.links.extend(links.iter().map(Link::endpoint_form));
                &[][..]
            }
            _ => {
                return Err(invalid(
                    "links of network",
                    request
                        .host_config
                        .network_mode
                        .as_deref()
                        .unwrap_or("default"),
                    "links need the default bridge network or a user-defined one",
                ));
            }
        };
        let security = request.host_config.security_options()?;
        let resources = request.host_config.resource_limits()?;
        let mut extra_hosts = request.host_config.extra_hosts()?;
        let dns_upstream = request.host_config.dns_servers()?;
        let names = name_settings(&request.config, &request.host_config)?;
        let mut process = process_spec(&request.config, img)?;
        let mut ports = crate::ports::ports_spec(
            &request.host_config.port_bindings,
            request.host_config.publish_all_ports,
            img.config
                .config
                .exposed_ports
                .keys()
                .chain(request.config.exposed_ports.keys())
                .cloned(),
        )?;
        match network.mode {
            // dockerd: "Published ports are discarded when using host network mode" (the
            // container's ports are the host's already); compose files do ask for both.
            NetworkMode::Host => ports.publish.clear(),
            NetworkMode::None if !ports.publish.is_empty() => {
                return Err(invalid(
                    "published ports of network",
                    "none",
                    "a container on the none network has nothing to publish from",
                ));
            }
            _ => {}
        }
        let lowers = lower_dirs(&self.store, img.layers())?;

        let store = &self.store;
        let id = store.new_container_id(&img.manifest_digest.to_string());
        let cfg = &img.config.config;
        let config = &request.config;
        let hostname = config
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| id[..12].to_owned());
        let entrypoint = entrypoint(config, cfg);
        let mut labels = cfg.labels.clone();
        labels.extend(config.labels.clone());
        let mut record = ContainerRecord {
            schema_version: CONTAINER_SCHEMA_VERSION,
            id: id.clone(),
            name: name.unwrap_or_default().to_owned(),
            created: chrono::Utc::now(),
            image: config.image.clone(),
            image_id: img.config_digest.to_string(),
            manifest: img.manifest_digest.to_string(),
            config: RunConfig {
                hostname: hostname.clone(),
                user: process.user.clone().unwrap_or_default(),
                env: process.env.clone(),
                cmd: process.args[entrypoint.len()..].to_vec(),
                entrypoint,
                working_dir: process.cwd.clone(),
                labels,
                stop_signal: config
                    .stop_signal
                    .clone()
                    .or_else(|| cfg.stop_signal.clone())
                    .unwrap_or_else(|| "SIGTERM".into()),
                healthcheck: config
                    .healthcheck
                    .clone()
                    .or_else(|| cfg.healthcheck.clone()),
                tty: config.tty,
                open_stdin: config.open_stdin,
                stdin_once: config.open_stdin && config.stdin_once,
            },
            mounts: Vec::new(),
            auto_remove: request.host_config.auto_remove,
            state: ContainerState::default(),
        };
        store.create_container(&mut record)?;
        let host_links = links
            .iter()
            .map(|l| l.host_config_form(&record.name))
            .collect();
        match crate::links::bridge_links(store, &record.name, bridge_links) {
            Ok(linked) => {
                extra_hosts.extend(linked.hosts);
                // The container's own variables win over a link's.
                for var in linked.env {
                    let key = var.split('=').next().unwrap_or_default();
                    if !process.env.iter().any(|e| e.split('=').next() == Some(key)) {
                        process.env.push(var);
                    }
                }
            }
            Err(e) => {
                let _ = crate::lifecycle::remove_record(store, &record, true);
                return Err(e);
            }
        }
        // Connected before anything else is made, so a taken address or a missing network
        // fails the create with nothing left (the removal below releases what was connected).
        let mut connected = Ok(());
        let mut dns = Vec::new();
        let networks = kiln_network::Networks::open(store.root());
        for (i, (name, endpoint)) in endpoint_requests.iter().enumerate() {
            match networks.connect(name, &id, &record.name, endpoint) {
                Ok((network, endpoint)) => {
                    // User-defined networks have the embedded DNS server (the default bridge
                    // does not, as Docker's).
                    if !network.predefined && dns.is_empty() {
                        dns.push(kiln_network::dns::DNS_ADDRESS.into());
                    }
                    // The default bridge has no names, but a host whose resolvers are all on
                    // its loopback (systemd-resolved) cannot be asked from it: the embedded
                    // server forwards for it (no container names: see `dns::start`).
                    if i == 0
                        && network.predefined
                        && dns_upstream.is_empty()
                        && kiln_network::dns::host_resolvers_loopback_only()
                    {
                        dns.push(kiln_network::dns::DNS_ADDRESS.into());
                    }
                    // Docker's /etc/hosts names the container on its first network's address.
                    if let (0, Some(ip)) = (i, endpoint.ip) {
                        extra_hosts.push(ExtraHost {
                            name: names.hosts_names(&hostname),
                            address: ip.into(),
                        });
                    }
                }
                Err(e) => {
                    connected = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = connected {
            let _ = crate::lifecycle::remove_record(store, &record, true);
            return Err(e.into());
        }
        let network = network.mode;
        // `--dns` off user-defined networks: resolv.conf's nameservers.
        if dns.is_empty() {
            dns.clone_from(&dns_upstream);
        }
        let sandbox = SandboxSpec {
            lower_dirs: lowers,
            upper_dir: store.container_dir(&id).join("upper"),
            work_dir: store.container_dir(&id).join("work"),
            network,
            hostname,
            mounts: Vec::new(),
            security,
            resources,
            extra_hosts,
            dns,
            shm_size: None,
            ulimits: Vec::new(),
            names,
        };
        // The request's `Volumes` are anonymous volumes, as the image's are.
        let mut volumes: Vec<String> = img.config.config.volumes.keys().cloned().collect();
        for v in request.config.volumes.keys() {
            if !volumes.contains(v) {
                volumes.push(v.clone());
            }
        }
        let restart_policy = request.host_config.restart_policy.clone();
        match self.prepare(
            &mut record,
            requests,
            &volumes,
            sandbox,
            (process, restart_policy),
            (ports, host_links, dns_upstream),
        ) {
            Ok(()) => Ok(record),
            Err(e) => {
                // Nothing ran: leave no half-made container behind.
                let _ = crate::lifecycle::remove_record(store, &record, true);
                Err(e)
            }
        }
    }

    /// Creates the container's volumes and writable layer and writes its spec.
    fn prepare(
        &self,
        record: &mut ContainerRecord,
        requests: Vec<MountRequest>,
        image_volumes: &[String],
        mut sandbox: SandboxSpec,
        (process, restart_policy): (ProcessSpec, RestartPolicy),
        (ports, links, dns_upstream): (crate::ports::PortsSpec, Vec<String>, Vec<std::net::IpAddr>),
    ) -> Result<()> {
        let store = &self.store;
        let created = record
            .created
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mounts = create_mounts(
            store,
            requests,
            image_volumes,
            &sandbox.lower_dirs,
            &created,
        )?;
        for d in [&sandbox.upper_dir, &sandbox.work_dir] {
            std::fs::create_dir_all(d).map_err(RuntimeError::io(d))?;
        }
        let (records, mounts): (Vec<_>, Vec<_>) = mounts.into_iter().unzip();
        // The record was written without mounts; with none it is already what it should be,
        // and each rewrite is a synced write on the path of every `kiln run`.
        if !records.is_empty() {
            *record = store.update_container(&record.id, |r| r.mounts = records)?;
        }
        sandbox.mounts = mounts;
        ContainerSpec {
            sandbox,
            process,
            restart_policy,
            ports,
            links,
            dns_upstream,
        }
        .write(store, &record.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_engine_apis_names() {
        let body = r#"{
            "Image": "busybox", "Cmd": ["sh", "-c", "true"], "Env": ["A=1"], "Tty": true,
            "OpenStdin": true, "StdinOnce": true, "Entrypoint": [""], "Hostname": "h",
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {
                "Binds": ["data:/data:ro"], "AutoRemove": true, "NetworkMode": "none",
                "Memory": 67108864, "NanoCpus": 500000000, "PidsLimit": 100,
                "CapAdd": ["NET_ADMIN"], "ReadonlyRootfs": true,
                "Mounts": [{"Type": "tmpfs", "Target": "/run"}]
            }
        }"#;
        let r: ContainerCreateRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.config.image, "busybox");
        assert_eq!(r.config.entrypoint, Some(vec![String::new()]));
        assert!(r.config.tty && r.config.open_stdin && r.config.stdin_once);
        let h = &r.host_config;
        assert_eq!(h.network().unwrap(), kiln_sandbox::NetworkMode::None);
        assert!(h.auto_remove);
        let limits = h.resource_limits().unwrap();
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.pids, Some(100));
        assert_eq!(limits.nano_cpus, Some(500_000_000));
        let s = h.security_options().unwrap();
        assert!(s.capabilities.contains("NET_ADMIN") && s.read_only_root);
        assert_eq!(h.mount_requests().unwrap().len(), 2);
        // What kiln writes, it reads back the same.
        let again: ContainerCreateRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
