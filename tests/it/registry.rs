//! The registry client against real peers: Debian's distribution registry
//! (`docker-registry`, v2.8) started per test on a free port, with no auth,
//! htpasswd basic auth, or bearer tokens from a token server in this file;
//! skopeo puts images in and checks what stack pushed.
//!
//! Needs `docker-registry`, `skopeo`, `openssl` and `/bin/busybox`; a test
//! fails with the package to install when one is missing.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use stack::image::auth::{self, AuthStore, Credentials};
use stack::image::catalog::{Catalog, ImageRecord, LayerRecord};
use stack::image::digest::Digest;
use stack::image::oci;
use stack::image::pull::{NoProgress, PullProgress, pull, pull_all_tags};
use stack::image::push::{NoPushProgress, PushProgress, push};
use stack::image::reference::Reference;
use stack::image::registry::{RegistryClient, RegistryError, RegistryOptions, UploadOutcome};
use stack::image::snapshot::{Snapshots, chain_ids};
use stack::image::store::BlobStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "tester";
const PASSWORD: &str = "s3cret-pass";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/registry")
        .join(name)
}

/// Fails loudly (these tests never skip) when a peer binary is missing.
fn tool(name: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is required for the registry tests: apt-get install {package}");
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = crate::output_within(cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    run(Command::new(tool("skopeo", "skopeo"))
        .arg("--insecure-policy")
        .args(args))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the registry under test authenticates.
enum Access {
    Open,
    Htpasswd,
    Token(TokenServer),
}

/// A `docker-registry` process with its own storage, killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
    _token: Option<TokenServer>,
}

impl Registry {
    fn start(access: Access) -> Self {
        let binary = tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            storage.display()
        );
        let mut token = None;
        match access {
            Access::Open => {}
            Access::Htpasswd => config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                fixture("htpasswd").display()
            )),
            Access::Token(server) => {
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                    server.addr,
                    server.cert.display()
                ));
                token = Some(server);
            }
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Self {
            child,
            dir,
            host,
            _token: token,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited at start: {status}");
            }
            if let Ok(mut conn) = TcpStream::connect(&self.host) {
                let _ = conn.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut head = [0u8; 12];
                if conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not answer on {} within 20 s",
            self.host
        );
    }

    /// Where distribution's filesystem driver keeps a blob's bytes.
    fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn reference(&self, name: &str) -> Reference {
        format!("{}/{name}", self.host).parse().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A state root with a blob store and catalog.
struct State {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: BlobStore,
    catalog: Catalog,
    snapshots: Snapshots,
}

impl State {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        Self {
            store: BlobStore::open(&root).unwrap(),
            catalog: Catalog::open(&root).unwrap(),
            snapshots: Snapshots::open(&root).unwrap(),
            root,
            _dir: dir,
        }
    }

    fn tmp_is_empty(&self) -> bool {
        fs::read_dir(self.store.tmp_dir()).unwrap().count() == 0
    }
}

fn client() -> RegistryClient {
    RegistryClient::new(RegistryOptions::default()).unwrap()
}

/// A tar of `files` (path, bytes) and `links` (path, target).
fn tar_of(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, *bytes).unwrap();
    }
    for (path, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(0);
        builder.append_link(&mut header, path, target).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Bytes gzip cannot shrink, from a fixed seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// An OCI image layout being written.
struct Layout {
    dir: PathBuf,
}

/// What was written for one image.
#[derive(Debug, Clone)]
struct Written {
    manifest: Digest,
    manifest_size: u64,
    config: Digest,
    layers: Vec<Digest>,
    diff_ids: Vec<Digest>,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Self { dir }
    }

    fn blob(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        fs::write(self.dir.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        digest
    }

    /// Writes an image of gzip layers made from `tars`.
    fn image(&self, tars: &[Vec<u8>], os: &str, arch: &str) -> Written {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        for tar in tars {
            let gz = gzip(tar);
            let digest = self.blob(&gz);
            descriptors.push(
                json!({"mediaType": oci::MEDIA_OCI_LAYER_GZIP, "digest": digest, "size": gz.len()}),
            );
            layers.push(digest);
            diff_ids.push(Digest::of(tar));
        }
        let config = serde_json::to_vec(&json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": os,
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = self.blob(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        Written {
            manifest: self.blob(&manifest),
            manifest_size: manifest.len() as u64,
            config: config_digest,
            layers,
            diff_ids,
        }
    }

    /// `index.json` naming one manifest or index as `tag`.
    fn index(&self, media_type: &str, digest: &Digest, size: u64, tag: &str) {
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}}],
        });
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
    }
}

fn busybox_tar() -> Vec<u8> {
    let busybox = fs::read(tool("busybox", "busybox-static")).unwrap();
    tar_of(
        &[("bin/busybox", &busybox)],
        &[
            ("bin/sh", "busybox"),
            ("bin/ls", "busybox"),
            ("bin/echo", "busybox"),
        ],
    )
}

/// Builds the busybox image as an OCI layout and copies it with skopeo to
/// `registry` as `name:latest`.
fn push_busybox(registry: &Registry, name: &str, creds: Option<&str>) -> Written {
    push_busybox_as(registry, name, creds, None)
}

/// [`push_busybox`], converting the manifest to `format` (`v2s2`) on the way.
fn push_busybox_as(
    registry: &Registry,
    name: &str,
    creds: Option<&str>,
    format: Option<&str>,
) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("layout"));
    let written = layout.image(&[busybox_tar()], "linux", "amd64");
    layout.index(
        oci::MEDIA_OCI_MANIFEST,
        &written.manifest,
        written.manifest_size,
        "latest",
    );
    let src = format!("oci:{}:latest", layout.dir.display());
    let dest = format!("docker://{}/{name}:latest", registry.host);
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    if let Some(format) = format {
        args.extend(["--format", format]);
    }
    args.extend([src.as_str(), dest.as_str()]);
    skopeo(&args);
    written
}

