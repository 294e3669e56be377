//! Layers on real files: a corpus of hostile tarballs is refused or contained
//! (nothing outside the destination changes), every entry type round-trips
//! with its metadata, whiteouts work in both modes and in a real overlay
//! mount, and `diff` of an overlay upper dir replays to the merged view.
//!
//! Most tests need root (owners, device nodes, `trusted.*` xattrs, mounts)
//! and fail, not skip, without it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use stack::image::digest::Digest;
use stack::image::layer::{self, LayerError, UnpackOptions, UnpackStats, Whiteouts};

fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (owners, device nodes, trusted.* xattrs, overlay mounts): \
         run the suite as root, as CI does"
    );
}

// ---------------------------------------------------------------------------
// Building tarballs byte by byte, hostile names included.

/// One tar entry; names and link targets are raw bytes written straight into
/// the header, so `..`, absolute paths and NUL get through.
#[derive(Clone, Debug)]
struct Entry {
    kind: tar::EntryType,
    name: Vec<u8>,
    link: Vec<u8>,
    data: Vec<u8>,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
    /// Written as a GNU long-name entry instead of in the header.
    long_name: bool,
    /// A size to claim in the header, with `data` cut short: ends the tar.
    claimed: Option<u64>,
}

fn entry(kind: tar::EntryType, name: &str) -> Entry {
    Entry {
        kind,
        name: name.as_bytes().to_vec(),
        link: Vec::new(),
        data: Vec::new(),
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        owner: (0, 0),
        mtime: 1_600_000_000,
        dev: (0, 0),
        pax: Vec::new(),
        long_name: false,
        claimed: None,
    }
}

fn dir(name: &str) -> Entry {
    entry(tar::EntryType::Directory, name)
}

fn file(name: &str, data: &[u8]) -> Entry {
    Entry {
        data: data.to_vec(),
        ..entry(tar::EntryType::Regular, name)
    }
}

fn symlink(name: &str, target: &str) -> Entry {
    Entry {
        link: target.as_bytes().to_vec(),
        mode: 0o777,
        ..entry(tar::EntryType::Symlink, name)
    }
}

fn hardlink(name: &str, target: &str) -> Entry {
    Entry {
        link: target.as_bytes().to_vec(),
        ..entry(tar::EntryType::Link, name)
    }
}

fn device(kind: tar::EntryType, name: &str, major: u32, minor: u32) -> Entry {
    Entry {
        dev: (major, minor),
        mode: 0o660,
        ..entry(kind, name)
    }
}

impl Entry {
    fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.owner = (uid, gid);
        self
    }
    fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }
    fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
    fn long_name(mut self) -> Self {
        self.long_name = true;
        self
    }
    fn claim(mut self, size: u64) -> Self {
        self.claimed = Some(size);
        self
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap()
}

fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            b.append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        if e.long_name {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::GNULongName);
            h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            let mut data = e.name.clone();
            data.push(0);
            h.set_size(len64(data.len()));
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.owner.0);
        h.set_gid(e.owner.1);
        h.set_mtime(e.mtime);
        h.set_size(e.claimed.unwrap_or(len64(e.data.len())));
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        // Longer names travel in a PAX `path` or GNU long-name entry.
        let name = &e.name[..e.name.len().min(if e.long_name { 10 } else { 100 })];
        h.as_old_mut().name = [0; 100];
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname = [0; 100];
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(&e.link);
        h.set_cksum();
        if e.claimed.is_some() {
            // The stream simply ends inside this entry's data.
            let mut out = b.into_inner().unwrap();
            out.truncate(out.len() - 1024);
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&e.data);
            return out;
        }
        b.append(&h, &e.data[..]).unwrap();
    }
    let mut out = b.into_inner().unwrap();
    // GNU tar pads to 10 KiB records; the diff_id covers the padding too.
    out.resize(out.len().div_ceil(10240) * 10240, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---------------------------------------------------------------------------
// A sandbox with sentinels around the destination.

/// `tmp/root/dest` is unpacked into; `tmp/root/outside`, other files around
/// it and `/etc/passwd` must never change.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("dest")).unwrap();
        std::fs::create_dir_all(root.join("outside/sub")).unwrap();
        std::fs::write(root.join("outside/secret"), "untouched").unwrap();
        std::fs::write(root.join("outside/sub/file"), "untouched").unwrap();
        std::os::unix::fs::symlink("secret", root.join("outside/link")).unwrap();
        std::fs::write(root.join("sibling"), "untouched").unwrap();
        std::fs::write(tmp.path().join("top"), "untouched").unwrap();
        Self { tmp }
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("root/dest")
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("root/outside")
    }

    /// Every path outside `dest` with its full metadata and content, and
    /// `/etc/passwd`.
    fn outside_state(&self) -> BTreeMap<PathBuf, String> {
        let mut state = BTreeMap::new();
        let dest = self.dest();
        let mut stack = vec![self.tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            state.insert(d.clone(), describe(&d));
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p == dest {
                    continue;
                }
                if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                    stack.push(p);
                } else {
                    state.insert(p.clone(), describe(&p));
                }
            }
        }
        state.insert("/etc/passwd".into(), describe(Path::new("/etc/passwd")));
        state.insert(
            "/etc/passwd-evil".into(),
            describe(Path::new("/etc/passwd-evil")),
        );
        state
    }

    fn unpack(&self, tar: &[u8], opts: &UnpackOptions) -> Result<UnpackStats, LayerError> {
        layer::unpack(tar, &self.dest(), opts)
    }
}

/// Type, mode, owner, mtime, size and content or link target of `p`.
fn describe(p: &Path) -> String {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return "absent".into();
    };
    let body = if m.is_file() {
        Digest::of(&std::fs::read(p).unwrap()).to_string()
    } else if m.is_symlink() {
        std::fs::read_link(p).unwrap().display().to_string()
    } else {
        String::new()
    };
    format!(
        "{:o} {}:{} {}.{} {} {}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.mtime(),
        m.mtime_nsec(),
        m.len(),
        body
    )
}

// ---------------------------------------------------------------------------
// The hostile corpus.

/// What a hostile layer must come to.
enum Expect {
    /// Refused with this `LayerError` variant.
    Refused(&'static str),
    /// Applied, with these paths inside `dest` (`f` file, `d` dir, `l`
    /// symlink, `-` absent).
    Contained(&'static [(&'static str, char)]),
}

/// Builds a hostile tar; gets the absolute path of the sentinel directory.
type LayerFn = Box<dyn Fn(&str) -> Vec<u8>>;

struct Case {
    name: &'static str,
    /// Builds the tar.
    layer: LayerFn,
    opts: UnpackOptions,
    expect: Expect,
}

fn case(name: &'static str, expect: Expect, layer: impl Fn(&str) -> Vec<Entry> + 'static) -> Case {
    Case {
        name,
        layer: Box::new(move |outside| tar(&layer(outside))),
        opts: UnpackOptions::default(),
        expect,
    }
}

