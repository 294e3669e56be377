//! Stack files end to end: every example validates, KDL and TOML versions give
//! the same model, `stack config` output reads back to the same model, and every
//! invalid fixture renders the diagnostic in its snapshot.

use std::path::{Path, PathBuf};
use std::process::Command;

use stack::spec::diag::{ProblemKind, Problems};
use stack::spec::{Format, LoadOptions, StackSpec, load, parse_str};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(root().join("examples/stacks")).unwrap() {
        let dir = dir.unwrap().path();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if Format::of(&path).is_some() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A fixed environment, so results do not depend on the machine.
fn env() -> Vec<(String, String)> {
    vec![
        ("HOME".to_string(), "/home/tester".to_string()),
        ("LOG_LEVEL".to_string(), "debug".to_string()),
    ]
}

fn load_file(path: &Path) -> StackSpec {
    let opts = LoadOptions {
        files: vec![path.to_path_buf()],
        project_dir: path.parent().unwrap().to_path_buf(),
        env_files: Vec::new(),
        environment: Some(env()),
    };
    match load(&opts) {
        Ok(loaded) => loaded.spec,
        Err(e) => panic!(
            "{} does not load:\n{}",
            path.display(),
            stack::cli::render(&e, false)
        ),
    }
}

fn stack_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
    cmd.env("NO_COLOR", "1").env_remove("STACK_LOG");
    cmd
}

#[test]
fn every_example_stack_validates() {
    let files = examples();
    assert!(
        files.len() >= 7,
        "expected the example stacks, found {files:?}"
    );
    for file in &files {
        let spec = load_file(file);
        assert!(
            !spec.services.is_empty(),
            "{} has no services",
            file.display()
        );
    }
}

#[test]
fn kdl_and_toml_versions_of_an_example_give_the_same_model() {
    let mut pairs = 0;
    for kdl in examples()
        .iter()
        .filter(|f| f.extension().unwrap() == "kdl")
    {
        let toml = kdl.with_extension("toml");
        if toml.exists() {
            pairs += 1;
            assert_eq!(
                load_file(kdl),
                load_file(&toml),
                "{} and {} differ",
                kdl.display(),
                toml.display()
            );
        }
    }
    assert!(pairs >= 2, "at least two examples come in KDL and TOML");
}

#[test]
fn config_output_reads_back_to_the_same_model_in_every_syntax() {
    let dir = tempfile::tempdir().unwrap();
    for file in examples() {
        let original = load_file(&file);
        for (format, ext) in [("kdl", "kdl"), ("toml", "toml")] {
            let out = stack_bin()
                .args(["config", "--format", format, "-f"])
                .arg(&file)
                .env("LOG_LEVEL", "debug")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "config of {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let written = dir.path().join(format!("stack.{ext}"));
            std::fs::write(&written, &out.stdout).unwrap();
            let reread = load_file(&written);
            assert_eq!(
                original,
                reread,
                "{} → {format} does not read back the same:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[test]
fn config_json_is_the_normalized_model() {
    let file = root().join("examples/stacks/web-db/stack.kdl");
    let out = stack_bin()
        .args(["config", "--format", "json", "-f"])
        .arg(&file)
        .env_remove("DB_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let db = &json["services"]["db"];
    assert_eq!(db["env"]["POSTGRES_PASSWORD"], "example");
    assert_eq!(db["limits"]["memory"], "512m");
    assert_eq!(
        json["services"]["web"]["depends-on"]["db"]["condition"],
        "healthy"
    );
    assert_eq!(json["services"]["web"]["image"], "busybox:latest");
}

fn invalid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/spec/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| Format::of(p).is_some())
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_renders_its_diagnostic() {
    let files = invalid_fixtures();
    assert!(files.len() >= 12);
    for file in files {
        let out = stack_bin()
            .current_dir(file.parent().unwrap())
            .arg("validate")
            .arg("-f")
            .arg(file.file_name().unwrap())
            .env_remove("STACK_TEST_UNSET_PASSWORD")
            .env_remove("STACK_TEST_UNSET_USER")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} should be invalid (exit 1)",
            file.display()
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let name = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        insta::with_settings!({ snapshot_path => "snapshots/invalid", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, stderr);
        });
    }
}

fn problems_of(text: &str, name: &str) -> Problems {
    let format = Format::of(Path::new(name)).unwrap();
    let vars = |_: &str| None;
    let (_, _, problems) = parse_str(text, name, format, Path::new("/srv"), &vars);
    problems
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/spec/invalid/bad-values.kdl")).unwrap();
    let problems = problems_of(&text, "bad-values.kdl");
    let errors = problems.iter().filter(|p| p.is_error()).count();
    assert!(errors >= 10, "only {errors} problems found");
}

#[test]
fn spans_are_byte_offsets_in_non_ascii_files() {
    let text = "// Grüße — 東京\nservice \"wéb\" {\n    image \"bùsybox\"\n    prot \"80\"\n}\n";
    let problems = problems_of(text, "stack.kdl");
    let p = problems
        .iter()
        .find(|p| p.kind == ProblemKind::UnknownKey)
        .expect("the unknown node is reported");
    let (span, _) = p.labels[0];
    assert_eq!(&text[span.offset..span.end()], "prot");
    assert_eq!(p.location().unwrap(), "stack.kdl:4:5");

    let toml = "# Grüße — 東京\n[services.web]\n\"déscription\" = \"ä\"\nimage = \"bùsybox\"\nprot = \"80\"\n";
    let problems = problems_of(toml, "stack.toml");
    let spans: Vec<&str> = problems
        .iter()
        .filter(|p| p.kind == ProblemKind::UnknownKey)
        .map(|p| &toml[p.labels[0].0.offset..p.labels[0].0.end()])
        .collect();
    assert_eq!(spans, ["\"déscription\"", "prot"]);
}

#[test]
fn later_files_override_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.kdl"),
        "service \"web\" {\n    image \"busybox:1\"\n    env A=\"1\" B=\"1\"\n    port \"8080:80\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("override.toml"),
        "[services.web]\nimage = \"busybox:2\"\nenv = { B = \"2\" }\nports = [\"8443:443\"]\n[services.db]\nimage = \"postgres:16\"\n",
    )
    .unwrap();
    let loaded = load(&LoadOptions {
        files: vec!["stack.kdl".into(), "override.toml".into()],
        project_dir: dir.path().to_path_buf(),
        env_files: Vec::new(),
        environment: Some(env()),
    })
    .unwrap();
    let web = &loaded.spec.services["web"];
    assert_eq!(web.image.as_deref(), Some("busybox:2"));
    assert_eq!(web.env["A"], "1");
    assert_eq!(web.env["B"], "2");
    assert_eq!(web.ports.len(), 2);
    assert!(loaded.spec.services.contains_key("db"));
}

