//! cgroup v1: one directory per hierarchy, limits in each controller's own
//! files (Documentation/admin-guide/cgroup-v1/).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};
use tracing::debug;

use super::plan::{Limit, Write, cpuset_writes, device_number, hugepage_size, rdma_lines};
use super::stats::{CpuStats, MemoryStats, PidsStats, read_flat_keyed, read_flat_keyed_if_present};
use super::{
    CgroupError, CgroupKind, CgroupStats, CgroupVersion, FREEZE_TIMEOUT, V1Mount, create_levels,
    read_limit, read_string, read_u64, wait_until, write_file, write_value,
};

/// v1 shows "no limit" as the largest page-aligned `i64`
/// (`PAGE_COUNTER_MAX` pages): 0x7FFFFFFFFFFFF000 with 4 KiB pages,
/// 0x7FFFFFFFFFFF0000 with 64 KiB ones. Anything from here up is unlimited.
pub(super) const UNLIMITED_FLOOR: u64 = 0x7FFF_FFFF_FFFF_0000;

/// `cpuacct.stat` counts in `USER_HZ` ticks, which Linux fixes at 100 per
/// second for user space whatever the kernel's own HZ (times(2)).
const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

/// The cgroup's directory in one hierarchy.
#[derive(Debug, Clone)]
pub(super) struct Dir {
    /// The hierarchy's controllers (`name=…` for a named one).
    controllers: Vec<String>,
    /// `<mount point>/<cgroup path>`.
    pub(super) path: PathBuf,
}

/// The directory holding `controller`'s files; `"cgroup"` (the core files,
/// present in every hierarchy) is the first one.
pub(super) fn dir_of<'a>(dirs: &'a [Dir], controller: &str) -> Option<&'a Path> {
    if controller == "cgroup" {
        return dirs.first().map(|d| d.path.as_path());
    }
    dirs.iter()
        .find(|d| d.controllers.iter().any(|c| c == controller))
        .map(|d| d.path.as_path())
}

/// Makes the cgroup's directory in every hierarchy.
pub(super) fn create(mounts: &[V1Mount], rel: &Path) -> Result<CgroupKind, CgroupError> {
    let mut dirs = Vec::with_capacity(mounts.len());
    for mount in mounts {
        let cpuset = mount.has_controller("cpuset");
        let path = create_levels(&mount.mount_point, rel, |parent, dir| {
            if cpuset {
                inherit_cpuset(parent, dir)?;
            }
            Ok(())
        })?;
        dirs.push(Dir {
            controllers: mount.controllers.clone(),
            path,
        });
    }
    Ok(CgroupKind::V1(dirs))
}

/// Finds the cgroup's existing directory in every hierarchy.
pub(super) fn open(mounts: &[V1Mount], rel: &Path) -> Result<CgroupKind, CgroupError> {
    let mut dirs = Vec::with_capacity(mounts.len());
    for mount in mounts {
        let path = mount.mount_point.join(rel);
        if !path.is_dir() {
            return Err(CgroupError::NotFound { path });
        }
        dirs.push(Dir {
            controllers: mount.controllers.clone(),
            path,
        });
    }
    Ok(CgroupKind::V1(dirs))
}

/// A new cpuset starts with no CPUs and no memory nodes, and a cgroup
/// without them cannot take a process (ENOSPC). Copy the parent's, as runc
/// does, unless the directory has its own already.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read_string(&dir.join(file))?.is_empty() {
            let inherited = read_string(&parent.join(file))?;
            write_value(&dir.join(file), &inherited)?;
        }
    }
    Ok(())
}

/// How a [`Limit`] is written in v1: `-1` for none.
fn value(limit: Limit) -> String {
    match limit {
        Limit::Max => "-1".to_owned(),
        Limit::Value(v) => v.to_string(),
    }
}

