//! Health check monitors: one tokio task per running container with a
//! check. Every interval it runs the probe in the container (through
//! `stack __exec`, a fresh process, since the daemon is multi-threaded),
//! kills it at the timeout, feeds the result to Docker's state machine
//! ([`Health::observe`]), writes the state to the bundle (`health.json`, read
//! by `inspect` and `ps`) and reports status changes to the daemon, which
//! turns them into `health_status: …` events.
//!
//! What a check is and how results move the state are in
//! [`crate::reconcile::health`] (pure, shared with `inspect`); this module
//! only runs processes and keeps time. A monitor watches one run of its
//! container: it ends when the container stops or restarts, and the daemon
//! spawns a new one on every start (moby `initHealthMonitor`).

use std::collections::BTreeMap;
use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::reconcile::containers::Containers;
use crate::reconcile::health::{self, MAX_OUTPUT_LEN};
pub use crate::reconcile::health::{
    Health, HealthCheck, HealthRequest, HealthResult, HealthStatus, effective,
};
use crate::runtime::Status;
use crate::runtime::exec::{self, ExecConfig};

/// What the daemon is told when a container's health changes: its id and
/// the new status (`healthy`, `unhealthy`).
pub type OnChange = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A running monitor; dropping it (or [`HealthHandle::stop`]) stops it and
/// kills a probe in flight.
#[derive(Debug)]
pub struct HealthHandle {
    task: tokio::task::JoinHandle<()>,
}

impl HealthHandle {
    /// Stops the monitor.
    pub fn stop(self) {
        // Drop aborts the task.
    }

    /// Whether the monitor ended by itself (its container stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts monitoring the running container `id` with `check` on the current
/// tokio runtime (call it from within one).
pub fn spawn(
    containers: Arc<Containers>,
    id: String,
    check: HealthCheck,
    on_change: OnChange,
) -> HealthHandle {
    let monitor = HealthMonitor::new(containers, id, check, on_change);
    HealthHandle {
        task: tokio::spawn(monitor.run()),
    }
}

/// The health monitor of one run of one container.
pub struct HealthMonitor {
    containers: Arc<Containers>,
    id: String,
    check: HealthCheck,
    on_change: OnChange,
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("id", &self.id)
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl HealthMonitor {
    /// A monitor for the container `id` (see [`spawn`]).
    pub fn new(
        containers: Arc<Containers>,
        id: String,
        check: HealthCheck,
        on_change: OnChange,
    ) -> Self {
        Self {
            containers,
            id,
            check,
            on_change,
        }
    }

    /// Runs until the container stops or restarts: `starting` at once, then
    /// a probe every interval (the start interval while starting within the
    /// start period).
    pub async fn run(self) {
        let Some(run) = self.current_run().await else {
            return;
        };
        let started = run
            .as_deref()
            .and_then(|t| crate::runtime::logs::parse_time_filter(t, SystemTime::now()).ok())
            .unwrap_or_else(SystemTime::now);
        let previous = {
            let containers = self.containers.clone();
            let id = self.id.clone();
            tokio::task::spawn_blocking(move || containers.health(&id))
                .await
                .ok()
                .flatten()
        };
        let mut state = Health::starting(previous);
        self.save(&state).await;
        tracing::debug!(container = %self.id, "health monitor started");
        loop {
            let since = SystemTime::now()
                .duration_since(started)
                .unwrap_or_default();
            tokio::time::sleep(health::next_interval(&self.check, state.status, since)).await;
            if self.current_run().await.as_ref() != Some(&run) {
                break;
            }
            let start = SystemTime::now();
            let result = self.probe(start).await;
            // A probe that raced with the container's end says nothing about
            // its health (moby ignores results of cancelled probes).
            if self.current_run().await.as_ref() != Some(&run) {
                break;
            }
            let since = start.duration_since(started).unwrap_or_default();
            let changed = state.observe(&self.check, result, since);
            self.save(&state).await;
            if let Some(status) = changed {
                tracing::info!(container = %self.id, status = %status, "health status changed");
                (self.on_change)(&self.id, status.as_str());
            }
        }
        tracing::debug!(container = %self.id, "health monitor ended");
    }

    /// The container's current run: `Some(started_at)` while it runs or is
    /// paused, `None` once it stopped or is gone.
    async fn current_run(&self) -> Option<Option<String>> {
        let containers = self.containers.clone();
        let id = self.id.clone();
        tokio::task::spawn_blocking(move || {
            let st = containers.runtime.state(&id).ok()?;
            matches!(st.status, Status::Running | Status::Paused).then_some(st.started_at)
        })
        .await
        .ok()
        .flatten()
    }

    /// Writes the state to the bundle, unless the container is being
    /// removed (its record goes first).
    async fn save(&self, state: &Health) {
        let bundle = self.containers.runtime.bundle(&self.id);
        let state = state.clone();
        let id = self.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if !bundle.record().exists() {
                return;
            }
            if let Err(e) = health::write(bundle.dir(), &state) {
                tracing::warn!(container = %id, error = %e, "cannot write the health state");
            }
        })
        .await;
    }

    /// Runs the probe once; its result (exit code -1 when it timed out or
    /// could not run, as Docker has it).
    async fn probe(&self, start: SystemTime) -> HealthResult {
        let config = ExecConfig {
            args: self.check.argv(),
            ..ExecConfig::default()
        };
        let command = exec::helper_command(&self.containers.runtime, &self.id, &config);
        let (exit_code, output) = run_probe(command, self.check.timeout).await;
        HealthResult {
            start: crate::runtime::logs::rfc3339_nanos(start),
            end: crate::runtime::now_rfc3339(),
            exit_code,
            output,
        }
    }
}

