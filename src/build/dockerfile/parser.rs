//! The raw Dockerfile parser: lines into buildkit's node tree (keyword, flags,
//! arguments, original text, line range, heredocs, ONBUILD nesting), with the
//! `# escape=` and `# syntax=` directives and Docker's continuation rules.
//!
//! It follows buildkit's `frontend/dockerfile/parser` (`parser.go`,
//! `line_parsers.go`, `split_command.go`); [`Node::dump`] prints the tree in
//! the format of that package's `testfiles/*/result`. Keywords are not checked
//! here (buildkit ignores unknown ones at this stage); the typed layer
//! (`instructions.rs`) rejects them.

use std::ops::Range;
use std::sync::OnceLock;

use super::shell::{Env, Lexer};

/// One instruction as written, before any meaning is given to its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword, lower-cased (`run`, `copy`, …).
    pub keyword: String,
    /// Leading `--flag[=value]` words, as written (quotes removed).
    pub flags: Vec<String>,
    /// The arguments: JSON array items, whitespace-separated words, the raw
    /// rest of the line, or (ENV/LABEL) key, value, separator triples.
    pub args: Vec<String>,
    /// ONBUILD's instruction.
    pub inner: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// The instruction's text with continuations joined (heredoc bodies not
    /// included).
    pub original: String,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based), heredoc bodies included.
    pub end_line: usize,
    /// Byte range of the instruction in the source, heredoc bodies included.
    pub span: Range<usize>,
    /// Heredoc bodies attached to RUN, COPY and ADD (and ONBUILD of those).
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc (`<<EOF` … `EOF`) attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, quotes removed; for COPY/ADD the file name.
    pub name: String,
    /// The file descriptor it is attached to (`3<<EOF`), 0 when not given.
    pub fd: u32,
    /// Variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs were stripped from the body and the terminator.
    pub chomp: bool,
    /// The body, each line with its newline; with `chomp`, leading tabs
    /// already removed.
    pub content: String,
}

/// The parsed file: its instructions and the directives that shaped them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Every instruction, in order.
    pub nodes: Vec<Node>,
    /// The escape character (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// The `# syntax=` directive's value, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// Non-fatal remarks (empty continuation lines), as Docker prints them.
    pub warnings: Vec<String>,
}

/// A parse failure, with the lines and bytes it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError {
    /// What is wrong, in Docker's words.
    pub message: String,
    /// The line it is on (1-based; 0 when the file is empty).
    pub line: usize,
    /// The bytes to point at.
    pub span: Range<usize>,
}

impl Node {
    /// The node in the format of buildkit's `testfiles/*/result`: `(keyword
    /// ["--flag"] "arg" …)` with ONBUILD's instruction nested.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_inner())
    }

    fn dump_inner(&self) -> String {
        let mut out = self.keyword.clone();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            out.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(inner) = &self.inner {
            out.push_str(&format!(" ({})", inner.dump_inner()));
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&go_quote(arg));
        }
        out.trim().to_string()
    }
}

impl Tree {
    /// Every node dumped, one line each (the `result` file format).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&node.dump());
            out.push('\n');
        }
        out
    }
}

/// A string quoted as Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if c.is_control() || c.is_whitespace() => {
                let n = u32::from(c);
                if n < 0x80 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsSpace` for the characters Dockerfiles meet.
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    ) || c.is_whitespace()
}

/// buildkit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_word_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]`, at most `limit` pieces (Go's
/// `regexp.Split(s, n)`).
fn split_whitespace_n(s: &str, limit: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit.is_some_and(|n| out.len() + 1 >= n) {
            out.push(rest.to_string());
            return out;
        }
        match rest.find(is_word_space) {
            Some(i) => {
                out.push(rest[..i].to_string());
                let after = &rest[i..];
                let skip = after.find(|c| !is_word_space(c)).unwrap_or(after.len());
                rest = &after[skip..];
            }
            None => {
                out.push(rest.to_string());
                return out;
            }
        }
    }
}

/// Directive parsing state (`# escape=`, `# syntax=`).
struct Directives {
    escape: char,
    done: bool,
    seen_escape: bool,
    syntax: Option<String>,
}

fn directive_regex() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$",
        )
        .expect("the directive pattern is a valid regular expression")
    })
}

