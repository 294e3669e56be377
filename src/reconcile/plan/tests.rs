//! Table tests of [`plan`] and a property test against an in-memory host.

use super::*;
use proptest::prelude::*;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn service(image: &str, config: &[(&str, &str)]) -> DesiredService {
    DesiredService {
        replicas: 1,
        image: ImageSource::Pull(image.to_string()),
        config: fields(config),
        ..DesiredService::default()
    }
}

fn stack(services: Vec<(&str, DesiredService)>) -> Desired {
    Desired {
        stack: "shop".into(),
        services: services
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect(),
        ..Desired::default()
    }
}

fn images(refs: &[&str]) -> BTreeMap<String, String> {
    refs.iter()
        .map(|r| (r.to_string(), format!("sha256:{:0>64}", r.len())))
        .collect()
}

/// A running container that matches `service` of `desired` exactly.
fn matching(desired: &Desired, observed: &Observed, name: &str, replica: u32) -> ObservedContainer {
    let s = &desired.services[name];
    let mut config = s.config.clone();
    config.insert(
        IMAGE_FIELD.into(),
        observed.images[s.image.reference()].clone(),
    );
    ObservedContainer {
        id: format!("{name}{replica}"),
        name: container_name(&desired.stack, name, replica),
        service: name.into(),
        replica,
        config,
        live: s.live.clone(),
        state: State::Running { started: at(0) },
        health: Health::None,
        failures: 0,
        starts: vec![at(0)],
        given_up: false,
        held: false,
    }
}

fn converged(desired: &Desired) -> Observed {
    let mut observed = Observed {
        images: desired
            .services
            .values()
            .map(|s| {
                let r = s.image.reference();
                (r.to_string(), format!("sha256:{:0>64}", r.len()))
            })
            .collect(),
        networks: desired.networks.clone(),
        volumes: desired.volumes.clone(),
        containers: vec![],
    };
    for (name, s) in &desired.services {
        for replica in 1..=s.replicas {
            let c = matching(desired, &observed, name, replica);
            observed.containers.push(c);
        }
    }
    observed
}

fn actions(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match &s.action {
            Action::EnsureImage { service, .. } => format!("image {service}"),
            Action::CreateNetwork { network } => format!("net+ {network}"),
            Action::RemoveNetwork { network } => format!("net- {network}"),
            Action::CreateVolume { volume } => format!("vol+ {volume}"),
            Action::RemoveVolume { volume } => format!("vol- {volume}"),
            Action::Create { name, .. } => format!("create {name}"),
            Action::Start { target, .. } => format!("start {}", show(plan, target)),
            Action::Stop { id } => format!("stop {id}"),
            Action::Remove { id } => format!("remove {id}"),
            Action::Rename { target, name } => format!("rename {} {name}", show(plan, target)),
            Action::Update { id, .. } => format!("update {id}"),
            Action::Await { service, condition } => format!("await {service} {condition:?}"),
            Action::AwaitReady { target, healthy } => {
                format!("ready {} {healthy}", show(plan, target))
            }
            Action::GiveUp { id } => format!("give-up {id}"),
        })
        .collect()
}

fn show(plan: &Plan, target: &Target) -> String {
    match target {
        Target::Existing(id) => id.clone(),
        Target::Created(i) => match &plan.steps[*i].action {
            Action::Create { name, .. } => name.clone(),
            _ => format!("#{i}"),
        },
    }
}

fn step_of(plan: &Plan, text: &str) -> usize {
    let all = actions(plan);
    all.iter()
        .position(|a| a == text)
        .unwrap_or_else(|| panic!("no step {text:?} in {all:#?}"))
}

/// Whether step `later` waits, directly or not, for step `earlier`.
fn waits_for(plan: &Plan, later: usize, earlier: usize) -> bool {
    let mut stack = vec![later];
    let mut seen = BTreeSet::new();
    while let Some(i) = stack.pop() {
        for &a in &plan.steps[i].after {
            if a == earlier {
                return true;
            }
            if seen.insert(a) {
                stack.push(a);
            }
        }
    }
    false
}

#[test]
fn a_new_stack_creates_networks_and_volumes_before_containers_and_orders_starts() {
    let mut web = service("web:1", &[("command", "httpd")]);
    web.networks = vec!["front".into()];
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Healthy,
        restart_dependents: false,
    }];
    let mut db = service("pg:16", &[]);
    db.volumes = vec!["data".into()];
    db.health = Some(OnUnhealthy::None);
    let mut desired = stack(vec![("web", web), ("db", db)]);
    desired.networks.insert("front".into(), "h1".into());
    desired.volumes.insert("data".into());
    let observed = Observed {
        images: images(&["web:1", "pg:16"]),
        ..Observed::default()
    };
    let plan = plan(&desired, &observed, at(10));
    let net = step_of(&plan, "net+ front");
    let vol = step_of(&plan, "vol+ data");
    let start_db = step_of(&plan, "start shop-db-1");
    let create_db = step_of(&plan, "create shop-db-1");
    let wait = step_of(&plan, "await db Healthy");
    let create_web = step_of(&plan, "create shop-web-1");
    let start_web = step_of(&plan, "start shop-web-1");
    assert!(waits_for(&plan, create_db, vol));
    assert!(waits_for(&plan, create_web, net));
    assert!(waits_for(&plan, wait, start_db));
    assert!(waits_for(&plan, start_web, wait));
    assert!(
        !waits_for(&plan, create_web, start_db),
        "creating waits for nothing it need not"
    );
    assert_eq!(plan.steps.len(), 7, "{:#?}", actions(&plan));
    for (i, s) in plan.steps.iter().enumerate() {
        assert!(
            s.after.iter().all(|&a| a < i),
            "step {i} waits for a later one"
        );
    }
}

