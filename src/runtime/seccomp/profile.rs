//! Seccomp profiles in the JSON format `docker run --security-opt
//! seccomp=profile.json` reads, and their resolution into the OCI
//! `linux.seccomp` a container's runtime spec carries.
//!
//! Docker's format is the OCI [`LinuxSeccomp`] plus three things the OCI
//! spec leaves to the engine: an `archMap` (the architectures to list for each
//! native one), a legacy single `name` per rule, and `includes`/`excludes` on
//! each rule, which keep or drop the rule depending on the container's
//! capabilities, the architecture and the kernel version. A plain OCI
//! `linux.seccomp` object is therefore also a valid profile. Resolution
//! follows moby's `profiles/seccomp/seccomp_linux.go` (`setupSeccomp`).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use caps::Capability;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;
use thiserror::Error;

/// Docker's default profile, in Docker's format: see `default.json` beside
/// this file for the rules and the reason for each.
const DEFAULT_PROFILE: &str = include_str!("default.json");

/// A seccomp profile as written: Docker's format, or plain OCI
/// `linux.seccomp`, which is a subset of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// What happens to a syscall no rule matches.
    pub default_action: LinuxSeccompAction,
    /// The errno `default_action` returns when it is `SCMP_ACT_ERRNO` or
    /// `SCMP_ACT_TRACE` (`EPERM` when unset).
    pub default_errno_ret: Option<u32>,
    /// Architectures listed as they are (`architectures`).
    pub architectures: Vec<Arch>,
    /// Architectures listed per native architecture (`archMap`).
    pub arch_map: Vec<ArchMap>,
    /// Flags for the `seccomp(2)` call that installs the filter.
    pub flags: Vec<LinuxSeccompFilterFlag>,
    /// Where a seccomp agent listens for `SCMP_ACT_NOTIFY` (passed through).
    pub listener_path: Option<PathBuf>,
    /// Opaque data for that agent (passed through).
    pub listener_metadata: Option<String>,
    /// The rules, in the order they were written.
    pub syscalls: Vec<Rule>,
}

/// One `archMap` entry: when `architecture` is the native one, it and its
/// `sub_architectures` are listed in the resolved profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchMap {
    /// The native architecture this entry is for.
    pub architecture: Arch,
    /// The architectures whose binaries also run on it (e.g. x86 and x32 on
    /// x86_64).
    pub sub_architectures: Vec<Arch>,
}

/// One rule of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The syscalls the rule is for (Docker's legacy `name` is folded in).
    pub names: Vec<String>,
    /// What happens when the rule matches.
    pub action: LinuxSeccompAction,
    /// The errno for `SCMP_ACT_ERRNO` / the value for `SCMP_ACT_TRACE`.
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    pub args: Vec<LinuxSeccompArg>,
    /// Free text, ignored.
    pub comment: Option<String>,
    /// The rule is kept only if the container meets all of this.
    pub includes: Gate,
    /// The rule is dropped if the container meets any of this.
    pub excludes: Gate,
}

/// The `includes` or `excludes` of a rule: conditions on the container, not
/// on the syscall, decided once when the profile is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Capability names such as `CAP_SYS_ADMIN`.
    pub caps: Vec<String>,
    /// Docker's architecture names: `amd64`, `arm64`, `x86`, `x32`, `arm`,
    /// `ppc64le`, `s390x`, `riscv64`…
    pub arches: Vec<String>,
    /// A kernel version to compare the running kernel with.
    pub min_kernel: Option<KernelVersion>,
}

/// A kernel version as `includes.minKernel` compares it: major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The major version (the 6 in 6.8).
    pub major: u32,
    /// The minor version (the 8 in 6.8).
    pub minor: u32,
}

impl KernelVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a string is not a kernel version.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not a kernel version (MAJOR.MINOR, e.g. 4.8)")]
pub struct KernelVersionError {
    /// The string that was refused.
    pub text: String,
}

impl FromStr for KernelVersion {
    type Err = KernelVersionError;

