//! Address management: IPv4 subnets (CIDR), the checks a network's addressing must pass, and
//! handing out addresses so that none is given twice.
//!
//! The IPAM record is the network record itself: the gateway and every endpoint's address are
//! in it, and allocation happens while the network records are locked (`state.rs`), so two
//! processes never pick the same free address. The lowest free address is taken (Docker walks
//! on from the last one handed out; kiln's choice keeps addresses small and predictable, and a
//! released address is only reused once the container it belonged to is gone).

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// An IPv4 network in CIDR notation: `172.18.0.0/16`. The address is kept as written (Docker
/// keeps `--ip-range 10.1.2.128/25` as given) and [`Ipv4Net::network`] masks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    address: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Result<Ipv4Net> {
        if prefix > 32 {
            return Err(NetworkError::invalid(
                "subnet",
                format!("{address}/{prefix}"),
                "the prefix length is more than 32",
            ));
        }
        Ok(Ipv4Net { address, prefix })
    }

    pub fn prefix(self) -> u8 {
        self.prefix
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The network's own address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    /// Whether the address was written with host bits (`10.1.2.3/24`).
    pub fn has_host_bits(self) -> bool {
        self.address != self.network()
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two networks share any address.
    pub fn overlaps(self, other: Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Whether all of `other` lies inside this network.
    pub fn covers(self, other: Ipv4Net) -> bool {
        self.prefix <= other.prefix && self.contains(other.network())
    }

    /// The first address after the network address: the default gateway.
    pub fn first_host(self) -> Option<Ipv4Addr> {
        self.hosts().next()
    }

    /// The addresses a host may have: all but the network and broadcast addresses (a /31 or
    /// /32 has no room for a gateway and a container, and yields nothing).
    fn hosts(self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network()).saturating_add(1);
        let last = u32::from(self.broadcast()).saturating_sub(1);
        let usable = self.prefix < 31;
        (first..=last).filter(move |_| usable).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Ipv4Net> {
        let bad = |reason: &str| NetworkError::invalid("subnet", s, reason);
        let (address, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected an IPv4 network such as 172.20.0.0/16"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| bad("not an IPv4 address before the '/' (IPv6 is not supported yet)"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad("the prefix length must be a number from 0 to 32"))?;
        Ipv4Net::new(address, prefix)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = NetworkError;
    fn try_from(s: String) -> Result<Ipv4Net> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(net: Ipv4Net) -> String {
        net.to_string()
    }
}

/// A network's addressing, checked: the subnet, its gateway (on the bridge) and the range
/// containers get addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Addressing {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
}

impl Addressing {
    /// Checks what `network create` was given: the subnet must be a network address with room
    /// for a gateway and a container, the gateway and the range inside it.
    pub fn new(
        subnet: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        ip_range: Option<Ipv4Net>,
    ) -> Result<Addressing> {
        if subnet.prefix() > 30 {
            return Err(NetworkError::invalid(
                "subnet",
                subnet,
                "too small: a /30 is the smallest with room for a gateway and a container",
            ));
        }
        let first = subnet.first_host().ok_or_else(|| {
            NetworkError::invalid("subnet", subnet, "has no address for a gateway")
        })?;
        let gateway = gateway.unwrap_or(first);
        if !subnet.contains(gateway) {
            return Err(NetworkError::invalid(
                "gateway",
                gateway,
                format!("not inside the subnet {subnet}"),
            ));
        }
        if gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(NetworkError::invalid(
                "gateway",
                gateway,
                format!("the network or broadcast address of {subnet}"),
            ));
        }
        if let Some(range) = ip_range
            && !subnet.covers(range)
        {
            return Err(NetworkError::invalid(
                "ip range",
                range,
                format!("not inside the subnet {subnet}"),
            ));
        }
        Ok(Addressing {
            subnet,
            gateway,
            ip_range,
        })
    }

    /// Checks an address asked for (`--ip`): inside the subnet, not the gateway, network or
    /// broadcast address, not taken.
    pub fn check_requested(
        &self,
        ip: Ipv4Addr,
        taken: &BTreeSet<Ipv4Addr>,
        network: &str,
    ) -> Result<()> {
        if !self.subnet.contains(ip) {
            return Err(NetworkError::invalid(
                "IP address",
                ip,
                format!("not inside the subnet {} of network {network}", self.subnet),
            ));
        }
        if ip == self.subnet.network() || ip == self.subnet.broadcast() {
            return Err(NetworkError::invalid(
                "IP address",
                ip,
                format!("the network or broadcast address of {}", self.subnet),
            ));
        }
        if ip == self.gateway || taken.contains(&ip) {
            return Err(NetworkError::AddressInUse {
                address: ip.to_string(),
                network: network.to_owned(),
            });
        }
        Ok(())
    }

    /// The lowest free address of the range (or subnet): not the gateway, not taken.
    pub fn allocate(&self, taken: &BTreeSet<Ipv4Addr>, network: &str) -> Result<Ipv4Addr> {
        let pool = self.ip_range.unwrap_or(self.subnet);
        let (first, last) = (u32::from(pool.network()), u32::from(pool.broadcast()));
        (first..=last)
            .map(Ipv4Addr::from)
            .filter(|ip| *ip != self.subnet.network() && *ip != self.subnet.broadcast())
            .find(|ip| *ip != self.gateway && !taken.contains(ip))
            .ok_or_else(|| NetworkError::Exhausted(network.to_owned()))
    }
}

/// The subnets new networks get when none is given, in order, as Docker's default address
/// pools: 172.17–172.31 as /16s (172.17 is the default bridge's), then 192.168.0.0/16 cut into
/// /20s.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17..=31u8).map(|b| Ipv4Net {
        address: Ipv4Addr::new(172, b, 0, 0),
        prefix: 16,
    });
    let twenties = (0..16u8).map(|i| Ipv4Net {
        address: Ipv4Addr::new(192, 168, i * 16, 0),
        prefix: 20,
    });
    sixteens.chain(twenties)
}

