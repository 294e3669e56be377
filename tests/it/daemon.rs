//! The daemon: live restore after SIGKILL, name races, the socket's access
//! rules, API errors, autostart, and sweeping what a crash cut short.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::Host;

fn socket(host: &Host) -> PathBuf {
    host.root().join("run/stack.sock")
}

fn daemon_pid(host: &Host) -> i32 {
    fs::read_to_string(host.root().join("run/stack.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// One raw HTTP/1.1 exchange on the daemon's socket: (status, body).
fn http(host: &Host, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let answer = host.http(method, path, "application/json", body);
    (answer.status, answer.text())
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn a_daemon_killed_with_sigkill_finds_every_container_again() {
    let host = Host::new();
    // c0 keeps a restart policy, c1 writes numbered log lines, the rest idle.
    host.ok(&[
        "run",
        "-d",
        "--name",
        "c0",
        "--restart",
        "always",
        "bb",
        "sleep",
        "1000",
    ]);
    host.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "bb",
        "sh",
        "-c",
        "i=0; while :; do echo $i; i=$((i+1)); sleep 0.005; done",
    ]);
    for i in 2..10 {
        host.ok(&[
            "run",
            "-d",
            "--name",
            &format!("c{i}"),
            "bb",
            "sh",
            "-c",
            &format!("echo started {i}; exec sleep 1000"),
        ]);
    }
    let pid = daemon_pid(&host);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the daemon is gone", || !alive(pid));
    // The next command starts a new daemon, which finds them all running.
    let ps = host.ok(&["ps", "--format", "json"]);
    assert_ne!(daemon_pid(&host), pid, "a new daemon answers");
    for i in 0..10 {
        assert!(ps.contains(&format!("\"c{i}\"")), "c{i} is listed: {ps}");
        assert_eq!(host.inspect(&format!("c{i}"))["State"]["Status"], "running");
    }
    assert_eq!(ps.lines().count(), 10, "{ps}");
    // They still work: exec, logs, stop with an exit code.
    assert_eq!(host.ok(&["exec", "c3", "echo", "hi"]), "hi\n");
    assert_eq!(host.ok(&["logs", "c3"]), "started 3\n");
    host.ok(&["kill", "c3"]);
    assert_eq!(host.ok(&["wait", "c3"]).trim(), "137");
    // The log of the container that kept writing has no gap.
    host.ok(&["stop", "-t", "0", "c1"]);
    let logs = host.ok(&["logs", "c1"]);
    let numbers: Vec<u64> = logs.lines().map(|l| l.parse().unwrap()).collect();
    assert!(numbers.len() > 10, "{logs}");
    assert!(
        numbers.iter().enumerate().all(|(i, n)| *n == i as u64),
        "a gap: {logs}"
    );
    // The restart policy is still enforced: its process dies, it comes back.
    let before = host.inspect("c0")["State"]["Pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(before).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("c0 is restarted", || {
        let c0 = host.inspect("c0");
        c0["State"]["Status"] == "running"
            && c0["State"]["Pid"].as_i64() != Some(before)
            && c0["RestartCount"].as_u64() >= Some(1)
    });
}

#[test]
fn events_report_what_happened_with_filters_and_times() {
    let host = Host::new();
    let out = host.stack(&["run", "--name", "ev", "bb", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    host.ok(&["rm", "ev"]);
    let out = host.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "container=ev",
    ]);
    let actions: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(actions, ["create", "start", "die", "destroy"], "{out}");
    assert!(out.contains("exitCode=4"), "{out}");
    let json = host.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "event=die",
        "--format",
        "json",
    ]);
    let event: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(event["Type"], "container");
    assert_eq!(event["Actor"]["Attributes"]["name"], "ev");
    host.ok(&["tag", "bb", "bb:two"]);
    host.ok(&["rmi", "bb:two"]);
    let out = host.ok(&[
        "events",
        "--since",
        "1h",
        "--until",
        "0s",
        "--filter",
        "type=image",
    ]);
    let actions: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert!(actions.ends_with(&["tag", "untag"]), "{out}");
    let out = host.stack(&["events", "--filter", "colour=red"]);
    assert!(!out.status.success());
}

