//! Reads the syntax tree into drafts: every statement's value parsed and normalised, with
//! the spans later checks need. Problems local to one statement are reported here.

use std::collections::BTreeMap;

use super::env::{Env, Item};
use super::suggest;
use super::values;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{LeafQdisc, Match, Proto};
use crate::span::{LineIndex, Span};
use crate::syntax::ast::{
    self, AddrDir, Direction, MatchField, PodsStmtKind, PortDir, Scalar, Stmt, StmtKind, Unknown,
};
use crate::units::{self, RateSpec};

/// A value with where and how it was written.
#[derive(Debug, Clone)]
pub struct Val<T> {
    pub v: T,
    pub span: Span,
}

fn val<T>(v: T, span: Span) -> Val<T> {
    Val { v, span }
}

#[derive(Debug, Clone)]
pub struct IfaceDraft {
    pub device: Option<Item>,
    pub direction: Direction,
    pub head: Span,
    pub line: usize,
    pub rate: Option<Val<u64>>,
    /// A `rate` line was written (even if its value was wrong).
    pub rate_written: bool,
    pub burst: Option<Val<u64>>,
    pub cburst: Option<Val<u64>>,
    pub r2q: Option<Val<u32>>,
    pub mtu: Option<Val<u32>>,
    pub ifb: Option<Item>,
    pub default_ref: Option<Item>,
    pub classes: Vec<ClassDraft>,
}

impl IfaceDraft {
    /// Its classes, at every depth.
    pub fn class_count(&self) -> usize {
        let mut n = 0;
        for c in &self.classes {
            c.walk(&mut |_| n += 1);
        }
        n
    }

    /// Bytes of a full-size frame.
    pub fn max_packet(&self) -> u64 {
        u64::from(self.mtu.as_ref().map_or(1500, |m| m.v)) + 14
    }
}

#[derive(Debug, Clone)]
pub struct QdiscDraft {
    pub q: LeafQdisc,
    pub span: Span,
    /// Span of each parameter value by name.
    pub params: BTreeMap<String, Span>,
}

#[derive(Debug, Clone)]
pub struct MatchDraft {
    pub m: Match,
    pub span: Span,
    /// The first pod-side field (`pods`, `pod src`, `pod dst`), for NQ091.
    pub pod_span: Option<Span>,
    /// Every `pod src`/`pod dst` address with where it was written, for NQ092.
    pub pod_addrs: Vec<(crate::model::Cidr, Span)>,
}

#[derive(Debug, Clone)]
pub struct ClassDraft {
    pub name: String,
    pub name_span: Span,
    pub head: Span,
    pub path: String,
    /// 2 for a top-level class (1:1 is depth 1).
    pub depth: usize,
    pub line: usize,
    pub rate: Option<Val<u64>>,
    /// A `rate` line was written (even if its value was wrong).
    pub rate_written: bool,
    pub ceil: Option<Val<u64>>,
    pub ceil_explicit: bool,
    pub prio: Option<Val<u8>>,
    pub burst: Option<Val<u64>>,
    pub cburst: Option<Val<u64>>,
    pub quantum: Option<Val<u32>>,
    pub qdisc: Option<QdiscDraft>,
    pub id: Option<Val<u16>>,
    pub default: Option<Span>,
    pub matches: Vec<MatchDraft>,
    /// How many `match` lines were written (some may have been wrong).
    pub match_lines: usize,
    pub children: Vec<ClassDraft>,
    /// Assigned by `ids`.
    pub minor: u16,
}

impl ClassDraft {
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }

    /// This class and all below it, depth first.
    pub fn walk(&self, f: &mut dyn FnMut(&ClassDraft)) {
        self.walk_ref(f);
    }

    /// [`ClassDraft::walk`], handing out references that outlive the walk.
    pub fn walk_ref<'a>(&'a self, f: &mut dyn FnMut(&'a ClassDraft)) {
        f(self);
        for c in &self.children {
            c.walk_ref(f);
        }
    }
}

/// How many of `stmts` are `class` blocks.
fn classes_in(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .filter(|s| matches!(s.kind, StmtKind::Class(_)))
        .count()
}

/// The `class` blocks of `stmts`, the rest dropped.
fn child_classes(stmts: Vec<Stmt>) -> impl Iterator<Item = ast::Class> {
    stmts.into_iter().filter_map(|s| match s.kind {
        StmtKind::Class(c) => Some(*c),
        _ => None,
    })
}

const TOP: &[&str] = &["netqos", "let", "allow", "interface", "pods"];
const IFACE: &[&str] = &[
    "rate", "burst", "cburst", "r2q", "mtu", "default", "ifb", "class",
];
const CLASS: &[&str] = &[
    "rate", "ceil", "prio", "burst", "cburst", "quantum", "qdisc", "id", "match", "default",
    "class",
];
const PODS: &[&str] = &["cni", "cidr", "overlay", "burst", "limit"];
const MATCH_FIELDS: &[&str] = &[
    "src", "dst", "sport", "dport", "tcp", "udp", "icmp", "pods", "pod",
];
const QDISCS: &[&str] = &["pfifo", "bfifo", "fq_codel", "sfq", "tbf"];

