//! cgroups on the real kernel: limits land in the kernel's files and can be
//! changed live, processes join, freeze, thaw, show up in the statistics and
//! are killed, the OOM killer and the pids limit bite, and deletion leaves
//! nothing behind.
//!
//! Every test needs root and fails, not skips, without it. The hierarchy is
//! detected, not assumed: the same tests run on v1, hybrid and v2 hosts, and
//! one more runs against the cgroup2 mount (the whole tree on a v2 host, the
//! `unified` mount on a hybrid one). Each test makes its own
//! `stack-test-<pid>-<n>` cgroup and removes it even when it fails.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use rustix::process::Signal;
use stack::runtime::cgroup::{Cgroup, CgroupError, CgroupMounts, CgroupVersion, Hierarchy};

const MIB: i64 = 1 << 20;

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (it creates cgroups and moves processes into them): \
         run the suite as root, as CI does"
    );
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A cgroup `stack-test-<pid>-<n>/c1` of its own; on drop, everything in
/// `stack-test-<pid>-<n>` is killed and the whole tree removed.
struct TestCgroup {
    hierarchy: Hierarchy,
    top: String,
    cgroup: Cgroup,
}

impl TestCgroup {
    fn new(hierarchy: &Hierarchy) -> Self {
        let top = format!(
            "stack-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let cgroup = hierarchy
            .create(format!("{top}/c1"))
            .unwrap_or_else(|e| panic!("creating cgroup {top}/c1: {e}"));
        Self {
            hierarchy: hierarchy.clone(),
            top,
            cgroup,
        }
    }

    /// The content of one of the cgroup's kernel files.
    fn read(&self, controller: &str, file: &str) -> String {
        let path = self.file(controller, file);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    fn file(&self, controller: &str, file: &str) -> PathBuf {
        self.cgroup
            .dir(controller)
            .unwrap_or_else(|| panic!("no {controller} controller for the test cgroup"))
            .join(file)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let Ok(top) = self.hierarchy.open(&self.top) else {
            return;
        };
        let _ = top.kill_all(Signal::KILL);
        if let Err(e) = top.delete() {
            eprintln!("cleanup: cannot remove test cgroup {}: {e}", self.top);
        }
    }
}

/// A child process that is killed and reaped if the test ends early.
struct Proc(Child);

impl Proc {
    /// `busybox sh -c script` with stdin piped: scripts start with `read x`
    /// so that they do their work only once [`Proc::go`] says so, after they
    /// have been moved into the cgroup.
    fn shell(script: &str) -> Self {
        let child = Command::new("busybox")
            .args(["sh", "-c", script])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("busybox must be installed for the cgroup tests");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn go(&mut self) {
        let mut stdin = self.0.stdin.take().expect("stdin is piped");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the exit, at most `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} still running after {timeout:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal_of(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

/// The one-letter state of a process in /proc/<pid>/stat (after the
/// parenthesised command name).
fn proc_state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(") ").expect("stat has a command name").1;
    after.chars().next().expect("stat has a state")
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn memory(limit: i64, swap: Option<i64>) -> LinuxResources {
    let mut memory = LinuxMemoryBuilder::default().limit(limit);
    if let Some(swap) = swap {
        memory = memory.swap(swap);
    }
    LinuxResourcesBuilder::default()
        .memory(memory.build().unwrap())
        .build()
        .unwrap()
}

/// Whether the kernel accounts swap (the memsw / swap files exist), so a
/// swap limit can be set.
fn has_swap_accounting(t: &TestCgroup) -> bool {
    let file = match t.cgroup.version() {
        CgroupVersion::V1 => "memory.memsw.limit_in_bytes",
        CgroupVersion::V2 => "memory.swap.max",
    };
    t.file("memory", file).exists()
}

#[test]
fn limits_land_in_the_kernel_files_and_change_live() {
    require_root();
    let hierarchy = Hierarchy::detect().unwrap();
    let t = TestCgroup::new(&hierarchy);
    let swap = has_swap_accounting(&t);
    let total = |total: i64| swap.then_some(total);

    let resources = LinuxResourcesBuilder::default()
        .memory({
            let mut m = LinuxMemoryBuilder::default().limit(64 * MIB);
            if swap {
                m = m.swap(128 * MIB);
            }
            m.build().unwrap()
        })
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512_u64)
                .quota(50_000)
                .period(100_000_u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
        .build()
        .unwrap();
    t.cgroup.apply(&resources).unwrap();

    let expect_memory = |t: &TestCgroup, memory: i64, total: Option<i64>| match t.cgroup.version() {
        CgroupVersion::V1 => {
            assert_eq!(
                t.read("memory", "memory.limit_in_bytes"),
                memory.to_string()
            );
            if let Some(total) = total {
                assert_eq!(
                    t.read("memory", "memory.memsw.limit_in_bytes"),
                    total.to_string()
                );
            }
        }
        CgroupVersion::V2 => {
            assert_eq!(t.read("memory", "memory.max"), memory.to_string());
            if let Some(total) = total {
                assert_eq!(
                    t.read("memory", "memory.swap.max"),
                    (total - memory).to_string()
                );
            }
        }
    };
    expect_memory(&t, 64 * MIB, total(128 * MIB));
    assert_eq!(t.read("pids", "pids.max"), "32");
    assert_eq!(t.read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(t.read("cpuset", "cpuset.mems"), "0");
    match hierarchy.version() {
        CgroupVersion::V1 => {
            assert_eq!(t.read("cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(t.read("cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(t.read("cpu", "cpu.shares"), "512");
        }
        CgroupVersion::V2 => {
            assert_eq!(t.read("cpu", "cpu.max"), "50000 100000");
            assert_eq!(t.read("cpu", "cpu.weight"), "20");
        }
    }

    // Shrinking both below the old memory limit, then growing both above
    // the old memory+swap limit: on v1 each needs its own write order.
    t.cgroup.apply(&memory(32 * MIB, total(32 * MIB))).unwrap();
    expect_memory(&t, 32 * MIB, total(32 * MIB));
    t.cgroup
        .apply(&memory(256 * MIB, total(512 * MIB)))
        .unwrap();
    expect_memory(&t, 256 * MIB, total(512 * MIB));

    // Lifting the limit.
    t.cgroup.apply(&memory(-1, None)).unwrap();
    let stats = t.cgroup.stats().unwrap();
    assert_eq!(stats.memory.unwrap().limit, None);
    assert_eq!(stats.pids.unwrap().limit, Some(32));
}

#[test]
fn process_joins_freezes_thaws_is_counted_killed_and_cleaned_up() {
    require_root();
    let hierarchy = Hierarchy::detect().unwrap();
    let t = TestCgroup::new(&hierarchy);
    let mut proc = Proc::shell(
        "read x; i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec busybox sleep 30",
    );
    let pid = proc.pid();
    t.cgroup.add_process(pid).unwrap();
    assert_eq!(t.cgroup.procs().unwrap(), [pid]);
    proc.go();
    wait_for("the busy loop to end in sleep", || {
        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(5).any(|w| w == b"sleep"))
    });

    t.cgroup.freeze().unwrap();
    assert!(t.cgroup.is_frozen().unwrap());
    match hierarchy.version() {
        CgroupVersion::V1 => {
            assert_eq!(t.read("freezer", "freezer.state"), "FROZEN");
            // v1 freezer tasks sleep uninterruptibly.
            assert_eq!(proc_state(pid), 'D');
        }
        CgroupVersion::V2 => {
            assert!(t.read("cgroup", "cgroup.events").contains("frozen 1"));
        }
    }
    t.cgroup.thaw().unwrap();
    assert!(!t.cgroup.is_frozen().unwrap());
    // Running for a moment, then back to its sleep.
    wait_for("the thawed process to sleep again", || {
        proc_state(pid) == 'S'
    });

    let stats = t.cgroup.stats().unwrap();
    let memory = stats.memory.expect("memory stats");
    assert!(memory.usage > 0, "{memory:?}");
    let cpu = stats.cpu.expect("cpu stats");
    assert!(cpu.usage_ns > 0, "{cpu:?}");
    assert!(cpu.user_ns + cpu.system_ns > 0, "{cpu:?}");
    let pids = stats.pids.expect("pids stats");
    assert_eq!(pids.current, 1);

    // Taken again as after a daemon restart.
    let adopted = hierarchy.open(t.cgroup.path()).unwrap();
    assert_eq!(adopted.procs().unwrap(), [pid]);

    adopted.kill_all(Signal::KILL).unwrap();
    assert_eq!(signal_of(proc.wait(Duration::from_secs(10))), Some(9));
    assert!(t.cgroup.procs().unwrap().is_empty());

    let dirs: Vec<PathBuf> = hierarchy
        .controllers()
        .iter()
        .filter_map(|c| t.cgroup.dir(c).map(Path::to_owned))
        .collect();
    assert!(!dirs.is_empty());
    t.cgroup.delete().unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    t.cgroup.delete().unwrap();
    assert!(matches!(
        hierarchy.open(t.cgroup.path()),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn process_over_the_memory_limit_is_oom_killed_and_counted() {
    require_root();
    let hierarchy = Hierarchy::detect().unwrap();
    let t = TestCgroup::new(&hierarchy);
    // No swap to escape to, where swap is accounted.
    let swap = has_swap_accounting(&t).then_some(32 * MIB);
    t.cgroup.apply(&memory(32 * MIB, swap)).unwrap();
    assert_eq!(t.cgroup.oom_kills().unwrap(), 0);

    // The string doubles until the cgroup is full. The address space limit
    // keeps the host safe should the cgroup limit not hold: the shell then
    // fails on its own, and the test with it.
    let mut proc =
        Proc::shell("read x; ulimit -v 1048576; x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done");
    t.cgroup.add_process(proc.pid()).unwrap();
    proc.go();
    let status = proc.wait(Duration::from_secs(60));
    assert_eq!(
        signal_of(status),
        Some(9),
        "expected an OOM kill, got {status:?}: {}",
        proc.stderr()
    );
    assert!(t.cgroup.oom_kills().unwrap() >= 1);
}

#[test]
fn pids_limit_makes_fork_fail() {
    require_root();
    let hierarchy = Hierarchy::detect().unwrap();
    let t = TestCgroup::new(&hierarchy);
    t.cgroup
        .apply(
            &LinuxResourcesBuilder::default()
                .pids(LinuxPidsBuilder::default().limit(5).build().unwrap())
                .build()
                .unwrap(),
        )
        .unwrap();
    let mut proc = Proc::shell(
        "read x; for i in 1 2 3 4 5 6 7 8; do busybox sleep 30 2>/dev/null & done; echo all forked >&2",
    );
    t.cgroup.add_process(proc.pid()).unwrap();
    proc.go();
    let status = proc.wait(Duration::from_secs(10));
    let stderr = proc.stderr();
    assert!(!status.success(), "all forks succeeded: {stderr}");
    assert!(stderr.contains("can't fork"), "{stderr}");
    assert!(!stderr.contains("all forked"), "{stderr}");
    let stats = t.cgroup.stats().unwrap();
    assert!(stats.pids.unwrap().current <= 5);
    // The sleeps that did start are still in the cgroup.
    assert_eq!(t.cgroup.procs().unwrap().len(), 4);
    t.cgroup.kill_all(Signal::KILL).unwrap();
    wait_for("the sleeps to die", || {
        t.cgroup.procs().is_ok_and(|p| p.is_empty())
    });
}

#[test]
fn cgroup2_mount_handles_membership_freezing_and_signals() {
    require_root();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = CgroupMounts::parse(&mountinfo)
        .v2
        .expect("this test needs a cgroup2 mount (every kernel since 4.5 has one)");
    // Membership, freezing and signals need no controller: enabling none
    // leaves a hybrid host's unified root as it was.
    let hierarchy = Hierarchy::v2(&root).unwrap().restrict_controllers(&[]);
    assert_eq!(hierarchy.version(), CgroupVersion::V2);
    let t = TestCgroup::new(&hierarchy);
    assert!(t.cgroup.open_dir().unwrap().is_some());

    let mut proc = Proc::shell("read x; exec busybox sleep 30");
    let pid = proc.pid();
    t.cgroup.add_process(pid).unwrap();
    assert_eq!(t.cgroup.procs().unwrap(), [pid]);
    proc.go();

    t.cgroup.freeze().unwrap();
    assert!(t.read("cgroup", "cgroup.events").contains("frozen 1"));
    t.cgroup.thaw().unwrap();
    assert!(t.read("cgroup", "cgroup.events").contains("frozen 0"));

    let stats = t.cgroup.stats().unwrap();
    assert!(stats.cpu.is_some(), "cpu.stat is always there on v2");
    assert_eq!(stats.memory, None, "no memory controller was enabled");
    assert!(matches!(
        t.cgroup.apply(&memory(64 * MIB, None)),
        Err(CgroupError::ControllerMissing { .. })
    ));

    // Not SIGKILL: signalled one by one, with the cgroup frozen meanwhile.
    t.cgroup.kill_all(Signal::TERM).unwrap();
    assert_eq!(signal_of(proc.wait(Duration::from_secs(10))), Some(15));
    assert!(!t.cgroup.is_frozen().unwrap(), "left thawed");
    t.cgroup.delete().unwrap();
    assert!(!root.join(t.cgroup.path()).exists());
}

#[test]
fn cgroup2_device_rules_are_enforced_by_an_ebpf_program() {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};
    require_root();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = CgroupMounts::parse(&mountinfo)
        .v2
        .expect("this test needs a cgroup2 mount (every kernel since 4.5 has one)");
    let hierarchy = Hierarchy::v2(&root).unwrap().restrict_controllers(&[]);
    assert!(hierarchy.can_filter_devices());
    let t = TestCgroup::new(&hierarchy);
    let rule = |allow: bool,
                typ: LinuxDeviceType,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    };
    // Docker's shape: deny everything, then allow what is needed. Here only
    // /dev/null (1:3), not /dev/zero (1:5).
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
        ])
        .build()
        .unwrap();
    t.cgroup.apply(&resources).unwrap();
    let mut proc = Proc::shell(
        "read x; busybox cat /dev/null; busybox head -c 1 /dev/zero >/dev/null; exit 0",
    );
    t.cgroup.add_process(proc.pid()).unwrap();
    proc.go();
    let status = proc.wait(Duration::from_secs(10));
    let err = proc.stderr();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("Operation not permitted"),
        "opening /dev/zero must fail: {err}"
    );
}
