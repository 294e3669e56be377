//! `daemon.toml`: the daemon's settings in a file (`/etc/stack/daemon.toml`,
//! or `--config-file`), the way dockerd reads `daemon.json`. Keys are the
//! daemon's long flag names; a key the daemon does not know is an error that
//! points at it (file, line and column), and a setting given both as a flag
//! and in the file is refused with Docker's message rather than one silently
//! winning.
//!
//! ```toml
//! root = "/var/lib/stack"          # also `graph`, Docker's old name
//! hosts = ["unix:///run/stack/stack.sock", "tcp://0.0.0.0:2376"]
//! debug = true
//! tlsverify = true
//! tlscacert = "/etc/stack/ca.pem"
//! restart-delay = "100ms"
//! watch-dir = "/etc/stack/stacks.d"
//! watch-grace = "30s"
//! [default-ulimits]
//! nofile = { soft = 1024, hard = 4096 }
//! nproc = "512:1024"
//! [log-opts]
//! max-size = "10m"
//! max-file = 3
//! ```
//!
//! This module only reads and checks the file; applying it is the daemon's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::spec::duration::DurationSpec;
use crate::spec::ulimit::Ulimit;

/// Where the daemon looks when `--config-file` is not given.
pub const DEFAULT_PATH: &str = "/etc/stack/daemon.toml";

/// Every key the file may hold (besides `graph`, an alias of `root`).
pub const KEYS: [&str; 24] = [
    "root",
    "hosts",
    "pidfile",
    "debug",
    "group",
    "storage-driver",
    "registry-mirrors",
    "insecure-registries",
    "tls",
    "tlscert",
    "tlskey",
    "tlsverify",
    "tlscacert",
    "default-ulimits",
    "log-opts",
    "restart-delay",
    "restart-max-delay",
    "restart-reset-after",
    "dns",
    "dns-search",
    "dns-opts",
    "watch-dir",
    "watch-grace",
    "keep-on-delete",
];

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the daemon configuration {}", path.display())]
    #[diagnostic(code(stack::daemon::config::read))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, an unknown key or a value of the wrong kind.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(Box<InvalidConfig>),
    /// Settings given both as flags and in the file (dockerd's
    /// `getConflictFreeConfiguration`).
    #[error(
        "unable to configure the daemon with file {}: the following directives are specified both as a flag and in the configuration file: {}",
        path.display(),
        conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    #[diagnostic(code(stack::daemon::config::conflict))]
    Conflict {
        /// The file.
        path: PathBuf,
        /// Each setting given twice.
        conflicts: Vec<Conflict>,
    },
}

/// Where and how the file is wrong.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{location}: {message}")]
#[diagnostic(code(stack::daemon::config::invalid))]
pub struct InvalidConfig {
    /// `file:line:column`.
    pub location: String,
    /// What is wrong, in the TOML parser's words.
    pub message: String,
    /// The file's text.
    #[source_code]
    pub source_code: NamedSource<String>,
    /// Where in it.
    #[label("{label}")]
    pub span: SourceSpan,
    /// The label at the span.
    pub label: String,
    /// A suggestion.
    #[help]
    pub help: Option<String>,
}

/// One setting given both as a flag and in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key (and flag) name.
    pub key: String,
    /// The flag's value as given.
    pub from_flag: String,
    /// The file's value.
    pub from_file: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: (from flag: {}, from file: {})",
            self.key, self.from_flag, self.from_file
        )
    }
}

