//! Checking: syntax tree + external variables → model, with every problem reported at once.
//!
//! Sub-stages: `env` (variables) → `build` (statements into drafts, unit normalisation) →
//! `ids` (class ids) → `devices`, `tree`, `queues`, `classify`, `pods` (checks) → model.

mod build;
mod cascade;
mod classify;
mod devices;
mod env;
mod ids;
mod overlay;
mod pods;
mod prio;
mod queues;
mod suggest;
mod tree;
mod values;

pub use cascade::is_root;
pub use classify::{covers, overlaps};
pub use devices::{default_ifb, name_problem};
pub use ids::preferred_minor;

use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{self, Model};
use crate::span::LineIndex;
use crate::syntax::ast::{self, File, Item};
use crate::vars::ExternalVars;
use build::{Builder, ClassDraft, IfaceDraft};

/// The outcome of checking: the model when there is no error, and every diagnostic.
#[derive(Debug)]
pub struct Checked {
    pub model: Option<Model>,
    pub diagnostics: Diagnostics,
}

/// Checks a parsed policy. The tree is consumed: each interface's statements are freed as
/// they are read into drafts (what remains serves the checks that need only spans).
#[must_use]
pub fn check(file: File, src: &str, vars: &ExternalVars) -> Checked {
    check_from(file, src, vars, crate::parallel::FROM)
}

/// [`check`], its interfaces on two threads from `parallel_from` classes.
fn check_from(mut file: File, src: &str, vars: &ExternalVars, parallel_from: usize) -> Checked {
    let mut diags = Diagnostics::new();
    header(&file, &mut diags);
    let lets: Vec<ast::Let> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Let(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    let lets: Vec<&ast::Let> = lets.iter().collect();
    let lines = LineIndex::new(src);
    let env = env::Env::new(&lets, vars, &mut diags);
    let mut b = Builder {
        env,
        diags: &mut diags,
        lines: &lines,
    };
    let mut drafts: Vec<IfaceDraft> = Vec::new();
    let mut pods_model = None;
    let mut pods_seen = None;
    let mut pod_sites = pods::Sites::default();
    for item in &mut file.items {
        match item {
            Item::Let(_) | Item::Allow(_) => {}
            Item::Interface(i) => {
                let stmts = std::mem::take(&mut i.stmts);
                drafts.push(b.interface(i, stmts));
            }
            Item::Pods(p) => {
                if let Some(first) = pods_seen {
                    b.diags.push(
                        Diagnostic::new(Code::NQ056, "the `pods` block is given twice")
                            .label(p.head, "second block")
                            .label(first, "first block")
                            .help("merge the two `pods` blocks"),
                    );
                } else {
                    pods_seen = Some(p.head);
                    pods_model = pods::read(&mut b, p, &mut pod_sites);
                }
            }
            Item::Unknown(u) => b.top_unknown(u),
        }
    }
    let unused = b.env.unused();
    let (ifbs, defaults) = interface_checks(&mut drafts, parallel_from, &mut diags);
    let fastest_link = drafts
        .iter()
        .filter_map(|d| d.rate.as_ref().map(|r| r.v))
        .max();
    pods::post_check(&pod_sites, fastest_link, &mut diags);
    overlay::check(&drafts, &pod_sites, &mut diags);
    diags.extend(unused);
    cascade::suppress_knock_ons(&file, &mut diags);
    allow(&file, &mut diags);
    let model = if diags.has_errors() {
        None
    } else {
        to_model(drafts, &ifbs, &defaults, pods_model)
    };
    Checked {
        model,
        diagnostics: diags,
    }
}

/// Class ids, then the devices, then the checks of each interface's tree, queues,
/// priorities and classification: each interface's IFB and default minor.
fn interface_checks(
    drafts: &mut [IfaceDraft],
    parallel_from: usize,
    diags: &mut Diagnostics,
) -> (Vec<Option<String>>, Vec<Option<u16>>) {
    let ids = |d: &mut IfaceDraft| {
        let mut found = Diagnostics::new();
        ids::assign(&mut d.classes, &mut found);
        found
    };
    for found in each_interface_from(drafts, &ids, parallel_from) {
        diags.append(found);
    }
    let ifbs = devices::check(drafts, diags);
    let checks = |d: &mut IfaceDraft| {
        let mut found = Diagnostics::new();
        let default = tree::check(d, &mut found);
        queues::check(d, &mut found);
        prio::check(d, &mut found);
        classify::check(d, default, &mut found);
        (default, found)
    };
    let mut defaults = Vec::new();
    for (default, found) in each_interface_from(drafts, &checks, parallel_from) {
        diags.append(found);
        defaults.push(default);
    }
    (ifbs, defaults)
}

/// `f` of every interface, in order, on two threads for many classes (`parallel`): these
/// checks read one interface's drafts each, and their diagnostics are appended in
/// interface order, so the report is the one a single thread gives.
fn each_interface_from<T: Send>(
    drafts: &mut [IfaceDraft],
    f: &(dyn Fn(&mut IfaceDraft) -> T + Sync),
    parallel_from: usize,
) -> Vec<T> {
    crate::parallel::map_in_two(drafts, &IfaceDraft::class_count, parallel_from, f)
}

fn header(file: &File, diags: &mut Diagnostics) {
    match &file.header {
        None => {
            let at = file
                .items
                .first()
                .map_or(crate::span::Span::new(0, 0), |i| {
                    let s = i.span();
                    crate::span::Span::new(s.start, s.start)
                });
            diags.push(
                Diagnostic::new(Code::NQ052, "the policy does not say its language version")
                    .label(at, "expected `netqos 1` before this")
                    .help("start the file with the line `netqos 1`"),
            );
        }
        Some(v) if v.node != "1" => diags.push(
            Diagnostic::new(
                Code::NQ052,
                format!("language version {} is not supported", v.node),
            )
            .label(v.span, "unsupported version")
            .help("this netqos reads version 1: write `netqos 1`"),
        ),
        Some(_) => {}
    }
}

/// Builds the model from drafts known to be error-free, moving their names and matches
/// (a draft is dropped as soon as its class is built, so the two are never both whole).
fn to_model(
    drafts: Vec<IfaceDraft>,
    ifbs: &[Option<String>],
    defaults: &[Option<u16>],
    pods: Option<model::Pods>,
) -> Option<Model> {
    let mut interfaces = Vec::with_capacity(drafts.len());
    for (n, d) in drafts.into_iter().enumerate() {
        let rate = d.rate.as_ref()?.v;
        let max_packet = u32::try_from(d.max_packet()).unwrap_or(1514);
        interfaces.push(model::Interface {
            device: d.device?.text,
            direction: d.direction,
            ifb: ifbs.get(n).cloned().flatten(),
            rate,
            burst: d.burst.map(|b| b.v),
            cburst: d.cburst.map(|b| b.v),
            r2q: d.r2q.map(|r| r.v),
            max_packet,
            default_minor: (*defaults.get(n)?)?,
            classes: classes(d.classes)?,
            line: d.line,
        });
    }
    Some(Model { interfaces, pods })
}

/// The classes of drafts, in a vector of their own: collected in place, the drafts'
/// allocation (512 bytes a class) would be kept for the model's (232).
fn classes(drafts: Vec<ClassDraft>) -> Option<Vec<model::Class>> {
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        out.push(class(d)?);
    }
    Some(out)
}