/// A probe's stdout and stderr together, the first [`MAX_OUTPUT_LEN`] bytes
/// of them (moby `limitedBuffer`).
#[derive(Debug, Default)]
struct Limited {
    bytes: Vec<u8>,
    truncated: bool,
}

async fn drain(mut pipe: impl AsyncRead + Unpin, into: &Mutex<Limited>) {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut out) = into.lock() else { return };
                let keep = n.min(MAX_OUTPUT_LEN.saturating_sub(out.bytes.len()));
                out.bytes.extend_from_slice(&buf[..keep]);
                out.truncated |= keep < n;
            }
        }
    }
}

/// Runs a probe command with a deadline: its exit code and output. At the
/// deadline it and every process it started are killed.
async fn run_probe(command: std::process::Command, timeout: Duration) -> (i32, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (-1, format!("cannot run the health check: {e}")),
    };
    // Until the probe is reaped, an abort (the monitor stopped) or the
    // timeout kills its whole tree: the helper, its intermediate process
    // and the probe inside the container.
    let mut tree = ProcessTree(child.id().and_then(|p| i32::try_from(p).ok()));
    let output = Mutex::new(Limited::default());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let io = async {
        let out = async {
            if let Some(p) = stdout {
                drain(p, &output).await;
            }
        };
        let err = async {
            if let Some(p) = stderr {
                drain(p, &output).await;
            }
        };
        tokio::join!(out, err);
    };
    let mut io = std::pin::pin!(io);
    let mut io_done = false;
    let waited = tokio::time::timeout_at(deadline, async {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                () = &mut io, if !io_done => io_done = true,
            }
        }
    })
    .await;
    let status = match waited {
        Err(_elapsed) => {
            tree.kill();
            let _ = child.wait().await;
            tree.0 = None;
            return (
                -1,
                format!(
                    "Health check exceeded timeout ({})",
                    crate::spec::duration::DurationSpec(timeout)
                ),
            );
        }
        Ok(Err(e)) => return (-1, format!("cannot wait for the health check: {e}")),
        Ok(Ok(status)) => status,
    };
    tree.0 = None;
    // What the probe wrote before it ended; a process it left in the
    // background may hold the pipes open, so only until the deadline.
    if !io_done {
        let _ = tokio::time::timeout_at(deadline, &mut io).await;
    }
    let code = status.code().unwrap_or(-1);
    let out = output
        .lock()
        .map(|o| health::truncate_output(&o.bytes, o.truncated));
    (code, out.unwrap_or_default())
}

/// A process and its descendants, killed together on drop unless released
/// (`.0 = None`) once the process was reaped.
struct ProcessTree(Option<i32>);

impl ProcessTree {
    /// Stops the tree (so nothing in it forks any more), then kills it.
    fn kill(&mut self) {
        let Some(root) = self.0 else { return };
        let signal = |pid: i32, sig: rustix::process::Signal| {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, sig);
            }
        };
        let mut seen = Vec::new();
        // Two passes: a process forked while the first pass stopped its
        // parent is found by the second.
        for _ in 0..2 {
            for pid in descendants(root) {
                if !seen.contains(&pid) {
                    signal(pid, rustix::process::Signal::STOP);
                    seen.push(pid);
                }
            }
        }
        for pid in seen {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `root` and every process below it, from `/proc/*/stat`.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
            let Some(ppid) = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(
                kids.iter()
                    .copied()
                    .filter(|k| !out.contains(k))
                    .collect::<Vec<_>>(),
            );
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn sh(script: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn a_probe_reports_its_exit_code_and_output() {
        let (code, out) = rt().block_on(run_probe(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(60),
        ));
        assert_eq!(code, 3);
        assert!(out.contains("out\n") && out.contains("err\n"), "{out:?}");
    }

    #[test]
    fn probe_output_is_limited() {
        let (code, out) = rt().block_on(run_probe(
            sh("i=0; while [ $i -lt 600 ]; do echo 0123456789; i=$((i+1)); done"),
            Duration::from_secs(60),
        ));
        assert_eq!(code, 0);
        assert_eq!(out.len(), MAX_OUTPUT_LEN + 3);
        assert!(out.ends_with("..."));
    }

    #[test]
    fn a_probe_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let (code, out) = rt().block_on(run_probe(sh(&script), Duration::from_millis(300)));
        assert_eq!(code, -1);
        assert_eq!(out, "Health check exceeded timeout (300ms)");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep was killed too: it is gone or a zombie
        // waiting for a reaper (a SIGKILLed process takes a moment to die).
        let state_of = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let comm_end = stat.rfind(')');
            let state = comm_end
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("gone")
                .to_string();
            (state, stat.contains("(sleep)"))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (state, is_sleep) = state_of();
            if !is_sleep || matches!(state.as_str(), "gone" | "Z" | "X") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the probe's child is still alive: state {state}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_background_process_does_not_hold_the_probe_past_its_exit() {
        // The probe exits 0 at once but leaves a process holding stdout: the
        // exit code counts, the output is what arrived before the deadline.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("echo ok; sleep 1000 & echo $! > {}", pidfile.display());
        let (code, out) = rt().block_on(run_probe(sh(&script), Duration::from_millis(500)));
        assert_eq!((code, out.as_str()), (0, "ok\n"));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn a_probe_that_cannot_start_fails() {
        let (code, out) = rt().block_on(run_probe(
            std::process::Command::new("/no/such/program"),
            Duration::from_secs(5),
        ));
        assert_eq!(code, -1);
        assert!(out.contains("cannot run the health check"), "{out}");
    }
}