    /// Reads `MAJOR.MINOR`, ignoring what follows (a patch level, `-rc1`,
    /// `-45-generic`…), so both `4.8` and a full `uname -r` release parse.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || KernelVersionError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let mut parts = trimmed.splitn(3, '.');
        let major = parts.next().ok_or_else(refuse)?;
        let minor = parts.next().ok_or_else(refuse)?;
        let minor_digits = minor
            .find(|c: char| !c.is_ascii_digit())
            .map_or(minor, |end| &minor[..end]);
        let number = |digits: &str| digits.parse::<u32>().map_err(|_| refuse());
        Ok(Self::new(number(major)?, number(minor_digits)?))
    }
}

/// Why a profile's text is refused.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The text is not JSON, or not shaped like a profile (a missing
    /// `defaultAction`, an unknown action, operator or architecture…). The
    /// source gives the line and column.
    #[error("not a seccomp profile")]
    Json(#[source] serde_json::Error),
    /// Both `architectures` and `archMap` are set; Docker refuses this too.
    #[error("profile sets both `architectures` and `archMap`; use one")]
    ArchitecturesAndArchMap,
    /// A rule sets both `name` and `names`; Docker refuses this too.
    #[error("rule {rule} sets both `name` and `names`; use one")]
    NameAndNames {
        /// Index of the rule in `syscalls`, from 0.
        rule: usize,
    },
    /// A rule's `minKernel` is not a kernel version.
    #[error("rule {rule} has an invalid `minKernel`")]
    MinKernel {
        /// Index of the rule in `syscalls`, from 0.
        rule: usize,
        /// The cause.
        #[source]
        source: KernelVersionError,
    },
}

/// The profile on the wire. Unknown fields are ignored, as Docker's Go
/// decoder ignores them (other engines' profiles carry extra fields).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<WireArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<WireRule>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<WireGate>,
    #[serde(default)]
    excludes: Option<WireGate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireGate {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Parses a profile: Docker's format (with `includes`, `excludes`,
/// `archMap`) or plain OCI `linux.seccomp` JSON.
pub fn parse_profile(json: &str) -> Result<Profile, ProfileError> {
    let wire: WireProfile = serde_json::from_str(json).map_err(ProfileError::Json)?;
    let architectures = wire.architectures.unwrap_or_default();
    let arch_map: Vec<ArchMap> = wire
        .arch_map
        .unwrap_or_default()
        .into_iter()
        .map(|entry| ArchMap {
            architecture: entry.architecture,
            sub_architectures: entry.sub_architectures.unwrap_or_default(),
        })
        .collect();
    if !architectures.is_empty() && !arch_map.is_empty() {
        return Err(ProfileError::ArchitecturesAndArchMap);
    }
    let syscalls = wire
        .syscalls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, rule)| convert_rule(index, rule))
        .collect::<Result<_, _>>()?;
    Ok(Profile {
        default_action: wire.default_action,
        default_errno_ret: wire.default_errno_ret,
        architectures,
        arch_map,
        flags: wire.flags.unwrap_or_default(),
        listener_path: wire.listener_path,
        listener_metadata: wire.listener_metadata,
        syscalls,
    })
}

fn convert_rule(index: usize, rule: WireRule) -> Result<Rule, ProfileError> {
    // An empty `name` counts as unset, as Go's zero value does in Docker.
    let names = rule.names.unwrap_or_default();
    let names = match rule.name.filter(|name| !name.is_empty()) {
        Some(_) if !names.is_empty() => {
            return Err(ProfileError::NameAndNames { rule: index });
        }
        Some(name) => vec![name],
        None => names,
    };
    let gate = |wire: Option<WireGate>| -> Result<Gate, ProfileError> {
        let Some(wire) = wire else {
            return Ok(Gate::default());
        };
        let min_kernel = wire
            .min_kernel
            .filter(|text| !text.is_empty())
            .map(|text| text.parse())
            .transpose()
            .map_err(|source| ProfileError::MinKernel {
                rule: index,
                source,
            })?;
        Ok(Gate {
            caps: wire.caps.unwrap_or_default(),
            arches: wire.arches.unwrap_or_default(),
            min_kernel,
        })
    };
    Ok(Rule {
        names,
        action: rule.action,
        errno_ret: rule.errno_ret,
        args: rule.args.unwrap_or_default(),
        comment: rule.comment,
        includes: gate(rule.includes)?,
        excludes: gate(rule.excludes)?,
    })
}

