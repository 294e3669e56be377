//! COPY and ADD: Docker's path rules, and the staging of what a step adds.
//!
//! Sources are resolved against a source tree (the context, honouring
//! `.dockerignore`, or another stage's or image's flattened root): paths
//! are cleaned, a path that leaves the tree (`../`, or a symlink whose
//! target is absolute or climbs out) is refused, wildcards match with Go's
//! `filepath.Match` one path component at a time. A directory source
//! copies its contents. The destination is a directory when it ends in `/`
//! or when there are several sources (which then requires the `/`), and
//! relative destinations are against WORKDIR.
//!
//! What a step adds is written into a fresh staging directory (owners and
//! modes set there), then stored as one layer tar. Parent directories that
//! the image does not have are created 0755 root; those it has keep their
//! metadata.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::BuildError;
use super::context::{Context, Kind};

/// Go's `filepath.Match` on one component (no `/` in `name`).
pub fn go_match(pattern: &str, name: &str) -> Result<bool, BuildError> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
        .map_err(|()| BuildError::Instruction(format!("syntax error in pattern {pattern:?}")))
}

fn match_from(p: &[char], n: &[char]) -> Result<bool, ()> {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() && n[ni] != '/' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() => {
                    let (ok, next) = class(p, pi, n[ni])?;
                    if ok {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() && ni < n.len() && p[pi + 1] == n[ni] => {
                    pi += 2;
                    ni += 1;
                    continue;
                }
                '\\' if pi + 1 >= p.len() => return Err(()),
                c if c != '*'
                    && c != '?'
                    && c != '['
                    && c != '\\'
                    && ni < n.len()
                    && c == n[ni] =>
                {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Ok(true);
        }
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => {
                // Check the rest of the pattern is well formed, as Go does.
                let mut i = pi;
                while i < p.len() {
                    if p[i] == '[' {
                        i = class(p, i, '\0')?.1;
                    } else {
                        i += if p[i] == '\\' { 2 } else { 1 };
                    }
                }
                if i > p.len() {
                    return Err(());
                }
                return Ok(false);
            }
        }
    }
}

/// Matches `c` against the class starting at `p[start] == '['`; returns
/// whether it matched and the index after the class.
fn class(p: &[char], start: usize, c: char) -> Result<(bool, usize), ()> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&ch) = p.get(i) else {
            return Err(());
        };
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i).ok_or(())?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            i += 1;
            hi = if p[i] == '\\' {
                i += 1;
                *p.get(i).ok_or(())?
            } else {
                p[i]
            };
            i += 1;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Ok((matched != negated, i))
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path into a path relative to its tree (`""` is the
/// root), refusing one that leaves it.
pub fn clean_source(src: &str) -> Result<String, BuildError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(outside(src));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn outside(src: &str) -> BuildError {
    BuildError::Refused(format!("forbidden path outside the build context: {src}"))
}

/// Joins a destination to WORKDIR and cleans it; the result is absolute.
/// Whether it names a directory (a trailing `/` or `/.`) is kept apart.
pub fn resolve_dest(dest: &str, workdir: &str) -> (String, bool) {
    let is_dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    (format!("/{}", parts.join("/")), is_dir)
}

/// Where sources are read from.
#[derive(Debug, Clone, Copy)]
pub enum Tree<'a> {
    /// The build context (only its non-ignored entries exist).
    Context(&'a Context),
    /// A directory holding a whole root file system (another stage, an
    /// image).
    Dir(&'a Path),
}

impl Tree<'_> {
    fn root(&self) -> &Path {
        match self {
            Tree::Context(c) => &c.root,
            Tree::Dir(d) => d,
        }
    }

    /// Children names of directory `rel`.
    fn children(&self, rel: &str) -> Vec<String> {
        match self {
            Tree::Context(c) => {
                let prefix = if rel.is_empty() {
                    String::new()
                } else {
                    format!("{rel}/")
                };
                c.entries
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| !k[prefix.len()..].contains('/'))
                    .map(|(k, _)| k[prefix.len()..].to_string())
                    .collect()
            }
            Tree::Dir(d) => {
                let mut names: Vec<String> = fs::read_dir(d.join(rel))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect();
                names.sort();
                names
            }
        }
    }

    /// Whether `rel` exists (not followed).
    fn exists(&self, rel: &str) -> bool {
        match self {
            Tree::Context(c) => rel.is_empty() || c.entries.contains_key(rel),
            Tree::Dir(d) => fs::symlink_metadata(d.join(rel)).is_ok(),
        }
    }

    /// Whether `rel` is excluded from the tree (ignored in the context).
    fn included(&self, rel: &str) -> bool {
        match self {
            Tree::Context(c) => c.entries.contains_key(rel),
            Tree::Dir(_) => true,
        }
    }
}

