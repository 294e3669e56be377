//! Stacks kept converged by the daemon: `up -d`, service names, edits
//! that touch only what changed, invalid saves that change nothing, crash
//! restarts and `down`; the foreground `up` (prefixed logs, Ctrl-C) and
//! the up flags.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::host::Host;

/// Names to ids of the stack's containers, running or not.
pub(crate) fn containers(host: &Host) -> BTreeMap<String, (String, String)> {
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
pub(crate) fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
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

/// `network "default"` on a /24 of this test's own.
fn default_network() -> String {
    format!(
        "network \"default\" subnet=\"{}.0/24\"\n",
        crate::host::prefix()
    )
}

/// How long a foreground `stack up` may take to show what a test waits for.
const SHOW: Duration = Duration::from_secs(60);

/// A foreground `stack up` with its output piped; killed on drop, so no
/// test leaves it running.
struct Foreground {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Foreground {
    fn start(host: &Host, args: &[&str]) -> Foreground {
        let mut child = host
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Foreground {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one equals `line` (fails the test after `SHOW`).
    fn expect(&mut self, line: &str) {
        if self.seen.iter().any(|l| l == line) {
            return;
        }
        let deadline = Instant::now() + SHOW;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let found = l == line;
                    self.seen.push(l);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "`stack up` did not print {line:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the command to end (fails the test after `limit`) and
    /// reads the rest of its output.
    fn exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`stack up` did not end; it printed:\n{}",
                self.seen.join("\n")
            );
            // Keep reading so a full pipe cannot stall it.
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(50)) {
                self.seen.push(l);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        status
    }

    fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service that prints `text` once and runs until SIGTERM.
fn talker(name: &str, text: &str, extra: &str) -> String {
    format!(
        "service \"{name}\" {{\n    image \"bb\"\n    command \"sh\" \"-c\" \"echo {text}; trap 'exit 0' TERM; while true; do sleep 0.1; done\"\n{extra}}}\n"
    )
}

fn running(host: &Host, name: &str) -> bool {
    containers(host)
        .get(name)
        .is_some_and(|(_, s)| s.starts_with("Up"))
}

fn ids(host: &Host) -> BTreeMap<String, String> {
    containers(host)
        .into_iter()
        .map(|(k, (id, _))| (k, id))
        .collect()
}

#[test]
fn foreground_up_streams_prefixed_logs_and_follows_recreated_containers() {
    crate::host::require_root();
    let host = Host::new();
    let file = host.work().join("stack.kdl");
    let network = default_network();
    let stack = |version: &str| {
        format!(
            "name \"fg\"\n{network}{}{}",
            talker("web", &format!("web says {version}"), ""),
            talker("worker", "worker says hi", "")
        )
    };
    fs::write(&file, stack("v1")).unwrap();
    let mut up = Foreground::start(&host, &["up", "--no-color"]);
    // Compose's prefixes: the name padded to the longest one.
    up.expect("web-1    | web says v1");
    up.expect("worker-1 | worker says hi");

    // A save recreates web; the new container's log joins the stream.
    let before = ids(&host);
    fs::write(&file, stack("v2")).unwrap();
    up.expect("web-1    | web says v2");
    up.expect("web-1 exited with code 0");
    let after = ids(&host);
    assert_ne!(after["fg-web-1"], before["fg-web-1"]);
    assert_eq!(after["fg-worker-1"], before["fg-worker-1"]);

    // An invalid save is reported with its line and column.
    let broken = stack("v3").replacen(
        "    image \"bb\"\n",
        "    image \"bb\"\n    replicas \"two\"\n",
        1,
    );
    fs::write(&file, broken).unwrap();
    let deadline = Instant::now() + SHOW;
    while !up.seen.iter().any(|l| l.contains("stack.kdl:")) {
        assert!(Instant::now() < deadline, "no diagnostic:\n{}", up.output());
        if let Ok(l) = up.lines.recv_timeout(Duration::from_millis(100)) {
            up.seen.push(l);
        }
    }

    up.signal(nix::sys::signal::Signal::SIGINT);
    let status = up.exit(SHOW);
    assert_eq!(status.code(), Some(130), "{}", up.output());
    assert!(
        up.output()
            .contains("Gracefully stopping... (press Ctrl+C again to force)"),
        "{}",
        up.output()
    );
}

#[test]
fn ctrl_c_stops_the_stack_for_good_and_up_starts_it_again() {
    crate::host::require_root();
    let host = Host::new();
    let stubborn = "service \"stubborn\" {\n    image \"bb\"\n    command \"sh\" \"-c\" \"trap '' TERM; echo stubborn up; while true; do sleep 0.1; done\"\n    stop-grace-period \"300s\"\n}\n";
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"fg\"\n{}{}{stubborn}",
            default_network(),
            talker("app", "app up", "    restart \"always\"\n"),
        ),
    )
    .unwrap();
    let mut up = Foreground::start(&host, &["up"]);
    up.expect("app-1      | app up");
    up.expect("stubborn-1 | stubborn up");
    let before = ids(&host);

    // The first Ctrl-C stops gracefully: app goes at once, stubborn
    // ignores SIGTERM and has a long grace period.
    up.signal(nix::sys::signal::Signal::SIGINT);
    up.expect("Gracefully stopping... (press Ctrl+C again to force)");
    up.expect("app-1 exited with code 0");
    assert!(running(&host, "fg-stubborn-1"));
    // The second one kills: it ends long before the grace period.
    up.signal(nix::sys::signal::Signal::SIGINT);
    let status = up.exit(SHOW);
    assert_eq!(status.code(), Some(130), "{}", up.output());

    // Kept, stopped, and no longer the daemon's to keep (app's restart
    // policy does not bring it back).
    let now = containers(&host);
    assert!(now["fg-app-1"].1.starts_with("Exited (0)"), "{now:?}");
    assert!(
        now["fg-stubborn-1"].1.starts_with("Exited (137)"),
        "killed, not stopped: {now:?}"
    );
    assert!(!host.ok(&["ls"]).contains("fg"), "{}", host.ok(&["ls"]));
    assert!(!host.root().join("stacks/fg.json").exists());
    let status = host.fails(&["status", "fg"]);
    assert!(status.contains("no such stack"), "{status}");

    // `up` starts the same containers again.
    host.ok(&["up", "-d"]);
    assert!(running(&host, "fg-app-1") && running(&host, "fg-stubborn-1"));
    assert_eq!(ids(&host), before);
    // Not `down`: it would give stubborn its grace period.
    host.ok(&["kill", "fg-stubborn-1"]);
    host.ok(&["down"]);
}

#[test]
fn force_recreate_replaces_unchanged_containers_once() {
    crate::host::require_root();
    let host = Host::new();
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"fr\"\n{}{}{}",
            default_network(),
            talker("web", "web", ""),
            talker("db", "db", "")
        ),
    )
    .unwrap();
    host.ok(&["up", "-d"]);
    let first = ids(&host);
    assert_eq!(first.len(), 2, "{first:?}");
    host.ok(&["up", "-d"]);
    assert_eq!(ids(&host), first, "an unchanged stack was recreated");

    let out = host.ok(&["up", "-d", "--force-recreate"]);
    assert!(out.contains("--force-recreate"), "{out}");
    let forced = ids(&host);
    for name in ["fr-web-1", "fr-db-1"] {
        assert_ne!(forced[name], first[name], "{name} kept its container");
        assert!(running(&host, name), "{name} is not running");
    }
    // Once: the next apply leaves them.
    host.ok(&["apply"]);
    assert_eq!(ids(&host), forced);
    host.ok(&["down"]);
}

