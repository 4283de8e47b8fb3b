//! Lowering: checked model → plan. Infallible; deterministic; ids come from the model.
//!
//! Bursts and quanta are computed so HTB reaches its rates without "quantum is big"
//! warnings; port ranges become minimal value/mask sets; each match line becomes u32
//! filters per address family, in source order.

pub mod hash;
pub mod pods;
mod ports;

pub use ports::port_masks;

use crate::model::{Cidr, Class, Direction, Interface, LeafQdisc, Match, Model, Pods, Proto};
use crate::plan::{
    ClassPlan, DevicePlan, End, Family, FilterAction, FilterPlan, Handle, HashTablePlan, LeafPlan,
    LeafQueue, Minor, Plan, Protocol, Root, SCHEMA, Selector, Tbf,
};

/// Filter priorities: IPv4 rules from 1, IPv6 rules from 30001, then the catch-all to a
/// default child. u32 numbers the nodes of one priority 800::800 … 800::fff and then wraps
/// to low numbers, which it would evaluate first: so at most `PER_PRIO` filters share a
/// priority, and the next ones take the next priority, keeping source order.
pub const PRIO_V4: u16 = 1;
pub const PRIO_V6: u16 = 30001;
pub const PRIO_CATCH_ALL: u16 = 60001;
pub const PER_PRIO: usize = 2000;

/// Lowers a checked model; long runs of address rules become u32 hash tables (`hash`).
pub fn lower(model: &Model) -> Plan {
    lower_with(model, true)
}

/// Lowers a checked model with every rule in a linear chain: the reference the hashed
/// lowering classifies exactly like (and the shape before hashing existed).
pub fn lower_linear(model: &Model) -> Plan {
    lower_with(model, false)
}

fn lower_with(model: &Model, hash: bool) -> Plan {
    Plan {
        schema: SCHEMA,
        devices: devices(model, hash),
        pod_rules: pods::pod_rules(model),
    }
}

/// The device plans of the interfaces, in order, on two threads for many classes
/// (`parallel`): each device's plan depends on its interface alone.
fn devices(model: &Model, hash: bool) -> Vec<DevicePlan> {
    devices_from(model, hash, crate::parallel::FROM)
}

/// [`devices`], on two threads from `parallel_from` classes.
fn devices_from(model: &Model, hash: bool, parallel_from: usize) -> Vec<DevicePlan> {
    let mut interfaces: Vec<&Interface> = model.interfaces.iter().collect();
    crate::parallel::map_in_two(
        &mut interfaces,
        &|i| count_classes(i),
        parallel_from,
        &|i| device(i, model.pods.as_ref(), hash),
    )
}

/// Classes of an interface, at every depth.
fn count_classes(i: &Interface) -> usize {
    fn below(c: &Class) -> usize {
        1 + c.children.iter().map(below).sum::<usize>()
    }
    i.classes.iter().map(below).sum()
}

/// Recommended burst: four packets or 1 ms of traffic, whichever is larger.
#[must_use]
pub fn burst_for(rate: u64, max_packet: u32) -> u64 {
    (4 * u64::from(max_packet)).max(rate / 8 / 1000)
}

/// Quantum: a tenth of a second's bytes like r2q 10, kept within one packet .. 200000.
#[must_use]
pub fn quantum_for(rate: u64, max_packet: u32) -> u32 {
    let q = (rate / 8 / 10).clamp(u64::from(max_packet), 200_000);
    u32::try_from(q).unwrap_or(200_000)
}

fn device(i: &Interface, pods: Option<&Pods>, hash: bool) -> DevicePlan {
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
    let mut out = Filters {
        hash,
        ..Filters::default()
    };
    for c in &i.classes {
        class(i, c, Handle::ROOT_CLASS, &mut classes);
    }
    // Ingress pod matches are u32 filters on the IFB; egress ones are nftables rules.
    let pods = pods.filter(|_| i.direction == Direction::Ingress);
    // The root's filters pick among top-level classes; each inner class picks among its
    // children, ending with a catch-all to its default child.
    group_filters(Handle::ROOT, &i.classes, None, pods, &mut out);
    for c in &i.classes {
        inner_filters(c, pods, &mut out);
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
        hash_tables: out.tables,
        filters: out.filters,
        line: i.line,
    }
}

