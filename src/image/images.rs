//! The local image store as one object: blobs, the catalog of images and
//! tags, and unpacked layers, under one state root. The image verbs of the
//! command line (`images`, `tag`, `rmi`, `history`, `inspect`, `save`, `load`,
//! `import`, `image prune`) are methods here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use super::archive::{self, ArchiveError, ArchiveFormat, Loaded};
use super::catalog::{Catalog, CatalogError, DiffRecord, ImageRecord, LayerRecord};
use super::changes::{Change, ChangeError, apply_changes};
use super::digest::Digest;
use super::layer::{self, Compression, LayerError};
use super::leftovers::temp_name;
use super::oci::{self, History, ImageConfig, Platform, RootFs};
use super::reference::{Reference, ReferenceError};
use super::snapshot::{SnapshotError, Snapshots, chain_ids};
use super::store::{BlobStore, StoreError};

/// Errors of image operations.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Unpacked layers failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// An archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A name is not a valid reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A `--change` instruction is invalid.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// Reading or writing a layer failed.
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// An image config does not parse.
    #[error("the config of image {id} is invalid")]
    Config {
        /// The image.
        id: Digest,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The image is tagged in several repositories and `rmi` was given its id.
    #[error(
        "conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories"
    )]
    MultipleTags {
        /// The image.
        id: String,
    },
    /// The image is used by a container.
    #[error("conflict: unable to remove image {name}: it is used by container {container}")]
    InUse {
        /// The image as named.
        name: String,
        /// The container.
        container: String,
    },
    /// Reading an import source failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The local image store.
#[derive(Debug, Clone)]
pub struct Images {
    root: PathBuf,
    /// Blobs.
    pub blobs: BlobStore,
    /// Image records and tags.
    pub catalog: Catalog,
    /// Unpacked layers.
    pub snapshots: Snapshots,
}

/// One line of `stack images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// Repository, or `<none>`.
    pub repository: String,
    /// Tag, or `<none>`.
    pub tag: String,
    /// Manifest digest when known, or `<none>`.
    pub digest: String,
    /// The image id.
    pub id: Digest,
    /// Creation time (RFC 3339), if known.
    pub created: Option<String>,
    /// Size of the layers' content in bytes, uncompressed, as Docker counts
    /// it (see [`Images::layer_sizes`]).
    pub size: u64,
}

/// One line of `stack history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryLine {
    /// The image id for the top entry, `<missing>` below (like Docker).
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: Option<String>,
    /// The instruction.
    pub created_by: String,
    /// Bytes of content of the layer this step made, uncompressed (0 for
    /// empty layers).
    pub size: u64,
    /// Comment.
    pub comment: String,
}

/// Whether a container uses an image, asked before removing it.
pub trait UsageCheck {
    /// The container using image `id`, if any.
    fn user_of(&self, id: &Digest) -> Option<String>;
}

/// No containers: nothing is in use.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContainers;

impl UsageCheck for NoContainers {
    fn user_of(&self, _: &Digest) -> Option<String> {
        None
    }
}

/// What `rmi` did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// A name was removed.
    Untagged(String),
    /// An image was deleted.
    Deleted(Digest),
}

