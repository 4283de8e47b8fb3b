//! Lowering: checked model → plan. Infallible; deterministic; ids come from the model.
//!
//! Bursts and quanta are computed so HTB reaches its rates without "quantum is big"
//! warnings; port ranges become minimal value/mask sets; each match line becomes u32
//! filters per address family, in source order.

mod ports;

pub use ports::port_masks;

use crate::model::{Cidr, Class, Interface, LeafQdisc, Match, Model, Proto};
use crate::plan::{
    ClassPlan, DevicePlan, End, Family, FilterPlan, Handle, LeafPlan, LeafQueue, Minor, Plan,
    Protocol, Root, SCHEMA, Selector, Tbf,
};

/// Filter priorities: IPv4 rules from 1, IPv6 rules from 30001, then the catch-all to a
/// default child. u32 numbers the nodes of one priority 800::800 … 800::fff and then wraps
/// to low numbers, which it would evaluate first: so at most `PER_PRIO` filters share a
/// priority, and the next ones take the next priority, keeping source order.
pub const PRIO_V4: u16 = 1;
pub const PRIO_V6: u16 = 30001;
pub const PRIO_CATCH_ALL: u16 = 60001;
pub const PER_PRIO: usize = 2000;

/// Lowers a checked model.
pub fn lower(model: &Model) -> Plan {
    Plan {
        schema: SCHEMA,
        devices: model.interfaces.iter().map(device).collect(),
    }
}

/// Recommended burst: four packets or 1 ms of traffic, whichever is larger.
pub fn burst_for(rate: u64, max_packet: u32) -> u64 {
    (4 * u64::from(max_packet)).max(rate / 8 / 1000)
}

/// Quantum: a tenth of a second's bytes like r2q 10, kept within one packet .. 200000.
pub fn quantum_for(rate: u64, max_packet: u32) -> u32 {
    let q = (rate / 8 / 10).clamp(u64::from(max_packet), 200_000);
    u32::try_from(q).unwrap_or(200_000)
}

fn device(i: &Interface) -> DevicePlan {
    let shaped = i.ifb.clone().unwrap_or_else(|| i.device.clone());
    let mut classes = vec![ClassPlan {
        name: String::new(),
        classid: Handle::ROOT_CLASS,
        parent: Handle::ROOT,
        rate: i.rate,
        ceil: i.rate,
        burst: i.burst.unwrap_or_else(|| burst_for(i.rate, i.max_packet)),
        cburst: i.cburst.unwrap_or_else(|| burst_for(i.rate, i.max_packet)),
        // Explicit, so the kernel does not derive (and warn about) one from r2q.
        quantum: i.r2q.is_none().then(|| quantum_for(i.rate, i.max_packet)),
        prio: 0,
        leaf: None,
        line: i.line,
        matches: Vec::new(),
        is_default: false,
    }];
    let mut filters = Vec::new();
    for c in &i.classes {
        class(i, c, Handle::ROOT_CLASS, &mut classes);
    }
    // The root's filters pick among top-level classes; each inner class picks among its
    // children, ending with a catch-all to its default child.
    group_filters(Handle::ROOT, &i.classes, None, &mut filters);
    for c in &i.classes {
        inner_filters(c, &mut filters);
    }
    DevicePlan {
        device: i.device.clone(),
        direction: i.direction,
        shaped_device: shaped,
        ifb: i.ifb.clone(),
        root: Root {
            handle: Handle::ROOT,
            default: Minor(i.default_minor),
            r2q: i.r2q,
            direct_qlen: 1000,
        },
        classes,
        filters,
        line: i.line,
    }
}