/// The filters of one device being lowered, its hash tables and their ids.
#[derive(Default)]
struct Filters {
    filters: Vec<FilterPlan>,
    tables: Vec<HashTablePlan>,
    ids: hash::Ids,
    /// Whether long runs are hashed.
    hash: bool,
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

fn inner_filters(c: &Class, pods: Option<&Pods>, out: &mut Filters) {
    if c.is_leaf() {
        return;
    }
    let default = c.children.iter().find(|k| k.is_default);
    group_filters(Handle::class(c.minor), &c.children, default, pods, out);
    for k in &c.children {
        inner_filters(k, pods, out);
    }
}

/// The filters of one sibling group: on an ingress tree first every pod match of each
/// sibling's subtree (pod traffic is taken before any rule on outer addresses, and reaches
/// a class whose pod match fits however deep it is), then the outer matches in source
/// order, then the catch-all to the default sibling. Long runs of address rules become
/// hash tables (`hash`).
fn group_filters(
    parent: Handle,
    classes: &[Class],
    default: Option<&Class>,
    pods: Option<&Pods>,
    out: &mut Filters,
) {
    let mut entries = Vec::new();
    if let Some(pods) = pods {
        for c in classes {
            let mut found = Vec::new();
            pods::subtree(c, &mut found);
            for (_, m) in found {
                for k in pods::ingress_keys(m, pods) {
                    entries.push(hash::Entry {
                        v4: k.outer_v4,
                        keys: k.keys,
                        target: c.minor,
                        line: m.line,
                    });
                }
            }
        }
    }
    for c in classes {
        for m in c.matches.iter().filter(|m| m.pod.is_none()) {
            for (_, base, keys) in match_keys(m) {
                entries.push(hash::Entry {
                    v4: base == PRIO_V4,
                    keys,
                    target: c.minor,
                    line: m.line,
                });
            }
        }
    }
    place(parent, &entries, out);
    if let Some(d) = default {
        out.filters.push(FilterPlan {
            parent,
            protocol: Protocol::All,
            prio: PRIO_CATCH_ALL,
            ht: None,
            keys: vec![Selector::Any],
            action: FilterAction::Class {
                target: Handle::class(d.minor),
            },
            line: d.line,
        });
    }
}

/// The nodes of a group's rules in order, each family from its base priority, at most
/// `PER_PRIO` root nodes per priority (a hashed run is one root node, its tables in its
/// priority).
fn place(parent: Handle, entries: &[hash::Entry], out: &mut Filters) {
    let mut placed: Vec<Option<hash::Placed>> = (0..entries.len()).map(|_| None).collect();
    for v4 in [true, false] {
        let list: Vec<usize> = (0..entries.len())
            .filter(|&i| out.hash && entries[i].v4 == v4)
            .collect();
        for (i, p) in list.iter().zip(hash::decide(entries, &list, &mut out.ids)) {
            placed[*i] = Some(p);
        }
    }
    let (mut n4, mut n6) = (0usize, 0usize);
    let mut placer = hash::Placer {
        parent,
        filters: &mut out.filters,
        tables: &mut out.tables,
    };
    for (e, p) in entries.iter().zip(placed) {
        let (protocol, base, n) = if e.v4 {
            (Protocol::Ip, PRIO_V4, &mut n4)
        } else {
            (Protocol::Ipv6, PRIO_V6, &mut n6)
        };
        let prio = base.saturating_add(u16::try_from(*n / PER_PRIO).unwrap_or(u16::MAX));
        match p {
            Some(hash::Placed::Inside) => continue,
            Some(hash::Placed::Run(r)) => placer.run(&r, protocol, prio, entries, e.line),
            Some(hash::Placed::Linear) | None => placer.filters.push(FilterPlan {
                parent,
                protocol,
                prio,
                ht: None,
                keys: e.keys.clone(),
                action: FilterAction::Class {
                    target: Handle::class(e.target),
                },
                line: e.line,
            }),
        }
        *n += 1;
    }
}

/// The u32 key sets of one match line: the cross product of its alternatives, per family.
pub(crate) fn match_keys(m: &Match) -> Vec<(Protocol, u16, Vec<Selector>)> {
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

    #[test]
    fn interfaces_lowered_on_two_threads_are_the_ones_lowered_on_one() {
        let mut policies = vec![include_str!("../../examples/multi-interface.nq").to_string()];
        // Three interfaces of 2, 31 and 4 classes: the second thread lowers the third.
        let big = crate::testing::host_policy("1gbit", &[1, 30, 3], &crate::testing::host);
        policies.push(big);
        for text in policies {
            let checked = crate::check_source(&text, &crate::vars::ExternalVars::default());
            let model = checked.model.expect("valid");
            assert!(model.interfaces.len() >= 3);
            for hash in [true, false] {
                let one = devices_from(&model, hash, usize::MAX);
                for from in [0, 2, 20] {
                    assert_eq!(devices_from(&model, hash, from), one, "from {from}");
                }
            }
        }
    }
}
