//! `--format`: the subset of Go's `text/template` that Docker's `--format`
//! flags are written in, evaluated over JSON values.
//!
//! Supported: text and actions with `{{-`/`-}}` trimming and `{{/* */}}`
//! comments; pipelines (`a | b`) and parenthesized ones; fields (`.Name`,
//! `.State.Status`, `$.Name`, `$var.Field`), `.`, `$`; variables declared
//! with `:=` (also in `range $i, $e := …`) and assigned with `=`; string,
//! raw string, number, `true`/`false` and `nil` literals; `if`/`else
//! if`/`else`, `range`/`else` and `with`/`else` blocks. Functions: Go's
//! `and`, `or`, `not`, `len`, `index`, `print`, `printf`, `println`, `eq`,
//! `ne`, `lt`, `le`, `gt`, `ge`, and Docker's `json`, `join`, `split`,
//! `title`, `lower`, `upper`, `pad`, `truncate`. A field that the data does
//! not have may be a method ([`Methods`]), e.g. `ps`'s `{{.Label "k"}}`.
//!
//! Values print as Go prints the `interface{}` values that JSON decodes to:
//! `map[k:v]`, `[a b]`, `<nil>` for null and `<no value>` for a missing
//! key; `index` of a missing key is an empty string, as on the typed
//! string maps (labels, options) Docker's templates index. A format starting with `table` prints a header line (the template
//! evaluated over the field → title map) and aligns cells on `\t` the way
//! Go's `tabwriter` does for Docker (minimum width 10, padding 3). As in
//! docker/cli, `\t` and `\n` written as two characters become a tab and a
//! newline.
//!
//! A bad template is an error, at parse time where Go finds it then
//! (unknown function, unbalanced blocks, bad syntax) and at run time
//! otherwise; nothing here panics on user input.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Number, Value};

/// Why a format could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The format does not parse.
    #[error("template parsing error: {message} (at byte {offset})")]
    Parse {
        /// What is wrong.
        message: String,
        /// Where, in bytes from the start of the format.
        offset: usize,
    },
    /// The format parsed but could not be applied to the data.
    #[error("template: executing: {0}")]
    Exec(String),
}

/// Methods a format may call on the data besides its fields: `name`, the
/// receiver (the value the field chain stopped at) and the arguments.
/// `None` means "no such method".
pub type Methods<'a> = dyn Fn(&str, &Value, &[Value]) -> Option<Result<Value, String>> + 'a;

/// No methods.
pub fn no_methods(_: &str, _: &Value, _: &[Value]) -> Option<Result<Value, String>> {
    None
}

/// A parsed `--format`.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    table: bool,
}

const FUNCTIONS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt",
    "ge", "json", "join", "split", "title", "lower", "upper", "pad", "truncate",
];

impl Template {
    /// Parses a format as given on the command line: an optional `table`
    /// prefix, then the template, with `\t` and `\n` escapes replaced.
    pub fn parse(format: &str) -> Result<Self, TemplateError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, format),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let tokens = lex(&body)?;
        let mut parser = Parser { tokens, pos: 0 };
        let (nodes, end) = parser.list()?;
        if let Some(end) = end {
            return Err(TemplateError::Parse {
                message: format!("unexpected {{{{{end}}}}}"),
                offset: parser.offset(),
            });
        }
        Ok(Self { nodes, table })
    }

    /// Whether the format started with `table`.
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Whether the template is empty (`table` alone asks for the default
    /// columns).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Applies the template to `data`.
    pub fn render(&self, data: &Value, methods: &Methods<'_>) -> Result<String, TemplateError> {
        let mut exec = Exec {
            methods,
            vars: vec![("$".to_string(), data.clone())],
            header: false,
            out: String::new(),
        };
        exec.walk(&self.nodes, &Val::Json(data.clone()))?;
        Ok(exec.out)
    }

    /// The header line of a table: the template applied to `titles` (field
    /// name → column title), where the formatting functions return their
    /// argument unchanged, as docker/cli's `HeaderFunctions` do.
    pub fn render_header(&self, titles: &Value) -> Result<String, TemplateError> {
        let header_methods =
            |name: &str, _: &Value, _: &[Value]| -> Option<Result<Value, String>> {
                Some(Ok(Value::String(name.to_ascii_uppercase())))
            };
        let mut exec = Exec {
            methods: &header_methods,
            vars: vec![("$".to_string(), titles.clone())],
            header: true,
            out: String::new(),
        };
        exec.walk(&self.nodes, &Val::Json(titles.clone()))?;
        Ok(exec.out)
    }
}

/// Formats `rows` with `format` the way docker/cli's formatter does: one
/// rendering per row, each followed by a newline; for a `table` format a
/// header first (from `titles`) and the cells aligned on tabs. A `table`
/// format with nothing after it uses `default_table`.
pub fn format_rows(
    format: &str,
    default_table: &str,
    rows: &[Value],
    titles: &Value,
    methods: &Methods<'_>,
) -> Result<String, TemplateError> {
    let mut template = Template::parse(format)?;
    if template.is_table() && template.is_empty() {
        template = Template::parse(default_table)?;
    }
    let mut out = String::new();
    if template.is_table() {
        out.push_str(&template.render_header(titles)?);
        out.push('\n');
    }
    for row in rows {
        out.push_str(&template.render(row, methods)?);
        out.push('\n');
    }
    Ok(if template.is_table() {
        tabwrite(&out)
    } else {
        out
    })
}

/// Go's `text/tabwriter` as docker/cli configures it (`minwidth` 10,
/// `tabwidth` 1, `padding` 3, spaces, no flags): cells are terminated by
/// tabs; a column block is a run of consecutive lines that have a cell in
/// that column, and is as wide as its widest cell plus the padding (at
/// least 10). The last cell of a line is not padded.
pub fn tabwrite(text: &str) -> String {
    tabwrite_min(text, 10)
}

