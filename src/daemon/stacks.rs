//! Stacks in the daemon: what runs is observed ([`observe`]), compared
//! with the stack file ([`crate::reconcile::plan::plan`]) and the plan's
//! steps carried out ([`execute`]), independent steps at once and each
//! after the steps it waits for.
//!
//! A stack container keeps what the plan needs in its record's `extra`:
//! the fields it was made from (`stack.fields`), its live settings
//! (`stack.live`) and the restart engine's memory (`stack.restarts`:
//! consecutive failures, recent starts, given up, held). The daemon's own
//! restart policy stays off for them: the stack loop restarts them itself,
//! through the backoff and after their dependencies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::reconcile::desired::{
    self, LABEL_REPLICA, LABEL_SERVICE, LABEL_STACK, NetworkTemplate, Resolved,
};
use crate::reconcile::plan::{
    Action, Fields, Health, ImageSource, Observed, ObservedContainer, Plan, State, Target,
};
use crate::runtime::{ContainerRecord, ContainerState, Status};
use crate::spec::model::Condition;

/// The label a stack's networks carry, with the hash of their settings.
pub const LABEL_NETWORK_HASH: &str = "stack.network-hash";
/// How many recent start times a container keeps for the start limit.
const STARTS_KEPT: usize = 64;
/// How long a wait step goes without an event before it looks again
/// anyway: events (start, die, health changes) drive it, this only
/// covers one missed.
const AWAIT_FALLBACK: Duration = Duration::from_secs(1);

/// Why a stack step failed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A container step failed.
    #[error("{step}: {message}")]
    Step {
        /// The step, as the plan words it.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// Observing the host failed.
    #[error("cannot observe the stack: {0}")]
    Observe(String),
}

/// The restart engine's memory of one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartMemory {
    /// Failed runs since the last run that lasted long enough.
    #[serde(default)]
    pub failures: u32,
    /// Recent start times, seconds since the epoch (with fractions).
    #[serde(default)]
    pub starts: Vec<f64>,
    /// The engine gave up.
    #[serde(default)]
    pub given_up: bool,
    /// Stopped on purpose: not started again until asked.
    #[serde(default)]
    pub held: bool,
}

