//! The embedded DNS server over real sockets: local answers over UDP and
//! TCP, network scoping by listening address, forwarding to a real upstream
//! (another instance of the server) with the TCP retry after truncation,
//! SERVFAIL when upstreams are down, a listener on port 53 in a private
//! network namespace, and busybox's nslookup in a container as a real client.
//!
//! Each test listens on its own 127.x.y.z addresses (derived from the pid
//! and a counter), on ports the kernel picks unless port 53 is the point.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use stack::net::dns::{DnsConfig, DnsServer};

use crate::host::unique_loopback;

/// Far longer than any answer takes: only a hung server reaches it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> (u16, Vec<u8>) {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.metadata.recursion_desired = true;
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
    }
    (m.metadata.id, m.to_vec().unwrap())
}

/// Asks over UDP from `from` (any port).
fn ask_udp_from(
    from: IpAddr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Message {
    let socket = UdpSocket::bind((from, 0)).unwrap();
    ask_udp_with(&socket, server, name, qtype, edns)
}

fn ask_udp_with(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Message {
    socket.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let (id, bytes) = query(name, qtype, edns);
    socket.send_to(&bytes, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, src) = socket
        .recv_from(&mut buf)
        .expect("an answer before the client's timeout");
    assert_eq!(src, server);
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, id);
    answer
}

fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    ask_udp_from(server.ip(), server, name, qtype, None)
}

fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect_timeout(&server, CLIENT_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let (id, bytes) = query(name, qtype, None);
    let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).unwrap();
    let answer = Message::from_vec(&buf).unwrap();
    assert_eq!(answer.metadata.id, id);
    answer
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn sorted(mut v: Vec<IpAddr>) -> Vec<IpAddr> {
    v.sort();
    v
}

fn server(rt: &tokio::runtime::Runtime, upstreams: Vec<SocketAddr>) -> DnsServer {
    DnsServer::start(
        rt.handle().clone(),
        DnsConfig {
            upstreams,
            search: names(&["corp.test"]),
            timeout: Duration::from_millis(500),
        },
    )
}

fn listen(dns: &DnsServer, network: &str) -> SocketAddr {
    let addr = SocketAddr::from((unique_loopback(), 0));
    dns.add_listener(addr, network, &[]).unwrap()
}

#[test]
fn local_names_are_answered_over_udp_and_tcp() {
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let at = listen(&dns, "front");
    dns.register(
        "front",
        "c1",
        &names(&["web", "www"]),
        &[ip("10.7.0.2"), ip("fd00:7::2")],
    );

    for q in ["web", "WEB.", "www.corp.test", "web.front"] {
        let m = ask_udp(at, q, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{q}");
        assert!(m.metadata.authoritative);
        assert_eq!(addrs(&m), [ip("10.7.0.2")], "{q}");
        // The answer carries the name as asked.
        assert_eq!(
            m.answers[0].name.to_ascii().trim_end_matches('.'),
            q.trim_end_matches('.')
        );
    }
    assert_eq!(
        addrs(&ask_udp(at, "web", RecordType::AAAA)),
        [ip("fd00:7::2")]
    );
    assert_eq!(addrs(&ask_tcp(at, "web", RecordType::A)), [ip("10.7.0.2")]);
    assert_eq!(
        addrs(&ask_tcp(at, "www", RecordType::AAAA)),
        [ip("fd00:7::2")]
    );

    // A local name has no MX: an empty answer, not a forward.
    let mx = ask_udp(at, "web", RecordType::MX);
    assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
    assert!(mx.answers.is_empty());

    // PTR of a container address: NAME.NETWORK.
    let ptr = ask_udp(at, "2.0.7.10.in-addr.arpa.", RecordType::PTR);
    match &ptr.answers[..] {
        [r] => match &r.data {
            RData::PTR(p) => assert_eq!(p.0.to_ascii(), "web.front."),
            other => panic!("not a PTR: {other:?}"),
        },
        other => panic!("PTR answers: {other:?}"),
    }

    // Not local and no upstream: SERVFAIL.
    let m = ask_udp(at, "elsewhere.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn records_change_while_the_server_runs() {
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let at = listen(&dns, "n");
    assert_eq!(
        ask_udp(at, "late", RecordType::A).metadata.response_code,
        ResponseCode::ServFail
    );
    dns.register("n", "c1", &names(&["late"]), &[ip("10.7.1.2")]);
    assert_eq!(addrs(&ask_udp(at, "late", RecordType::A)), [ip("10.7.1.2")]);
    dns.register("n", "c1", &names(&["late"]), &[ip("10.7.1.3")]);
    assert_eq!(addrs(&ask_udp(at, "late", RecordType::A)), [ip("10.7.1.3")]);
    assert!(dns.unregister("n", "c1"));
    assert_eq!(
        ask_udp(at, "late", RecordType::A).metadata.response_code,
        ResponseCode::ServFail
    );
}

#[test]
fn replicas_answer_all_addresses_in_round_robin() {
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let at = listen(&dns, "n");
    for (i, c) in ["a", "b", "c"].into_iter().enumerate() {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 7, 2, 2 + u8::try_from(i).unwrap()));
        dns.register("n", c, &names(&["svc", c]), &[addr]);
    }
    let all = sorted(vec![ip("10.7.2.2"), ip("10.7.2.3"), ip("10.7.2.4")]);
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let got = addrs(&ask_udp(at, "svc", RecordType::A));
        assert_eq!(sorted(got.clone()), all);
        firsts.push(got[0]);
    }
    // Three queries, three different first addresses.
    assert_eq!(sorted(firsts), all);
}

