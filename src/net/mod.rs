//! Container networking: bridge networks (the default `bridge` and
//! user-defined ones), each a Linux bridge with a subnet (and an IPv6 one
//! with `--ipv6`), or an existing host bridge (`-o parent=`), and macvlan
//! networks on a host interface or a VLAN of it; a persistent
//! network namespace per container ([`netns`]) with a veth pair per network
//! it is on ([`netlink`]); addresses from [`ipam`], kept with the network
//! records in the store ([`network`]).
//!
//! [`Networks`] is the facade the daemon uses: create/remove networks,
//! reserve an endpoint when a container is created or connected, wire its
//! namespace when it starts, tear it down when it is removed, and sweep what
//! a crash left. It never touches firewall rules or DNS (the daemon calls
//! those layers around it) and never sees containers beyond their id and
//! name. The firewall ([`firewall`]: NAT, published ports) and name
//! resolution ([`dns`]) are separate layers the daemon feeds.

pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};

use netlink::{Attach, IfaceConfig, Namespace};
use network::{Endpoint, NetworkRecord, Store};

/// Errors of networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("cannot {op}")]
    Netlink {
        /// What was asked.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A namespace operation failed.
    #[error("cannot {action} {}", path.display())]
    Namespace {
        /// What was being done.
        action: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A file could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A network record that does not parse.
    #[error("network record {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A netlink worker thread panicked.
    #[error("a netlink worker thread panicked")]
    Panicked,
    /// A link that should exist does not.
    #[error("no link named {0}")]
    LinkMissing(String),
    /// No such network.
    #[error("network {0} not found")]
    NotFound(String),
    /// An id prefix several networks have.
    #[error("network {0} is ambiguous: several networks match it")]
    Ambiguous(String),
    /// The name is taken.
    #[error("network with name {0} already exists")]
    NameInUse(String),
    /// `bridge`, `host` and `none` stay.
    #[error("{0} is a pre-defined network and cannot be removed")]
    Builtin(String),
    /// Containers are still on it (Docker's words).
    #[error(
        "error while removing network: network {name} id {id} has active endpoints ({containers})"
    )]
    ActiveEndpoints {
        /// The network.
        name: String,
        /// Its id.
        id: String,
        /// The containers' names.
        containers: String,
    },
    /// A static address someone else holds.
    #[error("address {ip} is already in use on network {network} by container {holder}")]
    AddressInUse {
        /// The address.
        ip: IpAddr,
        /// The network.
        network: String,
        /// The container that has it.
        holder: String,
    },
    /// No address for the container.
    #[error("cannot give the container an address on network {network}")]
    Ipam {
        /// The network.
        network: String,
        /// Why.
        #[source]
        source: ipam::IpamError,
    },
    /// No default pool is free.
    #[error(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )]
    NoPool,
    /// A subnet that overlaps another network's.
    #[error(
        "invalid pool request: pool {subnet} overlaps with other one on this address space (network {other})"
    )]
    Overlap {
        /// The subnet asked for.
        subnet: Ipv4Net,
        /// The network it overlaps.
        other: String,
    },
    /// `--ip` on a network whose subnet the daemon chose.
    #[error(
        "user specified IP address is supported only when connecting to networks with user configured subnets"
    )]
    StaticIpNeedsSubnet,
    /// Already on it.
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected {
        /// The container's name.
        container: String,
        /// The network.
        network: String,
    },
    /// Not on it.
    #[error("container {container} is not connected to network {network}")]
    NotConnected {
        /// The container.
        container: String,
        /// The network.
        network: String,
    },
    /// A request the driver cannot carry out.
    #[error("{0}")]
    InvalidRequest(String),
}

impl NetError {
    /// Whether the error is the caller's (a bad or conflicting request)
    /// rather than the host's.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            NetError::AddressInUse { .. }
                | NetError::Ipam { .. }
                | NetError::Overlap { .. }
                | NetError::StaticIpNeedsSubnet
                | NetError::InvalidRequest(_)
                | NetError::Ambiguous(_)
        )
    }

    /// Whether the error is a conflict with what exists.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            NetError::NameInUse(_)
                | NetError::Builtin(_)
                | NetError::ActiveEndpoints { .. }
                | NetError::AlreadyConnected { .. }
        )
    }
}

/// The daemon's default bridge (`docker0`'s counterpart) as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBridgeConfig {
    /// The Linux bridge's name.
    pub name: String,
    /// The bridge exists already and is not ours (`--bridge NAME`).
    pub existing: bool,
    /// `--bip`: the bridge's address and the subnet's prefix length.
    pub bip: Option<Ipv4Net>,
    /// `--fixed-cidr`: where containers' addresses come from.
    pub fixed_cidr: Option<Ipv4Net>,
    /// `--mtu`.
    pub mtu: Option<u32>,
    /// `--ipv6 --fixed-cidr-v6`: the default network's IPv6 subnet.
    pub fixed_cidr_v6: Option<Ipv6Net>,
}

/// Where networking keeps things, and the default bridge's settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The network store (`<root>/network`).
    pub state_dir: PathBuf,
    /// Where namespace files are bind-mounted (`<run>/netns`).
    pub netns_dir: PathBuf,
    /// A host-wide lock file held while a subnet is chosen and its bridge
    /// made, so daemons of different state roots never pick the same one.
    pub host_lock: PathBuf,
    /// The default bridge.
    pub default_bridge: DefaultBridgeConfig,
}

