//! `pull`: a reference on a registry becomes blobs in the store, unpacked
//! layers, an image record and a tag in the catalog.
//!
//! Order matters for what a failure leaves behind: the manifest (and index)
//! and the config are fetched into memory and verified first, the layers then
//! stream into the store in parallel, each verified against its digest and,
//! as soon as it is in, unpacked into its snapshot (checked against the
//! config's diff id), and only when every layer is in and unpacked are the
//! config and manifests stored and the record and tag written. A failed or
//! killed pull therefore leaves no record, no tag and no config; layers that
//! did arrive intact stay, blobs and unpacked snapshots alike (they are valid
//! content, and a retry needs them), as Docker keeps them. What a killed pull
//! was still writing is only ever in temp files and directories, which the
//! next open of the store removes.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use futures::stream;
use tracing::{debug, info};

use super::catalog::{Catalog, DiffRecord, ImageRecord, LayerRecord};
use super::digest::Digest;
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform};
use super::reference::Reference;
use super::registry::{FetchedManifest, Operation, RegistryClient, RegistryError, Repository};
use super::snapshot::{Snapshots, chain_ids};
use super::store::BlobStore;

/// Configs are read into memory; a manifest announcing a bigger one is
/// refused before anything is downloaded.
const MAX_CONFIG_SIZE: u64 = 32 << 20;

/// What a pull reports as it goes, for the CLI's progress display. Every
/// method has an empty default.
pub trait PullProgress: Send + Sync {
    /// The manifest was resolved: the image has these layers.
    fn resolved(&self, _manifest: &Digest, _layers: &[Descriptor]) {}
    /// A layer download starts; `size` is its announced size.
    fn layer_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes of a layer arrived.
    fn layer_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// A layer is downloaded and verified.
    fn layer_done(&self, _digest: &Digest) {}
    /// A layer is unpacked (only when the pull unpacks).
    fn layer_unpacked(&self, _digest: &Digest) {}
    /// A layer was already in the store.
    fn layer_exists(&self, _digest: &Digest) {}
    /// The pull finished.
    fn done(&self, _result: &PullResult) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl PullProgress for NoProgress {}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// The reference pulled.
    pub reference: Reference,
    /// The image id (config digest).
    pub id: Digest,
    /// The digest of the manifest the reference resolved to (the index's,
    /// for multi-platform images), as `docker pull` prints it.
    pub digest: Digest,
    /// The platform manifest's digest.
    pub manifest: Digest,
    /// `repository@digest`.
    pub repo_digest: String,
    /// Layers downloaded.
    pub downloaded: usize,
    /// Layers that were in the store already.
    pub existing: usize,
}

