//! Compose-style variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}` and
//! the other forms of the compose specification's "Interpolation" section.
//!
//! This module owns the `${…}` syntax, its evaluation against a [`Lookup`], and
//! [`Vars`], the layered set of variables a stack is interpolated with. It never
//! reads files; the only global state it reads is the process environment, and
//! only in [`Vars::with_process_env`].
//!
//! The reference is compose-go's `template` package (what `docker compose` runs).
//! Where this module differs on purpose, the code says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Range;

use super::envfile::{self, EnvFileError};

/// Nesting limit for `${A:-${B:-…}}`. Input is untrusted and both the parser and
/// the evaluator recurse, so without a limit a long enough chain would overflow
/// the stack instead of failing with an error.
const MAX_DEPTH: usize = 64;

/// A source of variable values.
///
/// `None` means "not set", which is different from `Some("")`: the `:-` and `-`
/// forms of `${…}` tell the two apart. Closures, [`Vars`] and string maps are
/// all lookups.
pub trait Lookup {
    /// The value of `name`, or `None` when it is not set.
    fn lookup(&self, name: &str) -> Option<String>;
}

impl<F> Lookup for F
where
    F: Fn(&str) -> Option<String>,
{
    fn lookup(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Names the trait object only, so structs holding a `&dyn Lookup` can derive
/// `Debug` without printing values, which may be secrets.
impl fmt::Debug for dyn Lookup + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Lookup")
    }
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<S: BuildHasher> Lookup for HashMap<String, String, S> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The variables a stack file is interpolated with, in layers.
///
/// Precedence follows `docker compose` (compose-go's `cli.WithDotEnv`):
///
/// 1. the environment layer: the process environment
///    ([`Vars::with_process_env`]) and anything [`Vars::insert`]ed — always wins;
/// 2. the file layer: `.env` and `--env-file` files, added with
///    [`Vars::extend_from_dotenv`] in order, a later file overriding an earlier
///    one.
///
/// So a variable exported in the shell beats every file, and a second
/// `--env-file` beats the first. Like compose, the caller reads the project's
/// `.env` only when no `--env-file` was given; this type does not decide that.
///
/// `Debug` prints the names only: values may be secrets.
///
/// It remembers every name looked up ([`Vars::read`]), so whoever keeps
/// the environment for a later load (the daemon, for a stack it keeps)
/// keeps only the variables the files use.
#[derive(Default)]
pub struct Vars {
    environment: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    read: std::sync::Mutex<BTreeSet<String>>,
}

impl Clone for Vars {
    fn clone(&self) -> Self {
        Self {
            environment: self.environment.clone(),
            files: self.files.clone(),
            read: std::sync::Mutex::new(self.read()),
        }
    }
}

impl Vars {
    /// An empty set: every variable is unset.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current process environment as the environment layer.
    ///
    /// Variables whose name or value is not valid UTF-8 are skipped: they could
    /// not be written in a stack file or substituted into one.
    pub fn with_process_env() -> Self {
        Self::with_environment(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// The given pairs as the environment layer, standing in for the process
    /// environment (tests, or a daemon interpolating for a client's environment).
    pub fn with_environment<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let environment = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        Self {
            environment,
            ..Self::default()
        }
    }

    /// Sets `name` in the environment layer, overriding any file's value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.environment.insert(name.into(), value.into());
    }

    /// Adds the variables of one `.env` / `--env-file` file (compose's dotenv
    /// format, see [`envfile::parse_dotenv`]) to the file layer.
    ///
    /// Its values override those of files added before, never the environment
    /// layer. `${…}` inside the file sees the environment layer first, then
    /// earlier files, then earlier keys of the same file, as compose-go's
    /// `GetEnvFromFile` does. On error nothing is added.
    pub fn extend_from_dotenv(&mut self, contents: &str) -> Result<(), EnvFileError> {
        let pairs = envfile::parse_dotenv(contents, &*self)?;
        self.files.extend(pairs);
        Ok(())
    }

    /// The effective value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string());
        self.environment
            .get(name)
            .or_else(|| self.files.get(name))
            .map(String::as_str)
    }

    /// Every name looked up so far (set or not), from any layer: `${…}`
    /// in stack files and env files, `env NAME` without a value, `~`
    /// (`HOME`).
    pub fn read(&self) -> BTreeSet<String> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether `name` is set in any layer.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every variable with its effective value, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut merged: BTreeMap<&str, &str> = self
            .files
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        merged.extend(
            self.environment
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        merged.into_iter()
    }
}

