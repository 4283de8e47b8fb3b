//! The plan's u32 match selectors as the 32-bit keys `tc` would send for them: same
//! offsets, same order, keys at the same offset merged (iproute2's `pack_key`).
//!
//! Infallible: a [`Selector`] is typed, so there is no text to read back. The selectors of
//! one filter name different header fields (lowering makes them so), so merging two keys at
//! one offset never has to reconcile two values for the same bits.

use std::net::IpAddr;

use crate::apply::model::Key;
use crate::plan::{End, Family, Selector};

/// The keys of one filter's selectors, in tc's order.
pub fn encode(selectors: &[Selector]) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    for s in selectors {
        one(*s, &mut keys);
    }
    keys
}

/// Adds `val`/`mask` at the word `off` (a multiple of 4), merged into an earlier key there.
fn pack(keys: &mut Vec<Key>, val: u32, mask: u32, off: i32) {
    let val = val & mask;
    if let Some(k) = keys.iter_mut().find(|k| k.off == off && k.offmask == 0) {
        k.val |= val;
        k.mask |= mask;
        return;
    }
    keys.push(Key {
        mask,
        val,
        off,
        offmask: 0,
    });
}

/// A byte at `off`.
fn pack8(keys: &mut Vec<Key>, val: u8, mask: u8, off: i32) {
    let shift = 24 - 8 * (off & 3);
    pack(
        keys,
        u32::from(val) << shift,
        u32::from(mask) << shift,
        off & !3,
    );
}

/// A 16-bit word at the even offset `off`.
fn pack16(keys: &mut Vec<Key>, val: u16, mask: u16, off: i32) {
    let shift = if off & 3 == 0 { 16 } else { 0 };
    pack(
        keys,
        u32::from(val) << shift,
        u32::from(mask) << shift,
        off & !3,
    );
}

/// The top `bits` bits of a word set (0 to 32).
fn prefix_mask(bits: u32) -> u32 {
    u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0)
}

fn one(sel: Selector, keys: &mut Vec<Key>) {
    match sel {
        Selector::U8 { value, mask, at } => pack8(keys, value, mask, i32::from(at)),
        Selector::U16 { value, mask, at } => pack16(keys, value, mask, i32::from(at)),
        Selector::U32 { value, mask, at } => pack(keys, value, mask, i32::from(at)),
        Selector::Any => pack(keys, 0, 0, 0),
        Selector::Ipv4NoOptions => pack8(keys, 0x05, 0x0f, 0),
        Selector::Ipv4FirstFragment => pack16(keys, 0x0000, 0x1fff, 6),
        Selector::Protocol { family, number } => {
            let off = match family {
                Family::V4 => 9,
                Family::V6 => 6,
            };
            pack8(keys, number, 0xff, off);
        }
        Selector::Port {
            family,
            end,
            value,
            mask,
        } => {
            let off = match (family, end) {
                (Family::V4, End::Src) => 20,
                (Family::V4, End::Dst) => 22,
                (Family::V6, End::Src) => 40,
                (Family::V6, End::Dst) => 42,
            };
            pack16(keys, value, mask, off);
        }
        Selector::Addr { end, cidr } => {
            let plen = u32::from(cidr.prefix);
            match cidr.addr {
                IpAddr::V4(a) => {
                    let off = if end == End::Src { 12 } else { 16 };
                    pack(keys, u32::from(a), prefix_mask(plen), off);
                }
                IpAddr::V6(a) => {
                    let base = if end == End::Src { 8 } else { 24 };
                    let o = a.octets();
                    for (i, off) in (0..4u32).zip((base..).step_by(4)) {
                        let lo = i * 32;
                        if lo >= plen {
                            break;
                        }
                        let at = 4 * i as usize;
                        let word = u32::from_be_bytes([o[at], o[at + 1], o[at + 2], o[at + 3]]);
                        pack(keys, word, prefix_mask(plen - lo), off);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cidr;

    fn k(mask: u32, val: u32, off: i32) -> Key {
        Key {
            mask,
            val,
            off,
            offmask: 0,
        }
    }

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    fn port(end: End, value: u16, mask: u16) -> Selector {
        Selector::Port {
            family: Family::V4,
            end,
            value,
            mask,
        }
    }

    #[test]
    fn ports_share_one_key_like_tc() {
        let keys = encode(&[port(End::Src, 1024, 0xfc00), port(End::Dst, 443, 0xffff)]);
        assert_eq!(keys, vec![k(0xfc00_ffff, 0x0400_01bb, 20)]);
    }

    #[test]
    fn addresses_protocol_and_raw_matches() {
        let keys = encode(&[
            Selector::Protocol {
                family: Family::V4,
                number: 6,
            },
            Selector::Addr {
                end: End::Dst,
                cidr: cidr("10.1.0.0/16"),
            },
            Selector::Ipv4NoOptions,
            Selector::Ipv4FirstFragment,
        ]);
        assert_eq!(
            keys,
            vec![
                k(0x00ff_0000, 0x0006_0000, 8),
                k(0xffff_0000, 0x0a01_0000, 16),
                k(0x0f00_0000, 0x0500_0000, 0),
                k(0x0000_1fff, 0, 4),
            ]
        );
        assert_eq!(encode(&[Selector::Any]), vec![k(0, 0, 0)]);
    }

    #[test]
    fn ipv6_prefix_spans_words() {
        let keys = encode(&[Selector::Addr {
            end: End::Src,
            cidr: cidr("fd00:1::/40"),
        }]);
        assert_eq!(
            keys,
            vec![k(u32::MAX, 0xfd00_0001, 8), k(0xff00_0000, 0, 12)]
        );
    }

    #[test]
    fn whole_and_empty_prefixes() {
        let any = encode(&[Selector::Addr {
            end: End::Src,
            cidr: cidr("0.0.0.0/0"),
        }]);
        assert_eq!(any, vec![k(0, 0, 12)]);
        let host = encode(&[Selector::Addr {
            end: End::Dst,
            cidr: cidr("fd00::1/128"),
        }]);
        assert_eq!(host.len(), 4);
        assert_eq!(host[3], k(u32::MAX, 1, 36));
        assert!(
            encode(&[Selector::Addr {
                end: End::Src,
                cidr: cidr("::/0")
            }])
            .is_empty()
        );
    }
}
