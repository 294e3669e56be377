//! The engine's view of a Dockerfile: instructions as keyword, flags and
//! arguments (exec form or shell form), with their line, and Docker's
//! shell-lexer word processing (quotes, escapes, `$VAR` expansion) the
//! dispatcher applies per instruction.
//!
//! `parse` is a small reader of the Dockerfile grammar the engine needs
//! (continuations, comments, `# escape=`, JSON forms, `--flag=value`);
//! the complete parser lives in `build::dockerfile`.

use std::collections::BTreeMap;

use super::BuildError;

/// The arguments of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// The JSON array form (`["a", "b"]`).
    Exec(Vec<String>),
    /// The rest of the line, as written (continuations joined).
    Shell(String),
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The keyword, upper case.
    pub keyword: String,
    /// `--name=value` flags (`--name` alone has an empty value).
    pub flags: Vec<(String, String)>,
    /// The arguments.
    pub args: Args,
    /// The line it starts on (1-based).
    pub line: usize,
}

impl Instruction {
    /// A flag's value.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The arguments as one string (the JSON form re-joined with spaces).
    pub fn text(&self) -> String {
        match &self.args {
            Args::Exec(words) => words.join(" "),
            Args::Shell(text) => text.clone(),
        }
    }

    /// The instruction as Docker prints it in `Step N/M : …`.
    pub fn display(&self) -> String {
        let mut out = self.keyword.clone();
        for (name, value) in &self.flags {
            out.push_str(" --");
            out.push_str(name);
            if !value.is_empty() {
                out.push('=');
                out.push_str(value);
            }
        }
        out.push(' ');
        match &self.args {
            Args::Exec(words) => {
                out.push_str(&serde_json::to_string(words).unwrap_or_default());
            }
            Args::Shell(text) => out.push_str(text),
        }
        out
    }
}

/// Keywords whose arguments may be a JSON array.
const JSON_KEYWORDS: &[&str] = &["RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"];

/// Keywords the engine knows.
const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Reads a Dockerfile into instructions.
pub fn parse(text: &str) -> Result<Vec<Instruction>, BuildError> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Parser directives: only at the very top, before any other line.
    while let Some((_, line)) = lines.peek() {
        let t = line.trim();
        let Some(rest) = t.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key == "escape" {
            let v = value.trim();
            escape = match v {
                "`" => '`',
                "\\" => '\\',
                _ => {
                    return Err(BuildError::Parse {
                        line: 1,
                        message: format!("invalid escape token '{v}' does not match ` or \\"),
                    });
                }
            };
        } else if key != "syntax" && key != "check" {
            break;
        }
        lines.next();
    }
    let mut out = Vec::new();
    while let Some((n, line)) = lines.next() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let start = n + 1;
        let mut joined = String::new();
        let mut current = line.to_string();
        loop {
            let trimmed = current.trim_end();
            if let Some(body) = trimmed.strip_suffix(escape) {
                joined.push_str(body);
                // The next non-comment line continues this one.
                let mut next = None;
                for (_, l) in lines.by_ref() {
                    let lt = l.trim_start();
                    if lt.starts_with('#') {
                        continue;
                    }
                    next = Some(l.to_string());
                    break;
                }
                match next {
                    Some(l) => current = l,
                    None => break,
                }
            } else {
                joined.push_str(&current);
                break;
            }
        }
        out.push(instruction(joined.trim(), start)?);
    }
    Ok(out)
}

fn instruction(text: &str, line: usize) -> Result<Instruction, BuildError> {
    let (keyword, rest) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    let keyword = keyword.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(BuildError::Parse {
            line,
            message: format!("unknown instruction: {keyword}"),
        });
    }
    let mut rest = rest;
    let mut flags = Vec::new();
    if keyword != "ONBUILD" {
        while let Some(after) = rest.strip_prefix("--") {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            let flag = &after[..end];
            let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
            flags.push((name.to_string(), value.to_string()));
            rest = after[end..].trim_start();
        }
    }
    let args = if JSON_KEYWORDS.contains(&keyword.as_str()) && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(words) => Args::Exec(words),
            Err(_) => Args::Shell(rest.to_string()),
        }
    } else {
        Args::Shell(rest.to_string())
    };
    Ok(Instruction {
        keyword,
        flags,
        args,
        line,
    })
}

/// Docker's shell lexer over `text`: quotes removed, escapes applied,
/// `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`
/// expanded from `env`; with `split`, unquoted whitespace separates words.
pub fn process_words(
    text: &str,
    env: &BTreeMap<String, String>,
    split: bool,
) -> Result<Vec<String>, BuildError> {
    let chars: Vec<char> = text.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() && split => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                i += 1;
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(chars[i]);
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(unterminated(text, "single"));
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(unterminated(text, "double")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                            word.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => {
                            i = expand(&chars, i, env, &mut word)?;
                        }
                        Some(&c) => {
                            word.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.get(i + 1) {
                    Some(&n) => {
                        word.push(n);
                        i += 2;
                    }
                    None => {
                        word.push('\\');
                        i += 1;
                    }
                }
            }
            '$' => {
                in_word = true;
                i = expand(&chars, i, env, &mut word)?;
            }
            c => {
                in_word = true;
                word.push(c);
                i += 1;
            }
        }
    }
    if in_word || !split {
        words.push(word);
    }
    Ok(words)
}

