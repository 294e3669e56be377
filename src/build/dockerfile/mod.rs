//! The Dockerfile language: text into [`Dockerfile`] (meta ARGs and stages
//! of typed, unexpanded [`Instruction`]s), with errors as miette diagnostics
//! that point at the offending line.
//!
//! Three layers, each following moby/buildkit's `frontend/dockerfile`:
//! [`parser`] (lines into a node tree), [`instructions`] (nodes into typed
//! instructions) and [`shell`] (word expansion, applied per step by the
//! build engine). Nothing here touches the file system or runs anything.

pub mod instructions;
pub mod parser;
pub mod shell;

use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};

pub use instructions::{
    Add, ArgDecl, CommandLine, Copy, From, Healthcheck, Instruction, KeyValue, OnBuild, Run,
    Source, Step,
};
pub use parser::Heredoc;
pub use shell::{Env, Lexer, ShellError};

/// A Dockerfile that could not be parsed: Docker's message, the line, and
/// the source to show it in.
#[derive(Debug, Clone, thiserror::Error, Diagnostic)]
#[error("dockerfile parse error on line {line}: {message}")]
#[diagnostic(code(stack::build::dockerfile))]
pub struct ParseError {
    /// What is wrong, in Docker's words (`unknown flag: foo`).
    pub message: String,
    /// The line (1-based; 0 for an empty file).
    pub line: usize,
    #[source_code]
    source_code: Arc<NamedSource<String>>,
    #[label("{message}")]
    span: SourceSpan,
}

impl ParseError {
    fn new(source: &Arc<NamedSource<String>>, message: String, line: usize, span: std::ops::Range<usize>) -> Self {
        Self {
            message,
            line,
            source_code: Arc::clone(source),
            span: SourceSpan::new(span.start.into(), span.end.saturating_sub(span.start)),
        }
    }

    /// The byte range the diagnostic points at.
    pub fn span(&self) -> std::ops::Range<usize> {
        let start = self.span.offset();
        start..start + self.span.len()
    }
}

/// One build stage: a FROM and the steps after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The base image or earlier stage, unexpanded (expand with the meta ARGs).
    pub base: String,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// The FROM step itself (lines, original text).
    pub from: Step,
    /// The steps after FROM, in order.
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARG steps before the first FROM (each an [`Instruction::Arg`]): they
    /// are in scope for FROM lines only, unless a stage redeclares them.
    pub meta_args: Vec<Step>,
    /// The stages, in order; the last one is the default target.
    pub stages: Vec<Stage>,
    /// The escape character (`# escape=`).
    pub escape: char,
    /// The `# syntax=` directive, if any (recorded only: there is no
    /// frontend to switch to).
    pub syntax: Option<String>,
    /// Warnings Docker would print (empty continuation lines).
    pub warnings: Vec<String>,
}

impl Dockerfile {
    /// A lexer for this file's escape character.
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.escape)
    }

    /// Every meta ARG declaration, in order.
    pub fn meta_arg_decls(&self) -> impl Iterator<Item = &ArgDecl> {
        self.meta_args.iter().flat_map(|s| match &s.instruction {
            Instruction::Arg(decls) => decls.as_slice(),
            _ => &[],
        })
    }

    /// The stage called `name` (case-insensitive) or with that index.
    pub fn stage(&self, name: &str) -> Option<(usize, &Stage)> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .and_then(|i| self.stages.get(i).map(|s| (i, s)))
            })
    }
}

/// Parses a Dockerfile. `name` is what diagnostics call the file.
pub fn parse(source: &str, name: &str) -> Result<Dockerfile, ParseError> {
    let named = Arc::new(NamedSource::new(name, source.to_string()));
    let tree = parser::parse_tree(source)
        .map_err(|e| ParseError::new(&named, e.message, e.line, e.span))?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &tree.nodes {
        let instruction = instructions::instruction_from_node(node).map_err(|e| {
            let span = e
                .at
                .as_deref()
                .and_then(|at| narrow_span(source, &node.span, at))
                .unwrap_or_else(|| first_line_span(source, &node.span));
            ParseError::new(&named, e.message, node.start_line, span)
        })?;
        let step = Step {
            instruction,
            start_line: node.start_line,
            end_line: node.end_line,
            original: node.original.clone(),
            span: node.span.clone(),
        };
        match &step.instruction {
            Instruction::From(from) => {
                if let Some(name) = &from.name {
                    if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                        let span = narrow_span(source, &node.span, name)
                            .unwrap_or_else(|| first_line_span(source, &node.span));
                        return Err(ParseError::new(
                            &named,
                            format!("duplicate stage name {}", parser::go_quote(name)),
                            node.start_line,
                            span,
                        ));
                    }
                }
                stages.push(Stage {
                    base: from.base.clone(),
                    name: from.name.clone(),
                    platform: from.platform.clone(),
                    from: step.clone(),
                    steps: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(stage) => stage.steps.push(step),
                None if matches!(step.instruction, Instruction::Arg(_)) => meta_args.push(step),
                None => {
                    return Err(ParseError::new(
                        &named,
                        format!(
                            "no build stage in current context: {} must come after FROM",
                            step.instruction.keyword()
                        ),
                        node.start_line,
                        first_line_span(source, &node.span),
                    ));
                }
            },
        }
    }
    if stages.is_empty() {
        let last = tree.nodes.last().map_or(0..0, |n| n.span.clone());
        return Err(ParseError::new(
            &named,
            "no build stage in current context: the file has no FROM".to_string(),
            tree.nodes.last().map_or(0, |n| n.start_line),
            last,
        ));
    }
    Ok(Dockerfile {
        meta_args,
        stages,
        escape: tree.escape,
        syntax: tree.syntax,
        warnings: tree.warnings,
    })
}

/// The first line of `span`.
fn first_line_span(source: &str, span: &std::ops::Range<usize>) -> std::ops::Range<usize> {
    let text = source.get(span.clone()).unwrap_or("");
    let len = text.find(['\n', '\r']).unwrap_or(text.len());
    span.start..span.start + len
}

/// Where `needle` first appears inside `span`.
fn narrow_span(source: &str, span: &std::ops::Range<usize>, needle: &str) -> Option<std::ops::Range<usize>> {
    if needle.is_empty() {
        return None;
    }
    let text = source.get(span.clone())?;
    let at = text.find(needle)?;
    Some(span.start + at..span.start + at + needle.len())
}