#[test]
fn concurrent_creates_with_one_name_give_one_container() {
    let host = Host::new();
    host.ok(&["version"]);
    let children: Vec<_> = (0..8)
        .map(|_| {
            host.cmd(&["create", "--name", "only", "bb", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut won = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            won += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("already in use"), "{err}");
        }
    }
    assert_eq!(won, 1);
    assert_eq!(host.ok(&["ps", "-a", "-q"]).lines().count(), 1);
}

#[test]
fn the_socket_admits_root_and_its_group_and_no_one_else() {
    let host = Host::new();
    host.ok(&["version"]);
    let sock = socket(&host);
    let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // Another user is refused.
    let mut nobody = Command::new("setpriv");
    nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(host.root())
        .args(["--no-autostart", "-H"])
        .arg(format!("unix://{}", sock.display()))
        .arg("ps")
        .stdin(Stdio::null());
    let out = crate::output_within(&mut nobody, Duration::from_secs(60));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
    // Restarted with -G, the group's members get in.
    crate::stop_daemon(&host.root());
    let mut daemon = host
        .cmd(&["daemon", "-G", "65534"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the daemon listens", || UnixStream::connect(&sock).is_ok());
    let mut member = Command::new("setpriv");
    member
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(host.root())
        .args(["--no-autostart", "-H"])
        .arg(format!("unix://{}", sock.display()))
        .args(["ps", "-a"])
        .stdin(Stdio::null());
    let out = crate::output_within(&mut member, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONTAINER ID"));
    crate::stop_daemon(&host.root());
    let _ = daemon.wait();
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_goes_on() {
    let host = Host::new();
    let (status, body) = http(&host, "POST", "/v1.0/containers/create", br#"{"image": 5}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("image"), "the field is named: {body}");
    let (status, body) = http(&host, "POST", "/v1.0/containers/create", b"{not json");
    assert_eq!(status, 400, "{body}");
    let big = vec![b' '; 5 << 20];
    let (status, _) = http(&host, "POST", "/v1.0/containers/create", &big);
    assert_eq!(status, 413);
    let (status, body) = http(&host, "GET", "/v1.0/containers/nosuch/json", b"");
    assert_eq!(status, 404);
    assert!(body.contains("No such container: nosuch"), "{body}");
    let (status, _) = http(&host, "GET", "/v1.0/nowhere", b"");
    assert_eq!(status, 404);
    host.ok(&["create", "--name", "ww", "bb", "true"]);
    let (status, body) = http(
        &host,
        "POST",
        "/v1.0/containers/ww/wait?condition=soon",
        b"",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(&host, "POST", "/v1.0/containers/ww/kill?signal=NOPE", b"");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(&host, "POST", "/v1.0/containers/ww/kill", b"");
    assert_eq!(status, 409, "killing a created container conflicts: {body}");
    let (status, body) = http(
        &host,
        "POST",
        "/v1.0/containers/create",
        br#"{"image": "nosuchimage"}"#,
    );
    assert_eq!(status, 404, "{body}");
    // Unversioned paths are served too.
    let (status, body) = http(&host, "GET", "/_ping", b"");
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert!(host.ok(&["ps", "-a"]).contains(" ww\n"));
}

#[test]
fn clients_that_vanish_mid_stream_leave_the_daemon_serving() {
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "bb",
        "sh",
        "-c",
        "while :; do echo line; sleep 0.01; done",
    ]);
    for args in [
        vec!["logs", "-f", "chatty"],
        vec!["exec", "chatty", "sleep", "1000"],
        vec!["attach", "chatty"],
    ] {
        let mut child = host
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        if args[0] != "exec" {
            child
                .stdout
                .as_mut()
                .unwrap()
                .read_exact(&mut first)
                .unwrap();
        }
        child.kill().unwrap();
        let _ = child.wait();
    }
    assert!(host.ok(&["ps"]).contains("chatty"));
    assert_eq!(host.ok(&["exec", "chatty", "echo", "still"]), "still\n");
}

#[test]
fn without_a_daemon_the_cli_starts_one_unless_told_not_to() {
    let host = Host::new();
    crate::stop_daemon(&host.root());
    let out = host.stack(&["--no-autostart", "ps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to the stack daemon"), "{err}");
    assert!(!socket(&host).exists());
    let info = host.ok(&["info"]);
    assert!(info.contains("Storage Driver: overlay"), "{info}");
    assert!(info.contains("Cgroup Version: "), "{info}");
    assert!(alive(daemon_pid(&host)));
    // A second daemon on the same root refuses to start.
    let out = host.stack(&["daemon"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another stack daemon"), "{err}");
}

#[test]
fn a_create_cut_short_by_a_crash_leaves_no_claimed_name() {
    let host = Host::new();
    crate::stop_daemon(&host.root());
    // What a daemon killed in the middle of a create leaves: the name
    // claimed, the bundle begun, no record.
    let containers = host.root().join("containers");
    let id = "ab".repeat(32);
    fs::create_dir_all(containers.join(&id).join("upper")).unwrap();
    fs::create_dir_all(containers.join("names")).unwrap();
    std::os::unix::fs::symlink(&id, containers.join("names/half")).unwrap();
    host.ok(&["create", "--name", "half", "bb", "true"]);
    assert!(!containers.join(&id).exists());
    assert_eq!(host.ok(&["ps", "-a", "-q"]).lines().count(), 1);
}

/// What a host crash can leave: a container whose record never reached the
/// disk whole (create flushes after answering), and a removed bundle set
/// aside but not yet deleted. The next daemon removes both and frees the
/// name; `rm` itself takes the bundle away at once and deletes it behind.
#[test]
fn a_host_crash_leaves_no_torn_container_and_rm_deletes_behind() {
    let host = Host::new();
    let whole = host.ok(&["create", "--name", "whole", "bb", "true"]);
    let whole = whole.trim();
    crate::stop_daemon(&host.root());
    let containers = host.root().join("containers");
    let torn = "cd".repeat(32);
    fs::create_dir_all(containers.join(&torn).join("upper")).unwrap();
    fs::write(containers.join(&torn).join("container.json"), "").unwrap();
    std::os::unix::fs::symlink(&torn, containers.join("names/torn")).unwrap();
    let aside = containers.join(".trash").join("ef".repeat(32));
    fs::create_dir_all(aside.join("upper/a/b")).unwrap();
    host.ok(&["create", "--name", "torn", "bb", "true"]);
    assert!(!containers.join(&torn).exists());
    assert!(!aside.exists());
    assert_eq!(host.ok(&["ps", "-a", "-q"]).lines().count(), 2);

    host.ok(&["rm", "whole"]);
    assert!(!containers.join(whole).exists());
    let deadline = Instant::now() + Duration::from_secs(30);
    while containers.join(".trash").join(whole).exists() {
        assert!(
            Instant::now() < deadline,
            "the removed bundle was never deleted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_daemon_tells_systemd_its_state_and_applies_its_defaults() {
    let host = Host::new();
    crate::stop_daemon(&host.root());
    let notify_path = host.root().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut daemon = host
        .cmd(&[
            "daemon",
            "--default-ulimit",
            "nofile=512:512",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=2",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means the socket answers.
    UnixStream::connect(socket(&host)).unwrap();
    let (code, out, err) = host.run(&[], &["sh", "-c", "ulimit -n"]);
    assert_eq!((code, out.trim()), (0, "512"), "{err}");
    let (code, out, _) = host.run(&["--ulimit", "nofile=256:256"], &["sh", "-c", "ulimit -n"]);
    assert_eq!(
        (code, out.trim()),
        (0, "256"),
        "the container's own setting wins"
    );
    host.ok(&["run", "-d", "--name", "keeps", "bb", "sleep", "1000"]);
    let log = &host.inspect("keeps")["HostConfig"]["LogConfig"]["Config"];
    assert_eq!(log["max-size"], "1048576");
    assert_eq!(log["max-file"], "2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(daemon.wait().unwrap().success());
    assert!(!socket(&host).exists(), "the socket is removed");
    // The container outlives the daemon; the next one finds it running.
    assert_eq!(host.inspect("keeps")["State"]["Status"], "running");
}

#[test]
fn cidfile_gets_the_id_and_an_existing_one_stops_the_create() {
    let host = Host::new();
    let cidfile = host.root().join("cid");
    let id = host.ok(&[
        "run",
        "-d",
        "--cidfile",
        cidfile.to_str().unwrap(),
        "bb",
        "sleep",
        "100",
    ]);
    assert_eq!(fs::read_to_string(&cidfile).unwrap(), id.trim());
    let out = host.stack(&[
        "create",
        "--cidfile",
        cidfile.to_str().unwrap(),
        "bb",
        "true",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("container ID file found"), "{err}");
    assert_eq!(host.ok(&["ps", "-a", "-q"]).lines().count(), 1);
    // A create that fails leaves no cidfile behind.
    let other = host.root().join("cid2");
    let out = host.stack(&[
        "create",
        "--cidfile",
        other.to_str().unwrap(),
        "nosuchimage",
    ]);
    assert!(!out.status.success());
    assert!(!other.exists());
}

#[test]
fn a_flood_of_requests_and_idle_connections_do_not_wedge_the_daemon() {
    let host = Host::new();
    host.ok(&["run", "-d", "--name", "up", "bb", "sleep", "1000"]);
    // Connections that never send a request.
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(socket(&host)).unwrap())
        .collect();
    let sock = socket(&host);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..25 {
                    let mut s = UnixStream::connect(&sock).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.write_all(
                        b"GET /v1.0/containers/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )
                    .unwrap();
                    let mut answer = String::new();
                    let _ = s.read_to_string(&mut answer);
                    if answer.starts_with("HTTP/1.1 200") && answer.contains("\"up\"") {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 16 * 25);
    drop(idle);
    assert_eq!(host.ok(&["exec", "up", "echo", "fine"]), "fine\n");
}

#[test]
fn the_configuration_file_sets_what_flags_do_and_conflicts_are_refused() {
    let host = Host::new();
    crate::stop_daemon(&host.root());
    let config = host.root().join("daemon.toml");
    fs::write(
        &config,
        "log-opts = { max-file = \"3\" }\nrestart-delay = \"50ms\"\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    // A setting both in the file and on the command line.
    let out = host.stack(&[
        "daemon",
        "--config-file",
        config_arg,
        "--restart-delay",
        "1s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("both as a flag and in the configuration file"),
        "{err}"
    );
    // An unknown key, with its place in the file.
    let bad = host.root().join("bad.toml");
    fs::write(&bad, "restart-delay = \"50ms\"\nlog-optz = {}\n").unwrap();
    let out = host.stack(&["daemon", "--config-file", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log-optz") && err.contains(":2:"), "{err}");
    // The file's settings apply.
    let mut daemon = host
        .cmd(&["daemon", "--config-file", config_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the daemon listens", || {
        UnixStream::connect(socket(&host)).is_ok()
    });
    host.ok(&["create", "--name", "logs3", "bb", "true"]);
    let log = &host.inspect("logs3")["HostConfig"]["LogConfig"]["Config"];
    assert_eq!(log["max-file"], "3");
    crate::stop_daemon(&host.root());
    let _ = daemon.wait();
}

/// The names of the host's links (`ip -o link`).
fn host_links() -> Vec<String> {
    let out = crate::output_within(
        Command::new("ip").args(["-o", "link", "show"]),
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "ip link show failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The host's nftables tables (`nft list tables`).
fn nft_tables() -> String {
    let out = crate::output_within(
        Command::new("nft").args(["list", "tables"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "nft list tables failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test whose daemon was SIGKILLed with containers running (and that
/// never started it again) leaves nothing behind once its host is
/// dropped: no shim, no container process, no mount under its directory,
/// none of its links (the networks' bridges, the containers' veth ends,
/// its default bridge), no nftables table of its, no directory.
#[test]
fn a_host_dropped_after_its_daemon_was_killed_leaves_nothing_behind() {
    let bip = format!("{}.1/24", crate::host::prefix());
    let host = Host::with_daemon(&["--bip", &bip]);
    let subnet = format!("{}.0/24", crate::host::prefix());
    host.ok(&["network", "create", "--subnet", &subnet, "leaknet"]);
    host.sleeper("on-default", &[]);
    host.sleeper("on-leaknet", &["--network", "leaknet"]);
    let (dir, root) = (host.dir(), host.root());
    let shims = crate::host::shims_of(&root);
    assert_eq!(shims.len(), 2, "one shim per container: {shims:?}");
    let pids: Vec<i64> = ["on-default", "on-leaknet"]
        .iter()
        .map(|c| host.inspect(c)["State"]["Pid"].as_i64().unwrap())
        .collect();
    assert!(!crate::host::mounts_under(&dir).is_empty());
    // Its links, as the network store and the daemon name them.
    let mut links = vec![stack::net::default_bridge_name(&root)];
    for record in fs::read_dir(root.join("network")).unwrap().flatten() {
        let Ok(text) = fs::read_to_string(record.path()) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        links.extend(record["bridge"].as_str().map(str::to_string));
        for e in record["endpoints"].as_object().into_iter().flatten() {
            links.extend(e.1["host_veth"].as_str().map(str::to_string));
        }
    }
    let present = host_links();
    for link in &links {
        assert!(present.contains(link), "{link} is not there: {present:?}");
    }
    assert!(links.len() >= 4, "two bridges and two veths: {links:?}");
    let table = format!("table inet {}", stack::daemon::firewall::table_name(&root));
    assert!(nft_tables().lines().any(|l| l == table), "{table}");

    let daemon = i32::try_from(host.daemon_pid().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(host);

    assert_eq!(
        crate::host::shims_of(&root),
        Vec::<i32>::new(),
        "shims left"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "container process {pid} left"
        );
    }
    assert_eq!(
        crate::host::mounts_under(&dir),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
    // A namespace's veth goes with it, which the kernel finishes a little
    // later.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let present = host_links();
        let left: Vec<&String> = links.iter().filter(|l| present.contains(l)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "links left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!nft_tables().lines().any(|l| l == table), "{table} left");
    assert!(!dir.exists(), "{} left", dir.display());
}
