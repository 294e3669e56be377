//! More container verbs with Docker's flags and output: `ps` and `inspect`
//! (with `--format` and `--filter`), `top`, `diff`, `cp`, `update`,
//! `port` and `container prune`. Every verb but `port` is a client of the
//! daemon's API (`cp` streams tar archives both ways, with Docker's path
//! rules from `reconcile::archive` applied on this side); this file parses
//! flags and prints.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use miette::{IntoDiagnostic, miette};
use serde_json::{Value, json};

use super::containers::LimitArgs;
use super::daemon::{api_error, client};
use super::filter::{Filters, PsEntry, PsQuery};
use super::output::{human_duration, human_size};
use super::services::{Services, is_no_such_container};
use super::template::{self, Template};
use crate::api::Listed;
use crate::api::client::{Client, segment};
use crate::api::verbs::{PATH_STAT_HEADER, UpdateBody, decode_path_stat};
use crate::reconcile::archive::{self as cp_rules, CopyInfo, PathStat};
use crate::reconcile::health::HealthStatus;
use crate::reconcile::verbs::{
    CHANGE_ADDED, CHANGE_DELETED, Change, ContainerSummary, PruneReport, RestartPolicy, TopResult,
    UpdateRequest, UpdateResult, VerbError, summary_of,
};

/// A library error as a diagnostic with its whole chain of causes.
fn report(e: VerbError) -> miette::Report {
    miette!("{}", crate::error_chain(&e))
}

/// `stack ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only print ids
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Do not shorten ids and commands
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Show only the latest created container (of any state)
    #[arg(short = 'l', long = "latest")]
    latest: bool,
    /// Show the N last created containers (of any state)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<i64>,
    /// Show sizes: the writable layer and, in parentheses, with the image
    #[arg(short = 's', long = "size")]
    size: bool,
    /// Filter: id, name, label, status, exited, ancestor, before, since,
    /// health, volume, network, is-task (KEY=VALUE, repeatable)
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Output: table, json, or a Go template ('table {{.ID}}\t{{.Names}}')
    #[arg(long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// Every container of stack NAME (of the stack here when NAME is left
    /// out) in Compose's columns: NAME, SERVICE, STATUS (with health,
    /// restarts and the next try of a backoff), PORTS
    #[arg(
        long = "stack",
        value_name = "NAME",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    stack: Option<String>,
}

/// The default columns of `ps --stack`, as `docker compose ps` has them.
const STACK_PS_TABLE: &str = "table {{.Name}}\t{{.Service}}\t{{.Status}}\t{{.Ports}}";

/// Column titles of `ps --stack` fields.
fn stack_ps_titles() -> Value {
    json!({
        "ID": "CONTAINER ID", "Name": "NAME", "Service": "SERVICE", "Replica": "REPLICA",
        "Image": "IMAGE", "State": "STATE", "Status": "STATUS", "Restarts": "RESTARTS",
        "NextTry": "NEXT TRY", "Ports": "PORTS",
    })
}

/// `ps --stack`'s STATUS: Docker's, then the restarts the stack loop made
/// and, in a backoff, when it tries next (`Exited (1) 2 seconds ago, 3
/// restarts, next try in 4 seconds`).
fn stack_status(
    status: &str,
    restarts: usize,
    given_up: bool,
    held: bool,
    next_try: Option<Duration>,
) -> String {
    let mut parts = vec![status.to_string()];
    match restarts {
        0 => {}
        1 => parts.push("1 restart".into()),
        n => parts.push(format!("{n} restarts")),
    }
    if held {
        parts.push("stopped by the user".into());
    }
    if given_up {
        parts.push("given up".into());
    } else if let Some(wait) = next_try {
        parts.push(if wait.is_zero() {
            "next try now".into()
        } else {
            format!("next try in {}", human_duration(wait).to_lowercase())
        });
    }
    parts.join(", ")
}

