//! `stack system install` and `stack system uninstall`: the daemon as a
//! systemd service. `install` writes `stack.service` (Docker's
//! `docker.service` settings: `Type=notify`, `KillMode=process` so containers
//! outlive a daemon restart, `Delegate=yes`, no limits on files, processes
//! and tasks, `Restart=always`), reloads systemd and enables and starts it
//! when systemd runs this host; `uninstall` stops, disables and removes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic, WrapErr, miette};

/// The unit's name.
pub const UNIT: &str = "stack.service";
/// Where administrators' units live.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// The directories systemd loads system units from (`systemd.unit(5)`):
/// only a unit written to one of these can be enabled.
const SYSTEMD_UNIT_DIRS: [&str; 5] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// How long one `systemctl` call may take (starting the daemon included).
const SYSTEMCTL_LIMIT: Duration = Duration::from_secs(180);

/// `stack system`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Install the daemon as a systemd service and start it
    Install(InstallArgs),
    /// Stop the daemon's systemd service and remove it (containers keep running)
    Uninstall(UninstallArgs),
}

/// `stack system install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Write the unit into this directory
    #[arg(long = "unit-dir", value_name = "DIR", default_value = DEFAULT_UNIT_DIR)]
    unit_dir: PathBuf,
    /// Only write the unit: do not enable or start it
    #[arg(long = "no-start")]
    no_start: bool,
    /// Flags for `stack daemon` (after `--`), e.g. -- -H tcp://0.0.0.0:2376 --tlsverify
    #[arg(last = true, value_name = "DAEMON_FLAGS")]
    daemon_args: Vec<String>,
}

/// `stack system uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The directory the unit was written into
    #[arg(long = "unit-dir", value_name = "DIR", default_value = DEFAULT_UNIT_DIR)]
    unit_dir: PathBuf,
}

/// Quotes one word of an `ExecStart=` line (`systemd.service(5)`, "Command
/// lines"): words with blanks or quotes are double-quoted with C escapes;
/// `%` (specifiers) and `$` (variables) are doubled so they stay literal.
pub fn quote_word(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let needs_quotes = escaped.is_empty()
        || escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if !needs_quotes {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text of `stack.service` running `exe daemon` with the state root
/// (when it is not the default) and `daemon_args`.
pub fn unit_file(exe: &Path, root: Option<&Path>, daemon_args: &[String]) -> String {
    let mut command = vec![exe.to_string_lossy().into_owned()];
    if let Some(root) = root {
        command.push("--root".into());
        command.push(root.to_string_lossy().into_owned());
    }
    command.push("daemon".into());
    command.extend(daemon_args.iter().cloned());
    let exec_start: Vec<String> = command.iter().map(|w| quote_word(w)).collect();
    format!(
        "# Written by `stack system install`; `stack system uninstall` removes it.
[Unit]
Description=stack container daemon
After=network-online.target local-fs.target
Wants=network-online.target
StartLimitBurst=3
StartLimitIntervalSec=60

[Service]
Type=notify
ExecStart={}
# Only the daemon is stopped: every container has its own shim and keeps
# running; a new daemon adopts them.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=120
Restart=always
RestartSec=2
OOMScoreAdjust=-500

[Install]
WantedBy=multi-user.target
",
        exec_start.join(" ")
    )
}

/// Whether systemd is this host's init (`sd_booted(3)`).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Whether systemd loads units from `dir`.
fn is_systemd_dir(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    SYSTEMD_UNIT_DIRS.iter().any(|d| dir == Path::new(d))
}

fn systemctl(args: &[&str]) -> miette::Result<()> {
    let mut child = Command::new("systemctl")
        .args(args)
        .spawn()
        .into_diagnostic()
        .wrap_err("cannot run systemctl")?;
    let deadline = std::time::Instant::now() + SYSTEMCTL_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().into_diagnostic()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(miette!(
                "systemctl {} did not finish within {} s",
                args.join(" "),
                SYSTEMCTL_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(miette!("systemctl {} failed ({status})", args.join(" ")));
    }
    Ok(())
}

/// Runs `stack system …`.
pub fn run(root: &Path, command: &SystemCommand) -> miette::Result<i32> {
    match command {
        SystemCommand::Install(args) => install(root, args),
        SystemCommand::Uninstall(args) => uninstall(args),
    }
}

fn install(root: &Path, args: &InstallArgs) -> miette::Result<i32> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .into_diagnostic()
        .wrap_err("cannot find this program's path")?;
    let root = std::path::absolute(root).into_diagnostic()?;
    let custom_root = (root != Path::new("/var/lib/stack")).then_some(root.as_path());
    let text = unit_file(&exe, custom_root, &args.daemon_args);
    std::fs::create_dir_all(&args.unit_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", args.unit_dir.display()))?;
    let path = args.unit_dir.join(UNIT);
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".stack.service-")
            .tempfile_in(&args.unit_dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write()
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    println!("Wrote {}", path.display());
    if args.no_start {
        return Ok(0);
    }
    if !systemd_runs() {
        println!("systemd does not run this host: start the daemon with `stack daemon`");
        return Ok(0);
    }
    if !is_systemd_dir(&args.unit_dir) {
        println!(
            "{} is not a systemd unit directory: the service was not enabled",
            args.unit_dir.display()
        );
        return Ok(0);
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", UNIT])?;
    println!("Enabled and started {UNIT}");
    Ok(0)
}

fn uninstall(args: &UninstallArgs) -> miette::Result<i32> {
    let path = args.unit_dir.join(UNIT);
    if !path.exists() {
        return Err(miette!(
            "{UNIT} is not installed in {}",
            args.unit_dir.display()
        ));
    }
    let managed = systemd_runs() && is_systemd_dir(&args.unit_dir);
    if managed {
        // Stops the daemon only (KillMode=process): containers keep running.
        systemctl(&["disable", "--now", UNIT])?;
    }
    std::fs::remove_file(&path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot remove {}", path.display()))?;
    if managed {
        systemctl(&["daemon-reload"])?;
    }
    println!("Removed {}", path.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote_word("/usr/bin/stack"), "/usr/bin/stack");
        assert_eq!(quote_word("tcp://0.0.0.0:2376"), "tcp://0.0.0.0:2376");
        assert_eq!(quote_word("/srv/my root"), "\"/srv/my root\"");
        assert_eq!(quote_word("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote_word("100%"), "100%%");
        assert_eq!(quote_word("$HOME"), "$$HOME");
        assert_eq!(quote_word(""), "\"\"");
    }

    #[test]
    fn the_unit_runs_the_daemon_like_dockers() {
        let text = unit_file(
            Path::new("/usr/local/bin/stack"),
            Some(Path::new("/srv/stack")),
            &[
                "-H".into(),
                "tcp://0.0.0.0:2376".into(),
                "--tlsverify".into(),
            ],
        );
        assert!(text.contains(
            "\nExecStart=/usr/local/bin/stack --root /srv/stack daemon -H tcp://0.0.0.0:2376 --tlsverify\n"
        ));
        for line in [
            "Type=notify",
            "KillMode=process",
            "Delegate=yes",
            "Restart=always",
            "LimitNOFILE=1048576",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let plain = unit_file(Path::new("/usr/bin/stack"), None, &[]);
        assert!(plain.contains("\nExecStart=/usr/bin/stack daemon\n"));
    }

    #[test]
    fn only_systemds_directories_are_enabled_from() {
        assert!(is_systemd_dir(Path::new("/etc/systemd/system")));
        assert!(!is_systemd_dir(Path::new("/tmp")));
    }
}
