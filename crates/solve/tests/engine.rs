//! The engine as a long-lived process (a daemon) uses it: builds cancelled in-process, a build
//! started from async code, two builds at once on one engine and store. These run real builds
//! (sandbox, overlays, a loopback `docker-registry` holding busybox), so they need root and the
//! sandbox's re-exec hook in `main`, hence `harness = false`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_image::Platform;
use kiln_registry::{RegistryClient, RegistryConfig};
use kiln_sandbox::NetworkMode;
use kiln_solve::{BuildRequest, CancelToken, Engine, ProgressEvent, SolveError};
use kiln_store::Store;

struct Fixture {
    _registry: kiln_testkit::TestRegistry,
    base: String,
}

fn request(context: &Path, base: &str, tag: &str) -> BuildRequest {
    BuildRequest {
        context_dir: context.to_owned(),
        dockerfile: None,
        tags: vec![tag.parse().unwrap()],
        build_args: BTreeMap::from([("BASE".to_owned(), base.to_owned())]),
        target: None,
        network: NetworkMode::None,
        extra_hosts: Vec::new(),
        allow_network_host: false,
        secrets: BTreeMap::new(),
        no_cache: false,
        no_cache_filter: Vec::new(),
        pull: false,
        platforms: vec![Platform::host()],
        jobs: 0,
        compression: kiln_layer::CompressionRequest::from_flags("gzip", None).unwrap(),
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        credentials: BTreeMap::new(),
        cancel: CancelToken::new(),
        settings: Default::default(),
        on_run_failure: None,
    }
}

fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

fn engine(store: &Store, rt: tokio::runtime::Handle) -> Engine {
    let registry = RegistryClient::new(RegistryConfig {
        credentials: None,
        ..RegistryConfig::default()
    })
    .unwrap();
    Engine::new(store.clone(), registry, rt)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn tmp_entries(store: &Store) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(store.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Cancelling the token while a RUN sleeps ends the build at once with `Cancelled`; the step
/// before it stays cached, the cancelled one left no record, no name and no temp dir, and the
/// same engine then builds again.
fn cancel_in_process(f: &Fixture) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rt = runtime();
    let engine = engine(&store, rt.handle().clone());
    let ctx = context(
        "ARG BASE\nFROM ${BASE}\nRUN echo one > /one\nARG PAUSE=300\n\
         RUN echo sleeping && sleep $PAUSE\n",
        &[],
    );
    let req = request(ctx.path(), &f.base, "cancelled:latest");
    let cancel = req.cancel.clone();
    let events: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let progress = |event: ProgressEvent| {
        if let ProgressEvent::StepOutput { line, .. } = &event
            && line == "sleeping"
        {
            cancel.cancel();
        }
        events.lock().unwrap().push(format!("{event:?}"));
    };
    let started = Instant::now();
    let result = engine.build(&req, &progress);
    assert!(
        matches!(result, Err(SolveError::Cancelled)),
        "{result:?}\n{:#?}",
        events.lock().unwrap()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the sleep was not cut short"
    );
    assert!(
        store
            .get_name("docker.io/library/cancelled:latest")
            .unwrap()
            .is_none()
    );
    assert_eq!(tmp_entries(&store), Vec::<std::ffi::OsString>::new());

    let mut again = request(ctx.path(), &f.base, "cancelled:latest");
    again.build_args.insert("PAUSE".into(), "0".into());
    let cached = Mutex::new(0);
    engine
        .build(&again, &|event| {
            if matches!(event, ProgressEvent::StepCached(_)) {
                *cached.lock().unwrap() += 1;
            }
        })
        .unwrap();
    assert_eq!(
        *cached.lock().unwrap(),
        1,
        "the RUN before the cancel is reused"
    );
    assert!(
        store
            .get_name("docker.io/library/cancelled:latest")
            .unwrap()
            .is_some()
    );
}

/// A build waiting for another build's run of the same step (the per-key step lock) stops
/// waiting when it is cancelled, and the other build goes on.
fn cancel_while_waiting_for_a_shared_step(f: &Fixture) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rt = runtime();
    let engine = engine(&store, rt.handle().clone());
    let ctx = context(
        "ARG BASE\nFROM ${BASE}\nRUN echo sleeping && sleep 300\n",
        &[],
    );
    let first = request(ctx.path(), &f.base, "first:latest");
    let second = request(ctx.path(), &f.base, "second:latest");
    let (first_cancel, second_cancel) = (first.cancel.clone(), second.cancel.clone());
    let (running_tx, running_rx) = std::sync::mpsc::channel();
    let running_tx = Mutex::new(running_tx);
    std::thread::scope(|scope| {
        let one = scope.spawn(|| {
            engine.build(&first, &|event| {
                if let ProgressEvent::StepOutput { line, .. } = &event
                    && line == "sleeping"
                {
                    let _ = running_tx.lock().unwrap().send(());
                }
            })
        });
        running_rx.recv_timeout(Duration::from_secs(120)).unwrap();
        let two = scope.spawn(|| engine.build(&second, &|_| {}));
        // Long enough to reach the step lock the first build holds.
        std::thread::sleep(Duration::from_millis(500));
        let cancelled_at = Instant::now();
        second_cancel.cancel();
        let second_result = two.join().unwrap();
        assert!(
            matches!(second_result, Err(SolveError::Cancelled)),
            "{second_result:?}"
        );
        assert!(cancelled_at.elapsed() < Duration::from_secs(10));
        assert!(!one.is_finished(), "the first build goes on");
        first_cancel.cancel();
        assert!(matches!(one.join().unwrap(), Err(SolveError::Cancelled)));
    });
    assert_eq!(tmp_entries(&store), Vec::<std::ffi::OsString>::new());
}