/// Docker's default seccomp profile (moby `profiles/seccomp/default.json`,
/// as of Docker 28.2): everything denied with `EPERM` but an allowlist of
/// about 360 syscalls; namespaces, mounts, BPF, module loading, clock
/// setting and the like only with the capability that guards them;
/// `personality` limited to harmless personas; `clone` without namespace
/// flags and `clone3` answered with `ENOSYS` unless the container has
/// `CAP_SYS_ADMIN`; no `AF_VSOCK` sockets; no `io_uring`.
pub fn default_profile() -> Profile {
    parse_profile(DEFAULT_PROFILE).expect("the built-in profile parses; a unit test checks it")
}

/// Docker's name for an architecture in `includes.arches` and
/// `excludes.arches`: libseccomp's native names, which for the 64-bit
/// mainstream ones are Go's (`amd64`, `arm64`). Docker spells MIPS el64n32
/// `mips3l64n32`; that is copied too, so its profiles keep their meaning.
pub fn docker_arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::ScmpArchNative => super::HOST_ARCH.map_or("", docker_arch_name),
        Arch::ScmpArchX86 => "x86",
        Arch::ScmpArchX86_64 => "amd64",
        Arch::ScmpArchX32 => "x32",
        Arch::ScmpArchArm => "arm",
        Arch::ScmpArchAarch64 => "arm64",
        Arch::ScmpArchMips => "mips",
        Arch::ScmpArchMips64 => "mips64",
        Arch::ScmpArchMips64n32 => "mips64n32",
        Arch::ScmpArchMipsel => "mipsel",
        Arch::ScmpArchMipsel64 => "mipsel64",
        Arch::ScmpArchMipsel64n32 => "mips3l64n32",
        Arch::ScmpArchPpc => "ppc",
        Arch::ScmpArchPpc64 => "ppc64",
        Arch::ScmpArchPpc64le => "ppc64le",
        Arch::ScmpArchS390 => "s390",
        Arch::ScmpArchS390x => "s390x",
        Arch::ScmpArchParisc => "parisc",
        Arch::ScmpArchParisc64 => "parisc64",
        Arch::ScmpArchRiscv64 => "riscv64",
        Arch::ScmpArchLoongarch64 => "loong64",
        Arch::ScmpArchM68k => "m68k",
        Arch::ScmpArchSh => "sh",
        Arch::ScmpArchSheb => "sheb",
    }
}