#[test]
fn a_converged_stack_plans_nothing() {
    let mut desired = stack(vec![
        ("web", service("web:1", &[("env", "A=1")])),
        ("db", service("pg:16", &[])),
    ]);
    desired.services.get_mut("web").unwrap().replicas = 3;
    desired.networks.insert("front".into(), "h".into());
    let observed = converged(&desired);
    let plan = plan(&desired, &observed, at(100));
    assert!(plan.is_empty(), "{:#?}", actions(&plan));
    assert_eq!(plan.wake_at, None);
}

#[test]
fn a_changed_field_recreates_that_service_only_and_says_why() {
    let before = stack(vec![
        ("web", service("web:1", &[("env", "A=1")])),
        ("db", service("pg:16", &[])),
    ]);
    let observed = converged(&before);
    let mut after = before.clone();
    after
        .services
        .get_mut("web")
        .unwrap()
        .config
        .insert("env".into(), "A=2".into());
    let plan = plan(&after, &observed, at(100));
    assert_eq!(
        actions(&plan),
        [
            "stop web1",
            "remove web1",
            "create shop-web-1",
            "start shop-web-1"
        ]
    );
    assert!(
        plan.steps[2].why.contains("env: A=1→A=2"),
        "{}",
        plan.steps[2].why
    );
}

#[test]
fn a_new_image_digest_recreates_and_names_the_digests() {
    let desired = stack(vec![("web", service("web:1", &[]))]);
    let mut observed = converged(&desired);
    observed
        .images
        .insert("web:1".into(), format!("sha256:{}", "cd".repeat(32)));
    let plan = plan(&desired, &observed, at(100));
    let why = &plan.steps[step_of(&plan, "create shop-web-1")].why;
    assert!(
        why.contains("image: sha256:000000000000→sha256:cdcdcdcdcdcd"),
        "{why}"
    );
}

#[test]
fn limits_change_in_place() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    let observed = converged(&desired);
    desired
        .services
        .get_mut("web")
        .unwrap()
        .live
        .insert("memory".into(), "1g".into());
    let plan = plan(&desired, &observed, at(100));
    assert_eq!(actions(&plan), ["update web1"]);
    assert!(plan.steps[0].why.contains("memory: (none)→1g"));
}

#[test]
fn scaling_touches_only_the_difference() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    desired.services.get_mut("web").unwrap().replicas = 3;
    let observed = converged(&desired);
    desired.services.get_mut("web").unwrap().replicas = 1;
    assert_eq!(
        actions(&plan(&desired, &observed, at(1))),
        ["stop web2", "remove web2", "stop web3", "remove web3"]
    );
    desired.services.get_mut("web").unwrap().replicas = 5;
    assert_eq!(
        actions(&plan(&desired, &observed, at(1))),
        [
            "create shop-web-4",
            "start shop-web-4",
            "create shop-web-5",
            "start shop-web-5"
        ]
    );
}

#[test]
fn services_no_longer_declared_go_with_their_networks() {
    let mut before = stack(vec![
        ("web", service("web:1", &[])),
        ("old", service("old:1", &[])),
    ]);
    before.networks.insert("legacy".into(), "h".into());
    let observed = converged(&before);
    let after = stack(vec![("web", service("web:1", &[]))]);
    let plan = plan(&after, &observed, at(1));
    assert_eq!(actions(&plan), ["stop old1", "remove old1", "net- legacy"]);
    assert!(waits_for(&plan, 2, 1));
}