impl Directives {
    /// Looks for a parser directive; they count only before any instruction,
    /// comment or blank line.
    fn possible_directive(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some(caps) = directive_regex().captures(line) else {
            self.done = true;
            return Ok(());
        };
        let key = caps.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
        let value = caps.get(2).map_or("", |m| m.as_str());
        match key.as_str() {
            "escape" => {
                if self.seen_escape {
                    return Err("only one escape parser directive can be used".to_string());
                }
                self.seen_escape = true;
                match value {
                    "\\" => self.escape = '\\',
                    "`" => self.escape = '`',
                    other => {
                        return Err(format!(
                            "invalid escape token '{other}' does not match ` or \\"
                        ));
                    }
                }
            }
            "syntax" => {
                if self.syntax.is_some() {
                    return Err("only one syntax parser directive can be used".to_string());
                }
                self.syntax = Some(value.to_string());
            }
            _ => self.done = true,
        }
        Ok(())
    }

    /// Removes a trailing continuation (the escape character, then only
    /// blanks); `None` when the line does not continue. An escaped escape
    /// character (`\\` at the end) is not a continuation.
    fn trim_continuation<'a>(&self, line: &'a str) -> Option<&'a str> {
        let trimmed = line.trim_end_matches([' ', '\t']);
        let before = trimmed.strip_suffix(self.escape)?;
        if before.is_empty() || !before.ends_with(self.escape) {
            Some(before)
        } else {
            None
        }
    }
}

/// One physical line: its text without the line ending, and where it is.
struct Line<'a> {
    text: &'a str,
    /// The text with its line ending.
    raw: &'a str,
    start: usize,
}

fn split_lines(source: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < source.len() {
        let end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i + 1);
        let mut raw = &source[start..end];
        let mut at = start;
        if start == 0 {
            // A UTF-8 byte-order mark is not part of the first line.
            if let Some(r) = raw.strip_prefix('\u{feff}') {
                raw = r;
                at = '\u{feff}'.len_utf8();
            }
        }
        lines.push(Line {
            text: raw.trim_end_matches(['\r', '\n']),
            raw,
            start: at,
        });
        start = end;
    }
    lines
}

fn is_comment(text: &str) -> bool {
    text.trim_start_matches(is_space).starts_with('#')
}

/// `processLine`: strips the line ending, leading blanks (first line of an
/// instruction only) and a whole-line comment, and watches for directives.
fn process_line<'a>(
    d: &mut Directives,
    text: &'a str,
    strip_left: bool,
) -> Result<&'a str, String> {
    let token = if strip_left {
        text.trim_start_matches(is_space)
    } else {
        text
    };
    d.possible_directive(token)?;
    Ok(if token.starts_with('#') { "" } else { token })
}

/// Parses a Dockerfile into its node tree.
pub fn parse_tree(source: &str) -> Result<Tree, RawError> {
    let lines = split_lines(source);
    let mut d = Directives {
        escape: '\\',
        done: false,
        seen_escape: false,
        syntax: None,
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    let err_at = |message: String, idx: usize| -> RawError {
        let (line, span) = match lines.get(idx) {
            Some(l) => (idx + 1, l.start..l.start + l.text.len()),
            None => (idx, source.len()..source.len()),
        };
        RawError {
            message,
            line,
            span,
        }
    };
    while i < lines.len() {
        let first = i;
        let text = process_line(&mut d, lines[i].text, true).map_err(|m| err_at(m, first))?;
        i += 1;
        let (mut line, mut end_of_line) = match d.trim_continuation(text) {
            Some(t) => (t.to_string(), false),
            None => (text.to_string(), true),
        };
        if end_of_line && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end_of_line && i < lines.len() {
            let idx = i;
            let text = process_line(&mut d, lines[i].text, false).map_err(|m| err_at(m, idx))?;
            i += 1;
            if is_comment(lines[idx].text) {
                continue;
            }
            if text.trim_start_matches(is_space).is_empty() {
                empty_continuation = true;
                continue;
            }
            match d.trim_continuation(text) {
                Some(t) => line.push_str(t),
                None => {
                    line.push_str(text);
                    end_of_line = true;
                }
            }
        }
        if empty_continuation {
            warnings.push(format!(
                "[WARNING]: Empty continuation line found in:\n    {line}"
            ));
        }
        let node_span = |last: usize| -> Range<usize> {
            let start = lines[first].start;
            let end = lines
                .get(last)
                .map_or(source.len(), |l| l.start + l.text.len());
            start..end
        };
        let mut node = node_from_line(&line, &d, false).map_err(|message| RawError {
            message,
            line: first + 1,
            span: node_span(i.saturating_sub(1)),
        })?;
        if can_contain_heredoc(&node) {
            let docs = heredocs_from_line(&line);
            for mut doc in docs {
                let mut terminated = false;
                while i < lines.len() {
                    let l = &lines[i];
                    i += 1;
                    let candidate = if doc.chomp {
                        l.text.trim_start_matches('\t')
                    } else {
                        l.text
                    };
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(l.raw);
                }
                if !terminated {
                    return Err(RawError {
                        message: "unterminated heredoc".to_string(),
                        line: first + 1,
                        span: node_span(i.saturating_sub(1)),
                    });
                }
                if doc.chomp {
                    doc.content = chomp_heredoc(&doc.content);
                }
                node.heredocs.push(doc);
            }
        }
        node.start_line = first + 1;
        node.end_line = i;
        node.span = node_span(i - 1);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(RawError {
            message: "file with no instructions".to_string(),
            line: lines.len(),
            span: 0..source.len(),
        });
    }
    if !warnings.is_empty() {
        warnings.push(
            "[WARNING]: Empty continuation lines will become errors in a future release."
                .to_string(),
        );
    }
    Ok(Tree {
        nodes,
        escape: d.escape,
        syntax: d.syntax,
        warnings,
    })
}

/// Removes leading tabs from every line (`<<-`).
fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.keyword[..], &node.inner) {
        ("onbuild", Some(inner)) => inner,
        _ => node,
    };
    matches!(&node.keyword[..], "run" | "copy" | "add") && !node.json
}

