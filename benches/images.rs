//! `stack images` with 200 images in the store, timed end to end (process
//! start, catalog read, table output). Run with `cargo bench --bench images`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use stack::image::catalog::{ImageRecord, LayerRecord};
use stack::image::digest::Digest;
use stack::image::images::Images;

const IMAGES: usize = 200;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stack-bench-images-{}", std::process::id()));
    let images = Images::open(&dir).expect("a temp state root");
    for i in 0..IMAGES {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:{:02}Z","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Cmd":["sh"],"Env":["N={i}"]}}}}"#,
            i % 60
        );
        let id = images.blobs.put_bytes(config.as_bytes()).expect("blob");
        let record = ImageRecord {
            id: id.clone(),
            manifest: None,
            layers: vec![LayerRecord {
                blob: Digest::of(format!("layer{i}").as_bytes()),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: 1_000_000 + i as u64,
                diff_id: Digest::of(format!("diff{i}").as_bytes()),
            }],
            created: Some("2026-01-01T00:00:00Z".into()),
            size: 1_000_000,
            repo_digests: BTreeSet::new(),
        };
        images.catalog.put(&record).expect("record");
        images
            .catalog
            .tag(
                &format!("registry.example/team/app{i}:v{i}")
                    .parse()
                    .expect("name"),
                &id,
            )
            .expect("tag");
    }
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_stack"))
            .arg("--root")
            .arg(&dir)
            .arg("images")
            .output()
            .expect("stack runs");
        assert!(out.status.success());
        assert_eq!(
            out.stdout.iter().filter(|b| **b == b'\n').count(),
            IMAGES + 1
        );
    };
    for _ in 0..3 {
        run();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) || times.len() < 20 {
        let t = Instant::now();
        run();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "stack images, {IMAGES} images: median {:.2} ms, fastest {:.2} ms ({} runs)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
