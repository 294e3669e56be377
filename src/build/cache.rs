//! The build cache: which image a step made from a parent image. The key
//! is the parent image id, the instruction's canonical text after
//! expansion, the build args the step sees and, for COPY and ADD, the
//! content hash of exactly the files it reads (with `--chown`/`--chmod`
//! in the text); the value is the resulting image id. It is one JSON file
//! under the daemon's root, so it survives restarts; an entry whose image
//! was removed is ignored (and dropped on the next write).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::image::digest::Digest;

/// The parts of a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key<'a> {
    /// The image the step runs on (`None` for `FROM scratch`).
    pub parent: Option<&'a Digest>,
    /// The instruction after expansion, flags included.
    pub text: &'a str,
    /// `NAME=value` of the build args the step sees, sorted.
    pub args: &'a [String],
    /// Content hash of the files it reads (COPY, ADD).
    pub content: Option<&'a str>,
}

impl Key<'_> {
    /// The key as a hex sha256.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(
            self.parent
                .map(Digest::to_string)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update([0]);
        h.update(self.text.as_bytes());
        h.update([0]);
        for a in self.args {
            h.update(a.as_bytes());
            h.update([0]);
        }
        h.update([1]);
        h.update(self.content.unwrap_or("").as_bytes());
        hex::encode(h.finalize())
    }
}

/// The cache file.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, String>>,
}

impl Cache {
    /// Opens the cache at `path` (missing or unreadable: empty).
    pub fn open(path: &Path) -> Self {
        let entries = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
        }
    }

    /// The image recorded for `key` (a [`Key::hash`]), if `exists` says it is still there.
    pub fn get(&self, key: &str, exists: impl Fn(&Digest) -> bool) -> Option<Digest> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id: Digest = entries.get(key)?.parse().ok()?;
        exists(&id).then_some(id)
    }

    /// Records `key → id` and saves the file.
    pub fn put(&self, key: &str, id: &Digest) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(key.to_string(), id.to_string());
        if let Some(dir) = self.path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if let Ok(bytes) = serde_json::to_vec(&*entries) {
            let tmp = self.path.with_extension("tmp");
            if fs::write(&tmp, bytes).is_ok() {
                let _ = fs::rename(&tmp, &self.path);
            }
        }
    }

    /// Drops entries whose image `exists` no longer finds.
    pub fn prune(&self, exists: impl Fn(&Digest) -> bool) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|_, v| v.parse::<Digest>().is_ok_and(|d| exists(&d)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_exactly_where_docker_invalidates() {
        let p = Digest::of(b"parent");
        let q = Digest::of(b"other");
        let base = Key {
            parent: Some(&p),
            text: "RUN echo hi",
            args: &[],
            content: None,
        };
        let same = Key { ..base.clone() };
        assert_eq!(base.hash(), same.hash());
        assert_ne!(
            base.hash(),
            Key {
                parent: Some(&q),
                ..base.clone()
            }
            .hash()
        );
        assert_ne!(
            base.hash(),
            Key {
                text: "RUN echo ho",
                ..base.clone()
            }
            .hash()
        );
        let args = ["X=1".to_string()];
        assert_ne!(
            base.hash(),
            Key {
                args: &args,
                ..base.clone()
            }
            .hash()
        );
        assert_ne!(
            base.hash(),
            Key {
                content: Some("abc"),
                ..base.clone()
            }
            .hash()
        );
        assert_ne!(
            base.hash(),
            Key {
                parent: None,
                ..base.clone()
            }
            .hash()
        );
    }

    #[test]
    fn entries_survive_reopening_and_removed_images_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let p = Digest::of(b"parent");
        let id = Digest::of(b"result");
        let key = Key {
            parent: Some(&p),
            text: "RUN true",
            args: &[],
            content: None,
        };
        let key = key.hash();
        Cache::open(&path).put(&key, &id);
        let again = Cache::open(&path);
        assert_eq!(again.get(&key, |_| true), Some(id.clone()));
        assert_eq!(again.get(&key, |_| false), None);
    }
}
