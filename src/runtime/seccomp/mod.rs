//! Seccomp profiles: Docker's default, Docker/OCI JSON profiles, compiled to BPF.
//!
//! This module owns the way from a seccomp profile to an installed filter:
//!
//! 1. [`default_profile`], [`parse_profile`] and [`load_profile`] give a
//!    [`Profile`] in Docker's format (what `docker run --security-opt
//!    seccomp=…` takes; plain OCI `linux.seccomp` JSON is a subset of it).
//! 2. [`resolve`] applies the profile's `includes`/`excludes` for one
//!    container's capabilities, architecture and kernel, giving the OCI
//!    [`LinuxSeccomp`] the container's runtime spec carries, as Docker does.
//! 3. [`compile`] turns that into a [`Program`] for the host architecture:
//!    plain data, made before the container's init forks or execs.
//! 4. [`apply`] installs a program on the calling thread. It allocates
//!    nothing and only makes the `seccomp(2)` call, so it may run after
//!    `fork` and right before `execve`.
//!
//! It must never change the calling process in any other way: it does not
//! set `no_new_privs`, drop capabilities or touch other threads (unless the
//! profile asks for `SECCOMP_FILTER_FLAG_TSYNC`).
//!
//! # Why the BPF is generated here
//!
//! A Docker profile mixes actions: most rules allow, the default returns
//! `EPERM`, `clone3` returns `ENOSYS`, a custom profile may trap or log.
//! seccompiler's `SeccompFilter` has one match action and one mismatch
//! action per filter, so a profile would become a stack of filters, one per
//! action. The kernel runs every filter on every syscall and keeps the most
//! severe verdict (`KILL` > `TRAP` > `ERRNO` > `TRACE` > `LOG` > `ALLOW`;
//! between two `ERRNO`s, the most recently installed filter's data), which
//! gives a different answer from libseccomp's when two rules for the same
//! syscall overlap, costs one filter run per action, and counts every
//! filter's length again against the kernel's limit on a process's filters.
//! So [`compile`] emits a single filter in which each rule returns its own
//! action; see the `bpf` module for its layout. seccompiler is not used.
//!
//! # Semantics, matching runc and libseccomp
//!
//! - Rules for the same syscall are alternatives (OR); the conditions of one
//!   rule must all hold (AND). Rules with argument conditions are tried
//!   before an unconditional rule for the same syscall, in the order written;
//!   the first that matches decides. Rules after an unconditional one can
//!   never match and are dropped.
//! - A rule whose verdict (action and errno) is the default's is dropped, as
//!   runc does (libseccomp refuses such rules).
//! - A rule with several conditions on the same argument is split into one
//!   rule per condition, as runc does ("revert to old behavior"); libseccomp
//!   would otherwise reject it.
//! - Argument comparisons are on the full 64-bit value; `SCMP_CMP_MASKED_EQ`
//!   is `arg & value == valueTwo`.
//! - `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` without `errnoRet` use `EPERM`.
//! - Syscall names this architecture does not have (`chown32` on x86_64,
//!   names newer than our tables) are skipped, as libseccomp does; they are
//!   listed by [`Program::skipped_syscalls`].
//! - Unless the default action allows, numbers above the largest syscall the
//!   profile names return `ENOSYS`, as runc's `patchbpf` arranges.
//! - Only the native ABI is translated: syscalls of another audit
//!   architecture (i386 binaries on x86_64, arm32 on aarch64) and x32
//!   syscalls kill the process, like libseccomp's bad-arch action. Docker's
//!   `archMap` lists those sub-architectures and [`resolve`] keeps them in
//!   `architectures`, but [`compile`] has no syscall tables for them, so
//!   32-bit binaries do not run under a filter from this module.
//! - `SCMP_ACT_NOTIFY` and `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` need a
//!   seccomp agent, which this runtime does not have: [`compile`] refuses
//!   them.

mod bpf;
mod profile;
mod syscalls;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use thiserror::Error;

pub use profile::{
    ArchMap, Gate, KernelVersion, KernelVersionError, Profile, ProfileError, Rule, default_profile,
    docker_arch_name, parse_profile, resolve,
};

