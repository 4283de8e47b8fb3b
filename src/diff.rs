//! `netqos diff`: what changes between two checked policies, in plain words and numbers,
//! for PR review. Pure: models in, a [`Diff`] out; the CLI renders it.
//!
//! Two levels: the policy (per interface and class, matched by class path; the pods block,
//! matched by selector) and the node (per shaped device, the class ids, leaf queues and u32
//! filters of the lowered plans that the apply script will create, change or delete).
//! Source lines are never compared, so a diff of a reformatted policy is empty.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cni::annotations::quantity;
use crate::model::{Class, Cni, Interface, LeafQdisc, Match, Model, PodLimit, Pods};
use crate::plan::{ClassPlan, DevicePlan, FilterPlan, Plan};
use crate::units::{fmt_duration_us, fmt_rate, fmt_size};

/// One change in the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What it is about: `eth0 egress`, `eth0 egress class pods/web`, `pods`.
    pub scope: String,
    /// The change in plain words: `guaranteed rate 200 → 300 Mbit/s`.
    pub text: String,
    /// The line in the new policy it concerns (the old one for a removal), if any.
    pub line: Option<usize>,
    /// Whether `line` is a line of the old policy.
    pub old_file: bool,
}

/// One change of what the apply script installs on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeChange {
    /// The device holding the object (the IFB for ingress trees).
    pub device: String,
    /// The tc id concerned (`1:4a98`, `3c3a:`, `1:`), or `""` for the device's filters.
    pub id: String,
    pub text: String,
}

/// Everything that differs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub node: Vec<NodeChange>,
}

impl Diff {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.node.is_empty()
    }
}

/// Compares two checked policies (`old` before, `new` after) and their plans.
#[must_use]
pub fn diff(old: &Model, new: &Model) -> Diff {
    let mut d = Diff::default();
    interfaces(old, new, &mut d.changes);
    pods(old.pods.as_ref(), new.pods.as_ref(), &mut d.changes);
    let (old_plan, new_plan) = (crate::lower::lower(old), crate::lower::lower(new));
    node(&old_plan, &new_plan, &mut d.node);
    if d.is_empty() && without_lines(&old_plan) != without_lines(&new_plan) {
        // Nothing above names it, yet the node would differ: never report equal then.
        d.node.push(NodeChange {
            device: String::new(),
            id: String::new(),
            text: "the generated plans differ".to_string(),
        });
    }
    d
}

fn without_lines(p: &Plan) -> Plan {
    let mut p = p.clone();
    for d in &mut p.devices {
        d.line = 0;
        d.classes.iter_mut().for_each(|c| {
            c.line = 0;
            c.matches.iter_mut().for_each(|m| m.1 = 0);
        });
        d.filters.iter_mut().for_each(|f| f.line = 0);
    }
    if let Some(r) = &mut p.pod_rules {
        r.rules.iter_mut().for_each(|r| r.line = 0);
    }
    p
}

/// `200 → 300 Mbit/s`, or `200 Mbit/s → 1 Gbit/s` when the units differ.
#[must_use]
pub fn arrow_rate(old: u64, new: u64) -> String {
    let (a, b) = (fmt_rate(old), fmt_rate(new));
    match (a.split_once(' '), b.split_once(' ')) {
        (Some((na, ua)), Some((nb, ub))) if ua == ub => format!("{na} → {nb} {ub}"),
        _ => format!("{a} → {b}"),
    }
}

fn arrow_opt(old: Option<String>, new: Option<String>, default: &str) -> String {
    format!(
        "{} → {}",
        old.unwrap_or_else(|| default.to_string()),
        new.unwrap_or_else(|| default.to_string())
    )
}

fn iface_title(i: &Interface) -> String {
    format!("{} {}", i.device, i.direction.as_str())
}