/// Resolves a profile for one container, as Docker does before it writes
/// `config.json`: keeps the rules whose `includes` the container meets and
/// whose `excludes` it does not, and lists the architectures `archMap`
/// gives for `arch`.
///
/// - `caps` is the container's capability set. Docker checks the bounding
///   set, which for a container is the same list as the effective set unless
///   the spec sets them apart; pass the bounding set to match Docker exactly.
///   `includes.caps` needs every listed capability, `excludes.caps` drops the
///   rule on any one of them.
/// - `arch` is the native architecture of the host the container runs on
///   (see [`HOST_ARCH`](super::HOST_ARCH)); `includes.arches` and
///   `excludes.arches` compare it by [`docker_arch_name`].
/// - `kernel` is the running kernel's version, compared with `minKernel`
///   (see [`read_kernel_version`](super::read_kernel_version)).
pub fn resolve(
    profile: &Profile,
    caps: &[Capability],
    arch: Arch,
    kernel: KernelVersion,
) -> LinuxSeccomp {
    let arch = match arch {
        Arch::ScmpArchNative => super::HOST_ARCH.unwrap_or(arch),
        other => other,
    };
    let arch_name = docker_arch_name(arch);
    let cap_names: BTreeSet<String> = caps.iter().map(ToString::to_string).collect();

    let mut architectures = profile.architectures.clone();
    if let Some(entry) = profile.arch_map.iter().find(|e| e.architecture == arch) {
        architectures.push(entry.architecture);
        architectures.extend(entry.sub_architectures.iter().copied());
    }

    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .iter()
        .filter(|rule| rule.applies_to(&cap_names, arch_name, kernel))
        .map(Rule::to_oci)
        .collect();

    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(profile.default_action)
        .set_default_errno_ret(profile.default_errno_ret)
        .set_architectures((!architectures.is_empty()).then_some(architectures))
        .set_flags((!profile.flags.is_empty()).then(|| profile.flags.clone()))
        .set_listener_path(profile.listener_path.clone())
        .set_listener_metadata(profile.listener_metadata.clone())
        .set_syscalls(Some(syscalls));
    seccomp
}

impl Rule {
    /// Whether the rule survives resolution for this container, in the order
    /// Docker checks: excludes (arches, caps, kernel), then includes.
    fn applies_to(&self, caps: &BTreeSet<String>, arch: &str, kernel: KernelVersion) -> bool {
        let excludes = &self.excludes;
        if excludes.arches.iter().any(|a| a == arch)
            || excludes.caps.iter().any(|c| caps.contains(c))
            || excludes.min_kernel.is_some_and(|min| kernel >= min)
        {
            return false;
        }
        let includes = &self.includes;
        (includes.arches.is_empty() || includes.arches.iter().any(|a| a == arch))
            && includes.caps.iter().all(|c| caps.contains(c))
            && includes.min_kernel.is_none_or(|min| kernel >= min)
    }

