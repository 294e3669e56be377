//! An image's layers as one plain directory tree: what the `vfs` storage
//! driver gives every container instead of an overlay mount.
//!
//! The layers are directories in overlayfs form (as [`super::unpack`] writes
//! them with [`Whiteouts::Overlay`](super::Whiteouts::Overlay)): a deletion
//! is a 0/0 character device, an opaque directory carries
//! `trusted.overlay.opaque=y`. [`MergedDir`] looks names up through the
//! layers the way overlayfs does (`ovl_lookup` in `fs/overlayfs/namei.c`):
//! the top-most layer that has a name decides what it is; a whiteout hides
//! it; a directory merges with the directories of the same name below it
//! until a layer has something else there, a whiteout, or the directory is
//! opaque. [`flatten`] copies that merged view, so the copy shows exactly
//! what the overlay mount would.
//!
//! The walk only reads the layers and only writes below the destination:
//! every directory is opened relative to its parent's fd with `O_NOFOLLOW`,
//! symlinks are read with `readlinkat` and re-created, never followed, and
//! everything is created with `*at` calls that do not follow the new name.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;

use super::unpack::{list_dir, proc_fd_path};
use super::{LayerError, OVERLAY_OPAQUE_XATTR, RelPath, is_overlay_xattr};

/// What [`flatten`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenStats {
    /// Entries created below the destination (hard links included).
    pub entries: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
    /// Regular files cloned with `FICLONE` rather than copied.
    pub reflinked: u64,
    /// Extended attributes the destination's file system or our privileges
    /// did not allow (`EOPNOTSUPP`, `EPERM`), skipped as unpacking skips them.
    pub skipped_xattrs: u64,
}

/// Copies the merged view of `layers` (overlay-form layer directories, base
/// first) into `dest`, an existing empty directory, as the overlay mount of
/// those layers would show it.
///
/// Owners, modes (setuid, setgid and sticky bits too), mtimes and atimes
/// with nanoseconds, and xattrs are kept; overlayfs's own xattrs
/// (`trusted.overlay.*`, `user.overlay.*`) and `security.selinux` (a host
/// label, not image content) are not copied. Names that are one inode in a
/// layer become hard links in the copy. Symlinks are copied as symlinks,
/// device nodes, FIFOs and sockets as nodes. Regular files are cloned with
/// `FICLONE` where the file system can share extents (btrfs, XFS) and
/// copied otherwise. `dest` itself takes the owner, mode and times of the
/// top layer's root.
///
/// On error `dest` is left part-way; the caller discards it.
pub fn flatten(layers: &[PathBuf], dest: &Path) -> Result<FlattenStats, LayerError> {
    let root = MergedDir::open(layers)?;
    let open_dest = || {
        rfs::open(
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| LayerError::OpenDestination {
            path: dest.to_path_buf(),
            source,
        })
    };
    // One fd to create in, one the copier keeps to resolve hard link
    // targets from.
    let dest_root = open_dest()?;
    let mut copier = Copier {
        dest_root: open_dest()?,
        links: HashMap::new(),
        try_reflink: true,
        stats: FlattenStats::default(),
        xattrs: XattrBuffers::new(),
    };
    copier.copy_dir(&root, dest_root.as_fd(), &RelPath::default())?;
    if let Some(top) = root.layers.first() {
        let st = rfs::fstat(top).map_err(|e| read_error(&RelPath::default(), "metadata", e))?;
        copier.finish_dir(top.as_fd(), dest_root.as_fd(), &st, &RelPath::default())?;
    }
    Ok(copier.stats)
}

/// One directory of the merged view of a stack of overlay-form layers: the
/// layer directories it is made of, top layer first.
#[derive(Debug)]
pub(super) struct MergedDir {
    layers: Vec<OwnedFd>,
}

