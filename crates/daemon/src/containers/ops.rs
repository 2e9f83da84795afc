//! The container operations that act on a container as an object: `changes`, `rename` and
//! `containers/prune`, each one runtime call rendered in dockerd's shape.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::json;

use super::{blocking, event, find, runtime};
use crate::Daemon;
use crate::error::ApiError;
use crate::query::{Filters, Query};
use crate::stream::{self, Body};

/// `GET /containers/{id}/changes`: `[{"Path", "Kind"}]` (0 modified, 1 added, 2 deleted);
/// dockerd writes `null` for no changes.
pub async fn changes(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let changes = blocking(id, move || rt.changes(&record.id)).await?;
    let body = if changes.is_empty() {
        serde_json::Value::Null
    } else {
        changes
            .iter()
            .map(|c| json!({ "Path": c.path, "Kind": c.kind as u8 }))
            .collect()
    };
    Ok(stream::json(StatusCode::OK, &body))
}

/// `POST /containers/{id}/rename?name=`: 204; 409 for a name in use, 400 for an invalid one.
pub async fn rename(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let new_name = query
        .get("name")
        .map(|n| n.trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a new name (name=)"))?;
    let old = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = old.id.clone();
    let renamed = blocking(id, move || rt.rename(&cid, &new_name)).await?;
    event(
        &daemon,
        "rename",
        &renamed,
        &[("oldName", format!("/{}", old.name))],
    );
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// Filters as the runtime's prune takes them: `until`, `label`, `label!`.
pub(crate) fn prune_filter(filters: &Filters) -> Result<kiln_runtime::PruneFilter, ApiError> {
    filters.only(&["until", "label", "label!"])?;
    let pairs: Vec<(String, String)> = filters
        .0
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect();
    kiln_runtime::PruneFilter::parse(&pairs).map_err(|e| super::runtime_error(e, ""))
}

/// `POST /containers/prune?filters=`: `{"ContainersDeleted", "SpaceReclaimed"}` (dockerd
/// writes `null` when none was deleted).
pub async fn prune(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filter = prune_filter(&query.filters()?)?;
    let rt = runtime(&daemon);
    let pruned = blocking("", move || rt.prune(&filter)).await?;
    for p in &pruned {
        event(&daemon, "destroy", &p.record, &[]);
    }
    let reclaimed: u64 = pruned.iter().map(|p| p.bytes).sum();
    let mut attributes = serde_json::Map::new();
    attributes.insert("reclaimed".into(), json!(reclaimed.to_string()));
    daemon.events.publish(crate::events::Event {
        kind: "container",
        action: "prune",
        id: String::new(),
        attributes,
        time_nano: crate::events::now_nano(),
    });
    let ids: Vec<&str> = pruned.iter().map(|p| p.record.id.as_str()).collect();
    Ok(stream::json(
        StatusCode::OK,
        &json!({
            "ContainersDeleted": if ids.is_empty() { serde_json::Value::Null } else { json!(ids) },
            "SpaceReclaimed": reclaimed,
        }),
    ))
}
