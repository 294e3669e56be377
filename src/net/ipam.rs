//! Address management: which address of a network's subnet (IPv4, and
//! IPv6 for `--ipv6` networks) a container gets. Pure: it works on the set of addresses already taken, which the
//! caller ([`super::network`]) keeps on disk with the network, keyed by
//! container, under the store's lock.
//!
//! Never hands out the subnet's network address, its broadcast address, or
//! the gateway; allocation is the lowest free address of the `--ip-range`
//! (the whole subnet without one), as Docker's default IPAM does without
//! its `serial` option. IPv6 addresses are sequential too (Docker derives
//! them from the MAC address only on its default bridge without
//! `--fixed-cidr-v6`): the lowest free address of the range, never the
//! subnet-router anycast address (the subnet's first, RFC 4291 2.6.1) or the
//! gateway.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Where a network's addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// The part of it dynamic allocation uses (`--ip-range`); the subnet when
    /// none was given.
    pub range: Ipv4Net,
    /// The gateway, the bridge's own address.
    pub gateway: Ipv4Addr,
}

/// Why an address cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every address of the range is taken.
    #[error("no available {} addresses in {range}", if range.addr().is_ipv4() { "IPv4" } else { "IPv6" })]
    Exhausted {
        /// The range allocation draws from.
        range: IpNet,
    },
    /// A static address outside the subnet.
    #[error("address {ip} is not in the subnet {subnet}")]
    OutsideSubnet {
        /// The address asked for.
        ip: IpAddr,
        /// The network's subnet.
        subnet: IpNet,
    },
    /// A static address that is the network's, broadcast or gateway address.
    #[error("address {ip} is reserved in {subnet} (network, broadcast or gateway address)")]
    Reserved {
        /// The address asked for.
        ip: IpAddr,
        /// The network's subnet.
        subnet: IpNet,
    },
    /// A static address someone has.
    #[error("address {ip} is already in use")]
    InUse {
        /// The address asked for.
        ip: IpAddr,
    },
}

impl Pool {
    /// A pool over `subnet` with `gateway`, allocating from `range` (or the
    /// whole subnet).
    pub fn new(subnet: Ipv4Net, range: Option<Ipv4Net>, gateway: Ipv4Addr) -> Pool {
        Pool {
            subnet: subnet.trunc(),
            range: range.map_or(subnet.trunc(), |r| r.trunc()),
            gateway,
        }
    }

    /// Whether `ip` can never be given to a container: the subnet's network
    /// or broadcast address, or the gateway. (/31 and /32 subnets have no
    /// such addresses, as in RFC 3021, but still the gateway.)
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        if ip == self.gateway {
            return true;
        }
        self.subnet.prefix_len() < 31
            && (ip == self.subnet.network() || ip == self.subnet.broadcast())
    }

    /// The lowest address of the range that is neither reserved nor in
    /// `taken`.
    pub fn allocate(&self, taken: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.range.network());
        let last = u32::from(self.range.broadcast());
        lowest_free(
            (first..=last).map(Ipv4Addr::from),
            |ip| self.subnet.contains(ip) && !self.is_reserved(*ip),
            taken,
            self.range.into(),
        )
    }

    /// Checks a static address (`--ip`): in the subnet (not necessarily in
    /// the range, as in Docker), not reserved, not taken.
    pub fn check_static(&self, ip: Ipv4Addr, taken: &BTreeSet<Ipv4Addr>) -> Result<(), IpamError> {
        check_free(
            ip,
            self.subnet.into(),
            self.subnet.contains(&ip),
            self.is_reserved(ip),
            taken,
        )
    }
}

/// Where a network's IPv6 addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool6 {
    /// The network's IPv6 subnet.
    pub subnet: Ipv6Net,
    /// The part of it dynamic allocation uses; the subnet without one.
    pub range: Ipv6Net,
    /// The gateway, the bridge's own address (or an outside router's).
    pub gateway: Ipv6Addr,
}

