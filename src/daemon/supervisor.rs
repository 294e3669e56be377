//! The supervisor: keeps containers as their restart policies say while the
//! daemon runs, and takes them over again when it starts (live restore).
//!
//! For every run it is told about ([`Supervisor::watch`]) it waits for the
//! container's shim to exit (the shim records the exit in `state.json`
//! first), reports `oom` and `die`, and then, under the container's lock,
//! applies `--rm` or the restart policy: `always`, `unless-stopped` and
//! `on-failure[:N]` restart after a backoff (100 ms doubling up to a
//! minute, reset once a run lasted ten seconds: moby's `restartmanager`).
//! A stop or kill by the user ([`Supervisor::stopped_by_user`]) holds every
//! policy off until the user starts the container again.
//!
//! What must survive a daemon restart is kept per container in
//! `<bundle>/supervise.json`: the restart count, whether the user stopped
//! it, and the last run whose exit was reported. The API takes the same
//! per-container lock ([`Supervisor::lock`]) for its verbs, or calls the
//! verbs here ([`Supervisor::start`], [`Supervisor::stop`], …), so a restart
//! never races a user's `stop` or `rm`.
//!
//! The decisions are pure functions ([`decide`], [`next_delay`]); this
//! module never builds containers or touches cgroups itself.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedMutexGuard, watch};
use tracing::{debug, error, info, warn};

use super::events::{Event, Events};
use crate::reconcile::container::RestartPolicy;
use crate::reconcile::containers::{Containers, ContainersError};
use crate::runtime::{ContainerRecord, ContainerState, RuntimeError, Status};
use crate::spec::restart::RestartPolicyName;

/// The supervisor's file in a container's bundle.
pub const SUPERVISE_FILE: &str = "supervise.json";
/// Where the kernel tells which boot this is.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// Where the daemon keeps the boot id it last started in, under the root.
pub const BOOT_ID_FILE: &str = "boot_id";
/// How long a verb waits for the exit of the run it ended to be reported.
const REPORT_WAIT: Duration = Duration::from_secs(10);

/// Restart delays (moby `restartmanager`: 100 ms, doubling, at most a
/// minute, back to the start after a run of ten seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
        }
    }
}

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Removing the container failed.
    #[error(transparent)]
    Containers(#[from] ContainersError),
    /// A file of the supervisor could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A blocking step panicked or was cancelled.
    #[error("a supervisor task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SupervisorError + 'a {
    move |source| SupervisorError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The restart policy a container was created with (`no` when it has none).
pub fn restart_policy(record: &ContainerRecord) -> RestartPolicy {
    record
        .extra
        .get("restart")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// When a policy is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The container just exited while the daemon watched it.
    Exit,
    /// The daemon starts and finds the container not running.
    DaemonStart {
        /// It is the first daemon start since the host booted.
        boot: bool,
    },
}

/// What to do with a container that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Leave it exited.
    Stay,
    /// Start it again.
    Restart,
    /// Remove it (`--rm`).
    Remove,
}

/// What [`decide`] looks at besides the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitFacts {
    /// The exit code of the last run.
    pub exit_code: i32,
    /// The user stopped (or killed) it.
    pub stopped_by_user: bool,
    /// Restarts by policy since the user last started it.
    pub restart_count: u32,
    /// `--rm`.
    pub auto_remove: bool,
}

/// Docker's rules (moby `restartmanager.ShouldRestart`, and the restart
/// manager being cancelled by `stop`/`kill`):
///
/// - `--rm` containers are removed, whatever stopped them;
/// - a container the user stopped stays down; except that at the first
///   daemon start after a boot an `always` container starts anyway (Docker
///   starts `always` containers at every daemon start; with live restore a
///   daemon restart is an upgrade, so here only a reboot overrides the
///   user's stop);
/// - `always` and `unless-stopped` restart;
/// - `on-failure` restarts after a non-zero exit, at most `N` times (0: no
///   limit);
/// - `no` never restarts.
pub fn decide(policy: &RestartPolicy, facts: &ExitFacts, trigger: Trigger) -> Decision {
    if facts.auto_remove {
        return Decision::Remove;
    }
    if facts.stopped_by_user {
        let boot = matches!(trigger, Trigger::DaemonStart { boot: true });
        return if boot && policy.name == RestartPolicyName::Always {
            Decision::Restart
        } else {
            Decision::Stay
        };
    }
    let restart = match policy.name {
        RestartPolicyName::No => false,
        RestartPolicyName::Always | RestartPolicyName::UnlessStopped => true,
        RestartPolicyName::OnFailure => {
            facts.exit_code != 0
                && (policy.maximum_retry_count == 0
                    || facts.restart_count < policy.maximum_retry_count)
        }
    };
    if restart {
        Decision::Restart
    } else {
        Decision::Stay
    }
}

