//! Container logs: the json-file bytes the writer produces, line splitting,
//! rotation, and the reader's tail, time filters and follow.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stack::runtime::logs::{
    Entry, LogOptions, LogReader, LogWriter, MAX_LINE, ReadOptions, Stop, Stream, log_path,
    parse_time_filter,
};

const ID: &str = "c0ffee";

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// 2026-11-28T10:03:31Z.
const BASE: u64 = 1_795_860_211;

fn read(dir: &Path, options: ReadOptions) -> Vec<Entry> {
    LogReader::open(dir, ID, options)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn read_all(dir: &Path) -> Vec<Entry> {
    read(dir, ReadOptions::default())
}

fn texts(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
        .collect()
}

fn tail(n: usize) -> ReadOptions {
    ReadOptions {
        tail: Some(n),
        ..ReadOptions::default()
    }
}

/// The log files of `ID` with their sizes, by name.
fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn entries_are_dockers_json_lines_with_exact_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    let time = at(BASE, 123_456_789);
    let mut out = Vec::new();
    out.extend_from_slice(b"say \"hi\" C:\\path\n");
    out.extend_from_slice(b"\x1b[31mred\x1b[0m\tx\x00\x7f<&>\r\n");
    out.extend_from_slice(b"bad \xff utf8 \xe2\x82!\n");
    out.extend_from_slice("日本語 ✓ 🦀\n".as_bytes());
    writer.write(Stream::Stdout, &out, time).unwrap();
    writer.write(Stream::Stderr, b"oops\n", time).unwrap();

    let json = fs::read_to_string(log_path(dir.path(), ID)).unwrap();
    let t = r#""time":"2026-11-28T10:03:31.123456789Z"}"#;
    let expected = [
        format!(r#"{{"log":"say \"hi\" C:\\path\n","stream":"stdout",{t}"#),
        format!(
            r#"{{"log":"\u001b[31mred\u001b[0m\tx\u0000{}<&>\r\n","stream":"stdout",{t}"#,
            '\x7f'
        ),
        format!(r#"{{"log":"bad \ufffd utf8 \ufffd\ufffd!\n","stream":"stdout",{t}"#),
        format!(r#"{{"log":"日本語 ✓ 🦀\n","stream":"stdout",{t}"#),
        format!(r#"{{"log":"oops\n","stream":"stderr",{t}"#),
    ];
    assert_eq!(json.lines().collect::<Vec<_>>(), expected);
    // Every line is JSON any parser reads.
    for line in json.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let entries = read_all(dir.path());
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].bytes, b"say \"hi\" C:\\path\n");
    assert_eq!(
        entries[2].bytes,
        "bad \u{fffd} utf8 \u{fffd}\u{fffd}!\n".as_bytes()
    );
    assert_eq!(entries[3].bytes, "日本語 ✓ 🦀\n".as_bytes());
    assert_eq!(entries[4].stream, Stream::Stderr);
    assert_eq!(entries[4].time, time);
}

#[test]
fn partial_lines_wait_for_their_newline_and_flush_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer.write(Stream::Stdout, b"hel", at(BASE, 0)).unwrap();
    writer
        .write(Stream::Stderr, b"err-part", at(BASE, 1))
        .unwrap();
    assert_eq!(fs::read(writer.path()).unwrap(), b"");
    // A character cut by the pipe read is whole once its line is.
    writer
        .write(Stream::Stdout, b"lo caf\xc3", at(BASE, 2))
        .unwrap();
    writer
        .write(Stream::Stdout, b"\xa9\nwor", at(BASE, 3))
        .unwrap();
    assert_eq!(texts(&read_all(dir.path())), ["hello café\n"]);
    // The entry carries the time its line was completed.
    assert_eq!(read_all(dir.path())[0].time, at(BASE, 3));

    writer.flush().unwrap();
    let entries = read_all(dir.path());
    assert_eq!(texts(&entries), ["hello café\n", "wor", "err-part"]);
    assert_eq!(entries[1].stream, Stream::Stdout);
    assert_eq!(entries[2].stream, Stream::Stderr);
    assert_eq!(entries[2].time, at(BASE, 3));
    // Flushing again writes nothing more.
    writer.flush().unwrap();
    assert_eq!(read_all(dir.path()).len(), 3);
}

#[test]
fn dropping_the_writer_flushes_what_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer
        .write(Stream::Stdout, b"last words", at(BASE, 0))
        .unwrap();
    drop(writer);
    assert_eq!(texts(&read_all(dir.path())), ["last words"]);
}