fn class(i: &Interface, c: &Class, parent: Handle, out: &mut Vec<ClassPlan>) {
    let classid = Handle::class(c.minor);
    let quantum = c
        .quantum
        .or_else(|| i.r2q.is_none().then(|| quantum_for(c.rate, i.max_packet)));
    out.push(ClassPlan {
        name: c.path.clone(),
        classid,
        parent,
        rate: c.rate,
        ceil: c.ceil,
        burst: c.burst.unwrap_or_else(|| burst_for(c.rate, i.max_packet)),
        cburst: c.cburst.unwrap_or_else(|| burst_for(c.ceil, i.max_packet)),
        quantum,
        prio: c.prio,
        leaf: c.is_leaf().then(|| leaf(c, i.max_packet)),
        line: c.line,
        matches: c
            .matches
            .iter()
            .map(|m| (crate::diff::fmt_match(m), m.line))
            .collect(),
        is_default: c.is_default,
    });
    for child in &c.children {
        class(i, child, classid, out);
    }
}

fn leaf(c: &Class, max_packet: u32) -> LeafPlan {
    let queue = match &c.qdisc {
        // 100 ms at the class rate, never under ten full packets.
        None => LeafQueue::Bfifo {
            limit: Some((c.rate / 8 / 10).max(10 * u64::from(max_packet))),
        },
        Some(LeafQdisc::Pfifo { limit_packets }) => LeafQueue::Pfifo {
            limit: *limit_packets,
        },
        Some(LeafQdisc::Bfifo { limit_bytes }) => LeafQueue::Bfifo {
            limit: *limit_bytes,
        },
        Some(LeafQdisc::FqCodel { limit_packets }) => LeafQueue::FqCodel {
            limit: *limit_packets,
        },
        Some(LeafQdisc::Sfq { limit_packets }) => LeafQueue::Sfq {
            limit: *limit_packets,
        },
        Some(LeafQdisc::Tbf {
            rate,
            burst,
            limit_bytes,
            latency_us,
            peakrate,
        }) => LeafQueue::Tbf(Tbf {
            rate: *rate,
            burst: *burst,
            limit: *limit_bytes,
            latency_us: *latency_us,
            peak: peakrate.map(|p| (p, max_packet)),
        }),
    };
    LeafPlan {
        handle: Handle::new(c.minor, 0),
        queue,
    }
}

fn inner_filters(c: &Class, out: &mut Vec<FilterPlan>) {
    if c.is_leaf() {
        return;
    }
    let default = c.children.iter().find(|k| k.is_default);
    group_filters(Handle::class(c.minor), &c.children, default, out);
    for k in &c.children {
        inner_filters(k, out);
    }
}

fn group_filters(
    parent: Handle,
    classes: &[Class],
    default: Option<&Class>,
    out: &mut Vec<FilterPlan>,
) {
    let (mut n4, mut n6) = (0usize, 0usize);
    for c in classes {
        for m in &c.matches {
            for (protocol, base, keys) in match_keys(m) {
                let n = if base == PRIO_V4 { &mut n4 } else { &mut n6 };
                let chunk = u16::try_from(*n / PER_PRIO).unwrap_or(u16::MAX);
                *n += 1;
                out.push(FilterPlan {
                    parent,
                    protocol,
                    prio: base.saturating_add(chunk),
                    keys,
                    target: Handle::class(c.minor),
                    line: m.line,
                });
            }
        }
    }
    if let Some(d) = default {
        out.push(FilterPlan {
            parent,
            protocol: Protocol::All,
            prio: PRIO_CATCH_ALL,
            keys: vec![Selector::Any],
            target: Handle::class(d.minor),
            line: d.line,
        });
    }
}

/// The u32 key sets of one match line: the cross product of its alternatives, per family.
fn match_keys(m: &Match) -> Vec<(Protocol, u16, Vec<Selector>)> {
    let protos: Vec<Option<Proto>> = match (m.proto, m.sport.is_some() || m.dport.is_some()) {
        (Some(p), _) => vec![Some(p)],
        (None, true) => vec![Some(Proto::Tcp), Some(Proto::Udp)],
        (None, false) => vec![None],
    };
    let mut out = Vec::new();
    for family in families(m) {
        let alts = Alternatives {
            protos: &protos,
            srcs: addrs(m.src.as_deref(), family),
            dsts: addrs(m.dst.as_deref(), family),
            sports: port_alts(m.sport.as_deref()),
            dports: port_alts(m.dport.as_deref()),
        };
        let (protocol, prio) = match family {
            Family::V4 => (Protocol::Ip, PRIO_V4),
            Family::V6 => (Protocol::Ipv6, PRIO_V6),
        };
        alts.each(|one| out.push((protocol, prio, one.selectors(family))));
    }
    out
}

