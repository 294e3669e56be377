//! Links, addresses and routes over rtnetlink: bridges, veth pairs whose
//! peer is created straight into a container's network namespace, the
//! container's interface configuration, and the dumps drift checks and tests
//! read. Never shells out to `ip`.
//!
//! rtnetlink is async; every operation here runs on a short-lived thread of
//! its own with a current-thread tokio runtime ([`in_host`],
//! [`in_namespace`]). A netlink socket belongs to the network namespace of
//! the thread that opened it, so a thread that must act in a container's
//! namespace opens its host socket first, then joins (or creates) the
//! namespace and opens the second socket there; the thread is then
//! discarded with its namespace, so no thread of the daemon ever stays in a
//! container's namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use ipnet::{Ipv4Net, Ipv6Net};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, MacVlanMode,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    LinkVlan, RouteMessageBuilder,
};

use super::NetError;

/// The main routing table's id.
const RT_TABLE_MAIN: u8 = 254;
/// `EEXIST`, as netlink reports it (negated).
const EEXIST: i32 = -libc::EEXIST;
/// `ENODEV`, as netlink reports it (negated).
const ENODEV: i32 = -libc::ENODEV;

/// A link as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its kind (`bridge`, `veth`, …) when it has one.
    pub kind: Option<String>,
    /// The bridge it is a port of.
    pub controller: Option<u32>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Its hardware address.
    pub mac: Option<Vec<u8>>,
}

/// An IPv4 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The link's index.
    pub index: u32,
    /// The address with its prefix length.
    pub addr: Ipv4Net,
}

/// An IPv6 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address6 {
    /// The link's index.
    pub index: u32,
    /// The address with its prefix length.
    pub addr: Ipv6Net,
}

fn failed(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

/// The kernel's error number of a failed request (negative), 0 otherwise.
fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code(),
        _ => 0,
    }
}

/// A connection in the calling thread's network namespace; its driver runs
/// on the thread's runtime.
fn connect() -> Result<Handle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `work` on a thread of its own with a current-thread runtime.
fn on_thread<T, W>(work: W) -> Result<T, NetError>
where
    T: Send,
    W: FnOnce(&tokio::runtime::Runtime) -> Result<T, NetError> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(NetError::Socket)?;
            work(&rt)
        })
        .join()
        .unwrap_or(Err(NetError::Panicked))
    })
}

/// Runs `f` with a netlink handle in the host's (the daemon's) network
/// namespace.
pub fn in_host<T, F, Fut>(f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    on_thread(|rt| rt.block_on(async { f(connect()?).await }))
}

/// How [`in_namespace`] finds the namespace.
#[derive(Debug, Clone, Copy)]
pub enum Namespace<'a> {
    /// An existing namespace, by its (bind-mounted) file.
    Join(&'a Path),
    /// A new namespace, bind-mounted at this path (see [`super::netns`]).
    Create(&'a Path),
}

/// Runs `f` with a handle in the host's namespace, one in the container's
/// namespace, and the raw fd of the container's namespace (for moving links
/// into it), on a thread that is discarded afterwards.
pub fn in_namespace<T, F, Fut>(ns: Namespace<'_>, f: F) -> Result<T, NetError>
where
    T: Send,
    F: FnOnce(Handle, Handle, i32) -> Fut + Send,
    Fut: Future<Output = Result<T, NetError>>,
{
    on_thread(|rt| {
        rt.block_on(async {
            let host = connect()?;
            let path = match ns {
                Namespace::Join(path) => {
                    super::netns::enter(path)?;
                    path
                }
                Namespace::Create(path) => {
                    super::netns::create_here(path)?;
                    path
                }
            };
            let file = std::fs::File::open(path).map_err(|source| NetError::Io {
                action: "open the network namespace",
                path: path.to_path_buf(),
                source,
            })?;
            let inner = connect()?;
            f(host, inner, file.as_raw_fd()).await
        })
    })
}

/// The index of the link named `name`, if there is one.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == ENODEV => Ok(None),
        Err(e) => Err(failed(format!("look up link {name}"))(e)),
    }
}

/// Creates bridge `name` (up, with `mtu`) unless it exists, and gives it
/// `gateway` (address and prefix length) unless it has it. Returns its
/// index.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: u32,
    gateway: Option<Ipv4Net>,
) -> Result<u32, NetError> {
    if link_index(h, name).await?.is_none() {
        let msg = LinkBridge::new(name)
            .mtu(mtu)
            .address(bridge_mac(name, gateway).to_vec())
            .build();
        match h.link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == EEXIST => {}
            Err(e) => return Err(failed(format!("create bridge {name}"))(e)),
        }
    }
    let index = link_index(h, name)
        .await?
        .ok_or_else(|| NetError::LinkMissing(name.to_string()))?;
    if let Some(gateway) = gateway {
        add_address(h, index, gateway).await?;
    }
    set_up(h, index).await?;
    Ok(index)
}

