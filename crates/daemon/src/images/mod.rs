//! The image operations: list, inspect, pull (`images/create`), push, tag, delete, save
//! (`images/get`) and load — each a call into `kiln_images` or `kiln_export` on the daemon's
//! store, with dockerd's shapes (`shapes.rs`), texts and events.

pub(crate) mod import;
pub(crate) mod shapes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Response, StatusCode};
use kiln_image::layout::NamedManifest;
use kiln_image::{Descriptor, Platform, Reference};
use kiln_images::{ImageEvent, PushProgress, StoredImage};
use kiln_registry::{PushEvent, RegistryClient};
use serde_json::{Value, json};

use crate::Daemon;
use crate::error::ApiError;
use crate::query::Query;
use crate::router::Req;
use crate::stream::{self, Body, Emitter};
use crate::system::AuthConfig;

/// Runs blocking store work off the runtime's workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a daemon task failed: {e}")))?
}

/// Runs a registry transfer of the image service on a blocking thread, driven by the daemon's
/// runtime (`Handle::block_on`): the service's transfer futures borrow their arguments in ways
/// the compiler cannot prove `Send` for a spawned task. Dropping the returned future cancels
/// the transfer, as dropping the transfer itself would (blobs are published only once complete).
pub async fn transfer<T: Send + 'static>(
    daemon: &Daemon,
    work: impl AsyncFnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let cancel = kiln_solve::CancelToken::new();
    let guard = cancel.cancel_on_drop();
    let rt = daemon.engine.rt.clone();
    let result = tokio::task::spawn_blocking(move || {
        rt.block_on(async move {
            tokio::select! {
                result = work() => result,
                () = cancel.cancelled() => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cancelled: the client went away",
                )),
            }
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("a daemon task failed: {e}")))?;
    guard.disarm();
    result
}

/// Parses an image name from a request, with a 400 naming it.
pub fn parse_name(name: &str) -> Result<Reference, ApiError> {
    name.parse::<Reference>()
        .map_err(|e| ApiError::bad_request(format!("invalid reference format {name:?}: {e}")))
}

