//! Seccomp filters on real processes: Docker's default profile, resolved for
//! Docker's default capabilities, lets ordinary programs run and refuses
//! namespaces, keyrings, mounts and vsock; resolved with `CAP_SYS_ADMIN` it
//! allows namespaces; a custom profile returns its own errno; a malformed
//! profile is a clear error.
//!
//! Each check installs the filter in a child between `fork` and `execve`,
//! exactly where the container init does, then runs a `/bin/busybox`
//! applet or makes one raw syscall and exits with its errno. The test
//! process itself is never filtered.
//!
//! These tests need root: as root the filter can be installed without
//! `no_new_privs` (the `CAP_SYS_ADMIN` case), and the namespace checks need
//! a host that lets root unshare. They fail, not skip, without it.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output};

use caps::Capability;
use oci_spec::runtime::LinuxSeccomp;
use stack::runtime::seccomp::{self, KernelVersion, ProfileError, Program, SeccompError};

const BUSYBOX: &str = "/bin/busybox";

/// The capabilities Docker gives a container by default.
const DOCKER_CAPS: &[Capability] = &stack::runtime::DEFAULT_CAPABILITIES;

/// Fails with the reason when the host cannot run these tests.
fn require_host() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (installing a seccomp filter without no_new_privs, \
         unsharing namespaces): run the suite as root, as CI does"
    );
    assert!(
        Path::new(BUSYBOX).is_file(),
        "this test needs a static busybox at {BUSYBOX}"
    );
    assert!(
        seccomp::HOST_ARCH.is_some(),
        "seccomp filters are only compiled for x86_64 and aarch64"
    );
}

fn kernel() -> KernelVersion {
    seccomp::read_kernel_version(Path::new(seccomp::OSRELEASE_PATH)).expect("read kernel version")
}

/// Docker's default profile for Docker's default capabilities plus `extra`.
fn docker_default(extra: &[Capability]) -> Program {
    let caps: Vec<Capability> = DOCKER_CAPS.iter().chain(extra).copied().collect();
    let arch = seccomp::HOST_ARCH.expect("checked by require_host");
    let resolved = seccomp::resolve(&seccomp::default_profile(), &caps, arch, kernel());
    seccomp::compile(&resolved).expect("compile the default profile")
}

fn compile_json(json: &str) -> Program {
    let arch = seccomp::HOST_ARCH.expect("checked by require_host");
    let profile = seccomp::parse_profile(json).expect("parse the test profile");
    let resolved: LinuxSeccomp = seccomp::resolve(&profile, &[], arch, kernel());
    seccomp::compile(&resolved).expect("compile the test profile")
}

/// The errno inside a failed [`seccomp::apply`], without allocating (this
/// runs between fork and exec).
fn os_error(error: SeccompError) -> io::Error {
    match error {
        SeccompError::Install(source) => source,
        _ => io::Error::from_raw_os_error(libc::EPROTO),
    }
}

/// Runs busybox with `args`, the filter installed right before `execve`.
fn busybox(filter: Option<&Program>, no_new_privs: bool, args: &[&str]) -> Output {
    let filter = filter.cloned();
    let mut command = Command::new(BUSYBOX);
    command.args(args).env_clear();
    // SAFETY: the closure runs in the forked child before `execve`. It only
    // makes system calls (`prctl` through nix, `seccomp` through `apply`) and
    // builds `io::Error`s from raw errnos; none of that allocates or takes a
    // lock, so it is safe even though the test harness is multi-threaded.
    unsafe {
        command.pre_exec(move || {
            if no_new_privs {
                nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
            }
            match &filter {
                Some(program) => seccomp::apply(program).map_err(os_error),
                None => Ok(()),
            }
        });
    }
    command.output().expect("spawn busybox")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_runs(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {:?}, stderr: {}",
        output.status,
        stderr(output)
    );
}

fn assert_refused(output: &Output, message: &str, what: &str) {
    assert!(!output.status.success(), "{what} ran under the filter");
    assert!(
        stderr(output).contains(message),
        "{what}: expected {message:?}, stderr: {}",
        stderr(output)
    );
}

