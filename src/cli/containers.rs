//! The container verbs, with Docker's flags: `run`, `create`, `start`,
//! `stop`, `restart`, `kill`, `rm`, `logs`, `exec`, `wait`, `pause`,
//! `unpause`, `rename`, `stats`, `attach`, `export`, `commit` (`ps`,
//! `inspect` and the newer verbs are in `containers_extra`).

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use miette::{IntoDiagnostic, WrapErr, miette};

use super::daemon::{api_error, client};
use super::output::{human_duration, human_size, parse_rfc3339, table};
use super::services::{Member, Services, is_no_such_container};
use crate::api::client::{Client, ClientError, segment};
use crate::api::{Created, Listed, Usage, Waited};
use crate::reconcile::container::{NetMode, Resources, RunRequest, SeccompChoice};
use crate::reconcile::health::{HealthRequest, HealthStatus};
use crate::reconcile::link::LinkSpec;
use crate::runtime::attach::{self, Kind};
use crate::runtime::exec::ExecConfig;
use crate::runtime::logs;
use crate::runtime::{ContainerState, Status};
use crate::spec::device::DeviceMapping;
use crate::spec::duration::DurationSpec;
use crate::spec::extra_host::ExtraHost;
use crate::spec::mount::{MountSpec, parse_tmpfs};
use crate::spec::ulimit::Ulimit;

