//! `push`: a local image (by name) goes to a registry: layer blobs as stored,
//! then the config, then the manifest under the reference's tag.
//!
//! Blobs go up byte for byte as the store holds them, so digests never
//! change. The manifest is the one the image came with when it still describes
//! the record exactly (so a pulled image pushes to the same digest); otherwise
//! a new OCI manifest is written from the record. Layers already on the
//! registry are skipped, and layers the image was pulled with from another
//! repository of the same registry are mounted rather than uploaded.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use futures::stream;
use serde_json::Map;
use tracing::info;

use super::catalog::{Catalog, ImageRecord};
use super::digest::Digest;
use super::oci::{self, Descriptor, Manifest};
use super::reference::Reference;
use super::registry::{Operation, RegistryClient, RegistryError, UploadOutcome};
use super::store::BlobStore;

/// What a push reports as it goes. Every method has an empty default.
pub trait PushProgress: Send + Sync {
    /// A blob upload starts.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes were sent.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// A blob is on the registry, and how it got there.
    fn blob_done(&self, _digest: &Digest, _outcome: UploadOutcome) {}
    /// The push finished.
    fn done(&self, _result: &PushResult) {}
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPushProgress;

impl PushProgress for NoPushProgress {}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// Where the image went.
    pub reference: Reference,
    /// The image id.
    pub id: Digest,
    /// The manifest's digest on the registry.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// `repository@digest`.
    pub repo_digest: String,
    /// Blobs (layers and config) uploaded.
    pub uploaded: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the repository had.
    pub existing: usize,
}

/// Pushes the image that `reference` names in the catalog to the registry
/// and repository `reference` names.
pub async fn push(
    client: &RegistryClient,
    store: &BlobStore,
    catalog: &Catalog,
    reference: &Reference,
    progress: &dyn PushProgress,
) -> Result<PushResult, RegistryError> {
    let operation = Operation::new("push", reference);
    let catalog_err = |source| RegistryError::Catalog {
        operation: operation.clone(),
        source,
    };
    let id = catalog
        .resolve(&reference.to_string())
        .map_err(catalog_err)?;
    let mut record = catalog.get(&id).map_err(catalog_err)?;
    let local = |digest: &Digest| {
        let digest = digest.clone();
        let operation = &operation;
        move |source| RegistryError::LocalBlob {
            operation: operation.clone(),
            digest,
            source,
        }
    };
    let config_size = store.size(&record.id).map_err(local(&record.id))?;
    let (manifest_bytes, media_type) = match stored_manifest(store, &record) {
        Some(found) => found,
        None => new_manifest(&record, config_size, &operation)?,
    };

    let repository = client.repository(reference);
    let mount_from = mount_source(&record, reference);
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let mut seen = BTreeSet::new();
    for layer in &record.layers {
        if seen.insert(layer.blob.clone()) {
            blobs.push((layer.blob.clone(), layer.size));
        }
    }
    let mut counts = [0usize; 3];
    let mut uploads = stream::iter(blobs)
        .map(|(digest, size)| {
            let repository = &repository;
            let operation = &operation;
            let mount_from = mount_from.as_deref();
            async move {
                progress.blob_started(&digest, size);
                let advanced = |n: u64| progress.blob_advanced(&digest, n);
                let outcome = client
                    .upload_blob(repository, &digest, store, mount_from, operation, &advanced)
                    .await?;
                progress.blob_done(&digest, outcome);
                Ok::<UploadOutcome, RegistryError>(outcome)
            }
        })
        .buffer_unordered(client.options().parallel.max(1));
    while let Some(outcome) = uploads.next().await {
        counts[outcome_index(outcome?)] += 1;
    }
    drop(uploads);
    progress.blob_started(&record.id, config_size);
    let advanced = |n: u64| progress.blob_advanced(&record.id, n);
    let outcome = client
        .upload_blob(&repository, &record.id, store, None, &operation, &advanced)
        .await?;
    progress.blob_done(&record.id, outcome);
    counts[outcome_index(outcome)] += 1;

    let tag = reference
        .tag()
        .map(str::to_string)
        .unwrap_or_else(|| Digest::of(&manifest_bytes).to_string());
    if let Some(pinned) = reference.digest() {
        let actual = Digest::of(&manifest_bytes);
        if *pinned != actual {
            return Err(RegistryError::ManifestDigest {
                operation,
                expected: pinned.clone(),
                actual,
            });
        }
    }
    let digest = client
        .put_manifest(&repository, &tag, &media_type, &manifest_bytes, &operation)
        .await?;

    let manifest_digest =
        store
            .put_bytes(&manifest_bytes)
            .map_err(|source| RegistryError::Store {
                operation: operation.clone(),
                digest: digest.clone(),
                source,
            })?;
    let repo_digest = format!("{}@{digest}", reference.repository());
    record.manifest = Some(manifest_digest);
    record.repo_digests.insert(repo_digest.clone());
    catalog.put(&record).map_err(catalog_err)?;

    let result = PushResult {
        reference: reference.clone(),
        id: record.id,
        digest,
        size: manifest_bytes.len() as u64,
        repo_digest,
        uploaded: counts[0],
        mounted: counts[1],
        existing: counts[2],
    };
    info!(image = %reference, digest = %result.digest, "image pushed");
    progress.done(&result);
    Ok(result)
}

