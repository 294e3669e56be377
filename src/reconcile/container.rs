//! From "what the user asked for" to "what the runtime executes": a
//! [`RunRequest`] (the flags of `docker run`, or a stack service) and the
//! image's config become the container's OCI runtime spec and record, with
//! Docker's defaults: its capability set, masked and read-only `/proc` paths,
//! mounts, device rules, seccomp profile, and its rules for merging
//! ENTRYPOINT/CMD and environment.
//!
//! Pure: no I/O except what the caller passes in. The facade in
//! [`super::containers`] does the side effects.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBlockIoBuilder, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder,
    PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

use super::link::{LinkSpec, LinkedContainer, link_hosts_entries};
use crate::image::oci::RunConfig;
use crate::spec::device::DeviceMapping;
use crate::spec::extra_host::{ExtraHost, HostIp};
use crate::spec::mount::{MountKind, MountSpec};
use crate::spec::restart::RestartPolicyName;
use crate::spec::ulimit::Ulimit;

/// Paths hidden from containers (moby `oci/defaults.go`).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containers may read but not write (moby `oci/defaults.go`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How the container is networked.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Only a loopback interface.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Another container's network namespace (its name or id, or a
    /// `/proc/PID/ns/net` path).
    Container(String),
    /// A bridge network, by name or id (`bridge` is the default one): a
    /// namespace of its own with an interface on the network.
    Network(String),
}

impl NetMode {
    /// Docker's `HostConfig.NetworkMode`: `bridge`, `host`, `none`,
    /// `container:ID` or the network's name.
    pub fn docker_name(&self) -> String {
        match self {
            NetMode::None => "none".into(),
            NetMode::Host => "host".into(),
            NetMode::Container(c) => format!("container:{c}"),
            NetMode::Network(n) => n.clone(),
        }
    }
}

/// Seccomp choice (`--security-opt seccomp=…`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SeccompChoice {
    /// Docker's default profile.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile file (Docker's JSON format).
    File(PathBuf),
}

/// Resource limits (`-m`, `--cpus`, …). `None` is "not set".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap in bytes (`-1` unlimited swap).
    pub memory_swap: Option<i64>,
    /// Soft limit in bytes.
    pub memory_reservation: Option<i64>,
    /// CPU shares (relative weight).
    pub cpu_shares: Option<u64>,
    /// CPUs as a fraction (`--cpus 1.5`).
    pub cpus: Option<f64>,
    /// CFS period in µs.
    pub cpu_period: Option<u64>,
    /// CFS quota in µs.
    pub cpu_quota: Option<i64>,
    /// CPUs allowed (`0-2,4`).
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    pub cpuset_mems: Option<String>,
    /// Largest number of processes.
    pub pids_limit: Option<i64>,
    /// Block IO weight, 10–1000.
    pub blkio_weight: Option<u16>,
    /// Disable the OOM killer.
    pub oom_kill_disable: bool,
}