/// Pulls `reference` for `platform` (the host's when `None`) into `store` and
/// `catalog`, and with `snapshots` unpacks its layers there (as `docker pull`
/// does), recording their sizes. Tags the reference unless it pins a digest.
pub async fn pull(
    client: &RegistryClient,
    store: &BlobStore,
    catalog: &Catalog,
    snapshots: Option<&Snapshots>,
    reference: &Reference,
    platform: Option<&Platform>,
    progress: &dyn PullProgress,
) -> Result<PullResult, RegistryError> {
    let operation = Operation::new("pull", reference);
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let tag_or_digest = reference
        .digest()
        .map(ToString::to_string)
        .or_else(|| reference.tag().map(str::to_string))
        .unwrap_or_else(|| "latest".to_string());

    let (repository, top) = fetch_top(client, reference, &tag_or_digest, &operation).await?;
    let mut to_store: Vec<Vec<u8>> = Vec::new();
    let fetched = if oci::is_index(&top.media_type) {
        let index: Index = parse(&top.bytes, &operation, "index")?;
        let chosen = index
            .select(&wanted)
            .ok_or_else(|| RegistryError::Platform {
                operation: operation.clone(),
                wanted: wanted.to_string(),
                available: available_platforms(&index),
            })?
            .clone();
        debug!(platform = %wanted, manifest = %chosen.digest, "selected platform manifest");
        let manifest = client
            .fetch_manifest(
                &repository,
                &chosen.digest.to_string(),
                Some(&chosen.digest),
                &operation,
            )
            .await?;
        to_store.push(top.bytes.clone());
        manifest
    } else if oci::is_manifest(&top.media_type) {
        top.clone()
    } else {
        return Err(RegistryError::MediaType {
            operation,
            media_type: top.media_type,
        });
    };
    if !oci::is_manifest(&fetched.media_type) {
        return Err(RegistryError::MediaType {
            operation,
            media_type: fetched.media_type,
        });
    }
    let manifest: Manifest = parse(&fetched.bytes, &operation, "manifest")?;
    if let Some(foreign) = manifest
        .layers
        .iter()
        .find(|l| l.media_type == oci::MEDIA_DOCKER_FOREIGN)
    {
        return Err(RegistryError::MediaType {
            operation,
            media_type: foreign.media_type.clone(),
        });
    }
    progress.resolved(&fetched.digest, &manifest.layers);

    if manifest.config.size > MAX_CONFIG_SIZE {
        return Err(RegistryError::TooLarge {
            operation,
            digest: manifest.config.digest,
            limit: MAX_CONFIG_SIZE,
        });
    }
    let config_bytes = client
        .fetch_blob(&repository, &manifest.config, &operation)
        .await?;
    let config: ImageConfig = parse(&config_bytes, &operation, "image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::LayerCount {
            operation,
            diff_ids: config.rootfs.diff_ids.len(),
            layers: manifest.layers.len(),
        });
    }

    let layers: Vec<LayerRecord> = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| LayerRecord {
            blob: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            diff_id: diff_id.clone(),
        })
        .collect();
    let fetch = Fetch {
        client,
        store,
        catalog,
        snapshots,
        repository: &repository,
        operation: &operation,
        progress,
    };
    let (downloaded, existing) = fetch.layers(&manifest.layers, &layers).await?;

    to_store.push(fetched.bytes.clone());
    to_store.push(config_bytes);
    for bytes in &to_store {
        store
            .put_bytes(bytes)
            .map_err(|source| RegistryError::Store {
                operation: operation.clone(),
                digest: Digest::of(bytes),
                source,
            })?;
    }

    let id = manifest.config.digest.clone();
    let repo_digest = format!("{}@{}", reference.repository(), top.digest);
    let record = ImageRecord {
        id: id.clone(),
        manifest: Some(fetched.digest.clone()),
        size: manifest.layers.iter().map(|l| l.size).sum(),
        layers,
        created: config.created.clone(),
        repo_digests: BTreeSet::from([repo_digest.clone()]),
    };
    let catalog_err = |source| RegistryError::Catalog {
        operation: operation.clone(),
        source,
    };
    catalog.put(&record).map_err(catalog_err)?;
    if reference.digest().is_none() {
        catalog.tag(reference, &id).map_err(catalog_err)?;
    }
    let result = PullResult {
        reference: reference.clone(),
        id,
        digest: top.digest,
        manifest: fetched.digest,
        repo_digest,
        downloaded,
        existing,
    };
    info!(image = %reference, id = %result.id, digest = %result.digest, "image pulled");
    progress.done(&result);
    Ok(result)
}

/// The manifest or index the reference names, from the first endpoint that
/// has it (mirrors before Docker Hub).
async fn fetch_top(
    client: &RegistryClient,
    reference: &Reference,
    tag_or_digest: &str,
    operation: &Operation,
) -> Result<(Repository, FetchedManifest), RegistryError> {
    let mut last = None;
    for repository in client.pull_repositories(reference) {
        match client
            .fetch_manifest(&repository, tag_or_digest, reference.digest(), operation)
            .await
        {
            Ok(fetched) => return Ok((repository, fetched)),
            // A digest mismatch is an attack or a bug, not a reason to ask
            // elsewhere quietly.
            Err(e @ RegistryError::ManifestDigest { .. }) => return Err(e),
            Err(e) => {
                debug!(error = %e, "endpoint failed, trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(RegistryError::Protocol {
        operation: operation.clone(),
        what: "no registry endpoint to pull from",
    }))
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    operation: &Operation,
    what: &'static str,
) -> Result<T, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::Parse {
        operation: operation.clone(),
        what,
        source,
    })
}

