//! The embedded DNS server: containers on user-defined networks resolve each
//! other's names (container names, network aliases, service names) through
//! it, and everything else is forwarded to the host's resolvers.
//!
//! # Where it listens, and why
//! One server runs in the daemon, in the host's network namespace, and listens
//! on each user-defined network's gateway address, port 53, UDP and TCP — the
//! way podman's aardvark-dns does. Containers on that network get
//! `nameserver <gateway>` in their resolv.conf.
//!
//! Docker instead listens on 127.0.0.11 inside every container's network
//! namespace and DNATs port 53 to a random port there. That needs a socket
//! per container, opened from inside its namespace, and NAT rules per
//! container; the gateway address needs neither: it already exists on the
//! host for the network's bridge, a container reaches it without NAT, and
//! loopback upstream resolvers (systemd-resolved's 127.0.0.53) work because
//! the forwarding side runs in the host's namespace.
//!
//! The listening address decides the network: each listener has its own
//! handler that knows its network's name, so a container only resolves the
//! names of networks it is on. A container on another network could still
//! route a query to this gateway address through its own gateway, so each
//! listener also only answers clients from its network's subnets (hickory's
//! access list answers others REFUSED).
//!
//! # What it answers
//! - A and AAAA for registered names, every address of every container with
//!   that name (replicas of a service, several containers with one alias),
//!   rotated by one per query (round robin); other types of a registered name
//!   get an empty answer. Names match case-insensitively, with or without the
//!   trailing dot, and also with the network's name or a search domain after
//!   them (`web`, `web.`, `WEB.mynet`, `web.example.org` with search domain
//!   `example.org`), as Docker resolves `NAME.NETWORK`.
//! - PTR for a registered address: `NAME.NETWORK.`, as Docker answers.
//! - Everything else goes to the host's resolvers, in order, over UDP with a
//!   retry over TCP when the answer is truncated, each with a timeout;
//!   SERVFAIL when none answers.
//!
//! Records change under a `RwLock` without restarting anything.
//!
//! This module never reads host files or creates interfaces: the caller
//! passes the upstream servers (see [`upstreams_from_resolv_conf`]) and the
//! addresses to listen on, which must already exist.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;

/// The TTL of local answers, Docker's (libnetwork `resolver.go` `respTTL`).
pub const LOCAL_TTL: u32 = 600;

/// How long one upstream server has to answer (UDP, and the TCP retry each)
/// unless the caller says otherwise: resolv.conf's default `timeout:5`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle TCP client connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long removing a listener waits for its tasks to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Why the DNS server could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The UDP socket could not be bound (address missing or port taken).
    #[error("bind the DNS server's UDP socket to {addr}")]
    BindUdp {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TCP socket could not be bound.
    #[error("bind the DNS server's TCP socket to {addr}")]
    BindTcp {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sockets could not be handed to the async runtime.
    #[error("register the DNS server's sockets on {addr}")]
    Register {
        /// The listening address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The address already has a listener.
    #[error("the DNS server already listens on {addr}")]
    ListenerExists {
        /// The address.
        addr: SocketAddr,
    },
}

/// Settings of the server, resolved by the caller.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The host's resolvers, tried in order for names that are not local.
    pub upstreams: Vec<SocketAddr>,
    /// Search domains stripped from queried names before the local lookup.
    pub search: Vec<String>,
    /// How long each upstream has to answer.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            upstreams: Vec::new(),
            search: Vec::new(),
            timeout: DEFAULT_UPSTREAM_TIMEOUT,
        }
    }
}

impl DnsConfig {
    /// The upstreams and search domains of a resolv.conf text, with the
    /// default timeout (or resolv.conf's `options timeout:N`).
    pub fn from_resolv_conf(text: &str) -> DnsConfig {
        let mut config = DnsConfig {
            upstreams: upstreams_from_resolv_conf(text),
            ..DnsConfig::default()
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search") | Some("domain") => {
                    config.search = words.map(normalize).collect();
                }
                Some("options") => {
                    for opt in words {
                        if let Some(secs) = opt.strip_prefix("timeout:")
                            && let Ok(secs) = secs.parse::<u64>()
                        {
                            config.timeout = Duration::from_secs(secs.clamp(1, 30));
                        }
                    }
                }
                _ => {}
            }
        }
        config
    }
}

