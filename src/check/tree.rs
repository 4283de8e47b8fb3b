//! Checks of the class hierarchy: names, depth, rates against parents, defaults and which
//! classes can receive traffic at all.

use super::build::{ClassDraft, IfaceDraft, Val};
use super::env::Item;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::span::Span;
use crate::units::{fmt_rate, fmt_size};

/// HTB's limit on levels, counting the root class 1:1.
pub const MAX_DEPTH: usize = 8;

fn iface_name(i: &IfaceDraft) -> String {
    let dev = i.device.as_ref().map_or("?", |d| d.text.as_str());
    match i.direction {
        crate::model::Direction::Egress => format!("`{dev}`"),
        crate::model::Direction::Ingress => format!("`{dev}` ingress"),
    }
}

/// All hierarchy checks of one interface. Returns the minor of the HTB default leaf.
pub fn check(i: &IfaceDraft, diags: &mut Diagnostics) -> Option<u16> {
    let name = iface_name(i);
    if !i.rate_written {
        diags.push(
            Diagnostic::new(Code::NQ008, format!("interface {name} has no rate"))
                .label(i.head, "no `rate` in this block")
                .help("add the rate HTB may hand out, usually the link speed: `rate 1gbit`"),
        );
    }
    if let Some(r) = &i.rate
        && r.v == 0
    {
        diags.push(zero_rate(&name, r.span));
    }
    names(&i.classes, diags);
    let mut count = 0usize;
    for c in &i.classes {
        c.walk(&mut |_| count += 1);
    }
    if count > 65533 {
        diags.push(
            Diagnostic::new(
                Code::NQ004,
                format!("interface {name} has {count} classes; HTB ids allow at most 65533"),
            )
            .label(i.head, "too many classes")
            .help("split the classes over several interfaces or merge some"),
        );
    }
    let root_rate = i.rate.as_ref().map(|r| r.v);
    let root = Parent {
        name: format!("interface {name}"),
        rate: root_rate,
        ceil: root_rate,
        burst: i.burst.as_ref().map(|b| (b.v, b.span)),
        cburst: i.cburst.as_ref().map(|b| (b.v, b.span)),
        span: i.head,
    };
    siblings(&root, &i.classes, diags);
    let default = resolve_default(i, &name, diags);
    reachability(i, &i.classes, default, diags);
    default
}

fn zero_rate(name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(Code::NQ008, format!("{name} has a rate of 0"))
        .label(span, "resolves to 0 bit/s")
        .help("HTB refuses a zero rate; give a positive rate")
}

fn names(classes: &[ClassDraft], diags: &mut Diagnostics) {
    let mut all: Vec<(&str, Span)> = Vec::new();
    for c in classes {
        c.walk_ref(&mut |c| all.push((c.name.as_str(), c.name_span)));
    }
    // Depth-first indices by name: every class after the first of its name is reported,
    // in depth-first order, against that first one.
    let mut order: Vec<(&str, usize)> = all.iter().enumerate().map(|(i, c)| (c.0, i)).collect();
    order.sort_unstable();
    let mut again: Vec<(usize, Span)> = Vec::new();
    for group in order.chunk_by(|a, b| a.0 == b.0) {
        if let [(_, first), rest @ ..] = group {
            again.extend(rest.iter().map(|&(_, i)| (i, all[*first].1)));
        }
    }
    again.sort_unstable_by_key(|&(i, _)| i);
    for (i, first) in again {
        // In source order: past the cap, the ones a report would not list are only
        // counted (NQ042 is never dropped afterwards: not a knock-on, not allowable).
        if diags.crowded(Code::NQ042) {
            diags.skip(Code::NQ042);
            continue;
        }
        let (n, span) = all[i];
        diags.push(
            Diagnostic::new(
                Code::NQ042,
                format!("two classes are named `{n}` in one interface"),
            )
            .label(span, "second class of that name")
            .label(first, "first one")
            .help("class names identify classes in output and in `default NAME`: rename one"),
        );
    }
}

struct Parent {
    name: String,
    rate: Option<u64>,
    ceil: Option<u64>,
    burst: Option<(u64, Span)>,
    cburst: Option<(u64, Span)>,
    span: Span,
}

