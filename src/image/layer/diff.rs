//! Writing a directory out as a layer tar: an overlayfs upper dir as a diff
//! ([`diff`]), a plain tree ([`tar_dir`]), or the changed paths of a plain
//! tree ([`write_changes`], for containers without an upper dir).
//!
//! The walk only reads: directories are opened with `O_NOFOLLOW` relative to
//! their parent's fd, symlinks are read with `readlinkat`, never followed.
//! Names are visited in byte order and only metadata that belongs to the
//! content goes into headers (no atime, ctime or user names), so the same
//! tree always gives the same bytes and the same `diff_id`.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::naive_diff::{Change, ChangeKind};
use super::unpack::{list_dir, proc_fd_path};
use super::{
    LayerError, OVERLAY_OPAQUE_XATTR, PAX_XATTR_PREFIX, RelPath, WHITEOUT_OPAQUE, WHITEOUT_PREFIX,
    is_overlay_xattr,
};
use crate::image::digest::{Digest, HashingWriter};

/// What [`diff`] or [`tar_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// sha256 of the tar stream written: the layer's OCI `diff_id`.
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
    /// Tar entries written (PAX and GNU long-name headers not counted).
    pub entries: u64,
}

/// Writes the overlayfs upper directory `upper` to `out` as an uncompressed
/// OCI layer tar.
///
/// Regular files, directories, symlinks, device nodes and FIFOs are written
/// with numeric owners, modes, mtimes (whole seconds) and xattrs as
/// `SCHILY.xattr.*` PAX records; a second name of an inode becomes a hard
/// link to the first. Overlay whiteouts (0/0 character devices) become
/// `.wh.NAME` and opaque directories (`trusted.overlay.opaque=y`) get a
/// `DIR/.wh..wh..opq` entry right after their own. Overlay-internal xattrs
/// (`trusted.overlay.*`, `user.overlay.*`) and `security.selinux` (a host
/// label, not image content) are left out; sockets are skipped, as Docker
/// does. An upper dir written with `redirect_dir` or `metacopy` on is
/// refused, since it is not a self-contained diff.
pub fn diff(upper: &Path, out: impl Write) -> Result<DiffStats, LayerError> {
    archive(upper, out, true)
}

/// Writes the plain directory `root` to `out` as a layer tar, as [`diff`]
/// does but without interpreting whiteouts: a 0/0 character device is
/// written as a device. Used to import a root filesystem directory.
pub fn tar_dir(root: &Path, out: impl Write) -> Result<DiffStats, LayerError> {
    archive(root, out, false)
}

