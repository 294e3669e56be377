//! Builds: Dockerfiles executed into images, Docker's classic builder
//! semantics. This module owns the build context (walk, `.dockerignore`,
//! content hashes), COPY/ADD, the layer cache and the stage dispatcher.
//! It runs no container itself: RUN goes through [`BuildHost`], which the
//! daemon implements with its containers. It never imports `reconcile`,
//! `api` or `daemon`.

pub mod cache;
pub mod context;
pub mod copy;
pub mod engine;
pub mod steps;

use std::path::PathBuf;

use thiserror::Error;

use crate::image::digest::Digest;
use crate::image::images::ImageError;

pub use engine::{BuildHost, BuildOptions, RunStep, build};

/// Errors of a build.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("dockerfile parse error line {line}: {message}")]
    Parse {
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An instruction is invalid where it is.
    #[error("{0}")]
    Instruction(String),
    /// The context cannot be read.
    #[error("cannot read the build context at {}", path.display())]
    Context {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The context breaks a rule (escapes, sizes).
    #[error("{0}")]
    Refused(String),
    /// A COPY or ADD source is missing.
    #[error(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {0}: file does not exist"
    )]
    NotFound(String),
    /// Writing a layer or staging files failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A RUN command exited non-zero.
    #[error("The command '{command}' returned a non-zero code: {code}")]
    NonZero {
        /// The command as Docker prints it.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// The host failed to run a step (container, pull, download).
    #[error("{0}")]
    Host(String),
}

impl BuildError {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BuildError::Io {
            action,
            path,
            source,
        }
    }
}

/// The 12-hex-digit short form of an image id, as Docker prints it.
pub fn short_id(id: &Digest) -> &str {
    id.short()
}