/// One word of `text`, processed (no splitting).
pub fn process_word(text: &str, env: &BTreeMap<String, String>) -> Result<String, BuildError> {
    Ok(process_words(text, env, false)?
        .into_iter()
        .next()
        .unwrap_or_default())
}

fn unterminated(text: &str, which: &str) -> BuildError {
    BuildError::Parse {
        line: 0,
        message: format!(
            "unexpected end of statement while looking for matching {which}-quote in {text:?}"
        ),
    }
}

/// Expands the `$` at `chars[i]` into `out`; returns the index after it.
fn expand(
    chars: &[char],
    i: usize,
    env: &BTreeMap<String, String>,
    out: &mut String,
) -> Result<usize, BuildError> {
    let mut j = i + 1;
    if chars.get(j) == Some(&'{') {
        j += 1;
        let start = j;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        let name: String = chars[start..j].iter().collect();
        let value = env.get(&name);
        match chars.get(j) {
            Some('}') => {
                out.push_str(value.map(String::as_str).unwrap_or(""));
                return Ok(j + 1);
            }
            Some(':' | '-' | '+') => {
                let colon = chars[j] == ':';
                if colon {
                    j += 1;
                }
                let op = chars.get(j).copied();
                j += 1;
                let word_start = j;
                let mut depth = 1;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(BuildError::Parse {
                        line: 0,
                        message: "missing '}' in a variable expansion".into(),
                    });
                }
                let word: String = chars[word_start..j].iter().collect();
                let word = process_word(&word, env)?;
                let set = match value {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                match op {
                    Some('-') => {
                        if set {
                            out.push_str(value.map(String::as_str).unwrap_or(""));
                        } else {
                            out.push_str(&word);
                        }
                    }
                    Some('+') => {
                        if set {
                            out.push_str(&word);
                        }
                    }
                    _ => {
                        return Err(BuildError::Parse {
                            line: 0,
                            message: format!("unsupported modifier in ${{{name}…}}"),
                        });
                    }
                }
                return Ok(j + 1);
            }
            _ => {
                return Err(BuildError::Parse {
                    line: 0,
                    message: format!("missing '}}' after ${{{name}"),
                });
            }
        }
    }
    let start = j;
    while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    if j == start {
        out.push('$');
        return Ok(j);
    }
    let name: String = chars[start..j].iter().collect();
    out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
    Ok(j)
}

/// `KEY=value KEY2="v 2"` pairs (ENV, LABEL, ARG), or the legacy
/// `KEY value` form (ENV, LABEL) when the first word has no `=`.
pub fn key_values(
    text: &str,
    env: &BTreeMap<String, String>,
    legacy: bool,
) -> Result<Vec<(String, String)>, BuildError> {
    let first = text.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let rest = text[text.find(first).unwrap_or(0) + first.len()..].trim();
        let key = process_word(first, env)?;
        let value = process_word(rest, env)?;
        return Ok(vec![(key, value)]);
    }
    let mut pairs = Vec::new();
    for word in raw_words(text) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k.to_string(), process_word(v, env)?),
            None if legacy => {
                return Err(BuildError::Parse {
                    line: 0,
                    message: format!(
                        "syntax error - can't find = in {word:?}. Must be of the form: name=value"
                    ),
                });
            }
            None => (word.clone(), String::new()),
        };
        pairs.push((process_word(&k, env)?, v));
    }
    Ok(pairs)
}

/// Words split on unquoted whitespace, quotes kept (to be processed later).
fn raw_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (_, '\\') => {
                word.push('\\');
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "1"), ("E", ""), ("P", "/app")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_follows_docker_rules() {
        let e = env();
        assert_eq!(process_word("$A", &e).unwrap(), "1");
        assert_eq!(process_word("${A}x", &e).unwrap(), "1x");
        assert_eq!(process_word("${E:-d}", &e).unwrap(), "d");
        assert_eq!(process_word("${E-d}", &e).unwrap(), "");
        assert_eq!(process_word("${N-d}", &e).unwrap(), "d");
        assert_eq!(process_word("${A:+y}", &e).unwrap(), "y");
        assert_eq!(process_word("${E:+y}", &e).unwrap(), "");
        assert_eq!(process_word("'$A'", &e).unwrap(), "$A");
        assert_eq!(process_word("\"$A b\"", &e).unwrap(), "1 b");
        assert_eq!(process_word("\\$A", &e).unwrap(), "$A");
        assert_eq!(
            process_words("a $P/b 'c d'", &e, true).unwrap(),
            ["a", "/app/b", "c d"]
        );
    }

    #[test]
    fn key_values_take_both_forms() {
        let e = env();
        assert_eq!(
            key_values("X=$A Y=\"a b\"", &e, true).unwrap(),
            [("X".into(), "1".into()), ("Y".into(), "a b".into())]
        );
        assert_eq!(
            key_values("X hello $A", &e, true).unwrap(),
            [("X".into(), "hello 1".into())]
        );
    }

    #[test]
    fn parse_joins_continuations_and_reads_json() {
        let p = parse("# escape=\\\nFROM busybox AS b\n# c\nRUN echo a \\\n  # x\n  b\nCMD [\"sh\", \"-c\"]\nCOPY --chown=1:2 a /b/\n").unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].args, Args::Shell("echo a   b".into()));
        assert_eq!(p[1].line, 4);
        assert_eq!(p[2].args, Args::Exec(vec!["sh".into(), "-c".into()]));
        assert_eq!(p[3].flag("chown"), Some("1:2"));
    }
}