/// Decodes an `X-Registry-Auth` header (base64url JSON `AuthConfig`; dockerd also ignores
/// what it cannot decode, and the CLI sends `e30=`, `{}`, when it has nothing).
pub fn registry_auth(header: Option<&str>) -> Option<AuthConfig> {
    use base64::Engine as _;
    let raw = header?.trim();
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The registry client for one request: the daemon's, with the request's credentials for
/// `registry` when it brought some (never seen by another request).
fn client_for(daemon: &Daemon, auth: Option<AuthConfig>, registry: &str) -> Arc<RegistryClient> {
    let credential = auth.as_ref().and_then(AuthConfig::credential);
    match credential {
        Some(c) => Arc::new(
            daemon
                .engine
                .registry
                .with_credentials([(registry.to_owned(), c)]),
        ),
        None => Arc::clone(&daemon.engine.registry),
    }
}

/// The image `query` names, as dockerd finds it: a name, else an ID or unambiguous ID prefix
/// of any image in the store, named or not (`kiln_images::find_image`).
pub fn find(store: &kiln_store::Store, query: &str) -> Result<StoredImage, ApiError> {
    kiln_images::find_image(store, query).map_err(|e| ApiError::image(e, query))
}

/// Every name of `img`, in name order.
fn names_of(daemon: &Daemon, img: &StoredImage) -> Result<Vec<Reference>, ApiError> {
    Ok(kiln_images::names_of(daemon.store(), img)?)
}

/// `GET /images/json`: one entry per image with all its names (dockerd's grouping), filters
/// `reference`, `dangling`, `label`; `all=1` adds the unnamed images.
pub async fn list(daemon: &Arc<Daemon>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = query.filters()?;
    filters.only(&["reference", "dangling", "label"])?;
    let mut flat = Vec::new();
    for (key, values) in &filters.0 {
        for v in values {
            flat.push(format!("{key}={v}"));
        }
    }
    let filter = kiln_images::ListFilter::parse(&flat)?.with_unnamed(query.bool("all"));
    let store = daemon.store().clone();
    let rows = blocking(move || Ok(kiln_images::list_images(&store, &filter)?)).await?;
    let out: Vec<Value> = shapes::group_by_id(rows)
        .iter()
        .map(|(img, names)| shapes::summary(img, names))
        .collect();
    Ok(stream::json(StatusCode::OK, &Value::Array(out)))
}

/// The image `name` finds and all its names.
async fn find_with_names(
    daemon: &Arc<Daemon>,
    name: &str,
) -> Result<(StoredImage, Vec<Reference>), ApiError> {
    let d = Arc::clone(daemon);
    let query = name.to_owned();
    blocking(move || {
        let img = find(d.store(), &query)?;
        let names = names_of(&d, &img)?;
        Ok((img, names))
    })
    .await
}

/// `GET /images/{name}/json`.
pub async fn inspect(daemon: &Arc<Daemon>, name: &str) -> Result<Response<Body>, ApiError> {
    let (img, names) = find_with_names(daemon, name).await?;
    Ok(stream::json(StatusCode::OK, &shapes::inspect(&img, &names)))
}

/// `GET /images/{name}/history`.
pub async fn history(daemon: &Arc<Daemon>, name: &str) -> Result<Response<Body>, ApiError> {
    let (img, names) = find_with_names(daemon, name).await?;
    Ok(stream::json(StatusCode::OK, &shapes::history(&img, &names)))
}

/// `POST /images/create?fromImage=&tag=`: a pull. Nothing is streamed until the registry has
/// answered for the image, so a missing image or refused credentials are an HTTP error.
pub async fn create(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    if req.query.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return import::import(daemon, req).await;
    }
    let from = req.query.get("fromImage").unwrap_or("").trim();
    if from.is_empty() {
        return Err(ApiError::bad_request("fromImage is required"));
    }
    let tag = req
        .query
        .get("tag")
        .unwrap_or("")
        .trim()
        .trim_end_matches(':');
    let full = match tag {
        "" => from.to_owned(),
        t if t.starts_with("sha256:") => format!("{from}@{t}"),
        t => format!("{from}:{t}"),
    };
    let reference = parse_name(&full)?;
    let platform = match req.query.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| ApiError::bad_request(format!("invalid platform {p:?}: {e}")))?,
        None => Platform::host(),
    };
    let auth = registry_auth(req.header("X-Registry-Auth"));
    let client = client_for(&daemon, auth, reference.registry());
    Ok(stream::json_stream(move |out| pull_stream(daemon, client, reference, platform, out)).await)
}

