//! Decodes the canonical value tree (the TOML layout; KDL and compose are mapped
//! onto it first) into the typed model, reporting every problem with its span.
//!
//! The decoder never stops at the first mistake: a bad value is reported and
//! skipped, and decoding goes on so one run shows everything to fix.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use miette::NamedSource;

use super::device::DeviceMapping;
use super::diag::{FileId, Origin, Problem, ProblemKind, Problems, Span};
use super::duration::DurationSpec;
use super::extra_host::ExtraHost;
use super::interpolate::Lookup;
use super::model::{
    BackoffSpec, BuildSpec, Condition, Declared, Dependency, ExposeSpec, HealthCommand, HealthSpec,
    IpNet, LimitsSpec, Link, Located, LoggingSpec, NetworkDriver, NetworkMode, NetworkSpec,
    OnUnhealthy, RestartSpec, ServiceNetwork, ServiceSpec, StackSpec, StartLimit, SwapLimit,
    UpdateOrder, VolumeSpec, VolumesFrom, VolumesFromSource,
};
use super::mount::{MountKind, MountSpec, Propagation, parse_tmpfs};
use super::port::{PortRange, PortSpec, Protocol};
use super::restart::{RestartPolicyName, parse_restart};
use super::size::ByteSize;
use super::tree::{Entry, Kind, Value};
use super::ulimit::Ulimit;
use crate::words::split_words;

/// Keys of the stack file's top level.
pub const TOP_KEYS: &[&str] = &["name", "services", "networks", "volumes"];

/// Keys of a service.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "env",
    "env-file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "volumes-from",
    "networks",
    "network-mode",
    "links",
    "depends-on",
    "restart",
    "health",
    "limits",
    "user",
    "workdir",
    "hostname",
    "domainname",
    "dns",
    "dns-search",
    "extra-hosts",
    "cap-add",
    "cap-drop",
    "privileged",
    "read-only",
    "security-opt",
    "sysctls",
    "stop-signal",
    "stop-grace-period",
    "update",
    "labels",
    "replicas",
    "init",
    "tty",
    "stdin-open",
    "logging",
    "profiles",
];

const BUILD_KEYS: &[&str] = &["context", "dockerfile", "args", "target", "no-cache"];
const RESTART_KEYS: &[&str] = &["policy", "max-retries", "backoff", "start-limit"];
const BACKOFF_KEYS: &[&str] = &["min", "max", "factor", "reset-after"];
const START_LIMIT_KEYS: &[&str] = &["burst", "interval"];
const UPDATE_KEYS: &[&str] = &["order"];
const HEALTH_KEYS: &[&str] = &[
    "command",
    "interval",
    "timeout",
    "retries",
    "start-period",
    "on-unhealthy",
];
const LIMITS_KEYS: &[&str] = &[
    "memory",
    "memory-swap",
    "memory-reservation",
    "cpus",
    "cpu-shares",
    "cpuset",
    "pids",
    "blkio-weight",
    "shm-size",
    "ulimits",
    "oom-score-adj",
    "devices",
];
const LOGGING_KEYS: &[&str] = &["max-size", "max-files"];
const MOUNT_KEYS: &[&str] = &[
    "type",
    "source",
    "target",
    "read-only",
    "propagation",
    "nocopy",
    "size",
    "mode",
];
const SERVICE_NETWORK_KEYS: &[&str] = &["name", "aliases", "ipv4", "ipv6"];
const DEPENDENCY_KEYS: &[&str] = &["service", "condition", "restart-dependents"];
const LINK_KEYS: &[&str] = &["service", "alias"];
const EXTRA_HOST_KEYS: &[&str] = &["host", "ip"];
const NETWORK_KEYS: &[&str] = &[
    "driver", "subnet", "gateway", "ip-range", "internal", "ipv6", "subnet6", "gateway6", "bridge",
    "parent", "vlan", "external", "labels",
];
const VOLUME_KEYS: &[&str] = &["driver", "driver-opts", "labels", "external"];

/// What the decoder needs besides the tree.
pub struct DecodeContext<'a> {
    /// The file being decoded.
    pub file: FileId,
    /// Its text, for diagnostics.
    pub source: Arc<NamedSource<String>>,
    /// Relative paths resolve against this directory.
    pub base_dir: &'a Path,
    /// Variables for `env` entries given without a value and `~` in paths.
    pub vars: &'a dyn Lookup,
}

impl std::fmt::Debug for DecodeContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The variables are left out: they may hold secrets.
        f.debug_struct("DecodeContext")
            .field("file", &self.file)
            .field("base_dir", &self.base_dir)
            .finish_non_exhaustive()
    }
}

/// Decodes a canonical tree into a stack, recording problems.
pub fn decode_stack(tree: &Value, cx: &DecodeContext<'_>, problems: &mut Problems) -> StackSpec {
    let mut d = Decoder { cx, problems };
    d.stack(tree)
}

struct Decoder<'a, 'p> {
    cx: &'a DecodeContext<'a>,
    problems: &'p mut Problems,
}

/// The closest known key to `key`, for "did you mean" hints.
pub fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

impl Decoder<'_, '_> {
    fn origin(&self, span: Span) -> Origin {
        Origin {
            file: self.cx.file,
            span,
        }
    }

    fn report(&mut self, kind: ProblemKind, span: Span, message: String, label: &str) {
        let problem = Problem::error(kind, message).at(&self.cx.source, span, label);
        self.problems.push(problem);
    }

    fn wrong_type(&mut self, v: &Value, expected: &str) {
        self.report(
            ProblemKind::WrongType,
            v.span,
            format!("expected {expected}, found {}", v.type_name()),
            &format!("expected {expected}"),
        );
    }

    fn invalid(&mut self, v: &Value, what: &str, reason: impl std::fmt::Display) {
        let reason = reason.to_string();
        // Value parsers often say "invalid <what>: …" themselves.
        let message = if reason.starts_with(&format!("invalid {what}")) {
            reason.clone()
        } else {
            format!("invalid {what}: {reason}")
        };
        self.report(ProblemKind::InvalidValue, v.span, message, &reason);
    }

