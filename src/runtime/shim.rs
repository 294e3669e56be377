//! The shim: one small monitor process per container (`stack __shim BUNDLE`),
//! the container's parent for its whole life.
//!
//! It is freshly exec'd and single-threaded (no async runtime), so it clones
//! the container's init directly. It then holds the container's stdio (pipes,
//! or a pty master), writes the log, serves attach clients on a unix socket,
//! records the exit status and time in `state.json`, removes the cgroup, and
//! exits. It detaches from whoever started it (a double fork and its own
//! session), so killing the CLI or the daemon never touches the container.
//!
//! Start protocol: the starter passes the write end of a pipe as fd 3; the shim
//! writes `ok PID` once the user's program has been exec'd, or `err MESSAGE`,
//! then closes it. An optional fd 4 is a socket already attached as a client,
//! so a foreground `run` sees output from the first byte.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rustix::event::{PollFd, PollFlags, poll};

use super::attach::{self, Kind};
use super::cgroup::{Cgroup, Hierarchy};
use super::init::{self, InitFds, InitPlan};
use super::logs::{LogOptions, LogWriter, Stream};
use super::state::{self, ContainerRecord, ContainerState, Status};
use super::{Bundle, now_rfc3339, seccomp};

/// The fd the start pipe arrives on.
const READY_FD: RawFd = 3;
/// The fd a pre-attached client arrives on.
const ATTACH_FD: RawFd = 4;

/// Runs the shim for the bundle at `dir`; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let Some(dir) = args.first() else {
        eprintln!("usage: stack __shim BUNDLE SOCKET");
        return 2;
    };
    let Some(socket) = args.get(1) else {
        eprintln!("usage: stack __shim BUNDLE SOCKET");
        return 2;
    };
    let Some(ready) = crate::sys::take_inherited_fd(READY_FD).map(fs::File::from) else {
        eprintln!("stack __shim: no start pipe on fd {READY_FD}");
        return 2;
    };
    let attached = crate::sys::take_inherited_fd(ATTACH_FD).map(UnixStream::from);
    // Nothing else the starter had open may reach the container.
    if let Err(e) = crate::sys::cloexec_from(5) {
        let _ = writeln!(&ready, "err cannot mark inherited files close-on-exec: {e}");
        return 1;
    }
    // Detach: the starter waits for this first process only.
    // SAFETY: the shim is single-threaded here (nothing has spawned threads).
    match unsafe { crate::sys::fork() } {
        Ok(Some(_)) => return 0,
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(&ready, "err cannot fork the shim: {e}");
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    crate::sys::ignore_signals(&[libc::SIGPIPE, libc::SIGHUP, libc::SIGINT, libc::SIGTERM]);
    let bundle = Bundle::new(PathBuf::from(dir));
    let mut shim = match Shim::start(&bundle, Path::new(socket), attached) {
        Ok(shim) => shim,
        Err(e) => {
            let _ = record_failure(&bundle, &e);
            let _ = writeln!(&ready, "err {e}");
            return 1;
        }
    };
    let _ = writeln!(&ready, "ok {}", shim.pid);
    drop(ready);
    // Give back what setting up took (the spec, the seccomp program).
    crate::sys::trim_heap();
    shim.serve();
    0
}

fn record_failure(bundle: &Bundle, message: &str) -> io::Result<()> {
    let mut st: ContainerState =
        state::read_json(&bundle.state()).unwrap_or_else(|_| ContainerState::created());
    st.status = if st.start_count > 0 {
        Status::Exited
    } else {
        Status::Created
    };
    st.pid = 0;
    st.shim_pid = 0;
    st.error = message.to_string();
    st.exit_code = 127;
    state::write_state(&bundle.state(), &st)
}

/// A client connected to the attach socket.
struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    closed: bool,
}

impl Client {
    fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            closed: false,
        })
    }

    fn send(&mut self, kind: Kind, payload: &[u8]) {
        // A client that stops reading is dropped rather than let grow without
        // bound; the log keeps everything.
        if self.outbuf.len() > 8 << 20 {
            self.closed = true;
            return;
        }
        attach::encode(&mut self.outbuf, kind, payload);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() && !self.closed {
            match self.stream.write(&self.outbuf) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }
}

