//! The registry verbs: `pull`, `push`, `login`, `logout`, `search`, with
//! per-layer progress bars on a terminal and plain lines otherwise.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use miette::{IntoDiagnostic, WrapErr, miette};

use crate::image::auth::{self, AuthStore};
use crate::image::digest::Digest;
use crate::image::images::Images;
use crate::image::oci::{Descriptor, Platform};
use crate::image::pull::{self, PullProgress, PullResult};
use crate::image::push::{self, PushProgress, PushResult};
use crate::image::reference::{DEFAULT_DOMAIN, Reference};
use crate::image::registry::{
    DOCKER_INDEX_SERVER, RegistryClient, RegistryOptions, SearchResult, UploadOutcome,
};

/// How the CLI reaches registries (shared by every registry verb).
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Allow plain HTTP to this registry (host, host:port or CIDR; repeatable).
    /// localhost and 127.0.0.0/8 are always allowed
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    insecure: Vec<String>,
    /// Try this mirror before Docker Hub for docker.io images (repeatable)
    #[arg(long = "registry-mirror", global = true, value_name = "URL")]
    mirrors: Vec<String>,
}

/// `stack pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG|@DIGEST]
    image: String,
    /// Pull every tag of the repository
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// The platform to pull for (default: this host)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Print only the image name
    #[arg(short, long)]
    quiet: bool,
}

/// `stack push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image: NAME[:TAG]
    image: String,
    /// Print only the digest
    #[arg(short, long)]
    quiet: bool,
}

/// `stack login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub)
    server: Option<String>,
    /// User name
    #[arg(short, long)]
    username: Option<String>,
    /// Password or token
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
}

/// `stack logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    server: Option<String>,
}

/// `stack search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for on Docker Hub; `REGISTRY/TERM` lists the repositories
    /// of that registry's catalog that contain TERM
    term: String,
    /// Show at most this many results (1 to 100)
    #[arg(long, default_value_t = 25)]
    limit: usize,
    /// Filter: stars=N (at least N stars), is-official=true|false,
    /// is-automated=true|false (repeatable)
    #[arg(short, long, value_name = "FILTER")]
    filter: Vec<String>,
    /// Do not shorten descriptions
    #[arg(long)]
    no_trunc: bool,
    /// Where Docker Hub's search API is
    #[arg(long, env = "STACK_INDEX_SERVER", value_name = "URL", default_value = DOCKER_INDEX_SERVER)]
    index_server: String,
}

/// Where our own credentials live: `$STACK_CONFIG/config.json`, else
/// `$XDG_CONFIG_HOME/stack/config.json`, else `~/.config/stack/config.json`.
pub fn credentials_file() -> PathBuf {
    if let Some(dir) = std::env::var_os("STACK_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/etc"));
    base.join("stack").join("config.json")
}

fn options(args: &RegistryArgs) -> miette::Result<RegistryOptions> {
    let auth = AuthStore::load_default(&credentials_file()).into_diagnostic()?;
    let mut options = RegistryOptions {
        auth,
        mirrors: args.mirrors.clone(),
        ..RegistryOptions::default()
    };
    options.insecure.extend(args.insecure.iter().cloned());
    Ok(options)
}

fn client(args: &RegistryArgs) -> miette::Result<RegistryClient> {
    RegistryClient::new(options(args)?).into_diagnostic()
}

fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}

fn open(root: &Path) -> miette::Result<Images> {
    Images::open(root)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open the image store in {}", root.display()))
}

/// Progress of a pull or push: bars on a terminal, lines otherwise.
struct Progress {
    bars: Option<(MultiProgress, Mutex<HashMap<Digest, ProgressBar>>)>,
    quiet: bool,
    verb_done: &'static str,
    /// Layers are unpacked after their download (pulls).
    unpacks: bool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Progress {
    fn new(quiet: bool, verb_done: &'static str) -> Self {
        let bars = (!quiet && io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            (multi, Mutex::new(HashMap::new()))
        });
        Self {
            bars,
            quiet,
            verb_done,
            unpacks: false,
        }
    }

