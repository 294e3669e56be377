//! Published ports between the request and the firewall: Docker's
//! `HostConfig.PortBindings` (what `-p` asks for) and `PublishAllPorts`
//! (`-P`) become [`PortRequest`]s for [`crate::net::firewall`]'s allocator,
//! and the [`Forward`]s it chose become Docker's `NetworkSettings.Ports`
//! map and `ps` column.
//!
//! Pure: no I/O. [`super::containers::Containers::create`] calls the
//! allocator (through the daemon) and keeps the result in the container
//! record: `extra["forwards"]` (the forwards, read back by the daemon's
//! firewall layer) and `extra["ports"]` (Docker's map, read by `inspect`,
//! `port` and `ps`), written with the record in one atomic file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::net::firewall::{Forward, PortRequest, Proto};
use crate::runtime::ContainerRecord;

pub use super::verbs::PortBinding;

/// The record key of the forwards a container's ports were given.
pub const FORWARDS_KEY: &str = "forwards";
/// The record key of Docker's `NetworkSettings.Ports` map.
pub const PORTS_KEY: &str = "ports";

/// Why a port binding of a request is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    /// A `PORT/PROTO` key that is not one (Docker: `nat.ParsePort`).
    #[error("invalid port {0:?}: expected PORT or PORT/PROTO with PROTO tcp, udp or sctp")]
    Port(String),
    /// A `HostIp` that is not an address.
    #[error("invalid host IP address {0:?} for a published port")]
    HostIp(String),
    /// A `HostPort` that is not a port or a range.
    #[error("invalid host port {0:?}: expected PORT or START-END")]
    HostPort(String),
    /// An `--expose` entry that is not a port or range.
    #[error("invalid range format for --expose: {0}")]
    Expose(String),
}

/// Docker's `HostConfig.PortBindings` for published ports (`-p` values,
/// a stack service's `port`s): per `PORT/PROTO`, the host addresses and
/// ports it is published on.
pub fn bindings_of<'a>(
    specs: impl IntoIterator<Item = &'a crate::spec::port::PortSpec>,
) -> BTreeMap<String, Vec<super::verbs::PortBinding>> {
    let mut out: BTreeMap<String, Vec<super::verbs::PortBinding>> = BTreeMap::new();
    for spec in specs {
        for b in spec.bindings() {
            out.entry(format!("{}/{}", b.container_port, b.protocol))
                .or_default()
                .push(super::verbs::PortBinding {
                    host_ip: b.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    host_port: b.host_port.map(|r| r.to_string()).unwrap_or_default(),
                });
        }
    }
    out
}

/// `80/tcp` (or `80`, for tcp) as a port and protocol.
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), PortsError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        _ => return Err(PortsError::Port(key.to_string())),
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| PortsError::Port(key.to_string()))?;
    Ok((port, proto))
}

/// The key Docker writes for a container port: `80/tcp`.
pub fn port_key(port: u16, proto: Proto) -> String {
    format!("{port}/{proto}")
}

/// Every port of `--expose` entries (`80`, `80/udp`, `8000-8010/tcp`) and
/// the image's `ExposedPorts` keys, as `PORT/PROTO` keys.
pub fn exposed_ports<'a>(
    image: impl IntoIterator<Item = &'a String>,
    expose: &[String],
) -> Result<BTreeSet<String>, PortsError> {
    let mut out = BTreeSet::new();
    for key in image {
        if let Ok((port, proto)) = parse_port_key(key) {
            out.insert(port_key(port, proto));
        }
    }
    for entry in expose {
        let (ports, proto) = entry.split_once('/').unwrap_or((entry, "tcp"));
        let range: crate::spec::port::PortRange = ports
            .parse()
            .map_err(|_| PortsError::Expose(entry.clone()))?;
        for port in range.iter() {
            let (port, proto) = parse_port_key(&format!("{port}/{proto}"))
                .map_err(|_| PortsError::Expose(entry.clone()))?;
            out.insert(port_key(port, proto));
        }
    }
    Ok(out)
}

