//! Docker's own parser results, row by row, against `stack::spec`'s parsers.
//!
//! Each `tests/fixtures/cli-grammar/*.tsv` line is `kind<TAB>"input"<TAB>result`,
//! where the result is Docker's parsed value as JSON or `ERR "message"` (see
//! `SOURCE.md` there). For every row our parser must give the same value, mapped
//! to Docker's JSON shape, or an error whose message contains Docker's (less Go's
//! `strconv.ParseXxx: ` prefix). Rows where we differ on purpose are listed in
//! each test with the reason; a listed row that no longer exists fails the test.
//! Every value we accept must also print in a form that parses back to itself.

// Integration tests are test-only code too (`clippy::tests_outside_test_module`).
#![cfg(test)]

use std::fmt::{Debug, Display};
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::{Value, json};
use stack::spec::device::DeviceMapping;
use stack::spec::extra_host::ExtraHost;
use stack::spec::mount::{BindRecursive, MountKind, MountSpec, parse_mount_flag};
use stack::spec::port::PortSpec;
use stack::spec::restart::parse_restart;
use stack::spec::size::{ByteSize, parse_human_size};
use stack::spec::ulimit::Ulimit;

/// What Docker gave for one input.
enum Expected {
    Value(Value),
    Error(String),
}

/// One line of a fixture.
struct Row {
    line: usize,
    input: String,
    expected: Expected,
}

/// A row we do not match on purpose.
enum Deviation {
    /// We reject the input; our message must contain every one of these words.
    Rejected(&'static [&'static str]),
    /// We accept the input with this value (JSON text) where Docker differs.
    Accepted(&'static str),
    /// The row is not checked at all.
    Skipped,
}

fn read_rows(file: &str) -> Vec<Row> {
    let path = format!(
        "{}/tests/fixtures/cli-grammar/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let mut fields = line.splitn(3, '\t');
            let (_kind, input, result) = match (fields.next(), fields.next(), fields.next()) {
                (Some(k), Some(i), Some(r)) => (k, i, r),
                _ => panic!("{file}:{}: not three tab-separated fields", i + 1),
            };
            let input: String = serde_json::from_str(input)
                .unwrap_or_else(|e| panic!("{file}:{}: input: {e}", i + 1));
            let expected = match result.strip_prefix("ERR ") {
                Some(message) => Expected::Error(
                    serde_json::from_str(message)
                        .unwrap_or_else(|e| panic!("{file}:{}: message: {e}", i + 1)),
                ),
                None => Expected::Value(
                    serde_json::from_str(result)
                        .unwrap_or_else(|e| panic!("{file}:{}: result: {e}", i + 1)),
                ),
            };
            Row {
                line: i + 1,
                input,
                expected,
            }
        })
        .collect()
}

/// The part of a Docker error message we must say too: all of it, less the Go
/// function name that `strconv` errors start with.
fn docker_words(message: &str) -> &str {
    ["strconv.ParseFloat: ", "strconv.ParseInt: "]
        .into_iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .unwrap_or(message)
}