/// The MAC address a bridge of ours is made with. A bridge without one
/// set takes the lowest MAC address of its ports, so it changes when a
/// container joins or leaves, and containers keep sending to the old one
/// (their neighbour entry stays reachable for up to 45 s) and lose their
/// gateway, DNS server included, meanwhile. Set once, it never follows its
/// ports (as Docker sets its bridges'). The gateway's address in Docker's
/// `02:42:` form, which no container on the subnet has; a bridge without
/// a gateway address of ours: one from its name.
pub fn bridge_mac(name: &str, gateway: Option<Ipv4Net>) -> [u8; 6] {
    match gateway {
        Some(gw) => super::ipam::mac_of(gw.addr()),
        None => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(name.as_bytes());
            [0x02, 0x42, digest[0], digest[1], digest[2], digest[3]]
        }
    }
}

/// Adds `addr` to link `index`; an address it already has is fine.
pub async fn add_address(h: &Handle, index: u32, addr: Ipv4Net) -> Result<(), NetError> {
    match h
        .address()
        .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == EEXIST => Ok(()),
        Err(e) => Err(failed(format!("add address {addr}"))(e)),
    }
}

/// Adds IPv6 `addr` to link `index` without duplicate address detection
/// (`nodad`: usable at once, as Docker's bridge driver adds its gateway);
/// an address it already has is fine.
pub async fn add_address6(h: &Handle, index: u32, addr: Ipv6Net) -> Result<(), NetError> {
    let mut req = h
        .address()
        .add(index, IpAddr::V6(addr.addr()), addr.prefix_len());
    let msg = req.message_mut();
    msg.header.flags |= AddressHeaderFlags::Nodad;
    msg.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == EEXIST => Ok(()),
        Err(e) => Err(failed(format!("add address {addr}"))(e)),
    }
}

/// Brings link `index` up.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), NetError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(failed(format!("bring link {index} up")))
}

/// Deletes the link named `name`; one that is gone already is fine.
/// Deleting either end of a veth pair deletes both.
pub async fn delete_link(h: &Handle, name: &str) -> Result<(), NetError> {
    let Some(index) = link_index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == ENODEV => Ok(()),
        Err(e) => Err(failed(format!("delete link {name}"))(e)),
    }
}

/// How a container's interface reaches its network.
#[derive(Debug, Clone, Copy)]
pub enum Attach<'a> {
    /// A veth pair whose host end is a port of a bridge (ours, or an
    /// existing host bridge).
    Bridge {
        /// The host end's name (`veth…`).
        host_name: &'a str,
        /// The bridge.
        bridge: &'a str,
    },
    /// A macvlan child of a host interface, made straight in the
    /// container's namespace.
    Macvlan {
        /// The host interface (`eth0`, `eth0.10`).
        parent: &'a str,
        /// The macvlan mode.
        mode: MacVlanMode,
    },
}

/// What a container's interface on one network is.
#[derive(Debug, Clone)]
pub struct IfaceConfig<'a> {
    /// How it is attached.
    pub attach: Attach<'a>,
    /// Its name in the container's namespace (`eth0`, …).
    pub peer_name: &'a str,
    /// Its MTU (both ends of a veth pair).
    pub mtu: u32,
    /// Its hardware address.
    pub mac: [u8; 6],
    /// The container's address and the subnet's prefix length.
    pub addr: Ipv4Net,
    /// The default route's gateway (`None`: no default route).
    pub gateway: Option<Ipv4Addr>,
    /// The container's IPv6 address and prefix length.
    pub addr6: Option<Ipv6Net>,
    /// The IPv6 default route's gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Sends a link message as `RTM_NEWLINK` on an existing link (neither
