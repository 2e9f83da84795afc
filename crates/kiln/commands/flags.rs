//! Flag values several commands share (the network of `build` and `run`, sizes of `prune` and
//! `run`), so that no command file imports another.

use anyhow::{Result, bail};
use kiln_sandbox::NetworkMode;

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
}
