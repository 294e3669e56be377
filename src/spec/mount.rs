//! Mounts as `docker run -v` / compose `volumes:` short syntax writes them
//! (`/host:/ctr:ro`, `name:/data:nocopy`, `/anon`), as `--tmpfs` writes them
//! (`/run:size=64m,mode=1777`) and as `--mount` writes them
//! (`type=bind,src=/a,dst=/b,readonly`).
//!
//! The `-v` grammar is docker/cli's compose loader `ParseVolume`
//! (`cli/compose/loader/volume.go`) with Linux semantics: Windows drive letters
//! and named pipes are not recognised. The `--mount` grammar is docker/cli's
//! `opts.MountOpt.Set` (`opts/mount.go`): one CSV record of `key=value`
//! fields. This module only reads and writes the text; it never resolves
//! relative or `~` sources (the loader and the CLI do, relative to the stack
//! file or the working directory) and never mounts anything.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::size::{ByteSize, SizeError};

/// The largest tmpfs mode: permission bits plus setuid, setgid and sticky.
const MAX_MODE: u32 = 0o7777;

/// What is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    Volume,
    /// A fresh in-memory file system.
    Tmpfs,
}

/// Mount propagation (see `mount_namespaces(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Propagation {
    /// `private`.
    Private,
    /// `rprivate`, Docker's default for binds.
    Rprivate,
    /// `shared`.
    Shared,
    /// `rshared`.
    Rshared,
    /// `slave`.
    Slave,
    /// `rslave`.
    Rslave,
}

/// How a bind mount treats the mounts below its source (`bind-recursive`,
/// Docker's `BindOptions.NonRecursive`, `ReadOnlyNonRecursive` and
/// `ReadOnlyForceRecursive`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BindRecursive {
    /// `enabled`: submounts are bound too (`rbind`); a read-only mount is
    /// read-only as far as the kernel allows.
    #[default]
    Enabled,
    /// `disabled` (or `bind-nonrecursive`): only the source itself, not the
    /// mounts below it.
    Disabled,
    /// `writable`: submounts are bound but stay writable under a read-only
    /// mount.
    Writable,
    /// `readonly`: submounts are read-only too, or the mount fails.
    Readonly,
}

impl BindRecursive {
    /// The value `bind-recursive=` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BindRecursive::Enabled => "enabled",
            BindRecursive::Disabled => "disabled",
            BindRecursive::Writable => "writable",
            BindRecursive::Readonly => "readonly",
        }
    }
}

/// One mount of a service.
///
/// Its `Display` is the `-v` short form where that can say it (binds and volumes)
/// and the `--tmpfs` form for tmpfs mounts, which [`parse_tmpfs`] reads back.
/// Serde uses a map instead (`type`, `source`, `target`, `read-only`,
/// `propagation`, `nocopy`, `size`, `mode`, defaults left out), which can say
/// everything; deserializing also accepts the `-v` short form as a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MountSpec {
    /// What is mounted.
    pub kind: MountKind,
    /// The host path (bind) or volume name; `None` for an anonymous volume and
    /// for tmpfs.
    pub source: Option<String>,
    /// The absolute path in the container.
    pub target: String,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// The propagation mode, when set.
    pub propagation: Option<Propagation>,
    /// For volumes: do not copy the image's files at `target` into a new volume.
    pub nocopy: bool,
    /// For tmpfs: the size limit.
    pub tmpfs_size: Option<ByteSize>,
    /// For tmpfs: the mode of the root directory, e.g. `0o1777`.
    pub tmpfs_mode: Option<u32>,
    /// For binds: what happens to the mounts below the source.
    pub bind_recursive: BindRecursive,
    /// For binds: a missing source is an error instead of being created as a
    /// directory (`--mount type=bind` without `bind-create-src`; `-v`
    /// creates it).
    pub require_source: bool,
    /// For volumes: mount this path inside the volume instead of its root
    /// (`volume-subpath`).
    pub volume_subpath: Option<String>,
    /// For volumes: the volume driver (`volume-driver`).
    pub volume_driver: Option<String>,
    /// For volumes: labels of a volume created by this mount (`volume-label`).
    pub volume_labels: BTreeMap<String, String>,
    /// For volumes: driver options of a volume created by this mount
    /// (`volume-opt`).
    pub volume_options: BTreeMap<String, String>,
}

