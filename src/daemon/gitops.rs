//! The watch directory (`stack daemon --watch-dir DIR`, GitOps style):
//! every stack in DIR is kept converged. Adding a file brings its stack up,
//! editing it applies it, deleting it takes the stack down after a grace
//! period (a checkout that deletes and re-creates keeps it running).
//!
//! Which entries of DIR are stacks ([`scan`]):
//! - names starting with `.` are never stacks (`.git`, editors' and
//!   git's temp files, Kubernetes' `..data` and `..2026_…` directories);
//! - a file (or a symlink to one) ending in `.kdl`, `.toml`, `.yml` or
//!   `.yaml` is a stack; its project directory is DIR (so `DIR/.env`
//!   interpolates every such file);
//! - a directory (or a symlink to one) holding a stack file
//!   ([`crate::spec::load::DISCOVERY_ORDER`]) is a stack whose project
//!   directory it is, with its own `.env` and env files;
//! - anything else is ignored.
//!
//! A stack's name is its file's `name`, else the file's stem (or the
//! directory's name), normalized as `stack up` normalizes a directory's
//! name. Two entries with one name: the one that had it keeps it (between
//! new ones, the first in name order), the other is refused and shown in
//! `stack ls` with an error naming both. Interpolation reads the project's
//! `.env` and not the daemon's environment: the directory is the whole
//! truth.
//!
//! This module only decides which stacks the directory declares; it
//! registers them with [`super::stacks::Registry`], whose per-stack loop
//! applies them and follows their files, and takes down (with
//! [`super::stacks::Registry::down`]) the ones whose entry went. The names
//! it registered are kept in `<root>/watch-dir.json`, so a daemon that was
//! down while a file was deleted takes its stack down after the grace.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Daemon;
use super::events::Event;
use super::stacks::{Registry, StackSource, StackStatus};

/// The watch directory when `--watch-dir` is not given (used when it
/// exists, for the daemon of the default state root).
pub const DEFAULT_DIR: &str = "/etc/stack/stacks.d";
/// How long a stack outlives its deleted file by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How often the directory is listed without any event (a missed event, a
/// watch directory swapped whole).
const RESYNC: Duration = Duration::from_secs(5);
/// Quiet time after a change in the directory before it is looked at.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What `--watch-dir`, `--watch-grace` and `--keep-on-delete` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// The directory (absolute).
    pub dir: PathBuf,
    /// How long a stack whose file left the directory keeps running.
    pub grace: Duration,
    /// Never take a stack down because its file left.
    pub keep_on_delete: bool,
}

impl WatchConfig {
    /// The watch directory for a daemon on `root`: `flag` when given (an
    /// empty one turns watching off), else [`DEFAULT_DIR`] when it exists
    /// and `root` is the default root (a daemon on another root, a test's
    /// or an experiment's, must not run the host's stacks a second time).
    pub fn choose(
        flag: Option<&Path>,
        root: &Path,
        grace: Duration,
        keep_on_delete: bool,
    ) -> std::io::Result<Option<WatchConfig>> {
        let dir = match flag {
            Some(p) if p.as_os_str().is_empty() => return Ok(None),
            Some(p) => std::path::absolute(p)?,
            None => {
                let default = Path::new(DEFAULT_DIR);
                if root != Path::new("/var/lib/stack") || !default.is_dir() {
                    return Ok(None);
                }
                default.to_path_buf()
            }
        };
        Ok(Some(WatchConfig {
            dir,
            grace,
            keep_on_delete,
        }))
    }
}

/// One stack of the watch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEntry {
    /// `DIR/NAME`: the stack file, or the project directory.
    pub path: PathBuf,
    /// The stack file found in a project directory (`None` for a file).
    pub discovered: Option<PathBuf>,
}

impl WatchEntry {
    /// The project directory: the watch directory for a file, else the
    /// entry itself.
    pub fn project_dir(&self) -> PathBuf {
        match &self.discovered {
            Some(_) => self.path.clone(),
            None => self
                .path
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
        }
    }

    /// The stack file.
    pub fn stack_file(&self) -> &Path {
        self.discovered.as_deref().unwrap_or(&self.path)
    }

    /// The name of a stack whose file declares none: the file's stem or
    /// the directory's name, normalized like `stack up`'s.
    pub fn default_name(&self) -> String {
        let base = match &self.discovered {
            Some(_) => self.path.file_name(),
            None => self.path.file_stem(),
        };
        let base = base.map(Path::new).unwrap_or(Path::new(""));
        crate::cli::stacks::stack_name(None, base)
    }

