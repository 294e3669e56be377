//! Image archives: `stack save` and `stack load` in Docker's archive format
//! (`manifest.json` + config + `layer.tar`s, what `docker save` writes) and as
//! an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`).
//!
//! Loading streams the tar once: every file goes straight into the blob store
//! under its content digest (the archive's own names are only trusted after
//! they are checked against that digest), and the metadata is read at the end,
//! so archives whose `manifest.json` comes last load from a pipe too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use super::catalog::{Catalog, CatalogError, ImageRecord, LayerRecord};
use super::digest::{Digest, HashingWriter};
use super::layer::{Compression, decompress, sniff};
use super::oci::{
    self, Descriptor, ImageConfig, Index, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST, Manifest, Platform,
};
use super::reference::Reference;
use super::store::{BlobStore, StoreError};

/// Largest metadata file (`manifest.json`, `index.json`…) read into memory.
const METADATA_LIMIT: u64 = 16 << 20;
/// Largest single blob accepted from an archive.
const BLOB_LIMIT: u64 = 64 << 30;

/// OCI annotation naming an image in a layout (often just the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker's) annotation with the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

/// Errors of archive loading and saving.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// The archive stream could not be read.
    #[error("cannot read the image archive")]
    Read(#[source] io::Error),
    /// The archive could not be written.
    #[error("cannot write the image archive")]
    Write(#[source] io::Error),
    /// An entry name escapes the archive or is not valid.
    #[error("invalid entry {0:?} in the image archive")]
    BadEntry(String),
    /// The archive is neither a Docker archive nor an OCI layout.
    #[error("not an image archive: no manifest.json or index.json")]
    UnknownFormat,
    /// A metadata file does not parse.
    #[error("invalid {file} in the image archive")]
    Metadata {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A file the metadata names is missing.
    #[error("the image archive names {0}, which it does not contain")]
    Missing(String),
    /// A blob's content does not match the digest it is named or described by.
    #[error(
        "{what} in the image archive does not match its digest: expected {expected}, content has {actual}"
    )]
    Mismatch {
        /// Which file.
        what: String,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// The layers and the config's diff ids disagree.
    #[error("image {id}: {reason}")]
    Inconsistent {
        /// The image.
        id: Digest,
        /// What is wrong.
        reason: String,
    },
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The format `save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format: `manifest.json`, `<id>.json`, `<layer>/layer.tar`.
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// What `load` brought in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The image id.
    pub id: Digest,
    /// The names it was tagged with.
    pub tags: Vec<Reference>,
}

/// What a file of the archive became.
#[derive(Debug, Clone)]
enum Stored {
    /// A blob in the store.
    Blob(Digest),
    /// Kept in memory (metadata).
    Bytes(Vec<u8>),
    /// A link to another entry.
    Link(String),
}

/// Normalizes an entry name: no `.`, no `..`, no leading `/`.
fn entry_name(path: &Path) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::BadEntry(path.display().to_string()));
            }
        }
    }
    Ok(parts.join("/"))
}

fn is_metadata(name: &str) -> bool {
    matches!(
        name,
        "manifest.json" | "index.json" | "oci-layout" | "repositories"
    )
}

/// The content digest a name like `blobs/sha256/<hex>` or `<hex>.json` claims.
fn claimed_digest(name: &str) -> Option<Digest> {
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    name.strip_suffix(".json")
        .filter(|n| !n.contains('/'))
        .and_then(|hex| Digest::from_hex(hex).ok())
}

/// Loads every image of a Docker or OCI archive into the store.
pub fn load(
    reader: impl Read,
    store: &BlobStore,
    catalog: &Catalog,
) -> Result<Vec<Loaded>, ArchiveError> {
    let files = read_entries(reader, store)?;
    let resolve = |name: &str| -> Result<Digest, ArchiveError> {
        let mut name = name.trim_start_matches("./").to_string();
        for _ in 0..16 {
            match files.get(&name) {
                Some(Stored::Blob(d)) => return Ok(d.clone()),
                Some(Stored::Link(target)) => name = target.clone(),
                Some(Stored::Bytes(_)) | None => break,
            }
        }
        Err(ArchiveError::Missing(name))
    };
    let metadata = |name: &str| match files.get(name) {
        Some(Stored::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    };

    if let Some(manifest) = metadata("manifest.json") {
        load_docker(manifest, &resolve, store, catalog)
    } else if let Some(index) = metadata("index.json") {
        load_oci(index, &resolve, store, catalog)
    } else {
        Err(ArchiveError::UnknownFormat)
    }
}

fn read_entries(
    reader: impl Read,
    store: &BlobStore,
) -> Result<BTreeMap<String, Stored>, ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let path = entry.path().map_err(ArchiveError::Read)?.into_owned();
        let name = entry_name(&path)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || name.is_empty() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(ArchiveError::Read)?
                .ok_or_else(|| ArchiveError::BadEntry(name.clone()))?
                .into_owned();
            // Symlinks are relative to the entry's directory, hard links to the root.
            let joined = if kind.is_symlink() && !target.is_absolute() {
                Path::new(&name)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(&target)
            } else {
                target
            };
            let resolved = normalize_lexically(&joined)
                .ok_or_else(|| ArchiveError::BadEntry(format!("{name} -> {}", joined.display())))?;
            files.insert(name, Stored::Link(resolved));
            continue;
        }
        if !kind.is_file() {
            return Err(ArchiveError::BadEntry(name));
        }
        if is_metadata(&name) {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(METADATA_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(ArchiveError::Read)?;
            if bytes.len() as u64 > METADATA_LIMIT {
                return Err(ArchiveError::BadEntry(format!("{name} is too large")));
            }
            files.insert(name, Stored::Bytes(bytes));
            continue;
        }
        let expected = claimed_digest(&name);
        let digest = match store.put(&mut entry, expected.as_ref(), Some(BLOB_LIMIT)) {
            Ok((digest, _)) => digest,
            Err(StoreError::Mismatch {
                expected, actual, ..
            }) => {
                return Err(ArchiveError::Mismatch {
                    what: name,
                    expected,
                    actual,
                });
            }
            Err(e) => return Err(e.into()),
        };
        files.insert(name, Stored::Blob(digest));
    }
    Ok(files)
}

/// Resolves `.` and `..` without touching the file system; `None` if the path
/// climbs above the root.
fn normalize_lexically(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Metadata {
        file: file.to_string(),
        source,
    })
}

fn load_docker(
    manifest: &[u8],
    resolve: &dyn Fn(&str) -> Result<Digest, ArchiveError>,
    store: &BlobStore,
    catalog: &Catalog,
) -> Result<Vec<Loaded>, ArchiveError> {
    let entries: Vec<DockerManifestEntry> = parse("manifest.json", manifest)?;
    let mut out = Vec::new();
    for entry in entries {
        let config = resolve(&entry.config)?;
        let layers = entry
            .layers
            .iter()
            .map(|l| resolve(l))
            .collect::<Result<Vec<_>, _>>()?;
        let descriptors = layers
            .into_iter()
            .map(|blob| {
                let size = store.size(&blob)?;
                Ok(Descriptor::new(
                    &layer_media_type(store, &blob)?,
                    blob,
                    size,
                ))
            })
            .collect::<Result<Vec<_>, ArchiveError>>()?;
        let tags = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.parse::<Reference>().ok())
            .collect();
        out.push(register(store, catalog, &config, descriptors, None, tags)?);
    }
    Ok(out)
}

/// The media type of a layer blob, from its first bytes.
fn layer_media_type(store: &BlobStore, blob: &Digest) -> Result<String, ArchiveError> {
    let mut head = [0u8; 8];
    let mut reader = store.open_verified(blob)?;
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]).map_err(ArchiveError::Read)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(match sniff(&head[..n]) {
        Compression::Gzip => MEDIA_OCI_LAYER_GZIP,
        Compression::Zstd => MEDIA_OCI_LAYER_ZSTD,
        Compression::None => MEDIA_OCI_LAYER,
    }
    .to_string())
}

fn load_oci(
    index: &[u8],
    resolve: &dyn Fn(&str) -> Result<Digest, ArchiveError>,
    store: &BlobStore,
    catalog: &Catalog,
) -> Result<Vec<Loaded>, ArchiveError> {
    let index: Index = parse("index.json", index)?;
    let mut out = Vec::new();
    let platform = Platform::host();
    for descriptor in &index.manifests {
        let name = descriptor
            .annotations
            .get(ANNOTATION_IMAGE_NAME)
            .or_else(|| descriptor.annotations.get(ANNOTATION_REF_NAME))
            .filter(|n| n.contains([':', '/']))
            .and_then(|n| n.parse::<Reference>().ok());
        let blob = |d: &Digest| resolve(&format!("blobs/sha256/{}", d.hex()));
        let mut manifest_descriptor = descriptor.clone();
        if oci::is_index(&descriptor.media_type) {
            let nested: Index = parse("a nested index", &store.read(&blob(&descriptor.digest)?)?)?;
            manifest_descriptor = nested
                .select(&platform)
                .or_else(|| {
                    nested
                        .manifests
                        .iter()
                        .find(|d| oci::is_manifest(&d.media_type))
                })
                .cloned()
                .ok_or_else(|| ArchiveError::Missing(format!("a manifest for {platform}")))?;
        }
        let manifest_digest = blob(&manifest_descriptor.digest)?;
        let manifest: Manifest = parse("a manifest", &store.read(&manifest_digest)?)?;
        let config = blob(&manifest.config.digest)?;
        for layer in &manifest.layers {
            blob(&layer.digest)?;
        }
        out.push(register(
            store,
            catalog,
            &config,
            manifest.layers.clone(),
            Some(manifest_digest),
            name.into_iter().collect(),
        )?);
    }
    Ok(out)
}

/// Checks an image's config against its layers and records it.
fn register(
    store: &BlobStore,
    catalog: &Catalog,
    config_digest: &Digest,
    layers: Vec<Descriptor>,
    manifest: Option<Digest>,
    tags: Vec<Reference>,
) -> Result<Loaded, ArchiveError> {
    let config: ImageConfig = parse("an image config", &store.read(config_digest)?)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != layers.len() {
        return Err(ArchiveError::Inconsistent {
            id: config_digest.clone(),
            reason: format!(
                "the config lists {} layers but the archive has {}",
                diff_ids.len(),
                layers.len()
            ),
        });
    }
    let mut records = Vec::with_capacity(layers.len());
    for (layer, diff_id) in layers.into_iter().zip(diff_ids) {
        if layer.media_type == MEDIA_OCI_LAYER || layer.media_type == oci::MEDIA_DOCKER_LAYER {
            // An uncompressed layer is its own diff: its digest must be the diff id.
            if layer.digest != *diff_id {
                return Err(ArchiveError::Mismatch {
                    what: format!("layer {}", layer.digest),
                    expected: diff_id.clone(),
                    actual: layer.digest,
                });
            }
        }
        records.push(LayerRecord {
            size: store.size(&layer.digest)?,
            blob: layer.digest,
            media_type: layer.media_type,
            diff_id: diff_id.clone(),
        });
    }
    let record = ImageRecord {
        id: config_digest.clone(),
        manifest,
        size: records.iter().map(|l| l.size).sum(),
        layers: records,
        created: config.created.clone(),
        repo_digests: BTreeSet::new(),
    };
    catalog.put(&record)?;
    for tag in &tags {
        catalog.tag(tag, &record.id)?;
    }
    Ok(Loaded {
        id: record.id,
        tags,
    })
}

/// Writes `images` (id and the names to save it under) as an archive.
pub fn save(
    images: &[(Digest, Vec<Reference>)],
    store: &BlobStore,
    catalog: &Catalog,
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(out);
    match format {
        ArchiveFormat::Docker => save_docker(images, store, catalog, &mut builder)?,
        ArchiveFormat::Oci => save_oci(images, store, catalog, &mut builder)?,
    }
    builder
        .into_inner()
        .map_err(ArchiveError::Write)?
        .flush()
        .map_err(ArchiveError::Write)
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = header(bytes.len() as u64);
    b.append_data(&mut h, name, bytes)
        .map_err(ArchiveError::Write)
}

fn append_blob<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    store: &BlobStore,
    digest: &Digest,
) -> Result<(), ArchiveError> {
    let size = store.size(digest)?;
    let mut h = header(size);
    let reader = store.open_verified(digest)?;
    b.append_data(&mut h, name, reader)
        .map_err(ArchiveError::Write)
}

fn save_docker<W: Write>(
    images: &[(Digest, Vec<Reference>)],
    store: &BlobStore,
    catalog: &Catalog,
    b: &mut tar::Builder<W>,
) -> Result<(), ArchiveError> {
    let mut manifest = Vec::new();
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (id, names) in images {
        let record = catalog.get(id)?;
        let config_name = format!("{}.json", id.hex());
        if written.insert(id.clone()) {
            append_blob(b, &config_name, store, id)?;
        }
        let mut layer_names = Vec::new();
        for layer in &record.layers {
            let dir = layer.diff_id.hex().to_string();
            let name = format!("{dir}/layer.tar");
            if written.insert(layer.diff_id.clone()) {
                write_uncompressed_layer(b, &name, store, layer)?;
                append_bytes(b, &format!("{dir}/VERSION"), b"1.0")?;
            }
            layer_names.push(name);
        }
        let tags: Vec<String> = names.iter().map(Reference::familiar).collect();
        if let Some(top) = record.layers.last() {
            for name in names {
                if let Some(tag) = name.tag() {
                    repositories
                        .entry(name.familiar_repository())
                        .or_default()
                        .insert(tag.to_string(), top.diff_id.hex().to_string());
                }
            }
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": if tags.is_empty() { serde_json::Value::Null } else { tags.into() },
            "Layers": layer_names,
        }));
    }
    append_bytes(b, "manifest.json", &json_bytes("manifest.json", &manifest)?)?;
    if !repositories.is_empty() {
        append_bytes(
            b,
            "repositories",
            &json_bytes("repositories", &repositories)?,
        )?;
    }
    Ok(())
}

fn json_bytes<T: serde::Serialize>(file: &str, value: &T) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(value).map_err(|source| ArchiveError::Metadata {
        file: file.to_string(),
        source,
    })
}

/// Docker archives hold uncompressed layers; the tar's digest is checked
/// against the diff id while it is written.
fn write_uncompressed_layer<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    store: &BlobStore,
    layer: &LayerRecord,
) -> Result<(), ArchiveError> {
    // The uncompressed size is needed for the header, so decompress to a temp
    // file first (checking the diff id on the way), then copy it in.
    let temp = tempfile_in(store.tmp_dir())?;
    let mut hashing = HashingWriter::new(io::BufWriter::new(&temp.file));
    let mut reader = decompress(io::BufReader::new(store.open_verified(&layer.blob)?))
        .map_err(ArchiveError::Read)?;
    io::copy(&mut reader, &mut hashing).map_err(ArchiveError::Read)?;
    let (actual, size, writer) = hashing.finish();
    writer
        .into_inner()
        .map_err(|e| ArchiveError::Write(e.into_error()))?;
    if actual != layer.diff_id {
        return Err(ArchiveError::Mismatch {
            what: format!("layer {}", layer.blob),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    let mut h = header(size);
    let file = std::fs::File::open(&temp.path).map_err(ArchiveError::Read)?;
    b.append_data(&mut h, name, file)
        .map_err(ArchiveError::Write)
}

/// A temp file removed on drop.
struct TempPath {
    path: PathBuf,
    file: std::fs::File,
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_in(dir: &Path) -> Result<TempPath, ArchiveError> {
    for attempt in 0..100u32 {
        let path = dir.join(format!("save-{}-{attempt}-{}", std::process::id(), nanos()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok(TempPath { path, file }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ArchiveError::Write(e)),
        }
    }
    Err(ArchiveError::Write(io::Error::other(
        "no free temp file name",
    )))
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn save_oci<W: Write>(
    images: &[(Digest, Vec<Reference>)],
    store: &BlobStore,
    catalog: &Catalog,
    b: &mut tar::Builder<W>,
) -> Result<(), ArchiveError> {
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.to_string()),
        manifests: Vec::new(),
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let mut put = |b: &mut tar::Builder<W>, digest: &Digest| -> Result<(), ArchiveError> {
        if written.insert(digest.clone()) {
            append_blob(b, &format!("blobs/sha256/{}", digest.hex()), store, digest)?;
        }
        Ok(())
    };
    for (id, names) in images {
        let record = catalog.get(id)?;
        let manifest = manifest_for(&record, store)?;
        put(b, id)?;
        for layer in &record.layers {
            put(b, &layer.blob)?;
        }
        put(b, &manifest.digest)?;
        let entries: Vec<Option<&Reference>> = if names.is_empty() {
            vec![None]
        } else {
            names.iter().map(Some).collect()
        };
        for name in entries {
            let mut d = manifest.clone();
            if let Some(name) = name {
                d.annotations
                    .insert(ANNOTATION_IMAGE_NAME.to_string(), name.to_string());
                if let Some(tag) = name.tag() {
                    d.annotations
                        .insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
                }
            }
            index.manifests.push(d);
        }
    }
    append_bytes(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_bytes(b, "index.json", &json_bytes("index.json", &index)?)
}

/// The manifest of an image as stored, or a new OCI manifest when the image
/// has none (loaded from a Docker archive, imported, committed). The manifest
/// blob is put into the store.
pub fn manifest_for(record: &ImageRecord, store: &BlobStore) -> Result<Descriptor, ArchiveError> {
    if let Some(digest) = &record.manifest
        && let Ok(bytes) = store.read(digest)
        && let Ok(m) = serde_json::from_slice::<Manifest>(&bytes)
    {
        let media_type = m
            .media_type
            .clone()
            .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string());
        return Ok(Descriptor::new(
            &media_type,
            digest.clone(),
            bytes.len() as u64,
        ));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
        config: Descriptor::new(MEDIA_OCI_CONFIG, record.id.clone(), store.size(&record.id)?),
        layers: record
            .layers
            .iter()
            .map(|l| Descriptor::new(&oci_layer_type(&l.media_type), l.blob.clone(), l.size))
            .collect(),
        annotations: BTreeMap::new(),
        extra: serde_json::Map::new(),
    };
    let bytes = json_bytes("manifest", &manifest)?;
    let digest = store.put_bytes(&bytes)?;
    Ok(Descriptor::new(
        MEDIA_OCI_MANIFEST,
        digest,
        bytes.len() as u64,
    ))
}

/// The OCI media type of a layer of any (Docker or OCI) media type.
fn oci_layer_type(media_type: &str) -> String {
    match media_type {
        oci::MEDIA_DOCKER_LAYER_GZIP => MEDIA_OCI_LAYER_GZIP,
        oci::MEDIA_DOCKER_LAYER => MEDIA_OCI_LAYER,
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_never_climb_out() {
        assert_eq!(entry_name(Path::new("./a/b")).unwrap(), "a/b");
        assert!(entry_name(Path::new("../a")).is_err());
        assert!(entry_name(Path::new("/etc/passwd")).is_err());
        assert_eq!(
            normalize_lexically(Path::new("a/../blobs/x")).as_deref(),
            Some("blobs/x")
        );
        assert_eq!(normalize_lexically(Path::new("../x")), None);
    }

    #[test]
    fn blob_names_claim_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            claimed_digest(&format!("blobs/sha256/{hex}"))
                .unwrap()
                .hex(),
            hex
        );
        assert_eq!(claimed_digest(&format!("{hex}.json")).unwrap().hex(), hex);
        assert!(claimed_digest("manifest.json").is_none());
        assert!(claimed_digest(&format!("x/{hex}.json")).is_none());
    }
}
