//! Typed readers: an `Item` read as a rate, size, count, address, port or class id, with the
//! diagnostic that explains a wrong one.

use std::net::IpAddr;

use super::env::Item;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::model::{Cidr, PortRange, mask_bits};
use crate::units::{self, RateSpec, UnitError};

fn quoted(item: &Item, what: &str, diags: &mut Diagnostics) -> bool {
    if item.quoted {
        diags.push(
            item.label(
                Diagnostic::new(
                    Code::NQ057,
                    format!("quoted string \"{}\" where a {what} is expected", item.text),
                ),
                format!("expected a {what}"),
            )
            .help(format!("remove the quotes: `{}`", item.text)),
        );
    }
    item.quoted
}

/// A rate or percentage.
pub fn rate(item: &Item, diags: &mut Diagnostics) -> Option<RateSpec> {
    if quoted(item, "rate", diags) {
        return None;
    }
    let text = &item.text;
    let note = item.origin_note();
    let err = match units::parse_rate(text) {
        Ok(r) => return Some(r),
        Err(e) => e,
    };
    let d = match err {
        UnitError::BytesPerSecond { bits, suggestion } => Diagnostic::new(
            Code::NQ006,
            format!(
                "`{text}` means {} per second in tc ({}){note}",
                bytes_word(text),
                units::fmt_rate(bits)
            ),
        )
        .help(format!(
            "netqos rates are in bits: write `{suggestion}` for {}, or `{}` to keep {}",
            units::fmt_rate(bits / 8),
            bit_equivalent(bits),
            units::fmt_rate(bits)
        )),
        UnitError::Bare => Diagnostic::new(Code::NQ006, format!("rate `{text}` has no unit{note}"))
            .help(format!(
                "tc reads a bare number as bit/s, sizes as bytes; write the unit: `{text}bit`, `{text}kbit`, `{text}mbit`…"
            )),
        UnitError::SizeUnitInRate { suggestion } => Diagnostic::new(
            Code::NQ006,
            format!("`{text}` is a size, not a rate{note}"),
        )
        .help(format!("rates are bits per second: did you mean `{suggestion}`?")),
        UnitError::UnknownSuffix { suffix, suggestion } => {
            let d = Diagnostic::new(
                Code::NQ006,
                format!("unknown rate unit `{suffix}` in `{text}`{note}"),
            );
            match suggestion {
                Some(s) => d.help(format!("write `{s}`; units are bit kbit mbit gbit tbit, kibit mibit gibit tibit, or %")),
                None => d.help("units are bit kbit mbit gbit tbit (decimal), kibit mibit gibit tibit (binary), or % of the parent"),
            }
        }
        UnitError::TooLarge => Diagnostic::new(Code::NQ006, format!("rate `{text}` is too large{note}"))
            .help("rates must fit in 64 bits of bit/s"),
        UnitError::NotANumber => Diagnostic::new(
            Code::NQ006,
            format!("`{text}` is not a rate{note}"),
        )
        .help("write a number with a unit, e.g. `200mbit`, or a percentage of the parent, e.g. `60%`"),
    };
    diags.push(item.label(d, "expected a rate such as `200mbit`"));
    None
}

fn bytes_word(text: &str) -> &'static str {
    let l = text.to_ascii_lowercase();
    if l.ends_with("kbps") {
        "kilobytes"
    } else if l.ends_with("mbps") {
        "megabytes"
    } else if l.ends_with("gbps") {
        "gigabytes"
    } else if l.ends_with("tbps") {
        "terabytes"
    } else if l.ends_with("ibps") {
        "binary-prefixed bytes"
    } else {
        "bytes"
    }
}

fn bit_equivalent(bits: u64) -> String {
    for (unit, name) in [
        (1_000_000_000_000, "tbit"),
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bits >= unit && bits.is_multiple_of(unit) {
            return format!("{}{name}", bits / unit);
        }
    }
    format!("{bits}bit")
}