fn interfaces(old: &Model, new: &Model, out: &mut Vec<Change>) {
    let key = |i: &Interface| (i.device.clone(), i.direction);
    for o in &old.interfaces {
        if !new.interfaces.iter().any(|n| key(n) == key(o)) {
            out.push(Change {
                scope: iface_title(o),
                text: "interface removed: the new apply script leaves its old tree in place; \
                       run the old rollback script on the node to remove it"
                    .to_string(),
                line: Some(o.line),
                old_file: true,
            });
        }
    }
    for n in &new.interfaces {
        match old.interfaces.iter().find(|o| key(o) == key(n)) {
            None => out.push(Change {
                scope: iface_title(n),
                text: format!(
                    "interface added: rate {}, {} classes, default {}",
                    fmt_rate(n.rate),
                    count(&n.classes),
                    default_name(n).unwrap_or("none")
                ),
                line: Some(n.line),
                old_file: false,
            }),
            Some(o) => interface(o, n, out),
        }
    }
}

fn count(classes: &[Class]) -> usize {
    classes.iter().map(|c| 1 + count(&c.children)).sum()
}

/// The path of the interface's top-level default class.
fn default_name(i: &Interface) -> Option<&str> {
    find_minor(&i.classes, i.default_minor).map(|c| c.path.as_str())
}

fn find_minor(classes: &[Class], minor: u16) -> Option<&Class> {
    classes.iter().find_map(|c| {
        if c.minor == minor {
            Some(c)
        } else {
            find_minor(&c.children, minor)
        }
    })
}

fn interface(o: &Interface, n: &Interface, out: &mut Vec<Change>) {
    let scope = iface_title(n);
    let mut push = |text: String| {
        out.push(Change {
            scope: scope.clone(),
            text,
            line: Some(n.line),
            old_file: false,
        });
    };
    if o.rate != n.rate {
        push(format!("link rate {}", arrow_rate(o.rate, n.rate)));
    }
    if o.burst != n.burst {
        push(format!(
            "burst {}",
            arrow_opt(o.burst.map(fmt_size), n.burst.map(fmt_size), "computed")
        ));
    }
    if o.cburst != n.cburst {
        push(format!(
            "cburst {}",
            arrow_opt(o.cburst.map(fmt_size), n.cburst.map(fmt_size), "computed")
        ));
    }
    if o.r2q != n.r2q {
        push(format!(
            "r2q {}",
            arrow_opt(
                o.r2q.map(|v| v.to_string()),
                n.r2q.map(|v| v.to_string()),
                "none"
            )
        ));
    }
    if o.max_packet != n.max_packet {
        push(format!(
            "mtu {} → {}",
            o.max_packet.saturating_sub(14),
            n.max_packet.saturating_sub(14)
        ));
    }
    if o.ifb != n.ifb {
        push(format!(
            "ifb {}",
            arrow_opt(o.ifb.clone(), n.ifb.clone(), "none")
        ));
    }
    let (od, nd) = (default_name(o), default_name(n));
    if od != nd {
        push(format!(
            "default moved: {} → {} (unmatched traffic now goes to {})",
            od.unwrap_or("none"),
            nd.unwrap_or("none"),
            nd.unwrap_or("none")
        ));
    }
    siblings(o, n, None, &o.classes, &n.classes, out);
}

