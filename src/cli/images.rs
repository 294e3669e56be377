//! The image verbs: `images`, `tag`, `rmi`, `history`, `image inspect`,
//! `save`, `load`, `import`, `image prune`.

use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use miette::{IntoDiagnostic, WrapErr, miette};

use super::output::{age, human_size, table};
use crate::image::archive::ArchiveFormat;
use crate::image::changes::Change;
use crate::image::images::{ImageSummary, Images, ImportSource, Removed};
use crate::image::oci::Platform;
use crate::image::reference::Reference;
use crate::reconcile::containers::ContainerUsage;

/// `stack image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Remove images
    Rm(RmiArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Show the steps an image was built from
    History(HistoryArgs),
    /// Show an image's configuration and layers as JSON
    Inspect(InspectArgs),
    /// Write images to a tar archive
    Save(SaveArgs),
    /// Read images from a tar archive
    Load(LoadArgs),
    /// Make an image from a root file system tarball or directory
    Import(ImportArgs),
    /// Remove unused images, layers and blobs
    Prune(PruneArgs),
}

/// Output formats of listing verbs.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `stack images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images whose name matches REPOSITORY[:TAG] (`*` and `?` match)
    repository: Option<String>,
    /// Show intermediate images too
    #[arg(short, long)]
    all: bool,
    /// Only print image ids
    #[arg(short, long)]
    quiet: bool,
    /// Do not shorten image ids
    #[arg(long)]
    no_trunc: bool,
    /// Show manifest digests
    #[arg(long)]
    digests: bool,
    /// Filter: dangling=true|false, reference=PATTERN
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Output: table, json, or a Go template ('table {{.Repository}}\t{{.ID}}')
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
}

/// `stack rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image with several names by id, or one a container uses
    #[arg(short, long)]
    force: bool,
    /// Keep layers and blobs no other image uses
    #[arg(long)]
    no_prune: bool,
}

/// `stack tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image (name or id)
    source: String,
    /// The new name
    target: String,
}

/// `stack history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image
    image: String,
    /// Do not shorten ids and instructions
    #[arg(long)]
    no_trunc: bool,
    /// Only print ids
    #[arg(short, long)]
    quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

/// `stack image inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images
    #[arg(required = true)]
    images: Vec<String>,
}

/// Archive formats of `save`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save`'s format
    Docker,
    /// An OCI image layout
    Oci,
}

/// `stack save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to a file instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    format: SaveFormat,
}

/// `stack load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a file instead of standard input
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print nothing
    #[arg(short, long)]
    quiet: bool,
}

/// `stack import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A tarball (plain, gzip or zstd), `-` for standard input, or a directory
    source: String,
    /// Name the image REPOSITORY[:TAG]
    reference: Option<String>,
    /// Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)
    #[arg(short, long, value_name = "CHANGE")]
    change: Vec<String>,
    /// A commit message for the history
    #[arg(short, long)]
    message: Option<String>,
    /// The platform the image is for (default: this host)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
}

/// `stack image prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only unnamed ones
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

fn open(root: &Path) -> miette::Result<Images> {
    Images::open(root)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open the image store in {}", root.display()))
}

/// Runs an image command.
pub fn run(root: &Path, command: ImageCommand) -> miette::Result<()> {
    match command {
        ImageCommand::Ls(args) => images(root, &args),
        ImageCommand::Rm(args) => rmi(root, &args),
        ImageCommand::Tag(args) => {
            open(root)?
                .tag(&args.source, &args.target)
                .into_diagnostic()?;
            Ok(())
        }
        ImageCommand::History(args) => history(root, &args),
        ImageCommand::Inspect(args) => inspect(root, &args),
        ImageCommand::Save(args) => save(root, &args),
        ImageCommand::Load(args) => load(root, &args),
        ImageCommand::Import(args) => import(root, &args),
        ImageCommand::Prune(args) => prune(root, &args),
    }
}

/// Go's `path.Match` for `*` and `?` (enough for Docker's reference filter).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' && t[ti] != '/' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star.filter(|_| t[mark] != '/') {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn matches_reference(summary: &ImageSummary, pattern: &str) -> bool {
    let name = format!("{}:{}", summary.repository, summary.tag);
    if pattern.contains(':') {
        glob_match(pattern, &name)
    } else {
        glob_match(pattern, &summary.repository)
    }
}

