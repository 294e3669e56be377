//! The container's init: what runs in the freshly cloned child, inside its new
//! namespaces, between `clone3` and `execve` of the user's program.
//!
//! The shim that clones it is a freshly exec'd, single-threaded process, so the
//! child may allocate and use the standard library freely: no lock can be held
//! by a thread that does not exist. Every step that fails is reported back to
//! the shim over the error pipe as one line naming the step, and the child
//! exits; an `execve` that succeeds closes the pipe (it is close-on-exec), which
//! is how the shim learns the program runs.
//!
//! Order, as runc does it: wait for the shim (uid/gid maps), mounts
//! (private propagation, overlay root, the spec's mounts, device nodes),
//! `pivot_root`, masked and read-only paths, hostname, sysctls, rlimits, the
//! session and terminal, user and groups, capabilities, `no_new_privs`,
//! seccomp, exec. Nothing here decides policy: it executes the OCI spec.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{self, SigHandler, SigSet, Signal};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Mount, PosixRlimitType, Spec};
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};

use super::seccomp::Program;
use super::user;

/// Everything the child needs, prepared by the shim before the clone.
#[derive(Debug)]
pub struct InitPlan<'a> {
    /// The container's spec.
    pub spec: &'a Spec,
    /// Where the merged root is mounted (in the shim's mount namespace, which
    /// the container's copies).
    pub rootfs_dir: &'a Path,
    /// The user as written (`name`, `uid`, `name:group`), resolved against the
    /// container's `/etc/passwd` and `/etc/group` after the pivot.
    pub user: Option<&'a str>,
    /// Stay as pid 1, reap zombies and forward signals (`--init`).
    pub init: bool,
    /// The compiled seccomp filter, if any.
    pub seccomp: Option<&'a Program>,
    /// Whether a new network namespace is created (its loopback is brought up).
    pub new_netns: bool,
}

/// The child's ends of the channels to the shim and its stdio.
#[derive(Debug)]
pub struct InitFds {
    /// Readable once the shim has finished the parent side (maps, cgroup).
    pub sync: OwnedFd,
    /// Close-on-exec; a failed step writes one line here.
    pub error: OwnedFd,
    /// stdin, stdout, stderr of the process (the pty slave three times with a
    /// terminal).
    pub stdio: [OwnedFd; 3],
    /// Whether `stdio[0]` is a terminal that becomes the controlling one.
    pub terminal: bool,
}

/// Runs the child side and never returns: it either execs the user's program
/// or exits with status 127 after writing the failed step to the error pipe.
pub fn run(plan: &InitPlan<'_>, fds: InitFds) -> ! {
    let error = fds.error.try_clone();
    let outcome = setup(plan, fds);
    let message = match outcome {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    };
    if let Ok(mut pipe) = error.map(fs::File::from) {
        let _ = pipe.write_all(message.as_bytes());
    }
    crate::sys::exit_now(127)
}

/// A failed step of the child's setup.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub(crate) struct StepError {
    step: String,
    #[source]
    source: io::Error,
}

