//! Builds: real Dockerfiles built by the daemon from the busybox image `bb`,
//! the results inspected and run.

use std::fs;
use std::path::{Path, PathBuf};

use crate::host::Host;

/// A host whose daemon has a default bridge of its own.
fn build_host() -> Host {
    let bip = format!("{}.1/24", crate::host::prefix());
    Host::with_daemon(&["--bip", &bip])
}

/// A context directory with `files` (path → content) and a Dockerfile.
fn context(host: &Host, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = host.work().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

fn build(host: &Host, dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    let d = dir.to_str().unwrap();
    args.push(d);
    let out = host.stack(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn built_ok(host: &Host, dir: &Path, extra: &[&str]) -> String {
    let (ok, out, err) = build(host, dir, extra);
    assert!(ok, "build failed:\n{out}\n{err}\n{}", host.daemon_log());
    out
}

fn config(host: &Host, image: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&host.ok(&["image", "inspect", image])).unwrap();
    v[0]["Config"].clone()
}

#[test]
fn every_instruction_builds_and_the_image_runs_as_declared() {
    let host = build_host();
    let dir = context(
        &host,
        "all",
        r#"ARG BASE=bb
FROM $BASE AS base
LABEL maintainer.name="me" version=1
MAINTAINER someone
ARG GREETING=hello
ENV APP=/app PATH_EXTRA=x
WORKDIR $APP
COPY --chown=app:app hello.txt ./
COPY dir/ sub/
ADD files.tar /extracted/
ADD files.tar.bz2 /bz/
ADD files.tar.xz /xz/
RUN echo "$GREETING from $(pwd)" > made.txt && test -f /app/hello.txt
RUN ["/bin/sh", "-c", "echo exec-form >> made.txt"]
SHELL ["/bin/sh", "-c"]
EXPOSE 8080 53/udp
VOLUME /data
USER app
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD true
ONBUILD RUN echo triggered > /tmp/onbuild
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/made.txt /app/hello.txt; id -u"]
"#,
        &[
            ("hello.txt", "hi there\n"),
            ("dir/a", "A\n"),
            ("dir/b/c", "C\n"),
        ],
    );
    // A tar for ADD to extract.
    let tar_src = host.work().join("tarsrc");
    fs::create_dir_all(&tar_src).unwrap();
    fs::write(tar_src.join("inside.txt"), "from the tar\n").unwrap();
    for (flag, name) in [
        ("-cf", "files.tar"),
        ("-cjf", "files.tar.bz2"),
        ("-cJf", "files.tar.xz"),
    ] {
        let st = std::process::Command::new("tar")
            .args([
                flag,
                dir.join(name).to_str().unwrap(),
                "-C",
                tar_src.to_str().unwrap(),
                "inside.txt",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "tar {flag}");
    }
    let out = built_ok(
        &host,
        &dir,
        &[
            "-t",
            "all:v1",
            "-t",
            "all:v2",
            "--label",
            "extra=yes",
            "--build-arg",
            "GREETING=howdy",
        ],
    );
    assert!(out.contains("Step 1/"), "{out}");
    assert!(out.contains("Successfully tagged all:v1"), "{out}");
    assert!(out.contains("Successfully tagged all:v2"), "{out}");
    let c = config(&host, "all:v1");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(c["Labels"]["version"], "1");
    assert_eq!(c["Labels"]["maintainer.name"], "me");
    assert_eq!(c["Labels"]["extra"], "yes");
    assert!(c["ExposedPorts"]["8080/tcp"].is_object(), "{c}");
    assert!(c["ExposedPorts"]["53/udp"].is_object(), "{c}");
    assert!(c["Volumes"]["/data"].is_object(), "{c}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/onbuild"])
    );
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 5_000_000_000i64);
    let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(env.contains(&"APP=/app".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("GREETING")),
        "build args stay out of the config: {env:?}"
    );
    // It runs with what the Dockerfile declared.
    let out = host.ok(&["run", "--rm", "all:v1"]);
    assert_eq!(out, "howdy from /app\nexec-form\nhi there\n1000\n");
    let (code, out, err) = host.run(&[], &["true"]);
    assert_eq!(code, 0, "{out}{err}");
    let listing = host.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "",
        "all:v1",
        "sh",
        "-c",
        "stat -c '%u:%g %n' /app/hello.txt; cat /app/sub/a /app/sub/b/c /extracted/inside.txt /bz/inside.txt /xz/inside.txt",
    ]);
    assert_eq!(
        listing,
        "1000:1000 /app/hello.txt\nA\nC\nfrom the tar\nfrom the tar\nfrom the tar\n"
    );
    // History: config-only steps have no layer.
    let history = host.ok(&["history", "--no-trunc", "all:v1"]);
    assert!(history.contains("ENV APP=/app PATH_EXTRA=x"), "{history}");
    assert!(
        history.contains("|1 GREETING=howdy /bin/sh -c echo"),
        "{history}"
    );
}

