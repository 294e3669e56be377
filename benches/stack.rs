//! The 30-service stack benchmark of issue 7, against docker-compose.
//!
//! One compose file, 30 services of busybox httpd, each publishing a port
//! on 127.0.0.1 (31100–31129 for stack, 31200–31229 for Compose; the bench
//! checks they are free), on a network with a subnet of its own
//! (10.92.x.0/24, 10.93.x.0/24). Each service serves its environment
//! variable `V` as `/index.html` and exits on SIGTERM (a shell with a trap
//! runs httpd: httpd as PID 1 would ignore SIGTERM and every stop would
//! last its whole grace period). Scenarios, timed over several rounds,
//! medians printed:
//!
//! - cold: `up -d` on nothing until every port answers with its value;
//! - no-op: `up -d` again with nothing changed;
//! - edit: one service's `V` changed in the file, from the write until its
//!   port answers with the new value (stack: its daemon watches the file;
//!   Compose: `docker-compose up -d` run right after the write);
//! - down: `down` until it returns.
//!
//! Stack runs with its own state root, daemon, socket, default bridge and
//! firewall table; the busybox image is made from the host's
//! `/bin/busybox`. Compose runs when `docker-compose` and `/usr/sbin/dockerd`
//! are installed: a dockerd of its own (data root and socket under the
//! bench's temporary directory, no default bridge, `--ip-forward=false` so
//! it leaves the host's forwarding policy alone), loaded with the same
//! image through `stack save` and `docker load`, stopped at the end.
//!
//! Root only. `cargo bench --bench stack` (`-- stack` for stack alone,
//! `-- rounds=N`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SERVICES: u16 = 30;
const EDITED: u16 = 7;
const NOOPS: usize = 5;
const EDITS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

/// What runs the stack: `stack` or `docker-compose`.
trait Engine {
    fn name(&self) -> &'static str;
    fn file(&self) -> &Path;
    fn up(&self);
    fn down(&self);
    /// What is run after the file changed (nothing for an engine that
    /// watches the file).
    fn after_edit(&self) {}
    fn ports(&self) -> u16;
    /// Prints what is left (after a failed check).
    fn diagnose(&self) {}
}

struct Stack {
    dir: PathBuf,
    root: PathBuf,
    file: PathBuf,
    daemon: Child,
}

