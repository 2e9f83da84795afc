//! The container operations of the Engine API over `kiln_runtime`: create, start, wait, kill,
//! stop, restart, remove, resize, commit (here), logs and attach (`attach.rs`), the
//! list and inspect shapes (`shapes.rs`), the watchers of exits and restarts (`policy.rs`).
//!
//! Each handler is as thin as the CLI's command: request → one runtime call → dockerd's shape.
//! The runtime is blocking (it waits on lock files and sockets), so every call runs on tokio's
//! blocking pool. Containers run under their own supervisors, never as the daemon's children,
//! so a restarted daemon finds them in the store as the CLI does. The daemon's own state is
//! only what the API needs between requests: attaches waiting for a container to start
//! (`docker run` attaches before it starts), and the watchers that report `die`.

mod archive;
mod attach;
mod ops;
mod policy;
mod resources;
pub(crate) mod shapes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Response, StatusCode};
use kiln_runtime::{
    AttachRequest, AttachStream, ContainerCreateRequest, Host, Runtime, RuntimeError, WaitCondition,
};
use kiln_store::{ContainerError, ContainerRecord};
use serde_json::json;
use tokio::sync::{broadcast, oneshot};

use crate::Daemon;
use crate::error::ApiError;
use crate::events::Event;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body};

pub use archive::{export, get as get_archive, put as put_archive, stat as stat_archive};
pub(crate) use attach::detach_keys;
pub use attach::{attach, logs};
pub use ops::{changes, prune, rename};
pub use policy::start_restartable;
pub use resources::{pause, stats, top, unpause, update};
pub use shapes::{inspect, list};

/// An attach made before its container started: it gets its stream when the container starts.
#[derive(Debug)]
pub struct PendingAttach {
    request: AttachRequest,
    tx: oneshot::Sender<Result<AttachStream, ApiError>>,
}

/// Attaches waiting for their container's start, by container ID.
#[derive(Debug, Default)]
pub struct PendingAttaches(Mutex<HashMap<String, Vec<PendingAttach>>>);

impl PendingAttaches {
    fn add(&self, id: &str, attach: PendingAttach) {
        self.lock().entry(id.to_owned()).or_default().push(attach);
    }

    fn take(&self, id: &str) -> Vec<PendingAttach> {
        self.lock().remove(id).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<PendingAttach>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Exit codes of containers the daemon started, for `wait`s that began before the start
/// (`docker run` waits, then starts; a `--rm` container may be gone before a poll sees it
/// run). The last code is kept, so a wait that comes just after the exit still gets it.
#[derive(Debug, Default)]
pub struct Exits(Mutex<HashMap<String, ExitEntry>>);

#[derive(Debug)]
struct ExitEntry {
    tx: broadcast::Sender<i32>,
    /// The code of the exit since the daemon last started the container.
    code: Option<i32>,
}

/// Exit entries kept before the finished ones are dropped.
const EXITS_KEPT: usize = 4096;

impl Exits {
    fn entry<'a>(map: &'a mut HashMap<String, ExitEntry>, id: &str) -> &'a mut ExitEntry {
        map.entry(id.to_owned()).or_insert_with(|| ExitEntry {
            tx: broadcast::channel(1).0,
            code: None,
        })
    }

    /// The code of the exit since the last start, if it happened, and the coming exit.
    fn subscribe(&self, id: &str) -> (Option<i32>, broadcast::Receiver<i32>) {
        let mut map = self.lock();
        let e = Self::entry(&mut map, id);
        (e.code, e.tx.subscribe())
    }

    fn started(&self, id: &str) {
        Self::entry(&mut self.lock(), id).code = None;
    }

    fn exited(&self, id: &str, code: i32) {
        let mut map = self.lock();
        if map.len() > EXITS_KEPT {
            map.retain(|_, e| e.code.is_none());
        }
        let e = Self::entry(&mut map, id);
        e.code = Some(code);
        let _ = e.tx.send(code);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExitEntry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn runtime(daemon: &Daemon) -> Runtime {
    Runtime::new(daemon.store().clone())
}

/// A runtime error as the client sees it: dockerd's `No such container: X` for an unknown
/// container (clients match that text), dockerd's conflict text for a name in use, else the
/// runtime's message with the status of its kind.
pub(crate) fn runtime_error(err: RuntimeError, query: &str) -> ApiError {
    match err {
        RuntimeError::Container(ContainerError::NoSuchContainer(_)) => {
            ApiError::not_found(format!("No such container: {query}"))
        }
        RuntimeError::Container(ContainerError::NameInUse { name, id }) => ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
                 You have to remove (or rename) that container to be able to reuse that name."
            ),
        ),
        err => ApiError::from_kind(err.kind(), err.to_string()),
    }
}

