//! Compose import against real files: every docker/awesome-compose sample in
//! `tests/fixtures/compose/awesome-compose/` (see its `SOURCE.md`) converts to the
//! canonical tree and decodes into a stack without an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;
use stack::spec::compose;
use stack::spec::decode::{DecodeContext, decode_stack};
use stack::spec::diag::{FileId, Problem, ProblemKind, Problems};
use stack::spec::interpolate::interpolate;
use stack::spec::model::{Condition, HealthCommand, StackSpec};
use stack::spec::mount::MountKind;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose/awesome-compose")
}

fn fixtures() -> Vec<PathBuf> {
    let dir = fixture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing the fixture directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Values for the variables the samples read from their `.env` files.
fn vars() -> BTreeMap<String, String> {
    [
        ("TIMEZONE", "Europe/Berlin"),
        ("PIHOLE_PW", "secret"),
        ("PIHOLE_ROUTER_IP", "192.168.1.1"),
        ("PIHOLE_NETWORK_DOMAIN", "lan"),
        ("PIHOLE_REVERSE_DNS", "192.168.1.0/24"),
        ("PIHOLE_HOST_IP", "192.168.1.2"),
        ("PIHOLE_HOST_IPV6", "fd00::2"),
        ("PLEX_MEDIA_PATH", "/srv/media"),
        ("POSTGRES_USER", "postgres"),
        ("POSTGRES_PW", "secret"),
        ("POSTGRES_DB", "app"),
        ("PGADMIN_MAIL", "admin@example.com"),
        ("PGADMIN_PW", "secret"),
        ("VPN_SERVER_URL", "vpn.example.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

struct Imported {
    stack: Option<StackSpec>,
    /// Problems of the compose conversion.
    converted: Vec<Problem>,
    /// Problems of decoding the converted tree.
    decoded: Vec<Problem>,
}

/// Converts, interpolates and decodes one file, the way the loader does.
fn import(path: &Path) -> Imported {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let name = path
        .file_name()
        .expect("fixture paths end in a file name")
        .to_string_lossy()
        .into_owned();
    let source = Arc::new(NamedSource::new(name, text.clone()));
    let mut problems = Problems::new();
    let tree = compose::parse(&text, &source, &mut problems);
    let converted = problems.into_vec();
    let Some(mut tree) = tree else {
        return Imported {
            stack: None,
            converted,
            decoded: Vec::new(),
        };
    };
    let vars = vars();
    tree.for_each_str_mut(&mut |s, _| {
        let done = interpolate(s, &vars).unwrap_or_else(|e| panic!("interpolating {s:?}: {e}"));
        assert!(done.unset.is_empty(), "unset variables {:?}", done.unset);
        *s = done.value;
    });
    let cx = DecodeContext {
        file: FileId(0),
        source,
        base_dir: Path::new("/srv/project"),
        vars: &vars,
    };
    let mut problems = Problems::new();
    let stack = decode_stack(&tree, &cx, &mut problems);
    Imported {
        stack: Some(stack),
        converted,
        decoded: problems.into_vec(),
    }
}

fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| format!("  {}: {}", p.location().unwrap_or_default(), p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_awesome_compose_sample_imports_without_errors() {
    let files = fixtures();
    assert_eq!(
        files.len(),
        39,
        "fixtures missing from {}",
        fixture_dir().display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let imported = import(path);
        let name = path.file_name().unwrap().to_string_lossy();
        if imported.converted.iter().any(Problem::is_error) {
            failures.push(format!(
                "{name} (compose):\n{}",
                describe(&imported.converted)
            ));
        }
        if imported.decoded.iter().any(Problem::is_error) {
            failures.push(format!("{name} (decode):\n{}", describe(&imported.decoded)));
        }
        let stack = imported.stack.expect("no errors, so a stack");
        assert!(!stack.services.is_empty(), "{name} has no services");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_converted_sample_keeps_ports_dependencies_and_health_checks() {
    let imported = import(&fixture_dir().join("nginx-golang-mysql.yaml"));
    let stack = imported.stack.unwrap();

    let proxy = &stack.services["proxy"];
    assert_eq!(proxy.ports.len(), 1);
    let port = &proxy.ports[0].value;
    assert_eq!(port.container.start, 80);
    assert_eq!(port.host.map(|h| h.start), Some(80));
    let mount = &proxy.volumes[0].value;
    assert_eq!(mount.kind, MountKind::Bind);
    assert_eq!(
        mount.source.as_deref(),
        Some("/srv/project/proxy/nginx.conf")
    );
    assert_eq!(mount.target, "/etc/nginx/conf.d/default.conf");
    assert!(mount.read_only);

    let backend = &stack.services["backend"];
    assert_eq!(backend.depends_on.len(), 1);
    assert_eq!(backend.depends_on[0].value.service, "db");
    assert_eq!(backend.depends_on[0].value.condition, Condition::Healthy);

    let health = stack.services["db"].health.as_ref().unwrap();
    assert_eq!(
        health.command,
        HealthCommand::Shell(
            "mysqladmin ping -h 127.0.0.1 --password=\"$(cat /run/secrets/db-password)\" --silent"
                .into()
        )
    );
    assert_eq!(health.interval.map(|d| d.0.as_secs()), Some(3));
    assert_eq!(health.retries, Some(5));
    assert_eq!(health.start_period.map(|d| d.0.as_secs()), Some(30));
}

#[test]
fn unsupported_sample_keys_are_warnings_that_point_at_them() {
    let imported = import(&fixture_dir().join("nginx-golang-mysql.yaml"));
    let warnings: Vec<String> = imported
        .converted
        .iter()
        .map(|p| {
            assert_eq!(p.kind, ProblemKind::Unsupported);
            assert!(!p.is_error());
            format!("{} {}", p.location().unwrap(), p.message)
        })
        .collect();
    assert_eq!(
        warnings,
        [
            "nginx-golang-mysql.yaml:6:5 compose key `services.backend.secrets` is not supported and is ignored",
            "nginx-golang-mysql.yaml:24:5 compose key `services.db.secrets` is not supported and is ignored",
            "nginx-golang-mysql.yaml:49:1 compose key `secrets` is not supported and is ignored",
        ]
    );
}

#[test]
fn a_file_using_every_mapped_key_converts_and_decodes_cleanly() {
    let path = fixture_dir().join("../every-key.yaml");
    let imported = import(&path);
    let warnings: Vec<&str> = imported
        .converted
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    assert_eq!(
        warnings,
        [
            "`services.db.restart` is ignored because `services.db.deploy.restart_policy` is set, as in docker compose"
        ]
    );
    assert!(!imported.converted[0].is_error());
    assert!(
        imported.decoded.is_empty(),
        "{}",
        describe(&imported.decoded)
    );
    let stack = imported.stack.unwrap();
    assert_eq!(stack.name.as_deref(), Some("kitchen"));

    let web = &stack.services["web"];
    let ports: Vec<String> = web.ports.iter().map(|p| p.value.to_string()).collect();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        web.ports[1].value.host_ip,
        Some("127.0.0.1".parse().unwrap())
    );
    let tmpfs = web
        .volumes
        .iter()
        .find(|m| m.value.kind == MountKind::Tmpfs && m.value.target == "/cache")
        .unwrap();
    assert_eq!(tmpfs.value.tmpfs_mode, Some(0o1777));
    assert_eq!(web.limits.devices.len(), 2);
    assert_eq!(web.limits.blkio_weight, Some(500));
    assert_eq!(web.limits.ulimits.len(), 2);
    // From the merged `x-defaults` anchor.
    assert_eq!(web.logging.as_ref().and_then(|l| l.max_files), Some(3));

    let db = &stack.services["db"];
    let restart = db.restart.as_ref().unwrap();
    assert_eq!(restart.max_retries, Some(5));
    assert_eq!(restart.backoff.min.map(|d| d.0.as_secs()), Some(2));
    assert_eq!(db.limits.pids, Some(100));

    let front = &stack.networks["front"];
    assert_eq!(front.bridge.as_deref(), Some("br-kitchen"));
    assert_eq!(
        front.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.5.0.0/16")
    );
}

/// Builds a compose document with `key` at one level of the schema.
type Placement = fn(&str) -> String;

/// Property names the compose schema defines under `definitions.<name>.properties`.
fn schema_keys(schema: &serde_json::Value, pointer: &str) -> Vec<String> {
    schema
        .pointer(pointer)
        .and_then(serde_json::Value::as_object)
        .unwrap_or_else(|| panic!("{pointer} is not in the schema"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_key_of_the_compose_schema_is_mapped_or_warned_about() {
    let path = fixture_dir().join("../compose-spec.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Each level: the schema's keys, and a document placing a key at that level.
    let levels: [(&str, Placement); 10] = [
        ("/properties", |k| format!("{k}: x\n")),
        ("/definitions/service/properties", |k| {
            format!("services:\n  s:\n    {k}: x\n")
        }),
        (
            "/definitions/service/properties/build/oneOf/1/properties",
            |k| format!("services:\n  s:\n    build:\n      {k}: x\n"),
        ),
        ("/definitions/deployment/properties", |k| {
            format!("services:\n  s:\n    deploy:\n      {k}: x\n")
        }),
        ("/definitions/healthcheck/properties", |k| {
            format!("services:\n  s:\n    healthcheck:\n      test: x\n      {k}: x\n")
        }),
        (
            "/definitions/service/properties/ports/items/oneOf/2/properties",
            |k| format!("services:\n  s:\n    ports:\n      - target: 80\n        {k}: x\n"),
        ),
        (
            "/definitions/service/properties/volumes/items/oneOf/1/properties",
            |k| format!("services:\n  s:\n    volumes:\n      - target: /x\n        {k}: x\n"),
        ),
        ("/definitions/network/properties", |k| {
            format!("networks:\n  n:\n    {k}: x\n")
        }),
        ("/definitions/network/properties/ipam/properties", |k| {
            format!("networks:\n  n:\n    ipam:\n      {k}: x\n")
        }),
        ("/definitions/volume/properties", |k| {
            format!("volumes:\n  v:\n    {k}: x\n")
        }),
    ];
    for (pointer, document) in levels {
        for key in schema_keys(&schema, pointer) {
            let text = document(&key);
            let source = Arc::new(NamedSource::new("compose.yaml", text.clone()));
            let mut problems = Problems::new();
            compose::parse(&text, &source, &mut problems);
            let unknown: Vec<&Problem> = problems
                .iter()
                .filter(|p| p.kind == ProblemKind::UnknownKey)
                .collect();
            assert!(
                unknown.is_empty(),
                "{pointer}: `{key}` is unknown: {unknown:#?}"
            );
        }
    }
}
