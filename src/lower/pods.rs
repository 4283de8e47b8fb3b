//! Pod-side matches (`pods`, `pod src|dst`) lowered so pod traffic is classified by the
//! packet the pod sent or receives, before encapsulation or NAT (`research/overlay.md`):
//!
//! * egress: nftables rules in netqos's table set `skb->priority` to the class id where the
//!   pod's packet is forwarded (the `output` hook too for `pod dst` alone: the host's packets
//!   to pods). The priority stays on the skb through VXLAN encapsulation and SNAT, and HTB
//!   takes a packet whose priority names one of its classes there before any filter.
//! * ingress: the IFB sees arriving packets before netfilter, so u32 keys read the inner
//!   header of VXLAN packets to the overlay's port (inner IP at byte 50 behind an outer IPv4
//!   header without options, 70 behind IPv6; addresses are not 4-byte aligned there, so
//!   each is 16-bit keys), plus the same match on plain routed pod packets.
//!
//! Rules are ordered so a class's pod matches come before its ancestors' (the deepest class
//! that fits wins), sibling subtrees in source order, the first rule that fits decides.

use crate::model::{Cidr, Class, Direction, Interface, Match, Model, Overlay, Pods, Proto};
use crate::plan::{End, Family, Hook, PodRule, PodRules, Protocol, Selector};

/// The nftables table netqos owns (family `inet`).
pub const TABLE: &str = "netqos";

/// Every pod match of the subtree of `c` with the class it selects: children's subtrees
/// first (source order), then `c`'s own lines.
pub fn subtree<'a>(c: &'a Class, out: &mut Vec<(&'a Class, &'a Match)>) {
    for k in &c.children {
        subtree(k, out);
    }
    for m in &c.matches {
        if m.pod.is_some() {
            out.push((c, m));
        }
    }
}

fn all_pod_matches(i: &Interface) -> Vec<(&Class, &Match)> {
    let mut out = Vec::new();
    for c in &i.classes {
        subtree(c, &mut out);
    }
    out
}

/// Transport protocols a match names: its own, tcp and udp when it has ports, else any.
fn protos(m: &Match) -> Vec<Proto> {
    match (m.proto, m.sport.is_some() || m.dport.is_some()) {
        (Some(p), _) => vec![p],
        (None, true) => vec![Proto::Tcp, Proto::Udp],
        (None, false) => Vec::new(),
    }
}

/// The families (IPv4, IPv6) whose addresses can satisfy both lists.
fn families(src: &Option<Vec<Cidr>>, dst: &Option<Vec<Cidr>>) -> Vec<bool> {
    [true, false]
        .into_iter()
        .filter(|&v4| {
            [src, dst]
                .into_iter()
                .flatten()
                .all(|l| l.iter().any(|c| c.is_v4() == v4))
        })
        .collect()
}

fn of_family(list: &Option<Vec<Cidr>>, v4: bool) -> Vec<Cidr> {
    list.as_ref().map_or_else(Vec::new, |l| {
        l.iter().filter(|c| c.is_v4() == v4).copied().collect()
    })
}

/// The egress rules of the policy: from the one egress interface with pod matches (NQ094
/// allows no second), `None` when there is none.
pub fn pod_rules(model: &Model) -> Option<PodRules> {
    let pods = model.pods.as_ref()?;
    let iface = model
        .interfaces
        .iter()
        .find(|i| i.direction == Direction::Egress && !all_pod_matches(i).is_empty())?;
    let mut rules = Vec::new();
    for (class, m) in all_pod_matches(iface) {
        egress_rules(m, class.minor, pods, &mut rules);
    }
    let mut clear_on: Vec<String> = model
        .interfaces
        .iter()
        .filter(|i| i.direction == Direction::Egress && i.device != iface.device)
        .map(|i| i.device.clone())
        .collect();
    clear_on.sort();
    clear_on.dedup();
    Some(PodRules {
        table: TABLE.to_string(),
        device: iface.device.clone(),
        rules,
        clear_on,
    })
}

fn egress_rules(m: &Match, minor: u16, pods: &Pods, out: &mut Vec<PodRule>) {
    let Some(pod) = &m.pod else { return };
    let (src, dst) = pod.resolved(Direction::Egress, &pods.cidr);
    // Packets a pod sends are forwarded; packets to pods may also come from the host.
    let hooks: &[Hook] = if src.is_some() {
        &[Hook::Forward]
    } else {
        &[Hook::Forward, Hook::Output]
    };
    for &hook in hooks {
        for v4 in families(&src, &dst) {
            out.push(PodRule {
                hook,
                family: if v4 { "ip" } else { "ip6" },
                saddr: of_family(&src, v4),
                daddr: of_family(&dst, v4),
                protos: protos(m),
                sport: m.sport.clone().unwrap_or_default(),
                dport: m.dport.clone().unwrap_or_default(),
                classid: crate::plan::Handle::class(minor),
                line: m.line,
            });
        }
    }
}