/// A size in bytes (`burst`, `cburst`, `limit`).
pub fn size(item: &Item, diags: &mut Diagnostics) -> Option<u64> {
    if quoted(item, "size", diags) {
        return None;
    }
    let text = &item.text;
    let note = item.origin_note();
    match units::parse_size(text) {
        Ok(s) if s.bit_unit => {
            diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ007,
                        format!(
                            "size `{text}` uses a bit unit: tc reads it as {}{note}",
                            units::fmt_size(s.bytes)
                        ),
                    ),
                    "a size in bits",
                )
                .help(format!(
                    "write sizes in bytes: `{}b`, or with kb/kib/mb/mib",
                    s.bytes
                )),
            );
            Some(s.bytes)
        }
        Ok(s) => Some(s.bytes),
        Err(UnitError::Bare) => {
            diags.push(
                item.label(
                    Diagnostic::new(Code::NQ007, format!("size `{text}` has no unit{note}"))
                        .severity(Severity::Error),
                    "expected a size such as `64kb`",
                )
                .help(format!(
                    "write the unit: `{text}b` for bytes, or kb (1000 B), kib (1024 B), mb, mib"
                )),
            );
            None
        }
        Err(e) => {
            let help = match e {
                UnitError::UnknownSuffix {
                    suggestion: Some(s),
                    ..
                } => format!(
                    "write `{s}`; size units are b kb mb gb (decimal) and kib mib gib (binary)"
                ),
                _ => "size units are b kb mb gb (decimal) and kib mib gib (binary)".to_string(),
            };
            diags.push(
                item.label(
                    Diagnostic::new(Code::NQ007, format!("`{text}` is not a size{note}"))
                        .severity(Severity::Error),
                    "expected a size such as `64kb`",
                )
                .help(help),
            );
            None
        }
    }
}

/// A plain integer in `lo..=hi`; `code` and `what` name the diagnostic.
pub fn count(
    item: &Item,
    what: &str,
    lo: u64,
    hi: u64,
    code: Code,
    diags: &mut Diagnostics,
) -> Option<u64> {
    if quoted(item, what, diags) {
        return None;
    }
    match units::parse_count(&item.text) {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        Some(n) => {
            diags.push(
                item.label(
                    Diagnostic::new(
                        code,
                        format!("{what} {n} is outside {lo}..{hi}{}", item.origin_note()),
                    ),
                    format!("must be {lo}..{hi}"),
                )
                .help(format!("use a value between {lo} and {hi}")),
            );
            None
        }
        None => {
            diags.push(
                item.label(
                    Diagnostic::new(
                        code,
                        format!(
                            "`{}` is not a valid {what}{}",
                            item.text,
                            item.origin_note()
                        ),
                    ),
                    format!("expected a whole number {lo}..{hi}"),
                )
                .help(format!("write a whole number between {lo} and {hi}")),
            );
            None
        }
    }
}

/// A duration in microseconds (tbf `latency`).
pub fn duration_us(item: &Item, diags: &mut Diagnostics) -> Option<u64> {
    match units::parse_duration_us(&item.text) {
        Ok(us) if us > 0 => Some(us),
        _ => {
            diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ020,
                        format!("`{}` is not a latency{}", item.text, item.origin_note()),
                    ),
                    "expected a duration such as `50ms`",
                )
                .help("write a positive duration with a unit: us, ms or s"),
            );
            None
        }
    }
}

/// An address or CIDR. Host bits set is NQ046, anything unreadable NQ053.
pub fn cidr(item: &Item, diags: &mut Diagnostics) -> Option<Cidr> {
    if quoted(item, "address", diags) {
        return None;
    }
    let text = &item.text;
    let note = item.origin_note();
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.as_str(), None),
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        diags.push(item.label(
            Diagnostic::new(Code::NQ053, format!("`{text}` is not an IP address{note}")),
            "expected an address or CIDR",
        )
        .help("write an IPv4 or IPv6 address, optionally with a prefix length: `10.0.0.10`, `10.42.0.0/16`, `fd00::/8`"));
        return None;
    };
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => width,
        Some(p) => match units::parse_count(p) {
            Some(n) if n <= u64::from(width) => u8::try_from(n).unwrap_or(width),
            _ => {
                diags.push(
                    item.label(
                        Diagnostic::new(
                            Code::NQ053,
                            format!("`/{p}` is not a valid prefix length for `{addr_text}`{note}"),
                        ),
                        format!("prefix must be 0..{width}"),
                    )
                    .help(format!(
                        "an {} prefix length is 0..{width}",
                        if width == 32 { "IPv4" } else { "IPv6" }
                    )),
                );
                return None;
            }
        },
    };
    let network = mask_bits(addr, prefix);
    let value = mask_bits(addr, width);
    if network != value {
        let net = from_bits(addr, network);
        diags.push(item.label(
            Diagnostic::new(
                Code::NQ046,
                format!("`{text}` has host bits set; its network is {net}/{prefix}{note}"),
            ),
            "host bits set",
        )
        .help(format!(
            "write `{net}/{prefix}` for the network, or `{addr_text}/{width}` (or just `{addr_text}`) for the one host"
        )));
        return None;
    }
    Some(Cidr { addr, prefix })
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(u32::try_from(bits).unwrap_or(0))),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(bits)),
    }
}

