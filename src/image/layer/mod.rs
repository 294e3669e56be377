//! Image layers on disk: applying a layer tar to a directory ([`unpack`]),
//! writing a directory back out as a layer tar ([`diff`], [`tar_dir`]),
//! copying a stack of unpacked layers into one plain tree ([`flatten`]) and
//! telling what changed in such a copy ([`tree_changes`], [`write_changes`]).
//!
//! This module owns the translation between the OCI layer format (a tar
//! stream, maybe gzip or zstd compressed, with `.wh.` whiteout entries) and
//! files on disk. It must never create, change or delete anything outside the
//! destination directory it was given, whatever a layer says: every path is
//! resolved with `openat2(RESOLVE_IN_ROOT)` and every final component is
//! touched with `*at` calls that do not follow symlinks (see [`unpack`]).

mod diff;
mod flatten;
mod naive_diff;
mod unpack;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Chain, Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use thiserror::Error;

use crate::image::digest::{Digest, HashingReader};

pub use diff::{DiffStats, diff, tar_dir, tar_path, write_changes};
pub use flatten::{FlattenStats, flatten};
pub use naive_diff::{Change, ChangeKind, changes_size, tree_changes};
pub use unpack::{UnpackOptions, UnpackStats, Whiteouts, unpack, unpack_at};

/// Prefix of a whiteout entry: `.wh.NAME` hides `NAME` of lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`…), which are not content.
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Marks its directory opaque: lower layers' content of it is hidden.
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr that marks a directory opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX record prefix for extended attributes, as GNU tar and Go write them.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`application/vnd.oci.image.layer.v1.tar+gzip`).
    Gzip,
    /// zstd (`application/vnd.oci.image.layer.v1.tar+zstd`).
    Zstd,
}