/// The resource limits `run`, `create` and `update` share, with Docker's
/// flags.
#[derive(Debug, Default, Args)]
pub struct LimitArgs {
    /// Memory limit (e.g. 512m)
    #[arg(short = 'm', long = "memory", value_name = "BYTES")]
    memory: Option<String>,
    /// Memory plus swap limit; -1 for unlimited swap
    #[arg(long = "memory-swap", value_name = "BYTES", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation", value_name = "BYTES")]
    memory_reservation: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// Number of CPUs (e.g. 1.5)
    #[arg(long = "cpus")]
    cpus: Option<f64>,
    /// CFS period in microseconds
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CFS quota in microseconds
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPUs to allow (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes to allow
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Largest number of processes (-1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Block IO weight (10-1000)
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
}

impl LimitArgs {
    /// The limits asked for (`None`: not given).
    pub fn resources(&self) -> miette::Result<Resources> {
        Ok(Resources {
            memory: self
                .memory
                .as_deref()
                .map(|m| size("memory", m))
                .transpose()?,
            memory_swap: self
                .memory_swap
                .as_deref()
                .map(|m| size("memory-swap", m))
                .transpose()?,
            memory_reservation: self
                .memory_reservation
                .as_deref()
                .map(|m| size("memory-reservation", m))
                .transpose()?,
            cpu_shares: self.cpu_shares,
            cpus: self.cpus,
            cpu_period: self.cpu_period,
            cpu_quota: self.cpu_quota,
            cpuset_cpus: self.cpuset_cpus.clone(),
            cpuset_mems: self.cpuset_mems.clone(),
            pids_limit: self.pids_limit,
            blkio_weight: self.blkio_weight,
            oom_kill_disable: false,
        })
    }
}

/// The options of `run` and `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=value, or KEY to pass the host's)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind mount or volume: [SOURCE:]TARGET[:OPTIONS]
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    volumes: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly,bind-propagation=…,volume-nocopy,tmpfs-size=…]
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS]
    #[arg(long = "tmpfs", value_name = "SPEC")]
    tmpfs: Vec<String>,
    /// Mount the volumes of another container: NAME[:ro|:rw]
    #[arg(long = "volumes-from", value_name = "CONTAINER")]
    volumes_from: Vec<String>,
    /// Write the container id to this file (which must not exist)
    #[arg(long = "cidfile", value_name = "FILE")]
    cidfile: Option<PathBuf>,
    /// Link to another container: NAME[:ALIAS] (not supported yet)
    #[arg(long = "link", value_name = "NAME[:ALIAS]")]
    link: Vec<String>,
    /// Publish a port (not supported yet)
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Publish every exposed port (the image's EXPOSE and --expose) on a
    /// free host port
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port without publishing it
    #[arg(long = "expose", value_name = "PORT")]
    expose: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Disable the OOM killer
    #[arg(long = "oom-kill-disable")]
    oom_kill_disable: bool,
    /// Tune the host's OOM preferences (-1000 to 1000)
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
    /// User name or uid, and optionally group: USER[:GROUP]
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Additional groups to join
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Override the image's ENTRYPOINT
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long = "hostname")]
    hostname: Option<String>,
    /// Container NIS domain name
    #[arg(long = "domainname")]
    domainname: Option<String>,
    /// Network: bridge (the default), a network's name or id, host, none,
    /// container:NAME
    #[arg(long = "network", visible_alias = "net", default_value = "bridge")]
    network: String,
    /// IPv4 address on the network (needs a network with a user configured
    /// subnet)
    #[arg(long = "ip", value_name = "IPV4")]
    ip: Option<std::net::Ipv4Addr>,
    /// IPv6 address on the network (needs a network with IPv6)
    #[arg(long = "ip6", value_name = "IPV6")]
    ip6: Option<std::net::Ipv6Addr>,
    /// Add a network-scoped alias for the container
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "ALIAS"
    )]
    network_alias: Vec<String>,
    /// Container MAC address (e.g. 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address", value_name = "MAC")]
    mac_address: Option<String>,
    /// DNS servers
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// DNS search domains
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// DNS options (resolv.conf `options`)
    #[arg(long = "dns-option", visible_alias = "dns-opt")]
    dns_option: Vec<String>,
    /// Add a line to /etc/hosts: HOST:IP
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Keep stdin open
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// Run an init as pid 1 that forwards signals and reaps processes
    #[arg(long = "init")]
    init: bool,
    /// Mount the root file system read-only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Give every capability and device, no seccomp, no masked paths
    #[arg(long = "privileged")]
    privileged: bool,
    /// Add capabilities
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop capabilities
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Resource limits: NAME=SOFT[:HARD]
    #[arg(long = "ulimit")]
    ulimit: Vec<String>,
    /// Kernel parameters: NAME=VALUE
    #[arg(long = "sysctl")]
    sysctl: Vec<String>,
    /// Size of /dev/shm
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Map container uid/gid 0 to HOST_ID, for SIZE ids: HOST_ID:SIZE (or host)
    #[arg(long = "userns")]
    userns: Option<String>,
    /// Labels: KEY=VALUE
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    /// Log options: max-size=SIZE, max-file=N
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Restart policy (applied by the daemon): no, always, on-failure[:N], unless-stopped
    #[arg(long = "restart", default_value = "no")]
    restart: String,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Seconds to wait before killing on stop
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<u32>,
    /// Add a host device: HOST[:CONTAINER[:PERMISSIONS]]
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Remove the container when it exits
    #[arg(long = "rm")]
    rm: bool,
    /// OCI runtime: the built-in one (default), or runc, crun or another on PATH
    #[arg(long = "runtime")]
    runtime: Option<String>,
    /// Command to run to check health (in the container's shell)
    #[arg(long = "health-cmd", value_name = "STRING")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval", value_name = "DURATION")]
    health_interval: Option<DurationSpec>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout", value_name = "DURATION")]
    health_timeout: Option<DurationSpec>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "INT")]
    health_retries: Option<u32>,
    /// Start period for the container to initialize before starting
    /// health-retries countdown (ms|s|m|h)
    #[arg(long = "health-start-period", value_name = "DURATION")]
    health_start_period: Option<DurationSpec>,
    /// Time between running the check during the start period (ms|s|m|h)
    #[arg(long = "health-start-interval", value_name = "DURATION")]
    health_start_interval: Option<DurationSpec>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck", conflicts_with_all = [
        "health_cmd", "health_interval", "health_timeout", "health_retries",
        "health_start_period", "health_start_interval",
    ])]
    no_healthcheck: bool,
    /// Print help (`-h` is --hostname, as in Docker)
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The image
    image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `stack run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id
    #[arg(short = 'd', long = "detach")]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

fn size(flag: &str, value: &str) -> miette::Result<i64> {
    if value == "-1" {
        return Ok(-1);
    }
    let bytes = value
        .parse::<crate::spec::size::ByteSize>()
        .map_err(|e| miette!("invalid {flag} {value:?}: {e}"))?;
    i64::try_from(bytes.0).map_err(|_| miette!("invalid {flag} {value:?}: too large"))
}

fn request(args: &CreateArgs) -> miette::Result<RunRequest> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read env file {}", file.display()))?;
        let vars =
            crate::spec::envfile::parse_docker_env_file(&text, &|k: &str| std::env::var(k).ok())
                .map_err(|e| miette!("{}: {e}", file.display()))?;
        env.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    for e in &args.env {
        if e.contains('=') {
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.push(format!("{e}={v}"));
        }
    }
    let mut mounts: Vec<MountSpec> = Vec::new();
    for v in &args.volumes {
        let mut m: MountSpec = v
            .parse()
            .map_err(|e| miette!("invalid volume {v:?}: {e}"))?;
        if let Some(src) = &m.source
            && m.kind == crate::spec::mount::MountKind::Bind
            && !src.starts_with('/')
        {
            m.source = Some(cwd.join(src).to_string_lossy().into_owned());
        }
        mounts.push(m);
    }
    for spec in &args.mounts {
        let mut m = crate::spec::mount::parse_mount_flag(spec)
            .map_err(|e| miette!("invalid argument {spec:?} for \"--mount\" flag: {e}"))?;
        // docker/cli makes a bind source starting with `.` absolute.
        if m.kind == crate::spec::mount::MountKind::Bind
            && let Some(src) = &m.source
            && src.starts_with('.')
        {
            m.source = Some(cwd.join(src).to_string_lossy().into_owned());
        }
        mounts.push(m);
    }
    for t in &args.tmpfs {
        mounts.push(parse_tmpfs(t).map_err(|e| miette!("invalid tmpfs {t:?}: {e}"))?);
    }
    let links = args
        .link
        .iter()
        .map(|l| l.parse::<LinkSpec>().map_err(|e| miette!("{e}")))
        .collect::<miette::Result<Vec<_>>>()?;
    let port_bindings = port_bindings(&args.publish)?;
    let network = match args.network.as_str() {
        "none" => NetMode::None,
        "host" => NetMode::Host,
        "" | "default" => NetMode::Network("bridge".into()),
        other => match other.strip_prefix("container:") {
            Some(c) if !c.is_empty() => NetMode::Container(c.to_string()),
            Some(_) => {
                return Err(miette!(
                    "invalid network {other:?}: container: needs a NAME"
                ));
            }
            None => NetMode::Network(other.to_string()),
        },
    };
    let mut seccomp = SeccompChoice::Default;
    let mut no_new_privileges = false;
    for opt in &args.security_opt {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match key {
            "seccomp" if value == "unconfined" => seccomp = SeccompChoice::Unconfined,
            "seccomp" if !value.is_empty() => seccomp = SeccompChoice::File(cwd.join(value)),
            "no-new-privileges" => no_new_privileges = value.is_empty() || value == "true",
            "apparmor" | "label" => {}
            _ => return Err(miette!("invalid --security-opt {opt:?}")),
        }
    }
    let ulimits = args
        .ulimit
        .iter()
        .map(|u| {
            u.parse::<Ulimit>()
                .map_err(|e| miette!("invalid ulimit {u:?}: {e}"))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let mut sysctls = BTreeMap::new();
    for s in &args.sysctl {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| miette!("invalid sysctl {s:?}: expected NAME=VALUE"))?;
        sysctls.insert(k.to_string(), v.to_string());
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let (mut log_max_size, mut log_max_files) = (None, None);
    for o in &args.log_opt {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                log_max_size = Some(
                    u64::try_from(size("log max-size", v)?)
                        .map_err(|_| miette!("max-size must be positive"))?,
                );
            }
            Some(("max-file", v)) => {
                log_max_files = Some(v.parse().map_err(|_| miette!("invalid max-file {v:?}"))?);
            }
            _ => {
                return Err(miette!(
                    "unknown log option {o:?}: use max-size=SIZE or max-file=N"
                ));
            }
        }
    }
    let (restart, retries) = crate::spec::restart::parse_restart(&args.restart)
        .map_err(|e| miette!("invalid --restart: {e}"))?;
    let userns = match args.userns.as_deref() {
        None | Some("host") | Some("") => None,
        Some(v) => {
            let (host, count) = v
                .split_once(':')
                .ok_or_else(|| miette!("invalid --userns {v:?}: expected host or HOST_ID:SIZE"))?;
            Some((
                host.parse()
                    .map_err(|_| miette!("invalid --userns host id {host:?}"))?,
                count
                    .parse()
                    .map_err(|_| miette!("invalid --userns size {count:?}"))?,
            ))
        }
    };
    let devices = args
        .devices
        .iter()
        .map(|d| {
            d.parse::<DeviceMapping>()
                .map_err(|e| miette!("invalid device {d:?}: {e}"))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let extra_hosts = args
        .add_host
        .iter()
        .map(|h| {
            h.parse::<ExtraHost>()
                .map_err(|e| miette!("invalid --add-host {h:?}: {e}"))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let resources = Resources {
        oom_kill_disable: args.oom_kill_disable,
        ..args.limits.resources()?
    };
    Ok(RunRequest {
        image: args.image.clone(),
        name: args.name.clone(),
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                vec![]
            } else {
                vec![e.clone()]
            }
        }),
        cmd: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        group_add: args.group_add.clone(),
        hostname: args.hostname.clone(),
        domainname: args.domainname.clone(),
        tty: args.tty,
        stdin_open: args.interactive,
        init: args.init,
        read_only: args.read_only,
        privileged: args.privileged,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        seccomp,
        no_new_privileges,
        ulimits,
        sysctls,
        oom_score_adj: args.oom_score_adj,
        resources,
        mounts,
        volumes_from: args.volumes_from.clone(),
        shm_size: args
            .shm_size
            .as_deref()
            .map(|s| {
                size("shm-size", s)
                    .and_then(|v| u64::try_from(v).map_err(|_| miette!("invalid shm-size")))
            })
            .transpose()?,
        network,
        ip: args.ip,
        ip6: args.ip6,
        network_aliases: args.network_alias.clone(),
        mac_address: args.mac_address.clone(),
        userns,
        stop_signal: args.stop_signal.clone(),
        stop_timeout: args.stop_timeout,
        labels,
        log_max_size,
        log_max_files,
        auto_remove: args.rm,
        devices,
        dns: args.dns.clone(),
        dns_search: args.dns_search.clone(),
        dns_options: args.dns_option.clone(),
        links,
        extra_hosts,
        expose: args.expose.clone(),
        port_bindings,
        publish_all: args.publish_all,
        runtime: args.runtime.clone(),
        restart: crate::reconcile::container::RestartPolicy {
            name: restart,
            maximum_retry_count: retries.unwrap_or(0),
        },
        health: health_request(args),
    })
}

/// `-p` values as Docker's `HostConfig.PortBindings` (docker/cli
/// `nat.ParsePortSpecs`): one entry per container port, a host range kept
/// whole when it maps to one container port.
fn port_bindings(
    publish: &[String],
) -> miette::Result<BTreeMap<String, Vec<crate::reconcile::verbs::PortBinding>>> {
    let specs = publish
        .iter()
        .map(|raw| {
            raw.parse::<crate::spec::port::PortSpec>()
                .map_err(|e| miette!("invalid -p {raw:?}: {e}"))
        })
        .collect::<miette::Result<Vec<_>>>()?;
    Ok(crate::reconcile::ports::bindings_of(&specs))
}

/// The `--health-*` flags as a request (docker/cli `parse`).
fn health_request(args: &CreateArgs) -> HealthRequest {
    let test = if args.no_healthcheck {
        Some(vec!["NONE".to_string()])
    } else {
        args.health_cmd
            .as_ref()
            .map(|cmd| vec!["CMD-SHELL".to_string(), cmd.clone()])
    };
    HealthRequest {
        test,
        interval: args.health_interval.map(|d| d.0),
        timeout: args.health_timeout.map(|d| d.0),
        retries: args.health_retries,
        start_period: args.health_start_period.map(|d| d.0),
        start_interval: args.health_start_interval.map(|d| d.0),
    }
}

fn signal_number(name: &str) -> miette::Result<i32> {
    crate::runtime::signal_number(name).ok_or_else(|| miette!("invalid signal: {name}"))
}

/// `stack create`: prints the new container's id.
pub fn create(root: &Path, args: &CreateArgs) -> miette::Result<()> {
    let req = request(args)?;
    let c = client(root)?;
    let cidfile = CidFile::claim(args.cidfile.as_deref())?;
    let created = create_container(&c, &req)?;
    cidfile.write(&created.id)?;
    println!("{}", created.id);
    Ok(())
}

/// `--cidfile`: created before the container (so an existing file stops
/// the create, as in Docker), filled with the id after, removed when the
/// create fails.
struct CidFile(Option<(PathBuf, std::fs::File)>);

impl CidFile {
    fn claim(path: Option<&Path>) -> miette::Result<CidFile> {
        let Some(path) = path else {
            return Ok(CidFile(None));
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(file) => Ok(CidFile(Some((path.to_path_buf(), file)))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(miette!(
                "container ID file found, make sure the other container isn't running or delete {}",
                path.display()
            )),
            Err(e) => Err(miette!("cannot create the cidfile {}: {e}", path.display())),
        }
    }

    fn write(mut self, id: &str) -> miette::Result<()> {
        if let Some((path, mut file)) = self.0.take() {
            file.write_all(id.as_bytes())
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write the cidfile {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for CidFile {
    fn drop(&mut self) {
        if let Some((path, _)) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates a container through the API.
fn create_container(c: &Client, req: &RunRequest) -> miette::Result<Created> {
    c.post("/containers/create")
        .json(req)
        .send_json()
        .map_err(api_error)
}

/// Removes a container through the API; one that is already gone is fine.
fn remove_quietly(c: &Client, id: &str) {
    let _ = c
        .delete(&format!("/containers/{}", segment(id)))
        .query("force", 1)
        .query("v", 1)
        .ok();
}

/// A terminal in raw mode for as long as this lives.
struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    fn enable() -> Self {
        let stdin = rustix::stdio::stdin();
        let saved = rustix::termios::tcgetattr(stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        Self { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                rustix::stdio::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// What ended an attached session.
enum AttachEnd {
    Exited(i32),
    Detached,
    Lost,
}

/// Relays the terminal or stdio to an attach socket until the container exits
/// or the user detaches (Ctrl-P Ctrl-Q with a terminal).
fn relay(stream: UnixStream, stdin: bool, tty: bool) -> io::Result<AttachEnd> {
    let _raw = (tty && io::stdin().is_terminal()).then(RawTerminal::enable);
    if tty && let Ok(size) = rustix::termios::tcgetwinsize(rustix::stdio::stdout()) {
        let mut payload = size.ws_row.to_be_bytes().to_vec();
        payload.extend_from_slice(&size.ws_col.to_be_bytes());
        attach::write_frame(&mut &stream, Kind::Resize, &payload)?;
    }
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if stdin {
        let mut writer = stream.try_clone()?;
        let detached = detached.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut last_ctrl_p = false;
            let mut input = io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = attach::write_frame(&mut writer, Kind::CloseStdin, &[]);
                        return;
                    }
                    Ok(n) => {
                        let data = &buf[..n];
                        if tty {
                            for (i, b) in data.iter().enumerate() {
                                if last_ctrl_p && *b == 0x11 {
                                    let _ = attach::write_frame(
                                        &mut writer,
                                        Kind::Stdin,
                                        &data[..i.saturating_sub(1)],
                                    );
                                    detached.store(true, std::sync::atomic::Ordering::SeqCst);
                                    let _ = writer.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                last_ctrl_p = *b == 0x10;
                            }
                        }
                        if attach::write_frame(&mut writer, Kind::Stdin, data).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut reader = io::BufReader::new(&stream);
    let stdout = io::stdout();
    let stderr = io::stderr();
    loop {
        match attach::read_frame(&mut reader) {
            Ok(Some((Kind::Stdout, data))) => {
                let mut out = stdout.lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            Ok(Some((Kind::Stderr, data))) => {
                let mut err = stderr.lock();
                err.write_all(&data)?;
                err.flush()?;
            }
            Ok(Some((Kind::Exit, payload))) => {
                return Ok(AttachEnd::Exited(
                    attach::parse_exit(&payload).map_or(255, |(c, _)| c),
                ));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                return Ok(if detached.load(std::sync::atomic::Ordering::SeqCst) {
                    AttachEnd::Detached
                } else {
                    AttachEnd::Lost
                });
            }
        }
    }
}

/// `stack run`: returns the container's exit code.
pub fn run(root: &Path, args: &RunArgs) -> miette::Result<i32> {
    let req = request(&args.create)?;
    let c = client(root)?;
    let cidfile = CidFile::claim(args.create.cidfile.as_deref())?;
    let id = create_container(&c, &req)?.id;
    cidfile.write(&id)?;
    let path = format!("/containers/{}/start", segment(&id));
    if args.detach {
        if let Err(e) = c.post(&path).ok() {
            if req.auto_remove {
                remove_quietly(&c, &id);
            }
            return Err(api_error(e));
        }
        println!("{id}");
        return Ok(0);
    }
    let stream = match c.post(&path).upgrade() {
        Ok(stream) => stream,
        Err(e) => {
            if req.auto_remove {
                remove_quietly(&c, &id);
            }
            return Err(api_error(e));
        }
    };
    let end = relay(stream, req.stdin_open, req.tty).into_diagnostic()?;
    let code = match end {
        AttachEnd::Exited(code) => code,
        AttachEnd::Detached => return Ok(0),
        AttachEnd::Lost => wait_for(&c, &id, "not-running")?,
    };
    if req.auto_remove {
        // As Docker's CLI: return once the daemon removed it.
        match wait_for(&c, &id, "removed") {
            Ok(_) => {}
            Err(e) if e.to_string().starts_with("No such container") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(code)
}

/// Waits through the API; the exit code.
fn wait_for(c: &Client, id: &str, condition: &str) -> miette::Result<i32> {
    let waited: Waited = c
        .post(&format!("/containers/{}/wait", segment(id)))
        .query("condition", condition)
        .send_json()
        .map_err(api_error)?;
    Ok(waited.status_code)
}

/// Whether a container has a terminal and keeps stdin open, from inspect.
fn stdio_of(c: &Client, id: &str) -> miette::Result<(bool, bool, String)> {
    let v: serde_json::Value = c
        .get(&format!("/containers/{}/json", segment(id)))
        .send_json()
        .map_err(api_error)?;
    Ok((
        v["Config"]["Tty"].as_bool().unwrap_or(false),
        v["Config"]["OpenStdin"].as_bool().unwrap_or(false),
        v["Id"].as_str().unwrap_or(id).to_string(),
    ))
}

/// Arguments naming containers.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Containers (names or ids)
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach stdout/stderr and wait for the exit
    #[arg(short = 'a', long = "attach")]
    attach: bool,
    /// Attach stdin
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack start`.
pub fn start(root: &Path, args: &StartArgs) -> miette::Result<i32> {
    let c = client(root)?;
    if args.attach {
        let [name] = args.containers.as_slice() else {
            return Err(miette!(
                "you cannot start and attach multiple containers at once"
            ));
        };
        let (tty, stdin_open, id) = stdio_of(&c, name)?;
        let stream = c
            .post(&format!("/containers/{}/start", segment(&id)))
            .upgrade()
            .map_err(api_error)?;
        return match relay(stream, args.interactive && stdin_open, tty).into_diagnostic()? {
            AttachEnd::Exited(code) => Ok(code),
            AttachEnd::Detached => Ok(0),
            AttachEnd::Lost => wait_for(&c, &id, "not-running"),
        };
    }
    each(&c, &args.containers, |name| {
        c.post(&format!("/containers/{}/start", segment(name))).ok()
    })
}

