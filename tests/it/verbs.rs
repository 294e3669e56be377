//! The container verbs beyond run/stop on real containers, through the
//! `stack` binary as root: `top`, `diff`, `cp` (Docker's path rules, tar
//! streams, symlinks resolved in the container, owners), `update` (live
//! cgroup limits that survive a restart), `container prune`, `port`,
//! `--mount`, and `ps`/`inspect`/`images` with `--format` and `--filter`.
//! Each test has its own state root, so they run in parallel.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::host::{Host, PASSWD};

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn top_shows_the_containers_processes_and_no_host_process() {
    let host = Host::new();
    host.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "bb",
        "sh",
        "-c",
        "sleep 999 & sleep 1000",
    ]);
    // Wait until the shell has started both.
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = host.ok(&["top", "busy"]);
        if out.contains("sleep 999") && out.contains("sleep 1000") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rows = lines(&out);
    let titles: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{out}"
    );
    // The shell became `sleep 1000` (its last command) with `sleep 999`
    // below it; nothing of the host (no shim, no init, no `stack`).
    assert_eq!(rows.len(), 3, "{out}");
    let field = |row: &str, n: usize| row.split_whitespace().nth(n).unwrap_or("").to_string();
    let commands: Vec<String> = rows[1..]
        .iter()
        .map(|r| r.split_whitespace().skip(7).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(commands, ["sleep 1000", "sleep 999"], "{out}");
    assert!(rows[1..].iter().all(|r| r.starts_with("root ")), "{out}");
    // The first is the container's pid 1 as the host sees it, the parent
    // of the second.
    let pid = host.inspect("busy")["State"]["Pid"].to_string();
    assert_eq!(field(rows[1], 1), pid);
    assert_eq!(field(rows[2], 2), pid);

    // ps options pass through.
    let out = host.ok(&["top", "busy", "-o", "pid,comm"]);
    let rows = lines(&out);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    let comms: Vec<&str> = rows[1..]
        .iter()
        .filter_map(|r| r.split_whitespace().nth(1))
        .collect();
    assert_eq!(comms, ["sleep", "sleep"], "{out}");
    let err = host.fails(&["top", "busy", "-o", "user=PID"]);
    assert!(err.contains("is not allowed"), "{err}");

    host.ok(&["stop", "-t", "1", "busy"]);
    assert!(host.fails(&["top", "busy"]).contains("not running"));
}

#[test]
fn diff_lists_added_changed_and_deleted_paths() {
    let host = Host::new();
    host.sleeper("changes", &["-v", "/data"]);
    // The runtime's own mount points are not changes.
    assert_eq!(host.ok(&["diff", "changes"]), "");
    host.sh(
        "changes",
        "touch /tmp/new && echo more >> /etc/passwd && rm /bin/cat && \
         mkdir -p /a/b && echo x > /a/b/c && rm -rf /home && mkdir /home && touch /home/z && \
         touch /data/in-volume",
    );
    let out = host.ok(&["diff", "changes"]);
    assert_eq!(
        lines(&out),
        [
            "A /a",
            "A /a/b",
            "A /a/b/c",
            "C /bin",
            "D /bin/cat",
            "C /etc/passwd",
            "C /home",
            "D /home/app",
            "A /home/z",
            "C /tmp",
            "A /tmp/new",
        ],
        "{out}"
    );
    // The same from a stopped container.
    host.ok(&["stop", "-t", "1", "changes"]);
    assert_eq!(host.ok(&["diff", "changes"]), out);
}

/// Reads every entry of a tar stream: (name, content).
fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            (name, content)
        })
        .collect()
}