/// Tells the compression of a blob from its first bytes (at least four are
/// needed to recognise zstd); anything unrecognised is taken as plain tar.
pub fn sniff(prefix: &[u8]) -> Compression {
    match prefix {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The bytes already read to sniff, followed by the rest of the stream.
type Sniffed<R> = BufReader<Chain<Cursor<Vec<u8>>, R>>;

/// A reader that decompresses whatever it is given: gzip (including
/// multi-member streams such as `pigz` writes), zstd, or plain bytes, told
/// apart by [`sniff`].
pub struct Decompressor<R: Read> {
    compression: Compression,
    inner: DecompressorInner<R>,
}

// One decompressor lives per layer stream, so the size of the gzip state
// inline costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum DecompressorInner<R: Read> {
    Plain(Sniffed<R>),
    Gzip(flate2::bufread::MultiGzDecoder<Sniffed<R>>),
    Zstd(zstd::stream::read::Decoder<'static, Sniffed<R>>),
}

/// Read buffer in front of the decompressor: big reads mean few syscalls
/// when the source is a file or a pipe.
const READ_BUFFER: usize = 256 * 1024;

impl<R: Read> Decompressor<R> {
    /// Reads the first bytes of `reader` to sniff its compression and wraps
    /// it in the matching decoder.
    pub fn new(mut reader: R) -> io::Result<Self> {
        let mut prefix = Vec::with_capacity(4);
        (&mut reader).take(4).read_to_end(&mut prefix)?;
        let compression = sniff(&prefix);
        let sniffed = BufReader::with_capacity(READ_BUFFER, Cursor::new(prefix).chain(reader));
        let inner = match compression {
            Compression::None => DecompressorInner::Plain(sniffed),
            Compression::Gzip => {
                DecompressorInner::Gzip(flate2::bufread::MultiGzDecoder::new(sniffed))
            }
            Compression::Zstd => {
                DecompressorInner::Zstd(zstd::stream::read::Decoder::with_buffer(sniffed)?)
            }
        };
        Ok(Self { compression, inner })
    }

    /// The compression that was detected.
    pub fn compression(&self) -> Compression {
        self.compression
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            DecompressorInner::Plain(r) => r.read(buf),
            DecompressorInner::Gzip(r) => r.read(buf),
            DecompressorInner::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// Wraps `reader` in a [`Decompressor`] for whatever compression it has.
pub fn decompress<R: Read>(reader: R) -> io::Result<Decompressor<R>> {
    Decompressor::new(reader)
}

/// What [`measure`] found out about a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// sha256 of the uncompressed tar stream: the layer's `diff_id`.
    pub diff_id: Digest,
    /// Uncompressed bytes, including the tar trailer and padding.
    pub size: u64,
    /// Bytes of content, counted as [`UnpackStats::content_size`] counts them.
    pub content_size: u64,
}

/// Reads a layer (plain, gzip or zstd) through without unpacking it: its diff
/// id, and its sizes as [`unpack`] would report them.
pub fn measure(reader: impl Read) -> Result<Measured, LayerError> {
    let stream =
        HashingReader::new(Decompressor::new(reader).map_err(LayerError::StartDecompress)?);
    let mut archive = tar::Archive::new(stream);
    let mut content_size: u64 = 0;
    let mut last = String::new();
    let read_error = |after: &str, source| LayerError::ReadStream {
        after: after.to_string(),
        source,
    };
    for entry in archive.entries().map_err(|e| read_error(&last, e))? {
        let entry = entry.map_err(|e| read_error(&last, e))?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        content_size = content_size.saturating_add(entry.size());
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    }
    // As in `unpack`: the diff id covers the stream to its end, padding included.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| read_error(&last, e))?;
    let (diff_id, size) = rest.finish();
    Ok(Measured {
        diff_id,
        size,
        content_size,
    })
}

/// The compression of the blob stored at `path`, from its first bytes.
pub fn sniff_file(path: &Path) -> Result<Compression, LayerError> {
    let sniff_error = |source| LayerError::SniffFile {
        path: path.to_path_buf(),
        source,
    };
    let mut prefix = Vec::with_capacity(4);
    File::open(path)
        .and_then(|file| file.take(4).read_to_end(&mut prefix))
        .map_err(sniff_error)?;
    Ok(sniff(&prefix))
}

/// Why an entry name or hard link target is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name contains a NUL byte, which no file name can hold.
    #[error("name contains a NUL byte")]
    Nul,
    /// A `..` component climbs above the layer root.
    #[error("name climbs out of the layer root with `..`")]
    Escapes,
    /// The name is the layer root itself, where a non-directory cannot go.
    #[error("name is the layer root")]
    Root,
    /// A whiteout names no file (`.wh.`, `.wh..`, `.wh...`).
    #[error("whiteout names no file")]
    EmptyWhiteout,
}

/// Everything that can go wrong applying or writing a layer.
#[derive(Debug, Error)]
pub enum LayerError {
    /// The destination directory could not be opened.
    #[error("open layer destination {path}")]
    OpenDestination {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Reading the first bytes of a stored blob failed.
    #[error("read compression magic of {path}")]
    SniffFile {
        /// The blob file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sniffing or starting the decompressor failed.
    #[error("start decompressing layer")]
    StartDecompress(#[source] io::Error),
    /// Reading the (decompressed) layer stream failed, e.g. corrupt gzip or
    /// a malformed tar header.
    #[error("read layer stream after entry {after:?}")]
    ReadStream {
        /// The last entry read successfully (empty at the start).
        after: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry's data ends before the size its header declares.
    #[error("entry {entry:?} is truncated: header declares {declared} bytes, stream has {read}")]
    Truncated {
        /// The entry.
        entry: String,
        /// The size from the header.
        declared: u64,
        /// The bytes actually present.
        read: u64,
    },
    /// The uncompressed layer is bigger than [`UnpackOptions::max_total_size`].
    #[error("layer exceeds the size limit of {limit} bytes")]
    LayerTooLarge {
        /// The limit.
        limit: u64,
    },
    /// An entry is bigger than [`UnpackOptions::max_entry_size`].
    #[error("entry {entry:?} declares {size} bytes, over the limit of {limit}")]
    EntryTooLarge {
        /// The entry.
        entry: String,
        /// The declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The layer has more entries than [`UnpackOptions::max_entries`].
    #[error("layer has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// An entry's name cannot be placed inside the root.
    #[error("refuse entry {entry:?}")]
    InvalidName {
        /// The entry name as found in the tar.
        entry: String,
        /// Why it is refused.
        #[source]
        source: NameError,
    },
    /// A hard link's target cannot be placed inside the root.
    #[error("refuse link {entry:?} to {target:?}")]
    InvalidLinkTarget {
        /// The link.
        entry: String,
        /// Its target as found in the tar.
        target: String,
        /// Why it is refused.
        #[source]
        source: NameError,
    },
    /// A symlink or hard link entry has no target.
    #[error("link entry {entry:?} has no target")]
    MissingLinkTarget {
        /// The entry.
        entry: String,
    },
    /// A header field cannot be parsed or does not fit.
    #[error("entry {entry:?} has an invalid {field}")]
    InvalidHeader {
        /// The entry.
        entry: String,
        /// The field (`mode`, `uid`, `mtime`, …).
        field: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tar entry type that layers do not use (multi-volume, …).
    #[error("entry {entry:?} has unsupported type {kind:?}")]
    UnsupportedEntryType {
        /// The entry.
        entry: String,
        /// The raw type flag.
        kind: char,
    },
    /// A device node while [`UnpackOptions::allow_devices`] is off.
    #[error("entry {entry:?} is a device node and devices are not allowed")]
    DeviceNotAllowed {
        /// The entry.
        entry: String,
    },
    /// The layer tries to set an overlayfs-internal xattr, which would forge
    /// whiteouts, opaque directories or redirects.
    #[error("entry {entry:?} carries forbidden xattr {name:?}")]
    ForbiddenXattr {
        /// The entry.
        entry: String,
        /// The xattr name.
        name: String,
    },
    /// A PAX record has a value that cannot be parsed.
    #[error("entry {entry:?} has invalid PAX record {key}={value:?}")]
    InvalidPax {
        /// The entry.
        entry: String,
        /// The record key.
        key: String,
        /// The record value.
        value: String,
    },
    /// Opening or creating a parent directory of an entry failed.
    #[error("resolve parent directory {parent:?} of entry {entry:?}")]
    ResolveParent {
        /// The entry.
        entry: String,
        /// The parent, relative to the root.
        parent: String,
        /// The cause (`ENOTDIR` when a parent is a file or a dangling link).
        #[source]
        source: Errno,
    },
    /// Removing what an entry replaces, or what a whiteout deletes, failed.
    #[error("remove {path:?} for entry {entry:?}")]
    Remove {
        /// The entry.
        entry: String,
        /// What was being removed, relative to the root.
        path: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Creating a file, directory, link or node failed.
    #[error("create {kind} {entry:?}")]
    Create {
        /// The entry.
        entry: String,
        /// What was being created.
        kind: &'static str,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// An entry would replace a directory with a non-directory or the other
    /// way round, which [`UnpackOptions::no_overwrite_dir_non_dir`] refuses.
    #[error("cannot overwrite {existing} {entry:?} with {with}")]
    WouldReplace {
        /// The entry.
        entry: String,
        /// What is there.
        existing: &'static str,
        /// What the entry is.
        with: &'static str,
    },
    /// Creating a hard link failed (e.g. its target does not exist).
    #[error("link {entry:?} to {target:?}")]
    HardLink {
        /// The link.
        entry: String,
        /// The normalized target.
        target: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Writing a regular file's content failed.
    #[error("write content of {entry:?}")]
    WriteFile {
        /// The entry.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting owner, mode or times failed.
    #[error("set {what} of {entry:?}")]
    SetMetadata {
        /// The entry.
        entry: String,
        /// `owner`, `mode` or `times`.
        what: &'static str,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Setting an extended attribute failed.
    #[error("set xattr {name:?} on {entry:?}")]
    SetXattr {
        /// The entry.
        entry: String,
        /// The xattr.
        name: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Creating an overlay whiteout (a 0/0 character device) failed; this
    /// needs `CAP_MKNOD`.
    #[error("create overlay whiteout {entry:?} (needs CAP_MKNOD)")]
    OverlayWhiteout {
        /// The whiteout entry.
        entry: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Marking a directory opaque (`trusted.overlay.opaque=y`) failed; this
    /// needs `CAP_SYS_ADMIN`.
    #[error("mark directory opaque for {entry:?} (needs CAP_SYS_ADMIN)")]
    OverlayOpaque {
        /// The opaque marker entry.
        entry: String,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Opening the directory to archive failed.
    #[error("open directory to archive {path}")]
    OpenSource {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Errno,
    },
    /// Reading a file, directory, link target or xattr to archive failed.
    #[error("read {what} of {path:?}")]
    ReadSource {
        /// The path, relative to the archived root.
        path: String,
        /// `directory`, `metadata`, `link target`, `xattrs`, `content`.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory uses an overlayfs feature whose upper dir is not a
    /// self-contained diff (redirect_dir, metacopy).
    #[error(
        "{path:?} carries {xattr}: overlay upper dirs with redirect_dir or metacopy cannot be diffed"
    )]
    UnsupportedOverlayFeature {
        /// The path, relative to the upper dir.
        path: String,
        /// The xattr found.
        xattr: String,
    },
    /// Writing the tar stream failed.
    #[error("write tar entry {path:?}")]
    WriteArchive {
        /// The entry being written (empty for the trailer).
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A name inside the layer root after [`normalize`]: `/`-separated
/// components, none empty, `.` or `..`; empty for the root itself.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
struct RelPath(Vec<u8>);

impl RelPath {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory and the last component (`("", "")` for the root).
    fn split_last(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0),
        }
    }

    /// Components, for creating missing parents one by one.
    fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    fn join(&self, name: &[u8]) -> RelPath {
        let mut joined = Vec::with_capacity(self.0.len() + 1 + name.len());
        joined.extend_from_slice(&self.0);
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(name);
        RelPath(joined)
    }

    fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// Maps a tar entry name onto the layer root.
///
/// A leading `/` is dropped, so `/etc/x` is `etc/x`, as Docker and GNU tar do;
/// `.` and empty components disappear and `..` removes the previous
/// component. A `..` that would climb above the root is refused rather than
/// clamped, as Docker refuses it (`breakoutError` in moby
/// `pkg/archive/diff.go`): such a name only appears in hostile or broken
/// layers. Empty names and names with NUL are refused.
fn normalize(raw: &[u8]) -> Result<RelPath, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.contains(&0) {
        return Err(NameError::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(NameError::Escapes);
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(RelPath(parts.join(&b'/')))
}

/// Lossy text of raw bytes, for error messages.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether an xattr is overlayfs-internal: in a layer it would forge
/// whiteouts, opaque directories, redirects or metacopy files, so it is
/// neither accepted from a tar nor written into one.
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, NameError> {
        normalize(raw.as_bytes()).map(|p| p.to_string())
    }

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
        assert_eq!(sniff(&[0x28, 0xb5]), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }

    #[test]
    fn decompressor_reads_all_three_encodings_alike() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for (blob, kind) in [
            (data.clone(), Compression::None),
            (gz, Compression::Gzip),
            (zst, Compression::Zstd),
        ] {
            let mut reader = Decompressor::new(&blob[..]).unwrap();
            assert_eq!(reader.compression(), kind);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{kind:?}");
        }
    }

    #[test]
    fn decompressor_keeps_streams_shorter_than_the_sniff() {
        for blob in [&b""[..], b"a", b"abc"] {
            let mut reader = Decompressor::new(blob).unwrap();
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert_eq!(out, blob);
        }
    }

    #[test]
    fn sniff_file_reads_only_the_magic() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blob");
        std::fs::write(&path, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap();
        assert_eq!(sniff_file(&path).unwrap(), Compression::Zstd);
        assert!(matches!(
            sniff_file(&tmp.path().join("missing")),
            Err(LayerError::SniffFile { .. })
        ));
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let mut blob = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut gz, part).unwrap();
            blob.extend(gz.finish().unwrap());
        }
        let mut out = String::new();
        Decompressor::new(&blob[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second");
    }

    #[test]
    fn names_are_mapped_into_the_root() {
        assert_eq!(norm("etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(norm("./usr//bin/./ls").unwrap(), "usr/bin/ls");
        assert_eq!(norm("a/b/../c").unwrap(), "a/c");
        assert_eq!(norm("dir/").unwrap(), "dir");
        assert_eq!(norm("./").unwrap(), "");
        assert_eq!(norm("/").unwrap(), "");
        assert_eq!(norm("a/..").unwrap(), "");
    }

    #[test]
    fn names_escaping_the_root_or_malformed_are_refused() {
        assert_eq!(norm("../escape"), Err(NameError::Escapes));
        assert_eq!(norm("a/../../b"), Err(NameError::Escapes));
        assert_eq!(norm("/../etc"), Err(NameError::Escapes));
        assert_eq!(norm(""), Err(NameError::Empty));
        assert_eq!(norm("a\0b"), Err(NameError::Nul));
    }

    #[test]
    fn rel_paths_split_and_join() {
        let p = normalize(b"a/b/c").unwrap();
        assert_eq!(p.split_last(), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(p.components().count(), 3);
        let top = normalize(b"c").unwrap();
        assert_eq!(top.split_last(), (&b""[..], &b"c"[..]));
        assert_eq!(RelPath::default().join(b"x").as_bytes(), b"x");
        assert_eq!(top.join(b"x").as_bytes(), b"c/x");
        assert!(RelPath::default().is_root());
        assert_eq!(p.as_os_str(), "a/b/c");
    }

    #[test]
    fn overlay_xattrs_are_recognised() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"security.capability"));
        assert!(!is_overlay_xattr(b"trusted.overlayish"));
    }
}