/// Writes one entry of the directory `parent` — `name` in it, or `parent`
/// itself for `.` — and, for a directory, everything below it, as the tar
/// Docker's `GET /containers/{id}/archive` sends: every entry name starts
/// with `as_name` (the top entry is `as_name` itself, a directory's with a
/// trailing `/`, everything below is `as_name/rel`, or `/rel` when
/// `as_name` is `/`), written into the header as is, so `.` and `/`
/// prefixes survive (moby's `TarWithOptions` with `RebaseNames`). Hard
/// links inside the tree point at names with the same prefix. Otherwise as
/// [`tar_dir`]: nothing is followed, owners are numeric, xattrs are PAX
/// records.
pub fn tar_path(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    as_name: &[u8],
    out: impl Write,
) -> Result<DiffStats, LayerError> {
    let mut archiver = Archiver::new(out, false);
    archiver.prefix = Some(as_name.to_vec());
    let top = RelPath::default();
    let name_c = CString::new(name.as_bytes())
        .map_err(|e| read_error(&top, "name", io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    if name.as_bytes() == b"." {
        // The directory itself: reopen it readable for listing and xattrs.
        let dir = rfs::openat(
            parent,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| read_error(&top, "directory", e))?;
        let st = rfs::fstat(&dir).map_err(|e| read_error(&top, "metadata", e))?;
        let (xattrs, _) = archiver.xattrs(XattrSource::Fd(dir.as_fd()), &top)?;
        archiver.append(
            header(&st, EntryType::Directory, 0),
            &top,
            &xattrs,
            io::empty(),
        )?;
        archiver.walk(dir.as_fd(), &top)?;
    } else {
        let st = rfs::statat(parent, &name_c, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| read_error(&top, "metadata", e))?;
        archiver.entry(parent, &name_c, &top, &st, true)?;
    }
    archiver.finish()
}

/// Write buffer between the tar builder and the output.
const WRITE_BUFFER: usize = 256 * 1024;
/// Linux's `XATTR_LIST_MAX` and `XATTR_SIZE_MAX`.
const XATTR_MAX: usize = 64 * 1024;

fn archive(root: &Path, out: impl Write, overlay: bool) -> Result<DiffStats, LayerError> {
    let root_fd = open_root(root)?;
    let mut archiver = Archiver::new(out, overlay);
    archiver.walk(root_fd.as_fd(), &RelPath::default())?;
    archiver.finish()
}

/// Writes the paths `changes` names, as they are in the plain tree `root`,
/// to `out` as an uncompressed layer tar: an added or modified path is
/// written as [`tar_dir`] would write it (a directory without what is in
/// it: its entries are changes of their own), a deleted one as a whiteout
/// `.wh.NAME` (an empty file with owner 0:0, mode 0 and mtime 0, so the
/// same changes always give the same `diff_id`). This is the layer a commit
/// of a container without an upper directory adds (moby
/// `archive.ExportChanges`).
///
/// Parents are resolved below `root` without following symlinks; a path
/// that is gone by the time it is written is left out, as Docker leaves it
/// out.
pub fn write_changes(
    root: &Path,
    changes: &[Change],
    out: impl Write,
) -> Result<DiffStats, LayerError> {
    let root_fd = open_root(root)?;
    let mut archiver = Archiver::new(out, false);
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    let mut parent_cache: Option<(Vec<u8>, OwnedFd)> = None;
    for change in sorted {
        let Some(path) = change.rel_path() else {
            continue;
        };
        let (parent, base) = path.split_last();
        if change.kind == ChangeKind::Deleted {
            let mut hidden = WHITEOUT_PREFIX.to_vec();
            hidden.extend_from_slice(base);
            let mut whiteout = Header::new_gnu();
            whiteout.set_entry_type(EntryType::Regular);
            whiteout.set_size(0);
            whiteout.set_mode(0);
            whiteout.set_uid(0);
            whiteout.set_gid(0);
            whiteout.set_mtime(0);
            let entry = RelPath(parent.to_vec()).join(&hidden);
            archiver.append(whiteout, &entry, &[], io::empty())?;
            continue;
        }
        let cached = parent.is_empty() || parent_cache.as_ref().is_some_and(|(p, _)| p == parent);
        if !cached {
            match open_beneath(root_fd.as_fd(), parent) {
                Ok(fd) => parent_cache = Some((parent.to_vec(), fd)),
                Err(e) if vanished(e) => {
                    tracing::debug!(path = %path, "changed path gone before it was archived");
                    continue;
                }
                Err(e) => return Err(read_error(&path, "directory", e)),
            }
        }
        let dir = match &parent_cache {
            Some((_, fd)) if !parent.is_empty() => fd.as_fd(),
            _ => root_fd.as_fd(),
        };
        let name =
            CString::new(base).map_err(|e| read_error(&path, "metadata", io::Error::other(e)))?;
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if vanished(e) => {
                tracing::debug!(path = %path, "changed path gone before it was archived");
                continue;
            }
            Err(e) => return Err(read_error(&path, "metadata", e)),
        };
        archiver.entry(dir, &name, &path, &st, false)?;
    }
    archiver.finish()
}

/// A path that stopped being there, or stopped being reachable without a
/// symlink, between listing and archiving.
fn vanished(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV)
}

/// Opens the directory `rel` below `root`, never through a symlink.
fn open_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH
        .union(ResolveFlags::NO_SYMLINKS)
        .union(ResolveFlags::NO_MAGICLINKS);
    loop {
        match rfs::openat2(root, OsStr::from_bytes(rel), flags, Mode::empty(), resolve) {
            // The kernel asks for a retry when a rename raced the lookup.
            Err(Errno::AGAIN) => {}
            other => return other,
        }
    }
}

fn open_root(root: &Path) -> Result<OwnedFd, LayerError> {
    rfs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| LayerError::OpenSource {
        path: root.to_path_buf(),
        source,
    })
}

struct Archiver<W: Write> {
    builder: tar::Builder<BufWriter<HashingWriter<W>>>,
    overlay: bool,
    /// First path seen for each multiply-linked inode.
    links: HashMap<(u64, u64), RelPath>,
    entries: u64,
    list_buf: Vec<u8>,
    value_buf: Vec<u8>,
    /// For [`tar_path`]: the name every entry starts with, written raw.
    prefix: Option<Vec<u8>>,
}