/// The MAC address Docker derives from a container's IPv4 address: 02:42 and the address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_masks_cidr() {
        let n = net("10.1.2.130/25");
        assert_eq!(n.network(), ip("10.1.2.128"));
        assert_eq!(n.broadcast(), ip("10.1.2.255"));
        assert_eq!(n.to_string(), "10.1.2.130/25");
        assert!(n.contains(ip("10.1.2.200")));
        assert!(!n.contains(ip("10.1.2.127")));
        assert_eq!(net("0.0.0.0/0").broadcast(), ip("255.255.255.255"));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/64",
            "10.0.0.0/x",
        ] {
            let err = bad.parse::<Ipv4Net>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
            assert_eq!(err.kind(), kiln_error::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn overlap_and_cover() {
        assert!(net("172.18.0.0/16").overlaps(net("172.18.5.0/24")));
        assert!(net("172.18.5.0/24").overlaps(net("172.18.0.0/16")));
        assert!(!net("172.18.0.0/16").overlaps(net("172.19.0.0/16")));
        assert!(net("10.0.0.0/8").covers(net("10.9.0.0/16")));
        assert!(!net("10.9.0.0/16").covers(net("10.0.0.0/8")));
    }

    #[test]
    fn gateway_and_range_must_be_inside_the_subnet() {
        let a = Addressing::new(net("10.5.0.0/24"), None, None).unwrap();
        assert_eq!(a.gateway, ip("10.5.0.1"));
        let err = Addressing::new(net("10.5.0.0/24"), Some(ip("10.6.0.1")), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("not inside the subnet 10.5.0.0/24"),
            "{err}"
        );
        let err = Addressing::new(net("10.5.0.0/24"), Some(ip("10.5.0.255")), None).unwrap_err();
        assert!(err.to_string().contains("broadcast"), "{err}");
        let err = Addressing::new(net("10.5.0.0/24"), None, Some(net("10.5.1.0/25"))).unwrap_err();
        assert!(err.to_string().contains("ip range"), "{err}");
        assert!(Addressing::new(net("10.5.0.0/31"), None, None).is_err());
    }

    #[test]
    fn allocation_skips_gateway_and_taken_and_never_repeats() {
        let a = Addressing::new(net("10.5.0.0/29"), Some(ip("10.5.0.2")), None).unwrap();
        let mut taken = BTreeSet::new();
        let mut got = Vec::new();
        while let Ok(next) = a.allocate(&taken, "n") {
            assert!(taken.insert(next), "{next} handed out twice");
            got.push(next.to_string());
        }
        // .0 network, .2 gateway, .7 broadcast are never handed out.
        assert_eq!(
            got,
            ["10.5.0.1", "10.5.0.3", "10.5.0.4", "10.5.0.5", "10.5.0.6"]
        );
        assert!(matches!(
            a.allocate(&taken, "n"),
            Err(NetworkError::Exhausted(_))
        ));
        // A released address is the next one given.
        taken.remove(&ip("10.5.0.4"));
        assert_eq!(a.allocate(&taken, "n").unwrap(), ip("10.5.0.4"));
    }

    #[test]
    fn allocation_stays_in_the_ip_range() {
        let a = Addressing::new(net("10.5.0.0/24"), None, Some(net("10.5.0.128/30"))).unwrap();
        let mut taken = BTreeSet::new();
        let first = a.allocate(&taken, "n").unwrap();
        assert_eq!(first, ip("10.5.0.128"));
        taken.insert(first);
        assert_eq!(a.allocate(&taken, "n").unwrap(), ip("10.5.0.129"));
    }

    #[test]
    fn requested_addresses_are_checked() {
        let a = Addressing::new(net("10.5.0.0/24"), None, None).unwrap();
        let taken = BTreeSet::from([ip("10.5.0.9")]);
        assert!(a.check_requested(ip("10.5.0.10"), &taken, "n").is_ok());
        let err = a.check_requested(ip("10.5.0.9"), &taken, "n").unwrap_err();
        assert_eq!(err.kind(), kiln_error::ErrorKind::Conflict);
        assert!(err.to_string().contains("10.5.0.9"), "{err}");
        assert!(matches!(
            a.check_requested(ip("10.5.0.1"), &taken, "n"),
            Err(NetworkError::AddressInUse { .. })
        ));
        assert!(a.check_requested(ip("10.6.0.1"), &taken, "n").is_err());
        assert!(a.check_requested(ip("10.5.0.255"), &taken, "n").is_err());
    }

    #[test]
    fn pools_start_after_nothing_and_macs_follow_the_address() {
        let pools: Vec<String> = default_pools().map(|p| p.to_string()).collect();
        assert_eq!(pools[0], "172.17.0.0/16");
        assert_eq!(pools[14], "172.31.0.0/16");
        assert_eq!(pools[15], "192.168.0.0/20");
        assert_eq!(pools.len(), 31);
        assert_eq!(mac_string(mac_for(ip("172.17.0.2"))), "02:42:ac:11:00:02");
    }
}
