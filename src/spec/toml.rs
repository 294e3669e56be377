//! The TOML front end: `stack.toml` read into the canonical value tree (the
//! canonical tree *is* the TOML layout, so this is a plain conversion with spans).

use std::sync::Arc;

use miette::NamedSource;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{Problem, ProblemKind, Problems, Span};
use super::tree::{Entry, Kind, Value};

/// Parses TOML text into the canonical tree, recording syntax errors.
pub fn parse(
    text: &str,
    source: &Arc<NamedSource<String>>,
    problems: &mut Problems,
) -> Option<Value> {
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().map_or(Span::new(0, 0), Span::from_range);
            let message = e.message().trim().to_string();
            problems.push(
                Problem::error(ProblemKind::Syntax, format!("invalid TOML: {message}"))
                    .at(source, span, message),
            );
        }
        return None;
    }
    let span = Span::from_range(table.span());
    Some(Value::new(Kind::Map(entries(table.get_ref())), span))
}

fn entries(table: &DeTable<'_>) -> Vec<Entry> {
    table
        .iter()
        .map(|(k, v)| Entry {
            key: k.get_ref().to_string(),
            key_span: Span::from_range(k.span()),
            value: value(v),
        })
        .collect()
}

fn value(v: &Spanned<DeValue<'_>>) -> Value {
    let span = Span::from_range(v.span());
    let kind = match v.get_ref() {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            match i64::from_str_radix(&digits, i.radix()) {
                Ok(n) => Kind::Int(n),
                Err(_) => Kind::Str(digits),
            }
        }
        DeValue::Float(f) => {
            let digits: String = f.as_str().chars().filter(|c| *c != '_').collect();
            match digits.parse::<f64>() {
                Ok(x) => Kind::Float(x),
                Err(_) => Kind::Str(digits),
            }
        }
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Str(d.to_string()),
        DeValue::Array(items) => Kind::List(items.iter().map(value).collect()),
        DeValue::Table(t) => Kind::Map(entries(t)),
    };
    Value::new(kind, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Arc<NamedSource<String>> {
        Arc::new(NamedSource::new("stack.toml", text.to_string()))
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "[services.web]\nimage = \"busybox\"\nreplicas = 1_0\n";
        let mut problems = Problems::new();
        let tree = parse(text, &source(text), &mut problems).unwrap();
        assert!(problems.is_empty());
        let web = tree.get("services").and_then(|s| s.get("web")).unwrap();
        let image = web.get("image").unwrap();
        assert_eq!(&text[image.span.offset..image.span.end()], "\"busybox\"");
        assert_eq!(web.get("replicas").unwrap().kind, Kind::Int(10));
    }

    #[test]
    fn syntax_errors_are_reported_with_a_span() {
        let text = "[services.web]\nimage = \n";
        let mut problems = Problems::new();
        assert!(parse(text, &source(text), &mut problems).is_none());
        let p = problems.iter().next().unwrap();
        assert_eq!(p.kind, ProblemKind::Syntax);
        assert!(p.location().unwrap().starts_with("stack.toml:2:"));
    }
}
