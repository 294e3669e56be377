//! Device mappings as `docker run --device` and compose `devices:` write them:
//! `/dev/snd`, `/dev/sda:/dev/xvdc`, `/dev/sda:/dev/xvdc:r`, `/dev/fuse:rwm`.
//!
//! The text grammar is docker/cli `parseLinuxDevice`, which is lenient: it takes
//! any permissions and relative or empty paths. The stricter checks `docker run`
//! adds before it (`validateLinuxPath`) are [`DeviceMapping::validate`]. This
//! module never looks at the host's devices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The cgroup permissions a mapping gets when none are written.
const DEFAULT_PERMISSIONS: &str = "rwm";

/// A host device made available in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceMapping {
    /// The device on the host.
    pub host_path: String,
    /// Where it appears in the container (the host path when not written).
    pub container_path: String,
    /// The cgroup device permissions: letters of `rwm` (read, write, mknod);
    /// `rwm` when not written.
    pub permissions: String,
}

/// Why a device mapping did not parse or validate. Messages are docker/cli's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// More than `host:container:permissions`.
    #[error("invalid device specification: {input}")]
    TooManyParts {
        /// The whole input.
        input: String,
    },
    /// The host path is empty.
    #[error("bad format for path: {path}")]
    EmptyHostPath {
        /// The mapping as text.
        path: String,
    },
    /// A path is not absolute.
    #[error("{path} is not an absolute path")]
    RelativePath {
        /// The path.
        path: String,
    },
    /// The permissions are not distinct letters of `rwm`.
    #[error("bad mode specified: {mode}")]
    BadMode {
        /// The permissions as written.
        mode: String,
    },
}

/// docker/cli `validDeviceMode`: a non-empty set of `r`, `w`, `m`, each at most once.
fn is_device_mode(mode: &str) -> bool {
    !mode.is_empty()
        && mode.len() <= 3
        && mode.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && !mode
            .char_indices()
            .any(|(i, c)| mode.get(i + 1..).is_some_and(|rest| rest.contains(c)))
}

impl FromStr for DeviceMapping {
    type Err = DeviceError;

    /// `host[:container][:permissions]`, where a second part that looks like
    /// permissions (`rw`, `m`, …) is taken as permissions, and then overrides a
    /// third part (`/dev/snd:rw:ro` has permissions `rw`), as in docker/cli.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = input.splitn(4, ':').collect();
        let (host, second, third) = match parts.as_slice() {
            [host] => (*host, None, None),
            [host, second] => (*host, Some(*second), None),
            [host, second, third] => (*host, Some(*second), Some(*third)),
            _ => {
                return Err(DeviceError::TooManyParts {
                    input: input.to_owned(),
                });
            }
        };
        let mut permissions = third.unwrap_or(DEFAULT_PERMISSIONS);
        let mut container = "";
        if let Some(second) = second {
            if is_device_mode(second) {
                permissions = second;
            } else {
                container = second;
            }
        }
        if container.is_empty() {
            container = host;
        }
        Ok(DeviceMapping {
            host_path: host.to_owned(),
            container_path: container.to_owned(),
            permissions: permissions.to_owned(),
        })
    }
}

impl DeviceMapping {
    /// The checks `docker run --device` makes on top of the grammar
    /// (docker/cli `validateLinuxPath`): a host path, absolute paths, and
    /// permissions made of distinct `r`, `w`, `m`.
    pub fn validate(&self) -> Result<(), DeviceError> {
        if self.host_path.is_empty() {
            return Err(DeviceError::EmptyHostPath {
                path: self.to_string(),
            });
        }
        for path in [&self.host_path, &self.container_path] {
            if !path.starts_with('/') {
                return Err(DeviceError::RelativePath { path: path.clone() });
            }
        }
        if !is_device_mode(&self.permissions) {
            return Err(DeviceError::BadMode {
                mode: self.permissions.clone(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for DeviceMapping {
    /// The shortest form that parses back: `host` when the rest is default,
    /// `host:perms`, `host:container`, or `host:container:perms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default_perms = self.permissions == DEFAULT_PERMISSIONS;
        f.write_str(&self.host_path)?;
        if self.container_path == self.host_path {
            if default_perms {
                Ok(())
            } else if is_device_mode(&self.permissions) {
                write!(f, ":{}", self.permissions)
            } else {
                // `host:xyz` would read `xyz` as the container path; an empty
                // container part means "same as host".
                write!(f, "::{}", self.permissions)
            }
        } else if default_perms {
            write!(f, ":{}", self.container_path)
        } else {
            write!(f, ":{}:{}", self.container_path, self.permissions)
        }
    }
}

impl TryFrom<String> for DeviceMapping {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceMapping> for String {
    fn from(d: DeviceMapping) -> Self {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(s: &str) -> DeviceMapping {
        s.parse().expect("valid mapping")
    }

    #[test]
    fn host_path_alone_maps_to_itself_with_all_permissions() {
        assert_eq!(
            device("/dev/fuse"),
            DeviceMapping {
                host_path: "/dev/fuse".into(),
                container_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }
        );
    }

    #[test]
    fn second_part_is_permissions_only_when_it_looks_like_them() {
        assert_eq!(device("/dev/a:mr").permissions, "mr");
        assert_eq!(device("/dev/a:rr").container_path, "rr");
        assert_eq!(device("/dev/a:rwmr").container_path, "rwmr");
    }

    #[test]
    fn validate_applies_docker_run_checks() {
        assert_eq!(device("/dev/a:/dev/b:rw").validate(), Ok(()));
        assert!(matches!(
            device("").validate(),
            Err(DeviceError::EmptyHostPath { .. })
        ));
        assert!(matches!(
            device("foo:bar").validate(),
            Err(DeviceError::RelativePath { .. })
        ));
        assert!(matches!(
            device("/dev/a:/dev/b:xyz").validate(),
            Err(DeviceError::BadMode { .. })
        ));
    }

    #[test]
    fn display_is_the_shortest_form() {
        for (input, shown) in [
            ("/dev/a", "/dev/a"),
            ("/dev/a:/dev/a:rwm", "/dev/a"),
            ("/dev/a:r", "/dev/a:r"),
            ("/dev/a:/b", "/dev/a:/b"),
            ("/dev/a:/b:rw", "/dev/a:/b:rw"),
            ("/dev/a::xyz", "/dev/a::xyz"),
        ] {
            assert_eq!(device(input).to_string(), shown);
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(s in "[a-z/rwm]{0,6}(:[a-z/rwm]{0,6}){0,2}") {
            let parsed = device(&s);
            prop_assert_eq!(parsed.to_string().parse::<DeviceMapping>(), Ok(parsed));
        }

        #[test]
        fn parser_never_panics(s in "\\PC*") {
            if let Ok(d) = s.parse::<DeviceMapping>() {
                let _ = d.validate();
            }
        }
    }
}