/// Why a mount did not parse or is not consistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// `-v ""`.
    #[error("invalid empty volume spec")]
    Empty,
    /// `a::b`, `:b`, `a:`.
    #[error("invalid spec: {spec}: empty section between colons")]
    EmptySection {
        /// The whole spec.
        spec: String,
    },
    /// More than `source:target:options`.
    #[error("invalid spec: {spec}: too many colons")]
    TooManyColons {
        /// The whole spec.
        spec: String,
    },
    /// The target is not an absolute path (the daemon's check, done early).
    #[error("invalid spec: {spec}: invalid mount path: '{target}' mount path must be absolute")]
    RelativeTarget {
        /// The whole spec.
        spec: String,
        /// The target as written.
        target: String,
    },
    /// A mount type other than `bind`, `volume` or `tmpfs`.
    #[error("invalid mount type: {kind}")]
    UnknownKind {
        /// The type as written.
        kind: String,
    },
    /// A propagation mode that is not one of the six.
    #[error("invalid propagation mode: {mode}")]
    UnknownPropagation {
        /// The mode as written.
        mode: String,
    },
    /// A bind mount without a source.
    #[error("invalid mount config for type \"bind\": field source must not be empty")]
    MissingSource,
    /// A setting that the mount type cannot have, e.g. `size` on a bind.
    #[error("cannot use '{option}' with mount type '{kind}'")]
    OptionNotForKind {
        /// The setting.
        option: &'static str,
        /// The mount type.
        kind: MountKind,
    },
    /// A `--tmpfs` option this model cannot express.
    #[error("invalid tmpfs option: '{option}' is not supported")]
    UnsupportedTmpfsOption {
        /// The option as written.
        option: String,
    },
    /// `size=` that is not a size.
    #[error("invalid value for tmpfs-size: {value}")]
    InvalidTmpfsSize {
        /// The value as written.
        value: String,
        /// Why it is not a size.
        #[source]
        source: SizeError,
    },
    /// `mode=` that is not an octal mode up to `7777`.
    #[error("invalid value for tmpfs-mode: {value}")]
    InvalidTmpfsMode {
        /// The value as written.
        value: String,
    },
    /// `--mount ""`.
    #[error("value is empty")]
    EmptyMountFlag,
    /// `--mount` text that is not one CSV record.
    #[error("invalid CSV in --mount: {reason}")]
    Csv {
        /// What is wrong with the quoting.
        reason: &'static str,
    },
    /// `--mount` field whose key has spaces around it.
    #[error("invalid option '{key}' in '{field}': option should not have whitespace")]
    OptionWhitespace {
        /// The key, trimmed.
        key: String,
        /// The whole field.
        field: String,
    },
    /// `--mount` field `key=` with nothing after the `=`.
    #[error("invalid value for '{key}': value is empty")]
    EmptyOptionValue {
        /// The key.
        key: String,
    },
    /// `--mount` field whose value has spaces around it.
    #[error("invalid value for '{key}' in '{field}': value should not have whitespace")]
    ValueWhitespace {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
    },
    /// `--mount` field without `=` that is not a flag.
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue {
        /// The field.
        field: String,
    },
    /// `--mount` key Docker does not know.
    #[error("unknown option '{key}' in '{field}'")]
    UnknownOption {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
    },
    /// `--mount` boolean that is not `true`, `1`, `false` or `0`.
    #[error(
        "invalid value for '{key}': invalid boolean value ({value:?}): must be one of \"true\", \"1\", \"false\", or \"0\" (default \"true\")"
    )]
    InvalidBool {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
    },
    /// `bind-recursive=` that is not one of the four.
    #[error(
        "invalid value for bind-recursive: {value} (must be \"enabled\", \"disabled\", \"writable\", or \"readonly\")"
    )]
    InvalidBindRecursive {
        /// The value as written.
        value: String,
    },
    /// `bind-*`, `volume-*`, `tmpfs-*` or `image-*` options on another type.
    #[error("cannot mix '{prefix}-*' options with mount type '{kind}'")]
    MixedOptions {
        /// `bind`, `volume`, `tmpfs` or `image`.
        prefix: &'static str,
        /// The mount's type as written.
        kind: String,
    },
    /// `bind-recursive=writable|readonly` without `readonly`.
    #[error("option 'bind-recursive={value}' requires 'readonly' to be specified in conjunction")]
    RecursiveNeedsReadonly {
        /// `writable` or `readonly`.
        value: &'static str,
    },
    /// `bind-recursive=readonly` with a propagation other than `rprivate`.
    #[error(
        "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction"
    )]
    RecursiveNeedsRprivate,
    /// `--mount` without a target.
    #[error("target is required")]
    MissingTarget,
}

