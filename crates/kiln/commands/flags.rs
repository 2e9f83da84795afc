//! Flag values several commands share (the network of `build` and `run`, sizes of `prune` and
//! `run`, durations of `prune` and `build history prune`, build args and log times of the
//! in-process and the `--host` commands), so that no command file imports another.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use kiln_sandbox::NetworkMode;
use kiln_store::Timestamp;

/// `--build-arg`s: `NAME=VALUE`, or a bare `NAME` taken from the environment (skipped when
/// unset), as Docker does.
pub fn build_args(flags: &[String]) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for a in flags {
        match a.split_once('=') {
            Some((k, v)) => {
                args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    args.insert(a.clone(), v);
                }
            }
        }
    }
    args
}

/// `--since`/`--until`: RFC 3339, or a duration before now (`10m`, `1h30m`, `45s`).
pub fn parse_log_time(flag: &str, value: &str) -> Result<Timestamp> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let mut total = 0i64;
    let mut number = String::new();
    for ch in value.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => {
                bail!("invalid {flag} {value:?}: expected an RFC 3339 time or a duration like 10m")
            }
        };
        let n: i64 = number
            .parse()
            .with_context(|| format!("invalid {flag} {value:?}"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || value.is_empty() {
        bail!("invalid {flag} {value:?}: expected an RFC 3339 time or a duration like 10m");
    }
    Ok(chrono::Utc::now() - chrono::Duration::seconds(total))
}

/// `kiln build --network` values, as BuildKit names them.
pub const BUILD_NETWORKS: &[&str] = &["default", "none", "host"];
/// `kiln run --network` values, as Docker names them (`default` is `bridge`).
pub const RUN_NETWORKS: &[&str] = &["bridge", "default", "none", "host"];

/// The network asked for with `--network` (one of `accepted`), or without the flag the default
/// one. The default network needs slirp4netns (and /dev/net/tun): asked for explicitly, its
/// absence is an error;
/// as the implicit default, the build or container falls back to `none` with a warning, so
/// hosts without it keep working offline (what needs the network then fails visibly).
pub fn choose_network(flag: Option<&str>, accepted: &[&str]) -> Result<NetworkMode> {
    let mode = parse_network(flag.unwrap_or("default"), accepted)?;
    if mode != NetworkMode::Default {
        return Ok(mode);
    }
    match kiln_sandbox::network_helper() {
        Ok(_) => Ok(mode),
        Err(e) if flag.is_some() => bail!("{e}; or use --network none"),
        Err(e) => {
            eprintln!("WARNING: {e}; using --network none instead");
            Ok(NetworkMode::None)
        }
    }
}

fn parse_network(value: &str, accepted: &[&str]) -> Result<NetworkMode> {
    if !accepted.contains(&value) {
        bail!(
            "unsupported network {value:?} (expected {})",
            accepted.join(", ")
        );
    }
    Ok(match value {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        _ => NetworkMode::Default,
    })
}

/// Sizes (`--keep-storage`, `--memory`): a number with an optional unit; like Docker's, `k`/`m`/`g`/`t` (with
/// or without `b`/`ib`) are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?} (expected e.g. 500MB or 10GB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => bail!("invalid size {s:?}: unknown unit {unit:?} (use B, KB, MB, GB or TB)"),
    };
    Ok((n * mult as f64) as u64)
}

/// `until=` durations: Go's syntax (`24h`, `1h30m`, `90s`, `500ms`) plus `d` for days.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let bad = || anyhow::anyhow!("invalid duration {s:?} (expected e.g. 24h, 30m or 7d)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[u_end..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_per_command() {
        assert_eq!(
            parse_network("default", BUILD_NETWORKS).unwrap(),
            NetworkMode::Default
        );
        assert_eq!(
            parse_network("none", BUILD_NETWORKS).unwrap(),
            NetworkMode::None
        );
        assert_eq!(
            parse_network("host", BUILD_NETWORKS).unwrap(),
            NetworkMode::Host
        );
        // `bridge` is Docker's name for a container's default network, not BuildKit's.
        let err = parse_network("bridge", BUILD_NETWORKS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected default, none, host"), "{err}");
        assert_eq!(
            parse_network("bridge", RUN_NETWORKS).unwrap(),
            NetworkMode::Default
        );
        assert!(parse_network("slirp", RUN_NETWORKS).is_err());
    }

    #[test]
    fn log_times_are_rfc3339_or_durations() {
        let t = parse_log_time("--since", "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let ago = chrono::Utc::now() - parse_log_time("--since", "1h30m").unwrap();
        assert!((5399..=5401).contains(&ago.num_seconds()), "{ago}");
        for bad in ["", "10", "5d", "yesterday"] {
            assert!(parse_log_time("--since", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn build_args_take_bare_names_from_the_environment() {
        // PATH is set in any test environment; this name is not.
        let args = build_args(&[
            "A=1=2".into(),
            "PATH".into(),
            "KILN_TEST_SURELY_UNSET_VARIABLE".into(),
        ]);
        assert_eq!(args["A"], "1=2");
        assert!(args.contains_key("PATH"));
        assert_eq!(args.len(), 2);
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("500MB").unwrap(), 500 << 20);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn explicit_modes_other_than_default_need_no_helper() {
        assert_eq!(
            choose_network(Some("none"), RUN_NETWORKS).unwrap(),
            NetworkMode::None
        );
        assert_eq!(
            choose_network(Some("host"), BUILD_NETWORKS).unwrap(),
            NetworkMode::Host
        );
    }

    #[test]
    fn durations_parse_like_go() {
        use std::time::Duration;
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("").is_err());
    }
}