/// The output side of the container.
enum Output {
    Pipes {
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    Pty {
        master: Option<OwnedFd>,
    },
}

struct Shim {
    record: ContainerRecord,
    bundle: Bundle,
    pid: i32,
    pidfd: OwnedFd,
    output: Output,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_closing: bool,
    log: LogWriter,
    cgroup: Cgroup,
    listener: UnixListener,
    socket: PathBuf,
    clients: Vec<Client>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A network namespace given by path belongs to the host's user namespace,
/// so a process already in the container's new user namespace may not join
/// it: the shim joins it before the clone and the child inherits it (the
/// init then finds itself there and skips it).
fn join_network_before_user_namespace(spec: &Spec) -> io::Result<()> {
    let paths = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .filter(|ns| ns.typ() == LinuxNamespaceType::Network)
        .filter_map(|ns| ns.path().as_ref());
    for path in paths {
        let file = fs::File::open(path)?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)?;
    }
    Ok(())
}

fn clone_flags(spec: &Spec) -> u64 {
    let mut flags = 0u64;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces.iter().filter(|n| n.path().is_none()) {
        flags |= match ns.typ() {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            // Unshared by the child once it is in its cgroup.
            LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time => 0,
        } as u64;
    }
    flags
}

impl Shim {
    fn start(bundle: &Bundle, socket: &Path, attached: Option<UnixStream>) -> Result<Shim, String> {
        let record: ContainerRecord = state::read_json(&bundle.record())
            .map_err(|e| format!("cannot read the container record: {e}"))?;
        let spec: Spec = state::read_json(&bundle.spec())
            .map_err(|e| format!("cannot read the runtime spec: {e}"))?;
        let process = spec.process().clone().unwrap_or_default();
        let terminal = process.terminal().unwrap_or(false);

        let log = LogWriter::open(
            bundle.dir(),
            &record.id,
            LogOptions {
                max_size: record.log_max_size,
                max_files: record.log_max_files,
            },
        )
        .map_err(|e| format!("cannot open the log: {e}"))?;

        let hierarchy =
            Hierarchy::detect().map_err(|e| format!("cannot find the cgroup hierarchy: {e}"))?;
        let cgroup = hierarchy
            .create(&record.cgroup)
            .map_err(|e| format!("cannot create cgroup {}: {e}", record.cgroup))?;
        let fail = |cgroup: &Cgroup, msg: String| -> String {
            let _ = cgroup.delete();
            msg
        };
        if let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cgroup
                .apply(resources)
                .map_err(|e| fail(&cgroup, format!("cannot apply resource limits: {e}")))?;
        }

        let seccomp_program =
            match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
                Some(profile) => Some(seccomp::compile(profile).map_err(|e| {
                    fail(&cgroup, format!("cannot compile the seccomp profile: {e}"))
                })?),
                None => None,
            };

        let _ = fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(|e| {
            fail(
                &cgroup,
                format!("cannot listen on {}: {e}", socket.display()),
            )
        })?;
        listener.set_nonblocking(true).map_err(|e| {
            fail(
                &cgroup,
                format!("cannot listen on {}: {e}", socket.display()),
            )
        })?;