/// `stack ps --stack [NAME]`: the stack's containers by service and
/// replica, running or not.
fn ps_stack(c: &Client, args: &PsArgs, name: &str) -> miette::Result<i32> {
    let stack = if name.is_empty() {
        let cwd = std::env::current_dir().into_diagnostic()?;
        super::services::project_in(&cwd)
            .map(|p| p.stack)
            .ok_or_else(|| {
                miette!(
                    "no stack file that loads in {}: name the stack (--stack NAME)",
                    cwd.display()
                )
            })?
    } else {
        name.to_string()
    };
    let listed: Vec<Listed> = c
        .get("/containers/json")
        .flag("all", true)
        .send_json()
        .map_err(api_error)?;
    // The daemon's loop knows the backoffs (a stack it does not keep has
    // none).
    let next_tries: BTreeMap<String, String> = c
        .get(&format!("/stacks/{}", segment(&stack)))
        .send_json::<crate::daemon::stacks::StackStatus>()
        .map(|s| s.next_tries)
        .unwrap_or_default();
    let members = super::services::members(&stack, &listed);
    let now = SystemTime::now();
    let trunc = !args.no_trunc;
    let mut rows = Vec::new();
    for m in &members {
        let Some(l) = listed.iter().find(|l| l.record.id == m.id) else {
            continue;
        };
        let memory = crate::daemon::stacks::restart_memory(&l.record);
        let restarts = memory.starts.len().saturating_sub(1);
        let next_try = next_tries
            .get(&m.name)
            .and_then(|t| super::output::parse_rfc3339(t))
            .map(|due| due.duration_since(now).unwrap_or(Duration::ZERO));
        let status = stack_status(
            &super::containers::status_text(&l.state, l.health),
            restarts,
            memory.given_up,
            memory.held,
            next_try,
        );
        let health = l.health.map_or("none", HealthStatus::as_str);
        let summary = summary_of(&l.record, &l.state, &l.command, health, None, None, None);
        rows.push(json!({
            "ID": if trunc { m.id.chars().take(12).collect() } else { m.id.clone() },
            "Name": m.name,
            "Service": m.service,
            "Replica": m.replica,
            "Image": l.record.image,
            "State": l.state.status.to_string(),
            "Status": status,
            "Restarts": restarts,
            "NextTry": next_tries.get(&m.name).cloned().unwrap_or_default(),
            "Ports": crate::reconcile::ports::ps_column(&summary.ports),
        }));
    }
    let mut out = io::stdout().lock();
    if args.quiet {
        for row in &rows {
            writeln!(out, "{}", row["ID"].as_str().unwrap_or_default()).into_diagnostic()?;
        }
        return Ok(0);
    }
    let format = effective_format(args.format.as_deref(), STACK_PS_TABLE);
    let text = template::format_rows(
        &format,
        STACK_PS_TABLE,
        &rows,
        &stack_ps_titles(),
        &template::no_methods,
    )
    .map_err(|e| miette!("{e}"))?;
    out.write_all(text.as_bytes()).into_diagnostic()?;
    Ok(0)
}

/// Docker's `ps` default columns.
const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// Column titles of `ps` fields, as docker/cli names them.
fn ps_titles() -> Value {
    json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
        "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
        "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
        "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
        "LocalVolumes": "LOCAL VOLUMES",
    })
}

