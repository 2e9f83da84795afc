//! Misbehaving and authenticating registries, simulated by a tiny HTTP server on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    FakeRequest, FakeResponse, blobs_in, build_image, fake_registry, free_port, tmp_is_empty,
};
use kiln_image::{Descriptor, Digest, Manifest, Platform, media_type, to_canonical_json};
use kiln_registry::{Reference, RegistryClient, RegistryConfig, RegistryError};
use kiln_store::Store;

/// Anonymous (no config.json is read) and quick to retry.
fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        credentials: None,
        retry_base_delay: std::time::Duration::from_millis(5),
        ..RegistryConfig::default()
    })
    .unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// A manifest whose config is `config` and single layer is `layer`, as the registry claims.
fn manifest_for(config: &[u8], layer: &[u8]) -> Vec<u8> {
    to_canonical_json(&Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            Digest::of(config),
            config.len() as u64,
        ),
        vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            Digest::of(layer),
            layer.len() as u64,
        )],
    ))
}

const CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

#[tokio::test]
async fn a_blob_with_wrong_bytes_fails_and_stores_nothing() {
    let manifest = manifest_for(CONFIG, b"the real layer");
    let addr = fake_registry(move |req| match req.path.as_str() {
        "/v2/lying/app/manifests/latest" => {
            FakeResponse::ok(media_type::OCI_MANIFEST, manifest.clone())
        }
        p if p == format!("/v2/lying/app/blobs/{}", Digest::of(CONFIG)) => {
            FakeResponse::ok("application/octet-stream", CONFIG)
        }
        // Same length as the real layer, different bytes.
        p if p.starts_with("/v2/lying/app/blobs/") => {
            FakeResponse::ok("application/octet-stream", *b"a forged layer")
        }
        _ => FakeResponse::status("404 Not Found"),
    })
    .await;
    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/lying/app").parse().unwrap();
    let err = client()
        .pull(
            &store,
            &reference,
            &Platform::new("linux", "amd64"),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("layer {}", Digest::of(b"the real layer")))
            && text.contains("lying/app"),
        "{text}"
    );
    // The config was verified and may stay; no manifest, no forged layer.
    assert_eq!(blobs_in(&store), vec![Digest::of(CONFIG).hex().to_owned()]);
    assert!(tmp_is_empty(&store));
}

#[tokio::test]
async fn an_oversized_blob_is_cut_off() {
    let layer = b"short".to_vec();
    let manifest = manifest_for(CONFIG, &layer);
    let layer_path = format!("/v2/big/app/blobs/{}", Digest::of(&layer));
    let addr = fake_registry(move |req| match req.path.as_str() {
        "/v2/big/app/manifests/latest" => {
            FakeResponse::ok(media_type::OCI_MANIFEST, manifest.clone())
        }
        // Chunked, so the size is only discovered while streaming.
        p if p == layer_path => FakeResponse {
            chunked: true,
            ..FakeResponse::ok("application/octet-stream", vec![b'x'; 1 << 20])
        },
        p if p.starts_with("/v2/big/app/blobs/") => {
            FakeResponse::ok("application/octet-stream", CONFIG)
        }
        _ => FakeResponse::status("404 Not Found"),
    })
    .await;
    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/big/app").parse().unwrap();
    let err = client()
        .pull(
            &store,
            &reference,
            &Platform::new("linux", "amd64"),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("registry sent more than the 5 bytes the manifest says"),
        "{err}"
    );
    assert!(!store.has_blob(&Digest::of(&layer)));
    assert!(tmp_is_empty(&store));
}

