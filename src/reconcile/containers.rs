//! Single containers the Docker way: resolve the image, prepare volumes and
//! the container's own files, build the spec ([`super::container::build`]) and
//! hand it to the runtime. `stack run`/`create` and, later, the stack loop
//! create containers through here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::Mount;
use serde_json::{Value, json};

use super::container::{self, ContainerError, NetMode, Placement, RunRequest, SeccompChoice};
use super::health::{Health, HealthCheck};
use crate::image::driver::StorageDriver;
use crate::image::images::{ImageError, Images};
use crate::image::layer::{self, LayerError};
use crate::image::leftovers;
use crate::net::network::{Endpoint, NetworkRecord};
use crate::net::{EndpointRequest, NetError, Networks};
use crate::runtime::{ContainerRecord, ContainerState, Runtime, RuntimeError, Status, seccomp};
use crate::spec::mount::MountKind;

/// A change of the networks or of a container's place on one, for the
/// layers that follow them (firewall rules, DNS), see
/// [`Containers::set_networks`].
#[derive(Debug, Clone)]
pub enum NetworkChange {
    /// A network was created (its bridge exists).
    Created {
        /// The network.
        network: NetworkRecord,
    },
    /// A network was removed (its bridge is gone).
    Removed {
        /// The network.
        network: NetworkRecord,
    },
    /// A container's interface on a network is up with its address.
    Attached {
        /// The network.
        network: NetworkRecord,
        /// The container's id.
        container: String,
        /// Its endpoint (address, aliases, interface).
        endpoint: Endpoint,
    },
    /// A container left a network: its interface is gone, its address free.
    Detached {
        /// The network.
        network: NetworkRecord,
        /// The container's id.
        container: String,
        /// The endpoint it had.
        endpoint: Endpoint,
    },
}

/// Who is told about [`NetworkChange`]s (the daemon).
pub trait NetworkObserver: Send + Sync + std::fmt::Debug {
    /// Called after the change happened.
    fn changed(&self, change: NetworkChange);

    /// Chooses the host ports of a new container's published ports (the
    /// daemon's firewall layer, which knows every container's ports):
    /// `container` is its id and name, `ip` and `bridge` its address and
    /// bridge on the network the ports go to. The forwards are reserved
    /// for it from then on (until it is removed, or its create fails and
    /// its endpoints are released).
    fn allocate_ports(
        &self,
        container: (&str, &str),
        ip: std::net::IpAddr,
        bridge: &str,
        requests: &[crate::net::firewall::PortRequest],
    ) -> Result<Vec<crate::net::firewall::Forward>, crate::net::firewall::FirewallError>;

    /// Called after a container started (its address is up): the layers
    /// that follow running containers (published ports) update now, before
    /// the start is reported.
    fn started(&self, container: &str) {
        let _ = container;
    }
}

