//! The one test host every container test uses: its own state root with a
//! busybox image `bb`, a scratch directory on the host, and the `stack`
//! binary run against that root (its daemon autostarted by the first
//! command, and stopped, with every container removed, when the host is
//! dropped). Each test makes its own, so tests run in parallel.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The busybox applets the image links.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "true", "false", "id", "hostname", "sleep", "ps", "mount",
    "unshare", "mkdir", "touch", "env", "grep", "head", "wc", "seq", "yes", "kill", "trap", "dd",
    "test", "pwd", "stat", "readlink", "rm", "ln", "chown", "ip", "ping", "wget", "httpd", "nc",
    "chroot",
];

/// The image's `/etc/passwd`: what a copy out of a container must give,
/// and never the host's.
pub(crate) const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";

/// Counts the subnets and names handed out in this test process.
static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);
static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

/// A /24 of this test's own, `10.X.Y.0/24` as (X, Y): X in 101..=109 from
/// the pid, Y counted, so tests (and test processes) running at the same
/// time never share one; never 172.17/16 or 192.0.2/24, which the host
/// uses. The one helper every test module takes its subnets from.
pub(crate) fn subnet() -> (u8, u8) {
    let n = NEXT_SUBNET.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let x = 101 + (pid + n / 250) % 9;
    let y = (pid / 9 + n) % 250;
    (u8::try_from(x).unwrap(), u8::try_from(y).unwrap())
}

/// [`subnet`] as the prefix `10.X.Y` (append `.0/24`, `.1/24`, …).
pub(crate) fn prefix() -> String {
    let (x, y) = subnet();
    format!("10.{x}.{y}")
}

/// 6 hex digits unique to this test process and call, for the names of
/// the test's own interfaces, bridges and namespaces (Linux names are at
/// most 15 bytes): `stk` + `unique()`.
pub(crate) fn unique() -> String {
    let n = NEXT_NAME.fetch_add(1, Ordering::SeqCst);
    format!("{:06x}", (std::process::id() << 8 ^ n) & 0xff_ffff)
}

/// A loopback address no other test (or test process) uses,
/// `127.N.PID_HI.PID_LO` with N counted: a server of the test's own binds
/// it (port 53 included).
pub(crate) fn unique_loopback() -> std::net::Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let [_, _, hi, lo] = std::process::id().to_be_bytes();
    let n = u8::try_from(100 + n % 150).unwrap();
    std::net::Ipv4Addr::new(127, n, hi, lo.clamp(1, 254))
}

/// How long one `stack` command may take before the test fails.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

pub(crate) fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test starts real containers and needs root (run the suite as root)"
    );
}