#[test]
fn long_lines_are_split_at_16_kib_however_the_output_arrives() {
    let mut line = vec![b'x'; 40_000];
    line.push(b'\n');
    let lengths = |entries: &[Entry]| entries.iter().map(|e| e.bytes.len()).collect::<Vec<_>>();
    for chunk in [line.len(), 1000, 4096, 1] {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
        for piece in line.chunks(chunk) {
            writer.write(Stream::Stdout, piece, at(BASE, 0)).unwrap();
        }
        let entries = read_all(dir.path());
        assert_eq!(
            lengths(&entries),
            [MAX_LINE, MAX_LINE, 40_000 - 2 * MAX_LINE + 1],
            "{chunk}-byte reads"
        );
        assert_eq!(entries.concat_bytes(), line);
    }

    // Without a newline: 16 KiB pieces as they fill, the rest on flush.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer
        .write(Stream::Stdout, &[b'y'; 20_000], at(BASE, 0))
        .unwrap();
    assert_eq!(lengths(&read_all(dir.path())), [MAX_LINE]);
    writer.flush().unwrap();
    assert_eq!(
        lengths(&read_all(dir.path())),
        [MAX_LINE, 20_000 - MAX_LINE]
    );

    // A line of exactly 16 KiB plus its newline is one entry.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    let mut exact = vec![b'z'; MAX_LINE];
    exact.push(b'\n');
    writer.write(Stream::Stdout, &exact, at(BASE, 0)).unwrap();
    assert_eq!(lengths(&read_all(dir.path())), [MAX_LINE + 1]);

    // The cut moves back rather than split a character.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    let mut wide = vec![b'a'; MAX_LINE - 1];
    wide.extend_from_slice("é\n".as_bytes());
    writer.write(Stream::Stdout, &wide, at(BASE, 0)).unwrap();
    let entries = read_all(dir.path());
    assert_eq!(lengths(&entries), [MAX_LINE - 1, 3]);
    assert_eq!(entries[1].bytes, "é\n".as_bytes());
}

trait ConcatBytes {
    fn concat_bytes(&self) -> Vec<u8>;
}

impl ConcatBytes for Vec<Entry> {
    fn concat_bytes(&self) -> Vec<u8> {
        self.iter().flat_map(|e| e.bytes.iter().copied()).collect()
    }
}

/// Line `n`: 200 bytes with its number first.
fn numbered_line(n: u64, out: &mut Vec<u8>) {
    let start = out.len();
    write!(out, "{n:010} GET /api/v1/items?page={n} status=200 \"ok\"").unwrap();
    out.resize(start + 199, b'.');
    out.push(b'\n');
}

