//! The daemon's name resolution: one embedded DNS server
//! ([`crate::net::dns::DnsServer`]) on the daemon's tokio runtime, kept in
//! step with the networks and the containers on them.
//!
//! # Where containers find it
//! Each user-defined network's gateway address, port 53, UDP and TCP, in the
//! host's network namespace; the container's resolv.conf says `nameserver
//! <gateway>`. Docker instead listens on 127.0.0.11 inside every container
//! and NATs port 53 to a socket it opened in that namespace: that takes a
//! socket and nftables rules per container. The gateway address already
//! exists on the host (on the network's bridge), one process serves every
//! network, a container reaches it on the link without NAT, and forwarding
//! runs in the host's namespace, so a loopback upstream (systemd-resolved's
//! 127.0.0.53) works. The sockets are bound with `IP_FREEBIND`: after a
//! reboot the daemon listens before the bridges are made again (at the
//! first start of a container on them), and a bridge deleted and made again
//! keeps its listener.
//!
//! Internal networks get a listener too: their bridge has the gateway
//! address, their containers only lack a route beyond it. (Docker 26+ does
//! not forward external names for containers only on internal networks;
//! here they are forwarded, as the daemon's own lookups are not the
//! container's traffic.)
//!
//! The default bridge has none, as with Docker: its containers get the
//! host's resolvers (loopback ones left out) or `--dns`, and reach other
//! containers through legacy links (`/etc/hosts`).
//!
//! # What is registered
//! A container on a user-defined network answers to [`dns_names`] (its name,
//! its short id, its aliases on that network) from the moment its interface
//! is up (`Attached`, on the attach path itself) until it stops (its `die`
//! event) or leaves the network (`Detached`); it is registered again when it
//! starts (`start` event). A legacy `--link NAME:ALIAS` on a user-defined
//! network registers `ALIAS` for the linked container's address (Docker
//! scopes it to the linking container; here the whole network sees it). A
//! container's `--dns` servers become its own upstreams on the server
//! (Docker's behaviour with 127.0.0.11).
//!
//! At daemon start the table is rebuilt from the records: a listener per
//! network, the running containers' names. Containers keep running through
//! a daemon restart (live restore) and resolve again once it is back; while
//! no daemon runs (killed, before it is started again) their queries to the
//! embedded server get no answer.
//!
//! Upstreams: the daemon's `--dns` servers, else the host's resolv.conf
//! `nameserver`s, re-read when the file changes (checked every few seconds).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use crate::net::dns::{DnsConfig, DnsServer};
use crate::net::network::{Endpoint, NetworkRecord};
use crate::reconcile::containers::{Containers, NetworkChange, request_of};

/// The port containers' resolvers ask.
pub const DNS_PORT: u16 = 53;

/// How often the host's resolv.conf is checked for changes.
const RESOLV_CONF_CHECK: Duration = Duration::from_secs(5);

/// The daemon's name settings (`--dns`, `--dns-search`, `--dns-opt`), and
/// where the host's resolvers are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsOptions {
    /// `--dns`: upstreams of the embedded server and the name servers of
    /// containers without it (default bridge), instead of the host's.
    pub servers: Vec<IpAddr>,
    /// `--dns-search`: containers' search domains instead of the host's.
    pub search: Vec<String>,
    /// `--dns-opt`: containers' resolver options instead of the host's.
    pub options: Vec<String>,
    /// The host's resolv.conf (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
}

impl DnsOptions {
    /// The defaults: the host's `/etc/resolv.conf`, nothing overridden.
    pub fn host() -> DnsOptions {
        DnsOptions {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            ..DnsOptions::default()
        }
    }

    /// The container defaults these options give
    /// ([`Containers::set_dns_defaults`]): a container's own settings win
    /// field by field.
    pub fn container_defaults(&self) -> crate::reconcile::container::DnsSettings {
        crate::reconcile::container::DnsSettings {
            servers: self.servers.iter().map(IpAddr::to_string).collect(),
            search: self.search.clone(),
            options: self.options.clone(),
        }
    }
}

/// The names a container answers to on a network: Docker's `DNSNames`, its
/// name (without the leading `/`), its short id (12 hex digits) and its
/// aliases there (`--network-alias`, `network connect --alias`).
///
/// This is also the entry point of stack services: a replica is created
/// with its service's name among its aliases, so the name answers every
/// running replica's address, rotated per query (round robin), with nothing
/// else to register.
pub fn dns_names(name: &str, id: &str, endpoint: &Endpoint) -> Vec<String> {
    let mut names = vec![name.trim_start_matches('/').to_string()];
    names.push(id.get(..12).unwrap_or(id).to_string());
    names.extend(endpoint.aliases.iter().cloned());
    names
}

