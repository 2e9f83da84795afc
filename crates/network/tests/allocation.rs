//! Address allocation under the records' lock, from many callers at once.

use std::net::Ipv4Addr;

use kiln_network::{DEFAULT_BRIDGE, EndpointRequest, Networks, privileged};

/// Eight processes' worth of concurrent connects (separate `Networks` over one store, as
/// separate kiln processes have): every address is handed out once, and each release makes
/// it free again. Records only; needs root only because connecting does.
#[test]
fn concurrent_allocation_never_repeats_an_address() {
    assert!(privileged(), "connecting containers needs root");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let networks = Networks::open(&root);
                (0..5)
                    .map(|i| {
                        let id = format!("{t}{i}").repeat(32);
                        let (_, e) = networks
                            .connect(DEFAULT_BRIDGE, &id, "c", &EndpointRequest::default())
                            .unwrap();
                        (e.ip.unwrap(), id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(Ipv4Addr, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let mut ips: Vec<Ipv4Addr> = all.iter().map(|(ip, _)| *ip).collect();
    ips.dedup();
    assert_eq!(ips.len(), 40, "an address was handed out twice");
    assert_eq!(ips[0], Ipv4Addr::new(172, 17, 0, 2));
    assert_eq!(ips[39], Ipv4Addr::new(172, 17, 0, 41));
    // The holder of .5 goes: .5 is the next one given.
    let networks = Networks::open(&root);
    networks.release_container(&all[3].1).unwrap();
    let (_, again) = networks
        .connect(
            DEFAULT_BRIDGE,
            &"z".repeat(64),
            "z",
            &EndpointRequest::default(),
        )
        .unwrap();
    assert_eq!(again.ip, Some(Ipv4Addr::new(172, 17, 0, 5)));
}

/// A requested address is refused while its holder runs, and while the holder is only a
/// leftover endpoint (its container gone in a removal cut short: the address waits for `kiln
/// check --repair`). The hand-over from a stopped container needs a container record and is
/// tested end to end (tests/e2e/bridges.rs, tests/e2e/compose.rs). Records only.
#[test]
fn a_requested_address_of_a_running_or_vanished_holder_is_refused() {
    use kiln_network::state::StateFiles;
    use kiln_network::{Addressing, Driver, NetworkError, NetworkRecord};

    assert!(privileged(), "connecting containers needs root");
    let dir = tempfile::tempdir().unwrap();
    let networks = Networks::open(dir.path());
    // The predefined networks first (the records' first load adds them), then "front".
    networks
        .connect(
            DEFAULT_BRIDGE,
            &"f".repeat(64),
            "first",
            &EndpointRequest::default(),
        )
        .unwrap();
    let files = StateFiles::new(dir.path());
    {
        let lock = files.lock(true).unwrap();
        let mut state = files.read(&lock).unwrap();
        state.networks.push(NetworkRecord {
            id: "e".repeat(64),
            name: "front".into(),
            driver: Driver::Bridge,
            created: chrono::Utc::now(),
            addressing: Some(Addressing {
                subnet: "10.77.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 77, 0, 1),
                ip_range: None,
            }),
            internal: false,
            labels: Default::default(),
            bridge: "kiln-eeeeeeeeee".into(),
            predefined: false,
            endpoints: Default::default(),
            aux_addresses: Default::default(),
        });
        files.write(&lock, &state).unwrap();
    }
    let ip = Ipv4Addr::new(10, 77, 0, 10);
    let fixed = EndpointRequest {
        ip: Some(ip),
        ..EndpointRequest::default()
    };
    let (old, new, other) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let store = kiln_store::Store::open(dir.path()).unwrap();
    std::fs::create_dir_all(store.container_dir(&old)).unwrap();
    let running = store.hold_container_running(&old).unwrap();
    networks.connect("front", &old, "old", &fixed).unwrap();

    let err = networks.connect("front", &new, "new", &fixed).unwrap_err();
    assert!(matches!(err, NetworkError::AddressInUse { .. }), "{err}");
    drop(running);
    std::fs::remove_dir_all(store.container_dir(&old)).unwrap();
    let err = networks.connect("front", &new, "new", &fixed).unwrap_err();
    assert!(matches!(err, NetworkError::AddressInUse { .. }), "{err}");
    let (_, auto) = networks
        .connect("front", &other, "other", &EndpointRequest::default())
        .unwrap();
    assert_eq!(auto.ip, Some(Ipv4Addr::new(10, 77, 0, 2)));
    // Released (what `check --repair` does): the address is free.
    networks.release_container(&old).unwrap();
    let (_, freed) = networks.connect("front", &new, "new", &fixed).unwrap();
    assert_eq!(freed.ip, Some(ip));
}