/// `NLM_F_CREATE` nor `NLM_F_EXCL` nor `NLM_F_REPLACE`), which is how the
/// kernel takes bridge port settings (`ip link set … type bridge_slave`);
/// rtnetlink's set request is `RTM_SETLINK`, which ignores them.
async fn change_link(
    h: &Handle,
    msg: rtnetlink::packet_route::link::LinkMessage,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut answers = h.clone().request(req)?;
    while let Some(answer) = answers.next().await {
        if let NetlinkPayload::Error(e) = answer.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

/// Turns hairpin mode on for bridge port `index`: frames may leave by the
/// port they came in, so a container reaches its own published port
/// through the host's address (Docker does it for `--userland-proxy=false`).
pub async fn set_hairpin(h: &Handle, index: u32) -> Result<(), NetError> {
    change_link(h, LinkBridgePort::new(index).hairpin(true).build())
        .await
        .map_err(failed(format!("turn hairpin mode on for link {index}")))
}

/// Creates the container's interface for `cfg` straight in the namespace
/// `ns_fd` (one request): a veth pair whose host end is an up, hairpin
/// port of the bridge, or a macvlan child of the parent. Then, in that
/// namespace, gives it its addresses, brings it and `lo` up and adds the
/// default routes.
pub async fn add_interface(
    host: &Handle,
    ns: &Handle,
    ns_fd: i32,
    cfg: &IfaceConfig<'_>,
) -> Result<(), NetError> {
    match cfg.attach {
        Attach::Bridge { host_name, bridge } => {
            let bridge_index = link_index(host, bridge)
                .await?
                .ok_or_else(|| NetError::LinkMissing(bridge.to_string()))?;
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(cfg.peer_name)
                .mtu(cfg.mtu)
                .address(cfg.mac.to_vec())
                .setns_by_fd(ns_fd)
                .build();
            let msg = LinkVeth::new(host_name, cfg.peer_name)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .mtu(cfg.mtu)
                .controller(bridge_index)
                .up()
                .build();
            host.link()
                .add(msg)
                .execute()
                .await
                .map_err(failed(format!("create veth pair {host_name}")))?;
            let configured = async {
                let index = link_index(host, host_name)
                    .await?
                    .ok_or_else(|| NetError::LinkMissing(host_name.to_string()))?;
                set_hairpin(host, index).await?;
                configure_peer(ns, cfg).await
            }
            .await;
            if configured.is_err() {
                let _ = delete_link(host, host_name).await;
            }
            configured
        }
        Attach::Macvlan { parent, mode } => {
            let parent_index = link_index(host, parent)
                .await?
                .ok_or_else(|| NetError::LinkMissing(parent.to_string()))?;
            // The parent is resolved in the requesting socket's namespace
            // (the host's), the new link made in the target one.
            let msg = LinkMacVlan::new(cfg.peer_name, parent_index, mode)
                .mtu(cfg.mtu)
                .address(cfg.mac.to_vec())
                .setns_by_fd(ns_fd)
                .build();
            host.link()
                .add(msg)
                .execute()
                .await
                .map_err(failed(format!("create a macvlan interface of {parent}")))?;
            let configured = configure_peer(ns, cfg).await;
            if configured.is_err() {
                let _ = delete_link(ns, cfg.peer_name).await;
            }
            configured
        }
    }
}

async fn configure_peer(ns: &Handle, cfg: &IfaceConfig<'_>) -> Result<(), NetError> {
    if let Some(lo) = link_index(ns, "lo").await? {
        set_up(ns, lo).await?;
    }
    let index = link_index(ns, cfg.peer_name)
        .await?
        .ok_or_else(|| NetError::LinkMissing(cfg.peer_name.to_string()))?;
    add_address(ns, index, cfg.addr).await?;
    if let Some(addr6) = cfg.addr6 {
        // nodad: the address is usable at once, not after a second of
        // duplicate address detection.
        add_address6(ns, index, addr6).await?;
    }
    set_up(ns, index).await?;
    if let Some(gw) = cfg.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        match ns.route().add(route).execute().await {
            Ok(()) => {}
            // A second network's interface: the first one's route stays.
            Err(e) if errno(&e) == EEXIST => {}
            Err(e) => return Err(failed(format!("add the default route via {gw}"))(e)),
        }
    }
    if let (Some(gw), Some(_)) = (cfg.gateway6, cfg.addr6) {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        match ns.route().add(route).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == EEXIST => {}
            Err(e) => return Err(failed(format!("add the default route via {gw}"))(e)),
        }
    }
    Ok(())
}

/// Makes VLAN sub-interface `name` (VLAN `id` of `parent`) unless it
/// exists, and brings it up. Returns whether it made it.
pub async fn ensure_vlan(h: &Handle, name: &str, parent: &str, id: u16) -> Result<bool, NetError> {
    let made = if link_index(h, name).await?.is_none() {
        let parent_index = link_index(h, parent)
            .await?
            .ok_or_else(|| NetError::LinkMissing(parent.to_string()))?;
        match h
            .link()
            .add(LinkVlan::new(name, parent_index, id).up().build())
            .execute()
            .await
        {
            Ok(()) => true,
            Err(e) if errno(&e) == EEXIST => false,
            // The kernel knows no `vlan` link kind.
            Err(e) if errno(&e) == -libc::EOPNOTSUPP => {
                return Err(NetError::InvalidRequest(format!(
                    "cannot create VLAN interface {name}: this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)"
                )));
            }
            Err(e) => return Err(failed(format!("create VLAN interface {name}"))(e)),
        }
    } else {
        false
    };
    let index = link_index(h, name)
        .await?
        .ok_or_else(|| NetError::LinkMissing(name.to_string()))?;
    set_up(h, index).await?;
    Ok(made)
}