/// Compares the children of one parent (`None`: the interface's top level).
fn siblings(
    oi: &Interface,
    ni: &Interface,
    parent: Option<&Class>,
    old: &[Class],
    new: &[Class],
    out: &mut Vec<Change>,
) {
    let scope = |c: Option<&Class>| match c {
        Some(c) => format!("{} class {}", iface_title(ni), c.path),
        None => iface_title(ni),
    };
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            out.push(Change {
                scope: scope(Some(o)),
                text: format!(
                    "class removed; its traffic now goes to {}",
                    destination(o, ni)
                ),
                line: Some(o.line),
                old_file: true,
            });
        }
    }
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => out.push(Change {
                scope: scope(Some(n)),
                text: format!("class added: {}", summary(n)),
                line: Some(n.line),
                old_file: false,
            }),
            Some(o) => class(oi, ni, o, n, out),
        }
    }
    // Inner defaults (the top level's is the interface's `default moved`).
    if let Some(p) = parent {
        let def = |cs: &[Class]| cs.iter().find(|c| c.is_default).map(|c| c.name.clone());
        let (od, nd) = (def(old), def(new));
        if od != nd && od.is_some() && nd.is_some() {
            out.push(Change {
                scope: scope(Some(p)),
                text: format!(
                    "default among its children moved: {} → {}",
                    od.unwrap_or_default(),
                    nd.unwrap_or_default()
                ),
                line: Some(p.line),
                old_file: false,
            });
        }
    }
    // Sibling order decides which match is tried first.
    let common_old: Vec<&str> = old
        .iter()
        .filter(|o| new.iter().any(|n| n.name == o.name))
        .map(|c| c.name.as_str())
        .collect();
    let common_new: Vec<&str> = new
        .iter()
        .filter(|n| old.iter().any(|o| o.name == n.name))
        .map(|c| c.name.as_str())
        .collect();
    if common_old != common_new {
        out.push(Change {
            scope: scope(parent),
            text: format!(
                "order of classes changed: {} → {} (matches are tried in this order; the first wins)",
                common_old.join(", "),
                common_new.join(", ")
            ),
            line: new.first().map(|c| c.line).or(Some(ni.line)),
            old_file: false,
        });
    }
}

/// A class in one line: `rate 50 Mbit/s, ceil 1 Gbit/s, prio 2, match tcp dport 443`.
fn summary(c: &Class) -> String {
    let mut parts = vec![
        format!("guaranteed {}", fmt_rate(c.rate)),
        format!("may borrow up to {}", fmt_rate(c.ceil)),
        format!("prio {}", c.prio),
        format!("id 1:{:x}", c.minor),
    ];
    if c.is_default {
        parts.push("default".to_string());
    }
    parts.extend(c.matches.iter().map(|m| format!("match {}", fmt_match(m))));
    if !c.children.is_empty() {
        parts.push(format!("{} child classes", count(&c.children)));
    }
    parts.join(", ")
}

fn class(oi: &Interface, ni: &Interface, o: &Class, n: &Class, out: &mut Vec<Change>) {
    let scope = format!("{} class {}", iface_title(ni), n.path);
    let mut texts = Vec::new();
    if o.rate != n.rate {
        texts.push(format!("guaranteed rate {}", arrow_rate(o.rate, n.rate)));
    }
    if o.ceil != n.ceil {
        texts.push(format!("may borrow up to {}", arrow_rate(o.ceil, n.ceil)));
    }
    if o.prio != n.prio {
        texts.push(format!("prio {} → {}", o.prio, n.prio));
    }
    if o.minor != n.minor {
        texts.push(format!("id 1:{:x} → 1:{:x}", o.minor, n.minor));
    }
    if o.burst != n.burst {
        texts.push(format!(
            "burst {}",
            arrow_opt(o.burst.map(fmt_size), n.burst.map(fmt_size), "computed")
        ));
    }
    if o.cburst != n.cburst {
        texts.push(format!(
            "cburst {}",
            arrow_opt(o.cburst.map(fmt_size), n.cburst.map(fmt_size), "computed")
        ));
    }
    if o.quantum != n.quantum {
        texts.push(format!(
            "quantum {}",
            arrow_opt(
                o.quantum.map(|q| format!("{q} B")),
                n.quantum.map(|q| format!("{q} B")),
                "computed"
            )
        ));
    }
    if o.qdisc != n.qdisc && n.is_leaf() {
        texts.push(format!(
            "leaf queue {}",
            arrow_opt(
                o.qdisc.as_ref().map(fmt_qdisc),
                n.qdisc.as_ref().map(fmt_qdisc),
                "bfifo (default)"
            )
        ));
    }
    let old_m: Vec<String> = o.matches.iter().map(fmt_match).collect();
    let new_m: Vec<String> = n.matches.iter().map(fmt_match).collect();
    // Lines only in one side; paired in order, a pair reads as one edited line.
    let gone: Vec<&String> = old_m.iter().filter(|m| !new_m.contains(m)).collect();
    let came: Vec<&String> = new_m.iter().filter(|m| !old_m.contains(m)).collect();
    for (a, b) in gone.iter().zip(&came) {
        texts.push(format!("match {a} → {b}"));
    }
    for m in gone.iter().skip(came.len()) {
        texts.push(format!("match removed: {m}"));
    }
    for m in came.iter().skip(gone.len()) {
        texts.push(format!("match added: {m}"));
    }
    let kept_o: Vec<&String> = old_m.iter().filter(|m| new_m.contains(m)).collect();
    let kept_n: Vec<&String> = new_m.iter().filter(|m| old_m.contains(m)).collect();
    if kept_o != kept_n {
        texts.push("order of its match lines changed".to_string());
    }
    for text in texts {
        out.push(Change {
            scope: scope.clone(),
            text,
            line: Some(n.line),
            old_file: false,
        });
    }
    siblings(oi, ni, Some(n), &o.children, &n.children, out);
}

