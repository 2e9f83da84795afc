//! Credentials in the auth flows and the retry policy, against a tiny scripted HTTP server on
//! 127.0.0.1 (the real registry's flows are in tests/e2e/registry_auth.rs).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{FakeResponse, fake_registry};
use kiln_image::{Digest, Platform, media_type};
use kiln_registry::{
    Credential, CredentialStore, Reference, RegistryClient, RegistryConfig, RegistryError,
};
use kiln_store::Store;

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

fn manifest() -> Vec<u8> {
    kiln_image::to_canonical_json(&kiln_image::Manifest::oci(
        kiln_image::Descriptor::new(
            media_type::OCI_CONFIG,
            Digest::of(CONFIG),
            CONFIG.len() as u64,
        ),
        vec![],
    ))
}

/// A client whose config.json (in `dir`) holds `credential` for `registry`.
fn client_with(
    dir: &std::path::Path,
    registry: &str,
    credential: Option<&Credential>,
) -> RegistryClient {
    let store = CredentialStore::at(dir);
    if let Some(credential) = credential {
        store.store(registry, credential).unwrap();
    }
    RegistryClient::new(RegistryConfig {
        credentials: Some(store),
        retry_base_delay: Duration::from_millis(5),
        ..RegistryConfig::default()
    })
    .unwrap()
}

/// Serves the manifest and config of `app` (an image without layers) when `authorized` says so.
fn serve_image(path: &str) -> Option<FakeResponse> {
    match path {
        "/v2/app/manifests/latest" => Some(FakeResponse::ok(media_type::OCI_MANIFEST, manifest())),
        p if p == format!("/v2/app/blobs/{}", Digest::of(CONFIG)) => {
            Some(FakeResponse::ok("application/octet-stream", CONFIG))
        }
        _ => None,
    }
}

async fn pull(client: &RegistryClient, addr: &str) -> Result<(), RegistryError> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let reference: Reference = format!("{addr}/app").parse().unwrap();
    client
        .pull(
            &store,
            &reference,
            &Platform::new("linux", "amd64"),
            &|_| {},
        )
        .await
        .map(drop)
}