/// The host's architecture as seccomp names it, when [`compile`] supports
/// it: x86_64 and aarch64.
#[cfg(target_arch = "x86_64")]
pub const HOST_ARCH: Option<Arch> = Some(Arch::ScmpArchX86_64);
/// The host's architecture as seccomp names it, when [`compile`] supports
/// it: x86_64 and aarch64.
#[cfg(target_arch = "aarch64")]
pub const HOST_ARCH: Option<Arch> = Some(Arch::ScmpArchAarch64);
/// The host's architecture as seccomp names it, when [`compile`] supports
/// it: x86_64 and aarch64.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const HOST_ARCH: Option<Arch> = None;

/// Where Linux publishes the running kernel's release (`uname -r`).
pub const OSRELEASE_PATH: &str = "/proc/sys/kernel/osrelease";

/// Everything that can go wrong loading, compiling or installing a filter.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The profile file could not be read.
    #[error("read seccomp profile {path}")]
    ReadProfile {
        /// The profile file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The profile file was read but is not a valid profile.
    #[error("load seccomp profile {path}")]
    LoadProfile {
        /// The profile file.
        path: PathBuf,
        /// The cause, with the line and column for JSON errors.
        #[source]
        source: ProfileError,
    },
    /// The running kernel's release could not be read.
    #[error("read kernel release from {path}")]
    ReadKernelVersion {
        /// The file read, normally [`OSRELEASE_PATH`].
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The running kernel's release is not a version.
    #[error("parse kernel release from {path}")]
    ParseKernelVersion {
        /// The file read, normally [`OSRELEASE_PATH`].
        path: PathBuf,
        /// The cause.
        #[source]
        source: KernelVersionError,
    },
    /// The host's architecture has no syscall table here.
    #[error("seccomp filters are not supported on {arch} (only x86_64 and aarch64)")]
    UnsupportedArch {
        /// The host architecture, as Rust names it.
        arch: &'static str,
    },
    /// The profile uses an action this runtime cannot carry out.
    #[error("seccomp action {action} is not supported (it needs a seccomp agent)")]
    UnsupportedAction {
        /// The action.
        action: LinuxSeccompAction,
    },
    /// The profile uses a filter flag this runtime cannot carry out.
    #[error("seccomp flag {flag} is not supported (it needs a seccomp agent)")]
    UnsupportedFlag {
        /// The flag.
        flag: LinuxSeccompFilterFlag,
    },
    /// An errno or trace value does not fit `SECCOMP_RET_DATA` (16 bits).
    #[error("seccomp return value {value} does not fit in 16 bits")]
    ReturnValueOutOfRange {
        /// The value.
        value: u32,
    },
    /// A rule compares an argument that does not exist (syscalls have 6).
    #[error("seccomp rule {rule} compares argument {index}; syscalls have arguments 0 to 5")]
    ArgumentIndex {
        /// Index of the rule in `syscalls`, from 0.
        rule: usize,
        /// The argument index.
        index: usize,
    },
    /// The filter is longer than the kernel accepts (`BPF_MAXINSNS`).
    #[error("seccomp filter has {instructions} instructions; the kernel accepts at most 4096")]
    TooLarge {
        /// The number of instructions.
        instructions: usize,
    },
    /// The filter could not be laid out in BPF's jump ranges; no profile
    /// the kernel could accept should get here.
    #[error("seccomp filter needs a conditional jump beyond 255 instructions")]
    JumpOutOfRange,
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed: `EACCES` means the caller
    /// has neither `no_new_privs` nor `CAP_SYS_ADMIN`, `EINVAL` a filter or
    /// flag the kernel refuses, `ENOMEM` too many filters.
    #[error("install seccomp filter")]
    Install(#[source] io::Error),
    /// With `SECCOMP_FILTER_FLAG_TSYNC`, another thread of the process could
    /// not take the filter.
    #[error("install seccomp filter: thread {tid} could not be synchronised")]
    ThreadSync {
        /// The thread that could not take the filter.
        tid: libc::c_long,
    },
}

/// Reads and parses a profile file, Docker's format or plain OCI
/// `linux.seccomp` JSON.
pub fn load_profile(path: &Path) -> Result<Profile, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::ReadProfile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_profile(&text).map_err(|source| SeccompError::LoadProfile {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the running kernel's version from `osrelease` (normally
/// [`OSRELEASE_PATH`]), for [`resolve`]'s `minKernel` checks.
pub fn read_kernel_version(osrelease: &Path) -> Result<KernelVersion, SeccompError> {
    let text =
        std::fs::read_to_string(osrelease).map_err(|source| SeccompError::ReadKernelVersion {
            path: osrelease.to_path_buf(),
            source,
        })?;
    text.parse()
        .map_err(|source| SeccompError::ParseKernelVersion {
            path: osrelease.to_path_buf(),
            source,
        })
}

/// A compiled filter, ready for [`apply`].
#[derive(Clone)]
pub struct Program {
    /// The BPF instructions; never empty, at most 4096.
    instructions: Vec<libc::sock_filter>,
    /// `instructions.len()`, as `sock_fprog` wants it.
    len: u16,
    /// `SECCOMP_FILTER_FLAG_*` bits for `seccomp(2)`.
    flags: libc::c_ulong,
    /// Names in the profile this architecture has no syscall for.
    skipped: Vec<String>,
}

impl Program {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.instructions
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits [`apply`] passes.
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }

    /// Syscall names of the profile that do not exist on this architecture,
    /// sorted; their rules were skipped.
    pub fn skipped_syscalls(&self) -> &[String] {
        &self.skipped
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.instructions.len())
            .field("flags", &self.flags)
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

/// What [`compile`] needs to know about an architecture.
struct Target {
    /// `AUDIT_ARCH_*`: the ELF machine, 64-bit and little-endian flags.
    audit_arch: u32,
    /// Whether syscall numbers may carry the x32 bit (x86_64).
    refuse_x32: bool,
    /// Names to numbers from `libc`, sorted.
    from_libc: &'static [(&'static str, u32)],
    /// Names to numbers `libc` lacks, sorted.
    from_kernel: &'static [(&'static str, u32)],
}

