//! The container runtime: executes containers described by OCI runtime specs
//! with the built-in runtime (namespaces, overlay root, cgroups, capabilities,
//! seccomp), supervises each through its shim, and keeps their records.
//!
//! It never decides *whether* a container should exist or what it should look
//! like: callers hand it a finished [`oci_spec::runtime::Spec`] and a
//! [`ContainerRecord`]. Every host path is a parameter ([`Runtime::open`]).

pub mod attach;
pub mod cgroup;
pub mod exec;
pub mod init;
pub mod logs;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod state;
pub mod user;

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;
use thiserror::Error;

pub use rootfs::Rootfs;
pub use state::{ContainerRecord, ContainerState, Status};

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the runtime.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// No container has this name or id (prefix).
    #[error("No such container: {0}")]
    NotFound(String),
    /// An id prefix matches several containers.
    #[error("container id prefix {0} is ambiguous")]
    Ambiguous(String),
    /// The name is taken.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// The name.
        name: String,
        /// Who has it.
        id: String,
    },
    /// The operation does not fit the container's status.
    #[error("container {id} is {status}: cannot {action}")]
    WrongState {
        /// The container.
        id: String,
        /// Its status.
        status: Status,
        /// What was asked.
        action: &'static str,
    },
    /// Starting failed in the shim or the container's init.
    #[error("cannot start container {id}: {message}")]
    Start {
        /// The container.
        id: String,
        /// What the shim reported.
        message: String,
    },
    /// A file or directory of the container could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed.
    #[error("cgroup of container {id}")]
    Cgroup {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: cgroup::CgroupError,
    },
    /// A signal could not be delivered.
    #[error("cannot signal container {id}")]
    Signal {
        /// The container.
        id: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The files of one container under `<root>/containers/<id>/`.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    /// The bundle in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `config.json`, the OCI runtime spec.
    pub fn spec(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `container.json`, the record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    /// `state.json`, written by the shim.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Where the root is mounted inside the container's mount namespace.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The writable layer.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Overlay's work directory.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

/// The current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    logs::rfc3339_nanos(std::time::SystemTime::now())
}

/// Docker's default capabilities (moby `oci/caps/defaults.go`): what a
/// container that asks for nothing else gets.
pub const DEFAULT_CAPABILITIES: [caps::Capability; 14] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];

/// A capability in the OCI spec's type (`CAP_NET_ADMIN` → `NetAdmin`).
pub fn oci_capability(cap: caps::Capability) -> Option<oci_spec::runtime::Capability> {
    cap.to_string().strip_prefix("CAP_")?.parse().ok()
}

/// Every capability the kernel knows (what `--privileged` grants).
pub fn all_capabilities() -> oci_spec::runtime::Capabilities {
    caps::all().into_iter().filter_map(oci_capability).collect()
}

/// A signal by name (`TERM`, `SIGTERM`, any case) or number.
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The command that writes container `id`'s root file system as a tar
/// stream to its stdout (`stack __export`): reading it mounts it in a
/// private mount namespace, which needs a single-threaded process.
pub fn export_helper_command(runtime: &Runtime, id: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(&runtime.exe);
    cmd.arg("__export")
        .arg(runtime.containers.parent().unwrap_or(&runtime.containers))
        .arg(&runtime.run_dir)
        .arg(id);
    cmd
}

/// The `__export` mode: `stack __export ROOT RUN_DIR ID`.
pub fn export_helper_main(args: &[String]) -> i32 {
    let [root, run_dir, id] = args else {
        eprintln!("usage: stack __export ROOT RUN_DIR ID");
        return 125;
    };
    let outcome = std::env::current_exe()
        .map_err(|source| RuntimeError::Io {
            action: "find",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })
        .and_then(|exe| Runtime::open(Path::new(root), Path::new(run_dir), exe))
        .and_then(|runtime| {
            runtime.read_rootfs(id, &mut io::stdout().lock(), |dir, pipe| {
                crate::image::layer::tar_dir(dir, io::BufWriter::new(pipe))
                    .map(|_| ())
                    .map_err(io::Error::other)
            })
        });
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", crate::error_chain(&e));
            1
        }
    }
}

