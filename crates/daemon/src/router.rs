//! Routing: every route at `/vX.Y/...` and unversioned, the version checked against what the
//! daemon serves, dockerd's headers on every response, JSON 404 for everything else.
//!
//! Paths are matched on their segments by hand: image names contain `/` and `:`
//! (`/images/localhost:5000/a/b/push`), so a name is "everything between the prefix and the
//! operation's last segment", as gorilla's `{name:.*}` does in dockerd.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

use crate::error::ApiError;
use crate::query::Query;
use crate::stream::{self, Body};
use crate::{API_VERSION, Daemon, MIN_API_VERSION};

/// The largest JSON request body read (auth configs, and the like are a few hundred bytes).
const MAX_JSON_BODY: usize = 1 << 20;

/// What a handler gets: the parsed request.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    /// The path without the version prefix, percent-decoded.
    pub path: String,
    pub query: Query,
    pub headers: hyper::HeaderMap,
    /// hyper's extensions: the connection's `OnUpgrade` for a hijacking handler.
    pub extensions: hyper::http::Extensions,
    pub body: Incoming,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, bounded; an empty body is `null` (dockerd accepts an absent body
    /// where its fields are optional).
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        let bytes = read_limited(self.body, MAX_JSON_BODY).await?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
    }
}

/// Reads a body of at most `limit` bytes.
pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Reads and discards what is left of a request body (at most `DRAIN_LIMIT`), so a client still
/// sending it gets the error response instead of a reset connection.
pub async fn drain(body: Incoming) {
    let _ = read_limited(body, DRAIN_LIMIT).await;
}

/// The most a refused request's body is read for the client's sake.
const DRAIN_LIMIT: usize = 64 << 20;