/// The `nameserver` lines of a resolv.conf text as socket addresses on port
/// 53, in order. IPv6 zone suffixes (`fe80::1%eth0`) are dropped with the
/// server, since a zone cannot be carried by `SocketAddr` text here.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// One name and the addresses it resolves to, for [`DnsServer::set_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// The name (any case, with or without a trailing dot).
    pub name: String,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
}

/// What a name resolves to on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A local name, with its addresses in this query's round-robin order
    /// (possibly none of the type asked for).
    Local(Vec<IpAddr>),
    /// Not a local name: ask upstream.
    NotLocal,
}

/// One container's registration on a network.
#[derive(Debug, Clone)]
struct Registration {
    names: Vec<String>,
    addrs: Vec<IpAddr>,
}

#[derive(Debug)]
struct NameEntry {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

/// One network's names, derived from its registrations on each change.
#[derive(Debug, Default)]
struct NetworkNames {
    registrations: BTreeMap<String, Registration>,
    names: HashMap<String, NameEntry>,
    reverse: HashMap<IpAddr, String>,
}

impl NetworkNames {
    fn rebuild(&mut self) {
        let mut names: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let mut reverse = HashMap::new();
        // Registrations are ordered by key, so the first answer of a shared
        // name is stable before rotation.
        for reg in self.registrations.values() {
            for name in &reg.names {
                let addrs = names.entry(name.clone()).or_default();
                for addr in &reg.addrs {
                    if !addrs.contains(addr) {
                        addrs.push(*addr);
                    }
                }
            }
            if let Some(first) = reg.names.first() {
                for addr in &reg.addrs {
                    reverse.entry(*addr).or_insert_with(|| first.clone());
                }
            }
        }
        self.names = names
            .into_iter()
            .map(|(name, addrs)| {
                let next = self
                    .names
                    .get(&name)
                    .map_or(0, |e| e.next.load(Ordering::Relaxed));
                (
                    name,
                    NameEntry {
                        addrs,
                        next: AtomicUsize::new(next),
                    },
                )
            })
            .collect();
        self.reverse = reverse;
    }
}

/// The live table: per network, names to addresses. Cheap to update; reads
/// take a shared lock.
#[derive(Debug, Default)]
pub struct DnsTable {
    networks: RwLock<HashMap<String, NetworkNames>>,
    search: RwLock<Vec<String>>,
}

/// Lower case, without the trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsTable {
    /// An empty table stripping these search domains from queried names.
    pub fn new(search: &[String]) -> DnsTable {
        DnsTable {
            networks: RwLock::default(),
            search: RwLock::new(search.iter().map(|s| normalize(s)).collect()),
        }
    }

    /// Replaces the search domains.
    pub fn set_search(&self, search: &[String]) {
        *self.search.write().unwrap_or_else(PoisonError::into_inner) =
            search.iter().map(|s| normalize(s)).collect();
    }

    fn update(&self, network: &str, change: impl FnOnce(&mut NetworkNames)) {
        let mut networks = self
            .networks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let net = networks.entry(normalize(network)).or_default();
        change(net);
        net.rebuild();
        if net.registrations.is_empty() {
            networks.remove(&normalize(network));
        }
    }

    /// Registers (or replaces) what `key` (a container id) answers on
    /// `network`: each of `names` resolves to `addrs`, along with the
    /// addresses of other containers registered under the same name.
    pub fn register(&self, network: &str, key: &str, names: &[String], addrs: &[IpAddr]) {
        let mut clean: Vec<String> = Vec::new();
        for name in names.iter().map(|n| normalize(n)) {
            if !name.is_empty() && !clean.contains(&name) {
                clean.push(name);
            }
        }
        let reg = Registration {
            names: clean,
            addrs: addrs.to_vec(),
        };
        self.update(network, |net| {
            net.registrations.insert(key.to_string(), reg);
        });
    }

    /// Removes what `key` registered on `network`; true if it had.
    pub fn unregister(&self, network: &str, key: &str) -> bool {
        let mut had = false;
        self.update(network, |net| {
            had = net.registrations.remove(key).is_some();
        });
        had
    }