/// The writes that set `resources`, in an order the kernel accepts.
/// `has_file(controller, file)` says whether a file exists, to pick between
/// the files of different I/O schedulers.
pub(super) fn plan(
    resources: &LinuxResources,
    has_file: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<Write>, CgroupError> {
    let mut writes = Vec::new();
    // cpuset first: it is what lets processes join at all.
    if let Some(cpu) = resources.cpu() {
        writes.extend(cpuset_writes(cpu)?);
    }
    if let Some(memory) = resources.memory() {
        plan_memory(memory, &mut writes)?;
    }
    if let Some(cpu) = resources.cpu() {
        plan_cpu(cpu, &mut writes);
    }
    if let Some(pids) = resources.pids() {
        // runc: any limit that is not positive means "no limit".
        let limit = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_owned()
        };
        writes.push(Write::new("pids", "pids.max", limit));
    }
    if let Some(block_io) = resources.block_io() {
        plan_blkio(block_io, has_file, &mut writes)?;
    }
    for hugepage in resources.hugepage_limits().iter().flatten() {
        let size = hugepage_size(hugepage.page_size())?;
        let limit = Limit::from_oci(Some(hugepage.limit())).unwrap_or(Limit::Value(0));
        writes.push(Write::new(
            "hugetlb",
            format!("hugetlb.{size}.limit_in_bytes"),
            value(limit),
        ));
    }
    if let Some(network) = resources.network() {
        if let Some(class_id) = network.class_id() {
            writes.push(Write::new("net_cls", "net_cls.classid", class_id));
        }
        for priority in network.priorities().iter().flatten() {
            writes.push(Write::new(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", priority.name(), priority.priority()),
            ));
        }
    }
    if let Some(rdma) = resources.rdma() {
        writes.extend(rdma_lines(rdma)?);
    }
    for rule in resources.devices().iter().flatten() {
        if let Some(write) = device_rule(rule)? {
            writes.push(write);
        }
    }
    if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::Unsupported {
            what: "unified (cgroup v2) resources",
            version: CgroupVersion::V1,
        });
    }
    Ok(writes)
}

/// Memory and memory+swap. The kernel keeps `memory.limit_in_bytes <=
/// memory.memsw.limit_in_bytes` at every step and refuses (EINVAL) a write
/// that would break it, so which goes first depends on whether the limits
/// grow or shrink. Memory is written first and retried after memsw when
/// refused: if the new memory limit is above the old memsw, the new memsw
/// (at least as high) makes room for it; otherwise both writes are valid in
/// this order. runc decides the same by reading the current limit first.
fn plan_memory(memory: &LinuxMemory, writes: &mut Vec<Write>) -> Result<(), CgroupError> {
    let limit = Limit::from_oci(memory.limit());
    let mut swap = Limit::from_oci(memory.swap());
    // runc: lifting the memory limit without a word about swap lifts both.
    if limit == Some(Limit::Max) && swap.is_none() {
        swap = Some(Limit::Max);
    }
    if let (Some(Limit::Value(mem)), Some(Limit::Value(total))) = (limit, swap)
        && total < mem
    {
        return Err(CgroupError::InvalidValue {
            field: "memory.swap",
            value: total.to_string(),
            reason: "memory+swap must be at least the memory limit",
        });
    }
    if let Some(limit) = limit {
        writes.push(Write::new("memory", "memory.limit_in_bytes", value(limit)).retry_later());
    }
    if let Some(swap) = swap {
        let write = Write::new("memory", "memory.memsw.limit_in_bytes", value(swap)).retry_later();
        // Without swap accounting there is no memsw file; "no limit" is
        // then what the kernel does anyway.
        writes.push(if swap == Limit::Max {
            write.optional()
        } else {
            write
        });
    }
    if let Some(reservation) = Limit::from_oci(memory.reservation()) {
        writes.push(Write::new(
            "memory",
            "memory.soft_limit_in_bytes",
            value(reservation),
        ));
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::InvalidValue {
                field: "memory.swappiness",
                value: swappiness.to_string(),
                reason: "must be between 0 and 100",
            });
        }
        writes.push(Write::new("memory", "memory.swappiness", swappiness));
    }
    if let Some(disable) = memory.disable_oom_killer() {
        writes.push(Write::new(
            "memory",
            "memory.oom_control",
            if disable { "1" } else { "0" },
        ));
    }
    if memory.kernel_tcp().is_some() {
        debug!("kernel TCP memory limit ignored: obsolete since Linux 5.4");
    }
    Ok(())
}

