//! The mirror: the managed kernel state of the agent's devices (what `Kernel::read` would
//! return), kept current from the event stream so that a re-apply does not re-read 30,000
//! objects. Events whose effect is known exactly change the mirror in place; the kernel's
//! silent side effects are modelled where they are certain (a deleted class takes its leaf
//! queue and its filters with it; a replaced root takes the whole tree); anything else
//! (a device that appears, a new u32 table, a whole filter list deleted, the root deleted,
//! lost events) marks the device dirty, and the next `refresh` re-reads only those devices.
//! Nodes in the buckets of netqos's hash tables (`lower::hash`) are followed like the
//! nodes of a list's own table: by their whole handle, where the read puts them.
//!
//! Invariant (tested against the kernel): after `refresh`, `live()` equals a fresh read.
//!
//! The mirror also says which objects events changed (`touched`, by key, with the event's
//! sequence number) so that the agent diffs only those: after the kernel was found to hold
//! the target wholly (or the touched objects were found to hold it), those keys are
//! `settle`d. Whatever re-reads or rebuilds a device makes the mirror untracked until a
//! whole-tree comparison settles it.

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::events::Event;
use crate::apply::model::{Action, Class, Filter, H_INGRESS, H_ROOT, Qdisc};
use crate::apply::netlink::tc::FilterEntry;
use crate::apply::state::{DevState, Live};
use crate::apply::state_scope::{FilterKey, Scope, filter_key};

/// An object's key within a device, as a scope names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Class(u32),
    Leaf(u32),
    Filter(FilterKey),
}

/// The managed state, its ifindex map, and which devices must be read again.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    live: Live,
    names: BTreeMap<i32, String>,
    dirty: BTreeSet<String>,
    /// The number of events followed.
    seq: u64,
    /// Objects events changed, by device, with the number of the last event that did.
    touched: BTreeMap<String, BTreeMap<Key, u64>>,
    /// The last event after which the mirror cannot say which objects changed (a device
    /// re-read or rebuilt, lost events); `None`: it can.
    untracked: Option<u64>,
}

impl Mirror {
    /// A mirror of a fresh read (`live`) and the kernel's ifindex map at that read.
    /// It starts untracked at event number `seq`.
    pub fn new(live: Live, ifindex: &BTreeMap<String, i32>, seq: u64) -> Mirror {
        Mirror {
            live,
            names: ifindex.iter().map(|(n, i)| (*i, n.clone())).collect(),
            dirty: BTreeSet::new(),
            seq,
            touched: BTreeMap::new(),
            untracked: Some(seq),
        }
    }

    /// The number of events followed so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The objects events changed and not yet settled; `None`: not known.
    pub fn touched(&self) -> Option<Scope> {
        if self.untracked.is_some() {
            return None;
        }
        let mut s = Scope::default();
        for (dev, keys) in &self.touched {
            let d = s.dev_mut(dev);
            for k in keys.keys() {
                match *k {
                    Key::Class(c) => d.classes.insert(c),
                    Key::Leaf(l) => d.leaves.insert(l),
                    Key::Filter(f) => d.filters.insert(f),
                };
            }
        }
        Some(s)
    }

    /// The kernel was found to hold the target in `scope` (`None`: everywhere) as of
    /// event `upto`: forgets what changed there up to then.
    pub fn settle(&mut self, upto: u64, scope: Option<&Scope>) {
        let Some(scope) = scope else {
            if self.untracked.is_some_and(|u| u <= upto) {
                self.untracked = None;
            }
            for keys in self.touched.values_mut() {
                keys.retain(|_, at| *at > upto);
            }
            self.touched.retain(|_, k| !k.is_empty());
            return;
        };
        for (dev, keys) in &mut self.touched {
            let Some(d) = scope.devs.get(dev) else {
                continue;
            };
            keys.retain(|k, at| {
                let inside = match k {
                    Key::Class(c) => d.classes.contains(c),
                    Key::Leaf(l) => d.leaves.contains(l),
                    Key::Filter(f) => d.filters.contains(f),
                };
                !inside || *at > upto
            });
        }
        self.touched.retain(|_, k| !k.is_empty());
    }

    fn lose(&mut self) {
        self.untracked = Some(self.seq);
    }

    fn touch(&mut self, dev: &str, keys: impl IntoIterator<Item = Key>) {
        let seq = self.seq;
        let at = self.touched.entry(dev.to_string()).or_default();
        for k in keys {
            at.insert(k, seq);
        }
    }

    fn mark_dirty(&mut self, dev: String) {
        self.dirty.insert(dev);
        self.lose();
    }

