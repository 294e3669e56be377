//! The network routes, with Docker's bodies: list, inspect, create,
//! remove, connect, disconnect and prune. The work is
//! [`crate::reconcile::containers::Containers`]'s; events come from the
//! daemon's network hooks.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::server::{
    ApiError, ApiResult, Params, blocking, filters_param, json_body, json_response,
};
use crate::daemon::Daemon;
use crate::net::network::NetworkRecord;
use crate::net::{CreateRequest, EndpointRequest};

/// One `IPAM.Config` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    /// `--subnet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// `--gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `--ip-range`.
    #[serde(default, rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

/// `IPAM` of a create body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    /// Only `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The pools.
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

/// `POST /networks/create`'s body (Docker's `NetworkCreateRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreate {
    /// The name.
    pub name: String,
    /// The driver (`bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `--internal`.
    #[serde(default)]
    pub internal: bool,
    /// Address pools.
    #[serde(default, rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// `-o`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// `--label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--ipv6`.
    #[serde(
        default,
        rename = "EnableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv6: Option<bool>,
}

/// `EndpointConfig.IPAMConfig` of a connect body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointIpam {
    /// `--ip`.
    #[serde(
        default,
        rename = "IPv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    /// `--ip6`.
    #[serde(
        default,
        rename = "IPv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
}

/// `EndpointConfig` of a connect body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// Static address.
    #[serde(
        default,
        rename = "IPAMConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_config: Option<EndpointIpam>,
    /// `--alias`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// `POST /networks/{id}/connect`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkConnect {
    /// The container.
    pub container: String,
    /// Its settings on the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkDisconnect {
    /// The container.
    pub container: String,
    /// Accepted for Docker's clients.
    #[serde(default)]
    pub force: bool,
}

/// The network routes.
pub fn routes() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

