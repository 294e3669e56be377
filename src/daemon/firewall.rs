//! The daemon's side of the firewall: outbound NAT and published ports as
//! a function of the daemon's state, kept applied in the kernel.
//!
//! [`ruleset`] is pure: every bridge network (each of its subnets, v4 and
//! v6, with its internal, masquerade and icc settings) and the forwards of
//! every running (or paused) container, to its current address. The
//! [`Publisher`] recomputes it and, when it differs from the one applied
//! last, replaces our nftables table in one transaction
//! ([`crate::net::firewall::Firewall::apply`]): after every network change
//! (a network created or removed, a container's interface up or gone),
//! after a container starts (before the start is reported, so its ports
//! answer when `run -d` returns) and when a container exits (the daemon's
//! `die` event).
//!
//! Host ports are reserved at create time ([`Publisher::allocate`]) and
//! kept in the container record until the container is removed: a stopped
//! container's forwards leave the ruleset but its ports stay its own, and a
//! port picked for host port 0 stays the same across restarts.
//!
//! The rules live in the kernel, not in the daemon: a daemon that stops
//! (SIGTERM) or is killed leaves them, so published ports keep answering
//! (live restore). At start the daemon compares the table with what it
//! applied last (`<root>/firewall.nft`, the listing taken after each apply)
//! and the ruleset it computes now, and re-applies when they differ,
//! logging drift (someone flushed or changed our table). With
//! `--iptables=false` (`--nat=false`) no rule is ever touched.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::net::Networks;
use crate::net::firewall::{
    BridgeNet, DEFAULT_TABLE, Firewall, FirewallError, Forward, PortOwner, PortRequest, Ruleset,
};
use crate::net::network::NetworkRecord;
use crate::reconcile::containers::NetworkChange;
use crate::reconcile::ports::forwards_of;
use crate::runtime::{ContainerRecord, ContainerState, Runtime, Status};

/// Docker's network option that turns inter-container traffic off.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";
/// Docker's network option that turns outbound masquerade off.
pub const MASQUERADE_OPTION: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// The daemon's firewall options (dockerd's flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallOptions {
    /// The nftables table ([`table_name`]).
    pub table: String,
    /// `--iptables` (`--nat`): false touches no firewall rule at all.
    pub enabled: bool,
    /// `--ip-masq`: masquerade traffic leaving bridge subnets.
    pub ip_masq: bool,
    /// `--icc`: containers on the default bridge may talk to each other.
    pub icc: bool,
    /// `--ip`: the host address of published ports that name none.
    pub default_ip: Option<IpAddr>,
    /// `--ip-forward`: turn on `net.ipv4.ip_forward` at start.
    pub ip_forward: bool,
}

impl FirewallOptions {
    /// Docker's defaults, for the table of `root`.
    pub fn for_root(root: &Path) -> FirewallOptions {
        FirewallOptions {
            table: table_name(root),
            enabled: true,
            ip_masq: true,
            icc: true,
            default_ip: None,
            ip_forward: true,
        }
    }
}

/// The nftables table of a state root: `stack` for the default root, else
/// `stack-` and 6 hex digits of a hash of the root's path, so daemons of
/// different roots (tests) never share a table (like
/// [`crate::net::default_bridge_name`]).
pub fn table_name(root: &Path) -> String {
    if root == Path::new("/var/lib/stack") {
        return DEFAULT_TABLE.into();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("{DEFAULT_TABLE}-{}", &hex::encode(hash)[..6])
}

/// Whether a boolean network option is off (`false`, `0`, …).
fn option_off(network: &NetworkRecord, key: &str) -> bool {
    network.options.get(key).is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    })
}

