//! Container networking: bridge networks (the default `bridge` and
//! user-defined ones), each a Linux bridge with a subnet; a persistent
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
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use netlink::{Namespace, VethConfig};
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
        ip: Ipv4Addr,
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
                        subnet: None,
                        gateway: None,
                        ip_range: None,
                        internal: false,
                        options: BTreeMap::new(),
                        labels: BTreeMap::new(),
                        bridge: None,
                        mtu: None,
                        external_bridge: false,
                        auto_subnet: false,
                        endpoints: BTreeMap::new(),
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
        };
        self.store.write(&rec)?;
        self.ensure_bridge_link(&rec)
    }

    /// What making a network's bridge takes: (bridge, MTU, gateway with
    /// prefix, external); `None` for networks without a bridge.
    fn bridge_plan(&self, n: &NetworkRecord) -> Result<Option<BridgePlan>, NetError> {
        let (Some(bridge), Some(subnet)) = (n.bridge.clone(), n.subnet) else {
            return Ok(None);
        };
        let gateway = n.gateway.unwrap_or_else(|| ipam::first_host(subnet));
        let gw = Ipv4Net::new(gateway, subnet.prefix_len())
            .map_err(|_| NetError::InvalidRequest(format!("bad subnet {subnet}")))?;
        Ok(Some(BridgePlan {
            bridge,
            mtu: self.mtu_of(n),
            gateway: gw,
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

    /// Creates a bridge network and its bridge.
    pub fn create(&self, req: &CreateRequest, now: &str) -> Result<NetworkRecord, NetError> {
        if !is_valid_name(&req.name) {
            return Err(NetError::InvalidRequest(format!(
                "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        match req.driver.as_deref() {
            None | Some("bridge") => {}
            Some(other) => {
                return Err(NetError::InvalidRequest(format!(
                    "plugin \"{other}\" not found: only the bridge driver is available"
                )));
            }
        }
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
        let id = network::new_id();
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
        let _host = self.host_lock()?;
        let _lock = self.store.lock()?;
        let all = self.store.list()?;
        if all.iter().any(|n| n.name == req.name) {
            return Err(NetError::NameInUse(req.name.clone()));
        }
        if let Some(other) = all
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
        let rec = NetworkRecord {
            name: req.name.clone(),
            id,
            created: now.into(),
            driver: "bridge".into(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            ip_range: req.ip_range.map(|r| r.trunc()),
            internal: req.internal,
            options: req.options.clone(),
            labels: req.labels.clone(),
            bridge: Some(bridge),
            mtu,
            external_bridge: false,
            auto_subnet: auto,
            endpoints: BTreeMap::new(),
        };
        self.store.write(&rec)?;
        if let Err(e) = self.ensure_bridge_link(&rec) {
            let _ = self.delete_bridge(&rec);
            let _ = self.store.delete(&rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    fn delete_bridge(&self, n: &NetworkRecord) -> Result<(), NetError> {
        if n.external_bridge {
            return Ok(());
        }
        let Some(bridge) = n.bridge.clone() else {
            return Ok(());
        };
        netlink::in_host(|h| async move { netlink::delete_link(&h, &bridge).await })
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
        self.delete_bridge(&n)?;
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
        let Some(pool) = n.pool().filter(|_| n.is_bridge()) else {
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
                match pool.check_static(ip, &taken) {
                    Ok(()) => ip,
                    Err(ipam::IpamError::InUse { ip }) => {
                        let holder = n
                            .endpoints
                            .values()
                            .find(|e| e.ip == ip)
                            .map(|e| e.container_name.clone())
                            .unwrap_or_default();
                        return Err(NetError::AddressInUse {
                            ip,
                            network: n.name.clone(),
                            holder,
                        });
                    }
                    Err(source) => {
                        return Err(NetError::Ipam {
                            network: n.name.clone(),
                            source,
                        });
                    }
                }
            }
            None => pool.allocate(&taken).map_err(|source| NetError::Ipam {
                network: n.name.clone(),
                source,
            })?,
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
            host_veth: host_veth_name(id, &n.id),
            iface,
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
        let veth = e.host_veth.clone();
        netlink::in_host(|h| async move { netlink::delete_link(&h, &veth).await })?;
        Ok((n, e))
    }

    fn veth_config<'a>(&self, n: &'a NetworkRecord, e: &'a Endpoint) -> Option<VethConfig<'a>> {
        let subnet = n.subnet?;
        Some(VethConfig {
            host_name: &e.host_veth,
            peer_name: &e.iface,
            bridge: n.bridge.as_deref()?,
            mtu: self.mtu_of(n),
            mac: ipam::parse_mac(&e.mac).unwrap_or_else(|| ipam::mac_of(e.ip)),
            addr: Ipv4Net::new(e.ip, subnet.prefix_len()).ok()?,
            // Docker's bridge driver gives internal networks no gateway.
            gateway: if n.internal { None } else { n.gateway },
        })
    }

    /// Makes container `id`'s network namespace with an interface per
    /// network it is on, unless it exists (a container started before, and
    /// not since a reboot). Returns whether it made it.
    pub fn wire(&self, id: &str) -> Result<bool, NetError> {
        let path = self.netns_path(id);
        if netns::is_mounted(&path) {
            return Ok(false);
        }
        let endpoints = self.store.endpoints_of(id)?;
        let mut plans = Vec::new();
        for (n, _) in &endpoints {
            plans.extend(self.bridge_plan(n)?);
        }
        let configs: Vec<VethConfig<'_>> = endpoints
            .iter()
            .filter_map(|(n, e)| self.veth_config(n, e))
            .collect();
        let made = netlink::in_namespace(Namespace::Create(&path), |host, ns, fd| async move {
            for plan in &plans {
                // After a reboot, or a bridge someone deleted.
                plan.apply(&host).await?;
            }
            for cfg in &configs {
                // A leftover of a namespace that is gone (a reboot leaves
                // none, a crash may).
                netlink::delete_link(&host, cfg.host_name).await?;
                netlink::add_veth(&host, &ns, fd, cfg).await?;
            }
            if configs.is_empty()
                && let Some(lo) = netlink::link_index(&ns, "lo").await?
            {
                netlink::set_up(&ns, lo).await?;
            }
            Ok(())
        });
        if let Err(e) = made {
            let veths: Vec<String> = endpoints.iter().map(|(_, e)| e.host_veth.clone()).collect();
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
                let cfg = self.veth_config(&n, &e).ok_or_else(|| {
                    NetError::InvalidRequest(format!("network {} has no subnet", n.name))
                })?;
                netlink::in_namespace(Namespace::Join(&path), |host, ns, fd| async move {
                    netlink::add_veth(&host, &ns, fd, &cfg).await
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
        let mut swept = 0;
        for n in self.store.list()? {
            for id in n.endpoints.keys().filter(|id| !live.contains(*id)) {
                if self.release(&n.id, id).is_ok() {
                    swept += 1;
                }
            }
        }
        for id in netns::list(&self.cfg.netns_dir) {
            if !live.contains(&id) {
                netns::remove(&self.netns_path(&id))?;
                swept += 1;
            }
        }
        let nets = self.store.list()?;
        let bridges: BTreeSet<String> = nets.iter().filter_map(|n| n.bridge.clone()).collect();
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
            self.delete_bridge(&n)?;
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

/// How to make (or check) one network's bridge.
#[derive(Debug, Clone)]
struct BridgePlan {
    bridge: String,
    mtu: u32,
    gateway: Ipv4Net,
    external: bool,
}

impl BridgePlan {
    /// Makes the bridge unless it exists (an external one must exist) and
    /// gives it the gateway address.
    async fn apply(&self, h: &rtnetlink::Handle) -> Result<(), NetError> {
        if self.external {
            let index = netlink::link_index(h, &self.bridge)
                .await?
                .ok_or_else(|| NetError::LinkMissing(self.bridge.clone()))?;
            netlink::add_address(h, index, self.gateway).await?;
            netlink::set_up(h, index).await
        } else {
            netlink::ensure_bridge(h, &self.bridge, self.mtu, self.gateway)
                .await
                .map(|_| ())
        }
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
    fn network_names_follow_dockers_rule() {
        assert!(is_valid_name("front-1.a_b"));
        assert!(is_valid_name("n"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("a/b"));
    }
}