#[test]
fn cp_out_of_a_container_follows_dockers_path_rules() {
    let host = Host::new();
    host.sleeper("src", &[]);
    host.sh(
        "src",
        "mkdir -p /d/sub && echo one > /d/f && echo two > /d/sub/g",
    );
    let w = host.work();
    let read = |p: &str| fs::read_to_string(w.join(p)).unwrap();

    // A file to a new name, and into an existing directory.
    host.ok(&["cp", "src:/d/f", "renamed"]);
    assert_eq!(read("renamed"), "one\n");
    fs::create_dir(w.join("existing")).unwrap();
    host.ok(&["cp", "src:/d/f", "existing"]);
    assert_eq!(read("existing/f"), "one\n");
    // Over an existing file.
    host.ok(&["cp", "src:/d/sub/g", "renamed"]);
    assert_eq!(read("renamed"), "two\n");
    // Into a directory that does not exist: an error, nothing made.
    let err = host.fails(&["cp", "src:/d/f", "missing/"]);
    assert!(err.contains("no such directory"), "{err}");
    assert!(!w.join("missing").exists());

    // A directory to a new name: the new directory has its contents.
    host.ok(&["cp", "src:/d", "copy"]);
    assert_eq!(read("copy/f"), "one\n");
    assert_eq!(read("copy/sub/g"), "two\n");
    // Into an existing directory: nested.
    host.ok(&["cp", "src:/d", "existing"]);
    assert_eq!(read("existing/d/sub/g"), "two\n");
    // `/.`: its contents into the existing directory.
    fs::create_dir(w.join("contents")).unwrap();
    host.ok(&["cp", "src:/d/.", "contents"]);
    assert_eq!(read("contents/f"), "one\n");
    assert!(!w.join("contents/d").exists());
    // A directory over a file.
    let err = host.fails(&["cp", "src:/d", "renamed"]);
    assert!(err.contains("cannot copy directory"), "{err}");
    // A file named with a trailing slash.
    assert!(!host.fails(&["cp", "src:/d/f/", "x"]).is_empty());
    // Nothing there.
    let err = host.fails(&["cp", "src:/nope", "x"]);
    assert!(err.contains("Could not find the file /nope"), "{err}");
}

#[test]
fn cp_into_a_container_follows_the_same_rules() {
    let host = Host::new();
    host.sleeper("dst", &[]);
    let w = host.work();
    fs::create_dir_all(w.join("tree/sub")).unwrap();
    fs::write(w.join("tree/a"), "A").unwrap();
    fs::write(w.join("tree/sub/b"), "B").unwrap();

    host.ok(&["cp", "tree/a", "dst:/tmp/named"]);
    assert_eq!(host.sh("dst", "cat /tmp/named"), "A");
    host.ok(&["cp", "tree/a", "dst:/tmp"]);
    assert_eq!(host.sh("dst", "cat /tmp/a"), "A");
    host.ok(&["cp", "tree", "dst:/tmp"]);
    assert_eq!(host.sh("dst", "cat /tmp/tree/sub/b"), "B");
    host.ok(&["cp", "tree/.", "dst:/fresh"]);
    assert_eq!(host.sh("dst", "cat /fresh/a /fresh/sub/b"), "AB");
    host.ok(&["cp", "tree", "dst:/fresh2"]);
    assert_eq!(host.sh("dst", "cat /fresh2/sub/b"), "B");
    let err = host.fails(&["cp", "tree", "dst:/tmp/named"]);
    assert!(err.contains("cannot copy directory"), "{err}");
    let err = host.fails(&["cp", "tree/a", "dst:/no/such/dir/"]);
    assert!(!err.is_empty());
    let err = host.fails(&["cp", "tree/a", "nosuch:/b"]);
    assert!(err.contains("No such container: nosuch"), "{err}");
    let err = host.fails(&["cp", "tree/a", "tree/b"]);
    assert!(err.contains("at least one container"), "{err}");
}

#[test]
fn cp_streams_tar_archives_both_ways() {
    let host = Host::new();
    host.sleeper("tars", &[]);
    let out = host.stack(&["cp", "tars:/etc/passwd", "-"]);
    assert!(out.status.success());
    let entries = tar_entries(&out.stdout);
    assert_eq!(
        entries,
        [("passwd".to_string(), PASSWD.as_bytes().to_vec())]
    );

    let out = host.stack(&["cp", "tars:/home", "-"]);
    let names: Vec<String> = tar_entries(&out.stdout).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["home/", "home/app/"]);
    let out = host.stack(&["cp", "tars:/home/.", "-"]);
    let names: Vec<String> = tar_entries(&out.stdout).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["./", "./app/"]);

    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o640);
    header.set_uid(42);
    header.set_gid(43);
    builder
        .append_data(&mut header, "streamed/file", &b"hello"[..])
        .unwrap();
    let tarball = builder.into_inner().unwrap();
    let out = host.stack_with_input(&["cp", "-", "tars:/tmp"], tarball.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        host.sh(
            "tars",
            "cat /tmp/streamed/file; stat -c ' %a %u:%g' /tmp/streamed/file"
        ),
        "hello 640 0:0\n"
    );
    let out = host.stack_with_input(&["cp", "-a", "-", "tars:/tmp"], tarball.clone());
    assert!(out.status.success());
    assert_eq!(
        host.sh("tars", "stat -c %u:%g /tmp/streamed/file"),
        "42:43\n"
    );
    let out = host.stack_with_input(&["cp", "-", "tars:/tmp/streamed/file"], tarball);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a directory"));
}