/// Where [`Runtime::remove`] moves a bundle to delete it, under the
/// containers directory (not a container id, so never listed).
const TRASH: &str = ".trash";

/// Where shim sockets live for a state root: `$STACK_RUN_DIR`, else
/// `/run/stack` for the default root and `<root>/run` for any other, so
/// instances with different roots never meet.
pub fn default_run_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("STACK_RUN_DIR") {
        return PathBuf::from(dir);
    }
    if root == Path::new("/var/lib/stack") {
        PathBuf::from("/run/stack")
    } else {
        root.join("run")
    }
}

/// The runtime over one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    containers: PathBuf,
    run_dir: PathBuf,
    exe: PathBuf,
}

/// Docker's container id: 32 random bytes in hex.
pub fn new_id() -> String {
    crate::sys::random_id()
}

impl Runtime {
    /// The runtime with containers under `<root>/containers` and shim sockets
    /// in `run_dir`; `exe` is this program (the shim is a mode of it).
    pub fn open(root: &Path, run_dir: &Path, exe: PathBuf) -> Result<Self, RuntimeError> {
        let containers = root.join("containers");
        fs::create_dir_all(containers.join("names")).map_err(io_err("create", &containers))?;
        fs::create_dir_all(run_dir).map_err(io_err("create", run_dir))?;
        Ok(Self {
            containers,
            run_dir: run_dir.to_path_buf(),
            exe,
        })
    }

    /// The bundle of container `id`.
    pub fn bundle(&self, id: &str) -> Bundle {
        Bundle::new(self.containers.join(id))
    }

    fn socket(&self, id: &str) -> PathBuf {
        self.run_dir
            .join(format!("{}.sock", &id[..id.len().min(16)]))
    }

