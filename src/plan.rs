//! The plan: what the kernel must hold, per device — the IR every backend renders. No spans;
//! source lines are kept only so generated scripts can point back at the policy.
//!
//! Schema version 1 (`netqos-plan/1`): the JSON form of these types, documented field by
//! field in ARCHITECTURE.md; a breaking change bumps the version.

use serde::Serialize;

pub const SCHEMA: &str = "netqos-plan/1";

/// Everything netqos installs on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub devices: Vec<DevicePlan>,
    /// The nftables rules that classify egress pod traffic at its source (`match pods`,
    /// `pod src|dst` on an egress interface); `None` when the policy has none.
    pub pod_rules: Option<PodRules>,
}

/// netqos's nftables table (`table inet netqos`): rules that set a pod packet's
/// `skb->priority` to its HTB class id where the pod's own packet is forwarded (or, for
/// `pod dst`, sent by the host), before VXLAN encapsulation or masquerade. HTB takes a
/// packet whose priority names one of its classes straight to that class (a leaf) or to
/// that class's filters (an inner class), before any filter on the outer header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodRules {
    /// The table's name (family `inet`); netqos owns the whole table.
    pub table: String,
    /// The egress device whose class ids the priorities name.
    pub device: String,
    /// In evaluation order: the first rule that fits sets the class.
    pub rules: Vec<PodRule>,
    /// Other shaped egress devices: there netqos's priorities are cleared, so pod traffic
    /// leaving by them is classified by their own filters.
    pub clear_on: Vec<String>,
}

/// Where a pod rule runs: `forward` (packets pods send) or `output` (packets the host sends
/// to pods).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Forward,
    Output,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Output => "output",
        }
    }
}

/// One nftables rule: every non-empty field must hold (OR within a field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodRule {
    pub hook: Hook,
    /// `ip` or `ip6`.
    pub family: &'static str,
    /// The pod packet's source prefixes (empty: any).
    #[serde(serialize_with = "texts")]
    pub saddr: Vec<crate::model::Cidr>,
    #[serde(serialize_with = "texts")]
    pub daddr: Vec<crate::model::Cidr>,
    /// Transport protocols (empty: any).
    pub protos: Vec<crate::model::Proto>,
    #[serde(serialize_with = "texts")]
    pub sport: Vec<crate::model::PortRange>,
    #[serde(serialize_with = "texts")]
    pub dport: Vec<crate::model::PortRange>,
    /// The class id the priority is set to, `1:minor`.
    pub classid: String,
    pub line: usize,
}

fn texts<T: std::fmt::Display, S: serde::Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// One HTB tree, on the device itself (egress) or on its IFB (ingress).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    /// The policy's interface.
    pub device: String,
    pub direction: crate::model::Direction,
    /// Where the HTB tree lives: `device` for egress, the IFB for ingress.
    pub shaped_device: String,
    /// For ingress: the IFB device and the redirect from `device`'s ingress qdisc.
    pub ifb: Option<String>,
    pub root: Root,
    /// Parents before children.
    pub classes: Vec<ClassPlan>,
    /// In evaluation order per parent.
    pub filters: Vec<FilterPlan>,
    pub line: usize,
}

/// The HTB qdisc at the device root, always handle `1:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Root {
    pub handle: String,
    /// Minor of the default leaf, hex as tc reads it.
    pub default: String,
    pub r2q: Option<u32>,
    pub direct_qlen: u32,
}

/// An HTB class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassPlan {
    /// `path` of the class in the policy, `""` for the root class 1:1.
    pub name: String,
    pub classid: String,
    pub parent: String,
    /// bit/s.
    pub rate: u64,
    pub ceil: u64,
    /// bytes.
    pub burst: u64,
    pub cburst: u64,
    pub quantum: Option<u32>,
    pub prio: u8,
    pub leaf: Option<LeafPlan>,
    pub line: usize,
}

/// The qdisc of a leaf class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeafPlan {
    pub handle: String,
    /// `pfifo`, `bfifo`, `fq_codel`, `sfq` or `tbf`.
    pub kind: String,
    /// tc arguments after the kind, already validated (`limit 64000`).
    pub args: Vec<String>,
}

/// A u32 filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterPlan {
    /// The class (or `1:` for the root) whose filter list holds it.
    pub parent: String,
    /// `ip`, `ipv6` or `all`.
    pub protocol: String,
    pub prio: u16,
    /// tc `match` selectors, e.g. `ip dst 10.0.0.10/32`.
    pub keys: Vec<String>,
    pub target: String,
    pub line: usize,
}
