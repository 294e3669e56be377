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
use std::time::{Duration, Instant};

use stack::net::netlink;

use crate::host::{Host, subnet, unique};

/// `fd00:X:Y::` in canonical form (as the daemon prints addresses), to
/// which the last group is appended.
fn v6_prefix(x: u8, y: u8) -> String {
    format!("fd00:{x}:{y}::")
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .to_string()
}

/// A host whose daemon has its own default bridge subnet.
struct NetHost {
    host: Host,
}

impl NetHost {
    fn new() -> NetHost {
        NetHost::with_flags(&[])
    }

    /// With more daemon flags.
    fn with_flags(flags: &[&str]) -> NetHost {
        let (x, y) = subnet();
        let bip = format!("10.{x}.{y}.1/24");
        let mut args = vec!["--bip", &bip];
        args.extend_from_slice(flags);
        NetHost {
            host: Host::with_daemon(&args),
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
    // The bridge has the gateway's MAC address from its creation on, and
    // keeps it as ports come (an unset one would follow the lowest port
    // MAC, and containers would lose their gateway while their neighbour
    // entry for the old one lasts).
    let mac = || {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/address",
            bridge_of(&h.host, "front")
        ))
        .unwrap()
        .trim()
        .to_string()
    };
    let gateway_mac = stack::net::ipam::format_mac(&stack::net::ipam::mac_of(
        format!("{prefix}.1").parse().unwrap(),
    ));
    assert_eq!(mac(), gateway_mac);
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
    assert_eq!(mac(), gateway_mac, "the bridge kept its MAC address");
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
    // Dual-stack, so IPv6 allocations and addresses are counted too.
    let (x, y) = subnet();
    let v6 = v6_prefix(x, y);
    h.host.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{x}.{y}.0/24"),
        "--subnet",
        &format!("{v6}/64"),
        "churn",
    ]);
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
    // No (hairpin) port is left on either bridge.
    assert_eq!(ports_of(&bridge), Vec::<String>::new(), "no veth leaked");
    let v6_left: Vec<String> = netlink::host_addresses6()
        .unwrap()
        .into_iter()
        .map(|a| a.addr.addr().to_string())
        .filter(|a| a.starts_with(&v6))
        .collect();
    assert_eq!(
        v6_left,
        [format!("{v6}1")],
        "only the bridge's IPv6 gateway"
    );
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

