//! The watch directory (`stack daemon --watch-dir`): files added, edited
//! in place, rewritten atomically, saved broken, deleted (and re-created
//! within the grace), project directories swapped by a symlink, files
//! present when the daemon starts, `--keep-on-delete`, and two files with
//! one name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::host::Host;
use crate::stacks::{containers, eventually};

/// How long a change may take to show.
const LIMIT: Duration = Duration::from_secs(30);

/// A host whose daemon watches `stacks.d` in a directory of the test's.
struct Watched {
    host: Option<Host>,
    dir: tempfile::TempDir,
}

impl Watched {
    fn new(flags: &[&str]) -> Watched {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path().join("stacks.d");
        fs::create_dir(&watch).unwrap();
        let mut args = vec!["--watch-dir", watch.to_str().unwrap()];
        args.extend_from_slice(flags);
        let host = Host::with_daemon(&args);
        Watched {
            host: Some(host),
            dir,
        }
    }

    fn host(&self) -> &Host {
        self.host.as_ref().unwrap()
    }

    /// The watched directory.
    fn dir(&self) -> PathBuf {
        self.dir.path().join("stacks.d")
    }

    /// Names to ids of the containers.
    fn ids(&self) -> BTreeMap<String, String> {
        containers(self.host())
            .into_iter()
            .map(|(name, (id, _))| (name, id))
            .collect()
    }

    /// Waits until `names` all run; their ids.
    fn running(&self, names: &[&str]) -> BTreeMap<String, String> {
        eventually(LIMIT, &format!("{names:?} running"), || {
            let now = containers(self.host());
            names
                .iter()
                .all(|n| now.get(*n).is_some_and(|(_, s)| s.starts_with("Up")))
        });
        self.ids()
    }

    /// Waits until container `name` runs with an id other than `old`.
    fn recreated(&self, name: &str, old: &str) -> String {
        eventually(LIMIT, &format!("{name} recreated"), || {
            containers(self.host())
                .get(name)
                .is_some_and(|(id, s)| id != old && s.starts_with("Up"))
        });
        self.ids()[name].clone()
    }

    fn status(&self, stack: &str) -> String {
        self.host().ok(&["status", stack])
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // The watching daemon first, and what would bring the stacks back
        // (registrations), so the host's cleanup removes containers that
        // nothing re-creates.
        let Some(host) = self.host.take() else { return };
        let root = host.root();
        let pid = host.daemon_pid();
        crate::stop_daemon(&root);
        // A daemon that did not stop in time still runs its stack loops,
        // which would re-create what the cleanup removes: killed (its
        // containers do not depend on it).
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !stat.is_empty() && !stat.contains(") Z ") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = fs::remove_dir_all(root.join("stacks"));
        let _ = fs::remove_file(root.join("watch-dir.json"));
        // The host removes what is left, but through a daemon it starts on
        // demand, which a loaded machine may start too slowly for one
        // command: try again until nothing is left.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let out = host.stack(&["ps", "-a", "-q", "--no-trunc"]);
            if !out.status.success() {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            if ids.trim().is_empty() {
                break;
            }
            for id in ids.lines() {
                let _ = host.stack(&["rm", "-f", id]);
            }
        }
        drop(host);
    }
}

/// Two services, `a` and `b`, sleeping `a` and `b` seconds; `name` when
/// given.
fn stack(name: Option<&str>, a: u32, b: u32) -> String {
    let mut text = String::new();
    if let Some(name) = name {
        text.push_str(&format!("name \"{name}\"\n"));
    }
    for (service, secs) in [("a", a), ("b", b)] {
        text.push_str(&format!(
            "service \"{service}\" {{\n    image \"bb\"\n    command \"sleep\" \"{secs}\"\n    network-mode \"none\"\n    stop-signal \"KILL\"\n}}\n"
        ));
    }
    text
}

/// Writes `path` the way git and editors replace a file: a temp file
/// renamed over it.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Points the symlink `link` at `target` atomically (a new link renamed
/// over the old one), as git worktree and Kubernetes ConfigMap swaps do.
fn swap_symlink(link: &Path, target: &str) {
    let tmp = link.with_file_name(".swap-tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    fs::rename(&tmp, link).unwrap();
}

/// The stack events so far, one JSON object a line.
fn stack_events(host: &Host) -> String {
    host.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        "0s",
        "--filter",
        "type=stack",
        "--format",
        "json",
    ])
}

