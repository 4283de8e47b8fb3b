//! Reads a CNI conflist and works out the one change that makes pod bandwidth annotations
//! work: a `{"type":"bandwidth","capabilities":{"bandwidth":true}}` entry right after the
//! interface-creating plugin. Produces the RFC 6902 patch, its reverse, and the patched text
//! (the original bytes with one insertion), or the diagnostics that refuse it (NQ034–NQ036,
//! NQ067).

use serde_json::{Value, json};

use super::json_patch::{self, Op};
use super::json_spans::{self, Node};
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Severity};
use crate::span::Span;

/// Chained plugins that modify an interface but never create one.
const CHAINED: &[&str] = &[
    "bandwidth",
    "portmap",
    "tuning",
    "firewall",
    "sbr",
    "vrf",
    "netqos",
];

/// Keys that make the plugin ignore every pod's annotations (research/cni.md §1.1).
pub const STATIC_KEYS: &[&str] = &["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

/// The entry netqos adds.
#[must_use]
pub fn bandwidth_entry() -> Value {
    json!({"type": "bandwidth", "capabilities": {"bandwidth": true}})
}

/// What the conflist needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Add the entry: the patch, its reverse and the patched text.
    Patch(Patch),
    /// An equivalent entry is already at `index`: nothing to do.
    Present { index: usize },
    /// The main plugin is Calico without the entry: Calico ≥ 3.30 shapes pods itself from the
    /// same annotations and no longer ships the plugin binary, so adding it would break pods.
    CalicoNative,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// Index in `plugins` where the entry goes (right after the main plugin).
    pub index: usize,
    /// The type of the interface-creating plugin.
    pub main: String,
    pub ops: Vec<Op>,
    pub reverse: Vec<Op>,
    /// The original text with the entry inserted; nothing else changes.
    pub patched_text: String,
}

/// Reads `text` and decides. `has_limits`: the policy sets pod limits, so static rates that
/// override annotations are an error rather than a warning.
#[must_use]
pub fn analyse(text: &str, has_limits: bool) -> (Option<Outcome>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let outcome = analyse_inner(text, has_limits, &mut diags);
    (outcome, diags)
}

fn structure(message: impl Into<String>, span: Span, label: &str, help: &str) -> Diagnostic {
    Diagnostic::new(Code::NQ034, message)
        .label(span, label)
        .help(help)
}

fn analyse_inner(text: &str, has_limits: bool, diags: &mut Vec<Diagnostic>) -> Option<Outcome> {
    let (value, tree) = read(text, diags)?;
    let chain = Chain::of(text, &value, &tree, diags)?;
    let bw: Vec<usize> = (0..chain.types.len())
        .filter(|&i| chain.types[i] == "bandwidth")
        .collect();
    match bw[..] {
        [] => {}
        [i] => return chain.present(i, has_limits, diags),
        [first, second, ..] => {
            let d = structure(
                format!("the chain has {} `bandwidth` entries", bw.len()),
                chain.nodes[second].span,
                "second entry",
                "keep one bandwidth entry; a second one shapes every pod twice and its DEL removes the first's IFB",
            );
            diags.push(d.label(chain.nodes[first].span, "first entry"));
            return None;
        }
    }
    if chain.types[chain.main] == "calico" {
        diags.push(chain.calico());
        return Some(Outcome::CalicoNative);
    }
    Some(Outcome::Patch(chain.patch()))
}