/// One filter's selectors for an ingress pod match, with the outer family (true = IPv4).
pub struct IngressKeys {
    pub outer_v4: bool,
    pub keys: Vec<Selector>,
}

/// The u32 selector sets of an ingress pod match: for a VXLAN overlay, the inner header of
/// packets to its port behind an outer IPv4 and an outer IPv6 header; then the pod packet
/// itself, as routed pod traffic arrives.
pub fn ingress_keys(m: &Match, pods: &Pods) -> Vec<IngressKeys> {
    let Some(pod) = &m.pod else {
        return Vec::new();
    };
    let (src, dst) = pod.resolved(Direction::Ingress, &pods.cidr);
    let mut out = Vec::new();
    for inner_v4 in families(&src, &dst) {
        let srcs = alternatives(&src, inner_v4);
        let dsts = alternatives(&dst, inner_v4);
        let mut proto_alts: Vec<Option<Proto>> = protos(m).into_iter().map(Some).collect();
        if proto_alts.is_empty() {
            proto_alts.push(None);
        }
        let sports = port_alts(&m.sport);
        let dports = port_alts(&m.dport);
        let mut inner = Vec::new();
        for p in &proto_alts {
            for s in &srcs {
                for d in &dsts {
                    for sp in &sports {
                        for dp in &dports {
                            inner.push(Inner {
                                v4: inner_v4,
                                proto: *p,
                                src: *s,
                                dst: *d,
                                sport: *sp,
                                dport: *dp,
                            });
                        }
                    }
                }
            }
        }
        if let Overlay::Vxlan { port } = pods.overlay {
            for outer_v4 in [true, false] {
                for x in &inner {
                    let mut keys = vxlan_prefix(outer_v4, port, inner_v4);
                    x.keys(if outer_v4 { 50 } else { 70 }, &mut keys);
                    out.push(IngressKeys { outer_v4, keys });
                }
            }
        }
    }
    // The pod packet itself (routed pod traffic): the same match on its own header.
    let plain = Match {
        src,
        dst,
        pod: None,
        ..m.clone()
    };
    for (protocol, _, keys) in super::match_keys(&plain) {
        out.push(IngressKeys {
            outer_v4: protocol == Protocol::Ip,
            keys,
        });
    }
    out
}

fn alternatives(list: &Option<Vec<Cidr>>, v4: bool) -> Vec<Option<Cidr>> {
    match list {
        None => vec![None],
        Some(_) => of_family(list, v4).into_iter().map(Some).collect(),
    }
}

fn port_alts(list: &Option<Vec<crate::model::PortRange>>) -> Vec<Option<(u16, u16)>> {
    match list {
        None => vec![None],
        Some(l) => l
            .iter()
            .flat_map(|r| super::port_masks(r.lo, r.hi))
            .map(Some)
            .collect(),
    }
}

/// Outer header of a VXLAN packet to `port` carrying an inner IPv4 (or IPv6) packet: outer
/// IPv4 without options and not a later fragment, or IPv6 with UDP as next header; UDP
/// destination port; the inner Ethernet type (at 14 + 8 + 8 + 12 behind the outer IP).
fn vxlan_prefix(outer_v4: bool, port: u16, inner_v4: bool) -> Vec<Selector> {
    let ethertype = if inner_v4 { 0x0800 } else { 0x86dd };
    let (family, at) = if outer_v4 {
        (Family::V4, 48)
    } else {
        (Family::V6, 68)
    };
    let mut keys = Vec::new();
    if outer_v4 {
        keys.extend([Selector::Ipv4NoOptions, Selector::Ipv4FirstFragment]);
    }
    keys.extend([
        Selector::Protocol { family, number: 17 },
        Selector::Port {
            family,
            end: End::Dst,
            value: port,
            mask: 0xffff,
        },
        Selector::U16 {
            value: ethertype,
            mask: 0xffff,
            at,
        },
    ]);
    keys
}

