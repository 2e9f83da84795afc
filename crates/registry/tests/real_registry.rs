//! Push and pull against the real CNCF distribution registry (`docker-registry`) on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::{TestRegistry, blobs_in, build_image};
use kiln_image::{Descriptor, Index, Platform, media_type, to_canonical_json};
use kiln_registry::{
    PullEvent, PushEvent, Reference, RegistryClient, RegistryConfig, RegistryError,
};
use kiln_store::Store;

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default()).unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

/// Collects events so tests can look at what happened.
struct Recorder<E>(Mutex<Vec<E>>);

impl<E: Clone> Recorder<E> {
    fn new() -> Self {
        Recorder(Mutex::new(Vec::new()))
    }
    fn record(&self, event: E) {
        self.0.lock().unwrap().push(event);
    }
    fn events(&self) -> Vec<E> {
        self.0.lock().unwrap().clone()
    }
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64")
}

#[tokio::test]
async fn push_then_pull_round_trips_exact_bytes() {
    let registry = TestRegistry::start();
    let (_a, source) = new_store();
    let image = build_image(&source, &amd64(), b"hello from kiln\n");
    let dest = reference(&format!("{}/test/app:v1", registry.addr));
    let client = client();

    let pushed = Recorder::new();
    let digest = client
        .push(&source, &image.manifest_digest, &dest, &|e| {
            pushed.record(e)
        })
        .await
        .unwrap();
    assert_eq!(digest, image.manifest_digest);
    let uploads: Vec<_> = pushed
        .events()
        .into_iter()
        .filter(|e| matches!(e, PushEvent::BlobUploaded { .. }))
        .collect();
    assert_eq!(
        uploads.len(),
        2,
        "config and layer are uploaded: {:?}",
        pushed.events()
    );
    assert!(pushed.events().contains(&PushEvent::ManifestPushed {
        digest: digest.clone(),
        reference: "v1".into()
    }));

    let (_b, target) = new_store();
    let pulled = Recorder::new();
    let image_pulled = client
        .pull(&target, &dest, &amd64(), &|e| pulled.record(e))
        .await
        .unwrap();
    assert_eq!(image_pulled.manifest_digest, image.manifest_digest);
    assert_eq!(image_pulled.config_digest, image.config_digest);
    assert_eq!(image_pulled.index_digest, None);
    assert_eq!(image_pulled.config.architecture, "amd64");
    assert_eq!(image_pulled.manifest.layers[0].digest, image.layer_digest);
    for digest in [
        &image.manifest_digest,
        &image.config_digest,
        &image.layer_digest,
    ] {
        assert_eq!(
            target.read_blob(digest).unwrap(),
            source.read_blob(digest).unwrap(),
            "{digest}"
        );
    }
    assert_eq!(blobs_in(&target), blobs_in(&source));
    assert_eq!(
        pulled.events(),
        vec![
            PullEvent::Resolved {
                digest: image.manifest_digest.clone()
            },
            PullEvent::LayerStart {
                digest: image.layer_digest.clone(),
                size: source.blob_size(&image.layer_digest).unwrap()
            },
            PullEvent::LayerDone {
                digest: image.layer_digest.clone()
            },
        ]
    );

    let again = Recorder::new();
    client
        .pull(&target, &dest, &amd64(), &|e| again.record(e))
        .await
        .unwrap();
    assert!(
        again.events().contains(&PullEvent::LayerCached {
            digest: image.layer_digest.clone()
        }),
        "{:?}",
        again.events()
    );

    assert_eq!(
        client.resolve_manifest_digest(&dest).await.unwrap(),
        image.manifest_digest
    );
}

#[tokio::test]
async fn pushing_again_skips_blobs_the_registry_has() {
    let registry = TestRegistry::start();
    let (_a, source) = new_store();
    let image = build_image(&source, &amd64(), b"same content");
    let client = client();
    let first = reference(&format!("{}/test/app:one", registry.addr));
    client
        .push(&source, &image.manifest_digest, &first, &|_| {})
        .await
        .unwrap();

    let events = Recorder::new();
    let second = reference(&format!("{}/test/app:two", registry.addr));
    client
        .push(&source, &image.manifest_digest, &second, &|e| {
            events.record(e)
        })
        .await
        .unwrap();
    let events = events.events();
    assert!(
        events.contains(&PushEvent::BlobExists {
            digest: image.config_digest.clone()
        }),
        "{events:?}"
    );
    assert!(
        events.contains(&PushEvent::BlobExists {
            digest: image.layer_digest.clone()
        }),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, PushEvent::BlobUploadStart { .. })),
        "{events:?}"
    );
    assert_eq!(
        client.resolve_manifest_digest(&second).await.unwrap(),
        image.manifest_digest
    );
}

