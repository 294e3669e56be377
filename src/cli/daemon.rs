//! `stack daemon`, `stack info`, `stack version`, and how every other verb
//! reaches the daemon: [`client`] connects to it, starting one in the
//! background when none answers (unless `--no-autostart`).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Args;
use miette::{IntoDiagnostic, miette};
use serde_json::Value;

use crate::api::Endpoint;
use crate::api::client::{Client, ClientError};

/// How the command line reaches the daemon (global flags).
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon to talk to: unix:///PATH or tcp://HOST:PORT (default: the
    /// socket of the state root's daemon)
    #[arg(
        short = 'H',
        long = "host",
        global = true,
        env = "STACK_HOST",
        value_name = "ENDPOINT"
    )]
    host: Option<String>,
    /// Fail instead of starting a daemon when none answers
    #[arg(long = "no-autostart", global = true, env = "STACK_NO_AUTOSTART")]
    no_autostart: bool,
}

#[derive(Debug)]
struct Settings {
    root: PathBuf,
    args: ClientArgs,
    tls: super::tls::TlsArgs,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Records the global flags for [`client`]; called once by `cli::run`.
pub fn configure(root: &Path, args: &ClientArgs, tls: &super::tls::TlsArgs) {
    let _ = SETTINGS.set(Settings {
        root: root.to_path_buf(),
        args: args.clone(),
        tls: tls.clone(),
    });
}

/// Turns a client error into a diagnostic, the way Docker words them.
pub fn api_error(e: ClientError) -> miette::Report {
    match e {
        ClientError::Api { message, .. } => miette!("{message}"),
        other => miette!("{}", crate::error_chain(&other)),
    }
}

/// A client of the daemon for the state root the command line names.
pub fn client(root: &Path) -> miette::Result<Client> {
    let (root, args, tls) = match SETTINGS.get() {
        Some(s) => (s.root.clone(), s.args.clone(), s.tls.clone()),
        None => (
            root.to_path_buf(),
            ClientArgs {
                host: None,
                no_autostart: false,
            },
            super::tls::TlsArgs::default(),
        ),
    };
    let endpoint = match &args.host {
        Some(h) => Endpoint::parse(h).map_err(|e| miette!("-H: {e}"))?,
        None => Endpoint::Unix(crate::daemon::default_socket(&root)),
    };
    let tls_config = match endpoint {
        Endpoint::Tcp(_) => tls.client_config()?,
        Endpoint::Unix(_) => None,
    };
    let client = Client::new(endpoint.clone(), tls_config).map_err(api_error)?;
    let Endpoint::Unix(socket) = &endpoint else {
        return Ok(client);
    };
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Ok(client);
    }
    if args.no_autostart || args.host.is_some() {
        return Err(miette!(
            "cannot connect to the stack daemon at {endpoint}: is it running? (start it with `stack daemon`)"
        ));
    }
    autostart(&root, socket)?;
    Ok(client)
}