#[test]
fn cp_resolves_symlinks_inside_the_container_never_on_the_host() {
    let host = Host::new();
    host.sleeper("links", &[]);
    host.sh(
        "links",
        "ln -s /etc/passwd /tmp/abs && ln -s ../../../../../../etc/passwd /tmp/up && \
         ln -s /etc /tmp/etcdir && ln -s / /tmp/rootlink",
    );
    let w = host.work();
    // -L copies what the link points at, in the container.
    host.ok(&["cp", "-L", "links:/tmp/abs", "abs"]);
    assert_eq!(fs::read_to_string(w.join("abs")).unwrap(), PASSWD);
    host.ok(&["cp", "-L", "links:/tmp/up", "up"]);
    assert_eq!(fs::read_to_string(w.join("up")).unwrap(), PASSWD);
    // Without it, the link itself.
    host.ok(&["cp", "links:/tmp/abs", "link"]);
    assert_eq!(
        fs::read_link(w.join("link")).unwrap(),
        Path::new("/etc/passwd")
    );
    // Links in the middle of the path are followed in the container.
    host.ok(&["cp", "links:/tmp/etcdir/passwd", "mid"]);
    assert_eq!(fs::read_to_string(w.join("mid")).unwrap(), PASSWD);
    host.ok(&["cp", "links:/tmp/rootlink/../../etc/passwd", "dots"]);
    assert_eq!(fs::read_to_string(w.join("dots")).unwrap(), PASSWD);

    // Writing through links lands in the container, not on the host.
    let name = format!("stack-cp-{}", std::process::id());
    fs::write(w.join(&name), "inside").unwrap();
    host.ok(&["cp", &name, "links:/tmp/etcdir/"]);
    host.ok(&["cp", &name, "links:/tmp/rootlink/tmp/rootlink/etc"]);
    assert_eq!(host.sh("links", &format!("cat /etc/{name}")), "inside");
    assert!(
        !Path::new("/etc").join(&name).exists(),
        "written on the host"
    );
}