    /// Replaces every name of `network` with `records`.
    pub fn set_records(&self, network: &str, records: &[DnsRecord]) {
        self.update(network, |net| {
            net.registrations.clear();
            for (i, r) in records.iter().enumerate() {
                net.registrations.insert(
                    format!("record-{i:08}"),
                    Registration {
                        names: vec![normalize(&r.name)],
                        addrs: r.addrs.clone(),
                    },
                );
            }
        });
    }

    /// Forgets a network's names.
    pub fn remove_network(&self, network: &str) {
        self.networks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&normalize(network));
    }

    /// The addresses `name` resolves to on `network`, rotated by one for
    /// each call (round robin), or [`Lookup::NotLocal`].
    pub fn lookup(&self, network: &str, name: &str) -> Lookup {
        let network = normalize(network);
        let name = normalize(name);
        let networks = self.networks.read().unwrap_or_else(PoisonError::into_inner);
        let Some(net) = networks.get(&network) else {
            return Lookup::NotLocal;
        };
        let search = self.search.read().unwrap_or_else(PoisonError::into_inner);
        let stripped = std::iter::once(network.as_str())
            .chain(search.iter().map(String::as_str))
            .filter_map(|domain| name.strip_suffix(domain)?.strip_suffix('.'));
        let Some(entry) = std::iter::once(name.as_str())
            .chain(stripped)
            .find_map(|candidate| net.names.get(candidate))
        else {
            return Lookup::NotLocal;
        };
        let len = entry.addrs.len();
        if len == 0 {
            return Lookup::Local(Vec::new());
        }
        let start = entry.next.fetch_add(1, Ordering::Relaxed) % len;
        let mut addrs = Vec::with_capacity(len);
        addrs.extend_from_slice(&entry.addrs[start..]);
        addrs.extend_from_slice(&entry.addrs[..start]);
        Lookup::Local(addrs)
    }

    /// [`DnsTable::lookup`] for a query from `client` that came to
    /// `network`'s listener: a client on several networks asks only the
    /// server of one (its first), and gets the names of every network it is
    /// on, as with Docker's embedded DNS. `network`'s own names come first.
    pub fn lookup_for(&self, network: &str, client: IpAddr, name: &str) -> Lookup {
        let found = self.lookup(network, name);
        if found != Lookup::NotLocal {
            return found;
        }
        let others: Vec<String> = {
            let networks = self.networks.read().unwrap_or_else(PoisonError::into_inner);
            let client = client.to_canonical();
            let Some(key) = networks.get(&normalize(network)).and_then(|net| {
                net.registrations
                    .iter()
                    .find(|(_, r)| r.addrs.contains(&client))
                    .map(|(key, _)| key.clone())
            }) else {
                return Lookup::NotLocal;
            };
            networks
                .iter()
                .filter(|(n, net)| {
                    **n != normalize(network) && net.registrations.contains_key(&key)
                })
                .map(|(n, _)| n.clone())
                .collect()
        };
        others
            .iter()
            .map(|n| self.lookup(n, name))
            .find(|l| *l != Lookup::NotLocal)
            .unwrap_or(Lookup::NotLocal)
    }

    /// The name a registered address answers to for PTR queries on
    /// `network`: `NAME.NETWORK`, as Docker answers.
    pub fn reverse(&self, network: &str, addr: IpAddr) -> Option<String> {
        let network = normalize(network);
        let networks = self.networks.read().unwrap_or_else(PoisonError::into_inner);
        let name = networks.get(&network)?.reverse.get(&addr)?;
        Some(format!("{name}.{network}"))
    }
}

/// What the request handlers share.
#[derive(Debug)]
struct Shared {
    table: DnsTable,
    upstreams: RwLock<Vec<SocketAddr>>,
    /// Containers' own upstreams (`--dns`), by their address.
    client_upstreams: RwLock<HashMap<IpAddr, Vec<SocketAddr>>>,
    timeout: Duration,
    /// Our own listening addresses: never forwarded to (no loops).
    listening: RwLock<HashSet<SocketAddr>>,
}

/// The running server: listeners come and go, records change, nothing
/// restarts.
pub struct DnsServer {
    shared: Arc<Shared>,
    rt: Handle,
    listeners: Mutex<HashMap<SocketAddr, Server<NetworkHandler>>>,
}

