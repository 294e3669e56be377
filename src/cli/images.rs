//! The image verbs: `images`, `tag`, `rmi`, `history`, `image inspect`,
//! `save`, `load`, `import`, `image prune`, each a call of the daemon's
//! API (`/images/…`), printed as Docker prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use miette::{IntoDiagnostic, WrapErr, miette};

use super::daemon::{api_error, client};
use super::output::{age, human_size, table};
use crate::api::client::segment;
use crate::api::images::{DeleteItem, HistoryItem, ImageSummary, PruneReport};
use crate::image::changes::Change;
use crate::image::images::{HistoryLine, ImageSummary as ImageRow, rfc3339};
use crate::image::oci::Platform;
use crate::image::reference::Reference;

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

/// The API path of an image name: each `/`-separated part percent-encoded,
/// the slashes kept (as Docker's client sends `/images/host:5000/app/json`).
pub(super) fn image_path(name: &str) -> String {
    name.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// Runs an image command; its exit code.
pub fn run(root: &Path, command: ImageCommand) -> miette::Result<i32> {
    match command {
        ImageCommand::Ls(args) => images(root, &args),
        ImageCommand::Rm(args) => return rmi(root, &args),
        ImageCommand::Tag(args) => tag(root, &args),
        ImageCommand::History(args) => history(root, &args),
        ImageCommand::Inspect(args) => inspect(root, &args),
        ImageCommand::Save(args) => save(root, &args),
        ImageCommand::Load(args) => load(root, &args),
        ImageCommand::Import(args) => import(root, &args),
        ImageCommand::Prune(args) => prune(root, &args),
    }
    .map(|()| 0)
}

/// An RFC 3339 time from the API's seconds (0: unknown).
fn created_time(secs: i64) -> Option<String> {
    u64::try_from(secs).ok().filter(|s| *s > 0).map(rfc3339)
}

/// The rows `stack images` prints: one per name, one for an unnamed image,
/// newest first, as Docker's CLI expands the daemon's list.
fn rows(list: Vec<ImageSummary>) -> Vec<ImageRow> {
    let mut rows = Vec::new();
    for image in list {
        let Ok(id) = image.id.parse() else { continue };
        let created = created_time(image.created);
        let digests: Vec<Reference> = image
            .repo_digests
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        let names: Vec<Reference> = image
            .repo_tags
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect();
        if names.is_empty() {
            rows.push(ImageRow {
                repository: "<none>".into(),
                tag: "<none>".into(),
                digest: "<none>".into(),
                id,
                created,
                size: image.size,
            });
            continue;
        }
        for name in names {
            let digest = digests
                .iter()
                .find(|d| d.repository() == name.repository())
                .and_then(|d| d.digest())
                .map_or_else(|| "<none>".to_string(), ToString::to_string);
            rows.push(ImageRow {
                repository: name.familiar_repository(),
                tag: name.tag().unwrap_or("<none>").to_string(),
                digest,
                id: id.clone(),
                created: created.clone(),
                size: image.size,
            });
        }
    }
    rows.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| a.repository.cmp(&b.repository))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    rows
}