fn line_number(entry: &Entry) -> u64 {
    std::str::from_utf8(&entry.bytes[..10])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn rotation_keeps_the_newest_data_within_max_size_times_max_files() {
    let dir = tempfile::tempdir().unwrap();
    // A file from an earlier, larger max-file goes away on open.
    fs::write(dir.path().join(format!("{ID}-json.log.7")), b"stale\n").unwrap();
    let options = LogOptions {
        max_size: 1 << 20,
        max_files: 3,
    };
    let mut writer = LogWriter::open(dir.path(), ID, options).unwrap();
    const TOTAL: u64 = 200_000_000;
    const CHUNK: usize = 64 * 1024;
    let mut pending = Vec::with_capacity(CHUNK + 256);
    let mut written = 0u64;
    let mut next = 0u64;
    let mut longest_entry = 0usize;
    while written < TOTAL {
        while pending.len() < CHUNK {
            numbered_line(next, &mut pending);
            next += 1;
        }
        // Pipe-sized reads, so lines straddle writes.
        writer
            .write(
                Stream::Stdout,
                &pending[..CHUNK],
                at(BASE + written / 1_000_000, 0),
            )
            .unwrap();
        pending.drain(..CHUNK);
        written += CHUNK as u64;
    }
    writer
        .write(Stream::Stdout, &pending, at(BASE + 200, 0))
        .unwrap();
    writer.flush().unwrap();
    let last = next - 1;

    let files = log_files(dir.path());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{ID}-json.log"),
            format!("{ID}-json.log.1"),
            format!("{ID}-json.log.2")
        ]
    );
    for (name, size) in &files[1..] {
        // A rotated file is full: the next entry did not fit.
        assert!(
            *size <= 1 << 20 && *size > (1 << 20) - 400,
            "{name}: {size}"
        );
    }
    let entries = read_all(dir.path());
    for entry in &entries {
        longest_entry = longest_entry.max(entry.bytes.len() + 80);
    }
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    assert!(
        total <= 3 * (1 << 20) + longest_entry as u64,
        "{total} bytes kept"
    );

    // The newest data is all there, in order, ending with the last line.
    let numbers: Vec<u64> = entries.iter().map(line_number).collect();
    assert_eq!(numbers.last(), Some(&last));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or reorder"
    );
    // Two full files at least (the current one may have just started).
    assert!(numbers.len() > 7_500, "only {} entries kept", numbers.len());
    let mut expected = Vec::new();
    numbered_line(last, &mut expected);
    assert_eq!(entries.last().unwrap().bytes, expected);
}

#[test]
fn unlimited_max_size_never_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::parse(["max-size=-1", "max-file=2"]).unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, options).unwrap();
    let mut lines = Vec::new();
    for n in 0..20_000 {
        numbered_line(n, &mut lines);
    }
    writer.write(Stream::Stdout, &lines, at(BASE, 0)).unwrap();
    assert_eq!(log_files(dir.path()).len(), 1);
    assert_eq!(read_all(dir.path()).len(), 20_000);
}

/// Writes lines `0..count` one per write, a second apart, stderr for every
/// third, into files of `max_size`.
fn write_numbered(dir: &Path, count: u64, max_size: u64, max_files: u32) {
    let mut writer = LogWriter::open(
        dir,
        ID,
        LogOptions {
            max_size,
            max_files,
        },
    )
    .unwrap();
    for n in 0..count {
        let stream = if n % 3 == 0 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let mut line = Vec::new();
        numbered_line(n, &mut line);
        writer.write(stream, &line, at(BASE + n, 0)).unwrap();
    }
}

#[test]
fn tail_reads_the_last_entries_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    write_numbered(dir.path(), 300, 4096, 100);
    assert!(log_files(dir.path()).len() > 10);
    let numbers = |options| {
        read(dir.path(), options)
            .iter()
            .map(line_number)
            .collect::<Vec<_>>()
    };

    assert_eq!(numbers(tail(5)), (295..300).collect::<Vec<_>>());
    assert_eq!(numbers(tail(100)), (200..300).collect::<Vec<_>>());
    assert_eq!(numbers(tail(300)), (0..300).collect::<Vec<_>>());
    assert_eq!(numbers(tail(100_000)), (0..300).collect::<Vec<_>>());
    assert_eq!(numbers(tail(0)), Vec::<u64>::new());
    // Tail counts the entries the other options select.
    let stderr_only = ReadOptions {
        tail: Some(4),
        stdout: false,
        ..ReadOptions::default()
    };
    assert_eq!(numbers(stderr_only), [288, 291, 294, 297]);
    let stdout_only = ReadOptions {
        stderr: false,
        ..tail(3)
    };
    assert_eq!(numbers(stdout_only), [296, 298, 299]);
}

#[test]
fn tail_finds_long_lines_that_straddle_its_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    for n in 0..40u64 {
        let mut line = format!("{n:010}").into_bytes();
        line.resize(15_000 + 997 * usize::try_from(n).unwrap() % 1000, b'"');
        line.push(b'\n');
        writer.write(Stream::Stdout, &line, at(BASE, 0)).unwrap();
    }
    // Entries of ~30 KB (every quote escaped): the backwards read takes 64 KiB
    // at a time, so most lines are cut by a chunk boundary.
    assert_eq!(log_files(dir.path()).len(), 1);
    for n in [1, 2, 3, 7, 39, 40] {
        let numbers: Vec<u64> = read(dir.path(), tail(n)).iter().map(line_number).collect();
        assert_eq!(numbers, (40 - n as u64..40).collect::<Vec<_>>(), "tail {n}");
    }
}