#[test]
fn a_container_linking_to_another_is_made_once_that_one_runs() {
    let mut web = service("web:1", &[("links", r#"[{"name":"shop-db-1"}]"#)]);
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Started,
        restart_dependents: false,
    }];
    let desired = stack(vec![("web", web), ("db", service("pg:16", &[]))]);
    let observed = Observed {
        images: images(&["web:1", "pg:16"]),
        ..Observed::default()
    };
    let plan = plan(&desired, &observed, at(10));
    let create_web = step_of(&plan, "create shop-web-1");
    let start_db = step_of(&plan, "start shop-db-1");
    assert!(waits_for(&plan, create_web, start_db));
    assert!(waits_for(
        &plan,
        create_web,
        step_of(&plan, "await db Started")
    ));
}

#[test]
fn a_long_run_forgets_earlier_failures() {
    let backoff = Backoff::default();
    assert_eq!(backoff.failures_after_run(3, at(0), at(1)), 3);
    assert_eq!(backoff.failures_after_run(3, at(0), at(10)), 0);
}

fn crashed(desired: &Desired, code: i64, finished: u64, failures: u32) -> Observed {
    let mut observed = converged(desired);
    let c = &mut observed.containers[0];
    c.state = State::Exited {
        code,
        started: at(finished.saturating_sub(1)),
        finished: at(finished),
    };
    c.failures = failures;
    observed
}

#[test]
fn a_crashed_container_restarts_after_its_backoff() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    desired.services.get_mut("web").unwrap().restart.policy = RestartPolicyName::Always;
    // Third consecutive failure: 100 ms × 2² = 400 ms after it exited.
    let observed = crashed(&desired, 1, 100, 2);
    let early = plan(&desired, &observed, at(100));
    assert!(early.is_empty(), "{:#?}", actions(&early));
    assert_eq!(early.wake_at, Some(at(100) + Duration::from_millis(400)));
    let due = plan(&desired, &observed, at(101));
    assert_eq!(actions(&due), ["start web1"]);
    assert!(
        due.steps[0].why.contains("restart 3"),
        "{}",
        due.steps[0].why
    );
}

#[test]
fn the_next_restart_is_when_the_plan_wakes() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    let web = desired.services["web"].clone();
    // Never restarted: no next try.
    let observed = crashed(&desired, 1, 100, 2);
    assert_eq!(next_restart(&web, &observed.containers[0]), None);
    desired.services.get_mut("web").unwrap().restart.policy = RestartPolicyName::Always;
    let web = &desired.services["web"];
    let early = plan(&desired, &observed, at(100));
    assert_eq!(next_restart(web, &observed.containers[0]), early.wake_at);
    // Held, given up or running: none.
    let mut c = observed.containers[0].clone();
    c.held = true;
    assert_eq!(next_restart(web, &c), None);
    c.held = false;
    c.given_up = true;
    assert_eq!(next_restart(web, &c), None);
    let running = converged(&desired);
    assert_eq!(next_restart(web, &running.containers[0]), None);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let b = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
        factor: 2.0,
        reset_after: Duration::from_secs(10),
    };
    let delays: Vec<u128> = (0..8).map(|n| b.delay(n).as_millis()).collect();
    assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000, 1000]);
    let odd = Backoff {
        factor: f64::NAN,
        ..b
    };
    assert_eq!(odd.delay(5).as_millis(), 100);
    assert_eq!(b.delay(u32::MAX), b.max);
}

#[test]
fn a_long_run_resets_the_backoff() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    desired.services.get_mut("web").unwrap().restart.policy = RestartPolicyName::Always;
    let mut observed = crashed(&desired, 1, 100, 9);
    if let State::Exited { started, .. } = &mut observed.containers[0].state {
        *started = at(50);
    }
    let plan = plan(&desired, &observed, at(100));
    assert_eq!(plan.wake_at, Some(at(100) + Duration::from_millis(100)));
}

#[test]
fn on_failure_ignores_success_and_gives_up_after_max_retries() {
    let mut desired = stack(vec![("job", service("job:1", &[]))]);
    let restart = &mut desired.services.get_mut("job").unwrap().restart;
    restart.policy = RestartPolicyName::OnFailure;
    restart.max_retries = Some(3);
    assert!(plan(&desired, &crashed(&desired, 0, 1, 0), at(100)).is_empty());
    assert_eq!(
        actions(&plan(&desired, &crashed(&desired, 2, 1, 2), at(100))),
        ["start job1"]
    );
    let gave_up = plan(&desired, &crashed(&desired, 2, 1, 3), at(100));
    assert_eq!(actions(&gave_up), ["give-up job1"]);
    let mut observed = crashed(&desired, 2, 1, 3);
    observed.containers[0].given_up = true;
    assert!(plan(&desired, &observed, at(100)).is_empty());
}

#[test]
fn the_start_limit_gives_up() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    let restart = &mut desired.services.get_mut("web").unwrap().restart;
    restart.policy = RestartPolicyName::Always;
    restart.start_limit = Some((3, Duration::from_secs(10)));
    let mut observed = crashed(&desired, 1, 95, 0);
    observed.containers[0].starts = vec![at(80), at(91), at(93)];
    assert_eq!(actions(&plan(&desired, &observed, at(100))), ["start web1"]);
    observed.containers[0].starts.push(at(94));
    let plan = plan(&desired, &observed, at(100));
    assert_eq!(actions(&plan), ["give-up web1"]);
    assert!(plan.steps[0].why.contains("start limit 3"));
}

#[test]
fn a_restart_waits_for_dependencies_again() {
    let mut web = service("web:1", &[]);
    web.restart.policy = RestartPolicyName::Always;
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Healthy,
        restart_dependents: false,
    }];
    let mut db = service("pg:16", &[]);
    db.health = Some(OnUnhealthy::None);
    let desired = stack(vec![("web", web), ("db", db)]);
    let mut observed = converged(&desired);
    for c in &mut observed.containers {
        if c.service == "db" {
            c.health = Health::Starting;
        } else {
            c.state = State::Exited {
                code: 1,
                started: at(0),
                finished: at(1),
            };
        }
    }
    let plan = plan(&desired, &observed, at(100));
    assert_eq!(actions(&plan), ["await db Healthy", "start web1"]);
    assert!(waits_for(&plan, 1, 0));
}

