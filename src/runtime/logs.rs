//! Container logs in Docker's `json-file` format: the writer the shim feeds
//! with the container's output, and the reader behind `stack logs`.
//!
//! # Format
//!
//! One JSON object per line, in `<dir>/<id>-json.log`, as Docker's json-file
//! driver writes it (moby `daemon/logger/jsonfilelog`):
//!
//! ```text
//! {"log":"hello\n","stream":"stdout","time":"2026-11-28T10:03:31.123456789Z"}
//! ```
//!
//! Rotated files are `<id>-json.log.1` (the newest) to `<id>-json.log.N`
//! (the oldest), Docker's names, so tools that read Docker's log directories
//! read ours. Two deliberate differences from Docker's bytes, both invisible
//! to a JSON reader:
//! - the time always has nine fraction digits (Go's `RFC3339Nano` trims
//!   trailing zeros), so every entry's time has the same width;
//! - `<`, `>` and `&` are written as themselves: Go escapes them for HTML,
//!   which a log file does not need.
//!
//! # Lines
//!
//! Each newline-terminated chunk of output is one entry, its newline kept.
//! Output without a newline is buffered per stream up to [`MAX_LINE`] bytes
//! and then written as an entry without a newline, as Docker's copier does;
//! a longer line becomes several entries. The reader hands entries back as
//! they are and never joins such pieces. [`LogWriter::flush`] writes what is
//! buffered, which the shim does when the container exits.
//!
//! # What this module never does
//!
//! It never fsyncs (a log line is not worth a disk flush), never reads the
//! clock on the write path (the caller passes the time it read the output),
//! and never grows a file without bound unless told to with `max-size=-1`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::inotify;
use serde::Deserialize;
use thiserror::Error;
use tracing::debug;

/// The most bytes of output one entry holds, not counting its newline: Docker's
/// copier buffer (moby `daemon/logger/copier.go`, 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Where a container wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output; with a terminal, everything the container writes.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The name in the log file: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One log entry: a line (or a piece of a long one) with its stream and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream it was written to.
    pub stream: Stream,
    /// When the writer received it.
    pub time: SystemTime,
    /// The output, with its newline when it had one. Bytes that were not valid
    /// UTF-8 were stored as U+FFFD.
    pub bytes: Vec<u8>,
}

impl Entry {
    /// Writes the output to `out`, prefixed with its time and a space when
    /// `timestamps` is set (the form of `docker logs --timestamps`).
    pub fn write_to(&self, out: &mut dyn Write, timestamps: bool) -> io::Result<()> {
        if timestamps {
            let mut text = [0u8; TIME_LEN + 1];
            text[..TIME_LEN].copy_from_slice(&format_time(self.time));
            text[TIME_LEN] = b' ';
            out.write_all(&text)?;
        }
        out.write_all(&self.bytes)
    }
}