fn challenge(realm: &OnceLock<String>) -> FakeResponse {
    FakeResponse {
        headers: vec![(
            "WWW-Authenticate".into(),
            format!(r#"Bearer realm="{}",service="fake""#, realm.get().unwrap()),
        )],
        ..FakeResponse::status("401 Unauthorized")
    }
}

#[tokio::test]
async fn basic_credentials_are_sent_after_a_basic_challenge_and_then_up_front() {
    let unauthenticated = Arc::new(AtomicUsize::new(0));
    let seen = unauthenticated.clone();
    // "alice:pw" in base64.
    let addr = fake_registry(move |req| {
        if req.header("authorization") != Some("Basic YWxpY2U6cHc=") {
            seen.fetch_add(1, Ordering::SeqCst);
            return FakeResponse {
                headers: vec![("WWW-Authenticate".into(), r#"Basic realm="r""#.into())],
                ..FakeResponse::status("401 Unauthorized")
            };
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let alice = Credential::Basic {
        username: "alice".into(),
        password: "pw".into(),
    };
    pull(&client_with(dir.path(), &addr, Some(&alice)), &addr)
        .await
        .unwrap();
    assert_eq!(
        unauthenticated.load(Ordering::SeqCst),
        1,
        "only the first request is challenged"
    );
}

#[tokio::test]
async fn wrong_basic_credentials_fail_at_once_naming_the_registry() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let addr = fake_registry(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        FakeResponse {
            headers: vec![("WWW-Authenticate".into(), r#"Basic realm="r""#.into())],
            ..FakeResponse::status("401 Unauthorized")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = Credential::Basic {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = pull(&client_with(dir.path(), &addr, Some(&wrong)), &addr)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("unauthorized: authentication required at {addr} (wrong username or password?)")
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "one challenge, one refusal, no retries"
    );
}

#[tokio::test]
async fn bearer_realm_gets_basic_credentials_and_the_account_and_wrong_ones_are_not_retried() {
    let realm = Arc::new(OnceLock::<String>::new());
    let realm_in_handler = realm.clone();
    let token_requests = Arc::new(Mutex::new(Vec::<(String, Option<String>)>::new()));
    let log = token_requests.clone();
    let addr = fake_registry(move |req| {
        if req.path.starts_with("/token?") {
            let authorization = req.header("authorization").map(str::to_owned);
            log.lock()
                .unwrap()
                .push((req.path.clone(), authorization.clone()));
            // "bob:right" in base64.
            if authorization.as_deref() != Some("Basic Ym9iOnJpZ2h0") {
                return FakeResponse::status("401 Unauthorized");
            }
            return FakeResponse::ok(
                "application/json",
                *br#"{"token":"t-bob","expires_in":300}"#,
            );
        }
        if req.header("authorization") != Some("Bearer t-bob") {
            return challenge(&realm_in_handler);
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    realm.set(format!("http://{addr}/token")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let bob = Credential::Basic {
        username: "bob".into(),
        password: "right".into(),
    };
    pull(&client_with(dir.path(), &addr, Some(&bob)), &addr)
        .await
        .unwrap();
    {
        let requests = token_requests.lock().unwrap();
        assert_eq!(requests.len(), 1, "the token is reused: {requests:?}");
        let (path, _) = &requests[0];
        assert!(path.contains("service=fake"), "{path}");
        assert!(path.contains("scope=repository%3Aapp%3Apull"), "{path}");
        assert!(path.contains("account=bob"), "{path}");
        assert!(
            !path.contains("right"),
            "the password is not in the URL: {path}"
        );
    }

    token_requests.lock().unwrap().clear();
    let dir = tempfile::tempdir().unwrap();
    let wrong = Credential::Basic {
        username: "bob".into(),
        password: "wrong".into(),
    };
    let err = pull(&client_with(dir.path(), &addr, Some(&wrong)), &addr)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.kind(), kiln_error::ErrorKind::Unauthorized);
    assert!(
        err.to_string().contains("wrong username or password?"),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong\""), "{err}");
    assert_eq!(token_requests.lock().unwrap().len(), 1, "no retry storm");
}

#[tokio::test]
async fn identity_tokens_are_posted_as_refresh_tokens() {
    let realm = Arc::new(OnceLock::<String>::new());
    let realm_in_handler = realm.clone();
    let posts = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = posts.clone();
    let addr = fake_registry(move |req| {
        if req.path == "/token" {
            let body = String::from_utf8_lossy(&req.body).into_owned();
            log.lock().unwrap().push(format!("{} {body}", req.method));
            if req.method != "POST" || !body.contains("refresh_token=rt-1") {
                return FakeResponse::status("401 Unauthorized");
            }
            return FakeResponse::ok(
                "application/json",
                *br#"{"access_token":"t-rt","expires_in":300}"#,
            );
        }
        if req.header("authorization") != Some("Bearer t-rt") {
            return challenge(&realm_in_handler);
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    realm.set(format!("http://{addr}/token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = Credential::IdentityToken("rt-1".into());
    pull(&client_with(dir.path(), &addr, Some(&token)), &addr)
        .await
        .unwrap();
    let posts = posts.lock().unwrap();
    assert_eq!(posts.len(), 1, "{posts:?}");
    for part in [
        "grant_type=refresh_token",
        "service=fake",
        "scope=repository%3Aapp%3Apull",
        "client_id=kiln",
    ] {
        assert!(posts[0].contains(part), "{part} in {}", posts[0]);
    }
}

#[tokio::test]
async fn unavailable_and_rate_limited_requests_are_retried() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let addr = fake_registry(move |req| {
        match counter.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => return FakeResponse::status("503 Service Unavailable"),
            2 => {
                return FakeResponse {
                    headers: vec![("Retry-After".into(), "1".into())],
                    ..FakeResponse::status("429 Too Many Requests")
                };
            }
            _ => {}
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    pull(&client_with(dir.path(), &addr, None), &addr)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        5,
        "3 failures, then manifest and config"
    );
}

#[tokio::test]
async fn a_registry_that_keeps_failing_gives_up_naming_registry_repository_and_blob() {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let config_path = format!("/v2/app/blobs/{}", Digest::of(CONFIG));
    let addr = fake_registry(move |req| {
        if req.path == config_path {
            counter.fetch_add(1, Ordering::SeqCst);
            return FakeResponse::status("502 Bad Gateway");
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let err = pull(&client_with(dir.path(), &addr, None), &addr)
        .await
        .unwrap_err();
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    assert_eq!(err.kind(), kiln_error::ErrorKind::Unavailable);
    assert_eq!(
        err.to_string(),
        format!(
            "{addr}/app: config {}: 502 Bad Gateway (gave up after 5 attempts)",
            Digest::of(CONFIG)
        )
    );
}

#[tokio::test]
async fn login_checks_credentials_against_v2_and_keeps_refresh_tokens() {
    let realm = Arc::new(OnceLock::<String>::new());
    let realm_in_handler = realm.clone();
    let addr = fake_registry(move |req| {
        if req.path.starts_with("/token?") {
            if req.header("authorization") != Some("Basic Ym9iOnJpZ2h0") {
                return FakeResponse::status("401 Unauthorized");
            }
            assert!(req.path.contains("offline_token=true"), "{}", req.path);
            return FakeResponse::ok(
                "application/json",
                *br#"{"token":"t","refresh_token":"rt-new","expires_in":60}"#,
            );
        }
        if req.path == "/v2/" && req.header("authorization") == Some("Bearer t") {
            return FakeResponse::ok("application/json", *b"{}");
        }
        challenge(&realm_in_handler)
    })
    .await;
    realm.set(format!("http://{addr}/token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client_with(dir.path(), &addr, None);
    let bob = Credential::Basic {
        username: "bob".into(),
        password: "right".into(),
    };
    assert_eq!(
        client.login(&addr, &bob).await.unwrap(),
        Some(Credential::IdentityToken("rt-new".into()))
    );
    let wrong = Credential::Basic {
        username: "bob".into(),
        password: "bad".into(),
    };
    let err = client.login(&addr, &wrong).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn per_call_credentials_win_over_config_json_for_that_call_only() {
    // "alice:pw" in base64: the only account.
    let addr = fake_registry(move |req| {
        if req.header("authorization") != Some("Basic YWxpY2U6cHc=") {
            return FakeResponse {
                headers: vec![("WWW-Authenticate".into(), r#"Basic realm="r""#.into())],
                ..FakeResponse::status("401 Unauthorized")
            };
        }
        serve_image(&req.path).unwrap_or_else(|| FakeResponse::status("404 Not Found"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = Credential::Basic {
        username: "alice".into(),
        password: "nope".into(),
    };
    let alice = Credential::Basic {
        username: "alice".into(),
        password: "pw".into(),
    };
    // config.json holds a wrong password; one call brings the right one, another a wrong one,
    // at the same time, through clients made from the same shared client.
    let shared = client_with(dir.path(), &addr, Some(&wrong));
    let right_call = shared.with_credentials([(addr.clone(), alice)]);
    let other_call = shared.with_credentials([(
        addr.clone(),
        Credential::Basic {
            username: "mallory".into(),
            password: "guess".into(),
        },
    )]);
    let (right, other) = tokio::join!(pull(&right_call, &addr), pull(&other_call, &addr));
    right.unwrap();
    assert!(
        matches!(other, Err(RegistryError::Unauthorized { .. })),
        "{other:?}"
    );
    // Neither the shared client nor a later call without credentials learnt alice's.
    let err = pull(&shared, &addr).await.unwrap_err();
    assert!(err.to_string().starts_with("unauthorized"), "{err}");
    let err = pull(&shared.with_credentials([]), &addr).await.unwrap_err();
    assert!(err.to_string().starts_with("unauthorized"), "{err}");

    // A client that reads no config.json at all (a daemon's) still uses a call's credentials.
    let bare = RegistryClient::new(RegistryConfig {
        credentials: None,
        ..RegistryConfig::default()
    })
    .unwrap();
    let alice = Credential::Basic {
        username: "alice".into(),
        password: "pw".into(),
    };
    pull(&bare.with_credentials([(addr.clone(), alice)]), &addr)
        .await
        .unwrap();
}