/// docker/cli's `Ellipsis`: at most `n` characters, the last one `…`.
fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote` for the texts containers have.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// "2006-01-02 15:04:05 +0000 UTC" (Go's `time.Time.String` in UTC), the
/// `CreatedAt` of `ps` and `images`.
pub fn go_time(t: SystemTime) -> String {
    let text = crate::runtime::logs::rfc3339_nanos(t);
    match (text.get(0..10), text.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} +0000 UTC"),
        _ => text,
    }
}

/// One `ps` row in docker/cli's formatter fields.
fn ps_row(s: &ContainerSummary, trunc: bool, now: SystemTime) -> Value {
    let id = if trunc {
        s.id.chars().take(12).collect()
    } else {
        s.id.clone()
    };
    let command = if trunc {
        ellipsis(&s.command, 20)
    } else {
        s.command.clone()
    };
    let names: Vec<String> = s
        .names
        .iter()
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<String> = s
        .mounts
        .iter()
        .map(|m| {
            let name = if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            };
            if trunc {
                ellipsis(name, 15)
            } else {
                name.clone()
            }
        })
        .collect();
    let networks: Vec<String> = s
        .network_settings
        .get("Networks")
        .and_then(Value::as_object)
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default();
    let created = UNIX_EPOCH + Duration::from_secs(u64::try_from(s.created).unwrap_or(0));
    let running_for = now.duration_since(created).unwrap_or(Duration::ZERO);
    let size = match (s.size_rw, s.size_root_fs) {
        (Some(rw), Some(virt)) if virt > 0 => {
            format!("{} (virtual {})", human_size(rw), human_size(virt))
        }
        (Some(rw), _) => human_size(rw),
        _ => "0B".into(),
    };
    json!({
        "ID": id,
        "Image": s.image,
        "Command": go_quote(&command),
        "CreatedAt": go_time(created),
        "RunningFor": format!("{} ago", human_duration(running_for)),
        "Ports": crate::reconcile::ports::ps_column(&s.ports),
        "State": s.state,
        "Status": s.status,
        "Size": size,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks.join(","),
        "LocalVolumes": s.mounts.iter().filter(|m| m.kind == "volume").count().to_string(),
    })
}

/// What the filters look at.
fn ps_entry(s: &ContainerSummary) -> PsEntry {
    PsEntry {
        id: s.id.clone(),
        name: s
            .names
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        labels: s.labels.clone(),
        state: s.state.clone(),
        exit_code: s.exit_code,
        started: !s.started_at.is_empty(),
        image_id: s.image_id.clone(),
        health: s.health.clone(),
        mounts: s
            .mounts
            .iter()
            .map(|m| {
                let name = if m.name.is_empty() {
                    &m.source
                } else {
                    &m.name
                };
                (name.clone(), m.destination.clone())
            })
            .collect(),
        networks: s
            .network_settings
            .get("Networks")
            .and_then(Value::as_object)
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default(),
        ports: s
            .ports
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.get("PrivatePort")?.as_u64()?).ok()?;
                let proto = p.get("Type")?.as_str()?.to_string();
                Some((port, proto, p.get("PublicPort").is_some()))
            })
            .collect(),
    }
}

/// The format to use: `table` and nothing mean the default table, `json`
/// is `{{json .}}`.
fn effective_format(format: Option<&str>, default_table: &str) -> String {
    match format.map(str::trim) {
        None | Some("") | Some("table") => default_table.to_string(),
        Some("json") => "{{json .}}".to_string(),
        Some(other) => other.to_string(),
    }
}

/// `stack ps`.
pub fn ps(root: &Path, args: &PsArgs) -> miette::Result<i32> {
    let c = client(root)?;
    if let Some(stack) = &args.stack {
        return ps_stack(&c, args, stack);
    }
    let listed: Vec<Listed> = c
        .get("/containers/json")
        .flag("all", true)
        .flag("size", args.size)
        .send_json()
        .map_err(api_error)?;
    let image_sizes: BTreeMap<String, u64> = if args.size {
        let images: Vec<crate::api::images::ImageSummary> =
            c.get("/images/json").send_json().map_err(api_error)?;
        images.into_iter().map(|i| (i.id, i.size)).collect()
    } else {
        BTreeMap::new()
    };
    let summaries: Vec<ContainerSummary> = listed
        .iter()
        .rev()
        .map(|l| {
            let health = l.health.map_or("none", HealthStatus::as_str);
            let mut s = summary_of(
                &l.record,
                &l.state,
                &l.command,
                health,
                l.size.or(args.size.then_some(0)),
                image_sizes.get(&l.record.image_id).copied(),
                None,
            );
            s.status = super::containers::status_text(&l.state, l.health);
            s
        })
        .collect();
    let filters = Filters::parse(&args.filter).map_err(|e| miette!("{e}"))?;
    let last = match (args.latest, args.last) {
        (true, _) => Some(1),
        (false, Some(n)) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => None,
    };
    let query = PsQuery {
        all: args.all,
        last,
    };
    let entries: Vec<PsEntry> = summaries.iter().map(ps_entry).collect();
    let image_id = |reference: &str| {
        c.get(&format!("/images/{reference}/json"))
            .send_json::<Value>()
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
    };
    let picked =
        super::filter::select(&entries, &filters, query, &image_id).map_err(|e| miette!("{e}"))?;
    let trunc = !args.no_trunc;
    let now = SystemTime::now();
    let mut out = io::stdout().lock();
    if args.quiet {
        for i in picked {
            let id = &summaries[i].id;
            let id = if trunc { &id[..12.min(id.len())] } else { id };
            writeln!(out, "{id}").into_diagnostic()?;
        }
        return Ok(0);
    }
    let default = if args.size {
        format!("{PS_TABLE}\t{{{{.Size}}}}")
    } else {
        PS_TABLE.to_string()
    };
    let format = effective_format(args.format.as_deref(), &default);
    let rows: Vec<Value> = picked
        .iter()
        .map(|&i| ps_row(&summaries[i], trunc, now))
        .collect();
    let labels: BTreeMap<String, BTreeMap<String, String>> = picked
        .iter()
        .map(|&i| {
            let s = &summaries[i];
            let id = if trunc {
                s.id.chars().take(12).collect()
            } else {
                s.id.clone()
            };
            (id, s.labels.clone())
        })
        .collect();
    // docker/cli's `{{.Label "name"}}`.
    let methods = |name: &str, dot: &Value, args: &[Value]| -> Option<Result<Value, String>> {
        if name != "Label" {
            return None;
        }
        let [Value::String(key)] = args else {
            return Some(Err("Label takes one label name".into()));
        };
        let id = dot.get("ID").and_then(Value::as_str).unwrap_or_default();
        Some(Ok(Value::String(
            labels
                .get(id)
                .and_then(|l| l.get(key))
                .cloned()
                .unwrap_or_default(),
        )))
    };
    let text = template::format_rows(&format, &default, &rows, &ps_titles(), &methods)
        .map_err(|e| miette!("{e}"))?;
    out.write_all(text.as_bytes()).into_diagnostic()?;
    Ok(0)
}

/// `stack inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format each result with a Go template ('{{.State.Status}}'); json
    /// for one JSON document per container
    #[arg(short = 'f', long = "format", value_name = "FORMAT")]
    format: Option<String>,
    /// Containers (names or ids)
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack inspect` for containers: a JSON array, or one line per container
/// with `--format`.
pub fn inspect(root: &Path, args: &InspectArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let services = Services::new(&c);
    let get = |name: &str| {
        c.get(&format!("/containers/{}/json", segment(name)))
            .send_json::<Value>()
    };
    let mut docs = Vec::new();
    for name in &args.containers {
        match get(name) {
            Ok(doc) => docs.push(doc),
            // A service here: each of its containers.
            Err(e) if is_no_such_container(&e) => {
                for m in services.containers(name, None)? {
                    docs.push(get(&m.id).map_err(api_error)?);
                }
            }
            Err(e) => return Err(api_error(e)),
        }
    }
    let mut out = io::stdout().lock();
    match args.format.as_deref() {
        None | Some("") => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&docs).into_diagnostic()?
            )
            .into_diagnostic()?;
        }
        Some(format) => {
            let format = if format == "json" {
                "{{json .}}"
            } else {
                format
            };
            let template = Template::parse(format).map_err(|e| miette!("{e}"))?;
            for doc in &docs {
                let line = template
                    .render(doc, &template::no_methods)
                    .map_err(|e| miette!("{e}"))?;
                writeln!(out, "{line}").into_diagnostic()?;
            }
        }
    }
    Ok(0)
}

/// `stack top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The container
    container: String,
    /// Options for ps (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// `stack top`: the container's processes, as docker/cli prints them; a
