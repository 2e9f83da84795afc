//! The sandbox's networks as the process sees them: `None` has only an up loopback, `Host`
//! shares the host's, `Default` (slirp4netns) has eth0 but no way to the host's loopback.

use std::net::TcpListener;

use super::*;

pub(super) fn isolated_network(l: &Layers) -> Result<(), String> {
    let out = run_script(
        &[&l.base],
        NetworkMode::None,
        "cat /proc/net/dev; ip -o link show lo",
    )?;
    let interfaces: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|') && name.parse::<u32>().is_err())
        .collect();
    expect_eq("interfaces", interfaces, vec!["lo"])?;
    expect(
        &format!("lo is up: {}", out.stdout),
        out.stdout.contains(",UP"),
    )
}

pub(super) fn host_port_reachable_only_with_host_network(l: &Layers) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().unwrap().port();
    // Accept and hang up at once: nc only exits when the peer closes.
    let server = std::thread::spawn(move || listener.accept().is_ok());
    let script = format!("nc -w 2 127.0.0.1 {port} </dev/null && echo connected");
    let out = run_script(&[&l.base], NetworkMode::None, &script)?;
    expect_eq("None reaches host", out.stdout.as_str(), "")?;
    let out = run_script(&[&l.base], NetworkMode::Host, &script)?;
    expect_eq(
        &format!("Host reaches host (stderr {:?})", out.stderr),
        out.stdout.as_str(),
        "connected\n",
    )?;
    expect("listener saw the connection", server.join().unwrap())
}

/// The default network: lo and eth0 (slirp4netns' 10.0.2.100), the hostname on that address,
/// the host's loopback unreachable both directly and through the gateway, and no slirp4netns
/// left once the sandbox ended.
pub(super) fn default_network_hides_host_loopback(l: &Layers) -> Result<(), String> {
    if let Err(e) = kiln_sandbox::network_helper() {
        // Missing (scripts/setup.sh installs it), or /dev/net/tun closed to this user.
        println!("  (skipped: {e})");
        return Ok(());
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "ls /sys/class/net; ip -o -4 addr show eth0; grep kiln-test /etc/hosts; \
         nc -w 2 127.0.0.1 {port} </dev/null && echo reached-loopback; \
         nc -w 2 10.0.2.2 {port} </dev/null && echo reached-gateway; echo done"
    );
    let out = run_script(&[&l.base], NetworkMode::Default, &script)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    expect_eq(
        &format!("interfaces (stderr {:?})", out.stderr),
        lines.get(..2),
        Some(&["eth0", "lo"][..]),
    )?;
    expect(
        &format!("eth0 has 10.0.2.100: {}", out.stdout),
        out.stdout.contains("inet 10.0.2.100/24"),
    )?;
    expect(
        "hosts names the hostname on eth0's address",
        out.stdout.contains("10.0.2.100\tkiln-test"),
    )?;
    expect(
        &format!("host loopback unreachable: {}", out.stdout),
        !out.stdout.contains("reached") && out.stdout.ends_with("done\n"),
    )?;
    expect(
        "no connection reached the listener",
        listener.accept().is_err(),
    )?;
    let me = std::process::id().to_string();
    let helpers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let dir = e.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Field 4 of stat is the parent pid (after the parenthesised command name).
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1));
            comm.trim() == "slirp4netns" && ppid == Some(me.as_str())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    expect_eq("slirp4netns children left", helpers, Vec::<String>::new())
}