    /// The stack's name: `declared` (the file's `name`) or the default.
    pub fn name(&self, declared: Option<&str>) -> String {
        declared.map_or_else(|| self.default_name(), str::to_string)
    }

    /// What the stack loop loads: a file alone, or a directory's discovered
    /// file (looked for again at each load, so swapping `stack.kdl` for a
    /// `compose.yaml` works).
    pub fn source(&self, name: &str) -> StackSource {
        StackSource {
            name: name.to_string(),
            project_dir: self.project_dir(),
            files: match &self.discovered {
                Some(_) => Vec::new(),
                None => vec![self.path.clone()],
            },
            ..StackSource::default()
        }
    }

    /// Loads the stack as its loop will; its declared name, or the
    /// rendered problems (file, line and column).
    fn load(&self) -> Result<Option<String>, String> {
        let source = self.source("");
        crate::spec::load::load(&crate::spec::load::LoadOptions {
            files: source.files,
            project_dir: source.project_dir,
            env_files: Vec::new(),
            environment: Some(Vec::new()),
        })
        .map_err(|e| crate::spec::diag::render(&e, false))
        .and_then(|loaded| {
            super::stacks::refuse_empty(&loaded.files)?;
            Ok(loaded.spec.name)
        })
    }

    /// What the stack is made of, to tell a change: where its symlinks
    /// point and the bytes of its file and `.env`.
    fn fingerprint(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        let project = self.project_dir();
        std::fs::canonicalize(&project).ok().hash(&mut h);
        std::fs::canonicalize(self.stack_file()).ok().hash(&mut h);
        std::fs::read(self.stack_file()).ok().hash(&mut h);
        std::fs::read(project.join(".env")).ok().hash(&mut h);
        h.finish()
    }
}

/// Whether a file named `name` in the watch directory is a stack file by
/// its name: not hidden, and ending in `.kdl`, `.toml`, `.yml` or `.yaml`.
pub fn is_stack_file_name(name: &str) -> bool {
    !name.starts_with('.') && crate::spec::load::Format::of(Path::new(name)).is_some()
}

/// The stacks in `dir`, in name order (see the module's rules). A missing
/// directory has none.
pub fn scan(dir: &Path) -> std::io::Result<Vec<WatchEntry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Symlinks are followed (a dangling one is nothing).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && is_stack_file_name(name) {
            entries.push(WatchEntry {
                path,
                discovered: None,
            });
        } else if meta.is_dir()
            && let Ok(file) = crate::spec::load::discover(&path)
        {
            entries.push(WatchEntry {
                path,
                discovered: Some(file),
            });
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// A stack the watch directory declared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    /// Its entry.
    path: PathBuf,
    /// Whether the entry is there (and declares it) now.
    present: bool,
    /// When it goes down, its entry being gone.
    down_at: Option<SystemTime>,
}

/// What the API sees of the watch directory.
#[derive(Debug, Default)]
struct Shared {
    /// The directory, while it is watched.
    dir: Option<PathBuf>,
    /// The stacks it declared, by name.
    owned: BTreeMap<String, Owned>,
    /// Entries that are no running stack: invalid before their first
    /// good version, or refused.
    rows: Vec<StackStatus>,
}

/// The watch directory's side of the stacks: which ones it declares (so
/// `stack down` and `stack up` leave them alone), and its entries that
/// cannot run, for `stack ls`.
#[derive(Debug, Default)]
pub struct GitOps {
    shared: Mutex<Shared>,
}

