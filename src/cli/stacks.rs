//! `stack up`, `down`, `plan`, `apply`, `status` and `ls`: the stack file
//! is checked here (problems are printed with their file, line and
//! column) and the daemon keeps the stack converged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use miette::{IntoDiagnostic, miette};

use super::daemon::{api_error, client};
use crate::api::client::segment;
use crate::daemon::stacks::{Report, StackSource, StackStatus};
use crate::spec::load::LoadOptions;

/// The stack's name: the file's `name`, else the project directory's name
/// made a valid one (lowercase, `[a-z0-9_-]`), as Compose does.
pub fn stack_name(declared: Option<&str>, project_dir: &Path) -> String {
    if let Some(name) = declared {
        return name.to_string();
    }
    let base = project_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = base
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    let name = name.trim_start_matches(['-', '_']).to_string();
    if name.is_empty() {
        "default".to_string()
    } else {
        name
    }
}

/// Loads the stack here (so problems print with colors and sources) and
/// makes the source the daemon loads again.
pub fn source(options: &LoadOptions) -> miette::Result<StackSource> {
    Ok(load_source(options)?.0)
}

/// [`source`], and the stack as loaded here.
pub fn load_source(
    options: &LoadOptions,
) -> miette::Result<(StackSource, crate::spec::model::StackSpec)> {
    let loaded = crate::spec::load::load(options)?;
    for w in &loaded.warnings {
        eprint!(
            "{}",
            super::output::render(w, super::output::color_stderr())
        );
    }
    let source = StackSource {
        name: stack_name(loaded.spec.name.as_deref(), &options.project_dir),
        project_dir: options.project_dir.clone(),
        files: loaded.files.clone(),
        env_files: options.env_files.clone(),
        // Only what the files read: the daemon keeps the source on disk,
        // and unrelated variables may be secrets.
        environment: std::env::vars()
            .filter(|(name, _)| loaded.variables.contains(name))
            .collect(),
        scale: Default::default(),
        options: Default::default(),
    };
    Ok((source, loaded.spec))
}

pub(super) fn print_report(out: &mut impl Write, report: &Report) -> miette::Result<()> {
    for line in &report.done {
        writeln!(out, " ✔ {line}").into_diagnostic()?;
    }
    for line in &report.failed {
        writeln!(out, " ✘ {line}").into_diagnostic()?;
    }
    for line in &report.skipped {
        writeln!(out, " - not done: {line}").into_diagnostic()?;
    }
    Ok(())
}

pub(super) fn status_failed(status: &StackStatus) -> miette::Result<i32> {
    match &status.last_error {
        Some(e) => Err(miette!("stack {}: {e}", status.name)),
        None => Ok(0),
    }
}

/// `stack plan`: what the next apply would do, and why, without doing it.
pub fn plan(root: &Path, options: &LoadOptions) -> miette::Result<i32> {
    let source = source(options)?;
    let c = client(root)?;
    let steps: Vec<String> = c
        .post("/stacks/plan")
        .json(&source)
        .send_json()
        .map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    if steps.is_empty() {
        writeln!(out, "stack {} is up to date", source.name).into_diagnostic()?;
    }
    for step in steps {
        writeln!(out, "{step}").into_diagnostic()?;
    }
    Ok(0)
}

/// `stack down [-v]`: the stack's containers and networks go (and its
/// volumes with `-v`); the daemon stops keeping it.
pub fn down(
    root: &Path,
    options: &LoadOptions,
    name: Option<&str>,
    volumes: bool,
) -> miette::Result<i32> {
    let name = match name {
        Some(n) => n.to_string(),
        None => match crate::spec::load::load(options) {
            Ok(loaded) => stack_name(loaded.spec.name.as_deref(), &options.project_dir),
            // A broken file still comes down, by its directory's name.
            Err(_) => stack_name(None, &options.project_dir),
        },
    };
    let c = client(root)?;
    let path = format!("/stacks/{}", segment(&name));
    let report: Report = c
        .delete(&path)
        .query("volumes", if volumes { "1" } else { "0" })
        .send_json()
        .map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &report)?;
    Ok(if report.ok() { 0 } else { 1 })
}