impl MountKind {
    /// The name Docker uses: `bind`, `volume` or `tmpfs`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

impl fmt::Display for MountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MountKind {
    type Err = MountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [MountKind::Bind, MountKind::Volume, MountKind::Tmpfs]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| MountError::UnknownKind { kind: s.to_owned() })
    }
}

impl TryFrom<String> for MountKind {
    type Error = MountError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MountKind> for String {
    fn from(k: MountKind) -> Self {
        k.to_string()
    }
}

/// Every propagation mode, in the order of moby's `mount.Propagations`.
const PROPAGATIONS: [Propagation; 6] = [
    Propagation::Rprivate,
    Propagation::Private,
    Propagation::Rshared,
    Propagation::Shared,
    Propagation::Rslave,
    Propagation::Slave,
];

impl Propagation {
    /// The name Docker uses, e.g. `rprivate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::Rprivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::Rshared => "rshared",
            Propagation::Slave => "slave",
            Propagation::Rslave => "rslave",
        }
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Propagation {
    type Err = MountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PROPAGATIONS
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| MountError::UnknownPropagation { mode: s.to_owned() })
    }
}

impl TryFrom<String> for Propagation {
    type Error = MountError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Propagation> for String {
    fn from(p: Propagation) -> Self {
        p.to_string()
    }
}

impl MountSpec {
    /// A mount of `kind` at `target` with every option at its default.
    pub fn new(kind: MountKind, source: Option<String>, target: String) -> Self {
        MountSpec {
            kind,
            source,
            target,
            read_only: false,
            propagation: None,
            nocopy: false,
            tmpfs_size: None,
            tmpfs_mode: None,
            bind_recursive: BindRecursive::Enabled,
            require_source: false,
            volume_subpath: None,
            volume_driver: None,
            volume_labels: BTreeMap::new(),
            volume_options: BTreeMap::new(),
        }
    }

    /// Whether any volume-only option is set.
    fn has_volume_options(&self) -> bool {
        self.nocopy
            || self.volume_subpath.is_some()
            || self.volume_driver.is_some()
            || !self.volume_labels.is_empty()
            || !self.volume_options.is_empty()
    }

    /// Checks what the text forms cannot get wrong but a map or a hand-built
    /// value can: an absolute target, a source for binds, and options that fit
    /// the mount type.
    fn check(self, spec: &str) -> Result<Self, MountError> {
        if !self.target.starts_with('/') {
            return Err(MountError::RelativeTarget {
                spec: spec.to_owned(),
                target: self.target,
            });
        }
        let not_for = |option| {
            Err(MountError::OptionNotForKind {
                option,
                kind: self.kind,
            })
        };
        match self.kind {
            MountKind::Bind if self.source.is_none() => return Err(MountError::MissingSource),
            MountKind::Tmpfs if self.source.is_some() => return not_for("source"),
            MountKind::Tmpfs if self.propagation.is_some() => return not_for("propagation"),
            MountKind::Tmpfs if self.nocopy => return not_for("nocopy"),
            MountKind::Bind | MountKind::Volume if self.tmpfs_size.is_some() => {
                return not_for("size");
            }
            MountKind::Bind | MountKind::Volume if self.tmpfs_mode.is_some() => {
                return not_for("mode");
            }
            MountKind::Volume | MountKind::Tmpfs
                if self.bind_recursive != BindRecursive::Enabled =>
            {
                return not_for("bind-recursive");
            }
            MountKind::Volume | MountKind::Tmpfs if self.require_source => {
                return not_for("require-source");
            }
            MountKind::Tmpfs if self.has_volume_options() => {
                return not_for("volume options");
            }
            // `-v /a:/b:nocopy` is accepted (and means nothing) on a bind.
            MountKind::Bind if self.has_volume_options() && !self.nocopy => {
                return not_for("volume options");
            }
            _ => {}
        }
        Ok(self)
    }
}

/// Whether a `-v` source is a host path rather than a volume name (compose
/// loader `isFilePath`, Linux half).
fn is_file_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

impl FromStr for MountSpec {
    type Err = MountError;