impl Lookup for Vars {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(|(name, _)| name).collect();
        f.debug_struct("Vars").field("names", &names).finish()
    }
}

/// The result of [`interpolate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interpolated {
    /// The input with every expression replaced.
    pub value: String,
    /// Variables that were used without a default and were not set, in order of
    /// first use, each once. They expanded to "". Compose warns about each
    /// ("the X variable is not set, defaulting to a blank string").
    pub unset: Vec<String>,
}

/// Why a string could not be interpolated. Every variant carries the byte range
/// of the offending `$…` expression in the input, see [`InterpolateError::range`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `${NAME:?message}` or `${NAME?message}` with `NAME` missing.
    #[error("required variable {name} is missing a value{}", reason_suffix(.message))]
    MissingRequired {
        /// The variable.
        name: String,
        /// The message after `?`, itself interpolated; may be empty.
        message: String,
        /// The whole `${…}` expression.
        range: Range<usize>,
    },
    /// `${` without its closing `}`.
    #[error("unterminated `${{`: the closing `}}` is missing")]
    Unterminated {
        /// From the `${` to the end of the input.
        range: Range<usize>,
    },
    /// `${}`, `${1abc}`, `${ A}`: what follows `${` is not a variable name.
    #[error("invalid variable name in `{expression}`")]
    InvalidName {
        /// The text of the expression, up to its first `}`.
        expression: String,
        /// The expression.
        range: Range<usize>,
    },
    /// `${A:x}`, `${A }`: the name is followed by something other than `}` or
    /// one of `:-`, `-`, `:?`, `?`, `:+`, `+`.
    #[error("invalid modifier `{modifier}` in `{expression}`")]
    BadModifier {
        /// The text of the expression, up to its first `}`.
        expression: String,
        /// What follows the name.
        modifier: String,
        /// The expression.
        range: Range<usize>,
    },
    /// Expressions nested inside defaults deeper than the limit.
    #[error("`${{…}}` expressions nested more than {limit} deep")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
        /// The expression that went over the limit.
        range: Range<usize>,
    },
}

fn reason_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl InterpolateError {
    /// The byte range in the input of the expression this error is about. It
    /// always lies on `char` boundaries of the input.
    pub fn range(&self) -> Range<usize> {
        match self {
            Self::MissingRequired { range, .. }
            | Self::Unterminated { range }
            | Self::InvalidName { range, .. }
            | Self::BadModifier { range, .. }
            | Self::TooDeep { range, .. } => range.clone(),
        }
    }

    /// A hint for the user, for a diagnostic's help line.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            Self::MissingRequired { .. } => {
                Some("set the variable in the environment, in .env or in an --env-file")
            }
            Self::Unterminated { .. } => Some("write a literal `$` as `$$`"),
            Self::InvalidName { .. } => Some(
                "a variable name is a letter or `_` followed by letters, digits or `_`; write a literal `$` as `$$`",
            ),
            Self::BadModifier { .. } => {
                Some("expected `}` or one of `:-`, `-`, `:?`, `?`, `:+`, `+` after the name")
            }
            Self::TooDeep { .. } => None,
        }
    }

    /// The same error with its range moved by `offset` bytes, for errors from a
    /// value that starts `offset` bytes into a larger text.
    pub fn offset_by(mut self, offset: usize) -> Self {
        self.map_range(|range| range.start + offset..range.end + offset);
        self
    }

    /// Replaces the range with `f(range)`.
    pub(crate) fn map_range(&mut self, f: impl FnOnce(Range<usize>) -> Range<usize>) {
        let range = match self {
            Self::MissingRequired { range, .. }
            | Self::Unterminated { range }
            | Self::InvalidName { range, .. }
            | Self::BadModifier { range, .. }
            | Self::TooDeep { range, .. } => range,
        };
        *range = f(range.clone());
    }
}

