//! `volumes/create`, `volumes` (list), `volumes/{name}` (inspect, remove) over the store's
//! volumes, which `kiln volume` and `-v name:/path` share. Only the `local` driver exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use kiln_store::{ContainerError, VolumeRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// A store error as the client sees it, with dockerd's texts for the cases clients match.
fn volume_error(err: ContainerError) -> ApiError {
    match err {
        ContainerError::NoSuchVolume(name) => {
            ApiError::not_found(format!("get {name}: no such volume"))
        }
        ContainerError::VolumeInUse { name, containers } => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "remove {name}: volume is in use - [{}]",
                containers.join(", ")
            ),
        ),
        err => ApiError::from_kind(err.kind(), err.to_string()),
    }
}

/// dockerd's `Volume` object.
pub(crate) fn shape(daemon: &Daemon, v: &VolumeRecord) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": daemon.store().volume_data_dir(&v.name),
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(volume_error)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`: 201 with the volume (an existing one of that name is returned as
/// it is, as dockerd does).
pub async fn create(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let body: Option<CreateBody> = req.json().await?;
    let body = body.unwrap_or_default();
    if let Some(driver) = body
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::not_found(format!(
            "plugin \"{driver}\" not found: kiln has only the local volume driver"
        )));
    }
    if body.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "volume driver options are not supported by kiln",
        ));
    }
    let store = daemon.store().clone();
    let name = body.name.filter(|n| !n.is_empty());
    let labels = body.labels.unwrap_or_default();
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (record, made) =
        blocking(move || store.create_volume(name.as_deref(), &created_at, labels)).await?;
    if made {
        volume_event(&daemon, "create", &record.name);
    }
    Ok(stream::json(StatusCode::CREATED, &shape(&daemon, &record)))
}

pub(crate) fn volume_event(daemon: &Daemon, action: &'static str, name: &str) {
    let mut attributes = serde_json::Map::new();
    attributes.insert("driver".into(), json!("local"));
    daemon.events.publish(crate::events::Event {
        kind: "volume",
        action,
        id: name.to_owned(),
        attributes,
        time_nano: crate::events::now_nano(),
    });
}

/// `GET /volumes?filters=`: `name`, `label`, `dangling`, `driver`.
pub async fn list(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["name", "label", "dangling", "driver"])?;
    let store = daemon.store().clone();
    let volumes = blocking(move || {
        let mut out = Vec::new();
        for v in store.list_volumes()? {
            let used = !store.volume_users(&v.name)?.is_empty();
            out.push((v, used));
        }
        Ok(out)
    })
    .await?;
    let any = |name: &str, test: &dyn Fn(&str) -> bool| {
        let values = filters.get(name);
        values.is_empty() || values.iter().any(|v| test(v))
    };
    let kept: Vec<Value> = volumes
        .iter()
        .filter(|(v, used)| {
            any("name", &|n| v.name.contains(n))
                && any("driver", &|d| d == "local")
                && any("dangling", &|d| {
                    let dangling = matches!(d, "true" | "1");
                    dangling != *used
                })
                && filters.get("label").iter().all(|l| {
                    let (key, value) = l
                        .split_once('=')
                        .map_or((l.as_str(), None), |(k, v)| (k, Some(v)));
                    v.labels
                        .get(key)
                        .is_some_and(|have| value.is_none_or(|value| have == value))
                })
        })
        .map(|(v, _)| shape(&daemon, v))
        .collect();
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "Volumes": kept, "Warnings": null }),
    ))
}

/// `GET /volumes/{name}`.
pub async fn inspect(daemon: Arc<Daemon>, name: &str) -> Result<Response<Body>, ApiError> {
    let store = daemon.store().clone();
    let n = name.to_owned();
    let record = blocking(move || store.volume(&n)).await?;
    Ok(stream::json(StatusCode::OK, &shape(&daemon, &record)))
}

/// `DELETE /volumes/{name}?force=`: 204; 409 while a container uses it; 404 unknown (or no
/// error with `force`).
pub async fn remove(
    daemon: Arc<Daemon>,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let store = daemon.store().clone();
    let n = name.to_owned();
    match blocking(move || store.remove_volume(&n)).await {
        Ok(()) => volume_event(&daemon, "destroy", name),
        Err(e) if e.status == StatusCode::NOT_FOUND && query.bool("force") => {}
        Err(e) => return Err(e),
    }
    Ok(stream::empty(StatusCode::NO_CONTENT))
}
