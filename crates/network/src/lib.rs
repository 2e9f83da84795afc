//! Container networks: what a sandbox's network namespace is connected to. The sandbox only
//! creates a namespace and waits until its caller has connected it
//! (`kiln_sandbox::NetworkMode::Prepared`); this crate does the connecting for bridge networks
//! and keeps their records, so the sandbox stays mechanism and knows no networks.
//!
//! The kinds of network a container can join: `none` and `host` need nothing from here (the
//! sandbox makes an empty namespace or shares the host's), the default network is the
//! sandbox's slirp4netns, and bridge networks — the predefined `bridge` and user-defined ones —
//! are this crate's: a Linux bridge per network (netlink, [`netlink`]), a veth pair per
//! container and network, addresses from the network's record ([`ipam`], [`state`]) and
//! masquerade and isolation rules in an nftables table per network ([`nft`]). [`Networks`] is
//! the service the CLI, the daemon and the runtime call. See docs/networking.md.

// A library reports through its return values; only the `kiln` binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod api;
pub mod dns;
pub mod error;
pub mod ipam;
mod kernel;
mod leftovers;
pub mod netlink;
pub mod nft;
pub mod ports;
mod service;
pub mod state;
mod user_netns;

pub use error::{NetworkError, Result};
pub use ipam::{Addressing, Ipv4Net};
pub use leftovers::Leftover;
pub use service::{
    CreateRequest, DEFAULT_BRIDGE, DEFAULT_BRIDGE_INTERFACE, EndpointRequest, Networks,
    host_interface, parse_mac, privileged, rootless,
};
pub use state::{Driver, EndpointRecord, NetworkRecord};
pub use user_netns::user_namespace_to_join;
