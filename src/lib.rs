//! `stack`: one binary that runs containers, handles images and keeps declared
//! stacks converged.
//!
//! The crate is laid out by responsibility (see `docs/ARCHITECTURE.md`):
//! [`spec`] reads stack files into one typed model, [`image`] stores and moves
//! images, [`cli`] is the command line.

pub mod api;
pub mod build;
pub mod chunks;
pub mod cli;
pub mod daemon;
pub mod image;
pub mod net;
pub mod reconcile;
pub mod runtime;
pub mod spec;
pub mod sys;
pub mod words;

/// An error and its causes, joined: "outer: inner: innermost".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
