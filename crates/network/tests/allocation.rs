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
