//! Checks of classification: which packets each `match` line can take, given that sibling
//! matches are tried in source order and the first one wins (NQ022, NQ023, NQ032, NQ049,
//! NQ060).

use std::collections::HashMap;

use super::build::{ClassDraft, IfaceDraft, MatchDraft};
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Cidr, Match, PortRange, Proto, mask_bits};
use crate::units::fmt_rate;

/// Protocols a match can take: an explicit one, tcp/udp when it names ports, else all.
fn protos(m: &Match) -> Option<Vec<Proto>> {
    match (m.proto, m.sport.is_some() || m.dport.is_some()) {
        (Some(p), _) => Some(vec![p]),
        (None, true) => Some(vec![Proto::Tcp, Proto::Udp]),
        (None, false) => None,
    }
}

fn covers_protos(a: &Match, b: &Match) -> bool {
    match (protos(a), protos(b)) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(pa), Some(pb)) => pb.iter().all(|p| pa.contains(p)),
    }
}

fn covers_addrs(a: &Option<Vec<Cidr>>, b: &Option<Vec<Cidr>>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|x| a.iter().any(|y| y.contains(x))),
    }
}

fn covers_ports(a: &Option<Vec<PortRange>>, b: &Option<Vec<PortRange>>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.iter().all(|x| a.iter().any(|y| y.contains(x))),
    }
}

/// Whether every packet `b` matches is also matched by `a`. Pod-side matches (`pods`,
/// `pod …`) are tried before any outer one, so neither kind covers the other; between two
/// pod matches the pod-side addresses stand for the addresses.
#[must_use]
pub fn covers(a: &Match, b: &Match) -> bool {
    match (&a.pod, &b.pod) {
        (None, None) => {}
        (Some(pa), Some(pb)) => {
            return covers_protos(a, b)
                && covers_addrs(&pa.src, &pb.src)
                && covers_addrs(&pa.dst, &pb.dst)
                && covers_ports(&a.sport, &b.sport)
                && covers_ports(&a.dport, &b.dport);
        }
        _ => return false,
    }
    covers_protos(a, b)
        && covers_addrs(&a.src, &b.src)
        && covers_addrs(&a.dst, &b.dst)
        && covers_ports(&a.sport, &b.sport)
        && covers_ports(&a.dport, &b.dport)
        && covers_families(a, b)
}

/// Families a match can see: those of its addresses (src and dst together), else both.
fn families(m: &Match) -> (bool, bool) {
    let mut v4 = true;
    let mut v6 = true;
    for list in [&m.src, &m.dst].into_iter().flatten() {
        v4 &= list.iter().any(Cidr::is_v4);
        v6 &= list.iter().any(|c| !c.is_v4());
    }
    (v4, v6)
}

fn covers_families(a: &Match, b: &Match) -> bool {
    let (a4, a6) = families(a);
    let (b4, b6) = families(b);
    (a4 || !b4) && (a6 || !b6)
}

/// Whether some packet could match both. A pod-side match and an outer one may always
/// meet (an encapsulated or masqueraded packet has both headers).
#[must_use]
pub fn overlaps(a: &Match, b: &Match) -> bool {
    if a.pod.is_some() || b.pod.is_some() {
        if let (Some(pa), Some(pb)) = (&a.pod, &b.pod) {
            let outer = |p: &crate::model::PodMatch, m: &Match| Match {
                src: p.src.clone(),
                dst: p.dst.clone(),
                pod: None,
                ..m.clone()
            };
            return overlaps(&outer(pa, a), &outer(pb, b));
        }
        return true;
    }
    let protos_meet = match (protos(a), protos(b)) {
        (Some(pa), Some(pb)) => pa.iter().any(|p| pb.contains(p)),
        _ => true,
    };
    let addrs = |x: &Option<Vec<Cidr>>, y: &Option<Vec<Cidr>>| match (x, y) {
        (Some(x), Some(y)) => x.iter().any(|c| y.iter().any(|d| c.overlaps(d))),
        _ => true,
    };
    let ports = |x: &Option<Vec<PortRange>>, y: &Option<Vec<PortRange>>| match (x, y) {
        (Some(x), Some(y)) => x.iter().any(|c| y.iter().any(|d| c.overlaps(d))),
        _ => true,
    };
    let (a4, a6) = families(a);
    let (b4, b6) = families(b);
    protos_meet
        && addrs(&a.src, &b.src)
        && addrs(&a.dst, &b.dst)
        && ports(&a.sport, &b.sport)
        && ports(&a.dport, &b.dport)
        && ((a4 && b4) || (a6 && b6))
}

/// Finds, for each match of a sibling group in order, an earlier match covering it.
/// Indexes earlier matches by address prefix so large groups stay near-linear.
struct CoverIndex {
    no_addr: Vec<usize>,
    by_src: HashMap<(bool, u128, u8), Vec<usize>>,
    by_dst: HashMap<(bool, u128, u8), Vec<usize>>,
    /// The prefix lengths present in `by_src` / `by_dst`, per family (IPv4 first): a
    /// lookup tries only those, not every length up to the address's own.
    src_lengths: [Lengths; 2],
    dst_lengths: [Lengths; 2],
}

