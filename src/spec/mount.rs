//! Mounts as `docker run -v` / compose `volumes:` short syntax writes them
//! (`/host:/ctr:ro`, `name:/data:nocopy`, `/anon`) and as `--tmpfs` writes them
//! (`/run:size=64m,mode=1777`).
//!
//! The `-v` grammar is docker/cli's compose loader `ParseVolume`
//! (`cli/compose/loader/volume.go`) with Linux semantics: Windows drive letters
//! and named pipes are not recognised. This module only reads and writes the
//! text; it never resolves relative or `~` sources (the loader does, relative to
//! the stack file) and never mounts anything.

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
    fn new(kind: MountKind, source: Option<String>, target: String) -> Self {
        MountSpec {
            kind,
            source,
            target,
            read_only: false,
            propagation: None,
            nocopy: false,
            tmpfs_size: None,
            tmpfs_mode: None,
        }
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
