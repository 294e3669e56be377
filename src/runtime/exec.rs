//! `exec`: a new process in a running container. It joins every namespace of
//! the container's pid 1 (through a pidfd, in one `setns`) and its cgroup,
//! forks so the pid namespace takes effect, and becomes the process with the
//! same steps as the container's init (user, capabilities, `no_new_privs`,
//! seccomp). The intermediate process waits and passes the exit status on.
//!
//! The caller must be single-threaded (the CLI is, when it runs `exec`):
//! joining a mount or user namespace is refused to multi-threaded processes,
//! and the fork happens in this process.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::init::{self, Never};
use super::{Runtime, RuntimeError, Status, cgroup, seccomp};

/// What to run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecConfig {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Extra `KEY=value` variables, over the container's.
    pub env: Vec<String>,
    /// The user (`name|uid[:group|gid]`); the container's when `None`.
    pub user: Option<String>,
    /// The working directory; the container's when `None`.
    pub workdir: Option<String>,
    /// Whether stdio is a terminal (it becomes the controlling terminal).
    pub tty: bool,
    /// Run with every capability and no seccomp filter (`--privileged`).
    pub privileged: bool,
}

/// The process's stdio.
#[derive(Debug)]
pub struct ExecStdio {
    /// stdin, stdout, stderr.
    pub fds: [OwnedFd; 3],
}

/// The command that runs `config` in container `id` through this program's
/// `__exec` mode: a fresh single-threaded process, which is what joining the
/// container's namespaces needs. A multi-threaded caller (the daemon) sets
/// its stdio and spawns it; its exit status is the exec'd process's (or 126
/// with a message on stderr when the exec could not start).
pub fn helper_command(runtime: &Runtime, id: &str, config: &ExecConfig) -> std::process::Command {
    let mut cmd = std::process::Command::new(&runtime.exe);
    cmd.arg("__exec")
        .arg(runtime.containers.parent().unwrap_or(&runtime.containers))
        .arg(&runtime.run_dir)
        .arg(id)
        .arg(serde_json::to_string(config).unwrap_or_default());
    cmd
}

/// The `__exec` mode: `stack __exec ROOT RUN_DIR ID CONFIG_JSON` runs the
/// configured process in the container with this process's stdio and
/// returns its exit code.
pub fn helper_main(args: &[String]) -> i32 {
    let [root, run_dir, id, config] = args else {
        eprintln!("usage: stack __exec ROOT RUN_DIR ID CONFIG");
        return 125;
    };
    let config: ExecConfig = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stack __exec: bad configuration: {e}");
            return 125;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("stack __exec: cannot find this program: {e}");
            return 125;
        }
    };
    let outcome = Runtime::open(
        std::path::Path::new(root),
        std::path::Path::new(run_dir),
        exe,
    )
    .and_then(|runtime| {
        let stdio = |fd: std::os::fd::BorrowedFd<'_>| {
            fd.try_clone_to_owned().map_err(|source| RuntimeError::Io {
                action: "duplicate stdio for exec in",
                path: runtime.bundle(id).dir().to_path_buf(),
                source,
            })
        };
        let fds = [
            stdio(std::io::stdin().as_fd())?,
            stdio(std::io::stdout().as_fd())?,
            stdio(std::io::stderr().as_fd())?,
        ];
        runtime.exec(id, &config, ExecStdio { fds })
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", crate::error_chain(&e));
            126
        }
    }
}

impl Runtime {
    /// Runs `config` in the running container `id` and waits for it; returns
    /// its exit code.
    pub fn exec(
        &self,
        id: &str,
        config: &ExecConfig,
        stdio: ExecStdio,
    ) -> Result<i32, RuntimeError> {
        self.exec_spawn(id, config, stdio)?.wait()
    }