#[test]
fn a_listener_answers_only_for_its_network_and_its_clients() {
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let front = listen(&dns, "front");
    let back = listen(&dns, "back");
    dns.register("front", "c1", &names(&["web"]), &[ip("10.7.3.2")]);
    dns.register("back", "c2", &names(&["db"]), &[ip("10.7.4.2")]);
    assert_eq!(
        addrs(&ask_udp(front, "web", RecordType::A)),
        [ip("10.7.3.2")]
    );
    assert_eq!(addrs(&ask_udp(back, "db", RecordType::A)), [ip("10.7.4.2")]);
    assert!(addrs(&ask_udp(front, "db", RecordType::A)).is_empty());
    assert!(addrs(&ask_udp(back, "web", RecordType::A)).is_empty());

    // A listener for clients of 127.x.y.0/24 only refuses other sources.
    let own = unique_loopback();
    let [a, b, c, _] = own.octets();
    let subnet: ipnet::IpNet = format!("{a}.{b}.{c}.0/24").parse().unwrap();
    let scoped = dns
        .add_listener(SocketAddr::from((own, 0)), "front", &[subnet])
        .unwrap();
    let inside = IpAddr::V4(Ipv4Addr::new(a, b, c, 250));
    let outside = IpAddr::V4(Ipv4Addr::new(a, b.wrapping_add(1), c, 250));
    let m = ask_udp_from(inside, scoped, "web", RecordType::A, None);
    assert_eq!(addrs(&m), [ip("10.7.3.2")]);
    let m = ask_udp_from(outside, scoped, "web", RecordType::A, None);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
}

#[test]
fn removed_listeners_free_their_address() {
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let at = listen(&dns, "n");
    dns.register("n", "c1", &names(&["web"]), &[ip("10.7.5.2")]);
    assert!(
        dns.add_listener(at, "n", &[]).is_err(),
        "a second listener on one address"
    );
    assert!(rt.block_on(dns.remove_listener(at)));
    assert!(!rt.block_on(dns.remove_listener(at)));
    assert!(dns.listeners().is_empty());
    // Nobody listens: the kernel refuses the datagram.
    let socket = UdpSocket::bind((at.ip(), 0)).unwrap();
    socket.connect(at).unwrap();
    socket.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    socket.send(&query("web", RecordType::A, None).1).unwrap();
    let err = socket.recv(&mut [0u8; 512]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The same address can be listened on again.
    assert_eq!(dns.add_listener(at, "n", &[]).unwrap(), at);
    assert_eq!(addrs(&ask_tcp(at, "web", RecordType::A)), [ip("10.7.5.2")]);
}

/// An upstream: another instance of the server with its own names.
fn upstream(rt: &tokio::runtime::Runtime) -> (DnsServer, SocketAddr) {
    let up = server(rt, vec![]);
    let at = listen(&up, "up");
    up.register("up", "u1", &names(&["example.test"]), &[ip("192.168.77.1")]);
    // 100 addresses: over 512 bytes, so a UDP answer without EDNS is truncated.
    let many: Vec<IpAddr> = (1..=100u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 168, 78, i)))
        .collect();
    up.register("up", "u2", &names(&["big.example.test"]), &many);
    (up, at)
}