/// The parsed conflist and its byte spans, or NQ034 saying why it cannot be patched.
fn read(text: &str, diags: &mut Vec<Diagnostic>) -> Option<(Value, Node)> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let at = offset_of(text, e.line(), e.column());
            diags.push(structure(
                format!("the conflist is not valid JSON: {e}"),
                Span::char_at(text, at),
                "JSON error here",
                "fix the file (the CNI runtime cannot read it either), or point --conflist at the right file",
            ));
            return None;
        }
    };
    let Some(tree) = json_spans::scan(text) else {
        diags.push(structure(
            "the conflist could not be read for patching",
            Span::char_at(text, 0),
            "here",
            "re-save the file as plain JSON",
        ));
        return None;
    };
    if let Some(d) = duplicate_key(&tree, text) {
        diags.push(d);
        return None;
    }
    if !value.is_object() {
        diags.push(structure(
            "the conflist is not a JSON object",
            tree.span,
            "expected `{ \"name\": …, \"plugins\": [ … ] }`",
            "a conflist is an object with `name`, `cniVersion` and a `plugins` list",
        ));
        return None;
    }
    Some((value, tree))
}

/// The plugin chain of a conflist: each entry's value, span and type, and the main
/// (interface-creating) plugin.
struct Chain<'a> {
    text: &'a str,
    plugins: &'a [Value],
    nodes: &'a [Node],
    types: Vec<&'a str>,
    main: usize,
}

impl<'a> Chain<'a> {
    /// The chain of an object conflist, or NQ034 when its `plugins` list is missing, holds
    /// an entry without `type`, or has no interface-creating plugin.
    fn of(
        text: &'a str,
        value: &'a Value,
        tree: &'a Node,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Self> {
        let (plugins, nodes) = plugin_list(value, tree, diags)?;
        let mut types = Vec::new();
        for (i, (p, node)) in plugins.iter().zip(nodes).enumerate() {
            let Some(t) = p.get("type").and_then(Value::as_str) else {
                diags.push(structure(
                    format!("plugin entry {i} has no `type`"),
                    node.span,
                    "no type",
                    "every entry of `plugins` names its plugin binary in `type`",
                ));
                return None;
            };
            types.push(t);
        }
        let Some(main) = types.iter().position(|t| !CHAINED.contains(t)) else {
            let whole = Span::char_at(text, 0);
            let span = tree.get("plugins").map_or(whole, |m| m.value.span);
            diags.push(structure(
                format!(
                    "the chain [{}] has no interface-creating plugin",
                    types.join(", ")
                ),
                span,
                "only chained plugins",
                "the first entry must create the pod's interface (flannel, calico, bridge, ptp, …); bandwidth needs its result",
            ));
            return None;
        };
        Some(Chain {
            text,
            plugins,
            nodes,
            types,
            main,
        })
    }

    /// The one bandwidth entry, at `i`: present when it is usable, else the diagnostics.
    fn present(&self, i: usize, has_limits: bool, diags: &mut Vec<Diagnostic>) -> Option<Outcome> {
        let (node, main) = (&self.nodes[i], self.main);
        if i < main {
            diags.push(
                structure(
                    format!(
                        "`bandwidth` is entry {i}, before the interface-creating plugin `{}` (entry {main})",
                        self.types[main]
                    ),
                    node.span,
                    "runs before the pod has an interface",
                    &format!(
                        "move the bandwidth entry after `{}`: it needs that plugin's result (the plugin fails with \"must be called as chained plugin\")",
                        self.types[main]
                    ),
                )
                .label(self.nodes[main].span, "main plugin"),
            );
            return None;
        }
        let entry = &self.plugins[i];
        let statics: Vec<&str> = STATIC_KEYS
            .iter()
            .copied()
            .filter(|k| entry.get(*k).is_some())
            .collect();
        if !statics.is_empty() {
            static_values(entry, node, self.plugins.get(main), diags);
            diags.push(static_rates(node, &statics, has_limits));
            return None;
        }
        let cap = entry
            .get("capabilities")
            .and_then(|c| c.get("bandwidth"))
            .and_then(Value::as_bool);
        if cap != Some(true) {
            let span = node.get("capabilities").map_or(node.span, |m| m.value.span);
            diags.push(structure(
                "the bandwidth entry does not declare `\"capabilities\": {\"bandwidth\": true}`",
                span,
                "capability missing",
                "add \"capabilities\": {\"bandwidth\": true} to the entry: without it the runtime never passes the annotations to the plugin",
            ));
            return None;
        }
        Some(Outcome::Present { index: i })
    }