#[test]
fn no_deps_starts_only_the_named_service() {
    crate::host::require_root();
    let host = Host::new();
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"nd\"\n{}{}{}",
            default_network(),
            talker("web", "web", "    depends-on \"db\"\n"),
            talker("db", "db", "")
        ),
    )
    .unwrap();
    host.ok(&["up", "-d", "--no-deps", "web"]);
    let only = ids(&host);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["nd-web-1"], "{only:?}");
    assert!(running(&host, "nd-web-1"));
    let unknown = host.fails(&["up", "-d", "wbe"]);
    assert!(unknown.contains("no such service: wbe"), "{unknown}");
    // Without --no-deps the dependency comes along.
    host.ok(&["up", "-d", "web"]);
    assert!(running(&host, "nd-db-1") && running(&host, "nd-web-1"));
    assert_eq!(ids(&host)["nd-web-1"], only["nd-web-1"]);
    host.ok(&["down"]);
}

#[test]
fn wait_returns_once_healthy_and_fails_when_a_service_never_is() {
    crate::host::require_root();
    let host = Host::new();
    let file = host.work().join("stack.kdl");
    let network = default_network();
    let good = talker(
        "good",
        "good",
        "    health \"true\" interval=\"200ms\" timeout=\"5s\" retries=3\n",
    );
    fs::write(&file, format!("name \"wt\"\n{network}{good}")).unwrap();
    let out = host.ok(&["up", "-d", "--wait", "--wait-timeout", "120"]);
    assert!(out.contains("stack wt is up"), "{out}");
    let health = host.inspect("wt-good-1");
    assert_eq!(health["State"]["Health"]["Status"], "healthy", "{health}");

    let bad = talker(
        "bad",
        "bad",
        "    health \"false\" interval=\"200ms\" timeout=\"5s\" retries=100000\n",
    );
    fs::write(&file, format!("name \"wt\"\n{network}{good}{bad}")).unwrap();
    let err = host.fails(&["up", "-d", "--wait", "--wait-timeout", "2"]);
    assert!(
        err.contains("timed out after 2s") && err.contains("wt-bad-1 is not healthy yet"),
        "{err}"
    );
    host.ok(&["down"]);
}