#[test]
fn since_and_until_select_by_time() {
    let dir = tempfile::tempdir().unwrap();
    write_numbered(dir.path(), 100, 4096, 100);
    let numbers = |options| {
        read(dir.path(), options)
            .iter()
            .map(line_number)
            .collect::<Vec<_>>()
    };
    let since = |n: u64| Some(at(BASE + n, 0));

    assert_eq!(
        numbers(ReadOptions {
            since: since(90),
            ..ReadOptions::default()
        }),
        (90..100).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(ReadOptions {
            until: since(9),
            ..ReadOptions::default()
        }),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(ReadOptions {
            since: since(10),
            until: since(14),
            ..ReadOptions::default()
        }),
        (10..15).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(ReadOptions {
            since: since(10),
            until: since(30),
            tail: Some(3),
            ..ReadOptions::default()
        }),
        [28, 29, 30]
    );
    // The forms `--since` takes on the command line.
    let now = at(BASE + 100, 0);
    let parsed = |s| Some(parse_time_filter(s, now).unwrap());
    assert_eq!(
        numbers(ReadOptions {
            since: parsed("5s"),
            ..ReadOptions::default()
        }),
        (95..100).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(ReadOptions {
            until: parsed("2026-11-28T10:03:33Z"),
            ..ReadOptions::default()
        }),
        [0, 1, 2]
    );
    assert_eq!(
        numbers(ReadOptions {
            since: parsed("1795860308.5"),
            ..ReadOptions::default()
        }),
        [98, 99]
    );
}

#[test]
fn torn_and_garbage_lines_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_path(dir.path(), ID);
    {
        let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
        writer
            .write(Stream::Stdout, b"one\ntwo\n", at(BASE, 0))
            .unwrap();
    }
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"not json at all\n").unwrap();
    file.write_all(br#"{"log":"three\n","stream":"stdout","time":"2026-11-28T10:03:32Z"}"#)
        .unwrap();
    file.write_all(b"\n{\"log\":\"torn by a cra").unwrap();
    drop(file);
    assert_eq!(texts(&read_all(dir.path())), ["one\n", "two\n", "three\n"]);
    assert_eq!(texts(&read(dir.path(), tail(2))), ["two\n", "three\n"]);

    // A writer opened after the crash ends the torn line first.
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer
        .write(Stream::Stdout, b"four\n", at(BASE, 2))
        .unwrap();
    assert_eq!(
        texts(&read_all(dir.path())),
        ["one\n", "two\n", "three\n", "four\n"]
    );
    assert_eq!(texts(&read(dir.path(), tail(2))), ["three\n", "four\n"]);

    // A rotated file that ends torn is read up to the tear.
    let rotated = dir.path().join(format!("{ID}-json.log.1"));
    fs::write(
        &rotated,
        b"{\"log\":\"zero\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-28T10:03:30Z\"}\n{\"log\":\"ha",
    )
    .unwrap();
    assert_eq!(
        texts(&read_all(dir.path())),
        ["zero\n", "one\n", "two\n", "three\n", "four\n"]
    );
    assert_eq!(
        texts(&read(dir.path(), tail(5))),
        ["zero\n", "one\n", "two\n", "three\n", "four\n"]
    );
}

#[test]
fn a_container_without_logs_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_all(dir.path()).is_empty());
    assert!(read(dir.path(), tail(10)).is_empty());
    assert!(LogReader::open(&dir.path().join("missing"), ID, ReadOptions::default()).is_err());
    assert!(LogReader::open(dir.path(), "../etc", ReadOptions::default()).is_err());
}