/// Installs `filter` in a forked child, runs `probe` there and returns the
/// errno it left (0 when the syscall succeeded). The child exits without
/// exec'ing anything, so only `probe` runs under the filter.
fn errno_under(filter: &Program, probe: fn() -> libc::c_long) -> i32 {
    let filter = filter.clone();
    let mut command = Command::new("/nonexistent/never-executed");
    // SAFETY: the closure runs in the forked child. It installs the filter,
    // makes one raw system call and leaves with `_exit`, which skips atexit
    // handlers and stdio flushing; nothing in it allocates or locks.
    unsafe {
        command.pre_exec(move || {
            if let Err(error) = seccomp::apply(&filter) {
                let errno = os_error(error).raw_os_error().unwrap_or(0);
                libc::_exit(200 + errno.min(50));
            }
            let result = probe();
            let errno = if result < 0 {
                io::Error::last_os_error().raw_os_error().unwrap_or(0)
            } else {
                0
            };
            libc::_exit(errno.min(199));
        });
    }
    let status = command.status().expect("fork the probe");
    match status.code() {
        Some(code) if code >= 200 => panic!("the filter was not installed: errno {}", code - 200),
        Some(code) => code,
        None => panic!("the probe was killed by signal {:?}", status.signal()),
    }
}

#[test]
fn default_profile_runs_ordinary_programs() {
    require_host();
    let filter = docker_default(&[]);
    for no_new_privs in [false, true] {
        assert_runs(&busybox(Some(&filter), no_new_privs, &["true"]), "true");
        let echo = busybox(Some(&filter), no_new_privs, &["sh", "-c", "echo hi"]);
        assert_runs(&echo, "sh -c 'echo hi'");
        assert_eq!(echo.stdout, b"hi\n");
        // The shell forks for the child command: clone without namespace
        // flags passes the masked comparison.
        let forked = busybox(
            Some(&filter),
            no_new_privs,
            &["sh", "-c", "/bin/busybox true && echo forked"],
        );
        assert_runs(&forked, "sh forking a child");
        assert_eq!(forked.stdout, b"forked\n");
        let ls = busybox(Some(&filter), no_new_privs, &["ls", "/"]);
        assert_runs(&ls, "ls /");
        assert!(
            String::from_utf8_lossy(&ls.stdout)
                .lines()
                .any(|l| l == "proc")
        );
        // personality(PER_LINUX32) is one of the allowed personas.
        assert_runs(
            &busybox(Some(&filter), no_new_privs, &["linux32", "true"]),
            "linux32 true",
        );
        // CAP_SYS_CHROOT is among Docker's default capabilities.
        assert_runs(
            &busybox(
                Some(&filter),
                no_new_privs,
                &["chroot", "/", "/bin/busybox", "true"],
            ),
            "chroot",
        );
    }
}

#[test]
fn default_profile_refuses_namespaces_without_cap_sys_admin() {
    require_host();
    // The host itself must allow what the filter is expected to refuse.
    for flag in ["-U", "-m"] {
        assert_runs(
            &busybox(None, false, &["unshare", flag, "true"]),
            "unshare without a filter (the host must let root unshare)",
        );
    }
    let filter = docker_default(&[]);
    for flag in ["-U", "-m"] {
        let output = busybox(Some(&filter), true, &["unshare", flag, "true"]);
        assert_refused(&output, "Operation not permitted", "unshare");
    }
}

#[test]
fn default_profile_with_cap_sys_admin_allows_namespaces() {
    require_host();
    let filter = docker_default(&[Capability::CAP_SYS_ADMIN]);
    for flag in ["-U", "-m"] {
        assert_runs(
            &busybox(Some(&filter), false, &["unshare", flag, "true"]),
            "unshare under the CAP_SYS_ADMIN profile",
        );
    }
    // clone3 is a plain syscall then, not ENOSYS.
    assert_eq!(errno_under(&filter, clone3_without_arguments), libc::EINVAL);
}

#[test]
fn default_profile_refuses_mounts_keyrings_and_vsock() {
    require_host();
    let filter = docker_default(&[]);
    // Without the filter the mount point is missing (ENOENT); with it,
    // mount(2) never gets that far (busybox words EPERM this way).
    let mount = ["mount", "-t", "tmpfs", "none", "/nonexistent/stack-seccomp"];
    assert_refused(
        &busybox(None, false, &mount),
        "No such file or directory",
        "mount without a filter",
    );
    assert_refused(
        &busybox(Some(&filter), false, &mount),
        "permission denied (are you root?)",
        "mount",
    );

    assert_eq!(errno_under(&filter, keyctl_get_keyring_id), libc::EPERM);
    assert_eq!(errno_under(&filter, add_user_key), libc::EPERM);
    assert_eq!(errno_under(&filter, vsock_socket), libc::EPERM);
    assert_eq!(errno_under(&filter, unix_socket), 0);
    assert_eq!(errno_under(&filter, personality_no_randomize), libc::EPERM);
    assert_eq!(errno_under(&filter, personality_query), 0);
    // ENOSYS, so that libc falls back to clone.
    assert_eq!(errno_under(&filter, clone3_without_arguments), libc::ENOSYS);
}