impl fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect::<Vec<_>>();
        f.debug_struct("DnsServer")
            .field("shared", &self.shared)
            .field("listeners", &listeners)
            .finish()
    }
}

impl DnsServer {
    /// A server with no listener yet, whose tasks run on `rt`.
    pub fn start(rt: Handle, config: DnsConfig) -> DnsServer {
        DnsServer {
            shared: Arc::new(Shared {
                table: DnsTable::new(&config.search),
                upstreams: RwLock::new(config.upstreams),
                client_upstreams: RwLock::default(),
                timeout: config.timeout,
                listening: RwLock::default(),
            }),
            rt,
            listeners: Mutex::default(),
        }
    }

    /// The live table the server answers from.
    pub fn table(&self) -> &DnsTable {
        &self.shared.table
    }

    /// Replaces the upstream servers (the host's resolv.conf changed).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self
            .shared
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner) = upstreams;
    }

    /// Makes queries from `client` (a container's address) that are not
    /// local go to `upstreams` instead of the host's resolvers: the
    /// container's `--dns` servers, as Docker's embedded server uses them.
    /// An empty list goes back to the host's.
    pub fn set_client_upstreams(&self, client: IpAddr, upstreams: Vec<SocketAddr>) {
        let mut map = self
            .shared
            .client_upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if upstreams.is_empty() {
            map.remove(&client);
        } else {
            map.insert(client, upstreams);
        }
    }

    /// Starts answering for `network` on `addr`, UDP and TCP (port 0 picks
    /// a free port, the same for both), only to clients in `clients` (all
    /// when empty). Returns the address listened on.
    pub fn add_listener(
        &self,
        addr: SocketAddr,
        network: &str,
        clients: &[IpNet],
    ) -> Result<SocketAddr, DnsError> {
        let udp =
            std::net::UdpSocket::bind(addr).map_err(|source| DnsError::BindUdp { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| DnsError::BindUdp { addr, source })?;
        let tcp = std::net::TcpListener::bind(bound).map_err(|source| DnsError::BindTcp {
            addr: bound,
            source,
        })?;
        self.add_listener_sockets(udp, tcp, network, clients)
    }

    /// Like [`DnsServer::add_listener`] with sockets the caller bound (for
    /// example inside another network namespace). Both must be bound to the
    /// same address.
    pub fn add_listener_sockets(
        &self,
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        network: &str,
        clients: &[IpNet],
    ) -> Result<SocketAddr, DnsError> {
        let addr = udp.local_addr().map_err(|source| DnsError::BindUdp {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            source,
        })?;
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listeners.contains_key(&addr) {
            return Err(DnsError::ListenerExists { addr });
        }
        let register = |source| DnsError::Register { addr, source };
        udp.set_nonblocking(true).map_err(register)?;
        tcp.set_nonblocking(true).map_err(register)?;
        // tokio's from_std and hickory's spawns need the runtime's context.
        let _guard = self.rt.enter();
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(register)?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(register)?;
        let handler = NetworkHandler {
            shared: self.shared.clone(),
            network: network.to_string(),
        };
        let mut server = Server::with_access(handler, [], clients.iter().copied());
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 32);
        listeners.insert(addr, server);
        self.shared
            .listening
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(addr);
        tracing::info!(%addr, network, "dns listener started");
        Ok(addr)
    }

    /// Stops the listener on `addr` and waits (a few seconds at most) until
    /// its sockets are closed; false if there was none.
    pub async fn remove_listener(&self, addr: SocketAddr) -> bool {
        let Some(server) = self.take_listener(addr) else {
            return false;
        };
        shut_down(addr, server).await;
        true
    }

    /// Stops the listener on `addr` at once (a new listener may be added
    /// for the address when this returns) and lets its sockets close in the
    /// background: [`DnsServer::remove_listener`] for callers that cannot
    /// wait (synchronous code). False if there was none.
    pub fn stop_listener(&self, addr: SocketAddr) -> bool {
        let Some(server) = self.take_listener(addr) else {
            return false;
        };
        self.rt.spawn(shut_down(addr, server));
        true
    }

    /// Forgets the listener on `addr`; its server, to be shut down.
    fn take_listener(&self, addr: SocketAddr) -> Option<Server<NetworkHandler>> {
        self.shared
            .listening
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr)
    }

    /// The addresses listened on.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let mut addrs: Vec<SocketAddr> = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        addrs.sort();
        addrs
    }

    /// See [`DnsTable::register`].
    pub fn register(&self, network: &str, container: &str, names: &[String], addrs: &[IpAddr]) {
        self.shared.table.register(network, container, names, addrs);
    }

    /// See [`DnsTable::unregister`].
    pub fn unregister(&self, network: &str, container: &str) -> bool {
        self.shared.table.unregister(network, container)
    }

    /// See [`DnsTable::set_records`].
    pub fn set_records(&self, network: &str, records: &[DnsRecord]) {
        self.shared.table.set_records(network, records);
    }
}