fn plan_cpu(cpu: &LinuxCpu, writes: &mut Vec<Write>) {
    if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
        writes.push(Write::new("cpu", "cpu.shares", shares));
    }
    // The kernel checks the new period against the current quota (and the
    // parent's bandwidth); it may refuse it until the quota is written, as
    // runc handles it.
    if let Some(period) = cpu.period().filter(|p| *p > 0) {
        writes.push(Write::new("cpu", "cpu.cfs_period_us", period).retry_later());
    }
    if let Some(quota) = Limit::from_oci(cpu.quota()) {
        writes.push(Write::new("cpu", "cpu.cfs_quota_us", value(quota)));
    }
    if let Some(burst) = cpu.burst() {
        writes.push(Write::new("cpu", "cpu.cfs_burst_us", burst));
    }
    if let Some(idle) = cpu.idle() {
        writes.push(Write::new("cpu", "cpu.idle", idle));
    }
    // runc's order: the period bounds the runtime.
    if let Some(period) = cpu.realtime_period().filter(|p| *p > 0) {
        writes.push(Write::new("cpu", "cpu.rt_period_us", period));
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
        writes.push(Write::new("cpu", "cpu.rt_runtime_us", runtime));
    }
}

/// blkio weights and throttles. Kernels since 5.0 have no CFQ: the weight
/// files are BFQ's (`blkio.bfq.weight`), used when `blkio.weight` is absent,
/// as runc does. `leaf_weight` was CFQ only and is ignored.
fn plan_blkio(
    block_io: &LinuxBlockIo,
    has_file: &dyn Fn(&str, &str) -> bool,
    writes: &mut Vec<Write>,
) -> Result<(), CgroupError> {
    let bfq = !has_file("blkio", "blkio.weight") && has_file("blkio", "blkio.bfq.weight");
    let (weight_file, weight_device_file) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(weight) = block_io.weight() {
        writes.push(Write::new("blkio", weight_file, weight));
    }
    if block_io.leaf_weight().is_some() {
        debug!("blkio leaf weight ignored: the CFQ scheduler is gone since Linux 5.0");
    }
    for device in block_io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            let number = device_number("blockIO.weightDevice", device.major(), device.minor())?;
            writes.push(Write::new(
                "blkio",
                weight_device_file,
                format!("{number} {weight}"),
            ));
        }
    }
    let throttles = [
        (
            block_io.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
        ),
        (
            block_io.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
        ),
        (
            block_io.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
        ),
        (
            block_io.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
        ),
    ];
    for (devices, file) in throttles {
        for device in devices.iter().flatten() {
            let number = device_number("blockIO.throttle", device.major(), device.minor())?;
            // A rate of 0 removes the limit.
            writes.push(Write::new(
                "blkio",
                file,
                format!("{number} {}", device.rate()),
            ));
        }
    }
    Ok(())
}

/// One rule for `devices.allow` or `devices.deny`: `type major:minor access`,
/// `*` for a missing (or negative) number. FIFOs are not device nodes and
/// the controller has no rules for them.
fn device_rule(rule: &LinuxDeviceCgroup) -> Result<Option<Write>, CgroupError> {
    let kind = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            debug!("device rule for FIFOs ignored: the devices controller has none");
            return Ok(None);
        }
    };
    let number = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_owned(), |n| n.to_string())
    };
    let access = rule.access().as_deref().unwrap_or("");
    let access = if access.is_empty() { "rwm" } else { access };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidValue {
            field: "devices.access",
            value: access.to_owned(),
            reason: "expected a combination of r, w and m",
        });
    }
    let file = if rule.allow() {
        "devices.allow"
    } else {
        "devices.deny"
    };
    Ok(Some(Write::new(
        "devices",
        file,
        format!(
            "{kind} {}:{} {access}",
            number(rule.major()),
            number(rule.minor())
        ),
    )))
}