/// Checks every row of `file`. `parse` gives our value in Docker's JSON shape or
/// our error message; `normalize` rewrites Docker's value where its text form is
/// not canonical (addresses); `deviations` lists rows by input.
fn check_rows(
    file: &str,
    parse: impl Fn(&str) -> Result<Value, String>,
    normalize: impl Fn(Value) -> Value,
    deviations: &[(&str, Deviation)],
) {
    let rows = read_rows(file);
    assert!(!rows.is_empty(), "{file} has no rows");
    let mut failures = Vec::new();
    for (input, _) in deviations {
        if !rows.iter().any(|r| r.input == *input) {
            failures.push(format!("deviation for {input:?} matches no row"));
        }
    }
    for row in &rows {
        let at = format!("{file}:{} {:?}", row.line, row.input);
        let ours = parse(&row.input);
        let deviation = deviations
            .iter()
            .find(|(input, _)| *input == row.input)
            .map(|(_, d)| d);
        match (deviation, &row.expected, ours) {
            (Some(Deviation::Skipped), _, _) => {}
            (Some(Deviation::Rejected(words)), _, Err(message)) => {
                for word in *words {
                    if !message.contains(word) {
                        failures.push(format!("{at}: error {message:?} lacks {word:?}"));
                    }
                }
            }
            (Some(Deviation::Rejected(_)), _, Ok(value)) => {
                failures.push(format!("{at}: expected us to reject it, got {value}"));
            }
            (Some(Deviation::Accepted(json)), _, ours) => {
                let expected: Value = serde_json::from_str(json).expect("deviation is JSON");
                if ours.as_ref() != Ok(&expected) {
                    failures.push(format!("{at}: got {ours:?}, expected {expected}"));
                }
            }
            (None, Expected::Value(expected), Ok(value)) => {
                let expected = normalize(expected.clone());
                if value != expected {
                    failures.push(format!("{at}: got {value}, docker has {expected}"));
                }
            }
            (None, Expected::Value(expected), Err(message)) => {
                failures.push(format!(
                    "{at}: got error {message:?}, docker has {expected}"
                ));
            }
            (None, Expected::Error(docker), Ok(value)) => {
                failures.push(format!("{at}: got {value}, docker fails with {docker:?}"));
            }
            (None, Expected::Error(docker), Err(message)) => {
                let words = docker_words(docker);
                if !message.contains(words) {
                    failures.push(format!("{at}: error {message:?} does not say {words:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// Parses with `FromStr` and checks that `Display` gives text that parses back.
fn parse_round_trip<T>(input: &str) -> Result<T, String>
where
    T: FromStr + Display + PartialEq + Debug,
    T::Err: Display,
{
    let value: T = input.parse().map_err(|e: T::Err| e.to_string())?;
    let shown = value.to_string();
    match shown.parse::<T>() {
        Ok(again) if again == value => Ok(value),
        Ok(again) => panic!("{input:?} shows as {shown:?}, which parses to {again:?}"),
        Err(e) => panic!("{input:?} shows as {shown:?}, which fails: {e}"),
    }
}

/// An address in its canonical text form, so `0:0:0:0:0:0:0:1` equals `::1`.
fn canonical_ip(text: &str) -> String {
    text.parse::<IpAddr>()
        .map_or_else(|_| text.to_owned(), |ip| ip.to_string())
}

fn no_normalization(v: Value) -> Value {
    v
}

#[test]
fn port_rows_match_docker() {
    check_rows(
        "port.tsv",
        |input| {
            let spec: PortSpec = parse_round_trip(input)?;
            Ok(spec
                .bindings()
                .iter()
                .map(|b| {
                    json!({
                        "Port": format!("{}/{}", b.container_port, b.protocol),
                        "Binding": {
                            "HostIp": b.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                            "HostPort": b.host_port.map(|p| p.to_string()).unwrap_or_default(),
                        },
                    })
                })
                .collect())
        },
        |mut expected| {
            if let Some(entries) = expected.as_array_mut() {
                for entry in entries {
                    if let Some(ip) = entry.pointer_mut("/Binding/HostIp")
                        && let Some(text) = ip.as_str()
                    {
                        *ip = Value::String(canonical_ip(text));
                    }
                }
            }
            expected
        },
        &[],
    );
}

/// Docker's sizes are Go `int64`s that overflow silently (the TSV shows the
/// wrapped value); we refuse such sizes instead.
const SIZE_OVERFLOW: Deviation = Deviation::Rejected(&["too large"]);

/// go-units reads every number as a float64, so `2^63 - 1` rounds up to `2^63`
/// and wraps; we read plain integers exactly, and this one fits.
const EXACT_MAX_SIZE: Deviation = Deviation::Accepted("9223372036854775807");

#[test]
fn ram_rows_match_docker() {
    check_rows(
        "ram.tsv",
        |input| parse_round_trip::<ByteSize>(input).map(|b| json!(b.0)),
        no_normalization,
        &[
            ("9223372036854775807", EXACT_MAX_SIZE),
            ("9223372036854775808", SIZE_OVERFLOW),
        ],
    );
}

#[test]
fn human_size_rows_match_docker() {
    check_rows(
        "humansize.tsv",
        |input| {
            parse_human_size(input)
                .map(|b| json!(b))
                .map_err(|e| e.to_string())
        },
        no_normalization,
        &[("999999999999999999999", SIZE_OVERFLOW)],
    );
}

#[test]
fn restart_rows_match_docker_cli_and_daemon() {
    // docker/cli accepts any `name:count`; the daemon's ValidateRestartPolicy
    // (moby api/types/container/hostconfig.go) then rejects these. Our parser
    // does both checks, so it rejects them with the daemon's words.
    const ONLY_ON_FAILURE: Deviation = Deviation::Rejected(&["can only be used with 'on-failure'"]);
    check_rows(
        "restart.tsv",
        |input| {
            let (name, count) = parse_restart(input).map_err(|e| e.to_string())?;
            let shown = match count {
                Some(n) => format!("{name}:{n}"),
                None => name.to_string(),
            };
            assert_eq!(parse_restart(&shown), Ok((name, count)), "{input:?}");
            Ok(json!({"Name": name.to_string(), "MaximumRetryCount": count.unwrap_or(0)}))
        },
        |mut expected| {
            // An empty name is Docker's stored form of "no".
            if let Some(name) = expected.get_mut("Name")
                && name == ""
            {
                *name = json!("no");
            }
            expected
        },
        &[
            (
                "on-failure:-1",
                Deviation::Rejected(&["maximum retry count cannot be negative"]),
            ),
            (
                "anything:123",
                Deviation::Rejected(&["unknown policy 'anything'"]),
            ),
            (
                "negative:-123",
                Deviation::Rejected(&["unknown policy 'negative'"]),
            ),
            ("always:3", ONLY_ON_FAILURE),
            ("no:1", ONLY_ON_FAILURE),
        ],
    );
}

#[test]
fn ulimit_rows_match_docker() {
    check_rows(
        "ulimit.tsv",
        |input| {
            parse_round_trip::<Ulimit>(input)
                .map(|u| json!({"Name": u.name, "Hard": u.hard, "Soft": u.soft}))
        },
        no_normalization,
        &[],
    );
}

#[test]
fn volume_rows_match_docker_on_linux() {
    check_rows(
        "volume.tsv",
        |input| {
            let m: MountSpec = parse_round_trip(input)?;
            let mut v = json!({"type": m.kind.to_string(), "target": m.target});
            if let Some(source) = m.source {
                v["source"] = json!(source);
            }
            if m.read_only {
                v["read_only"] = json!(true);
            }
            if let Some(p) = m.propagation {
                v["bind"] = json!({"propagation": p.to_string()});
            }
            if m.nocopy {
                v["volume"] = json!({"nocopy": true});
            }
            Ok(v)
        },
        no_normalization,
        // We implement Linux semantics: `C:` is not a drive letter, so this
        // Windows spec has too many colons here.
        &[("C:\\source\\foo:D:\\target:ro,rprivate", Deviation::Skipped)],
    );
}

#[test]
fn add_host_rows_match_docker() {
    check_rows(
        "addhost.tsv",
        |input| parse_round_trip::<ExtraHost>(input).map(|h| json!(h.to_string())),
        |expected| match expected.as_str().and_then(|s| s.split_once(':')) {
            // docker/cli keeps the address as typed; ours is canonical.
            Some((host, ip)) => json!(format!("{host}:{}", canonical_ip(ip))),
            None => expected,
        },
        &[],
    );
}

#[test]
fn device_rows_match_docker() {
    check_rows(
        "device.tsv",
        |input| {
            parse_round_trip::<DeviceMapping>(input).map(|d| {
                json!({
                    "PathOnHost": d.host_path,
                    "PathInContainer": d.container_path,
                    "CgroupPermissions": d.permissions,
                })
            })
        },
        no_normalization,
        &[],
    );
}

/// The directory docker/cli ran in when the `--mount` rows were made: it
/// makes a bind source that starts with `.` absolute against it, which our
/// CLI does against its own working directory.
const MOUNT_ROWS_CWD: &str = "/tmp/external/vectors";

#[test]
fn mount_rows_match_docker() {
    // Types this runtime has no use for: docker/cli passes any type on and
    // the daemon decides; we refuse them when parsing.
    const NOT_A_TYPE: Deviation = Deviation::Rejected(&["invalid mount type"]);
    check_rows(
        "mount.tsv",
        |input| {
            let m = parse_mount_flag(input).map_err(|e| e.to_string())?;
            let mut v = json!({"Type": m.kind.to_string(), "Target": m.target});
            if let Some(source) = &m.source {
                let source = if m.kind == MountKind::Bind && source.starts_with('.') {
                    format!("{MOUNT_ROWS_CWD}/{}", source.trim_start_matches("./"))
                } else {
                    source.clone()
                };
                v["Source"] = json!(source);
            }
            if m.read_only {
                v["ReadOnly"] = json!(true);
            }
            let mut bind = serde_json::Map::new();
            if let Some(p) = m.propagation {
                bind.insert("Propagation".into(), json!(p.to_string()));
            }
            match m.bind_recursive {
                BindRecursive::Enabled => {}
                BindRecursive::Disabled => {
                    bind.insert("NonRecursive".into(), json!(true));
                }
                BindRecursive::Writable => {
                    bind.insert("ReadOnlyNonRecursive".into(), json!(true));
                }
                BindRecursive::Readonly => {
                    bind.insert("ReadOnlyForceRecursive".into(), json!(true));
                }
            }
            if m.kind == MountKind::Bind && !m.require_source {
                bind.insert("CreateMountpoint".into(), json!(true));
            }
            if !bind.is_empty() {
                v["BindOptions"] = json!(bind);
            }
            let mut volume = serde_json::Map::new();
            if m.nocopy {
                volume.insert("NoCopy".into(), json!(true));
            }
            if !m.volume_labels.is_empty() {
                volume.insert("Labels".into(), json!(m.volume_labels));
            }
            let mut driver = serde_json::Map::new();
            if let Some(name) = &m.volume_driver {
                driver.insert("Name".into(), json!(name));
            }
            if !m.volume_options.is_empty() {
                driver.insert("Options".into(), json!(m.volume_options));
            }
            if !driver.is_empty() {
                volume.insert("DriverConfig".into(), json!(driver));
            }
            if let Some(sub) = &m.volume_subpath {
                volume.insert("Subpath".into(), json!(sub));
            }
            if !volume.is_empty() {
                v["VolumeOptions"] = json!(volume);
            }
            let mut tmpfs = serde_json::Map::new();
            if let Some(size) = m.tmpfs_size {
                tmpfs.insert("SizeBytes".into(), json!(size.0));
            }
            if let Some(mode) = m.tmpfs_mode {
                tmpfs.insert("Mode".into(), json!(mode));
            }
            if !tmpfs.is_empty() {
                v["TmpfsOptions"] = json!(tmpfs);
            }
            // What we accept must read back the same through the map form
            // that requests and records are stored in.
            let stored = serde_json::to_value(&m).expect("a mount serializes");
            let again: MountSpec = serde_json::from_value(stored).expect("and reads back");
            assert_eq!(again, m, "{input:?}");
            // docker/cli's value is the list of mounts given so far.
            Ok(json!([v]))
        },
        no_normalization,
        &[
            ("type=image,source=busybox,target=/img", NOT_A_TYPE),
            ("type=npipe,source=x,target=y", NOT_A_TYPE),
            ("type=cluster,target=/x", NOT_A_TYPE),
            // docker/cli leaves the missing target to the daemon, which
            // refuses it; we refuse it while parsing.
            ("source=/foo", Deviation::Rejected(&["target is required"])),
        ],
    );
}

#[test]
fn mount_flag_reads_quoted_csv_fields() {
    let m = parse_mount_flag(r#"type=bind,"source=/a,b",target=/c"#).unwrap();
    assert_eq!(m.source.as_deref(), Some("/a,b"));
    let m = parse_mount_flag(r#"type=volume,target=/d,"volume-opt=o=""x""""#).unwrap();
    assert_eq!(m.volume_options.get("o").map(String::as_str), Some("\"x\""));
    for bad in [
        r#"type=bind,sou"rce=/a,target=/b"#,
        r#"type=bind,"source=/a"x,target=/b"#,
    ] {
        let e = parse_mount_flag(bad).unwrap_err().to_string();
        assert!(e.contains("CSV"), "{bad}: {e}");
    }
    let m = parse_mount_flag("type=bind,src=/a,dst=/b,bind-nonrecursive").unwrap();
    assert_eq!(m.bind_recursive, BindRecursive::Disabled);
    assert!(m.require_source);
    let m = parse_mount_flag("type=bind,src=/a,dst=/b,bind-create-src").unwrap();
    assert!(!m.require_source);
    let m = parse_mount_flag("type=volume,src=v,dst=/b,volume-subpath=x/y").unwrap();
    assert_eq!(m.volume_subpath.as_deref(), Some("x/y"));
    assert!(
        parse_mount_flag("type=bind,src=/a,dst=/b,ro=maybe")
            .unwrap_err()
            .to_string()
            .contains("invalid boolean value")
    );
    assert!(
        parse_mount_flag("type=bind,src=/a,dst=/b,readonly,bind-recursive=readonly")
            .unwrap_err()
            .to_string()
            .contains("bind-propagation=rprivate")
    );
}