#[tokio::test]
async fn a_manifest_not_matching_the_pinned_digest_is_rejected() {
    let served = manifest_for(CONFIG, b"layer");
    let addr = fake_registry(move |req| {
        if req.path.starts_with("/v2/x/manifests/") {
            FakeResponse::ok(media_type::OCI_MANIFEST, served.clone())
        } else {
            FakeResponse::status("404 Not Found")
        }
    })
    .await;
    let wanted = Digest::of(b"some other manifest");
    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/x@{wanted}").parse().unwrap();
    let err = client()
        .pull(
            &store,
            &reference,
            &Platform::new("linux", "amd64"),
            &|_| {},
        )
        .await
        .unwrap_err();
    match &err {
        RegistryError::DigestMismatch { expected, .. } => assert_eq!(expected, &wanted),
        other => panic!("{other:?}"),
    }
    assert!(blobs_in(&store).is_empty());
}

#[tokio::test]
async fn schema1_manifests_are_refused_clearly() {
    let addr = fake_registry(|_| {
        FakeResponse::ok(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            *br#"{"schemaVersion":1,"name":"old","tag":"latest","fsLayers":[],"history":[]}"#,
        )
    })
    .await;
    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/old").parse().unwrap();
    let err = client()
        .pull(
            &store,
            &reference,
            &Platform::new("linux", "amd64"),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::UnsupportedManifest { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("schema 1"), "{err}");
}

#[tokio::test]
async fn anonymous_bearer_tokens_are_fetched_once_and_reused() {
    let manifest = manifest_for(CONFIG, b"layer bytes");
    let token_requests = Arc::new(AtomicUsize::new(0));
    let counter = token_requests.clone();
    // The realm is on the same fake server, so its address must be known before it starts.
    let realm = Arc::new(std::sync::OnceLock::<String>::new());
    let realm_in_handler = realm.clone();
    let addr = fake_registry(move |req| {
        if req.path.starts_with("/token?") {
            counter.fetch_add(1, Ordering::SeqCst);
            // A wrong token request fails the pull, which fails the test.
            if !req.path.contains("scope=repository%3Aprivate%2Fapp%3Apull")
                || !req.path.contains("service=fake")
            {
                return FakeResponse::status("400 Bad Request");
            }
            return FakeResponse::ok(
                "application/json",
                *br#"{"token":"secret-token","expires_in":300}"#,
            );
        }
        if req.header("authorization") != Some("Bearer secret-token") {
            let challenge = format!(
                r#"Bearer realm="{}",service="fake",scope="repository:private/app:pull""#,
                realm_in_handler.get().unwrap()
            );
            return FakeResponse {
                status: "401 Unauthorized",
                headers: vec![("WWW-Authenticate".into(), challenge)],
                body:
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_vec(),
                chunked: false,
            };
        }
        match req.path.as_str() {
            "/v2/private/app/manifests/latest" => {
                FakeResponse::ok(media_type::OCI_MANIFEST, manifest.clone())
            }
            p if p == format!("/v2/private/app/blobs/{}", Digest::of(CONFIG)) => {
                FakeResponse::ok("application/octet-stream", CONFIG)
            }
            p if p == format!("/v2/private/app/blobs/{}", Digest::of(b"layer bytes")) => {
                FakeResponse::ok("application/octet-stream", *b"layer bytes")
            }
            _ => FakeResponse::status("404 Not Found"),
        }
    })
    .await;
    realm.set(format!("http://{addr}/token")).unwrap();

    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/private/app").parse().unwrap();
    let pulled = client_pull(&store, &reference).await.unwrap();
    assert_eq!(pulled.config_digest, Digest::of(CONFIG));
    assert!(store.has_blob(&Digest::of(b"layer bytes")));
    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        1,
        "one token serves manifest, config and layer"
    );
}

async fn client_pull(
    store: &Store,
    reference: &Reference,
) -> Result<kiln_registry::PulledImage, RegistryError> {
    client()
        .pull(store, reference, &Platform::new("linux", "amd64"), &|_| {})
        .await
}

