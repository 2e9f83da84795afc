//! The client and its request-sending seam: choosing `http`/`https`, building API URLs, attaching
//! and renewing tokens, and turning failures into errors that name what was being fetched.
//!
//! Every registry request goes through [`RegistryClient::send`], so retries with backoff or
//! credentials can later be added there once for pull and push alike.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{Challenge, TokenCache, fetch_token, parse_challenge, repository_scope};
use crate::error::RegistryError;
use crate::reference::Reference;

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host[:port]` of registries that are reached over plain `http://`. Loopback registries
    /// always are.
    pub insecure_registries: Vec<String>,
    pub user_agent: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// An OCI distribution client. Cheap to share by reference across concurrent pulls and pushes;
/// tokens obtained by one request are reused by the others.
#[derive(Debug)]
pub struct RegistryClient {
    pub(crate) http: reqwest::Client,
    config: RegistryConfig,
    tokens: TokenCache,
}

/// The repository a request is about and the access it needs, which selects its token.
#[derive(Debug, Clone)]
pub(crate) struct Repo {
    /// The registry as named in references (`docker.io`), for messages and token caching.
    pub registry: String,
    pub repository: String,
    /// `http(s)://<api host>/v2/`.
    pub base: Url,
    pub actions: &'static str,
}

impl Repo {
    /// `<base><repository>/<path>`.
    pub fn url(&self, path: &str) -> Url {
        let relative = format!("{}/{path}", self.repository);
        // Repository names are validated to `[a-z0-9._/-]`, and paths are built from digests and
        // validated tags, so joining cannot fail or escape the base.
        self.base
            .join(&relative)
            .unwrap_or_else(|_| self.base.clone())
    }

    pub fn not_found(&self, object: &str, message: String) -> RegistryError {
        RegistryError::NotFound {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            message,
        }
    }

    pub fn protocol(&self, object: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            message: message.into(),
        }
    }

    pub fn transfer(&self, object: &str, error: &reqwest::Error) -> RegistryError {
        RegistryError::Transfer {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            detail: error_chain(error),
        }
    }
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<RegistryClient, RegistryError> {
        // reqwest is built without a default crypto provider; the error only says one is already
        // installed (by us earlier, or by the embedding program), which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            // A stalled transfer fails instead of hanging forever; a slow but moving one is fine.
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(RegistryError::Client)?;
        Ok(RegistryClient {
            http,
            config,
            tokens: TokenCache::default(),
        })
    }

    pub(crate) fn repo(
        &self,
        reference: &Reference,
        actions: &'static str,
    ) -> Result<Repo, RegistryError> {
        let host = reference.api_host();
        let scheme = scheme_for(host, &self.config.insecure_registries);
        let base =
            Url::parse(&format!("{scheme}://{host}/v2/")).map_err(|e| RegistryError::Protocol {
                registry: reference.registry().to_owned(),
                repository: reference.repository().to_owned(),
                object: "registry address".to_owned(),
                message: format!("{host} does not make a valid URL: {e}"),
            })?;
        Ok(Repo {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            base,
            actions,
        })
    }

    /// Sends the request `build` makes, answering a Bearer challenge once with an anonymous
    /// token and retrying. `build` is called again for the retry, so streamed bodies are
    /// recreated rather than replayed. Returns the response whatever its status; see
    /// [`check_status`].
    pub(crate) async fn send(
        &self,
        repo: &Repo,
        object: &str,
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let cached = self
            .tokens
            .get(&repo.registry, &repo.repository, repo.actions);
        let response = self
            .send_once(repo, object, &build, cached.as_deref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .collect();
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm, service)),
            Challenge::Basic { .. } => None,
        });
        let Some((realm, service)) = bearer else {
            let message = if challenges.is_empty() {
                format!("{object}: 401 Unauthorized without a usable WWW-Authenticate challenge")
            } else {
                format!(
                    "{object}: the registry requires credentials (username/password), which kiln does not support yet"
                )
            };
            return Err(RegistryError::Auth {
                registry: repo.registry.clone(),
                message,
            });
        };
        let scope = repository_scope(&repo.repository, repo.actions);
        let token = fetch_token(
            &self.http,
            &repo.registry,
            realm,
            service.as_deref(),
            &scope,
        )
        .await?;
        let value = token.value.clone();
        self.tokens
            .put(&repo.registry, &repo.repository, repo.actions, token);
        let response = self.send_once(repo, object, &build, Some(&value)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let message = error_message_from_body(&response.text().await.unwrap_or_default());
            return Err(RegistryError::Auth {
                registry: repo.registry.clone(),
                message: format!(
                    "{object}: access denied for {scope} with an anonymous token: {message}"
                ),
            });
        }
        Ok(response)
    }

    async fn send_once(
        &self,
        repo: &Repo,
        object: &str,
        build: &impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
        token: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let mut request = build(&self.http)?;
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send().await.map_err(|e| {
            if e.is_connect() {
                RegistryError::Unreachable {
                    registry: repo.registry.clone(),
                    url: repo.base.to_string(),
                    detail: error_chain(&e),
                }
            } else {
                repo.transfer(object, &e)
            }
        })
    }
}

