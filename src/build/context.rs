//! The build context: the directory a build reads COPY and ADD sources
//! from. It is walked once per build, honouring `.dockerignore`, and every
//! regular file's content is hashed (sha256). A metadata cache per context
//! (path, size, mtime, ctime, inode → hash, under the daemon's root) lets a
//! rebuild re-read only the files whose metadata changed; a file touched
//! with the same content hashes the same, so it is still a cache hit.
//!
//! Hostile contexts: nothing is followed while walking (symlinks are
//! entries of their own, copied as symlinks), and the walk refuses a
//! context with more than [`MAX_ENTRIES`] entries, a file larger than
//! [`MAX_FILE_SIZE`] or more than [`MAX_CONTEXT_SIZE`] bytes in all.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::BuildError;

/// Most entries a context may hold.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Largest regular file a context may hold (8 GiB).
pub const MAX_FILE_SIZE: u64 = 8 << 30;
/// Most bytes of regular files a context may hold (32 GiB).
pub const MAX_CONTEXT_SIZE: u64 = 32 << 30;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, with the sha256 of its content (hex).
    File {
        /// Content hash.
        hash: String,
    },
    /// A directory.
    Dir,
    /// A symlink and its target, as written.
    Symlink {
        /// The target.
        target: PathBuf,
    },
    /// Anything else (devices, FIFOs, sockets): never copied.
    Other,
}

/// One path of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
}

/// A walked and hashed context.
#[derive(Debug, Clone)]
pub struct Context {
    /// The directory.
    pub root: PathBuf,
    /// Paths relative to the root (no leading `/`), sorted; the root itself
    /// is not an entry.
    pub entries: BTreeMap<String, Entry>,
}

/// `.dockerignore` rules, as [`super::ignore::Matcher`] reads them
/// (moby's patternmatcher): none when the context has no ignore file.
#[derive(Debug, Clone, Default)]
pub struct Ignore(Option<super::ignore::Matcher>);

impl Ignore {
    /// Reads the lines of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, BuildError> {
        super::ignore::Matcher::from_file_text(text)
            .map(|m| Ignore(Some(m)))
            .map_err(|e| BuildError::Refused(format!("invalid .dockerignore: {e}")))
    }

    /// The ignore file of a build (`<Dockerfile>.dockerignore`, else the
    /// context's `.dockerignore`), read; none: nothing is excluded.
    pub fn for_build(context: &Path, dockerfile: &Path) -> Result<Self, BuildError> {
        match super::ignore::ignore_file_for(context, dockerfile) {
            Some(path) => {
                let text = fs::read_to_string(&path)
                    .map_err(|source| BuildError::Context { path, source })?;
                Ignore::parse(&text)
            }
            None => Ok(Ignore::default()),
        }
    }

    /// Whether `path` (relative, `/`-separated) is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.matches(path))
    }

    /// Whether the excluded directory `dir` must still be walked (an
    /// exception may re-include something below it).
    pub fn walk_excluded(&self, dir: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.may_include_below(dir))
    }
}

/// One file's entry in the metadata cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime: i128,
    ctime: i128,
    ino: u64,
    hash: String,
}

/// The metadata cache file of the context at `root`.
fn cache_file(cache_dir: &Path, root: &Path) -> PathBuf {
    let key = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
    cache_dir.join(format!("{key}.json"))
}

