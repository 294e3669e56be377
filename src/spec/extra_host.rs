//! Extra `/etc/hosts` entries as `docker run --add-host` and compose
//! `extra_hosts:` write them: `myhost:10.0.0.1`, `myhost=::1`,
//! `myhost=[2001:db8::1]`, `host.docker.internal:host-gateway`.
//!
//! The grammar is docker/cli `opts.ValidateExtraHost`, messages included. This
//! module only reads the text; it never writes a hosts file or resolves
//! `host-gateway`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The special value Docker replaces with the host's gateway address.
const HOST_GATEWAY: &str = "host-gateway";

/// The address side of an extra host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HostIp {
    /// A literal IPv4 or IPv6 address.
    Addr(IpAddr),
    /// `host-gateway`: the address the host is reachable at from the container,
    /// filled in when the container is created.
    HostGateway,
}

/// One `/etc/hosts` entry: a host name and its address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExtraHost {
    /// The host name (never empty, never contains `:`, `=` or whitespace).
    pub host: String,
    /// Its address.
    pub ip: HostIp,
}

/// Why an extra host did not parse. Messages are docker/cli's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraHostError {
    /// No separator, or no usable host name before it.
    #[error("bad format for add-host: {input:?}")]
    BadFormat {
        /// The whole input.
        input: String,
    },
    /// The address is neither an IP address nor `host-gateway`.
    #[error("invalid IP address in add-host: {ip:?}")]
    InvalidIp {
        /// The address as written (without brackets).
        ip: String,
    },
}

impl fmt::Display for HostIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostIp::Addr(ip) => ip.fmt(f),
            HostIp::HostGateway => f.write_str(HOST_GATEWAY),
        }
    }
}

impl FromStr for HostIp {
    type Err = ExtraHostError;

    /// `host-gateway`, or an address, optionally in brackets (for IPv6, but
    /// docker/cli allows them around IPv4 too). Surrounding whitespace is ignored,
    /// as in docker/cli `ValidateIPAddress`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == HOST_GATEWAY {
            return Ok(HostIp::HostGateway);
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .filter(|inner| !inner.is_empty())
            .unwrap_or(s);
        bare.trim()
            .parse()
            .map(HostIp::Addr)
            .map_err(|_| ExtraHostError::InvalidIp {
                ip: bare.to_owned(),
            })
    }
}

impl TryFrom<String> for HostIp {
    type Error = ExtraHostError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostIp> for String {
    fn from(ip: HostIp) -> Self {
        ip.to_string()
    }
}

impl FromStr for ExtraHost {
    type Err = ExtraHostError;

    /// `host=addr` or `host:addr`. `=` is looked for first; failing that the text
    /// is split at the *first* colon, so `host:::1` is `::1`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad_format = || ExtraHostError::BadFormat {
            input: input.to_owned(),
        };
        let (host, ip) = input
            .split_once('=')
            .or_else(|| input.split_once(':'))
            .ok_or_else(bad_format)?;
        // docker/cli only refuses empty names and names with `:`. Whitespace is
        // refused here as well: a name is written into /etc/hosts as is, where a
        // space or newline would add names or lines the user never wrote.
        if host.is_empty()
            || host.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(bad_format());
        }
        Ok(ExtraHost {
            host: host.to_owned(),
            ip: ip.parse()?,
        })
    }
}

impl fmt::Display for ExtraHost {
    /// `host:addr`, the form docker/cli hands to the daemon.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ip)
    }
}

impl TryFrom<String> for ExtraHost {
    type Error = ExtraHostError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ExtraHost> for String {
    fn from(h: ExtraHost) -> Self {
        h.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> HostIp {
        HostIp::Addr(s.parse().expect("valid address"))
    }

    #[test]
    fn equals_wins_over_colon() {
        let h: ExtraHost = "web=::1".parse().expect("valid");
        assert_eq!(h.host, "web");
        assert_eq!(h.ip, addr("::1"));
    }

    #[test]
    fn colon_form_splits_at_the_first_colon() {
        let h: ExtraHost = "web:2003:ab34:e::1".parse().expect("valid");
        assert_eq!(h.ip, addr("2003:ab34:e::1"));
    }

    #[test]
    fn host_gateway_is_kept_symbolic() {
        let h: ExtraHost = "host.docker.internal=host-gateway".parse().expect("valid");
        assert_eq!(h.ip, HostIp::HostGateway);
        assert_eq!(h.to_string(), "host.docker.internal:host-gateway");
        assert!(matches!(
            "h:[host-gateway]".parse::<ExtraHost>(),
            Err(ExtraHostError::InvalidIp { .. })
        ));
    }

    #[test]
    fn brackets_and_spaces_around_the_address_are_dropped() {
        assert_eq!(
            "h=[10.0.0.1]".parse::<ExtraHost>().map(|h| h.ip),
            Ok(addr("10.0.0.1"))
        );
        assert_eq!(
            "h: 10.0.0.1 ".parse::<ExtraHost>().map(|h| h.ip),
            Ok(addr("10.0.0.1"))
        );
        assert_eq!(
            "h=[]".parse::<ExtraHost>(),
            Err(ExtraHostError::InvalidIp { ip: "[]".into() })
        );
    }

    #[test]
    fn whitespace_in_the_name_is_refused() {
        for bad in ["my host:10.0.0.1", "a\nb:10.0.0.1", "\t=10.0.0.1"] {
            assert!(
                matches!(
                    bad.parse::<ExtraHost>(),
                    Err(ExtraHostError::BadFormat { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn serde_uses_the_text_form() {
        let h: ExtraHost = serde_json::from_str("\"db=[::1]\"").expect("valid");
        assert_eq!(
            serde_json::to_string(&h).ok().as_deref(),
            Some("\"db:::1\"")
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(
            host in "[a-z0-9][a-z0-9.-]{0,20}",
            v6 in any::<[u16; 8]>(),
            v4 in any::<[u8; 4]>(),
            which in 0u8..3,
        ) {
            let ip = match which {
                0 => HostIp::Addr(IpAddr::from(v6)),
                1 => HostIp::Addr(IpAddr::from(v4)),
                _ => HostIp::HostGateway,
            };
            let h = ExtraHost { host, ip };
            prop_assert_eq!(h.to_string().parse::<ExtraHost>(), Ok(h));
        }

        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = s.parse::<ExtraHost>();
        }
    }
}
