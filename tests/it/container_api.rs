//! The container verbs' API routes on a real daemon, spoken to in raw
//! HTTP on its socket: the archive stat header (`HEAD`), hostile tar
//! uploads refused or kept inside the container, `update` changing a
//! running container's cgroup, `prune` with `until` and `label` filters,
//! `wait?condition=next-exit` answered from the event bus, and Docker's
//! status codes for bad requests.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};
use stack::api::client::segment;

use crate::host::{Host, PASSWD, cgroup_file};

fn json_of(answer: &crate::host::Answer) -> Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.text()))
}

/// Now as Unix seconds with nanoseconds (a `since`/`until` value).
fn unix_now() -> String {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// The actions of the container events between `since` and now.
fn actions_since(host: &Host, since: &str, filter: &str) -> Vec<(String, String)> {
    let out = host.ok(&[
        "events",
        "--since",
        since,
        "--until",
        &unix_now(),
        "--filter",
        filter,
        "--format",
        "json",
    ]);
    out.lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            (
                e["Action"].as_str().unwrap_or_default().to_string(),
                e["Actor"]["ID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `HEAD …/archive?path=PATH` of `container`: the answer and its stat
/// header decoded.
fn head_stat(host: &Host, container: &str, path: &str) -> (crate::host::Answer, Value) {
    let answer = host.http(
        "HEAD",
        &format!("/v1.0/containers/{container}/archive?path={path}"),
        "text/plain",
        b"",
    );
    let stat = answer
        .headers
        .get("x-docker-container-path-stat")
        .map_or(Value::Null, |h| {
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(h).unwrap())
                .unwrap()
        });
    (answer, stat)
}

#[test]
fn archive_head_answers_the_stat_header_and_no_body() {
    let host = Host::new();
    host.sleeper("statted", &[]);
    host.sh("statted", "ln -s /etc/passwd /tmp/link");

    let (answer, stat) = head_stat(&host, "statted", "/etc/passwd");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.body.is_empty(), "HEAD has a body: {}", answer.text());
    assert_eq!(stat["name"], "passwd");
    assert_eq!(stat["size"], PASSWD.len());
    assert_eq!(stat["mode"], 0o644, "{stat}");
    assert_eq!(stat["linkTarget"], "");
    assert!(stat["mtime"].as_str().unwrap().ends_with('Z'), "{stat}");

    // A symlink is not followed; its target is resolved in the container.
    let (_, stat) = head_stat(&host, "statted", "/tmp/link");
    assert_eq!(stat["linkTarget"], "/etc/passwd");
    assert_ne!(stat["mode"].as_u64().unwrap() & (1 << 27), 0, "{stat}");
    // A directory has Go's ModeDir bit.
    let (_, stat) = head_stat(&host, "statted", "/etc");
    assert_ne!(stat["mode"].as_u64().unwrap() & (1 << 31), 0, "{stat}");

    // Docker's status codes: no such path, no such container, no path.
    for (path, status) in [
        ("/v1.0/containers/statted/archive?path=/nope", 404),
        ("/v1.0/containers/nosuch/archive?path=/etc", 404),
        ("/v1.0/containers/statted/archive", 400),
    ] {
        let answer = host.http("HEAD", path, "text/plain", b"");
        assert_eq!(answer.status, status, "HEAD {path}");
        assert!(!answer.headers.contains_key("x-docker-container-path-stat"));
        // GET answers the same, with the message.
        let answer = host.http("GET", path, "text/plain", b"");
        assert_eq!(answer.status, status, "GET {path}: {}", answer.text());
        let message = json_of(&answer)["message"].as_str().unwrap().to_string();
        assert!(!message.is_empty());
        if path.contains("nosuch") {
            assert!(message.contains("No such container: nosuch"), "{message}");
        }
        if status == 400 {
            assert!(message.contains("path"), "{message}");
        }
    }
}

/// A tar entry written as is: names and link targets that `tar::Builder`
/// would refuse to write.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_old();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(u64::try_from(data.len()).unwrap());
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn put_tar(host: &Host, container: &str, path: &str, tar: &[u8]) -> crate::host::Answer {
    host.http(
        "PUT",
        &format!("/v1.0/containers/{container}/archive?path={path}&noOverwriteDirNonDir=1"),
        "application/x-tar",
        tar,
    )
}

#[test]
fn hostile_tar_uploads_are_refused_or_stay_inside_the_container() {
    let host = Host::new();
    host.sleeper("target", &[]);
    // A directory on the host the archives aim at; it must stay empty.
    let aim = host.work().join("aim");
    fs::create_dir(&aim).unwrap();
    let aim_text = aim.to_str().unwrap().trim_start_matches('/').to_string();
    let climb = "../".repeat(12);
    let host_file = host.work().join("precious");
    fs::write(&host_file, "host data").unwrap();
    let host_file_text = host_file
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();

    // `..` out of the extraction point: refused with a clear 400.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        &format!("{climb}{aim_text}/escaped"),
        tar::EntryType::Regular,
        "",
        b"out",
    );
    let answer = put_tar(&host, "target", "/tmp", &b.into_inner().unwrap());
    assert_eq!(answer.status, 400, "{}", answer.text());
    let message = json_of(&answer)["message"].as_str().unwrap().to_string();
    assert!(message.contains("refuse entry"), "{message}");
    // A hard link to a host file by climbing: refused too.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        "hard",
        tar::EntryType::Link,
        &format!("{climb}{host_file_text}"),
        b"",
    );
    let answer = put_tar(&host, "target", "/tmp", &b.into_inner().unwrap());
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("refuse link"), "{}", answer.text());
    assert_eq!(fs::metadata(&host_file).unwrap().nlink(), 1);
    // A device node: refused.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "dev", tar::EntryType::Char, "", b"");
    let answer = put_tar(&host, "target", "/tmp", &b.into_inner().unwrap());
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("device"), "{}", answer.text());
    // Garbage is a bad archive, not a daemon failure.
    let answer = put_tar(&host, "target", "/tmp", &[0x42; 2048]);
    assert_eq!(answer.status, 400, "{}", answer.text());

    // A symlink to the host directory, then a file through it. As in an
    // image layer, the link resolves inside the extraction point: with no
    // such directory there the entry is refused, and nothing reaches the
    // host.
    let through_link = {
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(
            &mut b,
            "esc",
            tar::EntryType::Symlink,
            aim.to_str().unwrap(),
            b"",
        );
        raw_entry(
            &mut b,
            "esc/planted",
            tar::EntryType::Regular,
            "",
            b"inside",
        );
        b.into_inner().unwrap()
    };
    let answer = put_tar(&host, "target", "/tmp", &through_link);
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("esc/planted"), "{}", answer.text());
    assert_eq!(
        fs::read_dir(&aim).unwrap().count(),
        0,
        "written on the host"
    );
    // With the directory made in the container, the file lands there.
    host.sh("target", &format!("mkdir -p /tmp/{aim_text} /{aim_text}"));
    let answer = put_tar(&host, "target", "/tmp", &through_link);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        host.sh("target", &format!("cat /tmp/{aim_text}/planted")),
        "inside"
    );
    assert_eq!(
        fs::read_dir(&aim).unwrap().count(),
        0,
        "an upload wrote on the host"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host data");

    // The extraction point is resolved in the container's root: the link
    // leads to the container's directory of the host's name.
    let answer = put_tar(&host, "target", "/tmp/esc", &{
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, "second", tar::EntryType::Regular, "", b"2");
        b.into_inner().unwrap()
    });
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(host.sh("target", &format!("cat /{aim_text}/second")), "2");
    assert_eq!(fs::read_dir(&aim).unwrap().count(), 0);

    // Missing path, a file as the extraction point, no such container.
    for (path, status) in [
        ("/v1.0/containers/target/archive", 400),
        ("/v1.0/containers/target/archive?path=/etc/passwd", 400),
        ("/v1.0/containers/target/archive?path=/no/such/dir", 404),
        ("/v1.0/containers/nosuch/archive?path=/tmp", 404),
    ] {
        let answer = host.http("PUT", path, "application/x-tar", &[0; 1024]);
        assert_eq!(answer.status, status, "PUT {path}: {}", answer.text());
        assert!(json_of(&answer)["message"].is_string());
    }
}