impl Stack {
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("stack runs");
        assert!(
            out.status.success(),
            "stack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Engine for Stack {
    fn name(&self) -> &'static str {
        "stack"
    }
    fn file(&self) -> &Path {
        &self.file
    }
    fn up(&self) {
        self.run(&["up", "-d", "-f", &self.file.to_string_lossy()]);
    }
    fn down(&self) {
        self.run(&["down", "-f", &self.file.to_string_lossy()]);
    }
    fn ports(&self) -> u16 {
        31100
    }
    fn diagnose(&self) {
        let ps = self.run(&["ps", "-a"]);
        eprintln!(
            "stack ps -a after down:\n{}",
            String::from_utf8_lossy(&ps.stdout)
        );
        let log = std::fs::read_to_string(self.root.with_file_name("stack-daemon.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "daemon log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--root")
            .arg(&self.root)
            .args(["down", "-f", &self.file.to_string_lossy()])
            .current_dir(&self.dir)
            .output();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.daemon.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        let table = stack::daemon::firewall::table_name(&self.root);
        if let Ok(fw) = stack::net::firewall::Firewall::new(&table) {
            let _ = fw.remove();
        }
    }
}

struct Compose {
    dir: PathBuf,
    file: PathBuf,
    socket: String,
    daemon: Child,
}

impl Compose {
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = Command::new(program)
            .env("DOCKER_HOST", &self.socket)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Engine for Compose {
    fn name(&self) -> &'static str {
        "docker-compose"
    }
    fn file(&self) -> &Path {
        &self.file
    }
    fn up(&self) {
        self.run(
            "docker-compose",
            &["-f", &self.file.to_string_lossy(), "up", "-d"],
        );
    }
    fn down(&self) {
        self.run(
            "docker-compose",
            &["-f", &self.file.to_string_lossy(), "down"],
        );
    }
    fn after_edit(&self) {
        self.up();
    }
    fn ports(&self) -> u16 {
        31200
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .env("DOCKER_HOST", &self.socket)
            .args(["-f", &self.file.to_string_lossy(), "down"])
            .current_dir(&self.dir)
            .output();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.daemon.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        // dockerd's mounts under its data root go with it; what is left is
        // unmounted before the temporary directory is removed.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("docker"))
            .output();
    }
}

/// The compose file: `generation` is the value of the edited service.
fn compose_file(ports: u16, subnet: &str, edited: usize) -> String {
    let mut text = String::from("services:\n");
    for i in 1..=SERVICES {
        let value = if i == EDITED {
            format!("s{i}-g{edited}")
        } else {
            format!("s{i}")
        };
        text.push_str(&format!(
            "  s{i:02}:\n    image: busybox:latest\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; mkdir -p /tmp/w; echo $$V > /tmp/w/index.html; httpd -f -p 8080 -h /tmp/w & wait\"]\n    environment:\n      V: \"{value}\"\n    ports:\n      - \"127.0.0.1:{}:8080\"\n",
            ports + i
        ));
    }
    text.push_str(&format!(
        "networks:\n  default:\n    ipam:\n      config:\n        - subnet: {subnet}\n"
    ));
    text
}

/// The body `127.0.0.1:port` answers `GET /` with, if it answers.
fn get(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        return None;
    }
    text.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

/// Waits until `port` answers `want`.
fn answers(port: u16, want: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if get(port).as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port} never answered {want}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn all_answer(base: u16, edited: usize) {
    for i in 1..=SERVICES {
        let want = if i == EDITED {
            format!("s{i}-g{edited}")
        } else {
            format!("s{i}")
        };
        answers(base + i, &want);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t[t.len() / 2]
}

fn spread(times: &[Duration]) -> String {
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!(
        "median {} (min {}, max {}, n={})",
        ms(median(times)),
        ms(min),
        ms(max),
        times.len()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Default)]
struct Times {
    cold: Vec<Duration>,
    noop: Vec<Duration>,
    edit: Vec<Duration>,
    down: Vec<Duration>,
}

fn write(file: &Path, text: &str) {
    std::fs::write(file, text).expect("write the stack file");
}

fn measure(engine: &dyn Engine, subnet: &str, rounds: usize) -> Times {
    let mut times = Times::default();
    let base = engine.ports();
    let mut generation = 0;
    for round in 0..rounds {
        write(engine.file(), &compose_file(base, subnet, generation));
        let t = Instant::now();
        engine.up();
        all_answer(base, generation);
        times.cold.push(t.elapsed());
        for _ in 0..NOOPS {
            let t = Instant::now();
            engine.up();
            times.noop.push(t.elapsed());
        }
        for _ in 0..EDITS {
            generation += 1;
            let text = compose_file(base, subnet, generation);
            let t = Instant::now();
            write(engine.file(), &text);
            engine.after_edit();
            answers(base + EDITED, &format!("s{EDITED}-g{generation}"));
            times.edit.push(t.elapsed());
        }
        // The others kept running through the edits.
        all_answer(base, generation);
        let t = Instant::now();
        engine.down();
        times.down.push(t.elapsed());
        for i in 1..=SERVICES {
            if let Some(body) = get(base + i) {
                engine.diagnose();
                panic!("port {} still answers ({body}) after down", base + i);
            }
        }
        eprintln!(
            "{}: round {round}: cold {}, down {} (load {})",
            engine.name(),
            ms(times.cold[round]),
            ms(times.down[round]),
            load_average()
        );
    }
    times
}

fn report(name: &str, t: &Times) {
    println!("{name}:");
    println!("  cold up -d until all 30 answer: {}", spread(&t.cold));
    println!("  no-op up -d:                    {}", spread(&t.noop));
    println!("  edit one service → answering:   {}", spread(&t.edit));
    println!("  down:                           {}", spread(&t.down));
}

fn ports_free(base: u16) {
    for i in 1..=SERVICES {
        let port = base + i;
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "127.0.0.1:{port} is taken: the bench needs ports {}–{}",
            base + 1,
            base + SERVICES
        );
    }
}

fn wait_socket(socket: &Path, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "{what} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_stack(dir: &Path) -> Stack {
    let root = dir.join("root");
    let project = dir.join("stkbench");
    std::fs::create_dir_all(&project).expect("project dir");
    let bip = format!("10.91.{}.1/24", std::process::id() % 250);
    let log = std::fs::File::create(dir.join("stack-daemon.log")).expect("log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_stack"))
        .arg("--root")
        .arg(&root)
        .args(["daemon", "--bip", &bip])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start the daemon");
    let stack = Stack {
        dir: project.clone(),
        root: root.clone(),
        file: project.join("docker-compose.yml"),
        daemon,
    };
    wait_socket(&root.join("run/stack.sock"), "the stack daemon");
    let image = dir.join("image");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(image.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", image.join("bin/busybox"))
        .expect("busybox (apt-get install busybox-static)");
    for applet in ["sh", "httpd", "mkdir", "echo"] {
        symlink("busybox", image.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(image.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    stack.run(&["import", &image.to_string_lossy(), "busybox:latest"]);
    stack
}

fn compose_available() -> bool {
    let ok = |p: &str, a: &str| {
        Command::new(p)
            .arg(a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("docker-compose", "version")
        && ok("/usr/sbin/dockerd", "--version")
        && ok("docker", "--version")
}

fn start_compose(dir: &Path, stack: &Stack) -> Compose {
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).expect("docker dir");
    let socket = dir.join("docker.sock");
    let log = std::fs::File::create(dir.join("dockerd.log")).expect("log");
    let daemon = Command::new("/usr/sbin/dockerd")
        .arg("--data-root")
        .arg(docker.join("data"))
        .arg("--exec-root")
        .arg(docker.join("exec"))
        .arg("--pidfile")
        .arg(docker.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(["--iptables=true", "--ip-forward=false", "--bridge=none"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start dockerd");
    let project = dir.join("compose").join("stkbench");
    std::fs::create_dir_all(&project).expect("project dir");
    let compose = Compose {
        file: project.join("docker-compose.yml"),
        dir: project,
        socket: format!("unix://{}", socket.display()),
        daemon,
    };
    wait_socket(&socket, "dockerd");
    let tar = dir.join("busybox.tar");
    stack.run(&["save", "-o", &tar.to_string_lossy(), "busybox:latest"]);
    compose.run("docker", &["load", "-i", &tar.to_string_lossy()]);
    compose
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the stack bench needs root (containers, bridges, nftables)");
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = args
        .iter()
        .find_map(|a| a.strip_prefix("rounds=")?.parse().ok())
        .unwrap_or(5);
    let stack_only = args.iter().any(|a| a == "stack");
    let dir = tempfile::Builder::new()
        .prefix("stack-bench")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let x = std::process::id() % 250;
    println!(
        "30 busybox httpd services, each publishing a port; {rounds} rounds ({NOOPS} no-op ups and {EDITS} edits each); load average at start {}",
        load_average()
    );
    let stack = start_stack(dir.path());
    ports_free(stack.ports());
    let ours = measure(&stack, &format!("10.92.{x}.0/24"), rounds);
    report("stack", &ours);
    let compose = !stack_only && compose_available();
    if !compose {
        println!(
            "docker-compose: not measured ({})",
            if stack_only {
                "asked for stack alone"
            } else {
                "docker-compose, docker or /usr/sbin/dockerd is missing"
            }
        );
        return;
    }
    let theirs = {
        let compose = start_compose(dir.path(), &stack);
        ports_free(compose.ports());
        measure(&compose, &format!("10.93.{x}.0/24"), rounds)
    };
    report("docker-compose", &theirs);
    let ratio = |a: &[Duration], b: &[Duration]| median(a).as_secs_f64() / median(b).as_secs_f64();
    println!(
        "stack / compose (medians): cold {:.3}, no-op {:.3}, edit {:.3}, down {:.3}; load average at end {}",
        ratio(&ours.cold, &theirs.cold),
        ratio(&ours.noop, &theirs.noop),
        ratio(&ours.edit, &theirs.edit),
        ratio(&ours.down, &theirs.down),
        load_average()
    );
}