    /// `target` (anonymous volume), `source:target` or `source:target:options`.
    ///
    /// Options are comma-separated: `ro`/`rw`, a propagation mode, `nocopy`;
    /// anything else (`z`, `Z`, `cached`, `delegated`, `consistent`, typos) is
    /// ignored, as in the compose loader. A spec of one or two bytes is a target
    /// as a whole, also as there.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.is_empty() {
            return Err(MountError::Empty);
        }
        if spec.len() <= 2 {
            return MountSpec::new(MountKind::Volume, None, spec.to_owned()).check(spec);
        }
        let mut source: Option<&str> = None;
        let mut target: Option<&str> = None;
        let mut options: Option<&str> = None;
        let mut sections = spec.split(':').peekable();
        while let Some(section) = sections.next() {
            let is_last = sections.peek().is_none();
            if section.is_empty() {
                return Err(MountError::EmptySection {
                    spec: spec.to_owned(),
                });
            }
            if source.is_none() && is_last {
                target = Some(section);
            } else if source.is_none() {
                source = Some(section);
            } else if target.is_none() {
                target = Some(section);
            } else if !is_last {
                return Err(MountError::TooManyColons {
                    spec: spec.to_owned(),
                });
            } else {
                options = Some(section);
            }
        }
        let kind = match source {
            Some(s) if is_file_path(s) => MountKind::Bind,
            _ => MountKind::Volume,
        };
        let mut mount = MountSpec::new(
            kind,
            source.map(str::to_owned),
            target.unwrap_or_default().to_owned(),
        );
        for option in options.unwrap_or_default().split(',') {
            match option {
                "ro" => mount.read_only = true,
                "rw" => mount.read_only = false,
                "nocopy" => mount.nocopy = true,
                _ => {
                    if let Ok(p) = option.parse() {
                        mount.propagation = Some(p);
                    }
                }
            }
        }
        mount.check(spec)
    }
}

/// Parses `--tmpfs`: `target[:options]`, e.g. `/run:size=64m,mode=1777`.
///
/// Options: `size=` (a [`ByteSize`]), `mode=` (octal), `ro`/`rw`, and `noexec`,
/// `nosuid`, `nodev`, which Docker applies to every tmpfs anyway (moby
/// `daemon/oci_linux.go` mounts tmpfs with them by default), so they are
/// accepted and change nothing. Other mount options (`exec`, `uid=`, …) cannot
/// be expressed by [`MountSpec`] and are refused rather than dropped.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, MountError> {
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    let mut mount = MountSpec::new(MountKind::Tmpfs, None, target.to_owned());
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", value)) => {
                mount.tmpfs_size =
                    Some(
                        value
                            .parse()
                            .map_err(|source| MountError::InvalidTmpfsSize {
                                value: value.to_owned(),
                                source,
                            })?,
                    );
            }
            Some(("mode", value)) => mount.tmpfs_mode = Some(parse_mode(value)?),
            None if option == "ro" => mount.read_only = true,
            None if option == "rw" => mount.read_only = false,
            None if matches!(option, "noexec" | "nosuid" | "nodev") => {}
            _ => {
                return Err(MountError::UnsupportedTmpfsOption {
                    option: option.to_owned(),
                });
            }
        }
    }
    mount.check(spec)
}