/// Shuts a listener's server down, waiting [`SHUTDOWN_WAIT`] at most.
async fn shut_down(addr: SocketAddr, mut server: Server<NetworkHandler>) {
    if tokio::time::timeout(SHUTDOWN_WAIT, server.shutdown_gracefully())
        .await
        .is_err()
    {
        tracing::warn!(%addr, "dns listener did not stop in time; its tasks are aborted");
    }
    tracing::info!(%addr, "dns listener stopped");
}

/// Answers for one network: the one its listener was opened for.
#[derive(Debug)]
struct NetworkHandler {
    shared: Arc<Shared>,
    network: String,
}

/// What a query gets.
enum Answer {
    Records(Vec<Record>),
    Forwarded(Message),
    Failure(ResponseCode),
}

impl NetworkHandler {
    /// Decides the answer to a request.
    async fn answer(&self, request: &Request) -> Answer {
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return Answer::Failure(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Answer::Failure(ResponseCode::FormErr);
        };
        if query.query_class() == DNSClass::IN
            && let Some(records) = self.local(
                request.src().ip(),
                query.original().name(),
                query.query_type(),
            )
        {
            return Answer::Records(records);
        }
        match self.forward(request.src().ip(), request.as_slice()).await {
            Some(message) => Answer::Forwarded(message),
            None => Answer::Failure(ResponseCode::ServFail),
        }
    }

    /// The local answer, if the name is local.
    fn local(&self, client: IpAddr, name: &Name, qtype: RecordType) -> Option<Vec<Record>> {
        let table = &self.shared.table;
        if qtype == RecordType::PTR {
            let net = name.parse_arpa_name().ok()?;
            if net.prefix_len() != net.max_prefix_len() {
                return None;
            }
            let target = table.reverse(&self.network, net.addr())?;
            let target = Name::from_ascii(format!("{target}.")).ok()?;
            return Some(vec![Record::from_rdata(
                name.clone(),
                LOCAL_TTL,
                RData::PTR(PTR(target)),
            )]);
        }
        let Lookup::Local(addrs) = table.lookup_for(&self.network, client, &name.to_ascii()) else {
            return None;
        };
        let record = |data| Record::from_rdata(name.clone(), LOCAL_TTL, data);
        Some(
            addrs
                .into_iter()
                .filter_map(|addr| match (addr, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                        Some(record(RData::A(A(v4))))
                    }
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                        Some(record(RData::AAAA(AAAA(v6))))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// Asks each of the client's upstreams in turn; the first answer.
    async fn forward(&self, client: IpAddr, raw: &[u8]) -> Option<Message> {
        let own = self
            .shared
            .client_upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client.to_canonical())
            .cloned();
        let upstreams = own.unwrap_or_else(|| {
            self.shared
                .upstreams
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        });
        for upstream in upstreams {
            let is_ours = self
                .shared
                .listening
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&upstream);
            if is_ours {
                continue;
            }
            match ask_upstream(upstream, raw, self.shared.timeout).await {
                Ok(message) => return Some(message),
                Err(error) => {
                    tracing::debug!(%upstream, %error, "upstream dns server failed");
                }
            }
        }
        None
    }
}

/// A fresh random query id (hickory draws one for each new query message).
fn random_id() -> u16 {
    Message::query().metadata.id
}

/// One question to one upstream: over UDP, again over TCP if the answer was
/// truncated, each within `timeout`.
async fn ask_upstream(upstream: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Message> {
    if raw.len() < 12 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "short query"));
    }
    let id = random_id();
    let mut query = raw.to_vec();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let answer = within(timeout, ask_udp(upstream, &query, id)).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    within(timeout, ask_tcp(upstream, &query, id)).await
}

