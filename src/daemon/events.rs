//! The daemon's event bus: what `docker events` shows. Every part of the
//! daemon reports what happened to containers, images, networks and volumes
//! as an [`Event`] (Docker's events API message, field for field); [`Events`]
//! keeps the most recent ones in memory and in `<root>/events.jsonl` (so
//! `--since` reaches back across a daemon restart) and hands them to
//! subscribers: the past ones `--since`/`--until` select, then live ones.
//!
//! It never decides anything: it only records and relays what others emit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::warn;

use crate::runtime::ContainerRecord;

/// How many events are kept in memory for `--since` (moby keeps 256).
pub const RING_CAPACITY: usize = 1024;
/// The size at which `events.jsonl` is rotated (to `events.jsonl.1`).
pub const FILE_LIMIT: u64 = 1 << 20;
/// The event log under the state root.
pub const FILE_NAME: &str = "events.jsonl";
/// How far a live subscriber may fall behind before it misses events.
const CHANNEL_CAPACITY: usize = 1024;

/// Errors of the event bus.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A `--filter` value is not `KEY=VALUE`.
    #[error("bad format of filter (expected name=value): {filter:?}")]
    FilterFormat {
        /// The filter as given.
        filter: String,
    },
    /// A `--filter` key events do not know.
    #[error("invalid filter '{key}'")]
    FilterKey {
        /// The key.
        key: String,
    },
    /// A `--since` or `--until` value is no time.
    #[error("invalid time {input:?}")]
    Time {
        /// The value as given.
        input: String,
        /// Why.
        #[source]
        source: crate::runtime::logs::LogError,
    },
    /// `--since` is after `--until`.
    #[error("`since` time cannot be after `until` time")]
    SinceAfterUntil,
    /// The event log could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What an event is about (moby `api/types/events.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A container.
    Container,
    /// An image.
    Image,
    /// A network.
    Network,
    /// A volume.
    Volume,
    /// The daemon itself.
    Daemon,
    /// A stack (ours; Docker has none): its file is invalid, refused, or
    /// its stack went down with its watch-directory file.
    Stack,
}