/// The ruleset of the daemon's state: `networks` (the store's records),
/// `containers` (every container with its state), the daemon's options.
pub fn ruleset(
    networks: &[NetworkRecord],
    containers: &[(ContainerRecord, ContainerState)],
    options: &FirewallOptions,
) -> Ruleset {
    let mut rules = Ruleset::default();
    // A container's address on a bridge, by (container id, bridge).
    let mut addresses: BTreeMap<(&str, &str), IpAddr> = BTreeMap::new();
    let mut bridges: Vec<&NetworkRecord> = networks
        .iter()
        // A host segment we attach to (a parent bridge, macvlan) is not
        // ours to masquerade or isolate.
        .filter(|n| n.is_bridge() && n.bridge.is_some() && !n.is_host_attached())
        .collect();
    bridges.sort_by(|a, b| a.bridge.cmp(&b.bridge));
    for n in bridges {
        let Some(bridge) = n.bridge.as_deref() else {
            continue;
        };
        let icc = !option_off(n, ICC_OPTION) && (n.name != "bridge" || options.icc);
        let masquerade = options.ip_masq && !option_off(n, MASQUERADE_OPTION);
        for subnet in n.subnets() {
            rules.networks.push(BridgeNet {
                bridge: bridge.to_string(),
                subnet,
                internal: n.internal,
                masquerade,
                icc,
            });
        }
        for (id, e) in &n.endpoints {
            addresses.insert((id.as_str(), bridge), IpAddr::V4(e.ip));
        }
    }
    for (record, state) in containers {
        if !matches!(state.status, Status::Running | Status::Paused) {
            continue;
        }
        for mut f in forwards_of(record) {
            // The address the container has now on the forward's bridge;
            // a forward whose network is gone has nowhere to go.
            let Some(ip) = addresses.get(&(record.id.as_str(), f.bridge.as_str())) else {
                continue;
            };
            f.container_ip = *ip;
            rules.ports.push(f);
        }
    }
    rules.ports.sort();
    rules.ports.dedup();
    rules
}

/// The publisher's port allocations in flight.
#[derive(Debug, Default)]
struct Published {
    /// Forwards allocated to containers whose record is not written yet
    /// (their create is in flight), by container id, with the name.
    pending: BTreeMap<String, (String, Vec<Forward>)>,
}

/// What the publisher applied.
#[derive(Debug, Default)]
struct Applied {
    /// The ruleset applied last by this daemon.
    rules: Option<Ruleset>,
    /// The last sync request the applied ruleset covers (see
    /// [`Publisher::sync`]).
    covered: u64,
}

/// Keeps the kernel's rules equal to [`ruleset`] of the daemon's state,
/// and hands out host ports.
#[derive(Debug)]
pub struct Publisher {
    firewall: Firewall,
    options: FirewallOptions,
    networks: Arc<Networks>,
    runtime: Runtime,
    /// The listing of our table after the last apply.
    listing_file: PathBuf,
    /// Serializes allocations.
    state: Mutex<Published>,
    /// Serializes applies (apart from allocations: a create does not wait
    /// for an `nft` run).
    applied: Mutex<Applied>,
    /// Sync requests so far: each caller of [`Publisher::sync`] takes the
    /// next number after its change is on disk.
    requested: AtomicU64,
    /// Tells the thread that keeps the listing that the rules changed
    /// (none when it could not start: listings are then kept in line).
    relist: Option<Mutex<std::sync::mpsc::Sender<()>>>,
}

