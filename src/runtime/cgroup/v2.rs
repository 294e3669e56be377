//! cgroup v2: one directory, controllers enabled down the path through
//! `cgroup.subtree_control` (Documentation/admin-guide/cgroup-v2.rst).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};
use tracing::debug;

use super::plan::{Limit, Write, cpuset_writes, device_number, hugepage_size, rdma_lines};
use super::stats::{CpuStats, MemoryStats, PidsStats, read_flat_keyed, read_flat_keyed_if_present};
use super::{
    CgroupError, CgroupKind, CgroupStats, CgroupVersion, FREEZE_TIMEOUT, create_levels, read_limit,
    read_u64, read_words, wait_until, write_file, write_value,
};

/// The cgroup's directory and the controllers enabled in it.
#[derive(Debug, Clone)]
pub(super) struct Dir {
    pub(super) path: PathBuf,
    controllers: BTreeSet<String>,
}

impl Dir {
    /// The directory, if `controller` is enabled in it (`"cgroup"`, the
    /// core files, always is).
    pub(super) fn dir_of(&self, controller: &str) -> Option<&Path> {
        (controller == "cgroup" || self.controllers.contains(controller))
            .then_some(self.path.as_path())
    }
}

/// Makes the cgroup, enabling `wanted` controllers in every ancestor's
/// `cgroup.subtree_control` on the way down.
pub(super) fn create(
    root: &Path,
    wanted: &[String],
    rel: &Path,
) -> Result<CgroupKind, CgroupError> {
    let path = create_levels(root, rel, |parent, _| enable_controllers(parent, wanted))?;
    open_dir(path, wanted)
}

/// Finds the existing cgroup.
pub(super) fn open(root: &Path, wanted: &[String], rel: &Path) -> Result<CgroupKind, CgroupError> {
    let path = root.join(rel);
    if !path.is_dir() {
        return Err(CgroupError::NotFound { path });
    }
    open_dir(path, wanted)
}

fn open_dir(path: PathBuf, wanted: &[String]) -> Result<CgroupKind, CgroupError> {
    let controllers = read_words(&path.join("cgroup.controllers"))?
        .into_iter()
        .filter(|c| wanted.contains(c))
        .collect();
    Ok(CgroupKind::V2(Dir { path, controllers }))
}

/// The controllers to add to a `cgroup.subtree_control`: wanted, available
/// in that cgroup, and not yet enabled; in the order wanted.
fn subtree_additions(wanted: &[String], available: &[String], enabled: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .cloned()
        .collect()
}

/// Enables the wanted controllers for the children of `dir`. All at once
/// first; if the kernel refuses (one controller can fail alone, e.g. `cpu`
/// while real-time tasks run outside the root), one by one, as runc does,
/// leaving out the ones refused: a limit that needs one then fails with
/// [`CgroupError::ControllerMissing`].
fn enable_controllers(dir: &Path, wanted: &[String]) -> Result<(), CgroupError> {
    let available = read_words(&dir.join("cgroup.controllers"))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = read_words(&subtree)?;
    let additions = subtree_additions(wanted, &available, &enabled);
    if additions.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = additions.iter().map(|c| format!("+{c}")).collect();
    if write_file(&subtree, &all.join(" ")).is_ok() {
        return Ok(());
    }
    for controller in &additions {
        if let Err(error) = write_file(&subtree, &format!("+{controller}")) {
            debug!(cgroup = %dir.display(), controller, %error, "controller not enabled");
        }
    }
    Ok(())
}

/// How a [`Limit`] is written in v2: `max` for none.
fn value(limit: Limit) -> String {
    match limit {
        Limit::Max => "max".to_owned(),
        Limit::Value(v) => v.to_string(),
    }
}

