//! `netqos status [IFACE]`: the live tree of the applied devices (or of IFACE) with rates
//! and counters, and whether it still matches the last applied policy (drift).

use std::path::Path;

use super::live::{changes_json, open_kernel, state_dir};
use super::{Exit, Ui};
use netqos::apply::diff::{self, Options};
use netqos::apply::kernel::{Kernel, StatsMap};
use netqos::apply::model::{Class, fmt_handle};
use netqos::apply::state::{DevState, Target};
use netqos::units::fmt_rate;

fn restrict(t: &Target, iface: &str) -> Target {
    let trees: Vec<_> = t
        .trees
        .iter()
        .filter(|tr| {
            tr.dev == iface
                || t.hooks.iter().any(|(d, h)| {
                    d == iface
                        && matches!(h, netqos::apply::state::HookWant::Redirect { ifb } if *ifb == tr.dev)
                })
        })
        .cloned()
        .collect();
    Target {
        links: t
            .links
            .iter()
            .filter(|(n, _)| trees.iter().any(|tr| &tr.dev == n))
            .cloned()
            .collect(),
        hooks: t
            .hooks
            .iter()
            .filter(|(d, _)| d == iface)
            .cloned()
            .collect(),
        trees,
    }
}

fn class_line(c: &Class, depth: usize, stats: &StatsMap) -> String {
    let s = stats
        .get(&(c.dev.clone(), "class", c.classid))
        .copied()
        .unwrap_or_default();
    format!(
        "{:indent$}class {:<8} rate {:>12} ceil {:>12} prio {}  sent {} B {} pkt  dropped {}  overlimits {}",
        "",
        fmt_handle(c.classid),
        fmt_rate(c.rate.saturating_mul(8)),
        fmt_rate(c.ceil.saturating_mul(8)),
        c.prio,
        s.bytes,
        s.packets,
        s.drops,
        s.overlimits,
        indent = 2 + 2 * depth
    )
}

fn print_dev(d: &DevState, stats: &StatsMap) {
    if !d.exists {
        outln!("{}: no such device", d.name);
        return;
    }
    match &d.root {
        Some(r) if !r.is_kernel_default() => outln!("{}: {}", d.name, r.describe()),
        Some(r) => outln!("{}: kernel default root ({})", d.name, r.kind.name()),
        None => outln!("{}: no root qdisc", d.name),
    }
    fn walk(d: &DevState, parent: u32, depth: usize, stats: &StatsMap) {
        for c in d.classes.iter().filter(|c| c.parent == parent) {
            outln!("{}", class_line(c, depth, stats));
            if let Some(q) = d.leaves.iter().find(|q| q.parent == c.classid) {
                let s = stats
                    .get(&(d.name.clone(), "qdisc", q.handle))
                    .copied()
                    .unwrap_or_default();
                outln!(
                    "{:indent$}queue {} {}  backlog {} B  dropped {}",
                    "",
                    q.kind.name(),
                    fmt_handle(q.handle),
                    s.backlog,
                    s.drops,
                    indent = 4 + 2 * depth
                );
            }
            walk(d, c.classid, depth + 1, stats);
        }
    }
    if let Some(r) = d.root.as_ref().filter(|r| !r.is_kernel_default()) {
        walk(d, r.handle, 0, stats);
        if let Some(s) = stats.get(&(d.name.clone(), "qdisc", r.handle)) {
            outln!(
                "  root: sent {} B {} pkt  dropped {}  overlimits {}",
                s.bytes,
                s.packets,
                s.drops,
                s.overlimits
            );
        }
    }
    if !d.filters.is_empty() {
        outln!("  {} u32 filter(s)", d.filters.len());
    }
    if let Some(h) = &d.hook {
        outln!("  ingress hook: {}", h.kind.name());
        for f in &d.hook_filters {
            outln!("    {}", f.describe());
        }
    }
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// The live tree for people.
    Human,
    /// The live state, counters, drift and the per-class metrics as JSON.
    Json,
    /// The per-class metrics once, in the Prometheus text format (for node_exporter's
    /// textfile collector).
    Prometheus,
}