#[test]
fn cp_archive_keeps_owners_and_the_default_gives_them_to_root() {
    let host = Host::new();
    host.sleeper("owners", &[]);
    let w = host.work();
    fs::create_dir_all(w.join("owned/inner")).unwrap();
    fs::write(w.join("owned/inner/f"), "x").unwrap();
    for p in ["owned", "owned/inner", "owned/inner/f"] {
        std::os::unix::fs::chown(w.join(p), Some(1234), Some(5678)).unwrap();
    }
    host.ok(&["cp", "owned", "owners:/plain"]);
    assert_eq!(
        host.sh("owners", "stat -c %u:%g /plain /plain/inner /plain/inner/f"),
        "0:0\n0:0\n0:0\n"
    );
    host.ok(&["cp", "-a", "owned", "owners:/kept"]);
    assert_eq!(
        host.sh("owners", "stat -c %u:%g /kept /kept/inner /kept/inner/f"),
        "1234:5678\n1234:5678\n1234:5678\n"
    );
    // Out of the container, files belong to whoever copies (root here).
    host.sh(
        "owners",
        "touch /tmp/app-file && chown 1000:1000 /tmp/app-file",
    );
    host.ok(&["cp", "owners:/tmp/app-file", "from-container"]);
    let meta = fs::metadata(w.join("from-container")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[test]
fn cp_works_on_a_stopped_container_without_leaving_a_mount() {
    let host = Host::new();
    let id = host.ok(&["create", "--name", "idle", "bb", "cat", "/tmp/in"]);
    let id = id.trim();
    let w = host.work();
    fs::write(w.join("in"), "from the host\n").unwrap();
    host.ok(&["cp", "in", "idle:/tmp/in"]);
    host.ok(&["cp", "idle:/etc/passwd", "passwd"]);
    assert_eq!(fs::read_to_string(w.join("passwd")).unwrap(), PASSWD);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(id),
        "a mount of the container is left: {mounts}"
    );
    assert_eq!(host.ok(&["start", "-a", "idle"]), "from the host\n");
    // And after it ran.
    host.ok(&["cp", "idle:/tmp/in", "again"]);
    assert_eq!(
        fs::read_to_string(w.join("again")).unwrap(),
        "from the host\n"
    );
}

/// The content of a cgroup file of container `name`.
fn cgroup_file(host: &Host, name: &str, controller: &str, v1: &str, v2: &str) -> String {
    let id = host.ok(&["inspect", "-f", "{{.Id}}", name]);
    crate::host::cgroup_file(id.trim(), controller, v1, v2)
}

#[test]
fn update_changes_limits_live_and_they_survive_a_restart() {
    let host = Host::new();
    host.sleeper("tuned", &["-m", "64m"]);
    let memory =
        |h: &Host| cgroup_file(h, "tuned", "memory", "memory.limit_in_bytes", "memory.max");
    let quota = |h: &Host| cgroup_file(h, "tuned", "cpu", "cpu.cfs_quota_us", "cpu.max");
    let pids = |h: &Host| cgroup_file(h, "tuned", "pids", "pids.max", "pids.max");
    assert_eq!(memory(&host), (64u64 << 20).to_string());

    let out = host.ok(&[
        "update",
        "-m",
        "96m",
        "--memory-swap",
        "192m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "40",
        "--restart",
        "on-failure:2",
        "tuned",
    ]);
    assert_eq!(out, "tuned\n");
    let check = |h: &Host| {
        assert_eq!(memory(h), (96u64 << 20).to_string());
        let q = quota(h);
        assert!(q == "50000" || q.starts_with("50000 "), "{q}");
        assert_eq!(pids(h), "40");
    };
    check(&host);
    let resources = host.ok(&["inspect", "-f", "{{json .HostConfig.Resources}}", "tuned"]);
    let resources: serde_json::Value = serde_json::from_str(&resources).unwrap();
    assert_eq!(resources["memory"], serde_json::json!(96 << 20));
    assert_eq!(resources["cpus"], serde_json::json!(0.5));

    // The restart policy is in the record, where the supervisor reads it.
    let id = host.ok(&["inspect", "-f", "{{.Id}}", "tuned"]);
    let record: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            host.root()
                .join("containers")
                .join(id.trim())
                .join("container.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["extra"]["restart"],
        serde_json::json!({"name": "on-failure", "maximum_retry_count": 2})
    );

    // A new process after a stop and start gets the same limits.
    host.ok(&["stop", "-t", "1", "tuned"]);
    host.ok(&["start", "tuned"]);
    check(&host);

    // Docker's conflicts.
    let err = host.fails(&["update", "--cpu-period", "20000", "tuned"]);
    assert!(err.contains("Conflicting options"), "{err}");
    let err = host.fails(&["update", "-m", "300m", "tuned"]);
    assert!(err.contains("memoryswap"), "{err}");
    assert!(
        host.fails(&["update", "--restart", "sometimes", "tuned"])
            .contains("restart")
    );
    assert!(
        host.fails(&["update", "tuned"])
            .contains("one or more flags")
    );
    // A stopped container is updated for its next start.
    host.ok(&["stop", "-t", "1", "tuned"]);
    host.ok(&["update", "--pids-limit", "33", "tuned"]);
    host.ok(&["start", "tuned"]);
    assert_eq!(pids(&host), "33");
}

#[test]
fn container_prune_removes_only_stopped_containers() {
    let host = Host::new();
    let running = host.sleeper("running", &[]);
    let paused = host.sleeper("paused", &[]);
    host.ok(&["pause", "paused"]);
    let kept = host.ok(&[
        "create", "--name", "kept", "--label", "keep=yes", "bb", "true",
    ]);
    let created = host.ok(&["create", "--name", "created", "bb", "true"]);
    let exited = host.ok(&[
        "create",
        "--name",
        "exited",
        "bb",
        "sh",
        "-c",
        "echo data > /f",
    ]);
    host.ok(&["start", "-a", "exited"]);

    // Nothing older than an hour.
    let out = host.ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    let out = host.ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    let mut deleted: Vec<&str> = out.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    deleted.sort();
    let mut want = vec![created.trim(), exited.trim()];
    want.sort();
    assert_eq!(deleted, want, "{out}");
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.ends_with("\nTotal reclaimed space: 5B\n"), "{out}");

    let out = host.ok(&["container", "prune", "-f"]);
    assert_eq!(out.lines().nth(1), Some(kept.trim()));
    let left = host.ok(&["ps", "-a", "-q", "--no-trunc"]);
    let mut left: Vec<&str> = left.lines().collect();
    left.sort();
    let mut want = vec![running.as_str(), paused.as_str()];
    want.sort();
    assert_eq!(left, want);
    assert!(
        host.fails(&["container", "prune", "-f", "--filter", "color=red"])
            .contains("invalid filter")
    );
}