/// A leaf queue in the policy's words.
fn fmt_qdisc(q: &LeafQdisc) -> String {
    let limit = |kind: &str, l: Option<String>| match l {
        Some(l) => format!("{kind} limit {l}"),
        None => kind.to_string(),
    };
    match q {
        LeafQdisc::Pfifo { limit_packets } => limit("pfifo", limit_packets.map(|v| v.to_string())),
        LeafQdisc::Bfifo { limit_bytes } => limit("bfifo", limit_bytes.map(fmt_size)),
        LeafQdisc::FqCodel { limit_packets } => {
            limit("fq_codel", limit_packets.map(|v| v.to_string()))
        }
        LeafQdisc::Sfq { limit_packets } => limit("sfq", limit_packets.map(|v| v.to_string())),
        LeafQdisc::Tbf {
            rate,
            burst,
            limit_bytes,
            latency_us,
            peakrate,
        } => {
            let mut s = format!("tbf rate {} burst {}", fmt_rate(*rate), fmt_size(*burst));
            if let Some(l) = limit_bytes {
                let _ = write!(s, " limit {}", fmt_size(*l));
            }
            if let Some(l) = latency_us {
                let _ = write!(s, " latency {}", fmt_duration_us(*l));
            }
            if let Some(p) = peakrate {
                let _ = write!(s, " peakrate {}", fmt_rate(*p));
            }
            s
        }
    }
}

/// A match line in the policy's words: `tcp dst 10.0.0.10 dport 2379-2380, 6443`.
pub fn fmt_match(m: &Match) -> String {
    let list = |v: &[String]| v.join(", ");
    let mut parts = Vec::new();
    if let Some(p) = m.proto {
        parts.push(p.as_str().to_string());
    }
    if let Some(pod) = &m.pod {
        if pod.any {
            parts.push("pods".to_string());
        }
        for (word, v) in [("pod src", &pod.src), ("pod dst", &pod.dst)] {
            if let Some(v) = v {
                let items: Vec<String> = v.iter().map(ToString::to_string).collect();
                parts.push(format!("{word} {}", list(&items)));
            }
        }
    }
    for (word, v) in [("src", &m.src), ("dst", &m.dst)] {
        if let Some(v) = v {
            let items: Vec<String> = v.iter().map(ToString::to_string).collect();
            parts.push(format!("{word} {}", list(&items)));
        }
    }
    for (word, v) in [("sport", &m.sport), ("dport", &m.dport)] {
        if let Some(v) = v {
            let items: Vec<String> = v.iter().map(ToString::to_string).collect();
            parts.push(format!("{word} {}", list(&items)));
        }
    }
    if parts.is_empty() {
        "anything".to_string()
    } else {
        parts.join(" ")
    }
}