/// Errors of the log writer and reader.
#[derive(Debug, Error)]
pub enum LogError {
    /// The container id cannot be part of a file name.
    #[error("invalid container id for a log file: {id:?}")]
    InvalidId {
        /// The id.
        id: String,
    },
    /// A `--log-opt` key the json-file driver does not have.
    #[error("unknown log option {key:?}")]
    UnknownOption {
        /// The key.
        key: String,
    },
    /// A json-file option Docker has but this writer does not implement.
    #[error("log option {key}={value:?} is not supported")]
    UnsupportedOption {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A `--log-opt` value that does not parse or is out of range.
    #[error("invalid log option {key}={value:?}: {reason}")]
    InvalidOption {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `--since`/`--until` value that is neither a time nor a duration.
    #[error("cannot parse {input:?} as a time or a duration")]
    InvalidTime {
        /// The input.
        input: String,
    },
    /// The log directory could not be created.
    #[error("cannot create the log directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A log file could not be opened.
    #[error("cannot open log file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Entries could not be written to the log file; they are dropped.
    #[error("cannot write log file {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A log file could not be renamed or removed while rotating.
    #[error("cannot rotate log file {}", path.display())]
    Rotate {
        /// The file being renamed or removed.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The log directory could not be listed.
    #[error("cannot list log files in {}", path.display())]
    List {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A log file could not be read.
    #[error("cannot read log file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Waiting for new entries failed.
    #[error("cannot wait for new log entries in {}", path.display())]
    Wait {
        /// The log directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Entries could not be written to the caller's output.
    #[error("cannot write log output")]
    Output {
        /// Why (a closed pipe shows up here).
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------
// Options

/// Rotation limits, from the json-file driver's `--log-opt` strings.
///
/// Unlike Docker, whose json-file default is one file that grows forever,
/// the defaults here are bounded: 10 MiB × 5 files. A file grows without
/// bound only with an explicit `max-size=-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// The size a file may reach before it is rotated, in bytes;
    /// [`LogOptions::UNLIMITED`] never rotates.
    pub max_size: u64,
    /// How many files to keep, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

impl LogOptions {
    /// A `max_size` that means "never rotate" (`max-size=-1`).
    pub const UNLIMITED: u64 = u64::MAX;

    /// Reads `key=value` strings as `docker run --log-opt` takes them, over the
    /// defaults: `["max-size=10m", "max-file=3"]`.
    pub fn parse<I>(opts: I) -> Result<Self, LogError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut options = Self::default();
        for opt in opts {
            let opt = opt.as_ref();
            let Some((key, value)) = opt.split_once('=') else {
                return Err(LogError::InvalidOption {
                    key: opt.to_owned(),
                    value: String::new(),
                    reason: "expected key=value",
                });
            };
            options.set(key, value)?;
        }
        Ok(options)
    }

    /// Sets one option, as a compose file's `logging.options` map gives them.
    ///
    /// - `max-size`: a size with decimal units as Docker reads it (go-units
    ///   `FromHumanSize`: `10m` is 10 000 000 bytes, `1k` is 1000), or `-1`
    ///   for no limit.
    /// - `max-file`: the number of files kept, at least 1.
    /// - `compress`: only `false`; compressed rotated files are not written.
    ///
    /// Docker's attribute options (`labels`, `env`, `tag`, …) are refused
    /// rather than silently ignored.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), LogError> {
        let invalid = |reason| LogError::InvalidOption {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        match key {
            "max-size" => self.max_size = parse_max_size(value).map_err(invalid)?,
            "max-file" => {
                self.max_files = value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| invalid("expected a whole number of files"))?;
                if self.max_files == 0 {
                    return Err(invalid("at least one file is needed"));
                }
            }
            "compress" => {
                if value != "false" {
                    return Err(LogError::UnsupportedOption {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    });
                }
            }
            "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {
                return Err(LogError::UnsupportedOption {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            _ => {
                return Err(LogError::UnknownOption {
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// `max-size`: go-units `FromHumanSize` (decimal units, optional fraction and
/// space, `b`/`k`/`kb`/`kib`/… in any case), plus `-1` for no limit.
///
/// The crate has its own parser in `spec::size`, but `runtime` may not import
/// `spec`; this one is exact (integer arithmetic) where go-units goes through
/// a float, which only differs for fractions that do not land on a byte.
fn parse_max_size(value: &str) -> Result<u64, &'static str> {
    let value = value.trim();
    if value == "-1" {
        return Ok(LogOptions::UNLIMITED);
    }
    let number_len = value
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = value.split_at(number_len);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1000,
        "m" | "mb" | "mib" => 1000_u64.pow(2),
        "g" | "gb" | "gib" => 1000_u64.pow(3),
        "t" | "tb" | "tib" => 1000_u64.pow(4),
        "p" | "pb" | "pib" => 1000_u64.pow(5),
        _ => return Err("expected a size such as 10m, or -1"),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err("expected a size such as 10m, or -1");
    }
    let too_large = "the size is too large";
    let digits = |s: &str| {
        s.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    };
    let mut bytes = digits(whole)
        .and_then(|w| w.checked_mul(multiplier))
        .ok_or(too_large)?;
    // Fraction digits past the unit's precision cannot add a byte.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| too_large)?);
        let part = u128::from(digits(fraction).ok_or(too_large)?) * u128::from(multiplier) / scale;
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| too_large)?)
            .ok_or(too_large)?;
    }
    if bytes == 0 {
        return Err("the size must be positive, or -1 for no limit");
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// Time

/// `2026-11-28T10:03:31.123456789Z`.
const TIME_LEN: usize = 30;

/// Seconds since the epoch of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z:
/// the range a four-digit year can show.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, <https://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds (floored) and nanoseconds of a time relative to the epoch, clamped
/// to the years 0000–9999.
fn unix_parts(time: SystemTime) -> (i64, u32) {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    };
    if secs < MIN_SECS {
        (MIN_SECS, 0)
    } else if secs > MAX_SECS {
        (MAX_SECS, 999_999_999)
    } else {
        (secs, nanos)
    }
}

/// Writes `value` as `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
        value /= 10;
    }
}

/// A time as RFC 3339 in UTC with nine fraction digits, as a string.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    String::from_utf8_lossy(&format_time(time)).into_owned()
}

/// A time as RFC 3339 in UTC with nine fraction digits.
fn format_time(time: SystemTime) -> [u8; TIME_LEN] {
    let (secs, nanos) = unix_parts(time);
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    put_date_time(&mut text, secs);
    put_digits(&mut text[20..29], u64::from(nanos));
    text
}

/// Fills the date and time of day (everything before the fraction).
fn put_date_time(text: &mut [u8; TIME_LEN], secs: i64) {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    // Every field is non-negative: `secs` was clamped to years 0000–9999.
    let field = |v: i64| u64::try_from(v).unwrap_or(0);
    put_digits(&mut text[0..4], field(year));
    put_digits(&mut text[5..7], field(month));
    put_digits(&mut text[8..10], field(day));
    put_digits(&mut text[11..13], field(of_day / 3600));
    put_digits(&mut text[14..16], field(of_day / 60 % 60));
    put_digits(&mut text[17..19], field(of_day % 60));
}

/// The writer's formatted time, redone only in part when the second is the same.
#[derive(Debug)]
struct TimeCache {
    secs: Option<i64>,
    text: [u8; TIME_LEN],
}

impl TimeCache {
    fn new() -> Self {
        Self {
            secs: None,
            text: *b"0000-00-00T00:00:00.000000000Z",
        }
    }

    fn format(&mut self, time: SystemTime) -> [u8; TIME_LEN] {
        let (secs, nanos) = unix_parts(time);
        if self.secs != Some(secs) {
            put_date_time(&mut self.text, secs);
            self.secs = Some(secs);
        }
        put_digits(&mut self.text[20..29], u64::from(nanos));
        self.text
    }
}

/// Reads `n` ASCII digits at `*at`, moving past them.
fn take_digits(bytes: &[u8], at: &mut usize, n: usize) -> Option<i64> {
    let digits = bytes.get(*at..*at + n)?;
    let mut value = 0i64;
    for b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    *at += n;
    Some(value)
}

/// Parses an RFC 3339 time, and the shorter forms `docker logs --since` takes:
/// `2026-11-28`, `2026-11-28T10`, `2026-11-28T10:03`, each with an optional
/// zone. Without a zone the time is UTC (Docker reads it in the local zone,
/// which this crate has no database for). Fractions may have any number of
/// digits; past nine they are truncated.
pub fn parse_datetime(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let mut at = 0;
    let year = take_digits(b, &mut at, 4)?;
    let expect = |at: &mut usize, c: u8| (b.get(*at) == Some(&c)).then(|| *at += 1);
    expect(&mut at, b'-')?;
    let month = take_digits(b, &mut at, 2)?;
    expect(&mut at, b'-')?;
    let day = take_digits(b, &mut at, 2)?;
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0i64);
    if matches!(b.get(at), Some(b'T' | b't')) {
        at += 1;
        hour = take_digits(b, &mut at, 2)?;
        if b.get(at) == Some(&b':') {
            at += 1;
            minute = take_digits(b, &mut at, 2)?;
            if b.get(at) == Some(&b':') {
                at += 1;
                second = take_digits(b, &mut at, 2)?;
                if b.get(at) == Some(&b'.') {
                    at += 1;
                    let start = at;
                    while b.get(at).is_some_and(u8::is_ascii_digit) {
                        if at - start < 9 {
                            nanos = nanos * 10 + i64::from(b[at] - b'0');
                        }
                        at += 1;
                    }
                    let len = at - start;
                    if len == 0 {
                        return None;
                    }
                    for _ in len..9 {
                        nanos *= 10;
                    }
                }
            }
        }
    }
    let offset = match b.get(at) {
        None => 0,
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let sign = if *sign == b'+' { 1 } else { -1 };
            at += 1;
            let hours = take_digits(b, &mut at, 2)?;
            expect(&mut at, b':')?;
            let minutes = take_digits(b, &mut at, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
        Some(_) => return None,
    };
    if at != b.len() {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let nanos = u32::try_from(nanos).ok()?;
    Some(if secs >= 0 {
        UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::new(0, nanos)
    })
}

/// Parses a Go duration (`time.ParseDuration`): `10m`, `1h30m`, `1.5h`,
/// `-300ms`, with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. Returns whether
/// it is negative and its length.
fn parse_go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let mut value: u128 = 0;
        for d in whole.bytes() {
            value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
        }
        total = total.checked_add(value.checked_mul(unit_nanos)?)?;
        let mut scale = unit_nanos;
        for d in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            total = total.checked_add(u128::from(d - b'0') * scale)?;
        }
        rest = after;
    }
    // Go's durations are int64 nanoseconds.
    if total > u128::from(u64::MAX >> 1) {
        return None;
    }
    let total = u64::try_from(total).ok()?;
    Some((negative, Duration::from_nanos(total)))
}

/// Parses a `--since`/`--until` value the way Docker does (docker/cli
/// `timetypes.GetTimestamp`), relative to `now`:
///
/// - a Go duration (`10m`, `1h30m`, `1.5h`): that long before `now`;
/// - an RFC 3339 time or a prefix of one (`2026-11-28`, `2026-11-28T10:03`,
///   `2026-11-28T10:03:31.5+01:00`); without a zone it is UTC, where Docker
///   would use the local zone;
/// - Unix seconds with an optional fraction (`1764324211.5`).
pub fn parse_time_filter(value: &str, now: SystemTime) -> Result<SystemTime, LogError> {
    let invalid = || LogError::InvalidTime {
        input: value.to_owned(),
    };
    let value_trimmed = value.trim();
    // Docker reads a bare "0" as the Unix time 0, not as a zero duration.
    if value_trimmed != "0"
        && let Some((negative, duration)) = parse_go_duration(value_trimmed)
    {
        let time = if negative {
            now.checked_add(duration)
        } else {
            now.checked_sub(duration)
        };
        return time.ok_or_else(invalid);
    }
    if value_trimmed.contains(['-', ':', 'T']) {
        return parse_datetime(value_trimmed).ok_or_else(invalid);
    }
    let (secs, fraction) = value_trimmed.split_once('.').unwrap_or((value_trimmed, ""));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(secs) || !(fraction.is_empty() || all_digits(fraction)) {
        return Err(invalid());
    }
    let secs: u64 = secs.parse().map_err(|_| invalid())?;
    let mut nanos = 0u32;
    for (i, d) in fraction.bytes().take(9).enumerate() {
        nanos += u32::from(d - b'0') * 10u32.pow(8 - u32::try_from(i).unwrap_or(8));
    }
    UNIX_EPOCH
        .checked_add(Duration::new(secs, nanos))
        .ok_or_else(invalid)
}

// ---------------------------------------------------------------------------
// JSON escaping

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Non-zero when some byte of `word` is zero (the lowest flagged byte is exact).
fn zero_byte(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// True when none of the eight bytes needs escaping or UTF-8 checking: all
/// are printable ASCII other than `"` and `\`.
fn is_plain_word(word: u64) -> bool {
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (word & HIGHS) | control | quote | backslash == 0
}

fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The index of the first `\n`, eight bytes at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(word) = word_at(bytes, at) {
        if zero_byte(word ^ (ONES * u64::from(b'\n'))) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|b| *b == b'\n').map(|i| at + i)
}

/// The length of the valid UTF-8 sequence that starts `bytes` with a non-ASCII
/// byte, or 0 when it is not one (overlong forms, surrogates, past U+10FFFF,
/// cut short): the rules of Go's `utf8.DecodeRune`.
fn utf8_sequence_len(bytes: &[u8]) -> usize {
    let Some(&lead) = bytes.first() else {
        return 0;
    };
    let (len, low, high) = match lead {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return 0,
    };
    match bytes.get(1..len) {
        Some([second, rest @ ..])
            if (low..=high).contains(second) && rest.iter().all(|b| b & 0xC0 == 0x80) =>
        {
            len
        }
        _ => 0,
    }
}

/// Appends `bytes` as the inside of a JSON string, as Go's `encoding/json`
/// would: `"` and `\` escaped, `\n`, `\r`, `\t` by name, other control bytes
/// as `\u00XX`, valid UTF-8 kept, and each byte that does not start a valid
/// sequence replaced with `\ufffd`.
fn escape_json(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    let mut run = 0;
    while at < bytes.len() {
        while let Some(word) = word_at(bytes, at) {
            if !is_plain_word(word) {
                break;
            }
            at += 8;
        }
        let Some(&b) = bytes.get(at) else {
            break;
        };
        if (0x20..0x80).contains(&b) && b != b'"' && b != b'\\' {
            at += 1;
            continue;
        }
        if b >= 0x80 {
            let len = utf8_sequence_len(&bytes[at..]);
            if len > 0 {
                at += len;
                continue;
            }
        }
        out.extend_from_slice(&bytes[run..at]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x80.. => out.extend_from_slice(b"\\ufffd"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        at += 1;
        run = at;
    }
    out.extend_from_slice(&bytes[run..]);
}

// ---------------------------------------------------------------------------
// File names

/// The current log file of container `id` in `dir`: `<dir>/<id>-json.log`,
/// Docker's `LogPath`.
pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}-json.log"))
}

/// `<id>-json.log` for 0, `<id>-json.log.<n>` for the rotated files.
fn numbered_path(dir: &Path, id: &str, n: u32) -> PathBuf {
    if n == 0 {
        log_path(dir, id)
    } else {
        dir.join(format!("{id}-json.log.{n}"))
    }
}

fn check_id(id: &str) -> Result<(), LogError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(LogError::InvalidId { id: id.to_owned() });
    }
    Ok(())
}

/// The numbers of the rotated files of `id` present in `dir`.
fn rotated_numbers(dir: &Path, id: &str) -> Result<Vec<u32>, LogError> {
    let list_err = |source| LogError::List {
        path: dir.to_owned(),
        source,
    };
    let prefix = format!("{id}-json.log.");
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
        else {
            continue;
        };
        numbers.push(n);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

// ---------------------------------------------------------------------------
// Writer

/// Entries are written to the file once this much is encoded, so a large
/// batch does not grow the buffer (the shim must stay small).
const FLUSH_AT: usize = 64 * 1024;

/// Writes a container's output as json-file entries and rotates the files.
///
/// Meant for the shim's single-threaded poll loop: each [`LogWriter::write`]
/// encodes into one reused buffer and ends with one `write(2)` (more only past
/// 64 KiB of encoded entries or at a rotation). Memory stays at that buffer
/// plus up to [`MAX_LINE`] of unfinished line per stream.
///
/// Rotation happens before an entry would take the current file past
/// `max_size`: the file becomes `.1`, `.1` becomes `.2`, …, and the file past
/// `max_files` is dropped. An entry larger than `max_size` still goes whole
/// into a fresh file, so a file exceeds `max_size` by at most one entry.
///
/// Dropping the writer flushes what is buffered, ignoring errors; call
/// [`LogWriter::flush`] to see them.
#[derive(Debug)]
pub struct LogWriter {
    sink: Sink,
    /// Unfinished line per stream, indexed by [`Stream::index`].
    partial: [Vec<u8>; 2],
    clock: TimeCache,
    /// The time of the latest write, given to entries [`LogWriter::flush`] makes.
    last_time: SystemTime,
}

/// The file side of the writer: encoded entries, the open file, rotation.
#[derive(Debug)]
struct Sink {
    dir: PathBuf,
    id: String,
    path: PathBuf,
    options: LogOptions,
    /// `None` after a rotation whose new file could not be opened; the next
    /// write tries again.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    out: Vec<u8>,
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        // Docker's json-file mode: the logs may hold secrets a container printed.
        .mode(0o640)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_owned(),
            source,
        })
}

impl Sink {
    /// Encodes one entry and rotates or writes out as needed.
    fn push(&mut self, stream: Stream, line: &[u8], time: &[u8; TIME_LEN]) -> Result<(), LogError> {
        let start = self.out.len();
        self.out.extend_from_slice(b"{\"log\":\"");
        escape_json(&mut self.out, line);
        self.out.extend_from_slice(b"\",\"stream\":\"");
        self.out.extend_from_slice(stream.as_str().as_bytes());
        self.out.extend_from_slice(b"\",\"time\":\"");
        self.out.extend_from_slice(time);
        self.out.extend_from_slice(b"\"}\n");
        let would_be = self.size.saturating_add(self.out.len() as u64);
        if would_be > self.options.max_size && self.size + start as u64 > 0 {
            let result = self.write_out(start).and_then(|()| self.rotate());
            if let Err(e) = result {
                self.out.clear();
                return Err(e);
            }
        }
        if self.out.len() >= FLUSH_AT {
            self.write_out(self.out.len())?;
        }
        Ok(())
    }