/// service's are each replica's, under its container's name (as Compose
/// prints them).
pub fn top(root: &Path, args: &TopArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let get = |name: &str| {
        c.get(&format!("/containers/{}/top", segment(name)))
            .query("ps_args", args.ps_options.join(" "))
            .send_json::<TopResult>()
    };
    match get(&args.container) {
        Ok(result) => print_top(&result),
        Err(e) if is_no_such_container(&e) => {
            let members = Services::new(&c).containers(&args.container, None)?;
            for (i, m) in members.iter().enumerate() {
                let result = get(&m.id).map_err(api_error)?;
                let gap = if i == 0 { "" } else { "\n" };
                io::stdout()
                    .write_all(format!("{gap}{}\n", m.name).as_bytes())
                    .into_diagnostic()?;
                print_top(&result)?;
            }
            Ok(0)
        }
        Err(e) => Err(api_error(e)),
    }
}

fn print_top(result: &TopResult) -> miette::Result<i32> {
    let mut text = result.titles.join("\t");
    text.push('\n');
    for p in &result.processes {
        text.push_str(&p.join("\t"));
        text.push('\n');
    }
    // docker/cli: tabwriter with a minimum width of 20.
    io::stdout()
        .write_all(template::tabwrite_min(&text, 20).as_bytes())
        .into_diagnostic()?;
    Ok(0)
}

