//! Environment files, in the two formats a stack meets:
//!
//! - Docker's `--env-file` format ([`parse_docker_env_file`]): one `NAME=value`
//!   per line, values taken raw, no quotes, no interpolation;
//! - compose's `.env` / `env_file` format ([`parse_dotenv`]): quotes, escapes,
//!   `export`, inline comments and `${…}` interpolation.
//!
//! This module parses text it is given. It never opens files and never reads the
//! process environment: bare `NAME` lines and `${…}` take their values from a
//! [`Lookup`] the caller passes.

use std::collections::BTreeMap;
use std::ops::Range;

use super::interpolate::{InterpolateError, Lookup, interpolate};

/// Why an environment file could not be parsed. Every variant carries the 1-based
/// line number and a byte range into the file's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// A variable name with a space or tab in it (`KEY WITH SPACE=v`, or a line
    /// that is not `NAME=value` at all). The wording is Docker's.
    #[error("variable '{name}' contains whitespaces")]
    NameHasWhitespace {
        /// The name as written.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The name.
        range: Range<usize>,
    },
    /// A line that starts with `=`. The wording is Docker's.
    #[error("no variable name on line '{text}'")]
    MissingName {
        /// The line, without leading whitespace.
        text: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        range: Range<usize>,
    },
    /// A character that cannot be part of a dotenv variable name.
    #[error("unexpected character {found:?} in variable name")]
    InvalidNameChar {
        /// The character.
        found: char,
        /// 1-based line number.
        line: usize,
        /// The character.
        range: Range<usize>,
    },
    /// A quoted dotenv value without its closing quote.
    #[error("unterminated quoted value")]
    UnterminatedQuote {
        /// 1-based line number of the opening quote.
        line: usize,
        /// From the opening quote to the end of its line.
        range: Range<usize>,
    },
    /// Text after the closing quote of a dotenv value, other than a comment.
    #[error("unexpected text after the closing quote")]
    TrailingText {
        /// 1-based line number.
        line: usize,
        /// The text, to the end of the line.
        range: Range<usize>,
    },
    /// A dotenv value whose `${…}` could not be interpolated.
    #[error("cannot interpolate the value of {name}")]
    Interpolate {
        /// The variable being defined.
        name: String,
        /// 1-based line number of the failing expression.
        line: usize,
        /// The failing expression in the file. (The source's own range is
        /// relative to the value after quote and escape processing.)
        range: Range<usize>,
        /// What was wrong with the expression.
        #[source]
        source: InterpolateError,
    },
}

impl EnvFileError {
    /// The 1-based line the error is on.
    pub fn line(&self) -> usize {
        match self {
            Self::NameHasWhitespace { line, .. }
            | Self::MissingName { line, .. }
            | Self::InvalidNameChar { line, .. }
            | Self::UnterminatedQuote { line, .. }
            | Self::TrailingText { line, .. }
            | Self::Interpolate { line, .. } => *line,
        }
    }

    /// The byte range in the file's text the error is about, on `char`
    /// boundaries.
    pub fn range(&self) -> Range<usize> {
        match self {
            Self::NameHasWhitespace { range, .. }
            | Self::MissingName { range, .. }
            | Self::InvalidNameChar { range, .. }
            | Self::UnterminatedQuote { range, .. }
            | Self::TrailingText { range, .. }
            | Self::Interpolate { range, .. } => range.clone(),
        }
    }
}

/// The 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Lines as Go's `bufio.ScanLines` yields them: split at `\n`, one trailing `\r`
/// dropped, no empty last line after a final `\n`. Each comes with its offset.
fn scan_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let rest = text.get(offset..).filter(|rest| !rest.is_empty())?;
        let start = offset;
        let (line, advance) = match rest.find('\n') {
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        offset += advance;
        Some((start, line.strip_suffix('\r').unwrap_or(line)))
    })
}

