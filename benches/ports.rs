//! Published ports through real containers: a 1 GB TCP stream from the
//! host to a container's published port through `127.0.0.1:PORT` and
//! through a host address (the bridge gateway), against the same stream to
//! the container's address directly; and what 30 published ports cost in
//! processes and daemon memory (they are rules, so nothing).
//!
//! Root only. Runs the `stack` binary with its own state root, daemon,
//! default bridge (10.254.x.0/24) and firewall table; the sink in the
//! container is the host's perl (chrooted into the host's root mounted
//! read-only), reading with 1 MiB `sysread`s. Run with
//! `cargo bench --bench ports`; prints medians of 5 rounds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOTAL: usize = 1 << 30;
const CHUNK: usize = 256 * 1024;
const ROUNDS: usize = 5;

const SINK: &str = r#"
use IO::Socket::INET;
my $l = IO::Socket::INET->new(LocalPort => 5001, Listen => 10, ReuseAddr => 1) or die "$!";
while (my $c = $l->accept) {
    my $buf;
    while (sysread($c, $buf, 1 << 20)) {}
    close $c;
}
"#;

struct Bench {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Bench {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn stack(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run stack");
        assert!(
            out.status.success(),
            "stack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.stack(args).stdout)
            .trim()
            .to_string()
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.text(&["inspect", name])).expect("inspect is JSON");
        v[0].clone()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let ids = self.text(&["ps", "-a", "-q"]);
        for id in ids.lines() {
            let _ = Command::new(env!("CARGO_BIN_EXE_stack"))
                .arg("--root")
                .arg(self.root())
                .args(["rm", "-f", id])
                .output();
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.daemon.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        let table = stack::daemon::firewall::table_name(&self.root());
        if let Ok(fw) = stack::net::firewall::Firewall::new(&table) {
            let _ = fw.remove();
        }
    }
}

/// A busybox root file system imported as `bb`.
fn import_busybox(bench: &Bench) {
    let image = bench.dir.path().join("image");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(image.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", image.join("bin/busybox")).expect("busybox-static is needed");
    for applet in ["sh", "chroot", "sleep"] {
        symlink("busybox", image.join("bin").join(applet)).expect("symlink");
    }
    bench.stack(&["import", &image.to_string_lossy(), "bb:latest"]);
}

/// Sends TOTAL bytes to `addr` and waits until the sink has read them all
/// (it closes after end of file); returns GB/s.
fn stream(addr: SocketAddr) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("{addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut sent = 0;
    while sent < TOTAL {
        s.write_all(&chunk).expect("send");
        sent += CHUNK;
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let secs = start.elapsed().as_secs_f64();
    f64::from(u32::try_from(TOTAL).unwrap_or(u32::MAX)) / secs / 1e9
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Processes running our binary (the daemon and the shims; a userland
/// proxy per port would show here too).
fn our_processes(exe: &Path) -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path().join("exe")).ok().as_deref() == Some(exe))
                .count()
        })
        .unwrap_or(0)
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the ports bench needs root (containers, bridges, nftables)");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bip = format!("10.254.{}.1/24", std::process::id() % 250);
    let root = dir.path().join("root");
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(&root)
        .args(["daemon", "--bip", &bip])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    let bench = Bench { dir, daemon };
    let socket = root.join("run/stack.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    import_busybox(&bench);

    let sink = bench.dir.path().join("sink.pl");
    std::fs::write(&sink, SINK).expect("write the sink");
    let sink = sink.to_string_lossy().into_owned();
    bench.stack(&[
        "run",
        "-d",
        "--name",
        "sink",
        "-v",
        "/:/host:ro",
        "-p",
        "5001",
        "bb",
        "chroot",
        "/host",
        "perl",
        &sink,
    ]);
    let v = bench.inspect("sink");
    let ip: Ipv4Addr = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the sink's address");
    let gateway: Ipv4Addr = v["NetworkSettings"]["Gateway"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the bridge's address");
    let port: u16 = v["NetworkSettings"]["Ports"]["5001/tcp"][0]["HostPort"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the published port");

    let paths = [
        (
            "container address (direct)",
            SocketAddr::from((IpAddr::V4(ip), 5001)),
        ),
        (
            "127.0.0.1:PORT (DNAT)",
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ),
        (
            "host address:PORT (DNAT)",
            SocketAddr::from((gateway, port)),
        ),
    ];
    // Warm up each path once.
    for (_, addr) in &paths {
        stream(*addr);
    }
    let mut results = Vec::new();
    for (name, addr) in &paths {
        let m = median((0..ROUNDS).map(|_| stream(*addr)).collect());
        results.push((name, m));
    }
    let direct = results[0].1;
    println!("1 GB TCP stream from the host into a container, median of {ROUNDS}:");
    for (name, m) in &results {
        println!("  {name:<28} {m:6.2} GB/s  ({:.2}x direct)", m / direct);
    }

    // 30 published ports: a container with none and one with 30 add the
    // same processes (the shim), and the daemon's memory does not grow
    // per port.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_stack"))
        .canonicalize()
        .expect("our binary");
    let daemon_pid = bench.daemon.id();
    let (p0, r0) = (our_processes(&exe), rss_kib(daemon_pid));
    bench.stack(&["run", "-d", "--name", "none", "bb", "sleep", "1000"]);
    let (p1, r1) = (our_processes(&exe), rss_kib(daemon_pid));
    bench.stack(&[
        "run",
        "-d",
        "--name",
        "thirty",
        "-P",
        "--expose",
        "10000-10029",
        "bb",
        "sleep",
        "1000",
    ]);
    let (p2, r2) = (our_processes(&exe), rss_kib(daemon_pid));
    let published = bench.text(&["port", "thirty"]).lines().count();
    println!("{published} published ports:");
    println!(
        "  stack processes: {p0} -> {p1} (a container with no port) -> {p2} (one with {published})"
    );
    println!("  daemon RSS: {r0} KiB -> {r1} KiB -> {r2} KiB");
    println!(
        "  per-port processes added: {}",
        (p2 - p1).saturating_sub(p1 - p0)
    );
}
