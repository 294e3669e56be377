//! The firewall (`stack::net::firewall`) on real kernel objects, independent
//! of the networking core: each test builds its own network namespaces with
//! iproute2 — a "host" with a bridge and an uplink, "containers" on the
//! bridge, and an "outside" host on the uplink — applies a ruleset with a
//! test-unique table in the host namespace, and sends real TCP and UDP
//! traffic through it. Nothing touches the real host's tables or links.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use stack::net::firewall::{
    BridgeNet, Firewall, FirewallError, Forward, PortOwner, PortRequest, Proto, Ruleset,
};

use crate::output_within;

/// How long a connection that must succeed may take to answer.
const ANSWER: Duration = Duration::from_secs(5);
/// How long we wait for an answer that must not come (a dropped packet has
/// no other sign).
const SILENCE: Duration = Duration::from_secs(1);

/// Runs `ip ARGS…` and fails the test if it fails.
fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) -> String {
    let out = output_within(Command::new(program).args(args), Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces of one test: `host` with bridge `br0` (`bridge_net`, gateway
/// .1) and uplink `up0` (`uplink_net`, .1), containers on the bridge, and
/// `outside` at uplink .2.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// The bridge's /24, `10.X.Y.0` as (X, Y).
    bridge: (u8, u8),
    /// The uplink's /24.
    uplink: (u8, u8),
    table: String,
}

impl Lab {
    fn new() -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "firewall tests need root (network namespaces, nftables)"
        );
        let prefix = format!("stkfw{}", crate::host::unique());
        let mut lab = Lab {
            table: format!("t{}", &prefix),
            prefix,
            namespaces: Vec::new(),
            bridge: crate::host::subnet(),
            uplink: crate::host::subnet(),
        };
        let host = lab.netns("h");
        let outside = lab.netns("x");
        let gateway = format!("{}/24", lab.gateway());
        ip(&["-n", &host, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &host, "addr", "add", &gateway, "dev", "br0"]);
        ip(&["-n", &host, "link", "set", "br0", "up"]);
        ip(&[
            "-n", &host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
            &outside,
        ]);
        let uplink = format!("{}/24", lab.uplink_host());
        let outside_addr = format!("{}/24", lab.outside());
        ip(&["-n", &host, "addr", "add", &uplink, "dev", "up0"]);
        ip(&["-n", &host, "link", "set", "up0", "up"]);
        ip(&["-n", &outside, "addr", "add", &outside_addr, "dev", "eth0"]);
        ip(&["-n", &outside, "link", "set", "eth0", "up"]);
        lab.firewall().enable_ip_forward(false).unwrap();
        lab
    }

    /// Adds a network namespace `<prefix><suffix>` with loopback up.
    fn netns(&mut self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    fn host(&self) -> String {
        format!("{}h", self.prefix)
    }

    fn outside_ns(&self) -> String {
        format!("{}x", self.prefix)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.bridge.0, self.bridge.1, 1)
    }

    fn subnet(&self) -> ipnet::IpNet {
        format!("10.{}.{}.0/24", self.bridge.0, self.bridge.1)
            .parse()
            .unwrap()
    }

    fn uplink_host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.uplink.0, self.uplink.1, 1)
    }

    fn outside(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.uplink.0, self.uplink.1, 2)
    }

    fn container_ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.bridge.0, self.bridge.1, 1 + n)
    }

    /// A "container" namespace `c<n>` on the bridge at `.1+n`, with a
    /// default route through the gateway. Returns its namespace name.
    fn container(&mut self, n: u8) -> String {
        let ns = self.netns(&format!("c{n}"));
        let host = self.host();
        let veth = format!("veth{n}");
        ip(&[
            "-n", &host, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &host, "link", "set", &veth, "master", "br0", "up"]);
        // What the networking core does for every port (as Docker does
        // without its userland proxy): hairpin traffic DNATed back to the
        // port it came from is bridged there, not routed, with br_netfilter.
        ip(&[
            "-n",
            &host,
            "link",
            "set",
            &veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ]);
        let addr = format!("{}/24", self.container_ip(n));
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        let gateway = self.gateway().to_string();
        ip(&["-n", &ns, "route", "add", "default", "via", &gateway]);
        ns
    }

    /// Lets the outside host route to the bridge subnet through the host
    /// (as a router on the same LAN would).
    fn route_outside_to_bridge(&self) {
        let subnet = self.subnet().to_string();
        let via = self.uplink_host().to_string();
        ip(&[
            "-n",
            &self.outside_ns(),
            "route",
            "add",
            &subnet,
            "via",
            &via,
        ]);
    }

    /// Turns br_netfilter's passing of bridged IPv4 traffic to the IP hooks
    /// on or off in the host namespace.
    fn bridge_nf(&self, on: bool) {
        let value = if on { "1" } else { "0" };
        inside(&self.host(), || {
            std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", value)
        })
        .unwrap();
    }

    fn firewall(&self) -> Firewall {
        Firewall::new(&self.table)
            .unwrap()
            .with_netns(netns_path(&self.host()))
    }

    fn network(&self) -> BridgeNet {
        BridgeNet {
            bridge: "br0".to_owned(),
            subnet: self.subnet(),
            internal: false,
            masquerade: true,
            icc: true,
        }
    }

    fn forward(&self, proto: Proto, host_port: u16, container: u8, port: u16) -> Forward {
        Forward {
            proto,
            host_ip: None,
            host_port,
            container_ip: IpAddr::V4(self.container_ip(container)),
            container_port: port,
            bridge: "br0".to_owned(),
        }
    }

    /// `nft list tables` in the host namespace.
    fn tables(&self) -> String {
        run(
            "ip",
            &["netns", "exec", &self.host(), "nft", "list", "tables"],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace takes its links, addresses and nft tables.
        for ns in self.namespaces.iter().rev() {
            let _ = output_within(
                Command::new("ip").args(["netns", "del", ns]),
                Duration::from_secs(20),
            );
        }
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `f` in namespace `ns` (sockets it opens stay there).
fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    stack::sys::in_netns(&netns_path(ns), f).unwrap()
}

/// A server that answers every TCP connection or UDP datagram with the
/// source address it saw; stops when dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn tcp(ns: &str, port: u16) -> Server {
        let listener = inside(ns, || TcpListener::bind(("0.0.0.0", port))).unwrap();
        listener.set_nonblocking(true).unwrap();
        Server::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                let mut fds = [nix::poll::PollFd::new(
                    listener.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) == 0
                {
                    continue;
                }
                if let Ok((mut stream, peer)) = listener.accept() {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(peer.ip().to_string().as_bytes());
                }
            }
        })
    }

    fn udp(ns: &str, port: u16) -> Server {
        let socket = inside(ns, || UdpSocket::bind(("0.0.0.0", port))).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Server::spawn(move |stop| {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(peer.ip().to_string().as_bytes(), peer);
                }
            }
        })
    }

    fn spawn(serve: impl FnOnce(&AtomicBool) + Send + 'static) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        Server {
            stop,
            thread: Some(std::thread::spawn(move || serve(&flag))),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects from namespace `ns` to `addr` over TCP and returns what the
/// server said: the source address it saw.
fn tcp_ask(ns: &str, addr: SocketAddr, limit: Duration) -> std::io::Result<String> {
    let mut stream = inside(ns, || TcpStream::connect_timeout(&addr, limit))?;
    stream.set_read_timeout(Some(limit))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Sends a datagram from namespace `ns` to `addr` and returns the answer.
fn udp_ask(ns: &str, addr: SocketAddr) -> std::io::Result<String> {
    let socket = inside(ns, || UdpSocket::bind(("0.0.0.0", 0)))?;
    socket.set_read_timeout(Some(ANSWER))?;
    socket.send_to(b"who am i", addr)?;
    let mut buf = [0u8; 64];
    let (len, from) = socket.recv_from(&mut buf)?;
    assert_eq!(from, addr, "the answer comes from the address asked");
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn published_tcp_and_udp_ports_answer_on_loopback_and_host_address_with_the_client_source() {
    published_ports_answer(true);
}

#[test]
fn published_ports_answer_without_br_netfilter() {
    published_ports_answer(false);
}

/// With `bridge_nf`, bridged IPv4 traffic passes the IP hooks (what
/// `br_netfilter` does, and Docker turns on); without, only routed traffic does.
fn published_ports_answer(bridge_nf: bool) {
    let mut lab = Lab::new();
    lab.bridge_nf(bridge_nf);
    let c = lab.container(1);
    let _web = Server::tcp(&c, 80);
    let _hidden = Server::tcp(&c, 81);
    let _dns = Server::udp(&c, 53);
    let fw = lab.firewall();
    fw.apply(&Ruleset {
        networks: vec![lab.network()],
        ports: vec![
            lab.forward(Proto::Tcp, 8080, 1, 80),
            lab.forward(Proto::Udp, 5353, 1, 53),
        ],
    })
    .unwrap();
    let (host, outside) = (lab.host(), lab.outside_ns());
    let loopback = Ipv4Addr::LOCALHOST;
    let gateway = lab.gateway().to_string();

    // From the host itself: 127.0.0.1 is masqueraded to the gateway (the
    // container could not answer 127.0.0.1); the host address is kept.
    assert_eq!(
        tcp_ask(&host, sock(loopback, 8080), ANSWER).unwrap(),
        gateway
    );
    assert_eq!(
        tcp_ask(&host, sock(lab.uplink_host(), 8080), ANSWER).unwrap(),
        lab.uplink_host().to_string()
    );
    assert_eq!(udp_ask(&host, sock(loopback, 5353)).unwrap(), gateway);
    assert_eq!(
        udp_ask(&host, sock(lab.uplink_host(), 5353)).unwrap(),
        lab.uplink_host().to_string()
    );

    // From another host: the container sees the client's own address.
    let client = lab.outside().to_string();
    assert_eq!(
        tcp_ask(&outside, sock(lab.uplink_host(), 8080), ANSWER).unwrap(),
        client
    );
    assert_eq!(
        udp_ask(&outside, sock(lab.uplink_host(), 5353)).unwrap(),
        client
    );

    // Hairpin: the container reaches its own published port through the
    // host address.
    assert_eq!(
        tcp_ask(&c, sock(lab.uplink_host(), 8080), ANSWER).unwrap(),
        gateway
    );

    // The container listens on 81 too, but it is not published: not on the
    // host's addresses, and not directly for a host that routes to it.
    assert!(tcp_ask(&host, sock(loopback, 81), SILENCE).is_err());
    assert!(tcp_ask(&outside, sock(lab.uplink_host(), 81), SILENCE).is_err());
    lab.route_outside_to_bridge();
    let direct = tcp_ask(&outside, sock(lab.container_ip(1), 81), SILENCE);
    assert!(direct.is_err(), "unpublished port answered: {direct:?}");
}

#[test]
fn masquerade_rewrites_the_outbound_source_unless_turned_off() {
    let mut lab = Lab::new();
    let c = lab.container(1);
    let outside = lab.outside_ns();
    let _server = Server::tcp(&outside, 7000);
    let fw = lab.firewall();
    let mut rules = Ruleset {
        networks: vec![lab.network()],
        ports: vec![],
    };
    fw.apply(&rules).unwrap();
    let target = sock(lab.outside(), 7000);
    assert_eq!(
        tcp_ask(&c, target, ANSWER).unwrap(),
        lab.uplink_host().to_string()
    );

    // --ip-masq=false: the outside host sees the container's address (and
    // needs a route back to answer it).
    lab.route_outside_to_bridge();
    rules.networks[0].masquerade = false;
    fw.apply(&rules).unwrap();
    assert_eq!(
        tcp_ask(&c, target, ANSWER).unwrap(),
        lab.container_ip(1).to_string()
    );
}

#[test]
fn internal_network_cannot_reach_out_or_be_reached() {
    let mut lab = Lab::new();
    let c = lab.container(1);
    let outside = lab.outside_ns();
    let _out_server = Server::tcp(&outside, 7000);
    let _in_server = Server::tcp(&c, 80);
    lab.route_outside_to_bridge();
    let fw = lab.firewall();
    let mut rules = Ruleset {
        networks: vec![lab.network()],
        ports: vec![lab.forward(Proto::Tcp, 8080, 1, 80)],
    };
    fw.apply(&rules).unwrap();
    assert!(tcp_ask(&c, sock(lab.outside(), 7000), ANSWER).is_ok());
    assert!(tcp_ask(&outside, sock(lab.uplink_host(), 8080), ANSWER).is_ok());

    rules.networks[0].internal = true;
    fw.apply(&rules).unwrap();
    let out = tcp_ask(&c, sock(lab.outside(), 7000), SILENCE);
    assert!(out.is_err(), "internal network reached out: {out:?}");
    let published = tcp_ask(&outside, sock(lab.uplink_host(), 8080), SILENCE);
    assert!(
        published.is_err(),
        "internal network published: {published:?}"
    );
    // The host itself still reaches it through the bridge.
    assert!(tcp_ask(&lab.host(), sock(lab.container_ip(1), 80), ANSWER).is_ok());
}

#[test]
fn icc_off_drops_traffic_between_containers_of_one_bridge() {
    icc_off_drops(true);
}

#[test]
fn icc_off_drops_traffic_between_containers_without_br_netfilter() {
    icc_off_drops(false);
}

fn icc_off_drops(bridge_nf: bool) {
    let mut lab = Lab::new();
    lab.bridge_nf(bridge_nf);
    let c1 = lab.container(1);
    let c2 = lab.container(2);
    let _server = Server::tcp(&c2, 80);
    let fw = lab.firewall();
    let mut rules = Ruleset {
        networks: vec![lab.network()],
        ports: vec![],
    };
    let target = sock(lab.container_ip(2), 80);
    fw.apply(&rules).unwrap();
    assert_eq!(
        tcp_ask(&c1, target, ANSWER).unwrap(),
        lab.container_ip(1).to_string()
    );
    rules.networks[0].icc = false;
    fw.apply(&rules).unwrap();
    assert!(
        lab.tables()
            .contains(&format!("table bridge {}", lab.table))
    );
    let blocked = tcp_ask(&c1, target, SILENCE);
    assert!(
        blocked.is_err(),
        "icc=false let traffic through: {blocked:?}"
    );
    // The host still reaches both.
    assert!(tcp_ask(&lab.host(), target, ANSWER).is_ok());

    rules.networks[0].icc = true;
    fw.apply(&rules).unwrap();
    assert!(
        !lab.tables()
            .contains(&format!("table bridge {}", lab.table))
    );
    assert!(tcp_ask(&c1, target, ANSWER).is_ok());
}

#[test]
fn taken_host_ports_are_refused_naming_the_container_and_free_ones_are_chosen() {
    let lab = Lab::new();
    let fw = lab.firewall();
    let container = IpAddr::V4(lab.container_ip(1));
    let request = |proto, host_ports: Option<std::ops::RangeInclusive<u16>>| PortRequest {
        proto,
        host_ip: None,
        host_ports,
        container_port: 80,
    };
    let owners = vec![PortOwner {
        container: "web".to_owned(),
        forward: lab.forward(Proto::Tcp, 8080, 2, 80),
    }];

    // Another container's port: the error names it, the way Docker says it.
    let err = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Tcp, Some(8080..=8080))],
            &owners,
        )
        .unwrap_err();
    assert!(
        matches!(err, FirewallError::PortAllocated { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "bind for 0.0.0.0:8080/tcp failed: port is already allocated to container \"web\""
    );
    // The same number in UDP is free.
    let udp = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Udp, Some(8080..=8080))],
            &owners,
        )
        .unwrap();
    assert_eq!(udp[0].host_port, 8080);

    // A socket listening on the host.
    let _busy = inside(&lab.host(), || TcpListener::bind(("0.0.0.0", 9090))).unwrap();
    let err = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Tcp, Some(9090..=9090))],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, FirewallError::PortInUse { .. }), "{err:?}");
    assert!(
        stack::error_chain(&err).contains("0.0.0.0:9090/tcp failed: port is in use on the host"),
        "{}",
        stack::error_chain(&err)
    );
    // A range takes its first free port; asking twice in one call is refused.
    let picked = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Tcp, Some(9090..=9092))],
            &[],
        )
        .unwrap();
    assert_eq!(picked[0].host_port, 9091);
    let twice = fw
        .allocate(
            container,
            "br0",
            &[
                request(Proto::Tcp, Some(7000..=7000)),
                request(Proto::Tcp, Some(7000..=7000)),
            ],
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(twice, FirewallError::PortTwice { .. }),
        "{twice:?}"
    );

    // Other host addresses do not clash.
    let mut on_loopback = owners[0].clone();
    on_loopback.forward.host_ip = Some(Ipv4Addr::LOCALHOST.into());
    let specific = PortRequest {
        host_ip: Some(lab.uplink_host().into()),
        ..request(Proto::Tcp, Some(8080..=8080))
    };
    assert!(
        fw.allocate(container, "br0", &[specific], &[on_loopback])
            .is_ok()
    );

    // No host port: the kernel's ephemeral range (of the host namespace,
    // narrowed here), skipping ports in use; then none is left.
    inside(&lab.host(), || {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40003")
    })
    .unwrap();
    let _busy = inside(&lab.host(), || TcpListener::bind(("0.0.0.0", 40001))).unwrap();
    let ephemeral = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Tcp, None), request(Proto::Tcp, Some(0..=0))],
            &[],
        )
        .unwrap();
    let ports: Vec<u16> = ephemeral.iter().map(|f| f.host_port).collect();
    assert_eq!(ports, [40000, 40002]);
    let taken: Vec<PortOwner> = ephemeral
        .into_iter()
        .map(|forward| PortOwner {
            container: "db".to_owned(),
            forward,
        })
        .collect();
    let last = fw
        .allocate(container, "br0", &[request(Proto::Tcp, None)], &taken)
        .unwrap();
    assert_eq!(last[0].host_port, 40003);
    let none = fw
        .allocate(
            container,
            "br0",
            &[request(Proto::Tcp, None), request(Proto::Tcp, None)],
            &taken,
        )
        .unwrap_err();
    assert!(matches!(none, FirewallError::NoFreePort { .. }), "{none:?}");
}