#[test]
fn a_dependency_that_restarted_restarts_its_dependents_when_asked() {
    let mut web = service("web:1", &[]);
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Started,
        restart_dependents: true,
    }];
    let desired = stack(vec![("web", web), ("db", service("pg:16", &[]))]);
    let mut observed = converged(&desired);
    for c in &mut observed.containers {
        let started = if c.service == "db" { at(50) } else { at(10) };
        c.state = State::Running { started };
    }
    assert_eq!(
        actions(&plan(&desired, &observed, at(100))),
        ["stop web1", "start web1"]
    );
    let mut plain = desired.clone();
    plain.services.get_mut("web").unwrap().depends_on[0].restart_dependents = false;
    assert!(plan(&plain, &observed, at(100)).is_empty());
}

#[test]
fn unhealthy_containers_restart_or_stop_as_declared() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    let mut observed = converged(&desired);
    observed.containers[0].health = Health::Unhealthy;
    desired.services.get_mut("web").unwrap().health = Some(OnUnhealthy::None);
    assert!(plan(&desired, &observed, at(1)).is_empty());
    desired.services.get_mut("web").unwrap().health = Some(OnUnhealthy::Restart);
    assert_eq!(
        actions(&plan(&desired, &observed, at(1))),
        ["stop web1", "start web1"]
    );
    desired.services.get_mut("web").unwrap().health = Some(OnUnhealthy::Stop);
    assert_eq!(actions(&plan(&desired, &observed, at(1))), ["stop web1"]);
}

#[test]
fn start_first_starts_the_new_container_before_stopping_the_old() {
    let mut desired = stack(vec![("web", service("web:1", &[("env", "A=1")]))]);
    let observed = converged(&desired);
    let web = desired.services.get_mut("web").unwrap();
    web.update = UpdateOrder::StartFirst;
    web.health = Some(OnUnhealthy::None);
    web.config.insert("env".into(), "A=2".into());
    let plan = plan(&desired, &observed, at(1));
    assert_eq!(
        actions(&plan),
        [
            "create shop-web-1-next",
            "start shop-web-1-next",
            "ready shop-web-1-next true",
            "stop web1",
            "remove web1",
            "rename shop-web-1-next shop-web-1"
        ]
    );
    for i in 1..plan.steps.len() {
        assert!(waits_for(&plan, i, i - 1), "step {i} runs too early");
    }
}

#[test]
fn a_failed_start_first_update_holds_until_the_service_changes_again() {
    let mut desired = stack(vec![("web", service("web:1", &[("env", "A=1")]))]);
    let mut observed = converged(&desired);
    let web = desired.services.get_mut("web").unwrap();
    web.update = UpdateOrder::StartFirst;
    web.health = Some(OnUnhealthy::None);
    web.config.insert("env".into(), "A=2".into());
    // The replacement made for A=2 never got ready: stopped, the old one
    // running.
    let mut next = matching(&desired, &observed, "web", 1);
    next.id = "next".into();
    next.name = replacement_name("shop", "web", 1);
    next.state = State::Exited {
        code: 137,
        started: at(1),
        finished: at(2),
    };
    observed.containers.push(next);
    assert!(plan(&desired, &observed, at(3)).is_empty());
    assert_eq!(
        failed_updates(&desired, &observed),
        [("shop-web-1-next".to_string(), "shop-web-1".to_string())]
    );
    // An explicit `up` tries again: the failed one goes first, the new
    // replacement takes its name after it.
    let again = plan_with(
        &desired,
        &observed,
        at(3),
        &PlanOptions {
            start_stopped: true,
            ..PlanOptions::default()
        },
    );
    let steps = actions(&again);
    assert_eq!(steps[0], "remove next", "{steps:?}");
    assert!(
        steps.contains(&"create shop-web-1-next".to_string()),
        "{steps:?}"
    );
    let create = steps
        .iter()
        .position(|s| s == "create shop-web-1-next")
        .unwrap();
    assert!(waits_for(&again, create, 0), "{steps:?}");
    // A new change replaces it the same way.
    desired
        .services
        .get_mut("web")
        .unwrap()
        .config
        .insert("env".into(), "A=3".into());
    let changed = actions(&plan(&desired, &observed, at(3)));
    assert_eq!(changed[0], "remove next", "{changed:?}");
    assert!(
        changed.contains(&"ready shop-web-1-next true".to_string()),
        "{changed:?}"
    );
}

#[test]
fn a_replacement_left_under_its_temporary_name_takes_the_replica_name() {
    let desired = stack(vec![("web", service("web:1", &[]))]);
    let mut observed = converged(&desired);
    let mut next = observed.containers[0].clone();
    next.id = "next".into();
    next.name = replacement_name("shop", "web", 1);
    observed.containers[0].state = State::Exited {
        code: 0,
        started: at(0),
        finished: at(1),
    };
    observed.containers.push(next);
    let plan = plan(&desired, &observed, at(5));
    assert_eq!(actions(&plan), ["remove web1", "rename next shop-web-1"]);
    assert!(waits_for(&plan, 1, 0));
}