/// The addresses an endpoint answers with: its IPv4 address (A queries)
/// and, on `--ipv6` networks, its IPv6 address (AAAA queries).
pub fn endpoint_addrs(endpoint: &Endpoint) -> Vec<IpAddr> {
    let mut addrs = vec![IpAddr::V4(endpoint.ip)];
    addrs.extend(endpoint.ip6.map(IpAddr::V6));
    addrs
}

/// What a container registered on a network beyond its own names.
#[derive(Debug, Default)]
struct Extras {
    /// Table keys of its link aliases.
    link_keys: Vec<String>,
    /// Its address, when it has upstreams of its own there.
    client: Option<IpAddr>,
}

/// When a file was last seen changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The daemon's DNS layer: the server, its listeners (one per user-defined
/// network) and its registrations.
#[derive(Debug)]
pub struct DaemonDns {
    server: DnsServer,
    options: DnsOptions,
    containers: OnceLock<Weak<Containers>>,
    /// Listening address by network id.
    listeners: Mutex<HashMap<String, SocketAddr>>,
    /// By (network name, container id).
    extras: Mutex<HashMap<(String, String), Extras>>,
    resolv_seen: Mutex<Option<Stamp>>,
}

impl DaemonDns {
    /// Starts the server (no listener yet) on the runtime `rt`, with the
    /// upstreams `options` give.
    pub fn start(rt: tokio::runtime::Handle, options: DnsOptions) -> DaemonDns {
        let seen = stamp(&options.resolv_conf);
        let config = Self::config(&options);
        tracing::debug!(upstreams = ?config.upstreams, "dns upstreams");
        DaemonDns {
            server: DnsServer::start(rt, config),
            options,
            containers: OnceLock::new(),
            listeners: Mutex::default(),
            extras: Mutex::default(),
            resolv_seen: Mutex::new(seen),
        }
    }

    /// The server's settings: the host's resolv.conf under the daemon's
    /// `--dns` and `--dns-search`.
    fn config(options: &DnsOptions) -> DnsConfig {
        let text = std::fs::read_to_string(&options.resolv_conf).unwrap_or_default();
        let mut config = DnsConfig::from_resolv_conf(&text);
        if !options.servers.is_empty() {
            config.upstreams = options
                .servers
                .iter()
                .map(|ip| SocketAddr::new(*ip, DNS_PORT))
                .collect();
        }
        if !options.search.is_empty() {
            config.search = options.search.clone();
        }
        config
    }

    /// The server itself.
    pub fn server(&self) -> &DnsServer {
        &self.server
    }

    /// Lets registrations read containers' records (their `--dns`, their
    /// links, their current name). Without it only endpoints' names are
    /// registered.
    pub fn set_containers(&self, containers: &Arc<Containers>) {
        let _ = self.containers.set(Arc::downgrade(containers));
    }

    fn containers(&self) -> Option<Arc<Containers>> {
        self.containers.get().and_then(Weak::upgrade)
    }

    /// Follows one network change (the hook in
    /// [`super::NetworkHooks::network_changed`]).
    pub fn network_changed(&self, change: &NetworkChange) {
        match change {
            NetworkChange::Created { network } => self.listen(network),
            NetworkChange::Removed { network } => self.unlisten(network),
            NetworkChange::Attached {
                network,
                container,
                endpoint,
            } => self.register(network, container, endpoint),
            NetworkChange::Detached {
                network,
                container,
                endpoint,
            } => self.unregister(network, container, endpoint),
        }
    }

    /// Starts answering on `network`'s gateway (if it has embedded DNS and
    /// no listener yet). A failure is logged: the network works without
    /// names.
    pub fn listen(&self, network: &NetworkRecord) {
        let Some(ip) = network.dns_address() else {
            return;
        };
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listeners.contains_key(&network.id) {
            return;
        }
        let addr = SocketAddr::new(ip, DNS_PORT);
        let clients: Vec<ipnet::IpNet> = network.subnet.map(ipnet::IpNet::V4).into_iter().collect();
        let started = bind_freebind(addr)
            .map_err(|source| crate::net::dns::DnsError::BindUdp { addr, source })
            .and_then(|(udp, tcp)| {
                self.server
                    .add_listener_sockets(udp, tcp, &network.name, &clients)
            });
        match started {
            Ok(at) => {
                listeners.insert(network.id.clone(), at);
            }
            Err(e) => tracing::warn!(
                network = %network.name,
                error = %crate::error_chain(&e),
                "no embedded dns on this network"
            ),
        }
    }