        // stdio
        let io_err = |what: &str, e: io::Error| format!("cannot create the {what}: {e}");
        let (child_stdio, output, stdin) = if terminal {
            let pty = nix::pty::openpty(None, None).map_err(|e| {
                fail(
                    &cgroup,
                    io_err("terminal", io::Error::from_raw_os_error(e as i32)),
                )
            })?;
            let slave = pty.slave;
            let s1 = slave
                .try_clone()
                .map_err(|e| fail(&cgroup, io_err("terminal", e)))?;
            let s2 = slave
                .try_clone()
                .map_err(|e| fail(&cgroup, io_err("terminal", e)))?;
            let input = pty
                .master
                .try_clone()
                .map_err(|e| fail(&cgroup, io_err("terminal", e)))?;
            (
                [slave, s1, s2],
                Output::Pty {
                    master: Some(pty.master),
                },
                record.stdin_open.then_some(input),
            )
        } else {
            let (in_r, in_w) = if record.stdin_open {
                let (r, w) = pipe().map_err(|e| fail(&cgroup, io_err("stdin pipe", e)))?;
                (r, Some(w))
            } else {
                let null =
                    fs::File::open("/dev/null").map_err(|e| fail(&cgroup, io_err("stdin", e)))?;
                (OwnedFd::from(null), None)
            };
            let (out_r, out_w) = pipe().map_err(|e| fail(&cgroup, io_err("stdout pipe", e)))?;
            let (err_r, err_w) = pipe().map_err(|e| fail(&cgroup, io_err("stderr pipe", e)))?;
            // A larger pipe means fewer wake-ups of this loop for a chatty
            // container (the default is 64 KiB); the limit for root is
            // /proc/sys/fs/pipe-max-size, so a failure only keeps the default.
            for fd in [&out_r, &err_r] {
                let _ = rustix::pipe::fcntl_setpipe_size(fd, 1 << 20);
            }
            (
                [in_r, out_w, err_w],
                Output::Pipes {
                    stdout: Some(out_r),
                    stderr: Some(err_r),
                },
                in_w,
            )
        };
        let (sync_r, sync_w) = pipe().map_err(|e| fail(&cgroup, io_err("sync pipe", e)))?;
        let (err_r, err_w) = pipe().map_err(|e| fail(&cgroup, io_err("error pipe", e)))?;

        let flags = clone_flags(&spec);
        // The root is mounted here, in a mount namespace of the shim's own, so
        // the host never sees it and it goes away with the container; the
        // container's namespace starts as a copy of this one. Mounting it in
        // the container would not work in a user namespace (overlay needs
        // real root for its trusted xattrs and whiteouts).
        mount_rootfs(&record, &spec, &bundle.rootfs_dir())
            .map_err(|e| fail(&cgroup, format!("cannot mount the root file system: {e}")))?;
        seed_volumes(&spec, &bundle.rootfs_dir())
            .map_err(|e| fail(&cgroup, format!("cannot seed a volume: {e}")))?;
        init::prepare_mount_points(&spec, &bundle.rootfs_dir())
            .map_err(|e| fail(&cgroup, format!("cannot create the mount points: {e}")))?;
        let new_netns = flags & libc::CLONE_NEWNET as u64 != 0;
        let cgroup_fd = cgroup
            .open_dir()
            .map_err(|e| fail(&cgroup, format!("cannot open the cgroup: {e}")))?;
        if let Some(runtime) = &record.runtime {
            drop((sync_r, sync_w, err_r, err_w));
            let (pid, pidfd, container_pid) =
                spawn_external(runtime, bundle, &record, &spec, child_stdio, terminal).map_err(
                    |e| {
                        fail(
                            &cgroup,
                            format!("cannot run the container with {runtime}: {e}"),
                        )
                    },
                )?;
            return finish_start(
                bundle,
                socket,
                attached,
                record,
                (pid, container_pid),
                pidfd,
                output,
                stdin,
                log,
                cgroup,
                listener,
            );
        }
        let rootfs_dir = bundle.rootfs_dir();
        if flags & libc::CLONE_NEWUSER as u64 != 0 {
            join_network_before_user_namespace(&spec)
                .map_err(|e| fail(&cgroup, format!("cannot join the network namespace: {e}")))?;
        }
        // SAFETY: the shim is single-threaded, so the child may run the
        // init's setup with the full standard library.
        let cloned = unsafe { crate::sys::clone3(flags, cgroup_fd.as_ref().map(|f| f.as_fd())) }
            .map_err(|e| {
                fail(
                    &cgroup,
                    format!("cannot create the container's process: {e}"),
                )
            })?;
        let (pid, pidfd) = match cloned {
            crate::sys::Cloned::Child => {
                drop(sync_w);
                drop(err_r);
                drop(listener);
                let plan = InitPlan {
                    spec: &spec,
                    rootfs_dir: &rootfs_dir,
                    user: record.user.as_deref(),
                    init: record.init,
                    seccomp: seccomp_program.as_ref(),
                    new_netns,
                };
                init::run(
                    &plan,
                    InitFds {
                        sync: sync_r,
                        error: err_w,
                        stdio: child_stdio,
                        terminal,
                    },
                )
            }
            crate::sys::Cloned::Parent { pid, pidfd } => (pid, pidfd),
        };
        drop(sync_r);
        drop(err_w);
        drop(child_stdio);
        let kill_child = |msg: String| -> String {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            fail(&cgroup, msg)
        };
        if flags & libc::CLONE_NEWUSER as u64 != 0 {
            write_id_maps(pid, &spec)
                .map_err(|e| kill_child(format!("cannot write the user namespace maps: {e}")))?;
        }
        // Two sync bytes (see the init): maps written, then cgroup joined.
        // With CLONE_INTO_CGROUP (v2) the child was born in its cgroup.
        // A child that failed early has closed its end; its reason is on the
        // error pipe read below, so failed writes here are not errors.
        let mut sync = fs::File::from(sync_w);
        let _ = sync.write_all(b"m");
        if cgroup_fd.is_none() {
            cgroup.add_process(pid.cast_unsigned()).map_err(|e| {
                kill_child(format!("cannot move the container into its cgroup: {e}"))
            })?;
        }
        let _ = sync.write_all(b"g");
        drop(sync);
        let mut message = String::new();
        let _ = fs::File::from(err_r).read_to_string(&mut message);
        if !message.is_empty() {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            let _ = fs::remove_file(socket);
            return Err(fail(&cgroup, message));
        }

