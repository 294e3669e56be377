//! The spanned value tree every front end produces: maps, lists and scalars, each
//! with the byte span it came from.
//!
//! KDL, TOML and YAML are parsed by their own crates, turned into this tree, then
//! interpolated and decoded into the model by one decoder, so the three syntaxes
//! cannot drift apart and every error can point at its bytes.

use super::diag::Span;

/// A value with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// What the value is.
    pub kind: Kind,
    /// Where it is.
    pub span: Span,
}

/// The shape of a [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// An explicit null (`#null`, YAML `~` or an empty value).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
    /// An ordered list.
    List(Vec<Value>),
    /// A map, keys in file order (duplicates are reported by the decoder).
    Map(Vec<Entry>),
}

/// One key of a map.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Where the key is.
    pub key_span: Span,
    /// The value.
    pub value: Value,
}

impl Value {
    /// A value of `kind` at `span`.
    pub fn new(kind: Kind, span: Span) -> Self {
        Self { kind, span }
    }

    /// A string value.
    pub fn str(s: impl Into<String>, span: Span) -> Self {
        Self::new(Kind::Str(s.into()), span)
    }

    /// An empty map.
    pub fn map(span: Span) -> Self {
        Self::new(Kind::Map(Vec::new()), span)
    }

    /// The name of the value's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::List(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if the value is a map.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of `key`, if the value is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// A scalar rendered as text (strings as is, numbers and booleans formatted),
    /// the way compose accepts `3000` where a string belongs.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Null | Kind::List(_) | Kind::Map(_) => None,
        }
    }

    /// Calls `f` on every string in the tree, depth first, map keys excluded.
    pub fn for_each_str_mut(&mut self, f: &mut impl FnMut(&mut String, Span)) {
        let span = self.span;
        match &mut self.kind {
            Kind::Str(s) => f(s, span),
            Kind::List(items) => items.iter_mut().for_each(|v| v.for_each_str_mut(f)),
            Kind::Map(entries) => entries.iter_mut().for_each(|e| e.value.for_each_str_mut(f)),
            Kind::Null | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_render_as_text_the_way_compose_reads_them() {
        let span = Span::default();
        assert_eq!(
            Value::new(Kind::Int(3000), span).scalar_text().as_deref(),
            Some("3000")
        );
        assert_eq!(
            Value::new(Kind::Bool(true), span).scalar_text().as_deref(),
            Some("true")
        );
        assert_eq!(Value::map(span).scalar_text(), None);
    }

    #[test]
    fn get_finds_a_key_in_a_map() {
        let span = Span::default();
        let map = Value::new(
            Kind::Map(vec![Entry {
                key: "image".into(),
                key_span: span,
                value: Value::str("busybox", span),
            }]),
            span,
        );
        assert_eq!(map.get("image").and_then(Value::as_str), Some("busybox"));
        assert!(map.get("build").is_none());
    }
}
