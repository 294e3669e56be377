//! `--filter`: Docker's filter arguments (`key=value`, repeatable) and the
//! container filters of `ps` with moby's semantics (`daemon/list.go`).
//!
//! Values of one key are alternatives (any may match); different keys must
//! all match. `id`, `name` and `status` match as Go regular expressions
//! (unanchored, so `name=web` matches `my-web-1`), `label` values must all
//! match (`key` or `key=value`), `exited` and `health` match exactly,
//! `before`/`since` name a container (name, id or id prefix) and keep the
//! ones created before or after it, `ancestor` names an image, `volume` a
//! volume name, bind source or mount destination, `network` a network
//! name. The module is pure: callers give it the containers and an image
//! resolver, and it never looks anything up itself.

use std::collections::{BTreeMap, BTreeSet};

/// Why filters could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A `--filter` without `=`.
    #[error("bad format of filter (expected name=value)")]
    BadFormat,
    /// A key the command does not filter on.
    #[error("invalid filter '{0}'")]
    UnknownKey(String),
    /// A value the key does not take.
    #[error("invalid filter '{key}={value}'")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// `health=` with an unknown health status.
    #[error("unrecognized filter value for health: {0}")]
    BadHealth(String),
    /// `exited=` that is not an integer.
    #[error("invalid filter 'exited={0}': not an exit code")]
    BadExitCode(String),
    /// `before=`/`since=` naming no container.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
}

/// Parsed `--filter` arguments: key → values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    fields: BTreeMap<String, BTreeSet<String>>,
}

impl Filters {
    /// Parses `key=value` arguments as docker/cli's `filters.ParseFlag`
    /// does: the key lower-cased, both sides trimmed.
    pub fn parse(args: &[String]) -> Result<Self, FilterError> {
        let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for arg in args {
            let (key, value) = arg.split_once('=').ok_or(FilterError::BadFormat)?;
            fields
                .entry(key.trim().to_ascii_lowercase())
                .or_default()
                .insert(value.trim().to_string());
        }
        Ok(Self { fields })
    }

    /// Fails on the first key not in `accepted`.
    pub fn validate(&self, accepted: &[&str]) -> Result<(), FilterError> {
        match self.fields.keys().find(|k| !accepted.contains(&k.as_str())) {
            Some(k) => Err(FilterError::UnknownKey(k.clone())),
            None => Ok(()),
        }
    }

    /// Whether no filter was given.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The filters as the API's `filters` parameter: a JSON map from key
    /// to its values.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.fields).unwrap_or_else(|_| "{}".into())
    }

    /// Whether `key` was given.
    pub fn contains(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// The values of `key`, sorted.
    pub fn values(&self, key: &str) -> impl Iterator<Item = &str> {
        self.fields
            .get(key)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Whether `source` is one of the values of `key` (true when the key was
    /// not given).
    pub fn exact_match(&self, key: &str, source: &str) -> bool {
        self.fields
            .get(key)
            .is_none_or(|values| values.contains(source))
    }

    /// moby's `Args.Match`: an exact match or any value as an unanchored
    /// regular expression (values that are not valid expressions only match
    /// exactly). True when the key was not given.
    pub fn matches(&self, key: &str, source: &str) -> bool {
        let Some(values) = self.fields.get(key) else {
            return true;
        };
        values.contains(source)
            || values.iter().any(|v| {
                regex::Regex::new(v)
                    .map(|re| re.is_match(source))
                    .unwrap_or(false)
            })
    }

    /// moby's `Args.MatchKVList`: every value (`k` or `k=v`) must be in
    /// `labels`. True when the key was not given.
    pub fn match_labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        let Some(values) = self.fields.get(key) else {
            return true;
        };
        values.iter().all(|value| match value.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(value.as_str()),
        })
    }
}

/// What `ps` filters look at for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PsEntry {
    /// The full id.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Docker's state: `created`, `running`, `paused`, `restarting`,
    /// `removing`, `exited` or `dead`.
    pub state: String,
    /// The last exit code.
    pub exit_code: i32,
    /// Whether it was ever started (an exit code means something).
    pub started: bool,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// `starting`, `healthy`, `unhealthy` or `none`.
    pub health: String,
    /// Mounts: (volume name or bind source, destination).
    pub mounts: Vec<(String, String)>,
    /// Network names.
    pub networks: Vec<String>,
    /// Ports: (container port, protocol, whether it is published).
    pub ports: Vec<(u16, String, bool)>,
}

/// Whether a `publish`/`expose` filter value (`80`, `80/udp`,
/// `8000-8080/tcp`; tcp when none is written) takes container port
/// `port`/`proto`.
fn port_filter_takes(value: &str, port: u16, proto: &str) -> bool {
    let (ports, want) = value.split_once('/').unwrap_or((value, "tcp"));
    let (start, end) = ports.split_once('-').unwrap_or((ports, ports));
    match (start.trim().parse::<u16>(), end.trim().parse::<u16>()) {
        (Ok(start), Ok(end)) => want.eq_ignore_ascii_case(proto) && (start..=end).contains(&port),
        _ => false,
    }
}

