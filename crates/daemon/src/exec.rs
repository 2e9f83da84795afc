//! Exec instances over `kiln_runtime`'s: create, start (hijacked, plain, or detached),
//! resize and inspect.
//!
//! The runtime starts an exec's process with whatever stdio it is given; the daemon gives it
//! pipes, or a pty when the exec was created with `Tty`, and copies them to and from the
//! client's hijacked connection. The output is raw or in Docker's 8-byte frames as the
//! *start* request's `Tty` says, which is dockerd's rule (docker-py starts a `-t` exec
//! without it and reads frames; the CLI sends the same value twice). What the runtime's record does
//! not keep — which streams the client asked for, the pty to resize — the daemon keeps in
//! memory by exec ID (an exec created by an earlier daemon starts with stdout and stderr, no
//! stdin).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use kiln_runtime::{DetachKeys, ExecConfig, ExecRecord, Runtime, RuntimeError, StreamType};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Daemon;
use crate::containers::{blocking, event, find, runtime_error, window};
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

/// What the daemon keeps of an exec between its requests.
#[derive(Debug, Default)]
struct ExecMeta {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    /// The keys that end a `-t` exec's attach (its process runs on).
    detach_keys: DetachKeys,
    /// The pty's master while a `-t` exec runs (for resize).
    pty: Option<File>,
}

/// The daemon's exec bookkeeping, by exec ID.
#[derive(Debug, Default)]
pub struct Execs(Mutex<HashMap<String, ExecMeta>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecMeta>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body of `POST /containers/{id}/exec`: the runtime's fields plus the streams to attach.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecCreate {
    #[serde(flatten)]
    config: ExecConfig,
    attach_stdout: bool,
    attach_stderr: bool,
    /// docker-py writes it `detachKeys` (dockerd's JSON decoding ignores case).
    #[serde(alias = "detachKeys")]
    detach_keys: Option<String>,
}

