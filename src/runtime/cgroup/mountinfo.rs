//! Finding cgroup file systems in `/proc/self/mountinfo`.
//!
//! The format is described in proc(5): each line is
//! `id parent major:minor root mount-point options [optional…] - fstype source super-options`.
//! A cgroup v1 hierarchy shows as fstype `cgroup` with its controllers among
//! the super options (`rw,cpu,cpuacct`, `rw,name=systemd`); the v2 hierarchy
//! as fstype `cgroup2`.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Controllers a cgroup v1 hierarchy can carry, as the kernel names them in
/// the mount options (`cgroup_subsys.h`). Anything else among the options is a
/// mount flag (`rw`, `noprefix`, `clone_children`, `release_agent=…`).
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
    /// The controllers bound to it, e.g. `["cpu", "cpuacct"]`; a named
    /// hierarchy without controllers appears as `["name=systemd"]`.
    pub controllers: Vec<String>,
}

impl V1Mount {
    /// True when this hierarchy carries `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// True when this is a named hierarchy (`name=systemd`) with no real
    /// controller.
    pub fn is_named(&self) -> bool {
        self.controllers.iter().all(|c| c.starts_with("name="))
    }
}

/// The cgroup file systems of a mount table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// Every cgroup v1 hierarchy, once each, in mount table order.
    pub v1: Vec<V1Mount>,
    /// The cgroup v2 mount point, if cgroup2 is mounted (the whole tree on a
    /// pure v2 host, `/sys/fs/cgroup/unified` on a hybrid one).
    pub v2: Option<PathBuf>,
}

impl CgroupMounts {
    /// Reads the cgroup mounts out of the text of a `mountinfo` file.
    ///
    /// A hierarchy mounted more than once (bind mounts share the device
    /// number) is listed once, preferring a mount of its root (`/`), which is
    /// where paths relative to the hierarchy start. Malformed lines are
    /// skipped: the kernel writes this file, and one odd line must not hide
    /// the others.
    pub fn parse(mountinfo: &str) -> Self {
        let mut v1: Vec<(String, bool, V1Mount)> = Vec::new();
        let mut v2: Option<(bool, PathBuf)> = None;
        for line in mountinfo.lines() {
            let Some(entry) = Entry::parse(line) else {
                continue;
            };
            let is_root = entry.root == "/";
            match entry.fstype {
                "cgroup" => {
                    let controllers = v1_controllers(entry.super_options);
                    if controllers.is_empty() {
                        continue;
                    }
                    let mount = V1Mount {
                        mount_point: unescape(entry.mount_point),
                        controllers,
                    };
                    match v1.iter_mut().find(|(dev, _, _)| dev == entry.device) {
                        Some(seen) if !seen.1 && is_root => {
                            *seen = (entry.device.to_owned(), is_root, mount);
                        }
                        Some(_) => {}
                        None => v1.push((entry.device.to_owned(), is_root, mount)),
                    }
                }
                "cgroup2" => {
                    let better = match &v2 {
                        None => true,
                        Some((seen_root, _)) => !seen_root && is_root,
                    };
                    if better {
                        v2 = Some((is_root, unescape(entry.mount_point)));
                    }
                }
                _ => {}
            }
        }
        Self {
            v1: v1.into_iter().map(|(_, _, mount)| mount).collect(),
            v2: v2.map(|(_, path)| path),
        }
    }

    /// True when at least one v1 hierarchy carries a real controller: such a
    /// host is v1 (or hybrid, which is managed as v1), whatever cgroup2 mount
    /// it also has.
    pub fn has_v1_controllers(&self) -> bool {
        self.v1.iter().any(|m| !m.is_named())
    }
}

/// The fields of one mountinfo line this module needs.
struct Entry<'a> {
    device: &'a str,
    root: &'a str,
    mount_point: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let _id = fields.next()?;
        let _parent = fields.next()?;
        let device = fields.next()?;
        let root = fields.next()?;
        let mount_point = fields.next()?;
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let _source = after.next()?;
        let super_options = after.next()?;
        Some(Self {
            device,
            root,
            mount_point,
            fstype,
            super_options,
        })
    }
}