/// [`tabwrite`] with another minimum cell width (docker/cli's `top` uses
/// 20).
pub fn tabwrite_min(text: &str, min_width: usize) -> String {
    const PADDING: usize = 3;
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    let mut out = String::new();
    fn write_lines(
        out: &mut String,
        lines: &[Vec<&str>],
        widths: &[usize],
        from: usize,
        to: usize,
    ) {
        for (i, line) in lines.iter().enumerate().take(to).skip(from) {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if j + 1 < line.len() {
                    let width = widths.get(j).copied().unwrap_or(0);
                    let have = cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', width.saturating_sub(have)));
                }
            }
            if i + 1 < lines.len() {
                out.push('\n');
            }
        }
    }
    fn format(
        out: &mut String,
        lines: &[Vec<&str>],
        widths: &mut Vec<usize>,
        min_width: usize,
        mut line0: usize,
        line1: usize,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            write_lines(out, lines, widths, line0, this);
            line0 = this;
            let mut width = min_width;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + PADDING);
                this += 1;
            }
            widths.push(width);
            format(out, lines, widths, min_width, line0, this);
            widths.pop();
            line0 = this;
        }
        write_lines(out, lines, widths, line0, line1);
    }
    format(&mut out, &lines, &mut widths, min_width, 0, lines.len());
    out
}

// ---------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    /// `{{`, with the position of the action.
    Open,
    Close,
    Ident(String),
    /// `.A.B` (a chain; `.` alone is an empty chain).
    Field(Vec<String>),
    /// `$x` with an optional field chain (`$x.A`); `$` alone is `"$"`.
    Var(String, Vec<String>),
    Str(String),
    Num(Number),
    Pipe,
    LParen,
    /// `)` and the fields chained after it (`(…).A`).
    RParen(Vec<String>),
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
}

fn parse_error(message: impl Into<String>, offset: usize) -> TemplateError {
    TemplateError::Parse {
        message: message.into(),
        offset,
    }
}

fn lex(src: &str) -> Result<Vec<Token>, TemplateError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut trim_next_text = false;
    while i < bytes.len() {
        let open = src[i..].find("{{").map(|p| p + i);
        let text_end = open.unwrap_or(bytes.len());
        let mut text = &src[i..text_end];
        if trim_next_text {
            text = text.trim_start_matches([' ', '\t', '\r', '\n']);
        }
        let Some(open) = open else {
            if !text.is_empty() {
                tokens.push(Token {
                    tok: Tok::Text(text.to_string()),
                    offset: i,
                });
            }
            break;
        };
        // `{{- ` trims the text before the action.
        let trim_left = src[open + 2..].starts_with('-')
            && src[open + 3..].starts_with([' ', '\t', '\r', '\n']);
        if trim_left {
            text = text.trim_end_matches([' ', '\t', '\r', '\n']);
        }
        if !text.is_empty() {
            tokens.push(Token {
                tok: Tok::Text(text.to_string()),
                offset: i,
            });
        }
        let mut j = open + 2 + if trim_left { 2 } else { 0 };
        // Comments.
        let rest = src[j..].trim_start();
        if rest.starts_with("/*") {
            let start = src.len() - rest.len();
            let Some(end) = src[start..].find("*/") else {
                return Err(parse_error("unclosed comment", open));
            };
            let mut k = start + end + 2;
            let after = &src[k..];
            let trimmed = after.trim_start();
            let (close, trim_right) = if let Some(r) = trimmed.strip_prefix("-}}") {
                (src.len() - r.len(), true)
            } else if let Some(r) = trimmed.strip_prefix("}}") {
                (src.len() - r.len(), false)
            } else {
                return Err(parse_error("comment ends before closing delimiter", k));
            };
            k = close;
            trim_next_text = trim_right;
            i = k;
            continue;
        }
        tokens.push(Token {
            tok: Tok::Open,
            offset: open,
        });
        // The action's tokens.
        loop {
            while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\r' | b'\n') {
                j += 1;
            }
            if j >= bytes.len() {
                return Err(parse_error("unclosed action", open));
            }
            if src[j..].starts_with("-}}")
                && j > 0
                && matches!(bytes[j - 1], b' ' | b'\t' | b'\r' | b'\n')
            {
                tokens.push(Token {
                    tok: Tok::Close,
                    offset: j,
                });
                j += 3;
                trim_next_text = true;
                break;
            }
            if src[j..].starts_with("}}") {
                tokens.push(Token {
                    tok: Tok::Close,
                    offset: j,
                });
                j += 2;
                trim_next_text = false;
                break;
            }
            let start = j;
            let c = bytes[j];
            let tok = match c {
                b'|' => {
                    j += 1;
                    Tok::Pipe
                }
                b'(' => {
                    j += 1;
                    Tok::LParen
                }
                b')' => {
                    j += 1;
                    let (chain, next) = field_chain(src, j);
                    j = next;
                    Tok::RParen(chain)
                }
                b',' => {
                    j += 1;
                    Tok::Comma
                }
                b':' if src[j..].starts_with(":=") => {
                    j += 2;
                    Tok::Declare
                }
                b'=' => {
                    j += 1;
                    Tok::Assign
                }
                b'"' => {
                    let (s, next) = quoted(src, j)?;
                    j = next;
                    Tok::Str(s)
                }
                b'`' => {
                    let Some(end) = src[j + 1..].find('`') else {
                        return Err(parse_error("unterminated raw quoted string", j));
                    };
                    let s = src[j + 1..j + 1 + end].to_string();
                    j = j + 2 + end;
                    Tok::Str(s)
                }
                b'.' => {
                    let (chain, next) = field_chain(src, j);
                    if chain.is_empty() && next == j {
                        // `.` alone.
                        j += 1;
                        Tok::Field(Vec::new())
                    } else {
                        j = next;
                        Tok::Field(chain)
                    }
                }
                b'$' => {
                    j += 1;
                    let name_end = ident_end(src, j);
                    let name = format!("${}", &src[j..name_end]);
                    j = name_end;
                    let (chain, next) = field_chain(src, j);
                    j = next;
                    Tok::Var(name, chain)
                }
                b'-' | b'+' | b'0'..=b'9' => {
                    let end = src[j + 1..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_'))
                        .map_or(src.len(), |p| p + j + 1);
                    let text = &src[j..end];
                    let num = parse_number(text)
                        .ok_or_else(|| parse_error(format!("bad number syntax: {text:?}"), j))?;
                    j = end;
                    Tok::Num(num)
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let end = ident_end(src, j);
                    let word = &src[j..end];
                    j = end;
                    Tok::Ident(word.to_string())
                }
                _ => {
                    let ch = src[j..].chars().next().unwrap_or('?');
                    return Err(parse_error(format!("unexpected {ch:?} in command"), j));
                }
            };
            tokens.push(Token { tok, offset: start });
        }
        i = j;
    }
    Ok(tokens)
}

