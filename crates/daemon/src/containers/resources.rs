//! `pause`, `unpause`, `top`, `stats` and `update`: a running container's processes and
//! resources, each a runtime call rendered in dockerd's shape (`stats` as cgroup v1 dockerd
//! writes it, which `docker stats` and docker-py read).

use std::sync::Arc;
use std::time::Duration;

use hyper::{Response, StatusCode};
use kiln_runtime::{StatsSample, UpdateRequest};
use serde_json::{Value, json};

use super::{blocking, event, find, runtime};
use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// `POST /containers/{id}/pause`: 204; 409 when not running or already paused.
pub async fn pause(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    blocking(id, move || rt.pause(&cid)).await?;
    event(&daemon, "pause", &record, &[]);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/unpause`: 204; 409 when not paused.
pub async fn unpause(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    blocking(id, move || rt.unpause(&cid)).await?;
    event(&daemon, "unpause", &record, &[]);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `GET /containers/{id}/top?ps_args=`: `{"Titles", "Processes"}`; 409 when not running.
pub async fn top(daemon: Arc<Daemon>, id: &str, query: &Query) -> Result<Response<Body>, ApiError> {
    let args = query.get("ps_args").unwrap_or("").to_owned();
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let top = blocking(id, move || rt.top(&record.id, &args)).await?;
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "Titles": top.titles, "Processes": top.processes }),
    ))
}

fn time_text(t: Option<kiln_store::Timestamp>) -> String {
    t.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    )
}

fn cpu_json(s: Option<&StatsSample>) -> Value {
    let d = StatsSample::default();
    let s = s.unwrap_or(&d);
    let mut cpu = json!({
        "cpu_usage": {
            "total_usage": s.cpu_total_ns,
            "usage_in_kernelmode": s.cpu_system_ns,
            "usage_in_usermode": s.cpu_user_ns,
        },
        "throttling_data": { "periods": 0, "throttled_periods": 0, "throttled_time": 0 },
    });
    if s.read.is_some() {
        cpu["system_cpu_usage"] = json!(s.system_cpu_ns);
        cpu["online_cpus"] = json!(s.online_cpus);
    }
    cpu
}

/// One stats object in dockerd's shape; `pre` is the previous sample (`precpu_stats`).
pub(crate) fn stats_json(
    name: &str,
    id: &str,
    s: &StatsSample,
    pre: Option<&StatsSample>,
) -> Value {
    let mut memory = json!({
        "usage": s.memory_usage,
        "stats": s.memory_stats,
        "limit": s.memory_limit,
    });
    if let Some(max) = s.memory_max_usage {
        memory["max_usage"] = json!(max);
    }
    let mut pids = json!({ "current": s.pids });
    if let Some(limit) = s.pids_limit {
        pids["limit"] = json!(limit);
    }
    let io = |op: &str, value: u64| json!({ "major": 0, "minor": 0, "op": op, "value": value });
    let mut v = json!({
        "read": time_text(s.read),
        "preread": time_text(pre.and_then(|p| p.read)),
        "pids_stats": pids,
        "blkio_stats": {
            "io_service_bytes_recursive": [io("read", s.io_read_bytes), io("write", s.io_write_bytes)],
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(Some(s)),
        "precpu_stats": cpu_json(pre),
        "memory_stats": memory,
        "name": format!("/{name}"),
        "id": id,
    });
    // dockerd writes `networks` only for a container with interfaces besides `lo`.
    if !s.networks.is_empty() {
        let nets: serde_json::Map<String, Value> = s
            .networks
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    json!({
                        "rx_bytes": c[0], "rx_packets": c[1], "rx_errors": c[2], "rx_dropped": c[3],
                        "tx_bytes": c[4], "tx_packets": c[5], "tx_errors": c[6], "tx_dropped": c[7],
                    }),
                )
            })
            .collect();
        v["networks"] = Value::Object(nets);
    }
    v
}

/// How often a streamed `stats` samples (dockerd's collector interval).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// `GET /containers/{id}/stats?stream=&one-shot=`: one object (`stream=false`; with
/// `precpu_stats` from a sample a second earlier unless `one-shot`), or one per second until
/// the container stops or the client goes away. 409 when not running.
pub async fn stats(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let streaming = query.get("stream").is_none_or(|_| query.bool("stream"));
    let one_shot = query.bool("one-shot");
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    let first = blocking(id, move || rt.stats(&cid)).await?;
    let (name, cid) = (record.name.clone(), record.id.clone());
    if !streaming {
        if one_shot {
            return Ok(stream::json(
                StatusCode::OK,
                &stats_json(&name, &cid, &first, None),
            ));
        }
        tokio::time::sleep(STATS_INTERVAL).await;
        let rt = runtime(&daemon);
        let c = cid.clone();
        let second = blocking(id, move || rt.stats(&c)).await?;
        return Ok(stream::json(
            StatusCode::OK,
            &stats_json(&name, &cid, &second, Some(&first)),
        ));
    }
    let query_id = id.to_owned();
    Ok(stream::live_json_stream(move |out| async move {
        out.send(&stats_json(&name, &cid, &first, None));
        let mut pre = first;
        loop {
            tokio::time::sleep(STATS_INTERVAL).await;
            let rt = runtime(&daemon);
            let c = cid.clone();
            // Stopped (or removed): the stream ends, as dockerd's does.
            let Ok(next) = blocking(&query_id, move || rt.stats(&c)).await else {
                break;
            };
            out.send(&stats_json(&name, &cid, &next, Some(&pre)));
            pre = next;
        }
    }))
}

/// The fields of an update body kiln reads; the resources it cannot set are refused when
/// asked for, never ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    memory: i64,
    memory_swap: i64,
    nano_cpus: i64,
    cpu_quota: i64,
    cpu_period: i64,
    pids_limit: Option<i64>,
    cpu_shares: i64,
    cpuset_cpus: String,
    cpuset_mems: String,
    blkio_weight: i64,
    memory_reservation: i64,
    kernel_memory: i64,
    restart_policy: Option<kiln_runtime::RestartPolicy>,
}

/// `POST /containers/{id}/update`: `{"Warnings"}`; 400 for a limit out of range or one kiln
/// cannot apply.
pub async fn update(daemon: Arc<Daemon>, id: &str, req: Req) -> Result<Response<Body>, ApiError> {
    let body: Value = req.json().await?;
    let body: UpdateBody = serde_json::from_value(super::without_nulls(body))
        .map_err(|e| ApiError::bad_request(format!("invalid update: {e}")))?;
    for (field, set) in [
        ("CpuShares", body.cpu_shares != 0),
        ("CpusetCpus", !body.cpuset_cpus.is_empty()),
        ("CpusetMems", !body.cpuset_mems.is_empty()),
        ("BlkioWeight", body.blkio_weight != 0),
        ("MemoryReservation", body.memory_reservation != 0),
        ("KernelMemory", body.kernel_memory != 0),
        ("MemorySwap", body.memory_swap > 0),
    ] {
        if set {
            return Err(ApiError::bad_request(format!(
                "{field} cannot be updated by kiln (it sets Memory, NanoCpus or CpuQuota/CpuPeriod, and PidsLimit)"
            )));
        }
    }
    if body.cpu_quota < 0 || body.cpu_period < 0 || (body.cpu_quota > 0 && body.nano_cpus > 0) {
        return Err(ApiError::bad_request(
            "invalid CPU limit: CpuQuota and CpuPeriod must be positive, and not given with NanoCpus",
        ));
    }
    let nano_cpus = match (body.nano_cpus, body.cpu_quota) {
        (0, 0) => None,
        (0, quota) => {
            let period = if body.cpu_period > 0 {
                body.cpu_period
            } else {
                100_000
            };
            Some(quota.saturating_mul(1_000_000_000) / period)
        }
        (n, _) => Some(n),
    };
    // Zero means "unchanged", as dockerd reads an update.
    let request = UpdateRequest {
        memory: Some(body.memory).filter(|m| *m != 0),
        nano_cpus,
        pids_limit: body.pids_limit.filter(|p| *p != 0),
        restart_policy: body.restart_policy,
    };
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    let warnings = blocking(id, move || rt.update(&cid, &request)).await?;
    event(&daemon, "update", &record, &[]);
    Ok(stream::json(
        StatusCode::OK,
        &json!({ "Warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) } }),
    ))
}