/// Starts `stack --root ROOT daemon` in the background, its output going to
/// `daemon.log` next to its socket, and waits until it accepts connections.
fn autostart(root: &Path, socket: &Path) -> miette::Result<()> {
    let exe = std::env::current_exe().into_diagnostic()?;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).into_diagnostic()?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .into_diagnostic()?;
    let log_err = log.try_clone().into_diagnostic()?;
    let mut child = std::process::Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C meant for this command does not
        // reach the daemon.
        .process_group(0)
        .spawn()
        .into_diagnostic()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lost a race with another starting daemon: use that one.
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if !status.success() {
                let mut text = String::new();
                let _ =
                    std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
                let last: Vec<&str> = text.lines().rev().take(5).collect();
                let last: Vec<&str> = last.into_iter().rev().collect();
                return Err(miette!(
                    "the stack daemon could not start ({status}); {}:\n{}",
                    log_path.display(),
                    last.join("\n")
                ));
            }
        }
        if Instant::now() > deadline {
            return Err(miette!(
                "the stack daemon did not answer on {} within 15 s; see {}",
                socket.display(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `stack daemon`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// The pid file (default: stack.pid in the run directory)
    #[arg(short = 'p', long = "pidfile", value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// The group that may use the API socket (default: root's)
    #[arg(short = 'G', long = "group", value_name = "GROUP")]
    group: Option<String>,
    /// Debug logging
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// The daemon's configuration file (default: /etc/stack/daemon.toml,
    /// when it exists); a setting may come from the file or a flag, not both
    #[arg(long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Ulimit for containers that set none of that name: NAME=SOFT[:HARD]
    /// (repeatable)
    #[arg(long = "default-ulimit", value_name = "ULIMIT")]
    default_ulimits: Vec<String>,
    /// Default log options for containers: max-size=SIZE, max-file=N
    /// (repeatable)
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// First delay before a restart policy restarts a container
    #[arg(
        long = "restart-delay",
        value_name = "DURATION",
        default_value = "100ms"
    )]
    restart_delay: crate::spec::duration::DurationSpec,
    /// Longest delay between restarts (the delay doubles up to it)
    #[arg(
        long = "restart-max-delay",
        value_name = "DURATION",
        default_value = "1m"
    )]
    restart_max_delay: crate::spec::duration::DurationSpec,
    /// A run this long resets the delay to --restart-delay
    #[arg(
        long = "restart-reset-after",
        value_name = "DURATION",
        default_value = "10s"
    )]
    restart_reset_after: crate::spec::duration::DurationSpec,
    /// Allow pulls and pushes over plain HTTP to this registry (host,
    /// host:port or CIDR; repeatable). localhost and 127.0.0.0/8 are always
    /// allowed
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "STACK_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// Try this mirror before Docker Hub for docker.io pulls (repeatable)
    #[arg(
        long = "registry-mirror",
        value_name = "URL",
        env = "STACK_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
    /// How containers get their root: overlay (the image's layers under a
    /// writable layer) or vfs (a full copy per container, for kernels without
    /// overlayfs). Default: the one the state root was first used with, else
    /// overlay
    #[arg(short = 's', long = "storage-driver", value_name = "DRIVER")]
    storage_driver: Option<String>,
    /// Attach containers of the default network to this existing bridge
    /// instead of making stack0
    #[arg(short = 'b', long = "bridge", value_name = "BRIDGE")]
    bridge: Option<String>,
    /// The default bridge's address and prefix length (e.g. 10.20.0.1/24);
    /// default: a free /16 from 172.18.0.0 up, then 192.168.0.0/20s
    #[arg(long = "bip", value_name = "CIDR")]
    bip: Option<String>,
    /// Give containers of the default network addresses from this range
    #[arg(long = "fixed-cidr", value_name = "CIDR")]
    fixed_cidr: Option<String>,
    /// MTU of the default network's links (default: the MTU of the host's
    /// default route)
    #[arg(long = "mtu", value_name = "BYTES")]
    mtu: Option<u32>,
    /// Enable IPv6 on the default network (needs --fixed-cidr-v6)
    #[arg(long = "ipv6")]
    ipv6: bool,
    /// IPv6 subnet of the default network (e.g. fd00:20::/64)
    #[arg(long = "fixed-cidr-v6", value_name = "CIDR")]
    fixed_cidr_v6: Option<String>,
    /// Name server for containers, and where the embedded DNS server
    /// forwards what is not a container's name (repeatable; default: the
    /// host's resolv.conf)
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// DNS search domain for containers (repeatable; default: the host's)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// DNS resolver option for containers (repeatable; default: the host's)
    #[arg(long = "dns-opt", value_name = "OPTION")]
    dns_opts: Vec<String>,
    /// Write firewall rules (NAT, published ports); false touches none
    /// (--nat is another name for it)
    #[arg(long = "iptables", visible_alias = "nat", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    iptables: Option<bool>,
    /// Masquerade traffic leaving bridge networks (default true)
    #[arg(long = "ip-masq", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    ip_masq: Option<bool>,
    /// Let containers on the default bridge talk to each other (default
    /// true)
    #[arg(long = "icc", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    icc: Option<bool>,
    /// Default host address of published ports (default: every address)
    #[arg(long = "ip", value_name = "IP")]
    ip: Option<std::net::IpAddr>,
    /// Turn on IPv4 forwarding at start (default true)
    #[arg(long = "ip-forward", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    ip_forward: Option<bool>,
    /// Keep every stack file in DIR converged (GitOps): adding one brings
    /// its stack up, editing applies it, deleting takes it down after
    /// --watch-grace. Default: /etc/stack/stacks.d when it exists (for the
    /// default --root); '' turns it off
    #[arg(long = "watch-dir", value_name = "DIR")]
    watch_dir: Option<PathBuf>,
    /// How long a stack outlives its deleted file (a checkout that deletes
    /// and re-creates it within this keeps it running)
    #[arg(long = "watch-grace", value_name = "DURATION", default_value = "30s")]
    watch_grace: crate::spec::duration::DurationSpec,
    /// Never take a stack down because its file left the watch directory
    #[arg(long = "keep-on-delete")]
    keep_on_delete: bool,
}

