//! The netqos CNI entry (`{"type":"netqos","burst":"20ms","capabilities":{"bandwidth":true}}`),
//! chained right after `bandwidth` when the policy sets `pods { burst }`: extends the
//! bandwidth patch (or, where `bandwidth` is already chained, makes one) with it, keeping
//! the patch's guards, its reverse and the byte-for-byte patched text (NQ088 when an entry
//! sits where it cannot work).

use serde_json::{Value, json};

use super::burst::PodBurst;
use super::conflist::{Outcome, Patch};
use super::json_patch::Op;
use super::json_spans::{self, Node};
use crate::codes::Code;
use crate::diagnostic::Diagnostic;

/// The plugin's binary name (`type`).
pub const TYPE: &str = "netqos";

/// The entry for `burst`. The capability gives the plugin the same `runtimeConfig.bandwidth`
/// as `bandwidth`, so it knows which tbfs the sandbox must have.
pub fn entry(burst: &PodBurst) -> Value {
    json!({"type": TYPE, "burst": burst.config_text(), "capabilities": {"bandwidth": true}})
}

/// Whether a conflist text names the netqos plugin (what the installers check the bin dir
/// for).
pub fn names_netqos(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("plugins")?.as_array().map(|p| {
                p.iter()
                    .any(|e| e.get("type").and_then(Value::as_str) == Some(TYPE))
            })
        })
        .unwrap_or(false)
}

/// What the netqos entry adds to the conflist outcome.
pub struct Chained {
    pub outcome: Outcome,
    /// For the operator, when netqos changed something.
    pub summary: Option<String>,
}

/// Chains the netqos entry after `bandwidth` in `outcome` (computed from `text`).
pub fn chain(text: &str, outcome: Outcome, burst: &PodBurst) -> Result<Chained, Diagnostic> {
    let want = entry(burst);
    match outcome {
        Outcome::Patch(p) => {
            // The patch adds bandwidth: a netqos entry the chain already has is not after it.
            let value: Value = serde_json::from_str(text).map_err(|_| unreadable(text))?;
            let original = json_spans::scan(text).ok_or_else(|| unreadable(text))?;
            let plugins = value.get("plugins").and_then(Value::as_array);
            if let Some(d) = misplaced(
                text,
                &original,
                plugins.map_or(&[][..], Vec::as_slice),
                p.index,
                None,
            ) {
                return Err(d);
            }
            let at = p.index + 1;
            let tree = json_spans::scan(&p.patched_text).ok_or_else(|| unreadable(text))?;
            let node = plugin_node(&tree, p.index).ok_or_else(|| unreadable(text))?;
            let patched_text = insert_after(&p.patched_text, node, &want);
            let mut ops = p.ops;
            ops.push(Op::Add {
                path: format!("/plugins/{at}"),
                value: want.clone(),
            });
            let mut reverse = vec![
                Op::Test {
                    path: format!("/plugins/{at}"),
                    value: want.clone(),
                },
                Op::Remove {
                    path: format!("/plugins/{at}"),
                },
            ];
            reverse.extend(p.reverse);
            Ok(Chained {
                outcome: Outcome::Patch(Patch {
                    ops,
                    reverse,
                    patched_text,
                    ..p
                }),
                summary: Some(format!(
                    "adds the netqos entry at /plugins/{at} right after bandwidth (burst {})",
                    burst.config_text()
                )),
            })
        }
        Outcome::Present { index } => present(text, index, &want, burst),
        Outcome::CalicoNative => Ok(Chained {
            outcome,
            summary: None,
        }),
    }
}

