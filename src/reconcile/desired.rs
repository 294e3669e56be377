//! From a stack file's model to what the plan compares: each service
//! becomes a container template (a [`RunRequest`], as `docker run` would
//! make) and the [`Fields`] the plan compares, networks and volumes get the
//! stack's prefix (`<stack>_<name>`, as Compose names them).
//!
//! The fields are the template itself, key by key, so every input that
//! shapes a container is compared, with nothing to keep in step by hand:
//! adding a field to [`RunRequest`] makes it part of the comparison. Files
//! a container reads at start are compared by content: env files (their
//! values are in `env`) and bind-mounted files (`file:PATH` fields with the
//! sha256 of the bytes), so saving a changed config file recreates the
//! services that mount it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::container::{NetMode, Resources, RunRequest, SeccompChoice};
use super::health::HealthRequest;
use super::link::LinkSpec;
use super::plan::{
    Backoff, Dependency, Desired, DesiredService, Fields, ImageSource, Restart, UpdateOrder,
};
use crate::spec::envfile::parse_dotenv;
use crate::spec::model::{
    HealthCommand, NetworkMode, ServiceSpec, StackSpec, SwapLimit, VolumesFromSource,
};
use crate::spec::mount::MountKind;

/// The label naming a container's stack.
pub const LABEL_STACK: &str = "stack.name";
/// The label naming a container's service.
pub const LABEL_SERVICE: &str = "stack.service";
/// The label with a container's replica number.
pub const LABEL_REPLICA: &str = "stack.replica";
/// The label with the hash of a container's configuration.
pub const LABEL_CONFIG: &str = "stack.config-hash";
/// The network every service without networks joins.
pub const DEFAULT_NETWORK: &str = "default";

/// Fields of a template that change in place, without a new container.
const LIVE_FIELDS: &[&str] = &["resources", "restart"];

/// A stack resolved for planning and for making its containers.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// What the plan compares.
    pub desired: Desired,
    /// Per service: how to make one of its containers.
    pub templates: BTreeMap<String, Template>,
    /// Per stack network (its name in the stack): how to make it.
    pub networks: BTreeMap<String, NetworkTemplate>,
    /// Per stack volume: its name on the host.
    pub volumes: BTreeMap<String, String>,
}

/// How to make a container of a service.
#[derive(Debug, Clone, Default)]
pub struct Template {
    /// The request, without name and replica labels.
    pub request: RunRequest,
    /// Networks joined after the first (which `request.network` names).
    pub attach: Vec<Attachment>,
}

/// A further network a container joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The network's name on the host.
    pub network: String,
    /// Names the container answers to there.
    pub aliases: Vec<String>,
    /// A static address.
    pub ip: Option<Ipv4Addr>,
    /// A static IPv6 address.
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// How to make a network of the stack.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkTemplate {
    /// Its name on the host.
    pub name: String,
    /// Its settings.
    pub spec: crate::spec::model::NetworkSpec,
}

/// Why a stack cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// An env file or a bind-mounted file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An env file is malformed.
    #[error("{path}: {message}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Template {
    /// The request for replica `replica`, named `name`, labelled for the
    /// stack with the hash of `config`.
    pub fn for_replica(
        &self,
        stack: &str,
        service: &str,
        replica: u32,
        name: &str,
        config: &Fields,
    ) -> RunRequest {
        let mut request = self.request.clone();
        request.name = Some(name.to_string());
        request.labels.insert(LABEL_STACK.into(), stack.into());
        request.labels.insert(LABEL_SERVICE.into(), service.into());
        request
            .labels
            .insert(LABEL_REPLICA.into(), replica.to_string());
        request
            .labels
            .insert(LABEL_CONFIG.into(), config_hash(config));
        request
    }
}

/// The hash of a configuration, for the container's label.
pub fn config_hash(config: &Fields) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// A network's name on the host.
pub fn network_name(stack: &str, network: &str) -> String {
    format!("{stack}_{network}")
}

/// A volume's name on the host.
pub fn volume_name(stack: &str, volume: &str) -> String {
    format!("{stack}_{volume}")
}

