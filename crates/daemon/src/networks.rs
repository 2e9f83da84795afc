//! `networks` (list), `networks/{id}` (inspect, remove), `networks/create`,
//! `networks/{id}/connect`, `networks/{id}/disconnect` and `networks/prune` over the network
//! service that `kiln network` uses (`kiln_network::Networks`); connect and disconnect go
//! through the runtime, which knows whether the container runs. Shapes and statuses are
//! dockerd's: 201 with `{"Id","Warning"}` from create, 409 for a name in use, 403 for removing
//! a predefined network or one with containers, 404 `network X not found`.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use kiln_network::{CreateRequest, NetworkError, NetworkRecord, Networks};
use kiln_runtime::{EndpointSettings, Runtime};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// A network error as dockerd answers it.
fn network_error(err: NetworkError) -> ApiError {
    match err {
        NetworkError::Predefined { .. } | NetworkError::InUse { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, err.to_string())
        }
        err => ApiError::from_kind(err.kind(), err.to_string()),
    }
}

fn networks(daemon: &Daemon) -> Networks {
    Networks::open(daemon.store().root())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(network_error)
}

fn event(daemon: &Daemon, action: &'static str, network: &NetworkRecord, container: Option<&str>) {
    let mut attributes = serde_json::Map::new();
    attributes.insert("name".into(), json!(network.name));
    attributes.insert("type".into(), json!(network.driver.name()));
    if let Some(container) = container {
        attributes.insert("container".into(), json!(container));
    }
    daemon.events.publish(crate::events::Event {
        kind: "network",
        action,
        id: network.id.clone(),
        attributes,
        time_nano: crate::events::now_nano(),
    });
}

/// `GET /networks?filters=`: `name` (substring), `id` (prefix), `driver`, `label`, `type`
/// (`custom`/`builtin`), `dangling`.
pub async fn list(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["name", "id", "driver", "label", "type", "dangling"])?;
    let service = networks(&daemon);
    let all = blocking(move || service.list()).await?;
    let any = |name: &str, test: &dyn Fn(&str) -> bool| {
        let values = filters.get(name);
        values.is_empty() || values.iter().any(|v| test(v))
    };
    let kept: Vec<Value> = all
        .iter()
        .filter(|n| {
            any("name", &|v| n.name.contains(v))
                && any("id", &|v| n.id.starts_with(v))
                && any("driver", &|v| v == n.driver.name())
                && any("type", &|v| match v {
                    "builtin" => n.predefined,
                    "custom" => !n.predefined,
                    _ => false,
                })
                && any("dangling", &|v| {
                    matches!(v, "true" | "1") == (!n.predefined && n.endpoints.is_empty())
                })
                && filters.get("label").iter().all(|l| {
                    let (key, value) = l
                        .split_once('=')
                        .map_or((l.as_str(), None), |(k, v)| (k, Some(v)));
                    n.labels
                        .get(key)
                        .is_some_and(|have| value.is_none_or(|want| have == want))
                })
        })
        .map(|n| n.to_api(false))
        .collect();
    Ok(stream::json(StatusCode::OK, &Value::Array(kept)))
}

/// `GET /networks/{id}`.
pub async fn inspect(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let service = networks(&daemon);
    let id = id.to_owned();
    let network = blocking(move || service.inspect(&id)).await?;
    Ok(stream::json(StatusCode::OK, &network.to_api(true)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: Option<String>,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamBody>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamBody {
    driver: Option<String>,
    config: Option<Vec<IpamConfigBody>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfigBody {
    subnet: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
    gateway: Option<String>,
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

fn create_request(body: CreateBody) -> Result<CreateRequest, ApiError> {
    if body.enable_ipv6 {
        return Err(ApiError::bad_request(
            "IPv6 networks are not supported by kiln",
        ));
    }
    let ipam = body.ipam.unwrap_or_default();
    if let Some(driver) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(ApiError::bad_request(format!(
            "IPAM driver {driver:?} is not supported by kiln (only default)"
        )));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad_request(
            "kiln networks have one IPv4 subnet: give at most one IPAM config",
        ));
    }
    let config = configs.into_iter().next().unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let parse_err = |e: NetworkError| ApiError::bad_request(e.to_string());
    Ok(CreateRequest {
        name: body.name,
        driver: non_empty(body.driver),
        subnet: non_empty(config.subnet)
            .map(|s| s.parse())
            .transpose()
            .map_err(parse_err)?,
        gateway: non_empty(config.gateway)
            .map(|g| {
                g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gateway {g:?}: not an IPv4 address"))
                })
            })
            .transpose()?,
        ip_range: non_empty(config.ip_range)
            .map(|s| s.parse())
            .transpose()
            .map_err(parse_err)?,
        internal: body.internal,
        labels: body.labels.unwrap_or_default(),
        aux_addresses: config
            .auxiliary_addresses
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ip)| match ip.parse() {
                Ok(ip) => Ok((name, ip)),
                Err(_) => Err(ApiError::bad_request(format!(
                    "invalid auxiliary address {name}={ip}: not an IPv4 address"
                ))),
            })
            .collect::<Result<_, _>>()?,
    })
}

/// `POST /networks/create`: 201 `{"Id": ..., "Warning": ""}`.
pub async fn create(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let body: Option<CreateBody> = req.json().await?;
    let request = create_request(body.unwrap_or_default())?;
    let service = networks(&daemon);
    let network = blocking(move || service.create(&request)).await?;
    event(&daemon, "create", &network, None);
    Ok(stream::json(
        StatusCode::CREATED,
        &json!({ "Id": network.id, "Warning": "" }),
    ))
}

/// `DELETE /networks/{id}`: 204.
pub async fn remove(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let service = networks(&daemon);
    let id = id.to_owned();
    let network = blocking(move || service.remove(&id)).await?;
    event(&daemon, "destroy", &network, None);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: `{"NetworksDeleted": [...]}` (filters are not applied: kiln
/// refuses them rather than removing more than asked).
pub async fn prune(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&[])?;
    let service = networks(&daemon);
    let removed = blocking(move || service.prune()).await?;
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "NetworksDeleted": removed }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    endpoint_config: Option<EndpointSettings>,
    /// Disconnect's; kiln removes the endpoint either way.
    #[allow(dead_code, reason = "accepted as dockerd does, nothing to do with it")]
    force: bool,
}

/// `POST /networks/{id}/connect` and `/disconnect`: 200 with an empty body.
pub async fn connect(
    daemon: Arc<Daemon>,
    id: &str,
    req: Req,
    connect: bool,
) -> Result<Response<Body>, ApiError> {
    let body: Option<ConnectBody> = req.json().await?;
    let body = body.unwrap_or_default();
    if body.container.is_empty() {
        return Err(ApiError::bad_request("the request names no Container"));
    }
    let rt = Runtime::new(daemon.store().clone());
    let service = networks(&daemon);
    let network_id = id.to_owned();
    let container = body.container.clone();
    let settings = body.endpoint_config.unwrap_or_default();
    let network = tokio::task::spawn_blocking(move || {
        let network = service.inspect(&network_id)?;
        if connect {
            rt.connect_network(&container, &network.id, &settings)?;
        } else {
            rt.disconnect_network(&container, &network.id)?;
        }
        Ok::<_, kiln_runtime::RuntimeError>(network)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        kiln_runtime::RuntimeError::Network(e) => network_error(e),
        e => crate::containers::runtime_error(e, &body.container),
    })?;
    let action = if connect { "connect" } else { "disconnect" };
    event(&daemon, action, &network, Some(&body.container));
    Ok(stream::empty(StatusCode::OK))
}