/// Runs `f` for every name, printing each name done and each error; fails if
/// any failed (like Docker's multi-container verbs). A name that is no
/// container but a service of the stack here stands for each of the
/// service's containers (see `services`).
fn each(
    c: &Client,
    names: &[String],
    mut f: impl FnMut(&str) -> Result<(), ClientError>,
) -> miette::Result<i32> {
    let services = Services::new(c);
    let mut failed = 0;
    let mut tried = 0;
    let mut report = |result: Result<(), String>, shown: &str| {
        tried += 1;
        match result {
            Ok(()) => println!("{shown}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed += 1;
            }
        }
    };
    for name in names {
        match f(name) {
            Err(e) if is_no_such_container(&e) => match services.containers(name, None) {
                Ok(members) => {
                    for m in members {
                        report(f(&m.id).map_err(|e| e.to_string()), &m.name);
                    }
                }
                // "No such container: NAME" when it is no service either.
                Err(why) => report(Err(why.to_string()), name),
            },
            result => report(result.map_err(|e| e.to_string()), name),
        }
    }
    if failed > 0 {
        return Err(miette!("{failed} of {tried} containers failed"));
    }
    Ok(0)
}

/// `stack stop` and `stack restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing (default: the container's stop timeout)
    #[arg(short = 't', long = "time")]
    time: Option<u32>,
    /// Signal to send (default: the container's stop signal)
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack stop`.
pub fn stop(root: &Path, args: &StopArgs) -> miette::Result<i32> {
    stop_or_restart(root, args, "stop")
}

fn stop_or_restart(root: &Path, args: &StopArgs, verb: &str) -> miette::Result<i32> {
    if let Some(sig) = &args.signal {
        signal_number(sig)?;
    }
    let c = client(root)?;
    each(&c, &args.containers, |name| {
        c.post(&format!("/containers/{}/{verb}", segment(name)))
            .query_opt("t", args.time)
            .query_opt("signal", args.signal.as_deref())
            .ok()
    })
}

/// `stack restart`.
pub fn restart(root: &Path, args: &StopArgs) -> miette::Result<i32> {
    stop_or_restart(root, args, "restart")
}

/// `stack kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short = 's', long = "signal", default_value = "KILL")]
    signal: String,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack kill`.
pub fn kill(root: &Path, args: &KillArgs) -> miette::Result<i32> {
    signal_number(&args.signal)?;
    let c = client(root)?;
    each(&c, &args.containers, |name| {
        c.post(&format!("/containers/{}/kill", segment(name)))
            .query("signal", &args.signal)
            .ok()
    })
}

/// `stack rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Remove its anonymous volumes too
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack rm`.
pub fn rm(root: &Path, args: &RmArgs) -> miette::Result<i32> {
    let c = client(root)?;
    each(&c, &args.containers, |name| {
        c.delete(&format!("/containers/{}", segment(name)))
            .flag("force", args.force)
            .flag("v", args.volumes)
            .ok()
    })
}

/// `stack pause` / `unpause`.
pub fn pause(root: &Path, args: &NamesArgs, pause: bool) -> miette::Result<i32> {
    let c = client(root)?;
    let verb = if pause { "pause" } else { "unpause" };
    each(&c, &args.containers, |name| {
        c.post(&format!("/containers/{}/{verb}", segment(name)))
            .ok()
    })
}

/// `stack wait`: prints each exit code.
pub fn wait(root: &Path, args: &NamesArgs) -> miette::Result<i32> {
    let c = client(root)?;
    for name in &args.containers {
        println!("{}", wait_for(&c, name, "not-running")?);
    }
    Ok(0)
}

/// `stack rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The container
    container: String,
    /// Its new name
    new_name: String,
}

