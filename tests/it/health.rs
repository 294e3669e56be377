//! Health checks on real containers: `run --health-*` stores the check, a
//! `HealthMonitor` driven in a tokio runtime probes the busybox container
//! through `stack __exec`, and `inspect` and `ps` show what it wrote.

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::host::Host;

/// The daemon's health reports for one container, read from `stack
/// events` as they happen.
struct Monitored {
    changes: mpsc::Receiver<(String, String)>,
    seen: Mutex<Vec<String>>,
    events: std::process::Child,
}

impl Drop for Monitored {
    fn drop(&mut self) {
        let _ = self.events.kill();
        let _ = self.events.wait();
    }
}

impl Monitored {
    fn start(host: &Host, id: &str) -> Monitored {
        let mut events = Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--root")
            .arg(host.root())
            .args(["events", "--since", "1h", "--format", "json", "--filter"])
            .arg(format!("container={id}"))
            .env_remove("STACK_ROOT")
            .env_remove("STACK_RUN_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = events.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let event: serde_json::Value = serde_json::from_str(&line).unwrap();
                let action = event["Action"].as_str().unwrap_or_default();
                if let Some(status) = action.strip_prefix("health_status: ") {
                    let id = event["Actor"]["ID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if tx.send((id, status.to_string())).is_err() {
                        return;
                    }
                }
            }
        });
        Monitored {
            changes: rx,
            seen: Mutex::new(Vec::new()),
            events,
        }
    }

    /// Waits for the monitor to report `status`; every status reported
    /// before it is kept in `seen`.
    fn wait_for(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (got_id, got) = self.changes.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {status:?} within 60s; reported so far: {:?}",
                    self.seen.lock().unwrap()
                )
            });
            assert_eq!(got_id, id);
            self.seen.lock().unwrap().push(got.clone());
            if got == status {
                return;
            }
        }
    }
}

fn run(host: &Host, flags: &[&str], command: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(flags);
    args.push("bb");
    args.extend_from_slice(command);
    host.ok(&args).trim().to_string()
}

#[test]
fn a_passing_check_makes_the_container_healthy_and_a_failing_one_unhealthy() {
    let host = Host::new();
    let id = run(
        &host,
        &[
            "--name",
            "web",
            "--health-cmd",
            "test -e /tmp/ready && echo ready",
            "--health-interval",
            "100ms",
            "--health-retries",
            "2",
        ],
        &["sh", "-c", "touch /tmp/ready; exec sleep 1000"],
    );
    let config = host.inspect("web")["Config"]["Healthcheck"].clone();
    assert_eq!(
        config["Test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/ready && echo ready"])
    );
    assert_eq!(config["Interval"], 100_000_000);
    assert_eq!(config["Retries"], 2);
    assert_eq!(config["Timeout"], 30_000_000_000u64);

    let monitor = Monitored::start(&host, &id);
    monitor.wait_for(&id, "healthy");
    let bundle = host.root().join("containers").join(&id);
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("health.json")).unwrap()).unwrap();
    assert_eq!(written["Status"], "healthy");
    let state = host.inspect("web")["State"].clone();
    assert_eq!(state["Health"]["Status"], "healthy");
    let log = state["Health"]["Log"].as_array().unwrap();
    assert!(!log.is_empty() && log.len() <= 5, "{log:?}");
    let last = log.last().unwrap();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "ready\n");
    assert!(last["Start"].as_str().unwrap() <= last["End"].as_str().unwrap());
    let ps = host.ok(&["ps", "--filter", "name=web"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    let ps = host.ok(&["ps", "-q", "--filter", "health=healthy"]);
    assert_eq!(ps.trim(), &id[..12]);

    // The file the check looks for goes away: two failures in a row later
    // the container is unhealthy.
    host.ok(&["exec", "web", "rm", "/tmp/ready"]);
    monitor.wait_for(&id, "unhealthy");
    let health = host.inspect("web")["State"]["Health"].clone();
    assert_eq!(health["Status"], "unhealthy");
    assert!(health["FailingStreak"].as_u64().unwrap() >= 2, "{health}");
    let last = health["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1);
    let ps = host.ok(&["ps"]);
    assert!(ps.contains("(unhealthy)"), "{ps}");

    // And healthy again once it is back.
    host.ok(&["exec", "web", "touch", "/tmp/ready"]);
    monitor.wait_for(&id, "healthy");
    assert_eq!(
        *monitor.seen.lock().unwrap(),
        ["healthy", "unhealthy", "healthy"]
    );
}

#[test]
fn a_check_that_always_fails_is_unhealthy_after_its_retries() {
    let host = Host::new();
    let id = run(
        &host,
        &[
            "--health-cmd",
            "echo no; exit 1",
            "--health-interval",
            "50ms",
            "--health-retries",
            "3",
        ],
        &["sleep", "1000"],
    );
    let monitor = Monitored::start(&host, &id);
    monitor.wait_for(&id, "unhealthy");
    // Never healthy on the way.
    assert_eq!(*monitor.seen.lock().unwrap(), ["unhealthy"]);
    let health = host.inspect(&id)["State"]["Health"].clone();
    assert_eq!(health["Status"], "unhealthy");
    assert!(health["FailingStreak"].as_u64().unwrap() >= 3, "{health}");
    for entry in health["Log"].as_array().unwrap() {
        assert_eq!(entry["ExitCode"], 1);
        assert_eq!(entry["Output"], "no\n");
    }
}

#[test]
fn a_probe_past_its_timeout_fails_and_is_killed_in_the_container() {
    let host = Host::new();
    let id = run(
        &host,
        &[
            "--health-cmd",
            "sleep 777",
            "--health-interval",
            "50ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
        ],
        &["sleep", "1000"],
    );
    let monitor = Monitored::start(&host, &id);
    monitor.wait_for(&id, "unhealthy");
    let health = host.inspect(&id)["State"]["Health"].clone();
    let last = health["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1);
    assert_eq!(last["Output"], "Health check exceeded timeout (300ms)");
    // Probes past their timeout are killed: they do not pile up in the
    // container (at most the one in flight runs).
    drop(monitor);
    std::thread::sleep(Duration::from_millis(1000));
    let ps = host.ok(&["exec", &id, "ps", "-o", "pid,args"]);
    assert!(
        ps.matches("sleep 777").count() <= 1,
        "probes outlived their timeout:\n{ps}"
    );
}

#[test]
fn containers_without_a_check_or_with_it_disabled_have_no_health() {
    let host = Host::new();
    host.ok(&["create", "--name", "plain", "bb", "true"]);
    let plain = host.inspect("plain");
    assert!(plain["State"].get("Health").is_none(), "{plain}");
    assert!(plain["Config"].get("Healthcheck").is_none(), "{plain}");
    host.ok(&["create", "--name", "off", "--no-healthcheck", "bb", "true"]);
    assert!(host.inspect("off")["Config"].get("Healthcheck").is_none());

    let out = host.stack(&["create", "--no-healthcheck", "--health-cmd", "true", "bb"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = host.stack(&["create", "--health-interval", "10us", "bb", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Interval in Healthcheck cannot be less than 1ms"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