/// The delay before the next restart: `initial` first and after a run of
/// at least `reset_after`, else twice the previous one, at most `max`.
pub fn next_delay(
    previous: Option<Duration>,
    ran_for: Duration,
    config: &BackoffConfig,
) -> Duration {
    let previous = previous.filter(|_| ran_for < config.reset_after);
    match previous {
        None => config.initial,
        Some(d) => d.saturating_mul(2),
    }
    .min(config.max)
}

/// What the supervisor keeps on disk for a container (`supervise.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuperviseRecord {
    /// Restarts by policy since the user last started it (Docker's
    /// `RestartCount`).
    #[serde(default)]
    pub restart_count: u32,
    /// The user stopped or killed it; no policy restarts it.
    #[serde(default)]
    pub stopped_by_user: bool,
    /// The last run (`ContainerState::start_count`) whose exit was reported.
    #[serde(default)]
    pub reported_run: u32,
}

/// The supervisor's view of one container, for `ps` and `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuperviseStatus {
    /// Its policy.
    pub restart_policy: RestartPolicy,
    /// Restarts by policy since the user last started it.
    pub restart_count: u32,
    /// The user stopped it.
    pub stopped_by_user: bool,
    /// A restart is planned (Docker's `Restarting` state).
    pub restarting: bool,
    /// When the planned restart is due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_restart: Option<String>,
}

/// What [`Supervisor::restore`] did, by container id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Running containers watched again.
    pub adopted: Vec<String>,
    /// Containers whose exit was reported now (their shim had died, or
    /// they exited while no daemon watched).
    pub died: Vec<String>,
    /// Containers started by their policy.
    pub started: Vec<String>,
    /// `--rm` containers removed.
    pub removed: Vec<String>,
    /// Containers that could not be handled, with why.
    pub failed: Vec<(String, String)>,
}

/// How handling one exit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The container is gone.
    Gone,
    /// Someone else started it meanwhile.
    Running,
    /// Left as it is.
    Stayed,
    /// Removed (`--rm`).
    Removed,
    /// Started again.
    Restarted,
    /// The planned restart was called off (user stop, start or removal).
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled {
    reported: bool,
    outcome: Outcome,
}

/// How far the supervisor got with a container's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// The last run whose exit was reported.
    reported: u32,
    /// The last run whose exit was fully handled.
    settled: u32,
}

/// In-memory state of one container.
#[derive(Debug)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Changes when the user acts on the container: planned restarts made
    /// before are called off.
    epoch: watch::Sender<u64>,
    /// The run a task waits on.
    watching: Option<u32>,
    progress: watch::Sender<Progress>,
    /// The last restart delay (none after a reset).
    delay: Option<Duration>,
    next_restart: Option<SystemTime>,
}

/// The supervisor of one daemon.
#[derive(Debug)]
pub struct Supervisor {
    containers: Arc<Containers>,
    events: Events,
    backoff: BackoffConfig,
    entries: Mutex<HashMap<String, Entry>>,
    /// Serializes changes of `supervise.json` files.
    files: Mutex<()>,
    handle: tokio::runtime::Handle,
    me: Weak<Supervisor>,
}