/// A set of prefix lengths 0..=128.
#[derive(Default, Clone, Copy)]
struct Lengths([u64; 3]);

impl Lengths {
    fn insert(&mut self, p: u8) {
        let p = usize::from(p.min(128));
        self.0[p / 64] |= 1 << (p % 64);
    }

    fn contains(self, p: u8) -> bool {
        let p = usize::from(p.min(128));
        self.0[p / 64] & (1 << (p % 64)) != 0
    }
}

impl CoverIndex {
    fn new() -> Self {
        CoverIndex {
            no_addr: Vec::new(),
            by_src: HashMap::new(),
            by_dst: HashMap::new(),
            src_lengths: [Lengths::default(); 2],
            dst_lengths: [Lengths::default(); 2],
        }
    }

    fn key(c: &Cidr) -> (bool, u128, u8) {
        (c.is_v4(), mask_bits(c.addr, c.prefix), c.prefix)
    }

    fn insert(&mut self, idx: usize, m: &Match) {
        if m.src.is_none() && m.dst.is_none() {
            self.no_addr.push(idx);
            return;
        }
        if let Some(d) = &m.dst {
            for c in d {
                self.dst_lengths[usize::from(!c.is_v4())].insert(c.prefix);
                self.by_dst.entry(Self::key(c)).or_default().push(idx);
            }
        } else if let Some(s) = &m.src {
            for c in s {
                self.src_lengths[usize::from(!c.is_v4())].insert(c.prefix);
                self.by_src.entry(Self::key(c)).or_default().push(idx);
            }
        }
    }