/// Freezes through `freezer.state` and waits for `FROZEN` (it reads
/// `FREEZING` meanwhile). As runc's v1 freezer does, the write is repeated,
/// and once in a while the cgroup is thawed for a moment, which helps when
/// processes keep forking. If it never settles it is thawed again: a cgroup
/// stuck half frozen is worse than one not frozen.
pub(super) fn freeze(dir: &Path) -> Result<(), CgroupError> {
    let state = dir.join("freezer.state");
    let mut attempt = 0_u32;
    let frozen = wait_until(FREEZE_TIMEOUT, || {
        attempt += 1;
        if attempt.is_multiple_of(50) {
            write_value(&state, "THAWED")?;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        write_value(&state, "FROZEN")?;
        Ok(read_string(&state)? == "FROZEN")
    })?;
    if frozen {
        debug!(cgroup = %dir.display(), "cgroup frozen");
        return Ok(());
    }
    let last = read_string(&state)?;
    // Best effort: the timeout is the error to report; a thaw that fails
    // here would fail for the same reason the caller will see on retry.
    let _ = write_file(&state, "THAWED");
    Err(CgroupError::FreezeTimeout {
        path: dir.to_owned(),
        target: "FROZEN",
        state: last,
    })
}

/// Thaws and waits for `THAWED`.
pub(super) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    let state = dir.join("freezer.state");
    write_value(&state, "THAWED")?;
    if wait_until(FREEZE_TIMEOUT, || Ok(read_string(&state)? == "THAWED"))? {
        debug!(cgroup = %dir.display(), "cgroup thawed");
        return Ok(());
    }
    Err(CgroupError::FreezeTimeout {
        path: dir.to_owned(),
        target: "THAWED",
        state: read_string(&state)?,
    })
}

/// True when `freezer.state` says `FROZEN` (not while `FREEZING`).
pub(super) fn is_frozen(dir: &Path) -> Result<bool, CgroupError> {
    Ok(read_string(&dir.join("freezer.state"))? == "FROZEN")
}

/// Reads the statistics of every controller that is there.
pub(super) fn stats(dirs: &[Dir]) -> Result<CgroupStats, CgroupError> {
    let memory = dir_of(dirs, "memory").map(memory_stats).transpose()?;
    let cpu = dir_of(dirs, "cpuacct")
        .map(|acct| cpu_stats(acct, dir_of(dirs, "cpu")))
        .transpose()?;
    let pids = dir_of(dirs, "pids")
        .map(|dir| {
            Ok::<_, CgroupError>(PidsStats {
                current: read_u64(&dir.join("pids.current"))?,
                limit: read_limit(&dir.join("pids.max"))?,
            })
        })
        .transpose()?;
    Ok(CgroupStats { memory, cpu, pids })
}

fn memory_stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = read_flat_keyed(&dir.join("memory.stat"))?;
    // The total_ counters include sub-cgroups, which belong to the container.
    let counter = |name: &str| {
        stat.get(&format!("total_{name}"))
            .or_else(|| stat.get(name))
            .copied()
            .unwrap_or(0)
    };
    let memsw = dir.join("memory.memsw.usage_in_bytes");
    let swap_usage = if memsw.exists() {
        Some(read_u64(&memsw)?.saturating_sub(usage))
    } else {
        None
    };
    Ok(MemoryStats {
        usage,
        max_usage: Some(read_u64(&dir.join("memory.max_usage_in_bytes"))?),
        limit: read_limit(&dir.join("memory.limit_in_bytes"))?,
        cache: counter("cache"),
        inactive_file: counter("inactive_file"),
        swap_usage,
    })
}