#[test]
fn unknown_names_are_forwarded_upstream() {
    let rt = runtime();
    let (_up, up_at) = upstream(&rt);
    let dns = server(&rt, vec![up_at]);
    let at = listen(&dns, "n");
    dns.register("n", "c1", &names(&["web"]), &[ip("10.7.6.2")]);
    let m = ask_udp(at, "example.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_available);
    assert_eq!(addrs(&m), [ip("192.168.77.1")]);
    assert_eq!(
        addrs(&ask_tcp(at, "Example.Test.", RecordType::A)),
        [ip("192.168.77.1")]
    );
    // Local names still win.
    assert_eq!(addrs(&ask_udp(at, "web", RecordType::A)), [ip("10.7.6.2")]);
}

#[test]
fn a_client_with_its_own_servers_is_forwarded_to_them() {
    let rt = runtime();
    let (_up, up_at) = upstream(&rt);
    let other = server(&rt, vec![]);
    let other_at = listen(&other, "o");
    other.register("o", "x", &names(&["example.test"]), &[ip("192.168.79.1")]);
    let dns = server(&rt, vec![up_at]);
    let at = listen(&dns, "n");
    let client = IpAddr::V4(unique_loopback());
    dns.set_client_upstreams(client, vec![other_at]);
    let m = ask_udp_from(client, at, "example.test", RecordType::A, None);
    assert_eq!(addrs(&m), [ip("192.168.79.1")]);
    // Everyone else still asks the host's resolvers.
    assert_eq!(
        addrs(&ask_udp(at, "example.test", RecordType::A)),
        [ip("192.168.77.1")]
    );
    dns.set_client_upstreams(client, vec![]);
    let m = ask_udp_from(client, at, "example.test", RecordType::A, None);
    assert_eq!(addrs(&m), [ip("192.168.77.1")]);
}

#[test]
fn a_truncated_upstream_answer_is_asked_again_over_tcp() {
    let rt = runtime();
    let (_up, up_at) = upstream(&rt);
    // Asked directly over UDP without EDNS, the upstream truncates.
    let direct = ask_udp(up_at, "big.example.test", RecordType::A);
    assert!(direct.metadata.truncation);
    assert!(direct.answers.len() < 100);

    let dns = server(&rt, vec![up_at]);
    let at = listen(&dns, "n");
    // Our client asks over TCP without EDNS, so the forwarder's UDP question
    // has no EDNS either: only its TCP retry can bring all 100 addresses.
    let m = ask_tcp(at, "big.example.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.truncation);
    assert_eq!(addrs(&m).len(), 100);
    // Over UDP without EDNS the client gets a truncated answer itself …
    let m = ask_udp(at, "big.example.test", RecordType::A);
    assert!(m.metadata.truncation);
    // … and with EDNS it gets everything over UDP.
    let m = ask_udp_from(at.ip(), at, "big.example.test", RecordType::A, Some(4096));
    assert!(!m.metadata.truncation);
    assert_eq!(addrs(&m).len(), 100);
}

#[test]
fn servfail_when_every_upstream_is_down() {
    let rt = runtime();
    // One upstream whose port is closed, one that never answers.
    let closed = {
        let s = UdpSocket::bind((unique_loopback(), 0)).unwrap();
        s.local_addr().unwrap()
    };
    let silent = UdpSocket::bind((unique_loopback(), 0)).unwrap();
    let dns = server(&rt, vec![closed, silent.local_addr().unwrap()]);
    let at = listen(&dns, "n");
    let m = ask_udp(at, "unreachable.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let m = ask_tcp(at, "unreachable.test", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // The silent upstream did get the forwarded questions.
    silent.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    let q = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(q.queries[0].name().to_ascii(), "unreachable.test.");
}

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test makes a network namespace and binds port 53: it needs root"
    );
}

fn run_ok(cmd: &mut std::process::Command) {
    let out = crate::output_within(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn port_53_on_a_network_address_in_a_private_namespace() {
    require_root();
    let rt = runtime();
    let dns = server(&rt, vec![]);
    let pid = std::process::id();
    let subnet = Ipv4Addr::new(10, 213, u8::try_from(pid % 250).unwrap(), 0);
    let [a, b, c, _] = subnet.octets();
    let gateway = Ipv4Addr::new(a, b, c, 1);
    let client = Ipv4Addr::new(a, b, c, 2);
    // A thread of our own enters a new network namespace (namespaces are
    // per thread): the sockets it opens live there, and the namespace goes
    // away with them. The network's addresses sit on its loopback device
    // (this host's kernel may lack the dummy link type).
    let (udp, tcp, client_socket) = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        run_ok(std::process::Command::new("ip").args(["link", "set", "lo", "up"]));
        for addr in [gateway, client] {
            run_ok(std::process::Command::new("ip").args([
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "lo",
            ]));
        }
        let udp = UdpSocket::bind((gateway, 53)).unwrap();
        let tcp = std::net::TcpListener::bind((gateway, 53)).unwrap();
        let client_socket = UdpSocket::bind((client, 0)).unwrap();
        (udp, tcp, client_socket)
    })
    .join()
    .unwrap();
    let subnet: ipnet::IpNet = format!("{subnet}/24").parse().unwrap();
    let at = dns
        .add_listener_sockets(udp, tcp, "private", &[subnet])
        .unwrap();
    assert_eq!(at, SocketAddr::from((gateway, 53)));
    dns.register("private", "c1", &names(&["web"]), &[ip("10.213.0.9")]);
    let m = ask_udp_with(&client_socket, at, "web", RecordType::A, None);
    assert_eq!(addrs(&m), [ip("10.213.0.9")]);
}

#[test]
fn busybox_nslookup_in_a_container_resolves_through_the_server() {
    let host = crate::host::Host::new();
    let rt = runtime();
    let (_up, up_at) = upstream(&rt);
    let dns = server(&rt, vec![up_at]);
    // busybox nslookup only speaks to port 53.
    let addr = unique_loopback();
    let at = dns
        .add_listener(SocketAddr::from((addr, 53)), "n", &[])
        .unwrap();
    dns.register("n", "c1", &names(&["web"]), &[ip("10.7.9.2")]);
    let server_arg = at.ip().to_string();
    for (name, want) in [("web", "10.7.9.2"), ("example.test", "192.168.77.1")] {
        let (code, out, err) = host.run(
            &["--network", "host"],
            &["busybox", "nslookup", name, &server_arg],
        );
        assert_eq!(code, 0, "nslookup {name}: {out}{err}");
        assert!(
            out.contains(&format!("Address: {want}")),
            "nslookup {name}: {out}"
        );
    }
}

#[test]
fn dns_flags_and_extra_hosts_reach_the_containers_files() {
    // A default bridge of its own (the host's address pools may be taken).
    let bip = format!("10.214.{}.1/24", std::process::id() % 250);
    let host = crate::host::Host::with_daemon(&["--bip", &bip]);
    let (code, out, err) = host.run(
        &[
            "--dns",
            "10.7.10.53",
            "--dns-search",
            "corp.test",
            "--dns-option",
            "ndots:3",
            "--add-host",
            "db.local:10.7.10.5",
            "--add-host",
            "gw:host-gateway",
        ],
        &["cat", "/etc/resolv.conf", "/etc/hosts"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("search corp.test\nnameserver 10.7.10.53\noptions ndots:3\n"),
        "{out}"
    );
    assert!(out.contains("\n10.7.10.5\tdb.local\n"), "{out}");
    // host-gateway is the gateway of the container's network (the default
    // bridge's), an address of the host.
    let bridge: serde_json::Value =
        serde_json::from_str(&host.ok(&["network", "inspect", "bridge"])).unwrap();
    let gateway = bridge[0]["IPAM"]["Config"][0]["Gateway"].as_str().unwrap();
    assert!(out.contains(&format!("\n{gateway}\tgw\n")), "{out}");
}