fn images(root: &Path, args: &ImagesArgs) -> miette::Result<()> {
    let mut list = open(root)?.summaries().into_diagnostic()?;
    if let Some(pattern) = &args.repository {
        list.retain(|s| matches_reference(s, pattern));
    }
    for filter in &args.filter {
        match filter.split_once('=') {
            Some(("dangling", v)) => {
                let want = v == "true" || v == "1";
                list.retain(|s| (s.repository == "<none>") == want);
            }
            Some(("reference", pattern)) => list.retain(|s| matches_reference(s, pattern)),
            _ => {
                return Err(miette!(
                    "invalid filter {filter:?}: use dangling=true|false or reference=PATTERN"
                ));
            }
        }
    }
    let id = |s: &ImageSummary| {
        if args.no_trunc {
            s.id.to_string()
        } else {
            s.id.short().to_string()
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for s in &list {
            if seen.insert(s.id.clone()) {
                writeln!(out, "{}", id(s)).into_diagnostic()?;
            }
        }
    } else if args.format.as_deref() == Some("json") {
        for s in &list {
            writeln!(out, "{}", serde_json::to_string(s).into_diagnostic()?).into_diagnostic()?;
        }
    } else if let Some(format) = args
        .format
        .as_deref()
        .filter(|f| !f.is_empty() && *f != "table")
    {
        let default = if args.digests {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        } else {
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
        };
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|s| {
                let created = s.created.as_deref().and_then(super::output::parse_rfc3339);
                serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": created.map(super::containers_extra::go_time).unwrap_or_default(),
                    "CreatedSince": age(s.created.as_deref()),
                    "Digest": s.digest,
                    "ID": id(s),
                    "Repository": s.repository,
                    "SharedSize": "N/A",
                    "Size": human_size(s.size),
                    "Tag": s.tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(s.size),
                })
            })
            .collect();
        let titles = serde_json::json!({
            "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
            "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY",
            "SharedSize": "SHARED SIZE", "Size": "SIZE", "Tag": "TAG",
            "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
        });
        let text = super::template::format_rows(
            format,
            default,
            &rows,
            &titles,
            &super::template::no_methods,
        )
        .map_err(|e| miette!("{e}"))?;
        out.write_all(text.as_bytes()).into_diagnostic()?;
    } else {
        let mut headers = vec!["REPOSITORY", "TAG"];
        if args.digests {
            headers.push("DIGEST");
        }
        headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
        let rows = list.iter().map(|s| {
            let mut row = vec![s.repository.clone(), s.tag.clone()];
            if args.digests {
                row.push(s.digest.clone());
            }
            row.extend([id(s), age(s.created.as_deref()), human_size(s.size)]);
            row
        });
        out.write_all(table(&headers, rows).as_bytes())
            .into_diagnostic()?;
    }
    out.flush().into_diagnostic()
}

