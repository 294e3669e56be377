//! Published ports, NAT and the daemon's firewall options on real
//! containers, as root: ports answer from the host (127.0.0.1 and a
//! non-loopback address) and from "another host" (a network namespace the
//! test makes, joined to the host by a veth pair) with the client's address
//! kept; `-P` and `stack port`; a port held by another container is
//! refused; internal networks cannot reach out; the rules outlive a killed
//! daemon and are repaired when flushed; `rm` and `network rm` take their
//! rules away; `--icc=false` isolates containers on the default bridge.
//!
//! Each test has its own state root (so its own nftables table, named from
//! the root), its own default bridge subnet and network subnets
//! (10.x.y.0/24, x from the pid, y from a counter) and its own namespace
//! and link names; [`Outside`] removes what it made in Drop.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::host::{Host, prefix};
use crate::output_within;

/// How long a published port may take to answer (the container's server
/// starting up included).
const ANSWER: Duration = Duration::from_secs(20);

fn run(program: &str, args: &[&str]) -> String {
    let out = output_within(Command::new(program).args(args), Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// "Another host": a network namespace joined to the host by a veth pair,
/// host end `<name>h` at `<prefix>.1/24`, its end at `<prefix>.2/24` with a
/// default route through the host.
struct Outside {
    name: String,
    prefix: String,
}

impl Outside {
    fn new() -> Outside {
        let name = format!("stkp{}", crate::host::unique());
        let outside = Outside {
            name: name.clone(),
            prefix: prefix(),
        };
        run("ip", &["netns", "add", &name]);
        let host_end = format!("{name}h");
        run(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", outside.host_ip()),
                "dev",
                &host_end,
            ],
        );
        run("ip", &["link", "set", &host_end, "up"]);
        let ns = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        ns(&["link", "set", "lo", "up"]);
        ns(&[
            "addr",
            "add",
            &format!("{}/24", outside.ip()),
            "dev",
            "eth0",
        ]);
        ns(&["link", "set", "eth0", "up"]);
        ns(&[
            "route",
            "add",
            "default",
            "via",
            &outside.host_ip().to_string(),
        ]);
        outside
    }

    /// The host's address on the link: a non-loopback host address.
    fn host_ip(&self) -> Ipv4Addr {
        format!("{}.1", self.prefix).parse().unwrap()
    }

    /// The other host's address.
    fn ip(&self) -> Ipv4Addr {
        format!("{}.2", self.prefix).parse().unwrap()
    }

    /// Runs `f` in the other host's network namespace (sockets made there
    /// stay there).
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        stack::sys::in_netns(&PathBuf::from("/run/netns").join(&self.name), f).unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end and so the pair.
        let _ = output_within(
            Command::new("ip").args(["link", "del", &format!("{}h", self.name)]),
            Duration::from_secs(20),
        );
        let _ = output_within(
            Command::new("ip").args(["netns", "del", &self.name]),
            Duration::from_secs(20),
        );
    }
}

/// A test host whose daemon has its own default bridge subnet (and
/// `extra` daemon flags).
fn port_host(extra: &[&str]) -> Host {
    let bip = format!("{}.1/24", prefix());
    let mut args = vec!["--bip", bip.as_str()];
    args.extend_from_slice(extra);
    Host::with_daemon(&args)
}

/// The daemon's table name for the host's root.
fn table(host: &Host) -> String {
    stack::daemon::firewall::table_name(&host.root())
}

/// `nft list table inet T` (empty when the table does not exist).
fn rules(host: &Host) -> String {
    let out = output_within(
        Command::new("nft").args(["-s", "list", "table", "inet", &table(host)]),
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The container's address on `network`.
fn ip_of(host: &Host, container: &str, network: &str) -> Ipv4Addr {
    let v = host.inspect(container);
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no address on {network}: {v}"))
        .parse()
        .unwrap()
}

/// The host port `stack port CONTAINER PORT` prints (`0.0.0.0:N`).
fn host_port(host: &Host, container: &str, port: &str) -> u16 {
    let out = host.ok(&["port", container, port]);
    out.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("stack port {container} {port}: {out:?}"))
}

/// Starts busybox httpd serving `body` on port 80.
fn serve_http(host: &Host, name: &str, flags: &[&str], body: &str) {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(flags);
    args.extend(["bb", "sh", "-c", &script]);
    host.ok(&args);
}

/// What a TCP server at `addr` sends after `request`, polling until it
/// answers (the server may still be starting).
fn tcp_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let deadline = Instant::now() + ANSWER;
    loop {
        let attempt =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(request)?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            });
        match attempt {
            Ok(text) if !text.is_empty() => return text,
            _ if Instant::now() > deadline => panic!("{addr} did not answer: {attempt:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The answer of a UDP server at `addr` to `message`, sending again until
/// one comes (the server may still be starting).
fn udp_exchange(addr: SocketAddr, message: &[u8]) -> String {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + ANSWER;
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(message, addr).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => assert!(Instant::now() < deadline, "{addr}/udp did not answer: {e}"),
        }
    }
}