    /// Earlier matches that could cover `m` (a superset of those that do).
    fn candidates(&self, m: &Match) -> Vec<usize> {
        let mut out = self.no_addr.clone();
        let lookup = |map: &HashMap<(bool, u128, u8), Vec<usize>>,
                      lengths: &[Lengths; 2],
                      list: &Option<Vec<Cidr>>,
                      out: &mut Vec<usize>| {
            if let Some(first) = list.as_ref().and_then(|l| l.first()) {
                let width = if first.is_v4() { 32 } else { 128 };
                let lengths = lengths[usize::from(!first.is_v4())];
                for p in (0..=first.prefix.min(width)).filter(|p| lengths.contains(*p)) {
                    let key = (first.is_v4(), mask_bits(first.addr, p), p);
                    if let Some(v) = map.get(&key) {
                        out.extend_from_slice(v);
                    }
                }
            }
        };
        lookup(&self.by_dst, &self.dst_lengths, &m.dst, &mut out);
        lookup(&self.by_src, &self.src_lengths, &m.src, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// NQ023 (shadowed by a sibling) and NQ060 (redundant within a class) for one group.
fn shadowing(group: &[ClassDraft], diags: &mut Diagnostics) {
    let flat: Vec<(&ClassDraft, &MatchDraft)> = group
        .iter()
        .flat_map(|c| c.matches.iter().map(move |m| (c, m)))
        .collect();
    let mut index = CoverIndex::new();
    for (bi, (bc, bm)) in flat.iter().enumerate() {
        let cover = index
            .candidates(&bm.m)
            .into_iter()
            .find(|&ai| covers(&flat[ai].1.m, &bm.m));
        if let Some(ai) = cover {
            let (ac, am) = flat[ai];
            if ac.path == bc.path {
                diags.push(
                    Diagnostic::new(
                        Code::NQ060,
                        format!("match line of class `{}` adds nothing: an earlier line of the same class covers it", bc.name),
                    )
                    .label(bm.span, "redundant")
                    .label(am.span, "already matches all of it")
                    .help("remove the redundant line"),
                );
            } else {
                diags.push(
                    Diagnostic::new(
                        Code::NQ023,
                        format!(
                            "match of class `{}` can never be hit: the earlier match of class `{}` takes all of its packets",
                            bc.name, ac.name
                        ),
                    )
                    .label(bm.span, "unreachable rule")
                    .label(am.span, format!("`{}` matches first", ac.name))
                    .help(format!(
                        "matches are tried in source order: move class `{}` before `{}`, or narrow `{}`'s match",
                        bc.name, ac.name, ac.name
                    )),
                );
            }
        }
        index.insert(bi, &bm.m);
    }
}

/// NQ049: a child whose matches cannot meet its parent's.
fn unreachable_children(parent: &ClassDraft, diags: &mut Diagnostics) {
    if parent.matches.is_empty() {
        return;
    }
    for child in &parent.children {
        for cm in &child.matches {
            if !parent.matches.iter().any(|pm| overlaps(&pm.m, &cm.m)) {
                let mut d = Diagnostic::new(
                    Code::NQ049,
                    format!(
                        "match of class `{}` can never be hit: no packet selected by its parent `{}` fits it",
                        child.name, parent.name
                    ),
                )
                .label(cm.span, "outside the parent's traffic");
                if let Some(pm) = parent.matches.first() {
                    d = d.label(pm.span, format!("`{}` only takes this", parent.name));
                }
                diags.push(d.help(format!(
                    "a child only sees what its parent's matches select: widen `{}`'s match or move `{}` out of it",
                    parent.name, child.name
                )));
            }
        }
    }
}

fn groups(classes: &[ClassDraft], diags: &mut Diagnostics) {
    shadowing(classes, diags);
    for c in classes {
        if !c.children.is_empty() {
            unreachable_children(c, diags);
            groups(&c.children, diags);
        }
    }
}

fn find_minor(classes: &[ClassDraft], minor: u16) -> Option<&ClassDraft> {
    for c in classes {
        if c.minor == minor {
            return Some(c);
        }
        if let Some(x) = find_minor(&c.children, minor) {
            return Some(x);
        }
    }
    None
}

/// A default class is starved below 1 Mbit/s or 1 % of the interface.
fn starved(rate: u64, iface_rate: u64) -> bool {
    rate < 1_000_000 || rate.saturating_mul(100) < iface_rate
}

/// Control-plane ports that must never sit in a starved default.
const CONTROL_PLANE: &[(Proto, u16, &str)] = &[
    (Proto::Tcp, 6443, "API server"),
    (Proto::Tcp, 2379, "etcd client"),
    (Proto::Tcp, 2380, "etcd peer"),
    (Proto::Tcp, 10250, "kubelet"),
    (Proto::Tcp, 9345, "RKE2 supervisor"),
    (Proto::Tcp, 22, "ssh"),
    (Proto::Udp, 8472, "flannel VXLAN"),
    (Proto::Udp, 53, "DNS"),
    (Proto::Tcp, 53, "DNS"),
];

/// Whether some top-level match could take a packet of `proto` to port `port`, sent from
/// an ephemeral port (Linux's default range) to or from any address.
fn may_take(classes: &[ClassDraft], proto: Proto, port: u16) -> bool {
    let probe = Match {
        proto: Some(proto),
        dport: Some(vec![PortRange { lo: port, hi: port }]),
        sport: Some(vec![PortRange {
            lo: 32768,
            hi: 60999,
        }]),
        ..Match::default()
    };
    classes
        .iter()
        .flat_map(|c| c.matches.iter())
        .filter(|m| m.m.pod.is_none())
        .any(|m| overlaps(&m.m, &probe))
}

/// All classification checks of one interface.
pub fn check(i: &IfaceDraft, default: Option<u16>, diags: &mut Diagnostics) {
    groups(&i.classes, diags);
    let (Some(minor), Some(rate)) = (default, i.rate.as_ref()) else {
        return;
    };
    let Some(def) = find_minor(&i.classes, minor) else {
        return;
    };
    let Some(def_rate) = def.rate.as_ref().map(|r| r.v) else {
        return;
    };
    if !starved(def_rate, rate.v) {
        return;
    }
    let dev = i.device.as_ref().map_or("?", |d| d.text.as_str());
    let left: Vec<String> = CONTROL_PLANE
        .iter()
        .filter(|(p, port, _)| !may_take(&i.classes, *p, *port))
        .map(|(p, port, what)| format!("{} {port} ({what})", p.as_str()))
        .collect();
    if !left.is_empty() {
        diags.push(
            Diagnostic::new(
                Code::NQ032,
                format!(
                    "control-plane traffic on `{dev}` would share default class `{}` ({}): {}",
                    def.name,
                    fmt_rate(def_rate),
                    left.join(", ")
                ),
            )
            .label(def.rate.as_ref().map_or(def.head, |r| r.span), "starved default")
            .label(i.head, "no class selects these ports")
            .help("add a protected class (prio 0) matching the control-plane ports, or raise the default's rate to at least 1 Mbit/s and 1 % of the link"),
        );
    }
    let mut v4 = false;
    let mut v6 = false;
    for c in &i.classes {
        c.walk(&mut |c| {
            for m in &c.matches {
                for list in [&m.m.src, &m.m.dst].into_iter().flatten() {
                    v4 |= list.iter().any(Cidr::is_v4);
                    v6 |= list.iter().any(|c| !c.is_v4());
                }
            }
        });
    }
    if v4 != v6 {
        let (has, lacks) = if v4 {
            ("IPv4", "IPv6")
        } else {
            ("IPv6", "IPv4")
        };
        diags.push(
            Diagnostic::new(
                Code::NQ022,
                format!(
                    "all address matches on `{dev}` are {has}: ARP, {lacks} and everything unmatched land in default `{}` at {}",
                    def.name,
                    fmt_rate(def_rate)
                ),
            )
            .label(def.rate.as_ref().map_or(def.head, |r| r.span), "starved default")
            .help(format!(
                "raise the default's rate to at least 1 Mbit/s and 1 % of the link, or add {lacks} addresses to the matches that need them"
            )),
        );
    }
}
