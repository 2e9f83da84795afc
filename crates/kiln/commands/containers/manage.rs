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
    println!(
        "Total reclaimed space: {}",
        crate::render::format_size(bytes)
    );
    Ok(ExitCode::SUCCESS)
}
