//! The KDL front end: `stack.kdl` read into the canonical value tree, and the
//! model written back as KDL (`stack config --format kdl`).
//!
//! KDL is node-shaped where TOML is table-shaped, so one table of rules per
//! context says how each node maps onto the canonical keys: `port "80"` nodes
//! collect into `ports`, `env NAME="v"` properties merge into the `env` map,
//! `volume "data" "/var/lib/data"` fills `source` and `target`, and so on. The
//! same rules drive reading and writing, so the two cannot disagree.

use std::sync::Arc;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::NamedSource;

use super::decode::suggest;
use super::diag::{Problem, ProblemKind, Problems, Span};
use super::kdl_syntax::{self, Node, Scalar};
use super::tree::{Entry, Kind, Value};

/// The contexts a KDL node can appear in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Service,
    Build,
    Restart,
    Backoff,
    StartLimit,
    Update,
    Health,
    Limits,
    Logging,
    Mount,
    ServiceNetwork,
    Link,
    Dependency,
    ExtraHost,
    Network,
    Volume,
}

/// How one KDL node maps onto canonical keys.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `node VALUE`.
    Scalar,
    /// `node A B …`: one argument is a scalar, more are a list; `repeat` nodes
    /// append to one list.
    Args { repeat: bool },
    /// `node NAME=value …` (or `"NAME=value"` arguments): map entries, merged
    /// across repeated nodes.
    Props,
    /// One list item per node. Arguments fill `fields` in order; a single
    /// argument with nothing else is the item's short string form.
    Item {
        fields: &'static [&'static str],
        ctx: Ctx,
    },
    /// A single map. Arguments fill `fields`; with `rest`, extra arguments make
    /// the last field a list. A single argument alone is the short form.
    Block {
        fields: &'static [&'static str],
        rest: bool,
        ctx: Ctx,
    },
    /// `node "NAME" { … }`: entry NAME of the map under the key.
    Named(Ctx),
}

#[derive(Debug)]
struct Rule {
    node: &'static str,
    key: &'static str,
    shape: Shape,
}

const fn rule(node: &'static str, key: &'static str, shape: Shape) -> Rule {
    Rule { node, key, shape }
}

const fn scalar(name: &'static str) -> Rule {
    rule(name, name, Shape::Scalar)
}

const fn list(node: &'static str, key: &'static str) -> Rule {
    rule(node, key, Shape::Args { repeat: true })
}

const TOP: &[Rule] = &[
    scalar("name"),
    rule("service", "services", Shape::Named(Ctx::Service)),
    rule("network", "networks", Shape::Named(Ctx::Network)),
    rule("volume", "volumes", Shape::Named(Ctx::Volume)),
];

const SERVICE: &[Rule] = &[
    scalar("image"),
    rule(
        "build",
        "build",
        Shape::Block {
            fields: &["context"],
            rest: false,
            ctx: Ctx::Build,
        },
    ),
    rule("command", "command", Shape::Args { repeat: false }),
    rule("entrypoint", "entrypoint", Shape::Args { repeat: false }),
    rule("env", "env", Shape::Props),
    list("env-file", "env-file"),
    list("port", "ports"),
    list("expose", "expose"),
    rule(
        "volume",
        "volumes",
        Shape::Item {
            fields: &["source", "target"],
            ctx: Ctx::Mount,
        },
    ),
    rule(
        "tmpfs",
        "tmpfs",
        Shape::Item {
            fields: &["target"],
            ctx: Ctx::Mount,
        },
    ),
    list("volumes-from", "volumes-from"),
    rule(
        "network",
        "networks",
        Shape::Item {
            fields: &["name"],
            ctx: Ctx::ServiceNetwork,
        },
    ),
    scalar("network-mode"),
    rule(
        "link",
        "links",
        Shape::Item {
            fields: &["service", "alias"],
            ctx: Ctx::Link,
        },
    ),
    rule(
        "depends-on",
        "depends-on",
        Shape::Item {
            fields: &["service"],
            ctx: Ctx::Dependency,
        },
    ),
    rule(
        "restart",
        "restart",
        Shape::Block {
            fields: &["policy"],
            rest: false,
            ctx: Ctx::Restart,
        },
    ),
    rule(
        "health",
        "health",
        Shape::Block {
            fields: &["command"],
            rest: true,
            ctx: Ctx::Health,
        },
    ),
    rule(
        "update",
        "update",
        Shape::Block {
            fields: &[],
            rest: false,
            ctx: Ctx::Update,
        },
    ),
    rule(
        "limits",
        "limits",
        Shape::Block {
            fields: &[],
            rest: false,
            ctx: Ctx::Limits,
        },
    ),
    scalar("user"),
    scalar("workdir"),
    scalar("hostname"),
    scalar("domainname"),
    list("dns", "dns"),
    list("dns-search", "dns-search"),
    rule(
        "extra-host",
        "extra-hosts",
        Shape::Item {
            fields: &["host", "ip"],
            ctx: Ctx::ExtraHost,
        },
    ),
    list("cap-add", "cap-add"),
    list("cap-drop", "cap-drop"),
    scalar("privileged"),
    scalar("read-only"),
    list("security-opt", "security-opt"),
    rule("sysctl", "sysctls", Shape::Props),
    scalar("stop-signal"),
    scalar("stop-grace-period"),
    rule("label", "labels", Shape::Props),
    scalar("replicas"),
    scalar("init"),
    scalar("tty"),
    scalar("stdin-open"),
    rule(
        "logging",
        "logging",
        Shape::Block {
            fields: &[],
            rest: false,
            ctx: Ctx::Logging,
        },
    ),
    list("profiles", "profiles"),
];