/// `POST /containers/{id}/exec`: 201 `{"Id"}`; 404 for no such container, 409 when it is not
/// running.
pub async fn create(daemon: Arc<Daemon>, id: &str, req: Req) -> Result<Response<Body>, ApiError> {
    let body: serde_json::Value = req.json().await?;
    let mut request: ExecCreate = serde_json::from_value(crate::containers::without_nulls(body))
        .map_err(|e| ApiError::bad_request(format!("invalid exec config: {e}")))?;
    // The CLI sends `""` for "the container's": as absent.
    request.config.working_dir = request.config.working_dir.filter(|w| !w.is_empty());
    request.config.user = request.config.user.filter(|u| !u.is_empty());
    let detach_keys = crate::containers::detach_keys(request.detach_keys.as_deref())?;
    let record = find(&daemon, id).await?;
    let rt = Runtime::new(daemon.store().clone());
    let (cid, config) = (record.id.clone(), request.config.clone());
    let exec = blocking(id, move || rt.exec_create(&cid, &config)).await?;
    daemon.execs.lock().insert(
        exec.id.clone(),
        ExecMeta {
            stdin: request.config.attach_stdin,
            stdout: request.attach_stdout,
            stderr: request.attach_stderr,
            detach_keys,
            pty: None,
        },
    );
    let command = exec.process.args.join(" ");
    event(
        &daemon,
        "exec_create",
        &record,
        &[("execID", exec.id.clone()), ("command", command)],
    );
    Ok(stream::json(StatusCode::CREATED, &json!({ "Id": exec.id })))
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecStart {
    detach: bool,
    /// Whether the output goes raw (true) or in Docker's frames: dockerd decides it by this
    /// field of the start, not by the exec's own `Tty` (docker-py starts a `-t` exec without
    /// it and reads frames).
    tty: bool,
}

/// An exec error with dockerd's text for an unknown exec.
fn exec_error(err: RuntimeError, id: &str) -> ApiError {
    match err {
        RuntimeError::NoSuchExec(_) => ApiError::not_found(format!("No such exec instance: {id}")),
        err => runtime_error(err, id),
    }
}

/// `POST /exec/{id}/start`: detached (200 at once), hijacked (`101`, stdin in and output
/// out), or a plain `200` whose body is the output.
pub async fn start(
    daemon: Arc<Daemon>,
    id: &str,
    mut req: Req,
) -> Result<Response<Body>, ApiError> {
    let upgrade = req
        .header("Upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("tcp"));
    let on_upgrade = req.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let body = crate::router::read_limited(req.body, 1 << 20).await?;
    let start: ExecStart = if body.iter().all(u8::is_ascii_whitespace) {
        ExecStart::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))?
    };
    let record = exec_record(&daemon, id).await?;
    if record.running || record.exit_code.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Error: Exec command {} is already running", record.id),
        ));
    }
    let container = find(&daemon, &record.container_id).await?;
    let (stdin, stdout, stderr, detach_keys) = {
        let execs = daemon.execs.lock();
        match execs.get(&record.id) {
            Some(m) => (m.stdin, m.stdout, m.stderr, m.detach_keys.clone()),
            None => (false, true, true, DetachKeys::default()),
        }
    };
    let tty = record.process.terminal;
    // As dockerd: only a terminal's input is watched for the detach keys.
    let mut detach = tty.then(|| detach_keys.watch());
    let raw = start.tty;
    let stdin = stdin && !start.detach && upgrade;
    // The process's stdio and the daemon's ends of it. A detached `Tty` exec still gets its
    // pty (its process makes it the controlling terminal, and `exec/{id}/resize` reaches it);
    // its output is read and dropped, as a left client's.
    let (stdio, ends) = if start.detach && !tty {
        (
            kiln_sandbox::Stdio {
                stdin: std::process::Stdio::null(),
                stdout: std::process::Stdio::null(),
                stderr: std::process::Stdio::null(),
            },
            Ends::None,
        )
    } else if tty {
        let pty = kiln_runtime::pty::Pty::open().map_err(|e| exec_error(e, id))?;
        let stdio = pty.stdio().map_err(|e| exec_error(e, id))?;
        let master = pty
            .master
            .try_clone()
            .map_err(|e| ApiError::internal(format!("pty: {e}")))?;
        if let Some(m) = daemon.execs.lock().get_mut(&record.id) {
            m.pty = pty.master.try_clone().ok();
        }
        (stdio, Ends::Pty(master))
    } else {
        let piped = std::process::Stdio::piped;
        let null = std::process::Stdio::null;
        (
            kiln_sandbox::Stdio {
                stdin: if stdin { piped() } else { null() },
                stdout: if stdout { piped() } else { null() },
                stderr: if stderr { piped() } else { null() },
            },
            Ends::Pipes,
        )
    };
    if !container.state.is_running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", container.id),
        ));
    }
    let (out_tx, out_rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(16);
    // Starts the process, its output into `out_tx` and the client's input from `in_rx`, then
    // reports its exit. A hijacked start runs it only once the connection is upgraded, as
    // dockerd does: output written together with the 101 head would be read by the client's
    // HTTP parser and lost.
    let launch = {
        let daemon = Arc::clone(&daemon);
        let query = id.to_owned();
        async move {
            let rt = Runtime::new(daemon.store().clone());
            let exec_id = record.id.clone();
            let exec = blocking(&query, move || rt.exec_start(&exec_id, stdio)).await?;
            event(
                &daemon,
                "exec_start",
                &container,
                &[("execID", record.id.clone())],
            );
            let exec_id = record.id.clone();
            tokio::task::spawn_blocking(move || {
                let code = run_exec(exec, ends, raw, out_tx, in_rx);
                if let Some(m) = daemon.execs.lock().get_mut(&exec_id) {
                    m.pty = None;
                }
                event(
                    &daemon,
                    "exec_die",
                    &container,
                    &[("execID", exec_id), ("exitCode", code.to_string())],
                );
            });
            Ok::<(), ApiError>(())
        }
    };
    let hijack = !start.detach && upgrade && on_upgrade.is_some();
    let mut launch = Some(launch);
    if !hijack && let Some(launch) = launch.take() {
        launch.await?;
    }
    if start.detach {
        return Ok(stream::empty(StatusCode::OK));
    }
    match (upgrade, on_upgrade) {
        (true, Some(on_upgrade)) => {
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut client = TokioIo::new(upgraded);
                let Some(launch) = launch else {
                    return;
                };
                if let Err(e) = launch.await {
                    // The status line is gone: the error goes to the client as output.
                    let mut text = e.message.into_bytes();
                    text.push(b'\n');
                    let _ = client.write_all(&frame_of(raw, &text)).await;
                    let _ = client.shutdown().await;
                    return;
                }
                let (mut from_client, mut to_client) = tokio::io::split(client);
                let (detached_tx, mut detached) = tokio::sync::oneshot::channel::<()>();
                let mut detached_tx = Some(detached_tx);
                let input = tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    if !stdin {
                        return;
                    }
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut pass = Vec::with_capacity(n);
                        let done = match detach.as_mut() {
                            Some(watch) => watch.feed(&buf[..n], &mut pass),
                            None => {
                                pass.extend_from_slice(&buf[..n]);
                                false
                            }
                        };
                        if !pass.is_empty() && in_tx.send(Bytes::from(pass)).await.is_err() {
                            break;
                        }
                        if done {
                            // The client detached: its connection closes, the process runs
                            // on (and its input stays open: `in_tx` is kept until then).
                            if let Some(tx) = detached_tx.take() {
                                let _ = tx.send(());
                            }
                            std::future::pending::<()>().await;
                        }
                    }
                    // Dropping `in_tx` closes the process's stdin.
                });
                let mut out_rx = out_rx;
                // Until the input ends without a detach (its sender dropped): then the
                // receiver is done and must not be polled again.
                let mut watching = true;
                loop {
                    let chunk = tokio::select! {
                        chunk = out_rx.recv() => chunk,
                        sent = &mut detached, if watching => {
                            if sent.is_ok() {
                                break;
                            }
                            watching = false;
                            continue;
                        }
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    if to_client.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown().await;
                input.abort();
            });
            let mut response = stream::empty(StatusCode::SWITCHING_PROTOCOLS);
            let h = response.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.docker.raw-stream"),
            );
            Ok(response)
        }
        _ => {
            drop(in_tx);
            Ok(stream::byte_stream(
                "application/vnd.docker.raw-stream",
                out_rx,
            ))
        }
    }
}