/// Parses `--mount`: one CSV record of fields such as
/// `type=bind,source=/a,target=/b,readonly`, as docker/cli's `MountOpt.Set`
/// reads it, with the daemon's checks where docker/cli leaves them to it
/// (a known mount type, a target, a valid propagation).
///
/// Keys: `type` (`bind`, `volume` — the default —, `tmpfs`), `source`/`src`,
/// `target`/`destination`/`dst`, `readonly`/`ro[=BOOL]`, `consistency`
/// (ignored, as on Linux), `bind-propagation`, `bind-recursive`,
/// `bind-nonrecursive[=BOOL]`, `bind-create-src[=BOOL]`, `volume-subpath`,
/// `volume-nocopy[=BOOL]`, `volume-label=K=V`, `volume-driver`,
/// `volume-opt=K=V`, `tmpfs-size`, `tmpfs-mode`. Keys are case-insensitive,
/// as in docker/cli. A `type=bind` mount requires its source to exist
/// ([`MountSpec::require_source`]) unless `bind-create-src` is given. A
/// relative source is kept as written: the caller resolves it (docker/cli
/// makes a source starting with `.` absolute against the working
/// directory).
pub fn parse_mount_flag(value: &str) -> Result<MountSpec, MountError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(MountError::EmptyMountFlag);
    }
    let fields = csv_record(value)?;
    let mut kind = String::from("volume");
    let mut mount = MountSpec::new(MountKind::Volume, None, String::new());
    let mut target = None;
    // Which option families were used, for docker/cli's "cannot mix" check.
    let (mut bind_opts, mut volume_opts, mut tmpfs_opts, mut image_opts) =
        (false, false, false, false);
    let mut create_source = false;
    for field in &fields {
        let (key, val, has_value) = match field.split_once('=') {
            Some((k, v)) => (k, v, true),
            None => (field.as_str(), "", false),
        };
        if key.trim() != key {
            return Err(MountError::OptionWhitespace {
                key: key.trim().to_owned(),
                field: field.clone(),
            });
        }
        if has_value {
            if val.trim().is_empty() {
                return Err(MountError::EmptyOptionValue {
                    key: key.to_owned(),
                });
            }
            if val.trim() != val {
                return Err(MountError::ValueWhitespace {
                    key: key.to_owned(),
                    field: field.clone(),
                });
            }
        }
        let key = key.to_ascii_lowercase();
        if !has_value
            && !matches!(
                key.as_str(),
                "readonly" | "ro" | "volume-nocopy" | "bind-nonrecursive" | "bind-create-src"
            )
        {
            return Err(MountError::NotKeyValue {
                field: field.clone(),
            });
        }
        let boolean = || parse_bool(&key, val, has_value);
        match key.as_str() {
            "type" => kind = val.to_ascii_lowercase(),
            "source" | "src" => mount.source = Some(val.to_owned()),
            "target" | "dst" | "destination" => target = Some(val.to_owned()),
            "readonly" | "ro" => mount.read_only = boolean()?,
            "consistency" => {}
            "bind-propagation" => {
                bind_opts = true;
                mount.propagation = Some(val.to_ascii_lowercase().parse()?);
            }
            "bind-nonrecursive" => {
                if boolean()? {
                    bind_opts = true;
                    mount.bind_recursive = BindRecursive::Disabled;
                }
            }
            "bind-recursive" => {
                mount.bind_recursive = match val {
                    "enabled" => BindRecursive::Enabled,
                    "disabled" => BindRecursive::Disabled,
                    "writable" => BindRecursive::Writable,
                    "readonly" => BindRecursive::Readonly,
                    _ => {
                        return Err(MountError::InvalidBindRecursive {
                            value: val.to_owned(),
                        });
                    }
                };
                bind_opts |= mount.bind_recursive != BindRecursive::Enabled;
            }
            "bind-create-src" => {
                bind_opts = true;
                create_source = boolean()?;
            }
            "volume-subpath" => {
                volume_opts = true;
                mount.volume_subpath = Some(val.to_owned());
            }
            "volume-nocopy" => {
                volume_opts = true;
                mount.nocopy = boolean()?;
            }
            "volume-label" => {
                volume_opts = true;
                set_on_map(&mut mount.volume_labels, val);
            }
            "volume-driver" => {
                volume_opts = true;
                mount.volume_driver = Some(val.to_owned());
            }
            "volume-opt" => {
                volume_opts = true;
                set_on_map(&mut mount.volume_options, val);
            }
            "image-subpath" => image_opts = true,
            "tmpfs-size" => {
                tmpfs_opts = true;
                mount.tmpfs_size =
                    Some(val.parse().map_err(|source| MountError::InvalidTmpfsSize {
                        value: val.to_owned(),
                        source,
                    })?);
            }
            "tmpfs-mode" => {
                tmpfs_opts = true;
                mount.tmpfs_mode = Some(parse_mode(val)?);
            }
            _ => {
                return Err(MountError::UnknownOption {
                    key,
                    field: field.clone(),
                });
            }
        }
    }
    for (used, prefix) in [
        (volume_opts, "volume"),
        (image_opts, "image"),
        (bind_opts, "bind"),
        (tmpfs_opts, "tmpfs"),
    ] {
        if used && kind != prefix {
            return Err(MountError::MixedOptions { prefix, kind });
        }
    }
    match mount.bind_recursive {
        BindRecursive::Writable if !mount.read_only => {
            return Err(MountError::RecursiveNeedsReadonly { value: "writable" });
        }
        BindRecursive::Readonly if !mount.read_only => {
            return Err(MountError::RecursiveNeedsReadonly { value: "readonly" });
        }
        BindRecursive::Readonly if mount.propagation != Some(Propagation::Rprivate) => {
            return Err(MountError::RecursiveNeedsRprivate);
        }
        _ => {}
    }
    mount.kind = kind.parse()?;
    mount.target = target.ok_or(MountError::MissingTarget)?;
    mount.require_source = mount.kind == MountKind::Bind && !create_source;
    mount.check(value)
}