/// cpu.shares (2–262144, default 1024) to cpu.weight (1–10000, default
/// 100), the linear mapping of runc's `ConvertCPUSharesToCgroupV2Value`
/// and the OCI spec's cgroup v2 notes: 1024 becomes 39, not 100.
pub(super) fn cpu_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio.weight (10–1000) to io.weight (1–10000), as runc's
/// `ConvertBlkIOToIOWeightValue`.
pub(super) fn io_weight(blkio_weight: u16) -> u64 {
    let weight = u64::from(blkio_weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// The writes that set `resources`. `has_file(controller, file)` says
/// whether a file exists, to prefer BFQ's `io.bfq.weight`.
pub(super) fn plan(
    resources: &LinuxResources,
    has_file: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<Write>, CgroupError> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        writes.extend(cpuset_writes(cpu)?);
    }
    if let Some(memory) = resources.memory() {
        plan_memory(memory, &mut writes)?;
    }
    if let Some(cpu) = resources.cpu() {
        plan_cpu(cpu, &mut writes)?;
    }
    if let Some(pids) = resources.pids() {
        let limit = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_owned()
        };
        writes.push(Write::new("pids", "pids.max", limit));
    }
    if let Some(block_io) = resources.block_io() {
        plan_io(block_io, has_file, &mut writes)?;
    }
    for hugepage in resources.hugepage_limits().iter().flatten() {
        let size = hugepage_size(hugepage.page_size())?;
        let limit = Limit::from_oci(Some(hugepage.limit())).unwrap_or(Limit::Value(0));
        writes.push(Write::new(
            "hugetlb",
            format!("hugetlb.{size}.max"),
            value(limit),
        ));
    }
    if let Some(network) = resources.network()
        && (network.class_id().is_some()
            || network.priorities().as_ref().is_some_and(|p| !p.is_empty()))
    {
        // net_cls and net_prio have no v2 counterpart: traffic is classified
        // by eBPF or nftables matching on the cgroup path instead.
        return Err(CgroupError::Unsupported {
            what: "network class and priorities",
            version: CgroupVersion::V2,
        });
    }
    if let Some(rdma) = resources.rdma() {
        writes.extend(rdma_lines(rdma)?);
    }
    // Device rules are not files on v2: `Cgroup::apply` attaches them as an
    // eBPF program.
    if let Some(unified) = resources.unified() {
        let mut entries: Vec<_> = unified.iter().collect();
        entries.sort();
        for (key, raw) in entries {
            writes.push(unified_write(key, raw)?);
        }
    }
    Ok(writes)
}

/// Memory: `memory.max`, `memory.swap.max` and `memory.low`. The OCI spec
/// gives memory+swap; v2 limits swap alone, so the swap part is what is
/// written (runc's `ConvertMemorySwapToCgroupV2Value`). The two limits are
/// independent in v2, so any order works.
fn plan_memory(memory: &LinuxMemory, writes: &mut Vec<Write>) -> Result<(), CgroupError> {
    let limit = Limit::from_oci(memory.limit());
    if let Some(swap) = swap_max(limit, memory.swap())? {
        let write = Write::new("memory", "memory.swap.max", &swap);
        // Without swap accounting there is no such file; "no limit" and "no
        // swap" are then what the kernel does anyway (runc ignores it too).
        writes.push(if swap == "max" || swap == "0" {
            write.optional()
        } else {
            write
        });
    }
    if let Some(limit) = limit {
        writes.push(Write::new("memory", "memory.max", value(limit)));
    }
    if let Some(reservation) = Limit::from_oci(memory.reservation()) {
        writes.push(Write::new("memory", "memory.low", value(reservation)));
    }
    if memory.swappiness().is_some() {
        debug!("memory swappiness ignored: cgroup v2 has no per-cgroup swappiness");
    }
    if memory.disable_oom_killer() == Some(true) {
        debug!("disabling the OOM killer ignored: cgroup v2 cannot do it");
    }
    if memory.kernel_tcp().is_some() {
        debug!("kernel TCP memory limit ignored: obsolete since Linux 5.4");
    }
    Ok(())
}