#[test]
fn a_watched_file_comes_up_follows_its_edits_and_goes_after_the_grace() {
    let w = Watched::new(&["--watch-grace", "1s"]);
    let file = w.dir().join("web.kdl");
    fs::write(&file, stack(None, 1000, 1001)).unwrap();
    let first = w.running(&["web-a-1", "web-b-1"]);
    let ls = w.host().ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("web ") && l.contains("watch:web.kdl")),
        "{ls}"
    );
    // `down` of a watched stack would be undone at once: refused.
    let refusal = w.host().fails(&["down", "--stack", "web"]);
    assert!(refusal.contains("watch directory"), "{refusal}");
    assert_eq!(w.ids(), first, "a refused down changed containers");

    // Edited in place: only the edited service is recreated.
    fs::write(&file, stack(None, 1000, 2001)).unwrap();
    let b = w.recreated("web-b-1", &first["web-b-1"]);
    assert_eq!(w.ids()["web-a-1"], first["web-a-1"], "a was touched");

    // Rewritten by a rename: applies the same way.
    write_atomically(&file, &stack(None, 2000, 2001));
    let a = w.recreated("web-a-1", &first["web-a-1"]);
    assert_eq!(w.ids()["web-b-1"], b, "b was touched");
    let good = w.ids();

    // A broken save: nothing changes, the status and an event say where.
    write_atomically(
        &file,
        &stack(None, 2000, 2001).replace("sleep", "sleep\" ="),
    );
    eventually(LIMIT, "the error shows", || {
        w.status("web").contains("web.kdl:")
    });
    let status = w.status("web");
    assert!(
        status.contains("web.kdl:3:"),
        "no line and column: {status}"
    );
    let ls = w.host().ok(&["ls"]);
    assert!(ls.contains("web.kdl:3:"), "no line and column: {ls}");
    assert_eq!(w.ids(), good, "a broken file changed containers");
    let events = stack_events(w.host());
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"invalid\"") && l.contains("web.kdl:3:")),
        "no invalid event: {events}"
    );

    // The fix applies.
    write_atomically(&file, &stack(None, 2000, 3001));
    w.recreated("web-b-1", &b);
    assert_eq!(w.ids()["web-a-1"], a);
    assert!(!w.status("web").contains("last error"));

    // Deleted: gone after the grace.
    fs::remove_file(&file).unwrap();
    eventually(LIMIT, "the stack taken down", || w.ids().is_empty());
    eventually(LIMIT, "the stack unlisted", || {
        !w.host().ok(&["ls"]).contains("web")
    });
    assert!(
        stack_events(w.host())
            .lines()
            .any(|l| l.contains("\"down\"") && l.contains("web.kdl")),
        "no down event"
    );
}

#[test]
fn a_checkout_that_deletes_and_recreates_or_swaps_a_directory_keeps_the_stack() {
    let w = Watched::new(&["--watch-grace", "5s"]);
    let dir = w.dir();
    // A project directory reached through a symlink, as a checkout swaps it.
    for (version, b) in [(".v1", 1001), (".v2", 2001)] {
        fs::create_dir(dir.join(version)).unwrap();
        fs::write(dir.join(version).join("stack.kdl"), stack(None, 1000, b)).unwrap();
    }
    std::os::unix::fs::symlink(".v1", dir.join("blog")).unwrap();
    let first = w.running(&["blog-a-1", "blog-b-1"]);

    // The whole directory swapped: the new version applies.
    swap_symlink(&dir.join("blog"), ".v2");
    let b = w.recreated("blog-b-1", &first["blog-b-1"]);
    assert_eq!(w.ids()["blog-a-1"], first["blog-a-1"], "a was touched");
    // An edit inside the new directory is seen too.
    fs::write(dir.join(".v2/stack.kdl"), stack(None, 1000, 3001)).unwrap();
    let b = w.recreated("blog-b-1", &b);
    let before = w.ids();

    // Deleted, seen deleted, and back within the grace: nothing changes.
    fs::remove_file(dir.join("blog")).unwrap();
    eventually(LIMIT, "the deletion seen", || {
        w.status("blog").contains("down at:")
    });
    std::os::unix::fs::symlink(".v2", dir.join("blog")).unwrap();
    eventually(LIMIT, "the file seen back", || {
        !w.status("blog").contains("down at:")
    });
    assert_eq!(w.ids(), before, "a re-created file changed containers");

    // The same with a single file.
    let file = dir.join("mail.kdl");
    fs::write(&file, stack(None, 1000, 1001)).unwrap();
    w.running(&["mail-a-1", "mail-b-1"]);
    let before = w.ids();
    fs::remove_file(&file).unwrap();
    eventually(LIMIT, "the deletion seen", || {
        w.status("mail").contains("down at:")
    });
    fs::write(&file, stack(None, 1000, 1001)).unwrap();
    eventually(LIMIT, "the file seen back", || {
        !w.status("mail").contains("down at:")
    });
    // Past the time it was to go down, it still runs.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        assert_eq!(w.ids(), before, "a re-created file changed containers");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(w.ids()["blog-b-1"], b);
}