fn class(c: ClassDraft) -> Option<model::Class> {
    Some(model::Class {
        name: c.name,
        path: c.path,
        minor: c.minor,
        rate: c.rate?.v,
        ceil: c.ceil?.v,
        prio: c.prio.map_or(0, |p| p.v),
        burst: c.burst.map(|b| b.v),
        cburst: c.cburst.map(|b| b.v),
        quantum: c.quantum.map(|q| q.v),
        qdisc: c.qdisc.map(|q| q.q),
        is_default: c.default.is_some(),
        matches: c.matches.into_iter().map(|m| m.m).collect(),
        children: classes(c.children)?,
        line: c.line,
    })
}

/// NQ041 for every statement the parser could only read as unknown (used by `fmt`).
#[must_use]
pub fn unknown_statements(file: &File) -> Diagnostics {
    build::unknown_statements(file)
}

/// `allow CODE, …`: drops the warnings and infos the file accepts (NQ068 for a code that is
/// unknown or an error, NQ069 for one that nothing raised).
fn allow(file: &File, diags: &mut Diagnostics) {
    let mut allowed = Vec::new();
    for item in &file.items {
        let Item::Allow(a) = item else { continue };
        for c in &a.codes {
            match Code::parse(&c.node) {
                Some(code) if code.severity() != crate::diagnostic::Severity::Error => {
                    allowed.push((code, c.span));
                }
                Some(code) => diags.push(
                    Diagnostic::new(
                        Code::NQ068,
                        format!("{code} is an error and cannot be allowed"),
                    )
                    .label(c.span, "an error")
                    .help(format!(
                        "fix what {code} reports; `netqos explain {code}` says how"
                    )),
                ),
                None => diags.push(
                    Diagnostic::new(
                        Code::NQ068,
                        format!("`{}` is not a netqos diagnostic code", c.node),
                    )
                    .label(c.span, "no such code")
                    .help("write a code such as NQ066; `netqos explain` lists them"),
                ),
            }
        }
    }
    if allowed.is_empty() {
        return;
    }
    let raised: Vec<Code> = diags.iter().map(|d| d.code).collect();
    diags.retain(|d| d.is_error() || !allowed.iter().any(|(c, _)| *c == d.code));
    for (code, span) in allowed {
        if !raised.contains(&code) {
            diags.push(
                Diagnostic::new(
                    Code::NQ069,
                    format!("`allow {code}` has no effect: nothing raises {code}"),
                )
                .label(span, "nothing to allow")
                .help("remove it, so that a future case is not hidden"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three interfaces of `n` classes each, with `names` distinct names among them (the
    /// rest repeat: NQ042 past the per-code cap) and overlapping matches (NQ023).
    fn policy(n: usize, names: usize, rate: &str) -> String {
        crate::testing::host_policy(rate, &[n; 3], &|i, c| {
            let (_, m) = crate::testing::host(i, c);
            let m = if c % 3 == 0 {
                format!("tcp dport {}", 1000 + c)
            } else {
                m
            };
            (c % names, m)
        })
    }

    #[test]
    fn interfaces_checked_on_two_threads_report_what_one_thread_reports() {
        let vars = ExternalVars::default();
        let texts = [
            include_str!("../../examples/multi-interface.nq").to_string(),
            policy(1500, 700, "1gbit"),
            policy(40, 40, "10gbit"),
        ];
        for text in &texts {
            let run = |from| {
                let file = crate::syntax::parse(text).expect("parses");
                let c = check_from(file, text, &vars, from);
                (c.model, c.diagnostics.into_sorted())
            };
            let one = run(usize::MAX);
            for from in [0, 100] {
                assert_eq!(run(from), one, "from {from}");
            }
        }
        let (_, many) = {
            let file = crate::syntax::parse(&texts[1]).expect("parses");
            let c = check_from(file, &texts[1], &vars, 0);
            (c.model, c.diagnostics.into_sorted())
        };
        let dups = many.iter().filter(|d| d.code == Code::NQ042).count();
        assert_eq!(dups, crate::diagnostic::MAX_PER_CODE);
    }
}