pub(crate) fn step<T, E: Into<io::Error>>(
    result: Result<T, E>,
    step: impl Into<String>,
) -> Result<T, StepError> {
    result.map_err(|e| StepError {
        step: step.into(),
        source: e.into(),
    })
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// A value that cannot exist: what a function that only returns on error yields.
pub(crate) enum Never {}

fn setup(plan: &InitPlan<'_>, fds: InitFds) -> Result<Never, StepError> {
    let spec = plan.spec;
    // The shim sends two bytes: `m` once the uid/gid maps are written, `g`
    // once this process is in its cgroup. Moving a process between v1
    // cgroups waits for an RCU grace period (about 10 ms), so the set-up
    // below runs meanwhile and only the cgroup namespace and the exec wait
    // for `g`.
    let mut sync = fs::File::from(fds.sync);
    wait_for_shim(&mut sync, b'm')?;
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let wants = |t: LinuxNamespaceType| {
        namespaces
            .iter()
            .any(|n| n.typ() == t && n.path().is_none())
    };
    if wants(LinuxNamespaceType::User) {
        step(
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(nix_err),
            "become root in the user namespace",
        )?;
        step(
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(nix_err),
            "become root in the user namespace",
        )?;
    }
    // Join namespaces given by path (network mode `container:`), before
    // anything is mounted.
    for ns in &namespaces {
        if let Some(path) = ns.path() {
            let f = step(
                fs::File::open(path),
                format!("open namespace {}", path.display()),
            )?;
            if already_in(&f, ns.typ()) {
                // Joined by the shim before the clone (see the shim).
                continue;
            }
            step(
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::empty()).map_err(nix_err),
                format!("join namespace {}", path.display()),
            )?;
        }
    }
    // A cgroup file system mounted in the container must see the
    // container's own cgroup as its root, so that mount waits for the cgroup.
    let mounts_cgroup = spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.typ().as_deref() == Some("cgroup"))
        && Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut joined = false;
    if mounts_cgroup {
        join_cgroup(&mut sync, wants(LinuxNamespaceType::Cgroup))?;
        joined = true;
    }
    if plan.new_netns {
        step(crate::sys::loopback_up(), "bring up the loopback interface")?;
    }
    make_private()?;
    // A bind of the root onto itself belongs to this mount namespace; the copy
    // of the shim's mount is locked in a user namespace, and pivot_root
    // refuses a locked new root.
    step(
        nix::mount::mount(
            Some(plan.rootfs_dir),
            plan.rootfs_dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err),
        "bind the root file system",
    )?;
    let root = plan.rootfs_dir;
    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(root, m)?;
    }
    let devices_bound = wants(LinuxNamespaceType::User);
    make_devices(root, devices_bound)?;
    if fds.terminal {
        bind_console(root, fds.stdio[0].as_fd())?;
    }
    pivot(root)?;
    let linux = spec.linux().clone().unwrap_or_default();
    if wants(LinuxNamespaceType::Uts) {
        if let Some(name) = spec.hostname() {
            step(
                nix::unistd::sethostname(name).map_err(nix_err),
                "set the hostname",
            )?;
        }
        if let Some(name) = spec.domainname() {
            step(
                fs::write("/proc/sys/kernel/domainname", name),
                "set the domain name",
            )?;
        }
    }
    if let Some(sysctls) = linux.sysctl() {
        let mut keys: Vec<_> = sysctls.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            step(fs::write(&path, value), format!("set sysctl {key}"))?;
        }
    }
    for path in linux.masked_paths().clone().unwrap_or_default() {
        mask(Path::new(&path))?;
    }
    for path in linux.readonly_paths().clone().unwrap_or_default() {
        readonly(Path::new(&path))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        step(
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(nix_err),
            "make the root file system read-only",
        )?;
    }
    let process = spec.process().clone().unwrap_or_default();
    for rl in process.rlimits().clone().unwrap_or_default() {
        set_rlimit(rl.typ(), rl.soft(), rl.hard())?;
    }
    if let Some(adj) = process.oom_score_adj() {
        step(
            fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
                if e.raw_os_error() == Some(libc::EACCES) {
                    io::Error::new(
                        e.kind(),
                        "lowering it needs CAP_SYS_RESOURCE, which this host does not grant",
                    )
                } else {
                    e
                }
            }),
            format!("set oom_score_adj to {adj}"),
        )?;
    }
    step(nix::unistd::setsid().map_err(nix_err), "start a session")?;
    let [stdin, stdout, stderr] = fds.stdio;
    step(
        nix::unistd::dup2_stdin(&stdin).map_err(nix_err),
        "set up stdin",
    )?;
    step(
        nix::unistd::dup2_stdout(&stdout).map_err(nix_err),
        "set up stdout",
    )?;
    step(
        nix::unistd::dup2_stderr(&stderr).map_err(nix_err),
        "set up stderr",
    )?;
    drop((stdin, stdout, stderr));
    if fds.terminal {
        step(
            rustix::process::ioctl_tiocsctty(rustix::stdio::stdin()),
            "make the terminal the controlling one",
        )?;
    }

    if !joined {
        join_cgroup(&mut sync, wants(LinuxNamespaceType::Cgroup))?;
    }
    drop(sync);
    exec_process(&process, plan.user, plan.seccomp, plan.init)
}