/// The `memory.swap.max` value for an OCI memory limit and memory+swap total.
fn swap_max(memory: Option<Limit>, total: Option<i64>) -> Result<Option<String>, CgroupError> {
    let invalid = |reason| CgroupError::InvalidValue {
        field: "memory.swap",
        value: total.unwrap_or_default().to_string(),
        reason,
    };
    // As on v1: lifting the memory limit without a word about swap lifts both.
    if memory == Some(Limit::Max) && total.is_none() {
        return Ok(Some("max".to_owned()));
    }
    match Limit::from_oci(total) {
        None => Ok(None),
        Some(Limit::Max) => Ok(Some("max".to_owned())),
        Some(Limit::Value(total)) => match memory {
            Some(Limit::Value(memory)) if total >= memory => Ok(Some((total - memory).to_string())),
            Some(Limit::Value(_)) => Err(invalid("memory+swap must be at least the memory limit")),
            _ => Err(invalid("a swap limit needs a memory limit on cgroup v2")),
        },
    }
}

fn plan_cpu(cpu: &LinuxCpu, writes: &mut Vec<Write>) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
        writes.push(Write::new("cpu", "cpu.weight", cpu_weight(shares)));
    }
    if let Some(idle) = cpu.idle() {
        writes.push(Write::new("cpu", "cpu.idle", idle));
    }
    // `cpu.max` is "$QUOTA $PERIOD". As runc does, a period alone comes
    // with "max" (no quota); a quota alone keeps the current period.
    let quota = Limit::from_oci(cpu.quota());
    let period = cpu.period().filter(|p| *p > 0);
    if quota.is_some() || period.is_some() {
        let mut max = value(quota.unwrap_or(Limit::Max));
        if let Some(period) = period {
            max.push_str(&format!(" {period}"));
        }
        writes.push(Write::new("cpu", "cpu.max", max));
    }
    if let Some(burst) = cpu.burst() {
        writes.push(Write::new("cpu", "cpu.max.burst", burst));
    }
    if cpu.realtime_runtime().is_some_and(|r| r != 0)
        || cpu.realtime_period().is_some_and(|p| p != 0)
    {
        return Err(CgroupError::Unsupported {
            what: "real-time CPU bandwidth",
            version: CgroupVersion::V2,
        });
    }
    Ok(())
}

/// io weights and throttles. With BFQ active, `io.bfq.weight` takes the
/// blkio weight as it is (both are 1–1000); otherwise `io.weight` gets it
/// converted. Throttles go to `io.max` one key at a time (the kernel keeps
/// the keys not written); a rate of 0 means no limit.
fn plan_io(
    block_io: &LinuxBlockIo,
    has_file: &dyn Fn(&str, &str) -> bool,
    writes: &mut Vec<Write>,
) -> Result<(), CgroupError> {
    let bfq = has_file("io", "io.bfq.weight");
    let weight = |w: u16| {
        if bfq {
            ("io.bfq.weight", u64::from(w))
        } else {
            ("io.weight", io_weight(w))
        }
    };
    if let Some(w) = block_io.weight() {
        let (file, w) = weight(w);
        writes.push(Write::new("io", file, w));
    }
    if block_io.leaf_weight().is_some() {
        debug!("blkio leaf weight ignored: cgroup v2 has none");
    }
    for device in block_io.weight_device().iter().flatten() {
        if let Some(w) = device.weight() {
            let number = device_number("blockIO.weightDevice", device.major(), device.minor())?;
            let (file, w) = weight(w);
            writes.push(Write::new("io", file, format!("{number} {w}")));
        }
    }
    let throttles = [
        (block_io.throttle_read_bps_device(), "rbps"),
        (block_io.throttle_write_bps_device(), "wbps"),
        (block_io.throttle_read_iops_device(), "riops"),
        (block_io.throttle_write_iops_device(), "wiops"),
    ];
    for (devices, key) in throttles {
        for device in devices.iter().flatten() {
            let number = device_number("blockIO.throttle", device.major(), device.minor())?;
            let rate = match device.rate() {
                0 => "max".to_owned(),
                rate => rate.to_string(),
            };
            writes.push(Write::new("io", "io.max", format!("{number} {key}={rate}")));
        }
    }
    Ok(())
}

