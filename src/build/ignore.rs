//! `.dockerignore`: which paths of a build context are left out.
//!
//! The file format is moby/patternmatcher's `ignorefile.ReadAll` (comments,
//! blank lines, `!` exceptions, `filepath.Clean`, a leading `/` dropped) and
//! matching is its `MatchesOrParentMatches`: each pattern is Go
//! `filepath.Match` syntax per path segment (`*`, `?`, `[a-z]`, `[^a-z]`, `\`
//! escapes) plus `**` for any number of segments; a pattern matching a
//! directory excludes everything below it; the last matching pattern wins.
//!
//! `Dockerfile` and `.dockerignore` follow the rules like any other path: the
//! engine reads the Dockerfile and the ignore file straight from disk whatever
//! the patterns say (Docker always sends them to the builder), but a `COPY`
//! of them sees them only if they are not excluded.

use std::path::{Path, PathBuf};

/// A `.dockerignore` that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A lone `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    /// A pattern Go's `filepath.Match` rejects (`[`, `[]`, a trailing `\`, …).
    #[error("syntax error in pattern {pattern:?}")]
    BadPattern {
        /// The pattern as cleaned.
        pattern: String,
    },
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: a prefix (the pattern without its trailing `**`).
    Prefix,
    /// `**/name` or `**name`: a suffix (the pattern without its leading `**`).
    Suffix,
    Regex(regex::Regex),
}

/// One cleaned pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern after cleaning, without its `!`.
    pub text: String,
    /// A `!` exception: re-includes what it matches.
    pub exception: bool,
    segments: Vec<String>,
    kind: Kind,
}

impl Pattern {
    fn new(text: String, exception: bool) -> Result<Self, IgnoreError> {
        validate_go_pattern(&text).map_err(|()| IgnoreError::BadPattern {
            pattern: text.clone(),
        })?;
        let kind = compile(&text).ok_or_else(|| IgnoreError::BadPattern {
            pattern: text.clone(),
        })?;
        Ok(Self {
            segments: text.split('/').map(str::to_string).collect(),
            text,
            exception,
            kind,
        })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix => path.starts_with(&self.text[..self.text.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.text[2..];
                path.ends_with(suffix)
                    || suffix
                        .strip_prefix('/')
                        .is_some_and(|s| path == s)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Reads a `.dockerignore`'s text: one pattern per line, `#` lines are
    /// comments, surrounding whitespace is ignored, `!` starts an exception.
    pub fn from_file_text(text: &str) -> Result<Self, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut p = String::new();
            if !pattern.is_empty() {
                p = go_clean(pattern);
                if p.len() > 1 && p.starts_with('/') {
                    p.remove(0);
                }
            }
            if invert {
                p.insert(0, '!');
            }
            lines.push(p);
        }
        Self::new(lines.iter().map(String::as_str))
    }

    /// A matcher from patterns as `patternmatcher.New` takes them.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, IgnoreError> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let p = go_clean(p);
            let (exception, text) = match p.strip_prefix('!') {
                Some("") => return Err(IgnoreError::LoneExclamation),
                Some(rest) => (true, rest.to_string()),
                None => (false, p),
            };
            out.push(Pattern::new(text, exception)?);
        }
        Ok(Self { patterns: out })
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Whether `rel_path` (slash-separated, relative to the context root) is
    /// excluded: the last pattern that matches it or one of its parent
    /// directories decides. The context root itself is never excluded.
    pub fn matches(&self, rel_path: &str) -> bool {
        let file = go_clean(rel_path);
        if file == "." {
            return false;
        }
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an
            // exception a path that is not excluded.
            if pattern.exception != matched {
                continue;
            }
            let mut hit = pattern.matches(&file);
            if !hit {
                for i in 0..parents.len() {
                    if pattern.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exception;
            }
        }
        matched
    }

    /// Whether a walker must still descend into the excluded directory `dir`
    /// because an exception might re-include something below it.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = go_clean(dir);
        let parts: Vec<&str> = if dir == "." {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        self.patterns
            .iter()
            .filter(|p| p.exception)
            .any(|p| exception_reaches_below(&p.segments, &parts))
    }
}