    /// Starts `config` in the running container `id`; [`ExecChild::wait`]
    /// for its end. Call it before starting threads (see the module doc).
    pub fn exec_spawn(
        &self,
        id: &str,
        config: &ExecConfig,
        stdio: ExecStdio,
    ) -> Result<ExecChild, RuntimeError> {
        let st = self.state(id)?;
        if st.status != Status::Running {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status,
                action: "exec in it",
            });
        }
        let record = self.record(id)?;
        if let Some(runtime) = &record.runtime {
            return self.exec_external(id, runtime, config, stdio);
        }
        let spec = self.spec(id)?;
        let process = exec_process_spec(&spec, config);
        let seccomp_program = match (
            config.privileged,
            spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
        ) {
            (false, Some(profile)) => {
                Some(seccomp::compile(profile).map_err(|e| RuntimeError::Start {
                    id: id.to_string(),
                    message: format!("cannot compile the seccomp profile: {e}"),
                })?)
            }
            _ => None,
        };
        let cgroup = cgroup::Hierarchy::detect()
            .and_then(|h| h.open(&record.cgroup))
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })?;
        let pidfd = rustix::process::Pid::from_raw(st.pid)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
            .map_err(|e| RuntimeError::Signal {
                id: id.to_string(),
                source: e.into(),
            })?;
        let mut flags = nix::sched::CloneFlags::empty();
        for ns in spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
        {
            flags |= match ns.typ() {
                LinuxNamespaceType::Mount => nix::sched::CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Uts => nix::sched::CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Ipc => nix::sched::CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::Pid => nix::sched::CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Network => nix::sched::CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::User => nix::sched::CloneFlags::CLONE_NEWUSER,
                LinuxNamespaceType::Cgroup => nix::sched::CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::Time => nix::sched::CloneFlags::empty(),
            };
        }
        let (err_r, err_w) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| {
                RuntimeError::Io {
                    action: "create a pipe for exec in",
                    path: self.bundle(id).dir().to_path_buf(),
                    source: e.into(),
                }
            })?;
        let user = config.user.clone().or(record.user.clone());
        // SAFETY: the caller is single-threaded (this function's contract),
        // so the child may use the standard library until it execs.
        let forked = unsafe { crate::sys::fork() }.map_err(|source| RuntimeError::Io {
            action: "fork for exec in",
            path: self.bundle(id).dir().to_path_buf(),
            source,
        })?;
        match forked {
            None => {
                drop(err_r);
                let outcome = enter(
                    &pidfd,
                    flags,
                    &cgroup,
                    &process,
                    user.as_deref(),
                    seccomp_program.as_ref(),
                    stdio,
                    config.tty,
                );
                let message = match outcome {
                    Ok(never) => match never {},
                    Err(e) => e.to_string(),
                };
                let _ = fs::File::from(err_w).write_all(message.as_bytes());
                crate::sys::exit_now(126)
            }
            Some(pid) => {
                drop(err_w);
                drop(stdio);
                Ok(ExecChild {
                    id: id.to_string(),
                    pid,
                    error: err_r,
                })
            }
        }
    }
}

impl Runtime {
    /// `exec` through the external runtime the container runs with.
    fn exec_external(
        &self,
        id: &str,
        runtime: &str,
        config: &ExecConfig,
        stdio: ExecStdio,
    ) -> Result<ExecChild, RuntimeError> {
        let dir = self.bundle(id).dir().join("oci");
        let mut cmd = std::process::Command::new(runtime);
        cmd.arg("--root").arg(dir.join("state")).arg("exec");
        if config.tty {
            cmd.arg("--tty");
        }
        if let Some(user) = &config.user {
            cmd.arg("--user").arg(user);
        }
        if let Some(cwd) = &config.workdir {
            cmd.arg("--cwd").arg(cwd);
        }
        for var in &config.env {
            cmd.arg("--env").arg(var);
        }
        cmd.arg(id).args(&config.args);
        let [stdin, stdout, stderr] = stdio.fds;
        let child = cmd
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| RuntimeError::Io {
                action: "run the runtime for exec in",
                path: dir.clone(),
                source,
            })?;
        let (error, _) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| {
                RuntimeError::Io {
                    action: "create a pipe for exec in",
                    path: dir,
                    source: e.into(),
                }
            })?;
        Ok(ExecChild {
            id: id.to_string(),
            pid: i32::try_from(child.id()).unwrap_or(-1),
            error,
        })
    }
}

