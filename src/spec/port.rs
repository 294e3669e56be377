//! Published ports as `docker run -p` and compose `ports:` write them:
//! `80`, `8080:80`, `127.0.0.1:8080:80/udp`, `[::1]::80`, `8000-8010:8000-8010`.
//!
//! The grammar is go-connections `nat.ParsePortSpec`, which docker/cli and compose
//! call; [`PortSpec`]'s `FromStr` follows it rule for rule. This module only turns
//! text into values: it never binds a port or checks whether one is free.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transport protocol a port is published for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum Protocol {
    /// `tcp`, the default when none is written.
    #[default]
    Tcp,
    /// `udp`.
    Udp,
    /// `sctp`.
    Sctp,
}

/// A non-empty inclusive range of ports, `80` or `8000-8010`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// The first port.
    pub start: u16,
    /// The last port, included; equal to `start` for a single port.
    pub end: u16,
}

/// One `-p` / `ports:` entry as the user wrote it.
///
/// Valid specs (everything the parser returns) have no host range, a host range
/// as long as the container range (host port *i* maps to container port *i*), or
/// a single container port with any host range ("pick a free one of these").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    /// The host address to bind, or `None` for all addresses.
    pub host_ip: Option<IpAddr>,
    /// The host ports, or `None` for an ephemeral port chosen at start.
    pub host: Option<PortRange>,
    /// The container ports.
    pub container: PortRange,
    /// The protocol.
    pub protocol: Protocol,
}

/// One container port and how it is published: what [`PortSpec::bindings`] yields.
///
/// Its text form is a [`PortSpec`] with exactly one container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortBinding {
    /// The host address to bind, or `None` for all addresses.
    pub host_ip: Option<IpAddr>,
    /// The host port; a range of more than one port means "any free port of
    /// these"; `None` means an ephemeral port.
    pub host_port: Option<PortRange>,
    /// The container port.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

/// Why a port spec did not parse. Messages are go-connections' own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Nothing (or only `/proto`) after the last colon.
    #[error("no port specified: {input}<empty>")]
    NoPort {
        /// The whole spec.
        input: String,
    },
    /// The part before the host port is not an IP address.
    #[error("invalid IP address: {ip}")]
    InvalidIp {
        /// The text that should have been an address.
        ip: String,
    },
    /// The container port or range is not `N` or `N-M` with `N <= M <= 65535`.
    #[error("invalid containerPort: {port}")]
    InvalidContainerPort {
        /// The container part.
        port: String,
    },
    /// The host port or range is not `N` or `N-M` with `N <= M <= 65535`.
    #[error("invalid hostPort: {port}")]
    InvalidHostPort {
        /// The host part.
        port: String,
    },
    /// A container range and a host range of different lengths.
    #[error("invalid ranges specified for container and host Ports: {container} and {host}")]
    RangeMismatch {
        /// The container range as written.
        container: String,
        /// The host range as written.
        host: String,
    },
    /// The protocol after `/` is not `tcp`, `udp` or `sctp`.
    #[error("invalid proto: {proto}")]
    InvalidProto {
        /// The protocol as written.
        proto: String,
    },
    /// A bare port range (not inside a spec) is not `N` or `N-M`.
    #[error("invalid port range: {range}")]
    InvalidRange {
        /// The range as written.
        range: String,
    },
    /// A port binding must name exactly one container port.
    #[error("invalid port binding: {spec}: it must name exactly one container port")]
    NotSinglePort {
        /// The spec as written.
        spec: String,
    },
}

impl Protocol {
    /// The lower-case name Docker uses: `tcp`, `udp` or `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = PortError;

    /// Case-insensitive, as go-connections lower-cases before checking.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PortError::InvalidProto {
                proto: s.to_owned(),
            })
    }
}

impl TryFrom<String> for Protocol {
    type Error = PortError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> Self {
        p.to_string()
    }
}

impl PortRange {
    /// The range holding just `port`.
    pub fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// How many ports the range holds (0 only if `end < start`, which the parser
    /// never produces).
    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            usize::from(self.end - self.start) + 1
        }
    }

    /// Whether the range holds no port (only if `end < start`).
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }

    /// The ports in order.
    pub fn iter(&self) -> RangeInclusive<u16> {
        self.start..=self.end
    }
}

