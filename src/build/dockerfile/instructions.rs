//! Typed instructions built from the raw node tree: every Dockerfile
//! instruction with its flags parsed and its words kept UNEXPANDED, grouped
//! into stages.
//!
//! The rules and messages are buildkit's
//! (`frontend/dockerfile/instructions/parse.go`, `bflag.go`). Word expansion
//! happens later, per step, with the environment of that step
//! ([`Instruction::expand`]).

use std::fmt;
use std::time::Duration;

use super::parser::{Heredoc, Node, go_quote, parse_heredoc};
use super::shell::{Env, Lexer, ShellError};

/// A command given in exec form (`["a", "b"]`) or shell form (`a b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// JSON array: run as is, no shell.
    Exec(Vec<String>),
    /// The rest of the line: run with the stage's `SHELL`.
    Shell(String),
}

impl CommandLine {
    fn from_node(args: &[String], json: bool) -> Self {
        if json {
            Self::Exec(args.to_vec())
        } else {
            Self::Shell(args.join(" "))
        }
    }

    /// The argv to run: exec form as is, shell form after `shell`
    /// (`["/bin/sh", "-c"]` by default).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Self::Exec(args) => args.clone(),
            Self::Shell(cmd) => {
                let mut argv = shell.to_vec();
                argv.push(cmd.clone());
                argv
            }
        }
    }
}

/// One `KEY=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value (unexpanded, quotes included).
    pub value: String,
}

/// One name of an ARG, with its default if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// `name=default`: the default (unexpanded); `None` for a bare `name`.
    pub default: Option<String>,
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The base: an image reference or an earlier stage's name (unexpanded;
    /// expanded with the meta ARGs only).
    pub base: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// Heredoc bodies (`RUN <<EOF`), in order.
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values, as written.
    pub mounts: Vec<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
}

impl Run {
    /// The `--mount` values with variables expanded: buildkit expands mount
    /// options (`--mount=target=$DIR`) even though the command itself is
    /// left to the shell.
    pub fn expand_mounts(
        &self,
        lexer: &Lexer,
        env: &Env,
    ) -> std::result::Result<Vec<String>, ShellError> {
        self.mounts
            .iter()
            .map(|m| lexer.process_word(m, env))
            .collect()
    }
}

/// What COPY or ADD copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path in the context (or stage, or URL for ADD).
    Path(String),
    /// A heredoc's body, written to a file of its name.
    Inline(Heredoc),
}

/// COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sources, in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: String,
    /// `--from`: a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
}

/// ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Sources, in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--checksum`.
    pub checksum: Option<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--link`.
    pub link: bool,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Check {
        /// The test: exec form runs as `CMD`, shell form as `CMD-SHELL`.
        test: CommandLine,
        /// `--interval` (`None`: inherit / default).
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

impl Healthcheck {
    /// The image config's `Healthcheck.Test`: `["NONE"]`, `["CMD", …]` or
    /// `["CMD-SHELL", cmd]`.
    pub fn test(&self) -> Vec<String> {
        match self {
            Self::None => vec!["NONE".to_string()],
            Self::Check {
                test: CommandLine::Exec(args),
                ..
            } => std::iter::once("CMD".to_string())
                .chain(args.iter().cloned())
                .collect(),
            Self::Check {
                test: CommandLine::Shell(cmd),
                ..
            } => vec!["CMD-SHELL".to_string(), cmd.clone()],
        }
    }
}

/// ONBUILD: a trigger stored in the image for builds that use it as a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnBuild {
    /// The trigger, parsed.
    pub instruction: Instruction,
    /// The trigger's text (what goes into the image config's `OnBuild`).
    pub text: String,
}

/// A Dockerfile instruction with its flags parsed and its words unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// ENV.
    Env(Vec<KeyValue>),
    /// ARG.
    Arg(Vec<ArgDecl>),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// MAINTAINER (deprecated; sets the image's author).
    Maintainer(String),
    /// EXPOSE: `port[/proto]` words.
    Expose(Vec<String>),
    /// ADD.
    Add(Add),
    /// COPY.
    Copy(Copy),
    /// VOLUME.
    Volume(Vec<String>),
    /// USER.
    User(String),
    /// WORKDIR.
    Workdir(String),
    /// ONBUILD.
    OnBuild(Box<OnBuild>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// SHELL: always exec form.
    Shell(Vec<String>),
}

/// An instruction and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub instruction: Instruction,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based), heredoc bodies included.
    pub end_line: usize,
    /// The text with continuations joined (heredoc bodies not included).
    pub original: String,
    /// Byte range in the source.
    pub span: std::ops::Range<usize>,
}

/// A failure turning a node into an instruction: a message in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstructionError {
    pub message: String,
    /// Text on the line to point at, when narrower than the instruction.
    pub at: Option<String>,
}

impl InstructionError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            at: None,
        }
    }

    fn at(message: impl Into<String>, at: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            at: Some(at.into()),
        }
    }
}

type Result<T> = std::result::Result<T, InstructionError>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// buildkit's `BFlags`: the flags an instruction accepts, parsed from the
/// node's `--name[=value]` words.
struct Flags {
    declared: Vec<(&'static str, FlagKind)>,
    values: Vec<(&'static str, String)>,
}

impl Flags {
    fn parse(words: &[String], declared: &[(&'static str, FlagKind)]) -> Result<Self> {
        let mut flags = Self {
            declared: declared.to_vec(),
            values: Vec::new(),
        };
        for word in words {
            let Some(arg) = word.strip_prefix("--") else {
                return Err(InstructionError::at(
                    format!("arg should start with -- : {word}"),
                    word.clone(),
                ));
            };
            if arg.is_empty() {
                break;
            }
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            let Some(&(key, kind)) = flags.declared.iter().find(|(n, _)| *n == name) else {
                return Err(InstructionError::at(
                    format!("unknown flag: {name}"),
                    format!("--{name}"),
                ));
            };
            if kind != FlagKind::Strings && flags.values.iter().any(|(n, _)| *n == key) {
                return Err(InstructionError::at(
                    format!("duplicate flag specified: {name}"),
                    word.clone(),
                ));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, Some("")) | (FlagKind::String | FlagKind::Strings, None) => {
                    return Err(InstructionError::at(
                        format!("missing a value on flag: {name}"),
                        word.clone(),
                    ));
                }
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(InstructionError::at(
                            format!("expecting boolean value for flag {name}, not: {v}"),
                            word.clone(),
                        ));
                    }
                },
                (_, Some(v)) => v.to_string(),
            };
            flags.values.push((key, value));
        }
        Ok(flags)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).is_some_and(|v| v == "true")
    }
}

const NO_FLAGS: &[(&str, FlagKind)] = &[];

/// The keyword as the user wrote it (for messages).
fn written_keyword(node: &Node) -> String {
    node.original
        .trim_start()
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or(&node.keyword)
        .to_string()
}

/// Builds the typed instruction for one node.
pub(crate) fn instruction_from_node(node: &Node) -> Result<Instruction> {
    let upper = node.keyword.to_ascii_uppercase();
    let no_flags = || Flags::parse(&node.flags, NO_FLAGS);
    let args = &node.args;
    let at_least_one = || {
        if args.is_empty() {
            Err(InstructionError::new(format!(
                "{upper} requires at least one argument"
            )))
        } else {
            Ok(())
        }
    };
    let exactly_one = || match args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(InstructionError::new(format!(
            "{upper} requires exactly one argument"
        ))),
    };
    Ok(match node.keyword.as_str() {
        "from" => {
            let flags = Flags::parse(&node.flags, &[("platform", FlagKind::String)])?;
            let (base, name) = match args.as_slice() {
                [base] => (base.clone(), None),
                [base, as_, written] if as_.eq_ignore_ascii_case("as") => {
                    let name = written.to_lowercase();
                    if !is_valid_stage_name(&name) {
                        return Err(InstructionError::at(
                            format!(
                                "invalid name for build stage: {}, name can't start with a number or contain symbols",
                                go_quote(written)
                            ),
                            written.clone(),
                        ));
                    }
                    (base.clone(), Some(name))
                }
                _ => {
                    return Err(InstructionError::new(
                        "FROM requires either one or three arguments",
                    ));
                }
            };
            Instruction::From(From {
                base,
                name,
                platform: flags.string("platform").filter(|p| !p.is_empty()),
            })
        }
        "run" => {
            let flags = Flags::parse(
                &node.flags,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )?;
            Instruction::Run(Run {
                command: CommandLine::from_node(args, node.json),
                heredocs: node.heredocs.clone(),
                mounts: flags.strings("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
            })
        }
        "cmd" => {
            no_flags()?;
            Instruction::Cmd(CommandLine::from_node(args, node.json))
        }
        "entrypoint" => {
            no_flags()?;
            Instruction::Entrypoint(CommandLine::from_node(args, node.json))
        }
        "env" | "label" => {
            no_flags()?;
            at_least_one()?;
            let mut pairs = Vec::new();
            for triple in args.chunks(3) {
                let [key, value, _] = triple else {
                    return Err(InstructionError::new(format!(
                        "{upper} requires at least one argument"
                    )));
                };
                if key.is_empty() {
                    return Err(InstructionError::new(format!(
                        "{upper} names can not be blank"
                    )));
                }
                pairs.push(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            if node.keyword == "env" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "arg" => {
            no_flags()?;
            at_least_one()?;
            let mut decls = Vec::new();
            for word in args {
                let decl = match word.split_once('=') {
                    Some((name, default)) => ArgDecl {
                        name: name.to_string(),
                        default: Some(default.to_string()),
                    },
                    None => ArgDecl {
                        name: word.clone(),
                        default: None,
                    },
                };
                if decl.name.is_empty() {
                    return Err(InstructionError::new("ARG names can not be blank"));
                }
                decls.push(decl);
            }
            Instruction::Arg(decls)
        }
        "maintainer" => {
            no_flags()?;
            Instruction::Maintainer(exactly_one()?)
        }
        "expose" => {
            no_flags()?;
            at_least_one()?;
            Instruction::Expose(args.clone())
        }
        "copy" => {
            let flags = Flags::parse(
                &node.flags,
                &[
                    ("from", FlagKind::String),
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("link", FlagKind::Bool),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, "COPY")?;
            Instruction::Copy(Copy {
                sources,
                dest,
                from: flags.string("from").filter(|v| !v.is_empty()),
                chown: flags.string("chown").filter(|v| !v.is_empty()),
                chmod: flags.string("chmod").filter(|v| !v.is_empty()),
                link: flags.bool("link"),
            })
        }
        "add" => {
            let flags = Flags::parse(
                &node.flags,
                &[
                    ("chown", FlagKind::String),
                    ("chmod", FlagKind::String),
                    ("checksum", FlagKind::String),
                    ("keep-git-dir", FlagKind::Bool),
                    ("link", FlagKind::Bool),
                ],
            )?;
            let (sources, dest) = sources_and_dest(node, "ADD")?;
            Instruction::Add(Add {
                sources,
                dest,
                chown: flags.string("chown").filter(|v| !v.is_empty()),
                chmod: flags.string("chmod").filter(|v| !v.is_empty()),
                checksum: flags.string("checksum").filter(|v| !v.is_empty()),
                keep_git_dir: flags.bool("keep-git-dir"),
                link: flags.bool("link"),
            })
        }
        "volume" => {
            no_flags()?;
            at_least_one()?;
            let mut volumes = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(InstructionError::new(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                volumes.push(v.to_string());
            }
            Instruction::Volume(volumes)
        }
        "user" => {
            no_flags()?;
            Instruction::User(exactly_one()?)
        }
        "workdir" => {
            no_flags()?;
            Instruction::Workdir(exactly_one()?)
        }
        "stopsignal" => {
            no_flags()?;
            Instruction::StopSignal(exactly_one()?)
        }
        "shell" => {
            no_flags()?;
            if !node.json {
                return Err(InstructionError::new(
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            at_least_one()?;
            Instruction::Shell(args.clone())
        }
        "healthcheck" => Instruction::Healthcheck(healthcheck(node)?),
        "onbuild" => {
            no_flags()?;
            let Some(inner) = &node.inner else {
                return Err(InstructionError::new(
                    "ONBUILD requires at least one argument",
                ));
            };
            match inner.keyword.as_str() {
                "onbuild" => {
                    return Err(InstructionError::new(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "maintainer" | "from" => {
                    return Err(InstructionError::new(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner.keyword.to_ascii_uppercase()
                    )));
                }
                _ => {}
            }
            let mut inner_node = (**inner).clone();
            inner_node.heredocs = node.heredocs.clone();
            let instruction = instruction_from_node(&inner_node)?;
            // The trigger carries its heredoc bodies and terminators, so a
            // later build can parse it again (buildkit's parseOnBuild).
            let mut text = onbuild_text(&node.original);
            for doc in &node.heredocs {
                text.push('\n');
                text.push_str(&doc.content);
                text.push_str(&doc.name);
            }
            Instruction::OnBuild(Box::new(OnBuild { instruction, text }))
        }
        _ => {
            return Err(InstructionError::at(
                format!("unknown instruction: {}", written_keyword(node)),
                written_keyword(node),
            ));
        }
    })
}

/// The trigger text: the original line without its `ONBUILD` keyword
/// (buildkit strips `(?i)^\s*ONBUILD\s*`).
fn onbuild_text(original: &str) -> String {
    let s = original.trim_start();
    let s = s.get(7..).unwrap_or("");
    s.trim_start().to_string()
}

/// Stage names: `^[a-z][a-z0-9-_.]*$` (buildkit's `validStageName`).
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn sources_and_dest(node: &Node, upper: &str) -> Result<(Vec<Source>, String)> {
    let Some((dest, sources)) = node.args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(InstructionError::new(format!(
            "{upper} requires at least two arguments, but only one was provided. Destination could not be determined"
        )));
    };
    if !node.json && parse_heredoc(dest).is_some() {
        return Err(InstructionError::new(format!(
            "{upper} cannot accept a heredoc as a destination"
        )));
    }
    let sources = sources
        .iter()
        .map(|s| {
            // A heredoc source is looked up by its name, as buildkit does.
            if !node.json
                && let Some(opener) = parse_heredoc(s)
                && let Some(doc) = node.heredocs.iter().find(|d| d.name == opener.name)
            {
                return Source::Inline(doc.clone());
            }
            Source::Path(s.clone())
        })
        .collect();
    Ok((sources, dest.clone()))
}

fn healthcheck(node: &Node) -> Result<Healthcheck> {
    let Some((kind, rest)) = node.args.split_first() else {
        return Err(InstructionError::new(
            "HEALTHCHECK requires at least one argument",
        ));
    };
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        Flags::parse(&node.flags, NO_FLAGS)?;
        if !rest.is_empty() {
            return Err(InstructionError::new("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(InstructionError::new(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            go_quote(&kind)
        )));
    }
    if rest.is_empty() || (!node.json && rest.join(" ").is_empty()) {
        return Err(InstructionError::new(
            "Missing command after HEALTHCHECK CMD",
        ));
    }
    let duration = |name: &str| -> Result<Option<Duration>> {
        let Some(text) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let (negative, d) =
            parse_go_duration(&text).map_err(|e| InstructionError::at(e, format!("--{name}")))?;
        if d.is_zero() {
            return Ok(Some(d));
        }
        // Docker's minimum (container.MinimumDuration); negative is less.
        if negative || d < Duration::from_millis(1) {
            return Err(InstructionError::at(
                format!("Interval {} cannot be less than 1ms", go_quote(name)),
                format!("--{name}"),
            ));
        }
        Ok(Some(d))
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(text) => {
            let n: i64 = text.parse().map_err(|_| {
                InstructionError::at(
                    format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        go_quote(&text)
                    ),
                    "--retries",
                )
            })?;
            if n < 0 {
                return Err(InstructionError::at(
                    format!("--retries cannot be negative ({n})"),
                    "--retries",
                ));
            }
            Some(u32::try_from(n).map_err(|_| {
                InstructionError::at(
                    format!(
                        "strconv.ParseInt: parsing {}: value out of range",
                        go_quote(&text)
                    ),
                    "--retries",
                )
            })?)
        }
    };
    Ok(Healthcheck::Check {
        test: CommandLine::from_node(rest, node.json),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration` (`1m30s`, `1.5s`, `200ms`, `0`, `-2s`): whether