#[test]
fn abort_on_container_exit_stops_the_stack_with_the_code_of_the_exit() {
    crate::host::require_root();
    let host = Host::new();
    let job = "service \"job\" {\n    image \"bb\"\n    command \"sh\" \"-c\" \"echo job done; sleep 1; exit 3\"\n    depends-on \"web\"\n}\n";
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"ab\"\n{}{}{job}",
            default_network(),
            talker("web", "web up", "")
        ),
    )
    .unwrap();
    let mut up = Foreground::start(&host, &["up", "--abort-on-container-exit"]);
    up.expect("job-1 | job done");
    up.expect("job-1 exited with code 3");
    up.expect("Aborting on container exit...");
    let status = up.exit(SHOW);
    assert_eq!(status.code(), Some(3), "{}", up.output());
    let now = containers(&host);
    assert!(now["ab-web-1"].1.starts_with("Exited (0)"), "{now:?}");
}

#[test]
fn pull_never_fails_a_missing_image_instead_of_pulling_it() {
    crate::host::require_root();
    let host = Host::new();
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"pn\"\n{}service \"app\" {{\n    image \"nosuch.invalid/app:1\"\n}}\n",
            default_network()
        ),
    )
    .unwrap();
    let err = host.fails(&["up", "-d", "--pull", "never"]);
    assert!(
        err.contains("no such image") && err.contains("--pull never"),
        "{err}"
    );
    assert!(containers(&host).is_empty());
    host.ok(&["down"]);
}

