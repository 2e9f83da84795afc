//! The client and its request-sending seam: choosing `http`/`https` and the TLS material of each
//! registry, building API URLs, authenticating (Basic, or Bearer tokens from the registry's token
//! server), retrying what can be retried, and turning failures into errors that name what was
//! being fetched.
//!
//! Every registry request goes through [`RegistryClient::send`], so pull and push share one
//! authentication and retry policy. URL rules are in `urls`, response checks in `response`, the
//! repository a request is about in `repo`, and `kiln login`'s check in `transport/login.rs`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::auth::{
    Challenge, TokenCache, TokenRequest, fetch_token, parse_challenge, repository_scope,
    unauthorized,
};
use crate::credentials::{Credential, CredentialStore};
use crate::error::{RegistryError, is_retryable_status};
use crate::reference::Reference;
pub(crate) use crate::repo::Repo;
use crate::tls::{host_dir, load_host_tls};

mod fetch;
mod login;
use crate::response::status_error;
pub(crate) use crate::response::{check_status, error_chain, error_message_from_body, read_capped};
use crate::urls::{host_port, same_origin};
pub(crate) use crate::urls::{resolve_location, scheme_for, upload_completion_url};

/// Docker's default directory of per-registry TLS material.
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `host[:port]` of registries that may be reached over plain `http://`. Loopback registries
    /// always may. Either kind is still reached over `https://` when it has a certs.d directory.
    pub insecure_registries: Vec<String>,
    pub user_agent: String,
    /// Where credentials come from (`$DOCKER_CONFIG/config.json` and helpers); `None` for
    /// anonymous access only.
    pub credentials: Option<CredentialStore>,
    /// Per-registry CAs and client certificates: `<certs_dir>/<host:port>/`.
    pub certs_dir: PathBuf,
    pub connect_timeout: Duration,
    /// How long a transfer may go without receiving a byte before it counts as stalled.
    pub read_timeout: Duration,
    /// Tries per request (1 = no retries) for failures worth retrying.
    pub max_attempts: u32,
    /// The first retry waits about this long; each further one twice as long, with jitter.
    pub retry_base_delay: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_owned(),
            credentials: Some(CredentialStore::from_env()),
            certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            max_attempts: 5,
            retry_base_delay: Duration::from_millis(500),
        }
    }
}

/// The longest wait between tries, whatever `Retry-After` or the backoff say.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// An OCI distribution client. Cheap to share by reference across concurrent pulls and pushes;
/// tokens obtained by one request are reused by the others.
#[derive(Debug)]
pub struct RegistryClient {
    config: RegistryConfig,
    tokens: TokenCache,
    /// HTTP clients by host: each carries that host's certs.d CAs and client identity.
    clients: Mutex<HashMap<String, reqwest::Client>>,
    /// Credentials looked up per registry key, so a helper runs once per process and registry.
    credentials: Mutex<HashMap<String, Option<Credential>>>,
    /// Registries that answered with a Basic challenge: later requests send credentials up front.
    basic_registries: Mutex<HashSet<String>>,
}