/// Replaces every `$…` expression in `input` with its value from `vars`.
///
/// The forms, as in the compose specification:
///
/// | form | value |
/// |---|---|
/// | `$VAR`, `${VAR}` | the value; "" if unset (and `VAR` is reported in [`Interpolated::unset`]) |
/// | `${VAR:-default}` | `default` if `VAR` is unset or empty |
/// | `${VAR-default}` | `default` if `VAR` is unset |
/// | `${VAR:?message}` | error if `VAR` is unset or empty |
/// | `${VAR?message}` | error if `VAR` is unset |
/// | `${VAR:+alt}` | `alt` if `VAR` is set and not empty, else "" |
/// | `${VAR+alt}` | `alt` if `VAR` is set, else "" |
/// | `$$` | a literal `$` |
///
/// `default`, `alt` and `message` are interpolated too, so `${A:-${B}}` works.
/// Names are `[A-Za-z_][A-Za-z0-9_]*`. A `$` followed by anything else (a
/// space, a digit, `}`, the end) is kept as is, like compose-go does
/// (`TestUnescaped`: `"a $ string"`, `"^REGEX$"`); a `${` that does not start a
/// valid expression is an error.
///
/// Unlike compose-go, which interpolates a default before looking at the
/// variable, only the branch that is used is evaluated, as in a POSIX shell: with
/// `A` set, `${A:-${B:?}}` is `A`'s value, not an error, and an unset `B` there
/// is not reported. Syntax errors are reported in either branch.
///
/// ```
/// use std::collections::BTreeMap;
/// use stack::spec::interpolate::interpolate;
///
/// let vars = BTreeMap::from([("TAG".to_owned(), "1.2".to_owned())]);
/// let out = interpolate("app:${TAG:-latest} $$HOME ${PORT:-8080}", &vars)?;
/// assert_eq!(out.value, "app:1.2 $HOME 8080");
/// assert!(out.unset.is_empty());
/// # Ok::<(), stack::spec::interpolate::InterpolateError>(())
/// ```
pub fn interpolate(
    input: &str,
    vars: &(impl Lookup + ?Sized),
) -> Result<Interpolated, InterpolateError> {
    let mut out = Interpolated::default();
    if !input.contains('$') {
        out.value = input.to_owned();
        return Ok(out);
    }
    let mut parser = Parser { src: input, pos: 0 };
    // At depth 0 a `}` is plain text, so this always runs to the end.
    let (segments, _) = parser.sequence(0)?;
    evaluate(&segments, vars, &mut out)?;
    Ok(out)
}

