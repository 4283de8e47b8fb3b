//! Live state (what a dump found) and target state (what must be there: from a plan, or
//! from a snapshot when rolling back), both limited to the objects netqos manages: the
//! root qdisc, HTB classes, leaf qdiscs and filters of each shaped device; the ingress
//! hook qdisc and netqos's redirect filter of each ingress device; IFB devices.

use serde::{Deserialize, Serialize};

use crate::apply::keys;
use crate::apply::model::*;
use crate::plan::{
    DevicePlan, FilterAction, FilterPlan, Handle, HashTablePlan, LeafPlan, LeafQueue, Plan,
    Protocol, Tbf,
};

/// The priority of netqos's ingress redirect filter (as in the tc script).
pub const REDIRECT_PRIO: u16 = crate::backend::REDIRECT_PRIO;
/// u32 node numbers netqos gives filters: 0x800 + position within (parent, priority),
/// the numbers the kernel itself would hand out, so evaluation order is plan order.
pub const FIRST_NODE: u32 = 0x800;

/// What a dump found on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevState {
    pub name: String,
    /// False when the device does not exist.
    pub exists: bool,
    /// The qdisc at the root (a kernel default has handle 0).
    pub root: Option<Qdisc>,
    /// Qdiscs below the root (leaf queues).
    pub leaves: Vec<Qdisc>,
    pub classes: Vec<Class>,
    /// Filters of the root qdisc and of the classes.
    pub filters: Vec<Filter>,
    /// The ingress or clsact qdisc.
    pub hook: Option<Qdisc>,
    /// Filters on the ingress hook at netqos's redirect priority.
    pub hook_filters: Vec<Filter>,
}

/// A dump of every device a plan touches, and the links of the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub links: Vec<Link>,
    pub devs: Vec<DevState>,
}

impl Live {
    pub fn dev(&self, name: &str) -> Option<&DevState> {
        self.devs.iter().find(|d| d.name == name)
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// What the ingress hook of a device must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookWant {
    /// An ingress or clsact qdisc (an existing clsact is used as it is), and the redirect.
    Redirect { ifb: String },
    /// No netqos redirect any more (the policy dropped this ingress block): the redirect
    /// filter goes, the hook qdisc stays (other tools may use it).
    NoRedirect,
    /// Exactly this (a snapshot): the qdisc or its absence, and these redirect-prio filters.
    Exactly {
        qdisc: Option<Qdisc>,
        filters: Vec<Filter>,
    },
}

/// The wanted state of one HTB tree; `root: None` means no qdisc of anyone's at the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeWant {
    pub dev: String,
    pub root: Option<Qdisc>,
    /// Parents before children.
    pub classes: Vec<Class>,
    pub leaves: Vec<Qdisc>,
    pub filters: Vec<Filter>,
}

/// Everything that must hold after an apply or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Links that must exist (Some) or must not exist (None, only ever an IFB).
    pub links: Vec<(String, Option<Link>)>,
    pub trees: Vec<TreeWant>,
    pub hooks: Vec<(String, HookWant)>,
}

