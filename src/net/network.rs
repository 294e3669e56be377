//! The network store: one Docker-shaped record per network, with its
//! address allocations (the endpoints, keyed by container id), under
//! `<root>/network/<id>.json`. Files are replaced atomically (temp file and
//! rename) and every read-modify-write holds the store's lock
//! (`<root>/network/.lock`, flock), so concurrent daemons' and threads'
//! changes never interleave and an address is never recorded twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::NetError;
use super::ipam::{self, Pool, Pool6};

/// The option naming a bridge network's Linux bridge (Docker's).
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// The option setting a network's MTU (Docker's).
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The option naming the host interface a network attaches to: an
/// existing host bridge (driver `bridge`) or a macvlan parent, `IFACE` or
/// `IFACE.VLAN` (Docker's macvlan `parent`).
pub const PARENT_OPTION: &str = "parent";
/// The option that keeps the daemon from giving an existing bridge an
/// IPv4 address (Docker's).
pub const INHIBIT_IPV4_OPTION: &str = "com.docker.network.bridge.inhibit_ipv4";
/// The macvlan mode option (Docker's `macvlan_mode`: bridge, vepa,
/// passthru, private; bridge when absent).
pub const MACVLAN_MODE_OPTION: &str = "macvlan_mode";
/// The option marking Docker's default bridge.
pub const DEFAULT_BRIDGE_OPTION: &str = "com.docker.network.bridge.default_bridge";

/// One container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The container's name when it joined.
    pub container_name: String,
    /// The endpoint's id (64 hex).
    pub endpoint_id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its hardware address, `aa:bb:…`.
    pub mac: String,
    /// Whether the address was asked for (`--ip`).
    #[serde(default)]
    pub static_ip: bool,
    /// Names other containers may use for it on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The host end of its veth pair (empty on macvlan networks, whose
    /// interface has no host end).
    pub host_veth: String,
    /// The interface in the container (`eth0`, `eth1`, …).
    pub iface: String,
    /// Its IPv6 address (networks with IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Whether the IPv6 address was asked for (`--ip6`).
    #[serde(default)]
    pub static_ip6: bool,
}

/// A network, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Its name.
    pub name: String,
    /// Its id (64 hex).
    pub id: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    /// The subnet (bridge networks).
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// The gateway, the bridge's address.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// Where dynamic addresses come from.
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// No route out.
    #[serde(default)]
    pub internal: bool,
    /// Driver options (`-o`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The Linux bridge.
    #[serde(default)]
    pub bridge: Option<String>,
    /// The MTU; `None`: the host's default route's.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The bridge existed before (`--bridge`): never created or deleted.
    #[serde(default)]
    pub external_bridge: bool,
    /// The subnet was chosen by the daemon, not given.
    #[serde(default)]
    pub auto_subnet: bool,
    /// Containers on it, by container id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// `--ipv6`: containers get an address of `subnet6` too.
    #[serde(default)]
    pub enable_ipv6: bool,
    /// The IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Where dynamic IPv6 addresses come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<Ipv6Net>,
    /// The host interface containers attach to (`-o parent=`): the
    /// existing bridge of a host-bridge network, or a macvlan network's
    /// parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The parent is a VLAN sub-interface the daemon created (and deletes
    /// with the network).
    #[serde(default)]
    pub created_parent: bool,
    /// The bridge gets no address of ours: the gateway is an outside
    /// router's (host-bridge attach, `inhibit_ipv4`).
    #[serde(default)]
    pub no_gateway_address: bool,
}

impl NetworkRecord {
    /// Whether it is one of the networks every daemon has (`bridge`, `host`,
    /// `none`), which cannot be removed.
    pub fn is_builtin(&self) -> bool {
        matches!(self.name.as_str(), "bridge" | "host" | "none")
    }

