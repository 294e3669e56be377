//! Builds: Dockerfiles executed into images, Docker's classic builder
//! semantics. This module owns the build context (walk, `.dockerignore`,
//! content hashes), COPY/ADD, the layer cache and the stage dispatcher.
//! It runs no container itself: RUN goes through [`BuildHost`], which the
//! daemon implements with its containers. It never imports `reconcile`,
//! `api` or `daemon`.
//!
//! It also owns the Dockerfile language and the build context's ignore
//! rules; it may import `image` and `sys`, never `spec`, `reconcile` or `api`.
//!
//! # The API the build engine calls
//!
//! - [`dockerfile::parse`]`(source, name) -> Result<`[`dockerfile::Dockerfile`]`,
//!   `[`dockerfile::ParseError`]`>`: the meta ARGs (before the first FROM)
//!   and the stages, each a FROM ([`dockerfile::Stage::base`] unexpanded,
//!   `name` lower-cased, `platform`) and its [`dockerfile::Step`]s. A step
//!   carries its typed [`dockerfile::Instruction`] (words UNEXPANDED), its
//!   line range, byte span and original text. Errors are miette diagnostics
//!   labelled at the offending line (`dockerfile parse error on line N: …`).
//! - Per step, the engine expands words with the environment in scope
//!   (build args declared so far + ENV): if
//!   [`dockerfile::Instruction::expands`], call
//!   [`dockerfile::Instruction::expand`]`(&lexer, &env)` with
//!   `lexer = dockerfile.lexer()` (the file's escape character). FROM bases
//!   and platforms are expanded with the meta ARGs only. RUN/CMD/ENTRYPOINT
//!   /SHELL/HEALTHCHECK/ONBUILD are never expanded (the shell does it), but
//!   RUN's `--mount` values are: [`dockerfile::Run::expand_mounts`].
//!   Heredoc bodies of COPY/ADD with `expand` go through
//!   [`dockerfile::shell::Lexer::expand_heredoc`].
//! - [`dockerfile::shell::Lexer::new`]`(escape)` with
//!   `process_word(&self, word, &Env) -> Result<String, ShellError>` and
//!   `process_words(…) -> Result<Vec<String>, ShellError>` for anything else.
//! - History: [`dockerfile::Instruction::history_text`]`(shell)` gives the
//!   image history's `created_by`; [`dockerfile::OnBuild::text`] is what goes
//!   into the image config's `OnBuild`.
//! - The context: [`ignore::ignore_file_for`]`(context, dockerfile)` finds the
//!   ignore file (`<Dockerfile>.dockerignore` first),
//!   [`ignore::Matcher::from_file_text`] reads it,
//!   [`ignore::Matcher::matches`]`(rel_path)` says whether a path is
//!   excluded, and when a directory is excluded the walker still descends if
//!   [`ignore::Matcher::may_include_below`]`(dir)`. The Dockerfile and the
//!   ignore file are read from disk regardless of the patterns; COPY sees
//!   them only if they are not excluded (as Docker does).

pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod engine;
pub mod ignore;

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