/// `stack status [NAME]`: generation, last apply, last error.
pub fn status(root: &Path, options: &LoadOptions, name: Option<&str>) -> miette::Result<i32> {
    let name = match name {
        Some(n) => n.to_string(),
        None => source(options)?.name,
    };
    let c = client(root)?;
    let status: StackStatus = c
        .get(&format!("/stacks/{}", segment(&name)))
        .send_json()
        .map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "stack:       {}", status.name).into_diagnostic()?;
    writeln!(out, "directory:   {}", status.project_dir.display()).into_diagnostic()?;
    writeln!(out, "generation:  {}", status.generation).into_diagnostic()?;
    writeln!(
        out,
        "last apply:  {}",
        status.last_apply.as_deref().unwrap_or("never")
    )
    .into_diagnostic()?;
    writeln!(
        out,
        "converged:   {}",
        if status.converged { "yes" } else { "no" }
    )
    .into_diagnostic()?;
    if let Some(path) = &status.watch_path {
        writeln!(out, "source:      watch directory, {}", path.display()).into_diagnostic()?;
    }
    if let Some(at) = &status.down_at {
        writeln!(out, "down at:     {at} (its file left the watch directory)").into_diagnostic()?;
    }
    for name in &status.given_up {
        writeln!(out, "failed:      {name} (restarts given up)").into_diagnostic()?;
    }
    if let Some(wake) = &status.next_wake {
        writeln!(out, "next try:    {wake}").into_diagnostic()?;
    }
    if let Some(e) = &status.last_error {
        writeln!(out, "last error:\n{e}").into_diagnostic()?;
    }
    Ok(0)
}

/// A `SERVICE=N` argument of `stack scale` that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleArgError {
    /// No `=`.
    #[error("{0:?}: expected SERVICE=REPLICAS, as in web=3")]
    NoEquals(String),
    /// Nothing before the `=`.
    #[error("{0:?}: the service name is missing (SERVICE=REPLICAS)")]
    NoService(String),
    /// The count is no whole number ≥ 0.
    #[error("{arg:?}: the replica count {count:?} is not a whole number of 0 or more")]
    BadCount {
        /// The argument.
        arg: String,
        /// What stood for the count.
        count: String,
    },
    /// The same service twice.
    #[error("{0:?}: the service is scaled twice")]
    Twice(String),
}

/// Reads `stack scale`'s `SERVICE=N` arguments.
pub fn parse_scale(args: &[String]) -> Result<BTreeMap<String, u32>, ScaleArgError> {
    let mut wanted = BTreeMap::new();
    for arg in args {
        let (service, count) = arg
            .split_once('=')
            .ok_or_else(|| ScaleArgError::NoEquals(arg.clone()))?;
        let service = service.trim();
        if service.is_empty() {
            return Err(ScaleArgError::NoService(arg.clone()));
        }
        // `+3` reads as a u32 in Rust; a count is digits only.
        let replicas = Some(count.trim())
            .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u32>().ok())
            .ok_or_else(|| ScaleArgError::BadCount {
                arg: arg.clone(),
                count: count.to_string(),
            })?;
        if wanted.insert(service.to_string(), replicas).is_some() {
            return Err(ScaleArgError::Twice(service.to_string()));
        }
    }
    Ok(wanted)
}

/// `stack scale SERVICE=N…`: the daemon runs N replicas of each service
/// from now on, without the file changing (until the file's own count
/// changes, or `stack up` registers the stack again).
pub fn scale(
    root: &Path,
    options: &LoadOptions,
    name: Option<&str>,
    services: &[String],
) -> miette::Result<i32> {
    let wanted = parse_scale(services).map_err(|e| miette!("{e}"))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let loaded = crate::spec::load::load(options)?;
            stack_name(loaded.spec.name.as_deref(), &options.project_dir)
        }
    };
    let c = client(root)?;
    let status: StackStatus = c
        .post(&format!("/stacks/{}/scale", segment(&name)))
        .json(&wanted)
        .send_json()
        .map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &status.report)?;
    status_failed(&status)
}