impl Images {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Ok(Self {
            root: root.to_path_buf(),
            blobs: BlobStore::open(root)?,
            catalog: Catalog::open(root)?,
            snapshots: Snapshots::open(root)?,
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed config of image `id`.
    pub fn config(&self, id: &Digest) -> Result<ImageConfig, ImageError> {
        let bytes = self.blobs.read(id)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Config {
            id: id.clone(),
            source,
        })
    }

    /// Every image, one line per name (and one for each unnamed image), newest
    /// first, as `stack images` prints them. `all` includes intermediate
    /// images; without it, unnamed images that are parents of others are hidden
    /// (there are none until builds exist, so the flag changes nothing yet).
    pub fn summaries(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let records = self.catalog.list()?;
        let tags = self.catalog.tags()?;
        let mut out = Vec::new();
        let mut measured = BTreeMap::new();
        for record in &records {
            let size = self.layer_sizes_cached(record, &mut measured).iter().sum();
            let digest_of = |repo: &str| {
                record
                    .repo_digests
                    .iter()
                    .find_map(|rd| {
                        rd.split_once('@')
                            .filter(|(r, _)| *r == repo)
                            .map(|(_, d)| d.to_string())
                    })
                    .unwrap_or_else(|| "<none>".to_string())
            };
            let names: Vec<&Reference> = tags
                .iter()
                .filter(|(_, id)| **id == record.id)
                .map(|(r, _)| r)
                .collect();
            if names.is_empty() {
                out.push(ImageSummary {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    digest: "<none>".into(),
                    id: record.id.clone(),
                    created: record.created.clone(),
                    size,
                });
            }
            for name in names {
                out.push(ImageSummary {
                    repository: name.familiar_repository(),
                    tag: name.tag().unwrap_or("<none>").to_string(),
                    digest: digest_of(&name.repository()),
                    id: record.id.clone(),
                    created: record.created.clone(),
                    size,
                });
            }
        }
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.repository.cmp(&b.repository))
                .then_with(|| a.tag.cmp(&b.tag))
        });
        Ok(out)
    }

    /// `stack tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference, ImageError> {
        let id = self.catalog.resolve(source)?;
        let target: Reference = target.parse()?;
        self.catalog.tag(&target, &id)?;
        Ok(target)
    }

    /// `stack rmi NAME`: removes a name; deletes the image when no name is
    /// left (or when given by id, with `force` if it has several names).
    /// `prune` also removes its unpacked layers and blobs no image still uses.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        prune: bool,
        usage: &dyn UsageCheck,
    ) -> Result<Vec<Removed>, ImageError> {
        let id = self.catalog.resolve(name)?;
        let user = usage.user_of(&id);
        if let Some(container) = &user
            && !force
        {
            return Err(ImageError::InUse {
                name: name.to_string(),
                container: container.clone(),
            });
        }
        let tags = self.catalog.tags()?;
        if user.is_some() {
            // Forced while a container uses it: like Docker, only the names
            // go; the image stays (dangling) until the container is removed.
            let mut done = Vec::new();
            for (reference, d) in &tags {
                if *d == id {
                    self.catalog.untag(reference)?;
                    done.push(Removed::Untagged(reference.familiar()));
                }
            }
            return Ok(done);
        }
        let names: Vec<Reference> = tags
            .iter()
            .filter(|(_, d)| **d == id)
            .map(|(r, _)| r.clone())
            .collect();
        let by_name = name
            .parse::<Reference>()
            .ok()
            .filter(|r| tags.get(r) == Some(&id));
        let mut done = Vec::new();
        if let Some(reference) = by_name {
            self.catalog.untag(&reference)?;
            done.push(Removed::Untagged(reference.familiar()));
            if names.len() > 1 {
                return Ok(done);
            }
        } else if names.len() > 1 && !force {
            return Err(ImageError::MultipleTags {
                id: id.short().to_string(),
            });
        }
        for removed in self.catalog.remove(&id)? {
            done.push(Removed::Untagged(removed.familiar()));
        }
        done.push(Removed::Deleted(id));
        if prune {
            self.collect_garbage()?;
        }
        Ok(done)
    }

    /// Removes images without a name (`all`: every image no container uses),
    /// then blobs and layers nothing references. Returns the removed ids and
    /// the bytes freed.
    pub fn prune(
        &self,
        all: bool,
        usage: &dyn UsageCheck,
    ) -> Result<(Vec<Digest>, u64), ImageError> {
        let tagged: BTreeSet<Digest> = self.catalog.tags()?.into_values().collect();
        let mut removed = Vec::new();
        for record in self.catalog.list()? {
            let unused = usage.user_of(&record.id).is_none();
            if unused && (all || !tagged.contains(&record.id)) {
                self.catalog.remove(&record.id)?;
                removed.push(record.id);
            }
        }
        let freed = self.collect_garbage()?;
        Ok((removed, freed))
    }

    /// Deletes blobs, unpacked layers and layer sizes that no image
    /// references, and temp files of writers that are gone; returns the bytes
    /// of blobs freed.
    pub fn collect_garbage(&self) -> Result<u64, ImageError> {
        let records = self.catalog.list()?;
        let mut blobs: BTreeSet<Digest> = BTreeSet::new();
        let mut chains: BTreeSet<Digest> = BTreeSet::new();
        for record in &records {
            blobs.insert(record.id.clone());
            blobs.extend(record.manifest.iter().cloned());
            blobs.extend(record.layers.iter().map(|l| l.blob.clone()));
            for rd in &record.repo_digests {
                if let Some(d) = rd
                    .split_once('@')
                    .and_then(|(_, d)| d.parse::<Digest>().ok())
                {
                    blobs.insert(d);
                }
            }
            let diff_ids: Vec<Digest> = record.layers.iter().map(|l| l.diff_id.clone()).collect();
            chains.extend(chain_ids(&diff_ids));
        }
        let diff_ids: BTreeSet<&Digest> = records
            .iter()
            .flat_map(|r| r.layers.iter().map(|l| &l.diff_id))
            .collect();
        for diff_id in self.catalog.diffs()? {
            if !diff_ids.contains(&diff_id) {
                self.catalog.remove_diff(&diff_id)?;
            }
        }
        self.blobs.sweep_leftovers();
        self.snapshots.sweep_leftovers();
        self.catalog.sweep_leftovers();
        let mut freed = 0;
        for blob in self.blobs.list()? {
            if !blobs.contains(&blob) {
                freed += self.blobs.size(&blob).unwrap_or(0);
                self.blobs.remove(&blob)?;
            }
        }
        for chain in self.snapshots.list()? {
            if !chains.contains(&chain) {
                self.snapshots.remove(&chain)?;
            }
        }
        Ok(freed)
    }

    /// `stack history`: newest step first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryLine>, ImageError> {
        let id = self.catalog.resolve(name)?;
        let record = self.catalog.get(&id)?;
        let config = self.config(&id)?;
        let sizes = self.layer_sizes(&record);
        let mut layers = sizes.iter();
        let mut lines: Vec<HistoryLine> = Vec::new();
        let steps: Vec<History> = if config.history.is_empty() {
            record.layers.iter().map(|_| History::default()).collect()
        } else {
            config.history.clone()
        };
        for step in steps {
            let size = if step.empty_layer {
                0
            } else {
                layers.next().copied().unwrap_or(0)
            };
            lines.push(HistoryLine {
                id: "<missing>".into(),
                created: step.created,
                created_by: step.created_by.unwrap_or_default(),
                size,
                comment: step.comment.unwrap_or_default(),
            });
        }
        lines.reverse();
        if let Some(top) = lines.first_mut() {
            top.id = id.to_string();
        }
        Ok(lines)
    }

    /// `stack image inspect`: Docker's fields from the record and config.
    pub fn inspect(&self, name: &str) -> Result<serde_json::Value, ImageError> {
        let id = self.catalog.resolve(name)?;
        let record = self.catalog.get(&id)?;
        let config = self.config(&id)?;
        let tags: Vec<String> = self
            .catalog
            .tags()?
            .into_iter()
            .filter(|(_, d)| *d == id)
            .map(|(r, _)| r.familiar())
            .collect();
        Ok(serde_json::json!({
            "Id": id,
            "RepoTags": tags,
            "RepoDigests": record.repo_digests,
            "Created": config.created,
            "Author": config.author,
            "Architecture": config.architecture,
            "Os": config.os,
            "Variant": config.variant,
            "Config": config.config,
            "Size": self.layer_sizes(&record).iter().sum::<u64>(),
            "RootFS": {
                "Type": config.rootfs.kind,
                "Layers": config.rootfs.diff_ids,
            },
            "Manifest": record.manifest,
            "Layers": record.layers,
        }))
    }

    /// `stack load`.
    pub fn load(&self, reader: impl Read) -> Result<Vec<Loaded>, ImageError> {
        Ok(archive::load(reader, &self.blobs, &self.catalog)?)
    }

    /// `stack save`: every name resolves to an image; names that are
    /// references are kept as the image's names in the archive.
    pub fn save(
        &self,
        names: &[String],
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<(), ImageError> {
        let tags = self.catalog.tags()?;
        let mut images: Vec<(Digest, Vec<Reference>)> = Vec::new();
        for name in names {
            let id = self.catalog.resolve(name)?;
            let reference = name
                .parse::<Reference>()
                .ok()
                .filter(|r| tags.get(r) == Some(&id));
            match images.iter_mut().find(|(i, _)| *i == id) {
                Some((_, refs)) => refs.extend(reference),
                None => images.push((id, reference.into_iter().collect())),
            }
        }
        Ok(archive::save(
            &images,
            &self.blobs,
            &self.catalog,
            format,
            out,
        )?)
    }

    /// `stack import`: a root file system (a tar, compressed or not, or a
    /// directory) becomes a one-layer image, with Dockerfile-style `changes`.
    pub fn import(
        &self,
        source: ImportSource<'_>,
        reference: Option<&Reference>,
        changes: &[Change],
        message: Option<&str>,
        platform: Option<&Platform>,
    ) -> Result<Digest, ImageError> {
        let (blob, size, media_type) = match source {
            ImportSource::Tar(reader) => {
                let (blob, size) = self.blobs.put(reader, None, None)?;
                let media_type = match layer::sniff_file(&self.blobs.path(&blob))? {
                    Compression::Gzip => oci::MEDIA_OCI_LAYER_GZIP,
                    Compression::Zstd => oci::MEDIA_OCI_LAYER_ZSTD,
                    Compression::None => oci::MEDIA_OCI_LAYER,
                };
                (blob, size, media_type)
            }
            ImportSource::Dir(dir) => {
                let (blob, size) =
                    self.put_tar("import", |out| layer::tar_dir(dir, out).map(|_| ()))?;
                (blob, size, oci::MEDIA_OCI_LAYER)
            }
        };
        let measured = layer::measure(BufReader::new(self.blobs.open_verified(&blob)?))?;
        let diff_id = measured.diff_id.clone();
        self.catalog.put_diff(
            &diff_id,
            DiffRecord {
                size: measured.content_size,
            },
        )?;
        let platform = platform.cloned().unwrap_or_else(Platform::host);
        let created = now_rfc3339();
        let mut config = ImageConfig {
            created: Some(created.clone()),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: None,
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created: Some(created.clone()),
                created_by: Some("Imported from -".into()),
                comment: message.map(str::to_string),
                ..History::default()
            }],
            ..ImageConfig::default()
        };
        apply_changes(&mut config, changes);
        let config_bytes = serde_json::to_vec(&config).map_err(|source| ImageError::Config {
            id: Digest::of(b""),
            source,
        })?;
        let id = self.blobs.put_bytes(&config_bytes)?;
        let record = ImageRecord {
            id: id.clone(),
            manifest: None,
            layers: vec![LayerRecord {
                blob,
                media_type: media_type.to_string(),
                size,
                diff_id,
            }],
            created: Some(created),
            size,
            repo_digests: BTreeSet::new(),
        };
        self.catalog.put(&record)?;
        if let Some(reference) = reference {
            self.catalog.tag(reference, &id)?;
        }
        Ok(id)
    }

    /// Stores the tar stream `write` produces as a blob, through a temp file
    /// (the digest is only known at the end).
    fn put_tar(
        &self,
        what: &str,
        write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> Result<(), LayerError>,
    ) -> Result<(Digest, u64), ImageError> {
        let temp = self.blobs.tmp_dir().join(temp_name(what));
        let file = std::fs::File::create(&temp).map_err(|source| ImageError::Read {
            path: temp.clone(),
            source,
        })?;
        let stored = write(std::io::BufWriter::new(file))
            .map_err(ImageError::from)
            .and_then(|()| {
                let file = std::fs::File::open(&temp).map_err(|source| ImageError::Read {
                    path: temp.clone(),
                    source,
                })?;
                Ok(self.blobs.put(BufReader::new(file), None, None)?)
            });
        let _ = std::fs::remove_file(&temp);
        stored
    }

    /// `stack commit`: a new image made of `parent` plus one layer holding the
    /// changes in a container's writable layer `upper` (overlay form:
    /// whiteouts and opaque directories become the tar's `.wh.` entries).
    pub fn commit(
        &self,
        parent: &Digest,
        upper: &Path,
        reference: Option<&Reference>,
        commit: &CommitOptions<'_>,
    ) -> Result<Digest, ImageError> {
        self.commit_layer(parent, reference, commit, |out| {
            layer::diff(upper, out).map(|_| ())
        })
    }

    /// `stack commit` of a container whose root `tree` is a full copy of
    /// `parent` (the `vfs` driver): the new layer holds what
    /// [`layer::tree_changes`] finds changed against `parent`'s layers,
    /// deleted paths as whiteouts.
    pub fn commit_tree(
        &self,
        parent: &Digest,
        tree: &Path,
        reference: Option<&Reference>,
        commit: &CommitOptions<'_>,
    ) -> Result<Digest, ImageError> {
        let base_layers = self.layers(parent)?;
        let changes = layer::tree_changes(&base_layers, tree)?;
        self.commit_layer(parent, reference, commit, |out| {
            layer::write_changes(tree, &changes, out).map(|_| ())
        })
    }

    /// A new image: `parent` plus the layer `write` produces.
    fn commit_layer(
        &self,
        parent: &Digest,
        reference: Option<&Reference>,
        commit: &CommitOptions<'_>,
        write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> Result<(), LayerError>,
    ) -> Result<Digest, ImageError> {
        let base = self.catalog.get(parent)?;
        let mut config = self.config(parent)?;
        let (blob, size) = self.put_tar("commit", write)?;
        let measured = layer::measure(BufReader::new(self.blobs.open_verified(&blob)?))?;
        let diff_id = measured.diff_id.clone();
        self.catalog.put_diff(
            &diff_id,
            DiffRecord {
                size: measured.content_size,
            },
        )?;
        let created = now_rfc3339();
        config.created = Some(created.clone());
        if let Some(author) = commit.author {
            config.author = Some(author.to_string());
        }
        config.rootfs.diff_ids.push(diff_id.clone());
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(commit.created_by.to_string()),
            author: commit.author.map(str::to_string),
            comment: commit.message.map(str::to_string),
            ..History::default()
        });
        apply_changes(&mut config, commit.changes);
        let config_bytes = serde_json::to_vec(&config).map_err(|source| ImageError::Config {
            id: parent.clone(),
            source,
        })?;
        let id = self.blobs.put_bytes(&config_bytes)?;
        let mut layers = base.layers.clone();
        layers.push(LayerRecord {
            blob,
            media_type: oci::MEDIA_OCI_LAYER.to_string(),
            size,
            diff_id,
        });
        let record = ImageRecord {
            id: id.clone(),
            manifest: None,
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            created: Some(created),
            repo_digests: BTreeSet::new(),
        };
        self.catalog.put(&record)?;
        if let Some(reference) = reference {
            self.catalog.tag(reference, &id)?;
        }
        Ok(id)
    }

    /// Stores the layer tar `write` produces (uncompressed) and records its
    /// size: a build step's layer, before it joins an image with
    /// [`Images::put_image`].
    pub fn put_layer(
        &self,
        write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> Result<(), LayerError>,
    ) -> Result<LayerRecord, ImageError> {
        let (blob, size) = self.put_tar("layer", write)?;
        let measured = layer::measure(BufReader::new(self.blobs.open_verified(&blob)?))?;
        self.catalog.put_diff(
            &measured.diff_id,
            DiffRecord {
                size: measured.content_size,
            },
        )?;
        Ok(LayerRecord {
            blob,
            media_type: oci::MEDIA_OCI_LAYER.to_string(),
            size,
            diff_id: measured.diff_id,
        })
    }

    /// Stores an image made of `layers` (base first) and `config`, whose
    /// `rootfs.diff_ids` is set here from the layers; returns its id. A
    /// build makes one per step, as Docker's classic builder does.
    pub fn put_image(
        &self,
        layers: Vec<LayerRecord>,
        mut config: ImageConfig,
    ) -> Result<Digest, ImageError> {
        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        let config_bytes = serde_json::to_vec(&config).map_err(|source| ImageError::Config {
            id: Digest::of(b""),
            source,
        })?;
        let id = self.blobs.put_bytes(&config_bytes)?;
        if self.catalog.get(&id).is_err() {
            let record = ImageRecord {
                id: id.clone(),
                manifest: None,
                size: layers.iter().map(|l| l.size).sum(),
                layers,
                created: config.created.clone(),
                repo_digests: BTreeSet::new(),
            };
            self.catalog.put(&record)?;
        }
        Ok(id)
    }

    /// Unpacks an image's layers (if needed) and returns their directories,
    /// base first: the lower directories of a container's overlay. Records
    /// the size of each layer it unpacks.
    pub fn layers(&self, id: &Digest) -> Result<Vec<PathBuf>, ImageError> {
        let record = self.catalog.get(id)?;
        let diff_ids: Vec<Digest> = record.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut dirs = Vec::with_capacity(chains.len());
        for (layer, chain) in record.layers.iter().zip(&chains) {
            if let Some(stats) = self.snapshots.unpack(&self.blobs, layer, chain)? {
                self.catalog.put_diff(
                    &layer.diff_id,
                    DiffRecord {
                        size: stats.content_size,
                    },
                )?;
            }
            dirs.push(self.snapshots.diff_dir(chain));
        }
        Ok(dirs)
    }

    /// The uncompressed size of each of the image's layers, base first, as
    /// Docker counts it: the bytes of content its entries declare. Sizes are
    /// recorded when a layer is unpacked or imported; a layer without one
    /// (loaded from an archive, or recorded before sizes were kept) is read
    /// through once from its blob and its size recorded. Only when the blob
    /// cannot be read either is the blob's own size shown.
    pub fn layer_sizes(&self, record: &ImageRecord) -> Vec<u64> {
        self.layer_sizes_cached(record, &mut BTreeMap::new())
    }

    fn layer_sizes_cached(
        &self,
        record: &ImageRecord,
        measured: &mut BTreeMap<Digest, u64>,
    ) -> Vec<u64> {
        record
            .layers
            .iter()
            .map(|layer| {
                if let Some(size) = measured.get(&layer.diff_id) {
                    return *size;
                }
                let size = self.layer_size(layer);
                measured.insert(layer.diff_id.clone(), size);
                size
            })
            .collect()
    }

    fn layer_size(&self, layer: &LayerRecord) -> u64 {
        if let Ok(Some(diff)) = self.catalog.diff(&layer.diff_id) {
            return diff.size;
        }
        let measured = self
            .blobs
            .open_verified(&layer.blob)
            .map_err(ImageError::from)
            .and_then(|blob| Ok(layer::measure(BufReader::with_capacity(1 << 20, blob))?));
        match measured {
            Ok(m) if m.diff_id == layer.diff_id => {
                let diff = DiffRecord {
                    size: m.content_size,
                };
                // A read-only store still lists; the size is measured again next time.
                if let Err(error) = self.catalog.put_diff(&layer.diff_id, diff) {
                    tracing::debug!(%error, "cannot record a layer size");
                }
                m.content_size
            }
            _ => layer.size,
        }
    }
}