/// Whether a pattern of `segments` could match a path strictly below `dir`.
fn exception_reaches_below(segments: &[String], dir: &[&str]) -> bool {
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains("**") {
            return true;
        }
        let Some(part) = dir.get(i) else {
            // The pattern goes deeper than `dir`.
            return true;
        };
        if !segment_matches(seg, part) {
            return false;
        }
    }
    false
}

fn segment_matches(segment: &str, name: &str) -> bool {
    match compile(segment) {
        Some(Kind::Exact) => segment == name,
        Some(Kind::Regex(re)) => re.is_match(name),
        // `**` forms are handled by the caller; an unusable segment cannot
        // be ruled out.
        _ => true,
    }
}

/// The pattern as patternmatcher compiles it: an exact string, a prefix
/// (`dir/**`), a suffix (`**/name`) or a regular expression.
fn compile(pattern: &str) -> Option<Kind> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut k = 0;
    let mut i = 0;
    while k < chars.len() {
        let ch = chars[k];
        k += 1;
        if ch == '*' {
            if chars.get(k) == Some(&'*') {
                k += 1;
                // `**/` is `**`.
                if chars.get(k) == Some(&'/') {
                    k += 1;
                }
                if k >= chars.len() {
                    // A trailing `**` matches everything, as in .gitignore.
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    // Any number of directories, including none.
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if i == 0 {
                    detected = Detected::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            detected = Detected::Regex;
        } else if matches!(ch, '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$') {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            match chars.get(k) {
                Some(&next) => {
                    k += 1;
                    re.push('\\');
                    re.push(next);
                    detected = Detected::Regex;
                }
                None => re.push_str("\\\\"),
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            detected = Detected::Regex;
        } else {
            re.push(ch);
        }
        i += 1;
    }
    Some(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix,
        Detected::Suffix => Kind::Suffix,
        Detected::Regex => {
            re.push('$');
            Kind::Regex(regex::Regex::new(&re).ok()?)
        }
    })
}

/// Go's `filepath.Match` syntax check: bracket classes must be closed and
/// well-formed, and `\` must escape something.
fn validate_go_pattern(pattern: &str) -> Result<(), ()> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut k = 0;
    // One class member: `-` and `]` may not start one; `\` escapes.
    let esc = |k: &mut usize| -> Result<(), ()> {
        match chars.get(*k) {
            None | Some('-' | ']') => Err(()),
            Some('\\') => {
                *k += 1;
                chars.get(*k).ok_or(())?;
                *k += 1;
                Ok(())
            }
            Some(_) => {
                *k += 1;
                Ok(())
            }
        }
    };
    while k < chars.len() {
        match chars[k] {
            '\\' => {
                k += 1;
                if k >= chars.len() {
                    return Err(());
                }
                k += 1;
            }
            '[' => {
                k += 1;
                if chars.get(k) == Some(&'^') {
                    k += 1;
                }
                let mut ranges = 0;
                loop {
                    if chars.get(k) == Some(&']') && ranges > 0 {
                        k += 1;
                        break;
                    }
                    esc(&mut k)?;
                    if chars.get(k) == Some(&'-') {
                        k += 1;
                        esc(&mut k)?;
                    }
                    if k >= chars.len() {
                        return Err(());
                    }
                    ranges += 1;
                }
            }
            _ => k += 1,
        }
    }
    Ok(())
}

/// Go's `path.Clean` on a slash-separated path.
pub fn go_clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The ignore file for a build: `<Dockerfile>.dockerignore` next to the
/// Dockerfile when it exists (BuildKit's per-Dockerfile ignore file), else
/// the context's `.dockerignore` when it exists.
pub fn ignore_file_for(context: &Path, dockerfile: &Path) -> Option<PathBuf> {
    let dockerfile = if dockerfile.is_absolute() {
        dockerfile.to_path_buf()
    } else {
        context.join(dockerfile)
    };
    if let Some(name) = dockerfile.file_name() {
        let mut own = name.to_os_string();
        own.push(".dockerignore");
        let candidate = dockerfile.with_file_name(own);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let shared = context.join(".dockerignore");
    shared.is_file().then_some(shared)
}
