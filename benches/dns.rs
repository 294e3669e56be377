//! The embedded DNS server answering local names over UDP on loopback:
//! 200 registered names (one shared by 3 replicas), clients asking A
//! questions one at a time (each waits for its answer). Reports queries per
//! second with 1 and with 4 concurrent clients, and the p50/p99 latency of
//! single-client round trips. Run with `cargo bench --bench dns`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use stack::net::dns::{DnsConfig, DnsServer};

const NAMES: u32 = 200;
const WARMUP: usize = 2_000;
const PER_CLIENT: usize = 50_000;

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii(name).expect("the bench runs on loopback sockets it set up"),
        RecordType::A,
    ));
    m.metadata.recursion_desired = true;
    m.to_vec()
        .expect("the bench runs on loopback sockets it set up")
}

/// Sends `n` queries one after the other; each round trip's duration.
fn client(server: SocketAddr, n: usize, offset: usize) -> Vec<Duration> {
    let socket =
        UdpSocket::bind((server.ip(), 0)).expect("the bench runs on loopback sockets it set up");
    socket
        .connect(server)
        .expect("the bench runs on loopback sockets it set up");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("the bench runs on loopback sockets it set up");
    let queries: Vec<Vec<u8>> = (0..NAMES)
        .map(|i| query(&format!("svc-{i}")))
        .chain(std::iter::once(query("replicated")))
        .collect();
    let mut buf = [0u8; 1500];
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let q = &queries[(i + offset) % queries.len()];
        let start = Instant::now();
        socket
            .send(q)
            .expect("the bench runs on loopback sockets it set up");
        let len = socket
            .recv(&mut buf)
            .expect("the bench runs on loopback sockets it set up");
        times.push(start.elapsed());
        assert!(len > 12 && buf[3] & 0x0f == 0, "an answer with NOERROR");
    }
    times
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the bench runs on loopback sockets it set up");
    let dns = DnsServer::start(rt.handle().clone(), DnsConfig::default());
    let pid = std::process::id().to_be_bytes();
    let addr = SocketAddr::from((Ipv4Addr::new(127, 99, pid[2], pid[3].max(1)), 0));
    let at = dns
        .add_listener(addr, "bench", &[])
        .expect("the bench runs on loopback sockets it set up");
    for i in 0..NAMES {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a63_0000 + i + 2));
        dns.register("bench", &format!("c{i}"), &[format!("svc-{i}")], &[ip]);
    }
    for r in 0..3u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + r + 2));
        dns.register("bench", &format!("r{r}"), &["replicated".into()], &[ip]);
    }
    client(at, WARMUP, 0);

    let start = Instant::now();
    let mut times = client(at, PER_CLIENT, 0);
    let elapsed = start.elapsed();
    times.sort();
    let pct = |p: usize| times[times.len() * p / 100];
    println!(
        "dns local A, 1 client:  {:>8.0} queries/s  p50 {:?}  p99 {:?}",
        PER_CLIENT as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(99)
    );

    let clients = 4;
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| std::thread::spawn(move || client(at, PER_CLIENT, c * 7)))
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| {
            h.join()
                .expect("the bench runs on loopback sockets it set up")
        })
        .collect();
    let elapsed = start.elapsed();
    all.sort();
    println!(
        "dns local A, {clients} clients: {:>8.0} queries/s  p50 {:?}",
        (clients * PER_CLIENT) as f64 / elapsed.as_secs_f64(),
        all[all.len() / 2]
    );
}
