//! The local image verbs against real peers: archives written by `stack save`
//! are read by skopeo, archives skopeo writes load into stack, and the image
//! verbs behave like Docker's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use stack::api::Endpoint;
use stack::api::client::Client;
use stack::api::images::JsonMessage;
use stack::image::digest::Digest;
use stack::image::images::Images;

/// A state root of its own, removed at the end.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    fn stack(&self, args: &[&str]) -> Output {
        crate::output_within(
            Command::new(env!("CARGO_BIN_EXE_stack"))
                .arg("--root")
                .arg(self.state())
                .args(args)
                .env("NO_COLOR", "1")
                .env_remove("STACK_ROOT")
                .env_remove("STACK_RUN_DIR")
                .env_remove("STACK_HOST"),
            Duration::from_secs(120),
        )
    }

    /// A client of this root's daemon (started by a first command).
    fn api(&self) -> Client {
        self.ok(&["images", "-q"]);
        Client::new(
            Endpoint::Unix(stack::daemon::default_socket(&self.state())),
            None,
        )
        .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.stack(args);
        assert!(
            out.status.success(),
            "stack {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn images(&self) -> Images {
        Images::open(&self.state()).unwrap()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        crate::stop_daemon(&self.state());
    }
}

fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{name} is required for this test (apt-get install {})",
        match name {
            "busybox" => "busybox-static",
            other => other,
        }
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = crate::output_within(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A minimal root file system: a static busybox and a few links to it.
fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(tool("busybox"), bin.join("busybox")).unwrap();
    for name in ["sh", "ls", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(name)).unwrap();
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "stack\n").unwrap();
}

fn import_busybox(root: &Root, name: &str) -> String {
    let rootfs = root.path().join("rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    root.ok(&[
        "import",
        "-c",
        "CMD [\"/bin/sh\"]",
        "-c",
        "ENV GREETING=hello",
        rootfs.to_str().unwrap(),
        name,
    ])
    .trim()
    .to_string()
}

#[test]
fn imported_images_are_listed_tagged_and_removed_like_docker() {
    let root = Root::new();
    let id = import_busybox(&root, "busybox:test");
    assert!(id.starts_with("sha256:"), "{id}");
    let listing = root.ok(&["images"]);
    let mut lines = listing.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["busybox", "test", &id["sha256:".len()..][..12]]);

    root.ok(&["tag", "busybox:test", "localhost:5000/tools/busybox:v1"]);
    let quiet = root.ok(&["images", "-q"]);
    assert_eq!(quiet.lines().count(), 1, "one image, two names: {quiet}");
    let filtered = root.ok(&["images", "--filter", "reference=localhost:5000/*/*"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");

    // By id with two names: refused without -f, like Docker.
    let refused = root.stack(&["rmi", &id]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("referenced in multiple repositories")
    );

    let untagged = root.ok(&["rmi", "busybox:test"]);
    assert_eq!(untagged.trim(), "Untagged: busybox:test");
    let deleted = root.ok(&["rmi", "localhost:5000/tools/busybox:v1"]);
    assert!(deleted.contains(&format!("Deleted: {id}")), "{deleted}");
    assert_eq!(root.ok(&["images", "-q"]), "");
    assert!(
        root.images().blobs.list().unwrap().is_empty(),
        "blobs pruned with the image"
    );
}

#[test]
fn import_applies_changes_and_history_and_inspect_show_them() {
    let root = Root::new();
    import_busybox(&root, "bb:1");
    let inspect: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "inspect", "bb:1"])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["Env"], serde_json::json!(["GREETING=hello"]));
    assert_eq!(inspect[0]["RepoTags"], serde_json::json!(["bb:1"]));
    let history = root.ok(&["history", "bb:1"]);
    assert!(history.contains("Imported from -"), "{history}");
}

