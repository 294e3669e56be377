//! The heart of the stack loop: [`plan`] compares what a stack file asks
//! for ([`Desired`]) with what runs ([`Observed`]) and says what to do
//! ([`Plan`]), and why.
//!
//! `plan` is pure: no I/O, no clock (the time is an argument), and the same
//! inputs always give the same steps in the same order. Everything the
//! decision depends on is in its inputs, so it is tested with tables and
//! with a property test against an in-memory host (applying a plan and
//! planning again gives an empty plan).
//!
//! A plan is a graph: each [`Step`] names the earlier steps it must wait
//! for ([`Step::after`]), so the executor runs independent steps in
//! parallel and dependent ones in order. Starting a container that depends
//! on another service waits for an [`Action::Await`] step that holds until
//! the dependency is started, healthy or completed: dependencies order
//! every start, the first one and every restart after a crash.
//!
//! Containers carry their service's configuration as [`Fields`] (name →
//! canonical value). A difference in [`DesiredService::config`] recreates
//! the container and the plan names the fields that changed; a difference
//! in [`DesiredService::live`] (limits, the restart policy) is applied to
//! the running container in place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::spec::model::{Condition, OnUnhealthy};
use crate::spec::restart::RestartPolicyName;

/// A service's configuration as named canonical values: what the plan
/// compares and what it names when something changed.
pub type Fields = BTreeMap<String, String>;

/// The field that carries the resolved image of a container.
pub const IMAGE_FIELD: &str = "image";

/// What a stack file asks for, resolved for planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// The stack's name: container names are `<stack>-<service>-<replica>`.
    pub stack: String,
    /// Services by name.
    pub services: BTreeMap<String, DesiredService>,
    /// Networks the stack owns, by name, with a hash of their settings.
    pub networks: BTreeMap<String, String>,
    /// Named volumes the stack owns.
    pub volumes: BTreeSet<String>,
}

/// One service as the plan sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredService {
    /// How many containers run it.
    pub replicas: u32,
    /// Where its image comes from.
    pub image: ImageSource,
    /// Everything that shapes its containers and needs a new container to
    /// change (the resolved image is added by the plan from
    /// [`Observed::images`]).
    pub config: Fields,
    /// What can change on a running container (resource limits, the
    /// restart policy).
    pub live: Fields,
    /// Services that must reach a condition before its containers start.
    pub depends_on: Vec<Dependency>,
    /// Stack networks its containers join.
    pub networks: Vec<String>,
    /// Stack volumes its containers mount.
    pub volumes: Vec<String>,
    /// What happens when a container exits.
    pub restart: Restart,
    /// Whether it has a health check, and what an unhealthy container gets.
    pub health: Option<OnUnhealthy>,
    /// How a container is replaced.
    pub update: UpdateOrder,
}

/// Where a service's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Pulled from a registry (or already present) under this reference.
    Pull(String),
    /// Built from a context; `tag` names the result, `context` is the hash
    /// of the context and build settings.
    Build {
        /// The image's name once built.
        tag: String,
        /// The hash of everything the build reads.
        context: String,
        /// How to build it.
        how: BuildHow,
    },
}

impl Default for ImageSource {
    fn default() -> Self {
        Self::Pull(String::new())
    }
}

/// What a service's build is asked (its `build` section, resolved).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildHow {
    /// The context directory (absolute).
    pub dir: std::path::PathBuf,
    /// The Dockerfile, relative to the context.
    pub dockerfile: Option<std::path::PathBuf>,
    /// Build args.
    pub args: BTreeMap<String, String>,
    /// The stage to build.
    pub target: Option<String>,
    /// Ignore the layer cache.
    pub no_cache: bool,
}

impl ImageSource {
    /// The reference containers are created from.
    pub fn reference(&self) -> &str {
        match self {
            Self::Pull(reference) => reference,
            Self::Build { tag, .. } => tag,
        }
    }
}

/// One `depends-on` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service depended on.
    pub service: String,
    /// What it must reach.
    pub condition: Condition,
    /// A restart of the dependency restarts this service.
    pub restart_dependents: bool,
}

/// The restart policy engine's settings for one service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restart {
    /// When a container that exited is started again.
    pub policy: RestartPolicyName,
    /// With on-failure: restarts before giving up.
    pub max_retries: Option<u32>,
    /// The delay before a restart.
    pub backoff: Backoff,
    /// More than `.0` starts within `.1` gives up.
    pub start_limit: Option<(u32, Duration)>,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicyName::No,
            max_retries: None,
            backoff: Backoff::default(),
            start_limit: None,
        }
    }
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per consecutive failure.
    pub factor: f64,
    /// A run at least this long forgets earlier failures.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
            factor: 2.0,
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The consecutive failures that still count once a run from
    /// `started` to `finished` ended, with `failures` before it: a run
    /// that lasted `reset_after` forgets them.
    pub fn failures_after_run(
        &self,
        failures: u32,
        started: SystemTime,
        finished: SystemTime,
    ) -> u32 {
        let ran = finished.duration_since(started).unwrap_or_default();
        if ran >= self.reset_after { 0 } else { failures }
    }

    /// The delay before the restart that follows `failures` consecutive
    /// failed runs (the first restart waits `min`).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64);
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let secs = self.min.as_secs_f64() * factor.powi(exponent as i32);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).max(self.min)
        }
    }
}

/// How a container is replaced when its service changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one (the default).
    #[default]
    StopFirst,
    /// Start the new container, wait for it, then stop the old one.
    StartFirst,
}