fn inspect(args: &[&str], reference: &str) -> Vec<u8> {
    let target = format!("docker://{reference}");
    let mut all = vec!["inspect", "--tls-verify=false"];
    all.extend(args);
    all.push(&target);
    skopeo(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_an_image_that_skopeo_pushed() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let state = State::new();
    let client = client();
    let reference = registry.reference("busybox:latest");

    let result = pull(
        &client,
        &state.store,
        &state.catalog,
        Some(&state.snapshots),
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();

    // What skopeo says is there is what we have.
    let raw = inspect(&["--raw"], &reference.to_string());
    let manifest: oci::Manifest = serde_json::from_slice(&raw).unwrap();
    let config = inspect(&["--config", "--raw"], &reference.to_string());
    assert_eq!(result.manifest, Digest::of(&raw));
    assert_eq!(result.digest, written.manifest);
    assert_eq!(result.id, manifest.config.digest);
    assert_eq!(result.id, Digest::of(&config));
    assert_eq!((result.downloaded, result.existing), (1, 0));
    let record = state.catalog.get(&result.id).unwrap();
    let blobs: Vec<Digest> = record.layers.iter().map(|l| l.blob.clone()).collect();
    let expected: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(blobs, expected);
    assert_eq!(record.layers[0].diff_id, written.diff_ids[0]);
    assert_eq!(record.layers[0].media_type, oci::MEDIA_OCI_LAYER_GZIP);
    assert_eq!(record.manifest.as_ref(), Some(&written.manifest));
    assert_eq!(
        record.repo_digests,
        BTreeSet::from([format!("{}/busybox@{}", registry.host, written.manifest)])
    );
    // Every blob is in the store and reads back verified.
    for digest in [&result.id, &written.manifest, &written.layers[0]] {
        state.store.read(digest).unwrap();
    }
    assert_eq!(state.store.read(&result.id).unwrap(), config);
    assert_eq!(
        state.catalog.resolve(&reference.to_string()).unwrap(),
        result.id
    );
    assert!(state.tmp_is_empty());

    // The layer was unpacked as it arrived, and its size recorded as Docker
    // counts it: the bytes of content (the binary; links have none).
    let chain = &chain_ids(&written.diff_ids)[0];
    let busybox = fs::read(tool("busybox", "busybox-static")).unwrap();
    assert_eq!(
        fs::read(state.snapshots.diff_dir(chain).join("bin/busybox")).unwrap(),
        busybox
    );
    assert_eq!(
        state
            .catalog
            .diff(&written.diff_ids[0])
            .unwrap()
            .unwrap()
            .size,
        busybox.len() as u64
    );

    // Again: nothing to download; by digest: same image, no new tag.
    let again = pull(
        &client,
        &state.store,
        &state.catalog,
        Some(&state.snapshots),
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!((again.downloaded, again.existing), (0, 1));
    let pinned = reference.with_digest(written.manifest.clone());
    let by_digest = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &pinned,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(by_digest.id, result.id);
    assert_eq!(state.catalog.tags().unwrap().len(), 1);
    assert_eq!(
        state.catalog.resolve(&pinned.to_string()).unwrap(),
        result.id
    );

    // Tags, catalog, and the registry's own words for what is missing.
    assert_eq!(
        client.list_tags(&reference).await.unwrap(),
        vec!["latest".to_string()]
    );
    assert_eq!(
        client.catalog(&registry.host).await.unwrap(),
        vec!["busybox".to_string()]
    );
    let missing = registry.reference("busybox:nope");
    let err = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &missing,
        None,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "pull {}/busybox:nope: manifest unknown (404)",
            registry.host
        )
    );
    let all = pull_all_tags(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(all.len(), 1);
}

/// A registry may serve an image whose config names other layer content than
/// the blobs hold: the blobs match their digests, so only unpacking finds out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_unlike_its_config_diff_id_is_refused_and_no_image_is_recorded() {
    let registry = Registry::start(Access::Open);
    let source = State::new();
    let tar = tar_of(&[("etc/motd", b"hello")], &[]);
    let gz = gzip(&tar);
    let blob = source.store.put_bytes(&gz).unwrap();
    let lie = Digest::of(b"some other layer");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [lie]},
    }))
    .unwrap();
    let id = source.store.put_bytes(&config).unwrap();
    source
        .catalog
        .put(&ImageRecord {
            id: id.clone(),
            manifest: None,
            layers: vec![LayerRecord {
                blob: blob.clone(),
                media_type: oci::MEDIA_OCI_LAYER_GZIP.into(),
                size: gz.len() as u64,
                diff_id: lie.clone(),
            }],
            created: None,
            size: gz.len() as u64,
            repo_digests: BTreeSet::new(),
        })
        .unwrap();
    let reference = registry.reference("liar:v1");
    source.catalog.tag(&reference, &id).unwrap();
    push(
        &client(),
        &source.store,
        &source.catalog,
        &reference,
        &NoPushProgress,
    )
    .await
    .unwrap();

    let state = State::new();
    let err = pull(
        &client(),
        &state.store,
        &state.catalog,
        Some(&state.snapshots),
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unpack { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        cause.contains(&format!("image config says {lie}")),
        "{cause}"
    );
    assert!(state.catalog.list().unwrap().is_empty());
    assert!(state.catalog.tags().unwrap().is_empty());
    assert!(state.snapshots.list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(state.root.join("layers")).unwrap().count(),
        0,
        "no temp directory left"
    );
    // The blob itself is intact content and stays for a retry, as Docker keeps it.
    assert!(state.store.contains(&blob));
    assert!(!state.store.contains(&id), "no config without its image");
}

/// Counts what a pull reports.
#[derive(Default)]
struct Counting {
    started: AtomicUsize,
    bytes: AtomicU64,
    done: AtomicUsize,
}

impl PullProgress for Counting {
    fn layer_started(&self, _: &Digest, _: u64) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn layer_advanced(&self, _: &Digest, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }
    fn layer_done(&self, _: &Digest) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// Records each step of a push.
#[derive(Default)]
struct Chunks {
    steps: std::sync::Mutex<Vec<(Digest, u64)>>,
}

impl PushProgress for Chunks {
    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.steps.lock().unwrap().push((digest.clone(), bytes));
    }
}

/// Puts an image straight into the store and catalog, as a build would:
/// no manifest, one gzip layer of `len` noisy bytes.
fn fresh_image(state: &State, name: &Reference, len: usize) -> ImageRecord {
    let tar = tar_of(&[("data/noise", &noise(len, 7))], &[]);
    let gz = gzip(&tar);
    let blob = state.store.put_bytes(&gz).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar)]},
    }))
    .unwrap();
    let id = state.store.put_bytes(&config).unwrap();
    let record = ImageRecord {
        id: id.clone(),
        manifest: None,
        layers: vec![LayerRecord {
            blob,
            media_type: oci::MEDIA_OCI_LAYER_GZIP.into(),
            size: gz.len() as u64,
            diff_id: Digest::of(&tar),
        }],
        created: None,
        size: gz.len() as u64,
        repo_digests: BTreeSet::new(),
    };
    state.catalog.put(&record).unwrap();
    state.catalog.tag(name, &id).unwrap();
    record
}

