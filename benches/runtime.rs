//! Runtime benchmarks, as root, with a busybox image made on the spot:
//!
//! - start: `stack run --rm --network none bb true` end to end through the
//!   running daemon (the CLI process, create, shim, namespaces, overlay,
//!   cgroup, exec, exit, removal); the same with
//!   `docker run --rm --network none busybox true` in alternation when a
//!   Docker daemon answers;
//! - log ingest: a container writing 200 MB to stdout, detached, from start to
//!   its exit, in MB/s;
//! - ps: `stack ps -a` with 100 containers, and the daemon's resident memory
//!   when idle (before and after);
//! - shim memory: the proportional set size of the shims of 10 idle
//!   containers;
//! - attach: attaching a container to a user-defined bridge network through
//!   the library (address reserved, network namespace made, veth pair with
//!   one end in it, address, routes, names registered in the embedded DNS as
//!   the daemon's hook does), and detaching it again.
//!
//! Run with `cargo bench --bench runtime` (optionally `-- start`, `logs`,
//! `memory`, `ps` or `attach` to pick one).

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 41;

fn stack(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("stack runs")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = stack(root, args);
    assert!(
        out.status.success(),
        "stack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn make_image(dir: &Path, root: &Path) {
    let rootfs = dir.join("image");
    for d in ["bin", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).expect("image dirs");
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("busybox (apt-get install busybox-static)");
    for applet in ["sh", "true", "sleep", "yes", "head", "cat"] {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    ok(
        root,
        &["import", rootfs.to_str().expect("utf-8 path"), "bb:latest"],
    );
}

/// Starts the daemon the CLI then talks to, with a default bridge of its own
/// (the default pools may all be taken on a busy host).
fn start_daemon(root: &Path) -> std::process::Child {
    let bip = format!("10.198.{}.1/24", std::process::id() % 250);
    let log = fs::File::create(root.with_extension("daemon.log")).expect("daemon log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(root)
        .args(["daemon", "--bip", &bip])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("daemon log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("the daemon starts");
    let socket = root.join("run/stack.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon
}

fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bench_start(root: &Path, dir: &Path) {
    let docker = docker_available()
        && Command::new("docker")
            .args(["image", "inspect", "busybox"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !docker {
        println!("start: Docker with a busybox image is not available; measuring stack alone");
    }
    let _ = dir;
    let run = ["run", "--rm", "--network", "none", "bb", "true"];
    // Warm up: the first run unpacks nothing but fills caches.
    ok(root, &run);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        ok(root, &run);
        ours.push(t.elapsed());
        if docker {
            let t = Instant::now();
            let status = Command::new("docker")
                .args(["run", "--rm", "--network", "none", "busybox", "true"])
                .stdout(Stdio::null())
                .status()
                .expect("docker runs");
            assert!(status.success());
            theirs.push(t.elapsed());
        }
    }
    let m = median(&mut ours);
    println!(
        "start: stack run --rm --network none bb true: median {:.1} ms over {ROUNDS} runs (min {:.1} ms){}",
        m.as_secs_f64() * 1e3,
        ours[0].as_secs_f64() * 1e3,
        load_average()
    );
    if docker {
        let d = median(&mut theirs);
        println!(
            "start: docker run --rm --network none busybox true: median {:.1} ms; stack takes {:.3} of Docker's time",
            d.as_secs_f64() * 1e3,
            m.as_secs_f64() / d.as_secs_f64()
        );
    }
}

fn bench_logs(root: &Path, dir: &Path) {
    const BYTES: usize = 200_000_000;
    // The producer must outrun the shim: busybox `yes | head` manages about
    // 230 MB/s here, so the container cats a prepared file instead.
    let data = dir.join("lines");
    fs::create_dir_all(&data).expect("data dir");
    let line = "2026-11-28T10:00:00Z INFO request served path=/api/v1/items status=200 bytes=5120 ms=3.2 id=9f8e7d\n";
    let text: String = line.repeat(BYTES / line.len() + 1);
    fs::write(data.join("log.txt"), &text.as_bytes()[..BYTES]).expect("log text");
    let mount = format!("{}:/data:ro", data.display());
    let mut rates = Vec::new();
    for round in 0..5 {
        let name = format!("chatty{round}");
        let t = Instant::now();
        ok(
            root,
            &[
                "run",
                "-d",
                "--name",
                &name,
                "-v",
                &mount,
                "bb",
                "cat",
                "/data/log.txt",
            ],
        );
        ok(root, &["wait", &name]);
        let elapsed = t.elapsed();
        rates.push(BYTES as f64 / elapsed.as_secs_f64() / 1e6);
        ok(root, &["rm", &name]);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "logs: 200 MB of 100-byte lines through the shim into the json log (start to exit): median {:.0} MB/s (5 runs){}",
        rates[2],
        load_average()
    );
}

/// `; load average 1.23` from /proc/loadavg, for the numbers' context.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            l.split_whitespace()
                .next()
                .map(|v| format!("; load average {v}"))
        })
        .unwrap_or_default()
}

/// The daemon's resident set in KiB (VmRSS).
fn daemon_rss_kib(root: &Path) -> u64 {
    let pid = fs::read_to_string(root.join("run/stack.pid")).unwrap_or_default();
    fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn bench_ps(root: &Path) {
    ok(root, &["ps", "-a"]);
    let idle = daemon_rss_kib(root);
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(
            ok(root, &["create", "--network", "none", "bb", "true"])
                .trim()
                .to_string(),
        );
    }
    ok(root, &["ps", "-a"]);
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let out = ok(root, &["ps", "-a"]);
        times.push(t.elapsed());
        assert!(out.lines().count() > 100, "ps lists the 100 containers");
    }
    println!(
        "ps: stack ps -a with 100 containers: median {:.1} ms over {ROUNDS} runs{}",
        median(&mut times).as_secs_f64() * 1e3,
        load_average()
    );
    println!(
        "ps: daemon RSS idle: {:.1} MiB before the 100 containers, {:.1} MiB with them",
        idle as f64 / 1024.0,
        daemon_rss_kib(root) as f64 / 1024.0
    );
    let mut rm = vec!["rm"];
    rm.extend(ids.iter().map(String::as_str));
    ok(root, &rm);
}

fn pss_kib(pid: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn bench_memory(root: &Path) {
    let mut names = Vec::new();
    for i in 0..10 {
        let name = format!("idle{i}");
        ok(root, &["run", "-d", "--name", &name, "bb", "sleep", "1000"]);
        names.push(name);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut pss = Vec::new();
    for name in &names {
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(root, &["inspect", name])).expect("json");
        let id = inspect[0]["Id"].as_str().expect("id").to_string();
        let state: serde_json::Value = serde_json::from_slice(
            &fs::read(root.join("containers").join(&id).join("state.json")).expect("state"),
        )
        .expect("state json");
        let shim = state["shim_pid"].as_i64().expect("shim pid").to_string();
        pss.push(pss_kib(&shim));
    }
    let total: u64 = pss.iter().sum();
    println!(
        "memory: shim PSS with 10 containers: {:.0} KiB each on average (min {} KiB, max {} KiB)",
        total as f64 / pss.len() as f64,
        pss.iter().min().copied().unwrap_or(0),
        pss.iter().max().copied().unwrap_or(0)
    );
    for name in &names {
        ok(root, &["rm", "-f", name]);
    }
}

fn bench_attach(dir: &Path) {
    use stack::net::{DefaultBridgeConfig, EndpointRequest, NetConfig, Networks};
    let pid = std::process::id();
    let bip: ipnet::Ipv4Net = format!("10.199.{}.1/24", pid % 250)
        .parse()
        .expect("a valid CIDR");
    let nets = Networks::open(
        NetConfig {
            state_dir: dir.join("bench-network"),
            netns_dir: dir.join("bench-netns"),
            host_lock: dir.join("bench-net.lock"),
            default_bridge: DefaultBridgeConfig {
                name: format!("stb-{:06x}", pid % 0xff_ffff),
                existing: false,
                bip: Some(bip),
                fixed_cidr: None,
                mtu: None,
                fixed_cidr_v6: None,
            },
        },
        "2024-01-01T00:00:00Z",
    )
    .expect("networking opens");
    // A user-defined network, so the attach registers names in the embedded
    // DNS as the daemon does (`NetworkHooks::network_changed`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dns = stack::daemon::dns::DaemonDns::start(
        rt.handle().clone(),
        stack::daemon::dns::DnsOptions::host(),
    );
    let subnet: ipnet::Ipv4Net = format!("10.198.{}.0/24", pid % 250)
        .parse()
        .expect("a valid CIDR");
    let network = nets
        .create(
            &stack::net::CreateRequest {
                name: format!("bench-{pid}"),
                subnet: Some(subnet),
                ..Default::default()
            },
            "2024-01-01T00:00:00Z",
        )
        .expect("a user-defined network");
    dns.listen(&network);
    // All containers are attached, then all detached: a detach leaves the
    // kernel work of destroying a namespace for later, which would
    // otherwise be measured as the next attach's.
    let mut attach = Vec::new();
    let mut naming = Vec::new();
    let mut detach = Vec::new();
    let ids: Vec<String> = (0..=ROUNDS).map(|r| format!("{r:064x}")).collect();
    for (round, id) in ids.iter().enumerate() {
        let t = Instant::now();
        let (network, endpoint) = nets
            .reserve(
                &network.id,
                id,
                &format!("bench{round}"),
                &EndpointRequest::default(),
            )
            .expect("an address");
        nets.wire(id).expect("the namespace is wired");
        let named = Instant::now();
        dns.network_changed(&stack::reconcile::containers::NetworkChange::Attached {
            network,
            container: id.clone(),
            endpoint,
        });
        // The first round warms caches.
        if round > 0 {
            naming.push(named.elapsed());
            attach.push(t.elapsed());
        }
    }
    for id in &ids {
        let t = Instant::now();
        for (network, endpoint) in nets.teardown(id).expect("teardown") {
            dns.network_changed(&stack::reconcile::containers::NetworkChange::Detached {
                network,
                container: id.clone(),
                endpoint,
            });
        }
        detach.push(t.elapsed());
    }
    let network = nets.find(&network.id).expect("the network");
    dns.unlisten(&network);
    nets.remove(&network.id).expect("the network goes");
    nets.shutdown().expect("the bridge goes");
    println!(
        "attach: reserve an address, make the netns, veth into it, address, routes, DNS names: median {:.2} ms over {ROUNDS} runs",
        median(&mut attach).as_secs_f64() * 1e3
    );
    println!(
        "attach: of which the DNS registration: median {:.3} ms",
        median(&mut naming).as_secs_f64() * 1e3
    );
    println!(
        "attach: detach (veth deleted, address released, netns removed): median {:.2} ms",
        median(&mut detach).as_secs_f64() * 1e3
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let dir = tempfile::tempdir().expect("temp dir");
    let root: PathBuf = dir.path().join("root");
    let mut daemon = start_daemon(&root);
    // The attach benchmark needs no image.
    if wants("start") || wants("logs") || wants("memory") || wants("ps") {
        make_image(dir.path(), &root);
    }
    if wants("start") {
        bench_start(&root, dir.path());
    }
    if wants("logs") {
        bench_logs(&root, dir.path());
    }
    if wants("memory") {
        bench_memory(&root);
    }
    if wants("ps") {
        bench_ps(&root);
    }
    if wants("attach") {
        bench_attach(dir.path());
    }
    // The daemon the CLI started goes with its state root (and takes its
    // default bridge with it).
    if let Some(pid) = fs::read_to_string(root.join("run/stack.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while root.join("run/stack.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}
