//! Resource limits as `docker run --ulimit` writes them: `nofile=1024`,
//! `nofile=512:1024`, `stack=8192:-1`.
//!
//! The grammar is go-units `ParseUlimit` (docker/cli's `--ulimit`), messages
//! included. This module only reads the text; it never calls `setrlimit`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The limit names Docker accepts, from go-units `ulimitNameMapping` (`as` is
/// left out there too: "doesn't seem usable with the way Docker inits a
/// container").
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One resource limit: `name=soft[:hard]`.
///
/// `-1` means unlimited. As in go-units, the soft limit may not exceed the hard
/// one unless the hard one is unlimited, and a soft `-1` needs a hard `-1`. Other
/// negative values are let through, as Docker does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ulimit {
    /// The limit, one of [`ULIMIT_NAMES`].
    pub name: String,
    /// The soft limit.
    pub soft: i64,
    /// The hard limit.
    pub hard: i64,
}

/// Why a ulimit did not parse. Messages are go-units' own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    /// There is no `=`.
    #[error("invalid ulimit argument: {input}")]
    InvalidArgument {
        /// The whole input.
        input: String,
    },
    /// The name is not in [`ULIMIT_NAMES`].
    #[error("invalid ulimit type: {name}")]
    InvalidType {
        /// The name as written.
        name: String,
    },
    /// A limit is not a decimal integer.
    #[error("invalid ulimit value: parsing {value:?}: invalid syntax")]
    InvalidNumber {
        /// The limit as written.
        value: String,
    },
    /// A limit does not fit in 64 bits.
    #[error("invalid ulimit value: parsing {value:?}: value out of range")]
    OutOfRange {
        /// The limit as written.
        value: String,
    },
    /// More than `soft:hard`.
    #[error("too many limit value arguments - {values}, can only have up to two, `soft[:hard]`")]
    TooManyValues {
        /// Everything after the `=`.
        values: String,
    },
    /// The soft limit is above the hard limit.
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    SoftAboveHard {
        /// The soft limit.
        soft: i64,
        /// The hard limit.
        hard: i64,
    },
    /// An unlimited soft limit with a finite hard limit.
    #[error(
        "ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: {hard}"
    )]
    UnlimitedSoft {
        /// The hard limit.
        hard: i64,
    },
}

impl FromStr for Ulimit {
    type Err = UlimitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (name, values) = input
            .split_once('=')
            .ok_or_else(|| UlimitError::InvalidArgument {
                input: input.to_owned(),
            })?;
        if !ULIMIT_NAMES.contains(&name) {
            return Err(UlimitError::InvalidType {
                name: name.to_owned(),
            });
        }
        // go-units parses the hard limit first, so its error wins.
        let (soft, hard) = match values.split(':').collect::<Vec<_>>().as_slice() {
            [soft] => {
                let soft = parse_limit(soft)?;
                (soft, soft)
            }
            [soft, hard] => {
                let hard = parse_limit(hard)?;
                (parse_limit(soft)?, hard)
            }
            _ => {
                return Err(UlimitError::TooManyValues {
                    values: values.to_owned(),
                });
            }
        };
        if hard != -1 {
            if soft == -1 {
                return Err(UlimitError::UnlimitedSoft { hard });
            }
            if soft > hard {
                return Err(UlimitError::SoftAboveHard { soft, hard });
            }
        }
        Ok(Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, fits in `i64`.
fn parse_limit(s: &str) -> Result<i64, UlimitError> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UlimitError::InvalidNumber {
            value: s.to_owned(),
        });
    }
    digits
        .bytes()
        .try_fold(0i64, |acc, b| {
            let digit = i64::from(b - b'0');
            // Accumulate towards the sign so i64::MIN is reachable.
            let shifted = acc.checked_mul(10)?;
            if negative {
                shifted.checked_sub(digit)
            } else {
                shifted.checked_add(digit)
            }
        })
        .ok_or_else(|| UlimitError::OutOfRange {
            value: s.to_owned(),
        })
}

impl fmt::Display for Ulimit {
    /// `name=soft` when both limits are equal, `name=soft:hard` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.soft == self.hard {
            write!(f, "{}={}", self.name, self.soft)
        } else {
            write!(f, "{}={}:{}", self.name, self.soft, self.hard)
        }
    }
}

impl TryFrom<String> for Ulimit {
    type Error = UlimitError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ulimit> for String {
    fn from(u: Ulimit) -> Self {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulimit(name: &str, soft: i64, hard: i64) -> Ulimit {
        Ulimit {
            name: name.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn one_value_sets_both_limits() {
        assert_eq!("nofile=1024".parse(), Ok(ulimit("nofile", 1024, 1024)));
        assert_eq!("core=+0".parse(), Ok(ulimit("core", 0, 0)));
    }

    #[test]
    fn unlimited_hard_allows_any_soft() {
        assert_eq!("stack=8192:-1".parse(), Ok(ulimit("stack", 8192, -1)));
        assert_eq!(
            "nofile=-1:1024".parse::<Ulimit>(),
            Err(UlimitError::UnlimitedSoft { hard: 1024 })
        );
    }

    #[test]
    fn hard_limit_errors_come_first() {
        assert_eq!(
            "nofile=x:y".parse::<Ulimit>(),
            Err(UlimitError::InvalidNumber { value: "y".into() })
        );
        assert_eq!(
            "nofile=1:2:3".parse::<Ulimit>(),
            Err(UlimitError::TooManyValues {
                values: "1:2:3".into()
            })
        );
    }

    #[test]
    fn limits_are_64_bit() {
        assert_eq!(
            "nofile=9223372036854775807".parse(),
            Ok(ulimit("nofile", i64::MAX, i64::MAX))
        );
        assert_eq!(
            "nofile=9223372036854775808".parse::<Ulimit>(),
            Err(UlimitError::OutOfRange {
                value: "9223372036854775808".into()
            })
        );
        assert!(matches!(
            "nofile=1_000".parse::<Ulimit>(),
            Err(UlimitError::InvalidNumber { .. })
        ));
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!(matches!(
            "NOFILE=1".parse::<Ulimit>(),
            Err(UlimitError::InvalidType { .. })
        ));
        assert!(matches!(
            "as=1".parse::<Ulimit>(),
            Err(UlimitError::InvalidType { .. })
        ));
    }

    #[test]
    fn serde_uses_the_text_form() {
        let u = ulimit("nofile", 512, 1024);
        assert_eq!(
            serde_json::to_string(&u).ok().as_deref(),
            Some("\"nofile=512:1024\"")
        );
        assert_eq!(
            serde_json::from_str::<Ulimit>("\"nofile=512:1024\"").ok(),
            Some(u)
        );
        assert!(serde_json::from_str::<Ulimit>("\"nofile=2:1\"").is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(i in 0usize..ULIMIT_NAMES.len(), a in -2i64..1 << 40, b in -2i64..1 << 40) {
            let (soft, hard) = if b == -1 { (a, b) } else if a == -1 { (b, b) } else { (a.min(b), a.max(b)) };
            let u = ulimit(ULIMIT_NAMES[i], soft, hard);
            prop_assert_eq!(u.to_string().parse::<Ulimit>(), Ok(u));
        }

        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = s.parse::<Ulimit>();
        }
    }
}
