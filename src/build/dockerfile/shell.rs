//! Docker's word expansion for Dockerfile instructions: `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
//! `${VAR:?message}`, `${VAR#pattern}`, `${VAR%pattern}`, `${VAR/from/to}`,
//! quotes and the Dockerfile's escape character.
//!
//! The semantics are those of buildkit's shell lexer
//! (`frontend/dockerfile/shell/lex.go`): this is not a shell, it only expands
//! variables and removes quotes. It never runs anything.

use std::collections::BTreeMap;

/// Why a word did not expand. Messages follow buildkit's lexer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {reason}")]
pub struct ShellError {
    /// The word being expanded.
    pub word: String,
    /// What was wrong with it.
    pub reason: String,
}

/// The variables a word is expanded against: the build args and `ENV`s in
/// scope at a step. Later [`Env::set`] calls replace earlier values. Its
/// `Debug` shows names only: build args may hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) `key`.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.vars.remove(key);
    }

    /// The value of `key`, if set (possibly empty).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Every variable, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Variables from `KEY=VALUE` strings (a string without `=` sets an empty
    /// value), as Docker reads a process environment.
    pub fn from_key_values<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut env = Self::new();
        for item in items {
            match item.split_once('=') {
                Some((k, v)) => env.set(k, v),
                None => env.set(item, ""),
            }
        }
        env
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        let mut env = Self::new();
        for (k, v) in iter {
            env.set(k, v);
        }
        env
    }
}

/// Docker's word lexer for one escape character (`\` or `` ` ``, from the
/// Dockerfile's `# escape=` directive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the result (heredoc detection).
    pub(crate) raw_quotes: bool,
    /// Keep escape characters in the result (heredoc detection).
    pub(crate) raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub(crate) skip_unset: bool,
}

impl Lexer {
    /// A lexer with `escape` as its escape character.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word` as one word: variables replaced, quotes and escapes
    /// removed, whitespace kept (Docker's `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &Env) -> Result<String, ShellError> {
        self.process(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result on unquoted whitespace, including
    /// whitespace that came from a variable's value (Docker's `ProcessWords`).
    pub fn process_words(&self, word: &str, env: &Env) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|(_, ws)| ws)
    }

    fn process(&self, word: &str, env: &Env) -> Result<(String, Vec<String>), ShellError> {
        let mut sw = ShellWord {
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            depth: 0,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|reason| ShellError {
                word: word.to_string(),
                reason,
            })
    }
}

/// Words being collected by [`ShellWord::process_stop_on`].
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    lex: Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a Env,
    raw_escapes: bool,
    /// How many `${…}` are open: bounded so hostile input cannot exhaust
    /// the stack.
    depth: usize,
}

/// The deepest `${…}` nesting accepted.
const MAX_DEPTH: usize = 64;

type Step<T> = Result<T, String>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to the end of the word or `stop` (consumed); a missing
    /// `stop` is an error.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' => {
                    let value = self.process_single_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' => {
                    let value = self.process_double_quote()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character escapes the next one, except at
                        // the end of the word, where it is dropped.
                        let Some(escaped) = self.next() else {
                            break;
                        };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Step<String> {
        // Everything up to the next ' is literal; ' cannot be escaped inside.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> Step<String> {
        // Literal except `$` and the escape character, which escapes only
        // `"`, `$` and itself (sh's double quotes).
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(mut ch) => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.next();
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Step<String> {
        if self.depth >= MAX_DEPTH {
            return Err("syntax error: substitutions nested too deeply".to_string());
        }
        self.depth += 1;
        let result = self.process_dollar_inner();
        self.depth -= 1;
        result
    }

    fn process_dollar_inner(&mut self) -> Step<String> {
        self.next(); // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.env.get(&name) {
                Some(v) => v.to_string(),
                None if self.lex.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the `{`
        match self.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier: String = first.into_iter().collect();
        match first {
            Some('}') => Ok(match self.env.get(&name) {
                Some(v) => v.to_string(),
                None if self.lex.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let null_is_unset = c == ':';
                let op = if null_is_unset {
                    let op = self.next();
                    modifier.extend(op);
                    op
                } else {
                    Some(c)
                };
                let raw = matches!(op, Some('#' | '%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".to_string());
                        }
                        return Err(e);
                    }
                };
                let value = self.env.get(&name);
                if self.lex.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset = value.is_none() || (null_is_unset && value == Some(""));
                match op {
                    Some('-') => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default().to_string()
                    }),
                    Some('+') => Ok(if unset { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some("") if null_is_unset => Err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v.to_string()),
                    },
                    Some(op @ ('#' | '%')) => {
                        // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let value = value.unwrap_or_default();
                        if op == '%' {
                            trim_suffix(&pattern, value, greedy)
                        } else {
                            trim_prefix(&pattern, value, greedy)
                        }
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".to_string());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".to_string());
                        }
                        return Err(e);
                    }
                };
                let Some(value) = self.env.get(&name) else {
                    if self.lex.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let re = shell_pattern_regex(&pattern, true, false)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                Ok(if replace_all {
                    re.replace_all(value, regex::NoExpand(&replacement))
                        .into_owned()
                } else {
                    re.replace(value, regex::NoExpand(&replacement))
                        .into_owned()
                })
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    /// A variable name: letters, digits and `_`; or digits only (positional);
    /// or one special parameter character.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                name.push(ch);
                return name;
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }
}