fn hits(out: &str) -> usize {
    out.matches(" ---> Using cache").count()
}

fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no id in {out}"))
        .trim()
        .to_string()
}

#[test]
fn cache_hits_and_misses_where_docker_has_them() {
    let mut host = build_host();
    let dir = context(
        &host,
        "cache",
        "FROM bb\nRUN echo one > /one\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nRUN cat /b.txt > /c\nCMD [\"cat\", \"/c\"]\n",
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    let first = built_ok(&host, &dir, &["-t", "cached"]);
    assert_eq!(hits(&first), 0, "{first}");
    let again = built_ok(&host, &dir, &["-t", "cached"]);
    assert_eq!(hits(&again), 5, "{again}");
    assert_eq!(built_id(&again), built_id(&first));
    // Touched with the same content: still every step from the cache.
    fs::write(dir.join("a.txt"), "a\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    fs::File::options()
        .write(true)
        .open(dir.join("a.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let touched = built_ok(&host, &dir, &["-t", "cached"]);
    assert_eq!(hits(&touched), 5, "{touched}");
    assert_eq!(built_id(&touched), built_id(&first));
    // The daemon restarted: the cache is still there.
    let pid = host.daemon_pid().unwrap();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    host.start_daemon();
    let restarted = built_ok(&host, &dir, &["-t", "cached"]);
    assert_eq!(hits(&restarted), 5, "{restarted}");
    // A changed file: its step and the later ones miss, earlier ones hit.
    fs::write(dir.join("b.txt"), "changed\n").unwrap();
    let changed = built_ok(&host, &dir, &["-t", "cached"]);
    assert_eq!(hits(&changed), 2, "{changed}");
    assert_eq!(host.ok(&["run", "--rm", "cached"]), "changed\n");
    // --no-cache: nothing from the cache.
    let fresh = built_ok(&host, &dir, &["--no-cache", "-t", "cached"]);
    assert_eq!(hits(&fresh), 0, "{fresh}");
    // An entry whose image was removed is ignored.
    host.ok(&["rmi", "cached"]);
    let after_rmi = built_ok(&host, &dir, &["-t", "cached"]);
    assert!(after_rmi.contains("Successfully built"), "{after_rmi}");
    assert_eq!(host.ok(&["run", "--rm", "cached"]), "changed\n");
}

#[test]
fn stages_copy_from_each_other_and_unneeded_ones_are_skipped() {
    let host = build_host();
    let dir = context(
        &host,
        "multi",
        "FROM bb AS builder\nRUN echo built > /out.txt\n\
         FROM bb AS unused\nRUN false\n\
         FROM bb\nCOPY --from=builder /out.txt /res/\nCOPY --from=0 /out.txt /res/zero.txt\n\
         COPY --from=bb /etc/group /res/group\nCMD [\"cat\", \"/res/out.txt\", \"/res/zero.txt\"]\n",
        &[],
    );
    let out = built_ok(&host, &dir, &["-t", "multi"]);
    assert!(
        !out.contains("RUN false"),
        "the unused stage was built: {out}"
    );
    assert_eq!(host.ok(&["run", "--rm", "multi"]), "built\nbuilt\n");
    let group = host.ok(&["run", "--rm", "multi", "cat", "/res/group"]);
    assert!(group.starts_with("root:x:0:"), "{group}");
    // --target stops at a stage.
    built_ok(&host, &dir, &["--target", "builder", "-t", "multi-builder"]);
    assert_eq!(
        host.ok(&["run", "--rm", "multi-builder", "cat", "/out.txt"]),
        "built\n"
    );
    let (code, _, _) = host.run(&[], &["true"]);
    assert_eq!(code, 0);
    let missing = host.stack(&["run", "--rm", "multi-builder", "test", "-e", "/res"]);
    assert!(!missing.status.success());
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let host = build_host();
    let parent = context(
        &host,
        "parent",
        "FROM bb\nONBUILD RUN echo triggered > /trig\nONBUILD COPY x.txt /x.txt\n",
        &[],
    );
    built_ok(&host, &parent, &["-t", "parent:1"]);
    let child = context(
        &host,
        "child",
        "FROM parent:1\nRUN cat /trig /x.txt > /both\n",
        &[("x.txt", "from the child\n")],
    );
    let out = built_ok(&host, &child, &["-t", "child:1"]);
    assert!(out.contains("# Executing 2 build triggers"), "{out}");
    assert_eq!(
        host.ok(&["run", "--rm", "child:1", "cat", "/both"]),
        "triggered\nfrom the child\n"
    );
    assert!(config(&host, "child:1")["OnBuild"].is_null());
}

#[test]
fn dockerignore_excludes_files_from_copy() {
    let host = build_host();
    let dir = context(
        &host,
        "ignore",
        "FROM bb\nCOPY . /ctx/\n",
        &[
            (".dockerignore", "*.log\nsecret\n!secret/keep\n"),
            ("a.log", "no"),
            ("b.txt", "yes"),
            ("secret/s", "no"),
            ("secret/keep", "kept"),
        ],
    );
    built_ok(&host, &dir, &["-t", "ignored"]);
    let out = host.ok(&[
        "run",
        "--rm",
        "ignored",
        "sh",
        "-c",
        "cat /ctx/b.txt /ctx/secret/keep; ls /ctx/a.log /ctx/secret/s 2>&1 | wc -l",
    ]);
    assert_eq!(out, "yeskept2\n");
    let bad = context(
        &host,
        "ignore2",
        "FROM bb\nCOPY a.log /\n",
        &[(".dockerignore", "*.log\n"), ("a.log", "x")],
    );
    let (ok, out, err) = build(&host, &bad, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("file not found in build context or excluded by .dockerignore"),
        "{err}"
    );
}

#[test]
fn hostile_contexts_are_refused() {
    let host = build_host();
    let dir = context(&host, "hostile", "FROM bb\nCOPY link/passwd /p\n", &[]);
    std::os::unix::fs::symlink("/etc", dir.join("link")).unwrap();
    let (ok, _, err) = build(&host, &dir, &[]);
    assert!(!ok);
    assert!(
        err.contains("forbidden path outside the build context"),
        "{err}"
    );
    let up = context(
        &host,
        "hostile2",
        "FROM bb\nCOPY ../hostile/Dockerfile /p\n",
        &[],
    );
    let (ok, _, err) = build(&host, &up, &[]);
    assert!(!ok);
    assert!(
        err.contains("forbidden path outside the build context"),
        "{err}"
    );
    // A symlink inside a copied directory is copied as a symlink.
    let links = context(&host, "links", "FROM bb\nCOPY d /d\n", &[("d/f", "f")]);
    std::os::unix::fs::symlink("/etc/passwd", links.join("d/l")).unwrap();
    built_ok(&host, &links, &["-t", "links"]);
    let out = host.ok(&[
        "run",
        "--rm",
        "links",
        "sh",
        "-c",
        "readlink /d/l; cat /d/l",
    ]);
    assert_eq!(out, format!("/etc/passwd\n{}", crate::host::PASSWD));
    // An absurd size.
    let big = context(&host, "big", "FROM bb\nCOPY small /\n", &[("small", "s")]);
    let f = fs::File::create(big.join("huge")).unwrap();
    f.set_len(stack::build::context::MAX_FILE_SIZE + 1).unwrap();
    let (ok, _, err) = build(&host, &big, &[]);
    assert!(!ok);
    assert!(err.contains("larger than the limit"), "{err}");
    // A context the daemon cannot read.
    let answer = host.http("POST", "/build?context=/nonexistent/ctx", "text/plain", b"");
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("cannot read the build context"),
        "{}",
        answer.text()
    );
}

#[test]
fn run_heredocs_are_scripts_and_their_shebang_picks_the_interpreter() {
    let host = build_host();
    let dir = context(
        &host,
        "runheredoc",
        "FROM bb\nENV WHO=heredoc\nRUN <<EOF\necho \"one $WHO\" > /one\necho two >> /one\nEOF\nRUN <<EOF\n#!/bin/sh -e\ncase $- in *e*) echo errexit > /flags ;; esac\nEOF\nRUN cat > /cat <<EOF\nfed $WHO\nEOF\nCMD cat /one /flags /cat\n",
        &[],
    );
    let out = built_ok(&host, &dir, &["-t", "runheredoc"]);
    assert!(out.contains("Step 3/6 : RUN <<EOF"), "{out}");
    assert_eq!(
        host.ok(&["run", "--rm", "runheredoc"]),
        "one heredoc\ntwo\nerrexit\nfed heredoc\n"
    );
    // Unchanged, every step comes from the cache.
    let again = built_ok(&host, &dir, &["-t", "runheredoc"]);
    assert_eq!(hits(&again), 5, "{again}");
}

#[test]
fn copy_heredocs_write_inline_files() {
    let host = build_host();
    let dir = context(
        &host,
        "copyheredoc",
        "FROM bb\nARG NAME=world\nCOPY <<EOF /hello.txt\nhello $NAME\nEOF\nCOPY <<'A' <<B /dir/\nraw $NAME\nA\nb\nB\nCMD cat /hello.txt /dir/A /dir/B\n",
        &[],
    );
    built_ok(&host, &dir, &["-t", "copyheredoc"]);
    assert_eq!(
        host.ok(&["run", "--rm", "copyheredoc"]),
        "hello world\nraw $NAME\nb\n"
    );
    let mode = host.ok(&[
        "run",
        "--rm",
        "copyheredoc",
        "stat",
        "-c",
        "%a",
        "/hello.txt",
    ]);
    assert_eq!(mode.trim(), "644");
    // A changed body is a cache miss for its step.
    let dir = context(
        &host,
        "copyheredoc",
        "FROM bb\nARG NAME=world\nCOPY <<EOF /hello.txt\nhello $NAME\nEOF\nCOPY <<'A' <<B /dir/\nraw $NAME\nA\nchanged\nB\nCMD cat /hello.txt /dir/A /dir/B\n",
        &[],
    );
    let out = built_ok(&host, &dir, &["-t", "copyheredoc"]);
    assert_eq!(hits(&out), 2, "{out}");
    assert_eq!(
        host.ok(&["run", "--rm", "copyheredoc"]),
        "hello world\nraw $NAME\nchanged\n"
    );
}

#[test]
fn run_mounts_are_refused_not_ignored() {
    let host = build_host();
    let dir = context(
        &host,
        "mount",
        "FROM bb\nRUN --mount=type=cache,target=/c true\n",
        &[],
    );
    let (ok, out, err) = build(&host, &dir, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("RUN --mount is not supported"), "{err}");
}

#[test]
fn a_failing_run_fails_the_build_with_dockers_message() {
    let host = build_host();
    let dir = context(&host, "fail", "FROM bb\nRUN echo before\nRUN false\n", &[]);
    let (ok, out, err) = build(&host, &dir, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("before"), "{out}");
    assert!(
        err.contains("The command '/bin/sh -c false' returned a non-zero code: 1"),
        "{err}"
    );
    // No container is left behind.
    assert_eq!(host.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn dockerfiles_and_contexts_come_from_stdin() {
    let host = build_host();
    let out = host.stack_with_input(
        &["build", "-t", "stdin1", "-"],
        b"FROM bb\nRUN echo piped > /p\n".to_vec(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.ok(&["run", "--rm", "stdin1", "cat", "/p"]), "piped\n");
    let dir = context(
        &host,
        "withfile",
        "FROM bb\n",
        &[("f.txt", "from the context\n")],
    );
    let out = host.stack_with_input(
        &["build", "-t", "stdin2", "-f", "-", dir.to_str().unwrap()],
        b"FROM bb\nCOPY f.txt /\n".to_vec(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        host.ok(&["run", "--rm", "stdin2", "cat", "/f.txt"]),
        "from the context\n"
    );
    // A context tarball on stdin.
    let tar = std::process::Command::new("tar")
        .args(["-cf", "-", "-C", dir.to_str().unwrap(), "."])
        .output()
        .unwrap();
    fs::write(dir.join("Dockerfile"), "FROM bb\nCOPY f.txt /t.txt\n").unwrap();
    let tar2 = std::process::Command::new("tar")
        .args(["-cf", "-", "-C", dir.to_str().unwrap(), "."])
        .output()
        .unwrap();
    drop(tar);
    let out = host.stack_with_input(&["build", "-t", "stdin3", "-"], tar2.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        host.ok(&["run", "--rm", "stdin3", "cat", "/t.txt"]),
        "from the context\n"
    );
}

fn ids(host: &Host) -> std::collections::BTreeMap<String, String> {
    crate::stacks::containers(host)
        .into_iter()
        .map(|(k, (id, _))| (k, id))
        .collect()
}

#[test]
fn a_stack_service_is_built_and_rebuilt_when_its_context_changes() {
    let host = build_host();
    let subnet = format!("{}.0/24", crate::host::prefix());
    fs::write(
        host.work().join("compose.yaml"),
        format!(
            "name: bst\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: {subnet}\n\
             services:\n  app:\n    build: ./app\n    command: [\"sleep\", \"1000\"]\n  other:\n    image: bb\n    command: [\"sleep\", \"1000\"]\n"
        ),
    )
    .unwrap();
    let app = host.work().join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("Dockerfile"), "FROM bb\nCOPY v.txt /v.txt\n").unwrap();
    fs::write(app.join("v.txt"), "1\n").unwrap();
    let out = host.ok(&["up", "-d"]);
    assert!(out.contains("build bst-app:latest"), "{out}");
    assert_eq!(host.ok(&["exec", "bst-app-1", "cat", "/v.txt"]), "1\n");
    let first = ids(&host);
    // Unchanged: nothing to do, even with --build (the cache gives the same image).
    assert!(host.ok(&["plan"]).contains("up to date"));
    host.ok(&["up", "-d", "--build"]);
    assert_eq!(
        ids(&host),
        first,
        "--build of an unchanged context recreated"
    );
    // The context changes: only that service is rebuilt and recreated.
    fs::write(app.join("v.txt"), "2\n").unwrap();
    host.ok(&["apply"]);
    let second = ids(&host);
    assert_ne!(second["bst-app-1"], first["bst-app-1"]);
    assert_eq!(second["bst-other-1"], first["bst-other-1"]);
    assert_eq!(host.ok(&["exec", "bst-app-1", "cat", "/v.txt"]), "2\n");
    // A build that fails: the apply says so, the running generation stays.
    fs::write(app.join("Dockerfile"), "FROM bb\nRUN exit 3\n").unwrap();
    let err = host.fails(&["apply"]);
    assert!(err.contains("returned a non-zero code: 3"), "{err}");
    assert!(host.ok(&["status"]).contains("non-zero code: 3"));
    assert_eq!(ids(&host), second, "a failed build touched the stack");
    fs::write(app.join("Dockerfile"), "FROM bb\nCOPY v.txt /v.txt\n").unwrap();
    host.ok(&["apply"]);
    assert_eq!(ids(&host), second);
    // `stack build` in the project builds the stack's services.
    let out = host.ok(&["build"]);
    assert!(out.contains("Building app"), "{out}");
    assert!(out.contains("Successfully tagged bst-app:latest"), "{out}");
    host.ok(&["down"]);
}