#[test]
fn update_through_the_api_changes_a_running_containers_cgroup() {
    let host = Host::new();
    let id = host.sleeper("limited", &["-m", "64m"]);
    let since = unix_now();
    let body = json!({
        "Memory": 96 << 20,
        "MemorySwap": 192 << 20,
        "PidsLimit": 50,
        "NanoCpus": 250_000_000,
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
    });
    let answer = host.http(
        "POST",
        "/v1.0/containers/limited/update",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(json_of(&answer), json!({"Warnings": []}));
    assert_eq!(
        cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&id, "pids", "pids.max", "pids.max"), "50");
    let quota = cgroup_file(&id, "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(quota == "25000" || quota.starts_with("25000 "), "{quota}");
    let policy = host.ok(&[
        "inspect",
        "-f",
        "{{json .HostConfig.RestartPolicy}}",
        "limited",
    ]);
    let policy: Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["MaximumRetryCount"], 3, "{policy}");
    // Docker emits `update`.
    assert_eq!(
        actions_since(&host, &since, &format!("container={id}")),
        [("update".to_string(), id.clone())]
    );

    // Bad requests: the field is named, the status is Docker's.
    for (path, body, status, needle) in [
        ("limited", r#"{"Memory": "lots"}"#, 400, "Memory"),
        ("limited", "{not json", 400, "invalid request body"),
        ("limited", r#"{"CpuShares": -1}"#, 400, "CpuShares"),
        (
            "limited",
            r#"{"RestartPolicy": {"Name": "sometimes"}}"#,
            400,
            "RestartPolicy",
        ),
        ("limited", r#"{"Memory": 314572800}"#, 400, "memoryswap"),
        (
            "nosuch",
            r#"{"Memory": 314572800}"#,
            404,
            "No such container: nosuch",
        ),
    ] {
        let answer = host.http(
            "POST",
            &format!("/v1.0/containers/{path}/update"),
            "application/json",
            body.as_bytes(),
        );
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
        let message = json_of(&answer)["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // Nothing changed by the refused ones.
    assert_eq!(
        cgroup_file(&id, "memory", "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
}

fn prune(host: &Host, filter: &Value) -> crate::host::Answer {
    host.http(
        "POST",
        &format!(
            "/v1.0/containers/prune?filters={}",
            segment(&filter.to_string())
        ),
        "application/json",
        b"",
    )
}

#[test]
fn prune_through_the_api_honours_until_and_label_filters() {
    let host = Host::new();
    let since = unix_now();
    let old = host
        .ok(&[
            "create", "--name", "old", "--label", "tier=old", "bb", "true",
        ])
        .trim()
        .to_string();
    let kept = host
        .ok(&[
            "create", "--name", "kept", "--label", "keep=yes", "bb", "true",
        ])
        .trim()
        .to_string();
    let cut = unix_now();
    let new = host
        .ok(&[
            "create", "--name", "new", "--label", "tier=old", "bb", "true",
        ])
        .trim()
        .to_string();
    let live = host.sleeper("live", &["--label", "tier=old"]);

    // Created before the cut and labelled: only `old` (`new` is younger,
    // `live` runs, `kept` has no such label).
    let answer = prune(&host, &json!({"until": [cut], "label": ["tier=old"]}));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let report = json_of(&answer);
    assert_eq!(report["ContainersDeleted"], json!([old]), "{report}");
    assert!(report["SpaceReclaimed"].is_u64(), "{report}");

    // `label!`: everything stopped without `keep`.
    let answer = prune(&host, &json!({"label!": ["keep"]}));
    assert_eq!(json_of(&answer)["ContainersDeleted"], json!([new]));
    // The older map form of filters works too; nothing left to prune.
    let answer = prune(&host, &json!({"label": {"tier=old": true}}));
    assert_eq!(json_of(&answer)["ContainersDeleted"], json!([]));

    let mut left: Vec<String> = host
        .ok(&["ps", "-a", "-q", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect();
    left.sort();
    let mut want = vec![kept.clone(), live.clone()];
    want.sort();
    assert_eq!(left, want);

    // Each removal is a `destroy`, each prune a `prune`.
    let events = actions_since(&host, &since, "event=destroy");
    assert_eq!(
        events,
        [("destroy".to_string(), old), ("destroy".to_string(), new)]
    );
    assert_eq!(actions_since(&host, &since, "event=prune").len(), 3);

    // Bad filters: Docker's 400s.
    for (filter, needle) in [
        (json!({"color": ["red"]}), "invalid filter 'color'"),
        (json!({"until": ["1h", "2h"]}), "more than one until"),
        (json!({"until": ["yesterday-ish"]}), "until"),
    ] {
        let answer = prune(&host, &filter);
        assert_eq!(answer.status, 400, "{filter}: {}", answer.text());
        assert!(answer.text().contains(needle), "{}", answer.text());
    }
    let answer = host.http(
        "POST",
        "/v1.0/containers/prune?filters=notjson",
        "application/json",
        b"",
    );
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(host.ok(&["ps", "-a", "-q"]).lines().count(), 2);
}

#[test]
fn wait_next_exit_answers_the_next_die_not_the_last_one() {
    let host = Host::new();
    // Running, and never exited: its last exit code is 0.
    host.sleeper("again", &[]);
    let socket = host.socket();
    let (tx, rx) = mpsc::channel();
    // The wait runs on its own connection while the test restarts the
    // container until the answer comes: however late the daemon subscribes,
    // a later `die` reaches it.
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(
            b"POST /v1.0/containers/again/wait?condition=next-exit HTTP/1.1\r\nHost: stack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        let _ = tx.send(answer);
    });
    let mut answer = None;
    for _ in 0..30 {
        host.ok(&["restart", "-t", "0", "again"]);
        if let Ok(a) = rx.recv_timeout(Duration::from_secs(2)) {
            answer = Some(a);
            break;
        }
    }
    let answer = answer.expect("next-exit never answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    // Killed by the restart (SIGKILL after 0 s), never the 0 it had before.
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"StatusCode": 137})
    );

    // An unknown container is a 404.
    let answer = host.http(
        "POST",
        "/v1.0/containers/nosuch/wait?condition=next-exit",
        "application/json",
        b"",
    );
    assert_eq!(answer.status, 404, "{}", answer.text());
}