/// Every link of the namespace `h` is in.
pub async fn links(h: &Handle) -> Result<Vec<Link>, NetError> {
    let msgs: Vec<_> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed("list links"))?;
    Ok(msgs
        .into_iter()
        .map(|m| {
            let mut link = Link {
                index: m.header.index,
                name: String::new(),
                kind: None,
                controller: None,
                mtu: None,
                mac: None,
            };
            for attr in m.attributes {
                match attr {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Controller(c) => link.controller = Some(c),
                    LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                    LinkAttribute::Address(mac) => link.mac = Some(mac),
                    LinkAttribute::LinkInfo(infos) => {
                        for info in infos {
                            if let LinkInfo::Kind(kind) = info {
                                link.kind = Some(kind_name(&kind));
                            }
                        }
                    }
                    _ => {}
                }
            }
            link
        })
        .collect())
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// The address messages of one family in the namespace `h` is in.
async fn address_messages(
    h: &Handle,
    family: AddressFamily,
) -> Result<Vec<AddressMessage>, NetError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed("list addresses"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.family == family)
        .collect())
}

/// Every IPv4 address of the namespace `h` is in.
pub async fn addresses(h: &Handle) -> Result<Vec<Address>, NetError> {
    Ok(address_messages(h, AddressFamily::Inet)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => {
                    Ipv4Net::new(*ip, m.header.prefix_len)
                        .ok()
                        .map(|addr| Address {
                            index: m.header.index,
                            addr,
                        })
                }
                _ => None,
            })
        })
        .collect())
}

/// Every IPv6 address of the namespace `h` is in.
pub async fn addresses6(h: &Handle) -> Result<Vec<Address6>, NetError> {
    Ok(address_messages(h, AddressFamily::Inet6)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V6(ip)) => Ipv6Net::new(*ip, m.header.prefix_len)
                    .ok()
                    .map(|addr| Address6 {
                        index: m.header.index,
                        addr,
                    }),
                _ => None,
            })
        })
        .collect())
}

/// An IPv4 route of the main table: destination and output link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where it leads (`0.0.0.0/0` for the default route).
    pub destination: Ipv4Net,
    /// The output link.
    pub oif: Option<u32>,
    /// The gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// The IPv4 routes of the main table of the namespace `h` is in.
pub async fn routes(h: &Handle) -> Result<Vec<Route>, NetError> {
    let msgs: Vec<_> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(failed("list routes"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| {
            m.header.address_family == AddressFamily::Inet && m.header.table == RT_TABLE_MAIN
        })
        .filter_map(|m| {
            let mut dest = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            let mut gateway = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = *ip,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                    _ => {}
                }
            }
            Ipv4Net::new(dest, m.header.destination_prefix_length)
                .ok()
                .map(|destination| Route {
                    destination,
                    oif,
                    gateway,
                })
        })
        .collect())
}

/// The MTU of the link the host's default route leaves by; `None` without
/// a default route.
pub async fn default_route_mtu(h: &Handle) -> Result<Option<u32>, NetError> {
    let routes = routes(h).await?;
    let Some(oif) = routes
        .iter()
        .find(|r| r.destination.prefix_len() == 0)
        .and_then(|r| r.oif)
    else {
        return Ok(None);
    };
    Ok(links(h)
        .await?
        .into_iter()
        .find(|l| l.index == oif)
        .and_then(|l| l.mtu))
}

/// The links of the host's namespace (for drift checks and tests).
pub fn host_links() -> Result<Vec<Link>, NetError> {
    in_host(|h| async move { links(&h).await })
}

/// The IPv4 addresses of the host's namespace.
pub fn host_addresses() -> Result<Vec<Address>, NetError> {
    in_host(|h| async move { addresses(&h).await })
}

/// The IPv6 addresses of the host's namespace.
pub fn host_addresses6() -> Result<Vec<Address6>, NetError> {
    in_host(|h| async move { addresses6(&h).await })
}

/// The links and IPv4 addresses inside the namespace bind-mounted at `ns`.
pub fn namespace_links(ns: &Path) -> Result<(Vec<Link>, Vec<Address>), NetError> {
    in_namespace(Namespace::Join(ns), |_, inner, _| async move {
        Ok((links(&inner).await?, addresses(&inner).await?))
    })
}