    /// Whether containers on it get a veth pair.
    pub fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }

    /// Whether containers on it get a macvlan child of its parent.
    pub fn is_macvlan(&self) -> bool {
        self.driver == "macvlan"
    }

    /// Whether containers on it get an interface and addresses.
    pub fn has_endpoints(&self) -> bool {
        self.is_bridge() || self.is_macvlan()
    }

    /// Whether its containers sit on a host segment the daemon does not
    /// own (a host bridge given as `parent`, or macvlan): no masquerade
    /// or port rules belong there.
    pub fn is_host_attached(&self) -> bool {
        self.is_macvlan() || (self.is_bridge() && self.parent.is_some())
    }

    /// Every subnet it has, IPv4 first (what the firewall masquerades).
    pub fn subnets(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.subnet.into_iter().map(IpNet::V4).collect();
        out.extend(self.subnet6.map(IpNet::V6));
        out
    }

    /// Its IPv6 pool (networks with IPv6).
    pub fn pool6(&self) -> Option<Pool6> {
        let subnet = self.subnet6.filter(|_| self.enable_ipv6)?;
        let gateway = self.gateway6.unwrap_or_else(|| ipam::first_host6(subnet));
        Some(Pool6::new(subnet, self.ip_range6, gateway))
    }

    /// IPv6 addresses held by its containers.
    pub fn taken6(&self) -> BTreeSet<Ipv6Addr> {
        self.endpoints.values().filter_map(|e| e.ip6).collect()
    }

    /// Where the embedded DNS server answers its containers: the gateway
    /// address, for user-defined bridge networks. Docker gives the default
    /// bridge no embedded DNS (its containers use the host's resolvers and
    /// legacy links), and neither do we. Internal networks have one too:
    /// the gateway address is on their bridge (they only lack the default
    /// route), and a container reaches it on the link.
    pub fn dns_address(&self) -> Option<std::net::IpAddr> {
        if !self.is_bridge() || self.name == "bridge" {
            return None;
        }
        let subnet = self.subnet?;
        let gateway = self.gateway.unwrap_or_else(|| ipam::first_host(subnet));
        Some(std::net::IpAddr::V4(gateway))
    }

    /// Its address pool (bridge networks with a subnet).
    pub fn pool(&self) -> Option<Pool> {
        let subnet = self.subnet?;
        let gateway = self.gateway.unwrap_or_else(|| ipam::first_host(subnet));
        Some(Pool::new(subnet, self.ip_range, gateway))
    }

    /// Addresses held by its containers.
    pub fn taken(&self) -> BTreeSet<Ipv4Addr> {
        self.endpoints.values().map(|e| e.ip).collect()
    }

    /// Docker's `network inspect` body (`GET /networks/{id}`).
    pub fn to_docker(&self) -> Value {
        let mut config = Vec::new();
        if let Some(subnet) = self.subnet {
            let mut c = json!({ "Subnet": subnet.trunc().to_string() });
            if let Some(gw) = self.gateway {
                c["Gateway"] = json!(gw.to_string());
            }
            if let Some(r) = self.ip_range {
                c["IPRange"] = json!(r.to_string());
            }
            config.push(c);
        }
        if let Some(subnet) = self.subnet6 {
            let mut c = json!({ "Subnet": subnet.trunc().to_string() });
            if let Some(gw) = self.gateway6 {
                c["Gateway"] = json!(gw.to_string());
            }
            if let Some(r) = self.ip_range6 {
                c["IPRange"] = json!(r.to_string());
            }
            config.push(c);
        }
        let prefix = self.subnet.map_or(32, |s| s.prefix_len());
        let prefix6 = self.subnet6.map_or(128, |s| s.prefix_len());
        let containers: BTreeMap<&String, Value> = self
            .endpoints
            .iter()
            .map(|(id, e)| {
                (
                    id,
                    json!({
                        "Name": e.container_name,
                        "EndpointID": e.endpoint_id,
                        "MacAddress": e.mac,
                        "IPv4Address": format!("{}/{prefix}", e.ip),
                        "IPv6Address": e.ip6.map(|ip| format!("{ip}/{prefix6}")).unwrap_or_default(),
                    }),
                )
            })
            .collect();
        json!({
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Scope": "local",
            "Driver": self.driver,
            "EnableIPv4": true,
            "EnableIPv6": self.enable_ipv6,
            "IPAM": {
                "Driver": "default",
                "Options": null,
                "Config": config,
            },
            "Internal": self.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": { "Network": "" },
            "ConfigOnly": false,
            "Containers": containers,
            "Options": self.options,
            "Labels": self.labels,
        })
    }
}

/// A new random id: 32 bytes in hex, as Docker's.
pub fn new_id() -> String {
    crate::sys::random_id()
}