/// Reads the shim's next sync byte, which must be `expected`.
fn wait_for_shim(sync: &mut fs::File, expected: u8) -> Result<(), StepError> {
    let mut byte = [0u8; 1];
    let n = step(sync.read(&mut byte), "wait for the shim")?;
    if n != 1 || byte[0] != expected {
        return Err(StepError {
            step: "wait for the shim".into(),
            source: io::Error::from(io::ErrorKind::UnexpectedEof),
        });
    }
    Ok(())
}

/// Waits until the shim has put this process in its cgroup, then creates the
/// cgroup namespace (rooted there) when the spec asks for one.
fn join_cgroup(sync: &mut fs::File, new_namespace: bool) -> Result<(), StepError> {
    wait_for_shim(sync, b'g')?;
    if new_namespace {
        step(
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(nix_err),
            "create the cgroup namespace",
        )?;
    }
    Ok(())
}

/// Becomes the container's process: user and groups, capabilities, working
/// directory, `no_new_privs`, seccomp, then `execve` (with `init`, after a
/// fork that leaves this process as a reaping pid 1). Shared by the init and
/// by `exec` in a running container.
pub(crate) fn exec_process(
    process: &oci_spec::runtime::Process,
    user: Option<&str>,
    seccomp: Option<&Program>,
    init: bool,
) -> Result<Never, StepError> {
    // With no_new_privs the filter goes on last, right before exec, so it
    // never sees the setup; without it, installing a filter needs
    // CAP_SYS_ADMIN, so it goes on before the user switch drops that (runc's
    // order).
    let late_seccomp = process.no_new_privileges().unwrap_or(false);
    if let (false, Some(program)) = (late_seccomp, seccomp) {
        step(
            super::seccomp::apply(program).map_err(io::Error::other),
            "apply the seccomp filter",
        )?;
    }
    // Who the process runs as.
    let mut uid = process.user().uid();
    let mut gid = process.user().gid();
    let mut groups: Vec<u32> = process.user().additional_gids().clone().unwrap_or_default();
    let mut home = None;
    if let Some(user) = user {
        let resolved = step(
            user::resolve(user, Path::new("/etc/passwd"), Path::new("/etc/group")),
            format!("resolve user {user:?}"),
        )?;
        uid = resolved.uid;
        gid = resolved.gid;
        groups.extend(resolved.groups);
        home = resolved.home;
    }
    groups.sort_unstable();
    groups.dedup();
    let caps = process.capabilities().clone().unwrap_or_default();
    // Drop what the bounding set does not keep while still privileged.
    let bounding = to_caps(caps.bounding());
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            step(
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(caps_err),
                format!("drop {cap} from the bounding set"),
            )?;
        }
    }
    step(
        nix::sys::prctl::set_keepcaps(true).map_err(nix_err),
        "keep capabilities across the user switch",
    )?;
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let setgroups_allowed = fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if setgroups_allowed {
        step(
            nix::unistd::setgroups(&gids).map_err(nix_err),
            "set supplementary groups",
        )?;
    }
    step(
        nix::unistd::setresgid(Gid::from_raw(gid), Gid::from_raw(gid), Gid::from_raw(gid))
            .map_err(nix_err),
        format!("switch to group {gid}"),
    )?;
    step(
        nix::unistd::setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
            .map_err(nix_err),
        format!("switch to user {uid}"),
    )?;
    step(
        nix::sys::prctl::set_keepcaps(false).map_err(nix_err),
        "keep capabilities across the user switch",
    )?;
    // Effective first: the kernel refuses a permitted set that leaves out
    // something still effective.
    for (set, wanted) in [
        (caps::CapSet::Effective, caps.effective()),
        (caps::CapSet::Permitted, caps.permitted()),
        (caps::CapSet::Inheritable, caps.inheritable()),
    ] {
        step(
            caps::set(None, set, &to_caps(wanted)).map_err(caps_err),
            format!("set the {set:?} capabilities"),
        )?;
    }
    let ambient = to_caps(caps.ambient());
    step(
        caps::clear(None, caps::CapSet::Ambient).map_err(caps_err),
        "clear ambient capabilities",
    )?;
    for cap in ambient {
        step(
            caps::raise(None, caps::CapSet::Ambient, cap).map_err(caps_err),
            format!("raise ambient {cap}"),
        )?;
    }
    let cwd = process.cwd();
    step(
        std::env::set_current_dir(cwd),
        format!("change to the working directory {}", cwd.display()),
    )?;
    if process.no_new_privileges().unwrap_or(false) {
        step(
            nix::sys::prctl::set_no_new_privs().map_err(nix_err),
            "set no_new_privs",
        )?;
    }

    // The program and its environment.
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home.unwrap_or_else(|| if uid == 0 { "/root".into() } else { "/".into() });
        env.push(format!("HOME={home}"));
    }
    let args = process.args().clone().unwrap_or_default();
    let Some(program) = args.first() else {
        return Err(StepError {
            step: "start the process".into(),
            source: invalid(
                "no command given: the image has no CMD or ENTRYPOINT and none was given",
            ),
        });
    };
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(super::DEFAULT_PATH)
        .to_string();
    let exe = step(
        find_program(program, &path_var),
        format!("find {program:?}"),
    )?;
    let c_exe = cstring(exe.as_os_str().as_bytes())?;
    let c_args = args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;

    if init {
        // Stay as pid 1: the program runs as our child.
        // SAFETY: this process is single-threaded (cloned from the
        // single-threaded shim), so the child may do anything.
        let forked = unsafe { crate::sys::fork() };
        if let Some(child) = step(forked, "fork the program under the init")? {
            // The init never execs: it closes what it inherited besides
            // stdio itself, or the shim would wait forever for the start
            // pipe to close (it closes when the program's exec succeeds).
            let _ = crate::sys::close_from(3);
            reap_as_init(child)
        }
    }
    step(reset_signals(), "reset signal handling")?;
    // Only stdio crosses into the program (runc closes the rest as well).
    step(
        crate::sys::cloexec_from(3),
        "mark inherited files close-on-exec",
    )?;
    if let (true, Some(program)) = (late_seccomp, seccomp) {
        step(
            super::seccomp::apply(program).map_err(io::Error::other),
            "apply the seccomp filter",
        )?;
    }
    let err = nix::unistd::execve(&c_exe, &c_args, &c_env).map_err(nix_err);
    Err(StepError {
        step: format!("exec {}", exe.display()),
        source: match err {
            Ok(never) => match never {},
            Err(e) => e,
        },
    })
}

