//! The stack file: one typed model, three front ends (KDL, TOML, compose YAML),
//! interpolation, validation and diagnostics.
//!
//! This module is pure: it reads the files it is given (stack files, `.env`,
//! env files they name) and nothing else; it never touches containers, images
//! or the network.
//!
//! The pipeline: each front end ([`kdl`], [`toml`], [`compose`]) turns its text
//! into a spanned [`tree::Value`] in the canonical (TOML) layout; strings are
//! interpolated; [`decode`] builds the [`model`]; [`merge`] applies later `-f`
//! files; [`validate`] checks the whole stack. Every problem is a
//! [`diag::Problem`] pointing at its file, line and column.

pub mod compose;
pub mod decode;
pub mod device;
pub mod diag;
pub mod duration;
pub mod envfile;
pub mod extra_host;
pub mod interpolate;
pub mod kdl;
mod kdl_syntax;
pub mod load;
pub mod merge;
pub mod model;
pub mod mount;
pub mod port;
pub mod restart;
pub mod size;
pub mod toml;
pub mod tree;
pub mod ulimit;
pub mod validate;

pub use load::{Format, LoadOptions, Loaded, SpecError, discover, load, parse_str};
pub use model::{NetworkSpec, ServiceSpec, StackSpec, VolumeSpec};
