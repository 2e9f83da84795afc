//! Store maintenance: `kiln check` (verify and repair), `kiln system df` (what uses space) and
//! `kiln prune` (reclaim it).

use std::process::ExitCode;

use anyhow::{Result, bail};
use kiln_store::{PrunedKind, Severity, Store, StoreLock};

use super::flags::{parse_duration, parse_size};
use crate::render::format_size;

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
    let history = super::recording::usage_row(store)?;
    for (name, row) in rows.into_iter().chain([("Build history", &history)]) {
        println!(
            "{name:<18} {:>6} {:>7} {:>11} {:>12}",
            row.total,
            row.active,
            format_size(row.bytes),
            format!(
                "{} ({}%)",
                format_size(row.reclaimable),
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
            format_size(i.bytes),
            format_size(i.shared_bytes)
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
            format_size(r.bytes),
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
                format_size(item.bytes),
                if item.active { "yes" } else { "no" }
            );
        }
    }
    if !u.unreferenced_list.is_empty() {
        println!("\nUnreferenced blobs:\n");
        for (d, size) in &u.unreferenced_list {
            println!("{:<14} {:>11}", d.short(), format_size(*size));
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
    let (builds, history_bytes) = super::recording::prune(store, args.all)?;
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
        println!("deleted {kind} {} ({})", p.id, format_size(p.bytes));
    }
    println!(
        "Total reclaimed space: {} ({} cache records, {} untagged images, {} snapshots, \
         {} blobs, {} cache mounts, {} leftovers, {} explain and {} layer variant records)",
        format_size(report.reclaimed()),
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
            format_size(history_bytes)
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