impl EventType {
    /// The name Docker uses (`container`, `image`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Container => "container",
            EventType::Image => "image",
            EventType::Network => "network",
            EventType::Volume => "volume",
            EventType::Daemon => "daemon",
            EventType::Stack => "stack",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who an event is about: its id and attributes (a container's name, image
/// and labels, an exit code, a signal…).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Actor {
    /// The container id, image reference or id, network id, volume name…
    #[serde(rename = "ID")]
    pub id: String,
    /// Details, as strings.
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, serialized exactly as Docker's events API sends it (moby
/// `api/types/events.Message`), including the deprecated `status`, `id` and
/// `from` fields that container and image events still carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Deprecated: the action, on container and image events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Deprecated: the actor's id, on container and image events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Deprecated: the image, on container events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// What it is about.
    #[serde(rename = "Type")]
    pub kind: EventType,
    /// What happened: `create`, `start`, `die`, `health_status: healthy`,
    /// `pull`, `tag`…
    #[serde(rename = "Action")]
    pub action: String,
    /// Who it happened to.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// `local` (Docker's `swarm` scope has no counterpart here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// When, in Unix seconds.
    #[serde(default)]
    pub time: i64,
    /// When, in Unix nanoseconds.
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}

/// Nanoseconds since the epoch, as Docker's `timeNano`.
fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Event {
    /// An event that happens now, with the deprecated fields filled in as
    /// moby's `daemon/events.Events.Log` fills them.
    pub fn new(
        kind: EventType,
        action: impl Into<String>,
        id: impl Into<String>,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        let mut event = Event {
            status: String::new(),
            id: String::new(),
            from: String::new(),
            kind,
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: 0,
            time_nano: 0,
        };
        event.set_time(SystemTime::now());
        match kind {
            EventType::Container => {
                event.status = event.action.clone();
                event.id = event.actor.id.clone();
                event.from = event
                    .actor
                    .attributes
                    .get("image")
                    .cloned()
                    .unwrap_or_default();
            }
            EventType::Image => {
                event.status = event.action.clone();
                event.id = event.actor.id.clone();
            }
            EventType::Network | EventType::Volume | EventType::Daemon | EventType::Stack => {}
        }
        event
    }

    /// A container event: its attributes are the container's labels, its
    /// `name` and its `image` (as moby's `LogContainerEventWithAttributes`).
    pub fn container(action: impl Into<String>, record: &ContainerRecord) -> Event {
        let mut attributes = record.labels.clone();
        attributes.insert("image".into(), record.image.clone());
        attributes.insert("name".into(), record.name.clone());
        Event::new(EventType::Container, action, &record.id, attributes)
    }

    /// An image event about `id` (a reference or an image id); `name` is the
    /// reference it concerns, if any.
    pub fn image(action: impl Into<String>, id: &str, name: Option<&str>) -> Event {
        let mut attributes = BTreeMap::new();
        if let Some(name) = name {
            attributes.insert("name".into(), name.to_string());
        }
        Event::new(EventType::Image, action, id, attributes)
    }

    /// A network event about `network` (`create`, `destroy`, `connect`,
    /// `disconnect`), with Docker's `name` and `type` attributes.
    pub fn network(
        action: impl Into<String>,
        network: &crate::net::network::NetworkRecord,
    ) -> Event {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".into(), network.name.clone());
        attributes.insert("type".into(), network.driver.clone());
        Event::new(EventType::Network, action, &network.id, attributes)
    }

    /// A stack event about stack `name` (`invalid`, `refused`, `down`),
    /// with `attributes` besides its `name`.
    pub fn stack(action: impl Into<String>, name: &str, attributes: &[(&str, &str)]) -> Event {
        let mut map = BTreeMap::new();
        map.insert("name".to_string(), name.to_string());
        for (k, v) in attributes {
            map.insert((*k).to_string(), (*v).to_string());
        }
        Event::new(EventType::Stack, action, name, map)
    }

    /// The same event with one more attribute (`exitCode`, `signal`…).
    pub fn with_attribute(mut self, key: &str, value: impl Into<String>) -> Event {
        self.actor.attributes.insert(key.to_string(), value.into());
        self
    }

    /// When it happened.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(self.time_nano).unwrap_or(0))
    }

    fn set_time(&mut self, time: SystemTime) {
        self.time_nano = unix_nanos(time);
        self.time = self.time_nano.div_euclid(1_000_000_000);
    }
}

/// Parses a `--since`/`--until` value as Docker does: Unix seconds (with a
/// fraction), an RFC 3339 time (or a prefix of one), or a Go duration
/// (`10m`, `1h30m`) before `now`.
pub fn parse_time(value: &str, now: SystemTime) -> Result<SystemTime, EventsError> {
    crate::runtime::logs::parse_time_filter(value, now).map_err(|source| EventsError::Time {
        input: value.to_string(),
        source,
    })
}

/// The filter keys `docker events --filter` accepts (moby
/// `api/server/router/system`), plus `action` as another name for `event`.
const FILTER_KEYS: [&str; 14] = [
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// `docker events --filter`: values of the same key are alternatives (OR),
/// different keys must all match (AND) — except `label`, where, as in
/// Docker (moby `filters.Args.MatchKVList`), every label given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventFilter {
    fields: BTreeMap<String, BTreeSet<String>>,
}

