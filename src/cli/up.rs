//! `stack up` and `stack apply` with Compose's flags, and the foreground
//! `stack up`: the daemon keeps the stack converged while this command
//! prints each apply, streams every service container's log with
//! Compose's prefixes (`web-1  | line`), follows containers made later
//! through the daemon's events, and stops the stack at Ctrl-C.
//!
//! Ctrl-C (SIGINT or SIGTERM) asks the daemon to stop keeping the stack
//! and to stop its containers, dependents first (`POST
//! /stacks/{name}/stop`); the containers are kept, stopped, as Compose
//! keeps them, and the next `stack up` starts them again. A second Ctrl-C
//! kills them (`POST /stacks/{name}/kill`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use miette::{IntoDiagnostic, miette};

use super::daemon::{api_error, client};
use super::follow::{EndedFn, Followers, LineFn};
use crate::api::client::{Client, segment};
use crate::api::stacks::WaitResult;
use crate::daemon::events::Event;
use crate::daemon::stacks::{ApplyOptions, PullPolicy, Report, StackStatus};
use crate::reconcile::desired::{LABEL_REPLICA, LABEL_SERVICE, LABEL_STACK};
use crate::spec::load::LoadOptions;
use crate::spec::model::StackSpec;

/// The flags `stack up` and `stack apply` share.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Only these services, and the services they depend on (default:
    /// every service)
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Pull images: always (at this apply), missing or never
    #[arg(long, value_name = "POLICY", default_value = "missing", value_parser = parse_pull)]
    pub pull: PullPolicy,
    /// Recreate the containers even if their configuration is unchanged
    /// (this apply only)
    #[arg(long)]
    pub force_recreate: bool,
    /// Do not start the services the named ones depend on
    #[arg(long)]
    pub no_deps: bool,
    /// Remove the containers of services no longer in the file
    /// (--remove-orphans=false keeps them)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub remove_orphans: bool,
    /// Build the images of services that build, even present ones (cached steps are reused)
    #[arg(long)]
    pub build: bool,
    /// Return only when every service runs, and is healthy where it has a
    /// health check (implies -d)
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub wait_timeout: Option<u64>,
}

fn parse_pull(s: &str) -> Result<PullPolicy, String> {
    s.parse()
}

impl UpArgs {
    /// What the daemon is asked for.
    pub fn apply_options(&self) -> ApplyOptions {
        ApplyOptions {
            services: self.services.clone(),
            no_deps: self.no_deps,
            remove_orphans: self.remove_orphans,
            pull: self.pull,
            build: self.build,
            force_recreate: self.force_recreate,
        }
    }
}

/// The flags of the foreground `stack up`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForegroundArgs {
    /// Print the logs without colors
    #[arg(long)]
    pub no_color: bool,
    /// Print the logs without the `service-N |` prefix
    #[arg(long)]
    pub no_log_prefix: bool,
    /// Stop the stack when a container exits by itself
    #[arg(long, conflicts_with_all = ["detach", "wait"])]
    pub abort_on_container_exit: bool,
    /// Exit with the code of SERVICE's container (implies
    /// --abort-on-container-exit)
    #[arg(long, value_name = "SERVICE", conflicts_with_all = ["detach", "wait"])]
    pub exit_code_from: Option<String>,
}

/// `stack up` (`detach` or `--wait`: register, apply and return) and
/// `stack apply` (`fg` is `None`).
pub fn up(
    root: &Path,
    load: &LoadOptions,
    args: &UpArgs,
    detach: bool,
    fg: Option<&ForegroundArgs>,
) -> miette::Result<i32> {
    let (mut source, spec) = super::stacks::load_source(load)?;
    source.options = args.apply_options();
    let fg = match fg {
        Some(fg) if !detach && !args.wait => Some(fg),
        _ => None,
    };
    if let Some(service) = fg.and_then(|f| f.exit_code_from.as_deref())
        && !spec.services.contains_key(service)
    {
        return Err(miette!("--exit-code-from {service}: no such service"));
    }
    let c = Arc::new(client(root)?);
    let Some(fg) = fg else {
        let status: StackStatus = c
            .post("/stacks")
            .json(&source)
            .send_json()
            .map_err(api_error)?;
        let mut out = std::io::stdout().lock();
        super::stacks::print_report(&mut out, &status.report)?;
        drop(out);
        super::stacks::status_failed(&status)?;
        if args.wait {
            return wait(&c, &status.name, args.wait_timeout);
        }
        return Ok(0);
    };
    Foreground::new(c, &source.name, &spec, fg).run(&source)
}

