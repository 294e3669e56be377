//! `docker cp`: the daemon side — the tar streams of `GET`/`HEAD`/`PUT
//! /containers/{id}/archive` ([`Containers::archive_get`],
//! [`Containers::archive_stat`], [`Containers::archive_put`]) — and the
//! client side, Docker's path rules (moby `pkg/archive/copy.go`: which
//! directory to extract into and how to rename the top entry) with the
//! local reading and writing ([`local_source`], [`local_destination`],
//! [`prepare_copy`], [`tar_local`], [`untar_local`]).
//!
//! Paths in a container are resolved inside its root, never on the host:
//! symlinks are followed component by component with the root acting as
//! `/` ([`eval_in_root`], moby's `FollowSymlinkInScope`), and every open
//! goes through `openat2(RESOLVE_IN_ROOT)`, so a symlink to `/etc/passwd`
//! inside the container reaches the container's file even if it changes
//! while we look. The root is the running container's (with its volumes)
//! or, for a stopped one, its layers in a detached overlay mount
//! ([`crate::runtime::Runtime::open_root`]); nothing forks, so the daemon
//! can call these from any thread.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use super::containers::Containers;
use super::verbs::VerbError;
use crate::image::layer::{self, UnpackOptions, Whiteouts};

/// How paths are resolved in a container's root: the root acts as `/`, and
/// `/proc` magic links cannot lead out.
const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// How many symlinks one resolution follows, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// What `HEAD /containers/{id}/archive` answers (moby
/// `ContainerPathStat`, sent base64-encoded in `X-Docker-Container-Path-Stat`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// The last element of the path as asked.
    pub name: String,
    /// Bytes (as `lstat` reports them).
    pub size: i64,
    /// Go's `os.FileMode`: permission bits plus Go's type and special bits
    /// (directory `1<<31`, symlink `1<<27`, …).
    pub mode: u32,
    /// Modification time, RFC 3339 with nanoseconds.
    pub mtime: String,
    /// For a symlink: the path it resolves to in the container, absolute.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Go's `os.ModeDir`.
pub const GO_MODE_DIR: u32 = 1 << 31;
/// Go's `os.ModeSymlink`.
pub const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_DEVICE: u32 = 1 << 26;
const GO_MODE_NAMED_PIPE: u32 = 1 << 25;
const GO_MODE_SOCKET: u32 = 1 << 24;
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_CHAR_DEVICE: u32 = 1 << 21;
const GO_MODE_STICKY: u32 = 1 << 20;

impl PathStat {
    /// Whether the path is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }

    /// Whether the path is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & GO_MODE_SYMLINK != 0
    }
}

/// How `PUT /containers/{id}/archive` extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOptions {
    /// Keep the archive's uid/gid (`docker cp -a`); otherwise everything
    /// belongs to root.
    pub copy_uid_gid: bool,
    /// Refuse to replace a directory with a non-directory or the other way
    /// round (Docker's default: `noOverwriteDirNonDir=true`).
    pub no_overwrite_dir_non_dir: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        Self {
            copy_uid_gid: false,
            no_overwrite_dir_non_dir: true,
        }
    }
}

/// A container path as moby resolves it for `stat` and `GET`: the path made
/// absolute (keeping a trailing `/` or `/.`), and its directory resolved in
/// the root; the last element is not followed.
struct Resolved {
    /// The path as asked, absolute.
    abs: String,
    /// The resolved directory.
    dir: OwnedFd,
    /// The last element, `""` or `.` for the directory itself.
    base: String,
}