/// The store of one state root.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// The store's lock, held while it lives.
#[derive(Debug)]
pub struct StoreLock(fs::File);

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> NetError + 'a {
    move |source| NetError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// The store in `dir`, created if new.
    pub fn open(dir: &Path) -> Result<Store, NetError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Takes the store's lock (blocking).
    pub fn lock(&self) -> Result<StoreLock, NetError> {
        let path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(StoreLock(file))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every network, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>, NetError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(rec) = self.read(id)? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The network with id `id`, if any.
    pub fn read(&self, id: &str) -> Result<Option<NetworkRecord>, NetError> {
        let path = self.path(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| NetError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The network named `key`, or with id `key`, or whose id starts with
    /// `key` (if only one does), as Docker finds them.
    pub fn find(&self, key: &str) -> Result<NetworkRecord, NetError> {
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.id == key || n.name == key) {
            return Ok(n.clone());
        }
        let mut matches = all.into_iter().filter(|n| n.id.starts_with(key));
        match (matches.next(), matches.next()) {
            (Some(n), None) if !key.is_empty() => Ok(n),
            (Some(_), Some(_)) => Err(NetError::Ambiguous(key.to_string())),
            _ => Err(NetError::NotFound(key.to_string())),
        }
    }

    /// Writes `rec` (atomically). Call it with the lock held.
    pub fn write(&self, rec: &NetworkRecord) -> Result<(), NetError> {
        let path = self.path(&rec.id);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err("write", &path))?;
        let bytes = serde_json::to_vec_pretty(rec).map_err(|source| NetError::Corrupt {
            path: path.clone(),
            source,
        })?;
        tmp.write_all(&bytes).map_err(io_err("write", &path))?;
        tmp.persist(&path)
            .map_err(|e| io_err("write", &path)(e.error))?;
        Ok(())
    }

    /// Deletes network `id`'s record. Call it with the lock held.
    pub fn delete(&self, id: &str) -> Result<(), NetError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Every endpoint of container `id`, with its network, sorted by
    /// interface name.
    pub fn endpoints_of(&self, id: &str) -> Result<Vec<(NetworkRecord, Endpoint)>, NetError> {
        let mut out: Vec<(NetworkRecord, Endpoint)> = self
            .list()?
            .into_iter()
            .filter_map(|n| {
                let e = n.endpoints.get(id).cloned()?;
                Some((n, e))
            })
            .collect();
        out.sort_by_key(|(_, e)| iface_number(&e.iface));
        Ok(out)
    }
}

/// The number of `ethN` (for ordering; others last).
pub fn iface_number(name: &str) -> u32 {
    name.strip_prefix("eth")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> NetworkRecord {
        NetworkRecord {
            name: name.into(),
            id: new_id(),
            created: "2024-01-01T00:00:00Z".into(),
            driver: "bridge".into(),
            subnet: Some("10.5.0.0/24".parse().unwrap()),
            gateway: Some(Ipv4Addr::new(10, 5, 0, 1)),
            bridge: Some("br-x".into()),
            ..NetworkRecord::default()
        }
    }

    #[test]
    fn networks_are_found_by_name_id_and_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record("front");
        let b = record("back");
        store.write(&a).unwrap();
        store.write(&b).unwrap();
        assert_eq!(store.find("front").unwrap().id, a.id);
        assert_eq!(store.find(&b.id).unwrap().name, "back");
        assert_eq!(store.find(&a.id[..12]).unwrap().name, "front");
        assert!(matches!(store.find("nope"), Err(NetError::NotFound(_))));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["back", "front"]);
    }

    #[test]
    fn inspect_is_docker_shaped() {
        let mut n = record("front");
        n.endpoints.insert(
            "c".repeat(64),
            Endpoint {
                container_name: "web".into(),
                endpoint_id: "e".repeat(64),
                ip: Ipv4Addr::new(10, 5, 0, 2),
                mac: "02:42:0a:05:00:02".into(),
                static_ip: false,
                aliases: vec![],
                host_veth: "veth1234567".into(),
                iface: "eth0".into(),
                ip6: None,
                static_ip6: false,
            },
        );
        let v = n.to_docker();
        assert_eq!(v["IPAM"]["Config"][0]["Subnet"], "10.5.0.0/24");
        assert_eq!(v["IPAM"]["Config"][0]["Gateway"], "10.5.0.1");
        assert_eq!(
            v["Containers"]["c".repeat(64)]["IPv4Address"],
            "10.5.0.2/24"
        );
        assert_eq!(v["Driver"], "bridge");
        assert_eq!(v["Scope"], "local");
    }
}
