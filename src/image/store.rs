//! The content-addressed blob store: `blobs/sha256/<hex>` under the state root.
//!
//! A blob is written to a temp file in the same file system, hashed while it
//! streams, fsynced, checked against the digest it should have, and only then
//! renamed into place — so a blob under its name is always complete and always
//! matches it. A process killed halfway leaves only a temp file, removed on the
//! next open or garbage collection once its writer is gone (see
//! [`leftovers`]). Two writers of the same blob race harmlessly: both renames
//! put the same bytes under the same name. Readers verify again while reading, so a
//! blob damaged on disk is never served.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::digest::{Digest, HashingReader, HashingWriter};
use super::leftovers::{self, temp_name};

/// Errors of the blob store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store's directories could not be created.
    #[error("cannot create the blob store at {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a blob failed.
    #[error("cannot write blob to {}", path.display())]
    Write {
        /// The temp file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The content does not match the digest it was announced with.
    #[error("digest mismatch: expected {expected}, content has {actual} ({size} bytes)")]
    Mismatch {
        /// What the blob should hash to.
        expected: Digest,
        /// What it hashes to.
        actual: Digest,
        /// Bytes received.
        size: u64,
    },
    /// The content is larger than allowed.
    #[error("blob is larger than the {limit} bytes allowed")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// Reading a blob failed.
    #[error("cannot read blob {digest}")]
    Read {
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Removing a blob failed.
    #[error("cannot remove blob {digest}")]
    Remove {
        /// The blob.
        digest: Digest,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `root`, and removes temp
    /// files that writers left behind when they were killed.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).map_err(|source| StoreError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        let store = Self { blobs, tmp };
        store.sweep_leftovers();
        Ok(store)
    }

    /// Removes the temp files of writers that are gone (killed halfway);
    /// returns how many. Those of running writers stay.
    pub fn sweep_leftovers(&self) -> usize {
        leftovers::sweep(&self.tmp, |_| true)
    }

    /// The directory for temp files, on the same file system as the blobs.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// True when the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(source) => Err(StoreError::Read {
                digest: digest.clone(),
                source,
            }),
        }
    }

    /// Streams `reader` into the store. With `expected`, content that does not
    /// hash to it is refused and nothing is stored. Returns the digest and size.
    pub fn put(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        limit: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(expected) = expected
            && self.contains(expected)
        {
            // Already stored (and verified when it was); drain nothing.
            return self.size(expected).map(|size| (expected.clone(), size));
        }
        let temp = self.tmp.join(temp_name("blob"));
        let guard = TempFile(temp.clone());
        let write_err = |source| StoreError::Write {
            path: temp.clone(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(write_err)?;
        let mut writer = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
        let mut limited = reader.take(limit.map_or(u64::MAX, |l| l.saturating_add(1)));
        io::copy(&mut limited, &mut writer).map_err(write_err)?;
        let (actual, size, buffered) = writer.finish();
        if let Some(limit) = limit
            && size > limit
        {
            return Err(StoreError::TooLarge { limit });
        }
        let file = buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(StoreError::Mismatch {
                expected: expected.clone(),
                actual,
                size,
            });
        }
        file.sync_all().map_err(write_err)?;
        drop(file);
        let dest = self.path(&actual);
        fs::rename(&temp, &dest).map_err(write_err)?;
        guard.keep();
        sync_dir(&self.blobs).map_err(write_err)?;
        Ok((actual, size))
    }

    /// Stores a small blob held in memory.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let expected = Digest::of(bytes);
        self.put(bytes, Some(&expected), None).map(|(d, _)| d)
    }

    /// Opens a blob for reading; the reader fails at the end if the content no
    /// longer matches its digest.
    pub fn open_verified(&self, digest: &Digest) -> Result<VerifiedReader, StoreError> {
        let file = File::open(self.path(digest)).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(digest.clone())
            } else {
                StoreError::Read {
                    digest: digest.clone(),
                    source,
                }
            }
        })?;
        Ok(VerifiedReader {
            inner: Some(HashingReader::new(BufReader::with_capacity(1 << 20, file))),
            expected: digest.clone(),
        })
    }

    /// Reads a whole (small) blob, verified.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.open_verified(digest)?
            .read_to_end(&mut out)
            .map_err(|source| StoreError::Read {
                digest: digest.clone(),
                source,
            })?;
        Ok(out)
    }

    /// Removes a blob; removing one that is not there is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), StoreError> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Remove {
                digest: digest.clone(),
                source,
            }),
        }
    }

    /// Every stored blob (names that are not digests are ignored).
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let entries = fs::read_dir(&self.blobs).map_err(|source| StoreError::Create {
            path: self.blobs.clone(),
            source,
        })?;
        let mut out: Vec<Digest> = entries
            .flatten()
            .filter_map(|e| Digest::from_hex(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Removes a temp file on drop unless it was kept (renamed into place).
struct TempFile(PathBuf);

impl TempFile {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically: temp file beside it, fsync, rename,
/// fsync of the directory. Readers see the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{}", temp_name(&name)));
    let guard = TempFile(temp.clone());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    guard.keep();
    sync_dir(dir)
}

/// A blob reader that checks the digest when it reaches the end.
#[derive(Debug)]
pub struct VerifiedReader {
    inner: Option<HashingReader<BufReader<File>>>,
    expected: Digest,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = inner.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(done) = self.inner.take()
        {
            let (actual, _) = done.finish();
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is corrupt on disk (content hashes to {actual})",
                        self.expected
                    ),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_stored_under_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.size(&digest).unwrap(), 5);
        assert_eq!(store.list().unwrap(), vec![digest.clone()]);
        store.remove(&digest).unwrap();
        assert!(!store.contains(&digest));
        store.remove(&digest).unwrap();
    }

    #[test]
    fn content_that_does_not_match_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let wrong = Digest::of(b"something else");
        let err = store.put(&b"hello"[..], Some(&wrong), None).unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "temp file removed"
        );
    }

    #[test]
    fn oversized_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let err = store.put(&[0u8; 100][..], None, Some(99)).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 99 }));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_blob_damaged_on_disk_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"precious").unwrap();
        fs::write(store.path(&digest), b"tampered").unwrap();
        let err = store.read(&digest).unwrap_err();
        assert!(err.to_string().contains("cannot read blob"), "{err}");
    }

    #[test]
    fn concurrent_writers_of_one_blob_end_with_one_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = vec![7u8; 4 << 20];
        let expected = Digest::of(&data);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| store.put(&data[..], Some(&expected), None).unwrap());
            }
        });
        assert_eq!(store.list().unwrap(), vec![expected.clone()]);
        assert_eq!(store.read(&expected).unwrap(), data);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn temp_files_of_writers_that_are_gone_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let dead = store.tmp_dir().join(format!("blob-{gone}-0-0"));
        let live = store.tmp_dir().join(temp_name("blob"));
        fs::write(&dead, b"half a blob").unwrap();
        fs::write(&live, b"a blob in flight").unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert!(!dead.exists(), "the killed writer's file is gone");
        assert!(live.exists(), "a running writer's file stays");
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