fn siblings(parent: &Parent, classes: &[ClassDraft], diags: &mut Diagnostics) {
    let mut sum: u64 = 0;
    let mut all_rates = true;
    for c in classes {
        class(parent, c, diags);
        match &c.rate {
            Some(r) => sum = sum.saturating_add(r.v),
            None => all_rates = false,
        }
    }
    if let Some(prate) = parent.rate
        && all_rates
        && sum > prate
        && !classes.is_empty()
    {
        let mut d = Diagnostic::new(
            Code::NQ010,
            format!(
                "children of {} reserve {}, more than its rate {}",
                parent.name,
                fmt_rate(sum),
                fmt_rate(prate)
            ),
        );
        let rated: Vec<(&ClassDraft, &Val<u64>)> = classes
            .iter()
            .filter_map(|c| c.rate.as_ref().map(|r| (c, r)))
            .collect();
        let shown = largest(&rated);
        for &(c, r) in &shown {
            d = d.label(r.span, format!("`{}` reserves {}", c.name, fmt_rate(r.v)));
        }
        let hidden = rated.len() - shown.len();
        if hidden == 0 {
            d = d.label(parent.span, format!("rate {}", fmt_rate(prate)));
        } else {
            let rest: u64 = shown.iter().fold(sum, |s, (_, r)| s.saturating_sub(r.v));
            d = d.label(
                parent.span,
                format!(
                    "rate {}; {hidden} more children (not shown) reserve {}",
                    fmt_rate(prate),
                    fmt_rate(rest)
                ),
            );
        }
        diags.push(d.help(format!(
                "guarantees cannot all be met: lower the children's rates by {} in total, or raise the parent's rate (the kernel accepts this silently)",
                fmt_rate(sum - prate)
            )));
    }
    let defaults: Vec<&ClassDraft> = classes.iter().filter(|c| c.default.is_some()).collect();
    if defaults.len() > 1 {
        diags.push(many_defaults(parent, &defaults));
    }
}

/// NQ050 for siblings that are all marked `default`: every one named and labelled up to
/// [`LABEL_CAP`], else the first [`LABEL_SHOWN`] and a count of the rest.
fn many_defaults(parent: &Parent, defaults: &[&ClassDraft]) -> Diagnostic {
    let shown = if defaults.len() <= LABEL_CAP {
        defaults
    } else {
        &defaults[..LABEL_SHOWN]
    };
    let mut names = shown
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let hidden = defaults.len() - shown.len();
    if hidden > 0 {
        names.push_str(&format!(" and {hidden} more"));
    }
    let mut d = Diagnostic::new(
        Code::NQ050,
        format!(
            "{} classes under {} are marked `default`: {names}",
            defaults.len(),
            parent.name,
        ),
    );
    for c in shown {
        if let Some(s) = c.default {
            d = d.label(s, format!("`{}` is default", c.name));
        }
    }
    d.help("only one sibling can take the traffic no rule selects: keep `default` on one")
}

/// Past this many children a diagnostic labels only the largest few and counts the rest:
/// rendering one label per child of a 100,000-class interface took seconds.
pub const LABEL_CAP: usize = 16;
/// How many of the largest children a summarised diagnostic still labels.
pub const LABEL_SHOWN: usize = 5;

/// The children to label, in source order: all of them up to [`LABEL_CAP`], else the
/// [`LABEL_SHOWN`] largest rates (ties keep source order).
fn largest<'a>(rated: &[(&'a ClassDraft, &'a Val<u64>)]) -> Vec<(&'a ClassDraft, &'a Val<u64>)> {
    if rated.len() <= LABEL_CAP {
        return rated.to_vec();
    }
    let mut order: Vec<usize> = (0..rated.len()).collect();
    order.sort_by(|a, b| rated[*b].1.v.cmp(&rated[*a].1.v).then(a.cmp(b)));
    order.truncate(LABEL_SHOWN);
    order.sort_unstable();
    order.into_iter().map(|i| rated[i]).collect()
}

fn class(parent: &Parent, c: &ClassDraft, diags: &mut Diagnostics) {
    let name = format!("`{}`", c.name);
    if c.depth > MAX_DEPTH && c.depth == MAX_DEPTH + 1 {
        diags.push(
                Diagnostic::new(
                    Code::NQ005,
                    format!("class {name} is nested {} levels deep; HTB allows {MAX_DEPTH} including the root class", c.depth),
                )
                .label(c.head, "too deep")
                .help("flatten the hierarchy: the kernel refuses it with \"tree is too deep\""),
            );
    }
    rates(parent, c, &name, diags);
    bursts(parent, c, &name, diags);
    let me = Parent {
        name: name.clone(),
        rate: c.rate.as_ref().map(|r| r.v),
        ceil: c.ceil.as_ref().map(|r| r.v),
        burst: c.burst.as_ref().map(|b| (b.v, b.span)),
        cburst: c.cburst.as_ref().map(|b| (b.v, b.span)),
        span: c.rate.as_ref().map_or(c.head, |r| r.span),
    };
    if !c.children.is_empty() {
        siblings(&me, &c.children, diags);
    }
}

