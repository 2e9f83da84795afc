//! The sandbox's scratch directory on the host side and the `/etc/hosts` and
//! `/etc/resolv.conf` it holds for every network mode (mounted into the sandbox by its init).

use std::path::Path;

use crate::error::SandboxError;
use crate::network::SANDBOX_ADDRESS;
use crate::spec::{ExtraHost, Mount, NameSettings, NetworkMode, SandboxSpec};

/// slirp4netns' built-in DNS forwarder (to the host's resolver).
const SLIRP_DNS: &str = "10.0.2.3";

/// Creates the host-side scratch directory described in [`InitRequest::state_dir`].
pub(crate) fn prepare_state_dir(
    spec: &SandboxSpec,
    host_resolv: &str,
) -> Result<tempfile::TempDir, SandboxError> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-sandbox-")
        .tempdir()
        .map_err(SandboxError::io("create the sandbox scratch directory"))?;
    let create_dir = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).map_err(SandboxError::io(format!("create {}", path.display())))
    };
    create_dir("root")?;
    // Only what this sandbox uses: each directory is an inode made and freed again on every
    // start (on a busy ext4, a scan of its inode bitmap and, with online discard, a
    // synchronous discard).
    // The stand-in lower dir of an overlay that has an upper dir but no lower one.
    if spec.lower_dirs.is_empty() {
        create_dir("empty")?;
    }
    // Mount point of the sandbox's private tmpfs for file mounts (see `FileMount`).
    if spec.mounts.iter().any(|m| matches!(m, Mount::File(_))) {
        create_dir("files")?;
    }
    let hostname = spec.names.hosts_names(&spec.hostname);
    let hosts = hosts_file(spec.network, &hostname, &spec.extra_hosts);
    write_file(&dir.path().join("hosts"), hosts.as_bytes())?;
    let resolv = if spec.dns.is_empty() {
        with_names(resolv_conf(spec.network, host_resolv), &spec.names)
    } else {
        resolv_conf_with(&spec.dns, host_resolv, &spec.names)
    };
    write_file(&dir.path().join("resolv.conf"), resolv.as_bytes())?;
    if spec.names.etc_hostname {
        write_file(
            &dir.path().join("hostname"),
            format!("{}\n", spec.hostname).as_bytes(),
        )?;
    }
    Ok(dir)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), SandboxError> {
    std::fs::write(path, contents).map_err(SandboxError::io(format!("write {}", path.display())))
}

/// The nameservers of a resolv.conf that a sandbox with its own network can reach: all but the
/// loopback ones (127.0.0.0/8, ::1), which are the sandbox's own loopback there. Docker filters
/// the host's resolv.conf the same way for its bridge network.
fn reachable_nameservers(host_resolv: &str) -> Vec<&str> {
    host_resolv
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter(|server| !is_loopback(server))
        .collect()
}

