//! Container logs: 200 MB of ~100-byte lines through the json-file writer with
//! the default options (10 MiB × 5 files), fed in 64 KiB reads as the shim
//! gets them from a pipe; then `tail 100` and a full read on the log set that
//! leaves. Run with `cargo bench --bench logs` (`-- ingest` or `-- tail` for
//! one case); prints medians.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use stack::runtime::logs::{LogOptions, LogReader, LogWriter, ReadOptions, Stream};

const TOTAL: usize = 200_000_000;
const READ: usize = 64 * 1024;
const ROUNDS: usize = 5;
const ID: &str = "bench";

/// A megabyte of log text: 100-byte lines, a quarter of them JSON (quotes to
/// escape), some with a tab, the rest plain.
fn log_text() -> Vec<u8> {
    let mut text = Vec::with_capacity((1 << 20) + 100);
    let mut n = 0u64;
    while text.len() < 1 << 20 {
        let line = match n % 4 {
            0 => format!(
                r#"{{"level":"info","ts":{}.{:03},"msg":"request","path":"/api/v1/items/{}","status":200}}"#,
                1_795_860_211 + n / 1000,
                n % 1000,
                n % 9973
            ),
            1 => format!(
                "2026-11-28 10:03:31.{:03} WARN  [worker-{}]\tslow query took {}ms on table orders",
                n % 1000,
                n % 8,
                n % 977
            ),
            _ => format!(
                "2026-11-28 10:03:31.{:03} INFO  [worker-{}] GET /api/v1/items/{} 200 {}ms user=u{}",
                n % 1000,
                n % 8,
                n % 9973,
                n % 97,
                n % 100_003
            ),
        };
        let mut line = line.into_bytes();
        line.resize(99, b' ');
        line.push(b'\n');
        text.extend_from_slice(&line);
        n += 1;
    }
    text
}

fn ingest(dir: &Path, text: &[u8]) -> Duration {
    let mut writer = LogWriter::open(dir, ID, LogOptions::default()).expect("a temp log dir");
    let start = Instant::now();
    let mut fed = 0;
    let mut at = 0;
    while fed < TOTAL {
        let end = (at + READ).min(text.len());
        writer
            .write(Stream::Stdout, &text[at..end], SystemTime::now())
            .expect("log written");
        fed += end - at;
        at = if end == text.len() { 0 } else { end };
    }
    writer.flush().expect("log flushed");
    start.elapsed()
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
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let text = log_text();
    let dir = tempfile::tempdir().expect("a temp dir");

    let mut times = Vec::new();
    let rounds = if "ingest".contains(&filter) {
        ROUNDS
    } else {
        1
    };
    for _ in 0..rounds {
        let _ = std::fs::remove_dir_all(dir.path().join("logs"));
        times.push(ingest(&dir.path().join("logs"), &text));
    }
    let on_disk: u64 = std::fs::read_dir(dir.path().join("logs"))
        .expect("log dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    if "ingest".contains(&filter) {
        let mb = TOTAL as f64 / 1e6;
        let fastest = times.iter().min().copied().unwrap_or_default();
        let median = median(&mut times);
        println!(
            "ingest {mb:.0} MB of 100-byte lines: median {:.0} MB/s ({:.2} s), fastest {:.0} MB/s ({} rounds; {:.1} MB kept on disk)",
            mb / median.as_secs_f64(),
            median.as_secs_f64(),
            mb / fastest.as_secs_f64(),
            ROUNDS,
            on_disk as f64 / 1e6,
        );
    }

    if "tail".contains(&filter) {
        let logs = dir.path().join("logs");
        let options = ReadOptions {
            tail: Some(100),
            ..ReadOptions::default()
        };
        let tail = || {
            let entries = LogReader::open(&logs, ID, options.clone())
                .expect("reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("entries");
            assert_eq!(entries.len(), 100);
            black_box(entries);
        };
        for _ in 0..10 {
            tail();
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) || times.len() < 50 {
            let t = Instant::now();
            tail();
            times.push(t.elapsed());
        }
        let fastest = times.iter().min().copied().unwrap_or_default();
        let count = times.len();
        println!(
            "tail 100 of a full log set ({:.1} MB in 5 files): median {:.0} µs, fastest {:.0} µs ({count} runs)",
            on_disk as f64 / 1e6,
            median(&mut times).as_secs_f64() * 1e6,
            fastest.as_secs_f64() * 1e6,
        );

        let t = Instant::now();
        let mut entries = 0usize;
        for entry in LogReader::open(&logs, ID, ReadOptions::default()).expect("reader") {
            black_box(entry.expect("entry"));
            entries += 1;
        }
        let elapsed = t.elapsed();
        println!(
            "read all {entries} entries ({:.1} MB of JSON): {:.0} ms, {:.0} MB/s",
            on_disk as f64 / 1e6,
            elapsed.as_secs_f64() * 1e3,
            on_disk as f64 / 1e6 / elapsed.as_secs_f64(),
        );
    }
}
