//! The firewall of container networks: outbound NAT (masquerade), published
//! ports (DNAT), internal networks and inter-container isolation, as
//! nftables rules. Data in, rules out: [`Firewall::render`] turns a
//! [`Ruleset`] into an `nft` script and [`Firewall::apply`] loads it; the
//! caller (the networking core) decides what the ruleset is.
//!
//! # Tables
//!
//! Everything lives in tables of our own, named after the state root
//! (`stack` for the default one, [`DEFAULT_TABLE`]): `table inet <name>`
//! always, and `table bridge <name>` while some network has `icc` off. Other
//! tables are never changed, with the one exception below. A change replaces
//! the whole table in one `nft -f -` transaction (`table inet T {}`,
//! `delete table inet T`, then the full definition), so there is never a
//! moment without rules and a failed change leaves the old rules in place.
//! We render nft's text syntax ourselves and run the `nft` program
//! (`../shared/DEPENDENCIES.md`: the netlink crates need libclang, and the
//! `nftables` crate drives the same program).
//!
//! # Rules
//!
//! - **Published ports** are DNAT rules in the `published` chain, which the
//!   `prerouting` hook (traffic from other hosts and from containers) and the
//!   `output` hook (traffic from the host itself) jump to for packets whose
//!   destination is a local address (`fib daddr type local`, like Docker's
//!   `-m addrtype --dst-type LOCAL`). A forward with a host address matches
//!   only that address; without one (or with `0.0.0.0`/`::`) it matches
//!   every local address of the container address's family: the kernel
//!   cannot translate between IPv4 and IPv6, so an IPv4 container is not
//!   published on the host's IPv6 addresses (Docker uses its userland proxy
//!   for that). Ports of internal networks are not published, as in Docker.
//! - **Source addresses are kept**: traffic from other hosts reaches the
//!   container with the client's address; only the two cases below are
//!   masqueraded.
//! - **`127.0.0.1:PORT`** from the host: the packet keeps its source
//!   127.0.0.1 after DNAT, and the kernel drops a packet from or to 127/8 on
//!   a device that is not loopback unless that device has
//!   `net.ipv4.conf.<dev>.route_localnet=1` (checked on the way out and, for
//!   the reply, on the way in). [`Firewall::apply`] sets it on every bridge
//!   with a published IPv4 port, and `postrouting` masquerades traffic from
//!   127.0.0.0/8 leaving through the bridge, so the container answers the
//!   gateway address (what Docker does with `--userland-proxy=false`). IPv6
//!   has no such switch: `[::1]:PORT` is not published.
//! - **Hairpin**: a container reaching a published port (its own or a
//!   neighbour's on the same bridge) through a host address is DNATed back
//!   into its own bridge; the reply would go straight to it from the
//!   container address it did not call, so DNATed traffic from the bridge's
//!   subnet back into the bridge is masqueraded too. With `br_netfilter`
//!   the DNAT happens while the frame is being bridged and the bridge sends
//!   it back out the port it came in by: the networking core must turn on
//!   hairpin mode on every bridge port (`IFLA_BRPORT_MODE`, `ip link set
//!   VETH type bridge_slave hairpin on`), as Docker does without its
//!   userland proxy.
//! - **Masquerade** for traffic from a bridge's subnet leaving through any
//!   other device, unless the network is internal or `masquerade` is false
//!   (daemon `--ip-masq=false`). With `--nat=false` the daemon applies no
//!   ruleset at all.
//! - **Forwarding**: traffic into a bridge from elsewhere is accepted only
//!   when it answers a connection (conntrack established/related) or was
//!   DNATed to a published port; anything else is dropped, so other hosts
//!   routing to a container address and containers of other networks cannot
//!   reach unpublished ports (Docker's network isolation). Internal networks
//!   drop everything between the bridge and other devices.
//! - **`icc` off**: traffic between two addresses of the bridge's subnet that
//!   the bridge forwards from port to port is dropped in a `bridge` family
//!   table (this works with and without `br_netfilter`), and in the `inet`
//!   forward hook for the case where `br_netfilter` passes bridged traffic
//!   there.
//!
//! # Docker on the same host
//!
//! Docker sets the policy of `ip filter FORWARD` to drop and loads
//! `br_netfilter`, which would drop our containers' traffic (a packet must
//! be accepted by every base chain of a hook). Docker documents the
//! `DOCKER-USER` chain as the place for rules of others; so when a table
//! `ip filter` (or `ip6 filter`) with a `DOCKER-USER` chain exists,
//! [`Firewall::apply`] inserts `iifname BRIDGE accept` and `oifname BRIDGE
//! accept` there for each of our bridges, each with the comment
//! `stack:<table>`. Our own table still decides (a drop there is final).
//! Rules carrying exactly that comment are found by it and replaced or
//! removed in the same transaction as our table; nothing else in Docker's
//! tables is touched. iptables-nft reads these rules back as
//! `-i BRIDGE -m comment --comment stack:<table> -j ACCEPT`. A Docker using
//! iptables-legacy keeps its rules outside nftables, where we do not reach.
//!
//! # Host ports
//!
//! [`Firewall::allocate`] turns requested ports into [`Forward`]s. A port is
//! refused when an existing forward has it (the error names that container)
//! or when a socket on the host has it (found by binding it). An empty or
//! zero host port takes the first free port of the kernel's ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), falling back to
//! 49153-65535 when that is unreadable: this is Docker's port allocator's
//! choice. A host range (`8000-8002:80`) takes its first free port. Forwards
//! are rules only: there is no process per published port.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The table name of the default state root.
pub const DEFAULT_TABLE: &str = "stack";