/// The policy sets no `burst`, but `text` still chains netqos right after `bandwidth` (a
/// burst dropped from the policy): the patch removes that entry, so the node goes back to
/// the runtime's bucket as the policy now says, rather than keep an old one.
pub fn unchain(text: &str, outcome: Outcome) -> Result<Chained, Diagnostic> {
    let Outcome::Present { index } = outcome else {
        return Ok(Chained {
            outcome,
            summary: None,
        });
    };
    let value: Value = serde_json::from_str(text).map_err(|_| unreadable(text))?;
    let at = index + 1;
    let Some(e) = value
        .get("plugins")
        .and_then(|p| p.get(at))
        .filter(|e| e.get("type").and_then(Value::as_str) == Some(TYPE))
    else {
        return Ok(Chained {
            outcome,
            summary: None,
        });
    };
    let tree = json_spans::scan(text).ok_or_else(|| unreadable(text))?;
    let (bw, node) = plugin_node(&tree, index)
        .zip(plugin_node(&tree, at))
        .ok_or_else(|| unreadable(text))?;
    // From the end of bandwidth's entry to the end of netqos's: the separator and the entry.
    let patched_text = format!("{}{}", &text[..bw.span.end], &text[node.span.end..]);
    Ok(Chained {
        outcome: Outcome::Patch(Patch {
            index: at,
            main: "bandwidth".into(),
            ops: vec![
                Op::Test {
                    path: format!("/plugins/{at}"),
                    value: e.clone(),
                },
                Op::Remove {
                    path: format!("/plugins/{at}"),
                },
            ],
            reverse: vec![
                Op::Test {
                    path: format!("/plugins/{index}/type"),
                    value: json!("bandwidth"),
                },
                Op::Add {
                    path: format!("/plugins/{at}"),
                    value: e.clone(),
                },
            ],
            patched_text,
        }),
        summary: Some(format!(
            "removes the netqos entry at /plugins/{at}: the policy sets no pod burst"
        )),
    })
}

fn unreadable(text: &str) -> Diagnostic {
    Diagnostic::new(Code::NQ034, "the conflist could not be read for patching")
        .label(crate::span::Span::char_at(text, 0), "here")
        .help("re-save the file as plain JSON")
}

fn is_netqos(e: &Value) -> bool {
    e.get("type").and_then(Value::as_str) == Some(TYPE)
}

/// NQ088 for a netqos entry in `plugins` (of `text`, scanned as `tree`) anywhere but at
/// `keep`: the one place it works is right after bandwidth, which is (or, patched, will be)
/// entry `bandwidth`.
fn misplaced(
    text: &str,
    tree: &Node,
    plugins: &[Value],
    bandwidth: usize,
    keep: Option<usize>,
) -> Option<Diagnostic> {
    let other = (0..plugins.len()).find(|&i| is_netqos(&plugins[i]) && Some(i) != keep)?;
    let span = plugin_node(tree, other).map_or(crate::span::Span::char_at(text, 0), |n| n.span);
    Some(
        Diagnostic::new(
            Code::NQ088,
            format!(
                "the netqos entry is entry {other}, not right after bandwidth (entry {bandwidth})"
            ),
        )
        .label(span, "misplaced netqos entry")
        .help(format!(
            "move it to entry {}, or delete it and let netqos add it: it adjusts the tbfs bandwidth has just made, so it must run right after bandwidth on ADD",
            bandwidth + 1
        )),
    )
}

fn plugin_node(tree: &Node, i: usize) -> Option<&Node> {
    tree.get("plugins")?.value.elements()?.get(i)
}

