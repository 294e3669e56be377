//! Statistics of a cgroup, in one shape for both versions, and the parser of
//! the kernel's "flat keyed" files (`key value` per line: `memory.stat`,
//! `cpu.stat`, `memory.events`, `memory.oom_control`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use super::CgroupError;

/// What a cgroup uses now, as `docker stats` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory, if the memory controller is available.
    pub memory: Option<MemoryStats>,
    /// CPU time, if it is accounted (v1 `cpuacct`; v2 always).
    pub cpu: Option<CpuStats>,
    /// Process count, if the pids controller is available.
    pub pids: Option<PidsStats>,
}

/// Memory use, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Memory in use, page cache included (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`).
    pub usage: u64,
    /// The highest usage seen (v1 `memory.max_usage_in_bytes`, v2
    /// `memory.peak`, which kernels before 5.19 lack).
    pub max_usage: Option<u64>,
    /// The limit, `None` when unlimited.
    pub limit: Option<u64>,
    /// Page cache (`cache` in v1's `memory.stat`, `file` in v2's).
    pub cache: u64,
    /// Inactive page cache, which Docker subtracts from `usage` to show
    /// what the container really holds.
    pub inactive_file: u64,
    /// Swap in use, when swap is accounted.
    pub swap_usage: Option<u64>,
}

/// CPU time, in nanoseconds, and CFS throttling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Total CPU time.
    pub usage_ns: u64,
    /// CPU time in user mode.
    pub user_ns: u64,
    /// CPU time in kernel mode.
    pub system_ns: u64,
    /// Enforcement periods that have elapsed (with a quota set).
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Total time throttled.
    pub throttled_ns: u64,
}

/// Process count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks (threads included) in the cgroup now.
    pub current: u64,
    /// The limit, `None` when unlimited.
    pub limit: Option<u64>,
}

/// Parses a flat keyed file's text. Lines that are not `key number` (v1's
/// `memory.stat` has none, but a future kernel may add one) are ignored.
pub(super) fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let key = words.next()?;
            let value = words.next()?.parse().ok()?;
            words.next().is_none().then(|| (key.to_owned(), value))
        })
        .collect()
}

/// Reads and parses a flat keyed file.
pub(super) fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    let text = fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_flat_keyed(&text))
}

/// Reads a flat keyed file that may not exist (`None` then).
pub(super) fn read_flat_keyed_if_present(
    path: &Path,
) -> Result<Option<BTreeMap<String, u64>>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse_flat_keyed(&text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_parse_to_counters() {
        let map =
            parse_flat_keyed("low 0\nhigh 3\nmax 12\noom 1\noom_kill 2\n\nodd line here\nneg -1\n");
        assert_eq!(map.get("oom_kill"), Some(&2));
        assert_eq!(map.get("high"), Some(&3));
        assert_eq!(map.len(), 5);
    }
}