fn to_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn from_secs(s: f64) -> SystemTime {
    if s.is_finite() && s > 0.0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn extra_fields(record: &ContainerRecord, key: &str) -> Fields {
    record
        .extra
        .get(key)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// The restart memory kept in a container's record.
pub fn restart_memory(record: &ContainerRecord) -> RestartMemory {
    record
        .extra
        .get("stack.restarts")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn parse_time(t: &Option<String>) -> Option<SystemTime> {
    crate::runtime::logs::parse_time_filter(t.as_deref()?, SystemTime::now()).ok()
}

fn state_of(state: &ContainerState) -> State {
    let started = parse_time(&state.started_at).unwrap_or(SystemTime::UNIX_EPOCH);
    match state.status {
        Status::Created => State::Created,
        Status::Running => State::Running { started },
        Status::Paused => State::Paused,
        Status::Exited | Status::Removing => State::Exited {
            code: i64::from(state.exit_code),
            started,
            finished: parse_time(&state.finished_at).unwrap_or(started),
        },
    }
}

/// The health status of the container's current run. The state file of
/// an earlier run stays until the new run's monitor writes its own (a
/// restart, a daemon restart), and a dependent must not start on a
/// dependency's old `healthy`: until a probe of this run answered, the
/// run is `starting`, as Docker resets it at every start.
fn current_health(
    health: crate::reconcile::health::Health,
    state: &ContainerState,
) -> crate::reconcile::health::HealthStatus {
    use crate::reconcile::health::HealthStatus;
    if state.status != Status::Running || health.status == HealthStatus::Starting {
        return health.status;
    }
    let started = parse_time(&state.started_at);
    let probed = health
        .log
        .last()
        .and_then(|r| parse_time(&Some(r.start.clone())));
    match (started, probed) {
        (Some(started), Some(probed)) if probed >= started => health.status,
        _ => HealthStatus::Starting,
    }
}

/// The stack's containers, networks and volumes as they are now, and the
/// images its services need.
pub fn observe(d: &Daemon, resolved: &Resolved) -> Result<Observed, StackError> {
    let stack = &resolved.desired.stack;
    let mut observed = Observed::default();
    let images = &d.containers.images;
    let built = super::build::StackBuilds::open(&d.root);
    for service in resolved.desired.services.values() {
        let reference = service.image.reference();
        if let Ok(id) = images.catalog.resolve(reference) {
            if let ImageSource::Build { tag, context, .. } = &service.image
                && !built.is_current(tag, context, &id)
            {
                continue;
            }
            observed
                .images
                .insert(reference.to_string(), id.to_string());
        }
    }
    let list = d
        .containers
        .runtime
        .list()
        .map_err(|e| StackError::Observe(crate::error_chain(&e)))?;
    for (record, state) in list {
        if record.labels.get(LABEL_STACK) != Some(stack) {
            continue;
        }
        let Some(service) = record.labels.get(LABEL_SERVICE) else {
            continue;
        };
        let replica = record
            .labels
            .get(LABEL_REPLICA)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let memory = restart_memory(&record);
        let health = match d
            .containers
            .health(&record.id)
            .map(|h| current_health(h, &state))
        {
            Some(crate::reconcile::health::HealthStatus::Starting) => Health::Starting,
            Some(crate::reconcile::health::HealthStatus::Healthy) => Health::Healthy,
            Some(crate::reconcile::health::HealthStatus::Unhealthy) => Health::Unhealthy,
            None => Health::None,
        };
        observed.containers.push(ObservedContainer {
            id: record.id.clone(),
            name: record.name.clone(),
            service: service.clone(),
            replica,
            config: extra_fields(&record, "stack.fields"),
            live: extra_fields(&record, "stack.live"),
            state: state_of(&state),
            health,
            failures: memory.failures,
            starts: memory.starts.iter().map(|&s| from_secs(s)).collect(),
            given_up: memory.given_up,
            held: memory.held,
        });
    }
    observed.containers.sort_by(|a, b| a.name.cmp(&b.name));
    let networks = d
        .containers
        .networks()
        .map_err(|e| StackError::Observe(crate::error_chain(&e)))?;
    let list = networks
        .list()
        .map_err(|e| StackError::Observe(crate::error_chain(&e)))?;
    for record in list {
        if record.labels.get(LABEL_STACK) != Some(stack) {
            continue;
        }
        let in_stack = resolved
            .networks
            .iter()
            .find(|(_, t)| t.name == record.name)
            .map(|(n, _)| n.clone())
            .or_else(|| {
                record
                    .name
                    .strip_prefix(&format!("{stack}_"))
                    .map(str::to_string)
            });
        if let Some(name) = in_stack {
            let hash = record
                .labels
                .get(LABEL_NETWORK_HASH)
                .cloned()
                .unwrap_or_default();
            observed.networks.insert(name, hash);
        }
    }
    for name in &resolved.desired.volumes {
        if let Some(host) = resolved.volumes.get(name)
            && d.containers.volume_exists(host)
        {
            observed.volumes.insert(name.clone());
        }
    }
    Ok(observed)
}

/// What an execution did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The steps done, as the plan words them.
    pub done: Vec<String>,
    /// The steps that failed, with why.
    pub failed: Vec<String>,
    /// The steps not run because one they wait for failed.
    pub skipped: Vec<String>,
}

impl Report {
    /// True when every step succeeded.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Carries out `plan` for `resolved`: every step once the steps it waits
/// for are done, independent ones at once. A failed step fails the steps
/// that wait for it; the others go on.
pub async fn execute(
    d: &Arc<Daemon>,
    resolved: &Arc<Resolved>,
    plan: &Plan,
    cancel: &tokio::sync::watch::Receiver<bool>,
) -> Report {
    execute_with(d, resolved, plan, cancel, PullPolicy::Missing).await
}

/// [`execute`] with the stack's pull policy: with [`PullPolicy::Never`] a
/// pull step fails instead of pulling.
pub async fn execute_with(
    d: &Arc<Daemon>,
    resolved: &Arc<Resolved>,
    plan: &Plan,
    cancel: &tokio::sync::watch::Receiver<bool>,
    pull: PullPolicy,
) -> Report {
    let n = plan.steps.len();
    let mut outcome: Vec<Option<bool>> = vec![None; n];
    let mut created: BTreeMap<usize, String> = BTreeMap::new();
    let mut running: tokio::task::JoinSet<(usize, Result<Option<String>, String>)> =
        tokio::task::JoinSet::new();
    let mut launched = vec![false; n];
    let mut report = Report::default();
    loop {
        for i in 0..n {
            if launched[i] || outcome[i].is_some() {
                continue;
            }
            let step = &plan.steps[i];
            if step.after.iter().any(|&a| outcome[a] == Some(false)) {
                outcome[i] = Some(false);
                report.skipped.push(step.why.clone());
                continue;
            }
            if !step.after.iter().all(|&a| outcome[a] == Some(true)) {
                continue;
            }
            launched[i] = true;
            tracing::debug!(step = %step.why, "stack step");
            let action = resolve_target(&step.action, &created);
            let d = d.clone();
            let resolved = resolved.clone();
            let cancel = cancel.clone();
            running.spawn(async move {
                if pull == PullPolicy::Never
                    && let Action::EnsureImage {
                        image: ImageSource::Pull(reference),
                        ..
                    } = &action
                {
                    return (
                        i,
                        Err(format!(
                            "no such image: {reference} (--pull never: it is not pulled)"
                        )),
                    );
                }
                (i, run_step(&d, &resolved, action, cancel).await)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                // A step task panicked: nothing to attribute it to but the
                // first launched step without an outcome.
                tracing::error!(error = %e, "a stack step failed");
                let Some(i) = (0..n).find(|&i| launched[i] && outcome[i].is_none()) else {
                    break;
                };
                (i, Err(format!("the step failed: {e}")))
            }
        };
        let why = &plan.steps[i].why;
        match result {
            Ok(id) => {
                tracing::debug!(step = %why, "stack step done");
                if let Some(id) = id {
                    created.insert(i, id);
                }
                outcome[i] = Some(true);
                report.done.push(why.clone());
            }
            Err(message) => {
                outcome[i] = Some(false);
                tracing::warn!(step = %why, error = %message, "stack step failed");
                report.failed.push(format!("{why}: {message}"));
            }
        }
    }
    report
}

/// The action with containers made by earlier steps named by id.
fn resolve_target(action: &Action, created: &BTreeMap<usize, String>) -> Action {
    let fix = |t: &Target| match t {
        Target::Created(i) => created
            .get(i)
            .map_or_else(|| t.clone(), |id| Target::Existing(id.clone())),
        Target::Existing(_) => t.clone(),
    };
    match action {
        Action::Start { service, target } => Action::Start {
            service: service.clone(),
            target: fix(target),
        },
        Action::Rename { target, name } => Action::Rename {
            target: fix(target),
            name: name.clone(),
        },
        Action::AwaitReady { target, healthy } => Action::AwaitReady {
            target: fix(target),
            healthy: *healthy,
        },
        other => other.clone(),
    }
}

fn target_id(target: &Target) -> Result<String, String> {
    match target {
        Target::Existing(id) => Ok(id.clone()),
        Target::Created(i) => Err(format!("step {i} made no container")),
    }
}

/// Runs one step; returns the id of the container a create made.
async fn run_step(
    d: &Arc<Daemon>,
    resolved: &Arc<Resolved>,
    action: Action,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<String>, String> {
    let e = |e: &dyn std::error::Error| crate::error_chain(e);
    match action {
        Action::EnsureImage { image, .. } => match image {
            ImageSource::Pull(reference) => {
                let reference: crate::image::reference::Reference =
                    reference.parse().map_err(|x| e(&x))?;
                d.pull(&reference).await.map_err(|x| e(&x))?;
                Ok(None)
            }
            ImageSource::Build { tag, context, how } => {
                let handle = tokio::runtime::Handle::current();
                blocking(d, move |d| {
                    super::build::build_service(d, handle, &tag, &context, &how)
                })
                .await
            }
        },
        Action::CreateNetwork { network } => {
            let template = resolved
                .networks
                .get(&network)
                .ok_or_else(|| format!("network {network} is not declared"))?
                .clone();
            let hash = resolved
                .desired
                .networks
                .get(&network)
                .cloned()
                .unwrap_or_default();
            let stack = resolved.desired.stack.clone();
            blocking(d, move |d| create_network(d, &stack, &template, &hash)).await?;
            Ok(None)
        }
        Action::RemoveNetwork { network } => {
            let host = resolved.networks.get(&network).map_or_else(
                || desired::network_name(&resolved.desired.stack, &network),
                |t| t.name.clone(),
            );
            blocking(d, move |d| {
                d.containers
                    .remove_network(&host)
                    .map(|_| ())
                    .map_err(|x| crate::error_chain(&x))
            })
            .await?;
            Ok(None)
        }
        Action::CreateVolume { volume } => {
            let host = volume_host(resolved, &volume);
            blocking(d, move |d| {
                d.containers
                    .ensure_volume(&host)
                    .map(|_| ())
                    .map_err(|x| crate::error_chain(&x))
            })
            .await?;
            Ok(None)
        }
        Action::RemoveVolume { volume } => {
            let host = volume_host(resolved, &volume);
            blocking(d, move |d| {
                d.containers
                    .remove_volume(&host)
                    .map_err(|x| crate::error_chain(&x))
            })
            .await?;
            Ok(None)
        }
        Action::Create {
            service,
            replica,
            name,
        } => {
            let template = resolved
                .templates
                .get(&service)
                .ok_or_else(|| format!("service {service} is not declared"))?;
            let desired = &resolved.desired.services[&service];
            let config = observed_config(d, desired)?;
            let mut req =
                template.for_replica(&resolved.desired.stack, &service, replica, &name, &config);
            d.apply_defaults(&mut req);
            let attach = template.attach.clone();
            let live = desired.live.clone();
            let id = blocking(d, move |d| {
                let id = d
                    .containers
                    .create(&req)
                    .map_err(|x| crate::error_chain(&x))?;
                change_record(d, &id, |record| {
                    record.extra.insert(
                        "stack.fields".into(),
                        serde_json::to_value(&config).unwrap_or_default(),
                    );
                    record.extra.insert(
                        "stack.live".into(),
                        serde_json::to_value(&live).unwrap_or_default(),
                    );
                })?;
                for a in &attach {
                    let endpoint = crate::net::EndpointRequest {
                        ip: a.ip,
                        ip6: a.ip6,
                        aliases: a.aliases.clone(),
                        mac: None,
                    };
                    d.containers
                        .connect(&a.network, &id, &endpoint)
                        .map_err(|x| crate::error_chain(&x))?;
                }
                Ok(id)
            })
            .await?;
            d.events.emit(super::events::Event::container(
                "create",
                &d.containers.runtime.record(&id).map_err(|x| e(&x))?,
            ));
            Ok(Some(id))
        }
        Action::Start { service, target } => {
            let id = target_id(&target)?;
            let backoff = resolved
                .desired
                .services
                .get(&service)
                .map(|s| s.restart.backoff)
                .unwrap_or_default();
            let ended = {
                let id = id.clone();
                blocking(d, move |d| {
                    d.containers
                        .runtime
                        .state(&id)
                        .map_err(|x| crate::error_chain(&x))
                })
                .await?
            };
            let ended = match state_of(&ended) {
                State::Exited {
                    started, finished, ..
                } => Some((started, finished)),
                _ => None,
            };
            remember(d, &id, move |m, now| {
                // A run that ended by itself (the loop did not stop it) is
                // one more failure for the backoff, unless it ran long
                // enough to forget the earlier ones.
                if let Some((started, finished)) = ended
                    && !m.held
                {
                    m.failures = backoff
                        .failures_after_run(m.failures, started, finished)
                        .saturating_add(1);
                }
                m.held = false;
                m.given_up = false;
                m.starts.push(to_secs(now));
                let excess = m.starts.len().saturating_sub(STARTS_KEPT);
                m.starts.drain(..excess);
            })
            .await?;
            d.supervisor.start(&id, None).await.map_err(|x| e(&x))?;
            Ok(None)
        }
        Action::Stop { id } => {
            let record = d.containers.runtime.record(&id).map_err(|x| e(&x))?;
            let signal =
                crate::runtime::signal_number(&record.stop_signal).unwrap_or(libc::SIGTERM);
            remember(d, &id, |m, _| m.held = true).await?;
            d.supervisor
                .stop(
                    &id,
                    signal,
                    Duration::from_secs(u64::from(record.stop_timeout)),
                )
                .await
                .map_err(|x| e(&x))?;
            Ok(None)
        }
        Action::Remove { id } => {
            d.supervisor
                .remove(&id, true, false)
                .await
                .map_err(|x| e(&x))?;
            Ok(None)
        }
        Action::Rename { target, name } => {
            let id = target_id(&target)?;
            blocking(d, move |d| {
                let old = d
                    .containers
                    .runtime
                    .record(&id)
                    .map_err(|x| crate::error_chain(&x))?
                    .name;
                d.containers
                    .runtime
                    .rename(&id, &name)
                    .map_err(|x| crate::error_chain(&x))?;
                // As the API's rename: the event, which the embedded DNS
                // follows (the replica's name answers for the new one).
                if let Ok(record) = d.containers.runtime.record(&id) {
                    d.events.emit(
                        super::events::Event::container("rename", &record)
                            .with_attribute("oldName", format!("/{old}")),
                    );
                }
                Ok(())
            })
            .await?;
            Ok(None)
        }
        Action::Update { id, live } => {
            let resources = live
                .get("resources")
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            blocking(d, move |d| {
                let request = crate::reconcile::verbs::UpdateRequest {
                    resources,
                    restart: None,
                };
                d.containers
                    .update(&id, &request)
                    .map_err(|x| crate::error_chain(&x))?;
                change_record(d, &id, |record| {
                    record.extra.insert(
                        "stack.live".into(),
                        serde_json::to_value(&live).unwrap_or_default(),
                    );
                })
            })
            .await?;
            Ok(None)
        }
        Action::Await { service, condition } => {
            let replicas = resolved
                .desired
                .services
                .get(&service)
                .map_or(0, |s| s.replicas);
            let mut cancel = cancel;
            // Subscribed before looking, so no change falls in between.
            let mut events = subscribe(
                d,
                &[
                    "type=container".to_string(),
                    format!("label={LABEL_STACK}={}", resolved.desired.stack),
                    format!("label={LABEL_SERVICE}={service}"),
                ],
            );
            loop {
                let observed = {
                    let d = d.clone();
                    let resolved = resolved.clone();
                    tokio::task::spawn_blocking(move || observe(&d, &resolved))
                        .await
                        .map_err(|x| x.to_string())?
                        .map_err(|x| x.to_string())?
                };
                let mine: Vec<&ObservedContainer> = observed
                    .containers
                    .iter()
                    .filter(|c| c.service == service && c.replica >= 1 && c.replica <= replicas)
                    .collect();
                let met = mine.len() >= replicas as usize
                    && mine.iter().all(|c| match condition {
                        Condition::Started => matches!(c.state, State::Running { .. }),
                        Condition::Healthy => {
                            matches!(c.state, State::Running { .. }) && c.health == Health::Healthy
                        }
                        Condition::Completed => matches!(c.state, State::Exited { code: 0, .. }),
                    });
                if met {
                    return Ok(None);
                }
                // A dependency that stopped cannot get there in this
                // execution: the next plan restarts it (through its backoff)
                // and waits again.
                if let Some(c) = mine.iter().find(|c| match condition {
                    Condition::Completed => {
                        matches!(c.state, State::Exited { code, .. } if code != 0)
                    }
                    Condition::Started | Condition::Healthy => {
                        matches!(c.state, State::Exited { .. })
                            || (condition == Condition::Healthy && c.health == Health::Unhealthy)
                    }
                }) {
                    let why = match c.state {
                        State::Exited { code, .. } => format!("exited with code {code}"),
                        _ => "is unhealthy".to_string(),
                    };
                    return Err(format!("{} {why}", c.name));
                }
                if *cancel.borrow() {
                    return Err("called off: the stack changed".into());
                }
                next_change(&mut events, &mut cancel).await;
            }
        }
        Action::AwaitReady { target, healthy } => {
            let id = target_id(&target)?;
            let cancel_seen = cancel.clone();
            let outcome = await_ready(d, &id, healthy, cancel).await;
            match &outcome {
                Ok(_) => {}
                // Called off by a newer version of the stack: the next plan
                // makes the replacement it wants.
                Err(_) if *cancel_seen.borrow() => {
                    if let Err(error) = d.supervisor.remove(&id, true, false).await {
                        tracing::warn!(container = %id, error = %crate::error_chain(&error), "removing a replacement called off");
                    }
                }
                Err(why) => fail_replacement(d, &resolved.desired.stack, &id, why).await,
            }
            outcome
        }
        Action::GiveUp { id } => {
            remember(d, &id, |m, _| m.given_up = true).await?;
            let record = d.containers.runtime.record(&id).map_err(|x| e(&x))?;
            d.events
                .emit(super::events::Event::container("give-up", &record));
            Ok(None)
        }
    }
}

/// Waits until the new container `id` of a start-first update runs (and,
/// with `healthy`, passes its health check); an error when it ends, turns
/// unhealthy or the wait is called off.
async fn await_ready(
    d: &Arc<Daemon>,
    id: &str,
    healthy: bool,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<String>, String> {
    let e = |e: &dyn std::error::Error| crate::error_chain(e);
    let id = id.to_string();
    let mut cancel = cancel;
    let mut events = subscribe(
        d,
        &["type=container".to_string(), format!("container={id}")],
    );
    loop {
        let state = d.containers.runtime.state(&id).map_err(|x| e(&x))?;
        match state.status {
            Status::Running => {
                if !healthy {
                    return Ok(None);
                }
                // No status yet: its first check has not run.
                match d.containers.health(&id).map(|h| h.status) {
                    Some(crate::reconcile::health::HealthStatus::Healthy) => {
                        return Ok(None);
                    }
                    Some(crate::reconcile::health::HealthStatus::Unhealthy) => {
                        return Err("the new container is unhealthy".into());
                    }
                    Some(crate::reconcile::health::HealthStatus::Starting) | None => {}
                }
            }
            Status::Exited | Status::Removing => {
                return Err(format!(
                    "the new container exited with code {}",
                    state.exit_code
                ));
            }
            Status::Created | Status::Paused => {}
        }
        if *cancel.borrow() {
            return Err("called off: the stack changed".into());
        }
        next_change(&mut events, &mut cancel).await;
    }
}

/// A start-first replacement that never got ready: stopped at once (out of
/// DNS and off its ports, its old container running on), kept for `ps` to
/// show, and reported as an `update-failed` stack event.
async fn fail_replacement(d: &Arc<Daemon>, stack: &str, id: &str, why: &str) {
    let record = d.containers.runtime.record(id).ok();
    let name = record
        .as_ref()
        .map_or_else(|| id.to_string(), |r| r.name.clone());
    if let Err(error) = d.supervisor.stop(id, libc::SIGKILL, Duration::ZERO).await {
        tracing::warn!(%stack, container = %name, error = %crate::error_chain(&error), "stopping a failed replacement");
    }
    tracing::warn!(%stack, container = %name, %why, "start-first update failed: the old container keeps running");
    d.events.emit(super::events::Event::stack(
        "update-failed",
        stack,
        &[("container", name.as_str()), ("error", why)],
    ));
}

/// A subscription to the daemon's events matching `filters` (none when
/// the filters do not parse, which only the fallback then covers).
fn subscribe(d: &Daemon, filters: &[String]) -> Option<super::events::Subscription> {
    let filter = super::events::EventFilter::parse(filters).ok()?;
    d.events.subscribe(filter, None, None).ok()
}

/// Waits for an event of `events`, a call-off or, failing both, the
/// fallback period: whichever comes first.
async fn next_change(
    events: &mut Option<super::events::Subscription>,
    cancel: &mut tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        Some(_) = async {
            match events.as_mut() {
                Some(e) => e.next().await,
                None => std::future::pending().await,
            }
        } => {}
        () = async {
            // A sender gone can never call off: wait for the others.
            if cancel.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        } => {}
        () = tokio::time::sleep(AWAIT_FALLBACK) => {}
    }
}

fn volume_host(resolved: &Resolved, volume: &str) -> String {
    resolved
        .volumes
        .get(volume)
        .cloned()
        .unwrap_or_else(|| desired::volume_name(&resolved.desired.stack, volume))
}

/// The service's fields with its image as observed now.
fn observed_config(
    d: &Daemon,
    service: &crate::reconcile::plan::DesiredService,
) -> Result<Fields, String> {
    let reference = service.image.reference();
    let id = d
        .containers
        .images
        .catalog
        .resolve(reference)
        .map_err(|x| crate::error_chain(&x))?;
    let mut config = service.config.clone();
    config.insert(
        crate::reconcile::plan::IMAGE_FIELD.to_string(),
        id.to_string(),
    );
    Ok(config)
}

/// Changes a container's restart memory and keeps it in its record.
async fn remember(
    d: &Arc<Daemon>,
    id: &str,
    change: impl FnOnce(&mut RestartMemory, SystemTime) + Send + 'static,
) -> Result<(), String> {
    let id = id.to_string();
    blocking(d, move |d| {
        change_record(d, &id, |record| {
            let mut memory = restart_memory(record);
            change(&mut memory, SystemTime::now());
            record.extra.insert(
                "stack.restarts".into(),
                serde_json::to_value(&memory).unwrap_or_default(),
            );
        })
    })
    .await
}

/// A stop by the user holds a stack container (the stack loop leaves it
/// stopped, as Docker leaves an `unless-stopped` container stopped); a
/// start or restart by the user lets it go again. Containers of no stack
/// are left alone.
pub fn hold(d: &Daemon, id: &str, held: bool) -> Result<(), String> {
    let record = d
        .containers
        .runtime
        .record(id)
        .map_err(|x| crate::error_chain(&x))?;
    if !record.labels.contains_key(LABEL_STACK) || restart_memory(&record).held == held {
        return Ok(());
    }
    change_record(d, id, |record| {
        let mut memory = restart_memory(record);
        memory.held = held;
        record.extra.insert(
            "stack.restarts".into(),
            serde_json::to_value(&memory).unwrap_or_default(),
        );
    })
}

/// Reads container `id`'s record, changes it and writes it back.
fn change_record(
    d: &Daemon,
    id: &str,
    change: impl FnOnce(&mut ContainerRecord),
) -> Result<(), String> {
    let runtime = &d.containers.runtime;
    let mut record = runtime.record(id).map_err(|x| crate::error_chain(&x))?;
    change(&mut record);
    // Not flushed: what the loop keeps here (what a container was made
    // from, its restarts) is rebuilt from the file after a host crash, and
    // an fsync per step would be on the path of every create and start.
    runtime
        .write_record_fast(&record)
        .map_err(|x| crate::error_chain(&x))
}

async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|x| format!("a blocking step failed: {x}"))?
}

fn create_network(
    d: &Daemon,
    stack: &str,
    template: &NetworkTemplate,
    hash: &str,
) -> Result<(), String> {
    let spec = &template.spec;
    let mut labels = spec.labels.clone();
    labels.insert(LABEL_STACK.into(), stack.to_string());
    labels.insert(LABEL_NETWORK_HASH.into(), hash.to_string());
    let v4 = |net: Option<crate::spec::model::IpNet>| -> Result<Option<ipnet::Ipv4Net>, String> {
        match net {
            None => Ok(None),
            Some(crate::spec::model::IpNet {
                addr: std::net::IpAddr::V4(addr),
                prefix,
            }) => ipnet::Ipv4Net::new(addr, prefix)
                .map(|n| Some(n.trunc()))
                .map_err(|e| e.to_string()),
            Some(other) => Err(format!(
                "{}/{}: IPv6 subnets are not supported on stack networks yet",
                other.addr, other.prefix
            )),
        }
    };
    // An IPv6 subnet given as `subnet` (a network of IPv6 only in the
    // file) is the IPv6 one.
    let (subnet, subnet6) = match (spec.subnet, spec.subnet6) {
        (Some(s), None) if s.addr.is_ipv6() => (None, Some(s)),
        other => other,
    };
    let (gateway, gateway6) = match (spec.gateway, spec.gateway6) {
        (Some(g), None) if g.is_ipv6() => (None, Some(g)),
        other => other,
    };
    let gateway = match gateway {
        None => None,
        Some(std::net::IpAddr::V4(g)) => Some(g),
        Some(other) => return Err(format!("{other}: the gateway of an IPv4 subnet is IPv4")),
    };
    let subnet6 = match subnet6 {
        None => None,
        Some(crate::spec::model::IpNet {
            addr: std::net::IpAddr::V6(addr),
            prefix,
        }) => Some(
            ipnet::Ipv6Net::new(addr, prefix)
                .map(|n| n.trunc())
                .map_err(|e| e.to_string())?,
        ),
        Some(other) => {
            return Err(format!(
                "{}/{}: subnet6 is an IPv6 subnet",
                other.addr, other.prefix
            ));
        }
    };
    let gateway6 = match gateway6 {
        None => None,
        Some(std::net::IpAddr::V6(g)) => Some(g),
        Some(other) => return Err(format!("{other}: gateway6 is an IPv6 address")),
    };
    let mut options = BTreeMap::new();
    if let Some(bridge) = &spec.bridge {
        options.insert("com.docker.network.bridge.name".to_string(), bridge.clone());
    }
    let request = crate::net::CreateRequest {
        name: template.name.clone(),
        subnet: v4(subnet)?,
        gateway,
        ip_range: v4(spec.ip_range)?,
        internal: spec.internal,
        options,
        labels,
        enable_ipv6: spec.ipv6 || subnet6.is_some(),
        subnet6,
        gateway6,
        ..crate::net::CreateRequest::default()
    };
    d.containers
        .create_network(&request)
        .map(|_| ())
        .map_err(|x| crate::error_chain(&x))
}

/// Where a stack's containers are kept in the record: a helper for tests
/// and `stack ps`.
pub fn stack_of(record: &ContainerRecord) -> Option<(&str, &str, u32)> {
    let stack = record.labels.get(LABEL_STACK)?;
    let service = record.labels.get(LABEL_SERVICE)?;
    let replica = record.labels.get(LABEL_REPLICA)?.parse().ok()?;
    Some((stack, service, replica))
}

/// Keeps `source` in the root, so a daemon restart resumes it.
fn write_registration(root: &std::path::Path, source: &StackSource) -> Result<(), String> {
    let path = registration_path(root, &source.name);
    let json = serde_json::to_vec_pretty(source).map_err(|e| e.to_string())?;
    // An `up` with nothing changed writes nothing (two fsyncs, tens of
    // milliseconds on a busy disk, on the path of a no-op `up`).
    if std::fs::read(&path).is_ok_and(|kept| kept == json) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::image::store::write_atomic(&path, &json)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Why `stack scale` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The daemon keeps no stack of that name.
    #[error("no such stack: {0}")]
    NoStack(String),
    /// The stack has no service of that name.
    #[error("stack {stack} has no service {service}")]
    NoService {
        /// The stack.
        stack: String,
        /// The service asked for.
        service: String,
    },
    /// The stack file does not load now.
    #[error("the stack file does not load:\n{0}")]
    Load(String),
    /// The registration could not be written.
    #[error("cannot keep the new replica counts: {0}")]
    Persist(String),
}

/// The file a registered stack is kept in.
pub fn registration_path(root: &std::path::Path, name: &str) -> PathBuf {
    root.join("stacks").join(format!("{name}.json"))
}

/// Where a stack comes from: its files and what interpolates them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackSource {
    /// The stack's name.
    pub name: String,
    /// The project directory (`.env` and relative paths).
    pub project_dir: PathBuf,
    /// The stack files, merged in order (empty: discovered in the
    /// project directory).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// `--env-file`s for interpolation.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// The environment interpolation reads (the client's, only the
    /// variables the files read: see [`StackSource::trimmed`]).
    #[serde(default)]
    pub environment: Vec<(String, String)>,
    /// `stack scale` overrides of services' replica counts, by service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale: BTreeMap<String, ScaleOverride>,
    /// `stack up`'s flags.
    #[serde(default)]
    pub options: ApplyOptions,
}

/// A replica count set by `stack scale`. It holds while the file's own
/// count for the service stays what it was when scaled: a save that
/// changes the file's `replicas` drops it (the file is the newer word), as
/// does `stack up` (which registers the stack anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleOverride {
    /// The replicas to run.
    pub replicas: u32,
    /// The file's replica count when the override was set.
    pub file_replicas: u32,
}

/// Where `stack up` takes images from (`--pull`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull every image at this apply, even present ones.
    Always,
    /// Pull only images that are not present (the default).
    #[default]
    Missing,
    /// Never pull: a missing image fails its service.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(PullPolicy::Always),
            "missing" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "invalid pull policy {other:?}: always, missing or never"
            )),
        }
    }
}