const BUILD: &[Rule] = &[
    scalar("context"),
    scalar("dockerfile"),
    rule("arg", "args", Shape::Props),
    scalar("target"),
    scalar("no-cache"),
];

const RESTART: &[Rule] = &[
    scalar("policy"),
    scalar("max-retries"),
    rule(
        "backoff",
        "backoff",
        Shape::Block {
            fields: &[],
            rest: false,
            ctx: Ctx::Backoff,
        },
    ),
    rule(
        "start-limit",
        "start-limit",
        Shape::Block {
            fields: &[],
            rest: false,
            ctx: Ctx::StartLimit,
        },
    ),
];

const BACKOFF: &[Rule] = &[
    scalar("min"),
    scalar("max"),
    scalar("factor"),
    scalar("reset-after"),
];
const START_LIMIT: &[Rule] = &[scalar("burst"), scalar("interval")];
const UPDATE: &[Rule] = &[scalar("order")];

const HEALTH: &[Rule] = &[
    rule("command", "command", Shape::Args { repeat: false }),
    scalar("interval"),
    scalar("timeout"),
    scalar("retries"),
    scalar("start-period"),
    scalar("on-unhealthy"),
];

const LIMITS: &[Rule] = &[
    scalar("memory"),
    scalar("memory-swap"),
    scalar("memory-reservation"),
    scalar("cpus"),
    scalar("cpu-shares"),
    scalar("cpuset"),
    scalar("pids"),
    scalar("blkio-weight"),
    scalar("shm-size"),
    list("ulimit", "ulimits"),
    scalar("oom-score-adj"),
    list("device", "devices"),
];

const LOGGING: &[Rule] = &[scalar("max-size"), scalar("max-files")];

const MOUNT: &[Rule] = &[
    scalar("type"),
    scalar("source"),
    scalar("target"),
    scalar("read-only"),
    scalar("propagation"),
    scalar("nocopy"),
    scalar("size"),
    scalar("mode"),
];

const SERVICE_NETWORK: &[Rule] = &[
    scalar("name"),
    list("alias", "aliases"),
    scalar("ipv4"),
    scalar("ipv6"),
];

const LINK: &[Rule] = &[scalar("service"), scalar("alias")];
const DEPENDENCY: &[Rule] = &[
    scalar("service"),
    scalar("condition"),
    scalar("restart-dependents"),
];
const EXTRA_HOST: &[Rule] = &[scalar("host"), scalar("ip")];

const NETWORK: &[Rule] = &[
    scalar("driver"),
    scalar("subnet"),
    scalar("gateway"),
    scalar("ip-range"),
    scalar("internal"),
    scalar("ipv6"),
    scalar("subnet6"),
    scalar("gateway6"),
    scalar("bridge"),
    scalar("parent"),
    scalar("vlan"),
    scalar("external"),
    rule("label", "labels", Shape::Props),
];

const VOLUME: &[Rule] = &[
    scalar("driver"),
    rule("driver-opt", "driver-opts", Shape::Props),
    rule("label", "labels", Shape::Props),
    scalar("external"),
];

