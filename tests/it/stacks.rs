//! Stacks kept converged by the daemon: `up -d`, service names, edits
//! that touch only what changed, invalid saves that change nothing, crash
//! restarts and `down`.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use crate::host::Host;

/// Names to ids of the stack's containers, running or not.
fn containers(host: &Host) -> BTreeMap<String, (String, String)> {
    let out = host.ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.Names}}\t{{.ID}}\t{{.Status}}",
    ]);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.to_string(),
                (f.next()?.to_string(), f.next()?.to_string()),
            ))
        })
        .collect()
}

/// Polls `check` until it holds (or fails the test after `limit`).
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const STACK: &str = r#"
name "shop"
service "web" {
    image "bb"
    command "httpd" "-f" "-p" "8080"
    replicas 2
}
service "worker" {
    image "bb"
    command "sleep" "1000"
    depends-on "web"
    restart "always" { backoff min="100ms" max="1s"; }
}
"#;

#[test]
fn a_stack_comes_up_follows_its_file_and_comes_down() {
    crate::host::require_root();
    let host = Host::new();
    let file = host.work().join("stack.kdl");
    fs::write(&file, STACK).unwrap();
    let out = host.ok(&["up", "-d"]);
    assert!(out.contains("start shop-worker-1"), "{out}");
    let before = containers(&host);
    for name in ["shop-web-1", "shop-web-2", "shop-worker-1"] {
        assert!(
            before.get(name).is_some_and(|(_, s)| s.starts_with("Up")),
            "{name} is not running: {before:?}"
        );
    }
    // Service names resolve on the stack's network.
    let page = host.sh("shop-worker-1", "wget -qO- http://web:8080/ 2>&1 || true");
    assert!(page.contains("404"), "web did not answer by name: {page}");
    assert!(host.ok(&["plan"]).contains("up to date"));

    // An edit of one service recreates that service only.
    fs::write(&file, STACK.replace("\"1000\"", "\"2000\"")).unwrap();
    eventually(Duration::from_secs(30), "worker recreated", || {
        let now = containers(&host);
        now.get("shop-worker-1")
            .is_some_and(|(id, s)| id != &before["shop-worker-1"].0 && s.starts_with("Up"))
    });
    let after = containers(&host);
    for name in ["shop-web-1", "shop-web-2"] {
        assert_eq!(after[name].0, before[name].0, "{name} was touched");
    }

    // A broken save changes nothing and says where the problem is.
    fs::write(&file, STACK.replace("replicas 2", "replicas \"two\"")).unwrap();
    eventually(Duration::from_secs(30), "the error is reported", || {
        host.ok(&["status", "shop"]).contains("stack.kdl:")
    });
    let status = host.ok(&["status", "shop"]);
    assert!(
        status.contains("stack.kdl:6:"),
        "no line and column: {status}"
    );
    let ids = |m: &BTreeMap<String, (String, String)>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, (id, _))| (k.clone(), id.clone()))
            .collect()
    };
    assert_eq!(
        ids(&containers(&host)),
        ids(&after),
        "a broken file changed containers"
    );

    // The fix applies.
    fs::write(&file, STACK.replace("replicas 2", "replicas 1")).unwrap();
    eventually(Duration::from_secs(30), "scaled down", || {
        !containers(&host).contains_key("shop-web-2")
    });
    assert_eq!(containers(&host)["shop-web-1"].0, before["shop-web-1"].0);

    // A container killed by hand comes back through its backoff.
    let worker = containers(&host)["shop-worker-1"].0.clone();
    host.ok(&["kill", "shop-worker-1"]);
    eventually(Duration::from_secs(30), "worker restarted", || {
        containers(&host)
            .get("shop-worker-1")
            .is_some_and(|(id, s)| id == &worker && s.starts_with("Up"))
    });
    assert!(host.ok(&["ls"]).contains("shop"));

    // Down: nothing of the stack is left.
    host.ok(&["down"]);
    assert!(containers(&host).is_empty(), "{:?}", containers(&host));
    let networks = host.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("shop_"), "{networks}");
    assert!(!host.ok(&["ls"]).contains("shop"));
}

