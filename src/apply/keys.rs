//! The plan's u32 match selectors (`ip dst 10.0.0.0/8`, `ip dport 2379 0xffff`, `u8 0x05
//! 0x0f at 0`, …) as the 32-bit keys `tc` would send for them: same offsets, same order,
//! keys at the same offset merged (iproute2's `pack_key`).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::apply::model::Key;

/// Encodes the selectors of one filter; an error names the selector it cannot read.
pub fn encode(selectors: &[String]) -> Result<Vec<Key>, String> {
    let mut keys: Vec<Key> = Vec::new();
    for s in selectors {
        one(s, &mut keys).map_err(|e| format!("u32 selector `{s}`: {e}"))?;
    }
    Ok(keys)
}

fn pack(keys: &mut Vec<Key>, val: u32, mask: u32, off: i32) -> Result<(), String> {
    let val = val & mask;
    if let Some(k) = keys.iter_mut().find(|k| k.off == off && k.offmask == 0) {
        if (k.val ^ val) & (k.mask & mask) != 0 {
            return Err("contradicts an earlier match at the same offset".into());
        }
        k.val |= val;
        k.mask |= mask;
        return Ok(());
    }
    if off % 4 != 0 {
        return Err(format!("offset {off} is not a multiple of 4"));
    }
    keys.push(Key {
        mask,
        val,
        off,
        offmask: 0,
    });
    Ok(())
}

fn pack8(keys: &mut Vec<Key>, val: u32, mask: u32, off: i32) -> Result<(), String> {
    if val > 0xff || mask > 0xff {
        return Err("value or mask wider than 8 bits".into());
    }
    let shift = 24 - 8 * (off & 3);
    pack(keys, val << shift, mask << shift, off & !3)
}

fn pack16(keys: &mut Vec<Key>, val: u32, mask: u32, off: i32) -> Result<(), String> {
    if val > 0xffff || mask > 0xffff {
        return Err("value or mask wider than 16 bits".into());
    }
    if off % 2 != 0 {
        return Err(format!("offset {off} is odd"));
    }
    let shift = if off & 3 == 0 { 16 } else { 0 };
    pack(keys, val << shift, mask << shift, off & !3)
}

fn num(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a number"))
}

fn one(sel: &str, keys: &mut Vec<Key>) -> Result<(), String> {
    let w: Vec<&str> = sel.split_whitespace().collect();
    match w.as_slice() {
        ["u32", v, m] => pack(keys, num(v)?, num(m)?, 0),
        ["u32", v, m, "at", o] => pack(keys, num(v)?, num(m)?, off(o)?),
        ["u16", v, m, "at", o] => pack16(keys, num(v)?, num(m)?, off(o)?),
        ["u8", v, m, "at", o] => pack8(keys, num(v)?, num(m)?, off(o)?),
        ["ip", "protocol", v, m] => pack8(keys, num(v)?, num(m)?, 9),
        ["ip6", "protocol", v, m] => pack8(keys, num(v)?, num(m)?, 6),
        ["ip", "sport", v, m] => pack16(keys, num(v)?, num(m)?, 20),
        ["ip", "dport", v, m] => pack16(keys, num(v)?, num(m)?, 22),
        ["ip6", "sport", v, m] => pack16(keys, num(v)?, num(m)?, 40),
        ["ip6", "dport", v, m] => pack16(keys, num(v)?, num(m)?, 42),
        ["ip", dir @ ("src" | "dst"), cidr] => {
            let (addr, plen) = prefix(cidr)?;
            let a: Ipv4Addr = addr.parse().map_err(|_| format!("`{addr}` is not IPv4"))?;
            if plen > 32 {
                return Err(format!("prefix /{plen} longer than 32"));
            }
            let mask = if plen == 0 {
                0
            } else {
                u32::MAX << (32 - plen)
            };
            pack(
                keys,
                u32::from(a),
                mask,
                if *dir == "src" { 12 } else { 16 },
            )
        }
        ["ip6", dir @ ("src" | "dst"), cidr] => {
            let (addr, plen) = prefix(cidr)?;
            let a: Ipv6Addr = addr.parse().map_err(|_| format!("`{addr}` is not IPv6"))?;
            if plen > 128 {
                return Err(format!("prefix /{plen} longer than 128"));
            }
            let base = if *dir == "src" { 8 } else { 24 };
            let words = a.octets();
            for i in 0..4u32 {
                let lo = i * 32;
                if lo >= plen {
                    break;
                }
                let bits = (plen - lo).min(32);
                let mask = if bits == 32 {
                    u32::MAX
                } else {
                    u32::MAX << (32 - bits)
                };
                let at = 4 * i as usize;
                let word =
                    u32::from_be_bytes([words[at], words[at + 1], words[at + 2], words[at + 3]]);
                pack(keys, word, mask, base + 4 * i as i32)?;
            }
            Ok(())
        }
        _ => Err("not a selector netqos generates".into()),
    }
}

fn off(s: &str) -> Result<i32, String> {
    let v = num(s)?;
    i32::try_from(v).map_err(|_| format!("offset {v} too large"))
}

fn prefix(cidr: &str) -> Result<(&str, u32), String> {
    match cidr.split_once('/') {
        Some((a, p)) => Ok((a, p.parse().map_err(|_| format!("bad prefix in `{cidr}`"))?)),
        None => Ok((cidr, if cidr.contains(':') { 128 } else { 32 })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(mask: u32, val: u32, off: i32) -> Key {
        Key {
            mask,
            val,
            off,
            offmask: 0,
        }
    }

    #[test]
    fn ports_share_one_key_like_tc() {
        let keys = encode(&[
            "ip sport 1024 0xfc00".to_string(),
            "ip dport 443 0xffff".to_string(),
        ])
        .unwrap();
        assert_eq!(keys, vec![k(0xfc00_ffff, 0x0400_01bb, 20)]);
    }

    #[test]
    fn addresses_protocol_and_raw_matches() {
        let keys = encode(&[
            "ip protocol 6 0xff".into(),
            "ip dst 10.1.0.0/16".into(),
            "u8 0x05 0x0f at 0".into(),
            "u16 0x0000 0x1fff at 6".into(),
        ])
        .unwrap();
        assert_eq!(
            keys,
            vec![
                k(0x00ff_0000, 0x0006_0000, 8),
                k(0xffff_0000, 0x0a01_0000, 16),
                k(0x0f00_0000, 0x0500_0000, 0),
                k(0x0000_1fff, 0, 4),
            ]
        );
        assert_eq!(encode(&["u32 0 0".into()]).unwrap(), vec![k(0, 0, 0)]);
    }

    #[test]
    fn ipv6_prefix_spans_words() {
        let keys = encode(&["ip6 src fd00:1::/40".into()]).unwrap();
        assert_eq!(
            keys,
            vec![k(u32::MAX, 0xfd00_0001, 8), k(0xff00_0000, 0, 12)]
        );
    }

    #[test]
    fn unknown_selectors_are_errors_not_panics() {
        for bad in [
            "",
            "ip dst",
            "ip dst 300.0.0.1/8",
            "u8 0x100 0xff at 0",
            "tcp dport 1",
        ] {
            assert!(encode(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
