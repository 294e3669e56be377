//! What changed in a plain copy of an image (a `vfs` container's root)
//! against the image itself, found by comparing the two trees the way
//! Docker's naive diff driver does (moby `pkg/archive/changes.go`,
//! `ChangesDirs`), since there is no upper directory that holds only the
//! changes.
//!
//! The image side is the merged view of its overlay-form layers
//! ([`MergedDir`]), so it is never copied or written. Both trees are walked
//! with fds: directories opened relative to their parent with `O_NOFOLLOW`,
//! metadata read with `AT_SYMLINK_NOFOLLOW`; nothing is followed.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use serde::{Serialize, Serializer};

use super::flatten::{Found, MergedDir, XattrBuffers, XattrTarget, inode_key, read_error};
use super::unpack::list_dir;
use super::{LayerError, RelPath};

/// What happened to a path, in Docker's terms (`docker diff` prints the
/// letters, the API the numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Changed (`C`, 0): content or metadata differ, or something changed
    /// inside the directory.
    Modified,
    /// Added (`A`, 1).
    Added,
    /// Deleted (`D`, 2).
    Deleted,
}

impl ChangeKind {
    /// The number Docker's API uses (`Kind` of `GET /containers/{id}/changes`).
    pub fn code(self) -> u8 {
        match self {
            ChangeKind::Modified => 0,
            ChangeKind::Added => 1,
            ChangeKind::Deleted => 2,
        }
    }

    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
}

impl Serialize for ChangeKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

/// One changed path, shaped like an entry of Docker's
/// `GET /containers/{id}/changes`: `{"Path": "/etc/x", "Kind": 0}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Change {
    /// The path, absolute inside the container (`/etc/passwd`).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    /// `docker diff`'s line: `C /etc`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}

fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

impl Change {
    fn new(path: &RelPath, kind: ChangeKind) -> Change {
        let mut bytes = Vec::with_capacity(path.as_bytes().len() + 1);
        bytes.push(b'/');
        bytes.extend_from_slice(path.as_bytes());
        Change {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
            kind,
        }
    }

    /// The path relative to the root, `None` for the root itself or a path
    /// that cannot name anything inside it.
    pub(super) fn rel_path(&self) -> Option<RelPath> {
        super::normalize(self.path.as_os_str().as_bytes())
            .ok()
            .filter(|p| !p.is_root())
    }
}

/// The changes that turn the image made of `base_layers` (overlay-form
/// layer directories, base first) into the plain tree `container_root`,
/// sorted by path (a directory before what is in it).
///
/// As in Docker's `ChangesDirs`: a path only in the container is added,
/// with everything below it; one only in the image is deleted (what was
/// below it is not listed); one in both is modified when its type and mode,
/// owner, group or device number differ, or (not for directories) its size
/// or mtime, or its `security.capability`. Mtimes compare to the
/// nanosecond unless one side has none (a time from a tar header), as
/// Docker's `sameFsTimeSpec` does; contents are not read. A directory with
/// changes inside is listed as modified itself, so its metadata travels in
/// a layer made of the changes. The root itself is never listed.
pub fn tree_changes(
    base_layers: &[PathBuf],
    container_root: &Path,
) -> Result<Vec<Change>, LayerError> {
    let image = MergedDir::open(base_layers)?;
    let root = rfs::open(
        container_root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| LayerError::OpenSource {
        path: container_root.to_path_buf(),
        source,
    })?;
    let mut walker = Walker {
        changes: Vec::new(),
        xattrs: XattrBuffers::new(),
    };
    walker.compare(root.as_fd(), Some(&image), &RelPath::default(), true)?;
    let mut changes = walker.changes;
    changes.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    Ok(changes)
}