        finish_start(
            bundle,
            socket,
            attached,
            record,
            (pid, pid),
            pidfd,
            output,
            stdin,
            log,
            cgroup,
            listener,
        )
    }

    /// The event loop, until the container has exited and its output is
    /// drained.
    fn serve(&mut self) {
        let mut buf = vec![0u8; 256 * 1024];
        let mut exited: Option<i32> = None;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let (out_fd, err_fd) = match &self.output {
                Output::Pipes { stdout, stderr } => (
                    stdout.as_ref().map(|f| f.as_fd()),
                    stderr.as_ref().map(|f| f.as_fd()),
                ),
                Output::Pty { master } => (master.as_ref().map(|f| f.as_fd()), None),
            };
            if exited.is_some() && out_fd.is_none() && err_fd.is_none() {
                break;
            }
            if drain_deadline.is_some_and(|d| Instant::now() > d) {
                break;
            }
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(8 + self.clients.len());
            let mut roles: Vec<Role> = Vec::new();
            if let Some(fd) = out_fd {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                roles.push(Role::Stdout);
            }
            if let Some(fd) = err_fd {
                fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                roles.push(Role::Stderr);
            }
            if exited.is_none() {
                fds.push(PollFd::new(&self.pidfd, PollFlags::IN));
                roles.push(Role::Exit);
                fds.push(PollFd::new(&self.listener, PollFlags::IN));
                roles.push(Role::Listener);
            }
            if let (Some(stdin), false) = (&self.stdin, self.stdin_buf.is_empty()) {
                fds.push(PollFd::new(stdin, PollFlags::OUT));
                roles.push(Role::StdinWritable);
            }
            for (i, c) in self.clients.iter().enumerate() {
                let mut flags = PollFlags::IN;
                if !c.outbuf.is_empty() {
                    flags |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.stream, flags));
                roles.push(Role::Client(i));
            }
            let timeout = if exited.is_some() {
                Some(rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                })
            } else {
                None
            };
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            }
            let ready: Vec<(Role, PollFlags)> = fds
                .iter()
                .zip(roles)
                .map(|(f, r)| (r, f.revents()))
                .filter(|(_, ev)| !ev.is_empty())
                .collect();
            drop(fds);
            for (role, ev) in ready {
                match role {
                    Role::Stdout => self.read_output(Stream::Stdout, &mut buf),
                    Role::Stderr => self.read_output(Stream::Stderr, &mut buf),
                    Role::Exit => {
                        exited = Some(self.reap());
                        drain_deadline = Some(Instant::now() + Duration::from_secs(2));
                    }
                    Role::Listener => self.accept(),
                    Role::StdinWritable => self.write_stdin(),
                    Role::Client(i) => self.client_event(i, ev, &mut buf),
                }
            }
            self.clients.retain(|c| !c.closed);
        }
        let code = exited.unwrap_or_else(|| self.reap());
        self.finish(code);
    }

    fn read_output(&mut self, stream: Stream, buf: &mut [u8]) {
        let fd = match (&self.output, stream) {
            (Output::Pipes { stdout, .. }, Stream::Stdout) => stdout.as_ref(),
            (Output::Pipes { stderr, .. }, Stream::Stderr) => stderr.as_ref(),
            (Output::Pty { master }, _) => master.as_ref(),
        };
        let Some(fd) = fd else { return };
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) | Err(_) => {
                // EOF, or EIO on a pty whose last slave closed.
                match (&mut self.output, stream) {
                    (Output::Pipes { stdout, .. }, Stream::Stdout) => *stdout = None,
                    (Output::Pipes { stderr, .. }, Stream::Stderr) => *stderr = None,
                    (Output::Pty { master }, _) => *master = None,
                }
            }
            Ok(n) => {
                let data = &buf[..n];
                let _ = self.log.write(stream, data, SystemTime::now());
                let kind = match stream {
                    Stream::Stdout => Kind::Stdout,
                    Stream::Stderr => Kind::Stderr,
                };
                for c in &mut self.clients {
                    c.send(kind, data);
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Ok(c) = Client::new(stream) {
                self.clients.push(c);
            }
        }
    }

    fn write_stdin(&mut self) {
        if let Some(fd) = &self.stdin {
            match rustix::io::write(fd, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => {
                    self.stdin = None;
                    self.stdin_buf.clear();
                }
            }
        }
        if self.stdin_buf.is_empty() && self.stdin_closing {
            self.close_stdin();
        }
    }

    fn close_stdin(&mut self) {
        match &self.output {
            // With a terminal, end of input is the EOF character.
            Output::Pty { .. } => {
                if let Some(fd) = &self.stdin {
                    let _ = rustix::io::write(fd, &[4]);
                }
            }
            Output::Pipes { .. } => self.stdin = None,
        }
    }

    fn client_event(&mut self, i: usize, ev: PollFlags, buf: &mut [u8]) {
        if ev.contains(PollFlags::OUT) {
            self.clients[i].flush();
        }
        if !ev.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            return;
        }
        let frames = {
            let c = &mut self.clients[i];
            match c.stream.read(buf) {
                Ok(0) => {
                    c.closed = true;
                    return;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    match attach::split_frames(&mut c.inbuf) {
                        Ok(f) => f,
                        Err(_) => {
                            c.closed = true;
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    c.closed = true;
                    return;
                }
            }
        };
        for (kind, payload) in frames {
            match kind {
                Kind::Stdin => {
                    if self.stdin.is_some() {
                        self.stdin_buf.extend_from_slice(&payload);
                        self.write_stdin();
                    }
                }
                Kind::CloseStdin => {
                    self.stdin_closing = true;
                    if self.stdin_buf.is_empty() {
                        self.close_stdin();
                    }
                }
                Kind::Resize => {
                    if let (Output::Pty { master: Some(m) }, Some(rows), Some(cols)) = (
                        &self.output,
                        payload
                            .get(..2)
                            .and_then(|b| b.try_into().ok())
                            .map(u16::from_be_bytes),
                        payload
                            .get(2..4)
                            .and_then(|b| b.try_into().ok())
                            .map(u16::from_be_bytes),
                    ) {
                        let _ = rustix::termios::tcsetwinsize(
                            m,
                            rustix::termios::Winsize {
                                ws_row: rows,
                                ws_col: cols,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            },
                        );
                    }
                }
                Kind::Signal => {
                    if let Some(sig) = payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map(i32::from_be_bytes)
                        && let Some(sig) = rustix::process::Signal::from_named_raw(sig)
                    {
                        let _ = rustix::process::pidfd_send_signal(&self.pidfd, sig);
                    }
                }
                Kind::Stdout | Kind::Stderr | Kind::Exit => {}
            }
        }
    }

    /// Reaps the container's pid 1 and returns Docker's exit code for it.
    fn reap(&mut self) -> i32 {
        use nix::sys::wait::{WaitStatus, waitpid};
        loop {
            match waitpid(nix::unistd::Pid::from_raw(self.pid), None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return 255,
            }
        }
    }

    fn finish(&mut self, code: i32) {
        let _ = self.log.flush();
        let oom = self.cgroup.oom_kills().map(|n| n > 0).unwrap_or(false);
        let _ = self.cgroup.delete();
        let mut st: ContainerState =
            state::read_json(&self.bundle.state()).unwrap_or_else(|_| ContainerState::created());
        st.status = Status::Exited;
        st.pid = 0;
        st.shim_pid = 0;
        st.exit_code = code;
        st.oom_killed = oom;
        st.finished_at = Some(now_rfc3339());
        let _ = state::write_state(&self.bundle.state(), &st);
        let payload = attach::exit_payload(code, oom);
        for c in &mut self.clients {
            c.send(Kind::Exit, &payload);
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(Duration::from_secs(2)));
            let pending = std::mem::take(&mut c.outbuf);
            let _ = c.stream.write_all(&pending);
        }
        let _ = fs::remove_file(&self.socket);
        let _ = &self.record;
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Stdout,
    Stderr,
    Exit,
    Listener,
    StdinWritable,
    Client(usize),
}

