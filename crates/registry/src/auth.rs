//! Registry authentication: parsing `WWW-Authenticate` challenges, the anonymous Bearer token
//! flow of the distribution spec, and a cache of tokens per (registry, repository, actions).
//!
//! Credentials (Basic auth, `~/.docker/config.json`, credential helpers) are a later addition:
//! they plug in at [`fetch_token`] (which would send them to the realm) and in answering a
//! [`Challenge::Basic`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::RegistryError;

/// What a registry asked for in a 401's `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic {
        realm: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` value: a scheme then `key=value` or `key="quoted value"` pairs.
/// Unknown schemes give `None`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm"),
        })
    } else {
        None
    }
}

fn parse_params(mut rest: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        params.push((key, value));
    }
    params
}

/// The scope string of a token request: `repository:<name>:<actions>`.
pub(crate) fn repository_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens without `expires_in` are valid for 60 s per the token spec.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a little early so a token does not expire between lookup and use.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A token and when to stop using it.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    expires: Instant,
}

/// Asks the realm of a Bearer challenge for an anonymous token covering `scope`.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    realm: &str,
    service: Option<&str>,
    scope: &str,
) -> Result<Token, RegistryError> {
    let auth_err = |message: String| RegistryError::Auth {
        registry: registry.to_owned(),
        message,
    };
    let mut url = reqwest::Url::parse(realm)
        .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = service {
            query.append_pair("service", service);
        }
        query.append_pair("scope", scope);
    }
    let response = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| auth_err(format!("token request to {url} failed: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let detail = crate::transport::error_message_from_body(&body);
        return Err(auth_err(format!(
            "token server {realm} answered {status} for scope {scope:?}: {detail}"
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| auth_err(format!("reading the token from {realm}: {e}")))?;
    parse_token_response(&body, Instant::now())
        .map_err(|m| auth_err(format!("token server {realm}: {m}")))
}

fn parse_token_response(body: &[u8], now: Instant) -> Result<Token, String> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("invalid token response: {e}"))?;
    let value = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no token")?;
    let lifetime = parsed
        .expires_in
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    let expires = now + lifetime.saturating_sub(EXPIRY_MARGIN);
    Ok(Token { value, expires })
}

/// Tokens by (registry, repository, actions). Shared by all requests of one client.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, String, String), Token>>,
}

impl TokenCache {
    pub fn get(&self, registry: &str, repository: &str, actions: &str) -> Option<String> {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (
            registry.to_owned(),
            repository.to_owned(),
            actions.to_owned(),
        );
        tokens
            .get(&key)
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }

    pub fn put(&self, registry: &str, repository: &str, actions: &str, token: Token) {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.insert(
            (
                registry.to_owned(),
                repository.to_owned(),
                actions.to_owned(),
            ),
            token,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn parses_spacing_unquoted_values_escapes_and_case() {
        let c = parse_challenge(
            r#"bearer  realm = "https://a/t\"x" , service=reg , error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://a/t\"x".into(),
                service: Some("reg".into()),
                scope: None
            })
        );
        // A comma inside quotes is part of the value (scopes list actions with commas).
        let c = parse_challenge(r#"Bearer realm="https://a/t",scope="repository:x:pull,push""#);
        assert!(
            matches!(c, Some(Challenge::Bearer { scope: Some(s), .. }) if s == "repository:x:pull,push")
        );
    }

    #[test]
    fn basic_unknown_and_incomplete_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge(r#"Bearer service="x""#),
            None,
            "a Bearer challenge needs a realm"
        );
        assert_eq!(
            parse_challenge(r#"Bearer realm="unterminated"#),
            Some(Challenge::Bearer {
                realm: "unterminated".into(),
                service: None,
                scope: None
            })
        );
    }

    #[test]
    fn token_response_forms_and_expiry() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.expires, now + Duration::from_secs(290));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.expires, now + Duration::from_secs(50));
        assert!(parse_token_response(br#"{"token":""}"#, now).is_err());
        assert!(parse_token_response(b"<html>", now).is_err());
    }

    #[test]
    fn cache_is_keyed_by_registry_repository_and_actions_and_drops_expired() {
        let cache = TokenCache::default();
        let live = Token {
            value: "t1".into(),
            expires: Instant::now() + Duration::from_secs(60),
        };
        cache.put("r", "a/b", "pull", live);
        assert_eq!(cache.get("r", "a/b", "pull").as_deref(), Some("t1"));
        assert_eq!(cache.get("r", "a/b", "pull,push"), None);
        assert_eq!(cache.get("r", "a/c", "pull"), None);
        assert_eq!(cache.get("q", "a/b", "pull"), None);
        let expired = Token {
            value: "old".into(),
            expires: Instant::now() - Duration::from_secs(1),
        };
        cache.put("r", "a/b", "pull", expired);
        assert_eq!(cache.get("r", "a/b", "pull"), None);
    }
}
