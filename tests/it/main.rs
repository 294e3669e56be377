//! Integration tests: one binary for every test under `tests/it/`.

// Every file here is a test module; the lint is meant for unit tests.
#![allow(clippy::tests_outside_test_module)]
// Test helpers may panic on what the test itself set up.
#![allow(clippy::unwrap_used)]

mod build;
mod cgroup;
mod cli_grammar;
mod compose;
mod container_api;
mod daemon;
mod dns;
mod firewall;
mod gitops;
mod health;
mod host;
mod images;
mod interpolate;
mod layer;
mod logs;
mod net;
mod netdns;
mod ports;
mod registry;
mod robustness;
mod runtime;
mod seccomp;
mod spec;
mod stacks;
mod stackverbs;
mod supervise;
mod system;
mod tls;
mod verbs;
mod vfs;

/// Runs a command to its end, with stdin from /dev/null unless the command
/// set it, and fails the test (killing the command) if it takes longer than
/// `limit`: a hung command must end the test, never the whole suite.
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Stops the daemon of state root `root` (if one runs): SIGTERM, then waits
/// for its pid file lock to go.
pub fn stop_daemon(root: &std::path::Path) {
    let pidfile = root.join("run/stack.pid");
    let Ok(text) = std::fs::read_to_string(&pidfile) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // One that does not stop in time is killed: nothing of it may outlive
    // the test (its pid checked to still be this root's daemon).
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let root = root.as_os_str().as_encoded_bytes();
        c.windows(root.len()).any(|w| w == root)
    });
    let _ = ours
        && nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok();
    forget_host_state(root);
}

/// What a daemon of `root` leaves on the host after it stops (as docker0
/// and Docker's rules outlive dockerd): its default bridge and its firewall
/// table. A test root goes away with its test, so they go too, or the
/// subnets for default bridges run out over a few runs.
pub fn forget_host_state(root: &std::path::Path) {
    let bridge = stack::net::default_bridge_name(root);
    let _ = output_within(
        std::process::Command::new("ip").args(["link", "del", &bridge]),
        std::time::Duration::from_secs(10),
    );
    let table = stack::daemon::firewall::table_name(root);
    if let Ok(firewall) = stack::net::firewall::Firewall::new(&table) {
        let _ = firewall.remove();
    }
}
