//! cgroups v1 and v2: limits, membership, freezing and statistics.
#![allow(missing_docs, clippy::missing_errors_doc)]
use oci_spec::runtime::LinuxResources;
use std::io;
use std::os::fd::OwnedFd;

#[derive(Debug, thiserror::Error)]
#[error("cgroup: {0}")]
pub struct CgroupError(#[from] io::Error);

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids_current: u64,
}

#[derive(Debug)]
pub struct Hierarchy;
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<std::path::PathBuf>,
}

const CTRLS: [&str; 7] = [
    "memory", "cpu", "pids", "cpuset", "blkio", "devices", "freezer",
];

impl Hierarchy {
    pub fn detect() -> Result<Self, CgroupError> {
        Ok(Self)
    }
    pub fn create(&self, rel: &str) -> Result<Cgroup, CgroupError> {
        let dirs: Vec<_> = CTRLS
            .iter()
            .map(|c| std::path::Path::new("/sys/fs/cgroup").join(c).join(rel))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        let cs = std::path::Path::new("/sys/fs/cgroup/cpuset");
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let v = std::fs::read_to_string(cs.join(f))?;
            let mut p = cs.to_path_buf();
            for part in rel.split('/') {
                p.push(part);
                std::fs::write(p.join(f), v.trim())?;
            }
        }
        Ok(Cgroup { dirs })
    }
    pub fn open(&self, rel: &str) -> Result<Cgroup, CgroupError> {
        Ok(Cgroup {
            dirs: CTRLS
                .iter()
                .map(|c| std::path::Path::new("/sys/fs/cgroup").join(c).join(rel))
                .collect(),
        })
    }
}
impl Cgroup {
    pub fn apply(&self, _r: &LinuxResources) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }
    pub fn v2_dir_fd(&self) -> Option<OwnedFd> {
        None
    }
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        Ok(0)
    }
    pub fn delete(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        Ok(())
    }
    pub fn freeze(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn thaw(&self) -> Result<(), CgroupError> {
        Ok(())
    }
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        Ok(Stats::default())
    }
}