/// One `HostPort` value: `""` or `"0"` is any free port, `"8080"` that
/// port, `"8000-8010"` the first free one of those.
fn parse_host_port(text: &str) -> Result<Option<std::ops::RangeInclusive<u16>>, PortsError> {
    let text = text.trim();
    if text.is_empty() || text == "0" {
        return Ok(None);
    }
    let range: crate::spec::port::PortRange = text
        .parse()
        .map_err(|_| PortsError::HostPort(text.to_string()))?;
    Ok(Some(range.start..=range.end))
}

/// What to allocate for a container: every binding of `bindings`, then,
/// with `publish_all` (`-P`), every port of `exposed` not bound already,
/// on an ephemeral host port. In key order, so allocation is
/// deterministic.
pub fn port_requests(
    bindings: &BTreeMap<String, Vec<PortBinding>>,
    publish_all: bool,
    exposed: &BTreeSet<String>,
) -> Result<Vec<PortRequest>, PortsError> {
    let mut requests = Vec::new();
    let mut bound = BTreeSet::new();
    for (key, list) in bindings {
        let (container_port, proto) = parse_port_key(key)?;
        bound.insert(port_key(container_port, proto));
        // Docker: a key with no binding at all still publishes the port on
        // an ephemeral host port.
        let empty = [PortBinding {
            host_ip: String::new(),
            host_port: String::new(),
        }];
        let list = if list.is_empty() { &empty[..] } else { list };
        for b in list {
            let host_ip = match b.host_ip.trim().trim_matches(['[', ']']) {
                "" => None,
                ip => Some(
                    ip.parse::<IpAddr>()
                        .map_err(|_| PortsError::HostIp(b.host_ip.clone()))?,
                ),
            };
            requests.push(PortRequest {
                proto,
                host_ip,
                host_ports: parse_host_port(&b.host_port)?,
                container_port,
            });
        }
    }
    if publish_all {
        for key in exposed.iter().filter(|k| !bound.contains(*k)) {
            let (container_port, proto) = parse_port_key(key)?;
            requests.push(PortRequest {
                proto,
                host_ip: None,
                host_ports: None,
                container_port,
            });
        }
    }
    Ok(requests)
}

/// The host address Docker shows for a forward: the one it listens on,
/// `0.0.0.0` for every IPv4 address.
fn shown_host_ip(f: &Forward) -> String {
    f.host_addr().ip().to_string()
}

/// Docker's `NetworkSettings.Ports`: every exposed port, with the host
/// addresses and ports it is published on, or `null` when it is only
/// exposed.
pub fn docker_ports(exposed: &BTreeSet<String>, forwards: &[Forward]) -> Value {
    let mut map: BTreeMap<String, Option<Vec<PortBinding>>> =
        exposed.iter().map(|k| (k.clone(), None)).collect();
    for f in forwards {
        map.entry(port_key(f.container_port, f.proto))
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: shown_host_ip(f),
                host_port: f.host_port.to_string(),
            });
    }
    json!(map)
}