    /// Stops answering on `network` and forgets its names.
    pub fn unlisten(&self, network: &NetworkRecord) {
        let addr = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&network.id);
        if let Some(addr) = addr {
            self.server.stop_listener(addr);
        }
        self.server.table().remove_network(&network.name);
        self.extras
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(net, _), _| *net != network.name);
    }

    /// Registers container `id`'s names on `network` (see the module's
    /// documentation); nothing on networks without embedded DNS.
    pub fn register(&self, network: &NetworkRecord, id: &str, endpoint: &Endpoint) {
        if network.dns_address().is_none() {
            return;
        }
        let containers = self.containers();
        let record = containers.as_ref().and_then(|c| c.runtime.record(id).ok());
        let name = record
            .as_ref()
            .map_or(endpoint.container_name.as_str(), |r| r.name.as_str());
        let names = dns_names(name, id, endpoint);
        tracing::debug!(network = %network.name, container = id, ?names, "dns names registered");
        self.server
            .register(&network.name, id, &names, &endpoint_addrs(endpoint));
        let (Some(containers), Some(record)) = (containers, record) else {
            return;
        };
        let request = request_of(&record);
        let mut extras = Extras::default();
        let own: Vec<SocketAddr> = request
            .dns
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, DNS_PORT))
            .collect();
        if !own.is_empty() {
            let client = IpAddr::V4(endpoint.ip);
            self.server.set_client_upstreams(client, own);
            extras.client = Some(client);
        }
        for link in &request.links {
            let Ok(target) = containers.runtime.resolve(&link.name) else {
                continue;
            };
            let Some(their) = network.endpoints.get(&target) else {
                continue;
            };
            let key = format!("{id}/link/{}", link.alias);
            self.server.register(
                &network.name,
                &key,
                std::slice::from_ref(&link.alias),
                &endpoint_addrs(their),
            );
            extras.link_keys.push(key);
        }
        let old = self
            .extras
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((network.name.clone(), id.to_string()), extras);
        // Links that are gone since the last registration.
        if let Some(old) = old {
            self.drop_extras(&network.name, old, |key| {
                !request
                    .links
                    .iter()
                    .any(|l| *key == format!("{id}/link/{}", l.alias))
            });
        }
    }

    fn drop_extras(&self, network: &str, extras: Extras, drop_key: impl Fn(&String) -> bool) {
        for key in extras.link_keys.iter().filter(|k| drop_key(k)) {
            self.server.unregister(network, key);
        }
        if let Some(client) = extras.client {
            let still = self
                .extras
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
                .any(|e| e.client == Some(client));
            if !still {
                self.server.set_client_upstreams(client, Vec::new());
            }
        }
    }

    /// Removes what container `id` registered on `network`.
    pub fn unregister(&self, network: &NetworkRecord, id: &str, _endpoint: &Endpoint) {
        tracing::debug!(network = %network.name, container = id, "dns names unregistered");
        self.server.unregister(&network.name, id);
        let extras = self
            .extras
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(network.name.clone(), id.to_string()));
        if let Some(extras) = extras {
            self.drop_extras(&network.name, extras, |_| true);
        }
    }

    /// A container started: its names answer on each of its networks.
    pub fn container_started(&self, id: &str) {
        for (network, endpoint) in self.endpoints_of(id) {
            self.register(&network, id, &endpoint);
        }
    }

    /// A container was renamed: a running one answers to its new name
    /// (and no longer to the old one), as Docker's embedded DNS.
    pub fn container_renamed(&self, id: &str) {
        let running = self.containers().is_some_and(|c| {
            c.runtime
                .state(id)
                .is_ok_and(|s| s.status == crate::runtime::state::Status::Running)
        });
        if running {
            self.container_started(id);
        }
    }

    /// A container stopped: its names no longer answer.
    pub fn container_stopped(&self, id: &str) {
        for (network, endpoint) in self.endpoints_of(id) {
            self.unregister(&network, id, &endpoint);
        }
    }

    fn endpoints_of(&self, id: &str) -> Vec<(NetworkRecord, Endpoint)> {
        self.containers()
            .and_then(|c| c.networks().ok().and_then(|n| n.endpoints_of(id).ok()))
            .unwrap_or_default()
    }

    /// Rebuilds everything from the records, at daemon start: a listener
    /// per user-defined network, the running containers' names.
    pub fn restore(&self) {
        let Some(containers) = self.containers() else {
            return;
        };
        if let Ok(networks) = containers.networks().and_then(|n| Ok(n.list()?)) {
            for network in &networks {
                self.listen(network);
            }
        }
        if let Ok(list) = containers.runtime.list() {
            for (record, state) in list {
                if state.status == crate::runtime::Status::Running {
                    self.container_started(&record.id);
                }
            }
        }
    }

    /// Reads the host's resolv.conf again if it changed (unless `--dns`
    /// overrides it): new upstreams and search domains.
    pub fn refresh_upstreams(&self) {
        if !self.options.servers.is_empty() && !self.options.search.is_empty() {
            return;
        }
        let now = stamp(&self.options.resolv_conf);
        {
            let mut seen = self
                .resolv_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        let config = Self::config(&self.options);
        tracing::info!(upstreams = ?config.upstreams, "the host's resolv.conf changed");
        self.server.set_upstreams(config.upstreams);
        self.server.table().set_search(&config.search);
    }

    /// Follows container events (registration on `start`, removal on
    /// `die`) and the host's resolv.conf until the event bus ends.
    /// The subscription is made at the call, so no event after it is missed.
    pub fn follow(
        self: Arc<Self>,
        events: &super::events::Events,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let subscription = events.subscribe(super::events::EventFilter::default(), None, None);
        async move {
            let Ok(subscription) = subscription else {
                return;
            };
            self.follow_events(subscription).await;
        }
    }

    async fn follow_events(self: Arc<Self>, mut subscription: super::events::Subscription) {
        let mut tick = tokio::time::interval(RESOLV_CONF_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = subscription.next() => {
                    let Some(event) = event else { return };
                    if event.kind != super::events::EventType::Container {
                        continue;
                    }
                    let dns = self.clone();
                    let id = event.actor.id.clone();
                    // Records are files: read them off the reactor.
                    let work = match event.action.as_str() {
                        "start" => tokio::task::spawn_blocking(move || dns.container_started(&id)),
                        "die" => tokio::task::spawn_blocking(move || dns.container_stopped(&id)),
                        "rename" => tokio::task::spawn_blocking(move || dns.container_renamed(&id)),
                        _ => continue,
                    };
                    let _ = work.await;
                }
                _ = tick.tick() => {
                    let dns = self.clone();
                    let _ = tokio::task::spawn_blocking(move || dns.refresh_upstreams()).await;
                }
            }
        }
    }
}