/// Parses Docker's `--env-file` format, as `docker run --env-file` does
/// (docker/cli `opts/file.go`, `parseKeyValueFile`):
///
/// - leading whitespace is trimmed, blank lines and lines starting with `#` are
///   skipped, a UTF-8 BOM on the first line is dropped;
/// - `NAME=value` keeps `value` exactly: no trimming, no quote removal, no
///   interpolation, no inline comments;
/// - a `NAME` alone takes its value from `lookup` and is left out when unset;
/// - a name containing a space or tab, and a line starting with `=`, are errors.
///
/// Pairs come back in file order; a repeated name appears twice, the later one
/// winning when applied, as with Docker.
pub fn parse_docker_env_file(
    contents: &str,
    lookup: &(impl Lookup + ?Sized),
) -> Result<Vec<(String, String)>, EnvFileError> {
    // Docker's `bufio.Scanner` also fails on a line over 64 KiB; we accept any
    // length rather than copy a buffer-size limit.
    let mut pairs = Vec::new();
    for (index, (offset, raw)) in scan_lines(contents).enumerate() {
        let line = index + 1;
        let (raw, offset) = match raw.strip_prefix('\u{feff}') {
            Some(rest) if index == 0 => (rest, offset + '\u{feff}'.len_utf8()),
            _ => (raw, offset),
        };
        // Go's `unicode.IsSpace` and Rust's `char::is_whitespace` are both the
        // Unicode White_Space property.
        let text = raw.trim_start();
        let start = offset + (raw.len() - text.len());
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text, None),
        };
        // Docker checks only space and tab here, not every Unicode space.
        if name.contains([' ', '\t']) {
            return Err(EnvFileError::NameHasWhitespace {
                name: name.to_owned(),
                line,
                range: start..start + name.len(),
            });
        }
        if name.is_empty() {
            return Err(EnvFileError::MissingName {
                text: text.to_owned(),
                line,
                range: start..start + text.len(),
            });
        }
        match value {
            Some(value) => pairs.push((name.to_owned(), value.to_owned())),
            None => {
                if let Some(value) = lookup.lookup(text) {
                    pairs.push((text.trim().to_owned(), value));
                }
            }
        }
    }
    Ok(pairs)
}

/// Parses compose's `.env` / `env_file` format, following compose-go's `dotenv`
/// package:
///
/// - `KEY=value`, `export KEY=value`, and YAML-style `KEY: value`; names are
///   letters, digits, `_`, `.`, `-`, `[` and `]`;
/// - blank lines and `#` comment lines are skipped; an unquoted value ends at
///   ` #` (space, hash) and loses trailing whitespace;
/// - `'single quoted'` values are literal, except that `\'` is a quote;
/// - `"double quoted"` values may span lines and understand `\n`, `\t`, `\r`,
///   `\\`, `\"`, `\$`, `\a`, `\b`, `\f`, `\v` and `\0` + three octal digits;
///   any other `\x` is kept as written;
/// - unquoted and double-quoted values are interpolated (see
///   [`interpolate`]): a name is looked up in
///   `lookup` first, then among the earlier keys of this file, as compose-go
///   does;
/// - `KEY=` is the empty string; `KEY` alone takes its value from `lookup` and
///   is left out when unset.
///
/// Pairs come back in order of first definition; a key defined twice keeps the
/// later value. Unlike compose-go, which would start a new statement there, text
/// after a closing quote other than a `#` comment is an error.
pub fn parse_dotenv(
    contents: &str,
    lookup: &(impl Lookup + ?Sized),
) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut parser = Dotenv {
        src: contents,
        pos: 0,
        pairs: Vec::new(),
        index: BTreeMap::new(),
    };
    if contents.starts_with('\u{feff}') {
        parser.pos = '\u{feff}'.len_utf8();
    }
    while parser.skip_blanks_and_comments() {
        parser.statement(lookup)?;
    }
    Ok(parser.pairs)
}

/// Whitespace that does not end a line, as compose-go's `isSpace`.
fn is_inline_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']')
}

struct Dotenv<'a> {
    src: &'a str,
    pos: usize,
    pairs: Vec<(String, String)>,
    /// Where each key is in `pairs`.
    index: BTreeMap<String, usize>,
}

