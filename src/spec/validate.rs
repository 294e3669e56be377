//! Checks that need the whole stack: references between services, networks and
//! volumes, dependency cycles, published port conflicts, static addresses.
//!
//! Runs on the merged model (after every `-f` file is applied), so a reference
//! made in an override file to a service of the base file is fine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::decode::suggest;
use super::diag::{Origin, Problem, ProblemKind, Problems, Sources};
use super::model::{NetworkDriver, NetworkMode, ServiceSpec, StackSpec, VolumesFromSource};
use super::mount::MountKind;
use super::port::Protocol;

/// The implicit network every service without `networks` joins.
pub const DEFAULT_NETWORK: &str = "default";

/// Validates `stack`, recording every problem found. With `partial`, the model
/// lost values to decoding errors already reported, so checks that a missing
/// value would set off (no image) are skipped.
pub fn validate(stack: &StackSpec, sources: &Sources, partial: bool, problems: &mut Problems) {
    let v = Validator { stack, sources };
    for (name, service) in &stack.services {
        if !partial {
            v.image_or_build(name, service, problems);
        }
        v.references(name, service, problems);
        v.network_use(name, service, problems);
    }
    v.cycles(problems);
    v.port_conflicts(problems);
    v.static_addresses(problems);
    v.subnet_overlaps(problems);
}

struct Validator<'a> {
    stack: &'a StackSpec,
    sources: &'a Sources,
}