/// The hash of everything a service's build reads: its settings, the
/// Dockerfile and the context's content (as `.dockerignore` leaves it).
/// A context that cannot be read hashes as such; the build then says why.
pub fn build_hash(build: &crate::spec::model::BuildSpec) -> String {
    let settings = serde_json::to_string(build).unwrap_or_default();
    let content = crate::build::context::build_digest(&build.context, build.dockerfile.as_deref())
        .unwrap_or_else(|e| format!("unreadable: {}", crate::error_chain(&e)));
    sha256_hex(format!("{settings}\0{content}").as_bytes())
}

/// The tag a service's built image gets.
pub fn build_tag(stack: &str, service: &str) -> String {
    format!("{stack}-{service}:latest")
}

/// Resolves `spec` as stack `stack`; relative paths in it are already
/// absolute (the spec loader resolves them against the stack file).
pub fn resolve(spec: &StackSpec, stack: &str) -> Result<Resolved, DesiredError> {
    let mut resolved = Resolved {
        desired: Desired {
            stack: stack.to_string(),
            ..Desired::default()
        },
        ..Resolved::default()
    };
    // Like Compose's, the default network is there to be named too
    // (`network "default"`) without being declared.
    let needs_default = spec.services.values().any(|s| {
        (s.networks.is_empty() && s.network_mode.is_none())
            || s.networks.iter().any(|n| n.name == DEFAULT_NETWORK)
    });
    let mut networks = spec.networks.clone();
    if needs_default && !networks.contains_key(DEFAULT_NETWORK) {
        networks.insert(DEFAULT_NETWORK.into(), Default::default());
    }
    for (name, net) in &networks {
        let host_name = if net.external {
            name.clone()
        } else {
            network_name(stack, name)
        };
        if !net.external {
            let json = serde_json::to_string(net).unwrap_or_default();
            resolved
                .desired
                .networks
                .insert(name.clone(), sha256_hex(json.as_bytes()));
        }
        resolved.networks.insert(
            name.clone(),
            NetworkTemplate {
                name: host_name,
                spec: net.clone(),
            },
        );
    }
    for (name, volume) in &spec.volumes {
        let host_name = if volume.external {
            name.clone()
        } else {
            resolved.desired.volumes.insert(name.clone());
            volume_name(stack, name)
        };
        resolved.volumes.insert(name.clone(), host_name);
    }
    for (name, service) in &spec.services {
        let (template, desired) = service_template(&resolved, spec, name, service)?;
        resolved.templates.insert(name.clone(), template);
        resolved.desired.services.insert(name.clone(), desired);
    }
    Ok(resolved)
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn service_template(
    resolved: &Resolved,
    spec: &StackSpec,
    name: &str,
    s: &ServiceSpec,
) -> Result<(Template, DesiredService), DesiredError> {
    let stack = resolved.desired.stack.as_str();
    let image = match (&s.build, &s.image) {
        (Some(build), image) => ImageSource::Build {
            tag: image.clone().unwrap_or_else(|| build_tag(stack, name)),
            context: build_hash(build),
            how: crate::reconcile::plan::BuildHow {
                dir: build.context.clone(),
                dockerfile: build.dockerfile.clone(),
                args: build.args.clone(),
                target: build.target.clone(),
                no_cache: build.no_cache,
            },
        },
        (None, Some(image)) => ImageSource::Pull(image.clone()),
        (None, None) => ImageSource::Pull(String::new()),
    };
    let mut req = RunRequest {
        image: image.reference().to_string(),
        entrypoint: s.entrypoint.clone(),
        cmd: s.command.clone().unwrap_or_default(),
        env: environment(s, &spec.variables)?,
        workdir: s.workdir.clone(),
        user: s.user.clone(),
        hostname: s.hostname.clone(),
        domainname: s.domainname.clone(),
        tty: s.tty.unwrap_or(false),
        stdin_open: s.stdin_open.unwrap_or(false),
        init: s.init.unwrap_or(true),
        read_only: s.read_only.unwrap_or(false),
        privileged: s.privileged.unwrap_or(false),
        cap_add: s.cap_add.clone(),
        cap_drop: s.cap_drop.clone(),
        ulimits: s.limits.ulimits.clone(),
        sysctls: s.sysctls.clone(),
        oom_score_adj: s.limits.oom_score_adj,
        resources: resources(s),
        shm_size: s.limits.shm_size.map(|b| b.0),
        stop_signal: s.stop_signal.clone(),
        stop_timeout: s
            .stop_grace_period
            .map(|d| u32::try_from(d.0.as_secs()).unwrap_or(u32::MAX)),
        labels: s.labels.clone(),
        log_max_size: s.logging.as_ref().and_then(|l| l.max_size).map(|b| b.0),
        log_max_files: s.logging.as_ref().and_then(|l| l.max_files),
        devices: s.limits.devices.clone(),
        dns: s.dns.iter().map(|d| d.to_string()).collect(),
        dns_search: s.dns_search.clone(),
        extra_hosts: s.extra_hosts.clone(),
        expose: s.expose.iter().map(|e| e.to_string()).collect(),
        port_bindings: super::ports::bindings_of(s.ports.iter().map(|p| &p.value)),
        ..RunRequest::default()
    };
    for opt in &s.security_opt {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match key {
            "seccomp" if value == "unconfined" => req.seccomp = SeccompChoice::Unconfined,
            "seccomp" if !value.is_empty() => {
                req.seccomp = SeccompChoice::File(PathBuf::from(value))
            }
            "no-new-privileges" => req.no_new_privileges = value.is_empty() || value == "true",
            // Validation refused anything else; AppArmor and SELinux
            // labels do not apply to this runtime.
            _ => {}
        }
    }
    if let Some(health) = &s.health {
        req.health = HealthRequest {
            test: Some(match &health.command {
                HealthCommand::Shell(cmd) => vec!["CMD-SHELL".into(), cmd.clone()],
                HealthCommand::Exec(argv) => {
                    let mut test = vec!["CMD".to_string()];
                    test.extend(argv.iter().cloned());
                    test
                }
                HealthCommand::Disabled => vec!["NONE".into()],
            }),
            interval: health.interval.map(|d| d.0),
            timeout: health.timeout.map(|d| d.0),
            retries: health.retries,
            start_period: health.start_period.map(|d| d.0),
            start_interval: None,
        };
    }
    let mut bind_files = BTreeSet::new();
    for mount in &s.volumes {
        let mut mount = mount.value.clone();
        match mount.kind {
            MountKind::Volume => {
                if let Some(source) = &mount.source
                    && let Some(host) = resolved.volumes.get(source)
                {
                    mount.source = Some(host.clone());
                }
            }
            MountKind::Bind => {
                if let Some(source) = &mount.source {
                    let path = Path::new(source);
                    if path.is_file() {
                        bind_files.insert(path.to_path_buf());
                    }
                }
            }
            _ => {}
        }
        req.mounts.push(mount);
    }
    for from in &s.volumes_from {
        let source = match &from.source {
            VolumesFromSource::Service(service) => super::plan::container_name(stack, service, 1),
            VolumesFromSource::Container(c) => c.clone(),
        };
        let mode = if from.read_only { ":ro" } else { "" };
        req.volumes_from.push(format!("{source}{mode}"));
    }
    for link in &s.links {
        req.links.push(LinkSpec {
            name: super::plan::container_name(stack, &link.service, 1),
            alias: link.alias.clone().unwrap_or_else(|| link.service.clone()),
        });
    }
    let mut attach = Vec::new();
    match s.network_mode.as_ref().map(|m| &m.value) {
        Some(NetworkMode::Host) => req.network = NetMode::Host,
        Some(NetworkMode::None) => req.network = NetMode::None,
        Some(NetworkMode::Container(c)) => req.network = NetMode::Container(c.clone()),
        Some(NetworkMode::Service(service)) => {
            req.network = NetMode::Container(super::plan::container_name(stack, service, 1))
        }
        Some(NetworkMode::Bridge) | None => {
            type Joined = (
                String,
                Vec<String>,
                Option<Ipv4Addr>,
                Option<std::net::Ipv6Addr>,
            );
            let joined: Vec<Joined> = if s.networks.is_empty() {
                vec![(DEFAULT_NETWORK.to_string(), vec![], None, None)]
            } else {
                s.networks
                    .iter()
                    .map(|n| (n.name.clone(), n.aliases.clone(), n.ipv4, n.ipv6))
                    .collect()
            };
            for (i, (network, aliases, ip, ip6)) in joined.into_iter().enumerate() {
                let host = resolved
                    .networks
                    .get(&network)
                    .map_or_else(|| network_name(stack, &network), |t| t.name.clone());
                // Every container answers to its service's name, like
                // Compose's service discovery.
                let mut names = vec![name.to_string()];
                names.extend(aliases);
                if i == 0 {
                    req.network = NetMode::Network(host);
                    req.network_aliases = names;
                    req.ip = ip;
                    req.ip6 = ip6;
                } else {
                    attach.push(Attachment {
                        network: host,
                        aliases: names,
                        ip,
                        ip6,
                    });
                }
            }
        }
    }
    // The stack loop restarts its containers itself (backoff, start limit,
    // dependencies): the daemon's per-container policy stays off.
    let restart = restart_settings(s);
    let mut fields = to_fields(&req);
    for path in &bind_files {
        let bytes = std::fs::read(path).map_err(|source| DesiredError::Read {
            path: path.clone(),
            source,
        })?;
        fields.insert(format!("file:{}", path.display()), sha256_hex(&bytes));
    }
    if let ImageSource::Build { context, .. } = &image {
        fields.insert("build".into(), context.clone());
    }
    let mut live = Fields::new();
    for key in LIVE_FIELDS {
        if let Some(v) = fields.remove(*key) {
            live.insert((*key).to_string(), v);
        }
    }
    if let Some(r) = &s.restart {
        live.insert(
            "restart".into(),
            serde_json::to_string(r).unwrap_or_default(),
        );
    }
    let networks: Vec<String> = match &req.network {
        NetMode::Network(_) => {
            let mut names: Vec<String> = s.networks.iter().map(|n| n.name.clone()).collect();
            if names.is_empty() {
                names.push(DEFAULT_NETWORK.into());
            }
            names
                .into_iter()
                .filter(|n| resolved.desired.networks.contains_key(n))
                .collect()
        }
        _ => vec![],
    };
    let volumes = s
        .volumes
        .iter()
        .filter(|m| m.kind == MountKind::Volume)
        .filter_map(|m| m.source.clone())
        .filter(|v| spec.volumes.contains_key(v) && resolved.desired.volumes.contains(v))
        .collect();
    let mut depends_on: Vec<Dependency> = s
        .depends_on
        .iter()
        .map(|d| Dependency {
            service: d.service.clone(),
            condition: d.condition,
            restart_dependents: d.restart_dependents,
        })
        .collect();
    // A container that links to a service's container, takes its volumes
    // or joins its network namespace needs it running when it is made:
    // as in Compose, that is a dependency even when not declared.
    let referenced = s
        .links
        .iter()
        .map(|l| l.service.clone())
        .chain(s.volumes_from.iter().filter_map(|f| match &f.source {
            VolumesFromSource::Service(service) => Some(service.clone()),
            VolumesFromSource::Container(_) => None,
        }))
        .chain(match s.network_mode.as_ref().map(|m| &m.value) {
            Some(NetworkMode::Service(service)) => Some(service.clone()),
            _ => None,
        });
    for service in referenced {
        if service != name && !depends_on.iter().any(|d| d.service == service) {
            depends_on.push(Dependency {
                service,
                condition: crate::spec::model::Condition::Started,
                restart_dependents: false,
            });
        }
    }
    let desired = DesiredService {
        replicas: s.replicas.unwrap_or(1),
        image,
        config: fields,
        live,
        depends_on,
        networks,
        volumes,
        restart,
        health: s.health.as_ref().and_then(|h| match h.command {
            HealthCommand::Disabled => None,
            _ => Some(h.on_unhealthy),
        }),
        update: match s.update_order {
            Some(crate::spec::model::UpdateOrder::StartFirst) => UpdateOrder::StartFirst,
            Some(crate::spec::model::UpdateOrder::StopFirst) | None => UpdateOrder::StopFirst,
        },
    };
    Ok((
        Template {
            request: req,
            attach,
        },
        desired,
    ))
}

/// The template as fields: each top-level key of its JSON form, the
/// value as compact JSON. The name and the labels the stack adds are not
/// part of it.
fn to_fields(req: &RunRequest) -> Fields {
    let mut fields = Fields::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(req) {
        for (key, value) in map {
            if key == "name" || value.is_null() {
                continue;
            }
            let empty = match &value {
                serde_json::Value::Array(a) => a.is_empty(),
                serde_json::Value::Object(o) => o.is_empty(),
                serde_json::Value::Bool(b) => !b,
                _ => false,
            };
            if !empty {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                fields.insert(key, text);
            }
        }
    }
    fields
}

fn restart_settings(s: &ServiceSpec) -> Restart {
    let Some(r) = &s.restart else {
        return Restart::default();
    };
    let defaults = Backoff::default();
    Restart {
        policy: r.policy,
        max_retries: r.max_retries,
        backoff: Backoff {
            min: r.backoff.min.map_or(defaults.min, |d| d.0),
            max: r.backoff.max.map_or(defaults.max, |d| d.0),
            factor: r.backoff.factor.unwrap_or(defaults.factor),
            reset_after: r.backoff.reset_after.map_or(defaults.reset_after, |d| d.0),
        },
        start_limit: r.start_limit.map(|l| (l.burst, l.interval.0)),
    }
}

fn resources(s: &ServiceSpec) -> Resources {
    let l = &s.limits;
    Resources {
        memory: l.memory.map(|b| i64::try_from(b.0).unwrap_or(i64::MAX)),
        memory_swap: l.memory_swap.map(|m| match m {
            SwapLimit::Bytes(b) => i64::try_from(b.0).unwrap_or(i64::MAX),
            SwapLimit::Unlimited => -1,
        }),
        memory_reservation: l
            .memory_reservation
            .map(|b| i64::try_from(b.0).unwrap_or(i64::MAX)),
        cpu_shares: l.cpu_shares,
        cpus: l.cpus,
        cpuset_cpus: l.cpuset.clone(),
        pids_limit: l.pids,
        blkio_weight: l.blkio_weight,
        ..Resources::default()
    }
}

/// The service's environment: its env files in order (Compose's `.env`
/// format), then `env`, which wins.
fn environment(
    s: &ServiceSpec,
    variables: &BTreeMap<String, String>,
) -> Result<Vec<String>, DesiredError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for file in &s.env_file {
        let path = &file.value;
        let text = std::fs::read_to_string(path).map_err(|source| DesiredError::Read {
            path: path.clone(),
            source,
        })?;
        // `${VAR}` in it: the stack's interpolation variables, as the
        // stack file's own (an unset one is empty, as Compose has it).
        let pairs = parse_dotenv(&text, variables).map_err(|e| DesiredError::EnvFile {
            path: path.clone(),
            message: e.to_string(),
        })?;
        env.extend(pairs);
    }
    env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::plan::{Observed, plan};
    use std::time::SystemTime;

    fn load(text: &str, dir: &Path) -> StackSpec {
        std::fs::write(dir.join("stack.kdl"), text).unwrap();
        crate::spec::load::load(&crate::spec::load::LoadOptions {
            project_dir: dir.to_path_buf(),
            environment: Some(vec![]),
            ..Default::default()
        })
        .unwrap()
        .spec
    }

    #[test]
    fn services_become_templates_with_the_stack_names() {
        let dir = tempfile::tempdir().unwrap();
        let spec = load(
            r#"
            network "front"
            volume "data"
            service "db" {
                image "pg:16"
                volume "data" "/var/lib/db"
                limits memory="512m"
            }
            service "web" {
                image "web:1"
                network "front"
                depends-on "db" condition="started"
                link "db" alias="database"
                replicas 2
                restart "always" { backoff min="200ms" max="1m"; }
            }
            "#,
            dir.path(),
        );
        let r = resolve(&spec, "shop").unwrap();
        let db = &r.templates["db"].request;
        assert_eq!(db.network, NetMode::Network("shop_default".into()));
        assert_eq!(db.network_aliases, ["db"]);
        assert_eq!(db.mounts[0].source.as_deref(), Some("shop_data"));
        assert!(db.init, "stack containers get an init by default");
        let web = &r.templates["web"].request;
        assert_eq!(web.network, NetMode::Network("shop_front".into()));
        assert_eq!(web.links[0].name, "shop-db-1");
        assert_eq!(web.links[0].alias, "database");
        assert_eq!(
            web.restart.name,
            crate::spec::restart::RestartPolicyName::No,
            "the stack loop restarts, not the daemon"
        );
        let d = &r.desired;
        assert_eq!(d.networks.keys().collect::<Vec<_>>(), ["default", "front"]);
        assert_eq!(d.services["web"].replicas, 2);
        assert_eq!(
            d.services["web"].restart.backoff.min,
            std::time::Duration::from_millis(200)
        );
        assert!(d.services["db"].live.contains_key("resources"));
        assert!(!d.services["db"].config.contains_key("resources"));
        assert_eq!(d.services["db"].volumes, ["data"]);
        let named = r.templates["web"].for_replica(
            "shop",
            "web",
            2,
            "shop-web-2",
            &d.services["web"].config,
        );
        assert_eq!(named.labels[LABEL_REPLICA], "2");
        assert_eq!(named.labels[LABEL_SERVICE], "web");
    }

    #[test]
    fn the_default_network_named_by_a_service_is_made_without_a_declaration() {
        let dir = tempfile::tempdir().unwrap();
        let text = "network \"back\"\nservice \"a\" {\n image \"bb\"\n network \"back\"\n}\nservice \"b\" {\n image \"bb\"\n network \"default\"\n}\n";
        let r = resolve(&load(text, dir.path()), "s").unwrap();
        assert_eq!(
            r.desired.networks.keys().collect::<Vec<_>>(),
            ["back", "default"]
        );
        assert_eq!(r.desired.services["b"].networks, ["default"]);
    }

    #[test]
    fn an_edit_changes_only_the_fields_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve(
            &load(
                "service \"web\" {\n image \"web:1\"\n env A=\"1\"\n}\nservice \"db\" {\n image \"pg\"\n}\n",
                dir.path(),
            ),
            "s",
        )
        .unwrap();
        let b = resolve(
            &load(
                "service \"web\" {\n image \"web:1\"\n env A=\"2\"\n}\nservice \"db\" {\n image \"pg\"\n}\n",
                dir.path(),
            ),
            "s",
        )
        .unwrap();
        assert_eq!(a.desired.services["db"], b.desired.services["db"]);
        let diff = crate::reconcile::plan::differences(
            &a.desired.services["web"].config,
            &b.desired.services["web"].config,
        );
        assert_eq!(diff, [r#"env: ["A=1"]→["A=2"]"#]);
        // And a plan from nothing makes both.
        let p = plan(&b.desired, &Observed::default(), SystemTime::UNIX_EPOCH);
        assert!(!p.is_empty());
    }

    #[test]
    fn every_example_stack_resolves_and_publishes_its_ports() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stacks");
        let mut seen = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let dir = entry.unwrap().path();
            let loaded = crate::spec::load::load(&crate::spec::load::LoadOptions {
                project_dir: dir.clone(),
                environment: Some(vec![]),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
            resolve(&loaded.spec, "example").unwrap();
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} examples");
        let site = examples.join("static-site");
        let loaded = crate::spec::load::load(&crate::spec::load::LoadOptions {
            project_dir: site,
            environment: Some(vec![]),
            ..Default::default()
        })
        .unwrap();
        let r = resolve(&loaded.spec, "site").unwrap();
        let bindings = &r.templates["web"].request.port_bindings["8080/tcp"];
        assert_eq!(bindings[0].host_ip, "127.0.0.1");
        assert_eq!(bindings[0].host_port, "8080");
        assert!(
            r.desired.services["web"]
                .config
                .contains_key("PortBindings")
        );
    }

    #[test]
    fn env_files_and_bind_mounted_files_are_compared_by_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.env"), "MODE=fast\n").unwrap();
        std::fs::write(dir.path().join("app.conf"), "v1").unwrap();
        let text = "service \"app\" {\n image \"app\"\n env-file \"app.env\"\n env OTHER=\"x\"\n volume \"./app.conf\" \"/etc/app.conf\" read-only=#true\n}\n";
        let one = resolve(&load(text, dir.path()), "s").unwrap();
        let env = &one.templates["app"].request.env;
        assert_eq!(env, &["MODE=fast", "OTHER=x"]);
        std::fs::write(dir.path().join("app.conf"), "v2").unwrap();
        let two = resolve(&load(text, dir.path()), "s").unwrap();
        let diff = crate::reconcile::plan::differences(
            &one.desired.services["app"].config,
            &two.desired.services["app"].config,
        );
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("file:"), "{diff:?}");
    }
}