fn corpus() -> Vec<Case> {
    use Expect::{Contained, Refused};
    let mut cases = vec![
        case("../escape", Refused("InvalidName"), |_| {
            vec![file("../escape", b"x")]
        }),
        case("a/../../b", Refused("InvalidName"), |_| {
            vec![file("a/../../b", b"x")]
        }),
        case("deep ../ after descending", Refused("InvalidName"), |_| {
            vec![file("a/b/c/../../../../x", b"x")]
        }),
        case("/abs/file", Contained(&[("abs/file", 'f')]), |_| {
            vec![file("/abs/file", b"x")]
        }),
        case("absolute path of the sentinel", Contained(&[]), |out| {
            vec![file(&format!("{out}/secret"), b"pwned")]
        }),
        case(
            "link -> / then link/etc/passwd-evil",
            Contained(&[("link", 'l'), ("etc/passwd-evil", 'f')]),
            |_| vec![symlink("link", "/"), file("link/etc/passwd-evil", b"x")],
        ),
        case(
            "up -> ../.. then up/x",
            Contained(&[("up", 'l'), ("x", 'f')]),
            |_| vec![symlink("up", "../.."), file("up/x", b"pwned")],
        ),
        case(
            "d/up -> ../../.. then d/up/root/outside/secret",
            Contained(&[("root/outside/secret", 'f')]),
            |_| {
                vec![
                    dir("d"),
                    symlink("d/up", "../../.."),
                    file("d/up/root/outside/secret", b"pwned"),
                ]
            },
        ),
        case(
            "link -> sentinel dir then link/secret",
            Refused("ResolveParent"),
            |out| vec![symlink("out", out), file("out/secret", b"pwned")],
        ),
        case(
            "dir replaced by link -> sentinel, then a file through it",
            Refused("ResolveParent"),
            |out| vec![dir("d"), symlink("d", out), file("d/secret", b"pwned")],
        ),
        case(
            "dir entry over link -> sentinel",
            Contained(&[("l", 'd')]),
            |out| vec![symlink("l", out), dir("l").mode(0o777)],
        ),
        case(
            "symlink then a file of the same name",
            Contained(&[("s", 'f')]),
            |_| vec![symlink("s", "/etc/passwd"), file("s", b"pwned")],
        ),
        case(
            "symlink to the sentinel then a file of the same name",
            Contained(&[("s", 'f')]),
            |out| vec![symlink("s", &format!("{out}/secret")), file("s", b"pwned")],
        ),
        case("hard link to /etc/passwd", Refused("HardLink"), |_| {
            vec![hardlink("h", "/etc/passwd")]
        }),
        case("hard link to ../../x", Refused("InvalidLinkTarget"), |_| {
            vec![hardlink("h", "../../outside/secret")]
        }),
        case(
            "hard link to the sentinel's absolute path",
            Refused("HardLink"),
            |out| vec![hardlink("h", &format!("{out}/secret"))],
        ),
        case(
            "hard link through a symlinked parent",
            Refused("HardLink"),
            |out| vec![symlink("l", out), hardlink("h", "l/secret")],
        ),
        case(
            "hard link to a symlink pointing out",
            Contained(&[("s", 'l'), ("h", 'l')]),
            |_| vec![symlink("s", "/etc/passwd"), hardlink("h", "s")],
        ),
        case(
            "hard link to a symlink pointing out, then a file over it",
            Contained(&[("s", 'l'), ("h", 'f')]),
            |out| {
                vec![
                    symlink("s", &format!("{out}/secret")),
                    hardlink("h", "s"),
                    file("h", b"pwned"),
                ]
            },
        ),
        case("hard link to a directory", Refused("HardLink"), |_| {
            vec![dir("d"), hardlink("h", "d")]
        }),
        case(
            "character device not allowed",
            Refused("DeviceNotAllowed"),
            |_| vec![device(tar::EntryType::Char, "dev/mem", 1, 1)],
        ),
        case(
            "block device not allowed",
            Refused("DeviceNotAllowed"),
            |_| vec![device(tar::EntryType::Block, "dev/sda", 8, 0)],
        ),
        case(
            "size header bigger than the data",
            Refused("Truncated"),
            |_| {
                vec![
                    file("ok", b"fine"),
                    file("big", b"0123456789").claim(1 << 20),
                ]
            },
        ),
        case("NUL in a PAX path", Refused("InvalidName"), |_| {
            vec![file("placeholder", b"x").pax("path", b"etc/pass\0wd")]
        }),
        case("NUL in a GNU long name", Refused("InvalidName"), |_| {
            let long = format!("{}\0/../../escape", "a".repeat(120));
            vec![file(&long, b"x").long_name()]
        }),
        case("empty name", Refused("InvalidName"), |_| {
            vec![file("", b"x")]
        }),
        case("a file as the root", Refused("InvalidName"), |_| {
            vec![file("./", b"x")]
        }),
        case(
            "NUL in a symlink target",
            Refused("InvalidLinkTarget"),
            |_| vec![symlink("s", "x").pax("linkpath", b"/etc\0/passwd")],
        ),
        case(
            "trusted.overlay.opaque in PAX",
            Refused("ForbiddenXattr"),
            |_| vec![dir("d").pax("SCHILY.xattr.trusted.overlay.opaque", b"y")],
        ),
        case(
            "user.overlay.redirect in PAX",
            Refused("ForbiddenXattr"),
            |_| vec![file("f", b"x").pax("SCHILY.xattr.user.overlay.redirect", b"/etc")],
        ),
        case(
            "whiteout through link -> sentinel",
            Contained(&[("l", 'l')]),
            |out| vec![symlink("l", out), file("l/.wh.secret", b"")],
        ),
        case(
            "opaque marker through link -> sentinel",
            Contained(&[("l", 'l')]),
            |out| vec![symlink("l", out), file("l/.wh..wh..opq", b"")],
        ),
        case(
            "whiteout through up -> ../..",
            Contained(&[("up", 'l')]),
            |_| {
                vec![
                    symlink("up", "../.."),
                    file("up/.wh.top", b""),
                    file("up/.wh.root", b""),
                ]
            },
        ),
        case("whiteout naming `..`", Refused("InvalidName"), |_| {
            vec![file(".wh...", b"")]
        }),
        case(
            "dangling link as a parent",
            Refused("ResolveParent"),
            |_| vec![symlink("dl", "/nonexistent"), file("dl/x", b"x")],
        ),
    ];

    let limited = |mut case: Case, opts: UnpackOptions| {
        case.opts = opts;
        case
    };
    cases.push(limited(
        case(
            "entry count over the limit",
            Refused("TooManyEntries"),
            |_| (0..101).map(|i| file(&format!("f{i}"), b"x")).collect(),
        ),
        UnpackOptions {
            max_entries: 100,
            ..UnpackOptions::default()
        },
    ));
    cases.push(limited(
        case(
            "entry over the size limit",
            Refused("EntryTooLarge"),
            |_| vec![file("big", &[0; 4096])],
        ),
        UnpackOptions {
            max_entry_size: 1024,
            ..UnpackOptions::default()
        },
    ));
    let bomb = Case {
        name: "gzip bomb over the total limit",
        layer: Box::new(|_| gzip(&tar(&[file("zeros", &vec![0; 8 << 20])]))),
        opts: UnpackOptions {
            max_total_size: 1 << 20,
            max_entry_size: 16 << 20,
            ..UnpackOptions::default()
        },
        expect: Refused("LayerTooLarge"),
    };
    cases.push(bomb);
    let padding = Case {
        name: "endless padding after the trailer",
        layer: Box::new(|_| {
            let mut bytes = tar(&[file("f", b"x")]);
            bytes.resize(8 << 20, 0);
            gzip(&bytes)
        }),
        opts: UnpackOptions {
            max_total_size: 1 << 20,
            ..UnpackOptions::default()
        },
        expect: Refused("LayerTooLarge"),
    };
    cases.push(padding);
    let overlay = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    cases.push(limited(
        case(
            "overlay whiteout through link -> sentinel",
            Refused("ResolveParent"),
            |out| vec![symlink("l", out), file("l/.wh.secret", b"")],
        ),
        overlay.clone(),
    ));
    cases.push(limited(
        case(
            "overlay opaque marker through link -> /",
            Contained(&[("l", 'l')]),
            |_| vec![symlink("l", "/"), file("l/.wh..wh..opq", b"")],
        ),
        overlay,
    ));
    cases
}