/// `stack diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container
    container: String,
}

/// `stack diff`: `A`, `C` or `D` and the path, one change per line.
pub fn diff(root: &Path, args: &DiffArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let changes: Vec<Change> = c
        .get(&format!("/containers/{}/changes", segment(&args.container)))
        .send_json()
        .map_err(api_error)?;
    let mut out = io::stdout().lock();
    for change in changes {
        let kind = match change.kind {
            CHANGE_ADDED => 'A',
            CHANGE_DELETED => 'D',
            _ => 'C',
        };
        writeln!(out, "{kind} {}", change.path).into_diagnostic()?;
    }
    Ok(0)
}

/// `stack cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Keep uid and gid of what is copied into the container (default: root)
    #[arg(short = 'a', long = "archive")]
    archive: bool,
    /// Follow a symlink named as the source
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Print nothing about the copy
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// CONTAINER:SRC_PATH, a host path, or - for a tar stream on stdin
    source: String,
    /// CONTAINER:DEST_PATH, a host path, or - for a tar stream on stdout
    destination: String,
}

/// docker/cli's `splitCpArg`: `CONTAINER:PATH`, or a local path (absolute,
/// or starting with `.`, or without `:`).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((container, path)) if !container.starts_with('.') => (Some(container), path),
        _ => (None, arg),
    }
}

/// docker/cli's `resolveLocalPath`: absolute, keeping a trailing `/` or
/// `/.`.
fn local_path(path: &str) -> miette::Result<String> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    let joined: PathBuf = cwd.join(path);
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    let last_is_dot = path == "." || path.ends_with("/.");
    if last_is_dot && !out.ends_with("/.") {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push('.');
    }
    if !out.ends_with('/') && path.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// `stack cp`: copies between a container and the host (or a tar stream),