/// `stack ls`: every stack the daemon keeps.
pub fn ls(root: &Path) -> miette::Result<i32> {
    let c = client(root)?;
    let stacks: Vec<StackStatus> = c.get("/stacks").send_json().map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<10} {:<11} {:<26} {:<20} DIRECTORY",
        "NAME", "STATUS", "GENERATION", "LAST APPLY", "SOURCE"
    )
    .into_diagnostic()?;
    for s in stacks {
        let state = if s.down_at.is_some() {
            "deleted"
        } else if s.last_error.is_some() {
            "error"
        } else if !s.given_up.is_empty() {
            "failed"
        } else if s.converged {
            "converged"
        } else {
            "applying"
        };
        // `watch:FILE` for the watch directory's stacks, `up` for the
        // others.
        let source = s.watch_path.as_ref().map_or_else(
            || "up".to_string(),
            |p| {
                let file = p.file_name().map(|f| f.to_string_lossy().into_owned());
                format!("watch:{}", file.unwrap_or_default())
            },
        );
        writeln!(
            out,
            "{:<20} {:<10} {:<11} {:<26} {:<20} {}",
            s.name,
            state,
            s.generation,
            s.last_apply.as_deref().unwrap_or("-"),
            source,
            s.project_dir.display()
        )
        .into_diagnostic()?;
        if let Some(e) = &s.last_error {
            writeln!(out, "    {}", error_summary(e)).into_diagnostic()?;
        }
    }
    Ok(0)
}

/// The line `stack ls` shows of a stack's error: where
/// (`file:line:column`) and what, from the rendered diagnostic.
fn error_summary(error: &str) -> String {
    let mut what = None;
    let mut at = None;
    for line in error.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix('×') {
            what = Some(rest.trim());
        }
        if let Some(rest) = line.strip_prefix("╭─[") {
            at = rest.strip_suffix(']');
            break;
        }
    }
    let first = || error.lines().map(str::trim).find(|l| !l.is_empty());
    match (at, what.or_else(first)) {
        (Some(at), Some(what)) => format!("{at}: {what}"),
        (_, Some(what)) => what.to_string(),
        (_, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_come_from_the_file_or_the_directory() {
        assert_eq!(stack_name(Some("shop"), Path::new("/x/y")), "shop");
        assert_eq!(stack_name(None, Path::new("/srv/My App.v2")), "myappv2");
        assert_eq!(stack_name(None, Path::new("/srv/_x-1")), "x-1");
        assert_eq!(stack_name(None, Path::new("/")), "default");
    }

    fn scale_args(args: &[&str]) -> Result<BTreeMap<String, u32>, ScaleArgError> {
        parse_scale(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn scale_arguments_read_service_equals_count() {
        let wanted = scale_args(&["web=3", "db=0", "api=01"]).unwrap();
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            [("api".into(), 1), ("db".into(), 0), ("web".into(), 3)]
        );
    }

    #[test]
    fn bad_scale_arguments_say_what_is_wrong() {
        let message = |args: &[&str]| scale_args(args).unwrap_err().to_string();
        assert_eq!(
            message(&["web=abc"]),
            r#""web=abc": the replica count "abc" is not a whole number of 0 or more"#
        );
        assert_eq!(
            message(&["=3"]),
            r#""=3": the service name is missing (SERVICE=REPLICAS)"#
        );
        assert_eq!(
            message(&["web=-1"]),
            r#""web=-1": the replica count "-1" is not a whole number of 0 or more"#
        );
        assert_eq!(
            message(&["web"]),
            r#""web": expected SERVICE=REPLICAS, as in web=3"#
        );
        assert!(message(&["web=+3"]).contains("not a whole number"));
        assert!(message(&["web="]).contains("not a whole number"));
        assert!(message(&["web=99999999999"]).contains("not a whole number"));
        assert_eq!(
            message(&["web=1", "web=2"]),
            r#""web": the service is scaled twice"#
        );
    }

    #[test]
    fn ls_shows_where_an_error_is_and_what_it_is() {
        let rendered = "stack::spec::invalid\n\n  × the stack file has an error\n\nError: stack::spec::syntax\n\n  × invalid KDL: unexpected `1`\n   ╭─[web.kdl:3:22]\n 2 │     image \"bb\"\n";
        assert_eq!(
            error_summary(rendered),
            "web.kdl:3:22: invalid KDL: unexpected `1`"
        );
        assert_eq!(
            error_summary("stack shop is declared by both a.kdl and b.kdl"),
            "stack shop is declared by both a.kdl and b.kdl"
        );
    }
}
