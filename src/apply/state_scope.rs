//! Scopes: the objects of a tree an apply works on when it is known that the kernel holds
//! the rest. A long-running caller (the agent) that knows the kernel held the previous
//! target wholly, except for objects events touched since, hands the transaction that
//! target and those keys; the transaction then diffs, snapshots, verifies and records only
//! the objects in the scope (the keys where the two targets differ, plus the touched ones)
//! instead of the whole tree.
//!
//! A scope exists only for a narrow change: the same devices, links, ingress hooks and
//! root qdiscs on both sides (those are small and always compared whole). Restricting the
//! live state and the target to a scope and diffing them gives the changes the whole-tree
//! diff gives, because the diff pairs objects by key (class id, leaf parent, filter node)
//! and the objects outside the scope are equal on both sides.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::apply::diff::node_key;
use crate::apply::model::{Class, Filter, Qdisc};
use crate::apply::state::{DevState, Live, Target, TreeWant};

/// A filter's identity (the diff's `node_key`: parent, priority, node).
pub type FilterKey = (u32, u16, u32);

/// The keys in scope on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevScope {
    /// Class ids.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub classes: BTreeSet<u32>,
    /// Leaf queues, by the class they hang from.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub leaves: BTreeSet<u32>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub filters: BTreeSet<FilterKey>,
}

impl DevScope {
    fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.leaves.is_empty() && self.filters.is_empty()
    }

    fn merge(&mut self, o: &DevScope) {
        self.classes.extend(o.classes.iter().copied());
        self.leaves.extend(o.leaves.iter().copied());
        self.filters.extend(o.filters.iter().copied());
    }
}

/// The keys in scope, by device. Devices not named have nothing in scope (their root and
/// hook are still compared).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub devs: BTreeMap<String, DevScope>,
}

/// The keys where two lists of objects differ (present on one side only, or unequal).
fn differing<T: PartialEq, K: Ord + Copy>(a: &[T], b: &[T], key: impl Fn(&T) -> K) -> BTreeSet<K> {
    let mut out = BTreeSet::new();
    // The common case: the same keys in the same order.
    if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y)) {
        out.extend(a.iter().zip(b).filter(|(x, y)| x != y).map(|(x, _)| key(x)));
        return out;
    }
    let am: BTreeMap<K, &T> = a.iter().map(|x| (key(x), x)).collect();
    let bm: BTreeMap<K, &T> = b.iter().map(|x| (key(x), x)).collect();
    out.extend(
        am.iter()
            .filter(|(k, x)| bm.get(k) != Some(x))
            .map(|(k, _)| *k),
    );
    out.extend(bm.keys().filter(|k| !am.contains_key(k)).copied());
    out
}

fn class_key(c: &Class) -> u32 {
    c.classid
}

fn leaf_key(q: &Qdisc) -> u32 {
    q.parent
}

impl Scope {
    /// Nothing in scope.
    pub fn is_empty(&self) -> bool {
        self.devs.values().all(DevScope::is_empty)
    }

    /// Adds `o`'s keys.
    pub fn merge(&mut self, o: &Scope) {
        for (d, s) in &o.devs {
            self.devs.entry(d.clone()).or_default().merge(s);
        }
    }

    /// The device's scope, created empty.
    pub fn dev_mut(&mut self, dev: &str) -> &mut DevScope {
        self.devs.entry(dev.to_string()).or_default()
    }

    /// The keys where `next` differs from `prev`, or `None` when the change is not narrow:
    /// other devices, links, hooks or roots.
    pub fn between(prev: &Target, next: &Target) -> Option<Scope> {
        if prev.links != next.links || prev.hooks != next.hooks {
            return None;
        }
        if prev.trees.len() != next.trees.len() {
            return None;
        }
        let mut s = Scope::default();
        if std::ptr::eq(prev, next) {
            return Some(s);
        }
        for (p, n) in prev.trees.iter().zip(&next.trees) {
            if p.dev != n.dev || p.root != n.root {
                return None;
            }
            let d = DevScope {
                classes: differing(&p.classes, &n.classes, class_key),
                leaves: differing(&p.leaves, &n.leaves, leaf_key),
                filters: differing(&p.filters, &n.filters, node_key),
            };
            if !d.is_empty() {
                s.devs.insert(p.dev.clone(), d);
            }
        }
        Some(s)
    }