/// A name found in a [`MergedDir`].
#[derive(Debug)]
pub(super) struct Found {
    /// The entry as the top-most layer that has it shows it.
    pub(super) st: Stat,
    /// Which of the merged directory's layers it comes from.
    pub(super) layer: usize,
}

impl Found {
    pub(super) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.st.st_mode)
    }
}

impl MergedDir {
    /// The root of the merged view of `layers` (base first). The roots of
    /// all layers always merge, as overlayfs's root does.
    pub(super) fn open(layers: &[PathBuf]) -> Result<MergedDir, LayerError> {
        let mut fds = Vec::with_capacity(layers.len());
        for layer in layers.iter().rev() {
            let fd = rfs::open(
                layer,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|source| LayerError::OpenSource {
                path: layer.clone(),
                source,
            })?;
            fds.push(fd);
        }
        Ok(MergedDir { layers: fds })
    }

    /// The directory of layer `index` (0 is the top-most).
    pub(super) fn layer(&self, index: usize) -> BorrowedFd<'_> {
        self.layers[index].as_fd()
    }

    /// Every name any of the layers has here, sorted; whiteouts included
    /// (a [`lookup`](Self::lookup) tells what a name really is).
    pub(super) fn names(&self, rel: &RelPath) -> Result<Vec<CString>, LayerError> {
        let mut names = BTreeSet::new();
        for layer in &self.layers {
            names.extend(list_dir(layer.as_fd()).map_err(|e| read_error(rel, "directory", e))?);
        }
        Ok(names.into_iter().collect())
    }

    /// What `name` is in the merged view: `None` when no layer has it or
    /// the top-most one that has it is a whiteout.
    pub(super) fn lookup(&self, name: &CStr, rel: &RelPath) -> Result<Option<Found>, LayerError> {
        for (index, layer) in self.layers.iter().enumerate() {
            match rfs::statat(layer, name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {}
                Err(e) => return Err(read_error(&rel.join(name.to_bytes()), "metadata", e)),
                Ok(st) if is_whiteout(&st) => return Ok(None),
                Ok(st) => return Ok(Some(Found { st, layer: index })),
            }
        }
        Ok(None)
    }

    /// The merged directory `name`, which [`lookup`](Self::lookup) found as
    /// `found`, a directory: its own layer and the directories of that name
    /// below, down to the first layer with anything else there, or an
    /// opaque one.
    pub(super) fn open_child(
        &self,
        name: &CStr,
        found: &Found,
        rel: &RelPath,
    ) -> Result<MergedDir, LayerError> {
        let path = rel.join(name.to_bytes());
        let mut layers = Vec::new();
        for layer in &self.layers[found.layer..] {
            let st = match rfs::statat(layer, name, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(read_error(&path, "metadata", e)),
                Ok(st) => st,
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                break;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rfs::openat(layer, name, flags, Mode::empty())
                .map_err(|e| read_error(&path, "directory", e))?;
            let opaque = is_opaque(fd.as_fd()).map_err(|e| read_error(&path, "xattrs", e))?;
            layers.push(fd);
            if opaque {
                break;
            }
        }
        Ok(MergedDir { layers })
    }
}