#[test]
fn docker_archives_from_stack_are_read_by_skopeo_and_back() {
    let root = Root::new();
    let id = import_busybox(&root, "busybox:archive");
    let archive = root.path().join("busybox.tar");
    root.ok(&["save", "-o", archive.to_str().unwrap(), "busybox:archive"]);

    // skopeo reads our archive: same config digest, same layer.
    let inspect = run(Command::new(tool("skopeo"))
        .args(["inspect", "--config", "--raw"])
        .arg(format!("docker-archive:{}", archive.display())));
    let config_digest = Digest::of(inspect.trim_end_matches('\n').as_bytes());
    let ours = root.images().blobs.read(&id.parse().unwrap()).unwrap();
    assert_eq!(Digest::of(&ours), id.parse::<Digest>().unwrap());
    let skopeo_config: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let our_config: serde_json::Value = serde_json::from_slice(&ours).unwrap();
    assert_eq!(
        skopeo_config, our_config,
        "skopeo sees the config we wrote ({config_digest})"
    );

    // skopeo copies it to an OCI layout and a docker archive of its own; both load.
    let oci = root.path().join("oci");
    run(Command::new(tool("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:busybox:copied", oci.display())));
    let skopeo_archive = root.path().join("from-skopeo.tar");
    run(Command::new(tool("skopeo"))
        .arg("copy")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!(
            "docker-archive:{}:busybox:from-skopeo",
            skopeo_archive.display()
        )));

    let fresh = Root::new();
    let loaded = fresh.ok(&["load", "-i", skopeo_archive.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: busybox:from-skopeo"),
        "{loaded}"
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&fresh.ok(&["image", "inspect", "busybox:from-skopeo"])).unwrap();
    assert_eq!(
        inspected[0]["Id"],
        serde_json::json!(id),
        "same config, same id"
    );

    // An OCI layout directory tarred up loads too.
    let oci_tar = root.path().join("oci.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&oci_tar)
        .arg("-C")
        .arg(&oci)
        .arg("."));
    let loaded = fresh.ok(&["load", "-i", oci_tar.to_str().unwrap()]);
    assert!(
        loaded.contains(&id) || loaded.contains("Loaded image"),
        "{loaded}"
    );
}

#[test]
fn oci_archives_from_stack_are_read_by_skopeo() {
    let root = Root::new();
    let id = import_busybox(&root, "busybox:oci");
    let archive = root.path().join("busybox-oci.tar");
    root.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "busybox:oci",
    ]);
    let config = run(Command::new(tool("skopeo"))
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci-archive:{}:oci", archive.display())));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let ours: serde_json::Value =
        serde_json::from_slice(&root.images().blobs.read(&id.parse().unwrap()).unwrap()).unwrap();
    assert_eq!(config, ours);

    // And our own OCI archive loads back with its name.
    let fresh = Root::new();
    let loaded = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: busybox:oci"), "{loaded}");
}

/// An OCI archive of a busybox image with one blob's content changed (its
/// name still claims the old digest), and that blob's name.
fn tampered_archive(root: &Root) -> (PathBuf, Digest) {
    import_busybox(root, "busybox:tamper");
    let archive = root.path().join("ok.tar");
    root.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "busybox:tamper",
    ]);
    let unpacked = root.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked));
    let blobs = unpacked.join("blobs/sha256");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let bad = root.path().join("bad.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&bad)
        .arg("-C")
        .arg(&unpacked)
        .arg("."));
    let digest = Digest::from_hex(victim.file_name().unwrap().to_str().unwrap()).unwrap();
    (bad, digest)
}

