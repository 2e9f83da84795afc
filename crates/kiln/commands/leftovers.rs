//! What a crash can leave of networks, for `kiln check` (reported, removed with `--repair`)
//! and `kiln serve` (removed at start): shared by the two commands.

use anyhow::Result;

/// The network leftovers of `store` ([`kiln_network::Networks::leftovers`]), removed with
/// `repair`.
pub fn network_leftovers(
    store: &kiln_store::Store,
    repair: bool,
) -> Result<Vec<kiln_network::Leftover>> {
    let containers = store.list_containers()?.into_iter().map(|c| c.id).collect();
    Ok(kiln_network::Networks::open(store.root()).leftovers(&containers, repair)?)
}
