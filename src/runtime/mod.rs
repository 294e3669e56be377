//! The container runtime: OCI runtime specs, the built-in runtime that executes
//! them (namespaces, root filesystem, cgroups, capabilities, seccomp), the
//! per-container shim, logs and exec.

pub mod cgroup;
pub mod logs;
pub mod seccomp;
