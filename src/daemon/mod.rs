//! `stack daemon`: the long-running supervisor. It owns the state root,
//! serves the REST API ([`crate::api::server`]) on a unix socket (and, with
//! TLS, on TCP), and keeps containers as their restart policies say.
//!
//! Containers do not depend on the daemon: each has its shim, which holds
//! its stdio, logs and exit status. A daemon that is killed and started
//! again finds the shims still running and adopts them again (live
//! restore). What the daemon keeps is on disk, per container, in atomic
//! files (record, spec, state): a crash leaves the old or the new version
//! of each, and a create cut short by a crash is swept at the next start.

pub mod build;
pub mod config;
pub mod dns;
pub mod events;
pub mod firewall;
pub mod gitops;
pub mod health;
pub mod stacks;
pub mod supervisor;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::api::Endpoint;
use crate::image::driver::{self, DriverError, StorageDriver};
use crate::reconcile::containers::{Containers, ContainersError};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The state root.
    pub root: PathBuf,
    /// Where shim sockets (and, by default, the API socket) live.
    pub run_dir: PathBuf,
    /// Where to listen.
    pub hosts: Vec<Endpoint>,
    /// The pid file, locked while the daemon runs.
    pub pidfile: PathBuf,
    /// The group that may use the unix socket (`None`: root's group).
    pub group: Option<String>,
    /// Debug logging.
    pub debug: bool,
    /// TLS for TCP listeners (required for them).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Ulimits for containers that do not set them (`--default-ulimit`).
    pub default_ulimits: Vec<crate::spec::ulimit::Ulimit>,
    /// Log rotation for containers that do not set it (`--log-opt
    /// max-size=…`, `max-file=…`): the largest file size in bytes.
    pub log_max_size: Option<u64>,
    /// Log rotation default: how many files to keep.
    pub log_max_files: Option<u32>,
    /// Restart delays for restart policies.
    pub backoff: supervisor::BackoffConfig,
    /// Registries pulls and pushes may reach over plain HTTP, besides
    /// localhost and 127.0.0.0/8 (`--insecure-registry`: host, host:port or
    /// CIDR).
    pub insecure_registries: Vec<String>,
    /// Mirrors tried before Docker Hub for docker.io pulls
    /// (`--registry-mirror`).
    pub registry_mirrors: Vec<String>,
    /// The storage driver asked for (`--storage-driver`); `None` keeps the
    /// one recorded for the root, or picks `overlay` for a new root.
    pub storage_driver: Option<StorageDriver>,
    /// The kernel's list of file system types, where `overlay` must appear
    /// for the overlay driver (`/proc/filesystems`).
    pub proc_filesystems: PathBuf,
    /// The default bridge network's settings (`--bridge`, `--bip`,
    /// `--fixed-cidr`, `--mtu`).
    pub default_bridge: crate::net::DefaultBridgeConfig,
    /// The host-wide lock held while a subnet is chosen.
    pub net_lock: PathBuf,
    /// Name resolution: `--dns`, `--dns-search`, `--dns-opt`.
    pub dns: dns::DnsOptions,
    /// NAT and published ports (`--iptables`, `--ip-masq`, `--icc`,
    /// `--ip`, `--ip-forward`).
    pub firewall: firewall::FirewallOptions,
    /// The watch directory (`--watch-dir`, `--watch-grace`,
    /// `--keep-on-delete`); `None`: no directory is watched.
    pub watch: Option<gitops::WatchConfig>,
}

impl Options {
    /// The defaults for a state root.
    pub fn for_root(root: &Path) -> Options {
        let run_dir = crate::runtime::default_run_dir(root);
        Options {
            root: root.to_path_buf(),
            hosts: vec![Endpoint::Unix(default_socket(root))],
            pidfile: run_dir.join("stack.pid"),
            run_dir,
            group: None,
            debug: false,
            tls: None,
            default_ulimits: Vec::new(),
            log_max_size: None,
            log_max_files: None,
            backoff: supervisor::BackoffConfig::default(),
            insecure_registries: Vec::new(),
            registry_mirrors: Vec::new(),
            storage_driver: None,
            proc_filesystems: PathBuf::from("/proc/filesystems"),
            default_bridge: crate::net::DefaultBridgeConfig {
                name: crate::net::default_bridge_name(root),
                existing: false,
                bip: None,
                fixed_cidr_v6: None,
                fixed_cidr: None,
                mtu: None,
            },
            net_lock: PathBuf::from(NET_LOCK),
            dns: dns::DnsOptions::host(),
            firewall: firewall::FirewallOptions::for_root(root),
            watch: None,
        }
    }
}