/// `--wait`: asks the daemon to wait for the stack.
fn wait(c: &Client, name: &str, timeout: Option<u64>) -> miette::Result<i32> {
    let result: WaitResult = c
        .get(&format!("/stacks/{}/wait", segment(name)))
        .query("timeout", timeout.unwrap_or(0))
        .send_json()
        .map_err(api_error)?;
    if result.ready {
        println!(" ✔ stack {name} is up");
        return Ok(0);
    }
    Err(miette!(
        "stack {name} is not up: {}",
        result.error.as_deref().unwrap_or("unknown reason")
    ))
}

/// Colors of the prefixes, per service, in Compose's order (cyan,
/// yellow, green, magenta, blue, then their bright forms).
const COLORS: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// How log lines and notes are prefixed: `web-1  | line`, the name
/// padded to the longest one, in a color per service on a terminal.
#[derive(Debug, Clone)]
pub struct Prefixes {
    width: usize,
    color: bool,
    prefix: bool,
    services: Vec<String>,
}

impl Prefixes {
    /// Prefixes for the services of `spec`: the width fits the longest
    /// `service-replica` name.
    pub fn new(spec: &StackSpec, color: bool, prefix: bool) -> Prefixes {
        let width = spec
            .services
            .iter()
            .map(|(name, s)| short_name(name, s.replicas.unwrap_or(1).max(1)).len())
            .max()
            .unwrap_or(0);
        Prefixes {
            width,
            color,
            prefix,
            services: spec.services.keys().cloned().collect(),
        }
    }

    fn paint(&self, service: &str, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let index = self
            .services
            .iter()
            .position(|s| s == service)
            .unwrap_or_else(|| {
                service.bytes().fold(0usize, |h, b| {
                    h.wrapping_mul(31).wrapping_add(usize::from(b))
                })
            });
        format!("\x1b[{}m{text}\x1b[0m", COLORS[index % COLORS.len()])
    }

    /// One log line of replica `replica` of `service`.
    pub fn line(&self, service: &str, replica: u32, text: &str) -> String {
        if !self.prefix {
            return text.to_string();
        }
        let name = short_name(service, replica);
        let head = format!("{name:<width$} |", width = self.width);
        format!("{} {text}", self.paint(service, &head))
    }

    /// A note about a container: `web-1 exited with code 0`.
    pub fn note(&self, service: &str, replica: u32, text: &str) -> String {
        let name = short_name(service, replica);
        format!("{} {text}", self.paint(service, &name))
    }
}

/// `service-replica`, the name Compose shows in its log prefixes.
pub fn short_name(service: &str, replica: u32) -> String {
    format!("{service}-{replica}")
}

/// Whether the foreground's output is colored: stdout is a terminal, no
/// `--no-color`, no `NO_COLOR`.
fn color_stdout(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// What the foreground's threads tell its main loop.
enum Msg {
    Signal(i32),
    Event(Box<Event>),
    Status(Box<StackStatus>),
    Gone,
    EventsEnded(String),
    Stopped(Result<Report, String>),
    FollowerEnded(String),
}

struct Foreground<'a> {
    client: Arc<Client>,
    name: String,
    args: &'a ForegroundArgs,
    prefixes: Arc<Prefixes>,
    out: Arc<Mutex<std::io::Stdout>>,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    followers: Followers,
    /// Containers whose log is being streamed now.
    streaming: BTreeSet<String>,
    since: SystemTime,
}