/// What `docker run` asks for, resolved (paths absolute, values parsed).
/// Every field has a default, so an API request names only what it sets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRequest {
    /// The image as named.
    pub image: String,
    /// The container name; generated when `None`.
    pub name: Option<String>,
    /// `--entrypoint` (an empty list resets it).
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the image.
    pub cmd: Vec<String>,
    /// `-e KEY=value` (and `KEY` alone, taken from `host_env`).
    pub env: Vec<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--group-add`.
    pub group_add: Vec<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--domainname`.
    pub domainname: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub stdin_open: bool,
    /// `--init`.
    pub init: bool,
    /// `--read-only`.
    pub read_only: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--security-opt seccomp=…`.
    pub seccomp: SeccompChoice,
    /// `--security-opt no-new-privileges[=true]`.
    pub no_new_privileges: bool,
    /// `--ulimit`.
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl`.
    pub sysctls: BTreeMap<String, String>,
    /// `--oom-score-adj`.
    pub oom_score_adj: Option<i32>,
    /// Limits.
    pub resources: Resources,
    /// `-v`, `--mount`, `--tmpfs`.
    pub mounts: Vec<MountSpec>,
    /// `--volumes-from CONTAINER[:ro|:rw]`.
    pub volumes_from: Vec<String>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--network`.
    pub network: NetMode,
    /// `--ip`: the address on the network `network` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// `--ip6`: the IPv6 address on the network `network` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// `--network-alias`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_aliases: Vec<String>,
    /// `--mac-address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// `--userns`-style remapping: container uid 0 is host uid `.0`, for `.1` ids.
    pub userns: Option<(u32, u32)>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` in seconds.
    pub stop_timeout: Option<u32>,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--log-opt max-size` in bytes.
    pub log_max_size: Option<u64>,
    /// `--log-opt max-file`.
    pub log_max_files: Option<u32>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--device`.
    pub devices: Vec<DeviceMapping>,
    /// `--dns`.
    pub dns: Vec<String>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `--link NAME[:ALIAS]`: each entry as Docker's `HostConfig.Links`
    /// (`NAME:ALIAS`, or inspect's `/NAME:/CONTAINER/ALIAS`); `Links` is
    /// accepted as the key too.
    #[serde(default, alias = "Links", skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkSpec>,
    /// `--add-host`.
    pub extra_hosts: Vec<ExtraHost>,
    /// `--runtime`: an external OCI runtime instead of the built-in one.
    pub runtime: Option<String>,
    /// `--expose` (and the image's EXPOSE), kept for `inspect` and `-P`.
    pub expose: Vec<String>,
    /// `-p`: Docker's `HostConfig.PortBindings`, `"80/tcp"` to the host
    /// addresses and ports to publish it on.
    #[serde(
        rename = "PortBindings",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_bindings: BTreeMap<String, Vec<super::verbs::PortBinding>>,
    /// `-P`: Docker's `HostConfig.PublishAllPorts`, every exposed port on
    /// a free host port.
    #[serde(
        rename = "PublishAllPorts",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub publish_all: bool,
    /// `--restart`: what the daemon's supervisor does when it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// `--health-*`, `--no-healthcheck`: merged over the image's check.
    #[serde(
        default,
        skip_serializing_if = "super::health::HealthRequest::is_empty"
    )]
    pub health: super::health::HealthRequest,
}

/// A restart policy as the container record keeps it
/// (`record.extra["restart"]`), for the daemon's supervisor to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// `no`, `always`, `on-failure` or `unless-stopped`.
    pub name: RestartPolicyName,
    /// For `on-failure`: how many restarts at most; 0 is no limit.
    #[serde(default)]
    pub maximum_retry_count: u32,
}

/// Where things are, for one container, decided by the caller.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// The bundle directory (hostname, hosts and resolv.conf files live there).
    pub bundle: PathBuf,
    /// The image's layer directories, base first.
    pub layers: Vec<PathBuf>,
    /// The image id.
    pub image_id: String,
    /// Mount sources for named and anonymous volumes, by mount target, already
    /// created (and seeded) by the caller.
    pub volume_dirs: BTreeMap<String, PathBuf>,
    /// Mounts inherited with `--volumes-from`.
    pub inherited_mounts: Vec<Mount>,
    /// The seccomp profile to use, already resolved for the container's
    /// capabilities by the caller (`None`: unconfined).
    pub seccomp: Option<LinuxSeccomp>,
    /// The creation time.
    pub created: String,
    /// The network namespace to join (`--network NETWORK` or
    /// `container:NAME`), by path.
    pub netns: Option<PathBuf>,
    /// The legacy links' environment variables
    /// ([`super::link::link_env`]), looked up by the caller.
    pub link_env: Vec<String>,
}

/// Why a request cannot become a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A capability name Docker would not accept.
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    /// A setting the OCI spec builders refused.
    #[error("invalid container configuration")]
    Spec(#[from] oci_spec::OciSpecError),
    /// Neither the image nor the request names a program.
    #[error("no command specified")]
    NoCommand,
    /// A combination that cannot work.
    #[error("{0}")]
    Conflict(String),
}

/// Parses a capability as Docker accepts it: `NET_ADMIN`, `CAP_NET_ADMIN`,
/// any case, or `ALL`.
pub fn parse_capability(name: &str) -> Result<Option<Capability>, ContainerError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(None);
    }
    bare.parse::<Capability>()
        .map(Some)
        .map_err(|_| ContainerError::UnknownCapability(name.to_string()))
}

/// The effective capability set: Docker's defaults (or all, privileged) with
/// `--cap-add` and `--cap-drop` applied in Docker's order (drop ALL first,
/// then adds, then drops).
pub fn capabilities(req: &RunRequest) -> Result<Capabilities, ContainerError> {
    let all = crate::runtime::all_capabilities();
    if req.privileged {
        return Ok(all);
    }
    let mut set: Capabilities = crate::runtime::DEFAULT_CAPABILITIES
        .into_iter()
        .filter_map(crate::runtime::oci_capability)
        .collect();
    let drops: Vec<Option<Capability>> = req
        .cap_drop
        .iter()
        .map(|c| parse_capability(c))
        .collect::<Result<_, _>>()?;
    let adds: Vec<Option<Capability>> = req
        .cap_add
        .iter()
        .map(|c| parse_capability(c))
        .collect::<Result<_, _>>()?;
    if drops.contains(&None) {
        set.clear();
    }
    for add in &adds {
        match add {
            None => set.extend(all.iter().copied()),
            Some(c) => {
                set.insert(*c);
            }
        }
    }
    for drop in drops.iter().flatten() {
        if !adds.contains(&Some(*drop)) {
            set.remove(drop);
        }
    }
    Ok(set)
}

/// Docker's ENTRYPOINT/CMD merge: `--entrypoint` replaces the image's and
/// discards its CMD; arguments replace CMD.
pub fn command_line(req: &RunRequest, image: &RunConfig) -> Vec<String> {
    let (entrypoint, default_cmd) = match &req.entrypoint {
        Some(ep) => (ep.clone(), Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if req.cmd.is_empty() {
        default_cmd
    } else {
        req.cmd.clone()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: `PATH` default, `HOSTNAME`, `TERM` with a terminal, the
/// image's, then the request's (later wins per key).
pub fn environment(req: &RunRequest, image: &RunConfig, hostname: &str) -> Vec<String> {
    environment_with_links(req, image, hostname, &[])
}

/// [`environment`] with the links' variables ([`super::link::link_env`])
/// after `TERM` and before the image's and the request's, which win per key
/// (moby `container.CreateDaemonEnvironment`).
pub fn environment_with_links(
    req: &RunRequest,
    image: &RunConfig,
    hostname: &str,
    link_env: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |var: String| {
        let key = var.split('=').next().unwrap_or("").to_string();
        out.retain(|e| e.split('=').next() != Some(key.as_str()));
        out.push(var);
    };
    set(format!("PATH={}", crate::runtime::DEFAULT_PATH));
    set(format!("HOSTNAME={hostname}"));
    if req.tty {
        set("TERM=xterm".into());
    }
    for var in link_env {
        set(var.clone());
    }
    for var in image.env.iter().flatten() {
        set(var.clone());
    }
    for var in &req.env {
        set(var.clone());
    }
    out
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, ContainerError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind(
    dest: &str,
    source: &Path,
    read_only: bool,
    propagation: &str,
) -> Result<Mount, ContainerError> {
    bind_with(dest, source, read_only, propagation, true)
}

/// A bind mount; `recursive` binds the mounts below `source` too (`rbind`).
fn bind_with(
    dest: &str,
    source: &Path,
    read_only: bool,
    propagation: &str,
    recursive: bool,
) -> Result<Mount, ContainerError> {
    let kind = if recursive { "rbind" } else { "bind" };
    let mut options = vec![kind.to_string(), propagation.to_string()];
    if read_only {
        options.push("ro".into());
    }
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options)
        .build()?)
}

/// The `/etc/hosts` of a container, for callers without networks or links:
/// `host-gateway` is 127.0.0.1 (the host's own namespace).
pub fn hosts_file(hostname: &str, extra: &[ExtraHost], own_ip: Option<&str>) -> String {
    let own: Vec<IpAddr> = own_ip.and_then(|ip| ip.parse().ok()).into_iter().collect();
    let hosts = Hosts {
        hostname,
        domainname: None,
        own_addrs: &own,
        extra,
        host_gateway: Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        links: &[],
    };
    hosts_file_with(&hosts).expect("host-gateway has an address here")
}

/// What a container's `/etc/hosts` is made of.
#[derive(Debug, Clone, Copy)]
pub struct Hosts<'a> {
    /// The container's host name.
    pub hostname: &'a str,
    /// `--domainname`.
    pub domainname: Option<&'a str>,
    /// The container's own addresses (none without a network).
    pub own_addrs: &'a [IpAddr],
    /// `--add-host` entries.
    pub extra: &'a [ExtraHost],
    /// What `host-gateway` stands for: the gateway of the container's network.
    pub host_gateway: Option<IpAddr>,
    /// Legacy links, looked up by the caller.
    pub links: &'a [LinkedContainer],
}

/// The `/etc/hosts` of a container in Docker's layout (libnetwork
/// `etchosts`): the default entries, `--add-host` entries, link entries
/// (`IP\tALIAS HOSTNAME NAME`), then the container's own addresses with its
/// name (`FQDN HOSTNAME` when it has a domain). Fails for `host-gateway`
/// without a gateway, with Docker's message.
pub fn hosts_file_with(hosts: &Hosts<'_>) -> Result<String, ContainerError> {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for h in hosts.extra {
        let ip = match &h.ip {
            HostIp::Addr(ip) => *ip,
            HostIp::HostGateway => hosts.host_gateway.ok_or_else(|| {
                ContainerError::Conflict("unable to derive the IP value for host-gateway".into())
            })?,
        };
        out.push_str(&format!("{ip}\t{}\n", h.host));
    }
    for link in hosts.links {
        for (ip, names) in link_hosts_entries(link) {
            out.push_str(&format!("{ip}\t{names}\n"));
        }
    }
    let names = match hosts.domainname.filter(|d| !d.is_empty()) {
        Some(domain) => format!("{}.{domain} {}", hosts.hostname, hosts.hostname),
        None => hosts.hostname.to_string(),
    };
    for ip in hosts.own_addrs {
        out.push_str(&format!("{ip}\t{names}\n"));
    }
    Ok(out)
}

/// Docker's fallback when no usable server is left (libnetwork
/// `resolvconf`): Google's public resolvers.
pub const FALLBACK_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The `/etc/resolv.conf` of a container: the host's, with `--dns` and
/// `--dns-search` replacing its servers and search list. Loopback servers do
/// not work from another network namespace and are dropped (Docker's rule),
/// unless the container shares the host's network.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String], host_network: bool) -> String {
    let settings = DnsSettings {
        servers: dns.to_vec(),
        search: search.to_vec(),
        options: Vec::new(),
    };
    let resolver = if host_network {
        Resolver::Host
    } else {
        Resolver::Private
    };
    resolv_conf_with(host, &settings, resolver)
}

/// A container's own DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// `--dns`.
    pub servers: Vec<String>,
    /// `--dns-search` (`.` alone: no search domain).
    pub search: Vec<String>,
    /// `--dns-option`.
    pub options: Vec<String>,
}

/// Which name server a container's resolv.conf points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// The host's network namespace: the host's servers, loopback included.
    Host,
    /// A namespace of its own without the embedded server (default bridge,
    /// none): the host's servers but loopback ones, or Docker's fallback.
    Private,
    /// A user-defined network: the embedded DNS server at this address (the
    /// network's gateway). `--dns` servers do not go into the file: they are
    /// the container's upstreams on the server
    /// (`net::dns::DnsServer::set_client_upstreams`), as with Docker's
    /// 127.0.0.11.
    Embedded(IpAddr),
}

/// The `/etc/resolv.conf` of a container (Docker's rules, libnetwork
/// `sandbox_dns_unix.go`): search domains from `--dns-search` or the host;
/// servers from `--dns` or the host (or the embedded server); options from
/// `--dns-option` or the host, and for the embedded server `ndots:0` unless
/// the container set ndots itself, so that single-label names (container
/// names) go to the server as they are.
pub fn resolv_conf_with(host: &str, settings: &DnsSettings, resolver: Resolver) -> String {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next()
                    && (resolver == Resolver::Host || !(ip.starts_with("127.") || ip == "::1"))
                {
                    servers.push(ip.to_string());
                }
            }
            Some("search") | Some("domain") => {
                searches = words.map(str::to_string).collect();
            }
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    if !settings.servers.is_empty() {
        servers = settings.servers.clone();
    }
    if !settings.search.is_empty() {
        searches = settings.search.clone();
    }
    if searches == ["."] {
        searches.clear();
    }
    let own_options = !settings.options.is_empty();
    if own_options {
        options = settings.options.clone();
    }
    match resolver {
        Resolver::Embedded(server) => {
            servers = vec![server.to_string()];
            let own_ndots = own_options && options.iter().any(|o| o.starts_with("ndots:"));
            if !own_ndots {
                options.retain(|o| !o.starts_with("ndots:"));
                options.insert(0, "ndots:0".into());
            }
        }
        Resolver::Private if servers.is_empty() => {
            servers = FALLBACK_DNS.iter().map(|s| s.to_string()).collect();
        }
        _ => {}
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn rlimit(u: &Ulimit) -> Result<PosixRlimit, ContainerError> {
    let typ = match u.name.as_str() {
        "core" => PosixRlimitType::RlimitCore,
        "cpu" => PosixRlimitType::RlimitCpu,
        "data" => PosixRlimitType::RlimitData,
        "fsize" => PosixRlimitType::RlimitFsize,
        "locks" => PosixRlimitType::RlimitLocks,
        "memlock" => PosixRlimitType::RlimitMemlock,
        "msgqueue" => PosixRlimitType::RlimitMsgqueue,
        "nice" => PosixRlimitType::RlimitNice,
        "nofile" => PosixRlimitType::RlimitNofile,
        "nproc" => PosixRlimitType::RlimitNproc,
        "rss" => PosixRlimitType::RlimitRss,
        "rtprio" => PosixRlimitType::RlimitRtprio,
        "rttime" => PosixRlimitType::RlimitRttime,
        "sigpending" => PosixRlimitType::RlimitSigpending,
        _ => PosixRlimitType::RlimitStack,
    };
    let conv = |v: i64| if v < 0 { u64::MAX } else { v.unsigned_abs() };
    Ok(PosixRlimitBuilder::default()
        .typ(typ)
        .soft(conv(u.soft))
        .hard(conv(u.hard))
        .build()?)
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, ContainerError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    Ok(b.build()?)
}

/// Docker's default device cgroup rules: deny all, allow mknod of anything,
/// and read/write of the default nodes, ptys and tun.
pub fn default_device_rules() -> Result<Vec<LinuxDeviceCgroup>, ContainerError> {
    use LinuxDeviceType::{B, C};
    let mut rules = vec![
        device_rule(false, LinuxDeviceType::A, None, None, "rwm")?,
        device_rule(true, C, None, None, "m")?,
        device_rule(true, B, None, None, "m")?,
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(device_rule(true, C, Some(major), Some(minor), "rwm")?);
    }
    rules.push(device_rule(true, C, Some(136), None, "rwm")?);
    Ok(rules)
}

/// Builds the container's record and OCI spec.
pub fn build(
    req: &RunRequest,
    image: &RunConfig,
    place: &Placement,
) -> Result<(crate::runtime::ContainerRecord, Spec), ContainerError> {
    let hostname = match (&req.hostname, &req.network) {
        (Some(h), _) => h.clone(),
        (None, NetMode::Host) => nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| place.id[..12].to_string()),
        (None, _) => place.id[..12].to_string(),
    };
    let args = command_line(req, image);
    if args.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    let env = environment_with_links(req, image, &hostname, &place.link_env);
    let cwd = req
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let caps = capabilities(req)?;
    let user_str = req
        .user
        .clone()
        .or_else(|| image.user.clone().filter(|u| !u.is_empty()));

    let mut group_ids = Vec::new();
    let mut group_names = Vec::new();
    for g in &req.group_add {
        match g.parse::<u32>() {
            Ok(id) => group_ids.push(id),
            Err(_) => group_names.push(g.clone()),
        }
    }
    if !group_names.is_empty() {
        return Err(ContainerError::Conflict(format!(
            "--group-add takes numeric group ids here: {}",
            group_names.join(", ")
        )));
    }
    let mut user = UserBuilder::default().uid(0u32).gid(0u32);
    if !group_ids.is_empty() {
        user = user.additional_gids(group_ids);
    }
    let caps_set = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let mut process = ProcessBuilder::default()
        .terminal(req.tty)
        .user(user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(caps_set)
        .no_new_privileges(req.no_new_privileges)
        .rlimits(
            req.ulimits
                .iter()
                .map(rlimit)
                .collect::<Result<Vec<_>, _>>()?,
        );
    if let Some(adj) = req.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    let process = process.build()?;

    // Mounts, in Docker's order: the system ones, then the container's files,
    // then volumes (sorted so parents come before children).
    let shm = format!("size={}", req.shm_size.unwrap_or(64 << 20));
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm],
        )?,
    ];
    if req.userns.is_none() {
        // devpts' gid=5 (tty) only exists when the ids are not remapped.
        if let Some(pts) = mounts.get_mut(2) {
            let mut opts = pts.options().clone().unwrap_or_default();
            opts.push("gid=5".into());
            pts.set_options(Some(opts));
        }
    }
    for file in ["hostname", "hosts", "resolv.conf"] {
        mounts.push(bind(
            &format!("/etc/{file}"),
            &place.bundle.join(file),
            false,
            "rprivate",
        )?);
    }
    mounts.extend(place.inherited_mounts.iter().cloned());
    let mut user_mounts = req.mounts.clone();
    user_mounts.sort_by_key(|m| m.target.matches('/').count());
    for m in &user_mounts {
        let mnt = match m.kind {
            MountKind::Bind => {
                let source = m.source.clone().unwrap_or_default();
                let propagation = m
                    .propagation
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "rprivate".into());
                bind_with(
                    &m.target,
                    Path::new(&source),
                    m.read_only,
                    &propagation,
                    m.bind_recursive != crate::spec::mount::BindRecursive::Disabled,
                )?
            }
            MountKind::Volume => {
                let Some(dir) = place.volume_dirs.get(&m.target) else {
                    return Err(ContainerError::Conflict(format!(
                        "no volume prepared for {}",
                        m.target
                    )));
                };
                bind(&m.target, dir, m.read_only, "rprivate")?
            }
            MountKind::Tmpfs => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(size) = m.tmpfs_size {
                    opts.push(format!("size={}", size.0));
                }
                opts.push(format!("mode={:o}", m.tmpfs_mode.unwrap_or(0o1777)));
                if m.read_only {
                    opts.push("ro".into());
                }
                MountBuilder::default()
                    .destination(&m.target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(opts)
                    .build()?
            }
        };
        mounts.push(mnt);
    }
    for d in &req.devices {
        mounts.push(bind(
            &d.container_path,
            Path::new(&d.host_path),
            false,
            "rprivate",
        )?);
    }

    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    match &req.network {
        NetMode::None => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        NetMode::Host => {}
        NetMode::Container(_) | NetMode::Network(_) => {
            let Some(path) = &place.netns else {
                return Err(ContainerError::Conflict(
                    "no network namespace was prepared for the container".into(),
                ));
            };
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(path)
                    .build()?,
            )
        }
    }
    let mut linux = LinuxBuilder::default();
    if let Some((host, size)) = req.userns {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(host)
            .size(size)
            .build()?;
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }
    let mut resources = LinuxResourcesBuilder::default();
    let mut devices = if req.privileged {
        vec![device_rule(true, LinuxDeviceType::A, None, None, "rwm")?]
    } else {
        default_device_rules()?
    };
    for d in &req.devices {
        if let Ok(meta) = std::fs::metadata(&d.host_path) {
            use std::os::unix::fs::FileTypeExt;
            use std::os::unix::fs::MetadataExt;
            let rdev = meta.rdev();
            let typ = if meta.file_type().is_block_device() {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            };
            let major = i64::try_from(nix::sys::stat::major(rdev)).unwrap_or(-1);
            let minor = i64::try_from(nix::sys::stat::minor(rdev)).unwrap_or(-1);
            devices.push(device_rule(
                true,
                typ,
                Some(major),
                Some(minor),
                &d.permissions,
            )?);
        }
    }
    resources = resources.devices(devices);
    let r = &req.resources;
    let mut memory = LinuxMemoryBuilder::default();
    let mut has_memory = false;
    if let Some(m) = r.memory {
        memory = memory.limit(m);
        has_memory = true;
        // Docker: swap defaults to the same again as the memory limit.
        let swap = r.memory_swap.unwrap_or(m.saturating_mul(2));
        memory = memory.swap(swap);
    } else if let Some(s) = r.memory_swap {
        memory = memory.swap(s);
        has_memory = true;
    }
    if let Some(res) = r.memory_reservation {
        memory = memory.reservation(res);
        has_memory = true;
    }
    if r.oom_kill_disable {
        memory = memory.disable_oom_killer(true);
        has_memory = true;
    }
    if has_memory {
        resources = resources.memory(memory.build()?);
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if let Some(s) = r.cpu_shares {
        cpu = cpu.shares(s);
        has_cpu = true;
    }
    if let Some(cpus) = r.cpus {
        let period = 100_000u64;
        cpu = cpu.period(period);
        #[allow(clippy::cast_possible_truncation)]
        let quota = (cpus * period as f64).round() as i64;
        cpu = cpu.quota(quota);
        has_cpu = true;
    } else {
        if let Some(p) = r.cpu_period {
            cpu = cpu.period(p);
            has_cpu = true;
        }
        if let Some(q) = r.cpu_quota {
            cpu = cpu.quota(q);
            has_cpu = true;
        }
    }
    if let Some(c) = &r.cpuset_cpus {
        cpu = cpu.cpus(c.clone());
        has_cpu = true;
    }
    if let Some(m) = &r.cpuset_mems {
        cpu = cpu.mems(m.clone());
        has_cpu = true;
    }
    if has_cpu {
        resources = resources.cpu(cpu.build()?);
    }
    if let Some(p) = r.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    if let Some(w) = r.blkio_weight {
        resources = resources.block_io(LinuxBlockIoBuilder::default().weight(w).build()?);
    }
    linux = linux
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(format!("/stack/{}", place.id)));
    if !req.privileged {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
    }
    if !req.sysctls.is_empty() {
        linux = linux.sysctl(
            req.sysctls
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if let Some(profile) = &place.seccomp
        && !req.privileged
    {
        linux = linux.seccomp(profile.clone());
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(place.bundle.join("rootfs"))
                .readonly(req.read_only)
                .build()?,
        )
        .process(process)
        .hostname(hostname)
        .mounts(mounts)
        .linux(linux.build()?);
    if let Some(d) = &req.domainname {
        spec = spec.domainname(d.clone());
    }
    let spec = spec.build()?;

    let image_stop = image.stop_signal.clone();
    let mut extra = BTreeMap::new();
    extra.insert(
        "request".to_string(),
        serde_json::to_value(req).unwrap_or(serde_json::Value::Null),
    );
    let record = crate::runtime::ContainerRecord {
        id: place.id.clone(),
        name: place.name.clone(),
        created: place.created.clone(),
        image: req.image.clone(),
        image_id: place.image_id.clone(),
        rootfs: crate::runtime::Rootfs {
            lowers: place.layers.clone(),
            upper: place.bundle.join("upper"),
            work: place.bundle.join("work"),
        },
        user: user_str,
        init: req.init,
        stdin_open: req.stdin_open,
        stop_signal: req
            .stop_signal
            .clone()
            .or(image_stop)
            .unwrap_or_else(|| "SIGTERM".into()),
        stop_timeout: req.stop_timeout.unwrap_or(10),
        log_max_size: req.log_max_size.unwrap_or(10 << 20),
        log_max_files: req.log_max_files.unwrap_or(5),
        auto_remove: req.auto_remove,
        labels: req.labels.clone(),
        cgroup: format!("stack/{}", place.id),
        runtime: req
            .runtime
            .clone()
            .filter(|r| r != "stack" && r != "builtin"),
        extra,
    };
    Ok((record, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        let mut c: RunConfig = serde_json::from_str("{}").unwrap();
        c.entrypoint = entrypoint.map(|v| v.iter().map(|s| s.to_string()).collect());
        c.cmd = cmd.map(|v| v.iter().map(|s| s.to_string()).collect());
        c
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        let img = image(Some(&["/entry"]), Some(&["default"]));
        let mut req = RunRequest::default();
        assert_eq!(command_line(&req, &img), strings(&["/entry", "default"]));
        req.cmd = strings(&["mine"]);
        assert_eq!(command_line(&req, &img), strings(&["/entry", "mine"]));
        req.entrypoint = Some(strings(&["/other"]));
        req.cmd.clear();
        assert_eq!(
            command_line(&req, &img),
            strings(&["/other"]),
            "--entrypoint drops the image's CMD"
        );
        req.entrypoint = Some(vec![]);
        req.cmd = strings(&["sh"]);
        assert_eq!(command_line(&req, &img), strings(&["sh"]));
    }

    #[test]
    fn environment_layers_image_and_request() {
        let mut img = image(None, None);
        img.env = Some(strings(&["PATH=/img/bin", "A=1", "B=2"]));
        let req = RunRequest {
            env: strings(&["B=3", "C=4"]),
            tty: true,
            ..RunRequest::default()
        };
        assert_eq!(
            environment(&req, &img, "h"),
            strings(&[
                "HOSTNAME=h",
                "TERM=xterm",
                "PATH=/img/bin",
                "A=1",
                "B=3",
                "C=4"
            ])
        );
    }

    #[test]
    fn capabilities_follow_dockers_add_drop_rules() {
        let mut req = RunRequest::default();
        assert_eq!(capabilities(&req).unwrap().len(), 14);
        req.cap_add = strings(&["net_admin", "CAP_SYS_PTRACE"]);
        req.cap_drop = strings(&["MKNOD"]);
        let set = capabilities(&req).unwrap();
        assert!(set.contains(&Capability::NetAdmin) && set.contains(&Capability::SysPtrace));
        assert!(!set.contains(&Capability::Mknod));
        req.cap_drop = strings(&["ALL"]);
        req.cap_add = strings(&["CHOWN"]);
        assert_eq!(
            capabilities(&req).unwrap(),
            [Capability::Chown].into_iter().collect()
        );
        req.cap_add = strings(&["NOT_A_CAP"]);
        assert!(capabilities(&req).is_err());
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_unless_host_network() {
        let host =
            "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example.org\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(host, &[], &[], false),
            "search example.org\nnameserver 10.0.0.2\noptions ndots:2\n"
        );
        assert!(resolv_conf(host, &[], &[], true).contains("127.0.0.53"));
        assert_eq!(
            resolv_conf(host, &strings(&["1.1.1.1"]), &strings(&["a.b"]), false),
            "search a.b\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
    }

    #[test]
    fn resolv_conf_points_user_networks_at_the_embedded_server() {
        let host = "nameserver 127.0.0.53\nsearch example.org\noptions ndots:2 edns0\n";
        let gw: IpAddr = "10.9.0.1".parse().unwrap();
        let embedded = Resolver::Embedded(gw);
        assert_eq!(
            resolv_conf_with(host, &DnsSettings::default(), embedded),
            "search example.org\nnameserver 10.9.0.1\noptions ndots:0 edns0\n"
        );
        // --dns stays out of the file (it is the server's business); the
        // container's own options and ndots win; `--dns-search .` clears.
        let settings = DnsSettings {
            servers: strings(&["1.1.1.1"]),
            search: strings(&["."]),
            options: strings(&["ndots:3", "timeout:1"]),
        };
        assert_eq!(
            resolv_conf_with(host, &settings, embedded),
            "nameserver 10.9.0.1\noptions ndots:3 timeout:1\n"
        );
        let settings = DnsSettings {
            options: strings(&["rotate"]),
            ..DnsSettings::default()
        };
        assert_eq!(
            resolv_conf_with(host, &settings, embedded),
            "search example.org\nnameserver 10.9.0.1\noptions ndots:0 rotate\n"
        );
    }

    #[test]
    fn resolv_conf_options_and_dockers_fallback_servers() {
        let host = "nameserver 127.0.0.53\nsearch a.test\n";
        // Only a loopback server: Docker's public fallback.
        assert_eq!(
            resolv_conf_with(host, &DnsSettings::default(), Resolver::Private),
            "search a.test\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let settings = DnsSettings {
            servers: strings(&["10.0.0.2", "10.0.0.3"]),
            search: strings(&["b.test", "c.test"]),
            options: strings(&["ndots:5"]),
        };
        assert_eq!(
            resolv_conf_with(host, &settings, Resolver::Host),
            "search b.test c.test\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_file_has_extra_hosts_links_then_own_addresses() {
        let extra: Vec<ExtraHost> = ["myhost:192.168.0.1", "host.docker.internal:host-gateway"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let links = [LinkedContainer {
            name: "db".into(),
            alias: "webdb".into(),
            hostname: "6e5cdeb2d300".into(),
            addrs: vec!["10.9.0.5".parse().unwrap()],
            exposed: vec![],
            env: vec![],
        }];
        let own: Vec<IpAddr> = vec!["10.9.0.7".parse().unwrap()];
        let hosts = Hosts {
            hostname: "aed84ee21bde",
            domainname: Some("example.org"),
            own_addrs: &own,
            extra: &extra,
            host_gateway: Some("10.9.0.1".parse().unwrap()),
            links: &links,
        };
        let text = hosts_file_with(&hosts).unwrap();
        let tail: Vec<&str> = text.lines().skip(6).collect();
        assert_eq!(
            tail,
            [
                "192.168.0.1\tmyhost",
                "10.9.0.1\thost.docker.internal",
                "10.9.0.5\twebdb 6e5cdeb2d300 db",
                "10.9.0.7\taed84ee21bde.example.org aed84ee21bde",
            ]
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
        let no_gateway = Hosts {
            host_gateway: None,
            ..hosts
        };
        assert_eq!(
            hosts_file_with(&no_gateway).unwrap_err().to_string(),
            "unable to derive the IP value for host-gateway"
        );
        // The old entry point: host-gateway is the host itself.
        assert!(
            hosts_file("h", &extra, Some("10.9.0.7"))
                .ends_with("127.0.0.1\thost.docker.internal\n10.9.0.7\th\n")
        );
    }

    #[test]
    fn link_variables_come_before_image_and_request_env() {
        let req = RunRequest {
            env: strings(&["DB_NAME=mine"]),
            ..RunRequest::default()
        };
        let img = RunConfig::default();
        let env = environment_with_links(
            &req,
            &img,
            "h",
            &strings(&["DB_NAME=/web/db", "DB_PORT=tcp://10.9.0.5:5432"]),
        );
        assert_eq!(
            env[2..],
            strings(&["DB_PORT=tcp://10.9.0.5:5432", "DB_NAME=mine"])
        );
    }

    #[test]
    fn a_request_takes_links_as_docker_writes_them() {
        let req: RunRequest =
            serde_json::from_str(r#"{"image": "bb", "Links": ["db:mydb", "/cache:/web/c"]}"#)
                .unwrap();
        let links: Vec<String> = req.links.iter().map(ToString::to_string).collect();
        assert_eq!(links, ["db:mydb", "cache:c"]);
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["links"], serde_json::json!(["db:mydb", "cache:c"]));
    }

    #[test]
    fn spec_has_dockers_defaults() {
        let place = Placement {
            id: "a".repeat(64),
            name: "n".into(),
            bundle: "/b".into(),
            layers: vec!["/l".into()],
            image_id: "sha256:x".into(),
            volume_dirs: BTreeMap::new(),
            inherited_mounts: vec![],
            seccomp: None,
            created: "now".into(),
            netns: None,
            link_env: vec![],
        };
        let req = RunRequest {
            cmd: strings(&["true"]),
            resources: Resources {
                memory: Some(64 << 20),
                cpus: Some(0.5),
                pids_limit: Some(10),
                ..Resources::default()
            },
            ..RunRequest::default()
        };
        let (record, spec) = build(&req, &image(None, None), &place).unwrap();
        assert_eq!(record.cgroup, format!("stack/{}", "a".repeat(64)));
        assert_eq!(spec.hostname().as_deref(), Some("aaaaaaaaaaaa"));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.memory().as_ref().unwrap().swap(), Some(128 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 10);
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        assert!(dests.contains(&PathBuf::from("/etc/resolv.conf")));
    }
}