/// docker/cli's `parseBoolValue`: a flag alone is true.
fn parse_bool(key: &str, value: &str, has_value: bool) -> Result<bool, MountError> {
    if !has_value {
        return Ok(true);
    }
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(MountError::InvalidBool {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// docker/cli's `setValueOnMap`: `K=V` (or `K` for an empty value); an
/// empty key is ignored.
fn set_on_map(map: &mut BTreeMap<String, String>, key_value: &str) {
    let (k, v) = key_value.split_once('=').unwrap_or((key_value, ""));
    if !k.is_empty() {
        map.insert(k.to_owned(), v.to_owned());
    }
}

/// The first record of `text` as Go's `encoding/csv` reads it: fields split
/// on `,`; a field that starts with `"` is quoted, ends at the closing `"`
/// and has `""` for a literal quote (so it may hold `,`); a `"` anywhere else
/// is an error. The record ends at the first unquoted newline.
fn csv_record(text: &str) -> Result<Vec<String>, MountError> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(MountError::Csv {
                            reason: "extraneous or missing \" in quoted-field",
                        });
                    }
                }
            }
            match chars.peek() {
                None | Some(',' | '\n' | '\r') => {}
                Some(_) => {
                    return Err(MountError::Csv {
                        reason: "extraneous or missing \" in quoted-field",
                    });
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if matches!(c, ',' | '\n' | '\r') {
                    break;
                }
                if c == '"' {
                    return Err(MountError::Csv {
                        reason: "bare \" in non-quoted-field",
                    });
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => {}
            _ => return Ok(fields),
        }
    }
}

/// An octal mode up to `7777`, as `tmpfs-mode` takes it (`strconv.ParseUint(v, 8, 32)`
/// in docker/cli, then the kernel's limit on mode bits).
fn parse_mode(value: &str) -> Result<u32, MountError> {
    let invalid = || MountError::InvalidTmpfsMode {
        value: value.to_owned(),
    };
    if value.is_empty() || value.len() > 12 {
        return Err(invalid());
    }
    let mode = value.bytes().try_fold(0u32, |acc, b| match b {
        b'0'..=b'7' => acc.checked_mul(8)?.checked_add(u32::from(b - b'0')),
        _ => None,
    });
    mode.filter(|m| *m <= MAX_MODE).ok_or_else(invalid)
}

impl fmt::Display for MountSpec {
    /// `-v` short form (`source:target[:ro,rshared,nocopy]`, or `target` for an
    /// anonymous volume, which cannot carry options) or, for tmpfs, the
    /// `--tmpfs` form (`target[:size=64m,mode=1777,ro]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut options: Vec<String> = Vec::new();
        if self.kind == MountKind::Tmpfs {
            f.write_str(&self.target)?;
            if let Some(size) = self.tmpfs_size {
                options.push(format!("size={size}"));
            }
            if let Some(mode) = self.tmpfs_mode {
                options.push(format!("mode={mode:o}"));
            }
            if self.read_only {
                options.push("ro".into());
            }
        } else {
            let Some(source) = &self.source else {
                return f.write_str(&self.target);
            };
            write!(f, "{source}:{}", self.target)?;
            if self.read_only {
                options.push("ro".into());
            }
            if let Some(p) = self.propagation {
                options.push(p.to_string());
            }
            if self.nocopy {
                options.push("nocopy".into());
            }
        }
        if !options.is_empty() {
            write!(f, ":{}", options.join(","))?;
        }
        Ok(())
    }
}

/// The map form of a [`MountSpec`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct MountMap {
    #[serde(rename = "type")]
    kind: MountKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    target: String,
    #[serde(default, skip_serializing_if = "is_false")]
    read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    propagation: Option<Propagation>,
    #[serde(default, skip_serializing_if = "is_false")]
    nocopy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "octal_mode")]
    mode: Option<u32>,
    #[serde(default, skip_serializing_if = "is_default")]
    bind_recursive: BindRecursive,
    #[serde(default, skip_serializing_if = "is_false")]
    require_source: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subpath: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `mode` in the map: written as an octal string (`"1777"`); read from that or
