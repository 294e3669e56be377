//! Durations as compose writes them (`healthcheck.interval`, `stop_grace_period`,
//! …): `1m30s`, `200ms`, `1.5s`, `2h`, `10us`, `0`.
//!
//! The grammar is Go's `time.ParseDuration`, which compose-go calls, except that
//! negative durations are refused: nothing in a stack file can wait a negative
//! time. This module only reads and writes the text; it never sleeps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::size::trunc_to_u64;

/// The longest duration Go can hold: `i64::MAX` nanoseconds (about 292 years).
const MAX_NANOS: u64 = 9_223_372_036_854_775_807;

/// A non-negative span of time written as a Go duration.
///
/// Displays in a compact form that Go and this parser both read back (`1m30s`,
/// `2h`, `1.5s`, `200ms`, `0s`) and (de)serializes as that string; it also
/// deserializes from a non-negative integer number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationSpec(pub Duration);

/// Why a duration did not parse. Messages follow Go's `time` package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a sequence of numbers with units, or too large.
    #[error("invalid duration {input:?}")]
    Invalid {
        /// The whole input.
        input: String,
    },
    /// A number without a unit (only `0` may stand alone).
    #[error("missing unit in duration {input:?}")]
    MissingUnit {
        /// The whole input.
        input: String,
    },
    /// A unit other than `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`.
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A negative duration, which Go allows but no stack file setting can use.
    #[error("negative duration {input:?}")]
    Negative {
        /// The whole input.
        input: String,
    },
    /// More than Go's limit of `i64::MAX` nanoseconds (about 292 years).
    #[error("duration {input} is too large")]
    TooLarge {
        /// The duration as given.
        input: String,
    },
}

/// Nanoseconds per unit, from Go's `time.unitMap`. Both micro signs are there:
/// U+00B5 (micro sign) and U+03BC (Greek small letter mu).
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Go's `leadingInt`: the leading digits as an integer, failing above 2^63.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let value = s[..end].bytes().try_fold(0u64, |acc, b| {
        let next = acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        (next <= 1 << 63).then_some(next)
    })?;
    Some((value, &s[end..]))
}

/// Go's `leadingFraction`: the leading digits as `value / scale`; digits past
/// what fits in 63 bits are consumed and ignored.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut value = 0u64;
    let mut scale = 1.0f64;
    let mut overflow = false;
    for b in s[..end].bytes() {
        if overflow {
            continue;
        }
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .filter(|v| *v <= 1 << 63)
        {
            Some(next) => {
                value = next;
                scale *= 10.0;
            }
            None => overflow = true,
        }
    }
    (value, scale, &s[end..])
}

impl FromStr for DurationSpec {
    type Err = DurationError;

    /// `[+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a lone `0`, rule for rule as Go's
    /// `time.ParseDuration` (a fraction is scaled in float64 like Go, so results
    /// agree to the nanosecond).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || DurationError::Invalid {
            input: input.to_owned(),
        };
        let (negative, mut s) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if s == "0" {
            return Ok(DurationSpec(Duration::ZERO));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
                return Err(invalid());
            }
            let before = s.len();
            let (whole, rest) = leading_int(s).ok_or_else(invalid)?;
            s = rest;
            let has_whole = s.len() != before;

            let mut fraction = (0u64, 1.0f64);
            let mut has_fraction = false;
            if let Some(rest) = s.strip_prefix('.') {
                let (value, scale, rest_after) = leading_fraction(rest);
                has_fraction = rest_after.len() != rest.len();
                fraction = (value, scale);
                s = rest_after;
            }
            if !has_whole && !has_fraction {
                return Err(invalid());
            }

            let unit_len = s
                .bytes()
                .take_while(|b| *b != b'.' && !b.is_ascii_digit())
                .count();
            if unit_len == 0 {
                return Err(DurationError::MissingUnit {
                    input: input.to_owned(),
                });
            }
            // The unit ends at an ASCII byte or at the end, so this is a char boundary.
            let (unit, rest) = s.split_at(unit_len);
            s = rest;
            let nanos = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
                input: input.to_owned(),
            })?;

            let mut value = whole
                .checked_mul(nanos)
                .filter(|v| *v <= 1 << 63)
                .ok_or_else(invalid)?;
            let (frac_value, scale) = fraction;
            if frac_value > 0 {
                // Go: v += uint64(float64(f) * (float64(unit) / scale)); the
                // product is at most 3.6e12 (one hour in ns), far inside u64.
                let part =
                    trunc_to_u64(frac_value as f64 * (nanos as f64 / scale)).ok_or_else(invalid)?;
                value = value
                    .checked_add(part)
                    .filter(|v| *v <= 1 << 63)
                    .ok_or_else(invalid)?;
            }
            total = total
                .checked_add(value)
                .filter(|v| *v <= 1 << 63)
                .ok_or_else(invalid)?;
        }
        if negative && total > 0 {
            return Err(DurationError::Negative {
                input: input.to_owned(),
            });
        }
        if total > MAX_NANOS {
            return Err(invalid());
        }
        Ok(DurationSpec(Duration::from_nanos(total)))
    }
}