/// A process started by [`Runtime::exec_spawn`].
#[derive(Debug)]
pub struct ExecChild {
    id: String,
    pid: i32,
    error: OwnedFd,
}

impl ExecChild {
    /// Waits for the process; its exit code, or why it could not start.
    pub fn wait(self) -> Result<i32, RuntimeError> {
        let mut message = String::new();
        let _ = fs::File::from(self.error).read_to_string(&mut message);
        let status = wait_code(self.pid);
        if message.is_empty() {
            Ok(status)
        } else {
            Err(RuntimeError::Start {
                id: self.id,
                message: format!("exec failed: {message}"),
            })
        }
    }
}

fn wait_code(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// The process spec of an exec: the container's, with the exec's command,
/// variables, user and directory.
fn exec_process_spec(spec: &Spec, config: &ExecConfig) -> Process {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(config.args.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for var in &config.env {
        let key = var.split('=').next().unwrap_or(var);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(var.clone());
    }
    process.set_env(Some(env));
    process.set_terminal(Some(config.tty));
    if let Some(dir) = &config.workdir {
        process.set_cwd(dir.into());
    }
    if config.privileged {
        let all: oci_spec::runtime::Capabilities = super::all_capabilities();
        let caps = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(all.clone())
            .effective(all.clone())
            .permitted(all.clone())
            .inheritable(all)
            .build()
            .unwrap_or_default();
        process.set_capabilities(Some(caps));
    }
    if config.user.is_some() {
        // The named user replaces the container's numeric one.
        let mut user = process.user().clone();
        user.set_uid(0);
        user.set_gid(0);
        user.set_additional_gids(None);
        process.set_user(user);
    }
    process
}

#[allow(clippy::too_many_arguments)]
fn enter(
    pidfd: &OwnedFd,
    flags: nix::sched::CloneFlags,
    cgroup: &cgroup::Cgroup,
    process: &Process,
    user: Option<&str>,
    seccomp: Option<&seccomp::Program>,
    stdio: ExecStdio,
    tty: bool,
) -> Result<Never, init::StepError> {
    init::step(
        cgroup
            .add_process(std::process::id())
            .map_err(std::io::Error::other),
        "join the container's cgroup",
    )?;
    init::step(
        nix::sched::setns(pidfd.as_fd(), flags)
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32)),
        "join the container's namespaces",
    )?;
    // SAFETY: this process is a single-threaded child (forked from a
    // single-threaded caller), so its own child may do anything.
    let forked = unsafe { crate::sys::fork() };
    if let Some(child) = init::step(forked, "fork into the pid namespace")? {
        crate::sys::exit_now(wait_code(child))
    }
    init::step(
        nix::unistd::setsid().map_err(|e| std::io::Error::from_raw_os_error(e as i32)),
        "start a session",
    )?;
    let [i, o, e] = stdio.fds;
    init::step(
        nix::unistd::dup2_stdin(&i).map_err(|e| std::io::Error::from_raw_os_error(e as i32)),
        "set up stdin",
    )?;
    init::step(
        nix::unistd::dup2_stdout(&o).map_err(|e| std::io::Error::from_raw_os_error(e as i32)),
        "set up stdout",
    )?;
    init::step(
        nix::unistd::dup2_stderr(&e).map_err(|e| std::io::Error::from_raw_os_error(e as i32)),
        "set up stderr",
    )?;
    drop((i, o, e));
    if tty {
        init::step(
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin()),
            "make the terminal the controlling one",
        )?;
    }
    init::exec_process(process, user, seccomp, false)
}