/// The heredocs a line opens: words like `<<EOF`, `<<-EOF`, `3<<"EOF"`.
fn heredocs_from_line(line: &str) -> Vec<Heredoc> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset = true;
    let Ok(words) = lex.process_words(line, &Env::new()) else {
        return Vec::new();
    };
    let mut docs = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // `<< EOF` and `<<- EOF`: the operator and the delimiter may be
        // separate words.
        let operator_only = words[i]
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .strip_prefix("<<")
            .is_some_and(|rest| rest.is_empty() || rest == "-");
        let doc = if operator_only && i + 1 < words.len() {
            i += 1;
            parse_heredoc(&format!("{} {}", words[i - 1], words[i]))
        } else {
            parse_heredoc(&words[i])
        };
        docs.extend(doc);
        i += 1;
    }
    docs
}

/// A heredoc opener (`^(\d*)<<(-?)\s*([^<]*)$`), or `None` when `word` is not one.
pub fn parse_heredoc(word: &str) -> Option<Heredoc> {
    let digits = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // `\s*` between the operator and the delimiter, as Go's `\s`.
    let rest = rest.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = word[..digits].parse::<u32>().unwrap_or(0);
    let mut lex = Lexer::new('\\');
    lex.skip_unset = true;
    let words = lex.process_words(rest, &Env::new()).ok()?;
    let [name] = words.as_slice() else {
        return None;
    };
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &Env::new()).ok()?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    // A quote that disappears when quotes are processed means part of the
    // delimiter was quoted: the body is then taken literally.
    let expand = raw.len() == 1 && quotes(name) == quotes(&raw[0]);
    Some(Heredoc {
        name: name.clone(),
        fd,
        expand,
        chomp,
        content: String::new(),
    })
}

/// `newNodeFromLine`: splits off the keyword and flags and parses the rest
/// by the keyword's rules. `nested` is set for ONBUILD's instruction.
fn node_from_line(line: &str, d: &Directives, nested: bool) -> Result<Node, String> {
    let trimmed = line.trim_matches(is_space);
    let mut parts = split_whitespace_n(trimmed, Some(2)).into_iter();
    let keyword = parts.next().unwrap_or_default().to_lowercase();
    let (flags, rest) = match parts.next() {
        Some(rest) => {
            let (rest, flags) = extract_flags(&rest);
            (flags, rest.trim_matches(is_space).to_string())
        }
        None => (Vec::new(), String::new()),
    };
    let mut node = Node {
        keyword,
        flags,
        args: Vec::new(),
        inner: None,
        json: false,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        span: 0..0,
        heredocs: Vec::new(),
    };
    match node.keyword.as_str() {
        "add" | "copy" | "volume" => {
            (node.args, node.json) = parse_maybe_json_to_list(&rest)?;
        }
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = parse_maybe_json(&rest)?;
        }
        "arg" => node.args = parse_words(&rest, d.escape),
        "env" => node.args = parse_name_val(&rest, "ENV", d.escape)?,
        "label" => node.args = parse_name_val(&rest, "LABEL", d.escape)?,
        "expose" | "from" => node.args = parse_whitespace_delimited(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args = vec![rest];
            }
        }
        "healthcheck" => (node.args, node.json) = parse_health(&rest)?,
        "onbuild" => {
            // Docker refuses chained triggers later anyway; refusing them
            // here bounds the recursion on hostile input.
            if nested {
                return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string());
            }
            if !rest.is_empty() {
                node.inner = Some(Box::new(node_from_line(&rest, d, true)?));
            }
        }
        // Unknown keywords keep one empty argument, as buildkit's parseIgnore.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// `extractBuilderFlags`: leading `--name[=value]` words (quotes and `\`