    /// Writes the first `len` encoded bytes to the file and drops them from the
    /// buffer. On failure the whole buffer is dropped: a log that cannot be
    /// written must not grow the shim.
    fn write_out(&mut self, len: usize) -> Result<(), LogError> {
        if len == 0 {
            return Ok(());
        }
        let result = match &mut self.file {
            Some(file) => file
                .write_all(&self.out[..len])
                .map_err(|source| LogError::Write {
                    path: self.path.clone(),
                    source,
                }),
            None => open_append(&self.path).and_then(|mut file| {
                let written = file.write_all(&self.out[..len]);
                self.file = Some(file);
                written.map_err(|source| LogError::Write {
                    path: self.path.clone(),
                    source,
                })
            }),
        };
        match result {
            Ok(()) => {
                self.size += len as u64;
                self.out.drain(..len);
                Ok(())
            }
            Err(e) => {
                self.out.clear();
                Err(e)
            }
        }
    }

    /// Shifts the files down one number and starts an empty current file.
    fn rotate(&mut self) -> Result<(), LogError> {
        let rotate_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LogError::Rotate { path, source }
        };
        self.file = None;
        if self.options.max_files <= 1 {
            // One file: start it afresh. A new inode rather than truncation
            // in place, so a reader following the old file sees the change.
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(rotate_err(&self.path)(e)),
            }
        } else {
            // Drop the oldest first, so no rename below replaces a file: ext4
            // (`auto_da_alloc`) flushes a file renamed over another one, which
            // would put a 10 MiB writeback in the shim's loop at every rotation.
            let oldest = numbered_path(&self.dir, &self.id, self.options.max_files - 1);
            match fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(rotate_err(&oldest)(e)),
            }
            // `.{max-2}` onto `.{max-1}` … `.1` onto `.2`.
            for n in (1..self.options.max_files - 1).rev() {
                let from = numbered_path(&self.dir, &self.id, n);
                match fs::rename(&from, numbered_path(&self.dir, &self.id, n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(rotate_err(&from)(e)),
                }
            }
            fs::rename(&self.path, numbered_path(&self.dir, &self.id, 1))
                .map_err(rotate_err(&self.path))?;
        }
        self.size = 0;
        self.file = Some(open_append(&self.path)?);
        Ok(())
    }
}

