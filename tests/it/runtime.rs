//! Real containers from a busybox image, run by the `stack` binary as root:
//! isolation, limits, security defaults, the shim's supervision, exec and
//! logs. Each test has its own state root, so they run in parallel.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::Host;

#[test]
fn the_container_is_pid_1_and_sees_no_host_process() {
    let host = Host::new();
    let (code, out, err) = host.run(&[], &["sh", "-c", "echo $$; ps -o pid,comm"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    let pids: Vec<&str> = lines
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    // The shell and ps: nothing of the host.
    assert!(pids.len() <= 2, "processes visible: {out}");
}

#[test]
fn hostname_and_domainname_are_set() {
    let host = Host::new();
    let (code, out, err) = host.run(
        &["--hostname", "box", "--domainname", "example.org"],
        &[
            "sh",
            "-c",
            "hostname; cat /proc/sys/kernel/domainname; cat /etc/hostname",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "box\nexample.org\nbox\n");
}

#[test]
fn the_root_is_the_image_overlay_and_the_host_is_not_visible() {
    let host = Host::new();
    let (code, out, err) = host.run(&[], &["cat", "/proc/self/mountinfo"]);
    assert_eq!(code, 0, "{err}");
    let root_line = out
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(root_line.contains(" - overlay "), "root mount: {root_line}");
    // Nothing of the host's tree is mounted, and its directories are absent.
    let (_, ls, _) = host.run(&[], &["ls", "/"]);
    assert!(!ls.contains("usr") && !ls.contains("work"), "{ls}");
    for masked in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/interrupts",
    ] {
        // Masked where the host kernel has them.
        if Path::new(masked).exists() {
            assert!(
                out.contains(&format!(" {masked} ")),
                "{masked} is not masked"
            );
        }
    }
    assert!(out.contains(" /proc/sys ro,"), "/proc/sys is not read-only");
}

#[test]
fn exit_codes_propagate() {
    let host = Host::new();
    assert_eq!(host.run(&[], &["sh", "-c", "exit 3"]).0, 3);
    assert_eq!(host.run(&[], &["true"]).0, 0);
    let (code, _, err) = host.run(&[], &["/no/such/program"]);
    assert_eq!(code, 3, "a program that cannot start fails the command");
    assert!(err.contains("/no/such/program"), "{err}");
}

#[test]
fn effective_capabilities_are_dockers_default_set() {
    let host = Host::new();
    let (code, out, err) = host.run(&[], &["grep", "Cap", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    let (_, out, _) = host.run(
        &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
        &["grep", "CapEff", "/proc/self/status"],
    );
    assert!(out.contains("CapEff:\t0000000000001000"), "{out}");
    let (_, out, _) = host.run(&["-u", "app"], &["grep", "CapEff", "/proc/self/status"]);
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "a non-root user has no effective capability: {out}"
    );
}

#[test]
fn the_default_seccomp_profile_blocks_namespace_and_mount_calls() {
    let host = Host::new();
    let (code, _, err) = host.run(&[], &["unshare", "-m", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let (_, out, _) = host.run(&[], &["grep", "Seccomp:", "/proc/self/status"]);
    assert!(out.contains("Seccomp:\t2"), "filter mode expected: {out}");
    let (_, out, _) = host.run(
        &["--security-opt", "seccomp=unconfined"],
        &["grep", "Seccomp:", "/proc/self/status"],
    );
    assert!(out.contains("Seccomp:\t0"), "{out}");
}

#[test]
fn a_read_only_root_refuses_writes() {
    let host = Host::new();
    let (code, _, err) = host.run(&["--read-only"], &["touch", "/x"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = host.run(&["--read-only", "--tmpfs", "/tmp"], &["touch", "/tmp/x"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn users_switch_by_name_with_their_groups() {
    let host = Host::new();
    let (code, out, err) = host.run(&["-u", "app"], &["id"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "uid=1000(app) gid=1000(app) groups=10(wheel)");
    let (_, out, _) = host.run(&["-u", "4242:4343"], &["id", "-u"]);
    assert_eq!(out.trim(), "4242");
    let (code, _, err) = host.run(&["-u", "nobody-here"], &["id"]);
    assert_ne!(code, 0);
    assert!(err.contains("unable to find user nobody-here"), "{err}");
}

#[test]
fn a_memory_limit_ends_in_an_oom_kill_that_inspect_reports() {
    let host = Host::new();
    let out = host.stack(&[
        "run",
        "--name",
        "hog",
        "-m",
        "32m",
        "bb",
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    ]);
    assert_eq!(out.status.code(), Some(137));
    let state = &host.inspect("hog")["State"];
    assert_eq!(state["OOMKilled"], true);
    assert_eq!(state["ExitCode"], 137);
}

#[test]
fn a_pids_limit_makes_fork_fail() {
    let host = Host::new();
    let (_, out, err) = host.run(
        &["--pids-limit", "5"],
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait",
        ],
    );
    assert!(err.contains("can't fork"), "{out}{err}");
}

#[test]
fn a_cpu_quota_caps_measured_usage() {
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "--name",
        "spin",
        "--cpus",
        "0.2",
        "bb",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let usage_ns = cpu_usage(&host, "spin");
    let elapsed = started.elapsed().as_nanos() as f64;
    let share = usage_ns as f64 / elapsed;
    // One core flat out would be 1.0; the quota is 0.2 of one.
    assert!(
        share > 0.05 && share < 0.4,
        "CPU share {share:.2} for a quota of 0.2"
    );
}

fn cpu_usage(host: &Host, name: &str) -> u64 {
    let id = host.inspect(name)["Id"].as_str().unwrap().to_string();
    for base in ["/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"] {
        let path = Path::new(base)
            .join("stack")
            .join(&id)
            .join("cpuacct.usage");
        if let Ok(text) = fs::read_to_string(&path) {
            return text.trim().parse().unwrap();
        }
    }
    let stat =
        fs::read_to_string(Path::new("/sys/fs/cgroup/stack").join(&id).join("cpu.stat")).unwrap();
    let usec: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .parse()
        .unwrap();
    usec * 1000
}

#[test]
fn stop_sends_the_stop_signal_then_sigkill_after_the_grace_period() {
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "bb",
        "sh",
        "-c",
        "trap 'echo got TERM; exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    host.ok(&["stop", "polite"]);
    assert_eq!(host.inspect("polite")["State"]["ExitCode"], 0);
    assert!(host.ok(&["logs", "polite"]).contains("got TERM"));

    // pid 1 ignores SIGTERM unless it handles it: SIGKILL after the grace period.
    host.ok(&["run", "-d", "--name", "stubborn", "bb", "sleep", "1000"]);
    host.ok(&["stop", "-t", "1", "stubborn"]);
    assert_eq!(host.inspect("stubborn")["State"]["ExitCode"], 137);
}

#[test]
fn init_reaps_orphaned_zombies() {
    let host = Host::new();
    let script = "sh -c 'sleep 0.2 & exit 0'; sleep 1; ps -o stat,comm";
    let (code, out, err) = host.run(&["--init"], &["sh", "-c", script]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with('Z')),
        "zombies left: {out}"
    );
    let (_, out, _) = host.run(&["--init"], &["ps", "-o", "pid,comm"]);
    assert!(
        out.lines()
            .nth(2)
            .is_some_and(|l| l.trim_start().starts_with('2')),
        "the program runs under the init: {out}"
    );
}

#[test]
fn regress_7_a_program_that_ends_at_once_under_an_init_ends_its_container() {
    // The init forked the program before blocking SIGCHLD: a program that
    // ended in between left pid 1 waiting forever, the container "Up".
    let bip = format!("10.173.{}.1/24", std::process::id() % 250);
    let host = Host::with_daemon(&["--bip", &bip]);
    for _ in 0..10 {
        let (code, _, err) = host.run(&["--init", "--network", "none"], &["false"]);
        assert_eq!(code, 1, "{err}");
    }
}

#[test]
fn a_detached_container_with_an_init_starts_and_stops() {
    // The init stays as pid 1 and never execs: the start must not wait for
    // it to close what the shim watches.
    let host = Host::new();
    host.sleeper("tiny", &["--init", "--network", "none"]);
    assert_eq!(host.inspect("tiny")["State"]["Running"], true);
    let ps = host.sh("tiny", "ps -o pid,comm");
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["2", "sleep"]),
        "the program runs under the init: {ps}"
    );
    host.ok(&["stop", "-t", "5", "tiny"]);
    assert_eq!(host.inspect("tiny")["State"]["Running"], false);
}

#[test]
fn exec_joins_the_running_container() {
    let host = Host::new();
    host.ok(&[
        "run", "-d", "--name", "svc", "-h", "svc-host", "bb", "sleep", "1000",
    ]);
    let out = host.ok(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "hostname; ps -o pid,comm | grep -c sleep",
    ]);
    assert_eq!(out, "svc-host\n1\n");
    let out = host.ok(&[
        "exec",
        "-u",
        "app",
        "-w",
        "/tmp",
        "-e",
        "X=1",
        "svc",
        "sh",
        "-c",
        "id -u; pwd; echo $X",
    ]);
    assert_eq!(out, "1000\n/tmp\n1\n");
    let out = host.stack(&["exec", "svc", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn killing_the_cli_leaves_the_container_running_and_its_log_complete() {
    let host = Host::new();
    let mut cli = host
        .cmd(&[
            "run",
            "--name",
            "survivor",
            "bb",
            "sh",
            "-c",
            "for i in $(seq 1 30); do echo line $i; sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(cli.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "line 1\n");
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert_eq!(host.ok(&["wait", "survivor"]).trim(), "0");
    let logs = host.ok(&["logs", "survivor"]);
    let expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(logs, expected);
}

#[test]
fn log_rotation_stays_within_its_bound() {
    let host = Host::new();
    host.ok(&[
        "run",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=3",
        "bb",
        "sh",
        "-c",
        "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c 200000000 >/dev/stdout",
    ]);
    let id = host.inspect("chatty")["Id"].as_str().unwrap().to_string();
    let dir = host.root().join("containers").join(&id);
    let total: u64 = fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        total <= 3 * 1024 * 1024 + 64 * 1024,
        "logs take {total} bytes"
    );
    let tail = host.ok(&["logs", "--tail", "1", "chatty"]);
    assert!(tail.starts_with("0123456789"), "{tail}");
}

#[test]
fn a_user_namespace_maps_root_to_an_unprivileged_host_uid() {
    let host = Host::new();
    let (code, out, err) = host.run(
        &["--userns", "100000:65536"],
        &["sh", "-c", "id -u; cat /proc/self/uid_map"],
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"));
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
}

#[test]
fn names_are_unique_and_containers_are_listed() {
    let host = Host::new();
    host.ok(&["create", "--name", "one", "bb", "true"]);
    let out = host.stack(&["create", "--name", "one", "bb", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));
    let ps = host.ok(&["ps", "-a"]);
    assert!(ps.contains("one") && ps.contains("Created"), "{ps}");
    assert_eq!(host.ok(&["start", "-a", "one"]), "");
    assert!(
        host.ok(&["ps", "-a", "--filter", "status=exited"])
            .contains("one")
    );
    host.ok(&["rm", "one"]);
    assert!(!host.ok(&["ps", "-a"]).contains("one"));
}

#[test]
fn images_in_use_by_a_container_are_not_removed() {
    let host = Host::new();
    host.ok(&["create", "--name", "user", "bb", "true"]);
    let out = host.stack(&["rmi", "bb"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("used by container"), "{err}");
    // Forced: the name goes, the image and its layers stay for the container.
    host.ok(&["rmi", "-f", "bb"]);
    host.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(host.ok(&["start", "-a", "user"]), "");
    assert_eq!(host.inspect("user")["State"]["ExitCode"], 0);
}

#[test]
fn commit_and_export_carry_a_containers_changes() {
    let host = Host::new();
    host.ok(&[
        "run",
        "--name",
        "changed",
        "bb",
        "sh",
        "-c",
        "echo data > /root/file; rm /bin/yes; mkdir /opt",
    ]);
    let id = host.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/root/file\"]",
        "-m",
        "snapshot",
        "changed",
        "snap:1",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    let out = host.stack(&["run", "--rm", "snap:1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
    let (code, _, _) = host.run(&[], &["ls", "/bin/yes"]);
    assert_eq!(code, 0, "bb itself is unchanged");
    let out = host.stack(&["run", "--rm", "snap:1", "ls", "/bin/yes"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the deletion is a whiteout in the new layer"
    );
    assert!(host.ok(&["history", "snap:1"]).contains("snapshot"));

    let tar = host.work().join("export.tar");
    host.ok(&["export", "-o", tar.to_str().unwrap(), "changed"]);
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    for entry in archive.entries().unwrap() {
        names.push(
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    assert!(
        names.iter().any(|n| n.trim_end_matches('/') == "root/file"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.trim_end_matches('/') == "opt"));
    assert!(!names.iter().any(|n| n == "bin/yes"));
    assert!(names.iter().any(|n| n == "bin/busybox"));
}

#[test]
fn named_volumes_are_seeded_from_the_image_and_outlive_containers() {
    let host = Host::new();
    // /etc of the image lands in the new volume, and what a container writes stays.
    let (code, out, err) = host.run(
        &["-v", "conf:/etc"],
        &["sh", "-c", "cat /etc/group | head -1; echo kept > /etc/new"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "root:x:0:\n");
    let (_, out, _) = host.run(&["-v", "conf:/etc"], &["cat", "/etc/new"]);
    assert_eq!(out, "kept\n");
    // A bind mount shows the host directory; read-only binds refuse writes.
    let dir = host.work().join("shared");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("hello"), "from the host\n").unwrap();
    let bind = format!("{}:/data:ro", dir.display());
    let (_, out, _) = host.run(&["-v", &bind], &["cat", "/data/hello"]);
    assert_eq!(out, "from the host\n");
    let (code, _, _) = host.run(&["-v", &bind], &["touch", "/data/x"]);
    assert_ne!(code, 0);
}

#[test]
fn an_external_oci_runtime_runs_the_same_spec() {
    let host = Host::new();
    assert!(
        Path::new("/usr/sbin/runc").exists() || Path::new("/usr/bin/runc").exists(),
        "runc is required for this test: apt-get install runc"
    );
    let (code, out, err) = host.run(
        &["--runtime", "runc", "-u", "app"],
        &[
            "sh",
            "-c",
            "echo $$; id -u; grep CapEff /proc/self/status; exit 4",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert_eq!(out, "1\n1000\nCapEff:\t0000000000000000\n");
    host.ok(&[
        "run",
        "-d",
        "--name",
        "outside",
        "--runtime",
        "runc",
        "bb",
        "sleep",
        "1000",
    ]);
    assert_eq!(
        host.ok(&[
            "exec",
            "outside",
            "sh",
            "-c",
            "echo in; ps -o pid,comm | grep -c sleep"
        ]),
        "in\n1\n"
    );
    host.ok(&["stop", "-t", "1", "outside"]);
    assert!(
        host.ok(&["ps", "-a", "--filter", "status=exited"])
            .contains("outside")
    );
}

#[test]
fn attach_feeds_stdin_and_streams_output_until_the_exit() {
    use std::io::Write;
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        "bb",
        "sh",
        "-c",
        "while read l; do echo got $l; done; exit 5",
    ]);
    let mut attach = host
        .cmd(&["attach", "echoer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    attach
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = attach.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got one\ngot two\n");
    assert_eq!(
        out.status.code(),
        Some(5),
        "the container's exit code comes back"
    );
    assert_eq!(host.ok(&["logs", "echoer"]), "got one\ngot two\n");
}

#[test]
fn pause_freezes_every_process_and_unpause_thaws_them() {
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "bb",
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.05; done",
    ]);
    host.ok(&["pause", "ticker"]);
    assert!(host.ok(&["ps"]).contains("(Paused)"));
    let id = host.inspect("ticker")["Id"].as_str().unwrap().to_string();
    let freezer = Path::new("/sys/fs/cgroup/freezer/stack")
        .join(&id)
        .join("freezer.state");
    if freezer.exists() {
        assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    }
    let before = host.ok(&["logs", "ticker"]).lines().count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        host.ok(&["logs", "ticker"]).lines().count(),
        before,
        "a frozen container writes nothing"
    );
    let out = host.stack(&["exec", "ticker", "true"]);
    assert!(
        !out.status.success(),
        "exec into a paused container is refused"
    );
    host.ok(&["unpause", "ticker"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(host.ok(&["logs", "ticker"]).lines().count() > before);
    let stats = host.ok(&["stats", "ticker"]);
    let row = stats
        .lines()
        .find(|l| l.contains("ticker"))
        .unwrap_or_default()
        .to_string();
    assert!(
        row.contains("B / unlimited"),
        "memory use is shown: {stats}"
    );
}

#[test]
fn only_stdio_reaches_the_container() {
    let host = Host::new();
    // The caller holds fd 7 open without close-on-exec; it must not leak
    // through the CLI and the shim into the container.
    let script = format!(
        "exec 7</dev/null; {} --root {} run --rm bb ls /proc/self/fd",
        env!("CARGO_BIN_EXE_stack"),
        host.root().display()
    );
    let out = Command::new("/bin/sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 0, 1, 2 and the directory ls itself is reading.
    let fds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{fds:?}");
}