    /// The entries of a map, after reporting unknown and duplicate keys. Unknown
    /// keys are dropped from the result.
    fn entries<'v>(&mut self, v: &'v Value, what: &str, known: &[&str]) -> Vec<&'v Entry> {
        let Kind::Map(entries) = &v.kind else {
            self.wrong_type(v, &format!("a map ({what})"));
            return Vec::new();
        };
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !known.contains(&e.key.as_str()) {
                let mut problem = Problem::error(
                    ProblemKind::UnknownKey,
                    format!("unknown key `{}` in {what}", e.key),
                )
                .at(&self.cx.source, e.key_span, "unknown key");
                if let Some(s) = suggest(&e.key, known) {
                    problem = problem.help(format!("did you mean `{s}`?"));
                }
                self.problems.push(problem);
                continue;
            }
            if let Some(first) = seen.insert(&e.key, e.key_span) {
                let problem = Problem::error(
                    ProblemKind::Duplicate,
                    format!("`{}` is given twice in {what}", e.key),
                )
                .at(&self.cx.source, e.key_span, "given again here")
                .also(first, "first given here");
                self.problems.push(problem);
                continue;
            }
            out.push(e);
        }
        out
    }

    fn string(&mut self, v: &Value) -> Option<String> {
        match &v.kind {
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(v, "a string");
                None
            }
        }
    }

    /// A string, or a number/boolean written where compose allows one.
    fn text(&mut self, v: &Value) -> Option<String> {
        let text = v.scalar_text();
        if text.is_none() {
            self.wrong_type(v, "a string");
        }
        text
    }

    fn boolean(&mut self, v: &Value) -> Option<bool> {
        match &v.kind {
            Kind::Bool(b) => Some(*b),
            Kind::Str(s) if s == "true" => Some(true),
            Kind::Str(s) if s == "false" => Some(false),
            _ => {
                self.wrong_type(v, "a boolean");
                None
            }
        }
    }

    fn integer<T: TryFrom<i64>>(&mut self, v: &Value, what: &str, range: &str) -> Option<T> {
        let n = match &v.kind {
            Kind::Int(n) => *n,
            Kind::Str(s) => match s.trim().parse::<i64>() {
                Ok(n) => n,
                Err(_) => {
                    self.wrong_type(v, "an integer");
                    return None;
                }
            },
            _ => {
                self.wrong_type(v, "an integer");
                return None;
            }
        };
        match T::try_from(n) {
            Ok(t) => Some(t),
            Err(_) => {
                self.invalid(v, what, format!("{n} is out of range ({range})"));
                None
            }
        }
    }

    fn float(&mut self, v: &Value, what: &str) -> Option<f64> {
        let f = match &v.kind {
            Kind::Float(f) => *f,
            #[allow(clippy::cast_precision_loss)]
            Kind::Int(n) => *n as f64,
            Kind::Str(s) => match s.trim().parse::<f64>() {
                Ok(f) => f,
                Err(_) => {
                    self.wrong_type(v, "a number");
                    return None;
                }
            },
            _ => {
                self.wrong_type(v, "a number");
                return None;
            }
        };
        if !f.is_finite() || f < 0.0 {
            self.invalid(v, what, format!("{f} must be a non-negative number"));
            return None;
        }
        Some(f)
    }

    /// Parses a scalar with `FromStr`, reporting the parser's reason.
    fn parsed<T: FromStr>(&mut self, v: &Value, what: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(v)?;
        match text.parse::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.invalid(v, what, e);
                None
            }
        }
    }

    fn size(&mut self, v: &Value, what: &str) -> Option<ByteSize> {
        self.parsed(v, what)
    }

    fn duration(&mut self, v: &Value, what: &str) -> Option<DurationSpec> {
        match &v.kind {
            Kind::Int(n) if *n >= 0 => Some(DurationSpec(std::time::Duration::from_secs(
                n.unsigned_abs(),
            ))),
            _ => self.parsed(v, what),
        }
    }

    /// A list of scalars; a single scalar counts as a list of one.
    fn items<'v>(&mut self, v: &'v Value) -> Vec<&'v Value> {
        match &v.kind {
            Kind::List(items) => items.iter().collect(),
            Kind::Null => Vec::new(),
            _ => vec![v],
        }
    }

    fn strings(&mut self, v: &Value) -> Vec<String> {
        self.items(v)
            .into_iter()
            .filter_map(|item| self.text(item))
            .collect()
    }

    /// A command: a list is the argv, a string is split into words like a shell.
    fn argv(&mut self, v: &Value, what: &str) -> Option<Vec<String>> {
        match &v.kind {
            Kind::Str(s) => match split_words(s) {
                Ok(words) => Some(words),
                Err(e) => {
                    self.invalid(v, what, e);
                    None
                }
            },
            Kind::List(_) => Some(self.strings(v)),
            _ => {
                self.wrong_type(v, "a string or a list of strings");
                None
            }
        }
    }

    /// `KEY=value` pairs: a map, or a list of `KEY=value` strings. A key given
    /// without a value takes it from the environment (`env` only), and is left
    /// out when the environment does not have it, like compose.
    fn key_values(&mut self, v: &Value, what: &str, from_env: bool) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &v.kind {
            Kind::Map(entries) => {
                for e in entries {
                    if e.key.is_empty() {
                        self.report(
                            ProblemKind::InvalidValue,
                            e.key_span,
                            format!("empty name in {what}"),
                            "empty name",
                        );
                        continue;
                    }
                    let value = match &e.value.kind {
                        Kind::Null if from_env => self.cx.vars.lookup(&e.key),
                        Kind::Null => Some(String::new()),
                        _ => self.text(&e.value),
                    };
                    if let Some(value) = value {
                        out.insert(e.key.clone(), value);
                    }
                }
            }
            Kind::List(items) => {
                for item in items {
                    let Some(text) = self.text(item) else {
                        continue;
                    };
                    let (key, value) = match text.split_once('=') {
                        Some((k, val)) => (k.to_string(), Some(val.to_string())),
                        None if from_env => {
                            let val = self.cx.vars.lookup(&text);
                            (text, val)
                        }
                        None => (text, Some(String::new())),
                    };
                    if key.is_empty() {
                        self.invalid(item, what, "empty name before `=`");
                        continue;
                    }
                    if let Some(value) = value {
                        out.insert(key, value);
                    }
                }
            }
            Kind::Null => {}
            _ => self.wrong_type(v, "a map or a list of KEY=value strings"),
        }
        out
    }

    fn path(&self, raw: &str) -> PathBuf {
        resolve_path(raw, self.cx.base_dir, self.cx.vars)
    }

    fn stack(&mut self, tree: &Value) -> StackSpec {
        let mut stack = StackSpec::default();
        for e in self.entries(tree, "the stack file", TOP_KEYS) {
            match e.key.as_str() {
                "name" => stack.name = self.stack_name(&e.value),
                "services" => {
                    for (name, span, body) in self.named(&e.value, "services") {
                        let service = self.service(body, self.origin(span));
                        stack.services.insert(name, service);
                    }
                }
                "networks" => {
                    for (name, span, body) in self.named(&e.value, "networks") {
                        let network = self.network(body, self.origin(span));
                        stack.networks.insert(name, network);
                    }
                }
                "volumes" => {
                    for (name, span, body) in self.named(&e.value, "volumes") {
                        let volume = self.volume(body, self.origin(span));
                        stack.volumes.insert(name, volume);
                    }
                }
                _ => {}
            }
        }
        stack
    }

    fn stack_name(&mut self, v: &Value) -> Option<String> {
        let name = self.string(v)?;
        if is_valid_name(&name) {
            Some(name)
        } else {
            self.invalid(v, "stack name", NAME_RULE);
            None
        }
    }

    /// The entries of a `services`/`networks`/`volumes` table, names checked.
    fn named<'v>(&mut self, v: &'v Value, what: &str) -> Vec<(String, Span, &'v Value)> {
        let mut out = Vec::new();
        let Kind::Map(entries) = &v.kind else {
            self.wrong_type(v, &format!("a map of {what}"));
            return out;
        };
        let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
        for e in entries {
            if !is_valid_name(&e.key) {
                self.report(
                    ProblemKind::InvalidValue,
                    e.key_span,
                    format!("invalid name `{}` in {what}: {NAME_RULE}", e.key),
                    "invalid name",
                );
                continue;
            }
            if let Some(first) = seen.insert(&e.key, e.key_span) {
                let problem = Problem::error(
                    ProblemKind::Duplicate,
                    format!("`{}` is declared twice in {what}", e.key),
                )
                .at(&self.cx.source, e.key_span, "declared again here")
                .also(first, "first declared here");
                self.problems.push(problem);
                continue;
            }
            out.push((e.key.clone(), e.key_span, &e.value));
        }
        out
    }

    fn service(&mut self, v: &Value, origin: Origin) -> ServiceSpec {
        let mut s = ServiceSpec {
            origin: Declared(origin),
            ..ServiceSpec::default()
        };
        if matches!(v.kind, Kind::Null) {
            return s;
        }
        for e in self.entries(v, "a service", SERVICE_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "image" => s.image = self.string(val),
                "build" => s.build = self.build(val),
                "command" => s.command = self.argv(val, "command"),
                "entrypoint" => s.entrypoint = self.argv(val, "entrypoint"),
                "env" => s.env = self.key_values(val, "env", true),
                "env-file" => {
                    for item in self.items(val) {
                        if let Some(p) = self.text(item) {
                            let path = self.path(&p);
                            s.env_file.push(Located::new(path, self.origin(item.span)));
                        }
                    }
                }
                "ports" => {
                    for item in self.items(val) {
                        if let Some(p) = self.port(item) {
                            s.ports.push(Located::new(p, self.origin(item.span)));
                        }
                    }
                }
                "expose" => {
                    for item in self.items(val) {
                        if let Some(x) = self.expose(item) {
                            s.expose.push(x);
                        }
                    }
                }
                "volumes" => {
                    for item in self.items(val) {
                        if let Some(m) = self.mount(item) {
                            s.volumes.push(Located::new(m, self.origin(item.span)));
                        }
                    }
                }
                "tmpfs" => {
                    for item in self.items(val) {
                        if let Some(m) = self.tmpfs(item) {
                            s.volumes.push(Located::new(m, self.origin(item.span)));
                        }
                    }
                }
                "volumes-from" => {
                    for item in self.items(val) {
                        if let Some(text) = self.text(item) {
                            match parse_volumes_from(&text) {
                                Ok(vf) => s
                                    .volumes_from
                                    .push(Located::new(vf, self.origin(item.span))),
                                Err(e) => self.invalid(item, "volumes-from", e),
                            }
                        }
                    }
                }
                "networks" => s.networks = self.service_networks(val),
                "network-mode" => {
                    if let Some(text) = self.string(val) {
                        match parse_network_mode(&text) {
                            Ok(mode) => {
                                s.network_mode = Some(Located::new(mode, self.origin(val.span)))
                            }
                            Err(e) => self.invalid(val, "network-mode", e),
                        }
                    }
                }
                "links" => {
                    for item in self.items(val) {
                        if let Some(link) = self.link(item) {
                            s.links.push(Located::new(link, self.origin(item.span)));
                        }
                    }
                }
                "depends-on" => s.depends_on = self.depends_on(val),
                "restart" => s.restart = self.restart(val),
                "health" => s.health = self.health(val),
                "update" => s.update_order = self.update(val),
                "limits" => s.limits = self.limits(val),
                "user" => s.user = self.text(val),
                "workdir" => s.workdir = self.string(val),
                "hostname" => s.hostname = self.string(val),
                "domainname" => s.domainname = self.string(val),
                "dns" => {
                    for item in self.items(val) {
                        if let Some(ip) = self.parsed::<IpAddr>(item, "dns server") {
                            s.dns.push(ip);
                        }
                    }
                }
                "dns-search" => s.dns_search = self.strings(val),
                "extra-hosts" => s.extra_hosts = self.extra_hosts(val),
                "cap-add" => s.cap_add = self.capabilities(val),
                "cap-drop" => s.cap_drop = self.capabilities(val),
                "privileged" => s.privileged = self.boolean(val),
                "read-only" => s.read_only = self.boolean(val),
                "security-opt" => s.security_opt = self.strings(val),
                "sysctls" => s.sysctls = self.key_values(val, "sysctls", false),
                "stop-signal" => s.stop_signal = self.signal(val),
                "stop-grace-period" => {
                    s.stop_grace_period = self.duration(val, "stop-grace-period")
                }
                "labels" => s.labels = self.key_values(val, "labels", false),
                "replicas" => s.replicas = self.integer(val, "replicas", "0..=4294967295"),
                "init" => s.init = self.boolean(val),
                "tty" => s.tty = self.boolean(val),
                "stdin-open" => s.stdin_open = self.boolean(val),
                "logging" => s.logging = self.logging(val),
                "profiles" => s.profiles = self.strings(val),
                _ => {}
            }
        }
        s
    }

    fn build(&mut self, v: &Value) -> Option<BuildSpec> {
        if let Kind::Str(context) = &v.kind {
            return Some(BuildSpec {
                context: self.path(context),
                ..BuildSpec::default()
            });
        }
        let mut b = BuildSpec {
            context: self.cx.base_dir.to_path_buf(),
            ..BuildSpec::default()
        };
        for e in self.entries(v, "build", BUILD_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "context" => {
                    if let Some(c) = self.string(val) {
                        b.context = self.path(&c);
                    }
                }
                "dockerfile" => b.dockerfile = self.string(val).map(PathBuf::from),
                "args" => b.args = self.key_values(val, "build args", true),
                "target" => b.target = self.string(val),
                "no-cache" => b.no_cache = self.boolean(val).unwrap_or(false),
                _ => {}
            }
        }
        Some(b)
    }

    fn port(&mut self, v: &Value) -> Option<PortSpec> {
        self.parsed(v, "port")
    }

    fn expose(&mut self, v: &Value) -> Option<ExposeSpec> {
        let text = self.text(v)?;
        let (ports, protocol) = match text.split_once('/') {
            Some((p, proto)) => (p, proto.parse::<Protocol>().map_err(|e| e.to_string())),
            None => (text.as_str(), Ok(Protocol::Tcp)),
        };
        let protocol = match protocol {
            Ok(p) => p,
            Err(e) => {
                self.invalid(v, "exposed port", e);
                return None;
            }
        };
        match ports.parse::<PortRange>() {
            Ok(ports) => Some(ExposeSpec { ports, protocol }),
            Err(e) => {
                self.invalid(v, "exposed port", e);
                None
            }
        }
    }

    fn mount(&mut self, v: &Value) -> Option<MountSpec> {
        let mut m = match &v.kind {
            Kind::Str(s) => match s.parse::<MountSpec>() {
                Ok(m) => m,
                Err(e) => {
                    self.invalid(v, "volume", e);
                    return None;
                }
            },
            Kind::Map(_) => self.mount_map(v)?,
            _ => {
                self.wrong_type(v, "a volume string or map");
                return None;
            }
        };
        if m.kind == MountKind::Bind
            && let Some(source) = &m.source
        {
            m.source = Some(self.path(source).to_string_lossy().into_owned());
        }
        Some(m)
    }

    fn mount_map(&mut self, v: &Value) -> Option<MountSpec> {
        let mut kind = None;
        let mut source = None;
        let mut target = None;
        let mut m = MountSpec::new(MountKind::Volume, None, String::new());
        for e in self.entries(v, "a volume", MOUNT_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "type" => {
                    kind = match self.string(val).as_deref() {
                        Some("bind") => Some(MountKind::Bind),
                        Some("volume") => Some(MountKind::Volume),
                        Some("tmpfs") => Some(MountKind::Tmpfs),
                        Some(other) => {
                            self.invalid(
                                val,
                                "volume type",
                                format!("`{other}` is not one of bind, volume, tmpfs"),
                            );
                            None
                        }
                        None => None,
                    }
                }
                "source" => source = self.string(val),
                "target" => target = self.string(val),
                "read-only" => m.read_only = self.boolean(val).unwrap_or(false),
                "propagation" => m.propagation = self.parsed::<Propagation>(val, "propagation"),
                "nocopy" => m.nocopy = self.boolean(val).unwrap_or(false),
                "size" => m.tmpfs_size = self.size(val, "tmpfs size"),
                "mode" => {
                    m.tmpfs_mode = match &val.kind {
                        Kind::Int(n) => u32::try_from(*n).ok(),
                        Kind::Str(s) => u32::from_str_radix(s, 8).ok(),
                        _ => None,
                    };
                    if m.tmpfs_mode.is_none() {
                        self.invalid(val, "tmpfs mode", "expected an octal mode like \"1777\"");
                    }
                }
                _ => {}
            }
        }
        let Some(target) = target else {
            self.report(
                ProblemKind::InvalidValue,
                v.span,
                "a volume needs a `target`".into(),
                "no target",
            );
            return None;
        };
        if !target.starts_with('/') {
            self.invalid(
                v,
                "volume",
                format!("target {target:?} must be an absolute path"),
            );
            return None;
        }
        m.kind = kind.unwrap_or(match source.as_deref() {
            Some(s) if s.starts_with(['/', '.', '~']) => MountKind::Bind,
            _ => MountKind::Volume,
        });
        if m.kind == MountKind::Tmpfs && source.is_some() {
            self.invalid(v, "volume", "a tmpfs mount has no source");
            return None;
        }
        if m.kind == MountKind::Bind && source.is_none() {
            self.invalid(v, "volume", "a bind mount needs a source");
            return None;
        }
        m.source = source;
        m.target = target;
        Some(m)
    }

    fn tmpfs(&mut self, v: &Value) -> Option<MountSpec> {
        match &v.kind {
            Kind::Str(s) => match parse_tmpfs(s) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.invalid(v, "tmpfs", e);
                    None
                }
            },
            Kind::Map(entries) => {
                let mut m = self.mount_map(v)?;
                if !entries.iter().any(|e| e.key == "type") {
                    m.kind = MountKind::Tmpfs;
                }
                if m.kind != MountKind::Tmpfs {
                    self.invalid(v, "tmpfs", "a tmpfs entry must be of type tmpfs");
                    return None;
                }
                Some(m)
            }
            _ => {
                self.wrong_type(v, "a tmpfs string or map");
                None
            }
        }
    }

    fn service_networks(&mut self, v: &Value) -> Vec<Located<ServiceNetwork>> {
        let mut out = Vec::new();
        match &v.kind {
            Kind::Map(entries) => {
                for e in entries {
                    let mut net = ServiceNetwork {
                        name: e.key.clone(),
                        aliases: Vec::new(),
                        ipv4: None,
                        ipv6: None,
                    };
                    if !matches!(e.value.kind, Kind::Null) {
                        self.service_network_options(&e.value, &mut net, false);
                    }
                    out.push(Located::new(net, self.origin(e.key_span)));
                }
            }
            _ => {
                for item in self.items(v) {
                    match &item.kind {
                        Kind::Str(name) => out.push(Located::new(
                            ServiceNetwork {
                                name: name.clone(),
                                aliases: Vec::new(),
                                ipv4: None,
                                ipv6: None,
                            },
                            self.origin(item.span),
                        )),
                        Kind::Map(_) => {
                            let mut net = ServiceNetwork {
                                name: String::new(),
                                aliases: Vec::new(),
                                ipv4: None,
                                ipv6: None,
                            };
                            let span = item.get("name").map_or(item.span, |n| n.span);
                            if self.service_network_options(item, &mut net, true) {
                                out.push(Located::new(net, self.origin(span)));
                            }
                        }
                        _ => self.wrong_type(item, "a network name or map"),
                    }
                }
            }
        }
        out
    }

    /// Fills `net` from a map; returns false when a required name is missing.
    fn service_network_options(
        &mut self,
        v: &Value,
        net: &mut ServiceNetwork,
        needs_name: bool,
    ) -> bool {
        let known: &[&str] = if needs_name {
            SERVICE_NETWORK_KEYS
        } else {
            &SERVICE_NETWORK_KEYS[1..]
        };
        let mut has_name = false;
        for e in self.entries(v, "a service network", known) {
            let val = &e.value;
            match e.key.as_str() {
                "name" => {
                    if let Some(n) = self.string(val) {
                        net.name = n;
                        has_name = true;
                    }
                }
                "aliases" => net.aliases = self.strings(val),
                "ipv4" => net.ipv4 = self.parsed::<Ipv4Addr>(val, "ipv4 address"),
                "ipv6" => net.ipv6 = self.parsed::<Ipv6Addr>(val, "ipv6 address"),
                _ => {}
            }
        }
        if needs_name && !has_name {
            self.report(
                ProblemKind::InvalidValue,
                v.span,
                "a service network needs a `name`".into(),
                "no name",
            );
            return false;
        }
        true
    }

    fn link(&mut self, v: &Value) -> Option<Link> {
        match &v.kind {
            Kind::Map(_) => {
                let mut service = None;
                let mut alias = None;
                for e in self.entries(v, "a link", LINK_KEYS) {
                    match e.key.as_str() {
                        "service" => service = self.string(&e.value),
                        "alias" => alias = self.string(&e.value),
                        _ => {}
                    }
                }
                match service {
                    Some(service) => Some(Link { service, alias }),
                    None => {
                        self.invalid(v, "link", "a link needs a `service`");
                        None
                    }
                }
            }
            _ => {
                let text = self.string(v)?;
                let (service, alias) = match text.split_once(':') {
                    Some((s, a)) => (s.to_string(), Some(a.to_string())),
                    None => (text, None),
                };
                if service.is_empty() || alias.as_deref() == Some("") {
                    self.invalid(v, "link", "expected SERVICE or SERVICE:ALIAS");
                    return None;
                }
                Some(Link { service, alias })
            }
        }
    }

    fn depends_on(&mut self, v: &Value) -> Vec<Located<Dependency>> {
        let mut out = Vec::new();
        match &v.kind {
            Kind::Map(entries) => {
                for e in entries {
                    let mut dep = Dependency {
                        service: e.key.clone(),
                        condition: Condition::Started,
                        restart_dependents: false,
                    };
                    match &e.value.kind {
                        Kind::Null => {}
                        Kind::Str(_) => {
                            if let Some(c) = self.condition(&e.value) {
                                dep.condition = c;
                            }
                        }
                        _ => {
                            self.dependency_options(&e.value, &mut dep, false);
                        }
                    }
                    out.push(Located::new(dep, self.origin(e.key_span)));
                }
            }
            _ => {
                for item in self.items(v) {
                    match &item.kind {
                        Kind::Str(name) => out.push(Located::new(
                            Dependency {
                                service: name.clone(),
                                condition: Condition::Started,
                                restart_dependents: false,
                            },
                            self.origin(item.span),
                        )),
                        Kind::Map(_) => {
                            let mut dep = Dependency {
                                service: String::new(),
                                condition: Condition::Started,
                                restart_dependents: false,
                            };
                            let span = item.get("service").map_or(item.span, |n| n.span);
                            if self.dependency_options(item, &mut dep, true) {
                                out.push(Located::new(dep, self.origin(span)));
                            }
                        }
                        _ => self.wrong_type(item, "a service name or map"),
                    }
                }
            }
        }
        out
    }

    fn dependency_options(&mut self, v: &Value, dep: &mut Dependency, needs_service: bool) -> bool {
        let known: &[&str] = if needs_service {
            DEPENDENCY_KEYS
        } else {
            &DEPENDENCY_KEYS[1..]
        };
        let mut has_service = false;
        for e in self.entries(v, "a dependency", known) {
            match e.key.as_str() {
                "service" => {
                    if let Some(s) = self.string(&e.value) {
                        dep.service = s;
                        has_service = true;
                    }
                }
                "condition" => {
                    if let Some(c) = self.condition(&e.value) {
                        dep.condition = c;
                    }
                }
                "restart-dependents" => {
                    dep.restart_dependents = self.boolean(&e.value).unwrap_or(false);
                }
                _ => {}
            }
        }
        if needs_service && !has_service {
            self.invalid(v, "dependency", "a dependency needs a `service`");
            return false;
        }
        true
    }

    fn condition(&mut self, v: &Value) -> Option<Condition> {
        match self.string(v)?.as_str() {
            "started" => Some(Condition::Started),
            "healthy" => Some(Condition::Healthy),
            "completed" => Some(Condition::Completed),
            other => {
                self.invalid(
                    v,
                    "condition",
                    format!("`{other}` is not one of started, healthy, completed"),
                );
                None
            }
        }
    }

    fn restart(&mut self, v: &Value) -> Option<RestartSpec> {
        if let Kind::Str(s) = &v.kind {
            return match parse_restart(s) {
                Ok((policy, max_retries)) => Some(RestartSpec {
                    policy,
                    max_retries,
                    backoff: BackoffSpec::default(),
                    start_limit: None,
                }),
                Err(e) => {
                    self.invalid(v, "restart policy", e);
                    None
                }
            };
        }
        let mut r = RestartSpec {
            policy: RestartPolicyName::No,
            max_retries: None,
            backoff: BackoffSpec::default(),
            start_limit: None,
        };
        let mut has_policy = false;
        for e in self.entries(v, "restart", RESTART_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "policy" => {
                    if let Some(text) = self.string(val) {
                        match parse_restart(&text) {
                            Ok((policy, retries)) => {
                                r.policy = policy;
                                if retries.is_some() {
                                    r.max_retries = retries;
                                }
                                has_policy = true;
                            }
                            Err(e) => self.invalid(val, "restart policy", e),
                        }
                    }
                }
                "max-retries" => r.max_retries = self.integer(val, "max-retries", "0..=4294967295"),
                "backoff" => r.backoff = self.backoff(val),
                "start-limit" => r.start_limit = self.start_limit(val),
                _ => {}
            }
        }
        if !has_policy {
            self.invalid(v, "restart", "a restart block needs a `policy`");
            return None;
        }
        if r.max_retries.is_some() && r.policy != RestartPolicyName::OnFailure {
            self.invalid(
                v,
                "restart",
                "max-retries only applies to the on-failure policy",
            );
        }
        Some(r)
    }

    fn backoff(&mut self, v: &Value) -> BackoffSpec {
        let mut b = BackoffSpec::default();
        for e in self.entries(v, "backoff", BACKOFF_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "min" => b.min = self.duration(val, "backoff min"),
                "max" => b.max = self.duration(val, "backoff max"),
                "factor" => {
                    b.factor = self.float(val, "backoff factor");
                    if b.factor.is_some_and(|f| f < 1.0) {
                        self.invalid(val, "backoff factor", "must be at least 1");
                        b.factor = None;
                    }
                }
                "reset-after" => b.reset_after = self.duration(val, "backoff reset-after"),
                _ => {}
            }
        }
        if let (Some(min), Some(max)) = (b.min, b.max)
            && min.0 > max.0
        {
            self.invalid(
                v,
                "backoff",
                format!("min ({min}) is larger than max ({max})"),
            );
        }
        b
    }

    fn start_limit(&mut self, v: &Value) -> Option<StartLimit> {
        let mut burst = None;
        let mut interval = None;
        for e in self.entries(v, "start-limit", START_LIMIT_KEYS) {
            match e.key.as_str() {
                "burst" => burst = self.integer(&e.value, "start-limit burst", "0..=4294967295"),
                "interval" => interval = self.duration(&e.value, "start-limit interval"),
                _ => {}
            }
        }
        match (burst, interval) {
            (Some(burst), Some(interval)) => Some(StartLimit { burst, interval }),
            _ => {
                self.invalid(v, "start-limit", "needs both `burst` and `interval`");
                None
            }
        }
    }

    fn health_command(&mut self, v: &Value) -> Option<HealthCommand> {
        match &v.kind {
            Kind::Str(s) if s == "none" || s == "NONE" => Some(HealthCommand::Disabled),
            Kind::Str(s) if s.trim().is_empty() => {
                self.invalid(v, "health command", "the command is empty");
                None
            }
            Kind::Str(s) => Some(HealthCommand::Shell(s.clone())),
            Kind::List(_) => {
                let argv = self.strings(v);
                // Docker's test form: ["CMD", argv...], ["CMD-SHELL", "cmd"], ["NONE"].
                match argv.first().map(String::as_str) {
                    Some("NONE") => Some(HealthCommand::Disabled),
                    Some("CMD-SHELL") if argv.len() == 2 => {
                        Some(HealthCommand::Shell(argv[1].clone()))
                    }
                    Some("CMD") if argv.len() > 1 => Some(HealthCommand::Exec(argv[1..].to_vec())),
                    Some("CMD" | "CMD-SHELL") | None => {
                        self.invalid(v, "health command", "the command is empty");
                        None
                    }
                    Some(_) => Some(HealthCommand::Exec(argv)),
                }
            }
            _ => {
                self.wrong_type(v, "a command string or list");
                None
            }
        }
    }

    /// `update { order "start-first" }` (Compose's `deploy.update_config`).
    fn update(&mut self, v: &Value) -> Option<UpdateOrder> {
        let mut order = None;
        for e in self.entries(v, "update", UPDATE_KEYS) {
            if e.key == "order" {
                order = match self.string(&e.value).as_deref() {
                    Some("start-first") => Some(UpdateOrder::StartFirst),
                    Some("stop-first") => Some(UpdateOrder::StopFirst),
                    Some(other) => {
                        self.invalid(
                            &e.value,
                            "update order",
                            format!("`{other}` is not one of stop-first, start-first"),
                        );
                        None
                    }
                    None => None,
                };
            }
        }
        order
    }

    fn health(&mut self, v: &Value) -> Option<HealthSpec> {
        if !matches!(v.kind, Kind::Map(_)) {
            let command = self.health_command(v)?;
            return Some(HealthSpec {
                command,
                interval: None,
                timeout: None,
                retries: None,
                start_period: None,
                on_unhealthy: OnUnhealthy::None,
            });
        }
        let mut h = HealthSpec {
            command: HealthCommand::Disabled,
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
            on_unhealthy: OnUnhealthy::None,
        };
        let mut has_command = false;
        for e in self.entries(v, "health", HEALTH_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "command" => {
                    if let Some(c) = self.health_command(val) {
                        h.command = c;
                        has_command = true;
                    }
                }
                "interval" => h.interval = self.duration(val, "health interval"),
                "timeout" => h.timeout = self.duration(val, "health timeout"),
                "retries" => h.retries = self.integer(val, "health retries", "0..=4294967295"),
                "start-period" => h.start_period = self.duration(val, "health start-period"),
                "on-unhealthy" => {
                    h.on_unhealthy = match self.string(val).as_deref() {
                        Some("none") => OnUnhealthy::None,
                        Some("restart") => OnUnhealthy::Restart,
                        Some("stop") => OnUnhealthy::Stop,
                        Some(other) => {
                            self.invalid(
                                val,
                                "on-unhealthy",
                                format!("`{other}` is not one of none, restart, stop"),
                            );
                            OnUnhealthy::None
                        }
                        None => OnUnhealthy::None,
                    }
                }
                _ => {}
            }
        }
        if !has_command {
            self.invalid(v, "health", "a health check needs a `command`");
            return None;
        }
        Some(h)
    }

    fn limits(&mut self, v: &Value) -> LimitsSpec {
        let mut l = LimitsSpec::default();
        for e in self.entries(v, "limits", LIMITS_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "memory" => l.memory = self.size(val, "memory limit"),
                "memory-swap" => {
                    l.memory_swap = match &val.kind {
                        Kind::Int(-1) => Some(SwapLimit::Unlimited),
                        Kind::Str(s) if s == "-1" => Some(SwapLimit::Unlimited),
                        _ => self.size(val, "memory-swap").map(SwapLimit::Bytes),
                    }
                }
                "memory-reservation" => l.memory_reservation = self.size(val, "memory-reservation"),
                "cpus" => {
                    l.cpus = self.float(val, "cpus");
                    if l.cpus == Some(0.0) {
                        self.invalid(val, "cpus", "must be more than 0");
                        l.cpus = None;
                    }
                }
                "cpu-shares" => {
                    l.cpu_shares = self.integer(val, "cpu-shares", "2..=262144");
                    if l.cpu_shares
                        .is_some_and(|s: u64| !(2..=262_144).contains(&s))
                    {
                        self.invalid(val, "cpu-shares", "must be between 2 and 262144");
                        l.cpu_shares = None;
                    }
                }
                "cpuset" => {
                    if let Some(set) = self.text(val) {
                        match validate_cpuset(&set) {
                            Ok(()) => l.cpuset = Some(set),
                            Err(e) => self.invalid(val, "cpuset", e),
                        }
                    }
                }
                "pids" => {
                    l.pids = self.integer(val, "pids", "-1 or more");
                    if l.pids.is_some_and(|p: i64| p < -1 || p == 0) {
                        self.invalid(val, "pids", "must be -1 (unlimited) or a positive number");
                        l.pids = None;
                    }
                }
                "blkio-weight" => {
                    l.blkio_weight = self.integer(val, "blkio-weight", "10..=1000");
                    if l.blkio_weight
                        .is_some_and(|w: u16| !(10..=1000).contains(&w))
                    {
                        self.invalid(val, "blkio-weight", "must be between 10 and 1000");
                        l.blkio_weight = None;
                    }
                }
                "shm-size" => l.shm_size = self.size(val, "shm-size"),
                "ulimits" => l.ulimits = self.ulimits(val),
                "oom-score-adj" => {
                    l.oom_score_adj = self.integer(val, "oom-score-adj", "-1000..=1000");
                    if l.oom_score_adj
                        .is_some_and(|o: i32| !(-1000..=1000).contains(&o))
                    {
                        self.invalid(val, "oom-score-adj", "must be between -1000 and 1000");
                        l.oom_score_adj = None;
                    }
                }
                "devices" => {
                    for item in self.items(val) {
                        if let Some(d) = self.parsed::<DeviceMapping>(item, "device") {
                            l.devices.push(d);
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(res), Some(mem)) = (l.memory_reservation, l.memory)
            && res.0 > mem.0
        {
            self.invalid(v, "limits", "memory-reservation is larger than memory");
        }
        if let (Some(SwapLimit::Bytes(swap)), Some(mem)) = (l.memory_swap, l.memory)
            && swap.0 < mem.0
        {
            self.invalid(
                v,
                "limits",
                "memory-swap must be at least memory (it is memory plus swap)",
            );
        }
        l
    }

    fn ulimits(&mut self, v: &Value) -> Vec<Ulimit> {
        let mut out = Vec::new();
        match &v.kind {
            // compose: `nofile: {soft: 1, hard: 2}` or `nproc: 65535`
            Kind::Map(entries) => {
                for e in entries {
                    let spec = match &e.value.kind {
                        Kind::Int(n) => Some(format!("{}={n}", e.key)),
                        Kind::Str(s) => Some(format!("{}={s}", e.key)),
                        Kind::Map(_) => {
                            let soft = e.value.get("soft").and_then(Value::scalar_text);
                            let hard = e.value.get("hard").and_then(Value::scalar_text);
                            match (soft, hard) {
                                (Some(s), Some(h)) => Some(format!("{}={s}:{h}", e.key)),
                                _ => {
                                    self.invalid(&e.value, "ulimit", "needs `soft` and `hard`");
                                    None
                                }
                            }
                        }
                        _ => {
                            self.wrong_type(&e.value, "a number or a soft/hard map");
                            None
                        }
                    };
                    if let Some(spec) = spec {
                        match spec.parse::<Ulimit>() {
                            Ok(u) => out.push(u),
                            Err(err) => self.invalid(&e.value, "ulimit", err),
                        }
                    }
                }
            }
            _ => {
                for item in self.items(v) {
                    if let Some(u) = self.parsed::<Ulimit>(item, "ulimit") {
                        out.push(u);
                    }
                }
            }
        }
        out
    }

    fn extra_hosts(&mut self, v: &Value) -> Vec<ExtraHost> {
        let mut out = Vec::new();
        match &v.kind {
            Kind::Map(entries) if v.get("host").is_none() => {
                for e in entries {
                    let ip = match &e.value.kind {
                        Kind::List(items) => items.iter().filter_map(Value::scalar_text).collect(),
                        _ => e.value.scalar_text().into_iter().collect::<Vec<_>>(),
                    };
                    for ip in ip {
                        match format!("{}={ip}", e.key).parse::<ExtraHost>() {
                            Ok(h) => out.push(h),
                            Err(err) => self.invalid(&e.value, "extra host", err),
                        }
                    }
                }
            }
            _ => {
                for item in self.items(v) {
                    if let Kind::Map(_) = item.kind {
                        let mut host = None;
                        let mut ip = None;
                        for e in self.entries(item, "an extra host", EXTRA_HOST_KEYS) {
                            match e.key.as_str() {
                                "host" => host = self.string(&e.value),
                                "ip" => ip = self.string(&e.value),
                                _ => {}
                            }
                        }
                        match (host, ip) {
                            (Some(h), Some(i)) => match format!("{h}={i}").parse::<ExtraHost>() {
                                Ok(x) => out.push(x),
                                Err(err) => self.invalid(item, "extra host", err),
                            },
                            _ => self.invalid(item, "extra host", "needs `host` and `ip`"),
                        }
                    } else if let Some(h) = self.parsed::<ExtraHost>(item, "extra host") {
                        out.push(h);
                    }
                }
            }
        }
        out
    }

    fn capabilities(&mut self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for item in self.items(v) {
            let Some(text) = self.string(item) else {
                continue;
            };
            match normalize_capability(&text) {
                Some(cap) => out.push(cap),
                None => {
                    let mut problem = Problem::error(
                        ProblemKind::InvalidValue,
                        format!("unknown capability `{text}`"),
                    )
                    .at(&self.cx.source, item.span, "not a Linux capability");
                    let upper = text.to_ascii_uppercase();
                    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
                    if let Some(s) = suggest(bare, CAPABILITIES) {
                        problem = problem.help(format!("did you mean `{s}`?"));
                    }
                    self.problems.push(problem);
                }
            }
        }
        out
    }

    fn signal(&mut self, v: &Value) -> Option<String> {
        let text = self.text(v)?;
        match normalize_signal(&text) {
            Some(sig) => Some(sig),
            None => {
                self.invalid(
                    v,
                    "stop-signal",
                    format!("`{text}` is not a signal name or number"),
                );
                None
            }
        }
    }

    fn logging(&mut self, v: &Value) -> Option<LoggingSpec> {
        let mut l = LoggingSpec::default();
        for e in self.entries(v, "logging", LOGGING_KEYS) {
            match e.key.as_str() {
                "max-size" => l.max_size = self.size(&e.value, "logging max-size"),
                "max-files" => {
                    l.max_files = self.integer(&e.value, "logging max-files", "1 or more")
                }
                _ => {}
            }
        }
        Some(l)
    }

    fn network(&mut self, v: &Value, origin: Origin) -> NetworkSpec {
        let mut n = NetworkSpec {
            origin: Declared(origin),
            ..NetworkSpec::default()
        };
        if matches!(v.kind, Kind::Null) {
            return n;
        }
        let mut driver_span = None;
        for e in self.entries(v, "a network", NETWORK_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "driver" => {
                    driver_span = Some(val.span);
                    match self.string(val).as_deref() {
                        Some("bridge") => n.driver = NetworkDriver::Bridge,
                        Some("host-bridge") => n.driver = NetworkDriver::HostBridge,
                        Some(other) => self.invalid(
                            val,
                            "network driver",
                            format!("`{other}` is not one of bridge, host-bridge"),
                        ),
                        None => {}
                    }
                }
                "subnet" => n.subnet = self.parsed::<IpNet>(val, "subnet"),
                "gateway" => n.gateway = self.parsed::<IpAddr>(val, "gateway"),
                "ip-range" => n.ip_range = self.parsed::<IpNet>(val, "ip-range"),
                "internal" => n.internal = self.boolean(val).unwrap_or(false),
                "ipv6" => n.ipv6 = self.boolean(val).unwrap_or(false),
                "subnet6" => n.subnet6 = self.parsed::<IpNet>(val, "subnet6"),
                "gateway6" => n.gateway6 = self.parsed::<IpAddr>(val, "gateway6"),
                "bridge" => {
                    if let Some(b) = self.string(val) {
                        if is_valid_ifname(&b) {
                            n.bridge = Some(b);
                        } else {
                            self.invalid(val, "bridge name", IFNAME_RULE);
                        }
                    }
                }
                "parent" => {
                    if let Some(p) = self.string(val) {
                        if is_valid_ifname(&p) {
                            n.parent = Some(p);
                        } else {
                            self.invalid(val, "parent interface", IFNAME_RULE);
                        }
                    }
                }
                "vlan" => {
                    n.vlan = self.integer(val, "vlan", "1..=4094");
                    if n.vlan.is_some_and(|v: u16| !(1..=4094).contains(&v)) {
                        self.invalid(val, "vlan", "must be between 1 and 4094");
                        n.vlan = None;
                    }
                }
                "external" => n.external = self.boolean(val).unwrap_or(false),
                "labels" => n.labels = self.key_values(val, "labels", false),
                _ => {}
            }
        }
        let here = driver_span.unwrap_or(origin.span);
        match n.driver {
            NetworkDriver::Bridge => {
                if n.parent.is_some() || n.vlan.is_some() {
                    self.report(
                        ProblemKind::InvalidValue,
                        here,
                        "`parent` and `vlan` belong to host-bridge networks".into(),
                        "a bridge network",
                    );
                }
            }
            NetworkDriver::HostBridge => {
                if n.parent.is_none() {
                    self.report(
                        ProblemKind::InvalidValue,
                        here,
                        "a host-bridge network needs `parent` (the host bridge to attach to)"
                            .into(),
                        "no parent",
                    );
                }
                if n.bridge.is_some() {
                    self.report(
                        ProblemKind::InvalidValue,
                        here,
                        "`bridge` belongs to bridge networks; a host-bridge network names its `parent`".into(),
                        "a host-bridge network",
                    );
                }
            }
        }
        if let Some(subnet) = n.subnet {
            for (what, addr) in [("gateway", n.gateway)] {
                if let Some(addr) = addr
                    && !subnet.contains(addr)
                {
                    self.report(
                        ProblemKind::InvalidValue,
                        here,
                        format!("{what} {addr} is outside the subnet {subnet}"),
                        "this network",
                    );
                }
            }
            if let Some(range) = n.ip_range
                && (!subnet.contains(range.addr) || range.prefix < subnet.prefix)
            {
                self.report(
                    ProblemKind::InvalidValue,
                    here,
                    format!("ip-range {range} is not inside the subnet {subnet}"),
                    "this network",
                );
            }
        }
        n
    }

    fn volume(&mut self, v: &Value, origin: Origin) -> VolumeSpec {
        let mut vol = VolumeSpec {
            origin: Declared(origin),
            ..VolumeSpec::default()
        };
        if matches!(v.kind, Kind::Null) {
            return vol;
        }
        for e in self.entries(v, "a volume", VOLUME_KEYS) {
            let val = &e.value;
            match e.key.as_str() {
                "driver" => {
                    if let Some(d) = self.string(val) {
                        if d == "local" {
                            vol.driver = Some(d);
                        } else {
                            self.invalid(
                                val,
                                "volume driver",
                                format!("`{d}` is not supported (only `local`)"),
                            );
                        }
                    }
                }
                "driver-opts" => vol.driver_opts = self.key_values(val, "driver-opts", false),
                "labels" => vol.labels = self.key_values(val, "labels", false),
                "external" => vol.external = self.boolean(val).unwrap_or(false),
                _ => {}
            }
        }
        vol
    }
}

/// What a service, network or volume name may look like.
pub const NAME_RULE: &str =
    "names start with a letter or digit and contain only letters, digits, `_`, `.` and `-`";

/// True for names Docker accepts for containers, networks and volumes.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const IFNAME_RULE: &str = "interface names have 1 to 15 characters, no `/`, `:` or spaces";

fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ':', ' ', '\t', '\n'])
        && name != "."
        && name != ".."
}

