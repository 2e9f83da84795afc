//! Store maintenance: `kiln check` (verify and repair), `kiln system df` (what uses space) and
//! `kiln prune` (reclaim it).

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_store::{PrunedKind, Severity, Store, StoreLock};

use super::flags::parse_size;

/// Takes the store for exclusive use, saying so when running builds make us wait.
fn lock_store_exclusive(store: &Store) -> Result<StoreLock> {
    if let Some(lock) = store.try_lock_exclusive()? {
        return Ok(lock);
    }
    eprintln!("waiting for other kiln processes using the store to finish...");
    Ok(store.lock_exclusive()?)
}

/// `kiln check [--repair]`.
pub fn check(store: &Store, repair: bool) -> Result<ExitCode> {
    let lock = lock_store_exclusive(store)?;
    let report = store.check(&lock, repair)?;
    let (mut corrupt, mut leftovers) = (0, 0);
    for f in &report.findings {
        let what = match f.severity {
            Severity::Corrupt => {
                corrupt += usize::from(!f.repaired);
                "corrupt"
            }
            Severity::Leftover => {
                leftovers += 1;
                "leftover"
            }
        };
        let fate = if f.repaired { " (removed)" } else { "" };
        println!("{what}: {}: {}{fate}", f.object, f.problem);
    }
    for l in super::leftovers::network_leftovers(store, repair)? {
        leftovers += 1;
        let fate = if l.repaired { " (removed)" } else { "" };
        println!("leftover: {}: {}{fate}", l.object, l.problem);
    }
    println!(
        "checked {} blobs, {} image names, {} cache records, {} snapshots: {}",
        report.blobs,
        report.names,
        report.cache_records,
        report.snapshots,
        match (corrupt, leftovers) {
            (0, 0) => "the store is consistent".to_owned(),
            (0, n) if repair => format!("consistent; {n} leftovers removed"),
            (0, n) => format!("consistent; {n} leftovers (kiln check --repair removes them)"),
            (c, _) => format!("{c} problems"),
        }
    );
    Ok(if report.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `kiln system df [-v]`.
pub fn df(store: &Store, verbose: bool) -> Result<ExitCode> {
    let u = store.disk_usage()?;
    println!(
        "{:<18} {:>6} {:>7} {:>11} {:>12}",
        "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"
    );
    let rows = [
        ("Images", &u.images),
        ("Build cache", &u.cache_records),
        ("Snapshots", &u.snapshots),
        ("Cache mounts", &u.cache_mounts),
        ("Unreferenced blobs", &u.unreferenced_blobs),
    ];
    let history = super::history::usage_row(store)?;
    for (name, row) in rows.into_iter().chain([("Build history", &history)]) {
        println!(
            "{name:<18} {:>6} {:>7} {:>11} {:>12}",
            row.total,
            row.active,
            human_size(row.bytes),
            format!(
                "{} ({}%)",
                human_size(row.reclaimable),
                (row.reclaimable * 100).checked_div(row.bytes).unwrap_or(0)
            )
        );
    }
    if !verbose {
        return Ok(ExitCode::SUCCESS);
    }
    println!("\nImages space usage:\n");
    println!(
        "{:<50} {:<14} {:>11} {:>11}",
        "NAME", "MANIFEST", "SIZE", "SHARED"
    );
    for i in &u.image_list {
        let names = if i.names.is_empty() {
            "<none>".to_owned()
        } else {
            i.names.join(", ")
        };
        println!(
            "{names:<50} {:<14} {:>11} {:>11}",
            i.manifest.short(),
            human_size(i.bytes),
            human_size(i.shared_bytes)
        );
    }
    println!("\nBuild cache usage:\n");
    println!(
        "{:<14} {:<14} {:>11} {:<8} LAST USED",
        "KEY", "LAYER", "SIZE", "IN IMAGE"
    );
    for r in &u.record_list {
        println!(
            "{:<14} {:<14} {:>11} {:<8} {}",
            short_hex(r.key.hex()),
            r.layer
                .as_ref()
                .map_or("-".to_owned(), |l| l.short().to_owned()),
            human_size(r.bytes),
            if r.in_image { "yes" } else { "no" },
            ago(r.last_used)
        );
    }
    for (title, list) in [
        ("Snapshots", &u.snapshot_list),
        ("Cache mounts", &u.cache_mount_list),
    ] {
        println!("\n{title} usage:\n");
        println!("{:<14} {:>11} ACTIVE", "ID", "SIZE");
        for item in list {
            println!(
                "{:<14} {:>11} {}",
                short_hex(item.id.hex()),
                human_size(item.bytes),
                if item.active { "yes" } else { "no" }
            );
        }
    }
    if !u.unreferenced_list.is_empty() {
        println!("\nUnreferenced blobs:\n");
        for (d, size) in &u.unreferenced_list {
            println!("{:<14} {:>11}", d.short(), human_size(*size));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln prune`.
pub fn prune(store: &Store, args: &crate::cli::PruneArgs) -> Result<ExitCode> {
    let mut opts = kiln_store::PruneOptions {
        all: args.all,
        keep_storage: args.keep_storage.as_deref().map(parse_size).transpose()?,
        unused_for: None,
        scope: kiln_store::PruneScope::Everything,
    };
    for filter in &args.filters {
        match filter.split_once('=') {
            Some(("until", d)) => opts.unused_for = Some(parse_duration(d)?),
            _ => bail!("unsupported filter {filter:?}: only until=DURATION (e.g. until=24h)"),
        }
    }
    if !args.force {
        let what = if args.all {
            "all build cache, untagged images and cache mounts"
        } else {
            "build cache and data no image needs"
        };
        eprintln!("WARNING! This will remove {what} (tagged images stay). Use -f to skip this.");
        eprint!("Are you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let lock = lock_store_exclusive(store)?;
    let report = store.prune(&lock, &opts)?;
    drop(lock);
    // The build history's own rules (count and age); with --all every finished build goes.
    let (builds, history_bytes) = super::history::prune(store, args.all)?;
    for p in &report.removed {
        let kind = match p.kind {
            PrunedKind::Leftover => "leftover",
            PrunedKind::Blob => "blob",
            PrunedKind::Snapshot => "snapshot",
            PrunedKind::CacheRecord => "cache record",
            PrunedKind::Image => "untagged image",
            PrunedKind::CacheMount => "cache mount",
            PrunedKind::ExplainRecord => "explain record",
            PrunedKind::LayerVariant => "layer variant record",
        };
        println!("deleted {kind} {} ({})", p.id, human_size(p.bytes));
    }
    println!(
        "Total reclaimed space: {} ({} cache records, {} untagged images, {} snapshots, \
         {} blobs, {} cache mounts, {} leftovers, {} explain and {} layer variant records)",
        human_size(report.reclaimed()),
        report.count(PrunedKind::CacheRecord),
        report.count(PrunedKind::Image),
        report.count(PrunedKind::Snapshot),
        report.count(PrunedKind::Blob),
        report.count(PrunedKind::CacheMount),
        report.count(PrunedKind::Leftover),
        report.count(PrunedKind::ExplainRecord),
        report.count(PrunedKind::LayerVariant),
    );
    if builds > 0 {
        println!(
            "Build history: {builds} builds removed ({})",
            human_size(history_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn short_hex(hex: &str) -> &str {
    &hex[..12.min(hex.len())]
}

fn ago(t: std::time::SystemTime) -> String {
    let secs = t.elapsed().map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs} seconds ago"),
        60..3600 => format!("{} minutes ago", secs / 60),
        3600..86400 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// Sizes as Docker prints them (decimal units, three significant digits).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let number = format!("{v:.3}");
    format!(
        "{}{}",
        number.trim_end_matches('0').trim_end_matches('.'),
        UNITS[unit]
    )
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
    use std::time::Duration;

    #[test]
    fn durations_parse_like_go() {
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

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500), "1.5kB");
        assert_eq!(human_size(12_345_678), "12.346MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }
}
