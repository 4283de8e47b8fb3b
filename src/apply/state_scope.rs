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