/// Runs the daemon in the foreground.
pub fn daemon(
    root: &Path,
    client_args: &ClientArgs,
    tls: &super::tls::TlsArgs,
    args: &DaemonArgs,
    given: &[(String, String)],
) -> miette::Result<i32> {
    // Nothing the daemon inherited besides stdio may stay open in it.
    let _ = crate::sys::close_from(3);
    use crate::daemon::config;
    let path = args
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let file = if args.config_file.is_some() {
        config::load(&path)
    } else {
        config::load_if_exists(&path)
    }
    .map_err(miette::Report::new)?;
    file.check_conflicts(&path, given)
        .map_err(miette::Report::new)?;
    let from_file = |flag: &str| !given.iter().any(|(name, _)| name == flag);
    // What the file sets fills in what the command line left out.
    let mut args = args.clone();
    let mut tls = tls.clone();
    let mut client_args = client_args.clone();
    let root = match &file.root {
        Some(r) if from_file("root") => r.clone(),
        _ => root.to_path_buf(),
    };
    if let Some(hosts) = file.hosts.clone().filter(|_| from_file("host")) {
        client_args.host = hosts.into_iter().next();
    }
    if file.pidfile.is_some() && from_file("pidfile") {
        args.pidfile = file.pidfile.clone();
    }
    if file.group.is_some() && from_file("group") {
        args.group = file.group.clone();
    }
    if let Some(d) = file.debug {
        args.debug |= d;
    }
    if file.storage_driver.is_some() && from_file("storage-driver") {
        args.storage_driver = file.storage_driver.clone();
    }
    if file.bridge.is_some() && from_file("bridge") {
        args.bridge = file.bridge.clone();
    }
    if file.bip.is_some() && from_file("bip") {
        args.bip = file.bip.clone();
    }
    if file.fixed_cidr.is_some() && from_file("fixed-cidr") {
        args.fixed_cidr = file.fixed_cidr.clone();
    }
    if file.mtu.is_some() && from_file("mtu") {
        args.mtu = file.mtu;
    }
    if let Some(v) = file.ipv6 {
        args.ipv6 |= v;
    }
    if file.fixed_cidr_v6.is_some() && from_file("fixed-cidr-v6") {
        args.fixed_cidr_v6 = file.fixed_cidr_v6.clone();
    }
    if let Some(d) = file.dns.clone().filter(|_| from_file("dns")) {
        args.dns = d;
    }
    if let Some(d) = file.dns_search.clone().filter(|_| from_file("dns-search")) {
        args.dns_search = d;
    }
    if let Some(d) = file.dns_opts.clone().filter(|_| from_file("dns-opt")) {
        args.dns_opts = d;
    }
    if file.iptables.is_some() && from_file("iptables") && from_file("nat") {
        args.iptables = file.iptables;
    }
    if file.ip_masq.is_some() && from_file("ip-masq") {
        args.ip_masq = file.ip_masq;
    }
    if file.icc.is_some() && from_file("icc") {
        args.icc = file.icc;
    }
    if file.ip.is_some() && from_file("ip") {
        args.ip = file.ip;
    }
    if file.ip_forward.is_some() && from_file("ip-forward") {
        args.ip_forward = file.ip_forward;
    }
    if let Some(m) = file
        .registry_mirrors
        .clone()
        .filter(|_| from_file("registry-mirror"))
    {
        args.registry_mirrors = m;
    }
    if let Some(i) = file
        .insecure_registries
        .clone()
        .filter(|_| from_file("insecure-registry"))
    {
        args.insecure_registries = i;
    }
    tls.tls |= file.tls.unwrap_or(false);
    tls.tlsverify |= file.tlsverify.unwrap_or(false);
    if tls.tlscert.is_none() {
        tls.tlscert = file.tlscert.clone();
    }
    if tls.tlskey.is_none() {
        tls.tlskey = file.tlskey.clone();
    }
    if tls.tlscacert.is_none() {
        tls.tlscacert = file.tlscacert.clone();
    }
    if let Some(u) = file
        .default_ulimits
        .clone()
        .filter(|_| from_file("default-ulimit"))
    {
        args.default_ulimits = u.iter().map(ToString::to_string).collect();
    }
    if let Some(o) = file.log_opts.clone().filter(|_| from_file("log-opt")) {
        args.log_opts = o.iter().map(|(k, v)| format!("{k}={v}")).collect();
    }
    if let Some(d) = file.restart_delay.filter(|_| from_file("restart-delay")) {
        args.restart_delay = d;
    }
    if let Some(d) = file
        .restart_max_delay
        .filter(|_| from_file("restart-max-delay"))
    {
        args.restart_max_delay = d;
    }
    if let Some(d) = file
        .restart_reset_after
        .filter(|_| from_file("restart-reset-after"))
    {
        args.restart_reset_after = d;
    }
    if file.watch_dir.is_some() && from_file("watch-dir") {
        args.watch_dir = file.watch_dir.clone();
    }
    if let Some(g) = file.watch_grace.filter(|_| from_file("watch-grace")) {
        args.watch_grace = g;
    }
    if let Some(k) = file.keep_on_delete {
        args.keep_on_delete |= k;
    }
    let (root, client_args, tls, args) = (root.as_path(), &client_args, &tls, &args);
    let mut options = crate::daemon::Options::for_root(root);
    let mut hosts = Vec::new();
    for h in client_args.host.iter() {
        hosts.push(Endpoint::parse(h).map_err(|e| miette!("-H: {e}"))?);
    }
    if !hosts.is_empty() {
        options.hosts = hosts;
    }
    if options.hosts.iter().any(|h| matches!(h, Endpoint::Tcp(_))) {
        options.tls = Some(tls.server_config()?.ok_or_else(|| {
            miette!(
                "listening on TCP needs TLS: --tls (or --tlsverify) with --tlscert and --tlskey"
            )
        })?);
    }
    if let Some(p) = &args.pidfile {
        options.pidfile = p.clone();
    }
    options.group = args.group.clone();
    options.debug = args.debug;
    options.backoff = crate::daemon::supervisor::BackoffConfig {
        initial: args.restart_delay.0,
        max: args.restart_max_delay.0.max(args.restart_delay.0),
        reset_after: args.restart_reset_after.0,
    };
    if let Some(name) = &args.storage_driver {
        options.storage_driver = Some(
            name.parse::<crate::image::driver::StorageDriver>()
                .map_err(|e| miette!("--storage-driver: {e}"))?,
        );
    }
    for u in &args.default_ulimits {
        let ulimit = u
            .parse::<crate::spec::ulimit::Ulimit>()
            .map_err(|e| miette!("--default-ulimit {u:?}: {e}"))?;
        options.default_ulimits.push(ulimit);
    }
    for o in &args.log_opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                let bytes = v
                    .parse::<crate::spec::size::ByteSize>()
                    .map_err(|e| miette!("--log-opt {o:?}: {e}"))?;
                options.log_max_size = Some(bytes.0);
            }
            Some(("max-file", v)) => {
                options.log_max_files = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| miette!("--log-opt {o:?}: expected a positive count"))?,
                );
            }
            _ => {
                return Err(miette!(
                    "--log-opt {o:?}: the json-file driver takes max-size=SIZE and max-file=N"
                ));
            }
        }
    }
    options.insecure_registries = args.insecure_registries.clone();
    options.registry_mirrors = args.registry_mirrors.clone();
    apply_network_flags(&mut options.default_bridge, args)?;
    options.dns.servers = args.dns.clone();
    options.dns.search = args.dns_search.clone();
    options.dns.options = args.dns_opts.clone();
    let fw = &mut options.firewall;
    fw.enabled = args.iptables.unwrap_or(true);
    fw.ip_masq = args.ip_masq.unwrap_or(true);
    fw.icc = args.icc.unwrap_or(true);
    fw.default_ip = args.ip.filter(|ip| !ip.is_unspecified());
    fw.ip_forward = args.ip_forward.unwrap_or(true);
    options.watch = crate::daemon::gitops::WatchConfig::choose(
        args.watch_dir.as_deref(),
        root,
        args.watch_grace.0,
        args.keep_on_delete,
    )
    .map_err(|e| miette!("--watch-dir: {e}"))?;
    crate::daemon::run(options).map_err(|e| miette!("{}", crate::error_chain(&e)))?;
    Ok(0)
}