/// What runs: the stack's containers, networks and volumes, and the images
/// present.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Image references present, with the image id each resolves to.
    pub images: BTreeMap<String, String>,
    /// The stack's networks present, with the hash they were created with.
    pub networks: BTreeMap<String, String>,
    /// The stack's volumes present.
    pub volumes: BTreeSet<String>,
    /// The stack's containers.
    pub containers: Vec<ObservedContainer>,
}

/// One container of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The service it runs (its label).
    pub service: String,
    /// Its replica number, from 1.
    pub replica: u32,
    /// The configuration it was created with (image included).
    pub config: Fields,
    /// Its live settings now.
    pub live: Fields,
    /// Where it is in its life.
    pub state: State,
    /// Its health, when its service has a check.
    pub health: Health,
    /// Failed runs since the last run that lasted `reset_after`.
    pub failures: u32,
    /// When it was started recently (for the start limit), oldest first.
    pub starts: Vec<SystemTime>,
    /// The restart engine gave up on it.
    pub given_up: bool,
    /// Stopped by the user: not started again until asked.
    pub held: bool,
}

/// A container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    /// Running since `started`.
    Running {
        /// When it started.
        started: SystemTime,
    },
    /// Frozen.
    Paused,
    /// Its process ended.
    Exited {
        /// The exit code.
        code: i64,
        /// When it started.
        started: SystemTime,
        /// When it ended.
        finished: SystemTime,
    },
}

/// A container's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// No check, or not known.
    #[default]
    None,
    /// Checked, not yet passed.
    Starting,
    /// The check passes.
    Healthy,
    /// The check failed `retries` times in a row.
    Unhealthy,
}

/// Which container a step acts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// One that exists, by id.
    Existing(String),
    /// The one an earlier [`Action::Create`] step of this plan makes.
    Created(usize),
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Pull or build a service's image.
    EnsureImage {
        /// The service.
        service: String,
        /// Where from.
        image: ImageSource,
    },
    /// Create a network of the stack.
    CreateNetwork {
        /// Its name in the stack.
        network: String,
    },
    /// Remove a network of the stack.
    RemoveNetwork {
        /// Its name in the stack.
        network: String,
    },
    /// Create a named volume of the stack.
    CreateVolume {
        /// Its name in the stack.
        volume: String,
    },
    /// Remove a named volume of the stack (only `down -v` does).
    RemoveVolume {
        /// Its name in the stack.
        volume: String,
    },
    /// Create a container of a service.
    Create {
        /// The service.
        service: String,
        /// Its replica number.
        replica: u32,
        /// The container's name.
        name: String,
    },
    /// Start a container.
    Start {
        /// The service.
        service: String,
        /// The container.
        target: Target,
    },
    /// Stop a running container.
    Stop {
        /// Its id.
        id: String,
    },
    /// Remove a container (stopped, or by a step before this one).
    Remove {
        /// Its id.
        id: String,
    },
    /// Give a container another name (after a start-first replacement).
    Rename {
        /// The container.
        target: Target,
        /// The new name.
        name: String,
    },
    /// Change a running container's live settings.
    Update {
        /// Its id.
        id: String,
        /// The settings it gets.
        live: Fields,
    },
    /// Hold until every container of `service` reaches `condition`.
    Await {
        /// The service waited for.
        service: String,
        /// What it must reach.
        condition: Condition,
    },
    /// Hold until one container of this plan runs (and passes its health
    /// check, when `healthy`).
    AwaitReady {
        /// The container.
        target: Target,
        /// Wait for its health check too.
        healthy: bool,
    },
    /// Stop restarting a container, and say so.
    GiveUp {
        /// Its id.
        id: String,
    },
}

/// An action with what it waits for and why it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Indexes of the steps that must finish first (all smaller than this
    /// step's own index).
    pub after: Vec<usize>,
    /// Why, for `stack plan` and the event stream.
    pub why: String,
}

/// What to do now, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The steps, in an order that satisfies every [`Step::after`].
    pub steps: Vec<Step>,
    /// The earliest time a backoff ends: plan again then.
    pub wake_at: Option<SystemTime>,
    /// The last step acting on each container, so the next one waits for
    /// it: two steps never act on one container at once.
    last: BTreeMap<Target, usize>,
}

impl Action {
    /// The container this action acts on, if any.
    pub fn container(&self) -> Option<Target> {
        match self {
            Action::Start { target, .. }
            | Action::Rename { target, .. }
            | Action::AwaitReady { target, .. } => Some(target.clone()),
            Action::Stop { id }
            | Action::Remove { id }
            | Action::Update { id, .. }
            | Action::GiveUp { id } => Some(Target::Existing(id.clone())),
            Action::EnsureImage { .. }
            | Action::CreateNetwork { .. }
            | Action::RemoveNetwork { .. }
            | Action::CreateVolume { .. }
            | Action::RemoveVolume { .. }
            | Action::Create { .. }
            | Action::Await { .. } => None,
        }
    }
}

impl Plan {
    /// True when there is nothing to do now.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    fn push(&mut self, action: Action, after: Vec<usize>, why: impl Into<String>) -> usize {
        let index = self.steps.len();
        let mut after = after;
        let target = match &action {
            Action::Create { .. } => Some(Target::Created(index)),
            other => other.container(),
        };
        if let Some(target) = target
            && let Some(previous) = self.last.insert(target, index)
        {
            after.push(previous);
        }
        after.sort_unstable();
        after.dedup();
        self.steps.push(Step {
            action,
            after,
            why: why.into(),
        });
        index
    }

    fn wake(&mut self, at: SystemTime) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// The name of a service's replica: `<stack>-<service>-<replica>`, as
/// Compose names them.
pub fn container_name(stack: &str, service: &str, replica: u32) -> String {
    format!("{stack}-{service}-{replica}")
}