/// CPU time from `cpuacct` (per mode in ns since 4.7; `cpuacct.stat` in
/// ticks before), throttling from the `cpu` hierarchy's `cpu.stat`.
fn cpu_stats(acct: &Path, cpu: Option<&Path>) -> Result<CpuStats, CgroupError> {
    let usage_ns = read_u64(&acct.join("cpuacct.usage"))?;
    let user = acct.join("cpuacct.usage_user");
    let (user_ns, system_ns) = if user.exists() {
        (read_u64(&user)?, read_u64(&acct.join("cpuacct.usage_sys"))?)
    } else {
        let ticks = read_flat_keyed(&acct.join("cpuacct.stat"))?;
        let ns = |key: &str| {
            ticks
                .get(key)
                .copied()
                .unwrap_or(0)
                .saturating_mul(NS_PER_USER_HZ_TICK)
        };
        (ns("user"), ns("system"))
    };
    let throttling = match cpu {
        Some(dir) => read_flat_keyed_if_present(&dir.join("cpu.stat"))?.unwrap_or_default(),
        None => Default::default(),
    };
    let counter = |key: &str| throttling.get(key).copied().unwrap_or(0);
    Ok(CpuStats {
        usage_ns,
        user_ns,
        system_ns,
        periods: counter("nr_periods"),
        throttled_periods: counter("nr_throttled"),
        throttled_ns: counter("throttled_time"),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    };

    use super::*;

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
    fn memory_and_swap_are_written_memory_first_with_retry() {
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(128 << 20)
                    .reservation(32 << 20)
                    .swappiness(10_u64)
                    .disable_oom_killer(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let writes = plan(&resources, &no_files).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("memory.limit_in_bytes", "67108864"),
                ("memory.memsw.limit_in_bytes", "134217728"),
                ("memory.soft_limit_in_bytes", "33554432"),
                ("memory.swappiness", "10"),
                ("memory.oom_control", "1"),
            ]
        );
        assert!(writes[0].retry_later && writes[1].retry_later);
        assert!(!writes[1].optional);
    }

    #[test]
    fn unlimited_memory_lifts_swap_too() {
        let resources = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
            .build()
            .unwrap();
        let writes = plan(&resources, &no_files).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("memory.limit_in_bytes", "-1"),
                ("memory.memsw.limit_in_bytes", "-1")
            ]
        );
        assert!(writes[1].optional);
    }

    #[test]
    fn swap_below_memory_is_refused() {
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(32 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(matches!(
            plan(&resources, &no_files),
            Err(CgroupError::InvalidValue {
                field: "memory.swap",
                ..
            })
        ));
    }

    #[test]
    fn cpu_limits_go_to_cfs_files_with_cpuset_first() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512_u64)
                    .quota(50_000)
                    .period(100_000_u64)
                    .cpus("0-1")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
            .build()
            .unwrap();
        let writes = plan(&resources, &no_files).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("pids.max", "32"),
            ]
        );
        assert!(writes[3].retry_later);
    }

    #[test]
    fn unlimited_quota_and_pids_are_minus_one_and_max() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(-1).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            pairs(&plan(&resources, &no_files).unwrap()),
            [("cpu.cfs_quota_us", "-1"), ("pids.max", "max")]
        );
    }

    #[test]
    fn blkio_weight_uses_bfq_when_cfq_is_gone() {
        let resources = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500_u16)
                    .throttle_read_bps_device(vec![
                        LinuxThrottleDeviceBuilder::default()
                            .major(8)
                            .minor(0)
                            .rate(1_048_576_u64)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let bfq_only = |_: &str, file: &str| file == "blkio.bfq.weight";
        assert_eq!(
            pairs(&plan(&resources, &bfq_only).unwrap()),
            [
                ("blkio.bfq.weight", "500"),
                ("blkio.throttle.read_bps_device", "8:0 1048576")
            ]
        );
        let cfq = |_: &str, file: &str| file == "blkio.weight";
        assert_eq!(
            pairs(&plan(&resources, &cfq).unwrap())[0],
            ("blkio.weight", "500")
        );
    }

    #[test]
    fn device_rules_keep_their_order_with_wildcards() {
        let rule = |allow: bool, typ, major: Option<i64>, minor: Option<i64>, access: &str| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access(access);
            if let Some(major) = major {
                b = b.major(major);
            }
            if let Some(minor) = minor {
                b = b.minor(minor);
            }
            b.build().unwrap()
        };
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![
                rule(false, LinuxDeviceType::A, None, None, "rwm"),
                rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
                rule(true, LinuxDeviceType::C, Some(136), None, "rw"),
                rule(true, LinuxDeviceType::P, None, None, "rwm"),
            ])
            .build()
            .unwrap();
        assert_eq!(
            pairs(&plan(&resources, &no_files).unwrap()),
            [
                ("devices.deny", "a *:* rwm"),
                ("devices.allow", "c 1:3 rwm"),
                ("devices.allow", "c 136:* rw"),
            ]
        );
        let bad = LinuxResourcesBuilder::default()
            .devices(vec![rule(
                true,
                LinuxDeviceType::C,
                Some(1),
                Some(3),
                "rwx",
            )])
            .build()
            .unwrap();
        assert!(plan(&bad, &no_files).is_err());
    }

    #[test]
    fn unified_resources_are_refused_on_v1() {
        let resources = LinuxResourcesBuilder::default()
            .unified(
                [("memory.high".to_owned(), "1G".to_owned())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        assert!(matches!(
            plan(&resources, &no_files),
            Err(CgroupError::Unsupported { .. })
        ));
    }

    #[test]
    fn new_cpuset_levels_inherit_cpus_and_mems() {
        let root = tempfile::tempdir().unwrap();
        let cpuset = root.path().join("cpuset");
        fs::create_dir(&cpuset).unwrap();
        fs::write(cpuset.join("cpuset.cpus"), "0-3\n").unwrap();
        fs::write(cpuset.join("cpuset.mems"), "0\n").unwrap();
        // A plain directory does not grow kernel files on mkdir: lay out
        // the levels as the kernel would, empty.
        for level in ["stack", "stack/c1"] {
            fs::create_dir(cpuset.join(level)).unwrap();
            fs::write(cpuset.join(level).join("cpuset.cpus"), "\n").unwrap();
            fs::write(cpuset.join(level).join("cpuset.mems"), "\n").unwrap();
        }
        let mounts = [V1Mount {
            mount_point: cpuset.clone(),
            controllers: vec!["cpuset".into()],
        }];
        create(&mounts, Path::new("stack/c1")).unwrap();
        for level in ["stack", "stack/c1"] {
            let dir = cpuset.join(level);
            assert_eq!(fs::read_to_string(dir.join("cpuset.cpus")).unwrap(), "0-3");
            assert_eq!(fs::read_to_string(dir.join("cpuset.mems")).unwrap(), "0");
        }
    }

    #[test]
    fn stats_come_from_memory_cpuacct_cpu_and_pids_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let d = root.path().join(name);
            fs::create_dir_all(&d).unwrap();
            d
        };
        let (memory, acct, cpu, pids) = (dir("memory"), dir("cpuacct"), dir("cpu"), dir("pids"));
        fs::write(memory.join("memory.usage_in_bytes"), "1048576\n").unwrap();
        fs::write(memory.join("memory.memsw.usage_in_bytes"), "1052672\n").unwrap();
        fs::write(memory.join("memory.max_usage_in_bytes"), "2097152\n").unwrap();
        fs::write(
            memory.join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        fs::write(
            memory.join("memory.stat"),
            "cache 4096\nrss 8192\ninactive_file 100\ntotal_cache 12288\ntotal_inactive_file 300\n",
        )
        .unwrap();
        fs::write(acct.join("cpuacct.usage"), "5000000\n").unwrap();
        fs::write(acct.join("cpuacct.stat"), "user 3\nsystem 1\n").unwrap();
        fs::write(
            cpu.join("cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 123456\n",
        )
        .unwrap();
        fs::write(pids.join("pids.current"), "3\n").unwrap();
        fs::write(pids.join("pids.max"), "max\n").unwrap();
        let dirs = vec![
            Dir {
                controllers: vec!["memory".into()],
                path: memory,
            },
            Dir {
                controllers: vec!["cpuacct".into()],
                path: acct,
            },
            Dir {
                controllers: vec!["cpu".into()],
                path: cpu,
            },
            Dir {
                controllers: vec!["pids".into()],
                path: pids,
            },
        ];
        let stats = stats(&dirs).unwrap();
        assert_eq!(
            stats.memory,
            Some(MemoryStats {
                usage: 1_048_576,
                max_usage: Some(2_097_152),
                limit: None,
                cache: 12_288,
                inactive_file: 300,
                swap_usage: Some(4096),
            })
        );
        assert_eq!(
            stats.cpu,
            Some(CpuStats {
                usage_ns: 5_000_000,
                user_ns: 30_000_000,
                system_ns: 10_000_000,
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 123_456,
            })
        );
        assert_eq!(
            stats.pids,
            Some(PidsStats {
                current: 3,
                limit: None
            })
        );
    }
}