/// From async code: `build_async` runs the build on the blocking pool (no `block_on` on a
/// worker), and dropping its future cancels the build.
fn build_from_async_code(f: &Fixture) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let engine = Arc::new(engine(&store, tokio::runtime::Handle::current()));
        let ctx = context(
            "ARG BASE\nFROM ${BASE}\nCOPY hello /hello\nRUN cat /hello > /copied\n",
            &[("hello", "hi\n")],
        );
        let built = Arc::clone(&engine)
            .build_async(
                request(ctx.path(), &f.base, "async:latest"),
                Arc::new(|_| {}),
            )
            .await
            .unwrap();
        assert_eq!(built.tags, ["docker.io/library/async:latest"]);

        // A dropped future (a closed connection) stops its build.
        let slow = context("ARG BASE\nFROM ${BASE}\nRUN sleep 300\n", &[]);
        let req = request(slow.path(), &f.base, "dropped:latest");
        let cancel = req.cancel.clone();
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(3),
            Arc::clone(&engine).build_async(req, Arc::new(|_| {})),
        )
        .await;
        assert!(outcome.is_err(), "the slow build finished: {outcome:?}");
        assert!(cancel.is_cancelled());
        // The build's thread winds down on its own; its sandbox is killed within a poll.
        while !tmp_entries(&store).is_empty() && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(tmp_entries(&store), Vec::<std::ffi::OsString>::new());
        assert!(
            store
                .get_name("docker.io/library/dropped:latest")
                .unwrap()
                .is_none()
        );
    });
}