/// with Docker's path rules.
pub fn cp(root: &Path, args: &CpArgs) -> miette::Result<i32> {
    let (src_container, src) = if args.source == "-" {
        (None, "-")
    } else {
        split_cp_arg(&args.source)
    };
    let (dst_container, dst) = if args.destination == "-" {
        (None, "-")
    } else {
        split_cp_arg(&args.destination)
    };
    let copied = match (src_container, dst_container) {
        (Some(_), Some(_)) => return Err(miette!("copying between containers is not supported")),
        (None, None) => return Err(miette!("must specify at least one container source")),
        (Some(container), None) => copy_from(&client(root)?, container, src, dst, args)?,
        (None, Some(container)) => copy_to(&client(root)?, container, src, dst, args)?,
    };
    if !args.quiet && io::stderr().is_terminal() && args.destination != "-" {
        eprintln!(
            "Successfully copied {} to {}",
            human_size(copied),
            args.destination
        );
    }
    Ok(0)
}

/// Counts what passes through.
struct Counting<T> {
    inner: T,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += u64::try_from(n).unwrap_or(0);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += u64::try_from(n).unwrap_or(0);
        Ok(n)
    }
}

fn archive_url(container: &str) -> String {
    format!("/containers/{}/archive", segment(container))
}

/// `HEAD /containers/{id}/archive`: what `path` is in the container.
fn stat_path(c: &Client, container: &str, path: &str) -> miette::Result<PathStat> {
    let headers = c
        .head(&archive_url(container))
        .query("path", path)
        .headers()
        .map_err(api_error)?;
    let value = headers
        .get(PATH_STAT_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| miette!("the daemon sent no {PATH_STAT_HEADER} header"))?;
    decode_path_stat(value).map_err(|e| miette!("{e}"))
}

fn copy_from(
    c: &Client,
    container: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
) -> miette::Result<u64> {
    let mut src_path = src.to_string();
    let mut rebase_name = String::new();
    if args.follow_link {
        // As docker/cli: a failed stat is left for the copy to report.
        if let Ok(stat) = stat_path(c, container, src)
            && stat.is_symlink()
        {
            // The target keeps the name the link was asked by.
            rebase_name = cp_rules::split_path_dir_entry(src).1;
            src_path = stat.link_target;
        }
    }
    let body = c
        .get(&archive_url(container))
        .query("path", &src_path)
        .stream()
        .map_err(api_error)?;
    if dst == "-" {
        let mut body = body;
        let mut out = io::stdout().lock();
        let copied = io::copy(&mut body, &mut out).into_diagnostic()?;
        out.flush().into_diagnostic()?;
        return Ok(copied);
    }
    let stat = body
        .header(PATH_STAT_HEADER)
        .ok_or_else(|| miette!("the daemon sent no {PATH_STAT_HEADER} header"))
        .and_then(|v| decode_path_stat(v).map_err(|e| miette!("{e}")))?;
    let dst_info = cp_rules::local_destination(&local_path(dst)?).map_err(report)?;
    let src_info = CopyInfo {
        path: src_path.clone(),
        exists: true,
        is_dir: stat.is_dir(),
        rebase_name: rebase_name.clone(),
    };
    let mut plan = cp_rules::prepare_copy(&src_info, &dst_info).map_err(report)?;
    // The daemon names the entries after the path it was asked for; rename
    // them to what the rules want.
    let sent = cp_rules::split_path_dir_entry(&src_path).1;
    let wanted = match &plan.rebase {
        Some((_, new)) => new.clone(),
        None if !rebase_name.is_empty() => rebase_name,
        None => sent.clone(),
    };
    plan.rebase = (wanted != sent).then_some((sent, wanted));
    let mut body = Counting {
        inner: body,
        count: 0,
    };
    cp_rules::untar_local(&mut body, &plan).map_err(report)?;
    Ok(body.count)
}

