//! Image builds from Dockerfiles.
//!
//! This module owns the Dockerfile language and the build context's ignore
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

pub mod dockerfile;
pub mod ignore;