/// The pod packet's fields of one filter.
struct Inner {
    v4: bool,
    proto: Option<Proto>,
    src: Option<Cidr>,
    dst: Option<Cidr>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

impl Inner {
    /// Selectors for this packet's IP header at byte `base` behind the outer headers.
    fn keys(&self, base: u16, out: &mut Vec<Selector>) {
        let (proto_at, src_at, dst_at, ports_at) = if self.v4 {
            (base + 9, base + 12, base + 16, base + 20)
        } else {
            (base + 6, base + 8, base + 24, base + 40)
        };
        if let Some(p) = self.proto {
            let n = match (p, self.v4) {
                (Proto::Icmp, false) => 58,
                (p, _) => p.number(),
            };
            out.push(Selector::U8 {
                value: n,
                mask: 0xff,
                at: proto_at,
            });
        }
        for (c, at) in [(self.src, src_at), (self.dst, dst_at)] {
            if let Some(c) = c {
                addr_keys(&c, at, out);
            }
        }
        if self.sport.is_some() || self.dport.is_some() {
            if self.v4 {
                // Fixed port offsets need a 20-byte header and a first fragment.
                out.push(Selector::U8 {
                    value: 0x05,
                    mask: 0x0f,
                    at: base,
                });
                out.push(Selector::U16 {
                    value: 0,
                    mask: 0x1fff,
                    at: base + 6,
                });
            }
            for (p, at) in [(self.sport, ports_at), (self.dport, ports_at + 2)] {
                if let Some((value, mask)) = p {
                    out.push(Selector::U16 { value, mask, at });
                }
            }
        }
    }
}

/// A prefix at byte `at` as 16-bit keys (u32 keys must be 4-byte aligned, and inner
/// addresses behind a VXLAN header are not); words the prefix does not cover are skipped.
fn addr_keys(c: &Cidr, at: u16, out: &mut Vec<Selector>) {
    let bytes: Vec<u8> = match c.addr {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let prefix = usize::from(c.prefix);
    for (i, pair) in (0u16..).zip(bytes.chunks(2)) {
        let bits = prefix.saturating_sub(16 * usize::from(i)).min(16);
        if bits == 0 {
            break;
        }
        let mask = (0xffff_u32 << (16 - bits)) as u16;
        let value = u16::from_be_bytes([pair[0], pair[1]]) & mask;
        out.push(Selector::U16 {
            value,
            mask,
            at: at + 2 * i,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s
            .split_once('/')
            .unwrap_or((s, if s.contains(':') { "128" } else { "32" }));
        Cidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    #[test]
    fn inner_addresses_are_16_bit_keys_at_the_measured_offsets() {
        let text = |v: &[Selector]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let mut out = Vec::new();
        addr_keys(&cidr("10.42.0.5"), 66, &mut out);
        let out = text(&out);
        assert_eq!(out, ["u16 0x0a2a 0xffff at 66", "u16 0x0005 0xffff at 68"]);
        let mut out = Vec::new();
        addr_keys(&cidr("10.42.3.0/24"), 62, &mut out);
        let out = text(&out);
        assert_eq!(out, ["u16 0x0a2a 0xffff at 62", "u16 0x0300 0xff00 at 64"]);
        let mut out = Vec::new();
        addr_keys(&cidr("10.42.0.0/16"), 62, &mut out);
        let out = text(&out);
        assert_eq!(out, ["u16 0x0a2a 0xffff at 62"]);
        let mut out = Vec::new();
        addr_keys(&cidr("fd42::/20"), 74, &mut out);
        let out = text(&out);
        assert_eq!(out, ["u16 0xfd42 0xffff at 74", "u16 0x0000 0xf000 at 76"]);
    }

    #[test]
    fn every_key_encodes_as_u32_keys() {
        let m = Match {
            proto: Some(Proto::Tcp),
            dport: Some(vec![crate::model::PortRange { lo: 443, hi: 443 }]),
            pod: Some(crate::model::PodMatch {
                any: true,
                src: Some(vec![cidr("10.42.1.0/24")]),
                dst: None,
            }),
            ..Match::default()
        };
        let pods = Pods {
            cidr: vec![cidr("10.42.0.0/16")],
            overlay: Overlay::Vxlan { port: 8472 },
            ..Pods::default()
        };
        let sets = ingress_keys(&m, &pods);
        assert_eq!(sets.len(), 3);
        let first: Vec<String> = sets[0].keys.iter().map(ToString::to_string).collect();
        assert_eq!(
            first,
            [
                "u8 0x05 0x0f at 0",
                "u16 0x0000 0x1fff at 6",
                "ip protocol 17 0xff",
                "ip dport 8472 0xffff",
                "u16 0x0800 0xffff at 48",
                "u8 0x06 0xff at 59",
                "u16 0x0a2a 0xffff at 62",
                "u16 0x0100 0xff00 at 64",
                "u16 0x0a2a 0xffff at 66",
                "u8 0x05 0x0f at 50",
                "u16 0x0000 0x1fff at 56",
                "u16 0x01bb 0xffff at 72",
            ]
        );
        for s in &sets {
            assert!(!crate::apply::keys::encode(&s.keys).is_empty());
        }
    }
}
