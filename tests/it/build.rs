//! Builds: real Dockerfiles built by the daemon from the busybox image `bb`,
//! the results inspected and run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use crate::host::Host;

static NEXT: AtomicU8 = AtomicU8::new(0);

/// A host whose daemon has a default bridge of its own (10.81–10.89).
fn build_host() -> Host {
    let pid = std::process::id();
    let x = 81 + u8::try_from(pid % 9).unwrap();
    let y = NEXT
        .fetch_add(1, Ordering::SeqCst)
        .wrapping_add(u8::try_from((pid / 9) % 200).unwrap());
    let bip = format!("10.{x}.{y}.1/24");
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
    let st = std::process::Command::new("tar")
        .args([
            "-cf",
            dir.join("files.tar").to_str().unwrap(),
            "-C",
            tar_src.to_str().unwrap(),
            "inside.txt",
        ])
        .status()
        .unwrap();
    assert!(st.success());
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
        "stat -c '%u:%g %n' /app/hello.txt; cat /app/sub/a /app/sub/b/c /extracted/inside.txt",
    ]);
    assert_eq!(listing, "1000:1000 /app/hello.txt\nA\nC\nfrom the tar\n");
    // History: config-only steps have no layer.
    let history = host.ok(&["history", "--no-trunc", "all:v1"]);
    assert!(history.contains("ENV APP=/app PATH_EXTRA=x"), "{history}");
    assert!(
        history.contains("|1 GREETING=howdy /bin/sh -c echo"),
        "{history}"
    );
}
