//! `stack network create|ls|inspect|rm|connect|disconnect|prune`, as API
//! clients with Docker's flags and output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use clap::{Args, Subcommand};
use miette::{IntoDiagnostic, miette};
use serde_json::{Value, json};

use super::daemon::{api_error, client};
use crate::api::client::segment;
use crate::api::networks::{
    EndpointIpam, EndpointSettings, Ipam, IpamConfig, NetworkConnect, NetworkCreate,
    NetworkDisconnect,
};

/// `stack network …`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
}

/// `network create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the network (bridge or macvlan)
    #[arg(short = 'd', long = "driver", default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment (one IPv4
    /// and one IPv6)
    #[arg(long = "subnet")]
    subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long = "gateway")]
    gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Enable or disable IPv6 networking
    #[arg(long = "ipv6")]
    ipv6: bool,
    /// Restrict external access to the network
    #[arg(long = "internal")]
    internal: bool,
    /// Set metadata on a network (KEY=VALUE)
    #[arg(long = "label")]
    label: Vec<String>,
    /// Set driver specific options (KEY=VALUE)
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// The network's name
    name: String,
}

/// `network ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a Go template, or json
    #[arg(long = "format")]
    format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

/// `network inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long = "format")]
    format: Option<String>,
    /// Networks
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Networks
    #[arg(required = true)]
    networks: Vec<String>,
}

/// `network connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// IPv4 address
    #[arg(long = "ip")]
    ip: Option<String>,
    /// IPv6 address
    #[arg(long = "ip6")]
    ip6: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "alias")]
    alias: Vec<String>,
    /// The network
    network: String,
    /// The container
    container: String,
}

/// `network disconnect`.
#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// The network
    network: String,
    /// The container
    container: String,
}

/// `network prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    filter: Vec<String>,
}

fn key_values(flag: &str, items: &[String]) -> miette::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !kv.is_empty() && flag == "--label" => Ok((kv.clone(), String::new())),
            _ => Err(miette!("invalid {flag} {kv:?}: expected KEY=VALUE")),
        })
        .collect()
}

/// The IPAM pools of `--subnet`s, each with the `--gateway` and
/// `--ip-range` inside it, as the Docker CLI pairs them
/// (`createIPAMConfig`).
fn ipam_configs(
    subnets: &[String],
    gateways: &[String],
    ranges: &[String],
) -> Result<Vec<IpamConfig>, String> {
    if subnets.is_empty() {
        return Err("every ip-range or gateway must have a corresponding subnet".into());
    }
    let nets: Vec<ipnet::IpNet> = subnets
        .iter()
        .map(|s| s.parse().map_err(|_| format!("invalid subnet {s}")))
        .collect::<Result<_, _>>()?;
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            if a.contains(&b.network()) || b.contains(&a.network()) {
                return Err("multiple overlapping subnet configuration is not supported".into());
            }
        }
    }
    let mut out: Vec<IpamConfig> = subnets
        .iter()
        .map(|s| IpamConfig {
            subnet: Some(s.clone()),
            ..IpamConfig::default()
        })
        .collect();
    let owner = |what: &str, text: &str| -> Result<usize, String> {
        let addr: std::net::IpAddr = match what {
            "range" => text
                .parse::<ipnet::IpNet>()
                .map(|n| n.network())
                .map_err(|_| format!("invalid ip-range {text}"))?,
            _ => text
                .parse()
                .map_err(|_| format!("invalid gateway {text}"))?,
        };
        nets.iter()
            .position(|n| n.contains(&addr))
            .ok_or_else(|| format!("no matching subnet for {what} {text}"))
    };
    for r in ranges {
        let i = owner("range", r)?;
        if let Some(old) = &out[i].ip_range {
            return Err(format!(
                "cannot configure multiple ranges ({old}, {r}) on the same subnet ({})",
                subnets[i]
            ));
        }
        out[i].ip_range = Some(r.clone());
    }
    for g in gateways {
        let i = owner("gateway", g)?;
        if let Some(old) = &out[i].gateway {
            return Err(format!(
                "cannot configure multiple gateways ({old}, {g}) for the same subnet ({})",
                subnets[i]
            ));
        }
        out[i].gateway = Some(g.clone());
    }
    Ok(out)
}

/// Docker's `filters` query value from `KEY=VALUE` flags.
fn filters_json(items: &[String]) -> miette::Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in items {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| miette!("bad format of filter (expected name=value): {f}"))?;
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(Some(json!(map).to_string()))
}

