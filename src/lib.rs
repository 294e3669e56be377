//! `stack`: one binary that runs containers, handles images and keeps declared
//! stacks converged.
//!
//! The crate is laid out by responsibility (see `docs/ARCHITECTURE.md`):
//! [`spec`] reads stack files into one typed model, [`cli`] is the command line.

pub mod cli;
pub mod spec;