/// Perl (the host's, run chrooted into the host's root mounted at /host
/// in the container, so in the container's network namespace): a UDP echo
/// on 5353 and a TCP server on 7000, both answering with the address they
/// see the client at. busybox has no UDP server and no way to show a TCP
/// peer's address.
const PEER_SERVERS: &str = r#"
use IO::Socket::INET;
$| = 1;
if (fork() == 0) {
    my $u = IO::Socket::INET->new(LocalPort => 5353, Proto => "udp") or die "udp: $!";
    while (1) {
        my $peer = $u->recv(my $m, 2048);
        my ($port, $ip) = sockaddr_in($peer);
        $u->send("from " . inet_ntoa($ip) . ": $m", 0, $peer);
    }
}
my $l = IO::Socket::INET->new(LocalPort => 7000, Listen => 10, ReuseAddr => 1) or die "tcp: $!";
while (my $c = $l->accept) {
    print $c "from " . $c->peerhost . "\n";
    close $c;
}
"#;

fn serve_peers(host: &Host, name: &str, flags: &[&str]) {
    let script = host.work().join("peers.pl");
    std::fs::write(&script, PEER_SERVERS).unwrap();
    let mut args = vec!["run", "-d", "--name", name, "-v", "/:/host:ro"];
    args.extend_from_slice(flags);
    let script = script.to_string_lossy().into_owned();
    args.extend(["bb", "chroot", "/host", "perl", &script]);
    host.ok(&args);
}