/// `stack rename`.
pub fn rename(root: &Path, args: &RenameArgs) -> miette::Result<i32> {
    if !crate::reconcile::containers::is_valid_name(&args.new_name) {
        return Err(miette!(
            "invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            args.new_name
        ));
    }
    let c = client(root)?;
    c.post(&format!("/containers/{}/rename", segment(&args.container)))
        .query("name", &args.new_name)
        .ok()
        .map_err(api_error)?;
    Ok(0)
}

/// Docker's STATUS column; a running container with a health check shows
/// its health too (`Up 3 seconds (healthy)`).
pub fn status_text(st: &ContainerState, health: Option<HealthStatus>) -> String {
    let since = |t: &Option<String>| {
        t.as_deref()
            .and_then(parse_rfc3339)
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(human_duration)
            .unwrap_or_else(|| "Less than a second".into())
    };
    match st.status {
        Status::Created => "Created".into(),
        Status::Running => match health {
            Some(h) => format!("Up {} ({})", since(&st.started_at), h.ps_text()),
            None => format!("Up {}", since(&st.started_at)),
        },
        Status::Paused => format!("Up {} (Paused)", since(&st.started_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => {
            if st.start_count == 0 {
                "Created".into()
            } else {
                format!("Exited ({}) {} ago", st.exit_code, since(&st.finished_at))
            }
        }
    }
}

/// `stack logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Number of lines from the end ("all" for everything)
    #[arg(short = 'n', long = "tail", default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long = "timestamps")]
    timestamps: bool,
    /// Only lines since (RFC 3339, unix time or a duration like 10m)
    #[arg(long = "since")]
    since: Option<String>,
    /// Only lines before (same forms as --since)
    #[arg(long = "until")]
    until: Option<String>,
    /// With a service: only this replica's output
    #[arg(long = "index", value_name = "N")]
    index: Option<u32>,
    /// The container (or a service of the stack here)
    container: String,
}

/// `stack logs`: a container's output; a service's is every replica's,
/// each line prefixed with `web-1 | ` when there are several (followed
/// together with `-f`).
pub fn logs(root: &Path, args: &LogsArgs) -> miette::Result<i32> {
    let now = std::time::SystemTime::now();
    for t in [&args.since, &args.until].into_iter().flatten() {
        logs::parse_time_filter(t, now).into_diagnostic()?;
    }
    if !matches!(args.tail.as_str(), "all" | "-1") && args.tail.parse::<usize>().is_err() {
        return Err(miette!("invalid --tail {:?}", args.tail));
    }
    let c = client(root)?;
    let open = |target: &str| {
        c.get(&format!("/containers/{}/logs", segment(target)))
            .query("tail", &args.tail)
            .query_opt("since", args.since.as_deref())
            .query_opt("until", args.until.as_deref())
            .flag("timestamps", args.timestamps)
            .flag("follow", args.follow)
            .stream()
    };
    // Events from before the service's containers are listed: none
    // started meanwhile is missed.
    let listed_at = std::time::SystemTime::now();
    let services = Services::new(&c);
    let members = match open(&args.container) {
        Ok(body) => return copy_log(body, None, args.follow),
        Err(e) if is_no_such_container(&e) => services.containers(&args.container, args.index)?,
        Err(e) => return Err(api_error(e)),
    };
    // A service followed: its containers made later (recreated, scaled
    // up) join, and a restarted one goes on, as with the foreground `up`.
    if args.follow
        && let Some(stack) = services.stack()
    {
        let from = match &args.since {
            Some(t) => logs::parse_time_filter(t, now).into_diagnostic()?,
            None => std::time::SystemTime::UNIX_EPOCH,
        };
        let tail = (!matches!(args.tail.as_str(), "all" | "-1")).then(|| args.tail.clone());
        return super::follow::follow_service(
            &std::sync::Arc::new(client(root)?),
            &super::follow::ServiceLogs {
                stack,
                service: args.container.clone(),
                index: args.index,
                events_since: listed_at,
                from,
                tail,
                timestamps: args.timestamps,
            },
            &members,
        );
    }
    if let [one] = members.as_slice() {
        return copy_log(open(&one.id).map_err(api_error)?, None, args.follow);
    }
    let width = members
        .iter()
        .map(|m| m.short_name().len())
        .max()
        .unwrap_or(0);
    let prefix = |m: &Member| format!("{:<width$} | ", m.short_name());
    if !args.follow {
        for m in &members {
            copy_log(open(&m.id).map_err(api_error)?, Some(prefix(m)), false)?;
        }
        return Ok(0);
    }
    // Every replica's stream at once; lines go out whole, as they come.
    let mut streams = Vec::new();
    for m in &members {
        streams.push((prefix(m), open(&m.id).map_err(api_error)?));
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .map(|(prefix, body)| scope.spawn(move || copy_log(body, Some(prefix), true)))
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| miette!("a log stream reader failed"))??;
        }
        Ok(0)
    })
}