#[test]
fn files_added_or_removed_while_the_daemon_was_down_are_followed_at_start() {
    let mut w = Watched::new(&["--watch-grace", "1s"]);
    let dir = w.dir();
    fs::write(dir.join("one.kdl"), stack(None, 1000, 1001)).unwrap();
    let first = w.running(&["one-a-1", "one-b-1"]);
    crate::stop_daemon(&w.host().root());
    // Containers outlive the daemon; the directory changes meanwhile.
    fs::remove_file(dir.join("one.kdl")).unwrap();
    fs::create_dir(dir.join("two")).unwrap();
    fs::write(dir.join("two/stack.kdl"), stack(None, 1000, 1001)).unwrap();
    // (No command here: it would autostart a daemon without the watch.)
    w.host.as_mut().unwrap().start_daemon();
    let now = w.running(&["two-a-1", "two-b-1"]);
    if let Some(id) = now.get("one-a-1") {
        assert_eq!(id, &first["one-a-1"], "one was touched at start");
    }
    eventually(LIMIT, "one taken down", || {
        !w.ids().keys().any(|n| n.starts_with("one-"))
    });
    let ls = w.host().ok(&["ls"]);
    assert!(!ls.contains("one "), "{ls}");
    assert!(ls.contains("watch:two"), "{ls}");
}

#[test]
fn keep_on_delete_keeps_a_stack_and_one_name_goes_to_one_file() {
    let w = Watched::new(&["--watch-grace", "1s", "--keep-on-delete"]);
    let dir = w.dir();
    fs::write(dir.join("a.kdl"), stack(Some("shop"), 1000, 1001)).unwrap();
    let first = w.running(&["shop-a-1", "shop-b-1"]);

    // A second file with the same name is refused, naming both files.
    fs::write(
        dir.join("b.kdl"),
        stack(Some("shop"), 1000, 1001).replace("service \"b\"", "service \"c\""),
    )
    .unwrap();
    eventually(LIMIT, "the refusal listed", || {
        w.host().ok(&["ls"]).contains("watch:b.kdl")
    });
    let status = w.status("shop");
    assert!(status.contains("a.kdl"), "{status}");
    let listing = w.host().ok(&["ls"]);
    let refused = listing
        .lines()
        .find(|l| l.contains("watch:b.kdl"))
        .unwrap()
        .to_string();
    assert!(refused.contains("error"), "{listing}");
    let events = stack_events(w.host());
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"refused\"") && l.contains("a.kdl") && l.contains("b.kdl")),
        "no refusal naming both files: {events}"
    );
    assert!(!w.ids().contains_key("shop-c-1"), "the refused file ran");
    fs::remove_file(dir.join("b.kdl")).unwrap();
    eventually(LIMIT, "the refusal gone", || {
        !w.host().ok(&["ls"]).contains("watch:b.kdl")
    });

    // A file invalid from the start is listed with its error.
    fs::write(
        dir.join("bad.kdl"),
        "service \"x\" {\n    replicas \"two\"\n}\n",
    )
    .unwrap();
    eventually(LIMIT, "the invalid file listed", || {
        w.host().ok(&["ls"]).contains("watch:bad.kdl")
    });
    let status = w.status("bad");
    assert!(status.contains("bad.kdl:2:"), "{status}");
    let ls = w.host().ok(&["ls"]);
    assert!(ls.contains("bad.kdl:2:"), "{ls}");

    // Deleted with --keep-on-delete: it keeps running past the grace.
    fs::remove_file(dir.join("a.kdl")).unwrap();
    eventually(LIMIT, "the deletion seen", || {
        w.status("shop").contains("a.kdl") && w.status("shop").contains("last error")
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_eq!(w.ids(), first, "a kept stack changed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its file gone, `down` is no longer refused.
    w.host().ok(&["down", "--stack", "shop"]);
    assert!(w.ids().is_empty(), "{:?}", w.ids());
}