/// Go's `filepath.Clean` of an absolute path.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `filepath.Base`.
fn go_base(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() {
            ".".into()
        } else {
            "/".into()
        };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// moby's `specifiesCurrentDir`.
fn specifies_current_dir(path: &str) -> bool {
    go_base(path) == "."
}

/// moby's `PreserveTrailingDotOrSeparator`.
fn preserve_trailing(cleaned: &str, original: &str) -> String {
    let mut out = cleaned.to_string();
    if !specifies_current_dir(&out) && specifies_current_dir(original) {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push('.');
    }
    if !out.ends_with('/') && original.ends_with('/') {
        out.push('/');
    }
    out
}

/// A path in the container made absolute the way moby does, keeping a
/// trailing `/` or `/.`.
fn absolute(path: &str) -> String {
    preserve_trailing(&clean(&format!("/{path}")), path)
}

/// Go's `filepath.Split`: everything up to the last `/`, and the rest.
fn go_split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn relative(path: &str) -> &str {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() { "." } else { rel }
}

/// moby's `FollowSymlinkInScope`: `path` with every symlink in it followed
/// as if `root` were `/` (`..` stops at the root), as an absolute path in
/// the root. A part that does not exist ends the resolution; the rest is
/// kept as written.
pub fn eval_in_root(root: BorrowedFd<'_>, path: &str) -> io::Result<String> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let parent = format!("/{}", resolved.join("/"));
        let dir = match rfs::openat2(
            root,
            relative(&parent),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            IN_ROOT,
        ) {
            Ok(dir) => dir,
            Err(Errno::NOENT | Errno::NOTDIR) => {
                resolved.push(part);
                resolved.extend(pending.into_iter().rev());
                break;
            }
            Err(e) => return Err(errno_io(e)),
        };
        match rfs::readlinkat(&dir, part.as_str(), Vec::new()) {
            Ok(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(errno_io(Errno::LOOP));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
            // Not a symlink (EINVAL), or not there: keep it as it is.
            Err(Errno::INVAL | Errno::NOENT | Errno::NOTDIR) => resolved.push(part),
            Err(e) => return Err(errno_io(e)),
        }
    }
    Ok(format!("/{}", resolved.join("/")))
}

/// Opens a resolved directory of the container.
fn open_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, Errno> {
    rfs::openat2(
        root,
        relative(path),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        IN_ROOT,
    )
}

/// Go's `os.FileMode` of a `stat` mode.
fn go_mode(mode: u32) -> u32 {
    let mut out = mode & 0o777;
    match FileType::from_raw_mode(mode) {
        FileType::Directory => out |= GO_MODE_DIR,
        FileType::Symlink => out |= GO_MODE_SYMLINK,
        FileType::BlockDevice => out |= GO_MODE_DEVICE,
        FileType::CharacterDevice => out |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE,
        FileType::Fifo => out |= GO_MODE_NAMED_PIPE,
        FileType::Socket => out |= GO_MODE_SOCKET,
        _ => {}
    }
    if mode & 0o4000 != 0 {
        out |= GO_MODE_SETUID;
    }
    if mode & 0o2000 != 0 {
        out |= GO_MODE_SETGID;
    }
    if mode & 0o1000 != 0 {
        out |= GO_MODE_STICKY;
    }
    out
}

// `Stat`'s field types differ between architectures.
#[allow(clippy::useless_conversion)]
fn stat_of(st: &rfs::Stat, name: String, link_target: String) -> PathStat {
    let secs = u64::try_from(i64::from(st.st_mtime)).unwrap_or(0);
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    PathStat {
        name,
        size: i64::from(st.st_size),
        mode: go_mode(st.st_mode),
        mtime: crate::runtime::logs::rfc3339_nanos(UNIX_EPOCH + Duration::new(secs, nanos)),
        link_target,
    }
}

impl Containers {
    fn resolve_in(
        &self,
        id: &str,
        root: BorrowedFd<'_>,
        path: &str,
    ) -> Result<Resolved, VerbError> {
        let abs = absolute(path);
        let (dir, base) = go_split(&abs);
        let dir_path = eval_in_root(root, dir).map_err(|e| VerbError::Io {
            action: "resolve",
            path: PathBuf::from(&abs),
            source: e,
        })?;
        let dir_fd = open_dir(root, &dir_path).map_err(|e| match e {
            Errno::NOENT => VerbError::PathNotFound {
                container: id.to_string(),
                path: abs.clone(),
            },
            Errno::NOTDIR => VerbError::BadPath {
                container: id.to_string(),
                path: abs.clone(),
                reason: "not a directory",
            },
            other => VerbError::Io {
                action: "open",
                path: PathBuf::from(&abs),
                source: errno_io(other),
            },
        })?;
        Ok(Resolved {
            base: base.to_string(),
            abs: abs.clone(),
            dir: dir_fd,
        })
    }

    fn stat_resolved(
        &self,
        id: &str,
        root: BorrowedFd<'_>,
        r: &Resolved,
    ) -> Result<(rfs::Stat, PathStat), VerbError> {
        let st = if r.base.is_empty() || r.base == "." {
            rfs::fstat(&r.dir)
        } else {
            rfs::statat(&r.dir, r.base.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        }
        .map_err(|e| match e {
            Errno::NOENT => VerbError::PathNotFound {
                container: id.to_string(),
                path: r.abs.clone(),
            },
            other => VerbError::Io {
                action: "stat",
                path: PathBuf::from(&r.abs),
                source: errno_io(other),
            },
        })?;
        let link_target = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            eval_in_root(root, &r.abs).map_err(|e| VerbError::Io {
                action: "resolve",
                path: PathBuf::from(&r.abs),
                source: e,
            })?
        } else {
            String::new()
        };
        let stat = stat_of(&st, go_base(&r.abs), link_target);
        Ok((st, stat))
    }

    /// `HEAD /containers/{id}/archive?path=…`: what `path` is in the
    /// container (the last element not followed).
    pub fn archive_stat(&self, id: &str, path: &str) -> Result<PathStat, VerbError> {
        let root = self.runtime.open_root(id)?;
        let r = self.resolve_in(id, root.as_fd(), path)?;
        Ok(self.stat_resolved(id, root.as_fd(), &r)?.1)
    }

    /// `GET /containers/{id}/archive?path=…`: `path` (with everything below
    /// it, for a directory) as a tar stream on `out`, its entries named
    /// after the last element of the path as asked (`.` for `dir/.`), as
    /// moby names them. Returns the path's stat, which the API sends as a
    /// header.
    pub fn archive_get(
        &self,
        id: &str,
        path: &str,
        out: &mut dyn Write,
    ) -> Result<PathStat, VerbError> {
        let root = self.runtime.open_root(id)?;
        let r = self.resolve_in(id, root.as_fd(), path)?;
        let (st, stat) = self.stat_resolved(id, root.as_fd(), &r)?;
        let as_name = go_base(&r.abs);
        let archive_err = |source| VerbError::Archive {
            path: r.abs.clone(),
            source,
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let dir = if r.base.is_empty() || r.base == "." {
                r.dir.as_fd().try_clone_to_owned()
            } else {
                rfs::openat(
                    &r.dir,
                    r.base.as_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_io)
            }
            .map_err(|e| VerbError::Io {
                action: "open",
                path: PathBuf::from(&r.abs),
                source: e,
            })?;
            layer::tar_path(dir.as_fd(), OsStr::new("."), as_name.as_bytes(), out)
                .map_err(archive_err)?;
        } else {
            layer::tar_path(r.dir.as_fd(), OsStr::new(&r.base), as_name.as_bytes(), out)
                .map_err(archive_err)?;
        }
        Ok(stat)
    }

    /// `PUT /containers/{id}/archive?path=…`: extracts the tar stream `tar`
    /// into the directory `dest_dir` of the container (symlinks followed in
    /// the container, the last one too). The client has already named the
    /// entries for Docker's copy rules ([`prepare_copy`]).
    pub fn archive_put(
        &self,
        id: &str,
        dest_dir: &str,
        tar: &mut dyn Read,
        opts: &PutOptions,
    ) -> Result<(), VerbError> {
        let running = matches!(
            self.runtime.state(id)?.status,
            crate::runtime::Status::Running | crate::runtime::Status::Paused
        );
        // A running container's read-only root refuses writes itself (and
        // its volumes take them); a stopped one's detached mount would not.
        let read_only = self
            .runtime
            .spec(id)?
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        if read_only && !running {
            return Err(VerbError::ReadOnlyRoot);
        }
        let root = self.runtime.open_root(id)?;
        let abs = absolute(dest_dir);
        let resolved = eval_in_root(root.as_fd(), &abs).map_err(|e| VerbError::Io {
            action: "resolve",
            path: PathBuf::from(&abs),
            source: e,
        })?;
        let dir = open_dir(root.as_fd(), &resolved).map_err(|e| match e {
            Errno::NOENT => VerbError::PathNotFound {
                container: id.to_string(),
                path: abs.clone(),
            },
            Errno::NOTDIR => VerbError::BadPath {
                container: id.to_string(),
                path: abs.clone(),
                reason: "extraction point is not a directory",
            },
            other => VerbError::Io {
                action: "open",
                path: PathBuf::from(&abs),
                source: errno_io(other),
            },
        })?;
        let options = UnpackOptions {
            whiteouts: Whiteouts::Plain,
            preserve_owners: opts.copy_uid_gid,
            no_overwrite_dir_non_dir: opts.no_overwrite_dir_non_dir,
            // What a user copies in is bounded by the container's disk,
            // as in Docker, not by the limits that guard image pulls.
            max_total_size: u64::MAX,
            max_entry_size: u64::MAX,
            max_entries: u64::MAX,
            ..UnpackOptions::default()
        };
        layer::unpack_at(tar, dir.as_fd(), &options)
            .map_err(|source| VerbError::Archive { path: abs, source })?;
        Ok(())
    }
}

// ------------------------------------------------------------ client side

/// One side of a copy as moby's `archive.CopyInfo` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyInfo {
    /// The path (trailing `/` or `/.` kept).
    pub path: String,
    /// Whether it exists.
    pub exists: bool,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// The name the top entry must have instead of the path's last element
    /// (a followed symlink keeps the name it was asked by).
    pub rebase_name: String,
}