impl Validator<'_> {
    fn problem(&self, kind: ProblemKind, message: String, at: Origin, label: &str) -> Problem {
        let problem = Problem::error(kind, message);
        match self.sources.file(at.file) {
            Some(file) => problem.at(&file.text, at.span, label),
            None => problem,
        }
    }

    fn unknown_service(&self, name: &str, referrer: &str, at: Origin, what: &str) -> Problem {
        let known: Vec<&str> = self.stack.services.keys().map(String::as_str).collect();
        let mut p = self.problem(
            ProblemKind::UnknownReference,
            format!("service `{referrer}` {what} `{name}`, which is not a service of this stack"),
            at,
            "unknown service",
        );
        if let Some(s) = suggest(name, &known) {
            p = p.help(format!("did you mean `{s}`?"));
        }
        p
    }

    fn image_or_build(&self, name: &str, s: &ServiceSpec, problems: &mut Problems) {
        if s.image.is_none() && s.build.is_none() {
            problems.push(
                self.problem(
                    ProblemKind::MissingImage,
                    format!("service `{name}` has neither an image nor a build"),
                    s.origin.0,
                    "declared here",
                )
                .help("add `image \"NAME:TAG\"` or `build \"./dir\"`"),
            );
        }
    }

    fn references(&self, name: &str, s: &ServiceSpec, problems: &mut Problems) {
        let services = &self.stack.services;
        for dep in &s.depends_on {
            if !services.contains_key(&dep.service) {
                problems.push(self.unknown_service(&dep.service, name, dep.origin, "depends on"));
            } else if dep.service == name {
                problems.push(self.problem(
                    ProblemKind::Cycle,
                    format!("service `{name}` depends on itself"),
                    dep.origin,
                    "itself",
                ));
            }
        }
        for link in &s.links {
            if !services.contains_key(&link.service) {
                problems.push(self.unknown_service(&link.service, name, link.origin, "links to"));
            }
        }
        for vf in &s.volumes_from {
            if let VolumesFromSource::Service(other) = &vf.source
                && !services.contains_key(other)
            {
                problems.push(self.unknown_service(other, name, vf.origin, "takes volumes from"));
            }
        }
        if let Some(mode) = &s.network_mode
            && let NetworkMode::Service(other) = &mode.value
            && !services.contains_key(other)
        {
            problems.push(self.unknown_service(other, name, mode.origin, "shares the network of"));
        }
        let networks: Vec<&str> = self.stack.networks.keys().map(String::as_str).collect();
        for net in &s.networks {
            if net.name != DEFAULT_NETWORK && !self.stack.networks.contains_key(&net.name) {
                let mut p = self.problem(
                    ProblemKind::UnknownReference,
                    format!(
                        "service `{name}` joins network `{}`, which is not declared",
                        net.name
                    ),
                    net.origin,
                    "unknown network",
                );
                p = match suggest(&net.name, &networks) {
                    Some(s) => p.help(format!("did you mean `{s}`?")),
                    None => p.help(format!("declare it: network \"{}\"", net.name)),
                };
                problems.push(p);
            }
        }
        let volumes: Vec<&str> = self.stack.volumes.keys().map(String::as_str).collect();
        for mount in &s.volumes {
            if mount.kind != MountKind::Volume {
                continue;
            }
            let Some(source) = &mount.source else {
                continue; // anonymous volume
            };
            if !self.stack.volumes.contains_key(source) {
                let mut p = self.problem(
                    ProblemKind::UnknownReference,
                    format!("service `{name}` mounts volume `{source}`, which is not declared"),
                    mount.origin,
                    "unknown volume",
                );
                p = match suggest(source, &volumes) {
                    Some(s) => p.help(format!("did you mean `{s}`?")),
                    None => p.help(format!(
                        "declare it (volume \"{source}\"), or write ./{source} for a directory beside the stack file"
                    )),
                };
                problems.push(p);
            }
        }
    }

    fn network_use(&self, name: &str, s: &ServiceSpec, problems: &mut Problems) {
        let Some(mode) = &s.network_mode else { return };
        if !matches!(mode.value, NetworkMode::Bridge) && !s.networks.is_empty() {
            problems.push(self.problem(
                ProblemKind::InvalidValue,
                format!(
                    "service `{name}` sets network-mode `{}` and also joins networks",
                    mode.value
                ),
                mode.origin,
                "conflicts with networks",
            ));
        }
        if matches!(mode.value, NetworkMode::Host | NetworkMode::None)
            && let Some(port) = s.ports.first()
        {
            problems.push(self.problem(
                    ProblemKind::InvalidValue,
                    format!(
                        "service `{name}` publishes ports but uses network-mode `{}`, where publishing means nothing",
                        mode.value
                    ),
                    port.origin,
                    "cannot be published",
                ));
        }
    }

    /// Edges of the start-order graph: depends-on, links, volumes-from and
    /// network-mode service: all make one service start after another.
    fn edges(&self) -> BTreeMap<&str, Vec<(&str, Origin)>> {
        let mut edges: BTreeMap<&str, Vec<(&str, Origin)>> = BTreeMap::new();
        for (name, s) in &self.stack.services {
            let out = edges.entry(name.as_str()).or_default();
            for dep in &s.depends_on {
                out.push((dep.service.as_str(), dep.origin));
            }
            for link in &s.links {
                out.push((link.service.as_str(), link.origin));
            }
            for vf in &s.volumes_from {
                if let VolumesFromSource::Service(other) = &vf.source {
                    out.push((other.as_str(), vf.origin));
                }
            }
            if let Some(mode) = &s.network_mode
                && let NetworkMode::Service(other) = &mode.value
            {
                out.push((other.as_str(), mode.origin));
            }
            out.retain(|(to, _)| *to != name.as_str() && self.stack.services.contains_key(*to));
        }
        edges
    }

    fn cycles(&self, problems: &mut Problems) {
        let edges = self.edges();
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
        let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
        // Iterative DFS keeping the current path, so a cycle can be named.
        for start in edges.keys() {
            if marks.contains_key(start) {
                continue;
            }
            let mut path: Vec<(&str, usize)> = vec![(start, 0)];
            marks.insert(start, Mark::Visiting);
            while let Some(&(node, next)) = path.last() {
                let out = edges.get(node).map_or(&[][..], Vec::as_slice);
                if let Some(&(to, origin)) = out.get(next) {
                    if let Some(top) = path.last_mut() {
                        top.1 += 1;
                    }
                    match marks.get(to) {
                        None => {
                            marks.insert(to, Mark::Visiting);
                            path.push((to, 0));
                        }
                        Some(Mark::Visiting) => {
                            let from = path.iter().position(|(n, _)| *n == to).unwrap_or(0);
                            let mut cycle: Vec<&str> =
                                path[from..].iter().map(|(n, _)| *n).collect();
                            let mut key = cycle.clone();
                            key.sort_unstable();
                            if reported.insert(key) {
                                cycle.push(to);
                                problems.push(
                                    self.problem(
                                        ProblemKind::Cycle,
                                        format!("dependency cycle: {}", cycle.join(" → ")),
                                        origin,
                                        &format!("`{node}` waits for `{to}` here"),
                                    )
                                    .help("services start after what they depend on, link to, take volumes from or share a network with; break the circle"),
                                );
                            }
                        }
                        Some(Mark::Done) => {}
                    }
                } else {
                    marks.insert(node, Mark::Done);
                    path.pop();
                }
            }
        }
    }

    fn port_conflicts(&self, problems: &mut Problems) {
        // (host ip or None for all addresses, host port, protocol) → first user
        let mut taken: Vec<(Option<IpAddr>, u16, Protocol, &str, Origin)> = Vec::new();
        for (name, s) in &self.stack.services {
            let replicas = s.replicas.unwrap_or(1);
            for port in &s.ports {
                for binding in port.bindings() {
                    let Some(host) = binding.host_port else {
                        continue;
                    };
                    if host.start != host.end {
                        continue; // a range to pick a free port from
                    }
                    let host_port = host.start;
                    if host_port == 0 {
                        continue;
                    }
                    if replicas > 1 {
                        problems.push(self.problem(
                            ProblemKind::PortConflict,
                            format!(
                                "service `{name}` has {replicas} replicas but publishes the fixed host port {host_port}: only one can bind it"
                            ),
                            port.origin,
                            "fixed host port",
                        ).help("publish a range (\"8000-8009:80\") or leave the host port out to pick free ports"));
                    }
                    let ip = binding.host_ip.filter(|ip| !ip.is_unspecified());
                    let clash = taken.iter().find(|(tip, tport, tproto, _, _)| {
                        *tport == host_port
                            && *tproto == binding.protocol
                            && (tip.is_none() || ip.is_none() || *tip == ip)
                    });
                    if let Some((_, _, _, other, first)) = clash {
                        let addr = ip.map_or_else(|| "*".to_string(), |ip| ip.to_string());
                        let mut p = self.problem(
                            ProblemKind::PortConflict,
                            format!(
                                "host port {addr}:{host_port}/{} is published by both `{other}` and `{name}`",
                                binding.protocol
                            ),
                            port.origin,
                            "published again here",
                        );
                        if first.file == port.origin.file {
                            p = p.also(first.span, "first published here");
                        }
                        problems.push(p);
                    } else {
                        taken.push((ip, host_port, binding.protocol, name, port.origin));
                    }
                }
            }
        }
    }

    fn static_addresses(&self, problems: &mut Problems) {
        let mut used: BTreeMap<(&str, IpAddr), &str> = BTreeMap::new();
        for (name, s) in &self.stack.services {
            for net in &s.networks {
                let addrs = [net.ipv4.map(IpAddr::V4), net.ipv6.map(IpAddr::V6)];
                for ip in addrs.into_iter().flatten() {
                    if s.replicas.unwrap_or(1) > 1 {
                        problems.push(self.problem(
                            ProblemKind::InvalidValue,
                            format!(
                                "service `{name}` has several replicas but a static address {ip}"
                            ),
                            net.origin,
                            "static address",
                        ));
                    }
                    if let Some(network) = self.stack.networks.get(&net.name) {
                        if let Some(subnet) = network.subnet {
                            if (ip.is_ipv4() == subnet.addr.is_ipv4()) && !subnet.contains(ip) {
                                problems.push(self.problem(
                                    ProblemKind::InvalidValue,
                                    format!("address {ip} of service `{name}` is outside the subnet {subnet} of network `{}`", net.name),
                                    net.origin,
                                    "outside the subnet",
                                ));
                            }
                            if network.gateway == Some(ip) {
                                problems.push(self.problem(
                                    ProblemKind::InvalidValue,
                                    format!("address {ip} of service `{name}` is the gateway of network `{}`", net.name),
                                    net.origin,
                                    "the gateway's address",
                                ));
                            }
                        } else if network.driver == NetworkDriver::Bridge && !network.external {
                            problems.push(self.problem(
                                ProblemKind::InvalidValue,
                                format!("service `{name}` has a static address on network `{}`, which declares no subnet", net.name),
                                net.origin,
                                "static address",
                            ).help("give the network a `subnet` so the address can be checked and reserved"));
                        }
                    }
                    if let Some(other) = used.insert((net.name.as_str(), ip), name) {
                        problems.push(self.problem(
                            ProblemKind::Duplicate,
                            format!("address {ip} on network `{}` is given to both `{other}` and `{name}`", net.name),
                            net.origin,
                            "address taken",
                        ));
                    }
                }
            }
        }
    }

    fn subnet_overlaps(&self, problems: &mut Problems) {
        let nets: Vec<_> = self
            .stack
            .networks
            .iter()
            .filter_map(|(n, spec)| spec.subnet.map(|s| (n, s, spec.origin.0)))
            .collect();
        for (i, (a, sa, _)) in nets.iter().enumerate() {
            for (b, sb, origin) in &nets[i + 1..] {
                if sa.overlaps(sb) {
                    problems.push(self.problem(
                        ProblemKind::InvalidValue,
                        format!("subnets of networks `{a}` ({sa}) and `{b}` ({sb}) overlap"),
                        *origin,
                        "overlapping subnet",
                    ));
                }
            }
        }
    }
}