async fn within<T>(timeout: Duration, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?
}

fn decode(bytes: &[u8], id: u16) -> io::Result<Option<Message>> {
    let message = Message::from_vec(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(
        (message.metadata.id == id && message.metadata.message_type == MessageType::Response)
            .then_some(message),
    )
}

async fn ask_udp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Message> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    // Connected: only datagrams from the upstream are received, and a closed
    // port is reported at once (ECONNREFUSED) instead of waiting.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray or garbled datagram is skipped, not taken as the answer.
        if let Ok(Some(message)) = decode(&buf[..n], id) {
            return Ok(message);
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Message> {
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        if let Some(message) = decode(&buf, id)? {
            return Ok(message);
        }
    }
}

/// The response info of an answer that could not be sent.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .into()
}

#[async_trait::async_trait]
impl RequestHandler for NetworkHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let answer = self.answer(request).await;
        // Our EDNS record mirrors the client's payload size, so a UDP answer
        // is truncated (TC set) only past what the client accepts.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().max(512));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let sent = match &answer {
            Answer::Records(records) => {
                metadata.authoritative = true;
                let response = builder.build(metadata, records, [], [], []);
                response_handle.send_response(response).await
            }
            Answer::Forwarded(message) => {
                metadata.response_code = message.metadata.response_code;
                metadata.authoritative = message.metadata.authoritative;
                metadata.authentic_data = message.metadata.authentic_data;
                let response = builder.build(
                    metadata,
                    &message.answers,
                    &message.authorities,
                    [],
                    &message.additionals,
                );
                response_handle.send_response(response).await
            }
            Answer::Failure(code) => {
                let response = builder.error_msg(&request.metadata, *code);
                response_handle.send_response(response).await
            }
        };
        match sent {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(src = %request.src(), %error, "dns answer not sent");
                failed(request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn local(table: &DnsTable, network: &str, name: &str) -> Vec<IpAddr> {
        match table.lookup(network, name) {
            Lookup::Local(addrs) => addrs,
            Lookup::NotLocal => panic!("{name} is not local on {network}"),
        }
    }

    #[test]
    fn names_match_in_any_case_with_or_without_the_trailing_dot() {
        let table = DnsTable::new(&[]);
        table.register("net1", "c1", &names(&["Web"]), &[ip("10.1.0.2")]);
        for q in ["web", "WEB", "web.", "wEb."] {
            assert_eq!(local(&table, "net1", q), [ip("10.1.0.2")], "{q}");
        }
        assert_eq!(
            table.lookup("NET1", "web"),
            Lookup::Local(vec![ip("10.1.0.2")])
        );
        assert_eq!(table.lookup("net1", "db"), Lookup::NotLocal);
        assert_eq!(table.lookup("net1", "web.other"), Lookup::NotLocal);
    }

    #[test]
    fn search_domains_and_the_network_name_are_stripped() {
        let table = DnsTable::new(&names(&["Example.org."]));
        table.register("mynet", "c1", &names(&["web"]), &[ip("10.1.0.2")]);
        assert_eq!(local(&table, "mynet", "web.example.org."), [ip("10.1.0.2")]);
        assert_eq!(local(&table, "mynet", "WEB.MYNET"), [ip("10.1.0.2")]);
        assert_eq!(table.lookup("mynet", "web.example.com"), Lookup::NotLocal);
        // A suffix must be a whole label.
        assert_eq!(table.lookup("mynet", "webexample.org"), Lookup::NotLocal);
        table.set_search(&names(&["corp.test"]));
        assert_eq!(table.lookup("mynet", "web.example.org"), Lookup::NotLocal);
        assert_eq!(local(&table, "mynet", "web.corp.test"), [ip("10.1.0.2")]);
    }

    #[test]
    fn a_shared_name_answers_every_address_rotated_per_query() {
        let table = DnsTable::new(&[]);
        table.register("n", "a", &names(&["svc", "a"]), &[ip("10.0.0.2")]);
        table.register("n", "b", &names(&["svc", "b"]), &[ip("10.0.0.3")]);
        table.register("n", "c", &names(&["svc", "c"]), &[ip("10.0.0.4")]);
        let firsts: Vec<IpAddr> = (0..6).map(|_| local(&table, "n", "svc")[0]).collect();
        assert_eq!(
            firsts,
            [
                "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.2", "10.0.0.3", "10.0.0.4"
            ]
            .map(ip)
        );
        let mut all = local(&table, "n", "svc");
        all.sort();
        assert_eq!(all, ["10.0.0.2", "10.0.0.3", "10.0.0.4"].map(ip));
        assert_eq!(local(&table, "n", "b"), [ip("10.0.0.3")]);
        assert!(table.unregister("n", "b"));
        assert!(!table.unregister("n", "b"));
        let mut left = local(&table, "n", "svc");
        left.sort();
        assert_eq!(left, ["10.0.0.2", "10.0.0.4"].map(ip));
        assert_eq!(table.lookup("n", "b"), Lookup::NotLocal);
    }

    #[test]
    fn names_are_scoped_to_their_network() {
        let table = DnsTable::new(&[]);
        table.register("front", "c1", &names(&["web"]), &[ip("10.1.0.2")]);
        table.register("back", "c2", &names(&["db"]), &[ip("10.2.0.2")]);
        // The same container on both networks, with an alias on one.
        table.register("back", "c1", &names(&["web", "www"]), &[ip("10.2.0.3")]);
        assert_eq!(local(&table, "front", "web"), [ip("10.1.0.2")]);
        assert_eq!(local(&table, "back", "web"), [ip("10.2.0.3")]);
        assert_eq!(table.lookup("front", "db"), Lookup::NotLocal);
        // c1 is on both networks: asking front's server, it gets back's
        // names too; a container on front only does not.
        assert_eq!(
            table.lookup_for("front", ip("10.1.0.2"), "db"),
            Lookup::Local(vec![ip("10.2.0.2")])
        );
        table.register("front", "c3", &names(&["other"]), &[ip("10.1.0.9")]);
        assert_eq!(
            table.lookup_for("front", ip("10.1.0.9"), "db"),
            Lookup::NotLocal
        );
        assert_eq!(table.lookup("front", "www"), Lookup::NotLocal);
        assert_eq!(table.lookup("other", "web"), Lookup::NotLocal);
        table.remove_network("back");
        assert_eq!(table.lookup("back", "db"), Lookup::NotLocal);
        assert_eq!(local(&table, "front", "web"), [ip("10.1.0.2")]);
    }

    #[test]
    fn reverse_names_are_name_dot_network() {
        let table = DnsTable::new(&[]);
        table.register("mynet", "c1", &names(&["Web", "alias"]), &[ip("10.1.0.2")]);
        assert_eq!(
            table.reverse("mynet", ip("10.1.0.2")).as_deref(),
            Some("web.mynet")
        );
        assert_eq!(table.reverse("mynet", ip("10.1.0.3")), None);
        assert_eq!(table.reverse("other", ip("10.1.0.2")), None);
    }

    #[test]
    fn set_records_replaces_a_networks_names() {
        let table = DnsTable::new(&[]);
        table.register("n", "c1", &names(&["old"]), &[ip("10.0.0.9")]);
        table.set_records(
            "n",
            &[
                DnsRecord {
                    name: "svc".into(),
                    addrs: vec![ip("10.0.0.2"), ip("fd00::2")],
                },
                DnsRecord {
                    name: "svc".into(),
                    addrs: vec![ip("10.0.0.3")],
                },
            ],
        );
        assert_eq!(table.lookup("n", "old"), Lookup::NotLocal);
        let mut all = local(&table, "n", "svc");
        all.sort();
        assert_eq!(all, ["10.0.0.2", "10.0.0.3", "fd00::2"].map(ip));
        table.set_records("n", &[]);
        assert_eq!(table.lookup("n", "svc"), Lookup::NotLocal);
    }

    #[test]
    fn resolv_conf_gives_upstreams_search_and_timeout() {
        let text = "# comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver bogus\n\
                    search Example.org b.test\noptions ndots:1 timeout:2\n";
        let config = DnsConfig::from_resolv_conf(text);
        assert_eq!(
            config.upstreams,
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(config.search, ["example.org", "b.test"]);
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(
            DnsConfig::from_resolv_conf("").timeout,
            DEFAULT_UPSTREAM_TIMEOUT
        );
    }
}