/// The name a start-first replacement runs under until the old container
/// is gone.
pub fn replacement_name(stack: &str, service: &str, replica: u32) -> String {
    format!("{stack}-{service}-{replica}-next")
}

/// What one apply asks for beyond the stack file: `stack up`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Only these services are applied (empty: every one); [`select`]
    /// adds their dependencies. Other services' containers are left as
    /// they are.
    pub services: BTreeSet<String>,
    /// Recreate every selected container, even an unchanged one
    /// (`--force-recreate`: one apply only).
    pub force_recreate: bool,
    /// Pull the image of every selected service again (`--pull always`:
    /// one apply only).
    pub pull_always: bool,
    /// Build the image of every selected service that builds, even one
    /// present and up to date (`up --build`: one apply only; the build
    /// cache makes an unchanged one quick and the same image).
    pub build_always: bool,
    /// Remove the containers of services no longer declared, and the
    /// networks no longer declared (`--remove-orphans`, the default).
    pub remove_orphans: bool,
    /// Start the selected services' stopped containers, held and given up
    /// ones included, whatever their restart policy (an explicit `up`).
    pub start_stopped: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            services: BTreeSet::new(),
            force_recreate: false,
            pull_always: false,
            build_always: false,
            remove_orphans: true,
            start_stopped: false,
        }
    }
}

impl PlanOptions {
    fn selected(&self, service: &str) -> bool {
        self.services.is_empty() || self.services.contains(service)
    }
}

/// The services `stack up SERVICE…` applies: those named and, with
/// `with_deps`, everything they depend on (transitively). No names: every
/// service (the empty set). An unknown name is an error.
pub fn select(
    desired: &Desired,
    names: &[String],
    with_deps: bool,
) -> Result<BTreeSet<String>, String> {
    let mut selected = BTreeSet::new();
    let mut todo: Vec<&str> = Vec::new();
    for name in names {
        if !desired.services.contains_key(name) {
            let known: Vec<&str> = desired.services.keys().map(String::as_str).collect();
            return Err(format!(
                "no such service: {name} (the stack has {})",
                known.join(", ")
            ));
        }
        todo.push(name);
    }
    while let Some(name) = todo.pop() {
        if !selected.insert(name.to_string()) || !with_deps {
            continue;
        }
        if let Some(service) = desired.services.get(name) {
            todo.extend(
                service
                    .depends_on
                    .iter()
                    .map(|d| d.service.as_str())
                    .filter(|d| desired.services.contains_key(*d)),
            );
        }
    }
    Ok(selected)
}

/// How far a stack is from what `stack up --wait` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every replica of every selected service runs (and is healthy where
    /// it has a health check), or completed with code 0 and stays so.
    Ready,
    /// Not yet: what is still missing, one line per container.
    Waiting(Vec<String>),
    /// Cannot get there by itself: why.
    Failed(String),
}

/// Whether the `selected` services (empty: all) of `desired` are up as
/// `observed`: running, healthy where they have a health check. A
/// container the restart engine gave up on, an unhealthy one, or one that
/// exited with an error and will not be restarted fails the wait.
pub fn readiness(desired: &Desired, observed: &Observed, selected: &BTreeSet<String>) -> Readiness {
    let mut waiting = Vec::new();
    for (name, service) in &desired.services {
        if !selected.is_empty() && !selected.contains(name) {
            continue;
        }
        let want = observed.images.get(service.image.reference()).map(|id| {
            let mut config = service.config.clone();
            config.insert(IMAGE_FIELD.to_string(), id.clone());
            config
        });
        for replica in 1..=service.replicas {
            let final_name = container_name(&desired.stack, name, replica);
            let Some(c) = observed
                .containers
                .iter()
                .find(|c| c.service == *name && c.name == final_name)
            else {
                waiting.push(format!("{final_name} is not created yet"));
                continue;
            };
            if want.as_ref().is_some_and(|w| w != &c.config) {
                waiting.push(format!("{final_name} is being recreated"));
                continue;
            }
            match c.state {
                State::Running { .. } if service.health.is_none() => {}
                State::Running { .. } => match c.health {
                    Health::Healthy => {}
                    Health::Unhealthy => {
                        return Readiness::Failed(format!("{final_name} is unhealthy"));
                    }
                    Health::Starting | Health::None => {
                        waiting.push(format!("{final_name} is not healthy yet"));
                    }
                },
                State::Exited { code, .. } => {
                    let restarts = match service.restart.policy {
                        RestartPolicyName::No => false,
                        RestartPolicyName::OnFailure => code != 0,
                        RestartPolicyName::Always | RestartPolicyName::UnlessStopped => true,
                    };
                    if c.given_up {
                        return Readiness::Failed(format!(
                            "{final_name} exited with code {code} and the stack gave up restarting it"
                        ));
                    }
                    if c.held {
                        return Readiness::Failed(format!("{final_name} was stopped"));
                    }
                    if !restarts && code != 0 {
                        return Readiness::Failed(format!("{final_name} exited with code {code}"));
                    }
                    if restarts {
                        waiting.push(format!("{final_name} exited with code {code}, restarting"));
                    }
                }
                State::Created => waiting.push(format!("{final_name} is not started yet")),
                State::Paused => waiting.push(format!("{final_name} is paused")),
            }
        }
    }
    if waiting.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Waiting(waiting)
    }
}

/// What to do to go from `observed` to `desired` at time `now`.
pub fn plan(desired: &Desired, observed: &Observed, now: SystemTime) -> Plan {
    plan_with(desired, observed, now, &PlanOptions::default())
}