/// A port or port range.
pub fn port_range(item: &Item, diags: &mut Diagnostics) -> Option<PortRange> {
    if quoted(item, "port", diags) {
        return None;
    }
    let text = &item.text;
    let note = item.origin_note();
    let (lo_t, hi_t) = text.split_once('-').unwrap_or((text, text));
    let parse = |t: &str| units::parse_count(t).filter(|n| (1..=65535).contains(n));
    match (parse(lo_t), parse(hi_t)) {
        (Some(lo), Some(hi)) if lo <= hi => Some(PortRange {
            lo: u16::try_from(lo).unwrap_or(1),
            hi: u16::try_from(hi).unwrap_or(65535),
        }),
        (Some(lo), Some(hi)) => {
            diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ047,
                        format!("port range `{text}` runs backwards ({lo} > {hi}){note}"),
                    ),
                    "reversed range",
                )
                .help(format!("write the low port first: `{hi}-{lo}`")),
            );
            None
        }
        _ => {
            diags.push(
                item.label(
                    Diagnostic::new(Code::NQ054, format!("`{text}` is not a valid port{note}")),
                    "expected a port 1..65535 or a range like 2379-2380",
                )
                .help("ports are whole numbers from 1 to 65535; ranges are written `LOW-HIGH`"),
            );
            None
        }
    }
}

/// An explicit class id: `10`, `0x10`, `1:10` (hex, like tc). Returns the minor.
pub fn class_id(item: &Item, diags: &mut Diagnostics) -> Option<u16> {
    let text = item.text.as_str();
    let (major, minor_text) = match text.split_once(':') {
        Some((maj, min)) => (Some(maj), min),
        None => (None, text),
    };
    let bad = |why: String, diags: &mut Diagnostics| {
        diags.push(item.label(
            Diagnostic::new(Code::NQ004, format!("class id `{text}` {why}")),
            "invalid class id",
        )
        .help("write a hexadecimal minor between 2 and ffff (1:1 is the root class), e.g. `id 10` or `id 1:10`"));
        None
    };
    if let Some(maj) = major
        && u32::from_str_radix(maj, 16).ok() != Some(1)
    {
        return bad(
            format!("has major `{maj}`; netqos's HTB qdisc is always handle 1:"),
            diags,
        );
    }
    let digits = minor_text
        .strip_prefix("0x")
        .or_else(|| minor_text.strip_prefix("0X"))
        .unwrap_or(minor_text);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("is not a hexadecimal number".to_string(), diags);
    }
    let value = u32::from_str_radix(digits, 16).unwrap_or(u32::MAX);
    if value == 0 {
        return bad(
            "is 0, which aliases the qdisc itself (traffic to X:0 is unshaped)".to_string(),
            diags,
        );
    }
    if value == 1 {
        return bad("is 1, which is netqos's root class 1:1".to_string(), diags);
    }
    if value > 0xfffe {
        return bad(
            format!(
                "is 0x{value:x}; the largest usable minor is 0xfffe (a leaf's queue takes the handle MINOR:, and ffff: belongs to the ingress qdisc)"
            ),
            diags,
        );
    }
    if major.is_none()
        && digits == minor_text
        && digits.len() >= 2
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        let decimal: u32 = digits.parse().unwrap_or(0);
        diags.push(item.label(
            Diagnostic::new(
                Code::NQ003,
                format!("class id `{text}` is read as hexadecimal 0x{digits} = {value}, not decimal {decimal}"),
            ),
            format!("means 1:{digits} (minor {value})"),
        )
        .help(format!(
            "write `0x{digits}` to say so; if you meant decimal {decimal}, write `0x{decimal:x}`"
        )));
    }
    u16::try_from(value).ok()
}
