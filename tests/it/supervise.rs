//! The daemon's supervisor on real busybox containers, driven through the
//! library inside tokio runtimes the way the daemon drives it: restart
//! policies, `--rm`, user stops, and live restore after a "daemon restart"
//! (one tokio runtime shut down, a new supervisor on a new one). Each test
//! has its own state root; waits are on events or on the supervisor's own
//! progress, each with a deadline.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stack::daemon::events::{Event, EventFilter, Events, Subscription};
use stack::daemon::supervisor::{BackoffConfig, Supervisor};
use stack::reconcile::container::{RestartPolicy, RunRequest};
use stack::reconcile::containers::Containers;
use stack::runtime::{Runtime, Status};
use stack::spec::restart::RestartPolicyName;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// A state root with a busybox image `bb`, opened as the library's
/// [`Containers`] (with this crate's `stack` binary as the shim). Every
/// container left is removed when it is dropped.
struct Fixture {
    dir: tempfile::TempDir,
    containers: Arc<Containers>,
}

impl Fixture {
    fn new() -> Fixture {
        crate::host::require_root();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        crate::host::busybox_image(&root, &dir.path().join("image"));
        let run_dir = root.join("run");
        let mut containers = Containers::open(&root, &run_dir).unwrap();
        containers.runtime =
            Runtime::open(&root, &run_dir, PathBuf::from(env!("CARGO_BIN_EXE_stack"))).unwrap();
        Fixture {
            dir,
            containers: Arc::new(containers),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn runtime(&self) -> &Runtime {
        &self.containers.runtime
    }

    fn create(&self, name: &str, restart: RestartPolicyName, retries: u32, cmd: &[&str]) -> String {
        self.create_with(name, restart, retries, false, cmd)
    }

    fn create_with(
        &self,
        name: &str,
        restart: RestartPolicyName,
        retries: u32,
        auto_remove: bool,
        cmd: &[&str],
    ) -> String {
        let req = RunRequest {
            image: "bb".into(),
            name: Some(name.into()),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            auto_remove,
            restart: RestartPolicy {
                name: restart,
                maximum_retry_count: retries,
            },
            ..RunRequest::default()
        };
        self.containers.create(&req).unwrap()
    }

    fn status(&self, id: &str) -> Status {
        self.runtime().state(id).unwrap().status
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(list) = self.runtime().list() {
            for (record, _) in list {
                // A test that failed after killing a shim leaves its
                // container running unsupervised: end that first.
                let _ = self.runtime().finish_orphaned(&record.id);
                let _ = self.runtime().remove(&record.id, true);
            }
        }
        // The import autostarted a daemon on this root (with its default
        // bridge and nft table): stopped, and whatever it left swept.
        crate::stop_daemon(&self.root());
        crate::host::sweep(self.dir.path(), &self.root());
    }
}

/// One daemon's life: a tokio runtime with an event bus and a supervisor.
/// Dropping it shuts the runtime down, which ends every supervisor task
/// (the containers keep running, as with a daemon that exits).
struct Daemon {
    rt: Option<tokio::runtime::Runtime>,
    events: Events,
    sup: Arc<Supervisor>,
}

impl Daemon {
    fn start(fx: &Fixture) -> Daemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let events = Events::open(&fx.root()).unwrap();
        let backoff = BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            reset_after: Duration::from_secs(10),
        };
        let sup = {
            let _entered = rt.enter();
            Supervisor::new(fx.containers.clone(), events.clone(), backoff)
        };
        Daemon {
            rt: Some(rt),
            events,
            sup,
        }
    }

    fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }

    fn subscribe(&self, id: &str) -> Subscription {
        let filter = EventFilter::parse(&[format!("container={id}")]).unwrap();
        self.events.subscribe(filter, None, None).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(DEADLINE);
        }
    }
}

async fn next_event(sub: &mut Subscription) -> Event {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("an event in time")
        .expect("the subscription stays open")
}

/// The next `n` events as `action` or `action:exitCode` for `die`.
async fn next_actions(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = next_event(sub).await;
        out.push(match e.actor.attributes.get("exitCode") {
            Some(code) if e.action == "die" => format!("die:{code}"),
            _ => e.action.clone(),
        });
    }
    out
}

async fn settled(sup: &Supervisor, id: &str, run: u32) {
    tokio::time::timeout(DEADLINE, sup.wait_settled(id, run))
        .await
        .expect("the supervisor settles in time");
}

