//! Live state + target → the ordered kernel changes that get there, make-before-break:
//! links; the root; new and changed classes (parents first); leaf queues; new filters and
//! re-pointed filters; the ingress hook and its redirect; then removals, filters before
//! the queues and classes they use, children before parents. Pure: no kernel access.
//!
//! When the target equals the live state there are no changes (a second apply of the same
//! plan writes nothing). What the kernel cannot change in place is refused with an
//! explanation (`DiffError`, exit 3, nothing changed) instead of being torn down silently.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::model::*;
use crate::apply::state::{
    DevState, HookWant, Live, REDIRECT_PRIO, Target, TreeWant, redirect_filter,
};
use crate::exit::Exit;

/// The handle of netqos's HTB root (`1:`).
const NETQOS_ROOT: u32 = 0x1_0000;

/// Choices the operator makes explicitly.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace a root qdisc netqos did not create (like the script's NETQOS_REPLACE_FOREIGN).
    pub replace_foreign: bool,
}

/// Why the planner will not get from the live state to the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error(
        "{name} exists and is a `{have}` device, not `{want}`; netqos will not take it over \
         (rename the device or the IFB)"
    )]
    LinkKind {
        name: String,
        have: String,
        want: String,
    },
    #[error(
        "{dev}: the root {root} has {have} but the policy needs {want}; HTB cannot change its \
         default class or r2q in place, and rebuilding the root would briefly leave \
         the device unshaped. Keep the old default class, or remove the tree first \
         (`netqos rollback`, or the compiled rollback script) and apply again"
    )]
    RootParams {
        dev: String,
        root: String,
        have: String,
        want: String,
    },
    #[error(
        "{dev}: the root holds {root}, which netqos did not create; pass --replace-foreign \
         to replace it"
    )]
    Foreign { dev: String, root: String },
    #[error(
        "{dev}: the root {root} cannot be replaced in one step and restored exactly \
         (same handle, unknown kind or classes of its own); remove it by hand first"
    )]
    Irreplaceable { dev: String, root: String },
    #[error(
        "{dev}: class {class} is under {have} but the target puts it under {want}; HTB cannot move a \
         class. Give it another id, or remove the tree first"
    )]
    Move {
        dev: String,
        class: String,
        have: String,
        want: String,
    },
}

impl DiffError {
    /// Exit 3: nothing was changed.
    pub fn exit(&self) -> Exit {
        Exit::Io
    }
}

/// Changes in the order they must be sent.
#[derive(Debug, Default)]
struct Phases {
    links: Vec<Change>,
    roots: Vec<Change>,
    classes: Vec<Change>,
    leaves: Vec<Change>,
    filters: Vec<Change>,
    hooks: Vec<Change>,
    del_hook_filters: Vec<Change>,
    del_filters: Vec<Change>,
    del_leaves: Vec<Change>,
    del_classes: Vec<Change>,
    del_roots: Vec<Change>,
    del_hooks: Vec<Change>,
    del_links: Vec<Change>,
}

