//! Legacy links (`docker run --link NAME[:ALIAS]`): the `/etc/hosts` entries
//! and environment variables a container gets for each container it links
//! to, in Docker's format (moby `daemon/links/links.go` and the "Legacy
//! container links" page of Docker's documentation).
//!
//! Pure: the daemon looks up the linked containers (address, exposed ports,
//! environment) at create time and passes them in as [`LinkedContainer`]s.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One `--link NAME[:ALIAS]`: the linked container and the alias it is
/// known by (its name when no alias is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkSpec {
    /// The linked container's name (or id).
    pub name: String,
    /// The alias.
    pub alias: String,
}

/// Why a `--link` value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --link {input:?}: expected NAME[:ALIAS]")]
pub struct LinkError {
    /// The value as given.
    pub input: String,
}

impl FromStr for LinkSpec {
    type Err = LinkError;

    /// `NAME` or `NAME:ALIAS`; a leading `/` on either is dropped, as Docker
    /// names are stored with one. Inspect's form `/NAME:/CONTAINER/ALIAS`
    /// (a `HostConfig.Links` entry sent back) gives its last part as the
    /// alias (moby `opts.ParseLink`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, alias) = s.split_once(':').unwrap_or((s, s));
        let alias = if name.starts_with('/') {
            alias.rsplit('/').next().unwrap_or(alias)
        } else {
            alias
        };
        let name = name.trim_start_matches('/');
        let alias = alias.trim_start_matches('/');
        if name.is_empty() || alias.is_empty() || alias.contains(':') {
            return Err(LinkError { input: s.into() });
        }
        Ok(LinkSpec {
            name: name.into(),
            alias: alias.into(),
        })
    }
}

impl TryFrom<String> for LinkSpec {
    type Error = LinkError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LinkSpec> for String {
    fn from(l: LinkSpec) -> String {
        l.to_string()
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.alias)
    }
}

/// What a link needs to know about the container linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedContainer {
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// The alias the linking container knows it by.
    pub alias: String,
    /// Its host name.
    pub hostname: String,
    /// Its addresses on the network both are on.
    pub addrs: Vec<IpAddr>,
    /// Its exposed ports as Docker writes them: `80`, `80/tcp`, `53/udp`,
    /// `8000-8002/tcp`.
    pub exposed: Vec<String>,
    /// Its configured environment (`NAME=value`; the image's and its own).
    pub env: Vec<String>,
}

/// The `/etc/hosts` entries for a link: each address with
/// `ALIAS HOSTNAME [NAME]` (the name only when it differs from the alias).
pub fn link_hosts_entries(linked: &LinkedContainer) -> Vec<(IpAddr, String)> {
    let mut hosts = format!("{} {}", linked.alias, linked.hostname);
    if linked.alias != linked.name {
        hosts.push(' ');
        hosts.push_str(&linked.name);
    }
    linked.addrs.iter().map(|ip| (*ip, hosts.clone())).collect()
}

/// A port as `(number, protocol)`, with every port of a range.
fn exposed_ports(exposed: &[String]) -> Vec<(u16, String)> {
    let mut ports = Vec::new();
    for spec in exposed {
        let (range, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let proto = proto.to_ascii_lowercase();
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>()) else {
            continue;
        };
        for port in start..=end {
            if !ports.contains(&(port, proto.clone())) {
                ports.push((port, proto.clone()));
            }
        }
    }
    // By number, tcp first for one number (moby's sort in `ToEnv`).
    ports.sort_by(|a, b| (a.0, a.1 != "tcp", a.1.as_str()).cmp(&(b.0, b.1 != "tcp", b.1.as_str())));
    ports
}

