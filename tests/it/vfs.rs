//! The `vfs` storage driver: a daemon started with `--storage-driver vfs`
//! gives every container a full copy of its image, honours the image's
//! whiteouts and opaque directories exactly as an overlay mount would show
//! them, commits a container's changes as a layer of only those changes, and
//! keeps a state root to the driver it was first used with.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::Digest as _;
use stack::image::digest::Digest;
use stack::image::images::Images;

use crate::host::Host;

/// Makes the host's root as if no daemon had used it yet: the daemon that
/// imported the test image (started on demand, with the default driver) is
/// stopped and its driver choice forgotten. The image's layers are the same
/// for both drivers.
fn undecided(host: &Host) {
    crate::stop_daemon(&host.root());
    let _ = std::fs::remove_file(stack::image::driver::record_path(&host.root()));
}

/// Starts `stack daemon --storage-driver vfs` on the host's root and waits
/// until it answers. The host's drop removes the containers and stops it.
fn vfs_daemon(host: &Host) {
    start_daemon(host, &["daemon", "--storage-driver", "vfs"]);
}

fn start_daemon(host: &Host, args: &[&str]) {
    let mut daemon = host
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = stack::daemon::default_socket(&host.root());
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        if let Some(status) = daemon.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut stderr) = daemon.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            }
            panic!("the daemon exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "the daemon did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped whenever it ends (the host's drop stops it).
    std::thread::spawn(move || daemon.wait());
}

/// The layer directories of an image, base first.
fn layer_dirs(host: &Host, image: &str) -> Vec<PathBuf> {
    let id: Digest = image_id(host, image).parse().unwrap();
    Images::open(&host.root()).unwrap().layers(&id).unwrap()
}

/// An error message without the line breaks, frame and spaces of its
/// rendering, which wraps wherever the width says.
fn squeezed(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '×'))
        .collect()
}