#[tokio::test]
async fn pull_by_digest_and_missing_tag() {
    let registry = TestRegistry::start();
    let (_a, source) = new_store();
    let image = build_image(&source, &amd64(), b"pinned");
    let client = client();
    client
        .push(
            &source,
            &image.manifest_digest,
            &reference(&format!("{}/test/pinned:latest", registry.addr)),
            &|_| {},
        )
        .await
        .unwrap();

    let (_b, target) = new_store();
    let by_digest = reference(&format!(
        "{}/test/pinned@{}",
        registry.addr, image.manifest_digest
    ));
    let pulled = client
        .pull(&target, &by_digest, &amd64(), &|_| {})
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, image.manifest_digest);
    assert!(target.has_blob(&image.layer_digest));

    let missing = reference(&format!("{}/test/pinned:nope", registry.addr));
    let err = client
        .pull(&target, &missing, &amd64(), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    assert_eq!(err.kind(), kiln_error::ErrorKind::NotFound);
    let text = err.to_string();
    assert!(
        text.contains("test/pinned")
            && text.contains("manifest nope")
            && text.contains("MANIFEST_UNKNOWN"),
        "{text}"
    );
}

#[tokio::test]
async fn index_selects_the_requested_platform() {
    let registry = TestRegistry::start();
    let (_a, source) = new_store();
    let arm64 = Platform {
        variant: Some("v8".into()),
        ..Platform::new("linux", "arm64")
    };
    let amd_image = build_image(&source, &amd64(), b"x86");
    let arm_image = build_image(&source, &arm64, b"arm");
    let entry = |image: &common::BuiltImage, platform: &Platform| image.index_entry(platform);
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![entry(&amd_image, &amd64()), entry(&arm_image, &arm64)],
        annotations: BTreeMap::new(),
    };
    let index_digest = source.write_blob(&to_canonical_json(&index)).unwrap();
    let dest = reference(&format!("{}/test/multi:latest", registry.addr));
    let client = client();
    let events = Recorder::new();
    client
        .push(&source, &index_digest, &dest, &|e| events.record(e))
        .await
        .unwrap();
    let manifests_pushed = events
        .events()
        .into_iter()
        .filter(|e| matches!(e, PushEvent::ManifestPushed { .. }))
        .count();
    assert_eq!(
        manifests_pushed, 3,
        "two image manifests by digest, then the index by tag"
    );

    let (_b, target) = new_store();
    let pulled = client
        .pull(&target, &dest, &Platform::new("linux", "arm64"), &|_| {})
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, arm_image.manifest_digest);
    assert_eq!(pulled.index_digest, Some(index_digest.clone()));
    assert_eq!(pulled.config.architecture, "arm64");
    assert!(target.has_blob(&index_digest));
    assert!(target.has_blob(&arm_image.layer_digest));
    assert!(
        !target.has_blob(&amd_image.layer_digest),
        "the other platform is not fetched"
    );

    let err = client
        .pull(&target, &dest, &Platform::new("linux", "s390x"), &|_| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), kiln_error::ErrorKind::NotFound);
    assert!(
        text.contains("linux/s390x") && text.contains("linux/amd64, linux/arm64/v8"),
        "{text}"
    );
}

#[tokio::test]
async fn pushing_a_manifest_missing_from_the_store_names_it() {
    let registry = TestRegistry::start();
    let (_a, store) = new_store();
    let absent = kiln_image::Digest::of(b"not there");
    let dest = reference(&format!("{}/test/app:v1", registry.addr));
    let err = client()
        .push(&store, &absent, &dest, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::LocalStore { .. }), "{err:?}");
    assert!(err.to_string().contains(&absent.to_string()), "{err}");
}