/// Resolves `rel` inside `tree`, following symlinks on the way (each
/// component, and the last one) while they stay inside; a symlink that
/// leads out (an absolute target, or `..` above the root) is refused.
pub fn follow(tree: Tree<'_>, rel: &str, src: &str) -> Result<String, BuildError> {
    let root = tree.root();
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = rel
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                if done.pop().is_none() {
                    return Err(outside(src));
                }
                continue;
            }
            _ => {}
        }
        done.push(part);
        let path = root.join(done.join("/"));
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(BuildError::Refused(format!(
                    "too many levels of symbolic links in {src}"
                )));
            }
            let target = fs::read_link(&path).map_err(BuildError::io("read the symlink", &path))?;
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                return Err(outside(src));
            }
            done.pop();
            for t in target.split('/').rev() {
                if !t.is_empty() {
                    todo.push(t.to_string());
                }
            }
        }
    }
    Ok(done.join("/"))
}

/// The source paths (relative to the tree) `src` names: wildcards
/// expanded one component at a time, symlinks on the way followed inside.
pub fn sources(tree: Tree<'_>, src: &str) -> Result<Vec<String>, BuildError> {
    let cleaned = clean_source(src)?;
    if !has_wildcard(&cleaned) {
        let real = follow(tree, &cleaned, src)?;
        if !tree.exists(&real) || (!real.is_empty() && !tree.included(&real)) {
            return Err(BuildError::NotFound(cleaned));
        }
        return Ok(vec![real]);
    }
    let mut found = vec![String::new()];
    for part in cleaned.split('/') {
        let mut next = Vec::new();
        for base in &found {
            if has_wildcard(part) {
                for child in tree.children(base) {
                    if go_match(part, &child)? {
                        next.push(join(base, &child));
                    }
                }
            } else {
                let p = join(base, part);
                if tree.exists(&p) {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    if found.is_empty() {
        return Err(BuildError::Instruction(format!(
            "COPY failed: no source files were specified (no match for {src})"
        )));
    }
    let mut out = Vec::new();
    for f in found {
        out.push(follow(tree, &f, src)?);
    }
    Ok(out)
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// An image's layers, base first, to look paths up in (top layer wins,
/// whiteouts hide).
#[derive(Debug, Clone, Default)]
pub struct Layers(pub Vec<PathBuf>);

impl Layers {
    /// The metadata of absolute `path` in the image, if it exists.
    pub fn lookup(&self, path: &str) -> Option<fs::Metadata> {
        let rel = path.trim_start_matches('/');
        for layer in self.0.iter().rev() {
            if rel.is_empty() {
                return fs::symlink_metadata(layer).ok();
            }
            if let Ok(m) = fs::symlink_metadata(layer.join(rel)) {
                return Some(m);
            }
            // A whiteout of the path or of a parent hides lower layers.
            let mut p = rel;
            loop {
                let (parent, name) = match p.rsplit_once('/') {
                    Some((a, b)) => (a, b),
                    None => ("", p),
                };
                if layer.join(parent).join(format!(".wh.{name}")).exists() {
                    return None;
                }
                if parent.is_empty() {
                    break;
                }
                p = parent;
            }
        }
        None
    }

    /// The content of a file of the image (for /etc/passwd and /etc/group).
    pub fn read(&self, path: &str) -> Option<String> {
        let rel = path.trim_start_matches('/');
        for layer in self.0.iter().rev() {
            if let Ok(text) = fs::read_to_string(layer.join(rel)) {
                return Some(text);
            }
        }
        None
    }
}

/// Resolves `--chown user[:group]` against the image's /etc/passwd and
/// /etc/group, as Docker does (names or numeric ids; a numeric user with
/// no group takes the same number as its group, a name its primary group).
pub fn resolve_chown(spec: &str, layers: &Layers) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = layers.read("/etc/passwd").unwrap_or_default();
    let (uid, primary) = if let Ok(n) = user.parse::<u32>() {
        (n, n)
    } else {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == user)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                BuildError::Instruction(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => layers
                .read("/etc/group")
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

/// Parses `--chmod` (octal only, as the classic builder accepts).
pub fn parse_chmod(spec: &str) -> Result<u32, BuildError> {
    u32::from_str_radix(spec, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            BuildError::Instruction(format!(
                "invalid chmod parameter {spec:?}: must be an octal mode"
            ))
        })
}

/// How a COPY or ADD writes files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ownership {
    /// `--chown`, resolved.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub mode: Option<u32>,
}

/// The staging directory of one step: an image-shaped tree of what the
/// step adds.
#[derive(Debug)]
pub struct Staging<'a> {
    /// The directory.
    pub root: PathBuf,
    /// The image the step runs on.
    pub layers: &'a Layers,
    /// Owners and modes to apply.
    pub own: Ownership,
}

impl Staging<'_> {
    /// Creates absolute directory `path`'s parents (and itself) in the
    /// staging tree, with the image's metadata where the image has them,
    /// 0755 root where it does not.
    pub fn mkdirs(&self, path: &str, own_last: bool) -> Result<PathBuf, BuildError> {
        let mut cur = self.root.clone();
        let mut abs = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            abs.push('/');
            abs.push_str(part);
            if fs::symlink_metadata(&cur).is_ok() {
                continue;
            }
            fs::create_dir(&cur).map_err(BuildError::io("create", &cur))?;
            let last = i + 1 == parts.len();
            match self.layers.lookup(&abs).filter(|m| m.is_dir()) {
                Some(m) => {
                    set_meta(
                        &cur,
                        m.mode() & 0o7777,
                        (m.uid(), m.gid()),
                        Some(mtime_of(&m)),
                    )?;
                }
                None => {
                    let owner = if last && own_last {
                        self.own.owner.unwrap_or((0, 0))
                    } else {
                        (0, 0)
                    };
                    set_meta(&cur, 0o755, owner, None)?;
                }
            }
        }
        Ok(cur)
    }

    /// Copies `src` (a path inside `tree`) to absolute `dest` in the
    /// staging tree: a directory's contents into `dest`, a file or symlink
    /// as `dest`.
    pub fn copy(&self, tree: Tree<'_>, src: &str, dest: &str) -> Result<(), BuildError> {
        let from = tree.root().join(src);
        let meta = fs::symlink_metadata(&from).map_err(BuildError::io("read", &from))?;
        if meta.is_dir() {
            let to = self.mkdirs(dest, true)?;
            self.copy_dir(tree, src, &from, &to)
        } else {
            let (parent, _) = dest.rsplit_once('/').unwrap_or(("", dest));
            self.mkdirs(parent, false)?;
            let to = self.root.join(dest.trim_start_matches('/'));
            self.copy_one(&from, &meta, &to)
        }
    }

    fn copy_dir(
        &self,
        tree: Tree<'_>,
        rel: &str,
        from: &Path,
        to: &Path,
    ) -> Result<(), BuildError> {
        for name in tree.children(rel) {
            let child_rel = join(rel, &name);
            let child = from.join(&name);
            let meta = fs::symlink_metadata(&child).map_err(BuildError::io("read", &child))?;
            let dest = to.join(&name);
            if meta.is_dir() {
                if fs::symlink_metadata(&dest).is_err() {
                    fs::create_dir(&dest).map_err(BuildError::io("create", &dest))?;
                }
                self.copy_dir(tree, &child_rel, &child, &dest)?;
                self.apply(&dest, meta.mode() & 0o7777, Some(mtime_of(&meta)))?;
            } else {
                self.copy_one(&child, &meta, &dest)?;
            }
        }
        Ok(())
    }

    fn copy_one(&self, from: &Path, meta: &fs::Metadata, to: &Path) -> Result<(), BuildError> {
        if fs::symlink_metadata(to).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(to).map_err(BuildError::io("replace", to))?;
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(from).map_err(BuildError::io("read the symlink", from))?;
            std::os::unix::fs::symlink(&target, to).map_err(BuildError::io("create", to))?;
            let (uid, gid) = self.own.owner.unwrap_or((0, 0));
            std::os::unix::fs::lchown(to, Some(uid), Some(gid))
                .map_err(BuildError::io("chown", to))?;
            return Ok(());
        }
        if !ft.is_file() {
            return Ok(());
        }
        fs::copy(from, to).map_err(BuildError::io("copy into", to))?;
        self.apply(to, meta.mode() & 0o7777, Some(mtime_of(meta)))
    }

    /// Sets owner (from `--chown`, else root), mode (`--chmod`, else
    /// `mode`) and mtime.
    fn apply(&self, path: &Path, mode: u32, mtime: Option<(i64, i64)>) -> Result<(), BuildError> {
        set_meta(
            path,
            self.own.mode.unwrap_or(mode),
            self.own.owner.unwrap_or((0, 0)),
            mtime,
        )
    }

    /// Writes `data` as file `dest` (a heredoc source, a downloaded URL).
    pub fn write(
        &self,
        dest: &str,
        data: &[u8],
        mode: u32,
        mtime: Option<(i64, i64)>,
    ) -> Result<(), BuildError> {
        let (parent, _) = dest.rsplit_once('/').unwrap_or(("", dest));
        self.mkdirs(parent, false)?;
        let to = self.root.join(dest.trim_start_matches('/'));
        fs::write(&to, data).map_err(BuildError::io("write", &to))?;
        self.apply(&to, mode, mtime)
    }

    /// Extracts the archive `from` (plain tar, gzip, zstd; bzip2 and xz
    /// through the host's `bzip2`/`xz`) into directory `dest`. Returns
    /// false when it is not an archive (then it is copied as a file).
    pub fn extract(&self, from: &Path, dest: &str) -> Result<bool, BuildError> {
        let mut head = [0u8; 512];
        let n = {
            let mut f = fs::File::open(from).map_err(BuildError::io("read", from))?;
            read_full(&mut f, &mut head).map_err(BuildError::io("read", from))?
        };
        let head = &head[..n];
        let mut decompressor = None;
        let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
            let f = fs::File::open(from).map_err(BuildError::io("read", from))?;
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let f = fs::File::open(from).map_err(BuildError::io("read", from))?;
            Box::new(zstd::stream::read::Decoder::new(f).map_err(BuildError::io("read", from))?)
        } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            let program = if head.starts_with(b"BZh") {
                "bzip2"
            } else {
                "xz"
            };
            // Streamed: the decompressed archive is never held in memory.
            let mut child = std::process::Command::new(program)
                .arg("-dc")
                .arg(from)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(BuildError::io("run the decompressor for", from))?;
            let Some(out) = child.stdout.take() else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BuildError::Instruction(format!(
                    "cannot decompress {}: {program} gave no output",
                    from.display()
                )));
            };
            decompressor = Some((program, child));
            Box::new(out)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Box::new(fs::File::open(from).map_err(BuildError::io("read", from))?)
        } else {
            return Ok(false);
        };
        let unpacked = self.unpack(reader, from, dest);
        if let Some((program, mut child)) = decompressor {
            // On an unpack error the decompressor may still be writing.
            if unpacked.is_err() {
                let _ = child.kill();
            }
            let status = child
                .wait()
                .map_err(BuildError::io("run the decompressor for", from))?;
            if unpacked.is_ok() && !status.success() {
                return Err(BuildError::Instruction(format!(
                    "cannot decompress {}: {program} exited with {status}",
                    from.display()
                )));
            }
        }
        unpacked.map(|()| true)
    }

    /// Unpacks the tar stream `reader` (read from `from`) into directory
    /// `dest`.
    fn unpack(&self, reader: Box<dyn Read>, from: &Path, dest: &str) -> Result<(), BuildError> {
        let to = self.mkdirs(dest, false)?;
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(self.own.owner.is_none());
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        for entry in archive
            .entries()
            .map_err(BuildError::io("read the archive", from))?
        {
            let mut entry = entry.map_err(BuildError::io("read the archive", from))?;
            // unpack_in refuses entries that would land outside `to`.
            entry
                .unpack_in(&to)
                .map_err(BuildError::io("extract", from))?;
        }
        // What follows the end of the archive is read too, so a
        // decompressor writing it is never cut off with a broken pipe.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink())
            .map_err(BuildError::io("read the archive", from))?;
        if let Some((uid, gid)) = self.own.owner {
            chown_tree(&to, uid, gid)?;
        }
        Ok(())
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), BuildError> {
    for entry in fs::read_dir(dir).map_err(BuildError::io("read", dir))? {
        let entry = entry.map_err(BuildError::io("read", dir))?;
        let p = entry.path();
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(BuildError::io("chown", &p))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            chown_tree(&p, uid, gid)?;
        }
    }
    Ok(())
}