fn image_id(host: &Host, image: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&host.ok(&["image", "inspect", image])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

#[test]
fn vfs_containers_run_on_their_own_copy_of_the_image() {
    let host = Host::new();
    undecided(&host);
    vfs_daemon(&host);
    let (code, out, err) = host.run(&[], &["cat", "/etc/passwd"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("root:x:0:0"), "{out}");
    // The root is the copy, bind-mounted: no overlay.
    let (_, mounts, _) = host.run(&[], &["cat", "/proc/self/mountinfo"]);
    let root_line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap();
    assert!(!root_line.contains(" - overlay "), "{root_line}");

    host.ok(&["create", "--name", "one", "bb", "true"]);
    let inspect = host.inspect("one");
    assert_eq!(inspect["Driver"], "vfs");
    assert_eq!(inspect["GraphDriver"]["Name"], "vfs");
    let dir = PathBuf::from(inspect["GraphDriver"]["Data"]["Dir"].as_str().unwrap());
    assert!(dir.starts_with(host.root()), "{}", dir.display());
    // A real copy, not a link into the image's layer.
    let copy = fs::metadata(dir.join("bin/busybox")).unwrap();
    let layer = fs::metadata(layer_dirs(&host, "bb")[0].join("bin/busybox")).unwrap();
    assert_eq!(copy.len(), layer.len());
    assert_ne!(copy.ino(), layer.ino());
    assert!(host.ok(&["info"]).contains("Storage Driver: vfs"));

    // Writes stay in their container.
    host.ok(&[
        "run",
        "--name",
        "writer",
        "bb",
        "sh",
        "-c",
        "echo changed > /etc/passwd; rm /bin/yes; touch /new",
    ]);
    let (code, out, _) = host.run(&[], &["cat", "/etc/passwd"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("root:x:0:0"), "{out}");
    let (code, _, _) = host.run(&[], &["ls", "/bin/yes", "/new"]);
    assert_ne!(code, 0, "another container sees the image, not the writes");
    let (code, _, _) = host.run(&[], &["ls", "/bin/yes"]);
    assert_eq!(code, 0);
    assert_eq!(host.ok(&["start", "-a", "one"]), "");
    assert_eq!(
        fs::read_to_string(layer_dirs(&host, "bb")[0].join("etc/passwd"))
            .unwrap()
            .lines()
            .next(),
        Some("root:x:0:0:root:/root:/bin/sh")
    );
    // The writer's own root kept them.
    let writer = host.inspect("writer");
    let dir = PathBuf::from(writer["GraphDriver"]["Data"]["Dir"].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(dir.join("etc/passwd")).unwrap(),
        "changed\n"
    );
    assert!(dir.join("new").exists());
}

/// A tar header for a layer entry, owned by root, at a fixed time.
fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
    Xattr(&'a str, &'a str, &'a str),
}

fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for entry in entries {
        match entry {
            Entry::Dir(path, mode) => {
                b.append(&header(path, tar::EntryType::Directory, *mode, 0), &[][..])
                    .unwrap();
            }
            Entry::File(path, content) => {
                let h = header(path, tar::EntryType::Regular, 0o644, content.len() as u64);
                b.append(&h, content.as_bytes()).unwrap();
            }
            Entry::Link(path, target) => {
                let mut h = header(path, tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Xattr(path, name, value) => {
                let key = format!("SCHILY.xattr.{name}");
                b.append_pax_extensions([(key.as_str(), value.as_bytes())])
                    .unwrap();
                let h = header(path, tar::EntryType::Regular, 0o600, 0);
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Loads `multi:latest`: the busybox image plus two layers with whiteouts,
/// an opaque directory, a hard link and an xattr.
fn load_multi_layer_image(host: &Host) {
    let work = host.root().parent().unwrap().to_path_buf();
    let saved = work.join("bb.tar");
    host.ok(&["save", "-o", saved.to_str().unwrap(), "bb"]);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in tar::Archive::new(fs::File::open(&saved).unwrap())
        .entries()
        .unwrap()
    {
        let mut entry = entry.unwrap();
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&files.remove("manifest.json").unwrap()).unwrap();
    // Only the Docker format's metadata, rewritten below.
    for other in ["index.json", "oci-layout", "repositories"] {
        files.remove(other);
    }
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&files[&config_name]).unwrap();

    let second = layer_tar(&[
        Entry::Dir("data", 0o755),
        Entry::File("data/a", "a"),
        Entry::File("data/b", "b"),
        Entry::Dir("data/sub", 0o755),
        Entry::File("data/sub/c", "c"),
        Entry::Dir("bin", 0o755),
        Entry::File("bin/.wh.yes", ""),
        Entry::File("bin/hl1", "hard"),
        Entry::Link("bin/hl2", "bin/hl1"),
        Entry::Dir("etc", 0o755),
        Entry::File("etc/extra", "extra"),
    ]);
    let third = layer_tar(&[
        Entry::Dir("data", 0o750),
        Entry::File("data/.wh..wh..opq", ""),
        Entry::File("data/new", "new"),
        Entry::Dir("etc", 0o755),
        Entry::File("etc/.wh.extra", ""),
        Entry::Xattr("etc/noted", "user.note", "hello"),
    ]);
    for layer in [second, third] {
        let hex = hex::encode(sha2::Sha256::digest(&layer));
        let name = format!("{hex}/layer.tar");
        files.insert(name.clone(), layer);
        manifest[0]["Layers"]
            .as_array_mut()
            .unwrap()
            .push(name.into());
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(format!("sha256:{hex}").into());
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", hex::encode(sha2::Sha256::digest(&config)));
    files.insert(config_name.clone(), config);
    manifest[0]["Config"] = config_name.into();
    manifest[0]["RepoTags"] = serde_json::json!(["multi:latest"]);
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );

    let archive = work.join("multi.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
    for (name, bytes) in &files {
        let h = header(name, tar::EntryType::Regular, 0o644, bytes.len() as u64);
        b.append(&h, &bytes[..]).unwrap();
    }
    b.into_inner().unwrap();
    host.ok(&["load", "-i", archive.to_str().unwrap()]);
}

#[test]
fn whiteouts_and_opaque_directories_of_a_layered_image_are_honoured() {
    let host = Host::new();
    undecided(&host);
    load_multi_layer_image(&host);
    vfs_daemon(&host);
    let script = "ls /data; stat -c %a /data; cat /bin/hl2; \
                  test -e /bin/yes || echo no-yes; test -e /etc/extra || echo no-extra; \
                  cat /etc/passwd | head -1";
    let out = host.stack(&["run", "--rm", "multi", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "new\n750\nhardno-yes\nno-extra\nroot:x:0:0:root:/root:/bin/sh\n"
    );
}

/// What a tree shows at every path: type, mode, owner, device, size and
/// mtime (not for directories, whose size overlayfs reports its own way),
/// content, link target, content xattrs, and which earlier path it is a
/// hard link of.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut first_of: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let rel_path = rel.join(&name);
            let path = root.join(&rel_path);
            let meta = fs::symlink_metadata(&path).unwrap();
            let shown = rel_path.display().to_string();
            let ft = meta.file_type();
            let mut line = format!(
                "{shown} mode={:o} owner={}:{} rdev={}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.rdev()
            );
            if ft.is_dir() {
                stack.push(rel_path.clone());
            } else {
                line += &format!(" size={} mtime={}", meta.len(), meta.mtime());
            }
            if ft.is_file() {
                line += &format!(
                    " sha={}",
                    hex::encode(sha2::Sha256::digest(fs::read(&path).unwrap()))
                );
                if meta.nlink() > 1 {
                    let first = first_of.entry(meta.ino()).or_insert_with(|| shown.clone());
                    line += &format!(" link-of={first}");
                }
            }
            if ft.is_symlink() {
                line += &format!(" -> {}", fs::read_link(&path).unwrap().display());
            }
            assert!(
                !ft.is_char_device() || meta.rdev() != 0,
                "a whiteout shows: {shown}"
            );
            let mut names = vec![0u8; 64 * 1024];
            let len = rustix::fs::llistxattr(&path, &mut names[..]).unwrap();
            let mut xattrs: Vec<String> = names[..len]
                .split(|&b| b == 0)
                .filter(|n| !n.is_empty())
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .filter(|n| !n.starts_with("trusted.overlay.") && n != "security.selinux")
                .map(|n| {
                    let mut value = vec![0u8; 64 * 1024];
                    let len = rustix::fs::lgetxattr(&path, n.as_str(), &mut value[..]).unwrap();
                    format!("{n}={}", String::from_utf8_lossy(&value[..len]))
                })
                .collect();
            xattrs.sort();
            if !xattrs.is_empty() {
                line += &format!(" xattrs={}", xattrs.join(","));
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

/// An overlay mount, unmounted when dropped.
struct OverlayMount(PathBuf);

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn the_copy_shows_what_the_overlay_mount_of_the_layers_shows() {
    let host = Host::new();
    undecided(&host);
    load_multi_layer_image(&host);
    let layers = layer_dirs(&host, "multi");
    assert_eq!(layers.len(), 3);
    let work = host.root().parent().unwrap().to_path_buf();
    let copy = work.join("copy");
    fs::create_dir(&copy).unwrap();
    stack::image::layer::flatten(&layers, &copy).unwrap();

    let target = work.join("overlay");
    fs::create_dir(&target).unwrap();
    let lowers: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    nix::mount::mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lowers.join(":")).as_str()),
    )
    .unwrap();
    let mounted = OverlayMount(target.clone());
    let through_overlay = listing(&mounted.0);
    let copied = listing(&copy);
    drop(mounted);
    assert_eq!(copied, through_overlay);
    // The fixture exercises what it claims to.
    let text = copied.join("\n");
    assert!(text.contains("data/new "), "{text}");
    assert!(!text.contains("data/a "), "{text}");
    assert!(!text.contains("bin/yes "), "{text}");
    assert!(text.contains("link-of=bin/hl1"), "{text}");
    assert!(text.contains("xattrs=user.note=hello"), "{text}");
}

#[test]
fn a_commit_of_a_vfs_container_holds_only_its_changes() {
    let host = Host::new();
    undecided(&host);
    vfs_daemon(&host);
    host.ok(&[
        "run",
        "--name",
        "changed",
        "bb",
        "sh",
        "-c",
        "echo data > /root/file; rm /bin/yes; mkdir /opt",
    ]);
    host.ok(&["commit", "changed", "snap:1"]);
    let out = host.stack(&["run", "--rm", "snap:1", "cat", "/root/file"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data\n");
    let out = host.stack(&["run", "--rm", "snap:1", "ls", "/bin/yes"]);
    assert_ne!(out.status.code(), Some(0), "the deletion is a whiteout");
    let out = host.stack(&["run", "--rm", "snap:1", "ls", "-d", "/opt", "/bin/busybox"]);
    assert!(out.status.success());
    // The new layer is the changes, not a second copy of the image.
    let layers = layer_dirs(&host, "snap:1");
    assert_eq!(layers.len(), 2);
    let top = &layers[1];
    assert_eq!(fs::read_to_string(top.join("root/file")).unwrap(), "data\n");
    let yes = fs::symlink_metadata(top.join("bin/yes")).unwrap();
    assert!(yes.file_type().is_char_device() && yes.rdev() == 0);
    assert!(top.join("opt").is_dir());
    // What the image has and the container left alone is not in it (the
    // runtime's mount points, /etc/hostname and the like, are changes).
    assert!(!top.join("bin/busybox").exists());
    assert!(!top.join("etc/passwd").exists());
    assert!(fs::symlink_metadata(top.join("bin/sh")).is_err());
    assert_ne!(image_id(&host, "snap:1"), image_id(&host, "bb"));

    // Export gives the whole root, image and changes.
    let tar = host.root().parent().unwrap().join("export.tar");
    host.ok(&["export", "-o", tar.to_str().unwrap(), "changed"]);
    let mut names = Vec::new();
    for entry in tar::Archive::new(fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
    {
        let entry = entry.unwrap();
        names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
    }
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(names.iter().any(|n| n == "root/file"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/yes"), "{names:?}");
}

#[test]
fn a_root_keeps_the_driver_it_was_first_used_with() {
    let host = Host::new();
    undecided(&host);
    let out = host.stack(&["daemon", "--storage-driver", "zfs"]);
    assert!(!out.status.success());
    let err = squeezed(&out.stderr);
    assert!(err.contains("overlayandvfs"), "{err}");

    vfs_daemon(&host);
    host.ok(&["create", "--name", "kept", "bb", "true"]);
    crate::stop_daemon(&host.root());
    for flags in [
        &["daemon", "--storage-driver", "overlay"][..],
        &["daemon", "-s", "overlay"][..],
    ] {
        let out = host.stack(flags);
        assert!(!out.status.success());
        let err = squeezed(&out.stderr);
        assert!(
            err.contains("usesthevfsstoragedriver") && err.contains("--storage-drivervfs"),
            "{err}"
        );
    }
    // Without the flag (and so when a command starts the daemon), the
    // recorded driver is used.
    assert!(host.ok(&["info"]).contains("Storage Driver: vfs"));
    assert_eq!(host.ok(&["start", "-a", "kept"]), "");
    crate::stop_daemon(&host.root());
    start_daemon(&host, &["daemon", "-s", "vfs"]);
    assert_eq!(host.inspect("kept")["Driver"], "vfs");
}

#[test]
fn an_overlay_root_refuses_vfs() {
    let host = Host::new();
    undecided(&host);
    host.ok(&["create", "--name", "lay", "bb", "true"]);
    assert_eq!(host.inspect("lay")["Driver"], "overlay");
    crate::stop_daemon(&host.root());
    let out = host.stack(&["daemon", "--storage-driver", "vfs"]);
    assert!(!out.status.success());
    let err = squeezed(&out.stderr);
    assert!(err.contains("usestheoverlaystoragedriver"), "{err}");
}

#[test]
fn without_overlayfs_the_overlay_driver_points_to_vfs() {
    let host = Host::new();
    undecided(&host);
    let list = host.root().parent().unwrap().join("filesystems");
    fs::write(&list, "nodev\tsysfs\nnodev\ttmpfs\n\text4\n").unwrap();
    // The daemon's parts run on a tokio runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let mut options = stack::daemon::Options::for_root(&host.root());
    options.proc_filesystems = list.clone();
    let err = stack::daemon::Daemon::open(options.clone()).unwrap_err();
    let err = stack::error_chain(&err);
    assert!(err.contains("--storage-driver vfs"), "{err}");
    // Nothing was recorded: the root may still become a vfs one.
    assert!(!stack::image::driver::record_path(&host.root()).exists());
    options.storage_driver = Some(stack::image::driver::StorageDriver::Vfs);
    let daemon = stack::daemon::Daemon::open(options).unwrap();
    assert_eq!(
        daemon.containers.storage_driver(),
        stack::image::driver::StorageDriver::Vfs
    );
}