impl Supervisor {
    /// A supervisor over `containers`, reporting to `events`. Its tasks run
    /// on the tokio runtime this is called in.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(containers: Arc<Containers>, events: Events, backoff: BackoffConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Supervisor {
            containers,
            events,
            backoff,
            entries: Mutex::new(HashMap::new()),
            files: Mutex::new(()),
            handle: tokio::runtime::Handle::current(),
            me: me.clone(),
        })
    }

    fn supervise_path(&self, id: &str) -> PathBuf {
        self.containers
            .runtime
            .bundle(id)
            .dir()
            .join(SUPERVISE_FILE)
    }

    /// The container's `supervise.json`, `None` when it has none.
    fn load(&self, id: &str) -> Option<SuperviseRecord> {
        let path = self.supervise_path(id);
        match crate::runtime::state::read_json(&path) {
            Ok(r) => Some(r),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                warn!(container = id, %error, "unreadable supervisor record; starting afresh");
                Some(SuperviseRecord::default())
            }
        }
    }

    /// Changes the container's `supervise.json`, writing it only when it
    /// changed (or did not exist). Read, change and write happen under one
    /// lock: steps that run outside the container's lock (reporting an
    /// exit) must not write back a flag the user's stop just changed.
    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut SuperviseRecord),
    ) -> Result<SuperviseRecord, SupervisorError> {
        let _files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.load(id);
        let mut new = old.unwrap_or_default();
        change(&mut new);
        if old != Some(new) {
            let path = self.supervise_path(id);
            // Not fsynced: a start or stop must not wait for the disk, and
            // what a power loss may lose here (a restart count, a user's
            // stop) only changes what happens at the next boot.
            crate::runtime::state::write_json_fast(&path, &new).map_err(io_err("write", &path))?;
        }
        Ok(new)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every change under this lock is a plain assignment: a panic cannot
        // leave it half done, so a poisoned lock is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_entry<R>(&self, id: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut entries = self.entries();
        let entry = entries.entry(id.to_string()).or_insert_with(|| {
            let reported = self.load(id).map_or(0, |r| r.reported_run);
            Entry {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                epoch: watch::Sender::new(0),
                watching: None,
                progress: watch::Sender::new(Progress {
                    reported,
                    settled: reported,
                }),
                delay: None,
                next_restart: None,
            }
        });
        f(entry)
    }

    /// Drops what is kept in memory about a removed container; a planned
    /// restart is called off.
    pub fn forget(&self, id: &str) {
        self.entries().remove(id);
    }

    /// Takes the container's lock: while it is held the supervisor neither
    /// restarts nor removes the container. The API holds it around every
    /// verb that starts, stops or removes a container.
    pub async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = self.with_entry(id, |e| e.lock.clone());
        lock.lock_owned().await
    }

    /// Records that the user stopped or killed the container: no policy
    /// restarts it until the user starts it again, and a planned restart is
    /// called off. Call it before stopping it, under [`Supervisor::lock`].
    pub fn stopped_by_user(&self, id: &str) -> Result<(), SupervisorError> {
        self.with_entry(id, |e| {
            e.epoch.send_modify(|n| *n += 1);
            e.next_restart = None;
        });
        self.update(id, |r| r.stopped_by_user = true).map(|_| ())
    }

    /// Records that the user started the container: its policy applies
    /// again, its restart count and backoff start over (as Docker's
    /// `RestartCount` does), and a planned restart is called off.
    pub fn started_by_user(&self, id: &str) -> Result<(), SupervisorError> {
        self.with_entry(id, |e| {
            e.epoch.send_modify(|n| *n += 1);
            e.next_restart = None;
            e.delay = None;
        });
        self.update(id, |r| {
            r.stopped_by_user = false;
            r.restart_count = 0;
        })
        .map(|_| ())
    }

    /// Restarts by policy since the user last started the container
    /// (`RestartCount` of `inspect`).
    pub fn restart_count(&self, id: &str) -> u32 {
        self.load(id).map_or(0, |r| r.restart_count)
    }

    /// When the planned restart of the container is due, if one is planned.
    pub fn next_restart(&self, id: &str) -> Option<SystemTime> {
        self.entries().get(id).and_then(|e| e.next_restart)
    }

    /// The supervisor's view of the container.
    pub fn status(&self, id: &str) -> SuperviseStatus {
        let record = self.load(id).unwrap_or_default();
        let next = self.next_restart(id);
        SuperviseStatus {
            restart_policy: self
                .containers
                .runtime
                .record(id)
                .map(|r| restart_policy(&r))
                .unwrap_or_default(),
            restart_count: record.restart_count,
            stopped_by_user: record.stopped_by_user,
            restarting: next.is_some(),
            next_restart: next.map(crate::runtime::logs::rfc3339_nanos),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Containers) -> T + Send + 'static,
    ) -> Result<T, SupervisorError> {
        let containers = self.containers.clone();
        tokio::task::spawn_blocking(move || f(&containers))
            .await
            .map_err(SupervisorError::Task)
    }

    /// Watches the container's current run: when it ends, reports it and
    /// applies the container's policy. Call it after every start; watching
    /// a run twice does nothing more.
    pub fn watch(&self, id: &str) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let Ok(state) = self.containers.runtime.state(id) else {
            return;
        };
        let run = state.start_count;
        if run == 0 {
            return;
        }
        let fresh = self.with_entry(id, |e| {
            if e.watching == Some(run) || e.progress.borrow().reported >= run {
                return false;
            }
            e.watching = Some(run);
            true
        });
        if !fresh {
            return;
        }
        // The file marks the container as watched, so a daemon started
        // later reports an exit this one missed.
        if self.load(id).is_none()
            && let Err(e) = self.update(id, |r| r.reported_run = r.reported_run.max(run - 1))
        {
            warn!(container = id, error = %crate::error_chain(&e), "cannot write the supervisor record");
        }
        debug!(container = id, run, "watching");
        let id = id.to_string();
        self.handle.spawn(async move {
            me.wait_for_exit(&id).await;
            if let Err(e) = me.settle(&id, Some(run), Trigger::Exit).await {
                // The run is given up (as moby gives up a failed restart):
                // the container stays as it is until someone acts.
                error!(container = %id, error = %crate::error_chain(&e), "cannot handle the container's exit");
                me.mark_reported(&id, run);
                me.mark_settled(&id, run);
            }
        });
    }

    /// Waits until the container's shim has exited (at once when it has).
    async fn wait_for_exit(&self, id: &str) {
        let owned = id.to_string();
        let pidfd = self.blocking(move |c| c.runtime.shim_pidfd(&owned)).await;
        if let Ok(Ok(Some(pidfd))) = pidfd {
            match crate::sys::wait_readable(pidfd).await {
                Ok(()) => return,
                Err(error) => {
                    debug!(container = id, %error, "cannot poll the shim's pidfd; polling its state");
                }
            }
        }
        // No pidfd (the shim is gone already, or it could not be opened):
        // the state tells.
        self.poll_exit(id).await;
    }

    async fn poll_exit(&self, id: &str) {
        while self
            .containers
            .runtime
            .state(id)
            .is_ok_and(|st| matches!(st.status, Status::Running | Status::Paused))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn mark_reported(&self, id: &str, run: u32) {
        self.with_entry(id, |e| {
            e.progress.send_modify(|p| p.reported = p.reported.max(run));
            if e.watching == Some(run) {
                e.watching = None;
            }
        });
    }

    fn mark_settled(&self, id: &str, run: u32) {
        self.with_entry(id, |e| {
            e.progress.send_modify(|p| {
                p.reported = p.reported.max(run);
                p.settled = p.settled.max(run);
            });
        });
    }

    /// Waits until the exit of the run being watched has been reported, so
    /// a verb's own event (`stop`, `destroy`, the next `start`) follows the
    /// `die`.
    async fn await_reported(&self, id: &str) {
        let (watching, mut progress) =
            self.with_entry(id, |e| (e.watching, e.progress.subscribe()));
        let Some(run) = watching else {
            return;
        };
        let _ = tokio::time::timeout(REPORT_WAIT, progress.wait_for(|p| p.reported >= run)).await;
    }

    /// Waits until the supervisor is done with run `run` (the n-th start,
    /// `ContainerState::start_count`): its exit reported and its policy
    /// carried out (the restart started or called off, the container removed
    /// or left exited). Returns at once for a container that is gone.
    pub async fn wait_settled(&self, id: &str, run: u32) {
        if self.containers.runtime.record(id).is_err() {
            return;
        }
        let mut progress = self.with_entry(id, |e| e.progress.subscribe());
        let _ = progress.wait_for(|p| p.settled >= run).await;
    }

    fn emit_exit(&self, record: &ContainerRecord, state: &ContainerState) {
        if state.oom_killed {
            self.events.emit(Event::container("oom", record));
        }
        let mut die =
            Event::container("die", record).with_attribute("exitCode", state.exit_code.to_string());
        if let Some(ran) = ran_for(state) {
            die = die.with_attribute("execDuration", ran.as_secs().to_string());
        }
        self.events.emit(die);
    }

    /// Reports the end of the container's last run (once) and applies its
    /// policy. `run` is the run a watcher waited on.
    async fn settle(
        &self,
        id: &str,
        run: Option<u32>,
        trigger: Trigger,
    ) -> Result<Settled, SupervisorError> {
        let gone = |s: &Self| {
            s.forget(id);
            Ok(Settled {
                reported: false,
                outcome: Outcome::Gone,
            })
        };
        let owned = id.to_string();
        let orphan = match self
            .blocking(move |c| c.runtime.finish_orphaned(&owned))
            .await?
        {
            Ok(finished) => finished.is_some(),
            Err(RuntimeError::NotFound(_)) => return gone(self),
            Err(e) => return Err(e.into()),
        };
        let runtime = &self.containers.runtime;
        let (record, state) = match runtime.record(id).and_then(|r| Ok((r, runtime.state(id)?))) {
            Ok(found) => found,
            Err(RuntimeError::NotFound(_)) => return gone(self),
            Err(e) => return Err(e.into()),
        };
        let last = state.start_count;
        let running = matches!(state.status, Status::Running | Status::Paused);
        if running || state.status == Status::Created || run.is_some_and(|r| r != last) {
            // Someone started it again since (its own watch reports that
            // run), or it never ran.
            if let Some(r) = run {
                self.mark_settled(id, r);
            }
            return Ok(Settled {
                reported: false,
                outcome: Outcome::Running,
            });
        }

        let persisted = self.load(id);
        let seen = self.with_entry(id, |e| e.progress.borrow().reported);
        let report = last > seen
            && match trigger {
                Trigger::Exit => true,
                Trigger::DaemonStart { .. } => {
                    orphan || persisted.is_some_and(|p| last > p.reported_run)
                }
            };
        if report {
            self.emit_exit(&record, &state);
        }
        self.mark_reported(id, last);
        if report || persisted.is_some() {
            self.update(id, |r| r.reported_run = r.reported_run.max(last))?;
        }

        let guard = self.lock(id).await;
        let state = match runtime.state(id) {
            Ok(st) => st,
            Err(RuntimeError::NotFound(_)) => return gone(self),
            Err(e) => return Err(e.into()),
        };
        if state.status != Status::Exited || state.start_count != last {
            self.mark_settled(id, last);
            return Ok(Settled {
                reported: report,
                outcome: Outcome::Running,
            });
        }
        let supervise = self.load(id).unwrap_or_default();
        let facts = ExitFacts {
            exit_code: state.exit_code,
            stopped_by_user: supervise.stopped_by_user,
            restart_count: supervise.restart_count,
            auto_remove: record.auto_remove,
        };
        let decision = decide(&restart_policy(&record), &facts, trigger);
        debug!(container = id, run = last, ?decision, "exit handled");
        let outcome = match decision {
            Decision::Stay => Outcome::Stayed,
            Decision::Remove => {
                let owned = id.to_string();
                match self
                    .blocking(move |c| c.remove(&owned, false, true))
                    .await?
                {
                    Ok(()) | Err(ContainersError::Runtime(RuntimeError::NotFound(_))) => {}
                    Err(e) => {
                        self.mark_settled(id, last);
                        return Err(e.into());
                    }
                }
                self.events.emit(Event::container("destroy", &record));
                info!(container = id, "removed after its exit (--rm)");
                drop(guard);
                self.forget(id);
                return Ok(Settled {
                    reported: report,
                    outcome: Outcome::Removed,
                });
            }
            Decision::Restart => {
                // A restart despite a user stop is the boot start of an
                // `always` container: the user's stop is over.
                let clear_stop = facts.stopped_by_user;
                self.restart_after_exit(id, &record, &state, trigger, clear_stop, guard)
                    .await?
            }
        };
        self.mark_settled(id, last);
        Ok(Settled {
            reported: report,
            outcome,
        })
    }

    /// Counts the restart, waits out the backoff without holding the lock,
    /// and starts the container unless the user acted meanwhile.
    async fn restart_after_exit(
        &self,
        id: &str,
        record: &ContainerRecord,
        state: &ContainerState,
        trigger: Trigger,
        clear_stop: bool,
        guard: OwnedMutexGuard<()>,
    ) -> Result<Outcome, SupervisorError> {
        // Counted when decided, as moby counts it (a restart called off
        // still counts towards on-failure's limit).
        self.update(id, |r| {
            r.restart_count = r.restart_count.saturating_add(1);
            if clear_stop {
                r.stopped_by_user = false;
            }
        })?;
        let ran = ran_for(state).unwrap_or_default();
        let (delay, mut epoch) = self.with_entry(id, |e| {
            let delay = match trigger {
                Trigger::Exit => {
                    let d = next_delay(e.delay, ran, &self.backoff);
                    e.delay = Some(d);
                    d
                }
                Trigger::DaemonStart { .. } => Duration::ZERO,
            };
            e.next_restart = Some(SystemTime::now() + delay);
            (delay, e.epoch.subscribe())
        });
        drop(guard);
        info!(
            container = id,
            delay_ms = delay.as_millis(),
            "restarting by policy"
        );
        let called_off = tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = epoch.changed() => true,
        };
        let guard = self.lock(id).await;
        self.with_entry(id, |e| e.next_restart = None);
        if called_off || epoch.has_changed().unwrap_or(true) {
            return Ok(Outcome::Cancelled);
        }
        match self.containers.runtime.state(id) {
            Ok(st) if st.status == Status::Exited && st.start_count == state.start_count => {}
            Ok(_) => return Ok(Outcome::Running),
            Err(RuntimeError::NotFound(_)) => return Ok(Outcome::Gone),
            Err(e) => return Err(e.into()),
        }
        let owned = id.to_string();
        self.blocking(move |c| c.start(&owned, None)).await??;
        self.events.emit(Event::container("start", record));
        self.watch(id);
        drop(guard);
        Ok(Outcome::Restarted)
    }

    /// Takes over after a daemon start (live restore): a running container
    /// is watched again; a run whose shim died is finished (what is left of
    /// the container killed), reported and given its policy; a container
    /// that exited while no daemon watched has its exit reported and its
    /// policy applied (so `always` and `unless-stopped` containers the user
    /// did not stop start again, and `--rm` ones are removed). `boot`: this
    /// is the first daemon start since the host booted
    /// ([`is_first_start_since_boot`]), which starts `always` containers
    /// even if the user had stopped them.
    pub async fn restore(&self, boot: bool) -> Result<RestoreReport, SupervisorError> {
        let list = self.blocking(|c| c.runtime.list()).await??;
        let mut report = RestoreReport::default();
        for (record, state) in list {
            let id = record.id.clone();
            let owned = id.clone();
            match self.blocking(move |c| c.runtime.shim_pidfd(&owned)).await? {
                Ok(Some(_)) => {
                    self.watch(&id);
                    info!(container = %id, "running container adopted");
                    report.adopted.push(id);
                    continue;
                }
                Ok(None) => {}
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => {
                    report.failed.push((id, crate::error_chain(&e)));
                    continue;
                }
            }
            if state.status == Status::Created {
                continue;
            }
            match self.settle(&id, None, Trigger::DaemonStart { boot }).await {
                Ok(settled) => {
                    if settled.reported {
                        report.died.push(id.clone());
                    }
                    match settled.outcome {
                        Outcome::Restarted => report.started.push(id),
                        Outcome::Removed => report.removed.push(id),
                        _ => {}
                    }
                }
                Err(e) => report.failed.push((id, crate::error_chain(&e))),
            }
        }
        Ok(report)
    }

    /// `docker start` through the supervisor: starts the container (with
    /// `attach` as a pre-attached client, see
    /// [`crate::runtime::Runtime::start`]), clears a user stop, emits
    /// `start` and watches the run.
    pub async fn start(
        &self,
        id: &str,
        attach: Option<OwnedFd>,
    ) -> Result<ContainerState, SupervisorError> {
        let _guard = self.lock(id).await;
        self.start_locked(id, attach).await
    }

    async fn start_locked(
        &self,
        id: &str,
        attach: Option<OwnedFd>,
    ) -> Result<ContainerState, SupervisorError> {
        // The previous run's `die` comes before this run's `start`.
        self.await_reported(id).await;
        let record = self.containers.runtime.record(id)?;
        let owned = id.to_string();
        let state = self.blocking(move |c| c.start(&owned, attach)).await??;
        self.started_by_user(id)?;
        self.events.emit(Event::container("start", &record));
        self.watch(id);
        Ok(state)
    }

    /// `docker stop` through the supervisor: marks the container stopped by
    /// the user (which also calls off a planned restart), and if it runs,
    /// emits `kill`, stops it (`signal`, then SIGKILL after `timeout`),
    /// waits for its `die` and emits `stop`. Returns the state after.
    pub async fn stop(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ContainerState, SupervisorError> {
        let _guard = self.lock(id).await;
        self.stop_locked(id, signal, timeout, true).await
    }

    async fn stop_locked(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
        by_user: bool,
    ) -> Result<ContainerState, SupervisorError> {
        let record = self.containers.runtime.record(id)?;
        if by_user {
            self.stopped_by_user(id)?;
        }
        let state = self.containers.runtime.state(id)?;
        if !matches!(state.status, Status::Running | Status::Paused) {
            return Ok(state);
        }
        self.events
            .emit(Event::container("kill", &record).with_attribute("signal", signal.to_string()));
        let owned = id.to_string();
        let state = self
            .blocking(move |c| c.runtime.stop(&owned, signal, timeout))
            .await??;
        self.await_reported(id).await;
        self.events.emit(Event::container("stop", &record));
        Ok(state)
    }

    /// `docker restart` through the supervisor: stops the container if it
    /// runs (`kill`, `die`, `stop`), starts it (`start`) and emits
    /// `restart`. The restart count starts over.
    pub async fn restart(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ContainerState, SupervisorError> {
        let _guard = self.lock(id).await;
        self.stop_locked(id, signal, timeout, false).await?;
        let state = self.start_locked(id, None).await?;
        let record = self.containers.runtime.record(id)?;
        self.events.emit(Event::container("restart", &record));
        Ok(state)
    }

    /// `docker kill` through the supervisor. As in Docker (moby
    /// `daemon/kill.go`), SIGKILL or the container's stop signal counts as
    /// a stop by the user; other signals leave the policy alone.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), SupervisorError> {
        let _guard = self.lock(id).await;
        let record = self.containers.runtime.record(id)?;
        if signal == libc::SIGKILL
            || crate::runtime::signal_number(&record.stop_signal) == Some(signal)
        {
            self.stopped_by_user(id)?;
        }
        let owned = id.to_string();
        self.blocking(move |c| c.runtime.kill(&owned, signal))
            .await??;
        self.events
            .emit(Event::container("kill", &record).with_attribute("signal", signal.to_string()));
        Ok(())
    }

    /// `docker rm` through the supervisor: with `force` a running container
    /// is killed first (`kill`, `die`); then it is removed (`destroy`), with
    /// its anonymous volumes if `volumes`.
    pub async fn remove(
        &self,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), SupervisorError> {
        let guard = self.lock(id).await;
        let record = self.containers.runtime.record(id)?;
        let state = self.containers.runtime.state(id)?;
        if !matches!(state.status, Status::Running | Status::Paused) {
            // A run that just ended has its `die` before this `destroy`
            // (its watcher reports without the lock).
            self.await_reported(id).await;
        }
        if force && matches!(state.status, Status::Running | Status::Paused) {
            self.stop_locked(id, libc::SIGKILL, Duration::ZERO, true)
                .await?;
        }
        let owned = id.to_string();
        self.blocking(move |c| c.remove(&owned, false, volumes))
            .await??;
        self.events.emit(Event::container("destroy", &record));
        drop(guard);
        self.forget(id);
        Ok(())
    }
}

