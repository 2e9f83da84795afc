//! The prunes that are not about containers (`volumes/prune`, `images/prune`, `build/prune`)
//! and `/system/df`, over the store's and the image service's calls, in dockerd's shapes.
//!
//! Every prune of images or build cache takes the store lock exclusively, as `kiln prune`
//! does, so it waits for builds, pulls and copies in progress rather than removing what they
//! use.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use kiln_store::{PruneOptions, PruneScope, PrunedKind};
use serde_json::{Value, json};

use crate::Daemon;
use crate::error::ApiError;
use crate::query::{Filters, Query};
use crate::stream::{self, Body};

async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

fn pairs(filters: &Filters) -> Vec<(String, String)> {
    filters
        .0
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect()
}

fn or_null<T: serde::Serialize>(items: &[T]) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}

fn prune_event(daemon: &Daemon, kind: &'static str, reclaimed: u64) {
    let mut attributes = serde_json::Map::new();
    attributes.insert("reclaimed".into(), json!(reclaimed.to_string()));
    daemon.events.publish(crate::events::Event {
        kind,
        action: "prune",
        id: String::new(),
        attributes,
        time_nano: crate::events::now_nano(),
    });
}

/// `POST /volumes/prune?filters=`: every volume no container uses (API 1.41 takes named
/// ones too), filters `label` and `label!`; `{"VolumesDeleted", "SpaceReclaimed"}`.
pub async fn volumes(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["label", "label!"])?;
    let labels: Vec<kiln_runtime::LabelFilter> = filters
        .get("label")
        .iter()
        .map(|l| kiln_runtime::LabelFilter::parse(l, false))
        .chain(
            filters
                .get("label!")
                .iter()
                .map(|l| kiln_runtime::LabelFilter::parse(l, true)),
        )
        .collect();
    let store = daemon.store().clone();
    let removed = blocking(move || {
        store
            .prune_volumes_where(|v| labels.iter().all(|l| l.passes(&v.labels)))
            .map_err(|e| ApiError::from_kind(e.kind(), e.to_string()))
    })
    .await?;
    for (name, _) in &removed {
        crate::volumes::volume_event(&daemon, "destroy", name);
    }
    let reclaimed = removed.iter().map(|(_, b)| b).sum::<u64>();
    prune_event(&daemon, "volume", reclaimed);
    let names: Vec<&str> = removed.iter().map(|(n, _)| n.as_str()).collect();
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "VolumesDeleted": or_null(&names), "SpaceReclaimed": reclaimed }),
    ))
}

/// `POST /images/prune?filters=`: unnamed images no container uses, or with
/// `dangling=false` every unused image; `until`, `label`, `label!`.
/// `{"ImagesDeleted": [{"Untagged"}|{"Deleted"}], "SpaceReclaimed"}`.
pub async fn images(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["dangling", "until", "label", "label!"])?;
    let filter =
        kiln_images::PruneFilter::parse(&pairs(&filters), |v| kiln_runtime::parse_until(v).ok())?;
    let store = daemon.store().clone();
    let pruned = blocking(move || {
        let held = store.lock_exclusive()?;
        Ok(kiln_images::prune_images(&store, &held, &filter)?)
    })
    .await?;
    let mut deleted = Vec::new();
    for name in &pruned.untagged {
        daemon
            .events
            .image("untag", &name.to_string(), Some(&name.familiar()));
        deleted.push(json!({ "Untagged": name.familiar() }));
    }
    for id in &pruned.deleted {
        daemon.events.image("delete", &id.to_string(), None);
        deleted.push(json!({ "Deleted": id.to_string() }));
    }
    prune_event(&daemon, "image", pruned.reclaimed);
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": or_null(&deleted), "SpaceReclaimed": pruned.reclaimed }),
    ))
}