fn outcome_index(outcome: UploadOutcome) -> usize {
    match outcome {
        UploadOutcome::Uploaded => 0,
        UploadOutcome::Mounted => 1,
        UploadOutcome::Exists => 2,
    }
}

/// The manifest the image came with, when the store has it and it describes
/// exactly the record's config and layers: its bytes and media type.
fn stored_manifest(store: &BlobStore, record: &ImageRecord) -> Option<(Vec<u8>, String)> {
    let bytes = store.read(record.manifest.as_ref()?).ok()?;
    let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
    let same_layers = manifest.layers.len() == record.layers.len()
        && manifest
            .layers
            .iter()
            .zip(&record.layers)
            .all(|(d, l)| d.digest == l.blob && d.size == l.size);
    if manifest.config.digest != record.id || !same_layers {
        return None;
    }
    let media_type = match manifest.media_type.as_deref() {
        Some(t) if oci::is_manifest(t) => t.to_string(),
        Some(_) => return None,
        None if manifest.config.media_type == oci::MEDIA_DOCKER_CONFIG => {
            oci::MEDIA_DOCKER_MANIFEST.to_string()
        }
        None => oci::MEDIA_OCI_MANIFEST.to_string(),
    };
    Some((bytes, media_type))
}

/// An OCI manifest for the record. Docker layer media types become their OCI
/// equivalents (same bytes, OCI names), so the manifest is one format.
fn new_manifest(
    record: &ImageRecord,
    config_size: u64,
    operation: &Operation,
) -> Result<(Vec<u8>, String), RegistryError> {
    let layers = record
        .layers
        .iter()
        .map(|l| {
            let media_type = match l.media_type.as_str() {
                oci::MEDIA_DOCKER_LAYER_GZIP => oci::MEDIA_OCI_LAYER_GZIP,
                oci::MEDIA_DOCKER_LAYER => oci::MEDIA_OCI_LAYER,
                other => other,
            };
            Descriptor::new(media_type, l.blob.clone(), l.size)
        })
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_OCI_MANIFEST.to_string()),
        config: Descriptor::new(oci::MEDIA_OCI_CONFIG, record.id.clone(), config_size),
        layers,
        annotations: Default::default(),
        extra: Map::new(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| RegistryError::Parse {
        operation: operation.clone(),
        what: "manifest",
        source,
    })?;
    Ok((bytes, oci::MEDIA_OCI_MANIFEST.to_string()))
}

/// Another repository on the target's registry that this image was pulled
/// from or pushed to, whose blobs the registry can mount.
fn mount_source(record: &ImageRecord, target: &Reference) -> Option<String> {
    record.repo_digests.iter().find_map(|name| {
        let repository = name.split('@').next()?;
        let path = repository
            .strip_prefix(target.domain())?
            .strip_prefix('/')?;
        (path != target.path()).then(|| path.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::catalog::LayerRecord;

    fn record() -> ImageRecord {
        ImageRecord {
            id: Digest::of(b"config"),
            manifest: None,
            layers: vec![LayerRecord {
                blob: Digest::of(b"layer"),
                media_type: oci::MEDIA_DOCKER_LAYER_GZIP.into(),
                size: 5,
                diff_id: Digest::of(b"tar"),
            }],
            created: None,
            size: 5,
            repo_digests: BTreeSet::from([
                format!("localhost:5000/base@{}", Digest::of(b"m")),
                format!("other:5000/x@{}", Digest::of(b"m")),
            ]),
        }
    }

    #[test]
    fn mounts_come_from_other_repositories_of_the_same_registry() {
        let target: Reference = "localhost:5000/app:v1".parse().unwrap();
        assert_eq!(mount_source(&record(), &target).as_deref(), Some("base"));
        let same: Reference = "localhost:5000/base:v2".parse().unwrap();
        assert_eq!(mount_source(&record(), &same), None);
        let elsewhere: Reference = "ghcr.io/o/app".parse().unwrap();
        assert_eq!(mount_source(&record(), &elsewhere), None);
    }

    #[test]
    fn new_manifests_are_oci_with_oci_layer_types() {
        let op = Operation::new("push", "x");
        let (bytes, media_type) = new_manifest(&record(), 6, &op).unwrap();
        assert_eq!(media_type, oci::MEDIA_OCI_MANIFEST);
        let manifest: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(manifest.config.size, 6);
        assert_eq!(manifest.layers[0].media_type, oci::MEDIA_OCI_LAYER_GZIP);
    }

    #[test]
    fn stored_manifests_are_reused_only_when_they_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut rec = record();
        let op = Operation::new("push", "x");
        let (bytes, _) = new_manifest(&rec, 6, &op).unwrap();
        rec.manifest = Some(store.put_bytes(&bytes).unwrap());
        assert_eq!(stored_manifest(&store, &rec).unwrap().0, bytes);
        rec.layers[0].blob = Digest::of(b"other layer");
        assert!(stored_manifest(&store, &rec).is_none());
    }
}