fn copy_to(
    c: &Client,
    container: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
) -> miette::Result<u64> {
    // What the destination is in the container (a symlink is followed); a
    // failed stat is left for the copy to report, as docker/cli does.
    let mut dst_info = CopyInfo {
        path: dst.to_string(),
        ..CopyInfo::default()
    };
    let mut stat = stat_path(c, container, dst);
    if let Ok(s) = &stat
        && s.is_symlink()
    {
        dst_info.path = s.link_target.clone();
        stat = stat_path(c, container, &s.link_target);
    }
    if let Ok(s) = &stat {
        dst_info.exists = true;
        dst_info.is_dir = s.is_dir();
    }
    let put = |dir: &str, body: Box<dyn Read + Send>| {
        c.put(&archive_url(container))
            .query("path", dir)
            .query("noOverwriteDirNonDir", "true")
            .flag("copyUIDGID", args.archive)
            .upload(body)
            .ok()
            .map_err(api_error)
    };
    if src == "-" {
        if !dst_info.is_dir {
            return Err(miette!(
                "destination \"{container}:{dst}\" must be a directory"
            ));
        }
        put(&dst_info.path, Box::new(io::stdin()))?;
        return Ok(0);
    }
    let src_info = cp_rules::local_source(&local_path(src)?, args.follow_link).map_err(report)?;
    let plan = cp_rules::prepare_copy(&src_info, &dst_info).map_err(report)?;
    let name = plan.rebase.as_ref().map(|(_, new)| new.clone());
    let (reader, writer) = io::pipe().into_diagnostic()?;
    let make = std::thread::spawn(move || {
        let mut writer = Counting {
            inner: writer,
            count: 0,
        };
        cp_rules::tar_local(&src_info, name.as_deref(), &mut writer).map(|()| writer.count)
    });
    let sent = put(&plan.dest_dir, Box::new(reader));
    let made = make
        .join()
        .map_err(|_| miette!("the archiving thread panicked"))?;
    sent?;
    made.map_err(report)
}

