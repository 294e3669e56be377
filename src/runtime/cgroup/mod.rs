//! cgroups v1 and v2: limits, membership, freezing and statistics.
//!
//! This module owns the directories of container cgroups: creating them
//! (with the controllers they need), writing the limits of an OCI
//! [`LinuxResources`] into them, moving processes in, freezing, signalling,
//! reading statistics and removing them. It must never touch a cgroup it was
//! not asked for (beyond enabling controllers in the ancestors of one it
//! creates on v2): every path is relative to the hierarchy, checked to stay
//! inside it, and chosen by the caller. Which cgroup a container gets is the
//! caller's decision; so is killing what is inside before deleting it.
//!
//! The mode is detected at run time ([`Hierarchy::detect`]): a host with v1
//! controllers (including the "hybrid" layout, v1 controllers plus a cgroup2
//! mount at `unified`) is managed as v1, one directory per hierarchy; a host
//! with only cgroup2 is managed as v2, one directory with the controllers
//! enabled down the path. Every root is a parameter ([`Hierarchy::v1`],
//! [`Hierarchy::v2`]), so the logic is tested against a temp dir laid out
//! like `/sys/fs/cgroup`.
//!
//! Limits are planned as plain values (a list of file writes, one planner
//! per version) and then written in order by a thin loop; the plans are unit
//! tested value by value.
//!
//! Limits a version cannot express but that only tune behaviour (v2 has no
//! swappiness and cannot disable the OOM killer; kernel memory limits are
//! obsolete) are skipped with a debug log, as runc does. Limits it cannot
//! enforce (real-time CPU bandwidth and `net_cls`/`net_prio` on v2, `unified`
//! entries on v1) are errors.
//!
//! Not done here:
//! - the controllers of a hybrid host's cgroup2 mount (often `hugetlb`): in
//!   v1 mode that mount is not used;
//! - the systemd driver: cgroups are managed as files ("cgroupfs", as Docker's
//!   `--exec-opt native.cgroupdriver=cgroupfs`);
//!
//! v2 has no device files: device rules become an eBPF
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program (`devices.rs`) attached to the
//! cgroup (`crate::sys::attach_device_filter`).

mod devices;
mod mountinfo;
mod plan;
mod stats;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use rustix::io::Errno;
use rustix::process::Signal;
use thiserror::Error;
use tracing::{debug, trace};

pub use mountinfo::{CgroupMounts, V1Mount};
use plan::Write;
pub use stats::{CgroupStats, CpuStats, MemoryStats, PidsStats};

/// Where the kernel describes the mounts of the calling process.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How long [`Cgroup::freeze`] and [`Cgroup::thaw`] wait for the state to
/// settle before giving up.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Cgroup::delete`] keeps retrying a cgroup that is still busy
/// (its last processes are exiting).
const DELETE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the cgroup manager.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// The mount table could not be read.
    #[error("cannot read the mount table {}", path.display())]
    ReadMountInfo {
        /// The mountinfo file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No cgroup file system is mounted.
    #[error("no cgroup file system is mounted")]
    NotMounted,
    /// The device rules could not be attached as an eBPF program (v2).
    #[error("cannot apply the device rules to {}", path.display())]
    DeviceFilter {
        /// The cgroup directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup path is not a plain relative path.
    #[error("invalid cgroup path {path:?}: it must be relative, not empty and without `..`")]
    InvalidPath {
        /// The path given.
        path: PathBuf,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cgroup to open does not exist.
    #[error("cgroup directory {} does not exist", path.display())]
    NotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// A cgroup file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup file could not be written.
    #[error("cannot write {value:?} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup file holds something other than the kernel documents.
    #[error("unexpected content in {}: {content:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The content that could not be parsed.
        content: String,
    },
    /// A limit needs a controller this cgroup does not have.
    #[error("the {controller} controller is not available for cgroup {}", path.display())]
    ControllerMissing {
        /// The controller, e.g. `memory`.
        controller: String,
        /// The cgroup, relative to the hierarchy.
        path: PathBuf,
    },
    /// A resource value cannot be expressed to the kernel.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// The OCI field, e.g. `memory.swap`.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A resource has no equivalent in this cgroup version.
    #[error("{what} is not supported on cgroup {version}")]
    Unsupported {
        /// The resource.
        what: &'static str,
        /// The version in use.
        version: CgroupVersion,
    },
    /// Freezing or thawing did not settle in time.
    #[error("cgroup {} did not become {target} in time (state: {state})", path.display())]
    FreezeTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The state asked for.
        target: &'static str,
        /// The last state read.
        state: String,
    },
    /// A process of the cgroup could not be signalled.
    #[error("cannot send signal {signal} to process {pid}")]
    Signal {
        /// The process.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cgroup directory could not be opened.
    #[error("cannot open cgroup directory {}", path.display())]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove cgroup directory {}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why (`EBUSY` when processes are still in it).
        #[source]
        source: io::Error,
    },
}

