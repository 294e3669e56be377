//! No input makes a front end panic: random text, and the example stacks with
//! random edits, go through parsing, interpolation, decoding and validation.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use stack::spec::{Format, parse_str};

fn seeds() -> Vec<(String, Format)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["examples/stacks", "tests/fixtures/spec/invalid"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(format) = Format::of(&path) {
                    out.push((std::fs::read_to_string(&path).unwrap(), format));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check(text: &str, format: Format) {
    let name = match format {
        Format::Kdl => "fuzz.kdl",
        Format::Toml => "fuzz.toml",
        Format::Compose => "fuzz.yml",
    };
    let vars = |n: &str| (n == "HOME").then(|| "/root".to_string());
    let (_, _, problems) = parse_str(text, name, format, Path::new("/srv"), &vars);
    // Rendering every problem must not panic either (spans inside the text).
    for p in problems.iter() {
        let _ = stack::cli::render(p, false);
        for (span, _) in &p.labels {
            assert!(span.end() <= text.len(), "span {span:?} past the end");
            assert!(text.is_char_boundary(span.offset) && text.is_char_boundary(span.end()));
        }
    }
}

/// One random edit: delete, insert or replace a run of characters.
fn mutate(text: &str, edits: &[(usize, u8, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (pos, op, insert) in edits {
        if chars.is_empty() {
            chars.extend(insert.chars());
            continue;
        }
        let at = pos % chars.len();
        match op % 3 {
            0 => {
                let end = (at + insert.chars().count().max(1)).min(chars.len());
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, insert.chars());
            }
            _ => {
                let end = (at + insert.chars().count()).min(chars.len());
                chars.splice(at..end, insert.chars());
            }
        }
    }
    chars.into_iter().collect()
}

const FORMATS: [Format; 3] = [Format::Kdl, Format::Toml, Format::Compose];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}", which in 0usize..3) {
        check(&text, FORMATS[which]);
    }

    #[test]
    fn structured_noise_never_panics(
        text in "([a-z{}\\[\\]=:\"'#$ \\n\\t,.-]|\\$\\{|\\}|service|image|port|[0-9]){0,300}",
        which in 0usize..3,
    ) {
        check(&text, FORMATS[which]);
    }

    #[test]
    fn mutated_examples_never_panic(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), "[\\PC]{0,6}"), 1..6),
    ) {
        let seeds = seeds();
        let (text, format) = &seeds[seed.index(seeds.len())];
        check(&mutate(text, &edits), *format);
    }
}