impl Publisher {
    /// A publisher for the daemon of `root`.
    pub fn new(
        root: &Path,
        options: FirewallOptions,
        networks: Arc<Networks>,
        runtime: Runtime,
    ) -> Result<Publisher, FirewallError> {
        let firewall = Firewall::new(&options.table)?;
        let listing_file = root.join("firewall.nft");
        // The listing is taken off the path of the start that changed the
        // rules: a burst of changes is listed once, after the last of them
        // (each is signalled after its apply, and the thread lists after
        // taking every signal waiting). The thread ends with the publisher.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let relist = {
            let firewall = firewall.clone();
            let file = listing_file.clone();
            std::thread::Builder::new()
                .name("firewall-listing".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        while rx.try_recv().is_ok() {}
                        keep_listing(&firewall, &file);
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "cannot start the firewall listing thread"))
                .ok()
                .map(|_| Mutex::new(tx))
        };
        Ok(Publisher {
            firewall,
            options,
            networks,
            runtime,
            listing_file,
            state: Mutex::new(Published::default()),
            applied: Mutex::new(Applied::default()),
            requested: AtomicU64::new(0),
            relist,
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &FirewallOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        // Every change under the lock is a single assignment or insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        // Likewise.
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chooses host ports for container `(id, name)` at `ip` on `bridge`
    /// (see [`Firewall::allocate`]), refusing ports other containers hold
    /// (running or not: a container keeps its ports until it is removed).
    /// Requests without a host address get the daemon's `--ip`.
    pub fn allocate(
        &self,
        (id, name): (&str, &str),
        ip: IpAddr,
        bridge: &str,
        requests: &[PortRequest],
    ) -> Result<Vec<Forward>, FirewallError> {
        let mut state = self.lock();
        let records = self.runtime.list().unwrap_or_default();
        let mut owners: Vec<PortOwner> = Vec::new();
        for (record, _) in &records {
            state.pending.remove(&record.id);
            owners.extend(forwards_of(record).into_iter().map(|forward| PortOwner {
                container: record.name.clone(),
                forward,
            }));
        }
        for (pending_name, forwards) in state.pending.values() {
            owners.extend(forwards.iter().map(|forward| PortOwner {
                container: pending_name.clone(),
                forward: forward.clone(),
            }));
        }
        let requests: Vec<PortRequest> = requests
            .iter()
            .map(|r| PortRequest {
                host_ip: r.host_ip.or(self
                    .options
                    .default_ip
                    .filter(|d| d.is_ipv4() == ip.is_ipv4())),
                ..r.clone()
            })
            .collect();
        // Ports to pick are looked for from a point of the ephemeral range
        // that depends on the container (its id is random) rather than from
        // its start, so daemons of other state roots, which do not see our
        // reservations before they become rules, rarely pick the same one;
        // when nothing is free from there on, the whole range is searched.
        let eph = crate::net::firewall::ephemeral_range();
        let span = u32::from(eph.end() - eph.start()) + 1;
        let seed = u32::from_str_radix(id.get(..8).unwrap_or("0"), 16).unwrap_or(0);
        let from = eph.start() + u16::try_from(seed % span).unwrap_or(0);
        // (A one-port range would be taken for a fixed port.)
        let from = if from == *eph.end() {
            *eph.start()
        } else {
            from
        };
        let rotated: Vec<PortRequest> = requests
            .iter()
            .map(|r| match &r.host_ports {
                Some(range) if *range.start() != 0 => r.clone(),
                _ => PortRequest {
                    host_ports: Some(from..=*eph.end()),
                    ..r.clone()
                },
            })
            .collect();
        let forwards = match self.firewall.allocate(ip, bridge, &rotated, &owners) {
            Err(FirewallError::NoFreePort { .. }) => {
                self.firewall.allocate(ip, bridge, &requests, &owners)?
            }
            other => other?,
        };
        state
            .pending
            .insert(id.to_string(), (name.to_string(), forwards.clone()));
        Ok(forwards)
    }

    /// Applies the ruleset of the daemon's state when it differs from the
    /// one applied last.
    ///
    /// Syncs of a burst (30 containers starting at once) are coalesced:
    /// a caller whose change a sync begun after it already read returns
    /// when that sync is done, without computing and applying again. The
    /// caller's change is on disk before it takes its number, and a sync
    /// reads the numbers taken before it reads the state, so every number
    /// it covers is in what it applied. The listing kept for the next
    /// start is taken by a thread of its own after the apply.
    pub fn sync(&self) -> Result<(), FirewallError> {
        if !self.options.enabled {
            return Ok(());
        }
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut applied = self.lock_applied();
        if applied.covered >= ticket {
            return Ok(());
        }
        let upto = self.requested.load(Ordering::SeqCst);
        let rules = self.compute();
        if applied.rules.as_ref() != Some(&rules) {
            self.apply(&rules)?;
            applied.rules = Some(rules);
            self.relist();
        }
        applied.covered = upto;
        Ok(())
    }

    /// Has the listing kept for the next start taken again.
    fn relist(&self) {
        let sent = self.relist.as_ref().is_some_and(|tx| {
            tx.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(())
                .is_ok()
        });
        if !sent {
            keep_listing(&self.firewall, &self.listing_file);
        }
    }

    /// [`Publisher::sync`], logging a failure (callers have no one to
    /// report it to).
    pub fn sync_logged(&self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %crate::error_chain(&e), table = %self.options.table, "cannot apply the firewall rules");
        }
    }

    /// Follows a network change.
    pub fn network_changed(&self, change: &NetworkChange) {
        if let NetworkChange::Detached { container, .. } = change {
            // A create that failed after its ports were chosen releases its
            // endpoints; a removed container's record is gone.
            self.lock().pending.remove(container);
        }
        self.sync_logged();
    }

    /// At daemon start: turns on IP forwarding (`--ip-forward`), then makes
    /// the kernel's table match the state, repairing drift.
    pub fn start(&self) {
        if self.options.ip_forward
            && let Err(e) = self.firewall.enable_ip_forward(false)
        {
            tracing::warn!(error = %crate::error_chain(&e), "cannot enable IP forwarding");
        }
        if !self.options.enabled {
            tracing::info!("--iptables=false: firewall rules are left alone");
            return;
        }
        if let Err(e) = self.restore() {
            tracing::error!(error = %crate::error_chain(&e), table = %self.options.table, "cannot restore the firewall rules");
        }
    }

    fn restore(&self) -> Result<(), FirewallError> {
        let mut state = self.lock_applied();
        let rules = self.compute();
        let current = self.firewall.current()?;
        let saved = std::fs::read_to_string(&self.listing_file).ok();
        let same_rules = self.firewall.is_applied(&rules)?;
        match (&current, &saved) {
            (Some(now), Some(then)) if same_rules && now == then => {
                tracing::info!(table = %self.options.table, "firewall rules in place");
                state.rules = Some(rules);
                return Ok(());
            }
            (None, Some(_)) => {
                tracing::warn!(table = %self.options.table, "firewall table was removed while the daemon was away; restoring it");
            }
            (Some(_), Some(_)) if same_rules => {
                tracing::warn!(table = %self.options.table, "firewall table was changed while the daemon was away; repairing it");
            }
            _ => {
                tracing::info!(table = %self.options.table, "applying the firewall rules");
            }
        }
        self.apply(&rules)?;
        keep_listing(&self.firewall, &self.listing_file);
        state.rules = Some(rules);
        Ok(())
    }

    /// The ruleset of the state as it is on disk now.
    fn compute(&self) -> Ruleset {
        let networks = self.networks.list().unwrap_or_default();
        let containers = self.runtime.list().unwrap_or_default();
        ruleset(&networks, &containers, &self.options)
    }

    /// Applies `rules`.
    fn apply(&self, rules: &Ruleset) -> Result<(), FirewallError> {
        self.firewall.apply(rules)?;
        tracing::debug!(
            table = %self.options.table,
            networks = rules.networks.len(),
            ports = rules.ports.len(),
            "firewall rules applied"
        );
        Ok(())
    }
}