impl Dotenv<'_> {
    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn line_end(&self, from: usize) -> usize {
        self.src[from..]
            .find('\n')
            .map_or(self.src.len(), |i| from + i)
    }

    fn skip_inline_spaces(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches(is_inline_space).len();
    }

    /// Moves to the start of the next statement; false at the end of the text.
    fn skip_blanks_and_comments(&mut self) -> bool {
        loop {
            let rest = self.rest();
            self.pos += rest.len() - rest.trim_start().len();
            match self.peek() {
                None => return false,
                Some('#') => self.pos = self.line_end(self.pos),
                Some(_) => return true,
            }
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.index.get(key).map(|&i| self.pairs[i].1.clone())
    }

    fn set(&mut self, key: &str, value: String) {
        match self.index.get(key) {
            Some(&i) => self.pairs[i].1 = value,
            None => {
                self.index.insert(key.to_owned(), self.pairs.len());
                self.pairs.push((key.to_owned(), value));
            }
        }
    }

    fn statement(&mut self, lookup: &(impl Lookup + ?Sized)) -> Result<(), EnvFileError> {
        let statement_start = self.pos;
        let line = line_of(self.src, statement_start);
        if let Some(after) = self.rest().strip_prefix("export")
            && after.starts_with(is_inline_space)
        {
            self.pos += "export".len();
            self.skip_inline_spaces();
        }

        let key_start = self.pos;
        let mut separator = None;
        let mut key_end = self.src.len();
        for (i, c) in self.rest().char_indices() {
            let at = key_start + i;
            if is_inline_space(c) || is_name_char(c) {
                continue;
            }
            if matches!(c, '=' | ':' | '\n') {
                separator = Some(c);
                key_end = at;
                break;
            }
            return Err(EnvFileError::InvalidNameChar {
                found: c,
                line,
                range: at..at + c.len_utf8(),
            });
        }
        let key = self.src[key_start..key_end].trim_end();
        if key.contains(is_inline_space) {
            return Err(EnvFileError::NameHasWhitespace {
                name: key.to_owned(),
                line,
                range: key_start..key_start + key.len(),
            });
        }
        if key.is_empty() {
            let end = self.line_end(statement_start);
            let text = self.src[statement_start..end].trim_end();
            return Err(EnvFileError::MissingName {
                text: text.to_owned(),
                line,
                range: statement_start..statement_start + text.len(),
            });
        }

        if matches!(separator, None | Some('\n')) {
            // A bare name: inherit it from the lookup, or leave it out.
            self.pos = key_end;
            if let Some(value) = lookup.lookup(key) {
                self.set(key, value);
            }
            return Ok(());
        }

        self.pos = key_end + 1;
        self.skip_inline_spaces();
        let value = match self.peek() {
            Some(quote @ ('"' | '\'')) => self.quoted(quote, key, lookup)?,
            _ => self.unquoted(key, lookup)?,
        };
        self.set(key, value);
        Ok(())
    }

    fn unquoted(
        &mut self,
        key: &str,
        lookup: &(impl Lookup + ?Sized),
    ) -> Result<String, EnvFileError> {
        let start = self.pos;
        let end = self.line_end(start);
        self.pos = end;
        let raw = &self.src[start..end];
        let raw = raw.find(" #").map_or(raw, |i| &raw[..i]).trim_end();
        self.expand(raw, key, lookup, |offset| start + offset)
    }

    /// Interpolates `value`, mapping error offsets in it to offsets in the file
    /// with `to_file`.
    fn expand(
        &self,
        value: &str,
        key: &str,
        lookup: &(impl Lookup + ?Sized),
        to_file: impl Fn(usize) -> usize,
    ) -> Result<String, EnvFileError> {
        let scoped = |name: &str| lookup.lookup(name).or_else(|| self.get(name));
        match interpolate(value, &scoped) {
            Ok(out) => Ok(out.value),
            Err(source) => {
                let range = source.range();
                let range = to_file(range.start)..to_file(range.end);
                Err(EnvFileError::Interpolate {
                    name: key.to_owned(),
                    line: line_of(self.src, range.start),
                    range,
                    source,
                })
            }
        }
    }

    /// Reads a quoted value with the cursor on its opening quote.
    fn quoted(
        &mut self,
        quote: char,
        key: &str,
        lookup: &(impl Lookup + ?Sized),
    ) -> Result<String, EnvFileError> {
        let open = self.pos;
        let double = quote == '"';
        let mut value = String::new();
        // For each byte of `value`, the file offset it came from; one more entry
        // for the end. Lets an interpolation error point into the file.
        let mut origin: Vec<usize> = Vec::new();
        let mut push = |value: &mut String, text: &str, from: usize| {
            origin.extend(std::iter::repeat_n(from, text.len()));
            value.push_str(text);
        };

        let mut chars = Chars::new(self.src, open + quote.len_utf8());
        let close = loop {
            let Some((at, c)) = chars.next() else {
                let end = self.line_end(open);
                return Err(EnvFileError::UnterminatedQuote {
                    line: line_of(self.src, open),
                    range: open..end,
                });
            };
            if c == quote {
                break at;
            }
            if c != '\\' {
                push(&mut value, c.encode_utf8(&mut [0; 4]), at);
                continue;
            }
            let Some((_, next)) = chars.next() else {
                continue; // reported as unterminated on the next turn
            };
            if next == quote {
                push(&mut value, quote.encode_utf8(&mut [0; 4]), at);
                continue;
            }
            let escaped = if double {
                match next {
                    'a' => Some("\u{07}"),
                    'b' => Some("\u{08}"),
                    'f' => Some("\u{0c}"),
                    'n' => Some("\n"),
                    'r' => Some("\r"),
                    't' => Some("\t"),
                    'v' => Some("\u{0b}"),
                    '\\' => Some("\\"),
                    // `$$` is interpolation's own escape for a literal `$`.
                    '$' => Some("$$"),
                    _ => None,
                }
            } else {
                None
            };
            match escaped {
                Some(text) => push(&mut value, text, at),
                None if double && next == '0' => {
                    let octal = chars.octal_escape();
                    match octal {
                        Ok(c) => push(&mut value, c.encode_utf8(&mut [0; 4]), at),
                        Err(digits) => {
                            push(&mut value, "\\0", at);
                            push(&mut value, digits, at);
                        }
                    }
                }
                None => {
                    push(&mut value, "\\", at);
                    push(&mut value, next.encode_utf8(&mut [0; 4]), at);
                }
            }
        };
        origin.push(close);
        self.pos = close + quote.len_utf8();

        // After the closing quote only a comment may follow on the line.
        self.skip_inline_spaces();
        match self.peek() {
            None | Some('\n' | '#') => {}
            Some(_) => {
                let start = self.pos;
                let end = self.line_end(start);
                let text_end = start + self.src[start..end].trim_end().len();
                return Err(EnvFileError::TrailingText {
                    line: line_of(self.src, start),
                    range: start..text_end,
                });
            }
        }
        if self.peek() == Some('#') {
            self.pos = self.line_end(self.pos);
        }

        if !double {
            return Ok(value);
        }
        self.expand(&value, key, lookup, |offset| {
            origin.get(offset).copied().unwrap_or(close)
        })
    }
}