/// Where to read an entry's xattrs from.
enum XattrSource<'a> {
    /// An fd opened on the entry itself.
    Fd(BorrowedFd<'a>),
    /// A symlink or node, named in its parent directory.
    At(BorrowedFd<'a>, &'a CStr),
}

/// Xattrs of one entry, sorted by name.
type Xattrs = Vec<(String, Vec<u8>)>;

impl<W: Write> Archiver<W> {
    fn new(out: W, overlay: bool) -> Self {
        let writer = BufWriter::with_capacity(WRITE_BUFFER, HashingWriter::new(out));
        Archiver {
            builder: tar::Builder::new(writer),
            overlay,
            links: HashMap::new(),
            entries: 0,
            list_buf: vec![0; XATTR_MAX],
            value_buf: vec![0; XATTR_MAX],
            prefix: None,
        }
    }

    /// Writes the trailer and flushes.
    fn finish(self) -> Result<DiffStats, LayerError> {
        let entries = self.entries;
        let finish_error = |source| LayerError::WriteArchive {
            path: String::new(),
            source,
        };
        let writer = self.builder.into_inner().map_err(finish_error)?;
        let hashing = writer
            .into_inner()
            .map_err(|e| finish_error(e.into_error()))?;
        let (diff_id, size, mut out) = hashing.finish();
        out.flush().map_err(finish_error)?;
        Ok(DiffStats {
            diff_id,
            size,
            entries,
        })
    }