/// Copies one container's log stream to stdout and stderr, each line
/// after `prefix` when there is one.
fn copy_log(
    body: crate::api::client::BodyReader,
    prefix: Option<String>,
    follow: bool,
) -> miette::Result<i32> {
    let mut reader = io::BufReader::with_capacity(256 << 10, body);
    let stderr = io::stderr();
    let Some(prefix) = prefix else {
        let stdout = io::stdout();
        let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
        loop {
            match attach::read_frame(&mut reader) {
                Ok(Some((Kind::Stdout, data))) => {
                    out.write_all(&data).into_diagnostic()?;
                    if follow {
                        out.flush().into_diagnostic()?;
                    }
                }
                Ok(Some((Kind::Stderr, data))) => {
                    out.flush().into_diagnostic()?;
                    stderr.lock().write_all(&data).into_diagnostic()?;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.flush().into_diagnostic()?;
                    return Err(miette!("the log stream broke off: {e}"));
                }
            }
        }
        out.flush().into_diagnostic()?;
        return Ok(0);
    };
    // Streams of several containers share the terminal: whole lines only,
    // each written at once.
    let mut lines = PrefixedLines::new(prefix);
    let result = loop {
        match attach::read_frame(&mut reader) {
            Ok(Some((kind @ (Kind::Stdout | Kind::Stderr), data))) => {
                let err = kind == Kind::Stderr;
                let text = lines.feed(err, &data);
                write_lines(err, &text)?;
            }
            Ok(Some(_)) => {}
            Ok(None) => break Ok(0),
            Err(e) => break Err(miette!("the log stream broke off: {e}")),
        }
    };
    for err in [false, true] {
        write_lines(err, &lines.finish(err))?;
    }
    result
}