fn mtime_of(m: &fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

fn set_meta(
    path: &Path,
    mode: u32,
    (uid, gid): (u32, u32),
    mtime: Option<(i64, i64)>,
) -> Result<(), BuildError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(BuildError::io("chown", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("chmod", path))?;
    if let Some((s, ns)) = mtime {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(s).unwrap_or(0),
                u32::try_from(ns).unwrap_or(0),
            );
        let f = fs::File::open(path).map_err(BuildError::io("open", path))?;
        f.set_modified(t)
            .map_err(BuildError::io("set the mtime of", path))?;
    }
    Ok(())
}

/// The files (relative paths) a context copy reads, for the cache key.
pub fn context_hash(ctx: &Context, paths: &[String]) -> String {
    ctx.hash_paths(paths)
}

/// Whether `rel` in the context is a regular file (ADD extracts those).
pub fn is_context_file(ctx: &Context, rel: &str) -> bool {
    matches!(
        ctx.entries.get(rel).map(|e| &e.kind),
        Some(Kind::File { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_follows_filepath_match() {
        assert!(go_match("*.txt", "a.txt").unwrap());
        assert!(!go_match("*.txt", "a.txd").unwrap());
        assert!(go_match("a?c", "abc").unwrap());
        assert!(go_match("[a-c]x", "bx").unwrap());
        assert!(!go_match("[^a-c]x", "bx").unwrap());
        assert!(go_match("\\*", "*").unwrap());
        assert!(!go_match("\\*", "a").unwrap());
        assert!(go_match("*", "").unwrap());
        assert!(go_match("a*b*c", "axxbyyc").unwrap());
        assert!(go_match("[", "a").is_err());
    }

    #[test]
    fn sources_are_cleaned_and_kept_inside() {
        assert_eq!(clean_source("./a/../b").unwrap(), "b");
        assert_eq!(clean_source("/x/y").unwrap(), "x/y");
        assert!(clean_source("../etc/passwd").is_err());
        assert!(clean_source("a/../../b").is_err());
    }

    #[test]
    fn destinations_follow_workdir() {
        assert_eq!(resolve_dest("b/", "/app"), ("/app/b".into(), true));
        assert_eq!(resolve_dest("/x", "/app"), ("/x".into(), false));
        assert_eq!(resolve_dest(".", "/app"), ("/app".into(), true));
        assert_eq!(resolve_dest("../y", "/app/w"), ("/app/y".into(), false));
    }

    #[test]
    fn symlinks_out_of_the_tree_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("d/up")).unwrap();
        std::os::unix::fs::symlink("d", root.join("in")).unwrap();
        let t = Tree::Dir(root);
        assert!(follow(t, "abs/passwd", "abs/passwd").is_err());
        assert!(follow(t, "d/up/x", "d/up/x").is_err());
        assert_eq!(follow(t, "in/f", "in/f").unwrap(), "d/f");
        assert!(sources(t, "d/*").is_err());
        assert_eq!(sources(t, "d/f*").unwrap(), ["d/f"]);
        assert!(matches!(sources(t, "nope"), Err(BuildError::NotFound(_))));
    }
}
