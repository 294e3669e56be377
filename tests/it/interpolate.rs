//! Environment files against outside references: Docker's own `--env-file`
//! parser results (`tests/fixtures/envfile/envfile.tsv`) and compose-style
//! `.env` fixtures.

// This whole binary is test code, so the unit-test layout rule does not apply.
#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top of their tests/it module"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stack::spec::envfile::{EnvFileError, parse_docker_env_file, parse_dotenv};
use stack::spec::interpolate::{InterpolateError, Vars, interpolate};

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envfile")
        .join(path)
}

fn read(path: &str) -> String {
    let path = fixture(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The variables Docker's results were produced with: `DEFINED_VAR` and an
/// empty `EMPTY_VAR` set, `UNDEFINED_VAR` unset.
fn docker_environment() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DEFINED_VAR".to_owned(), "defined-value".to_owned()),
        ("EMPTY_VAR".to_owned(), String::new()),
    ])
}

#[derive(Debug)]
enum Expected {
    Lines(Vec<String>),
    Error(String),
}

fn parse_row(row: &str) -> (String, Expected) {
    let mut fields = row.splitn(3, '\t');
    let (Some(kind), Some(input), Some(result)) = (fields.next(), fields.next(), fields.next())
    else {
        panic!("row without three tab-separated fields: {row:?}");
    };
    assert_eq!(kind, "envfile", "row {row:?}");
    let input: String = serde_json::from_str(input).expect("input is a JSON string");
    let expected = match result.strip_prefix("ERR ") {
        Some(message) => Expected::Error(serde_json::from_str(message).expect("JSON message")),
        None => Expected::Lines(serde_json::from_str(result).expect("JSON list")),
    };
    (input, expected)
}

#[test]
fn docker_env_file_matches_every_docker_cli_result() {
    let table = read("envfile.tsv");
    let environment = docker_environment();
    let mut rows = 0;
    for row in table.lines().filter(|row| !row.trim().is_empty()) {
        rows += 1;
        let (input, expected) = parse_row(row);
        let actual = parse_docker_env_file(&input, &environment);
        match (expected, actual) {
            (Expected::Lines(lines), Ok(pairs)) => {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                assert_eq!(pairs, lines, "input {input:?}");
            }
            (Expected::Error(message), Err(err)) => {
                assert_eq!(err.to_string(), message, "input {input:?}");
                let range = err.range();
                assert!(input.is_char_boundary(range.start) && input.is_char_boundary(range.end));
            }
            (expected, actual) => panic!("input {input:?}: expected {expected:?}, got {actual:?}"),
        }
    }
    assert!(rows >= 15, "only {rows} rows read");
}

#[test]
fn dotenv_fixture_with_every_quoting_form() {
    let environment = BTreeMap::from([
        ("HOST".to_owned(), "db.internal".to_owned()),
        ("INHERITED".to_owned(), "from the shell".to_owned()),
    ]);
    let pairs = parse_dotenv(&read("dotenv/quoting.env"), &environment).expect("valid file");
    let expected = [
        ("EXPORTED", "yes"),
        ("PLAIN", "plain value"),
        ("HASH", "a#b"),
        ("EMPTY", ""),
        ("SINGLE", "literal ${HOST} \\n"),
        ("DOUBLE", "tab\there \"quoted\" \\ back"),
        ("MULTI", "first line\nsecond line"),
        ("URL", "https://db.internal:8080/path"),
        ("NESTED", "db.internal"),
        ("ESCAPED_DOLLAR", "$HOST and $HOST"),
        ("REUSE", "plain value!"),
        ("INHERITED", "from the shell"),
        ("YAML_STYLE", "yes"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(pairs, expected);
}

#[test]
fn dotenv_fixture_with_non_ascii_text_and_crlf_line_ends() {
    let pairs = parse_dotenv(&read("dotenv/unicode-crlf.env"), &BTreeMap::new()).expect("valid");
    assert_eq!(
        pairs,
        [
            ("GREETING".to_owned(), "grüß dich\nwelt".to_owned()),
            ("CITY".to_owned(), "Zürich".to_owned()),
            ("TOKYO".to_owned(), "東京".to_owned()),
        ]
    );
}

#[test]
fn required_variable_error_in_env_file_points_at_expression() {
    let text = read("dotenv/required-missing.env");
    let err = parse_dotenv(&text, &BTreeMap::new()).expect_err("DB_PASSWORD is unset");
    assert_eq!(err.line(), 3);
    assert_eq!(&text[err.range()], "${DB_PASSWORD:?set DB_PASSWORD}");
    let EnvFileError::Interpolate { name, source, .. } = err else {
        panic!("wrong error {err:?}");
    };
    assert_eq!(name, "DB_URL");
    assert!(matches!(
        source,
        InterpolateError::MissingRequired { ref name, ref message, .. }
            if name == "DB_PASSWORD" && message == "set DB_PASSWORD"
    ));

    let environment = BTreeMap::from([("DB_PASSWORD".to_owned(), "s3cret".to_owned())]);
    let pairs = parse_dotenv(&text, &environment).expect("DB_PASSWORD is set");
    assert_eq!(pairs[1].1, "postgres://app:s3cret@db/app");
}

#[test]
fn env_files_feed_interpolation_with_compose_precedence() {
    let mut vars = Vars::with_environment([("TAG", "from-shell")]);
    vars.extend_from_dotenv("TAG=from-dotenv\nREGISTRY=registry.local\nPORT=80\n")
        .expect("valid .env");
    vars.extend_from_dotenv("PORT=8080\n")
        .expect("valid --env-file");
    let out =
        interpolate("${REGISTRY}/app:${TAG} on ${PORT} ${MISSING}", &vars).expect("valid template");
    assert_eq!(out.value, "registry.local/app:from-shell on 8080 ");
    assert_eq!(out.unset, ["MISSING"]);
}