impl LogWriter {
    /// Opens (creating `dir` and the file if needed) the log of container `id`
    /// for appending.
    ///
    /// Rotated files numbered past `max_files` (left by an earlier, larger
    /// setting) are removed. A current file whose last line was cut short by a
    /// crash gets a newline first, so the torn line stays one malformed line
    /// that readers skip instead of spoiling the next entry.
    pub fn open(dir: &Path, id: &str, options: LogOptions) -> Result<Self, LogError> {
        check_id(id)?;
        let options = LogOptions {
            max_files: options.max_files.max(1),
            max_size: options.max_size.max(1),
        };
        fs::create_dir_all(dir).map_err(|source| LogError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        for n in rotated_numbers(dir, id)? {
            if n >= options.max_files {
                let path = numbered_path(dir, id, n);
                fs::remove_file(&path).map_err(|source| LogError::Rotate { path, source })?;
            }
        }
        let path = log_path(dir, id);
        let mut file = open_append(&path)?;
        let read_err = |source| LogError::Read {
            path: path.clone(),
            source,
        };
        let mut size = file.metadata().map_err(read_err)?.len();
        if size > 0 {
            let mut last = [0u8];
            file.read_exact_at(&mut last, size - 1).map_err(read_err)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|source| LogError::Write {
                    path: path.clone(),
                    source,
                })?;
                size += 1;
            }
        }
        Ok(Self {
            sink: Sink {
                dir: dir.to_owned(),
                id: id.to_owned(),
                path,
                options,
                file: Some(file),
                size,
                out: Vec::with_capacity(FLUSH_AT + 1024),
            },
            partial: [Vec::new(), Vec::new()],
            clock: TimeCache::new(),
            last_time: UNIX_EPOCH,
        })
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.sink.path
    }

    /// Takes output read from the container's `stream` at `time`: every
    /// complete line becomes an entry and is written before this returns; the
    /// rest waits for its newline, up to [`MAX_LINE`] bytes.
    ///
    /// On an error the entries of this batch that were not yet written are
    /// dropped and the writer stays usable; the next write tries again.
    pub fn write(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        time: SystemTime,
    ) -> Result<(), LogError> {
        self.last_time = time;
        let stamp = self.clock.format(time);
        let Self { sink, partial, .. } = self;
        let partial = &mut partial[stream.index()];
        let mut rest = bytes;
        while !rest.is_empty() {
            if partial.is_empty() {
                let window = &rest[..rest.len().min(MAX_LINE + 1)];
                if let Some(i) = find_newline(window) {
                    sink.push(stream, &rest[..=i], &stamp)?;
                    rest = &rest[i + 1..];
                } else if rest.len() <= MAX_LINE {
                    partial.extend_from_slice(rest);
                    break;
                } else {
                    let cut = line_cut(rest);
                    sink.push(stream, &rest[..cut], &stamp)?;
                    rest = &rest[cut..];
                }
            } else {
                let take = rest.len().min(MAX_LINE + 1 - partial.len());
                if let Some(i) = find_newline(&rest[..take]) {
                    partial.extend_from_slice(&rest[..=i]);
                    let pushed = sink.push(stream, partial, &stamp);
                    partial.clear();
                    pushed?;
                    rest = &rest[i + 1..];
                    continue;
                }
                partial.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if partial.len() > MAX_LINE {
                    let cut = line_cut(partial);
                    let pushed = sink.push(stream, &partial[..cut], &stamp);
                    partial.drain(..cut);
                    pushed?;
                }
            }
        }
        sink.write_out(sink.out.len())
    }

    /// Writes what is buffered of unfinished lines as entries without a
    /// newline (stdout's first), stamped with the time of the latest write.
    /// The shim calls this when the container exits.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let stamp = self.clock.format(self.last_time);
        let mut result = Ok(());
        for stream in [Stream::Stdout, Stream::Stderr] {
            let partial = &mut self.partial[stream.index()];
            if !partial.is_empty() {
                let pushed = self.sink.push(stream, partial, &stamp);
                partial.clear();
                result = result.and(pushed);
            }
        }
        result.and(self.sink.write_out(self.sink.out.len()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort: an error here has nobody to go to.
        let _ = self.flush();
    }
}

/// Where to cut a line that has no newline within [`MAX_LINE`] bytes (`line`
/// is longer than that): at `MAX_LINE`, moved back to the start of a UTF-8
/// character that would straddle it, so the cut does not turn it into U+FFFD.
fn line_cut(line: &[u8]) -> usize {
    let mut cut = MAX_LINE;
    while cut > MAX_LINE - 3 && line.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut -= 1;
    }
    let lead = line.get(cut).copied().unwrap_or(0);
    if cut < MAX_LINE && lead >= 0xC0 && utf8_sequence_len(&line[cut..]) > 0 {
        cut
    } else {
        MAX_LINE
    }
}

// ---------------------------------------------------------------------------
// Reader

/// What [`LogReader`] returns and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only the last this many entries of those the other options select,
    /// found by reading the files backwards from the end. (Docker takes the
    /// last lines first and filters them after, so `--tail 10 --since 1m`
    /// can show fewer than 10 there while more match.)
    pub tail: Option<usize>,
    /// Skip entries older than this.
    pub since: Option<SystemTime>,
    /// Stop at the first entry newer than this, as Docker does (when
    /// following: also once the clock passes it).
    pub until: Option<SystemTime>,
    /// Prefix each line with its time in [`LogReader::write_raw_to`].
    pub timestamps: bool,
    /// Include standard output.
    pub stdout: bool,
    /// Include standard error.
    pub stderr: bool,
    /// After the last entry, wait for more until the [`Stop`] condition.
    pub follow: bool,
}