impl IntoIterator for PortRange {
    type Item = u16;
    type IntoIter = RangeInclusive<u16>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for &PortRange {
    type Item = u16;
    type IntoIter = RangeInclusive<u16>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_range(s).ok_or_else(|| PortError::InvalidRange {
            range: s.to_owned(),
        })
    }
}

impl TryFrom<String> for PortRange {
    type Error = PortError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> Self {
        r.to_string()
    }
}

/// go-connections `ParsePortRange`: `N` or `N-M`, decimal, leading zeros allowed,
/// `N <= M`.
///
/// Go ignores anything after a second `-` (`1-2-3` is `1-2`); that is a bug, so
/// such ranges are rejected here.
fn parse_range(s: &str) -> Option<PortRange> {
    let (start, end) = match s.split_once('-') {
        None => {
            let port = parse_port(s)?;
            (port, port)
        }
        Some((start, end)) => (parse_port(start)?, parse_port(end)?),
    };
    (start <= end).then_some(PortRange { start, end })
}

/// Go's `strconv.ParseUint(s, 10, 16)`: ASCII digits only (no sign), at most 65535.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u16, |acc, b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u16::from(b - b'0'))
        } else {
            None
        }
    })
}

/// go-connections `SplitProtoPort`: `port[/proto]`; an empty `proto` means tcp
/// and anything after a second `/` is ignored, as in Go.
fn split_proto_port(raw: &str) -> (&str, &str) {
    let mut parts = raw.split('/');
    let port = parts.next().unwrap_or_default();
    if port.is_empty() {
        return ("", "");
    }
    match parts.next() {
        None | Some("") => ("tcp", port),
        Some(proto) => (proto, port),
    }
}

/// go-connections `ParsePortSpec`'s address handling: `[addr]` loses its brackets
/// (Go does it with `net.SplitHostPort(ip + ":")`, which demands that the first
/// `]` ends the text and that no other bracket appears).
fn parse_host_ip(ip: &str) -> Result<IpAddr, PortError> {
    let invalid = || PortError::InvalidIp { ip: ip.to_owned() };
    let bare = match ip.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .filter(|inner| !inner.contains(['[', ']']))
            .ok_or_else(invalid)?,
        None => ip,
    };
    bare.parse().map_err(|_| invalid())
}

impl FromStr for PortSpec {
    type Err = PortError;

    /// `[[ip:][hostPort]:]containerPort[/proto]`, split like go-connections: the
    /// last colon-separated part is the container port, the one before it the host
    /// port, and everything before that the address (so bare IPv6 works:
    /// `::1:80:80`).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut parts = input.rsplitn(3, ':');
        let container_part = parts.next().unwrap_or_default();
        let host_part = parts.next().unwrap_or_default();
        let ip_part = parts.next().unwrap_or_default();
        let (proto, container_part) = split_proto_port(container_part);

        // The checks run in go-connections' order so the same error wins.
        let host_ip = if ip_part.is_empty() {
            None
        } else {
            Some(parse_host_ip(ip_part)?)
        };
        if container_part.is_empty() {
            return Err(PortError::NoPort {
                input: input.to_owned(),
            });
        }
        let container =
            parse_range(container_part).ok_or_else(|| PortError::InvalidContainerPort {
                port: container_part.to_owned(),
            })?;
        let host = if host_part.is_empty() {
            None
        } else {
            Some(
                parse_range(host_part).ok_or_else(|| PortError::InvalidHostPort {
                    port: host_part.to_owned(),
                })?,
            )
        };
        if let Some(host) = host
            && host.len() != container.len()
            && container.len() != 1
        {
            return Err(PortError::RangeMismatch {
                container: container_part.to_owned(),
                host: host_part.to_owned(),
            });
        }
        let protocol = proto.parse()?;
        Ok(PortSpec {
            host_ip,
            host,
            container,
            protocol,
        })
    }
}