/// Where the traffic of a class removed from the policy goes in the new one: from its
/// nearest ancestor that still exists, the first sibling whose match covers one of its
/// match lines, else the default among them, down to a leaf.
fn destination(removed: &Class, new: &Interface) -> String {
    let mut level: &[Class] = &new.classes;
    let mut at: Option<&Class> = None;
    // The nearest surviving ancestor.
    let segments: Vec<&str> = removed.path.split('/').collect();
    for seg in &segments[..segments.len().saturating_sub(1)] {
        match level.iter().find(|c| c.name == *seg) {
            Some(c) => {
                at = Some(c);
                level = &c.children;
            }
            None => break,
        }
    }
    let mut dests: Vec<String> = Vec::new();
    let lines: Vec<Option<&Match>> = if removed.matches.is_empty() {
        vec![None]
    } else {
        removed.matches.iter().map(Some).collect()
    };
    for m in lines {
        let mut cur = at;
        let mut lvl = level;
        loop {
            if lvl.is_empty() {
                break;
            }
            let taker = m.and_then(|m| {
                lvl.iter().find(|c| {
                    !c.is_default && c.matches.iter().any(|cm| crate::check::covers(cm, m))
                })
            });
            let next = taker.or_else(|| lvl.iter().find(|c| c.is_default));
            match next {
                Some(c) => {
                    cur = Some(c);
                    lvl = &c.children;
                }
                None => break,
            }
        }
        let name = match cur {
            Some(c) if c.is_leaf() => c.path.clone(),
            _ => default_name(new)
                .unwrap_or("the interface default")
                .to_string(),
        };
        if !dests.contains(&name) {
            dests.push(name);
        }
    }
    dests.join(" and ")
}

