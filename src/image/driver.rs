//! Which storage driver a state root uses, and keeping to it.
//!
//! - `overlay`: a container's root is an overlay mount of the image's
//!   unpacked layers (shared, read-only) under the container's own upper
//!   directory, which holds only its changes.
//! - `vfs`: every container gets a full copy of its image
//!   ([`layer::flatten`](super::layer::flatten)), bind-mounted as its root;
//!   for hosts without overlayfs. Commits compare the copy with the image
//!   ([`layer::tree_changes`](super::layer::tree_changes)).
//!
//! The driver is recorded in `<root>/storage-driver` the first time a daemon
//! runs on the root, and a daemon asked for the other one later refuses to
//! start, as Docker does when a root already holds another driver's state:
//! containers were laid out for the first.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::leftovers::{self, temp_name};

/// How containers' root file systems are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDriver {
    /// An overlay of the image's layers under the container's upper dir.
    #[default]
    Overlay,
    /// A full copy of the image per container.
    Vfs,
}

impl StorageDriver {
    /// Every driver, in the order help texts list them.
    pub const ALL: [StorageDriver; 2] = [StorageDriver::Overlay, StorageDriver::Vfs];

    /// The name Docker uses (`docker info`'s `Storage Driver`, `inspect`'s
    /// `Driver`).
    pub fn name(self) -> &'static str {
        match self {
            StorageDriver::Overlay => "overlay",
            StorageDriver::Vfs => "vfs",
        }
    }
}

impl fmt::Display for StorageDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StorageDriver {
    type Err = DriverError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorageDriver::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| DriverError::Unknown {
                name: s.to_string(),
            })
    }
}

/// Why the storage driver cannot be settled.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A name that is not a driver.
    #[error("unknown storage driver {name:?}: the drivers are overlay and vfs")]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The root was set up with the other driver.
    #[error(
        "the state root {} uses the {recorded} storage driver (recorded in {}), not {requested}: its containers were laid out for {recorded}; start with --storage-driver {recorded}, or use another --root",
        root.display(),
        file.display()
    )]
    Mismatch {
        /// The state root.
        root: PathBuf,
        /// The file the choice is recorded in.
        file: PathBuf,
        /// The driver recorded there.
        recorded: StorageDriver,
        /// The driver asked for.
        requested: StorageDriver,
    },
    /// The record holds something that is not a driver name.
    #[error("{} does not name a storage driver (overlay or vfs): {content:?}", path.display())]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The record could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Temp files of [`record`] in the state root.
const TEMP_PREFIX: &str = ".storage-driver";

/// The file in the state root that records the driver.
pub fn record_path(root: &Path) -> PathBuf {
    root.join("storage-driver")
}

/// The driver recorded for `root`, if one is.
pub fn recorded(root: &Path) -> Result<Option<StorageDriver>, DriverError> {
    let path = record_path(root);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DriverError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| DriverError::Corrupt {
            path,
            content: text,
        })
}

/// The driver a daemon on a root with `recorded` runs when asked for
/// `requested`: the recorded one (a different request is refused), else
/// the one asked for, else `overlay`.
pub fn choose(
    root: &Path,
    recorded: Option<StorageDriver>,
    requested: Option<StorageDriver>,
) -> Result<StorageDriver, DriverError> {
    match (recorded, requested) {
        (Some(recorded), Some(requested)) if recorded != requested => Err(DriverError::Mismatch {
            root: root.to_path_buf(),
            file: record_path(root),
            recorded,
            requested,
        }),
        (Some(recorded), _) => Ok(recorded),
        (None, requested) => Ok(requested.unwrap_or_default()),
    }
}

/// Records `driver` for `root` unless a driver is recorded already, and
/// returns the one recorded in the end: written to a temp file and renamed
/// into place without replacing, so two writers cannot both win and a crash
/// leaves a complete record or none.
pub fn record(root: &Path, driver: StorageDriver) -> Result<StorageDriver, DriverError> {
    let path = record_path(root);
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| DriverError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(root).map_err(io_err("create", root))?;
    leftovers::sweep(root, |name| name.starts_with(TEMP_PREFIX));
    let temp = root.join(temp_name(TEMP_PREFIX));
    std::fs::write(&temp, format!("{driver}\n")).map_err(io_err("write", &temp))?;
    let renamed = rustix::fs::renameat_with(
        rustix::fs::CWD,
        &temp,
        rustix::fs::CWD,
        &path,
        rustix::fs::RenameFlags::NOREPLACE,
    );
    let _ = std::fs::remove_file(&temp);
    match renamed {
        Ok(()) => Ok(driver),
        Err(rustix::io::Errno::EXIST) => recorded(root)?.ok_or_else(|| DriverError::Corrupt {
            path,
            content: String::new(),
        }),
        Err(e) => Err(io_err("write", &path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_list_the_drivers() {
        assert_eq!("vfs".parse::<StorageDriver>().unwrap(), StorageDriver::Vfs);
        assert_eq!(
            "overlay".parse::<StorageDriver>().unwrap(),
            StorageDriver::Overlay
        );
        let err = "overlay2".parse::<StorageDriver>().unwrap_err().to_string();
        assert!(err.contains("overlay and vfs"), "{err}");
    }

    #[test]
    fn the_recorded_driver_wins_and_the_other_is_refused() {
        let root = Path::new("/r");
        let (o, v) = (StorageDriver::Overlay, StorageDriver::Vfs);
        assert_eq!(choose(root, None, None).unwrap(), o);
        assert_eq!(choose(root, None, Some(v)).unwrap(), v);
        assert_eq!(choose(root, Some(v), None).unwrap(), v);
        assert_eq!(choose(root, Some(v), Some(v)).unwrap(), v);
        let err = choose(root, Some(o), Some(v)).unwrap_err().to_string();
        assert!(err.contains("uses the overlay storage driver"), "{err}");
        assert!(err.contains("--storage-driver overlay"), "{err}");
    }

    #[test]
    fn the_first_record_stays() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(recorded(tmp.path()).unwrap(), None);
        assert_eq!(
            record(tmp.path(), StorageDriver::Vfs).unwrap(),
            StorageDriver::Vfs
        );
        assert_eq!(
            record(tmp.path(), StorageDriver::Overlay).unwrap(),
            StorageDriver::Vfs
        );
        assert_eq!(recorded(tmp.path()).unwrap(), Some(StorageDriver::Vfs));
        std::fs::write(record_path(tmp.path()), "zfs\n").unwrap();
        assert!(matches!(
            recorded(tmp.path()),
            Err(DriverError::Corrupt { .. })
        ));
        // No temp files are left in the root.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["storage-driver"]);
    }
}