/// The cgroup version a hierarchy is managed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    /// cgroup v1: one hierarchy per controller (or group of controllers).
    V1,
    /// cgroup v2: one unified hierarchy.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// How cgroups are managed, as `docker info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// Directories written directly under the cgroup mounts.
    Cgroupfs,
}

impl Driver {
    /// The name Docker uses for this driver.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cgroupfs => "cgroupfs",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cgroup hierarchy of the host: where cgroups are created and which
/// controllers they get.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    kind: HierarchyKind,
}

#[derive(Debug, Clone)]
enum HierarchyKind {
    V1 {
        mounts: Vec<V1Mount>,
    },
    V2 {
        root: PathBuf,
        /// Controllers to enable and use, in the kernel's order.
        controllers: Vec<String>,
    },
}

impl Hierarchy {
    /// Detects the hierarchy of this host from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        Self::detect_from(Path::new(MOUNTINFO))
    }

    /// Detects the hierarchy from the mount table at `mountinfo`.
    ///
    /// A host with any v1 controller mounted is managed as v1 (a hybrid
    /// host's cgroup2 mount carries at most a few controllers and is left
    /// alone, as runc and Docker do); otherwise the cgroup2 mount is used.
    pub fn detect_from(mountinfo: &Path) -> Result<Self, CgroupError> {
        let text = fs::read_to_string(mountinfo).map_err(|source| CgroupError::ReadMountInfo {
            path: mountinfo.to_owned(),
            source,
        })?;
        Self::from_mounts(CgroupMounts::parse(&text))
    }

    /// Chooses the hierarchy among parsed mounts (see [`Hierarchy::detect_from`]).
    pub fn from_mounts(mounts: CgroupMounts) -> Result<Self, CgroupError> {
        if mounts.has_v1_controllers() {
            Ok(Self::v1(mounts.v1))
        } else if let Some(root) = mounts.v2 {
            Self::v2(&root)
        } else {
            Err(CgroupError::NotMounted)
        }
    }

    /// A v1 hierarchy made of these mounts. Named hierarchies
    /// (`name=systemd`) are kept: cgroups are created and joined there too,
    /// as runc does, so tools that look there find the container.
    pub fn v1(mounts: Vec<V1Mount>) -> Self {
        let mut unique: Vec<V1Mount> = Vec::with_capacity(mounts.len());
        for mount in mounts {
            if !unique.iter().any(|m| m.mount_point == mount.mount_point) {
                unique.push(mount);
            }
        }
        Self {
            kind: HierarchyKind::V1 { mounts: unique },
        }
    }

    /// A v2 hierarchy rooted at `root` (a cgroup2 mount point, or a temp
    /// dir laid out like one). Its controllers are read from
    /// `root/cgroup.controllers`; all of them are enabled for new cgroups.
    pub fn v2(root: &Path) -> Result<Self, CgroupError> {
        let controllers = read_words(&root.join("cgroup.controllers"))?;
        Ok(Self {
            kind: HierarchyKind::V2 {
                root: root.to_owned(),
                controllers,
            },
        })
    }

    /// Keeps only the listed controllers: new v2 cgroups enable only these,
    /// and v1 hierarchies carrying none of them are not used. Useful to
    /// leave a controller to another manager, or to use a hybrid host's
    /// cgroup2 mount for membership and freezing alone (`&[]`).
    pub fn restrict_controllers(self, keep: &[&str]) -> Self {
        let kind = match self.kind {
            HierarchyKind::V1 { mounts } => HierarchyKind::V1 {
                mounts: mounts
                    .into_iter()
                    .filter(|m| m.controllers.iter().any(|c| keep.contains(&c.as_str())))
                    .collect(),
            },
            HierarchyKind::V2 { root, controllers } => HierarchyKind::V2 {
                root,
                controllers: controllers
                    .into_iter()
                    .filter(|c| keep.contains(&c.as_str()))
                    .collect(),
            },
        };
        Self { kind }
    }

    /// The cgroup version in use.
    pub fn version(&self) -> CgroupVersion {
        match self.kind {
            HierarchyKind::V1 { .. } => CgroupVersion::V1,
            HierarchyKind::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The driver: always [`Driver::Cgroupfs`].
    pub fn driver(&self) -> Driver {
        Driver::Cgroupfs
    }

    /// The controllers available, sorted (named v1 hierarchies excluded).
    pub fn controllers(&self) -> Vec<String> {
        let set: BTreeSet<&str> = match &self.kind {
            HierarchyKind::V1 { mounts } => mounts
                .iter()
                .flat_map(|m| m.controllers.iter())
                .filter(|c| !c.starts_with("name="))
                .map(String::as_str)
                .collect(),
            HierarchyKind::V2 { controllers, .. } => {
                controllers.iter().map(String::as_str).collect()
            }
        };
        set.into_iter().map(str::to_owned).collect()
    }

    /// True when [`Cgroup::apply`] enforces device rules: with the v1
    /// `devices` controller, or on v2 always (an eBPF program attached to
    /// the cgroup).
    pub fn can_filter_devices(&self) -> bool {
        match &self.kind {
            HierarchyKind::V1 { mounts } => mounts.iter().any(|m| m.has_controller("devices")),
            HierarchyKind::V2 { .. } => true,
        }
    }

    /// Creates the cgroup at `rel` (e.g. `stack/<container-id>`) and any
    /// missing parents, or takes it as it is if it exists. `rel` is taken
    /// from the root of each mount, not from the calling process's own
    /// cgroup, as Docker's cgroupfs driver places `/docker/<id>`.
    ///
    /// v1: the directory is made in every hierarchy; new `cpuset` directories
    /// get `cpuset.cpus` and `cpuset.mems` copied from their parent, without
    /// which no process could join them. v2: every ancestor enables the
    /// hierarchy's controllers in `cgroup.subtree_control`, so the new
    /// cgroup has them (a controller the kernel refuses is left out and
    /// reported when a limit needs it).
    pub fn create(&self, rel: impl AsRef<Path>) -> Result<Cgroup, CgroupError> {
        let rel = checked_rel(rel.as_ref())?;
        let kind = match &self.kind {
            HierarchyKind::V1 { mounts } => v1::create(mounts, &rel)?,
            HierarchyKind::V2 { root, controllers } => v2::create(root, controllers, &rel)?,
        };
        debug!(cgroup = %rel.display(), "cgroup created");
        Ok(Cgroup { rel, kind })
    }

    /// Opens the existing cgroup at `rel`, e.g. to adopt a container again
    /// after a restart. Fails with [`CgroupError::NotFound`] if it is missing
    /// (in any hierarchy, on v1).
    pub fn open(&self, rel: impl AsRef<Path>) -> Result<Cgroup, CgroupError> {
        let rel = checked_rel(rel.as_ref())?;
        let kind = match &self.kind {
            HierarchyKind::V1 { mounts } => v1::open(mounts, &rel)?,
            HierarchyKind::V2 { root, controllers } => v2::open(root, controllers, &rel)?,
        };
        Ok(Cgroup { rel, kind })
    }
}

/// One cgroup (a container's), in every hierarchy it lives in.
#[derive(Debug, Clone)]
pub struct Cgroup {
    rel: PathBuf,
    kind: CgroupKind,
}

#[derive(Debug, Clone)]
enum CgroupKind {
    V1(Vec<v1::Dir>),
    V2(v2::Dir),
}

impl Cgroup {
    /// The cgroup's path relative to the hierarchy, as given to
    /// [`Hierarchy::create`].
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// The cgroup version.
    pub fn version(&self) -> CgroupVersion {
        match self.kind {
            CgroupKind::V1(_) => CgroupVersion::V1,
            CgroupKind::V2(_) => CgroupVersion::V2,
        }
    }

    /// The directory holding `controller`'s files for this cgroup (on v2
    /// the one directory, if the controller is enabled there; `"cgroup"`
    /// names the core files), or `None` without that controller.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match &self.kind {
            CgroupKind::V1(dirs) => v1::dir_of(dirs, controller),
            CgroupKind::V2(dir) => dir.dir_of(controller),
        }
    }

    /// Writes the limits of `resources`, at creation or as a live update
    /// (`docker update`). Only the fields that are set are written; pass
    /// `devices: None` on updates that do not change device rules.
    ///
    /// Values follow the OCI runtime spec: `memory.swap` is memory plus swap
    /// (v2 writes the swap part to `memory.swap.max`), `-1` means
    /// unlimited, `0` means unset. Every controller the limits need is
    /// checked first, so a missing one fails before anything is written.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let writes = match &self.kind {
            CgroupKind::V1(dirs) => {
                let has_file = |controller: &str, file: &str| {
                    v1::dir_of(dirs, controller).is_some_and(|d| d.join(file).exists())
                };
                v1::plan(resources, &has_file)?
            }
            CgroupKind::V2(dir) => {
                let has_file = |controller: &str, file: &str| {
                    dir.dir_of(controller)
                        .is_some_and(|d| d.join(file).exists())
                };
                v2::plan(resources, &has_file)?
            }
        };
        self.execute(&writes)?;
        if let (CgroupKind::V2(dir), Some(rules)) = (&self.kind, resources.devices())
            && !rules.is_empty()
        {
            let program: Vec<crate::sys::BpfInsn> = devices::program(rules)
                .map_err(|e| CgroupError::DeviceFilter {
                    path: dir.path.clone(),
                    source: std::io::Error::other(e),
                })?
                .into_iter()
                .map(|i| crate::sys::BpfInsn {
                    code: i.code,
                    regs: i.regs,
                    off: i.off,
                    imm: i.imm,
                })
                .collect();
            let fd = self.open_dir()?.ok_or_else(|| CgroupError::DeviceFilter {
                path: dir.path.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
            crate::sys::attach_device_filter(std::os::fd::AsFd::as_fd(&fd), &program).map_err(
                |source| CgroupError::DeviceFilter {
                    path: dir.path.clone(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    /// Moves the process `pid` (all its threads) into this cgroup, in
    /// every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for dir in self.dirs() {
            write_value(&dir.join("cgroup.procs"), &value)?;
        }
        debug!(cgroup = %self.rel.display(), pid, "process added to cgroup");
        Ok(())
    }

    /// The processes in this cgroup and the cgroups below it, sorted (on
    /// v1, in any of its hierarchies).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = BTreeSet::new();
        for dir in self.dirs() {
            collect_procs(dir, &mut pids)?;
        }
        Ok(pids.into_iter().collect())
    }

    /// Freezes every process of the cgroup (`docker pause`) and waits until
    /// the kernel reports it frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.kind {
            CgroupKind::V1(dirs) => v1::freeze(self.freezer_dir(dirs)?),
            CgroupKind::V2(dir) => v2::set_frozen(&dir.path, true),
        }
    }

    /// Thaws the cgroup (`docker unpause`) and waits until it runs again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.kind {
            CgroupKind::V1(dirs) => v1::thaw(self.freezer_dir(dirs)?),
            CgroupKind::V2(dir) => v2::set_frozen(&dir.path, false),
        }
    }

    /// True when the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.kind {
            CgroupKind::V1(dirs) => v1::is_frozen(self.freezer_dir(dirs)?),
            CgroupKind::V2(dir) => v2::is_frozen(&dir.path),
        }
    }

    /// Sends `signal` to every process of the cgroup and of the cgroups
    /// below it.
    ///
    /// On v2, `SIGKILL` goes through `cgroup.kill` when the kernel has it
    /// (5.14+), which also catches processes forked meanwhile. Otherwise the
    /// cgroup is frozen while the signals are sent, so nothing forks past
    /// the list (as runc's `signalAllProcesses`), and thawed again unless it
    /// was frozen already; a cgroup that cannot be frozen is signalled
    /// anyway. Processes that exit meanwhile are not an error.
    pub fn kill_all(&self, signal: Signal) -> Result<(), CgroupError> {
        if let CgroupKind::V2(dir) = &self.kind
            && signal == Signal::KILL
        {
            let kill = dir.path.join("cgroup.kill");
            if kill.exists() {
                return write_value(&kill, "1");
            }
        }
        let froze = match self.is_frozen() {
            Ok(false) => match self.freeze() {
                Ok(()) => true,
                Err(error) => {
                    debug!(cgroup = %self.rel.display(), %error, "signalling without freezing");
                    false
                }
            },
            Ok(true) | Err(_) => false,
        };
        let sent = self.signal_each(signal);
        let thawed = if froze { self.thaw() } else { Ok(()) };
        sent.and(thawed)
    }

    fn signal_each(&self, signal: Signal) -> Result<(), CgroupError> {
        for pid in self.procs()? {
            let Some(target) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            else {
                continue;
            };
            trace!(pid, signal = signal.as_raw(), "kill");
            match rustix::process::kill_process(target, signal) {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(errno) => {
                    return Err(CgroupError::Signal {
                        pid,
                        signal: signal.as_raw(),
                        source: errno.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Current usage and limits. A section is `None` when its controller is
    /// not available to this cgroup.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.kind {
            CgroupKind::V1(dirs) => v1::stats(dirs),
            CgroupKind::V2(dir) => v2::stats(dir),
        }
    }

    /// How many processes the kernel OOM killer has killed in this cgroup
    /// (and below it), so the runtime can report `OOMKilled`: compare the
    /// count before and after the container ran. v1 reads `oom_kill` of
    /// `memory.oom_control` (kernels before 4.13 have no such counter and
    /// read as 0), v2 `oom_kill` of `memory.events`.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let (dir, file) = match &self.kind {
            CgroupKind::V1(dirs) => (v1::dir_of(dirs, "memory"), "memory.oom_control"),
            CgroupKind::V2(dir) => (dir.dir_of("memory"), "memory.events"),
        };
        let dir = dir.ok_or_else(|| self.missing("memory"))?;
        let counters = stats::read_flat_keyed(&dir.join(file))?;
        Ok(counters.get("oom_kill").copied().unwrap_or(0))
    }

    /// Opens the v2 cgroup directory for `clone3(CLONE_INTO_CGROUP)`, so a
    /// child starts inside the cgroup instead of being moved in after it
    /// started. `None` on v1, which has no such thing.
    pub fn open_dir(&self) -> Result<Option<OwnedFd>, CgroupError> {
        use rustix::fs::{Mode, OFlags};
        match &self.kind {
            CgroupKind::V1(_) => Ok(None),
            CgroupKind::V2(dir) => rustix::fs::open(
                &dir.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(Some)
            .map_err(|errno| CgroupError::OpenDir {
                path: dir.path.clone(),
                source: errno.into(),
            }),
        }
    }

    /// Removes the cgroup, and any cgroups created below it, in every
    /// hierarchy. Retries for a short while as long as it is busy (its last
    /// processes are still exiting); a cgroup already gone is not an error.
    pub fn delete(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            remove_tree_retrying(dir)?;
        }
        debug!(cgroup = %self.rel.display(), "cgroup deleted");
        Ok(())
    }

    /// Every directory of this cgroup (one per v1 hierarchy, one on v2).
    fn dirs(&self) -> Vec<&Path> {
        match &self.kind {
            CgroupKind::V1(dirs) => dirs.iter().map(|d| d.path.as_path()).collect(),
            CgroupKind::V2(dir) => vec![dir.path.as_path()],
        }
    }

    fn freezer_dir<'a>(&self, dirs: &'a [v1::Dir]) -> Result<&'a Path, CgroupError> {
        v1::dir_of(dirs, "freezer").ok_or_else(|| self.missing("freezer"))
    }

    fn missing(&self, controller: &str) -> CgroupError {
        CgroupError::ControllerMissing {
            controller: controller.to_owned(),
            path: self.rel.clone(),
        }
    }

    /// Writes a plan: checks every controller is there, then writes in
    /// order. A write marked `retry_later` that the kernel refuses with
    /// `EINVAL` is tried again once after the others (it depended on a value
    /// written later); an `optional` write to a file that does not exist is
    /// skipped.
    fn execute(&self, writes: &[Write]) -> Result<(), CgroupError> {
        let mut targets = Vec::with_capacity(writes.len());
        for write in writes {
            let dir = self
                .dir(&write.controller)
                .ok_or_else(|| self.missing(&write.controller))?;
            targets.push((dir.join(&write.file), write));
        }
        let mut deferred = Vec::new();
        for (path, write) in &targets {
            match write_file(path, &write.value) {
                Ok(()) => {}
                Err(e) if write.optional && e.kind() == io::ErrorKind::NotFound => {
                    debug!(file = %path.display(), "cgroup file missing, optional limit skipped");
                }
                Err(e)
                    if write.retry_later
                        && e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) =>
                {
                    deferred.push((path, write));
                }
                Err(source) => {
                    return Err(CgroupError::Write {
                        path: path.clone(),
                        value: write.value.clone(),
                        source,
                    });
                }
            }
        }
        for (path, write) in deferred {
            write_value(path, &write.value)?;
        }
        Ok(())
    }
}