/// What `stack up` / `stack apply` asks beyond the files. `services`,
/// `no_deps`, `remove_orphans` and `pull never` stay with the stack (the
/// daemon keeps applying them); `force_recreate` and `pull always` are
/// for the apply they come with only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Only these services and (without `no_deps`) their dependencies;
    /// empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// Do not add the dependencies of `services`.
    #[serde(default)]
    pub no_deps: bool,
    /// Remove the containers of services no longer declared.
    #[serde(default = "yes")]
    pub remove_orphans: bool,
    /// Where images come from.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Build the images of services that build, even present ones
    /// (`up --build`, this apply).
    #[serde(default)]
    pub build: bool,
    /// Recreate the selected containers even if unchanged (this apply).
    #[serde(default)]
    pub force_recreate: bool,
}

fn yes() -> bool {
    true
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            services: Vec::new(),
            no_deps: false,
            remove_orphans: true,
            pull: PullPolicy::Missing,
            build: false,
            force_recreate: false,
        }
    }
}

impl ApplyOptions {
    /// The options without their one-apply parts (what is kept).
    pub fn kept(&self) -> ApplyOptions {
        ApplyOptions {
            force_recreate: false,
            build: false,
            pull: match self.pull {
                PullPolicy::Always => PullPolicy::Missing,
                other => other,
            },
            ..self.clone()
        }
    }