/// A /24 of this test's own, `10.X.Y` (X from the pid, Y counted): the
/// default address pools are shared by every daemon on the machine.
fn own_subnet() -> String {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    let x = 150 + std::process::id() % 40;
    let y = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("10.{x}.{y}")
}

/// A host whose daemon's default bridge is on a subnet of the test's own.
fn own_host() -> Host {
    let bip = format!("{}.1/24", own_subnet());
    Host::with_daemon(&["--bip", &bip])
}

/// `stack` with its default network on a subnet of the test's own.
fn with_own_default_network(stack: &str) -> String {
    format!(
        "{stack}\nnetwork \"default\" subnet=\"{}.0/24\"\n",
        own_subnet()
    )
}

/// SIGKILLs the daemon the test started (and `others` right after it).
fn kill_daemon(host: &Host, others: &[i32]) {
    let daemon = i32::try_from(host.daemon_pid().unwrap()).unwrap();
    for pid in std::iter::once(daemon).chain(others.iter().copied()) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}

/// The events of the host so far that match `filters`, oldest first.
fn events(host: &Host, filters: &[&str]) -> Vec<serde_json::Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let mut args = vec![
        "events", "--since", "0", "--until", &until, "--format", "json",
    ];
    for f in filters {
        args.extend(["--filter", f]);
    }
    host.ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// When the events matching `filters` happened, in nanoseconds.
fn event_times(host: &Host, filters: &[&str]) -> Vec<i128> {
    events(host, filters)
        .iter()
        .map(|e| e["timeNano"].as_i64().unwrap().into())
        .collect()
}

const CRASHING: &str = r#"
name "crash"
service "loop" {
    image "bb"
    command "sh" "-c" "exit 3"
    restart "always" {
        backoff min="300ms" max="1m" factor=3.0
        start-limit burst=4 interval="1m"
    }
}
"#;

#[test]
fn a_crash_looping_service_backs_off_and_gives_up_at_its_start_limit() {
    crate::host::require_root();
    let host = Host::new();
    fs::write(
        host.work().join("stack.kdl"),
        with_own_default_network(CRASHING),
    )
    .unwrap();
    host.ok(&["up", "-d"]);
    let gave_up = ["container=crash-loop-1", "event=give-up"];
    let deadline = Instant::now() + Duration::from_secs(60);
    while events(&host, &gave_up).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no give-up: {}\n{}\n{:?}",
            host.ok(&["status", "crash"]),
            host.ok(&["ps", "-a"]),
            events(&host, &["container=crash-loop-1"])
                .iter()
                .map(|e| e["Action"].to_string())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let starts = event_times(&host, &["container=crash-loop-1", "event=start"]);
    assert_eq!(starts.len(), 4, "start limit 4: {starts:?}");
    // Each wait is the last one times the factor: the gaps between starts
    // grow, and none is shorter than its delay (300 ms, 900 ms, 2.7 s).
    let gaps: Vec<i128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, delay_ms) in gaps.iter().zip([300, 900, 2700]) {
        assert!(*gap >= delay_ms * 1_000_000, "gaps {gaps:?}");
    }
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "gaps {gaps:?}");
    // Given up: reported, and an apply starts it no more.
    eventually(Duration::from_secs(30), "status says it failed", || {
        host.ok(&["status", "crash"])
            .contains("failed:      crash-loop-1")
    });
    assert!(host.ok(&["ls"]).contains("failed"));
    host.ok(&["apply"]);
    assert!(host.ok(&["plan"]).contains("up to date"));
    let ps = &containers(&host)["crash-loop-1"].1;
    assert!(ps.starts_with("Exited (3)"), "{ps}");
    assert_eq!(
        event_times(&host, &["container=crash-loop-1", "event=start"]).len(),
        4
    );
    assert_eq!(events(&host, &gave_up).len(), 1);
}

