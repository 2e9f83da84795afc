//! Names on bridge networks beyond TCP by name (`super`): UDP between containers by name and
//! alias.
//!
//! busybox-static's `nc` has no `-u` (Debian builds the small `nc`, not `nc_bloaty`) and no
//! other applet both serves and sends UDP, so the UDP test uses Debian's `socat`
//! (`scripts/setup.sh`), which is dynamically linked: the host's `/usr/lib/x86_64-linux-gnu`
//! and `/usr/lib64` (the loader) are bind-mounted read-only into the busybox containers with
//! it. Its lookups go through glibc's resolver to the embedded DNS server, over UDP too.

use super::{Kiln, TestNet, server};

/// `-v` flags that make the host's dynamically linked `tool` runnable in a busybox container
/// as `/usr/local/bin/NAME`.
fn host_tool(tool: &str) -> Vec<String> {
    let name = std::path::Path::new(tool)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        std::path::Path::new(tool).exists(),
        "{tool} is missing: run scripts/setup.sh"
    );
    vec![
        "-v".into(),
        "/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro".into(),
        "-v".into(),
        "/usr/lib64:/lib64:ro".into(),
        "-v".into(),
        format!("{tool}:/usr/local/bin/{name}:ro"),
    ]
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_over_udp() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "dgram"]);
    let socat = host_tool("/usr/bin/socat");
    let socat: Vec<&str> = socat.iter().map(String::as_str).collect();
    // An answer per datagram, from the port it came to.
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "echo",
        "--network",
        "dgram",
        "--network-alias",
        "udpecho",
    ];
    args.extend_from_slice(&socat);
    args.extend_from_slice(&[
        &k.base,
        "socat",
        "UDP4-RECVFROM:9999,fork",
        "SYSTEM:echo hello over udp",
    ]);
    net.ok(&args);
    // A container on another network: its name is not known on `dgram`.
    net.ok(&["network", "create", "elsewhere"]);
    server(&net, "stranger", &["--network", "elsewhere"]);

    let ask = |network: &str, name: &str| {
        let target = format!("UDP4:{name}:9999");
        let mut args = vec!["run", "--rm", "--network", network];
        args.extend_from_slice(&socat);
        args.extend_from_slice(&[
            &k.base,
            "sh",
            "-c",
            "echo ping | socat -T 3 - \"$0\"",
            &target,
        ]);
        net.kiln(&args)
    };
    for name in ["echo", "udpecho"] {
        super::eventually(&format!("an answer over UDP from {name}"), || {
            super::stdout(&ask("dgram", name)).contains("hello over udp")
        });
    }
    // From another network the name does not resolve (and nothing answers).
    let out = ask("elsewhere", "echo");
    assert!(!out.status.success(), "{}", super::stdout(&out));
    assert!(!super::stdout(&out).contains("hello"));
}
