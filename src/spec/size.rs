//! Byte sizes as Docker and compose write them: `512m`, `1.5g`, `100k`, `123`.
//!
//! Two grammars, both from go-units (`size.go`), which docker/cli and compose use:
//! - [`ByteSize`] follows `RAMInBytes` (binary units, `1k` = 1024): `--memory`,
//!   `shm_size`, `mem_limit`, tmpfs sizes.
//! - [`parse_human_size`] follows `FromHumanSize` (decimal units, `1k` = 1000).
//!
//! This module owns the text form of sizes only; it never decides what a size is
//! allowed to be used for.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest size Docker can hold: its sizes are Go `int64`s.
const MAX_SIZE: u64 = 9_223_372_036_854_775_807;

/// 2^63 as a float, the first value above [`MAX_SIZE`].
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// A byte count written with Docker's binary units (`RAMInBytes`): `b`, `k`/`kb`/`kib`,
/// `m`, `g`, `t`, `p` in any case, with an optional fraction (`1.5g`) and an
/// optional space before the unit (`32 m`).
///
/// Displays as the shortest exact form (`512m`, `1g`, `1536m`, `123`) and
/// (de)serializes as that string; it also deserializes from a non-negative
/// integer, read as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// There is no number, or it is negative.
    #[error("invalid size: '{input}'")]
    InvalidSize {
        /// The whole input.
        input: String,
    },
    /// The unit after the number is not one of the known ones.
    #[error("invalid suffix: '{suffix}'")]
    InvalidSuffix {
        /// The unit as Docker reports it (lower-cased when at most three bytes).
        suffix: String,
    },
    /// The part before the unit is not a decimal number.
    #[error("invalid size '{input}': parsing {number:?}: invalid syntax")]
    InvalidNumber {
        /// The whole input.
        input: String,
        /// The text that should have been a number.
        number: String,
    },
    /// The size does not fit in Docker's signed 64-bit byte count.
    #[error("invalid size '{input}': too large, the limit is {MAX_SIZE} bytes")]
    TooLarge {
        /// The whole input, or the integer given.
        input: String,
    },
}

/// Which multiplier a unit letter stands for.
#[derive(Debug, Clone, Copy)]
enum Units {
    /// Powers of 1024 (`RAMInBytes`).
    Binary,
    /// Powers of 1000 (`FromHumanSize`).
    Decimal,
}

impl Units {
    fn multiplier(self, letter: char) -> Option<u64> {
        let power = match letter {
            'k' => 1,
            'm' => 2,
            'g' => 3,
            't' => 4,
            'p' => 5,
            _ => return None,
        };
        let base: u64 = match self {
            Units::Binary => 1024,
            Units::Decimal => 1000,
        };
        base.checked_pow(power)
    }
}

/// Parses a size with decimal units, as go-units `FromHumanSize` does: `32k` is
/// 32 000 bytes, `1.5MB` is 1 500 000. `KiB` still means 1000 here, as in go-units.
pub fn parse_human_size(input: &str) -> Result<u64, SizeError> {
    parse_size(input, Units::Decimal)
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        parse_size(input, Units::Binary).map(ByteSize)
    }
}

/// A number as Go's `strconv.ParseFloat` accepts it in a size.
enum Number {
    /// `[+-]?digits`: kept exact, so big byte counts round-trip.
    Integer { negative: bool, value: Option<u64> },
    /// Anything with a fraction or an exponent, read as Go reads it.
    Float(f64),
}

/// go-units `parseSize`: the number is everything up to the last digit, dot or
/// space; a space right there is dropped; the rest is the unit.
fn parse_size(input: &str, units: Units) -> Result<u64, SizeError> {
    let invalid_size = || SizeError::InvalidSize {
        input: input.to_owned(),
    };
    let too_large = || SizeError::TooLarge {
        input: input.to_owned(),
    };
    let sep = input
        .bytes()
        .rposition(|b| b.is_ascii_digit() || b == b'.' || b == b' ')
        .ok_or_else(invalid_size)?;
    // `sep` is the index of an ASCII byte, so both cuts are on char boundaries.
    let number = if input.as_bytes().get(sep) == Some(&b' ') {
        &input[..sep]
    } else {
        &input[..=sep]
    };
    let suffix = &input[sep + 1..];

    let number = parse_number(number).ok_or_else(|| SizeError::InvalidNumber {
        input: input.to_owned(),
        number: number.to_owned(),
    })?;
    // Backward compatibility in go-units: negative sizes are rejected, `-0` is 0.
    match number {
        Number::Integer {
            negative: true,
            value: Some(0),
        } => {}
        Number::Integer { negative: true, .. } => return Err(invalid_size()),
        Number::Float(f) if f < 0.0 => return Err(invalid_size()),
        _ => {}
    }

    let multiplier = parse_suffix(suffix, units)?;
    let bytes = match number {
        Number::Integer { value, .. } => value.and_then(|v| v.checked_mul(multiplier)),
        // go-units multiplies in float64 and truncates; doing the same keeps
        // `1.005k`-style inputs byte-identical to Docker.
        // The multipliers (powers of 1000 and 1024 up to peta) are exact in f64.
        Number::Float(f) => trunc_to_u64(f * multiplier as f64),
    };
    bytes.filter(|b| *b <= MAX_SIZE).ok_or_else(too_large)
}