/// Records the running state and builds the shim around a started container.
#[allow(clippy::too_many_arguments)]
fn finish_start(
    bundle: &Bundle,
    socket: &Path,
    attached: Option<UnixStream>,
    record: ContainerRecord,
    (pid, container_pid): (i32, i32),
    pidfd: OwnedFd,
    output: Output,
    stdin: Option<OwnedFd>,
    log: LogWriter,
    cgroup: Cgroup,
    listener: UnixListener,
) -> Result<Shim, String> {
    let kill_child = |msg: String| -> String {
        let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let _ = cgroup.delete();
        msg
    };
    let mut st: ContainerState =
        state::read_json(&bundle.state()).unwrap_or_else(|_| ContainerState::created());
    st.status = Status::Running;
    st.pid = container_pid;
    st.shim_pid = std::process::id().cast_signed();
    st.started_at = Some(now_rfc3339());
    st.error.clear();
    st.exit_code = 0;
    st.oom_killed = false;
    st.start_count += 1;
    state::write_state(&bundle.state(), &st)
        .map_err(|e| kill_child(format!("cannot record the state: {e}")))?;

    let mut clients = Vec::new();
    if let Some(stream) = attached
        && let Ok(c) = Client::new(stream)
    {
        clients.push(c);
    }
    for fd in [&stdin].into_iter().flatten() {
        let _ = rustix::io::ioctl_fionbio(fd, true);
    }
    Ok(Shim {
        record,
        bundle: bundle.clone(),
        pid,
        pidfd,
        output,
        stdin,
        stdin_buf: Vec::new(),
        stdin_closing: false,
        log,
        cgroup,
        listener,
        socket: socket.to_path_buf(),
        clients,
    })
}