/// escapes processed) until a word that does not start with `--`, or `--`.
/// Returns the rest of the line and the flags.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        let (pos, ch) = chars.get(k).copied().unwrap_or((line.len(), '\0'));
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                k += 1;
                continue;
            }
            let next_is_dash = chars.get(k + 1).is_some_and(|&(_, c)| c == '-');
            if ch != '-' || !next_is_dash {
                return (line[pos..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[pos..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            if ch == '\\' {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                word.push(chars[k].1);
                k += 1;
                continue;
            }
            word.push(ch);
            k += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        if ch == '\\' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            word.push(chars[k].1);
            k += 1;
            continue;
        }
        word.push(ch);
        k += 1;
    }
    (String::new(), words)
}

/// `parseWords`: whitespace-separated words, quotes and escapes kept as
/// written (they are removed later by word expansion).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        let mut ch = chars.get(k).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                k += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if k + 1 == chars.len() {
                    k += 1;
                    continue; // an escape at the very end is dropped
                }
                // Unquoted, the escape and the next character are both kept,
                // even when that character is a quote.
                word.push(ch);
                k += 1;
                ch = chars[k];
            }
            word.push(ch);
            k += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        // The escape is special except inside single quotes.
        if ch == escape && quote != '\'' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            word.push(ch);
            ch = chars[k];
        }
        word.push(ch);
        k += 1;
    }
    words
}

/// `parseNameVal` (ENV, LABEL): `KEY value` (legacy, one pair) or
/// `KEY=value …`; returned as key, value, separator triples.
fn parse_name_val(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let parts = split_whitespace_n(rest, Some(2));
        let [key, value] = parts.as_slice() else {
            return Err(format!("{keyword} must have two arguments"));
        };
        return Ok(vec![key.clone(), value.clone(), String::new()]);
    }
    let mut out = Vec::new();
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(word)
            ));
        };
        out.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(out)
}

fn parse_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_whitespace_n(rest, None)
}

enum JsonOutcome {
    Array(Vec<String>),
    NotJson,
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_json(rest: &str) -> Result<JsonOutcome, String> {
    let rest = rest.trim_start_matches(is_space);
    if !rest.starts_with('[') {
        return Ok(JsonOutcome::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(JsonOutcome::NotJson);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(NOT_STRING_ARRAY.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(JsonOutcome::Array)
}

/// `parseMaybeJSON`: a JSON array of strings, or the raw rest as one argument.
fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        JsonOutcome::Array(items) => Ok((items, true)),
        JsonOutcome::NotJson => Ok((vec![rest.to_string()], false)),
    }
}

/// `parseMaybeJSONToList`: a JSON array of strings, or whitespace-separated
/// words.
fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest)? {
        JsonOutcome::Array(items) => Ok((items, true)),
        JsonOutcome::NotJson => Ok((parse_whitespace_delimited(rest), false)),
    }
}

