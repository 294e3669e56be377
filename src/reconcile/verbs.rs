//! The container verbs beyond create/start/stop, with Docker's semantics
//! and Docker's API shapes: `top` (`ContainerTopOKBody`), `diff`
//! (`[{Path, Kind}]`), `update` (live cgroup limits, persisted for the next
//! start, and the restart policy), `container prune` (`ContainersDeleted`,
//! `SpaceReclaimed`), `port` (`NetworkSettings.Ports`) and the summaries
//! `ps` lists (`GET /containers/json`). The archive verbs of `cp` are in
//! [`super::archive`].
//!
//! Everything takes typed input and returns serde-serializable output and
//! prints nothing, so the daemon's API and the CLI call the same code. No
//! function here forks: `top` runs the host's `ps` as a child process and
//! the rest reads files and cgroups, so all of it is safe in a
//! multi-threaded daemon.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::container::{Resources, RunRequest};
use super::containers::{Containers, ContainersError, driver_of};
use crate::image::driver::StorageDriver;
use crate::image::layer::LayerError;
use crate::runtime::{ContainerRecord, RuntimeError, Status};

/// Errors of the verbs.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Removing a container failed.
    #[error(transparent)]
    Containers(#[from] ContainersError),
    /// The verb needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// `top` was given `ps` options that select processes by another field
    /// than the pid (moby's `validatePSArgs`).
    #[error("specifying \"{0}\" is not allowed")]
    PsArgs(String),
    /// The host's `ps` could not be run or failed.
    #[error("cannot run ps {args}: {message}")]
    Ps {
        /// The options given to `ps`.
        args: String,
        /// What went wrong (its stderr, or why it did not start).
        message: String,
    },
    /// The `ps` output has no PID column to select the container's lines by.
    #[error("couldn't find PID field in ps output")]
    PsNoPid,
    /// A line of `ps` output whose PID is not a number.
    #[error("unexpected pid '{0}' in ps output")]
    PsBadPid(String),
    /// A file of the container could not be read or written.
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
    /// An update that contradicts itself or the container's settings
    /// (Docker's messages).
    #[error("{0}")]
    Conflict(String),
    /// A value the verb does not take.
    #[error("{0}")]
    Invalid(String),
    /// The container has no such path (`cp`).
    #[error("Could not find the file {path} in container {container}")]
    PathNotFound {
        /// The container as named.
        container: String,
        /// The path in the container.
        path: String,
    },
    /// A path in the container is not what the operation needs.
    #[error("{path} in container {container}: {reason}")]
    BadPath {
        /// The container as named.
        container: String,
        /// The path in the container.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Writing into a container whose root is read-only (`--read-only`).
    #[error("container rootfs is marked read-only")]
    ReadOnlyRoot,
    /// Reading or writing a tar archive failed.
    #[error("archive of {path}")]
    Archive {
        /// The path in the container.
        path: String,
        /// Why.
        #[source]
        source: LayerError,
    },
}

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> VerbError + 'a {
    move |source| VerbError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `docker top`'s answer (moby `ContainerTopOKBody`): the column titles and
/// one row of cells per process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopResult {
    /// The column titles of `ps`.
    #[serde(rename = "Titles")]
    pub titles: Vec<String>,
    /// The container's processes, one row each.
    #[serde(rename = "Processes")]
    pub processes: Vec<Vec<String>>,
}

/// A change of the container's file system (`docker diff`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// The path in the container.
    #[serde(rename = "Path")]
    pub path: String,
    /// [`CHANGE_MODIFIED`], [`CHANGE_ADDED`] or [`CHANGE_DELETED`].
    #[serde(rename = "Kind")]
    pub kind: u8,
}

/// [`Change::kind`] of a changed path (`C`).
pub const CHANGE_MODIFIED: u8 = 0;
/// [`Change::kind`] of a new path (`A`).
pub const CHANGE_ADDED: u8 = 1;
/// [`Change::kind`] of a removed path (`D`).
pub const CHANGE_DELETED: u8 = 2;

pub use super::container::RestartPolicy;

/// `docker update`: the limits to change (`None`: unchanged) and the
/// restart policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// New limits; fields left `None` keep their value. `oom_kill_disable`
    /// is ignored (Docker cannot update it either).
    pub resources: Resources,
    /// A new restart policy.
    pub restart: Option<RestartPolicy>,
}

/// `docker update`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// Warnings about what was asked.
    #[serde(rename = "Warnings")]
    pub warnings: Vec<String>,
}

/// Which stopped containers `container prune` removes: Docker's `until`,
/// `label` and `label!` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneFilters {
    /// Only containers created before this time (RFC 3339, Unix seconds or
    /// a duration before now, as `--filter until=`).
    pub until: Option<String>,
    /// Every one of these (`key` or `key=value`) must match a label.
    pub label: Vec<String>,
    /// Containers matching every one of these are kept.
    pub label_not: Vec<String>,
}

/// `docker container prune`'s answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// The ids removed.
    #[serde(rename = "ContainersDeleted")]
    pub containers_deleted: Vec<String>,
    /// The bytes their writable layers held.
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