/// The ephemeral range used when the kernel's cannot be read: Docker's
/// fallback (`portallocator.DefaultPortRangeStart..End`).
pub const FALLBACK_PORT_RANGE: RangeInclusive<u16> = 49153..=65535;

/// Where nftables rules of one state root go, and how `nft` is run.
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    nft: PathBuf,
    netns: Option<PathBuf>,
}

/// Everything the firewall must express: the bridges and the published ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// The bridge networks.
    pub networks: Vec<BridgeNet>,
    /// The published ports; each names a bridge of `networks`.
    pub ports: Vec<Forward>,
}

/// One bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeNet {
    /// The bridge device.
    pub bridge: String,
    /// The subnet of the containers on it.
    pub subnet: IpNet,
    /// No traffic between the bridge and anything else (`--internal`).
    pub internal: bool,
    /// Masquerade traffic leaving the subnet (`--ip-masq`).
    pub masquerade: bool,
    /// Containers on the bridge may talk to each other (`--icc`).
    pub icc: bool,
}

/// A transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// One published port: host port to container address and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Forward {
    /// The protocol.
    pub proto: Proto,
    /// The host address it is published on; `None` (or an unspecified
    /// address) for every local address.
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The container's address on `bridge`.
    pub container_ip: IpAddr,
    /// The container port.
    pub container_port: u16,
    /// The bridge the container is on.
    pub bridge: String,
}

/// A port to publish, before a host port is chosen: one `PortBinding` of
/// `spec::port` (`-P` asks for one per exposed port with no host ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// The protocol.
    pub proto: Proto,
    /// The host address, `None` for all.
    pub host_ip: Option<IpAddr>,
    /// The host ports to choose from; `None` or `0..=0` for an ephemeral port.
    pub host_ports: Option<RangeInclusive<u16>>,
    /// The container port.
    pub container_port: u16,
}

/// A forward that exists already, and the container it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOwner {
    /// The container's name.
    pub container: String,
    /// Its forward.
    pub forward: Forward,
}