impl EventFilter {
    /// Parses `--filter` values, each `KEY=VALUE` (the key is trimmed and
    /// lowercased, the value trimmed, as docker/cli's `filters.ParseFlag`).
    pub fn parse(filters: &[String]) -> Result<EventFilter, EventsError> {
        let mut pairs = Vec::new();
        for filter in filters {
            let (key, value) = filter
                .split_once('=')
                .ok_or_else(|| EventsError::FilterFormat {
                    filter: filter.clone(),
                })?;
            pairs.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        EventFilter::from_pairs(pairs)
    }

    /// A filter from keys and values (the API's `filters` parameter,
    /// decoded); unknown keys are refused as Docker refuses them.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<EventFilter, EventsError> {
        let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (key, value) in pairs {
            let key = if key == "action" {
                "event".to_string()
            } else {
                key
            };
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(EventsError::FilterKey { key });
            }
            fields.entry(key).or_default().insert(value);
        }
        Ok(EventFilter { fields })
    }

    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn values(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.fields.get(key).filter(|v| !v.is_empty())
    }

    /// moby `filters.Args.ExactMatch`: no such key, or one value equals.
    fn exact(&self, key: &str, source: &str) -> bool {
        self.values(key).is_none_or(|v| v.contains(source))
    }

    /// moby `filters.Args.FuzzyMatch`: no such key, or one value equals or
    /// is a prefix of `source`.
    fn fuzzy(&self, key: &str, source: &str) -> bool {
        self.values(key)
            .is_none_or(|v| v.iter().any(|value| source.starts_with(value.as_str())))
    }

    /// Matches the actor's id or name by prefix (moby `fuzzyMatchName`).
    fn name(&self, key: &str, event: &Event) -> bool {
        let name = event
            .actor
            .attributes
            .get("name")
            .map_or("", String::as_str);
        self.fuzzy(key, &event.actor.id) || self.fuzzy(key, name)
    }

    /// Whether `event` passes (moby `daemon/events.Filter.Include`).
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_action(event)
            && self.exact("type", event.kind.as_str())
            && self.exact("scope", &event.scope)
            && [
                "daemon",
                "container",
                "plugin",
                "volume",
                "network",
                "node",
                "service",
                "secret",
                "config",
            ]
            .iter()
            .all(|key| self.name(key, event))
            && self.matches_image(event)
            && self.matches_labels(event)
    }

    /// `event=health_status` (and `exec_create`, `exec_start`) match the
    /// actions that carry a detail after a colon (moby #25798).
    fn matches_action(&self, event: &Event) -> bool {
        let Some(values) = self.values("event") else {
            return true;
        };
        let fuzzy = ["health_status", "exec_create", "exec_start"]
            .iter()
            .any(|a| values.contains(*a));
        if fuzzy {
            self.fuzzy("event", &event.action)
        } else {
            self.exact("event", &event.action)
        }
    }

    /// An image filter matches an image event's id or name and a container
    /// event's image, with or without the tag (moby `matchImage`).
    fn matches_image(&self, event: &Event) -> bool {
        if self.values("image").is_none() {
            return true;
        }
        let attr = if event.kind == EventType::Image {
            "name"
        } else {
            "image"
        };
        let name = event.actor.attributes.get(attr).map_or("", String::as_str);
        let id = event.actor.id.as_str();
        [id, name]
            .into_iter()
            .filter(|s| !s.is_empty())
            .any(|s| self.exact("image", s) || self.exact("image", &strip_tag(s)))
    }

    fn matches_labels(&self, event: &Event) -> bool {
        let Some(values) = self.values("label") else {
            return true;
        };
        values.iter().all(|value| {
            let (key, want) = match value.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (value.as_str(), None),
            };
            event
                .actor
                .attributes
                .get(key)
                .is_some_and(|have| want.is_none_or(|w| w == have))
        })
    }
}

/// The repository of an image reference as Docker prints it, without tag or
/// digest (`docker.io/library/busybox:1` → `busybox`); anything else as is.
fn strip_tag(image: &str) -> String {
    image
        .parse::<crate::image::reference::Reference>()
        .map_or_else(|_| image.to_string(), |r| r.familiar_repository())
}

/// The sizes of the event history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsConfig {
    /// Events kept in memory.
    pub capacity: usize,
    /// Size at which the event log file is rotated.
    pub file_limit: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            capacity: RING_CAPACITY,
            file_limit: FILE_LIMIT,
        }
    }
}

/// The event log on disk: one JSON event per line, appended, rotated to
/// `<file>.1` at the size limit so it never grows without bound.
#[derive(Debug)]
struct EventLog {
    path: PathBuf,
    file: Option<fs::File>,
    size: u64,
    limit: u64,
}

impl EventLog {
    fn rotated(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Opens the log for appending; a last line a crash cut short is ended,
    /// so the next event starts on a line of its own.
    fn open(path: &Path, limit: u64) -> io::Result<EventLog> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        Ok(EventLog {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            limit,
        })
    }