#[test]
fn duplicate_replicas_keep_the_running_matching_one() {
    let desired = stack(vec![("web", service("web:1", &[("env", "A=1")]))]);
    let mut observed = converged(&desired);
    let mut stale = observed.containers[0].clone();
    stale.id = "stale".into();
    stale.name = "shop-web-1-old".into();
    stale.config.insert("env".into(), "A=0".into());
    observed.containers.insert(0, stale);
    assert_eq!(
        actions(&plan(&desired, &observed, at(1))),
        ["stop stale", "remove stale"]
    );
}

#[test]
fn a_changed_network_takes_its_containers_down_and_up_again() {
    let mut web = service("web:1", &[]);
    web.networks = vec!["front".into()];
    let mut desired = stack(vec![("web", web), ("db", service("pg:16", &[]))]);
    desired.networks.insert("front".into(), "v1".into());
    let observed = converged(&desired);
    desired.networks.insert("front".into(), "v2".into());
    let plan = plan(&desired, &observed, at(1));
    assert_eq!(
        actions(&plan),
        [
            "stop web1",
            "remove web1",
            "net- front",
            "net+ front",
            "create shop-web-1",
            "start shop-web-1"
        ]
    );
    assert!(waits_for(&plan, 4, 3));
}

#[test]
fn a_missing_image_is_fetched_before_its_containers_are_made() {
    let desired = stack(vec![("web", service("web:1", &[]))]);
    let plan = plan(&desired, &Observed::default(), at(1));
    assert_eq!(
        actions(&plan),
        ["image web", "create shop-web-1", "start shop-web-1"]
    );
    assert!(waits_for(&plan, 1, 0));
}

#[test]
fn held_containers_stay_stopped() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    desired.services.get_mut("web").unwrap().restart.policy = RestartPolicyName::UnlessStopped;
    let mut observed = crashed(&desired, 137, 1, 0);
    observed.containers[0].held = true;
    assert!(plan(&desired, &observed, at(100)).is_empty());
}

#[test]
fn down_stops_dependents_first_then_removes_networks_and_volumes() {
    let mut web = service("web:1", &[]);
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Started,
        restart_dependents: false,
    }];
    let mut desired = stack(vec![("web", web), ("db", service("pg:16", &[]))]);
    desired.networks.insert("front".into(), "h".into());
    desired.volumes.insert("data".into());
    let observed = converged(&desired);
    let plan = plan_down(&desired, &observed, true);
    assert_eq!(
        actions(&plan),
        [
            "stop web1",
            "remove web1",
            "stop db1",
            "remove db1",
            "net- front",
            "vol- data"
        ]
    );
    assert!(waits_for(&plan, 2, 0), "db stops after web");
    assert!(waits_for(&plan, 4, 3) && waits_for(&plan, 4, 1));
    let keep = plan_down(&desired, &observed, false);
    assert!(!actions(&keep).iter().any(|a| a.starts_with("vol-")));
}

#[test]
fn differences_shorten_long_values() {
    let long = "x".repeat(100);
    let d = differences(&fields(&[("cmd", &long)]), &fields(&[("cmd", "y")]));
    assert_eq!(d, [format!("cmd: {}→y", "x".repeat(57))]);
}

// The property: applying a plan to an in-memory host and planning again
// gives an empty plan, and no two steps act on one container at once.