/// Why the firewall could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A table name nft would not take as an identifier.
    #[error(
        "invalid firewall table name {name:?}: use 1 to 32 letters, digits, '_' or '-', starting with a letter"
    )]
    InvalidTable {
        /// The name given.
        name: String,
    },
    /// A bridge name that is not an interface name.
    #[error("invalid bridge name {name:?}")]
    InvalidBridge {
        /// The name given.
        name: String,
    },
    /// A forward to a bridge the ruleset has no network for.
    #[error(
        "published port {host_port}/{proto} goes to bridge {bridge:?}, which is not in the ruleset"
    )]
    UnknownBridge {
        /// The bridge of the forward.
        bridge: String,
        /// The host port.
        host_port: u16,
        /// The protocol.
        proto: Proto,
    },
    /// A forward between an IPv4 and an IPv6 address.
    #[error(
        "published port {host_port}/{proto}: host address {host_ip} and container address {container_ip} are of different IP versions"
    )]
    MixedFamilies {
        /// The host address.
        host_ip: IpAddr,
        /// The container address.
        container_ip: IpAddr,
        /// The host port.
        host_port: u16,
        /// The protocol.
        proto: Proto,
    },
    /// Joining the network namespace nft runs in failed.
    #[error("enter network namespace {}", path.display())]
    EnterNetns {
        /// The namespace file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `nft` could not be run.
    #[error("run {}", program.display())]
    RunNft {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `nft` ran and failed.
    #[error("nft {action} failed: {stderr}")]
    Nft {
        /// What it was asked to do.
        action: String,
        /// What it said.
        stderr: String,
    },
    /// `nft -j` printed something we could not read.
    #[error("read the output of nft {action}")]
    NftOutput {
        /// What it was asked to do.
        action: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A sysctl could not be set.
    #[error("write {value} to {}", path.display())]
    Sysctl {
        /// The /proc/sys file.
        path: PathBuf,
        /// The value.
        value: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The host port is published for another container already.
    #[error("bind for {addr}/{proto} failed: port is already allocated to container {container:?}")]
    PortAllocated {
        /// The host address and port.
        addr: SocketAddr,
        /// The protocol.
        proto: Proto,
        /// The container that has it.
        container: String,
    },
    /// The same host port is asked for twice in one request.
    #[error("bind for {addr}/{proto} failed: port is already allocated")]
    PortTwice {
        /// The host address and port.
        addr: SocketAddr,
        /// The protocol.
        proto: Proto,
    },
    /// A socket on the host has the port.
    #[error("bind for {addr}/{proto} failed: port is in use on the host")]
    PortInUse {
        /// The host address and port.
        addr: SocketAddr,
        /// The protocol.
        proto: Proto,
        /// What binding it said.
        #[source]
        source: io::Error,
    },
    /// No port of a range is free.
    #[error("no free host port for {proto} on {host_ip} in {start}-{end}")]
    NoFreePort {
        /// The host address.
        host_ip: IpAddr,
        /// The protocol.
        proto: Proto,
        /// The first port of the range.
        start: u16,
        /// The last port of the range.
        end: u16,
    },
}

impl Proto {
    /// The lower-case name, as nft and Docker write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Forward {
    /// The host address it listens on, an unspecified one for all.
    pub fn host_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.host_ip.unwrap_or(unspecified(self.container_ip)),
            self.host_port,
        )
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A host address as a forward's match: `None` for every local address.
fn specific(host_ip: Option<IpAddr>) -> Option<IpAddr> {
    host_ip.filter(|ip| !ip.is_unspecified())
}

/// Whether two host addresses of published ports can receive the same packet.
fn addrs_overlap(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (specific(a), specific(b)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// nft's address family keyword of `ip`.
fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "ip",
        IpAddr::V6(_) => "ip6",
    }
}

/// nft's address family keyword of `net`.
fn net_family(net: &IpNet) -> &'static str {
    family(net.addr())
}

/// What `nft list tables` tells us about the tables that matter.
#[derive(Debug, Default)]
struct Present {
    inet: bool,
    bridge: bool,
    /// `ip filter` and `ip6 filter` when they exist.
    filters: Vec<&'static str>,
}

/// A DOCKER-USER chain and the handles of our rules in it.
#[derive(Debug)]
struct DockerUser {
    family: &'static str,
    ours: Vec<u64>,
}

impl Firewall {
    /// A firewall whose tables are named `table` (letters, digits, `_`, `-`;
    /// [`DEFAULT_TABLE`] for the default state root), run with `nft` from
    /// `PATH` in the caller's network namespace.
    pub fn new(table: &str) -> Result<Self, FirewallError> {
        let mut chars = table.chars();
        let valid = table.len() <= 32
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(FirewallError::InvalidTable {
                name: table.to_owned(),
            });
        }
        Ok(Firewall {
            table: table.to_owned(),
            nft: PathBuf::from("nft"),
            netns: None,
        })
    }

    /// Runs this `nft` program instead of the one on `PATH`.
    pub fn with_nft(mut self, nft: PathBuf) -> Self {
        self.nft = nft;
        self
    }

    /// Works in the network namespace at `netns` (a `/run/netns/NAME` path):
    /// rules, sysctls and port checks all apply there. For tests.
    pub fn with_netns(mut self, netns: PathBuf) -> Self {
        self.netns = Some(netns);
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The comment that tags our rules in Docker's DOCKER-USER chain.
    pub fn tag(&self) -> String {
        format!("stack:{}", self.table)
    }

    /// The nft script that replaces our tables with `rules` in one
    /// transaction. It does not include what [`Firewall::apply`] adds from
    /// the live state: removing a `bridge` table no longer needed and the
    /// DOCKER-USER rules.
    pub fn render(&self, rules: &Ruleset) -> String {
        let table = &self.table;
        let body = render_inet(rules);
        let mut script = String::new();
        // Create-then-delete makes the delete valid whether or not the table
        // exists; the definition follows in the same transaction.
        let _ = writeln!(script, "table inet {table} {{}}");
        let _ = writeln!(script, "delete table inet {table}");
        let _ = writeln!(script, "table inet {table} {{");
        let _ = writeln!(script, "\tcomment \"{}\"", digest_comment(&body));
        script.push_str(&body);
        script.push_str("}\n");
        if let Some(body) = render_bridge(rules) {
            let _ = writeln!(script, "table bridge {table} {{}}");
            let _ = writeln!(script, "delete table bridge {table}");
            let _ = writeln!(script, "table bridge {table} {{");
            script.push_str(&body);
            script.push_str("}\n");
        }
        script
    }

    /// Replaces our rules with `rules`, atomically: sets `route_localnet`
    /// on bridges with published IPv4 ports, then loads our tables and the
    /// DOCKER-USER rules (when Docker's chain exists) in one nft transaction.
    /// The bridges of published IPv4 ports must exist (their
    /// `route_localnet` is set first); on error the old rules stay.
    pub fn apply(&self, rules: &Ruleset) -> Result<(), FirewallError> {
        validate(rules)?;
        self.within(|| {
            let localnet: BTreeSet<&str> = rules
                .ports
                .iter()
                .filter(|f| f.container_ip.is_ipv4())
                .map(|f| f.bridge.as_str())
                .collect();
            for bridge in localnet {
                write_sysctl(
                    &Path::new("/proc/sys/net/ipv4/conf")
                        .join(bridge)
                        .join("route_localnet"),
                    "1",
                )?;
            }
            let present = self.list_tables()?;
            let mut script = self.render(rules);
            if present.bridge && render_bridge(rules).is_none() {
                let _ = writeln!(script, "delete table bridge {}", self.table);
            }
            let tag = self.tag();
            for chain in self.docker_user_chains(&present)? {
                for handle in &chain.ours {
                    let _ = writeln!(
                        script,
                        "delete rule {} filter DOCKER-USER handle {handle}",
                        chain.family
                    );
                }
                for net in &rules.networks {
                    for dir in ["oifname", "iifname"] {
                        let _ = writeln!(
                            script,
                            "insert rule {} filter DOCKER-USER {dir} \"{}\" accept comment \"{tag}\"",
                            chain.family, net.bridge
                        );
                    }
                }
            }
            self.run_nft(&["-f", "-"], Some(&script), "apply")?;
            Ok(())
        })
    }

    /// Removes our tables and our DOCKER-USER rules, in one transaction.
    /// Nothing to remove is not an error.
    pub fn remove(&self) -> Result<(), FirewallError> {
        self.within(|| {
            let present = self.list_tables()?;
            let mut script = String::new();
            if present.inet {
                let _ = writeln!(script, "delete table inet {}", self.table);
            }
            if present.bridge {
                let _ = writeln!(script, "delete table bridge {}", self.table);
            }
            for chain in self.docker_user_chains(&present)? {
                for handle in &chain.ours {
                    let _ = writeln!(
                        script,
                        "delete rule {} filter DOCKER-USER handle {handle}",
                        chain.family
                    );
                }
            }
            if !script.is_empty() {
                self.run_nft(&["-f", "-"], Some(&script), "remove")?;
            }
            Ok(())
        })
    }

    /// Our rules as the kernel has them now (nft's listing of our tables and
    /// DOCKER-USER rules, without counter values), or `None` when our table
    /// does not exist. Two listings are equal when the rules are: compare
    /// with the listing taken after [`Firewall::apply`] to find drift.
    pub fn current(&self) -> Result<Option<String>, FirewallError> {
        self.within(|| {
            let present = self.list_tables()?;
            if !present.inet {
                return Ok(None);
            }
            let table = &self.table;
            let mut listing =
                self.run_nft(&["-s", "list", "table", "inet", table], None, "list")?;
            if present.bridge {
                listing.push_str(&self.run_nft(
                    &["-s", "list", "table", "bridge", table],
                    None,
                    "list",
                )?);
            }
            let tag = format!("comment \"{}\"", self.tag());
            for family in &present.filters {
                let Some(text) = self.list_docker_user(family, false)? else {
                    continue;
                };
                for line in text.lines().filter(|l| l.trim_end().ends_with(&tag)) {
                    let _ = writeln!(listing, "{family} filter DOCKER-USER: {}", line.trim());
                }
            }
            Ok(Some(listing))
        })
    }

    /// Whether our table holds the rules of `rules` (by the digest
    /// [`Firewall::render`] puts in its comment): `false` when it is missing
    /// or was made from another ruleset.
    pub fn is_applied(&self, rules: &Ruleset) -> Result<bool, FirewallError> {
        let expected = digest_comment(&render_inet(rules));
        Ok(self
            .current()?
            .is_some_and(|listing| listing.contains(&expected)))
    }

    /// Turns on IPv4 forwarding (`net.ipv4.ip_forward`, daemon option
    /// `--ip-forward`) and, with `ipv6`, IPv6 forwarding on all interfaces.
    pub fn enable_ip_forward(&self, ipv6: bool) -> Result<(), FirewallError> {
        self.within(|| {
            write_sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), "1")?;
            if ipv6 {
                write_sysctl(Path::new("/proc/sys/net/ipv6/conf/all/forwarding"), "1")?;
            }
            Ok(())
        })
    }

    /// Chooses host ports for `requests` of a container at `container_ip` on
    /// `bridge`, and returns the forwards in the order of the requests. A
    /// port is taken when a forward of `owners` (or an earlier request) has
    /// it, or when binding it on the host fails; a fixed port that is taken
    /// is an error naming its owner, a range takes its first free port, and
    /// no port takes one from the kernel's ephemeral range (see the module
    /// docs). SCTP ports are checked against `owners` only: the standard
    /// library cannot bind SCTP sockets.
    pub fn allocate(
        &self,
        container_ip: IpAddr,
        bridge: &str,
        requests: &[PortRequest],
        owners: &[PortOwner],
    ) -> Result<Vec<Forward>, FirewallError> {
        self.within(|| {
            let mut chosen: Vec<Forward> = Vec::with_capacity(requests.len());
            for request in requests {
                let host_ip = request.host_ip;
                let bind_ip = specific(host_ip).unwrap_or(unspecified(container_ip));
                if host_ip.is_some_and(|ip| ip.is_ipv4() != container_ip.is_ipv4()) {
                    return Err(FirewallError::MixedFamilies {
                        host_ip: bind_ip,
                        container_ip,
                        host_port: request.host_ports.as_ref().map_or(0, |r| *r.start()),
                        proto: request.proto,
                    });
                }
                let fixed = match &request.host_ports {
                    Some(range) if *range.start() != 0 && range.start() == range.end() => {
                        Some(*range.start())
                    }
                    _ => None,
                };
                let candidates = match &request.host_ports {
                    Some(range) if *range.start() != 0 => range.clone(),
                    _ => ephemeral_range(),
                };
                let taken = |port: u16| -> Result<(), FirewallError> {
                    let addr = SocketAddr::new(bind_ip, port);
                    let clash = |f: &Forward| {
                        f.proto == request.proto
                            && f.host_port == port
                            && addrs_overlap(f.host_ip, host_ip)
                    };
                    if let Some(owner) = owners.iter().find(|o| clash(&o.forward)) {
                        return Err(FirewallError::PortAllocated {
                            addr,
                            proto: request.proto,
                            container: owner.container.clone(),
                        });
                    }
                    if chosen.iter().any(clash) {
                        return Err(FirewallError::PortTwice {
                            addr,
                            proto: request.proto,
                        });
                    }
                    try_bind(request.proto, addr).map_err(|source| FirewallError::PortInUse {
                        addr,
                        proto: request.proto,
                        source,
                    })
                };
                let host_port = match fixed {
                    Some(port) => {
                        taken(port)?;
                        port
                    }
                    None => candidates.clone().find(|&port| taken(port).is_ok()).ok_or(
                        FirewallError::NoFreePort {
                            host_ip: bind_ip,
                            proto: request.proto,
                            start: *candidates.start(),
                            end: *candidates.end(),
                        },
                    )?,
                };
                chosen.push(Forward {
                    proto: request.proto,
                    host_ip,
                    host_port,
                    container_ip,
                    container_port: request.container_port,
                    bridge: bridge.to_owned(),
                });
            }
            Ok(chosen)
        })
    }

    /// Runs `f` in our network namespace.
    fn within<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, FirewallError> + Send,
    ) -> Result<T, FirewallError> {
        match &self.netns {
            None => f(),
            Some(path) => {
                crate::sys::in_netns(path, f).map_err(|source| FirewallError::EnterNetns {
                    path: path.clone(),
                    source,
                })?
            }
        }
    }

    /// Runs nft with `args` (and `stdin`), returning what it printed.
    fn run_nft(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        action: &str,
    ) -> Result<String, FirewallError> {
        let spawn_error = |source| FirewallError::RunNft {
            program: self.nft.clone(),
            source,
        };
        let mut child = Command::new(&self.nft)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(FirewallError::Nft {
                action: action.to_owned(),
                stderr: if stderr.trim().is_empty() {
                    output.status.to_string()
                } else {
                    stderr.trim().to_owned()
                },
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Which of the tables that matter exist.
    fn list_tables(&self) -> Result<Present, FirewallError> {
        let text = self.run_nft(&["-j", "list", "tables"], None, "list tables")?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| FirewallError::NftOutput {
                action: "list tables".to_owned(),
                source,
            })?;
        let mut present = Present::default();
        let items = json["nftables"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for table in items.iter().filter_map(|item| item.get("table")) {
            let name = table["name"].as_str().unwrap_or_default();
            match (table["family"].as_str().unwrap_or_default(), name) {
                ("inet", n) if n == self.table => present.inet = true,
                ("bridge", n) if n == self.table => present.bridge = true,
                ("ip", "filter") => present.filters.push("ip"),
                ("ip6", "filter") => present.filters.push("ip6"),
                _ => {}
            }
        }
        Ok(present)
    }

    /// nft's listing of `family filter DOCKER-USER` (JSON with handles, or
    /// text without counters), or `None` when that chain does not exist.
    fn list_docker_user(&self, family: &str, json: bool) -> Result<Option<String>, FirewallError> {
        let mut args = vec!["-s"];
        if json {
            args.extend(["-j", "-a"]);
        }
        args.extend(["list", "chain", family, "filter", "DOCKER-USER"]);
        match self.run_nft(&args, None, "list chain DOCKER-USER") {
            Ok(text) => Ok(Some(text)),
            // nft's word for a missing chain (ENOENT from the kernel).
            Err(FirewallError::Nft { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The DOCKER-USER chains that exist, with the handles of our rules.
    fn docker_user_chains(&self, present: &Present) -> Result<Vec<DockerUser>, FirewallError> {
        let tag = self.tag();
        let mut chains = Vec::new();
        for &family in &present.filters {
            let Some(text) = self.list_docker_user(family, true)? else {
                continue;
            };
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| FirewallError::NftOutput {
                    action: "list chain DOCKER-USER".to_owned(),
                    source,
                })?;
            let items = json["nftables"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ours = items
                .iter()
                .filter_map(|item| item.get("rule"))
                .filter(|rule| rule["comment"].as_str() == Some(tag.as_str()))
                .filter_map(|rule| rule["handle"].as_u64())
                .collect();
            chains.push(DockerUser { family, ours });
        }
        Ok(chains)
    }
}

/// Checks what nft cannot: names it would misread, forwards without their
/// network, forwards between address families.
fn validate(rules: &Ruleset) -> Result<(), FirewallError> {
    for net in &rules.networks {
        // Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace;
        // we also keep out quotes so the name cannot end nft's string.
        let valid = !net.bridge.is_empty()
            && net.bridge.len() <= 15
            && net
                .bridge
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '"' | '\\'));
        if !valid {
            return Err(FirewallError::InvalidBridge {
                name: net.bridge.clone(),
            });
        }
    }
    for f in &rules.ports {
        if !rules.networks.iter().any(|n| n.bridge == f.bridge) {
            return Err(FirewallError::UnknownBridge {
                bridge: f.bridge.clone(),
                host_port: f.host_port,
                proto: f.proto,
            });
        }
        if let Some(host_ip) = f.host_ip
            && host_ip.is_ipv4() != f.container_ip.is_ipv4()
        {
            return Err(FirewallError::MixedFamilies {
                host_ip,
                container_ip: f.container_ip,
                host_port: f.host_port,
                proto: f.proto,
            });
        }
    }
    Ok(())
}

/// The chains of `table inet`, without the table line and comment.
fn render_inet(rules: &Ruleset) -> String {
    let mut s = String::new();
    let internal: BTreeSet<&str> = rules
        .networks
        .iter()
        .filter(|n| n.internal)
        .map(|n| n.bridge.as_str())
        .collect();

    for (hook, priority) in [("prerouting", "dstnat"), ("output", "-100")] {
        let _ = writeln!(s, "\tchain {hook} {{");
        let _ = writeln!(
            s,
            "\t\ttype nat hook {hook} priority {priority}; policy accept;"
        );
        let _ = writeln!(s, "\t\tfib daddr type local jump published");
        let _ = writeln!(s, "\t}}");
    }

    let _ = writeln!(s, "\tchain published {{");
    for f in rules
        .ports
        .iter()
        .filter(|f| !internal.contains(f.bridge.as_str()))
    {
        let fam = family(f.container_ip);
        let daddr = match specific(f.host_ip) {
            Some(ip) => format!("{fam} daddr {ip}"),
            None => format!(
                "meta nfproto ipv{}",
                if f.container_ip.is_ipv4() { 4 } else { 6 }
            ),
        };
        let to = match f.container_ip {
            IpAddr::V4(ip) => format!("{ip}:{}", f.container_port),
            IpAddr::V6(ip) => format!("[{ip}]:{}", f.container_port),
        };
        let _ = writeln!(
            s,
            "\t\t{daddr} {} dport {} dnat {fam} to {to}",
            f.proto, f.host_port
        );
    }
    let _ = writeln!(s, "\t}}");

    let _ = writeln!(s, "\tchain postrouting {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    for net in &rules.networks {
        let (br, fam, subnet) = (&net.bridge, net_family(&net.subnet), net.subnet.trunc());
        if net.internal {
            continue;
        }
        if net.subnet.addr().is_ipv4() {
            // 127.0.0.1:PORT from the host (route_localnet): the container
            // must answer an address it can reach.
            let _ = writeln!(s, "\t\toifname \"{br}\" ip saddr 127.0.0.0/8 masquerade");
        }
        // Hairpin: DNATed back into the bridge it came from.
        let _ = writeln!(
            s,
            "\t\toifname \"{br}\" {fam} saddr {subnet} ct status dnat masquerade"
        );
        if net.masquerade {
            let _ = writeln!(s, "\t\toifname != \"{br}\" {fam} saddr {subnet} masquerade");
        }
    }
    let _ = writeln!(s, "\t}}");

    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    for net in &rules.networks {
        let br = &net.bridge;
        if !net.icc {
            // Bridged traffic that br_netfilter passes to the IP hooks.
            let _ = writeln!(s, "\t\tiifname \"{br}\" oifname \"{br}\" drop");
        }
        if net.internal {
            let _ = writeln!(s, "\t\tiifname \"{br}\" oifname != \"{br}\" drop");
            let _ = writeln!(s, "\t\toifname \"{br}\" iifname != \"{br}\" drop");
        } else {
            let _ = writeln!(
                s,
                "\t\toifname \"{br}\" iifname != \"{br}\" ct state established,related accept"
            );
            let _ = writeln!(
                s,
                "\t\toifname \"{br}\" iifname != \"{br}\" ct status dnat accept"
            );
            let _ = writeln!(s, "\t\toifname \"{br}\" iifname != \"{br}\" drop");
        }
    }
    let _ = writeln!(s, "\t}}");
    s
}

/// The chains of `table bridge`, when some network has `icc` off.
fn render_bridge(rules: &Ruleset) -> Option<String> {
    let isolated: Vec<&BridgeNet> = rules.networks.iter().filter(|n| !n.icc).collect();
    if isolated.is_empty() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "\tchain forward {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    for net in isolated {
        // The bridge family's forward hook sees frames the bridge passes
        // from one port to another; traffic to the host goes through input.
        let (fam, subnet) = (net_family(&net.subnet), net.subnet.trunc());
        let _ = writeln!(s, "\t\t{fam} saddr {subnet} {fam} daddr {subnet} drop");
    }
    let _ = writeln!(s, "\t}}");
    Some(s)
}

/// The table comment naming the ruleset a table body was rendered from.
fn digest_comment(body: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(body.as_bytes());
    format!("stack ruleset {}", hex::encode(&digest[..12]))
}

/// Writes a sysctl file (in the calling thread's network namespace, for
/// `/proc/sys/net`).
fn write_sysctl(path: &Path, value: &'static str) -> Result<(), FirewallError> {
    std::fs::write(path, value).map_err(|source| FirewallError::Sysctl {
        path: path.to_owned(),
        value,
        source,
    })
}

/// The kernel's ephemeral port range, or Docker's fallback: where host
/// ports are picked for requests without one.
pub fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_port_range(&text))
        .unwrap_or(FALLBACK_PORT_RANGE)
}

/// Parses `ip_local_port_range` ("32768\t60999").
fn parse_port_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut words = text.split_whitespace().map(str::parse::<u16>);
    let (start, end) = (words.next()?.ok()?, words.next()?.ok()?);
    (start > 0 && start <= end).then_some(start..=end)
}

