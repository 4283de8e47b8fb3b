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
    /// The class's match lines in the policy's words with their source lines, for review
    /// output (`tree`); not part of `netqos-plan/1`.
    #[serde(skip)]
    pub matches: Vec<(String, usize)>,
    /// Marked `default` in the policy (of the interface or of its parent class).
    #[serde(skip)]
    pub is_default: bool,
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