fn selector(l: &PodLimit) -> String {
    l.selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_key(l: &PodLimit) -> Vec<(String, String)> {
    let mut s = l.selector.clone();
    s.sort();
    s
}

fn fmt_overlay(o: crate::model::Overlay) -> String {
    match o {
        crate::model::Overlay::Vxlan { port } => format!("vxlan {port}"),
        crate::model::Overlay::None => "none".to_string(),
    }
}

fn fmt_cni(c: &Option<Cni>) -> String {
    c.as_ref()
        .map_or("none".to_string(), crate::cni::flavour::name)
}

/// Where a CNI keeps the conflist netqos patches.
fn conflist_path(c: &Option<Cni>) -> Option<String> {
    c.as_ref().map(|c| crate::cni::flavour::of(c).conflist_path)
}

const ANNOTATION: [&str; 2] = [
    "kubernetes.io/ingress-bandwidth",
    "kubernetes.io/egress-bandwidth",
];

fn pods(old: Option<&Pods>, new: Option<&Pods>, out: &mut Vec<Change>) {
    let empty = Pods {
        cni: None,
        limits: Vec::new(),
        cidr: Vec::new(),
        overlay: crate::model::Overlay::None,
        burst: None,
    };
    let (o, n) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    let settings = pod_settings(o, n).into_iter().map(|t| (t, None, false));
    for (text, line, old_file) in settings.chain(pod_limits(o, n)) {
        out.push(Change {
            scope: "pods".to_string(),
            text,
            line,
            old_file,
        });
    }
}

/// The changes of the `pods` block's settings: `cni`, `cidr`, `overlay`, `burst`.
fn pod_settings(o: &Pods, n: &Pods) -> Vec<String> {
    let mut out = Vec::new();
    if o.cni != n.cni {
        out.push(cni_change(o, n));
    }
    if o.cidr != n.cidr {
        let nets = |c: &[crate::model::Cidr]| {
            if c.is_empty() {
                "none".to_string()
            } else {
                c.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        out.push(format!(
            "pod network {} → {}: `pods` matches follow it",
            nets(&o.cidr),
            nets(&n.cidr)
        ));
    }
    if o.overlay != n.overlay {
        out.push(format!(
            "overlay {} → {}: arriving pod packets are read {}",
            fmt_overlay(o.overlay),
            fmt_overlay(n.overlay),
            match n.overlay {
                crate::model::Overlay::Vxlan { .. } => "behind the VXLAN header",
                crate::model::Overlay::None => "as routed",
            }
        ));
    }
    if o.burst != n.burst {
        let show = |b: &Option<crate::cni::burst::PodBurst>| {
            b.as_ref()
                .map_or("none (the runtime's)".to_string(), |b| b.config_text())
        };
        out.push(
            format!(
                "pod burst {} → {} (the netqos CNI entry in the conflist; pods created from now on get the new bucket)",
                show(&o.burst),
                show(&n.burst)
            ),
        );
    }
    out
}

/// The pod limits removed, added and changed, with their line and whether that line is
/// in the old file.
fn pod_limits(o: &Pods, n: &Pods) -> Vec<(String, Option<usize>, bool)> {
    let mut out = Vec::new();
    for ol in &o.limits {
        if !n
            .limits
            .iter()
            .any(|nl| selector_key(nl) == selector_key(ol))
        {
            out.push((
                format!(
                    "pod limit {} removed: its pods lose the bandwidth annotations and are no longer limited",
                    selector(ol)
                ),
                Some(ol.line),
                true,
            ));
        }
    }
    for nl in &n.limits {
        let name = selector(nl);
        let Some(ol) = o
            .limits
            .iter()
            .find(|ol| selector_key(ol) == selector_key(nl))
        else {
            let dirs: Vec<String> = [("ingress", nl.ingress), ("egress", nl.egress)]
                .iter()
                .zip(ANNOTATION)
                .filter_map(|((d, r), a)| {
                    r.map(|r| format!("{d} {} ({a}: {})", fmt_rate(r), quantity(r)))
                })
                .collect();
            out.push((
                format!("pod limit {name} added: {}", dirs.join(", ")),
                Some(nl.line),
                false,
            ));
            continue;
        };
        for text in limit_changes(&name, ol, nl) {
            out.push((text, Some(nl.line), false));
        }
    }
    out
}

/// The `cni` line's change, with what it means for the conflist.
fn cni_change(o: &Pods, n: &Pods) -> String {
    let files = match (conflist_path(&o.cni), conflist_path(&n.cni)) {
        (Some(a), Some(b)) if a == b => format!(" (same conflist {b})"),
        (Some(a), Some(b)) => format!(" (conflist {a} → {b})"),
        (None, Some(b)) => format!(" (conflist {b} now patched)"),
        (Some(a), None) => format!(" (conflist {a} no longer patched)"),
        (None, None) => String::new(),
    };
    format!("cni {} → {}{files}", fmt_cni(&o.cni), fmt_cni(&n.cni))
}

/// How the rates of one pod limit (same selector) changed, per direction.
fn limit_changes(name: &str, ol: &PodLimit, nl: &PodLimit) -> Vec<String> {
    [
        ("ingress", ol.ingress, nl.ingress),
        ("egress", ol.egress, nl.egress),
    ]
    .into_iter()
    .zip(ANNOTATION)
    .filter_map(|((dir, a, b), annotation)| match (a, b) {
        (Some(a), Some(b)) if a != b => Some(format!(
            "pod limit {name} {dir} {} ({annotation}: {} → {})",
            arrow_rate(a, b),
            quantity(a),
            quantity(b)
        )),
        (None, Some(b)) => Some(format!(
            "pod limit {name} {dir} added: {} ({annotation}: {})",
            fmt_rate(b),
            quantity(b)
        )),
        (Some(a), None) => Some(format!(
            "pod limit {name} {dir} removed (was {}; {annotation} dropped)",
            fmt_rate(a)
        )),
        _ => None,
    })
    .collect()
}

/// netqos's nftables table: rules that appear or go, by what they select.
fn pod_rules(old: &Plan, new: &Plan, out: &mut Vec<NodeChange>) {
    let rules = |p: &Plan| -> Vec<(String, String)> {
        p.pod_rules.as_ref().map_or_else(Vec::new, |r| {
            r.rules
                .iter()
                .map(|x| {
                    let text = crate::backend::nft::rule(x);
                    let cond = text.split(" comment ").next().unwrap_or(&text).to_string();
                    (x.hook.as_str().to_string(), cond)
                })
                .collect()
        })
    };
    let (o, n) = (rules(old), rules(new));
    let table = format!("table inet {}", crate::lower::pods::TABLE);
    for r in o.iter().filter(|r| !n.contains(r)) {
        out.push(NodeChange {
            device: table.clone(),
            id: r.0.clone(),
            text: format!("pod rule removed: {}", r.1),
        });
    }
    for r in n.iter().filter(|r| !o.contains(r)) {
        out.push(NodeChange {
            device: table.clone(),
            id: r.0.clone(),
            text: format!("pod rule added: {}", r.1),
        });
    }
    let clear = |p: &Plan| {
        p.pod_rules
            .as_ref()
            .map(|r| r.clear_on.clone())
            .unwrap_or_default()
    };
    if clear(old) != clear(new) {
        out.push(NodeChange {
            device: table,
            id: "postrouting".to_string(),
            text: format!(
                "priorities cleared on [{}] → [{}]",
                clear(old).join(", "),
                clear(new).join(", ")
            ),
        });
    }
}

fn node(old: &Plan, new: &Plan, out: &mut Vec<NodeChange>) {
    pod_rules(old, new, out);
    let key = |d: &DevicePlan| (d.device.clone(), d.direction);
    for o in &old.devices {
        if !new.devices.iter().any(|n| key(n) == key(o)) {
            out.push(NodeChange {
                device: o.shaped_device.clone(),
                id: "1:".to_string(),
                text: format!(
                    "HTB root, root class 1:1 and its {} stay until the old rollback script \
                     removes them",
                    plural(o.classes.len().saturating_sub(1), "class", "classes")
                ),
            });
        }
    }
    for n in &new.devices {
        match old.devices.iter().find(|o| key(o) == key(n)) {
            None => out.push(NodeChange {
                device: n.shaped_device.clone(),
                id: "1:".to_string(),
                // Counted like the policy side: the classes the policy wrote, not 1:1.
                text: format!(
                    "HTB root created with root class 1:1, {} and {}",
                    plural(n.classes.len().saturating_sub(1), "class", "classes"),
                    plural(n.filters.len(), "u32 filter", "u32 filters")
                ),
            }),
            Some(o) => device(o, n, out),
        }
    }
}

/// `1 class`, `3 classes`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn class_label(c: &ClassPlan) -> String {
    if c.name.is_empty() {
        "root class".to_string()
    } else {
        c.name.clone()
    }
}

/// The node changes of one device, pushed with its name.
struct DeviceChanges<'a> {
    dev: &'a str,
    out: &'a mut Vec<NodeChange>,
}

impl DeviceChanges<'_> {
    fn push(&mut self, id: &str, text: String) {
        self.out.push(NodeChange {
            device: self.dev.to_string(),
            id: id.to_string(),
            text,
        });
    }
}