/// Starts the container with an external OCI runtime (`RUNTIME run`) in a
/// bundle of its own whose spec has the user resolved to numbers (the OCI
/// spec has no names). The runtime stays in the foreground, so its pid is the
/// one this shim waits for, and it forwards signals to the container. Returns
/// once the runtime has written the container's pid file (the container
/// runs): the runtime's pid, a pidfd for it, and the container's pid.
fn spawn_external(
    runtime: &str,
    bundle: &Bundle,
    record: &ContainerRecord,
    spec: &Spec,
    stdio: [OwnedFd; 3],
    terminal: bool,
) -> io::Result<(i32, OwnedFd, i32)> {
    if terminal {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a terminal (-t) is only supported by the built-in runtime",
        ));
    }
    let mut spec = spec.clone();
    if let Some(user) = &record.user {
        let root = bundle.rootfs_dir();
        let resolved =
            super::user::resolve(user, &root.join("etc/passwd"), &root.join("etc/group"))?;
        if let Some(mut process) = spec.process().clone() {
            let mut u = process.user().clone();
            u.set_uid(resolved.uid);
            u.set_gid(resolved.gid);
            let mut groups = u.additional_gids().clone().unwrap_or_default();
            groups.extend(resolved.groups);
            u.set_additional_gids(Some(groups));
            process.set_user(u);
            spec.set_process(Some(process));
        }
    }
    let dir = bundle.dir().join("oci");
    fs::create_dir_all(&dir)?;
    state::write_json(&dir.join("config.json"), &spec)?;
    let [stdin, stdout, stderr] = stdio;
    let pid_file = dir.join("pid");
    let _ = fs::remove_file(&pid_file);
    let child = std::process::Command::new(runtime)
        .arg("--root")
        .arg(dir.join("state"))
        .arg("run")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--bundle")
        .arg(&dir)
        .arg(&record.id)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()?;
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::other("pid 0"))
        .and_then(|p| {
            Ok(rustix::process::pidfd_open(
                p,
                rustix::process::PidfdFlags::empty(),
            )?)
        })?;
    // The pid file appears once the container runs; the runtime exiting
    // first means it failed (its message is in the container's log).
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    loop {
        if let Some(container_pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok((pid, pidfd, container_pid));
        }
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        if rustix::event::poll(&mut fds, Some(&tick)).is_ok_and(|n| n > 0) {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return Err(io::Error::other(format!(
                "{runtime} exited before the container started"
            )));
        }
    }
}