impl<'a> Foreground<'a> {
    fn new(
        client: Arc<Client>,
        name: &str,
        spec: &'a StackSpec,
        args: &'a ForegroundArgs,
    ) -> Foreground<'a> {
        let (tx, rx) = mpsc::channel();
        let prefixes = Arc::new(Prefixes::new(
            spec,
            color_stdout(args.no_color),
            !args.no_log_prefix,
        ));
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let line: LineFn = {
            let (out, prefixes) = (out.clone(), prefixes.clone());
            Arc::new(move |service, replica, _, text| {
                print_to(&out, &prefixes.line(service, replica, text));
            })
        };
        let ended: EndedFn = {
            let tx = tx.clone();
            Arc::new(move |id| tx.send(Msg::FollowerEnded(id)).is_ok())
        };
        Foreground {
            followers: Followers::new(client.clone(), line, ended),
            client,
            name: name.to_string(),
            args,
            prefixes,
            out,
            tx,
            rx,
            streaming: BTreeSet::new(),
            since: SystemTime::now(),
        }
    }

    fn print(&self, text: &str) {
        print_to(&self.out, text);
    }

    fn run(mut self, source: &crate::daemon::stacks::StackSource) -> miette::Result<i32> {
        // Signals first: a Ctrl-C during the first apply stops the stack too.
        signals(self.tx.clone())?;
        self.since = SystemTime::now();
        let status: StackStatus = self
            .client
            .post("/stacks")
            .json(source)
            .send_json()
            .map_err(api_error)?;
        self.print_report(&status.report);
        if let Some(e) = &status.last_error {
            self.print(&format!("stack {}: {e}", self.name));
        }
        self.events();
        self.poll_status(&status);
        self.attach_running()?;
        self.main_loop()
    }

    fn print_report(&self, report: &Report) {
        let mut text = Vec::new();
        let _ = super::stacks::print_report(&mut text, report);
        if !text.is_empty() {
            self.print(String::from_utf8_lossy(&text).trim_end_matches('\n'));
        }
    }

    /// Follows the stack's container events (from just before the first
    /// apply, so its containers' starts are in).
    fn events(&self) {
        let tx = self.tx.clone();
        super::follow::stack_events(
            self.client.clone(),
            &self.name,
            self.since,
            move |e| match e {
                Ok(event) => tx.send(Msg::Event(Box::new(event))).is_ok(),
                Err(why) => {
                    let _ = tx.send(Msg::EventsEnded(why));
                    false
                }
            },
        );
    }

    /// Looks at the stack's status every second and passes on each new
    /// apply and each change of its error.
    fn poll_status(&self, first: &StackStatus) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let path = format!("/stacks/{}", segment(&self.name));
        let mut seen = (first.last_apply.clone(), first.last_error.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                match client.get(&path).send_json::<StackStatus>() {
                    Ok(status) => {
                        let now = (status.last_apply.clone(), status.last_error.clone());
                        if now != seen {
                            seen = now;
                            if tx.send(Msg::Status(Box::new(status))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) if e.status() == Some(404) => {
                        let _ = tx.send(Msg::Gone);
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
    }

    /// Follows the logs of the stack's running containers.
    fn attach_running(&mut self) -> miette::Result<()> {
        let filters = serde_json::json!({
            "label": [format!("{LABEL_STACK}={}", self.name)],
        })
        .to_string();
        let list: Vec<serde_json::Value> = self
            .client
            .get("/containers/json")
            .query("all", "1")
            .query("filters", filters)
            .send_json()
            .map_err(api_error)?;
        let mut names = Vec::new();
        for c in list {
            let (Some(id), Some(labels)) = (c["Id"].as_str(), c["Labels"].as_object()) else {
                continue;
            };
            let label = |k: &str| labels.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (Some(service), Some(replica)) = (label(LABEL_SERVICE), label(LABEL_REPLICA))
            else {
                continue;
            };
            let replica = replica.parse().unwrap_or(0);
            if c["State"].as_str() == Some("running") {
                names.push(short_name(&service, replica));
                self.follow(id, &service, replica);
            }
        }
        if !names.is_empty() {
            names.sort();
            self.print(&format!("Attaching to {}", names.join(", ")));
        }
        Ok(())
    }

    /// Follows container `id`'s log (again, when it runs again).
    fn follow(&mut self, id: &str, service: &str, replica: u32) {
        self.streaming.insert(id.to_string());
        self.followers
            .follow(id, service, replica, self.since, None);
    }

    fn main_loop(mut self) -> miette::Result<i32> {
        let abort = self.args.abort_on_container_exit || self.args.exit_code_from.is_some();
        let mut stopping: Option<i32> = None;
        let mut killed = false;
        let mut exit_code: Option<i32> = None;
        let mut code_of_service: Option<i32> = None;
        let mut last_action: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let Ok(msg) = self.rx.recv() else {
                return Ok(stopping.unwrap_or(0));
            };
            match msg {
                Msg::Signal(signal) => {
                    if stopping.is_none() {
                        stopping = Some(128 + signal);
                        self.print("Gracefully stopping... (press Ctrl+C again to force)");
                        self.stop();
                    } else if !killed {
                        killed = true;
                        self.print("Killing...");
                        let report: Result<Report, _> = self
                            .client
                            .post(&format!("/stacks/{}/kill", segment(&self.name)))
                            .send_json();
                        if let Err(e) = report {
                            self.print(&format!(
                                "cannot kill the stack: {}",
                                crate::error_chain(&e)
                            ));
                        }
                    }
                }
                Msg::Event(event) => {
                    let attrs = &event.actor.attributes;
                    let (Some(service), Some(replica)) =
                        (attrs.get(LABEL_SERVICE), attrs.get(LABEL_REPLICA))
                    else {
                        continue;
                    };
                    let replica: u32 = replica.parse().unwrap_or(0);
                    let id = event.actor.id.clone();
                    let previous = last_action.insert(id.clone(), event.action.clone());
                    match event.action.as_str() {
                        "start" if stopping.is_none() => self.follow(&id, service, replica),
                        "die" => {
                            let code = self.exited(&event);
                            if self.args.exit_code_from.as_deref() == Some(service.as_str()) {
                                code_of_service = Some(code);
                            }
                            // A container that exits by itself (no kill
                            // came first: not a stop, recreate or Ctrl-C).
                            let by_itself = previous.as_deref() != Some("kill");
                            if abort && by_itself && stopping.is_none() {
                                exit_code = Some(code);
                                stopping = Some(code);
                                self.print("Aborting on container exit...");
                                self.stop();
                            }
                        }
                        _ => {}
                    }
                }
                Msg::Status(status) => {
                    self.print_report(&status.report);
                    if let Some(e) = &status.last_error {
                        self.print(&format!("stack {}: {e}", self.name));
                    }
                }
                Msg::Gone => {
                    if stopping.is_none() {
                        self.print(&format!("stack {} was taken down", self.name));
                        return Ok(0);
                    }
                }
                Msg::EventsEnded(why) => {
                    if stopping.is_none() {
                        return Err(miette!("lost the daemon's events: {why}"));
                    }
                }
                Msg::Stopped(result) => {
                    match result {
                        Ok(report) => self.print_report(&report),
                        Err(e) => self.print(&format!("cannot stop the stack: {e}")),
                    }
                    self.drain_logs();
                    let code = match &self.args.exit_code_from {
                        Some(_) => code_of_service.unwrap_or(0),
                        None => exit_code.or(stopping).unwrap_or(0),
                    };
                    return Ok(code);
                }
                Msg::FollowerEnded(id) => {
                    self.streaming.remove(&id);
                }
            }
        }
    }

    /// Prints `web-1 exited with code N` for a `die` event; the code.
    fn exited(&self, event: &Event) -> i32 {
        let attrs = &event.actor.attributes;
        let code: i32 = attrs
            .get("exitCode")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if let (Some(service), Some(replica)) = (attrs.get(LABEL_SERVICE), attrs.get(LABEL_REPLICA))
        {
            let replica = replica.parse().unwrap_or(0);
            self.print(
                &self
                    .prefixes
                    .note(service, replica, &format!("exited with code {code}")),
            );
        }
        code
    }

    /// Asks the daemon to stop the stack, on a thread of its own (a second
    /// Ctrl-C must be heard meanwhile).
    fn stop(&self) {
        let client = self.client.clone();
        let tx = self.tx.clone();
        let path = format!("/stacks/{}/stop", segment(&self.name));
        std::thread::spawn(move || {
            let result = client
                .post(&path)
                .send_json::<Report>()
                .map_err(|e| crate::error_chain(&e));
            let _ = tx.send(Msg::Stopped(result));
        });
    }

    /// After the stop: the logs' last lines, until every stream ended
    /// (their containers stopped) or a few seconds passed.
    fn drain_logs(&mut self) {
        // Followers end with their streams instead of waiting for a start.
        self.followers.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.streaming.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::FollowerEnded(id)) => {
                    self.streaming.remove(&id);
                }
                Ok(Msg::Event(event)) if event.action == "die" => {
                    self.exited(&event);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

fn print_to(out: &Mutex<std::io::Stdout>, text: &str) {
    let out = out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = out.lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// SIGINT and SIGTERM go to `tx` instead of ending the process.
fn signals(tx: mpsc::Sender<Msg>) -> miette::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .into_diagnostic()?;
    let (mut int, mut term) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .into_diagnostic()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let signal = tokio::select! {
                    Some(()) = int.recv() => libc::SIGINT,
                    Some(()) = term.recv() => libc::SIGTERM,
                    else => return,
                };
                if tx.send(Msg::Signal(signal)).is_err() {
                    return;
                }
            }
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn spec(services: &[(&str, u32)]) -> StackSpec {
        let mut spec = StackSpec::default();
        for (name, replicas) in services {
            let s = crate::spec::model::ServiceSpec {
                replicas: Some(*replicas),
                ..Default::default()
            };
            spec.services.insert(name.to_string(), s);
        }
        spec
    }

    #[test]
    fn prefixes_pad_to_the_longest_name_like_compose() {
        let p = Prefixes::new(&spec(&[("web", 2), ("worker", 1)]), false, true);
        assert_eq!(p.line("web", 1, "hello"), "web-1    | hello");
        assert_eq!(p.line("worker", 1, "hi"), "worker-1 | hi");
        assert_eq!(
            p.note("web", 2, "exited with code 0"),
            "web-2 exited with code 0"
        );
        // A replica beyond the file's (scaled up later) still lines up as
        // well as it can.
        assert_eq!(p.line("worker", 10, "x"), "worker-10 | x");
        let bare = Prefixes::new(&spec(&[("web", 1)]), false, false);
        assert_eq!(bare.line("web", 1, "hello"), "hello");
    }

    #[test]
    fn each_service_has_its_own_color_on_a_terminal() {
        let p = Prefixes::new(&spec(&[("a", 1), ("b", 1)]), true, true);
        assert_eq!(p.line("a", 1, "x"), "\x1b[36ma-1 |\x1b[0m x");
        assert_eq!(p.line("b", 1, "x"), "\x1b[33mb-1 |\x1b[0m x");
        assert_eq!(p.note("b", 1, "exited"), "\x1b[33mb-1\x1b[0m exited");
        // No prefix, no color.
        let bare = Prefixes::new(&spec(&[("a", 1)]), true, false);
        assert_eq!(bare.line("a", 1, "x"), "x");
    }

    #[derive(Debug, clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        up: UpArgs,
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        fg: ForegroundArgs,
    }

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cmd::try_parse_from(std::iter::once("up").chain(args.iter().copied()))
    }

    #[test]
    fn up_flags_parse_like_compose() {
        let c = parse(&[]).unwrap();
        let o = c.up.apply_options();
        assert_eq!(o, ApplyOptions::default());
        assert!(o.remove_orphans);
        let c = parse(&[
            "--pull",
            "always",
            "--force-recreate",
            "--no-deps",
            "--remove-orphans=false",
            "web",
            "db",
        ])
        .unwrap();
        let o = c.up.apply_options();
        assert_eq!(o.pull, PullPolicy::Always);
        assert!(o.force_recreate && o.no_deps && !o.remove_orphans);
        assert_eq!(o.services, ["web", "db"]);
        // A bare --remove-orphans does not eat the service after it.
        let c = parse(&["--remove-orphans", "web"]).unwrap();
        assert!(c.up.remove_orphans);
        assert_eq!(c.up.services, ["web"]);
        assert_eq!(
            parse(&["--pull", "never"]).unwrap().up.pull,
            PullPolicy::Never
        );
        assert!(parse(&["--pull", "sometimes"]).is_err());
        let c = parse(&["--wait", "--wait-timeout", "30"]).unwrap();
        assert!(c.up.wait);
        assert_eq!(c.up.wait_timeout, Some(30));
        assert!(parse(&["--wait-timeout", "30"]).is_err(), "needs --wait");
        assert!(parse(&["-d", "--abort-on-container-exit"]).is_err());
        assert!(parse(&["--wait", "--exit-code-from", "web"]).is_err());
        let c = parse(&["--exit-code-from", "web", "--no-color", "--no-log-prefix"]).unwrap();
        assert_eq!(c.fg.exit_code_from.as_deref(), Some("web"));
        assert!(c.fg.no_color && c.fg.no_log_prefix);
    }

    #[test]
    fn old_registrations_load_with_default_options() {
        let old = r#"{"name":"shop","project_dir":"/srv/shop","files":[],"env_files":[],"environment":[]}"#;
        let source: crate::daemon::stacks::StackSource = serde_json::from_str(old).unwrap();
        assert_eq!(source.options, ApplyOptions::default());
        let once = ApplyOptions {
            force_recreate: true,
            pull: PullPolicy::Always,
            services: vec!["web".into()],
            ..ApplyOptions::default()
        };
        let kept = once.kept();
        assert!(!kept.force_recreate);
        assert_eq!(kept.pull, PullPolicy::Missing);
        assert_eq!(kept.services, ["web"]);
    }
}