/// Passes a response with one of the `expected` statuses; turns any other into an error carrying
/// the registry's own message.
pub(crate) async fn check_status(
    repo: &Repo,
    object: &str,
    response: Response,
    expected: &[StatusCode],
) -> Result<Response, RegistryError> {
    let status = response.status();
    if expected.contains(&status) {
        return Ok(response);
    }
    let body = read_capped(repo, object, response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = error_message_from_body(&String::from_utf8_lossy(&body));
    if status == StatusCode::NOT_FOUND {
        return Err(repo.not_found(object, message));
    }
    Err(RegistryError::Status {
        registry: repo.registry.clone(),
        repository: repo.repository.clone(),
        object: object.to_owned(),
        status,
        message,
    })
}

const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Reads a whole body that should be small (manifests, error documents), failing past `limit`
/// bytes so a misbehaving server cannot exhaust memory.
pub(crate) async fn read_capped(
    repo: &Repo,
    object: &str,
    response: Response,
    limit: u64,
) -> Result<Bytes, RegistryError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(repo.protocol(
            object,
            format!("response is larger than the {limit}-byte limit"),
        ));
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| repo.transfer(object, &e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(repo.protocol(
                object,
                format!("response is larger than the {limit}-byte limit"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[derive(Deserialize)]
struct ErrorDocument {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The text of a distribution-spec error body (`{"errors":[{"code","message"}]}`) as
/// `CODE: message; …`, or a trimmed excerpt of any other body.
pub(crate) fn error_message_from_body(body: &str) -> String {
    if let Ok(doc) = serde_json::from_str::<ErrorDocument>(body) {
        let parts: Vec<String> = doc
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let trimmed = body.trim();
    match trimmed.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

/// A reqwest error with its causes, which hold the useful part ("Connection refused").
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `http` for loopback registries and those configured insecure, `https` otherwise.
pub(crate) fn scheme_for(host: &str, insecure_registries: &[String]) -> &'static str {
    let is_listed = insecure_registries
        .iter()
        .any(|entry| entry == host || (!entry.contains(':') && host_without_port(host) == entry));
    if is_listed || is_loopback(host) {
        "http"
    } else {
        "https"
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split_once(']').map_or(host, |(addr, _)| addr);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback(host: &str) -> bool {
    let name = host_without_port(host);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Resolves an upload `Location` header (absolute, or relative to the request) to a URL.
pub(crate) fn resolve_location(request_url: &Url, location: &str) -> Result<Url, String> {
    request_url
        .join(location)
        .map_err(|e| format!("Location {location:?} is not a valid URL: {e}"))
}

/// The URL that completes an upload: the location with `digest=<digest>` added to its query,
/// keeping the upload state parameters registries put there.
pub(crate) fn upload_completion_url(location: &Url, digest: &kiln_image::Digest) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> kiln_image::Digest {
        kiln_image::Digest::of(b"x")
    }

    #[test]
    fn loopback_and_listed_registries_use_http() {
        let none: &[String] = &[];
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert_eq!(scheme_for(host, none), "http", "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert_eq!(scheme_for(host, none), "https", "{host}");
        }
        let listed = vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()];
        assert_eq!(scheme_for("reg.lan:5000", &listed), "http");
        assert_eq!(
            scheme_for("reg.lan:6000", &listed),
            "https",
            "a listed port is exact"
        );
        assert_eq!(
            scheme_for("other.lan:7000", &listed),
            "http",
            "an entry without port covers all ports"
        );
    }

    #[test]
    fn api_urls_are_built_under_v2() {
        let client = RegistryClient::new(RegistryConfig::default()).unwrap();
        let r: Reference = "busybox:1".parse().unwrap();
        let repo = client.repo(&r, "pull").unwrap();
        assert_eq!(
            repo.url("manifests/1").as_str(),
            "https://registry-1.docker.io/v2/library/busybox/manifests/1"
        );
        let r: Reference = "127.0.0.1:5000/a/b".parse().unwrap();
        let repo = client.repo(&r, "pull,push").unwrap();
        assert_eq!(repo.registry, "127.0.0.1:5000");
        assert_eq!(
            repo.url(&format!("blobs/{}", digest())).as_str(),
            format!("http://127.0.0.1:5000/v2/a/b/blobs/{}", digest())
        );
        assert_eq!(
            repo.url("blobs/uploads/").as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/"
        );
    }

    #[test]
    fn locations_resolve_relative_and_absolute() {
        let request = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/").unwrap();
        let rel = resolve_location(&request, "/v2/a/b/blobs/uploads/abc?_state=xyz").unwrap();
        assert_eq!(
            rel.as_str(),
            "http://127.0.0.1:5000/v2/a/b/blobs/uploads/abc?_state=xyz"
        );
        let abs = resolve_location(&request, "https://upload.example.com/u/1").unwrap();
        assert_eq!(abs.as_str(), "https://upload.example.com/u/1");
        assert!(resolve_location(&request, "http://[bad").is_err());
    }

    #[test]
    fn completion_url_appends_digest_to_any_existing_query() {
        let d = digest();
        let plain = Url::parse("http://r/v2/a/blobs/uploads/u1").unwrap();
        assert_eq!(
            upload_completion_url(&plain, &d).as_str(),
            format!("http://r/v2/a/blobs/uploads/u1?digest=sha256%3A{}", d.hex())
        );
        let with_state = Url::parse("http://r/v2/a/blobs/uploads/u1?_state=s%3D").unwrap();
        assert_eq!(
            upload_completion_url(&with_state, &d).as_str(),
            format!(
                "http://r/v2/a/blobs/uploads/u1?_state=s%3D&digest=sha256%3A{}",
                d.hex()
            )
        );
    }

    #[test]
    fn error_bodies_become_messages() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},{"code":"DENIED","message":""}]}"#;
        assert_eq!(
            error_message_from_body(body),
            "MANIFEST_UNKNOWN: manifest unknown; DENIED"
        );
        assert_eq!(error_message_from_body("  plain text \n"), "plain text");
        assert_eq!(error_message_from_body(""), "");
        let long = "x".repeat(500);
        assert_eq!(error_message_from_body(&long).chars().count(), 201);
    }
}