/// Makes a busybox root file system in `scratch` (every applet of
/// [`APPLETS`], the users root and app) and imports it into the state root
/// `root` as `bb:latest`.
pub(crate) fn busybox_image(root: &Path, scratch: &Path) {
    for d in ["bin", "etc", "tmp", "root", "home/app"] {
        fs::create_dir_all(scratch.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is required: apt-get install busybox-static");
    fs::copy(busybox, scratch.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", scratch.join("bin").join(applet)).unwrap();
    }
    fs::write(scratch.join("etc/passwd"), PASSWD).unwrap();
    fs::write(
        scratch.join("etc/group"),
        "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
    )
    .unwrap();
    let mut import = Command::new(env!("CARGO_BIN_EXE_stack"));
    import
        .arg("--root")
        .arg(root)
        .args(["import", scratch.to_str().unwrap(), "bb:latest"])
        .env_remove("STACK_ROOT")
        .env_remove("STACK_RUN_DIR")
        .stdin(Stdio::null());
    let out = crate::output_within(&mut import, COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A state root with a busybox image `bb` in it, and a scratch directory;
/// containers are removed and the root's daemon stopped when dropped.
pub(crate) struct Host {
    dir: tempfile::TempDir,
    /// The daemon this test started itself (with its own flags).
    daemon: Option<std::process::Child>,
    daemon_args: Vec<String>,
    /// Variables set in the environment of the daemon the test starts.
    daemon_env: Vec<(String, String)>,
}

impl Host {
    pub(crate) fn new() -> Host {
        Host::with_daemon(&[])
    }

    /// A host whose daemon is started by the test with `daemon_args`
    /// (when there are any) before anything else runs.
    pub(crate) fn with_daemon(daemon_args: &[&str]) -> Host {
        Host::with_daemon_env(daemon_args, &[])
    }

    /// [`Host::with_daemon`], the daemon started with `env` set in its
    /// environment too.
    pub(crate) fn with_daemon_env(daemon_args: &[&str], env: &[(&str, &str)]) -> Host {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("work")).unwrap();
        let mut host = Host {
            dir,
            daemon: None,
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
            daemon_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // The test's daemon first, so the import does not autostart one
        // with other settings (and another default bridge subnet).
        if !daemon_args.is_empty() || !env.is_empty() {
            host.start_daemon();
        }
        busybox_image(&host.root(), &host.dir.path().join("image"));
        host
    }

    /// Starts the daemon with the host's daemon flags and waits until it
    /// answers (it fails the test if it exits first or takes too long).
    pub(crate) fn start_daemon(&mut self) {
        if let Some(mut old) = self.daemon.take() {
            let _ = old.wait();
        }
        let mut args = vec!["daemon"];
        args.extend(self.daemon_args.iter().map(String::as_str));
        let log = fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let mut child = self
            .cmd(&args)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = self.root().join("run/stack.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the daemon exited ({status}): {}",
                    fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Not another daemon's socket (one autostarted on this root).
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the daemon exited ({status}): {}",
                fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
            );
        }
        self.daemon = Some(child);
    }

    /// What the daemon the test started printed so far.
    pub(crate) fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The pid of the daemon the test started.
    pub(crate) fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(std::process::Child::id)
    }

    /// The test's directory (the state root, the scratch directory, the
    /// daemon's log): gone once the host is dropped.
    pub(crate) fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The state root.
    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A scratch directory on the host for this test, the commands' working
    /// directory.
    pub(crate) fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `stack --root ROOT ARGS`, not started.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
        cmd.arg("--root").arg(self.root()).args(args);
        cmd.env_remove("STACK_ROOT").env_remove("STACK_RUN_DIR");
        cmd.current_dir(self.work());
        cmd
    }

    /// Runs `stack ARGS` to its end.
    pub(crate) fn stack(&self, args: &[&str]) -> Output {
        crate::output_within(self.cmd(args).stdin(Stdio::null()), COMMAND_LIMIT)
    }

    /// Runs `stack ARGS` with `input` on stdin.
    pub(crate) fn stack_with_input(&self, args: &[&str], input: Vec<u8>) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let deadline = Instant::now() + COMMAND_LIMIT;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("stack {args:?} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.join().unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `stack run --rm FLAGS bb COMMAND…`: (exit code, stdout, stderr).
    pub(crate) fn run(&self, flags: &[&str], command: &[&str]) -> (i32, String, String) {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.push("bb");
        args.extend_from_slice(command);
        let out = self.stack(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command that must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.stack(args);
        assert!(
            out.status.success(),
            "stack {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its stderr as one line (the
    /// diagnostic's wrapping and frame removed).
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = self.stack(args);
        assert!(
            !out.status.success(),
            "stack {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_ne!(out.status.code(), Some(101), "stack {args:?} panicked");
        String::from_utf8_lossy(&out.stderr)
            .split_whitespace()
            .filter(|w| !matches!(*w, "│" | "×"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts `bb sleep 1000` in the background as `name`; its id.
    pub(crate) fn sleeper(&self, name: &str, flags: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["bb", "sleep", "1000"]);
        self.ok(&args).trim().to_string()
    }

    /// Runs `sh -c script` in a running container; its stdout.
    pub(crate) fn sh(&self, container: &str, script: &str) -> String {
        self.ok(&["exec", container, "sh", "-c", script])
    }

    /// `stack inspect NAME`, the container's document.
    pub(crate) fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

/// The content of a cgroup file of container `id`: `v1` under cgroup v1,
/// `v2` under v2 (whichever the controller's directory has).
pub(crate) fn cgroup_file(id: &str, controller: &str, v1: &str, v2: &str) -> String {
    let hierarchy = stack::runtime::cgroup::Hierarchy::detect().unwrap();
    let cgroup = hierarchy.open(format!("stack/{id}")).unwrap();
    let dir = cgroup.dir(controller).unwrap();
    let file = if dir.join(v1).exists() { v1 } else { v2 };
    fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// One raw HTTP answer.
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: u16,
    /// The headers, names lower-cased.
    pub(crate) headers: BTreeMap<String, String>,
    /// The body as sent (not de-chunked).
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Host {
    /// The daemon's socket (the daemon started if none runs yet).
    pub(crate) fn socket(&self) -> PathBuf {
        self.ok(&["version"]);
        self.root().join("run/stack.sock")
    }

    /// One raw HTTP/1.1 exchange with the daemon on its socket.
    pub(crate) fn http(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: stack\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        // A body the daemon refuses early may not be read whole.
        let _ = s.write_all(body);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(answer.len());
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Answer {
            status,
            headers,
            body: answer.get(split + 4..).unwrap_or_default().to_vec(),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The polite way first, while a daemon answers (never autostarting
        // one just to clean up): stacks down, so their loops make nothing
        // again, then every container removed and the networks pruned.
        if UnixStream::connect(self.root().join("run/stack.sock")).is_ok() {
            if let Ok(entries) = fs::read_dir(self.root().join("stacks")) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(stack) = name.strip_suffix(".json") {
                        let _ = self.stack(&["down", "--stack", stack]);
                    }
                }
            }
            let out = self.stack(&["ps", "-a", "-q", "--no-trunc"]);
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.stack(&["rm", "-f", id]);
            }
            // User-defined networks' bridges go with them.
            let _ = self.stack(&["network", "prune", "-f"]);
        }
        if let Some(mut daemon) = self.daemon.take() {
            // SIGTERM first: a clean stop removes the default bridge.
            if let Ok(pid) = i32::try_from(daemon.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        // The commands autostarted a daemon on this root: stop it.
        crate::stop_daemon(&self.root());
        // Then whatever a daemon killed mid-work (or a failed test) left in
        // the kernel, found from the root itself.
        sweep(self.dir.path(), &self.root());
    }
}

/// Removes from the host everything of state root `root` (in the test
/// directory `dir`) that outlives its daemon: the containers' processes
/// and cgroups, their shims, the mounts under `dir`, the links its
/// networks made (bridges, veth ends, VLAN parents), its default bridge
/// and its nftables table. The daemon must be stopped.
pub(crate) fn sweep(dir: &Path, root: &Path) {
    let containers: Vec<String> = fs::read_dir(root.join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // Each container's processes: its cgroup's (every process of it, also
    // one that left the pid namespace's init), and its init as recorded.
    let hierarchy = stack::runtime::cgroup::Hierarchy::detect().ok();
    let mut cgroups = Vec::new();
    for id in &containers {
        if let Some(cgroup) = hierarchy
            .as_ref()
            .and_then(|h| h.open(format!("stack/{id}")).ok())
        {
            let _ = cgroup.kill_all(rustix::process::Signal::KILL);
            cgroups.push(cgroup);
        }
        let state = fs::read_to_string(root.join("containers").join(id).join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(pid) = state
            .as_ref()
            .and_then(|s| s["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
        {
            kill(pid);
        }
    }
    // The shims: `stack __shim <root>/containers/<id> <root>/run/<id>.sock`.
    for pid in shims_of(root) {
        kill(pid);
    }
    for cgroup in &cgroups {
        let _ = cgroup.delete();
    }
    unmount_under(dir);
    // The links its networks made, as its network store records them.
    let mut links = vec![stack::net::default_bridge_name(root)];
    for e in fs::read_dir(root.join("network"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(record) = fs::read_to_string(e.path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        if let Some(endpoints) = record["endpoints"].as_object() {
            links.extend(
                endpoints
                    .values()
                    .filter_map(|e| e["host_veth"].as_str())
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
            );
        }
        if record["external_bridge"] != serde_json::Value::Bool(true)
            && let Some(bridge) = record["bridge"].as_str()
        {
            links.push(bridge.to_string());
        }
        if record["created_parent"] == serde_json::Value::Bool(true)
            && let Some(parent) = record["parent"].as_str()
        {
            links.push(parent.to_string());
        }
    }
    let present = crate::output_within(
        Command::new("ip").args(["-o", "link", "show"]),
        Duration::from_secs(10),
    );
    let present = String::from_utf8_lossy(&present.stdout).into_owned();
    let present: Vec<&str> = present
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .collect();
    for link in links.iter().filter(|l| present.contains(&l.as_str())) {
        let _ = crate::output_within(
            Command::new("ip").args(["link", "del", link]),
            Duration::from_secs(10),
        );
    }
    crate::forget_host_state(root);
}

/// SIGKILLs `pid` (gone already is fine).
fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The pids of the shims of containers under `root`.
pub(crate) fn shims_of(root: &Path) -> Vec<i32> {
    let under = |arg: &[u8]| Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(root);
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.get(1) == Some(&b"__shim".as_slice())
                && args.get(2..4).is_some_and(|a| a.iter().any(|a| under(a))))
            .then_some(pid)
        })
        .collect()
}

/// The mount points under `dir`, per /proc/self/mountinfo.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Unmounts (lazily) everything mounted under `dir`, the latest first.
fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