/// Docker's link environment variables for one link from the container named
/// `container` (moby `links.Link.ToEnv`): `ALIAS_PORT` (the lowest port),
/// per port `ALIAS_PORT_80_TCP=tcp://IP:80` with `_ADDR`, `_PORT`, `_PROTO`,
/// `_START`/`_END` variables for runs of three or more consecutive ports,
/// `ALIAS_NAME=/container/alias`, and `ALIAS_ENV_X` for each of the linked
/// container's variables but HOME and PATH. The alias is upper-cased with
/// `-` turned into `_`; the address is the linked container's first one.
pub fn link_env(container: &str, linked: &LinkedContainer) -> Vec<String> {
    let alias = linked.alias.to_ascii_uppercase().replace('-', "_");
    let ip = linked
        .addrs
        .first()
        .map(IpAddr::to_string)
        .unwrap_or_default();
    let ports = exposed_ports(&linked.exposed);
    let mut env = Vec::new();
    if let Some((port, proto)) = ports.first() {
        env.push(format!("{alias}_PORT={proto}://{ip}:{port}"));
    }
    let mut i = 0;
    while i < ports.len() {
        // The last index of the run of consecutive numbers starting at i.
        let mut j = i;
        while j + 1 < ports.len() && u32::from(ports[j + 1].0) == u32::from(ports[j].0) + 1 {
            j += 1;
        }
        if j > i + 1 {
            let (p, proto) = &ports[i];
            let up = proto.to_ascii_uppercase();
            let (q, qproto) = &ports[j];
            let qup = qproto.to_ascii_uppercase();
            env.push(format!("{alias}_PORT_{p}_{up}_START={proto}://{ip}:{p}"));
            env.push(format!("{alias}_PORT_{p}_{up}_ADDR={ip}"));
            env.push(format!("{alias}_PORT_{p}_{up}_PROTO={proto}"));
            env.push(format!("{alias}_PORT_{p}_{up}_PORT_START={p}"));
            env.push(format!("{alias}_PORT_{p}_{qup}_END={qproto}://{ip}:{q}"));
            env.push(format!("{alias}_PORT_{p}_{qup}_PORT_END={q}"));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    for (port, proto) in &ports {
        let prefix = format!("{alias}_PORT_{port}_{}", proto.to_ascii_uppercase());
        env.push(format!("{prefix}={proto}://{ip}:{port}"));
        env.push(format!("{prefix}_ADDR={ip}"));
        env.push(format!("{prefix}_PORT={port}"));
        env.push(format!("{prefix}_PROTO={proto}"));
    }
    let container = container.trim_start_matches('/');
    env.push(format!("{alias}_NAME=/{container}/{}", linked.alias));
    for var in &linked.env {
        let Some((name, value)) = var.split_once('=') else {
            continue;
        };
        // Docker skips these: set by builds, not meaningful to the linker.
        if name == "HOME" || name == "PATH" {
            continue;
        }
        env.push(format!("{alias}_ENV_{name}={value}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn db() -> LinkedContainer {
        LinkedContainer {
            name: "db".into(),
            alias: "db".into(),
            hostname: "6e5cdeb2d300".into(),
            addrs: vec!["172.17.0.5".parse().unwrap()],
            exposed: strings(&["5432/tcp"]),
            env: strings(&[
                "PATH=/usr/bin",
                "HOME=/root",
                "PG_VERSION=9.3",
                "NOEQUALS",
                "EMPTY=",
            ]),
        }
    }

    #[test]
    fn link_specs_parse_as_docker_reads_them() {
        let l: LinkSpec = "db:webdb".parse().unwrap();
        assert_eq!((l.name.as_str(), l.alias.as_str()), ("db", "webdb"));
        let l: LinkSpec = "/db".parse().unwrap();
        assert_eq!((l.name.as_str(), l.alias.as_str()), ("db", "db"));
        // What inspect shows, sent back in a create body.
        let l: LinkSpec = "/db:/web/mydb".parse().unwrap();
        assert_eq!((l.name.as_str(), l.alias.as_str()), ("db", "mydb"));
        for bad in ["", ":x", "x:", "a:b:c"] {
            assert!(bad.parse::<LinkSpec>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "x:".parse::<LinkSpec>().unwrap_err().to_string(),
            "invalid --link \"x:\": expected NAME[:ALIAS]"
        );
    }

    /// The example of Docker's "Legacy container links" page:
    /// `docker run --name web2 --link db:db training/webapp env`.
    #[test]
    fn env_matches_dockers_documented_example() {
        let env = link_env("web2", &db());
        assert_eq!(
            env,
            strings(&[
                "DB_PORT=tcp://172.17.0.5:5432",
                "DB_PORT_5432_TCP=tcp://172.17.0.5:5432",
                "DB_PORT_5432_TCP_ADDR=172.17.0.5",
                "DB_PORT_5432_TCP_PORT=5432",
                "DB_PORT_5432_TCP_PROTO=tcp",
                "DB_NAME=/web2/db",
                "DB_ENV_PG_VERSION=9.3",
                "DB_ENV_EMPTY=",
            ])
        );
    }

    #[test]
    fn aliases_are_upper_cased_and_ports_sorted_tcp_first() {
        let mut linked = db();
        linked.alias = "my-db".into();
        linked.exposed = strings(&["53/udp", "53", "80"]);
        linked.env.clear();
        let env = link_env("/web", &linked);
        assert_eq!(env[0], "MY_DB_PORT=tcp://172.17.0.5:53");
        let protos: Vec<&str> = env
            .iter()
            .filter(|v| v.starts_with("MY_DB_PORT_"))
            .filter_map(|v| v.split_once("_PROTO="))
            .map(|(name, _)| name)
            .collect();
        // By number, tcp before udp for one number.
        assert_eq!(
            protos,
            [
                "MY_DB_PORT_53_TCP",
                "MY_DB_PORT_53_UDP",
                "MY_DB_PORT_80_TCP"
            ]
        );
        assert!(env.contains(&"MY_DB_NAME=/web/my-db".to_string()));
        assert!(env.contains(&"MY_DB_PORT_53_UDP=udp://172.17.0.5:53".to_string()));
    }

    #[test]
    fn runs_of_three_ports_get_start_and_end_variables() {
        let mut linked = db();
        linked.alias = "web".into();
        linked.exposed = strings(&["8000-8002/tcp", "9000/tcp", "9001/tcp"]);
        linked.env.clear();
        let env = link_env("c", &linked);
        let start = env
            .iter()
            .position(|v| v.starts_with("WEB_PORT_8000_TCP_START="))
            .unwrap();
        assert_eq!(
            env[start..start + 6],
            strings(&[
                "WEB_PORT_8000_TCP_START=tcp://172.17.0.5:8000",
                "WEB_PORT_8000_TCP_ADDR=172.17.0.5",
                "WEB_PORT_8000_TCP_PROTO=tcp",
                "WEB_PORT_8000_TCP_PORT_START=8000",
                "WEB_PORT_8000_TCP_END=tcp://172.17.0.5:8002",
                "WEB_PORT_8000_TCP_PORT_END=8002",
            ])
        );
        // Two consecutive ports are not a run.
        assert!(!env.iter().any(|v| v.starts_with("WEB_PORT_9000_TCP_START")));
        assert!(env.contains(&"WEB_PORT_9001_TCP=tcp://172.17.0.5:9001".to_string()));
        // No exposed port: no port variables.
        linked.exposed.clear();
        assert_eq!(link_env("c", &linked), strings(&["WEB_NAME=/c/web"]));
    }

    #[test]
    fn hosts_entries_are_alias_hostname_and_name() {
        let mut linked = db();
        assert_eq!(
            link_hosts_entries(&linked),
            [("172.17.0.5".parse().unwrap(), "db 6e5cdeb2d300".to_string())]
        );
        linked.alias = "webdb".into();
        linked.addrs.push("fd00::5".parse().unwrap());
        let entries = link_hosts_entries(&linked);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].1, "webdb 6e5cdeb2d300 db");
        assert_eq!(entries[1].0, "fd00::5".parse::<IpAddr>().unwrap());
    }
}