/// Walks and hashes the context at `root`, excluding what `ignore` says.
/// `cache_dir` holds the metadata caches.
pub fn scan(root: &Path, ignore: &Ignore, cache_dir: &Path) -> Result<Context, BuildError> {
    let meta = fs::metadata(root).map_err(|source| BuildError::Context {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(BuildError::Refused(format!(
            "the build context {} is not a directory",
            root.display()
        )));
    }
    fs::read_dir(root).map_err(|source| BuildError::Context {
        path: root.to_path_buf(),
        source,
    })?;
    let cache_path = cache_file(cache_dir, root);
    let old: BTreeMap<String, Cached> = fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut new = BTreeMap::new();
    let mut walk = Walk {
        root,
        ignore,
        old: &old,
        new: &mut new,
        entries: BTreeMap::new(),
        total: 0,
    };
    walk.dir(root, "")?;
    let entries = walk.entries;
    if new.len() != old.len()
        || new.iter().any(|(k, v)| {
            old.get(k)
                .is_none_or(|o| o.hash != v.hash || o.mtime != v.mtime || o.ctime != v.ctime)
        })
    {
        let _ = fs::create_dir_all(cache_dir);
        if let Ok(bytes) = serde_json::to_vec(&new) {
            let tmp = cache_path.with_extension("tmp");
            if fs::write(&tmp, bytes).is_ok() {
                let _ = fs::rename(&tmp, &cache_path);
            }
        }
    }
    Ok(Context {
        root: root.to_path_buf(),
        entries,
    })
}

struct Walk<'a> {
    root: &'a Path,
    ignore: &'a Ignore,
    old: &'a BTreeMap<String, Cached>,
    new: &'a mut BTreeMap<String, Cached>,
    entries: BTreeMap<String, Entry>,
    total: u64,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &str) -> Result<(), BuildError> {
        let read = fs::read_dir(dir).map_err(|source| BuildError::Context {
            path: dir.to_path_buf(),
            source,
        })?;
        for item in read {
            let item = item.map_err(|source| BuildError::Context {
                path: dir.to_path_buf(),
                source,
            })?;
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(BuildError::Refused(format!(
                    "a file name in the build context is not UTF-8: {}",
                    item.path().display()
                )));
            };
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let full = item.path();
            let excluded = self.ignore.excluded(&path);
            let meta = fs::symlink_metadata(&full).map_err(|source| BuildError::Context {
                path: full.clone(),
                source,
            })?;
            if excluded && !(meta.is_dir() && self.ignore.walk_excluded(&path)) {
                continue;
            }
            if self.entries.len() >= MAX_ENTRIES {
                return Err(BuildError::Refused(format!(
                    "the build context {} has more than {MAX_ENTRIES} entries",
                    self.root.display()
                )));
            }
            let mode = meta.mode() & 0o7777;
            let kind = if meta.is_dir() {
                let before = self.entries.len();
                self.dir(&full, &path)?;
                if excluded && self.entries.len() == before {
                    continue;
                }
                Kind::Dir
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&full).map_err(|source| BuildError::Context {
                    path: full.clone(),
                    source,
                })?;
                Kind::Symlink { target }
            } else if meta.is_file() {
                if meta.len() > MAX_FILE_SIZE {
                    return Err(BuildError::Refused(format!(
                        "{} in the build context is larger than the limit of {} bytes",
                        path, MAX_FILE_SIZE
                    )));
                }
                self.total += meta.len();
                if self.total > MAX_CONTEXT_SIZE {
                    return Err(BuildError::Refused(format!(
                        "the build context {} holds more than the limit of {} bytes",
                        self.root.display(),
                        MAX_CONTEXT_SIZE
                    )));
                }
                let mtime =
                    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                let ctime =
                    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
                let hash = match self.old.get(&path) {
                    Some(c)
                        if c.size == meta.len()
                            && c.mtime == mtime
                            && c.ctime == ctime
                            && c.ino == meta.ino() =>
                    {
                        c.hash.clone()
                    }
                    _ => hash_file(&full)?,
                };
                self.new.insert(
                    path.clone(),
                    Cached {
                        size: meta.len(),
                        mtime,
                        ctime,
                        ino: meta.ino(),
                        hash: hash.clone(),
                    },
                );
                Kind::File { hash }
            } else {
                Kind::Other
            };
            self.entries.insert(
                path,
                Entry {
                    kind,
                    mode,
                    size: meta.len(),
                },
            );
        }
        Ok(())
    }
}