/// A raw `unified` entry (`"memory.high": "1G"`): written as given to the
/// file of that name. The key must name a controller file of this cgroup;
/// the `cgroup.*` core files are this module's to manage.
fn unified_write(key: &str, raw: &str) -> Result<Write, CgroupError> {
    let invalid = |reason| CgroupError::InvalidValue {
        field: "unified",
        value: key.to_owned(),
        reason,
    };
    let Some((controller, rest)) = key.split_once('.') else {
        return Err(invalid("expected a file name such as memory.high"));
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    };
    if !plain(controller) || !plain(rest) || controller.contains('.') {
        return Err(invalid("expected a file name such as memory.high"));
    }
    if controller == "cgroup" {
        return Err(invalid("cgroup core files cannot be set"));
    }
    Ok(Write::new(controller, key, raw))
}

/// Freezes or thaws through `cgroup.freeze` and waits for `cgroup.events`
/// to report it (`frozen 1` once every task has stopped). A freeze that
/// never settles is undone.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let freeze = dir.join("cgroup.freeze");
    write_value(&freeze, if frozen { "1" } else { "0" })?;
    if wait_until(FREEZE_TIMEOUT, || Ok(is_frozen(dir)? == frozen))? {
        debug!(cgroup = %dir.display(), frozen, "cgroup freezer settled");
        return Ok(());
    }
    if frozen {
        // Best effort: the timeout is the error to report.
        let _ = write_file(&freeze, "0");
    }
    Err(CgroupError::FreezeTimeout {
        path: dir.to_owned(),
        target: if frozen { "frozen" } else { "thawed" },
        state: if frozen { "not frozen" } else { "frozen" }.to_owned(),
    })
}

/// True when `cgroup.events` says `frozen 1`.
pub(super) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    let events = read_flat_keyed(&dir.join("cgroup.events"))?;
    Ok(events.get("frozen") == Some(&1))
}

/// Reads the statistics. `cpu.stat` has the usage counters even without the
/// cpu controller (the throttling ones come with it).
pub(super) fn stats(dir: &Dir) -> Result<CgroupStats, CgroupError> {
    let memory = dir.dir_of("memory").map(memory_stats).transpose()?;
    let cpu = read_flat_keyed_if_present(&dir.path.join("cpu.stat"))?.map(|stat| {
        let counter = |key: &str| stat.get(key).copied().unwrap_or(0);
        let micros = |key: &str| counter(key).saturating_mul(1000);
        CpuStats {
            usage_ns: micros("usage_usec"),
            user_ns: micros("user_usec"),
            system_ns: micros("system_usec"),
            periods: counter("nr_periods"),
            throttled_periods: counter("nr_throttled"),
            throttled_ns: micros("throttled_usec"),
        }
    });
    let pids = dir
        .dir_of("pids")
        .map(|path| {
            Ok::<_, CgroupError>(PidsStats {
                current: read_u64(&path.join("pids.current"))?,
                limit: read_limit(&path.join("pids.max"))?,
            })
        })
        .transpose()?;
    Ok(CgroupStats { memory, cpu, pids })
}

