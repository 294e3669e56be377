//! Compose's service verbs on our container verbs: in a project directory
//! a service name stands for its containers (`logs`, `exec`, `restart`,
//! `stop`, `start`, `top`, `inspect`), a real container name wins, `ps
//! --stack` shows services with their restarts and backoff, and `stack
//! scale` changes replica counts without the file (kept across a daemon
//! restart, dropped when the file's own count changes).

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::stacks::{containers, eventually};

const LIMIT: Duration = Duration::from_secs(30);

/// Subnets of this test's own (the host's default address pools may all
/// be taken by other runs): its daemon's default bridge, and its stack's
/// network.
fn subnets() -> (String, String) {
    (
        format!("{}.1/24", crate::host::prefix()),
        format!("{}.0/24", crate::host::prefix()),
    )
}

/// A host whose daemon has a default bridge of its own, and the text of
/// `stack` with the stack's default network on a subnet of its own.
fn host_for(stack: &str) -> (Host, String) {
    let (bip, subnet) = subnets();
    let host = Host::with_daemon(&["--bip", &bip]);
    let stack = format!("{stack}network \"default\" subnet=\"{subnet}\"\n");
    (host, stack)
}

/// Takes stack `.1` of the state root `.0` down when dropped, before its
/// host is: a failed test must not leave the stack's loop recreating its
/// network while the host removes what is left (its bridge would outlive
/// the test).
struct Down(std::path::PathBuf, &'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let mut down = std::process::Command::new(env!("CARGO_BIN_EXE_stack"));
        down.arg("--root")
            .arg(&self.0)
            .args(["--no-autostart", "down", "--stack", self.1])
            .env_remove("STACK_ROOT")
            .stdin(Stdio::null());
        let _ = crate::output_within(&mut down, Duration::from_secs(120));
    }
}

const SHOP: &str = r#"
name "shop"
service "web" {
    image "bb"
    command "sh" "-c" "echo web says hi; exec sleep 1000"
    replicas 2
}
service "cache" {
    image "bb"
    command "sh" "-c" "echo the stack cache; exec sleep 1000"
}
service "flaky" {
    image "bb"
    command "sh" "-c" "exit 3"
    restart "always" { backoff min="1s" max="1m"; }
}
"#;

fn field(host: &Host, container: &str, template: &str) -> String {
    host.ok(&["inspect", "-f", template, container])
        .trim()
        .to_string()
}