fn is_loopback(address: &str) -> bool {
    // An IPv6 nameserver may carry a zone (`fe80::1%eth0`).
    let address = address.split('%').next().unwrap_or(address);
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the default network's sandbox can use the host's nameservers directly (some are
/// not on loopback). Otherwise it asks slirp4netns' forwarder.
pub(crate) fn host_dns_reachable(host_resolv: &str) -> bool {
    !reachable_nameservers(host_resolv).is_empty()
}

/// The sandbox's /etc/resolv.conf. `host_resolv` is the host's.
///
/// - `Host`: the host's, unchanged (same network).
/// - `None`: no nameserver at all, so lookups fail at once (the resolver's fallback, 127.0.0.1,
///   refuses) instead of timing out.
/// - `Default`: the host's with loopback nameservers removed (as Docker does); if none remain,
///   slirp4netns' forwarder at 10.0.2.3, which passes queries to the host's resolver.
pub(crate) fn resolv_conf(mode: NetworkMode, host_resolv: &str) -> String {
    match mode {
        NetworkMode::Host => host_resolv.to_string(),
        NetworkMode::None => "# kiln: this sandbox has no network\n".to_string(),
        NetworkMode::Default | NetworkMode::Prepared => {
            let mut out = String::from("# kiln: the host's resolver settings for the sandbox\n");
            let nameservers = reachable_nameservers(host_resolv);
            for line in host_resolv.lines() {
                let keyword = line.split_whitespace().next();
                if matches!(keyword, Some("search" | "domain" | "options")) {
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
            if nameservers.is_empty() && mode == NetworkMode::Default {
                out.push_str(&format!("nameserver {SLIRP_DNS}\n"));
            }
            for server in nameservers {
                out.push_str(&format!("nameserver {server}\n"));
            }
            out
        }
    }
}

/// A /etc/resolv.conf naming `nameservers` (`--dns`, or an embedded DNS server), as dockerd's
/// builds it: the nameservers, the search domains (`names`' or the host's `search` and
/// `domain` lines), the options (`names`' or the host's). An embedded server — loopback
/// nameservers, which a sandbox with a network of its own can only reach as one — gets no
/// host options and `ndots:0` unless an `ndots` option was given, as dockerd's 127.0.0.11.
pub(crate) fn resolv_conf_with(
    nameservers: &[std::net::IpAddr],
    host_resolv: &str,
    names: &NameSettings,
) -> String {
    let embedded = nameservers.iter().all(|ip| ip.is_loopback());
    let mut out = String::new();
    for server in nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    match &names.dns_search {
        Some(domains) => push_search(&mut out, domains),
        None => {
            for line in host_resolv.lines() {
                if matches!(line.split_whitespace().next(), Some("search" | "domain")) {
                    out.push_str(line.trim_end());
                    out.push('\n');
                }
            }
        }
    }
    let mut options: Vec<String> = match &names.dns_options {
        Some(options) => options.clone(),
        None if embedded => Vec::new(),
        None => host_resolv
            .lines()
            .filter_map(|l| l.trim().strip_prefix("options "))
            .flat_map(|l| l.split_whitespace().map(str::to_owned))
            .collect(),
    };
    if embedded && !options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0".into());
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn push_search(out: &mut String, domains: &[String]) {
    let domains: Vec<&str> = domains
        .iter()
        .map(String::as_str)
        .filter(|d| *d != ".")
        .collect();
    if !domains.is_empty() {
        out.push_str(&format!("search {}\n", domains.join(" ")));
    }
}

/// `conf` with its search domains and options replaced by `names`' where given.
fn with_names(conf: String, names: &NameSettings) -> String {
    if names.dns_search.is_none() && names.dns_options.is_none() {
        return conf;
    }
    let mut out: String = conf
        .lines()
        .filter(|line| match line.split_whitespace().next() {
            Some("search" | "domain") => names.dns_search.is_none(),
            Some("options") => names.dns_options.is_none(),
            _ => true,
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    if let Some(domains) = &names.dns_search {
        push_search(&mut out, domains);
    }
    if let Some(options) = names.dns_options.as_ref().filter(|o| !o.is_empty()) {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The sandbox's /etc/hosts, in Docker's layout: localhost and the IPv6 names, the
/// `--add-host` entries, then the hostname on the sandbox's own address (its interface's with
/// the default network, loopback otherwise).
pub(crate) fn hosts_file(mode: NetworkMode, hostname: &str, extra: &[ExtraHost]) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for host in extra {
        hosts.push_str(&format!("{}\t{}\n", host.address, host.name));
    }
    // A prepared network's caller knows the address and names the hostname in `extra`.
    if !hostname.is_empty() && hostname != "localhost" && mode != NetworkMode::Prepared {
        let address = match mode {
            NetworkMode::Default => SANDBOX_ADDRESS,
            NetworkMode::None | NetworkMode::Host | NetworkMode::Prepared => "127.0.0.1",
        };
        hosts.push_str(&format!("{address}\t{hostname}\n"));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD_RESOLVED: &str =
        "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n";
    const MIXED: &str =
        "nameserver 127.0.0.1\nnameserver ::1\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n";

    #[test]
    fn loopback_nameservers_are_dropped_and_slirp_forwards_when_none_remain() {
        let conf = resolv_conf(NetworkMode::Default, SYSTEMD_RESOLVED);
        assert!(conf.contains("nameserver 10.0.2.3\n"), "{conf}");
        assert!(!conf.contains("127.0.0.53"), "{conf}");
        assert!(conf.contains("options edns0 trust-ad\n"), "{conf}");
        assert!(conf.contains("search corp.example\n"), "{conf}");
        assert!(!host_dns_reachable(SYSTEMD_RESOLVED));

        let conf = resolv_conf(NetworkMode::Default, MIXED);
        let servers: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver "))
            .collect();
        assert_eq!(servers, ["192.0.2.53", "2001:db8::53"]);
        assert!(host_dns_reachable(MIXED));
    }

    #[test]
    fn resolv_conf_of_none_has_no_nameserver_and_host_is_unchanged() {
        assert!(!resolv_conf(NetworkMode::None, MIXED).contains("nameserver"));
        assert_eq!(resolv_conf(NetworkMode::Host, MIXED), MIXED);
        // An empty host file leaves the default network with slirp's forwarder.
        assert!(resolv_conf(NetworkMode::Default, "").contains("nameserver 10.0.2.3"));
    }

    #[test]
    fn an_embedded_dns_server_replaces_the_nameservers() {
        let embedded = ["127.0.0.11".parse().unwrap()];
        let none = NameSettings::default();
        let conf = resolv_conf_with(&embedded, SYSTEMD_RESOLVED, &none);
        assert_eq!(
            conf,
            "nameserver 127.0.0.11\nsearch corp.example\noptions ndots:0\n"
        );
        let names = NameSettings {
            dns_search: Some(vec!["a.example".into(), "b.example".into()]),
            dns_options: Some(vec!["timeout:3".into()]),
            ..NameSettings::default()
        };
        assert_eq!(
            resolv_conf_with(&embedded, SYSTEMD_RESOLVED, &names),
            "nameserver 127.0.0.11\nsearch a.example b.example\noptions timeout:3 ndots:0\n"
        );
        let ndots = NameSettings {
            dns_search: Some(vec![".".into()]),
            dns_options: Some(vec!["ndots:2".into()]),
            ..NameSettings::default()
        };
        assert_eq!(
            resolv_conf_with(&embedded, SYSTEMD_RESOLVED, &ndots),
            "nameserver 127.0.0.11\noptions ndots:2\n"
        );
    }

    #[test]
    fn dns_servers_search_domains_and_options_as_given() {
        // `--dns` alone: the host's search domains and options stay.
        let servers = ["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        assert_eq!(
            resolv_conf_with(&servers, SYSTEMD_RESOLVED, &NameSettings::default()),
            "nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch corp.example\n\
             options edns0 trust-ad\n"
        );
        // `--dns-search` without `--dns`: the host's nameservers, the given domains.
        let names = NameSettings {
            dns_search: Some(vec!["x.example".into()]),
            ..NameSettings::default()
        };
        let conf = with_names(resolv_conf(NetworkMode::Default, MIXED), &names);
        assert!(conf.contains("nameserver 192.0.2.53\n"), "{conf}");
        assert!(conf.ends_with("search x.example\n"), "{conf}");
        let conf = with_names(resolv_conf(NetworkMode::Default, SYSTEMD_RESOLVED), &names);
        assert!(!conf.contains("corp.example"), "{conf}");
        assert!(conf.contains("options edns0 trust-ad\n"), "{conf}");
    }

    #[test]
    fn scoped_ipv6_loopback_and_garbage_lines() {
        assert!(is_loopback("::1"));
        assert!(is_loopback("127.1.2.3"));
        assert!(!is_loopback("fe80::1%eth0"));
        assert!(!is_loopback("not-an-address"));
        assert_eq!(
            reachable_nameservers("nameserver\nnameserverx 1.1.1.1\n nameserver 9.9.9.9 \n"),
            ["9.9.9.9"]
        );
    }

    #[test]
    fn hosts_names_the_hostname_on_the_sandbox_address() {
        let hosts = hosts_file(NetworkMode::Default, "builder", &[]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.contains("ff02::2\tip6-allrouters\n"), "{hosts}");
        assert!(hosts.ends_with("10.0.2.100\tbuilder\n"), "{hosts}");
        assert!(hosts_file(NetworkMode::None, "builder", &[]).ends_with("127.0.0.1\tbuilder\n"));
        assert!(hosts_file(NetworkMode::Host, "builder", &[]).ends_with("127.0.0.1\tbuilder\n"));
        assert!(!hosts_file(NetworkMode::Default, "", &[]).contains("10.0.2.100"));
        assert!(!hosts_file(NetworkMode::None, "localhost", &[]).contains("\tlocalhost\n127"));
    }

    #[test]
    fn add_host_entries_come_before_the_hostname_in_order() {
        let extra = [
            ExtraHost::parse("db:10.1.2.3").unwrap(),
            ExtraHost::parse("v6:::1").unwrap(),
        ];
        let hosts = hosts_file(NetworkMode::None, "builder", &extra);
        assert!(
            hosts.ends_with("ff02::2\tip6-allrouters\n10.1.2.3\tdb\n::1\tv6\n127.0.0.1\tbuilder\n"),
            "{hosts}"
        );
    }
}