/// Checks that a cgroup path is relative and stays inside the hierarchy.
fn checked_rel(rel: &Path) -> Result<PathBuf, CgroupError> {
    let mut clean = PathBuf::new();
    for component in rel.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => {
                return Err(CgroupError::InvalidPath {
                    path: rel.to_owned(),
                });
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath {
            path: rel.to_owned(),
        });
    }
    Ok(clean)
}

/// Writes `value` to a cgroup file in one `write(2)`, as the kernel wants
/// it: the file must exist (cgroup files cannot be created).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    trace!(file = %path.display(), value, "cgroup write");
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_file(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })
}

/// A file of space-separated words, such as `cgroup.controllers`.
fn read_words(path: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(read_string(path)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Reads a single-number file; `max` (or a v1 "unlimited" value) is `None`.
fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = read_string(path)?;
    if text == "max" {
        return Ok(None);
    }
    let value = parse_u64(path, &text)?;
    Ok((value < v1::UNLIMITED_FLOOR).then_some(value))
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = read_string(path)?;
    parse_u64(path, &text)
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: text.to_owned(),
    })
}

/// Creates `base/rel` one level at a time, calling `on_level(parent, dir)`
/// for every level (new or existing), so a level can be prepared before the
/// next one is made below it.
fn create_levels(
    base: &Path,
    rel: &Path,
    mut on_level: impl FnMut(&Path, &Path) -> Result<(), CgroupError>,
) -> Result<PathBuf, CgroupError> {
    let mut dir = base.to_owned();
    for part in rel.iter() {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::CreateDir { path: dir, source });
            }
        }
        on_level(&parent, &dir)?;
    }
    Ok(dir)
}