fn memory_stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let stat = read_flat_keyed(&dir.join("memory.stat"))?;
    let counter = |key: &str| stat.get(key).copied().unwrap_or(0);
    let optional = |file: &str| {
        let path = dir.join(file);
        if path.exists() {
            read_u64(&path).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(MemoryStats {
        usage: read_u64(&dir.join("memory.current"))?,
        // memory.peak appeared in Linux 5.19.
        max_usage: optional("memory.peak")?,
        limit: read_limit(&dir.join("memory.max"))?,
        cache: counter("file"),
        inactive_file: counter("inactive_file"),
        swap_usage: optional("memory.swap.current")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;

    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
        LinuxNetworkBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
        LinuxWeightDeviceBuilder,
    };

    use super::super::Hierarchy;
    use super::*;

    const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    /// A temp dir laid out like a v2 mount with `stack/c1` already made,
    /// files as the kernel would have them (a plain mkdir does not grow
    /// them).
    fn v2_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let files: &[(&str, &str)] = &[
            ("cgroup.controllers", ALL),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
        ];
        for level in ["", "stack", "stack/c1"] {
            let dir = root.path().join(level);
            fs::create_dir_all(&dir).unwrap();
            for (file, content) in files {
                fs::write(dir.join(file), content).unwrap();
            }
        }
        let leaf = root.path().join("stack/c1");
        for file in [
            "memory.max",
            "memory.swap.max",
            "memory.low",
            "cpu.weight",
            "cpu.max",
            "cpuset.cpus",
            "cpuset.mems",
            "pids.max",
            "io.weight",
            "io.max",
            "cgroup.freeze",
        ] {
            fs::write(leaf.join(file), "").unwrap();
        }
        fs::write(leaf.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        root
    }

    fn read(root: &Path, file: &str) -> String {
        fs::read_to_string(root.join("stack/c1").join(file)).unwrap()
    }

    fn pairs(writes: &[Write]) -> Vec<(&str, &str)> {
        writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn no_files(_: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn create_enables_controllers_in_every_ancestor_but_not_the_leaf() {
        let root = v2_tree();
        fs::write(root.path().join("cgroup.subtree_control"), "cpu memory\n").unwrap();
        let hierarchy = Hierarchy::v2(root.path())
            .unwrap()
            .restrict_controllers(&["cpu", "cpuset", "io", "memory", "pids"]);
        assert_eq!(hierarchy.version(), CgroupVersion::V2);
        let cgroup = hierarchy.create("stack/c1").unwrap();
        let subtree = |level: &str| {
            fs::read_to_string(root.path().join(level).join("cgroup.subtree_control")).unwrap()
        };
        // Only the missing ones at the root, everything wanted below it.
        assert_eq!(subtree(""), "+cpuset +io +pids");
        assert_eq!(subtree("stack"), "+cpuset +cpu +io +memory +pids");
        assert_eq!(subtree("stack/c1"), "");
        assert_eq!(cgroup.path(), Path::new("stack/c1"));
        assert!(cgroup.dir("memory").is_some());
        assert!(cgroup.dir("hugetlb").is_none(), "restricted away");
        assert!(cgroup.open_dir().unwrap().is_some());
    }

    #[test]
    fn subtree_additions_skip_unavailable_and_enabled_controllers() {
        let s = |v: &[&str]| v.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            subtree_additions(
                &s(&["cpu", "io", "memory", "pids"]),
                &s(&["cpu", "memory", "pids"]),
                &s(&["memory"])
            ),
            s(&["cpu", "pids"])
        );
    }

    #[test]
    fn limits_land_in_v2_files_with_v2_values() {
        let root = v2_tree();
        let cgroup = Hierarchy::v2(root.path())
            .unwrap()
            .create("stack/c1")
            .unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(96 << 20)
                    .reservation(16 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024_u64)
                    .quota(150_000)
                    .period(100_000_u64)
                    .cpus("0,2-3")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500_u16)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();
        let p = root.path();
        assert_eq!(read(p, "memory.max"), "67108864");
        assert_eq!(read(p, "memory.swap.max"), "33554432");
        assert_eq!(read(p, "memory.low"), "16777216");
        assert_eq!(read(p, "cpu.weight"), "39");
        assert_eq!(read(p, "cpu.max"), "150000 100000");
        assert_eq!(read(p, "cpuset.cpus"), "0,2-3");
        assert_eq!(read(p, "cpuset.mems"), "0");
        assert_eq!(read(p, "pids.max"), "32");
        assert_eq!(read(p, "io.weight"), "4950");

        // A live update lifting the limits.
        let update = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(-1)
                    .period(100_000_u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .build()
            .unwrap();
        cgroup.apply(&update).unwrap();
        assert_eq!(read(p, "memory.max"), "max");
        assert_eq!(read(p, "memory.swap.max"), "max");
        assert_eq!(read(p, "cpu.max"), "max 100000");
        assert_eq!(read(p, "pids.max"), "max");
        // Untouched by the update.
        assert_eq!(read(p, "cpu.weight"), "39");
    }

    #[test]
    fn limit_needing_a_missing_controller_writes_nothing() {
        let root = v2_tree();
        fs::write(
            root.path().join("stack/c1/cgroup.controllers"),
            "cpu memory\n",
        )
        .unwrap();
        let cgroup = Hierarchy::v2(root.path())
            .unwrap()
            .create("stack/c1")
            .unwrap();
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
            .build()
            .unwrap();
        let err = cgroup.apply(&resources).unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "pids"),
            "{err}"
        );
        assert_eq!(read(root.path(), "memory.max"), "");
    }

    #[test]
    fn shares_and_blkio_weights_convert_like_runc() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1), 1, "clamped to the v1 minimum");
        assert_eq!(cpu_weight(1 << 20), 10_000, "clamped to the v1 maximum");
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(500), 4950);
        assert_eq!(io_weight(1000), 10_000);
    }

    #[test]
    fn swap_part_is_total_minus_memory() {
        let mem = |m| Some(Limit::Value(m));
        assert_eq!(
            swap_max(mem(100), Some(300)).unwrap().as_deref(),
            Some("200")
        );
        assert_eq!(swap_max(mem(100), Some(100)).unwrap().as_deref(), Some("0"));
        assert_eq!(
            swap_max(mem(100), Some(-1)).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(swap_max(mem(100), None).unwrap(), None);
        assert_eq!(swap_max(mem(100), Some(0)).unwrap(), None);
        assert_eq!(
            swap_max(Some(Limit::Max), None).unwrap().as_deref(),
            Some("max")
        );
        assert!(swap_max(mem(100), Some(50)).is_err());
        assert!(swap_max(None, Some(50)).is_err());
        assert!(swap_max(Some(Limit::Max), Some(50)).is_err());
    }

    #[test]
    fn quota_alone_keeps_the_period_and_zero_swap_is_optional() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(20_000).build().unwrap())
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1 << 20)
                    .swap(1 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let writes = plan(&resources, &no_files).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("memory.swap.max", "0"),
                ("memory.max", "1048576"),
                ("cpu.max", "20000")
            ]
        );
        assert!(writes[0].optional);
    }

    #[test]
    fn io_throttles_and_device_weights_go_to_io_files() {
        let throttle = |rate| {
            vec![
                LinuxThrottleDeviceBuilder::default()
                    .major(8)
                    .minor(16)
                    .rate(rate)
                    .build()
                    .unwrap(),
            ]
        };
        let resources = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(100_u16)
                    .weight_device(vec![
                        LinuxWeightDeviceBuilder::default()
                            .major(8)
                            .minor(0)
                            .weight(200_u16)
                            .build()
                            .unwrap(),
                    ])
                    .throttle_read_bps_device(throttle(1_048_576_u64))
                    .throttle_write_iops_device(throttle(0_u64))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            pairs(&plan(&resources, &no_files).unwrap()),
            [
                ("io.weight", "910"),
                ("io.weight", "8:0 1920"),
                ("io.max", "8:16 rbps=1048576"),
                ("io.max", "8:16 wiops=max"),
            ]
        );
        let bfq = |_: &str, file: &str| file == "io.bfq.weight";
        assert_eq!(
            pairs(&plan(&resources, &bfq).unwrap())[..2],
            [("io.bfq.weight", "100"), ("io.bfq.weight", "8:0 200")]
        );
    }

    #[test]
    fn device_rules_are_skipped_and_unified_keys_checked() {
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .build()
                    .unwrap(),
            ])
            .unified(HashMap::from([
                ("memory.high".to_owned(), "1073741824".to_owned()),
                ("pids.max".to_owned(), "7".to_owned()),
            ]))
            .build()
            .unwrap();
        let writes = plan(&resources, &no_files).unwrap();
        assert_eq!(
            pairs(&writes),
            [("memory.high", "1073741824"), ("pids.max", "7")]
        );
        assert_eq!(writes[0].controller, "memory");
        for bad in [
            "cgroup.procs",
            "../memory.max",
            "memory",
            "memory.max/x",
            ".max",
        ] {
            assert!(unified_write(bad, "1").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn realtime_and_network_limits_are_unsupported() {
        let rt = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .realtime_runtime(950_000)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(matches!(
            plan(&rt, &no_files),
            Err(CgroupError::Unsupported { .. })
        ));
        let net = LinuxResourcesBuilder::default()
            .network(
                LinuxNetworkBuilder::default()
                    .class_id(0x10001_u32)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(matches!(
            plan(&net, &no_files),
            Err(CgroupError::Unsupported { .. })
        ));
    }

    #[test]
    fn freeze_waits_for_the_frozen_event() {
        let root = v2_tree();
        let cgroup = Hierarchy::v2(root.path())
            .unwrap()
            .create("stack/c1")
            .unwrap();
        // The kernel would flip cgroup.events itself; here it already says so.
        fs::write(
            root.path().join("stack/c1/cgroup.events"),
            "populated 1\nfrozen 1\n",
        )
        .unwrap();
        cgroup.freeze().unwrap();
        assert_eq!(read(root.path(), "cgroup.freeze"), "1");
        assert!(cgroup.is_frozen().unwrap());
    }

    #[test]
    fn stats_parse_memory_cpu_pids_and_oom_kills() {
        let root = v2_tree();
        let leaf = root.path().join("stack/c1");
        fs::write(leaf.join("memory.current"), "10485760\n").unwrap();
        fs::write(leaf.join("memory.peak"), "20971520\n").unwrap();
        fs::write(leaf.join("memory.max"), "67108864\n").unwrap();
        fs::write(leaf.join("memory.swap.current"), "0\n").unwrap();
        fs::write(
            leaf.join("memory.stat"),
            "anon 6291456\nfile 4194304\nkernel 131072\nactive_file 1048576\ninactive_file 3145728\n",
        )
        .unwrap();
        fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 41\noom 3\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(
            leaf.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 20\nnr_throttled 5\nthrottled_usec 7000\nnr_bursts 0\nburst_usec 0\n",
        )
        .unwrap();
        fs::write(leaf.join("pids.current"), "4\n").unwrap();
        fs::write(leaf.join("pids.max"), "32\n").unwrap();
        let cgroup = Hierarchy::v2(root.path())
            .unwrap()
            .create("stack/c1")
            .unwrap();
        let stats = cgroup.stats().unwrap();
        assert_eq!(
            stats.memory,
            Some(MemoryStats {
                usage: 10_485_760,
                max_usage: Some(20_971_520),
                limit: Some(67_108_864),
                cache: 4_194_304,
                inactive_file: 3_145_728,
                swap_usage: Some(0),
            })
        );
        assert_eq!(
            stats.cpu,
            Some(CpuStats {
                usage_ns: 1_500_000,
                user_ns: 1_000_000,
                system_ns: 500_000,
                periods: 20,
                throttled_periods: 5,
                throttled_ns: 7_000_000,
            })
        );
        assert_eq!(
            stats.pids,
            Some(PidsStats {
                current: 4,
                limit: Some(32)
            })
        );
        assert_eq!(cgroup.oom_kills().unwrap(), 2);
    }

    #[test]
    fn delete_removes_nested_cgroups_and_tolerates_absence() {
        let root = v2_tree();
        let hierarchy = Hierarchy::v2(root.path()).unwrap();
        let cgroup = hierarchy.create("stack/c1").unwrap();
        // Plain files cannot be rmdir'ed as cgroup files vanish with their
        // directory: leave only a nested empty cgroup to remove.
        for entry in fs::read_dir(root.path().join("stack/c1")).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        fs::create_dir_all(root.path().join("stack/c1/inner/deeper")).unwrap();
        cgroup.delete().unwrap();
        assert!(!root.path().join("stack/c1").exists());
        cgroup.delete().unwrap();
        assert!(matches!(
            hierarchy.open("stack/c1"),
            Err(CgroupError::NotFound { .. })
        ));
    }
}