    /// NQ067: Calico shapes pods itself.
    fn calico(&self) -> Diagnostic {
        let node = &self.nodes[self.main];
        Diagnostic::new(
            Code::NQ067,
            "the conflist chains `calico` without `bandwidth`: Calico 3.30 and later shape pods themselves",
        )
        .label(
            node.get("type").map_or(node.span, |m| m.key_span.to(m.value.span)),
            "calico",
        )
        .help("netqos leaves this file alone: Felix applies kubernetes.io/*-bandwidth itself and calico/cni no longer ships the bandwidth binary, so adding it would fail every pod sandbox")
    }

    /// The entry right after the main plugin: the guarded patch, its reverse, the text.
    fn patch(&self) -> Patch {
        let (main, index) = (self.main, self.main + 1);
        let mut ops = vec![Op::Test {
            path: format!("/plugins/{main}/type"),
            value: json!(self.types[main]),
        }];
        // Guard against a second application: the next entry (or, at the end, the whole
        // list) must still be what it was.
        match self.types.get(index) {
            Some(next) => ops.push(Op::Test {
                path: format!("/plugins/{index}/type"),
                value: json!(next),
            }),
            None => ops.push(Op::Test {
                path: "/plugins".into(),
                value: Value::Array(self.plugins.to_vec()),
            }),
        }
        ops.push(Op::Add {
            path: format!("/plugins/{index}"),
            value: bandwidth_entry(),
        });
        let reverse = vec![
            Op::Test {
                path: format!("/plugins/{index}"),
                value: bandwidth_entry(),
            },
            Op::Remove {
                path: format!("/plugins/{index}"),
            },
        ];
        Patch {
            index,
            main: self.types[main].to_string(),
            ops,
            reverse,
            patched_text: insert_after(self.text, &self.nodes[main]),
        }
    }
}

/// The `plugins` array with the spans of its entries, or NQ034.
fn plugin_list<'a>(
    value: &'a Value,
    tree: &'a Node,
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'a [Value], &'a [Node])> {
    match (value.get("plugins"), tree.get("plugins")) {
        (Some(Value::Array(p)), Some(m)) => match m.value.elements() {
            Some(nodes) if nodes.len() == p.len() => Some((p, nodes)),
            _ => None,
        },
        (Some(_), Some(m)) => {
            diags.push(structure(
                "`plugins` is not a list",
                m.value.span,
                "not a list",
                "`plugins` must be a JSON array of plugin entries",
            ));
            None
        }
        _ => {
            let single = value.get("type").is_some();
            diags.push(structure(
                "the conflist has no `plugins` list",
                tree.span,
                if single { "a single-plugin .conf" } else { "no `plugins`" },
                if single {
                    "a single-plugin .conf cannot chain `bandwidth`: convert it to a .conflist with the plugin as the first entry of `plugins`"
                } else {
                    "a conflist lists its chain under `plugins`; check this is the node's CNI config"
                },
            ));
            None
        }
    }
}

/// NQ035: static rates make the plugin ignore every pod's annotations (an error when the
/// policy sets pod limits).
fn static_rates(node: &Node, statics: &[&str], has_limits: bool) -> Diagnostic {
    let d = Diagnostic::new(
        Code::NQ035,
        format!(
            "the bandwidth entry sets {} statically: every pod's annotations are ignored",
            statics.join(", ")
        ),
    )
    .label(static_span(node, statics), "static rate")
    .help("remove ingressRate/ingressBurst/egressRate/egressBurst from the entry so the plugin reads each pod's kubernetes.io/*-bandwidth annotations");
    if has_limits {
        d.severity(Severity::Error)
    } else {
        d
    }
}