/// A shell wildcard pattern (`*`, `?`, `\` escapes; no bracket expressions)
/// as a regular expression, as buildkit's `convertShellPatternToRegex`.
fn shell_pattern_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<regex::Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `}` and `/` are escaped only to get them through `${}`.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    Some(c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape '\\'".to_string()),
                }
            }
            c => {
                if regex_syntax_char(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    regex::Regex::new(&out).map_err(|e| e.to_string())
}

fn regex_syntax_char(c: char) -> bool {
    matches!(
        c,
        '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$'
    )
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let re = shell_pattern_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    // A regex cannot find the shortest rightmost match, so reverse both the
    // pattern (keeping escapes in front of what they escape) and the value.
    let reversed = trim_prefix(
        &reverse_pattern(pattern),
        &value.chars().rev().collect::<String>(),
        greedy,
    )?;
    Ok(reversed.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(format!("\\{}", chars[i + 1]));
            i += 2;
        } else {
            pieces.push(chars[i].to_string());
            i += 1;
        }
    }
    pieces.reverse();
    pieces.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_key_values(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="])
    }

    #[test]
    fn docker_env_var_table_expands_as_docker_does() {
        let table = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dockerfile-shell/envVarTest"
        ))
        .unwrap();
        let lex = Lexer::new('\\');
        let mut failures = Vec::new();
        let mut cases = 0;
        for line in table.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.trim().split('|').collect();
            if !matches!(fields[0].trim(), "A" | "U") {
                continue;
            }
            cases += 1;
            let input = fields[1].trim();
            let expected = fields[2].trim();
            match (lex.process_word(input, &env()), expected) {
                (Err(_), "error") => {}
                (Ok(got), want) if got == want => {}
                (got, want) => failures.push(format!("{input:?}: want {want:?}, got {got:?}")),
            }
        }
        assert!(cases > 130);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn buildkit_modifier_table_expands_as_buildkit_does() {
        let table = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dockerfile-shell/matches.jsonl"
        ))
        .unwrap();
        let lex = Lexer::new('\\');
        let mut failures = Vec::new();
        for line in table.lines() {
            let case: serde_json::Value = serde_json::from_str(line).unwrap();
            let input = case["input"].as_str().unwrap();
            let env: Env = case["env"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let got = lex.process_word(input, &env);
            match (case["expected"].as_str(), &got) {
                (None, Err(_)) => {}
                (Some(want), Ok(got)) if got == want => {}
                (want, got) => failures.push(format!("{input:?}: want {want:?}, got {got:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn process_words_splits_on_unquoted_and_expanded_whitespace() {
        let lex = Lexer::new('\\');
        let mut env = Env::new();
        env.set("hi", "hi");
        env.set("space", "abc  def");
        env.set("leading", "  ab c");
        env.set("empty", "");
        let cases: &[(&str, &[&str])] = &[
            ("hello", &["hello"]),
            ("hello${hi}bye", &["hellohibye"]),
            ("hello${space}bye", &["helloabc", "defbye"]),
            ("hello\"${space}\"bye", &["helloabc  defbye"]),
            ("hello \"${space}\"bye", &["hello", "abc  defbye"]),
            ("hello${leading}def", &["hello", "ab", "cdef"]),
            ("hello\"${leading}\" def", &["hello  ab c", "def"]),
            ("hello${leading}", &["hello", "ab", "c"]),
            ("hello${empty}bye", &["hellobye"]),
            ("a\\ b c", &["a b", "c"]),
            ("'a b' \"\" c", &["a b", "c"]),
        ];
        for (input, want) in cases {
            assert_eq!(lex.process_words(input, &env).unwrap(), *want, "{input}");
        }
    }

    #[test]
    fn modifiers_follow_buildkit() {
        let lex = Lexer::new('\\');
        let env = Env::from_key_values(["X=", "P=/usr/local/bin/app.tar.gz", "S=a-b-a-b"]);
        let ok = |w: &str| lex.process_word(w, &env).unwrap();
        // `:-` and `:+` treat an empty value as unset; `-` and `+` do not.
        assert_eq!(ok("${X:-d}"), "d");
        assert_eq!(ok("${X-d}"), "");
        assert_eq!(ok("${U-d}"), "d");
        assert_eq!(ok("${X:+a}"), "");
        assert_eq!(ok("${X+a}"), "a");
        assert_eq!(ok("${U+a}"), "");
        assert_eq!(ok("${P:?}"), "/usr/local/bin/app.tar.gz");
        assert_eq!(
            lex.process_word("${U:?must be set}", &env)
                .unwrap_err()
                .reason,
            "U: must be set"
        );
        assert_eq!(
            lex.process_word("${U?}", &env).unwrap_err().reason,
            "U: is not allowed to be unset"
        );
        assert_eq!(
            lex.process_word("${X:?}", &env).unwrap_err().reason,
            "X: is not allowed to be empty"
        );
        assert_eq!(ok("${X?}"), "");
        assert_eq!(ok("${P#*/}"), "usr/local/bin/app.tar.gz");
        assert_eq!(ok("${P##*/}"), "app.tar.gz");
        assert_eq!(ok("${P%.*}"), "/usr/local/bin/app.tar");
        assert_eq!(ok("${P%%.*}"), "/usr/local/bin/app");
        assert_eq!(ok("${S/a/x}"), "x-b-a-b");
        assert_eq!(ok("${S//a/x}"), "x-b-x-b");
        assert_eq!(ok("${S/?-/}"), "b-a-b");
        assert_eq!(ok("$$"), "");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let lex = Lexer::new('\\');
        let word = "${a:-".repeat(100_000);
        assert!(lex.process_word(&word, &Env::new()).is_err());
        let word = format!("{}x{}", "${a:-".repeat(10), "}".repeat(10));
        assert_eq!(lex.process_word(&word, &Env::new()).unwrap(), "x");
    }

    #[test]
    fn env_debug_shows_names_not_values() {
        let env = Env::from_key_values(["TOKEN=hunter2"]);
        assert_eq!(format!("{env:?}"), "{\"TOKEN\"}");
    }

    #[test]
    fn backtick_is_the_escape_when_the_file_says_so() {
        let lex = Lexer::new('`');
        let env = Env::from_key_values(["A=1"]);
        assert_eq!(lex.process_word("c:\\dir`$A", &env).unwrap(), "c:\\dir$A");
        assert_eq!(lex.process_word("\"`\"$A\"", &env).unwrap(), "\"1");
    }

    proptest::proptest! {
        #[test]
        fn expansion_never_panics(word in ".{0,40}", escape in proptest::sample::select(vec!['\\', '`'])) {
            let lex = Lexer::new(escape);
            let env = Env::from_key_values(["A=x y", "B="]);
            let _ = lex.process_word(&word, &env);
            let _ = lex.process_words(&word, &env);
        }
    }
}