fn rules(ctx: Ctx) -> &'static [Rule] {
    match ctx {
        Ctx::Top => TOP,
        Ctx::Service => SERVICE,
        Ctx::Build => BUILD,
        Ctx::Restart => RESTART,
        Ctx::Backoff => BACKOFF,
        Ctx::StartLimit => START_LIMIT,
        Ctx::Update => UPDATE,
        Ctx::Health => HEALTH,
        Ctx::Limits => LIMITS,
        Ctx::Logging => LOGGING,
        Ctx::Mount => MOUNT,
        Ctx::ServiceNetwork => SERVICE_NETWORK,
        Ctx::Link => LINK,
        Ctx::Dependency => DEPENDENCY,
        Ctx::ExtraHost => EXTRA_HOST,
        Ctx::Network => NETWORK,
        Ctx::Volume => VOLUME,
    }
}

fn describe(ctx: Ctx) -> &'static str {
    match ctx {
        Ctx::Top => "the stack file",
        Ctx::Service => "a service",
        Ctx::Build => "build",
        Ctx::Restart => "restart",
        Ctx::Backoff => "backoff",
        Ctx::StartLimit => "start-limit",
        Ctx::Update => "update",
        Ctx::Health => "health",
        Ctx::Limits => "limits",
        Ctx::Logging => "logging",
        Ctx::Mount => "a volume",
        Ctx::ServiceNetwork => "a service network",
        Ctx::Link => "a link",
        Ctx::Dependency => "depends-on",
        Ctx::ExtraHost => "an extra host",
        Ctx::Network => "a network",
        Ctx::Volume => "a volume",
    }
}

/// Node names allowed in a service, for documentation and completion.
pub fn service_nodes() -> impl Iterator<Item = &'static str> {
    SERVICE.iter().map(|r| r.node)
}

/// Parses KDL text into the canonical tree. Syntax errors and unknown nodes are
/// recorded in `problems`; the tree holds whatever could be read.
///
/// Reading uses our own parser (`kdl_syntax.rs`), which is about a hundred times
/// faster than the `kdl` crate and reports byte spans; writing still uses the
/// crate, whose formatter we have no reason to redo.
pub fn parse(
    text: &str,
    source: &Arc<NamedSource<String>>,
    problems: &mut Problems,
) -> Option<Value> {
    let doc = match kdl_syntax::parse(text) {
        Ok(doc) => doc,
        Err(errors) => {
            for err in errors {
                let mut p =
                    Problem::error(ProblemKind::Syntax, format!("invalid KDL: {}", err.message))
                        .at(source, err.span, err.label);
                if let Some(help) = err.help {
                    p = p.help(help);
                }
                problems.push(p);
            }
            return None;
        }
    };
    let mut reader = Reader { source, problems };
    Some(reader.body(doc.nodes, Ctx::Top, Span::new(0, text.len()), Vec::new()))
}

struct Reader<'a> {
    source: &'a Arc<NamedSource<String>>,
    problems: &'a mut Problems,
}

/// A map under construction: ordered entries with a key index.
#[derive(Default)]
struct MapBuilder {
    entries: Vec<Entry>,
}

impl MapBuilder {
    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    fn push(&mut self, key: &str, key_span: Span, value: Value) {
        self.entries.push(Entry {
            key: key.to_string(),
            key_span,
            value,
        });
    }

    /// Appends to the list under `key`, creating it.
    fn append(&mut self, key: &str, key_span: Span, items: Vec<Value>, span: Span) {
        match self.position(key) {
            Some(i) => {
                if let Kind::List(list) = &mut self.entries[i].value.kind {
                    list.extend(items);
                    return;
                }
                self.push(key, key_span, Value::new(Kind::List(items), span));
            }
            None => self.push(key, key_span, Value::new(Kind::List(items), span)),
        }
    }

    /// Merges entries into the map under `key`, creating it.
    fn merge(&mut self, key: &str, key_span: Span, entries: Vec<Entry>, span: Span) {
        if let Some(i) = self.position(key)
            && let Kind::Map(map) = &mut self.entries[i].value.kind
        {
            map.extend(entries);
            return;
        }
        self.push(key, key_span, Value::new(Kind::Map(entries), span));
    }

    fn build(self, span: Span) -> Value {
        Value::new(Kind::Map(self.entries), span)
    }
}

/// A node's arguments: values with their spans.
type Args = Vec<(Scalar, Span)>;