/// Keeps the listing of our rules as they are now in `file`, for the next
/// start's check.
fn keep_listing(firewall: &Firewall, file: &Path) {
    match firewall.current() {
        Ok(Some(listing)) => {
            if let Err(e) = write_listing(file, &listing) {
                tracing::warn!(error = %e, "cannot keep the firewall listing");
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "cannot list the firewall rules")
        }
    }
}

/// Replaces the kept listing atomically, without waiting for the disk: it
/// is written after applies, on the path of container starts, and a stale
/// one after a host crash only makes the next start re-apply the rules.
fn write_listing(path: &Path, listing: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(listing.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Follows container starts, exits and removals on the event bus and
/// re-applies the rules (a container that exits on its own is only seen
/// there).
pub async fn follow(publisher: Arc<Publisher>, events: super::events::Events) {
    if !publisher.options.enabled {
        return;
    }
    let Ok(mut subscription) = events.subscribe(super::events::EventFilter::default(), None, None)
    else {
        return;
    };
    while let Some(event) = subscription.next().await {
        if event.kind != super::events::EventType::Container
            || !matches!(
                event.action.as_str(),
                "start" | "die" | "destroy" | "pause" | "unpause"
            )
        {
            continue;
        }
        let p = publisher.clone();
        let _ = tokio::task::spawn_blocking(move || p.sync_logged()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::firewall::Proto;
    use crate::net::network::Endpoint;
    use serde_json::json;

    fn network(name: &str, bridge: &str, subnet: &str) -> NetworkRecord {
        serde_json::from_value(json!({
            "name": name, "id": name, "created": "", "driver": "bridge",
            "subnet": subnet, "bridge": bridge,
        }))
        .unwrap()
    }

    fn endpoint(ip: &str) -> Endpoint {
        Endpoint {
            container_name: "c".into(),
            endpoint_id: "e".into(),
            ip: ip.parse().unwrap(),
            mac: String::new(),
            static_ip: false,
            ip6: None,
            static_ip6: false,
            aliases: vec![],
            host_veth: "veth0".into(),
            iface: "eth0".into(),
        }
    }

    fn container(
        id: &str,
        status: Status,
        forwards: &[Forward],
    ) -> (ContainerRecord, ContainerState) {
        let mut record: ContainerRecord = serde_json::from_value(json!({
            "id": id, "name": id, "created": "", "image": "", "image_id": "",
            "rootfs": {"lowers": [], "upper": "/", "work": "/"}, "cgroup": "",
        }))
        .unwrap();
        record.extra.insert("forwards".into(), json!(forwards));
        let mut state = ContainerState::created();
        state.status = status;
        (record, state)
    }

    fn forward(port: u16, ip: &str, bridge: &str) -> Forward {
        Forward {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: port,
            container_ip: ip.parse().unwrap(),
            container_port: 80,
            bridge: bridge.into(),
        }
    }

    #[test]
    fn running_containers_forward_to_their_current_address_and_options_shape_networks() {
        let mut default = network("bridge", "stk0", "10.9.0.1/24");
        default.endpoints.insert("a".into(), endpoint("10.9.0.7"));
        default.endpoints.insert("b".into(), endpoint("10.9.0.8"));
        let mut other = network("user", "br-user", "10.9.1.1/24");
        other
            .options
            .insert(MASQUERADE_OPTION.into(), "false".into());
        let containers = [
            // Recorded with an old address: the endpoint's wins.
            container("a", Status::Running, &[forward(8080, "10.9.0.2", "stk0")]),
            container("b", Status::Exited, &[forward(8081, "10.9.0.8", "stk0")]),
        ];
        let mut options = FirewallOptions::for_root(Path::new("/tmp/x"));
        options.icc = false;
        let rules = ruleset(&[other, default], &containers, &options);
        assert_eq!(rules.ports, vec![forward(8080, "10.9.0.7", "stk0")]);
        let nets: Vec<(String, bool, bool)> = rules
            .networks
            .iter()
            .map(|n| (n.bridge.clone(), n.masquerade, n.icc))
            .collect();
        assert_eq!(
            nets,
            [
                ("br-user".to_string(), false, true),
                ("stk0".to_string(), true, false)
            ]
        );
    }

    #[test]
    fn table_names_are_per_root() {
        assert_eq!(table_name(Path::new("/var/lib/stack")), "stack");
        let a = table_name(Path::new("/tmp/a"));
        assert_ne!(a, table_name(Path::new("/tmp/b")));
        assert!(Firewall::new(&a).is_ok());
        assert_eq!(a, table_name(Path::new("/tmp/a")));
    }
}