impl PortSpec {
    /// One binding per container port, in order.
    ///
    /// With equal-length ranges host port *i* goes to container port *i*; a single
    /// container port keeps the whole host range. A spec the parser would reject
    /// (longer ranges of different lengths) pairs ports while both last and leaves
    /// the rest without a host port.
    pub fn bindings(&self) -> Vec<PortBinding> {
        let binding = |container_port, host_port| PortBinding {
            host_ip: self.host_ip,
            host_port,
            container_port,
            protocol: self.protocol,
        };
        match self.host {
            Some(host) if self.container.len() == 1 => {
                vec![binding(self.container.start, Some(host))]
            }
            Some(host) => {
                let mut host_ports = host.iter();
                self.container
                    .iter()
                    .map(|port| binding(port, host_ports.next().map(PortRange::single)))
                    .collect()
            }
            None => self
                .container
                .iter()
                .map(|port| binding(port, None))
                .collect(),
        }
    }
}

impl fmt::Display for PortSpec {
    /// The short form, with IPv6 addresses in brackets and `/tcp` left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        if let Some(host) = self.host {
            write!(f, "{host}:")?;
        } else if self.host_ip.is_some() {
            f.write_str(":")?;
        }
        write!(f, "{}", self.container)?;
        if self.protocol != Protocol::Tcp {
            write!(f, "/{}", self.protocol)?;
        }
        Ok(())
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    /// A spec string, or a bare port number (compose allows `ports: [80]`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortSpecVisitor)
    }
}

/// Accepts `"8080:80"` or `80`.
struct PortSpecVisitor;

impl Visitor<'_> for PortSpecVisitor {
    type Value = PortSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port spec such as \"8080:80/tcp\" or a port number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortSpec, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortSpec, E> {
        let port = u16::try_from(v).map_err(|_| {
            E::custom(PortError::InvalidContainerPort {
                port: v.to_string(),
            })
        })?;
        Ok(PortSpec {
            host_ip: None,
            host: None,
            container: PortRange::single(port),
            protocol: Protocol::Tcp,
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortSpec, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(PortError::InvalidContainerPort {
                port: v.to_string(),
            })),
        }
    }
}

impl PortBinding {
    /// This binding as a spec with a single container port.
    pub fn to_spec(&self) -> PortSpec {
        PortSpec {
            host_ip: self.host_ip,
            host: self.host_port,
            container: PortRange::single(self.container_port),
            protocol: self.protocol,
        }
    }
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_spec().fmt(f)
    }
}

impl FromStr for PortBinding {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let spec: PortSpec = s.parse()?;
        match spec.bindings().as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(PortError::NotSinglePort { spec: s.to_owned() }),
        }
    }
}