/// The host-wide lock daemons hold while they choose a subnet and make its
/// bridge, so daemons of different state roots never pick the same one.
pub const NET_LOCK: &str = "/run/stack-net.lock";

/// The API socket of the daemon that owns `root`: `/run/stack/stack.sock`
/// for the default root, else `stack.sock` in the root's run directory.
pub fn default_socket(root: &Path) -> PathBuf {
    crate::runtime::default_run_dir(root).join("stack.sock")
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon owns this state root.
    #[error("another stack daemon (pid {pid}) is running with the pid file {}", path.display())]
    AlreadyRunning {
        /// Its pid, as its pid file says.
        pid: String,
        /// The pid file.
        path: PathBuf,
    },
    /// A file, directory or socket could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state root could not be opened.
    #[error(transparent)]
    Containers(#[from] ContainersError),
    /// A configuration problem.
    #[error("{0}")]
    Config(String),
    /// Networking could not be set up.
    #[error("cannot set up networking")]
    Network(#[source] crate::net::NetError),
    /// The storage driver cannot be used with this state root.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The overlay driver on a kernel without overlayfs.
    #[error(
        "the kernel has no overlay file system ({} does not list overlay): start the daemon with --storage-driver vfs, which copies images instead",
        path.display()
    )]
    NoOverlay {
        /// The list of file system types read.
        path: PathBuf,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The daemon's shared state: what every request handler works on.
#[derive(Debug)]
pub struct Daemon {
    /// Images, containers and volumes.
    pub containers: Arc<Containers>,
    /// The state root.
    pub root: PathBuf,
    /// The options it runs with.
    pub options: Options,
    /// When it started.
    pub started: SystemTime,
    /// What happened, for `stack events`.
    pub events: events::Events,
    /// Restart policies, `--rm`, and the verbs that start and stop.
    pub supervisor: Arc<supervisor::Supervisor>,
    /// The embedded DNS server and its registrations.
    pub dns: Arc<dns::DaemonDns>,
    /// The stacks kept converged.
    pub stacks: stacks::Registry,
    /// The stacks of the watch directory.
    pub gitops: gitops::GitOps,
}

impl Daemon {
    /// Opens the state root. Call it in the tokio runtime the daemon runs
    /// in (the supervisor's tasks run there).
    pub fn open(options: Options) -> Result<Daemon, DaemonError> {
        let driver = settle_driver(&options)?;
        let mut containers = Containers::open(&options.root, &options.run_dir)?;
        containers.set_storage_driver(driver);
        let swept = containers
            .runtime
            .sweep_unfinished()
            .map_err(ContainersError::from)?;
        if swept > 0 {
            tracing::warn!(
                "removed {swept} leftovers of containers created or removed when the daemon stopped"
            );
        }
        let events = events::Events::open(&options.root)
            .map_err(|e| DaemonError::Config(crate::error_chain(&e)))?;
        let networks = crate::net::Networks::open(
            crate::net::NetConfig {
                state_dir: options.root.join("network"),
                netns_dir: options.run_dir.join("netns"),
                host_lock: options.net_lock.clone(),
                default_bridge: options.default_bridge.clone(),
            },
            &crate::runtime::now_rfc3339(),
        )
        .map_err(DaemonError::Network)?;
        // Addresses, namespaces and veth ends of containers that are gone
        // (removed while a crash cut the cleanup short, or created halfway).
        let listed = containers.runtime.list().map_err(ContainersError::from)?;
        let live: std::collections::BTreeSet<String> =
            listed.iter().map(|(record, _)| record.id.clone()).collect();
        let running: std::collections::BTreeSet<String> = listed
            .iter()
            .filter(|(_, state)| {
                !matches!(
                    state.status,
                    crate::runtime::state::Status::Created | crate::runtime::state::Status::Exited
                )
            })
            .map(|(record, _)| record.id.clone())
            .collect();
        match networks.sweep_with(&live, &running) {
            Ok(0) => {}
            Ok(n) => tracing::warn!("released {n} network leftovers of containers that are gone"),
            Err(e) => tracing::warn!(error = %crate::error_chain(&e), "network sweep failed"),
        }
        let dns = Arc::new(dns::DaemonDns::start(
            tokio::runtime::Handle::current(),
            options.dns.clone(),
        ));
        containers.set_dns_defaults(options.dns.container_defaults());
        let networks = Arc::new(networks);
        let publisher = Arc::new(
            firewall::Publisher::new(
                &options.root,
                options.firewall.clone(),
                networks.clone(),
                containers.runtime.clone(),
            )
            .map_err(|e| DaemonError::Config(crate::error_chain(&e)))?,
        );
        // Rules the kernel kept while the daemon was away are checked
        // against the state and repaired.
        publisher.start();
        tokio::spawn(firewall::follow(publisher.clone(), events.clone()));
        containers.set_networks(
            networks,
            Arc::new(NetworkHooks {
                events: events.clone(),
                dns: dns.clone(),
                publisher,
            }),
        );
        let containers = Arc::new(containers);
        dns.set_containers(&containers);
        let supervisor =
            supervisor::Supervisor::new(containers.clone(), events.clone(), options.backoff);
        Ok(Daemon {
            containers,
            root: options.root.clone(),
            options,
            started: SystemTime::now(),
            events,
            supervisor,
            dns,
            stacks: stacks::Registry::default(),
            gitops: gitops::GitOps::default(),
        })
    }
}

/// Where the daemon follows network changes: events now, and the hook
/// points of the firewall (NAT, published ports) and DNS layers.
#[derive(Debug)]
pub struct NetworkHooks {
    events: events::Events,
    dns: Arc<dns::DaemonDns>,
    /// NAT and published ports.
    publisher: Arc<firewall::Publisher>,
}

impl crate::reconcile::containers::NetworkObserver for NetworkHooks {
    fn changed(&self, change: crate::reconcile::containers::NetworkChange) {
        self.network_changed(&change);
    }

    fn allocate_ports(
        &self,
        container: (&str, &str),
        ip: std::net::IpAddr,
        bridge: &str,
        requests: &[crate::net::firewall::PortRequest],
    ) -> Result<Vec<crate::net::firewall::Forward>, crate::net::firewall::FirewallError> {
        self.publisher.allocate(container, ip, bridge, requests)
    }

    fn started(&self, _container: &str) {
        self.publisher.sync_logged();
    }
}

impl NetworkHooks {
    /// Called after every network change: a network created or removed, a
    /// container's interface up (its address known) or gone. The firewall
    /// layer (masquerade for the subnet, published ports' DNAT to the
    /// address) and the DNS layer (names and aliases to addresses) are
    /// called from here.
    pub fn network_changed(&self, change: &crate::reconcile::containers::NetworkChange) {
        self.dns.network_changed(change);
        use crate::reconcile::containers::NetworkChange as C;
        let event = match change {
            C::Created { network } => events::Event::network("create", network),
            C::Removed { network } => events::Event::network("destroy", network),
            C::Attached {
                network, container, ..
            } => events::Event::network("connect", network).with_attribute("container", container),
            C::Detached {
                network, container, ..
            } => {
                events::Event::network("disconnect", network).with_attribute("container", container)
            }
        };
        self.events.emit(event);
        self.publisher.network_changed(change);
    }
}

/// The storage driver for the daemon's root: the recorded one, or the one
/// asked for on a new root, which is then recorded. The overlay driver
/// needs overlayfs in the kernel.
fn settle_driver(options: &Options) -> Result<StorageDriver, DaemonError> {
    let recorded = driver::recorded(&options.root)?;
    let chosen = driver::choose(&options.root, recorded, options.storage_driver)?;
    if chosen == StorageDriver::Overlay
        && !crate::runtime::rootfs::overlay_supported(&options.proc_filesystems)
    {
        return Err(DaemonError::NoOverlay {
            path: options.proc_filesystems.clone(),
        });
    }
    if recorded.is_none() {
        // Another daemon may have recorded the other one meanwhile.
        let now = driver::record(&options.root, chosen)?;
        driver::choose(&options.root, Some(now), Some(chosen))?;
    }
    tracing::info!(driver = %chosen, "storage driver");
    Ok(chosen)
}

impl Daemon {
    /// A registry client for `domain` with the daemon's mirrors and
    /// insecure registries, and `credentials` when given.
    pub fn registry_client(
        &self,
        domain: &str,
        credentials: Option<crate::image::auth::Credentials>,
    ) -> Result<crate::image::registry::RegistryClient, crate::image::registry::RegistryError> {
        let mut auth = crate::image::auth::AuthStore::empty();
        if let Some(credentials) = credentials {
            auth.insert(domain, credentials);
        }
        let mut options = crate::image::registry::RegistryOptions {
            auth,
            mirrors: self.options.registry_mirrors.clone(),
            ..crate::image::registry::RegistryOptions::default()
        };
        options
            .insecure
            .extend(self.options.insecure_registries.iter().cloned());
        crate::image::registry::RegistryClient::new(options)
    }

    /// Pulls `reference` anonymously (through the mirrors) and emits
    /// `pull`: what a stack's missing images need.
    pub async fn pull(
        &self,
        reference: &crate::image::reference::Reference,
    ) -> Result<(), crate::image::registry::RegistryError> {
        let client = self.registry_client(reference.domain(), None)?;
        let images = &self.containers.images;
        crate::image::pull::pull(
            &client,
            &images.blobs,
            &images.catalog,
            Some(&images.snapshots),
            reference,
            None,
            &crate::image::pull::NoProgress,
        )
        .await?;
        self.events.emit(events::Event::image(
            "pull",
            &reference.to_string(),
            Default::default(),
        ));
        Ok(())
    }

    /// Fills in what a request leaves to the daemon's defaults.
    pub fn apply_defaults(&self, req: &mut crate::reconcile::container::RunRequest) {
        for default in &self.options.default_ulimits {
            if !req.ulimits.iter().any(|u| u.name == default.name) {
                req.ulimits.push(default.clone());
            }
        }
        if req.log_max_size.is_none() {
            req.log_max_size = self.options.log_max_size;
        }
        if req.log_max_files.is_none() {
            req.log_max_files = self.options.log_max_files;
        }
    }
}

/// The pid file, locked for as long as the daemon runs.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _file: fs::File,
}

impl PidFile {
    /// Creates and locks `path`, writing this process's pid; fails when
    /// another daemon holds it.
    pub fn acquire(path: &Path) -> Result<PidFile, DaemonError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(io_err("open the pid file", path))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(DaemonError::AlreadyRunning {
                pid: pid.trim().to_string(),
                path: path.to_path_buf(),
            });
        }
        file.set_len(0)
            .map_err(io_err("write the pid file", path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err("write the pid file", path))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The pid in a daemon's pid file, when a daemon holds it locked.
pub fn running_pid(pidfile: &Path) -> Option<i32> {
    let file = fs::File::open(pidfile).ok()?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// The gid of a group named in /etc/group.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let text = fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|g| g.parse().ok()))
            .flatten()
    })
}