impl Pool6 {
    /// A pool over `subnet` with `gateway`, allocating from `range` (or the
    /// whole subnet).
    pub fn new(subnet: Ipv6Net, range: Option<Ipv6Net>, gateway: Ipv6Addr) -> Pool6 {
        Pool6 {
            subnet: subnet.trunc(),
            range: range.map_or(subnet.trunc(), |r| r.trunc()),
            gateway,
        }
    }

    /// Whether `ip` can never be given to a container: the subnet-router
    /// anycast address (the subnet's first; /127 and /128 have none, RFC
    /// 6164) or the gateway.
    pub fn is_reserved(&self, ip: Ipv6Addr) -> bool {
        ip == self.gateway || (self.subnet.prefix_len() < 127 && ip == self.subnet.network())
    }

    /// The lowest address of the range that is neither reserved nor in
    /// `taken`. Only as many addresses as are taken (plus the reserved
    /// ones) are looked at, however large the range.
    pub fn allocate(&self, taken: &BTreeSet<Ipv6Addr>) -> Result<Ipv6Addr, IpamError> {
        let first = u128::from(self.range.network());
        let last = u128::from(self.range.broadcast());
        lowest_free(
            (first..=last).map(Ipv6Addr::from),
            |ip| self.subnet.contains(ip) && !self.is_reserved(*ip),
            taken,
            self.range.into(),
        )
    }

    /// Checks a static address (`--ip6`): in the subnet, not reserved, not
    /// taken.
    pub fn check_static(&self, ip: Ipv6Addr, taken: &BTreeSet<Ipv6Addr>) -> Result<(), IpamError> {
        check_free(
            ip,
            self.subnet.into(),
            self.subnet.contains(&ip),
            self.is_reserved(ip),
            taken,
        )
    }
}

/// The first of `candidates` (in order) that is `usable` and not `taken`;
/// `range` names what ran out when none is.
fn lowest_free<A: Ord>(
    mut candidates: impl Iterator<Item = A>,
    usable: impl Fn(&A) -> bool,
    taken: &BTreeSet<A>,
    range: IpNet,
) -> Result<A, IpamError> {
    candidates
        .find(|ip| usable(ip) && !taken.contains(ip))
        .ok_or(IpamError::Exhausted { range })
}

/// The checks of a static address, in the order their errors win: in
/// `subnet`, not reserved, not taken.
fn check_free<A: Ord + Copy + Into<IpAddr>>(
    ip: A,
    subnet: IpNet,
    in_subnet: bool,
    reserved: bool,
    taken: &BTreeSet<A>,
) -> Result<(), IpamError> {
    if !in_subnet {
        return Err(IpamError::OutsideSubnet {
            ip: ip.into(),
            subnet,
        });
    }
    if reserved {
        return Err(IpamError::Reserved {
            ip: ip.into(),
            subnet,
        });
    }
    if taken.contains(&ip) {
        return Err(IpamError::InUse { ip: ip.into() });
    }
    Ok(())
}

/// The first address after the subnet-router anycast address of `subnet`:
/// Docker's default IPv6 gateway.
pub fn first_host6(subnet: Ipv6Net) -> Ipv6Addr {
    let net = u128::from(subnet.network());
    if subnet.prefix_len() >= 127 {
        Ipv6Addr::from(net)
    } else {
        Ipv6Addr::from(net.saturating_add(1))
    }
}

/// The first usable host address of `subnet`: Docker's default gateway.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    let net = u32::from(subnet.network());
    if subnet.prefix_len() >= 31 {
        Ipv4Addr::from(net)
    } else {
        Ipv4Addr::from(net.saturating_add(1))
    }
}