/// The per-class metrics of the applied policy from the counters of the last read (class
/// names from `classes.json`, else the class ids).
fn exposition(
    dir: &netqos::apply::txn::StateDir,
    target: Option<&Target>,
    stats: &StatsMap,
    drift: Option<usize>,
) -> netqos::agent::metrics::Exposition {
    use netqos::agent::metrics;
    let classes = super::agent::load_classes(dir)
        .or_else(|| target.map(metrics::classes_of_target))
        .unwrap_or_default();
    let by_class = stats
        .iter()
        .filter(|((_, kind, _), _)| *kind == "class")
        .map(|((dev, _, h), s)| ((dev.clone(), *h), *s))
        .collect();
    metrics::Exposition {
        classes: metrics::sample(&classes, &by_class),
        agent: None,
        drift,
    }
}

pub fn run(iface: Option<&str>, format: StatusFormat, state: Option<&Path>, _ui: Ui) -> Exit {
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let applied = match dir.applied() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    let target = match (&applied, iface) {
        // An interface the last applied policy does not shape has no drift to speak of.
        (Some(t), Some(i)) => {
            Some(restrict(t, i)).filter(|r| !r.trees.is_empty() || !r.hooks.is_empty())
        }
        (Some(t), None) => Some(t.clone()),
        (None, _) => None,
    };
    let mut devices = target.as_ref().map(Target::devices).unwrap_or_default();
    if let Some(i) = iface
        && !devices.iter().any(|d| d == i)
    {
        devices.push(i.to_string());
        devices.sort();
    }
    if devices.is_empty() {
        eprintln!(
            "netqos: no policy has been applied (state in {}); name an interface: netqos status eth0",
            dir.path.display()
        );
        return Exit::Io;
    }
    let mut kernel = match open_kernel(target.as_ref()) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let live = match kernel.read(&devices) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("netqos: {e}");
            return Exit::Io;
        }
    };
    let drift = target.as_ref().map(|t| {
        diff::diff(
            &live,
            t,
            Options {
                replace_foreign: true,
            },
        )
    });
    let pending = dir.pending().ok().flatten();
    let drift_count = drift.as_ref().and_then(|d| d.as_ref().ok()).map(Vec::len);
    if format == StatusFormat::Prometheus {
        let e = exposition(&dir, target.as_ref(), &kernel.stats, drift_count);
        out!("{}", netqos::agent::metrics::prometheus(&e));
        return Exit::Ok;
    }
    if format == StatusFormat::Json {
        let stats: Vec<serde_json::Value> = kernel
            .stats
            .iter()
            .map(|((dev, kind, handle), s)| {
                serde_json::json!({"device": dev, "object": kind, "handle": fmt_handle(*handle), "stats": s})
            })
            .collect();
        let drift_json = match &drift {
            None => serde_json::Value::Null,
            Some(Ok(c)) => serde_json::from_str(&changes_json(c)).unwrap_or_default(),
            Some(Err(e)) => serde_json::json!({ "error": e }),
        };
        let doc = serde_json::json!({
            "live": live,
            "stats": stats,
            "drift": drift_json,
            "pending": pending,
            "metrics": netqos::agent::metrics::json(&exposition(&dir, target.as_ref(), &kernel.stats, drift_count)),
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Exit::Ok;
    }
    for d in &live.devs {
        print_dev(d, &kernel.stats);
    }
    match drift {
        None => outln!("drift: unknown (no applied policy shapes these devices)"),
        Some(Ok(c)) if c.is_empty() => {
            outln!("drift: none; the kernel matches the last applied policy")
        }
        Some(Ok(c)) => {
            outln!(
                "drift: {} difference(s) from the last applied policy; `netqos apply` would:",
                c.len()
            );
            for ch in &c {
                outln!("  {}", ch.describe());
            }
        }
        Some(Err(e)) => outln!("drift: {e}"),
    }
    if let Some(p) = pending {
        outln!(
            "pending: transaction {} reverts in {} s unless `netqos confirm` runs",
            p.id,
            p.deadline.saturating_sub(netqos::apply::txn::now())
        );
    }
    Exit::Ok
}