/// An overlay whiteout: a character device with device number 0/0.
pub(super) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether a layer directory is marked opaque.
fn is_opaque(dir: BorrowedFd<'_>) -> Result<bool, Errno> {
    let mut value = [0u8; 8];
    match rfs::fgetxattr(dir, OVERLAY_OPAQUE_XATTR, &mut value[..]) {
        Ok(len) => Ok(&value[..len] == b"y"),
        Err(Errno::NODATA | Errno::OPNOTSUPP | Errno::RANGE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Linux's `XATTR_LIST_MAX` and `XATTR_SIZE_MAX`.
const XATTR_MAX: usize = 64 * 1024;

/// Where an entry's xattrs are read or written.
#[derive(Clone, Copy)]
pub(super) enum XattrTarget<'a> {
    /// An fd opened on the entry itself.
    Fd(BorrowedFd<'a>),
    /// A symlink or node, named in its parent directory.
    At(BorrowedFd<'a>, &'a CStr),
}

/// Reusable buffers for reading xattrs.
pub(super) struct XattrBuffers {
    list: Vec<u8>,
    value: Vec<u8>,
}

impl XattrBuffers {
    pub(super) fn new() -> XattrBuffers {
        XattrBuffers {
            list: vec![0; XATTR_MAX],
            value: vec![0; XATTR_MAX],
        }
    }

    /// The xattrs of an entry that are content: not overlayfs's own, not
    /// the host's SELinux label. Sorted by name.
    pub(super) fn content(
        &mut self,
        target: XattrTarget<'_>,
    ) -> Result<Vec<(CString, Vec<u8>)>, Errno> {
        let listed = match target {
            XattrTarget::Fd(fd) => rfs::flistxattr(fd, &mut self.list[..]),
            XattrTarget::At(dir, name) => {
                rfs::llistxattr(proc_fd_path(dir, name.to_bytes()), &mut self.list[..])
            }
        };
        let len = match listed {
            Ok(len) => len,
            Err(Errno::OPNOTSUPP) => 0,
            Err(e) => return Err(e),
        };
        let names: Vec<CString> = self.list[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty() && !is_overlay_xattr(n) && *n != b"security.selinux")
            .filter_map(|n| CString::new(n).ok())
            .collect();
        let mut xattrs = Vec::with_capacity(names.len());
        for name in names {
            match self.value(target, &name)? {
                Some(value) => xattrs.push((name, value)),
                None => continue,
            }
        }
        xattrs.sort();
        Ok(xattrs)
    }

    /// One xattr's value, `None` if the entry has no such xattr.
    pub(super) fn value(
        &mut self,
        target: XattrTarget<'_>,
        name: &CStr,
    ) -> Result<Option<Vec<u8>>, Errno> {
        let got = match target {
            XattrTarget::Fd(fd) => rfs::fgetxattr(fd, name, &mut self.value[..]),
            XattrTarget::At(dir, file) => rfs::lgetxattr(
                proc_fd_path(dir, file.to_bytes()),
                name,
                &mut self.value[..],
            ),
        };
        match got {
            Ok(len) => Ok(Some(self.value[..len].to_vec())),
            Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct Copier {
    dest_root: OwnedFd,
    /// Where the first name of each multiply-linked source inode was
    /// copied to, below the destination.
    links: HashMap<(u64, u64), RelPath>,
    /// Cleared once the destination refuses `FICLONE` for good.
    try_reflink: bool,
    stats: FlattenStats,
    xattrs: XattrBuffers,
}

/// Path resolution below the destination for hard link targets: never
/// through a symlink, never out of it. The copy only has directories we
/// made on the way to a file we copied.
const RESOLVE_BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Copier {
    fn copy_dir(
        &mut self,
        src: &MergedDir,
        dst: BorrowedFd<'_>,
        rel: &RelPath,
    ) -> Result<(), LayerError> {
        for name in src.names(rel)? {
            let Some(found) = src.lookup(&name, rel)? else {
                continue;
            };
            let path = rel.join(name.to_bytes());
            let layer = src.layer(found.layer);
            match found.file_type() {
                FileType::Directory => {
                    rfs::mkdirat(dst, &name, Mode::from_raw_mode(0o700))
                        .map_err(|e| create_error(&path, "directory", e))?;
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let sub_dst = rfs::openat(dst, &name, flags, Mode::empty())
                        .map_err(|e| create_error(&path, "directory", e))?;
                    self.stats.entries += 1;
                    let sub = src.open_child(&name, &found, rel)?;
                    self.copy_dir(&sub, sub_dst.as_fd(), &path)?;
                    self.finish_dir(sub.layer(0), sub_dst.as_fd(), &found.st, &path)?;
                }
                _ if self.link_again(&found.st, dst, &name, &path)? => {}
                FileType::RegularFile => self.copy_file(layer, dst, &name, &path)?,
                FileType::Symlink => {
                    let target = rfs::readlinkat(layer, &name, Vec::new())
                        .map_err(|e| read_error(&path, "link target", e))?;
                    rfs::symlinkat(target.as_c_str(), dst, &name)
                        .map_err(|e| create_error(&path, "symlink", e))?;
                    self.finish_at(layer, dst, &name, &found.st, &path, false)?;
                    self.remember_link(&found.st, &path);
                }
                kind @ (FileType::CharacterDevice
                | FileType::BlockDevice
                | FileType::Fifo
                | FileType::Socket) => {
                    let mode = Mode::from_raw_mode(found.st.st_mode & 0o7777);
                    rfs::mknodat(dst, &name, kind, mode, found.st.st_rdev)
                        .map_err(|e| create_error(&path, "node", e))?;
                    self.finish_at(layer, dst, &name, &found.st, &path, true)?;
                    self.remember_link(&found.st, &path);
                }
                FileType::Unknown => {
                    tracing::debug!(path = %path, "unknown file type not copied");
                    continue;
                }
            }
        }
        Ok(())
    }

    /// Makes `name` a hard link to the copy of the same source inode, if
    /// one was made already.
    fn link_again(
        &mut self,
        st: &Stat,
        dst: BorrowedFd<'_>,
        name: &CStr,
        path: &RelPath,
    ) -> Result<bool, LayerError> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let Some(first) = self.links.get(&inode_key(st)) else {
            return Ok(false);
        };
        let link_error = |source| LayerError::HardLink {
            entry: path.to_string(),
            target: first.to_string(),
            source,
        };
        let (parent, base) = first.split_last();
        let parent_fd;
        let target_dir = if parent.is_empty() {
            self.dest_root.as_fd()
        } else {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            parent_fd = rfs::openat2(
                &self.dest_root,
                OsStr::from_bytes(parent),
                flags,
                Mode::empty(),
                RESOLVE_BENEATH,
            )
            .map_err(link_error)?;
            parent_fd.as_fd()
        };
        // Without AT_SYMLINK_FOLLOW linkat links a symlink itself.
        rfs::linkat(target_dir, base, dst, name, AtFlags::empty()).map_err(link_error)?;
        self.stats.entries += 1;
        Ok(true)
    }

    fn remember_link(&mut self, st: &Stat, path: &RelPath) {
        if st.st_nlink > 1 {
            self.links.insert(inode_key(st), path.clone());
        }
    }

    fn copy_file(
        &mut self,
        layer: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CStr,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        let src = rfs::openat(
            layer,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| read_error(path, "content", e))?;
        // The metadata of the open file, which is what gets copied.
        let st = rfs::fstat(&src).map_err(|e| read_error(path, "metadata", e))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let out = rfs::openat(dst, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| create_error(path, "file", e))?;
        self.stats.entries += 1;
        let cloned = self.try_reflink && self.reflink(&src, &out);
        if cloned {
            self.stats.reflinked += 1;
        } else {
            let mut from = File::from(
                src.try_clone()
                    .map_err(|e| read_error(path, "content", e))?,
            );
            let mut to = File::from(
                out.try_clone()
                    .map_err(|source| write_error(path, source))?,
            );
            // std copies between files with copy_file_range, in the kernel.
            io::copy(&mut from, &mut to).map_err(|source| write_error(path, source))?;
        }
        self.stats.bytes += u64::try_from(st.st_size).unwrap_or(0);
        self.set_meta_fd(src.as_fd(), out.as_fd(), &st, path)?;
        rfs::futimens(&out, &times(&st)).map_err(|e| metadata_error(path, "times", e))?;
        self.remember_link(&st, path);
        Ok(())
    }

    /// Clones `src` into the empty `out`; false if the file system cannot,
    /// leaving `out` empty for a plain copy.
    fn reflink(&mut self, src: &OwnedFd, out: &OwnedFd) -> bool {
        match rfs::ioctl_ficlone(out, src) {
            Ok(()) => true,
            // No shared extents here (ext4, tmpfs), or layers and copy on
            // different file systems: it will not work for the next file
            // either.
            Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::NOTTY | Errno::NOSYS | Errno::INVAL) => {
                self.try_reflink = false;
                false
            }
            Err(_) => false,
        }
    }

    /// Owner, mode and xattrs from the source fd to the copy's fd. Owner
    /// first: chown clears setuid bits and `security.capability`.
    fn set_meta_fd(
        &mut self,
        src: BorrowedFd<'_>,
        out: BorrowedFd<'_>,
        st: &Stat,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        rfs::fchown(out, uid(st), gid(st)).map_err(|e| metadata_error(path, "owner", e))?;
        rfs::fchmod(out, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| metadata_error(path, "mode", e))?;
        let xattrs = self
            .xattrs
            .content(XattrTarget::Fd(src))
            .map_err(|e| read_error(path, "xattrs", e))?;
        for (name, value) in &xattrs {
            let result = rfs::fsetxattr(out, name.as_c_str(), value, XattrFlags::empty());
            self.check_xattr(result, name, path)?;
        }
        Ok(())
    }

    /// A directory's metadata, once everything inside it is in place.
    fn finish_dir(
        &mut self,
        src: BorrowedFd<'_>,
        out: BorrowedFd<'_>,
        st: &Stat,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        self.set_meta_fd(src, out, st, path)?;
        rfs::futimens(out, &times(st)).map_err(|e| metadata_error(path, "times", e))
    }

    /// Owner, mode, xattrs and times of a symlink or node, by name in its
    /// parent, never following it.
    fn finish_at(
        &mut self,
        layer: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CStr,
        st: &Stat,
        path: &RelPath,
        with_mode: bool,
    ) -> Result<(), LayerError> {
        self.stats.entries += 1;
        rfs::chownat(dst, name, uid(st), gid(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| metadata_error(path, "owner", e))?;
        if with_mode {
            // fchmodat cannot refuse to follow a final symlink before Linux
            // 6.6, but `name` is the node mknodat just made in a directory
            // of our own copy, which nothing else writes to.
            rfs::chmodat(
                dst,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| metadata_error(path, "mode", e))?;
        }
        let xattrs = self
            .xattrs
            .content(XattrTarget::At(layer, name))
            .map_err(|e| read_error(path, "xattrs", e))?;
        if !xattrs.is_empty() {
            // l*xattr does not follow the last component; the magic link
            // only leads to the parent directory we already hold.
            let at = proc_fd_path(dst, name.to_bytes());
            for (xattr, value) in &xattrs {
                let result = rfs::lsetxattr(&at, xattr.as_c_str(), value, XattrFlags::empty());
                self.check_xattr(result, xattr, path)?;
            }
        }
        rfs::utimensat(dst, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| metadata_error(path, "times", e))
    }

    /// Skips xattrs the file system or our privileges do not allow, as
    /// unpacking does; any other failure is an error.
    fn check_xattr(
        &mut self,
        result: Result<(), Errno>,
        name: &CStr,
        path: &RelPath,
    ) -> Result<(), LayerError> {
        match result {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::PERM) => {
                self.stats.skipped_xattrs += 1;
                tracing::debug!(path = %path, xattr = ?name, "xattr not supported here, skipped");
                Ok(())
            }
            Err(source) => Err(LayerError::SetXattr {
                entry: path.to_string(),
                name: name.to_string_lossy().into_owned(),
                source,
            }),
        }
    }
}

/// Access and modification times of `st`, nanoseconds included.
#[allow(clippy::useless_conversion)]
fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rfs::Timespec {
            tv_sec: i64::from(st.st_atime),
            tv_nsec: i64::try_from(st.st_atime_nsec).unwrap_or(0),
        },
        last_modification: rfs::Timespec {
            tv_sec: i64::from(st.st_mtime),
            tv_nsec: i64::try_from(st.st_mtime_nsec).unwrap_or(0),
        },
    }
}

fn uid(st: &Stat) -> Option<Uid> {
    Some(Uid::from_raw(st.st_uid))
}

fn gid(st: &Stat) -> Option<Gid> {
    Some(Gid::from_raw(st.st_gid))
}

// `Stat`'s field types differ between architectures; on some these
// conversions are the identity.
#[allow(clippy::useless_conversion)]
pub(super) fn inode_key(st: &Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

pub(super) fn read_error(
    path: &RelPath,
    what: &'static str,
    source: impl Into<io::Error>,
) -> LayerError {
    LayerError::ReadSource {
        path: path.to_string(),
        what,
        source: source.into(),
    }
}

fn create_error(path: &RelPath, kind: &'static str, source: Errno) -> LayerError {
    LayerError::Create {
        entry: path.to_string(),
        kind,
        source,
    }
}

fn metadata_error(path: &RelPath, what: &'static str, source: Errno) -> LayerError {
    LayerError::SetMetadata {
        entry: path.to_string(),
        what,
        source,
    }
}

fn write_error(path: &RelPath, source: io::Error) -> LayerError {
    LayerError::WriteFile {
        entry: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use super::*;

    /// A 0/0 character device: an overlay whiteout (unprivileged since
    /// Linux 5.8).
    fn whiteout(path: &Path) {
        rfs::mknodat(rfs::CWD, path, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
    }

    fn layers(tmp: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let dir = tmp.join(format!("layer{i}"));
                fs::create_dir(&dir).unwrap();
                dir
            })
            .collect()
    }

    fn flattened(tmp: &Path, layers: &[PathBuf]) -> (PathBuf, FlattenStats) {
        let dest = tmp.join("dest");
        fs::create_dir(&dest).unwrap();
        let stats = flatten(layers, &dest).unwrap();
        (dest, stats)
    }

    #[test]
    fn names_of_one_inode_stay_hard_links() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layers(tmp.path(), 1);
        fs::create_dir(l[0].join("bin")).unwrap();
        fs::write(l[0].join("bin/busybox"), b"program").unwrap();
        fs::hard_link(l[0].join("bin/busybox"), l[0].join("bin/sh")).unwrap();
        fs::hard_link(l[0].join("bin/busybox"), l[0].join("ls")).unwrap();
        let (dest, stats) = flattened(tmp.path(), &l);
        let first = fs::metadata(dest.join("bin/busybox")).unwrap();
        assert_eq!(first.nlink(), 3);
        for other in ["bin/sh", "ls"] {
            assert_eq!(fs::metadata(dest.join(other)).unwrap().ino(), first.ino());
        }
        assert_eq!(fs::read(dest.join("ls")).unwrap(), b"program");
        assert_eq!(stats.bytes, 7, "the content is copied once");
        // Not shared with the layer: writing the copy leaves the image alone.
        fs::write(dest.join("bin/sh"), b"changed").unwrap();
        assert_eq!(fs::read(l[0].join("bin/sh")).unwrap(), b"program");
    }

    #[test]
    fn symlinks_are_copied_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let l = layers(tmp.path(), 2);
        // The base has `d` as a link out of the tree; the top layer has a
        // directory there, which must not merge with the link's target.
        symlink(&outside, l[0].join("d")).unwrap();
        fs::create_dir(l[1].join("d")).unwrap();
        fs::write(l[1].join("d/f"), b"inside").unwrap();
        symlink("/etc/passwd", l[1].join("abs")).unwrap();
        symlink("../../../outside", l[1].join("rel")).unwrap();
        // A directory of the base replaced by a link in the top layer: the
        // base's content is hidden.
        fs::create_dir(l[0].join("lib")).unwrap();
        fs::write(l[0].join("lib/old"), b"x").unwrap();
        symlink(&outside, l[1].join("lib")).unwrap();
        let (dest, _) = flattened(tmp.path(), &l);
        assert!(fs::symlink_metadata(dest.join("d")).unwrap().is_dir());
        assert_eq!(fs::read(dest.join("d/f")).unwrap(), b"inside");
        assert_eq!(
            fs::read_link(dest.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::read_link(dest.join("rel")).unwrap(),
            Path::new("../../../outside")
        );
        assert_eq!(fs::read_link(dest.join("lib")).unwrap(), outside);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn whiteouts_hide_lower_files_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layers(tmp.path(), 3);
        fs::create_dir_all(l[0].join("etc/conf.d")).unwrap();
        fs::write(l[0].join("etc/conf.d/a"), b"a").unwrap();
        fs::write(l[0].join("etc/passwd"), b"root").unwrap();
        fs::write(l[0].join("gone"), b"x").unwrap();
        fs::create_dir(l[1].join("etc")).unwrap();
        whiteout(&l[1].join("etc/conf.d"));
        whiteout(&l[1].join("gone"));
        // A name deleted in the middle layer and made again on top.
        fs::create_dir(l[2].join("etc")).unwrap();
        fs::create_dir(l[2].join("etc/conf.d")).unwrap();
        fs::write(l[2].join("etc/conf.d/b"), b"b").unwrap();
        // A whiteout of something no layer has.
        whiteout(&l[2].join("never"));
        let (dest, _) = flattened(tmp.path(), &l);
        let mut names: Vec<String> = fs::read_dir(dest.join("etc/conf.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["b"]);
        assert_eq!(fs::read(dest.join("etc/passwd")).unwrap(), b"root");
        assert!(fs::symlink_metadata(dest.join("gone")).is_err());
        assert!(fs::symlink_metadata(dest.join("never")).is_err());
    }

    #[test]
    fn metadata_comes_from_the_top_most_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layers(tmp.path(), 2);
        fs::create_dir(l[0].join("dir")).unwrap();
        fs::write(l[0].join("dir/f"), b"old").unwrap();
        fs::create_dir(l[1].join("dir")).unwrap();
        fs::write(l[1].join("dir/f"), b"new!").unwrap();
        fs::set_permissions(l[1].join("dir/f"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::set_permissions(l[1].join("dir"), fs::Permissions::from_mode(0o1751)).unwrap();
        let times = Timestamps {
            last_access: rfs::Timespec {
                tv_sec: 1_600_000_000,
                tv_nsec: 5,
            },
            last_modification: rfs::Timespec {
                tv_sec: 1_500_000_000,
                tv_nsec: 123_456_789,
            },
        };
        for path in [l[1].join("dir/f"), l[1].join("dir")] {
            rfs::utimensat(rfs::CWD, &path, &times, AtFlags::empty()).unwrap();
        }
        let (dest, _) = flattened(tmp.path(), &l);
        for (path, mode) in [("dir/f", 0o4751), ("dir", 0o1751)] {
            let meta = fs::symlink_metadata(dest.join(path)).unwrap();
            assert_eq!(meta.mode() & 0o7777, mode, "{path}");
            assert_eq!(meta.mtime(), 1_500_000_000, "{path}");
            assert_eq!(meta.mtime_nsec(), 123_456_789, "{path}");
        }
        assert_eq!(fs::read(dest.join("dir/f")).unwrap(), b"new!");
    }

    #[test]
    fn no_layers_give_an_empty_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (dest, stats) = flattened(tmp.path(), &[]);
        assert_eq!(fs::read_dir(dest).unwrap().count(), 0);
        assert_eq!(stats.entries, 0);
    }
}