/// An attestation manifest (BuildKit's layout) for `image`, written to `store`: one in-toto
/// statement as its only layer.
fn attestation_for(store: &Store, image: &common::BuiltImage, statement: &[u8]) -> Descriptor {
    use kiln_image::attestation::{
        ATTESTATION_MANIFEST, REFERENCE_DIGEST_ANNOTATION, REFERENCE_TYPE_ANNOTATION,
    };
    let layer_digest = store.write_blob(statement).unwrap();
    let layer = Descriptor::new(
        "application/vnd.in-toto+json",
        layer_digest.clone(),
        statement.len() as u64,
    );
    let config = serde_json::json!({
        "architecture": "unknown", "os": "unknown",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let config_bytes = to_canonical_json(&config);
    let config_digest = store.write_blob(&config_bytes).unwrap();
    let manifest = kiln_image::Manifest::oci(
        Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        vec![layer],
    );
    let bytes = to_canonical_json(&manifest);
    let digest = store.write_blob(&bytes).unwrap();
    let mut d = Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64);
    d.platform = Some(Platform::new("unknown", "unknown"));
    d.annotations = BTreeMap::from([
        (
            REFERENCE_TYPE_ANNOTATION.to_owned(),
            ATTESTATION_MANIFEST.to_owned(),
        ),
        (
            REFERENCE_DIGEST_ANNOTATION.to_owned(),
            image.manifest_digest.to_string(),
        ),
    ]);
    d
}

#[tokio::test]
async fn a_pulled_image_keeps_its_attestation_manifests_and_only_its_own() {
    let registry = TestRegistry::start();
    let (_a, source) = new_store();
    let arm64 = Platform::new("linux", "arm64");
    let amd_image = build_image(&source, &amd64(), b"x86");
    let arm_image = build_image(&source, &arm64, b"arm");
    let entry = |image: &common::BuiltImage, platform: &Platform| image.index_entry(platform);
    let arm_att = attestation_for(&source, &arm_image, br#"{"statement":"arm"}"#);
    let amd_att = attestation_for(&source, &amd_image, br#"{"statement":"amd"}"#);
    let index = |manifests: Vec<Descriptor>| Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests,
        annotations: BTreeMap::new(),
    };
    let client = client();

    // Two platforms, only arm64 attested.
    let multi = index(vec![
        entry(&amd_image, &amd64()),
        entry(&arm_image, &arm64),
        arm_att.clone(),
    ]);
    let multi_digest = source.write_blob(&to_canonical_json(&multi)).unwrap();
    let dest = reference(&format!("{}/test/attested:multi", registry.addr));
    client
        .push(&source, &multi_digest, &dest, &|_| {})
        .await
        .unwrap();
    let (_b, target) = new_store();
    let pulled = client.pull(&target, &dest, &arm64, &|_| {}).await.unwrap();
    assert_eq!(pulled.manifest_digest, arm_image.manifest_digest);
    assert_eq!(pulled.index_digest, Some(multi_digest.clone()));
    let kept: Index = serde_json::from_slice(&target.read_blob(&pulled.root_digest).unwrap())
        .expect("the name's target is an index");
    assert_eq!(
        kept.manifests,
        [entry(&arm_image, &arm64), arm_att.clone()],
        "an index of the pulled image and its attestation, not the other platform"
    );
    assert!(target.has_blob(&arm_att.digest));
    assert!(target.has_blob(&kiln_image::Digest::of(br#"{"statement":"arm"}"#)));
    // amd64 has no attestation: a bare manifest, as before.
    let (_c, other) = new_store();
    let pulled = client.pull(&other, &dest, &amd64(), &|_| {}).await.unwrap();
    assert_eq!(pulled.root_digest, amd_image.manifest_digest);
    assert!(!other.has_blob(&arm_att.digest), "not its attestation");

    // One platform and its attestation: the index is kept as it is.
    let single = index(vec![entry(&amd_image, &amd64()), amd_att.clone()]);
    let single_digest = source.write_blob(&to_canonical_json(&single)).unwrap();
    let dest = reference(&format!("{}/test/attested:single", registry.addr));
    client
        .push(&source, &single_digest, &dest, &|_| {})
        .await
        .unwrap();
    let (_d, target) = new_store();
    let pulled = client
        .pull(&target, &dest, &amd64(), &|_| {})
        .await
        .unwrap();
    assert_eq!(pulled.root_digest, single_digest);
    assert!(target.has_blob(&amd_att.digest));

    // The registry loses the attestation manifest: the image still pulls, bare.
    let url = format!(
        "http://{}/v2/test/attested/manifests/{}",
        registry.addr, amd_att.digest
    );
    let deleted = reqwest::Client::new().delete(&url).send().await.unwrap();
    assert_eq!(deleted.status().as_u16(), 202, "DELETE {url}");
    let (_e, target) = new_store();
    let pulled = client
        .pull(&target, &dest, &amd64(), &|_| {})
        .await
        .unwrap();
    assert_eq!(pulled.root_digest, amd_image.manifest_digest);
    assert!(!target.has_blob(&amd_att.digest));
}