    /// The classes above those of `part` (a live state restricted to this scope) that the
    /// scope leaves out, by the parents `prev` gives them (the kernel held `prev` wherever
    /// the scope does not reach, so those are its parents too). With them in scope the
    /// diff orders removals (children first, by depth) exactly as the whole-tree diff.
    pub fn ancestors(&self, part: &Live, prev: &Target) -> Scope {
        let mut out = Scope::default();
        for d in &part.devs {
            let (Some(s), Some(tw)) = (
                self.devs.get(&d.name),
                prev.trees.iter().find(|t| t.dev == d.name),
            ) else {
                continue;
            };
            if d.classes.is_empty() {
                continue;
            }
            let root = tw.root.as_ref().map(|r| r.handle);
            // A narrow change walks up a few classes: looked up in place; a wide one
            // through a map of every class's parent.
            let map: BTreeMap<u32, u32> = if d.classes.len() > 16 {
                tw.classes.iter().map(|c| (c.classid, c.parent)).collect()
            } else {
                BTreeMap::new()
            };
            let parent = |id: u32| match map.is_empty() {
                true => tw
                    .classes
                    .iter()
                    .find(|c| c.classid == id)
                    .map(|c| c.parent),
                false => map.get(&id).copied(),
            };
            let mut more = BTreeSet::new();
            for c in &d.classes {
                let mut p = c.parent;
                while Some(p) != root && !s.classes.contains(&p) && more.insert(p) {
                    match parent(p) {
                        Some(up) => p = up,
                        None => break,
                    }
                }
            }
            if !more.is_empty() {
                out.dev_mut(&d.name).classes = more;
            }
        }
        out
    }

    /// The device state with only the objects in scope (root, hook and existence kept).
    fn restrict_dev(&self, d: &DevState) -> DevState {
        let empty = DevScope::default();
        let s = self.devs.get(&d.name).unwrap_or(&empty);
        DevState {
            name: d.name.clone(),
            exists: d.exists,
            root: d.root.clone(),
            leaves: keep(&d.leaves, &s.leaves, leaf_key),
            classes: keep(&d.classes, &s.classes, class_key),
            filters: keep(&d.filters, &s.filters, node_key),
            hook: d.hook.clone(),
            hook_filters: d.hook_filters.clone(),
        }
    }

    /// The devices `devices` of `live`, restricted to the scope, and every link.
    pub fn restrict_live(&self, live: &Live, devices: &[String]) -> Live {
        Live {
            links: live.links.clone(),
            devs: devices
                .iter()
                .filter_map(|n| live.dev(n))
                .map(|d| self.restrict_dev(d))
                .collect(),
        }
    }

    /// `t` with only the objects in scope (links, hooks and roots kept).
    pub fn restrict_target(&self, t: &Target) -> Target {
        let empty = DevScope::default();
        Target {
            links: t.links.clone(),
            hooks: t.hooks.clone(),
            trees: t
                .trees
                .iter()
                .map(|tw| {
                    let s = self.devs.get(&tw.dev).unwrap_or(&empty);
                    TreeWant {
                        dev: tw.dev.clone(),
                        root: tw.root.clone(),
                        classes: keep(&tw.classes, &s.classes, class_key),
                        leaves: keep(&tw.leaves, &s.leaves, leaf_key),
                        filters: keep(&tw.filters, &s.filters, node_key),
                    }
                })
                .collect(),
        }
    }

    /// Makes the objects in scope of `target` those of `part` (a target restricted to this
    /// scope): replaced in place, removed when `part` has none, new ones appended in
    /// `part`'s order (parents stay before children: a class cannot move, so a new
    /// class's parent is either already there or new and earlier in `part`).
    pub fn patch(&self, target: &mut Target, part: &Target) {
        for tw in &mut target.trees {
            let (Some(s), Some(p)) = (
                self.devs.get(&tw.dev),
                part.trees.iter().find(|p| p.dev == tw.dev),
            ) else {
                continue;
            };
            splice(&mut tw.classes, &s.classes, &p.classes, class_key);
            splice(&mut tw.leaves, &s.leaves, &p.leaves, leaf_key);
            splice(&mut tw.filters, &s.filters, &p.filters, node_key);
        }
    }
}

fn keep<T: Clone, K: Ord>(all: &[T], keys: &BTreeSet<K>, key: impl Fn(&T) -> K) -> Vec<T> {
    if keys.is_empty() {
        return Vec::new();
    }
    all.iter()
        .filter(|x| keys.contains(&key(x)))
        .cloned()
        .collect()
}