#[tokio::test]
async fn a_refused_connection_says_the_registry_is_unreachable() {
    let port = free_port();
    let (_d, store) = new_store();
    let reference: Reference = format!("127.0.0.1:{port}/some/app:1").parse().unwrap();
    let err = client_pull(&store, &reference).await.unwrap_err();
    let RegistryError::GaveUp { attempts: 5, last } = &err else {
        panic!("expected retries to give up: {err:?}");
    };
    assert!(
        matches!(**last, RegistryError::Unreachable { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), kiln_error::ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "registry 127.0.0.1:{port} is unreachable at http://127.0.0.1:{port}/v2/"
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn push_follows_a_relative_location_and_keeps_its_query() {
    let (_d, store) = new_store();
    let image = build_image(&store, &Platform::new("linux", "amd64"), b"pushed");
    let seen: Arc<Mutex<Vec<FakeRequest>>> = Arc::default();
    let log = seen.clone();
    let addr = fake_registry(move |req| {
        log.lock().unwrap().push(req.clone());
        match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", _) => FakeResponse::status("404 Not Found"),
            ("POST", "/v2/team/app/blobs/uploads/") => FakeResponse {
                headers: vec![("Location".into(), "/upload/u1?_state=abc".into())],
                ..FakeResponse::status("202 Accepted")
            },
            ("PUT", p) if p.starts_with("/upload/u1?_state=abc&digest=sha256%3A") => {
                FakeResponse::status("201 Created")
            }
            ("PUT", "/v2/team/app/manifests/v2") => FakeResponse::status("201 Created"),
            _ => FakeResponse::status("400 Bad Request"),
        }
    })
    .await;
    let dest: Reference = format!("{addr}/team/app:v2").parse().unwrap();
    let digest = client()
        .push(&store, &image.manifest_digest, &dest, &|_| {})
        .await
        .unwrap();
    assert_eq!(digest, image.manifest_digest);

    let seen = seen.lock().unwrap();
    let layer_put = seen
        .iter()
        .find(|r| {
            r.path
                == format!(
                    "/upload/u1?_state=abc&digest=sha256%3A{}",
                    image.layer_digest.hex()
                )
        })
        .expect("the layer was PUT to the resolved Location");
    assert_eq!(
        layer_put.body,
        store.read_blob(&image.layer_digest).unwrap()
    );
    assert_eq!(
        layer_put.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        layer_put.header("content-length"),
        Some(layer_put.body.len().to_string().as_str())
    );
    let manifest_put = seen
        .iter()
        .find(|r| r.path == "/v2/team/app/manifests/v2")
        .unwrap();
    assert_eq!(
        manifest_put.body,
        store.read_blob(&image.manifest_digest).unwrap(),
        "manifest bytes are sent as stored"
    );
    assert_eq!(
        manifest_put.header("content-type"),
        Some(media_type::OCI_MANIFEST)
    );
}

#[tokio::test]
async fn registry_error_messages_are_reported_with_the_object() {
    let (_d, store) = new_store();
    let image = build_image(&store, &Platform::new("linux", "amd64"), b"denied");
    let addr = fake_registry(|req| match req.method.as_str() {
        "HEAD" => FakeResponse::status("404 Not Found"),
        _ => FakeResponse {
            body: br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#.to_vec(),
            ..FakeResponse::status("403 Forbidden")
        },
    })
    .await;
    let dest: Reference = format!("{addr}/team/app:v1").parse().unwrap();
    let err = client()
        .push(&store, &image.manifest_digest, &dest, &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Status { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!("{addr}/team/app: upload of blob sha256:")),
        "{text}"
    );
    assert!(
        text.ends_with("403 Forbidden: DENIED: requested access to the resource is denied"),
        "{text}"
    );
}

#[tokio::test]
async fn a_basic_auth_challenge_says_credentials_are_needed() {
    let addr = fake_registry(|_| FakeResponse {
        headers: vec![(
            "WWW-Authenticate".into(),
            r#"Basic realm="Registry""#.into(),
        )],
        ..FakeResponse::status("401 Unauthorized")
    })
    .await;
    let (_d, store) = new_store();
    let reference: Reference = format!("{addr}/private/app").parse().unwrap();
    let err = client_pull(&store, &reference).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "unauthorized: authentication required at {addr} (no credentials; run `kiln login {addr}`)"
        )
    );
}