#[test]
fn a_tampered_archive_is_refused_and_leaves_nothing() {
    let root = Root::new();
    let (bad, victim) = tampered_archive(&root);

    let fresh = Root::new();
    let out = fresh.stack(&["load", "-i", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match its digest"), "{stderr}");
    assert_eq!(fresh.ok(&["images", "-q"]), "");
    assert!(!fresh.images().blobs.contains(&victim));
}

/// `POST /images/load` with a tampered archive: a 400 naming the blob, no
/// image, the bad blob not stored, no temp file left.
#[test]
fn the_api_refuses_a_tampered_archive_and_stores_nothing() {
    let root = Root::new();
    let (bad, victim) = tampered_archive(&root);
    let fresh = Root::new();
    let api = fresh.api();
    let err = api
        .post("/images/load")
        .upload(std::fs::File::open(&bad).unwrap())
        .stream()
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    let list: Vec<serde_json::Value> = api.get("/images/json").send_json().unwrap();
    assert!(list.is_empty(), "{list:?}");
    let images = fresh.images();
    assert!(!images.blobs.contains(&victim));
    assert!(images.catalog.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(images.blobs.tmp_dir()).unwrap().count(),
        0,
        "no temp file left"
    );
    // The daemon still serves: the sound archive loads.
    let good = root.path().join("ok.tar");
    let loaded = api
        .post("/images/load")
        .upload(std::fs::File::open(&good).unwrap())
        .bytes()
        .unwrap();
    let message: JsonMessage =
        serde_json::from_slice(loaded.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        message.stream.as_deref(),
        Some("Loaded image: busybox:tamper\n")
    );
}

/// Unknown images answer 404 with Docker's words, on every image route.
#[test]
fn the_api_answers_404_for_an_unknown_image_in_docker_s_words() {
    let root = Root::new();
    let api = root.api();
    for (method, path) in [
        ("GET", "/images/nope:1/json"),
        ("GET", "/images/localhost:5000/team/nope:1/history"),
        ("DELETE", "/images/nope:1"),
        ("POST", "/images/nope:1/tag"),
    ] {
        let call = match method {
            "GET" => api.get(path),
            "DELETE" => api.delete(path),
            _ => api.post(path).query("repo", "other"),
        };
        let err = call.bytes().unwrap_err();
        assert_eq!(err.status(), Some(404), "{method} {path}: {err}");
        let name = path
            .trim_start_matches("/images/")
            .trim_end_matches("/json")
            .trim_end_matches("/history")
            .trim_end_matches("/tag");
        assert_eq!(err.to_string(), format!("No such image: {name}"));
    }
    let err = api
        .get("/images/get")
        .query("names", "nope:1")
        .bytes()
        .unwrap_err();
    assert_eq!(
        (err.status(), err.to_string()),
        (Some(404), "No such image: nope:1".to_string())
    );
    // The command line says the same.
    let out = root.stack(&["image", "inspect", "nope:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nope:1"));
}

/// A pull whose `X-Registry-Auth` header cannot be read is refused with a
/// 400 that says why, before any registry is asked.
#[test]
fn a_bad_registry_auth_header_is_a_400_with_the_reason() {
    let root = Root::new();
    let api = root.api();
    let url = base64::engine::general_purpose::URL_SAFE;
    for (header, expected) in [
        (
            "%%% not base64 %%%".to_string(),
            "invalid X-Registry-Auth header: not base64url",
        ),
        (
            url.encode("\"just a string\""),
            "invalid X-Registry-Auth header: not an auth config",
        ),
        (
            url.encode(r#"{"auth":"bm90LWEtcGFpcg=="}"#),
            "the auth field is not base64(user:password)",
        ),
    ] {
        let err = api
            .post("/images/create")
            .query("fromImage", "127.0.0.1:9/nothing")
            .query("tag", "latest")
            .header(stack::api::images::REGISTRY_AUTH_HEADER, &header)
            .stream()
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn image_layers_unpack_into_shared_snapshots() {
    let root = Root::new();
    let id: Digest = import_busybox(&root, "busybox:layers").parse().unwrap();
    let images = root.images();
    let dirs = images.layers(&id).unwrap();
    assert_eq!(dirs.len(), 1);
    let busybox = dirs[0].join("bin/busybox");
    assert_eq!(
        std::fs::read(&busybox).unwrap(),
        std::fs::read(tool("busybox")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(dirs[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // A second image on the same layer shares the directory.
    root.ok(&["tag", "busybox:layers", "other:1"]);
    let again = images
        .layers(&root.images().catalog.resolve("other:1").unwrap())
        .unwrap();
    assert_eq!(again, dirs);
    // Pruning keeps what an image uses, and removes it with the last image.
    root.ok(&["image", "prune", "-f"]);
    assert!(dirs[0].exists());
    root.ok(&["rmi", "-f", &id.to_string()]);
    assert!(!dirs[0].exists());
}

/// `stack images`, `history` and `inspect` give a layer's size uncompressed,
/// as Docker does (the bytes of content its entries declare), not the size of
/// the compressed blob: 3,000,000 zero bytes gzip to a few kB and still show
/// as 3MB. Images loaded from an archive, and records whose sizes were not
/// kept, are measured from their blobs.
#[test]
fn sizes_are_uncompressed_like_docker() {
    let root = Root::new();
    let rootfs = root.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("zeros"), vec![0u8; 3_000_000]).unwrap();
    let tarball = root.path().join("rootfs.tar.gz");
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&rootfs)
        .arg("."));
    assert!(std::fs::metadata(&tarball).unwrap().len() < 100_000);
    let id = root
        .ok(&["import", tarball.to_str().unwrap(), "zeros:1"])
        .trim()
        .to_string();

    let size_column = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect()
    };
    assert_eq!(size_column(&root.ok(&["images"])), ["3MB"]);
    let history = root.ok(&["history", "zeros:1"]);
    let has_size = |history: &str| {
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().any(|w| w == "3MB"))
    };
    assert!(has_size(&history), "{history}");
    let inspect: serde_json::Value =
        serde_json::from_str(&root.ok(&["image", "inspect", "zeros:1"])).unwrap();
    assert_eq!(inspect[0]["Size"], serde_json::json!(3_000_000));
    let json: serde_json::Value =
        serde_json::from_str(root.ok(&["images", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Size"], serde_json::json!(3_000_000));

    // A record without a kept size is measured from its blob.
    let diffs = root.path().join("state/images/diffs");
    for entry in std::fs::read_dir(&diffs).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert_eq!(size_column(&root.ok(&["images"])), ["3MB"]);
    assert_eq!(std::fs::read_dir(&diffs).unwrap().count(), 1, "kept again");

    // Loaded from an archive: the same.
    let archive = root.path().join("zeros.tar");
    root.ok(&["save", "-o", archive.to_str().unwrap(), "zeros:1"]);
    let fresh = Root::new();
    fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(size_column(&fresh.ok(&["images"])), ["3MB"]);
    let history = fresh.ok(&["history", &id]);
    assert!(has_size(&history), "{history}");
}