async fn pull_stream(
    daemon: Arc<Daemon>,
    client: Arc<RegistryClient>,
    reference: Reference,
    platform: Platform,
    out: Emitter,
) -> Result<(), ApiError> {
    let _lock = store_lock(&daemon).await?;
    let started = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(AtomicBool::new(false));
    let tag_id = reference
        .tag()
        .map(str::to_owned)
        .or_else(|| reference.digest().map(ToString::to_string))
        .unwrap_or_default();
    let repo = familiar_repository(&reference);
    let on_event = {
        let (out, started, fetched, tag_id, repo) = (
            out.clone(),
            Arc::clone(&started),
            Arc::clone(&fetched),
            tag_id.clone(),
            repo.clone(),
        );
        move |e: ImageEvent| {
            if let ImageEvent::BlobFetched { digest, cached } = e {
                if !started.swap(true, Ordering::SeqCst) {
                    out.status(Some(&tag_id), format!("Pulling from {repo}"));
                }
                if !cached {
                    fetched.store(true, Ordering::SeqCst);
                }
                let status = if cached {
                    "Already exists"
                } else {
                    "Pull complete"
                };
                out.send(&json!({ "status": status, "progressDetail": {}, "id": digest.short() }));
            }
        }
    };
    let store = daemon.store().clone();
    let r = reference.clone();
    let denied = repo.clone();
    let img = transfer(&daemon, async move || {
        kiln_images::pull(&store, &client, &r, &platform, &on_event)
            .await
            .map_err(|e| match e.kind() {
                kiln_error::ErrorKind::NotFound => ApiError::not_found(format!(
                    "pull access denied for {denied}, repository does not exist or may require 'docker login': {e}"
                )),
                _ => ApiError::from(e),
            })
    })
    .await?;
    if !started.load(Ordering::SeqCst) {
        out.status(Some(&tag_id), format!("Pulling from {repo}"));
    }
    out.status(None, format!("Digest: {}", img.manifest_digest));
    let what = if fetched.load(Ordering::SeqCst) {
        "Downloaded newer image for"
    } else {
        "Image is up to date for"
    };
    out.status(None, format!("Status: {what} {}", reference.familiar()));
    daemon
        .events
        .image("pull", &reference.familiar(), Some(&reference.familiar()));
    Ok(())
}

/// `library/alpine` for Docker Hub's official images, else the repository with its registry,
/// as dockerd's "Pulling from" line names it.
fn familiar_repository(reference: &Reference) -> String {
    if reference.registry() == "docker.io" {
        reference.repository().to_owned()
    } else {
        reference.repository_with_registry()
    }
}

/// Holds the store lock shared while an operation adds objects, so `kiln prune` waits.
async fn store_lock(daemon: &Arc<Daemon>) -> Result<kiln_store::StoreLock, ApiError> {
    let store = daemon.store().clone();
    blocking(move || Ok(store.lock_shared()?)).await
}

/// `POST /images/{name}/push?tag=`: every tag of the repository when `tag` is empty.
pub async fn push(daemon: Arc<Daemon>, name: &str, req: Req) -> Result<Response<Body>, ApiError> {
    let repository = parse_name(name)?;
    let tag = req.query.get("tag").unwrap_or("").trim().to_owned();
    let d = Arc::clone(&daemon);
    let name = name.to_owned();
    let targets = blocking(move || {
        let mut targets = Vec::new();
        if tag.is_empty() {
            for (n, manifest) in d.store().list_names()? {
                let Ok(r) = n.parse::<Reference>() else {
                    continue;
                };
                if r.registry() == repository.registry()
                    && r.repository() == repository.repository()
                    && r.tag().is_some()
                {
                    targets.push((r, StoredImage::load(d.store(), &manifest)?));
                }
            }
            if targets.is_empty() {
                return Err(ApiError::not_found(format!("No such image: {name}")));
            }
        } else {
            let r = parse_name(&format!("{}:{tag}", repository.repository_with_registry()))?;
            let img = kiln_images::find_image(d.store(), &r.to_string())
                .map_err(|e| ApiError::image(e, &r.familiar()))?;
            targets.push((r, img));
        }
        Ok(targets)
    })
    .await?;
    let registry = targets[0].0.registry().to_owned();
    let client = client_for(
        &daemon,
        registry_auth(req.header("X-Registry-Auth")),
        &registry,
    );
    Ok(stream::json_stream(move |out| push_stream(daemon, client, targets, out)).await)
}

async fn push_stream(
    daemon: Arc<Daemon>,
    client: Arc<RegistryClient>,
    targets: Vec<(Reference, StoredImage)>,
    out: Emitter,
) -> Result<(), ApiError> {
    for (reference, img) in targets {
        let on_event = {
            let out = out.clone();
            move |e: PushProgress| push_line(&out, e)
        };
        let (store, client, r) = (daemon.store().clone(), client.clone(), reference.clone());
        transfer(&daemon, async move || {
            Ok(kiln_images::push_image(&store, &client, &img, &[r], None, &on_event).await?)
        })
        .await?;
        daemon
            .events
            .image("push", &reference.familiar(), Some(&reference.familiar()));
    }
    Ok(())
}