/// [`plan`] with the flags of an apply (`stack up SERVICE… --no-deps
/// --force-recreate --pull always --remove-orphans=false`).
pub fn plan_with(
    desired: &Desired,
    observed: &Observed,
    now: SystemTime,
    options: &PlanOptions,
) -> Plan {
    Planner {
        desired,
        observed,
        now,
        options,
        plan: Plan::default(),
        network_steps: BTreeMap::new(),
        volume_steps: BTreeMap::new(),
        started: BTreeMap::new(),
        replica_removals: Vec::new(),
        update_held: false,
    }
    .run()
}

/// What `stack down` does: stop every container (dependents first), remove
/// them, then the stack's networks, and its volumes when `volumes` is set.
pub fn plan_down(desired: &Desired, observed: &Observed, volumes: bool) -> Plan {
    let mut plan = Plan::default();
    let removes = stop_all(&mut plan, desired, observed, true);
    for network in observed.networks.keys() {
        plan.push(
            Action::RemoveNetwork {
                network: network.clone(),
            },
            removes.clone(),
            format!("remove network {network}"),
        );
    }
    if volumes {
        for volume in &observed.volumes {
            plan.push(
                Action::RemoveVolume {
                    volume: volume.clone(),
                },
                removes.clone(),
                format!("remove volume {volume}"),
            );
        }
    }
    plan
}

/// What a foreground `stack up` does at Ctrl-C: stop every running
/// container of the stack, dependents first, and keep them (as Compose
/// does); networks and volumes stay.
pub fn plan_stop(desired: &Desired, observed: &Observed) -> Plan {
    let mut plan = Plan::default();
    stop_all(&mut plan, desired, observed, false);
    plan
}

/// Stops every running container (dependents before what they depend on)
/// and, with `remove`, removes every container after its stop; returns
/// the last step of each container.
fn stop_all(plan: &mut Plan, desired: &Desired, observed: &Observed, remove: bool) -> Vec<usize> {
    let order = stop_order(desired, observed);
    let mut stop_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for service in &order {
        // Dependents were stopped first: wait for their stops.
        let dependents: Vec<usize> = dependents_of(desired, service)
            .iter()
            .filter_map(|d| stop_of.get(d.as_str()))
            .flatten()
            .copied()
            .collect();
        let mut mine = Vec::new();
        for c in observed.containers.iter().filter(|c| &c.service == service) {
            let after = if is_running(c) {
                let stop = plan.push(
                    Action::Stop { id: c.id.clone() },
                    dependents.clone(),
                    format!("stop {}", c.name),
                );
                mine.push(stop);
                vec![stop]
            } else {
                dependents.clone()
            };
            if remove {
                let remove = plan.push(
                    Action::Remove { id: c.id.clone() },
                    after,
                    format!("remove {}", c.name),
                );
                mine.retain(|&s| !plan.steps[remove].after.contains(&s));
                mine.push(remove);
            }
        }
        stop_of.insert(service.as_str(), mine);
    }
    stop_of.values().flatten().copied().collect()
}

/// Services in the order their containers stop: dependents before what
/// they depend on, then services no longer declared.
fn stop_order(desired: &Desired, observed: &Observed) -> Vec<String> {
    let mut order = start_order(desired);
    order.reverse();
    let known: BTreeSet<&String> = desired.services.keys().collect();
    let orphans: BTreeSet<&String> = observed
        .containers
        .iter()
        .map(|c| &c.service)
        .filter(|s| !known.contains(s))
        .collect();
    let mut all: Vec<String> = orphans.into_iter().cloned().collect();
    all.extend(order);
    all
}

/// Services in dependency order (what they depend on first), ties by name.
/// Cycles were refused by validation; a cycle here is broken by name order.
pub fn start_order(desired: &Desired) -> Vec<String> {
    let mut order = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut visiting: BTreeSet<&str> = BTreeSet::new();
    fn visit<'a>(
        desired: &'a Desired,
        name: &'a str,
        done: &mut BTreeSet<&'a str>,
        visiting: &mut BTreeSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if done.contains(name) || !visiting.insert(name) {
            return;
        }
        if let Some(service) = desired.services.get(name) {
            for dep in &service.depends_on {
                visit(desired, &dep.service, done, visiting, order);
            }
        }
        visiting.remove(name);
        if done.insert(name) && desired.services.contains_key(name) {
            order.push(name.to_string());
        }
    }
    for name in desired.services.keys() {
        visit(desired, name, &mut done, &mut visiting, &mut order);
    }
    order
}

fn dependents_of(desired: &Desired, service: &str) -> Vec<String> {
    desired
        .services
        .iter()
        .filter(|(_, s)| s.depends_on.iter().any(|d| d.service == service))
        .map(|(name, _)| name.clone())
        .collect()
}

fn is_running(c: &ObservedContainer) -> bool {
    matches!(c.state, State::Running { .. } | State::Paused)
}

/// The differences between two field sets, as `name: old→new`.
pub fn differences(old: &Fields, new: &Fields) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (old.get(k), new.get(k));
            (a != b).then(|| {
                format!(
                    "{k}: {}→{}",
                    a.map_or("(none)", |s| short(s)),
                    b.map_or("(none)", |s| short(s))
                )
            })
        })
        .collect()
}

/// A value shortened for a plan line: digests to their first 12 hex digits.
fn short(value: &str) -> &str {
    if let Some(hex) = value.strip_prefix("sha256:") {
        let end = hex.len().min(12) + "sha256:".len();
        return &value[..end];
    }
    if value.len() > 60 {
        let mut end = 57;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        return &value[..end];
    }
    value
}