/// `parseHealthConfig`: the type word (`CMD`, `NONE`, …) then a command as
/// in `parseMaybeJSON`.
fn parse_health(rest: &str) -> Result<(Vec<String>, bool), String> {
    let sep = rest.find(is_space).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let after = rest[sep..].trim_start_matches(is_space);
    let (mut cmd, json) = parse_maybe_json(after)?;
    let mut args = vec![rest[..sep].to_string()];
    args.append(&mut cmd);
    Ok((args, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfile-parser")
    }

    #[test]
    fn buildkit_corpus_parses_to_the_expected_trees() {
        let mut dirs: Vec<_> = std::fs::read_dir(fixtures().join("testfiles"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        assert_eq!(dirs.len(), 33);
        let mut failures = Vec::new();
        for dir in &dirs {
            let source = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
            let expected = std::fs::read_to_string(dir.join("result")).unwrap();
            match parse_tree(&source) {
                Ok(tree) if tree.dump() == expected => {}
                Ok(tree) => failures.push(format!(
                    "{}:\n--- expected\n{expected}--- got\n{}",
                    dir.display(),
                    tree.dump()
                )),
                Err(e) => failures.push(format!("{}: {e:?}", dir.display())),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn buildkit_negative_cases_are_rejected_with_a_message() {
        let mut dirs: Vec<_> = std::fs::read_dir(fixtures().join("testfiles-negative"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        assert_eq!(dirs.len(), 4);
        for dir in &dirs {
            let source = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
            let err = parse_tree(&source).expect_err(&dir.display().to_string());
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn buildkit_heredoc_cases_extract_the_same_heredocs() {
        let source = std::fs::read_to_string(fixtures().join("heredoc/Dockerfile")).unwrap();
        let tree = parse_tree(&source).unwrap();
        // (name, fd, expand, chomp, content) per instruction after FROM, as
        // buildkit's TestParseExtractsHeredoc expects (content chomped here).
        type Doc = (&'static str, u32, bool, bool, &'static str);
        let d = |name, content| (name, 0, true, false, content);
        let expected: Vec<Vec<Doc>> = vec![
            vec![], // ENV
            vec![], // RUN ls
            vec![], // USER <<INVALID
            vec![], // INVALID
            vec![d("EMPTY", "")],
            vec![("EMPTY2", 3, true, false, "")],
            vec![], // RUN "<<NOHEREDOC"
            vec![d("INDENT", "\tfoo\n\tbar\n")],
            vec![("UNINDENT", 0, true, true, "baz\nquux\n")],
            vec![("UNINDENT2", 0, true, true, "baz\nquux\n")],
            vec![("EXPAND", 0, true, true, "expand $NAME\n")],
            vec![("NOEXPAND", 0, false, true, "don't expand $NAME\n")],
            vec![d("COPY", "echo hello world\necho foo bar\n")],
            vec![d(
                "COMMENT",
                "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            )],
            vec![d("MOUNT", "echo hello\n")],
            vec![d("FILE1", "content 1\n"), d("FILE2", "content 2\n")],
            vec![d("EOF", "\"foo\"\n'bar'\n")],
            vec![d("X", "Y\n"), d("Y", "X\n")],
            vec![d("COMPLEX", "print('hello world')\n")],
            vec![d("file.txt", "hello world\n")],
            vec![("eof", 0, false, false, "echo foo\n")],
            vec![d("eo'f", "echo foo\n")],
            vec![("eo'f", 0, false, false, "echo foo\n")],
            vec![("one two", 0, false, false, "echo bar\n")],
            vec![d("$EOF", "")],
            vec![d("EOF", "")],
            vec![d("EOF", "")],
        ];
        assert_eq!(tree.nodes.len(), expected.len() + 1);
        for (node, want) in tree.nodes[1..].iter().zip(&expected) {
            let got: Vec<(String, u32, bool, bool, String)> = node
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.fd, h.expand, h.chomp, h.content.clone()))
                .collect();
            let want: Vec<(String, u32, bool, bool, String)> = want
                .iter()
                .map(|&(n, fd, e, c, t)| (n.to_string(), fd, e, c, t.to_string()))
                .collect();
            assert_eq!(got, want, "{}", node.original);
        }
    }

    #[test]
    fn json_form_never_has_heredocs() {
        let tree = parse_tree("FROM a\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n").unwrap();
        assert!(tree.nodes.iter().all(|n| n.heredocs.is_empty()));
    }

    #[test]
    fn heredoc_openers_follow_buildkit() {
        for valid in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(
                parse_heredoc(valid).map(|h| h.name),
                Some("EOF".to_string()),
                "{valid}"
            );
        }
        for not in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(not), None, "{not}");
        }
        let names = |line: &str| -> Vec<String> {
            heredocs_from_line(line)
                .into_iter()
                .map(|h| h.name)
                .collect()
        };
        assert_eq!(names("RUN <<- EOF"), ["EOF"]);
        assert_eq!(names("RUN << -EOF"), ["-EOF"]);
        assert_eq!(names("RUN 4<<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
    }

    #[test]
    fn line_numbers_match_buildkit() {
        let source = std::fs::read_to_string(fixtures().join("testfile-line/Dockerfile")).unwrap();
        let tree = parse_tree(&source).unwrap();
        let lines: Vec<(usize, usize)> = tree
            .nodes
            .iter()
            .map(|n| (n.start_line, n.end_line))
            .collect();
        assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
    }
}
