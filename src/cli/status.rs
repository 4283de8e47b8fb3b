//! `netqos status [IFACE]`: the live tree of the applied devices (or of IFACE) with rates
//! and counters, and whether it still matches the last applied policy (drift).

use std::path::Path;

use super::live::{changes_json, open_kernel, state_dir};
use super::plan::PlanFormat;
use super::{Exit, Ui};
use netqos::apply::diff::{self, DiffError, Options};
use netqos::apply::kernel::{Kernel, StatsMap};
use netqos::apply::model::{Change, Class, fmt_handle};
use netqos::apply::state::{DevState, Live, Target};
use netqos::apply::state_dir::{Pending, StateDir};
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

/// The applied target (restricted to `iface`) and the devices to show; `Err` when there is
/// nothing to show.
fn what_to_show(
    dir: &StateDir,
    iface: Option<&str>,
) -> Result<(Option<Target>, Vec<String>), Exit> {
    let applied = dir.applied().map_err(|e| {
        eprintln!("netqos: {e}");
        e.exit()
    })?;
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
        if let Ok(Some(r)) = dir.interrupted() {
            // Nothing succeeded yet, but something is half-done: show its devices.
            return Ok((None, r.target.devices()));
        }
        eprintln!(
            "netqos: no policy has been applied (state in {}); name an interface: netqos status eth0",
            dir.path.display()
        );
        return Err(Exit::Io);
    }
    Ok((target, devices))
}

type Drift = Option<Result<Vec<Change>, DiffError>>;

fn print_json(
    live: &Live,
    stats: &StatsMap,
    drift: &Drift,
    pending: Option<&Pending>,
    dir: &StateDir,
) {
    let stats: Vec<serde_json::Value> = stats
        .iter()
        .map(|((dev, kind, handle), s)| {
            serde_json::json!({"device": dev, "object": kind, "handle": fmt_handle(*handle), "stats": s})
        })
        .collect();
    let drift_json = match drift {
        None => serde_json::Value::Null,
        Some(Ok(c)) => serde_json::from_str(&changes_json(c)).unwrap_or_default(),
        Some(Err(e)) => serde_json::json!({ "error": e.to_string() }),
    };
    let doc = serde_json::json!({
        "live": live,
        "stats": stats,
        "drift": drift_json,
        "pending": pending,
        "interrupted": interrupted(dir).map(|(r, running)| serde_json::json!({
            "id": r.id, "source": r.source, "in_progress": running,
        })),
    });
    outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

fn print_human(
    live: &Live,
    stats: &StatsMap,
    drift: &Drift,
    pending: Option<&Pending>,
    dir: &StateDir,
) {
    for d in &live.devs {
        print_dev(d, stats);
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
            for ch in c {
                outln!("  {}", ch.describe());
            }
        }
        Some(Err(e)) => outln!("drift: {e}"),
    }
    if let Some(p) = pending {
        print_pending(p, dir);
    }
}

fn print_pending(p: &Pending, dir: &StateDir) {
    let now = netqos::apply::state_dir::now();
    if now < p.deadline {
        outln!(
            "pending: transaction {} reverts in {} s unless `netqos confirm` runs",
            p.id,
            p.deadline - now
        );
    } else if dir.reverter_alive(&p.id) {
        outln!(
            "pending: transaction {} was not confirmed in time; its reverter is reverting it",
            p.id
        );
    } else {
        outln!(
            "pending: transaction {} should have reverted {} s ago but its reverter is gone; \
             it is still live: `netqos rollback` reverts it (`netqos apply` and `netqos confirm` \
             revert it first)",
            p.id,
            now - p.deadline
        );
    }
}

/// An unfinished transaction, and whether its process still runs (it holds the lock).
fn interrupted(dir: &StateDir) -> Option<(netqos::apply::state_dir::Record, bool)> {
    let r = dir.interrupted().ok().flatten()?;
    let running = dir.lock(false).is_err();
    Some((r, running))
}

/// Says so when a transaction was interrupted (its process died mid-way): the devices
/// may hold part of it. The state lock tells a dead one from one in progress.
fn print_interrupted(dir: &StateDir) {
    let Some((r, running)) = interrupted(dir) else {
        return;
    };
    if running {
        outln!("in progress: transaction {} ({})", r.id, r.source);
        return;
    }
    outln!(
        "interrupted: transaction {} ({}) did not finish; the devices may hold part of it. \
         `netqos rollback` undoes it (`netqos apply` undoes it first)",
        r.id,
        r.source
    );
}

pub fn run(iface: Option<&str>, format: PlanFormat, state: Option<&Path>, _ui: Ui) -> Exit {
    let dir = match state_dir(state) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let (target, devices) = match what_to_show(&dir, iface) {
        Ok(w) => w,
        Err(e) => return e,
    };
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
    let opts = Options {
        replace_foreign: true,
    };
    let drift = target.as_ref().map(|t| diff::diff(&live, t, opts));
    let pending = dir.pending().ok().flatten();
    match format {
        PlanFormat::Json => print_json(&live, &kernel.stats, &drift, pending.as_ref(), &dir),
        PlanFormat::Human => {
            print_human(&live, &kernel.stats, &drift, pending.as_ref(), &dir);
            print_interrupted(&dir);
        }
    }
    Exit::Ok
}