/// NQ034 for a key written twice in one object, anywhere in the file: JSON parsers
/// disagree about which one counts (Go's and serde's keep the last), so netqos would patch
/// one and the runtime read the other.
fn duplicate_key(node: &Node, text: &str) -> Option<Diagnostic> {
    match &node.kind {
        json_spans::Kind::Object(members) => {
            for (i, m) in members.iter().enumerate() {
                if let Some(first) = members[..i].iter().find(|f| f.key == m.key) {
                    return Some(
                        structure(
                            format!(
                                "key {} is written twice in one object",
                                &text[m.key_span.start..m.key_span.end]
                            ),
                            m.key_span,
                            "again here",
                            "keep one of them: runtimes read the last one, so a patch of the first would do nothing",
                        )
                        .label(first.key_span, "first here"),
                    );
                }
            }
            members.iter().find_map(|m| duplicate_key(&m.value, text))
        }
        json_spans::Kind::Array(items) => items.iter().find_map(|n| duplicate_key(n, text)),
        json_spans::Kind::Scalar => None,
    }
}

/// NQ036: static values the plugin would reject or that drop every full-size packet.
fn static_values(entry: &Value, node: &Node, main: Option<&Value>, diags: &mut Vec<Diagnostic>) {
    let mtu = main
        .and_then(|m| m.get("mtu"))
        .and_then(Value::as_u64)
        .unwrap_or(1500);
    for dir in ["ingress", "egress"] {
        let rate_key = format!("{dir}Rate");
        let burst_key = format!("{dir}Burst");
        let mut numbers = [None, None];
        for (slot, key) in [&rate_key, &burst_key].into_iter().enumerate() {
            let Some(v) = entry.get(key.as_str()) else {
                continue;
            };
            let span = node.get(key).map_or(node.span, |m| m.value.span);
            match v.as_u64() {
                Some(n) => numbers[slot] = Some((n, span)),
                None => diags.push(
                    Diagnostic::new(
                        Code::NQ036,
                        format!("`{key}` is {v}, not an integer number of bits"),
                    )
                    .label(span, "not an integer")
                    .help("the plugin reads rates as integer bits/s and bursts as integer bits: write e.g. 10000000, not \"10M\""),
                ),
            }
        }
        match numbers {
            [Some((r, span)), None] if r > 0 => diags.push(
                Diagnostic::new(Code::NQ036, format!("`{rate_key}` is set without `{burst_key}`"))
                    .label(span, "rate without burst")
                    .help("set both: the plugin fails with \"if rate is set, burst must also be set\""),
            ),
            [None, Some((b, span))] if b > 0 => diags.push(
                Diagnostic::new(Code::NQ036, format!("`{burst_key}` is set without `{rate_key}`"))
                    .label(span, "burst without rate")
                    .help("set both: the plugin fails with \"if burst is set, rate must also be set\""),
            ),
            [Some((r, _)), Some((b, span))] if r > 0 && b < 8 * mtu => diags.push(
                Diagnostic::new(
                    Code::NQ036,
                    format!("`{burst_key}` {b} bits is less than one {mtu}-byte packet ({} bits)", 8 * mtu),
                )
                .label(span, "burst below the MTU")
                .help(format!("a TBF whose burst is below the MTU drops every full-size packet: use at least {} bits", 8 * mtu)),
            ),
            _ => {}
        }
    }
}

fn static_span(node: &Node, keys: &[&str]) -> Span {
    keys.iter()
        .filter_map(|k| node.get(k))
        .map(|m| m.key_span.to(m.value.span))
        .reduce(Span::to)
        .unwrap_or(node.span)
}