/// What `commit` records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions<'a> {
    /// `-c` changes.
    pub changes: &'a [Change],
    /// `-m`.
    pub message: Option<&'a str>,
    /// `-a`.
    pub author: Option<&'a str>,
    /// The history line (Docker records the container's command).
    pub created_by: &'a str,
}

/// What `import` reads.
pub enum ImportSource<'a> {
    /// A tar stream (plain, gzip or zstd).
    Tar(&'a mut dyn Read),
    /// A directory tree.
    Dir(&'a Path),
}

impl std::fmt::Debug for ImportSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tar(_) => f.write_str("Tar(..)"),
            Self::Dir(path) => f.debug_tuple("Dir").field(path).finish(),
        }
    }
}

/// The current time as RFC 3339 UTC with seconds, the way image configs
/// write it.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days here.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut year = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    if month <= 2 {
        year += 1;
    }
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain one-file layer tar of `len` bytes of content, owned by us so
    /// that unpacking it needs no privilege.
    fn layer_tar(len: usize) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(len as u64);
        header.set_mode(0o644);
        header.set_uid(rustix::process::getuid().as_raw().into());
        header.set_gid(rustix::process::getgid().as_raw().into());
        header.set_mtime(0);
        builder
            .append_data(&mut header, "data", &vec![b'x'; len][..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    fn record_of(images: &Images, tar: &[u8]) -> ImageRecord {
        let blob = images.blobs.put_bytes(tar).unwrap();
        let id = images.blobs.put_bytes(b"{}").unwrap();
        ImageRecord {
            id,
            manifest: None,
            layers: vec![LayerRecord {
                blob,
                media_type: oci::MEDIA_OCI_LAYER.into(),
                size: tar.len() as u64,
                diff_id: Digest::of(tar),
            }],
            created: None,
            size: tar.len() as u64,
            repo_digests: BTreeSet::new(),
        }
    }

    #[test]
    fn layer_sizes_without_a_record_are_measured_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path()).unwrap();
        let tar = layer_tar(3000);
        let record = record_of(&images, &tar);
        assert!(
            images
                .catalog
                .diff(&record.layers[0].diff_id)
                .unwrap()
                .is_none()
        );
        assert_eq!(images.layer_sizes(&record), [3000]);
        assert_eq!(
            images.catalog.diff(&record.layers[0].diff_id).unwrap(),
            Some(DiffRecord { size: 3000 })
        );
        // Without its blob and its size, the blob size as recorded is all there is.
        images
            .catalog
            .remove_diff(&record.layers[0].diff_id)
            .unwrap();
        images.blobs.remove(&record.layers[0].blob).unwrap();
        assert_eq!(images.layer_sizes(&record), [tar.len() as u64]);
    }

    #[test]
    fn unpacking_records_the_layer_size() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path()).unwrap();
        let record = record_of(&images, &layer_tar(5000));
        images.catalog.put(&record).unwrap();
        let dirs = images.layers(&record.id).unwrap();
        assert_eq!(std::fs::read(dirs[0].join("data")).unwrap().len(), 5000);
        assert_eq!(
            images.catalog.diff(&record.layers[0].diff_id).unwrap(),
            Some(DiffRecord { size: 5000 })
        );
    }

    #[test]
    fn garbage_collection_sweeps_leftovers_and_unused_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let blob_temp = images.blobs.tmp_dir().join(format!("blob-{gone}-1-2"));
        std::fs::write(&blob_temp, b"half").unwrap();
        let layer_temp = dir.path().join(format!("layers/.tmp-abc-{gone}-1-2"));
        std::fs::create_dir_all(layer_temp.join("diff")).unwrap();
        let tags_temp = dir.path().join(format!("images/.tags.json-{gone}-1-2"));
        std::fs::write(&tags_temp, b"{").unwrap();
        let unused = Digest::of(b"no image has this layer");
        images
            .catalog
            .put_diff(&unused, DiffRecord { size: 1 })
            .unwrap();

        images.collect_garbage().unwrap();
        assert!(!blob_temp.exists() && !layer_temp.exists() && !tags_temp.exists());
        assert!(images.catalog.diffs().unwrap().is_empty());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_434_245), "2026-12-28T05:04:05Z");
    }
}