    fn walk(&mut self, dir: BorrowedFd<'_>, rel: &RelPath) -> Result<(), LayerError> {
        let mut names = list_dir(dir).map_err(|e| read_error(rel, "directory", e))?;
        names.sort();
        for name in names {
            let path = rel.join(name.as_bytes());
            let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| read_error(&path, "metadata", e))?;
            self.entry(dir, &name, &path, &st, true)?;
        }
        Ok(())
    }

    /// Writes the entry `name` of `dir` (at `path`, stat `st`); with
    /// `recurse`, a directory's content after it.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &RelPath,
        st: &Stat,
        recurse: bool,
    ) -> Result<(), LayerError> {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let sub = rfs::openat(dir, name, flags, Mode::empty())
                    .map_err(|e| read_error(path, "directory", e))?;
                let (xattrs, opaque) = self.xattrs(XattrSource::Fd(sub.as_fd()), path)?;
                let header = header(st, EntryType::Directory, 0);
                self.append(header, path, &xattrs, io::empty())?;
                if opaque {
                    // moby's overlay converter writes the marker as an
                    // empty file carrying the directory's owner and mode.
                    let mut marker = header_of(st, EntryType::Regular, 0);
                    marker.set_mode(st.st_mode & 0o777);
                    self.append(marker, &path.join(WHITEOUT_OPAQUE), &[], io::empty())?;
                }
                if recurse {
                    self.walk(sub.as_fd(), path)?;
                }
            }
            FileType::Socket | FileType::Unknown => {
                tracing::debug!(path = %path, "socket or unknown file type not archived");
            }
            // Before the hard link check: overlayfs links whiteouts to one
            // shared inode, and each stays a whiteout of its own name.
            FileType::CharacterDevice if self.overlay && st.st_rdev == 0 => {
                // An overlay whiteout: `.wh.NAME`, an empty file, as
                // moby's overlay converter writes it.
                let mut whiteout = header_of(st, EntryType::Regular, 0);
                whiteout.set_mode(0o600);
                let mut hidden = WHITEOUT_PREFIX.to_vec();
                hidden.extend_from_slice(name.to_bytes());
                let (parent, _) = path.split_last();
                let entry = RelPath(parent.to_vec()).join(&hidden);
                self.append(whiteout, &entry, &[], io::empty())?;
            }
            _ if self.append_if_link(st, path)? => {}
            FileType::RegularFile => {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd: OwnedFd = rfs::openat(dir, name, flags, Mode::empty())
                    .map_err(|e| read_error(path, "content", e))?;
                // The size from the open file, in case it changed since
                // the stat: header and content must agree.
                let st = rfs::fstat(&fd).map_err(|e| read_error(path, "metadata", e))?;
                let (xattrs, _) = self.xattrs(XattrSource::Fd(fd.as_fd()), path)?;
                let size = u64::try_from(st.st_size).unwrap_or(0);
                let content = ExactReader {
                    inner: File::from(fd),
                    remaining: size,
                };
                self.append(
                    header(&st, EntryType::Regular, size),
                    path,
                    &xattrs,
                    content,
                )?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| read_error(path, "link target", e))?;
                let (xattrs, _) = self.xattrs(XattrSource::At(dir, name), path)?;
                let header = header(st, EntryType::Symlink, 0);
                self.write_pax(&xattrs, path)?;
                self.put(header, path, Some(target.as_bytes()), io::empty())
                    .map_err(|source| write_error(path, source))?;
                self.entries += 1;
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo) => {
                let (xattrs, _) = self.xattrs(XattrSource::At(dir, name), path)?;
                let entry_type = match kind {
                    FileType::CharacterDevice => EntryType::Char,
                    FileType::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut header = header(st, entry_type, 0);
                if entry_type != EntryType::Fifo {
                    let rdev = st.st_rdev;
                    header
                        .set_device_major(rfs::major(rdev))
                        .and_then(|()| header.set_device_minor(rfs::minor(rdev)))
                        .map_err(|source| write_error(path, source))?;
                }
                self.append(header, path, &xattrs, io::empty())?;
            }
        }
        Ok(())
    }

    /// Writes a hard link entry if this inode was already archived under
    /// another name; otherwise remembers this name for later ones.
    fn append_if_link(&mut self, st: &Stat, path: &RelPath) -> Result<bool, LayerError> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let key = inode_key(st);
        let Some(first) = self.links.get(&key) else {
            self.links.insert(key, path.clone());
            return Ok(false);
        };
        let header = header(st, EntryType::Link, 0);
        let target = self.name_of(first, false);
        self.put(header, path, Some(&target), io::empty())
            .map_err(|source| write_error(path, source))?;
        self.entries += 1;
        Ok(true)
    }

    /// The name `path` gets in the archive: itself, or with [`tar_path`]'s
    /// prefix (and a trailing `/` for a directory).
    fn name_of(&self, path: &RelPath, dir: bool) -> Vec<u8> {
        let Some(prefix) = &self.prefix else {
            return path.as_bytes().to_vec();
        };
        let mut name = prefix.clone();
        if !path.is_root() {
            if !name.ends_with(b"/") {
                name.push(b'/');
            }
            name.extend_from_slice(path.as_bytes());
        }
        if dir && !name.ends_with(b"/") {
            name.push(b'/');
        }
        name
    }

    /// Appends an entry named after `path`, with `link` as the link target
    /// of a symlink or hard link. Without a prefix tar-rs checks and writes
    /// the names; with one they are written as they are (a `./` or `/`
    /// start is part of Docker's format), long ones through GNU long-name
    /// entries.
    fn put(
        &mut self,
        mut header: Header,
        path: &RelPath,
        link: Option<&[u8]>,
        content: impl Read,
    ) -> io::Result<()> {
        if self.prefix.is_none() {
            return match link {
                Some(target) => self.builder.append_link(
                    &mut header,
                    path.as_os_str(),
                    OsStr::from_bytes(target),
                ),
                None => self
                    .builder
                    .append_data(&mut header, path.as_os_str(), content),
            };
        }
        let is_dir = header.entry_type() == EntryType::Directory;
        let name = self.name_of(path, is_dir);
        let fields = header
            .as_gnu_mut()
            .ok_or_else(|| io::Error::other("not a GNU header"))?;
        if name.len() > fields.name.len() {
            self.long_name(EntryType::GNULongName, &name)?;
        }
        let fields = header
            .as_gnu_mut()
            .ok_or_else(|| io::Error::other("not a GNU header"))?;
        let n = name.len().min(fields.name.len());
        fields.name = [0; 100];
        fields.name[..n].copy_from_slice(&name[..n]);
        if let Some(target) = link {
            if target.len() > fields.linkname.len() {
                self.long_name(EntryType::GNULongLink, target)?;
            }
            let fields = header
                .as_gnu_mut()
                .ok_or_else(|| io::Error::other("not a GNU header"))?;
            let n = target.len().min(fields.linkname.len());
            fields.linkname = [0; 100];
            fields.linkname[..n].copy_from_slice(&target[..n]);
        }
        header.set_cksum();
        self.builder.append(&header, content)
    }

    /// A GNU `././@LongLink` entry carrying a name that does not fit a
    /// header, before the entry it belongs to.
    fn long_name(&mut self, kind: EntryType, name: &[u8]) -> io::Result<()> {
        let mut header = Header::new_gnu();
        let fields = header
            .as_gnu_mut()
            .ok_or_else(|| io::Error::other("not a GNU header"))?;
        fields.name[..13].copy_from_slice(b"././@LongLink");
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(kind);
        let mut data = name.to_vec();
        data.push(0);
        header.set_size(u64::try_from(data.len()).unwrap_or(u64::MAX));
        header.set_cksum();
        self.builder.append(&header, data.as_slice())
    }

    fn append(
        &mut self,
        header: Header,
        path: &RelPath,
        xattrs: &[(String, Vec<u8>)],
        content: impl Read,
    ) -> Result<(), LayerError> {
        self.write_pax(xattrs, path)?;
        self.put(header, path, None, content)
            .map_err(|source| write_error(path, source))?;
        self.entries += 1;
        Ok(())
    }

    fn write_pax(
        &mut self,
        xattrs: &[(String, Vec<u8>)],
        path: &RelPath,
    ) -> Result<(), LayerError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = xattrs
            .iter()
            .map(|(name, _)| format!("{PAX_XATTR_PREFIX}{name}"))
            .collect();
        let records = keys
            .iter()
            .zip(xattrs)
            .map(|(key, (_, value))| (key.as_str(), value.as_slice()));
        self.builder
            .append_pax_extensions(records)
            .map_err(|source| write_error(path, source))
    }

    /// The xattrs to archive, sorted, and whether the directory is an
    /// overlay opaque directory.
    fn xattrs(
        &mut self,
        source: XattrSource<'_>,
        path: &RelPath,
    ) -> Result<(Xattrs, bool), LayerError> {
        let proc_path;
        let listed = match source {
            XattrSource::Fd(fd) => rfs::flistxattr(fd, &mut self.list_buf[..]),
            XattrSource::At(dir, name) => {
                proc_path = proc_fd_path(dir, name.to_bytes());
                rfs::llistxattr(&proc_path, &mut self.list_buf[..])
            }
        };
        let len = match listed {
            Ok(len) => len,
            // A filesystem without xattrs has none to archive.
            Err(Errno::OPNOTSUPP) => 0,
            Err(e) => return Err(read_error(path, "xattrs", e)),
        };
        let names: Vec<CString> = self.list_buf[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .filter_map(|n| CString::new(n).ok())
            .collect();
        let mut xattrs = Vec::new();
        let mut opaque = false;
        for name in names {
            let got = match &source {
                XattrSource::Fd(fd) => rfs::fgetxattr(fd, &name, &mut self.value_buf[..]),
                XattrSource::At(dir, file) => rfs::lgetxattr(
                    proc_fd_path(*dir, file.to_bytes()),
                    &name,
                    &mut self.value_buf[..],
                ),
            };
            let len = match got {
                Ok(len) => len,
                // Removed since the listing.
                Err(Errno::NODATA) => continue,
                Err(e) => return Err(read_error(path, "xattrs", e)),
            };
            let value = &self.value_buf[..len];
            let bytes = name.to_bytes();
            if self.overlay && bytes == OVERLAY_OPAQUE_XATTR.as_bytes() {
                opaque = value == b"y";
                continue;
            }
            if self.overlay
                && (bytes == b"trusted.overlay.redirect" || bytes == b"trusted.overlay.metacopy")
            {
                return Err(LayerError::UnsupportedOverlayFeature {
                    path: path.to_string(),
                    xattr: name.to_string_lossy().into_owned(),
                });
            }
            if is_overlay_xattr(bytes) || bytes == b"security.selinux" {
                continue;
            }
            let name = name.into_string().map_err(|e| {
                read_error(
                    path,
                    "xattrs",
                    io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()),
                )
            })?;
            xattrs.push((name, value.to_vec()));
        }
        xattrs.sort();
        Ok((xattrs, opaque))
    }
}