/// Polls `condition` until it holds or the deadline passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_running_process(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn always_restarts_after_a_clean_exit_until_the_user_stops_it() {
    let fx = Fixture::new();
    let id = fx.create("always", RestartPolicyName::Always, 0, &["true"]);
    let d = Daemon::start(&fx);
    d.run(async {
        let mut sub = d.subscribe(&id);
        d.sup.start(&id, None).await.unwrap();
        assert_eq!(next_actions(&mut sub, 1).await, ["start"]);
        for _ in 0..3 {
            assert_eq!(next_actions(&mut sub, 2).await, ["die:0", "start"]);
        }
        assert!(d.sup.restart_count(&id) >= 3);

        // Stopped while running or while waiting to restart: either way it
        // stays down.
        d.sup
            .stop(&id, libc::SIGTERM, Duration::from_secs(10))
            .await
            .unwrap();
        let run = fx.runtime().state(&id).unwrap().start_count;
        settled(&d.sup, &id, run).await;
        let st = fx.runtime().state(&id).unwrap();
        assert_eq!(st.status, Status::Exited);
        assert_eq!(st.start_count, run, "nothing started it again");
        let status = d.sup.status(&id);
        assert!(status.stopped_by_user && !status.restarting);
        assert_eq!(d.sup.next_restart(&id), None);

        // A start by the user puts the policy back in force.
        let mut sub = d.subscribe(&id);
        d.sup.start(&id, None).await.unwrap();
        assert_eq!(next_actions(&mut sub, 3).await, ["start", "die:0", "start"]);
        d.sup
            .stop(&id, libc::SIGKILL, Duration::ZERO)
            .await
            .unwrap();
    });
}

#[test]
fn on_failure_2_restarts_exactly_twice_then_stays_exited() {
    let fx = Fixture::new();
    let id = fx.create(
        "flaky",
        RestartPolicyName::OnFailure,
        2,
        &["sh", "-c", "exit 3"],
    );
    let d = Daemon::start(&fx);
    d.run(async {
        let mut sub = d.subscribe(&id);
        d.sup.start(&id, None).await.unwrap();
        settled(&d.sup, &id, 3).await;
        let st = fx.runtime().state(&id).unwrap();
        assert_eq!(
            (st.status, st.exit_code, st.start_count),
            (Status::Exited, 3, 3)
        );
        assert_eq!(d.sup.restart_count(&id), 2);
        assert_eq!(d.sup.next_restart(&id), None);
        let inspect = fx.containers.inspect(&id).unwrap();
        assert_eq!(
            inspect["HostConfig"]["RestartPolicy"],
            serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2})
        );
        assert_eq!(
            next_actions(&mut sub, 6).await,
            ["start", "die:3", "start", "die:3", "start", "die:3"]
        );
    });
    // The restart count is kept for inspect across daemons.
    drop(d);
    let d = Daemon::start(&fx);
    assert_eq!(d.sup.restart_count(&id), 2);
    let report = d.run(d.sup.restore(false)).unwrap();
    assert!(report.started.is_empty(), "{report:?}");
    assert_eq!(fx.status(&id), Status::Exited);
}

#[test]
fn a_stopped_always_container_stays_down() {
    let fx = Fixture::new();
    // A pid 1 ignores signals it has no handler for: this one ends on TERM.
    let id = fx.create(
        "steady",
        RestartPolicyName::Always,
        0,
        &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
    );
    let d = Daemon::start(&fx);
    d.run(async {
        let mut sub = d.subscribe(&id);
        d.sup.start(&id, None).await.unwrap();
        d.sup
            .stop(&id, libc::SIGTERM, Duration::from_secs(10))
            .await
            .unwrap();
        settled(&d.sup, &id, 1).await;
        let st = fx.runtime().state(&id).unwrap();
        assert_eq!((st.status, st.start_count), (Status::Exited, 1));
        assert_eq!(
            next_actions(&mut sub, 4).await,
            ["start", "kill", "die:0", "stop"]
        );
        assert_eq!(d.sup.restart_count(&id), 0);
    });
    // Nor does a daemon restart start it (only the first one after a boot
    // does, as Docker starts `always` containers when it starts).
    drop(d);
    let d = Daemon::start(&fx);
    let report = d.run(d.sup.restore(false)).unwrap();
    assert!(
        report.started.is_empty() && report.died.is_empty(),
        "{report:?}"
    );
    assert_eq!(fx.status(&id), Status::Exited);
}

#[test]
fn an_rm_container_is_removed_when_it_exits() {
    let fx = Fixture::new();
    let id = fx.create_with(
        "gone",
        RestartPolicyName::No,
        0,
        true,
        &["sh", "-c", "exit 7"],
    );
    let d = Daemon::start(&fx);
    d.run(async {
        let mut sub = d.subscribe(&id);
        d.sup.start(&id, None).await.unwrap();
        assert_eq!(
            next_actions(&mut sub, 3).await,
            ["start", "die:7", "destroy"]
        );
    });
    assert!(fx.runtime().resolve(&id).is_err());
    assert!(fx.runtime().resolve("gone").is_err());
    // Docker refuses --rm with a restart policy.
    let req = RunRequest {
        image: "bb".into(),
        auto_remove: true,
        restart: RestartPolicy {
            name: RestartPolicyName::Always,
            maximum_retry_count: 0,
        },
        ..RunRequest::default()
    };
    let err = fx.containers.create(&req).unwrap_err();
    assert!(err.to_string().contains("--restart and --rm"), "{err}");
}