/// The original text with the entry inserted after `main`, laid out like its neighbours.
fn insert_after(text: &str, main: &Node) -> String {
    let element = &text[main.span.start..main.span.end];
    let entry = match main.layout(text, "type") {
        // Multi-line element: its indentation and the step of its first member.
        (Some(lead), step) if element.contains('\n') => {
            let inner = format!("{lead}{step}");
            let inner2 = format!("{inner}{step}");
            format!(
                ",\n{lead}{{\n{inner}\"type\": \"bandwidth\",\n{inner}\"capabilities\": {{\n{inner2}\"bandwidth\": true\n{inner}}}\n{lead}}}"
            )
        }
        (Some(lead), _) => format!(
            ",\n{lead}{{ \"type\": \"bandwidth\", \"capabilities\": {{ \"bandwidth\": true }} }}"
        ),
        (None, _) => {
            ", {\"type\": \"bandwidth\", \"capabilities\": {\"bandwidth\": true}}".to_string()
        }
    };
    let mut out = String::with_capacity(text.len() + entry.len());
    out.push_str(&text[..main.span.end]);
    out.push_str(&entry);
    out.push_str(&text[main.span.end..]);
    out
}

/// Byte offset of a 1-based line and column (serde_json's error position).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (off + column.saturating_sub(1)).min(text.len());
        }
        off += l.len();
    }
    text.len()
}

/// Applies `ops` to the parsed `text` (for checks that the patch and the patched text agree).
#[must_use]
pub fn apply_to_text(text: &str, ops: &[Op]) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    json_patch::apply(&v, ops).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL: &str = include_str!("defaults/flannel.conflist");

    #[test]
    fn flannel_gets_the_entry_after_flannel() {
        let (o, d) = analyse(FLANNEL, true);
        assert!(d.is_empty(), "{d:?}");
        let Some(Outcome::Patch(p)) = o else { panic!() };
        assert_eq!(p.index, 1);
        let from_patch = apply_to_text(FLANNEL, &p.ops).unwrap();
        let from_text: Value = serde_json::from_str(&p.patched_text).unwrap();
        assert_eq!(
            serde_json::to_string(&from_patch).unwrap(),
            serde_json::to_string(&from_text).unwrap()
        );
        // Twice = once: the guard refuses a second application.
        assert!(json_patch::apply(&from_patch, &p.ops).is_err());
        // Reverse restores the original.
        let back = json_patch::apply(&from_patch, &p.reverse).unwrap();
        let orig: Value = serde_json::from_str(FLANNEL).unwrap();
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&orig).unwrap()
        );
        // Re-reading the patched file finds the entry: a no-op.
        assert_eq!(
            analyse(&p.patched_text, true).0,
            Some(Outcome::Present { index: 1 })
        );
    }

    #[test]
    fn refusals_have_codes() {
        let cases: &[(&str, Code)] = &[
            ("{", Code::NQ034),
            ("[]", Code::NQ034),
            (r#"{"name":"x","type":"bridge"}"#, Code::NQ034),
            (r#"{"plugins":[{"type":"portmap"}]}"#, Code::NQ034),
            (
                r#"{"plugins":[{"type":"bandwidth","capabilities":{"bandwidth":true}},{"type":"ptp"}]}"#,
                Code::NQ034,
            ),
            (
                r#"{"plugins":[{"type":"ptp"},{"type":"bandwidth"}]}"#,
                Code::NQ034,
            ),
            (
                r#"{"plugins":[{"type":"ptp"},{"type":"bandwidth","ingressRate":0}]}"#,
                Code::NQ035,
            ),
            (
                r#"{"plugins":[{"type":"ptp"}],"plugins":[{"type":"bridge"}]}"#,
                Code::NQ034,
            ),
            (
                r#"{"plugins":[{"type":"ptp","type":"bridge"}]}"#,
                Code::NQ034,
            ),
            (
                r#"{"plugins":[{"type":"ptp"},{"type":"bandwidth","ingressRate":"10M","ingressBurst":1}]}"#,
                Code::NQ036,
            ),
        ];
        for (text, code) in cases {
            let (o, d) = analyse(text, true);
            assert!(o.is_none(), "{text}");
            assert!(
                d.iter().any(|d| d.code == *code && d.is_error()),
                "{text}: {d:?}"
            );
        }
    }
}