/// Writes `value / unit` in decimal, dropping trailing zeros of the fraction.
fn write_decimal(
    f: &mut fmt::Formatter<'_>,
    value: u128,
    unit: u128,
    digits: usize,
) -> fmt::Result {
    write!(f, "{}", value / unit)?;
    let rest = value % unit;
    if rest != 0 {
        let fraction = format!("{rest:0digits$}");
        write!(f, ".{}", fraction.trim_end_matches('0'))?;
    }
    Ok(())
}

impl fmt::Display for DurationSpec {
    /// Like Go's `Duration.String` but without zero parts: `2h` rather than
    /// `2h0m0s`, `1h30s`, `1.5s`, `200ms`, `10us`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            write_decimal(f, nanos, 1_000, 3)?;
            return f.write_str("us");
        }
        if nanos < 1_000_000_000 {
            write_decimal(f, nanos, 1_000_000, 6)?;
            return f.write_str("ms");
        }
        let secs = self.0.as_secs();
        let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        let sub = self.0.subsec_nanos();
        if seconds > 0 || sub > 0 {
            write_decimal(
                f,
                u128::from(seconds) * 1_000_000_000 + u128::from(sub),
                1_000_000_000,
                9,
            )?;
            f.write_str("s")?;
        }
        Ok(())
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    /// A Go duration string, or an integer number of seconds.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Accepts `"1m30s"` or `90`.
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = DurationSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"1m30s\" or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationSpec, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationSpec, E> {
        let too_large = || {
            E::custom(DurationError::TooLarge {
                input: format!("{v}s"),
            })
        };
        let nanos = v.checked_mul(1_000_000_000).ok_or_else(too_large)?;
        if nanos > MAX_NANOS {
            return Err(too_large());
        }
        Ok(DurationSpec(Duration::from_secs(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationSpec, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(DurationError::Negative {
                input: v.to_string(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nanos(s: &str) -> Result<u64, DurationError> {
        s.parse::<DurationSpec>()
            .map(|d| u64::try_from(d.0.as_nanos()).expect("within i64"))
    }

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    /// The non-negative cases of Go's `parseDurationTests` (src/time/time_test.go).
    #[test]
    fn go_parse_duration_table_matches() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12\u{b5}s", 12 * US),
            ("12\u{3bc}s", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", MAX_NANOS),
            ("9223372036854775.807us", MAX_NANOS),
            ("9223372036s854ms775us807ns", MAX_NANOS),
            ("0.100000000000000000000h", 6 * M),
            (
                "0.830103483285477580700h",
                49 * M + 48 * S + 372_539_827 * NS,
            ),
        ];
        for (input, expected) in table {
            assert_eq!(nanos(input), Ok(*expected), "{input}");
        }
    }

    /// Go's `parseDurationErrorTests`, plus negatives, which are refused here.
    #[test]
    fn go_parse_duration_errors_match() {
        for input in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ffff}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "3000000h",
            "-5s",
            "-1h30m",
        ] {
            assert!(nanos(input).is_err(), "{input:?} parsed");
        }
        assert!(matches!(nanos("3"), Err(DurationError::MissingUnit { .. })));
        assert!(matches!(
            nanos("1d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(nanos("-5s"), Err(DurationError::Negative { .. })));
    }

    #[test]
    fn display_is_compact() {
        for (value, shown) in [
            (0, "0s"),
            (5 * NS, "5ns"),
            (1500 * NS, "1.5us"),
            (10 * US, "10us"),
            (200 * MS, "200ms"),
            (1_234_567 * NS, "1.234567ms"),
            (S + 500 * MS, "1.5s"),
            (90 * S, "1m30s"),
            (2 * H, "2h"),
            (H + 30 * S, "1h30s"),
            (H + 2 * M + 3 * S + 4 * NS, "1h2m3.000000004s"),
        ] {
            assert_eq!(DurationSpec(Duration::from_nanos(value)).to_string(), shown);
        }
    }

    #[test]
    fn deserializes_from_string_or_seconds() {
        let from = |json: &str| serde_json::from_str::<DurationSpec>(json);
        assert_eq!(
            from("\"1m30s\"").ok(),
            Some(DurationSpec(Duration::from_secs(90)))
        );
        assert_eq!(from("90").ok(), Some(DurationSpec(Duration::from_secs(90))));
        assert!(from("-1").is_err());
        assert!(from("\"90\"").is_err());
        assert!(from("18446744073709551615").is_err());
        assert_eq!(
            serde_json::to_string(&DurationSpec(Duration::from_millis(1500)))
                .ok()
                .as_deref(),
            Some("\"1.5s\"")
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(n in 0..=MAX_NANOS, shift in 0u32..64) {
            for value in [n, n / 10u64.pow(shift % 19) * 10u64.pow(shift % 19)] {
                let d = DurationSpec(Duration::from_nanos(value));
                prop_assert_eq!(d.to_string().parse::<DurationSpec>(), Ok(d));
            }
        }

        #[test]
        fn parser_never_panics(s in "\\PC*|[0-9.]{0,25}(ns|us|ms|s|m|h|µs)?") {
            let _ = s.parse::<DurationSpec>();
        }
    }
}