/// Binds the API's unix socket: mode 0660, owned by root and `group`
/// (Docker's `-G`), so only root and that group's members can connect. A
/// stale socket left by a killed daemon is replaced; a live one is not.
pub fn bind_unix(
    path: &Path,
    group: Option<&str>,
) -> Result<(tokio::net::UnixListener, Option<u32>), DaemonError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::Config(format!(
                "{} is in use by another daemon",
                path.display()
            )));
        }
        fs::remove_file(path).map_err(io_err("remove the stale socket", path))?;
    }
    let gid = match group {
        Some(name) => Some(group_id(name).ok_or_else(|| {
            DaemonError::Config(format!("the group {name:?} does not exist (-G/--group)"))
        })?),
        None => None,
    };
    let listener = tokio::net::UnixListener::bind(path).map_err(io_err("listen on", path))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .map_err(io_err("set the group of", path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(io_err("set the mode of", path))?;
    Ok((listener, gid))
}

/// Whether the process at the other end of `stream` may use the API: root,
/// or a member of the socket's group. The socket's mode already keeps
/// others from connecting; this holds even if its mode was changed.
pub fn peer_allowed(stream: &tokio::net::UnixStream, gid: Option<u32>) -> bool {
    let Ok(cred) = rustix::net::sockopt::socket_peercred(stream) else {
        return false;
    };
    let uid = cred.uid.as_raw();
    if uid == 0 || uid == rustix::process::getuid().as_raw() {
        return true;
    }
    let Some(gid) = gid else { return false };
    if cred.gid.as_raw() == gid {
        return true;
    }
    // Supplementary groups of the peer process.
    fs::read_to_string(format!("/proc/{}/status", cred.pid.as_raw_nonzero()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
        })
        .unwrap_or(false)
}

/// Tells systemd (when it started us with `Type=notify`) how we are.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = PathBuf::from(path);
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// Runs the health checks of running containers: one monitor per run of a
/// container with a check, started on its `start` event (and for those
/// already running when the daemon starts), stopped on its `die`. Status
/// changes become `health_status: …` events.
async fn monitor_health(daemon: Arc<Daemon>) {
    let Ok(mut subscription) = daemon
        .events
        .subscribe(events::EventFilter::default(), None, None)
    else {
        return;
    };
    let mut monitors: std::collections::HashMap<String, health::HealthHandle> =
        std::collections::HashMap::new();
    let start =
        |id: &str, monitors: &mut std::collections::HashMap<String, health::HealthHandle>| {
            let Ok(Some(check)) = daemon.containers.health_check(id) else {
                return;
            };
            let d = daemon.clone();
            let on_change: health::OnChange = Arc::new(move |id: &str, status: &str| {
                if let Ok(record) = d.containers.runtime.record(id) {
                    d.events.emit(events::Event::container(
                        format!("health_status: {status}"),
                        &record,
                    ));
                }
            });
            let handle = health::spawn(daemon.containers.clone(), id.to_string(), check, on_change);
            monitors.insert(id.to_string(), handle);
        };
    if let Ok(list) = daemon.containers.runtime.list() {
        for (record, state) in list {
            if state.status == crate::runtime::Status::Running {
                start(&record.id, &mut monitors);
            }
        }
    }
    while let Some(event) = subscription.next().await {
        if event.kind != events::EventType::Container {
            continue;
        }
        match event.action.as_str() {
            "start" => start(&event.actor.id, &mut monitors),
            "die" | "destroy" => {
                monitors.remove(&event.actor.id);
            }
            _ => {}
        }
    }
}

/// Accepts TLS connections on `listener` until `stop`: a client without a
/// valid certificate (when the configuration asks for one) fails the
/// handshake and never reaches the API.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => crate::api::server::serve_connection(tls, router).await,
                Ok(Err(e)) => tracing::warn!("TLS handshake with {peer} failed: {e}"),
                Err(_) => tracing::warn!("TLS handshake with {peer} timed out"),
            }
        });
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: Options) -> Result<(), DaemonError> {
    let pidfile = PidFile::acquire(&options.pidfile)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("start the runtime for", &options.root))?;
    let result = rt.block_on(async move {
        let daemon = Arc::new(Daemon::open(options)?);
        serve(daemon).await
    });
    sd_notify("STOPPING=1");
    drop(pidfile);
    result
}