    /// The plan's options for `desired`: the selection with its
    /// dependencies, and the one-apply flags when `once`.
    pub fn plan_options(
        &self,
        desired: &crate::reconcile::plan::Desired,
        once: bool,
    ) -> Result<crate::reconcile::plan::PlanOptions, String> {
        Ok(crate::reconcile::plan::PlanOptions {
            services: crate::reconcile::plan::select(desired, &self.services, !self.no_deps)?,
            force_recreate: once && self.force_recreate,
            pull_always: once && self.pull == PullPolicy::Always,
            build_always: once && self.build,
            remove_orphans: self.remove_orphans,
            start_stopped: once,
        })
    }
}

impl StackSource {
    /// Loads and resolves the stack; a file that does not load gives the
    /// rendered problems (file, line and column).
    pub fn load(&self) -> Result<(Resolved, Vec<PathBuf>), String> {
        let (mut resolved, files) = self.load_file()?;
        self.apply_scale(&mut resolved);
        Ok((resolved, files))
    }

    /// Sets the replica counts of the `scale` overrides that still hold
    /// in `resolved` (the file as written); the names of the services
    /// whose override no longer holds (the file's count changed, or the
    /// service is gone).
    pub fn apply_scale(&self, resolved: &mut Resolved) -> Vec<String> {
        let mut stale = Vec::new();
        for (name, o) in &self.scale {
            match resolved.desired.services.get_mut(name) {
                Some(service) if service.replicas == o.file_replicas => {
                    service.replicas = o.replicas;
                }
                _ => stale.push(name.clone()),
            }
        }
        stale
    }