#[test]
fn port_prints_nothing_without_published_ports() {
    let host = Host::new();
    host.sleeper("ported", &[]);
    assert_eq!(host.ok(&["port", "ported"]), "");
    assert!(
        host.fails(&["port", "ported", "80"])
            .contains("no public port")
    );
    assert!(
        host.fails(&["port", "nosuch"])
            .contains("No such container: nosuch")
    );
}

#[test]
fn mount_flag_binds_need_their_source() {
    let host = Host::new();
    let w = host.work();
    let missing = w.join("not-there");
    let err = host.fails(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,source={},target=/x", missing.display()),
        "bb",
        "true",
    ]);
    assert!(err.contains("bind source path does not exist"), "{err}");
    // The diagnostic may wrap the path anywhere.
    assert!(
        err.replace(' ', "")
            .contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(!missing.exists());
    // `bind-create-src` and `-v` make it instead.
    host.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={},dst=/x,bind-create-src", missing.display()),
        "bb",
        "true",
    ]);
    assert!(missing.is_dir());

    fs::create_dir(w.join("shared")).unwrap();
    fs::write(w.join("shared/file"), "on the host").unwrap();
    let out = host.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,\"source=./shared\",destination=/data,readonly",
        "--mount",
        "type=volume,src=named,dst=/vol",
        "--mount",
        "type=tmpfs,dst=/scratch,tmpfs-size=1m,tmpfs-mode=0700",
        "bb",
        "sh",
        "-c",
        "cat /data/file; touch /data/no 2>/dev/null || echo ' read-only'; \
         touch /vol/ok && echo volume; stat -c %a /scratch; grep /scratch /proc/mounts | grep -c size=1024k",
    ]);
    assert_eq!(out, "on the host read-only\nvolume\n700\n1\n");
    let err = host.fails(&["run", "--rm", "--mount", "type=bind,src=/a", "bb", "true"]);
    assert!(err.contains("target is required"), "{err}");
    let err = host.fails(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,dst=/a,bogus=1",
        "bb",
        "true",
    ]);
    assert!(err.contains("unknown option 'bogus'"), "{err}");
}

