//! A container's root file system: an overlay of the image's layer directories
//! (read-only, shared by every container of the image) under the container's
//! own writable layer.
//!
//! The overlay is mounted with the new mount API (`fsopen`, one `lowerdir+`
//! per layer, `fsmount`, `move_mount`), which has no limit on the number of
//! layers; kernels without `lowerdir+` (before 6.8) get the classic `mount(2)`
//! with one option string, which must fit in a page.

use std::io;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};
use serde::{Deserialize, Serialize};

/// The directories a container's root is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    /// The image's unpacked layers, base first. Empty for an image without
    /// layers, whose root is then the writable layer alone.
    pub lowers: Vec<PathBuf>,
    /// The container's writable layer (overlay's upper directory).
    pub upper: PathBuf,
    /// Overlay's work directory, on the same file system as `upper`.
    pub work: PathBuf,
}

impl Rootfs {
    /// The classic overlay option string: lowers top layer first.
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .rev()
            .map(|p| escape(&p.to_string_lossy()))
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            escape(&self.upper.to_string_lossy()),
            escape(&self.work.to_string_lossy())
        )
    }
}

/// Whether the kernel has overlayfs, judged as Docker's overlay2 driver
/// does (moby `supportsOverlay`): first ask for the file system type, which
/// loads the module if it is one (`fsopen` requests `fs-overlay` the way
/// `modprobe overlay` would; nothing is mounted), then look for `overlay`
/// in `proc_filesystems` (`/proc/filesystems`). If that list cannot be
/// read, the answer to `fsopen` decides.
pub fn overlay_supported(proc_filesystems: &Path) -> bool {
    let opened = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC);
    match std::fs::read_to_string(proc_filesystems) {
        Ok(text) => lists_overlay(&text),
        Err(_) => opened.is_ok(),
    }
}

/// Whether a `/proc/filesystems` text lists overlay (`nodev\toverlay`).
fn lists_overlay(text: &str) -> bool {
    text.lines()
        .any(|line| line.split_whitespace().last() == Some("overlay"))
}

/// Overlay splits its options on `,` and lower directories on `:`.
fn escape(path: &str) -> String {
    path.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Mounts `rootfs` at `target` (in the caller's mount namespace).
pub fn mount(rootfs: &Rootfs, target: &Path) -> io::Result<()> {
    if rootfs.lowers.is_empty() {
        return nix::mount::mount(
            Some(rootfs.upper.as_path()),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32));
    }
    match mount_new_api(rootfs, target) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            let options = rootfs.options();
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(options.as_str()),
            )
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
        }
        Err(e) => Err(e),
    }
}

/// Moves the calling process into a mount namespace of its own, with every
/// mount private (nothing propagates back to the host), and mounts `rootfs`
/// at `target` there. The caller must be single-threaded.
pub fn mount_private(rootfs: &Rootfs, target: &Path) -> io::Result<()> {
    let nix_err = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(nix_err)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(nix_err)?;
    mount(rootfs, target)
}

/// Mounts `rootfs` without attaching it anywhere and returns the mount's
/// root (an `O_PATH` fd): no mount namespace ever shows it, it needs no
/// fork or namespace change (so multi-threaded callers may use it), and it
/// goes away when the last fd into it is closed. A root without layers is
/// the writable layer's directory itself.
pub fn mount_detached(rootfs: &Rootfs) -> io::Result<OwnedFd> {
    if rootfs.lowers.is_empty() {
        return Ok(rustix::fs::open(
            &rootfs.upper,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    let configure = |one_by_one: bool| -> io::Result<OwnedFd> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        if one_by_one {
            for lower in rootfs.lowers.iter().rev() {
                fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
            }
        } else {
            let lowers: Vec<String> = rootfs
                .lowers
                .iter()
                .rev()
                .map(|p| escape(&p.to_string_lossy()))
                .collect();
            fsconfig_set_string(&fs, "lowerdir", lowers.join(":"))?;
        }
        fsconfig_set_string(&fs, "upperdir", rootfs.upper.as_path())?;
        fsconfig_set_string(&fs, "workdir", rootfs.work.as_path())?;
        fsconfig_create(&fs)?;
        Ok(fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::empty(),
        )?)
    };
    match configure(true) {
        // Kernels before 6.8 have no `lowerdir+`.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => configure(false),
        other => other,
    }
}

fn mount_new_api(rootfs: &Rootfs, target: &Path) -> io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in rootfs.lowers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
    }
    fsconfig_set_string(&fs, "upperdir", rootfs.upper.as_path())?;
    fsconfig_set_string(&fs, "workdir", rootfs.work.as_path())?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_found_in_the_file_system_list() {
        let with = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n";
        assert!(lists_overlay(with));
        let without = "nodev\tsysfs\n\text4\nnodev\toverlayish\n";
        assert!(!lists_overlay(without));
        assert!(!lists_overlay(""));
    }

    #[test]
    fn classic_options_list_the_top_layer_first_and_escape_separators() {
        let rootfs = Rootfs {
            lowers: vec!["/l/base".into(), "/l/top,x".into()],
            upper: "/c/up:per".into(),
            work: "/c/work".into(),
        };
        assert_eq!(
            rootfs.options(),
            "lowerdir=/l/top\\,x:/l/base,upperdir=/c/up\\:per,workdir=/c/work"
        );
    }
}