    fn load_spec(&self) -> Result<crate::spec::load::Loaded, String> {
        crate::spec::load::load(&crate::spec::load::LoadOptions {
            files: self.files.clone(),
            project_dir: self.project_dir.clone(),
            env_files: self.env_files.clone(),
            environment: Some(self.environment.clone()),
        })
        .map_err(|e| crate::spec::diag::render(&e, false))
    }

    /// The source with only the environment variables its files read
    /// (interpolation, `env NAME` without a value, `~`): it is kept on
    /// disk, and the rest of a client's environment may hold secrets. It
    /// loads the same. A variable a later edit starts to use is set by the
    /// next `up`.
    pub fn trimmed(mut self) -> Result<StackSource, String> {
        let loaded = self.load_spec()?;
        self.environment
            .retain(|(name, _)| loaded.variables.contains(name));
        Ok(self)
    }

    /// Loads and resolves the stack as its files say, without the `scale`
    /// overrides.
    pub fn load_file(&self) -> Result<(Resolved, Vec<PathBuf>), String> {
        let loaded = self.load_spec()?;
        refuse_empty(&loaded.files)?;
        let resolved =
            desired::resolve(&loaded.spec, &self.name).map_err(|e| crate::error_chain(&e))?;
        let mut watched = loaded.files.clone();
        watched.extend(self.env_files.iter().cloned());
        watched.push(self.project_dir.join(".env"));
        for service in loaded.spec.services.values() {
            watched.extend(service.env_file.iter().map(|f| f.value.clone()));
            for mount in &service.volumes {
                if mount.kind == crate::spec::mount::MountKind::Bind
                    && let Some(source) = &mount.source
                    && std::path::Path::new(source).is_file()
                {
                    watched.push(PathBuf::from(source));
                }
            }
        }
        watched.sort();
        watched.dedup();
        Ok((resolved, watched))
    }
}

/// Refuses stack files that are all empty: such a file is a save caught
/// halfway (truncated, not yet written) far more often than a wish to
/// remove every service, which `stack down` (or deleting a watched file)
/// expresses. Applying it would remove the whole stack.
pub fn refuse_empty(files: &[PathBuf]) -> Result<(), String> {
    let empty = |f: &PathBuf| std::fs::read_to_string(f).is_ok_and(|text| text.trim().is_empty());
    match files.first() {
        Some(first) if files.iter().all(empty) => Err(format!(
            "{} is empty: nothing applied (take the stack down with `stack down`, or delete a watched file)",
            first.display()
        )),
        _ => Ok(()),
    }
}

/// What `stack ls` and `stack status` show of a stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StackStatus {
    /// The stack's name.
    pub name: String,
    /// Where it comes from.
    pub project_dir: PathBuf,
    /// How many versions of the file were applied.
    pub generation: u64,
    /// When the last apply ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_apply: Option<String>,
    /// Why the file (or the last apply) failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What the last apply did.
    #[serde(default)]
    pub report: Report,
    /// When a backoff ends next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_wake: Option<String>,
    /// Whether the stack is converged (the last plan was empty).
    #[serde(default)]
    pub converged: bool,
    /// The containers waiting out a restart backoff: name to when the
    /// next start is tried (RFC 3339).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub next_tries: BTreeMap<String, String>,
    /// The replica counts `stack scale` set, by service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale: BTreeMap<String, u32>,
    /// The file or subdirectory of the daemon's watch directory the stack
    /// comes from (`stack daemon --watch-dir`); `None` for `stack up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_path: Option<PathBuf>,
    /// When the stack goes down because its file left the watch directory
    /// (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_at: Option<String>,
    /// The containers the restart engine gave up on (failed: not started
    /// again until the stack is applied with a change to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_up: Vec<String>,
}

/// The daemon's stacks: each registered one has a loop that keeps it
/// converged.
#[derive(Debug, Default)]
pub struct Registry {
    stacks: std::sync::Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    source: Arc<std::sync::Mutex<StackSource>>,
    status: Arc<std::sync::Mutex<StackStatus>>,
    kick: Arc<tokio::sync::Notify>,
    applied: tokio::sync::watch::Receiver<u64>,
    once: Arc<std::sync::Mutex<Once>>,
    task: tokio::task::JoinHandle<()>,
}

