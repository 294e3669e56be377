//! Single containers the Docker way: resolve the image, prepare volumes and
//! the container's own files, build the spec ([`super::container::build`]) and
//! hand it to the runtime. `stack run`/`create` and, later, the stack loop
//! create containers through here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use serde_json::{Value, json};

use super::container::{self, ContainerError, NetMode, Placement, RunRequest, SeccompChoice};
use super::health::{Health, HealthCheck};
use crate::image::driver::StorageDriver;
use crate::image::images::{ImageError, Images};
use crate::image::layer::{self, LayerError};
use crate::image::leftovers;
use crate::runtime::{ContainerRecord, Runtime, RuntimeError, Status, seccomp};
use crate::spec::mount::MountKind;

/// Errors of container management.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    /// The image could not be found or unpacked.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The request does not make a valid container.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The seccomp profile could not be used.
    #[error("seccomp profile")]
    Seccomp(#[from] seccomp::SeccompError),
    /// This architecture has no syscall table for seccomp.
    #[error(
        "seccomp filtering is not supported on {0}; run with --security-opt seccomp=unconfined"
    )]
    SeccompArch(&'static str),
    /// A file of the container could not be written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The health check settings are invalid.
    #[error(transparent)]
    Health(#[from] super::health::HealthError),
    /// `--volumes-from` or `--network container:` names a container that
    /// cannot serve.
    #[error("{0}")]
    Reference(String),
    /// A `--mount type=bind` source that does not exist (Docker's message;
    /// `-v` creates a missing source instead).
    #[error("invalid mount config for type \"bind\": bind source path does not exist: {}", path.display())]
    BindSourceMissing {
        /// The source on the host.
        path: PathBuf,
    },
    /// A mount option this runtime does not implement.
    #[error("mount at {target}: {option} is not supported")]
    MountOption {
        /// The mount's target.
        target: String,
        /// The option, as the user wrote it.
        option: String,
    },
    /// The image could not be copied into a `vfs` container's root.
    #[error("copy image {image} into the root of the new container")]
    CopyImage {
        /// The image id.
        image: String,
        /// Why.
        #[source]
        source: LayerError,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ContainersError + 'a {
    move |source| ContainersError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Images, containers and volumes of one state root.
#[derive(Debug)]
pub struct Containers {
    /// The image store.
    pub images: Images,
    /// The runtime.
    pub runtime: Runtime,
    volumes: PathBuf,
    /// Where `vfs` copies are made before they become a container's root
    /// (`<root>/containers`, the file system the bundles are on).
    containers_dir: PathBuf,
    storage_driver: StorageDriver,
}

/// Prefix of the temp directories `vfs` copies are made in.
const VFS_TEMP_PREFIX: &str = ".tmp-vfs";

/// The storage driver a container was created with (its record's
/// `extra["driver"]`; containers from before drivers were recorded are
/// overlay ones).
pub fn driver_of(record: &ContainerRecord) -> StorageDriver {
    record
        .extra
        .get("driver")
        .and_then(Value::as_str)
        .and_then(|d| d.parse().ok())
        .unwrap_or_default()
}

const ADJECTIVES: [&str; 24] = [
    "brave",
    "calm",
    "eager",
    "fervent",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "tender",
    "upbeat",
    "vibrant",
    "witty",
    "youthful",
    "zealous",
    "bold",
    "clever",
];
const NAMES: [&str; 24] = [
    "lovelace", "hopper", "turing", "knuth", "ritchie", "thompson", "hamilton", "noether", "curie",
    "dijkstra", "liskov", "torvalds", "babbage", "shannon", "boole", "euler", "gauss", "kepler",
    "newton", "pascal", "tesla", "wozniak", "yalow", "zuse",
];

/// A generated name like Docker's (`adjective_scientist`), unique among
/// `taken`.
fn generate_name(id: &str, taken: impl Fn(&str) -> bool) -> String {
    let seed = u64::from_str_radix(&id[..id.len().min(12)], 16).unwrap_or(0);
    let a = ADJECTIVES[usize::try_from(seed % 24).unwrap_or(0)];
    let n = NAMES[usize::try_from((seed / 24) % 24).unwrap_or(0)];
    let base = format!("{a}_{n}");
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}{i}"))
        .find(|c| !taken(c))
        .unwrap_or(base)
}

/// Whether a name is acceptable to Docker: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Containers {
    /// Opens the state root.
    pub fn open(root: &Path, run_dir: &Path) -> Result<Self, ContainersError> {
        let exe = std::env::current_exe()
            .map_err(io_err("find this program", Path::new("/proc/self/exe")))?;
        let images = Images::open(root)?;
        let runtime = Runtime::open(root, run_dir, exe)?;
        let volumes = root.join("volumes");
        fs::create_dir_all(&volumes).map_err(io_err("create", &volumes))?;
        let containers_dir = root.join("containers");
        // Copies whose creator died halfway.
        leftovers::sweep(&containers_dir, |name| name.starts_with(VFS_TEMP_PREFIX));
        Ok(Self {
            images,
            runtime,
            volumes,
            containers_dir,
            storage_driver: StorageDriver::default(),
        })
    }

    /// Sets the storage driver new containers are created with (existing
    /// containers keep the one they were made with).
    pub fn set_storage_driver(&mut self, driver: StorageDriver) {
        self.storage_driver = driver;
    }

    /// The storage driver new containers are created with.
    pub fn storage_driver(&self) -> StorageDriver {
        self.storage_driver
    }

    /// The directory of a named volume, created if new. A new volume is
    /// marked to be seeded with the image's files at its mount point.
    fn volume(&self, name: &str, seed: bool) -> Result<PathBuf, ContainersError> {
        if !is_valid_name(name) {
            return Err(ContainersError::Reference(format!(
                "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let dir = self.volumes.join(name);
        let data = dir.join("_data");
        if !data.exists() {
            fs::create_dir_all(&data).map_err(io_err("create the volume", &data))?;
            if seed {
                fs::write(dir.join(crate::runtime::shim::UNSEEDED), b"")
                    .map_err(io_err("create the volume", &dir))?;
            }
        }
        Ok(data)
    }

    /// Creates a container from `req`; returns its id.
    pub fn create(&self, req: &RunRequest) -> Result<String, ContainersError> {
        if req.auto_remove && req.restart.name != crate::spec::restart::RestartPolicyName::No {
            // docker/cli's ErrConflictRestartPolicyAndAutoRemove.
            return Err(ContainerError::Conflict(
                "conflicting options: cannot specify both --restart and --rm".into(),
            )
            .into());
        }
        req.health.validate()?;
        let image_id = self
            .images
            .catalog
            .resolve(&req.image)
            .map_err(ImageError::from)?;
        let config = self.images.config(&image_id)?;
        let layers = self.images.layers(&image_id)?;
        let run_config = config.config.clone().unwrap_or_default();
        let id = crate::runtime::new_id();
        let name = match &req.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !is_valid_name(n) {
                    return Err(ContainersError::Reference(format!(
                        "invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => generate_name(&id, |c| self.runtime.resolve(c).is_ok()),
        };

        // Volumes: named and anonymous ones get a directory under volumes/,
        // and so do the image's VOLUMEs nobody mounted over.
        let mut mounts = req.mounts.clone();
        for path in run_config.volumes.iter().flat_map(|v| v.keys()) {
            if !mounts.iter().any(|m| m.target == *path) {
                mounts.push(crate::spec::mount::MountSpec::new(
                    MountKind::Volume,
                    None,
                    path.clone(),
                ));
            }
        }
        check_mounts(&mounts)?;
        let mut volume_dirs = BTreeMap::new();
        let mut anonymous = Vec::new();
        for m in mounts.iter().filter(|m| m.kind == MountKind::Volume) {
            let name = match &m.source {
                Some(n) => n.clone(),
                None => {
                    let n = crate::runtime::new_id();
                    anonymous.push(n.clone());
                    n
                }
            };
            let mut dir = self.volume(&name, !m.nocopy)?;
            if let Some(sub) = &m.volume_subpath {
                dir = dir.join(sub);
                if !dir.exists() {
                    return Err(ContainersError::MountOption {
                        target: m.target.clone(),
                        option: format!("volume-subpath={sub} (no such path in volume {name})"),
                    });
                }
            }
            volume_dirs.insert(m.target.clone(), dir);
        }
        for m in mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            let source = m.source.clone().unwrap_or_default();
            if !Path::new(&source).exists() {
                // Docker creates a missing bind source as a directory.
                fs::create_dir_all(&source)
                    .map_err(io_err("create the bind source", Path::new(&source)))?;
            }
        }

        let mut inherited: Vec<Mount> = Vec::new();
        {
            for source in &req.volumes_from {
                let (name, ro) = match source.rsplit_once(':') {
                    Some((n, mode)) if mode == "ro" || mode == "rw" => {
                        (n.to_string(), mode == "ro")
                    }
                    _ => (source.clone(), false),
                };
                let other = self.runtime.resolve(&name)?;
                let spec = self.runtime.spec(&other)?;
                for m in spec.mounts().iter().flatten() {
                    let dest = m.destination().to_string_lossy().into_owned();
                    if dest.starts_with("/proc")
                        || dest.starts_with("/dev")
                        || dest.starts_with("/sys")
                        || ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
                            .contains(&dest.as_str())
                    {
                        continue;
                    }
                    let mut m = m.clone();
                    if ro {
                        let mut opts = m.options().clone().unwrap_or_default();
                        opts.retain(|o| o != "rw");
                        opts.push("ro".into());
                        m.set_options(Some(opts));
                    }
                    inherited.push(m);
                }
            }
        }

        let mut req = req.clone();
        req.mounts = mounts;
        if let NetMode::Container(other) = &req.network
            && !other.starts_with("/proc/")
        {
            let other_id = self.runtime.resolve(other)?;
            let st = self.runtime.state(&other_id)?;
            if st.status != Status::Running {
                return Err(ContainersError::Reference(format!(
                    "cannot join the network of container {other}: it is not running"
                )));
            }
            req.network = NetMode::Container(format!("/proc/{}/ns/net", st.pid));
        }
        let caps = container::capabilities(&req)?;
        let profile = seccomp_for(&req.seccomp, &caps)?;
        // vfs: the image is copied before the container is created, so a
        // copy that fails or is cut short leaves no container, only a temp
        // directory the next `open` sweeps; one rename then makes the copy
        // the upper dir. With no lower layers the runtime bind-mounts it as
        // the root.
        let driver = self.storage_driver;
        let copy = match driver {
            StorageDriver::Overlay => None,
            StorageDriver::Vfs => Some(self.copy_image(&image_id.to_string(), &layers)?),
        };
        let place = Placement {
            id: id.clone(),
            name: name.clone(),
            bundle: self.runtime.bundle(&id).dir().to_path_buf(),
            layers: match driver {
                StorageDriver::Overlay => layers,
                StorageDriver::Vfs => Vec::new(),
            },
            image_id: image_id.to_string(),
            volume_dirs,
            inherited_mounts: inherited,
            seccomp: profile,
            created: crate::runtime::now_rfc3339(),
        };
        let built = container::build(&req, &run_config, &place);
        let (mut record, spec) = match built {
            Ok(built) => built,
            Err(e) => {
                if let Some(copy) = &copy {
                    let _ = fs::remove_dir_all(copy);
                }
                return Err(e.into());
            }
        };
        record
            .extra
            .insert("anonymous_volumes".into(), json!(anonymous));
        record.extra.insert("restart".into(), json!(req.restart));
        // The command line, for listings that should not parse the spec.
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        record.extra.insert("command".into(), json!(args));
        if let Some(check) = super::health::effective(&req.health, &run_config) {
            record.extra.insert("healthcheck".into(), json!(check));
        }
        record.extra.insert("driver".into(), json!(driver.name()));
        if let Err(e) = self.runtime.create(&record, &spec) {
            if let Some(copy) = &copy {
                let _ = fs::remove_dir_all(copy);
            }
            return Err(e.into());
        }
        if let Some(copy) = copy {
            // rename(2) replaces the empty upper dir the runtime made.
            if let Err(e) = fs::rename(&copy, &record.rootfs.upper) {
                let _ = fs::remove_dir_all(&copy);
                let _ = self.runtime.remove(&id, true);
                return Err(io_err("move the image copy into", &record.rootfs.upper)(e));
            }
        }
        let bundle = self.runtime.bundle(&id);
        let hostname = spec.hostname().clone().unwrap_or_default();
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let files = [
            ("hostname", format!("{hostname}\n")),
            (
                "hosts",
                container::hosts_file(&hostname, &req.extra_hosts, None),
            ),
            (
                "resolv.conf",
                container::resolv_conf_with(
                    &host_resolv,
                    &container::DnsSettings {
                        servers: req.dns.clone(),
                        search: req.dns_search.clone(),
                        options: req.dns_options.clone(),
                    },
                    if req.network == NetMode::Host {
                        container::Resolver::Host
                    } else {
                        container::Resolver::Private
                    },
                ),
            ),
        ];
        for (file, content) in files {
            let path = bundle.dir().join(file);
            if let Err(e) = fs::write(&path, content) {
                let _ = self.runtime.remove(&id, true);
                return Err(io_err("write", &path)(e));
            }
        }
        Ok(id)
    }

    /// Copies the image's `layers` into a new temp directory next to the
    /// bundles, for a `vfs` container; returns the directory.
    fn copy_image(&self, image: &str, layers: &[PathBuf]) -> Result<PathBuf, ContainersError> {
        let dir = self
            .containers_dir
            .join(leftovers::temp_name(VFS_TEMP_PREFIX));
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        match layer::flatten(layers, &dir) {
            Ok(stats) => {
                tracing::debug!(
                    image,
                    entries = stats.entries,
                    bytes = stats.bytes,
                    reflinked = stats.reflinked,
                    "image copied for a vfs container"
                );
                Ok(dir)
            }
            Err(source) => {
                let _ = fs::remove_dir_all(&dir);
                Err(ContainersError::CopyImage {
                    image: image.to_string(),
                    source,
                })
            }
        }
    }

    /// The changes in a container's root against its image, Docker's
    /// `GET /containers/{id}/changes`, for a `vfs` container (an overlay
    /// container's changes are its upper directory). Docker's naive diff:
    /// see [`layer::tree_changes`].
    pub fn vfs_changes(
        &self,
        record: &ContainerRecord,
    ) -> Result<Vec<layer::Change>, ContainersError> {
        let image: crate::image::digest::Digest = record
            .image_id
            .parse()
            .map_err(|_| ContainersError::Reference(format!("bad image id {}", record.image_id)))?;
        let layers = self.images.layers(&image)?;
        Ok(layer::tree_changes(&layers, &record.rootfs.upper).map_err(ImageError::from)?)
    }

    /// The bytes a `vfs` container added or changed (Docker's `SizeRw`):
    /// the regular files among its [`vfs_changes`](Self::vfs_changes); 0 if
    /// they cannot be found.
    pub fn vfs_size_rw(&self, record: &ContainerRecord) -> u64 {
        match self.vfs_changes(record) {
            Ok(changes) => layer::changes_size(&record.rootfs.upper, &changes),
            Err(error) => {
                tracing::debug!(id = %record.id, error = %crate::error_chain(&error), "cannot size the container's changes");
                0
            }
        }
    }

    /// Removes a container; with `volumes`, its anonymous volumes too.
    pub fn remove(&self, id: &str, force: bool, volumes: bool) -> Result<(), ContainersError> {
        let record = self.runtime.record(id)?;
        self.runtime.remove(id, force)?;
        if volumes
            && let Some(list) = record
                .extra
                .get("anonymous_volumes")
                .and_then(Value::as_array)
        {
            for v in list.iter().filter_map(Value::as_str) {
                let _ = fs::remove_dir_all(self.volumes.join(v));
            }
        }
        Ok(())
    }

    /// `stack export`: the container's root file system as a tar stream.
    pub fn export(&self, id: &str, out: &mut dyn std::io::Write) -> Result<(), ContainersError> {
        self.runtime.read_rootfs(id, out, |dir, pipe| {
            crate::image::layer::tar_dir(dir, std::io::BufWriter::new(pipe))
                .map(|_| ())
                .map_err(std::io::Error::other)
        })?;
        Ok(())
    }

    /// `stack commit`: a new image from the container's changes.
    pub fn commit(
        &self,
        id: &str,
        reference: Option<&crate::image::reference::Reference>,
        changes: &[crate::image::changes::Change],
        message: Option<&str>,
        author: Option<&str>,
    ) -> Result<crate::image::digest::Digest, ContainersError> {
        let record = self.runtime.record(id)?;
        let spec = self.runtime.spec(id)?;
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
            .join(" ");
        let parent: crate::image::digest::Digest = record
            .image_id
            .parse()
            .map_err(|_| ContainersError::Reference(format!("bad image id {}", record.image_id)))?;
        let created_by = format!("/bin/sh -c #(nop) {args}");
        let options = crate::image::images::CommitOptions {
            changes,
            message,
            author,
            created_by: &created_by,
        };
        Ok(match driver_of(&record) {
            StorageDriver::Overlay => {
                self.images
                    .commit(&parent, &record.rootfs.upper, reference, &options)?
            }
            StorageDriver::Vfs => {
                self.images
                    .commit_tree(&parent, &record.rootfs.upper, reference, &options)?
            }
        })
    }

    /// The health check a container was created with, if any.
    pub fn health_check(&self, id: &str) -> Result<Option<HealthCheck>, ContainersError> {
        let record = self.runtime.record(id)?;
        Ok(record
            .extra
            .get("healthcheck")
            .and_then(|v| serde_json::from_value(v.clone()).ok()))
    }

    /// A container's health as its monitor last wrote it (`None`: it has no
    /// check, or it has not been started with one yet).
    pub fn health(&self, id: &str) -> Option<Health> {
        super::health::read(self.runtime.bundle(id).dir())
    }

    /// Docker-shaped `inspect` output for a container.
    pub fn inspect(&self, id: &str) -> Result<Value, ContainersError> {
        let record = self.runtime.record(id)?;
        let state = self.runtime.state(id)?;
        let spec = self.runtime.spec(id)?;
        let process = spec.process().clone().unwrap_or_default();
        let args = process.args().clone().unwrap_or_default();
        let request = record.extra.get("request").cloned().unwrap_or(Value::Null);
        let bundle = self.runtime.bundle(id);
        let restart: container::RestartPolicy = record
            .extra
            .get("restart")
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        let driver = driver_of(&record);
        let graph_driver = match driver {
            StorageDriver::Overlay => json!({
                "Name": "overlay",
                "Data": {
                    "LowerDir": record.rootfs.lowers.iter().rev().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":"),
                    "UpperDir": record.rootfs.upper,
                    "WorkDir": record.rootfs.work,
                },
            }),
            StorageDriver::Vfs => json!({
                "Name": "vfs",
                "Data": { "Dir": record.rootfs.upper },
            }),
        };
        let mounts: Vec<Value> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.typ().as_deref() == Some("bind") || m.typ().as_deref() == Some("tmpfs"))
            .filter(|m| !["/dev", "/dev/shm"].contains(&m.destination().to_string_lossy().as_ref()))
            .map(|m| {
                let opts = m.options().clone().unwrap_or_default();
                json!({
                    "Type": m.typ(),
                    "Source": m.source(),
                    "Destination": m.destination(),
                    "RW": !opts.iter().any(|o| o == "ro"),
                })
            })
            .collect();
        let mut state_json = json!({
            "Status": state.status.to_string(),
            "Running": matches!(state.status, Status::Running | Status::Paused),
            "Paused": state.status == Status::Paused,
            "OOMKilled": state.oom_killed,
            "Dead": false,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": state.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        });
        // Docker shows State.Health only for containers with a check.
        if record.extra.contains_key("healthcheck")
            && let Some(health) = self.health(id)
        {
            state_json["Health"] = json!(health);
        }
        let mut out = json!({
            "Id": record.id,
            "Created": record.created,
            "Path": args.first(),
            "Args": args.get(1..).unwrap_or_default(),
            "State": state_json,
            "Image": record.image_id,
            "ResolvConfPath": bundle.dir().join("resolv.conf"),
            "HostnamePath": bundle.dir().join("hostname"),
            "HostsPath": bundle.dir().join("hosts"),
            "LogPath": bundle.dir().join(format!("{}-json.log", record.id)),
            "Name": format!("/{}", record.name),
            "RestartCount": state.start_count.saturating_sub(1),
            "Driver": driver.name(),
            "Mounts": mounts,
            "Config": {
                "Hostname": spec.hostname(),
                "Domainname": spec.domainname().clone().unwrap_or_default(),
                "User": record.user.clone().unwrap_or_default(),
                "Tty": process.terminal().unwrap_or(false),
                "OpenStdin": record.stdin_open,
                "Env": process.env(),
                "Cmd": request.get("cmd"),
                "Image": record.image,
                "WorkingDir": process.cwd(),
                "Entrypoint": request.get("entrypoint"),
                "Labels": record.labels,
                "StopSignal": record.stop_signal,
                "StopTimeout": record.stop_timeout,
            },
            "HostConfig": {
                "AutoRemove": record.auto_remove,
                "RestartPolicy": {
                    "Name": restart.name,
                    "MaximumRetryCount": restart.maximum_retry_count,
                },
                "Init": record.init,
                "Privileged": request.get("privileged"),
                "ReadonlyRootfs": request.get("read_only"),
                "CapAdd": request.get("cap_add"),
                "CapDrop": request.get("cap_drop"),
                "NetworkMode": request.get("network"),
                "Resources": request.get("resources"),
                "LogConfig": {"Type": "json-file", "Config": {
                    "max-size": record.log_max_size.to_string(),
                    "max-file": record.log_max_files.to_string(),
                }},
            },
            "GraphDriver": graph_driver,
        });
        if let Some(check) = record.extra.get("healthcheck") {
            out["Config"]["Healthcheck"] = check.clone();
        }
        Ok(out)
    }
}

/// Refuses mounts this runtime cannot make as asked, before anything is
/// created: a required bind source that is missing, volume drivers and
/// driver options (only local directories exist), a volume subpath that
/// leaves the volume, and recursively read-only binds (the init makes the
/// top mount read-only only).
fn check_mounts(mounts: &[crate::spec::mount::MountSpec]) -> Result<(), ContainersError> {
    use crate::spec::mount::BindRecursive;
    for m in mounts {
        let unsupported = |option: String| ContainersError::MountOption {
            target: m.target.clone(),
            option,
        };
        match m.kind {
            MountKind::Bind => {
                let source = m.source.as_deref().unwrap_or_default();
                if m.require_source && fs::symlink_metadata(source).is_err() {
                    return Err(ContainersError::BindSourceMissing {
                        path: PathBuf::from(source),
                    });
                }
                if m.bind_recursive == BindRecursive::Readonly {
                    return Err(unsupported("bind-recursive=readonly".into()));
                }
            }
            MountKind::Volume => {
                if let Some(driver) = m.volume_driver.as_deref().filter(|d| *d != "local") {
                    return Err(unsupported(format!("volume-driver={driver}")));
                }
                if let Some((k, v)) = m.volume_options.iter().next() {
                    return Err(unsupported(format!("volume-opt={k}={v}")));
                }
                if let Some(sub) = &m.volume_subpath
                    && (sub.starts_with('/')
                        || Path::new(sub)
                            .components()
                            .any(|c| matches!(c, std::path::Component::ParentDir)))
                {
                    return Err(unsupported(format!(
                        "volume-subpath={sub} (must be a relative path inside the volume)"
                    )));
                }
            }
            MountKind::Tmpfs => {}
        }
    }
    Ok(())
}

/// Which container uses an image: what keeps `rmi` and `image prune` from
/// removing an image a container still runs from.
#[derive(Debug)]
pub struct ContainerUsage {
    users: Vec<(String, String)>,
}

impl ContainerUsage {
    /// The containers of a state root, read once.
    pub fn of(root: &Path) -> Result<Self, ContainersError> {
        let exe = std::env::current_exe()
            .map_err(io_err("find this program", Path::new("/proc/self/exe")))?;
        let runtime = Runtime::open(root, &crate::runtime::default_run_dir(root), exe)?;
        Self::of_runtime(&runtime)
    }

    /// The containers `runtime` has, read once.
    pub fn of_runtime(runtime: &Runtime) -> Result<Self, ContainersError> {
        let users = runtime
            .list()?
            .into_iter()
            .map(|(record, _)| (record.image_id, record.id))
            .collect();
        Ok(Self { users })
    }
}

impl crate::image::images::UsageCheck for ContainerUsage {
    fn user_of(&self, id: &crate::image::digest::Digest) -> Option<String> {
        let id = id.to_string();
        self.users
            .iter()
            .find(|(image, _)| *image == id)
            .map(|(_, container)| container[..12].to_string())
    }
}

/// The OCI seccomp of a container with these capabilities: Docker's default
/// profile, a profile file, or none.
fn seccomp_for(
    choice: &SeccompChoice,
    caps: &oci_spec::runtime::Capabilities,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, ContainersError> {
    let profile = match choice {
        SeccompChoice::Unconfined => return Ok(None),
        SeccompChoice::Default => seccomp::default_profile(),
        SeccompChoice::File(path) => seccomp::load_profile(path)?,
    };
    let arch = seccomp::HOST_ARCH.ok_or(ContainersError::SeccompArch(std::env::consts::ARCH))?;
    let kernel = seccomp::read_kernel_version(Path::new(seccomp::OSRELEASE_PATH))?;
    let caps: Vec<caps::Capability> = caps
        .iter()
        .filter_map(|c| format!("CAP_{c}").parse().ok())
        .collect();
    Ok(Some(seccomp::resolve(&profile, &caps, arch, kernel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_avoid_taken_ones() {
        let id = "0123456789ab".repeat(6);
        let first = generate_name(&id, |_| false);
        assert!(first.contains('_'));
        let second = generate_name(&id, |n| n == first);
        assert_eq!(second, format!("{first}2"));
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(is_valid_name("web-1.a_b"));
        assert!(!is_valid_name("-web"));
        assert!(!is_valid_name("a"));
        assert!(!is_valid_name("a/b"));
    }
}