fn cstring(bytes: &[u8]) -> Result<CString, StepError> {
    CString::new(bytes).map_err(|_| StepError {
        step: "prepare the command line".into(),
        source: invalid("an argument or variable contains a NUL byte"),
    })
}

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

fn to_caps(set: &Option<oci_spec::runtime::Capabilities>) -> HashSet<caps::Capability> {
    set.iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .collect()
}

/// Resets every signal to its default disposition and unblocks all of them:
/// the shim ignores some and blocks others, and both survive `execve`.
fn reset_signals() -> io::Result<()> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code, so no handler can run
        // with broken invariants.
        unsafe { signal::signal(sig, SigHandler::SigDfl) }.map_err(nix_err)?;
    }
    signal::sigprocmask(
        signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )
    .map_err(nix_err)
}

/// pid 1 with `--init`: forwards every catchable signal to the program, reaps
/// every orphan that is reparented to it, and exits with the program's status.
fn reap_as_init(child: i32) -> ! {
    let mut all = SigSet::all();
    all.remove(Signal::SIGKILL);
    all.remove(Signal::SIGSTOP);
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_SETMASK, Some(&all), None);
    let child = nix::unistd::Pid::from_raw(child);
    // The program may have ended before SIGCHLD was blocked: with its
    // default disposition the signal was discarded then, and waiting for
    // it would wait forever (`sh -c "exit 3"` under load did). So reap
    // first, then after every SIGCHLD.
    loop {
        reap_children(child);
        loop {
            let sig = match all.wait() {
                Ok(sig) => sig,
                Err(_) => continue,
            };
            if sig == Signal::SIGCHLD {
                break;
            }
            let _ = signal::kill(child, sig);
        }
    }
}