#[test]
fn remove_leaves_no_table_and_current_tells_drift() {
    let mut lab = Lab::new();
    lab.container(1);
    let fw = lab.firewall();
    let mut net = lab.network();
    net.icc = false;
    let rules = Ruleset {
        networks: vec![net],
        ports: vec![lab.forward(Proto::Tcp, 8080, 1, 80)],
    };
    assert_eq!(fw.current().unwrap(), None);
    assert!(!fw.is_applied(&rules).unwrap());
    fw.apply(&rules).unwrap();
    assert!(fw.is_applied(&rules).unwrap());
    let mut other = rules.clone();
    other.ports.clear();
    assert!(!fw.is_applied(&other).unwrap());

    // The listing is stable, and changes when a rule is taken away.
    let listing = fw.current().unwrap().unwrap();
    assert_eq!(fw.current().unwrap().unwrap(), listing);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.host(),
            "nft",
            "flush",
            "chain",
            "inet",
            &lab.table,
            "published",
        ],
    );
    assert_ne!(fw.current().unwrap().unwrap(), listing);
    fw.apply(&rules).unwrap();
    assert_eq!(fw.current().unwrap().unwrap(), listing);

    fw.remove().unwrap();
    let tables = lab.tables();
    assert!(!tables.contains(&lab.table), "left behind: {tables}");
    assert_eq!(fw.current().unwrap(), None);
    // Removing what is gone is not an error.
    fw.remove().unwrap();
}

