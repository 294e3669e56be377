//! Blob transfers: downloads that stream straight into the blob store and
//! resume after a broken connection, and uploads (exists check, cross-repository
//! mount, one `PUT` or `PATCH` chunks).
//!
//! A download feeds the bytes through a channel to a blocking task running
//! [`BlobStore::put`] with the expected digest and size, so the digest is
//! computed once, over the whole blob, however many requests it took: after a
//! break we ask for `Range: bytes=<received>-` and pass on only what follows.
//! A registry that ignores the range and sends the whole blob again (200) has
//! its first bytes skipped instead. Content that does not hash to the digest is
//! refused by the store, which then keeps nothing.

use std::io::{self, Read};

use bytes::{Buf as _, Bytes};
use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header;
use tokio::sync::mpsc;
use tracing::warn;

use super::{
    MAX_ATTEMPTS, Operation, RegistryClient, RegistryError, Repository, backoff, pull_scope,
    push_scope, read_limited, resolve,
};
use crate::chunks::ChunkReader;
use crate::image::digest::Digest;
use crate::image::oci::Descriptor;
use crate::image::store::{BlobStore, StoreError};

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// The repository had the blob already.
    Exists,
    /// The registry linked it from another repository.
    Mounted,
    /// The bytes were sent.
    Uploaded,
}

