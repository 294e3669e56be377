//! Applying one layer tar to a directory.
//!
//! Containment: the destination is opened once; every parent directory of an
//! entry is opened with `openat2(dest, parent, RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so symlinks met on the way —
//! absolute, `..`-laden or pointing at `/` — resolve as if `dest` were `/`.
//! The last component is then created, replaced or changed relative to that
//! parent fd with calls that never follow it (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! `mkdirat`, `symlinkat`, `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`,
//! `unlinkat`, `AT_SYMLINK_NOFOLLOW`), and metadata goes through the fd of
//! what was just created. Entry names are mapped into the root by
//! [`normalize`](super::normalize): a leading `/` is dropped, a `..` above
//! the root is refused.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use super::{
    Decompressor, LayerError, NameError, OVERLAY_OPAQUE_XATTR, PAX_XATTR_PREFIX, RelPath,
    WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, is_overlay_xattr, lossy, normalize,
};
use crate::image::digest::{Digest, HashingReader};

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The destination is an empty directory that will be an overlayfs lower
    /// layer: `.wh.NAME` becomes a 0/0 character device `NAME` and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory, the
    /// way overlayfs itself records deletions. Needs `CAP_MKNOD` and
    /// `CAP_SYS_ADMIN`.
    Overlay,
    /// Not a layer but a plain archive (`docker cp`): names starting with
    /// `.wh.` are ordinary files, nothing is deleted.
    Plain,
    /// The destination already holds the lower layers (plain-copy storage):
    /// `.wh.NAME` deletes `NAME` and `.wh..wh..opq` deletes what lower layers
    /// put in its directory.
    Apply,
}

/// Limits and policy for [`unpack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// How whiteouts are applied.
    pub whiteouts: Whiteouts,
    /// Set owners from the tar's numeric uid/gid (needs `CAP_CHOWN`); off,
    /// everything belongs to the calling user.
    pub preserve_owners: bool,
    /// Accept character and block device entries. FIFOs are always accepted.
    pub allow_devices: bool,
    /// Most uncompressed bytes the layer stream may have.
    pub max_total_size: u64,
    /// Most bytes a single entry may declare.
    pub max_entry_size: u64,
    /// Most tar entries the layer may have.
    pub max_entries: u64,
    /// Refuse to replace a directory with a non-directory or the other way
    /// round, instead of removing what is there (moby's
    /// `NoOverwriteDirNonDir`, which `docker cp` sets).
    pub no_overwrite_dir_non_dir: bool,
    /// Renames entries on the way in, as moby's `RebaseArchiveEntries`:
    /// an entry name (and hard link target) that is `old` or starts with
    /// `old/` gets `new` in place of `old`. An `old` of `/` matches the
    /// leading `/` of names that have one.
    pub rebase: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for UnpackOptions {
    /// Plain-copy whiteouts, owners kept, no devices, and limits far above
    /// any real image (a distro rootfs is ~100k entries, well under 1 GiB).
    fn default() -> Self {
        Self {
            whiteouts: Whiteouts::Apply,
            preserve_owners: true,
            allow_devices: false,
            max_total_size: 64 << 30,
            max_entry_size: 32 << 30,
            max_entries: 4_000_000,
            no_overwrite_dir_non_dir: false,
            rebase: None,
        }
    }
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream: the layer's OCI `diff_id`.
    pub diff_id: Digest,
    /// Uncompressed bytes, including the tar trailer and padding.
    pub size: u64,
    /// Bytes of content: the sum of the sizes the entries declare. Docker
    /// reports this as the layer's size (moby `archive.UnpackLayer`).
    pub content_size: u64,
    /// Tar entries read (extension headers such as PAX and GNU long names
    /// are part of the entry they describe).
    pub entries: u64,
    /// Extended attributes the filesystem or our privileges did not allow
    /// (`EOPNOTSUPP`, `EPERM`), skipped as Docker skips them.
    pub skipped_xattrs: u64,
}

/// Path resolution for every parent directory: `dest` acts as `/`.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Copy buffer for file content.
const COPY_BUFFER: usize = 256 * 1024;

/// Applies one layer tar (plain, gzip or zstd) to the existing directory
/// `dest` and returns its `diff_id`.
///
/// Entries are regular files, directories, symlinks, hard links, FIFOs and,
/// with [`UnpackOptions::allow_devices`], device nodes. Owners (optional),
/// modes (with setuid/setgid/sticky), mtimes and `SCHILY.xattr.*` PAX
/// xattrs are restored; directory mtimes last. An entry replaces what is at
/// its path unless both are directories, which merge (as Docker does).
/// Parents missing from the tar are created with mode 0755.
///
/// Nothing outside `dest` is ever created, changed or removed, whatever the
/// tar says (see the module header for how). Names with `..` above the root,
/// NUL or nothing are refused, as are overlayfs xattrs (`trusted.overlay.*`,
/// `user.overlay.*`), which would forge whiteouts. Symlinks may point
/// anywhere, since they are never followed out of `dest`.
///
/// On error `dest` is left part-way; the caller discards it.
pub fn unpack(
    reader: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| LayerError::OpenDestination {
        path: dest.to_path_buf(),
        source,
    })?;
    unpack_into(reader, root, opts)
}

