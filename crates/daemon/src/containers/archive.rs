//! `docker cp` and `docker export` over the runtime's file operations: `HEAD`/`GET`/`PUT
//! /containers/{id}/archive` and `GET /containers/{id}/export`.
//!
//! A `GET` first stats the path, so a missing one is a plain 404 and the stat header
//! (`X-Docker-Container-Path-Stat`, base64 JSON) goes out with the `200`; the tar then
//! streams from a blocking thread. A failure after the first byte can only end the transfer.

use std::sync::Arc;

use base64::Engine as _;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use kiln_runtime::{CopyInRequest, PathStat};
use serde_json::json;

use super::{blocking, find, runtime};
use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// The stat header's value: base64 of dockerd's JSON.
pub(crate) fn stat_header(stat: &PathStat) -> String {
    let mtime = chrono::DateTime::from_timestamp(stat.mtime_sec, stat.mtime_nsec)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let value = json!({
        "name": stat.name,
        "size": stat.size,
        "mode": stat.mode,
        "mtime": mtime,
        "linkTarget": stat.link_target,
    });
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

fn path_of(query: &Query) -> Result<String, ApiError> {
    query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("path is required (path=)"))
}

fn with_stat(mut response: Response<Body>, stat: &PathStat) -> Result<Response<Body>, ApiError> {
    let value =
        HeaderValue::from_str(&stat_header(stat)).map_err(|e| ApiError::internal(e.to_string()))?;
    response
        .headers_mut()
        .insert("X-Docker-Container-Path-Stat", value);
    Ok(response)
}

/// `HEAD /containers/{id}/archive?path=`: the stat header alone; 404 for a missing path.
pub async fn stat(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let path = path_of(query)?;
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let stat = blocking(id, move || rt.stat_path(&record.id, &path)).await?;
    with_stat(stream::empty(StatusCode::OK), &stat)
}

/// `GET /containers/{id}/archive?path=`: a tar of the path, entries under its base name.
pub async fn get(daemon: Arc<Daemon>, id: &str, query: &Query) -> Result<Response<Body>, ApiError> {
    let path = path_of(query)?;
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let (cid, p) = (record.id.clone(), path.clone());
    let stat = blocking(id, move || rt.stat_path(&cid, &p)).await?;
    let rt = runtime(&daemon);
    let response = tar_stream(move |out| rt.copy_out(&record.id, &path, None, out));
    with_stat(response, &stat)
}

/// A tar written by `write` on a blocking thread, streamed as it is written; an error after
/// the headers breaks the transfer, so the client never takes a cut tar for a whole one.
fn tar_stream<F>(write: F) -> Response<Body>
where
    F: FnOnce(stream::ChannelWriter) -> Result<stream::ChannelWriter, kiln_runtime::RuntimeError>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let on_error = tx.clone();
    tokio::task::spawn_blocking(move || {
        let result = write(stream::ChannelWriter::new(tx)).map_err(|e| e.to_string());
        match result {
            Ok(mut out) => {
                if let Err(e) = std::io::Write::flush(&mut out) {
                    out.fail(e.to_string());
                }
            }
            Err(e) => {
                let _ = on_error.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    });
    stream::byte_stream("application/x-tar", rx)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: extracts the tar
/// body into the existing directory `path`; 404 for a missing one, 400 for a non-directory or
/// an entry that would leave it.
pub async fn put(daemon: Arc<Daemon>, id: &str, req: Req) -> Result<Response<Body>, ApiError> {
    let path = path_of(&req.query)?;
    let request = CopyInRequest {
        no_overwrite_dir_non_dir: req.query.bool("noOverwriteDirNonDir"),
        copy_uid_gid: req.query.bool("copyUIDGID"),
    };
    let record = find(&daemon, id).await?;
    let reader = crate::images::body_reader(req.body);
    let rt = runtime(&daemon);
    blocking(id, move || {
        rt.copy_in(
            &record.id,
            &path,
            std::io::BufReader::with_capacity(256 * 1024, reader),
            &request,
        )
    })
    .await?;
    Ok(stream::empty(StatusCode::OK))
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar.
pub async fn export(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    super::event(&daemon, "export", &record, &[]);
    Ok(tar_stream(move |out| rt.export(&record.id, out)))
}
