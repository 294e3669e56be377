//! `pull`: a reference on a registry becomes blobs in the store, an image
//! record and a tag in the catalog.
//!
//! Order matters for what a failure leaves behind: the manifest (and index)
//! and the config are fetched into memory and verified first, the layers then
//! stream into the store in parallel, each verified against its digest, and
//! only when every layer is in are the config and manifests stored and the
//! record and tag written. A failed pull therefore leaves no record, no tag
//! and no config; layers that did arrive intact stay (they are valid content,
//! and a retry needs them), as Docker keeps them.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use futures::stream;
use tracing::{debug, info};

use super::catalog::{Catalog, ImageRecord, LayerRecord};
use super::digest::Digest;
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform};
use super::reference::Reference;
use super::registry::{FetchedManifest, Operation, RegistryClient, RegistryError, Repository};
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
/// `catalog`. Tags the reference unless it pins a digest.
pub async fn pull(
    client: &RegistryClient,
    store: &BlobStore,
    catalog: &Catalog,
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

    let (downloaded, existing) = download_layers(
        client,
        store,
        &repository,
        &manifest.layers,
        &operation,
        progress,
    )
    .await?;

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
        layers: manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| LayerRecord {
                blob: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
                diff_id: diff_id.clone(),
            })
            .collect(),
        created: config.created.clone(),
        size: manifest.layers.iter().map(|l| l.size).sum(),
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

/// Downloads the layers not yet stored, at most
/// [`RegistryOptions::parallel`](super::registry::RegistryOptions::parallel)
/// at once; returns how many were downloaded and how many were there.
async fn download_layers(
    client: &RegistryClient,
    store: &BlobStore,
    repository: &Repository,
    layers: &[Descriptor],
    operation: &Operation,
    progress: &dyn PullProgress,
) -> Result<(usize, usize), RegistryError> {
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    let mut existing = 0;
    for layer in layers {
        if !seen.insert(layer.digest.clone()) {
            continue;
        }
        if store.contains(&layer.digest) {
            existing += 1;
            progress.layer_exists(&layer.digest);
        } else {
            missing.push(layer);
        }
    }
    let downloaded = missing.len();
    // Concurrency in one task: the futures borrow `progress`, and the hashing
    // and writing already run on blocking threads, one per blob.
    // Owned descriptors: a closure over borrowed ones is not general enough
    // for the future to be spawned (rust-lang/rust#102211).
    let mut transfers = stream::iter(missing.into_iter().cloned())
        .map(|layer: Descriptor| async move {
            progress.layer_started(&layer.digest, layer.size);
            let advanced = |n: u64| progress.layer_advanced(&layer.digest, n);
            client
                .download_blob(repository, &layer, store, operation, &advanced)
                .await?;
            progress.layer_done(&layer.digest);
            Ok::<(), RegistryError>(())
        })
        .buffer_unordered(client.options().parallel.max(1));
    while let Some(result) = transfers.next().await {
        result?;
    }
    Ok((downloaded, existing))
}

/// Pulls every tag of `repository` (a reference whose tag is ignored).
pub async fn pull_all_tags(
    client: &RegistryClient,
    store: &BlobStore,
    catalog: &Catalog,
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
        out.push(pull(client, store, catalog, &reference, platform, progress).await?);
    }
    Ok(out)
}
