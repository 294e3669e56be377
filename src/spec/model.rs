//! The typed stack model: what a stack file declares, after parsing,
//! interpolation and decoding, whichever syntax it was written in.
//!
//! Serializing the model gives the canonical form of the TOML syntax (every key
//! spelled as in the README), which the decoder reads back to an equal model.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::device::DeviceMapping;
use super::diag::Origin;
use super::duration::DurationSpec;
use super::extra_host::ExtraHost;
use super::mount::MountSpec;
use super::port::{PortRange, PortSpec, Protocol};
use super::restart::RestartPolicyName;
use super::size::ByteSize;
use super::ulimit::Ulimit;

/// A value with the place in a stack file it came from. Equality and
/// serialization look at the value only, so the same stack written in KDL and in
/// TOML compares equal.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub origin: Origin,
}

impl<T> Located<T> {
    /// Wraps `value` with its origin.
    pub fn new(value: T, origin: Origin) -> Self {
        Self { value, origin }
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Where a service, network or volume is declared. It never makes two specs
/// different: the same stack written in two files compares equal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Declared(pub Origin);

impl Eq for Declared {}

impl PartialEq for Declared {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A whole stack: services, networks and volumes.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StackSpec {
    /// The stack's name (defaults to the project directory's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Services by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Networks by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Named volumes by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// The interpolation variables it was loaded with (the caller's
    /// environment, then `.env` or `--env-file`s): services' env files
    /// read `${VAR}` from them too, never from the process that resolves
    /// the stack (the daemon's own environment).
    #[serde(skip)]
    pub variables: BTreeMap<String, String>,
}

/// One service: a container template, run `replicas` times.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceSpec {
    /// Where the service is declared (its name).
    #[serde(skip)]
    pub origin: Declared,
    /// Image reference to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How to build the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// Replaces the image's CMD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables (after interpolation).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Env files, resolved against the stack file's directory, read in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<Located<PathBuf>>,
    /// Published ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Located<PortSpec>>,
    /// Ports exposed to linked containers without publishing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<ExposeSpec>,
    /// Bind, named and tmpfs mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Located<MountSpec>>,
    /// Services (or containers) whose volumes are mounted too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<Located<VolumesFrom>>,
    /// Networks joined, with aliases and static addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Located<ServiceNetwork>>,
    /// bridge, host, none, container:NAME or service:NAME.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<Located<NetworkMode>>,
    /// Legacy links: the service's name (or alias) resolves to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Located<Link>>,
    /// Services that must be started (healthy, completed) first.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_depends_on"
    )]
    pub depends_on: Vec<Located<Dependency>>,
    /// What to do when the container exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartSpec>,
    /// The health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// How its containers are replaced (`update { order … }`).
    #[serde(
        rename = "update",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_update"
    )]
    pub update_order: Option<UpdateOrder>,
    /// Resource limits.
    #[serde(skip_serializing_if = "LimitsSpec::is_empty")]
    pub limits: LimitsSpec,
    /// User (name or uid, optionally `:group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Host name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// NIS domain name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Extra `/etc/hosts` lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// Capabilities added to the default set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Every capability, every device, no seccomp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Read-only root file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Security options (`seccomp=…`, `no-new-privileges`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Namespaced kernel parameters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Signal that asks the container to stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<DurationSpec>,
    /// Container labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How many containers run this service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Run a tiny init as pid 1 that reaps zombies and forwards signals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Allocate a terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Keep stdin open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    /// Log rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// The service only runs when one of these profiles is active.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
}

/// How to build a service's image.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BuildSpec {
    /// The build context directory, resolved against the stack file.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<PathBuf>,
    /// Build arguments.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The stage to build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Ignore the layer cache.
    #[serde(skip_serializing_if = "is_false")]
    pub no_cache: bool,
}

/// A port exposed without publishing: one port or a range, with a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExposeSpec {
    /// The ports.
    pub ports: PortRange,
    /// The protocol.
    pub protocol: Protocol,
}

impl std::fmt::Display for ExposeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ports, self.protocol)
    }
}

impl Serialize for ExposeSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Where `volumes-from` takes volumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumesFrom {
    /// A service of this stack, or an existing container.
    pub source: VolumesFromSource,
    /// Mount them read-only.
    pub read_only: bool,
}