fn device(o: &DevicePlan, n: &DevicePlan, out: &mut Vec<NodeChange>) {
    let mut push = DeviceChanges {
        dev: &n.shaped_device,
        out,
    };
    let rebuilt = o.root.default != n.root.default;
    if rebuilt {
        push.push(
            "1:",
            format!(
                "HTB root rebuilt (its default cannot change in place: 1:{} → 1:{}); every class \
                 is recreated and its counters reset",
                o.root.default, n.root.default
            ),
        );
    }
    if o.root.r2q != n.root.r2q {
        push.push(
            "1:",
            format!(
                "HTB root r2q {}",
                arrow_opt(
                    o.root.r2q.map(|v| v.to_string()),
                    n.root.r2q.map(|v| v.to_string()),
                    "none"
                )
            ),
        );
    }
    for oc in &o.classes {
        if !n.classes.iter().any(|nc| nc.classid == oc.classid) {
            push.push(
                &oc.classid.to_string(),
                format!("class {} ({}) deleted", oc.classid, class_label(oc)),
            );
        }
    }
    for nc in &n.classes {
        let Some(oc) = o.classes.iter().find(|oc| oc.classid == nc.classid) else {
            push.push(
                &nc.classid.to_string(),
                format!("class {} ({}) created", nc.classid, class_label(nc)),
            );
            continue;
        };
        let what = class_plan_changes(oc, nc);
        if !what.is_empty() {
            let in_place = if rebuilt {
                "changed"
            } else {
                "changed in place"
            };
            push.push(
                &nc.classid.to_string(),
                format!(
                    "class {} ({}) {in_place}: {}",
                    nc.classid,
                    class_label(nc),
                    what.join(", ")
                ),
            );
        }
        if oc.leaf != nc.leaf {
            let (id, text) = leaf_change(oc, nc);
            push.push(&id, text);
        }
    }
    if let Some(text) = filter_change(&o.filters, &n.filters) {
        push.push("", text);
    }
}