/// from an integer taken as is (what compose's `tmpfs.mode` and the Docker API hold).
mod octal_mode {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(m) => s.collect_str(&format_args!("{m:o}")),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(ModeVisitor).map(Some)
    }

    struct ModeVisitor;

    impl Visitor<'_> for ModeVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an octal mode string such as \"1777\" or an integer")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            super::parse_mode(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            u32::try_from(v)
                .ok()
                .filter(|m| *m <= super::MAX_MODE)
                .ok_or_else(|| {
                    E::custom(super::MountError::InvalidTmpfsMode {
                        value: v.to_string(),
                    })
                })
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(super::MountError::InvalidTmpfsMode {
                    value: v.to_string(),
                })),
            }
        }
    }
}

impl From<&MountSpec> for MountMap {
    fn from(m: &MountSpec) -> Self {
        MountMap {
            kind: m.kind,
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            propagation: m.propagation,
            nocopy: m.nocopy,
            size: m.tmpfs_size,
            mode: m.tmpfs_mode,
            bind_recursive: m.bind_recursive,
            require_source: m.require_source,
            subpath: m.volume_subpath.clone(),
            driver: m.volume_driver.clone(),
            labels: m.volume_labels.clone(),
            options: m.volume_options.clone(),
        }
    }
}

impl Serialize for MountSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MountMap::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MountSpec {
    /// The map form, or a `-v` short-form string.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MountVisitor)
    }
}

/// Accepts `"/a:/b:ro"` or `{type: bind, source: /a, target: /b, read-only: true}`.
struct MountVisitor;