/// A /24 of this test's own, `10.X.Y`: the default address pools are
/// shared by every daemon on the machine.
fn own_subnet() -> String {
    crate::host::prefix()
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
    // Each wait is the last one times the factor: no gap between starts is
    // shorter than its delay (300 ms, 900 ms, 2.7 s). (A gap may be longer
    // than the next on a busy machine: only the lower bounds are the
    // backoff's.)
    let gaps: Vec<i128> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, delay_ms) in gaps.iter().zip([300, 900, 2700]) {
        assert!(*gap >= delay_ms * 1_000_000, "gaps {gaps:?}");
    }
    // Given up: reported, and the loop plans nothing more for it (an
    // explicit `stack up` tries again, as Compose's starts what is stopped).
    eventually(Duration::from_secs(30), "status says it failed", || {
        host.ok(&["status", "crash"])
            .contains("failed:      crash-loop-1")
    });
    assert!(host.ok(&["ls"]).contains("failed"));
    assert!(host.ok(&["plan"]).contains("up to date"));
    let ps = &containers(&host)["crash-loop-1"].1;
    assert!(ps.starts_with("Exited (3)"), "{ps}");
    assert_eq!(
        event_times(&host, &["container=crash-loop-1", "event=start"]).len(),
        4
    );
    assert_eq!(events(&host, &gave_up).len(), 1);
    // `ps --stack` marks it, with its restarts and no next try.
    let ps = host.ok(&[
        "ps",
        "--stack",
        "crash",
        "--format",
        "{{.Name}}\t{{.Restarts}}\t{{.Status}}",
    ]);
    let row: Vec<&str> = ps
        .lines()
        .find(|l| l.starts_with("crash-loop-1\t"))
        .unwrap_or_else(|| panic!("{ps}"))
        .split('\t')
        .collect();
    assert_eq!(row[1], "3", "{ps}");
    assert!(
        row[2].starts_with("Exited (3)")
            && row[2].contains("3 restarts")
            && row[2].ends_with("given up")
            && !row[2].contains("next try"),
        "{ps}"
    );
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
        // stack. (A command racing the killed daemon's last moments can
        // see its connection dropped: the daemon must answer one soon.)
        eventually(Duration::from_secs(60), "the daemon answers again", || {
            host.stack(&["ps", "-q"]).status.success()
        });
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

const ROLLING: &str = r#"
name "roll"
service "web" {
    image "bb"
    command "sleep" "1000"
    env V="1"
    health "test ! -e /bad" interval="200ms" retries=2
    update { order "start-first"; }
    restart "always" { backoff min="100ms" max="1s"; }
}
service "client" {
    image "bb"
    command "sleep" "1000"
}
"#;

/// The address `name` resolves to in container `from` (the embedded
/// DNS), as `ping` prints it.
fn resolves_to(host: &Host, from: &str, name: &str) -> String {
    let out = host.sh(from, &format!("ping -c1 -W1 {name} 2>&1 | head -1"));
    out.split(['(', ')']).nth(1).unwrap_or_default().to_string()
}