/// The unit part: empty, `b`, or a unit letter optionally followed by `b` or `ib`.
fn parse_suffix(suffix: &str, units: Units) -> Result<u64, SizeError> {
    if suffix.is_empty() {
        return Ok(1);
    }
    if suffix.len() > 3 {
        return Err(SizeError::InvalidSuffix {
            suffix: suffix.to_owned(),
        });
    }
    // go-units lower-cases with Go's Unicode rules; `to_lowercase` matches them.
    let lower = suffix.to_lowercase();
    let bad = || SizeError::InvalidSuffix {
        suffix: lower.clone(),
    };
    let mut chars = lower.chars();
    let first = chars.next().ok_or_else(bad)?;
    let rest = chars.as_str();
    if first == 'b' {
        return if rest.is_empty() { Ok(1) } else { Err(bad()) };
    }
    let multiplier = units.multiplier(first).ok_or_else(bad)?;
    match rest {
        "" | "b" | "ib" => Ok(multiplier),
        _ => Err(bad()),
    }
}

/// Reads a decimal number with the syntax of Go's `strconv.ParseFloat`:
/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`.
///
/// Go also accepts `inf`, `nan` and hex floats; none of them is a size, and the
/// go-units splitting never hands them over with a valid unit, so they are
/// rejected here.
fn parse_number(text: &str) -> Option<Number> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digits = |from: usize| {
        bytes.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let int_digits = digits(i);
    let int_start = i;
    i += int_digits;
    if i == bytes.len() {
        if int_digits == 0 {
            return None;
        }
        let value = text.get(int_start..)?.bytes().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        });
        return Some(Number::Integer { negative, value });
    }
    let mut mantissa_digits = int_digits;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let frac_digits = digits(i);
        i += frac_digits;
        mantissa_digits += frac_digits;
    }
    if mantissa_digits == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = digits(i);
        if exp_digits == 0 {
            return None;
        }
        i += exp_digits;
    }
    if i != bytes.len() {
        return None;
    }
    // The syntax was checked above and is a subset of what Rust's parser takes.
    text.parse::<f64>().ok().map(Number::Float)
}

/// Drops the fraction of a finite float in `[0, 2^63)`, like Go's `int64(f)` on
/// that range; anything else (negative, too large, NaN, infinite) is `None`.
///
/// Done on the bit pattern because `as` from float to integer is banned by
/// `clippy::cast_possible_truncation`.
pub(crate) fn trunc_to_u64(f: f64) -> Option<u64> {
    if !(0.0..TWO_POW_63).contains(&f) {
        return None;
    }
    if f < 1.0 {
        return Some(0);
    }
    let bits = f.to_bits();
    // For f in [1, 2^63) the biased exponent is in [1023, 1085], so `shift` is in
    // [-52, 10]: the 53-bit significand moves left at most 10 places.
    let biased = i32::try_from((bits >> 52) & 0x7ff).ok()?;
    let shift = biased - 1075;
    let significand = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    if shift >= 0 {
        significand.checked_shl(u32::try_from(shift).ok()?)
    } else {
        significand.checked_shr(u32::try_from(-shift).ok()?)
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly: `512m`, `1g`,
    /// `1536m`, `100k`; plain bytes otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, char); 5] = [
            (1 << 50, 'p'),
            (1 << 40, 't'),
            (1 << 30, 'g'),
            (1 << 20, 'm'),
            (1 << 10, 'k'),
        ];
        let bytes = self.0;
        if bytes != 0 {
            for (unit, letter) in UNITS {
                if bytes.is_multiple_of(unit) {
                    return write!(f, "{}{letter}", bytes / unit);
                }
            }
        }
        write!(f, "{bytes}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// Accepts `"512m"` or a byte count.
struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"512m\" or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        if v > MAX_SIZE {
            return Err(E::custom(SizeError::TooLarge {
                input: v.to_string(),
            }));
        }
        Ok(ByteSize(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| {
            E::custom(SizeError::InvalidSize {
                input: v.to_string(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ram(s: &str) -> Result<u64, SizeError> {
        s.parse::<ByteSize>().map(|b| b.0)
    }

    #[test]
    fn binary_units_multiply_by_powers_of_1024() {
        assert_eq!(ram("1k"), Ok(1024));
        assert_eq!(ram("1KiB"), Ok(1024));
        assert_eq!(ram("2 MB"), Ok(2 << 20));
        assert_eq!(ram("1.5g"), Ok(3 << 29));
        assert_eq!(ram("1p"), Ok(1 << 50));
    }

    #[test]
    fn decimal_units_multiply_by_powers_of_1000() {
        assert_eq!(parse_human_size("32k"), Ok(32_000));
        assert_eq!(parse_human_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_human_size("1KiB"), Ok(1000));
    }

    #[test]
    fn fractions_truncate_like_go_float_arithmetic() {
        // 1.005 * 1000 is 1004.999… in float64; go-units answers 1004.
        assert_eq!(parse_human_size("1.005k"), Ok(1004));
        assert_eq!(ram("32.3Kb"), Ok(33075));
    }

    #[test]
    fn signs_follow_go_units() {
        assert_eq!(ram("-0"), Ok(0));
        assert_eq!(ram("+5k"), Ok(5120));
        assert!(matches!(ram("-1"), Err(SizeError::InvalidSize { .. })));
        assert!(matches!(ram("-0.5"), Err(SizeError::InvalidSize { .. })));
    }

    #[test]
    fn sizes_past_int64_are_too_large_instead_of_wrapping() {
        assert_eq!(ram("9223372036854775807"), Ok(MAX_SIZE));
        assert!(matches!(
            ram("9223372036854775808"),
            Err(SizeError::TooLarge { .. })
        ));
        assert!(matches!(ram("8192p"), Err(SizeError::TooLarge { .. })));
        assert!(matches!(ram("1e400"), Err(SizeError::TooLarge { .. })));
    }

    #[test]
    fn non_numbers_and_odd_units_are_rejected() {
        for bad in ["", "k", "inf", "nan b", "0x10", "1_000", ".", "1.e", "1..2"] {
            assert!(ram(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            ram("1kbb"),
            Err(SizeError::InvalidSuffix {
                suffix: "kbb".into()
            })
        );
        assert_eq!(
            ram("1KBIB"),
            Err(SizeError::InvalidSuffix {
                suffix: "KBIB".into()
            })
        );
    }

    #[test]
    fn display_picks_the_largest_exact_unit() {
        let shown = |b: u64| ByteSize(b).to_string();
        assert_eq!(shown(0), "0");
        assert_eq!(shown(123), "123");
        assert_eq!(shown(100 << 10), "100k");
        assert_eq!(shown(512 << 20), "512m");
        assert_eq!(shown(1536 << 20), "1536m");
        assert_eq!(shown(1 << 30), "1g");
        assert_eq!(shown(3 << 50), "3p");
    }

    #[test]
    fn trunc_matches_integer_conversion() {
        assert_eq!(trunc_to_u64(0.0), Some(0));
        assert_eq!(trunc_to_u64(0.99), Some(0));
        assert_eq!(trunc_to_u64(1.0), Some(1));
        assert_eq!(trunc_to_u64(33075.2), Some(33075));
        assert_eq!(
            trunc_to_u64(4_503_599_627_370_497.0),
            Some(4_503_599_627_370_497)
        );
        assert_eq!(
            trunc_to_u64(9_223_372_036_854_774_784.0),
            Some(9_223_372_036_854_774_784)
        );
        assert_eq!(trunc_to_u64(TWO_POW_63), None);
        assert_eq!(trunc_to_u64(-1.0), None);
        assert_eq!(trunc_to_u64(f64::NAN), None);
    }

    #[test]
    fn deserializes_from_string_or_byte_count() {
        let from = |json: &str| serde_json::from_str::<ByteSize>(json);
        assert_eq!(from("\"64m\"").ok(), Some(ByteSize(64 << 20)));
        assert_eq!(from("1024").ok(), Some(ByteSize(1024)));
        assert!(from("-1").is_err());
        assert!(from("\"lots\"").is_err());
        assert!(from("18446744073709551615").is_err());
        assert_eq!(
            serde_json::to_string(&ByteSize(64 << 20)).ok().as_deref(),
            Some("\"64m\"")
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(bytes in 0..=MAX_SIZE, shift in 0u32..50) {
            for value in [bytes, (bytes >> shift) << shift] {
                let size = ByteSize(value);
                prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
            }
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = s.parse::<ByteSize>();
            let _ = parse_human_size(&s);
        }

        #[test]
        fn fractions_match_float_arithmetic(whole in 0u64..100_000, frac in 0u64..1000) {
            let value: f64 = format!("{whole}.{frac:03}").parse().expect("valid float");
            prop_assert_eq!(ram(&format!("{whole}.{frac:03}k")).ok(), trunc_to_u64(value * 1024.0));
        }
    }
}