/// The bytes of content the added and modified regular files of `changes`
/// hold in `container_root`, each inode counted once: Docker's `SizeRw`
/// for a driver without an upper directory (moby `archive.ChangesSize`).
pub fn changes_size(container_root: &Path, changes: &[Change]) -> u64 {
    let Ok(root) = rfs::open(
        container_root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut size: u64 = 0;
    for change in changes.iter().filter(|c| c.kind != ChangeKind::Deleted) {
        let Some(path) = change.rel_path() else {
            continue;
        };
        let Ok(st) = rfs::statat(&root, path.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && seen.insert(inode_key(&st))
        {
            size = size.saturating_add(u64::try_from(st.st_size).unwrap_or(0));
        }
    }
    size
}

const CAPABILITY_XATTR: &CStr = c"security.capability";

struct Walker {
    changes: Vec<Change>,
    xattrs: XattrBuffers,
}

impl Walker {
    /// Compares the container's directory `dir` (at `rel`) with the image's
    /// `image` directory (`None` when the image has no directory there).
    /// `listed` says the directory itself is already listed (added or
    /// modified), or is the root.
    fn compare(
        &mut self,
        dir: BorrowedFd<'_>,
        image: Option<&MergedDir>,
        rel: &RelPath,
        listed: bool,
    ) -> Result<(), LayerError> {
        let start = self.changes.len();
        let mut names = list_dir(dir).map_err(|e| read_error(rel, "directory", e))?;
        names.sort();
        // What the image has here, by name; what is left at the end was
        // deleted.
        let mut old: BTreeMap<CString, Found> = BTreeMap::new();
        if let Some(image) = image {
            for name in image.names(rel)? {
                if let Some(found) = image.lookup(&name, rel)? {
                    old.insert(name, found);
                }
            }
        }
        for name in names {
            let path = rel.join(name.to_bytes());
            let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| read_error(&path, "metadata", e))?;
            let before = old.remove(&name);
            let child_listed = match (&before, image) {
                (Some(found), Some(image)) => {
                    let changed = stat_differs(&found.st, &st)
                        || self
                            .capability(XattrTarget::At(image.layer(found.layer), &name), &path)?
                            != self.capability(XattrTarget::At(dir, &name), &path)?;
                    if changed {
                        self.changes.push(Change::new(&path, ChangeKind::Modified));
                    }
                    changed
                }
                _ => {
                    self.changes.push(Change::new(&path, ChangeKind::Added));
                    true
                }
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub: OwnedFd = rfs::openat(dir, &name, flags, Mode::empty())
                .map_err(|e| read_error(&path, "directory", e))?;
            // Below a directory that replaced a file, everything is new.
            let sub_image = match (&before, image) {
                (Some(found), Some(image)) if found.file_type() == FileType::Directory => {
                    Some(image.open_child(&name, found, rel)?)
                }
                _ => None,
            };
            self.compare(sub.as_fd(), sub_image.as_ref(), &path, child_listed)?;
        }
        for name in old.keys() {
            self.changes
                .push(Change::new(&rel.join(name.to_bytes()), ChangeKind::Deleted));
        }
        // moby: "If there were changes inside this directory, we need to add
        // it, even if the directory itself wasn't changed. This is needed to
        // properly save and restore filesystem permissions."
        if self.changes.len() > start && !listed {
            self.changes
                .insert(start, Change::new(rel, ChangeKind::Modified));
        }
        Ok(())
    }

    fn capability(
        &mut self,
        target: XattrTarget<'_>,
        path: &RelPath,
    ) -> Result<Option<Vec<u8>>, LayerError> {
        match self.xattrs.value(target, CAPABILITY_XATTR) {
            Ok(value) => Ok(value),
            // Symlinks cannot carry it.
            Err(Errno::PERM) => Ok(None),
            Err(e) => Err(read_error(path, "xattrs", e)),
        }
    }
}

/// moby `statDifferent`: type and mode, owner, group and device number; for
/// anything but a directory also mtime and size (a directory's size and
/// mtime change with its entries, which are compared themselves).
fn stat_differs(old: &Stat, new: &Stat) -> bool {
    old.st_mode != new.st_mode
        || old.st_uid != new.st_uid
        || old.st_gid != new.st_gid
        || old.st_rdev != new.st_rdev
        || (FileType::from_raw_mode(old.st_mode) != FileType::Directory
            && (!same_mtime(old, new) || old.st_size != new.st_size))
}

/// moby `sameFsTimeSpec`: equal seconds, and equal nanoseconds unless
/// either side has none (times from tar headers are whole seconds).
#[allow(clippy::useless_conversion)]
fn same_mtime(a: &Stat, b: &Stat) -> bool {
    i64::from(a.st_mtime) == i64::from(b.st_mtime)
        && (a.st_mtime_nsec == b.st_mtime_nsec || a.st_mtime_nsec == 0 || b.st_mtime_nsec == 0)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    use super::*;
    use crate::image::layer::{UnpackOptions, Whiteouts, flatten, unpack, write_changes};

    /// A one-layer image and a container's copy of it.
    struct Fixture {
        tmp: tempfile::TempDir,
        layers: Vec<PathBuf>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let base = tmp.path().join("base");
            for dir in ["bin", "etc", "var/log", "keep"] {
                fs::create_dir_all(base.join(dir)).unwrap();
            }
            fs::write(base.join("bin/sh"), b"shell").unwrap();
            fs::write(base.join("etc/passwd"), b"root").unwrap();
            fs::write(base.join("etc/group"), b"root").unwrap();
            fs::write(base.join("var/log/messages"), b"log").unwrap();
            fs::write(base.join("keep/file"), b"same").unwrap();
            fs::write(base.join("was-file"), b"x").unwrap();
            symlink("sh", base.join("bin/ash")).unwrap();
            Fixture {
                tmp,
                layers: vec![base],
            }
        }

        /// A fresh copy, as a vfs container starts with.
        fn copy(&self, name: &str) -> PathBuf {
            let dest = self.tmp.path().join(name);
            fs::create_dir(&dest).unwrap();
            flatten(&self.layers, &dest).unwrap();
            dest
        }
    }

    fn listed(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    /// Every path below `root` with its type, mode, owner, size, whole-second
    /// mtime (what a tar keeps) and content or link target.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for entry in fs::read_dir(root.join(&rel)).unwrap() {
                let entry = entry.unwrap();
                let path = rel.join(entry.file_name());
                let meta = fs::symlink_metadata(root.join(&path)).unwrap();
                let detail = if meta.is_dir() {
                    stack.push(path.clone());
                    String::new()
                } else if meta.file_type().is_symlink() {
                    fs::read_link(root.join(&path))
                        .unwrap()
                        .display()
                        .to_string()
                } else {
                    String::from_utf8_lossy(&fs::read(root.join(&path)).unwrap()).into_owned()
                };
                let mtime = if meta.is_dir() { 0 } else { meta.mtime() };
                out.push(format!(
                    "{} {:o} {}:{} {mtime} {detail}",
                    path.display(),
                    meta.mode(),
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn an_untouched_copy_has_no_changes() {
        let fixture = Fixture::new();
        let copy = fixture.copy("c");
        assert_eq!(tree_changes(&fixture.layers, &copy).unwrap(), []);
    }

    #[test]
    fn changes_are_listed_like_docker_diff() {
        let fixture = Fixture::new();
        let c = fixture.copy("c");
        fs::write(c.join("etc/new"), b"added").unwrap();
        fs::remove_file(c.join("etc/group")).unwrap();
        fs::set_permissions(c.join("bin/sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::remove_dir_all(c.join("var/log")).unwrap();
        fs::create_dir_all(c.join("opt/x")).unwrap();
        fs::write(c.join("opt/x/f"), b"deep").unwrap();
        fs::remove_file(c.join("was-file")).unwrap();
        fs::create_dir(c.join("was-file")).unwrap();
        fs::write(c.join("was-file/inner"), b"i").unwrap();
        let changes = tree_changes(&fixture.layers, &c).unwrap();
        assert_eq!(
            listed(&changes),
            [
                "C /bin",
                "C /bin/sh",
                "C /etc",
                "D /etc/group",
                "A /etc/new",
                "A /opt",
                "A /opt/x",
                "A /opt/x/f",
                "C /var",
                "D /var/log",
                "C /was-file",
                "A /was-file/inner",
            ]
        );
        assert_eq!(
            serde_json::to_value(&changes[3]).unwrap(),
            serde_json::json!({"Path": "/etc/group", "Kind": 2})
        );
        // The files added or changed, not the whole copy.
        assert_eq!(changes_size(&c, &changes), 5 + 5 + 4 + 1);
    }

    #[test]
    fn content_changes_are_seen_through_size_or_mtime() {
        let fixture = Fixture::new();
        let c = fixture.copy("c");
        // Same size, new mtime.
        fs::write(c.join("etc/passwd"), b"toor").unwrap();
        // Same mtime (set back), new size.
        let before = fs::metadata(c.join("keep/file")).unwrap();
        fs::write(c.join("keep/file"), b"longer").unwrap();
        let times = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: before.atime(),
                tv_nsec: before.atime_nsec(),
            },
            last_modification: rfs::Timespec {
                tv_sec: before.mtime(),
                tv_nsec: before.mtime_nsec(),
            },
        };
        rfs::utimensat(rfs::CWD, c.join("keep/file"), &times, AtFlags::empty()).unwrap();
        let changes = tree_changes(&fixture.layers, &c).unwrap();
        assert_eq!(
            listed(&changes),
            ["C /etc", "C /etc/passwd", "C /keep", "C /keep/file"]
        );
    }

    #[test]
    fn a_layer_of_the_changes_rebuilds_the_container_from_the_image() {
        let fixture = Fixture::new();
        let c = fixture.copy("c");
        fs::write(c.join("etc/new"), b"added").unwrap();
        fs::remove_file(c.join("etc/group")).unwrap();
        fs::remove_dir_all(c.join("var/log")).unwrap();
        fs::create_dir_all(c.join("opt/x")).unwrap();
        fs::write(c.join("opt/x/f"), b"deep").unwrap();
        fs::hard_link(c.join("opt/x/f"), c.join("opt/x/g")).unwrap();
        fs::remove_file(c.join("bin/ash")).unwrap();
        symlink("/bin/sh", c.join("bin/ash")).unwrap();
        fs::set_permissions(c.join("keep"), fs::Permissions::from_mode(0o700)).unwrap();
        let changes = tree_changes(&fixture.layers, &c).unwrap();
        let mut tar = Vec::new();
        let stats = write_changes(&c, &changes, &mut tar).unwrap();
        assert_eq!(stats.entries, u64::try_from(changes.len()).unwrap());

        let mut entries = Vec::new();
        for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
            let entry = entry.unwrap();
            entries.push(format!(
                "{:?} {}",
                entry.header().entry_type(),
                String::from_utf8_lossy(&entry.path_bytes())
            ));
        }
        assert_eq!(
            entries,
            [
                "Directory bin",
                "Symlink bin/ash",
                "Directory etc",
                "Regular etc/.wh.group",
                "Regular etc/new",
                "Directory keep",
                "Directory opt",
                "Directory opt/x",
                "Regular opt/x/f",
                "Link opt/x/g",
                "Directory var",
                "Regular var/.wh.log",
            ]
        );

        // The image's copy with the layer applied is the container.
        let rebuilt = fixture.copy("rebuilt");
        let opts = UnpackOptions {
            whiteouts: Whiteouts::Apply,
            preserve_owners: false,
            ..UnpackOptions::default()
        };
        unpack(&tar[..], &rebuilt, &opts).unwrap();
        assert_eq!(tree(&rebuilt), tree(&c));
        assert_eq!(
            fs::metadata(rebuilt.join("opt/x/g")).unwrap().ino(),
            fs::metadata(rebuilt.join("opt/x/f")).unwrap().ino()
        );

        // The same changes give the same layer.
        let mut again = Vec::new();
        assert_eq!(write_changes(&c, &changes, &mut again).unwrap(), stats);
    }
}