const DEPENDS: &str = r#"
name "dep"
service "db" {
    image "bb"
    command "sleep" "1000"
    volume "./flag" "/flag"
    health "test -e /flag/ready" interval="200ms" retries=100000
    restart "always" { backoff min="100ms" max="1s"; }
}
service "app" {
    image "bb"
    command "sleep" "1000"
    depends-on "db" condition="healthy"
    restart "always" { backoff min="100ms" max="1s"; }
}
"#;

/// The container's `State` as `inspect` shows it (null while it does not
/// exist yet, or while the daemon is starting again).
fn state(host: &Host, name: &str) -> serde_json::Value {
    let out = host.stack(&["inspect", name]);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["State"].clone()
}

/// Waits until db has failed its check `probes` times in its current run
/// while app exists but does not run.
fn db_fails_while_app_waits(host: &Host, probes: u64) {
    eventually(Duration::from_secs(60), "db probed, failing", || {
        let db = state(host, "dep-db-1");
        db["Running"] == true && db["Health"]["FailingStreak"].as_u64() >= Some(probes)
    });
    let app = state(host, "dep-app-1");
    assert_eq!(
        app["Running"], false,
        "app runs before db is healthy: {app}"
    );
}

/// The last start of app came after db last turned healthy.
fn app_started_after_db_was_healthy(host: &Host) {
    eventually(Duration::from_secs(60), "app started", || {
        state(host, "dep-app-1")["Running"] == true
    });
    let healthy = event_times(
        host,
        &["container=dep-db-1", "event=health_status: healthy"],
    );
    let started = event_times(host, &["container=dep-app-1", "event=start"]);
    assert!(
        started.last() > healthy.last() && !healthy.is_empty(),
        "app started {started:?}, db healthy {healthy:?}"
    );
}

#[test]
fn a_dependent_waits_for_its_dependency_to_be_healthy_also_after_a_daemon_crash() {
    crate::host::require_root();
    let mut host = own_host();
    let flag = host.work().join("flag");
    fs::create_dir(&flag).unwrap();
    fs::write(
        host.work().join("stack.kdl"),
        with_own_default_network(DEPENDS),
    )
    .unwrap();
    // `up -d` returns once the stack is applied: app waits until then.
    let mut up = host
        .cmd(&["up", "-d"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(60), "app created", || {
        containers(&host).contains_key("dep-app-1")
    });
    db_fails_while_app_waits(&host, 3);
    fs::write(flag.join("ready"), "").unwrap();
    app_started_after_db_was_healthy(&host);
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "up -d did not return");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The daemon and the containers die at once (a host crash), and db
    // comes back unhealthy: app is started again only after db is healthy.
    let pids: Vec<i32> = ["dep-db-1", "dep-app-1"]
        .iter()
        .map(|n| i32::try_from(state(&host, n)["Pid"].as_i64().unwrap()).unwrap())
        .collect();
    kill_daemon(&host, &pids);
    fs::remove_file(flag.join("ready")).unwrap();
    // The daemon starts again and resumes the stack.
    host.start_daemon();
    db_fails_while_app_waits(&host, 3);
    fs::write(flag.join("ready"), "").unwrap();
    app_started_after_db_was_healthy(&host);
    host.ok(&["down"]);
}

/// A stack of ten services, two replicas each on two of them.
fn ten_services() -> String {
    let mut text = format!(
        "name \"big\"\nnetwork \"back\" subnet=\"{}.0/24\"\n",
        own_subnet()
    );
    text = with_own_default_network(&text);
    for i in 0..10 {
        let replicas = if i < 2 { 2 } else { 1 };
        let network = if i % 2 == 0 { "back" } else { "default" };
        text.push_str(&format!(
            "service \"s{i}\" {{\n image \"bb\"\n command \"sleep\" \"1000\"\n replicas {replicas}\n network \"{network}\"\n}}\n"
        ));
    }
    text
}