/// Hands out exactly `remaining` bytes, failing if the file shrank while
/// being archived: a short entry would corrupt every entry after it.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= u64::try_from(n).unwrap_or(u64::MAX).min(self.remaining);
        Ok(n)
    }
}

/// A header with the content metadata of `st`.
fn header(st: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = header_of(st, kind, size);
    header.set_mode(st.st_mode & 0o7777);
    header
}

/// A header with owner and mtime of `st` and mode 0.
fn header_of(st: &Stat, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0);
    header.set_uid(st.st_uid.into());
    header.set_gid(st.st_gid.into());
    // Whole seconds, as moby does (`FileInfoHeader` truncates); a tar
    // header cannot hold times before 1970.
    header.set_mtime(mtime_secs(st));
    header
}

// `Stat`'s field types differ between architectures; on some these
// conversions are the identity.
#[allow(clippy::useless_conversion)]
fn mtime_secs(st: &Stat) -> u64 {
    u64::try_from(i64::from(st.st_mtime)).unwrap_or(0)
}

#[allow(clippy::useless_conversion)]
fn inode_key(st: &Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

fn read_error(path: &RelPath, what: &'static str, source: impl Into<io::Error>) -> LayerError {
    LayerError::ReadSource {
        path: path.to_string(),
        what,
        source: source.into(),
    }
}

fn write_error(path: &RelPath, source: io::Error) -> LayerError {
    LayerError::WriteArchive {
        path: path.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reader_fails_on_a_short_file() {
        let mut short = ExactReader {
            inner: &b"abc"[..],
            remaining: 5,
        };
        let mut out = Vec::new();
        assert_eq!(
            short.read_to_end(&mut out).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut long = ExactReader {
            inner: &b"abcdef"[..],
            remaining: 4,
        };
        out.clear();
        long.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
    }

    #[test]
    fn tar_path_names_entries_after_the_prefix_as_written() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "n".repeat(150);
        std::fs::create_dir_all(tmp.path().join("d/sub")).unwrap();
        std::fs::write(tmp.path().join("d/sub").join(&long), b"x").unwrap();
        std::fs::hard_link(tmp.path().join("d/sub").join(&long), tmp.path().join("d/z")).unwrap();
        std::os::unix::fs::symlink("/far/away", tmp.path().join("d/l")).unwrap();
        let parent =
            rfs::open(tmp.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let entries = |name: &str, prefix: &[u8]| {
            let mut out = Vec::new();
            tar_path(parent.as_fd(), OsStr::new(name), prefix, &mut out).unwrap();
            let mut archive = tar::Archive::new(&out[..]);
            archive
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let link = e
                        .link_name_bytes()
                        .map(|l| String::from_utf8(l.to_vec()).unwrap());
                    (String::from_utf8(e.path_bytes().to_vec()).unwrap(), link)
                })
                .collect::<Vec<_>>()
        };
        let got = entries("d", b".");
        let long_path = format!("./sub/{long}");
        assert_eq!(
            got,
            [
                ("./".to_string(), None),
                ("./l".to_string(), Some("/far/away".to_string())),
                ("./sub/".to_string(), None),
                (long_path.clone(), None),
                ("./z".to_string(), Some(long_path)),
            ]
        );
        let got = entries("d", b"renamed");
        assert_eq!(got[0].0, "renamed/");
        assert_eq!(got[1].0, "renamed/l");
        // One file, named as asked.
        let got = entries("d/l", b"link");
        assert_eq!(got, [("link".to_string(), Some("/far/away".to_string()))]);
    }

    #[test]
    fn plain_trees_archive_deterministically() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("b/c")).unwrap();
        std::fs::write(tmp.path().join("b/c/f"), b"hello").unwrap();
        std::fs::write(tmp.path().join("a"), b"first").unwrap();
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("z")).unwrap();
        std::os::unix::fs::symlink("/nowhere", tmp.path().join("l")).unwrap();
        let mut first = Vec::new();
        let stats = tar_dir(tmp.path(), &mut first).unwrap();
        let mut second = Vec::new();
        tar_dir(tmp.path(), &mut second).unwrap();
        assert_eq!(first, second);
        assert_eq!(stats.diff_id, Digest::of(&first));
        assert_eq!(stats.size, u64::try_from(first.len()).unwrap());

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(&first[..]);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let kind = entry.header().entry_type();
            names.push((
                String::from_utf8(entry.path_bytes().to_vec()).unwrap(),
                kind,
            ));
        }
        assert_eq!(
            names,
            [
                ("a".to_string(), EntryType::Regular),
                ("b".to_string(), EntryType::Directory),
                ("b/c".to_string(), EntryType::Directory),
                ("b/c/f".to_string(), EntryType::Regular),
                ("l".to_string(), EntryType::Symlink),
                ("z".to_string(), EntryType::Link),
            ]
        );
        assert_eq!(stats.entries, 6);
    }
}
