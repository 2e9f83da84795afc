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

/// A DNS query for `name` (type A, ID `id`) with TCP's two-byte length prefix.
fn framed_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// The embedded server answers over TCP too (127.0.0.11:53/tcp, length-prefixed), several
/// queries on one connection, asked from the container's network namespace.
#[test]
fn the_embedded_dns_server_answers_over_tcp() {
    use std::io::Write;
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "--subnet", "10.93.0.0/24", "tcpdns"]);
    server(&net, "web", &["--network", "tcpdns", "--ip", "10.93.0.20"]);
    net.ok(&[
        "run",
        "-d",
        "--name",
        "asker",
        "--network",
        "tcpdns",
        &k.base,
        "sleep",
        "600",
    ]);
    let pid = inspect(&net, "asker")["State"]["Pid"].as_u64().unwrap();
    let mut queries = framed_query(0x0101, "web");
    queries.extend(framed_query(0x0202, "WEB"));
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["socat", "-t", "3", "-", "TCP:127.0.0.11:53"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&queries).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Two framed answers, in order, each with the one A record last.
    let mut rest = &out.stdout[..];
    for id in [0x0101u16, 0x0202] {
        assert!(rest.len() > 2, "short answer: {:?}", out.stdout);
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let message = &rest[2..2 + len];
        assert_eq!(&message[..2], &id.to_be_bytes());
        // QR set, NOERROR, one answer.
        assert_eq!((message[2] & 0x80, message[3] & 0xf), (0x80, 0));
        assert_eq!(u16::from_be_bytes([message[6], message[7]]), 1);
        assert_eq!(&message[len - 4..], &[10, 93, 0, 20]);
        rest = &rest[2 + len..];
    }
    assert!(rest.is_empty());
}

/// `--dns`, `--dns-search`, `--dns-option`, `--hostname` and `--domainname` on the default
/// bridge: resolv.conf, /etc/hostname, /etc/hosts and the UTS names as dockerd writes them,
/// and inspect's fields.
#[test]
fn dns_flags_hostname_and_domainname_shape_the_containers_files() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    let flags = [
        "--network",
        "bridge",
        "--dns",
        "192.0.2.53",
        "--dns",
        "192.0.2.54",
        "--dns-search",
        "a.example",
        "--dns-search",
        "b.example",
        "--dns-option",
        "ndots:3",
        "--hostname",
        "web",
        "--domainname",
        "example.org",
    ];
    let script = "cat /etc/resolv.conf; echo ---; cat /etc/hostname; echo ---; \
                  cat /etc/hosts; echo ---; hostname; cat /proc/sys/kernel/domainname";
    net.ok(&[
        &["create", "--name", "named"][..],
        &flags,
        &[&k.base, "sh", "-c", script],
    ]
    .concat());
    let inspected = inspect(&net, "named");
    assert_eq!(
        inspected["HostConfig"]["Dns"],
        serde_json::json!(["192.0.2.53", "192.0.2.54"])
    );
    assert_eq!(
        inspected["HostConfig"]["DnsSearch"],
        serde_json::json!(["a.example", "b.example"])
    );
    assert_eq!(
        inspected["HostConfig"]["DnsOptions"],
        serde_json::json!(["ndots:3"])
    );
    assert_eq!(inspected["Config"]["Domainname"], "example.org");
    let out = net.ok(&["start", "-a", "named"]);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(
        parts[0],
        "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch a.example b.example\n\
         options ndots:3\n"
    );
    assert_eq!(parts[1], "web\n");
    // The hostname's line: its address on the default bridge, the full name first.
    let line = parts[2].lines().last().unwrap();
    assert!(
        line.starts_with("172.17.") && line.ends_with("\tweb.example.org web"),
        "{}",
        parts[2]
    );
    assert_eq!(parts[3], "web\nexample.org\n");

    for (flag, value, expected) in [
        ("--dns", "not-an-address", "invalid DNS server"),
        ("--domainname", "a b", "invalid domain name"),
    ] {
        let err = net.fails(&[
            "run", "--rm", "--name", "never", flag, value, &k.base, "true",
        ]);
        assert!(err.contains(expected), "{flag} {value}: {err}");
    }
    assert!(!net.ok(&["ps", "-a"]).contains("never"));
}

/// On a user-defined network resolv.conf names the embedded server (with `--dns-search` and
/// `--dns-option`), and `--dns` servers become the server's upstreams: a name it does not
/// know goes to them, not to the host's resolvers.
#[test]
fn dns_servers_on_a_user_network_are_the_embedded_servers_upstreams() {
    let k = Kiln::new();
    let net = TestNet::new(&k);
    net.ok(&["network", "create", "up"]);
    // The "upstream": one datagram's bytes, caught on 127.0.0.53:53 of the test's namespace
    // (where the embedded server's supervisor lives).
    let mut upstream = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.name))
        .args(["socat", "-u", "UDP4-RECV:53,bind=127.0.0.53", "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = net.ok(&[
        "run",
        "--rm",
        "--network",
        "up",
        "--dns",
        "127.0.0.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "timeout:2",
        &k.base,
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup -timeout=1 outside.example. 127.0.0.11 >/dev/null; true",
    ]);
    assert_eq!(
        out,
        "nameserver 127.0.0.11\nsearch corp.example\noptions timeout:2 ndots:0\n"
    );
    let _ = upstream.kill();
    let caught = upstream.wait_with_output().unwrap().stdout;
    assert!(
        caught.windows(16).any(|w| w == b"\x07outside\x07example"),
        "the upstream saw {caught:?}"
    );
}