impl Default for ReadOptions {
    /// Everything, both streams, no follow.
    fn default() -> Self {
        Self {
            tail: None,
            since: None,
            until: None,
            timestamps: false,
            stdout: true,
            stderr: true,
            follow: false,
        }
    }
}

impl ReadOptions {
    fn wants(&self, entry: &Entry) -> Wanted {
        let stream = match entry.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        if self.until.is_some_and(|until| entry.time > until) {
            Wanted::Past
        } else if !stream || self.since.is_some_and(|since| entry.time < since) {
            Wanted::No
        } else {
            Wanted::Yes
        }
    }
}

/// Whether an entry is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Yes,
    No,
    /// After `until`: reading ends here.
    Past,
}

/// When a following reader stops waiting for new entries. Before it stops it
/// reads what was written up to then, so the condition should hold only
/// after the writer is done: the shim's exit (it flushes first), not the
/// container's.
pub enum Stop {
    /// Follow until the files are gone (the container was removed).
    Never,
    /// Stop once this descriptor is readable: a pidfd of the shim, the read
    /// end of a pipe whose writer closes at exit, an eventfd.
    WhenReadable(OwnedFd),
    /// Stop once this returns true. It is checked whenever the reader wakes,
    /// and at least every 100 ms.
    When(Box<dyn FnMut() -> bool + Send>),
}

impl fmt::Debug for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Never => f.write_str("Never"),
            Stop::WhenReadable(fd) => f.debug_tuple("WhenReadable").field(fd).finish(),
            Stop::When(_) => f.write_str("When(..)"),
        }
    }
}

/// How often a closure [`Stop`], an `until` time or a directory without
/// inotify is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How much of a file is read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A line longer than this is not one the writer made; it is skipped.
const MAX_ENCODED_LINE: usize = 1 << 20;

/// A file by identity, which survives renames.
type FileId = (u64, u64);

fn file_id(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// An open log file in the reader.
#[derive(Debug)]
struct OpenLog {
    file: File,
    id: FileId,
    /// The name it had when opened, for errors.
    path: PathBuf,
    /// Renamed away by a rotation: nothing more will be appended.
    is_final: bool,
}

/// Opens the log files of `id`, newest first, stopping before the file
/// `stop_at` (which the caller already has).
///
/// A rotation moves every file one number up, the way the walk goes, so a
/// walk that overlaps one rotation meets a file twice at most (skipped by
/// identity) and never sees them out of order. Two rotations during one walk
/// could show a newer file after an older one, so the walk is bracketed by the
/// identities of the current file and `.1`, and done again when they changed.
/// (The pair, because a rotation goes through states where either is missing;
/// no two of them are alike.)
fn open_newest_first(
    dir: &Path,
    id: &str,
    stop_at: Option<FileId>,
) -> Result<Vec<OpenLog>, LogError> {
    /// A writer rotating faster than a walk completes this many times over is
    /// not one this crate runs; the last walk is used as it is.
    const ATTEMPTS: usize = 1000;
    let (current, first) = (numbered_path(dir, id, 0), numbered_path(dir, id, 1));
    let identity = |path: &Path| fs::metadata(path).ok().map(|meta| file_id(&meta));
    let witness = || (identity(&current), identity(&first));
    let mut attempt = 0;
    loop {
        let before = witness();
        let files = walk_newest_first(dir, id, stop_at)?;
        attempt += 1;
        if witness() == before || attempt >= ATTEMPTS {
            return Ok(files);
        }
        std::thread::yield_now();
    }
}

/// One walk of [`open_newest_first`].
fn walk_newest_first(
    dir: &Path,
    id: &str,
    stop_at: Option<FileId>,
) -> Result<Vec<OpenLog>, LogError> {
    let highest = rotated_numbers(dir, id)?.last().copied().unwrap_or(0);
    let mut files: Vec<OpenLog> = Vec::new();
    // One past the highest: a file renamed onto it while listing.
    for n in 0..=highest.saturating_add(1) {
        let path = numbered_path(dir, id, n);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogError::Open { path, source }),
        };
        let meta = file.metadata().map_err(|source| LogError::Read {
            path: path.clone(),
            source,
        })?;
        let this = file_id(&meta);
        if Some(this) == stop_at {
            break;
        }
        if files.iter().any(|f| f.id == this) {
            continue;
        }
        files.push(OpenLog {
            file,
            id: this,
            path,
            is_final: n > 0,
        });
    }
    Ok(files)
}

/// The line's JSON, as Docker's json-file driver writes it; other fields
/// (`attrs`) are ignored.
#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// An entry from one line of a log file, or `None` when the line is not one.
fn parse_line(line: &[u8]) -> Option<Entry> {
    let raw: RawEntry<'_> = serde_json::from_slice(line).ok()?;
    let stream = match raw.stream.as_ref() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    Some(Entry {
        stream,
        time: parse_datetime(&raw.time)?,
        bytes: raw.log.into_owned().into_bytes(),
    })
}

/// Waits for changes in the log directory with inotify.
#[derive(Debug)]
struct Watcher {
    fd: OwnedFd,
    /// `<id>-json.log`: events for other names are not ours.
    prefix: Vec<u8>,
}