/// One published port (`NetworkSettings.Ports["80/tcp"][i]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// The host address (`0.0.0.0`, `::`, …; empty in a request: every
    /// address).
    #[serde(rename = "HostIp", default)]
    pub host_ip: String,
    /// The host port (in a request also empty, any free port, or a range
    /// `8000-8010`, the first free one of those).
    #[serde(rename = "HostPort", default)]
    pub host_port: String,
}

/// A mount as `ps` and `GET /containers/json` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume name, for volumes.
    #[serde(rename = "Name", default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The host path.
    #[serde(rename = "Source")]
    pub source: String,
    /// The path in the container.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// Whether it is writable.
    #[serde(rename = "RW")]
    pub rw: bool,
}

/// One container as `GET /containers/json` describes it, with the few
/// fields more that `ps` filters need (`ExitCode`, `StartedAt`, `Health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// The full id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Names, each with Docker's leading `/`.
    #[serde(rename = "Names")]
    pub names: Vec<String>,
    /// The image as named when the container was created.
    #[serde(rename = "Image")]
    pub image: String,
    /// The image id.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// The command line.
    #[serde(rename = "Command")]
    pub command: String,
    /// Creation time, Unix seconds.
    #[serde(rename = "Created")]
    pub created: i64,
    /// Published and exposed ports (see [`super::ports::summary_ports`]).
    #[serde(rename = "Ports")]
    pub ports: Vec<Value>,
    /// Bytes in the writable layer, when asked for.
    #[serde(rename = "SizeRw", default, skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    /// Bytes of the image plus the writable layer, when asked for.
    #[serde(
        rename = "SizeRootFs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub size_root_fs: Option<u64>,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// `created`, `running`, `paused`, `removing` or `exited`.
    #[serde(rename = "State")]
    pub state: String,
    /// Docker's status text (`Up 3 minutes`), left to the caller to fill
    /// (it depends on the clock).
    #[serde(rename = "Status")]
    pub status: String,
    /// Host settings: `{"NetworkMode": …}`.
    #[serde(rename = "HostConfig")]
    pub host_config: Value,
    /// Networks: `{"Networks": {name: {}}}`.
    #[serde(rename = "NetworkSettings")]
    pub network_settings: Value,
    /// Mounts.
    #[serde(rename = "Mounts")]
    pub mounts: Vec<MountPoint>,
    /// The last exit code.
    #[serde(rename = "ExitCode")]
    pub exit_code: i32,
    /// When it last started (RFC 3339), empty if never.
    #[serde(rename = "StartedAt")]
    pub started_at: String,
    /// When it last exited (RFC 3339), empty if never.
    #[serde(rename = "FinishedAt")]
    pub finished_at: String,
    /// `starting`, `healthy`, `unhealthy`, or `none` without a health check.
    #[serde(rename = "Health")]
    pub health: String,
}