/// What authenticates one request.
enum Authorization {
    Bearer(String),
    Basic { username: String, password: String },
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<RegistryClient, RegistryError> {
        // reqwest is built without a default crypto provider; the error only says one is already
        // installed (by us earlier, or by the embedding program), which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = RegistryClient {
            config,
            tokens: TokenCache::default(),
            clients: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
            basic_registries: Mutex::new(HashSet::new()),
        };
        // Build one client now so a broken TLS setup shows at start-up, not on first use.
        client.build_http(None)?;
        Ok(client)
    }

    /// A client for one call (a daemon request) that authenticates with `credentials` (by
    /// registry: `docker.io`, `host:port`) ahead of config.json and its helpers, which still
    /// serve the registries not named. It shares this client's connections but not its tokens:
    /// a token got with these credentials never serves another call, nor one got by another
    /// call this one, so concurrent calls with different identities stay apart.
    pub fn with_credentials(
        &self,
        credentials: impl IntoIterator<Item = (String, Credential)>,
    ) -> RegistryClient {
        let given = credentials
            .into_iter()
            .map(|(registry, credential)| {
                (crate::credentials::server_key(&registry), Some(credential))
            })
            .collect();
        let clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        RegistryClient {
            config: self.config.clone(),
            tokens: TokenCache::default(),
            clients: Mutex::new(clients),
            credentials: Mutex::new(given),
            basic_registries: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// A reqwest client with the system roots plus `host`'s certs.d CAs and client identity.
    fn build_http(&self, host: Option<&str>) -> Result<reqwest::Client, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(self.config.user_agent.clone())
            .connect_timeout(self.config.connect_timeout)
            // A stalled transfer fails instead of hanging forever; a slow but moving one is fine.
            .read_timeout(self.config.read_timeout);
        if let Some(host) = host {
            let tls_error = |message: String| RegistryError::TlsConfig {
                registry: host.to_owned(),
                dir: host_dir(&self.config.certs_dir, host),
                message,
            };
            if let Some(tls) = load_host_tls(&self.config.certs_dir, host).map_err(tls_error)? {
                builder = builder.tls_certs_merge(tls.ca_certificates);
                if let Some(identity) = tls.identity {
                    builder = builder.identity(identity);
                }
            }
        }
        builder.build().map_err(RegistryError::Client)
    }

    /// The HTTP client for requests to `url`'s host.
    pub(crate) fn http_for(&self, url: &Url) -> Result<reqwest::Client, RegistryError> {
        let host = host_port(url);
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&host) {
            return Ok(client.clone());
        }
        let client = self.build_http(Some(&host))?;
        clients.insert(host, client.clone());
        Ok(client)
    }

    pub(crate) fn repo(
        &self,
        reference: &Reference,
        actions: &'static str,
    ) -> Result<Repo, RegistryError> {
        let mut repo = self.registry_repo(reference.registry(), reference.api_host())?;
        repo.repository = reference.repository().to_owned();
        repo.scopes = vec![repository_scope(reference.repository(), actions)];
        Ok(repo)
    }

    /// A `Repo` for registry-wide requests (`GET /v2/`): no repository, no scopes.
    fn registry_repo(&self, registry: &str, api_host: &str) -> Result<Repo, RegistryError> {
        let scheme = scheme_for(
            api_host,
            &self.config.insecure_registries,
            host_dir(&self.config.certs_dir, api_host).is_dir(),
        );
        let base = Url::parse(&format!("{scheme}://{api_host}/v2/")).map_err(|e| {
            RegistryError::Protocol {
                registry: registry.to_owned(),
                repository: String::new(),
                object: "registry address".to_owned(),
                message: format!("{api_host} does not make a valid URL: {e}"),
            }
        })?;
        Ok(Repo {
            registry: registry.to_owned(),
            repository: String::new(),
            base,
            scopes: Vec::new(),
        })
    }

    /// The credentials for `registry`: those given for this call, else the stored ones, looked
    /// up once per client.
    async fn credential_for(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let key = crate::credentials::server_key(registry);
        // First: a call's own credentials count also when there is no config.json to read.
        if let Some(cached) = self.lock_credentials().get(&key) {
            return Ok(cached.clone());
        }
        let Some(store) = self.config.credentials.clone() else {
            return Ok(None);
        };
        // Helpers are programs; run them off the async threads.
        let lookup_key = key.clone();
        let found = tokio::task::spawn_blocking(move || store.get(&lookup_key))
            .await
            .map_err(|e| RegistryError::Auth {
                registry: registry.to_owned(),
                message: format!("credential lookup task failed: {e}"),
            })?
            .map_err(|source| RegistryError::Credentials {
                registry: registry.to_owned(),
                source,
            })?;
        self.lock_credentials().insert(key, found.clone());
        Ok(found)
    }

    fn lock_credentials(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Credential>>> {
        self.credentials
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_basic_registry(&self, registry: &str) -> bool {
        self.basic_registries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(registry)
    }

    /// Sends the request `build` makes, authenticating as the registry asks and retrying
    /// failures worth retrying (see [`RegistryError::is_retryable`]) with exponential backoff,
    /// or after the `Retry-After` the registry gives. `build` is called again for each try, so
    /// streamed bodies are recreated rather than replayed. Returns the response whatever its
    /// status, except a retryable one on the last try; see [`check_status`].
    pub(crate) async fn send(
        &self,
        repo: &Repo,
        object: &str,
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        self.with_retries(repo, object, async || {
            self.send_authorized(repo, object, &build).await
        })
        .await
    }

    /// Sends the request once (answering an auth challenge), without retrying failures: for
    /// requests whose retry is more than a resend (a blob upload restarts from its POST).
    pub(crate) async fn send_once_authorized(
        &self,
        repo: &Repo,
        object: &str,
        build: impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let response = self.send_authorized(repo, object, &build).await?;
        if is_retryable_status(response.status()) {
            return Err(status_error(repo, object, response).await);
        }
        Ok(response)
    }

    /// Runs `attempt` until it gives a response with a final status, fails with an error that is
    /// not worth retrying, or has been tried `max_attempts` times.
    pub(crate) async fn with_retries(
        &self,
        repo: &Repo,
        object: &str,
        attempt: impl AsyncFn() -> Result<Response, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let max_attempts = self.config.max_attempts.max(1);
        let mut tries = 1;
        loop {
            let result = attempt().await;
            let retry_after = match &result {
                Ok(response) if is_retryable_status(response.status()) => {
                    retry_after(response.headers())
                }
                Err(error) if error.is_retryable() => None,
                _ => return result,
            };
            if tries >= max_attempts {
                let last = match result {
                    Ok(response) => status_error(repo, object, response).await,
                    Err(error) => error,
                };
                return Err(if tries > 1 {
                    RegistryError::GaveUp {
                        attempts: tries,
                        last: Box::new(last),
                    }
                } else {
                    last
                });
            }
            tokio::time::sleep(self.retry_delay(tries, retry_after)).await;
            tries += 1;
        }
    }

    /// How long to wait after failed try number `tries`.
    pub(crate) fn retry_delay(&self, tries: u32, retry_after: Option<Duration>) -> Duration {
        let delay = retry_after.unwrap_or_else(|| {
            let exponential = self
                .config
                .retry_base_delay
                .saturating_mul(1 << tries.saturating_sub(1).min(16));
            // Full jitter over the upper half, so clients that failed together spread out.
            exponential / 2 + exponential.mul_f64(jitter() / 2.0)
        });
        delay.min(MAX_RETRY_DELAY)
    }

    /// One try of a request: with cached authorization, and once more after answering a 401's
    /// challenge (a first request, or a token that expired).
    async fn send_authorized(
        &self,
        repo: &Repo,
        object: &str,
        build: &impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let scope_key = repo.scope_key();
        let cached = if self.is_basic_registry(&repo.registry) {
            self.basic_authorization(&repo.registry).await?
        } else {
            self.tokens
                .get(&repo.registry, &scope_key)
                .map(Authorization::Bearer)
        };
        let response = self.send_once(repo, object, build, cached.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenges = challenges_of(&response);
        let credential = self.credential_for(&repo.registry).await?;
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm, service)),
            Challenge::Basic { .. } => None,
        });
        if let Some((realm, service)) = bearer {
            self.tokens.remove(&repo.registry, &scope_key);
            let realm_url = Url::parse(realm).map_err(|e| RegistryError::Auth {
                registry: repo.registry.clone(),
                message: format!("token realm {realm:?} is not a URL: {e}"),
            })?;
            let token = fetch_token(
                &self.http_for(&realm_url)?,
                &repo.registry,
                &TokenRequest {
                    realm,
                    service: service.as_deref(),
                    scopes: &repo.scopes,
                    credential: credential.as_ref(),
                    offline: false,
                },
            )
            .await?;
            let value = token.value.clone();
            self.tokens.put(&repo.registry, &scope_key, token);
            let response = self
                .send_once(repo, object, build, Some(&Authorization::Bearer(value)))
                .await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                if credential.is_none() {
                    return Err(unauthorized(&repo.registry, None));
                }
                let message = error_message_from_body(&response.text().await.unwrap_or_default());
                return Err(RegistryError::Auth {
                    registry: repo.registry.clone(),
                    message: format!("{object}: access denied for {scope_key}: {message}"),
                });
            }
            return Ok(response);
        }
        if challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }))
        {
            let Some(Credential::Basic { .. }) = credential else {
                return Err(unauthorized(&repo.registry, credential.as_ref()));
            };
            self.basic_registries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(repo.registry.clone());
            let authorization = self.basic_authorization(&repo.registry).await?;
            let response = self
                .send_once(repo, object, build, authorization.as_ref())
                .await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                return Err(unauthorized(&repo.registry, credential.as_ref()));
            }
            return Ok(response);
        }
        Err(RegistryError::Auth {
            registry: repo.registry.clone(),
            message: format!(
                "{object}: 401 Unauthorized without a usable WWW-Authenticate challenge"
            ),
        })
    }

    async fn basic_authorization(
        &self,
        registry: &str,
    ) -> Result<Option<Authorization>, RegistryError> {
        Ok(match self.credential_for(registry).await? {
            Some(Credential::Basic { username, password }) => {
                Some(Authorization::Basic { username, password })
            }
            _ => None,
        })
    }

    async fn send_once(
        &self,
        repo: &Repo,
        object: &str,
        build: &impl Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError>,
        authorization: Option<&Authorization>,
    ) -> Result<Response, RegistryError> {
        let (http, request) = build(&self.http_for(&repo.base)?)?.build_split();
        let mut request = request.map_err(RegistryError::Client)?;
        // Credentials go only to the registry's own host, never to another host an upload
        // Location points at (containerd CVE-2020-15157). reqwest drops them on redirects to
        // other hosts by itself.
        if let Some(authorization) = authorization
            && same_origin(request.url(), &repo.base)
        {
            let value = match authorization {
                Authorization::Bearer(token) => format!("Bearer {token}"),
                Authorization::Basic { username, password } => {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    format!("Basic {encoded}")
                }
            };
            let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                RegistryError::Auth {
                    registry: repo.registry.clone(),
                    message: "the credentials contain characters not allowed in a header".into(),
                }
            })?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        http.execute(request).await.map_err(|e| {
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

fn challenges_of(response: &Response) -> Vec<Challenge> {
    response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .collect()
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// A number in [0, 1) that differs between calls and processes, for spreading retries. Not for
/// anything that needs unpredictability.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(std::time::Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> kiln_image::Digest {
        kiln_image::Digest::of(b"x")
    }

    #[test]
    fn retry_delays_grow_with_jitter_honour_retry_after_and_are_capped() {
        let client = RegistryClient::new(RegistryConfig {
            retry_base_delay: Duration::from_millis(100),
            credentials: None,
            ..RegistryConfig::default()
        })
        .unwrap();
        for tries in 1..=4u32 {
            let full = Duration::from_millis(100 * (1 << (tries - 1)));
            let delay = client.retry_delay(tries, None);
            assert!(delay >= full / 2 && delay <= full, "try {tries}: {delay:?}");
        }
        assert_eq!(
            client.retry_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            client.retry_delay(1, Some(Duration::from_secs(3600))),
            MAX_RETRY_DELAY
        );
        assert_eq!(client.retry_delay(40, None), MAX_RETRY_DELAY);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
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
}