    /// The mirrored state.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// The devices the mirror follows.
    pub fn devices(&self) -> Vec<String> {
        self.live.devs.iter().map(|d| d.name.clone()).collect()
    }

    /// Devices whose state is not known exactly (read them and `refresh`).
    pub fn dirty(&self) -> Vec<String> {
        self.dirty.iter().cloned().collect()
    }

    /// Replaces the state of the devices in `fresh` (a read of `dirty()` or more) and the
    /// link list, and forgets that they were dirty.
    pub fn refresh(&mut self, fresh: Live, ifindex: &BTreeMap<String, i32>) {
        self.lose();
        self.names = ifindex.iter().map(|(n, i)| (*i, n.clone())).collect();
        self.live.links = fresh.links;
        for d in fresh.devs {
            self.dirty.remove(&d.name);
            match self.live.devs.iter_mut().find(|x| x.name == d.name) {
                Some(x) => *x = d,
                None => self.live.devs.push(d),
            }
        }
    }

    /// Follows one event.
    pub fn apply(&mut self, e: &Event) {
        self.seq += 1;
        match e {
            Event::Overrun => {
                self.dirty.extend(self.devices());
                self.lose();
            }
            Event::Link {
                ifindex,
                link,
                deleted,
            } => self.link(*ifindex, link, *deleted),
            Event::Qdisc {
                ifindex,
                qdisc,
                deleted,
            } => {
                let Some(d) = self.dev_mut(*ifindex) else {
                    return;
                };
                let mut q = qdisc.clone();
                q.dev = d.name.clone();
                let dev = d.name.clone();
                match qdisc_event(d, q, *deleted) {
                    Followed::Reread => self.mark_dirty(dev),
                    Followed::Rebuilt => self.lose(),
                    Followed::Touched(keys) => self.touch(&dev, keys),
                }
            }
            Event::Class {
                ifindex,
                class,
                deleted,
            } => {
                let Some(d) = self.dev_mut(*ifindex) else {
                    return;
                };
                let mut c = class.clone();
                c.dev = d.name.clone();
                let dev = d.name.clone();
                let keys = class_event(d, c, *deleted);
                self.touch(&dev, keys);
            }
            Event::Filter {
                ifindex,
                parent,
                entry,
                deleted,
            } => {
                let names = self.names.clone();
                let Some(d) = self.dev_mut(*ifindex) else {
                    return;
                };
                let dev = d.name.clone();
                match filter_event(d, *parent, entry, *deleted, &names) {
                    Some(keys) => self.touch(&dev, keys),
                    None => self.mark_dirty(dev),
                }
            }
        }
    }

    fn dev_mut(&mut self, ifindex: i32) -> Option<&mut DevState> {
        let name = self.names.get(&ifindex)?;
        if self.dirty.contains(name) {
            return None; // re-read anyway
        }
        self.live
            .devs
            .iter_mut()
            .find(|d| &d.name == name && d.exists)
    }

    fn link(&mut self, ifindex: i32, link: &crate::apply::model::Link, deleted: bool) {
        let old = self.names.get(&ifindex).cloned();
        if deleted {
            self.names.remove(&ifindex);
            if let Some(name) = &old {
                self.live.links.retain(|l| &l.name != name);
                if let Some(d) = self.live.devs.iter_mut().find(|d| &d.name == name) {
                    *d = DevState {
                        name: name.clone(),
                        ..DevState::default()
                    };
                    self.dirty.remove(name);
                    self.untracked = Some(self.seq);
                }
            }
            return;
        }
        if let Some(name) = old.as_ref().filter(|n| **n != link.name) {
            // Renamed: gone under the old name.
            self.live.links.retain(|l| &l.name != name);
            if let Some(d) = self.live.devs.iter_mut().find(|d| &d.name == name) {
                *d = DevState {
                    name: name.clone(),
                    ..DevState::default()
                };
                self.untracked = Some(self.seq);
            }
        }
        self.names.insert(ifindex, link.name.clone());
        match self.live.links.binary_search_by(|l| l.name.cmp(&link.name)) {
            Ok(i) => self.live.links[i] = link.clone(),
            Err(i) => self.live.links.insert(i, link.clone()),
        }
        // A managed device that (re)appears: its qdiscs are not known.
        if let Some(d) = self.live.devs.iter().find(|d| d.name == link.name)
            && (!d.exists || old.as_deref() != Some(link.name.as_str()))
        {
            self.mark_dirty(link.name.clone());
        }
    }
}

