//! Pulling an 80 MB image of four gzip layers from a local distribution
//! registry: `stack pull` (download, verify and unpack, into a fresh state
//! root) against `docker pull` of the same image from the same registry.
//!
//! Needs Debian's `docker-registry`. When `docker` answers with a live daemon,
//! the two pulls alternate, each round with the image removed first
//! (`docker rmi`, a fresh `--root`), and the medians and their throughput
//! ratio are printed; without a daemon only `stack pull` is measured. Both are
//! timed as commands, process start included. Docker treats 127.0.0.0/8 as an
//! insecure registry by default, so it pulls over plain HTTP as we do. Run with
//! `cargo bench --bench pull`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stack::image::catalog::{ImageRecord, LayerRecord};
use stack::image::digest::Digest;
use stack::image::images::Images;
use stack::image::oci::{ImageConfig, Platform, RootFs};
use stack::image::push::{NoPushProgress, push};
use stack::image::reference::Reference;
use stack::image::registry::{RegistryClient, RegistryOptions};

/// Bytes that compress about as well as binaries do (roughly 2:1).
fn content(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes()[..4]);
        out.extend_from_slice(b"\0\0\0\0");
    }
    out.truncate(len);
    out
}

fn layer(index: u64, files: usize, size: usize) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for f in 0..files {
        let data = content(size, index * 1000 + f as u64 + 1);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, format!("layer{index}/file{f}"), &data[..])
            .expect("append");
    }
    let tar = b.into_inner().expect("tar");
    let diff_id = Digest::of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

/// The docker daemon's version, when `docker` is installed and its daemon
/// answers.
fn docker_version() -> Option<String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `cmd` after flushing dirty pages (so one run's writeback does not
/// slow the next), and returns how long it took.
fn timed(cmd: &mut Command) -> Duration {
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let out = cmd.output().expect("the command runs");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(runs: &mut [Duration]) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let work = std::env::temp_dir().join(format!("stack-bench-pull-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            work.join("registry").display()
        ),
    )
    .expect("registry config");
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt-get install docker-registry)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&host).is_err() {
        assert!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The image: four layers, 80 MB uncompressed in all.
    let source = Images::open(&work.join("source")).expect("store");
    let mut layers = Vec::new();
    let mut total = 0u64;
    for (i, (files, size)) in [
        (400usize, 50_000usize),
        (200, 100_000),
        (20, 1_000_000),
        (2, 10_000_000),
    ]
    .into_iter()
    .enumerate()
    {
        let (gz, diff_id) = layer(i as u64, files, size);
        total += (files * size) as u64;
        let blob = source.blobs.put_bytes(&gz).expect("blob");
        layers.push(LayerRecord {
            blob,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: gz.len() as u64,
            diff_id,
        });
    }
    let platform = Platform::host();
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        ..ImageConfig::default()
    };
    let id = source
        .blobs
        .put_bytes(&serde_json::to_vec(&config).expect("config"))
        .expect("config blob");
    let compressed: u64 = layers.iter().map(|l| l.size).sum();
    source
        .catalog
        .put(&ImageRecord {
            id: id.clone(),
            manifest: None,
            size: compressed,
            layers,
            created: None,
            repo_digests: BTreeSet::new(),
        })
        .expect("record");
    let reference: Reference = format!("{host}/bench:latest").parse().expect("reference");
    source.catalog.tag(&reference, &id).expect("tag");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = RegistryClient::new(RegistryOptions::default()).expect("client");
    runtime
        .block_on(push(
            &client,
            &source.blobs,
            &source.catalog,
            &reference,
            &NoPushProgress,
        ))
        .expect("push");
    let name = reference.to_string();
    println!(
        "image {name}: {:.1} MB in 4 gzip layers ({:.1} MB compressed)",
        total as f64 / 1e6,
        compressed as f64 / 1e6
    );

    let docker = docker_version();
    match &docker {
        Some(version) => println!("docker daemon {version}: alternating with docker pull"),
        None => println!("no docker daemon: stack pull alone"),
    }
    let mut stack_runs = Vec::new();
    let mut docker_runs = Vec::new();
    for round in 0..5 {
        let root = work.join(format!("pull{round}"));
        let stack_pull = || {
            timed(
                Command::new(env!("CARGO_BIN_EXE_stack"))
                    .arg("--root")
                    .arg(&root)
                    .args(["pull", "-q", &name])
                    .env("STACK_CONFIG", work.join("config"))
                    .env("DOCKER_CONFIG", work.join("no-docker")),
            )
        };
        let docker_pull = || {
            // Gone before each pull, so every layer is downloaded and unpacked again.
            let _ = Command::new("docker")
                .args(["rmi", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            timed(Command::new("docker").args(["pull", "-q", &name]))
        };
        // Alternate which goes first, so neither always meets a warmer cache.
        if docker.is_some() && round % 2 == 1 {
            docker_runs.push(docker_pull());
        }
        stack_runs.push(stack_pull());
        if docker.is_some() && round % 2 == 0 {
            docker_runs.push(docker_pull());
        }
        let _ = std::fs::remove_dir_all(&root);
    }
    let mb = total as f64 / 1e6;
    let stack_median = median(&mut stack_runs);
    println!(
        "stack pull (download + verify + unpack): median {:.0} ms, {:.0} MB/s of image",
        stack_median.as_secs_f64() * 1e3,
        mb / stack_median.as_secs_f64()
    );
    if docker.is_some() {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let docker_median = median(&mut docker_runs);
        println!(
            "docker pull: median {:.0} ms, {:.0} MB/s of image",
            docker_median.as_secs_f64() * 1e3,
            mb / docker_median.as_secs_f64()
        );
        println!(
            "throughput stack/docker: {:.2}",
            docker_median.as_secs_f64() / stack_median.as_secs_f64()
        );
    }
    let _ = registry.kill();
    let _ = registry.wait();
    let _ = std::fs::remove_dir_all(&work);
}