/// One piece of parsed input.
#[derive(Debug)]
enum Segment<'a> {
    /// Literal text (`$$` is already reduced to `$`).
    Text(&'a str),
    /// `$NAME` or `${NAME…}`.
    Var {
        name: &'a str,
        modifier: Option<(Modifier, Vec<Segment<'a>>)>,
        range: Range<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    /// `:-`
    DefaultIfUnsetOrEmpty,
    /// `-`
    DefaultIfUnset,
    /// `:?`
    RequireNonEmpty,
    /// `?`
    RequireSet,
    /// `:+`
    AltIfNonEmpty,
    /// `+`
    AltIfSet,
}

fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// A recursive-descent parser over bytes. Every delimiter is ASCII, so every
/// position where it slices or ends a range is a `char` boundary.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    /// Parses up to the end of the input or, when `depth > 0` (inside a
    /// default), up to the `}` that closes the enclosing expression. Returns the
    /// segments and the position just past that `}`, if one was found.
    fn sequence(
        &mut self,
        depth: usize,
    ) -> Result<(Vec<Segment<'a>>, Option<usize>), InterpolateError> {
        let mut segments = Vec::new();
        loop {
            let rest = &self.src[self.pos..];
            let stop = if depth == 0 {
                rest.find('$')
            } else {
                rest.find(['$', '}'])
            };
            let Some(stop) = stop else {
                if !rest.is_empty() {
                    segments.push(Segment::Text(rest));
                }
                self.pos = self.src.len();
                return Ok((segments, None));
            };
            if stop > 0 {
                segments.push(Segment::Text(&rest[..stop]));
            }
            self.pos += stop;
            if self.peek(0) == Some(b'}') {
                // Only searched for when nested: it closes the enclosing `${`.
                self.pos += 1;
                return Ok((segments, Some(self.pos)));
            }
            segments.push(self.dollar(depth)?);
        }
    }

    /// Parses what starts at the `$` under the cursor.
    fn dollar(&mut self, depth: usize) -> Result<Segment<'a>, InterpolateError> {
        let start = self.pos;
        match self.peek(1) {
            Some(b'$') => {
                self.pos += 2;
                Ok(Segment::Text("$"))
            }
            Some(b'{') => self.braced(depth),
            Some(byte) if is_name_start(byte) => {
                self.pos += 1;
                let name = self.name();
                Ok(Segment::Var {
                    name,
                    modifier: None,
                    range: start..self.pos,
                })
            }
            // compose-go keeps a `$` that starts nothing (`$ `, `$1`, `$}`, a
            // trailing `$`) as a literal `$` rather than failing.
            _ => {
                self.pos += 1;
                Ok(Segment::Text("$"))
            }
        }
    }

    /// Consumes `[A-Za-z0-9_]*` and returns it.
    fn name(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek(0).is_some_and(is_name_byte) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// The text from `start` to the first `}` after it (inclusive), or to the
    /// end: the best guess at an erroneous expression's extent.
    fn rough_extent(&self, start: usize) -> Range<usize> {
        let end = self.src[start..]
            .find('}')
            .map_or(self.src.len(), |i| start + i + 1);
        start..end
    }

    /// Parses `${…}` with the cursor on its `$`.
    fn braced(&mut self, depth: usize) -> Result<Segment<'a>, InterpolateError> {
        let start = self.pos;
        self.pos += 2;
        let name = self.name();
        let after_name = self.peek(0);
        if after_name.is_none() {
            return Err(InterpolateError::Unterminated {
                range: start..self.src.len(),
            });
        }
        if !name.as_bytes().first().copied().is_some_and(is_name_start) {
            let range = self.rough_extent(start);
            return Err(InterpolateError::InvalidName {
                expression: self.src[range.clone()].to_owned(),
                range,
            });
        }
        let modifier = match (after_name, self.peek(1)) {
            (Some(b'}'), _) => {
                self.pos += 1;
                return Ok(Segment::Var {
                    name,
                    modifier: None,
                    range: start..self.pos,
                });
            }
            (Some(b':'), Some(b'-')) => Some((Modifier::DefaultIfUnsetOrEmpty, 2)),
            (Some(b':'), Some(b'?')) => Some((Modifier::RequireNonEmpty, 2)),
            (Some(b':'), Some(b'+')) => Some((Modifier::AltIfNonEmpty, 2)),
            (Some(b'-'), _) => Some((Modifier::DefaultIfUnset, 1)),
            (Some(b'?'), _) => Some((Modifier::RequireSet, 1)),
            (Some(b'+'), _) => Some((Modifier::AltIfSet, 1)),
            _ => None,
        };
        let Some((modifier, len)) = modifier else {
            let range = self.rough_extent(start);
            // The offending text: `:` and the character after it, or the one
            // character after the name. Taken by `char`, never splitting one.
            let rest = &self.src[self.pos..];
            let mut chars = rest.char_indices();
            let first = chars.next().map_or(0, |(_, c)| c.len_utf8());
            let width = if rest.starts_with(':') {
                chars.next().map_or(first, |(i, c)| i + c.len_utf8())
            } else {
                first
            };
            return Err(InterpolateError::BadModifier {
                expression: self.src[range.clone()].to_owned(),
                modifier: rest[..width].to_owned(),
                range,
            });
        };
        if depth + 1 > MAX_DEPTH {
            return Err(InterpolateError::TooDeep {
                limit: MAX_DEPTH,
                range: self.rough_extent(start),
            });
        }
        self.pos += len;
        match self.sequence(depth + 1)? {
            (argument, Some(end)) => Ok(Segment::Var {
                name,
                modifier: Some((modifier, argument)),
                range: start..end,
            }),
            (_, None) => Err(InterpolateError::Unterminated {
                range: start..self.src.len(),
            }),
        }
    }
}

