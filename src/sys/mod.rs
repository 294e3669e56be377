//! The few system calls no crate wraps, behind small typed functions. This is
//! the only module with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What `clone3` returned in the process that called it.
#[derive(Debug)]
pub enum Cloned {
    /// In the child.
    Child,
    /// In the parent: the child's pid and a pidfd for it.
    Parent {
        /// The child's pid, as the caller's pid namespace sees it.
        pid: i32,
        /// A pidfd referring to the child.
        pidfd: OwnedFd,
    },
}

/// Creates a child process like `fork(2)`, in new namespaces (`CLONE_NEW*`
/// bits of `flags`) and, when `cgroup` is given (cgroup v2), directly in that
/// cgroup. The child gets `SIGCHLD` as its exit signal.
///
/// # Safety
///
/// As with `fork`, the child runs with a copy of the parent's memory but only
/// the calling thread: the caller must be single-threaded, or the child must
/// only call async-signal-safe functions until it execs.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Cloned> {
    let mut pidfd: libc::c_int = -1;
    let mut args = libc::clone_args {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::from_mut(&mut pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    if let Some(fd) = cgroup {
        // CLONE_INTO_CGROUP is 0x200000000 (linux/sched.h); libc's constant
        // is a truncated c_int.
        args.flags |= 0x2_0000_0000;
        args.cgroup =
            u64::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    }
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack
    // given the child continues on a copy of this stack like fork, which the
    // caller's contract makes sound.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::from_mut(&mut args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Cloned::Child),
        pid => {
            let pid =
                i32::try_from(pid).map_err(|_| io::Error::other("clone3 returned a bad pid"))?;
            // SAFETY: CLONE_PIDFD made the kernel store a new, owned fd here.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned::Parent { pid, pidfd })
        }
    }
}

/// Forks the calling process.
///
/// # Safety
///
/// The caller must be single-threaded, or the child must only call
/// async-signal-safe functions until it execs or exits.
pub unsafe fn fork() -> io::Result<Option<i32>> {
    // SAFETY: forwarded to the caller's contract.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value of the type.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union was filled with flags by the call above.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // IFF_UP is 1: it fits the short the kernel uses for these flags.
    req.ifr_ifru.ifru_flags = flags | 1;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Exits the calling process at once, without running destructors or atexit
/// handlers (what a forked child that failed must do).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// Takes ownership of an fd this process inherited at a fixed number, if it
/// is open, and marks it close-on-exec. Call once per number, early, before anything else could open a
/// file at that number.
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD on any number is harmless; it only tells whether it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: F_SETFD on an open fd only changes its close-on-exec flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return None;
    }
    // SAFETY: the fd is open and, by this function's contract, inherited and
    // owned by nobody else in this process.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Ignores the given signals in this process (their disposition survives
/// `execve`, so a child that execs must reset them).
pub fn ignore_signals(signals: &[libc::c_int]) {
    for &sig in signals {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Spawns `cmd` with `fds` placed at the given numbers in the child (each
/// `(fd, number)`), in a new session. Other fds are not inherited (they are
/// close-on-exec, as the standard library opens them).
pub fn spawn_with_fds(
    cmd: &mut std::process::Command,
    fds: Vec<(OwnedFd, std::os::fd::RawFd)>,
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    const MAX: usize = 8;
    if fds.len() > MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many fds to pass",
        ));
    }
    let raw: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)> =
        fds.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect();
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // fcntl and setsid, which are async-signal-safe; `raw` is moved in and not
    // reallocated.
    unsafe {
        cmd.pre_exec(move || {
            // Move every source above the targets first, so a source number
            // equal to another target is not clobbered.
            let mut moved = [0; MAX];
            for (slot, &(src, _)) in moved.iter_mut().zip(&raw) {
                let high = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 100);
                if high < 0 {
                    return Err(io::Error::last_os_error());
                }
                *slot = high;
            }
            for (&high, &(_, target)) in moved.iter().zip(&raw) {
                if libc::dup2(high, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(fds);
    child
}

/// Waits, on the tokio reactor of the current runtime, until `fd` turns
/// readable: for a pidfd, until its process has exited. Must be called
/// within a tokio runtime.
pub async fn wait_readable(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: the `AsyncFd` owns `fd` and drops it last, so the descriptor
    // it registered stays open and refers to the same file for its whole
    // life (tokio's requirement for `register_with_interest`).
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
    };
    registered.readable().await.map(|_| ())
}

/// Returns free heap memory to the kernel (glibc's `malloc_trim`): for a
/// long-lived process after a set-up that allocated more than it keeps.
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator; it
    // touches no memory the program owns.
    unsafe { libc::malloc_trim(0) };
}

/// A classic eBPF instruction as the kernel reads it (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the rest of
/// the kernel's union is zero, which the padding provides.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    padding: [u8; 80],
}

/// The fields of `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    padding: [u8; 112],
}

/// Loads a cgroup device program and attaches it to the cgroup v2 directory
/// `cgroup` (the cgroup keeps it after the returned fd is closed).
pub fn attach_device_filter(cgroup: BorrowedFd<'_>, program: &[BpfInsn]) -> io::Result<OwnedFd> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        padding: [0; 80],
    };
    // SAFETY: `attr` is a valid, fully initialised prefix of bpf_attr for
    // BPF_PROG_LOAD whose pointers (program, license, log) outlive the call;
    // its size is passed so the kernel reads no further.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)])
            .into_owned();
        return Err(io::Error::new(
            err.kind(),
            format!("loading the device filter: {err} {text}")
                .trim()
                .to_string(),
        ));
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf returned a bad fd"))?;
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let attach = ProgAttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        attach_bpf_fd: u32::try_from(prog.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        padding: [0; 112],
    };
    // SAFETY: `attach` is a valid bpf_attr for BPF_PROG_ATTACH; the fds it
    // names are open for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            std::ptr::from_ref(&attach),
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(prog)
}

/// Marks every fd from `first` up close-on-exec (`close_range` with
/// `CLOSE_RANGE_CLOEXEC`), so nothing this process inherited by accident (a
/// build tool's jobserver pipe, a caller's sockets) reaches a program it
/// execs.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds;
    // it closes nothing and touches no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd from `first` up. Only for the start of a long-running
/// process (the daemon), before it opens anything of its own: an fd it
/// inherited by accident (a caller's pipe) would otherwise stay open for its
/// whole life and keep that caller waiting for an end of file.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: called before this process holds any fd of its own above
    // `first`, so no owner is left with a closed descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread that has joined the network namespace at
/// `netns` (a `/run/netns/NAME` or `/proc/PID/ns/net` path) and returns
/// its result. Only that thread changes namespace, and it ends with `f`, so
/// the caller's own namespaces never change. Sockets `f` opens belong to
/// that namespace, `/proc/sys/net` files it opens are that namespace's, and
/// processes it spawns start in it.
pub fn in_netns<T: Send>(netns: &std::path::Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        let joined = scope
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(result) => result,
            // A panic in `f` is the caller's panic: carry it over.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A new random id as Docker makes them: 32 random bytes in hex. Without
/// /dev/urandom it falls back to time and pid (ids only need to be unique on
/// this host).
pub fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        use sha2::Digest;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes = sha2::Sha256::digest(seed.as_bytes()).into();
    }
    hex::encode(bytes)
}