/// Resolves a path from a stack file: `~` is the home directory, relative
/// paths are relative to the stack file's directory.
pub fn resolve_path(raw: &str, base_dir: &Path, vars: &dyn Lookup) -> PathBuf {
    if (raw == "~" || raw.starts_with("~/"))
        && let Some(home) = vars.lookup("HOME")
    {
        return PathBuf::from(home).join(raw.trim_start_matches('~').trim_start_matches('/'));
    }
    let path = Path::new(raw);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut out = base_dir.to_path_buf();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn parse_volumes_from(text: &str) -> Result<VolumesFrom, String> {
    let (rest, read_only) = match text.rsplit_once(':') {
        Some((r, "ro")) => (r, true),
        Some((r, "rw")) => (r, false),
        _ => (text, false),
    };
    let source = match rest.split_once(':') {
        Some(("container", c)) if !c.is_empty() => VolumesFromSource::Container(c.to_string()),
        Some(("service", s)) if !s.is_empty() => VolumesFromSource::Service(s.to_string()),
        None if !rest.is_empty() => VolumesFromSource::Service(rest.to_string()),
        _ => {
            return Err(format!(
                "{text:?}: expected SERVICE, service:NAME or container:NAME, optionally with :ro or :rw"
            ));
        }
    };
    Ok(VolumesFrom { source, read_only })
}

fn parse_network_mode(text: &str) -> Result<NetworkMode, String> {
    match text {
        "bridge" | "default" => Ok(NetworkMode::Bridge),
        "host" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        _ => match text.split_once(':') {
            Some(("container", c)) if !c.is_empty() => Ok(NetworkMode::Container(c.to_string())),
            Some(("service", s)) if !s.is_empty() => Ok(NetworkMode::Service(s.to_string())),
            _ => Err(format!(
                "`{text}` is not one of bridge, host, none, container:NAME, service:NAME"
            )),
        },
    }
}

fn validate_cpuset(set: &str) -> Result<(), String> {
    let bad = || format!("{set:?} is not a CPU list like \"0-3,5\"");
    if set.is_empty() {
        return Err(bad());
    }
    for part in set.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
    }
    Ok(())
}

