//! Lowering: checked model → plan. Infallible; deterministic; ids come from the model.
//!
//! Bursts and quanta are computed so HTB reaches its rates without "quantum is big"
//! warnings; port ranges become minimal value/mask sets; each match line becomes u32
//! filters per address family, in source order.

pub mod pods;
mod ports;

pub use ports::port_masks;

use crate::model::{Cidr, Class, Direction, Interface, LeafQdisc, Match, Model, Pods, Proto};
use crate::plan::{ClassPlan, DevicePlan, FilterPlan, LeafPlan, Plan, Root, SCHEMA};

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
        devices: model
            .interfaces
            .iter()
            .map(|i| device(i, model.pods.as_ref()))
            .collect(),
        pod_rules: pods::pod_rules(model),
    }
}

fn hex(minor: u16) -> String {
    format!("1:{minor:x}")
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

fn device(i: &Interface, pods: Option<&Pods>) -> DevicePlan {
    let shaped = i.ifb.clone().unwrap_or_else(|| i.device.clone());
    let mut classes = vec![ClassPlan {
        name: String::new(),
        classid: "1:1".to_string(),
        parent: "1:".to_string(),
        rate: i.rate,
        ceil: i.rate,
        burst: i.burst.unwrap_or_else(|| burst_for(i.rate, i.max_packet)),
        cburst: i.cburst.unwrap_or_else(|| burst_for(i.rate, i.max_packet)),
        // Explicit, so the kernel does not derive (and warn about) one from r2q.
        quantum: i.r2q.is_none().then(|| quantum_for(i.rate, i.max_packet)),
        prio: 0,
        leaf: None,
        line: i.line,
    }];
    let mut filters = Vec::new();
    for c in &i.classes {
        class(i, c, "1:1", &mut classes);
    }
    // Ingress pod matches are u32 filters on the IFB; egress ones are nftables rules.
    let pods = pods.filter(|_| i.direction == Direction::Ingress);
    // The root's filters pick among top-level classes; each inner class picks among its
    // children, ending with a catch-all to its default child.
    group_filters("1:", &i.classes, None, pods, &mut filters);
    for c in &i.classes {
        inner_filters(c, pods, &mut filters);
    }
    DevicePlan {
        device: i.device.clone(),
        direction: i.direction,
        shaped_device: shaped,
        ifb: i.ifb.clone(),
        root: Root {
            handle: "1:".to_string(),
            default: format!("{:x}", i.default_minor),
            r2q: i.r2q,
            direct_qlen: 1000,
        },
        classes,
        filters,
        line: i.line,
    }
}

fn class(i: &Interface, c: &Class, parent: &str, out: &mut Vec<ClassPlan>) {
    let classid = hex(c.minor);
    let quantum = c
        .quantum
        .or_else(|| i.r2q.is_none().then(|| quantum_for(c.rate, i.max_packet)));
    out.push(ClassPlan {
        name: c.path.clone(),
        classid: classid.clone(),
        parent: parent.to_string(),
        rate: c.rate,
        ceil: c.ceil,
        burst: c.burst.unwrap_or_else(|| burst_for(c.rate, i.max_packet)),
        cburst: c.cburst.unwrap_or_else(|| burst_for(c.ceil, i.max_packet)),
        quantum,
        prio: c.prio,
        leaf: c.is_leaf().then(|| leaf(c, i.max_packet)),
        line: c.line,
    });
    for child in &c.children {
        class(i, child, &classid, out);
    }
}

fn leaf(c: &Class, max_packet: u32) -> LeafPlan {
    let handle = format!("{:x}:", c.minor);
    let (kind, args) = match &c.qdisc {
        None => (
            "bfifo",
            // 100 ms at the class rate, never under ten full packets.
            vec![
                "limit".to_string(),
                (c.rate / 8 / 10)
                    .max(10 * u64::from(max_packet))
                    .to_string(),
            ],
        ),
        Some(LeafQdisc::Pfifo { limit_packets }) => {
            ("pfifo", limit_args(limit_packets.map(u64::from)))
        }
        Some(LeafQdisc::Bfifo { limit_bytes }) => ("bfifo", limit_args(*limit_bytes)),
        Some(LeafQdisc::FqCodel { limit_packets }) => {
            ("fq_codel", limit_args(limit_packets.map(u64::from)))
        }
        Some(LeafQdisc::Sfq { limit_packets }) => ("sfq", limit_args(limit_packets.map(u64::from))),
        Some(LeafQdisc::Tbf {
            rate,
            burst,
            limit_bytes,
            latency_us,
            peakrate,
        }) => {
            let mut a = vec![
                "rate".into(),
                format!("{rate}bit"),
                "burst".into(),
                format!("{burst}b"),
            ];
            if let Some(l) = limit_bytes {
                a.extend(["limit".into(), format!("{l}b")]);
            }
            if let Some(t) = latency_us {
                a.extend(["latency".into(), format!("{t}us")]);
            }
            if let Some(p) = peakrate {
                a.extend([
                    "peakrate".into(),
                    format!("{p}bit"),
                    "mtu".into(),
                    max_packet.to_string(),
                ]);
            }
            ("tbf", a)
        }
    };
    LeafPlan {
        handle,
        kind: kind.to_string(),
        args,
    }
}

fn limit_args(limit: Option<u64>) -> Vec<String> {
    limit.map_or_else(Vec::new, |l| vec!["limit".to_string(), l.to_string()])
}

fn inner_filters(c: &Class, pods: Option<&Pods>, out: &mut Vec<FilterPlan>) {
    if c.is_leaf() {
        return;
    }
    let default = c.children.iter().find(|k| k.is_default);
    group_filters(&hex(c.minor), &c.children, default, pods, out);
    for k in &c.children {
        inner_filters(k, pods, out);
    }
}

/// The filters of one sibling group: on an ingress tree first every pod match of each
/// sibling's subtree (pod traffic is taken before any rule on outer addresses, and reaches
/// a class whose pod match fits however deep it is), then the outer matches in source
/// order, then the catch-all to the default sibling.
fn group_filters(
    parent: &str,
    classes: &[Class],
    default: Option<&Class>,
    pods: Option<&Pods>,
    out: &mut Vec<FilterPlan>,
) {
    let (mut n4, mut n6) = (0usize, 0usize);
    let mut push =
        |v4: bool, keys: Vec<String>, target: u16, line: usize, out: &mut Vec<FilterPlan>| {
            let (protocol, base, n) = if v4 {
                ("ip", PRIO_V4, &mut n4)
            } else {
                ("ipv6", PRIO_V6, &mut n6)
            };
            let chunk = u16::try_from(*n / PER_PRIO).unwrap_or(u16::MAX);
            *n += 1;
            out.push(FilterPlan {
                parent: parent.to_string(),
                protocol: protocol.to_string(),
                prio: base.saturating_add(chunk),
                keys,
                target: hex(target),
                line,
            });
        };
    if let Some(pods) = pods {
        for c in classes {
            let mut found = Vec::new();
            pods::subtree(c, &mut found);
            for (_, m) in found {
                for k in pods::ingress_keys(m, pods) {
                    push(k.outer_v4, k.keys, c.minor, m.line, out);
                }
            }
        }
    }
    for c in classes {
        for m in c.matches.iter().filter(|m| m.pod.is_none()) {
            for (_, base, keys) in match_keys(m) {
                push(base == PRIO_V4, keys, c.minor, m.line, out);
            }
        }
    }
    if let Some(d) = default {
        out.push(FilterPlan {
            parent: parent.to_string(),
            protocol: "all".to_string(),
            prio: PRIO_CATCH_ALL,
            keys: vec!["u32 0 0".to_string()],
            target: hex(d.minor),
            line: d.line,
        });
    }
}

/// The u32 key sets of one match line: the cross product of its alternatives, per family.
fn match_keys(m: &Match) -> Vec<(&'static str, u16, Vec<String>)> {
    let protos: Vec<Option<Proto>> = match (m.proto, m.sport.is_some() || m.dport.is_some()) {
        (Some(p), _) => vec![Some(p)],
        (None, true) => vec![Some(Proto::Tcp), Some(Proto::Udp)],
        (None, false) => vec![None],
    };
    let fams = families(m);
    let mut out = Vec::new();
    for v4 in [true, false] {
        if !fams.contains(&v4) {
            continue;
        }
        let srcs = addrs(&m.src, v4);
        let dsts = addrs(&m.dst, v4);
        let sports = port_alts(&m.sport);
        let dports = port_alts(&m.dport);
        for proto in &protos {
            for src in &srcs {
                for dst in &dsts {
                    for sp in &sports {
                        for dp in &dports {
                            let mut keys = Vec::new();
                            let fam = if v4 { "ip" } else { "ip6" };
                            if let Some(p) = proto {
                                let n = match (p, v4) {
                                    (Proto::Icmp, false) => 58,
                                    (p, _) => p.number(),
                                };
                                keys.push(format!("{fam} protocol {n} 0xff"));
                            }
                            if let Some(c) = src {
                                keys.push(format!("{fam} src {}/{}", c.addr, c.prefix));
                            }
                            if let Some(c) = dst {
                                keys.push(format!("{fam} dst {}/{}", c.addr, c.prefix));
                            }
                            if sp.is_some() || dp.is_some() {
                                if v4 {
                                    // Fixed port offsets assume a 20-byte header and a first
                                    // fragment: require both, so other packets fall through
                                    // instead of being misread.
                                    keys.push("u8 0x05 0x0f at 0".to_string());
                                    keys.push("u16 0x0000 0x1fff at 6".to_string());
                                }
                                if let Some((v, mask)) = sp {
                                    keys.push(format!("{fam} sport {v} {mask:#06x}"));
                                }
                                if let Some((v, mask)) = dp {
                                    keys.push(format!("{fam} dport {v} {mask:#06x}"));
                                }
                            }
                            if keys.is_empty() {
                                keys.push("u32 0 0".to_string());
                            }
                            let (protocol, prio) = if v4 {
                                ("ip", PRIO_V4)
                            } else {
                                ("ipv6", PRIO_V6)
                            };
                            out.push((protocol, prio, keys));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Which families (true = IPv4) a match applies to.
fn families(m: &Match) -> Vec<bool> {
    let mut v4 = true;
    let mut v6 = true;
    for list in [&m.src, &m.dst].into_iter().flatten() {
        v4 &= list.iter().any(Cidr::is_v4);
        v6 &= list.iter().any(|c| !c.is_v4());
    }
    let mut out = Vec::new();
    if v4 {
        out.push(true);
    }
    if v6 {
        out.push(false);
    }
    out
}

fn addrs(list: &Option<Vec<Cidr>>, v4: bool) -> Vec<Option<Cidr>> {
    match list {
        None => vec![None],
        Some(l) => l
            .iter()
            .filter(|c| c.is_v4() == v4)
            .map(|c| Some(*c))
            .collect(),
    }
}

fn port_alts(list: &Option<Vec<crate::model::PortRange>>) -> Vec<Option<(u16, u16)>> {
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