impl Target {
    fn number(&self, name: &str) -> Option<u32> {
        [self.from_libc, self.from_kernel]
            .into_iter()
            .find_map(|table| {
                table
                    .binary_search_by(|(entry, _)| (*entry).cmp(name))
                    .ok()
                    .map(|at| table[at].1)
            })
    }
}

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const HOST_TARGET: Option<Target> = Some(Target {
    audit_arch: 62 | 0x8000_0000 | 0x4000_0000,
    refuse_x32: true,
    from_libc: syscalls::x86_64::FROM_LIBC,
    from_kernel: syscalls::x86_64::FROM_KERNEL,
});
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const HOST_TARGET: Option<Target> = Some(Target {
    audit_arch: 183 | 0x8000_0000 | 0x4000_0000,
    refuse_x32: false,
    from_libc: syscalls::aarch64::FROM_LIBC,
    from_kernel: syscalls::aarch64::FROM_KERNEL,
});
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_TARGET: Option<Target> = None;

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// Compiles an OCI seccomp configuration (as [`resolve`] gives, or as a
/// runtime spec carries) to a BPF program for the host architecture. See
/// the module docs for the semantics.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let target = HOST_TARGET.ok_or(SeccompError::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })?;
    compile_for(seccomp, &target)
}

fn compile_for(seccomp: &LinuxSeccomp, target: &Target) -> Result<Program, SeccompError> {
    let flags = filter_flags(seccomp.flags().as_deref().unwrap_or_default())?;
    let (plan, skipped) = plan(seccomp, target)?;
    let instructions =
        bpf::generate(&plan).map_err(|bpf::JumpOutOfRange| SeccompError::JumpOutOfRange)?;
    let len = u16::try_from(instructions.len())
        .ok()
        .filter(|len| usize::from(*len) <= MAX_INSTRUCTIONS)
        .ok_or(SeccompError::TooLarge {
            instructions: instructions.len(),
        })?;
    Ok(Program {
        instructions,
        len,
        flags,
        skipped: skipped.into_iter().collect(),
    })
}

/// The `seccomp(2)` flags for the profile's `flags`.
fn filter_flags(flags: &[LinuxSeccompFilterFlag]) -> Result<libc::c_ulong, SeccompError> {
    flags.iter().try_fold(0, |bits, flag| {
        let bit = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::UnsupportedFlag { flag: *flag });
            }
        };
        Ok(bits | bit)
    })
}

/// `EPERM`, what `SCMP_ACT_ERRNO` and `SCMP_ACT_TRACE` return without
/// `errnoRet` (runc's `getAction`).
const DEFAULT_ERRNO: u32 = libc::EPERM.unsigned_abs();