/// The shape of each statement, for "malformed" help.
fn form(word: &str) -> &'static str {
    match word {
        "netqos" => "`netqos 1`, the first line of the file",
        "let" => "`let NAME = VALUE`, e.g. `let cp = { 10.0.0.10, 10.0.0.11 }`",
        "interface" => "`interface NAME [ingress] { … }`, e.g. `interface eth0 { rate 1gbit … }`",
        "pods" => {
            "`pods { cni FLAVOUR  cidr ADDRESSES  overlay vxlan PORT|none  limit SELECTOR egress RATE }`"
        }
        "rate" => "`rate RATE`, e.g. `rate 200mbit` or `rate 60%`",
        "ceil" => "`ceil RATE`, e.g. `ceil 1gbit`",
        "prio" => "`prio N` with N from 0 (first) to 7",
        "burst" | "cburst" => "`burst SIZE`, e.g. `burst 64kb`",
        "quantum" => "`quantum BYTES`, e.g. `quantum 3028`",
        "r2q" => "`r2q N`, e.g. `r2q 10`",
        "mtu" => "`mtu BYTES`, e.g. `mtu 9000`",
        "id" => "`id MINOR` in hex like tc, e.g. `id 10` for 1:10",
        "ifb" => "`ifb NAME`, the IFB device an ingress block shapes on",
        "default" => "`default` alone inside a class, or `default CLASS` in an interface",
        "class" => "`class NAME { … }`",
        "qdisc" => {
            "`qdisc pfifo|bfifo|fq_codel|sfq [limit N]` or `qdisc tbf rate R burst SIZE latency T`"
        }
        "match" => {
            "`match FIELD…` with fields src/dst ADDRESSES, sport/dport PORTS, tcp|udp|icmp, pods, pod src/dst ADDRESSES"
        }
        "cidr" => "`cidr ADDRESSES`, the pod network, e.g. `cidr 10.42.0.0/16`",
        "overlay" => "`overlay vxlan PORT` or `overlay none`, e.g. `overlay vxlan 8472`",
        "cni" => {
            "`cni FLAVOUR` (flannel, canal, k3s, rke2-flannel, rke2-canal, calico) or `cni file \"PATH\"`"
        }
        "limit" => {
            "`limit SELECTOR [ingress RATE] [egress RATE]`, e.g. `limit app=backup egress 50mbit`"
        }
        _ => "see `man 5 netqos`",
    }
}

fn context_name(allowed: &[&str]) -> &'static str {
    if allowed == TOP {
        "at the top level"
    } else if allowed == IFACE {
        "in an interface block"
    } else if allowed == CLASS {
        "in a class block"
    } else {
        "in the pods block"
    }
}