/// The reader consumes the syntax tree, so strings move into the value tree
/// instead of being copied.
impl Reader<'_> {
    fn error(&mut self, kind: ProblemKind, span: Span, message: String, label: &str) {
        let p = Problem::error(kind, message).at(self.source, span, label);
        self.problems.push(p);
    }

    fn scalar(&self, value: Scalar, span: Span) -> Value {
        let kind = match value {
            Scalar::String(s) => Kind::Str(s),
            Scalar::Integer(i) => match i64::try_from(i) {
                Ok(i) => Kind::Int(i),
                Err(_) => Kind::Str(i.to_string()),
            },
            Scalar::Float(f) => Kind::Float(f),
            Scalar::Bool(b) => Kind::Bool(b),
            Scalar::Null => Kind::Null,
        };
        Value::new(kind, span)
    }

    /// Splits a node's entries into arguments and properties.
    fn split(&self, entries: Vec<kdl_syntax::Entry>) -> (Args, Vec<Entry>) {
        let mut args = Vec::new();
        let mut props = Vec::new();
        for e in entries {
            match e.name {
                None => args.push((e.value, e.span)),
                Some((key, key_span)) => props.push(Entry {
                    key,
                    key_span,
                    value: self.scalar(e.value, e.span),
                }),
            }
        }
        (args, props)
    }

    /// Reads `nodes` (after `extra` entries) in context `ctx`.
    fn body(&mut self, nodes: Vec<Node>, ctx: Ctx, span: Span, extra: Vec<Entry>) -> Value {
        let mut map = MapBuilder { entries: extra };
        for node in nodes {
            self.node(node, ctx, &mut map);
        }
        map.build(span)
    }

    fn node(&mut self, node: Node, ctx: Ctx, map: &mut MapBuilder) {
        let Node {
            name,
            name_span,
            span,
            entries,
            children,
        } = node;
        let name = name.as_str();
        let table = rules(ctx);
        let Some(rule) = table.iter().find(|r| r.node == name) else {
            let known: Vec<&str> = table.iter().map(|r| r.node).collect();
            let mut p = Problem::error(
                ProblemKind::UnknownKey,
                format!("unknown node `{name}` in {}", describe(ctx)),
            )
            .at(self.source, name_span, "unknown node");
            if let Some(s) = suggest(name, &known) {
                p = p.help(format!("did you mean `{s}`?"));
            }
            self.problems.push(p);
            return;
        };
        let (mut args, props) = self.split(entries);
        match rule.shape {
            Shape::Scalar => {
                if args.len() != 1 || !props.is_empty() || children.is_some() {
                    self.error(
                        ProblemKind::WrongType,
                        span,
                        format!("`{name}` takes exactly one value"),
                        "expected one value",
                    );
                    return;
                }
                if let Some((value, vspan)) = args.pop() {
                    let value = self.scalar(value, vspan);
                    map.push(rule.key, name_span, value);
                }
            }
            Shape::Args { repeat } => {
                if !props.is_empty() || children.is_some() || args.is_empty() {
                    self.error(
                        ProblemKind::WrongType,
                        span,
                        format!("`{name}` takes one or more values and nothing else"),
                        "expected values",
                    );
                    return;
                }
                let mut items: Vec<Value> =
                    args.into_iter().map(|(v, s)| self.scalar(v, s)).collect();
                if repeat {
                    map.append(rule.key, name_span, items, span);
                } else if items.len() == 1 {
                    let item = items.pop().unwrap_or_else(|| Value::map(span));
                    map.push(rule.key, name_span, item);
                } else {
                    map.push(rule.key, name_span, Value::new(Kind::List(items), span));
                }
            }
            Shape::Props => {
                if children.is_some() {
                    self.error(
                        ProblemKind::WrongType,
                        span,
                        format!("`{name}` takes NAME=value properties, not children"),
                        "children here",
                    );
                    return;
                }
                let mut entries = props;
                for (value, vspan) in args {
                    let value = self.scalar(value, vspan);
                    let Some(text) = value.scalar_text() else {
                        self.error(
                            ProblemKind::WrongType,
                            vspan,
                            format!("`{name}` arguments are NAME=value strings"),
                            "expected NAME=value",
                        );
                        continue;
                    };
                    let (key, val) = match text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Value::str(v, vspan)),
                        None => (text, Value::new(Kind::Null, vspan)),
                    };
                    entries.push(Entry {
                        key,
                        key_span: vspan,
                        value: val,
                    });
                }
                map.merge(rule.key, name_span, entries, span);
            }
            Shape::Item { fields, ctx: inner } => {
                let shape = CompoundShape {
                    fields,
                    rest: false,
                    ctx: inner,
                };
                if let Some(value) = self.compound(children, name, shape, args, props, span) {
                    map.append(rule.key, name_span, vec![value], span);
                }
            }
            Shape::Block {
                fields,
                rest,
                ctx: inner,
            } => {
                let shape = CompoundShape {
                    fields,
                    rest,
                    ctx: inner,
                };
                if let Some(value) = self.compound(children, name, shape, args, props, span) {
                    map.push(rule.key, name_span, value);
                }
            }
            Shape::Named(inner) => {
                let mut args = args.into_iter();
                let Some((first, nspan)) = args.next() else {
                    self.error(
                        ProblemKind::WrongType,
                        span,
                        format!("`{name}` needs a name: {name} \"NAME\" {{ … }}"),
                        "no name",
                    );
                    return;
                };
                let Scalar::String(item_name) = first else {
                    self.error(
                        ProblemKind::WrongType,
                        nspan,
                        format!("the name of a {name} must be a string"),
                        "expected a string",
                    );
                    return;
                };
                if let Some((_, extra)) = args.next() {
                    self.error(
                        ProblemKind::WrongType,
                        extra,
                        format!("`{name}` takes one name; put settings in properties or children"),
                        "unexpected value",
                    );
                }
                let body = match children {
                    Some(children) => self.body(children, inner, span, props),
                    None => Value::new(Kind::Map(props), span),
                };
                map.merge(
                    rule.key,
                    name_span,
                    vec![Entry {
                        key: item_name,
                        key_span: nspan,
                        value: body,
                    }],
                    span,
                );
            }
        }
    }

    /// An item or block: positional fields, properties and children.
    fn compound(
        &mut self,
        children: Option<Vec<Node>>,
        name: &str,
        shape: CompoundShape,
        mut args: Args,
        props: Vec<Entry>,
        span: Span,
    ) -> Option<Value> {
        let CompoundShape { fields, rest, ctx } = shape;
        if args.len() == 1 && props.is_empty() && children.is_none() {
            let (value, vspan) = args.pop()?;
            return Some(self.scalar(value, vspan));
        }
        if args.len() > fields.len() && (!rest || fields.is_empty()) {
            let extra = args.get(fields.len()).map_or(span, |a| a.1);
            let expected = if fields.is_empty() {
                "no values".to_string()
            } else {
                fields
                    .iter()
                    .map(|f| f.to_ascii_uppercase())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            self.error(
                ProblemKind::WrongType,
                extra,
                format!("too many values for `{name}` (it takes {expected})"),
                "unexpected value",
            );
            return None;
        }
        let count = args.len();
        let mut args = args.into_iter();
        let mut positional = Vec::new();
        for (i, field) in fields.iter().enumerate() {
            let is_last = i + 1 == fields.len();
            if rest && is_last && count > fields.len() {
                let remaining: Args = args.by_ref().collect();
                let (Some(first), Some(last)) = (remaining.first(), remaining.last()) else {
                    break;
                };
                let (key_span, lspan) = (first.1, Span::from_range(first.1.offset..last.1.end()));
                let items: Vec<Value> = remaining
                    .into_iter()
                    .map(|(v, s)| self.scalar(v, s))
                    .collect();
                positional.push(Entry {
                    key: (*field).to_string(),
                    key_span,
                    value: Value::new(Kind::List(items), lspan),
                });
            } else if let Some((value, vspan)) = args.next() {
                positional.push(Entry {
                    key: (*field).to_string(),
                    key_span: vspan,
                    value: self.scalar(value, vspan),
                });
            }
        }
        positional.extend(props);
        Some(match children {
            Some(children) => self.body(children, ctx, span, positional),
            None => Value::new(Kind::Map(positional), span),
        })
    }
}