    /// Progress of a pull that unpacks each layer once it is downloaded.
    fn unpacking(quiet: bool) -> Self {
        Self {
            unpacks: true,
            ..Self::new(quiet, "Pull complete")
        }
    }

    /// A step before the last: the bar says it, or a line does.
    fn step(&self, digest: &Digest, message: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.lock().ok().and_then(|m| m.get(digest).cloned()) {
                    bar.set_message(message.to_string());
                }
            }
            None if !self.quiet => eprintln!("{}: {message}", digest.short()),
            None => {}
        }
    }

    fn start(&self, digest: &Digest, size: u64, verb: &str) {
        if let Some((multi, bars)) = &self.bars {
            let bar = multi.add(ProgressBar::new(size));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(digest.short().to_string());
            bar.set_message(verb.to_string());
            if let Ok(mut map) = bars.lock() {
                map.insert(digest.clone(), bar);
            }
        }
    }

    fn advance(&self, digest: &Digest, bytes: u64) {
        if let Some((_, bars)) = &self.bars
            && let Some(bar) = bars.lock().ok().and_then(|m| m.get(digest).cloned())
        {
            bar.inc(bytes);
        }
    }

    fn finish(&self, digest: &Digest, message: &str) {
        match &self.bars {
            Some((_, bars)) => {
                if let Some(bar) = bars.lock().ok().and_then(|m| m.get(digest).cloned()) {
                    bar.finish_with_message(message.to_string());
                }
            }
            None if !self.quiet => eprintln!("{}: {message}", digest.short()),
            None => {}
        }
    }
}

impl PullProgress for Progress {
    fn layer_started(&self, digest: &Digest, size: u64) {
        self.start(digest, size, "Downloading");
    }
    fn layer_advanced(&self, digest: &Digest, bytes: u64) {
        self.advance(digest, bytes);
    }
    fn layer_done(&self, digest: &Digest) {
        if self.unpacks {
            self.step(digest, "Download complete");
        } else {
            self.finish(digest, self.verb_done);
        }
    }
    fn layer_unpacked(&self, digest: &Digest) {
        self.finish(digest, self.verb_done);
    }
    fn layer_exists(&self, digest: &Digest) {
        self.finish(digest, "Already exists");
    }
    fn resolved(&self, _manifest: &Digest, _layers: &[Descriptor]) {}
}

impl PushProgress for Progress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        self.start(digest, size, "Pushing");
    }
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.advance(digest, bytes);
    }
    fn blob_done(&self, digest: &Digest, outcome: UploadOutcome) {
        let message = match outcome {
            UploadOutcome::Uploaded => "Pushed",
            UploadOutcome::Mounted => "Mounted from another repository",
            UploadOutcome::Exists => "Layer already exists",
        };
        self.finish(digest, message);
    }
}

fn print_pull(result: &PullResult, quiet: bool) {
    if !quiet {
        println!("Digest: {}", result.digest);
        let status = if result.downloaded > 0 {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        println!("Status: {status} {}", result.reference.familiar());
    }
    println!("{}", result.reference);
}

/// `stack pull`.
pub fn pull(root: &Path, registry: &RegistryArgs, args: &PullArgs) -> miette::Result<()> {
    let reference: Reference = args.image.parse().into_diagnostic()?;
    let platform = args
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()
        .map_err(|e| miette!("{e}"))?;
    let images = open(root)?;
    let client = client(registry)?;
    let progress = Progress::unpacking(args.quiet);
    if !args.quiet {
        let what = reference.tag().unwrap_or("latest");
        println!("{what}: Pulling from {}", reference.path());
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        if args.all_tags {
            let results = pull::pull_all_tags(
                &client,
                &images.blobs,
                &images.catalog,
                Some(&images.snapshots),
                &reference,
                platform.as_ref(),
                &progress,
            )
            .await
            .into_diagnostic()?;
            for result in &results {
                print_pull(result, args.quiet);
            }
            Ok(())
        } else {
            let result = pull::pull(
                &client,
                &images.blobs,
                &images.catalog,
                Some(&images.snapshots),
                &reference,
                platform.as_ref(),
                &progress,
            )
            .await
            .into_diagnostic()?;
            print_pull(&result, args.quiet);
            Ok(())
        }
    })
}