/// The `SECCOMP_RET_*` value of an action.
fn action_ret(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<u32, SeccompError> {
    let with_data = |base: u32| {
        let value = errno_ret.unwrap_or(DEFAULT_ERRNO);
        if value > libc::SECCOMP_RET_DATA {
            return Err(SeccompError::ReturnValueOutOfRange { value });
        }
        Ok(base | value)
    };
    match action {
        LinuxSeccompAction::ScmpActAllow => Ok(libc::SECCOMP_RET_ALLOW),
        LinuxSeccompAction::ScmpActLog => Ok(libc::SECCOMP_RET_LOG),
        LinuxSeccompAction::ScmpActTrap => Ok(libc::SECCOMP_RET_TRAP),
        // libseccomp's SCMP_ACT_KILL is the thread-only kill.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            Ok(libc::SECCOMP_RET_KILL_THREAD)
        }
        LinuxSeccompAction::ScmpActKillProcess => Ok(libc::SECCOMP_RET_KILL_PROCESS),
        LinuxSeccompAction::ScmpActErrno => with_data(libc::SECCOMP_RET_ERRNO),
        LinuxSeccompAction::ScmpActTrace => with_data(libc::SECCOMP_RET_TRACE),
        LinuxSeccompAction::ScmpActNotify => Err(SeccompError::UnsupportedAction { action }),
    }
}