#[test]
fn dotenv_and_env_files_feed_interpolation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.kdl"),
        "service \"web\" {\n    image \"busybox:${TAG}\"\n    env MODE=\"${MODE:-dev}\" WHO=\"${WHO}\"\n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".env"), "TAG=1.36\nMODE=prod\nWHO=dotenv\n").unwrap();
    std::fs::write(dir.path().join("extra.env"), "MODE=staging\n").unwrap();
    let mut environment = env();
    environment.push(("WHO".into(), "shell".into()));
    let with_dotenv = load(&LoadOptions {
        files: Vec::new(),
        project_dir: dir.path().to_path_buf(),
        env_files: Vec::new(),
        environment: Some(environment.clone()),
    })
    .unwrap();
    let web = &with_dotenv.spec.services["web"];
    assert_eq!(web.image.as_deref(), Some("busybox:1.36"));
    assert_eq!(web.env["MODE"], "prod");
    assert_eq!(web.env["WHO"], "shell", "the process environment wins");

    let with_env_file = load(&LoadOptions {
        files: Vec::new(),
        project_dir: dir.path().to_path_buf(),
        env_files: vec![dir.path().join("extra.env")],
        environment: Some(environment),
    })
    .unwrap();
    let web = &with_env_file.spec.services["web"];
    assert_eq!(web.env["MODE"], "staging");
    assert_eq!(
        web.image.as_deref(),
        Some("busybox:"),
        "--env-file replaces .env"
    );
}

#[test]
fn a_missing_env_file_is_reported_where_it_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.toml"),
        "[services.web]\nimage = \"busybox\"\nenv-file = [\"./missing.env\"]\n",
    )
    .unwrap();
    let err = load(&LoadOptions {
        files: Vec::new(),
        project_dir: dir.path().to_path_buf(),
        env_files: Vec::new(),
        environment: Some(env()),
    })
    .unwrap_err();
    let rendered = stack::cli::render(&err, false);
    assert!(rendered.contains("missing.env"), "{rendered}");
    assert!(rendered.contains("stack.toml:3:"), "{rendered}");
}

#[test]
fn discovery_prefers_kdl_then_toml_then_compose() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").unwrap();
    assert!(
        stack::spec::discover(dir.path())
            .unwrap()
            .ends_with("docker-compose.yml")
    );
    std::fs::write(dir.path().join("stack.toml"), "").unwrap();
    assert!(
        stack::spec::discover(dir.path())
            .unwrap()
            .ends_with("stack.toml")
    );
    std::fs::write(dir.path().join("stack.kdl"), "").unwrap();
    assert!(
        stack::spec::discover(dir.path())
            .unwrap()
            .ends_with("stack.kdl")
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(stack::spec::discover(empty.path()).is_err());
}

#[test]
fn cli_exit_codes_follow_the_documentation() {
    let ok = stack_bin()
        .args(["validate", "-f"])
        .arg(root().join("examples/stacks/static-site/stack.kdl"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let usage = stack_bin().arg("--no-such-flag").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let missing = stack_bin()
        .args(["validate", "-f", "/nonexistent/stack.kdl"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    let version = stack_bin().arg("--version").output().unwrap();
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("stack "));
    let completions = stack_bin().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&completions.stdout).contains("validate"));
}
