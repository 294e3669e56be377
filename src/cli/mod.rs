//! The command line: argument parsing, output and exit codes.
//!
//! Commands return `miette::Result`; [`main`] renders errors as diagnostics and
//! maps them to the documented exit codes (see [`Exit`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use miette::IntoDiagnostic;

use crate::spec::{self, LoadOptions, SpecError};

mod build;
pub mod config_file;
mod containers;
mod containers_extra;
mod daemon;
mod filter;
mod follow;
mod images;
mod networks;
mod output;
mod registry;
mod services;
pub(crate) mod stacks;
mod system;
mod template;
pub mod tls;
mod up;

use output::color_stderr;
pub use output::render;

/// The documented exit codes of `stack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Invalid input: a stack file, env file or value that does not validate.
    Invalid = 1,
    /// Bad usage: unknown command or flag, missing argument.
    Usage = 2,
    /// The operation failed: a file could not be read or written.
    Failed = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// `stack`: containers, images and declared stacks kept converged.
#[derive(Debug, Parser)]
#[command(
    name = "stack",
    version,
    about = "Run containers and keep declared stacks converged",
    long_about = "stack runs containers itself, handles images like Docker and keeps \
                  stacks declared in stack.kdl, stack.toml or docker-compose.yml converged.",
    after_help = "Exit codes: 0 ok, 1 invalid input, 2 usage error, 3 operation failed.",
    propagate_version = true
)]
pub struct Cli {
    /// State root: images, containers, volumes
    #[arg(
        long,
        global = true,
        env = "STACK_ROOT",
        default_value = "/var/lib/stack",
        value_name = "DIR"
    )]
    root: PathBuf,
    #[command(flatten)]
    client: daemon::ClientArgs,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the stack is and what it is interpolated with.
