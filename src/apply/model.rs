//! The kernel objects netqos manages, in kernel units (rates in bytes/s, bursts in 64 ns
//! ticks, handles as `major << 16 | minor`), with the identity each is known by and the
//! ordered changes between two states. Serialisable: snapshots and journals hold these.

use serde::{Deserialize, Serialize};

/// `TC_H_ROOT`: the parent of a device's root qdisc.
pub const H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_INGRESS` / `TC_H_CLSACT`: the parent of ingress and clsact qdiscs.
pub const H_INGRESS: u32 = 0xffff_fff1;
/// The handle of ingress and clsact qdiscs (`ffff:`), also the parent of ingress filters.
pub const H_INGRESS_QDISC: u32 = 0xffff_0000;
/// The parent of filters on clsact's ingress hook.
pub const H_CLSACT_INGRESS: u32 = 0xffff_fff2;

/// `ETH_P_ALL`, `ETH_P_IP`, `ETH_P_IPV6` (host order).
pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// One kernel tick of the packet scheduler: 64 ns.
pub const TICK_NS: u64 = 64;

/// Ticks to send `bytes` at `rate` bytes/s, rounded up (iproute2 ≥ 6.15 rounding).
pub fn ticks(rate: u64, bytes: u64) -> u32 {
    if rate == 0 {
        return u32::MAX;
    }
    let ns = u128::from(bytes) * 1_000_000_000;
    let t = ns.div_ceil(u128::from(rate) * u128::from(TICK_NS));
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// Bytes sent at `rate` during `t` ticks (the inverse of `ticks`, rounded down).
pub fn bytes_of_ticks(rate: u64, t: u32) -> u64 {
    let b = u128::from(rate) * u128::from(t) * u128::from(TICK_NS) / 1_000_000_000;
    u64::try_from(b).unwrap_or(u64::MAX)
}

/// `1:10` the way tc prints handles (hex); `ffff:` for a qdisc handle, `root` and
/// `ingress` for the special parents.
pub fn fmt_handle(h: u32) -> String {
    match h {
        H_ROOT => "root".into(),
        H_INGRESS => "ingress".into(),
        H_CLSACT_INGRESS => "ffff:fff2".into(),
        _ if h & 0xffff == 0 => format!("{:x}:", h >> 16),
        _ => format!("{:x}:{:x}", h >> 16, h & 0xffff),
    }
}

/// The kind and parameters of a qdisc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QdiscKind {
    Htb {
        /// Minor of the default class.
        default: u32,
        r2q: u32,
        direct_qlen: u32,
    },
    Tbf {
        /// bytes/s.
        rate: u64,
        /// bytes/s, 0 when there is no peak bucket.
        peakrate: u64,
        /// bytes.
        limit: u32,
        /// ticks.
        buffer: u32,
        /// ticks of the peak bucket.
        mtu: u32,
        /// bytes, sent as `TCA_TBF_BURST` when known (the kernel does not report it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        burst: Option<u32>,
        /// bytes of the peak bucket, sent as `TCA_TBF_PBURST` when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pburst: Option<u32>,
    },
    /// `limit` in packets; `None`: the kernel's default (desired states only).
    Pfifo {
        limit: Option<u32>,
    },
    /// `limit` in bytes.
    Bfifo {
        limit: Option<u32>,
    },
    Ingress,
    Clsact,
    /// Anything netqos does not model (including the kernel's default root qdiscs).
    Other {
        name: String,
    },
}

impl QdiscKind {
    pub fn name(&self) -> &str {
        match self {
            QdiscKind::Htb { .. } => "htb",
            QdiscKind::Tbf { .. } => "tbf",
            QdiscKind::Pfifo { .. } => "pfifo",
            QdiscKind::Bfifo { .. } => "bfifo",
            QdiscKind::Ingress => "ingress",
            QdiscKind::Clsact => "clsact",
            QdiscKind::Other { name } => name,
        }
    }

    /// Whether `live` satisfies `self` (a desired value): unset limits accept any,
    /// buffers may differ by one tick (rounding of other tools).
    pub fn satisfied_by(&self, live: &QdiscKind) -> bool {
        match (self, live) {
            (QdiscKind::Pfifo { limit: want }, QdiscKind::Pfifo { limit: have })
            | (QdiscKind::Bfifo { limit: want }, QdiscKind::Bfifo { limit: have }) => {
                want.is_none() || want == have
            }
            (
                QdiscKind::Tbf {
                    rate,
                    peakrate,
                    limit,
                    buffer,
                    mtu,
                    ..
                },
                QdiscKind::Tbf {
                    rate: r2,
                    peakrate: p2,
                    limit: l2,
                    buffer: b2,
                    mtu: m2,
                    ..
                },
            ) => {
                rate == r2
                    && peakrate == p2
                    && limit == l2
                    && buffer.abs_diff(*b2) <= 1
                    && mtu.abs_diff(*m2) <= 1
            }
            (a, b) => a == b,
        }
    }
}

/// A qdisc, known by its device and parent (one qdisc per attachment point).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qdisc {
    pub dev: String,
    pub parent: u32,
    pub handle: u32,
    #[serde(flatten)]
    pub kind: QdiscKind,
}

impl Qdisc {
    /// A kernel default root (handle 0: noqueue, pfifo_fast, mq, …): nothing anyone added.
    pub fn is_kernel_default(&self) -> bool {
        self.handle == 0
    }

    pub fn describe(&self) -> String {
        let at = match self.parent {
            H_ROOT => "root".to_string(),
            H_INGRESS => "ingress hook".to_string(),
            p => format!("parent {}", fmt_handle(p)),
        };
        format!(
            "qdisc {} {} on {} {at}",
            self.kind.name(),
            fmt_handle(self.handle),
            self.dev
        )
    }
}

/// An HTB class, known by its device and class id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Class {
    pub dev: String,
    pub classid: u32,
    pub parent: u32,
    /// bytes/s.
    pub rate: u64,
    pub ceil: u64,
    /// ticks.
    pub buffer: u32,
    pub cbuffer: u32,
    /// bytes; `None`: derived by the kernel from r2q (desired states only).
    pub quantum: Option<u32>,
    pub prio: u32,
}

impl Class {
    /// Whether `live` satisfies `self` in every parameter that can change in place.
    pub fn params_satisfied_by(&self, live: &Class) -> bool {
        self.rate == live.rate
            && self.ceil == live.ceil
            && self.buffer.abs_diff(live.buffer) <= 1
            && self.cbuffer.abs_diff(live.cbuffer) <= 1
            && (self.quantum.is_none() || self.quantum == live.quantum)
            && self.prio == live.prio
    }

    pub fn describe(&self) -> String {
        format!("class {} on {}", fmt_handle(self.classid), self.dev)
    }
}

/// One 32-bit u32 match: `(packet[off..off+4] & mask) == val`, mask and val in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub mask: u32,
    pub val: u32,
    pub off: i32,
    pub offmask: i32,
}

/// What a filter does with a packet it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Classify into this class.
    Flow { classid: u32 },
    /// mirred egress redirect to this device (the ingress IFB redirect).
    Redirect { to: String },
    /// Continue in a bucket of the hash table `link` (its handle): the packet's word at
    /// `hoff` masked with `hmask` picks the bucket (the selector's hash key).
    Link { link: u32, hmask: u32, hoff: i32 },
    /// A u32 hash table of `divisor` buckets (the filter's handle is its id).
    Table { divisor: u32 },
    /// A filter netqos cannot recreate (another classifier, other actions).
    Foreign { what: String },
}

/// The hash-table ids netqos gives its tables: below 0x800, where the kernel numbers the
/// lists' own tables.
pub fn is_netqos_table(handle: u32) -> bool {
    let id = handle >> 20;
    id != 0 && id < 0x800
}

/// A u32 filter node, known by device, parent, priority and node number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub dev: String,
    pub parent: u32,
    pub prio: u16,
    /// Ethertype, host order.
    pub protocol: u16,
    /// Full u32 handle as the kernel reports it, or only the node number (low 12 bits)
    /// for a filter still to be created; the kernel fills in the hash table.
    pub handle: u32,
    pub keys: Vec<Key>,
    #[serde(flatten)]
    pub action: Action,
}

impl Filter {
    /// The node number: what identifies a u32 filter within its priority.
    pub fn node(&self) -> u32 {
        self.handle & 0xfff
    }

    /// What identifies the filter within its priority: the node number in the list's own
    /// table (whose id the kernel chooses), the whole handle in netqos's hash tables
    /// (table, bucket, node; a table's handle is its id).
    pub fn ident(&self) -> u32 {
        if is_netqos_table(self.handle) {
            self.handle
        } else {
            self.node()
        }
    }

    pub fn describe(&self) -> String {
        let to = match &self.action {
            Action::Flow { classid } => format!(" → {}", fmt_handle(*classid)),
            Action::Redirect { to } => format!(" → redirect to {to}"),
            Action::Link { link, .. } => format!(" → hash table {:x}:", link >> 20),
            Action::Table { divisor } => format!(" (hash table of {divisor} buckets)"),
            Action::Foreign { what } => format!(" ({what})"),
        };
        let node = if is_netqos_table(self.handle) {
            let (t, b, n) = (self.handle >> 20, (self.handle >> 12) & 0xff, self.node());
            if self.handle & 0xfffff == 0 {
                format!("table {t:x}:")
            } else {
                format!("node {t:x}:{b:x}:{n:x}")
            }
        } else {
            format!("node {:x}", self.node())
        };
        format!(
            "filter prio {} {node} at {} on {}{to}",
            self.prio,
            fmt_handle(self.parent),
            self.dev
        )
    }
}

/// A network device netqos may create (the IFB of an ingress policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub name: String,
    /// `ifb`, `veth`, … (empty for devices without link info, such as physical NICs).
    pub kind: String,
    pub up: bool,
}

/// One kernel write, with everything needed to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    AddLink {
        link: Link,
    },
    SetLinkUp {
        name: String,
        up: bool,
    },
    DelLink {
        link: Link,
    },
    AddQdisc {
        q: Qdisc,
    },
    /// Graft `new` at `old`'s place atomically (a different kind or handle).
    ReplaceQdisc {
        old: Qdisc,
        new: Qdisc,
    },
    /// Same handle and kind, parameters changed in place.
    ChangeQdisc {
        old: Qdisc,
        new: Qdisc,
    },
    DelQdisc {
        q: Qdisc,
    },
    AddClass {
        c: Class,
    },
    ChangeClass {
        old: Class,
        new: Class,
    },
    DelClass {
        c: Class,
    },
    AddFilter {
        f: Filter,
    },
    /// Same keys, another target (u32 keeps the keys of a replaced node).
    ReplaceFilter {
        old: Filter,
        new: Filter,
    },
    DelFilter {
        f: Filter,
    },
}

impl Change {
    /// The change that undoes this one.
    pub fn inverse(&self) -> Change {
        match self.clone() {
            Change::AddLink { link } => Change::DelLink { link },
            Change::SetLinkUp { name, up } => Change::SetLinkUp { name, up: !up },
            Change::DelLink { link } => Change::AddLink { link },
            Change::AddQdisc { q } => Change::DelQdisc { q },
            Change::ReplaceQdisc { old, new } => Change::ReplaceQdisc { old: new, new: old },
            Change::ChangeQdisc { old, new } => Change::ChangeQdisc { old: new, new: old },
            Change::DelQdisc { q } => Change::AddQdisc { q },
            Change::AddClass { c } => Change::DelClass { c },
            Change::ChangeClass { old, new } => Change::ChangeClass { old: new, new: old },
            Change::DelClass { c } => Change::AddClass { c },
            Change::AddFilter { f } => Change::DelFilter { f },
            Change::ReplaceFilter { old, new } => Change::ReplaceFilter { old: new, new: old },
            Change::DelFilter { f } => Change::AddFilter { f },
        }
    }

    /// One line for people: `+ class 1:10 on eth0 rate 200Mbit …`.
    pub fn describe(&self) -> String {
        match self {
            Change::AddLink { link } => format!("+ link {} (type {})", link.name, link.kind),
            Change::SetLinkUp { name, up } => {
                format!("~ link {name} {}", if *up { "up" } else { "down" })
            }
            Change::DelLink { link } => format!("- link {}", link.name),
            Change::AddQdisc { q } => format!("+ {}", q.describe()),
            Change::ReplaceQdisc { old, new } => {
                format!("~ {} replaces {}", new.describe(), old.kind.name())
            }
            Change::ChangeQdisc { new, .. } => format!("~ {} (in place)", new.describe()),
            Change::DelQdisc { q } => format!("- {}", q.describe()),
            Change::AddClass { c } => format!("+ {} {}", c.describe(), class_params(c)),
            Change::ChangeClass { old, new } => format!(
                "~ {} {} (was {})",
                new.describe(),
                class_params(new),
                class_params(old)
            ),
            Change::DelClass { c } => format!("- {}", c.describe()),
            Change::AddFilter { f } => format!("+ {}", f.describe()),
            Change::ReplaceFilter { new, .. } => format!("~ {}", new.describe()),
            Change::DelFilter { f } => format!("- {}", f.describe()),
        }
    }
}

fn class_params(c: &Class) -> String {
    format!(
        "rate {} ceil {} prio {}",
        crate::units::fmt_rate(c.rate.saturating_mul(8)),
        crate::units::fmt_rate(c.ceil.saturating_mul(8)),
        c.prio
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_maths_matches_tc() {
        // 10000 bytes at 1e6 B/s = 10 ms = 156250 ticks.
        assert_eq!(ticks(1_000_000, 10_000), 156_250);
        assert_eq!(bytes_of_ticks(1_000_000, 156_250), 10_000);
        assert_eq!(ticks(0, 1), u32::MAX);
    }

    #[test]
    fn handles_print_like_tc() {
        assert_eq!(fmt_handle(0x0001_0010), "1:10");
        assert_eq!(fmt_handle(0x0001_0000), "1:");
        assert_eq!(fmt_handle(H_ROOT), "root");
    }

    #[test]
    fn inverse_of_inverse_is_identity() {
        let c = Class {
            dev: "eth0".into(),
            classid: 0x10010,
            parent: 0x10001,
            rate: 1,
            ceil: 2,
            buffer: 3,
            cbuffer: 4,
            quantum: Some(1514),
            prio: 0,
        };
        let mut c2 = c.clone();
        c2.rate = 9;
        for ch in [
            Change::AddClass { c: c.clone() },
            Change::ChangeClass {
                old: c.clone(),
                new: c2,
            },
        ] {
            assert_eq!(ch.inverse().inverse(), ch);
        }
    }
}