/// The container's address on the stack's default network.
fn address(host: &Host, name: &str) -> String {
    host.inspect(name)["NetworkSettings"]["Networks"]["roll_default"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `update { order "start-first" }`: an edit starts the new container
/// while the old one runs, and stops the old one only once the new one is
/// healthy; the replica's name then answers for the new one. An edit
/// whose new container never gets healthy leaves the old one running and
/// says so, until the next edit.
#[test]
fn a_start_first_update_replaces_a_container_only_once_the_new_one_is_healthy() {
    let host = own_host();
    let file = host.work().join("stack.kdl");
    // One network for every version: a change to it would recreate all.
    let network = default_network();
    let with_network = |stack: &str| format!("{stack}{network}");
    fs::write(&file, with_network(ROLLING)).unwrap();
    host.ok(&["up", "-d", "--wait"]);
    let first = ids(&host)["roll-web-1"].clone();

    // Edit 1: a new environment. The new container runs under a
    // temporary name next to the old one, then takes the replica's name.
    fs::write(&file, with_network(&ROLLING.replace("V=\"1\"", "V=\"2\""))).unwrap();
    eventually(
        Duration::from_secs(60),
        "the new web-1 replaced the old",
        || {
            let now = containers(&host);
            now.get("roll-web-1")
                .is_some_and(|(id, status)| *id != first && status.contains("(healthy)"))
                && !now.contains_key("roll-web-1-next")
                && !now.values().any(|(id, _)| *id == first)
        },
    );
    let second = ids(&host)["roll-web-1"].clone();
    assert!(host.sh("roll-web-1", "echo $V").trim() == "2");
    let time = |id: &str, action: &str| -> i128 {
        let t = event_times(
            &host,
            &[&format!("container={id}"), &format!("event={action}")],
        );
        *t.first()
            .unwrap_or_else(|| panic!("no {action} event of {id}"))
    };
    let new_created = time(&second, "create");
    let new_started = time(&second, "start");
    let new_healthy = time(&second, "health_status");
    let old_stopped = time(&first, "die");
    assert!(
        new_created < new_started && new_started < new_healthy && new_healthy < old_stopped,
        "create {new_created}, start {new_started}, healthy {new_healthy} of the new one, \
         die of the old {old_stopped}: {:?}",
        events(&host, &["type=container"])
            .iter()
            .map(|e| format!(
                "{} {} {}",
                e["timeNano"], e["Action"], e["Actor"]["Attributes"]["name"]
            ))
            .collect::<Vec<_>>()
    );
    let created = events(&host, &[&format!("container={second}"), "event=create"]);
    assert_eq!(
        created[0]["Actor"]["Attributes"]["name"], "roll-web-1-next",
        "{created:?}"
    );
    // The replica's name (and the service's) answer for the new one.
    let new_address = address(&host, "roll-web-1");
    assert!(!new_address.is_empty());
    eventually(
        Duration::from_secs(20),
        "roll-web-1 resolves to the new one",
        || resolves_to(&host, "roll-client-1", "roll-web-1") == new_address,
    );
    assert_eq!(resolves_to(&host, "roll-client-1", "web"), new_address);
    let ps = host.ok(&["ps", "--stack", "roll", "--format", "{{.Name}}"]);
    assert_eq!(
        ps.lines().collect::<Vec<_>>(),
        ["roll-client-1", "roll-web-1"]
    );

    // Edit 2: the new container never gets healthy. The old one runs on,
    // the new one is stopped, and the failure is reported.
    let broken = ROLLING.replace("V=\"1\"", "V=\"3\"").replace(
        "command \"sleep\" \"1000\"\n    env",
        "command \"sh\" \"-c\" \"touch /bad; exec sleep 1000\"\n    env",
    );
    assert_ne!(broken, ROLLING.replace("V=\"1\"", "V=\"3\""));
    fs::write(&file, with_network(&broken)).unwrap();
    eventually(
        Duration::from_secs(60),
        "the update is reported failed",
        || !events(&host, &["type=stack", "event=update-failed"]).is_empty(),
    );
    let failed = &events(&host, &["type=stack", "event=update-failed"])[0];
    assert_eq!(
        failed["Actor"]["Attributes"]["container"], "roll-web-1-next",
        "{failed}"
    );
    eventually(
        Duration::from_secs(30),
        "status says the update failed",
        || {
            host.ok(&["status", "roll"]).contains(
                "update failed: roll-web-1-next never got ready, roll-web-1 keeps running",
            )
        },
    );
    let now = containers(&host);
    assert_eq!(
        now["roll-web-1"].0, second,
        "the old one was replaced: {now:?}"
    );
    assert!(now["roll-web-1"].1.starts_with("Up "), "{now:?}");
    assert!(now["roll-web-1-next"].1.starts_with("Exited"), "{now:?}");
    assert!(
        event_times(&host, &[&format!("container={second}"), "event=die"]).is_empty(),
        "the old one was stopped"
    );
    assert_eq!(host.sh("roll-web-1", "echo $V").trim(), "2");
    // The next round (a kick of the loop's own) does not try again.
    let next = host.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(next.matches("roll-web-1-next").count(), 1, "{next}");

    // Edit 3: a fix applies, through a replacement under the same
    // temporary name.
    fs::write(&file, with_network(&ROLLING.replace("V=\"1\"", "V=\"4\""))).unwrap();
    eventually(Duration::from_secs(60), "the fix replaced web-1", || {
        let now = containers(&host);
        now.get("roll-web-1")
            .is_some_and(|(id, status)| *id != second && status.contains("(healthy)"))
            && !now.contains_key("roll-web-1-next")
    });
    assert_eq!(host.sh("roll-web-1", "echo $V").trim(), "4");
    eventually(Duration::from_secs(30), "status is clean again", || {
        !host.ok(&["status", "roll"]).contains("update failed")
    });
    host.ok(&["down"]);
}

/// `${VAR}` in the stack file and in a service's env file read the
/// environment of the `stack up` that registered the stack, never the
/// daemon's own; a variable a later save starts to read is empty (with
/// the stack file's warning) until the next `up` brings it.
#[test]
fn interpolation_reads_the_callers_environment_never_the_daemons() {
    let bip = format!("{}.1/24", own_subnet());
    let host = Host::with_daemon_env(
        &["--bip", &bip],
        &[("WHO", "the-daemon"), ("LATER", "the-daemon")],
    );
    let network = default_network();
    let stack = |extra: &str| {
        format!(
            "name \"vars\"\nservice \"app\" {{\n    image \"bb\"\n    command \"sleep\" \"1000\"\n    env-file \"app.env\"\n    env FROM_STACK=\"${{WHO}}\"{extra}\n}}\n{network}"
        )
    };
    let file = host.work().join("stack.kdl");
    fs::write(host.work().join("app.env"), "GREETING=hello ${WHO}\n").unwrap();
    fs::write(&file, stack("")).unwrap();
    let up = |vars: &[(&str, &str)]| {
        let mut cmd = host.cmd(&["up", "-d"]);
        cmd.env_remove("WHO").env_remove("LATER");
        cmd.envs(vars.iter().copied());
        let out = crate::output_within(cmd.stdin(Stdio::null()), Duration::from_secs(120));
        assert!(
            out.status.success(),
            "up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    up(&[("WHO", "the-caller")]);
    // The container's environment; empty while it is being recreated.
    let env = |host: &Host| {
        let out = host.stack(&["exec", "vars-app-1", "sh", "-c", "env | sort"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let now = env(&host);
    assert!(now.contains("GREETING=hello the-caller\n"), "{now}");
    assert!(now.contains("FROM_STACK=the-caller\n"), "{now}");

    // Saved later, reading a variable the caller never sent: empty, not
    // the daemon's.
    fs::write(
        host.work().join("app.env"),
        "GREETING=hello ${WHO}\nSECOND=x${LATER}x\n",
    )
    .unwrap();
    fs::write(&file, stack(" THIRD=\"y${LATER}y\"")).unwrap();
    eventually(Duration::from_secs(60), "the saved files applied", || {
        running(&host, "vars-app-1") && env(&host).contains("SECOND=")
    });
    let now = env(&host);
    assert!(now.contains("SECOND=xx\n"), "{now}");
    assert!(now.contains("THIRD=yy\n"), "{now}");
    assert!(now.contains("GREETING=hello the-caller\n"), "{now}");
    assert!(!now.contains("the-daemon"), "{now}");

    // The next `up` brings it.
    up(&[("WHO", "the-caller"), ("LATER", "now")]);
    eventually(Duration::from_secs(60), "the new value applied", || {
        running(&host, "vars-app-1") && env(&host).contains("SECOND=xnowx\n")
    });
    let now = env(&host);
    assert!(now.contains("THIRD=ynowy\n"), "{now}");
    host.ok(&["down"]);
}

/// A stack network with `ipv6 true` and subnets of both families gives
/// its containers an address of each, and they reach each other over
/// IPv6.
#[test]
fn a_stack_network_with_ipv6_gives_containers_addresses_of_both_families() {
    let host = own_host();
    let (x, y) = crate::host::subnet();
    let v6 = format!("fd00:{x}:{y}::")
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .to_string();
    fs::write(
        host.work().join("stack.kdl"),
        format!(
            "name \"six\"\nnetwork \"dual\" subnet=\"10.{x}.{y}.0/24\" ipv6=#true subnet6=\"{v6}/64\"\n\
             service \"a\" {{\n    image \"bb\"\n    command \"sleep\" \"1000\"\n    network \"dual\"\n}}\n\
             service \"b\" {{\n    image \"bb\"\n    command \"sleep\" \"1000\"\n    network \"dual\"\n}}\n"
        ),
    )
    .unwrap();
    host.ok(&["up", "-d"]);
    let settings =
        |name: &str| host.inspect(name)["NetworkSettings"]["Networks"]["six_dual"].clone();
    let a = settings("six-a-1");
    let b = settings("six-b-1");
    for s in [&a, &b] {
        assert!(
            s["IPAddress"]
                .as_str()
                .is_some_and(|ip| ip.starts_with(&format!("10.{x}.{y}."))),
            "{s}"
        );
        assert!(
            s["GlobalIPv6Address"]
                .as_str()
                .is_some_and(|ip| ip.starts_with(&v6)),
            "{s}"
        );
    }
    let network = host.ok(&["network", "inspect", "six_dual"]);
    let network: serde_json::Value = serde_json::from_str(&network).unwrap();
    assert_eq!(network[0]["EnableIPv6"], true, "{network}");
    let b6 = b["GlobalIPv6Address"].as_str().unwrap();
    let ping = host.sh(
        "six-a-1",
        &format!("ping -6 -c1 -W5 {b6} >/dev/null && echo ok"),
    );
    assert_eq!(ping.trim(), "ok");
    host.ok(&["down"]);
}

/// `stack logs -f SERVICE` follows the service's containers made later
/// (recreated by an edit, scaled up) and a restarted one, as the
/// foreground `up` does.
#[test]
fn logs_follow_a_service_through_recreation_scaling_and_restarts() {
    crate::host::require_root();
    let host = Host::new();
    let file = host.work().join("stack.kdl");
    let network = default_network();
    let stack = |version: &str| {
        format!(
            "name \"lf\"\n{network}{}{}",
            talker("talk", &format!("talk says {version}"), ""),
            talker("other", "other says hi", "")
        )
    };
    fs::write(&file, stack("v1")).unwrap();
    host.ok(&["up", "-d"]);
    let mut logs = Foreground::start(&host, &["logs", "-f", "talk"]);
    logs.expect("talk-1 | talk says v1");

    // Recreated by an edit.
    let before = ids(&host)["lf-talk-1"].clone();
    fs::write(&file, stack("v2")).unwrap();
    logs.expect("talk-1 | talk says v2");
    assert_ne!(ids(&host)["lf-talk-1"], before);

    // Scaled up.
    host.ok(&["scale", "talk=2"]);
    logs.expect("talk-2 | talk says v2");

    // Restarted: the same containers print again.
    host.ok(&["restart", "talk"]);
    let deadline = Instant::now() + SHOW;
    let twice = |seen: &[String], line: &str| seen.iter().filter(|l| *l == line).count() >= 2;
    while !(twice(&logs.seen, "talk-1 | talk says v2")
        && twice(&logs.seen, "talk-2 | talk says v2"))
    {
        assert!(
            Instant::now() < deadline,
            "the restarts' lines are missing:\n{}",
            logs.output()
        );
        if let Ok(l) = logs.lines.recv_timeout(Duration::from_millis(100)) {
            logs.seen.push(l);
        }
    }
    // Only the service's own lines, each once per run.
    assert!(!logs.output().contains("other says"), "{}", logs.output());
    assert_eq!(
        logs.seen
            .iter()
            .filter(|l| *l == "talk-1 | talk says v1")
            .count(),
        1,
        "{}",
        logs.output()
    );
    drop(logs);
    host.ok(&["down"]);
}
