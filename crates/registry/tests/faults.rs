//! Pull and push through a fault-injecting proxy in front of the real registry: cut connections
//! (resumed downloads, restarted uploads), 503s and stalls are retried, and the registry ends up
//! holding exactly the right bytes (checked with skopeo, which verifies every digest).

use std::time::Duration;

use kiln_image::Platform;
use kiln_registry::{Reference, RegistryClient, RegistryConfig, RegistryError};
use kiln_store::Store;
use kiln_testkit::{Fault, FaultProxy, TestRegistry};

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        credentials: None,
        read_timeout: Duration::from_millis(700),
        retry_base_delay: Duration::from_millis(20),
        ..RegistryConfig::default()
    })
    .unwrap()
}

fn host_platform() -> Platform {
    Platform::host()
}

/// A registry with busybox, and a store to pull into.
fn setup() -> (TestRegistry, tempfile::TempDir, Store) {
    let registry = TestRegistry::start().unwrap();
    kiln_testkit::push_busybox(&registry, "busybox:latest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (registry, dir, store)
}

async fn pull_via(
    proxy: &FaultProxy,
    store: &Store,
) -> Result<kiln_registry::PulledImage, RegistryError> {
    let reference: Reference = format!("{}/busybox:latest", proxy.addr()).parse().unwrap();
    client()
        .pull(store, &reference, &host_platform(), &|_| {})
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_resumes_cut_downloads_and_retries_503s_and_stalls() {
    let (registry, _dir, _) = setup();
    for fault in [
        Fault::DropAfter {
            bytes: 64 * 1024,
            times: 3,
        },
        Fault::Unavailable { times: 3 },
        Fault::Stall {
            duration: Duration::from_secs(2),
            times: 2,
        },
    ] {
        let proxy = FaultProxy::start(registry.port(), fault).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let pulled = pull_via(&proxy, &store)
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert!(proxy.faults_injected() > 0, "{fault:?} was never injected");
        // The store verified every blob's digest as it was written.
        for layer in &pulled.manifest.layers {
            assert!(store.has_blob(&layer.digest), "{fault:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_restarts_cut_uploads_and_the_registry_holds_the_right_bytes() {
    let (registry, _dir, store) = setup();
    let direct: Reference = format!("{}/busybox:latest", registry.addr())
        .parse()
        .unwrap();
    let pulled = client()
        .pull(&store, &direct, &host_platform(), &|_| {})
        .await
        .unwrap();
    for (n, fault) in [
        Fault::DropAfter {
            bytes: 64 * 1024,
            times: 2,
        },
        Fault::Unavailable { times: 3 },
    ]
    .into_iter()
    .enumerate()
    {
        let proxy = FaultProxy::start(registry.port(), fault).unwrap();
        let dest: Reference = format!("{}/copy{n}/bb:1", proxy.addr()).parse().unwrap();
        let digest = client()
            .push(&store, &pulled.manifest_digest, &dest, &|_| {})
            .await
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(digest, pulled.manifest_digest);
        assert!(proxy.faults_injected() > 0, "{fault:?} was never injected");

        let at_registry = format!("{}/copy{n}/bb:1", registry.addr());
        let raw = kiln_testkit::skopeo_inspect_raw(&at_registry).unwrap();
        assert_eq!(raw, store.read_blob(&digest).unwrap(), "{fault:?}");
        let layout = tempfile::tempdir().unwrap();
        kiln_testkit::skopeo_copy_to_oci_layout(&at_registry, &layout.path().join("l"), "x")
            .unwrap_or_else(|e| panic!("{fault:?}: skopeo reads every blob: {e:#}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_always_breaks_gives_up_naming_registry_repository_and_blob() {
    let (registry, _dir, store) = setup();
    let proxy = FaultProxy::start(
        registry.port(),
        Fault::DropAfter {
            bytes: 64 * 1024,
            times: 1000,
        },
    )
    .unwrap();
    let err = pull_via(&proxy, &store).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::GaveUp { attempts: 5, .. }),
        "{err:?}"
    );
    assert!(
        text.starts_with(&format!("{}/library/busybox: layer sha256:", proxy.addr()))
            || text.starts_with(&format!("{}/busybox: layer sha256:", proxy.addr())),
        "{text}"
    );
    assert!(text.ends_with("(gave up after 5 attempts)"), "{text}");
}
