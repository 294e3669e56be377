//! Unpacked layers, shared by chain id: `layers/<chain-id>/diff` holds one
//! layer's files in overlayfs form (whiteouts as 0/0 character devices, opaque
//! directories marked), so a container's root file system is an overlay whose
//! lower directories are these, top layer first.
//!
//! A layer's chain id names it together with everything below it
//! (`chain(L0) = diff_id(L0)`, `chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))`,
//! as in the OCI image spec), so two images that share a base share its
//! directories. A layer is unpacked into a temp directory, its diff id checked
//! against the config's, and only then renamed into place: a directory under a
//! chain id is always complete and always the layer it claims to be. The temp
//! directory of an unpack that was killed halfway is removed by the next open
//! or garbage collection, once its writer is gone.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::catalog::LayerRecord;
use super::digest::Digest;
use super::layer::{self, LayerError, UnpackOptions, UnpackStats, Whiteouts};
use super::leftovers::{self, temp_name};
use super::store::{BlobStore, StoreError};

/// Errors of the layer snapshots.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A snapshot directory could not be created, renamed or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The layer blob could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Unpacking failed.
    #[error("cannot unpack layer {blob}")]
    Unpack {
        /// The layer blob.
        blob: Digest,
        /// Why.
        #[source]
        source: LayerError,
    },
    /// The unpacked content is not the layer the config names.
    #[error("layer {blob} unpacks to {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        blob: Digest,
        /// The config's diff id.
        expected: Digest,
        /// What the blob holds.
        actual: Digest,
    },
}

/// The chain ids of a stack of layers, base first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The mount options of an overlay: `lowers` base first (overlayfs wants the
/// top layer first), with `upper` and `work` for a writable container layer.
pub fn overlay_options(lowers: &[PathBuf], upper_work: Option<(&Path, &Path)>) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut options = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = upper_work {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    options
}

/// The snapshot directory tree under a state root.
#[derive(Debug, Clone)]
pub struct Snapshots {
    root: PathBuf,
}

fn io_err<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> SnapshotError + 'p {
    move |source| SnapshotError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Snapshots {
    /// Opens (creating if needed) `layers/` under `root` and removes the temp
    /// directories of unpacks that were killed halfway.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        let root = root.join("layers");
        fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        let snapshots = Self { root };
        snapshots.sweep_leftovers();
        Ok(snapshots)
    }

    /// Removes the temp directories of unpacks and removals whose process is
    /// gone; returns how many. Those of running processes stay.
    pub fn sweep_leftovers(&self) -> usize {
        leftovers::sweep(&self.root, |name| name.starts_with(".tmp-"))
    }

    /// The directory of the layer with chain id `chain`.
    pub fn diff_dir(&self, chain: &Digest) -> PathBuf {
        self.root.join(chain.hex()).join("diff")
    }

    /// True when the layer is unpacked.
    pub fn contains(&self, chain: &Digest) -> bool {
        self.diff_dir(chain).is_dir()
    }

    /// Unpacks `layer` as chain id `chain` unless it is there already, and
    /// returns what the unpack found (`None` when there was nothing to do, or
    /// another process unpacked it meanwhile).
    pub fn unpack(
        &self,
        store: &BlobStore,
        layer: &LayerRecord,
        chain: &Digest,
    ) -> Result<Option<UnpackStats>, SnapshotError> {
        if self.contains(chain) {
            return Ok(None);
        }
        let temp = self.root.join(format!(".tmp-{}", temp_name(chain.short())));
        let guard = TempDir(temp.clone());
        let diff = temp.join("diff");
        fs::create_dir_all(&diff).map_err(io_err("create", &diff))?;
        let reader = BufReader::with_capacity(1 << 20, store.open_verified(&layer.blob)?);
        let options = UnpackOptions {
            whiteouts: Whiteouts::Overlay,
            ..UnpackOptions::default()
        };
        let stats =
            layer::unpack(reader, &diff, &options).map_err(|source| SnapshotError::Unpack {
                blob: layer.blob.clone(),
                source,
            })?;
        if stats.diff_id != layer.diff_id {
            return Err(SnapshotError::DiffIdMismatch {
                blob: layer.blob.clone(),
                expected: layer.diff_id.clone(),
                actual: stats.diff_id,
            });
        }
        let dest = self.root.join(chain.hex());
        match fs::rename(&temp, &dest) {
            Ok(()) => {
                guard.keep();
                Ok(Some(stats))
            }
            // Another process unpacked the same layer meanwhile: theirs is as good.
            Err(_) if self.contains(chain) => Ok(None),
            Err(e) => Err(io_err("rename into place", &dest)(e)),
        }
    }

    /// Every unpacked layer's chain id.
    pub fn list(&self) -> Result<Vec<Digest>, SnapshotError> {
        let mut out: Vec<Digest> = fs::read_dir(&self.root)
            .map_err(io_err("list", &self.root))?
            .flatten()
            .filter_map(|e| Digest::from_hex(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes an unpacked layer.
    pub fn remove(&self, chain: &Digest) -> Result<(), SnapshotError> {
        let dir = self.root.join(chain.hex());
        // Rename first so a half-removed layer never looks complete.
        let doomed = self
            .root
            .join(format!(".tmp-rm-{}", temp_name(chain.short())));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed).map_err(io_err("remove", &doomed)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }
}

/// Removes a directory tree on drop unless kept.
struct TempDir(PathBuf);

impl TempDir {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn overlay_lowers_are_listed_top_first() {
        let lowers = [PathBuf::from("/l/base"), PathBuf::from("/l/top")];
        assert_eq!(overlay_options(&lowers, None), "lowerdir=/l/top:/l/base");
        assert_eq!(
            overlay_options(&lowers, Some((Path::new("/c/up"), Path::new("/c/work")))),
            "lowerdir=/l/top:/l/base,upperdir=/c/up,workdir=/c/work"
        );
    }
}
