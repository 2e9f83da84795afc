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

fn inspect(net: &TestNet<'_>, container: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(&net.ok(&["inspect", container])).unwrap();
    if value.is_array() {
        value[0].clone()
    } else {
        value
    }
}

/// Legacy links on the default bridge: dockerd's /etc/hosts line and variables, and
/// `HostConfig.Links` as dockerd writes it; links to what cannot be linked fail cleanly.
#[test]
fn links_on_the_default_bridge_write_hosts_lines_and_variables() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    server(
        &net,
        "db",
        &["--network", "bridge", "--expose", "80", "-e", "FOO=1"],
    );
    let db = inspect(&net, "db");
    let db_ip = db["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let db_host = db["Config"]["Hostname"].as_str().unwrap().to_owned();
    net.ok(&[
        "create",
        "--name",
        "app",
        "--network",
        "bridge",
        "--link",
        "db:data",
        &k.base,
        "sh",
        "-c",
        "cat /etc/hosts; env; nc -w 3 data 80",
    ]);
    assert_eq!(
        inspect(&net, "app")["HostConfig"]["Links"],
        serde_json::json!(["/db:/app/data"])
    );
    let out = net.ok(&["start", "-a", "app"]);
    assert!(
        out.contains(&format!("{db_ip}\tdata {db_host} db\n")),
        "{out}"
    );
    assert!(out.contains("DATA_NAME=/app/data\n"), "{out}");
    assert!(out.contains("DATA_ENV_FOO=1\n"), "{out}");
    assert!(!out.contains("DATA_ENV_PATH="), "{out}");
    assert!(
        out.contains(&format!("DATA_PORT_80_TCP_ADDR={db_ip}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("DATA_PORT=tcp://{db_ip}:80\n")),
        "{out}"
    );
    // The alias reaches the linked container.
    assert!(out.contains("hello from db"), "{out}");

    // Nothing to link to, or a container the default bridge does not have: errors naming it,
    // no container left.
    net.ok(&["network", "create", "apart"]);
    server(&net, "away", &["--network", "apart"]);
    for (link, expected) in [
        ("nope:x", "nope"),
        (
            "away",
            "cannot link to container away: it is not on the default bridge network",
        ),
        ("bad name", "invalid link"),
    ] {
        let err = net.fails(&[
            "run",
            "--rm",
            "--name",
            "never",
            "--network",
            "bridge",
            "--link",
            link,
            &k.base,
            "true",
        ]);
        assert!(err.contains(expected), "{link}: {err}");
    }
    let err = net.fails(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--link",
        "db",
        &k.base,
        "true",
    ]);
    assert!(err.contains("links need the default bridge"), "{err}");
    assert!(!net.ok(&["ps", "-a"]).contains("never"));
}

/// Links on a user-defined network: a name only the linking container resolves, for a
/// container that may not exist yet (docker-py's `test_create_with_links`).
#[test]
fn links_on_a_user_network_are_names_for_the_linking_container_alone() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "apps"]);
    net.ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "apps",
        "--link",
        "later:up",
        &k.base,
        "sleep",
        "600",
    ]);
    assert_eq!(
        inspect(&net, "client")["NetworkSettings"]["Networks"]["apps"]["Links"],
        serde_json::json!(["later:up"])
    );
    server(&net, "later", &["--network", "apps"]);
    super::eventually("the link's alias to reach its container", || {
        super::stdout(&net.kiln(&["exec", "client", "nc", "-w", "3", "up", "80"]))
            .contains("hello from later")
    });
    // Another container on the network does not know the alias.
    let out = net.kiln(&[
        "run",
        "--rm",
        "--network",
        "apps",
        &k.base,
        "nslookup",
        "up",
    ]);
    assert!(!out.status.success(), "{}", super::stdout(&out));
}