#[test]
fn write_raw_to_splits_streams_and_prefixes_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer
        .write(Stream::Stdout, b"out 1\n", at(BASE, 5_000))
        .unwrap();
    writer
        .write(Stream::Stderr, b"err 1\n", at(BASE + 1, 0))
        .unwrap();
    writer
        .write(Stream::Stdout, b"out 2\n", at(BASE + 2, 0))
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let options = ReadOptions {
        timestamps: true,
        ..ReadOptions::default()
    };
    let count = LogReader::open(dir.path(), ID, options)
        .unwrap()
        .write_raw_to(&mut out, &mut err)
        .unwrap();
    assert_eq!(count, 3);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2026-11-28T10:03:31.000005000Z out 1\n2026-11-28T10:03:33.000000000Z out 2\n"
    );
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "2026-11-28T10:03:32.000000000Z err 1\n"
    );
}

/// Follows in a thread with `stop`, while this thread writes `count` lines in
/// small batches into files of `max_size`; returns what the reader saw.
fn follow_while_writing(
    dir: &Path,
    count: u64,
    options: LogOptions,
    stop: Stop,
    done: impl FnOnce(),
) -> Vec<u64> {
    let follow = ReadOptions {
        follow: true,
        ..ReadOptions::default()
    };
    // Opened before any line is written: everything below comes after.
    let mut reader = LogReader::open(dir, ID, follow).unwrap().with_stop(stop);
    let seen = thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(entry) = reader.next_entry().unwrap() {
            seen.push(line_number(&entry));
        }
        seen
    });
    let mut writer = LogWriter::open(dir, ID, options).unwrap();
    for n in 0..count {
        let mut line = Vec::new();
        numbered_line(n, &mut line);
        writer
            .write(Stream::Stdout, &line, SystemTime::now())
            .unwrap();
        if n % 25 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    writer.flush().unwrap();
    done();
    seen.join().unwrap()
}

/// `seen` is `0..count`; says where it is not, without printing it all.
fn assert_all_in_order(seen: &[u64], count: u64) {
    let wrong = seen.iter().zip(0..).position(|(s, n)| *s != n);
    assert!(
        wrong.is_none() && seen.len() as u64 == count,
        "{} lines seen of {count}; first wrong at {wrong:?}: {:?}",
        seen.len(),
        wrong.map(|w| &seen[w.saturating_sub(2)..(w + 3).min(seen.len())]),
    );
}

#[test]
fn follow_sees_lines_written_after_it_started_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopped);
    // 500 lines of 250 bytes into 2 KiB files: dozens of rotations, and enough
    // files kept that a slow reader cannot fall behind what is kept.
    let options = LogOptions {
        max_size: 2048,
        max_files: 200,
    };
    let seen = follow_while_writing(
        dir.path(),
        500,
        options,
        Stop::When(Box::new(move || flag.load(Ordering::SeqCst))),
        || stopped.store(true, Ordering::SeqCst),
    );
    assert!(log_files(dir.path()).len() > 50);
    assert_all_in_order(&seen, 500);
}

#[test]
fn follow_stops_when_its_descriptor_becomes_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (exit_signal, exit_watch) = UnixStream::pair().unwrap();
    let options = LogOptions {
        max_size: 4096,
        max_files: 100,
    };
    let seen = follow_while_writing(
        dir.path(),
        300,
        options,
        Stop::WhenReadable(exit_watch.into()),
        move || drop(exit_signal),
    );
    assert_all_in_order(&seen, 300);
}

#[test]
fn follow_with_one_file_keeps_up_with_its_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (exit_signal, exit_watch) = UnixStream::pair().unwrap();
    // One file, started afresh at each rotation: a slow reader may miss lines
    // that were dropped, but sees the rest in order and the last one.
    let options = LogOptions {
        max_size: 4096,
        max_files: 1,
    };
    let seen = follow_while_writing(
        dir.path(),
        300,
        options,
        Stop::WhenReadable(exit_watch.into()),
        move || drop(exit_signal),
    );
    assert_eq!(log_files(dir.path()).len(), 1);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&299));
}

#[test]
fn follow_ends_when_until_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = LogWriter::open(dir.path(), ID, LogOptions::default()).unwrap();
    writer
        .write(Stream::Stdout, b"before\n", SystemTime::now())
        .unwrap();
    let options = ReadOptions {
        follow: true,
        until: Some(SystemTime::now() + Duration::from_millis(300)),
        ..ReadOptions::default()
    };
    let entries = read(dir.path(), options);
    assert_eq!(texts(&entries), ["before\n"]);
}
