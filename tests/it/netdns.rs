//! Name resolution in the daemon, as root, with real containers: the
//! embedded DNS server on user-defined networks (names, aliases, short ids,
//! round robin, forwarding to the daemon's `--dns` and to a container's own
//! `--dns`, names gone after `stop` and `rm`, names back after the daemon is
//! killed and started again), legacy links, and the default bridge's
//! resolv.conf.
//!
//! Every daemon here forwards to an upstream the test runs itself on a
//! 127.x.y.z address (port 53), so no query leaves the machine. Each test
//! has its own state root, `--bip` subnet and network subnets (10.x.y.0/24
//! from the pid and a counter, x in 230..250, apart from the other modules'
//! ranges).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use stack::net::dns::{DnsConfig, DnsServer};

use crate::host::{Host, prefix, unique_loopback};

/// How long a name may take to start (or stop) answering.
const SETTLE: Duration = Duration::from_secs(20);

/// A DNS server of the test's own on `127.x.y.z:53` answering `names`
/// (and SERVFAIL for anything else: it has no upstream).
struct Upstream {
    _rt: tokio::runtime::Runtime,
    _server: DnsServer,
    ip: Ipv4Addr,
}

impl Upstream {
    fn new(names: &[(&str, &str)]) -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = DnsServer::start(
            rt.handle().clone(),
            DnsConfig {
                upstreams: vec![],
                search: vec![],
                timeout: Duration::from_secs(1),
            },
        );
        let ip = unique_loopback();
        server
            .add_listener(SocketAddr::from((ip, 53)), "up", &[])
            .unwrap();
        for (i, (name, addr)) in names.iter().enumerate() {
            server.register(
                "up",
                &i.to_string(),
                &[name.to_string()],
                &[addr.parse().unwrap()],
            );
        }
        Upstream {
            _rt: rt,
            _server: server,
            ip,
        }
    }
}

/// A host whose daemon has its own default bridge and forwards to
/// `upstream`.
struct DnsHost {
    host: Host,
}

impl DnsHost {
    fn new(upstream: &Upstream) -> DnsHost {
        let bip = format!("{}.1/24", prefix());
        let dns = upstream.ip.to_string();
        DnsHost {
            host: Host::with_daemon(&["--bip", &bip, "--dns", &dns]),
        }
    }

