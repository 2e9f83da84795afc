//! The system operations: `_ping`, `version`, `info`, `auth`, `events`.

use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Method, Response, StatusCode};
use kiln_registry::Credential;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::events::EventsRequest;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};
use crate::{API_VERSION, Daemon, MIN_API_VERSION};

/// `GET|HEAD /_ping`. `Builder-Version: 1`: kiln speaks the legacy `/build` protocol only, and
/// says so (the CLI still needs `DOCKER_BUILDKIT=0` when buildx is installed).
pub fn ping(method: &Method) -> Response<Body> {
    let mut response = if method == Method::HEAD {
        stream::empty(StatusCode::OK)
    } else {
        Response::new(stream::full("OK"))
    };
    let h = response.headers_mut();
    h.insert(
        "Content-Type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    response
}

fn kernel_version() -> String {
    let uname = rustix::system::uname();
    uname.release().to_string_lossy().into_owned()
}

/// Go's names for the machine, as dockerd reports `Arch`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /version`.
pub fn version(_daemon: &Daemon) -> Response<Body> {
    let kernel = kernel_version();
    let details = json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "n/a (kiln is written in Rust)",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "Experimental": "false",
        "BuildTime": "",
    });
    stream::json(
        StatusCode::OK,
        &json!({
            "Platform": { "Name": "kiln" },
            "Components": [{ "Name": "Engine", "Version": VERSION, "Details": details }],
            "Version": VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "n/a (kiln is written in Rust)",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel,
            "BuildTime": "",
        }),
    )
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    (field("PRETTY_NAME"), field("VERSION_ID"))
}

/// `GET /info`: `SystemInfo` with every field dockerd 1.41 has; what kiln has no notion of is
/// given dockerd's zero value, except where the spec wants a type dockerd's `null` is not
/// (`Warnings`, `GenericResources`, `Plugins.Authorization` are `[]`) and `Isolation`, which
/// dockerd leaves empty on Linux and the spec allows only Windows values for (left out).
pub async fn info(daemon: &Arc<Daemon>) -> Result<Response<Body>, ApiError> {
    let store = daemon.store().clone();
    let counts = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let containers = store.list_containers()?;
        let running = containers
            .iter()
            .filter(|c| store.container_is_running(&c.id).unwrap_or(false))
            .count();
        // The images `images/json?all=1` lists (named and unnamed), each ID once: docker-py
        // checks that the two agree.
        let all = kiln_images::ListFilter::parse::<&str>(&[])?.with_unnamed(true);
        let images: std::collections::BTreeSet<_> = kiln_images::list_images(&store, &all)?
            .into_iter()
            .map(|row| row.image.config_digest)
            .collect();
        Ok((containers.len(), running, images.len()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let (containers, running, images) = counts;
    let root = daemon.store().root().display().to_string();
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let id = kiln_image::Digest::of(format!("{hostname}\0{root}").as_bytes());
    let hex = id.hex().to_ascii_uppercase();
    let id = hex
        .as_bytes()
        .chunks(4)
        .take(12)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let (os, os_version) = os_release();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let body = json!({
        "ID": id,
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers - running,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "kiln store"], ["Supports d_type", "true"]],
        "DockerRootDir": root,
        "Plugins": { "Volume": ["local"], "Network": ["none", "host"], "Authorization": [], "Log": ["json-file"] },
        "MemoryLimit": true,
        "SwapLimit": true,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "OomKillDisable": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": now,
        "LoggingDriver": "json-file",
        "CgroupDriver": if cgroup_v2 { "systemd" } else { "cgroupfs" },
        "CgroupVersion": if cgroup_v2 { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os,
        "OSVersion": os_version,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": mem_total(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": { "Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true }
            },
            "Mirrors": [],
        },
        "GenericResources": [],
        "HttpProxy": std::env::var("HTTP_PROXY").unwrap_or_default(),
        "HttpsProxy": std::env::var("HTTPS_PROXY").unwrap_or_default(),
        "NoProxy": std::env::var("NO_PROXY").unwrap_or_default(),
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "ClusterStore": "",
        "ClusterAdvertise": "",
        "Runtimes": { "kiln": { "path": "kiln" } },
        "DefaultRuntime": "kiln",
        "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null
        },
        "LiveRestoreEnabled": false,
        "InitBinary": "",
        "ContainerdCommit": { "ID": "", "Expected": "" },
        "RuncCommit": { "ID": "", "Expected": "" },
        "InitCommit": { "ID": "", "Expected": "" },
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "ProductLicense": "",
        "DefaultAddressPools": [],
        "Warnings": [],
    });
    Ok(stream::json(StatusCode::OK, &body))
}