impl TryFrom<String> for PortBinding {
    type Error = PortError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PortBinding> for String {
    fn from(b: PortBinding) -> Self {
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(s: &str) -> PortSpec {
        s.parse().expect("valid spec")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("valid address"))
    }

    #[test]
    fn bare_port_publishes_on_an_ephemeral_host_port() {
        assert_eq!(
            spec("80"),
            PortSpec {
                host_ip: None,
                host: None,
                container: PortRange::single(80),
                protocol: Protocol::Tcp,
            }
        );
    }

    #[test]
    fn address_host_and_protocol_are_all_read() {
        let s = spec("127.0.0.1:8080:80/UDP");
        assert_eq!(s.host_ip, ip("127.0.0.1"));
        assert_eq!(s.host, Some(PortRange::single(8080)));
        assert_eq!(s.protocol, Protocol::Udp);
    }

    #[test]
    fn ipv6_addresses_work_with_and_without_brackets() {
        assert_eq!(spec("[::1]:80:80").host_ip, ip("::1"));
        assert_eq!(spec("::1:80:80").host_ip, ip("::1"));
        assert_eq!(spec("::::80").host_ip, ip("::"));
        assert_eq!(spec("[1.2.3.4]::80").host_ip, ip("1.2.3.4"));
    }

    #[test]
    fn malformed_brackets_are_invalid_addresses() {
        for bad in [
            "[::1:80:80",
            "[::1]x:80:80",
            "[[::1]]:80:80",
            "[::1]:5:80:80",
        ] {
            assert!(
                matches!(bad.parse::<PortSpec>(), Err(PortError::InvalidIp { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranges_pair_up_port_by_port() {
        let ports: Vec<_> = spec("1234-1235:3333-3334")
            .bindings()
            .into_iter()
            .map(|b| (b.host_port, b.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                (Some(PortRange::single(1234)), 3333),
                (Some(PortRange::single(1235)), 3334)
            ]
        );
    }

    #[test]
    fn host_range_for_one_container_port_stays_a_range() {
        let b = spec("8000-8002:80").bindings();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].host_port,
            Some(PortRange {
                start: 8000,
                end: 8002
            })
        );
    }

    #[test]
    fn odd_ranges_are_rejected() {
        assert!(matches!(
            "1-2:3-5".parse::<PortSpec>(),
            Err(PortError::RangeMismatch { .. })
        ));
        assert!(matches!(
            "80:1-2-3".parse::<PortSpec>(),
            Err(PortError::InvalidContainerPort { .. })
        ));
        assert!(matches!(
            "x:80".parse::<PortSpec>(),
            Err(PortError::InvalidHostPort { .. })
        ));
        assert!(matches!(
            "+80".parse::<PortSpec>(),
            Err(PortError::InvalidContainerPort { .. })
        ));
    }

    #[test]
    fn full_range_has_65536_ports() {
        let r = PortRange {
            start: 0,
            end: u16::MAX,
        };
        assert_eq!(r.len(), 65536);
        assert_eq!(r.iter().count(), 65536);
        assert!(!r.is_empty());
    }

    #[test]
    fn display_is_the_short_form() {
        for (input, shown) in [
            ("80", "80"),
            ("80/tcp", "80"),
            ("8080:80/udp", "8080:80/udp"),
            ("127.0.0.1::80", "127.0.0.1::80"),
            ("::1:80:80/sctp", "[::1]:80:80/sctp"),
            (":80", "80"),
            ("0123", "123"),
        ] {
            assert_eq!(spec(input).to_string(), shown);
        }
    }

    #[test]
    fn binding_text_needs_one_container_port() {
        let b: PortBinding = "[::1]:8000-8001:80".parse().expect("valid binding");
        assert_eq!(b.container_port, 80);
        assert_eq!(b.to_string(), "[::1]:8000-8001:80");
        assert!(matches!(
            "80-81".parse::<PortBinding>(),
            Err(PortError::NotSinglePort { .. })
        ));
    }

    #[test]
    fn serde_uses_the_short_form_and_accepts_numbers() {
        let s: PortSpec = serde_json::from_str("\"8080:80\"").expect("string");
        assert_eq!(s, spec("8080:80"));
        let n: PortSpec = serde_json::from_str("80").expect("number");
        assert_eq!(n, spec("80"));
        assert!(serde_json::from_str::<PortSpec>("70000").is_err());
        assert!(serde_json::from_str::<PortSpec>("-1").is_err());
        assert_eq!(
            serde_json::to_string(&spec("[::1]::80/udp"))
                .ok()
                .as_deref(),
            Some("\"[::1]::80/udp\"")
        );
        let p: Protocol = serde_json::from_str("\"sctp\"").expect("protocol");
        assert_eq!(p, Protocol::Sctp);
    }

    fn arb_range() -> impl Strategy<Value = PortRange> {
        (any::<u16>(), 0u16..64).prop_map(|(start, len)| PortRange {
            start,
            end: start.saturating_add(len),
        })
    }

    fn arb_spec() -> impl Strategy<Value = PortSpec> {
        let ip = prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
            any::<[u16; 8]>().prop_map(|s| Some(IpAddr::from(s))),
        ];
        let protocol = prop_oneof![
            Just(Protocol::Tcp),
            Just(Protocol::Udp),
            Just(Protocol::Sctp)
        ];
        (ip, arb_range(), any::<bool>(), any::<u16>(), protocol).prop_map(
            |(host_ip, container, has_host, host_start, protocol)| {
                // Keep host ranges valid: same length as the container range.
                let host = has_host.then(|| {
                    let start = host_start.min(u16::MAX - (container.end - container.start));
                    PortRange {
                        start,
                        end: start + (container.end - container.start),
                    }
                });
                PortSpec {
                    host_ip,
                    host,
                    container,
                    protocol,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn display_round_trips(s in arb_spec()) {
            prop_assert_eq!(s.to_string().parse::<PortSpec>(), Ok(s));
        }

        #[test]
        fn parser_never_panics(s in "[0-9a-f:.\\[\\]/-]{0,24}|\\PC*") {
            if let Ok(spec) = s.parse::<PortSpec>() {
                let _ = spec.bindings();
            }
        }
    }
}