/// The alternatives of one match line in one family.
struct Alternatives<'a> {
    protos: &'a [Option<Proto>],
    srcs: Vec<Option<Cidr>>,
    dsts: Vec<Option<Cidr>>,
    sports: Vec<Option<(u16, u16)>>,
    dports: Vec<Option<(u16, u16)>>,
}

/// One combination of the alternatives: one u32 filter.
struct OneMatch {
    proto: Option<Proto>,
    src: Option<Cidr>,
    dst: Option<Cidr>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

impl Alternatives<'_> {
    /// Calls `f` with each combination, in source order (protocol, source, destination,
    /// source port, destination port).
    fn each(&self, mut f: impl FnMut(OneMatch)) {
        for &proto in self.protos {
            for &src in &self.srcs {
                for &dst in &self.dsts {
                    for &sport in &self.sports {
                        for &dport in &self.dports {
                            f(OneMatch {
                                proto,
                                src,
                                dst,
                                sport,
                                dport,
                            });
                        }
                    }
                }
            }
        }
    }
}

impl OneMatch {
    fn selectors(&self, family: Family) -> Vec<Selector> {
        let mut keys = Vec::new();
        if let Some(p) = self.proto {
            let number = match (p, family) {
                (Proto::Icmp, Family::V6) => 58,
                (p, _) => p.number(),
            };
            keys.push(Selector::Protocol { family, number });
        }
        for (end, cidr) in [(End::Src, self.src), (End::Dst, self.dst)] {
            if let Some(cidr) = cidr {
                keys.push(Selector::Addr { end, cidr });
            }
        }
        if self.sport.is_some() || self.dport.is_some() {
            if family == Family::V4 {
                // Fixed port offsets assume a 20-byte header and a first fragment: require
                // both, so other packets fall through instead of being misread.
                keys.extend([Selector::Ipv4NoOptions, Selector::Ipv4FirstFragment]);
            }
            for (end, port) in [(End::Src, self.sport), (End::Dst, self.dport)] {
                if let Some((value, mask)) = port {
                    keys.push(Selector::Port {
                        family,
                        end,
                        value,
                        mask,
                    });
                }
            }
        }
        if keys.is_empty() {
            keys.push(Selector::Any);
        }
        keys
    }
}

/// Which families a match applies to: those every address list has an address of.
fn families(m: &Match) -> Vec<Family> {
    let mut v4 = true;
    let mut v6 = true;
    for list in [&m.src, &m.dst].into_iter().flatten() {
        v4 &= list.iter().any(Cidr::is_v4);
        v6 &= list.iter().any(|c| !c.is_v4());
    }
    [(v4, Family::V4), (v6, Family::V6)]
        .into_iter()
        .filter_map(|(yes, f)| yes.then_some(f))
        .collect()
}

fn addrs(list: Option<&[Cidr]>, family: Family) -> Vec<Option<Cidr>> {
    match list {
        None => vec![None],
        Some(l) => l
            .iter()
            .filter(|c| c.is_v4() == (family == Family::V4))
            .map(|c| Some(*c))
            .collect(),
    }
}

fn port_alts(list: Option<&[crate::model::PortRange]>) -> Vec<Option<(u16, u16)>> {
    match list {
        None => vec![None],
        Some(l) => l
            .iter()
            .flat_map(|r| port_masks(r.lo, r.hi))
            .map(Some)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quanta_and_bursts_stay_in_kernel_ranges() {
        assert_eq!(quantum_for(1_000, 1514), 1514);
        assert_eq!(quantum_for(100_000_000, 1514), 200_000);
        assert_eq!(burst_for(1_000_000, 1514), 6056);
        assert_eq!(burst_for(10_000_000_000, 1514), 1_250_000);
    }
}
