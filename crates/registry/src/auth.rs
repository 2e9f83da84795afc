//! Registry authentication: parsing `WWW-Authenticate` challenges, the Bearer token flow of the
//! distribution token spec (anonymous, Basic credentials on a GET, or an identity token POSTed as
//! an OAuth2 refresh token), and a cache of tokens per (registry, scopes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::credentials::Credential;
use crate::error::RegistryError;
use crate::transport::error_chain;

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
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Tokens without `expires_in` are valid for 60 s per the token spec.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a little early so a token does not expire between lookup and use.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// The client id sent to token servers (the spec asks for one on refresh-token requests).
const CLIENT_ID: &str = "kiln";

/// A token and when to stop using it.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    expires: Instant,
    /// A refresh token, when one was asked for (`kiln login`) and the server issued it.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// What to ask a Bearer challenge's realm for.
#[derive(Debug)]
pub(crate) struct TokenRequest<'a> {
    pub realm: &'a str,
    pub service: Option<&'a str>,
    /// Empty for a bare login check (`GET /v2/`).
    pub scopes: &'a [String],
    pub credential: Option<&'a Credential>,
    /// Ask for a refresh token too (what `docker login` does with `offline_token=true`).
    pub offline: bool,
}

/// Gets a token from the realm of a Bearer challenge: anonymously, with Basic credentials on a
/// GET, or by POSTing an identity (refresh) token, as the Docker CLI does.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    request: &TokenRequest<'_>,
) -> Result<Token, RegistryError> {
    let auth_err = |message: String| RegistryError::Auth {
        registry: registry.to_owned(),
        message,
    };
    // The token server itself failed: the credentials were never judged.
    let unavailable = |message: String| RegistryError::AuthUnavailable {
        registry: registry.to_owned(),
        message,
    };
    let realm = request.realm;
    let mut url = reqwest::Url::parse(realm)
        .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
    let scope_text = request.scopes.join(" ");
    let builder = match request.credential {
        Some(Credential::IdentityToken(refresh_token)) => {
            let mut form = reqwest::Url::parse("form:").expect("a static URL parses");
            {
                let mut pairs = form.query_pairs_mut();
                pairs.append_pair("grant_type", "refresh_token");
                pairs.append_pair("refresh_token", refresh_token);
                pairs.append_pair("client_id", CLIENT_ID);
                if let Some(service) = request.service {
                    pairs.append_pair("service", service);
                }
                if !scope_text.is_empty() {
                    pairs.append_pair("scope", &scope_text);
                }
                if request.offline {
                    pairs.append_pair("access_type", "offline");
                }
            }
            http.post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.query().unwrap_or_default().to_owned())
        }
        credential => {
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = request.service {
                    query.append_pair("service", service);
                }
                for scope in request.scopes {
                    query.append_pair("scope", scope);
                }
                if let Some(Credential::Basic { username, .. }) = credential {
                    query.append_pair("account", username);
                }
                if request.offline {
                    query.append_pair("offline_token", "true");
                    query.append_pair("client_id", CLIENT_ID);
                }
            }
            let builder = http.get(url.clone());
            match credential {
                Some(Credential::Basic { username, password }) => {
                    builder.basic_auth(username, Some(password))
                }
                _ => builder,
            }
        }
    };
    // The URL carries no secret (credentials go in a header or the POST body), so it may be shown.
    let response = builder.send().await.map_err(|e| {
        unavailable(format!(
            "token request to {realm} failed: {}",
            error_chain(&e)
        ))
    })?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(unauthorized(registry, request.credential));
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let detail = crate::transport::error_message_from_body(&body);
        let message =
            format!("token server {realm} answered {status} for scope {scope_text:?}: {detail}");
        return Err(if crate::error::is_retryable_status(status) {
            unavailable(message)
        } else {
            auth_err(message)
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("reading the token from {realm}: {e}")))?;
    parse_token_response(&body, Instant::now())
        .map_err(|m| auth_err(format!("token server {realm}: {m}")))
}