/// The positional layout of an item or block node.
#[derive(Debug, Clone, Copy)]
struct CompoundShape {
    fields: &'static [&'static str],
    rest: bool,
    ctx: Ctx,
}

/// Writes a canonical JSON value (the serialized model) as a KDL document.
pub fn emit(model: &serde_json::Value) -> String {
    let mut doc = KdlDocument::new();
    if let serde_json::Value::Object(map) = model {
        emit_body(&mut doc, map, Ctx::Top);
    }
    doc.autoformat();
    doc.to_string()
}

fn kdl_value(v: &serde_json::Value) -> KdlValue {
    match v {
        serde_json::Value::Null => KdlValue::Null,
        serde_json::Value::Bool(b) => KdlValue::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => KdlValue::Integer(i128::from(i)),
            None => KdlValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => KdlValue::String(s.clone()),
        other => KdlValue::String(other.to_string()),
    }
}

fn is_scalar(v: &serde_json::Value) -> bool {
    !matches!(
        v,
        serde_json::Value::Array(_) | serde_json::Value::Object(_)
    )
}

fn emit_body(doc: &mut KdlDocument, map: &serde_json::Map<String, serde_json::Value>, ctx: Ctx) {
    for (key, value) in map {
        let Some(rule) = rules(ctx).iter().find(|r| r.key == key) else {
            continue;
        };
        match rule.shape {
            Shape::Scalar => {
                let mut node = KdlNode::new(rule.node);
                node.push(KdlEntry::new(kdl_value(value)));
                doc.nodes_mut().push(node);
            }
            Shape::Args { .. } => {
                let mut node = KdlNode::new(rule.node);
                match value {
                    serde_json::Value::Array(items) => {
                        for item in items {
                            node.push(KdlEntry::new(kdl_value(item)));
                        }
                    }
                    other => node.push(KdlEntry::new(kdl_value(other))),
                }
                if !node.entries().is_empty() {
                    doc.nodes_mut().push(node);
                }
            }
            Shape::Props => {
                if let serde_json::Value::Object(entries) = value {
                    for (k, v) in entries {
                        let mut node = KdlNode::new(rule.node);
                        node.push(KdlEntry::new_prop(k.as_str(), kdl_value(v)));
                        doc.nodes_mut().push(node);
                    }
                }
            }
            Shape::Item { fields, ctx: inner } => {
                let items = match value {
                    serde_json::Value::Array(items) => items.clone(),
                    serde_json::Value::Object(entries) => entries
                        .iter()
                        .map(|(name, v)| {
                            let mut obj = match v {
                                serde_json::Value::Object(o) => o.clone(),
                                _ => serde_json::Map::new(),
                            };
                            obj.insert(
                                fields[0].to_string(),
                                serde_json::Value::String(name.clone()),
                            );
                            serde_json::Value::Object(obj)
                        })
                        .collect(),
                    other => vec![other.clone()],
                };
                for item in &items {
                    doc.nodes_mut()
                        .push(emit_compound(rule.node, item, fields, false, inner));
                }
            }
            Shape::Block {
                fields,
                rest,
                ctx: inner,
            } => doc
                .nodes_mut()
                .push(emit_compound(rule.node, value, fields, rest, inner)),
            Shape::Named(inner) => {
                if let serde_json::Value::Object(entries) = value {
                    for (name, body) in entries {
                        let mut node = KdlNode::new(rule.node);
                        node.push(KdlEntry::new(name.as_str()));
                        if let serde_json::Value::Object(body) = body {
                            let mut children = KdlDocument::new();
                            emit_body(&mut children, body, inner);
                            if !children.nodes().is_empty() {
                                node.set_children(children);
                            }
                        }
                        doc.nodes_mut().push(node);
                    }
                }
            }
        }
    }
}