impl Watcher {
    fn new(dir: &Path, id: &str) -> io::Result<Self> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::MODIFY
                | inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::MOVED_FROM
                | inotify::WatchFlags::DELETE
                | inotify::WatchFlags::DELETE_SELF
                | inotify::WatchFlags::MOVE_SELF,
        )?;
        Ok(Self {
            fd,
            prefix: format!("{id}-json.log").into_bytes(),
        })
    }

    /// Reads the pending events; true when one may concern our files.
    fn drain(&self) -> io::Result<bool> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut events = inotify::Reader::new(&self.fd, &mut buf);
        let mut relevant = false;
        loop {
            match events.next() {
                Ok(event) => {
                    relevant |= event
                        .file_name()
                        .is_none_or(|name| name.to_bytes().starts_with(&self.prefix))
                        || event.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW);
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(relevant),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What one step of reading produced.
#[derive(Debug)]
enum Step {
    Entry(Entry),
    /// At the end for now; following, so wait.
    Idle,
    /// Nothing more.
    Done,
}

/// Reads a container's log entries oldest first across the rotated files.
///
/// Files are opened as the reader starts, so a rotation while reading loses
/// nothing that was there. A line that does not parse (one torn by a crash,
/// garbage) is skipped; an unfinished last line is left for later when
/// following, skipped otherwise.
///
/// Following, the reader keeps its file open across rotations: at the end of
/// the current file it checks whether `<id>-json.log` is still that file and
/// if not, finishes the old one and goes on with the files that came after
/// it. It sleeps in `poll(2)` on an inotify watch of the directory (or wakes
/// every 100 ms when inotify is unavailable) and the [`Stop`] descriptor.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    id: String,
    base: PathBuf,
    options: ReadOptions,
    stop: Stop,
    watcher: Option<Watcher>,
    current: Option<OpenLog>,
    queue: VecDeque<OpenLog>,
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
    /// Dropping a line too long to be ours, up to its newline.
    skipping: bool,
    /// The stop condition held: read to the end, then finish.
    stopping: bool,
    done: bool,
}

impl LogReader {
    /// Opens the log of container `id` in `dir` for reading. With `tail`, finds
    /// where the last entries start by reading backwards from the end.
    pub fn open(dir: &Path, id: &str, options: ReadOptions) -> Result<Self, LogError> {
        check_id(id)?;
        // Watch before listing, so nothing written in between is missed.
        let watcher = if options.follow {
            match Watcher::new(dir, id) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    debug!(dir = %dir.display(), %error, "inotify unavailable, polling the log directory");
                    None
                }
            }
        } else {
            None
        };
        let mut files = open_newest_first(dir, id, None)?;
        files.reverse();
        if let Some(tail) = options.tail
            && !files.is_empty()
        {
            let (index, offset) = find_tail_start(&files, tail, &options)?;
            files.drain(..index);
            if let Some(first) = files.first_mut() {
                seek_to(first, offset)?;
            }
        }
        let mut queue = VecDeque::from(files);
        let current = queue.pop_front();
        Ok(Self {
            dir: dir.to_owned(),
            id: id.to_owned(),
            base: log_path(dir, id),
            options,
            stop: Stop::Never,
            watcher,
            current,
            queue,
            buf: Vec::new(),
            start: 0,
            skipping: false,
            stopping: false,
            done: false,
        })
    }

    /// Sets when a following reader stops (by default it follows until the
    /// log directory is removed).
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// The next entry, waiting for one when following; `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, LogError> {
        loop {
            match self.step()? {
                Step::Entry(entry) => return Ok(Some(entry)),
                Step::Done => return Ok(None),
                Step::Idle => self.wait()?,
            }
        }
    }

    /// Copies every entry's output to `stdout` or `stderr` by its stream, with
    /// the time in front when [`ReadOptions::timestamps`] is set, flushing both
    /// before each wait. Returns how many entries were written.
    pub fn write_raw_to(
        &mut self,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<u64, LogError> {
        let mut count = 0;
        let output = |source| LogError::Output { source };
        loop {
            match self.step()? {
                Step::Entry(entry) => {
                    let out: &mut dyn Write = match entry.stream {
                        Stream::Stdout => &mut *stdout,
                        Stream::Stderr => &mut *stderr,
                    };
                    entry
                        .write_to(out, self.options.timestamps)
                        .map_err(output)?;
                    count += 1;
                }
                Step::Idle => {
                    stdout.flush().map_err(output)?;
                    stderr.flush().map_err(output)?;
                    self.wait()?;
                }
                Step::Done => {
                    stdout.flush().map_err(output)?;
                    stderr.flush().map_err(output)?;
                    return Ok(count);
                }
            }
        }
    }

    /// The next complete line in the buffer, if any.
    fn buffered_line(&mut self) -> Option<(usize, usize)> {
        loop {
            let unread = &self.buf[self.start..];
            let i = find_newline(unread)?;
            let line = (self.start, self.start + i);
            self.start += i + 1;
            if self.skipping {
                self.skipping = false;
                continue;
            }
            return Some(line);
        }
    }

    fn step(&mut self) -> Result<Step, LogError> {
        loop {
            if self.done {
                return Ok(Step::Done);
            }
            while let Some((from, to)) = self.buffered_line() {
                let Some(entry) = parse_line(&self.buf[from..to]) else {
                    continue;
                };
                match self.options.wants(&entry) {
                    Wanted::Yes => return Ok(Step::Entry(entry)),
                    Wanted::No => {}
                    Wanted::Past => {
                        self.done = true;
                        return Ok(Step::Done);
                    }
                }
            }
            let Some(current) = &mut self.current else {
                if let Some(next) = self.queue.pop_front() {
                    self.switch_to(Some(next));
                    continue;
                }
                if !self.options.follow {
                    self.done = true;
                    return Ok(Step::Done);
                }
                // No file yet: look for one.
                let found = open_newest_first(&self.dir, &self.id, None)?;
                if found.is_empty() {
                    return self.idle();
                }
                self.queue.extend(found.into_iter().rev());
                continue;
            };
            // Keep the unfinished line, make room, read.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.len() > MAX_ENCODED_LINE {
                self.buf.clear();
                self.skipping = true;
            }
            let len = self.buf.len();
            self.buf.resize(len + READ_CHUNK, 0);
            let read = loop {
                match current.file.read(&mut self.buf[len..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            let read = read.map_err(|source| LogError::Read {
                path: current.path.clone(),
                source,
            });
            self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
            if read? > 0 {
                continue;
            }
            // End of the current file. Anything queued is newer, so this one
            // was renamed away before the queue was listed: it is complete.
            if let Some(next) = self.queue.pop_front() {
                self.switch_to(Some(next));
                continue;
            }
            if !self.options.follow {
                self.done = true;
                return Ok(Step::Done);
            }
            // Following: the file stays current until a newer one is found,
            // so a listing is always relative to it and never starts over.
            let rotated = current.is_final
                || match fs::metadata(&self.base) {
                    Ok(meta) => file_id(&meta) != current.id,
                    // Mid-rotation, or removed: the watch says when it is back.
                    Err(_) => false,
                };
            if rotated {
                let newer = open_newest_first(&self.dir, &self.id, Some(current.id))?;
                if !newer.is_empty() {
                    // The old file was renamed before its successor was made,
                    // so it is complete: one more read to its end, then on.
                    current.is_final = true;
                    self.queue.extend(newer.into_iter().rev());
                    continue;
                }
            }
            return self.idle();
        }
    }

    /// Moves to the next file, dropping what is left of an unfinished line (a
    /// file that will not grow again ends with a torn line at most).
    fn switch_to(&mut self, next: Option<OpenLog>) {
        self.buf.clear();
        self.start = 0;
        self.skipping = false;
        self.current = next;
    }

    fn idle(&mut self) -> Result<Step, LogError> {
        if self.stopping {
            self.done = true;
            return Ok(Step::Done);
        }
        Ok(Step::Idle)
    }

    /// True when the caller's stop condition or `until` holds.
    fn should_stop(&mut self, stop_ready: bool) -> bool {
        if stop_ready
            || self
                .options
                .until
                .is_some_and(|until| SystemTime::now() > until)
        {
            return true;
        }
        match &mut self.stop {
            Stop::When(check) => check(),
            Stop::Never | Stop::WhenReadable(_) => false,
        }
    }

    /// Sleeps until the files may have changed or the reader should stop.
    fn wait(&mut self) -> Result<(), LogError> {
        let wait_err = |dir: &Path, source| LogError::Wait {
            path: dir.to_owned(),
            source,
        };
        if self.should_stop(false) {
            self.stopping = true;
            return Ok(());
        }
        loop {
            let periodic = self.watcher.is_none()
                || self.options.until.is_some()
                || matches!(self.stop, Stop::When(_));
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(POLL_INTERVAL.subsec_nanos()),
            };
            let (changed, stop_ready) = {
                let mut fds = Vec::with_capacity(2);
                if let Some(watcher) = &self.watcher {
                    fds.push(PollFd::new(&watcher.fd, PollFlags::IN));
                }
                if let Stop::WhenReadable(fd) = &self.stop {
                    fds.push(PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::IN));
                }
                match rustix::event::poll(&mut fds, periodic.then_some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(wait_err(&self.dir, e.into())),
                }
                let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
                let watch_ready = self.watcher.is_some() && fds.first().is_some_and(ready);
                let stop_ready =
                    matches!(self.stop, Stop::WhenReadable(_)) && fds.last().is_some_and(ready);
                (watch_ready, stop_ready)
            };
            if self.should_stop(stop_ready) {
                self.stopping = true;
                return Ok(());
            }
            let Some(watcher) = &self.watcher else {
                // Polling: look at the files every interval.
                if !self.dir.exists() {
                    self.stopping = true;
                }
                return Ok(());
            };
            if changed && watcher.drain().map_err(|e| wait_err(&self.dir, e))? {
                if !self.dir.exists() {
                    // The container's log directory was removed.
                    self.stopping = true;
                }
                return Ok(());
            }
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<Entry, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

/// Positions `log` at `offset` for forward reading.
fn seek_to(log: &mut OpenLog, offset: u64) -> Result<(), LogError> {
    log.file
        .seek(io::SeekFrom::Start(offset))
        .map(drop)
        .map_err(|source| LogError::Read {
            path: log.path.clone(),
            source,
        })
}

/// Where the last `tail` entries selected by `options` start: the index in
/// `files` (oldest first) and the byte offset in that file. Reads backwards
/// from the end, a chunk at a time, parsing only the lines it passes. A
/// trailing piece without a newline is not an entry (yet) and not counted.
fn find_tail_start(
    files: &[OpenLog],
    tail: usize,
    options: &ReadOptions,
) -> Result<(usize, u64), LogError> {
    let mut remaining = tail;
    for (index, log) in files.iter().enumerate().rev() {
        let read_err = |source| LogError::Read {
            path: log.path.clone(),
            source,
        };
        let len = log.file.metadata().map_err(read_err)?.len();
        // `buf` holds the file's bytes from `end - buf.len()` to `end`; every
        // line from `end` on has been counted.
        let mut end = len;
        let mut buf: Vec<u8> = Vec::new();
        // Whether `end` is just past a newline, that is `buf` ends a line.
        let mut at_line_end = false;
        loop {
            let search = if at_line_end {
                &buf[..buf.len() - 1]
            } else {
                &buf[..]
            };
            let buf_start = end - buf.len() as u64;
            let newline = search.iter().rposition(|b| *b == b'\n');
            if newline.is_none() && buf_start > 0 {
                let from = buf_start.saturating_sub(READ_CHUNK as u64);
                let mut chunk = vec![0u8; usize::try_from(buf_start - from).unwrap_or(READ_CHUNK)];
                log.file.read_exact_at(&mut chunk, from).map_err(read_err)?;
                chunk.extend_from_slice(&buf);
                buf = chunk;
                continue;
            }
            // The line in `buf[line_start..]` is complete when `at_line_end`.
            let line_start = newline.map_or(0, |p| p + 1);
            if at_line_end {
                let line = &buf[line_start..buf.len() - 1];
                if parse_line(line).is_some_and(|entry| options.wants(&entry) == Wanted::Yes) {
                    remaining = remaining.saturating_sub(1);
                }
            }
            end = buf_start + line_start as u64;
            buf.truncate(line_start);
            at_line_end = newline.is_some();
            if remaining == 0 && (at_line_end || end == 0) {
                return Ok((index, end));
            }
            if newline.is_none() {
                break;
            }
        }
    }
    Ok((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn escaped(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        escape_json(&mut out, bytes);
        String::from_utf8(out).expect("escaped JSON is UTF-8")
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// The number in the first entry of each file, in the order given.
    fn first_numbers(files: &mut [OpenLog]) -> Vec<u64> {
        files
            .iter_mut()
            .filter_map(|log| {
                let mut text = String::new();
                log.file.read_to_string(&mut text).expect("read a log file");
                let entry = parse_line(text.lines().next()?.as_bytes())?;
                String::from_utf8_lossy(&entry.bytes).trim().parse().ok()
            })
            .collect()
    }

    #[test]
    fn listing_keeps_the_order_while_files_rotate_under_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = "a".repeat(64);
        // One entry per file: every write rotates.
        let options = LogOptions {
            max_size: 1,
            max_files: 32,
        };
        let mut writer = LogWriter::open(dir.path(), &id, options).expect("open the writer");
        writer
            .write(Stream::Stdout, b"0\n", SystemTime::now())
            .expect("write");
        writer.flush().expect("flush");
        let done = Arc::new(AtomicBool::new(false));
        let writing = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for n in 1..1_500u64 {
                    let line = format!("{n}\n");
                    writer
                        .write(Stream::Stdout, line.as_bytes(), SystemTime::now())
                        .expect("write");
                }
                writer.flush().expect("flush");
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut walks = 0;
        while !done.load(Ordering::SeqCst) {
            let mut files = open_newest_first(dir.path(), &id, None).expect("list");
            let numbers = first_numbers(&mut files);
            assert!(
                numbers.windows(2).all(|w| w[0] > w[1]),
                "newest first, got {numbers:?}"
            );
            walks += 1;
        }
        writing.join().expect("the writer thread");
        assert!(walks > 0);
    }

    #[test]
    fn escapes_like_go_encoding_json() {
        assert_eq!(escaped(b"plain text"), "plain text");
        assert_eq!(escaped(b"say \"hi\"\\"), r#"say \"hi\"\\"#);
        assert_eq!(escaped(b"a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(
            escaped(b"\x00\x01\x1b[0m\x1f\x7f"),
            "\\u0000\\u0001\\u001b[0m\\u001f\x7f"
        );
        assert_eq!(escaped("héllo 日本 🦀".as_bytes()), "héllo 日本 🦀");
        // Each byte that does not start a valid sequence is one U+FFFD, as Go's
        // DecodeRune returns (RuneError, 1) for it.
        assert_eq!(escaped(b"a\xffb"), r"a\ufffdb");
        assert_eq!(escaped(b"\xe2\x82"), r"\ufffd\ufffd");
        assert_eq!(escaped(b"\xed\xa0\x80"), r"\ufffd\ufffd\ufffd");
        assert_eq!(escaped(b"\xc0\xaf"), r"\ufffd\ufffd");
        assert_eq!(escaped(b"\xf4\x90\x80\x80"), r"\ufffd\ufffd\ufffd\ufffd");
        assert_eq!(escaped(b"<&>"), "<&>");
    }

    #[test]
    fn plain_word_check_agrees_with_the_byte_rule() {
        for b in 0..=255u8 {
            let plain = (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
            for pos in 0..8 {
                let mut word = *b"abcdefgh";
                word[pos] = b;
                assert_eq!(
                    is_plain_word(u64::from_le_bytes(word)),
                    plain,
                    "byte {b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn finds_the_first_newline() {
        assert_eq!(find_newline(b""), None);
        assert_eq!(find_newline(b"abc"), None);
        assert_eq!(find_newline(b"0123456789\n\n"), Some(10));
        assert_eq!(find_newline(b"\n0123456789"), Some(0));
        assert_eq!(find_newline(b"0123456\n"), Some(7));
        assert_eq!(find_newline(&[b'x'; 100]), None);
    }

    #[test]
    fn formats_times_as_rfc3339_utc_with_nanoseconds() {
        let text = |t| String::from_utf8(format_time(t).to_vec()).expect("ASCII");
        assert_eq!(text(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            text(at(1_795_860_211, 123_456_789)),
            "2026-11-28T10:03:31.123456789Z"
        );
        assert_eq!(text(at(951_782_400, 5)), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            text(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31T23:59:59.500000000Z"
        );
        assert_eq!(text(at(u64::MAX >> 2, 0)), "9999-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn cached_formatter_matches_the_plain_one() {
        let mut cache = TimeCache::new();
        for t in [
            at(100, 1),
            at(100, 999_999_999),
            at(101, 0),
            at(5, 5),
            at(101, 7),
        ] {
            assert_eq!(cache.format(t), format_time(t));
        }
    }

    #[test]
    fn parses_rfc3339_and_its_prefixes() {
        let parse = |s| parse_datetime(s);
        assert_eq!(
            parse("2026-11-28T10:03:31.123456789Z"),
            Some(at(1_795_860_211, 123_456_789))
        );
        assert_eq!(
            parse("2026-11-28T10:03:31.5Z"),
            Some(at(1_795_860_211, 500_000_000))
        );
        assert_eq!(
            parse("2026-11-28T11:03:31+01:00"),
            Some(at(1_795_860_211, 0))
        );
        assert_eq!(parse("2026-11-28T10:03:31"), Some(at(1_795_860_211, 0)));
        assert_eq!(parse("2026-11-28T10:03Z"), Some(at(1_795_860_180, 0)));
        assert_eq!(parse("2026-11-28"), Some(at(1_795_824_000, 0)));
        assert_eq!(
            parse("2026-11-28T10:03:31.1234567891Z"),
            Some(at(1_795_860_211, 123_456_789))
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-29",
            "2026-11-28T24:00",
            "2026-11-28T10:03:31.Z",
            "2026-11-28 junk",
            "26-11-28",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_go_durations() {
        let d = |s| parse_go_duration(s);
        assert_eq!(d("10m"), Some((false, Duration::from_secs(600))));
        assert_eq!(d("1h30m"), Some((false, Duration::from_secs(5400))));
        assert_eq!(d("1.5h"), Some((false, Duration::from_secs(5400))));
        assert_eq!(d("-300ms"), Some((true, Duration::from_millis(300))));
        assert_eq!(d("2µs3ns"), Some((false, Duration::from_nanos(2003))));
        assert_eq!(d(".5s"), Some((false, Duration::from_millis(500))));
        for bad in ["", "10", "m", "1x", "1.s.", "-", "3000000h"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_filters_take_dockers_three_forms() {
        let now = at(1_795_860_211, 0);
        let parse = |s| parse_time_filter(s, now).ok();
        assert_eq!(parse("10m"), Some(at(1_795_859_611, 0)));
        assert_eq!(parse("-1h"), Some(at(1_795_863_811, 0)));
        assert_eq!(parse("2026-11-28T10:03:31Z"), Some(now));
        assert_eq!(parse("1795860211"), Some(now));
        assert_eq!(parse("1795860211.25"), Some(at(1_795_860_211, 250_000_000)));
        assert_eq!(parse("0"), Some(UNIX_EPOCH));
        for bad in ["", "yesterday", "12abc", "1.2.3", "2026-99-99"] {
            assert!(parse_time_filter(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_parse_dockers_log_opts() {
        let parse = |opts: &[&str]| LogOptions::parse(opts);
        assert_eq!(parse(&[]).ok(), Some(LogOptions::default()));
        assert_eq!(
            parse(&["max-size=10m", "max-file=3"]).ok(),
            Some(LogOptions {
                max_size: 10_000_000,
                max_files: 3
            })
        );
        assert_eq!(
            parse(&["max-size=1.5k"]).ok().map(|o| o.max_size),
            Some(1500)
        );
        assert_eq!(
            parse(&["max-size=2 MiB"]).ok().map(|o| o.max_size),
            Some(2_000_000)
        );
        assert_eq!(parse(&["max-size=512"]).ok().map(|o| o.max_size), Some(512));
        assert_eq!(
            parse(&["max-size=-1"]).ok().map(|o| o.max_size),
            Some(LogOptions::UNLIMITED)
        );
        assert!(parse(&["compress=false"]).is_ok());
        for bad in [
            "max-size=0",
            "max-size=10x",
            "max-size=",
            "max-size=.",
            "max-size=-2",
            "max-file=0",
            "max-file=x",
            "max-size",
        ] {
            assert!(
                matches!(parse(&[bad]), Err(LogError::InvalidOption { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&["compress=true"]),
            Err(LogError::UnsupportedOption { .. })
        ));
        assert!(matches!(
            parse(&["tag={{.Name}}"]),
            Err(LogError::UnsupportedOption { .. })
        ));
        assert!(matches!(
            parse(&["max-buffer-size=4m"]),
            Err(LogError::UnknownOption { .. })
        ));
    }

    #[test]
    fn long_lines_are_cut_before_a_straddling_character() {
        let mut line = vec![b'a'; MAX_LINE - 1];
        line.extend_from_slice("é".as_bytes());
        line.push(b'b');
        assert_eq!(line_cut(&line), MAX_LINE - 1);
        let plain = vec![b'a'; MAX_LINE + 1];
        assert_eq!(line_cut(&plain), MAX_LINE);
        // Continuation bytes with no lead: not a character, cut where it falls.
        let mut junk = vec![b'a'; MAX_LINE - 2];
        junk.extend_from_slice(&[0x80; 4]);
        assert_eq!(line_cut(&junk), MAX_LINE);
    }

    #[test]
    fn ids_that_are_not_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(check_id(bad), Err(LogError::InvalidId { .. })),
                "{bad:?}"
            );
        }
        assert!(check_id("3f2a9c").is_ok());
    }

    #[test]
    fn lines_parse_into_entries_and_junk_does_not() {
        let entry = parse_line(br#"{"log":"hi\n","stream":"stderr","time":"2026-11-28T10:03:31.123456789Z","attrs":{"a":"b"}}"#);
        assert_eq!(
            entry,
            Some(Entry {
                stream: Stream::Stderr,
                time: at(1_795_860_211, 123_456_789),
                bytes: b"hi\n".to_vec()
            })
        );
        for bad in [
            &b"{\"log\":\"hi"[..],
            b"",
            b"null",
            br#"{"log":"x","stream":"stdin","time":"2026-11-28T10:03:31Z"}"#,
            br#"{"log":"x","stream":"stdout","time":"soon"}"#,
        ] {
            assert_eq!(parse_line(bad), None);
        }
    }

    proptest! {
        #[test]
        fn civil_conversion_round_trips(days in -719_528i64..2_932_896) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn escaped_output_is_json_that_decodes_to_the_lossy_text(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = format!("\"{}\"", escaped(&bytes));
            let decoded: String = serde_json::from_str(&text).expect("valid JSON");
            // Both replace invalid bytes with U+FFFD, Rust per maximal subpart and
            // Go per byte, so compare with the replacement characters removed.
            let lossy = String::from_utf8_lossy(&bytes).replace('\u{fffd}', "");
            prop_assert_eq!(decoded.replace('\u{fffd}', ""), lossy);
        }

        #[test]
        fn formatted_times_parse_back(secs in 0u64..253_402_300_799, nanos in 0u32..1_000_000_000) {
            let t = at(secs, nanos);
            let text = String::from_utf8(format_time(t).to_vec()).expect("ASCII");
            prop_assert_eq!(parse_datetime(&text), Some(t));
        }

        #[test]
        fn time_parsers_never_panic(s in "\\PC*") {
            let _ = parse_time_filter(&s, UNIX_EPOCH);
            let _ = parse_max_size(&s);
        }
    }
}