/// Characters of a quoted value with their offsets, reading `\r\n` as `\n` as
/// compose-go does (it rewrites every `\r\n` before parsing).
struct Chars<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Chars<'a> {
    fn new(src: &'a str, pos: usize) -> Self {
        Self { src, pos }
    }

    /// After `\0`: up to three ASCII digits, as compose-go's `\\0\d{0,3}`. Three
    /// octal digits worth at most 0o377 make that code point; anything else is
    /// kept as written, returned as the digits consumed.
    fn octal_escape(&mut self) -> Result<char, &'a str> {
        let rest = &self.src[self.pos..];
        let len = rest.bytes().take(3).take_while(u8::is_ascii_digit).count();
        let digits = &rest[..len];
        self.pos += len;
        if len == 3
            && let Ok(value) = u8::from_str_radix(digits, 8)
        {
            return Ok(char::from(value));
        }
        Err(digits)
    }
}

impl Iterator for Chars<'_> {
    type Item = (usize, char);

    fn next(&mut self) -> Option<(usize, char)> {
        let rest = &self.src[self.pos..];
        if rest.starts_with("\r\n") {
            let at = self.pos;
            self.pos += 2;
            return Some((at, '\n'));
        }
        let c = rest.chars().next()?;
        let at = self.pos;
        self.pos += c.len_utf8();
        Some((at, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lookup() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("DEFINED_VAR".to_owned(), "defined-value".to_owned()),
            ("EMPTY_VAR".to_owned(), String::new()),
            ("HOST".to_owned(), "example.org".to_owned()),
        ])
    }

    fn docker(contents: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        parse_docker_env_file(contents, &lookup())
    }

    fn dotenv(contents: &str) -> Result<Vec<(String, String)>, EnvFileError> {
        parse_dotenv(contents, &lookup())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn docker_values_are_kept_raw() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("A=1\n", &[("A", "1")]),
            ("  A=1", &[("A", "1")]),
            ("A=\"q\"\nB='s'\n", &[("A", "\"q\""), ("B", "'s'")]),
            ("A=x # not a comment\n", &[("A", "x # not a comment")]),
            ("A=${HOST}\n", &[("A", "${HOST}")]),
            ("A=1  \n", &[("A", "1  ")]),
            ("A=1\r\n", &[("A", "1")]),
            ("A=1\r", &[("A", "1")]),
            ("A=1\nA=2\n", &[("A", "1"), ("A", "2")]),
            ("\u{feff}A=1\n", &[("A", "1")]),
            ("# c\n\n\t\nA=é\n", &[("A", "é")]),
            (
                "DEFINED_VAR\nUNDEFINED\nEMPTY_VAR\n",
                &[("DEFINED_VAR", "defined-value"), ("EMPTY_VAR", "")],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(docker(input), Ok(pairs(expected)), "input {input:?}");
        }
    }

    #[test]
    fn docker_bom_is_only_dropped_on_the_first_line() {
        let err = docker("A=1\n\u{feff}B=2\n");
        // U+FEFF is not whitespace: it stays part of the name, as in Docker.
        assert_eq!(err, Ok(pairs(&[("A", "1"), ("\u{feff}B", "2")])));
    }

    #[test]
    fn docker_errors_name_the_line_and_range() {
        let input = "A=1\n  bad name=2\n";
        let err = docker(input).expect_err("space in name");
        assert_eq!(err.to_string(), "variable 'bad name' contains whitespaces");
        assert_eq!(err.line(), 2);
        assert_eq!(&input[err.range()], "bad name");

        let input = "# x\n  =oops\n";
        let err = docker(input).expect_err("no name");
        assert_eq!(err.to_string(), "no variable name on line '=oops'");
        assert_eq!(err.line(), 2);
        assert_eq!(&input[err.range()], "=oops");
    }

    #[test]
    fn dotenv_parses_every_documented_form() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("A=1", &[("A", "1")]),
            ("A=1\nB=2\n", &[("A", "1"), ("B", "2")]),
            ("export A=1\n", &[("A", "1")]),
            ("export\tA=1\n", &[("A", "1")]),
            ("exported=1\n", &[("exported", "1")]),
            ("A: 1\n", &[("A", "1")]),
            ("  A  =  spaced value  \n", &[("A", "spaced value")]),
            ("# comment\n\nA=1 # inline\n", &[("A", "1")]),
            ("A=1#not-inline\n", &[("A", "1#not-inline")]),
            ("A=\n", &[("A", "")]),
            ("A=\nB=2", &[("A", ""), ("B", "2")]),
            ("A=''\nB=\"\"\n", &[("A", ""), ("B", "")]),
            ("A='lit ${HOST} \\n $x'\n", &[("A", "lit ${HOST} \\n $x")]),
            ("A='it\\'s'\n", &[("A", "it's")]),
            ("A=\"a\\nb\\tc\\\\d\\\"e\"\n", &[("A", "a\nb\tc\\d\"e")]),
            (
                "A=\"multi\nline\"\nB=2\n",
                &[("A", "multi\nline"), ("B", "2")],
            ),
            ("A=\"crlf\r\nline\"\r\n", &[("A", "crlf\nline")]),
            ("A=\"keep \\x and \\'\"\n", &[("A", "keep \\x and \\'")]),
            ("A=\"\\0101\\0\\012\"\n", &[("A", "A\\0\\012")]),
            ("A=\"cost \\$5\"\n", &[("A", "cost $5")]),
            ("A=\"q\" # comment\n", &[("A", "q")]),
            ("A=\"# not a comment\"\n", &[("A", "# not a comment")]),
            ("A=https://${HOST}/x\n", &[("A", "https://example.org/x")]),
            ("A=\"${HOST:-x}\"\n", &[("A", "example.org")]),
            ("A=$$HOST\n", &[("A", "$HOST")]),
            ("A=first\nB=${A}-2\n", &[("A", "first"), ("B", "first-2")]),
            ("A=1\nA=2\nB=$A\n", &[("A", "2"), ("B", "2")]),
            // the lookup wins over this file's own keys, as in compose-go
            (
                "HOST=local\nB=$HOST\n",
                &[("HOST", "local"), ("B", "example.org")],
            ),
            (
                "DEFINED_VAR\nUNDEFINED\nEMPTY_VAR\n",
                &[("DEFINED_VAR", "defined-value"), ("EMPTY_VAR", "")],
            ),
            ("DEFINED_VAR", &[("DEFINED_VAR", "defined-value")]),
            ("\u{feff}A=1\r\nB=2\r\n", &[("A", "1"), ("B", "2")]),
            ("Ü.key-1[0]=ünï 日本\n", &[("Ü.key-1[0]", "ünï 日本")]),
        ];
        for (input, expected) in cases {
            assert_eq!(dotenv(input), Ok(pairs(expected)), "input {input:?}");
        }
    }

    #[test]
    fn dotenv_errors_carry_line_and_range() {
        // (input, message, line, text at range)
        let cases = [
            (
                "A=1\nB C=2\n",
                "variable 'B C' contains whitespaces",
                2,
                "B C",
            ),
            ("A=1\n=2\n", "no variable name on line '=2'", 2, "=2"),
            (
                "A=1\nB!=2\n",
                "unexpected character '!' in variable name",
                2,
                "!",
            ),
            (
                "A=1\nB=\"open\nC=3\n",
                "unterminated quoted value",
                2,
                "\"open",
            ),
            ("A='x\n", "unterminated quoted value", 1, "'x"),
            (
                "A=\"x\"junk\n",
                "unexpected text after the closing quote",
                1,
                "junk",
            ),
            (
                "A=1\nB=${NOPE:?need}\n",
                "cannot interpolate the value of B",
                2,
                "${NOPE:?need}",
            ),
            (
                "A=\"\\t\\n${NOPE:?x}\"\n",
                "cannot interpolate the value of A",
                1,
                "${NOPE:?x}",
            ),
            (
                "A=\"line\nnext ${B\"\n",
                "cannot interpolate the value of A",
                2,
                "${B",
            ),
            (
                "é=1\nÜ=${1x}\n",
                "cannot interpolate the value of Ü",
                2,
                "${1x}",
            ),
        ];
        for (input, message, line, text) in cases {
            let err = dotenv(input).expect_err(input);
            assert_eq!(err.to_string(), message, "input {input:?}");
            assert_eq!(err.line(), line, "input {input:?}");
            assert_eq!(&input[err.range()], text, "input {input:?}");
        }
    }

    #[test]
    fn dotenv_interpolation_error_keeps_its_cause() {
        let err = dotenv("B=${NOPE:?need it}\n").expect_err("required");
        let EnvFileError::Interpolate { source, .. } = err else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(
            source.to_string(),
            "required variable NOPE is missing a value: need it"
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic_and_ranges_are_char_boundaries(input in any::<String>()) {
            for result in [docker(&input), dotenv(&input)] {
                if let Err(err) = result {
                    let range = err.range();
                    prop_assert!(range.start <= range.end && range.end <= input.len());
                    prop_assert!(input.is_char_boundary(range.start));
                    prop_assert!(input.is_char_boundary(range.end));
                }
            }
        }

        #[test]
        fn dotenv_syntax_heavy_input_never_panics(
            input in "([A-Z]|=|:|\"|'|\\\\|[$]|[{}]|#| |\n|\r|export |é|0){0,60}"
        ) {
            if let Err(err) = dotenv(&input) {
                let range = err.range();
                prop_assert!(range.start <= range.end && range.end <= input.len());
                prop_assert!(input.is_char_boundary(range.start));
                prop_assert!(input.is_char_boundary(range.end));
                prop_assert!(err.line() <= input.lines().count().max(1));
            }
        }
    }
}