fn write_lines(err: bool, text: &[u8]) -> miette::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    if err {
        io::stderr().lock().write_all(text).into_diagnostic()
    } else {
        let mut out = io::stdout().lock();
        out.write_all(text).into_diagnostic()?;
        out.flush().into_diagnostic()
    }
}

/// Cuts a container's output into lines that start with its prefix
/// (`web-1 | `), stdout and stderr apart; a line is given out once it is
/// whole.
#[derive(Debug)]
struct PrefixedLines {
    prefix: String,
    /// The unfinished line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl PrefixedLines {
    fn new(prefix: String) -> PrefixedLines {
        PrefixedLines {
            prefix,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// The whole lines `data` completes on stdout (or stderr), prefixed.
    fn feed(&mut self, err: bool, data: &[u8]) -> Vec<u8> {
        let partial = &mut self.partial[usize::from(err)];
        partial.extend_from_slice(data);
        let Some(end) = partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = partial.split_off(end + 1);
        let whole = std::mem::replace(partial, rest);
        let mut out = Vec::with_capacity(whole.len() + self.prefix.len() * 2);
        for line in whole.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        out
    }

    /// The unfinished line, ended, when the stream ends.
    fn finish(&mut self, err: bool) -> Vec<u8> {
        let partial = std::mem::take(&mut self.partial[usize::from(err)]);
        if partial.is_empty() {
            return partial;
        }
        let mut out = self.prefix.as_bytes().to_vec();
        out.extend_from_slice(&partial);
        out.push(b'\n');
        out
    }
}

/// `stack exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Run in the background
    #[arg(short = 'd', long = "detach")]
    detach: bool,
    /// Keep stdin open
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// User name or uid: USER[:GROUP]
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Working directory
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Every capability, no seccomp filter
    #[arg(long = "privileged")]
    privileged: bool,
    /// With a service: the replica to run in (default: the first)
    #[arg(long = "index", value_name = "N")]
    index: Option<u32>,
    /// The container (or a service of the stack here)
    container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `stack exec`: returns the process's exit code.
pub fn exec(root: &Path, args: &ExecArgs) -> miette::Result<i32> {
    let config = ExecConfig {
        args: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        tty: args.tty,
        privileged: args.privileged,
    };
    let c = client(root)?;
    let body = serde_json::json!({
        "config": config,
        "interactive": args.interactive,
        "detach": args.detach,
    });
    let run = |target: &str| {
        let call = c
            .post(&format!("/containers/{}/exec", segment(target)))
            .json(&body);
        if args.detach {
            call.ok().map(|()| None)
        } else {
            call.upgrade().map(Some)
        }
    };
    let started = match run(&args.container) {
        Err(e) if is_no_such_container(&e) => {
            let members = Services::new(&c).containers(&args.container, args.index)?;
            let first = members
                .first()
                .ok_or_else(|| miette!("No such container: {}", args.container))?;
            run(&first.id)
        }
        other => other,
    };
    let Some(stream) = started.map_err(api_error)? else {
        return Ok(0);
    };
    match relay(stream, args.interactive, args.tty).into_diagnostic()? {
        AttachEnd::Exited(code) => Ok(code),
        AttachEnd::Detached => Ok(0),
        AttachEnd::Lost => Err(miette!("the connection to the daemon was lost")),
    }
}

/// `stack stats --no-stream`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Containers (default: every running one)
    containers: Vec<String>,
}

/// `stack stats`: one snapshot of each running container's usage.
pub fn stats(root: &Path, args: &StatsArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let names: Vec<String> = if args.containers.is_empty() {
        let rows: Vec<Listed> = c.get("/containers/json").send_json().map_err(api_error)?;
        rows.into_iter()
            .filter(|l| l.state.status == Status::Running)
            .map(|l| l.record.id)
            .collect()
    } else {
        args.containers.clone()
    };
    let mut rows = Vec::new();
    for name in names {
        let s: Usage = c
            .get(&format!("/containers/{}/stats", segment(&name)))
            .query("stream", 0)
            .send_json()
            .map_err(api_error)?;
        rows.push(vec![
            s.id[..12.min(s.id.len())].to_string(),
            s.name,
            s.memory.map_or_else(
                || "-".to_string(),
                |m| {
                    format!(
                        "{} / {}",
                        human_size(m),
                        s.memory_limit.map_or("unlimited".into(), human_size)
                    )
                },
            ),
            s.cpu_ns.map_or_else(
                || "-".to_string(),
                |ns| format!("{:.2}s", Duration::from_nanos(ns).as_secs_f64()),
            ),
            s.pids.map_or_else(|| "-".to_string(), |p| p.to_string()),
        ]);
    }
    print!(
        "{}",
        table(
            &[
                "CONTAINER ID",
                "NAME",
                "MEM USAGE / LIMIT",
                "CPU TIME",
                "PIDS"
            ],
            rows
        )
    );
    Ok(0)
}

/// `stack export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file instead of stdout
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// The container
    container: String,
}

