//! Units: rates (bit/s), sizes (bytes), durations and percentages — parsing and printing.
//!
//! Rates and sizes follow the brief: decimal `kbit mbit gbit tbit`, binary `kibit mibit
//! gibit tibit`; sizes `b kb mb gb` (decimal) and `kib mib gib` (binary). Everything tc would
//! read differently from what a person expects is refused or flagged by the checker.

/// What a rate token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSpec {
    /// Bits per second.
    Bits(u64),
    /// Parts per million of the parent (60% = 600_000).
    Percent(u64),
}

/// Why a token is not an acceptable rate or size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// Not a number at all.
    NotANumber,
    /// A number with no unit.
    Bare,
    /// `mbps` style: tc reads bytes per second. Holds the value tc would use, in bit/s.
    BytesPerSecond { bits: u64, suggestion: String },
    /// A size unit where a rate is expected (`10mb`).
    SizeUnitInRate { suggestion: String },
    /// A suffix netqos does not know.
    UnknownSuffix {
        suffix: String,
        suggestion: Option<String>,
    },
    /// Too large to represent.
    TooLarge,
}

/// A parsed size and whether it used a bit unit (tc's binary reading applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub bit_unit: bool,
}

const RATE_UNITS: &[(&str, u128)] = &[
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
    ("kibit", 1 << 10),
    ("mibit", 1 << 20),
    ("gibit", 1 << 30),
    ("tibit", 1 << 40),
];

/// tc's byte-per-second suffixes, in bit/s.
const BYTE_RATE_UNITS: &[(&str, u128, &str)] = &[
    ("bps", 8, "bit"),
    ("kbps", 8_000, "kbit"),
    ("mbps", 8_000_000, "mbit"),
    ("gbps", 8_000_000_000, "gbit"),
    ("tbps", 8_000_000_000_000, "tbit"),
    ("kibps", 8 << 10, "kibit"),
    ("mibps", 8 << 20, "mibit"),
    ("gibps", 8 << 30, "gibit"),
];

const SIZE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

/// Bit units in a size, read the way tc reads them (binary, divided by 8), in 1/8 bytes.
const SIZE_BIT_UNITS: &[(&str, u128)] = &[
    ("bit", 1),
    ("kbit", 1 << 10),
    ("mbit", 1 << 20),
    ("gbit", 1 << 30),
    ("kibit", 1 << 10),
    ("mibit", 1 << 20),
    ("gibit", 1 << 30),
];

/// Splits `12.5mbit` into the number part and the suffix.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(end);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 || num.ends_with('.')
    {
        return None;
    }
    Some((num, suffix))
}