/// Docker's `AuthConfig` (`POST /auth`, `X-Registry-Auth`, `X-Registry-Config`). Unknown
/// fields are ignored, as everywhere in the API.
#[derive(Debug, Default, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub serveraddress: String,
    #[serde(default)]
    pub identitytoken: String,
}

impl AuthConfig {
    /// The credential it carries, if any: user and password (or the base64 `auth` pair), or an
    /// identity token.
    pub fn credential(&self) -> Option<Credential> {
        if !self.identitytoken.is_empty() {
            return Some(Credential::IdentityToken(self.identitytoken.clone()));
        }
        if !self.username.is_empty() {
            return Some(Credential::Basic {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let pair = String::from_utf8(pair).ok()?;
        let (username, password) = pair.split_once(':')?;
        Some(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// The registry a `serveraddress` names: `https://index.docker.io/v1/` is Docker Hub, a URL is
/// reduced to its host, a bare `host:port` is kept.
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

/// `POST /auth`: checks the credentials against the registry, as dockerd does; nothing is
/// stored (the client keeps them and sends them with each pull and push).
pub async fn auth(daemon: &Daemon, req: Req) -> Result<Response<Body>, ApiError> {
    let config: Option<AuthConfig> = req.json().await?;
    let config = config.unwrap_or_default();
    let credential = config.credential().ok_or_else(|| {
        ApiError::bad_request("no credentials: the request has no username, auth or identitytoken")
    })?;
    let registry = registry_host(&config.serveraddress);
    let client = Arc::clone(&daemon.engine.registry);
    let host = registry.clone();
    let token = crate::images::transfer(daemon, async move || {
        client.login(&host, &credential).await.map_err(|e| {
            let err = ApiError::from(e);
            // dockerd answers a refused login with 401 and the registry's reason.
            ApiError::new(
                err.status,
                format!("login to {host} failed: {}", err.message),
            )
        })
    })
    .await?;
    let identity = match token {
        Some(Credential::IdentityToken(t)) => t,
        _ => String::new(),
    };
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "Status": "Login Succeeded", "IdentityToken": identity }),
    ))
}

/// `GET /events`: streamed until `until` or the client leaves; headers go out at once, since
/// clients wait for them before they do what they want to see events of.
pub async fn events(daemon: &Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let request = EventsRequest::parse(query)?;
    let daemon = Arc::clone(daemon);
    Ok(stream::live_json_stream(move |out| async move {
        let mut stop = daemon.stopping.subscribe();
        request.run(&daemon.events, &out, &mut stop).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_registries() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("https://r.example:443/v2/"), "r.example:443");
        assert_eq!(registry_host(""), "docker.io");
    }

    #[test]
    fn credentials_from_every_form() {
        let basic: AuthConfig =
            serde_json::from_str(r#"{"username":"u","password":"p","email":"x"}"#).unwrap();
        assert!(
            matches!(basic.credential(), Some(Credential::Basic { username, .. }) if username == "u")
        );
        let pair: AuthConfig = serde_json::from_str(r#"{"auth":"dTpw"}"#).unwrap();
        assert!(
            matches!(pair.credential(), Some(Credential::Basic { password, .. }) if password == "p")
        );
        let token: AuthConfig = serde_json::from_str(r#"{"identitytoken":"t"}"#).unwrap();
        assert!(matches!(token.credential(), Some(Credential::IdentityToken(t)) if t == "t"));
        assert!(AuthConfig::default().credential().is_none());
    }
}
