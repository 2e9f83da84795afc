//! `kiln diff`, `kiln rename` and `kiln container prune`: thin commands over the runtime's
//! `changes`, `rename` and `prune`, which the Engine API serves too.

use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_runtime::{PruneFilter, Runtime};
use kiln_store::Store;

pub fn diff(store: &Store, query: &str) -> Result<ExitCode> {
    for change in Runtime::new(store.clone()).changes(query)? {
        println!("{} {}", change.kind.letter(), change.path);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rename(store: &Store, query: &str, new_name: &str) -> Result<ExitCode> {
    Runtime::new(store.clone()).rename(query, new_name)?;
    Ok(ExitCode::SUCCESS)
}

pub fn prune(store: &Store, filters: &[String]) -> Result<ExitCode> {
    let pairs = filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("invalid --filter {f:?}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let pruned = Runtime::new(store.clone()).prune(&PruneFilter::parse(&pairs)?)?;
    if !pruned.is_empty() {
        println!("Deleted Containers:");
        for p in &pruned {
            println!("{}", p.record.id);
        }
        println!();
    }
    let bytes: u64 = pruned.iter().map(|p| p.bytes).sum();
    println!("Total reclaimed space: {}", kiln_human_bytes(bytes));
    Ok(ExitCode::SUCCESS)
}

/// Docker's decimal units (`1.2MB`, `0B`).
fn kiln_human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let number = format!("{value:.3}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_in_decimal_units() {
        assert_eq!(super::kiln_human_bytes(0), "0B");
        assert_eq!(super::kiln_human_bytes(1_200_000), "1.2MB");
        assert_eq!(super::kiln_human_bytes(999), "999B");
    }
}