/// Stack containers, by name, as the runtime keeps them (no daemon
/// needed): (stack label, running).
fn records(host: &Host) -> Vec<(String, Option<String>)> {
    let dir = host.root().join("containers");
    let Ok(entries) = fs::read_dir(&dir) else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| fs::read(e.path().join("container.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["labels"]["stack.name"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn a_daemon_killed_mid_apply_converges_when_it_starts_again() {
    crate::host::require_root();
    let host = Host::new();
    fs::write(host.work().join("stack.kdl"), ten_services()).unwrap();
    host.ok(&["version"]);
    let mut expected: Vec<String> = (0..10)
        .flat_map(|i| {
            let n = if i < 2 { 2 } else { 1 };
            (1..=n).map(move |r| format!("big-s{i}-{r}"))
        })
        .collect();
    expected.sort();
    // Cut at several points: before the first container, then after
    // 3, 6, 9 and 11 of the twelve exist.
    for cut in [0, 3, 6, 9, 11] {
        let daemon: i32 = fs::read_to_string(host.root().join("run/stack.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut up = host
            .cmd(&["up", "-d"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let registration = host.root().join("stacks/big.json");
        eventually(Duration::from_secs(60), "the apply got there", || {
            registration.exists() && records(&host).len() >= cut
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while up.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "up -d outlived the daemon");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The next command starts the daemon again, which resumes the
        // stack.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = containers(&host);
            if now.keys().cloned().collect::<Vec<_>>() == expected
                && now.values().all(|(_, s)| s.starts_with("Up"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cut {cut}: not converged: {now:#?}\n{}",
                host.ok(&["status", "big"]),
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let all = records(&host);
        assert_eq!(all.len(), expected.len(), "cut {cut}: {all:?}");
        assert!(
            all.iter().all(|(_, stack)| stack.as_deref() == Some("big")),
            "cut {cut}: {all:?}"
        );
        let mut networks: Vec<String> = host
            .ok(&["network", "ls", "--format", "{{.Name}}"])
            .lines()
            .filter(|n| n.starts_with("big_"))
            .map(str::to_string)
            .collect();
        networks.sort();
        assert_eq!(networks, ["big_back", "big_default"], "cut {cut}");
        host.ok(&["down"]);
        assert!(records(&host).is_empty(), "cut {cut}: {:?}", records(&host));
    }
}

/// The examples, each with a test of its own below.
const EXAMPLES: &[&str] = &[
    "compose-import",
    "static-site",
    "two-networks",
    "web-db",
    "worker-pool",
];

#[test]
fn every_example_stack_has_a_test_that_brings_it_up() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stacks");
    let mut found: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, EXAMPLES);
}

/// Imports `busybox:latest` with every applet, as scripts/quickstart does.
fn quickstart_busybox(host: &Host) {
    let rootfs = host.work().join(".rootfs");
    for d in ["bin", "etc", "tmp", "root"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox is required: apt-get install busybox-static");
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    let list = crate::output_within(
        std::process::Command::new(busybox).arg("--list"),
        Duration::from_secs(10),
    );
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    host.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
}

/// Free host ports for the ports an example publishes, by the port it
/// names (the KDL and TOML twins get the same).
type Ports = BTreeMap<String, u16>;

/// A quoted value of a stack file made this test's own: a published
/// port's host side becomes a free port (kept in `ports`), a 10.x
/// address or subnet moves to `10.OCTET`.
fn own_value(value: &str, is_port: bool, ports: &mut Ports, octet: u8) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = value.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [host, container] => ("", *host, *container),
        [ip, host, container] if ip.parse::<std::net::Ipv4Addr>().is_ok() => {
            (*ip, *host, *container)
        }
        _ => ("", "", ""),
    };
    if is_port && digits(host) && digits(container.split('/').next().unwrap_or_default()) {
        let free = *ports.entry(host.to_string()).or_insert_with(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let ip = if ip.is_empty() {
            String::new()
        } else {
            format!("{ip}:")
        };
        return format!("{ip}{free}:{container}");
    }
    let mut octets = value.splitn(3, '.');
    if let (Some("10"), Some(second), Some(rest)) = (octets.next(), octets.next(), octets.next())
        && digits(second)
    {
        return format!("10.{octet}.{rest}");
    }
    value.to_string()
}

/// `text` with every quoted value made the test's own ([`own_value`]).
fn own_stack_file(text: &str, ports: &mut Ports, octet: u8) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let Some(close) = rest.find('"') else {
            break;
        };
        // Ports are written `port "…"` (KDL), `ports = ["…"]` (TOML) or
        // `- "…"` (compose); `user "1000:1000"` is not one.
        let line = out.rsplit('\n').next().unwrap_or_default().trim_start();
        let is_port = line.starts_with("port") || line.starts_with('-');
        out.push_str(&own_value(&rest[..close], is_port, ports, octet));
        out.push('"');
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Copies `from` into `to`, making the stack files the test's own
/// (`ports` gets the host ports published).
fn copy_example(from: &std::path::Path, to: &std::path::Path, ports: &mut Ports, octet: u8) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_example(&path, &target, ports, octet);
        } else if stack::spec::load::Format::of(&path).is_some() {
            let text = fs::read_to_string(&path).unwrap();
            fs::write(&target, own_stack_file(&text, ports, octet)).unwrap();
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// Whether something answers an HTTP GET on 127.0.0.1:`port`.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut answer = [0u8; 64];
    matches!(s.read(&mut answer), Ok(n) if n > 0)
}

/// Brings example `name` up on a host of its own, checks that every
/// published port answers, takes it down and checks nothing is left.
fn example_comes_up_answers_and_goes_down(name: &str, octet: u8) {
    crate::host::require_root();
    let host = Host::new();
    quickstart_busybox(&host);
    let dir = host.work().join(name);
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/stacks")
        .join(name);
    let mut ports = Ports::new();
    copy_example(&source, &dir, &mut ports, octet);
    let run = |args: &[&str]| {
        let out = crate::output_within(
            host.cmd(args)
                .current_dir(&dir)
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "{name}: stack {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["up", "-d"]);
    eventually(Duration::from_secs(60), "every container runs", || {
        let now = containers(&host);
        !now.is_empty() && now.values().all(|(_, s)| s.starts_with("Up"))
    });
    for port in ports.values() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers(*port) {
            if Instant::now() > deadline {
                let logs: Vec<String> = containers(&host)
                    .keys()
                    .map(|c| {
                        let out = host.stack(&["logs", c]);
                        format!(
                            "{c}: {}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        )
                    })
                    .collect();
                panic!(
                    "{name} does not answer on {port}: {}\n{}",
                    host.ok(&["ps", "-a"]),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    run(&["down", "-v"]);
    assert!(containers(&host).is_empty(), "{:?}", containers(&host));
    let networks = host.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        networks
            .lines()
            .all(|n| ["bridge", "host", "none"].contains(&n)),
        "{name} left networks: {networks}"
    );
    let volumes = fs::read_dir(host.root().join("volumes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(volumes, 0, "{name} left volumes");
}

/// A second octet for an example's subnets, its own in this run.
fn octet(example: usize) -> u8 {
    u8::try_from(100 + (std::process::id() as usize * 5 + example) % 150).unwrap()
}

#[test]
fn the_compose_import_example_comes_up_and_answers() {
    example_comes_up_answers_and_goes_down("compose-import", octet(0));
}

#[test]
fn the_static_site_example_comes_up_and_answers() {
    example_comes_up_answers_and_goes_down("static-site", octet(1));
}

#[test]
fn the_two_networks_example_comes_up_and_answers() {
    example_comes_up_answers_and_goes_down("two-networks", octet(2));
}

#[test]
fn the_web_db_example_comes_up_and_answers() {
    example_comes_up_answers_and_goes_down("web-db", octet(3));
}

#[test]
fn the_worker_pool_example_comes_up_and_answers() {
    example_comes_up_answers_and_goes_down("worker-pool", octet(4));
}