/// Lines of `stack ARGS` (a `logs -f`) until `done` holds for what came
/// so far, running `during` whenever nothing comes (the command is killed
/// then; the test fails after `LIMIT`).
fn follow_until(host: &Host, args: &[&str], mut during: impl FnMut(), done: impl Fn(&str) -> bool) {
    let mut child = host
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut seen = String::new();
    let result = loop {
        if done(&seen) {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(seen.clone());
        }
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            // Quiet: write again (the stream may have opened after the
            // last write).
            Err(mpsc::RecvTimeoutError::Timeout) => during(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err(seen.clone()),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    if let Err(seen) = result {
        panic!("stack {args:?} did not show what was expected; it showed:\n{seen}");
    }
}

#[test]
fn service_names_stand_for_their_containers_in_a_project_directory() {
    crate::host::require_root();
    let (host, shop) = host_for(SHOP);
    fs::write(host.work().join("stack.kdl"), &shop).unwrap();
    // A plain container named like a service: its name wins.
    let plain = host.ok(&[
        "run",
        "-d",
        "--name",
        "cache",
        "bb",
        "sh",
        "-c",
        "echo the plain cache; exec sleep 1000",
    ]);
    let plain = plain.trim().to_string();
    let _down = Down(host.root(), "shop");
    host.ok(&["up", "-d"]);
    let ids = containers(&host);
    for name in ["shop-web-1", "shop-web-2", "shop-cache-1"] {
        assert!(ids.contains_key(name), "{name} missing: {ids:?}");
    }

    // logs: every replica, prefixed; one replica with --index, bare.
    eventually(LIMIT, "both replicas logged", || {
        let out = host.ok(&["logs", "web"]);
        out.contains("web-1 | web says hi\n") && out.contains("web-2 | web says hi\n")
    });
    assert_eq!(host.ok(&["logs", "--index", "2", "web"]), "web says hi\n");
    // Followed, new lines of either replica come as they are written.
    follow_until(
        &host,
        &["logs", "-f", "--tail", "0", "web"],
        || {
            host.sh("shop-web-2", "echo later >> /proc/1/fd/1");
            host.sh("shop-web-1", "echo sooner >> /proc/1/fd/1");
        },
        |seen| seen.contains("web-2 | later\n") && seen.contains("web-1 | sooner\n"),
    );

    // exec: the first replica, or the one --index names.
    let hostname = |name: &str| field(&host, name, "{{.Config.Hostname}}");
    assert_eq!(
        host.ok(&["exec", "web", "hostname"]).trim(),
        hostname("shop-web-1")
    );
    assert_eq!(
        host.ok(&["exec", "--index", "2", "web", "hostname"]).trim(),
        hostname("shop-web-2")
    );

    // A real container named like a service wins, for every verb.
    assert_eq!(host.ok(&["logs", "cache"]), "the plain cache\n");
    assert_eq!(
        host.ok(&["exec", "cache", "hostname"]).trim(),
        hostname(&plain)
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&host.ok(&["inspect", "cache"])).unwrap();
    assert_eq!(inspected.as_array().unwrap().len(), 1);
    assert_eq!(inspected[0]["Id"], plain.as_str());

    // inspect and top: each replica.
    let inspected: serde_json::Value = serde_json::from_str(&host.ok(&["inspect", "web"])).unwrap();
    let names: Vec<&str> = inspected
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Name"].as_str().unwrap().trim_start_matches('/'))
        .collect();
    assert_eq!(names, ["shop-web-1", "shop-web-2"]);
    let top = host.ok(&["top", "web"]);
    assert!(
        top.contains("shop-web-1\n") && top.contains("shop-web-2\n") && top.contains("sleep"),
        "{top}"
    );

    // restart: both replicas, in order.
    let started = |name: &str| field(&host, name, "{{.State.StartedAt}}");
    let before = (started("shop-web-1"), started("shop-web-2"));
    assert_eq!(host.ok(&["restart", "web"]), "shop-web-1\nshop-web-2\n");
    assert_ne!(started("shop-web-1"), before.0);
    assert_ne!(started("shop-web-2"), before.1);

    // stop keeps them stopped (the stack loop leaves a container stopped
    // by the user alone); start starts them again.
    assert_eq!(
        host.ok(&["stop", "-t", "1", "web"]),
        "shop-web-1\nshop-web-2\n"
    );
    host.http("POST", "/stacks/shop/apply", "application/json", b"");
    for name in ["shop-web-1", "shop-web-2"] {
        assert_eq!(field(&host, name, "{{.State.Status}}"), "exited");
    }
    host.ok(&["start", "web"]);
    for name in ["shop-web-1", "shop-web-2"] {
        assert_eq!(field(&host, name, "{{.State.Status}}"), "running");
    }

    // A name that is neither says so as Docker does.
    let err = host.fails(&["restart", "nothing"]);
    assert!(err.contains("No such container: nothing"), "{err}");

    // ps keeps Docker's meaning here (every container, the plain one too);
    // ps --stack lists the stack's by service, with restarts and backoff.
    let all = host.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(all.lines().any(|l| l == "cache"), "{all}");
    let table = host.ok(&["ps", "--stack"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SERVICE", "STATUS", "PORTS"]);
    assert!(!table.contains("\ncache "), "{table}");
    let rows = |host: &Host| -> Vec<Vec<String>> {
        host.ok(&[
            "ps",
            "--stack",
            "shop",
            "--format",
            "{{.Name}}\t{{.Service}}\t{{.Restarts}}\t{{.Status}}",
        ])
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
    };
    let listed: Vec<(String, String)> = rows(&host)
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("shop-cache-1".to_string(), "cache".to_string()),
            ("shop-flaky-1".to_string(), "flaky".to_string()),
            ("shop-web-1".to_string(), "web".to_string()),
            ("shop-web-2".to_string(), "web".to_string()),
        ]
    );
    // Backoffs of 1 s, 2 s, 4 s…: after two restarts it waits long enough
    // to be seen waiting.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = rows(&host);
        let flaky = now.iter().find(|r| r[0] == "shop-flaky-1").unwrap();
        if flaky[2].parse::<u32>().unwrap() >= 2
            && flaky[3].starts_with("Exited (3)")
            && flaky[3].contains(" restarts, next try in ")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flaky is not seen backing off after two restarts: {flaky:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    host.ok(&["down"]);
}

const SCALED: &str = r#"
name "scaled"
service "web" {
    image "bb"
    command "sleep" "1000"
}
"#;

#[test]
fn scale_changes_replicas_through_the_plan_and_survives_a_daemon_restart() {
    crate::host::require_root();
    let (mut host, scaled) = host_for(SCALED);
    let file = host.work().join("stack.kdl");
    fs::write(&file, &scaled).unwrap();
    let _down = Down(host.root(), "scaled");
    host.ok(&["up", "-d"]);
    let first = containers(&host)["scaled-web-1"].0.clone();

    // Clear errors, nothing changed.
    for (arg, wanted) in [
        ("web=abc", "not a whole number"),
        ("=3", "the service name is missing"),
        ("web=-1", "not a whole number"),
        ("api=2", "stack scaled has no service api"),
    ] {
        let err = host.fails(&["scale", arg]);
        assert!(err.contains(wanted), "{arg}: {err}");
    }

    // 1 → 3: two replicas more, the first untouched.
    host.ok(&["scale", "web=3"]);
    let now = containers(&host);
    let names: Vec<&String> = now.keys().collect();
    assert_eq!(names, ["scaled-web-1", "scaled-web-2", "scaled-web-3"]);
    assert_eq!(now["scaled-web-1"].0, first);
    assert!(now.values().all(|(_, s)| s.starts_with("Up")), "{now:?}");
    let status = host.ok(&["status", "scaled"]);
    assert!(status.contains("converged:   yes"), "{status}");

    // 3 → 1: replicas 2 and 3 go, 1 keeps its id.
    host.ok(&["scale", "web=1"]);
    let now = containers(&host);
    assert_eq!(now.keys().collect::<Vec<_>>(), ["scaled-web-1"]);
    assert_eq!(now["scaled-web-1"].0, first);

    // Kept in the registration and resumed by a new daemon.
    host.ok(&["scale", "web=2"]);
    let registration = host.root().join("stacks/scaled.json");
    let kept: serde_json::Value =
        serde_json::from_slice(&fs::read(&registration).unwrap()).unwrap();
    assert_eq!(kept["scale"]["web"]["replicas"], 2, "{kept}");
    let before = containers(&host);
    crate::stop_daemon(&host.root());
    // A new daemon resumes the stack after it answers; its first apply is
    // done once an apply asked for answers.
    host.start_daemon();
    eventually(LIMIT, "the stack resumed", || {
        host.http("GET", "/stacks/scaled", "application/json", b"")
            .status
            == 200
    });
    let answer = host.http("POST", "/stacks/scaled/apply", "application/json", b"");
    assert_eq!(answer.status, 200, "{}", answer.text());
    let after = containers(&host);
    let ids = |m: &std::collections::BTreeMap<String, (String, String)>| {
        m.iter()
            .map(|(k, (id, _))| (k.clone(), id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&after),
        ids(&before),
        "the restart changed the replicas"
    );

    // The file's own count changing is the newer word: the override goes.
    fs::write(
        &file,
        scaled.replace("\"1000\"\n", "\"1000\"\n    replicas 3\n"),
    )
    .unwrap();
    eventually(LIMIT, "the file's 3 replicas", || {
        containers(&host).len() == 3
    });
    eventually(LIMIT, "the override dropped", || {
        let kept: serde_json::Value =
            serde_json::from_slice(&fs::read(&registration).unwrap()).unwrap();
        kept.get("scale").is_none()
    });
    assert_eq!(containers(&host)["scaled-web-1"].0, first);
    host.ok(&["down"]);
}