/// NQ008 (no rate), zero rates, NQ009 (ceil below rate), NQ011 (ceil above the parent's).
fn rates(parent: &Parent, c: &ClassDraft, name: &str, diags: &mut Diagnostics) {
    match &c.rate {
        None if c.rate_written => {}
        None => diags.push(
            Diagnostic::new(Code::NQ008, format!("class {name} has no rate"))
                .label(c.head, "no `rate` in this class")
                .help("every class needs a guaranteed rate, e.g. `rate 10mbit` or `rate 10%`"),
        ),
        Some(r) if r.v == 0 => diags.push(zero_rate(&format!("class {name}"), r.span)),
        Some(_) => {}
    }
    if let (Some(r), Some(ceil)) = (&c.rate, &c.ceil)
        && ceil.v < r.v
        && r.v > 0
    {
        let (span, how) = if c.ceil_explicit {
            (ceil.span, "ceil")
        } else {
            (c.head, "inherited ceil")
        };
        diags.push(
                Diagnostic::new(
                    Code::NQ009,
                    format!("class {name}: {how} {} is below its rate {}", fmt_rate(ceil.v), fmt_rate(r.v)),
                )
                .label(span, format!("{how} {}", fmt_rate(ceil.v)))
                .label(r.span, format!("rate {}", fmt_rate(r.v)))
                .help("the kernel accepts it, but the class can never reach its guarantee: make ceil at least the rate"),
            );
    }
    if let (true, Some(ceil), Some(pceil)) = (c.ceil_explicit, &c.ceil, parent.ceil)
        && ceil.v > pceil
    {
        diags.push(
            Diagnostic::new(
                Code::NQ011,
                format!(
                    "class {name}: ceil {} is above {}'s ceil {}",
                    fmt_rate(ceil.v),
                    parent.name,
                    fmt_rate(pceil)
                ),
            )
            .label(ceil.span, "clipped by the parent")
            .label(parent.span, format!("ceil {}", fmt_rate(pceil)))
            .help(format!(
                "the class can never borrow past {}: lower its ceil to that",
                fmt_rate(pceil)
            )),
        );
    }
}

/// NQ019: a parent's burst below a child's.
fn bursts(parent: &Parent, c: &ClassDraft, name: &str, diags: &mut Diagnostics) {
    for (kind, mine, theirs) in [
        ("burst", c.burst.as_ref(), parent.burst),
        ("cburst", c.cburst.as_ref(), parent.cburst),
    ] {
        if let (Some(m), Some((p, pspan))) = (mine, theirs)
            && p < m.v
        {
            diags.push(
                Diagnostic::new(
                    Code::NQ019,
                    format!(
                        "{}'s {kind} {} is smaller than child {name}'s {kind} {}",
                        parent.name,
                        fmt_size(p),
                        fmt_size(m.v)
                    ),
                )
                .label(pspan, format!("parent {kind}"))
                .label(m.span, format!("child {kind}"))
                .help(format!(
                    "tc-htb(8): a parent's {kind} should be at least the largest of its children's"
                )),
            );
        }
    }
}

fn find<'a>(classes: &'a [ClassDraft], f: &dyn Fn(&ClassDraft) -> bool) -> Option<&'a ClassDraft> {
    for c in classes {
        if f(c) {
            return Some(c);
        }
        if let Some(x) = find(&c.children, f) {
            return Some(x);
        }
    }
    None
}

/// NQ001/NQ002/NQ050 at the interface level; the default leaf's minor when valid.
fn resolve_default(i: &IfaceDraft, name: &str, diags: &mut Diagnostics) -> Option<u16> {
    let flagged: Vec<&ClassDraft> = i.classes.iter().filter(|c| c.default.is_some()).collect();
    let by_ref = match &i.default_ref {
        None => None,
        Some(item) => Some(default_by_ref(i, item, name, diags)?),
    };
    if let (Some(r), Some(f)) = (by_ref, flagged.first())
        && r.path != f.path
    {
        let mut d = Diagnostic::new(
            Code::NQ050,
            format!(
                "{name} has two defaults: `{}` (by `default {}`) and `{}` (marked `default`)",
                r.name, r.name, f.name
            ),
        );
        if let Some(item) = &i.default_ref {
            d = d.label(item.span, format!("names `{}`", r.name));
        }
        if let Some(s) = f.default {
            d = d.label(s, format!("`{}` is default", f.name));
        }
        diags.push(
            d.help("keep one: either the interface's `default NAME` or the class's `default`"),
        );
        return None;
    }
    let chosen = by_ref.or_else(|| flagged.first().copied());
    let Some(c) = chosen else {
        diags.push(
            Diagnostic::new(
                Code::NQ001,
                format!("{name} has no default class; unclassified traffic (ARP, IPv6, anything unmatched) would go to HTB's unshaped direct queue"),
            )
            .label(i.head, "no class is marked `default`")
            .help("mark the leaf that should take everything else `default`, e.g. `class bulk { rate 100mbit  default }`"),
        );
        return None;
    };
    if !c.is_leaf() {
        diags.push(inner_default(i, c));
        return None;
    }
    Some(c.minor)
}