fn emit_compound(
    name: &str,
    value: &serde_json::Value,
    fields: &[&str],
    rest: bool,
    ctx: Ctx,
) -> KdlNode {
    let mut node = KdlNode::new(name);
    let obj = match value {
        serde_json::Value::Object(obj) => obj,
        serde_json::Value::Array(items) => {
            for item in items {
                node.push(KdlEntry::new(kdl_value(item)));
            }
            return node;
        }
        scalar => {
            node.push(KdlEntry::new(kdl_value(scalar)));
            return node;
        }
    };
    let mut remaining = obj.clone();
    for (i, field) in fields.iter().enumerate() {
        let Some(v) = obj.get(*field) else { break };
        match v {
            serde_json::Value::Array(items) if rest && i + 1 == fields.len() && items.len() > 1 => {
                for item in items {
                    node.push(KdlEntry::new(kdl_value(item)));
                }
            }
            v if is_scalar(v) => node.push(KdlEntry::new(kdl_value(v))),
            _ => break,
        }
        remaining.remove(*field);
    }
    let mut children_map = serde_json::Map::new();
    for (k, v) in remaining {
        let as_prop = is_scalar(&v)
            && rules(ctx)
                .iter()
                .any(|r| r.key == k && matches!(r.shape, Shape::Scalar));
        if as_prop {
            node.push(KdlEntry::new_prop(k.as_str(), kdl_value(&v)));
        } else {
            children_map.insert(k, v);
        }
    }
    if !children_map.is_empty() {
        let mut children = KdlDocument::new();
        emit_body(&mut children, &children_map, ctx);
        node.set_children(children);
    }
    node
}