impl GitOps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds what the watch directory knows to a registered stack's status:
    /// its entry and when it goes down.
    pub fn decorate(&self, status: &mut StackStatus) {
        let shared = self.lock();
        if let Some(owned) = shared.owned.get(&status.name) {
            status.watch_path = Some(owned.path.clone());
            status.down_at = owned.down_at.map(rfc3339);
        }
    }

    /// Entries of the watch directory that run no stack: invalid ones
    /// that never loaded, and refused ones.
    pub fn rows(&self) -> Vec<StackStatus> {
        self.lock().rows.clone()
    }

    /// The row of `name`, when it runs no stack.
    pub fn row(&self, name: &str) -> Option<StackStatus> {
        self.lock().rows.iter().find(|r| r.name == name).cloned()
    }

    /// Refuses `stack down NAME` while the watch directory declares it:
    /// it would come back at once. Once its file is gone (during the grace
    /// period, or kept by `--keep-on-delete`), `down` takes it down now.
    pub fn check_down(&self, name: &str) -> Result<(), String> {
        match self.lock().owned.get(name) {
            Some(owned) if owned.present => Err(format!(
                "stack {name} comes from the watch directory ({}): it would come back at once; \
                 remove that file to take it down",
                owned.path.display()
            )),
            _ => Ok(()),
        }
    }

    /// Refuses `stack up` of a stack the watch directory declares.
    pub fn check_up(&self, name: &str) -> Result<(), String> {
        match self.lock().owned.get(name) {
            Some(owned) => Err(format!(
                "stack {name} comes from the watch directory ({}): edit that file instead",
                owned.path.display()
            )),
            None => Ok(()),
        }
    }

    /// Forgets stack `name` after `stack down` took it down.
    pub fn forget(&self, name: &str) {
        let mut shared = self.lock();
        if shared.owned.get(name).is_some_and(|o| !o.present) {
            shared.owned.remove(name);
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    crate::image::images::rfc3339(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// `<root>/watch-dir.json`: the stacks the directory registered.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Kept {
    dir: PathBuf,
    stacks: BTreeMap<String, PathBuf>,
}

fn kept_path(root: &Path) -> PathBuf {
    root.join("watch-dir.json")
}

/// The stacks a daemon before registered from `dir` (none from another
/// directory: those stay as stacks of their own).
fn read_kept(root: &Path, dir: &Path) -> BTreeMap<String, PathBuf> {
    let path = kept_path(root);
    let kept: Kept = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable watch-dir state");
                return BTreeMap::new();
            }
        },
        Err(_) => return BTreeMap::new(),
    };
    if kept.dir == dir {
        kept.stacks
    } else {
        BTreeMap::new()
    }
}

fn write_kept(root: &Path, kept: &Kept) {
    let path = kept_path(root);
    let result = serde_json::to_vec_pretty(kept)
        .map_err(std::io::Error::other)
        .and_then(|json| crate::image::store::write_atomic(&path, &json));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the watch-dir state");
    }
}

/// An entry as the last look found it.
#[derive(Debug, Clone)]
struct Seen {
    fingerprint: u64,
    name: String,
    /// Its last load succeeded.
    good: bool,
    /// Why its last load failed.
    error: Option<String>,
}

/// An entry listed now.
#[derive(Debug)]
struct Surveyed {
    entry: WatchEntry,
    fingerprint: u64,
    /// `None`: unchanged since the last look, not loaded again.
    loaded: Option<Result<Option<String>, String>>,
}

/// Lists `dir` and loads the entries that changed since `known`.
fn survey(dir: &Path, known: &BTreeMap<PathBuf, u64>) -> std::io::Result<Vec<Surveyed>> {
    Ok(scan(dir)?
        .into_iter()
        .map(|entry| {
            let fingerprint = entry.fingerprint();
            let loaded = (known.get(&entry.path) != Some(&fingerprint)).then(|| entry.load());
            Surveyed {
                entry,
                fingerprint,
                loaded,
            }
        })
        .collect())
}

/// What only the watching task keeps.
#[derive(Debug, Default)]
struct Memory {
    seen: BTreeMap<PathBuf, Seen>,
    /// Stacks being taken down.
    downing: BTreeSet<String>,
    /// What `<root>/watch-dir.json` holds.
    kept: BTreeMap<String, PathBuf>,
}

