//! The compose front end: a `docker-compose.yaml` read into the canonical value
//! tree that [`super::decode`] turns into the model.
//!
//! It works in two steps:
//!
//! 1. **Load.** granit-parser's YAML events are read into a spanned tree that
//!    still has the compose layout. Each value keeps the byte span of its text
//!    (the *defined* location: for an alias or a merge key, the anchored text).
//!    Aliases and merge keys (`<<: *anchor`) are expanded here. Non-string map
//!    keys (`80: x`, `true: y`) become their source text. Alias replays have a
//!    budget, so an alias bomb is refused with an error instead of exhausting
//!    memory.
//! 2. **Rewrite.** Compose keys are renamed and reshaped into the canonical
//!    layout (`depends_on` → `depends-on`, long-syntax ports → `ip:host:container/proto`
//!    strings, `deploy.resources.limits` → `limits`, …). Values keep their YAML
//!    spans, so the decoder's "bad port" or "bad size" points at the YAML bytes.
//!
//! Key policy, the same at every level:
//!
//! - compose keys the model represents are rewritten;
//! - compose keys it cannot represent (`platform`, `secrets`, `deploy.placement`,
//!   …) are a [`ProblemKind::Unsupported`] **warning** at the key, and ignored;
//! - `version` (obsolete) and `x-*` extension keys are ignored silently, as compose
//!   does;
//! - keys that are not compose keys at all are [`ProblemKind::UnknownKey`]
//!   **errors** reported here, with a "did you mean" among the compose names of
//!   that level. They are not passed through to the decoder because it would
//!   suggest canonical names (`depends-on`), which are wrong in a compose file.
//!
//! Values this module looks into (a `depends_on` condition, a logging driver, a
//! mount type) are read before interpolation; everything else is copied and
//! interpolated later with the rest of the tree.
//!
//! This module never reads other files (`env_file`, `extends`) and never resolves
//! variables.

use std::sync::Arc;

use miette::NamedSource;

use super::decode::suggest;
use super::diag::{Problem, ProblemKind, Problems, Span, char_to_byte};
use super::tree::{Entry, Kind, Value};

/// Alias and merge replays allowed in one file. Real compose files share an
/// anchor between a few dozen services; a "billion laughs" document needs
/// billions. Counted in parser events: a scalar is one, a collection two plus
/// its children.
const MAX_ALIAS_REPLAY_EVENTS: usize = 100_000;

/// Parses compose YAML into the canonical tree, recording syntax errors,
/// unknown compose keys (errors) and unsupported ones (warnings).
///
/// Returns `None` when the text is not YAML or its top level is not a map.
pub fn parse(
    text: &str,
    source: &Arc<NamedSource<String>>,
    problems: &mut Problems,
) -> Option<Value> {
    let yaml = load(text, source, problems)?;
    let mut found = Problems::new();
    let tree = Converter {
        source,
        problems: &mut found,
    }
    .stack(&yaml);
    // The rewrite visits keys by level, not by line: report in file order.
    let mut found = found.into_vec();
    found.sort_by_key(|p| p.labels.first().map(|(span, _)| span.offset));
    for p in found {
        problems.push(p);
    }
    Some(tree)
}

// ---------------------------------------------------------------------------
// Step 1: YAML → spanned tree in the compose layout.

/// A YAML node with the byte span of its text (the *defined* location: for an
/// alias or a merged entry, the anchored text).
#[derive(Debug, Clone)]
struct Node {
    kind: NodeKind,
    span: Span,
}