async fn serve(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let router = crate::api::server::router(daemon.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = Vec::new();
    for host in &daemon.options.hosts {
        match host {
            Endpoint::Unix(path) => {
                let (listener, gid) = bind_unix(path, daemon.options.group.as_deref())?;
                sockets.push(path.clone());
                tokio::spawn(crate::api::server::serve_unix(
                    listener,
                    gid,
                    router.clone(),
                    stop_rx.clone(),
                ));
            }
            Endpoint::Tcp(addr) => {
                let Some(tls) = daemon.options.tls.clone() else {
                    return Err(DaemonError::Config(format!(
                        "tcp://{addr} needs --tls with --tlscert and --tlskey"
                    )));
                };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(io_err("listen on", Path::new(addr)))?;
                tokio::spawn(serve_tls(listener, tls, router.clone(), stop_rx.clone()));
            }
        }
    }
    // Names of the networks and running containers, as the records say;
    // then followed (before the restore below reports exits and restarts).
    let dns = daemon.dns.clone();
    let _ = tokio::task::spawn_blocking(move || dns.restore()).await;
    tokio::spawn(daemon.dns.clone().follow(&daemon.events));
    // Live restore: every container the shims still run is watched again,
    // exits that happened meanwhile are reported and policies applied.
    let boot = supervisor::is_first_start_since_boot(&daemon.root).unwrap_or(false);
    match daemon.supervisor.restore(boot).await {
        Ok(report) => tracing::info!("restored containers: {report:?}"),
        Err(e) => tracing::warn!("restoring containers: {}", crate::error_chain(&e)),
    }
    tokio::spawn(monitor_health(daemon.clone()));
    // Stacks registered before resume their loops.
    daemon.stacks.restore(&daemon);
    // Then every stack of the watch directory is registered (or taken
    // down when its file went while the daemon was away).
    if let Some(config) = daemon.options.watch.clone() {
        tokio::spawn(gitops::run(daemon.clone(), config));
    }
    sd_notify("READY=1");
    tracing::info!("stack daemon ready on {:?}", daemon.options.hosts);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("handle signals for", &daemon.root))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io_err("handle signals for", &daemon.root))?;
    // A daemon started from a terminal outlives it.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io_err("handle signals for", &daemon.root))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
        }
    }
    sd_notify("STOPPING=1");
    let _ = stop_tx.send(true);
    if let Ok(nets) = daemon.containers.networks() {
        // What removals cut short left (a failed cleanup is retried here),
        // then the default bridge when no container is on it.
        if let Ok(list) = daemon.containers.runtime.list() {
            let live = list.into_iter().map(|(record, _)| record.id).collect();
            if let Err(e) = nets.sweep(&live) {
                tracing::warn!(error = %crate::error_chain(&e), "network sweep failed");
            }
        }
        if let Err(e) = nets.shutdown() {
            tracing::warn!(error = %crate::error_chain(&e), "cannot remove the default bridge");
        }
    }
    for path in sockets {
        let _ = fs::remove_file(path);
    }
    Ok(())
}
