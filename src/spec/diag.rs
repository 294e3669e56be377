//! Diagnostics for stack files: where a problem is (file, byte span) and how it is
//! rendered (miette, with the source line and a label).
//!
//! Every front end and the validator report through [`Problems`], so a file with
//! ten mistakes shows ten diagnostics, not the first one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, Severity, SourceCode, SourceSpan};

/// Index of a loaded file in a [`Sources`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Span {
    /// A span from a byte range.
    pub fn new(offset: usize, len: usize) -> Self {
        Self { offset, len }
    }

    /// A span covering a `start..end` byte range.
    pub fn from_range(range: std::ops::Range<usize>) -> Self {
        Self {
            offset: range.start,
            len: range.end.saturating_sub(range.start),
        }
    }

    /// The byte just past the end of the span.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

impl From<Span> for SourceSpan {
    fn from(span: Span) -> Self {
        SourceSpan::new(span.offset.into(), span.len)
    }
}

/// Where a value came from: a file and a span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Origin {
    /// The file.
    pub file: FileId,
    /// The bytes in that file.
    pub span: Span,
}

/// The text of every stack file, `.env` and env file read while loading a stack,
/// kept so diagnostics can show the offending line.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<SourceFile>,
}

/// One loaded file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path the file was read from.
    pub path: PathBuf,
    /// Its text, shared with the diagnostics that point into it.
    pub text: Arc<NamedSource<String>>,
}

impl Sources {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id. `name` is what diagnostics print.
    pub fn add(&mut self, path: &Path, name: String, text: String) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile {
            path: path.to_path_buf(),
            text: Arc::new(NamedSource::new(name, text).with_language(language_of(path))),
        });
        id
    }

    /// The file behind `id`.
    pub fn file(&self, id: FileId) -> Option<&SourceFile> {
        usize::try_from(id.0).ok().and_then(|i| self.files.get(i))
    }

    /// The text of file `id` (empty when unknown).
    pub fn text(&self, id: FileId) -> &str {
        self.file(id).map_or("", |f| f.text.inner().as_str())
    }
}

fn language_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("kdl") => "kdl",
        Some("toml") => "toml",
        Some("yml" | "yaml") => "yaml",
        _ => "text",
    }
}

/// What kind of problem a diagnostic reports; each has a stable code
/// (`stack::spec::<kind>`) that tests and tools can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The file is not well-formed KDL, TOML or YAML.
    Syntax,
    /// A key or node the model does not know.
    UnknownKey,
    /// A value of the wrong type (a list where a string belongs, …).
    WrongType,
    /// A value of the right type that does not parse (port, size, duration, …).
    InvalidValue,
    /// A key given twice where only one is allowed.
    Duplicate,
    /// A reference to a service, network or volume that is not declared.
    UnknownReference,
    /// Services that depend on each other in a circle.
    Cycle,
    /// Two services publishing the same host address, port and protocol.
    PortConflict,
    /// A `${VAR:?message}` whose variable is not set, or a malformed `${…}`.
    Interpolation,
    /// A service with neither an image nor a build.
    MissingImage,
    /// A compose key that the model cannot represent (a warning).
    Unsupported,
    /// A file named by the stack (env file) could not be read.
    Io,
}

impl ProblemKind {
    /// The stable diagnostic code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Syntax => "stack::spec::syntax",
            Self::UnknownKey => "stack::spec::unknown_key",
            Self::WrongType => "stack::spec::wrong_type",
            Self::InvalidValue => "stack::spec::invalid_value",
            Self::Duplicate => "stack::spec::duplicate",
            Self::UnknownReference => "stack::spec::unknown_reference",
            Self::Cycle => "stack::spec::cycle",
            Self::PortConflict => "stack::spec::port_conflict",
            Self::Interpolation => "stack::spec::interpolation",
            Self::MissingImage => "stack::spec::missing_image",
            Self::Unsupported => "stack::spec::unsupported",
            Self::Io => "stack::spec::io",
        }
    }
}