/// The shape of a YAML node, scalars typed by the rules compose reads them with.
#[derive(Debug, Clone)]
enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`, kept as its digits.
    BigInt(String),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A syntax-level failure: the message (without a location) and where.
#[derive(Debug)]
struct YamlError {
    message: String,
    span: Span,
}

impl YamlError {
    fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            span,
        }
    }
}

/// The message every refused-for-size document gets, the one serde-saphyr used
/// before this loader replaced it.
const TOO_LARGE: &str = "YAML document too large or too complex";

/// An alias to an anchor that is not defined before it.
const UNKNOWN_ANCHOR: &str = "reference to unknown value";

/// Containers nested deeper than this are refused, as serde-saphyr's default
/// budget did. The parser allows 255 of each kind; compose files nest a handful,
/// and every later step recurses over the tree.
const MAX_DEPTH: usize = 64;

/// Reads the YAML straight from granit-parser's events (the parser serde-saphyr
/// uses) into [`Node`]s. Going through serde with a spanned wrapper around every
/// node cost about three times the parse itself; here each event is read once.
///
/// What a YAML library would otherwise do is done here, following the YAML 1.2
/// core schema as compose (go-yaml v3) reads it: anchors and aliases, merge keys
/// (`<<: *x`, `<<: [*x, *y]`; explicit keys win, then earlier merges), duplicate
/// keys as errors, and a budget on alias replays so an alias bomb is refused.
struct YamlReader<'t> {
    text: &'t str,
    parser: granit_parser::Parser<'t, granit_parser::StrInput<'t>>,
    /// Anchored nodes by anchor id, with their size in parser events. `None`
    /// while the anchored node is still being read.
    anchors: Vec<Option<(Node, usize)>>,
    /// Events replayed by aliases so far.
    replayed: usize,
    /// The span of the last event read, for errors at the end of the input.
    last: Span,
}

type SpannedEvent<'t> = (granit_parser::Event<'t>, granit_parser::Span);

impl<'t> YamlReader<'t> {
    fn new(text: &'t str) -> Self {
        let mut options = granit_parser::Options::default();
        options.set_emit_comments(false);
        Self {
            text,
            parser: granit_parser::Parser::new_from_str_with_options(text, options),
            anchors: Vec::new(),
            replayed: 0,
            last: Span::new(0, 0),
        }
    }

    /// Reads the single document of the stream; `Null` for an empty stream.
    fn document(mut self) -> Result<Node, YamlError> {
        let mut root = None;
        while let Some((event, span)) = self.next()? {
            match event {
                granit_parser::Event::StreamStart
                | granit_parser::Event::StreamEnd
                | granit_parser::Event::DocumentStart(..)
                | granit_parser::Event::DocumentEnd => {}
                event => {
                    if root.is_some() {
                        return Err(YamlError::new(
                            "only single YAML document expected but multiple found",
                            self.span(&span),
                        ));
                    }
                    root = Some(self.node(event, span, 0)?);
                }
            }
        }
        Ok(root.unwrap_or(Node {
            kind: NodeKind::Null,
            span: self.last,
        }))
    }

    fn next(&mut self) -> Result<Option<SpannedEvent<'t>>, YamlError> {
        loop {
            match self.parser.next_event() {
                None => return Ok(None),
                Some(Err(e)) => {
                    let mark = e.marker();
                    let offset = mark
                        .byte_offset()
                        .unwrap_or_else(|| char_to_byte(self.text, mark.index()));
                    let offset = self.text.floor_char_boundary(offset);
                    let end = self.text.ceil_char_boundary(offset.saturating_add(1));
                    let message = match e.kind() {
                        granit_parser::ErrorKind::UnknownAnchor => UNKNOWN_ANCHOR.to_string(),
                        _ => e.info(),
                    };
                    return Err(YamlError::new(message, Span::from_range(offset..end)));
                }
                Some(Ok((event, span))) => {
                    self.last = self.span(&span);
                    match event {
                        granit_parser::Event::Comment(..) | granit_parser::Event::Anchor(..) => {}
                        event => return Ok(Some((event, span))),
                    }
                }
            }
        }
    }

    /// The next event, which must exist inside a collection.
    fn next_in_collection(&mut self) -> Result<SpannedEvent<'t>, YamlError> {
        self.next()?
            .ok_or_else(|| YamlError::new("unexpected end of input", self.last))
    }

    /// The byte span of a parser span, clamped to the text and snapped to
    /// character boundaries so that slicing with it can never panic.
    fn span(&self, span: &granit_parser::Span) -> Span {
        let (start, end) = match span.byte_range() {
            Some(r) => (r.start, r.end),
            // Only streaming input lacks byte offsets; this reads a `&str`.
            None => (
                char_to_byte(self.text, span.start.index()),
                char_to_byte(self.text, span.end.index()),
            ),
        };
        let start = self.text.floor_char_boundary(start);
        let end = self.text.floor_char_boundary(end.max(start));
        Span::from_range(start..end)
    }

    fn node(
        &mut self,
        event: granit_parser::Event<'t>,
        span: granit_parser::Span,
        depth: usize,
    ) -> Result<Node, YamlError> {
        let at = self.span(&span);
        let (anchor, node) = match event {
            granit_parser::Event::Scalar(value, style, anchor, tag) => {
                let kind = scalar(value, style, tag.as_deref())
                    .map_err(|message| YamlError::new(message, at))?;
                (anchor, Node { kind, span: at })
            }
            granit_parser::Event::SequenceStart(_, anchor, _) => {
                self.open(anchor, depth, at)?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next_in_collection()?;
                    if matches!(event, granit_parser::Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, span, depth + 1)?);
                }
                let node = Node {
                    kind: NodeKind::Seq(items),
                    span: at,
                };
                (anchor, node)
            }
            granit_parser::Event::MappingStart(_, anchor, _) => {
                self.open(anchor, depth, at)?;
                (anchor, self.map(at, depth)?)
            }
            granit_parser::Event::Alias(id) => return self.alias(id, at),
            granit_parser::Event::UnresolvedAlias(_) => {
                return Err(YamlError::new(UNKNOWN_ANCHOR, at));
            }
            _ => return Err(YamlError::new("unexpected YAML event", at)),
        };
        if anchor != 0 {
            let size = events_in(&node);
            if let Some(slot) = self.anchors.get_mut(anchor) {
                *slot = Some((node.clone(), size));
            }
        }
        Ok(node)
    }

    /// Checks the depth and marks `anchor` as being read, so that an alias to it
    /// from inside (a recursive document) is refused.
    fn open(&mut self, anchor: usize, depth: usize, at: Span) -> Result<(), YamlError> {
        if depth >= MAX_DEPTH {
            return Err(YamlError::new(
                // serde-saphyr's wording, kept so the message did not change.
                format!(
                    "{TOO_LARGE}: limits breached: Depth {{ depth: {} }}",
                    depth + 1
                ),
                at,
            ));
        }
        if anchor != 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize_with(anchor + 1, || None);
            }
            self.anchors[anchor] = None;
        }
        Ok(())
    }

    /// A copy of the anchored node, counted against the replay budget before it
    /// is made, so a bomb is refused without building anything.
    fn alias(&mut self, id: usize, at: Span) -> Result<Node, YamlError> {
        let Some(Some((node, size))) = self.anchors.get(id) else {
            return Err(YamlError::new("Recursive reference not allowed here", at));
        };
        let total = self.replayed.saturating_add(*size);
        if total > MAX_ALIAS_REPLAY_EVENTS {
            return Err(YamlError::new(
                format!("{TOO_LARGE}: total_replayed_events={total} > {MAX_ALIAS_REPLAY_EVENTS}"),
                at,
            ));
        }
        self.replayed = total;
        Ok(node.clone())
    }

    /// A mapping after its start event: explicit entries in file order, then the
    /// merged ones whose keys are not there yet (YAML merge key spec: explicit
    /// keys win, and an earlier merge source wins over a later one).
    fn map(&mut self, at: Span, depth: usize) -> Result<Node, YamlError> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merged: Vec<(Node, Node)> = Vec::new();
        let mut seen = KeySet::default();
        loop {
            let (event, span) = self.next_in_collection()?;
            if matches!(event, granit_parser::Event::MappingEnd) {
                break;
            }
            let is_merge = is_merge_key(&event);
            let key = self.node(event, span, depth + 1)?;
            let (event, span) = self.next_in_collection()?;
            let value = self.node(event, span, depth + 1)?;
            if is_merge {
                merge_sources(value, &mut merged)?;
                continue;
            }
            if !seen.insert(&entries, &key) {
                let message = match key_text(&key) {
                    Some(k) => format!("duplicate mapping key `{k}` is not allowed here"),
                    None => "duplicate mapping key not allowed here".to_string(),
                };
                return Err(YamlError::new(message, key.span));
            }
            entries.push((key, value));
        }
        for (key, value) in merged {
            if seen.insert(&entries, &key) {
                entries.push((key, value));
            }
        }
        Ok(Node {
            kind: NodeKind::Map(entries),
            span: at,
        })
    }
}

/// `<<` written plain and untagged, or tagged `!!merge`.
fn is_merge_key(event: &granit_parser::Event<'_>) -> bool {
    match event {
        granit_parser::Event::Scalar(value, style, _, tag) => {
            value.as_ref() == "<<"
                && match tag {
                    None => *style == granit_parser::ScalarStyle::Plain,
                    Some(tag) => tag.is_yaml_core_schema_tag("merge"),
                }
        }
        _ => false,
    }
}

/// Appends the entries a merge key's value brings: a map's entries, or those of
/// each map in a list, in order. Null merges nothing.
fn merge_sources(value: Node, merged: &mut Vec<(Node, Node)>) -> Result<(), YamlError> {
    let refuse = |span| {
        YamlError::new(
            "YAML merge value must be mapping or sequence of mappings",
            span,
        )
    };
    match value.kind {
        NodeKind::Null => Ok(()),
        NodeKind::Map(entries) => {
            merged.extend(entries);
            Ok(())
        }
        NodeKind::Seq(items) => {
            for item in items {
                match item.kind {
                    NodeKind::Map(entries) => merged.extend(entries),
                    _ => return Err(refuse(item.span)),
                }
            }
            Ok(())
        }
        _ => Err(refuse(value.span)),
    }
}

/// The keys of one mapping, compared by typed value (`80` and `"80"` differ,
/// `0x10` and `16` do not). Small maps are scanned; a large one (`services`)
/// gets a hash set, built when it grows past the scan size.
#[derive(Default)]
struct KeySet {
    index: Option<std::collections::HashSet<KeyId>>,
}

/// Maps with fewer entries than this are scanned for duplicates.
const SCANNED_KEYS: usize = 16;

#[derive(PartialEq, Eq, Hash)]
enum KeyId {
    Null,
    Bool(bool),
    Int(i64),
    BigInt(String),
    Float(u64),
    Str(String),
    /// A collection key, by its structure (spans left out).
    Collection(String),
}

impl KeyId {
    fn of(key: &Node) -> Self {
        match &key.kind {
            NodeKind::Null => Self::Null,
            NodeKind::Bool(b) => Self::Bool(*b),
            NodeKind::Int(i) => Self::Int(*i),
            NodeKind::BigInt(d) => Self::BigInt(d.clone()),
            NodeKind::Float(f) => Self::Float(f.to_bits()),
            NodeKind::Str(s) => Self::Str(s.clone()),
            NodeKind::Seq(_) | NodeKind::Map(_) => {
                let mut s = String::new();
                structure(key, &mut s);
                Self::Collection(s)
            }
        }
    }
}

impl KeySet {
    /// Records `key`, about to be added to `entries`; false if an equal key
    /// is in `entries` already.
    fn insert(&mut self, entries: &[(Node, Node)], key: &Node) -> bool {
        if self.index.is_none() && entries.len() < SCANNED_KEYS {
            return !entries.iter().any(|(k, _)| is_same_key(k, key));
        }
        self.index
            .get_or_insert_with(|| entries.iter().map(|(k, _)| KeyId::of(k)).collect())
            .insert(KeyId::of(key))
    }
}

fn is_same_key(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (NodeKind::Str(x), NodeKind::Str(y)) | (NodeKind::BigInt(x), NodeKind::BigInt(y)) => x == y,
        (NodeKind::Int(x), NodeKind::Int(y)) => x == y,
        (NodeKind::Float(x), NodeKind::Float(y)) => x.to_bits() == y.to_bits(),
        (NodeKind::Bool(x), NodeKind::Bool(y)) => x == y,
        (NodeKind::Null, NodeKind::Null) => true,
        (NodeKind::Seq(_) | NodeKind::Map(_), NodeKind::Seq(_) | NodeKind::Map(_)) => {
            KeyId::of(a) == KeyId::of(b)
        }
        _ => false,
    }
}

fn structure(node: &Node, out: &mut String) {
    use std::fmt::Write as _;
    match &node.kind {
        NodeKind::Seq(items) => {
            out.push('[');
            for item in items {
                structure(item, out);
                out.push(',');
            }
            out.push(']');
        }
        NodeKind::Map(entries) => {
            out.push('{');
            for (k, v) in entries {
                structure(k, out);
                out.push(':');
                structure(v, out);
                out.push(',');
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other:?}");
        }
    }
}

/// A scalar key as text, for the duplicate-key message.
fn key_text(key: &Node) -> Option<String> {
    match &key.kind {
        NodeKind::Str(s) | NodeKind::BigInt(s) => Some(s.clone()),
        NodeKind::Int(i) => Some(i.to_string()),
        NodeKind::Float(f) => Some(f.to_string()),
        NodeKind::Bool(b) => Some(b.to_string()),
        NodeKind::Null | NodeKind::Seq(_) | NodeKind::Map(_) => None,
    }
}

/// How many parser events replaying `node` takes: the alias budget's unit.
fn events_in(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Seq(items) => 2 + items.iter().map(events_in).sum::<usize>(),
        NodeKind::Map(entries) => {
            2 + entries
                .iter()
                .map(|(k, v)| events_in(k) + events_in(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Types a scalar the way compose reads YAML (go-yaml v3, YAML 1.2 core schema):
///
/// - quoted and block scalars, and `!!str`/`!` ones, are strings;
/// - `~`, `null` (any YAML case) and nothing are null;
/// - only `true`/`false` are booleans (`restart: no` is the string "no");
/// - integers are decimal, `0x`, `0o` or `0b` with `_` separators, floats are
///   decimal with an optional exponent;
/// - a number with a leading zero stays text: go-yaml reads `0755` as octal 493,
///   YAML 1.2 as 755, and both lose what was written. The decoder reads
///   `mode: 0755` as octal and `TZ_OFFSET: 0100` as the string it is.
///
/// Other tags are ignored. `.inf` and `.nan` are refused: no compose field takes them.
fn scalar(
    value: std::borrow::Cow<'_, str>,
    style: granit_parser::ScalarStyle,
    tag: Option<&granit_parser::Tag>,
) -> Result<NodeKind, String> {
    let string = |value: std::borrow::Cow<'_, str>| NodeKind::Str(value.into_owned());
    let core = tag.and_then(granit_parser::Tag::core_suffix);
    match core {
        Some("str") => return Ok(string(value)),
        Some("null") => return Ok(NodeKind::Null),
        Some("bool") => {
            return bool_of(&value)
                .map(NodeKind::Bool)
                .ok_or_else(|| "invalid boolean literal; expected true or false".to_string());
        }
        Some("int") => {
            return int_of(yaml_trim(&value))
                .ok_or_else(|| "invalid value for integer".to_string());
        }
        Some("float") => {
            return match float_of(&value) {
                Some(f) if f.is_finite() => Ok(NodeKind::Float(f)),
                Some(_) => Err(non_finite(&value)),
                None => Err("invalid value for floating point".to_string()),
            };
        }
        _ => {}
    }
    // The non-specific tag `!` forces a string, like `!!str`.
    let non_specific = tag.is_some_and(|t| {
        t.suffix_in_namespace("!")
            .is_some_and(|s| matches!(s.as_ref(), "" | "!"))
    });
    if style != granit_parser::ScalarStyle::Plain || non_specific {
        return Ok(string(value));
    }
    if matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
        return Ok(NodeKind::Null);
    }
    if let Some(b) = bool_of(&value) {
        return Ok(NodeKind::Bool(b));
    }
    let t = yaml_trim(&value);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let uppercase_radix = matches!(unsigned.as_bytes(), [b'0', b'X' | b'O' | b'B', ..]);
    let leading_zero = unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| b.is_ascii_digit());
    let signed_nan = t != unsigned && matches!(unsigned, ".nan" | ".NaN" | ".NAN");
    if uppercase_radix || leading_zero || signed_nan {
        return Ok(string(value));
    }
    if let Some(int) = int_of(t) {
        return Ok(int);
    }
    match float_of(&value) {
        Some(f) if f.is_finite() => Ok(NodeKind::Float(f)),
        Some(_) => Err(non_finite(&value)),
        None => Ok(string(value)),
    }
}

fn non_finite(value: &str) -> String {
    format!("value `{}` is not a finite number", yaml_trim(value))
}

/// YAML's padding, trimmed before a scalar is typed.
fn yaml_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

fn bool_of(s: &str) -> Option<bool> {
    match yaml_trim(s) {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A YAML 1.2 integer (`t` trimmed): `i64`, or its digits when it only fits
/// `u64`. `None` for anything else, a leading-zero decimal included.
fn int_of(t: &str) -> Option<NodeKind> {
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(d) = rest.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = rest.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = rest.strip_prefix("0b") {
        (2, d)
    } else {
        if rest.starts_with('0') && rest != "0" {
            return None;
        }
        (10, rest)
    };
    let magnitude = digits_of(digits, radix)?;
    if negative {
        let v = 0i128.checked_sub(i128::try_from(magnitude).ok()?)?;
        i64::try_from(v).ok().map(NodeKind::Int)
    } else {
        let v = u64::try_from(magnitude).ok()?;
        Some(i64::try_from(v).map_or_else(|_| NodeKind::BigInt(v.to_string()), NodeKind::Int))
    }
}

/// Digits in `radix` with single `_` separators between them.
fn digits_of(digits: &str, radix: u32) -> Option<u128> {
    let bytes = digits.as_bytes();
    let mut value: u128 = 0;
    let mut any = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let between =
                i > 0 && bytes[i - 1] != b'_' && bytes.get(i + 1).is_some_and(|&n| n != b'_');
            if !between {
                return None;
            }
            continue;
        }
        let d = char::from(b).to_digit(radix)?;
        value = value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(d))?;
        any = true;
    }
    any.then_some(value)
}

/// A YAML 1.2 float, non-finite ones included (`.inf`, `1e999`).
fn float_of(s: &str) -> Option<f64> {
    let t = yaml_trim(s);
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    match unsigned {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" if negative => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        _ => {}
    }
    let parsed = t.parse::<f64>().ok()?;
    // Rust also reads `inf` and `nan`, which YAML keeps as text; an overflowing
    // literal such as `1e999` is a number, if not a finite one.
    if parsed.is_finite() || unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        Some(parsed)
    } else {
        None
    }
}

fn load(text: &str, source: &Arc<NamedSource<String>>, problems: &mut Problems) -> Option<Value> {
    let root = match YamlReader::new(text).document() {
        Ok(root) => root,
        Err(e) => {
            let message: String = e
                .message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            problems.push(
                Problem::error(ProblemKind::Syntax, format!("invalid YAML: {message}"))
                    .at(source, e.span, message),
            );
            return None;
        }
    };
    let mut loader = Loader {
        text,
        source,
        problems,
    };
    let tree = loader.value(root);
    match tree.kind {
        Kind::Map(_) => Some(tree),
        // An empty file is an empty stack.
        Kind::Null => Some(Value::map(tree.span)),
        _ => {
            problems.push(
                Problem::error(
                    ProblemKind::WrongType,
                    format!(
                        "expected a map at the top of a compose file, found {}",
                        tree.type_name()
                    ),
                )
                .at(source, tree.span, "expected a map"),
            );
            None
        }
    }
}

struct Loader<'a> {
    text: &'a str,
    source: &'a Arc<NamedSource<String>>,
    problems: &'a mut Problems,
}

impl Loader<'_> {
    fn value(&mut self, node: Node) -> Value {
        let mut span = node.span;
        let kind = match node.kind {
            NodeKind::Null => Kind::Null,
            NodeKind::Bool(b) => Kind::Bool(b),
            NodeKind::Int(i) => Kind::Int(i),
            NodeKind::BigInt(digits) => Kind::Str(digits),
            NodeKind::Float(f) => Kind::Float(f),
            NodeKind::Str(s) => Kind::Str(s),
            NodeKind::Seq(items) => {
                let items: Vec<Value> = items.into_iter().map(|i| self.value(i)).collect();
                span = cover(span, items.iter().map(|i| i.span));
                Kind::List(items)
            }
            NodeKind::Map(pairs) => {
                let mut entries = Vec::with_capacity(pairs.len());
                for (key, value) in pairs {
                    let key_span = key.span;
                    let value = self.value(value);
                    if let Some(key) = self.key(key.kind, key_span) {
                        entries.push(Entry {
                            key,
                            key_span,
                            value,
                        });
                    }
                }
                span = cover(
                    span,
                    entries.iter().flat_map(|e| [e.key_span, e.value.span]),
                );
                Kind::Map(entries)
            }
        };
        Value::new(kind, span)
    }

    /// A map key as text: strings as they are, other scalars as written
    /// (`1.10` stays `1.10`), collections refused.
    fn key(&mut self, key: NodeKind, span: Span) -> Option<String> {
        let written = || {
            self.text
                .get(span.offset..span.end())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        };
        match key {
            NodeKind::Str(s) => Some(s),
            NodeKind::BigInt(digits) => Some(digits),
            NodeKind::Null => Some(written().unwrap_or_default()),
            NodeKind::Bool(b) => Some(written().unwrap_or_else(|| b.to_string())),
            NodeKind::Int(i) => Some(written().unwrap_or_else(|| i.to_string())),
            NodeKind::Float(f) => Some(written().unwrap_or_else(|| f.to_string())),
            NodeKind::Seq(_) | NodeKind::Map(_) => {
                self.problems.push(
                    Problem::error(ProblemKind::Syntax, "a map key must be a scalar").at(
                        self.source,
                        span,
                        "a collection used as a key",
                    ),
                );
                None
            }
        }
    }
}

/// A container's span: saphyr gives the position of its first token only, so
/// it is stretched over the children written after it (merged and aliased
/// children are written earlier, at their anchor, and are left out).
fn cover(own: Span, children: impl Iterator<Item = Span>) -> Span {
    let end = children
        .filter(|c| c.offset >= own.offset)
        .map(|c| c.end())
        .fold(own.end(), usize::max);
    Span::from_range(own.offset..end)
}

// ---------------------------------------------------------------------------
// Step 2: compose layout → canonical layout.

const TOP_KEYS: &[&str] = &["version", "name", "services", "networks", "volumes"];
const TOP_UNSUPPORTED: &[&str] = &["include", "secrets", "configs", "models"];

/// Service keys copied under a new (or the same) canonical name.
const SERVICE_RENAMED: &[(&str, &str)] = &[
    ("image", "image"),
    ("command", "command"),
    ("entrypoint", "entrypoint"),
    ("environment", "env"),
    ("expose", "expose"),
    ("tmpfs", "tmpfs"),
    ("volumes_from", "volumes-from"),
    ("network_mode", "network-mode"),
    ("links", "links"),
    ("user", "user"),
    ("working_dir", "workdir"),
    ("hostname", "hostname"),
    ("domainname", "domainname"),
    ("dns", "dns"),
    ("dns_search", "dns-search"),
    ("extra_hosts", "extra-hosts"),
    ("cap_add", "cap-add"),
    ("cap_drop", "cap-drop"),
    ("privileged", "privileged"),
    ("read_only", "read-only"),
    ("security_opt", "security-opt"),
    ("sysctls", "sysctls"),
    ("stop_signal", "stop-signal"),
    ("stop_grace_period", "stop-grace-period"),
    ("labels", "labels"),
    ("init", "init"),
    ("tty", "tty"),
    ("stdin_open", "stdin-open"),
    ("profiles", "profiles"),
    ("scale", "replicas"),
];

/// Service keys copied into `limits` under a new name.
const LIMITS_RENAMED: &[(&str, &str)] = &[
    ("mem_limit", "memory"),
    ("memswap_limit", "memory-swap"),
    ("mem_reservation", "memory-reservation"),
    ("cpus", "cpus"),
    ("cpu_shares", "cpu-shares"),
    ("cpuset", "cpuset"),
    ("pids_limit", "pids"),
    ("shm_size", "shm-size"),
    ("ulimits", "ulimits"),
    ("oom_score_adj", "oom-score-adj"),
];

/// Service keys rewritten by their own function.
const SERVICE_RESHAPED: &[&str] = &[
    "build",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "depends_on",
    "restart",
    "deploy",
    "healthcheck",
    "blkio_config",
    "devices",
    "logging",
];

const SERVICE_UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "cgroup",
    "cgroup_parent",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "dns_opt",
    "extends",
    "external_links",
    "gpus",
    "group_add",
    "ipc",
    "isolation",
    "label_file",
    "mac_address",
    "mem_swappiness",
    "models",
    "oom_kill_disable",
    "pid",
    "platform",
    "post_start",
    "pre_stop",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "runtime",
    "secrets",
    "storage_opt",
    "use_api_socket",
    "userns_mode",
    "uts",
];

const BUILD_KEYS: &[&str] = &["context", "dockerfile", "args", "target", "no_cache"];
const BUILD_UNSUPPORTED: &[&str] = &[
    "additional_contexts",
    "cache_from",
    "cache_to",
    "dockerfile_inline",
    "entitlements",
    "extra_hosts",
    "isolation",
    "labels",
    "network",
    "platforms",
    "privileged",
    "provenance",
    "pull",
    "sbom",
    "secrets",
    "shm_size",
    "ssh",
    "tags",
    "ulimits",
];
const ENV_FILE_KEYS: &[&str] = &["path", "required"];
const ENV_FILE_UNSUPPORTED: &[&str] = &["format"];
const PORT_KEYS: &[&str] = &["target", "published", "host_ip", "protocol", "mode"];
const PORT_UNSUPPORTED: &[&str] = &["name", "app_protocol"];
const MOUNT_KEYS: &[&str] = &[
    "type",
    "source",
    "target",
    "read_only",
    "bind",
    "volume",
    "tmpfs",
];
const MOUNT_UNSUPPORTED: &[&str] = &["consistency", "image"];
const BIND_UNSUPPORTED: &[&str] = &["create_host_path", "recursive", "selinux"];
const VOLUME_OPTION_UNSUPPORTED: &[&str] = &["labels", "subpath"];
const SERVICE_NETWORK_KEYS: &[&str] = &["aliases", "ipv4_address", "ipv6_address"];
const SERVICE_NETWORK_UNSUPPORTED: &[&str] = &[
    "driver_opts",
    "gw_priority",
    "interface_name",
    "link_local_ips",
    "mac_address",
    "priority",
];
const DEPENDENCY_KEYS: &[&str] = &["condition", "restart", "required"];
const DEPLOY_KEYS: &[&str] = &["replicas", "resources", "restart_policy", "update_config"];
const DEPLOY_UNSUPPORTED: &[&str] = &[
    "endpoint_mode",
    "labels",
    "mode",
    "placement",
    "rollback_config",
];
const UPDATE_CONFIG_UNSUPPORTED: &[&str] = &[
    "parallelism",
    "delay",
    "failure_action",
    "monitor",
    "max_failure_ratio",
];
const RESTART_POLICY_KEYS: &[&str] = &["condition", "max_attempts", "delay"];
const RESTART_POLICY_UNSUPPORTED: &[&str] = &["window"];
const HEALTH_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "disable",
];
const HEALTH_UNSUPPORTED: &[&str] = &["start_interval"];
const BLKIO_UNSUPPORTED: &[&str] = &[
    "device_read_bps",
    "device_read_iops",
    "device_write_bps",
    "device_write_iops",
    "weight_device",
];
const DEVICE_KEYS: &[&str] = &["source", "target", "permissions"];
const NETWORK_KEYS: &[&str] = &[
    "driver",
    "driver_opts",
    "ipam",
    "external",
    "internal",
    "enable_ipv6",
    "labels",
];
const NETWORK_UNSUPPORTED: &[&str] = &["attachable", "enable_ipv4", "name"];
const IPAM_UNSUPPORTED: &[&str] = &["options"];
const IPAM_CONFIG_KEYS: &[&str] = &["subnet", "gateway", "ip_range"];
const IPAM_CONFIG_UNSUPPORTED: &[&str] = &["aux_addresses"];
const VOLUME_KEYS: &[&str] = &["driver", "driver_opts", "labels", "external"];
const VOLUME_UNSUPPORTED: &[&str] = &["name"];

/// Hints for unsupported keys people commonly rely on.
const UNSUPPORTED_HELP: &[(&str, &str)] = &[
    ("container_name", "stack names containers itself"),
    (
        "extends",
        "share settings with a YAML anchor and `<<: *anchor` instead",
    ),
    ("secrets", "mount the secret file with `volumes` instead"),
    ("configs", "mount the config file with `volumes` instead"),
];

/// The driver option Docker's bridge driver reads the bridge's name from.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// A canonical map being built; remembers which compose key produced each
/// entry so a conflict can name both.
struct Out {
    entries: Vec<Entry>,
    from: Vec<String>,
}

impl Out {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
            from: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn first_key_span(&self) -> Option<Span> {
        self.entries.first().map(|e| e.key_span)
    }

    fn into_value(self, span: Span) -> Value {
        Value::new(Kind::Map(self.entries), span)
    }
}

struct Converter<'a> {
    source: &'a Arc<NamedSource<String>>,
    problems: &'a mut Problems,
}

impl Converter<'_> {
    // --- reporting ----------------------------------------------------------

    fn unsupported(&mut self, path: &str, span: Span) {
        self.problems.push(unsupported(self.source, path, span));
    }

    fn unsupported_because(&mut self, path: &str, span: Span, help: &str) {
        self.problems
            .push(unsupported(self.source, path, span).help(help));
    }

    fn warn(&mut self, kind: ProblemKind, span: Span, message: String, label: &str) {
        self.problems
            .push(Problem::warning(kind, message).at(self.source, span, label));
    }

    fn error(&mut self, kind: ProblemKind, span: Span, message: String, label: &str) {
        self.problems
            .push(Problem::error(kind, message).at(self.source, span, label));
    }

    fn wrong_type(&mut self, v: &Value, path: &str, expected: &str) {
        self.error(
            ProblemKind::WrongType,
            v.span,
            format!("`{path}` must be {expected}, found {}", v.type_name()),
            &format!("expected {expected}"),
        );
    }

    // --- walking ------------------------------------------------------------

    /// The entries of a compose map that are `known`, with their dotted paths.
    /// `unsupported` keys are warned about, `x-*` keys skipped, other keys
    /// reported as unknown, and known keys with a null value (compose's "unset")
    /// left out.
    fn entries<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        known: &[&str],
        unsupported: &[&str],
    ) -> Vec<(&'v Entry, String)> {
        let Kind::Map(entries) = &v.kind else {
            self.wrong_type(v, path, "a map");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let here = join(path, &e.key);
            if e.key.starts_with("x-") {
                continue;
            }
            if known.contains(&e.key.as_str()) {
                if !matches!(e.value.kind, Kind::Null) {
                    out.push((e, here));
                }
            } else if unsupported.contains(&e.key.as_str()) {
                match UNSUPPORTED_HELP.iter().find(|(k, _)| *k == e.key) {
                    Some((_, help)) => self.unsupported_because(&here, e.key_span, help),
                    None => self.unsupported(&here, e.key_span),
                }
            } else {
                self.unknown_key(&here, &e.key, e.key_span, &[known, unsupported]);
            }
        }
        out
    }

    fn unknown_key(&mut self, path: &str, key: &str, span: Span, known: &[&[&str]]) {
        let names: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
        let mut problem = Problem::error(
            ProblemKind::UnknownKey,
            format!("unknown compose key `{path}`"),
        )
        .at(self.source, span, "not a compose key");
        if let Some(s) = suggest(key, &names) {
            problem = problem.help(format!("did you mean `{s}`?"));
        }
        self.problems.push(problem);
    }

    /// Adds `key` to `out`. Two compose keys that land on the same canonical key
    /// (`mem_limit` and `deploy.resources.limits.memory`) must agree, as
    /// compose-go requires; equal values are kept once.
    fn put(&mut self, out: &mut Out, key: &str, key_span: Span, value: Value, from: String) {
        if let Some(i) = out.entries.iter().position(|e| e.key == key) {
            let same = match (out.entries[i].value.scalar_text(), value.scalar_text()) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(&b),
                _ => out.entries[i].value == value,
            };
            if !same {
                let problem = Problem::error(
                    ProblemKind::Duplicate,
                    format!(
                        "`{from}` and `{}` set different values for the same setting",
                        out.from[i]
                    ),
                )
                .at(self.source, key_span, "this value")
                .also(out.entries[i].key_span, "differs from this one");
                self.problems.push(problem);
            }
            return;
        }
        out.entries.push(Entry {
            key: key.to_string(),
            key_span,
            value,
        });
        out.from.push(from);
    }

    /// Copies entry `e` into `out` as `key`.
    fn copy(&mut self, out: &mut Out, key: &str, e: &Entry, from: String) {
        self.put(out, key, e.key_span, e.value.clone(), from);
    }

    // --- top level ----------------------------------------------------------

    fn stack(&mut self, v: &Value) -> Value {
        let mut out = Out::new();
        for (e, path) in self.entries(v, "", TOP_KEYS, TOP_UNSUPPORTED) {
            match e.key.as_str() {
                "name" => self.copy(&mut out, "name", e, path),
                "services" => {
                    let services = self.named(&e.value, &path, Self::service);
                    self.put(&mut out, "services", e.key_span, services, path);
                }
                "networks" => {
                    let networks = self.named(&e.value, &path, Self::network);
                    self.put(&mut out, "networks", e.key_span, networks, path);
                }
                "volumes" => {
                    let volumes = self.named(&e.value, &path, Self::volume);
                    self.put(&mut out, "volumes", e.key_span, volumes, path);
                }
                // `version` is obsolete; compose ignores it too.
                _ => {}
            }
        }
        out.into_value(v.span)
    }

    /// A map of names to bodies, each body converted by `convert`. Names are
    /// kept as written; the decoder checks them.
    fn named(
        &mut self,
        v: &Value,
        path: &str,
        convert: fn(&mut Self, &Value, &str) -> Value,
    ) -> Value {
        let Kind::Map(entries) = &v.kind else {
            return v.clone();
        };
        let entries = entries
            .iter()
            .map(|e| Entry {
                key: e.key.clone(),
                key_span: e.key_span,
                value: convert(self, &e.value, &join(path, &e.key)),
            })
            .collect();
        Value::new(Kind::Map(entries), v.span)
    }

    // --- services -----------------------------------------------------------

    fn service(&mut self, v: &Value, path: &str) -> Value {
        if !matches!(v.kind, Kind::Map(_)) {
            return v.clone();
        }
        let known: Vec<&str> = SERVICE_RENAMED
            .iter()
            .chain(LIMITS_RENAMED)
            .map(|(k, _)| *k)
            .chain(SERVICE_RESHAPED.iter().copied())
            .collect();
        let mut out = Out::new();
        let mut limits = Out::new();
        let mut restart: Option<(&Entry, String)> = None;
        let mut deploy_restart: Option<(Entry, String)> = None;
        for (e, p) in self.entries(v, path, &known, SERVICE_UNSUPPORTED) {
            let key = e.key.as_str();
            let val = &e.value;
            if let Some((_, to)) = SERVICE_RENAMED.iter().find(|(k, _)| *k == key) {
                self.copy(&mut out, to, e, p);
                continue;
            }
            if let Some((_, to)) = LIMITS_RENAMED.iter().find(|(k, _)| *k == key) {
                self.copy(&mut limits, to, e, p);
                continue;
            }
            match key {
                "build" => {
                    let build = self.build(val, &p);
                    self.put(&mut out, "build", e.key_span, build, p);
                }
                "env_file" => {
                    let files = self.env_file(val, &p);
                    self.put(&mut out, "env-file", e.key_span, files, p);
                }
                "ports" => {
                    let ports = self.list_of(val, &p, Self::port_long);
                    self.put(&mut out, "ports", e.key_span, ports, p);
                }
                "volumes" => {
                    let volumes = self.list_of(val, &p, Self::mount_long);
                    self.put(&mut out, "volumes", e.key_span, volumes, p);
                }
                "networks" => {
                    let networks = self.service_networks(val, &p);
                    self.put(&mut out, "networks", e.key_span, networks, p);
                }
                "depends_on" => {
                    let deps = self.depends_on(val, &p);
                    self.put(&mut out, "depends-on", e.key_span, deps, p);
                }
                "restart" => restart = Some((e, p)),
                "deploy" => self.deploy(val, &p, &mut out, &mut limits, &mut deploy_restart),
                "healthcheck" => {
                    if let Some(health) = self.healthcheck(val, &p) {
                        self.put(&mut out, "health", e.key_span, health, p);
                    }
                }
                "blkio_config" => {
                    for (b, bp) in self.entries(val, &p, &["weight"], BLKIO_UNSUPPORTED) {
                        self.copy(&mut limits, "blkio-weight", b, bp);
                    }
                }
                "devices" => {
                    let devices = self.list_of(val, &p, Self::device_long);
                    self.put(&mut limits, "devices", e.key_span, devices, p);
                }
                "logging" => {
                    if let Some(logging) = self.logging(val, &p) {
                        self.put(&mut out, "logging", e.key_span, logging, p);
                    }
                }
                _ => {}
            }
        }
        // docker compose lets `deploy.restart_policy` win over `restart`
        // (compose v2 `getRestartPolicy`).
        match (restart, deploy_restart) {
            (Some((r, rp)), Some((d, dp))) => {
                self.warn(
                    ProblemKind::Duplicate,
                    r.key_span,
                    format!("`{rp}` is ignored because `{dp}` is set, as in docker compose"),
                    "ignored",
                );
                self.put(&mut out, "restart", d.key_span, d.value, dp);
            }
            (Some((r, rp)), None) => self.copy(&mut out, "restart", r, rp),
            (None, Some((d, dp))) => self.put(&mut out, "restart", d.key_span, d.value, dp),
            (None, None) => {}
        }
        if let Some(span) = limits.first_key_span() {
            let body = cover(span, limits.entries.iter().map(|e| e.value.span));
            let value = limits.into_value(body);
            self.put(&mut out, "limits", span, value, join(path, "limits"));
        }
        out.into_value(v.span)
    }

    /// A list whose map items are long syntax, rewritten by `long`; other
    /// items (and a non-list) are copied for the decoder to check.
    fn list_of(
        &mut self,
        v: &Value,
        path: &str,
        long: fn(&mut Self, &Value, &str) -> Option<Value>,
    ) -> Value {
        let Kind::List(items) = &v.kind else {
            return v.clone();
        };
        let items = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.kind {
                Kind::Map(_) => long(self, item, &format!("{path}[{i}]")),
                _ => Some(item.clone()),
            })
            .collect();
        Value::new(Kind::List(items), v.span)
    }

    fn build(&mut self, v: &Value, path: &str) -> Value {
        if !matches!(v.kind, Kind::Map(_)) {
            return v.clone();
        }
        let mut out = Out::new();
        for (e, p) in self.entries(v, path, BUILD_KEYS, BUILD_UNSUPPORTED) {
            let key = if e.key == "no_cache" {
                "no-cache"
            } else {
                e.key.as_str()
            };
            self.copy(&mut out, key, e, p);
        }
        out.into_value(v.span)
    }

    /// `env_file`: a path, or a list of paths and `{path, required, format}` maps.
    fn env_file(&mut self, v: &Value, path: &str) -> Value {
        self.list_of(v, path, |c, item, p| {
            let mut file = None;
            for (e, ep) in c.entries(item, p, ENV_FILE_KEYS, ENV_FILE_UNSUPPORTED) {
                match e.key.as_str() {
                    "path" => file = Some(e.value.clone()),
                    _ => {
                        if is_false(&e.value) {
                            c.unsupported_because(
                                &ep,
                                e.key_span,
                                "optional env files are not supported; the file must exist",
                            );
                        }
                    }
                }
            }
            if file.is_none() {
                c.error(
                    ProblemKind::InvalidValue,
                    item.span,
                    format!("`{p}` needs a `path`"),
                    "no path",
                );
            }
            file
        })
    }

    /// A long-syntax port as the short string `[host_ip:][published:]target[/protocol]`.
    fn port_long(&mut self, v: &Value, path: &str) -> Option<Value> {
        let mut target = None;
        let mut published = None;
        let mut host_ip = None;
        let mut protocol = None;
        for (e, p) in self.entries(v, path, PORT_KEYS, PORT_UNSUPPORTED) {
            let text = e.value.scalar_text();
            if text.is_none() {
                self.wrong_type(&e.value, &p, "a string or a number");
                continue;
            }
            match e.key.as_str() {
                "target" => target = text,
                "published" => published = text.filter(|t| !t.is_empty()),
                "host_ip" => host_ip = text.filter(|t| !t.is_empty()),
                "protocol" => protocol = text.filter(|t| !t.is_empty()),
                // docker compose publishes on the host whatever the mode says;
                // `ingress` only means something to swarm.
                _ => {}
            }
        }
        let Some(target) = target else {
            self.error(
                ProblemKind::InvalidValue,
                v.span,
                format!("`{path}` needs a `target` (the container port)"),
                "no target",
            );
            return None;
        };
        let mut short = String::new();
        if let Some(ip) = host_ip {
            if ip.contains(':') && !ip.starts_with('[') {
                short.push('[');
                short.push_str(&ip);
                short.push_str("]:");
            } else {
                short.push_str(&ip);
                short.push(':');
            }
            short.push_str(published.as_deref().unwrap_or(""));
            short.push(':');
        } else if let Some(published) = published {
            short.push_str(&published);
            short.push(':');
        }
        short.push_str(&target);
        if let Some(protocol) = protocol {
            short.push('/');
            short.push_str(&protocol);
        }
        Some(Value::str(short, v.span))
    }

    /// A long-syntax mount as the canonical mount map.
    fn mount_long(&mut self, v: &Value, path: &str) -> Option<Value> {
        let mut out = Out::new();
        let mut keep = true;
        for (e, p) in self.entries(v, path, MOUNT_KEYS, MOUNT_UNSUPPORTED) {
            let val = &e.value;
            match e.key.as_str() {
                "type" => {
                    if let Some(t @ ("npipe" | "cluster" | "image")) = val.as_str() {
                        self.warn(
                            ProblemKind::Unsupported,
                            val.span,
                            format!("`{p}: {t}` mounts are not supported; the mount is ignored"),
                            "not supported",
                        );
                        keep = false;
                    }
                    self.copy(&mut out, "type", e, p);
                }
                "source" | "target" => self.copy(&mut out, &e.key, e, p),
                "read_only" => self.copy(&mut out, "read-only", e, p),
                "bind" => {
                    for (b, bp) in self.entries(val, &p, &["propagation"], BIND_UNSUPPORTED) {
                        self.copy(&mut out, "propagation", b, bp);
                    }
                }
                "volume" => {
                    for (o, op) in self.entries(val, &p, &["nocopy"], VOLUME_OPTION_UNSUPPORTED) {
                        self.copy(&mut out, "nocopy", o, op);
                    }
                }
                "tmpfs" => {
                    for (t, tp) in self.entries(val, &p, &["size", "mode"], &[]) {
                        if t.key == "mode" {
                            let mode = self.octal_mode(&t.value);
                            self.put(&mut out, "mode", t.key_span, mode, tp);
                        } else {
                            self.copy(&mut out, "size", t, tp);
                        }
                    }
                }
                _ => {}
            }
        }
        keep.then(|| out.into_value(v.span))
    }

    /// A tmpfs mode: compose documents it as octal, so `1777` written as a YAML
    /// integer means 0o1777. The decoder reads strings as octal, so the digits
    /// are handed over as written.
    fn octal_mode(&self, v: &Value) -> Value {
        let Kind::Int(n) = v.kind else {
            return v.clone();
        };
        let written = self
            .source
            .inner()
            .get(v.span.offset..v.span.end())
            .map(|w| w.trim().trim_start_matches("0o"))
            .filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
        Value::str(
            written.map_or_else(|| n.to_string(), str::to_string),
            v.span,
        )
    }

    /// A long-syntax device as Docker's `source[:target[:permissions]]`.
    fn device_long(&mut self, v: &Value, path: &str) -> Option<Value> {
        let mut source = None;
        let mut target = None;
        let mut permissions = None;
        for (e, p) in self.entries(v, path, DEVICE_KEYS, &[]) {
            let Some(text) = e.value.as_str().map(str::to_string) else {
                self.wrong_type(&e.value, &p, "a string");
                continue;
            };
            match e.key.as_str() {
                "source" => source = Some(text),
                "target" => target = Some(text),
                _ => permissions = Some(text),
            }
        }
        let Some(source) = source else {
            self.error(
                ProblemKind::InvalidValue,
                v.span,
                format!("`{path}` needs a `source` (the host device)"),
                "no source",
            );
            return None;
        };
        let text = match (target, permissions) {
            (None, None) => source,
            (Some(t), None) => format!("{source}:{t}"),
            (t, Some(perm)) => {
                let t = t.unwrap_or_else(|| source.clone());
                format!("{source}:{t}:{perm}")
            }
        };
        Some(Value::str(text, v.span))
    }

    fn service_networks(&mut self, v: &Value, path: &str) -> Value {
        let Kind::Map(entries) = &v.kind else {
            return v.clone();
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let here = join(path, &e.key);
            let value = match &e.value.kind {
                Kind::Map(_) => {
                    let mut net = Out::new();
                    for (o, op) in self.entries(
                        &e.value,
                        &here,
                        SERVICE_NETWORK_KEYS,
                        SERVICE_NETWORK_UNSUPPORTED,
                    ) {
                        let key = match o.key.as_str() {
                            "ipv4_address" => "ipv4",
                            "ipv6_address" => "ipv6",
                            other => other,
                        };
                        self.copy(&mut net, key, o, op);
                    }
                    net.into_value(e.value.span)
                }
                _ => e.value.clone(),
            };
            out.push(Entry {
                key: e.key.clone(),
                key_span: e.key_span,
                value,
            });
        }
        Value::new(Kind::Map(out), v.span)
    }

    fn depends_on(&mut self, v: &Value, path: &str) -> Value {
        let Kind::Map(entries) = &v.kind else {
            return v.clone();
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let here = join(path, &e.key);
            let value = match &e.value.kind {
                Kind::Map(_) => {
                    let mut dep = Out::new();
                    for (o, op) in self.entries(&e.value, &here, DEPENDENCY_KEYS, &[]) {
                        match o.key.as_str() {
                            "condition" => {
                                if let Some(c) = self.condition(&o.value, &op) {
                                    self.put(&mut dep, "condition", o.key_span, c, op);
                                }
                            }
                            "restart" => self.copy(&mut dep, "restart-dependents", o, op),
                            _ => {
                                if is_false(&o.value) {
                                    self.unsupported_because(&op, o.key_span, "optional dependencies are not supported; the dependency is required");
                                }
                            }
                        }
                    }
                    dep.into_value(e.value.span)
                }
                _ => e.value.clone(),
            };
            out.push(Entry {
                key: e.key.clone(),
                key_span: e.key_span,
                value,
            });
        }
        Value::new(Kind::Map(out), v.span)
    }

    fn condition(&mut self, v: &Value, path: &str) -> Option<Value> {
        let canonical = match v.as_str() {
            Some("service_started") => "started",
            Some("service_healthy") => "healthy",
            Some("service_completed_successfully") => "completed",
            Some(other) => {
                self.error(
                    ProblemKind::InvalidValue,
                    v.span,
                    format!(
                        "invalid `{path}`: `{other}` is not one of service_started, service_healthy, service_completed_successfully"
                    ),
                    "unknown condition",
                );
                return None;
            }
            None => {
                self.wrong_type(v, path, "a string");
                return None;
            }
        };
        Some(Value::str(canonical, v.span))
    }

    fn deploy(
        &mut self,
        v: &Value,
        path: &str,
        out: &mut Out,
        limits: &mut Out,
        restart: &mut Option<(Entry, String)>,
    ) {
        for (e, p) in self.entries(v, path, DEPLOY_KEYS, DEPLOY_UNSUPPORTED) {
            match e.key.as_str() {
                "replicas" => self.copy(out, "replicas", e, p),
                // `order: start-first` is `update { order "start-first" }`.
                "update_config" => {
                    let mut update = Out::new();
                    for (u, up) in self.entries(&e.value, &p, &["order"], UPDATE_CONFIG_UNSUPPORTED)
                    {
                        self.copy(&mut update, "order", u, up);
                    }
                    if !update.is_empty() {
                        let value = update.into_value(e.value.span);
                        self.put(out, "update", e.key_span, value, p);
                    }
                }
                "resources" => {
                    for (r, rp) in self.entries(&e.value, &p, &["limits", "reservations"], &[]) {
                        if r.key == "limits" {
                            for (l, lp) in
                                self.entries(&r.value, &rp, &["cpus", "memory", "pids"], &[])
                            {
                                self.copy(limits, &l.key, l, lp);
                            }
                        } else {
                            let unsupported = &["cpus", "devices", "generic_resources"];
                            for (l, lp) in self.entries(&r.value, &rp, &["memory"], unsupported) {
                                self.copy(limits, "memory-reservation", l, lp);
                            }
                        }
                    }
                }
                _ => {
                    if let Some(policy) = self.restart_policy(&e.value, &p) {
                        let entry = Entry {
                            key: "restart".into(),
                            key_span: e.key_span,
                            value: policy,
                        };
                        *restart = Some((entry, p));
                    }
                }
            }
        }
    }

    /// `deploy.restart_policy` as a canonical restart map. The conditions map
    /// like docker compose's `mapRestartPolicyCondition`; a missing condition
    /// is `any`, the compose specification's default.
    fn restart_policy(&mut self, v: &Value, path: &str) -> Option<Value> {
        let entries = self.entries(v, path, RESTART_POLICY_KEYS, RESTART_POLICY_UNSUPPORTED);
        let mut out = Out::new();
        let mut policy = Value::str("always", v.span);
        let mut policy_from = format!("{path}.condition");
        let mut policy_span = v.span;
        if let Some((e, p)) = entries.iter().find(|(e, _)| e.key == "condition") {
            let name = match e.value.as_str() {
                Some("none" | "no") => "no",
                Some("any" | "always") => "always",
                Some("on-failure") => "on-failure",
                Some("unless-stopped") => "unless-stopped",
                Some(other) => {
                    self.error(
                        ProblemKind::InvalidValue,
                        e.value.span,
                        format!("invalid `{p}`: `{other}` is not one of none, on-failure, any"),
                        "unknown condition",
                    );
                    return None;
                }
                None => {
                    self.wrong_type(&e.value, p, "a string");
                    return None;
                }
            };
            policy = Value::str(name, e.value.span);
            policy_from.clone_from(p);
            policy_span = e.key_span;
        }
        let on_failure = policy.as_str() == Some("on-failure");
        self.put(&mut out, "policy", policy_span, policy, policy_from);
        for (e, p) in entries {
            match e.key.as_str() {
                "max_attempts" if on_failure => self.copy(&mut out, "max-retries", e, p),
                "max_attempts" => {
                    self.unsupported_because(
                        &p,
                        e.key_span,
                        "a retry limit only applies to the on-failure condition",
                    );
                }
                "delay" => {
                    let backoff = Value::new(
                        Kind::Map(vec![Entry {
                            key: "min".into(),
                            key_span: e.key_span,
                            value: e.value.clone(),
                        }]),
                        e.value.span,
                    );
                    self.put(&mut out, "backoff", e.key_span, backoff, p);
                }
                _ => {}
            }
        }
        Some(out.into_value(v.span))
    }

    fn healthcheck(&mut self, v: &Value, path: &str) -> Option<Value> {
        let mut out = Out::new();
        let mut test = None;
        let mut disable = None;
        for (e, p) in self.entries(v, path, HEALTH_KEYS, HEALTH_UNSUPPORTED) {
            match e.key.as_str() {
                "test" => test = Some((e, p)),
                "start_period" => self.copy(&mut out, "start-period", e, p),
                "disable" => match e.value.kind {
                    Kind::Bool(true) => disable = Some(e),
                    Kind::Bool(false) => {}
                    _ => self.wrong_type(&e.value, &p, "a boolean"),
                },
                _ => self.copy(&mut out, &e.key, e, p),
            }
        }
        match (disable, test) {
            (Some(d), test) => {
                if let Some((t, tp)) = test {
                    self.warn(
                        ProblemKind::Unsupported,
                        t.key_span,
                        format!("`{tp}` is ignored because the health check is disabled"),
                        "ignored",
                    );
                }
                let none = Value::str("none", d.value.span);
                self.put(&mut out, "command", d.key_span, none, join(path, "disable"));
            }
            // A string test is compose's CMD-SHELL form, which is what a
            // canonical command string means; a list is Docker's test list.
            (None, Some((t, tp))) => self.copy(&mut out, "command", t, tp),
            (None, None) => {
                self.warn(
                    ProblemKind::Unsupported,
                    v.span,
                    format!(
                        "`{path}` has no `test`; adjusting the image's own HEALTHCHECK is not supported, so it is ignored"
                    ),
                    "no test",
                );
                return None;
            }
        }
        Some(out.into_value(v.span))
    }

    fn logging(&mut self, v: &Value, path: &str) -> Option<Value> {
        let entries = self.entries(v, path, &["driver", "options"], &[]);
        if let Some((e, p)) = entries.iter().find(|(e, _)| e.key == "driver") {
            match e.value.as_str() {
                Some("json-file" | "local") => {}
                Some(driver) => {
                    self.warn(
                        ProblemKind::Unsupported,
                        e.value.span,
                        format!(
                            "`{p}: {driver}` is not supported; logs are kept as json-file and the driver's options are ignored"
                        ),
                        "not supported",
                    );
                    return None;
                }
                None => {
                    self.wrong_type(&e.value, p, "a string");
                    return None;
                }
            }
        }
        let mut out = Out::new();
        if let Some((e, p)) = entries.iter().find(|(e, _)| e.key == "options") {
            let Kind::Map(options) = &e.value.kind else {
                self.wrong_type(&e.value, p, "a map");
                return None;
            };
            for o in options {
                let op = join(p, &o.key);
                match o.key.as_str() {
                    "max-size" => self.copy(&mut out, "max-size", o, op),
                    "max-file" => self.copy(&mut out, "max-files", o, op),
                    _ => {
                        self.unsupported(&op, o.key_span);
                    }
                }
            }
        }
        (!out.is_empty()).then(|| out.into_value(v.span))
    }

    // --- networks and volumes -----------------------------------------------

    fn network(&mut self, v: &Value, path: &str) -> Value {
        if !matches!(v.kind, Kind::Map(_)) {
            return v.clone();
        }
        let mut out = Out::new();
        for (e, p) in self.entries(v, path, NETWORK_KEYS, NETWORK_UNSUPPORTED) {
            let val = &e.value;
            match e.key.as_str() {
                "driver" => match val.as_str() {
                    Some("bridge") => self.copy(&mut out, "driver", e, p),
                    _ => {
                        self.unsupported_because(
                            &p,
                            e.key_span,
                            "only bridge networks are supported; this network is a bridge",
                        );
                    }
                },
                "driver_opts" => {
                    let Kind::Map(opts) = &val.kind else {
                        self.wrong_type(val, &p, "a map");
                        continue;
                    };
                    for o in opts {
                        let op = join(&p, &o.key);
                        if o.key == BRIDGE_NAME_OPTION {
                            self.copy(&mut out, "bridge", o, op);
                        } else {
                            self.unsupported(&op, o.key_span);
                        }
                    }
                }
                "ipam" => self.ipam(val, &p, &mut out),
                "external" => self.external(e, p, &mut out),
                "enable_ipv6" => self.copy(&mut out, "ipv6", e, p),
                _ => self.copy(&mut out, &e.key, e, p),
            }
        }
        out.into_value(v.span)
    }

    fn ipam(&mut self, v: &Value, path: &str, out: &mut Out) {
        for (e, p) in self.entries(v, path, &["driver", "config"], IPAM_UNSUPPORTED) {
            if e.key == "driver" {
                if e.value.as_str() != Some("default") {
                    self.unsupported(&p, e.key_span);
                }
                continue;
            }
            let Kind::List(configs) = &e.value.kind else {
                self.wrong_type(&e.value, &p, "a list");
                continue;
            };
            for (i, config) in configs.iter().enumerate() {
                let cp = format!("{p}[{i}]");
                // A second config: the IPv6 subnet of a dual-stack network.
                if i == 1 {
                    for (c, ccp) in self.entries(config, &cp, &["subnet", "gateway"], &[]) {
                        let key = if c.key == "subnet" {
                            "subnet6"
                        } else {
                            "gateway6"
                        };
                        self.copy(out, key, c, ccp);
                    }
                    continue;
                }
                if i > 1 {
                    self.unsupported_because(
                        &cp,
                        config.span,
                        "a network has one IPv4 and one IPv6 subnet; only the first two configs are used",
                    );
                    continue;
                }
                for (c, ccp) in self.entries(config, &cp, IPAM_CONFIG_KEYS, IPAM_CONFIG_UNSUPPORTED)
                {
                    let key = if c.key == "ip_range" {
                        "ip-range"
                    } else {
                        c.key.as_str()
                    };
                    self.copy(out, key, c, ccp);
                }
            }
        }
    }

    /// `external: true`, or the deprecated `external: {name: …}`, whose name
    /// cannot be kept.
    fn external(&mut self, e: &Entry, path: String, out: &mut Out) {
        if let Kind::Map(_) = e.value.kind {
            // Only `name` is allowed inside; it is reported as unsupported.
            self.entries(&e.value, &path, &[], &["name"]);
            let yes = Value::new(Kind::Bool(true), e.value.span);
            self.put(out, "external", e.key_span, yes, path);
        } else {
            self.copy(out, "external", e, path);
        }
    }

    fn volume(&mut self, v: &Value, path: &str) -> Value {
        if !matches!(v.kind, Kind::Map(_)) {
            return v.clone();
        }
        let mut out = Out::new();
        for (e, p) in self.entries(v, path, VOLUME_KEYS, VOLUME_UNSUPPORTED) {
            match e.key.as_str() {
                "driver_opts" => self.copy(&mut out, "driver-opts", e, p),
                "external" => self.external(e, p, &mut out),
                _ => self.copy(&mut out, &e.key, e, p),
            }
        }
        out.into_value(v.span)
    }
}

fn unsupported(source: &Arc<NamedSource<String>>, path: &str, span: Span) -> Problem {
    Problem::warning(
        ProblemKind::Unsupported,
        format!("compose key `{path}` is not supported and is ignored"),
    )
    .at(source, span, "not supported")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `false` or `"false"`: compose accepts both for its boolean options.
fn is_false(v: &Value) -> bool {
    matches!(&v.kind, Kind::Bool(false)) || v.as_str() == Some("false")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::diag::line_column;

    fn source(text: &str) -> Arc<NamedSource<String>> {
        Arc::new(NamedSource::new("compose.yaml", text.to_string()))
    }

    fn convert(text: &str) -> (Option<Value>, Vec<Problem>) {
        let mut problems = Problems::new();
        let tree = parse(text, &source(text), &mut problems);
        (tree, problems.into_vec())
    }

    /// Converts `text`, asserting there are no problems at all.
    fn clean(text: &str) -> Value {
        let (tree, problems) = convert(text);
        assert!(problems.is_empty(), "{problems:#?}");
        tree.expect("no problems, so a tree")
    }

    fn service(tree: &Value, name: &str) -> Value {
        tree.get("services")
            .and_then(|s| s.get(name))
            .cloned()
            .expect("service exists")
    }

    fn at<'t>(text: &'t str, v: &Value) -> &'t str {
        &text[v.span.offset..v.span.end()]
    }

    /// The loader this module used before reading granit-parser's events
    /// itself: serde-saphyr deserializing into a spanned tree. Kept as the
    /// oracle the event reader is checked against.
    mod oracle {
        use std::fmt;

        use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
        use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

        use super::super::{MAX_ALIAS_REPLAY_EVENTS, Node, NodeKind};
        use crate::spec::diag::{Span, char_to_byte};

        #[derive(Debug)]
        enum Raw {
            Null,
            Bool(bool),
            Int(i64),
            BigInt(String),
            Float(f64),
            Str(String),
            Seq(Vec<Spanned<Raw>>),
            Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
        }

        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                Ok(i64::try_from(v).map_or_else(|_| Raw::BigInt(v.to_string()), Raw::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Raw::Map(pairs))
            }
        }

        impl<'de> Deserialize<'de> for Raw {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(RawVisitor)
            }
        }

        /// The options the old loader used.
        fn options() -> serde_saphyr::Options {
            let mut options = serde_saphyr::Options::default();
            options.strict_booleans = true;
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
            options.merge_keys = serde_saphyr::MergeKeyPolicy::Merge;
            options.leading_zero_numbers_as_strings = true;
            options.with_snippet = false;
            options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY_EVENTS;
            options
        }

        fn span_of(text: &str, location: &Location) -> Span {
            let s = location.span();
            let (start, end) = match (s.byte_offset(), s.byte_len()) {
                (Some(offset), Some(len)) => {
                    let start = usize::try_from(offset).unwrap();
                    (start, start + usize::try_from(len).unwrap())
                }
                _ => {
                    let start = usize::try_from(s.offset()).unwrap();
                    let len = usize::try_from(s.len()).unwrap();
                    (char_to_byte(text, start), char_to_byte(text, start + len))
                }
            };
            let start = text.floor_char_boundary(start);
            let end = text.floor_char_boundary(end.max(start));
            Span::from_range(start..end)
        }

        fn node(text: &str, raw: Spanned<Raw>) -> Node {
            let span = span_of(text, &raw.defined);
            let kind = match raw.value {
                Raw::Null => NodeKind::Null,
                Raw::Bool(b) => NodeKind::Bool(b),
                Raw::Int(i) => NodeKind::Int(i),
                Raw::BigInt(d) => NodeKind::BigInt(d),
                Raw::Float(f) => NodeKind::Float(f),
                Raw::Str(s) => NodeKind::Str(s),
                Raw::Seq(items) => {
                    NodeKind::Seq(items.into_iter().map(|i| node(text, i)).collect())
                }
                Raw::Map(pairs) => NodeKind::Map(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (node(text, k), node(text, v)))
                        .collect(),
                ),
            };
            Node { kind, span }
        }

        /// The tree serde-saphyr reads from `text`, or its error as the old
        /// loader reported it: the user-facing message and its span.
        pub fn load(text: &str) -> Result<Node, (String, Span)> {
            serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options())
                .map(|raw| node(text, raw))
                .map_err(|e| {
                    let span = e.location().map_or(Span::new(0, 0), |l| span_of(text, &l));
                    let message = UserMessageFormatter
                        .format_message(e.without_snippet())
                        .to_string();
                    (message, span)
                })
        }
    }

    /// Asserts two trees have the same kinds, values and spans.
    fn assert_same(ours: &Node, theirs: &Node, path: &str) {
        assert_eq!(ours.span, theirs.span, "span of {path}");
        match (&ours.kind, &theirs.kind) {
            (NodeKind::Seq(a), NodeKind::Seq(b)) => {
                assert_eq!(a.len(), b.len(), "length of {path}");
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    assert_same(a, b, &format!("{path}[{i}]"));
                }
            }
            (NodeKind::Map(a), NodeKind::Map(b)) => {
                assert_eq!(a.len(), b.len(), "length of {path}");
                for (i, ((ak, av), (bk, bv))) in a.iter().zip(b).enumerate() {
                    assert_same(ak, bk, &format!("{path}.<key {i}>"));
                    assert_same(av, bv, &format!("{path}.{:?}", ak.kind));
                }
            }
            (a, b) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "value of {path}"),
        }
    }

    fn assert_loads_like_serde_saphyr(text: &str, name: &str) {
        let ours = YamlReader::new(text).document();
        match (ours, oracle::load(text)) {
            (Ok(ours), Ok(theirs)) => assert_same(&ours, &theirs, name),
            (Err(ours), Err(theirs)) => {
                assert_eq!((ours.message, ours.span), theirs, "error of {name}");
            }
            (ours, theirs) => panic!("{name}: ours {ours:?}, serde-saphyr {theirs:?}"),
        }
    }

    #[test]
    fn fixtures_load_exactly_as_serde_saphyr_reads_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("tests/fixtures/compose"), root.join("examples")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 40, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            assert_loads_like_serde_saphyr(&text, &path.display().to_string());
        }
    }

    #[test]
    fn yaml_features_load_exactly_as_serde_saphyr_reads_them() {
        let cases = [
            "",
            "# only a comment\n",
            "---\na: 1\n...\n",
            "a: ~\nb: null\nc:\nd: NULL\ne: !!str null\nf: \"\"\n",
            "a: true\nb: no\nc: on\nd: False\ne: y\n",
            "a: 1\nb: -2\nc: 0x1F\nd: 0o17\ne: 0b101\nf: 1_000\ng: 0755\nh: -0755\ni: 0X1F\n",
            "a: 18446744073709551615\nb: 9223372036854775808\nc: 99999999999999999999\nd: -9223372036854775808\n",
            "a: 1.5\nb: .5\nc: 1e3\nd: -1.5e-3\ne: 1.10\nf: inf\ng: nan\nh: -.nan\ni: 1_0.5\n",
            "a: 'x'\nb: \"y\\tz\"\nc: |\n  lit\n  eral\nd: >\n  fol\n  ded\ne: \"80\"\n",
            "a: !!int \"5\"\nb: !!float \"5\"\nc: !!bool \"true\"\nd: ! 12\ne: !custom 7\nf: !!str 3\n",
            "x: &x {a: 1, b: [1, 2]}\ny: *x\nz: [*x, *x]\n",
            "b: &b {p: 1, q: 2}\nc: &c {q: 3, r: 4}\nm:\n  <<: [*b, *c]\n  p: 0\nn:\n  <<: *b\n  <<: *c\no:\n  q: 9\n  <<: {q: 8, s: 7}\n",
            "a: &a\n  <<: {x: 1}\n  y: 2\nb:\n  <<: *a\n  z: 3\n",
            "m:\n  <<: ~\n  a: 1\n",
            "'<<': {a: 1}\n",
            "? [a, b]\n: c\n? {x: 1}\n: d\n",
            "1: a\n1.5: b\ntrue: c\n~: d\n",
            "a: [1, {b: c}, [d]]\n\"é\": ünï\n",
            "a: b\na: c\n",
            "a: 1\n\"a\": 2\n",
            "1: a\n\"1\": b\n",
            "a: *nope\n",
            "a: &a [*a]\n",
            "m: {<<: 1}\n",
            "m: {<<: [1]}\n",
            "a: [\n",
            "- a\n- b\n",
            "a: 1\n---\nb: 2\n",
            "a: .inf\n",
            "a: 1e999\n",
            "a: \t1\n",
            "a: b\n  c: d\n",
        ];
        for text in cases {
            assert_loads_like_serde_saphyr(text, &format!("{text:?}"));
        }
        // Large maps, where duplicates are found by hashing.
        let keys: String = (0..20).map(|i| format!("  k{i}: {i}\n")).collect();
        for text in [
            format!("m:\n{keys}  k3: again\n"),
            format!("m:\n{keys}  20: int\n  \"20\": str\n"),
            format!("b: &b {{k3: merged, z: 1}}\nm:\n{keys}  <<: *b\n"),
        ] {
            assert_loads_like_serde_saphyr(&text, &text);
        }
        // Around the nesting limit. serde-saphyr needs a big stack for this in
        // a debug build.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(|| {
                for depth in 60..70 {
                    let text = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
                    assert_loads_like_serde_saphyr(&text, &format!("{depth} nested lists"));
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn strs(v: &Value) -> Vec<String> {
        match &v.kind {
            Kind::List(items) => items.iter().filter_map(Value::scalar_text).collect(),
            _ => panic!("not a list: {v:?}"),
        }
    }

    #[test]
    fn long_syntax_ports_become_short_strings() {
        let text = "services:\n  web:\n    image: nginx\n    ports:\n      - 80\n      - \"8080:80\"\n      - target: 80\n        published: 8081\n        host_ip: 127.0.0.1\n        protocol: udp\n        mode: host\n      - target: 443\n        host_ip: \"::1\"\n      - target: 53\n        published: \"5300-5301\"\n";
        let tree = clean(text);
        let ports = service(&tree, "web").get("ports").cloned().unwrap();
        assert_eq!(
            strs(&ports),
            [
                "80",
                "8080:80",
                "127.0.0.1:8081:80/udp",
                "[::1]::443",
                "5300-5301:53"
            ]
        );
        let Kind::List(items) = &ports.kind else {
            unreachable!()
        };
        assert_eq!(at(text, &items[1]), "\"8080:80\"");
        assert!(at(text, &items[2]).starts_with("target: 80"));
    }

    #[test]
    fn long_syntax_port_without_target_is_an_error() {
        let (_, problems) = convert("services:\n  web:\n    ports:\n      - published: 80\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].is_error());
        assert!(problems[0].message.contains("services.web.ports[0]"));
    }

    #[test]
    fn long_syntax_volumes_become_canonical_mount_maps() {
        let text = "services:\n  db:\n    image: postgres\n    volumes:\n      - db-data:/var/lib/postgresql/data\n      - type: bind\n        source: ./conf\n        target: /etc/conf\n        read_only: true\n        bind:\n          propagation: rshared\n      - type: volume\n        source: cache\n        target: /cache\n        volume:\n          nocopy: true\n      - type: tmpfs\n        target: /tmp\n        tmpfs:\n          size: 64m\n          mode: 1777\n";
        let tree = clean(text);
        let volumes = service(&tree, "db").get("volumes").cloned().unwrap();
        let Kind::List(items) = &volumes.kind else {
            panic!()
        };
        assert_eq!(items[0].as_str(), Some("db-data:/var/lib/postgresql/data"));
        let bind = &items[1];
        assert_eq!(bind.get("type").and_then(Value::as_str), Some("bind"));
        assert_eq!(bind.get("source").and_then(Value::as_str), Some("./conf"));
        assert_eq!(
            bind.get("read-only").map(|v| &v.kind),
            Some(&Kind::Bool(true))
        );
        assert_eq!(
            bind.get("propagation").and_then(Value::as_str),
            Some("rshared")
        );
        assert_eq!(
            items[2].get("nocopy").map(|v| &v.kind),
            Some(&Kind::Bool(true))
        );
        let tmpfs = &items[3];
        assert_eq!(tmpfs.get("size").and_then(Value::as_str), Some("64m"));
        // Compose documents the mode as octal: the digits go to the decoder as text.
        assert_eq!(tmpfs.get("mode").and_then(Value::as_str), Some("1777"));
    }

    #[test]
    fn tmpfs_modes_keep_their_octal_digits() {
        let text = "services:\n  web:\n    volumes:\n      - {type: tmpfs, target: /a, tmpfs: {mode: 0o1777}}\n      - {type: tmpfs, target: /b, tmpfs: {mode: 01777}}\n      - {type: tmpfs, target: /c, tmpfs: {mode: \"755\"}}\n";
        let volumes = service(&clean(text), "web")
            .get("volumes")
            .cloned()
            .unwrap();
        let Kind::List(items) = &volumes.kind else {
            panic!()
        };
        let modes: Vec<Option<&str>> = items
            .iter()
            .map(|m| m.get("mode").and_then(Value::as_str))
            .collect();
        assert_eq!(modes, [Some("1777"), Some("01777"), Some("755")]);
    }

    #[test]
    fn named_pipe_mounts_are_warned_about_and_dropped() {
        let text = "services:\n  web:\n    volumes:\n      - type: npipe\n        source: x\n        target: /x\n";
        let (tree, problems) = convert(text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Unsupported);
        let volumes = service(&tree.unwrap(), "web")
            .get("volumes")
            .cloned()
            .unwrap();
        assert_eq!(volumes.kind, Kind::List(Vec::new()));
    }

    #[test]
    fn depends_on_conditions_map_to_canonical_ones() {
        let text = "services:\n  web:\n    depends_on:\n      db:\n        condition: service_healthy\n        restart: true\n      init:\n        condition: service_completed_successfully\n      cache:\n        condition: service_started\n  api:\n    depends_on: [db]\n";
        let tree = clean(text);
        let deps = service(&tree, "web").get("depends-on").cloned().unwrap();
        let condition = |name: &str| {
            deps.get(name)
                .and_then(|d| d.get("condition"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        assert_eq!(condition("db").as_deref(), Some("healthy"));
        assert_eq!(condition("init").as_deref(), Some("completed"));
        assert_eq!(condition("cache").as_deref(), Some("started"));
        let db = deps.get("db").unwrap();
        assert_eq!(
            db.get("restart-dependents").map(|v| &v.kind),
            Some(&Kind::Bool(true))
        );
        assert_eq!(at(text, db.get("condition").unwrap()), "service_healthy");
        let api = service(&tree, "api");
        assert_eq!(strs(api.get("depends-on").unwrap()), ["db"]);
    }

    #[test]
    fn unknown_depends_on_conditions_are_errors() {
        let (_, problems) =
            convert("services:\n  web:\n    depends_on:\n      db:\n        condition: healthy\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::InvalidValue);
        assert!(problems[0].message.contains("service_healthy"));
    }

    #[test]
    fn healthchecks_become_health_blocks() {
        let text = "services:\n  db:\n    healthcheck:\n      test: [\"CMD\", \"pg_isready\"]\n      interval: 10s\n      timeout: 5s\n      retries: 5\n      start_period: 30s\n  off:\n    healthcheck:\n      disable: true\n";
        let tree = clean(text);
        let health = service(&tree, "db").get("health").cloned().unwrap();
        assert_eq!(strs(health.get("command").unwrap()), ["CMD", "pg_isready"]);
        assert_eq!(health.get("interval").and_then(Value::as_str), Some("10s"));
        assert_eq!(health.get("retries").map(|v| &v.kind), Some(&Kind::Int(5)));
        assert_eq!(
            health.get("start-period").and_then(Value::as_str),
            Some("30s")
        );
        let off = service(&tree, "off").get("health").cloned().unwrap();
        assert_eq!(off.get("command").and_then(Value::as_str), Some("none"));
    }

    #[test]
    fn a_healthcheck_without_test_is_warned_about_and_dropped() {
        let (tree, problems) = convert("services:\n  db:\n    healthcheck:\n      interval: 3s\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Unsupported);
        assert!(service(&tree.unwrap(), "db").get("health").is_none());
    }

    #[test]
    fn deploy_update_config_order_becomes_the_update_order() {
        let text = "services:\n  web:\n    image: busybox\n    deploy:\n      update_config:\n        order: start-first\n        parallelism: 2\n";
        let (tree, problems) = convert(text);
        let tree = tree.unwrap();
        let update = service(&tree, "web").get("update").cloned().unwrap();
        assert_eq!(
            update.get("order").and_then(Value::as_str),
            Some("start-first")
        );
        assert!(
            problems.iter().any(|p| p.message.contains("parallelism")),
            "{problems:?}"
        );
    }

    #[test]
    fn deploy_settings_become_restart_limits_and_replicas() {
        let text = "services:\n  web:\n    mem_limit: 512m\n    cpu_shares: 512\n    blkio_config:\n      weight: 300\n    deploy:\n      replicas: 2\n      resources:\n        limits:\n          cpus: '0.5'\n          memory: 512M\n          pids: 100\n        reservations:\n          memory: 128m\n      restart_policy:\n        condition: on-failure\n        max_attempts: 3\n        delay: 5s\n";
        let tree = clean(text);
        let web = service(&tree, "web");
        assert_eq!(web.get("replicas").map(|v| &v.kind), Some(&Kind::Int(2)));
        let limits = web.get("limits").cloned().unwrap();
        assert_eq!(limits.get("memory").and_then(Value::as_str), Some("512m"));
        assert_eq!(limits.get("cpus").and_then(Value::as_str), Some("0.5"));
        assert_eq!(limits.get("pids").map(|v| &v.kind), Some(&Kind::Int(100)));
        assert_eq!(
            limits.get("cpu-shares").map(|v| &v.kind),
            Some(&Kind::Int(512))
        );
        assert_eq!(
            limits.get("blkio-weight").map(|v| &v.kind),
            Some(&Kind::Int(300))
        );
        assert_eq!(
            limits.get("memory-reservation").and_then(Value::as_str),
            Some("128m")
        );
        let restart = web.get("restart").cloned().unwrap();
        assert_eq!(
            restart.get("policy").and_then(Value::as_str),
            Some("on-failure")
        );
        assert_eq!(
            restart.get("max-retries").map(|v| &v.kind),
            Some(&Kind::Int(3))
        );
        let min = restart.get("backoff").and_then(|b| b.get("min")).unwrap();
        assert_eq!(at(text, min), "5s");
    }

    #[test]
    fn restart_policy_conditions_map_like_docker_compose() {
        let text = "services:\n  a:\n    restart: always\n    deploy:\n      restart_policy:\n        condition: none\n  b:\n    deploy:\n      restart_policy: {}\n  c:\n    restart: no\n";
        let (tree, problems) = convert(text);
        let tree = tree.unwrap();
        let policy = |name: &str| {
            let r = service(&tree, name).get("restart").cloned().unwrap();
            r.get("policy").and_then(Value::as_str).map(str::to_string)
        };
        assert_eq!(policy("a").as_deref(), Some("no"));
        assert_eq!(policy("b").as_deref(), Some("always"));
        // `no` is a string in compose's YAML, not a boolean.
        let c = service(&tree, "c");
        assert_eq!(c.get("restart").and_then(Value::as_str), Some("no"));
        // `a` sets both; the plain `restart` loses, with a warning at it.
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].is_error());
        assert_eq!(problems[0].location().as_deref(), Some("compose.yaml:3:5"));
    }

    #[test]
    fn disagreeing_limits_are_an_error_and_equal_ones_are_fine() {
        let same = "services:\n  a:\n    mem_limit: 1g\n    scale: 2\n    deploy:\n      replicas: 2\n      resources:\n        limits:\n          memory: 1G\n";
        clean(same);
        let different = "services:\n  a:\n    pids_limit: 10\n    deploy:\n      resources:\n        limits:\n          pids: 20\n";
        let (_, problems) = convert(different);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Duplicate);
        assert!(problems[0].message.contains("services.a.pids_limit"));
    }

    #[test]
    fn service_keys_are_renamed() {
        let text = "services:\n  web:\n    image: nginx\n    environment:\n      A: 1\n    env_file:\n      - .env\n      - path: ./extra.env\n    working_dir: /srv\n    stop_grace_period: 1m\n    cap_add: [NET_ADMIN]\n    read_only: true\n    stdin_open: true\n    extra_hosts:\n      host.docker.internal: host-gateway\n    logging:\n      driver: json-file\n      options:\n        max-size: 10m\n        max-file: \"3\"\n    networks:\n      front:\n        aliases: [www]\n        ipv4_address: 10.0.0.5\n      back:\n    build:\n      context: .\n      no_cache: true\n      args:\n        X: y\n";
        let web = service(&clean(text), "web");
        for key in [
            "image",
            "env",
            "env-file",
            "workdir",
            "stop-grace-period",
            "cap-add",
            "read-only",
            "stdin-open",
            "extra-hosts",
            "logging",
            "networks",
            "build",
        ] {
            assert!(web.get(key).is_some(), "{key} missing in {web:#?}");
        }
        assert_eq!(strs(web.get("env-file").unwrap()), [".env", "./extra.env"]);
        let logging = web.get("logging").unwrap();
        assert_eq!(logging.get("max-files").and_then(Value::as_str), Some("3"));
        let front = web.get("networks").and_then(|n| n.get("front")).unwrap();
        assert_eq!(front.get("ipv4").and_then(Value::as_str), Some("10.0.0.5"));
        assert_eq!(
            web.get("networks")
                .and_then(|n| n.get("back"))
                .map(|v| &v.kind),
            Some(&Kind::Null)
        );
        let build = web.get("build").unwrap();
        assert_eq!(
            build.get("no-cache").map(|v| &v.kind),
            Some(&Kind::Bool(true))
        );
    }

    #[test]
    fn networks_and_volumes_are_rewritten() {
        let text = "networks:\n  front:\n    driver: bridge\n    driver_opts:\n      com.docker.network.bridge.name: br-front\n    enable_ipv6: true\n    ipam:\n      driver: default\n      config:\n        - subnet: 172.28.0.0/16\n          ip_range: 172.28.5.0/24\n          gateway: 172.28.5.254\n  ext:\n    external: true\nvolumes:\n  data:\n    driver: local\n    driver_opts:\n      type: none\n";
        let tree = clean(text);
        let front = tree.get("networks").and_then(|n| n.get("front")).unwrap();
        assert_eq!(
            front.get("bridge").and_then(Value::as_str),
            Some("br-front")
        );
        assert_eq!(
            front.get("subnet").and_then(Value::as_str),
            Some("172.28.0.0/16")
        );
        assert_eq!(
            front.get("ip-range").and_then(Value::as_str),
            Some("172.28.5.0/24")
        );
        assert_eq!(front.get("ipv6").map(|v| &v.kind), Some(&Kind::Bool(true)));
        let data = tree.get("volumes").and_then(|v| v.get("data")).unwrap();
        assert!(data.get("driver-opts").is_some());
    }

    #[test]
    fn other_network_drivers_and_names_are_warned_about() {
        let text = "networks:\n  n:\n    name: custom\n    driver: overlay\n    attachable: true\n";
        let (tree, problems) = convert(text);
        let lines: Vec<String> = problems.iter().filter_map(Problem::location).collect();
        assert_eq!(
            lines,
            ["compose.yaml:3:5", "compose.yaml:4:5", "compose.yaml:5:5"]
        );
        assert!(problems.iter().all(|p| !p.is_error()));
        let n = tree
            .unwrap()
            .get("networks")
            .and_then(|n| n.get("n"))
            .cloned()
            .unwrap();
        assert_eq!(n.kind, Kind::Map(Vec::new()));
    }

    #[test]
    fn merge_keys_and_aliases_are_expanded() {
        let text = "x-base: &base\n  image: busybox\n  restart: always\n  environment: &env\n    A: \"1\"\nservices:\n  one:\n    <<: *base\n    image: alpine\n  two:\n    <<: *base\n    environment: *env\n";
        let tree = clean(text);
        let one = service(&tree, "one");
        assert_eq!(one.get("image").and_then(Value::as_str), Some("alpine"));
        assert_eq!(one.get("restart").and_then(Value::as_str), Some("always"));
        let two = service(&tree, "two");
        assert_eq!(two.get("image").and_then(Value::as_str), Some("busybox"));
        // Merged values point at the anchored text.
        let a = two.get("env").and_then(|e| e.get("A")).unwrap();
        assert_eq!(at(text, a), "\"1\"");
        assert_eq!(line_column(text, a.span.offset).0, 5);
    }

    #[test]
    fn spans_are_byte_offsets_with_non_ascii_text() {
        let text = "# café ☕\nservices:\n  wéb:\n    image: \"ünïcode/ïmage\"\n    labels:\n      ключ: значение\n";
        let tree = clean(text);
        let web = service(&tree, "wéb");
        let image = web.get("image").unwrap();
        assert_eq!(at(text, image), "\"ünïcode/ïmage\"");
        let labels = web.get("labels").unwrap();
        let Kind::Map(entries) = &labels.kind else {
            panic!()
        };
        assert_eq!(
            &text[entries[0].key_span.offset..entries[0].key_span.end()],
            "ключ"
        );
        assert_eq!(at(text, &entries[0].value), "значение");
    }

    #[test]
    fn non_string_keys_become_their_text() {
        let text = "services:\n  web:\n    sysctls:\n      1.10: a\n      true: b\n      80: c\n";
        let web = service(&clean(text), "web");
        let Kind::Map(entries) = &web.get("sysctls").unwrap().kind else {
            panic!()
        };
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["1.10", "true", "80"]);
    }

    #[test]
    fn collections_as_keys_are_errors() {
        let (_, problems) = convert("services:\n  ? [a, b]\n  : {}\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Syntax);
    }

    #[test]
    fn yaml_syntax_errors_have_a_location() {
        let text = "services:\n  web:\n    image: [nginx\n    ports: 80\n";
        let (tree, problems) = convert(text);
        assert!(tree.is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Syntax);
        let location = problems[0].location().unwrap();
        assert!(location.starts_with("compose.yaml:"), "{location}");
        assert!(!location.starts_with("compose.yaml:1:1"), "{location}");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let (tree, problems) = convert("services:\n  web:\n    image: a\n    image: b\n");
        assert!(tree.is_none());
        assert_eq!(
            problems[0].location().as_deref().map(|l| &l[..14]),
            Some("compose.yaml:4")
        );
    }

    #[test]
    fn unsupported_keys_are_warnings_at_their_line() {
        let text = "version: \"3.8\"\nx-common: {a: 1}\nservices:\n  web:\n    image: nginx\n    x-note: hi\n    platform: linux/amd64\n    container_name: web1\n    deploy:\n      placement:\n        constraints: []\nsecrets:\n  s:\n    file: ./s\n";
        let (tree, problems) = convert(text);
        assert!(tree.is_some());
        let found: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.message.clone(), p.location().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "compose key `services.web.platform` is not supported and is ignored".into(),
                    "compose.yaml:7:5".into()
                ),
                (
                    "compose key `services.web.container_name` is not supported and is ignored"
                        .into(),
                    "compose.yaml:8:5".into()
                ),
                (
                    "compose key `services.web.deploy.placement` is not supported and is ignored"
                        .into(),
                    "compose.yaml:10:7".into()
                ),
                (
                    "compose key `secrets` is not supported and is ignored".into(),
                    "compose.yaml:12:1".into()
                ),
            ]
        );
        assert!(
            problems
                .iter()
                .all(|p| p.kind == ProblemKind::Unsupported && !p.is_error())
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let (_, problems) = convert("services:\n  web:\n    imgae: nginx\n    depends-on: [db]\n");
        assert_eq!(problems.len(), 2);
        assert!(
            problems
                .iter()
                .all(|p| p.kind == ProblemKind::UnknownKey && p.is_error())
        );
        assert_eq!(
            problems[0].message,
            "unknown compose key `services.web.imgae`"
        );
        assert_eq!(problems[0].help.as_deref(), Some("did you mean `image`?"));
        assert_eq!(
            problems[1].help.as_deref(),
            Some("did you mean `depends_on`?")
        );
    }

    #[test]
    fn other_logging_drivers_are_warned_about() {
        let text = "services:\n  web:\n    logging:\n      driver: syslog\n      options:\n        syslog-address: udp://x\n";
        let (tree, problems) = convert(text);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].location().as_deref(), Some("compose.yaml:4:15"));
        assert!(service(&tree.unwrap(), "web").get("logging").is_none());
    }

    #[test]
    fn a_billion_laughs_is_refused() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for name in names {
            let refs = vec![format!("*{prev}"); 9].join(",");
            text += &format!("{name}: &{name} [{refs}]\n");
            prev = name;
        }
        let (tree, problems) = convert(&text);
        assert!(tree.is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Syntax);
        assert!(
            problems[0].message.contains("too large"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_stack() {
        let tree = clean("");
        assert_eq!(tree.kind, Kind::Map(Vec::new()));
    }

    #[test]
    fn a_list_at_the_top_is_refused() {
        let (tree, problems) = convert("- a\n- b\n");
        assert!(tree.is_none());
        assert_eq!(problems[0].kind, ProblemKind::WrongType);
    }

    #[test]
    fn every_prefix_of_a_file_converts_without_panicking() {
        let text = "x-a: &a\n  image: é\nservices:\n  web:\n    <<: *a\n    ports:\n      - target: 80\n        host_ip: ::1\n    volumes:\n      - type: tmpfs\n        target: /t\n        tmpfs: {mode: 0o1777}\n    depends_on: {db: {condition: service_healthy}}\n    deploy: {restart_policy: {condition: any, max_attempts: 1}}\n";
        for (i, _) in text.char_indices() {
            let _ = convert(&text[..i]);
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "[ -~\\n\\t:é\\[\\]{}&*<-]{0,200}") {
            let _ = convert(&text);
        }
    }
}