/// [`unpack`] into the directory open as `dest` (any fd of it, `O_PATH`
/// too), e.g. one resolved inside a container's root.
pub fn unpack_at(
    reader: impl Read,
    dest: BorrowedFd<'_>,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    let root = rfs::openat(
        dest,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| LayerError::OpenDestination {
        path: PathBuf::from("."),
        source,
    })?;
    unpack_into(reader, root, opts)
}

fn unpack_into(
    reader: impl Read,
    root: OwnedFd,
    opts: &UnpackOptions,
) -> Result<UnpackStats, LayerError> {
    let tripped = Rc::new(Cell::new(false));
    let stream = LimitReader {
        inner: Decompressor::new(reader).map_err(LayerError::StartDecompress)?,
        remaining: opts.max_total_size,
        tripped: Rc::clone(&tripped),
    };
    let mut archive = tar::Archive::new(HashingReader::new(stream));
    let mut unpacker = Unpacker {
        opts,
        root: Rc::new(root),
        cache: None,
        dir_times: Vec::new(),
        unpacked: HashSet::new(),
        entries: 0,
        declared: 0,
        skipped_xattrs: 0,
        buf: vec![0; COPY_BUFFER],
        tripped,
    };
    let last = unpacker.apply_all(&mut archive)?;
    unpacker.set_dir_times()?;

    // The tar reader stops at the end-of-archive blocks; the diff_id covers
    // the whole stream, padding included (containerd drains it the same way).
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| unpacker.stream_error(&last, e))?;
    let (diff_id, size) = rest.finish();
    Ok(UnpackStats {
        diff_id,
        size,
        content_size: unpacker.declared,
        entries: unpacker.entries,
        skipped_xattrs: unpacker.skipped_xattrs,
    })
}

/// Fails the stream once more than `remaining` bytes came through, so a
/// decompression bomb stops at the limit instead of filling the disk.
struct LimitReader<R> {
    inner: R,
    remaining: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self
            .remaining
            .checked_sub(u64::try_from(n).unwrap_or(u64::MAX))
        {
            Some(left) => {
                self.remaining = left;
                Ok(n)
            }
            None => {
                self.tripped.set(true);
                Err(io::Error::other("layer size limit exceeded"))
            }
        }
    }
}

/// Owner, mode, times and xattrs of one entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    times: Timestamps,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// What one entry asks for, once its name and type are understood.
enum Action {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    HardLink { target: RelPath },
    Node { kind: FileType, dev: rfs::Dev },
    Whiteout { name: Vec<u8> },
    Opaque,
    Skip,
}

struct Unpacker<'o> {
    opts: &'o UnpackOptions,
    root: Rc<OwnedFd>,
    /// The last parent directory opened: tar entries come grouped by
    /// directory, so most entries reuse it.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directory mtimes, set once all content is in place.
    dir_times: Vec<(RelPath, Timestamps)>,
    /// Paths this layer created (only tracked in `Apply` mode), which an
    /// opaque marker must not remove.
    unpacked: HashSet<RelPath>,
    entries: u64,
    declared: u64,
    skipped_xattrs: u64,
    buf: Vec<u8>,
    tripped: Rc<Cell<bool>>,
}