/// The replica kept when several containers claim one (a crash between
/// create and the removal of the old one): a running one whose config
/// matches, then any running one, then any matching, then the first.
/// Whether `c` is a start-first replacement of `kept`'s replica that
/// never got ready: stopped under its temporary name, made from the
/// service's configuration now (the change it was made for), while the
/// old container runs.
fn is_failed_update(
    stack: &str,
    service: &DesiredService,
    c: &ObservedContainer,
    kept: &ObservedContainer,
    want: Option<&Fields>,
) -> bool {
    service.update == UpdateOrder::StartFirst
        && c.id != kept.id
        && c.name == replacement_name(stack, &c.service, c.replica)
        && matches!(c.state, State::Exited { .. } | State::Created)
        && is_running(kept)
        && c.config != kept.config
        && want.is_none_or(|w| &c.config == w)
}

/// The start-first updates that failed and hold: `(new, old)` container
/// names, for the stack's status (the plan leaves them as they are).
pub fn failed_updates(desired: &Desired, observed: &Observed) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in &observed.containers {
        let Some(service) = desired.services.get(&c.service) else {
            continue;
        };
        let old = container_name(&desired.stack, &c.service, c.replica);
        if let Some(kept) = observed.containers.iter().find(|k| k.name == old)
            && is_failed_update(&desired.stack, service, c, kept, None)
        {
            out.push((c.name.clone(), old));
        }
    }
    out
}

fn keep_index(candidates: &[&ObservedContainer], want: Option<&Fields>) -> usize {
    let matches = |c: &ObservedContainer| want.is_some_and(|w| &c.config == w);
    let rank = |c: &ObservedContainer| match (is_running(c), matches(c)) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    };
    (0..candidates.len())
        .min_by_key(|&i| (rank(candidates[i]), i))
        .unwrap_or(0)
}

struct Planner<'a> {
    desired: &'a Desired,
    observed: &'a Observed,
    now: SystemTime,
    options: &'a PlanOptions,
    plan: Plan,
    network_steps: BTreeMap<&'a str, usize>,
    volume_steps: BTreeMap<&'a str, usize>,
    /// Per service: the steps that start its containers in this plan.
    started: BTreeMap<&'a str, Vec<usize>>,
    /// The removals of the replica being planned's extra containers.
    replica_removals: Vec<usize>,
    /// The replica being planned has a failed start-first replacement:
    /// its container is not recreated again for the same change.
    update_held: bool,
}

impl<'a> Planner<'a> {
    fn run(mut self) -> Plan {
        if self.options.remove_orphans {
            self.orphans();
        }
        self.networks();
        self.volumes();
        for name in start_order(self.desired) {
            if !self.options.selected(&name) {
                continue;
            }
            if let Some((name, service)) = self.desired.services.get_key_value(name.as_str()) {
                self.service(name, service);
            }
        }
        self.plan
    }

    /// Containers of services no longer declared go, dependents first, and
    /// networks the stack no longer declares after them.
    fn orphans(&mut self) {
        let mut removed = Vec::new();
        for c in &self.observed.containers {
            if self.desired.services.contains_key(&c.service) {
                continue;
            }
            let mut after = Vec::new();
            if is_running(c) {
                after.push(self.plan.push(
                    Action::Stop { id: c.id.clone() },
                    vec![],
                    format!(
                        "stop {}: service {} is no longer declared",
                        c.name, c.service
                    ),
                ));
            }
            removed.push(self.plan.push(
                Action::Remove { id: c.id.clone() },
                after,
                format!(
                    "remove {}: service {} is no longer declared",
                    c.name, c.service
                ),
            ));
        }
        for network in self.observed.networks.keys() {
            if !self.desired.networks.contains_key(network) {
                self.plan.push(
                    Action::RemoveNetwork {
                        network: network.clone(),
                    },
                    removed.clone(),
                    format!("remove network {network}: no longer declared"),
                );
            }
        }
    }

    fn networks(&mut self) {
        for (name, hash) in &self.desired.networks {
            match self.observed.networks.get(name) {
                Some(have) if have == hash => {}
                Some(_) => {
                    // Changed settings: every container on it is recreated
                    // (see `network_changed`), the network itself after they
                    // are gone; the service steps wait for it.
                    let users = self.network_users(name);
                    let mut after = Vec::new();
                    for c in &users {
                        after.extend(self.remove_container(
                            c,
                            vec![],
                            &format!("network {name} changed"),
                        ));
                    }
                    let removed = self.plan.push(
                        Action::RemoveNetwork {
                            network: name.clone(),
                        },
                        after,
                        format!("remove network {name}: its settings changed"),
                    );
                    let created = self.plan.push(
                        Action::CreateNetwork {
                            network: name.clone(),
                        },
                        vec![removed],
                        format!("create network {name} with its new settings"),
                    );
                    self.network_steps.insert(name, created);
                }
                None => {
                    let created = self.plan.push(
                        Action::CreateNetwork {
                            network: name.clone(),
                        },
                        vec![],
                        format!("create network {name}"),
                    );
                    self.network_steps.insert(name, created);
                }
            }
        }
    }