pub(super) async fn download(
    client: &RegistryClient,
    repository: &Repository,
    descriptor: &Descriptor,
    store: &BlobStore,
    operation: &Operation,
    advanced: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), RegistryError> {
    if store.contains(&descriptor.digest) {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let writer = {
        let store = store.clone();
        let digest = descriptor.digest.clone();
        let size = descriptor.size;
        tokio::task::spawn_blocking(move || {
            store.put(ChunkReader::new(rx), Some(&digest), Some(size))
        })
    };
    let fed = feed(client, repository, descriptor, operation, advanced, &tx).await;
    if fed.is_err() {
        // Make the store fail (and drop its temp file) rather than see an
        // early end of the stream as a complete blob.
        let _ = tx.send(Err(io::Error::other("download failed"))).await;
    }
    drop(tx);
    let stored = writer.await.map_err(|source| RegistryError::Task {
        operation: operation.clone(),
        source,
    })?;
    fed?;
    match stored {
        Ok(_) => Ok(()),
        Err(StoreError::Mismatch { actual, .. }) => Err(RegistryError::BlobDigest {
            operation: operation.clone(),
            digest: descriptor.digest.clone(),
            actual,
        }),
        Err(StoreError::TooLarge { limit }) => Err(RegistryError::TooLarge {
            operation: operation.clone(),
            digest: descriptor.digest.clone(),
            limit,
        }),
        Err(source) => Err(RegistryError::Store {
            operation: operation.clone(),
            digest: descriptor.digest.clone(),
            source,
        }),
    }
}

/// Sends the blob's bytes to `tx`, resuming after breaks. Returns early (Ok)
/// when the store stops reading: it has the blob already, or refused it.
async fn feed(
    client: &RegistryClient,
    repository: &Repository,
    descriptor: &Descriptor,
    operation: &Operation,
    advanced: &(dyn Fn(u64) + Send + Sync),
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<(), RegistryError> {
    let url = repository.url(&format!("blobs/{}", descriptor.digest));
    let scopes = [pull_scope(&repository.path)];
    let mut offset: u64 = 0;
    let mut breaks = 0;
    loop {
        let from = offset;
        let response = client
            .send(&repository.endpoint, &scopes, operation, true, &|c| {
                let request = c.get(&url);
                if from > 0 {
                    request.header(header::RANGE, format!("bytes={from}-"))
                } else {
                    request
                }
            })
            .await?;
        let mut skip = match response.status() {
            StatusCode::OK => offset,
            StatusCode::PARTIAL_CONTENT if from > 0 => {
                let start = response
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(from) {
                    return Err(RegistryError::Protocol {
                        operation: operation.clone(),
                        what: "the registry resumed a blob at another offset than asked",
                    });
                }
                0
            }
            _ => {
                return Err(client
                    .status_error(&repository.endpoint, operation, response)
                    .await);
            }
        };
        let mut stream = response.bytes_stream();
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            let mut bytes = match chunk {
                Ok(bytes) => bytes,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(bytes.len());
                bytes.advance(n);
                skip -= n as u64;
            }
            if bytes.is_empty() {
                continue;
            }
            let len = bytes.len() as u64;
            offset += len;
            if offset > descriptor.size {
                return Err(RegistryError::TooLarge {
                    operation: operation.clone(),
                    digest: descriptor.digest.clone(),
                    limit: descriptor.size,
                });
            }
            advanced(len);
            if tx.send(Ok(bytes)).await.is_err() {
                return Ok(());
            }
        }
        if offset == descriptor.size {
            return Ok(());
        }
        breaks += 1;
        if breaks >= MAX_ATTEMPTS {
            return Err(match broken {
                Some(source) => RegistryError::Connect {
                    operation: operation.clone(),
                    registry: repository.endpoint.base.clone(),
                    source,
                },
                None => RegistryError::Protocol {
                    operation: operation.clone(),
                    what: "the blob kept ending before its announced size",
                },
            });
        }
        warn!(digest = %descriptor.digest, offset, size = descriptor.size, "blob transfer broke, resuming");
        tokio::time::sleep(backoff(breaks, None)).await;
    }
}

/// The first byte of `bytes <start>-<end>/<size>`.
fn range_start(header: &str) -> Option<u64> {
    header
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

pub(super) async fn fetch_small(
    client: &RegistryClient,
    repository: &Repository,
    descriptor: &Descriptor,
    operation: &Operation,
) -> Result<Vec<u8>, RegistryError> {
    let url = repository.url(&format!("blobs/{}", descriptor.digest));
    let scopes = [pull_scope(&repository.path)];
    let response = client
        .send(&repository.endpoint, &scopes, operation, true, &|c| {
            c.get(&url)
        })
        .await?;
    if !response.status().is_success() {
        return Err(client
            .status_error(&repository.endpoint, operation, response)
            .await);
    }
    let bytes = read_limited(
        response,
        descriptor.size,
        operation,
        &repository.endpoint.base,
    )
    .await
    .map_err(|e| match e {
        RegistryError::Protocol { .. } => RegistryError::TooLarge {
            operation: operation.clone(),
            digest: descriptor.digest.clone(),
            limit: descriptor.size,
        },
        other => other,
    })?;
    let actual = Digest::of(&bytes);
    if actual != descriptor.digest {
        return Err(RegistryError::BlobDigest {
            operation: operation.clone(),
            digest: descriptor.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

pub(super) async fn exists(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
    operation: &Operation,
) -> Result<bool, RegistryError> {
    let url = repository.url(&format!("blobs/{digest}"));
    let scopes = [push_scope(&repository.path)];
    let response = client
        .send(&repository.endpoint, &scopes, operation, true, &|c| {
            c.head(&url)
        })
        .await?;
    match response.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(client
            .status_error(&repository.endpoint, operation, response)
            .await),
    }
}

fn local_err(operation: &Operation, digest: &Digest, source: StoreError) -> RegistryError {
    RegistryError::LocalBlob {
        operation: operation.clone(),
        digest: digest.clone(),
        source,
    }
}

pub(super) async fn upload(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
    store: &BlobStore,
    mount_from: Option<&str>,
    operation: &Operation,
    advanced: &(dyn Fn(u64) + Send + Sync),
) -> Result<UploadOutcome, RegistryError> {
    if exists(client, repository, digest, operation).await? {
        return Ok(UploadOutcome::Exists);
    }
    let size = store
        .size(digest)
        .map_err(|e| local_err(operation, digest, e))?;
    let mount = mount_from.filter(|from| *from != repository.path);
    let mut scopes = vec![push_scope(&repository.path)];
    scopes.extend(mount.map(pull_scope));
    let start_url = repository.url("blobs/uploads/");
    let digest_text = digest.to_string();
    let response = client
        .send(&repository.endpoint, &scopes, operation, true, &|c| {
            let request = c.post(&start_url).header(header::CONTENT_LENGTH, 0);
            match mount {
                Some(from) => request.query(&[("mount", digest_text.as_str()), ("from", from)]),
                None => request,
            }
        })
        .await?;
    match response.status() {
        StatusCode::CREATED if mount.is_some() => {
            advanced(size);
            return Ok(UploadOutcome::Mounted);
        }
        StatusCode::ACCEPTED => {}
        _ => {
            return Err(client
                .status_error(&repository.endpoint, operation, response)
                .await);
        }
    }
    let mut location = location_of(&response, &repository.endpoint.base, operation)?;
    if size > client.options.chunk_size {
        location = upload_chunks(
            client, repository, digest, store, location, operation, advanced,
        )
        .await?;
    } else {
        let bytes = {
            let store = store.clone();
            let owned = digest.clone();
            tokio::task::spawn_blocking(move || store.read(&owned))
                .await
                .map_err(|source| RegistryError::Task {
                    operation: operation.clone(),
                    source,
                })?
                .map_err(|e| local_err(operation, digest, e))?
        };
        let body = Bytes::from(bytes);
        let url = with_digest(&location, digest, operation)?;
        let response = client
            .send(&repository.endpoint, &scopes, operation, true, &|c| {
                c.put(&url)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(client
                .status_error(&repository.endpoint, operation, response)
                .await);
        }
        advanced(size);
        return Ok(UploadOutcome::Uploaded);
    }
    let url = with_digest(&location, digest, operation)?;
    let response = client
        .send(&repository.endpoint, &scopes, operation, false, &|c| {
            c.put(&url).header(header::CONTENT_LENGTH, 0)
        })
        .await?;
    if response.status() != StatusCode::CREATED {
        return Err(client
            .status_error(&repository.endpoint, operation, response)
            .await);
    }
    Ok(UploadOutcome::Uploaded)
}

/// Sends the blob in `PATCH` requests of `chunk_size` bytes with
/// `Content-Range`, following the `Location` each answer gives; returns the
/// last location, where the closing `PUT` goes.
async fn upload_chunks(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
    store: &BlobStore,
    mut location: String,
    operation: &Operation,
    advanced: &(dyn Fn(u64) + Send + Sync),
) -> Result<String, RegistryError> {
    let chunk_size = usize::try_from(client.options.chunk_size)
        .unwrap_or(usize::MAX)
        .max(1);
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, StoreError>>(2);
    let reader = {
        let store = store.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = match store.open_verified(&digest) {
                Ok(file) => file,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut chunk = Vec::with_capacity(chunk_size);
                match (&mut file).take(chunk_size as u64).read_to_end(&mut chunk) {
                    Ok(0) => return,
                    Ok(_) => {
                        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                            return;
                        }
                    }
                    Err(source) => {
                        let _ = tx.blocking_send(Err(StoreError::Read {
                            digest: digest.clone(),
                            source,
                        }));
                        return;
                    }
                }
            }
        })
    };
    let scopes = [push_scope(&repository.path)];
    let mut start: u64 = 0;
    let result = async {
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.map_err(|e| local_err(operation, digest, e))?;
            let len = chunk.len() as u64;
            let range = format!("{start}-{}", start + len - 1);
            let url = location.clone();
            let response = client
                .send(&repository.endpoint, &scopes, operation, false, &|c| {
                    c.patch(&url)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_RANGE, &range)
                        .header(header::CONTENT_LENGTH, len)
                        .body(chunk.clone())
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(client
                    .status_error(&repository.endpoint, operation, response)
                    .await);
            }
            location = location_of(&response, &repository.endpoint.base, operation)?;
            start += len;
            advanced(len);
        }
        Ok(())
    }
    .await;
    drop(rx);
    reader.await.map_err(|source| RegistryError::Task {
        operation: operation.clone(),
        source,
    })?;
    result.map(|()| location)
}

fn location_of(
    response: &reqwest::Response,
    base: &str,
    operation: &Operation,
) -> Result<String, RegistryError> {
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(RegistryError::Protocol {
            operation: operation.clone(),
            what: "the registry sent no upload location",
        })?;
    resolve(base, location, operation)
}

/// The upload URL with `digest=<digest>` added to its query (which may carry
/// the registry's upload state already).
fn with_digest(
    location: &str,
    digest: &Digest,
    operation: &Operation,
) -> Result<String, RegistryError> {
    let mut url = reqwest::Url::parse(location).map_err(|_| RegistryError::Protocol {
        operation: operation.clone(),
        what: "the registry sent an invalid location",
    })?;
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_give_their_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
    }

    #[test]
    fn digests_are_added_to_upload_urls_with_state() {
        let op = Operation::new("push", "x");
        let digest = Digest::of(b"x");
        let url = with_digest(
            "http://h:5000/v2/a/blobs/uploads/u?_state=abc",
            &digest,
            &op,
        )
        .unwrap();
        assert_eq!(
            url,
            format!(
                "http://h:5000/v2/a/blobs/uploads/u?_state=abc&digest=sha256%3A{}",
                digest.hex()
            )
        );
    }
}