/// the duration is negative, and its magnitude.
fn parse_go_duration(text: &str) -> std::result::Result<(bool, Duration), String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let (negative, s) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = parse_unsigned_duration(s, text, &invalid)?;
    Ok((negative, magnitude))
}

fn parse_unsigned_duration(
    s: &str,
    text: &str,
    invalid: &dyn Fn() -> String,
) -> std::result::Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {}", go_quote(text))),
            other => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(other),
                    go_quote(text)
                ));
            }
        };
        total += value * nanos_per;
    }
    if total > 9.223_372_036_854_775e18 {
        return Err(invalid());
    }
    Ok(Duration::from_secs_f64(total / 1e9))
}

impl Instruction {
    /// Whether Docker expands variables in this instruction's words: ADD,
    /// COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and
    /// ARG defaults do; RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and
    /// MAINTAINER do not (the shell or a later build does).
    pub fn expands(&self) -> bool {
        !matches!(
            self,
            Self::Run(_)
                | Self::Cmd(_)
                | Self::Entrypoint(_)
                | Self::Shell(_)
                | Self::Healthcheck(_)
                | Self::OnBuild(_)
                | Self::Maintainer(_)
        )
    }

    /// The instruction with its words expanded against `env` (a copy of it
    /// when [`Instruction::expands`] is false). EXPOSE words are split on
    /// whitespace after expansion; every other word stays one word. Heredoc
    /// bodies are not expanded here: see [`Lexer::expand_heredoc`].
    pub fn expand(&self, lexer: &Lexer, env: &Env) -> std::result::Result<Self, ShellError> {
        let word = |w: &str| lexer.process_word(w, env);
        let opt = |w: &Option<String>| w.as_deref().map(&word).transpose();
        let sources = |sources: &[Source]| -> std::result::Result<Vec<Source>, ShellError> {
            sources
                .iter()
                .map(|s| match s {
                    Source::Path(p) => word(p).map(Source::Path),
                    Source::Inline(doc) => Ok(Source::Inline(doc.clone())),
                })
                .collect()
        };
        let pairs = |kvs: &[KeyValue]| -> std::result::Result<Vec<KeyValue>, ShellError> {
            kvs.iter()
                .map(|kv| {
                    Ok(KeyValue {
                        key: word(&kv.key)?,
                        value: word(&kv.value)?,
                    })
                })
                .collect()
        };
        Ok(match self {
            Self::From(f) => Self::From(From {
                base: word(&f.base)?,
                name: f.name.clone(),
                platform: opt(&f.platform)?,
            }),
            Self::Env(kvs) => Self::Env(pairs(kvs)?),
            Self::Label(kvs) => Self::Label(pairs(kvs)?),
            Self::Arg(decls) => Self::Arg(
                decls
                    .iter()
                    .map(|d| {
                        Ok(ArgDecl {
                            name: word(&d.name)?,
                            default: opt(&d.default)?,
                        })
                    })
                    .collect::<std::result::Result<_, ShellError>>()?,
            ),
            Self::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    out.extend(lexer.process_words(p, env)?);
                }
                Self::Expose(out)
            }
            Self::Copy(c) => Self::Copy(Copy {
                sources: sources(&c.sources)?,
                dest: word(&c.dest)?,
                from: opt(&c.from)?,
                chown: opt(&c.chown)?,
                chmod: opt(&c.chmod)?,
                link: c.link,
            }),
            Self::Add(a) => Self::Add(Add {
                sources: sources(&a.sources)?,
                dest: word(&a.dest)?,
                chown: opt(&a.chown)?,
                chmod: opt(&a.chmod)?,
                checksum: opt(&a.checksum)?,
                keep_git_dir: a.keep_git_dir,
                link: a.link,
            }),
            Self::Volume(vs) => Self::Volume(
                vs.iter()
                    .map(|v| word(v))
                    .collect::<std::result::Result<_, _>>()?,
            ),
            Self::User(u) => Self::User(word(u)?),
            Self::Workdir(w) => Self::Workdir(word(w)?),
            Self::StopSignal(s) => Self::StopSignal(word(s)?),
            other => other.clone(),
        })
    }

    /// The keyword, upper-case (`RUN`, `COPY`, …).
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::From(_) => "FROM",
            Self::Run(_) => "RUN",
            Self::Cmd(_) => "CMD",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Env(_) => "ENV",
            Self::Arg(_) => "ARG",
            Self::Label(_) => "LABEL",
            Self::Maintainer(_) => "MAINTAINER",
            Self::Expose(_) => "EXPOSE",
            Self::Add(_) => "ADD",
            Self::Copy(_) => "COPY",
            Self::Volume(_) => "VOLUME",
            Self::User(_) => "USER",
            Self::Workdir(_) => "WORKDIR",
            Self::OnBuild(_) => "ONBUILD",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Healthcheck(_) => "HEALTHCHECK",
            Self::Shell(_) => "SHELL",
        }
    }

    /// The image history's `created_by` for this step, as Docker writes it:
    /// `RUN /bin/sh -c <cmd> # buildkit` for RUN (`shell` is the stage's
    /// SHELL), `/bin/sh -c #(nop) <INSTRUCTION …>` for every other step.
    pub fn history_text(&self, shell: &[String]) -> String {
        match self {
            Self::Run(run) => {
                format!("RUN {} # buildkit", run.command.argv(shell).join(" "))
            }
            Self::Copy(_) | Self::Add(_) | Self::Workdir(_) => {
                format!("/bin/sh -c #(nop) {self}")
            }
            _ => format!("/bin/sh -c #(nop)  {self}"),
        }
    }
}

fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

fn fmt_command(f: &mut fmt::Formatter<'_>, cmd: &CommandLine) -> fmt::Result {
    match cmd {
        CommandLine::Exec(args) => write!(f, "{}", go_list(args)),
        CommandLine::Shell(s) => write!(
            f,
            "{}",
            go_list(&["/bin/sh".into(), "-c".into(), s.clone()])
        ),
    }
}

fn fmt_sources(f: &mut fmt::Formatter<'_>, sources: &[Source], dest: &str) -> fmt::Result {
    for s in sources {
        match s {
            Source::Path(p) => write!(f, "{p} ")?,
            Source::Inline(doc) => write!(f, "<<{} ", doc.name)?,
        }
    }
    write!(f, "{dest}")
}

/// The instruction as Docker's classic builder wrote it in image history
/// (`ENV a=b`, `CMD ["sh" "-c" "x"]`, `EXPOSE 80/tcp`, …).
impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.keyword())?;
        match self {
            Self::From(from) => {
                write!(f, " {}", from.base)?;
                if let Some(name) = &from.name {
                    write!(f, " AS {name}")?;
                }
                Ok(())
            }
            Self::Run(run) => {
                f.write_str(" ")?;
                fmt_command(f, &run.command)
            }
            Self::Cmd(c) | Self::Entrypoint(c) => {
                f.write_str(" ")?;
                fmt_command(f, c)
            }
            Self::Env(kvs) | Self::Label(kvs) => {
                for kv in kvs {
                    write!(f, " {}={}", kv.key, kv.value)?;
                }
                Ok(())
            }
            Self::Arg(decls) => {
                for d in decls {
                    match &d.default {
                        Some(v) => write!(f, " {}={v}", d.name)?,
                        None => write!(f, " {}", d.name)?,
                    }
                }
                Ok(())
            }
            Self::Maintainer(s) | Self::User(s) | Self::Workdir(s) | Self::StopSignal(s) => {
                write!(f, " {s}")
            }
            Self::Expose(ports) | Self::Volume(ports) => write!(f, " {}", ports.join(" ")),
            Self::Add(a) => {
                f.write_str(" ")?;
                fmt_sources(f, &a.sources, &a.dest)
            }
            Self::Copy(c) => {
                f.write_str(" ")?;
                fmt_sources(f, &c.sources, &c.dest)
            }
            Self::OnBuild(o) => write!(f, " {}", o.text),
            Self::Healthcheck(h) => write!(f, " {}", go_list(&h.test())),
            Self::Shell(args) => write!(f, " {}", go_list(args)),
        }
    }
}

impl Lexer {
    /// Expands a heredoc body for COPY/ADD (when [`Heredoc::expand`]):
    /// variables are replaced and escapes processed, quotes are kept as
    /// written, as in a shell heredoc.
    pub fn expand_heredoc(
        &self,
        content: &str,
        env: &Env,
    ) -> std::result::Result<String, ShellError> {
        let mut lex = *self;
        lex.raw_quotes = true;
        lex.process_word(content, env)
    }
}