#[test]
fn ps_and_inspect_take_go_templates_and_filters() {
    let host = Host::new();
    host.sleeper("web-1", &["--label", "tier=front", "--label", "team=a"]);
    host.sleeper("db", &["--label", "tier=back"]);
    host.ok(&[
        "create",
        "--name",
        "job",
        "--label",
        "tier=batch",
        "bb",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(host.stack(&["start", "-a", "job"]).status.code(), Some(3));
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["ps"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--format", "{{.Names}}"]);
        host.ok(&full).lines().map(str::to_string).collect()
    };
    assert_eq!(names(&[]), ["db", "web-1"]);
    assert_eq!(names(&["-a"]), ["job", "db", "web-1"]);
    assert_eq!(names(&["-a", "--filter", "label=tier=front"]), ["web-1"]);
    assert_eq!(
        names(&["-a", "--filter", "label=tier"]),
        ["job", "db", "web-1"]
    );
    assert_eq!(
        names(&["-a", "--filter", "label=tier", "--filter", "label=team"]),
        ["web-1"]
    );
    assert_eq!(names(&["--filter", "status=exited"]), ["job"]);
    assert_eq!(names(&["-a", "--filter", "exited=3"]), ["job"]);
    assert_eq!(names(&["-a", "--filter", "exited=0"]), Vec::<String>::new());
    assert_eq!(names(&["-a", "--filter", "name=^db$"]), ["db"]);
    assert_eq!(
        names(&["-a", "--filter", "name=web", "--filter", "name=db"]),
        ["db", "web-1"]
    );
    assert_eq!(names(&["-a", "--filter", "before=db"]), ["web-1"]);
    assert_eq!(names(&["-a", "--filter", "since=db"]), ["job"]);
    assert_eq!(
        names(&["-a", "--filter", "ancestor=bb"]),
        ["job", "db", "web-1"]
    );
    assert_eq!(
        names(&["-a", "--filter", "is-task=false"]),
        ["job", "db", "web-1"]
    );
    assert_eq!(
        names(&["-a", "--filter", "health=none"]),
        ["job", "db", "web-1"]
    );
    assert_eq!(names(&["-l"]), ["job"]);
    assert_eq!(names(&["-n", "2"]), ["job", "db"]);

    // Tables have Docker's headers and columns.
    let table = host.ok(&[
        "ps",
        "-a",
        "--format",
        "table {{.Names}}\\t{{.State}}\\t{{.Label \"tier\"}}",
    ]);
    assert_eq!(
        lines(&table),
        [
            "NAMES     STATE     LABEL",
            "job       exited    batch",
            "db        running   back",
            "web-1     running   front",
        ],
        "{table}"
    );
    let json = host.ok(&["ps", "--filter", "name=db", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(row["Names"], "db");
    assert_eq!(row["State"], "running");
    assert_eq!(row["Command"], "\"sleep 1000\"");
    assert!(row["Status"].as_str().unwrap().starts_with("Up "), "{row}");
    assert!(
        row["Labels"].as_str().unwrap().contains("tier=back"),
        "{row}"
    );
    let default = host.ok(&["ps"]);
    assert!(
        default.starts_with("CONTAINER ID   IMAGE     COMMAND"),
        "{default}"
    );
    let sizes = host.ok(&[
        "ps",
        "-a",
        "-s",
        "--filter",
        "name=job",
        "--format",
        "{{.Size}}",
    ]);
    assert!(sizes.contains("(virtual "), "{sizes}");

    // inspect --format, one line per container.
    let out = host.ok(&[
        "inspect",
        "-f",
        "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{index .Config.Labels \"tier\"}}",
        "job",
        "db",
    ]);
    assert_eq!(out, "/job exited 3 batch\n/db running 0 back\n");
    let out = host.ok(&["inspect", "-f", "{{json .Config.Labels}}", "web-1"]);
    let labels: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(labels["team"], "a");
    let out = host.ok(&[
        "inspect",
        "--format",
        "{{if .State.Running}}up{{else}}down{{end}} {{range .Args}}[{{.}}]{{end}} {{upper .Config.Image}}",
        "db",
    ]);
    assert_eq!(out, "up [1000] BB\n");

    // images takes templates too.
    let out = host.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{len .ID}}"]);
    assert_eq!(out, "bb:latest 12\n");

    // Bad input is an error, never a panic.
    for bad in [
        vec!["ps", "--format", "{{.Names"],
        vec!["ps", "--format", "{{nosuch .Names}}"],
        vec!["ps", "--filter", "color=red"],
        vec!["ps", "--filter", "status=sleeping"],
        vec!["ps", "--filter", "nonsense"],
        vec!["inspect", "-f", "{{.Name.Deeper}}", "db"],
        vec!["inspect", "-f", "{{end}}", "db"],
    ] {
        let err = host.fails(&bad);
        assert!(!err.is_empty(), "{bad:?}");
    }
}
