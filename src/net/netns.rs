//! Persistent network namespaces: one per container, a file under the
//! daemon's run directory (`<run>/netns/<container id>`) onto which the
//! namespace is bind-mounted, as `ip netns add` does. The namespace outlives
//! the container's processes and the daemon, is made before the container's
//! init runs (the init joins it by path) and goes when the container is
//! removed ([`remove`]: unmount, unlink).
//!
//! [`create_here`] and [`enter`] change the calling thread's network
//! namespace: only [`super::netlink::in_namespace`]'s throwaway threads call
//! them.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::NetError;

/// The namespace file of container `id` under `dir` (`<run>/netns`).
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}

/// Whether a namespace is bind-mounted at `path` (after a host reboot the
/// file is gone; after a crash between create and mount it is a plain
/// file).
pub fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn ns_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> NetError + 'a {
    move |source| NetError::Namespace {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Moves the calling thread into a new network namespace and bind-mounts it
/// at `path`. A file left at `path` (a crash before its mount) is reused.
pub fn create_here(path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| NetError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| NetError::Io {
            action: "create the network namespace file",
            path: path.to_path_buf(),
            source,
        })?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(ns_err("create a network namespace for", path))?;
    nix::mount::mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(ns_err("bind-mount the network namespace on", path))
}

/// Moves the calling thread into the namespace bind-mounted at `path`.
pub fn enter(path: &Path) -> Result<(), NetError> {
    let file = fs::File::open(path).map_err(|source| NetError::Io {
        action: "open the network namespace",
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(ns_err("join", path))
}

/// Unmounts and removes the namespace file at `path`; a missing one is
/// fine. The namespace itself ends when nothing else holds it.
pub fn remove(path: &Path) -> Result<(), NetError> {
    if !path.exists() {
        return Ok(());
    }
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(ns_err("unmount", path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The container ids that have a namespace file under `dir`.
pub fn list(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