#[test]
fn published_tcp_and_udp_ports_answer_on_the_host_and_keep_the_clients_address() {
    let host = port_host(&[]);
    let outside = Outside::new();
    serve_http(&host, "web", &["-p", "80"], "hello-ports");
    serve_peers(&host, "peers", &["-p", "5353:5353/udp", "-p", "7000"]);
    // 5353 may be taken on a host with mDNS; the create would have said.
    let web = host_port(&host, "web", "80");
    let udp = host_port(&host, "peers", "5353/udp");
    let tcp = host_port(&host, "peers", "7000");
    assert_eq!(udp, 5353);

    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(outside.host_ip()),
    ] {
        let page = tcp_exchange((ip, web).into(), b"GET / HTTP/1.0\r\n\r\n");
        assert!(page.contains("hello-ports"), "{ip}: {page}");
        let echo = udp_exchange((ip, udp).into(), b"ping");
        assert!(echo.ends_with(": ping"), "{ip}: {echo}");
    }

    // From another host: the container sees the client's own address.
    let to = SocketAddr::from((outside.host_ip(), tcp));
    let seen = outside.within(|| tcp_exchange(to, b""));
    assert_eq!(seen.trim(), format!("from {}", outside.ip()));
    let to = SocketAddr::from((outside.host_ip(), udp));
    let seen = outside.within(|| udp_exchange(to, b"hi"));
    assert_eq!(seen, format!("from {}: hi", outside.ip()));

    // Docker's shapes: inspect, ps.
    let v = host.inspect("web");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        web.to_string()
    );
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostIp"],
        "0.0.0.0"
    );
    assert_eq!(v["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], "");
    assert!(v["Config"]["ExposedPorts"]["80/tcp"].is_object(), "{v}");
    let ps = host.ok(&["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(ps.contains(&format!("web 0.0.0.0:{web}->80/tcp")), "{ps}");
}

/// Containers started at once, whose firewall syncs the daemon coalesces,
/// all answer on their ports; the listing kept for the next start's drift
/// check (taken off the path of the starts) catches up with every rule.
#[test]
fn ports_of_containers_started_at_once_all_answer_and_the_kept_listing_catches_up() {
    let host = port_host(&[]);
    let names: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            let host = &host;
            s.spawn(move || serve_http(host, name, &["-p", "80"], &format!("hello-{name}")));
        }
    });
    for name in &names {
        let port = host_port(&host, name, "80");
        let page = tcp_exchange(
            (Ipv4Addr::LOCALHOST, port).into(),
            b"GET / HTTP/1.0\r\n\r\n",
        );
        assert!(page.contains(&format!("hello-{name}")), "{name}: {page}");
    }
    let listing = host.root().join("firewall.nft");
    let deadline = Instant::now() + ANSWER;
    loop {
        let kept = std::fs::read_to_string(&listing).unwrap_or_default();
        // Our table first (DOCKER-USER rules follow on a host with Docker).
        if kept.starts_with(&rules(&host)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kept listing never matched the rules:\n{kept}\n---\n{}",
            rules(&host)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kept = std::fs::read_to_string(&listing).unwrap();
    for name in &names {
        let ip = ip_of(&host, name, "bridge");
        assert!(
            kept.contains(&format!("dnat ip to {ip}:80")),
            "{name}: {kept}"
        );
    }
}

#[test]
fn publish_all_maps_every_exposed_port_and_a_taken_port_names_its_container() {
    let host = port_host(&[]);
    host.sleeper(
        "all",
        &["-P", "--expose", "80", "--expose", "9000-9001/udp"],
    );
    let listing = host.ok(&["port", "all"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    for (line, key) in lines.iter().zip(["80/tcp", "9000/udp", "9001/udp"]) {
        assert!(line.starts_with(&format!("{key} -> 0.0.0.0:")), "{listing}");
    }
    let port = host_port(&host, "all", "80");
    let only = host.ok(&["port", "all", "80/tcp"]);
    assert_eq!(only.trim(), format!("0.0.0.0:{port}"));
    // Its rules exist while it runs: one DNAT per port.
    let ip = ip_of(&host, "all", "bridge");
    let table = rules(&host);
    assert_eq!(
        table.matches(&format!("dnat ip to {ip}:")).count(),
        3,
        "{table}"
    );

    // The port is the first container's, running or not.
    host.ok(&["stop", "-t", "0", "all"]);
    let err = host.fails(&[
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        &format!("{port}:80"),
        "bb",
        "sleep",
        "1000",
    ]);
    assert!(
        err.contains("already allocated") && err.contains("\"all\""),
        "{err}"
    );
    assert!(host.stack(&["inspect", "second"]).status.code() != Some(0));
    // Stopped: no rule, the ports kept; started again: the same ports.
    assert!(!rules(&host).contains(&ip.to_string()));
    host.ok(&["start", "all"]);
    assert_eq!(host_port(&host, "all", "80"), port);
    assert!(rules(&host).contains(&format!("dport {port} dnat ip to {ip}:80")));
    // ps filters: publish takes published container ports, expose any.
    let names = |filter: &str| host.ok(&["ps", "--filter", filter, "--format", "{{.Names}}"]);
    assert_eq!(names("publish=80").trim(), "all");
    assert_eq!(names("expose=9000-9001/udp").trim(), "all");
    assert_eq!(names("publish=81").trim(), "");
}

#[test]
fn an_internal_network_cannot_reach_out_and_the_default_bridge_can() {
    let host = port_host(&[]);
    let outside = Outside::new();
    let subnet = format!("{}.0/24", prefix());
    host.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &subnet,
        "inner",
    ]);
    let target = outside.ip().to_string();
    let (code, out, err) = host.run(&[], &["ping", "-c", "1", "-W", "5", &target]);
    assert_eq!(code, 0, "the default bridge reaches out: {out}{err}");
    let (code, out, _) = host.run(
        &["--network", "inner"],
        &["ping", "-c", "1", "-W", "2", &target],
    );
    assert_ne!(code, 0, "an internal network reached out: {out}");
    // Its subnet is not masqueraded; the default bridge's is.
    let table = rules(&host);
    assert!(
        !table.contains(&format!("saddr {subnet} masquerade")),
        "{table}"
    );
}

#[test]
fn rules_outlive_a_killed_daemon_are_repaired_when_flushed_and_go_with_rm_and_network_rm() {
    let mut host = port_host(&[]);
    let subnet = format!("{}.0/24", prefix());
    host.ok(&["network", "create", "--subnet", &subnet, "front"]);
    serve_http(
        &host,
        "web",
        &["--network", "front", "-p", "80"],
        "still-here",
    );
    let port = host_port(&host, "web", "80");
    let ip = ip_of(&host, "web", "front");
    let page = tcp_exchange(
        (Ipv4Addr::LOCALHOST, port).into(),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(page.contains("still-here"), "{page}");
    let before = rules(&host);
    assert!(before.contains(&format!("dnat ip to {ip}:80")), "{before}");

    // SIGKILL: the rules stay in the kernel and the port answers.
    let pid = host.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let page = tcp_exchange(
        (Ipv4Addr::LOCALHOST, port).into(),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(page.contains("still-here"), "{page}");
    host.start_daemon();
    assert_eq!(rules(&host), before, "a restart changed the rules");

    // Flushed while the daemon is away: repaired at its start.
    let pid = host.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    run("nft", &["flush", "table", "inet", &table(&host)]);
    assert!(!rules(&host).contains("dnat"));
    host.start_daemon();
    assert_eq!(rules(&host), before, "the flushed table was not repaired");
    let log = std::fs::read_to_string(host.root().parent().unwrap().join("daemon.log")).unwrap();
    assert!(log.contains("repairing"), "{log}");
    let page = tcp_exchange(
        (Ipv4Addr::LOCALHOST, port).into(),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(page.contains("still-here"), "{page}");

    // rm: none of the container's rules remain; network rm: none of the
    // network's.
    host.ok(&["rm", "-f", "web"]);
    let after = rules(&host);
    assert!(!after.contains(&ip.to_string()), "{after}");
    assert!(after.contains(&subnet), "{after}");
    host.ok(&["network", "rm", "front"]);
    let after = rules(&host);
    assert!(!after.contains(&subnet), "{after}");
}

#[test]
fn icc_false_keeps_default_bridge_containers_apart() {
    let host = port_host(&["--icc=false"]);
    serve_http(&host, "web-a", &[], "reach-a");
    let ip = ip_of(&host, "web-a", "bridge");
    // The host reaches it (so it serves)...
    let page = tcp_exchange((ip, 80).into(), b"GET / HTTP/1.0\r\n\r\n");
    assert!(page.contains("reach-a"), "{page}");
    // ...another container on the bridge does not.
    let url = format!("http://{ip}/");
    let (code, out, _) = host.run(&[], &["wget", "-q", "-T", "3", "-O", "-", &url]);
    assert_ne!(code, 0, "icc=false let a container in: {out}");
    let (code, out, _) = host.run(&[], &["ping", "-c", "1", "-W", "2", &ip.to_string()]);
    assert_ne!(code, 0, "icc=false let a ping through: {out}");
    // The isolation is ours: the bridge table drops within the subnet.
    let bridge = run("nft", &["-s", "list", "table", "bridge", &table(&host)]);
    let subnet = format!("{}.0/24", ip.to_string().rsplit_once('.').unwrap().0);
    assert!(
        bridge.contains(&format!("ip saddr {subnet} ip daddr {subnet} drop")),
        "{bridge}"
    );
}

#[test]
fn iptables_false_writes_no_rules_and_ip_sets_the_default_host_address() {
    let host = port_host(&["--iptables=false", "--ip", "127.0.0.1"]);
    host.sleeper("quiet", &["-p", "80"]);
    let shown = host.ok(&["port", "quiet", "80"]);
    assert!(shown.trim().starts_with("127.0.0.1:"), "{shown}");
    let out = output_within(
        Command::new("nft").args(["list", "table", "inet", &table(&host)]),
        Duration::from_secs(20),
    );
    assert!(
        !out.status.success(),
        "--iptables=false made a table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn network_options_turn_masquerade_and_icc_off_per_network() {
    let host = port_host(&[]);
    let subnet = format!("{}.0/24", prefix());
    host.ok(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    let inet = rules(&host);
    assert!(
        inet.contains(&format!("ip saddr {subnet} ct status dnat masquerade")),
        "{inet}"
    );
    assert!(
        !inet.contains(&format!("ip saddr {subnet} masquerade")),
        "{inet}"
    );
    let bridge = run("nft", &["-s", "list", "table", "bridge", &table(&host)]);
    assert!(
        bridge.contains(&format!("ip saddr {subnet} ip daddr {subnet} drop")),
        "{bridge}"
    );
}