#[derive(Debug, clap::Args)]
struct ProjectArgs {
    /// Stack file (repeat to merge overrides in order; default: discover
    /// stack.kdl, stack.toml, compose.yaml or docker-compose.yml)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Project directory (default: the first file's directory, or the current one)
    #[arg(long, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    /// Extra env file for ${VAR} interpolation, applied after .env (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a stack file and report every problem in it
    Validate {
        #[command(flatten)]
        project: ProjectArgs,
        /// Treat warnings (unsupported compose keys, unset variables) as errors
        #[arg(long)]
        strict: bool,
    },
    /// Print the stack after interpolation, merging and normalization
    Config {
        #[command(flatten)]
        project: ProjectArgs,
        /// Output syntax
        #[arg(long, value_enum, default_value_t = ConfigFormat::Kdl)]
        format: ConfigFormat,
    },
    /// Bring a stack up and keep it converged (the daemon watches its
    /// files); in the foreground: stream its logs, Ctrl-C stops it
    Up {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        up: up::UpArgs,
        /// Return once applied (the daemon keeps the stack)
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        foreground: up::ForegroundArgs,
    },
    /// Apply a stack now (the same as `up -d`)
    Apply {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        up: up::UpArgs,
    },
    /// Show what applying a stack would do, and why, without doing it
    Plan {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Take a stack down: its containers and networks (volumes with -v)
    Down {
        #[command(flatten)]
        project: ProjectArgs,
        /// The stack's name (default: the one in the current directory)
        #[arg(long)]
        stack: Option<String>,
        /// Remove the stack's named volumes too
        #[arg(short = 'v', long)]
        volumes: bool,
    },
    /// Show a stack's generation, last apply and last error
    Status {
        #[command(flatten)]
        project: ProjectArgs,
        /// The stack's name (default: the one in the current directory)
        stack: Option<String>,
    },
    /// List the stacks the daemon keeps
    Ls,
    /// Run another number of a service's replicas, without editing the file
    Scale {
        #[command(flatten)]
        project: ProjectArgs,
        /// The stack's name (default: the one in the current directory)
        #[arg(long)]
        stack: Option<String>,
        /// SERVICE=REPLICAS, e.g. web=3
        #[arg(required = true, value_name = "SERVICE=N")]
        services: Vec<String>,
    },
    /// Download an image from a registry
    Pull(registry::PullArgs),
    /// Upload an image to a registry
    Push(registry::PushArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Search a registry's repositories
    Search(registry::SearchArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Remove images
    Rmi(images::RmiArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Show the steps an image was built from
    History(images::HistoryArgs),
    /// Write images to a tar archive (Docker's format or an OCI layout)
    Save(images::SaveArgs),
    /// Read images from a tar archive
    Load(images::LoadArgs),
    /// Make an image from a root file system tarball or directory
    Import(images::ImportArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Create and start a container
    #[command(disable_help_flag = true)]
    Run(containers::RunArgs),
    /// Create a container without starting it
    #[command(disable_help_flag = true)]
    Create(containers::CreateArgs),
    /// Start stopped containers
    Start(containers::StartArgs),
    /// Stop running containers: the stop signal, then SIGKILL after a grace period
    Stop(containers::StopArgs),
    /// Stop and start containers again
    Restart(containers::StopArgs),
    /// Send a signal to containers
    Kill(containers::KillArgs),
    /// Remove containers
    Rm(containers::RmArgs),
    /// List containers
    Ps(containers_extra::PsArgs),
    /// Show a container's output
    Logs(containers::LogsArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Show containers' configuration and state as JSON
    Inspect(containers_extra::InspectArgs),
    /// Wait for containers to stop and print their exit codes
    Wait(containers::NamesArgs),
    /// Freeze every process of containers
    Pause(containers::NamesArgs),
    /// Thaw paused containers
    Unpause(containers::NamesArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Show containers' resource usage
    Stats(containers::StatsArgs),
    /// Attach this terminal to a running container's stdio
    Attach(containers::AttachArgs),
    /// Write a container's file system as a tar archive
    Export(containers::ExportArgs),
    /// Make an image from a container's changes
    Commit(containers::CommitArgs),
    /// Show the processes of a running container
    Top(containers_extra::TopArgs),
    /// Show what a container changed in its file system
    Diff(containers_extra::DiffArgs),
    /// Copy files between a container and the host
    Cp(containers_extra::CpArgs),
    /// Change containers' resource limits and restart policy
    Update(containers_extra::UpdateArgs),
    /// Show a container's published ports
    Port(containers_extra::PortArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Run the daemon: the REST API on a unix socket, container supervision
    Daemon(daemon::DaemonArgs),
    /// Show how the daemon runs and what it holds
    Info,
    /// Stream what happens to containers and images
    Events(daemon::EventsArgs),
    /// Show the client's and the daemon's versions
    Version,
    /// Manage this host's stack installation (the daemon's systemd service)
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// `stack container …`: the container verbs under Docker's management
/// command.
#[derive(Debug, Subcommand)]
enum ContainerCommand {
    /// Remove stopped containers
    Prune(containers_extra::PruneArgs),
    /// List containers
    #[command(visible_alias = "ps", alias = "list")]
    Ls(containers_extra::PsArgs),
    /// Show containers' configuration and state as JSON
    Inspect(containers_extra::InspectArgs),
    /// Remove containers
    #[command(alias = "remove")]
    Rm(containers::RmArgs),
    /// Create and start a container
    #[command(disable_help_flag = true)]
    Run(containers::RunArgs),
    /// Create a container without starting it
    #[command(disable_help_flag = true)]
    Create(containers::CreateArgs),
    /// Start stopped containers
    Start(containers::StartArgs),
    /// Stop running containers
    Stop(containers::StopArgs),
    /// Stop and start containers again
    Restart(containers::StopArgs),
    /// Send a signal to containers
    Kill(containers::KillArgs),
    /// Show a container's output
    Logs(containers::LogsArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Wait for containers to stop and print their exit codes
    Wait(containers::NamesArgs),
    /// Freeze every process of containers
    Pause(containers::NamesArgs),
    /// Thaw paused containers
    Unpause(containers::NamesArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Show containers' resource usage
    Stats(containers::StatsArgs),
    /// Attach this terminal to a running container's stdio
    Attach(containers::AttachArgs),
    /// Write a container's file system as a tar archive
    Export(containers::ExportArgs),
    /// Make an image from a container's changes
    Commit(containers::CommitArgs),
    /// Show the processes of a running container
    Top(containers_extra::TopArgs),
    /// Show what a container changed in its file system
    Diff(containers_extra::DiffArgs),
    /// Copy files between a container and the host
    Cp(containers_extra::CpArgs),
    /// Change containers' resource limits and restart policy
    Update(containers_extra::UpdateArgs),
    /// Show a container's published ports
    Port(containers_extra::PortArgs),
}

impl ContainerCommand {
    /// The top-level command this is another name for (`container ls` is
    /// `ps`), or `None` for `prune`, which only exists here.
    fn into_command(self) -> Result<Command, containers_extra::PruneArgs> {
        Ok(match self {
            ContainerCommand::Prune(args) => return Err(args),
            ContainerCommand::Ls(a) => Command::Ps(a),
            ContainerCommand::Inspect(a) => Command::Inspect(a),
            ContainerCommand::Rm(a) => Command::Rm(a),
            ContainerCommand::Run(a) => Command::Run(a),
            ContainerCommand::Create(a) => Command::Create(a),
            ContainerCommand::Start(a) => Command::Start(a),
            ContainerCommand::Stop(a) => Command::Stop(a),
            ContainerCommand::Restart(a) => Command::Restart(a),
            ContainerCommand::Kill(a) => Command::Kill(a),
            ContainerCommand::Logs(a) => Command::Logs(a),
            ContainerCommand::Exec(a) => Command::Exec(a),
            ContainerCommand::Wait(a) => Command::Wait(a),
            ContainerCommand::Pause(a) => Command::Pause(a),
            ContainerCommand::Unpause(a) => Command::Unpause(a),
            ContainerCommand::Rename(a) => Command::Rename(a),
            ContainerCommand::Stats(a) => Command::Stats(a),
            ContainerCommand::Attach(a) => Command::Attach(a),
            ContainerCommand::Export(a) => Command::Export(a),
            ContainerCommand::Commit(a) => Command::Commit(a),
            ContainerCommand::Top(a) => Command::Top(a),
            ContainerCommand::Diff(a) => Command::Diff(a),
            ContainerCommand::Cp(a) => Command::Cp(a),
            ContainerCommand::Update(a) => Command::Update(a),
            ContainerCommand::Port(a) => Command::Port(a),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConfigFormat {
    Kdl,
    Toml,
    Json,
}

/// Runs the `stack` command line and returns the process exit code.
pub fn main() -> ExitCode {
    // The shim is a mode of this program, entered before anything else runs
    // (no argument parsing, no logging set-up): it must start fast and stay
    // single-threaded.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__shim") {
        let code = crate::runtime::shim::main(args.get(2..).unwrap_or_default());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if args.get(1).map(String::as_str) == Some("__export") {
        let code = crate::runtime::export_helper_main(args.get(2..).unwrap_or_default());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if args.get(1).map(String::as_str) == Some("__exec") {
        let code = crate::runtime::exec::helper_main(args.get(2..).unwrap_or_default());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    init_tracing(matches!(&cli.command, Command::Daemon(args) if args.debug));
    let given = config_file::flags_given(&Cli::command(), &matches);
    match run(cli, &given) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(failure) => {
            eprint!("{}", render(failure.report.as_ref(), color_stderr()));
            failure.exit.into()
        }
    }
}

fn init_tracing(debug: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACK_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if debug {
            "stack=debug,hickory_server=warn,info"
        } else {
            "warn"
        })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error on its way out: what to print and which exit code to use.
struct Failure {
    report: miette::Report,
    exit: Exit,
}

impl From<SpecError> for Failure {
    fn from(e: SpecError) -> Self {
        let exit = match e {
            SpecError::Read { .. } => Exit::Failed,
            SpecError::NotFound { .. }
            | SpecError::UnknownFormat { .. }
            | SpecError::Invalid { .. } => Exit::Invalid,
        };
        Self {
            report: miette::Report::new(e),
            exit,
        }
    }
}

impl From<miette::Report> for Failure {
    fn from(report: miette::Report) -> Self {
        Self {
            report,
            exit: Exit::Failed,
        }
    }
}

fn run(cli: Cli, given: &[(String, String)]) -> Result<i32, Failure> {
    let root = cli.root.clone();
    daemon::configure(&root, &cli.client, &cli.tls);
    let command = match cli.command {
        Command::Container(c) => match c.into_command() {
            Ok(command) => command,
            Err(prune) => return Ok(containers_extra::prune(&root, &prune)?),
        },
        other => other,
    };
    match command {
        Command::Container(_) => Err(miette::miette!("nested container command").into()),
        Command::Top(args) => Ok(containers_extra::top(&root, &args)?),
        Command::Diff(args) => Ok(containers_extra::diff(&root, &args)?),
        Command::Cp(args) => Ok(containers_extra::cp(&root, &args)?),
        Command::Update(args) => Ok(containers_extra::update(&root, &args)?),
        Command::Port(args) => Ok(containers_extra::port(&root, &args)?),
        Command::Daemon(args) => Ok(daemon::daemon(&root, &cli.client, &cli.tls, &args, given)?),
        Command::Info => Ok(daemon::info(&root)?),
        Command::Events(args) => Ok(daemon::events(&root, &args)?),
        Command::Version => Ok(daemon::version(&root)?),
        Command::Run(args) => Ok(containers::run(&root, &args)?),
        Command::Create(args) => containers::create(&root, &args)
            .map(|()| 0)
            .map_err(Failure::from),
        Command::Start(args) => Ok(containers::start(&root, &args)?),
        Command::Stop(args) => Ok(containers::stop(&root, &args)?),
        Command::Restart(args) => Ok(containers::restart(&root, &args)?),
        Command::Kill(args) => Ok(containers::kill(&root, &args)?),
        Command::Rm(args) => Ok(containers::rm(&root, &args)?),
        Command::Ps(args) => Ok(containers_extra::ps(&root, &args)?),
        Command::Logs(args) => Ok(containers::logs(&root, &args)?),
        Command::Exec(args) => Ok(containers::exec(&root, &args)?),
        Command::Inspect(args) => Ok(containers_extra::inspect(&root, &args)?),
        Command::Wait(args) => Ok(containers::wait(&root, &args)?),
        Command::Pause(args) => Ok(containers::pause(&root, &args, true)?),
        Command::Unpause(args) => Ok(containers::pause(&root, &args, false)?),
        Command::Rename(args) => Ok(containers::rename(&root, &args)?),
        Command::Stats(args) => Ok(containers::stats(&root, &args)?),
        Command::Attach(args) => Ok(containers::attach(&root, &args)?),
        Command::Export(args) => Ok(containers::export(&root, &args)?),
        Command::Commit(args) => Ok(containers::commit(&root, &args)?),
        Command::Validate { project, strict } => {
            let loaded = spec::load(&load_options(&project)?)?;
            print_warnings(&loaded.warnings);
            if strict && !loaded.warnings.is_empty() {
                return Err(SpecError::Invalid {
                    problems: loaded
                        .warnings
                        .into_iter()
                        .map(|mut w| {
                            w.severity = miette::Severity::Error;
                            w
                        })
                        .collect(),
                }
                .into());
            }
            let services = loaded.spec.services.len();
            let files: Vec<String> = loaded
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            println!(
                "{}: valid ({services} service{})",
                files.join(" + "),
                if services == 1 { "" } else { "s" }
            );
            Ok(0)
        }
        Command::Config { project, format } => {
            let loaded = spec::load(&load_options(&project)?)?;
            print_warnings(&loaded.warnings);
            let model = serde_json::to_value(&loaded.spec).into_diagnostic()?;
            let text = match format {
                ConfigFormat::Json => {
                    let mut s = serde_json::to_string_pretty(&model).into_diagnostic()?;
                    s.push('\n');
                    s
                }
                // Stack files are interpolated when read, so a `$` that is
                // data must be written `$$` for the output to read back.
                ConfigFormat::Toml => toml::to_string(&escape_dollars(model)).into_diagnostic()?,
                ConfigFormat::Kdl => spec::kdl::emit(&escape_dollars(model)),
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .into_diagnostic()?;
            Ok(0)
        }
        Command::Pull(args) => registry::pull(&cli.root, &args)
            .map(|()| 0)
            .map_err(Failure::from),
        Command::Push(args) => registry::push(&cli.root, &args)
            .map(|()| 0)
            .map_err(Failure::from),
        Command::Login(args) => registry::login(&args).map(|()| 0).map_err(Failure::from),
        Command::Logout(args) => registry::logout(&args).map(|()| 0).map_err(Failure::from),
        Command::Search(args) => registry::search(&args).map(|()| 0).map_err(Failure::from),
        Command::Images(args) => {
            images::run(&cli.root, images::ImageCommand::Ls(args)).map_err(Failure::from)
        }
        Command::Rmi(args) => {
            images::run(&cli.root, images::ImageCommand::Rm(args)).map_err(Failure::from)
        }
        Command::Tag(args) => {
            images::run(&cli.root, images::ImageCommand::Tag(args)).map_err(Failure::from)
        }
        Command::History(args) => {
            images::run(&cli.root, images::ImageCommand::History(args)).map_err(Failure::from)
        }
        Command::Save(args) => {
            images::run(&cli.root, images::ImageCommand::Save(args)).map_err(Failure::from)
        }
        Command::Load(args) => {
            images::run(&cli.root, images::ImageCommand::Load(args)).map_err(Failure::from)
        }
        Command::Import(args) => {
            images::run(&cli.root, images::ImageCommand::Import(args)).map_err(Failure::from)
        }
        Command::Image(command) => images::run(&cli.root, command).map_err(Failure::from),
        Command::Build(args) => build::build(&cli.root, &args)
            .map(|()| 0)
            .map_err(Failure::from),
        Command::System(command) => Ok(system::run(&root, &command)?),
        Command::Network(command) => Ok(networks::run(&root, &command)?),
        Command::Up {
            project,
            up,
            detach,
            foreground,
        } => Ok(up::up(
            &root,
            &load_options(&project)?,
            &up,
            detach,
            Some(&foreground),
        )?),
        Command::Apply { project, up } => {
            Ok(up::up(&root, &load_options(&project)?, &up, true, None)?)
        }
        Command::Plan { project } => Ok(stacks::plan(&root, &load_options(&project)?)?),
        Command::Down {
            project,
            stack,
            volumes,
        } => Ok(stacks::down(
            &root,
            &load_options(&project)?,
            stack.as_deref(),
            volumes,
        )?),
        Command::Status { project, stack } => Ok(stacks::status(
            &root,
            &load_options(&project)?,
            stack.as_deref(),
        )?),
        Command::Ls => Ok(stacks::ls(&root)?),
        Command::Scale {
            project,
            stack,
            services,
        } => Ok(stacks::scale(
            &root,
            &load_options(&project)?,
            stack.as_deref(),
            &services,
        )?),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "stack", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// Doubles every `$` in the strings of `value`.
fn escape_dollars(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(s.replace('$', "$$")),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_dollars).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, escape_dollars(v)))
                .collect(),
        ),
        other => other,
    }
}

fn load_options(project: &ProjectArgs) -> Result<LoadOptions, Failure> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    let project_dir = match (&project.project_dir, project.files.first()) {
        (Some(dir), _) => cwd.join(dir),
        (None, Some(first)) => cwd
            .join(first)
            .parent()
            .map_or_else(|| cwd.clone(), std::path::Path::to_path_buf),
        (None, None) => cwd.clone(),
    };
    Ok(LoadOptions {
        files: project.files.iter().map(|f| cwd.join(f)).collect(),
        project_dir,
        env_files: project.env_files.iter().map(|f| cwd.join(f)).collect(),
        environment: None,
    })
}

fn print_warnings(warnings: &[spec::diag::Problem]) {
    let color = color_stderr();
    for w in warnings {
        eprint!("{}", render(w, color));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
