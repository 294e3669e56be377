//! `stack up`, `down`, `plan`, `apply`, `status` and `ls`: the stack file
//! is checked here (problems are printed with their file, line and
//! column) and the daemon keeps the stack converged.

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
    let loaded = crate::spec::load::load(options)?;
    for w in &loaded.warnings {
        eprint!(
            "{}",
            super::output::render(w, super::output::color_stderr())
        );
    }
    Ok(StackSource {
        name: stack_name(loaded.spec.name.as_deref(), &options.project_dir),
        project_dir: options.project_dir.clone(),
        files: loaded.files.clone(),
        env_files: options.env_files.clone(),
        // Only what the files read: the daemon keeps the source on disk,
        // and unrelated variables may be secrets.
        environment: std::env::vars()
            .filter(|(name, _)| loaded.variables.contains(name))
            .collect(),
    })
}

fn print_report(out: &mut impl Write, report: &Report) -> miette::Result<()> {
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

fn status_failed(status: &StackStatus) -> miette::Result<i32> {
    match &status.last_error {
        Some(e) => Err(miette!("stack {}: {e}", status.name)),
        None => Ok(0),
    }
}

/// `stack up -d` / `stack apply`: registers the stack with the daemon,
/// which applies it and keeps it converged (watching its files).
pub fn up(root: &Path, options: &LoadOptions) -> miette::Result<i32> {
    let source = source(options)?;
    let c = client(root)?;
    let status: StackStatus = c
        .post("/stacks")
        .json(&source)
        .send_json()
        .map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    print_report(&mut out, &status.report)?;
    status_failed(&status)
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

/// `stack ls`: every stack the daemon keeps.
pub fn ls(root: &Path) -> miette::Result<i32> {
    let c = client(root)?;
    let stacks: Vec<StackStatus> = c.get("/stacks").send_json().map_err(api_error)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<20} {:<10} {:<11} {:<26} DIRECTORY",
        "NAME", "STATUS", "GENERATION", "LAST APPLY"
    )
    .into_diagnostic()?;
    for s in stacks {
        let state = if s.last_error.is_some() {
            "error"
        } else if !s.given_up.is_empty() {
            "failed"
        } else if s.converged {
            "converged"
        } else {
            "applying"
        };
        writeln!(
            out,
            "{:<20} {:<10} {:<11} {:<26} {}",
            s.name,
            state,
            s.generation,
            s.last_apply.as_deref().unwrap_or("-"),
            s.project_dir.display()
        )
        .into_diagnostic()?;
    }
    Ok(0)
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
}
