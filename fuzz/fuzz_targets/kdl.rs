//! Fuzzes the kdl front end through interpolation, decoding and validation:
//! any input must give a result or diagnostics, never a panic, and every
//! diagnostic span must lie inside the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stack::spec::{Format, parse_str};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = |name: &str| (name == "HOME").then(|| "/root".to_string());
    let (_, _, problems) = parse_str(text, "stack.kdl", Format::Kdl, Path::new("/srv"), &vars);
    for p in problems.iter() {
        for (span, _) in &p.labels {
            assert!(span.end() <= text.len());
        }
    }
});