fn push_line(out: &Emitter, e: PushProgress) {
    let layer = |status: &str, digest: &kiln_image::Digest| {
        out.send(&json!({ "status": status, "progressDetail": {}, "id": digest.short() }));
    };
    match e {
        PushProgress::Started { reference } => out.status(
            None,
            format!(
                "The push refers to repository [{}]",
                reference.repository_with_registry()
            ),
        ),
        PushProgress::Blob(PushEvent::BlobExists { digest }) => {
            layer("Layer already exists", &digest)
        }
        PushProgress::Blob(PushEvent::BlobMounted { digest, from }) => {
            layer(&format!("Mounted from {from}"), &digest);
        }
        PushProgress::Blob(PushEvent::BlobUploaded { digest }) => layer("Pushed", &digest),
        PushProgress::Blob(_) => {}
        PushProgress::Pushed {
            reference,
            digest,
            size,
        } => {
            let tag = reference.tag().unwrap_or("latest").to_owned();
            out.status(None, format!("{tag}: digest: {digest} size: {size}"));
            out.send(&json!({
                "progressDetail": {},
                "aux": { "Tag": tag, "Digest": digest.to_string(), "Size": size },
            }));
        }
    }
}

/// `POST /images/{name}/tag?repo=&tag=` → 201.
pub async fn tag(
    daemon: &Arc<Daemon>,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let repo = query.get("repo").unwrap_or("").trim();
    if repo.is_empty() {
        return Err(ApiError::bad_request("repo is required"));
    }
    let tag = query.get("tag").unwrap_or("").trim();
    let target = parse_name(&if tag.is_empty() {
        repo.to_owned()
    } else {
        format!("{repo}:{tag}")
    })?;
    if target.digest().is_some() {
        return Err(ApiError::bad_request(format!(
            "refusing to create a tag with a digest reference: {target}"
        )));
    }
    let d = Arc::clone(daemon);
    let source = name.to_owned();
    let id = blocking(move || {
        let _lock = d.store().lock_shared()?;
        let img = find(d.store(), &source)?;
        kiln_images::tag(d.store(), &img, &target)?;
        d.events.image(
            "tag",
            &img.config_digest.to_string(),
            Some(&target.familiar()),
        );
        Ok(img.config_digest.to_string())
    })
    .await?;
    let _ = id;
    Ok(stream::empty(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`: `[{"Untagged": ...}, {"Deleted": ...}]`; 409 in use, 404.
pub async fn delete(
    daemon: &Arc<Daemon>,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let force = query.bool("force");
    let d = Arc::clone(daemon);
    let name = name.to_owned();
    let out = blocking(move || {
        let manifest = kiln_images::find_image(d.store(), &name)
            .ok()
            .map(|img| img.manifest_digest);
        let removed =
            kiln_images::remove(d.store(), &name, force).map_err(|e| ApiError::image(e, &name))?;
        // dockerd deletes an image with its last name: its blobs go now (those no other image,
        // container or cache record holds), unless the store is busy (a build, a pull), when
        // they stay as an unnamed image for the next prune.
        if removed.deleted.is_some()
            && let Some(manifest) = manifest
            && let Some(held) = d.store().try_lock_exclusive()?
        {
            let options = kiln_store::PruneOptions {
                scope: kiln_store::PruneScope::UntaggedImages(vec![manifest]),
                ..Default::default()
            };
            d.store().prune(&held, &options)?;
        }
        let mut out = Vec::new();
        for r in &removed.untagged {
            out.push(json!({ "Untagged": r.familiar() }));
            d.events.image("untag", &r.familiar(), Some(&r.familiar()));
        }
        if let Some(id) = &removed.deleted {
            out.push(json!({ "Deleted": id.to_string() }));
            d.events.image("delete", &id.to_string(), None);
        }
        Ok(out)
    })
    .await?;
    Ok(stream::json(StatusCode::OK, &Value::Array(out)))
}

/// `GET /images/get?names=` and `GET /images/{name}/get`: a `docker save` tar. Every name is
/// looked up before the first byte, so an unknown one is a 404.
pub async fn save(daemon: Arc<Daemon>, names: Vec<String>) -> Result<Response<Body>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given (names=...)"));
    }
    let d = Arc::clone(&daemon);
    let images = blocking(move || {
        let mut images: Vec<NamedManifest> = Vec::new();
        for name in &names {
            let img = find(d.store(), name)?;
            // An image named by ID goes in unnamed, as with docker save.
            let full = name
                .parse::<Reference>()
                .ok()
                .filter(|r| r.digest().is_none() && !looks_like_id(name))
                .map(|r| r.to_string());
            // An image with attestations goes in as its index, as `kiln save` writes it.
            let media_type = if img.index_digest.is_some() {
                kiln_image::media_type::OCI_INDEX
            } else {
                img.manifest.effective_media_type()
            };
            let root = img.root_digest();
            match images.iter_mut().find(|i| &i.manifest.digest == root) {
                Some(existing) => existing.names.extend(full),
                None => images.push(NamedManifest {
                    manifest: Descriptor::new(media_type, root.clone(), d.store().blob_size(root)?),
                    names: full.into_iter().collect(),
                }),
            }
        }
        Ok(images)
    })
    .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let store = daemon.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut out = stream::ChannelWriter::new(tx);
        let written = kiln_export::write_archive(
            &store,
            &images,
            kiln_export::ArchiveFormat::Docker,
            &mut out,
        )
        .map(drop)
        .map_err(|e| e.to_string());
        let written =
            written.and_then(|()| std::io::Write::flush(&mut out).map_err(|e| e.to_string()));
        if let Err(e) = written {
            out.fail(e);
        }
    });
    Ok(stream::byte_stream("application/x-tar", rx))
}

fn looks_like_id(name: &str) -> bool {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `POST /images/load`: a docker-archive or OCI-layout tar. Everything is staged and checked
/// before anything is published, so a bad archive is a 400 and leaves nothing.
pub async fn load(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let reader = body_reader(req.body);
    Ok(stream::json_stream_in_band(move |out| async move {
        let d = Arc::clone(&daemon);
        let loaded = blocking(move || {
            let _lock = d.store().lock_shared()?;
            let staged = kiln_export::read_archive(
                d.store(),
                std::io::BufReader::with_capacity(256 * 1024, reader),
            )?;
            let mut named = Vec::new();
            for image in staged.images() {
                let mut refs = Vec::new();
                for name in &image.names {
                    refs.push(parse_name(name)?);
                }
                // Names point at the image's index when it came with attestations.
                named.push((image.config_digest.clone(), image.root_digest.clone(), refs));
            }
            staged.commit()?;
            for (_, manifest, refs) in &named {
                for r in refs {
                    d.store().set_name(&r.to_string(), manifest)?;
                }
            }
            Ok(named)
        })
        .await?;
        for (id, _, refs) in loaded {
            if refs.is_empty() {
                out.stream(format!("Loaded image ID: {id}\n"));
            }
            for r in &refs {
                out.stream(format!("Loaded image: {}\n", r.familiar()));
            }
            daemon.events.image("load", &id.to_string(), None);
        }
        Ok(())
    })
    .await)
}

/// A request body as a blocking `Read`, for the libraries that take one (archives, contexts).
/// Created on the runtime, read on a blocking thread.
pub fn body_reader(body: hyper::body::Incoming) -> impl std::io::Read + Send + 'static {
    use futures_util::TryStreamExt;
    let data = http_body_util::BodyDataStream::new(body).map_err(std::io::Error::other);
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(data))
}