/// `num × mult`, exactly when possible, rounded down otherwise. None on overflow.
fn scale(num: &str, mult: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.len() > 24 || frac.len() > 12 {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let mut value = int.checked_mul(mult)?;
    if !frac.is_empty() {
        let f: u128 = frac.parse().ok()?;
        let denom = 10u128.pow(u32::try_from(frac.len()).ok()?);
        value = value.checked_add(f.checked_mul(mult)? / denom)?;
    }
    Some(value)
}

fn to_u64(v: u128) -> Result<u64, UnitError> {
    u64::try_from(v).map_err(|_| UnitError::TooLarge)
}

/// Parses a rate: `200mbit`, `1.5gbit`, `60%`.
pub fn parse_rate(text: &str) -> Result<RateSpec, UnitError> {
    let (num, suffix) = split_number(text).ok_or(UnitError::NotANumber)?;
    let lower = suffix.to_ascii_lowercase();
    if lower == "%" {
        let ppm = scale(num, 10_000).ok_or(UnitError::TooLarge)?;
        return Ok(RateSpec::Percent(to_u64(ppm)?));
    }
    if lower.is_empty() {
        return Err(UnitError::Bare);
    }
    if let Some((_, mult)) = RATE_UNITS.iter().find(|(u, _)| *u == lower) {
        return Ok(RateSpec::Bits(to_u64(
            scale(num, *mult).ok_or(UnitError::TooLarge)?,
        )?));
    }
    if let Some((_, mult, bit_unit)) = BYTE_RATE_UNITS.iter().find(|(u, _, _)| *u == lower) {
        let bits = to_u64(scale(num, *mult).ok_or(UnitError::TooLarge)?)?;
        return Err(UnitError::BytesPerSecond {
            bits,
            suggestion: format!("{num}{bit_unit}"),
        });
    }
    if SIZE_UNITS.iter().any(|(u, _)| *u == lower)
        || matches!(lower.as_str(), "k" | "m" | "g" | "t")
    {
        let unit = match lower.chars().next() {
            Some('k') => "kbit",
            Some('m') => "mbit",
            Some('g') => "gbit",
            Some('t') => "tbit",
            _ => "bit",
        };
        return Err(UnitError::SizeUnitInRate {
            suggestion: format!("{num}{unit}"),
        });
    }
    let suggestion = rate_suggestion(num, &lower);
    Err(UnitError::UnknownSuffix {
        suffix: suffix.to_string(),
        suggestion,
    })
}

fn rate_suggestion(num: &str, lower: &str) -> Option<String> {
    let stripped = lower
        .trim_end_matches("/s")
        .trim_end_matches("ps")
        .trim_end_matches('s');
    let unit = match stripped {
        "kbit" | "kb" | "kbi" | "kilobit" => "kbit",
        "mbit" | "mb" | "mbi" | "megabit" => "mbit",
        "gbit" | "gb" | "gbi" | "gigabit" => "gbit",
        "tbit" | "tb" | "terabit" => "tbit",
        "bit" | "b" => "bit",
        _ => return None,
    };
    Some(format!("{num}{unit}"))
}

/// Parses a size: `64kb`, `1514b`, `1mib`. Bit units are accepted the tc way and flagged.
pub fn parse_size(text: &str) -> Result<Size, UnitError> {
    let (num, suffix) = split_number(text).ok_or(UnitError::NotANumber)?;
    let lower = suffix.to_ascii_lowercase();
    if lower.is_empty() {
        return Err(UnitError::Bare);
    }
    if let Some((_, mult)) = SIZE_UNITS.iter().find(|(u, _)| *u == lower) {
        let bytes = to_u64(scale(num, *mult).ok_or(UnitError::TooLarge)?)?;
        return Ok(Size {
            bytes,
            bit_unit: false,
        });
    }
    if let Some((_, mult)) = SIZE_BIT_UNITS.iter().find(|(u, _)| *u == lower) {
        let eighths = scale(num, *mult).ok_or(UnitError::TooLarge)?;
        return Ok(Size {
            bytes: to_u64(eighths / 8)?,
            bit_unit: true,
        });
    }
    let suggestion = match lower.as_str() {
        "k" => Some(format!("{num}kib")),
        "m" => Some(format!("{num}mib")),
        "kbyte" | "kbytes" => Some(format!("{num}kb")),
        "bytes" | "byte" => Some(format!("{num}b")),
        _ => None,
    };
    Err(UnitError::UnknownSuffix {
        suffix: suffix.to_string(),
        suggestion,
    })
}

/// Parses a plain non-negative integer (prio, r2q, mtu, packets).
#[must_use]
pub fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a duration into microseconds: `50ms`, `200us`, `1s`.
pub fn parse_duration_us(text: &str) -> Result<u64, UnitError> {
    let (num, suffix) = split_number(text).ok_or(UnitError::NotANumber)?;
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "us" | "usec" => 1,
        "ms" | "msec" => 1_000,
        "s" | "sec" => 1_000_000,
        "" => return Err(UnitError::Bare),
        other => {
            return Err(UnitError::UnknownSuffix {
                suffix: other.to_string(),
                suggestion: Some(format!("{num}ms")),
            });
        }
    };
    to_u64(scale(num, mult).ok_or(UnitError::TooLarge)?)
}