fn available_platforms(index: &Index) -> Vec<String> {
    let mut out: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        // Attestation manifests are listed as unknown/unknown by BuildKit.
        .filter(|p| p.os != "unknown")
        .map(ToString::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Where the layers of one pull go, and whom to tell.
struct Fetch<'a> {
    client: &'a RegistryClient,
    store: &'a BlobStore,
    catalog: &'a Catalog,
    snapshots: Option<&'a Snapshots>,
    repository: &'a Repository,
    operation: &'a Operation,
    progress: &'a dyn PullProgress,
}

/// One blob of a pull and the layers made of it (nearly always one; an image
/// may repeat a layer, whose chain ids then differ).
struct BlobJob {
    descriptor: Descriptor,
    stored: bool,
    layers: Vec<(LayerRecord, Digest)>,
}

impl Fetch<'_> {
    /// Downloads the layers not yet stored, at most
    /// [`RegistryOptions::parallel`](super::registry::RegistryOptions::parallel)
    /// blobs at once, and unpacks each as soon as it is in; returns how many
    /// blobs were downloaded and how many were there.
    async fn layers(
        &self,
        descriptors: &[Descriptor],
        layers: &[LayerRecord],
    ) -> Result<(usize, usize), RegistryError> {
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let mut jobs: Vec<BlobJob> = Vec::new();
        for ((descriptor, layer), chain) in descriptors.iter().zip(layers).zip(chains) {
            match jobs
                .iter_mut()
                .find(|j| j.descriptor.digest == descriptor.digest)
            {
                Some(job) => job.layers.push((layer.clone(), chain)),
                None => jobs.push(BlobJob {
                    descriptor: descriptor.clone(),
                    stored: self.store.contains(&descriptor.digest),
                    layers: vec![(layer.clone(), chain)],
                }),
            }
        }
        let existing = jobs.iter().filter(|j| j.stored).count();
        let downloaded = jobs.len() - existing;
        for job in jobs.iter().filter(|j| j.stored) {
            self.progress.layer_exists(&job.descriptor.digest);
        }
        // Concurrency in one task: the futures borrow `self`, and the hashing,
        // writing and unpacking already run on blocking threads.
        let mut transfers = stream::iter(jobs)
            .map(|job| self.blob(job))
            .buffer_unordered(self.client.options().parallel.max(1));
        while let Some(result) = transfers.next().await {
            result?;
        }
        Ok((downloaded, existing))
    }

    async fn blob(&self, job: BlobJob) -> Result<(), RegistryError> {
        let digest = &job.descriptor.digest;
        if !job.stored {
            self.progress.layer_started(digest, job.descriptor.size);
            let advanced = |n: u64| self.progress.layer_advanced(digest, n);
            self.client
                .download_blob(
                    self.repository,
                    &job.descriptor,
                    self.store,
                    self.operation,
                    &advanced,
                )
                .await?;
            self.progress.layer_done(digest);
        }
        let Some(snapshots) = self.snapshots else {
            return Ok(());
        };
        let mut unpacked = !job.stored;
        for (layer, chain) in job.layers {
            if snapshots.contains(&chain) {
                continue;
            }
            let diff_id = layer.diff_id.clone();
            let (snapshots, store, blob) =
                (snapshots.clone(), self.store.clone(), layer.blob.clone());
            let stats =
                tokio::task::spawn_blocking(move || snapshots.unpack(&store, &layer, &chain))
                    .await
                    .map_err(|source| RegistryError::Task {
                        operation: self.operation.clone(),
                        source,
                    })?
                    .map_err(|source| RegistryError::Unpack {
                        operation: self.operation.clone(),
                        blob,
                        source: Box::new(source),
                    })?;
            if let Some(stats) = stats {
                let diff = DiffRecord {
                    size: stats.content_size,
                };
                self.catalog
                    .put_diff(&diff_id, diff)
                    .map_err(|source| RegistryError::Catalog {
                        operation: self.operation.clone(),
                        source,
                    })?;
            }
            unpacked = true;
        }
        if unpacked {
            self.progress.layer_unpacked(digest);
        }
        Ok(())
    }
}

/// Pulls every tag of `repository` (a reference whose tag is ignored).
pub async fn pull_all_tags(
    client: &RegistryClient,
    store: &BlobStore,
    catalog: &Catalog,
    snapshots: Option<&Snapshots>,
    repository: &Reference,
    platform: Option<&Platform>,
    progress: &dyn PullProgress,
) -> Result<Vec<PullResult>, RegistryError> {
    let mut tags = client.list_tags(repository).await?;
    tags.sort();
    let mut out = Vec::with_capacity(tags.len());
    for tag in tags {
        let reference = repository
            .with_tag(&tag)
            .map_err(|_| RegistryError::Protocol {
                operation: Operation::new("pull", repository.repository()),
                what: "the registry listed an invalid tag",
            })?;
        out.push(
            pull(
                client, store, catalog, snapshots, &reference, platform, progress,
            )
            .await?,
        );
    }
    Ok(out)
}