/// The default bridge's name for a state root: `stack0` for the default
/// root, else `stk-` and 6 hex digits of a hash of the root's path, so
/// daemons of different roots (tests) never share a bridge.
pub fn default_bridge_name(root: &Path) -> String {
    if root == Path::new("/var/lib/stack") {
        return "stack0".into();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("stk-{}", &hex::encode(hash)[..6])
}

/// The pools subnets are chosen from, in order: 172.18/16 to 172.31/16
/// (172.17/16 is left to Docker's docker0, which may share the host), then
/// 192.168.0.0/16 in /20s, as Docker's default address pools.
pub fn candidate_subnets() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (18u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let b20 = (0u8..16).filter_map(|k| Ipv4Net::new(Ipv4Addr::new(192, 168, k * 16, 0), 20).ok());
    b16.chain(b20)
}

/// Whether two subnets share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first candidate that overlaps none of `taken` (host routes other
/// than the default route, and other networks' subnets).
pub fn choose_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    candidate_subnets().find(|c| !taken.iter().any(|t| overlaps(c, t)))
}

/// What a container asks for on one network.
#[derive(Debug, Clone, Default)]
pub struct EndpointRequest {
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
    /// `--mac-address`.
    pub mac: Option<[u8; 6]>,
    /// `--ip6`.
    pub ip6: Option<Ipv6Addr>,
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// The name.
    pub name: String,
    /// `--driver` (only `bridge`).
    pub driver: Option<String>,
    /// `--subnet`.
    pub subnet: Option<Ipv4Net>,
    /// `--gateway`.
    pub gateway: Option<Ipv4Addr>,
    /// `--ip-range`.
    pub ip_range: Option<Ipv4Net>,
    /// `--internal`.
    pub internal: bool,
    /// `-o`.
    pub options: BTreeMap<String, String>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--ipv6`.
    pub enable_ipv6: bool,
    /// The IPv6 `--subnet`.
    pub subnet6: Option<Ipv6Net>,
    /// The IPv6 `--gateway`.
    pub gateway6: Option<Ipv6Addr>,
    /// The IPv6 `--ip-range`.
    pub ip_range6: Option<Ipv6Net>,
}

/// Container networking of one state root.
#[derive(Debug)]
pub struct Networks {
    cfg: NetConfig,
    store: Store,
    host_mtu: u32,
}

/// A host-wide lock, held while it lives.
#[derive(Debug)]
struct HostLock(std::fs::File);

impl Drop for HostLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// The host end's name of container `id`'s veth on network `net`:
/// `veth` and 7 hex digits, as Docker's.
pub fn host_veth_name(id: &str, net: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{id}/{net}").as_bytes());
    format!("veth{}", &hex::encode(hash)[..7])
}

/// Whether `name` is a network name Docker accepts.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An address error on network `n`; an address in use names its holder.
fn ipam_error(n: &NetworkRecord, e: ipam::IpamError) -> NetError {
    match e {
        ipam::IpamError::InUse { ip } => NetError::AddressInUse {
            ip,
            network: n.name.clone(),
            holder: n
                .endpoints
                .values()
                .find(|e| IpAddr::V4(e.ip) == ip || e.ip6.map(IpAddr::V6) == Some(ip))
                .map(|e| e.container_name.clone())
                .unwrap_or_default(),
        },
        source => NetError::Ipam {
            network: n.name.clone(),
            source,
        },
    }
}

impl Networks {
    /// Opens the store, makes sure the built-in networks exist and the
    /// default bridge is up with its subnet. `now` is the creation time
    /// recorded for networks made now.
    pub fn open(cfg: NetConfig, now: &str) -> Result<Networks, NetError> {
        let store = Store::open(&cfg.state_dir)?;
        let host_mtu = netlink::in_host(|h| async move { netlink::default_route_mtu(&h).await })?
            .unwrap_or(1500);
        let nets = Networks {
            cfg,
            store,
            host_mtu,
        };
        {
            let _lock = nets.store.lock()?;
            let all = nets.store.list()?;
            for (name, driver) in [("host", "host"), ("none", "null")] {
                if !all.iter().any(|n| n.name == name) {
                    nets.store.write(&NetworkRecord {
                        name: name.into(),
                        id: network::new_id(),
                        created: now.into(),
                        driver: driver.into(),
                        ..NetworkRecord::default()
                    })?;
                }
            }
        }
        nets.ensure_default_bridge(now)?;
        Ok(nets)
    }

    /// The namespace file of container `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        netns::path_of(&self.cfg.netns_dir, id)
    }

    /// The MTU of a network's links.
    fn mtu_of(&self, n: &NetworkRecord) -> u32 {
        n.mtu.unwrap_or(self.host_mtu)
    }

    fn host_lock(&self) -> Result<HostLock, NetError> {
        let path = &self.cfg.host_lock;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| NetError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            NetError::Io {
                action: "lock",
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(HostLock(file))
    }

    /// Subnets a new network must not overlap: the host's routes (except the
    /// default route and routes through `own_bridge`) and the store's other
    /// networks.
    fn taken_subnets(&self, own: Option<&NetworkRecord>) -> Result<Vec<Ipv4Net>, NetError> {
        let own_bridge = own.and_then(|n| n.bridge.clone());
        let (routes, links) = netlink::in_host(|h| async move {
            Ok((netlink::routes(&h).await?, netlink::links(&h).await?))
        })?;
        let own_index = own_bridge
            .as_deref()
            .and_then(|b| links.iter().find(|l| l.name == b).map(|l| l.index));
        let mut taken: Vec<Ipv4Net> = routes
            .into_iter()
            .filter(|r| r.destination.prefix_len() > 0)
            .filter(|r| own_index.is_none() || r.oif != own_index)
            .map(|r| r.destination)
            .collect();
        for n in self.store.list()? {
            if own.is_some_and(|o| o.id == n.id) {
                continue;
            }
            taken.extend(n.subnet);
        }
        Ok(taken)
    }

    /// Makes the default bridge network's record match the daemon's
    /// settings and its bridge exist.
    fn ensure_default_bridge(&self, now: &str) -> Result<(), NetError> {
        let _host = self.host_lock()?;
        let _lock = self.store.lock()?;
        let cfg = &self.cfg.default_bridge;
        let old = self.store.list()?.into_iter().find(|n| n.name == "bridge");
        let name = cfg.name.clone();
        let link_exists = {
            let name = name.clone();
            netlink::in_host(
                |h| async move { Ok(netlink::link_index(&h, &name).await?.is_some()) },
            )?
        };
        let (subnet, gateway, auto) = if let Some(bip) = cfg.bip {
            (bip.trunc(), bip.addr(), false)
        } else if cfg.existing {
            let addrs = netlink::host_addresses()?;
            let links = netlink::host_links()?;
            let index = links
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.index)
                .ok_or_else(|| NetError::LinkMissing(name.clone()))?;
            let addr = addrs.iter().find(|a| a.index == index).ok_or_else(|| {
                NetError::InvalidRequest(format!(
                    "bridge {name} has no IPv4 address: give it one or start the daemon with --bip"
                ))
            })?;
            (addr.addr.trunc(), addr.addr.addr(), false)
        } else {
            match &old {
                Some(o)
                    if o.auto_subnet
                        && o.bridge.as_deref() == Some(name.as_str())
                        && (link_exists || !o.endpoints.is_empty())
                        && o.subnet.is_some() =>
                {
                    let subnet = o.subnet.unwrap_or_default();
                    (
                        subnet,
                        o.gateway.unwrap_or_else(|| ipam::first_host(subnet)),
                        true,
                    )
                }
                _ => {
                    let probe = old.clone().map(|mut o| {
                        o.bridge = Some(name.clone());
                        o
                    });
                    let taken = self.taken_subnets(probe.as_ref())?;
                    let subnet = choose_subnet(&taken).ok_or(NetError::NoPool)?;
                    (subnet, ipam::first_host(subnet), true)
                }
            }
        };
        let mut options = BTreeMap::new();
        for (k, v) in DEFAULT_BRIDGE_OPTIONS {
            options.insert(k.to_string(), v.to_string());
        }
        options.insert(network::BRIDGE_NAME_OPTION.into(), name.clone());
        let mtu = cfg.mtu;
        options.insert(
            network::MTU_OPTION.into(),
            mtu.unwrap_or(self.host_mtu).to_string(),
        );
        let rec = NetworkRecord {
            name: "bridge".into(),
            id: old.as_ref().map_or_else(network::new_id, |o| o.id.clone()),
            created: old
                .as_ref()
                .map_or_else(|| now.to_string(), |o| o.created.clone()),
            driver: "bridge".into(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range: cfg.fixed_cidr,
            internal: false,
            options,
            labels: BTreeMap::new(),
            bridge: Some(name.clone()),
            mtu,
            external_bridge: cfg.existing,
            auto_subnet: auto,
            endpoints: old.map(|o| o.endpoints).unwrap_or_default(),
            enable_ipv6: cfg.fixed_cidr_v6.is_some(),
            subnet6: cfg.fixed_cidr_v6.map(|s| s.trunc()),
            gateway6: cfg.fixed_cidr_v6.map(|s| ipam::first_host6(s.trunc())),
            ip_range6: None,
            parent: None,
            created_parent: false,
            no_gateway_address: false,
        };
        self.store.write(&rec)?;
        self.ensure_bridge_link(&rec)
    }

    /// What making a network's link takes: its bridge (MTU, gateway
    /// addresses, external) or, on macvlan networks, its VLAN parent;
    /// `None` for networks without either.
    fn bridge_plan(&self, n: &NetworkRecord) -> Result<Option<BridgePlan>, NetError> {
        if n.is_macvlan() {
            let Some(parent) = n.parent.clone() else {
                return Ok(None);
            };
            return Ok(vlan_of(&parent).map(|(base, id)| BridgePlan::Vlan {
                name: parent.clone(),
                base: base.to_string(),
                id,
            }));
        }
        let (Some(bridge), Some(subnet)) = (n.bridge.clone(), n.subnet) else {
            return Ok(None);
        };
        let gateway = n.gateway.unwrap_or_else(|| ipam::first_host(subnet));
        let gw = Ipv4Net::new(gateway, subnet.prefix_len())
            .map_err(|_| NetError::InvalidRequest(format!("bad subnet {subnet}")))?;
        let gw6 = match n.pool6() {
            Some(p) if !n.no_gateway_address => Some(
                Ipv6Net::new(p.gateway, p.subnet.prefix_len())
                    .map_err(|_| NetError::InvalidRequest(format!("bad subnet {}", p.subnet)))?,
            ),
            _ => None,
        };
        Ok(Some(BridgePlan::Bridge {
            bridge,
            mtu: self.mtu_of(n),
            gateway: (!n.no_gateway_address).then_some(gw),
            gateway6: gw6,
            external: n.external_bridge,
        }))
    }

    /// Creates a network's bridge (with its gateway address) unless it
    /// exists.
    fn ensure_bridge_link(&self, n: &NetworkRecord) -> Result<(), NetError> {
        let Some(plan) = self.bridge_plan(n)? else {
            return Ok(());
        };
        netlink::in_host(|h| async move { plan.apply(&h).await })
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>, NetError> {
        self.store.list()
    }

    /// The network `key` names (name, id or unique id prefix).
    pub fn find(&self, key: &str) -> Result<NetworkRecord, NetError> {
        self.store.find(key)
    }

    /// Creates a network: a bridge network with a bridge of its own, or on
    /// an existing host bridge (`-o parent=BRIDGE`, or
    /// `com.docker.network.bridge.name` naming one that exists, as
    /// Docker), or a macvlan network on a host interface (`-o
    /// parent=IFACE[.VLAN]`, the VLAN sub-interface made when missing).
    pub fn create(&self, req: &CreateRequest, now: &str) -> Result<NetworkRecord, NetError> {
        if !is_valid_name(&req.name) {
            return Err(NetError::InvalidRequest(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        let driver = match req.driver.as_deref() {
            None | Some("bridge") => "bridge",
            Some("macvlan") => "macvlan",
            Some(other) => {
                return Err(NetError::InvalidRequest(format!(
                    "plugin \"{other}\" not found: only the bridge and macvlan drivers are available"
                )));
            }
        };
        let mtu = match req.options.get(network::MTU_OPTION) {
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|m| *m >= 68)
                    .ok_or_else(|| NetError::InvalidRequest(format!("invalid MTU {v:?}")))?,
            ),
            None => None,
        };
        if req.subnet.is_none() && (req.gateway.is_some() || req.ip_range.is_some()) {
            return Err(NetError::InvalidRequest(
                "--gateway and --ip-range need --subnet".into(),
            ));
        }
        if req.subnet6.is_none() && (req.gateway6.is_some() || req.ip_range6.is_some()) {
            return Err(NetError::InvalidRequest(
                "an IPv6 --gateway or --ip-range needs an IPv6 --subnet".into(),
            ));
        }
        if req.subnet6.is_some() && !req.enable_ipv6 {
            return Err(NetError::InvalidRequest(
                "an IPv6 --subnet needs --ipv6".into(),
            ));
        }
        if req.enable_ipv6 && req.subnet6.is_none() {
            return Err(NetError::InvalidRequest(
                "--ipv6 needs an IPv6 --subnet (no default IPv6 pool is configured)".into(),
            ));
        }
        let parent = req
            .options
            .get(network::PARENT_OPTION)
            .filter(|p| !p.is_empty())
            .cloned();
        if let Some(p) = &parent
            && (p.len() > 15 || p.contains(['/', ' ']))
        {
            return Err(NetError::InvalidRequest(format!(
                "invalid parent interface name {p:?}"
            )));
        }
        let id = network::new_id();
        let _host = self.host_lock()?;
        let _lock = self.store.lock()?;
        let all = self.store.list()?;
        if all.iter().any(|n| n.name == req.name) {
            return Err(NetError::NameInUse(req.name.clone()));
        }
        let links = netlink::host_links()?;
        let (bridge, external, no_gateway_address) = if driver == "macvlan" {
            let Some(parent) = &parent else {
                return Err(NetError::InvalidRequest(
                    "the macvlan driver needs -o parent=IFACE (or IFACE.VLAN)".into(),
                ));
            };
            macvlan_mode(&req.options)?;
            if let Some(other) = all
                .iter()
                .find(|n| n.is_macvlan() && n.parent.as_ref() == Some(parent))
            {
                return Err(NetError::InvalidRequest(format!(
                    "network {} is already using parent interface {parent}",
                    other.name
                )));
            }
            if !links.iter().any(|l| &l.name == parent) {
                match vlan_of(parent) {
                    Some((base, _)) if links.iter().any(|l| l.name == base) => {}
                    _ => {
                        return Err(NetError::InvalidRequest(format!(
                            "parent interface {parent} does not exist on the host"
                        )));
                    }
                }
            }
            (None, false, true)
        } else if let Some(parent) = &parent {
            // Host-bridge attach: containers' veths are ports of a bridge
            // the host has (pipework's way); the gateway is an outside
            // router's, so the bridge gets no address of ours.
            match links.iter().find(|l| &l.name == parent) {
                Some(l) if l.kind.as_deref() == Some("bridge") => {}
                Some(_) => {
                    return Err(NetError::InvalidRequest(format!(
                        "parent {parent} is not a bridge: use the macvlan driver for other interfaces"
                    )));
                }
                None => {
                    return Err(NetError::InvalidRequest(format!(
                        "parent bridge {parent} does not exist on the host"
                    )));
                }
            }
            (Some(parent.clone()), true, true)
        } else {
            let bridge = req
                .options
                .get(network::BRIDGE_NAME_OPTION)
                .cloned()
                .unwrap_or_else(|| format!("br-{}", &id[..12]));
            if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
                return Err(NetError::InvalidRequest(format!(
                    "invalid bridge name {bridge:?}"
                )));
            }
            // Docker uses a bridge of that name that exists already, and
            // never deletes it.
            let external = links.iter().any(|l| l.name == bridge);
            let inhibit = req
                .options
                .get(network::INHIBIT_IPV4_OPTION)
                .is_some_and(|v| v == "true");
            (Some(bridge), external, inhibit)
        };
        if let Some(bridge) = &bridge
            && let Some(other) = all
                .iter()
                .find(|n| n.bridge.as_deref() == Some(bridge.as_str()))
        {
            return Err(NetError::InvalidRequest(format!(
                "bridge name {bridge} is already used by network {}",
                other.name
            )));
        }
        let (subnet, auto) = match req.subnet {
            Some(s) => {
                let s = s.trunc();
                if let Some(other) = all
                    .iter()
                    .find(|n| n.subnet.is_some_and(|o| overlaps(&o, &s)))
                {
                    return Err(NetError::Overlap {
                        subnet: s,
                        other: other.name.clone(),
                    });
                }
                (s, false)
            }
            None => (
                choose_subnet(&self.taken_subnets(None)?).ok_or(NetError::NoPool)?,
                true,
            ),
        };
        let gateway = req.gateway.unwrap_or_else(|| ipam::first_host(subnet));
        if !subnet.contains(&gateway) {
            return Err(NetError::InvalidRequest(format!(
                "no matching subnet for gateway {gateway}"
            )));
        }
        if let Some(r) = req.ip_range
            && !subnet.contains(&r.trunc())
        {
            return Err(NetError::InvalidRequest(format!(
                "no matching subnet for range {r}"
            )));
        }
        let subnet6 = req.subnet6.map(|s| s.trunc());
        if let Some(s6) = subnet6 {
            if let Some(other) = all.iter().find(|n| {
                n.subnet6
                    .is_some_and(|o| o.contains(&s6.network()) || s6.contains(&o.network()))
            }) {
                return Err(NetError::InvalidRequest(format!(
                    "invalid pool request: pool {s6} overlaps with other one on this address space (network {})",
                    other.name
                )));
            }
            if let Some(g) = req.gateway6
                && !s6.contains(&g)
            {
                return Err(NetError::InvalidRequest(format!(
                    "no matching subnet for gateway {g}"
                )));
            }
            if let Some(r) = req.ip_range6
                && !s6.contains(&r.trunc())
            {
                return Err(NetError::InvalidRequest(format!(
                    "no matching subnet for range {r}"
                )));
            }
        }
        let mut created_parent = false;
        if driver == "macvlan"
            && let Some(p) = &parent
            && let Some((base, vid)) = vlan_of(p)
        {
            let (p, base) = (p.clone(), base.to_string());
            created_parent =
                netlink::in_host(
                    |h| async move { netlink::ensure_vlan(&h, &p, &base, vid).await },
                )?;
        }
        let rec = NetworkRecord {
            name: req.name.clone(),
            id,
            created: now.into(),
            driver: driver.into(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range: req.ip_range.map(|r| r.trunc()),
            internal: req.internal,
            options: req.options.clone(),
            labels: req.labels.clone(),
            bridge,
            mtu,
            external_bridge: external,
            auto_subnet: auto,
            endpoints: BTreeMap::new(),
            enable_ipv6: req.enable_ipv6,
            subnet6,
            gateway6: subnet6.map(|s| req.gateway6.unwrap_or_else(|| ipam::first_host6(s))),
            ip_range6: req.ip_range6.map(|r| r.trunc()),
            parent,
            created_parent,
            no_gateway_address,
        };
        if let Err(e) = self.store.write(&rec) {
            let _ = self.delete_links(&rec);
            return Err(e);
        }
        if let Err(e) = self.ensure_bridge_link(&rec) {
            let _ = self.delete_links(&rec);
            let _ = self.store.delete(&rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    /// Deletes what the network made on the host: its bridge (never an
    /// external one, whose addresses stay too: they may be the admin's)
    /// and a VLAN parent it created.
    fn delete_links(&self, n: &NetworkRecord) -> Result<(), NetError> {
        let created_vlan = n.created_parent.then(|| n.parent.clone()).flatten();
        let own_bridge = (!n.external_bridge).then(|| n.bridge.clone()).flatten();
        netlink::in_host(|h| async move {
            if let Some(bridge) = own_bridge {
                netlink::delete_link(&h, &bridge).await?;
            }
            if let Some(vlan) = created_vlan {
                netlink::delete_link(&h, &vlan).await?;
            }
            Ok(())
        })
    }

    /// Removes a user-defined network without containers, and its bridge.
    pub fn remove(&self, key: &str) -> Result<NetworkRecord, NetError> {
        let _lock = self.store.lock()?;
        let n = self.store.find(key)?;
        if n.is_builtin() {
            return Err(NetError::Builtin(n.name));
        }
        if !n.endpoints.is_empty() {
            return Err(NetError::ActiveEndpoints {
                name: n.name.clone(),
                id: n.id.clone(),
                containers: n
                    .endpoints
                    .values()
                    .map(|e| e.container_name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.delete_links(&n)?;
        self.store.delete(&n.id)?;
        Ok(n)
    }

    /// Records container `id`'s endpoint on network `key` with an address
    /// (a static one, checked, or the lowest free one) and its interface's
    /// name (the next `ethN` the container does not use).
    pub fn reserve(
        &self,
        key: &str,
        id: &str,
        name: &str,
        req: &EndpointRequest,
    ) -> Result<(NetworkRecord, Endpoint), NetError> {
        let _lock = self.store.lock()?;
        let mut n = self.store.find(key)?;
        let Some(pool) = n.pool().filter(|_| n.has_endpoints()) else {
            return Err(NetError::InvalidRequest(format!(
                "network {} has no addresses to give (driver {})",
                n.name, n.driver
            )));
        };
        if n.endpoints.contains_key(id) {
            return Err(NetError::AlreadyConnected {
                container: name.to_string(),
                network: n.name.clone(),
            });
        }
        let taken = n.taken();
        let ip = match req.ip {
            Some(ip) => {
                if n.auto_subnet {
                    return Err(NetError::StaticIpNeedsSubnet);
                }
                pool.check_static(ip, &taken).map(|()| ip)
            }
            None => pool.allocate(&taken),
        }
        .map_err(|e| ipam_error(&n, e))?;
        let ip6 = match (n.pool6(), req.ip6) {
            (None, Some(_)) => {
                return Err(NetError::InvalidRequest(format!(
                    "network {} has no IPv6 subnet for --ip6",
                    n.name
                )));
            }
            (None, None) => None,
            (Some(pool6), asked) => {
                let taken6 = n.taken6();
                let got = match asked {
                    Some(ip) => pool6.check_static(ip, &taken6).map(|()| ip),
                    None => pool6.allocate(&taken6),
                };
                Some(got.map_err(|e| ipam_error(&n, e))?)
            }
        };
        let used: BTreeSet<String> = self
            .store
            .endpoints_of(id)?
            .into_iter()
            .map(|(_, e)| e.iface)
            .collect();
        let iface = (0..)
            .map(|i| format!("eth{i}"))
            .find(|i| !used.contains(i))
            .unwrap_or_else(|| "eth0".into());
        let endpoint = Endpoint {
            container_name: name.to_string(),
            endpoint_id: network::new_id(),
            ip,
            mac: ipam::format_mac(&req.mac.unwrap_or_else(|| ipam::mac_of(ip))),
            static_ip: req.ip.is_some(),
            aliases: req.aliases.clone(),
            // A macvlan interface has no host end.
            host_veth: if n.is_bridge() {
                host_veth_name(id, &n.id)
            } else {
                String::new()
            },
            iface,
            ip6,
            static_ip6: req.ip6.is_some(),
        };
        n.endpoints.insert(id.to_string(), endpoint.clone());
        self.store.write(&n)?;
        Ok((n, endpoint))
    }

    /// Forgets container `id`'s endpoint on network `key` (its address is
    /// free again) and deletes its veth pair. Returns the endpoint.
    pub fn release(&self, key: &str, id: &str) -> Result<(NetworkRecord, Endpoint), NetError> {
        let (n, e) = {
            let _lock = self.store.lock()?;
            let mut n = self.store.find(key)?;
            let Some(e) = n.endpoints.remove(id) else {
                return Err(NetError::NotConnected {
                    container: id.to_string(),
                    network: n.name,
                });
            };
            self.store.write(&n)?;
            (n, e)
        };
        if e.host_veth.is_empty() {
            // A macvlan interface lives only in the container's namespace.
            let path = self.netns_path(id);
            if netns::is_mounted(&path) {
                let iface = e.iface.clone();
                netlink::in_namespace(Namespace::Join(&path), |_, ns, _| async move {
                    netlink::delete_link(&ns, &iface).await
                })?;
            }
        } else {
            let veth = e.host_veth.clone();
            netlink::in_host(|h| async move { netlink::delete_link(&h, &veth).await })?;
        }
        Ok((n, e))
    }

    fn iface_config<'a>(
        &self,
        n: &'a NetworkRecord,
        e: &'a Endpoint,
    ) -> Result<Option<IfaceConfig<'a>>, NetError> {
        let Some(subnet) = n.subnet else {
            return Ok(None);
        };
        let attach = if n.is_macvlan() {
            let Some(parent) = n.parent.as_deref() else {
                return Ok(None);
            };
            Attach::Macvlan {
                parent,
                mode: macvlan_mode(&n.options)?,
            }
        } else {
            let Some(bridge) = n.bridge.as_deref() else {
                return Ok(None);
            };
            Attach::Bridge {
                host_name: &e.host_veth,
                bridge,
            }
        };
        let pool6 = n.pool6();
        Ok(Some(IfaceConfig {
            attach,
            peer_name: &e.iface,
            mtu: self.mtu_of(n),
            mac: ipam::parse_mac(&e.mac).unwrap_or_else(|| ipam::mac_of(e.ip)),
            addr: Ipv4Net::new(e.ip, subnet.prefix_len())
                .map_err(|_| NetError::InvalidRequest(format!("bad subnet {subnet}")))?,
            // Docker's bridge driver gives internal networks no gateway.
            gateway: if n.internal { None } else { n.gateway },
            addr6: match (e.ip6, pool6) {
                (Some(ip), Some(p)) => Ipv6Net::new(ip, p.subnet.prefix_len()).ok(),
                _ => None,
            },
            gateway6: pool6.filter(|_| !n.internal).map(|p| p.gateway),
        }))
    }

    /// Whether container `id`'s namespace has every interface its
    /// endpoints need: a namespace made by a daemon killed before it added
    /// them is missing its veth ends on the host.
    fn is_complete(&self, endpoints: &[(NetworkRecord, Endpoint)]) -> Result<bool, NetError> {
        let veths: Vec<&str> = endpoints
            .iter()
            .map(|(_, e)| e.host_veth.as_str())
            .filter(|v| !v.is_empty())
            .collect();
        if veths.is_empty() {
            return Ok(true);
        }
        let links = netlink::host_links()?;
        Ok(veths.iter().all(|v| links.iter().any(|l| l.name == *v)))
    }

    /// Makes container `id`'s network namespace with an interface per
    /// network it is on, unless it exists (a container started before, and
    /// not since a reboot). Returns whether it made it.
    pub fn wire(&self, id: &str) -> Result<bool, NetError> {
        let path = self.netns_path(id);
        let endpoints = self.store.endpoints_of(id)?;
        if netns::is_mounted(&path) {
            if self.is_complete(&endpoints)? {
                return Ok(false);
            }
            // Made by a daemon killed before it added the interfaces (or
            // a veth someone deleted): made again, whole. The container
            // is not running (it is being started), so nothing is in it.
            netns::remove(&path)?;
        }
        let mut plans = Vec::new();
        for (n, _) in &endpoints {
            plans.extend(self.bridge_plan(n)?);
        }
        let mut configs: Vec<IfaceConfig<'_>> = Vec::new();
        for (n, e) in &endpoints {
            configs.extend(self.iface_config(n, e)?);
        }
        let made = netlink::in_namespace(Namespace::Create(&path), |host, ns, fd| async move {
            for plan in &plans {
                // After a reboot, or a bridge someone deleted.
                plan.apply(&host).await?;
            }
            for cfg in &configs {
                // A leftover of a namespace that is gone (a reboot leaves
                // none, a crash may).
                if let Attach::Bridge { host_name, .. } = cfg.attach {
                    netlink::delete_link(&host, host_name).await?;
                }
                netlink::add_interface(&host, &ns, fd, cfg).await?;
            }
            if configs.is_empty()
                && let Some(lo) = netlink::link_index(&ns, "lo").await?
            {
                netlink::set_up(&ns, lo).await?;
            }
            Ok(())
        });
        if let Err(e) = made {
            let veths: Vec<String> = endpoints
                .iter()
                .map(|(_, e)| e.host_veth.clone())
                .filter(|v| !v.is_empty())
                .collect();
            let _ = netlink::in_host(|h| async move {
                for v in &veths {
                    netlink::delete_link(&h, v).await?;
                }
                Ok(())
            });
            let _ = netns::remove(&path);
            return Err(e);
        }
        Ok(true)
    }

    /// Connects container `id` to network `key`: reserves its endpoint and,
    /// when its namespace exists, adds the interface now.
    pub fn connect(
        &self,
        key: &str,
        id: &str,
        name: &str,
        req: &EndpointRequest,
    ) -> Result<(NetworkRecord, Endpoint), NetError> {
        let (n, e) = self.reserve(key, id, name, req)?;
        let path = self.netns_path(id);
        if netns::is_mounted(&path) {
            let wired = self.ensure_bridge_link(&n).and_then(|()| {
                let cfg = self.iface_config(&n, &e)?.ok_or_else(|| {
                    NetError::InvalidRequest(format!("network {} has no subnet", n.name))
                })?;
                netlink::in_namespace(Namespace::Join(&path), |host, ns, fd| async move {
                    netlink::add_interface(&host, &ns, fd, &cfg).await
                })
            });
            if let Err(err) = wired {
                let _ = self.release(&n.id, id);
                return Err(err);
            }
        }
        Ok((n, e))
    }

    /// Everything of container `id`: its endpoints (addresses released,
    /// veth pairs deleted) and its namespace. Returns the endpoints it had.
    pub fn teardown(&self, id: &str) -> Result<Vec<(NetworkRecord, Endpoint)>, NetError> {
        let mut released = Vec::new();
        for (n, _) in self.store.endpoints_of(id)? {
            match self.release(&n.id, id) {
                Ok(done) => released.push(done),
                Err(NetError::NotConnected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        netns::remove(&self.netns_path(id))?;
        Ok(released)
    }

    /// The endpoints of container `id`, with their networks, `eth0` first.
    pub fn endpoints_of(&self, id: &str) -> Result<Vec<(NetworkRecord, Endpoint)>, NetError> {
        self.store.endpoints_of(id)
    }

    /// Releases what containers that no longer exist left: endpoints
    /// (addresses), namespace files, and host veth ends on our bridges.
    /// `live` is every container id that exists. Returns how many things it
    /// removed.
    pub fn sweep(&self, live: &BTreeSet<String>) -> Result<usize, NetError> {
        self.sweep_with(live, live)
    }

    /// [`Networks::sweep`], and also the namespaces of containers that
    /// exist but do not run (`live` minus `running`) when they lack an
    /// interface (a daemon killed between making the namespace and its
    /// veth pairs): the next start makes them whole.
    pub fn sweep_with(
        &self,
        live: &BTreeSet<String>,
        running: &BTreeSet<String>,
    ) -> Result<usize, NetError> {
        let mut swept = 0;
        for n in self.store.list()? {
            for id in n.endpoints.keys().filter(|id| !live.contains(*id)) {
                if self.release(&n.id, id).is_ok() {
                    swept += 1;
                }
            }
        }
        for id in netns::list(&self.cfg.netns_dir) {
            let path = self.netns_path(&id);
            let remove = if !live.contains(&id) {
                true
            } else if running.contains(&id) {
                false
            } else {
                // A plain file (a crash before the mount) or a namespace
                // missing a veth.
                !netns::is_mounted(&path) || !self.is_complete(&self.store.endpoints_of(&id)?)?
            };
            if remove {
                netns::remove(&path)?;
                swept += 1;
            }
        }
        let nets = self.store.list()?;
        // Only bridges the daemon owns: an existing host bridge has other
        // users' veth ports.
        let bridges: BTreeSet<String> = nets
            .iter()
            .filter(|n| !n.external_bridge)
            .filter_map(|n| n.bridge.clone())
            .collect();
        let wanted: BTreeSet<String> = nets
            .iter()
            .flat_map(|n| n.endpoints.values().map(|e| e.host_veth.clone()))
            .collect();
        let links = netlink::host_links()?;
        let ours: BTreeSet<u32> = links
            .iter()
            .filter(|l| bridges.contains(&l.name))
            .map(|l| l.index)
            .collect();
        let stray: Vec<String> = links
            .into_iter()
            .filter(|l| l.controller.is_some_and(|c| ours.contains(&c)))
            .filter(|l| l.name.starts_with("veth") && !wanted.contains(&l.name))
            .map(|l| l.name)
            .collect();
        swept += stray.len();
        netlink::in_host(|h| async move {
            for v in &stray {
                netlink::delete_link(&h, v).await?;
            }
            Ok(())
        })?;
        Ok(swept)
    }

    /// At a clean daemon stop: deletes the default bridge when no container
    /// has an address on it (it is made again at the next start), so
    /// daemons of throwaway state roots leave no bridge behind.
    pub fn shutdown(&self) -> Result<(), NetError> {
        let _lock = self.store.lock()?;
        if let Some(n) = self.store.list()?.into_iter().find(|n| n.name == "bridge")
            && n.endpoints.is_empty()
        {
            self.delete_links(&n)?;
        }
        Ok(())
    }

    /// Removes every user-defined network without containers; returns their
    /// records.
    pub fn prune(
        &self,
        keep: impl Fn(&NetworkRecord) -> bool,
    ) -> Result<Vec<NetworkRecord>, NetError> {
        let mut removed = Vec::new();
        for n in self.store.list()? {
            if n.is_builtin() || !n.endpoints.is_empty() || keep(&n) {
                continue;
            }
            match self.remove(&n.id) {
                Ok(n) => removed.push(n),
                Err(NetError::ActiveEndpoints { .. }) | Err(NetError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// How to make (or check) one network's link.
#[derive(Debug, Clone)]
enum BridgePlan {
    /// A bridge with the gateway addresses.
    Bridge {
        bridge: String,
        mtu: u32,
        /// `None`: no address of ours (an outside router is the gateway).
        gateway: Option<Ipv4Net>,
        gateway6: Option<Ipv6Net>,
        /// It exists and is not ours: never created.
        external: bool,
    },
    /// A macvlan network's VLAN parent (`eth0.10`).
    Vlan { name: String, base: String, id: u16 },
}

impl BridgePlan {
    /// Makes the bridge unless it exists (an external one must exist) and
    /// gives it the gateway addresses; or makes the VLAN parent.
    async fn apply(&self, h: &rtnetlink::Handle) -> Result<(), NetError> {
        match self {
            BridgePlan::Bridge {
                bridge,
                mtu,
                gateway,
                gateway6,
                external,
            } => {
                let index = if *external {
                    let index = netlink::link_index(h, bridge)
                        .await?
                        .ok_or_else(|| NetError::LinkMissing(bridge.clone()))?;
                    if let Some(gw) = gateway {
                        netlink::add_address(h, index, *gw).await?;
                    }
                    netlink::set_up(h, index).await?;
                    index
                } else {
                    netlink::ensure_bridge(h, bridge, *mtu, *gateway).await?
                };
                if let Some(gw6) = gateway6 {
                    netlink::add_address6(h, index, *gw6).await?;
                }
                Ok(())
            }
            BridgePlan::Vlan { name, base, id } => {
                netlink::ensure_vlan(h, name, base, *id).await.map(|_| ())
            }
        }
    }
}

/// `IFACE.VLAN` (Docker's macvlan parent with a VLAN id): the base
/// interface and the id (1 to 4094).
pub fn vlan_of(parent: &str) -> Option<(&str, u16)> {
    let (base, id) = parent.rsplit_once('.')?;
    let id: u16 = id.parse().ok()?;
    (!base.is_empty() && (1..=4094).contains(&id)).then_some((base, id))
}

/// The macvlan mode an `-o macvlan_mode=` value names.
fn macvlan_mode(
    options: &BTreeMap<String, String>,
) -> Result<rtnetlink::packet_route::link::MacVlanMode, NetError> {
    use rtnetlink::packet_route::link::MacVlanMode;
    match options
        .get(network::MACVLAN_MODE_OPTION)
        .map(String::as_str)
    {
        None | Some("" | "bridge") => Ok(MacVlanMode::Bridge),
        Some("vepa") => Ok(MacVlanMode::Vepa),
        Some("passthru") => Ok(MacVlanMode::Passthrough),
        Some("private") => Ok(MacVlanMode::Private),
        Some(other) => Err(NetError::InvalidRequest(format!(
            "macvlan mode {other:?} is not valid: bridge, vepa, passthru or private"
        ))),
    }
}

/// Docker's options of the default bridge network.
const DEFAULT_BRIDGE_OPTIONS: [(&str, &str); 4] = [
    (network::DEFAULT_BRIDGE_OPTION, "true"),
    ("com.docker.network.bridge.enable_icc", "true"),
    ("com.docker.network.bridge.enable_ip_masquerade", "true"),
    ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_avoid_routes_and_other_networks() {
        assert_eq!(
            choose_subnet(&[]).unwrap(),
            "172.18.0.0/16".parse::<Ipv4Net>().unwrap()
        );
        let taken: Vec<Ipv4Net> = vec![
            "172.18.5.0/24".parse().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
        ];
        assert_eq!(
            choose_subnet(&taken).unwrap(),
            "192.168.0.0/20".parse::<Ipv4Net>().unwrap()
        );
    }

    #[test]
    fn default_bridge_names_fit_linux_limits() {
        assert_eq!(default_bridge_name(Path::new("/var/lib/stack")), "stack0");
        let a = default_bridge_name(Path::new("/tmp/a"));
        let b = default_bridge_name(Path::new("/tmp/b"));
        assert_ne!(a, b);
        assert!(a.starts_with("stk-") && a.len() <= 15);
        let v = host_veth_name(&"a".repeat(64), &"b".repeat(64));
        assert!(v.starts_with("veth") && v.len() == 11);
    }

    #[test]
    fn vlan_parents_parse_as_dockers_iface_dot_id() {
        assert_eq!(vlan_of("eth0.10"), Some(("eth0", 10)));
        assert_eq!(vlan_of("br.x.4094"), Some(("br.x", 4094)));
        assert_eq!(vlan_of("eth0"), None);
        assert_eq!(vlan_of("eth0.0"), None);
        assert_eq!(vlan_of("eth0.4095"), None);
        assert_eq!(vlan_of(".10"), None);
    }

    #[test]
    fn network_names_follow_dockers_rule() {
        assert!(is_valid_name("front-1.a_b"));
        assert!(is_valid_name("n"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a/b"));
    }
}