impl<'de> Visitor<'de> for MountVisitor {
    type Value = MountSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a volume spec such as \"/host:/ctr:ro\" or a mount map")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MountSpec, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MountSpec, A::Error> {
        let m = MountMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let target = m.target.clone();
        MountSpec {
            kind: m.kind,
            source: m.source,
            target: m.target,
            read_only: m.read_only,
            propagation: m.propagation,
            nocopy: m.nocopy,
            tmpfs_size: m.size,
            tmpfs_mode: m.mode,
            bind_recursive: m.bind_recursive,
            require_source: m.require_source,
            volume_subpath: m.subpath,
            volume_driver: m.driver,
            volume_labels: m.labels,
            volume_options: m.options,
        }
        .check(&target)
        .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mount(s: &str) -> MountSpec {
        s.parse().expect("valid spec")
    }

    #[test]
    fn one_part_is_an_anonymous_volume() {
        assert_eq!(
            mount("/data"),
            MountSpec::new(MountKind::Volume, None, "/data".into())
        );
        assert_eq!(
            mount("/d"),
            MountSpec::new(MountKind::Volume, None, "/d".into())
        );
    }

    #[test]
    fn path_like_sources_are_binds_and_others_volumes() {
        assert_eq!(mount("/a:/b").kind, MountKind::Bind);
        assert_eq!(mount("./a:/b").kind, MountKind::Bind);
        assert_eq!(mount("~/a:/b").kind, MountKind::Bind);
        assert_eq!(mount("a:/b").kind, MountKind::Volume);
        // Linux semantics: no drive letters, so `c` is a volume name.
        assert_eq!(mount("c:/b").source.as_deref(), Some("c"));
    }

    #[test]
    fn options_are_read_and_unknown_ones_ignored() {
        let m = mount("vol:/data:ro,rshared,nocopy,z,cached,bogus");
        assert!(m.read_only && m.nocopy);
        assert_eq!(m.propagation, Some(Propagation::Rshared));
        assert!(!mount("/a:/b:ro,rw").read_only);
    }

    #[test]
    fn targets_must_be_absolute() {
        for bad in ["a", "ab", "data", "/a:b", "v:./x:ro"] {
            assert!(
                matches!(
                    bad.parse::<MountSpec>(),
                    Err(MountError::RelativeTarget { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn colons_are_counted_like_docker() {
        assert!(matches!(
            "/a:/b:ro:".parse::<MountSpec>(),
            Err(MountError::TooManyColons { .. })
        ));
        assert!(matches!(
            "/a:/b:".parse::<MountSpec>(),
            Err(MountError::EmptySection { .. })
        ));
    }

    #[test]
    fn tmpfs_reads_size_mode_and_default_flags() {
        let m = parse_tmpfs("/run:rw,noexec,nosuid,size=65536k,mode=1777").expect("valid");
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert_eq!(m.target, "/run");
        assert_eq!(m.tmpfs_size, Some(ByteSize(64 << 20)));
        assert_eq!(m.tmpfs_mode, Some(0o1777));
        assert_eq!(m.to_string(), "/run:size=64m,mode=1777");
        assert_eq!(
            parse_tmpfs("/tmp"),
            Ok(MountSpec::new(MountKind::Tmpfs, None, "/tmp".into()))
        );
    }

    #[test]
    fn tmpfs_refuses_what_it_cannot_express() {
        assert!(matches!(
            parse_tmpfs("/run:exec"),
            Err(MountError::UnsupportedTmpfsOption { .. })
        ));
        assert!(matches!(
            parse_tmpfs("/run:uid=1000"),
            Err(MountError::UnsupportedTmpfsOption { .. })
        ));
        assert!(matches!(
            parse_tmpfs("/run:size=50%"),
            Err(MountError::InvalidTmpfsSize { .. })
        ));
        assert!(matches!(
            parse_tmpfs("/run:mode=8"),
            Err(MountError::InvalidTmpfsMode { .. })
        ));
        assert!(matches!(
            parse_tmpfs("/run:mode=17777"),
            Err(MountError::InvalidTmpfsMode { .. })
        ));
        assert!(matches!(
            parse_tmpfs("run"),
            Err(MountError::RelativeTarget { .. })
        ));
    }

    #[test]
    fn serde_uses_a_map_and_reads_strings_too() {
        let m = parse_tmpfs("/run:size=64m,mode=1777,ro").expect("valid");
        let json = serde_json::to_value(&m).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"type": "tmpfs", "target": "/run", "read-only": true, "size": "64m", "mode": "1777"})
        );
        assert_eq!(serde_json::from_value::<MountSpec>(json).ok(), Some(m));

        let short: MountSpec = serde_json::from_str("\"/a:/b:ro\"").expect("string");
        assert_eq!(short, mount("/a:/b:ro"));
        let map: MountSpec =
            serde_json::from_str(r#"{"type":"tmpfs","target":"/t","mode":448,"size":1024}"#)
                .expect("map");
        assert_eq!(map.tmpfs_mode, Some(0o700));
        assert_eq!(map.tmpfs_size, Some(ByteSize(1024)));
    }

    #[test]
    fn maps_are_checked_for_consistency() {
        for bad in [
            r#"{"type":"bind","target":"/b"}"#,
            r#"{"type":"tmpfs","source":"x","target":"/b"}"#,
            r#"{"type":"volume","target":"/b","size":"1m"}"#,
            r#"{"type":"volume","target":"b"}"#,
            r#"{"type":"volume","target":"/b","extra":1}"#,
            r#"{"type":"nfs","target":"/b"}"#,
        ] {
            assert!(serde_json::from_str::<MountSpec>(bad).is_err(), "{bad}");
        }
    }

    fn arb_short_form() -> impl Strategy<Value = String> {
        let source = prop_oneof![
            "/[a-z]{1,5}",
            "\\./[a-z]{0,5}",
            "~/[a-z]{0,5}",
            "[a-z][a-z0-9_.-]{0,8}"
        ];
        let option = prop_oneof![
            "ro", "rw", "nocopy", "z", "rprivate", "rshared", "slave", "cached"
        ];
        (
            proptest::option::of(source),
            "/[a-z/]{0,8}",
            proptest::collection::vec(option, 0..4),
        )
            .prop_map(|(source, target, options)| match source {
                None => target,
                Some(s) if options.is_empty() => format!("{s}:{target}"),
                Some(s) => format!("{s}:{target}:{}", options.join(",")),
            })
    }

    proptest! {
        #[test]
        fn display_round_trips(spec in arb_short_form()) {
            let m = mount(&spec);
            prop_assert_eq!(m.to_string().parse::<MountSpec>(), Ok(m.clone()));
            let json = serde_json::to_string(&m).expect("serializes");
            prop_assert_eq!(serde_json::from_str::<MountSpec>(&json).ok(), Some(m));
        }

        #[test]
        fn tmpfs_display_round_trips(size in proptest::option::of(0u64..1 << 40), mode in proptest::option::of(0u32..=MAX_MODE), ro: bool) {
            let m = MountSpec {
                read_only: ro,
                tmpfs_size: size.map(ByteSize),
                tmpfs_mode: mode,
                ..MountSpec::new(MountKind::Tmpfs, None, "/run".into())
            };
            prop_assert_eq!(parse_tmpfs(&m.to_string()), Ok(m));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = s.parse::<MountSpec>();
            let _ = parse_tmpfs(&s);
        }
    }
}