/// Runs `config` in container `id` through [`helper_command`] and speaks the
/// attach frame protocol ([`super::attach`]) with a client on `stream`:
/// output as Stdout/Stderr frames (one Stdout stream with a terminal),
/// Stdin/CloseStdin/Resize/Signal frames from the client, and an Exit frame
/// with the process's exit code at the end. Blocks until the process ends;
/// the daemon runs it on a thread of its own.
pub fn serve_framed(
    runtime: &Runtime,
    id: &str,
    config: &ExecConfig,
    interactive: bool,
    stream: std::os::unix::net::UnixStream,
) {
    use super::attach::{self, Kind};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};

    let send = Arc::new(Mutex::new(stream));
    let frame = |send: &Arc<Mutex<std::os::unix::net::UnixStream>>, kind: Kind, data: &[u8]| {
        send.lock()
            .map_err(|_| std::io::Error::other("poisoned"))
            .and_then(|mut s| attach::write_frame(&mut *s, kind, data))
    };
    let Ok(reader) = send.lock().map(|s| s.try_clone()) else {
        return;
    };
    let Ok(mut reader) = reader else { return };
    let mut cmd = helper_command(runtime, id, config);
    let mut pumps = Vec::new();
    let mut master: Option<fs::File> = None;
    let spawned = if config.tty {
        match nix::pty::openpty(None, None) {
            Ok(pty) => {
                let slave = pty.slave;
                let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
                match (stdio(&slave), stdio(&slave), stdio(&slave)) {
                    (Ok(i), Ok(o), Ok(e)) => {
                        cmd.stdin(i).stdout(o).stderr(e);
                        master = Some(fs::File::from(pty.master));
                        let child = cmd.spawn();
                        drop(slave);
                        child
                    }
                    _ => Err(std::io::Error::other("cannot duplicate the terminal")),
                }
            }
            Err(e) => Err(e.into()),
        }
    } else {
        cmd.stdin(if interactive {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd.spawn()
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = frame(
                &send,
                Kind::Stderr,
                format!("cannot exec: {e}\n").as_bytes(),
            );
            let _ = frame(&send, Kind::Exit, &attach::exit_payload(126, false));
            return;
        }
    };
    let mut stdin: Option<Box<dyn Write + Send>> = None;
    if let Some(m) = &master {
        if let Ok(out) = m.try_clone() {
            pumps.push(pump(out, Kind::Stdout, send.clone()));
        }
        if interactive && let Ok(w) = m.try_clone() {
            stdin = Some(Box::new(w));
        }
    } else {
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, Kind::Stdout, send.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, Kind::Stderr, send.clone()));
        }
        if let Some(w) = child.stdin.take() {
            stdin = Some(Box::new(w));
        }
    }
    let pid = child.id();
    let master_fd = master.as_ref().and_then(|m| m.try_clone().ok());
    // Client frames until the client goes away or we shut the socket down.
    let input = std::thread::spawn(move || {
        let mut stdin = stdin;
        while let Ok(Some((kind, data))) = attach::read_frame(&mut reader) {
            match kind {
                Kind::Stdin => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&data).is_err()
                    {
                        stdin = None;
                    }
                }
                Kind::CloseStdin => stdin = None,
                Kind::Resize if data.len() == 4 => {
                    if let Some(m) = &master_fd {
                        let size = rustix::termios::Winsize {
                            ws_row: u16::from_be_bytes([data[0], data[1]]),
                            ws_col: u16::from_be_bytes([data[2], data[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(m, size);
                    }
                }
                Kind::Signal if data.len() == 4 => {
                    let sig = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                    if let (Ok(p), Ok(s)) =
                        (i32::try_from(pid), nix::sys::signal::Signal::try_from(sig))
                    {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), s);
                    }
                }
                _ => {}
            }
        }
    });
    let status = child.wait();
    drop(master);
    for p in pumps {
        let _ = p.join();
    }
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        }
        Err(_) => 126,
    };
    let _ = frame(&send, Kind::Exit, &attach::exit_payload(code, false));
    if let Ok(s) = send.lock() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    let _ = input.join();
}

/// Copies `from` into frames of `kind` until it ends (a terminal's master
/// ends with EIO when the last process holding the terminal exits).
fn pump(
    mut from: impl Read + Send + 'static,
    kind: super::attach::Kind,
    send: std::sync::Arc<std::sync::Mutex<std::os::unix::net::UnixStream>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let sent = send
                        .lock()
                        .map_err(|_| std::io::Error::other("poisoned"))
                        .and_then(|mut s| super::attach::write_frame(&mut *s, kind, &buf[..n]));
                    if sent.is_err() {
                        return;
                    }
                }
            }
        }
    })
}