/// Reaps every child that ended; exits with the program's status when
/// `child` is one of them.
fn reap_children(child: nix::unistd::Pid) {
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::Exited(pid, code)) if pid == child => {
                crate::sys::exit_now(code)
            }
            Ok(nix::sys::wait::WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                crate::sys::exit_now(128 + sig as i32)
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Finds `program` like `execvp` does, in the container's `PATH`.
fn find_program(program: &str, path: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("executable file not found in $PATH ({path})"),
    ))
}

fn set_rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<(), StepError> {
    use nix::sys::resource::Resource;
    let resource = match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    };
    step(
        nix::sys::resource::setrlimit(resource, soft, hard).map_err(|e| {
            let (_, current_hard) = nix::sys::resource::getrlimit(resource).unwrap_or((0, 0));
            if e == nix::Error::EPERM && hard > current_hard {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the hard limit {hard} is above this host's {current_hard}, and raising it needs \
                         CAP_SYS_RESOURCE, which this host does not grant"
                    ),
                )
            } else {
                nix_err(e)
            }
        }),
        format!("set {typ}"),
    )
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Creates the mount points of the spec's mounts in the root file system,
/// from the shim, which is real root: in a user namespace the container's
/// root cannot create files in directories its mapping does not own.
/// Mount points below `/dev`, `/proc` and `/sys` live on file systems the
/// container mounts itself and are made there.
pub(crate) fn prepare_mount_points(spec: &Spec, root: &Path) -> io::Result<()> {
    let root_fd = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        if ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| dest.starts_with(p) && dest != Path::new(p))
        {
            continue;
        }
        let is_dir = match (m.typ().as_deref(), m.source()) {
            (Some("bind") | None, Some(source)) => {
                fs::metadata(source).map(|m| m.is_dir()).unwrap_or(true)
            }
            _ => true,
        };
        open_target(&root_fd, dest, is_dir)?;
    }
    Ok(())
}

/// Makes every mount private so nothing propagates back to the host. The
/// root file system itself was mounted by the shim in its own mount
/// namespace, which this one copied.
fn make_private() -> Result<(), StepError> {
    step(
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(nix_err),
        "make mounts private",
    )
}

