//! `POST /build`: the legacy builder protocol over kiln's engine.
//!
//! The body is the context as a (possibly compressed) tar, synced into one of the store's
//! reused context directories through `Engine::unpack_context` (unchanged files are not
//! written again, and their digests stay known), which refuses `..`, absolute names and links
//! out of the context (a 400 naming the entry; nothing is written outside the store). The whole body is
//! read before the first line is written, as dockerd does. Progress becomes the legacy
//! stream: `Step N/M : ...` lines, ` ---> Using cache`, RUN output, `{"aux":{"ID":...}}`,
//! `Successfully built <id>`, `Successfully tagged <name>`; a failure after the first line
//! is an in-band `errorDetail`. Dropping the response (the client disconnected) drops the
//! build future, which cancels the build (`Engine::build_async`).
//!
//! `cachefrom` naming only images that do not exist turns the cache off (dockerd would find
//! no cache in them); naming existing ones leaves kiln's content-keyed cache as it is.
//! `labels` are applied after the build by writing the image again with them added to its
//! config (same layers), which is what a final `LABEL` would do; the engine's request has no
//! labels. `shmsize` and `ulimits` set every RUN step's `/dev/shm` size and resource limits
//! (as `kiln build --shm-size/--ulimit`); `rm`, `forcerm`, `memory` and the like are accepted
//! and have no effect (kiln keeps no intermediate containers; its RUN steps have no cgroup
//! limits).

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::Response;
use kiln_image::{Platform, Reference};
use kiln_sandbox::NetworkMode;
use kiln_solve::history::BuildHistory;
use kiln_solve::{BuildRequest, CancelToken, ProgressEvent, SolveError};
use serde_json::json;

mod legacy;

use self::legacy::{GlobalSteps, LegacyStream};
use crate::Daemon;
use crate::error::ApiError;
use crate::images::{blocking, body_reader, parse_name};
use crate::router::Req;
use crate::stream::{self, Body, Emitter};
use crate::system::AuthConfig;

/// What the query asks for, parsed before the body is read.
#[derive(Debug)]
struct Params {
    tags: Vec<Reference>,
    dockerfile: Option<String>,
    build_args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    target: Option<String>,
    no_cache: bool,
    /// `cachefrom`: images whose steps may be reused (see `run`).
    cache_from: Vec<String>,
    pull: bool,
    quiet: bool,
    platform: Platform,
    network: NetworkMode,
    /// `extrahosts`: `NAME:ADDRESS` entries for RUN steps' `/etc/hosts`.
    extra_hosts: Vec<kiln_sandbox::ExtraHost>,
    /// `shmsize` (bytes; 0 is the default) and `ulimits`, for every RUN step.
    shm_size: Option<u64>,
    ulimits: Vec<kiln_sandbox::Ulimit>,
}

/// One entry of the `ulimits` parameter, as the docker CLI sends it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UlimitParam {
    name: String,
    soft: i64,
    hard: i64,
}