/// `stack push`.
pub fn push(root: &Path, registry: &RegistryArgs, args: &PushArgs) -> miette::Result<()> {
    let reference: Reference = args.image.parse().into_diagnostic()?;
    let images = open(root)?;
    let client = client(registry)?;
    let progress = Progress::new(args.quiet, "Pushed");
    if !args.quiet {
        println!("The push refers to repository [{}]", reference.repository());
    }
    let runtime = runtime()?;
    let result: PushResult = runtime
        .block_on(push::push(
            &client,
            &images.blobs,
            &images.catalog,
            &reference,
            &progress,
        ))
        .into_diagnostic()?;
    if args.quiet {
        println!("{}", result.digest);
    } else {
        println!(
            "{}: digest: {} size: {}",
            reference.tag().unwrap_or("latest"),
            result.digest,
            result.size
        );
    }
    Ok(())
}

/// `stack login`.
pub fn login(registry: &RegistryArgs, args: &LoginArgs) -> miette::Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| "docker.io".to_string());
    let stdin = io::stdin();
    let read_line = |prompt: &str| -> miette::Result<String> {
        if !prompt.is_empty() {
            eprint!("{prompt}");
            io::stderr().flush().into_diagnostic()?;
        }
        let mut line = String::new();
        stdin.lock().read_line(&mut line).into_diagnostic()?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let username = match &args.username {
        Some(u) => u.clone(),
        None => read_line("Username: ")?,
    };
    let password = if args.password_stdin {
        read_line("")?
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        read_line("Password: ")?
    };
    if username.is_empty() || password.is_empty() {
        return Err(miette!("a user name and a password are required"));
    }
    let client = client(registry)?;
    let file = credentials_file();
    runtime()?
        .block_on(auth::login(&client, &file, &server, &username, &password))
        .into_diagnostic()?;
    println!("Login Succeeded");
    Ok(())
}