/// `text` as stderr output: raw, or in a frame.
fn frame_of(raw: bool, text: &[u8]) -> Vec<u8> {
    framed(raw, StreamType::Stderr, text)
}

/// Output of `kind` as the client reads it: raw, or in a frame of its stream.
fn framed(raw: bool, kind: StreamType, bytes: &[u8]) -> Vec<u8> {
    if raw {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let _ = kiln_runtime::attach::write_frame(&mut out, kind, bytes);
    out
}

/// Where an exec's stdio goes.
enum Ends {
    /// Detached: nowhere.
    None,
    /// The child's pipes (taken from it).
    Pipes,
    /// A pty's master.
    Pty(File),
}

/// Copies the exec's output (raw, or framed: a pty's as stdout) into `out` and `input` into
/// its stdin until it exits; returns its exit code.
fn run_exec(
    mut exec: kiln_runtime::Exec,
    ends: Ends,
    raw: bool,
    out: mpsc::Sender<std::io::Result<Bytes>>,
    mut input: mpsc::Receiver<Bytes>,
) -> i32 {
    let mut copiers = Vec::new();
    match ends {
        Ends::None => {}
        Ends::Pipes => {
            if let Some(mut stdin) = exec.child.take_stdin() {
                copiers.push(std::thread::spawn(move || {
                    while let Some(chunk) = input.blocking_recv() {
                        if stdin.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                }));
            }
            let copy = |from: Box<dyn Read + Send>, kind: StreamType| {
                let out = out.clone();
                std::thread::spawn(move || copy_output(from, kind, raw, &out))
            };
            if let Some(o) = exec.child.take_stdout() {
                copiers.push(copy(Box::new(o), StreamType::Stdout));
            }
            if let Some(e) = exec.child.take_stderr() {
                copiers.push(copy(Box::new(e), StreamType::Stderr));
            }
        }
        Ends::Pty(master) => {
            if let Ok(mut writer) = master.try_clone() {
                // Not joined: it ends when the client's input does, or with the daemon's
                // pty handle.
                std::thread::spawn(move || {
                    while let Some(chunk) = input.blocking_recv() {
                        if writer.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                });
            }
            let out = out.clone();
            copiers.push(std::thread::spawn(move || {
                let reader = Box::new(kiln_runtime::pty::PtyReader(master));
                copy_output(reader, StreamType::Stdout, raw, &out);
            }));
        }
    }
    let code = exec.wait().unwrap_or(-1);
    for c in copiers {
        let _ = c.join();
    }
    code
}

/// Copies one output stream of an exec into `out` until it ends. Once the client left (or
/// detached) the output is still read, and dropped: the process runs on, neither blocked on
/// a full pipe nor hung up by a closed pty.
fn copy_output(
    mut from: Box<dyn Read + Send>,
    kind: StreamType,
    raw: bool,
    out: &mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut listening = true;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if listening => {
                let chunk = Bytes::from(framed(raw, kind, &buf[..n]));
                listening = out.blocking_send(Ok(chunk)).is_ok();
            }
            Ok(_) => {}
        }
    }
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (rows, cols) = window(query)?;
    let record = exec_record(&daemon, id).await?;
    if let Some(master) = daemon
        .execs
        .lock()
        .get(&record.id)
        .and_then(|m| m.pty.as_ref())
    {
        kiln_runtime::pty::set_window_size(master, rows, cols);
    }
    Ok(stream::empty(StatusCode::OK))
}

/// The exec instance `id`, as the runtime recorded it (404 when there is none).
async fn exec_record(daemon: &Daemon, id: &str) -> Result<ExecRecord, ApiError> {
    let rt = Runtime::new(daemon.store().clone());
    let exec_id = id.to_owned();
    tokio::task::spawn_blocking(move || rt.exec_inspect(&exec_id))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| exec_error(e, id))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    let record = exec_record(&daemon, id).await?;
    let (stdin, stdout, stderr) = {
        let execs = daemon.execs.lock();
        match execs.get(&record.id) {
            Some(m) => (m.stdin, m.stdout, m.stderr),
            None => (false, true, true),
        }
    };
    let p = &record.process;
    Ok(stream::json(
        StatusCode::OK,
        &json!({
            "ID": record.id,
            "ContainerID": record.container_id,
            "Running": record.running,
            "ExitCode": record.exit_code,
            "CanRemove": false,
            "DetachKeys": "",
            "OpenStdin": stdin,
            "OpenStdout": stdout,
            "OpenStderr": stderr,
            "Pid": record.pid,
            "ProcessConfig": {
                "entrypoint": p.args.first(),
                "arguments": p.args.get(1..).unwrap_or_default(),
                "privileged": false,
                "tty": p.terminal,
                "user": p.user.clone().unwrap_or_default(),
            },
        }),
    ))
}