    /// Containers of declared services attached to network `name`.
    fn network_users(&self, name: &str) -> Vec<&'a ObservedContainer> {
        self.observed
            .containers
            .iter()
            .filter(|c| {
                self.desired
                    .services
                    .get(&c.service)
                    .is_some_and(|s| s.networks.iter().any(|n| n == name))
            })
            .collect()
    }

    fn volumes(&mut self) {
        for name in &self.desired.volumes {
            if !self.observed.volumes.contains(name) {
                let step = self.plan.push(
                    Action::CreateVolume {
                        volume: name.clone(),
                    },
                    vec![],
                    format!("create volume {name}"),
                );
                self.volume_steps.insert(name, step);
            }
        }
    }

    /// Stops (when running) and removes `c`; returns the removal step.
    fn remove_container(
        &mut self,
        c: &'a ObservedContainer,
        after: Vec<usize>,
        why: &str,
    ) -> Option<usize> {
        if self.recreating(&c.id) {
            return None;
        }
        let mut after = after;
        if is_running(c) {
            let stop = self.plan.push(
                Action::Stop { id: c.id.clone() },
                after.clone(),
                format!("stop {}: {why}", c.name),
            );
            after = vec![stop];
        }
        let remove = self.plan.push(
            Action::Remove { id: c.id.clone() },
            after,
            format!("remove {}: {why}", c.name),
        );
        Some(remove)
    }

    /// The step of this plan that removes container `id`.
    fn removal_of(&self, id: &str) -> Option<usize> {
        self.plan
            .steps
            .iter()
            .position(|s| matches!(&s.action, Action::Remove { id: r } if r == id))
    }

    /// Whether this plan removes container `id`.
    fn recreating(&self, id: &str) -> bool {
        self.removal_of(id).is_some()
    }

    /// Starts existing container `c` of `name` after its gates (and the
    /// image step); `why` is the step's reason.
    fn start_existing(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        c: &ObservedContainer,
        image_step: Option<usize>,
        why: &str,
    ) {
        let mut after = self.gates(name, service);
        after.extend(image_step);
        let start = self.plan.push(
            Action::Start {
                service: name.to_string(),
                target: Target::Existing(c.id.clone()),
            },
            after,
            format!("start {}: {why}", c.name),
        );
        self.started.entry(name).or_default().push(start);
    }

    /// The steps a start of `service` waits for: its dependencies' awaits,
    /// its networks and volumes.
    fn gates(&mut self, name: &'a str, service: &'a DesiredService) -> Vec<usize> {
        let mut after = Vec::new();
        for dep in &service.depends_on {
            // With `--no-deps` a dependency left out is not waited for.
            if !self.desired.services.contains_key(&dep.service)
                || !self.options.selected(&dep.service)
            {
                continue;
            }
            let starting = self.started.get(dep.service.as_str()).cloned();
            let satisfied = self.condition_met(&dep.service, dep.condition);
            if starting.is_none() && satisfied {
                continue;
            }
            let reason = match dep.condition {
                Condition::Started => "started",
                Condition::Healthy => "healthy",
                Condition::Completed => "completed",
            };
            let existing = self.plan.steps.iter().position(|s| {
                matches!(&s.action, Action::Await { service, condition }
                    if service == &dep.service && *condition == dep.condition)
            });
            let step = match existing {
                Some(i) => i,
                None => self.plan.push(
                    Action::Await {
                        service: dep.service.clone(),
                        condition: dep.condition,
                    },
                    starting.unwrap_or_default(),
                    format!("wait for {} to be {reason} before {name}", dep.service),
                ),
            };
            after.push(step);
        }
        for network in &service.networks {
            if let Some(&step) = self.network_steps.get(network.as_str()) {
                after.push(step);
            }
        }
        for volume in &service.volumes {
            if let Some(&step) = self.volume_steps.get(volume.as_str()) {
                after.push(step);
            }
        }
        after
    }

    /// Whether every replica of `service` meets `condition` now, as
    /// observed (steps of this plan aside).
    fn condition_met(&self, service: &str, condition: Condition) -> bool {
        let replicas = self.desired.services.get(service).map_or(0, |s| s.replicas);
        let mine: Vec<&ObservedContainer> = self
            .observed
            .containers
            .iter()
            .filter(|c| c.service == service && c.replica <= replicas)
            .collect();
        if replicas == 0 {
            return true;
        }
        if mine.len() < replicas as usize {
            return false;
        }
        mine.iter().all(|c| match condition {
            Condition::Started => matches!(c.state, State::Running { .. }),
            Condition::Healthy => {
                matches!(c.state, State::Running { .. }) && c.health == Health::Healthy
            }
            Condition::Completed => matches!(c.state, State::Exited { code: 0, .. }),
        })
    }

    /// The service's config with the resolved image, or `None` while the
    /// image is missing.
    fn want(&self, service: &DesiredService) -> Option<Fields> {
        let image = self.observed.images.get(service.image.reference())?;
        let mut config = service.config.clone();
        config.insert(IMAGE_FIELD.to_string(), image.clone());
        Some(config)
    }

    fn service(&mut self, name: &'a str, service: &'a DesiredService) {
        let want = self.want(service);
        let pull_again = (self.options.pull_always
            && matches!(service.image, ImageSource::Pull(_)))
            || (self.options.build_always && matches!(service.image, ImageSource::Build { .. }));
        let image_step = if want.is_none() || pull_again {
            let why = match &service.image {
                ImageSource::Pull(r) if want.is_some() => {
                    format!("pull {r} for {name}: --pull always")
                }
                ImageSource::Pull(r) => format!("pull {r} for {name}"),
                ImageSource::Build { tag, .. } if want.is_some() => {
                    format!("build {tag} for {name}: --build")
                }
                ImageSource::Build { tag, .. } => format!("build {tag} for {name}"),
            };
            Some(self.plan.push(
                Action::EnsureImage {
                    service: name.to_string(),
                    image: service.image.clone(),
                },
                vec![],
                why,
            ))
        } else {
            None
        };
        let mut by_replica: BTreeMap<u32, Vec<&'a ObservedContainer>> = BTreeMap::new();
        for c in self
            .observed
            .containers
            .iter()
            .filter(|c| c.service == name)
        {
            by_replica.entry(c.replica).or_default().push(c);
        }
        // Scale down (and replica numbers out of range) first.
        for (&replica, containers) in &by_replica {
            if replica == 0 || replica > service.replicas {
                for c in containers {
                    self.remove_container(
                        c,
                        vec![],
                        &format!("{name} runs {} replicas", service.replicas),
                    );
                }
            }
        }
        for replica in 1..=service.replicas {
            let containers = by_replica.get(&replica).cloned().unwrap_or_default();
            let mut removed = Vec::new();
            let mut held_back = false;
            let current = if containers.is_empty() {
                None
            } else {
                let keep = keep_index(&containers, want.as_ref());
                for (i, c) in containers.iter().enumerate() {
                    if i == keep {
                        continue;
                    }
                    // A start-first replacement that never got ready stays
                    // (stopped, for `ps` to show) and the old container
                    // runs on: no retry until the service changes again or
                    // an explicit `up` asks.
                    if !self.options.start_stopped
                        && !self.options.force_recreate
                        && is_failed_update(
                            &self.desired.stack,
                            service,
                            c,
                            containers[keep],
                            want.as_ref(),
                        )
                    {
                        held_back = true;
                        continue;
                    }
                    removed.extend(self.remove_container(
                        c,
                        vec![],
                        "another container runs this replica",
                    ));
                }
                Some(containers[keep])
            };
            // A replacement made now takes a name one removed here had.
            self.replica_removals.clone_from(&removed);
            self.update_held = held_back;
            self.replica(name, service, replica, current, want.as_ref(), image_step);
            // A kept replacement still under its temporary name (a crash
            // cut a start-first update short) takes the replica's name.
            let final_name = container_name(&self.desired.stack, name, replica);
            if let Some(c) = current
                && c.name != final_name
                && !self.recreating(&c.id)
            {
                self.plan.push(
                    Action::Rename {
                        target: Target::Existing(c.id.clone()),
                        name: final_name.clone(),
                    },
                    removed,
                    format!("rename {} to {final_name}", c.name),
                );
            }
        }
    }

    fn create_and_start(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        replica: u32,
        after: Vec<usize>,
        container_name: String,
        why: &str,
    ) -> (usize, usize) {
        let gates = self.gates(name, service);
        let mut create_after = after;
        // A link, `volumes-from` or another container's network namespace
        // needs that container running when this one is made; others are
        // made early and only their start waits.
        if needs_others_at_create(service) {
            create_after.extend(gates.iter().copied());
        }
        for network in &service.networks {
            if let Some(&step) = self.network_steps.get(network.as_str()) {
                create_after.push(step);
            }
        }
        for volume in &service.volumes {
            if let Some(&step) = self.volume_steps.get(volume.as_str()) {
                create_after.push(step);
            }
        }
        let create = self.plan.push(
            Action::Create {
                service: name.to_string(),
                replica,
                name: container_name.clone(),
            },
            create_after,
            format!("create {container_name}: {why}"),
        );
        let mut start_after = gates;
        start_after.push(create);
        let start = self.plan.push(
            Action::Start {
                service: name.to_string(),
                target: Target::Created(create),
            },
            start_after,
            format!("start {container_name}"),
        );
        self.started.entry(name).or_default().push(start);
        (create, start)
    }

    fn replica(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        replica: u32,
        current: Option<&'a ObservedContainer>,
        want: Option<&Fields>,
        image_step: Option<usize>,
    ) {
        let final_name = container_name(&self.desired.stack, name, replica);
        let Some(c) = current else {
            let after = image_step.into_iter().collect();
            self.create_and_start(name, service, replica, after, final_name, "missing");
            return;
        };
        // Already going (its network changes): a new one follows.
        if let Some(removed) = self.removal_of(&c.id) {
            let mut after = vec![removed];
            after.extend(image_step);
            self.create_and_start(name, service, replica, after, final_name, "recreated");
            return;
        }
        // A changed configuration recreates it (decided once the image is
        // known).
        if let Some(want) = want
            && &c.config != want
            && !self.update_held
        {
            let why = format!("recreate: {}", differences(&c.config, want).join("; "));
            self.recreate(name, service, replica, c, &why, image_step);
            return;
        }
        if want.is_some() && self.options.force_recreate {
            self.recreate(
                name,
                service,
                replica,
                c,
                "recreate: forced (--force-recreate)",
                image_step,
            );
            return;
        }
        if c.live != service.live {
            self.plan.push(
                Action::Update {
                    id: c.id.clone(),
                    live: service.live.clone(),
                },
                vec![],
                format!(
                    "update {} in place: {}",
                    c.name,
                    differences(&c.live, &service.live).join("; ")
                ),
            );
        }
        if self.options.start_stopped && matches!(c.state, State::Created | State::Exited { .. }) {
            self.start_existing(name, service, c, image_step, "stack up");
            return;
        }
        if c.given_up || c.held {
            return;
        }
        match c.state {
            State::Created => {
                self.start_existing(name, service, c, image_step, "created, not running");
            }
            State::Paused => {}
            State::Running { started } => self.running(name, service, c, started),
            State::Exited {
                code,
                started,
                finished,
            } => self.exited(name, service, c, code, started, finished),
        }
    }

    fn recreate(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        replica: u32,
        c: &'a ObservedContainer,
        why: &str,
        image_step: Option<usize>,
    ) {
        let final_name = container_name(&self.desired.stack, name, replica);
        if service.update == UpdateOrder::StartFirst && is_running(c) {
            let next = replacement_name(&self.desired.stack, name, replica);
            let after = image_step
                .into_iter()
                .chain(self.replica_removals.iter().copied())
                .collect();
            let (create, start) = self.create_and_start(name, service, replica, after, next, why);
            let ready = self.plan.push(
                Action::AwaitReady {
                    target: Target::Created(create),
                    healthy: service.health.is_some(),
                },
                vec![start],
                format!("wait for the new {final_name} before stopping the old one"),
            );
            let Some(removed) = self.remove_container(c, vec![ready], "replaced") else {
                return;
            };
            self.plan.push(
                Action::Rename {
                    target: Target::Created(create),
                    name: final_name.clone(),
                },
                vec![removed],
                format!("rename the new container to {final_name}"),
            );
        } else {
            let removed = self.remove_container(c, vec![], "replaced");
            self.create_and_start(
                name,
                service,
                replica,
                removed.into_iter().chain(image_step).collect(),
                final_name,
                why,
            );
        }
    }

    fn running(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        c: &'a ObservedContainer,
        started: SystemTime,
    ) {
        if c.health == Health::Unhealthy {
            match service.health {
                Some(OnUnhealthy::Restart) => {
                    self.restart(name, service, c, "unhealthy");
                    return;
                }
                Some(OnUnhealthy::Stop) => {
                    self.plan.push(
                        Action::Stop { id: c.id.clone() },
                        vec![],
                        format!("stop {}: unhealthy", c.name),
                    );
                    return;
                }
                Some(OnUnhealthy::None) | None => {}
            }
        }
        // A dependency that started after this container restarts it, when
        // asked for.
        for dep in service.depends_on.iter().filter(|d| d.restart_dependents) {
            let newer = self.observed.containers.iter().any(|d| {
                d.service == dep.service
                    && matches!(d.state, State::Running { started: s } if s > started)
            });
            let restarting = self.started.contains_key(dep.service.as_str());
            if newer || restarting {
                self.restart(name, service, c, &format!("{} restarted", dep.service));
                return;
            }
        }
    }

    /// Stops and starts a running container again, through the backoff.
    fn restart(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        c: &'a ObservedContainer,
        why: &str,
    ) {
        let stop = self.plan.push(
            Action::Stop { id: c.id.clone() },
            vec![],
            format!("stop {}: {why}", c.name),
        );
        let mut after = self.gates(name, service);
        after.push(stop);
        let start = self.plan.push(
            Action::Start {
                service: name.to_string(),
                target: Target::Existing(c.id.clone()),
            },
            after,
            format!("start {} again: {why}", c.name),
        );
        self.started.entry(name).or_default().push(start);
    }

    fn exited(
        &mut self,
        name: &'a str,
        service: &'a DesiredService,
        c: &'a ObservedContainer,
        code: i64,
        started: SystemTime,
        finished: SystemTime,
    ) {
        let restart = &service.restart;
        if !restarts_after(restart.policy, code) {
            return;
        }
        let failures = restart
            .backoff
            .failures_after_run(c.failures, started, finished);
        if restart.policy == RestartPolicyName::OnFailure
            && let Some(max) = restart.max_retries
            && failures >= max
        {
            self.plan.push(
                Action::GiveUp { id: c.id.clone() },
                vec![],
                format!(
                    "give up on {}: exited {code} after {failures} restarts (max-retries {max})",
                    c.name
                ),
            );
            return;
        }
        if let Some((burst, interval)) = restart.start_limit {
            let window_start = self
                .now
                .checked_sub(interval)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let recent = c.starts.iter().filter(|&&t| t >= window_start).count();
            if recent >= burst as usize {
                self.plan.push(
                    Action::GiveUp { id: c.id.clone() },
                    vec![],
                    format!(
                        "give up on {}: {recent} starts within {interval:?} (start limit {burst})",
                        c.name
                    ),
                );
                return;
            }
        }
        let delay = restart.backoff.delay(failures + 1);
        let due = finished + delay;
        if due > self.now {
            self.plan.wake(due);
            return;
        }
        let after = self.gates(name, service);
        let start = self.plan.push(
            Action::Start {
                service: name.to_string(),
                target: Target::Existing(c.id.clone()),
            },
            after,
            format!(
                "start {} again: exited {code}, restart {} after {delay:?}",
                c.name,
                failures + 1
            ),
        );
        self.started.entry(name).or_default().push(start);
    }
}

