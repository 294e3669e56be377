//! Stacks kept converged by the daemon: `up -d`, service names, edits
//! that touch only what changed, invalid saves that change nothing, crash
//! restarts and `down`; the foreground `up` (prefixed logs, Ctrl-C) and
//! the up flags.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
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

static NEXT: AtomicU8 = AtomicU8::new(0);

/// `network "default"` on a fresh 10.215.y.0/24 for this test: y from the
/// pid and a counter (never 172.17/16 or 192.0.2/24, which the host uses).
fn default_network() -> String {
    let y = (std::process::id() % 50) * 5 + u32::from(NEXT.fetch_add(1, Ordering::SeqCst) % 5);
    format!("network \"default\" subnet=\"10.215.{y}.0/24\"\n")
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