#[test]
fn custom_profile_returns_its_own_errno() {
    require_host();
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = dir.path().join("x");
    let target = target.to_str().expect("temporary paths are UTF-8");
    let filter = compile_json(
        r#"{
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30}
          ]
        }"#,
    );
    // EROFS: an errno nothing else would give for a fresh temporary dir.
    assert_refused(
        &busybox(Some(&filter), true, &["mkdir", target]),
        "Read-only file system",
        "mkdir",
    );
    assert!(!Path::new(target).exists());
    // Everything else is allowed by default, even what Docker's profile
    // refuses: keyctl may fail, but not with the filter's EPERM.
    assert_ne!(errno_under(&filter, keyctl_get_keyring_id), libc::EPERM);
    assert_runs(
        &busybox(None, false, &["mkdir", target]),
        "mkdir without a filter",
    );
    assert!(Path::new(target).is_dir());
}

#[test]
fn apply_needs_no_new_privs_without_cap_sys_admin() {
    require_host();
    let filter = docker_default(&[]);
    let install_as_nobody = |no_new_privs: bool| -> i32 {
        let filter = filter.clone();
        let mut command = Command::new("/nonexistent/never-executed");
        // SAFETY: the closure runs in the forked child and only makes system
        // calls (`setresgid`, `setresuid`, `prctl`, `seccomp`) before leaving
        // with `_exit`; nothing allocates or locks.
        unsafe {
            command.pre_exec(move || {
                // Leaving uid 0 clears every capability, CAP_SYS_ADMIN too.
                if libc::setresgid(65534, 65534, 65534) != 0
                    || libc::setresuid(65534, 65534, 65534) != 0
                {
                    libc::_exit(100);
                }
                if no_new_privs && nix::sys::prctl::set_no_new_privs().is_err() {
                    libc::_exit(101);
                }
                let code = match seccomp::apply(&filter) {
                    Ok(()) => 0,
                    Err(error) => os_error(error).raw_os_error().unwrap_or(102),
                };
                libc::_exit(code);
            });
        }
        let status = command.status().expect("fork the probe");
        status.code().expect("the probe exits")
    };
    assert_eq!(install_as_nobody(false), libc::EACCES);
    assert_eq!(install_as_nobody(true), 0);
}

#[test]
fn malformed_profile_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("broken.json");
    std::fs::write(
        &path,
        "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [\n    {\"names\": [\"read\"] \"action\": \"SCMP_ACT_ALLOW\"}\n  ]\n}\n",
    )
    .expect("write the profile");
    let error = seccomp::load_profile(&path).expect_err("a malformed profile loads");
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(chain.contains(&path.display().to_string()), "{chain}");
    assert!(chain.contains("line 4 column 24"), "{chain}");
    let SeccompError::LoadProfile {
        source: ProfileError::Json(json),
        ..
    } = &error
    else {
        panic!("unexpected error {error:?}");
    };
    assert_eq!((json.line(), json.column()), (4, 24));

    // Valid JSON but not a profile: the missing field is named.
    std::fs::write(&path, "{\"syscalls\": []}").expect("write the profile");
    let error = seccomp::load_profile(&path).expect_err("a profile without defaultAction loads");
    let SeccompError::LoadProfile {
        source: ProfileError::Json(json),
        ..
    } = &error
    else {
        panic!("unexpected error {error:?}");
    };
    assert!(
        json.to_string().contains("missing field `defaultAction`"),
        "{json}"
    );
}

// Raw syscalls for `errno_under`. Each is called in the filtered child.

fn keyctl_get_keyring_id() -> libc::c_long {
    // SAFETY: KEYCTL_GET_KEYRING_ID (0) on KEY_SPEC_SESSION_KEYRING (-3),
    // without creating it (0): integer arguments only.
    unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }
}

fn add_user_key() -> libc::c_long {
    // SAFETY: the type, description and payload point at static data that
    // outlives the call; the keyring is KEY_SPEC_PROCESS_KEYRING (-2).
    unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"stack-seccomp-test".as_ptr(),
            c"x".as_ptr(),
            1,
            -2,
        )
    }
}

fn vsock_socket() -> libc::c_long {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) }
}

fn unix_socket() -> libc::c_long {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) }
}

fn personality_no_randomize() -> libc::c_long {
    // SAFETY: integer argument only; the process exits right after.
    unsafe { libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE) }
}

fn personality_query() -> libc::c_long {
    // SAFETY: 0xffffffff only queries the persona.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) }
}

fn clone3_without_arguments() -> libc::c_long {
    // SAFETY: a null `clone_args` with size 0 is refused by the kernel with
    // EINVAL before anything is cloned; under the filter it never gets there.
    unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0_usize) }
}