impl Target {
    /// Every device whose state the target speaks of, sorted.
    pub fn devices(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .trees
            .iter()
            .map(|t| t.dev.clone())
            .chain(self.hooks.iter().map(|(d, _)| d.clone()))
            .chain(self.links.iter().map(|(n, _)| n.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Why a valid plan cannot be applied over netlink: limits of the netlink apply, not of
/// the policy (the tc script has none of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "leaf queue `{kind}` of class {class} is not supported by the netlink apply \
         (pfifo, bfifo and tbf are); use `netqos compile --emit tc` for it"
    )]
    UnsupportedLeaf { kind: &'static str, class: Handle },
    #[error("tbf leaf {0} needs a rate and a burst")]
    TbfWithoutRate(Handle),
    #[error("tbf leaf {0} needs a limit")]
    TbfWithoutLimit(Handle),
    #[error("{what} {value} does not fit in 32 bits")]
    TooLarge { what: &'static str, value: u64 },
    #[error("more than {} filters at priority {prio} of {parent}", 0xfff - FIRST_NODE + 1)]
    TooManyFilters { prio: u16, parent: Handle },
}

fn u32_of(value: u64, what: &'static str) -> Result<u32, TargetError> {
    u32::try_from(value).map_err(|_| TargetError::TooLarge { what, value })
}

fn ethertype(p: Protocol) -> u16 {
    match p {
        Protocol::Ip => ETH_P_IP,
        Protocol::Ipv6 => ETH_P_IPV6,
        Protocol::All => ETH_P_ALL,
    }
}

/// A leaf queue of the plan as a qdisc.
fn leaf(dev: &str, class: Handle, l: &LeafPlan) -> Result<Qdisc, TargetError> {
    let limit32 = |l: Option<u64>| l.map(|v| u32_of(v, "limit")).transpose();
    let kind = match &l.queue {
        LeafQueue::Pfifo { limit } => QdiscKind::Pfifo { limit: *limit },
        LeafQueue::Bfifo { limit } => QdiscKind::Bfifo {
            limit: limit32(*limit)?,
        },
        LeafQueue::Tbf(t) => tbf(l.handle, t)?,
        other => {
            return Err(TargetError::UnsupportedLeaf {
                kind: other.kind(),
                class,
            });
        }
    };
    Ok(Qdisc {
        dev: dev.to_string(),
        parent: class.raw(),
        handle: l.handle.raw(),
        kind,
    })
}

/// A token bucket in the kernel's units: bytes/s and ticks.
fn tbf(handle: Handle, t: &Tbf) -> Result<QdiscKind, TargetError> {
    let rate = t.rate / 8;
    let burst = t.burst;
    let (peak, mtu) = t.peak.map_or((0, 0), |(p, mtu)| (p / 8, u64::from(mtu)));
    if rate == 0 || burst == 0 {
        return Err(TargetError::TbfWithoutRate(handle));
    }
    let limit = match (t.limit, t.latency_us) {
        (Some(v), _) => v,
        (None, Some(lat)) => {
            // tc: the bytes that arrive during the latency, plus the burst.
            let l1 = rate.saturating_mul(lat) / 1_000_000 + burst;
            if peak > 0 {
                l1.min(peak.saturating_mul(lat) / 1_000_000 + mtu)
            } else {
                l1
            }
        }
        (None, None) => return Err(TargetError::TbfWithoutLimit(handle)),
    };
    Ok(QdiscKind::Tbf {
        rate,
        peakrate: peak,
        limit: u32_of(limit, "tbf limit")?,
        buffer: ticks(rate, burst),
        mtu: if peak > 0 { ticks(peak, mtu) } else { 0 },
        burst: Some(u32_of(burst, "tbf burst")?),
        pburst: (peak > 0).then(|| u32_of(mtu, "tbf mtu")).transpose()?,
    })
}

fn tree(d: &DevicePlan) -> Result<TreeWant, TargetError> {
    let dev = d.shaped_device.clone();
    let root = Qdisc {
        dev: dev.clone(),
        parent: H_ROOT,
        handle: d.root.handle.raw(),
        kind: QdiscKind::Htb {
            default: u32::from(d.root.default.0),
            r2q: d.root.r2q.unwrap_or(10),
            direct_qlen: d.root.direct_qlen,
        },
    };
    let mut classes = Vec::new();
    let mut leaves = Vec::new();
    for c in &d.classes {
        let rate = c.rate / 8;
        let ceil = c.ceil / 8;
        classes.push(Class {
            dev: dev.clone(),
            classid: c.classid.raw(),
            parent: c.parent.raw(),
            rate,
            ceil,
            buffer: ticks(rate, c.burst),
            cbuffer: ticks(ceil, c.cburst),
            quantum: c.quantum,
            prio: u32::from(c.prio),
        });
        if let Some(l) = &c.leaf {
            leaves.push(leaf(&dev, c.classid, l)?);
        }
    }
    Ok(TreeWant {
        filters: filters(&dev, &d.hash_tables, &d.filters)?,
        dev,
        root: Some(root),
        classes,
        leaves,
    })
}

/// The plan's hash tables, then its filters, numbered 0x800 + position within their
/// table: (parent, priority) for a list's own table, the bucket in a hash table.
fn filters(
    dev: &str,
    tables: &[HashTablePlan],
    plan: &[FilterPlan],
) -> Result<Vec<Filter>, TargetError> {
    let mut out: Vec<Filter> = tables
        .iter()
        .map(|t| Filter {
            dev: dev.to_string(),
            parent: t.parent.raw(),
            prio: t.prio,
            protocol: ethertype(t.protocol),
            handle: t.handle.raw(),
            keys: Vec::new(),
            action: Action::Table {
                divisor: u32::from(t.divisor),
            },
        })
        .collect();
    let mut next: std::collections::BTreeMap<(Handle, u16, u32), u32> = Default::default();
    for f in plan {
        let table = f.ht.map_or(0, |b| b.raw());
        let slot = next.entry((f.parent, f.prio, table)).or_insert(FIRST_NODE);
        let node = *slot;
        *slot += 1;
        if node > 0xfff {
            return Err(TargetError::TooManyFilters {
                prio: f.prio,
                parent: f.parent,
            });
        }
        out.push(Filter {
            dev: dev.to_string(),
            parent: f.parent.raw(),
            prio: f.prio,
            protocol: ethertype(f.protocol),
            handle: table | node,
            keys: keys::encode(&f.keys),
            action: match f.action {
                FilterAction::Class { target } => Action::Flow {
                    classid: target.raw(),
                },
                FilterAction::Link { link, hashkey } => Action::Link {
                    link: link.raw(),
                    hmask: hashkey.mask,
                    hoff: i32::from(hashkey.at),
                },
            },
        });
    }
    Ok(out)
}

/// The target state of a plan.
pub fn from_plan(plan: &Plan) -> Result<Target, TargetError> {
    let mut t = Target {
        links: Vec::new(),
        trees: Vec::new(),
        hooks: Vec::new(),
    };
    for d in &plan.devices {
        if let Some(ifb) = &d.ifb {
            t.links.push((
                ifb.clone(),
                Some(Link {
                    name: ifb.clone(),
                    kind: "ifb".into(),
                    up: true,
                }),
            ));
            t.hooks
                .push((d.device.clone(), HookWant::Redirect { ifb: ifb.clone() }));
        }
        t.trees.push(tree(d)?);
    }
    Ok(t)
}

/// The redirect filter netqos puts on `dev`'s ingress hook (`parent` depends on whether the
/// hook is an ingress or a clsact qdisc).
pub fn redirect_filter(dev: &str, parent: u32, ifb: &str) -> Filter {
    Filter {
        dev: dev.to_string(),
        parent,
        prio: REDIRECT_PRIO,
        protocol: ETH_P_ALL,
        handle: FIRST_NODE,
        keys: vec![Key {
            mask: 0,
            val: 0,
            off: 0,
            offmask: 0,
        }],
        action: Action::Redirect {
            to: ifb.to_string(),
        },
    }
}

/// The target that returns `target.devices()` to what `snap` recorded.
pub fn from_snapshot(snap: &Live, target_of_apply: &Target) -> Target {
    let mut t = Target {
        links: Vec::new(),
        trees: Vec::new(),
        hooks: Vec::new(),
    };
    for (name, _) in &target_of_apply.links {
        t.links.push((name.clone(), snap.link(name).cloned()));
    }
    for tw in &target_of_apply.trees {
        let d = snap.dev(&tw.dev).cloned().unwrap_or_default();
        t.trees.push(TreeWant {
            dev: tw.dev.clone(),
            root: d.root.filter(|q| !q.is_kernel_default()),
            classes: d.classes,
            leaves: d.leaves,
            filters: d.filters,
        });
    }
    for (dev, _) in &target_of_apply.hooks {
        let d = snap.dev(dev).cloned().unwrap_or_default();
        t.hooks.push((
            dev.clone(),
            HookWant::Exactly {
                qdisc: d.hook,
                filters: d.hook_filters,
            },
        ));
    }
    t
}

/// Whether `with_removals(new, previous)` adds anything.
pub fn needs_removals(new: &Target, previous: &Target) -> bool {
    previous
        .links
        .iter()
        .any(|(name, l)| l.is_some() && !new.links.iter().any(|(n, _)| n == name))
        || previous
            .trees
            .iter()
            .any(|t| !new.trees.iter().any(|n| n.dev == t.dev))
        || previous
            .hooks
            .iter()
            .any(|(dev, _)| !new.hooks.iter().any(|(d, _)| d == dev))
}

/// `new`, plus the removal of what `previous` (the last applied target) installed on
/// devices `new` no longer shapes: their HTB root, their redirect, their IFB.
pub fn with_removals(mut new: Target, previous: &Target) -> Target {
    for (name, link) in &previous.links {
        if link.is_some() && !new.links.iter().any(|(n, _)| n == name) {
            new.links.push((name.clone(), None));
        }
    }
    for t in &previous.trees {
        if !new.trees.iter().any(|n| n.dev == t.dev) {
            new.trees.push(TreeWant {
                dev: t.dev.clone(),
                root: None,
                classes: Vec::new(),
                leaves: Vec::new(),
                filters: Vec::new(),
            });
        }
    }
    for (dev, _) in &previous.hooks {
        if !new.hooks.iter().any(|(d, _)| d == dev) {
            new.hooks.push((dev.clone(), HookWant::NoRedirect));
        }
    }
    new
}
