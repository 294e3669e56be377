//! The registry verbs: `pull` and `push` go through the daemon, which
//! streams Docker's JSON progress messages back (drawn as per-layer progress
//! bars on a terminal, plain lines otherwise); `login`, `logout` and `search`
//! talk to registries and credential stores from here, as Docker's CLI does.
//! The credentials a pull or push needs are read here and sent with the
//! request (`X-Registry-Auth`): the daemon never reads them itself.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use miette::{IntoDiagnostic, WrapErr, miette};
use serde_json::Value;

use super::daemon::{api_error, client};
use crate::api::images::{JsonMessage, REGISTRY_AUTH_HEADER, RegistryAuth, names_tag_or_digest};
use crate::image::auth::{self, AuthStore};
use crate::image::oci::Platform;
use crate::image::reference::{DEFAULT_DOMAIN, DEFAULT_TAG, Reference};
use crate::image::registry::{DOCKER_INDEX_SERVER, RegistryClient, RegistryOptions, SearchResult};

/// How `login` and `search` reach registries themselves. Pulls and pushes
/// go through the daemon, whose own `--insecure-registry` and
/// `--registry-mirror` decide.
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Allow plain HTTP to this registry (host, host:port or CIDR; repeatable).
    /// localhost and 127.0.0.0/8 are always allowed
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "STACK_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure: Vec<String>,
}

/// `stack pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG|@DIGEST]
    image: String,
    /// Pull every tag of the repository
    #[arg(short = 'a', long)]
    all_tags: bool,
    /// The platform to pull for (default: the daemon's host)
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
    #[command(flatten)]
    registry: RegistryArgs,
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
    #[command(flatten)]
    registry: RegistryArgs,
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
        ..RegistryOptions::default()
    };
    options.insecure.extend(args.insecure.iter().cloned());
    Ok(options)
}

fn registry_client(args: &RegistryArgs) -> miette::Result<RegistryClient> {
    RegistryClient::new(options(args)?).into_diagnostic()
}

fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("cannot start the async runtime")
}

/// The `X-Registry-Auth` value for a registry: its credentials from our
/// config file, Docker's, or their credential helpers, as `docker` sends
/// them; `None` for anonymous access.
fn registry_auth(domain: &str) -> miette::Result<Option<String>> {
    let store = AuthStore::load_default(&credentials_file()).into_diagnostic()?;
    Ok(store.credentials(domain).map(|c| {
        RegistryAuth::new(&c.username, c.password(), &auth::key_of_domain(domain)).encode()
    }))
}

/// A layer's id in a progress stream: a short digest (tags and other ids
/// are headings).
fn is_layer_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Per-layer progress: bars on a terminal, `ID: STATUS` lines on stderr
/// otherwise.
struct Progress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let bars = (!quiet && io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            (multi, HashMap::new())
        });
        Progress { bars, quiet }
    }

    fn bar(&mut self, id: &str) -> Option<ProgressBar> {
        let (multi, bars) = self.bars.as_mut()?;
        let bar = bars.entry(id.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(0));
            if let Ok(style) = ProgressStyle::with_template("{prefix}: {msg}") {
                bar.set_style(style);
            }
            bar.set_prefix(id.to_string());
            bar
        });
        Some(bar.clone())
    }

    fn show(&mut self, id: &str, message: &JsonMessage) {
        let status = message.status.clone().unwrap_or_default();
        let transfer = message
            .progress_detail
            .and_then(|p| Some((p.current?, p.total?)));
        match (self.bar(id), transfer) {
            (Some(bar), Some((current, total))) => {
                if bar.length() != Some(total) {
                    if let Ok(style) = ProgressStyle::with_template(
                        "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar.set_length(total);
                }
                bar.set_position(current);
                bar.set_message(status);
            }
            (Some(bar), None) => bar.set_message(status),
            (None, Some(_)) => {}
            (None, None) if !self.quiet => eprintln!("{id}: {status}"),
            (None, None) => {}
        }
    }

    /// Prints on stdout, with the bars cleared and drawn again after.
    fn print(&self, text: &str) {
        let mut stdout = io::stdout();
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            }),
            None => {
                let _ = stdout.write_all(text.as_bytes());
            }
        }
    }

    /// Leaves the bars as they ended, and the cursor on the line below them.
    fn finish(&mut self) {
        if let Some((_, bars)) = &self.bars
            && !bars.is_empty()
        {
            for bar in bars.values() {
                bar.abandon();
            }
            eprintln!();
        }
    }
}