fn images(root: &Path, args: &ImagesArgs) -> miette::Result<()> {
    // The repository argument is a reference filter, as Docker's CLI sends it.
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(pattern) = &args.repository {
        filters
            .entry("reference".into())
            .or_default()
            .push(pattern.clone());
    }
    for filter in &args.filter {
        let (key, value) = filter.split_once('=').ok_or_else(|| {
            miette!("invalid filter {filter:?}: use dangling=true|false or reference=PATTERN")
        })?;
        filters
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    let filters = (!filters.is_empty())
        .then(|| serde_json::to_string(&filters))
        .transpose()
        .into_diagnostic()?;
    let c = client(root)?;
    let list: Vec<ImageSummary> = c
        .get("/images/json")
        .flag("all", args.all)
        .flag("digests", args.digests)
        .query_opt("filters", filters)
        .send_json()
        .map_err(api_error)?;
    let list = rows(list);
    let id = |s: &ImageRow| {
        if args.no_trunc {
            s.id.to_string()
        } else {
            s.id.short().to_string()
        }
    };
    let mut out = BufWriter::new(io::stdout().lock());
    if args.quiet {
        let mut seen = BTreeSet::new();
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

fn tag(root: &Path, args: &TagArgs) -> miette::Result<()> {
    args.target.parse::<Reference>().into_diagnostic()?;
    let c = client(root)?;
    c.post(&format!("/images/{}/tag", image_path(&args.source)))
        .query("repo", &args.target)
        .ok()
        .map_err(api_error)
}

/// `stack rmi`: each image in turn; a failure is reported as Docker's CLI
/// does (`Error response from daemon: …`) and the others still go.
fn rmi(root: &Path, args: &RmiArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let mut failed = 0;
    for name in &args.images {
        let answer = c
            .delete(&format!("/images/{}", image_path(name)))
            .flag("force", args.force)
            .flag("noprune", args.no_prune)
            .send_json::<Vec<DeleteItem>>();
        match answer {
            Ok(done) => {
                for d in done {
                    match d {
                        DeleteItem::Untagged(n) => println!("Untagged: {n}"),
                        DeleteItem::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        0
    } else {
        super::Exit::Failed as i32
    })
}

fn history(root: &Path, args: &HistoryArgs) -> miette::Result<()> {
    let c = client(root)?;
    let items: Vec<HistoryItem> = c
        .get(&format!("/images/{}/history", image_path(&args.image)))
        .send_json()
        .map_err(api_error)?;
    let lines: Vec<HistoryLine> = items
        .into_iter()
        .map(|i| HistoryLine {
            id: i.id,
            created: created_time(i.created),
            created_by: i.created_by,
            size: i.size,
            comment: i.comment,
        })
        .collect();
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
    let c = client(root)?;
    let all = args
        .images
        .iter()
        .map(|name| {
            c.get(&format!("/images/{}/json", image_path(name)))
                .send_json::<serde_json::Value>()
                .map_err(api_error)
        })
        .collect::<miette::Result<Vec<_>>>()?;
    println!("{}", serde_json::to_string_pretty(&all).into_diagnostic()?);
    Ok(())
}

fn save(root: &Path, args: &SaveArgs) -> miette::Result<()> {
    let format = match args.format {
        SaveFormat::Docker => "docker",
        SaveFormat::Oci => "oci",
    };
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(miette!(
            "refusing to write an archive to a terminal: use -o FILE or redirect the output"
        ));
    }
    let c = client(root)?;
    let mut call = c.get("/images/get").query("format", format);
    for name in &args.images {
        call = call.query("names", name);
    }
    let mut archive = call.stream().map_err(api_error)?;
    let broke = |e: io::Error| miette!("the archive from the daemon broke off: {e}");
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves no
            // truncated archive behind.
            let temp = path.with_extension("partial");
            let file = std::fs::File::create(&temp)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", temp.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let written = io::copy(&mut archive, &mut out)
                .map_err(broke)
                .and_then(|_| out.flush().into_diagnostic());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
            std::fs::rename(&temp, path).into_diagnostic()
        }
        None => {
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            io::copy(&mut archive, &mut out).map_err(broke)?;
            out.flush().into_diagnostic()
        }
    }
}

fn load(root: &Path, args: &LoadArgs) -> miette::Result<()> {
    let reader: Box<dyn Read + Send> = match &args.input {
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
            Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
        }
    };
    let c = client(root)?;
    let answer = c
        .post("/images/load")
        .flag("quiet", args.quiet)
        .upload(reader)
        .stream()
        .map_err(api_error)?;
    super::registry::follow(answer, args.quiet)?;
    Ok(())
}

/// A tar stream of a directory, written by a thread as it is read; a
/// failure of the thread fails the read at the end, so a half archive is
/// never taken for a whole one.
struct DirTar {
    pipe: io::PipeReader,
    writer: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl DirTar {
    fn new(dir: &Path) -> io::Result<DirTar> {
        let (pipe, out) = io::pipe()?;
        let dir = dir.to_path_buf();
        let writer = std::thread::spawn(move || {
            crate::image::layer::tar_dir(&dir, BufWriter::with_capacity(1 << 20, out))
                .map(|_| ())
                .map_err(|e| crate::error_chain(&e))
        });
        Ok(DirTar {
            pipe,
            writer: Some(writer),
        })
    }
}

impl Read for DirTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0
            && let Some(writer) = self.writer.take()
        {
            match writer.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(io::Error::other(e)),
                Err(_) => return Err(io::Error::other("the tar writer panicked")),
            }
        }
        Ok(n)
    }
}

fn import(root: &Path, args: &ImportArgs) -> miette::Result<()> {
    for change in &args.change {
        change.parse::<Change>().into_diagnostic()?;
    }
    if let Some(r) = &args.reference {
        r.parse::<Reference>().into_diagnostic()?;
    }
    if let Some(platform) = &args.platform {
        platform.parse::<Platform>().map_err(|e| miette!("{e}"))?;
    }
    let path = Path::new(&args.source);
    let reader: Box<dyn Read + Send> = if args.source == "-" {
        Box::new(BufReader::with_capacity(1 << 20, io::stdin()))
    } else if path.is_dir() {
        Box::new(
            DirTar::new(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read {}", path.display()))?,
        )
    } else {
        Box::new(BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot open {}", path.display()))?,
        ))
    };
    let c = client(root)?;
    let mut call = c
        .post("/images/create")
        .query("fromSrc", "-")
        .query_opt("repo", args.reference.as_deref())
        .query_opt("message", args.message.as_deref())
        .query_opt("platform", args.platform.as_deref());
    for change in &args.change {
        call = call.query("changes", change);
    }
    let answer = call.upload(reader).stream().map_err(api_error)?;
    super::registry::follow(answer, false)?;
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
    let dangling = if args.all { "false" } else { "true" };
    let filters = serde_json::json!({ "dangling": [dangling] }).to_string();
    let c = client(root)?;
    let report: PruneReport = c
        .post("/images/prune")
        .query("filters", filters)
        .send_json()
        .map_err(api_error)?;
    if !report.images_deleted.is_empty() {
        println!("Deleted Images:");
        for item in &report.images_deleted {
            match item {
                DeleteItem::Untagged(name) => println!("untagged: {name}"),
                DeleteItem::Deleted(id) => println!("deleted: {id}"),
            }
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.space_reclaimed)
    );
    Ok(())
}
