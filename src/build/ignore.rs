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
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Vec<Vec<String>> {
        let path = format!(
            "{}/tests/fixtures/dockerignore/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn patternmatcher_single_pattern_table() {
        let mut failures = Vec::new();
        for row in table("matches.tsv") {
            let m = Matcher::new([row[0].as_str()]).unwrap();
            let want = row[2] != "fail";
            if m.matches(&row[1]) != want {
                failures.push(format!("{:?} on {:?}: want {want}", row[0], row[1]));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn patternmatcher_multi_pattern_table() {
        for row in table("multi.tsv") {
            let m = Matcher::new(row[0].split(' ')).unwrap();
            assert_eq!(m.matches(&row[1]), row[2] != "fail", "{row:?}");
        }
    }

    #[test]
    fn go_filepath_match_table() {
        for row in table("filepath-match.tsv") {
            match (Matcher::new([row[0].as_str()]), row[2].as_str()) {
                (Err(IgnoreError::BadPattern { .. }), "error") => {}
                (Ok(m), want @ ("true" | "false")) => {
                    assert_eq!(m.matches(&row[1]), want == "true", "{row:?}");
                }
                (got, _) => panic!("{row:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn file_text_is_read_as_docker_reads_it() {
        let text = "\u{feff}# comment\n\n  node_modules  \n/build/\n./dist/../out\n!  out/keep.txt\n #not a comment\nDockerfile\n";
        let m = Matcher::from_file_text(text).unwrap();
        let pats: Vec<(bool, &str)> = m
            .patterns()
            .iter()
            .map(|p| (p.exception, p.text.as_str()))
            .collect();
        assert_eq!(
            pats,
            vec![
                (false, "node_modules"),
                (false, "build"),
                (false, "out"),
                (true, "out/keep.txt"),
                (false, "#not a comment"),
                (false, "Dockerfile"),
            ]
        );
        assert!(m.matches("node_modules/x/y.js"));
        assert!(m.matches("build"));
        assert!(m.matches("out/other"));
        assert!(!m.matches("out/keep.txt"));
        assert!(m.matches("Dockerfile"));
        assert!(!m.matches("src/Dockerfile"));
        assert!(!m.matches("."));
        assert!(!m.matches("src/main.rs"));
        assert_eq!(
            Matcher::from_file_text("a\n!\n").unwrap_err(),
            IgnoreError::LoneExclamation
        );
        assert!(matches!(
            Matcher::from_file_text("[a").unwrap_err(),
            IgnoreError::BadPattern { .. }
        ));
    }

    #[test]
    fn walker_descends_only_where_an_exception_can_reach() {
        let m = Matcher::from_file_text("docs\n!docs/api/*.md\nvendor\n!**/LICENSE\n").unwrap();
        assert!(m.matches("docs"));
        assert!(m.may_include_below("docs"));
        assert!(m.may_include_below("docs/api"));
        assert!(!m.matches("docs/api/x.md"));
        // `**` can reach anything.
        assert!(m.may_include_below("vendor"));
        assert!(!m.matches("vendor/x/LICENSE"));

        let m = Matcher::from_file_text("docs\n!docs/api/*.md\nvendor\n").unwrap();
        assert!(!m.may_include_below("vendor"));
        assert!(!m.may_include_below("docs/other"));
        assert!(m.may_include_below("docs"));
        let m = Matcher::from_file_text("*\n!src\n").unwrap();
        assert!(!m.may_include_below("target"));
        assert!(!m.matches("src/lib.rs"));
    }

    #[test]
    fn per_dockerfile_ignore_file_takes_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        std::fs::create_dir(ctx.join("sub")).unwrap();
        assert_eq!(ignore_file_for(ctx, Path::new("sub/app.Dockerfile")), None);
        std::fs::write(ctx.join(".dockerignore"), "x\n").unwrap();
        assert_eq!(
            ignore_file_for(ctx, Path::new("sub/app.Dockerfile")),
            Some(ctx.join(".dockerignore"))
        );
        std::fs::write(ctx.join("sub/app.Dockerfile.dockerignore"), "y\n").unwrap();
        assert_eq!(
            ignore_file_for(ctx, Path::new("sub/app.Dockerfile")),
            Some(ctx.join("sub/app.Dockerfile.dockerignore"))
        );
        assert_eq!(
            ignore_file_for(ctx, &ctx.join("Dockerfile")),
            Some(ctx.join(".dockerignore"))
        );
    }

    #[test]
    fn go_clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a//b/./c", "a/b/c"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("/", "/"),
            ("!a/../b", "b"),
        ] {
            if let Some(rest) = input.strip_prefix('!') {
                assert_eq!(go_clean(rest), want);
            } else {
                assert_eq!(go_clean(input), want, "{input}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn matching_never_panics(text in "[a-z*?\\[\\]\\\\!/.^-]{0,12}(\n[a-z*?\\[\\]!/.-]{0,8}){0,3}", path in "[a-z/.]{0,12}") {
            if let Ok(m) = Matcher::from_file_text(&text) {
                let _ = m.matches(&path);
                let _ = m.may_include_below(&path);
            }
        }
    }
}
