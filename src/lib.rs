//! `stack`: one binary that runs containers, handles images and keeps declared
//! stacks converged.
//!
//! The crate is laid out by responsibility (see `docs/ARCHITECTURE.md`):
//! [`spec`] reads stack files into one typed model, [`image`] stores and moves
//! images, [`cli`] is the command line.

pub mod cli;
pub mod image;
pub mod reconcile;
pub mod runtime;
pub mod spec;
pub mod sys;
pub mod words;