/// `bandwidth` is already chained at `index`: add, keep or update the netqos entry after it.
fn present(
    text: &str,
    index: usize,
    want: &Value,
    burst: &PodBurst,
) -> Result<Chained, Diagnostic> {
    let value: Value = serde_json::from_str(text).map_err(|_| unreadable(text))?;
    let tree = json_spans::scan(text).ok_or_else(|| unreadable(text))?;
    let plugins = value
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| unreadable(text))?;
    let at = index + 1;
    if let Some(d) = misplaced(text, &tree, plugins, index, Some(at)) {
        return Err(d);
    }
    let bw = plugin_node(&tree, index).ok_or_else(|| unreadable(text))?;
    match plugins.get(at) {
        Some(e) if e == want => Ok(Chained {
            outcome: Outcome::Present { index },
            summary: Some(format!(
                "the netqos entry is already at /plugins/{at} with burst {}",
                burst.config_text()
            )),
        }),
        Some(e) if is_netqos(e) => {
            let node = plugin_node(&tree, at).ok_or_else(|| unreadable(text))?;
            Ok(Chained {
                outcome: Outcome::Patch(replace_patch(text, node, at, e, want)),
                summary: Some(format!(
                    "updates the netqos entry at /plugins/{at} to burst {}",
                    burst.config_text()
                )),
            })
        }
        next => {
            let mut ops = vec![Op::Test {
                path: format!("/plugins/{index}/type"),
                value: json!("bandwidth"),
            }];
            match next {
                Some(n) => ops.push(Op::Test {
                    path: format!("/plugins/{at}/type"),
                    value: n.get("type").cloned().unwrap_or(Value::Null),
                }),
                None => ops.push(Op::Test {
                    path: "/plugins".into(),
                    value: Value::Array(plugins.clone()),
                }),
            }
            Ok(Chained {
                outcome: Outcome::Patch(add_patch(text, bw, at, ops, want)),
                summary: Some(format!(
                    "adds the netqos entry at /plugins/{at} right after the existing bandwidth entry (burst {})",
                    burst.config_text()
                )),
            })
        }
    }
}

/// Replaces the netqos entry `old` at `at` (the node `node`) with `want`.
fn replace_patch(text: &str, node: &Node, at: usize, old: &Value, want: &Value) -> Patch {
    let path = format!("/plugins/{at}");
    let swap = |from: &Value, to: &Value| {
        vec![
            Op::Test {
                path: path.clone(),
                value: from.clone(),
            },
            Op::Replace {
                path: path.clone(),
                value: to.clone(),
            },
        ]
    };
    Patch {
        index: at,
        main: "bandwidth".into(),
        ops: swap(old, want),
        reverse: swap(want, old),
        patched_text: replace_node(text, node, want),
    }
}

/// Adds `want` at `at`, right after the bandwidth entry `bw`, behind the guards `tests`.
fn add_patch(text: &str, bw: &Node, at: usize, mut tests: Vec<Op>, want: &Value) -> Patch {
    let path = format!("/plugins/{at}");
    tests.push(Op::Add {
        path: path.clone(),
        value: want.clone(),
    });
    Patch {
        index: at,
        main: "bandwidth".into(),
        ops: tests,
        reverse: vec![
            Op::Test {
                path: path.clone(),
                value: want.clone(),
            },
            Op::Remove { path },
        ],
        patched_text: insert_after(text, bw, want),
    }
}

