//! The command-line side of `daemon.toml`: which daemon flags the user
//! actually typed, so [`crate::daemon::config::DaemonConfig::check_conflicts`]
//! can refuse a setting given both ways (a default or an environment
//! variable is not "given").

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The flags of `command` given on the command line, as `(long name,
/// value)`: repeated values are joined with `, `. The subcommand the
/// matches went into is searched too (global flags land there).
pub fn flags_given(command: &Command, matches: &ArgMatches) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut level = Some((command, matches));
    while let Some((cmd, m)) = level {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if m.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let name = arg
                .get_long()
                .map_or_else(|| id.replace('_', "-"), str::to_string);
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let value = m
                .get_raw(id)
                .map(|values| {
                    values
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            out.push((name, value));
        }
        level = m
            .subcommand()
            .and_then(|(name, sub)| cmd.find_subcommand(name).map(|c| (c, sub)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;
    use crate::daemon::config;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(
            long,
            global = true,
            env = "STACK_TEST_CONFIG_ROOT",
            default_value = "/var/lib/stack"
        )]
        root: PathBuf,
        #[arg(short = 'H', long = "host", global = true)]
        host: Vec<String>,
        #[command(subcommand)]
        command: Verb,
    }

    #[derive(Debug, Subcommand)]
    enum Verb {
        Daemon {
            #[arg(short = 'D', long)]
            debug: bool,
            #[arg(long = "default-ulimit")]
            default_ulimits: Vec<String>,
        },
    }

    fn given(args: &[&str]) -> Vec<(String, String)> {
        let command = Cli::command();
        flags_given(
            &command,
            &command.clone().try_get_matches_from(args).unwrap(),
        )
    }

    #[test]
    fn only_typed_flags_count() {
        assert_eq!(given(&["stack", "daemon"]), []);
        assert_eq!(
            given(&[
                "stack",
                "daemon",
                "-H",
                "unix:///a",
                "-D",
                "--default-ulimit",
                "nofile=1",
                "--default-ulimit",
                "nproc=2",
                "-H",
                "tcp://h:1",
            ]),
            [
                ("host".to_string(), "unix:///a, tcp://h:1".to_string()),
                ("debug".to_string(), "true".to_string()),
                (
                    "default-ulimit".to_string(),
                    "nofile=1, nproc=2".to_string()
                ),
            ]
        );
    }

    #[test]
    fn typed_flags_conflict_with_the_file() {
        let file =
            config::parse(Path::new("daemon.toml"), "debug = false\nroot = \"/x\"\n").unwrap();
        let flags = given(&["stack", "daemon", "-D"]);
        let e = file
            .check_conflicts(Path::new("daemon.toml"), &flags)
            .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("debug: (from flag: true, from file: false)"),
            "{e}"
        );
        // --root's default is not a flag the user gave.
        assert!(
            file.check_conflicts(Path::new("daemon.toml"), &given(&["stack", "daemon"]))
                .is_ok()
        );
        let flags = given(&["stack", "--root", "/y", "daemon"]);
        assert!(
            file.check_conflicts(Path::new("daemon.toml"), &flags)
                .is_err()
        );
    }
}