/// Watches the directory, keeps its stacks registered and takes down the
/// ones whose entry went; runs for as long as the daemon.
pub async fn run(d: Arc<Daemon>, config: WatchConfig) {
    tracing::info!(dir = %config.dir.display(), "watching for stack files");
    let mut memory = Memory {
        kept: read_kept(&d.root, &config.dir),
        ..Memory::default()
    };
    {
        let mut shared = d.gitops.lock();
        shared.dir = Some(config.dir.clone());
        for (name, path) in &memory.kept {
            shared.owned.insert(
                name.clone(),
                Owned {
                    path: path.clone(),
                    present: true,
                    down_at: None,
                },
            );
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = DirWatch::default();
    let mut downs: tokio::task::JoinSet<(String, Result<(), String>)> = tokio::task::JoinSet::new();
    loop {
        let dirs = sync(&d, &config, &mut memory, &mut downs).await;
        watcher.follow(&config.dir, dirs, &tx);
        let next = d
            .gitops
            .lock()
            .owned
            .values()
            .filter_map(|o| o.down_at)
            .min()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .map_or(RESYNC, |wait| wait.min(RESYNC));
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
            Some(joined) = downs.join_next(), if !downs.is_empty() => {
                if let Ok((name, result)) = joined {
                    memory.downing.remove(&name);
                    match result {
                        Ok(()) => {
                            tracing::info!(stack = %name, "stack down: its file left the watch directory");
                            let mut shared = d.gitops.lock();
                            if shared.owned.get(&name).is_some_and(|o| !o.present) {
                                shared.owned.remove(&name);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(stack = %name, error = %e, "cannot take the stack down; trying again");
                        }
                    }
                }
            }
            () = tokio::time::sleep(next) => {}
        }
    }
}

/// One look at the directory: names its entries, registers what is new or
/// changed, schedules and starts the downs of stacks whose entry went.
/// Returns the directories to watch besides the watch directory (the
/// project directories' real paths).
async fn sync(
    d: &Arc<Daemon>,
    config: &WatchConfig,
    memory: &mut Memory,
    downs: &mut tokio::task::JoinSet<(String, Result<(), String>)>,
) -> Vec<PathBuf> {
    let known: BTreeMap<PathBuf, u64> = memory
        .seen
        .iter()
        .map(|(p, s)| (p.clone(), s.fingerprint))
        .collect();
    let dir = config.dir.clone();
    let surveyed = match tokio::task::spawn_blocking(move || survey(&dir, &known)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Nothing is taken down on a listing that failed.
            tracing::warn!(dir = %config.dir.display(), error = %e, "cannot list the watch directory");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(error = %e, "the watch directory listing failed");
            return Vec::new();
        }
    };
    let now = SystemTime::now();
    let mut register: Vec<StackSource> = Vec::new();
    let mut kick: Vec<String> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut watch_dirs = Vec::new();
    {
        let mut shared = d.gitops.lock();
        // Each entry's name: declared, else its default; an entry that does
        // not load keeps the name it had.
        let mut named: Vec<(WatchEntry, bool)> = Vec::new();
        for s in surveyed {
            let before = memory.seen.get(&s.entry.path);
            let had = || {
                before.map(|b| b.name.clone()).or_else(|| {
                    shared
                        .owned
                        .iter()
                        .find(|(_, o)| o.path == s.entry.path)
                        .map(|(n, _)| n.clone())
                })
            };
            let (seen, changed) = match (s.loaded, before) {
                (Some(Ok(declared)), _) => (
                    Seen {
                        fingerprint: s.fingerprint,
                        name: s.entry.name(declared.as_deref()),
                        good: true,
                        error: None,
                    },
                    true,
                ),
                (Some(Err(problem)), _) => (
                    Seen {
                        fingerprint: s.fingerprint,
                        name: had().unwrap_or_else(|| s.entry.default_name()),
                        good: false,
                        error: Some(problem),
                    },
                    true,
                ),
                (None, Some(b)) => (b.clone(), false),
                (None, None) => continue,
            };
            if s.entry.discovered.is_some()
                && let Ok(real) = std::fs::canonicalize(&s.entry.path)
            {
                watch_dirs.push(real);
            }
            memory.seen.insert(s.entry.path.clone(), seen);
            named.push((s.entry, changed));
        }
        let present: BTreeSet<PathBuf> = named.iter().map(|(e, _)| e.path.clone()).collect();
        memory.seen.retain(|p, _| present.contains(p));

        // Who gets each name: the entry that had it, else the first.
        let mut claims: BTreeMap<String, usize> = BTreeMap::new();
        let mut refused: Vec<(usize, String)> = Vec::new();
        for (i, (entry, _)) in named.iter().enumerate() {
            let name = &memory.seen[&entry.path].name;
            if shared.owned.get(name).is_some_and(|o| o.path == entry.path) {
                claims.insert(name.clone(), i);
            }
        }
        for (i, (entry, _)) in named.iter().enumerate() {
            let name = &memory.seen[&entry.path].name;
            if memory.downing.contains(name) || claims.get(name) == Some(&i) {
                continue;
            }
            if let Some(&other) = claims.get(name) {
                refused.push((
                    i,
                    format!(
                        "stack {name} is declared by both {} and {}: {} is not applied (give it another name)",
                        named[other].0.stack_file().display(),
                        entry.stack_file().display(),
                        entry.stack_file().display(),
                    ),
                ));
            } else if !shared.owned.contains_key(name)
                && let Some(other) = d.stacks.source(name)
            {
                refused.push((
                    i,
                    format!(
                        "stack {name} is already registered by `stack up` from {}: {} is not applied (take that one down or give this one another name)",
                        other.project_dir.display(),
                        entry.stack_file().display(),
                    ),
                ));
            } else {
                claims.insert(name.clone(), i);
            }
        }

        let mut rows: Vec<(StackStatus, &str)> = Vec::new();
        for (name, &i) in &claims {
            let (entry, changed) = &named[i];
            let seen = &memory.seen[&entry.path];
            let owned = shared.owned.entry(name.clone()).or_insert_with(|| Owned {
                path: entry.path.clone(),
                present: true,
                down_at: None,
            });
            if owned.down_at.is_some() {
                tracing::info!(stack = %name, "its file is back in the watch directory: it stays");
            }
            *owned = Owned {
                path: entry.path.clone(),
                present: true,
                down_at: None,
            };
            let registered = d.stacks.source(name);
            if seen.good {
                let source = entry.source(name);
                if *changed || registered.as_ref() != Some(&source) {
                    register.push(source);
                }
            } else if registered.is_some() {
                // Its loop keeps the last good version and shows the error.
                if *changed {
                    kick.push(name.clone());
                }
            } else {
                rows.push((
                    StackStatus {
                        name: name.clone(),
                        project_dir: entry.project_dir(),
                        last_error: seen.error.clone(),
                        watch_path: Some(entry.path.clone()),
                        ..StackStatus::default()
                    },
                    "invalid",
                ));
            }
        }
        for (i, message) in refused {
            let entry = &named[i].0;
            rows.push((
                StackStatus {
                    name: memory.seen[&entry.path].name.clone(),
                    project_dir: entry.project_dir(),
                    last_error: Some(message),
                    watch_path: Some(entry.path.clone()),
                    ..StackStatus::default()
                },
                "refused",
            ));
        }
        for (row, action) in &rows {
            let known = shared
                .rows
                .iter()
                .any(|r| r.watch_path == row.watch_path && r.last_error == row.last_error);
            if !known {
                let file = row
                    .watch_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let error = row.last_error.clone().unwrap_or_default();
                events.push(Event::stack(
                    *action,
                    &row.name,
                    &[("file", &file), ("error", &error)],
                ));
            }
        }
        shared.rows = rows.into_iter().map(|(row, _)| row).collect();

        // Stacks no entry declares any more go after the grace.
        let gone: Vec<String> = shared
            .owned
            .keys()
            .filter(|n| !claims.contains_key(*n) && !memory.downing.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if d.stacks.source(&name).is_none() {
                shared.owned.remove(&name);
                continue;
            }
            let Some(owned) = shared.owned.get_mut(&name) else {
                continue;
            };
            owned.present = false;
            if config.keep_on_delete {
                owned.down_at = None;
                continue;
            }
            let at = *owned.down_at.get_or_insert_with(|| {
                tracing::info!(stack = %name, grace = ?config.grace, "its file left the watch directory: down after the grace");
                now + config.grace
            });
            if at <= now {
                memory.downing.insert(name.clone());
                let d = d.clone();
                let file = owned.path.display().to_string();
                downs.spawn(async move {
                    let result = Registry::down(&d, &name, false).await.map(|report| {
                        d.events
                            .emit(Event::stack("down", &name, &[("file", &file)]));
                        if !report.ok() {
                            tracing::warn!(stack = %name, failed = ?report.failed, "stack down left some steps undone");
                        }
                    });
                    (name, result)
                });
            }
        }

        let kept: BTreeMap<String, PathBuf> = shared
            .owned
            .iter()
            .map(|(n, o)| (n.clone(), o.path.clone()))
            .collect();
        if kept != memory.kept {
            write_kept(
                &d.root,
                &Kept {
                    dir: config.dir.clone(),
                    stacks: kept.clone(),
                },
            );
            memory.kept = kept;
        }
    }
    for event in events {
        tracing::warn!(stack = %event.actor.id, action = %event.action, "watch directory entry not applied");
        d.events.emit(event);
    }
    for source in register {
        let name = source.name.clone();
        if let Err(e) = Registry::register(d, source) {
            tracing::warn!(stack = %name, error = %e, "cannot register the stack");
        }
    }
    for name in kick {
        let d = d.clone();
        tokio::spawn(async move { d.stacks.kick(&name).await });
    }
    watch_dirs
}

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// The notify watches on the watch directory (its real path, so a
/// directory swapped by a symlink is followed once seen), on its parent
/// (the directory itself renamed or replaced) and on the project
/// directories of its subdirectory stacks.
#[derive(Default)]
struct DirWatch {
    debouncer: Option<Debouncer>,
    dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("dirs", &self.dirs)
            .finish()
    }
}