/// `--bridge`, `--bip`, `--fixed-cidr` and `--mtu`, checked as dockerd
/// checks them.
fn apply_network_flags(
    bridge: &mut crate::net::DefaultBridgeConfig,
    args: &DaemonArgs,
) -> miette::Result<()> {
    if let Some(name) = &args.bridge {
        if name.is_empty() || name.len() > 15 {
            return Err(miette!("--bridge {name:?}: not a valid interface name"));
        }
        bridge.name = name.clone();
        bridge.existing = true;
    }
    if let Some(bip) = &args.bip {
        let net: ipnet::Ipv4Net = bip.parse().map_err(|_| {
            miette!(
                "--bip {bip:?}: expected an IPv4 address with a prefix length, e.g. 10.20.0.1/24"
            )
        })?;
        if net.addr() == net.network() && net.prefix_len() < 31 {
            return Err(miette!(
                "--bip {bip}: give the bridge's own address, not the network's (e.g. {}/{})",
                crate::net::ipam::first_host(net),
                net.prefix_len()
            ));
        }
        bridge.bip = Some(net);
    }
    if let Some(cidr) = &args.fixed_cidr {
        let net: ipnet::Ipv4Net = cidr
            .parse()
            .map_err(|_| miette!("--fixed-cidr {cidr:?}: expected an IPv4 CIDR"))?;
        if let Some(bip) = bridge.bip
            && !bip.trunc().contains(&net.trunc())
        {
            return Err(miette!(
                "--fixed-cidr {cidr} is not inside --bip's subnet {}",
                bip.trunc()
            ));
        }
        bridge.fixed_cidr = Some(net.trunc());
    }
    if let Some(mtu) = args.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(miette!("--mtu {mtu}: must be between 68 and 65535"));
        }
        bridge.mtu = Some(mtu);
    }
    match (&args.fixed_cidr_v6, args.ipv6) {
        (Some(cidr), true) => {
            let net: ipnet::Ipv6Net = cidr
                .parse()
                .map_err(|_| miette!("--fixed-cidr-v6 {cidr:?}: expected an IPv6 CIDR"))?;
            if net.prefix_len() > 126 {
                return Err(miette!("--fixed-cidr-v6 {cidr}: the prefix is too long"));
            }
            bridge.fixed_cidr_v6 = Some(net.trunc());
        }
        (Some(_), false) => {
            return Err(miette!("--fixed-cidr-v6 needs --ipv6"));
        }
        (None, true) => {
            return Err(miette!(
                "--ipv6 needs --fixed-cidr-v6: there is no default IPv6 pool"
            ));
        }
        (None, false) => {}
    }
    Ok(())
}