/// The options of an explicit `up` (its one-apply flags included) waiting
/// for the loop's next round, the round that took the last ones, and the
/// status at the end of the first round that finished after it (what the
/// `up` answers: a later round may have overwritten the report since).
#[derive(Debug, Default)]
struct Once {
    pending: Option<ApplyOptions>,
    taken_at: u64,
    served: Option<(u64, StackStatus)>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a stack is looked at without any event (someone removed a
/// container or a network by hand).
const RESYNC: Duration = Duration::from_secs(10);
/// Quiet time after a file change before it is applied, on top of the
/// watcher's own ([`WATCH_DEBOUNCE`]): about 100 ms in all, as the issue
/// allows (an edit must answer within 300 ms of the save).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long the file watcher holds events for a path that keeps changing.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(50);
/// Rounds of plan and execute per wake-up: steps that change what the
/// plan sees (a pull, a network recreated) need a second look.
const ROUNDS: usize = 4;
/// How often `stack up --wait` looks at the stack.
const WAIT_POLL: Duration = Duration::from_millis(100);

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.stacks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers (or replaces) stack `source`, keeps it in the root so a
    /// daemon restart resumes it, starts its loop and waits for the apply
    /// that takes its options (`stack up`'s flags). A file that does not
    /// load is refused and nothing changes.
    pub async fn up(d: &Arc<Daemon>, source: StackSource) -> Result<StackStatus, String> {
        let source = source.trimmed()?;
        let (resolved, _) = source.load()?;
        let once = source.options.clone();
        once.plan_options(&resolved.desired, true)?;
        let name = source.name.clone();
        let (slot, mut applied) = Registry::register_with(d, source, Some(once))?;
        let went_away = || format!("stack {name} went away");
        // Answered with the round that took these options, once it is over.
        loop {
            {
                let slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if slot.pending.is_none()
                    && let Some((done, status)) = &slot.served
                    && *done >= slot.taken_at
                {
                    return Ok(status.clone());
                }
            }
            if applied.changed().await.is_err() {
                return Err(went_away());
            }
        }
    }

    /// Registers (or replaces) stack `source` and keeps it in the root, as
    /// [`Registry::up`] does, without loading it first or waiting: a
    /// running loop takes the new source and applies it at once, else a
    /// loop starts. The receiver changes when a round is over.
    pub fn register(
        d: &Arc<Daemon>,
        source: StackSource,
    ) -> Result<tokio::sync::watch::Receiver<u64>, String> {
        Registry::register_with(d, source, None).map(|(_, applied)| applied)
    }

    /// [`Registry::register`], with `once` (the options of an explicit
    /// `up`) for the loop's next round; also returns the stack's slot of
    /// those options.
    fn register_with(
        d: &Arc<Daemon>,
        mut source: StackSource,
        once: Option<ApplyOptions>,
    ) -> Result<
        (
            Arc<std::sync::Mutex<Once>>,
            tokio::sync::watch::Receiver<u64>,
        ),
        String,
    > {
        if let Some(once) = &once {
            source.options = once.kept();
        }
        write_registration(&d.root, &source)?;
        // One loop per stack: a running one takes the new source and
        // applies it.
        let running = {
            let stacks = d.stacks.lock();
            stacks.get(&source.name).map(|entry| {
                *entry
                    .source
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = source.clone();
                (
                    entry.once.clone(),
                    entry.kick.clone(),
                    entry.applied.clone(),
                )
            })
        };
        match running {
            None => {
                let applied = d.stacks.start(d, source.clone(), once);
                let slot = d
                    .stacks
                    .lock()
                    .get(&source.name)
                    .map(|e| e.once.clone())
                    .ok_or_else(|| format!("stack {} went away", source.name))?;
                Ok((slot, applied))
            }
            Some((slot, kick, mut applied)) => {
                if once.is_some() {
                    let mut slot = slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.pending = once;
                    slot.served = None;
                }
                applied.mark_unchanged();
                kick.notify_one();
                Ok((slot, applied))
            }
        }
    }

    /// Starts the loop of a stack; `once` are the options of an explicit
    /// `up` for its first round.
    fn start(
        &self,
        d: &Arc<Daemon>,
        source: StackSource,
        once: Option<ApplyOptions>,
    ) -> tokio::sync::watch::Receiver<u64> {
        let status = Arc::new(std::sync::Mutex::new(StackStatus {
            name: source.name.clone(),
            project_dir: source.project_dir.clone(),
            ..StackStatus::default()
        }));
        let kick = Arc::new(tokio::sync::Notify::new());
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(std::sync::Mutex::new(source.clone()));
        let once = Arc::new(std::sync::Mutex::new(Once {
            pending: once,
            taken_at: 0,
            served: None,
        }));
        let task = tokio::spawn(run_loop(
            d.clone(),
            shared.clone(),
            status.clone(),
            kick.clone(),
            once.clone(),
            tx,
        ));
        let entry = Entry {
            source: shared,
            status,
            kick,
            applied: rx.clone(),
            once,
            task,
        };
        self.lock().insert(source.name.clone(), entry);
        rx
    }

    /// Resumes the stacks kept in the root (at daemon start).
    pub fn restore(&self, d: &Arc<Daemon>) {
        let dir = d.root.join("stacks");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<StackSource>(&b).map_err(|e| e.to_string()))
            {
                Ok(source) => {
                    tracing::info!(stack = %source.name, "resuming stack");
                    // Registrations from before sources were trimmed kept
                    // the whole environment: keep only what is read.
                    let source = match source.clone().trimmed() {
                        Ok(trimmed) if trimmed != source => {
                            if let Err(e) = write_registration(&d.root, &trimmed) {
                                tracing::warn!(stack = %source.name, error = %e, "cannot rewrite the stack registration");
                            }
                            trimmed
                        }
                        _ => source,
                    };
                    self.start(d, source, None);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable stack registration")
                }
            }
        }
    }

    /// Applies a registered stack now and waits for it.
    pub async fn kick(&self, name: &str) -> Option<StackStatus> {
        let (kick, mut applied) = {
            let stacks = self.lock();
            let entry = stacks.get(name)?;
            (entry.kick.clone(), entry.applied.clone())
        };
        applied.mark_unchanged();
        kick.notify_one();
        let _ = applied.changed().await;
        self.status(name)
    }

    /// `stack scale`: runs `wanted` replicas of those services of stack
    /// `name` from now on (see [`ScaleOverride`] for how long), keeps that
    /// in its registration, applies the stack and waits for it. Every
    /// service must exist, or nothing changes. A count equal to the file's
    /// drops the override.
    pub async fn scale(
        d: &Arc<Daemon>,
        name: &str,
        wanted: &BTreeMap<String, u32>,
    ) -> Result<StackStatus, ScaleError> {
        let shared = d
            .stacks
            .lock()
            .get(name)
            .map(|e| e.source.clone())
            .ok_or_else(|| ScaleError::NoStack(name.to_string()))?;
        let current = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (resolved, _) = current.load_file().map_err(ScaleError::Load)?;
        let mut next = current.clone();
        for (service, &replicas) in wanted {
            let Some(s) = resolved.desired.services.get(service) else {
                return Err(ScaleError::NoService {
                    stack: name.to_string(),
                    service: service.clone(),
                });
            };
            if replicas == s.replicas {
                next.scale.remove(service);
            } else {
                next.scale.insert(
                    service.clone(),
                    ScaleOverride {
                        replicas,
                        file_replicas: s.replicas,
                    },
                );
            }
        }
        {
            let mut source = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Only over the source it was computed from (an `up` in
            // between wins).
            if *source == current {
                write_registration(&d.root, &next).map_err(ScaleError::Persist)?;
                *source = next;
            }
        }
        d.stacks
            .kick(name)
            .await
            .ok_or_else(|| ScaleError::NoStack(name.to_string()))
    }

    /// The status of stack `name`.
    pub fn status(&self, name: &str) -> Option<StackStatus> {
        let stacks = self.lock();
        let entry = stacks.get(name)?;
        let status = entry
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Some(status)
    }

    /// Every registered stack's status, by name.
    pub fn list(&self) -> Vec<StackStatus> {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        names.iter().filter_map(|n| self.status(n)).collect()
    }

    /// The source of stack `name`.
    pub fn source(&self, name: &str) -> Option<StackSource> {
        self.lock().get(name).map(|e| {
            e.source
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    /// Takes stack `name` down: its loop stops, its registration goes, its
    /// containers and networks are removed (and volumes with `volumes`).
    /// Works from the labels alone, so a stack whose file is gone or
    /// broken still comes down.
    pub async fn down(d: &Arc<Daemon>, name: &str, volumes: bool) -> Result<Report, String> {
        let source = d.stacks.forget(d, name).await?;
        let resolved = Arc::new(resolved_or_labels(name, source.as_ref()));
        let observed = observe_now(d, &resolved).await?;
        let plan = crate::reconcile::plan::plan_down(&resolved.desired, &observed, volumes);
        let (_keep, never) = tokio::sync::watch::channel(false);
        Ok(execute(d, &resolved, &plan, &never).await)
    }

    /// The daemon stops keeping stack `name`: its loop ends and its
    /// registration goes (so a restarted daemon does not resume it). Its
    /// source, if it was registered.
    async fn forget(&self, d: &Arc<Daemon>, name: &str) -> Result<Option<StackSource>, String> {
        let source = self.source(name);
        let entry = self.lock().remove(name);
        if let Some(mut entry) = entry {
            // Its loop ends before anything is taken down.
            entry.task.abort();
            let _ = (&mut entry.task).await;
        }
        let path = registration_path(&d.root, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(source),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(source),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// The end of a foreground `stack up` (Ctrl-C): the daemon stops
    /// keeping stack `name` and stops its running containers, dependents
    /// first, each with its stop signal and grace period. The containers,
    /// networks and volumes stay (as with Compose); `stack up` starts them
    /// again.
    pub async fn stop(d: &Arc<Daemon>, name: &str) -> Result<Report, String> {
        let source = d.stacks.forget(d, name).await?;
        let resolved = Arc::new(resolved_or_labels(name, source.as_ref()));
        let observed = observe_now(d, &resolved).await?;
        let plan = crate::reconcile::plan::plan_stop(&resolved.desired, &observed);
        let (_keep, never) = tokio::sync::watch::channel(false);
        Ok(execute(d, &resolved, &plan, &never).await)
    }

    /// A second Ctrl-C: the daemon stops keeping stack `name` and kills
    /// its running containers at once (SIGKILL), without waiting for a
    /// stop in progress.
    pub async fn kill(d: &Arc<Daemon>, name: &str) -> Result<Report, String> {
        d.stacks.forget(d, name).await?;
        let resolved = Arc::new(resolved_or_labels(name, None));
        let observed = observe_now(d, &resolved).await?;
        let mut report = Report::default();
        for c in &observed.containers {
            if !matches!(c.state, State::Running { .. } | State::Paused) {
                continue;
            }
            let result = async {
                remember(d, &c.id, |m, _| m.held = true).await?;
                let record = d
                    .containers
                    .runtime
                    .record(&c.id)
                    .map_err(|x| crate::error_chain(&x))?;
                // Not through the supervisor's lock: a stop may hold it
                // for its whole grace period.
                let id = c.id.clone();
                blocking(d, move |d| {
                    d.containers
                        .runtime
                        .kill(&id, libc::SIGKILL)
                        .map_err(|x| crate::error_chain(&x))
                })
                .await?;
                d.events.emit(
                    super::events::Event::container("kill", &record)
                        .with_attribute("signal", libc::SIGKILL.to_string()),
                );
                Ok::<(), String>(())
            };
            match result.await {
                Ok(()) => report.done.push(format!("kill {}", c.name)),
                Err(e) => report.failed.push(format!("kill {}: {e}", c.name)),
            }
        }
        Ok(report)
    }

    /// Waits until the selected services of stack `name` run (healthy
    /// where they have a check), for at most `timeout` (none: as long as
    /// it takes). `Ok(None)` when they do, `Ok(Some(why))` when they
    /// cannot or the time ran out.
    pub async fn wait(
        d: &Arc<Daemon>,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<String>, String> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let source = d
                .stacks
                .source(name)
                .ok_or_else(|| format!("no such stack: {name}"))?;
            let (resolved, _) = source.load()?;
            let selected = crate::reconcile::plan::select(
                &resolved.desired,
                &source.options.services,
                !source.options.no_deps,
            )?;
            let resolved = Arc::new(resolved);
            let observed = observe_now(d, &resolved).await?;
            let waiting =
                match crate::reconcile::plan::readiness(&resolved.desired, &observed, &selected) {
                    crate::reconcile::plan::Readiness::Ready => return Ok(None),
                    crate::reconcile::plan::Readiness::Failed(why) => return Ok(Some(why)),
                    crate::reconcile::plan::Readiness::Waiting(what) => what,
                };
            if deadline.is_some_and(|t| tokio::time::Instant::now() >= t) {
                let mut why = format!(
                    "timed out after {}s waiting for the stack: {}",
                    timeout.map_or(0, |t| t.as_secs()),
                    waiting.join("; ")
                );
                if let Some(e) = d.stacks.status(name).and_then(|s| s.last_error) {
                    why.push_str(&format!("\nlast error: {e}"));
                }
                return Ok(Some(why));
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// What the next apply of `source` would do, and why.
    pub async fn plan(d: &Arc<Daemon>, source: &StackSource) -> Result<Vec<String>, String> {
        let (resolved, _) = source.load()?;
        let resolved = Arc::new(resolved);
        let d = d.clone();
        let observed = {
            let resolved = resolved.clone();
            tokio::task::spawn_blocking(move || observe(&d, &resolved))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        let options = source.options.plan_options(&resolved.desired, false)?;
        let plan = crate::reconcile::plan::plan_with(
            &resolved.desired,
            &observed,
            SystemTime::now(),
            &options,
        );
        Ok(plan.steps.iter().map(|s| s.why.clone()).collect())
    }
}

/// Stack `name` as its source resolves, or (no source, or one that does
/// not load) as its labels alone find it.
fn resolved_or_labels(name: &str, source: Option<&StackSource>) -> Resolved {
    match source.map(StackSource::load) {
        Some(Ok((resolved, _))) => resolved,
        _ => Resolved {
            desired: crate::reconcile::plan::Desired {
                stack: name.to_string(),
                ..Default::default()
            },
            ..Resolved::default()
        },
    }
}

/// [`observe`] on the blocking pool.
async fn observe_now(d: &Arc<Daemon>, resolved: &Arc<Resolved>) -> Result<Observed, String> {
    let d = d.clone();
    let resolved = resolved.clone();
    tokio::task::spawn_blocking(move || observe(&d, &resolved))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Keeps one stack converged: on every file change, container event of
/// the stack, backoff timer, kick or resync, it loads the file (keeping
/// the last good version when the new one is invalid), observes, plans and
/// executes, until the plan is empty or a step fails.
async fn run_loop(
    d: Arc<Daemon>,
    shared: Arc<std::sync::Mutex<StackSource>>,
    status: Arc<std::sync::Mutex<StackStatus>>,
    kick: Arc<tokio::sync::Notify>,
    once_slot: Arc<std::sync::Mutex<Once>>,
    applied: tokio::sync::watch::Sender<u64>,
) {
    let source = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let (files_tx, mut files_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher: Option<
        notify_debouncer_full::Debouncer<
            notify::RecommendedWatcher,
            notify_debouncer_full::RecommendedCache,
        >,
    > = None;
    let mut watched: Vec<PathBuf> = Vec::new();
    let mut watched_real: Vec<PathBuf> = Vec::new();
    let filter = super::events::EventFilter::parse(&[
        "type=container".to_string(),
        format!("label={LABEL_STACK}={}", source.name),
    ])
    .ok();
    let mut events = filter.and_then(|f| d.events.subscribe(f, None, None).ok());
    let mut current: Option<Arc<Resolved>> = None;
    let mut last_files: Option<Fields> = None;
    let mut round: u64 = 0;
    // What the rounds since an explicit `up` took its options did, for
    // its answer.
    let mut once_report: Option<Report> = None;
    loop {
        round += 1;
        let set = |f: &dyn Fn(&mut StackStatus)| {
            let mut s = status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut s);
        };
        let source = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // An explicit `up`'s options, for the first plan of this round.
        let mut once = {
            let mut slot = once_slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let once = slot.pending.take();
            if once.is_some() {
                slot.taken_at = round;
            }
            once
        };
        if once.is_some() {
            // The kick that came with these options may still be stored
            // (a container event started this round): it must not call
            // off the round that applies them.
            use futures::FutureExt;
            let _ = kick.notified().now_or_never();
            once_report = Some(Report::default());
        }
        let loaded = source.load_file().map(|(mut resolved, files)| {
            let stale = source.apply_scale(&mut resolved);
            if !stale.is_empty() {
                drop_scale(&d.root, &shared, &source, &stale);
            }
            let scale: BTreeMap<String, u32> = source
                .scale
                .iter()
                .filter(|(service, _)| !stale.contains(service))
                .map(|(service, o)| (service.clone(), o.replicas))
                .collect();
            set(&|s| s.scale = scale.clone());
            (resolved, files)
        });
        match loaded {
            Ok((resolved, files)) => {
                let fingerprint: Fields = resolved
                    .desired
                    .services
                    .iter()
                    .map(|(k, v)| {
                        // JSON of sorted maps: stable across builds, unlike
                        // `Debug` text.
                        let text = serde_json::to_string(&(&v.config, &v.live)).unwrap_or_default();
                        (k.clone(), text)
                    })
                    .collect();
                if last_files.as_ref() != Some(&fingerprint) {
                    set(&|s| s.generation += 1);
                    last_files = Some(fingerprint);
                }
                set(&|s| s.last_error = None);
                current = Some(Arc::new(resolved));
                // A directory swapped by a rename (a symlink pointed
                // elsewhere) keeps its path: the watch follows the target.
                let real = real_dirs(&files);
                if files != watched || real != watched_real {
                    watched = files;
                    watched_real = real;
                    watcher = watch(&watched, files_tx.clone());
                }
            }
            Err(problem) => {
                tracing::warn!(stack = %source.name, "stack file not applied:\n{problem}");
                let known = status
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .last_error
                    .as_ref()
                    == Some(&problem);
                if !known {
                    d.events.emit(super::events::Event::stack(
                        "invalid",
                        &source.name,
                        &[("error", problem.as_str())],
                    ));
                }
                set(&|s| s.last_error = Some(problem.clone()));
                if watcher.is_none() {
                    watched = vec![source.project_dir.clone()];
                    watcher = watch(&watched, files_tx.clone());
                }
            }
        }
        let mut wake = None;
        // Set when a kick or a save came during an execution: the next
        // round starts at once.
        let mut again = false;
        if let Some(resolved) = &current {
            let mut last = Report::default();
            let mut converged = false;
            let mut given_up = Vec::new();
            let mut held_updates = Vec::new();
            for _ in 0..ROUNDS {
                let observed = {
                    let d = d.clone();
                    let resolved = resolved.clone();
                    match tokio::task::spawn_blocking(move || observe(&d, &resolved)).await {
                        Ok(Ok(o)) => o,
                        Ok(Err(e)) => {
                            set(&|s| s.last_error = Some(e.to_string()));
                            break;
                        }
                        Err(e) => {
                            set(&|s| s.last_error = Some(e.to_string()));
                            break;
                        }
                    }
                };
                given_up = observed
                    .containers
                    .iter()
                    .filter(|c| c.given_up)
                    .map(|c| c.name.clone())
                    .collect();
                held_updates = crate::reconcile::plan::failed_updates(&resolved.desired, &observed);
                let this = once.take();
                let options = this.as_ref().unwrap_or(&source.options);
                let plan_options = match options.plan_options(&resolved.desired, this.is_some()) {
                    Ok(o) => o,
                    Err(e) => {
                        set(&|s| s.last_error = Some(e.clone()));
                        break;
                    }
                };
                let plan = crate::reconcile::plan::plan_with(
                    &resolved.desired,
                    &observed,
                    SystemTime::now(),
                    &plan_options,
                );
                wake = plan.wake_at;
                let tries = next_tries(resolved, &observed);
                set(&|s| s.next_tries = tries.clone());
                if plan.is_empty() {
                    converged = true;
                    break;
                }
                // A kick or a saved file calls off the waits of this
                // execution, so the new version applies at once.
                let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
                let run = execute_with(&d, resolved, &plan, &cancel_rx, options.pull);
                tokio::pin!(run);
                last = loop {
                    tokio::select! {
                        report = &mut run => break report,
                        _ = kick.notified(), if !again => {
                            let _ = cancel_tx.send(true);
                            again = true;
                        }
                        Some(()) = files_rx.recv(), if !again => {
                            let _ = cancel_tx.send(true);
                            again = true;
                        }
                    }
                };
                if let Some(r) = once_report.as_mut() {
                    r.done.extend(last.done.iter().cloned());
                    r.failed.extend(last.failed.iter().cloned());
                    r.skipped.extend(last.skipped.iter().cloned());
                }
                if again {
                    break;
                }
                if !last.ok() {
                    break;
                }
            }
            let now = crate::runtime::now_rfc3339();
            let failed = (!last.ok()).then(|| last.failed.join("\n"));
            set(&|s| {
                s.last_apply = Some(now.clone());
                s.report = last.clone();
                s.converged = converged;
                s.given_up = given_up.clone();
                s.next_wake = wake.map(|w| {
                    crate::image::images::rfc3339(
                        w.duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                    )
                });
                if let Some(f) = &failed
                    && s.last_error.is_none()
                {
                    s.last_error = Some(f.clone());
                }
                // A failed start-first update holds until the service
                // changes again: said for as long as it holds.
                if s.last_error.is_none() && !held_updates.is_empty() {
                    let held: Vec<String> = held_updates
                        .iter()
                        .map(|(new, old)| {
                            format!("update failed: {new} never got ready, {old} keeps running")
                        })
                        .collect();
                    s.last_error = Some(held.join("\n"));
                }
            });
        }
        if again {
            // The waiter of the kick is told by the round that follows.
            continue;
        }
        {
            let mut slot = once_slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(report) = once_report.take() {
                let mut now = status
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                now.report = report;
                slot.served = Some((round, now));
            }
        }
        let _ = applied.send(round);
        let sleep = wake
            .and_then(|w| w.duration_since(SystemTime::now()).ok())
            .unwrap_or(RESYNC)
            .min(RESYNC);
        tokio::select! {
            _ = kick.notified() => {}
            Some(()) = files_rx.recv() => {
                // Let a burst of saves settle.
                tokio::time::sleep(DEBOUNCE).await;
                while files_rx.try_recv().is_ok() {}
            }
            Some(_) = async {
                match events.as_mut() {
                    Some(e) => e.next().await,
                    None => std::future::pending().await,
                }
            } => {
                // A burst of container events is one look.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The containers in a restart backoff and when each is tried next.
fn next_tries(resolved: &Resolved, observed: &Observed) -> BTreeMap<String, String> {
    observed
        .containers
        .iter()
        .filter_map(|c| {
            let service = resolved.desired.services.get(&c.service)?;
            let due = crate::reconcile::plan::next_restart(service, c)?;
            Some((c.name.clone(), crate::runtime::logs::rfc3339_nanos(due)))
        })
        .collect()
}

/// Drops the `scale` overrides of `services` from the stack's source (the
/// file's own count changed) and keeps that in its registration, unless
/// the source changed since `seen`.
fn drop_scale(
    root: &std::path::Path,
    shared: &std::sync::Mutex<StackSource>,
    seen: &StackSource,
    services: &[String],
) {
    let mut source = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *source != *seen {
        return;
    }
    let mut next = source.clone();
    for service in services {
        next.scale.remove(service);
    }
    tracing::info!(stack = %next.name, services = ?services, "the file changed the replica count: scale override dropped");
    match write_registration(root, &next) {
        Ok(()) => *source = next,
        Err(e) => {
            tracing::warn!(stack = %next.name, error = %e, "cannot keep the stack's registration")
        }
    }
}

/// The directories of `files` with every symlink resolved.
fn real_dirs(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| {
            let dir = if f.is_dir() { f.as_path() } else { f.parent()? };
            std::fs::canonicalize(dir).ok()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Watches the directories of `files` (editors and git replace files by
/// renaming, so the directory is what to watch) and sends on `tx` when
/// one of `files` changes.
/// Whether a file event is a change: not a read (inotify reports opens
/// and closes without a write too, and the loop's own reading of the
/// files must not wake it again, round after round, nor call off the
/// waits of an execution).
pub(crate) fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

fn watch(
    files: &[PathBuf],
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<
    notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
> {
    let wanted: std::collections::BTreeSet<PathBuf> = files.iter().cloned().collect();
    let dirs: std::collections::BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| {
            if f.is_dir() {
                Some(f.clone())
            } else {
                f.parent().map(std::path::Path::to_path_buf)
            }
        })
        .collect();
    let any_dir = files.iter().any(|f| f.is_dir());
    let mut debouncer = notify_debouncer_full::new_debouncer(
        WATCH_DEBOUNCE,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let Ok(events) = result else {
                return;
            };
            let relevant = events.iter().any(|e| {
                is_change(&e.kind) && (any_dir || e.paths.iter().any(|p| wanted.contains(p)))
            });
            if relevant {
                let _ = tx.send(());
            }
        },
    )
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the stack files"))
    .ok()?;
    for dir in &dirs {
        if let Err(e) = debouncer.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch");
        }
    }
    Some(debouncer)
}