impl Phases {
    fn into_changes(self) -> Vec<Change> {
        [
            self.links,
            self.roots,
            self.classes,
            self.leaves,
            self.filters,
            self.hooks,
            self.del_hook_filters,
            self.del_filters,
            self.del_leaves,
            self.del_classes,
            self.del_roots,
            self.del_hooks,
            self.del_links,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Computes the changes from `live` to `target`, or explains why it will not.
pub fn diff(live: &Live, target: &Target, opts: Options) -> Result<Vec<Change>, DiffError> {
    let mut p = Phases::default();
    let dying_links = links(live, target, &mut p)?;
    let empty = DevState::default();
    for t in &target.trees {
        if dying_links.contains(&t.dev) {
            continue; // its qdiscs go with it
        }
        tree(live.dev(&t.dev).unwrap_or(&empty), t, opts, &mut p)?;
    }
    for (dev, want) in &target.hooks {
        hook(live.dev(dev).unwrap_or(&empty), dev, want, &mut p);
    }
    Ok(p.into_changes())
}

/// The target's links (IFBs): created, brought up, or removed. Returns the removed ones.
fn links(live: &Live, target: &Target, p: &mut Phases) -> Result<Vec<String>, DiffError> {
    let mut dying = Vec::new();
    for (name, want) in &target.links {
        match (want, live.link(name)) {
            (Some(w), None) => {
                p.links.push(Change::AddLink { link: w.clone() });
                if w.up {
                    p.links.push(Change::SetLinkUp {
                        name: name.clone(),
                        up: true,
                    });
                }
            }
            (Some(w), Some(h)) => {
                if h.kind != w.kind {
                    return Err(DiffError::LinkKind {
                        name: name.clone(),
                        have: if h.kind.is_empty() {
                            "physical".into()
                        } else {
                            h.kind.clone()
                        },
                        want: w.kind.clone(),
                    });
                }
                if h.up != w.up {
                    p.links.push(Change::SetLinkUp {
                        name: name.clone(),
                        up: w.up,
                    });
                }
            }
            (None, Some(h)) if h.kind == "ifb" => {
                dying.push(name.clone());
                p.del_links.push(Change::DelLink { link: h.clone() });
            }
            (None, _) => {}
        }
    }
    Ok(dying)
}

/// The root qdisc of one tree. Returns whether the live objects below it survive (false:
/// they vanish with it), or `None` when the tree has nothing more to do.
fn root(
    d: &DevState,
    t: &TreeWant,
    opts: Options,
    p: &mut Phases,
) -> Result<Option<bool>, DiffError> {
    let live_root = d.root.as_ref().filter(|q| !q.is_kernel_default());
    match (&t.root, live_root) {
        (None, None) => Ok(None),
        (None, Some(have)) => {
            p.del_roots.push(Change::DelQdisc { q: have.clone() });
            Ok(None)
        }
        (Some(want), None) => {
            p.roots.push(Change::AddQdisc { q: want.clone() });
            Ok(Some(false))
        }
        (Some(want), Some(have))
            if want.handle == have.handle && want.kind.name() == have.kind.name() =>
        {
            if !want.kind.satisfied_by(&have.kind) {
                return Err(DiffError::RootParams {
                    dev: t.dev.clone(),
                    root: have.describe(),
                    have: htb_params(&have.kind),
                    want: htb_params(&want.kind),
                });
            }
            Ok(Some(true))
        }
        (Some(want), Some(have)) if have.handle == NETQOS_ROOT && have.kind.name() == "htb" => {
            // netqos's own tree gives way to another root: the return to a snapshot that
            // held a foreign root (replaced with --replace-foreign). Its classes go with it.
            p.roots.push(Change::ReplaceQdisc {
                old: have.clone(),
                new: want.clone(),
            });
            Ok(Some(false))
        }
        (Some(want), Some(have)) => {
            let root = have.describe();
            if !opts.replace_foreign {
                return Err(DiffError::Foreign {
                    dev: t.dev.clone(),
                    root,
                });
            }
            if have.handle == want.handle
                || matches!(have.kind, QdiscKind::Other { .. })
                || !d.classes.is_empty()
            {
                return Err(DiffError::Irreplaceable {
                    dev: t.dev.clone(),
                    root,
                });
            }
            p.roots.push(Change::ReplaceQdisc {
                old: have.clone(),
                new: want.clone(),
            });
            Ok(Some(false))
        }
    }
}

fn tree(d: &DevState, t: &TreeWant, opts: Options, p: &mut Phases) -> Result<(), DiffError> {
    let Some(keep_below) = root(d, t, opts, p)? else {
        return Ok(());
    };
    let live_classes: &[Class] = if keep_below { &d.classes } else { &[] };
    let live_leaves: &[Qdisc] = if keep_below { &d.leaves } else { &[] };
    let live_filters: &[Filter] = if keep_below { &d.filters } else { &[] };
    let want_class = classes(live_classes, t, p)?;
    leaves(live_leaves, &want_class, t, p);
    filters(live_filters, &t.filters, &mut p.filters, &mut p.del_filters);
    Ok(())
}

/// New and changed classes (target order: parents first) and removed ones (deepest
/// first: the kernel refuses to delete a class that has children). Returns the target's
/// class ids. Trees reach 10,000 classes: indexes, no linear searches.
fn classes(live: &[Class], t: &TreeWant, p: &mut Phases) -> Result<BTreeSet<u32>, DiffError> {
    let live_class: BTreeMap<u32, &Class> = live.iter().map(|c| (c.classid, c)).collect();
    let want_class: BTreeSet<u32> = t.classes.iter().map(|c| c.classid).collect();
    for c in &t.classes {
        match live_class.get(&c.classid).copied() {
            None => p.classes.push(Change::AddClass { c: c.clone() }),
            Some(l) if l.parent != c.parent => {
                return Err(DiffError::Move {
                    dev: t.dev.clone(),
                    class: fmt_handle(c.classid),
                    have: fmt_handle(l.parent),
                    want: fmt_handle(c.parent),
                });
            }
            Some(l) if !c.params_satisfied_by(l) => p.classes.push(Change::ChangeClass {
                old: l.clone(),
                new: c.clone(),
            }),
            Some(_) => {}
        }
    }
    let depth = |c: &Class| {
        let mut n = 0;
        let mut at = c.parent;
        while let Some(up) = live_class.get(&at) {
            n += 1;
            at = up.parent;
            if n > live.len() {
                break; // a loop cannot happen in HTB; stay finite anyway
            }
        }
        n
    };
    let mut gone: Vec<&Class> = live
        .iter()
        .filter(|l| !want_class.contains(&l.classid))
        .collect();
    gone.sort_by_key(|c| (std::cmp::Reverse(depth(c)), c.classid));
    p.del_classes
        .extend(gone.into_iter().map(|c| Change::DelClass { c: c.clone() }));
    Ok(want_class)
}

/// Leaf queues: added, changed in place, replaced (another handle), or deleted and added
/// (same handle, another kind); removed where the class stays but wants none.
fn leaves(live: &[Qdisc], want_class: &BTreeSet<u32>, t: &TreeWant, p: &mut Phases) {
    let live_leaf: BTreeMap<u32, &Qdisc> = live.iter().map(|q| (q.parent, q)).collect();
    let want_leaf: BTreeSet<u32> = t.leaves.iter().map(|q| q.parent).collect();
    for q in &t.leaves {
        match live_leaf.get(&q.parent).copied() {
            None => p.leaves.push(Change::AddQdisc { q: q.clone() }),
            Some(l) if l.handle == q.handle && l.kind.name() == q.kind.name() => {
                if !q.kind.satisfied_by(&l.kind) {
                    p.leaves.push(Change::ChangeQdisc {
                        old: l.clone(),
                        new: q.clone(),
                    });
                }
            }
            Some(l) if l.handle != q.handle => p.leaves.push(Change::ReplaceQdisc {
                old: l.clone(),
                new: q.clone(),
            }),
            Some(l) => {
                // Same handle, another kind: the kernel cannot graft it in one step. The
                // class uses a default pfifo in between; it keeps forwarding.
                p.leaves.push(Change::DelQdisc { q: l.clone() });
                p.leaves.push(Change::AddQdisc { q: q.clone() });
            }
        }
    }
    for l in live {
        let class_goes = !want_class.contains(&l.parent);
        if !class_goes && !want_leaf.contains(&l.parent) {
            p.del_leaves.push(Change::DelQdisc { q: l.clone() });
        }
    }
}

fn htb_params(k: &QdiscKind) -> String {
    match k {
        QdiscKind::Htb {
            default,
            r2q,
            direct_qlen,
        } => format!("default {default:x}, r2q {r2q}, direct_qlen {direct_qlen}"),
        other => other.name().to_string(),
    }
}

/// A filter's identity: parent, priority, node (the whole handle in netqos's hash tables).
pub fn node_key(f: &Filter) -> (u32, u16, u32) {
    (f.parent, f.prio, f.ident())
}

/// Filters: hash tables first (in target order, which puts them before the nodes that
/// link to them), nodes re-pointed in place when only their class changes, otherwise
/// removed and added (u32 keeps a node's selector, hash key included, on change); removed
/// ones last, nodes before the hash tables they link to (a linked table cannot go).
fn filters(live: &[Filter], want: &[Filter], adds: &mut Vec<Change>, dels: &mut Vec<Change>) {
    let live_by: BTreeMap<(u32, u16, u32), &Filter> =
        live.iter().map(|f| (node_key(f), f)).collect();
    let want_keys: BTreeSet<(u32, u16, u32)> = want.iter().map(node_key).collect();
    for f in want {
        match live_by.get(&node_key(f)).copied() {
            None => adds.push(Change::AddFilter { f: f.clone() }),
            Some(l) if l.keys == f.keys && l.protocol == f.protocol => {
                let flows = matches!(
                    (&l.action, &f.action),
                    (Action::Flow { .. }, Action::Flow { .. })
                        | (Action::Redirect { .. }, Action::Redirect { .. })
                );
                if l.action == f.action {
                    continue;
                }
                if flows {
                    let mut new = f.clone();
                    new.handle = l.handle;
                    adds.push(Change::ReplaceFilter {
                        old: l.clone(),
                        new,
                    });
                } else {
                    adds.push(Change::DelFilter { f: l.clone() });
                    adds.push(Change::AddFilter { f: f.clone() });
                }
            }
            Some(l) => {
                // u32 keeps a node's keys on replace: this node is removed and added anew.
                // Its packets meet the following rules for that instant; none is dropped.
                adds.push(Change::DelFilter { f: l.clone() });
                adds.push(Change::AddFilter { f: f.clone() });
            }
        }
    }
    let gone = live.iter().filter(|l| !want_keys.contains(&node_key(l)));
    let (tables, nodes): (Vec<&Filter>, Vec<&Filter>) =
        gone.partition(|l| matches!(l.action, Action::Table { .. }));
    for l in nodes.into_iter().chain(tables) {
        dels.push(Change::DelFilter { f: l.clone() });
    }
}

fn hook(d: &DevState, dev: &str, want: &HookWant, p: &mut Phases) {
    match want {
        HookWant::Redirect { ifb } => {
            // The ingress hook (ffff:fff2), as `tc filter add … ingress` names it: valid
            // for an ingress qdisc and for clsact alike.
            let parent = H_CLSACT_INGRESS;
            if d.hook.is_none() {
                p.hooks.push(Change::AddQdisc {
                    q: Qdisc {
                        dev: dev.to_string(),
                        parent: H_INGRESS,
                        handle: H_INGRESS_QDISC,
                        kind: QdiscKind::Ingress,
                    },
                });
            }
            let want = vec![redirect_filter(dev, parent, ifb)];
            let live: Vec<Filter> = d
                .hook_filters
                .iter()
                .filter(|f| f.prio == REDIRECT_PRIO)
                .cloned()
                .collect();
            filters(&live, &want, &mut p.hooks, &mut p.del_hook_filters);
        }
        HookWant::NoRedirect => {
            for f in &d.hook_filters {
                if f.prio == REDIRECT_PRIO && matches!(f.action, Action::Redirect { .. }) {
                    p.del_hook_filters.push(Change::DelFilter { f: f.clone() });
                }
            }
        }
        HookWant::Exactly {
            qdisc,
            filters: want,
        } => {
            match (qdisc, &d.hook) {
                (None, Some(h)) if h.kind == QdiscKind::Ingress => {
                    p.del_hooks.push(Change::DelQdisc { q: h.clone() });
                    return; // its filters go with it
                }
                (Some(q), None) => p.hooks.push(Change::AddQdisc { q: q.clone() }),
                _ => {}
            }
            filters(&d.hook_filters, want, &mut p.hooks, &mut p.del_hook_filters);
        }
    }
}