/// Applies a percentage (in ppm) to a parent rate.
#[must_use]
pub fn percent_of(parent: u64, ppm: u64) -> u64 {
    let v = u128::from(parent) * u128::from(ppm) / 1_000_000;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Prints a percentage given in ppm: `60%`, `12.5%`.
#[must_use]
pub fn fmt_percent(ppm: u64) -> String {
    format!("{}%", trim_decimal(ppm, 10_000))
}

fn trim_decimal(value: u64, unit: u64) -> String {
    let int = value / unit;
    let rem = value % unit;
    if rem == 0 {
        return int.to_string();
    }
    // Up to three decimals, rounded, trailing zeros removed.
    let milli = (u128::from(rem) * 1000 + u128::from(unit) / 2) / u128::from(unit);
    if milli >= 1000 {
        return (int + 1).to_string();
    }
    let s = format!("{int}.{milli:03}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Prints a rate for people: `700 Mbit/s`, `1.5 Gbit/s`, `64 kbit/s`.
#[must_use]
pub fn fmt_rate(bits: u64) -> String {
    const STEPS: &[(u64, &str)] = &[
        (1_000_000_000_000_000, "Pbit/s"),
        (1_000_000_000_000, "Tbit/s"),
        (1_000_000_000, "Gbit/s"),
        (1_000_000, "Mbit/s"),
        (1_000, "kbit/s"),
    ];
    for (unit, name) in STEPS {
        if bits >= *unit {
            return format!("{} {name}", trim_decimal(bits, *unit));
        }
    }
    format!("{bits} bit/s")
}

/// Prints a size for people: `1514 B`, `64 KiB`, `1.5 MB`.
#[must_use]
pub fn fmt_size(bytes: u64) -> String {
    if bytes >= 1_000_000 && bytes.is_multiple_of(1_000_000) {
        format!("{} MB", bytes / 1_000_000)
    } else if bytes >= 10_000 && bytes.is_multiple_of(1000) {
        format!("{} kB", bytes / 1000)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else if bytes >= 1_000_000 {
        format!("{} MB", trim_decimal(bytes, 1_000_000))
    } else if bytes >= 10_000 {
        format!("{} kB", trim_decimal(bytes, 1_000))
    } else {
        format!("{bytes} B")
    }
}

/// Prints a duration given in microseconds.
#[must_use]
pub fn fmt_duration_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{} s", trim_decimal(us, 1_000_000))
    } else if us >= 1_000 {
        format!("{} ms", trim_decimal(us, 1_000))
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_every_unit() {
        assert_eq!(parse_rate("200mbit"), Ok(RateSpec::Bits(200_000_000)));
        assert_eq!(parse_rate("1Gbit"), Ok(RateSpec::Bits(1_000_000_000)));
        assert_eq!(parse_rate("1.5gbit"), Ok(RateSpec::Bits(1_500_000_000)));
        assert_eq!(parse_rate("10mibit"), Ok(RateSpec::Bits(10_485_760)));
        assert_eq!(parse_rate("60%"), Ok(RateSpec::Percent(600_000)));
        assert_eq!(parse_rate("12.5%"), Ok(RateSpec::Percent(125_000)));
    }

    #[test]
    fn refuses_byte_rates_bare_numbers_and_size_units() {
        assert!(matches!(
            parse_rate("100mbps"),
            Err(UnitError::BytesPerSecond {
                bits: 800_000_000,
                ..
            })
        ));
        assert_eq!(parse_rate("1000000"), Err(UnitError::Bare));
        assert!(matches!(
            parse_rate("10mb"),
            Err(UnitError::SizeUnitInRate { .. })
        ));
        assert!(matches!(
            parse_rate("10furlongs"),
            Err(UnitError::UnknownSuffix { .. })
        ));
        assert_eq!(
            parse_rate("99999999999999999999999tbit"),
            Err(UnitError::TooLarge)
        );
        assert_eq!(parse_rate("x"), Err(UnitError::NotANumber));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64kb").map(|s| s.bytes), Ok(64_000));
        assert_eq!(parse_size("64kib").map(|s| s.bytes), Ok(65_536));
        assert_eq!(
            parse_size("10kbit"),
            Ok(Size {
                bytes: 1280,
                bit_unit: true
            })
        );
        assert_eq!(parse_size("1600"), Err(UnitError::Bare));
    }

    #[test]
    fn printing() {
        assert_eq!(fmt_rate(700_000_000), "700 Mbit/s");
        assert_eq!(fmt_rate(1_500_000_000), "1.5 Gbit/s");
        assert_eq!(fmt_rate(999), "999 bit/s");
        assert_eq!(fmt_size(1514), "1514 B");
        assert_eq!(fmt_size(65_536), "64 KiB");
        assert_eq!(fmt_percent(600_000), "60%");
        assert_eq!(parse_duration_us("50ms"), Ok(50_000));
    }
}