/// Builds at once in one process, on one engine and store: two of different contexts, each
/// with its own tags and content, and a third of the first context again, which shares its
/// steps (the per-key step lock works between threads too: the shared RUN runs once).
fn builds_at_once(f: &Fixture) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rt = runtime();
    let engine = engine(&store, rt.handle().clone());
    let dockerfile = "ARG BASE\nFROM ${BASE}\nCOPY file /file\nRUN sleep 1 && cat /file > /out\n";
    let a = context(dockerfile, &[("file", "from a\n")]);
    let b = context(dockerfile, &[("file", "from b\n")]);
    let runs_of_a = std::sync::atomic::AtomicUsize::new(0);
    let count_runs = |event: ProgressEvent| {
        if let ProgressEvent::StepDone { step, .. } = event
            && step.text.starts_with("RUN")
        {
            runs_of_a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let (ra, ra2, rb) = std::thread::scope(|scope| {
        let ha = scope.spawn(|| engine.build(&request(a.path(), &f.base, "a:latest"), &count_runs));
        let ha2 =
            scope.spawn(|| engine.build(&request(a.path(), &f.base, "a2:latest"), &count_runs));
        let hb = scope.spawn(|| engine.build(&request(b.path(), &f.base, "b:latest"), &|_| {}));
        (ha.join().unwrap(), ha2.join().unwrap(), hb.join().unwrap())
    });
    let (ra, ra2, rb) = (ra.unwrap(), ra2.unwrap(), rb.unwrap());
    assert_ne!(ra.image.config_digest, rb.image.config_digest);
    assert_eq!(ra.image.manifest.layers, ra2.image.manifest.layers);
    assert_eq!(runs_of_a.into_inner(), 1, "the shared RUN ran once");
    for (name, result) in [("a", &ra), ("a2", &ra2), ("b", &rb)] {
        assert_eq!(
            store
                .get_name(&format!("docker.io/library/{name}:latest"))
                .unwrap(),
            Some(result.image.manifest_digest.clone())
        );
    }
    assert_eq!(tmp_entries(&store), Vec::<std::ffi::OsString>::new());
}

/// Credentials given with one build serve that build only: with bob's, a build from a private
/// repository pulls its base; a build at the same time on the same engine without them is
/// refused by the registry, and so is a later one (both re-resolve the base with `pull`, as
/// the first build left it named in the shared store).
fn credentials_per_build(f: &Fixture) {
    let private = kiln_testkit::TokenRegistry::start(&[("bob", "hunter2")]).unwrap();
    let bob = kiln_registry::Credential::Basic {
        username: "bob".into(),
        password: "hunter2".into(),
    };
    let addr = private.registry.addr();
    let base: kiln_image::Reference = format!("{addr}/bob/busybox:latest").parse().unwrap();
    let rt = runtime();

    // Copy busybox into the private repository through a store of its own.
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = Store::open(seed_dir.path()).unwrap();
    let seeding = engine(&seed, rt.handle().clone());
    let image = kiln_images::pull_image(
        &seed,
        &seeding.registry,
        rt.handle(),
        &f.base.parse().unwrap(),
        &Platform::host(),
        &|_| {},
    )
    .unwrap();
    let with_bob = seeding
        .registry
        .with_credentials([(addr.clone(), bob.clone())]);
    rt.block_on(with_bob.push(&seed, &image.manifest_digest, &base, &|_| {}))
        .unwrap();

    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let engine = engine(&store, rt.handle().clone());
    let ctx = context("ARG BASE\nFROM ${BASE}\nRUN echo built > /built\n", &[]);
    let base = base.to_string();
    let mut authorized = request(ctx.path(), &base, "private:latest");
    authorized.credentials.insert(addr.clone(), bob);
    // `pull`: the base is asked of the registry even once the other build stored it locally.
    let mut anonymous = request(ctx.path(), &base, "anonymous:latest");
    anonymous.pull = true;
    let (with, without) = std::thread::scope(|scope| {
        let with = scope.spawn(|| engine.build(&authorized, &|_| {}));
        let without = scope.spawn(|| engine.build(&anonymous, &|_| {}));
        (with.join().unwrap(), without.join().unwrap())
    });
    with.unwrap();
    let refused = without.unwrap_err().to_string();
    assert!(refused.contains("unauthorized"), "{refused}");
    let mut later = request(ctx.path(), &base, "later:latest");
    later.pull = true;
    let later = engine.build(&later, &|_| {});
    let refused = later.unwrap_err().to_string();
    assert!(refused.contains("unauthorized"), "{refused}");
}

/// One test: its name (for the filter argument) and body.
type Case = fn(&Fixture);

/// A two-platform build shares the layer of a WORKDIR and a COPY whose bases are alike where
/// they write (equal layer digests, a `LayerShared` event each), and builds its own where the
/// bases differ on the way: `/data` is a directory in amd64's base and a symlink to `srv` in
/// arm64's, so arm64's COPY to /data/b.txt writes srv/b.txt. A `COPY --link` is shared
/// whatever the bases. No RUN: nothing is emulated.
fn shared_layers_between_platforms(_: &Fixture) {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let rt = runtime();
    let engine = engine(&store, rt.handle().clone());
    let ctx = context(
        "FROM scratch AS base\nARG TARGETARCH\nCOPY base-$TARGETARCH/ /\n\
         FROM base\nWORKDIR /app\nCOPY a.txt /app/\nCOPY b.txt /data/b.txt\nCOPY --link a.txt /opt/\n",
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    for arch in ["amd64", "arm64"] {
        let etc = ctx.path().join(format!("base-{arch}/etc"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("arch"), arch).unwrap();
    }
    std::fs::create_dir(ctx.path().join("base-amd64/data")).unwrap();
    std::fs::create_dir(ctx.path().join("base-arm64/srv")).unwrap();
    std::os::unix::fs::symlink("srv", ctx.path().join("base-arm64/data")).unwrap();
    let mut req = request(ctx.path(), "unused", "shared:latest");
    req.build_args.clear();
    req.platforms = vec![
        "linux/amd64".parse::<Platform>().unwrap(),
        "linux/arm64".parse::<Platform>().unwrap(),
    ];
    let shared = Mutex::new(Vec::new());
    let built = engine
        .build(&req, &|event| {
            if let ProgressEvent::LayerShared { step, from } = event {
                shared.lock().unwrap().push((step, from));
            }
        })
        .unwrap();
    let [amd64, arm64] = &built.platform_images[..] else {
        panic!("two images: {:?}", built.platform_images);
    };
    let (a, b): (Vec<_>, Vec<_>) = (amd64.layers().collect(), arm64.layers().collect());
    assert_eq!((a.len(), b.len()), (5, 5));
    assert_ne!(a[0].digest, b[0].digest, "the bases differ");
    assert_eq!(a[1].digest, b[1].digest, "WORKDIR /app");
    assert_eq!(a[2].digest, b[2].digest, "COPY a.txt /app/");
    assert_ne!(a[3].digest, b[3].digest, "COPY b.txt /data/b.txt");
    assert_eq!(a[4].digest, b[4].digest, "COPY --link a.txt /opt/");
    let mut shared: Vec<String> = shared
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|(step, from)| {
            assert_eq!(step.position, from.position);
            assert_ne!(step.stage, from.stage, "shared with the other platform");
            step.text
        })
        .collect();
    shared.sort();
    assert_eq!(
        shared,
        [
            "COPY --link a.txt /opt/",
            "COPY a.txt /app/",
            "WORKDIR /app"
        ]
    );
    let has = |layer: &kiln_image::LayerRef, path: &str| {
        std::fs::symlink_metadata(store.snapshot_path(&layer.diff_id).join(path)).is_ok()
    };
    assert!(has(&a[3], "data/b.txt") && !has(&a[3], "srv"));
    assert!(has(&b[3], "srv/b.txt") && !has(&b[3], "data"));
    assert!(has(&a[2], "app/a.txt"));
    assert_eq!(tmp_entries(&store), Vec::<std::ffi::OsString>::new());
}

fn main() {
    kiln_sandbox::maybe_run_init();
    assert!(
        rustix::process::geteuid().is_root(),
        "the engine tests need root (overlay mounts, namespaces)"
    );
    // As the kiln binary does: every overlay this process mounts stays in its namespace.
    kiln_sandbox::enter_private_mount_namespace().expect("private mount namespace");
    let registry = kiln_testkit::TestRegistry::start().expect("start docker-registry");
    let base = kiln_testkit::push_busybox(&registry, "busybox:latest").expect("push busybox");
    let fixture = Fixture {
        _registry: registry,
        base,
    };
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let cases: &[(&str, Case)] = &[
        ("cancel_in_process", cancel_in_process),
        (
            "cancel_while_waiting_for_a_shared_step",
            cancel_while_waiting_for_a_shared_step,
        ),
        ("build_from_async_code", build_from_async_code),
        ("builds_at_once", builds_at_once),
        ("credentials_per_build", credentials_per_build),
        (
            "shared_layers_between_platforms",
            shared_layers_between_platforms,
        ),
    ];
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        eprintln!("test {name} ...");
        case(&fixture);
        eprintln!("test {name} ... ok");
    }
}