/// Runs a blocking runtime call on the blocking pool.
pub(crate) async fn blocking<T, F>(query: &str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RuntimeError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| runtime_error(e, query)),
        Err(e) => Err(ApiError::internal(format!(
            "container operation failed: {e}"
        ))),
    }
}

/// The container `query` names, with its status as the host sees it.
pub(crate) async fn find(daemon: &Arc<Daemon>, query: &str) -> Result<ContainerRecord, ApiError> {
    let rt = runtime(daemon);
    let q = query.to_owned();
    blocking(query, move || rt.container(&q)).await
}

/// Publishes a container event with dockerd's attributes: `name`, `image`, the labels, and
/// `extra` (`exitCode`, `signal`).
pub(crate) fn event(
    daemon: &Daemon,
    action: &'static str,
    c: &ContainerRecord,
    extra: &[(&str, String)],
) {
    let mut attributes = serde_json::Map::new();
    for (k, v) in &c.config.labels {
        attributes.insert(k.clone(), json!(v));
    }
    attributes.insert("image".into(), json!(c.image));
    attributes.insert("name".into(), json!(c.name));
    for (k, v) in extra {
        attributes.insert((*k).to_owned(), json!(v));
    }
    daemon.events.publish(Event {
        kind: "container",
        action,
        id: c.id.clone(),
        attributes,
        time_nano: crate::events::now_nano(),
    });
}

/// `POST /containers/create`: 201 `{"Id", "Warnings"}`; 404 `No such image` for an image not
/// in the store (the CLI then pulls and retries), 409 for a name in use.
pub async fn create(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let name = req
        .query
        .get("name")
        .map(|n| n.trim_start_matches('/').to_owned())
        .filter(|n| !n.is_empty());
    let body: serde_json::Value = req.json().await?;
    if body.is_null() {
        return Err(ApiError::bad_request("config cannot be empty"));
    }
    let request: ContainerCreateRequest = serde_json::from_value(without_nulls(body))
        .map_err(|e| ApiError::bad_request(format!("invalid container config: {e}")))?;
    if request.config.image.is_empty() {
        return Err(ApiError::bad_request("config has no Image"));
    }
    let store = daemon.store().clone();
    let image = request.config.image.clone();
    // As images/{name}/json finds it: unnamed images by ID too (`containers.run(image)`).
    let img = tokio::task::spawn_blocking(move || crate::images::find(&store, &image))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let rt = runtime(&daemon);
    let query = name.clone().unwrap_or_default();
    let record = blocking(&query, move || rt.create(name.as_deref(), &request, &img)).await?;
    event(&daemon, "create", &record, &[]);
    Ok(stream::json(
        StatusCode::CREATED,
        &json!({ "Id": record.id, "Warnings": [] }),
    ))
}

/// `value` without its `null` members: the Go client writes `null` for every empty list and
/// map (`"Binds": null`), which means "none", as an absent field does.
pub(crate) fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `POST /containers/{id}/start`: 204; 304 for a running container. Attaches waiting for the
/// start are connected before the process starts, so they see all of its output.
pub async fn start(daemon: Arc<Daemon>, id: &str) -> Result<Response<Body>, ApiError> {
    Ok(stream::empty(if start_container(daemon, id).await? {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }))
}

/// The daemon's start of a container: the runtime's start (attached to the first pending
/// attach), the other pending attaches joined, the `start` event and the exit watch. `false`
/// when it was running already. The `start` handler and the restore at the daemon's start
/// (`policy`) both call it.
pub(crate) async fn start_container(daemon: Arc<Daemon>, id: &str) -> Result<bool, ApiError> {
    let record = find(&daemon, id).await?;
    if record.state.is_running() {
        return Ok(false);
    }
    let mut pending = daemon.attaches.take(&record.id);
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    let first = if pending.is_empty() {
        None
    } else {
        Some(pending.remove(0))
    };
    let (first_request, first_tx) = match first {
        Some(p) => (Some(p.request), Some(p.tx)),
        None => (None, None),
    };
    // Opened before the start, so the exit code is read even if a `--rm` container is gone
    // by the time the watcher looks.
    daemon.exits.started(&record.id);
    let started = blocking(id, move || {
        let exit = rt.store.watch_container_exit(&cid)?;
        let stream = match first_request {
            Some(request) => rt.start_attached(&cid, request).map(Some),
            None => rt.start(&cid).map(|_| None),
        }?;
        Ok((stream, exit))
    })
    .await;
    let (stream, exit) = match started {
        Ok(started) => started,
        Err(e) => {
            if let Some(tx) = first_tx {
                let _ = tx.send(Err(e.clone()));
            }
            for p in pending {
                let _ = p.tx.send(Err(e.clone()));
            }
            return Err(e);
        }
    };
    if let (Some(tx), Some(stream)) = (first_tx, stream) {
        let _ = tx.send(Ok(stream));
    }
    // Later attaches join the running container.
    for p in pending {
        let rt = runtime(&daemon);
        let cid = record.id.clone();
        let result = blocking(id, move || rt.attach(&cid, p.request)).await;
        let _ = p.tx.send(result);
    }
    event(&daemon, "start", &record, &[]);
    policy::watch_exit(&daemon, record, exit);
    Ok(true)
}