fn kind_of(p: &Path) -> char {
    match std::fs::symlink_metadata(p) {
        Err(_) => '-',
        Ok(m) if m.is_symlink() => 'l',
        Ok(m) if m.is_dir() => 'd',
        Ok(m) if m.is_file() => 'f',
        Ok(_) => '?',
    }
}

#[test]
fn hostile_layers_are_refused_or_contained() {
    require_root();
    let mut report = Vec::new();
    for case in corpus() {
        let sandbox = Sandbox::new();
        let outside = sandbox.outside().to_str().unwrap().to_string();
        let bytes = (case.layer)(&outside);
        let before = sandbox.outside_state();
        let result = sandbox.unpack(&bytes, &case.opts);
        assert_eq!(
            before,
            sandbox.outside_state(),
            "{}: something outside the destination changed ({result:?})",
            case.name
        );
        match (&case.expect, &result) {
            (Expect::Refused(variant), Err(e)) => {
                let debug = format!("{e:?}");
                assert!(
                    debug.starts_with(variant),
                    "{}: expected {variant}, got {debug}",
                    case.name
                );
                report.push(format!("{}: refused: {e}", case.name));
            }
            (Expect::Contained(paths), Ok(_)) => {
                for (path, kind) in *paths {
                    assert_eq!(
                        kind_of(&sandbox.dest().join(path)),
                        *kind,
                        "{}: {path} in dest",
                        case.name
                    );
                }
                report.push(format!("{}: contained", case.name));
            }
            (_, result) => panic!("{}: unexpected {result:?}", case.name),
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn a_replaced_symlink_is_never_written_through() {
    require_root();
    let sandbox = Sandbox::new();
    let target = format!("{}/secret", sandbox.outside().display());
    sandbox
        .unpack(
            &tar(&[symlink("s", &target), file("s", b"pwned")]),
            &UnpackOptions::default(),
        )
        .unwrap();
    assert_eq!(std::fs::read(sandbox.dest().join("s")).unwrap(), b"pwned");
    assert_eq!(
        std::fs::read(sandbox.outside().join("secret")).unwrap(),
        b"untouched"
    );
}

// ---------------------------------------------------------------------------
// Normal behaviour.

#[test]
fn every_entry_type_round_trips_with_its_metadata() {
    require_root();
    let long = format!("usr/share/{}/file", "long-directory-name".repeat(8));
    let layer = tar(&[
        dir("./").mode(0o755).mtime(1_000_000_000),
        dir("tmp")
            .mode(0o1777)
            .owner(1000, 1001)
            .mtime(1_500_000_000),
        dir("bin").mode(0o750).owner(3, 4).mtime(1_200_000_000),
        file("bin/tool", b"hello")
            .mode(0o4755)
            .owner(33, 44)
            .pax("mtime", b"1400000000.123456789")
            .pax("SCHILY.xattr.user.note", b"hi"),
        hardlink("bin/tool2", "bin/tool"),
        symlink("bin/sh", "/bin/busybox")
            .owner(5, 6)
            .mtime(1_300_000_000),
        device(tar::EntryType::Char, "dev/null", 1, 3).mode(0o666),
        device(tar::EntryType::Block, "dev/loop9", 7, 9),
        entry(tar::EntryType::Fifo, "run/fifo")
            .mode(0o620)
            .owner(7, 8),
        file(&long, b"deep").pax("path", long.as_bytes()),
        file("big", &vec![7; 3 << 20])
            .pax("uid", b"4000000")
            .pax("gid", b"4000001"),
    ]);
    let sandbox = Sandbox::new();
    let opts = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    let stats = sandbox.unpack(&layer, &opts).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&layer));
    assert_eq!(stats.size, len64(layer.len()));
    assert_eq!(stats.entries, 11);
    let d = sandbox.dest();
    let meta = |p: &str| std::fs::symlink_metadata(d.join(p)).unwrap();

    let tool = meta("bin/tool");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives the chown");
    assert_eq!((tool.uid(), tool.gid()), (33, 44));
    assert_eq!(
        (tool.mtime(), tool.mtime_nsec()),
        (1_400_000_000, 123_456_789)
    );
    assert_eq!(std::fs::read(d.join("bin/tool")).unwrap(), b"hello");
    let mut note = [0u8; 8];
    let n = rustix::fs::getxattr(d.join("bin/tool"), "user.note", &mut note).unwrap();
    assert_eq!(&note[..n], b"hi");
    assert_eq!(
        meta("bin/tool2").ino(),
        tool.ino(),
        "hard link shares the inode"
    );
    assert_eq!(tool.nlink(), 2);

    let sh = meta("bin/sh");
    assert!(sh.is_symlink());
    assert_eq!(
        std::fs::read_link(d.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!((sh.uid(), sh.gid(), sh.mtime()), (5, 6, 1_300_000_000));

    let tmp = meta("tmp");
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(
        (tmp.uid(), tmp.gid(), tmp.mtime()),
        (1000, 1001, 1_500_000_000)
    );
    let bin = meta("bin");
    assert_eq!(bin.mode() & 0o7777, 0o750);
    assert_eq!(
        bin.mtime(),
        1_200_000_000,
        "directory mtime set after its content"
    );
    assert_eq!(
        meta("").mtime(),
        1_000_000_000,
        "root entry applies to dest"
    );

    let null = meta("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let loop9 = meta("dev/loop9");
    assert!(loop9.file_type().is_block_device());
    assert_eq!(loop9.rdev(), rustix::fs::makedev(7, 9));
    assert_eq!(
        meta("dev").mode() & 0o7777,
        0o755,
        "implicit parents are 0755"
    );
    let fifo = meta("run/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid()),
        (0o620, 7, 8)
    );

    assert_eq!(std::fs::read(d.join(&long)).unwrap(), b"deep");
    let big = meta("big");
    assert_eq!(
        (big.len(), big.uid(), big.gid()),
        (3 << 20, 4_000_000, 4_000_001)
    );
}

#[test]
fn owners_are_left_alone_when_not_preserved() {
    let sandbox = Sandbox::new();
    let opts = UnpackOptions {
        preserve_owners: false,
        ..UnpackOptions::default()
    };
    sandbox
        .unpack(
            &tar(&[file("f", b"x").owner(1234, 5678).mode(0o640)]),
            &opts,
        )
        .unwrap();
    let m = std::fs::metadata(sandbox.dest().join("f")).unwrap();
    assert_eq!(m.uid(), rustix::process::geteuid().as_raw());
    assert_eq!(m.mode() & 0o7777, 0o640);
}

#[test]
fn plain_gzip_and_zstd_give_the_same_diff_id() {
    let layer = tar(&[dir("etc"), file("etc/os-release", b"ID=stack\n")]);
    let expected = Digest::of(&layer);
    let opts = UnpackOptions {
        preserve_owners: false,
        ..UnpackOptions::default()
    };
    for bytes in [
        layer.clone(),
        gzip(&layer),
        zstd::encode_all(&layer[..], 3).unwrap(),
    ] {
        let sandbox = Sandbox::new();
        let stats = sandbox.unpack(&bytes, &opts).unwrap();
        assert_eq!(stats.diff_id, expected);
        assert_eq!(
            stats.size,
            len64(layer.len()),
            "padding after the trailer is counted"
        );
        assert_eq!(
            std::fs::read(sandbox.dest().join("etc/os-release")).unwrap(),
            b"ID=stack\n"
        );
    }
    let mut plain = Vec::new();
    layer::decompress(&gzip(&layer)[..])
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, layer);
}

fn lower_layer() -> Vec<u8> {
    tar(&[
        dir("etc"),
        file("etc/keep", b"1"),
        file("etc/gone", b"1"),
        dir("var"),
        dir("var/gone"),
        file("var/gone/deep", b"1"),
        dir("cache"),
        file("cache/old", b"1"),
        dir("cache/olddir"),
        file("cache/olddir/f", b"1"),
        dir("late"),
        file("late/old", b"1"),
    ])
}

fn upper_layer() -> Vec<u8> {
    tar(&[
        file("etc/.wh.gone", b""),
        file("var/.wh.gone", b""),
        dir("cache"),
        file("cache/.wh..wh..opq", b""),
        file("cache/new", b"2"),
        // The marker after this layer's own content: only lower content goes.
        dir("late"),
        file("late/new", b"2"),
        dir("late/sub"),
        file("late/sub/f", b"2"),
        file("late/.wh..wh..opq", b""),
    ])
}

fn assert_merged_view(root: &Path) {
    for present in ["etc/keep", "cache/new", "late/new", "late/sub/f"] {
        assert!(root.join(present).exists(), "{present} missing");
    }
    for gone in [
        "etc/gone",
        "var/gone",
        "cache/old",
        "cache/olddir",
        "late/old",
    ] {
        assert!(
            std::fs::symlink_metadata(root.join(gone)).is_err(),
            "{gone} still there"
        );
    }
}

#[test]
fn apply_mode_whiteouts_delete_lower_content() {
    require_root();
    let merged = Sandbox::new();
    let apply = UnpackOptions::default();
    merged.unpack(&lower_layer(), &apply).unwrap();
    merged.unpack(&upper_layer(), &apply).unwrap();
    assert_merged_view(&merged.dest());
}

/// An overlay mount, unmounted on drop even if the test fails.
struct OverlayMount(PathBuf);

impl OverlayMount {
    fn new(target: &Path, options: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", options])
            .arg(target)
            .status()
            .expect("run mount(8)");
        assert!(
            status.success(),
            "overlay mount failed: needs root and overlayfs"
        );
        Self(target.to_path_buf())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn overlay_mode_whiteouts_hide_lower_files_in_a_real_mount() {
    require_root();
    let overlay = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    let lower = Sandbox::new();
    let upper = Sandbox::new();
    lower.unpack(&lower_layer(), &overlay).unwrap();
    upper.unpack(&upper_layer(), &overlay).unwrap();

    let whiteout = std::fs::symlink_metadata(upper.dest().join("etc/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    let mut value = [0u8; 2];
    let n = rustix::fs::getxattr(
        upper.dest().join("cache"),
        "trusted.overlay.opaque",
        &mut value,
    )
    .unwrap();
    assert_eq!(&value[..n], b"y");

    let mnt = tempfile::tempdir().unwrap();
    let options = format!(
        "lowerdir={}:{}",
        upper.dest().display(),
        lower.dest().display()
    );
    let _mount = OverlayMount::new(mnt.path(), &options);
    assert_merged_view(mnt.path());
}

/// Every path under `root` with type, mode, owner, content or target and,
/// for non-directories, mtime in whole seconds (what a layer keeps).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let body = if m.is_file() {
                format!("{} {}", Digest::of(&std::fs::read(&p).unwrap()), m.mtime())
            } else if m.is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else if m.is_dir() {
                stack.push(p.clone());
                String::new()
            } else {
                format!("rdev {}", m.rdev())
            };
            out.insert(
                rel,
                format!("{:o} {}:{} {}", m.mode(), m.uid(), m.gid(), body),
            );
        }
    }
    out
}

#[test]
fn diff_of_an_overlay_upper_replays_to_the_merged_view() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| base.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let overlay = UnpackOptions {
        whiteouts: Whiteouts::Overlay,
        ..UnpackOptions::default()
    };
    layer::unpack(&lower_layer()[..], &lower, &overlay).unwrap();

    let expected = {
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        let _mount = OverlayMount::new(&merged, &options);
        let m = |p: &str| merged.join(p);
        std::fs::remove_file(m("etc/gone")).unwrap();
        std::fs::remove_dir_all(m("var/gone")).unwrap();
        std::fs::remove_dir_all(m("cache")).unwrap();
        std::fs::create_dir(m("cache")).unwrap();
        std::fs::write(m("cache/new"), "fresh").unwrap();
        std::fs::write(m("etc/keep"), "changed").unwrap();
        std::fs::write(m("etc/added"), "added").unwrap();
        std::fs::hard_link(m("etc/added"), m("etc/added-too")).unwrap();
        std::os::unix::fs::symlink("/etc/keep", m("etc/link")).unwrap();
        std::fs::set_permissions(m("late/old"), std::fs::Permissions::from_mode(0o600)).unwrap();
        rustix::fs::chown(m("etc/added"), Some(rustix::fs::Uid::from_raw(77)), None).unwrap();
        rustix::fs::setxattr(
            m("etc/keep"),
            "user.tag",
            b"v",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        tree(&merged)
    };

    let mut first = Vec::new();
    let stats = layer::diff(&upper, &mut first).unwrap();
    let mut second = Vec::new();
    assert_eq!(layer::diff(&upper, &mut second).unwrap(), stats);
    assert_eq!(first, second, "diff is deterministic");
    assert_eq!(stats.diff_id, Digest::of(&first));

    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&first[..]);
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        names.push((
            String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            e.header().entry_type(),
        ));
    }
    let has = |name: &str, kind| names.iter().any(|(n, k)| n == name && *k == kind);
    assert!(has("etc/.wh.gone", tar::EntryType::Regular), "{names:?}");
    assert!(has("var/.wh.gone", tar::EntryType::Regular), "{names:?}");
    assert!(
        has("cache/.wh..wh..opq", tar::EntryType::Regular),
        "{names:?}"
    );
    assert!(has("etc/added-too", tar::EntryType::Link), "{names:?}");

    let replay = Sandbox::new();
    let apply = UnpackOptions::default();
    replay.unpack(&lower_layer(), &apply).unwrap();
    replay.unpack(&first, &apply).unwrap();
    assert_eq!(tree(&replay.dest()), expected);
    let mut tag = [0u8; 2];
    let n = rustix::fs::getxattr(replay.dest().join("etc/keep"), "user.tag", &mut tag).unwrap();
    assert_eq!(&tag[..n], b"v");
}

#[test]
fn tar_dir_round_trips_a_plain_tree() {
    require_root();
    let src = Sandbox::new();
    let layer = tar(&[
        dir("a").mode(0o700).owner(1, 2),
        file("a/f", b"content")
            .mode(0o4711)
            .owner(3, 4)
            .pax("SCHILY.xattr.user.k", b"v"),
        hardlink("a/g", "a/f"),
        symlink("a/s", "../nowhere"),
        entry(tar::EntryType::Fifo, "p"),
    ]);
    src.unpack(&layer, &UnpackOptions::default()).unwrap();
    let mut out = Vec::new();
    let stats = layer::tar_dir(&src.dest(), &mut out).unwrap();
    assert_eq!(stats.entries, 5);
    let copy = Sandbox::new();
    assert_eq!(
        copy.unpack(&out, &UnpackOptions::default())
            .unwrap()
            .diff_id,
        stats.diff_id
    );
    assert_eq!(tree(&copy.dest()), tree(&src.dest()));
}

// ---------------------------------------------------------------------------
// Properties: no input panics or reaches outside the destination.

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn options() -> UnpackOptions {
        // What an unprivileged run can do, so the property needs no root.
        UnpackOptions {
            preserve_owners: false,
            ..UnpackOptions::default()
        }
    }

    /// Names built from pieces hostile layers use.
    fn hostile_name() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "..",
            ".",
            "",
            "a",
            "b",
            "l",
            "up",
            ".wh.a",
            ".wh..wh..opq",
            "etc",
            "passwd",
        ]);
        (any::<bool>(), prop::collection::vec(piece, 1..5)).prop_map(|(abs, parts)| {
            let joined = parts.join("/");
            if abs { format!("/{joined}") } else { joined }
        })
    }

    fn hostile_entry() -> impl Strategy<Value = Entry> {
        (
            0u8..6,
            hostile_name(),
            hostile_name(),
            prop::sample::select(vec!["/", "../..", "..", "/etc", "a"]),
        )
            .prop_map(|(kind, name, other, target)| match kind {
                0 => dir(&name),
                1 => file(&name, b"data"),
                2 => symlink(&name, target),
                3 => symlink(&name, &other),
                4 => hardlink(&name, &other),
                _ => file(&name, b""),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic_or_escape(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let sandbox = Sandbox::new();
            let before = sandbox.outside_state();
            let _ = sandbox.unpack(&bytes, &options());
            prop_assert_eq!(before, sandbox.outside_state());
        }

        #[test]
        fn mutated_tars_never_panic_or_escape(flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
            let mut bytes = tar(&[
                dir("a"),
                symlink("a/l", "../../outside"),
                file("a/l/secret", b"data"),
                hardlink("b", "a/l"),
                file("c", b"more"),
            ]);
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            let sandbox = Sandbox::new();
            let before = sandbox.outside_state();
            let _ = sandbox.unpack(&bytes, &options());
            prop_assert_eq!(before, sandbox.outside_state());
        }

        #[test]
        fn hostile_entry_sequences_never_escape(entries in prop::collection::vec(hostile_entry(), 1..12)) {
            let sandbox = Sandbox::new();
            let before = sandbox.outside_state();
            let _ = sandbox.unpack(&tar(&entries), &options());
            prop_assert_eq!(before, sandbox.outside_state());
        }
    }
}

#[test]
fn refused_names_appear_in_the_error() {
    let sandbox = Sandbox::new();
    let err = sandbox
        .unpack(
            &tar(&[file("../../etc/shadow", b"x")]),
            &UnpackOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("../../etc/shadow"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