/// Enters a private mount namespace and mounts the container's root there.
/// With a user namespace the writable layer is handed to the mapped root.
fn mount_rootfs(record: &ContainerRecord, spec: &Spec, target: &Path) -> io::Result<()> {
    let nix_err = |e: nix::Error| io::Error::from_raw_os_error(e as i32);
    let linux = spec.linux().clone().unwrap_or_default();
    if let (Some(uids), Some(gids)) = (linux.uid_mappings(), linux.gid_mappings()) {
        let host = |maps: &Vec<oci_spec::runtime::LinuxIdMapping>| {
            maps.iter()
                .find(|m| m.container_id() == 0)
                .map(|m| m.host_id())
        };
        if let (Some(uid), Some(gid)) = (host(uids), host(gids)) {
            for dir in [&record.rootfs.upper, &record.rootfs.work] {
                nix::unistd::chown(
                    dir,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .map_err(nix_err)?;
            }
        }
    }
    super::rootfs::mount_private(&record.rootfs, target)
}

/// The marker a new volume carries until it has been filled with what the
/// image has at its mount point (Docker copies an image's files into a new,
/// empty volume).
pub const UNSEEDED: &str = ".unseeded";

/// Fills every new volume (a bind source `…/_data` whose parent holds the
/// [`UNSEEDED`] marker) with the image's files at its mount point, once.
fn seed_volumes(spec: &Spec, root: &Path) -> io::Result<()> {
    for m in spec.mounts().iter().flatten() {
        let Some(source) = m.source() else { continue };
        let Some(volume) = source.parent() else {
            continue;
        };
        let marker = volume.join(UNSEEDED);
        if !marker.exists() {
            continue;
        }
        let rel: PathBuf = m
            .destination()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let from = root.join(rel);
        // Only a real directory of the image is copied, never through a
        // symlink the image planted.
        if fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir())
            && fs::read_dir(source)?.next().is_none()
        {
            copy_tree(&from, source)?;
        }
        fs::remove_file(&marker)?;
    }
    Ok(())
}

/// Copies a directory tree, keeping modes, owners and symlinks.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::symlink_metadata(from)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
            std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Writes `/proc/PID/{uid_map,setgroups,gid_map}` from the spec's mappings.
fn write_id_maps(pid: i32, spec: &Spec) -> io::Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let render = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    fs::write(format!("/proc/{pid}/uid_map"), render(linux.uid_mappings()))?;
    fs::write(format!("/proc/{pid}/gid_map"), render(linux.gid_mappings()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_flags_follow_the_spec_namespaces() {
        let spec = Spec::default();
        let flags = clone_flags(&spec);
        for f in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(flags & f as u64, 0);
        }
        assert_eq!(flags & libc::CLONE_NEWUSER as u64, 0);
    }
}