/// Adds the pids of `dir`'s `cgroup.procs` and of its sub-cgroups'. A
/// sub-cgroup removed meanwhile is skipped.
fn collect_procs(dir: &Path, pids: &mut BTreeSet<u32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&procs) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: procs,
                source,
            });
        }
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let pid = line.trim().parse().map_err(|_| CgroupError::Parse {
            path: procs.clone(),
            content: line.to_owned(),
        })?;
        pids.insert(pid);
    }
    for sub in subdirs(dir)? {
        collect_procs(&sub, pids)?;
    }
    Ok(())
}

/// The sub-cgroups of `dir` (none if `dir` is gone).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect())
}

/// Removes `dir` and its sub-cgroups, deepest first, retrying while the
/// kernel says they are busy.
fn remove_tree_retrying(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + DELETE_TIMEOUT;
    let mut pause = Duration::from_millis(10);
    loop {
        match remove_tree(dir) {
            Err(CgroupError::Remove { source, .. })
                if source.raw_os_error() == Some(Errno::BUSY.raw_os_error())
                    && Instant::now() < deadline =>
            {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError::Remove {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Waits until `check` is true, polling with a growing pause, for at most
/// `timeout`. Returns whether it became true.
fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_must_stay_inside_the_hierarchy() {
        assert_eq!(
            checked_rel(Path::new("stack/abc")).unwrap(),
            PathBuf::from("stack/abc")
        );
        assert_eq!(
            checked_rel(Path::new("./stack//abc/")).unwrap(),
            PathBuf::from("stack/abc")
        );
        for bad in ["", ".", "/stack/abc", "stack/../../etc", ".."] {
            assert!(
                matches!(
                    checked_rel(Path::new(bad)),
                    Err(CgroupError::InvalidPath { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn hierarchy_prefers_v1_controllers_and_falls_back_to_cgroup2() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let v2 = Hierarchy::from_mounts(CgroupMounts {
            v1: vec![V1Mount {
                mount_point: "/x/systemd".into(),
                controllers: vec!["name=systemd".into()],
            }],
            v2: Some(dir.path().to_owned()),
        })
        .unwrap();
        assert_eq!(v2.version(), CgroupVersion::V2);
        assert_eq!(v2.controllers(), ["cpu", "memory", "pids"]);
        assert!(v2.can_filter_devices());
        assert_eq!(v2.driver().as_str(), "cgroupfs");

        let v1 = Hierarchy::from_mounts(CgroupMounts {
            v1: vec![
                V1Mount {
                    mount_point: "/x/cpu,cpuacct".into(),
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                },
                V1Mount {
                    mount_point: "/x/devices".into(),
                    controllers: vec!["devices".into()],
                },
            ],
            v2: Some(dir.path().to_owned()),
        })
        .unwrap();
        assert_eq!(v1.version(), CgroupVersion::V1);
        assert_eq!(v1.controllers(), ["cpu", "cpuacct", "devices"]);
        assert!(v1.can_filter_devices());
        assert!(!v1.restrict_controllers(&["cpu"]).can_filter_devices());

        assert!(matches!(
            Hierarchy::from_mounts(CgroupMounts::default()),
            Err(CgroupError::NotMounted)
        ));
    }

    #[test]
    fn optional_writes_skip_missing_files_and_missing_controllers_fail_first() {
        // Plain files never refuse a value, so the retry of refused writes
        // is exercised on the real kernel (tests/it/cgroup.rs).
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "memory\n").unwrap();
        fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
        let cg_dir = dir.path().join("c");
        fs::create_dir(&cg_dir).unwrap();
        fs::write(cg_dir.join("cgroup.controllers"), "memory\n").unwrap();
        fs::write(cg_dir.join("a"), "").unwrap();
        let cg = Hierarchy::v2(dir.path()).unwrap().open("c").unwrap();
        cg.execute(&[
            Write::new("memory", "a", 1).retry_later(),
            Write::new("memory", "missing", 2).optional(),
        ])
        .unwrap();
        assert_eq!(fs::read_to_string(cg_dir.join("a")).unwrap(), "1");
        assert!(!cg_dir.join("missing").exists());
        let err = cg
            .execute(&[Write::new("io", "io.weight", 100)])
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "io"),
            "{err}"
        );
    }
}