fn ident_end(src: &str, from: usize) -> usize {
    src[from..]
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map_or(src.len(), |p| p + from)
}

/// `.A.B.C` from `from` (which points at a `.`): the names and the end.
fn field_chain(src: &str, mut from: usize) -> (Vec<String>, usize) {
    let mut chain = Vec::new();
    while src[from..].starts_with('.') {
        let end = ident_end(src, from + 1);
        if end == from + 1 {
            break;
        }
        chain.push(src[from + 1..end].to_string());
        from = end;
    }
    (chain, from)
}

/// A Go interpreted string literal starting at `from`.
fn quoted(src: &str, from: usize) -> Result<(String, usize), TemplateError> {
    let mut out = String::new();
    let mut chars = src[from + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, from + 1 + k + 1)),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('\'') => out.push('\''),
                Some('0') => out.push('\0'),
                Some(other) => {
                    return Err(parse_error(
                        format!("unknown escape \\{other}"),
                        from + 1 + k,
                    ));
                }
                None => break,
            },
            '\n' => break,
            c => out.push(c),
        }
    }
    Err(parse_error("unterminated quoted string", from))
}

fn parse_number(text: &str) -> Option<Number> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Number::from(i));
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Some(Number::from(i));
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        pipe: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`) with the result.
    vars: Vec<String>,
    declare: bool,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Paren(Box<Pipeline>, Vec<String>),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// How a list of nodes ended: `{{end}}`, `{{else}}` or `{{else if …}}`.
#[derive(Debug)]
enum End {
    Done,
    Else,
    ElseIf(Pipeline),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Done => "end",
            End::Else | End::ElseIf(_) => "else",
        })
    }
}

impl Parser {
    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos.min(self.tokens.len().saturating_sub(1)))
            .map_or(0, |t| t.offset)
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn expect_close(&mut self) -> Result<(), TemplateError> {
        match self.next() {
            Some(Tok::Close) => Ok(()),
            _ => Err(parse_error("expected }}", self.offset())),
        }
    }

    /// Nodes up to the end of input or an `end`/`else` action.
    fn list(&mut self) -> Result<(Vec<Node>, Option<End>), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(tok) = self.next() {
            match tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::Open => {
                    if let Some(Tok::Ident(word)) = self.peek().cloned() {
                        match word.as_str() {
                            "end" => {
                                self.pos += 1;
                                self.expect_close()?;
                                return Ok((nodes, Some(End::Done)));
                            }
                            "else" => {
                                self.pos += 1;
                                if matches!(self.peek(), Some(Tok::Ident(w)) if w == "if") {
                                    self.pos += 1;
                                    let pipe = self.pipeline(true)?;
                                    self.expect_close()?;
                                    return Ok((nodes, Some(End::ElseIf(pipe))));
                                }
                                self.expect_close()?;
                                return Ok((nodes, Some(End::Else)));
                            }
                            "if" | "range" | "with" => {
                                self.pos += 1;
                                nodes.push(self.block(&word)?);
                                continue;
                            }
                            "define" | "template" | "block" | "break" | "continue" => {
                                return Err(parse_error(
                                    format!("{{{{{word}}}}} is not supported"),
                                    self.offset(),
                                ));
                            }
                            _ => {}
                        }
                    }
                    let pipe = self.pipeline(true)?;
                    self.expect_close()?;
                    nodes.push(Node::Action(pipe));
                }
                _ => return Err(parse_error("unexpected token", self.offset())),
            }
        }
        Ok((nodes, None))
    }

    fn block(&mut self, word: &str) -> Result<Node, TemplateError> {
        let pipe = self.pipeline(true)?;
        self.expect_close()?;
        let (body, end) = self.list()?;
        let otherwise = match end {
            Some(End::Done) => Vec::new(),
            Some(End::Else) => {
                let (otherwise, end) = self.list()?;
                match end {
                    Some(End::Done) => otherwise,
                    _ => {
                        return Err(parse_error(
                            format!("missing {{{{end}}}} for {{{{{word}}}}}"),
                            self.offset(),
                        ));
                    }
                }
            }
            Some(End::ElseIf(cond)) if word == "if" => {
                // `{{else if c}}` is `{{else}}{{if c}}…{{end}}` sharing the `end`.
                let nested = self.else_if(cond)?;
                vec![nested]
            }
            _ => {
                return Err(parse_error(
                    format!("missing {{{{end}}}} for {{{{{word}}}}}"),
                    self.offset(),
                ));
            }
        };
        Ok(match word {
            "if" => Node::If {
                pipe,
                then: body,
                otherwise,
            },
            "range" => Node::Range {
                pipe,
                body,
                otherwise,
            },
            _ => Node::With {
                pipe,
                body,
                otherwise,
            },
        })
    }

    fn else_if(&mut self, pipe: Pipeline) -> Result<Node, TemplateError> {
        let (then, end) = self.list()?;
        let otherwise = match end {
            Some(End::Done) => Vec::new(),
            Some(End::Else) => match self.list()? {
                (o, Some(End::Done)) => o,
                _ => return Err(parse_error("missing {{end}} for {{if}}", self.offset())),
            },
            Some(End::ElseIf(cond)) => vec![self.else_if(cond)?],
            None => return Err(parse_error("missing {{end}} for {{if}}", self.offset())),
        };
        Ok(Node::If {
            pipe,
            then,
            otherwise,
        })
    }

    /// A pipeline up to `}}` or `)`, with an optional declaration.
    fn pipeline(&mut self, allow_decl: bool) -> Result<Pipeline, TemplateError> {
        let mut vars = Vec::new();
        let mut declare = false;
        if allow_decl {
            // `$a :=`, `$a, $b :=` or `$a =`.
            let save = self.pos;
            let mut names = Vec::new();
            loop {
                match self.peek().cloned() {
                    Some(Tok::Var(name, chain)) if chain.is_empty() => {
                        self.pos += 1;
                        names.push(name);
                        match self.peek() {
                            Some(Tok::Comma) => {
                                self.pos += 1;
                                continue;
                            }
                            Some(Tok::Declare) => {
                                self.pos += 1;
                                declare = true;
                                vars = names;
                            }
                            Some(Tok::Assign) => {
                                self.pos += 1;
                                vars = names;
                            }
                            _ => self.pos = save,
                        }
                        break;
                    }
                    _ => break,
                }
            }
            if vars.len() > 2 {
                return Err(parse_error("too many declarations", self.offset()));
            }
        }
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            loop {
                match self.peek().cloned() {
                    Some(Tok::Close | Tok::Pipe | Tok::RParen(_)) | None => break,
                    Some(tok) => {
                        self.pos += 1;
                        args.push(self.operand(tok)?);
                    }
                }
            }
            if args.is_empty() {
                return Err(parse_error("missing value for command", self.offset()));
            }
            cmds.push(Command { args });
            if matches!(self.peek(), Some(Tok::Pipe)) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline {
            vars,
            declare,
            cmds,
        })
    }

    fn operand(&mut self, tok: Tok) -> Result<Arg, TemplateError> {
        Ok(match tok {
            Tok::Field(chain) => Arg::Field(chain),
            Tok::Var(name, chain) => Arg::Var(name, chain),
            Tok::Str(s) => Arg::Lit(Value::String(s)),
            Tok::Num(n) => Arg::Lit(Value::Number(n)),
            Tok::Ident(word) => match word.as_str() {
                "true" => Arg::Lit(Value::Bool(true)),
                "false" => Arg::Lit(Value::Bool(false)),
                "nil" => Arg::Lit(Value::Null),
                w if FUNCTIONS.contains(&w) => Arg::Func(word),
                _ => {
                    return Err(parse_error(
                        format!("function {word:?} not defined"),
                        self.offset(),
                    ));
                }
            },
            Tok::LParen => {
                let inner = self.pipeline(false)?;
                match self.next() {
                    Some(Tok::RParen(chain)) => Arg::Paren(Box::new(inner), chain),
                    _ => return Err(parse_error("unclosed left paren", self.offset())),
                }
            }
            _ => return Err(parse_error("unexpected token in operand", self.offset())),
        })
    }
}

// ---------------------------------------------------------------- execution

/// A value during execution: JSON, or Go's "no value" (a missing key).
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Json(Value),
    Missing,
}

impl Val {
    fn json(&self) -> Value {
        match self {
            Val::Json(v) => v.clone(),
            Val::Missing => Value::Null,
        }
    }

    fn truth(&self) -> bool {
        match self {
            Val::Missing => false,
            Val::Json(v) => truth(v),
        }
    }
}

fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

struct Exec<'m, 'a> {
    methods: &'m Methods<'a>,
    vars: Vec<(String, Value)>,
    header: bool,
    out: String,
}

fn exec_error(message: impl Into<String>) -> TemplateError {
    TemplateError::Exec(message.into())
}

impl Exec<'_, '_> {
    fn walk(&mut self, nodes: &[Node], dot: &Val) -> Result<(), TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipeline(pipe, dot)?;
                    if pipe.vars.is_empty() {
                        self.out.push_str(&print_val(&v));
                    }
                }
                Node::If {
                    pipe,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let branch = if v.truth() { then } else { otherwise };
                    self.walk(branch, dot)?;
                    self.vars.truncate(mark);
                }
                Node::With {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    if v.truth() {
                        self.walk(body, &v)?;
                    } else {
                        self.walk(otherwise, dot)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => self.range(pipe, body, otherwise, dot)?,
            }
        }
        Ok(())
    }

    fn range(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Val,
    ) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        // The variables get each key and element, not the whole value.
        let plain = Pipeline {
            vars: Vec::new(),
            declare: false,
            cmds: pipe.cmds.clone(),
        };
        let v = self.pipeline(&plain, dot)?;
        let items: Vec<(Value, Value)> = match v.json() {
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, e)| (Value::from(i), e))
                .collect(),
            Value::Object(o) => o.into_iter().map(|(k, e)| (Value::String(k), e)).collect(),
            Value::Null => Vec::new(),
            Value::Number(n) => {
                let count = n
                    .as_u64()
                    .ok_or_else(|| exec_error(format!("range can't iterate over {n}")))?;
                (0..count)
                    .map(|i| (Value::from(i), Value::from(i)))
                    .collect()
            }
            other => {
                return Err(exec_error(format!(
                    "range can't iterate over {}",
                    print_json(&other)
                )));
            }
        };
        if items.is_empty() {
            self.walk(otherwise, dot)?;
            return Ok(());
        }
        for (key, item) in items {
            let inner = self.vars.len();
            match pipe.vars.as_slice() {
                [] => {}
                [one] => self.set_var(one, item.clone(), pipe.declare)?,
                [k, e, ..] => {
                    self.set_var(k, key, pipe.declare)?;
                    self.set_var(e, item.clone(), pipe.declare)?;
                }
            }
            self.walk(body, &Val::Json(item))?;
            self.vars.truncate(inner.max(mark));
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn set_var(&mut self, name: &str, value: Value, declare: bool) -> Result<(), TemplateError> {
        if declare {
            self.vars.push((name.to_string(), value));
            return Ok(());
        }
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => Err(exec_error(format!("undefined variable: {name}"))),
        }
    }

    fn var(&self, name: &str) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| exec_error(format!("undefined variable: {name}")))
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Val) -> Result<Val, TemplateError> {
        let mut value: Option<Val> = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(cmd, dot, value)?);
        }
        let value = value.unwrap_or(Val::Missing);
        match pipe.vars.as_slice() {
            [] => {}
            [name] => self.set_var(name, value.json(), pipe.declare)?,
            _ => return Err(exec_error("too many variables in declaration")),
        }
        Ok(value)
    }

    fn command(
        &mut self,
        cmd: &Command,
        dot: &Val,
        piped: Option<Val>,
    ) -> Result<Val, TemplateError> {
        let Some((first, rest)) = cmd.args.split_first() else {
            return Err(exec_error("empty command"));
        };
        match first {
            Arg::Func(name) => {
                let mut args = Vec::new();
                for a in rest {
                    args.push(self.arg(a, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                self.call(name, args)
            }
            Arg::Field(chain) if !rest.is_empty() || piped.is_some() => {
                // A method call: `.Label "k"`.
                let mut args = Vec::new();
                for a in rest {
                    args.push(self.arg(a, dot)?.json());
                }
                if let Some(p) = piped {
                    args.push(p.json());
                }
                let (last, init) = chain
                    .split_last()
                    .ok_or_else(|| exec_error("can't give argument to non-function ."))?;
                let receiver = self.fields(dot.clone(), init)?;
                self.method(last, &receiver, &args)
            }
            _ if !rest.is_empty() || piped.is_some() => {
                Err(exec_error("can't give argument to non-function"))
            }
            other => self.arg(other, dot),
        }
    }

    fn method(&self, name: &str, receiver: &Val, args: &[Value]) -> Result<Val, TemplateError> {
        if let Val::Json(Value::Object(map)) = receiver
            && map.contains_key(name)
            && !self.header
        {
            return Err(exec_error(format!(
                "can't give argument to non-function .{name}"
            )));
        }
        match (self.methods)(name, &receiver.json(), args) {
            Some(Ok(v)) => Ok(Val::Json(v)),
            Some(Err(e)) => Err(exec_error(format!("error calling {name}: {e}"))),
            None => Err(exec_error(format!("can't evaluate field {name}"))),
        }
    }

    fn arg(&mut self, arg: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        match arg {
            Arg::Lit(v) => Ok(Val::Json(v.clone())),
            Arg::Field(chain) => self.fields(dot.clone(), chain),
            Arg::Var(name, chain) => {
                let v = self.var(name)?;
                self.fields(Val::Json(v), chain)
            }
            Arg::Paren(pipe, chain) => {
                let v = self.pipeline(pipe, dot)?;
                self.fields(v, chain)
            }
            Arg::Func(name) => self.call(name, Vec::new()),
        }
    }

    /// Follows `.A.B` from `value`. A missing key or a null gives "no
    /// value" (Go's `missingkey=default`); a field of a string, number or
    /// list is an error, unless a method of that name answers.
    fn fields(&self, mut value: Val, chain: &[String]) -> Result<Val, TemplateError> {
        for name in chain {
            value = match &value {
                Val::Missing | Val::Json(Value::Null) => Val::Missing,
                Val::Json(Value::Object(map)) => match map.get(name) {
                    Some(v) => Val::Json(v.clone()),
                    None => match (self.methods)(name, &value.json(), &[]) {
                        Some(Ok(v)) => Val::Json(v),
                        Some(Err(e)) => {
                            return Err(exec_error(format!("error calling {name}: {e}")));
                        }
                        None if self.header => Val::Json(Value::String(String::new())),
                        None => Val::Missing,
                    },
                },
                Val::Json(other) => match (self.methods)(name, other, &[]) {
                    Some(Ok(v)) => Val::Json(v),
                    Some(Err(e)) => {
                        return Err(exec_error(format!("error calling {name}: {e}")));
                    }
                    None if self.header => value.clone(),
                    None => {
                        return Err(exec_error(format!(
                            "can't evaluate field {name} in type {}",
                            go_type(other)
                        )));
                    }
                },
            };
        }
        Ok(value)
    }

    fn call(&self, name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(exec_error(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                )))
            }
        };
        let at_least = |n: usize| -> Result<(), TemplateError> {
            if args.len() >= n {
                Ok(())
            } else {
                Err(exec_error(format!(
                    "wrong number of args for {name}: want at least {n} got {}",
                    args.len()
                )))
            }
        };
        let string = |v: &Val| -> String { print_val(v) };
        // docker/cli's HeaderFunctions: the header stays as it is.
        if self.header
            && matches!(
                name,
                "json" | "split" | "join" | "title" | "lower" | "upper" | "truncate"
            )
        {
            at_least(1)?;
            return Ok(args.into_iter().next().unwrap_or(Val::Missing));
        }
        let json = |v: Value| Ok(Val::Json(v));
        match name {
            "json" => {
                want(1)?;
                json(Value::String(
                    serde_json::to_string(&args[0].json())
                        .map_err(|e| exec_error(format!("error calling json: {e}")))?,
                ))
            }
            "join" => {
                want(2)?;
                let sep = string(&args[1]);
                let items: Vec<String> = match args[0].json() {
                    Value::Array(a) => a.iter().map(print_json).collect(),
                    Value::Null => Vec::new(),
                    Value::String(s) => vec![s],
                    other => {
                        return Err(exec_error(format!(
                            "error calling join: cannot join {}",
                            go_type(&other)
                        )));
                    }
                };
                json(Value::String(items.join(&sep)))
            }
            "split" => {
                want(2)?;
                let (s, sep) = (string(&args[0]), string(&args[1]));
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars().map(|c| Value::String(c.to_string())).collect()
                } else {
                    s.split(sep.as_str())
                        .map(|p| Value::String(p.to_string()))
                        .collect()
                };
                json(Value::Array(parts))
            }
            "title" => {
                want(1)?;
                let mut out = String::new();
                let mut start = true;
                for c in string(&args[0]).chars() {
                    if start && c.is_alphabetic() {
                        out.extend(c.to_uppercase());
                    } else {
                        out.push(c);
                    }
                    start = !c.is_alphanumeric() && c != '_' && c != '\'';
                }
                json(Value::String(out))
            }
            "lower" => {
                want(1)?;
                json(Value::String(string(&args[0]).to_lowercase()))
            }
            "upper" => {
                want(1)?;
                json(Value::String(string(&args[0]).to_uppercase()))
            }
            "pad" => {
                want(3)?;
                let (before, after) = (int_arg(&args[1], name)?, int_arg(&args[2], name)?);
                let pad = |n: i64| " ".repeat(usize::try_from(n).unwrap_or(0));
                json(Value::String(format!(
                    "{}{}{}",
                    pad(before),
                    string(&args[0]),
                    pad(after)
                )))
            }
            "truncate" => {
                want(2)?;
                let s = string(&args[0]);
                let n = usize::try_from(int_arg(&args[1], name)?).unwrap_or(0);
                json(Value::String(s.chars().take(n).collect()))
            }
            "len" => {
                want(1)?;
                let n = match args[0].json() {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    other => {
                        return Err(exec_error(format!(
                            "error calling len: len of type {}",
                            go_type(&other)
                        )));
                    }
                };
                json(Value::from(n))
            }
            "index" => {
                at_least(1)?;
                let mut v = args[0].json();
                for key in &args[1..] {
                    v = match (&v, key.json()) {
                        // A missing key gives the zero value of the
                        // string maps Docker's templates index (labels,
                        // options), not Go's `<nil>` of a JSON map.
                        (Value::Object(map), Value::String(k)) => map
                            .get(&k)
                            .cloned()
                            .unwrap_or_else(|| Value::String(String::new())),
                        (Value::Array(a), Value::Number(n)) => {
                            let i = n
                                .as_u64()
                                .and_then(|i| usize::try_from(i).ok())
                                .filter(|i| *i < a.len())
                                .ok_or_else(|| {
                                    exec_error(format!(
                                        "error calling index: index out of range: {n}"
                                    ))
                                })?;
                            a[i].clone()
                        }
                        (Value::Null, _) => {
                            return Err(exec_error("error calling index: index of untyped nil"));
                        }
                        (container, k) => {
                            return Err(exec_error(format!(
                                "error calling index: cannot index {} with {}",
                                go_type(container),
                                go_type(&k)
                            )));
                        }
                    };
                }
                json(v)
            }
            "print" => {
                let mut out = String::new();
                let mut prev_string = true;
                for (i, a) in args.iter().enumerate() {
                    let is_string = matches!(a, Val::Json(Value::String(_)));
                    if i > 0 && !is_string && !prev_string {
                        out.push(' ');
                    }
                    out.push_str(&string(a));
                    prev_string = is_string;
                }
                json(Value::String(out))
            }
            "println" => {
                let parts: Vec<String> = args.iter().map(string).collect();
                json(Value::String(format!("{}\n", parts.join(" "))))
            }
            "printf" => {
                at_least(1)?;
                let format = string(&args[0]);
                json(Value::String(sprintf(&format, &args[1..])))
            }
            "not" => {
                want(1)?;
                json(Value::Bool(!args[0].truth()))
            }
            "and" => {
                at_least(1)?;
                let pick = args
                    .iter()
                    .find(|a| !a.truth())
                    .or(args.last())
                    .cloned()
                    .unwrap_or(Val::Missing);
                Ok(pick)
            }
            "or" => {
                at_least(1)?;
                let pick = args
                    .iter()
                    .find(|a| a.truth())
                    .or(args.last())
                    .cloned()
                    .unwrap_or(Val::Missing);
                Ok(pick)
            }
            "eq" => {
                at_least(2)?;
                let first = args[0].json();
                let mut any = false;
                for other in &args[1..] {
                    any |= compare(&first, &other.json())? == std::cmp::Ordering::Equal;
                }
                json(Value::Bool(any))
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let ord = compare(&args[0].json(), &args[1].json())?;
                use std::cmp::Ordering::{Equal, Greater, Less};
                let result = match name {
                    "ne" => ord != Equal,
                    "lt" => ord == Less,
                    "le" => ord != Greater,
                    "gt" => ord == Greater,
                    _ => ord != Less,
                };
                json(Value::Bool(result))
            }
            other => Err(exec_error(format!("function {other:?} not defined"))),
        }
    }
}

fn int_arg(v: &Val, func: &str) -> Result<i64, TemplateError> {
    match v.json() {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| exec_error(format!("error calling {func}: {n} is not an integer"))),
        other => Err(exec_error(format!(
            "error calling {func}: expected an integer, got {}",
            go_type(&other)
        ))),
    }
}

/// Go's comparison of basic values for `eq`, `lt`, …: numbers with
/// numbers, strings with strings, booleans (equality only) with booleans.
fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return Ok(x.cmp(&y));
            }
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y)
                .ok_or_else(|| exec_error("incompatible types for comparison"))
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(if x == y {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        (Value::Null, Value::Null) => Ok(Ordering::Equal),
        _ => Err(exec_error(format!(
            "incompatible types for comparison: {} and {}",
            go_type(a),
            go_type(b)
        ))),
    }
}

/// The Go type a JSON value decodes to, for messages.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn print_val(v: &Val) -> String {
    match v {
        Val::Missing => "<no value>".to_string(),
        Val::Json(v) => print_json(v),
    }
}

/// `fmt.Sprint` of a decoded JSON value.
fn print_json(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => print_number(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(print_json).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(o) => {
            let sorted: BTreeMap<&String, &Value> = o.iter().collect();
            let items: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{k}:{}", print_json(v)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn print_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    go_float(n.as_f64().unwrap_or(f64::NAN))
}

/// Go's `%v` of a `float64`: `strconv.FormatFloat(f, 'g', -1, 64)`, the
/// shortest digits that read back, in `%e` form when the exponent is below
/// -4 or at least 6.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits and exponent, from Rust's `{:e}`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i64 = exp.parse().unwrap_or(0);
    let sign = if f < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs());
    }
    let nd = i64::try_from(digits.len()).unwrap_or(0);
    let dp = exp + 1;
    let s = if dp <= 0 {
        format!(
            "0.{}{digits}",
            "0".repeat(usize::try_from(-dp).unwrap_or(0))
        )
    } else if dp >= nd {
        format!(
            "{digits}{}",
            "0".repeat(usize::try_from(dp - nd).unwrap_or(0))
        )
    } else {
        let (int, frac) = digits.split_at(usize::try_from(dp).unwrap_or(0));
        format!("{int}.{frac}")
    };
    format!("{sign}{s}")
}

/// Go's `fmt.Sprintf` for the verbs formats use: `%s %v %d %q %t %f %g
/// %e %x %X %o %c %%` with flags (`-+ 0#`), width and precision.
/// Mismatches print Go's `%!verb(type=value)` forms.
fn sprintf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            precision = Some(p.parse::<usize>().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let v = arg.json();
        let text = match (verb, &v) {
            ('s' | 'v', _) => {
                let s = print_val(arg);
                match precision {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('q', Value::String(s)) => serde_json::to_string(s).unwrap_or_default(),
            ('t', Value::Bool(b)) => b.to_string(),
            ('d', Value::Number(n)) if n.as_i64().is_some() => {
                let i = n.as_i64().unwrap_or(0);
                if plus && i >= 0 {
                    format!("+{i}")
                } else if space && i >= 0 {
                    format!(" {i}")
                } else {
                    i.to_string()
                }
            }
            ('x' | 'X' | 'o', Value::Number(n)) if n.as_i64().is_some() => {
                let i = n.as_i64().unwrap_or(0);
                match verb {
                    'x' => format!("{i:x}"),
                    'X' => format!("{i:X}"),
                    _ => format!("{i:o}"),
                }
            }
            ('x', Value::String(s)) => hex::encode(s.as_bytes()),
            ('c', Value::Number(n)) => n
                .as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .and_then(char::from_u32)
                .map(String::from)
                .unwrap_or_default(),
            ('f' | 'F' | 'e' | 'g', Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let p = precision.unwrap_or(6);
                let s = match verb {
                    'e' => format!("{f:.p$e}"),
                    'g' => go_float(f),
                    _ => format!("{f:.p$}"),
                };
                if plus && f >= 0.0 { format!("+{s}") } else { s }
            }
            _ => format!("%!{verb}({}={})", go_type(&v), print_val(arg)),
        };
        let width: usize = width.parse().unwrap_or(0);
        let len = text.chars().count();
        if len >= width {
            out.push_str(&text);
        } else if minus {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', width - len));
        } else if zero && matches!(v, Value::Number(_)) {
            let (sign, digits) = match text.strip_prefix(['-', '+']) {
                Some(rest) => (&text[..1], rest),
                None => ("", text.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', width - len));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', width - len));
            out.push_str(&text);
        }
    }
    let extra: Vec<String> = args
        .map(|a| format!("{}={}", go_type(&a.json()), print_val(a)))
        .collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "ID": "abc123",
            "Names": ["web", "alias"],
            "Count": 3,
            "Ratio": 1.5,
            "Big": 1_000_000.0,
            "Empty": "",
            "None": null,
            "State": {"Status": "running", "Pid": 42, "Running": true},
            "Config": {"Labels": {"com.example": "x", "tier": "front"}, "Env": ["A=1", "B=2"]},
        })
    }

    fn render(format: &str) -> Result<String, TemplateError> {
        Template::parse(format)?.render(&data(), &no_methods)
    }

    #[test]
    fn templates_render_like_go_over_json() {
        let cases: &[(&str, &str)] = &[
            ("{{.ID}}", "abc123"),
            ("{{.State.Status}}", "running"),
            ("{{.State.Pid}}", "42"),
            ("{{.Ratio}} {{.Big}}", "1.5 1e+06"),
            ("{{.Missing}}", "<no value>"),
            ("{{.None}}", "<nil>"),
            ("{{.Missing.Deeper}}", "<no value>"),
            ("{{.Names}}", "[web alias]"),
            ("{{.Config.Labels}}", "map[com.example:x tier:front]"),
            (
                "{{json .State}}",
                r#"{"Pid":42,"Running":true,"Status":"running"}"#,
            ),
            ("{{json .Names}}", r#"["web","alias"]"#),
            ("{{json .ID}}", r#""abc123""#),
            ("{{join .Names \",\"}}", "web,alias"),
            ("{{index .Config.Labels \"tier\"}}", "front"),
            ("{{index .Config.Labels \"nope\"}}", ""),
            ("{{index .Names 1}}", "alias"),
            ("{{upper .State.Status}}", "RUNNING"),
            ("{{lower \"AbC\"}}", "abc"),
            ("{{.State.Status | upper}}", "RUNNING"),
            ("{{title \"hello world\"}}", "Hello World"),
            ("{{printf \"%s-%d\" .ID .Count}}", "abc123-3"),
            ("{{printf \"%-8s|\" .ID}}", "abc123  |"),
            ("{{printf \"%5.2f\" .Ratio}}", " 1.50"),
            ("{{printf \"%q\" .ID}}", "\"abc123\""),
            ("{{printf \"%d\" .ID}}", "%!d(string=abc123)"),
            ("{{len .Names}} {{len .ID}} {{len .Config.Labels}}", "2 6 2"),
            ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
            ("{{if .Empty}}a{{else if .Count}}b{{else}}c{{end}}", "b"),
            ("{{if not .Empty}}empty{{end}}", "empty"),
            ("{{if and .Count .Empty}}x{{else}}y{{end}}", "y"),
            ("{{or .Empty \"dflt\"}}", "dflt"),
            (
                "{{if eq .State.Status \"exited\" \"running\"}}match{{end}}",
                "match",
            ),
            (
                "{{if gt .Count 2}}big{{end}}{{if lt .Count 2}}small{{end}}",
                "big",
            ),
            ("{{range .Names}}[{{.}}]{{end}}", "[web][alias]"),
            (
                "{{range $i, $n := .Names}}{{$i}}={{$n}} {{end}}",
                "0=web 1=alias ",
            ),
            (
                "{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}};{{end}}",
                "com.example:x;tier:front;",
            ),
            ("{{range .Missing}}x{{else}}none{{end}}", "none"),
            ("{{with .State}}{{.Pid}}{{end}}", "42"),
            ("{{with .Empty}}x{{else}}no{{end}}", "no"),
            ("{{$x := .ID}}{{$x}}", "abc123"),
            ("{{range .Names}}{{$.ID}}{{end}}", "abc123abc123"),
            ("{{(index .Config.Env 0)}}", "A=1"),
            ("{{split \"a:b\" \":\"}}", "[a b]"),
            ("{{truncate .ID 3}}{{pad \"x\" 1 2}}|", "abc x  |"),
            ("a  {{- .ID -}}  b", "aabc123b"),
            ("{{/* comment */}}x", "x"),
            ("{{print 1 2 \"a\" 3}}", "1 2a3"),
            ("{{println .ID}}", "abc123\n"),
            ("{{.ID}}\\t{{.Count}}", "abc123\t3"),
            // docker/cli replaces `\n` before parsing, even in raw strings.
            ("{{`raw\\n`}}", "raw\n"),
        ];
        for (format, want) in cases {
            assert_eq!(render(format).as_deref(), Ok(*want), "{format}");
        }
    }

    #[test]
    fn bad_templates_are_errors_not_panics() {
        let parse_errors = [
            "{{.ID",
            "{{if .ID}}x",
            "{{end}}",
            "{{nosuch .ID}}",
            "{{\"unterminated}}",
            "{{range .Names}}{{else}}",
            "{{(.ID}}",
            "{{}}",
            "{{define \"x\"}}{{end}}",
            "{{/* open",
            "{{1x}}",
            "{{.ID | }}",
        ];
        for format in parse_errors {
            assert!(
                matches!(Template::parse(format), Err(TemplateError::Parse { .. })),
                "{format}: {:?}",
                Template::parse(format)
            );
        }
        let exec_errors = [
            "{{.ID.Field}}",
            "{{index .Names 5}}",
            "{{index .ID 0}}",
            "{{len .Count}}",
            "{{.ID 1}}",
            "{{$nope}}",
            "{{join .Count \",\"}}",
            "{{lt .ID 1}}",
            "{{range .ID}}x{{end}}",
            "{{.Label \"x\"}}",
        ];
        for format in exec_errors {
            assert!(
                matches!(render(format), Err(TemplateError::Exec(_))),
                "{format}: {:?}",
                render(format)
            );
        }
    }

    #[test]
    fn methods_answer_fields_the_data_lacks() {
        let labels = |name: &str, _: &Value, args: &[Value]| -> Option<Result<Value, String>> {
            (name == "Label").then(|| match args {
                [Value::String(k)] => Ok(json!(if k == "tier" { "front" } else { "" })),
                _ => Err("Label takes one name".into()),
            })
        };
        let t = Template::parse("{{.Label \"tier\"}}").unwrap();
        assert_eq!(t.render(&data(), &labels).unwrap(), "front");
        let t = Template::parse("{{.Label}}").unwrap();
        assert!(t.render(&data(), &labels).is_err());
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns() {
        let rows = vec![
            json!({"ID": "a1", "Names": "first-container", "Status": "Up"}),
            json!({"ID": "b2", "Names": "b", "Status": "Exited (0) 2 seconds ago"}),
        ];
        let titles = json!({"ID": "CONTAINER ID", "Names": "NAMES", "Status": "STATUS"});
        let out = format_rows(
            "table {{.ID}}\\t{{.Names}}\\t{{.Status}}",
            "",
            &rows,
            &titles,
            &no_methods,
        )
        .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES             STATUS\n\
             a1             first-container   Up\n\
             b2             b                 Exited (0) 2 seconds ago\n"
        );
        // Not a table: one rendering per line, no alignment, no header.
        let out = format_rows("{{.ID}}\\t{{.Names}}", "", &rows, &titles, &no_methods).unwrap();
        assert_eq!(out, "a1\tfirst-container\nb2\tb\n");
        // `table` alone is the default table; `json` in a header is the title.
        let out = format_rows("table", "table {{.ID}}", &rows, &titles, &no_methods).unwrap();
        assert_eq!(out, "CONTAINER ID\na1\nb2\n");
        let out = format_rows("table {{upper .ID}}", "", &rows, &titles, &no_methods).unwrap();
        assert_eq!(out, "CONTAINER ID\nA1\nB2\n");
    }

    #[test]
    fn tabwriter_blocks_follow_go() {
        assert_eq!(
            tabwrite("a\tb\nlonger cell\tc\n"),
            "a             b\nlonger cell   c\n"
        );
        // A line without the column ends the block.
        assert_eq!(
            tabwrite("a\tb\nno tabs\nccc\td"),
            "a         b\nno tabs\nccc       d"
        );
    }

    #[test]
    fn go_floats_print_like_fmt() {
        for (f, want) in [
            (1.5, "1.5"),
            (100.0, "100"),
            (123_456.0, "123456"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }
}
