//! Restart policies as `docker run --restart` and compose `restart:` write them:
//! `no`, `always`, `on-failure[:N]`, `unless-stopped`.
//!
//! Docker splits the check in two: docker/cli `opts.ParseRestartPolicy` reads the
//! text and accepts any name, and the daemon (`ValidateRestartPolicy` in moby
//! `api/types/container/hostconfig.go`) rejects unknown names and misplaced retry
//! counts. [`parse_restart`] does both, with both layers' messages. This module
//! never decides when a container restarts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What to do when a container exits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum RestartPolicyName {
    /// `no`: never restart (also what an empty policy means).
    #[default]
    No,
    /// `always`: restart whatever the exit status.
    Always,
    /// `on-failure`: restart after a non-zero exit, optionally a limited number of times.
    OnFailure,
    /// `unless-stopped`: like `always`, but not after an explicit stop.
    UnlessStopped,
}

/// Why a restart policy did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// `:N` with nothing before the colon.
    #[error("invalid restart policy format: no policy provided before colon")]
    NoPolicyBeforeColon,
    /// The text after the colon is not an integer.
    #[error("invalid restart policy format: maximum retry count must be an integer, got '{count}'")]
    CountNotInteger {
        /// The text after the colon.
        count: String,
    },
    /// The name is not one of the four policies.
    #[error(
        "invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
    )]
    UnknownPolicy {
        /// The name as written.
        name: String,
    },
    /// A non-zero count on a policy other than `on-failure`.
    #[error("invalid restart policy: maximum retry count can only be used with 'on-failure'")]
    CountWithoutOnFailure {
        /// The policy the count was given to.
        name: RestartPolicyName,
    },
    /// `on-failure:-N`.
    #[error("invalid restart policy: maximum retry count cannot be negative")]
    NegativeCount {
        /// The count as written.
        count: String,
    },
    /// A count that does not fit in 32 bits.
    #[error("invalid restart policy: maximum retry count {count} is too large")]
    CountTooLarge {
        /// The count as written.
        count: String,
    },
}

impl RestartPolicyName {
    /// The name Docker uses: `no`, `always`, `on-failure` or `unless-stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicyName::No => "no",
            RestartPolicyName::Always => "always",
            RestartPolicyName::OnFailure => "on-failure",
            RestartPolicyName::UnlessStopped => "unless-stopped",
        }
    }
}

impl fmt::Display for RestartPolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RestartPolicyName {
    type Err = RestartError;

    /// One of the four names exactly (Docker compares case-sensitively).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RestartPolicyName::No,
            RestartPolicyName::Always,
            RestartPolicyName::OnFailure,
            RestartPolicyName::UnlessStopped,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| RestartError::UnknownPolicy { name: s.to_owned() })
    }
}

impl TryFrom<String> for RestartPolicyName {
    type Error = RestartError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RestartPolicyName> for String {
    fn from(p: RestartPolicyName) -> Self {
        p.to_string()
    }
}

/// Parses `--restart`: `name[:count]`; an empty string is `no`.
///
/// The count is `None` when there is no limit. Docker treats a count of 0 as "no
/// limit" too, so `on-failure:0` gives `None`, and a count of 0 is allowed (and
/// dropped) on every policy, as the daemon allows it.
pub fn parse_restart(input: &str) -> Result<(RestartPolicyName, Option<u32>), RestartError> {
    let (name, count_text) = match input.split_once(':') {
        Some(("", _)) => return Err(RestartError::NoPolicyBeforeColon),
        Some((name, count)) => (name, count),
        None => (input, ""),
    };
    let count = if count_text.is_empty() {
        0
    } else {
        parse_go_int(count_text).ok_or_else(|| RestartError::CountNotInteger {
            count: count_text.to_owned(),
        })?
    };
    // An empty name is what Docker stores for "no" (moby keeps accepting it).
    let name = if name.is_empty() {
        RestartPolicyName::No
    } else {
        name.parse()?
    };
    if count == 0 {
        return Ok((name, None));
    }
    if name != RestartPolicyName::OnFailure {
        return Err(RestartError::CountWithoutOnFailure { name });
    }
    if count < 0 {
        return Err(RestartError::NegativeCount {
            count: count_text.to_owned(),
        });
    }
    u32::try_from(count)
        .map(|c| (name, Some(c)))
        .map_err(|_| RestartError::CountTooLarge {
            count: count_text.to_owned(),
        })
}

/// Go's `strconv.Atoi` on 64-bit: optional sign, ASCII digits, fits in `i64`.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude = digits.bytes().try_fold(0i64, |acc, b| {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(b - b'0');
        // Accumulate towards the sign so i64::MIN is reachable.
        let shifted = acc.checked_mul(10)?;
        if negative {
            shifted.checked_sub(digit)
        } else {
            shifted.checked_add(digit)
        }
    })?;
    Some(magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use RestartPolicyName::*;

    #[test]
    fn plain_names_parse_without_a_count() {
        assert_eq!(parse_restart(""), Ok((No, None)));
        assert_eq!(parse_restart("no"), Ok((No, None)));
        assert_eq!(parse_restart("always"), Ok((Always, None)));
        assert_eq!(parse_restart("unless-stopped"), Ok((UnlessStopped, None)));
        assert_eq!(parse_restart("on-failure"), Ok((OnFailure, None)));
        assert_eq!(parse_restart("on-failure:"), Ok((OnFailure, None)));
    }

    #[test]
    fn on_failure_takes_a_count_and_zero_means_no_limit() {
        assert_eq!(parse_restart("on-failure:5"), Ok((OnFailure, Some(5))));
        assert_eq!(parse_restart("on-failure:+5"), Ok((OnFailure, Some(5))));
        assert_eq!(parse_restart("on-failure:0"), Ok((OnFailure, None)));
        assert_eq!(parse_restart("always:0"), Ok((Always, None)));
    }

    #[test]
    fn daemon_rules_are_applied() {
        assert!(matches!(
            parse_restart("always:3"),
            Err(RestartError::CountWithoutOnFailure { name: Always })
        ));
        assert!(matches!(
            parse_restart("on-failure:-1"),
            Err(RestartError::NegativeCount { .. })
        ));
        assert!(matches!(
            parse_restart("on-failure:4294967296"),
            Err(RestartError::CountTooLarge { .. })
        ));
        assert!(matches!(
            parse_restart("Always"),
            Err(RestartError::UnknownPolicy { .. })
        ));
        assert!(matches!(
            parse_restart("on-failure:99999999999999999999"),
            Err(RestartError::CountNotInteger { .. })
        ));
    }

    #[test]
    fn atoi_accepts_go_integers_only() {
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("007"), Some(7));
        for bad in ["", "-", "+", "1.0", "1_0", " 1", "9223372036854775808"] {
            assert_eq!(parse_go_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_serialize_as_docker_writes_them() {
        assert_eq!(
            serde_json::to_string(&UnlessStopped).ok().as_deref(),
            Some("\"unless-stopped\"")
        );
        assert_eq!(
            serde_json::from_str::<RestartPolicyName>("\"on-failure\"").ok(),
            Some(OnFailure)
        );
        assert!(serde_json::from_str::<RestartPolicyName>("\"sometimes\"").is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(i in 0usize..4) {
            let name = [No, Always, OnFailure, UnlessStopped][i];
            prop_assert_eq!(name.to_string().parse::<RestartPolicyName>(), Ok(name));
            prop_assert_eq!(parse_restart(&name.to_string()), Ok((name, None)));
        }

        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = parse_restart(&s);
        }
    }
}
