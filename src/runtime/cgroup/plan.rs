//! The shape of a plan: the cgroup file writes that [`LinuxResources`]
//! become, and the checks and formats both versions share. Planning is pure;
//! the cgroup writes a plan in order (`Cgroup::execute`).
//!
//! [`LinuxResources`]: oci_spec::runtime::LinuxResources

use std::collections::HashMap;
use std::fmt;

use oci_spec::runtime::{LinuxCpu, LinuxRdma};

use super::CgroupError;

/// One value for one cgroup file, planned from resources by `v1::plan` or
/// `v2::plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Write {
    /// The controller whose directory holds the file (`cgroup` for core
    /// files); it must be available or nothing is written.
    pub(super) controller: String,
    /// The file name, e.g. `memory.max`.
    pub(super) file: String,
    /// What to write.
    pub(super) value: String,
    /// Skip, rather than fail, when the file does not exist (a kernel
    /// without swap accounting has no swap limit files).
    pub(super) optional: bool,
    /// On `EINVAL`, try again after the rest of the plan: the kernel may
    /// refuse a value until a related one is written (memory above the
    /// current memory+swap limit, a CFS period against the current quota).
    pub(super) retry_later: bool,
}

impl Write {
    pub(super) fn new(controller: &str, file: impl Into<String>, value: impl fmt::Display) -> Self {
        Self {
            controller: controller.to_owned(),
            file: file.into(),
            value: value.to_string(),
            optional: false,
            retry_later: false,
        }
    }

    pub(super) fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    pub(super) fn retry_later(mut self) -> Self {
        self.retry_later = true;
        self
    }
}

/// A byte or count limit as OCI gives it: `-1` unlimited, `0` unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    Max,
    Value(u64),
}

impl Limit {
    /// Reads an OCI limit: positive values are limits, `-1` (any negative,
    /// as runc takes them) is unlimited, `0` is unset.
    pub(super) fn from_oci(value: Option<i64>) -> Option<Self> {
        match value? {
            0 => None,
            v => Some(u64::try_from(v).map_or(Self::Max, Self::Value)),
        }
    }
}

/// `cpuset.cpus` and `cpuset.mems`, the same files in both versions. A
/// list is checked to look like `0-3,8`; an empty one means "all" and is not
/// written.
pub(super) fn cpuset_writes(cpu: &LinuxCpu) -> Result<Vec<Write>, CgroupError> {
    let mut writes = Vec::new();
    for (field, list, file) in [
        ("cpu.cpus", cpu.cpus(), "cpuset.cpus"),
        ("cpu.mems", cpu.mems(), "cpuset.mems"),
    ] {
        let list = list.as_deref().unwrap_or("").trim();
        if list.is_empty() {
            continue;
        }
        if !list
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '-')
        {
            return Err(CgroupError::InvalidValue {
                field,
                value: list.to_owned(),
                reason: "expected a list such as 0-3,8",
            });
        }
        writes.push(Write::new("cpuset", file, list));
    }
    Ok(writes)
}

/// `major:minor` of a block device for the io/blkio files.
pub(super) fn device_number(
    field: &'static str,
    major: i64,
    minor: i64,
) -> Result<String, CgroupError> {
    if major < 0 || minor < 0 {
        return Err(CgroupError::InvalidValue {
            field,
            value: format!("{major}:{minor}"),
            reason: "device numbers cannot be negative",
        });
    }
    Ok(format!("{major}:{minor}"))
}

/// A hugepage size as the kernel names its files (`2MB`, `1GB`); it becomes
/// part of a file name, so nothing but letters and digits gets through.
pub(super) fn hugepage_size(size: &str) -> Result<&str, CgroupError> {
    if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(CgroupError::InvalidValue {
            field: "hugepageLimits.pageSize",
            value: size.to_owned(),
            reason: "expected a size such as 2MB",
        });
    }
    Ok(size)
}

/// The `rdma.max` lines (`mlx4_0 hca_handle=2 hca_object=2000`), one per
/// device, sorted; the format is the same in both versions.
pub(super) fn rdma_lines(rdma: &HashMap<String, LinuxRdma>) -> Result<Vec<Write>, CgroupError> {
    let mut devices: Vec<_> = rdma.iter().collect();
    devices.sort_by_key(|(name, _)| *name);
    let mut writes = Vec::new();
    for (device, limits) in devices {
        if device.is_empty() || device.chars().any(char::is_whitespace) {
            return Err(CgroupError::InvalidValue {
                field: "rdma",
                value: device.clone(),
                reason: "expected an RDMA device name",
            });
        }
        let mut line = device.clone();
        if let Some(handles) = limits.hca_handles() {
            line.push_str(&format!(" hca_handle={handles}"));
        }
        if let Some(objects) = limits.hca_objects() {
            line.push_str(&format!(" hca_object={objects}"));
        }
        if line.len() > device.len() {
            writes.push(Write::new("rdma", "rdma.max", line));
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_limits_read_as_runc_reads_them() {
        assert_eq!(Limit::from_oci(None), None);
        assert_eq!(Limit::from_oci(Some(0)), None);
        assert_eq!(Limit::from_oci(Some(-1)), Some(Limit::Max));
        assert_eq!(Limit::from_oci(Some(-2)), Some(Limit::Max));
        assert_eq!(Limit::from_oci(Some(4096)), Some(Limit::Value(4096)));
    }
}