fn parse_params(req: &Req) -> Result<Params, ApiError> {
    let q = &req.query;
    let tags = q
        .all("t")
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(parse_name)
        .collect::<Result<Vec<_>, _>>()?;
    // `null` values in buildargs mean "from the daemon's environment" in dockerd; kiln takes
    // nothing from its own environment, so they are skipped.
    let build_args: BTreeMap<String, Option<String>> = q.json("buildargs")?.unwrap_or_default();
    let labels: BTreeMap<String, String> = q.json("labels")?.unwrap_or_default();
    let cache_from: Vec<String> = q.json("cachefrom")?.unwrap_or_default();
    if let Some(remote) = q.get("remote").filter(|r| !r.trim().is_empty()) {
        return Err(ApiError::bad_request(format!(
            "remote {remote:?}: kiln builds only a context sent as a tar in the request body"
        )));
    }
    // docker-py repeats the parameter, one entry each; a comma-separated list is read too.
    let extra_hosts = q
        .all("extrahosts")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            kiln_sandbox::ExtraHost::parse(h)
                .map_err(|e| ApiError::bad_request(format!("extrahosts: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let platform = match q.get("platform").map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) if p.contains(',') => {
            return Err(ApiError::bad_request(format!(
                "platform {p:?}: one platform per build"
            )));
        }
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| ApiError::bad_request(format!("invalid platform {p:?}: {e}")))?,
        None => Platform::host(),
    };
    let network = match q.get("networkmode").map(str::trim).unwrap_or("") {
        "" | "default" | "bridge" => match kiln_sandbox::network_helper() {
            Ok(_) => NetworkMode::Default,
            // As `kiln build` without --network: no helper, no network for RUN.
            Err(_) => NetworkMode::None,
        },
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => {
            return Err(ApiError::bad_request(format!(
                "networkmode {other:?} is not supported (default, bridge, none or host)"
            )));
        }
    };
    let shm_size = match q.get("shmsize").map(str::trim).filter(|s| !s.is_empty()) {
        None | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("shmsize {s:?}: expected a number of bytes"))
        })?),
    };
    let ulimits = q
        .json::<Vec<UlimitParam>>("ulimits")?
        .unwrap_or_default()
        .into_iter()
        .map(|u| {
            let limit = |v: i64| {
                if v < 0 {
                    "-1".to_owned()
                } else {
                    v.to_string()
                }
            };
            kiln_sandbox::Ulimit::parse(&format!("{}={}:{}", u.name, limit(u.soft), limit(u.hard)))
                .map_err(|e| ApiError::bad_request(format!("ulimits: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Params {
        shm_size,
        ulimits,
        tags,
        dockerfile: q
            .get("dockerfile")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
        build_args: build_args
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        labels,
        target: q
            .get("target")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        no_cache: q.bool("nocache"),
        cache_from,
        pull: q.bool("pull"),
        quiet: q.bool("q"),
        platform,
        network,
        extra_hosts,
    })
}

/// `X-Registry-Config`: base64url JSON `{registry: AuthConfig}`.
fn registry_config(header: Option<&str>) -> BTreeMap<String, kiln_registry::Credential> {
    use base64::Engine as _;
    let Some(raw) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return BTreeMap::new();
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .unwrap_or_default();
    let configs: BTreeMap<String, AuthConfig> = serde_json::from_slice(&bytes).unwrap_or_default();
    configs
        .into_iter()
        .filter_map(|(server, config)| {
            let credential = config.credential()?;
            Some((crate::system::registry_host(&server), credential))
        })
        .collect()
}

pub async fn build(daemon: Arc<Daemon>, req: Req) -> Response<Body> {
    let params = match parse_params(&req) {
        Ok(p) => p,
        Err(e) => {
            crate::router::drain(req.body).await;
            return stream::error(&e);
        }
    };
    let credentials = registry_config(req.header("X-Registry-Config"));
    let reader = body_reader(req.body);
    stream::json_stream(
        move |out| async move { run(daemon, params, credentials, reader, out).await },
    )
    .await
}

async fn run(
    daemon: Arc<Daemon>,
    params: Params,
    credentials: BTreeMap<String, kiln_registry::Credential>,
    mut reader: impl std::io::Read + Send + 'static,
    out: Emitter,
) -> Result<(), ApiError> {
    let engine = Arc::clone(&daemon.engine);
    let dockerfile_name = params.dockerfile.clone();
    // dockerd takes cache only from the `cachefrom` images when some are named. kiln's cache
    // is keyed by content, not by image, so it cannot narrow it to theirs; it keeps the
    // difference that matters to clients: when none of them exists, nothing comes from cache.
    let mut no_cache = params.no_cache;
    if !params.cache_from.is_empty() {
        let store = daemon.store().clone();
        let names = params.cache_from.clone();
        no_cache |=
            blocking(move || Ok(!names.iter().any(|n| crate::images::find(&store, n).is_ok())))
                .await?;
    }
    // The names built and the Dockerfile pick the reused context directory.
    let hint = format!(
        "{} {}",
        dockerfile_name.as_deref().unwrap_or("Dockerfile"),
        params
            .tags
            .iter()
            .map(Reference::familiar)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (unpacked, dockerfile, numbering, _lock) = blocking(move || {
        let lock = engine.store.lock_shared()?;
        let unpacked = match engine.unpack_context(&mut reader, &hint) {
            Ok(unpacked) => unpacked,
            Err(e) => {
                // The rest of the body is read, so the client gets the 400, not a reset.
                let _ = std::io::copy(
                    &mut std::io::Read::take(&mut reader, 64 << 20),
                    &mut std::io::sink(),
                );
                return Err(context_error(e));
            }
        };
        let dockerfile = unpacked
            .dockerfile(dockerfile_name.as_deref())
            .map_err(|e| match e {
                SolveError::ReadFile { path, .. } => ApiError::bad_request(format!(
                    "Cannot locate specified Dockerfile: {}",
                    path.display()
                )),
                e => ApiError::from(e),
            })?;
        // Only for the stream's step numbers: a file that cannot be read fails the build later.
        let numbering = std::fs::read_to_string(&dockerfile)
            .ok()
            .and_then(|text| GlobalSteps::of(&text))
            .unwrap_or_default();
        Ok((unpacked, dockerfile, numbering, lock))
    })
    .await?;
    // With labels the engine builds unnamed; the names go on the labelled image.
    let relabel = !params.labels.is_empty();
    let request = BuildRequest {
        context_dir: unpacked.path(),
        dockerfile: Some(dockerfile),
        tags: if relabel {
            Vec::new()
        } else {
            params.tags.clone()
        },
        build_args: params.build_args.clone(),
        target: params.target.clone(),
        network: params.network,
        extra_hosts: params.extra_hosts.clone(),
        allow_network_host: false,
        secrets: BTreeMap::new(),
        no_cache,
        no_cache_filter: Vec::new(),
        pull: params.pull,
        platforms: vec![params.platform.clone()],
        jobs: 0,
        compression: kiln_layer::CompressionRequest::default(),
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        credentials,
        cancel: CancelToken::new(),
        settings: kiln_solve::BuildSettings {
            shm_size: params.shm_size,
            ulimits: params.ulimits.clone(),
            ..Default::default()
        },
        on_run_failure: None,
    };
    // Recorded in the build history like a CLI build (`docs/build-history.md`); a store that
    // cannot take the record does not stop the build.
    let history = {
        let store = daemon.store().clone();
        let inputs = kiln_solve::history::inputs(&request, "(uploaded through the Engine API)");
        blocking(move || {
            let retention = kiln_store::HistoryRetention::from_env().unwrap_or_default();
            Ok(BuildHistory::begin(&store, inputs, retention).ok())
        })
        .await?
        .map(Arc::new)
    };
    let recording = history.clone();
    let progress_out = out.clone();
    let quiet = params.quiet;
    let legacy = LegacyStream::new(numbering);
    if !quiet {
        for line in legacy.start() {
            out.stream(line);
        }
    }
    let legacy = Arc::new(std::sync::Mutex::new(legacy));
    let events = Arc::clone(&legacy);
    let progress: Arc<dyn Fn(ProgressEvent) + Send + Sync> = Arc::new(move |e| {
        if let Some(history) = &recording {
            history.event(&e);
        }
        if quiet {
            return;
        }
        if let ProgressEvent::Pulling { reference } = &e {
            progress_out.status(None, format!("Pulling {reference}"));
            return;
        }
        let mut legacy = events.lock().unwrap_or_else(|e| e.into_inner());
        for line in legacy.lines(e) {
            progress_out.stream(line);
        }
    });
    let result = Arc::clone(&daemon.engine)
        .build_async(request, progress)
        .await;
    if let Some(history) = history {
        // A rename and a directory listing, on this task: the record must say how the build
        // ended before the client hears it. The client sees the build's own outcome; the
        // history's warnings have no place in the legacy stream.
        let _ = history.finish(result.as_ref());
    }
    let result = result.map_err(build_error)?;
    if !quiet {
        let lines = legacy.lock().unwrap_or_else(|e| e.into_inner()).finish();
        for line in lines {
            out.stream(line);
        }
    }
    drop(unpacked);
    let mut image = result.image;
    if relabel {
        let store = daemon.store().clone();
        let labels = params.labels.clone();
        let tags = params.tags.clone();
        image = blocking(move || {
            let mut config = image.config.clone();
            config.config.labels.extend(labels);
            let labelled =
                kiln_images::write_image(&store, &config, image.manifest.layers.clone())?;
            for t in &tags {
                kiln_images::tag(&store, &labelled, t)?;
            }
            Ok(labelled)
        })
        .await?;
    }
    let id = image.config_digest.to_string();
    out.send(&json!({ "aux": { "ID": id } }));
    if params.quiet {
        out.stream(format!("{id}\n"));
    } else {
        out.stream(format!(
            "Successfully built {}\n",
            image.config_digest.short()
        ));
    }
    for t in &params.tags {
        daemon.events.image("tag", &id, Some(&t.familiar()));
        if !params.quiet {
            out.stream(format!("Successfully tagged {}\n", t.familiar()));
        }
    }
    Ok(())
}

/// A context that cannot be unpacked is the client's error: 400 naming the entry.
fn context_error(e: SolveError) -> ApiError {
    match e.kind() {
        kiln_error::ErrorKind::Internal | kiln_error::ErrorKind::Unavailable => ApiError::from(e),
        _ => ApiError::bad_request(format!("invalid build context: {e}")),
    }
}

/// A failed build: a RUN that exits non-zero in dockerd's words (the CLI and docker-py show
/// them), with its exit code as `errorDetail.code` (the docker CLI exits with it).
fn build_error(e: SolveError) -> ApiError {
    match &e {
        SolveError::RunFailed { command, code, .. } => ApiError {
            code: Some(i64::from(*code)),
            ..ApiError::bad_request(format!(
                "The command '{command}' returned a non-zero code: {code}"
            ))
        },
        _ => ApiError::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_gives_credentials_by_registry() {
        use base64::Engine as _;
        let json = r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"},"127.0.0.1:5000":{"auth":"dTpw"},"empty":{}}"#;
        let header = base64::engine::general_purpose::URL_SAFE.encode(json);
        let creds = registry_config(Some(&header));
        assert_eq!(creds.len(), 2);
        assert!(creds.contains_key("docker.io"));
        assert!(creds.contains_key("127.0.0.1:5000"));
        assert!(registry_config(Some("e30=")).is_empty());
        assert!(registry_config(Some("not base64!")).is_empty());
    }
}