/// Runs a `network` verb.
pub fn run(root: &Path, command: &NetworkCommand) -> miette::Result<i32> {
    let c = client(root)?;
    let mut out = std::io::stdout().lock();
    match command {
        NetworkCommand::Create(a) => {
            let body = NetworkCreate {
                name: a.name.clone(),
                driver: Some(a.driver.clone()),
                internal: a.internal,
                ipam: if a.subnet.is_empty() && a.gateway.is_empty() && a.ip_range.is_empty() {
                    None
                } else {
                    Some(Ipam {
                        driver: Some("default".into()),
                        config: ipam_configs(&a.subnet, &a.gateway, &a.ip_range)
                            .map_err(|e| miette!("{e}"))?,
                    })
                },
                options: key_values("--opt", &a.opt)?,
                labels: key_values("--label", &a.label)?,
                enable_ipv6: a.ipv6.then_some(true),
            };
            let created: Value = c
                .post("/networks/create")
                .json(&body)
                .send_json()
                .map_err(api_error)?;
            writeln!(out, "{}", created["Id"].as_str().unwrap_or_default()).into_diagnostic()?;
        }
        NetworkCommand::Ls(a) => {
            let list: Vec<Value> = c
                .get("/networks")
                .query_opt("filters", filters_json(&a.filter)?)
                .send_json()
                .map_err(api_error)?;
            let rows: Vec<Value> = list
                .iter()
                .map(|n| {
                    let id = n["Id"].as_str().unwrap_or_default();
                    let labels = n["Labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    json!({
                        "ID": if a.no_trunc { id.to_string() } else { id.chars().take(12).collect() },
                        "Name": n["Name"],
                        "Driver": n["Driver"],
                        "Scope": n["Scope"],
                        "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                        "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                        "Labels": labels,
                        "CreatedAt": n["Created"],
                    })
                })
                .collect();
            if a.quiet {
                for r in &rows {
                    writeln!(out, "{}", r["ID"].as_str().unwrap_or_default()).into_diagnostic()?;
                }
                return Ok(0);
            }
            if a.format.as_deref() == Some("json") {
                for r in &rows {
                    writeln!(out, "{r}").into_diagnostic()?;
                }
                return Ok(0);
            }
            let default = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
            let format = a.format.clone().unwrap_or_else(|| default.to_string());
            let titles = json!({
                "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT",
            });
            let text = super::template::format_rows(
                &format,
                default,
                &rows,
                &titles,
                &super::template::no_methods,
            )
            .map_err(|e| miette!("{e}"))?;
            out.write_all(text.as_bytes()).into_diagnostic()?;
        }
        NetworkCommand::Inspect(a) => {
            let mut found = Vec::new();
            let mut failed = false;
            for n in &a.networks {
                match c
                    .get(&format!("/networks/{}", segment(n)))
                    .send_json::<Value>()
                {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        eprintln!("Error: {}", api_error(e));
                        failed = true;
                    }
                }
            }
            match &a.format {
                Some(f) => {
                    let template =
                        super::template::Template::parse(f).map_err(|e| miette!("{e}"))?;
                    for v in &found {
                        let text = template
                            .render(v, &super::template::no_methods)
                            .map_err(|e| miette!("{e}"))?;
                        writeln!(out, "{text}").into_diagnostic()?;
                    }
                }
                None => {
                    let text = serde_json::to_string_pretty(&found).into_diagnostic()?;
                    writeln!(out, "{text}").into_diagnostic()?;
                }
            }
            return Ok(i32::from(failed));
        }
        NetworkCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.networks {
                match c.delete(&format!("/networks/{}", segment(n))).ok() {
                    Ok(()) => writeln!(out, "{n}").into_diagnostic()?,
                    Err(e) if a.force && e.status() == Some(404) => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", api_error(e));
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
        NetworkCommand::Connect(a) => {
            let body = NetworkConnect {
                container: a.container.clone(),
                endpoint_config: Some(EndpointSettings {
                    ipam_config: (a.ip.is_some() || a.ip6.is_some()).then(|| EndpointIpam {
                        ipv4_address: a.ip.clone(),
                        ipv6_address: a.ip6.clone(),
                    }),
                    aliases: a.alias.clone(),
                    mac_address: None,
                }),
            };
            c.post(&format!("/networks/{}/connect", segment(&a.network)))
                .json(&body)
                .ok()
                .map_err(api_error)?;
        }
        NetworkCommand::Disconnect(a) => {
            let body = NetworkDisconnect {
                container: a.container.clone(),
                force: a.force,
            };
            c.post(&format!("/networks/{}/disconnect", segment(&a.network)))
                .json(&body)
                .ok()
                .map_err(api_error)?;
        }
        NetworkCommand::Prune(a) => {
            if !a.force {
                eprint!(
                    "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] "
                );
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
                }
            }
            let pruned: Value = c
                .post("/networks/prune")
                .query_opt("filters", filters_json(&a.filter)?)
                .send_json()
                .map_err(api_error)?;
            let names: Vec<&str> = pruned["NetworksDeleted"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                writeln!(out, "Deleted Networks:").into_diagnostic()?;
                for n in names {
                    writeln!(out, "{n}").into_diagnostic()?;
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gateways_and_ranges_go_with_the_subnet_that_holds_them() {
        let c = ipam_configs(
            &strings(&["10.1.0.0/24", "fd00:1::/64"]),
            &strings(&["fd00:1::fe", "10.1.0.254"]),
            &strings(&["10.1.0.128/25"]),
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].gateway.as_deref(), Some("10.1.0.254"));
        assert_eq!(c[0].ip_range.as_deref(), Some("10.1.0.128/25"));
        assert_eq!(c[1].gateway.as_deref(), Some("fd00:1::fe"));
        assert_eq!(
            ipam_configs(&strings(&["10.1.0.0/24"]), &strings(&["10.2.0.1"]), &[]).unwrap_err(),
            "no matching subnet for gateway 10.2.0.1"
        );
        assert!(ipam_configs(&[], &strings(&["10.2.0.1"]), &[]).is_err());
        assert!(
            ipam_configs(&strings(&["10.1.0.0/16", "10.1.2.0/24"]), &[], &[])
                .unwrap_err()
                .contains("overlapping")
        );
    }
}