/// Binds `addr` for `proto` and lets it go: fails when a socket has it.
fn try_bind(proto: Proto, addr: SocketAddr) -> io::Result<()> {
    match proto {
        Proto::Tcp => TcpListener::bind(addr).map(drop),
        Proto::Udp => UdpSocket::bind(addr).map(drop),
        Proto::Sctp => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(bridge: &str, subnet: &str) -> BridgeNet {
        BridgeNet {
            bridge: bridge.to_owned(),
            subnet: subnet.parse().unwrap(),
            internal: false,
            masquerade: true,
            icc: true,
        }
    }

    fn forward(
        proto: Proto,
        host_ip: Option<&str>,
        host_port: u16,
        to: &str,
        port: u16,
    ) -> Forward {
        Forward {
            proto,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port,
            container_ip: to.parse().unwrap(),
            container_port: port,
            bridge: "stack0".to_owned(),
        }
    }

    #[test]
    fn renders_dnat_masquerade_and_isolation_in_one_replacing_transaction() {
        let rules = Ruleset {
            networks: vec![
                net("stack0", "10.88.0.1/16"),
                BridgeNet {
                    internal: true,
                    ..net("br-int", "10.89.0.0/24")
                },
                BridgeNet {
                    icc: false,
                    masquerade: false,
                    ..net("br-v6", "fd00:1::/64")
                },
            ],
            ports: vec![
                forward(Proto::Tcp, None, 8080, "10.88.0.2", 80),
                forward(Proto::Udp, Some("10.1.2.3"), 5353, "10.88.0.2", 53),
                forward(Proto::Sctp, Some("0.0.0.0"), 9, "10.88.0.2", 9),
                forward(Proto::Tcp, Some("::1"), 8443, "fd00:1::2", 443),
            ],
        };
        let fw = Firewall::new("stack").unwrap();
        insta::assert_snapshot!(fw.render(&rules));
    }

    #[test]
    fn ports_of_internal_networks_are_not_published() {
        let mut rules = Ruleset {
            networks: vec![BridgeNet {
                internal: true,
                ..net("stack0", "10.88.0.0/16")
            }],
            ports: vec![forward(Proto::Tcp, None, 8080, "10.88.0.2", 80)],
        };
        let fw = Firewall::new("stack").unwrap();
        assert!(!fw.render(&rules).contains("dnat"));
        rules.networks[0].internal = false;
        assert!(
            fw.render(&rules)
                .contains("tcp dport 8080 dnat ip to 10.88.0.2:80")
        );
    }

    #[test]
    fn digest_comment_changes_with_the_ruleset() {
        let fw = Firewall::new("t1").unwrap();
        let a = Ruleset {
            networks: vec![net("stack0", "10.88.0.0/16")],
            ports: vec![],
        };
        let mut b = a.clone();
        b.networks[0].masquerade = false;
        assert_ne!(
            digest_comment(&render_inet(&a)),
            digest_comment(&render_inet(&b))
        );
        assert!(fw.render(&a).contains(&digest_comment(&render_inet(&a))));
    }

    #[test]
    fn table_and_bridge_names_are_checked_before_nft_sees_them() {
        for bad in ["", "1abc", "a b", "a\"b", &"x".repeat(33)] {
            assert!(Firewall::new(bad).is_err(), "{bad:?}");
        }
        assert!(Firewall::new("stk-test_1").is_ok());
        let rules = Ruleset {
            networks: vec![net("br\"0", "10.88.0.0/16")],
            ports: vec![],
        };
        assert!(matches!(
            validate(&rules),
            Err(FirewallError::InvalidBridge { .. })
        ));
    }

    #[test]
    fn forwards_need_their_network_and_one_address_family() {
        let mut rules = Ruleset {
            networks: vec![net("other", "10.88.0.0/16")],
            ports: vec![forward(Proto::Tcp, None, 80, "10.88.0.2", 80)],
        };
        assert!(matches!(
            validate(&rules),
            Err(FirewallError::UnknownBridge { .. })
        ));
        rules.networks[0].bridge = "stack0".to_owned();
        assert!(validate(&rules).is_ok());
        rules.ports[0].host_ip = Some("::".parse().unwrap());
        assert!(matches!(
            validate(&rules),
            Err(FirewallError::MixedFamilies { .. })
        ));
    }

    #[test]
    fn ephemeral_range_is_read_like_the_kernel_writes_it() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("0 10"), None);
        assert_eq!(parse_port_range("junk"), None);
    }

    #[test]
    fn host_addresses_overlap_unless_both_are_specific_and_differ() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(addrs_overlap(None, ip("10.0.0.1")));
        assert!(addrs_overlap(ip("0.0.0.0"), ip("10.0.0.1")));
        assert!(addrs_overlap(ip("10.0.0.1"), ip("10.0.0.1")));
        assert!(!addrs_overlap(ip("10.0.0.1"), ip("127.0.0.1")));
    }
}