/// `POST /build/prune?all=&keep-storage=&filters=`: the build cache (cache records, what
/// only they hold, leftovers; with `all` cache mounts too), never an image; filters `until`
/// and `unused-for` (a duration). `{"CachesDeleted", "SpaceReclaimed"}`.
pub async fn build(daemon: Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["until", "unused-for"])?;
    let mut unused_for = None;
    for value in filters.get("until").iter().chain(filters.get("unused-for")) {
        let since =
            kiln_runtime::parse_until(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let age = (chrono::Utc::now() - since).to_std().unwrap_or_default();
        unused_for = Some(age);
    }
    let keep_storage = match query.int("keep-storage")? {
        None | Some(0) => None,
        Some(n) if n < 0 => return Err(ApiError::bad_request("keep-storage must not be negative")),
        Some(n) => Some(n as u64),
    };
    let options = PruneOptions {
        all: query.bool("all"),
        keep_storage,
        unused_for,
        scope: PruneScope::BuildCache,
    };
    let store = daemon.store().clone();
    let report = blocking(move || {
        let held = store.lock_exclusive()?;
        Ok(store.prune(&held, &options)?)
    })
    .await?;
    let ids: Vec<&str> = report
        .removed
        .iter()
        .filter(|p| matches!(p.kind, PrunedKind::CacheRecord | PrunedKind::CacheMount))
        .map(|p| p.id.as_str())
        .collect();
    let reclaimed = report.removed.iter().map(|p| p.bytes).sum::<u64>();
    prune_event(&daemon, "builder", reclaimed);
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "CachesDeleted": or_null(&ids), "SpaceReclaimed": reclaimed }),
    ))
}

/// `GET /system/df`: `LayersSize`, `Images` (with `Containers` counts and `SharedSize`),
/// `Containers` (with `SizeRw`), `Volumes` (with `UsageData`), `BuildCache` (the cache
/// records), as dockerd's.
pub async fn df(daemon: Arc<Daemon>) -> Result<Response<Body>, ApiError> {
    let d = Arc::clone(&daemon);
    let value = blocking(move || {
        let store = d.store();
        let usage = store.disk_usage()?;
        let containers = store.list_containers()?;
        let rows = kiln_images::list_images(
            store,
            &kiln_images::ListFilter::default().with_unnamed(true),
        )?;
        let grouped = crate::images::shapes::group_by_id(rows);
        let images: Vec<Value> = grouped
            .iter()
            .map(|(img, names)| {
                let mut v = crate::images::shapes::summary(img, names);
                let shared = usage
                    .image_list
                    .iter()
                    .find(|u| u.manifest == img.manifest_digest)
                    .map_or(0, |u| u.shared_bytes);
                v["SharedSize"] = json!(shared);
                v["Containers"] = json!(
                    containers
                        .iter()
                        .filter(|c| c.image_id == img.config_digest.to_string())
                        .count()
                );
                v
            })
            .collect();
        let container_rows: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut v = crate::containers::shapes::summary(c, store);
                let upper = store.container_dir(&c.id).join("upper");
                let size_rw = kiln_runtime::layer_bytes(&upper);
                v["SizeRw"] = json!(size_rw);
                let base = grouped
                    .iter()
                    .find(|(img, _)| img.config_digest.to_string() == c.image_id)
                    .map_or(0, |(img, _)| img.size());
                v["SizeRootFs"] = json!(size_rw + base);
                v
            })
            .collect();
        let mut volumes = Vec::new();
        for vol in store.list_volumes()? {
            let mut v = crate::volumes::shape(&d, &vol);
            let users = store.volume_users(&vol.name)?.len();
            v["UsageData"] = json!({ "Size": store.volume_bytes(&vol.name), "RefCount": users });
            volumes.push(v);
        }
        let cache: Vec<Value> = usage
            .record_list
            .iter()
            .map(|r| {
                let used: chrono::DateTime<chrono::Utc> = r.last_used.into();
                json!({
                    "ID": r.key.hex(),
                    "Parent": "",
                    "Type": "regular",
                    "Description": r.layer.as_ref().map_or_else(String::new, |l| format!("layer {l}")),
                    "InUse": false,
                    "Shared": r.in_image,
                    "Size": r.bytes,
                    "CreatedAt": used.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "LastUsedAt": used.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "UsageCount": 1,
                })
            })
            .collect();
        Ok(json!({
            "LayersSize": usage.images.bytes,
            "Images": images,
            "Containers": container_rows,
            "Volumes": volumes,
            "BuildCache": cache,
        }))
    })
    .await?;
    Ok(stream::json(StatusCode::OK, &value))
}