impl Unpacker<'_> {
    /// Applies every entry; returns the name of the last one.
    fn apply_all<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<String, LayerError> {
        let mut last = String::new();
        let entries = archive.entries().map_err(|e| self.stream_error(&last, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.stream_error(&last, e))?;
            if entry.header().entry_type() == EntryType::XGlobalHeader {
                continue;
            }
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(LayerError::TooManyEntries {
                    limit: self.opts.max_entries,
                });
            }
            last = self.apply(&mut entry)?;
        }
        Ok(last)
    }

    fn stream_error(&self, after: &str, source: io::Error) -> LayerError {
        if self.tripped.get() {
            LayerError::LayerTooLarge {
                limit: self.opts.max_total_size,
            }
        } else {
            LayerError::ReadStream {
                after: after.to_string(),
                source,
            }
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<String, LayerError> {
        let raw_name = rebased(self.opts, entry.path_bytes().into_owned());
        let name = lossy(&raw_name);
        let path = normalize(&raw_name).map_err(|source| LayerError::InvalidName {
            entry: name.clone(),
            source,
        })?;

        let size = entry.size();
        if size > self.opts.max_entry_size {
            return Err(LayerError::EntryTooLarge {
                entry: name,
                size,
                limit: self.opts.max_entry_size,
            });
        }
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.opts.max_total_size {
            return Err(LayerError::LayerTooLarge {
                limit: self.opts.max_total_size,
            });
        }

        let action = self.classify(entry, &raw_name, &path, &name)?;
        if matches!(action, Action::Skip) {
            return Ok(name);
        }
        let meta = read_meta(entry, &name)?;
        let (parent, base) = path.split_last();
        let parent = RelPath(parent.to_vec());

        match action {
            Action::Whiteout { name: hidden } => {
                self.whiteout(&parent, &hidden, &meta, &name)?;
                return Ok(name);
            }
            Action::Opaque => {
                self.opaque(&parent, &name)?;
                return Ok(name);
            }
            Action::Dir if path.is_root() => {
                let root = Rc::clone(&self.root);
                self.set_meta_fd(root.as_fd(), &meta, &name, false)?;
                self.dir_times.push((path, meta.times));
                return Ok(name);
            }
            _ if path.is_root() => {
                return Err(LayerError::InvalidName {
                    entry: name,
                    source: NameError::Root,
                });
            }
            Action::File { size } => {
                let dir = self.parent_dir(&parent, &name)?;
                self.write_file(&dir, base, entry, size, &meta, &name)?;
            }
            Action::Dir => {
                let dir = self.parent_dir(&parent, &name)?;
                self.make_dir(&dir, base, &meta, &name)?;
                self.dir_times.push((path.clone(), meta.times));
            }
            Action::Symlink { target } => {
                let dir = self.parent_dir(&parent, &name)?;
                self.create(&dir, base, &name, "symlink", |d, b| {
                    rfs::symlinkat(target.as_slice(), d, b)
                })?;
                self.set_meta_at(&dir, base, &meta, &name, false)?;
            }
            Action::HardLink { target } => {
                let dir = self.parent_dir(&parent, &name)?;
                self.hard_link(&dir, base, &target, &name)?;
            }
            Action::Node { kind, dev } => {
                let dir = self.parent_dir(&parent, &name)?;
                let mode = Mode::from_raw_mode(meta.mode);
                self.create(&dir, base, &name, "node", |d, b| {
                    rfs::mknodat(d, b, kind, mode, dev)
                })?;
                self.set_meta_at(&dir, base, &meta, &name, true)?;
            }
            Action::Skip => {}
        }
        if self.opts.whiteouts == Whiteouts::Apply {
            self.unpacked.insert(path);
        }
        Ok(name)
    }

    /// Decides what an entry is, refusing what layers must not contain.
    fn classify<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw_name: &[u8],
        path: &RelPath,
        name: &str,
    ) -> Result<Action, LayerError> {
        let (_, base) = path.split_last();
        let layer = self.opts.whiteouts != Whiteouts::Plain;
        // AUFS bookkeeping at the root (`.wh..wh.plnk`, `.wh..wh.aufs`) is
        // not content; moby `pkg/archive/diff.go` skips it the same way.
        if layer && path.as_bytes().starts_with(WHITEOUT_META_PREFIX) {
            return Ok(Action::Skip);
        }
        if layer && base == WHITEOUT_OPAQUE {
            return Ok(Action::Opaque);
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX).filter(|_| layer) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(LayerError::InvalidName {
                    entry: name.to_string(),
                    source: NameError::EmptyWhiteout,
                });
            }
            return Ok(Action::Whiteout {
                name: hidden.to_vec(),
            });
        }
        let header = entry.header();
        let kind = header.entry_type();
        Ok(match kind {
            // A pre-POSIX regular entry (type NUL) whose name ends in `/` is
            // a directory, as in Go's archive/tar.
            EntryType::Regular if header.as_bytes()[156] == 0 && raw_name.ends_with(b"/") => {
                Action::Dir
            }
            EntryType::Regular | EntryType::Continuous => Action::File { size: entry.size() },
            EntryType::GNUSparse => {
                let size = header
                    .as_gnu()
                    .map(tar::GnuHeader::real_size)
                    .unwrap_or_else(|| header.size())
                    .map_err(|source| LayerError::InvalidHeader {
                        entry: name.to_string(),
                        field: "sparse size",
                        source,
                    })?;
                if size > self.opts.max_entry_size {
                    return Err(LayerError::EntryTooLarge {
                        entry: name.to_string(),
                        size,
                        limit: self.opts.max_entry_size,
                    });
                }
                Action::File { size }
            }
            EntryType::Directory => Action::Dir,
            EntryType::Symlink => Action::Symlink {
                target: link_target(entry, name)?,
            },
            EntryType::Link => {
                let raw = rebased(self.opts, link_target(entry, name)?);
                let target = match normalize(&raw) {
                    Ok(target) if target.is_root() => Err(NameError::Root),
                    other => other,
                }
                .map_err(|source| LayerError::InvalidLinkTarget {
                    entry: name.to_string(),
                    target: lossy(&raw),
                    source,
                })?;
                Action::HardLink { target }
            }
            EntryType::Char | EntryType::Block => {
                if !self.opts.allow_devices {
                    return Err(LayerError::DeviceNotAllowed {
                        entry: name.to_string(),
                    });
                }
                let field = |r: io::Result<Option<u32>>, field| {
                    r.map(Option::unwrap_or_default)
                        .map_err(|source| LayerError::InvalidHeader {
                            entry: name.to_string(),
                            field,
                            source,
                        })
                };
                let major = field(header.device_major(), "device major")?;
                let minor = field(header.device_minor(), "device minor")?;
                let kind = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                Action::Node {
                    kind,
                    dev: rfs::makedev(major, minor),
                }
            }
            EntryType::Fifo => Action::Node {
                kind: FileType::Fifo,
                dev: 0,
            },
            other => {
                return Err(LayerError::UnsupportedEntryType {
                    entry: name.to_string(),
                    kind: char::from(other.as_byte()),
                });
            }
        })
    }

    /// Opens (creating if missing) the parent directory `parent` of an entry.
    fn parent_dir(&mut self, parent: &RelPath, entry: &str) -> Result<Rc<OwnedFd>, LayerError> {
        if parent.is_root() {
            return Ok(Rc::clone(&self.root));
        }
        if let Some((cached, fd)) = &self.cache
            && cached == parent.as_bytes()
        {
            return Ok(Rc::clone(fd));
        }
        let fd = match self.open_dir(parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.make_parents(parent, entry)?,
            Err(source) => return Err(resolve_error(entry, parent, source)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((parent.as_bytes().to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Opens an existing directory inside the root, or `None` if it is not
    /// there.
    fn existing_dir(&self, path: &RelPath, entry: &str) -> Result<Option<Rc<OwnedFd>>, LayerError> {
        if path.is_root() {
            return Ok(Some(Rc::clone(&self.root)));
        }
        match self.open_dir(path) {
            Ok(fd) => Ok(Some(Rc::new(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(source) => Err(resolve_error(entry, path, source)),
        }
    }

    /// `openat2` of a directory below the root, with the root acting as `/`.
    fn open_dir(&self, path: &RelPath) -> Result<OwnedFd, Errno> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        loop {
            match rfs::openat2(&*self.root, path.as_os_str(), flags, Mode::empty(), RESOLVE) {
                // The kernel asks for a retry when a rename raced the lookup.
                Err(Errno::AGAIN) => {}
                other => return other,
            }
        }
    }

    /// Creates the missing directories of `parent`, one component at a
    /// time; each is made with `mkdirat` in its own parent's fd, so it lands
    /// where the in-root resolution of the prefix led.
    fn make_parents(&mut self, parent: &RelPath, entry: &str) -> Result<OwnedFd, LayerError> {
        let mut prefix = RelPath::default();
        let mut current: Option<OwnedFd> = None;
        for component in parent.components() {
            prefix = prefix.join(component);
            match self.open_dir(&prefix) {
                Ok(fd) => current = Some(fd),
                Err(Errno::NOENT) => {
                    let dir = current.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
                    match rfs::mkdirat(dir, component, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(source) => return Err(resolve_error(entry, &prefix, source)),
                    }
                    let fd = self
                        .open_dir(&prefix)
                        .map_err(|source| resolve_error(entry, &prefix, source))?;
                    // mkdirat's mode went through the umask.
                    rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(|source| resolve_error(entry, &prefix, source))?;
                    if self.opts.whiteouts == Whiteouts::Apply {
                        self.unpacked.insert(prefix.clone());
                    }
                    current = Some(fd);
                }
                Err(source) => return Err(resolve_error(entry, &prefix, source)),
            }
        }
        current.ok_or_else(|| resolve_error(entry, parent, Errno::INVAL))
    }

    /// Runs `make` to create `base` in `dir`; if something is already there,
    /// removes it (recursively) and tries once more.
    fn create<T>(
        &mut self,
        dir: &OwnedFd,
        base: &[u8],
        entry: &str,
        kind: &'static str,
        make: impl Fn(BorrowedFd<'_>, &[u8]) -> Result<T, Errno>,
    ) -> Result<T, LayerError> {
        match make(dir.as_fd(), base) {
            Err(Errno::EXIST) => {
                if self.opts.no_overwrite_dir_non_dir && kind != "directory" {
                    let existing = rfs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW);
                    if existing
                        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
                    {
                        return Err(LayerError::WouldReplace {
                            entry: entry.to_string(),
                            existing: "directory",
                            with: "non-directory",
                        });
                    }
                }
                self.remove(dir, base, entry)?;
                make(dir.as_fd(), base)
            }
            other => other,
        }
        .map_err(|source| LayerError::Create {
            entry: entry.to_string(),
            kind,
            source,
        })
    }

    /// Removes `base` from `dir`, recursively, and forgets cached parents
    /// that may have gone with it.
    fn remove(&mut self, dir: &OwnedFd, base: &[u8], entry: &str) -> Result<(), LayerError> {
        self.cache = None;
        remove_all(dir.as_fd(), base).map_err(|source| LayerError::Remove {
            entry: entry.to_string(),
            path: lossy(base),
            source,
        })
    }

    fn write_file(
        &mut self,
        dir: &OwnedFd,
        base: &[u8],
        content: &mut impl Read,
        size: u64,
        meta: &Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = self.create(dir, base, entry, "file", |d, b| {
            rfs::openat(d, b, flags, Mode::from_raw_mode(0o600))
        })?;
        let mut file = File::from(fd);
        let mut remaining = size;
        while remaining > 0 {
            let want = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let n = content
                .read(&mut self.buf[..want])
                .map_err(|e| self.stream_error(entry, e))?;
            if n == 0 {
                return Err(LayerError::Truncated {
                    entry: entry.to_string(),
                    declared: size,
                    read: size - remaining,
                });
            }
            file.write_all(&self.buf[..n])
                .map_err(|source| LayerError::WriteFile {
                    entry: entry.to_string(),
                    source,
                })?;
            remaining -= u64::try_from(n).unwrap_or(u64::MAX).min(remaining);
        }
        self.set_meta_fd(file.as_fd(), meta, entry, true)
    }

    fn make_dir(
        &mut self,
        dir: &OwnedFd,
        base: &[u8],
        meta: &Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        let mkdir = |d: BorrowedFd<'_>, b: &[u8]| rfs::mkdirat(d, b, Mode::from_raw_mode(0o700));
        match mkdir(dir.as_fd(), base) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing = rfs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW);
                let is_dir = existing
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                // A directory over a directory merges; over anything else it
                // replaces (moby `createTarFile`).
                if !is_dir && self.opts.no_overwrite_dir_non_dir {
                    return Err(LayerError::WouldReplace {
                        entry: entry.to_string(),
                        existing: "non-directory",
                        with: "directory",
                    });
                }
                if !is_dir {
                    self.create(dir, base, entry, "directory", mkdir)?;
                }
            }
            Err(source) => {
                return Err(LayerError::Create {
                    entry: entry.to_string(),
                    kind: "directory",
                    source,
                });
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd =
            rfs::openat(dir, base, flags, Mode::empty()).map_err(|source| LayerError::Create {
                entry: entry.to_string(),
                kind: "directory",
                source,
            })?;
        self.set_meta_fd(fd.as_fd(), meta, entry, false)
    }

    fn hard_link(
        &mut self,
        dir: &OwnedFd,
        base: &[u8],
        target: &RelPath,
        entry: &str,
    ) -> Result<(), LayerError> {
        let link_error = |source| LayerError::HardLink {
            entry: entry.to_string(),
            target: target.to_string(),
            source,
        };
        let (target_parent, target_base) = target.split_last();
        let target_dir = self
            .existing_dir(&RelPath(target_parent.to_vec()), entry)?
            .ok_or_else(|| link_error(Errno::NOENT))?;
        // Without AT_SYMLINK_FOLLOW, linkat links a symlink itself, never
        // what it points to.
        let link = |d: BorrowedFd<'_>, b: &[u8]| {
            rfs::linkat(&*target_dir, target_base, d, b, AtFlags::empty())
        };
        match link(dir.as_fd(), base) {
            Err(Errno::EXIST) => {
                self.remove(dir, base, entry)?;
                link(dir.as_fd(), base)
            }
            other => other,
        }
        .map_err(link_error)
    }

    /// `.wh.NAME`: hides `NAME` of the lower layers.
    fn whiteout(
        &mut self,
        parent: &RelPath,
        hidden: &[u8],
        meta: &Meta,
        entry: &str,
    ) -> Result<(), LayerError> {
        match self.opts.whiteouts {
            // Plain archives never classify an entry as a whiteout.
            Whiteouts::Plain => {}
            Whiteouts::Apply => {
                if let Some(dir) = self.existing_dir(parent, entry)? {
                    self.remove(&dir, hidden, entry)?;
                }
            }
            Whiteouts::Overlay => {
                // overlayfs records a deletion as a 0/0 character device
                // (Documentation/filesystems/overlayfs.rst, "whiteouts").
                let dir = self.parent_dir(parent, entry)?;
                let whiteout = |d: BorrowedFd<'_>, b: &[u8]| {
                    rfs::mknodat(d, b, FileType::CharacterDevice, Mode::empty(), 0)
                };
                match self.create(&dir, hidden, entry, "whiteout", whiteout) {
                    Err(LayerError::Create { source, .. }) => {
                        return Err(LayerError::OverlayWhiteout {
                            entry: entry.to_string(),
                            source,
                        });
                    }
                    other => other?,
                }
                if self.opts.preserve_owners {
                    rfs::chownat(
                        &*dir,
                        hidden,
                        uid(meta),
                        gid(meta),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|source| metadata_error(entry, "owner", source))?;
                }
            }
        }
        Ok(())
    }

    /// `DIR/.wh..wh..opq`: hides everything lower layers put in `DIR`.
    fn opaque(&mut self, parent: &RelPath, entry: &str) -> Result<(), LayerError> {
        match self.opts.whiteouts {
            Whiteouts::Plain => {}
            Whiteouts::Apply => {
                if let Some(dir) = self.existing_dir(parent, entry)? {
                    self.cache = None;
                    self.clear_lower(dir.as_fd(), parent)
                        .map_err(|source| LayerError::Remove {
                            entry: entry.to_string(),
                            path: parent.to_string(),
                            source,
                        })?;
                }
            }
            Whiteouts::Overlay => {
                let dir = self.parent_dir(parent, entry)?;
                rfs::fsetxattr(&*dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(
                    |source| LayerError::OverlayOpaque {
                        entry: entry.to_string(),
                        source,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Removes everything under `dir` that this layer did not create, the
    /// way moby's `UnpackLayer` walks an opaque directory against its
    /// `unpackedPaths`: correct whether the marker comes before or after the
    /// directory's new content in the tar.
    fn clear_lower(&self, dir: BorrowedFd<'_>, path: &RelPath) -> Result<(), Errno> {
        for child in list_dir(dir)? {
            let child_path = path.join(child.as_bytes());
            if !self.unpacked.contains(&child_path) {
                remove_all(dir, child.as_bytes())?;
                continue;
            }
            let st = rfs::statat(dir, &child, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rfs::openat(dir, &child, flags, Mode::empty())?;
                self.clear_lower(sub.as_fd(), &child_path)?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and (unless a directory) times through the fd of
    /// what was just created. Owner goes first: chown clears setuid bits and
    /// `security.capability`.
    fn set_meta_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        entry: &str,
        with_times: bool,
    ) -> Result<(), LayerError> {
        if self.opts.preserve_owners {
            rfs::fchown(fd, uid(meta), gid(meta))
                .map_err(|source| metadata_error(entry, "owner", source))?;
        }
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|source| metadata_error(entry, "mode", source))?;
        for (name, value) in &meta.xattrs {
            let result = rfs::fsetxattr(fd, name.as_c_str(), value, XattrFlags::empty());
            self.check_xattr(result, name, entry)?;
        }
        if with_times {
            rfs::futimens(fd, &meta.times)
                .map_err(|source| metadata_error(entry, "times", source))?;
        }
        Ok(())
    }

    /// The same for symlinks and nodes, which cannot be opened for writing:
    /// by name in their parent, never following the name.
    fn set_meta_at(
        &mut self,
        dir: &OwnedFd,
        base: &[u8],
        meta: &Meta,
        entry: &str,
        with_mode: bool,
    ) -> Result<(), LayerError> {
        if self.opts.preserve_owners {
            rfs::chownat(dir, base, uid(meta), gid(meta), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|source| metadata_error(entry, "owner", source))?;
        }
        if with_mode {
            // fchmodat cannot refuse to follow a final symlink before Linux
            // 6.6, but `base` is the node that mknodat created just above in
            // this directory, and entries are applied one at a time, so no
            // entry of the layer can have swapped it for a symlink.
            rfs::chmodat(dir, base, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|source| metadata_error(entry, "mode", source))?;
        }
        if !meta.xattrs.is_empty() {
            // l*xattr does not follow the last component; the magic link
            // only leads to the parent directory we already hold.
            let path = proc_fd_path(dir.as_fd(), base);
            for (name, value) in &meta.xattrs {
                let result = rfs::lsetxattr(&path, name.as_c_str(), value, XattrFlags::empty());
                self.check_xattr(result, name, entry)?;
            }
        }
        rfs::utimensat(dir, base, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|source| metadata_error(entry, "times", source))
    }

    /// Skips xattrs the filesystem or our privileges do not allow, as moby
    /// does (`pkg/archive/archive.go`, "not all graphdrivers support
    /// xattrs"); any other failure is an error.
    fn check_xattr(
        &mut self,
        result: Result<(), Errno>,
        name: &CString,
        entry: &str,
    ) -> Result<(), LayerError> {
        match result {
            Ok(()) => Ok(()),
            Err(Errno::OPNOTSUPP | Errno::PERM) => {
                self.skipped_xattrs += 1;
                tracing::debug!(entry, xattr = ?name, "xattr not supported here, skipped");
                Ok(())
            }
            Err(source) => Err(LayerError::SetXattr {
                entry: entry.to_string(),
                name: name.to_string_lossy().into_owned(),
                source,
            }),
        }
    }

    /// Sets directory mtimes now that nothing more is created inside them.
    /// A directory since replaced by another entry is skipped.
    fn set_dir_times(&mut self) -> Result<(), LayerError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (path, times) in &dir_times {
            let fd = if path.is_root() {
                Rc::clone(&self.root)
            } else {
                match self.open_dir(path) {
                    Ok(fd) => Rc::new(fd),
                    Err(Errno::NOENT | Errno::NOTDIR) => continue,
                    Err(source) => return Err(resolve_error(&path.to_string(), path, source)),
                }
            };
            rfs::futimens(&*fd, times)
                .map_err(|source| metadata_error(&path.to_string(), "times", source))?;
        }
        Ok(())
    }
}

/// An entry name after [`UnpackOptions::rebase`].
fn rebased(opts: &UnpackOptions, name: Vec<u8>) -> Vec<u8> {
    let Some((old, new)) = &opts.rebase else {
        return name;
    };
    // moby matches the root as an empty prefix of the names that start
    // with the separator.
    let old: &[u8] = if old.as_slice() == b"/" { b"" } else { old };
    if !name.starts_with(old) {
        return name;
    }
    let rest = &name[old.len()..];
    if !old.is_empty() && !rest.is_empty() && !rest.starts_with(b"/") {
        return name;
    }
    let mut out = new.clone();
    out.extend_from_slice(rest);
    out
}

fn resolve_error(entry: &str, parent: &RelPath, source: Errno) -> LayerError {
    LayerError::ResolveParent {
        entry: entry.to_string(),
        parent: parent.to_string(),
        source,
    }
}

fn metadata_error(entry: &str, what: &'static str, source: Errno) -> LayerError {
    LayerError::SetMetadata {
        entry: entry.to_string(),
        what,
        source,
    }
}

fn uid(meta: &Meta) -> Option<Uid> {
    Some(Uid::from_raw(meta.uid))
}

fn gid(meta: &Meta) -> Option<Gid> {
    Some(Gid::from_raw(meta.gid))
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, LayerError> {
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() && !target.contains(&0) => Ok(target.into_owned()),
        Some(target) if target.contains(&0) => Err(LayerError::InvalidLinkTarget {
            entry: name.to_string(),
            target: lossy(&target),
            source: NameError::Nul,
        }),
        _ => Err(LayerError::MissingLinkTarget {
            entry: name.to_string(),
        }),
    }
}

/// A numeric header field of only NULs and spaces is 0 to Go's archive/tar
/// (`parseNumeric`), which wrote and reads most layers; the tar crate refuses
/// it. Any other field is taken as the tar crate parsed it.
fn blank_is_zero(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
        other => other,
    }
}

/// Owner, mode, mtime and xattrs from the header and its PAX records.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, LayerError> {
    let header_error = |field: &'static str| {
        move |source| LayerError::InvalidHeader {
            entry: name.to_string(),
            field,
            source,
        }
    };
    let out_of_range = |field: &'static str| LayerError::InvalidHeader {
        entry: name.to_string(),
        field,
        source: io::Error::new(io::ErrorKind::InvalidData, "value out of range"),
    };
    let header = entry.header();
    let raw = header.as_old();
    let mode =
        blank_is_zero(&raw.mode, header.mode().map(u64::from)).map_err(header_error("mode"))?;
    let mode = u32::try_from(mode & 0o7777).map_err(|_| out_of_range("mode"))?;
    // The tar crate already applied PAX `uid`/`gid` to the header.
    let uid = blank_is_zero(&raw.uid, header.uid()).map_err(header_error("uid"))?;
    let uid = u32::try_from(uid).map_err(|_| out_of_range("uid"))?;
    let gid = blank_is_zero(&raw.gid, header.gid()).map_err(header_error("gid"))?;
    let gid = u32::try_from(gid).map_err(|_| out_of_range("gid"))?;
    let mtime = blank_is_zero(&raw.mtime, header.mtime()).map_err(header_error("mtime"))?;
    let mut mtime = Timespec {
        tv_sec: i64::try_from(mtime).map_err(|_| out_of_range("mtime"))?,
        tv_nsec: 0,
    };

    let mut xattrs = Vec::new();
    if let Some(records) = entry
        .pax_extensions()
        .map_err(header_error("PAX records"))?
    {
        for record in records {
            let record = record.map_err(|e| {
                header_error("PAX records")(io::Error::new(io::ErrorKind::InvalidData, e))
            })?;
            let key = record.key_bytes();
            let value = record.value_bytes();
            let invalid = || LayerError::InvalidPax {
                entry: name.to_string(),
                key: lossy(key),
                value: lossy(value),
            };
            if key == b"mtime" {
                mtime = parse_pax_time(value).ok_or_else(invalid)?;
            } else if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX.as_bytes()) {
                if is_overlay_xattr(xattr) {
                    return Err(LayerError::ForbiddenXattr {
                        entry: name.to_string(),
                        name: lossy(xattr),
                    });
                }
                let xattr = CString::new(xattr).map_err(|_| invalid())?;
                if xattr.is_empty() {
                    return Err(invalid());
                }
                xattrs.push((xattr, value.to_vec()));
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        // atime is not part of a layer's content; use mtime so an unpacked
        // tree does not depend on when it was unpacked.
        times: Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
        xattrs,
    })
}

/// Parses a PAX time, `SECONDS[.FRACTION]`, possibly negative.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    // Nanosecond precision: the first nine digits, padded.
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |d| i64::from(d - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(match (negative, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

/// `/proc/self/fd/N/NAME`: the entry `name` in the directory held by `dir`,
/// for calls that only exist in path form (`lsetxattr`).
pub(super) fn proc_fd_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(std::ffi::OsStr::from_bytes(name));
    path
}

/// The names in a directory, without `.` and `..`.
pub(super) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    let mut stream = rfs::Dir::read_from(dir)?;
    while let Some(entry) = stream.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` and, if it is a directory, everything in it,
/// never following a symlink. A missing `name` is not an error.
fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // unlink(2) of a directory is EISDIR on Linux.
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = rfs::openat(dir, name, flags, Mode::empty())?;
    for child in list_dir(sub.as_fd())? {
        remove_all(sub.as_fd(), child.as_bytes())?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64, nsec: i64) -> Option<(i64, i64)> {
        Some((sec, nsec))
    }

    fn parsed(value: &str) -> Option<(i64, i64)> {
        parse_pax_time(value.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec))
    }

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        assert_eq!(parsed("1700000000"), ts(1_700_000_000, 0));
        assert_eq!(parsed("1700000000.5"), ts(1_700_000_000, 500_000_000));
        assert_eq!(parsed("1.123456789123"), ts(1, 123_456_789));
        assert_eq!(parsed("-1.25"), ts(-2, 750_000_000));
        assert_eq!(parsed("-3"), ts(-3, 0));
        assert_eq!(parsed("12."), ts(12, 0));
        for bad in ["", "x", "1.x", ".5", "1e3", "--1", "99999999999999999999"] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn blank_numeric_fields_are_zero_like_go_reads_them() {
        let refused = || Err(io::Error::other("not a number"));
        assert_eq!(blank_is_zero(&[0; 8], refused()).unwrap(), 0);
        assert_eq!(blank_is_zero(b"       \0", refused()).unwrap(), 0);
        assert!(blank_is_zero(b"12x4567\0", refused()).is_err());
        assert_eq!(blank_is_zero(b"0000017\0", Ok(15)).unwrap(), 15);
    }

    #[test]
    fn limit_reader_trips_past_the_limit() {
        let tripped = Rc::new(Cell::new(false));
        let mut reader = LimitReader {
            inner: &[7u8; 10][..],
            remaining: 6,
            tripped: Rc::clone(&tripped),
        };
        let mut buf = [0; 4];
        assert_eq!(reader.read(&mut buf).unwrap(), 4);
        assert!(reader.read(&mut buf).is_err());
        assert!(tripped.get());
    }

    #[test]
    fn remove_all_deletes_trees_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("file"), b"x").unwrap();
        let doomed = tmp.path().join("doomed");
        std::fs::create_dir_all(doomed.join("a/b")).unwrap();
        std::fs::write(doomed.join("a/b/f"), b"y").unwrap();
        std::os::unix::fs::symlink(&keep, doomed.join("a/link")).unwrap();
        let dir = rfs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        remove_all(dir.as_fd(), b"doomed").unwrap();
        remove_all(dir.as_fd(), b"missing").unwrap();
        assert!(!doomed.exists());
        assert!(keep.join("file").exists());
    }

    #[test]
    fn default_options_are_conservative() {
        let opts = UnpackOptions::default();
        assert!(!opts.allow_devices);
        assert_eq!(opts.whiteouts, Whiteouts::Apply);
    }
}