/// The forwards recorded for a container (none for records without).
pub fn forwards_of(record: &ContainerRecord) -> Vec<Forward> {
    record
        .extra
        .get(FORWARDS_KEY)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Docker's `/containers/json` `Ports` entries of a container: one per
/// published port (`IP`, `PrivatePort`, `PublicPort`, `Type`) and one per
/// port only exposed (`PrivatePort`, `Type`).
pub fn summary_ports(record: &ContainerRecord) -> Vec<Value> {
    let map: BTreeMap<String, Option<Vec<PortBinding>>> = record
        .extra
        .get(PORTS_KEY)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (key, bindings) in map {
        let Ok((port, proto)) = parse_port_key(&key) else {
            continue;
        };
        match bindings {
            None => out.push(json!({ "PrivatePort": port, "Type": proto.as_str() })),
            Some(list) => {
                for b in list {
                    out.push(json!({
                        "IP": b.host_ip,
                        "PrivatePort": port,
                        "PublicPort": b.host_port.parse::<u16>().unwrap_or(0),
                        "Type": proto.as_str(),
                    }));
                }
            }
        }
    }
    out
}

/// `ps`'s PORTS column from `/containers/json` `Ports` entries, as
/// docker/cli writes it: `0.0.0.0:8080->80/tcp, 53/udp`.
pub fn ps_column(ports: &[Value]) -> String {
    let mut parts: Vec<String> = ports
        .iter()
        .filter_map(|p| {
            let private = p.get("PrivatePort")?.as_u64()?;
            let proto = p.get("Type")?.as_str()?;
            Some(
                match (
                    p.get("IP").and_then(Value::as_str),
                    p.get("PublicPort").and_then(Value::as_u64),
                ) {
                    (Some(ip), Some(public)) if ip.contains(':') => {
                        format!("[{ip}]:{public}->{private}/{proto}")
                    }
                    (Some(ip), Some(public)) => format!("{ip}:{public}->{private}/{proto}"),
                    _ => format!("{private}/{proto}"),
                },
            )
        })
        .collect();
    parts.dedup();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: ip.into(),
            host_port: port.into(),
        }
    }

    #[test]
    fn bindings_become_requests_and_publish_all_adds_the_unbound_exposed_ports() {
        let mut bindings = BTreeMap::new();
        bindings.insert("80/tcp".to_string(), vec![binding("", "8080")]);
        bindings.insert(
            "53/udp".to_string(),
            vec![binding("127.0.0.1", ""), binding("::1", "5300-5310")],
        );
        let exposed = exposed_ports(
            [&"80/tcp".to_string(), &"443/tcp".to_string()],
            &["9000-9001/udp".to_string()],
        )
        .unwrap();
        let reqs = port_requests(&bindings, true, &exposed).unwrap();
        let shown: Vec<String> = reqs
            .iter()
            .map(|r| {
                format!(
                    "{:?} {:?} {:?} {}",
                    r.proto, r.host_ip, r.host_ports, r.container_port
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "Udp Some(127.0.0.1) None 53",
                "Udp Some(::1) Some(5300..=5310) 53",
                "Tcp None Some(8080..=8080) 80",
                "Tcp None None 443",
                "Udp None None 9000",
                "Udp None None 9001",
            ]
        );
        assert!(port_requests(&bindings, false, &exposed).unwrap().len() == 3);
    }

    #[test]
    fn bad_keys_addresses_and_ports_are_refused() {
        let one = |k: &str, b: PortBinding| BTreeMap::from([(k.to_string(), vec![b])]);
        let none = BTreeSet::new();
        assert!(port_requests(&one("80/xtp", binding("", "")), false, &none).is_err());
        assert!(port_requests(&one("0/tcp", binding("", "")), false, &none).is_err());
        assert!(port_requests(&one("80", binding("nope", "")), false, &none).is_err());
        assert!(port_requests(&one("80", binding("", "99999")), false, &none).is_err());
        assert!(exposed_ports([], &["80-70".to_string()]).is_err());
    }

    #[test]
    fn ports_map_and_ps_column_look_like_dockers() {
        let f = Forward {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 8080,
            container_ip: "10.1.2.3".parse().unwrap(),
            container_port: 80,
            bridge: "stack0".into(),
        };
        let exposed = BTreeSet::from(["80/tcp".to_string(), "53/udp".to_string()]);
        let map = docker_ports(&exposed, &[f]);
        assert_eq!(
            map,
            json!({"53/udp": null, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})
        );
        let mut record: ContainerRecord = serde_json::from_value(json!({
            "id": "x", "name": "x", "created": "", "image": "", "image_id": "",
            "rootfs": {"lowers": [], "upper": "/", "work": "/"}, "cgroup": "",
        }))
        .unwrap_or_else(|_| panic!("the record's required fields changed"));
        record.extra.insert(PORTS_KEY.into(), map);
        assert_eq!(
            ps_column(&summary_ports(&record)),
            "53/udp, 0.0.0.0:8080->80/tcp"
        );
    }
}