/// The daemon's settings from the file; `None` is "not in the file". Each
/// field is the daemon flag of the same name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonConfig {
    /// `--root` (Docker's old `graph` is read too).
    #[serde(alias = "graph", skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// `-H`/`--host`, repeated: `unix:///path`, `tcp://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// `--pidfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// `--debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// `--group`: the group that may use the API socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `--storage-driver` (only `overlay` exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
    /// `--bridge`: an existing bridge for the default network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// `--bip`: the default bridge's address/prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bip: Option<String>,
    /// `--fixed-cidr`: the default network's address range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_cidr: Option<String>,
    /// `--mtu`: the default network's MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `--ipv6`: IPv6 on the default network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// `--fixed-cidr-v6`: the default network's IPv6 subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_cidr_v6: Option<String>,
    /// `--iptables` (`--nat`, Docker's old name, is read too): false
    /// touches no firewall rule.
    #[serde(alias = "nat", skip_serializing_if = "Option::is_none")]
    pub iptables: Option<bool>,
    /// `--ip-masq`: masquerade traffic leaving bridge subnets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_masq: Option<bool>,
    /// `--icc`: containers on the default bridge may talk to each other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// `--ip`: the default host address of published ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// `--ip-forward`: turn on IPv4 forwarding at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<bool>,
    /// `--registry-mirror`, repeated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_mirrors: Option<Vec<String>>,
    /// `--insecure-registry`, repeated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_registries: Option<Vec<String>>,
    /// `--tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// `--tlscert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlscert: Option<PathBuf>,
    /// `--tlskey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlskey: Option<PathBuf>,
    /// `--tlsverify`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlsverify: Option<bool>,
    /// `--tlscacert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlscacert: Option<PathBuf>,
    /// `--default-ulimit`, repeated: a table of limit name → `{ soft, hard }`,
    /// `"soft:hard"` or one number for both.
    #[serde(
        default,
        deserialize_with = "ulimits",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_ulimits: Option<Vec<Ulimit>>,
    /// `--log-opt`, repeated: a table of option → value.
    #[serde(
        default,
        deserialize_with = "log_opts",
        skip_serializing_if = "Option::is_none"
    )]
    pub log_opts: Option<BTreeMap<String, String>>,
    /// `--restart-delay`: the first wait before restarting a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_delay: Option<DurationSpec>,
    /// `--restart-max-delay`: the longest wait the backoff grows to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_max_delay: Option<DurationSpec>,
    /// `--restart-reset-after`: a run this long resets the backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_reset_after: Option<DurationSpec>,
    /// `--dns`, repeated: name servers for containers and upstreams of the
    /// embedded DNS server, instead of the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<std::net::IpAddr>>,
    /// `--dns-search`, repeated: containers' search domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_search: Option<Vec<String>>,
    /// `--dns-opt`, repeated: containers' resolver options (dockerd's
    /// `dns-opts` key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_opts: Option<Vec<String>>,
    /// `--watch-dir`: the directory whose stack files are kept converged
    /// (`""` turns the default off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_dir: Option<PathBuf>,
    /// `--watch-grace`: how long a stack outlives its deleted file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_grace: Option<DurationSpec>,
    /// `--keep-on-delete`: a deleted file never takes its stack down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_on_delete: Option<bool>,
}

/// A limit's name, checked where it is written.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct UlimitName(String);

impl<'de> Deserialize<'de> for UlimitName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if !crate::spec::ulimit::ULIMIT_NAMES.contains(&name.as_str()) {
            return Err(de::Error::custom(format!(
                "invalid ulimit type: {name} (one of {})",
                crate::spec::ulimit::ULIMIT_NAMES.join(", ")
            )));
        }
        Ok(UlimitName(name))
    }
}

/// A limit's values, `"soft:hard"` in `--default-ulimit`'s grammar, checked
/// where they are written.
struct UlimitLimits(String);