    fn append(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limit {
            self.file = None;
            fs::rename(&self.path, Self::rotated(&self.path))?;
            self.file = Some(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
            self.size = 0;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Reads the events of the log and its rotated part, oldest first, the last
/// `capacity` of them. Lines that do not parse (a torn write) are skipped.
fn load(path: &Path, capacity: usize) -> Result<VecDeque<Event>, EventsError> {
    let mut ring = VecDeque::with_capacity(capacity.min(RING_CAPACITY));
    for file in [EventLog::rotated(path), path.to_path_buf()] {
        let reader = match fs::File::open(&file) {
            Ok(f) => io::BufReader::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(EventsError::Io {
                    action: "read",
                    path: file,
                    source,
                });
            }
        };
        for line in reader.split(b'\n') {
            let line = line.map_err(|source| EventsError::Io {
                action: "read",
                path: file.clone(),
                source,
            })?;
            let Ok(event) = serde_json::from_slice::<Event>(&line) else {
                continue;
            };
            if ring.len() == capacity {
                ring.pop_front();
            }
            if capacity > 0 {
                ring.push_back(event);
            }
        }
    }
    Ok(ring)
}

#[derive(Debug)]
struct Shared {
    ring: VecDeque<Event>,
    log: Option<EventLog>,
    /// The log's last write failed (warned once until one succeeds).
    log_failing: bool,
}

#[derive(Debug)]
struct Inner {
    shared: Mutex<Shared>,
    live: broadcast::Sender<Event>,
    capacity: usize,
}

/// The event bus (a cheap handle: clones share it).
#[derive(Debug, Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

impl Events {
    /// The bus of a state root: history from `<root>/events.jsonl` (and its
    /// rotated part), new events appended there.
    pub fn open(root: &Path) -> Result<Events, EventsError> {
        Events::open_with(root, EventsConfig::default())
    }

    /// [`Events::open`] with other sizes.
    pub fn open_with(root: &Path, config: EventsConfig) -> Result<Events, EventsError> {
        let path = root.join(FILE_NAME);
        let ring = load(&path, config.capacity)?;
        let log = EventLog::open(&path, config.file_limit).map_err(|source| EventsError::Io {
            action: "open",
            path: path.clone(),
            source,
        })?;
        Ok(Events::with(ring, Some(log), config.capacity))
    }

    /// A bus that keeps its history in memory only.
    pub fn in_memory(capacity: usize) -> Events {
        Events::with(VecDeque::new(), None, capacity)
    }

    fn with(ring: VecDeque<Event>, log: Option<EventLog>, capacity: usize) -> Events {
        let (live, _) = broadcast::channel(CHANNEL_CAPACITY);
        Events {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    ring,
                    log,
                    log_failing: false,
                }),
                live,
                capacity,
            }),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves consistent data (each step
        // is a push or a write), so a poisoned lock is still usable.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an event and sends it to every subscriber. It is stamped with
    /// the time it is emitted (never earlier than the one before), so the
    /// history is in time order and `--since` a time seen never misses one.
    pub fn emit(&self, mut event: Event) {
        let mut shared = self.shared();
        let now = SystemTime::now();
        let last = shared.ring.back().map(Event::time);
        event.set_time(last.map_or(now, |l| now.max(l)));
        if let Some(log) = &mut shared.log {
            match log.append(&event) {
                Ok(()) => shared.log_failing = false,
                Err(error) => {
                    if !shared.log_failing {
                        warn!(%error, "cannot write the event log; events are kept in memory");
                    }
                    shared.log_failing = true;
                }
            }
        }
        if shared.ring.len() >= self.inner.capacity {
            shared.ring.pop_front();
        }
        if self.inner.capacity > 0 {
            shared.ring.push_back(event.clone());
        }
        // Sent under the lock, so a subscriber's snapshot of the history and
        // its live receiver neither overlap nor leave a gap.
        let _ = self.inner.live.send(event);
    }

    /// The events in the history that pass `filter` and lie within
    /// `since..=until` (either open), oldest first.
    pub fn history(
        &self,
        filter: &EventFilter,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    ) -> Vec<Event> {
        let shared = self.shared();
        shared
            .ring
            .iter()
            .filter(|e| in_range(e, since, until) && filter.matches(e))
            .cloned()
            .collect()
    }

    /// Subscribes as `docker events` does: without `since` or `until` only
    /// live events; with either, first the past events in range (moby
    /// `loadBufferedEvents`), then live ones until `until` passes (the
    /// subscription ends then; without `until` it never ends).
    pub fn subscribe(
        &self,
        filter: EventFilter,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    ) -> Result<Subscription, EventsError> {
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(EventsError::SinceAfterUntil);
        }
        let shared = self.shared();
        let past: VecDeque<Event> = if since.is_some() || until.is_some() {
            shared
                .ring
                .iter()
                .filter(|e| in_range(e, since, until) && filter.matches(e))
                .cloned()
                .collect()
        } else {
            VecDeque::new()
        };
        let now = SystemTime::now();
        let (live, deadline) = match until {
            Some(u) => match u.duration_since(now) {
                Ok(left) => (
                    Some(self.inner.live.subscribe()),
                    Some(tokio::time::Instant::now() + left),
                ),
                Err(_) => (None, None),
            },
            None => (Some(self.inner.live.subscribe()), None),
        };
        drop(shared);
        Ok(Subscription {
            past,
            live,
            filter,
            since,
            until,
            deadline,
        })
    }
}

fn in_range(event: &Event, since: Option<SystemTime>, until: Option<SystemTime>) -> bool {
    let t = event.time();
    since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
}

/// A subscriber's view of the bus: past events first, then live ones.
#[derive(Debug)]
pub struct Subscription {
    past: VecDeque<Event>,
    live: Option<broadcast::Receiver<Event>>,
    filter: EventFilter,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    deadline: Option<tokio::time::Instant>,
}

impl Subscription {
    /// The next event, or `None` once `until` has passed.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.past.pop_front() {
            return Some(event);
        }
        loop {
            let live = self.live.as_mut()?;
            let received = match self.deadline {
                Some(deadline) => tokio::select! {
                    r = live.recv() => r,
                    () = tokio::time::sleep_until(deadline) => {
                        self.live = None;
                        return None;
                    }
                },
                None => live.recv().await,
            };
            match received {
                Ok(event) => {
                    if self.until.is_some_and(|u| event.time() > u) {
                        self.live = None;
                        return None;
                    }
                    if in_range(&event, self.since, None) && self.filter.matches(&event) {
                        return Some(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "an event subscriber fell behind and missed events");
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.live = None;
                    return None;
                }
            }
        }
    }

