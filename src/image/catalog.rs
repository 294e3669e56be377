//! Image records and tags: which images the store holds, their layers, and
//! which names point at them; and what unpacking found out about each layer.
//!
//! An image's id is the digest of its config blob (as in Docker). Each image has
//! a record `images/records/<hex>.json`; names live in `images/tags.json`
//! (`docker.io/library/busybox:latest` → id). Every change is a locked
//! read-modify-write with an atomic file replacement, so concurrent `stack`
//! processes never lose each other's tags and a crash leaves the old or the new
//! file, never half of one.
//!
//! `images/diffs/<diff-id hex>.json` holds the size of a layer's content once
//! it was measured (by unpacking it, or reading it through): a fact of the
//! uncompressed diff, so it is kept by diff id and shared by every image with
//! that layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::digest::Digest;
use super::leftovers;
use super::reference::{Reference, ReferenceError};
use super::store::write_atomic;

/// Errors of the image catalog.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// A catalog file could not be read or written.
    #[error("cannot access the image catalog at {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A catalog file does not parse.
    #[error("the image catalog file {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No image matches.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {0} is ambiguous")]
    Ambiguous(String),
    /// A name is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the layer blob as stored (compressed or not).
    pub blob: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
}

/// What the store knows of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config blob.
    pub id: Digest,
    /// The manifest blob this image came with or was given, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// Creation time from the config (RFC 3339), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Size of the layers as first recorded: the blobs' (compressed) sizes
    /// for pulled and loaded images. What `stack images` shows is measured
    /// from the layers' content instead (see [`DiffRecord`]).
    pub size: u64,
    /// `repository@manifest-digest` names this image was pulled or pushed as.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub repo_digests: BTreeSet<String>,
}

/// What was measured of one layer's uncompressed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffRecord {
    /// Bytes of content: the sum of the sizes its tar entries declare, which
    /// is what Docker reports as a layer's size (moby `archive.UnpackLayer`).
    pub size: u64,
}

/// The catalog under a state root.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    records: PathBuf,
    diffs: PathBuf,
    tags: PathBuf,
    lock: PathBuf,
}

