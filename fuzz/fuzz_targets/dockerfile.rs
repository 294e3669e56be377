//! Fuzzes the Dockerfile parser, word expansion and `.dockerignore` reading:
//! any input must give a result or an error, never a panic, and every
//! diagnostic span must lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stack::build::dockerfile::{Env, parse};
use stack::build::ignore::Matcher;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "Dockerfile") {
        Ok(df) => {
            let lexer = df.lexer();
            let env = Env::from_key_values(["A=x y", "B="]);
            for stage in &df.stages {
                for step in &stage.steps {
                    let _ = step.instruction.expand(&lexer, &env);
                }
            }
        }
        Err(e) => assert!(e.span().end <= text.len()),
    }
    if let Ok(m) = Matcher::from_file_text(text) {
        let _ = m.matches("a/b/c");
        let _ = m.may_include_below("a");
    }
});
