//! Loading a stack: finding the file, reading `.env`, parsing each `-f` file
//! with its front end, interpolating, decoding, merging and validating.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, NamedSource};
use thiserror::Error;

use super::decode::{DecodeContext, decode_stack};
use super::diag::{FileId, Problem, ProblemKind, Problems, Sources, Span};
use super::envfile::parse_dotenv;
use super::interpolate::{InterpolateError, Lookup, Vars, interpolate};
use super::merge::merge_stack;
use super::model::StackSpec;
use super::tree::Value;
use super::validate::validate;

/// File names looked for in the project directory, in order.
pub const DISCOVERY_ORDER: &[&str] = &[
    "stack.kdl",
    "stack.toml",
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// The syntax of a stack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `stack.kdl`.
    Kdl,
    /// `stack.toml`.
    Toml,
    /// A docker-compose YAML file, imported.
    Compose,
}

impl Format {
    /// The format of `path`, from its extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "kdl" => Some(Self::Kdl),
            "toml" => Some(Self::Toml),
            "yml" | "yaml" => Some(Self::Compose),
            _ => None,
        }
    }
}

/// Why a stack could not be loaded.
#[derive(Debug, Error)]
pub enum SpecError {
    /// No stack file in the project directory.
    #[error("no stack file found in {}", dir.display())]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's extension says nothing about its syntax.
    #[error("cannot tell the syntax of {} from its name", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The files have errors; every problem found is in `problems`.
    #[error("{}", invalid_headline(problems))]
    Invalid {
        /// Every problem (errors and warnings) in file order.
        problems: Vec<Problem>,
    },
}

fn invalid_headline(problems: &[Problem]) -> String {
    let errors = problems.iter().filter(|p| p.is_error()).count();
    match errors {
        1 => "the stack file has an error".to_string(),
        n => format!("the stack file has {n} errors"),
    }
}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let code = match self {
            Self::NotFound { .. } => "stack::spec::not_found",
            Self::Read { .. } => "stack::spec::io",
            Self::UnknownFormat { .. } => "stack::spec::unknown_format",
            Self::Invalid { .. } => "stack::spec::invalid",
        };
        Some(Box::new(code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        match self {
            Self::NotFound { .. } => Some(Box::new(format!(
                "create one of {} or name a file with -f",
                DISCOVERY_ORDER.join(", ")
            ))),
            Self::UnknownFormat { .. } => {
                Some(Box::new("stack files end in .kdl, .toml, .yml or .yaml"))
            }
            _ => None,
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        match self {
            Self::Invalid { problems } => {
                Some(Box::new(problems.iter().map(|p| p as &dyn Diagnostic)))
            }
            _ => None,
        }
    }
}

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Stack files, merged in order; empty means discover one in `project_dir`.
    pub files: Vec<PathBuf>,
    /// The project directory: discovery and `.env` happen here.
    pub project_dir: PathBuf,
    /// Extra env files for interpolation (`--env-file`), applied after `.env`.
    pub env_files: Vec<PathBuf>,
    /// The environment to interpolate from; `None` is the process environment.
    pub environment: Option<Vec<(String, String)>>,
}

/// A loaded, valid stack.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated model.
    pub spec: StackSpec,
    /// Warnings (unsupported compose keys, unset variables).
    pub warnings: Vec<Problem>,
    /// The stack files read, in merge order.
    pub files: Vec<PathBuf>,
    /// The text of every file read, for diagnostics.
    pub sources: Sources,
    /// The variables the files looked up (set or not): all of the
    /// environment that matters to loading them again.
    pub variables: BTreeSet<String>,
}

/// Finds the stack file in `dir`.
pub fn discover(dir: &Path) -> Result<PathBuf, SpecError> {
    DISCOVERY_ORDER
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| SpecError::NotFound {
            dir: dir.to_path_buf(),
        })
}

