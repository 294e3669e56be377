//! Published-port throughput: a 1 GB TCP stream from the host to a
//! "container" through `127.0.0.1:PORT` and through a host address (both
//! DNAT by our nftables rules) against the same stream sent to the
//! container's address directly. Also: 30 published ports are rules only —
//! the process count does not change when they are applied.
//!
//! Root only. Builds its own namespaces with iproute2: a host namespace with
//! a bridge and an uplink (the non-loopback host address), a container
//! namespace on the bridge, and an outside namespace at the uplink's other
//! end; the real host's tables and links are not touched. Run with
//! `cargo bench --bench firewall`; prints medians of 5 rounds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use stack::net::firewall::{BridgeNet, Firewall, Forward, Proto, Ruleset};

const TOTAL: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 5;
const PORT: u16 = 5001;
const PUBLISHED: u16 = 8080;

struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    fn netns(&mut self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    stack::sys::in_netns(&netns_path(ns), f).expect("enter the namespace")
}

/// Our child processes that are alive (a proxy per port would be one).
fn children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …: comm may hold spaces, so split after ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                == Some(me.as_str())
        })
        .count()
}

/// Sends TOTAL bytes to `addr` from namespace `ns` and waits until the sink
/// has read them all (it closes after end of file); returns GB/s.
fn stream(ns: &str, addr: SocketAddr) -> f64 {
    let mut conn = inside(ns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    })
    .expect("connect");
    let chunk = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    let mut sent = 0;
    while sent < TOTAL {
        conn.write_all(&chunk).expect("send");
        sent += CHUNK;
    }
    conn.shutdown(Shutdown::Write).expect("shutdown");
    let mut ack = [0u8; 8];
    conn.read_exact(&mut ack).expect("the sink's count");
    assert_eq!(u64::from_le_bytes(ack), TOTAL as u64, "the sink got it all");
    TOTAL as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the firewall bench needs root (network namespaces, nftables)");
        std::process::exit(1);
    }
    let mut lab = Lab {
        prefix: format!("stkfwb{:x}", std::process::id() & 0xffff),
        namespaces: Vec::new(),
    };
    let host = lab.netns("h");
    let container = lab.netns("c");
    let outside = lab.netns("x");
    for args in [
        vec!["-n", &host, "link", "add", "br0", "type", "bridge"],
        vec!["-n", &host, "addr", "add", "10.231.0.1/24", "dev", "br0"],
        vec!["-n", &host, "link", "set", "br0", "up"],
        vec![
            "-n", &host, "link", "add", "veth1", "type", "veth", "peer", "name", "eth0", "netns",
            &container,
        ],
        vec!["-n", &host, "link", "set", "veth1", "master", "br0", "up"],
        vec![
            "-n",
            &container,
            "addr",
            "add",
            "10.231.0.2/24",
            "dev",
            "eth0",
        ],
        vec!["-n", &container, "link", "set", "eth0", "up"],
        vec![
            "-n",
            &container,
            "route",
            "add",
            "default",
            "via",
            "10.231.0.1",
        ],
        vec![
            "-n", &host, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns",
            &outside,
        ],
        vec!["-n", &host, "addr", "add", "10.231.1.1/24", "dev", "up0"],
        vec!["-n", &host, "link", "set", "up0", "up"],
        vec!["-n", &outside, "link", "set", "eth0", "up"],
    ] {
        ip(&args);
    }
    let container_ip = IpAddr::V4(Ipv4Addr::new(10, 231, 0, 2));
    let host_ip = IpAddr::V4(Ipv4Addr::new(10, 231, 1, 1));

    let fw = Firewall::new(&format!("b{}", lab.prefix))
        .expect("a valid table name")
        .with_netns(netns_path(&host));
    fw.enable_ip_forward(false).expect("ip_forward");
    let before = children();
    let ports: Vec<Forward> = (0..30)
        .map(|i| Forward {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: PUBLISHED + i,
            container_ip,
            container_port: PORT + i,
            bridge: "br0".to_owned(),
        })
        .collect();
    let rules = Ruleset {
        networks: vec![BridgeNet {
            bridge: "br0".to_owned(),
            subnet: "10.231.0.0/24".parse().expect("a subnet"),
            internal: false,
            masquerade: true,
            icc: true,
        }],
        ports,
    };
    let start = Instant::now();
    fw.apply(&rules).expect("apply");
    let applied = start.elapsed();
    let after = children();

    // The sink: reads each connection to its end, answers the byte count.
    let listener = inside(&container, || TcpListener::bind(("0.0.0.0", PORT))).expect("bind");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = conn.write_all(&total.to_le_bytes());
        }
    });

    let paths = [
        (
            "direct to the container",
            SocketAddr::new(container_ip, PORT),
        ),
        (
            "127.0.0.1:PORT (DNAT)",
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PUBLISHED),
        ),
        (
            "host address:PORT (DNAT)",
            SocketAddr::new(host_ip, PUBLISHED),
        ),
    ];
    let mut results = vec![Vec::new(); paths.len()];
    stream(&host, paths[0].1); // warm up
    for _ in 0..ROUNDS {
        for (i, (_, addr)) in paths.iter().enumerate() {
            results[i].push(stream(&host, *addr));
        }
    }
    let direct = median(results[0].clone());
    println!("1 GB TCP stream from the host, median of {ROUNDS}:");
    for ((name, _), xs) in paths.iter().zip(results) {
        let m = median(xs);
        println!("  {name:<26} {m:6.2} GB/s  ({:.2}x direct)", m / direct);
    }
    println!(
        "30 published ports: applied in {:.1} ms; child processes {before} before, {after} after (rules only, no proxy)",
        applied.as_secs_f64() * 1e3
    );
}