/// Docker's MAC address for a container address: `02:42` and the four
/// bytes of the IPv4 address (moby `netutils.GenerateMACFromIP`).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(subnet: &str, range: Option<&str>) -> Pool {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Pool::new(
            subnet,
            range.map(|r| r.parse().unwrap()),
            first_host(subnet),
        )
    }

    #[test]
    fn allocation_skips_network_gateway_and_broadcast() {
        let p = pool("10.9.0.0/30", None);
        let mut taken = BTreeSet::new();
        let first = p.allocate(&taken).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 9, 0, 2));
        taken.insert(first);
        assert_eq!(
            p.allocate(&taken),
            Err(IpamError::Exhausted {
                range: "10.9.0.0/30".parse().unwrap()
            })
        );
    }

    #[test]
    fn ipv6_allocation_is_sequential_and_skips_anycast_and_gateway() {
        let subnet: Ipv6Net = "fd00:1:2::/64".parse().unwrap();
        let p = Pool6::new(subnet, None, first_host6(subnet));
        assert_eq!(p.gateway, "fd00:1:2::1".parse::<Ipv6Addr>().unwrap());
        let mut taken = BTreeSet::new();
        let a = p.allocate(&taken).unwrap();
        assert_eq!(a, "fd00:1:2::2".parse::<Ipv6Addr>().unwrap());
        taken.insert(a);
        assert_eq!(
            p.allocate(&taken).unwrap(),
            "fd00:1:2::3".parse::<Ipv6Addr>().unwrap()
        );
        assert!(matches!(
            p.check_static("fd00:1:2::".parse().unwrap(), &taken),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            p.check_static("fd00:1:2::2".parse().unwrap(), &taken),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            p.check_static("fd00:1:3::2".parse().unwrap(), &taken),
            Err(IpamError::OutsideSubnet { .. })
        ));
        let tiny = Pool6::new(
            "fd00::/126".parse().unwrap(),
            None,
            "fd00::1".parse().unwrap(),
        );
        let full: BTreeSet<Ipv6Addr> = ["fd00::2", "fd00::3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert!(matches!(
            tiny.allocate(&full),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn allocation_stays_in_the_ip_range() {
        let p = pool("10.9.0.0/24", Some("10.9.0.128/25"));
        assert_eq!(
            p.allocate(&BTreeSet::new()).unwrap(),
            Ipv4Addr::new(10, 9, 0, 128)
        );
    }

    #[test]
    fn static_addresses_are_checked() {
        let p = pool("10.9.0.0/24", None);
        let taken: BTreeSet<_> = [Ipv4Addr::new(10, 9, 0, 5)].into();
        assert!(p.check_static(Ipv4Addr::new(10, 9, 0, 6), &taken).is_ok());
        assert!(matches!(
            p.check_static(Ipv4Addr::new(10, 9, 0, 5), &taken),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            p.check_static(Ipv4Addr::new(10, 9, 0, 1), &taken),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            p.check_static(Ipv4Addr::new(10, 9, 0, 255), &taken),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            p.check_static(Ipv4Addr::new(10, 9, 1, 5), &taken),
            Err(IpamError::OutsideSubnet { .. })
        ));
    }

    #[test]
    fn macs_follow_dockers_rule_and_parse_back() {
        let mac = mac_of(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(mac));
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:zz"), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Static(u8),
        Release(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Allocate),
            1 => any::<u8>().prop_map(Op::Static),
            2 => any::<usize>().prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Whatever mix of dynamic, static and released addresses, no live
        /// address is ever held twice, and every one is a usable address of
        /// the subnet.
        #[test]
        fn no_address_is_ever_handed_out_twice(
            prefix in 24u8..=29,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 77, 3, 0), prefix).unwrap();
            let p = Pool::new(subnet, None, first_host(subnet));
            let mut live: Vec<Ipv4Addr> = Vec::new();
            for op in ops {
                let taken: BTreeSet<Ipv4Addr> = live.iter().copied().collect();
                match op {
                    Op::Allocate => {
                        if let Ok(ip) = p.allocate(&taken) {
                            live.push(ip);
                        }
                    }
                    Op::Static(last) => {
                        let ip = Ipv4Addr::new(10, 77, 3, last);
                        if p.check_static(ip, &taken).is_ok() {
                            live.push(ip);
                        }
                    }
                    Op::Release(i) => {
                        if !live.is_empty() {
                            live.remove(i % live.len());
                        }
                    }
                }
                let unique: BTreeSet<Ipv4Addr> = live.iter().copied().collect();
                prop_assert_eq!(unique.len(), live.len());
                for ip in &live {
                    prop_assert!(subnet.contains(ip));
                    prop_assert!(!p.is_reserved(*ip));
                }
            }
        }
    }
}