/// Whether `n` passes Docker's network filters (`name` substring, `id`
/// prefix, `driver`, `type=custom|builtin`, `label=KEY[=VALUE]`).
pub fn matches(n: &NetworkRecord, filters: &[(String, String)]) -> Result<bool, String> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    for (key, values) in by_key {
        let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
        let ok = match key {
            "name" => any(&|v| n.name.contains(v)),
            "id" => any(&|v| n.id.starts_with(v)),
            "driver" => any(&|v| n.driver == v),
            "type" => any(&|v| match v {
                "custom" => !n.is_builtin(),
                "builtin" => n.is_builtin(),
                _ => false,
            }),
            "label" => values.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                None => n.labels.contains_key(*v),
            }),
            "scope" => any(&|v| v == "local"),
            "dangling" => {
                let dangling = n.endpoints.is_empty() && !n.is_builtin();
                any(&|v| matches!(v, "true" | "1") == dangling)
            }
            other => return Err(format!("invalid filter '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn list(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let filters = filters_param(&q)?;
    let list = blocking(move || {
        let mut out = Vec::new();
        for n in d.containers.networks()?.list()? {
            if matches(&n, &filters).map_err(ApiError::bad_request)? {
                out.push(n.to_docker());
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(&list))
}

async fn inspect(State(d): State<Arc<Daemon>>, Path(key): Path<String>) -> ApiResult<Response> {
    let value = blocking(move || Ok(d.containers.networks()?.find(&key)?.to_docker())).await?;
    Ok(json_response(&value))
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> ApiResult<T> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {what}: {text}")))
}

/// The create body as networking's request: at most one IPv4 and one
/// IPv6 pool, as Docker's default IPAM driver.
pub fn create_request(body: &NetworkCreate) -> ApiResult<CreateRequest> {
    let mut req = CreateRequest {
        name: body.name.clone(),
        driver: body.driver.clone().filter(|d| !d.is_empty()),
        internal: body.internal,
        options: body.options.clone(),
        labels: body.labels.clone(),
        enable_ipv6: body.enable_ipv6 == Some(true),
        ..CreateRequest::default()
    };
    let Some(ipam) = &body.ipam else {
        return Ok(req);
    };
    if let Some(driver) = ipam
        .driver
        .as_deref()
        .filter(|d| *d != "default" && !d.is_empty())
    {
        return Err(ApiError::bad_request(format!(
            "IPAM driver {driver} is not supported: only default"
        )));
    }
    let (mut v4, mut v6) = (false, false);
    for c in &ipam.config {
        let Some(subnet) = c.subnet.as_deref() else {
            return Err(ApiError::bad_request("an IPAM config needs a subnet"));
        };
        match parse::<ipnet::IpNet>("subnet", subnet)? {
            ipnet::IpNet::V4(s) => {
                if std::mem::replace(&mut v4, true) {
                    return Err(ApiError::bad_request(
                        "one IPv4 subnet per network is supported",
                    ));
                }
                req.subnet = Some(s);
                req.gateway = c
                    .gateway
                    .as_deref()
                    .map(|g| parse::<Ipv4Addr>("gateway", g))
                    .transpose()?;
                req.ip_range = c
                    .ip_range
                    .as_deref()
                    .map(|r| parse::<ipnet::Ipv4Net>("ip-range", r))
                    .transpose()?;
            }
            ipnet::IpNet::V6(s) => {
                if std::mem::replace(&mut v6, true) {
                    return Err(ApiError::bad_request(
                        "one IPv6 subnet per network is supported",
                    ));
                }
                req.subnet6 = Some(s);
                req.gateway6 = c
                    .gateway
                    .as_deref()
                    .map(|g| parse::<Ipv6Addr>("gateway", g))
                    .transpose()?;
                req.ip_range6 = c
                    .ip_range
                    .as_deref()
                    .map(|r| parse::<ipnet::Ipv6Net>("ip-range", r))
                    .transpose()?;
            }
        }
    }
    Ok(req)
}

async fn create(State(d): State<Arc<Daemon>>, req: Request) -> ApiResult<Response> {
    let body: NetworkCreate = json_body(req).await?;
    let request = create_request(&body)?;
    let created = blocking(move || Ok(d.containers.create_network(&request)?)).await?;
    Ok((
        StatusCode::CREATED,
        json_response(&json!({ "Id": created.id, "Warning": "" })),
    )
        .into_response())
}

async fn remove(State(d): State<Arc<Daemon>>, Path(key): Path<String>) -> ApiResult<Response> {
    blocking(move || {
        d.containers.remove_network(&key)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(
    State(d): State<Arc<Daemon>>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let body: NetworkConnect = json_body(req).await?;
    let settings = body.endpoint_config.clone().unwrap_or_default();
    let ip = settings
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv4_address.as_deref())
        .filter(|s| !s.is_empty())
        .map(|s| parse::<Ipv4Addr>("IPv4 address", s))
        .transpose()?;
    let mac = settings
        .mac_address
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|m| {
            crate::net::ipam::parse_mac(m)
                .ok_or_else(|| ApiError::bad_request(format!("invalid MAC address: {m}")))
        })
        .transpose()?;
    let ip6 = settings
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv6_address.as_deref())
        .filter(|s| !s.is_empty())
        .map(|s| parse::<Ipv6Addr>("IPv6 address", s))
        .transpose()?;
    let request = EndpointRequest {
        ip,
        aliases: settings.aliases.clone(),
        mac,
        ip6,
    };
    blocking(move || {
        d.containers.connect(&key, &body.container, &request)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(
    State(d): State<Arc<Daemon>>,
    Path(key): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let body: NetworkDisconnect = json_body(req).await?;
    blocking(move || {
        d.containers.disconnect(&key, &body.container)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// Docker's `network prune` filters, checked: `until` (a time before
/// which the network was made: Unix seconds, RFC 3339 or a Go duration
/// before `now`), `label=KEY[=VALUE]` (prune only networks with it) and
/// `label!=KEY[=VALUE]` (only those without it).
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    until: Vec<std::time::SystemTime>,
    label: Vec<String>,
    not_label: Vec<String>,
}

impl PruneFilter {
    /// The filter of a prune request's `filters`.
    pub fn parse(
        filters: &[(String, String)],
        now: std::time::SystemTime,
    ) -> Result<PruneFilter, String> {
        let mut out = PruneFilter::default();
        for (k, v) in filters {
            match k.as_str() {
                "until" => out.until.push(
                    crate::runtime::logs::parse_time_filter(v, now)
                        .map_err(|_| format!("invalid until filter: {v}"))?,
                ),
                "label" => out.label.push(v.clone()),
                "label!" => out.not_label.push(v.clone()),
                other => return Err(format!("invalid filter '{other}'")),
            }
        }
        Ok(out)
    }

    /// Whether `n` may be pruned.
    pub fn selects(&self, n: &NetworkRecord) -> bool {
        let has = |v: &String| match v.split_once('=') {
            Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
            None => n.labels.contains_key(v),
        };
        let created =
            crate::runtime::logs::parse_time_filter(&n.created, std::time::SystemTime::now()).ok();
        // moby `pruneNetworks`: a network made after `until` stays.
        self.until.iter().all(|u| created.is_some_and(|c| c <= *u))
            && self.label.iter().all(has)
            && !self.not_label.iter().any(has)
    }
}

async fn prune(State(d): State<Arc<Daemon>>, Query(q): Params) -> ApiResult<Response> {
    let filter = PruneFilter::parse(&filters_param(&q)?, std::time::SystemTime::now())
        .map_err(ApiError::bad_request)?;
    let removed =
        blocking(move || Ok(d.containers.prune_networks(|n| !filter.selects(n))?)).await?;
    let names: Vec<String> = removed.into_iter().map(|n| n.name).collect();
    Ok(json_response(&json!({ "NetworksDeleted": names })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_create_body_becomes_a_request() {
        let body: NetworkCreate = serde_json::from_str(
            r#"{"Name":"n1","Driver":"bridge","Internal":true,"CheckDuplicate":true,
                "IPAM":{"Driver":"default","Config":[{"Subnet":"10.3.0.0/24","Gateway":"10.3.0.254","IPRange":"10.3.0.128/25"}]},
                "Options":{"com.docker.network.bridge.name":"brx"},"Labels":{"a":"b"}}"#,
        )
        .unwrap();
        let req = create_request(&body).unwrap();
        assert_eq!(req.subnet.unwrap().to_string(), "10.3.0.0/24");
        assert_eq!(req.gateway.unwrap().to_string(), "10.3.0.254");
        assert_eq!(req.ip_range.unwrap().to_string(), "10.3.0.128/25");
        assert!(req.internal);
        assert_eq!(req.options["com.docker.network.bridge.name"], "brx");
    }

    #[test]
    fn a_dual_stack_body_gives_both_pools_and_ipv6() {
        let body: NetworkCreate = serde_json::from_str(
            r#"{"Name":"n6","EnableIPv6":true,"IPAM":{"Config":[
                {"Subnet":"10.3.0.0/24"},{"Subnet":"fd00:3::/64","Gateway":"fd00:3::fe"}]}}"#,
        )
        .unwrap();
        let req = create_request(&body).unwrap();
        assert!(req.enable_ipv6);
        assert_eq!(req.subnet.unwrap().to_string(), "10.3.0.0/24");
        assert_eq!(req.subnet6.unwrap().to_string(), "fd00:3::/64");
        assert_eq!(req.gateway6.unwrap().to_string(), "fd00:3::fe");
        let two_v4: NetworkCreate = serde_json::from_str(
            r#"{"Name":"n","IPAM":{"Config":[{"Subnet":"10.3.0.0/24"},{"Subnet":"10.4.0.0/24"}]}}"#,
        )
        .unwrap();
        assert!(create_request(&two_v4).is_err());
    }

    #[test]
    fn prune_filters_follow_docker() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let mut n: NetworkRecord = serde_json::from_value(json!({
            "name": "n", "id": "a".repeat(64), "created": "2026-01-01T00:00:00Z",
            "driver": "bridge", "labels": {"team": "a"},
        }))
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            PruneFilter::parse(&pairs, now).unwrap()
        };
        assert!(f(&[]).selects(&n));
        assert!(f(&[("label", "team")]).selects(&n));
        assert!(f(&[("label", "team=a")]).selects(&n));
        assert!(!f(&[("label", "team=b")]).selects(&n));
        assert!(!f(&[("label!", "team")]).selects(&n));
        assert!(f(&[("label!", "team=b")]).selects(&n));
        assert!(f(&[("until", "2026-06-01T00:00:00Z")]).selects(&n));
        assert!(!f(&[("until", "2025-06-01T00:00:00Z")]).selects(&n));
        assert!(f(&[("until", "1h")]).selects(&n));
        n.created = crate::runtime::now_rfc3339();
        let recent =
            PruneFilter::parse(&[("until".into(), "1h".into())], SystemTime::now()).unwrap();
        assert!(!recent.selects(&n), "made within the hour: kept");
        assert!(PruneFilter::parse(&[("dangling".into(), "true".into())], now).is_err());
    }
}
