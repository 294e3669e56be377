//! Stacks kept converged by the daemon: `up -d`, service names, edits
//! that touch only what changed, invalid saves that change nothing, crash
//! restarts and `down`.

use std::collections::BTreeMap;
use std::fs;
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
