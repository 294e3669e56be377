//! Bridge networking on real kernel objects, as root: containers on the
//! default bridge and on user-defined networks reach each other and the
//! host, the network modes (none, host, container:), static addresses, and
//! that removing containers and networks (or a daemon crash) leaks no link,
//! namespace file or address. Each test has its own state root, its own
//! `--bip` subnet and its own networks' subnets (10.x.y.0/24 from the pid
//! and a counter), so tests run in parallel.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use stack::net::netlink;

use crate::host::Host;

static NEXT: AtomicU8 = AtomicU8::new(0);

/// A fresh 10.x.y.0/24 for this test process: x from the pid, y from a
/// counter (never 172.17/16 or 192.0.2/24, which the host uses).
fn subnet() -> (u8, u8) {
    let pid = std::process::id();
    let x = 100 + u8::try_from(pid % 100).unwrap();
    let y = NEXT.fetch_add(1, Ordering::SeqCst);
    (x, y)
}

/// A host whose daemon has its own default bridge subnet.
struct NetHost {
    host: Host,
}

impl NetHost {
    fn new() -> NetHost {
        let (x, y) = subnet();
        let bip = format!("10.{x}.{y}.1/24");
        NetHost {
            host: Host::with_daemon(&["--bip", &bip]),
        }
    }

    /// Creates a network with a fresh subnet; returns its subnet's first
    /// three octets.
    fn network(&self, name: &str) -> String {
        let (x, y) = subnet();
        let prefix = format!("10.{x}.{y}");
        self.host.ok(&[
            "network",
            "create",
            "--subnet",
            &format!("{prefix}.0/24"),
            name,
        ]);
        prefix
    }

    /// The container's address on `network`.
    fn ip(&self, container: &str, network: &str) -> Ipv4Addr {
        let v = self.host.inspect(container);
        v["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("no address on {network}: {v}"))
            .parse()
            .unwrap()
    }

    /// Starts a container serving `body` over HTTP on port 80 of `bind`.
    fn serve(&self, name: &str, flags: &[&str], bind: &str, body: &str) {
        let script = format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {bind} -h /www"
        );
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.extend(["bb", "sh", "-c", &script]);
        self.host.ok(&args);
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        let out = self.host.stack(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.host.stack(&["rm", "-f", id]);
        }
        let _ = self.host.stack(&["network", "prune", "-f"]);
    }
}