/// Errors of container management.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// The image could not be found or unpacked.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The request does not make a valid container.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The seccomp profile could not be used.
    #[error("seccomp profile")]
    Seccomp(#[from] seccomp::SeccompError),
    /// This architecture has no syscall table for seccomp.
    #[error(
        "seccomp filtering is not supported on {0}; run with --security-opt seccomp=unconfined"
    )]
    SeccompArch(&'static str),
    /// A file of the container could not be written.
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
    /// The health check settings are invalid.
    #[error(transparent)]
    Health(#[from] super::health::HealthError),
    /// `--volumes-from` or `--network container:` names a container that
    /// cannot serve.
    #[error("{0}")]
    Reference(String),
    /// A `--mount type=bind` source that does not exist (Docker's message;
    /// `-v` creates a missing source instead).
    #[error("invalid mount config for type \"bind\": bind source path does not exist: {}", path.display())]
    BindSourceMissing {
        /// The source on the host.
        path: PathBuf,
    },
    /// A mount option this runtime does not implement.
    #[error("mount at {target}: {option} is not supported")]
    MountOption {
        /// The mount's target.
        target: String,
        /// The option, as the user wrote it.
        option: String,
    },
    /// Networking failed or refused.
    #[error(transparent)]
    Network(#[from] NetError),
    /// Bridge networks need the daemon's networking.
    #[error("networking is not available here: bridge networks need the daemon")]
    NoNetworking,
    /// A published port the request spells wrong.
    #[error(transparent)]
    PortSpec(#[from] super::ports::PortsError),
    /// A host port that cannot be given to the container (taken by another
    /// container or by a socket on the host, or none free).
    #[error(transparent)]
    Ports(#[from] crate::net::firewall::FirewallError),
    /// The image could not be copied into a `vfs` container's root.
    #[error("copy image {image} into the root of the new container")]
    CopyImage {
        /// The image id.
        image: String,
        /// Why.
        #[source]
        source: LayerError,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ContainersError + 'a {
    move |source| ContainersError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Images, containers and volumes of one state root.
#[derive(Debug)]
pub struct Containers {
    /// The image store.
    pub images: Images,
    /// The runtime.
    pub runtime: Runtime,
    volumes: PathBuf,
    /// Where `vfs` copies are made before they become a container's root
    /// (`<root>/containers`, the file system the bundles are on).
    containers_dir: PathBuf,
    storage_driver: StorageDriver,
    networks: Option<Arc<Networks>>,
    observer: Option<Arc<dyn NetworkObserver>>,
    /// The daemon's `--dns`, `--dns-search`, `--dns-opt`: what a
    /// container's resolv.conf has where its own settings say nothing.
    dns_defaults: container::DnsSettings,
}

/// Prefix of the temp directories `vfs` copies are made in.
const VFS_TEMP_PREFIX: &str = ".tmp-vfs";

/// The storage driver a container was created with (its record's
/// `extra["driver"]`; containers from before drivers were recorded are
/// overlay ones).
pub fn driver_of(record: &ContainerRecord) -> StorageDriver {
    record
        .extra
        .get("driver")
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
        .unwrap_or_default()
}

const ADJECTIVES: [&str; 24] = [
    "brave",
    "calm",
    "eager",
    "fervent",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "witty",
    "youthful",
    "zealous",
    "bold",
    "clever",
];
const NAMES: [&str; 24] = [
    "lovelace", "hopper", "turing", "knuth", "ritchie", "thompson", "hamilton", "noether", "curie",
    "dijkstra", "liskov", "torvalds", "babbage", "shannon", "boole", "euler", "gauss", "kepler",
    "newton", "pascal", "tesla", "wozniak", "yalow", "zuse",
];

/// A generated name like Docker's (`adjective_scientist`), unique among
/// `taken`.
fn generate_name(id: &str, taken: impl Fn(&str) -> bool) -> String {
    let seed = u64::from_str_radix(&id[..id.len().min(12)], 16).unwrap_or(0);
    let a = ADJECTIVES[usize::try_from(seed % 24).unwrap_or(0)];
    let n = NAMES[usize::try_from((seed / 24) % 24).unwrap_or(0)];
    let base = format!("{a}_{n}");
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}{i}"))
        .find(|c| !taken(c))
        .unwrap_or(base)
}

/// Whether a name is acceptable to Docker: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Containers {
    /// Opens the state root.
    pub fn open(root: &Path, run_dir: &Path) -> Result<Self, ContainersError> {
        let exe = std::env::current_exe()
            .map_err(io_err("find this program", Path::new("/proc/self/exe")))?;
        let images = Images::open(root)?;
        let runtime = Runtime::open(root, run_dir, exe)?;
        let volumes = root.join("volumes");
        fs::create_dir_all(&volumes).map_err(io_err("create", &volumes))?;
        let containers_dir = root.join("containers");
        // Copies whose creator died halfway.
        leftovers::sweep(&containers_dir, |name| name.starts_with(VFS_TEMP_PREFIX));
        Ok(Self {
            images,
            runtime,
            volumes,
            containers_dir,
            storage_driver: StorageDriver::default(),
            networks: None,
            observer: None,
            dns_defaults: container::DnsSettings::default(),
        })
    }

    /// Gives containers bridge networks: `networks` does the work,
    /// `observer` hears of every change.
    pub fn set_networks(&mut self, networks: Arc<Networks>, observer: Arc<dyn NetworkObserver>) {
        self.networks = Some(networks);
        self.observer = Some(observer);
    }

    /// Sets what containers' resolv.conf files have where their own
    /// `--dns`, `--dns-search` and `--dns-option` say nothing (the daemon's
    /// `--dns`, `--dns-search`, `--dns-opt`).
    pub fn set_dns_defaults(&mut self, defaults: container::DnsSettings) {
        self.dns_defaults = defaults;
    }

    /// The networks, when this instance has them.
    pub fn networks(&self) -> Result<&Networks, ContainersError> {
        self.networks
            .as_deref()
            .ok_or(ContainersError::NoNetworking)
    }

    /// Tells the observer.
    pub fn network_changed(&self, change: NetworkChange) {
        if let Some(o) = &self.observer {
            o.changed(change);
        }
    }

    /// Starts a container (see [`Runtime::start`]), first making its network
    /// namespace and interfaces when it is on bridge networks and they do
    /// not exist yet (its first start, or the first after a reboot).
    pub fn start(
        &self,
        id: &str,
        attach: Option<std::os::fd::OwnedFd>,
    ) -> Result<ContainerState, ContainersError> {
        let record = self.runtime.record(id)?;
        if matches!(request_of(&record).network, NetMode::Network(_))
            && let Some(nets) = &self.networks
            && nets.wire(id)?
        {
            for (network, endpoint) in nets.endpoints_of(id)? {
                self.network_changed(NetworkChange::Attached {
                    network,
                    container: id.to_string(),
                    endpoint,
                });
            }
        }
        let state = self.runtime.start(id, attach)?;
        if let Some(o) = &self.observer {
            o.started(id);
        }
        Ok(state)
    }

    /// Creates a bridge network.
    pub fn create_network(
        &self,
        req: &crate::net::CreateRequest,
    ) -> Result<NetworkRecord, ContainersError> {
        let network = self
            .networks()?
            .create(req, &crate::runtime::now_rfc3339())?;
        self.network_changed(NetworkChange::Created {
            network: network.clone(),
        });
        Ok(network)
    }

    /// Removes a network without containers.
    pub fn remove_network(&self, key: &str) -> Result<NetworkRecord, ContainersError> {
        let network = self.networks()?.remove(key)?;
        self.network_changed(NetworkChange::Removed {
            network: network.clone(),
        });
        Ok(network)
    }

    /// Removes every user-defined network no container is on, except those
    /// `keep` keeps.
    pub fn prune_networks(
        &self,
        keep: impl Fn(&NetworkRecord) -> bool,
    ) -> Result<Vec<NetworkRecord>, ContainersError> {
        let removed = self.networks()?.prune(keep)?;
        for network in &removed {
            self.network_changed(NetworkChange::Removed {
                network: network.clone(),
            });
        }
        Ok(removed)
    }

    /// `docker network connect`: gives container `key` an endpoint on
    /// network `network`; a container whose namespace exists gets its
    /// interface (`eth1`, …) at once, others at their start.
    pub fn connect(
        &self,
        network: &str,
        key: &str,
        req: &EndpointRequest,
    ) -> Result<(), ContainersError> {
        let id = self.runtime.resolve(key)?;
        let record = self.runtime.record(&id)?;
        let nets = self.networks()?;
        let target = nets.find(network)?;
        if !target.is_bridge() {
            return Err(ContainerError::Conflict(format!(
                "container cannot be disconnected from host network or connected to {} network",
                target.name
            ))
            .into());
        }
        if !matches!(request_of(&record).network, NetMode::Network(_)) {
            return Err(ContainerError::Conflict(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            )
            .into());
        }
        let (network, endpoint) = nets.connect(&target.id, &id, &record.name, req)?;
        if crate::net::netns::is_mounted(&nets.netns_path(&id)) {
            self.network_changed(NetworkChange::Attached {
                network,
                container: id,
                endpoint,
            });
        }
        Ok(())
    }

    /// `docker network disconnect`: the container's interface on the
    /// network goes and its address is free.
    pub fn disconnect(&self, network: &str, key: &str) -> Result<(), ContainersError> {
        let id = self.runtime.resolve(key)?;
        let nets = self.networks()?;
        let target = nets.find(network)?;
        let (network, endpoint) = nets.release(&target.id, &id).map_err(|e| match e {
            NetError::NotConnected { network, .. } => NetError::NotConnected {
                container: key.to_string(),
                network,
            },
            other => other,
        })?;
        self.network_changed(NetworkChange::Detached {
            network,
            container: id,
            endpoint,
        });
        Ok(())
    }

    /// Releases everything of container `id` on networks (addresses, veth
    /// pairs, its namespace). What fails is left to the next sweep.
    fn release_networks(&self, id: &str) {
        let Some(nets) = &self.networks else {
            return;
        };
        match nets.teardown(id) {
            Ok(released) => {
                for (network, endpoint) in released {
                    self.network_changed(NetworkChange::Detached {
                        network,
                        container: id.to_string(),
                        endpoint,
                    });
                }
            }
            Err(e) => tracing::warn!(
                container = id,
                error = %crate::error_chain(&e),
                "network cleanup failed; the next daemon start sweeps it"
            ),
        }
    }

    /// Sets the storage driver new containers are created with (existing
    /// containers keep the one they were made with).
    pub fn set_storage_driver(&mut self, driver: StorageDriver) {
        self.storage_driver = driver;
    }

    /// The storage driver new containers are created with.
    pub fn storage_driver(&self) -> StorageDriver {
        self.storage_driver
    }

    /// Creates named volume `name` if it does not exist (seeded from the
    /// image at its first mount); returns its data directory.
    pub fn ensure_volume(&self, name: &str) -> Result<PathBuf, ContainersError> {
        self.volume(name, true)
    }

    /// Whether named volume `name` exists.
    pub fn volume_exists(&self, name: &str) -> bool {
        is_valid_name(name) && self.volumes.join(name).join("_data").is_dir()
    }

    /// Removes named volume `name` and its data.
    pub fn remove_volume(&self, name: &str) -> Result<(), ContainersError> {
        if !is_valid_name(name) {
            return Err(ContainersError::Reference(format!(
                "invalid volume name {name:?}"
            )));
        }
        let dir = self.volumes.join(name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove the volume", &dir)(e)),
        }
    }

    /// The directory of a named volume, created if new. A new volume is
    /// marked to be seeded with the image's files at its mount point.
    fn volume(&self, name: &str, seed: bool) -> Result<PathBuf, ContainersError> {
        if !is_valid_name(name) {
            return Err(ContainersError::Reference(format!(
                "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let dir = self.volumes.join(name);
        let data = dir.join("_data");
        if !data.exists() {
            fs::create_dir_all(&data).map_err(io_err("create the volume", &data))?;
            if seed {
                fs::write(dir.join(crate::runtime::shim::UNSEEDED), b"")
                    .map_err(io_err("create the volume", &dir))?;
            }
        }
        Ok(data)
    }

    /// Creates a container from `req`; returns its id.
    pub fn create(&self, req: &RunRequest) -> Result<String, ContainersError> {
        if req.auto_remove && req.restart.name != crate::spec::restart::RestartPolicyName::No {
            // docker/cli's ErrConflictRestartPolicyAndAutoRemove.
            return Err(ContainerError::Conflict(
                "conflicting options: cannot specify both --restart and --rm".into(),
            )
            .into());
        }
        req.health.validate()?;
        let image_id = self
            .images
            .catalog
            .resolve(&req.image)
            .map_err(ImageError::from)?;
        let config = self.images.config(&image_id)?;
        let layers = self.images.layers(&image_id)?;
        let run_config = config.config.clone().unwrap_or_default();
        let id = crate::runtime::new_id();
        let name = match &req.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !is_valid_name(n) {
                    return Err(ContainersError::Reference(format!(
                        "invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => generate_name(&id, |c| self.runtime.resolve(c).is_ok()),
        };

        // Volumes: named and anonymous ones get a directory under volumes/,
        // and so do the image's VOLUMEs nobody mounted over.
        let mut mounts = req.mounts.clone();
        for path in run_config.volumes.iter().flat_map(|v| v.keys()) {
            if !mounts.iter().any(|m| m.target == *path) {
                mounts.push(crate::spec::mount::MountSpec::new(
                    MountKind::Volume,
                    None,
                    path.clone(),
                ));
            }
        }
        check_mounts(&mounts)?;
        let mut volume_dirs = BTreeMap::new();
        let mut anonymous = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let name = match &m.source {
                Some(n) => n.clone(),
                None => {
                    let n = crate::runtime::new_id();
                    anonymous.push(n.clone());
                    n
                }
            };
            let mut dir = self.volume(&name, !m.nocopy)?;
            if let Some(sub) = &m.volume_subpath {
                dir = dir.join(sub);
                if !dir.exists() {
                    return Err(ContainersError::MountOption {
                        target: m.target.clone(),
                        option: format!("volume-subpath={sub} (no such path in volume {name})"),
                    });
                }
            }
            volume_dirs.insert(m.target.clone(), dir);
        }
        for m in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            let source = m.source.clone().unwrap_or_default();
            if !Path::new(&source).exists() {
                // Docker creates a missing bind source as a directory.
                fs::create_dir_all(&source)
                    .map_err(io_err("create the bind source", Path::new(&source)))?;
            }
        }

        let mut inherited: Vec<Mount> = Vec::new();
        {
            for source in &req.volumes_from {
                let (name, ro) = match source.rsplit_once(':') {
                    Some((n, mode)) if mode == "ro" || mode == "rw" => {
                        (n.to_string(), mode == "ro")
                    }
                    _ => (source.clone(), false),
                };
                let other = self.runtime.resolve(&name)?;
                let spec = self.runtime.spec(&other)?;
                for m in spec.mounts().iter().flatten() {
                    let dest = m.destination().to_string_lossy().into_owned();
                    if dest.starts_with("/proc")
                        || dest.starts_with("/dev")
                        || dest.starts_with("/sys")
                        || ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
                            .contains(&dest.as_str())
                    {
                        continue;
                    }
                    let mut m = m.clone();
                    if ro {
                        let mut opts = m.options().clone().unwrap_or_default();
                        opts.retain(|o| o != "rw");
                        opts.push("ro".into());
                        m.set_options(Some(opts));
                    }
                    inherited.push(m);
                }
            }
        }

        let mut req = req.clone();
        req.mounts = mounts;
        let mut netns = None;
        let mut on_network = None;
        let mut network_gateway = None;
        let mut embedded_dns = None;
        match req.network.clone() {
            NetMode::Container(other) if other.starts_with("/proc/") => {
                netns = Some(PathBuf::from(other));
            }
            NetMode::Container(other) => {
                let other_id = self.runtime.resolve(&other)?;
                let st = self.runtime.state(&other_id)?;
                if st.status != Status::Running {
                    return Err(ContainersError::Reference(format!(
                        "cannot join the network of container {other}: it is not running"
                    )));
                }
                // The other container's own namespace file outlives its
                // processes; its pid 1's namespace is the fallback.
                let file = self
                    .networks
                    .as_ref()
                    .map(|n| n.netns_path(&other_id))
                    .filter(|p| crate::net::netns::is_mounted(p));
                netns = Some(file.unwrap_or_else(|| format!("/proc/{}/ns/net", st.pid).into()));
                req.network = NetMode::Container(other_id);
            }
            NetMode::Network(key) => {
                let network = self.networks()?.find(&key)?;
                match network.driver.as_str() {
                    "host" => req.network = NetMode::Host,
                    "null" => req.network = NetMode::None,
                    _ => {
                        req.network = NetMode::Network(network.name.clone());
                        netns = Some(self.networks()?.netns_path(&id));
                        embedded_dns = network.dns_address();
                        network_gateway = network
                            .gateway
                            .filter(|_| !network.internal)
                            .map(std::net::IpAddr::V4);
                        on_network = Some(network.id);
                    }
                }
            }
            NetMode::None | NetMode::Host => {}
        }
        // Docker discards published ports with --network host or none
        // (docker/cli warns), and refuses them with container:NAME.
        let exposed = super::ports::exposed_ports(
            run_config.exposed_ports.iter().flat_map(|m| m.keys()),
            &req.expose,
        )?;
        let port_requests =
            super::ports::port_requests(&req.port_bindings, req.publish_all, &exposed)?;
        if !port_requests.is_empty() && matches!(req.network, NetMode::Container(_)) {
            return Err(ContainerError::Conflict(
                "conflicting options: port publishing and the container type network mode".into(),
            )
            .into());
        }
        let mut exposed = exposed;
        for r in &port_requests {
            exposed.insert(super::ports::port_key(r.container_port, r.proto));
        }
        if on_network.is_none()
            && (req.ip.is_some() || req.ip6.is_some() || !req.network_aliases.is_empty())
        {
            return Err(ContainerError::Conflict(
                "--ip, --ip6 and --network-alias need a user-defined network or bridge".into(),
            )
            .into());
        }
        let mac = match &req.mac_address {
            Some(m) => Some(
                crate::net::ipam::parse_mac(m)
                    .ok_or_else(|| ContainerError::Conflict(format!("invalid MAC address: {m}")))?,
            ),
            None => None,
        };
        // Legacy links: checked here (Docker checks at start, but the
        // variables go into the spec now). Only the default bridge gets
        // variables and hosts entries; on a user-defined network a link is
        // a name in the embedded DNS (moby `registerLinks` skips
        // user-defined networks).
        let linked = self.resolve_links(&req, &name, embedded_dns.is_none())?;
        let link_env: Vec<String> = linked
            .iter()
            .flat_map(|l| super::link::link_env(&name, l))
            .collect();
        let caps = container::capabilities(&req)?;
        let profile = seccomp_for(&req.seccomp, &caps)?;
        // vfs: the image is copied before the container is created, so a
        // copy that fails or is cut short leaves no container, only a temp
        // directory the next `open` sweeps; one rename then makes the copy
        // the upper dir. With no lower layers the runtime bind-mounts it as
        // the root.
        let driver = self.storage_driver;
        let copy = match driver {
            StorageDriver::Overlay => None,
            StorageDriver::Vfs => Some(self.copy_image(&image_id.to_string(), &layers)?),
        };
        let place = Placement {
            id: id.clone(),
            name: name.clone(),
            bundle: self.runtime.bundle(&id).dir().to_path_buf(),
            layers: match driver {
                StorageDriver::Overlay => layers,
                StorageDriver::Vfs => Vec::new(),
            },
            image_id: image_id.to_string(),
            volume_dirs,
            inherited_mounts: inherited,
            seccomp: profile,
            created: crate::runtime::now_rfc3339(),
            netns,
            link_env,
        };
        let built = container::build(&req, &run_config, &place);
        let (mut record, spec) = match built {
            Ok(built) => built,
            Err(e) => {
                if let Some(copy) = &copy {
                    let _ = fs::remove_dir_all(copy);
                }
                return Err(e.into());
            }
        };
        record
            .extra
            .insert("anonymous_volumes".into(), json!(anonymous));
        record.extra.insert("restart".into(), json!(req.restart));
        // The command line, for listings that should not parse the spec.
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        record.extra.insert("command".into(), json!(args));
        if let Some(check) = super::health::effective(&req.health, &run_config) {
            record.extra.insert("healthcheck".into(), json!(check));
        }
        record.extra.insert("driver".into(), json!(driver.name()));
        // The address is taken before the container exists: a refused
        // static address leaves nothing behind, and a crash in between
        // leaves an allocation of a container that does not exist, which
        // the next daemon start releases.
        let mut own_ip = None;
        if let Some(network) = &on_network {
            let asked = EndpointRequest {
                ip: req.ip,
                ip6: req.ip6,
                aliases: req.network_aliases.clone(),
                mac,
            };
            let reserved = self
                .networks()?
                .reserve(network, &id, &name, &asked)
                .map_err(ContainersError::from)
                .and_then(|(network, endpoint)| {
                    own_ip = Some(endpoint.ip.to_string());
                    // Host ports are chosen now and kept with the record,
                    // for the container's whole life: a port picked for
                    // host port 0 stays the same across restarts (Docker
                    // picks again at each start; keeping it is what users
                    // of `stack port` expect).
                    let forwards = match (&self.observer, network.bridge.as_deref()) {
                        (_, _) if port_requests.is_empty() => Vec::new(),
                        (Some(o), Some(bridge)) => o.allocate_ports(
                            (&id, &name),
                            IpAddr::V4(endpoint.ip),
                            bridge,
                            &port_requests,
                        )?,
                        _ => return Err(ContainersError::NoNetworking),
                    };
                    Ok(forwards)
                });
            match reserved {
                Ok(forwards) => {
                    record
                        .extra
                        .insert(super::ports::FORWARDS_KEY.into(), json!(forwards));
                    record.extra.insert(
                        super::ports::PORTS_KEY.into(),
                        super::ports::docker_ports(&exposed, &forwards),
                    );
                }
                Err(e) => {
                    if let Some(copy) = &copy {
                        let _ = fs::remove_dir_all(copy);
                    }
                    self.release_networks(&id);
                    return Err(e);
                }
            }
        } else if !exposed.is_empty() {
            record.extra.insert(
                super::ports::PORTS_KEY.into(),
                super::ports::docker_ports(&exposed, &[]),
            );
        }
        if let Err(e) = self.runtime.create(&record, &spec) {
            if let Some(copy) = &copy {
                let _ = fs::remove_dir_all(copy);
            }
            self.release_networks(&id);
            return Err(e.into());
        }
        if let Some(copy) = copy {
            // rename(2) replaces the empty upper dir the runtime made.
            if let Err(e) = fs::rename(&copy, &record.rootfs.upper) {
                let _ = fs::remove_dir_all(&copy);
                let _ = self.runtime.remove(&id, true);
                self.release_networks(&id);
                return Err(io_err("move the image copy into", &record.rootfs.upper)(e));
            }
        }
        let bundle = self.runtime.bundle(&id);
        let hostname = spec.hostname().clone().unwrap_or_default();
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let own_addrs: Vec<std::net::IpAddr> =
            own_ip.iter().filter_map(|ip| ip.parse().ok()).collect();
        let hosts = container::hosts_file_with(&container::Hosts {
            hostname: &hostname,
            domainname: spec.domainname().as_deref(),
            own_addrs: &own_addrs,
            extra: &req.extra_hosts,
            // Without a network of its own, the host is its own namespace.
            host_gateway: network_gateway
                .or(Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))),
            links: &linked,
        });
        let hosts = match hosts {
            Ok(hosts) => hosts,
            Err(e) => {
                let _ = self.runtime.remove(&id, true);
                self.release_networks(&id);
                return Err(e.into());
            }
        };
        let or_default = |own: &Vec<String>, daemon: &Vec<String>| {
            if own.is_empty() {
                daemon.clone()
            } else {
                own.clone()
            }
        };
        let resolver = match (&req.network, embedded_dns) {
            (NetMode::Host, _) => container::Resolver::Host,
            (_, Some(server)) => container::Resolver::Embedded(server),
            _ => container::Resolver::Private,
        };
        let files = [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            (
                "resolv.conf",
                container::resolv_conf_with(
                    &host_resolv,
                    &container::DnsSettings {
                        servers: or_default(&req.dns, &self.dns_defaults.servers),
                        search: or_default(&req.dns_search, &self.dns_defaults.search),
                        options: or_default(&req.dns_options, &self.dns_defaults.options),
                    },
                    resolver,
                ),
            ),
        ];
        for (file, content) in files {
            let path = bundle.dir().join(file);
            if let Err(e) = fs::write(&path, content) {
                let _ = self.runtime.remove(&id, true);
                self.release_networks(&id);
                return Err(io_err("write", &path)(e));
            }
        }
        Ok(id)
    }

    /// The containers `req`'s `--link`s name, checked as Docker checks them
    /// (moby `registerLinks`, `setupLinkedContainers`): each must exist and
    /// run, neither side may use the host's network. With `with_env` (the
    /// default bridge) each is looked up for its variables and hosts
    /// entries: its address on the default bridge, exposed ports and
    /// environment.
    fn resolve_links(
        &self,
        req: &RunRequest,
        name: &str,
        with_env: bool,
    ) -> Result<Vec<super::link::LinkedContainer>, ContainersError> {
        const HOST_AND_LINKS: &str = "conflicting options: host type networking can't be used with links. This would result in undefined behavior";
        if req.links.is_empty() {
            return Ok(Vec::new());
        }
        match req.network {
            NetMode::Host => return Err(ContainerError::Conflict(HOST_AND_LINKS.into()).into()),
            NetMode::Container(_) => {
                return Err(ContainerError::Conflict(
                    "conflicting options: container type network can't be used with links. This would result in undefined behavior".into(),
                )
                .into());
            }
            NetMode::None | NetMode::Network(_) => {}
        }
        let mut linked = Vec::new();
        for link in &req.links {
            let target = self.runtime.resolve(&link.name).map_err(|_| {
                ContainersError::Reference(format!(
                    "could not get container for {0}: No such container: {0}",
                    link.name
                ))
            })?;
            let record = self.runtime.record(&target)?;
            if self.runtime.state(&target)?.status != Status::Running {
                return Err(ContainersError::Reference(format!(
                    "Cannot link to a non running container: /{} AS /{name}/{}",
                    record.name, link.alias
                )));
            }
            let theirs = request_of(&record);
            if theirs.network == NetMode::Host {
                return Err(ContainerError::Conflict(HOST_AND_LINKS.into()).into());
            }
            if !with_env {
                continue;
            }
            let addrs: Vec<std::net::IpAddr> = self
                .networks()?
                .endpoints_of(&target)?
                .into_iter()
                .filter(|(n, _)| n.name == "bridge")
                .map(|(_, e)| std::net::IpAddr::V4(e.ip))
                .collect();
            if addrs.is_empty() {
                return Err(ContainersError::Reference(format!(
                    "container {target} not attached to default bridge network"
                )));
            }
            let spec = self.runtime.spec(&target)?;
            let mut exposed = theirs.expose.clone();
            if let Ok(image) = record.image_id.parse::<crate::image::digest::Digest>()
                && let Ok(config) = self.images.config(&image)
            {
                for port in config
                    .config
                    .iter()
                    .flat_map(|c| c.exposed_ports.iter().flatten())
                {
                    if !exposed.contains(port.0) {
                        exposed.push(port.0.clone());
                    }
                }
            }
            // Its configured environment: what the runtime adds is not.
            let env = spec
                .process()
                .as_ref()
                .and_then(|p| p.env().clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|v| !v.starts_with("HOSTNAME=") && !v.starts_with("TERM="))
                .collect();
            linked.push(super::link::LinkedContainer {
                name: record.name.clone(),
                alias: link.alias.clone(),
                hostname: spec.hostname().clone().unwrap_or_default(),
                addrs,
                exposed,
                env,
            });
        }
        Ok(linked)
    }

    /// Copies the image's `layers` into a new temp directory next to the
    /// bundles, for a `vfs` container; returns the directory.
    fn copy_image(&self, image: &str, layers: &[PathBuf]) -> Result<PathBuf, ContainersError> {
        let dir = self
            .containers_dir
            .join(leftovers::temp_name(VFS_TEMP_PREFIX));
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        match layer::flatten(layers, &dir) {
            Ok(stats) => {
                tracing::debug!(
                    image,
                    entries = stats.entries,
                    bytes = stats.bytes,
                    reflinked = stats.reflinked,
                    "image copied for a vfs container"
                );
                Ok(dir)
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                Err(ContainersError::CopyImage {
                    image: image.to_string(),
                    source,
                })
            }
        }
    }

    /// The changes in a container's root against its image, Docker's
    /// `GET /containers/{id}/changes`, for a `vfs` container (an overlay
    /// container's changes are its upper directory). Docker's naive diff:
    /// see [`layer::tree_changes`].
    pub fn vfs_changes(
        &self,
        record: &ContainerRecord,
    ) -> Result<Vec<layer::Change>, ContainersError> {
        let image: crate::image::digest::Digest = record
            .image_id
            .parse()
            .map_err(|_| ContainersError::Reference(format!("bad image id {}", record.image_id)))?;
        let layers = self.images.layers(&image)?;
        Ok(layer::tree_changes(&layers, &record.rootfs.upper).map_err(ImageError::from)?)
    }

    /// The bytes a `vfs` container added or changed (Docker's `SizeRw`):
    /// the regular files among its [`vfs_changes`](Self::vfs_changes); 0 if
    /// they cannot be found.
    pub fn vfs_size_rw(&self, record: &ContainerRecord) -> u64 {
        match self.vfs_changes(record) {
            Ok(changes) => layer::changes_size(&record.rootfs.upper, &changes),
            Err(error) => {
                tracing::debug!(id = %record.id, error = %crate::error_chain(&error), "cannot size the container's changes");
                0
            }
        }
    }

    /// Removes a container; with `volumes`, its anonymous volumes too.
    pub fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<(), ContainersError> {
        let record = self.runtime.record(id)?;
        self.runtime.remove(id, force)?;
        self.release_networks(id);
        if volumes
            && let Some(list) = record
                .extra
                .get("anonymous_volumes")
                .and_then(Value::as_array)
        {
            for v in list.iter().filter_map(Value::as_str) {
                let _ = fs::remove_dir_all(self.volumes.join(v));
            }
        }
        Ok(())
    }

    /// `stack export`: the container's root file system as a tar stream.
    pub fn export(&self, id: &str, out: &mut dyn std::io::Write) -> Result<(), ContainersError> {
        self.runtime.read_rootfs(id, out, |dir, pipe| {
            crate::image::layer::tar_dir(dir, std::io::BufWriter::new(pipe))
                .map(|_| ())
                .map_err(std::io::Error::other)
        })?;
        Ok(())
    }

    /// `stack commit`: a new image from the container's changes.
    pub fn commit(
        &self,
        id: &str,
        reference: Option<&crate::image::reference::Reference>,
        changes: &[crate::image::changes::Change],
        message: Option<&str>,
        author: Option<&str>,
    ) -> Result<crate::image::digest::Digest, ContainersError> {
        let record = self.runtime.record(id)?;
        let spec = self.runtime.spec(id)?;
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
            .join(" ");
        let parent: crate::image::digest::Digest = record
            .image_id
            .parse()
            .map_err(|_| ContainersError::Reference(format!("bad image id {}", record.image_id)))?;
        let created_by = format!("/bin/sh -c #(nop) {args}");
        let options = crate::image::images::CommitOptions {
            changes,
            message,
            author,
            created_by: &created_by,
        };
        Ok(match driver_of(&record) {
            StorageDriver::Overlay => {
                self.images
                    .commit(&parent, &record.rootfs.upper, reference, &options)?
            }
            StorageDriver::Vfs => {
                self.images
                    .commit_tree(&parent, &record.rootfs.upper, reference, &options)?
            }
        })
    }

    /// The health check a container was created with, if any.
    pub fn health_check(&self, id: &str) -> Result<Option<HealthCheck>, ContainersError> {
        let record = self.runtime.record(id)?;
        Ok(record
            .extra
            .get("healthcheck")
            .and_then(|v| serde_json::from_value(v.clone()).ok()))
    }

    /// A container's health as its monitor last wrote it (`None`: it has no
    /// check, or it has not been started with one yet).
    pub fn health(&self, id: &str) -> Option<Health> {
        super::health::read(self.runtime.bundle(id).dir())
    }

    /// Docker-shaped `inspect` output for a container.
    pub fn inspect(&self, id: &str) -> Result<Value, ContainersError> {
        let record = self.runtime.record(id)?;
        let state = self.runtime.state(id)?;
        let spec = self.runtime.spec(id)?;
        let process = spec.process().clone().unwrap_or_default();
        let args = process.args().clone().unwrap_or_default();
        let request = record.extra.get("request").cloned().unwrap_or(Value::Null);
        let bundle = self.runtime.bundle(id);
        let restart: container::RestartPolicy = record
            .extra
            .get("restart")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let driver = driver_of(&record);
        let graph_driver = match driver {
            StorageDriver::Overlay => json!({
                "Name": "overlay",
                "Data": {
                    "LowerDir": record.rootfs.lowers.iter().rev().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":"),
                    "UpperDir": record.rootfs.upper,
                    "WorkDir": record.rootfs.work,
                },
            }),
            StorageDriver::Vfs => json!({
                "Name": "vfs",
                "Data": { "Dir": record.rootfs.upper },
            }),
        };
        let mounts: Vec<Value> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.typ().as_deref() == Some("bind") || m.typ().as_deref() == Some("tmpfs"))
            .filter(|m| !["/dev", "/dev/shm"].contains(&m.destination().to_string_lossy().as_ref()))
            .map(|m| {
                let opts = m.options().clone().unwrap_or_default();
                json!({
                    "Type": m.typ(),
                    "Source": m.source(),
                    "Destination": m.destination(),
                    "RW": !opts.iter().any(|o| o == "ro"),
                })
            })
            .collect();
        let mut state_json = json!({
            "Status": state.status.to_string(),
            "Running": matches!(state.status, Status::Running | Status::Paused),
            "Paused": state.status == Status::Paused,
            "OOMKilled": state.oom_killed,
            "Dead": false,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": state.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        });
        // Docker shows State.Health only for containers with a check.
        if record.extra.contains_key("healthcheck")
            && let Some(health) = self.health(id)
        {
            state_json["Health"] = json!(health);
        }
        let mut out = json!({
            "Id": record.id,
            "Created": record.created,
            "Path": args.first(),
            "Args": args.get(1..).unwrap_or_default(),
            "State": state_json,
            "Image": record.image_id,
            "ResolvConfPath": bundle.dir().join("resolv.conf"),
            "HostnamePath": bundle.dir().join("hostname"),
            "HostsPath": bundle.dir().join("hosts"),
            "LogPath": bundle.dir().join(format!("{}-json.log", record.id)),
            "Name": format!("/{}", record.name),
            "RestartCount": state.start_count.saturating_sub(1),
            "Driver": driver.name(),
            "Mounts": mounts,
            "Config": {
                "Hostname": spec.hostname(),
                "Domainname": spec.domainname().clone().unwrap_or_default(),
                "User": record.user.clone().unwrap_or_default(),
                "Tty": process.terminal().unwrap_or(false),
                "OpenStdin": record.stdin_open,
                "Env": process.env(),
                "Cmd": request.get("cmd"),
                "Image": record.image,
                "WorkingDir": process.cwd(),
                "Entrypoint": request.get("entrypoint"),
                "Labels": record.labels,
                "StopSignal": record.stop_signal,
                "StopTimeout": record.stop_timeout,
            },
            "HostConfig": {
                "AutoRemove": record.auto_remove,
                "RestartPolicy": {
                    "Name": restart.name,
                    "MaximumRetryCount": restart.maximum_retry_count,
                },
                "Init": record.init,
                "Privileged": request.get("privileged"),
                "ReadonlyRootfs": request.get("read_only"),
                "CapAdd": request.get("cap_add"),
                "CapDrop": request.get("cap_drop"),
                "NetworkMode": request_of(&record).network.docker_name(),
                "Links": docker_links(&record),
                "Dns": request.get("dns"),
                "DnsSearch": request.get("dns_search"),
                "DnsOptions": request.get("dns_options").cloned().unwrap_or(json!([])),
                "PortBindings": request_of(&record).port_bindings,
                "PublishAllPorts": request_of(&record).publish_all,
                "Resources": request.get("resources"),
                "LogConfig": {"Type": "json-file", "Config": {
                    "max-size": record.log_max_size.to_string(),
                    "max-file": record.log_max_files.to_string(),
                }},
            },
            "GraphDriver": graph_driver,
            "NetworkSettings": self.network_settings(&record),
        });
        if let Some(check) = record.extra.get("healthcheck") {
            out["Config"]["Healthcheck"] = check.clone();
        }
        // Docker's `Config.ExposedPorts`: `{"80/tcp": {}}`.
        if let Some(ports) = record
            .extra
            .get(super::ports::PORTS_KEY)
            .and_then(Value::as_object)
        {
            let exposed: serde_json::Map<String, Value> =
                ports.keys().map(|k| (k.clone(), json!({}))).collect();
            out["Config"]["ExposedPorts"] = Value::Object(exposed);
        }
        Ok(out)
    }
}

/// Docker's `HostConfig.Links` of a container: `/TARGET:/NAME/ALIAS` per
/// `--link`, or null.
fn docker_links(record: &ContainerRecord) -> Value {
    let links = request_of(record).links;
    if links.is_empty() {
        return Value::Null;
    }
    json!(
        links
            .iter()
            .map(|l| format!("/{}:/{}/{}", l.name, record.name, l.alias))
            .collect::<Vec<_>>()
    )
}

/// The request a container was created from (defaults for old records).
pub fn request_of(record: &ContainerRecord) -> RunRequest {
    record
        .extra
        .get("request")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

impl Containers {
    /// Docker's `NetworkSettings` of a container: per network its address,
    /// gateway, MAC and ids; the top-level fields are the default bridge
    /// network's, as in Docker.
    pub fn network_settings(&self, record: &ContainerRecord) -> Value {
        let mode = request_of(record).network;
        let endpoints = self
            .networks
            .as_ref()
            .and_then(|n| n.endpoints_of(&record.id).ok())
            .unwrap_or_default();
        let mut networks = serde_json::Map::new();
        let mut top = json!({
            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        });
        for (n, e) in &endpoints {
            let prefix = n.subnet.map_or(0, |s| s.prefix_len());
            let gateway = if n.internal {
                String::new()
            } else {
                n.gateway.map(|g| g.to_string()).unwrap_or_default()
            };
            let pool6 = n.pool6();
            let prefix6 = pool6.map_or(0, |p| p.subnet.prefix_len());
            let gateway6 = match pool6 {
                Some(p) if !n.internal && e.ip6.is_some() => p.gateway.to_string(),
                _ => String::new(),
            };
            let ip6 = e.ip6.map(|ip| ip.to_string()).unwrap_or_default();
            let mut ipam_config = serde_json::Map::new();
            if e.static_ip {
                ipam_config.insert("IPv4Address".into(), json!(e.ip.to_string()));
            }
            if e.static_ip6 {
                ipam_config.insert("IPv6Address".into(), json!(ip6));
            }
            let mut dns_names = vec![record.name.clone(), record.id[..12].to_string()];
            dns_names.extend(e.aliases.iter().cloned());
            let links: Vec<String> = if n.name == "bridge" {
                Vec::new()
            } else {
                request_of(record)
                    .links
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            };
            let entry = json!({
                "IPAMConfig": if ipam_config.is_empty() { Value::Null } else { Value::Object(ipam_config) },
                "Links": if links.is_empty() { Value::Null } else { json!(links) },
                "Aliases": if e.aliases.is_empty() { Value::Null } else { json!(e.aliases) },
                "MacAddress": e.mac,
                "NetworkID": n.id,
                "EndpointID": e.endpoint_id,
                "Gateway": gateway,
                "IPAddress": e.ip.to_string(),
                "IPPrefixLen": prefix,
                "IPv6Gateway": gateway6,
                "GlobalIPv6Address": ip6,
                "GlobalIPv6PrefixLen": if e.ip6.is_some() { prefix6 } else { 0 },
                "DNSNames": if n.name == "bridge" { Value::Null } else { json!(dns_names) },
            });
            if n.name == "bridge" {
                top = json!({
                    "Gateway": gateway,
                    "IPAddress": e.ip.to_string(),
                    "IPPrefixLen": prefix,
                    "MacAddress": e.mac,
                    "IPv6Gateway": gateway6,
                    "GlobalIPv6Address": ip6,
                    "GlobalIPv6PrefixLen": if e.ip6.is_some() { prefix6 } else { 0 },
                });
            }
            networks.insert(n.name.clone(), entry);
        }
        if endpoints.is_empty()
            && let NetMode::Host | NetMode::None = mode
        {
            let name = mode.docker_name();
            let id = self
                .networks
                .as_ref()
                .and_then(|n| n.find(&name).ok())
                .map(|n| n.id)
                .unwrap_or_default();
            networks.insert(
                name,
                json!({
                    "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "",
                    "NetworkID": id, "EndpointID": "", "Gateway": "", "IPAddress": "",
                    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                    "GlobalIPv6PrefixLen": 0, "DNSNames": null,
                }),
            );
        }
        let sandbox = match &self.networks {
            Some(n) if matches!(mode, NetMode::Network(_)) => {
                n.netns_path(&record.id).to_string_lossy().into_owned()
            }
            _ => String::new(),
        };
        json!({
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": sandbox,
            "Ports": record.extra.get(super::ports::PORTS_KEY).cloned().unwrap_or_else(|| json!({})),
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": null,
            "SecondaryIPv6Addresses": null,
            "EndpointID": endpoints.iter().find(|(n, _)| n.name == "bridge").map(|(_, e)| e.endpoint_id.clone()).unwrap_or_default(),
            "Gateway": top["Gateway"],
            "GlobalIPv6Address": top["GlobalIPv6Address"],
            "GlobalIPv6PrefixLen": top["GlobalIPv6PrefixLen"],
            "IPAddress": top["IPAddress"],
            "IPPrefixLen": top["IPPrefixLen"],
            "IPv6Gateway": top["IPv6Gateway"],
            "MacAddress": top["MacAddress"],
            "Networks": networks,
        })
    }
}

/// Refuses mounts this runtime cannot make as asked, before anything is
/// created: a required bind source that is missing, volume drivers and
/// driver options (only local directories exist), a volume subpath that
/// leaves the volume, and recursively read-only binds (the init makes the
/// top mount read-only only).
fn check_mounts(mounts: &[crate::spec::mount::MountSpec]) -> Result<(), ContainersError> {
    use crate::spec::mount::BindRecursive;
    for m in mounts {
        let unsupported = |option: String| ContainersError::MountOption {
            target: m.target.clone(),
            option,
        };
        match m.kind {
            MountKind::Bind => {
                let source = m.source.as_deref().unwrap_or_default();
                if m.require_source && fs::symlink_metadata(source).is_err() {
                    return Err(ContainersError::BindSourceMissing {
                        path: PathBuf::from(source),
                    });
                }
                if m.bind_recursive == BindRecursive::Readonly {
                    return Err(unsupported("bind-recursive=readonly".into()));
                }
            }
            MountKind::Volume => {
                if let Some(driver) = m.volume_driver.as_deref().filter(|d| *d != "local") {
                    return Err(unsupported(format!("volume-driver={driver}")));
                }
                if let Some((k, v)) = m.volume_options.iter().next() {
                    return Err(unsupported(format!("volume-opt={k}={v}")));
                }
                if let Some(sub) = &m.volume_subpath
                    && (sub.starts_with('/')
                        || Path::new(sub)
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir)))
                {
                    return Err(unsupported(format!(
                        "volume-subpath={sub} (must be a relative path inside the volume)"
                    )));
                }
            }
            MountKind::Tmpfs => {}
        }
    }
    Ok(())
}

/// Which container uses an image: what keeps `rmi` and `image prune` from
/// removing an image a container still runs from.
#[derive(Debug)]
pub struct ContainerUsage {
    users: Vec<(String, String)>,
}

impl ContainerUsage {
    /// The containers of a state root, read once.
    pub fn of(root: &Path) -> Result<Self, ContainersError> {
        let exe = std::env::current_exe()
            .map_err(io_err("find this program", Path::new("/proc/self/exe")))?;
        let runtime = Runtime::open(root, &crate::runtime::default_run_dir(root), exe)?;
        Self::of_runtime(&runtime)
    }

    /// The containers `runtime` has, read once.
    pub fn of_runtime(runtime: &Runtime) -> Result<Self, ContainersError> {
        let users = runtime
            .list()?
            .into_iter()
            .map(|(record, _)| (record.image_id, record.id))
            .collect();
        Ok(Self { users })
    }
}

impl crate::image::images::UsageCheck for ContainerUsage {
    fn user_of(&self, id: &crate::image::digest::Digest) -> Option<String> {
        let id = id.to_string();
        self.users
            .iter()
            .find(|(image, _)| *image == id)
            .map(|(_, container)| container[..12].to_string())
    }
}

/// The OCI seccomp of a container with these capabilities: Docker's default
/// profile, a profile file, or none.
fn seccomp_for(
    choice: &SeccompChoice,
    caps: &oci_spec::runtime::Capabilities,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, ContainersError> {
    let profile = match choice {
        SeccompChoice::Unconfined => return Ok(None),
        SeccompChoice::Default => seccomp::default_profile(),
        SeccompChoice::File(path) => seccomp::load_profile(path)?,
    };
    let arch = seccomp::HOST_ARCH.ok_or(ContainersError::SeccompArch(std::env::consts::ARCH))?;
    let kernel = seccomp::read_kernel_version(Path::new(seccomp::OSRELEASE_PATH))?;
    let caps: Vec<caps::Capability> = caps
        .iter()
        .filter_map(|c| format!("CAP_{c}").parse().ok())
        .collect();
    Ok(Some(seccomp::resolve(&profile, &caps, arch, kernel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_avoid_taken_ones() {
        let id = "0123456789ab".repeat(6);
        let first = generate_name(&id, |_| false);
        assert!(first.contains('_'));
        let second = generate_name(&id, |n| n == first);
        assert_eq!(second, format!("{first}2"));
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(is_valid_name("web-1.a_b"));
        assert!(!is_valid_name("-web"));
        assert!(!is_valid_name("a"));
        assert!(!is_valid_name("a/b"));
    }
}
