//! What the runtime keeps on disk for each container, under
//! `<root>/containers/<id>/`: `config.json` (the OCI runtime spec),
//! `container.json` (the [`ContainerRecord`]: how it was asked for) and
//! `state.json` (the [`ContainerState`]: what it is doing, written by the
//! shim). Every write is atomic (temp file, fsync, rename), so a reader never
//! sees half a record and a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rootfs::Rootfs;

/// How a container was asked for: everything besides the OCI spec that the
/// shim and the verbs need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The 64-hex-digit id.
    pub id: String,
    /// The unique name (without Docker's leading `/`).
    pub name: String,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// The root file system's directories.
    pub rootfs: Rootfs,
    /// The user as written, resolved in the container at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run a tiny init as pid 1 (`--init`).
    #[serde(default)]
    pub init: bool,
    /// Keep stdin open (`-i`).
    #[serde(default)]
    pub stdin_open: bool,
    /// The signal `stop` sends first (a name like `SIGTERM` or a number).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: String,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u32,
    /// Log rotation: the largest size of one log file, in bytes.
    #[serde(default = "default_log_max_size")]
    pub log_max_size: u64,
    /// Log rotation: how many files to keep.
    #[serde(default = "default_log_max_files")]
    pub log_max_files: u32,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The cgroup path below the hierarchy's root, e.g. `stack/<id>`.
    pub cgroup: String,
    /// An external OCI runtime (`runc`, `crun`, a path) to execute the spec
    /// with instead of the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Settings the runtime does not interpret but keeps for `inspect` and
    /// the layers above (ports, restart policy, networks…).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_stop_signal() -> String {
    "SIGTERM".into()
}
fn default_stop_timeout() -> u32 {
    10
}
fn default_log_max_size() -> u64 {
    10 << 20
}
fn default_log_max_files() -> u32 {
    5
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its process ended.
    Exited,
    /// Being removed.
    Removing,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Removing => "removing",
        })
    }
}

/// What a container is doing, as its shim last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The status.
    pub status: Status,
    /// The container's pid 1 as the host sees it, while running.
    #[serde(default)]
    pub pid: i32,
    /// The shim's pid, while it runs.
    #[serde(default)]
    pub shim_pid: i32,
    /// When it last started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it last ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The exit code (128 + signal for a signal).
    #[serde(default)]
    pub exit_code: i32,
    /// Whether the kernel's OOM killer ended it.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why the last start failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// How many times it was started.
    #[serde(default)]
    pub start_count: u32,
}

impl ContainerState {
    /// A container that was just created.
    pub fn created() -> Self {
        Self {
            status: Status::Created,
            pid: 0,
            shim_pid: 0,
            started_at: None,
            finished_at: None,
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            start_count: 0,
        }
    }
}

/// Writes `value` as JSON to `path` atomically and durably (fsync before the
/// rename): for what must survive a crash, the spec and the record.
pub fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    write_json_with(path, value, true)
}

/// Writes `value` as JSON to `path` atomically, without waiting for the
/// disk: a crash of the process leaves the old or the new file, a crash of
/// the host may lose the last change. For bookkeeping that is cheap to get
/// wrong after a power loss (the supervisor's notes).
pub fn write_json_fast(path: &Path, value: &impl Serialize) -> io::Result<()> {
    write_json_with(path, value, false)
}

/// Writes `value` as JSON to `path` atomically but without waiting for the
/// disk: for the shim's state updates, which describe processes that a crash
/// of the host ends anyway (a torn or stale state reads as "exited").
pub fn write_state(path: &Path, value: &ContainerState) -> io::Result<()> {
    write_json_with(path, value, false)
}

fn write_json_with(path: &Path, value: &impl Serialize, durable: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Reads JSON from `path`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_old_records_get_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = ContainerState::created();
        state.status = Status::Exited;
        state.exit_code = 3;
        write_json(&path, &state).unwrap();
        assert_eq!(read_json::<ContainerState>(&path).unwrap(), state);
        fs::write(&path, r#"{"status":"running","pid":7}"#).unwrap();
        let s: ContainerState = read_json(&path).unwrap();
        assert_eq!((s.status, s.pid, s.exit_code), (Status::Running, 7, 0));
    }
}