    /// Resolves a name, a full id or a unique id prefix to an id.
    pub fn resolve(&self, name_or_id: &str) -> Result<String, RuntimeError> {
        let name = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        if !name.is_empty()
            && !name.contains('/')
            && !name.starts_with('.')
            && let Ok(target) = fs::read_link(self.containers.join("names").join(name))
        {
            return Ok(target.to_string_lossy().into_owned());
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuntimeError::NotFound(name_or_id.to_string()));
        }
        let mut found = None;
        for id in self.ids()? {
            if id.starts_with(name) {
                if found.is_some() {
                    return Err(RuntimeError::Ambiguous(name.to_string()));
                }
                found = Some(id);
            }
        }
        found.ok_or_else(|| RuntimeError::NotFound(name_or_id.to_string()))
    }

    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.containers).map_err(io_err("list", &self.containers))? {
            let entry = entry.map_err(io_err("list", &self.containers))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes what creates and removes cut short by a crash left behind:
    /// bundles without a record and name claims that lead to none. Only for
    /// a moment when no create runs (the daemon's start, under its lock);
    /// returns how many leftovers it removed.
    pub fn sweep_unfinished(&self) -> Result<usize, RuntimeError> {
        let mut swept = 0;
        let trash = self.containers.join(TRASH);
        if let Ok(entries) = fs::read_dir(&trash) {
            for entry in entries.flatten() {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                swept += 1;
            }
        }
        for id in self.ids()? {
            let bundle = self.bundle(&id);
            // No record, or (a host crash before `persist`) a record or spec
            // that never reached the disk whole.
            let torn = |path: &Path, parse: fn(&Path) -> io::Result<()>| {
                parse(path).is_err_and(|e| e.kind() == io::ErrorKind::InvalidData)
            };
            if !bundle.record().exists()
                || torn(&bundle.record(), |p| {
                    state::read_json::<ContainerRecord>(p).map(drop)
                })
                || torn(&bundle.spec(), |p| state::read_json::<Spec>(p).map(drop))
            {
                fs::remove_dir_all(bundle.dir()).map_err(io_err("remove", bundle.dir()))?;
                swept += 1;
            }
        }
        let names = self.containers.join("names");
        for entry in fs::read_dir(&names).map_err(io_err("list", &names))? {
            let entry = entry.map_err(io_err("list", &names))?;
            let claim = entry.path();
            let complete = fs::read_link(&claim)
                .is_ok_and(|id| self.containers.join(id).join("container.json").exists());
            if !complete {
                fs::remove_file(&claim).map_err(io_err("remove", &claim))?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Creates a container: claims its name, writes its bundle. Nothing runs.
    ///
    /// The files are replaced atomically but not flushed to the disk (each
    /// fsync costs a journal commit, about 10 ms here, on the path of `run`):
    /// a crash of the daemon leaves them whole; a crash of the host may leave
    /// a torn bundle, which [`Runtime::sweep_unfinished`] removes. Call
    /// [`Runtime::persist`] for a container that must survive a host crash.
    pub fn create(&self, record: &ContainerRecord, spec: &Spec) -> Result<(), RuntimeError> {
        let names = self.containers.join("names");
        let claim = names.join(&record.name);
        if let Err(e) = std::os::unix::fs::symlink(&record.id, &claim) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                let id = fs::read_link(&claim)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(RuntimeError::NameInUse {
                    name: record.name.clone(),
                    id,
                });
            }
            return Err(io_err("claim the name", &claim)(e));
        }
        let result = (|| {
            let bundle = self.bundle(&record.id);
            fs::create_dir(bundle.dir()).map_err(io_err("create", bundle.dir()))?;
            for dir in [bundle.upper(), bundle.work(), bundle.rootfs_dir()] {
                fs::create_dir(&dir).map_err(io_err("create", &dir))?;
            }
            state::write_json_fast(&bundle.spec(), spec)
                .map_err(io_err("write", &bundle.spec()))?;
            state::write_state(&bundle.state(), &ContainerState::created())
                .map_err(io_err("write", &bundle.state()))?;
            // The record last: a bundle without one is an unfinished create.
            state::write_json_fast(&bundle.record(), record)
                .map_err(io_err("write", &bundle.record()))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(self.bundle(&record.id).dir());
            let _ = fs::remove_file(&claim);
        }
        result
    }

    /// Flushes what [`Runtime::create`] wrote to the disk: the spec, the
    /// record, the bundle directory and the name claim. Afterwards the
    /// container survives a crash of the host.
    pub fn persist(&self, id: &str) -> Result<(), RuntimeError> {
        let bundle = self.bundle(id);
        let sync = |path: &Path| {
            fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        RuntimeError::NotFound(id.to_string())
                    } else {
                        io_err("flush", path)(e)
                    }
                })
        };
        for path in [
            bundle.spec(),
            bundle.record(),
            bundle.dir().to_path_buf(),
            self.containers.clone(),
            self.containers.join("names"),
        ] {
            sync(&path)?;
        }
        Ok(())
    }

    /// The record of a container.
    pub fn record(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let path = self.bundle(id).record();
        state::read_json(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                RuntimeError::NotFound(id.to_string())
            } else {
                io_err("read", &path)(e)
            }
        })
    }

    /// The OCI spec of a container.
    pub fn spec(&self, id: &str) -> Result<Spec, RuntimeError> {
        let path = self.bundle(id).spec();
        state::read_json(&path).map_err(io_err("read", &path))
    }

    /// The state of a container. A record that says running although its shim
    /// is gone (the host rebooted, or the shim was killed) reads as exited.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let mut st = self.recorded_state(id)?;
        if matches!(st.status, Status::Running | Status::Paused) && !is_shim_of(st.shim_pid, id) {
            st.status = Status::Exited;
            st.pid = 0;
            st.shim_pid = 0;
            if st.error.is_empty() {
                st.error = "the container's monitor process is gone".into();
            }
            if st.finished_at.is_none() {
                st.finished_at = Some(now_rfc3339());
            }
            st.exit_code = if st.exit_code == 0 { 255 } else { st.exit_code };
        }
        Ok(st)
    }

    /// Every container with its state, oldest first.
    pub fn list(&self) -> Result<Vec<(ContainerRecord, ContainerState)>, RuntimeError> {
        let mut out = Vec::new();
        for id in self.ids()? {
            // Skip bundles an unfinished create or remove left without a record.
            let Ok(record) = self.record(&id) else {
                continue;
            };
            let Ok(state) = self.state(&id) else { continue };
            out.push((record, state));
        }
        out.sort_by(|a, b| a.0.created.cmp(&b.0.created));
        Ok(out)
    }

    /// Starts a created or exited container through a new shim and returns
    /// once its program runs. `attach` is a socket the shim treats as an
    /// already connected client (the other end sees every byte of output and
    /// the exit frame).
    pub fn start(&self, id: &str, attach: Option<OwnedFd>) -> Result<ContainerState, RuntimeError> {
        let st = self.state(id)?;
        if matches!(st.status, Status::Running | Status::Paused) {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status,
                action: "start it",
            });
        }
        let bundle = self.bundle(id);
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_err("create a pipe for", bundle.dir())(e.into()))?;
        let mut fds = vec![(ready_w, 3)];
        if let Some(a) = attach {
            fds.push((a, 4));
        }
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("__shim")
            .arg(bundle.dir())
            .arg(self.socket(id))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child =
            crate::sys::spawn_with_fds(&mut cmd, fds).map_err(io_err("run the shim", &self.exe))?;
        let mut answer = String::new();
        let _ = fs::File::from(ready_r).read_to_string(&mut answer);
        let _ = child.wait();
        let answer = answer.trim();
        if answer.starts_with("ok") {
            return self.state(id);
        }
        let message = answer
            .strip_prefix("err ")
            .unwrap_or(if answer.is_empty() {
                "the shim exited without an answer"
            } else {
                answer
            })
            .to_string();
        Err(RuntimeError::Start {
            id: id.to_string(),
            message,
        })
    }

    /// Connects to a running container's shim as an attach client.
    pub fn attach(&self, id: &str) -> Result<UnixStream, RuntimeError> {
        let socket = self.socket(id);
        UnixStream::connect(&socket).map_err(io_err("connect to", &socket))
    }

    /// Sends a signal to the container's pid 1.
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let st = self.state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status,
                action: "signal it",
            });
        }
        let mut stream = self.attach(id)?;
        attach::write_frame(&mut stream, attach::Kind::Signal, &signal.to_be_bytes()).map_err(
            |source| RuntimeError::Signal {
                id: id.to_string(),
                source,
            },
        )
    }

    /// Waits until the container is no longer running (or `timeout` passes)
    /// and returns its state.
    pub fn wait(
        &self,
        id: &str,
        timeout: Option<Duration>,
    ) -> Result<ContainerState, RuntimeError> {
        let st = self.state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Ok(st);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        if let Ok(pidfd) = rustix::process::Pid::from_raw(st.shim_pid)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()))
        {
            let mut fds = [rustix::event::PollFd::new(
                &pidfd,
                rustix::event::PollFlags::IN,
            )];
            loop {
                let left = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        Some(rustix::time::Timespec {
                            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                            tv_nsec: i64::from(left.subsec_nanos()),
                        })
                    }
                    None => None,
                };
                match rustix::event::poll(&mut fds, left.as_ref()) {
                    Ok(n) if n > 0 => break,
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break,
                }
            }
        }
        self.state(id)
    }

    /// Stops a running container: its stop signal, then SIGKILL after
    /// `timeout`.
    pub fn stop(
        &self,
        id: &str,
        signal: i32,
        timeout: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        let st = self.state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Ok(st);
        }
        if st.status == Status::Paused {
            let _ = self.resume(id);
        }
        if self.kill(id, signal).is_ok() {
            let st = self.wait(id, Some(timeout))?;
            if !matches!(st.status, Status::Running | Status::Paused) {
                return Ok(st);
            }
        }
        let _ = self.kill(id, libc::SIGKILL);
        self.wait(id, Some(Duration::from_secs(30)))
    }

    fn cgroup_of(&self, id: &str) -> Result<cgroup::Cgroup, RuntimeError> {
        let record = self.record(id)?;
        let cg = |source| RuntimeError::Cgroup {
            id: id.to_string(),
            source,
        };
        let hierarchy = cgroup::Hierarchy::detect().map_err(cg)?;
        hierarchy.open(&record.cgroup).map_err(cg)
    }

    /// Freezes every process of a running container.
    pub fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let st = self.state(id)?;
        if st.status != Status::Running {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status,
                action: "pause it",
            });
        }
        self.cgroup_of(id)?
            .freeze()
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })?;
        self.set_status(id, Status::Paused)
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let st = self.state(id)?;
        if st.status != Status::Paused {
            return Err(RuntimeError::WrongState {
                id: id.to_string(),
                status: st.status,
                action: "unpause it",
            });
        }
        self.cgroup_of(id)?
            .thaw()
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })?;
        self.set_status(id, Status::Running)
    }

    fn set_status(&self, id: &str, status: Status) -> Result<(), RuntimeError> {
        let path = self.bundle(id).state();
        let mut st: ContainerState = state::read_json(&path).map_err(io_err("read", &path))?;
        st.status = status;
        state::write_state(&path, &st).map_err(io_err("write", &path))
    }

    /// Resource usage of a running container.
    pub fn stats(&self, id: &str) -> Result<cgroup::CgroupStats, RuntimeError> {
        self.cgroup_of(id)?
            .stats()
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })
    }

    /// Removes a container that is not running (with `force`, kills it first).
    pub fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let st = self.state(id)?;
        if matches!(st.status, Status::Running | Status::Paused) {
            if !force {
                return Err(RuntimeError::WrongState {
                    id: id.to_string(),
                    status: st.status,
                    action: "remove it (stop it first or force)",
                });
            }
            let _ = self.stop(id, libc::SIGKILL, Duration::from_secs(0))?;
        }
        let record = self.record(id)?;
        let bundle = self.bundle(id);
        // Mark it first so a crash halfway leaves a bundle `list` skips and a
        // later remove finishes.
        let _ = fs::remove_file(bundle.record());
        let claim = self.containers.join("names").join(&record.name);
        if fs::read_link(&claim).is_ok_and(|t| t == Path::new(id)) {
            let _ = fs::remove_file(&claim);
        }
        // The bundle goes aside with one rename and is deleted by a thread
        // of its own, so a writable layer with many files does not hold up
        // the caller; what a crash leaves there the next sweep deletes.
        let trash = self.containers.join(TRASH);
        let aside = trash.join(id);
        let moved = match fs::rename(bundle.dir(), &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&trash).is_ok() && fs::rename(bundle.dir(), &aside).is_ok()
            }
            Err(_) => false,
        };
        if moved {
            let spawned = std::thread::Builder::new()
                .name("remove-bundle".into())
                .spawn({
                    let aside = aside.clone();
                    move || {
                        let _ = fs::remove_dir_all(aside);
                    }
                });
            if spawned.is_err() {
                let _ = fs::remove_dir_all(&aside);
            }
            return Ok(());
        }
        fs::remove_dir_all(bundle.dir()).map_err(io_err("remove", bundle.dir()))
    }

    /// Mounts the container's root (image layers under its writable layer) in
    /// a forked child's private mount namespace and runs `read` there with
    /// the mounted directory and the write end of a pipe whose other end is
    /// copied to `out`. The host never sees the mount. The caller must be
    /// single-threaded (it forks).
    pub fn read_rootfs(
        &self,
        id: &str,
        out: &mut dyn io::Write,
        read: impl FnOnce(&Path, fs::File) -> io::Result<()>,
    ) -> Result<(), RuntimeError> {
        let record = self.record(id)?;
        let bundle = self.bundle(id);
        let dir = bundle.rootfs_dir();
        let (pipe_r, pipe_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_err("create a pipe for", bundle.dir())(e.into()))?;
        // SAFETY: the caller is single-threaded (this function's contract),
        // so the child may use the standard library.
        let forked = unsafe { crate::sys::fork() }.map_err(io_err("fork to read", bundle.dir()))?;
        let Some(child) = forked else {
            drop(pipe_r);
            let result = rootfs::mount_private(&record.rootfs, &dir)
                .and_then(|()| read(&dir, fs::File::from(pipe_w)));
            crate::sys::exit_now(i32::from(result.is_err()))
        };
        drop(pipe_w);
        let copied = io::copy(&mut fs::File::from(pipe_r), out);
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
        let ok = matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0)));
        copied.map_err(io_err("copy the root file system of", bundle.dir()))?;
        if !ok {
            return Err(RuntimeError::Io {
                action: "read the root file system of",
                path: bundle.dir().to_path_buf(),
                source: io::Error::other("the reader failed"),
            });
        }
        Ok(())
    }

    /// The container's root file system as the host can reach it (an
    /// `O_PATH` directory fd; resolve paths under it with
    /// `openat2(RESOLVE_IN_ROOT)`): the root of its pid 1 while it runs,
    /// with its volumes and binds mounted; otherwise its image layers
    /// under its writable layer in a detached overlay mount that no mount
    /// namespace shows and that is gone once the fd is closed. Safe to call
    /// from multi-threaded processes (no fork, no namespace change).
    pub fn open_root(&self, id: &str) -> Result<OwnedFd, RuntimeError> {
        let record = self.record(id)?;
        let st = self.state(id)?;
        if matches!(st.status, Status::Running | Status::Paused) && st.pid > 0 {
            let path = PathBuf::from(format!("/proc/{}/root", st.pid));
            let fd = rustix::fs::open(
                &path,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            );
            // The pid is still the container's only if the state still says
            // so after the open (it may have exited and the pid been reused).
            let still = self
                .state(id)
                .is_ok_and(|now| now.pid == st.pid && now.status != Status::Exited);
            match fd {
                Ok(fd) if still => return Ok(fd),
                Ok(_) => {}
                Err(e) if still => return Err(io_err("open the root of", &path)(e.into())),
                Err(_) => {}
            }
        }
        let bundle = self.bundle(id);
        rootfs::mount_detached(&record.rootfs)
            .map_err(io_err("mount the root file system of", bundle.dir()))
    }

    /// The pids of every process in the container's cgroup (host pids).
    pub fn pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        self.cgroup_of(id)?
            .procs()
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })
    }

    /// Changes the limits of a running container's cgroup (only the fields
    /// `resources` sets are written).
    pub fn update_resources(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        self.cgroup_of(id)?
            .apply(resources)
            .map_err(|source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            })
    }

    /// Replaces a container's OCI spec (atomically; the next start uses it).
    pub fn write_spec(&self, id: &str, spec: &Spec) -> Result<(), RuntimeError> {
        let path = self.bundle(id).spec();
        if !path.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        state::write_json(&path, spec).map_err(io_err("write", &path))
    }

    /// Replaces a container's record (atomically). The id must not change.
    pub fn write_record(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let path = self.bundle(&record.id).record();
        if !path.exists() {
            return Err(RuntimeError::NotFound(record.id.clone()));
        }
        state::write_json(&path, record).map_err(io_err("write", &path))
    }

    /// [`Runtime::write_record`] without waiting for the disk: for
    /// bookkeeping that a host crash may lose (the stack loop's notes on a
    /// container, which it rebuilds from the stack file), on the path of a
    /// create, start or stop.
    pub fn write_record_fast(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let path = self.bundle(&record.id).record();
        if !path.exists() {
            return Err(RuntimeError::NotFound(record.id.clone()));
        }
        state::write_json_fast(&path, record).map_err(io_err("write", &path))
    }

    /// Renames a container.
    pub fn rename(&self, id: &str, new_name: &str) -> Result<(), RuntimeError> {
        let mut record = self.record(id)?;
        let names = self.containers.join("names");
        let claim = names.join(new_name);
        if let Err(e) = std::os::unix::fs::symlink(id, &claim) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                let other = fs::read_link(&claim)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Err(RuntimeError::NameInUse {
                    name: new_name.to_string(),
                    id: other,
                });
            }
            return Err(io_err("claim the name", &claim)(e));
        }
        let old = names.join(&record.name);
        record.name = new_name.to_string();
        let path = self.bundle(id).record();
        state::write_json(&path, &record).map_err(io_err("write", &path))?;
        let _ = fs::remove_file(old);
        Ok(())
    }

    /// The state as the shim last wrote it, without checking that the shim
    /// still runs (which [`Runtime::state`] does).
    fn recorded_state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let path = self.bundle(id).state();
        state::read_json(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                RuntimeError::NotFound(id.to_string())
            } else {
                io_err("read", &path)(e)
            }
        })
    }

    /// A pidfd of the shim of a running container, opened first and then
    /// checked to be that container's shim, so it cannot refer to a process
    /// that reused the pid. It turns readable when the shim exits, which is
    /// after the shim recorded the container's exit. `None` when the
    /// container does not run or its shim is gone.
    pub fn shim_pidfd(&self, id: &str) -> Result<Option<OwnedFd>, RuntimeError> {
        let st = self.recorded_state(id)?;
        if !matches!(st.status, Status::Running | Status::Paused) {
            return Ok(None);
        }
        let Some(pid) = rustix::process::Pid::from_raw(st.shim_pid) else {
            return Ok(None);
        };
        let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        else {
            return Ok(None);
        };
        Ok(is_shim_of(st.shim_pid, id).then_some(pidfd))
    }

    /// Finishes a run whose shim is gone (killed, or the host went down
    /// before it recorded the exit): kills what is left of the container in
    /// its cgroup (the container does not die with its shim, and without it
    /// nothing would stop or reap it), removes the cgroup and the attach
    /// socket, and records the exit the way [`Runtime::state`] reports it
    /// (code 255 unless one was recorded, and why). Returns that state, or
    /// `None` when the container is not such a run.
    pub fn finish_orphaned(&self, id: &str) -> Result<Option<ContainerState>, RuntimeError> {
        let recorded = self.recorded_state(id)?;
        if !matches!(recorded.status, Status::Running | Status::Paused)
            || is_shim_of(recorded.shim_pid, id)
        {
            return Ok(None);
        }
        let mut oom = false;
        if let Ok(cg) = self.cgroup_of(id) {
            let cg_err = |source| RuntimeError::Cgroup {
                id: id.to_string(),
                source,
            };
            cg.kill_all(rustix::process::Signal::KILL).map_err(cg_err)?;
            // On v1 a frozen (paused) process takes its SIGKILL only once
            // thawed.
            if cg.is_frozen().unwrap_or(false) {
                cg.thaw().map_err(cg_err)?;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while cg.procs().is_ok_and(|p| !p.is_empty()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            oom = cg.oom_kills().is_ok_and(|n| n > 0);
            cg.delete().map_err(cg_err)?;
        }
        let _ = fs::remove_file(self.socket(id));
        let mut st = recorded;
        st.status = Status::Exited;
        st.pid = 0;
        st.shim_pid = 0;
        st.oom_killed = oom;
        if st.error.is_empty() {
            st.error = "the container's monitor process is gone".into();
        }
        st.finished_at = Some(now_rfc3339());
        st.exit_code = if st.exit_code == 0 { 255 } else { st.exit_code };
        let path = self.bundle(id).state();
        state::write_state(&path, &st).map_err(io_err("write", &path))?;
        Ok(Some(st))
    }
}

/// Whether `pid` is the shim of container `id`: its command line is
/// `stack __shim …/<id> SOCKET`. A bare liveness check would take a process
/// that reused a dead shim's pid (after a reboot, say) for the shim; a
/// zombie has no command line and reads as gone.
fn is_shim_of(pid: i32, id: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    args.nth(1) == Some(b"__shim".as_slice())
        && args.next().is_some_and(|dir| {
            Path::new(std::ffi::OsStr::from_bytes(dir)).file_name()
                == Some(std::ffi::OsStr::new(id))
        })
}