#[test]
fn restore_adopts_a_running_container_and_restarts_it_when_it_exits() {
    let fx = Fixture::new();
    let id = fx.create("adopted", RestartPolicyName::Always, 0, &["sleep", "1000"]);
    let first = Daemon::start(&fx);
    first.run(first.sup.start(&id, None)).unwrap();
    drop(first);
    let pid = fx.runtime().state(&id).unwrap().pid;
    assert_eq!(
        fx.status(&id),
        Status::Running,
        "the container outlives its daemon"
    );

    let d = Daemon::start(&fx);
    let report = d.run(d.sup.restore(false)).unwrap();
    assert_eq!(report.adopted, std::slice::from_ref(&id));
    assert!(report.died.is_empty() && report.started.is_empty());
    d.run(async {
        let mut sub = d.subscribe(&id);
        // The container's program dies on its own (as if the OOM killer got
        // it): not a stop by the user.
        fx.runtime().kill(&id, libc::SIGKILL).unwrap();
        assert_eq!(next_actions(&mut sub, 2).await, ["die:137", "start"]);
        settled(&d.sup, &id, 1).await;
    });
    let st = fx.runtime().state(&id).unwrap();
    assert_eq!((st.status, st.start_count), (Status::Running, 2));
    assert_ne!(st.pid, pid);
    assert_eq!(d.sup.restart_count(&id), 1);
}

#[test]
fn restore_reports_a_run_whose_shim_died_and_applies_its_policy() {
    let fx = Fixture::new();
    let id = fx.create("orphan", RestartPolicyName::Always, 0, &["sleep", "1000"]);
    let first = Daemon::start(&fx);
    first.run(first.sup.start(&id, None)).unwrap();
    drop(first);
    let st = fx.runtime().state(&id).unwrap();
    let (pid, shim) = (st.pid, st.shim_pid);

    // Killing the shim does not kill the container: it runs on unsupervised.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the shim's end", || fx.status(&id) == Status::Exited);
    assert!(is_running_process(pid), "the container survives its shim");

    let d = Daemon::start(&fx);
    let mut sub = d.subscribe(&id);
    let report = d.run(d.sup.restore(false)).unwrap();
    assert_eq!(report.died, std::slice::from_ref(&id), "{report:?}");
    assert_eq!(report.started, std::slice::from_ref(&id), "{report:?}");
    d.run(async {
        assert_eq!(next_actions(&mut sub, 2).await, ["die:255", "start"]);
    });
    // What was left of the old run is gone; a new run is supervised.
    eventually("the old run's end", || !is_running_process(pid));
    let st = fx.runtime().state(&id).unwrap();
    assert_eq!((st.status, st.start_count), (Status::Running, 2));
    assert!(st.error.is_empty(), "{}", st.error);
    assert_eq!(d.sup.restart_count(&id), 1);
}

#[test]
fn restore_starts_exited_always_containers_but_not_stopped_unless_stopped_ones() {
    let fx = Fixture::new();
    let always = fx.create("always", RestartPolicyName::Always, 0, &["sleep", "1000"]);
    let unless = fx.create(
        "unless",
        RestartPolicyName::UnlessStopped,
        0,
        &["sleep", "1000"],
    );
    let stopped_always = fx.create(
        "stopped-always",
        RestartPolicyName::Always,
        0,
        &["sleep", "1000"],
    );
    let first = Daemon::start(&fx);
    first.run(async {
        for id in [&always, &unless, &stopped_always] {
            first.sup.start(id, None).await.unwrap();
        }
        for id in [&unless, &stopped_always] {
            first
                .sup
                .stop(id, libc::SIGKILL, Duration::ZERO)
                .await
                .unwrap();
        }
    });
    drop(first);
    // While no daemon runs, the `always` container dies.
    fx.runtime().kill(&always, libc::SIGKILL).unwrap();
    let st = fx.runtime().wait(&always, Some(DEADLINE)).unwrap();
    assert_eq!(st.status, Status::Exited);

    let second = Daemon::start(&fx);
    let report = second.run(second.sup.restore(false)).unwrap();
    assert_eq!(report.started, std::slice::from_ref(&always), "{report:?}");
    assert_eq!(
        report.died,
        std::slice::from_ref(&always),
        "its missed exit is reported"
    );
    assert_eq!(fx.status(&always), Status::Running);
    assert_eq!(fx.status(&unless), Status::Exited);
    assert_eq!(fx.status(&stopped_always), Status::Exited);
    drop(second);

    // The first daemon start after a boot starts `always` containers even
    // if the user stopped them; a stopped `unless-stopped` one stays down.
    let third = Daemon::start(&fx);
    let report = third.run(third.sup.restore(true)).unwrap();
    let started: BTreeSet<&String> = report.started.iter().collect();
    assert_eq!(started, BTreeSet::from([&stopped_always]), "{report:?}");
    assert_eq!(report.adopted, std::slice::from_ref(&always));
    assert_eq!(fx.status(&stopped_always), Status::Running);
    assert_eq!(fx.status(&unless), Status::Exited);
    assert!(!third.sup.status(&stopped_always).stopped_by_user);
}