fn root_major(d: &DevState) -> Option<u32> {
    d.root
        .as_ref()
        .map(|r| r.handle & 0xffff_0000)
        .filter(|m| *m != 0)
}

fn clear_tree(d: &mut DevState) {
    d.classes.clear();
    d.leaves.clear();
    d.filters.clear();
}

/// What following an event did to a device.
enum Followed {
    /// Its state is not known: read it again.
    Reread,
    /// Its tree was rebuilt (objects went without events).
    Rebuilt,
    /// These objects changed (roots, hooks and links are always compared whole).
    Touched(Vec<Key>),
}

/// Follows a qdisc event.
fn qdisc_event(d: &mut DevState, q: Qdisc, deleted: bool) -> Followed {
    match q.parent {
        H_ROOT => {
            if deleted {
                // The kernel grafts its default root without telling: read it.
                clear_tree(d);
                d.root = None;
                return Followed::Reread;
            }
            let same = d
                .root
                .as_ref()
                .is_some_and(|r| r.handle == q.handle && r.kind.name() == q.kind.name());
            d.root = Some(q);
            if same {
                return Followed::Touched(Vec::new());
            }
            // A graft: the old tree is destroyed without notifications.
            clear_tree(d);
            Followed::Rebuilt
        }
        H_INGRESS => {
            if deleted {
                d.hook = None;
                d.hook_filters.clear();
            } else {
                let same = d.hook.as_ref().is_some_and(|h| h.handle == q.handle);
                if !same {
                    d.hook_filters.clear();
                }
                d.hook = Some(q);
            }
            Followed::Touched(Vec::new())
        }
        p => {
            let Some(major) = root_major(d) else {
                return Followed::Touched(Vec::new());
            };
            if p & 0xffff_0000 != major {
                return Followed::Touched(Vec::new());
            }
            let at = d.leaves.binary_search_by_key(&p, |l| l.parent);
            match (at, deleted) {
                (Ok(i), true) if d.leaves[i].handle == q.handle => {
                    d.leaves.remove(i);
                }
                (Ok(_), true) | (Err(_), true) => {}
                (Ok(i), false) => d.leaves[i] = q,
                (Err(i), false) => d.leaves.insert(i, q),
            }
            Followed::Touched(vec![Key::Leaf(p)])
        }
    }
}

/// Follows a class event; returns the keys it changed.
fn class_event(d: &mut DevState, c: Class, deleted: bool) -> Vec<Key> {
    let Some(major) = root_major(d) else {
        return Vec::new();
    };
    if c.classid & 0xffff_0000 != major {
        return Vec::new();
    }
    let mut keys = vec![Key::Class(c.classid)];
    let at = d.classes.binary_search_by_key(&c.classid, |x| x.classid);
    if deleted {
        if let Ok(i) = at {
            d.classes.remove(i);
        }
        // Its leaf queue and its own filters go with it, silently.
        keys.push(Key::Leaf(c.classid));
        d.leaves.retain(|l| l.parent != c.classid);
        d.filters.retain(|f| {
            let mine = f.parent == c.classid;
            if mine {
                keys.push(Key::Filter(filter_key(f)));
            }
            !mine
        });
        return keys;
    }
    match at {
        Ok(i) => d.classes[i] = c,
        Err(i) => d.classes.insert(i, c),
    }
    keys
}

/// Where a filter sits in the mirror's sorted list, the order of a read: parent,
/// priority, hash tables before nodes, then the node's identity (its number in the list's
/// own table; the whole handle, table, bucket and node, in netqos's hash tables, whose
/// buckets number their nodes from 0x800 each).
fn place(f: &Filter) -> (u32, u16, bool, u32) {
    let node = !matches!(f.action, Action::Table { .. });
    (f.parent, f.prio, node, f.ident())
}