/// `POST /containers/{id}/wait`: the `200` headers at once (the CLI waits for them before it
/// starts the container), then `{"StatusCode", "Error"}` when the condition is met.
pub async fn wait(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let condition: WaitCondition = match query.get("condition").filter(|c| !c.is_empty()) {
        Some(c) => c.parse().map_err(|e| runtime_error(e, id))?,
        None => WaitCondition::NotRunning,
    };
    let record = find(&daemon, id).await?;
    // A wait for the next exit of a container that is not running yet also hears the exit
    // from the start the daemon makes (whose `--rm` may remove it before a poll sees it run).
    let mut started_here = (condition != WaitCondition::NotRunning && !record.state.is_running())
        .then(|| daemon.exits.subscribe(&record.id).1);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let rt = runtime(&daemon);
    let removed = condition == WaitCondition::Removed;
    let daemon = Arc::clone(&daemon);
    tokio::spawn(async move {
        let cid = record.id.clone();
        let store = rt.store.clone();
        // The client left once its response body is dropped: the blocking waits then end
        // instead of holding a thread until the container ends or is removed (never, for a
        // `removed` wait on a container that was not started).
        let client = tx.clone();
        let polled = tokio::task::spawn_blocking(move || {
            let gone = || client.is_closed();
            rt.wait_unless(&cid, condition, Some(&gone))
        });
        let polled = async move {
            match polled.await {
                Ok(r) => r,
                Err(e) => Err(RuntimeError::Io {
                    path: "wait".into(),
                    source: e.into(),
                }),
            }
        };
        let result = match started_here.as_mut() {
            Some(exits) => tokio::select! {
                Ok(code) = exits.recv() => Ok(code),
                r = polled => r,
            },
            None => polled.await,
        };
        // Removed before a poll read its code: the daemon's watcher has it, or soon will.
        let result = match result {
            Err(RuntimeError::RemovedWithoutCode(name)) => {
                let mut known = daemon.exits.subscribe(&record.id);
                match known.0 {
                    Some(code) => Ok(code),
                    None => {
                        match tokio::time::timeout(Duration::from_secs(5), known.1.recv()).await {
                            Ok(Ok(code)) => Ok(code),
                            _ => Err(RuntimeError::RemovedWithoutCode(name)),
                        }
                    }
                }
            }
            other => other,
        };
        if removed && result.is_ok() {
            // Until the record is gone (a `--rm` supervisor removes it just after the exit).
            let id = record.id.clone();
            let client = tx.clone();
            let _ = tokio::task::spawn_blocking(move || {
                while store.find_container(&id).is_ok() && !client.is_closed() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .await;
        }
        let body = match result {
            Ok(code) => json!({ "StatusCode": code, "Error": null }),
            Err(e) => json!({ "StatusCode": -1, "Error": { "Message": e.to_string() } }),
        };
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        let _ = tx.send(Ok(bytes.into())).await;
    });
    Ok(stream::byte_stream("application/json", rx))
}

/// `POST /containers/{id}/kill?signal=`: 204; 409 when it is not running.
pub async fn kill(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let signal = query
        .get("signal")
        .filter(|s| !s.is_empty())
        .unwrap_or("SIGKILL")
        .to_owned();
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let (cid, sig) = (record.id.clone(), signal.clone());
    blocking(id, move || {
        rt.kill(&cid, &sig)?;
        // As dockerd: a SIGKILL returns once the container is dead, so an inspect right
        // after it sees the exit.
        if kiln_runtime::parse_signal(&sig)?.as_raw() == rustix::process::Signal::KILL.as_raw() {
            rt.host.wait_stopped(&cid, Some(Duration::from_secs(10)))?;
            // The supervisor records the exit in the record just after releasing its lock.
            for _ in 0..100 {
                match rt.store.find_container(&cid) {
                    Ok(c) if c.state.status == kiln_store::ContainerStatus::Running => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
        Ok(())
    })
    .await?;
    event(&daemon, "kill", &record, &[("signal", signal)]);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// The grace time of stop and restart: `t` seconds (dockerd's default 10).
fn grace(query: &Query) -> Result<Duration, ApiError> {
    match query.int("t")? {
        None => Ok(Duration::from_secs(10)),
        Some(t) if t < 0 => Ok(Duration::from_secs(u64::MAX / 4)),
        Some(t) => Ok(Duration::from_secs(t as u64)),
    }
}

/// `POST /containers/{id}/stop?t=`: 204; 304 for a container that is not running.
pub async fn stop(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let grace = grace(query)?;
    let record = find(&daemon, id).await?;
    if !record.state.is_running() {
        return Ok(stream::empty(StatusCode::NOT_MODIFIED));
    }
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    blocking(id, move || rt.stop(&cid, grace)).await?;
    event(&daemon, "stop", &record, &[]);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart?t=`: 204.
pub async fn restart(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let grace = grace(query)?;
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    daemon.exits.started(&record.id);
    let exit = blocking(id, move || {
        rt.restart(&cid, grace)?;
        Ok(rt.store.watch_container_exit(&cid)?)
    })
    .await?;
    event(&daemon, "restart", &record, &[]);
    policy::watch_exit(&daemon, record, exit);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `DELETE /containers/{id}?force=&v=`: 204; 409 for a running container without `force`.
pub async fn remove(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (force, volumes) = (query.bool("force"), query.bool("v"));
    let record = find(&daemon, id).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    blocking(id, move || rt.remove(&cid, force, volumes)).await?;
    daemon.attaches.take(&record.id);
    event(&daemon, "destroy", &record, &[]);
    Ok(stream::empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/resize?h=&w=`: the pty's window size (a container without a tty
/// has none to set: 200, as dockerd).
pub async fn resize(
    daemon: Arc<Daemon>,
    id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (rows, cols) = window(query)?;
    let record = find(&daemon, id).await?;
    if !record.state.is_running() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", record.id),
        ));
    }
    if record.config.tty {
        let store = daemon.store().clone();
        blocking(id, move || {
            kiln_runtime::attach::resize(&store, &record, rows, cols)
        })
        .await?;
    }
    Ok(stream::empty(StatusCode::OK))
}

/// `h` and `w` of a resize.
pub(crate) fn window(query: &Query) -> Result<(u16, u16), ApiError> {
    let dim = |name: &str| -> Result<u16, ApiError> {
        let v = query.int(name)?.unwrap_or(0);
        u16::try_from(v)
            .map_err(|_| ApiError::bad_request(format!("invalid {name} {v}: out of range")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&pause=`: 201 `{"Id"}`, an image of
/// the container's changes (the runtime's commit, as `kiln commit`), unnamed without `repo`.
pub async fn commit(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let q = &req.query;
    let container = q.get("container").unwrap_or("").to_owned();
    if container.is_empty() {
        return Err(ApiError::bad_request("commit needs a container"));
    }
    let repo = q.get("repo").unwrap_or("");
    // `changes`: Dockerfile lines, checked before anything is committed.
    let changes: Vec<String> = q
        .all("changes")
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .map(str::to_owned)
        .collect();
    crate::images::import::apply_changes(&mut kiln_image::ContainerConfig::default(), &changes)?;
    let edit = (!changes.is_empty()).then(|| {
        kiln_runtime::ConfigEdit(Arc::new(move |config: &mut kiln_image::ContainerConfig| {
            // Checked above; a change cannot fail on another config.
            let _ = crate::images::import::apply_changes(config, &changes);
        }))
    });
    // Without `repo`, an unnamed image (dockerd's too), found by its ID.
    let name = match (repo, q.get("tag").filter(|t| !t.is_empty())) {
        ("", _) => None,
        (repo, Some(tag)) => Some(format!("{repo}:{tag}")),
        (repo, None) => Some(repo.to_owned()),
    };
    let reference = name.as_deref().map(crate::images::parse_name).transpose()?;
    let options = kiln_runtime::CommitOptions {
        message: q
            .get("comment")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        author: q.get("author").filter(|a| !a.is_empty()).map(str::to_owned),
        // dockerd pauses by default.
        pause: q.get("pause").is_none_or(|_| q.bool("pause")),
        edit,
    };
    crate::router::drain(req.body).await;
    let record = find(&daemon, &container).await?;
    let rt = runtime(&daemon);
    let cid = record.id.clone();
    let img = blocking(&container, move || {
        rt.commit(&cid, reference.as_ref(), &options)
    })
    .await?;
    let id = img.config_digest.to_string();
    event(&daemon, "commit", &record, &[]);
    if let Some(name) = &name {
        daemon.events.image("tag", &id, Some(name));
    }
    Ok(stream::json(StatusCode::CREATED, &json!({ "Id": id })))
}