/// One problem in a stack file, rendered by miette with its source line.
#[derive(Debug, Clone)]
pub struct Problem {
    /// What went wrong, as a code.
    pub kind: ProblemKind,
    /// Error or warning.
    pub severity: Severity,
    /// The headline.
    pub message: String,
    /// The file and text it points into, if any.
    pub source: Option<Arc<NamedSource<String>>>,
    /// The labelled spans: the first is primary.
    pub labels: Vec<(Span, String)>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Problem {
    /// An error of `kind` with a headline.
    pub fn error(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            severity: Severity::Error,
            message: message.into(),
            source: None,
            labels: Vec::new(),
            help: None,
        }
    }

    /// A warning of `kind` with a headline.
    pub fn warning(kind: ProblemKind, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(kind, message)
        }
    }

    /// Points the problem at `span` of `source` with a label.
    pub fn at(
        mut self,
        source: &Arc<NamedSource<String>>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        self.source = Some(Arc::clone(source));
        self.labels.push((span, label.into()));
        self
    }

    /// Adds a secondary label in the same file.
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors, false for warnings.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column` of the primary label, when there is one.
    pub fn location(&self) -> Option<String> {
        let source = self.source.as_ref()?;
        let (span, _) = self.labels.first()?;
        let (line, column) = line_column(source.inner(), span.offset);
        Some(format!("{}:{line}:{column}", source.name()))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.source.is_none() || self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().enumerate().map(
            |(i, (span, label))| {
                let text = (!label.is_empty()).then(|| label.clone());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, *span)
                } else {
                    LabeledSpan::new_with_span(text, *span)
                }
            },
        )))
    }
}

/// A collector of problems, in the order they were found.
#[derive(Debug, Default, Clone)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(&mut self, problem: Problem) {
        self.list.push(problem);
    }

    /// True when at least one recorded problem is an error.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Problem::is_error)
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Moves the recorded problems out.
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }

    /// The recorded problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.list.iter()
    }

    /// Orders problems by file and position, the order a reader fixes them in.
    /// Problems without a location keep their place at the front.
    pub fn sort_by_location(&mut self) {
        self.list.sort_by_key(|p| {
            let name = p.source.as_ref().map(|s| s.name().to_string());
            let offset = p.labels.first().map(|(span, _)| span.offset);
            (name, offset)
        });
    }

    /// Appends every problem of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.list.extend(other.list);
    }
}

/// Turns a char offset into a byte offset in `text` (clamped to its length).
pub fn char_to_byte(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(b, _)| b)
}

/// Renders a diagnostic with its source lines and labels (file, line and
/// column), in color or not, 100 columns wide: how the CLI prints problems
/// and how the daemon reports a stack file it cannot apply.
pub fn render(diagnostic: &dyn miette::Diagnostic, color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, diagnostic).is_err() {
        out = format!("error: {diagnostic}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_not_bytes() {
        let text = "a = 1\nnäme = \"x\"\n";
        let offset = text.find('=').unwrap();
        assert_eq!(line_column(text, offset), (1, 3));
        let second = text.rfind('=').unwrap();
        assert_eq!(line_column(text, second), (2, 6));
    }

    #[test]
    fn char_offsets_convert_to_byte_offsets() {
        assert_eq!(char_to_byte("ääb", 2), 4);
        assert_eq!(char_to_byte("ab", 9), 2);
    }

    #[test]
    fn problems_report_errors_but_not_warnings_as_errors() {
        let mut problems = Problems::new();
        problems.push(Problem::warning(ProblemKind::Unsupported, "w"));
        assert!(!problems.has_errors());
        problems.push(Problem::error(ProblemKind::Syntax, "e"));
        assert!(problems.has_errors());
        assert_eq!(problems.len(), 2);
    }
}