fn evaluate(
    segments: &[Segment<'_>],
    vars: &(impl Lookup + ?Sized),
    out: &mut Interpolated,
) -> Result<(), InterpolateError> {
    for segment in segments {
        match segment {
            Segment::Text(text) => out.value.push_str(text),
            Segment::Var {
                name,
                modifier: None,
                ..
            } => match vars.lookup(name) {
                Some(value) => out.value.push_str(&value),
                None => {
                    if !out.unset.iter().any(|n| n == name) {
                        out.unset.push((*name).to_owned());
                    }
                }
            },
            Segment::Var {
                name,
                modifier: Some((modifier, argument)),
                range,
            } => {
                let value = vars.lookup(name);
                let is_set = value.is_some();
                let is_non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
                match modifier {
                    Modifier::DefaultIfUnsetOrEmpty | Modifier::DefaultIfUnset => {
                        let keep = match modifier {
                            Modifier::DefaultIfUnsetOrEmpty => is_non_empty,
                            _ => is_set,
                        };
                        match value {
                            Some(value) if keep => out.value.push_str(&value),
                            _ => evaluate(argument, vars, out)?,
                        }
                    }
                    Modifier::RequireNonEmpty | Modifier::RequireSet => {
                        let ok = match modifier {
                            Modifier::RequireNonEmpty => is_non_empty,
                            _ => is_set,
                        };
                        match value {
                            Some(value) if ok => out.value.push_str(&value),
                            _ => {
                                let mut message = Interpolated::default();
                                evaluate(argument, vars, &mut message)?;
                                return Err(InterpolateError::MissingRequired {
                                    name: (*name).to_owned(),
                                    message: message.value,
                                    range: range.clone(),
                                });
                            }
                        }
                    }
                    Modifier::AltIfNonEmpty | Modifier::AltIfSet => {
                        let use_alt = match modifier {
                            Modifier::AltIfNonEmpty => is_non_empty,
                            _ => is_set,
                        };
                        if use_alt {
                            evaluate(argument, vars, out)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("A".to_owned(), "a".to_owned()),
            ("B".to_owned(), "b".to_owned()),
            ("EMPTY".to_owned(), String::new()),
            ("lower_9".to_owned(), "low".to_owned()),
            ("UNICODE".to_owned(), "ünï".to_owned()),
        ])
    }

    fn expand(input: &str) -> Result<String, InterpolateError> {
        interpolate(input, &vars()).map(|out| out.value)
    }

    #[test]
    fn expands_every_documented_form() {
        let cases = [
            ("$A", "a"),
            ("${A}", "a"),
            ("x${A}y", "xay"),
            ("$A-B", "a-B"),
            ("$A$B", "ab"),
            ("${lower_9}", "low"),
            ("$lower_9.", "low."),
            // `:-` and `-`
            ("${A:-x}", "a"),
            ("${EMPTY:-x}", "x"),
            ("${UNSET:-x}", "x"),
            ("${A-x}", "a"),
            ("${EMPTY-x}", ""),
            ("${UNSET-x}", "x"),
            ("${UNSET-}", ""),
            ("${UNSET:-}", ""),
            // `:?` and `?` when satisfied
            ("${A:?need it}", "a"),
            ("${A?need it}", "a"),
            ("${EMPTY?need it}", ""),
            // `:+` and `+`
            ("${A:+y}", "y"),
            ("${EMPTY:+y}", ""),
            ("${UNSET:+y}", ""),
            ("${A+y}", "y"),
            ("${EMPTY+y}", "y"),
            ("${UNSET+y}", ""),
            // `$$`
            ("$$", "$"),
            ("$$A", "$A"),
            ("$${A}", "${A}"),
            ("$$$A", "$a"),
            // the operator is the first one after the name (compose `TestPrecedence`)
            ("${UNSET-myerror?msg}", "myerror?msg"),
            ("${UNSET:-/non:-alphanumeric}", "/non:-alphanumeric"),
            ("${UNSET-a}b}", "ab}"),
            ("${UNSET:-{x}}", "{x}"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn nested_defaults_are_interpolated() {
        let cases = [
            ("${UNSET:-${A}}", "a"),
            ("${UNSET-$A}", "a"),
            ("${UNSET-${A} ${B}}", "a b"),
            ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
            ("${UNSET:-${EMPTY-fallback}}", ""),
            ("${EMPTY+$A ${B:+second}}", "a second"),
            ("${A:+[${B}]}", "[b]"),
            ("${UNSET:-$$A}", "$A"),
            ("${UNSET:-a$}", "a$"),
            ("${UNSET:-${A}}tail", "atail"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn lone_dollar_is_kept_like_compose() {
        for input in [
            "a $ string",
            "^REGEX$",
            "$}",
            "$",
            "$1",
            "cost: 5$",
            "$-",
            "$ü",
        ] {
            assert_eq!(expand(input).as_deref(), Ok(input), "input {input:?}");
        }
    }

    #[test]
    fn non_ascii_text_around_variables_is_preserved() {
        assert_eq!(expand("héllo ${A} wörld").as_deref(), Ok("héllo a wörld"));
        assert_eq!(expand("日本$A語").as_deref(), Ok("日本a語"));
        assert_eq!(expand("${UNSET:-ünïcödé}").as_deref(), Ok("ünïcödé"));
        assert_eq!(expand("→${UNICODE}←").as_deref(), Ok("→ünï←"));
    }

    #[test]
    fn unset_variables_expand_empty_and_are_reported_once() {
        let out = interpolate("${X}-$Y-${X}-${A}-${EMPTY}", &vars()).expect("valid input");
        assert_eq!(out.value, "---a-");
        assert_eq!(out.unset, ["X", "Y"]);
    }

    #[test]
    fn variables_with_defaults_are_not_reported_unset() {
        let out = interpolate("${X:-d} ${Y-d} ${Z:+a} ${W+a}", &vars()).expect("valid input");
        assert_eq!(out.value, "d d  ");
        assert!(out.unset.is_empty());
    }

    #[test]
    fn only_the_used_branch_is_evaluated() {
        // With A set its default is never looked at: no unset report, no error.
        let out = interpolate("${A:-${NOPE}} ${A:-${NOPE:?}}", &vars()).expect("valid input");
        assert_eq!(out.value, "a a");
        assert!(out.unset.is_empty());
        let out = interpolate("${UNSET:-${NOPE}}", &vars()).expect("valid input");
        assert_eq!(out.unset, ["NOPE"]);
    }

    #[test]
    fn required_variable_error_carries_name_message_and_range() {
        let input = "image: ${UNSET:?need it}!";
        let err = expand(input).expect_err("UNSET is required");
        let InterpolateError::MissingRequired {
            ref name,
            ref message,
            ..
        } = err
        else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(name, "UNSET");
        assert_eq!(message, "need it");
        assert_eq!(&input[err.range()], "${UNSET:?need it}");
        assert_eq!(
            err.to_string(),
            "required variable UNSET is missing a value: need it"
        );
    }

    #[test]
    fn required_variable_error_points_at_expression() {
        let cases = [
            ("${UNSET:?}", "${UNSET:?}", ""),
            ("${EMPTY:?empty}", "${EMPTY:?empty}", "empty"),
            ("x ${UNSET?unset} y", "${UNSET?unset}", "unset"),
            (
                "é${UNSET:?must set ${A}}ü",
                "${UNSET:?must set ${A}}",
                "must set a",
            ),
            ("${UNSET:-${INNER:?inner}}", "${INNER:?inner}", "inner"),
        ];
        for (input, expression, expected_message) in cases {
            let err = expand(input).expect_err(input);
            assert_eq!(&input[err.range()], expression, "input {input:?}");
            assert!(
                matches!(&err, InterpolateError::MissingRequired { message, .. } if message == expected_message),
                "input {input:?}: {err:?}"
            );
        }
        assert_eq!(
            expand("${UNSET:?}").map_err(|e| e.to_string()),
            Err("required variable UNSET is missing a value".to_owned())
        );
    }

    #[test]
    fn malformed_expressions_are_errors_with_ranges() {
        #[derive(Debug, PartialEq)]
        enum Kind {
            Unterminated,
            InvalidName,
            BadModifier,
        }
        let cases = [
            ("${", Kind::Unterminated, "${"),
            ("ab${A", Kind::Unterminated, "${A"),
            ("${A:-x", Kind::Unterminated, "${A:-x"),
            ("${A:-${B}", Kind::Unterminated, "${A:-${B}"),
            ("x ${}", Kind::InvalidName, "${}"),
            ("${1abc} y", Kind::InvalidName, "${1abc}"),
            ("${ A}", Kind::InvalidName, "${ A}"),
            ("${ü}", Kind::InvalidName, "${ü}"),
            ("${A:x}", Kind::BadModifier, "${A:x}"),
            ("${A }", Kind::BadModifier, "${A }"),
            ("${A!}", Kind::BadModifier, "${A!}"),
            ("${Aé}", Kind::BadModifier, "${Aé}"),
            ("${A:é}", Kind::BadModifier, "${A:é}"),
            ("${A:}", Kind::BadModifier, "${A:}"),
            ("${A:-${}}", Kind::InvalidName, "${}"),
        ];
        for (input, kind, expression) in cases {
            let err = expand(input).expect_err(input);
            let actual = match err {
                InterpolateError::Unterminated { .. } => Kind::Unterminated,
                InterpolateError::InvalidName { .. } => Kind::InvalidName,
                InterpolateError::BadModifier { .. } => Kind::BadModifier,
                ref other => panic!("input {input:?}: unexpected {other:?}"),
            };
            assert_eq!(actual, kind, "input {input:?}");
            assert_eq!(&input[err.range()], expression, "input {input:?}");
        }
    }

    #[test]
    fn error_messages_are_lowercase_and_name_the_problem() {
        let message = |input: &str| expand(input).expect_err(input).to_string();
        assert_eq!(message("${A:x}"), "invalid modifier `:x` in `${A:x}`");
        assert_eq!(message("${1abc}"), "invalid variable name in `${1abc}`");
        assert_eq!(
            message("${A"),
            "unterminated `${`: the closing `}` is missing"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 10_000;
        let input = format!("{}x{}", "${U:-".repeat(depth), "}".repeat(depth));
        let err = expand(&input).expect_err("too deep");
        assert!(matches!(err, InterpolateError::TooDeep { .. }), "{err:?}");
        let ok = format!("{}x{}", "${U:-".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(expand(&ok).as_deref(), Ok("x"));
    }

    #[test]
    fn offset_by_moves_the_range() {
        let err = expand("${A:x}").expect_err("bad modifier").offset_by(10);
        assert_eq!(err.range(), 10..16);
    }

    #[test]
    fn closures_and_vars_are_lookups() {
        let closure = |name: &str| (name == "X").then(|| "from closure".to_owned());
        assert_eq!(
            interpolate("$X", &closure).map(|o| o.value).as_deref(),
            Ok("from closure")
        );
        let dynamic: &dyn Lookup = &closure;
        assert_eq!(
            interpolate("${X}", dynamic).map(|o| o.value).as_deref(),
            Ok("from closure")
        );
    }

    #[test]
    fn environment_wins_over_files_and_later_files_win() {
        let mut vars = Vars::with_environment([("SHELL_ONLY", "s"), ("BOTH", "shell")]);
        vars.extend_from_dotenv("BOTH=dotenv\nFILE=first\nKEEP=kept\n")
            .expect("valid .env");
        vars.extend_from_dotenv("FILE=second\nREF=${KEEP}-${BOTH}\n")
            .expect("valid env file");
        assert_eq!(vars.get("BOTH"), Some("shell"));
        assert_eq!(vars.get("FILE"), Some("second"));
        assert_eq!(vars.get("REF"), Some("kept-shell"));
        assert_eq!(vars.get("SHELL_ONLY"), Some("s"));
        assert_eq!(vars.get("MISSING"), None);
        vars.insert("FILE", "inserted");
        assert_eq!(vars.get("FILE"), Some("inserted"));
        let all: Vec<(&str, &str)> = vars.iter().collect();
        assert_eq!(
            all,
            [
                ("BOTH", "shell"),
                ("FILE", "inserted"),
                ("KEEP", "kept"),
                ("REF", "kept-shell"),
                ("SHELL_ONLY", "s"),
            ]
        );
    }

    #[test]
    fn failed_dotenv_adds_nothing() {
        let mut vars = Vars::new();
        assert!(vars.extend_from_dotenv("A=1\nB=\"open\n").is_err());
        assert!(!vars.has("A"));
    }

    #[test]
    fn vars_debug_does_not_show_values() {
        let vars = Vars::with_environment([("TOKEN", "hunter2")]);
        let debug = format!("{vars:?}");
        assert!(debug.contains("TOKEN"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn process_env_layer_is_read() {
        // PATH is set in every environment the tests run in; reading it is
        // enough, nothing here changes the process environment.
        let vars = Vars::with_process_env();
        assert_eq!(
            vars.get("PATH").map(str::to_owned),
            std::env::var("PATH").ok()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in any::<String>()) {
            if let Err(err) = interpolate(&input, &vars()) {
                let range = err.range();
                prop_assert!(range.start <= range.end && range.end <= input.len());
                prop_assert!(input.is_char_boundary(range.start));
                prop_assert!(input.is_char_boundary(range.end));
            }
        }

        #[test]
        fn dollar_heavy_input_never_panics(input in "([$]|[{}:?+-]|A|EMPTY|UNSET|é| |x){0,40}") {
            match interpolate(&input, &vars()) {
                Ok(_) => {}
                Err(err) => {
                    let range = err.range();
                    prop_assert!(range.start <= range.end && range.end <= input.len());
                    prop_assert!(input.is_char_boundary(range.start));
                    prop_assert!(input.is_char_boundary(range.end));
                    prop_assert_eq!(input.as_bytes()[range.start], b'$');
                }
            }
        }

        #[test]
        fn input_without_dollar_is_unchanged(input in "[^$]*") {
            let out = interpolate(&input, &vars()).expect("no expressions");
            prop_assert_eq!(out.value, input);
            prop_assert!(out.unset.is_empty());
        }
    }
}
