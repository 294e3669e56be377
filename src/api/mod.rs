//! The daemon's REST API: JSON over HTTP/1.1 on a unix socket (or TCP with
//! TLS), shaped after Docker's Engine API. [`server`] is the daemon's side,
//! [`client`] the command line's; the types here are what both exchange.
//!
//! Paths are versioned (`/v1.0/containers/json`); unversioned paths are
//! served too, as Docker does. Errors are a status code and
//! [`ErrorBody`]. Streams that carry a container's stdio (attach, start with
//! attach, exec) are upgraded connections speaking the shim's frame protocol
//! ([`crate::runtime::attach`]), so the same relay code serves `run`,
//! `attach` and `exec`.

pub mod build;
pub mod client;
pub mod images;
pub mod networks;
pub mod server;
pub mod stacks;
pub mod tls;
pub mod verbs;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runtime::{ContainerRecord, ContainerState};

/// The API version this build speaks.
pub const VERSION: &str = "1.0";

/// The path prefix of this API version.
pub const PREFIX: &str = "/v1.0";

/// The largest request body the daemon reads (bodies that carry tar streams,
/// like archive uploads and image loads, are streamed and not bound by it).
pub const MAX_JSON_BODY: usize = 4 << 20;

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub message: String,
}

/// The answer to a create.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Created {
    /// The new container's id.
    pub id: String,
    /// Things the user should know.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One row of the container list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    /// How the container was asked for.
    pub record: ContainerRecord,
    /// What it is doing.
    pub state: ContainerState,
    /// Its command line.
    pub command: Vec<String>,
    /// How often the daemon restarted it.
    #[serde(default)]
    pub restart_count: u32,
    /// Its health when it runs with a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::reconcile::health::HealthStatus>,
    /// Bytes in its writable layer, when asked for (`size=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The answer to a wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Waited {
    /// The exit code.
    pub status_code: i32,
}

/// One sample of a container's resource use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// The container id.
    pub id: String,
    /// The container name.
    pub name: String,
    /// When the sample was taken, nanoseconds since the epoch.
    pub read_ns: u128,
    /// Memory in use (page cache excluded where the kernel tells it).
    pub memory: Option<u64>,
    /// The memory limit, `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// CPU time used so far.
    pub cpu_ns: Option<u64>,
    /// Processes (tasks) now.
    pub pids: Option<u64>,
}

/// Where a daemon listens or a client connects: `unix:///path` or
/// `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address (TLS only).
    Tcp(String),
}

impl Endpoint {
    /// Parses Docker's `-H` syntax; a bare path is a unix socket.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{text:?}: the unix socket path is empty"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: a TCP address needs a port (tcp://HOST:PORT)"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{text:?}: expected tcp://HOST:PORT"));
            }
            return Ok(Endpoint::Tcp(addr.to_string()));
        }
        if text.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(text)));
        }
        Err(format!(
            "{text:?}: expected unix:///PATH or tcp://HOST:PORT"
        ))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_docker_hosts() {
        assert_eq!(
            Endpoint::parse("unix:///run/stack/stack.sock"),
            Ok(Endpoint::Unix("/run/stack/stack.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2376"),
            Ok(Endpoint::Tcp("127.0.0.1:2376".into()))
        );
        assert_eq!(
            Endpoint::parse("/tmp/s.sock"),
            Ok(Endpoint::Unix("/tmp/s.sock".into()))
        );
        for bad in [
            "unix://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:port",
            "http://x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