/// The source of a `volumes-from` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumesFromSource {
    /// A service of this stack.
    Service(String),
    /// An existing container, by name or id.
    Container(String),
}

impl std::fmt::Display for VolumesFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            VolumesFromSource::Service(s) => f.write_str(s)?,
            VolumesFromSource::Container(c) => write!(f, "container:{c}")?,
        }
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Serialize for VolumesFrom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A network a service joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceNetwork {
    /// The network's name in this stack.
    pub name: String,
    /// Extra names the service answers to on that network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A static IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
    /// A static IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
}

/// A container's network mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// The stack's networks (the default).
    Bridge,
    /// The host's network namespace.
    Host,
    /// Only a loopback interface.
    None,
    /// Another container's network namespace.
    Container(String),
    /// The network namespace of a service of this stack.
    Service(String),
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bridge => f.write_str("bridge"),
            Self::Host => f.write_str("host"),
            Self::None => f.write_str("none"),
            Self::Container(c) => write!(f, "container:{c}"),
            Self::Service(s) => write!(f, "service:{s}"),
        }
    }
}

impl Serialize for NetworkMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A legacy link to another service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The service linked to.
    pub service: String,
    /// The name it is known by, if not its own.
    pub alias: Option<String>,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.alias {
            Some(alias) => write!(f, "{}:{alias}", self.service),
            None => f.write_str(&self.service),
        }
    }
}

impl Serialize for Link {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a dependency must reach before the dependent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The dependency's container is running.
    #[default]
    Started,
    /// Its health check passes.
    Healthy,
    /// It ran to completion with exit code 0.
    Completed,
}

/// One `depends-on` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Dependency {
    /// The service depended on.
    #[serde(skip)]
    pub service: String,
    /// What it must reach.
    pub condition: Condition,
    /// Restart this service when the dependency restarts.
    #[serde(skip_serializing_if = "is_false")]
    pub restart_dependents: bool,
}

fn ser_depends_on<S: Serializer>(
    deps: &[Located<Dependency>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(deps.iter().map(|d| (&d.service, &d.value)))
}

/// The restart policy with its backoff and start limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RestartSpec {
    /// no, always, on-failure or unless-stopped.
    #[serde(serialize_with = "ser_policy")]
    pub policy: RestartPolicyName,
    /// With on-failure: give up after this many restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Delay between restarts.
    #[serde(skip_serializing_if = "BackoffSpec::is_empty")]
    pub backoff: BackoffSpec,
    /// Give up after `burst` starts within `interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_limit: Option<StartLimit>,
}

fn ser_policy<S: Serializer>(policy: &RestartPolicyName, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(restart_policy_str(*policy))
}

/// The spelling of a restart policy in stack files.
pub fn restart_policy_str(policy: RestartPolicyName) -> &'static str {
    match policy {
        RestartPolicyName::No => "no",
        RestartPolicyName::Always => "always",
        RestartPolicyName::OnFailure => "on-failure",
        RestartPolicyName::UnlessStopped => "unless-stopped",
    }
}

/// Exponential backoff between restarts; unset fields take the supervisor's
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackoffSpec {
    /// First delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<DurationSpec>,
    /// Largest delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<DurationSpec>,
    /// Growth factor per failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// A run this long resets the delay to `min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_after: Option<DurationSpec>,
}

impl BackoffSpec {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A start limit: more than `burst` starts within `interval` marks the service
/// failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StartLimit {
    /// Starts allowed within the interval.
    pub burst: u32,
    /// The window.
    pub interval: DurationSpec,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct HealthSpec {
    /// The probe.
    pub command: HealthCommand,
    /// Time between probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    /// A probe taking longer fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Consecutive failures that make the container unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Failures during this time after start do not count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<DurationSpec>,
    /// What to do when the container becomes unhealthy.
    #[serde(skip_serializing_if = "OnUnhealthy::is_none")]
    pub on_unhealthy: OnUnhealthy,
}

/// The probe of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCommand {
    /// A string run by `/bin/sh -c`.
    Shell(String),
    /// A program and its arguments, run directly.
    Exec(Vec<String>),
    /// The image's health check is disabled.
    Disabled,
}