    fn to_oci(&self) -> LinuxSyscall {
        let mut syscall = LinuxSyscall::default();
        syscall
            .set_names(self.names.clone())
            .set_action(self.action)
            .set_errno_ret(self.errno_ret)
            .set_args((!self.args.is_empty()).then(|| self.args.clone()));
        syscall
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompOperator;

    const KERNEL: KernelVersion = KernelVersion::new(6, 8);

    /// The capabilities Docker gives a container by default.
    const DOCKER_CAPS: &[Capability] = &crate::runtime::DEFAULT_CAPABILITIES;

    /// Every rule of a resolved profile that names `name`.
    fn rules_for<'s>(seccomp: &'s LinuxSeccomp, name: &str) -> Vec<&'s LinuxSyscall> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn with_caps(extra: &[Capability]) -> Vec<Capability> {
        DOCKER_CAPS.iter().chain(extra).copied().collect()
    }

    #[test]
    fn default_profile_parses_as_docker_writes_it() {
        let profile = default_profile();
        assert_eq!(profile.default_action, LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret, Some(1));
        assert!(profile.architectures.is_empty());
        let names: BTreeSet<&str> = profile
            .syscalls
            .iter()
            .flat_map(|rule| rule.names.iter().map(String::as_str))
            .collect();
        for name in [
            "read", "execve", "clone", "clone3", "unshare", "socket", "bpf",
        ] {
            assert!(names.contains(name), "{name} is not in the profile");
        }
        // Denied by omission.
        for name in [
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "io_uring_setup",
        ] {
            assert!(!names.contains(name), "{name} is in the profile");
        }
    }

    #[test]
    fn default_profile_without_sys_admin_limits_namespaces() {
        let seccomp = resolve(
            &default_profile(),
            DOCKER_CAPS,
            Arch::ScmpArchX86_64,
            KERNEL,
        );
        assert!(rules_for(&seccomp, "unshare").is_empty());
        assert!(rules_for(&seccomp, "mount").is_empty());
        // clone only with the namespace flags masked out.
        let clone = rules_for(&seccomp, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args[0].index(), 0);
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0x7e02_0000);
        // clone3 answers ENOSYS.
        let clone3 = rules_for(&seccomp, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // Docker's defaults include CAP_SYS_CHROOT.
        assert_eq!(rules_for(&seccomp, "chroot").len(), 1);
        assert!(rules_for(&seccomp, "open_by_handle_at").is_empty());
        assert_eq!(seccomp.default_errno_ret(), Some(1));
    }

    #[test]
    fn default_profile_with_sys_admin_allows_namespaces() {
        let caps = with_caps(&[Capability::CAP_SYS_ADMIN]);
        let seccomp = resolve(&default_profile(), &caps, Arch::ScmpArchX86_64, KERNEL);
        for name in ["unshare", "setns", "mount", "clone", "clone3"] {
            let rules = rules_for(&seccomp, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0].action(), LinuxSeccompAction::ScmpActAllow);
            assert!(rules[0].args().is_none(), "{name}");
        }
    }

    #[test]
    fn includes_need_every_cap_and_excludes_any() {
        let profile = parse_profile(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "syscalls": [
                {"names": ["both"], "action": "SCMP_ACT_ALLOW",
                 "includes": {"caps": ["CAP_SYS_TIME", "CAP_SYS_NICE"]}},
                {"names": ["either"], "action": "SCMP_ACT_ALLOW",
                 "excludes": {"caps": ["CAP_SYS_TIME", "CAP_SYS_NICE"]}}
              ]
            }"#,
        )
        .unwrap();
        let names = |caps: &[Capability]| -> Vec<String> {
            resolve(&profile, caps, Arch::ScmpArchX86_64, KERNEL)
                .syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        assert_eq!(names(&[]), ["either"]);
        assert!(names(&[Capability::CAP_SYS_TIME]).is_empty());
        assert_eq!(
            names(&[Capability::CAP_SYS_TIME, Capability::CAP_SYS_NICE]),
            ["both"]
        );
    }

    #[test]
    fn arches_and_kernel_versions_select_rules() {
        let profile = parse_profile(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "archMap": [
                {"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null}
              ],
              "syscalls": [
                {"names": ["x86"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
                {"names": ["arm"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
                {"names": ["not_s390"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["s390x"]}},
                {"names": ["new"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.10"}},
                {"names": ["old"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}}
              ]
            }"#,
        )
        .unwrap();
        let resolved = |arch, kernel| {
            let seccomp = resolve(&profile, &[], arch, kernel);
            let names: Vec<String> = seccomp
                .syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect();
            (seccomp.architectures().clone(), names)
        };
        let (arches, names) = resolved(Arch::ScmpArchX86_64, KernelVersion::new(5, 10));
        assert_eq!(
            arches,
            Some(vec![
                Arch::ScmpArchX86_64,
                Arch::ScmpArchX86,
                Arch::ScmpArchX32
            ])
        );
        assert_eq!(names, ["x86", "not_s390", "new"]);
        let (arches, names) = resolved(Arch::ScmpArchAarch64, KernelVersion::new(5, 9));
        assert_eq!(arches, None);
        assert_eq!(names, ["arm", "not_s390", "old"]);
        let (arches, names) = resolved(Arch::ScmpArchS390x, KernelVersion::new(4, 19));
        assert_eq!(arches, None);
        assert_eq!(names, ["old"]);
        let (arches, _) = resolved(Arch::ScmpArchRiscv64, KERNEL);
        assert_eq!(arches, Some(vec![Arch::ScmpArchRiscv64]));
    }

    #[test]
    fn ptrace_without_cap_sys_ptrace_needs_linux_4_8() {
        let ptrace = |kernel| {
            let seccomp = resolve(
                &default_profile(),
                DOCKER_CAPS,
                Arch::ScmpArchX86_64,
                kernel,
            );
            rules_for(&seccomp, "ptrace").len()
        };
        assert_eq!(ptrace(KernelVersion::new(4, 7)), 0);
        assert_eq!(ptrace(KernelVersion::new(4, 8)), 1);
    }

    #[test]
    fn plain_oci_json_is_a_profile() {
        let profile = parse_profile(
            r#"{
              "defaultAction": "SCMP_ACT_ALLOW",
              "architectures": ["SCMP_ARCH_X86_64"],
              "flags": ["SECCOMP_FILTER_FLAG_LOG"],
              "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_NE"}]}
              ]
            }"#,
        )
        .unwrap();
        let seccomp = resolve(&profile, &[], Arch::ScmpArchX86_64, KERNEL);
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(seccomp.architectures(), &Some(vec![Arch::ScmpArchX86_64]));
        assert_eq!(
            seccomp.flags(),
            &Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog])
        );
        let mkdir = rules_for(&seccomp, "mkdirat");
        assert_eq!(mkdir[0].errno_ret(), Some(13));
        assert_eq!(
            rules_for(&seccomp, "personality")[0]
                .args()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn legacy_name_is_one_of_names() {
        let profile = parse_profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"name": "getpid", "action": "SCMP_ACT_ALLOW", "args": null},
                             {"name": "", "names": ["gettid"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(profile.syscalls[0].names, ["getpid"]);
        assert_eq!(profile.syscalls[1].names, ["gettid"]);
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let name_and_names = parse_profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                             {"name": "getpid", "names": ["gettid"], "action": "SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(matches!(
            name_and_names,
            Err(ProfileError::NameAndNames { rule: 1 })
        ));
        let both_arch_lists = parse_profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}]}"#,
        );
        assert!(matches!(
            both_arch_lists,
            Err(ProfileError::ArchitecturesAndArchMap)
        ));
        let bad_kernel = parse_profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                              "includes": {"minKernel": "four"}}]}"#,
        );
        assert!(matches!(
            bad_kernel,
            Err(ProfileError::MinKernel { rule: 0, .. })
        ));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let cases = [
            // Not JSON: a trailing comma.
            (
                "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n}",
                3,
                "trailing comma",
            ),
            // JSON, but no default action.
            (
                "{\n  \"syscalls\": []\n}",
                3,
                "missing field `defaultAction`",
            ),
            // An action libseccomp does not have.
            (
                "{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [{\"names\": [\"read\"], \"action\": \"ALLOW\"}]}",
                2,
                "unknown variant `ALLOW`",
            ),
        ];
        for (text, line, message) in cases {
            let Err(ProfileError::Json(error)) = parse_profile(text) else {
                panic!("{text:?} parsed");
            };
            assert_eq!(error.line(), line, "{text:?}: {error}");
            assert!(error.to_string().contains(message), "{error}");
        }
    }

    #[test]
    fn kernel_versions_parse_from_profiles_and_releases() {
        for (text, version) in [
            ("4.8", KernelVersion::new(4, 8)),
            ("5.10.0", KernelVersion::new(5, 10)),
            ("6.8.0-45-generic\n", KernelVersion::new(6, 8)),
            ("6.9-rc1", KernelVersion::new(6, 9)),
            ("6.18.44-fc-v669", KernelVersion::new(6, 18)),
        ] {
            assert_eq!(text.parse::<KernelVersion>().unwrap(), version, "{text:?}");
        }
        for text in ["", "6", "four.8", "6.x", "-1.2"] {
            assert!(text.parse::<KernelVersion>().is_err(), "{text:?}");
        }
        assert!(KernelVersion::new(4, 10) > KernelVersion::new(4, 9));
        assert!(KernelVersion::new(5, 0) > KernelVersion::new(4, 20));
    }

    #[test]
    fn native_arch_is_the_host() {
        let profile = default_profile();
        if let Some(host) = crate::runtime::seccomp::HOST_ARCH {
            assert_eq!(
                resolve(&profile, DOCKER_CAPS, Arch::ScmpArchNative, KERNEL),
                resolve(&profile, DOCKER_CAPS, host, KERNEL)
            );
        }
    }
}