/// `stack update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    limits: LimitArgs,
    /// Restart policy: no, always, on-failure[:N], unless-stopped
    #[arg(long = "restart")]
    restart: Option<String>,
    /// Containers
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `stack update`: new limits (live for running containers, kept for later
/// starts) and restart policy; prints each container done.
pub fn update(root: &Path, args: &UpdateArgs) -> miette::Result<i32> {
    let resources = args.limits.resources()?;
    let restart = args
        .restart
        .as_deref()
        .map(|r| {
            crate::spec::restart::parse_restart(r)
                .map(|(name, count)| RestartPolicy {
                    name,
                    maximum_retry_count: count.unwrap_or(0),
                })
                .map_err(|e| miette!("invalid --restart: {e}"))
        })
        .transpose()?;
    if resources == Default::default() && restart.is_none() {
        return Err(miette!(
            "you must provide one or more flags when using this command"
        ));
    }
    let body = UpdateBody::from_request(&UpdateRequest { resources, restart });
    let c = client(root)?;
    let mut failed = 0;
    for name in &args.containers {
        let result: Result<UpdateResult, _> = c
            .post(&format!("/containers/{}/update", segment(name)))
            .json(&body)
            .send_json();
        match result {
            Ok(r) => {
                for w in r.warnings {
                    eprintln!("WARNING: {w}");
                }
                println!("{name}");
            }
            Err(e) => {
                eprintln!("Error response from daemon: {}", api_error(e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(miette!(
            "{failed} of {} containers were not updated",
            args.containers.len()
        ));
    }
    Ok(0)
}

/// `stack port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// With a service: the replica (default: the first)
    #[arg(long = "index", value_name = "N")]
    index: Option<u32>,
    /// The container (or a service of the stack here)
    container: String,
    /// Only this port: PORT[/PROTO]
    private_port: Option<String>,
}

/// `stack port`: `80/tcp -> 0.0.0.0:8080` per published port, from the
/// daemon's `NetworkSettings.Ports` (as docker/cli does).
pub fn port(root: &Path, args: &PortArgs) -> miette::Result<i32> {
    let c = client(root)?;
    let get = |name: &str| {
        c.get(&format!("/containers/{}/json", segment(name)))
            .send_json::<Value>()
    };
    let inspected = match get(&args.container) {
        Err(e) if is_no_such_container(&e) => {
            let members = Services::new(&c).containers(&args.container, args.index)?;
            let first = members
                .first()
                .ok_or_else(|| miette!("No such container: {}", args.container))?;
            get(&first.id)
        }
        other => other,
    }
    .map_err(api_error)?;
    let ports: BTreeMap<String, Vec<crate::reconcile::verbs::PortBinding>> =
        inspected["NetworkSettings"]["Ports"]
            .as_object()
            .map(|map| {
                map.iter()
                    .filter_map(|(key, list)| {
                        serde_json::from_value::<Vec<crate::reconcile::verbs::PortBinding>>(
                            list.clone(),
                        )
                        .ok()
                        .map(|b| (key.clone(), b))
                    })
                    .collect()
            })
            .unwrap_or_default();
    let wanted = args.private_port.as_deref().map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    if let Some(w) = &wanted
        && !ports.contains_key(w)
    {
        return Err(miette!(
            "no public port '{w}' published for {}",
            args.container
        ));
    }
    let mut out = io::stdout().lock();
    for (port, bindings) in &ports {
        if wanted.as_ref().is_some_and(|w| w != port) {
            continue;
        }
        for b in bindings {
            let host = if b.host_ip.contains(':') {
                format!("[{}]:{}", b.host_ip, b.host_port)
            } else {
                format!("{}:{}", b.host_ip, b.host_port)
            };
            if wanted.is_some() {
                writeln!(out, "{host}").into_diagnostic()?;
            } else {
                writeln!(out, "{port} -> {host}").into_diagnostic()?;
            }
        }
    }
    Ok(0)
}

/// `stack container prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Filter: until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
}

/// `stack container prune`: removes stopped containers and prints Docker's
/// report. The daemon checks the filters (`until`, `label`, `label!`).
pub fn prune(root: &Path, args: &PruneArgs) -> miette::Result<i32> {
    let filters = Filters::parse(&args.filter).map_err(|e| miette!("{e}"))?;
    if !args.force {
        eprint!(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
        );
        let mut answer = String::new();
        io::stdin().read_line(&mut answer).into_diagnostic()?;
        if !matches!(answer.trim(), "y" | "Y") {
            return Ok(0);
        }
    }
    let c = client(root)?;
    let mut call = c.post("/containers/prune");
    if !filters.is_empty() {
        call = call.query("filters", filters.to_json());
    }
    let pruned: PruneReport = call.send_json().map_err(api_error)?;
    let mut out = io::stdout().lock();
    if !pruned.containers_deleted.is_empty() {
        writeln!(out, "Deleted Containers:").into_diagnostic()?;
        for id in &pruned.containers_deleted {
            writeln!(out, "{id}").into_diagnostic()?;
        }
        writeln!(out).into_diagnostic()?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(pruned.space_reclaimed)
    )
    .into_diagnostic()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_status_adds_restarts_and_the_next_try() {
        assert_eq!(
            stack_status("Up 3 seconds (healthy)", 0, false, false, None),
            "Up 3 seconds (healthy)"
        );
        assert_eq!(
            stack_status(
                "Exited (3) 1 second ago",
                2,
                false,
                false,
                Some(Duration::from_secs(4))
            ),
            "Exited (3) 1 second ago, 2 restarts, next try in 4 seconds"
        );
        assert_eq!(
            stack_status(
                "Exited (3) 1 second ago",
                1,
                false,
                false,
                Some(Duration::ZERO)
            ),
            "Exited (3) 1 second ago, 1 restart, next try now"
        );
        assert_eq!(
            stack_status("Exited (3) 1 second ago", 5, true, false, None),
            "Exited (3) 1 second ago, 5 restarts, given up"
        );
        assert_eq!(
            stack_status("Exited (0) 1 second ago", 0, false, true, None),
            "Exited (0) 1 second ago, stopped by the user"
        );
    }
}