impl Containers {
    /// `docker top`: the container's processes as the host's `ps` shows
    /// them, with `ps_args` (default `-ef`, Docker's), restricted to the
    /// processes in the container's cgroup. The container must run.
    pub fn top(&self, id: &str, ps_args: &str) -> Result<TopResult, VerbError> {
        let st = self.runtime.state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(VerbError::NotRunning(id.to_string()));
        }
        let ps_args = if ps_args.trim().is_empty() {
            "-ef"
        } else {
            ps_args
        };
        check_ps_args(ps_args)?;
        let pids = self.runtime.pids(id)?;
        let args: Vec<&str> = ps_args.split_whitespace().collect();
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let run = |extra: Option<String>| {
            let mut cmd = std::process::Command::new("ps");
            cmd.args(&args)
                .args(extra)
                .stdin(std::process::Stdio::null());
            cmd.output()
        };
        // Some options (`f`) cannot be combined with `-q`: retry without it.
        let output = match run(Some(format!("-q{}", list.join(",")))) {
            Ok(out) if out.status.success() => out,
            _ => run(None).map_err(|e| VerbError::Ps {
                args: ps_args.to_string(),
                message: e.to_string(),
            })?,
        };
        if !output.status.success() {
            return Err(VerbError::Ps {
                args: ps_args.to_string(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        parse_ps_output(&String::from_utf8_lossy(&output.stdout), &pids)
    }

    /// `docker diff`: what the container changed, added and deleted
    /// relative to its image, sorted by path.
    pub fn changes(&self, id: &str) -> Result<Vec<Change>, VerbError> {
        let record = self.runtime.record(id)?;
        if driver_of(&record) == StorageDriver::Vfs {
            let mut changes: Vec<Change> = self
                .vfs_changes(&record)?
                .into_iter()
                .map(|c| Change {
                    path: c.path.to_string_lossy().into_owned(),
                    kind: match c.kind {
                        crate::image::layer::ChangeKind::Modified => CHANGE_MODIFIED,
                        crate::image::layer::ChangeKind::Added => CHANGE_ADDED,
                        crate::image::layer::ChangeKind::Deleted => CHANGE_DELETED,
                    },
                })
                .collect();
            changes.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(changes);
        }
        let spec = self.runtime.spec(id)?;
        // Mount points the runtime made in the writable layer (for
        // `/etc/hosts`, volumes, `/proc`, …) are Docker's "init layer",
        // not the container's changes.
        let mount_points: BTreeSet<String> = spec
            .mounts()
            .iter()
            .flatten()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect();
        let lowers: Vec<PathBuf> = record.rootfs.lowers.iter().rev().cloned().collect();
        overlay_changes(&lowers, &record.rootfs.upper, &mount_points)
            .map_err(io_err("read the changes in", &record.rootfs.upper))
    }

    /// `docker update`: changes the limits of a container — live in its
    /// cgroup when it runs — and keeps them in its spec and record, so they
    /// hold after a restart; stores a new restart policy in
    /// `record.extra["restart"]`.
    pub fn update(&self, id: &str, req: &UpdateRequest) -> Result<UpdateResult, VerbError> {
        let mut record = self.runtime.record(id)?;
        let mut request: RunRequest = record
            .extra
            .get("request")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let merged = merge_resources(&request.resources, &req.resources)?;
        if let Some(policy) = &req.restart {
            crate::spec::restart::parse_restart(&restart_text(policy))
                .map_err(|e| VerbError::Invalid(e.to_string()))?;
            if policy.name != crate::spec::restart::RestartPolicyName::No && record.auto_remove {
                return Err(VerbError::Conflict(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container"
                        .into(),
                ));
            }
        }
        let delta = resources_delta(&req.resources)?;
        let st = self.runtime.state(id)?;
        if matches!(st.status, Status::Running | Status::Paused)
            && delta != LinuxResources::default()
        {
            self.runtime.update_resources(id, &delta)?;
        }
        let mut spec = self.runtime.spec(id)?;
        if let Some(linux) = spec.linux_mut() {
            let mut resources = linux.resources().clone().unwrap_or_default();
            apply_delta(&mut resources, &delta);
            linux.set_resources(Some(resources));
        }
        self.runtime.write_spec(id, &spec)?;
        request.resources = merged;
        if let Some(policy) = req.restart {
            request.restart = policy;
        }
        record.extra.insert(
            "request".into(),
            serde_json::to_value(&request).unwrap_or(Value::Null),
        );
        if let Some(policy) = &req.restart {
            record.extra.insert(
                "restart".into(),
                serde_json::to_value(policy).unwrap_or(Value::Null),
            );
        }
        self.runtime.write_record(&record)?;
        Ok(UpdateResult::default())
    }

    /// `docker container prune`: removes every container that is not
    /// running or paused and passes the filters.
    pub fn prune(&self, filters: &PruneFilters) -> Result<PruneReport, VerbError> {
        let mut report = PruneReport::default();
        for (id, size) in self.prune_candidates(filters)? {
            match self.remove(&id, false, false) {
                Ok(()) => {
                    report.space_reclaimed += size;
                    report.containers_deleted.push(id);
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %crate::error_chain(&e), "prune could not remove the container");
                }
            }
        }
        Ok(report)
    }

    /// What [`Containers::prune`] removes: every container that is neither
    /// running nor paused and passes the filters, with the bytes of its
    /// writable layer. The daemon removes them itself, under its locks.
    pub fn prune_candidates(
        &self,
        filters: &PruneFilters,
    ) -> Result<Vec<(String, u64)>, VerbError> {
        let now = SystemTime::now();
        let until = filters
            .until
            .as_deref()
            .map(|u| {
                crate::runtime::logs::parse_time_filter(u, now)
                    .map_err(|e| VerbError::Invalid(format!("invalid filter 'until={u}': {e}")))
            })
            .transpose()?;
        let mut out = Vec::new();
        for (record, st) in self.runtime.list()? {
            if matches!(st.status, Status::Running | Status::Paused) {
                continue;
            }
            if let Some(until) = until {
                let created = crate::runtime::logs::parse_time_filter(&record.created, now).ok();
                if created.is_none_or(|c| c > until) {
                    continue;
                }
            }
            if !match_labels(&filters.label, &record.labels)
                || (!filters.label_not.is_empty()
                    && match_labels(&filters.label_not, &record.labels))
            {
                continue;
            }
            let size = dir_size(&record.rootfs.upper).unwrap_or(0);
            out.push((record.id, size));
        }
        Ok(out)
    }

    /// `docker port`: the container's published ports, by `PORT/PROTO`
    /// (what create recorded in `record.extra["ports"]`, see
    /// [`super::ports`]).
    pub fn ports(&self, id: &str) -> Result<BTreeMap<String, Vec<PortBinding>>, VerbError> {
        let record = self.runtime.record(id)?;
        Ok(record
            .extra
            .get("ports")
            .cloned()
            .and_then(|v| {
                serde_json::from_value::<BTreeMap<String, Option<Vec<PortBinding>>>>(v).ok()
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(port, bindings)| bindings.map(|b| (port, b)))
            .collect())
    }

    /// Every container as `GET /containers/json?all=1` lists it, newest
    /// first; with `size`, the writable layer's size and the virtual size
    /// too. [`ContainerSummary::status`] is left empty for the caller.
    pub fn summaries(&self, size: bool) -> Result<Vec<ContainerSummary>, VerbError> {
        let mut out = Vec::new();
        let mut image_sizes: BTreeMap<String, u64> = BTreeMap::new();
        if size && let Ok(images) = self.images.summaries() {
            for s in images {
                image_sizes.insert(s.id.to_string(), s.size);
            }
        }
        let mut list = self.runtime.list()?;
        list.reverse();
        for (record, st) in list {
            let spec = self.runtime.spec(&record.id).ok();
            let command = spec
                .as_ref()
                .and_then(|s| s.process().as_ref())
                .and_then(|p| p.args().clone())
                .unwrap_or_default();
            let health = health_of(self.runtime.bundle(&record.id).dir());
            let size_rw = size.then(|| match driver_of(&record) {
                StorageDriver::Overlay => dir_size(&record.rootfs.upper).unwrap_or(0),
                StorageDriver::Vfs => self.vfs_size_rw(&record),
            });
            let image_size = image_sizes.get(&record.image_id).copied();
            out.push(summary_of(
                &record,
                &st,
                &command,
                &health,
                size_rw,
                image_size,
                spec.as_ref(),
            ));
        }
        Ok(out)
    }
}

/// One container as `GET /containers/json` lists it, from what the daemon
/// keeps of it: its record and state, its command line, its health
/// (`none` without a check), the bytes of its writable layer and of its
/// image when sizes were asked for, and its runtime spec when at hand (the
/// mounts' host sources; without it they come from the request).
/// [`ContainerSummary::status`] is left empty for the caller.
pub fn summary_of(
    record: &ContainerRecord,
    st: &crate::runtime::ContainerState,
    command: &[String],
    health: &str,
    size_rw: Option<u64>,
    image_size: Option<u64>,
    spec: Option<&oci_spec::runtime::Spec>,
) -> ContainerSummary {
    let request: Option<RunRequest> = record
        .extra
        .get("request")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok());
    let network = request
        .as_ref()
        .map_or_else(|| "none".to_string(), |r| r.network.docker_name());
    let mounts = mount_points(request.as_ref(), spec);
    let created = crate::runtime::logs::parse_time_filter(&record.created, SystemTime::now())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    ContainerSummary {
        id: record.id.clone(),
        names: vec![format!("/{}", record.name)],
        image: record.image.clone(),
        image_id: record.image_id.clone(),
        command: command.join(" "),
        created,
        ports: super::ports::summary_ports(record),
        size_rw,
        size_root_fs: size_rw.map(|rw| rw + image_size.unwrap_or(0)),
        labels: record.labels.clone(),
        state: docker_state(st),
        status: String::new(),
        host_config: json!({ "NetworkMode": network }),
        network_settings: json!({ "Networks": { network.clone(): {} } }),
        mounts,
        exit_code: st.exit_code,
        started_at: st.started_at.clone().unwrap_or_default(),
        finished_at: st.finished_at.clone().unwrap_or_default(),
        health: health.to_string(),
    }
}

/// Docker's state name: a container that never started is `created`.
pub fn docker_state(st: &crate::runtime::ContainerState) -> String {
    match st.status {
        Status::Exited if st.start_count == 0 => "created".into(),
        other => other.to_string(),
    }
}

/// The health status the health monitor keeps in the bundle's
/// `health.json` (Docker's `State.Health.Status`), or `none`.
fn health_of(bundle: &Path) -> String {
    fs::read(bundle.join("health.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v.get("Status")
                .or_else(|| v.get("status"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "none".into())
}

/// The user's mounts (not the runtime's own `/proc`, `/etc/hosts`, …).
fn mount_points(
    request: Option<&RunRequest>,
    spec: Option<&oci_spec::runtime::Spec>,
) -> Vec<MountPoint> {
    let Some(spec) = spec else {
        // No spec at hand: the mounts as the request named them.
        return request
            .map(|r| {
                r.mounts
                    .iter()
                    .filter(|m| m.kind != crate::spec::mount::MountKind::Tmpfs)
                    .map(|m| {
                        let source = m.source.clone().unwrap_or_default();
                        let name = if m.kind == crate::spec::mount::MountKind::Volume {
                            source.clone()
                        } else {
                            String::new()
                        };
                        MountPoint {
                            kind: m.kind.to_string(),
                            name,
                            source,
                            destination: m.target.clone(),
                            rw: !m.read_only,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
    };
    let wanted: BTreeMap<&str, &crate::spec::mount::MountSpec> = request
        .map(|r| r.mounts.iter().map(|m| (m.target.as_str(), m)).collect())
        .unwrap_or_default();
    spec.mounts()
        .iter()
        .flatten()
        .filter_map(|m| {
            let dest = m.destination().to_string_lossy().into_owned();
            let asked = wanted.get(dest.as_str())?;
            let source = m
                .source()
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = match asked.kind {
                crate::spec::mount::MountKind::Volume => Path::new(&source)
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            Some(MountPoint {
                kind: asked.kind.to_string(),
                name,
                source,
                destination: dest,
                rw: !asked.read_only,
            })
        })
        .collect()
}

/// Docker's `--restart` text of a policy.
fn restart_text(policy: &RestartPolicy) -> String {
    if policy.maximum_retry_count > 0 {
        format!("{}:{}", policy.name, policy.maximum_retry_count)
    } else {
        policy.name.to_string()
    }
}

/// moby's `filters.MatchKVList` for one key's values.
fn match_labels(wanted: &[String], labels: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(w.as_str()),
    })
}

/// moby's `validatePSArgs`: `ps` options may only select by pid.
fn check_ps_args(args: &str) -> Result<(), VerbError> {
    // `\s+(\S*)=\s*(PID\S*)`: a `name=PID…` output column renaming any
    // field but `pid` to PID would fool the PID column lookup.
    let words: Vec<&str> = args.split_whitespace().collect();
    for (i, word) in words.iter().enumerate().skip(1) {
        if let Some((key, value)) = word.split_once('=') {
            let value = if value.is_empty() {
                words.get(i + 1).copied().unwrap_or("")
            } else {
                value
            };
            if value.starts_with("PID") && key != "pid" {
                return Err(VerbError::PsArgs(format!("{key}={value}")));
            }
        }
    }
    Ok(())
}

/// moby's `parsePSOutput`: the titles from the first line, and every line
/// whose PID is in `pids` (with the thread lines `ps -m` prints after it,
/// whose PID is `-`), the last column taking the rest of the line.
pub fn parse_ps_output(output: &str, pids: &[u32]) -> Result<TopResult, VerbError> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_index = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or(VerbError::PsNoPid)?;
    let wanted: HashSet<u32> = pids.iter().copied().collect();
    let mut processes = Vec::new();
    let mut in_container = false;
    let row = |fields: &[&str]| -> Vec<String> {
        let n = titles.len();
        if fields.len() <= n {
            return fields.iter().map(|f| f.to_string()).collect();
        }
        let mut row: Vec<String> = fields[..n - 1].iter().map(|f| f.to_string()).collect();
        row.push(fields[n - 1..].join(" "));
        row
    };
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_index) else {
            continue;
        };
        if *pid == "-" {
            if in_container {
                processes.push(row(&fields));
            }
            continue;
        }
        let pid: u32 = pid
            .parse()
            .map_err(|_| VerbError::PsBadPid(pid.to_string()))?;
        in_container = wanted.contains(&pid);
        if in_container {
            processes.push(row(&fields));
        }
    }
    Ok(TopResult { titles, processes })
}

/// Checks an update against Docker's rules (moby `container.UpdateContainer`
/// and the daemon's resource checks) and returns the container's limits
/// after it.
fn merge_resources(current: &Resources, new: &Resources) -> Result<Resources, VerbError> {
    let conflict = |m: &str| Err(VerbError::Conflict(format!("Conflicting options: {m}")));
    if new.cpus.is_some() && (new.cpu_period.is_some() || new.cpu_quota.is_some()) {
        return conflict("Nano CPUs and CPU Period/Quota cannot both be set");
    }
    if new.cpus.is_some() && current.cpu_period.is_some() {
        return conflict("Nano CPUs cannot be updated as CPU Period has already been set");
    }
    if new.cpus.is_some() && current.cpu_quota.is_some() {
        return conflict("Nano CPUs cannot be updated as CPU Quota has already been set");
    }
    if new.cpu_period.is_some() && current.cpus.is_some() {
        return conflict("CPU Period cannot be updated as NanoCPUs has already been set");
    }
    if new.cpu_quota.is_some() && current.cpus.is_some() {
        return conflict("CPU Quota cannot be updated as NanoCPUs has already been set");
    }
    if let Some(cpus) = new.cpus
        && !(cpus > 0.0 && cpus.is_finite())
    {
        return Err(VerbError::Invalid(format!(
            "invalid --cpus {cpus}: must be positive"
        )));
    }
    if let Some(m) = new.memory {
        if (0..6 << 20).contains(&m) {
            return Err(VerbError::Invalid(
                "Minimum memory limit allowed is 6MB".into(),
            ));
        }
        if new.memory_swap.is_none()
            && let Some(swap) = current.memory_swap.filter(|s| *s > 0)
            && m > swap
        {
            return Err(VerbError::Conflict(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"
                    .into(),
            ));
        }
    }
    if let Some(w) = new.blkio_weight
        && !(10..=1000).contains(&w)
    {
        return Err(VerbError::Invalid(
            "Range of blkio weight is from 10 to 1000".into(),
        ));
    }
    let memory = new.memory.or(current.memory);
    let swap = new.memory_swap.or(current.memory_swap);
    if let (Some(m), Some(s)) = (memory, swap)
        && s > 0
        && m > 0
        && s < m
    {
        return Err(VerbError::Invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    if let (Some(m), Some(r)) = (
        memory,
        new.memory_reservation.or(current.memory_reservation),
    ) && m > 0
        && r > m
    {
        return Err(VerbError::Invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage".into(),
        ));
    }
    Ok(Resources {
        memory,
        memory_swap: swap,
        memory_reservation: new.memory_reservation.or(current.memory_reservation),
        cpu_shares: new.cpu_shares.or(current.cpu_shares),
        cpus: new.cpus.or(current.cpus),
        cpu_period: new.cpu_period.or(current.cpu_period),
        cpu_quota: new.cpu_quota.or(current.cpu_quota),
        cpuset_cpus: new
            .cpuset_cpus
            .clone()
            .or_else(|| current.cpuset_cpus.clone()),
        cpuset_mems: new
            .cpuset_mems
            .clone()
            .or_else(|| current.cpuset_mems.clone()),
        pids_limit: new.pids_limit.or(current.pids_limit),
        blkio_weight: new.blkio_weight.or(current.blkio_weight),
        oom_kill_disable: current.oom_kill_disable,
    })
}

/// The OCI resources an update writes: only what it sets. `--cpus` is a
/// quota over a 100 ms period, as at create.
fn resources_delta(new: &Resources) -> Result<LinuxResources, VerbError> {
    let mut out = LinuxResources::default();
    if new.memory.is_some() || new.memory_swap.is_some() || new.memory_reservation.is_some() {
        let mut memory = LinuxMemory::default();
        memory.set_limit(new.memory);
        memory.set_swap(new.memory_swap);
        memory.set_reservation(new.memory_reservation);
        out.set_memory(Some(memory));
    }
    let mut cpu = LinuxCpu::default();
    let mut has_cpu = false;
    if let Some(shares) = new.cpu_shares {
        cpu.set_shares(Some(shares));
        has_cpu = true;
    }
    if let Some(cpus) = new.cpus {
        let period = 100_000u64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let quota = (cpus * period as f64).round() as i64;
        cpu.set_period(Some(period));
        cpu.set_quota(Some(quota));
        has_cpu = true;
    }
    if let Some(p) = new.cpu_period {
        cpu.set_period(Some(p));
        has_cpu = true;
    }
    if let Some(q) = new.cpu_quota {
        cpu.set_quota(Some(q));
        has_cpu = true;
    }
    if let Some(c) = &new.cpuset_cpus {
        cpu.set_cpus(Some(c.clone()));
        has_cpu = true;
    }
    if let Some(m) = &new.cpuset_mems {
        cpu.set_mems(Some(m.clone()));
        has_cpu = true;
    }
    if has_cpu {
        out.set_cpu(Some(cpu));
    }
    if let Some(limit) = new.pids_limit {
        let mut pids = LinuxPids::default();
        // Docker: 0 and -1 both mean unlimited.
        pids.set_limit(if limit <= 0 { -1 } else { limit });
        out.set_pids(Some(pids));
    }
    if let Some(w) = new.blkio_weight {
        let mut io = LinuxBlockIo::default();
        io.set_weight(Some(w));
        out.set_block_io(Some(io));
    }
    Ok(out)
}

/// Writes the fields `delta` sets into `resources` (the spec's).
fn apply_delta(resources: &mut LinuxResources, delta: &LinuxResources) {
    if let Some(d) = delta.memory() {
        let mut m = resources.memory().unwrap_or_default();
        if d.limit().is_some() {
            m.set_limit(d.limit());
        }
        if d.swap().is_some() {
            m.set_swap(d.swap());
        }
        if d.reservation().is_some() {
            m.set_reservation(d.reservation());
        }
        resources.set_memory(Some(m));
    }
    if let Some(d) = delta.cpu() {
        let mut c = resources.cpu().clone().unwrap_or_default();
        if d.shares().is_some() {
            c.set_shares(d.shares());
        }
        if d.period().is_some() {
            c.set_period(d.period());
        }
        if d.quota().is_some() {
            c.set_quota(d.quota());
        }
        if d.cpus().is_some() {
            c.set_cpus(d.cpus().clone());
        }
        if d.mems().is_some() {
            c.set_mems(d.mems().clone());
        }
        resources.set_cpu(Some(c));
    }
    if let Some(p) = delta.pids() {
        resources.set_pids(Some(*p));
    }
    if let Some(d) = delta.block_io() {
        let mut b = resources.block_io().clone().unwrap_or_default();
        b.set_weight(d.weight());
        resources.set_block_io(Some(b));
    }
}

/// moby's `directory.Size`: the bytes of every file that is not a
/// directory, each inode counted once.
pub fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.len() > 0 && seen.insert((meta.dev(), meta.ino())) {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// What an overlay upper dir changes over its lowers (top first), as moby's
/// `archive.OverlayChanges` reports it: a whiteout (0/0 character device)
/// is a deletion; an opaque directory hides what the lowers had in it (each
/// hidden name is a deletion); a path the lowers have is a modification
/// (except a directory whose mode, size and mtime are unchanged); anything
/// else is an addition. The parent of an addition or deletion is a
/// modification too. Empty files and directories at `mount_points` that
/// the lowers lack are the runtime's, not changes, and a directory the
/// runtime touched only to make them is not changed by that alone.
fn overlay_changes(
    lowers: &[PathBuf],
    upper: &Path,
    mount_points: &BTreeSet<String>,
) -> io::Result<Vec<Change>> {
    let mut walk = ChangeWalk {
        lowers,
        upper,
        mount_points,
        changes: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    walk.dir("", false)?;
    let mut changes = walk.changes;
    changes.sort();
    changes.dedup();
    Ok(changes)
}

struct ChangeWalk<'a> {
    lowers: &'a [PathBuf],
    upper: &'a Path,
    mount_points: &'a BTreeSet<String>,
    changes: Vec<Change>,
    changed_dirs: HashSet<String>,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 2];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value),
        Ok(1) if value[0] == b'y'
    )
}

fn join(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

impl ChangeWalk<'_> {
    /// What the lowers show at `rel` (`/a/b`), through their whiteouts and
    /// opaque directories.
    fn below(&self, rel: &str) -> Option<fs::Metadata> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for layer in self.lowers {
            let mut stop = false;
            let mut prefix = layer.clone();
            for part in &parts[..parts.len().saturating_sub(1)] {
                prefix.push(part);
                match fs::symlink_metadata(&prefix) {
                    Ok(m) if is_whiteout(&m) || !m.is_dir() => return None,
                    Ok(_) => stop |= is_opaque(&prefix),
                    Err(_) => break,
                }
            }
            match fs::symlink_metadata(join(layer, rel)) {
                Ok(m) if is_whiteout(&m) => return None,
                Ok(m) => return Some(m),
                Err(_) if stop => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// The names the lowers show in the directory `rel`.
    fn names_below(&self, rel: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.lowers {
            let dir = join(layer, rel);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if hidden.contains(&name) || names.contains(&name) {
                    continue;
                }
                match entry.metadata() {
                    Ok(m) if is_whiteout(&m) => {
                        hidden.insert(name);
                    }
                    Ok(_) => {
                        names.insert(name);
                    }
                    Err(_) => {}
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        names
    }

    fn record(&mut self, path: String, kind: u8) {
        if kind != CHANGE_MODIFIED {
            let parent = match path.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(i) => path[..i].to_string(),
            };
            if parent != "/" && self.changed_dirs.insert(parent.clone()) {
                self.changes.push(Change {
                    path: parent,
                    kind: CHANGE_MODIFIED,
                });
            }
        }
        self.changes.push(Change { path, kind });
    }

    /// Walks the upper directory `rel`; `hidden` when an opaque ancestor
    /// hides the lowers' content.
    fn dir(&mut self, rel: &str, hidden: bool) -> io::Result<()> {
        let upper_dir = join(self.upper, rel);
        let mut names: Vec<String> = fs::read_dir(&upper_dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let present: BTreeSet<String> = names.iter().cloned().collect();
        let opaque_here = !rel.is_empty() && is_opaque(&upper_dir);
        if hidden || opaque_here {
            // Everything the lowers had here and the upper lacks is gone.
            for gone in self.names_below(rel) {
                if !present.contains(&gone) {
                    self.record(format!("{rel}/{gone}"), CHANGE_DELETED);
                }
            }
        }
        for name in names {
            let path = format!("{rel}/{name}");
            let meta = fs::symlink_metadata(join(self.upper, &path))?;
            if is_whiteout(&meta) {
                self.record(path, CHANGE_DELETED);
                continue;
            }
            let below = self.below(&path);
            let is_mount_point = self.mount_points.contains(&path);
            let holds_mount_point = self
                .mount_points
                .iter()
                .any(|m| m.starts_with(&format!("{path}/")));
            if below.is_none()
                && is_mount_point
                && ((meta.is_dir() && fs::read_dir(join(self.upper, &path))?.next().is_none())
                    || (meta.is_file() && meta.len() == 0))
            {
                continue;
            }
            let kind = match &below {
                None => Some(CHANGE_ADDED),
                Some(old) if old.is_dir() && meta.is_dir() => {
                    let same = old.mode() == meta.mode()
                        && (holds_mount_point
                            || (old.len() == meta.len()
                                && old.mtime() == meta.mtime()
                                && old.mtime_nsec() == meta.mtime_nsec()));
                    (!same || is_opaque(&join(self.upper, &path))).then_some(CHANGE_MODIFIED)
                }
                Some(_) => Some(CHANGE_MODIFIED),
            };
            if meta.is_dir() && kind.is_some() {
                self.changed_dirs.insert(path.clone());
            }
            if let Some(kind) = kind {
                self.record(path.clone(), kind);
            }
            if meta.is_dir() {
                let hides = hidden
                    || below
                        .as_ref()
                        .is_some_and(|_| is_opaque(&join(self.upper, &path)));
                self.dir(&path, hides)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_keeps_the_containers_lines_and_joins_the_command() {
        let out = "UID PID PPID C STIME TTY TIME CMD\n\
                   root 1 0 0 10:00 ? 00:00:01 /sbin/init\n\
                   root 4242 4200 0 10:01 ? 00:00:00 sleep 1000 extra words\n\
                   root 4243 4242 0 10:01 ? 00:00:00 sh\n";
        let top = parse_ps_output(out, &[4242, 4243]).unwrap();
        assert_eq!(
            top.titles,
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        );
        assert_eq!(top.processes.len(), 2);
        assert_eq!(top.processes[0][7], "sleep 1000 extra words");
        assert_eq!(top.processes[1][1], "4243");
        // Thread lines (`ps -m`) follow their process.
        let threads = "PID TID CMD\n7 - a\n- 8 -\n9 - b\n- 10 -\n";
        let top = parse_ps_output(threads, &[7]).unwrap();
        assert_eq!(top.processes, [vec!["7", "-", "a"], vec!["-", "8", "-"]]);
        assert!(matches!(
            parse_ps_output("USER CMD\nroot x\n", &[1]),
            Err(VerbError::PsNoPid)
        ));
    }

    #[test]
    fn ps_args_may_not_rename_columns_to_pid() {
        assert!(check_ps_args("-o pid,comm").is_ok());
        assert!(check_ps_args("-o pid=PID").is_ok());
        assert!(matches!(
            check_ps_args("-o user=PID"),
            Err(VerbError::PsArgs(_))
        ));
    }

    #[test]
    fn updates_follow_dockers_rules() {
        let current = Resources {
            memory: Some(100 << 20),
            memory_swap: Some(200 << 20),
            cpus: Some(1.0),
            ..Resources::default()
        };
        let grow = Resources {
            memory: Some(300 << 20),
            ..Resources::default()
        };
        assert!(matches!(
            merge_resources(&current, &grow),
            Err(VerbError::Conflict(_))
        ));
        let with_swap = Resources {
            memory_swap: Some(600 << 20),
            ..grow.clone()
        };
        let merged = merge_resources(&current, &with_swap).unwrap();
        assert_eq!(merged.memory, Some(300 << 20));
        assert_eq!(merged.cpus, Some(1.0));
        let period = Resources {
            cpu_period: Some(50_000),
            ..Resources::default()
        };
        assert!(matches!(
            merge_resources(&current, &period),
            Err(VerbError::Conflict(_))
        ));
        let tiny = Resources {
            memory: Some(1 << 20),
            memory_swap: Some(-1),
            ..Resources::default()
        };
        assert!(matches!(
            merge_resources(&Resources::default(), &tiny),
            Err(VerbError::Invalid(_))
        ));
        let delta = resources_delta(&Resources {
            cpus: Some(0.5),
            pids_limit: Some(0),
            ..Resources::default()
        })
        .unwrap();
        let cpu = delta.cpu().clone().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(delta.pids().map(|p| p.limit()), Some(-1));
        assert!(delta.memory().is_none());
    }

    #[test]
    fn deltas_merge_into_the_specs_resources() {
        let mut spec = LinuxResources::default();
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(10));
        memory.set_swap(Some(20));
        spec.set_memory(Some(memory));
        let delta = resources_delta(&Resources {
            memory_reservation: Some(5),
            cpu_shares: Some(512),
            ..Resources::default()
        })
        .unwrap();
        apply_delta(&mut spec, &delta);
        let m = spec.memory().unwrap();
        assert_eq!(
            (m.limit(), m.swap(), m.reservation()),
            (Some(10), Some(20), Some(5))
        );
        assert_eq!(spec.cpu().as_ref().and_then(LinuxCpu::shares), Some(512));
    }

    #[test]
    fn changes_of_plain_files_against_a_lower() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/passwd"), "root\n").unwrap();
        fs::create_dir_all(lower.join("tmp")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/passwd"), "root\napp\n").unwrap();
        fs::create_dir_all(upper.join("new/deeper")).unwrap();
        fs::write(upper.join("new/deeper/file"), "x").unwrap();
        // A mount point the runtime made: not a change.
        fs::create_dir_all(upper.join("proc")).unwrap();
        let mounts: BTreeSet<String> = ["/proc".to_string()].into();
        let changes = overlay_changes(&[lower], &upper, &mounts).unwrap();
        let shown: Vec<(u8, &str)> = changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
        assert!(
            shown.contains(&(CHANGE_MODIFIED, "/etc/passwd")),
            "{shown:?}"
        );
        assert!(shown.contains(&(CHANGE_ADDED, "/new")), "{shown:?}");
        assert!(
            shown.contains(&(CHANGE_ADDED, "/new/deeper/file")),
            "{shown:?}"
        );
        assert!(!shown.iter().any(|(_, p)| *p == "/proc"), "{shown:?}");
    }

    #[test]
    fn dir_size_counts_files_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/c"), [0u8; 20]).unwrap();
        assert_eq!(dir_size(dir.path()).unwrap(), 120);
    }
}
