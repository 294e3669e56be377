//! Unpacking a gzip layer: `stack`'s unpacker against `tar -xzf` on the same
//! file, alternately, each into a fresh directory. The layer is generated: a
//! distro-like tree of ~100 MB (tens of thousands of small files in nested
//! directories, symlinks, hard links, a few large files).
//!
//! Run with `cargo bench --bench layer` (as root both keep owners, so they
//! do the same work); prints the medians and the ratio.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stack::image::layer::{self, UnpackOptions};

/// A small xorshift generator: the same layer on every run.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Bytes that compress roughly like binaries and text do (about 2-3x):
    /// runs of words from a small vocabulary mixed with random bytes.
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        const WORDS: [&[u8]; 8] = [
            b"the ",
            b"ELF\x02\x01\x01",
            b"libc.so.6 ",
            b"\x00\x00\x00\x00",
            b"GLIBC_2.34 ",
            b"return ",
            b"\x48\x89\xe5",
            b"error: ",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = self.next();
            if r.is_multiple_of(3) {
                out.extend_from_slice(&r.to_le_bytes());
            } else {
                out.extend_from_slice(WORDS[usize::try_from(r % 8).unwrap_or(0)]);
            }
        }
        out.truncate(len);
        out
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes the layer as gzip; returns its path and uncompressed tar size.
fn build_layer(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("layer.tar.gz");
    let file = std::fs::File::create(&path).expect("create layer file");
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    let mut uncompressed = 0u64;

    for top in [
        "usr/bin",
        "usr/lib",
        "usr/share/doc",
        "usr/share/locale",
        "etc",
        "var/lib",
    ] {
        for sub in 0..40 {
            let dir = format!("{top}/d{sub}");
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, &dir, std::io::empty())
                .expect("dir");
            for f in 0..90 {
                // Mostly small files, a long tail up to 64 KiB.
                let size = match noise.below(10) {
                    0..=5 => 200 + noise.below(2_000),
                    6..=8 => 2_000 + noise.below(10_000),
                    _ => 10_000 + noise.below(54_000),
                };
                let data = noise.bytes(usize::try_from(size).expect("small"));
                uncompressed += size;
                let name = format!("{dir}/file{f}");
                let mut h = header(tar::EntryType::Regular, 0o644, size);
                tar.append_data(&mut h, &name, &data[..]).expect("file");
                if f % 15 == 0 {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, format!("{name}.link"), format!("file{f}"))
                        .expect("symlink");
                }
                if f % 45 == 1 {
                    let mut h = header(tar::EntryType::Link, 0o644, 0);
                    tar.append_link(&mut h, format!("{name}.hard"), &name)
                        .expect("hard link");
                }
            }
        }
    }
    for big in 0..4 {
        let size = 8u64 << 20;
        let data = noise.bytes(usize::try_from(size).expect("small"));
        uncompressed += size;
        let mut h = header(tar::EntryType::Regular, 0o755, size);
        tar.append_data(&mut h, format!("opt/big{big}.so"), &data[..])
            .expect("big file");
    }
    let gz = tar.into_inner().expect("finish tar");
    gz.finish()
        .expect("finish gzip")
        .flush()
        .expect("flush layer");
    (path, uncompressed)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let work = tempfile::tempdir().expect("work dir");
    let (layer_path, content) = build_layer(work.path());
    let compressed = std::fs::metadata(&layer_path).expect("layer").len();
    let probe = tempfile::tempdir_in(work.path()).expect("probe dir");
    let stats = layer::unpack(
        std::fs::File::open(&layer_path).expect("open layer"),
        probe.path(),
        &UnpackOptions::default(),
    )
    .expect("unpack");
    drop(probe);
    let size = stats.size as f64 / 1e6;
    println!(
        "layer: {} entries, {:.1} MB of file content, {size:.1} MB tar, {:.1} MB gzip",
        stats.entries,
        content as f64 / 1e6,
        compressed as f64 / 1e6,
    );

    let rounds = 9;
    let mut ours = Vec::new();
    let mut tars = Vec::new();
    for round in 0..rounds {
        let dest = tempfile::tempdir_in(work.path()).expect("dest");
        let start = Instant::now();
        let file = std::fs::File::open(&layer_path).expect("open layer");
        layer::unpack(file, dest.path(), &UnpackOptions::default()).expect("unpack");
        ours.push(start.elapsed());
        drop(dest);

        let dest = tempfile::tempdir_in(work.path()).expect("dest");
        let start = Instant::now();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&layer_path)
            .arg("-C")
            .arg(dest.path())
            .status()
            .expect("run tar");
        tars.push(start.elapsed());
        assert!(status.success(), "tar -xzf failed");
        drop(dest);
        eprintln!(
            "round {round}: stack {:.0} ms, tar {:.0} ms",
            ours[round].as_secs_f64() * 1e3,
            tars[round].as_secs_f64() * 1e3
        );
    }
    let (ours, tar) = (median(&mut ours), median(&mut tars));
    println!(
        "stack unpack: median {:.0} ms, {:.0} MB/s of tar",
        ours.as_secs_f64() * 1e3,
        size / ours.as_secs_f64()
    );
    println!(
        "tar -xzf:     median {:.0} ms, {:.0} MB/s of tar",
        tar.as_secs_f64() * 1e3,
        size / tar.as_secs_f64()
    );
    println!(
        "ratio: stack runs at {:.2}x the speed of tar -xzf",
        tar.as_secs_f64() / ours.as_secs_f64()
    );
}