/// Follows a filter event: the keys it changed, or `None` when its place is not known
/// (re-read the device).
fn filter_event(
    d: &mut DevState,
    parent: u32,
    entry: &FilterEntry,
    deleted: bool,
    names: &BTreeMap<i32, String>,
) -> Option<Vec<Key>> {
    let FilterEntry::Node {
        filter, redirect, ..
    } = entry
    else {
        // A whole list (handle 0) or a hash table: the read attributes these.
        return None;
    };
    if parent & 0xffff_0000 == 0xffff_0000 {
        // The ingress hook: rare (setup only); read it.
        return None;
    }
    // u32 tables are shared within a qdisc: the owner of the node's table is known from
    // the nodes already mirrored (the read asks the kernel for it). A node in a bucket of
    // one of netqos's hash tables belongs where the table itself is (a filter of its own,
    // kept by the read and by `Action::Table` here).
    let table = filter.handle & 0xfff0_0000;
    let owner = d
        .filters
        .iter()
        .find(|f| f.handle & 0xfff0_0000 == table && f.prio == filter.prio)
        .map(|f| (f.parent, f.protocol));
    let Some((owner, protocol)) = owner else {
        return deleted.then(Vec::new);
    };
    let mut f = filter.clone();
    f.dev = d.name.clone();
    f.parent = owner;
    f.protocol = protocol;
    if let Some(r) = redirect {
        f.action = Action::Redirect {
            to: names
                .get(r)
                .cloned()
                .unwrap_or_else(|| format!("ifindex {r}")),
        };
    }
    let key = filter_key(&f);
    let at = d.filters.binary_search_by_key(&place(&f), place);
    match (at, deleted) {
        (Ok(i), true) => {
            if d.filters[i].handle == f.handle {
                d.filters.remove(i);
            }
        }
        (Err(_), true) => {}
        (Ok(i), false) => d.filters[i] = f,
        (Err(i), false) => d.filters.insert(i, f),
    }
    Some(vec![Key::Filter(key)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::model::{Key, QdiscKind};

    fn class(minor: u32, parent: u32) -> Class {
        Class {
            dev: "eth0".into(),
            classid: 0x0001_0000 | minor,
            parent,
            rate: 1000,
            ceil: 1000,
            buffer: 10,
            cbuffer: 10,
            quantum: Some(1514),
            prio: 0,
        }
    }

    fn mirror() -> Mirror {
        let root = Qdisc {
            dev: "eth0".into(),
            parent: H_ROOT,
            handle: 0x0001_0000,
            kind: QdiscKind::Htb {
                default: 0x20,
                r2q: 10,
                direct_qlen: 1000,
            },
        };
        let leaf = Qdisc {
            dev: "eth0".into(),
            parent: 0x0001_0020,
            handle: 0x0020_0000,
            kind: QdiscKind::Bfifo { limit: Some(1000) },
        };
        let filter = Filter {
            dev: "eth0".into(),
            parent: 0x0001_0000,
            prio: 1,
            protocol: 0x0800,
            handle: 0x8000_0800,
            keys: vec![Key {
                mask: 1,
                val: 1,
                off: 16,
                offmask: 0,
            }],
            action: Action::Flow {
                classid: 0x0001_0010,
            },
        };
        let live = Live {
            links: vec![crate::apply::model::Link {
                name: "eth0".into(),
                kind: "veth".into(),
                up: true,
            }],
            devs: vec![DevState {
                name: "eth0".into(),
                exists: true,
                root: Some(root),
                leaves: vec![leaf],
                classes: vec![
                    class(1, 0x0001_0000),
                    class(0x10, 0x0001_0001),
                    class(0x20, 0x0001_0001),
                ],
                filters: vec![filter],
                hook: None,
                hook_filters: vec![],
            }],
        };
        let mut m = Mirror::new(live, &BTreeMap::from([("eth0".to_string(), 3)]), 0);
        m.settle(0, None);
        m
    }

    #[test]
    fn a_deleted_class_takes_its_leaf_queue() {
        let mut m = mirror();
        m.apply(&Event::Class {
            ifindex: 3,
            class: class(0x20, 0x0001_0001),
            deleted: true,
        });
        let d = &m.live().devs[0];
        assert_eq!(d.classes.len(), 2);
        assert!(d.leaves.is_empty());
        assert!(m.dirty().is_empty());
    }

    #[test]
    fn a_changed_class_is_replaced_in_place() {
        let mut m = mirror();
        let mut c = class(0x10, 0x0001_0001);
        c.rate = 5;
        m.apply(&Event::Class {
            ifindex: 3,
            class: c.clone(),
            deleted: false,
        });
        assert_eq!(m.live().devs[0].classes[1], c);
    }

    #[test]
    fn a_replaced_root_drops_the_tree() {
        let mut m = mirror();
        m.apply(&Event::Qdisc {
            ifindex: 3,
            qdisc: Qdisc {
                dev: String::new(),
                parent: H_ROOT,
                handle: 0x8001_0000,
                kind: QdiscKind::Pfifo { limit: Some(1000) },
            },
            deleted: false,
        });
        let d = &m.live().devs[0];
        assert!(d.classes.is_empty() && d.leaves.is_empty() && d.filters.is_empty());
        assert_eq!(d.root.as_ref().map(|r| r.handle), Some(0x8001_0000));
    }

    #[test]
    fn a_deleted_root_or_a_new_table_makes_the_device_dirty() {
        let mut m = mirror();
        let mut f = m.live().devs[0].filters[0].clone();
        f.handle = 0x8010_0800;
        f.prio = 2;
        m.apply(&Event::Filter {
            ifindex: 3,
            parent: 0x0001_0000,
            entry: FilterEntry::Node {
                ifindex: 3,
                filter: f,
                redirect: None,
            },
            deleted: false,
        });
        assert_eq!(m.dirty(), vec!["eth0".to_string()]);
    }

    #[test]
    fn a_filter_in_a_known_table_is_followed() {
        let mut m = mirror();
        let mut f = m.live().devs[0].filters[0].clone();
        f.handle = 0x8000_0801;
        f.dev = String::new();
        m.apply(&Event::Filter {
            ifindex: 3,
            parent: 0x0001_0000,
            entry: FilterEntry::Node {
                ifindex: 3,
                filter: f,
                redirect: None,
            },
            deleted: false,
        });
        assert!(m.dirty().is_empty());
        assert_eq!(m.live().devs[0].filters.len(), 2);
    }

    /// A hash table of netqos's at prio 1 (the table, its link node in the list's own
    /// table, two bucket nodes numbered 0x800 in buckets 1 and 2), in the read's order.
    fn hashed() -> Mirror {
        let mut m = mirror();
        let base = m.live().devs[0].filters[0].clone();
        let node = |handle: u32, action: Action| Filter {
            handle,
            action,
            ..base.clone()
        };
        let d = &mut m.live.devs[0];
        d.filters = vec![
            node(0x0010_0000, Action::Table { divisor: 256 }),
            node(
                0x8000_0800,
                Action::Link {
                    link: 0x0010_0000,
                    hmask: 0xff,
                    hoff: 16,
                },
            ),
            node(
                0x0010_1800,
                Action::Flow {
                    classid: 0x0001_0010,
                },
            ),
            node(
                0x0010_2800,
                Action::Flow {
                    classid: 0x0001_0020,
                },
            ),
        ];
        m
    }

    fn node_event(f: &Filter, deleted: bool) -> Event {
        let mut f = f.clone();
        f.dev = String::new();
        f.parent = 0;
        f.protocol = 0;
        Event::Filter {
            ifindex: 3,
            parent: 0x0001_0000,
            entry: FilterEntry::Node {
                ifindex: 3,
                filter: f,
                redirect: None,
            },
            deleted,
        }
    }

    /// Issue 14: a bucket node of a hash table deleted by hand (as `tc filter del … handle
    /// 1:2:800`) and put back is followed in place — the device stays clean, the node is
    /// touched by its whole handle, and its sibling in another bucket with the same node
    /// number stays.
    #[test]
    fn a_bucket_node_of_a_hash_table_is_followed_in_place() {
        let mut m = hashed();
        let before = m.live().clone();
        let gone = before.devs[0].filters[3].clone();
        m.apply(&node_event(&gone, true));
        assert!(m.dirty().is_empty(), "followed, not re-read");
        let d = &m.live().devs[0];
        assert_eq!(d.filters.len(), 3);
        assert!(d.filters.iter().all(|f| f.handle != gone.handle));
        assert!(d.filters.iter().any(|f| f.handle == 0x0010_1800));
        let touched = m.touched().expect("tracked");
        let key = filter_key(&gone);
        assert!(touched.devs["eth0"].filters.contains(&key), "{touched:?}");
        m.apply(&node_event(&gone, false));
        assert_eq!(m.live(), &before, "put back where the read has it");
        // A changed bucket node replaces itself, not its namesake in another bucket.
        let mut moved = before.devs[0].filters[2].clone();
        moved.action = Action::Flow {
            classid: 0x0001_0001,
        };
        m.apply(&node_event(&moved, false));
        let d = &m.live().devs[0];
        assert_eq!(d.filters.len(), 4);
        assert_eq!(d.filters[2], moved);
        assert_eq!(d.filters[3], before.devs[0].filters[3]);
    }

    #[test]
    fn a_device_that_goes_and_comes_back_is_read_again() {
        let mut m = mirror();
        let link = crate::apply::model::Link {
            name: "eth0".into(),
            kind: "veth".into(),
            up: true,
        };
        m.apply(&Event::Link {
            ifindex: 3,
            link: link.clone(),
            deleted: true,
        });
        assert!(!m.live().devs[0].exists);
        assert!(m.live().links.is_empty());
        m.apply(&Event::Link {
            ifindex: 9,
            link,
            deleted: false,
        });
        assert_eq!(m.dirty(), vec!["eth0".to_string()]);
    }
}