/// `stack logout`.
pub fn logout(args: &LogoutArgs) -> miette::Result<()> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| "docker.io".to_string());
    let file = credentials_file();
    let store = AuthStore::load_default(&file).into_diagnostic()?;
    let removed = auth::logout(&store, &file, &server).into_diagnostic()?;
    if removed {
        println!("Removing login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}

/// What `stack search --filter` keeps, as Docker's daemon filters search
/// results (moby `registry/search.go`): every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SearchFilter {
    min_stars: u64,
    official: Option<bool>,
    automated: Option<bool>,
}

impl SearchFilter {
    fn parse(filters: &[String]) -> miette::Result<Self> {
        let mut out = Self::default();
        for filter in filters {
            let invalid = || miette!("invalid filter '{filter}'");
            let (key, value) = filter.split_once('=').ok_or_else(invalid)?;
            let flag = || match value {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(invalid()),
            };
            match key {
                "stars" => out.min_stars = out.min_stars.max(value.parse().map_err(|_| invalid())?),
                "is-official" => out.official = Some(flag()?),
                "is-automated" => out.automated = Some(flag()?),
                _ => return Err(invalid()),
            }
        }
        Ok(out)
    }

    fn keeps(&self, result: &SearchResult) -> bool {
        result.star_count >= self.min_stars
            && self.official.is_none_or(|o| o == result.is_official)
            && self.automated.is_none_or(|a| a == result.is_automated)
    }
}

/// A description as Docker's search table shows it: one line, and cut to
/// 45 columns with an ellipsis unless `no_trunc`.
fn search_description(description: &str, no_trunc: bool) -> String {
    let line = description.replace(['\n', '\r'], " ");
    if no_trunc || line.chars().count() <= 45 {
        line
    } else {
        format!("{}…", line.chars().take(44).collect::<String>())
    }
}

/// `stack search`: Docker Hub's search API for a plain term, as `docker
/// search` asks it; `REGISTRY/TERM` for another registry lists the
/// repositories of its catalog (`/v2/_catalog`) that contain TERM.
pub fn search(registry: &RegistryArgs, args: &SearchArgs) -> miette::Result<()> {
    if !(1..=100).contains(&args.limit) {
        return Err(miette!(
            "limit {} is outside the range of [1, 100]",
            args.limit
        ));
    }
    let filter = SearchFilter::parse(&args.filter)?;
    let (domain, term) = match args.term.split_once('/') {
        Some((d, t)) if d.contains(['.', ':']) || d == "localhost" => {
            (auth::domain_of_key(d), t.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), args.term.clone()),
    };
    let client = RegistryClient::new(RegistryOptions {
        index_server: args.index_server.clone(),
        ..options(registry)?
    })
    .into_diagnostic()?;
    if domain == DEFAULT_DOMAIN {
        let results = runtime()?
            .block_on(client.search(&term, args.limit))
            .into_diagnostic()?;
        let rows: Vec<Vec<String>> = results
            .into_iter()
            .filter(|r| filter.keeps(r))
            .take(args.limit)
            .map(|r| {
                vec![
                    r.name,
                    search_description(&r.description, args.no_trunc),
                    r.star_count.to_string(),
                    if r.is_official { "[OK]" } else { "" }.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            super::output::table(&["NAME", "DESCRIPTION", "STARS", "OFFICIAL"], rows)
        );
        return Ok(());
    }
    // A catalog knows names only: no stars, nothing official or automated.
    let unrated = |name: String| SearchResult {
        name,
        description: String::new(),
        star_count: 0,
        is_official: false,
        is_automated: false,
    };
    let repositories = runtime()?
        .block_on(client.catalog(&domain))
        .into_diagnostic()?;
    let rows: Vec<Vec<String>> = repositories
        .into_iter()
        .filter(|r| r.contains(&term))
        .map(unrated)
        .filter(|r| filter.keeps(r))
        .take(args.limit)
        .map(|r| vec![format!("{domain}/{}", r.name)])
        .collect();
    print!("{}", super::output::table(&["NAME"], rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(stars: u64, official: bool) -> SearchResult {
        SearchResult {
            name: "x".into(),
            description: String::new(),
            star_count: stars,
            is_official: official,
            is_automated: false,
        }
    }

    #[test]
    fn search_filters_read_like_docker_s() {
        let parse =
            |f: &[&str]| SearchFilter::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let filter = parse(&["stars=10", "stars=3", "is-official=true"]).unwrap();
        assert_eq!(filter.min_stars, 10);
        assert!(filter.keeps(&result(10, true)));
        assert!(!filter.keeps(&result(9, true)));
        assert!(!filter.keeps(&result(100, false)));
        assert!(parse(&[]).unwrap().keeps(&result(0, false)));
        for bad in ["stars=many", "is-official=maybe", "color=red", "stars"] {
            let err = parse(&[bad]).unwrap_err().to_string();
            assert_eq!(err, format!("invalid filter '{bad}'"));
        }
    }

    #[test]
    fn descriptions_are_one_line_and_cut_at_45_columns() {
        assert_eq!(search_description("a\nb\r\nc", false), "a b  c");
        let long = "x".repeat(50);
        let cut = search_description(&long, false);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
        assert_eq!(search_description(&long, true), long);
        assert_eq!(search_description(&"y".repeat(45), false), "y".repeat(45));
    }
}
