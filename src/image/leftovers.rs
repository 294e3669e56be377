//! What writers killed halfway leave behind: temp files and directories, how
//! to tell an abandoned one from one a live writer still fills, and sweeping
//! the abandoned ones away.
//!
//! Every temp name made by [`temp_name`] carries its writer's pid:
//! `<prefix>-<pid>-<counter>-<nanos>`. An entry is abandoned when no process
//! has that pid any more (or only a zombie does), or when the process that has
//! it now started after the entry was last modified, so the pid was reused.
//! An entry whose writer still runs is never touched, however old it is: a big
//! download over a slow link may take hours, and a clock age alone cannot tell
//! it from a dead one. This assumes every writer of one state root runs in the
//! same PID namespace, as the processes of one host do.
//!
//! Sweeping never removes an entry whose name was not made by [`temp_name`].

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::debug;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique temp name, `<prefix>-<pid>-<counter>-<nanos>`: the pid says whose
/// it is, the process-wide counter and the clock keep threads and processes
/// from colliding.
pub fn temp_name(prefix: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// The pid in a name made by [`temp_name`] (with anything before its prefix).
pub fn owner(name: &str) -> Option<u32> {
    let mut fields = name.rsplitn(4, '-');
    let nanos = fields.next()?;
    let counter = fields.next()?;
    let pid = fields.next()?;
    fields.next()?;
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(numeric(nanos) && numeric(counter)) {
        return None;
    }
    pid.parse().ok().filter(|pid| *pid > 0)
}

/// True when `path` (a temp entry named by [`temp_name`]) belongs to no
/// running process. Entries with other names, and entries that cannot be
/// examined, are not abandoned.
pub fn is_abandoned(path: &Path) -> bool {
    let Some(pid) = path.file_name().and_then(|n| n.to_str()).and_then(owner) else {
        return false;
    };
    if pid == std::process::id() {
        return false;
    }
    let Ok(modified) = fs::symlink_metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    match process_start(pid) {
        Liveness::Gone => true,
        Liveness::Started(start) => start > modified + START_SLACK,
        Liveness::Unknown => false,
    }
}

/// Removes the abandoned temp entries (files or directory trees) directly in
/// `dir` whose names pass `wanted`; returns how many went. Best effort: an
/// entry that cannot be removed is left for the next sweep.
pub fn sweep(dir: &Path, wanted: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(&wanted) {
            continue;
        }
        let path = entry.path();
        if !is_abandoned(&path) {
            continue;
        }
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match gone {
            Ok(()) => {
                debug!(path = %path.display(), "removed an abandoned temp entry");
                removed += 1;
            }
            Err(error) => {
                debug!(path = %path.display(), %error, "cannot remove an abandoned temp entry")
            }
        }
    }
    removed
}

/// `/proc/stat`'s boot time has whole seconds, so a start time computed from
/// it may be up to a second early; a process counts as started after an
/// entry only beyond that.
const START_SLACK: Duration = Duration::from_secs(1);

enum Liveness {
    /// No process, or a zombie: nothing will write to the entry again.
    Gone,
    /// A process runs with the pid; it started then.
    Started(SystemTime),
    /// `/proc` could not tell.
    Unknown,
}

/// Whether `pid` runs, and since when, from `/proc/<pid>/stat` (proc(5):
/// field 3 is the state, field 22 the start time in clock ticks after boot).
fn process_start(pid: u32) -> Liveness {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Liveness::Gone,
        Err(_) => return Liveness::Unknown,
    };
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and parentheses included: fields after it follow the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Liveness::Unknown;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&("Z" | "X" | "x"))) {
        return Liveness::Gone;
    }
    let (Some(ticks), Some(boot)) = (
        fields.get(19).and_then(|t| t.parse::<u64>().ok()),
        boot_time(),
    ) else {
        return Liveness::Unknown;
    };
    let hz = clock_ticks();
    let since_boot = Duration::from_secs(ticks / hz)
        + Duration::from_nanos((ticks % hz).saturating_mul(1_000_000_000) / hz);
    Liveness::Started(boot + since_boot)
}

/// When the system booted (`btime` in `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    static BOOT: OnceLock<Option<SystemTime>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let secs = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), read from the
/// `AT_CLKTCK` entry of our auxiliary vector (getauxval(3)) so no libc call
/// is needed; 100, its value on every common Linux port, when unreadable.
fn clock_ticks() -> u64 {
    const AT_CLKTCK: usize = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let auxv = fs::read("/proc/self/auxv").unwrap_or_default();
        let word = |bytes: &[u8]| <[u8; WORD]>::try_from(bytes).ok().map(usize::from_ne_bytes);
        auxv.chunks_exact(2 * WORD)
            .find_map(|pair| {
                let (key, value) = pair.split_at(WORD);
                (word(key) == Some(AT_CLKTCK))
                    .then(|| word(value))
                    .flatten()
            })
            .and_then(|hz| u64::try_from(hz).ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_owner() {
        let name = temp_name("blob");
        assert_eq!(owner(&name), Some(std::process::id()));
        assert_eq!(
            owner(&format!(".tags.json-{}", &name["blob-".len()..])),
            Some(std::process::id())
        );
        assert_eq!(owner(".tmp-0123abcd-42-7-99"), Some(42));
        assert_eq!(owner("blob"), None);
        assert_eq!(owner("a-b-c"), None);
        assert_eq!(owner("x-12-y-3"), None);
        assert_eq!(owner("x-0-1-2"), None, "pid 0 is no process");
    }

    #[test]
    fn entries_of_live_writers_are_kept_and_of_dead_ones_swept() {
        let dir = tempfile::tempdir().unwrap();
        // Ours: alive.
        let mine = dir.path().join(temp_name("blob"));
        fs::write(&mine, b"partial").unwrap();
        // A child that has exited (and been reaped): its pid runs no more.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let dead = dir.path().join(format!("blob-{dead_pid}-0-0"));
        fs::write(&dead, b"partial").unwrap();
        let dead_dir = dir.path().join(format!(".tmp-abc-{dead_pid}-0-0"));
        fs::create_dir_all(dead_dir.join("diff/sub")).unwrap();
        // pid 1 runs and started long before this file was written: alive.
        let init = dir.path().join("blob-1-0-0");
        fs::write(&init, b"partial").unwrap();
        // Not a temp name at all.
        let other = dir.path().join("keep-me");
        fs::write(&other, b"x").unwrap();

        assert!(!is_abandoned(&mine));
        assert!(is_abandoned(&dead));
        assert!(!is_abandoned(&init));
        assert_eq!(sweep(dir.path(), |_| true), 2);
        assert!(mine.exists() && init.exists() && other.exists());
        assert!(!dead.exists() && !dead_dir.exists());
    }

    #[test]
    fn a_reused_pid_does_not_keep_an_older_entry() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 is alive, but an entry last written before it started (the
        // epoch) cannot be its own.
        let old = dir.path().join("blob-1-0-0");
        fs::write(&old, b"partial").unwrap();
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(1))
            .unwrap();
        assert!(is_abandoned(&old));
    }

    #[test]
    fn the_start_of_this_process_is_in_the_past() {
        let Liveness::Started(start) = process_start(std::process::id()) else {
            panic!("this process runs");
        };
        assert!(start <= SystemTime::now() + START_SLACK);
    }
}