/// Reads a stream of Docker's JSON messages to its end: layers go to the
/// progress display, other statuses and text to stdout (unless `quiet`),
/// `aux` values are handed back; an error message fails with its text.
pub(super) fn follow(reader: impl Read, quiet: bool) -> miette::Result<Vec<Value>> {
    let mut progress = Progress::new(quiet);
    let mut aux = Vec::new();
    let result = (|| {
        for line in BufReader::new(reader).lines() {
            let line = line
                .into_diagnostic()
                .wrap_err("the daemon's answer broke off")?;
            if line.trim().is_empty() {
                continue;
            }
            let message: JsonMessage = serde_json::from_str(&line)
                .into_diagnostic()
                .wrap_err("the daemon sent a progress line this client cannot read")?;
            if let Some(error) = message
                .error
                .as_ref()
                .or(message.error_detail.as_ref().map(|d| &d.message))
            {
                return Err(miette!("{error}"));
            }
            if let Some(value) = &message.aux {
                aux.push(value.clone());
            }
            if let Some(text) = &message.stream
                && !quiet
            {
                progress.print(text);
            }
            match (&message.id, &message.status) {
                (Some(id), Some(_)) if is_layer_id(id) => progress.show(id, &message),
                (Some(id), Some(status)) if !quiet => progress.print(&format!("{id}: {status}\n")),
                (None, Some(status)) if !quiet => progress.print(&format!("{status}\n")),
                _ => {}
            }
        }
        Ok(())
    })();
    progress.finish();
    let _ = io::stdout().flush();
    result.map(|()| aux)
}

/// `stack pull`: `POST /images/create?fromImage=…&tag=…`, as `docker pull`
/// asks it (no tag: every tag).
pub fn pull(root: &Path, args: &PullArgs) -> miette::Result<()> {
    let reference: Reference = args.image.parse().into_diagnostic()?;
    if args.all_tags && names_tag_or_digest(&args.image) {
        return Err(miette!("tag can't be used with --all-tags/-a"));
    }
    if let Some(platform) = &args.platform {
        platform.parse::<Platform>().map_err(|e| miette!("{e}"))?;
    }
    let tag = if args.all_tags {
        String::new()
    } else {
        reference
            .digest()
            .map(ToString::to_string)
            .or_else(|| reference.tag().map(str::to_string))
            .unwrap_or_else(|| DEFAULT_TAG.to_string())
    };
    let auth = registry_auth(reference.domain())?;
    let c = client(root)?;
    let mut call = c
        .post("/images/create")
        .query("fromImage", reference.repository())
        .query("tag", tag)
        .query_opt("platform", args.platform.as_deref());
    if let Some(auth) = auth {
        call = call.header(REGISTRY_AUTH_HEADER, auth);
    }
    let stream = call.stream().map_err(api_error)?;
    for pulled in follow(stream, args.quiet)? {
        if let Some(name) = pulled["Reference"].as_str() {
            println!("{name}");
        }
    }
    Ok(())
}

/// `stack push`: `POST /images/{name}/push?tag=…`.
pub fn push(root: &Path, args: &PushArgs) -> miette::Result<()> {
    let reference: Reference = args.image.parse().into_diagnostic()?;
    if reference.digest().is_some() {
        return Err(miette!("cannot push a digest reference: {}", args.image));
    }
    let auth = registry_auth(reference.domain())?;
    let c = client(root)?;
    let mut call = c
        .post(&format!(
            "/images/{}/push",
            super::images::image_path(&reference.repository())
        ))
        .query("tag", reference.tag().unwrap_or(DEFAULT_TAG));
    if let Some(auth) = auth {
        call = call.header(REGISTRY_AUTH_HEADER, auth);
    }
    let stream = call.stream().map_err(api_error)?;
    let aux = follow(stream, args.quiet)?;
    if args.quiet {
        for pushed in aux {
            if let Some(digest) = pushed["Digest"].as_str() {
                println!("{digest}");
            }
        }
    }
    Ok(())
}

/// `stack login`.
pub fn login(args: &LoginArgs) -> miette::Result<()> {
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
    let client = registry_client(&args.registry)?;
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
pub fn search(args: &SearchArgs) -> miette::Result<()> {
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
        ..options(&args.registry)?
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
