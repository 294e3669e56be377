//! `stack build`: Docker's `docker build`, a client of the daemon's
//! `POST /build`. The daemon shares this host, so a directory context is
//! named by its absolute path, not uploaded; `-` sends stdin (a context
//! tarball or a Dockerfile), `-f -` sends the Dockerfile from stdin.
//!
//! The verb decides by its arguments: one PATH (a directory or `-`) is
//! `docker build`; none, or service names, in a stack project directory
//! builds the stack's services that declare `build` (tagged with their
//! `image`, or `<stack>-<service>:latest` as Compose does).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use miette::{IntoDiagnostic, WrapErr, miette};

use super::daemon::{api_error, client};

/// `stack build` options, spelled as Docker spells them.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The context directory, or `-` for a context tarball or Dockerfile on
    /// stdin; in a stack project: the services to build (default: all that build)
    #[arg(value_name = "PATH | SERVICE")]
    pub targets: Vec<String>,
    /// Name and optionally a tag (`name:tag`); repeatable
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default `PATH/Dockerfile`); `-` reads it from stdin
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Build-time variables (`NAME=value`, or `NAME` to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Metadata for the image (`key=value`)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// The build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always pull the base images
    #[arg(long)]
    pub pull: bool,
    /// Print only the image id
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// Runs `stack build`.
pub fn build(root: &Path, args: &BuildArgs) -> miette::Result<()> {
    match args.targets.as_slice() {
        [path] if path == "-" || Path::new(path).is_dir() => build_path(root, args, path),
        _ => build_stack(root, args),
    }
}

/// `stack build [SERVICE…]` in a stack project directory.
fn build_stack(root: &Path, args: &BuildArgs) -> miette::Result<()> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    let options = crate::spec::load::LoadOptions {
        files: Vec::new(),
        project_dir: cwd,
        env_files: Vec::new(),
        environment: None,
    };
    let (source, spec) = super::stacks::load_source(&options).map_err(|e| {
        miette!(
            help =
                "give a context directory (or - for stdin), or run it in a stack project directory",
            "stack build: {} is not a directory and no stack file was found: {e}",
            args.targets.first().map_or("no PATH", String::as_str)
        )
    })?;
    for name in &args.targets {
        if !spec.services.contains_key(name) {
            return Err(miette!("no such service: {name}"));
        }
    }
    let mut built = 0;
    for (name, service) in &spec.services {
        let Some(b) = &service.build else {
            continue;
        };
        if !args.targets.is_empty() && !args.targets.contains(name) {
            continue;
        }
        let tag = service
            .image
            .clone()
            .unwrap_or_else(|| format!("{}-{name}:latest", source.name));
        if !args.quiet {
            println!("Building {name}");
        }
        let mut one = BuildArgs {
            targets: Vec::new(),
            tags: vec![tag],
            file: b
                .dockerfile
                .as_ref()
                .map(|f| b.context.join(f).display().to_string()),
            build_args: args.build_args.clone(),
            labels: args.labels.clone(),
            target: b.target.clone().or_else(|| args.target.clone()),
            no_cache: args.no_cache || b.no_cache,
            pull: args.pull,
            quiet: args.quiet,
        };
        for (k, v) in &b.args {
            one.build_args.insert(0, format!("{k}={v}"));
        }
        build_path(root, &one, &b.context.display().to_string())?;
        built += 1;
    }
    if built == 0 && !args.quiet {
        eprintln!("no service builds its image, nothing to build");
    }
    Ok(())
}

/// `docker build PATH`.
fn build_path(root: &Path, args: &BuildArgs, path: &str) -> miette::Result<()> {
    let mut build_args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), Some(v.to_string()));
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), Some(v));
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let c = client(root)?;
    let mut call = c
        .post("/build")
        .query(
            "buildargs",
            serde_json::to_string(&build_args).into_diagnostic()?,
        )
        .query("labels", serde_json::to_string(&labels).into_diagnostic()?)
        .query_opt("target", args.target.as_deref())
        .flag("nocache", args.no_cache)
        .flag("pull", args.pull)
        .flag("q", args.quiet);
    for t in &args.tags {
        call = call.query("t", t);
    }
    let stdin_dockerfile = args.file.as_deref() == Some("-");
    let cwd = std::env::current_dir().into_diagnostic()?;
    if path == "-" {
        if stdin_dockerfile {
            return Err(miette!(
                "invalid argument: can't use stdin for both build context and dockerfile"
            ));
        }
        if let Some(f) = &args.file {
            call = call.query("dockerfile", f);
        }
        call = call.upload(std::io::stdin());
    } else {
        let context = absolute(&cwd, Path::new(path));
        if !context.is_dir() {
            return Err(miette!(
                "unable to prepare context: path {path:?} not found"
            ));
        }
        call = call.query("context", context.display());
        match &args.file {
            Some(f) if f == "-" => {
                let mut text = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut text)
                    .into_diagnostic()
                    .wrap_err("cannot read the Dockerfile from stdin")?;
                call = call.upload(std::io::Cursor::new(text));
            }
            Some(f) => {
                call = call.query("dockerfile", absolute(&cwd, Path::new(f)).display());
            }
            None => {}
        }
    }
    let answer = call.stream().map_err(api_error)?;
    let aux = super::registry::follow(answer, args.quiet)?;
    if args.quiet
        && let Some(id) = aux
            .iter()
            .find_map(|v| v.get("ID").and_then(|i| i.as_str()))
    {
        println!("{id}");
    }
    Ok(())
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}
