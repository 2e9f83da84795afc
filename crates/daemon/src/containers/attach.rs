//! `attach` and `logs`: a container's streams to a client.
//!
//! Attach is hijacked as dockerd does it: a client that asks to upgrade (`Connection: Upgrade`,
//! `Upgrade: tcp`) gets `101 UPGRADED` and the connection becomes the container's stdin one
//! way and its output the other. The supervisor's attach socket already speaks Docker's
//! framing (8-byte headers without a tty, raw bytes with one), so the daemon only copies bytes
//! both ways. An old client that does not ask to upgrade gets a plain `200` whose body is the
//! output (it cannot send stdin over a response it is reading). With a tty, the client's
//! `detachKeys` (default ctrl-p ctrl-q) end its attach and leave the container running: the
//! supervisor watches for them and closes its side, and the daemon then closes the client's
//! connection whole. An attach to a container that has not started yet waits for its start
//! (`docker run` attaches, then starts), so it sees all of the output.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use kiln_runtime::{AttachRequest, AttachStream, DetachKeys, LogFilter, LogOptions, RuntimeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{PendingAttach, blocking, event, find, runtime};
use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// How long a hijacked attach waits after the 101 head before it replays the log.
const REPLAY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Docker's content type of attach and logs bodies.
const RAW_STREAM: &str = "application/vnd.docker.raw-stream";

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=`.
pub async fn attach(
    daemon: Arc<Daemon>,
    id: &str,
    mut req: Req,
) -> Result<Response<Body>, ApiError> {
    let q = &req.query;
    let detach_keys = detach_keys(q.get("detachKeys"))?;
    let request = AttachRequest {
        stdin: q.bool("stdin"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        resize: None,
        // The supervisor watches a terminal's input for them (none without a tty, as dockerd).
        detach_keys: Some(detach_keys),
    };
    if !q.bool("stream") && !q.bool("logs") {
        return Err(ApiError::bad_request("attach needs stream or logs"));
    }
    let record = find(&daemon, id).await?;
    let live = q.bool("stream");
    // `logs`: what the container wrote so far comes first.
    let replay = if q.bool("logs") {
        let rt = runtime(&daemon);
        let (cid, tty) = (record.id.clone(), record.config.tty);
        let (stdout, stderr) = (request.stdout, request.stderr);
        blocking(id, move || {
            let mut out = Vec::new();
            let result = rt.logs(&cid, &LogOptions::default(), |entry| {
                let is_err = entry.stream == "stderr";
                if (is_err && stderr) || (!is_err && stdout) {
                    out.extend_from_slice(&frame(tty, is_err, entry.log.as_bytes()));
                }
                Ok(())
            });
            match result {
                Ok(()) | Err(RuntimeError::NoLog(_)) => Ok(out),
                Err(e) => Err(e),
            }
        })
        .await?
    } else {
        Vec::new()
    };
    let (tx, rx) = oneshot::channel();
    if !live {
        // Nothing live: the stream ends after the replay.
        drop(tx);
    } else if record.state.is_running() {
        let rt = runtime(&daemon);
        let (cid, request) = (record.id.clone(), request.clone());
        let _ = tx.send(blocking(id, move || rt.attach(&cid, request)).await);
    } else {
        daemon.attaches.add(
            &record.id,
            PendingAttach {
                request: request.clone(),
                tx,
            },
        );
    }
    event(&daemon, "attach", &record, &[]);
    let upgrade = req
        .header("Upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("tcp"));
    let on_upgrade = req.extensions.remove::<hyper::upgrade::OnUpgrade>();
    match (upgrade, on_upgrade) {
        (true, Some(on_upgrade)) => {
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut client = TokioIo::new(upgraded);
                if !replay.is_empty() {
                    // Bytes that reach a client together with the 101 head are read into its
                    // HTTP parser's buffer, which docker-py then drops (it reads the raw socket
                    // from under it): the replay, ready at once, waits for the client to have
                    // taken the head, as dockerd's own reading of the log makes it wait.
                    tokio::time::sleep(REPLAY_DELAY).await;
                    if client.write_all(&replay).await.is_err() {
                        return;
                    }
                }
                match rx.await {
                    Ok(Ok(stream)) => pump(client, stream, request.stdin).await,
                    _ => {
                        let _ = client.shutdown().await;
                    }
                }
            });
            let mut response = stream::empty(StatusCode::SWITCHING_PROTOCOLS);
            let h = response.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(RAW_STREAM));
            Ok(response)
        }
        _ => {
            // No upgrade: the output as the body of a 200.
            crate::router::drain(req.body).await;
            let (out_tx, out_rx) = mpsc::channel(16);
            tokio::spawn(async move {
                if !replay.is_empty() && out_tx.send(Ok(Bytes::from(replay))).await.is_err() {
                    return;
                }
                if let Ok(Ok(stream)) = rx.await {
                    let Ok(socket) = socket_of(&stream) else {
                        return;
                    };
                    stream.close_input();
                    let mut socket = socket;
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out_tx
                                    .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            Ok(stream::byte_stream(RAW_STREAM, out_rx))
        }
    }
}

/// The `detachKeys` of an attach or exec (Docker's notation; absent or empty: ctrl-p,ctrl-q).
pub(crate) fn detach_keys(value: Option<&str>) -> Result<DetachKeys, ApiError> {
    DetachKeys::parse(value.unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Output as the client reads it: raw with a tty, else in a frame of its stream.
fn frame(tty: bool, is_err: bool, text: &[u8]) -> Vec<u8> {
    if tty {
        return text.to_vec();
    }
    let kind = if is_err {
        kiln_runtime::StreamType::Stderr
    } else {
        kiln_runtime::StreamType::Stdout
    };
    let mut chunk = Vec::with_capacity(text.len() + 8);
    let _ = kiln_runtime::attach::write_frame(&mut chunk, kind, text);
    chunk
}

/// The attach socket as a tokio stream.
fn socket_of(stream: &AttachStream) -> std::io::Result<tokio::net::UnixStream> {
    let socket = stream.input().map_err(std::io::Error::other)?;
    socket.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(socket)
}

/// Copies the client's bytes to the container's stdin and its output to the client, until
/// the output ends; then the client's side is shut down (it sees the end of the stream).
async fn pump<C>(client: C, stream: AttachStream, stdin: bool)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(socket) = socket_of(&stream) else {
        return;
    };
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_container, mut to_container) = socket.into_split();
    let input = tokio::spawn(async move {
        if stdin {
            let _ = tokio::io::copy(&mut from_client, &mut to_container).await;
        }
        // The client's input ended: so does the container's (for this client).
        let _ = to_container.shutdown().await;
        // Keep reading nothing: the halves live until the output ends.
        std::future::pending::<()>().await;
    });
    let _ = tokio::io::copy(&mut from_container, &mut to_client).await;
    let _ = to_client.shutdown().await;
    input.abort();
    drop(stream);
}

/// Parses dockerd's `since`/`until`: Unix seconds with an optional fraction (what the CLI
/// sends), or RFC 3339.
fn log_time(name: &str, value: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    if value.is_empty() || value == "0" {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    let (secs, frac) = value.split_once('.').unwrap_or((value, "0"));
    let bad = || ApiError::bad_request(format!("invalid {name} {value:?}: expected Unix seconds"));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = format!("{frac:0<9}")
        .get(..9)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok(chrono::DateTime::from_timestamp(secs, nanos))
}

/// `GET /containers/{id}/logs?follow=&stdout=&stderr=&since=&until=&timestamps=&tail=`:
/// Docker's frames without a tty, the raw text with one. The headers go out at once (a
/// follower may wait long for the first line).
pub async fn logs(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (stdout, stderr) = (query.bool("stdout"), query.bool("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request("You must choose at least one stream"));
    }
    let tail = match query.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        None => None,
        Some(t) => match t.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid tail {t:?}: expected a number or all"
                )));
            }
        },
    };
    let options = LogOptions {
        filter: LogFilter {
            since: log_time("since", query.get("since").unwrap_or(""))?,
            until: log_time("until", query.get("until").unwrap_or(""))?,
            tail,
        },
        follow: query.bool("follow"),
    };
    let timestamps = query.bool("timestamps");
    let record = find(&daemon, id).await?;
    let tty = record.config.tty;
    let (tx, rx) = mpsc::channel(16);
    let rt = runtime(&daemon);
    let query_id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let result = rt.logs(&record.id, &options, |entry| {
            let is_err = entry.stream == "stderr";
            if (is_err && !stderr) || (!is_err && !stdout) {
                return Ok(());
            }
            let mut text = Vec::new();
            if timestamps {
                text.extend_from_slice(entry.time.as_bytes());
                text.push(b' ');
            }
            text.extend_from_slice(entry.log.as_bytes());
            let chunk = frame(tty, is_err, &text);
            tx.blocking_send(Ok(Bytes::from(chunk)))
                .map_err(|_| RuntimeError::Io {
                    path: "client".into(),
                    source: std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"),
                })
        });
        // A container that never started has no log: an empty one, as dockerd.
        if let Err(e) = result
            && !matches!(e, RuntimeError::NoLog(_) | RuntimeError::Io { .. })
        {
            let _ = tx.blocking_send(Err(std::io::Error::other(format!(
                "logs of {query_id}: {e}"
            ))));
        }
    });
    Ok(stream::byte_stream(RAW_STREAM, rx))
}