/// The error for credentials a registry or its token server turned down, or for none where some
/// are needed. It names the registry and never retries.
pub(crate) fn unauthorized(registry: &str, credential: Option<&Credential>) -> RegistryError {
    let hint = match credential {
        Some(Credential::Basic { .. }) => "wrong username or password?".to_owned(),
        Some(Credential::IdentityToken(_)) => {
            format!("the stored identity token was rejected; run `kiln login {registry}` again")
        }
        None => format!("no credentials; run `kiln login {registry}`"),
    };
    RegistryError::Unauthorized {
        registry: registry.to_owned(),
        hint,
    }
}

fn parse_token_response(body: &[u8], now: Instant) -> Result<Token, String> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("invalid token response: {e}"))?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no token")?;
    let lifetime = parsed
        .expires_in
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    let expires = now + lifetime.saturating_sub(EXPIRY_MARGIN);
    Ok(Token {
        value,
        expires,
        refresh_token: parsed.refresh_token.filter(|t| !t.is_empty()),
    })
}

/// Tokens by (registry, scopes). Shared by all requests of one client, so concurrent blob
/// transfers of one repository fetch one token.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, String), Token>>,
}

impl TokenCache {
    pub fn get(&self, registry: &str, scopes: &str) -> Option<String> {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens
            .get(&(registry.to_owned(), scopes.to_owned()))
            .filter(|t| t.expires > Instant::now())
            .map(|t| t.value.clone())
    }

    pub fn put(&self, registry: &str, scopes: &str, token: Token) {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.insert((registry.to_owned(), scopes.to_owned()), token);
    }

    /// Forgets a token the registry refused, so the next request fetches a new one.
    pub fn remove(&self, registry: &str, scopes: &str) {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.remove(&(registry.to_owned(), scopes.to_owned()));
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
        let t =
            parse_token_response(br#"{"access_token":"xyz","refresh_token":"r1"}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.refresh_token.as_deref(), Some("r1"));
        assert!(!format!("{t:?}").contains("xyz"), "Debug hides the token");
        assert_eq!(t.expires, now + Duration::from_secs(50));
        assert!(parse_token_response(br#"{"token":""}"#, now).is_err());
        assert!(parse_token_response(b"<html>", now).is_err());
    }

    #[test]
    fn unauthorized_errors_name_the_registry_and_give_a_hint() {
        let basic = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert_eq!(
            unauthorized("127.0.0.1:5001", Some(&basic)).to_string(),
            "unauthorized: authentication required at 127.0.0.1:5001 (wrong username or password?)"
        );
        let none = unauthorized("r.lan", None).to_string();
        assert!(none.contains("kiln login r.lan"), "{none}");
    }

    #[test]
    fn cache_is_keyed_by_registry_and_scopes_and_drops_expired() {
        let cache = TokenCache::default();
        let live = Token {
            value: "t1".into(),
            expires: Instant::now() + Duration::from_secs(60),
            refresh_token: None,
        };
        cache.put("r", "repository:a/b:pull", live);
        assert_eq!(cache.get("r", "repository:a/b:pull").as_deref(), Some("t1"));
        assert_eq!(cache.get("r", "repository:a/b:pull,push"), None);
        assert_eq!(cache.get("r", "repository:a/c:pull"), None);
        assert_eq!(cache.get("q", "repository:a/b:pull"), None);
        cache.remove("r", "repository:a/b:pull");
        assert_eq!(cache.get("r", "repository:a/b:pull"), None);
        let expired = Token {
            value: "old".into(),
            expires: Instant::now() - Duration::from_secs(1),
            refresh_token: None,
        };
        cache.put("r", "repository:a/b:pull", expired);
        assert_eq!(cache.get("r", "repository:a/b:pull"), None);
    }
}