impl<'de> Deserialize<'de> for UlimitLimits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, \"soft:hard\" or { soft = N, hard = N }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
                let (mut soft, mut hard) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "soft" => soft = Some(map.next_value::<i64>()?),
                        "hard" => hard = Some(map.next_value::<i64>()?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{other}` in a ulimit: it has `soft` and `hard`"
                            )));
                        }
                    }
                }
                match (soft, hard) {
                    (Some(s), Some(h)) => Ok(format!("{s}:{h}")),
                    (None, _) => Err(de::Error::missing_field("soft")),
                    (_, None) => Err(de::Error::missing_field("hard")),
                }
            }
        }
        let limits = d.deserialize_any(Visit)?;
        // The grammar's checks (numbers, soft not above hard), on any name.
        format!("core={limits}")
            .parse::<Ulimit>()
            .map_err(de::Error::custom)?;
        Ok(UlimitLimits(limits))
    }
}

fn ulimits<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Ulimit>>, D::Error> {
    let table = BTreeMap::<UlimitName, UlimitLimits>::deserialize(d)?;
    table
        .into_iter()
        .map(|(name, limits)| {
            format!("{}={}", name.0, limits.0)
                .parse::<Ulimit>()
                .map_err(de::Error::custom)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A log option's value: TOML may write numbers and booleans bare.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(Visit).map(Scalar)
    }
}

fn log_opts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let table = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(Some(table.into_iter().map(|(k, v)| (k, v.0)).collect()))
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Reads the configuration file at `path`.
pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Reads the configuration file at `path` when it exists (the default file
/// is optional); an empty configuration when it does not.
pub fn load_if_exists(path: &Path) -> Result<DaemonConfig, ConfigError> {
    match load(path) {
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(DaemonConfig::default())
        }
        other => other,
    }
}

/// An [`ConfigError::Invalid`] at `span` of `text`.
fn invalid(
    path: &Path,
    text: &str,
    span: std::ops::Range<usize>,
    message: String,
    label: String,
    help: Option<String>,
) -> ConfigError {
    let (line, column) = line_column(text, span.start);
    ConfigError::Invalid(Box::new(InvalidConfig {
        location: format!("{}:{line}:{column}", path.display()),
        message,
        source_code: NamedSource::new(path.display().to_string(), text.to_string()),
        span: SourceSpan::from(span),
        label,
        help,
    }))
}

/// Parses the text of a configuration file; `path` names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
    // `graph` is `root` under its old name: both at once is one setting
    // given twice, which serde would report at the table, not at the key.
    if let Ok(table) = toml::de::DeTable::parse(text) {
        let key_span = |name: &str| {
            table
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == name)
                .map(|(k, _)| k.span())
        };
        if let (Some(_), Some(graph)) = (key_span("root"), key_span("graph")) {
            return Err(invalid(
                path,
                text,
                graph,
                "`graph` and `root` are both set".into(),
                "the old name of `root`".into(),
                Some("keep only `root`".into()),
            ));
        }
    }
    toml::from_str::<DaemonConfig>(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let raw = e.message().trim().to_string();
        match unknown_key(&raw) {
            Some(key) => {
                let suggestion = KEYS
                    .iter()
                    .chain(std::iter::once(&"graph"))
                    .map(|k| (strsim::jaro_winkler(k, &key), *k))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, k)| format!("did you mean `{k}`?"));
                invalid(
                    path,
                    text,
                    span,
                    format!("unknown key `{key}`"),
                    "not a daemon setting".to_string(),
                    suggestion.or_else(|| Some(format!("the keys are: {}", KEYS.join(", ")))),
                )
            }
            None => invalid(path, text, span, raw.clone(), raw, None),
        }
    })
}

/// The key of serde's "unknown field `x`, expected …".
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

impl DaemonConfig {
    /// The keys the file sets.
    pub fn keys(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Refuses settings given both on the command line and in the file at
    /// `path` (dockerd does the same rather than let one win). `flags` are
    /// the flags given on the command line: the key they set (the flag's
    /// long name; `host` and `H` stand for `hosts`, `default-ulimit` for
    /// `default-ulimits`, …) and their value as written.
    pub fn check_conflicts(
        &self,
        path: &Path,
        flags: &[(String, String)],
    ) -> Result<(), ConfigError> {
        let file = serde_json::to_value(self).unwrap_or_default();
        let mut conflicts: Vec<Conflict> = Vec::new();
        for (flag, value) in flags {
            let key = key_of_flag(flag);
            let Some(in_file) = file.get(key) else {
                continue;
            };
            let from_file = match in_file {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match conflicts.iter_mut().find(|c| c.key == key) {
                // A repeated flag (-H a -H b) is one conflict.
                Some(c) => {
                    c.from_flag.push_str(", ");
                    c.from_flag.push_str(value);
                }
                None => conflicts.push(Conflict {
                    key: key.to_string(),
                    from_flag: value.clone(),
                    from_file,
                }),
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Conflict {
                path: path.to_path_buf(),
                conflicts,
            })
        }
    }
}

/// The file key a command-line flag sets.
fn key_of_flag(flag: &str) -> &str {
    let flag = flag.trim_start_matches('-');
    match flag {
        "H" | "host" => "hosts",
        "G" => "group",
        "D" => "debug",
        "p" => "pidfile",
        "s" => "storage-driver",
        "graph" | "g" | "data-root" => "root",
        "default-ulimit" => "default-ulimits",
        "log-opt" => "log-opts",
        "registry-mirror" => "registry-mirrors",
        "nat" => "iptables",
        "insecure-registry" => "insecure-registries",
        "dns-opt" => "dns-opts",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parsed(text: &str) -> Result<DaemonConfig, ConfigError> {
        parse(Path::new("/etc/stack/daemon.toml"), text)
    }

    #[test]
    fn the_watch_directory_settings_are_read_and_conflict_with_their_flags() {
        let path = Path::new("/etc/stack/daemon.toml");
        let c =
            parsed("watch-dir = \"/srv/stacks.d\"\nwatch-grace = \"5s\"\nkeep-on-delete = true\n")
                .unwrap();
        assert_eq!(c.watch_dir, Some(PathBuf::from("/srv/stacks.d")));
        assert_eq!(c.watch_grace.map(|g| g.0), Some(Duration::from_secs(5)));
        assert_eq!(c.keep_on_delete, Some(true));
        let flags = [("watch-dir".to_string(), "/elsewhere".to_string())];
        assert!(c.check_conflicts(path, &flags).is_err());
    }

    #[test]
    fn every_key_is_read() {
        let c = parsed(
            r#"
root = "/srv/stack"
hosts = ["unix:///run/s.sock", "tcp://0.0.0.0:2376"]
pidfile = "/run/s.pid"
debug = true
group = "stack"
storage-driver = "overlay"
registry-mirrors = ["https://mirror.example"]
insecure-registries = ["reg.local:5000"]
tls = true
tlscert = "/c/cert.pem"
tlskey = "/c/key.pem"
tlsverify = true
tlscacert = "/c/ca.pem"
restart-delay = "100ms"
restart-max-delay = "1m"
restart-reset-after = 10

[default-ulimits]
nofile = { soft = 1024, hard = 4096 }
nproc = "512:1024"
core = 0
stack = { soft = 8192, hard = -1 }

[log-opts]
max-size = "10m"
max-file = 3
"#,
        )
        .unwrap();
        assert_eq!(c.root, Some(PathBuf::from("/srv/stack")));
        assert_eq!(c.hosts.as_ref().unwrap().len(), 2);
        assert_eq!(c.debug, Some(true));
        assert_eq!(c.group.as_deref(), Some("stack"));
        assert_eq!(c.storage_driver.as_deref(), Some("overlay"));
        assert_eq!(c.tlsverify, Some(true));
        assert_eq!(c.tlscacert, Some(PathBuf::from("/c/ca.pem")));
        assert_eq!(
            c.restart_delay,
            Some(DurationSpec(Duration::from_millis(100)))
        );
        assert_eq!(
            c.restart_max_delay,
            Some(DurationSpec(Duration::from_secs(60)))
        );
        assert_eq!(
            c.restart_reset_after,
            Some(DurationSpec(Duration::from_secs(10)))
        );
        let ulimits: Vec<String> = c
            .default_ulimits
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ulimits,
            [
                "core=0",
                "nofile=1024:4096",
                "nproc=512:1024",
                "stack=8192:-1"
            ]
        );
        let opts = c.log_opts.unwrap();
        assert_eq!(opts["max-size"], "10m");
        assert_eq!(opts["max-file"], "3");
    }

    #[test]
    fn graph_is_dockers_old_name_for_root() {
        let c = parsed("graph = \"/old\"\n").unwrap();
        assert_eq!(c.root, Some(PathBuf::from("/old")));
        assert_eq!(c.keys(), ["root"]);
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(parsed("").unwrap(), DaemonConfig::default());
        assert!(DaemonConfig::default().keys().is_empty());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_column() {
        let e = parsed("debug = true\n  tlsverfy = true\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/stack/daemon.toml:2:3: unknown key `tlsverfy`"
        );
        let ConfigError::Invalid(invalid) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(invalid.span.offset(), 15);
        assert_eq!(invalid.help.as_deref(), Some("did you mean `tlsverify`?"));
        // Inside a table too.
        let e =
            parsed("[default-ulimits]\nnofile = { soft = 1, hard = 2, max = 3 }\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/stack/daemon.toml:2:10: unknown key `max` in a ulimit: it has `soft` and `hard`"
        );
        // `graph` next to `root` is the same setting twice.
        let e = parsed("root = \"/a\"\ngraph = \"/b\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/stack/daemon.toml:2:1: `graph` and `root` are both set"
        );
    }

    #[test]
    fn wrong_values_point_at_themselves() {
        let e = parsed("debug = \"yes\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("/etc/stack/daemon.toml:1:9: "),
            "{e}"
        );
        let e = parsed("restart-delay = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = parsed("[default-ulimits]\nnofile = \"10:5\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/stack/daemon.toml:2:10: ulimit soft limit"),
            "{e}"
        );
        let e = parsed("[default-ulimits]\nbogus = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/stack/daemon.toml:2:1: invalid ulimit type: bogus"),
            "{e}"
        );
        let e = parsed("[default-ulimits]\nnofile = true\n").unwrap_err();
        assert!(e.to_string().contains("\"soft:hard\""), "{e}");
        let e = parsed("hosts = [\n").unwrap_err();
        assert!(e.to_string().starts_with("/etc/stack/daemon.toml:"), "{e}");
    }

    #[test]
    fn a_flag_also_in_the_file_is_refused_like_dockerd() {
        let path = Path::new("/etc/stack/daemon.toml");
        let c = parsed("debug = false\nhosts = [\"unix:///a.sock\"]\ngroup = \"g\"\n").unwrap();
        let flags = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(
            c.check_conflicts(path, &flags(&[("pidfile", "/p"), ("tls", "true")]))
                .is_ok()
        );
        let e = c
            .check_conflicts(
                path,
                &flags(&[
                    ("debug", "true"),
                    ("-H", "unix:///b.sock"),
                    ("host", "tcp://h:1"),
                ]),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to configure the daemon with file /etc/stack/daemon.toml: the following \
             directives are specified both as a flag and in the configuration file: debug: \
             (from flag: true, from file: false), hosts: (from flag: unix:///b.sock, tcp://h:1, \
             from file: [\"unix:///a.sock\"])"
        );
    }

    #[test]
    fn a_missing_default_file_is_no_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("daemon.toml");
        assert_eq!(load_if_exists(&missing).unwrap(), DaemonConfig::default());
        let e = load(&missing).unwrap_err();
        assert!(e.to_string().contains("daemon.toml"), "{e}");
        std::fs::write(&missing, "debug = true\n").unwrap();
        assert_eq!(load_if_exists(&missing).unwrap().debug, Some(true));
    }

    #[test]
    fn line_and_column_count_characters() {
        // "é" is two bytes and one column.
        assert_eq!(line_column("a\nbé c", 5), (2, 3));
        assert_eq!(line_column("a\nbé c", 4), (2, 2));
        assert_eq!(line_column("abc", 0), (1, 1));
    }
}