/// `stack export`: the container's file system as a tar archive.
pub fn export(root: &Path, args: &ExportArgs) -> miette::Result<i32> {
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(miette!(
            "refusing to write a tar archive to a terminal: use -o FILE or redirect the output"
        ));
    }
    let c = client(root)?;
    let mut body = c
        .get(&format!("/containers/{}/export", segment(&args.container)))
        .stream()
        .map_err(api_error)?;
    match &args.output {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", path.display()))?;
            io::copy(&mut body, &mut file).into_diagnostic()?;
            file.sync_all().into_diagnostic()?;
        }
        None => {
            io::copy(&mut body, &mut io::stdout().lock()).into_diagnostic()?;
        }
    }
    Ok(0)
}

/// `stack commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, …)
    #[arg(short = 'c', long = "change")]
    changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Author
    #[arg(short = 'a', long = "author")]
    author: Option<String>,
    /// Pause the container while committing (default true)
    #[arg(short = 'p', long = "pause", default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
    /// The container
    container: String,
    /// The new image's name
    reference: Option<String>,
}

/// `stack commit`: prints the new image id.
pub fn commit(root: &Path, args: &CommitArgs) -> miette::Result<i32> {
    for change in &args.changes {
        change
            .parse::<crate::image::changes::Change>()
            .into_diagnostic()?;
    }
    if let Some(r) = &args.reference {
        r.parse::<crate::image::reference::Reference>()
            .into_diagnostic()?;
    }
    let c = client(root)?;
    let answer: serde_json::Value = c
        .post("/commit")
        .query("container", &args.container)
        .query_opt("repo", args.reference.as_deref())
        .query_opt("comment", args.message.as_deref())
        .query_opt("author", args.author.as_deref())
        .query("pause", args.pause)
        .json(&serde_json::json!({ "changes": args.changes }))
        .send_json()
        .map_err(api_error)?;
    println!("{}", answer["Id"].as_str().unwrap_or_default());
    Ok(0)
}