fn rmi(root: &Path, args: &RmiArgs) -> miette::Result<()> {
    let images = open(root)?;
    let usage = ContainerUsage::of(root).into_diagnostic()?;
    let mut failed = Vec::new();
    for name in &args.images {
        match images.remove(name, args.force, !args.no_prune, &usage) {
            Ok(done) => {
                for d in done {
                    match d {
                        Removed::Untagged(n) => println!("Untagged: {n}"),
                        Removed::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(miette!("{}", failed.join("\n")))
    }
}

fn history(root: &Path, args: &HistoryArgs) -> miette::Result<()> {
    let lines = open(root)?.history(&args.image).into_diagnostic()?;
    let mut out = BufWriter::new(io::stdout().lock());
    if args.format == ListFormat::Json {
        for l in &lines {
            writeln!(out, "{}", serde_json::to_string(l).into_diagnostic()?).into_diagnostic()?;
        }
        return out.flush().into_diagnostic();
    }
    let short_id = |id: &str| {
        if args.no_trunc || id == "<missing>" {
            id.to_string()
        } else {
            id.strip_prefix("sha256:")
                .unwrap_or(id)
                .chars()
                .take(12)
                .collect()
        }
    };
    if args.quiet {
        for l in &lines {
            writeln!(out, "{}", short_id(&l.id)).into_diagnostic()?;
        }
        return out.flush().into_diagnostic();
    }
    let rows = lines.iter().map(|l| {
        let by = if args.no_trunc || l.created_by.chars().count() <= 45 {
            l.created_by.clone()
        } else {
            format!("{}…", l.created_by.chars().take(44).collect::<String>())
        };
        vec![
            short_id(&l.id),
            age(l.created.as_deref()),
            by,
            human_size(l.size),
            l.comment.clone(),
        ]
    });
    out.write_all(table(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"], rows).as_bytes())
        .into_diagnostic()?;
    out.flush().into_diagnostic()
}

fn inspect(root: &Path, args: &InspectArgs) -> miette::Result<()> {
    let images = open(root)?;
    let all = args
        .images
        .iter()
        .map(|name| images.inspect(name))
        .collect::<Result<Vec<_>, _>>()
        .into_diagnostic()?;
    println!("{}", serde_json::to_string_pretty(&all).into_diagnostic()?);
    Ok(())
}

fn save(root: &Path, args: &SaveArgs) -> miette::Result<()> {
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    let images = open(root)?;
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves no
            // truncated archive behind.
            let temp = path.with_extension("partial");
            let file = std::fs::File::create(&temp)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", temp.display()))?;
            let result = images.save(
                &args.images,
                format,
                BufWriter::with_capacity(1 << 20, file),
            );
            if let Err(e) = result {
                let _ = std::fs::remove_file(&temp);
                return Err(e).into_diagnostic();
            }
            std::fs::rename(&temp, path).into_diagnostic()
        }
        None => {
            if io::stdout().is_terminal() {
                return Err(miette!(
                    "refusing to write an archive to a terminal: use -o FILE or redirect the output"
                ));
            }
            images
                .save(
                    &args.images,
                    format,
                    BufWriter::with_capacity(1 << 20, io::stdout().lock()),
                )
                .into_diagnostic()
        }
    }
}

fn load(root: &Path, args: &LoadArgs) -> miette::Result<()> {
    let images = open(root)?;
    let reader: Box<dyn Read> = match &args.input {
        Some(path) => Box::new(BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot open {}", path.display()))?,
        )),
        None => {
            if io::stdin().is_terminal() {
                return Err(miette!(
                    "no archive on standard input: use -i FILE or a pipe"
                ));
            }
            Box::new(BufReader::with_capacity(1 << 20, io::stdin().lock()))
        }
    };
    let loaded = images.load(reader).into_diagnostic()?;
    if !args.quiet {
        for image in loaded {
            if image.tags.is_empty() {
                println!("Loaded image ID: {}", image.id);
            }
            for tag in image.tags {
                println!("Loaded image: {}", tag.familiar());
            }
        }
    }
    Ok(())
}

fn import(root: &Path, args: &ImportArgs) -> miette::Result<()> {
    let images = open(root)?;
    let changes = args
        .change
        .iter()
        .map(|c| c.parse::<Change>())
        .collect::<Result<Vec<_>, _>>()
        .into_diagnostic()?;
    let reference = args
        .reference
        .as_deref()
        .map(str::parse::<Reference>)
        .transpose()
        .into_diagnostic()?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()
        .map_err(|e| miette!("{e}"))?;
    let path = Path::new(&args.source);
    let id = if args.source == "-" {
        let mut stdin = BufReader::new(io::stdin().lock());
        images.import(
            ImportSource::Tar(&mut stdin),
            reference.as_ref(),
            &changes,
            args.message.as_deref(),
            platform.as_ref(),
        )
    } else if path.is_dir() {
        images.import(
            ImportSource::Dir(path),
            reference.as_ref(),
            &changes,
            args.message.as_deref(),
            platform.as_ref(),
        )
    } else {
        let mut file = BufReader::new(
            std::fs::File::open(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot open {}", path.display()))?,
        );
        images.import(
            ImportSource::Tar(&mut file),
            reference.as_ref(),
            &changes,
            args.message.as_deref(),
            platform.as_ref(),
        )
    }
    .into_diagnostic()?;
    println!("{id}");
    Ok(())
}

fn prune(root: &Path, args: &PruneArgs) -> miette::Result<()> {
    if !args.force && io::stdin().is_terminal() {
        let what = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        io::stdin().read_line(&mut answer).into_diagnostic()?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let usage = ContainerUsage::of(root).into_diagnostic()?;
    let (removed, freed) = open(root)?.prune(args.all, &usage).into_diagnostic()?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for id in &removed {
            println!("deleted: {id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go_path_match() {
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("*", "busybox"));
        assert!(!glob_match("*", "library/busybox"));
        assert!(glob_match("*/app", "user/app"));
        assert!(glob_match("busybox:1.?", "busybox:1.3"));
        assert!(!glob_match("busy", "busybox"));
    }
}