/// An HTTP GET from the host: the body, once the server answers (polling
/// with a deadline until it listens).
fn http_get(ip: Ipv4Addr, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text)
            });
        match attempt {
            Ok(text) if !text.is_empty() => return text,
            _ if Instant::now() > deadline => panic!("{ip}:{port} did not answer: {attempt:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A CLI error message on one line (miette wraps long ones).
fn flat(err: &str) -> String {
    err.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names of the links that are ports of `bridge`.
fn ports_of(bridge: &str) -> Vec<String> {
    let links = netlink::host_links().unwrap();
    let Some(index) = links.iter().find(|l| l.name == bridge).map(|l| l.index) else {
        return Vec::new();
    };
    links
        .into_iter()
        .filter(|l| l.controller == Some(index))
        .map(|l| l.name)
        .collect()
}

fn bridge_of(host: &Host, network: &str) -> String {
    network_field(host, network, "Options")["com.docker.network.bridge.name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            let id = network_field(host, network, "Id");
            format!("br-{}", &id.as_str().unwrap()[..12])
        })
}

fn link_names() -> BTreeSet<String> {
    netlink::host_links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect()
}

fn network_field(host: &Host, name: &str, field: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&host.ok(&["network", "inspect", name])).unwrap();
    v[0][field].clone()
}

#[test]
fn two_containers_on_a_user_network_reach_each_other_and_the_host_reaches_them() {
    let h = NetHost::new();
    let prefix = h.network("front");
    h.serve("web", &["--network", "front"], "80", "hello-front");
    let ip = h.ip("web", "front");
    assert!(ip.to_string().starts_with(&prefix), "{ip} in {prefix}.0/24");
    assert!(
        http_get(ip, 80).contains("hello-front"),
        "the host reaches it"
    );
    let (code, out, err) = h.host.run(
        &["--network", "front"],
        &[
            "sh",
            "-c",
            &format!("ping -c1 -W2 {ip} >/dev/null && wget -qO- http://{ip}/"),
        ],
    );
    assert_eq!((code, out.trim()), (0, "hello-front"), "{err}");
    // The default bridge too, and the container's own /etc/hosts line.
    h.serve("web2", &[], "80", "hello-bridge");
    let ip2 = h.ip("web2", "bridge");
    assert_eq!(
        h.host.inspect("web2")["NetworkSettings"]["IPAddress"],
        ip2.to_string(),
        "the top-level address is the default bridge's, as Docker's"
    );
    assert!(http_get(ip2, 80).contains("hello-bridge"));
    let (code, out, err) = h.host.run(
        &[],
        &[
            "sh",
            "-c",
            &format!("wget -qO- http://{ip2}/ && cat /etc/hosts"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hello-bridge"), "{out}");
    let hostname_line = out.lines().last().unwrap();
    assert!(
        hostname_line
            .split('\t')
            .next()
            .unwrap()
            .parse::<Ipv4Addr>()
            .is_ok(),
        "hosts ends with the container's own address: {out}"
    );
}

#[test]
fn network_none_has_only_loopback_and_host_sees_the_hosts_interfaces() {
    let h = NetHost::new();
    let (code, out, err) = h.host.run(&["--network", "none"], &["ip", "-o", "link"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(names, ["lo"]);
    let (code, out, err) = h.host.run(&["--network", "host"], &["ip", "-o", "link"]);
    assert_eq!(code, 0, "{err}");
    let inside: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect();
    let bridge = network_field(&h.host, "bridge", "Options")["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        inside.contains(&bridge) && inside.contains("lo"),
        "the host's {bridge} in {inside:?}"
    );
}

#[test]
fn container_mode_shares_localhost() {
    let h = NetHost::new();
    h.serve("owner", &[], "127.0.0.1:8080", "shared-lo");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = h.host.run(
            &["--network", "container:owner"],
            &["wget", "-qO-", "http://127.0.0.1:8080/"],
        );
        if code == 0 {
            assert_eq!(out.trim(), "shared-lo");
            break;
        }
        assert!(Instant::now() < deadline, "never answered: {err}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = &h.host.inspect("owner")["HostConfig"]["NetworkMode"];
    assert_eq!(mode, "bridge");
}

#[test]
fn a_static_address_is_honoured_and_a_duplicate_refused() {
    let h = NetHost::new();
    let prefix = h.network("fixed");
    let want = format!("{prefix}.77");
    h.host.ok(&[
        "run",
        "-d",
        "--name",
        "pinned",
        "--network",
        "fixed",
        "--ip",
        &want,
        "bb",
        "sleep",
        "1000",
    ]);
    assert_eq!(h.ip("pinned", "fixed").to_string(), want);
    let (code, out, err) = h
        .host
        .run(&["--network", "fixed", "--ip", &want], &["true"]);
    assert_ne!(code, 0, "{out}");
    let err = flat(&err);
    assert!(
        err.contains(&format!("address {want} is already in use")) && err.contains("pinned"),
        "{err}"
    );
    // Nothing of the refused container remains.
    let containers = network_field(&h.host, "fixed", "Containers");
    assert_eq!(containers.as_object().unwrap().len(), 1, "{containers}");
    // The default bridge's subnet was not given by the user here either
    // way; --ip outside the subnet is refused.
    let (code, _, err) = h
        .host
        .run(&["--network", "fixed", "--ip", "10.254.254.9"], &["true"]);
    assert_ne!(code, 0);
    assert!(flat(&err).contains("is not in the subnet"), "{err}");
}

#[test]
fn rm_and_network_rm_leave_no_veth_bridge_namespace_or_address() {
    let h = NetHost::new();
    let prefix = h.network("gone");
    h.host.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        "--network",
        "gone",
        "bb",
        "sleep",
        "1000",
    ]);
    let v = h.host.inspect("short");
    let netns = v["NetworkSettings"]["SandboxKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(Path::new(&netns).exists());
    let bridge = bridge_of(&h.host, "gone");
    let veths = ports_of(&bridge);
    assert_eq!(veths.len(), 1, "one veth end on the host: {veths:?}");
    assert!(veths[0].starts_with("veth"), "{veths:?}");
    h.host.ok(&["rm", "-f", "short"]);
    assert!(!Path::new(&netns).exists(), "the namespace file is gone");
    assert!(!link_names().contains(&veths[0]), "the veth is gone");
    h.host.ok(&["network", "rm", "gone"]);
    assert!(!link_names().contains(&bridge), "the bridge is gone");
    let addrs = netlink::host_addresses().unwrap();
    assert!(
        !addrs
            .iter()
            .any(|a| a.addr.addr().to_string().starts_with(&format!("{prefix}."))),
        "no address of {prefix}.0/24 is left: {addrs:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&netns), "the namespace is unmounted");
}

#[test]
fn a_daemon_killed_with_sigkill_leaves_containers_reachable_and_allocations_intact() {
    let mut h = NetHost::new();
    h.serve("survivor", &[], "80", "still-here");
    let ip = h.ip("survivor", "bridge");
    assert!(http_get(ip, 80).contains("still-here"));
    let pid = h.host.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Without a daemon, the container still answers.
    assert!(http_get(ip, 80).contains("still-here"));
    h.host.start_daemon();
    assert!(http_get(ip, 80).contains("still-here"));
    // The new daemon read the allocations: the next container gets another
    // address.
    h.host
        .ok(&["run", "-d", "--name", "newcomer", "bb", "sleep", "1000"]);
    let other = h.ip("newcomer", "bridge");
    assert_ne!(other, ip, "no address handed out twice");
    assert_eq!(h.ip("survivor", "bridge"), ip);
}

/// How many create/remove cycles the leak test runs: 200 with
/// `STACK_NET_CYCLES=200`; 40 by default to keep the suite short.
fn cycles() -> usize {
    std::env::var("STACK_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn create_remove_cycles_leak_no_link_namespace_mount_or_address() {
    let h = NetHost::new();
    h.network("churn");
    let bridge = bridge_of(&h.host, "churn");
    let netns_dir = h.host.root().join("run/netns");
    let netns_mounts = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(netns_dir.to_str().unwrap()))
            .count()
    };
    let started = Instant::now();
    let n = cycles();
    for i in 0..n {
        let name = format!("c{i}x");
        h.host
            .ok(&["run", "--name", &name, "--network", "churn", "bb", "true"]);
        h.host.ok(&["rm", &name]);
    }
    eprintln!("{n} create/start/rm cycles: {:?}", started.elapsed());
    assert_eq!(ports_of(&bridge), Vec::<String>::new(), "no veth leaked");
    let default_bridge = bridge_of(&h.host, "bridge");
    assert_eq!(ports_of(&default_bridge), Vec::<String>::new());
    assert_eq!(netns_mounts(), 0, "no namespace mount leaked");
    let left = std::fs::read_dir(&netns_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no namespace file left");
    let containers = network_field(&h.host, "churn", "Containers");
    assert_eq!(
        containers.as_object().unwrap().len(),
        0,
        "no allocation left"
    );
}