impl DirWatch {
    /// Watches `dir`, its parent and `projects`, making the watches again
    /// when one of their real paths changed.
    fn follow(
        &mut self,
        dir: &Path,
        projects: Vec<PathBuf>,
        tx: &tokio::sync::mpsc::UnboundedSender<()>,
    ) {
        let mut dirs = projects;
        dirs.push(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
        let parent = dir.parent().map(Path::to_path_buf);
        if let Some(p) = &parent {
            dirs.push(p.clone());
        }
        dirs.sort();
        dirs.dedup();
        if self.debouncer.is_some() && dirs == self.dirs {
            return;
        }
        let tx = tx.clone();
        let own = dir.to_path_buf();
        let debouncer = notify_debouncer_full::new_debouncer(
            Duration::from_millis(50),
            None,
            move |result: notify_debouncer_full::DebounceEventResult| {
                let relevant = match result {
                    // Of the parent's entries only the directory itself.
                    Ok(events) => events.iter().any(|e| {
                        super::stacks::is_change(&e.kind)
                            && (e.paths.is_empty()
                                || e.paths
                                    .iter()
                                    .any(|p| p.parent() != parent.as_deref() || p == &own))
                    }),
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            },
        );
        let mut debouncer = match debouncer {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the watch directory");
                return;
            }
        };
        for d in &dirs {
            if let Err(e) = debouncer.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %d.display(), error = %e, "cannot watch");
            }
        }
        self.debouncer = Some(debouncer);
        self.dirs = dirs;
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn names(dir: &Path) -> Vec<(String, String)> {
        scan(dir)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.path.file_name().unwrap().to_string_lossy().into_owned(),
                    e.default_name(),
                )
            })
            .collect()
    }

    #[test]
    fn stack_files_and_project_directories_are_stacks_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in [
            "web.kdl",
            "db.toml",
            "queue.yml",
            "cache.yaml",
            "README.md",
            "web.kdl~",
            "web.kdl.swp",
            ".web.kdl.tmp",
            ".hidden.kdl",
            "#web.kdl#",
            ".env",
            "shop.env",
        ] {
            fs::write(dir.join(f), "").unwrap();
        }
        fs::create_dir(dir.join("shop")).unwrap();
        fs::write(dir.join("shop/compose.yaml"), "").unwrap();
        fs::write(dir.join("shop/.env"), "").unwrap();
        fs::create_dir(dir.join("templates")).unwrap();
        fs::write(dir.join("templates/notes.txt"), "").unwrap();
        fs::create_dir(dir.join(".git")).unwrap();
        fs::write(dir.join(".git/stack.kdl"), "").unwrap();
        // Kubernetes' ConfigMap layout: hidden data, visible symlinks.
        fs::create_dir(dir.join("..2026_11_29")).unwrap();
        fs::write(dir.join("..2026_11_29/mail.kdl"), "").unwrap();
        std::os::unix::fs::symlink("..2026_11_29", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/mail.kdl", dir.join("mail.kdl")).unwrap();
        std::os::unix::fs::symlink("nowhere.kdl", dir.join("dangling.kdl")).unwrap();
        // A project directory swapped by a symlink, as git worktrees do.
        fs::create_dir(dir.join(".v1")).unwrap();
        fs::write(dir.join(".v1/stack.toml"), "").unwrap();
        std::os::unix::fs::symlink(".v1", dir.join("blog")).unwrap();
        assert_eq!(
            names(dir),
            [
                ("blog", "blog"),
                ("cache.yaml", "cache"),
                ("db.toml", "db"),
                ("mail.kdl", "mail"),
                ("queue.yml", "queue"),
                ("shop", "shop"),
                ("web.kdl", "web"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let entries = scan(dir).unwrap();
        let shop = entries.iter().find(|e| e.path.ends_with("shop")).unwrap();
        assert_eq!(shop.project_dir(), dir.join("shop"));
        assert_eq!(shop.stack_file(), dir.join("shop/compose.yaml"));
        assert!(shop.source("shop").files.is_empty());
        let web = entries
            .iter()
            .find(|e| e.path.ends_with("web.kdl"))
            .unwrap();
        assert_eq!(web.project_dir(), dir);
        assert_eq!(web.source("web").files, vec![dir.join("web.kdl")]);
    }

    #[test]
    fn a_missing_directory_has_no_stacks() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(scan(&tmp.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn names_are_declared_or_come_from_the_file_stem_or_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(
            dir.join("My Web.v2.kdl"),
            "service \"a\" { image \"bb\"; }\n",
        )
        .unwrap();
        fs::write(
            dir.join("named.kdl"),
            "name \"shop\"\nservice \"a\" { image \"bb\"; }\n",
        )
        .unwrap();
        fs::create_dir(dir.join("Blog_1")).unwrap();
        fs::write(
            dir.join("Blog_1/stack.toml"),
            "[services.a]\nimage = \"bb\"\n",
        )
        .unwrap();
        fs::write(
            dir.join("broken.kdl"),
            "service \"a\" {\n  replicas \"x\"\n}\n",
        )
        .unwrap();
        let entries = scan(dir).unwrap();
        let by_file = |f: &str| entries.iter().find(|e| e.path.ends_with(f)).unwrap();
        let loaded = |f: &str| {
            let e = by_file(f);
            e.load().map(|declared| e.name(declared.as_deref()))
        };
        assert_eq!(loaded("My Web.v2.kdl").unwrap(), "mywebv2");
        assert_eq!(loaded("named.kdl").unwrap(), "shop");
        assert_eq!(loaded("Blog_1").unwrap(), "blog_1");
        let problem = loaded("broken.kdl").unwrap_err();
        assert!(problem.contains("broken.kdl:2:"), "{problem}");
        // A file caught empty by a save halfway is no stack without
        // services.
        fs::write(dir.join("broken.kdl"), "  \n").unwrap();
        let problem = loaded("broken.kdl").unwrap_err();
        assert!(problem.contains("is empty"), "{problem}");
    }

    #[test]
    fn an_empty_flag_turns_watching_off_and_the_default_needs_the_default_root() {
        let grace = DEFAULT_GRACE;
        assert_eq!(
            WatchConfig::choose(
                Some(Path::new("")),
                Path::new("/var/lib/stack"),
                grace,
                false
            )
            .unwrap(),
            None
        );
        assert_eq!(
            WatchConfig::choose(None, Path::new("/tmp/other-root"), grace, false).unwrap(),
            None
        );
        let chosen =
            WatchConfig::choose(Some(Path::new("/srv/stacks")), Path::new("/r"), grace, true)
                .unwrap()
                .unwrap();
        assert_eq!(chosen.dir, Path::new("/srv/stacks"));
        assert!(chosen.keep_on_delete);
    }

    #[test]
    fn a_fingerprint_changes_with_the_file_and_where_a_symlink_points() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for v in ["v1", "v2"] {
            fs::create_dir(dir.join(v)).unwrap();
            fs::write(dir.join(v).join("stack.kdl"), "").unwrap();
        }
        std::os::unix::fs::symlink("v1", dir.join("app")).unwrap();
        let entry = |d: &Path| WatchEntry {
            path: d.join("app"),
            discovered: Some(d.join("app/stack.kdl")),
        };
        let first = entry(dir).fingerprint();
        assert_eq!(entry(dir).fingerprint(), first);
        std::os::unix::fs::symlink("v2", dir.join("app.new")).unwrap();
        fs::rename(dir.join("app.new"), dir.join("app")).unwrap();
        assert_ne!(entry(dir).fingerprint(), first);
        let second = entry(dir).fingerprint();
        fs::write(dir.join("v2/stack.kdl"), "name \"x\"\n").unwrap();
        assert_ne!(entry(dir).fingerprint(), second);
    }
}