    /// The subscription as a stream (for a streaming HTTP response).
    pub fn into_stream(self) -> impl futures::Stream<Item = Event> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_event(action: &str, id: &str, name: &str, image: &str) -> Event {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), name.to_string());
        attributes.insert("image".to_string(), image.to_string());
        attributes.insert("com.example.tier".to_string(), "web".to_string());
        Event::new(EventType::Container, action, id, attributes)
    }

    fn filter(args: &[&str]) -> EventFilter {
        EventFilter::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn events_serialize_with_dockers_field_names() {
        let mut event =
            container_event("die", "abc123", "web", "busybox").with_attribute("exitCode", "3");
        event.set_time(UNIX_EPOCH + Duration::new(1_700_000_000, 5));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "die",
                "id": "abc123",
                "from": "busybox",
                "Type": "container",
                "Action": "die",
                "Actor": {"ID": "abc123", "Attributes": {
                    "com.example.tier": "web", "exitCode": "3", "image": "busybox", "name": "web"
                }},
                "scope": "local",
                "time": 1_700_000_000,
                "timeNano": 1_700_000_000_000_000_005_i64,
            })
        );
        // Network events carry none of the deprecated fields.
        let net = Event::new(EventType::Network, "create", "n1", BTreeMap::new());
        let json = serde_json::to_value(&net).unwrap();
        assert!(json.get("status").is_none() && json.get("id").is_none());
        let image = Event::image("pull", "busybox:latest", Some("busybox:latest"));
        let json = serde_json::to_value(&image).unwrap();
        assert_eq!(json["status"], "pull");
        assert_eq!(json["id"], "busybox:latest");
        assert!(json.get("from").is_none());
        let back: Event = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn filters_or_within_a_key_and_and_across_keys() {
        let web = container_event("start", "aaaa1111", "web", "busybox:latest");
        let db = container_event("die", "bbbb2222", "db", "postgres:16");
        let pull = Event::image("pull", "busybox:latest", Some("busybox:latest"));

        assert!(EventFilter::default().matches(&web));
        let f = filter(&["container=web", "container=db"]);
        assert!(f.matches(&web) && f.matches(&db) && !f.matches(&pull));
        let f = filter(&["container=web", "event=die"]);
        assert!(!f.matches(&web) && !f.matches(&db));
        // Ids match by prefix, names too.
        assert!(filter(&["container=aaaa"]).matches(&web));
        assert!(filter(&["type=image"]).matches(&pull));
        assert!(!filter(&["type=image"]).matches(&web));
        assert!(filter(&["action=die"]).matches(&db));
        assert!(filter(&["scope=local"]).matches(&db));
        assert!(!filter(&["scope=swarm"]).matches(&db));
    }

    #[test]
    fn image_filters_match_with_or_without_the_tag() {
        let web = container_event("start", "aaaa1111", "web", "busybox:latest");
        let pull = Event::image("pull", "busybox:latest", Some("busybox:latest"));
        for f in ["image=busybox", "image=busybox:latest"] {
            assert!(filter(&[f]).matches(&web), "{f} on a container event");
            assert!(filter(&[f]).matches(&pull), "{f} on an image event");
        }
        assert!(!filter(&["image=alpine"]).matches(&web));
        // As in Docker, the filter's value is not normalized.
        assert!(!filter(&["image=docker.io/library/busybox"]).matches(&web));
        let full = container_event("start", "b", "db", "docker.io/library/busybox:1");
        assert!(filter(&["image=busybox"]).matches(&full));
    }

    #[test]
    fn label_filters_need_every_label_given() {
        let web = container_event("start", "aaaa1111", "web", "busybox");
        assert!(filter(&["label=com.example.tier"]).matches(&web));
        assert!(filter(&["label=com.example.tier=web"]).matches(&web));
        assert!(!filter(&["label=com.example.tier=db"]).matches(&web));
        assert!(!filter(&["label=com.example.tier=web", "label=other"]).matches(&web));
    }

    #[test]
    fn health_status_and_exec_match_their_detailed_actions() {
        let health = container_event("health_status: healthy", "a", "web", "bb");
        let exec = container_event("exec_start: sh -c true", "a", "web", "bb");
        assert!(filter(&["event=health_status"]).matches(&health));
        assert!(filter(&["event=exec_start"]).matches(&exec));
        assert!(!filter(&["event=die"]).matches(&health));
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = |s: &str| EventFilter::parse(&[s.to_string()]).unwrap_err();
        assert!(matches!(bad("container"), EventsError::FilterFormat { .. }));
        assert!(matches!(bad("colour=red"), EventsError::FilterKey { .. }));
        // Keys are trimmed and lowercased, as the docker CLI does.
        assert!(EventFilter::parse(&[" Type = container".to_string()]).is_ok());
    }

    #[test]
    fn times_parse_as_unix_seconds_rfc3339_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_time("1699999999.5", now).unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_699_999_999_500)
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(
            parse_time("10m", now).unwrap(),
            now - Duration::from_secs(600)
        );
        assert_eq!(
            parse_time("1h30m", now).unwrap(),
            now - Duration::from_secs(5400)
        );
        assert!(matches!(
            parse_time("yesterday", now),
            Err(EventsError::Time { .. })
        ));
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_since_until_select_them() {
        let events = Events::in_memory(3);
        for i in 0..5 {
            events.emit(container_event("start", &format!("c{i}"), "n", "bb"));
        }
        let all = events.history(&EventFilter::default(), Some(UNIX_EPOCH), None);
        let ids: Vec<&str> = all.iter().map(|e| e.actor.id.as_str()).collect();
        assert_eq!(ids, ["c2", "c3", "c4"]);
        // Emission order is time order.
        assert!(all.windows(2).all(|w| w[0].time_nano <= w[1].time_nano));
        let since = all[1].time();
        let later = events.history(&EventFilter::default(), Some(since), None);
        assert_eq!(later.first().map(|e| e.actor.id.as_str()), Some("c3"));
        let until = events.history(&EventFilter::default(), None, Some(since));
        assert!(until.iter().all(|e| e.time() <= since));
        assert!(until.iter().any(|e| e.actor.id == "c3"));
    }

    #[test]
    fn events_persist_rotate_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let config = EventsConfig {
            capacity: 1024,
            file_limit: 2048,
        };
        let events = Events::open_with(dir.path(), config).unwrap();
        for i in 0..40 {
            events.emit(container_event("start", &format!("c{i}"), "n", "bb"));
        }
        let path = dir.path().join(FILE_NAME);
        let rotated = dir.path().join("events.jsonl.1");
        assert!(rotated.exists(), "the log was rotated");
        assert!(fs::metadata(&path).unwrap().len() <= 2048);
        assert!(fs::metadata(&rotated).unwrap().len() <= 2048);
        drop(events);

        // A torn last line (a crash mid-write) is skipped and ended.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"Type\":\"contai").unwrap();
        drop(f);

        let events = Events::open_with(dir.path(), config).unwrap();
        let loaded = events.history(&EventFilter::default(), Some(UNIX_EPOCH), None);
        // Everything still on disk comes back, in order, ending with c39.
        assert!(loaded.len() >= 2 && loaded.len() < 40);
        assert_eq!(loaded.last().unwrap().actor.id, "c39");
        let first: usize = loaded[0].actor.id[1..].parse().unwrap();
        let ids: Vec<String> = loaded.iter().map(|e| e.actor.id.clone()).collect();
        let expected: Vec<String> = (first..40).map(|i| format!("c{i}")).collect();
        assert_eq!(ids, expected);
        events.emit(container_event("die", "after", "n", "bb"));
        drop(events);
        let events = Events::open_with(dir.path(), config).unwrap();
        let loaded = events.history(&EventFilter::default(), Some(UNIX_EPOCH), None);
        assert_eq!(loaded.last().unwrap().actor.id, "after");
        assert_eq!(loaded[loaded.len() - 2].actor.id, "c39");
    }

    #[tokio::test]
    async fn a_subscriber_gets_past_then_live_events_in_order() {
        let events = Events::in_memory(RING_CAPACITY);
        events.emit(container_event("create", "c1", "web", "bb"));
        events.emit(container_event("start", "c1", "web", "bb"));
        events.emit(container_event("start", "c2", "db", "bb"));
        let mut sub = events
            .subscribe(filter(&["container=web"]), Some(UNIX_EPOCH), None)
            .unwrap();
        // Live-only subscribers see nothing of the past.
        let mut live_only = events
            .subscribe(EventFilter::default(), None, None)
            .unwrap();
        let emitter = events.clone();
        tokio::spawn(async move {
            emitter.emit(container_event("die", "c2", "db", "bb"));
            emitter.emit(container_event("die", "c1", "web", "bb"));
        });
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = sub.next().await.unwrap();
            got.push(format!("{} {}", e.action, e.actor.id));
        }
        assert_eq!(got, ["create c1", "start c1", "die c1"]);
        assert_eq!(live_only.next().await.unwrap().actor.id, "c2");
    }

    #[tokio::test]
    async fn a_subscription_ends_at_until() {
        let events = Events::in_memory(RING_CAPACITY);
        events.emit(container_event("start", "c1", "web", "bb"));
        let until = SystemTime::now();
        // Past `until` already: the history, then the end.
        let mut sub = events
            .subscribe(EventFilter::default(), None, Some(until))
            .unwrap();
        assert_eq!(sub.next().await.unwrap().actor.id, "c1");
        assert!(sub.next().await.is_none());
        // `until` ahead: live events up to it, then the end (the stream
        // finishes although nothing is emitted after it).
        let soon = SystemTime::now() + Duration::from_millis(200);
        let sub = events
            .subscribe(EventFilter::default(), None, Some(soon))
            .unwrap();
        events.emit(container_event("die", "c1", "web", "bb"));
        use futures::StreamExt;
        let rest: Vec<Event> = sub.into_stream().collect().await;
        // The history up to `until` comes first.
        assert_eq!(rest[0].action, "start");
        assert!(rest.len() <= 2 && rest.iter().all(|e| e.time() <= soon));
        assert!(matches!(
            events.subscribe(EventFilter::default(), Some(soon), Some(until)),
            Err(EventsError::SinceAfterUntil)
        ));
    }
}
