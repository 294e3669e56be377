//! Merging several stack files (`-f base.kdl -f override.kdl`): later files win,
//! with compose's override rules.
//!
//! Single values are replaced; maps (env, labels, sysctls, build args) merge by
//! key; lists of independent items (ports, dns, capabilities…) are appended
//! without duplicates; mounts merge by target, networks by name and
//! dependencies by service, so an override can change one of them.

use std::collections::BTreeMap;

use super::model::{LimitsSpec, Located, NetworkSpec, ServiceSpec, StackSpec, VolumeSpec};

/// Applies `over` on top of `base`.
pub fn merge_stack(base: &mut StackSpec, over: StackSpec) {
    if over.name.is_some() {
        base.name = over.name;
    }
    for (name, service) in over.services {
        match base.services.get_mut(&name) {
            Some(existing) => merge_service(existing, service),
            None => {
                base.services.insert(name, service);
            }
        }
    }
    for (name, network) in over.networks {
        merge_declared(&mut base.networks, name, network, |n: &mut NetworkSpec| {
            &mut n.labels
        });
    }
    for (name, volume) in over.volumes {
        merge_declared(&mut base.volumes, name, volume, |v: &mut VolumeSpec| {
            &mut v.labels
        });
    }
}

fn replace<T>(base: &mut Option<T>, over: Option<T>) {
    if over.is_some() {
        *base = over;
    }
}

fn append_unique<T: PartialEq>(base: &mut Vec<T>, over: Vec<T>) {
    for item in over {
        if !base.contains(&item) {
            base.push(item);
        }
    }
}

/// Replaces items of `base` that share a key with an item of `over`, appends the
/// rest.
fn merge_by<T, K: PartialEq>(base: &mut Vec<T>, over: Vec<T>, key: impl Fn(&T) -> K) {
    for item in over {
        match base.iter().position(|b| key(b) == key(&item)) {
            Some(i) => base[i] = item,
            None => base.push(item),
        }
    }
}

fn merge_service(base: &mut ServiceSpec, over: ServiceSpec) {
    // An override that sets an image drops a base build and vice versa only when
    // it sets the other one too; otherwise both may stand (build, then tag).
    replace(&mut base.image, over.image);
    replace(&mut base.build, over.build);
    replace(&mut base.command, over.command);
    replace(&mut base.entrypoint, over.entrypoint);
    base.env.extend(over.env);
    append_unique(&mut base.env_file, over.env_file);
    append_unique(&mut base.ports, over.ports);
    append_unique(&mut base.expose, over.expose);
    merge_by(&mut base.volumes, over.volumes, |m: &Located<_>| {
        let m: &super::mount::MountSpec = m;
        m.target.clone()
    });
    append_unique(&mut base.volumes_from, over.volumes_from);
    merge_by(&mut base.networks, over.networks, |n| n.name.clone());
    replace(&mut base.network_mode, over.network_mode);
    merge_by(&mut base.links, over.links, |l| l.service.clone());
    merge_by(&mut base.depends_on, over.depends_on, |d| d.service.clone());
    replace(&mut base.restart, over.restart);
    replace(&mut base.health, over.health);
    replace(&mut base.update_order, over.update_order);
    merge_limits(&mut base.limits, over.limits);
    replace(&mut base.user, over.user);
    replace(&mut base.workdir, over.workdir);
    replace(&mut base.hostname, over.hostname);
    replace(&mut base.domainname, over.domainname);
    append_unique(&mut base.dns, over.dns);
    append_unique(&mut base.dns_search, over.dns_search);
    append_unique(&mut base.extra_hosts, over.extra_hosts);
    append_unique(&mut base.cap_add, over.cap_add);
    append_unique(&mut base.cap_drop, over.cap_drop);
    replace(&mut base.privileged, over.privileged);
    replace(&mut base.read_only, over.read_only);
    append_unique(&mut base.security_opt, over.security_opt);
    base.sysctls.extend(over.sysctls);
    replace(&mut base.stop_signal, over.stop_signal);
    replace(&mut base.stop_grace_period, over.stop_grace_period);
    base.labels.extend(over.labels);
    replace(&mut base.replicas, over.replicas);
    replace(&mut base.init, over.init);
    replace(&mut base.tty, over.tty);
    replace(&mut base.stdin_open, over.stdin_open);
    replace(&mut base.logging, over.logging);
    append_unique(&mut base.profiles, over.profiles);
}

fn merge_limits(base: &mut LimitsSpec, over: LimitsSpec) {
    replace(&mut base.memory, over.memory);
    replace(&mut base.memory_swap, over.memory_swap);
    replace(&mut base.memory_reservation, over.memory_reservation);
    replace(&mut base.cpus, over.cpus);
    replace(&mut base.cpu_shares, over.cpu_shares);
    replace(&mut base.cpuset, over.cpuset);
    replace(&mut base.pids, over.pids);
    replace(&mut base.blkio_weight, over.blkio_weight);
    replace(&mut base.shm_size, over.shm_size);
    merge_by(&mut base.ulimits, over.ulimits, |u| u.name.clone());
    replace(&mut base.oom_score_adj, over.oom_score_adj);
    merge_by(&mut base.devices, over.devices, |d| {
        d.container_path.clone()
    });
}

/// A later declaration of a network or volume replaces the earlier one, but
/// their labels merge.
fn merge_declared<T>(
    base: &mut BTreeMap<String, T>,
    name: String,
    mut over: T,
    labels: fn(&mut T) -> &mut BTreeMap<String, String>,
) {
    if let Some(existing) = base.get_mut(&name) {
        let mut merged = std::mem::take(labels(existing));
        merged.append(labels(&mut over));
        *labels(&mut over) = merged;
    }
    base.insert(name, over);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::diag::Origin;
    use crate::spec::model::ServiceNetwork;

    fn service(image: &str) -> ServiceSpec {
        ServiceSpec {
            image: Some(image.into()),
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn later_files_override_scalars_and_merge_maps() {
        let mut base = StackSpec::default();
        let mut web = service("nginx:1");
        web.env.insert("A".into(), "1".into());
        web.env.insert("B".into(), "1".into());
        web.dns_search.push("a.example".into());
        base.services.insert("web".into(), web);

        let mut over = StackSpec::default();
        let mut web2 = service("nginx:2");
        web2.env.insert("B".into(), "2".into());
        web2.dns_search.push("a.example".into());
        web2.dns_search.push("b.example".into());
        over.services.insert("web".into(), web2);
        over.services.insert("db".into(), service("postgres"));

        merge_stack(&mut base, over);
        let web = &base.services["web"];
        assert_eq!(web.image.as_deref(), Some("nginx:2"));
        assert_eq!(web.env["A"], "1");
        assert_eq!(web.env["B"], "2");
        assert_eq!(web.dns_search, ["a.example", "b.example"]);
        assert!(base.services.contains_key("db"));
    }

    #[test]
    fn networks_merge_by_name() {
        let net = |name: &str, alias: &str| {
            Located::new(
                ServiceNetwork {
                    name: name.into(),
                    aliases: vec![alias.into()],
                    ipv4: None,
                    ipv6: None,
                },
                Origin::default(),
            )
        };
        let mut base = service("x");
        base.networks = vec![net("front", "a"), net("back", "b")];
        let mut over = service("x");
        over.networks = vec![net("back", "c")];
        merge_service(&mut base, over);
        assert_eq!(base.networks.len(), 2);
        assert_eq!(base.networks[1].aliases, ["c"]);
    }
}