/// How long the last run lasted, from the state's start and finish times.
fn ran_for(state: &ContainerState) -> Option<Duration> {
    let now = SystemTime::now();
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| crate::runtime::logs::parse_time_filter(t, now).ok())
    };
    parse(&state.finished_at)?
        .duration_since(parse(&state.started_at)?)
        .ok()
}

/// Whether this is the first daemon start since the host booted, by the
/// kernel's boot id compared with the one kept under `root`; keeps the
/// current one.
pub fn is_first_start_since_boot(root: &Path) -> Result<bool, SupervisorError> {
    first_start_since_boot(Path::new(BOOT_ID_PATH), &root.join(BOOT_ID_FILE))
}

/// [`is_first_start_since_boot`] with the kernel's file and ours given.
pub fn first_start_since_boot(kernel: &Path, kept: &Path) -> Result<bool, SupervisorError> {
    let current = fs::read_to_string(kernel).map_err(io_err("read", kernel))?;
    let current = current.trim();
    let previous = match fs::read_to_string(kept) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", kept)(e)),
    };
    if previous.as_deref().map(str::trim) == Some(current) {
        return Ok(false);
    }
    let dir = kept.parent().unwrap_or(Path::new("."));
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        writeln!(tmp, "{current}")?;
        tmp.as_file().sync_all()?;
        tmp.persist(kept).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(io_err("write", kept))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: RestartPolicyName, max: u32) -> RestartPolicy {
        RestartPolicy {
            name,
            maximum_retry_count: max,
        }
    }

    fn facts(exit_code: i32, stopped: bool, count: u32) -> ExitFacts {
        ExitFacts {
            exit_code,
            stopped_by_user: stopped,
            restart_count: count,
            auto_remove: false,
        }
    }

    #[test]
    fn policies_decide_like_dockers_restart_manager() {
        use Decision::*;
        use RestartPolicyName::*;
        let exit = Trigger::Exit;
        let table = [
            // policy, max, exit code, stopped by user, restarts so far → decision
            (No, 0, 1, false, 0, Stay),
            (Always, 0, 0, false, 0, Restart),
            (Always, 0, 0, false, 1000, Restart),
            (Always, 0, 137, true, 0, Stay),
            (UnlessStopped, 0, 0, false, 0, Restart),
            (UnlessStopped, 0, 143, true, 0, Stay),
            (OnFailure, 0, 0, false, 0, Stay),
            (OnFailure, 0, 1, false, 50, Restart),
            (OnFailure, 2, 1, false, 0, Restart),
            (OnFailure, 2, 1, false, 1, Restart),
            (OnFailure, 2, 1, false, 2, Stay),
            (OnFailure, 2, 1, true, 0, Stay),
        ];
        for (name, max, code, stopped, count, want) in table {
            assert_eq!(
                decide(&policy(name, max), &facts(code, stopped, count), exit),
                want,
                "{name}:{max} exit {code} stopped {stopped} count {count}"
            );
        }
    }

    #[test]
    fn only_a_boot_starts_an_always_container_the_user_stopped() {
        let stopped = facts(0, true, 0);
        let always = policy(RestartPolicyName::Always, 0);
        let unless = policy(RestartPolicyName::UnlessStopped, 0);
        let boot = Trigger::DaemonStart { boot: true };
        let restart = Trigger::DaemonStart { boot: false };
        assert_eq!(decide(&always, &stopped, boot), Decision::Restart);
        assert_eq!(decide(&always, &stopped, restart), Decision::Stay);
        assert_eq!(decide(&unless, &stopped, boot), Decision::Stay);
        assert_eq!(
            decide(&unless, &facts(0, false, 0), restart),
            Decision::Restart
        );
    }

    #[test]
    fn auto_remove_wins_over_everything() {
        let mut f = facts(0, true, 0);
        f.auto_remove = true;
        assert_eq!(
            decide(&policy(RestartPolicyName::No, 0), &f, Trigger::Exit),
            Decision::Remove
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_long_run() {
        let config = BackoffConfig::default();
        let short = Duration::from_secs(1);
        let mut delay = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let d = next_delay(delay, short, &config);
            seen.push(d.as_millis());
            delay = Some(d);
        }
        assert_eq!(
            seen,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000
            ]
        );
        assert_eq!(
            next_delay(delay, Duration::from_secs(10), &config),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn the_boot_id_tells_the_first_start_after_a_boot() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("boot_id");
        let kept = dir.path().join("kept");
        fs::write(&kernel, "aaaa-1\n").unwrap();
        assert!(first_start_since_boot(&kernel, &kept).unwrap());
        assert!(!first_start_since_boot(&kernel, &kept).unwrap());
        fs::write(&kernel, "bbbb-2\n").unwrap();
        assert!(first_start_since_boot(&kernel, &kept).unwrap());
        assert!(!first_start_since_boot(&kernel, &kept).unwrap());
    }

    #[test]
    fn policies_are_read_from_the_record() {
        let record: ContainerRecord = serde_json::from_value(serde_json::json!({
            "id": "x", "name": "n", "created": "", "image": "bb", "image_id": "",
            "rootfs": {"lowers": [], "upper": "/u", "work": "/w"}, "cgroup": "stack/x",
            "extra": {"restart": {"name": "on-failure", "maximum_retry_count": 3}},
        }))
        .unwrap();
        assert_eq!(
            restart_policy(&record),
            policy(RestartPolicyName::OnFailure, 3)
        );
        let mut none = record.clone();
        none.extra.clear();
        assert_eq!(restart_policy(&none), RestartPolicy::default());
    }

    #[test]
    fn run_length_comes_from_the_state_times() {
        let mut st = ContainerState::created();
        st.started_at = Some("2026-01-01T00:00:00.5Z".into());
        st.finished_at = Some("2026-01-01T00:00:12Z".into());
        assert_eq!(ran_for(&st), Some(Duration::from_millis(11_500)));
        st.finished_at = None;
        assert_eq!(ran_for(&st), None);
    }
}