/// NQ041 for a statement netqos cannot read.
pub fn unknown(u: &Unknown, allowed: &[&str], diags: &mut Diagnostics) {
    if diags.crowded(Code::NQ041) {
        diags.skip(Code::NQ041);
        return;
    }
    let word = u.word.node.as_str();
    let d = if allowed.contains(&word) {
        Diagnostic::new(Code::NQ041, format!("malformed `{word}` statement"))
            .label(u.span, "cannot be read")
            .help(format!("write it as {}", form(word)))
    } else if [TOP, IFACE, CLASS, PODS].iter().any(|c| c.contains(&word)) {
        let where_ = [TOP, IFACE, CLASS, PODS]
            .iter()
            .find(|c| c.contains(&word))
            .map_or("elsewhere", |c| context_name(c));
        let extra = if word == "ceil" && allowed == IFACE {
            "; an interface's `rate` is also its ceil"
        } else {
            ""
        };
        Diagnostic::new(
            Code::NQ041,
            format!("`{word}` cannot be used {}", context_name(allowed)),
        )
        .label(u.word.span, format!("`{word}` belongs {where_}"))
        .help(format!(
            "it belongs {where_}{extra}; allowed here: {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        Diagnostic::new(Code::NQ041, format!("unknown keyword `{word}`"))
            .label(u.word.span, "not a netqos keyword")
            .help(suggest::help_for(word, allowed))
    };
    diags.push(d);
}

/// Builds drafts from the syntax tree.
pub struct Builder<'a> {
    pub env: Env,
    pub diags: &'a mut Diagnostics,
    pub lines: &'a LineIndex,
}

impl Builder<'_> {
    fn one(&mut self, s: &Scalar, what: &str) -> Option<Item> {
        self.env.one(s, what, self.diags)
    }

    fn repeated(
        &mut self,
        seen: &mut BTreeMap<&'static str, Span>,
        key: &'static str,
        stmt: &Stmt,
    ) -> bool {
        if let Some(first) = seen.get(key) {
            self.diags.push(
                Diagnostic::new(Code::NQ056, format!("`{key}` is given twice in one block"))
                    .label(stmt.span, "given again here")
                    .label(*first, "first given here")
                    .help(format!("keep one `{key}` line")),
            );
            return true;
        }
        seen.insert(key, stmt.span);
        false
    }

    fn rate_bits(&mut self, s: &Scalar, parent: Option<u64>, what: &str) -> Option<Val<u64>> {
        let item = self.one(s, "rate")?;
        let spec = values::rate(&item, self.diags)?;
        let bits = match spec {
            RateSpec::Bits(b) => b,
            RateSpec::Percent(ppm) => {
                if ppm == 0 || ppm > 1_000_000 {
                    self.diags.push(item.label(
                        Diagnostic::new(
                            Code::NQ064,
                            format!("{what} {} is not a share of the parent (0% < share ≤ 100%)", units::fmt_percent(ppm)),
                        ),
                        "out of range",
                    )
                    .help("a percentage is of the parent's rate: use more than 0% and at most 100%"));
                    return None;
                }
                let Some(p) = parent else {
                    self.diags.push(item.label(
                        Diagnostic::new(
                            Code::NQ064,
                            format!("{what} {} has no parent to take a share of", units::fmt_percent(ppm)),
                        ),
                        "percentage without a parent",
                    )
                    .help("an interface's rate is the link's: write it with a unit, e.g. `rate 1gbit`"));
                    return None;
                };
                units::percent_of(p, ppm)
            }
        };
        Some(val(bits, item.span))
    }

    fn size(&mut self, s: &Scalar) -> Option<Val<u64>> {
        let item = self.one(s, "size")?;
        values::size(&item, self.diags).map(|b| val(b, item.span))
    }

    fn count(&mut self, s: &Scalar, what: &str, lo: u64, hi: u64, code: Code) -> Option<Val<u64>> {
        let item = self.one(s, what)?;
        values::count(&item, what, lo, hi, code, self.diags).map(|n| val(n, item.span))
    }

    fn quantum(&mut self, s: &Scalar) -> Option<Val<u32>> {
        let item = self.one(s, "quantum")?;
        let bytes = if units::parse_count(&item.text).is_some() {
            values::count(
                &item,
                "quantum",
                1,
                u64::from(u32::MAX),
                Code::NQ015,
                self.diags,
            )?
        } else {
            values::size(&item, self.diags)?
        };
        match u32::try_from(bytes) {
            Ok(q) if q > 0 => Some(val(q, item.span)),
            _ => {
                self.diags.push(
                    item.label(
                        Diagnostic::new(
                            Code::NQ015,
                            format!("quantum `{}` is out of range", item.text),
                        ),
                        "must be 1 byte to 4 GiB",
                    )
                    .help("a quantum is a byte count a little above the MTU, e.g. `quantum 3028`"),
                );
                None
            }
        }
    }

    /// An `interface` block.
    /// Reads an interface block whose statements `stmts` were taken out of it: they are
    /// consumed, each class's syntax freed once its draft is built (the tree and the drafts
    /// of 100,000 classes are never both whole).
    pub fn interface(&mut self, i: &ast::Interface, stmts: Vec<Stmt>) -> IfaceDraft {
        let device = self.one(&i.name, "interface name");
        let mut d = IfaceDraft {
            device,
            direction: i.direction.as_ref().map_or(Direction::Egress, |d| d.node),
            head: i.head,
            line: self.lines.line(i.span.start),
            rate: None,
            rate_written: false,
            burst: None,
            cburst: None,
            r2q: None,
            mtu: None,
            ifb: None,
            default_ref: None,
            classes: Vec::new(),
        };
        let mut seen = BTreeMap::new();
        for stmt in &stmts {
            self.interface_stmt(&mut d, &mut seen, stmt);
        }
        let rate = d.rate.as_ref().map(|r| r.v);
        let prefix = String::new();
        d.classes = Vec::with_capacity(classes_in(&stmts));
        for c in child_classes(stmts) {
            let child = self.class(c, rate, rate, 2, &prefix);
            d.classes.push(child);
        }
        d
    }

    /// One statement of an interface block (its classes are read afterwards).
    fn interface_stmt(
        &mut self,
        d: &mut IfaceDraft,
        seen: &mut BTreeMap<&'static str, Span>,
        stmt: &ast::Stmt,
    ) {
        match &stmt.kind {
            StmtKind::Rate(s) if !self.repeated(seen, "rate", stmt) => {
                d.rate_written = true;
                d.rate = self.rate_bits(s, None, "interface rate");
            }
            StmtKind::Burst(s) if !self.repeated(seen, "burst", stmt) => d.burst = self.size(s),
            StmtKind::Cburst(s) if !self.repeated(seen, "cburst", stmt) => d.cburst = self.size(s),
            StmtKind::R2q(s) if !self.repeated(seen, "r2q", stmt) => {
                d.r2q = self
                    .count(s, "r2q", 1, 1_000_000, Code::NQ057)
                    .map(|v| val(u32::try_from(v.v).unwrap_or(1), v.span));
            }
            StmtKind::Mtu(s) if !self.repeated(seen, "mtu", stmt) => {
                d.mtu = self
                    .count(s, "mtu", 68, 65535, Code::NQ057)
                    .map(|v| val(u32::try_from(v.v).unwrap_or(1500), v.span));
            }
            StmtKind::Ifb(s) if !self.repeated(seen, "ifb", stmt) => {
                d.ifb = self.one(s, "interface name");
            }
            StmtKind::DefaultRef(s) if !self.repeated(seen, "default", stmt) => {
                d.default_ref = self.one(s, "class name or id");
            }
            StmtKind::Class(_) => {}
            StmtKind::Unknown(u) => unknown(u, IFACE, self.diags),
            StmtKind::Rate(_)
            | StmtKind::Burst(_)
            | StmtKind::Cburst(_)
            | StmtKind::R2q(_)
            | StmtKind::Mtu(_)
            | StmtKind::Ifb(_)
            | StmtKind::DefaultRef(_) => {}
            other => {
                let kw = other.keyword().to_string();
                self.diags.push(
                    Diagnostic::new(
                        Code::NQ041,
                        format!("`{kw}` cannot be used in an interface block"),
                    )
                    .label(stmt.keyword, format!("`{kw}` belongs in a class"))
                    .help("move it into a class"),
                );
            }
        }
    }

    fn class(
        &mut self,
        c: ast::Class,
        parent_rate: Option<u64>,
        parent_ceil: Option<u64>,
        depth: usize,
        prefix: &str,
    ) -> ClassDraft {
        let path = if prefix.is_empty() {
            c.name.node.clone()
        } else {
            format!("{prefix}/{}", c.name.node)
        };
        let mut d = ClassDraft {
            name: c.name.node.clone(),
            name_span: c.name.span,
            head: c.head,
            path,
            depth,
            line: self.lines.line(c.span.start),
            rate: None,
            rate_written: false,
            ceil: None,
            ceil_explicit: false,
            prio: None,
            burst: None,
            cburst: None,
            quantum: None,
            qdisc: None,
            id: None,
            default: None,
            matches: Vec::with_capacity(
                c.stmts
                    .iter()
                    .filter(|s| matches!(s.kind, StmtKind::Match(_)))
                    .count(),
            ),
            match_lines: 0,
            children: Vec::new(),
            minor: 0,
        };
        let mut seen = BTreeMap::new();
        for stmt in &c.stmts {
            self.class_stmt(&mut d, &mut seen, stmt, parent_rate, parent_ceil);
        }
        if !d.ceil_explicit {
            d.ceil = parent_ceil.map(|p| val(p, c.head));
        }
        let rate = d.rate.as_ref().map(|r| r.v);
        let ceil = d.ceil.as_ref().map(|r| r.v);
        let path = d.path.clone();
        d.children = Vec::with_capacity(classes_in(&c.stmts));
        for child in child_classes(c.stmts) {
            let child = self.class(child, rate, ceil, depth + 1, &path);
            d.children.push(child);
        }
        d
    }

    /// One statement of a class block (its child classes are read afterwards).
    fn class_stmt(
        &mut self,
        d: &mut ClassDraft,
        seen: &mut BTreeMap<&'static str, Span>,
        stmt: &ast::Stmt,
        parent_rate: Option<u64>,
        parent_ceil: Option<u64>,
    ) {
        match &stmt.kind {
            StmtKind::Rate(s) if !self.repeated(seen, "rate", stmt) => {
                d.rate_written = true;
                d.rate = self.rate_bits(s, parent_rate, "rate");
            }
            StmtKind::Ceil(s) if !self.repeated(seen, "ceil", stmt) => {
                d.ceil = self.rate_bits(s, parent_ceil, "ceil");
                d.ceil_explicit = true;
            }
            StmtKind::Prio(s) if !self.repeated(seen, "prio", stmt) => {
                d.prio = self
                    .count(s, "prio", 0, 7, Code::NQ055)
                    .map(|v| val(u8::try_from(v.v).unwrap_or(7), v.span));
            }
            StmtKind::Burst(s) if !self.repeated(seen, "burst", stmt) => d.burst = self.size(s),
            StmtKind::Cburst(s) if !self.repeated(seen, "cburst", stmt) => d.cburst = self.size(s),
            StmtKind::Quantum(s) if !self.repeated(seen, "quantum", stmt) => {
                d.quantum = self.quantum(s);
            }
            StmtKind::Id(s) if !self.repeated(seen, "id", stmt) => {
                d.id = self.one(s, "class id").and_then(|item| {
                    values::class_id(&item, self.diags).map(|m| val(m, item.span))
                });
            }
            StmtKind::Qdisc(q) if !self.repeated(seen, "qdisc", stmt) => {
                d.qdisc = self.qdisc(q, stmt.span);
            }
            StmtKind::DefaultFlag if !self.repeated(seen, "default", stmt) => {
                d.default = Some(stmt.span);
            }
            StmtKind::Match(m) => {
                d.match_lines += 1;
                if let Some(m) = self.match_line(m, stmt.span) {
                    d.matches.push(m);
                }
            }
            StmtKind::Unknown(u) => unknown(u, CLASS, self.diags),
            StmtKind::R2q(_) | StmtKind::Mtu(_) | StmtKind::Ifb(_) | StmtKind::DefaultRef(_) => {
                let kw = stmt.kind.keyword().to_string();
                self.diags.push(
                    Diagnostic::new(
                        Code::NQ041,
                        format!("`{kw}` cannot be used in a class block"),
                    )
                    .label(
                        stmt.keyword,
                        format!("`{kw}` belongs in the interface block"),
                    )
                    .help(format!("move it to the interface; write {}", form(&kw))),
                );
            }
            _ => {}
        }
    }

    fn qdisc(&mut self, q: &ast::Qdisc, span: Span) -> Option<QdiscDraft> {
        let kind = q.kind.node.as_str();
        if !QDISCS.contains(&kind) {
            self.diags.push(
                Diagnostic::new(Code::NQ041, format!("unknown leaf qdisc `{kind}`"))
                    .label(q.kind.span, "not a qdisc netqos can attach")
                    .help(suggest::help_for(kind, QDISCS)),
            );
            return None;
        }
        let allowed: &[&str] = match kind {
            "tbf" => &["rate", "burst", "limit", "latency", "peakrate"],
            _ => &["limit"],
        };
        let mut params: BTreeMap<String, Span> = BTreeMap::new();
        let mut items: BTreeMap<String, Item> = BTreeMap::new();
        for (name, value) in &q.params {
            if !allowed.contains(&name.node.as_str()) {
                self.diags.push(
                    Diagnostic::new(
                        Code::NQ041,
                        format!("`{kind}` has no parameter `{}`", name.node),
                    )
                    .label(name.span, "unknown parameter")
                    .help(suggest::help_for(&name.node, allowed)),
                );
                continue;
            }
            if let Some(first) = params.get(&name.node) {
                self.diags.push(
                    Diagnostic::new(
                        Code::NQ056,
                        format!("qdisc parameter `{}` is given twice", name.node),
                    )
                    .label(name.span, "given again here")
                    .label(*first, "first given here")
                    .help("keep one"),
                );
                continue;
            }
            params.insert(name.node.clone(), value.span());
            if let Some(item) = self.one(value, &name.node) {
                items.insert(name.node.clone(), item);
            }
        }
        let packets = |b: &mut Self, key: &str| -> Result<Option<u32>, ()> {
            match items.get(key) {
                None => Ok(None),
                Some(i) => values::count(
                    i,
                    "packet limit",
                    1,
                    u64::from(u32::MAX),
                    Code::NQ021,
                    b.diags,
                )
                .map(|n| Some(u32::try_from(n).unwrap_or(u32::MAX)))
                .ok_or(()),
            }
        };
        let q = match kind {
            "pfifo" => LeafQdisc::Pfifo {
                limit_packets: packets(self, "limit").ok()?,
            },
            "fq_codel" => LeafQdisc::FqCodel {
                limit_packets: packets(self, "limit").ok()?,
            },
            "sfq" => LeafQdisc::Sfq {
                limit_packets: packets(self, "limit").ok()?,
            },
            "bfifo" => LeafQdisc::Bfifo {
                limit_bytes: match items.get("limit") {
                    None => None,
                    Some(i) => Some(values::size(i, self.diags)?),
                },
            },
            _ => return self.tbf(&items, params, span),
        };
        Some(QdiscDraft { q, span, params })
    }

    fn tbf(
        &mut self,
        items: &BTreeMap<String, Item>,
        params: BTreeMap<String, Span>,
        span: Span,
    ) -> Option<QdiscDraft> {
        let mut ok = true;
        let rate = self.tbf_rate(items, "rate", &mut ok);
        let peakrate = self.tbf_rate(items, "peakrate", &mut ok);
        let burst = items.get("burst").and_then(|i| values::size(i, self.diags));
        let limit_bytes = items.get("limit").and_then(|i| values::size(i, self.diags));
        let latency_us = items
            .get("latency")
            .and_then(|i| values::duration_us(i, self.diags));
        if let Some(d) = tbf_shape(&params, span) {
            self.diags.push(d);
            return None;
        }
        let (rate, burst) = (rate?, burst?);
        if !ok {
            return None;
        }
        if let Some(d) = tbf_rates(rate, peakrate, &params, span) {
            self.diags.push(d);
            return None;
        }
        let q = LeafQdisc::Tbf {
            rate,
            burst,
            limit_bytes,
            latency_us,
            peakrate,
        };
        Some(QdiscDraft { q, span, params })
    }

    /// A tbf rate parameter (absolute: NQ020 for a percentage); `ok` turns false when it is
    /// given but unusable.
    fn tbf_rate(
        &mut self,
        items: &BTreeMap<String, Item>,
        key: &str,
        ok: &mut bool,
    ) -> Option<u64> {
        let i = items.get(key)?;
        match values::rate(i, self.diags) {
            Some(RateSpec::Bits(bits)) => Some(bits),
            Some(RateSpec::Percent(_)) => {
                self.diags.push(
                    i.label(
                        Diagnostic::new(
                            Code::NQ020,
                            format!("tbf {key} must be an absolute rate, not `{}`", i.text),
                        ),
                        "percentage",
                    )
                    .help("write the rate with a unit, e.g. `rate 50mbit`"),
                );
                *ok = false;
                None
            }
            None => {
                *ok = false;
                None
            }
        }
    }

    fn match_line(&mut self, m: &ast::Match, span: Span) -> Option<MatchDraft> {
        let mut pod_span: Option<Span> = None;
        let mut pod_addrs = Vec::new();
        let mut outer_addr: Option<(Span, AddrDir)> = None;
        let mut out = Match {
            line: self.lines.line(span.start),
            ..Match::default()
        };
        let mut ok = true;
        let mut proto_span: Option<Span> = None;
        let mut port_span: Option<Span> = None;
        let mut seen: BTreeMap<&'static str, Span> = BTreeMap::new();
        for f in &m.fields {
            match f {
                MatchField::Proto(p) => {
                    ok &= self.proto_field(&mut out, &mut proto_span, p);
                }
                MatchField::Addr(dir, list) => {
                    let key = dir.node.as_str();
                    ok &= self.once(&mut seen, key, dir.span);
                    outer_addr.get_or_insert((dir.span, dir.node));
                    let (cidrs, read) = self.list(list, values::cidr);
                    ok &= read;
                    match dir.node {
                        AddrDir::Src => out.src = Some(cidrs),
                        AddrDir::Dst => out.dst = Some(cidrs),
                    }
                }
                MatchField::Pods(s) => {
                    ok &= self.once(&mut seen, "pods", *s);
                    pod_span.get_or_insert(*s);
                    out.pod.get_or_insert_with(Default::default).any = true;
                }
                MatchField::PodAddr(dir, list) => {
                    let key = match dir.node {
                        AddrDir::Src => "pod src",
                        AddrDir::Dst => "pod dst",
                    };
                    ok &= self.once(&mut seen, key, dir.span);
                    pod_span.get_or_insert(dir.span);
                    ok &= self.pod_addr_field(&mut out, &mut pod_addrs, dir.node, list);
                }
                MatchField::Port(dir, list) => {
                    let key = dir.node.as_str();
                    ok &= self.once(&mut seen, key, dir.span);
                    port_span.get_or_insert(dir.span);
                    let (ports, read) = self.list(list, values::port_range);
                    ok &= read;
                    match dir.node {
                        PortDir::Sport => out.sport = Some(ports),
                        PortDir::Dport => out.dport = Some(ports),
                    }
                }
                MatchField::Bad(b) => {
                    self.diags.push(bad_field(b));
                    ok = false;
                    break;
                }
            }
        }
        if let (Some(Proto::Icmp), Some(ps), Some(pr)) = (out.proto, port_span, proto_span) {
            self.diags.push(icmp_ports(ps, pr));
            ok = false;
        }
        if let (Some(pod), Some((outer, dir))) = (pod_span, outer_addr) {
            self.diags.push(outer_and_pod(dir, outer, pod));
            ok = false;
        }
        if ok {
            self.mixed_families(&out, span);
        }
        ok.then_some(MatchDraft {
            m: out,
            span,
            pod_span,
            pod_addrs,
        })
    }

    /// NQ056 when `key` was already in this match line; false then.
    fn once(
        &mut self,
        seen: &mut BTreeMap<&'static str, Span>,
        key: &'static str,
        at: Span,
    ) -> bool {
        match seen.insert(key, at) {
            Some(first) => {
                self.diags.push(twice(key, at, first));
                false
            }
            None => true,
        }
    }

    /// `pod src|dst ADDRESSES` into `out.pod`, sorted and deduplicated; every address with
    /// where it was written into `pod_addrs`. False when an item did not read.
    fn pod_addr_field(
        &mut self,
        out: &mut Match,
        pod_addrs: &mut Vec<(crate::model::Cidr, Span)>,
        dir: AddrDir,
        list: &[ast::Value],
    ) -> bool {
        let (mut cidrs, read) = self.list_spanned(list, values::cidr);
        pod_addrs.extend(cidrs.iter().copied());
        cidrs.sort();
        cidrs.dedup_by(|a, b| a.0 == b.0);
        let cidrs = cidrs.into_iter().map(|c| c.0).collect();
        let pod = out.pod.get_or_insert_with(Default::default);
        match dir {
            AddrDir::Src => pod.src = Some(cidrs),
            AddrDir::Dst => pod.dst = Some(cidrs),
        }
        read
    }

    /// Like [`Self::list`], keeping where each item was written (not deduplicated).
    fn list_spanned<T: Ord + Copy>(
        &mut self,
        list: &[ast::Value],
        read: fn(&Item, &mut Diagnostics) -> Option<T>,
    ) -> (Vec<(T, Span)>, bool) {
        let mut out = Vec::new();
        let mut ok = true;
        for v in list {
            match self.env.items_of_value(v, self.diags) {
                Some(items) => {
                    for i in items {
                        match read(&i, self.diags) {
                            Some(x) => out.push((x, i.span)),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        (out, ok)
    }

    /// A match line's protocol; NQ058 (false) when the line already names one.
    fn proto_field(
        &mut self,
        out: &mut Match,
        proto_span: &mut Option<Span>,
        p: &crate::span::Spanned<String>,
    ) -> bool {
        let proto = match p.node.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => Proto::Icmp,
        };
        let mut ok = true;
        if let (Some(prev), Some(first)) = (out.proto, *proto_span) {
            self.diags.push(
                Diagnostic::new(
                    Code::NQ058,
                    format!(
                        "one match line names two protocols, `{}` and `{}`",
                        prev.as_str(),
                        proto.as_str()
                    ),
                )
                .label(p.span, "second protocol")
                .label(first, "first protocol")
                .help("fields of one match are AND-ed; write two match lines to accept either"),
            );
            ok = false;
        }
        out.proto = Some(proto);
        *proto_span = Some(p.span);
        ok
    }

    /// Every item of a match field's list read with `read`, sorted and deduplicated, and
    /// whether all of them could be read.
    fn list<T: Ord>(
        &mut self,
        list: &[ast::Value],
        read: fn(&Item, &mut Diagnostics) -> Option<T>,
    ) -> (Vec<T>, bool) {
        let mut out = Vec::new();
        let mut ok = true;
        for v in list {
            match self.env.items_of_value(v, self.diags) {
                Some(items) => {
                    for i in items {
                        match read(&i, self.diags) {
                            Some(x) => out.push(x),
                            None => ok = false,
                        }
                    }
                }
                None => ok = false,
            }
        }
        out.sort();
        out.dedup();
        (out, ok)
    }

    fn mixed_families(&mut self, m: &Match, span: Span) {
        let fams = |v: &Option<Vec<crate::model::Cidr>>| {
            v.as_ref().map(|cs| {
                (
                    cs.iter().any(super::super::model::Cidr::is_v4),
                    cs.iter().any(|c| !c.is_v4()),
                )
            })
        };
        if let (Some((s4, s6)), Some((d4, d6))) = (fams(&m.src), fams(&m.dst))
            && !((s4 && d4) || (s6 && d6))
        {
            let (sf, df) = (
                if s4 { "IPv4" } else { "IPv6" },
                if d4 { "IPv4" } else { "IPv6" },
            );
            self.diags.push(
                Diagnostic::new(
                    Code::NQ059,
                    format!(
                        "match has {sf} sources and {df} destinations: no packet can have both"
                    ),
                )
                .label(span, "never matches")
                .help("a packet is either IPv4 or IPv6: split this into one match per family"),
            );
        }
    }

    /// The `pods` block is read by `pods::read`; this only exposes `unknown` for it.
    pub fn pods_unknown(&mut self, u: &Unknown) {
        unknown(u, PODS, self.diags);
    }

    /// Top-level statements netqos does not know.
    pub fn top_unknown(&mut self, u: &Unknown) {
        if u.word.node == "netqos" {
            self.diags.push(
                Diagnostic::new(
                    Code::NQ052,
                    "the `netqos` version line must be the first statement",
                )
                .label(u.span, "too late")
                .help("move `netqos 1` to the top of the file"),
            );
            return;
        }
        unknown(u, TOP, self.diags);
    }
}

fn twice(key: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::NQ056,
        format!("`{key}` is given twice in one match line"),
    )
    .label(span, "given again here")
    .label(first, "first given here")
    .help(format!("list all values after one `{key}`: `{key} a, b`"))
}

/// NQ041 for every unknown statement in the file, without checking anything else.
pub fn unknown_statements(file: &ast::File) -> Diagnostics {
    fn stmts(list: &[Stmt], allowed: &[&str], diags: &mut Diagnostics) {
        for s in list {
            match &s.kind {
                StmtKind::Unknown(u) => unknown(u, allowed, diags),
                StmtKind::Class(c) => stmts(&c.stmts, CLASS, diags),
                StmtKind::Match(m) => {
                    for f in &m.fields {
                        if let MatchField::Bad(b) = f {
                            diags.push(
                                Diagnostic::new(
                                    Code::NQ041,
                                    format!("unknown match field `{}`", b.node),
                                )
                                .label(b.span, "not a match field")
                                .help(suggest::help_for(&b.node, MATCH_FIELDS)),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut diags = Diagnostics::new();
    for item in &file.items {
        match item {
            ast::Item::Unknown(u) => unknown(u, TOP, &mut diags),
            ast::Item::Interface(i) => stmts(&i.stmts, IFACE, &mut diags),
            ast::Item::Pods(p) => {
                for s in &p.stmts {
                    if let PodsStmtKind::Unknown(u) = &s.kind {
                        unknown(u, PODS, &mut diags);
                    }
                }
            }
            ast::Item::Let(_) | ast::Item::Allow(_) => {}
        }
    }
    diags
}

/// NQ041: a word in a match line that is not a match field.
fn bad_field(b: &crate::span::Spanned<String>) -> Diagnostic {
    Diagnostic::new(Code::NQ041, format!("unknown match field `{}`", b.node))
        .label(b.span, "not a match field")
        .help(suggest::help_for(&b.node, MATCH_FIELDS))
}

/// NQ093: an outer-header `src`/`dst` and a pod field in one match line.
fn outer_and_pod(dir: AddrDir, outer: Span, pod: Span) -> Diagnostic {
    let d = dir.as_str();
    Diagnostic::new(
        Code::NQ093,
        format!("`{d}` and a pod field in one match line: `{d}` reads the outer header, which a pod's packet does not have yet"),
    )
    .label(outer, "outer address")
    .label(pod, "pod-side field")
    .help(format!("for the pod packet's address write `pod {d} ADDRESS` (inside `cidr`); for node addresses write a separate match line"))
}

/// NQ058: ports with `icmp`.
fn icmp_ports(ports: Span, icmp: Span) -> Diagnostic {
    Diagnostic::new(Code::NQ058, "ports with `icmp`: ICMP has no ports")
        .label(ports, "ports")
        .label(icmp, "icmp")
        .help("remove the ports, or match `tcp`/`udp` instead")
}

/// NQ020 when a tbf lacks its rate or burst, or has both or neither of `limit` and
/// `latency`.
fn tbf_shape(params: &BTreeMap<String, Span>, span: Span) -> Option<Diagnostic> {
    let missing: Vec<&str> = ["rate", "burst"]
        .into_iter()
        .filter(|k| !params.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Some(
            Diagnostic::new(Code::NQ020, format!("tbf needs {}", missing.join(" and ")))
                .label(span, "incomplete tbf")
                .help("write `qdisc tbf rate RATE burst SIZE latency 50ms`"),
        );
    }
    match (params.get("limit"), params.get("latency")) {
        (Some(l), Some(t)) => Some(
            Diagnostic::new(Code::NQ020, "tbf takes `limit` or `latency`, not both")
                .label(*l, "limit")
                .label(*t, "latency")
                .help("keep one: `latency 50ms` is usually clearer"),
        ),
        (None, None) => Some(
            Diagnostic::new(
                Code::NQ020,
                "tbf needs `limit` or `latency` (tc refuses it without one)",
            )
            .label(span, "no queue bound")
            .help("add `latency 50ms` (or `limit SIZE`)"),
        ),
        _ => None,
    }
}

/// NQ020 for a tbf rate of 0 or a peak rate not above the rate (the kernel refuses both).
fn tbf_rates(
    rate: u64,
    peakrate: Option<u64>,
    params: &BTreeMap<String, Span>,
    span: Span,
) -> Option<Diagnostic> {
    if rate == 0 {
        return Some(
            Diagnostic::new(Code::NQ020, "tbf rate is 0 (tc refuses it)")
                .label(params.get("rate").copied().unwrap_or(span), "zero rate")
                .help("give the tbf a positive rate"),
        );
    }
    let (p, pspan) = (peakrate?, params.get("peakrate")?);
    (p <= rate).then(|| {
        Diagnostic::new(
            Code::NQ020,
            format!(
                "tbf peakrate {} must be above its rate {} (the kernel refuses it)",
                units::fmt_rate(p),
                units::fmt_rate(rate)
            ),
        )
        .label(*pspan, "not above the rate")
        .help("raise peakrate above rate, or remove it")
    })
}