fn splice<T: Clone, K: Ord + Copy>(
    all: &mut Vec<T>,
    keys: &BTreeSet<K>,
    new: &[T],
    key: impl Fn(&T) -> K,
) {
    let mut by: BTreeMap<K, &T> = new.iter().map(|x| (key(x), x)).collect();
    all.retain_mut(|x| {
        let k = key(x);
        if !keys.contains(&k) {
            return true;
        }
        match by.remove(&k) {
            Some(n) => {
                *x = n.clone();
                true
            }
            None => false,
        }
    });
    all.extend(
        new.iter()
            .filter(|x| by.contains_key(&key(x)))
            .filter(|x| keys.contains(&key(x)))
            .cloned(),
    );
}

/// A filter's key, for callers outside the diff.
pub fn filter_key(f: &Filter) -> FilterKey {
    node_key(f)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The scoped diff equals the whole-tree diff over random narrow edits and random
    //! drift (touched keys), and a patch makes the previous target the next one.

    use super::*;
    use crate::apply::diff::{Options, diff};
    use crate::apply::model::{Action, H_ROOT, Key as U32Key, QdiscKind};

    /// xorshift64*: deterministic, no dependency.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn class(minor: u32, parent: u32, rate: u64) -> Class {
        Class {
            dev: "eth0".into(),
            classid: 0x0001_0000 | minor,
            parent,
            rate,
            ceil: rate * 2,
            buffer: 100,
            cbuffer: 100,
            quantum: Some(1514),
            prio: 0,
        }
    }

    fn leaf(minor: u32, limit: u32) -> Qdisc {
        Qdisc {
            dev: "eth0".into(),
            parent: 0x0001_0000 | minor,
            handle: minor << 16,
            kind: QdiscKind::Bfifo { limit: Some(limit) },
        }
    }

    fn filter(node: u32, to: u32, val: u32) -> Filter {
        Filter {
            dev: "eth0".into(),
            parent: 0x0001_0000,
            prio: 1,
            protocol: 0x0800,
            handle: 0x8000_0000 | node,
            keys: vec![U32Key {
                mask: 0xffff_ffff,
                val,
                off: 16,
                offmask: 0,
            }],
            action: Action::Flow {
                classid: 0x0001_0000 | to,
            },
        }
    }

    /// A tree: 1:1 under the root, 1:10.. under it, 1:100.. under some of those.
    pub(crate) fn target(n: u32) -> Target {
        let mut classes = vec![class(1, 0x0001_0000, 1_000_000)];
        let mut leaves = Vec::new();
        let mut filters = Vec::new();
        for i in 0..n {
            let minor = 0x10 + i;
            classes.push(class(minor, 0x0001_0001, 1000 + u64::from(i)));
            if i % 3 == 0 {
                classes.push(class(0x100 + i, 0x0001_0000 | minor, 500));
                leaves.push(leaf(0x100 + i, 1000));
            } else {
                leaves.push(leaf(minor, 2000));
            }
            filters.push(filter(0x800 + i, minor, i));
        }
        let root = Qdisc {
            dev: "eth0".into(),
            parent: H_ROOT,
            handle: 0x0001_0000,
            kind: QdiscKind::Htb {
                default: 0x10,
                r2q: 10,
                direct_qlen: 1000,
            },
        };
        Target {
            links: Vec::new(),
            trees: vec![TreeWant {
                dev: "eth0".into(),
                root: Some(root),
                classes,
                leaves,
                filters,
            }],
            hooks: Vec::new(),
        }
    }

    fn live_of(t: &Target) -> Live {
        let tw = &t.trees[0];
        let mut classes = tw.classes.clone();
        classes.sort_by_key(|c| c.classid);
        Live {
            links: Vec::new(),
            devs: vec![DevState {
                name: "eth0".into(),
                exists: true,
                root: tw.root.clone(),
                leaves: tw.leaves.clone(),
                classes,
                filters: tw.filters.clone(),
                hook: None,
                hook_filters: Vec::new(),
            }],
        }
    }

    /// One random edit of the target, as a policy edit makes it.
    pub(crate) fn edit(t: &mut Target, r: &mut Rng) {
        let tw = &mut t.trees[0];
        match r.below(6) {
            0 => {
                let i = r.below(tw.classes.len());
                tw.classes[i].rate += 1 + r.below(1000) as u64;
            }
            1 => {
                let minor = 0x800 + r.below(100) as u32;
                if !tw.classes.iter().any(|c| c.classid == 0x0001_0000 | minor) {
                    tw.classes.push(class(minor, 0x0001_0001, 77));
                    tw.leaves.push(leaf(minor, 3000));
                }
            }
            2 => {
                // A leaf class goes, with its queue and the filters into it.
                let parents: BTreeSet<u32> = tw.classes.iter().map(|c| c.parent).collect();
                let leaves: Vec<u32> = tw
                    .classes
                    .iter()
                    .map(|c| c.classid)
                    .filter(|id| !parents.contains(id) && *id != 0x0001_0001)
                    .collect();
                let Some(&gone) = leaves.get(r.below(leaves.len())) else {
                    return;
                };
                tw.classes.retain(|c| c.classid != gone);
                tw.leaves.retain(|q| q.parent != gone);
                tw.filters
                    .retain(|f| f.action != Action::Flow { classid: gone });
            }
            3 => {
                let i = r.below(tw.filters.len());
                if let Some(f) = tw.filters.get_mut(i) {
                    f.keys[0].val ^= 0x100;
                }
            }
            4 => {
                let i = r.below(tw.leaves.len());
                if let Some(q) = tw.leaves.get_mut(i) {
                    q.kind = QdiscKind::Bfifo { limit: Some(9999) };
                }
            }
            _ => {
                let node = 0x800 + tw.filters.len() as u32 + 50;
                tw.filters.push(filter(node, 0x10, 0xabc));
            }
        }
    }

    /// One random drift of the live state; its keys go into `touched`.
    fn drift(l: &mut Live, touched: &mut Scope, r: &mut Rng) {
        let d = &mut l.devs[0];
        let s = touched.dev_mut("eth0");
        match r.below(3) {
            0 => {
                let i = r.below(d.classes.len());
                d.classes[i].rate = 1;
                s.classes.insert(d.classes[i].classid);
            }
            1 => {
                if !d.filters.is_empty() {
                    let f = d.filters.remove(r.below(d.filters.len()));
                    s.filters.insert(node_key(&f));
                }
            }
            _ => {
                if !d.leaves.is_empty() {
                    let q = d.leaves.remove(r.below(d.leaves.len()));
                    s.leaves.insert(q.parent);
                }
            }
        }
    }

    pub(crate) fn sorted(mut t: Target) -> Target {
        for tw in &mut t.trees {
            tw.classes.sort_by_key(|c| c.classid);
            tw.leaves.sort_by_key(|q| q.parent);
            tw.filters.sort_by_key(node_key);
        }
        t
    }

    fn parents_first(t: &Target) -> bool {
        let mut seen = BTreeSet::from([0x0001_0000u32]);
        t.trees[0].classes.iter().all(|c| {
            let ok = seen.contains(&c.parent);
            seen.insert(c.classid);
            ok
        })
    }

    #[test]
    fn the_scoped_diff_equals_the_whole_diff_over_random_edits_and_drift() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let opts = Options::default();
        for _ in 0..400 {
            let prev = target(12 + r.below(20) as u32);
            let mut live = live_of(&prev);
            let mut next = prev.clone();
            for _ in 0..1 + r.below(3) {
                edit(&mut next, &mut r);
            }
            let mut touched = Scope::default();
            for _ in 0..r.below(3) {
                drift(&mut live, &mut touched, &mut r);
            }
            let Some(mut scope) = Scope::between(&prev, &next) else {
                panic!("a narrow edit has a scope");
            };
            scope.merge(&touched);
            let devices = next.devices();
            // As the transaction does: the classes above those read, then read again.
            let above = scope.ancestors(&scope.restrict_live(&live, &devices), &prev);
            scope.merge(&above);
            let whole = diff(&live, &next, opts).unwrap();
            let part = diff(
                &scope.restrict_live(&live, &devices),
                &scope.restrict_target(&next),
                opts,
            )
            .unwrap();
            assert_eq!(part, whole);
            let mut patched = prev.clone();
            scope.patch(&mut patched, &scope.restrict_target(&next));
            assert_eq!(sorted(patched.clone()), sorted(next.clone()));
            assert!(parents_first(&patched));
        }
    }

    #[test]
    fn another_root_or_device_set_has_no_scope() {
        let prev = target(4);
        let mut next = prev.clone();
        next.trees[0].root = None;
        assert!(Scope::between(&prev, &next).is_none());
        let mut next = prev.clone();
        next.trees.push(TreeWant {
            dev: "eth1".into(),
            root: None,
            classes: Vec::new(),
            leaves: Vec::new(),
            filters: Vec::new(),
        });
        assert!(Scope::between(&prev, &next).is_none());
        assert_eq!(Scope::between(&prev, &prev.clone()), Some(Scope::default()));
    }
}