/// Opens (creating what is missing) `dest` below `root` without ever leaving
/// it: symlinks in the image resolve as if `root` were `/`.
fn open_target(root: &OwnedFd, dest: &Path, dir: bool) -> io::Result<OwnedFd> {
    let rel: PathBuf = dest
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rel.as_os_str().is_empty() {
        return Ok(rfs::openat2(
            root,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?);
    }
    // Create the parents one at a time, each resolved inside the root.
    let mut sofar = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        sofar.push(part);
        let last = i + 1 == parts.len();
        match rfs::openat2(
            root,
            &sofar,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        ) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {
                let parent = match sofar.parent() {
                    Some(p) if !p.as_os_str().is_empty() => rfs::openat2(
                        root,
                        p,
                        OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                        RESOLVE,
                    )?,
                    _ => rfs::openat2(
                        root,
                        ".",
                        OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                        RESOLVE,
                    )?,
                };
                let name = part.as_os_str();
                if last && !dir {
                    let f = rfs::openat(
                        &parent,
                        name,
                        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o644),
                    )?;
                    drop(f);
                } else {
                    match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let fd = rfs::openat2(
                    root,
                    &sofar,
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE,
                )?;
                if last {
                    return Ok(fd);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from(io::ErrorKind::NotFound))
}

fn proc_fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Mount flags and the data string from an OCI mount's fstab-style options.
fn parse_options(options: &[String]) -> (MsFlags, MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        match opt.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" | "dev" | "exec" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "private" => propagation = MsFlags::MS_PRIVATE,
            "rprivate" => propagation = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "shared" => propagation = MsFlags::MS_SHARED,
            "rshared" => propagation = MsFlags::MS_SHARED | MsFlags::MS_REC,
            "slave" => propagation = MsFlags::MS_SLAVE,
            "rslave" => propagation = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "unbindable" => propagation = MsFlags::MS_UNBINDABLE,
            "runbindable" => propagation = MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    (flags, propagation, data)
}

fn mount_one(root: &Path, m: &Mount) -> Result<(), StepError> {
    let dest = m.destination();
    let what = format!("mount {}", dest.display());
    let typ = m.typ().clone().unwrap_or_else(|| "bind".into());
    let options = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&options);
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let root_fd = step(
        rfs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
        "open the root file system",
    )?;
    if typ == "cgroup" {
        // cgroup v2 is mounted whole (the cgroup namespace shows only the
        // container's subtree); v1 controllers are left out of the view.
        let fd = step(open_target(&root_fd, dest, true), &what)?;
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            step(
                nix::mount::mount(
                    Some("cgroup2"),
                    proc_fd_path(&fd).as_str(),
                    Some("cgroup2"),
                    flags & !MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(nix_err),
                &what,
            )?;
        }
        return Ok(());
    }
    if is_bind {
        let source = m.source().clone().unwrap_or_default();
        let meta = step(
            fs::metadata(&source),
            format!("{what}: source {}", source.display()),
        )?;
        let fd = step(open_target(&root_fd, dest, meta.is_dir()), &what)?;
        let target = proc_fd_path(&fd);
        step(
            nix::mount::mount(
                Some(source.as_path()),
                target.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | (flags & MsFlags::MS_REC),
                None::<&str>,
            )
            .map_err(nix_err),
            &what,
        )?;
        // Bind mounts take flags only on a remount; reopen the target so the
        // remount applies to the new mount, not the one under it.
        let fd = step(open_target(&root_fd, dest, meta.is_dir()), &what)?;
        let target = proc_fd_path(&fd);
        let remount = flags & !(MsFlags::MS_REC | MsFlags::MS_BIND);
        if !remount.is_empty() {
            step(
                nix::mount::mount(
                    None::<&str>,
                    target.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | remount,
                    None::<&str>,
                )
                .map_err(nix_err),
                format!("{what} read-only"),
            )?;
        }
        if !propagation.is_empty() {
            step(
                nix::mount::mount(
                    None::<&str>,
                    target.as_str(),
                    None::<&str>,
                    propagation,
                    None::<&str>,
                )
                .map_err(nix_err),
                format!("{what}: propagation"),
            )?;
        }
        return Ok(());
    }
    let fd = step(open_target(&root_fd, dest, true), &what)?;
    let target = proc_fd_path(&fd);
    let source = m
        .source()
        .clone()
        .unwrap_or_else(|| PathBuf::from(typ.as_str()));
    let data = data.join(",");
    let result = nix::mount::mount(
        Some(source.as_path()),
        target.as_str(),
        Some(typ.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    );
    match result {
        Ok(()) => Ok(()),
        // sysfs cannot be mounted in a user namespace that does not own the
        // network namespace; runc binds the host's read-only instead.
        Err(nix::Error::EPERM) if typ == "sysfs" => step(
            nix::mount::mount(
                Some("/sys"),
                target.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(nix_err),
            &what,
        ),
        Err(e) => step(Err(nix_err(e)), &what),
    }
}

/// The device nodes every container gets (Docker's list), and the usual
/// symlinks. In a user namespace nodes cannot be made, so the host's are bound.
fn make_devices(root: &Path, bind: bool) -> Result<(), StepError> {
    const NODES: [(&str, u64, u64); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    let dev = root.join("dev");
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let result = (|| {
        for (name, major, minor) in NODES {
            let path = dev.join(name);
            if bind {
                step(fs::File::create(&path), format!("create /dev/{name}"))?;
                step(
                    nix::mount::mount(
                        Some(Path::new("/dev").join(name).as_path()),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(nix_err),
                    format!("bind /dev/{name}"),
                )?;
            } else {
                let _ = fs::remove_file(&path);
                step(
                    nix::sys::stat::mknod(
                        &path,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::from_bits_truncate(0o666),
                        nix::sys::stat::makedev(major, minor),
                    )
                    .map_err(nix_err),
                    format!("create /dev/{name}"),
                )?;
            }
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            match std::os::unix::fs::symlink(target, dev.join(link)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return step(Err(e), format!("link /dev/{link}")),
            }
        }
        Ok(())
    })();
    nix::sys::stat::umask(old);
    result
}

/// Binds the pty slave over `/dev/console`.
fn bind_console(root: &Path, slave: BorrowedFd<'_>) -> Result<(), StepError> {
    let console = root.join("dev/console");
    step(fs::File::create(&console), "create /dev/console")?;
    let source = format!("/proc/self/fd/{}", slave.as_raw_fd());
    step(
        nix::mount::mount(
            Some(source.as_str()),
            &console,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err),
        "bind /dev/console",
    )
}

/// `pivot_root(".", ".")` then detaching the old root, which leaves no
/// directory of the host behind (runc's trick).
fn pivot(root: &Path) -> Result<(), StepError> {
    step(
        std::env::set_current_dir(root),
        "enter the root file system",
    )?;
    step(
        nix::unistd::pivot_root(".", ".").map_err(nix_err),
        "pivot_root",
    )?;
    // The old root is now stacked on "."; make it a slave so the unmount does
    // not propagate to the host, then drop it.
    step(
        nix::mount::mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err),
        "detach the old root",
    )?;
    step(
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(nix_err),
        "detach the old root",
    )?;
    step(std::env::set_current_dir("/"), "enter the new root")
}

/// Hides a path: `/dev/null` over files, an empty read-only tmpfs over
/// directories. Missing paths are fine.
fn mask(path: &Path) -> Result<(), StepError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return step(Err(e), format!("mask {}", path.display())),
    };
    let result = if meta.is_dir() {
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k,nr_inodes=1"),
        )
    } else {
        nix::mount::mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    step(result.map_err(nix_err), format!("mask {}", path.display()))
}

/// Makes a path read-only with a bind mount onto itself. Missing paths are fine.
fn readonly(path: &Path) -> Result<(), StepError> {
    if !path.exists() {
        return Ok(());
    }
    let what = format!("make {} read-only", path.display());
    step(
        nix::mount::mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(nix_err),
        &what,
    )?;
    step(
        nix::mount::mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(nix_err),
        &what,
    )
}

/// Whether this process is already in the namespace `file` refers to.
fn already_in(file: &fs::File, typ: LinuxNamespaceType) -> bool {
    use std::os::unix::fs::MetadataExt;
    let name = match typ {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        _ => return false,
    };
    match (
        file.metadata(),
        fs::metadata(format!("/proc/self/ns/{name}")),
    ) {
        (Ok(target), Ok(own)) => target.dev() == own.dev() && target.ino() == own.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "noexec",
            "rbind",
            "ro",
            "rprivate",
            "mode=755",
            "size=65536k",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, prop, data) = parse_options(&opts);
        assert!(flags.contains(
            MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_BIND
                | MsFlags::MS_REC
                | MsFlags::MS_RDONLY
        ));
        assert_eq!(prop, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(data, vec!["mode=755", "size=65536k"]);
    }

    #[test]
    fn programs_are_found_in_path_or_taken_as_paths() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(find_program("tool", &path).unwrap(), exe);
        assert_eq!(find_program("./x", &path).unwrap(), PathBuf::from("./x"));
        assert!(find_program("missing", &path).is_err());
    }
}
