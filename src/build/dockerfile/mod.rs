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
    fn new(
        source: &Arc<NamedSource<String>>,
        message: String,
        line: usize,
        span: std::ops::Range<usize>,
    ) -> Self {
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
            let span =
                e.at.as_deref()
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
                if let Some(name) = &from.name
                    && stages.iter().any(|s| s.name.as_ref() == Some(name))
                {
                    let span = narrow_span(source, &node.span, name)
                        .unwrap_or_else(|| first_line_span(source, &node.span));
                    return Err(ParseError::new(
                        &named,
                        format!("duplicate stage name {}", parser::go_quote(name)),
                        node.start_line,
                        span,
                    ));
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
fn narrow_span(
    source: &str,
    span: &std::ops::Range<usize>,
    needle: &str,
) -> Option<std::ops::Range<usize>> {
    if needle.is_empty() {
        return None;
    }
    let text = source.get(span.clone())?;
    let at = text.find(needle)?;
    Some(span.start + at..span.start + at + needle.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(source: &str) -> ParseError {
        parse(source, "Dockerfile").unwrap_err()
    }

    #[test]
    fn stages_and_meta_args_are_split_at_from() {
        let df = parse(
            "# syntax=docker/dockerfile:1\nARG BASE=alpine VERSION\nFROM --platform=$BUILDPLATFORM ${BASE}:3 AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n",
            "Dockerfile",
        )
        .unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        let decls: Vec<_> = df
            .meta_arg_decls()
            .map(|d| (d.name.as_str(), d.default.as_deref()))
            .collect();
        assert_eq!(decls, vec![("BASE", Some("alpine")), ("VERSION", None)]);
        assert_eq!(df.stages.len(), 2);
        let build = &df.stages[0];
        assert_eq!(build.base, "${BASE}:3");
        assert_eq!(build.name.as_deref(), Some("build"));
        assert_eq!(build.platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!((build.from.start_line, build.steps[0].start_line), (3, 4));
        assert_eq!(df.stage("BUILD").map(|(i, _)| i), Some(0));
        assert_eq!(df.stage("1").map(|(i, _)| i), Some(1));
        let Instruction::Copy(copy) = &df.stages[1].steps[0].instruction else {
            panic!("not a COPY");
        };
        assert_eq!(copy.from.as_deref(), Some("build"));
        assert_eq!(copy.sources, vec![Source::Path("/out".into())]);
        assert_eq!(copy.dest, "/");
    }

    #[test]
    fn flags_are_parsed_and_unknown_ones_rejected_as_docker_does() {
        let df = parse(
            "FROM a\nCOPY --chown=1:2 --chmod=644 --link a b\nADD --checksum=sha256:00 --keep-git-dir=true --chown=x https://h/f /f\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none --security=insecure [\"make\", \"all\"]\n",
            "Dockerfile",
        )
        .unwrap();
        let steps: Vec<_> = df.stages[0]
            .steps
            .iter()
            .map(|s| s.instruction.clone())
            .collect();
        assert_eq!(
            steps[0],
            Instruction::Copy(Copy {
                sources: vec![Source::Path("a".into())],
                dest: "b".into(),
                from: None,
                chown: Some("1:2".into()),
                chmod: Some("644".into()),
                link: true,
            })
        );
        let Instruction::Add(add) = &steps[1] else {
            panic!()
        };
        assert_eq!(add.checksum.as_deref(), Some("sha256:00"));
        assert!(add.keep_git_dir);
        assert_eq!(add.chown.as_deref(), Some("x"));
        let Instruction::Run(run) = &steps[2] else {
            panic!()
        };
        assert_eq!(
            run.command,
            CommandLine::Exec(vec!["make".into(), "all".into()])
        );
        assert_eq!(run.mounts.len(), 2);
        assert_eq!(run.network.as_deref(), Some("none"));
        let env = Env::from_key_values(["C=/cache"]);
        let mut with_var = run.clone();
        with_var.mounts = vec!["type=cache,target=$C".into()];
        assert_eq!(
            with_var.expand_mounts(&df.lexer(), &env).unwrap(),
            vec!["type=cache,target=/cache"]
        );
        assert_eq!(run.security.as_deref(), Some("insecure"));

        let e = err("FROM a\n\nCOPY --frm=x a b\n");
        assert_eq!(e.message, "unknown flag: frm");
        assert_eq!(e.line, 3);
        assert_eq!(&"FROM a\n\nCOPY --frm=x a b\n"[e.span()], "--frm");
        assert_eq!(
            err("FROM a\nCOPY --link=maybe a b\n").message,
            "expecting boolean value for flag link, not: maybe"
        );
        assert_eq!(
            err("FROM a\nCOPY --from a b\n").message,
            "missing a value on flag: from"
        );
        assert_eq!(err("FROM a\nENV --x=1 A=b\n").message, "unknown flag: x");
        assert_eq!(
            err("FROM a\nADD --from=b a b\n").message,
            "unknown flag: from"
        );
    }

    #[test]
    fn unknown_instructions_and_misplaced_ones_are_rejected_with_their_line() {
        let e = err("FROM a\nRUN x\nFROB y\n");
        assert_eq!(e.message, "unknown instruction: FROB");
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "dockerfile parse error on line 3: unknown instruction: FROB"
        );
        assert!(
            err("RUN x\nFROM a\n")
                .message
                .starts_with("no build stage in current context")
        );
        assert!(err("ARG a\n").message.starts_with("no build stage"));
        assert_eq!(
            err("FROM a AS x\nFROM b AS X\n").message,
            "duplicate stage name \"x\""
        );
        assert_eq!(
            err("FROM a AS 1X\n").message,
            "invalid name for build stage: \"1X\", name can't start with a number or contain symbols"
        );
        assert_eq!(
            err("FROM a b\n").message,
            "FROM requires either one or three arguments"
        );
        assert_eq!(err("FROM a\nCOPY a\n").line, 2);
        assert_eq!(
            err("FROM a\nSHELL sh -c\n").message,
            "SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            err("FROM a\nENV PATH\n").message,
            "ENV must have two arguments"
        );
        assert_eq!(
            err("FROM a\nUSER\n").message,
            "USER requires exactly one argument"
        );
        assert_eq!(err("").message, "file with no instructions");
        assert_eq!(err("# only\n\n").message, "file with no instructions");
    }

    #[test]
    fn diagnostics_render_with_the_line() {
        let e = err("FROM a\nCOPY --nope a b\n");
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &e)
            .unwrap();
        assert!(out.contains("COPY --nope a b"), "{out}");
        assert!(out.contains("unknown flag: nope"), "{out}");
        assert!(out.contains("stack::build::dockerfile"), "{out}");
    }

    #[test]
    fn onbuild_keeps_its_trigger_and_refuses_what_docker_refuses() {
        let df = parse("FROM a\nONBUILD   RUN echo \\\n  hi\n", "Dockerfile").unwrap();
        let Instruction::OnBuild(ob) = &df.stages[0].steps[0].instruction else {
            panic!()
        };
        assert_eq!(ob.text, "RUN echo   hi");
        assert_eq!(
            ob.instruction,
            Instruction::Run(Run {
                command: CommandLine::Shell("echo   hi".into()),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None,
            })
        );
        assert_eq!(
            err("FROM a\nONBUILD ONBUILD RUN x\n").message,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            err("FROM a\nONBUILD FROM b\n").message,
            "FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err("FROM a\nONBUILD MAINTAINER me\n").message,
            "MAINTAINER isn't allowed as an ONBUILD trigger"
        );
        let chained = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(100_000));
        assert_eq!(
            err(&chained).message,
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            err("FROM a\nONBUILD\n").message,
            "ONBUILD requires at least one argument"
        );
    }

    #[test]
    fn healthcheck_flags_are_durations() {
        let df = parse(
            "FROM a\nHEALTHCHECK --interval=1m30s --timeout=3s --start-period=0s --start-interval=500ms --retries=3 CMD curl -f http://x/\nHEALTHCHECK NONE\nHEALTHCHECK CMD [\"true\"]\n",
            "Dockerfile",
        )
        .unwrap();
        let steps = &df.stages[0].steps;
        assert_eq!(
            steps[0].instruction,
            Instruction::Healthcheck(Healthcheck::Check {
                test: CommandLine::Shell("curl -f http://x/".into()),
                interval: Some(Duration::from_secs(90)),
                timeout: Some(Duration::from_secs(3)),
                start_period: Some(Duration::ZERO),
                start_interval: Some(Duration::from_millis(500)),
                retries: Some(3),
            })
        );
        let Instruction::Healthcheck(h) = &steps[0].instruction else {
            panic!()
        };
        assert_eq!(h.test(), vec!["CMD-SHELL", "curl -f http://x/"]);
        assert_eq!(
            steps[1].instruction,
            Instruction::Healthcheck(Healthcheck::None)
        );
        let Instruction::Healthcheck(h) = &steps[2].instruction else {
            panic!()
        };
        assert_eq!(h.test(), vec!["CMD", "true"]);
        assert_eq!(
            err("FROM a\nHEALTHCHECK --interval=5 CMD x\n").message,
            "time: missing unit in duration \"5\""
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK --interval=1us CMD x\n").message,
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK --timeout=-2s CMD x\n").message,
            "Interval \"timeout\" cannot be less than 1ms"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").message,
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK CONNECT x\n").message,
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK NONE x\n").message,
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK --foo=1 CMD x\n").message,
            "unknown flag: foo"
        );
        assert_eq!(
            err("FROM a\nHEALTHCHECK CMD\n").message,
            "Missing command after HEALTHCHECK CMD"
        );
    }

    #[test]
    fn heredocs_keep_their_bodies() {
        let source = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nCOPY <<-\"END\" /etc/conf\n\t\tkey=$v\n\tEND\nRUN 3<<A cat /dev/fd/3 && cat <<'B'\na\nA\nb\nB\nRUN [\"<<X\"]\nCMD x\n";
        let df = parse(source, "Dockerfile").unwrap();
        let steps = &df.stages[0].steps;
        let Instruction::Run(run) = &steps[0].instruction else {
            panic!()
        };
        assert_eq!(run.command, CommandLine::Shell("<<EOF".into()));
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].content, "echo $HOME\n");
        assert!(run.heredocs[0].expand);
        assert_eq!((steps[0].start_line, steps[0].end_line), (2, 4));
        let Instruction::Copy(copy) = &steps[1].instruction else {
            panic!()
        };
        let [Source::Inline(doc)] = copy.sources.as_slice() else {
            panic!("{copy:?}")
        };
        assert_eq!(doc.name, "END");
        assert!(doc.chomp);
        assert!(!doc.expand);
        assert_eq!(doc.content, "key=$v\n");
        assert_eq!(copy.dest, "/etc/conf");
        let Instruction::Run(run) = &steps[2].instruction else {
            panic!()
        };
        let docs: Vec<_> = run
            .heredocs
            .iter()
            .map(|d| (d.name.as_str(), d.fd, d.expand, d.content.as_str()))
            .collect();
        assert_eq!(docs, vec![("A", 3, true, "a\n"), ("B", 0, false, "b\n")]);
        // JSON form never has heredocs.
        let Instruction::Run(run) = &steps[3].instruction else {
            panic!()
        };
        assert!(run.heredocs.is_empty());
        assert_eq!(
            steps[4].instruction,
            Instruction::Cmd(CommandLine::Shell("x".into()))
        );
        assert_eq!(
            err("FROM a\nCOPY a <<EOF\nx\nEOF\n").message,
            "COPY cannot accept a heredoc as a destination"
        );
        let df = parse("FROM a\nONBUILD COPY <<F /f\nbody\nF\n", "Dockerfile").unwrap();
        let Instruction::OnBuild(ob) = &df.stages[0].steps[0].instruction else {
            panic!()
        };
        assert_eq!(ob.text, "COPY <<F /f\nbody\nF");
        let Instruction::Copy(copy) = &ob.instruction else {
            panic!()
        };
        assert!(matches!(&copy.sources[..], [Source::Inline(d)] if d.content == "body\n"));
        assert_eq!(
            err("FROM a\nRUN <<EOF\nnever ends\n").message,
            "unterminated heredoc"
        );
    }

    #[test]
    fn expansion_applies_to_the_instructions_docker_expands() {
        let df = parse(
            "FROM a\nENV A=1 B=\"x y\"\nCOPY --chown=$U $SRC ${DST:-/d}\nWORKDIR $HOME/w\nEXPOSE $PORTS\nRUN echo $HOME\nLABEL \"k$A\"=\"$B\"\nARG V=${A}2\nUSER ${U}\nVOLUME [\"$HOME\"]\n",
            "Dockerfile",
        )
        .unwrap();
        let lex = df.lexer();
        let env = Env::from_key_values([
            "U=me",
            "SRC=s",
            "HOME=/root",
            "PORTS=80 443/udp",
            "A=1",
            "B=x y",
        ]);
        let got: Vec<Instruction> = df.stages[0]
            .steps
            .iter()
            .map(|s| s.instruction.expand(&lex, &env).unwrap())
            .collect();
        assert_eq!(
            got[0],
            Instruction::Env(vec![
                KeyValue {
                    key: "A".into(),
                    value: "1".into()
                },
                KeyValue {
                    key: "B".into(),
                    value: "x y".into()
                },
            ])
        );
        let Instruction::Copy(c) = &got[1] else {
            panic!()
        };
        assert_eq!(
            (c.chown.as_deref(), &c.sources[..], c.dest.as_str()),
            (Some("me"), &[Source::Path("s".into())][..], "/d")
        );
        assert_eq!(got[2], Instruction::Workdir("/root/w".into()));
        assert_eq!(
            got[3],
            Instruction::Expose(vec!["80".into(), "443/udp".into()])
        );
        assert_eq!(
            got[4],
            Instruction::Run(Run {
                command: CommandLine::Shell("echo $HOME".into()),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None,
            })
        );
        assert!(!df.stages[0].steps[4].instruction.expands());
        assert_eq!(
            got[5],
            Instruction::Label(vec![KeyValue {
                key: "k1".into(),
                value: "x y".into()
            }])
        );
        assert_eq!(
            got[6],
            Instruction::Arg(vec![ArgDecl {
                name: "V".into(),
                default: Some("12".into())
            }])
        );
        assert_eq!(got[7], Instruction::User("me".into()));
        assert_eq!(got[8], Instruction::Volume(vec!["/root".into()]));
    }

    #[test]
    fn escape_directive_changes_continuations_and_expansion() {
        let df = parse(
            "# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\nWORKDIR c:\\a`$X\n",
            "Dockerfile",
        )
        .unwrap();
        assert_eq!(df.escape, '`');
        let steps = &df.stages[0].steps;
        assert_eq!(
            steps[0].instruction,
            Instruction::Run(Run {
                command: CommandLine::Shell("dir c:\\   /b".into()),
                heredocs: vec![],
                mounts: vec![],
                network: None,
                security: None,
            })
        );
        let env = Env::from_key_values(["X=1"]);
        assert_eq!(
            steps[1].instruction.expand(&df.lexer(), &env).unwrap(),
            Instruction::Workdir("c:\\a$X".into())
        );
    }

    #[test]
    fn history_text_is_what_docker_records() {
        let df = parse(
            "FROM a\nRUN apt-get update\nENV A=1\nCMD [\"sh\"]\nWORKDIR /app\nEXPOSE 80\n",
            "Dockerfile",
        )
        .unwrap();
        let shell = vec!["/bin/sh".to_string(), "-c".to_string()];
        let texts: Vec<String> = df.stages[0]
            .steps
            .iter()
            .map(|s| s.instruction.history_text(&shell))
            .collect();
        assert_eq!(
            texts,
            vec![
                "RUN /bin/sh -c apt-get update # buildkit",
                "/bin/sh -c #(nop)  ENV A=1",
                "/bin/sh -c #(nop)  CMD [\"sh\"]",
                "/bin/sh -c #(nop) WORKDIR /app",
                "/bin/sh -c #(nop)  EXPOSE 80",
            ]
        );
    }

    #[test]
    fn line_ranges_and_original_text_are_kept() {
        let source = "FROM a\n\nRUN a && \\\n    b\n# c\nLABEL x=y\n";
        let df = parse(source, "Dockerfile").unwrap();
        let s = &df.stages[0].steps;
        assert_eq!((s[0].start_line, s[0].end_line), (3, 4));
        assert_eq!(s[0].original, "RUN a &&     b");
        assert_eq!(&source[s[0].span.clone()], "RUN a && \\\n    b");
        assert_eq!((s[1].start_line, s[1].end_line), (6, 6));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(source in "(?s).{0,200}") {
            if let Err(e) = parse(&source, "Dockerfile") {
                proptest::prop_assert!(e.span().end <= source.len());
            }
        }

        #[test]
        fn parsing_dockerfile_like_text_never_panics(
            lines in proptest::collection::vec(
                "(FROM|RUN|COPY|ADD|ENV|ARG|ONBUILD|HEALTHCHECK|LABEL|#|) ?(--[a-z]+(=[a-z$]*)?)? ?[a-z\"'\\\\`$<{}\\[\\], =:-]{0,20}",
                0..8,
            )
        ) {
            let source = lines.join("\n");
            let parsed = parse(&source, "Dockerfile");
            if let Err(e) = &parsed {
                proptest::prop_assert!(e.span().end <= source.len());
                proptest::prop_assert!(source.is_char_boundary(e.span().start));
            }
            if let Ok(df) = parsed {
                let lex = df.lexer();
                for stage in &df.stages {
                    for step in &stage.steps {
                        let _ = step.instruction.expand(&lex, &Env::new());
                        let _ = step.instruction.history_text(&[]);
                    }
                }
            }
        }
    }
}