/// The controllers (and `name=` of a named hierarchy) among a v1 mount's
/// super options, deduplicated in kernel order.
fn v1_controllers(options: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    options
        .split(',')
        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
        .filter(|o| seen.insert(*o))
        .map(str::to_owned)
        .collect()
}

/// Undoes the octal escapes (`\040` for a space, `\011`, `\012`, `\134`)
/// the kernel puts in paths of mountinfo fields.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;

    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host with cpu and cpuacct mounted separately, as on the
    /// machine this was written on.
    const HYBRID: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn mount(point: &str, controllers: &[&str]) -> V1Mount {
        V1Mount {
            mount_point: PathBuf::from(point),
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn finds_each_v1_hierarchy_and_the_unified_mount() {
        let mounts = CgroupMounts::parse(HYBRID);
        assert_eq!(
            mounts.v1,
            vec![
                mount("/sys/fs/cgroup/cpu", &["cpu"]),
                mount("/sys/fs/cgroup/cpuacct", &["cpuacct"]),
                mount("/sys/fs/cgroup/cpuset", &["cpuset"]),
                mount("/sys/fs/cgroup/memory", &["memory"]),
                mount("/sys/fs/cgroup/systemd", &["name=systemd"]),
            ]
        );
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert!(mounts.has_v1_controllers());
    }

    #[test]
    fn joint_cpu_cpuacct_mount_is_one_hierarchy_with_both_controllers() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:11 - cgroup cgroup rw,net_cls,net_prio
32 25 0:28 / /sys/fs/cgroup/pids rw shared:12 - cgroup cgroup rw,pids,clone_children,release_agent=/x
";
        let mounts = CgroupMounts::parse(text);
        assert_eq!(
            mounts.v1,
            vec![
                mount("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
                mount("/sys/fs/cgroup/net_cls,net_prio", &["net_cls", "net_prio"]),
                mount("/sys/fs/cgroup/pids", &["pids"]),
            ]
        );
        assert!(mounts.v1[0].has_controller("cpuacct"));
        assert_eq!(mounts.v2, None);
    }

    #[test]
    fn pure_v2_host_has_no_v1_controllers() {
        let text = "\
26 21 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let mounts = CgroupMounts::parse(text);
        assert!(mounts.v1.is_empty());
        assert!(!mounts.has_v1_controllers());
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn leftover_named_hierarchy_does_not_make_a_v2_host_v1() {
        let text = "\
26 21 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
27 26 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";
        let mounts = CgroupMounts::parse(text);
        assert_eq!(mounts.v1.len(), 1);
        assert!(mounts.v1[0].is_named());
        assert!(!mounts.has_v1_controllers());
    }

    #[test]
    fn bind_mount_of_a_subtree_yields_to_the_root_mount() {
        let text = "\
50 40 0:32 /docker/abc /ctr/memory rw - cgroup cgroup rw,memory
51 40 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
52 40 0:32 /other /elsewhere rw - cgroup cgroup rw,memory
60 40 0:40 /sub /ctr/unified rw - cgroup2 cgroup2 rw
61 40 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let mounts = CgroupMounts::parse(text);
        assert_eq!(mounts.v1, vec![mount("/sys/fs/cgroup/memory", &["memory"])]);
        assert_eq!(mounts.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn escaped_mount_points_are_decoded_and_junk_lines_skipped() {
        let text = "\
garbage
70 1 0:50 / /mnt/my\\040cgroups\\134x rw - cgroup cgroup rw,freezer
71 1 0:51 / /mnt/short rw shared:1
";
        let mounts = CgroupMounts::parse(text);
        assert_eq!(mounts.v1, vec![mount("/mnt/my cgroups\\x", &["freezer"])]);
    }

    #[test]
    fn optional_fields_before_the_separator_are_tolerated() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:17 master:3 - cgroup cgroup rw,memory\n";
        let mounts = CgroupMounts::parse(text);
        assert_eq!(mounts.v1, vec![mount("/sys/fs/cgroup/memory", &["memory"])]);
    }
}