/// Converts one OCI argument condition.
fn condition(rule: usize, arg: &LinuxSeccompArg) -> Result<bpf::Condition, SeccompError> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|index| *index < 6)
        .ok_or(SeccompError::ArgumentIndex {
            rule,
            index: arg.index(),
        })?;
    let (compare, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (bpf::Compare::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (bpf::Compare::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (bpf::Compare::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (bpf::Compare::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (bpf::Compare::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (bpf::Compare::Ge, arg.value()),
        // libseccomp: `value` is the mask, `valueTwo` the expected bits.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            bpf::Compare::MaskedEq { mask: arg.value() },
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(bpf::Condition {
        index,
        compare,
        value,
    })
}

/// Decides the filter: which rules apply to which syscall number, in which
/// order. Returns the plan and the names skipped.
fn plan(
    seccomp: &LinuxSeccomp,
    target: &Target,
) -> Result<(bpf::Plan, BTreeSet<String>), SeccompError> {
    let default_action = seccomp.default_action();
    let default_ret = action_ret(default_action, seccomp.default_errno_ret())?;
    let mut syscalls: BTreeMap<u32, Vec<bpf::Rule>> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    let mut largest = None;

    for (index, syscall) in seccomp.syscalls().iter().flatten().enumerate() {
        let ret = action_ret(syscall.action(), syscall.errno_ret())?;
        let conditions = syscall
            .args()
            .iter()
            .flatten()
            .map(|arg| condition(index, arg))
            .collect::<Result<Vec<_>, _>>()?;
        let numbers: Vec<u32> = syscall
            .names()
            .iter()
            .filter_map(|name| {
                let number = target.number(name);
                if number.is_none() {
                    skipped.insert(name.clone());
                }
                number
            })
            .collect();
        largest = numbers.iter().copied().chain(largest).max();
        // runc leaves out rules that repeat the default action; libseccomp
        // refuses them.
        if ret == default_ret {
            continue;
        }
        // runc: conditions on the same argument more than once are
        // alternatives, each a rule of its own.
        let mut seen = [false; 6];
        let repeats = conditions
            .iter()
            .any(|c| std::mem::replace(&mut seen[usize::from(c.index)], true));
        let rules: Vec<bpf::Rule> = if repeats {
            conditions
                .iter()
                .map(|c| bpf::Rule {
                    conditions: vec![*c],
                    ret,
                })
                .collect()
        } else {
            vec![bpf::Rule { conditions, ret }]
        };
        for number in numbers {
            syscalls
                .entry(number)
                .or_default()
                .extend(rules.iter().cloned());
        }
    }

    for rules in syscalls.values_mut() {
        order_rules(rules);
    }
    let enosys_above = match default_action {
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog => None,
        _ => largest,
    };
    let plan = bpf::Plan {
        audit_arch: target.audit_arch,
        refuse_x32: target.refuse_x32,
        default_ret,
        enosys_above,
        syscalls,
    };
    Ok((plan, skipped))
}

/// Puts a syscall's rules in the order they are tried: conditional rules as
/// written, then the first unconditional rule; drops repeats and rules that
/// could never be reached.
fn order_rules(rules: &mut Vec<bpf::Rule>) {
    let unconditional = rules.iter().find(|r| r.conditions.is_empty()).cloned();
    let mut ordered: Vec<bpf::Rule> = Vec::with_capacity(rules.len());
    for rule in rules.drain(..).filter(|r| !r.conditions.is_empty()) {
        if !ordered.contains(&rule) {
            ordered.push(rule);
        }
    }
    ordered.extend(unconditional);
    *rules = ordered;
}

/// Installs `program` as a seccomp filter on the calling thread (and, with
/// `SECCOMP_FILTER_FLAG_TSYNC`, on all threads of the process). The filter
/// stays for the life of the thread and is inherited across `fork`, `clone`
/// and `execve`; filters only add up, never come off.
///
/// The caller needs either `no_new_privs` (`prctl(PR_SET_NO_NEW_PRIVS)`,
/// which this function does not set) or `CAP_SYS_ADMIN` in its user
/// namespace; otherwise the kernel answers `EACCES`. Like runc, the runtime
/// installs the filter before dropping capabilities when the container keeps
/// privileges, and after setting `no_new_privs` otherwise.
///
/// Async-signal-safe: it allocates nothing (the program was built by
/// [`compile`]) and makes one system call, so it may run in a child between
/// `fork` and `execve`. Errors carry the raw `errno`, which allocates
/// nothing either.
pub fn apply(program: &Program) -> Result<(), SeccompError> {
    let fprog = libc::sock_fprog {
        len: program.len,
        filter: program.instructions.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog.filter` points at `program.instructions`, which holds
    // exactly `fprog.len` initialised instructions (set together in
    // `compile_for`) and outlives this call. The kernel only reads the
    // program (`seccomp_prepare_user_filter` copies it in), so the `*mut`
    // that `sock_fprog` requires is never written through. `fprog` lives on
    // this stack frame for the duration of the call, and the other arguments
    // are integers.
    let result = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags,
            &raw const fprog,
        )
    };
    match result {
        0 => Ok(()),
        // With TSYNC the kernel returns the ID of a thread it could not sync.
        tid if tid > 0 => Err(SeccompError::ThreadSync { tid }),
        _ => Err(SeccompError::Install(io::Error::last_os_error())),
    }
}

#[cfg(test)]
mod tests {
    use caps::Capability;

    use super::*;

    /// The capabilities Docker gives a container by default.
    const DOCKER_CAPS: &[Capability] = &crate::runtime::DEFAULT_CAPABILITIES;

    const KERNEL: KernelVersion = KernelVersion::new(6, 8);
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | 1;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | 38;

    fn host() -> (Target, Arch) {
        (
            HOST_TARGET.expect("unit tests run on x86_64 or aarch64"),
            HOST_ARCH.expect("unit tests run on x86_64 or aarch64"),
        )
    }

    /// Compiles `seccomp` for the host and returns a function giving the
    /// verdict for a syscall by name.
    fn verdicts(seccomp: &LinuxSeccomp) -> impl Fn(&str, [u64; 6]) -> u32 + use<> {
        let (target, _) = host();
        let program = compile(seccomp).unwrap();
        move |name, args| {
            let nr = target
                .number(name)
                .unwrap_or_else(|| panic!("{name} has no number"));
            bpf::tests::run(program.instructions(), target.audit_arch, nr, args)
        }
    }

    fn docker_default(extra: &[Capability]) -> LinuxSeccomp {
        let caps: Vec<Capability> = DOCKER_CAPS.iter().chain(extra).copied().collect();
        resolve(&default_profile(), &caps, host().1, KERNEL)
    }

    fn custom(json: &str) -> LinuxSeccomp {
        resolve(&parse_profile(json).unwrap(), &[], host().1, KERNEL)
    }

    const NO_ARGS: [u64; 6] = [0; 6];
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWNS: u64 = 0x0002_0000;
    const SIGCHLD: u64 = 17;
    const AF_UNIX: u64 = 1;
    const AF_VSOCK: u64 = 40;

    #[test]
    fn docker_default_allows_ordinary_syscalls_and_denies_the_rest() {
        let verdict = verdicts(&docker_default(&[]));
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "futex",
            "mmap",
        ] {
            assert_eq!(verdict(name, NO_ARGS), ALLOW, "{name}");
        }
        for name in [
            "keyctl",
            "add_key",
            "unshare",
            "setns",
            "mount",
            "bpf",
            "io_uring_setup",
        ] {
            assert_eq!(verdict(name, NO_ARGS), EPERM, "{name}");
        }
        // CAP_SYS_CHROOT is among Docker's defaults, CAP_SYS_PTRACE is not,
        // but ptrace is allowed from Linux 4.8 on.
        assert_eq!(verdict("chroot", NO_ARGS), ALLOW);
        assert_eq!(verdict("ptrace", NO_ARGS), ALLOW);
        assert_eq!(verdict("kcmp", NO_ARGS), EPERM);
    }

    #[test]
    fn docker_default_checks_arguments() {
        let verdict = verdicts(&docker_default(&[]));
        assert_eq!(verdict("clone", [SIGCHLD, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict("clone", [SIGCHLD | CLONE_NEWUSER, 0, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(verdict("clone", [CLONE_NEWNS, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(verdict("clone3", NO_ARGS), ENOSYS);
        assert_eq!(verdict("socket", [AF_UNIX, 1, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict("socket", [AF_VSOCK, 1, 0, 0, 0, 0]), EPERM);
        for persona in [0, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(verdict("personality", [persona, 0, 0, 0, 0, 0]), ALLOW);
        }
        // ADDR_NO_RANDOMIZE, and a persona with high bits set.
        assert_eq!(verdict("personality", [0x0040000, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            verdict("personality", [0x1_0000_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
    }

    #[test]
    fn docker_default_with_sys_admin_allows_namespaces() {
        let verdict = verdicts(&docker_default(&[Capability::CAP_SYS_ADMIN]));
        for name in ["unshare", "setns", "mount", "clone3"] {
            assert_eq!(verdict(name, NO_ARGS), ALLOW, "{name}");
        }
        assert_eq!(verdict("clone", [CLONE_NEWUSER, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict("keyctl", NO_ARGS), EPERM);
    }

    #[test]
    fn syscalls_newer_than_the_profile_get_enosys() {
        let (target, _) = host();
        let program = compile(&docker_default(&[])).unwrap();
        let largest = target
            .from_libc
            .iter()
            .chain(target.from_kernel)
            .map(|e| e.1)
            .max();
        let beyond = largest.unwrap() + 10;
        assert_eq!(
            bpf::tests::run(program.instructions(), target.audit_arch, beyond, NO_ARGS),
            ENOSYS
        );
        // But not when everything is allowed by default.
        let allowing = custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        );
        let program = compile(&allowing).unwrap();
        assert_eq!(
            bpf::tests::run(program.instructions(), target.audit_arch, beyond, NO_ARGS),
            ALLOW
        );
    }

    #[test]
    fn unknown_names_are_skipped_and_reported() {
        let seccomp = custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["getpid", "no_such_syscall", "s390_runtime_instr"],
                 "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        let program = compile(&seccomp).unwrap();
        assert_eq!(
            program.skipped_syscalls(),
            ["no_such_syscall", "s390_runtime_instr"]
        );
        assert_eq!(verdicts(&seccomp)("getpid", NO_ARGS), ALLOW);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn docker_default_skips_only_other_architectures_names_on_x86_64() {
        let program = compile(&docker_default(&[])).unwrap();
        let skipped = program.skipped_syscalls();
        // 32-bit variants and multiplexers of other ABIs.
        for name in [
            "chown32",
            "_llseek",
            "socketcall",
            "mmap2",
            "fstat64",
            "clock_gettime64",
        ] {
            assert!(skipped.iter().any(|s| s == name), "{name} was not skipped");
        }
        // Everything x86_64 has must resolve.
        for name in [
            "io_pgetevents",
            "futex_wake",
            "cachestat",
            "uretprobe",
            "arch_prctl",
        ] {
            assert!(!skipped.iter().any(|s| s == name), "{name} was skipped");
        }
    }

    #[test]
    fn each_rule_keeps_its_own_action_and_errno() {
        let verdict = verdicts(&custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["gettid"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getppid"], "action": "SCMP_ACT_KILL"},
                {"names": ["getpgrp"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["getuid"], "action": "SCMP_ACT_LOG"},
                {"names": ["getgid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}
            ]}"#,
        ));
        assert_eq!(verdict("mkdirat", NO_ARGS), libc::SECCOMP_RET_ERRNO | 13);
        assert_eq!(verdict("getpid", NO_ARGS), EPERM);
        assert_eq!(verdict("gettid", NO_ARGS), libc::SECCOMP_RET_TRAP);
        assert_eq!(verdict("getppid", NO_ARGS), libc::SECCOMP_RET_KILL_THREAD);
        assert_eq!(verdict("getpgrp", NO_ARGS), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(verdict("getuid", NO_ARGS), libc::SECCOMP_RET_LOG);
        assert_eq!(verdict("getgid", NO_ARGS), libc::SECCOMP_RET_TRACE | 7);
        assert_eq!(verdict("read", NO_ARGS), ALLOW);
    }

    #[test]
    fn conditional_rules_are_tried_before_the_unconditional_one() {
        // Written general-first, the specific rule still applies.
        let verdict = verdicts(&custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
                 "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
        ));
        assert_eq!(verdict("socket", [AF_UNIX, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            verdict("socket", [AF_VSOCK, 0, 0, 0, 0, 0]),
            libc::SECCOMP_RET_ERRNO | 97
        );
    }

    #[test]
    fn repeated_argument_conditions_are_alternatives() {
        // As runc reads it: personality(0) or personality(8).
        let verdict = verdicts(&custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
        ));
        assert_eq!(verdict("personality", [0, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict("personality", [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(verdict("personality", [9, 0, 0, 0, 0, 0]), EPERM);
    }

    #[test]
    fn conditions_on_different_arguments_must_all_hold() {
        let verdict = verdicts(&custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 15, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"},
                    {"index": 2, "value": 17, "op": "SCMP_CMP_LE"}]}
            ]}"#,
        ));
        // AF_INET, SOCK_STREAM | SOCK_CLOEXEC, protocol 6.
        assert_eq!(verdict("socket", [2, 0x80001, 6, 0, 0, 0]), ALLOW);
        assert_eq!(verdict("socket", [10, 0x80001, 6, 0, 0, 0]), EPERM);
        assert_eq!(verdict("socket", [2, 2, 6, 0, 0, 0]), EPERM);
        assert_eq!(verdict("socket", [2, 1, 18, 0, 0, 0]), EPERM);
    }

    #[test]
    fn rules_repeating_the_default_action_are_dropped() {
        // With the EPERM rule first, runc would still let mkdir through.
        let verdict = verdicts(&custom(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ALLOW"}
            ]}"#,
        ));
        assert_eq!(verdict("mkdirat", NO_ARGS), ALLOW);
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        let notify = custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            compile(&notify),
            Err(SeccompError::UnsupportedAction { .. })
        ));
        let flag = custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
        );
        assert!(matches!(
            compile(&flag),
            Err(SeccompError::UnsupportedFlag { .. })
        ));
        let argument = custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(matches!(
            compile(&argument),
            Err(SeccompError::ArgumentIndex { rule: 0, index: 6 })
        ));
        let errno = custom(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}"#);
        assert!(matches!(
            compile(&errno),
            Err(SeccompError::ReturnValueOutOfRange { value: 65536 })
        ));
    }

    #[test]
    fn flags_reach_the_program() {
        let seccomp = custom(
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
        );
        assert_eq!(
            compile(&seccomp).unwrap().flags(),
            libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
    }

    #[test]
    fn docker_default_fits_comfortably_in_the_kernel_limit() {
        let program = compile(&docker_default(&[Capability::CAP_SYS_ADMIN])).unwrap();
        assert!(program.instructions().len() < MAX_INSTRUCTIONS / 2);
    }

    #[test]
    fn load_profile_names_the_file_it_could_not_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            "{\"defaultAction\": \"SCMP_ACT_ERRNO\"\n\"syscalls\": []}",
        )
        .unwrap();
        let error = load_profile(&path).unwrap_err();
        let SeccompError::LoadProfile {
            path: reported,
            source,
        } = &error
        else {
            panic!("unexpected {error:?}");
        };
        assert_eq!(reported, &path);
        let ProfileError::Json(json) = source else {
            panic!("unexpected {source:?}");
        };
        assert_eq!((json.line(), json.column()), (2, 1));

        let missing = load_profile(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(missing, SeccompError::ReadProfile { .. }));
    }

    #[test]
    fn kernel_version_is_read_from_osrelease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osrelease");
        std::fs::write(&path, "6.1.0-13-amd64\n").unwrap();
        assert_eq!(
            read_kernel_version(&path).unwrap(),
            KernelVersion::new(6, 1)
        );
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(matches!(
            read_kernel_version(&path),
            Err(SeccompError::ParseKernelVersion { .. })
        ));
    }
}