/// An exclusive lock on the catalog, released on drop.
struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = flock(&self.0, FlockOperation::Unlock);
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Catalog {
    /// Opens (creating if needed) the catalog under `root`.
    pub fn open(root: &Path) -> Result<Self, CatalogError> {
        let dir = root.join("images");
        let records = dir.join("records");
        let diffs = dir.join("diffs");
        for d in [&records, &diffs] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let catalog = Self {
            records,
            diffs,
            tags: dir.join("tags.json"),
            lock: dir.join("lock"),
            dir,
        };
        catalog.sweep_leftovers();
        Ok(catalog)
    }

    /// Removes the temp files of atomic writes whose process was killed
    /// before renaming them; returns how many.
    pub fn sweep_leftovers(&self) -> usize {
        [&self.dir, &self.records, &self.diffs]
            .into_iter()
            .map(|d| leftovers::sweep(d, |name| name.starts_with('.')))
            .sum()
    }

    fn diff_path(&self, diff_id: &Digest) -> PathBuf {
        self.diffs.join(format!("{}.json", diff_id.hex()))
    }

    /// Records what was measured of the layer `diff_id`.
    pub fn put_diff(&self, diff_id: &Digest, diff: DiffRecord) -> Result<(), CatalogError> {
        let path = self.diff_path(diff_id);
        let bytes = serde_json::to_vec(&diff).map_err(|source| CatalogError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    /// What was measured of the layer `diff_id`, if it was.
    pub fn diff(&self, diff_id: &Digest) -> Result<Option<DiffRecord>, CatalogError> {
        let path = self.diff_path(diff_id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CatalogError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The diff ids with a [`DiffRecord`].
    pub fn diffs(&self) -> Result<Vec<Digest>, CatalogError> {
        let mut out: Vec<Digest> = fs::read_dir(&self.diffs)
            .map_err(io_err(&self.diffs))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let hex = name.to_str()?.strip_suffix(".json")?;
                Digest::from_hex(hex).ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Forgets what was measured of the layer `diff_id`.
    pub fn remove_diff(&self, diff_id: &Digest) -> Result<(), CatalogError> {
        let path = self.diff_path(diff_id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> Result<Lock, CatalogError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io_err(&self.lock))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| CatalogError::Io {
            path: self.lock.clone(),
            source: e.into(),
        })?;
        Ok(Lock(file))
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.records.join(format!("{}.json", id.hex()))
    }

    /// Adds or replaces an image record. Repo digests already known are kept.
    pub fn put(&self, record: &ImageRecord) -> Result<(), CatalogError> {
        let _lock = self.lock()?;
        let path = self.record_path(&record.id);
        let mut record = record.clone();
        if let Some(old) = self.read_record(&path)? {
            record.repo_digests.extend(old.repo_digests);
            if record.manifest.is_none() {
                record.manifest = old.manifest;
            }
        }
        let bytes = serde_json::to_vec_pretty(&record).map_err(|source| CatalogError::Corrupt {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(io_err(&path))
    }

    fn read_record(&self, path: &Path) -> Result<Option<ImageRecord>, CatalogError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| CatalogError::Corrupt {
                        path: path.to_path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The record of image `id`.
    pub fn get(&self, id: &Digest) -> Result<ImageRecord, CatalogError> {
        self.read_record(&self.record_path(id))?
            .ok_or_else(|| CatalogError::NotFound(id.to_string()))
    }

    /// Every image record, sorted by id.
    pub fn list(&self) -> Result<Vec<ImageRecord>, CatalogError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.records).map_err(io_err(&self.records))? {
            let entry = entry.map_err(io_err(&self.records))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if Digest::from_hex(hex).is_err() {
                continue;
            }
            if let Some(record) = self.read_record(&entry.path())? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every tag and the image it names.
    pub fn tags(&self) -> Result<BTreeMap<Reference, Digest>, CatalogError> {
        let raw: BTreeMap<String, Digest> = match fs::read(&self.tags) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CatalogError::Corrupt {
                    path: self.tags.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&self.tags)(e)),
        };
        let mut out = BTreeMap::new();
        for (name, id) in raw {
            out.insert(name.parse::<Reference>()?, id);
        }
        Ok(out)
    }

    fn write_tags(&self, tags: &BTreeMap<Reference, Digest>) -> Result<(), CatalogError> {
        let raw: BTreeMap<String, &Digest> = tags.iter().map(|(r, d)| (r.to_string(), d)).collect();
        let bytes = serde_json::to_vec_pretty(&raw).map_err(|source| CatalogError::Corrupt {
            path: self.tags.clone(),
            source,
        })?;
        write_atomic(&self.tags, &bytes).map_err(io_err(&self.tags))
    }

    /// Points `name` at image `id`; returns the image it pointed at before.
    pub fn tag(&self, name: &Reference, id: &Digest) -> Result<Option<Digest>, CatalogError> {
        let _lock = self.lock()?;
        if self.read_record(&self.record_path(id))?.is_none() {
            return Err(CatalogError::NotFound(id.to_string()));
        }
        let mut tags = self.tags()?;
        let old = tags.insert(name.clone(), id.clone());
        self.write_tags(&tags)?;
        Ok(old.filter(|o| o != id))
    }

    /// Removes the name; returns the image it named.
    pub fn untag(&self, name: &Reference) -> Result<Digest, CatalogError> {
        let _lock = self.lock()?;
        let mut tags = self.tags()?;
        let id = tags
            .remove(name)
            .ok_or_else(|| CatalogError::NotFound(name.familiar()))?;
        self.write_tags(&tags)?;
        Ok(id)
    }

    /// Removes an image record and every tag naming it; returns the tags.
    pub fn remove(&self, id: &Digest) -> Result<Vec<Reference>, CatalogError> {
        let _lock = self.lock()?;
        let mut tags = self.tags()?;
        let names: Vec<Reference> = tags
            .iter()
            .filter(|(_, d)| *d == id)
            .map(|(r, _)| r.clone())
            .collect();
        for name in &names {
            tags.remove(name);
        }
        self.write_tags(&tags)?;
        let path = self.record_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(names),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(CatalogError::NotFound(id.to_string()))
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Finds an image by name (`busybox`, `busybox:1`, `host/app@sha256:…`),
    /// full id (`sha256:…`) or id prefix (at least 4 hex characters), the ways
    /// Docker accepts.
    pub fn resolve(&self, name: &str) -> Result<Digest, CatalogError> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let looks_like_id = hex.len() >= 4
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if let Ok(id) = Digest::from_hex(hex)
            && self.record_path(&id).is_file()
        {
            return Ok(id);
        }
        if let Ok(reference) = name.parse::<Reference>() {
            if let Some(id) = self.tags()?.get(&reference) {
                return Ok(id.clone());
            }
            if let Some(digest) = reference.digest() {
                let pinned = format!("{}@{digest}", reference.repository());
                if let Some(record) = self
                    .list()?
                    .into_iter()
                    .find(|r| r.repo_digests.contains(&pinned))
                {
                    return Ok(record.id);
                }
            }
        }
        if looks_like_id {
            let matches: Vec<Digest> = self
                .list()?
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id.hex().starts_with(hex))
                .collect();
            match matches.as_slice() {
                [one] => return Ok(one.clone()),
                [] => {}
                _ => return Err(CatalogError::Ambiguous(name.to_string())),
            }
        }
        Err(CatalogError::NotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content: &[u8]) -> ImageRecord {
        ImageRecord {
            id: Digest::of(content),
            manifest: None,
            layers: vec![LayerRecord {
                blob: Digest::of(b"layer"),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 5,
                diff_id: Digest::of(b"tar"),
            }],
            created: None,
            size: 3,
            repo_digests: BTreeSet::new(),
        }
    }

    #[test]
    fn images_are_found_by_name_id_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let image = record(b"config");
        catalog.put(&image).unwrap();
        let name: Reference = "busybox:1.36".parse().unwrap();
        assert_eq!(catalog.tag(&name, &image.id).unwrap(), None);
        assert_eq!(catalog.resolve("busybox:1.36").unwrap(), image.id);
        assert_eq!(
            catalog.resolve("docker.io/library/busybox:1.36").unwrap(),
            image.id
        );
        assert_eq!(catalog.resolve(&image.id.to_string()).unwrap(), image.id);
        assert_eq!(catalog.resolve(image.id.short()).unwrap(), image.id);
        assert!(matches!(
            catalog.resolve("busybox:latest"),
            Err(CatalogError::NotFound(_))
        ));
        assert_eq!(catalog.get(&image.id).unwrap(), image);
    }

    #[test]
    fn retagging_reports_the_image_that_lost_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let (a, b) = (record(b"a"), record(b"b"));
        catalog.put(&a).unwrap();
        catalog.put(&b).unwrap();
        let name: Reference = "app".parse().unwrap();
        catalog.tag(&name, &a.id).unwrap();
        assert_eq!(catalog.tag(&name, &b.id).unwrap(), Some(a.id.clone()));
        assert_eq!(catalog.untag(&name).unwrap(), b.id);
        assert!(catalog.untag(&name).is_err());
    }

    #[test]
    fn removing_an_image_removes_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let image = record(b"x");
        catalog.put(&image).unwrap();
        for n in ["a:1", "b:2"] {
            catalog.tag(&n.parse().unwrap(), &image.id).unwrap();
        }
        let removed = catalog.remove(&image.id).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(catalog.tags().unwrap().is_empty());
        assert!(catalog.list().unwrap().is_empty());
    }

    #[test]
    fn layer_sizes_are_kept_by_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let diff_id = Digest::of(b"tar");
        assert_eq!(catalog.diff(&diff_id).unwrap(), None);
        catalog.put_diff(&diff_id, DiffRecord { size: 42 }).unwrap();
        assert_eq!(
            catalog.diff(&diff_id).unwrap(),
            Some(DiffRecord { size: 42 })
        );
        assert_eq!(catalog.diffs().unwrap(), vec![diff_id.clone()]);
        catalog.remove_diff(&diff_id).unwrap();
        catalog.remove_diff(&diff_id).unwrap();
        assert!(catalog.diffs().unwrap().is_empty());
    }

    #[test]
    fn tagging_an_unknown_image_fails() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let err = catalog
            .tag(&"a".parse().unwrap(), &Digest::of(b"nothing"))
            .unwrap_err();
        assert!(matches!(err, CatalogError::NotFound(_)));
    }

    #[test]
    fn concurrent_taggers_lose_no_tag() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let image = record(b"shared");
        catalog.put(&image).unwrap();
        std::thread::scope(|s| {
            for i in 0..16 {
                let catalog = catalog.clone();
                let id = image.id.clone();
                s.spawn(move || {
                    catalog
                        .tag(&format!("app:v{i}").parse().unwrap(), &id)
                        .unwrap();
                });
            }
        });
        assert_eq!(catalog.tags().unwrap().len(), 16);
    }
}