/// Where to extract a copy and how to rename its top entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The directory to extract into.
    pub dest_dir: String,
    /// Rename entries from the first name to the second, if needed.
    pub rebase: Option<(String, String)>,
}

/// moby's `SplitPathDirEntry`: the directory and last element, keeping a
/// trailing `.`.
pub fn split_path_dir_entry(path: &str) -> (String, String) {
    let mut cleaned = go_clean(path);
    if specifies_current_dir(path) {
        cleaned.push_str("/.");
    }
    let base = go_base(&cleaned);
    let dir = go_dir(&cleaned);
    (dir, base)
}

/// Go's `filepath.Clean` for relative and absolute paths.
fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Dir`.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => go_clean(&path[..i]),
        None => ".".into(),
    }
}

/// moby's `PrepareArchiveCopy` decision: where the archive of `src` goes so
/// that it lands at `dst` with Docker's rules, and how its top entry is
/// renamed.
pub fn prepare_copy(src: &CopyInfo, dst: &CopyInfo) -> Result<CopyPlan, VerbError> {
    let (dst_dir, dst_base) = split_path_dir_entry(&dst.path);
    let (_, mut src_base) = split_path_dir_entry(&src.path);
    if !src.rebase_name.is_empty() {
        src_base = src.rebase_name.clone();
    }
    if dst.exists && dst.is_dir {
        // Into the directory as it is.
        return Ok(CopyPlan {
            dest_dir: dst.path.clone(),
            rebase: None,
        });
    }
    if dst.exists && src.is_dir {
        return Err(VerbError::Invalid("cannot copy directory".into()));
    }
    let asserts_dir = dst.path.ends_with('/') || specifies_current_dir(&dst.path);
    if !dst.exists && !src.is_dir && asserts_dir {
        return Err(VerbError::Invalid("no such directory".into()));
    }
    // The destination is an existing file, or does not exist: extract into
    // its parent, renamed to its name.
    Ok(CopyPlan {
        dest_dir: dst_dir,
        rebase: Some((src_base, dst_base)),
    })
}

fn local_err(path: &str) -> impl FnOnce(io::Error) -> VerbError + '_ {
    move |source| VerbError::Io {
        action: "read",
        path: PathBuf::from(path),
        source,
    }
}

/// moby's `CopyInfoSourcePath` for a path on this host: with
/// `follow_link`, a symlink at the end is followed (the copy keeps the
/// link's name); otherwise only the directories above it are.
pub fn local_source(path: &str, follow_link: bool) -> Result<CopyInfo, VerbError> {
    let (resolved, rebase_name) = if follow_link {
        let real = fs::canonicalize(path).map_err(local_err(path))?;
        let mut resolved = real.to_string_lossy().into_owned();
        if specifies_current_dir(path) && !specifies_current_dir(&resolved) {
            resolved.push_str("/.");
        }
        if path.ends_with('/') && !resolved.ends_with('/') {
            resolved.push('/');
        }
        let rebase = if go_base(path) != go_base(&resolved) {
            go_base(path)
        } else {
            String::new()
        };
        (resolved, rebase)
    } else {
        let (dir, base) = go_split(path);
        let dir = if dir.is_empty() { "." } else { dir };
        let real_dir = fs::canonicalize(dir).map_err(local_err(path))?;
        let resolved = format!(
            "{}/{base}",
            real_dir.to_string_lossy().trim_end_matches('/')
        );
        let rebase = if path.ends_with('/') && go_base(path) != go_base(&resolved) {
            go_base(path)
        } else {
            String::new()
        };
        (resolved, rebase)
    };
    let meta = fs::symlink_metadata(&resolved).map_err(local_err(path))?;
    Ok(CopyInfo {
        path: resolved,
        exists: true,
        is_dir: meta.is_dir(),
        rebase_name,
    })
}

/// moby's `CopyInfoDestinationPath` for a path on this host: a symlink at
/// the end is followed (up to 10 times); a path that does not exist needs
/// its parent directory to.
pub fn local_destination(path: &str) -> Result<CopyInfo, VerbError> {
    let mut current = path.to_string();
    for _ in 0..=10 {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&current).map_err(local_err(path))?;
                let target = target.to_string_lossy().into_owned();
                current = if target.starts_with('/') {
                    target
                } else {
                    let (parent, _) = split_path_dir_entry(&current);
                    go_clean(&format!("{parent}/{target}"))
                };
            }
            Ok(m) => {
                return Ok(CopyInfo {
                    path: current,
                    exists: true,
                    is_dir: m.is_dir(),
                    rebase_name: String::new(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (parent, _) = split_path_dir_entry(&current);
                let meta = fs::metadata(&parent).map_err(local_err(&parent))?;
                if !meta.is_dir() {
                    return Err(VerbError::Invalid(format!("{parent}: not a directory")));
                }
                return Ok(CopyInfo {
                    path: current,
                    ..CopyInfo::default()
                });
            }
            Err(e) => return Err(local_err(path)(e)),
        }
    }
    Err(VerbError::Invalid(format!("too many symlinks in {path}")))
}

/// moby's `TarResource` for a path on this host: the tar of `src` (with
/// everything below it), its top entry named `as_name` (or the path's own
/// last element), written to `out`.
pub fn tar_local(src: &CopyInfo, as_name: Option<&str>, out: impl Write) -> Result<(), VerbError> {
    let (dir, base) = split_path_dir_entry(&src.path);
    let name = as_name
        .map(str::to_string)
        .or_else(|| (!src.rebase_name.is_empty()).then(|| src.rebase_name.clone()))
        .unwrap_or_else(|| base.clone());
    let parent = rfs::open(
        Path::new(&dir),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| local_err(&dir)(errno_io(e)))?;
    let archive_err = |source| VerbError::Archive {
        path: src.path.clone(),
        source,
    };
    if base == "." {
        layer::tar_path(parent.as_fd(), OsStr::new("."), name.as_bytes(), out)
            .map_err(archive_err)?;
    } else {
        layer::tar_path(parent.as_fd(), OsStr::new(&base), name.as_bytes(), out)
            .map_err(archive_err)?;
    }
    Ok(())
}

/// moby's `CopyTo` extraction on this host: `tar` into `plan.dest_dir`,
/// renamed per the plan, owners not kept (`NoLchown`), never replacing a
/// directory with a file or the other way round.
pub fn untar_local(tar: impl Read, plan: &CopyPlan) -> Result<(), VerbError> {
    let options = UnpackOptions {
        whiteouts: Whiteouts::Plain,
        preserve_owners: false,
        no_overwrite_dir_non_dir: true,
        rebase: plan
            .rebase
            .as_ref()
            .map(|(old, new)| (old.as_bytes().to_vec(), new.as_bytes().to_vec())),
        ..UnpackOptions::default()
    };
    layer::unpack(tar, Path::new(&plan.dest_dir), &options).map_err(|source| {
        VerbError::Archive {
            path: plan.dest_dir.clone(),
            source,
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_a_trailing_slash_or_dot() {
        assert_eq!(absolute("etc/passwd"), "/etc/passwd");
        assert_eq!(absolute("/etc/"), "/etc/");
        assert_eq!(absolute("/etc/."), "/etc/.");
        // As in Go: the last element written is `.`, so it stays.
        assert_eq!(absolute("/etc/../tmp/./"), "/tmp/./");
        assert_eq!(absolute("/"), "/");
        assert_eq!(absolute("/."), "/.");
        assert_eq!(go_base("/etc/."), ".");
        assert_eq!(go_base("/etc/"), "etc");
        assert_eq!(go_base("/"), "/");
        assert_eq!(go_split("/etc/."), ("/etc/", "."));
        assert_eq!(go_split("/etc/"), ("/etc/", ""));
        assert_eq!(split_path_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_path_dir_entry("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(split_path_dir_entry("b"), (".".into(), "b".into()));
        assert_eq!(go_clean("../a/./b/.."), "../a");
    }

    fn info(path: &str, exists: bool, is_dir: bool) -> CopyInfo {
        CopyInfo {
            path: path.into(),
            exists,
            is_dir,
            rebase_name: String::new(),
        }
    }

    #[test]
    fn copy_rules_are_dockers() {
        let plan = |src, dst| prepare_copy(&src, &dst);
        // File into an existing directory: as it is.
        assert_eq!(
            plan(info("/c/f", true, false), info("/h/dir", true, true)).unwrap(),
            CopyPlan {
                dest_dir: "/h/dir".into(),
                rebase: None
            }
        );
        // File to a new name: into the parent, renamed.
        assert_eq!(
            plan(info("/c/f", true, false), info("/h/new", false, false)).unwrap(),
            CopyPlan {
                dest_dir: "/h".into(),
                rebase: Some(("f".into(), "new".into()))
            }
        );
        // File over a file: renamed too.
        assert_eq!(
            plan(info("/c/f", true, false), info("/h/old", true, false))
                .unwrap()
                .rebase,
            Some(("f".into(), "old".into()))
        );
        // File to a missing directory.
        assert!(plan(info("/c/f", true, false), info("/h/missing/", false, false)).is_err());
        // Directory over a file.
        assert!(plan(info("/c/d", true, true), info("/h/file", true, false)).is_err());
        // Directory to a new name, and its contents (`d/.`) likewise.
        assert_eq!(
            plan(info("/c/d", true, true), info("/h/new", false, false))
                .unwrap()
                .rebase,
            Some(("d".into(), "new".into()))
        );
        assert_eq!(
            plan(info("/c/d/.", true, true), info("/h/new", false, false))
                .unwrap()
                .rebase,
            Some((".".into(), "new".into()))
        );
    }

    #[test]
    fn go_modes_carry_the_type_bits() {
        assert_eq!(go_mode(0o040755), GO_MODE_DIR | 0o755);
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode(0o120777), GO_MODE_SYMLINK | 0o777);
        assert_eq!(go_mode(0o104755), GO_MODE_SETUID | 0o755);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("data/sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("data/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("data/up")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("data/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let fd = rfs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let eval = |p: &str| eval_in_root(fd.as_fd(), p);
        assert_eq!(eval("/data/abs").unwrap(), "/etc/passwd");
        assert_eq!(eval("/data/up/x").unwrap(), "/etc/x");
        assert_eq!(eval("/data/rel/").unwrap(), "/data/sub");
        assert_eq!(eval("/missing/a/b").unwrap(), "/missing/a/b");
        assert_eq!(eval("/").unwrap(), "/");
        assert!(eval("/loop").is_err());
    }
}
