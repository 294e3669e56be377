//! Users and groups as the container sees them: `--user name|uid[:group|gid]`
//! resolved against the container's own `/etc/passwd` and `/etc/group`, with
//! runc's rules (a numeric id need not exist; a name must; supplementary
//! groups come from `/etc/group` membership).

use std::fs;
use std::io;
use std::path::Path;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// The home directory, when the user is in `/etc/passwd`.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or("/").to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_optional(path: &Path) -> io::Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`…) with the given
/// passwd and group files; missing files count as empty.
pub fn resolve(spec: &str, passwd: &Path, group: &Path) -> io::Result<ExecUser> {
    resolve_in(spec, &read_optional(passwd)?, &read_optional(group)?)
}

fn not_found(what: &str, name: &str, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("unable to find {what} {name}: no matching entries in {file} file"),
    )
}

fn resolve_in(spec: &str, passwd: &str, group: &str) -> io::Result<ExecUser> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let entry = if user_part.is_empty() {
        users.iter().find(|u| u.uid == 0)
    } else if let Ok(uid) = user_part.parse::<u32>() {
        users.iter().find(|u| u.uid == uid)
    } else {
        Some(
            users
                .iter()
                .find(|u| u.name == user_part)
                .ok_or_else(|| not_found("user", user_part, "passwd"))?,
        )
    };
    let uid = match (entry, user_part.parse::<u32>()) {
        (_, Ok(uid)) => uid,
        (Some(e), Err(_)) => e.uid,
        (None, Err(_)) => 0,
    };
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| not_found("group", g, "group"))?,
        };
    }
    let supplementary = match entry {
        Some(e) => groups
            .iter()
            .filter(|g| g.members.contains(&e.name) && g.gid != gid)
            .map(|g| g.gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(ExecUser {
        uid,
        gid,
        groups: supplementary,
        home: entry.map(|e| e.home.clone()),
    })
}

/// Resolves extra groups (`--group-add`) by name or number.
pub fn resolve_groups(names: &[String], group: &Path) -> io::Result<Vec<u32>> {
    let groups = parse_group(&read_optional(group)?);
    names
        .iter()
        .map(|n| match n.parse::<u32>() {
            Ok(g) => Ok(g),
            Err(_) => groups
                .iter()
                .find(|e| &e.name == n)
                .map(|e| e.gid)
                .ok_or_else(|| not_found("group", n, "group")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,root\napp:x:1000:\naudio:x:29:app\n";

    #[test]
    fn names_resolve_with_their_groups_and_home() {
        let u = resolve_in("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            u,
            ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 29],
                home: Some("/home/app".into())
            }
        );
    }

    #[test]
    fn numeric_ids_need_not_exist() {
        let u = resolve_in("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4242, 4343, None));
        let u = resolve_in("1", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1, 1));
    }

    #[test]
    fn group_names_override_the_primary_group() {
        let u = resolve_in("app:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 10, vec![29]));
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = resolve_in("nobody", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert!(resolve_in("app:nogroup", PASSWD, GROUP).is_err());
    }
}