/// `stack attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// The container
    container: String,
}

/// `stack attach`: the running container's output (and its stdin, when it
/// was started with `-i`) on this terminal until it exits or Ctrl-P Ctrl-Q.
pub fn attach(root: &Path, args: &AttachArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let (tty, stdin_open, id) = stdio_of(&c, &args.container)?;
    let stream = c
        .post(&format!("/containers/{}/attach", segment(&id)))
        .upgrade()
        .map_err(|e| match e.status() {
            Some(409) => miette!("you cannot attach to a stopped container, start it first"),
            _ => api_error(e),
        })?;
    match relay(stream, stdin_open && !args.no_stdin, tty).into_diagnostic()? {
        AttachEnd::Exited(code) => Ok(code),
        AttachEnd::Detached => Ok(0),
        AttachEnd::Lost => wait_for(&c, &id, "not-running"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_of_several_containers_go_out_whole_and_prefixed() {
        let mut lines = PrefixedLines::new("web-1 | ".into());
        assert_eq!(lines.feed(false, b"one\ntw"), b"web-1 | one\n");
        assert_eq!(lines.feed(true, b"oops\n"), b"web-1 | oops\n");
        assert_eq!(lines.feed(false, b"o"), b"");
        assert_eq!(
            lines.feed(false, b"\nthree\nfour\nfi"),
            b"web-1 | two\nweb-1 | three\nweb-1 | four\n"
        );
        assert_eq!(lines.finish(false), b"web-1 | fi\n");
        assert_eq!(lines.finish(true), b"");
    }
}