/// What changed in a class of the plan, one phrase each.
fn class_plan_changes(oc: &ClassPlan, nc: &ClassPlan) -> Vec<String> {
    let mut what = Vec::new();
    if oc.name != nc.name {
        what.push(format!("now class {}", class_label(nc)));
    }
    if oc.parent != nc.parent {
        what.push(format!("parent {} → {}", oc.parent, nc.parent));
    }
    if oc.rate != nc.rate {
        what.push(format!("rate {}", arrow_rate(oc.rate, nc.rate)));
    }
    if oc.ceil != nc.ceil {
        what.push(format!("ceil {}", arrow_rate(oc.ceil, nc.ceil)));
    }
    for (name, a, b) in [
        ("burst", oc.burst, nc.burst),
        ("cburst", oc.cburst, nc.cburst),
    ] {
        if a != b {
            what.push(format!("{name} {} → {}", fmt_size(a), fmt_size(b)));
        }
    }
    if oc.quantum != nc.quantum {
        what.push(format!(
            "quantum {}",
            arrow_opt(
                oc.quantum.map(|q| q.to_string()),
                nc.quantum.map(|q| q.to_string()),
                "none"
            )
        ));
    }
    if oc.prio != nc.prio {
        what.push(format!("prio {} → {}", oc.prio, nc.prio));
    }
    what
}

/// The id and text of a changed leaf queue.
fn leaf_change(oc: &ClassPlan, nc: &ClassPlan) -> (String, String) {
    let leaf = |l: &Option<crate::plan::LeafPlan>| {
        l.as_ref().map(|l| {
            format!("{} {}", l.queue.kind(), l.queue.args().join(" "))
                .trim_end()
                .to_string()
        })
    };
    let id = nc
        .leaf
        .as_ref()
        .or(oc.leaf.as_ref())
        .map_or(String::new(), |l| l.handle.to_string());
    let verb = match (&oc.leaf, &nc.leaf) {
        (Some(a), Some(b)) if a.queue.kind() == b.queue.kind() && a.handle == b.handle => {
            "replaced in place"
        }
        (Some(_), Some(_)) => "deleted and recreated",
        (None, Some(_)) => "created",
        _ => "deleted",
    };
    let text = format!(
        "leaf queue {id} (of {}) {verb}: {}",
        nc.classid,
        arrow_opt(leaf(&oc.leaf), leaf(&nc.leaf), "none")
    );
    (id, text)
}

/// How the filters changed, if they did (the apply script replaces them all).
fn filter_change(o: &[FilterPlan], n: &[FilterPlan]) -> Option<String> {
    let filter_key =
        |f: &FilterPlan| (f.parent, f.protocol, f.prio, f.ht, f.keys.clone(), f.action);
    let ok: Vec<_> = o.iter().map(filter_key).collect();
    let nk: Vec<_> = n.iter().map(filter_key).collect();
    if ok == nk {
        return None;
    }
    let removed = ok.iter().filter(|k| !nk.contains(k)).count();
    let added = nk.iter().filter(|k| !ok.contains(k)).count();
    Some(format!(
        "u32 filters {} → {} ({removed} removed, {added} added; the apply script \
         replaces them all)",
        ok.len(),
        nk.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_share_their_unit() {
        assert_eq!(arrow_rate(200_000_000, 300_000_000), "200 → 300 Mbit/s");
        assert_eq!(
            arrow_rate(200_000_000, 1_000_000_000),
            "200 Mbit/s → 1 Gbit/s"
        );
    }
}