fn read(path: &Path) -> Result<String, SpecError> {
    std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn display_name(path: &Path, project_dir: &Path) -> String {
    path.strip_prefix(project_dir)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Loads, merges and validates a stack. On failure, every problem of every
/// file is in [`SpecError::Invalid`].
pub fn load(opts: &LoadOptions) -> Result<Loaded, SpecError> {
    let files = if opts.files.is_empty() {
        vec![discover(&opts.project_dir)?]
    } else {
        opts.files
            .iter()
            .map(|f| {
                if f.is_absolute() {
                    f.clone()
                } else {
                    opts.project_dir.join(f)
                }
            })
            .collect()
    };
    let mut sources = Sources::new();
    let mut problems = Problems::new();
    let vars = variables(opts, &mut sources, &mut problems)?;

    let mut merged: Option<StackSpec> = None;
    for path in &files {
        let format =
            Format::of(path).ok_or_else(|| SpecError::UnknownFormat { path: path.clone() })?;
        let text = read(path)?;
        let file = sources.add(path, display_name(path, &opts.project_dir), text);
        let base_dir = path.parent().unwrap_or(&opts.project_dir).to_path_buf();
        if let Some(spec) = parse_file(&sources, file, format, &base_dir, &vars, &mut problems) {
            match &mut merged {
                Some(base) => merge_stack(base, spec),
                None => merged = Some(spec),
            }
        }
    }
    let mut spec = merged.unwrap_or_default();
    spec.variables = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let partial = problems.has_errors();
    validate(&spec, &sources, partial, &mut problems);
    check_env_files(&spec, &mut sources, &vars, &mut problems);
    problems.sort_by_location();
    if problems.has_errors() {
        return Err(SpecError::Invalid {
            problems: problems.into_vec(),
        });
    }
    Ok(Loaded {
        spec,
        warnings: problems.into_vec(),
        files,
        sources,
        variables: vars.read(),
    })
}

/// The interpolation variables: environment, then `.env` beside the project,
/// then `--env-file`s.
fn variables(
    opts: &LoadOptions,
    sources: &mut Sources,
    problems: &mut Problems,
) -> Result<Vars, SpecError> {
    let mut vars = match &opts.environment {
        Some(env) => Vars::with_environment(env.iter().cloned()),
        None => Vars::with_process_env(),
    };
    // Like compose, `--env-file` replaces `.env` rather than adding to it.
    let dotenv = opts.project_dir.join(".env");
    let mut env_files: Vec<PathBuf> = Vec::new();
    if opts.env_files.is_empty() && dotenv.is_file() {
        env_files.push(dotenv);
    }
    env_files.extend(opts.env_files.iter().map(|f| {
        if f.is_absolute() {
            f.clone()
        } else {
            opts.project_dir.join(f)
        }
    }));
    for path in env_files {
        let text = read(&path)?;
        let id = sources.add(&path, display_name(&path, &opts.project_dir), text.clone());
        if let Err(e) = vars.extend_from_dotenv(&text) {
            let source = sources.file(id).map(|f| Arc::clone(&f.text));
            let mut p = Problem::error(
                ProblemKind::InvalidValue,
                format!("invalid env file: {}", crate::error_chain(&e)),
            );
            if let Some(source) = source {
                p = p.at(&source, Span::from_range(e.range()), e.to_string());
            }
            problems.push(p);
        }
    }
    Ok(vars)
}

/// Parses, interpolates and decodes one file.
pub fn parse_file(
    sources: &Sources,
    file: FileId,
    format: Format,
    base_dir: &Path,
    vars: &dyn Lookup,
    problems: &mut Problems,
) -> Option<StackSpec> {
    let source = Arc::clone(&sources.file(file)?.text);
    let text = sources.text(file);
    let mut tree = match format {
        Format::Kdl => super::kdl::parse(text, &source, problems)?,
        Format::Toml => super::toml::parse(text, &source, problems)?,
        Format::Compose => super::compose::parse(text, &source, problems)?,
    };
    interpolate_tree(&mut tree, text, &source, vars, problems);
    let cx = DecodeContext {
        file,
        source,
        base_dir,
        vars,
    };
    Some(decode_stack(&tree, &cx, problems))
}

/// Parses one stack file given as text; for tests, benchmarks and fuzzing.
pub fn parse_str(
    text: &str,
    name: &str,
    format: Format,
    base_dir: &Path,
    vars: &dyn Lookup,
) -> (Option<StackSpec>, Sources, Problems) {
    let mut sources = Sources::new();
    let file = sources.add(Path::new(name), name.to_string(), text.to_string());
    let mut problems = Problems::new();
    let spec = parse_file(&sources, file, format, base_dir, vars, &mut problems);
    if let Some(spec) = &spec {
        let partial = problems.has_errors();
        validate(spec, &sources, partial, &mut problems);
    }
    problems.sort_by_location();
    (spec, sources, problems)
}

/// Replaces `${VAR}` expressions in every string of the tree.
fn interpolate_tree(
    tree: &mut Value,
    text: &str,
    source: &Arc<NamedSource<String>>,
    vars: &dyn Lookup,
    problems: &mut Problems,
) {
    let mut warned: BTreeSet<String> = BTreeSet::new();
    tree.for_each_str_mut(&mut |s, span| {
        if !s.contains('$') {
            return;
        }
        match interpolate(s, vars) {
            Ok(done) => {
                for name in done.unset {
                    if warned.insert(name.clone()) {
                        problems.push(
                            Problem::warning(
                                ProblemKind::Interpolation,
                                format!("variable {name} is not set, using an empty string"),
                            )
                            .at(source, span, "used here")
                            .help(format!(
                                "set {name} in the environment or in .env, or give a default: ${{{name}:-value}}"
                            )),
                        );
                    }
                }
                *s = done.value;
            }
            Err(e) => {
                let at = inner_span(text, span, s, &e);
                let mut p = Problem::error(ProblemKind::Interpolation, e.to_string())
                    .at(source, at, short_label(&e));
                if let Some(help) = e.help() {
                    p = p.help(help);
                }
                problems.push(p);
            }
        }
    });
}

fn short_label(e: &InterpolateError) -> &'static str {
    match e {
        InterpolateError::MissingRequired { .. } => "required here",
        _ => "here",
    }
}

/// The span of the failing expression inside a string value: exact when the
/// string is written without escapes (the common case), else the whole value.
fn inner_span(text: &str, span: Span, value: &str, e: &InterpolateError) -> Span {
    let raw = text.get(span.offset..span.end()).unwrap_or("");
    let range = e.range();
    let Some(pos) = raw.find(value).filter(|_| !value.is_empty()) else {
        return span;
    };
    if range.end > value.len() {
        return span;
    }
    Span::new(span.offset + pos + range.start, range.len())
}

/// Reads every env file the services name, reporting missing files and syntax
/// errors with their line.
fn check_env_files(spec: &StackSpec, sources: &mut Sources, vars: &Vars, problems: &mut Problems) {
    let mut seen: BTreeSet<&Path> = BTreeSet::new();
    for service in spec.services.values() {
        for env_file in &service.env_file {
            if !seen.insert(env_file.value.as_path()) {
                continue;
            }
            let referrer = sources
                .file(env_file.origin.file)
                .map(|f| Arc::clone(&f.text));
            match std::fs::read_to_string(&env_file.value) {
                Ok(text) => {
                    if let Err(e) = parse_dotenv(&text, vars) {
                        let name = env_file.value.display().to_string();
                        let id = sources.add(&env_file.value, name, text);
                        let mut p = Problem::error(
                            ProblemKind::InvalidValue,
                            format!("invalid env file: {}", crate::error_chain(&e)),
                        );
                        if let Some(file) = sources.file(id) {
                            p = p.at(&file.text, Span::from_range(e.range()), e.to_string());
                        }
                        problems.push(p);
                    }
                }
                Err(err) => {
                    let mut p = Problem::error(
                        ProblemKind::Io,
                        format!("cannot read env file {}: {err}", env_file.value.display()),
                    );
                    if let Some(src) = referrer {
                        p = p.at(&src, env_file.origin.span, "named here");
                    }
                    problems.push(p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_names_the_variables_the_files_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "FROM_DOTENV=${IN_DOTENV:-x}\n").unwrap();
        std::fs::write(
            dir.path().join("stack.kdl"),
            "service \"web\" {\n image \"bb:${TAG}\"\n env A=\"${FROM_DOTENV}\" B=\"${UNSET:-b}\"\n}\n",
        )
        .unwrap();
        let loaded = load(&LoadOptions {
            project_dir: dir.path().to_path_buf(),
            environment: Some(vec![
                ("TAG".into(), "1".into()),
                ("SECRET".into(), "hunter2".into()),
            ]),
            ..Default::default()
        })
        .unwrap();
        let names: Vec<&str> = loaded.variables.iter().map(String::as_str).collect();
        assert_eq!(names, ["FROM_DOTENV", "IN_DOTENV", "TAG", "UNSET"]);
    }
}