/// The filter keys `ps` accepts.
pub const PS_FILTERS: &[&str] = &[
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "since",
    "status",
    "volume",
];

const STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];
const HEALTH: &[&str] = &["starting", "healthy", "unhealthy", "none"];

/// Which containers `ps` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsQuery {
    /// `-a`: stopped ones too.
    pub all: bool,
    /// `-n N` / `-l` (N = 1): only the N most recently created (of any
    /// state).
    pub last: Option<usize>,
}

/// Applies `ps` filters to `entries`, which must be sorted newest first
/// (moby walks them in that order for `before`/`since` and `-n`). Returns
/// the indices of the containers to list, in that order. `image_id`
/// resolves an `ancestor` value to an image id (`None`: no such image,
/// which, as in moby, matches nothing).
pub fn select(
    entries: &[PsEntry],
    filters: &Filters,
    query: PsQuery,
    image_id: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<usize>, FilterError> {
    filters.validate(PS_FILTERS)?;
    let mut all = query.all || query.last.is_some();
    for status in filters.values("status") {
        if !STATES.contains(&status) {
            return Err(FilterError::BadValue {
                key: "status".into(),
                value: status.into(),
            });
        }
        all = true;
    }
    for health in filters.values("health") {
        if !HEALTH.contains(&health) {
            return Err(FilterError::BadHealth(health.into()));
        }
    }
    let exited = filters
        .values("exited")
        .map(|v| {
            v.parse::<i32>()
                .map_err(|_| FilterError::BadExitCode(v.into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let is_task = match filters.values("is-task").collect::<Vec<_>>().as_slice() {
        [] => None,
        ["true"] => Some(true),
        ["false"] => Some(false),
        other => {
            return Err(FilterError::BadValue {
                key: "is-task".into(),
                value: other.join(","),
            });
        }
    };
    for isolation in filters.values("isolation") {
        if !matches!(isolation, "default" | "") {
            return Err(FilterError::BadValue {
                key: "isolation".into(),
                value: isolation.into(),
            });
        }
    }
    let find = |name: &str| -> Result<usize, FilterError> {
        entries
            .iter()
            .position(|e| e.id == name || e.name == name.trim_start_matches('/'))
            .or_else(|| {
                let mut prefixed = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !name.is_empty() && e.id.starts_with(name));
                match (prefixed.next(), prefixed.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            })
            .ok_or_else(|| FilterError::NoSuchContainer(name.into()))
    };
    // moby keeps the last value of before/since it walks.
    let mut before = None;
    for v in filters.values("before") {
        before = Some(find(v)?);
    }
    let mut since = None;
    for v in filters.values("since") {
        since = Some(find(v)?);
    }
    let ancestors: Option<BTreeSet<String>> = filters
        .contains("ancestor")
        .then(|| filters.values("ancestor").filter_map(image_id).collect());

    let mut out = Vec::new();
    'entries: for (i, e) in entries.iter().enumerate() {
        // Newest first: everything up to and including `before` is newer.
        if before.is_some_and(|b| i <= b) {
            continue;
        }
        if since.is_some_and(|s| i >= s) {
            break;
        }
        let running = matches!(e.state.as_str(), "running" | "paused" | "restarting");
        if !running && !all {
            continue;
        }
        if !filters.matches("name", &e.name) || !filters.matches("id", &e.id) {
            continue;
        }
        if is_task == Some(true) {
            // No container here is a swarm task.
            continue;
        }
        if !filters.match_labels("label", &e.labels) {
            continue;
        }
        if let Some(n) = query.last
            && out.len() == n
        {
            break;
        }
        let exited_with = e.started && !running && exited.contains(&e.exit_code);
        if !exited.is_empty() && !exited_with {
            continue;
        }
        if !filters.matches("status", &e.state) {
            continue;
        }
        if !filters.exact_match("health", &e.health) {
            continue;
        }
        if filters.contains("volume")
            && !filters
                .values("volume")
                .any(|v| e.mounts.iter().any(|(src, dst)| src == v || dst == v))
        {
            continue;
        }
        if let Some(ids) = &ancestors
            && !ids.contains(&e.image_id)
        {
            continue;
        }
        if filters.contains("network")
            && !filters
                .values("network")
                .any(|n| e.networks.iter().any(|have| have == n))
        {
            continue;
        }
        // Docker's `publish` takes containers that publish the container
        // port, `expose` those that expose it (published or not).
        for (key, published_only) in [("publish", true), ("expose", false)] {
            if filters.contains(key)
                && !filters.values(key).any(|v| {
                    e.ports.iter().any(|(port, proto, published)| {
                        (*published || !published_only) && port_filter_takes(v, *port, proto)
                    })
                })
            {
                continue 'entries;
            }
        }
        out.push(i);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_filters_take_ports_ranges_and_protocols_like_docker() {
        assert!(port_filter_takes("80", 80, "tcp"));
        assert!(!port_filter_takes("80", 80, "udp"));
        assert!(port_filter_takes("53/udp", 53, "udp"));
        assert!(port_filter_takes("8000-8080/tcp", 8042, "tcp"));
        assert!(!port_filter_takes("8000-8080", 8081, "tcp"));
        assert!(!port_filter_takes("http", 80, "tcp"));
    }

    fn entry(name: &str, state: &str) -> PsEntry {
        PsEntry {
            id: format!("{:0<64}", format!("{name}0")),
            name: name.into(),
            state: state.into(),
            health: "none".into(),
            image_id: "sha256:aaa".into(),
            started: state != "created",
            ..PsEntry::default()
        }
    }

    /// Newest first: e (running), d (exited 1), c (exited 0), b (created),
    /// a (paused, labelled).
    fn entries() -> Vec<PsEntry> {
        let mut a = entry("a", "paused");
        a.labels.insert("tier".into(), "front".into());
        a.labels.insert("env".into(), "prod".into());
        a.mounts.push(("data".into(), "/data".into()));
        a.image_id = "sha256:bbb".into();
        let mut d = entry("d", "exited");
        d.exit_code = 1;
        let mut e = entry("e", "running");
        e.health = "healthy".into();
        vec![e, d, entry("c", "exited"), entry("b", "created"), a]
    }

    fn names(filters: &[&str], query: PsQuery) -> Result<Vec<String>, FilterError> {
        let list = entries();
        let args: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let images = |r: &str| (r == "other").then(|| "sha256:bbb".to_string());
        let picked = select(&list, &Filters::parse(&args)?, query, &images)?;
        Ok(picked.into_iter().map(|i| list[i].name.clone()).collect())
    }

    const ALL: PsQuery = PsQuery {
        all: true,
        last: None,
    };
    const RUNNING: PsQuery = PsQuery {
        all: false,
        last: None,
    };

    #[test]
    fn ps_filters_follow_moby() {
        let cases: &[(&[&str], PsQuery, &[&str])] = &[
            (&[], RUNNING, &["e", "a"]),
            (&[], ALL, &["e", "d", "c", "b", "a"]),
            (&["status=exited"], RUNNING, &["d", "c"]),
            (
                &["status=exited", "status=created"],
                RUNNING,
                &["d", "c", "b"],
            ),
            (&["status=paused"], RUNNING, &["a"]),
            (&["name=a"], ALL, &["a"]),
            (&["name=^[cd]$"], ALL, &["d", "c"]),
            (&["id=b0"], ALL, &["b"]),
            (&["label=tier"], ALL, &["a"]),
            (&["label=tier=front", "label=env=prod"], ALL, &["a"]),
            (&["label=tier=back"], ALL, &[]),
            (&["label=tier", "label=nope"], ALL, &[]),
            (&["exited=0"], ALL, &["c"]),
            (&["exited=0", "exited=1"], ALL, &["d", "c"]),
            (&["health=healthy"], ALL, &["e"]),
            (&["health=none"], ALL, &["d", "c", "b", "a"]),
            (&["before=c"], ALL, &["b", "a"]),
            (&["since=c"], ALL, &["e", "d"]),
            (&["since=b", "before=e"], ALL, &["d", "c"]),
            (&["volume=data"], ALL, &["a"]),
            (&["volume=/data"], ALL, &["a"]),
            (&["ancestor=other"], ALL, &["a"]),
            (&["ancestor=unknown"], ALL, &[]),
            (&["is-task=false"], ALL, &["e", "d", "c", "b", "a"]),
            (&["is-task=true"], ALL, &[]),
            (&["network=bridge"], ALL, &[]),
        ];
        for (filters, query, want) in cases {
            assert_eq!(
                names(filters, *query),
                Ok(want.iter().map(|s| s.to_string()).collect()),
                "{filters:?}"
            );
        }
    }

    #[test]
    fn last_counts_every_state_and_comes_before_status() {
        let last = |n| PsQuery {
            all: false,
            last: Some(n),
        };
        assert_eq!(names(&[], last(1)), Ok(vec!["e".to_string()]));
        assert_eq!(
            names(&[], last(3)),
            Ok(vec!["e".to_string(), "d".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn bad_filters_are_errors() {
        assert_eq!(names(&["bogus"], ALL), Err(FilterError::BadFormat));
        assert_eq!(
            names(&["color=red"], ALL),
            Err(FilterError::UnknownKey("color".into()))
        );
        assert!(matches!(
            names(&["status=sleeping"], ALL),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            names(&["health=fine"], ALL),
            Err(FilterError::BadHealth(_))
        ));
        assert!(matches!(
            names(&["exited=x"], ALL),
            Err(FilterError::BadExitCode(_))
        ));
        assert!(matches!(
            names(&["before=nope"], ALL),
            Err(FilterError::NoSuchContainer(_))
        ));
        assert!(matches!(
            names(&["is-task=maybe"], ALL),
            Err(FilterError::BadValue { .. })
        ));
    }

    #[test]
    fn keys_are_case_insensitive_and_trimmed() {
        let f = Filters::parse(&[" Label = a=b ".to_string()]).unwrap();
        assert!(f.contains("label"));
        assert_eq!(f.values("label").collect::<Vec<_>>(), ["a=b"]);
    }
}