pub async fn handle(daemon: Arc<Daemon>, req: Request<Incoming>) -> Response<Body> {
    let mut response = match route(daemon, req).await {
        Ok(response) => response,
        Err(err) => stream::error(&err),
    };
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert(
        "Server",
        HeaderValue::from_static(concat!("kiln/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// Splits `/v1.41/x` into the version and `/x`; checks the version.
fn strip_version(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Not a version prefix (a path that merely starts with /v, like /volumes).
        return Ok(path);
    }
    let parsed = parse_version(version).ok_or_else(|| {
        ApiError::bad_request(format!("invalid API version {version:?} in the path"))
    })?;
    if parsed > parse_version(API_VERSION).unwrap_or_default() {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if parsed < parse_version(MIN_API_VERSION).unwrap_or_default() {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(tail)
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn percent_decode(path: &str) -> Result<String, ApiError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad_request(format!("malformed path {path:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("malformed path {path:?}")))
}

/// Routes whose answer is dockerd's 404 for kiln: Swarm, plugins, BuildKit's session.
const NOT_SUPPORTED: &[&str] = &[
    "/swarm",
    "/services",
    "/tasks",
    "/nodes",
    "/secrets",
    "/configs",
    "/plugins",
    "/session",
    "/grpc",
    "/distribution",
];

/// The largest request head served. hyper bounds its read buffer, but a head that arrives in
/// one read is parsed whole, so the limit is also checked here on what was parsed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

async fn route(daemon: Arc<Daemon>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let head_bytes: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > MAX_HEAD_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request head of {head_bytes} bytes is larger than {MAX_HEAD_BYTES}"),
        ));
    }
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_owned();
    let path = percent_decode(strip_version(&raw_path)?)?;
    let req = Req {
        method: parts.method,
        path,
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
        extensions: parts.extensions,
        body,
    };
    let path = req.path.clone();
    let m = req.method.clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (&m, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(crate::system::ping(&m)),
        (&Method::GET, ["version"]) => Ok(crate::system::version(&daemon)),
        (&Method::GET, ["info"]) => crate::system::info(&daemon).await,
        (&Method::POST, ["auth"]) => crate::system::auth(&daemon, req).await,
        (&Method::GET, ["events"]) => crate::system::events(&daemon, &req.query).await,
        (&Method::POST, ["build"]) => Ok(crate::build::build(daemon, req).await),
        (&Method::GET, ["images", "json"]) => crate::images::list(&daemon, &req.query).await,
        (&Method::POST, ["images", "create"]) => crate::images::create(daemon, req).await,
        (&Method::GET, ["images", "get"]) => {
            let names: Vec<String> = req
                .query
                .all("names")
                .into_iter()
                .map(str::to_owned)
                .collect();
            crate::images::save(daemon, names).await
        }
        (&Method::POST, ["images", "load"]) => crate::images::load(daemon, req).await,
        (&Method::GET, ["images", "search"]) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "image search is not supported by kiln",
        )),
        (&Method::POST, ["images", "prune"]) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "image prune is not supported through the API yet; use kiln prune",
        )),
        (_, ["images", name @ .., op]) if !name.is_empty() => {
            let name = name.join("/");
            match (&m, *op) {
                (&Method::GET, "json") => crate::images::inspect(&daemon, &name).await,
                (&Method::GET, "history") => crate::images::history(&daemon, &name).await,
                (&Method::POST, "push") => crate::images::push(daemon, &name, req).await,
                (&Method::POST, "tag") => crate::images::tag(&daemon, &name, &req.query).await,
                (&Method::GET, "get") => crate::images::save(daemon, vec![name]).await,
                (&Method::DELETE, _) => {
                    crate::images::delete(&daemon, &format!("{name}/{op}"), &req.query).await
                }
                _ => Err(page_not_found()),
            }
        }
        (&Method::POST, ["containers", "create"]) => crate::containers::create(daemon, req).await,
        (&Method::GET, ["containers", "json"]) => crate::containers::list(daemon, &req.query).await,
        (_, ["containers", id, op]) => {
            let id = (*id).to_owned();
            let q = &req.query;
            match (&m, *op) {
                (&Method::GET, "json") => crate::containers::inspect(daemon, &id).await,
                (&Method::POST, "start") => crate::containers::start(daemon, &id).await,
                (&Method::POST, "wait") => crate::containers::wait(daemon, &id, q).await,
                (&Method::POST, "kill") => crate::containers::kill(daemon, &id, q).await,
                (&Method::POST, "stop") => crate::containers::stop(daemon, &id, q).await,
                (&Method::POST, "restart") => crate::containers::restart(daemon, &id, q).await,
                (&Method::POST, "rename") => crate::containers::rename(daemon, &id, q).await,
                (&Method::POST, "resize") => crate::containers::resize(daemon, &id, q).await,
                (&Method::POST, "attach") => crate::containers::attach(daemon, &id, req).await,
                (&Method::GET, "logs") => crate::containers::logs(daemon, &id, q).await,
                (&Method::POST, "exec") => crate::exec::create(daemon, &id, req).await,
                _ => Err(page_not_found()),
            }
        }
        (&Method::POST, ["exec", id, "start"]) => crate::exec::start(daemon, id, req).await,
        (&Method::POST, ["exec", id, "resize"]) => {
            crate::exec::resize(daemon, id, &req.query).await
        }
        (&Method::GET, ["exec", id, "json"]) => crate::exec::inspect(daemon, id).await,
        (&Method::POST, ["commit"]) => crate::containers::commit(daemon, req).await,
        (&Method::POST, ["volumes", "create"]) => crate::volumes::create(daemon, req).await,
        (&Method::GET, ["volumes"]) => crate::volumes::list(daemon, &req.query).await,
        (&Method::GET, ["volumes", name]) => crate::volumes::inspect(daemon, name).await,
        (&Method::DELETE, ["volumes", name]) => {
            crate::volumes::remove(daemon, name, &req.query).await
        }
        // Networks (crates/network through `networks.rs`).
        (&Method::GET, ["networks"]) => crate::networks::list(daemon, &req.query).await,
        (&Method::POST, ["networks", "create"]) => crate::networks::create(daemon, req).await,
        (&Method::POST, ["networks", "prune"]) => crate::networks::prune(daemon, &req.query).await,
        (&Method::GET, ["networks", id]) => crate::networks::inspect(daemon, id).await,
        (&Method::DELETE, ["networks", id]) => crate::networks::remove(daemon, id).await,
        (&Method::POST, ["networks", id, "connect"]) => {
            crate::networks::connect(daemon, id, req, true).await
        }
        (&Method::POST, ["networks", id, "disconnect"]) => {
            crate::networks::connect(daemon, id, req, false).await
        }
        // dockerd's answer while Swarm is inactive, which docker-py's network tests' teardown
        // (`leave_swarm(force=True)`) takes as "nothing to leave"; other Swarm routes 404.
        (&Method::POST, ["swarm", "leave"]) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not part of a swarm",
        )),
        (&Method::DELETE, ["containers", id]) => {
            crate::containers::remove(daemon, id, &req.query).await
        }
        (&Method::DELETE, ["images", name]) => {
            crate::images::delete(&daemon, name, &req.query).await
        }
        _ if NOT_SUPPORTED
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/"))) =>
        {
            Err(ApiError::not_found(format!(
                "{path} is not supported by kiln (no Swarm, plugins or BuildKit sessions)"
            )))
        }
        _ => Err(page_not_found()),
    }
}

fn page_not_found() -> ApiError {
    ApiError::not_found("page not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped_and_checked() {
        assert_eq!(strip_version("/v1.41/info").unwrap(), "/info");
        assert_eq!(strip_version("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(strip_version("/info").unwrap(), "/info");
        assert_eq!(strip_version("/volumes").unwrap(), "/volumes");
        let new = strip_version("/v1.51/info").unwrap_err();
        assert_eq!(new.status, StatusCode::BAD_REQUEST);
        assert!(
            new.message
                .contains("too new. Maximum supported API version is 1.41")
        );
        assert!(
            strip_version("/v1.12/info")
                .unwrap_err()
                .message
                .contains("too old")
        );
        assert!(strip_version("/v1/info").is_err());
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(
            percent_decode("/images/a%2Fb:1/json").unwrap(),
            "/images/a/b:1/json"
        );
        assert!(percent_decode("/x%zz").is_err());
        assert!(percent_decode("/x%ff").is_err());
    }
}