/// A UDP socket and a TCP listener on `addr`, bound with `IP_FREEBIND` (the
/// address need not exist yet) and `SO_REUSEADDR` (a listener being closed
/// does not block a new one).
fn bind_freebind(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let open = |kind: SocketType| -> io::Result<std::os::fd::OwnedFd> {
        let fd = rustix::net::socket_with(family, kind, SocketFlags::CLOEXEC, None)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        match addr {
            SocketAddr::V4(_) => sockopt::set_ip_freebind(&fd, true)?,
            SocketAddr::V6(_) => sockopt::set_ipv6_freebind(&fd, true)?,
        }
        rustix::net::bind(&fd, &addr)?;
        Ok(fd)
    };
    let udp = open(SocketType::DGRAM)?;
    let tcp = open(SocketType::STREAM)?;
    rustix::net::listen(&tcp, 128)?;
    Ok((udp.into(), tcp.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(aliases: &[&str]) -> Endpoint {
        Endpoint {
            container_name: "web".into(),
            endpoint_id: "e".repeat(64),
            ip: "10.1.0.2".parse().unwrap(),
            mac: "02:42:0a:01:00:02".into(),
            static_ip: false,
            ip6: None,
            static_ip6: false,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            host_veth: "veth1234567".into(),
            iface: "eth0".into(),
        }
    }

    #[test]
    fn a_container_answers_to_its_name_short_id_and_aliases() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(
            dns_names("/web", &id, &endpoint(&["www", "svc"])),
            ["web", "0123456789ab", "www", "svc"]
        );
        assert_eq!(
            endpoint_addrs(&endpoint(&[])),
            ["10.1.0.2".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn daemon_dns_settings_override_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.53\nsearch corp.test\n").unwrap();
        let mut options = DnsOptions {
            resolv_conf: resolv.clone(),
            ..DnsOptions::default()
        };
        let host = DaemonDns::config(&options);
        assert_eq!(host.upstreams, ["127.0.0.53:53".parse().unwrap()]);
        assert_eq!(host.search, ["corp.test"]);
        options.servers = vec!["10.9.0.53".parse().unwrap()];
        options.search = vec!["example.org".into()];
        let own = DaemonDns::config(&options);
        assert_eq!(own.upstreams, ["10.9.0.53:53".parse().unwrap()]);
        assert_eq!(own.search, ["example.org"]);
    }
}