/// Runs `ip ARGS`, which must succeed; its stdout.
fn ip(args: &[&str]) -> String {
    let out = crate::output_within(
        std::process::Command::new("ip")
            .args(args)
            .stdin(std::process::Stdio::null()),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip netns exec NS ping` until it answers (the first packets may wait on
/// neighbour discovery), with a deadline.
fn ping_from_ns(ns: &str, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = crate::output_within(
            std::process::Command::new("ip")
                .args(["netns", "exec", ns, "busybox", "ping", "-c1", "-W1", target])
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{target} never answered {ns}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `ping` in a running container until it answers, with a deadline.
fn ping_from_container(host: &Host, container: &str, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = host.stack(&["exec", container, "ping", "-c1", "-W1", target]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{target} never answered {container}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A second "host": network namespace `hostB` joined to this host by a
/// veth pair (`va…` here, `vb…` there), optionally over VLAN 10 on both
/// ends, with `hostB` holding `addr` on a bridge (`brB`) of its own (on
/// `vb….10` with the VLAN). The host end `va…` is left for the test to
/// attach (to a host bridge, or as a macvlan parent). Everything goes in
/// Drop.
struct HostB {
    ns: String,
    /// The host end of the link to hostB.
    va: String,
    /// An existing host bridge with `va` as a port (the bridge variant).
    bridge: Option<String>,
}

impl HostB {
    fn new(addr: &str, vlan: bool, host_bridge: bool) -> HostB {
        let u = unique();
        let me = HostB {
            ns: format!("stkB{u}"),
            va: format!("va{u}"),
            bridge: host_bridge.then(|| format!("hb{u}")),
        };
        let vb = format!("vb{u}");
        ip(&["netns", "add", &me.ns]);
        ip(&["link", "add", &me.va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &vb, "netns", &me.ns]);
        ip(&["link", "set", &me.va, "up"]);
        if let Some(br) = &me.bridge {
            ip(&["link", "add", br, "type", "bridge"]);
            ip(&["link", "set", &me.va, "master", br]);
            ip(&["link", "set", br, "up"]);
        }
        let ns = ["-n", me.ns.as_str()];
        let run = |args: &[&str]| {
            let mut all = ns.to_vec();
            all.extend_from_slice(args);
            ip(&all);
        };
        run(&["link", "set", "lo", "up"]);
        run(&["link", "set", &vb, "up"]);
        let carrier = if vlan {
            let sub = format!("{vb}.10");
            run(&[
                "link", "add", "link", &vb, "name", &sub, "type", "vlan", "id", "10",
            ]);
            sub
        } else {
            vb
        };
        run(&["link", "add", "brB", "type", "bridge"]);
        run(&["link", "set", &carrier, "master", "brB"]);
        run(&["link", "set", &carrier, "up"]);
        run(&["link", "set", "brB", "up"]);
        run(&["addr", "add", addr, "dev", "brB"]);
        me
    }
}

impl Drop for HostB {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = crate::output_within(
                std::process::Command::new("ip")
                    .args(args)
                    .stdin(std::process::Stdio::null()),
                Duration::from_secs(20),
            );
        };
        quiet(&["link", "del", &format!("{}.10", self.va)]);
        quiet(&["link", "del", &self.va]);
        if let Some(br) = &self.bridge {
            quiet(&["link", "del", br]);
        }
        quiet(&["netns", "del", &self.ns]);
    }
}

#[test]
fn host_bridge_attach_puts_containers_on_the_segment_of_another_host() {
    let h = NetHost::new();
    let (x, y) = subnet();
    let prefix = format!("10.{x}.{y}");
    let b = HostB::new(&format!("{prefix}.200/24"), false, true);
    let bridge = b.bridge.clone().unwrap();
    // pipework's setting: the segment's router (hostB here) is the
    // gateway, the containers' addresses are static or allocated.
    h.host.ok(&[
        "network",
        "create",
        "-o",
        &format!("parent={bridge}"),
        "--subnet",
        &format!("{prefix}.0/24"),
        "--gateway",
        &format!("{prefix}.200"),
        "--ip-range",
        &format!("{prefix}.64/26"),
        "segment",
    ]);
    h.host.sleeper(
        "pinned",
        &["--network", "segment", "--ip", &format!("{prefix}.10")],
    );
    h.host.sleeper("dynamic", &["--network", "segment"]);
    assert_eq!(
        h.ip("pinned", "segment").to_string(),
        format!("{prefix}.10")
    );
    assert_eq!(
        h.ip("dynamic", "segment").to_string(),
        format!("{prefix}.64")
    );
    ping_from_container(&h.host, "pinned", &format!("{prefix}.200"));
    ping_from_ns(&b.ns, &format!("{prefix}.10"));
    ping_from_ns(&b.ns, &format!("{prefix}.64"));
    // The default route goes to the outside router.
    let routes = h.host.sh("pinned", "ip route");
    assert!(
        routes.contains(&format!("default via {prefix}.200")),
        "{routes}"
    );
    // The bridge got no address of ours.
    let addrs = netlink::host_addresses().unwrap();
    let index = netlink::host_links()
        .unwrap()
        .into_iter()
        .find(|l| l.name == bridge)
        .unwrap()
        .index;
    assert!(
        !addrs.iter().any(|a| a.index == index),
        "no address on {bridge}: {addrs:?}"
    );
    let ours: Vec<String> = ports_of(&bridge)
        .into_iter()
        .filter(|p| p.starts_with("veth"))
        .collect();
    assert_eq!(ours.len(), 2, "{ours:?}");
    h.host.ok(&["rm", "-f", "pinned", "dynamic"]);
    h.host.ok(&["network", "rm", "segment"]);
    assert!(link_names().contains(&bridge), "the host's bridge stays");
    assert_eq!(ports_of(&bridge), vec![b.va.clone()], "only our veths went");
    // A parent that is not there, or not a bridge, is refused.
    let err = h.host.fails(&[
        "network",
        "create",
        "-o",
        "parent=nosuchbr0",
        "--subnet",
        "10.254.2.0/24",
        "nope",
    ]);
    assert!(
        err.contains("parent bridge nosuchbr0 does not exist"),
        "{err}"
    );
    let err = h.host.fails(&[
        "network",
        "create",
        "-o",
        &format!("parent={}", b.va),
        "--subnet",
        "10.254.2.0/24",
        "nope",
    ]);
    assert!(err.contains("is not a bridge"), "{err}");
}

/// Whether this kernel makes VLAN links (CONFIG_VLAN_8021Q): tried on the
/// test's own link.
fn kernel_has_vlans(base: &str) -> bool {
    let probe = format!("{base}.99");
    let out = crate::output_within(
        std::process::Command::new("ip")
            .args([
                "link", "add", "link", base, "name", &probe, "type", "vlan", "id", "99",
            ])
            .stdin(std::process::Stdio::null()),
        Duration::from_secs(20),
    );
    if out.status.success() {
        ip(&["link", "del", &probe]);
    }
    out.status.success()
}

/// A macvlan network on `parent` of hostB's link `b`, two containers on
/// it reaching hostB's address and each other, hostB reaching them.
fn macvlan_reaches_host_b(h: &NetHost, b: &HostB, parent: &str, prefix: &str, name: &str) {
    h.host.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &format!("parent={parent}"),
        "--subnet",
        &format!("{prefix}.0/24"),
        "--gateway",
        &format!("{prefix}.200"),
        name,
    ]);
    h.host
        .sleeper("m1", &["--network", name, "--ip", &format!("{prefix}.20")]);
    h.host.sleeper("m2", &["--network", name]);
    let m2 = h.ip("m2", name).to_string();
    ping_from_container(&h.host, "m1", &format!("{prefix}.200"));
    ping_from_ns(&b.ns, &format!("{prefix}.20"));
    ping_from_ns(&b.ns, &m2);
    // Macvlan children in bridge mode reach each other.
    ping_from_container(&h.host, "m2", &format!("{prefix}.20"));
    let links = h.host.sh("m1", "ip -o link show eth0");
    assert!(links.contains("eth0@"), "{links}");
    // A second network on the same parent is refused, as Docker does.
    let err = h.host.fails(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &format!("parent={parent}"),
        "--subnet",
        "10.254.1.0/24",
        &format!("{name}b"),
    ]);
    assert!(err.contains("already using parent interface"), "{err}");
    h.host.ok(&["rm", "-f", "m1", "m2"]);
    h.host.ok(&["network", "rm", name]);
}

#[test]
fn macvlan_containers_reach_another_host_through_the_parent() {
    let h = NetHost::new();
    let (x, y) = subnet();
    let prefix = format!("10.{x}.{y}");
    let b = HostB::new(&format!("{prefix}.200/24"), false, false);
    macvlan_reaches_host_b(&h, &b, &b.va, &prefix, "mvlan");
    assert!(link_names().contains(&b.va), "the parent stays");
}

#[test]
fn macvlan_over_a_vlan_parent_makes_the_vlan_link_and_removes_it_with_the_network() {
    let h = NetHost::new();
    let (x, y) = subnet();
    let prefix = format!("10.{x}.{y}");
    if !kernel_has_vlans(&HostB::new("10.254.0.1/24", false, false).va) {
        // This kernel cannot make VLAN links: the network is refused with
        // a clear reason and leaves nothing behind.
        let b = HostB::new(&format!("{prefix}.200/24"), false, false);
        let parent = format!("{}.10", b.va);
        let err = h.host.fails(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            &format!("parent={parent}"),
            "--subnet",
            &format!("{prefix}.0/24"),
            "vlan10",
        ]);
        assert!(err.contains("no 802.1Q VLAN support"), "{err}");
        assert!(!link_names().contains(&parent));
        let listed = h.host.ok(&["network", "ls"]);
        assert!(!listed.contains("vlan10"), "{listed}");
        return;
    }
    let b = HostB::new(&format!("{prefix}.200/24"), true, false);
    let parent = format!("{}.10", b.va);
    assert!(!link_names().contains(&parent));
    macvlan_reaches_host_b(&h, &b, &parent, &prefix, "vlan10");
    let names = link_names();
    assert!(!names.contains(&parent), "the VLAN link we made is gone");
    assert!(names.contains(&b.va), "its base stays");
}

#[test]
fn ipv6_containers_ping_each_other_and_inspect_shows_their_addresses() {
    let h = NetHost::new();
    let (x, y) = subnet();
    let v6 = v6_prefix(x, y);
    h.host.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        &format!("10.{x}.{y}.0/24"),
        "--subnet",
        &format!("{v6}/64"),
        "dual",
    ]);
    let n = network_field(&h.host, "dual", "EnableIPv6");
    assert_eq!(n, true);
    let config = network_field(&h.host, "dual", "IPAM")["Config"].clone();
    assert_eq!(config[1]["Subnet"], format!("{v6}/64"), "{config}");
    h.host.sleeper("six1", &["--network", "dual"]);
    h.host
        .sleeper("six2", &["--network", "dual", "--ip6", &format!("{v6}99")]);
    let s1 = &h.host.inspect("six1")["NetworkSettings"]["Networks"]["dual"];
    assert_eq!(s1["GlobalIPv6Address"], format!("{v6}2"), "{s1}");
    assert_eq!(s1["GlobalIPv6PrefixLen"], 64);
    assert_eq!(s1["IPv6Gateway"], format!("{v6}1"));
    let s2 = &h.host.inspect("six2")["NetworkSettings"]["Networks"]["dual"];
    assert_eq!(s2["GlobalIPv6Address"], format!("{v6}99"), "{s2}");
    assert_eq!(s2["IPAMConfig"]["IPv6Address"], format!("{v6}99"));
    let containers = network_field(&h.host, "dual", "Containers");
    assert!(
        containers.to_string().contains(&format!("{v6}2/64")),
        "{containers}"
    );
    ping_from_container(&h.host, "six1", &format!("{v6}99"));
    ping_from_container(&h.host, "six2", &format!("{v6}2"));
    // The bridge has the gateway address; the container's default route
    // goes there.
    ping_from_container(&h.host, "six1", &format!("{v6}1"));
    let routes = h.host.sh("six1", "ip -6 route");
    assert!(routes.contains(&format!("default via {v6}1")), "{routes}");
    let bridge = bridge_of(&h.host, "dual");
    h.host.ok(&["rm", "-f", "six1", "six2"]);
    h.host.ok(&["network", "rm", "dual"]);
    assert!(!link_names().contains(&bridge));
    let left: Vec<_> = netlink::host_addresses6()
        .unwrap()
        .into_iter()
        .filter(|a| a.addr.addr().to_string().starts_with(&v6))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn container_ports_on_our_bridges_are_in_hairpin_mode() {
    let h = NetHost::new();
    h.network("hairpin");
    h.host.sleeper("hp", &["--network", "hairpin"]);
    let ports = ports_of(&bridge_of(&h.host, "hairpin"));
    assert_eq!(ports.len(), 1, "{ports:?}");
    let mode = std::fs::read_to_string(format!("/sys/class/net/{}/brport/hairpin_mode", ports[0]))
        .unwrap();
    assert_eq!(mode.trim(), "1");
}

#[test]
fn a_daemon_start_sweeps_half_made_namespaces_stray_veths_and_orphan_allocations() {
    use stack::net::netlink::Namespace;
    let mut h = NetHost::new();
    let prefix = h.network("crash");
    let bridge = bridge_of(&h.host, "crash");
    let net_id = network_field(&h.host, "crash", "Id")
        .as_str()
        .unwrap()
        .to_string();
    // A created (never started) container: an address, no namespace yet.
    let half = h
        .host
        .ok(&[
            "create",
            "--name",
            "half",
            "--network",
            "crash",
            "bb",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let pid = h.host.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let netns_dir = h.host.root().join("run/netns");
    let ghost = "d".repeat(64);
    let ghost2 = "e".repeat(64);
    // 1. The daemon was killed between making `half`'s namespace and its
    //    veth pair; a container that is gone left a mounted namespace and
    //    one a plain file (killed before the mount).
    for id in [&half, &ghost] {
        netlink::in_namespace(Namespace::Create(&netns_dir.join(id)), |_, _, _| async {
            Ok(())
        })
        .unwrap();
    }
    std::fs::write(netns_dir.join(&ghost2), b"").unwrap();
    // 2. An allocation of a container whose record is gone, with its veth
    //    end still on the bridge, and a veth named like ours that no
    //    record knows.
    let record_path = h.host.root().join(format!("network/{net_id}.json"));
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    let orphan_veth = stack::net::host_veth_name(&ghost, &net_id);
    record["endpoints"][&ghost] = serde_json::json!({
        "container_name": "ghost",
        "endpoint_id": "f".repeat(64),
        "ip": format!("{prefix}.250"),
        "mac": "02:42:00:00:00:01",
        "host_veth": orphan_veth,
        "iface": "eth0",
    });
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let stray = format!("veth{}0", unique());
    for (name, peer) in [
        (&orphan_veth, format!("vp{}", unique())),
        (&stray, format!("vp{}", unique())),
    ] {
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", name, "master", &bridge]);
    }
    assert_eq!(ports_of(&bridge).len(), 2);
    h.host.start_daemon();
    assert_eq!(ports_of(&bridge), Vec::<String>::new(), "no veth is left");
    let names = link_names();
    assert!(!names.contains(&orphan_veth) && !names.contains(&stray));
    let files: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "no namespace file is left: {files:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(netns_dir.to_str().unwrap()),
        "no namespace mount is left"
    );
    let containers = network_field(&h.host, "crash", "Containers");
    let holders: Vec<&String> = containers.as_object().unwrap().keys().collect();
    assert_eq!(
        holders,
        vec![&half],
        "only the live container's address stays"
    );
    // The half-made container starts whole.
    h.host.ok(&["start", "half"]);
    ping_from_container(&h.host, "half", &format!("{prefix}.1"));
}

#[test]
fn network_prune_filters_by_label_and_age() {
    let h = NetHost::new();
    for (name, label) in [("pa", "team=a"), ("pb", "team=b"), ("pc", "other")] {
        let (x, y) = subnet();
        h.host.ok(&[
            "network",
            "create",
            "--subnet",
            &format!("10.{x}.{y}.0/24"),
            "--label",
            label,
            name,
        ]);
    }
    let names = || -> BTreeSet<String> {
        h.host
            .ok(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let out = h
        .host
        .ok(&["network", "prune", "-f", "--filter", "label=team=a"]);
    assert!(out.contains("pa"), "{out}");
    assert!(!names().contains("pa") && names().contains("pb") && names().contains("pc"));
    h.host
        .ok(&["network", "prune", "-f", "--filter", "label!=team"]);
    assert!(!names().contains("pc") && names().contains("pb"));
    // Made within the last hour: `until=1h` keeps it; a time to come does
    // not.
    h.host
        .ok(&["network", "prune", "-f", "--filter", "until=1h"]);
    assert!(names().contains("pb"));
    h.host.ok(&[
        "network",
        "prune",
        "-f",
        "--filter",
        "until=2100-01-01T00:00:00Z",
    ]);
    assert!(!names().contains("pb"));
    let err = h
        .host
        .fails(&["network", "prune", "-f", "--filter", "color=red"]);
    assert!(err.contains("invalid filter"), "{err}");
}

#[test]
fn the_daemons_ipv6_flags_give_the_default_bridge_ipv6() {
    let (x, y) = subnet();
    let v6 = v6_prefix(x, y);
    let cidr = format!("{v6}/64");
    let h = NetHost::with_flags(&["--ipv6", "--fixed-cidr-v6", &cidr]);
    assert_eq!(network_field(&h.host, "bridge", "EnableIPv6"), true);
    h.host.sleeper("d6", &[]);
    h.host.sleeper("d6b", &[]);
    let s = &h.host.inspect("d6")["NetworkSettings"];
    assert_eq!(s["GlobalIPv6Address"], format!("{v6}2"), "{s}");
    assert_eq!(s["IPv6Gateway"], format!("{v6}1"));
    ping_from_container(&h.host, "d6", &format!("{v6}1"));
    ping_from_container(&h.host, "d6b", &format!("{v6}2"));
}

#[test]
fn a_bridge_name_option_naming_an_existing_bridge_uses_it_and_never_deletes_it() {
    let h = NetHost::new();
    let br = format!("eb{}", unique());
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = crate::output_within(
                std::process::Command::new("ip").args(["link", "del", &self.0]),
                Duration::from_secs(20),
            );
        }
    }
    let _gone = Gone(br.clone());
    ip(&["link", "add", &br, "type", "bridge"]);
    let (x, y) = subnet();
    h.host.ok(&[
        "network",
        "create",
        "-o",
        &format!("com.docker.network.bridge.name={br}"),
        "--subnet",
        &format!("10.{x}.{y}.0/24"),
        "theirs",
    ]);
    h.host.sleeper("guest", &["--network", "theirs"]);
    assert_eq!(ports_of(&br).len(), 1);
    ping_from_container(&h.host, "guest", &format!("10.{x}.{y}.1"));
    h.host.ok(&["rm", "-f", "guest"]);
    h.host.ok(&["network", "rm", "theirs"]);
    assert!(link_names().contains(&br), "the existing bridge stays");
    assert!(ports_of(&br).is_empty());
}