/// The class the interface's `default NAME` (a name or a class id) names, or NQ001.
fn default_by_ref<'a>(
    i: &'a IfaceDraft,
    item: &Item,
    name: &str,
    diags: &mut Diagnostics,
) -> Option<&'a ClassDraft> {
    let text = item.text.as_str();
    let found = find(&i.classes, &|c| c.name == text).or_else(|| {
        let digits = text.strip_prefix("1:").unwrap_or(text);
        let digits = digits.strip_prefix("0x").unwrap_or(digits);
        u16::from_str_radix(digits, 16)
            .ok()
            .and_then(|m| find(&i.classes, &|c| c.minor == m))
    });
    if found.is_some() {
        return found;
    }
    let as_id = text.strip_prefix("1:").unwrap_or(text);
    let looks_hex = !as_id.is_empty()
        && as_id
            .trim_start_matches("0x")
            .bytes()
            .all(|b| b.is_ascii_hexdigit());
    let what = if looks_hex {
        format!(
            "default class 1:{} does not exist",
            as_id.trim_start_matches("0x")
        )
    } else {
        format!("default class `{text}` does not exist")
    };
    let mut ids = Vec::new();
    for c in &i.classes {
        c.walk(&mut |c| {
            if c.is_leaf() {
                ids.push(format!("`{}` (1:{:x})", c.name, c.minor));
            }
        });
    }
    diags.push(item.label(
        Diagnostic::new(
            Code::NQ001,
            format!(
                "{what} on {name}; unclassified traffic (ARP, IPv6, anything unmatched) would go to HTB's unshaped direct queue"
            ),
        ),
        "no class has this name or id",
    )
    .help(format!(
        "name an existing leaf class{}{}",
        if ids.is_empty() { "" } else { ": " },
        ids.join(", ")
    )));
    None
}

/// NQ002: the default class has children.
fn inner_default(i: &IfaceDraft, c: &ClassDraft) -> Diagnostic {
    let span = c
        .default
        .unwrap_or_else(|| i.default_ref.as_ref().map_or(c.head, |d| d.span));
    let children: Vec<String> = c.children.iter().map(|k| format!("`{}`", k.name)).collect();
    Diagnostic::new(
        Code::NQ002,
        format!(
            "default class `{}` (1:{:x}) has children; HTB treats an inner default as a bad default and sends traffic to the unshaped direct queue",
            c.name, c.minor
        ),
    )
    .label(span, "inner class as default")
    .label(c.head, format!("has children {}", children.join(", ")))
    .help(format!("mark one of its children `default` and remove `default` here (children: {})", children.join(", ")))
}

/// NQ024/NQ025 and missing defaults inside classes with children.
fn reachability(
    i: &IfaceDraft,
    classes: &[ClassDraft],
    default: Option<u16>,
    diags: &mut Diagnostics,
) {
    for c in classes {
        let is_default = c.default.is_some() || Some(c.minor) == default && i.default_ref.is_some();
        if c.match_lines == 0 && !is_default {
            if c.is_leaf() {
                diags.push(
                    Diagnostic::new(
                        Code::NQ024,
                        format!("class `{}` receives no traffic: no `match` selects it and it is not the default", c.name),
                    )
                    .label(c.head, "unreachable leaf")
                    .help("add a `match` line, mark it `default`, or remove the class"),
                );
            } else {
                diags.push(
                    Diagnostic::new(
                        Code::NQ025,
                        format!("class `{}` has children but nothing selects it: no `match` of its own", c.name),
                    )
                    .label(c.head, "never selected")
                    .help("add `match` lines for the traffic this group should take; its children's rules only refine it"),
                );
            }
        }
        if !c.is_leaf() {
            let has_default = c.children.iter().any(|k| k.default.is_some())
                || c.children
                    .iter()
                    .any(|k| Some(k.minor) == default && i.default_ref.is_some());
            if !has_default {
                diags.push(
                    Diagnostic::new(
                        Code::NQ001,
                        format!(
                            "class `{}` has children but none is `default`: its traffic that no child rule selects would leave it",
                            c.name
                        ),
                    )
                    .label(c.head, "no default child")
                    .help("mark the child that should take the rest of this class's traffic `default`"),
                );
            }
            reachability(i, &c.children, default, diags);
        }
    }
}