    /// Creates a network with a fresh subnet; its gateway.
    fn network(&self, name: &str) -> String {
        let prefix = prefix();
        self.host.ok(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}.0/24"),
            name,
        ]);
        format!("{prefix}.1")
    }

    /// The container's address on `network`.
    fn ip(&self, container: &str, network: &str) -> IpAddr {
        let v = self.host.inspect(container);
        v["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {network}: {v}"))
            .parse()
            .unwrap()
    }

    /// Starts a container serving its name over HTTP on port 80.
    fn serve(&self, name: &str, flags: &[&str]) {
        let script = format!(
            "mkdir -p /www && echo hello-{name} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.extend(["bb", "sh", "-c", &script]);
        self.host.ok(&args);
    }

    /// `nslookup NAME` in `container` (through its resolv.conf): the
    /// addresses of the answer, or `None` when the lookup failed.
    fn lookup(&self, container: &str, name: &str) -> Option<Vec<IpAddr>> {
        let out = self
            .host
            .stack(&["exec", container, "busybox", "nslookup", name]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // Addresses after the `Name:` line (before it: the server's).
        let mut addrs: Vec<IpAddr> = text
            .lines()
            .skip_while(|l| !l.starts_with("Name:"))
            .filter_map(|l| l.strip_prefix("Address"))
            .filter_map(|l| l.rsplit([' ', '\t']).next())
            .filter_map(|a| a.parse().ok())
            .collect();
        addrs.sort();
        addrs.dedup();
        (!addrs.is_empty()).then_some(addrs)
    }

    /// Polls [`DnsHost::lookup`] until it gives `want` (`None`: fails).
    fn wait_lookup(&self, container: &str, name: &str, want: Option<Vec<IpAddr>>) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let got = self.lookup(container, name);
            if got == want {
                return;
            }
            if Instant::now() >= deadline {
                let out = self
                    .host
                    .stack(&["exec", container, "busybox", "nslookup", name]);
                panic!(
                    "{name} from {container}: {got:?}, expected {want:?}\n{}{}\ndaemon log:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.host.daemon_log(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` in `container` until it succeeds; its stdout.
    fn eventually(&self, container: &str, script: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let out = self.host.stack(&["exec", container, "sh", "-c", script]);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{script} in {container}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DnsHost {
    fn drop(&mut self) {
        let out = self.host.stack(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.host.stack(&["rm", "-f", id]);
        }
        let _ = self.host.stack(&["network", "prune", "-f"]);
    }
}

fn ips(list: &[IpAddr]) -> Option<Vec<IpAddr>> {
    let mut v = list.to_vec();
    v.sort();
    Some(v)
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name_alias_and_short_id() {
    let up = Upstream::new(&[]);
    let h = DnsHost::new(&up);
    let gateway = h.network("front");
    h.serve("web", &["--network", "front", "--network-alias", "www"]);
    let client = h.host.sleeper("client", &["--network", "front"]);
    let web = h.host.inspect("web")["Id"].as_str().unwrap().to_string();
    let resolv = h.host.sh("client", "cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {gateway}\n")) && resolv.contains("ndots:0"),
        "{resolv}"
    );
    assert_eq!(resolv.matches("nameserver").count(), 1, "{resolv}");
    for name in ["web", "www", &web[..12], "web.front"] {
        let out = h.eventually(
            "client",
            &format!("ping -c1 -W2 {name} >/dev/null && wget -qO- http://{name}/"),
        );
        assert_eq!(out.trim(), "hello-web", "{name}");
    }
    // And back, by the client's name.
    h.eventually("web", &format!("ping -c1 -W2 {} >/dev/null", &client[..12]));
    h.eventually("web", "ping -c1 -W2 client >/dev/null");
    // An alias given by `network connect` answers too.
    h.host.sleeper("late", &[]);
    h.host
        .ok(&["network", "connect", "--alias", "extra", "front", "late"]);
    let late = h.ip("late", "front");
    h.wait_lookup("client", "extra", Some(vec![late]));
}

#[test]
fn a_shared_alias_answers_every_container_in_turn() {
    let up = Upstream::new(&[]);
    let h = DnsHost::new(&up);
    h.network("rr");
    for name in ["one", "two"] {
        h.host
            .sleeper(name, &["--network", "rr", "--network-alias", "svc"]);
    }
    h.host.sleeper("client", &["--network", "rr"]);
    let both = [h.ip("one", "rr"), h.ip("two", "rr")];
    h.wait_lookup("client", "svc", ips(&both));
    // Rotated: the first address of the answer changes between queries.
    let firsts: std::collections::BTreeSet<String> = (0..4)
        .map(|_| {
            h.host
                .sh("client", "busybox nslookup -type=a svc")
                .lines()
                .skip_while(|l| !l.starts_with("Name:"))
                .find_map(|l| l.strip_prefix("Address:").map(|a| a.trim().to_string()))
                .unwrap()
        })
        .collect();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
}

#[test]
fn other_names_go_to_the_daemons_dns_or_the_containers_own() {
    let up = Upstream::new(&[("outside.test", "10.250.0.7")]);
    let own = Upstream::new(&[("outside.test", "10.250.0.8")]);
    let h = DnsHost::new(&up);
    let gateway = h.network("fwd");
    h.host.sleeper("plain", &["--network", "fwd"]);
    let own_ip = own.ip.to_string();
    h.host
        .sleeper("picky", &["--network", "fwd", "--dns", &own_ip]);
    h.wait_lookup(
        "plain",
        "outside.test",
        ips(&["10.250.0.7".parse().unwrap()]),
    );
    h.wait_lookup(
        "picky",
        "outside.test",
        ips(&["10.250.0.8".parse().unwrap()]),
    );
    // The container's own server is used through the embedded one.
    let resolv = h.host.sh("picky", "cat /etc/resolv.conf");
    assert!(
        resolv.contains(&format!("nameserver {gateway}\n")) && !resolv.contains(&own_ip),
        "{resolv}"
    );
    // On the default bridge there is no embedded server: the daemon's
    // --dns is the container's name server.
    let (code, out, err) = h.host.run(&[], &["cat", "/etc/resolv.conf"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("nameserver {}\n", up.ip)), "{out}");
}

#[test]
fn stopped_and_removed_containers_no_longer_resolve() {
    let up = Upstream::new(&[]);
    let h = DnsHost::new(&up);
    h.network("gone");
    h.host.sleeper("web", &["--network", "gone"]);
    h.host.sleeper("client", &["--network", "gone"]);
    let ip = h.ip("web", "gone");
    h.wait_lookup("client", "web", Some(vec![ip]));
    h.host.ok(&["stop", "-t", "0", "web"]);
    h.wait_lookup("client", "web", None);
    h.host.ok(&["start", "web"]);
    h.wait_lookup("client", "web", Some(vec![ip]));
    h.host.ok(&["rm", "-f", "web"]);
    h.wait_lookup("client", "web", None);
}

#[test]
fn names_resolve_again_after_the_daemon_is_killed_and_started_again() {
    let up = Upstream::new(&[]);
    let mut h = DnsHost::new(&up);
    h.network("live");
    h.host
        .sleeper("web", &["--network", "live", "--network-alias", "www"]);
    h.host.sleeper("client", &["--network", "live"]);
    let ip = h.ip("web", "live");
    h.wait_lookup("client", "www", Some(vec![ip]));
    let pid = h.host.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.host.start_daemon();
    // The daemon's table is rebuilt from the records: both names, through
    // the same gateway the containers' resolv.conf names.
    h.wait_lookup("client", "www", Some(vec![ip]));
    h.wait_lookup("client", "web", Some(vec![ip]));
}

#[test]
fn links_give_dockers_variables_and_hosts_entries() {
    let up = Upstream::new(&[]);
    let h = DnsHost::new(&up);
    h.host.sleeper(
        "db",
        &[
            "--expose",
            "5432",
            "-e",
            "PG_VERSION=9.3",
            "--hostname",
            "dbhost",
        ],
    );
    let db_ip = h.ip("db", "bridge");
    let out = h.host.ok(&[
        "run",
        "--name",
        "web",
        "--link",
        "db:mydb",
        "bb",
        "sh",
        "-c",
        "env; cat /etc/hosts",
    ]);
    for want in [
        format!("MYDB_PORT=tcp://{db_ip}:5432"),
        format!("MYDB_PORT_5432_TCP=tcp://{db_ip}:5432"),
        format!("MYDB_PORT_5432_TCP_ADDR={db_ip}"),
        "MYDB_PORT_5432_TCP_PORT=5432".to_string(),
        "MYDB_PORT_5432_TCP_PROTO=tcp".to_string(),
        "MYDB_NAME=/web/mydb".to_string(),
        "MYDB_ENV_PG_VERSION=9.3".to_string(),
        format!("{db_ip}\tmydb dbhost db"),
    ] {
        assert!(out.lines().any(|l| l == want), "{want:?} in {out}");
    }
    assert!(!out.contains("MYDB_ENV_HOSTNAME"), "{out}");
    assert_eq!(
        h.host.inspect("web")["HostConfig"]["Links"],
        serde_json::json!(["/db:/web/mydb"])
    );
    // Docker's refusals.
    h.host.sleeper("old", &[]);
    h.host.ok(&["stop", "-t", "0", "old"]);
    let err = h
        .host
        .fails(&["run", "--name", "web2", "--link", "old:x", "bb", "true"]);
    assert!(
        err.contains("Cannot link to a non running container: /old AS /web2/x"),
        "{err}"
    );
    let err = h.host.fails(&["run", "--link", "nope", "bb", "true"]);
    assert!(
        err.contains("could not get container for nope: No such container: nope"),
        "{err}"
    );
    let err = h
        .host
        .fails(&["run", "--network", "host", "--link", "db", "bb", "true"]);
    assert!(
        err.contains("host type networking can't be used with links"),
        "{err}"
    );
}

#[test]
fn a_link_on_a_user_network_is_a_name_in_its_dns() {
    let up = Upstream::new(&[]);
    let h = DnsHost::new(&up);
    h.network("linked");
    h.host.sleeper("db", &["--network", "linked"]);
    let db_ip = h.ip("db", "linked");
    h.host
        .sleeper("app", &["--network", "linked", "--link", "db:mydb"]);
    h.wait_lookup("app", "mydb", Some(vec![db_ip]));
    assert_eq!(
        h.host.inspect("app")["NetworkSettings"]["Networks"]["linked"]["Links"],
        serde_json::json!(["db:mydb"])
    );
    // No variables there (Docker's rule for user-defined networks).
    let env = h
        .host
        .sh("app", "cat /proc/1/environ | busybox tr '\\0' '\\n'");
    assert!(!env.contains("MYDB_"), "{env}");
}

#[test]
fn default_bridge_containers_get_the_hosts_resolvers_not_the_gateway() {
    let bip = format!("{}.1/24", prefix());
    let host = Host::with_daemon(&["--bip", &bip]);
    let (code, out, err) = host.run(&[], &["cat", "/etc/resolv.conf"]);
    assert_eq!(code, 0, "{err}");
    let gateway = bip.trim_end_matches("/24");
    assert!(!out.contains(gateway), "{out}");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let want = stack::reconcile::container::resolv_conf_with(
        &host_resolv,
        &stack::reconcile::container::DnsSettings::default(),
        stack::reconcile::container::Resolver::Private,
    );
    let servers = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("nameserver"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(servers(&out), servers(&want), "{out}");
    assert!(
        !servers(&out).iter().any(|s| s.contains(" 127.")),
        "loopback servers are left out: {out}"
    );
}