/// `value` laid out like `like`: multi-line with its step when it spans lines, else on one
/// line with spaces.
fn render(text: &str, like: &Node, value: &Value) -> String {
    let element = &text[like.span.start..like.span.end];
    let (lead, step) = like.layout(text, "type");
    match lead {
        Some(lead) if element.contains('\n') => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(step.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            let _ = serde::Serialize::serialize(value, &mut ser);
            let pretty = String::from_utf8(buf).unwrap_or_default();
            pretty
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == 0 {
                        l.to_string()
                    } else {
                        format!("{lead}{l}")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => value.to_string(),
    }
}

/// The text with `value` inserted as the next element after `node`.
fn insert_after(text: &str, node: &Node, value: &Value) -> String {
    let (lead, _) = node.layout(text, "type");
    let rendered = render(text, node, value);
    let sep = match lead {
        Some(lead) => format!(",\n{lead}"),
        None => ", ".to_string(),
    };
    format!(
        "{}{sep}{rendered}{}",
        &text[..node.span.end],
        &text[node.span.end..]
    )
}

fn replace_node(text: &str, node: &Node, value: &Value) -> String {
    format!(
        "{}{}{}",
        &text[..node.span.start],
        render(text, node, value),
        &text[node.span.end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::conflist::{analyse, apply_to_text};

    const FLANNEL: &str = include_str!("defaults/flannel.conflist");
    const K3S: &str = include_str!("defaults/k3s.conflist");
    const BURST: PodBurst = PodBurst::Duration { us: 20_000 };

    fn chained(text: &str) -> Chained {
        let (o, d) = analyse(text, true);
        assert!(d.is_empty(), "{d:?}");
        chain(text, o.unwrap(), &BURST).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn same(a: &Value, b: &Value) {
        assert_eq!(a.to_string(), b.to_string());
    }

    #[test]
    fn flannel_gets_bandwidth_then_netqos() {
        let c = chained(FLANNEL);
        let Outcome::Patch(p) = c.outcome else {
            panic!()
        };
        let from_text: Value = serde_json::from_str(&p.patched_text).unwrap();
        same(&from_text["plugins"][1]["type"], &json!("bandwidth"));
        same(&from_text["plugins"][2], &entry(&BURST));
        same(&apply_to_text(FLANNEL, &p.ops).unwrap(), &from_text);
        let back = crate::cni::json_patch::apply(&from_text, &p.reverse).unwrap();
        same(&back, &serde_json::from_str(FLANNEL).unwrap());
        // Twice = once; and the patched file needs nothing more.
        assert!(crate::cni::json_patch::apply(&from_text, &p.ops).is_err());
        let again = chained(&p.patched_text);
        assert!(matches!(again.outcome, Outcome::Present { index: 1 }));
        assert!(names_netqos(&p.patched_text) && !names_netqos(FLANNEL));
    }

    #[test]
    fn k3s_has_bandwidth_and_gets_netqos_after_it() {
        let c = chained(K3S);
        let Outcome::Patch(p) = c.outcome else {
            panic!()
        };
        assert_eq!(p.index, 3);
        let from_text: Value = serde_json::from_str(&p.patched_text).unwrap();
        same(&from_text["plugins"][3], &entry(&BURST));
        same(&apply_to_text(K3S, &p.ops).unwrap(), &from_text);
        let back = crate::cni::json_patch::apply(&from_text, &p.reverse).unwrap();
        same(&back, &serde_json::from_str(K3S).unwrap());
        // One line per entry, like its neighbours.
        assert!(p.patched_text.contains(
            "    { \"type\":\"bandwidth\", \"capabilities\":{ \"bandwidth\":true } },\n    {\"type\":\"netqos\""
        ), "{}", p.patched_text);
        // A changed burst replaces the entry in place.
        let (o, _) = analyse(&p.patched_text, true);
        let c = chain(
            &p.patched_text,
            o.unwrap(),
            &PodBurst::Duration { us: 50_000 },
        )
        .unwrap();
        let Outcome::Patch(u) = c.outcome else {
            panic!()
        };
        let v: Value = serde_json::from_str(&u.patched_text).unwrap();
        same(&v["plugins"][3]["burst"], &json!("50ms"));
        same(&apply_to_text(&p.patched_text, &u.ops).unwrap(), &v);
    }

    #[test]
    fn dropping_burst_removes_the_entry_byte_for_byte() {
        let Outcome::Patch(p) = chained(K3S).outcome else {
            panic!()
        };
        let (o, _) = analyse(&p.patched_text, true);
        let c = unchain(&p.patched_text, o.unwrap()).unwrap();
        let Outcome::Patch(u) = c.outcome else {
            panic!()
        };
        assert_eq!(u.patched_text, K3S);
        same(
            &apply_to_text(&p.patched_text, &u.ops).unwrap(),
            &serde_json::from_str(K3S).unwrap(),
        );
        let back =
            crate::cni::json_patch::apply(&serde_json::from_str(K3S).unwrap(), &u.reverse).unwrap();
        same(&back, &serde_json::from_str(&p.patched_text).unwrap());
        // Without an entry there is nothing to remove.
        let (o, _) = analyse(K3S, true);
        assert!(matches!(
            unchain(K3S, o.unwrap()).unwrap().outcome,
            Outcome::Present { .. }
        ));
    }

    #[test]
    fn a_misplaced_entry_is_refused() {
        let text = r#"{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"ptp"},{"type":"netqos","burst":"20ms"},{"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#;
        let (o, _) = analyse(text, true);
        let e = chain(text, o.unwrap(), &BURST).err().unwrap();
        assert_eq!(e.code, Code::NQ088);
    }
}