fn hash_file(path: &Path) -> Result<String, BuildError> {
    let mut file = fs::File::open(path).map_err(|source| BuildError::Context {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|source| BuildError::Context {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A hash of a build's inputs on disk: the Dockerfile (`dockerfile`
/// relative to `context`, `Dockerfile` by default) and the context as its
/// `.dockerignore` leaves it. Every file is read (no metadata cache): what
/// a stack's input hash holds.
pub fn build_digest(context: &Path, dockerfile: Option<&Path>) -> Result<String, BuildError> {
    let ignore = Ignore::for_build(context, dockerfile.unwrap_or(Path::new("Dockerfile")))?;
    let scratch = tempfile::tempdir().map_err(|source| BuildError::Context {
        path: std::env::temp_dir(),
        source,
    })?;
    let ctx = scan(context, &ignore, scratch.path())?;
    let file = context.join(dockerfile.unwrap_or(Path::new("Dockerfile")));
    let text = fs::read(&file).map_err(|source| BuildError::Context { path: file, source })?;
    Ok(format!(
        "{}:{}",
        ctx.digest(),
        hex::encode(Sha256::digest(&text))
    ))
}

impl Context {
    /// A hash of exactly the entries `paths` name and everything below
    /// those that are directories: names, modes, content hashes and
    /// symlink targets (not times or owners, as Docker's cache).
    pub fn hash_paths(&self, paths: &[String]) -> String {
        let mut hasher = Sha256::new();
        for path in paths {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            if path.is_empty() {
                for (name, entry) in &self.entries {
                    hash_entry(&mut hasher, name, entry);
                }
                continue;
            }
            if let Some(entry) = self.entries.get(path) {
                hash_entry(&mut hasher, path, entry);
                if entry.kind == Kind::Dir {
                    let prefix = format!("{path}/");
                    for (name, entry) in self.entries.range(prefix.clone()..) {
                        if !name.starts_with(&prefix) {
                            break;
                        }
                        hash_entry(&mut hasher, name, entry);
                    }
                }
            }
        }
        hex::encode(hasher.finalize())
    }

    /// A hash of the whole context (what a stack's input hash holds).
    pub fn digest(&self) -> String {
        self.hash_paths(&[String::new()])
    }
}

fn hash_entry(hasher: &mut Sha256, name: &str, entry: &Entry) {
    hasher.update(name.as_bytes());
    hasher.update(format!("\0{:o}\0", entry.mode).as_bytes());
    match &entry.kind {
        Kind::File { hash } => hasher.update(hash.as_bytes()),
        Kind::Dir => hasher.update(b"dir"),
        Kind::Symlink { target } => {
            hasher.update(b"link");
            hasher.update(target.as_os_str().as_encoded_bytes());
        }
        Kind::Other => hasher.update(b"other"),
    }
    hasher.update([0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_rules_follow_docker() {
        let i = Ignore::parse("# c\n*.log\n/build\n!build/keep\n**/tmp\ndocs/[a-c]*\n").unwrap();
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("d/a.log"));
        assert!(i.excluded("build/x"));
        assert!(!i.excluded("build/keep"));
        assert!(i.excluded("x/y/tmp"));
        assert!(i.excluded("tmp/z"));
        assert!(i.excluded("docs/b.md"));
        assert!(!i.excluded("docs/d.md"));
        assert!(i.walk_excluded("build"));
    }

    #[test]
    fn touched_files_keep_their_hash_and_changed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        fs::write(ctx.join("a"), "one").unwrap();
        fs::create_dir(ctx.join("d")).unwrap();
        fs::write(ctx.join("d/b"), "two").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.join("l")).unwrap();
        let first = scan(ctx, &Ignore::default(), cache.path()).unwrap();
        assert!(matches!(first.entries["l"].kind, Kind::Symlink { .. }));
        let h_a = first.hash_paths(&["a".into()]);
        let h_d = first.hash_paths(&["d".into()]);
        // Touch with the same content: same hashes.
        fs::write(ctx.join("a"), "one").unwrap();
        let again = scan(ctx, &Ignore::default(), cache.path()).unwrap();
        assert_eq!(again.hash_paths(&["a".into()]), h_a);
        fs::write(ctx.join("d/b"), "three").unwrap();
        let changed = scan(ctx, &Ignore::default(), cache.path()).unwrap();
        assert_eq!(changed.hash_paths(&["a".into()]), h_a);
        assert_ne!(changed.hash_paths(&["d".into()]), h_d);
    }
}