impl Serialize for HealthCommand {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Shell(s) => serializer.serialize_str(s),
            Self::Exec(argv) => argv.serialize(serializer),
            Self::Disabled => serializer.serialize_str("none"),
        }
    }
}

/// `update { order "…" }`, as the stack file spells it.
fn ser_update<S: Serializer>(
    order: &Option<UpdateOrder>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry("order", order)?;
    map.end()
}

/// How a service's container is replaced when it is recreated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The old one stops, then the new one starts (Compose's way).
    #[default]
    StopFirst,
    /// The new one starts, is waited for (healthy, when it has a check),
    /// then the old one stops; one that never gets ready leaves the old
    /// one running.
    StartFirst,
}

/// What the supervisor does with an unhealthy container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnhealthy {
    /// Report it only (Docker's behaviour).
    #[default]
    None,
    /// Restart it through the restart backoff.
    Restart,
    /// Stop it.
    Stop,
}

impl OnUnhealthy {
    fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// Memory swap limit: bytes, or unlimited (`-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapLimit {
    /// Memory plus swap, in bytes.
    Bytes(ByteSize),
    /// No limit on swap.
    Unlimited,
}

impl Serialize for SwapLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bytes(b) => b.serialize(serializer),
            Self::Unlimited => serializer.serialize_i64(-1),
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LimitsSpec {
    /// Memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Memory plus swap limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<SwapLimit>,
    /// Soft memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<ByteSize>,
    /// CPU quota in CPUs (1.5 = one and a half cores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Relative CPU weight (Docker's 2..262144 shares).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (`0-3,5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Maximum number of processes (`-1` = unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Block IO weight, 10..1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// Size of /dev/shm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// Resource limits of the process (`nofile`, `nproc`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// OOM killer preference, -1000..1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// Host devices made available.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
}

impl LimitsSpec {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Log rotation of a service's container logs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LoggingSpec {
    /// Rotate when the log reaches this size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Keep this many rotated files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

/// A network of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NetworkSpec {
    /// Where the network is declared.
    #[serde(skip)]
    pub origin: Declared,
    /// A bridge of our own, or an existing host bridge.
    pub driver: NetworkDriver,
    /// The subnet (chosen automatically when absent on a bridge network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    /// The gateway address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Dynamic addresses come from this part of the subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
    /// No route out (no NAT).
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Also give containers IPv6 addresses.
    #[serde(skip_serializing_if = "is_false")]
    pub ipv6: bool,
    /// The IPv6 subnet (with `ipv6`; chosen automatically when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<IpNet>,
    /// The IPv6 gateway address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<IpAddr>,
    /// The Linux bridge's name (bridge driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The existing host bridge to attach to (host-bridge driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// 802.1Q VLAN id on the parent (host-bridge driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The network exists already and is not managed by the stack.
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// How a network is realised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkDriver {
    /// A bridge created and owned by stack, with NAT.
    #[default]
    Bridge,
    /// An existing host bridge; containers get static addresses on it.
    HostBridge,
}

/// A named volume of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VolumeSpec {
    /// Where the volume is declared.
    #[serde(skip)]
    pub origin: Declared,
    /// Volume driver: only `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options (`type`, `device`, `o` for the local driver).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The volume exists already and is not managed by the stack.
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
}

/// An IP network (address and prefix length), IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    /// The network address as written.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl IpNet {
    /// True when `ip` is inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// True when the two networks share an address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        let narrow = if self.prefix >= other.prefix {
            self
        } else {
            other
        };
        let wide = if self.prefix >= other.prefix {
            other
        } else {
            self
        };
        wide.contains(narrow.addr)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid subnet {s:?}: expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid subnet {s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid subnet {s:?}: prefix must be 0..={max}"))?;
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_detect_overlap() {
        let a: IpNet = "10.88.0.0/16".parse().unwrap();
        let b: IpNet = "10.88.1.0/24".parse().unwrap();
        let c: IpNet = "10.89.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains("10.88.200.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("fd00::/8".parse::<IpNet>().is_ok());
    }

    #[test]
    fn located_values_compare_by_value_only() {
        let a = Located::new(1, Origin::default());
        let mut origin = Origin::default();
        origin.span.offset = 40;
        assert_eq!(a, Located::new(1, origin));
    }
}