/// Whether a restart policy starts a container again after it exited
/// with `code`.
fn restarts_after(policy: RestartPolicyName, code: i64) -> bool {
    match policy {
        RestartPolicyName::No => false,
        RestartPolicyName::OnFailure => code != 0,
        RestartPolicyName::Always | RestartPolicyName::UnlessStopped => true,
    }
}

/// When the restart engine starts exited container `c` of `service` again,
/// at the earliest (its backoff's end): `None` when it is not exited, is
/// held or given up, or its policy does not restart it. `stack ps --stack`
/// shows it as the next try.
pub fn next_restart(service: &DesiredService, c: &ObservedContainer) -> Option<SystemTime> {
    if c.given_up || c.held {
        return None;
    }
    let State::Exited {
        code,
        started,
        finished,
    } = c.state
    else {
        return None;
    };
    let restart = &service.restart;
    if !restarts_after(restart.policy, code) {
        return None;
    }
    let failures = restart
        .backoff
        .failures_after_run(c.failures, started, finished);
    Some(finished + restart.backoff.delay(failures + 1))
}

/// Whether a container of `service` needs other containers running when
/// it is made (links, `volumes_from`, another container's network
/// namespace), as its fields say: empty fields are left out of them.
fn needs_others_at_create(service: &DesiredService) -> bool {
    let c = &service.config;
    c.contains_key("links")
        || c.contains_key("volumes_from")
        || c.get("network")
            .is_some_and(|n| n.starts_with("{\"container\""))
}

#[cfg(test)]
mod tests;