/// Linux capabilities by name, without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` all become `NET_ADMIN`, as Docker
/// normalizes them; unknown names give `None`.
pub fn normalize_capability(text: &str) -> Option<String> {
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.contains(&bare).then(|| bare.to_string())
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "KILL", "PIPE",
    "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN",
    "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// `term`, `SIGTERM` and `TERM` become `SIGTERM`; numbers 1..=64 and
/// `SIGRTMIN+n` are kept; anything else gives `None`.
pub fn normalize_signal(text: &str) -> Option<String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u8>() {
        return (1..=64).contains(&n).then(|| n.to_string());
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&bare) {
        return Some(format!("SIG{bare}"));
    }
    for base in ["RTMIN", "RTMAX"] {
        if let Some(rest) = bare.strip_prefix(base) {
            let ok = rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| n <= 30);
            if ok {
                return Some(format!("SIG{bare}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_close_keys_only() {
        assert_eq!(suggest("imgae", SERVICE_KEYS), Some("image"));
        assert_eq!(suggest("depends_on", SERVICE_KEYS), Some("depends-on"));
        assert_eq!(suggest("zzzz", SERVICE_KEYS), None);
    }

    #[test]
    fn capabilities_normalize_like_docker() {
        assert_eq!(
            normalize_capability("net_admin").as_deref(),
            Some("NET_ADMIN")
        );
        assert_eq!(
            normalize_capability("CAP_SYS_TIME").as_deref(),
            Some("SYS_TIME")
        );
        assert_eq!(normalize_capability("NET_ADMN"), None);
    }

    #[test]
    fn signals_normalize_to_sig_names() {
        assert_eq!(normalize_signal("term").as_deref(), Some("SIGTERM"));
        assert_eq!(normalize_signal("SIGQUIT").as_deref(), Some("SIGQUIT"));
        assert_eq!(normalize_signal("9").as_deref(), Some("9"));
        assert_eq!(
            normalize_signal("SIGRTMIN+3").as_deref(),
            Some("SIGRTMIN+3")
        );
        assert_eq!(normalize_signal("SIGFOO"), None);
        assert_eq!(normalize_signal("99"), None);
    }

    #[test]
    fn relative_paths_resolve_against_the_stack_directory() {
        let vars = |name: &str| (name == "HOME").then(|| "/home/me".to_string());
        let base = Path::new("/srv/shop");
        assert_eq!(
            resolve_path("./html", base, &vars),
            Path::new("/srv/shop/html")
        );
        assert_eq!(resolve_path("../x", base, &vars), Path::new("/srv/x"));
        assert_eq!(resolve_path("/abs", base, &vars), Path::new("/abs"));
        assert_eq!(
            resolve_path("~/src", base, &vars),
            Path::new("/home/me/src")
        );
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(is_valid_name("web-1.prod_x"));
        assert!(!is_valid_name("-web"));
        assert!(!is_valid_name("wéb"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn volumes_from_and_network_modes_parse() {
        assert_eq!(
            parse_volumes_from("db:ro").unwrap(),
            VolumesFrom {
                source: VolumesFromSource::Service("db".into()),
                read_only: true
            }
        );
        assert_eq!(
            parse_volumes_from("container:abc").unwrap().source,
            VolumesFromSource::Container("abc".into())
        );
        assert!(parse_volumes_from("container:").is_err());
        assert_eq!(
            parse_network_mode("service:db").unwrap(),
            NetworkMode::Service("db".into())
        );
        assert!(parse_network_mode("bogus").is_err());
    }

    #[test]
    fn cpusets_are_checked() {
        assert!(validate_cpuset("0-3,5").is_ok());
        assert!(validate_cpuset("3-1").is_err());
        assert!(validate_cpuset("a").is_err());
    }
}