/// `skopeo copy` of `reference` to an OCI layout: its blobs must be the
/// bytes our store holds.
fn assert_skopeo_reads_back(reference: &Reference, state: &State, blobs: &[Digest]) {
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:x", out.path().join("out").display());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &dest,
    ]);
    for digest in blobs {
        let theirs = fs::read(out.path().join("out/blobs/sha256").join(digest.hex())).unwrap();
        assert_eq!(theirs, state.store.read(digest).unwrap(), "blob {digest}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_a_retagged_pull_and_a_fresh_image_that_skopeo_reads_back() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let state = State::new();
    let client = RegistryClient::new(RegistryOptions {
        chunk_size: 64 << 10,
        ..RegistryOptions::default()
    })
    .unwrap();
    let source = registry.reference("busybox:latest");
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &source,
        None,
        &NoProgress,
    )
    .await
    .unwrap();

    // Retagged to another repository: the layer is mounted, the manifest is
    // the one pulled, byte for byte.
    let copy = registry.reference("team/copy:v1");
    state.catalog.tag(&copy, &pulled.id).unwrap();
    let pushed = push(
        &client,
        &state.store,
        &state.catalog,
        &copy,
        &NoPushProgress,
    )
    .await
    .unwrap();
    assert_eq!(pushed.digest, written.manifest, "same manifest bytes");
    assert_eq!(
        (pushed.mounted, pushed.uploaded),
        (1, 1),
        "layer mounted, config uploaded"
    );
    let raw = inspect(&["--raw"], &copy.to_string());
    assert_eq!(Digest::of(&raw), written.manifest);
    let seen: Value = serde_json::from_slice(&inspect(&[], &copy.to_string())).unwrap();
    assert_eq!(seen["Digest"], written.manifest.to_string());
    assert_skopeo_reads_back(
        &copy,
        &state,
        &[pulled.id.clone(), written.layers[0].clone()],
    );
    let record = state.catalog.get(&pulled.id).unwrap();
    assert!(
        record
            .repo_digests
            .contains(&format!("{}/team/copy@{}", registry.host, written.manifest))
    );

    // Pushing again uploads nothing.
    let again = push(
        &client,
        &state.store,
        &state.catalog,
        &copy,
        &NoPushProgress,
    )
    .await
    .unwrap();
    assert_eq!((again.existing, again.uploaded, again.mounted), (2, 0, 0));

    // A fresh image bigger than the chunk size goes up in PATCH chunks under a
    // new OCI manifest.
    let fresh = registry.reference("fresh:v1");
    let record = fresh_image(&state, &fresh, 300 << 10);
    let chunks = Chunks::default();
    let pushed = push(&client, &state.store, &state.catalog, &fresh, &chunks)
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, 2);
    let steps = chunks.steps.lock().unwrap().clone();
    let layer_steps: Vec<u64> = steps
        .iter()
        .filter(|(d, _)| *d == record.layers[0].blob)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        layer_steps.len() >= 4,
        "sent in PATCH chunks: {layer_steps:?}"
    );
    assert!(layer_steps.iter().all(|n| *n <= 64 << 10));
    assert_eq!(layer_steps.iter().sum::<u64>(), record.layers[0].size);
    let raw = inspect(&["--raw"], &fresh.to_string());
    assert_eq!(Digest::of(&raw), pushed.digest);
    let manifest: oci::Manifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest.media_type.as_deref(),
        Some(oci::MEDIA_OCI_MANIFEST)
    );
    assert_eq!(manifest.config.digest, record.id);
    assert_eq!(manifest.layers[0].digest, record.layers[0].blob);
    assert_skopeo_reads_back(
        &fresh,
        &state,
        &[record.id.clone(), record.layers[0].blob.clone()],
    );
    let updated = state.catalog.get(&record.id).unwrap();
    assert_eq!(updated.manifest, Some(pushed.digest.clone()));

    // And stack pulls it into another state root, same id.
    let other = State::new();
    let progress = Counting::default();
    let back = pull(
        &client,
        &other.store,
        &other.catalog,
        None,
        &fresh,
        None,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(back.id, record.id);
    assert_eq!(progress.started.load(Ordering::SeqCst), 1);
    assert_eq!(progress.done.load(Ordering::SeqCst), 1);
    assert_eq!(progress.bytes.load(Ordering::SeqCst), record.layers[0].size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_blob_is_refused_and_nothing_is_stored() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    // Same length, different bytes: only the digest can tell.
    let data = registry.blob_data(&written.layers[0]);
    let mut bytes = fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xff;
    }
    fs::write(&data, &bytes).unwrap();

    let state = State::new();
    let reference = registry.reference("busybox:latest");
    let err = pull(
        &client(),
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::BlobDigest { digest, .. } if *digest == written.layers[0]),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("refused and nothing was stored"),
        "{message}"
    );
    assert!(state.store.list().unwrap().is_empty(), "no blob stored");
    assert!(state.catalog.list().unwrap().is_empty(), "no record");
    assert!(state.catalog.tags().unwrap().is_empty(), "no tag");
    assert!(state.tmp_is_empty(), "no temp file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_manifest_is_refused() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    // Still valid JSON of the same length, naming another config.
    let data = registry.blob_data(&written.manifest);
    let text = fs::read_to_string(&data).unwrap();
    let hex = written.config.hex();
    let flipped: String = hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' { 'b' } else { 'a' }
            } else {
                c
            }
        })
        .collect();
    fs::write(&data, text.replace(hex, &flipped)).unwrap();

    let state = State::new();
    let client = client();
    for reference in [
        registry.reference("busybox:latest"),
        registry
            .reference("busybox:latest")
            .with_digest(written.manifest.clone()),
    ] {
        let err = pull(
            &client,
            &state.store,
            &state.catalog,
            None,
            &reference,
            None,
            &NoProgress,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, RegistryError::ManifestDigest { expected, .. } if *expected == written.manifest),
            "{reference}: {err:?}"
        );
    }
    assert!(state.store.list().unwrap().is_empty());
    assert!(state.catalog.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selects_the_platform_from_an_index() {
    let registry = Registry::start(Access::Open);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("layout"));
    let amd = layout.image(&[tar_of(&[("arch", b"amd64")], &[])], "linux", "amd64");
    let arm = layout.image(&[tar_of(&[("arch", b"arm64")], &[])], "linux", "arm64");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": oci::MEDIA_OCI_INDEX,
        "manifests": [
            {"mediaType": oci::MEDIA_OCI_MANIFEST, "digest": amd.manifest, "size": amd.manifest_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": oci::MEDIA_OCI_MANIFEST, "digest": arm.manifest, "size": arm.manifest_size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }))
    .unwrap();
    let index_digest = layout.blob(&index);
    layout.index(
        oci::MEDIA_OCI_INDEX,
        &index_digest,
        index.len() as u64,
        "latest",
    );
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.dir.display()),
        &format!("docker://{}/multi:latest", registry.host),
    ]);

    let state = State::new();
    let client = client();
    let reference = registry.reference("multi:latest");
    let arm64 = "linux/arm64".parse().unwrap();
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        Some(&arm64),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, arm.config);
    assert_eq!(pulled.manifest, arm.manifest);
    assert_eq!(
        pulled.digest, index_digest,
        "the repo digest is the index's"
    );
    assert!(state.store.contains(&index_digest), "index stored too");
    assert_eq!(
        state.catalog.get(&arm.config).unwrap().layers[0].blob,
        arm.layers[0]
    );

    let amd64 = "linux/amd64".parse().unwrap();
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        Some(&amd64),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, amd.config);
    if std::env::consts::ARCH == "x86_64" {
        let host = pull(
            &client,
            &state.store,
            &state.catalog,
            None,
            &reference,
            None,
            &NoProgress,
        )
        .await
        .unwrap();
        assert_eq!(host.id, amd.config, "host platform by default");
    }

    let s390x = "linux/s390x".parse().unwrap();
    let err = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        Some(&s390x),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::Platform { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("no image for platform linux/s390x; available: linux/amd64, linux/arm64/v8"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_pulls_of_one_image_end_with_one_copy() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let state = Arc::new(State::new());
    let client = Arc::new(client());
    let reference = registry.reference("busybox:latest");
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (state, client, reference) = (state.clone(), client.clone(), reference.clone());
            tokio::spawn(async move {
                pull(
                    &client,
                    &state.store,
                    &state.catalog,
                    None,
                    &reference,
                    None,
                    &NoProgress,
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.unwrap().unwrap();
        assert_eq!(result.id, written.config);
    }
    let mut expected = vec![
        written.config.clone(),
        written.manifest.clone(),
        written.layers[0].clone(),
    ];
    expected.sort();
    assert_eq!(state.store.list().unwrap(), expected);
    assert_eq!(state.catalog.list().unwrap().len(), 1);
    assert!(state.tmp_is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_checks_credentials_and_logout_removes_them() {
    let registry = Registry::start(Access::Htpasswd);
    let creds = format!("{USER}:{PASSWORD}");
    let written = push_busybox(&registry, "busybox", Some(&creds));
    let state = State::new();
    let own = state.root.join("../config.json");
    let reference = registry.reference("busybox:latest");

    // Anonymous: refused, with a hint.
    let err = pull(
        &client(),
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "pull {0}/busybox:latest: access denied by {0}: authentication required (401); log in first",
            registry.host
        )
    );

    // A wrong password is refused and nothing is written.
    let err = auth::login(&client(), &own, &registry.host, USER, "wrong")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "login {0}: access denied by {0}: authentication required (401); the credentials were not accepted",
            registry.host
        )
    );
    assert!(!own.exists());

    auth::login(&client(), &own, &registry.host, USER, PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        fs::metadata(&own).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let file: Value = serde_json::from_slice(&fs::read(&own).unwrap()).unwrap();
    assert_eq!(
        file["auths"][registry.host.as_str()]["auth"],
        STANDARD.encode(&creds)
    );

    // With the saved credentials, pull and push work.
    let options = RegistryOptions {
        auth: AuthStore::load(None, &own).unwrap(),
        ..RegistryOptions::default()
    };
    let client = RegistryClient::new(options).unwrap();
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, written.config);
    let copy = registry.reference("copy:v1");
    state.catalog.tag(&copy, &pulled.id).unwrap();
    push(
        &client,
        &state.store,
        &state.catalog,
        &copy,
        &NoPushProgress,
    )
    .await
    .unwrap();

    assert!(auth::logout(&AuthStore::empty(), &own, &registry.host).unwrap());
    assert_eq!(
        fs::metadata(&own).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = AuthStore::load(None, &own).unwrap();
    assert!(store.credentials(&registry.host).is_none());
    assert!(!auth::logout(&AuthStore::empty(), &own, &registry.host).unwrap());
}

// ---- bearer tokens ----------------------------------------------------------

/// A token server for distribution's `auth: token`: checks basic credentials
/// and grants every scope asked for in an RS256 JWT signed (by `openssl`)
/// with a key whose self-signed certificate the registry trusts.
struct TokenServer {
    addr: String,
    cert: PathBuf,
    issued: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    async fn start() -> Self {
        let openssl = tool("openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let der = run(Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert));
        let x5c = STANDARD.encode(der);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = Arc::new(AtomicUsize::new(0));
        let task = {
            let issued = issued.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (key, x5c, issued) = (key.clone(), x5c.clone(), issued.clone());
                    tokio::spawn(async move {
                        let _ = serve_token(conn, &key, &x5c, &issued).await;
                    });
                }
            })
        };
        Self {
            addr,
            cert,
            issued,
            _dir: dir,
            task,
        }
    }
}

async fn serve_token(
    mut conn: tokio::net::TcpStream,
    key: &Path,
    x5c: &str,
    issued: &AtomicUsize,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request).to_string();
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let authorized = text.lines().any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("authorization: basic ")
            && STANDARD
                .decode(line["authorization: basic ".len()..].trim())
                .is_ok_and(|c| c == format!("{USER}:{PASSWORD}").as_bytes())
    });
    let (status, body) = if authorized {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let mut access = Vec::new();
        for (k, v) in url_pairs(query) {
            if k == "scope" {
                // type:name:actions, where the name may hold colons.
                let (kind, rest) = v.split_once(':').unwrap();
                let (name, actions) = rest.rsplit_once(':').unwrap();
                access.push(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
        let claims = json!({
            "iss": "test-issuer", "sub": USER, "aud": "test-registry",
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("t{}", issued.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = sign(key, input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        (
            "200 OK",
            json!({"token": token, "expires_in": 300}).to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            json!({"details": "bad credentials"}).to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn sign(key: &Path, input: &[u8]) -> Vec<u8> {
    let out = crate::output_within(
        Command::new(tool("openssl", "openssl"))
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .stdin(stdin_bytes(input)),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_and_pushes_with_bearer_tokens() {
    let server = TokenServer::start().await;
    let issued = server.issued.clone();
    let registry = Registry::start(Access::Token(server));
    let creds = format!("{USER}:{PASSWORD}");
    let written = push_busybox(&registry, "busybox", Some(&creds));
    let state = State::new();
    let own = state.root.join("../config.json");

    let err = auth::login(&client(), &own, &registry.host, USER, "wrong")
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    auth::login(&client(), &own, &registry.host, USER, PASSWORD)
        .await
        .unwrap();

    let mut options = RegistryOptions::default();
    options
        .auth
        .insert(&registry.host, Credentials::new(USER, PASSWORD));
    let client = RegistryClient::new(options).unwrap();
    let reference = registry.reference("busybox:latest");
    let before = issued.load(Ordering::SeqCst);
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, written.config);
    // One token for the pull scope, reused for the manifest, config and layer.
    assert_eq!(
        issued.load(Ordering::SeqCst) - before,
        1,
        "tokens are cached per scope"
    );

    // Push to another repository: a token with the push scope and the
    // source's pull scope, so the layer is mounted.
    let copy = registry.reference("copy:v1");
    state.catalog.tag(&copy, &pulled.id).unwrap();
    let pushed = push(
        &client,
        &state.store,
        &state.catalog,
        &copy,
        &NoPushProgress,
    )
    .await
    .unwrap();
    assert_eq!(pushed.digest, written.manifest);
    assert_eq!(pushed.mounted, 1);
    let raw = run(Command::new(tool("skopeo", "skopeo")).args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{copy}"),
    ]));
    assert_eq!(Digest::of(&raw), written.manifest);
    assert_eq!(
        client.catalog(&registry.host).await.unwrap(),
        vec!["busybox".to_string(), "copy".to_string()]
    );
}

// ---- broken transfers ------------------------------------------------------

/// A TCP proxy in front of the registry that cuts the first connection once
/// it has carried `cut_after` bytes to the client, and notes whether a later
/// request asked for a `Range`.
struct CuttingProxy {
    host: String,
    cuts: Arc<AtomicUsize>,
    ranged: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttingProxy {
    /// With `hide_range`, `Range` headers are renamed on the way so the
    /// registry sends the whole blob again (200), as some registries do.
    async fn start(upstream: String, cut_after: usize, hide_range: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let cuts = Arc::new(AtomicUsize::new(0));
        let ranged = Arc::new(AtomicBool::new(false));
        let task = {
            let (cuts, ranged) = (cuts.clone(), ranged.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let (upstream, cuts, ranged) = (upstream.clone(), cuts.clone(), ranged.clone());
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (mut cr, mut cw) = client.into_split();
                        let (mut sr, mut sw) = server.into_split();
                        let up = tokio::spawn(async move {
                            let mut buf = vec![0u8; 16 << 10];
                            while let Ok(n) = cr.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                let lower = buf[..n].to_ascii_lowercase();
                                if let Some(at) =
                                    lower.windows(13).position(|w| w == b"range: bytes=")
                                {
                                    ranged.store(true, Ordering::SeqCst);
                                    if hide_range {
                                        buf[at..at + 5].copy_from_slice(b"x-nop");
                                    }
                                }
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        });
                        let mut buf = vec![0u8; 16 << 10];
                        let mut carried = 0;
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            carried += n;
                            if carried > cut_after && cuts.fetch_add(1, Ordering::SeqCst) == 0 {
                                // Half of this read goes through, then the
                                // connection dies mid-body.
                                let _ = cw.write_all(&buf[..n / 2]).await;
                                up.abort();
                                return;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        up.abort();
                    });
                }
            })
        };
        Self {
            host,
            cuts,
            ranged,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_blob_transfer_resumes_with_a_range() {
    resume_after_break(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_blob_transfer_resumes_when_the_registry_ignores_ranges() {
    resume_after_break(true).await;
}

async fn resume_after_break(hide_range: bool) {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let proxy = CuttingProxy::start(registry.host.clone(), 300 << 10, hide_range).await;
    let state = State::new();
    let reference: Reference = format!("{}/busybox:latest", proxy.host).parse().unwrap();
    let progress = Counting::default();
    let pulled = pull(
        &client(),
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, written.config);
    assert!(
        proxy.cuts.load(Ordering::SeqCst) >= 1,
        "the transfer was cut"
    );
    assert!(
        proxy.ranged.load(Ordering::SeqCst),
        "the resume asked for a range"
    );
    let layer = &state.catalog.get(&pulled.id).unwrap().layers[0];
    state.store.read(&layer.blob).unwrap();
    // Progress counted each byte once, across both requests.
    assert_eq!(progress.bytes.load(Ordering::SeqCst), layer.size);
    assert!(state.tmp_is_empty());
}

// ---- a pull killed halfway --------------------------------------------------

/// A TCP proxy in front of the registry that holds the response to a request
/// for one of the `stalled` blobs once `limit` bytes of it went through, until
/// released: a registry stalling mid-transfer, so that a pull is caught
/// halfway for certain rather than by luck of timing.
struct StallingProxy {
    host: String,
    held: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        let _ = self.release.send(true);
        self.task.abort();
    }
}

impl StallingProxy {
    async fn start(upstream: String, stalled: Vec<Digest>, limit: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let held = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let stalled: Arc<Vec<String>> = Arc::new(stalled.iter().map(|d| d.to_string()).collect());
        let task = {
            let held = held.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    // Whether the response in flight is held at `limit`, and
                    // how much of it went through; HTTP/1.1 without pipelining,
                    // so a response belongs to the last request seen.
                    let gated = Arc::new(AtomicBool::new(false));
                    let sent = Arc::new(AtomicUsize::new(0));
                    let up = {
                        let (gated, sent, stalled) = (gated.clone(), sent.clone(), stalled.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 16 << 10];
                            while let Ok(n) = cr.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                let head = String::from_utf8_lossy(&buf[..n]);
                                if let Some(line) = head.lines().find(|l| l.starts_with("GET ")) {
                                    let wanted = stalled.iter().any(|d| line.contains(d.as_str()));
                                    gated.store(wanted, Ordering::SeqCst);
                                    sent.store(0, Ordering::SeqCst);
                                }
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        })
                    };
                    let (held, mut released) = (held.clone(), released.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let mut chunk = &buf[..n];
                            let before = sent.load(Ordering::SeqCst);
                            if gated.load(Ordering::SeqCst)
                                && !*released.borrow()
                                && before + chunk.len() > limit
                            {
                                let pass = limit.saturating_sub(before);
                                if cw.write_all(&chunk[..pass]).await.is_err() {
                                    break;
                                }
                                sent.fetch_add(pass, Ordering::SeqCst);
                                chunk = &chunk[pass..];
                                held.fetch_add(1, Ordering::SeqCst);
                                let _ = released.wait_for(|r| *r).await;
                                held.fetch_sub(1, Ordering::SeqCst);
                            }
                            sent.fetch_add(chunk.len(), Ordering::SeqCst);
                            if cw.write_all(chunk).await.is_err() {
                                break;
                            }
                        }
                        up.abort();
                    });
                }
            })
        };
        Self {
            host,
            held,
            release,
            task,
        }
    }
}

/// gzip through the system's `gzip`: tens of MB are too slow for an
/// unoptimised test build.
fn gzip_fast(bytes: &[u8]) -> Vec<u8> {
    let out = crate::output_within(
        Command::new(tool("gzip", "gzip"))
            .args(["-1", "-n", "-c"])
            .stdin(stdin_bytes(bytes)),
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    out.stdout
}

/// Every file under `blobs/sha256` of `root` hashes to its name.
fn assert_blobs_match_their_names(root: &Path) {
    for entry in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(
            Digest::of(&fs::read(&path).unwrap()).hex(),
            name,
            "blob {name} does not match its name"
        );
    }
}

/// Bytes of the files directly in `dir`.
fn bytes_in(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A pull whose daemon is killed with SIGKILL while the layers stream in
/// (one small layer in and unpacked, three big ones stalled halfway by the
/// registry) leaves only verified blobs, complete snapshots and temp files;
/// no image. The next `stack pull` into the same root starts a daemon that
/// cleans the temp files up, reuses what arrived intact, and the image is
/// listed and inspected like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_killed_halfway_leaves_no_image_and_the_next_pull_completes_it() {
    const SMALL: usize = 1 << 20;
    const BIG: usize = 12 << 20;
    let registry = Registry::start(Access::Open);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("layout"));
    let contents: Vec<(String, Vec<u8>)> = [SMALL, BIG, BIG, BIG]
        .iter()
        .enumerate()
        .map(|(i, len)| (format!("layer{i}/noise"), noise(*len, 11 + i as u64)))
        .collect();
    let tars: Vec<Vec<u8>> = contents
        .iter()
        .map(|(name, bytes)| tar_of(&[(name.as_str(), bytes.as_slice())], &[]))
        .collect();
    let gzs: Vec<Vec<u8>> = tars.iter().map(|t| gzip_fast(t)).collect();
    let mut descriptors = Vec::new();
    for gz in &gzs {
        descriptors.push(json!({"mediaType": oci::MEDIA_OCI_LAYER_GZIP, "digest": layout.blob(gz), "size": gz.len()}));
    }
    let layers: Vec<Digest> = gzs.iter().map(|g| Digest::of(g)).collect();
    let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
    let config = serde_json::to_vec(&json!({
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = layout.blob(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": oci::MEDIA_OCI_MANIFEST,
        "config": {"mediaType": oci::MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    let manifest_digest = layout.blob(&manifest);
    layout.index(
        oci::MEDIA_OCI_MANIFEST,
        &manifest_digest,
        manifest.len() as u64,
        "latest",
    );
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.dir.display()),
        &format!("docker://{}/big:latest", registry.host),
    ]);

    let proxy = StallingProxy::start(registry.host.clone(), layers[1..].to_vec(), BIG / 2).await;
    let root = dir.path().join("state");
    let _daemons = Daemons(vec![root.clone()]);
    let name = format!("{}/big:latest", proxy.host);
    let stack = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
        cmd.arg("--root")
            .arg(&root)
            .args(args)
            .env("STACK_CONFIG", dir.path().join("config"))
            .env("DOCKER_CONFIG", dir.path().join("no-docker"))
            .env("NO_COLOR", "1")
            .env_remove("STACK_HOST");
        cmd
    };
    let mut child = stack(&["pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait until the small layer is in and unpacked and the three big ones are
    // held halfway with their bytes so far on disk, then kill.
    let chains = chain_ids(&diff_ids);
    let small_blob = root.join("blobs/sha256").join(layers[0].hex());
    let small_layer = root.join("layers").join(chains[0].hex());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the pull ended before it was killed: {status}");
        }
        let caught = small_blob.is_file()
            && small_layer.is_dir()
            && proxy.held.load(Ordering::SeqCst) == 3
            && bytes_in(&root.join("tmp")) >= 3 << 20;
        if caught {
            break;
        }
        assert!(Instant::now() < deadline, "the pull never got halfway");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The daemon does the writing: it is what a crash kills.
    let daemon: i32 = fs::read_to_string(root.join("run/stack.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the pull did not end when its daemon was killed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "the pull fails with its daemon");
    while fs::read_to_string(format!("/proc/{daemon}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the daemon did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What is left: verified blobs, no image, only complete layers, and the
    // temp files of the transfers that were cut.
    assert_blobs_match_their_names(&root);
    let records: Vec<_> = fs::read_dir(root.join("images/records")).unwrap().collect();
    assert!(records.is_empty(), "no image record for a half pull");
    let tags = fs::read(root.join("images/tags.json")).unwrap_or_else(|_| b"{}".to_vec());
    assert_eq!(serde_json::from_slice::<Value>(&tags).unwrap(), json!({}));
    let mut temp_dirs = 0;
    for entry in fs::read_dir(root.join("layers")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_str().unwrap().to_string();
        if name.starts_with(".tmp-") {
            temp_dirs += 1;
            continue;
        }
        let index = chains
            .iter()
            .position(|c| c.hex() == name)
            .unwrap_or_else(|| panic!("unknown layer directory {name}"));
        let (file, bytes) = &contents[index];
        assert_eq!(
            &fs::read(entry.path().join("diff").join(file)).unwrap(),
            bytes,
            "layer {index} is complete"
        );
    }
    let leftovers = fs::read_dir(root.join("tmp")).unwrap().count();
    assert!(
        leftovers >= 3,
        "the cut transfers left temp files: {leftovers}"
    );

    // The next pull: the registry answers in full now.
    proxy.release.send(true).unwrap();
    let out = tokio::task::spawn_blocking({
        let mut cmd = stack(&["pull", &name]);
        move || crate::output_within(&mut cmd, Duration::from_secs(300))
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second pull: {stderr}");
    assert!(
        stderr.contains(&format!("{}: Already exists", layers[0].short())),
        "the layer that arrived before the kill is reused: {stderr}"
    );
    assert_eq!(
        fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "temp files cleaned up"
    );
    let names: Vec<String> = fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".tmp-")),
        "{names:?} ({temp_dirs} temp before)"
    );
    assert_blobs_match_their_names(&root);
    for (chain, (file, bytes)) in chains.iter().zip(&contents) {
        assert_eq!(
            &fs::read(
                root.join("layers")
                    .join(chain.hex())
                    .join("diff")
                    .join(file)
            )
            .unwrap(),
            bytes
        );
    }

    let listing = crate::output_within(&mut stack(&["images"]), Duration::from_secs(60));
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    let row: Vec<&str> = listing.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..3],
        [
            format!("{}/big", proxy.host).as_str(),
            "latest",
            config_digest.short()
        ]
    );
    let inspect = crate::output_within(
        &mut stack(&["image", "inspect", &name]),
        Duration::from_secs(60),
    );
    assert!(inspect.status.success());
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspect[0]["Id"], json!(config_digest));
    let content: usize = contents.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(
        inspect[0]["Size"],
        json!(content),
        "uncompressed, as Docker counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_report_existing_blobs() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let state = State::new();
    let client = client();
    let reference = registry.reference("busybox:latest");
    pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    let repository = client.repository(&reference);
    let op = stack::image::registry::Operation::new("push", &reference);
    let outcome = client
        .upload_blob(
            &repository,
            &written.layers[0],
            &state.store,
            None,
            &op,
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(outcome, UploadOutcome::Exists);
    assert!(
        client
            .blob_exists(&repository, &written.config, &op)
            .await
            .unwrap()
    );
    assert!(
        !client
            .blob_exists(&repository, &Digest::of(b"absent"), &op)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_schema2_images_pull_and_push_back_byte_for_byte() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox_as(&registry, "docker", None, Some("v2s2"));
    let reference = registry.reference("docker:latest");
    let raw = inspect(&["--raw"], &reference.to_string());
    let manifest: oci::Manifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest.media_type.as_deref(),
        Some(oci::MEDIA_DOCKER_MANIFEST)
    );

    let state = State::new();
    let client = client();
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.manifest, Digest::of(&raw));
    assert_eq!(pulled.id, manifest.config.digest);
    let record = state.catalog.get(&pulled.id).unwrap();
    assert_eq!(record.layers[0].media_type, oci::MEDIA_DOCKER_LAYER_GZIP);
    assert_eq!(record.layers[0].diff_id, written.diff_ids[0]);

    let copy = registry.reference("docker-copy:v1");
    state.catalog.tag(&copy, &pulled.id).unwrap();
    // The push future can be spawned (it is Send), as the daemon will.
    let pushed = {
        let (client, state, copy) = (Arc::new(client), Arc::new(state), copy.clone());
        tokio::spawn(async move {
            push(
                &client,
                &state.store,
                &state.catalog,
                &copy,
                &NoPushProgress,
            )
            .await
        })
        .await
        .unwrap()
        .unwrap()
    };
    assert_eq!(
        pushed.digest, pulled.manifest,
        "the Docker manifest went up unchanged"
    );
    assert_eq!(inspect(&["--raw"], &copy.to_string()), raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_hub_pulls_go_to_a_mirror_first() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "library/busybox", None);
    let state = State::new();
    let client = RegistryClient::new(RegistryOptions {
        mirrors: vec![format!("http://{}", registry.host)],
        ..RegistryOptions::default()
    })
    .unwrap();
    let reference: Reference = "busybox".parse().unwrap();
    let pulled = pull(
        &client,
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, written.config);
    assert_eq!(
        pulled.repo_digest,
        format!("docker.io/library/busybox@{}", written.manifest)
    );
    assert_eq!(state.catalog.resolve("busybox").unwrap(), written.config);
}

/// A TCP proxy in front of the registry whose first connections each get a
/// canned error response (503, then 429 with `Retry-After`), then passes
/// everything through.
struct BusyProxy {
    host: String,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BusyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BusyProxy {
    async fn start(upstream: String) -> Self {
        const CANNED: [&str; 2] = [
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let refused = Arc::new(AtomicUsize::new(0));
        let task = {
            let refused = refused.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    let n = refused.fetch_add(1, Ordering::SeqCst);
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if let Some(canned) = CANNED.get(n) {
                            let mut buf = [0u8; 4096];
                            let _ = client.read(&mut buf).await;
                            let _ = client.write_all(canned.as_bytes()).await;
                            let _ = client.shutdown().await;
                            return;
                        }
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            })
        };
        Self {
            host,
            refused,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_registries_are_retried_with_backoff() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let proxy = BusyProxy::start(registry.host.clone()).await;
    let state = State::new();
    let reference: Reference = format!("{}/busybox:latest", proxy.host).parse().unwrap();
    let pulled = pull(
        &client(),
        &state.store,
        &state.catalog,
        None,
        &reference,
        None,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(pulled.id, written.config);
    assert!(
        proxy.refused.load(Ordering::SeqCst) > 2,
        "503 and 429 were served first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_follow_link_pages() {
    let registry = Registry::start(Access::Open);
    push_busybox(&registry, "busybox", None);
    let base = format!("docker://{}/busybox:latest", registry.host);
    for target in ["a/one:v1", "b/two:v1", "busybox:v2", "busybox:v3"] {
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &base,
            &format!("docker://{}/{target}", registry.host),
        ]);
    }
    let client = RegistryClient::new(RegistryOptions {
        page_size: 1,
        ..RegistryOptions::default()
    })
    .unwrap();
    assert_eq!(
        client.catalog(&registry.host).await.unwrap(),
        ["a/one", "b/two", "busybox"]
    );
    let mut tags = client
        .list_tags(&registry.reference("busybox"))
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, ["latest", "v2", "v3"]);
}

/// The command line end to end: `stack import` a busybox root file system,
/// `stack login`, `stack push` it to an htpasswd registry, `stack pull` it into
/// another state root, and the pulled image has the same id.
#[test]
fn the_cli_pushes_and_pulls_through_a_registry_with_login() {
    let registry = Registry::start(Access::Htpasswd);
    let dir = tempfile::tempdir().unwrap();
    let _daemons = Daemons(vec![dir.path().join("a"), dir.path().join("b")]);
    let stack = |root: &str, args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
        cmd.arg("--root")
            .arg(dir.path().join(root))
            .args(args)
            .env("STACK_CONFIG", dir.path().join("config"))
            .env("DOCKER_CONFIG", dir.path().join("no-docker"))
            .env("NO_COLOR", "1")
            .env_remove("STACK_HOST")
            .stdin(stdin_of(stdin));
        let out = crate::output_within(&mut cmd, Duration::from_secs(300));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let rootfs = dir.path().join("rootfs/bin");
    fs::create_dir_all(&rootfs).unwrap();
    fs::copy(tool("busybox", "busybox-static"), rootfs.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("sh")).unwrap();
    let name = format!("{}/tools/busybox:cli", registry.host);
    let (ok, id, err) = stack(
        "a",
        &[
            "import",
            "-c",
            "CMD [\"/bin/sh\"]",
            dir.path().join("rootfs").to_str().unwrap(),
            &name,
        ],
        None,
    );
    assert!(ok, "import: {err}");
    let id = id.trim().to_string();

    let (ok, _, err) = stack("a", &["push", &name], None);
    assert!(!ok, "push without login must fail");
    assert!(err.contains("log in"), "{err}");

    let (ok, out, err) = stack(
        "a",
        &["login", "-u", USER, "--password-stdin", &registry.host],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok && out.contains("Login Succeeded"), "login: {out}{err}");
    let config = dir.path().join("config/config.json");
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (ok, out, err) = stack("a", &["push", &name], None);
    assert!(ok, "push: {out}{err}");
    assert!(out.contains("digest: sha256:"), "{out}");

    let (ok, out, err) = stack("b", &["pull", &name], None);
    assert!(ok, "pull: {out}{err}");
    assert!(out.contains("Downloaded newer image"), "{out}");
    let (ok, inspect, err) = stack("b", &["image", "inspect", &name], None);
    assert!(ok, "{err}");
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        inspect[0]["Id"],
        serde_json::json!(id),
        "the pulled image is the pushed one"
    );

    let (ok, out, _) = stack("b", &["search", &format!("{}/tools", registry.host)], None);
    assert!(ok && out.contains("tools/busybox"), "{out}");

    let (ok, out, _) = stack("b", &["logout", &registry.host], None);
    assert!(ok && out.contains("Removing login credentials"), "{out}");
}

/// Standard input for a command: `text` (through a file, so the command
/// sees its end), or nothing.
fn stdin_of(text: Option<&str>) -> Stdio {
    text.map_or_else(Stdio::null, |t| stdin_bytes(t.as_bytes()))
}

/// Standard input that reads `bytes` and ends.
fn stdin_bytes(bytes: &[u8]) -> Stdio {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    Stdio::from(file)
}

/// Stops, when a test ends, the daemons the command line started for its
/// state roots (declare it after the directory that holds them).
struct Daemons(Vec<PathBuf>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for root in &self.0 {
            crate::stop_daemon(root);
        }
    }
}

// ---- credential helpers and Docker's own config ----------------------------

/// Runs the `stack` binary with `--root root`, the environment changes in
/// `env` (a `None` value removes the variable) and `stdin`; returns success,
/// stdout and stderr.
fn stack_cli(
    root: &Path,
    args: &[&str],
    env: &[(&str, Option<&std::ffi::OsStr>)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stack"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("STACK_HOST")
        .stdin(stdin_of(stdin));
    for (key, value) in env {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let out = crate::output_within(&mut cmd, Duration::from_secs(300));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A credential helper in the docker-credential-helpers protocol that keeps
/// each server's credentials as a file under `<dir>/<name>-store/`, and
/// notes every call in `<dir>/<name>.log` (`VERB SERVER`).
fn write_helper(dir: &Path, name: &str) -> PathBuf {
    let script = format!(
        r#"#!/bin/sh
store="{dir}/{name}-store"
log="{dir}/{name}.log"
mkdir -p "$store"
input=$(cat)
file_of() {{ printf '%s' "$1" | tr '/:' '__'; }}
case "$1" in
store)
    url=$(printf '%s' "$input" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
    echo "store $url" >> "$log"
    printf '%s' "$input" > "$store/$(file_of "$url")"
    ;;
get)
    echo "get $input" >> "$log"
    if [ -f "$store/$(file_of "$input")" ]; then
        cat "$store/$(file_of "$input")"
    else
        echo "credentials not found in native keychain"
        exit 1
    fi
    ;;
erase)
    echo "erase $input" >> "$log"
    if [ -f "$store/$(file_of "$input")" ]; then
        rm "$store/$(file_of "$input")"
    else
        echo "credentials not found in native keychain"
        exit 1
    fi
    ;;
*)
    echo "unknown action: $1"
    exit 1
    ;;
esac
"#,
        dir = dir.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn helper_log(dir: &Path, name: &str) -> Vec<String> {
    fs::read_to_string(dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `credHelpers` names the helper of our registry and `credsStore` another
/// one for the rest: login stores through ours (our file keeps no secret),
/// pull gets from it, logout erases from it; the other is never asked.
#[test]
fn the_cli_keeps_credentials_in_a_credential_helper() {
    let registry = Registry::start(Access::Htpasswd);
    push_busybox(&registry, "busybox", Some(&format!("{USER}:{PASSWORD}")));
    let dir = tempfile::tempdir().unwrap();
    let helpers = dir.path().join("helpers");
    fs::create_dir_all(&helpers).unwrap();
    write_helper(&helpers, "teststore");
    write_helper(&helpers, "other");
    let config_dir = dir.path().join("config");
    fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("config.json");
    fs::write(
        &config,
        json!({"credsStore": "other", "credHelpers": {registry.host.as_str(): "teststore"}})
            .to_string(),
    )
    .unwrap();
    let path = std::env::join_paths(
        std::iter::once(helpers.clone())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let no_docker = dir.path().join("no-docker");
    let env = [
        ("PATH", Some(path.as_os_str())),
        ("STACK_CONFIG", Some(config_dir.as_os_str())),
        ("DOCKER_CONFIG", Some(no_docker.as_os_str())),
    ];
    let root = dir.path().join("root");
    let _daemons = Daemons(vec![root.clone(), dir.path().join("again")]);
    let image = format!("{}/busybox:latest", registry.host);

    let (ok, _, err) = stack_cli(&root, &["pull", &image], &env, None);
    assert!(!ok && err.contains("log in first"), "{err}");
    assert_eq!(
        helper_log(&helpers, "teststore"),
        [format!("get {}", registry.host)]
    );

    let (ok, out, err) = stack_cli(
        &root,
        &["login", "-u", USER, "--password-stdin", &registry.host],
        &env,
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}{err}");
    assert_eq!(
        helper_log(&helpers, "teststore").last().unwrap(),
        &format!("store {}", registry.host)
    );
    let saved = fs::read_to_string(&config).unwrap();
    assert!(!saved.contains(PASSWORD), "no secret in our file: {saved}");
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["auths"][registry.host.as_str()], json!({}));
    assert_eq!(
        saved["credHelpers"][registry.host.as_str()],
        json!("teststore")
    );
    assert_eq!(
        fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (ok, out, err) = stack_cli(&root, &["pull", &image], &env, None);
    assert!(ok, "pull with the helper's credentials: {out}{err}");
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(
        helper_log(&helpers, "teststore").last().unwrap(),
        &format!("get {}", registry.host)
    );

    let (ok, out, err) = stack_cli(&root, &["logout", &registry.host], &env, None);
    assert!(
        ok && out.contains("Removing login credentials"),
        "{out}{err}"
    );
    assert_eq!(
        helper_log(&helpers, "teststore").last().unwrap(),
        &format!("erase {}", registry.host)
    );
    assert_eq!(
        fs::read_dir(helpers.join("teststore-store"))
            .unwrap()
            .count(),
        0
    );
    let saved: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(saved["auths"], json!({}));
    let (ok, out, _) = stack_cli(&root, &["logout", &registry.host], &env, None);
    assert!(ok && out.contains("Not logged in"), "{out}");

    let (ok, _, err) = stack_cli(&dir.path().join("again"), &["pull", &image], &env, None);
    assert!(!ok && err.contains("log in first"), "{err}");
    assert!(
        helper_log(&helpers, "other").is_empty(),
        "credsStore is only for registries without their own helper"
    );
}

/// With no `DOCKER_CONFIG`, Docker's own `~/.docker/config.json` is read:
/// its `auths` entry logs the pull in.
#[test]
fn the_cli_uses_credentials_from_docker_s_own_config() {
    let registry = Registry::start(Access::Htpasswd);
    push_busybox(&registry, "busybox", Some(&format!("{USER}:{PASSWORD}")));
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    fs::write(
        home.join(".docker/config.json"),
        json!({"auths": {registry.host.as_str(): {"auth": STANDARD.encode(format!("{USER}:{PASSWORD}"))}}})
            .to_string(),
    )
    .unwrap();
    let empty = dir.path().join("stack-config");
    let _daemons = Daemons(vec![dir.path().join("root"), dir.path().join("root2")]);
    let image = format!("{}/busybox:latest", registry.host);
    let env = [
        ("HOME", Some(home.as_os_str())),
        ("DOCKER_CONFIG", None),
        ("STACK_CONFIG", Some(empty.as_os_str())),
    ];
    let (ok, out, err) = stack_cli(&dir.path().join("root"), &["pull", &image], &env, None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("Downloaded newer image"), "{out}");

    // Without it, the same pull is refused.
    let nobody = dir.path().join("nobody");
    let env = [
        ("HOME", Some(nobody.as_os_str())),
        ("DOCKER_CONFIG", None),
        ("STACK_CONFIG", Some(empty.as_os_str())),
    ];
    let (ok, _, err) = stack_cli(&dir.path().join("root2"), &["pull", &image], &env, None);
    assert!(!ok && err.contains("log in first"), "{err}");
}

// ---- search ------------------------------------------------------------------

/// A stand-in for Docker Hub's index on a local port: answers
/// `GET /v1/search?q=TERM&n=N` with a fixed set of results in the Hub's JSON
/// format (the first N), and notes each request line.
struct Index {
    url: String,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Index {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_string();
                seen.lock().unwrap().push(line.clone());
                let target = line.split(' ').nth(1).unwrap_or_default();
                let (status, body) = match target.split_once('?') {
                    Some(("/v1/search", query)) => {
                        let n: usize = url_pairs(query)
                            .into_iter()
                            .find(|(k, _)| k == "n")
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(25);
                        let results: Vec<Value> = hub_results().into_iter().take(n).collect();
                        let body = json!({"num_pages": 1, "num_results": results.len(),
                            "page_size": n, "query": "busy", "results": results});
                        ("200 OK", body.to_string())
                    }
                    _ => ("404 Not Found", "{}".to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, requests }
    }

    fn last_request(&self) -> String {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

fn hub_results() -> Vec<Value> {
    vec![
        json!({"name": "busybox", "description": "Busybox base image.", "star_count": 3400,
            "is_official": true, "is_automated": false}),
        json!({"name": "progrium/busybox",
            "description": "A description that goes on and on, well past forty-five columns",
            "star_count": 72, "is_official": false, "is_automated": true}),
        json!({"name": "radial/busyboxplus",
            "description": "Full-chain, Internet enabled,\nbusybox made from scratch.",
            "star_count": 55, "is_official": false, "is_automated": true}),
        json!({"name": "yauritux/busybox-curl", "description": null, "star_count": 3,
            "is_official": false, "is_automated": false}),
    ]
}

/// The cells of each row of a Docker-style table (columns three spaces apart).
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|line| {
            line.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// `stack search` asks Docker Hub's search API (here a local server in its
/// format, named by `STACK_INDEX_SERVER` or `--index-server`) and prints
/// Docker's columns, with `--limit`, `--filter` and `--no-trunc`.
#[test]
fn search_asks_the_docker_hub_index_and_prints_docker_s_columns() {
    let index = Index::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let env = [("STACK_INDEX_SERVER", Some(std::ffi::OsStr::new(&index.url)))];
    let search = |args: &[&str]| {
        let mut all = vec!["search"];
        all.extend(args);
        let (ok, out, err) = stack_cli(&root, &all, &env, None);
        assert!(ok, "stack {all:?}: {err}");
        table_rows(&out)
    };

    let rows = search(&["busy"]);
    assert_eq!(index.last_request(), "GET /v1/search?q=busy&n=25 HTTP/1.1");
    assert_eq!(rows[0], ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]);
    assert_eq!(rows[1], ["busybox", "Busybox base image.", "3400", "[OK]"]);
    assert_eq!(
        rows[2],
        [
            "progrium/busybox",
            "A description that goes on and on, well past…",
            "72"
        ]
    );
    assert_eq!(
        rows[3],
        [
            "radial/busyboxplus",
            "Full-chain, Internet enabled, busybox made f…",
            "55"
        ]
    );
    assert_eq!(rows[4], ["yauritux/busybox-curl", "3"]);
    assert_eq!(rows.len(), 5);

    let rows = search(&["busy", "--limit", "2"]);
    assert_eq!(index.last_request(), "GET /v1/search?q=busy&n=2 HTTP/1.1");
    assert_eq!(rows.len(), 3);

    let names = |rows: Vec<Vec<String>>| -> Vec<String> {
        rows.into_iter().skip(1).map(|r| r[0].clone()).collect()
    };
    assert_eq!(
        names(search(&["busy", "--filter", "stars=60"])),
        ["busybox", "progrium/busybox"]
    );
    assert_eq!(
        names(search(&["busy", "-f", "is-official=true"])),
        ["busybox"]
    );
    assert_eq!(
        names(search(&[
            "busy",
            "-f",
            "is-official=false",
            "-f",
            "stars=10"
        ])),
        ["progrium/busybox", "radial/busyboxplus"]
    );

    let rows = search(&["busy", "--no-trunc"]);
    assert_eq!(
        rows[2][1],
        "A description that goes on and on, well past forty-five columns"
    );

    // The flag instead of the variable, and Docker Hub named in the term.
    let (ok, out, err) = stack_cli(
        &root,
        &["search", "--index-server", &index.url, "docker.io/busy"],
        &[("STACK_INDEX_SERVER", None)],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(index.last_request(), "GET /v1/search?q=busy&n=25 HTTP/1.1");
    assert_eq!(table_rows(&out).len(), 5);

    for (args, message) in [
        (
            &["search", "busy", "--limit", "0"][..],
            "limit 0 is outside the range of [1, 100]",
        ),
        (
            &["search", "busy", "--limit", "101"][..],
            "limit 101 is outside the range of [1, 100]",
        ),
        (
            &["search", "busy", "-f", "stars=lots"][..],
            "invalid filter 'stars=lots'",
        ),
        (
            &["search", "busy", "-f", "color=red"][..],
            "invalid filter 'color=red'",
        ),
    ] {
        let (ok, _, err) = stack_cli(&root, args, &env, None);
        assert!(!ok && err.contains(message), "{args:?}: {err}");
    }
}

/// Another registry's search lists its catalog (`/v2/_catalog`) entries that
/// contain the term, never asking Docker Hub's index.
#[test]
fn search_on_another_registry_lists_its_catalog() {
    let registry = Registry::start(Access::Open);
    push_busybox(&registry, "tools/busybox", None);
    push_busybox(&registry, "apps/web", None);
    let index = Index::start();
    let dir = tempfile::tempdir().unwrap();
    let env = [("STACK_INDEX_SERVER", Some(std::ffi::OsStr::new(&index.url)))];
    let (ok, out, err) = stack_cli(
        &dir.path().join("root"),
        &["search", &format!("{}/busy", registry.host)],
        &env,
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        table_rows(&out),
        [
            vec!["NAME".to_string()],
            vec![format!("{}/tools/busybox", registry.host)]
        ]
    );
    assert!(index.requests.lock().unwrap().is_empty());
}

// ---- the daemon's API ----------------------------------------------------------

/// A state root whose daemon the command line started, and a client of it.
fn api_client(root: &Path) -> stack::api::client::Client {
    let (ok, _, err) = stack_cli(root, &["images", "-q"], &[], None);
    assert!(ok, "{err}");
    stack::api::client::Client::new(
        stack::api::Endpoint::Unix(stack::daemon::default_socket(root)),
        None,
    )
    .unwrap()
}

/// Reads a JSON-message stream to its end.
fn messages(reader: impl Read) -> Vec<stack::api::images::JsonMessage> {
    std::io::BufRead::lines(std::io::BufReader::new(reader))
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// `POST /images/create?fromImage=…` answers with Docker's JSON progress
/// messages while the pull runs: the heading, each layer's download with
/// its bytes so far, its end, the digest and the status; a second pull finds
/// the layer there. An unknown image is a 404 before any stream.
#[test]
fn a_pull_through_the_api_streams_docker_s_progress_messages() {
    let registry = Registry::start(Access::Open);
    let written = push_busybox(&registry, "busybox", None);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _daemons = Daemons(vec![root.clone()]);
    let api = api_client(&root);
    let pull = || {
        api.post("/images/create")
            .query("fromImage", format!("{}/busybox", registry.host))
            .query("tag", "latest")
            .stream()
            .unwrap()
    };

    let lines = messages(pull());
    let status = |m: &stack::api::images::JsonMessage| m.status.clone().unwrap_or_default();
    assert_eq!(status(&lines[0]), "Pulling from busybox", "{lines:?}");
    assert_eq!(lines[0].id.as_deref(), Some("latest"));
    let layer = written.layers[0].short().to_string();
    let size = fs::metadata(registry.blob_data(&written.layers[0]))
        .unwrap()
        .len();
    let progress: Vec<_> = lines
        .iter()
        .filter(|m| m.id.as_deref() == Some(layer.as_str()) && m.progress_detail.is_some())
        .map(|m| {
            assert_eq!(status(m), "Downloading");
            let detail = m.progress_detail.unwrap();
            assert_eq!(detail.total, Some(size));
            detail.current.unwrap()
        })
        .collect();
    assert!(progress.len() >= 2, "{lines:?}");
    assert_eq!(progress.first(), Some(&0));
    assert_eq!(progress.last(), Some(&size));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let layer_statuses: Vec<String> = lines
        .iter()
        .filter(|m| m.id.as_deref() == Some(layer.as_str()) && m.progress_detail.is_none())
        .map(status)
        .collect();
    assert_eq!(layer_statuses, ["Download complete", "Pull complete"]);
    let texts: Vec<String> = lines
        .iter()
        .filter(|m| m.id.is_none())
        .map(status)
        .collect();
    assert!(
        texts.contains(&format!("Digest: {}", written.manifest)),
        "{texts:?}"
    );
    assert!(
        texts.contains(&format!(
            "Status: Downloaded newer image for {}/busybox:latest",
            registry.host
        )),
        "{texts:?}"
    );
    let aux = lines.iter().find_map(|m| m.aux.clone()).unwrap();
    assert_eq!(aux["Id"], json!(written.config));
    assert!(lines.iter().all(|m| m.error.is_none()));

    let again = messages(pull());
    let statuses: Vec<String> = again.iter().map(status).collect();
    assert!(
        statuses.contains(&"Already exists".to_string()),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&format!(
            "Status: Image is up to date for {}/busybox:latest",
            registry.host
        )),
        "{statuses:?}"
    );

    let err = api
        .post("/images/create")
        .query("fromImage", format!("{}/nothing", registry.host))
        .query("tag", "latest")
        .stream()
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

/// Credentials travel with the request in `X-Registry-Auth`: the daemon
/// pulls from a registry that wants them only when the header has them.
#[test]
fn the_api_pulls_with_the_credentials_of_the_request() {
    use stack::api::images::{REGISTRY_AUTH_HEADER, RegistryAuth};
    let registry = Registry::start(Access::Htpasswd);
    let written = push_busybox(&registry, "busybox", Some(&format!("{USER}:{PASSWORD}")));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _daemons = Daemons(vec![root.clone()]);
    let api = api_client(&root);
    let pull = |auth: Option<RegistryAuth>| {
        let mut call = api
            .post("/images/create")
            .query("fromImage", format!("{}/busybox", registry.host))
            .query("tag", "latest");
        if let Some(auth) = auth {
            call = call.header(REGISTRY_AUTH_HEADER, auth.encode());
        }
        call.stream()
    };
    let err = pull(None).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("log in first"), "{err}");
    let err = pull(Some(RegistryAuth::new(USER, "wrong", &registry.host))).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("not accepted"), "{err}");
    let lines = messages(pull(Some(RegistryAuth::new(USER, PASSWORD, &registry.host))).unwrap());
    let aux = lines.iter().find_map(|m| m.aux.clone()).unwrap();
    assert_eq!(aux["Id"], json!(written.config));
}

/// A client that goes away in the middle of a pull (its layer held halfway
/// by the registry) cancels it, as with Docker: the daemon drops the
/// transfer and its temp file, records no image, and serves the next pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_whose_client_goes_away_is_cancelled() {
    const BIG: usize = 4 << 20;
    let registry = Registry::start(Access::Open);
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("layout"));
    let noise = noise(BIG, 5);
    let written = layout.image(&[tar_of(&[("noise", &noise)], &[])], "linux", "amd64");
    layout.index(
        oci::MEDIA_OCI_MANIFEST,
        &written.manifest,
        written.manifest_size,
        "latest",
    );
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", layout.dir.display()),
        &format!("docker://{}/big:latest", registry.host),
    ]);
    let proxy = StallingProxy::start(registry.host.clone(), written.layers.clone(), BIG / 2).await;
    let root = dir.path().join("root");
    let _daemons = Daemons(vec![root.clone()]);
    let name = format!("{}/big", proxy.host);
    let tmp = root.join("tmp");

    let held = proxy.held.clone();
    tokio::task::spawn_blocking({
        let (root, name, tmp) = (root.clone(), name.clone(), tmp.clone());
        move || {
            let api = api_client(&root);
            let stream = api
                .post("/images/create")
                .query("fromImage", name)
                .query("tag", "latest")
                .stream()
                .unwrap();
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stream));
            let first: stack::api::images::JsonMessage =
                serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            assert_eq!(first.status.as_deref(), Some("Pulling from big"));
            let deadline = Instant::now() + Duration::from_secs(60);
            // Halfway: the proxy holds the layer at BIG/2 and the daemon's
            // temp file has bytes. Not a byte count: the store writes through
            // a 1 MiB buffer (less than BIG/2, so the file does get bytes),
            // and what the file shows lags what arrived by an amount that
            // depends on the read sizes; waiting for exactly BIG/4 (1 MiB)
            // hung when the first flush came out a few bytes short of it.
            while !(held.load(Ordering::SeqCst) == 1 && bytes_in(&tmp) > 0) {
                assert!(
                    Instant::now() < deadline,
                    "the pull never got halfway: held {}, {} bytes in {}",
                    held.load(Ordering::SeqCst),
                    bytes_in(&tmp),
                    tmp.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // The client goes: its connection closes.
            drop(lines);
            drop(api);
        }
    })
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::read_dir(&tmp).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the cancelled transfer kept its temp file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fs::read_dir(root.join("images/records")).unwrap().count(),
        0
    );
    assert!(
        !root
            .join("blobs/sha256")
            .join(written.layers[0].hex())
            .exists()
    );

    proxy.release.send(true).unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        stack_cli(&root, &["pull", &format!("{name}:latest")], &[], None)
    })
    .await
    .unwrap();
    assert!(ok && out.contains("Downloaded newer image"), "{out}{err}");
}