/// `stack info`.
pub fn info(root: &Path) -> miette::Result<i32> {
    let c = client(root)?;
    let info: Value = c.get("/info").send_json().map_err(api_error)?;
    let s = |k: &str| match &info[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: {}", crate::api::VERSION);
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" API Version: {}", s("ApiVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    let runtimes: Vec<String> = info["Runtimes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    println!(" Runtimes: {}", runtimes.join(" "));
    println!(" Default Runtime: {}", s("DefaultRuntime"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(" Name: {}", s("Name"));
    println!(" Stack Root Dir: {}", s("DockerRootDir"));
    println!(" Debug Mode: {}", s("Debug"));
    Ok(0)
}

/// `stack version`.
pub fn version(root: &Path) -> miette::Result<i32> {
    println!("Client:");
    println!(" Version:     {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: {}", crate::api::VERSION);
    println!(
        " OS/Arch:     {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let c = client(root)?;
    let v: Value = c.get("/version").send_json().map_err(api_error)?;
    println!();
    println!("Server:");
    for (label, key) in [
        ("Version", "Version"),
        ("API version", "ApiVersion"),
        ("Kernel", "KernelVersion"),
    ] {
        println!(" {label:<12} {}", v[key].as_str().unwrap_or_default());
    }
    println!(
        " {:<12} {}/{}",
        "OS/Arch",
        v["Os"].as_str().unwrap_or_default(),
        v["Arch"].as_str().unwrap_or_default()
    );
    Ok(0)
}

/// `stack events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show events since this time (Unix seconds, RFC 3339, or a duration
    /// like 10m before now)
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms as --since)
    #[arg(long)]
    until: Option<String>,
    /// Filter: type=…, event=…, container=…, image=…, label=KEY[=VALUE]
    /// (repeatable)
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Output: `json` for one JSON object per line
    #[arg(long)]
    format: Option<String>,
}

/// Streams events until `--until` passes (or forever).
pub fn events(root: &Path, args: &EventsArgs) -> miette::Result<i32> {
    // Checked here so a bad filter is reported before connecting.
    crate::daemon::events::EventFilter::parse(&args.filter).map_err(|e| miette!("{e}"))?;
    let now = std::time::SystemTime::now();
    for t in [&args.since, &args.until].into_iter().flatten() {
        crate::daemon::events::parse_time(t, now).map_err(|e| miette!("{e}"))?;
    }
    if let Some(f) = args.format.as_deref().filter(|f| *f != "json") {
        return Err(miette!("--format {f:?}: only json is supported for events"));
    }
    let mut grouped: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in &args.filter {
        if let Some((k, v)) = f.split_once('=') {
            grouped
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let c = client(root)?;
    let body = c
        .get("/events")
        .query_opt("since", args.since.as_deref())
        .query_opt("until", args.until.as_deref())
        .query(
            "filters",
            serde_json::to_string(&grouped).into_diagnostic()?,
        )
        .stream()
        .map_err(api_error)?;
    let reader = std::io::BufReader::new(body);
    let stdout = std::io::stdout();
    for line in std::io::BufRead::lines(reader) {
        let line = line.map_err(|e| miette!("the event stream broke off: {e}"))?;
        let mut out = stdout.lock();
        if args.format.is_some() {
            writeln!(out, "{line}").into_diagnostic()?;
        } else {
            let event: crate::daemon::events::Event =
                serde_json::from_str(&line).into_diagnostic()?;
            writeln!(out, "{}", event_line(&event)).into_diagnostic()?;
        }
        out.flush().into_diagnostic()?;
    }
    Ok(0)
}

/// Docker's text form of an event:
/// `2026-11-29T02:54:24.123456789Z container start ID (image=bb, name=x)`.
fn event_line(e: &crate::daemon::events::Event) -> String {
    let time =
        std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(e.time_nano).unwrap_or(0));
    let attrs: Vec<String> = e
        .actor
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut line = format!(
        "{} {} {} {}",
        crate::runtime::logs::rfc3339_nanos(time),
        e.kind.as_str(),
        e.action,
        e.actor.id
    );
    if !attrs.is_empty() {
        line.push_str(&format!(" ({})", attrs.join(", ")));
    }
    line
}