#[test]
fn docker_forward_policy_drop_does_not_stop_our_containers_and_remove_leaves_its_chain_as_it_was() {
    let mut lab = Lab::new();
    let c = lab.container(1);
    let host = lab.host();
    let outside = lab.outside_ns();
    let _server = Server::tcp(&outside, 7000);
    // What dockerd sets up, with the same tool (iptables-nft).
    let iptables = |args: &[&str]| {
        let mut full = vec!["netns", "exec", &host, "iptables"];
        full.extend_from_slice(args);
        run("ip", &full)
    };
    iptables(&["-N", "DOCKER-USER"]);
    iptables(&["-A", "DOCKER-USER", "-j", "RETURN"]);
    iptables(&["-A", "FORWARD", "-j", "DOCKER-USER"]);
    iptables(&["-P", "FORWARD", "DROP"]);
    let docker_user = iptables(&["-S", "DOCKER-USER"]);
    let target = sock(lab.outside(), 7000);
    assert!(
        tcp_ask(&c, target, SILENCE).is_err(),
        "Docker's policy drops"
    );

    let fw = lab.firewall();
    let rules = Ruleset {
        networks: vec![lab.network()],
        ports: vec![],
    };
    fw.apply(&rules).unwrap();
    // Applying twice replaces our rules instead of adding more.
    fw.apply(&rules).unwrap();
    assert_eq!(
        tcp_ask(&c, target, ANSWER).unwrap(),
        lab.uplink_host().to_string()
    );
    let ours = iptables(&["-S", "DOCKER-USER"]);
    let tag = format!("--comment \"stack:{}\"", lab.table);
    let tagged: Vec<&str> = ours.lines().filter(|l| l.contains(&tag)).collect();
    assert_eq!(
        tagged,
        [
            format!("-A DOCKER-USER -i br0 -m comment {tag} -j ACCEPT"),
            format!("-A DOCKER-USER -o br0 -m comment {tag} -j ACCEPT"),
        ],
        "{ours}"
    );

    fw.remove().unwrap();
    assert_eq!(iptables(&["-S", "DOCKER-USER"]), docker_user);
    assert!(!lab.tables().contains(&format!("inet {}", lab.table)));
    assert!(
        tcp_ask(&c, target, SILENCE).is_err(),
        "Docker's policy drops again"
    );
}