/// The in-memory host: containers change as the executor would change the
/// real ones.
fn apply(desired: &Desired, observed: &mut Observed, plan: &Plan, now: SystemTime) {
    let mut created: BTreeMap<usize, String> = BTreeMap::new();
    let resolve = |created: &BTreeMap<usize, String>, t: &Target| match t {
        Target::Existing(id) => id.clone(),
        Target::Created(i) => created[i].clone(),
    };
    for (i, step) in plan.steps.iter().enumerate() {
        match &step.action {
            Action::EnsureImage { image, .. } => {
                let r = image.reference();
                observed
                    .images
                    .insert(r.to_string(), format!("sha256:{:0>64}", r.len()));
            }
            Action::CreateNetwork { network } => {
                assert!(!observed.networks.contains_key(network));
                observed
                    .networks
                    .insert(network.clone(), desired.networks[network].clone());
            }
            Action::RemoveNetwork { network } => {
                assert!(observed.networks.remove(network).is_some());
            }
            Action::CreateVolume { volume } => {
                assert!(observed.volumes.insert(volume.clone()));
            }
            Action::RemoveVolume { volume } => {
                assert!(observed.volumes.remove(volume));
            }
            Action::Create {
                service,
                replica,
                name,
            } => {
                assert!(
                    observed.containers.iter().all(|c| &c.name != name),
                    "name {name} taken"
                );
                let s = &desired.services[service];
                let mut config = s.config.clone();
                config.insert(
                    IMAGE_FIELD.into(),
                    observed.images[s.image.reference()].clone(),
                );
                let id = format!("new{i}");
                created.insert(i, id.clone());
                observed.containers.push(ObservedContainer {
                    id,
                    name: name.clone(),
                    service: service.clone(),
                    replica: *replica,
                    config,
                    live: s.live.clone(),
                    state: State::Created,
                    health: Health::None,
                    failures: 0,
                    starts: vec![],
                    given_up: false,
                    held: false,
                });
            }
            action => {
                let Some(target) = action.container().map(|t| resolve(&created, &t)) else {
                    match action {
                        Action::Await { service, condition } => {
                            // The awaited condition comes true where it can
                            // (a health check passes, a job ends); one that
                            // cannot (a dependency in backoff) would hold
                            // the executor, which this host does not model.
                            for c in observed
                                .containers
                                .iter_mut()
                                .filter(|c| &c.service == service)
                            {
                                match (condition, c.state) {
                                    (Condition::Healthy, State::Running { .. }) => {
                                        c.health = Health::Healthy
                                    }
                                    (Condition::Completed, State::Running { started }) => {
                                        c.state = State::Exited {
                                            code: 0,
                                            started,
                                            finished: now,
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    continue;
                };
                let index = observed
                    .containers
                    .iter()
                    .position(|c| c.id == target)
                    .unwrap_or_else(|| panic!("step {i} acts on {target}, which is gone"));
                let c = &mut observed.containers[index];
                let has_health = desired
                    .services
                    .get(&c.service)
                    .is_some_and(|s| s.health.is_some());
                match action {
                    Action::Start { .. } => {
                        assert!(!matches!(c.state, State::Running { .. }));
                        c.state = State::Running { started: now };
                        c.health = if has_health {
                            Health::Healthy
                        } else {
                            Health::None
                        };
                        c.starts.push(now);
                        c.held = false;
                    }
                    Action::Stop { .. } => {
                        let started = match c.state {
                            State::Running { started } => started,
                            _ => now,
                        };
                        c.state = State::Exited {
                            code: 143,
                            started,
                            finished: now,
                        };
                        c.held = true;
                    }
                    Action::Remove { .. } => {
                        assert!(!matches!(c.state, State::Running { .. }));
                        observed.containers.remove(index);
                    }
                    Action::Rename { name, .. } => c.name = name.clone(),
                    Action::Update { live, .. } => c.live = live.clone(),
                    Action::AwaitReady { healthy, .. } => {
                        assert!(matches!(c.state, State::Running { .. }));
                        assert!(!healthy || c.health == Health::Healthy);
                    }
                    Action::GiveUp { .. } => c.given_up = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}

fn arb_desired() -> impl Strategy<Value = Desired> {
    let one = (
        0u32..4,
        0usize..3,
        0usize..3,
        0usize..2,
        prop::collection::vec(0usize..5, 0..3),
        0usize..4,
        any::<bool>(),
        0usize..3,
        any::<bool>(),
        any::<bool>(),
    );
    prop::collection::vec(one, 1..6).prop_map(|services| {
        let mut desired = Desired {
            stack: "p".into(),
            ..Desired::default()
        };
        desired.networks.insert("n0".into(), "h0".into());
        desired.networks.insert("n1".into(), "h1".into());
        desired.volumes.insert("v0".into());
        let names: Vec<String> = (0..services.len()).map(|i| format!("s{i}")).collect();
        for (
            i,
            (replicas, image, env, limit, deps, policy, health, on_unhealthy, start_first, net),
        ) in services.into_iter().enumerate()
        {
            let mut s = service(&format!("img{image}"), &[("env", &format!("E={env}"))]);
            s.replicas = replicas;
            if limit == 1 {
                s.live.insert("memory".into(), "1g".into());
            }
            // Dependencies only on earlier services: no cycles.
            for d in deps {
                if d < i && !s.depends_on.iter().any(|x| x.service == names[d]) {
                    s.depends_on.push(Dependency {
                        service: names[d].clone(),
                        condition: [Condition::Started, Condition::Healthy][d % 2],
                        restart_dependents: d % 3 == 0,
                    });
                }
            }
            s.restart.policy = [
                RestartPolicyName::No,
                RestartPolicyName::Always,
                RestartPolicyName::OnFailure,
                RestartPolicyName::UnlessStopped,
            ][policy];
            s.restart.max_retries = Some(3);
            s.restart.start_limit = Some((5, Duration::from_secs(30)));
            if health {
                s.health = Some(
                    [OnUnhealthy::None, OnUnhealthy::Restart, OnUnhealthy::Stop][on_unhealthy],
                );
            }
            if start_first {
                s.update = UpdateOrder::StartFirst;
            }
            if net {
                s.networks.push("n0".into());
                s.volumes.push("v0".into());
            }
            desired.services.insert(names[i].clone(), s);
        }
        desired
    })
}

fn arb_container() -> impl Strategy<Value = (usize, u32, usize, usize, usize, u32, u64, bool)> {
    (
        0usize..7,     // service (5 and 6 are orphans)
        0u32..5,       // replica
        0usize..3,     // env value
        0usize..6,     // state
        0usize..4,     // health
        0u32..5,       // failures
        0u64..200,     // finished
        any::<bool>(), // held
    )
}

fn arb_observed(desired: &Desired) -> impl Strategy<Value = Observed> + use<> {
    let desired = desired.clone();
    (
        prop::collection::vec(arb_container(), 0..10),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(containers, net, changed, volume)| {
            let mut observed = Observed::default();
            for i in 0..3 {
                let r = format!("img{i}");
                observed
                    .images
                    .insert(r.clone(), format!("sha256:{:0>64}", r.len()));
            }
            if net {
                let hash = if changed { "old" } else { "h0" };
                observed.networks.insert("n0".into(), hash.into());
            }
            observed.networks.insert("gone".into(), "x".into());
            if volume {
                observed.volumes.insert("v0".into());
            }
            for (n, (service, replica, env, state, health, failures, finished, held)) in
                containers.into_iter().enumerate()
            {
                let name = format!("s{service}");
                let image = desired
                    .services
                    .get(&name)
                    .map_or("img0".to_string(), |s| s.image.reference().to_string());
                let mut config = fields(&[("env", &format!("E={env}"))]);
                config.insert(IMAGE_FIELD.into(), observed.images[&image].clone());
                let started = at(finished / 2);
                observed.containers.push(ObservedContainer {
                    id: format!("c{n}"),
                    name: format!("p-{name}-{replica}-{n}"),
                    service: name,
                    replica,
                    config,
                    live: Fields::new(),
                    state: match state {
                        0 => State::Created,
                        1 | 2 => State::Running { started },
                        3 => State::Paused,
                        4 => State::Exited {
                            code: 0,
                            started,
                            finished: at(finished),
                        },
                        _ => State::Exited {
                            code: 1,
                            started,
                            finished: at(finished),
                        },
                    },
                    health: [
                        Health::None,
                        Health::Starting,
                        Health::Healthy,
                        Health::Unhealthy,
                    ][health],
                    failures,
                    starts: vec![started],
                    given_up: false,
                    held,
                });
            }
            observed
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn applying_a_plan_converges(
        (desired, observed) in arb_desired().prop_flat_map(|d| {
            let o = arb_observed(&d);
            (Just(d), o)
        })
    ) {
        // Completed conditions are not generated: a restarting service
        // never completes, which the in-memory host cannot model.
        let now = at(1000);
        let mut host = observed;
        let first = plan(&desired, &host, now);
        for (i, step) in first.steps.iter().enumerate() {
            prop_assert!(step.after.iter().all(|&a| a < i));
        }
        // No two steps act on one container without one waiting for the
        // other.
        for i in 0..first.steps.len() {
            for j in 0..i {
                let (a, b) = (first.steps[j].action.container(), first.steps[i].action.container());
                let same = match (&a, &b) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                };
                let create_then_use = matches!(b, Some(Target::Created(k)) if k == j);
                if same || create_then_use {
                    prop_assert!(waits_for(&first, i, j), "steps {} and {} race", j, i);
                }
            }
        }
        apply(&desired, &mut host, &first, now);
        let second = plan(&desired, &host, now);
        prop_assert!(second.is_empty(), "not converged: {:#?}\nafter {:#?}", actions(&second), actions(&first));
        for c in &host.containers {
            let s = &desired.services[&c.service];
            prop_assert!(c.replica >= 1 && c.replica <= s.replicas);
            prop_assert_eq!(&c.name, &container_name("p", &c.service, c.replica));
        }
        for (name, s) in &desired.services {
            let n = host.containers.iter().filter(|c| &c.service == name).count();
            prop_assert_eq!(n, s.replicas as usize, "replicas of {}", name);
        }
        prop_assert_eq!(&host.networks, &desired.networks);
    }
}

fn web_on_db() -> Desired {
    let mut web = service("web:1", &[]);
    web.depends_on = vec![Dependency {
        service: "db".into(),
        condition: Condition::Started,
        restart_dependents: false,
    }];
    stack(vec![
        ("web", web),
        ("db", service("pg:16", &[])),
        ("cache", service("redis:7", &[])),
    ])
}

#[test]
fn selecting_services_adds_their_dependencies_unless_no_deps() {
    let desired = web_on_db();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        select(&desired, &names(&["web"]), true).unwrap(),
        set(&["web", "db"])
    );
    assert_eq!(
        select(&desired, &names(&["web"]), false).unwrap(),
        set(&["web"])
    );
    assert!(select(&desired, &[], true).unwrap().is_empty());
    let err = select(&desired, &names(&["wbe"]), true).unwrap_err();
    assert!(err.contains("no such service: wbe"), "{err}");
}

#[test]
fn a_selection_applies_only_those_services_and_no_deps_does_not_wait() {
    let desired = web_on_db();
    let observed = Observed {
        images: images(&["web:1", "pg:16", "redis:7"]),
        ..Observed::default()
    };
    let options = PlanOptions {
        services: select(&desired, &["web".to_string()], true).unwrap(),
        ..PlanOptions::default()
    };
    let with_deps = plan_with(&desired, &observed, at(1), &options);
    let all = actions(&with_deps);
    assert!(all.contains(&"create shop-db-1".to_string()), "{all:?}");
    assert!(all.contains(&"await db Started".to_string()), "{all:?}");
    assert!(!all.iter().any(|a| a.contains("cache")), "{all:?}");

    let options = PlanOptions {
        services: select(&desired, &["web".to_string()], false).unwrap(),
        ..PlanOptions::default()
    };
    let alone = plan_with(&desired, &observed, at(1), &options);
    assert_eq!(
        actions(&alone),
        ["create shop-web-1", "start shop-web-1"],
        "--no-deps starts web alone and waits for nothing"
    );
}

#[test]
fn force_recreate_recreates_unchanged_containers_once_asked() {
    let desired = web_on_db();
    let observed = converged(&desired);
    assert!(plan(&desired, &observed, at(1)).is_empty());
    let options = PlanOptions {
        force_recreate: true,
        services: ["cache".to_string()].into(),
        ..PlanOptions::default()
    };
    let plan = plan_with(&desired, &observed, at(1), &options);
    assert_eq!(
        actions(&plan),
        [
            "stop cache1",
            "remove cache1",
            "create shop-cache-1",
            "start shop-cache-1"
        ]
    );
    assert!(plan.steps[2].why.contains("--force-recreate"));
}

#[test]
fn pull_always_pulls_present_images_before_creating() {
    let desired = stack(vec![("web", service("web:1", &[]))]);
    let observed = Observed {
        images: images(&["web:1"]),
        ..Observed::default()
    };
    let options = PlanOptions {
        pull_always: true,
        ..PlanOptions::default()
    };
    let plan = plan_with(&desired, &observed, at(1), &options);
    assert_eq!(
        actions(&plan),
        ["image web", "create shop-web-1", "start shop-web-1"]
    );
    assert!(waits_for(&plan, 1, 0));
    assert!(plan.steps[0].why.contains("--pull always"));
    // A running container waits for the pull; the next plan sees the digest.
    let converged = converged(&desired);
    let plan = plan_with(&desired, &converged, at(1), &options);
    assert_eq!(actions(&plan), ["image web"]);
}

#[test]
fn orphans_stay_with_remove_orphans_false() {
    let mut before = stack(vec![
        ("web", service("web:1", &[])),
        ("old", service("old:1", &[])),
    ]);
    before.networks.insert("legacy".into(), "h".into());
    let observed = converged(&before);
    let after = stack(vec![("web", service("web:1", &[]))]);
    let options = PlanOptions {
        remove_orphans: false,
        ..PlanOptions::default()
    };
    assert!(plan_with(&after, &observed, at(1), &options).is_empty());
}

#[test]
fn an_explicit_up_starts_stopped_containers_again() {
    let desired = stack(vec![("web", service("web:1", &[]))]);
    let mut observed = crashed(&desired, 137, 1, 0);
    observed.containers[0].held = true;
    assert!(plan(&desired, &observed, at(100)).is_empty());
    let options = PlanOptions {
        start_stopped: true,
        ..PlanOptions::default()
    };
    let plan = plan_with(&desired, &observed, at(100), &options);
    assert_eq!(actions(&plan), ["start web1"]);
}

#[test]
fn stop_stops_dependents_first_and_keeps_everything() {
    let mut desired = web_on_db();
    desired.networks.insert("front".into(), "h".into());
    let observed = converged(&desired);
    let plan = plan_stop(&desired, &observed);
    let all = actions(&plan);
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.iter().all(|a| a.starts_with("stop ")), "{all:?}");
    assert!(waits_for(
        &plan,
        step_of(&plan, "stop db1"),
        step_of(&plan, "stop web1")
    ));
}

#[test]
fn readiness_waits_for_health_and_fails_on_what_cannot_recover() {
    let mut desired = stack(vec![("web", service("web:1", &[]))]);
    desired.services.get_mut("web").unwrap().health = Some(OnUnhealthy::None);
    let mut observed = converged(&desired);
    let all = BTreeSet::new();
    observed.containers[0].health = Health::Starting;
    assert_eq!(
        readiness(&desired, &observed, &all),
        Readiness::Waiting(vec!["shop-web-1 is not healthy yet".into()])
    );
    observed.containers[0].health = Health::Healthy;
    assert_eq!(readiness(&desired, &observed, &all), Readiness::Ready);
    observed.containers[0].health = Health::Unhealthy;
    assert!(matches!(
        readiness(&desired, &observed, &all),
        Readiness::Failed(m) if m.contains("unhealthy")
    ));
    let mut gave_up = crashed(&desired, 1, 1, 5);
    gave_up.containers[0].given_up = true;
    assert!(matches!(
        readiness(&desired, &gave_up, &all),
        Readiness::Failed(m) if m.contains("gave up")
    ));
    let empty = Observed {
        images: images(&["web:1"]),
        ..Observed::default()
    };
    assert_eq!(
        readiness(&desired, &empty, &all),
        Readiness::Waiting(vec!["shop-web-1 is not created yet".into()])
    );
    // A service left out of the selection is not waited for.
    assert_eq!(
        readiness(&desired, &empty, &["db".to_string()].into()),
        Readiness::Ready
    );
}
