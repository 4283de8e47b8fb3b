//! The checked model: what a valid policy means, every unit normalised (rates in bit/s,
//! sizes in bytes, percentages resolved, variables substituted, class ids assigned).
//!
//! INVARIANT: a `Model` exists only for a policy without errors, so later stages never
//! produce diagnostics. Lines are kept so generated artefacts can point back at the source.

use std::net::IpAddr;

use serde::Serialize;

pub use crate::syntax::ast::Direction;

/// A whole checked policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub interfaces: Vec<Interface>,
    pub pods: Option<Pods>,
}

/// One shaped link and direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    /// The Linux device name (validated, NQ030).
    pub device: String,
    pub direction: Direction,
    /// For `ingress`: the IFB device that carries the shaped traffic.
    pub ifb: Option<String>,
    /// Root class rate = ceil, bit/s.
    pub rate: u64,
    pub burst: Option<u64>,
    pub cburst: Option<u64>,
    /// Explicit `r2q`; without it quanta are computed per class.
    pub r2q: Option<u32>,
    /// Bytes of the largest packet: MTU + 14 (Ethernet header).
    pub max_packet: u32,
    /// Minor of the leaf taking unmatched traffic (HTB `default`).
    pub default_minor: u16,
    pub classes: Vec<Class>,
    /// 1-based source line of `interface`.
    pub line: usize,
}

/// An HTB class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    pub name: String,
    /// `parent/child` names from the interface down.
    pub path: String,
    /// Class id minor (major is always 1; 1:1 is the root class).
    pub minor: u16,
    /// Guaranteed rate, bit/s.
    pub rate: u64,
    /// Borrowing limit, bit/s.
    pub ceil: u64,
    pub prio: u8,
    pub burst: Option<u64>,
    pub cburst: Option<u64>,
    pub quantum: Option<u32>,
    pub qdisc: Option<LeafQdisc>,
    /// Takes the traffic none of its siblings' rules select.
    pub is_default: bool,
    /// OR-ed match lines.
    pub matches: Vec<Match>,
    pub children: Vec<Class>,
    pub line: usize,
}

impl Class {
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }
}

/// The queue of a leaf class.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeafQdisc {
    Pfifo {
        limit_packets: Option<u32>,
    },
    Bfifo {
        limit_bytes: Option<u64>,
    },
    FqCodel {
        limit_packets: Option<u32>,
    },
    Sfq {
        limit_packets: Option<u32>,
    },
    Tbf {
        rate: u64,
        burst: u64,
        limit_bytes: Option<u64>,
        latency_us: Option<u64>,
        peakrate: Option<u64>,
    },
}

/// Transport protocol of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }

    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        if self.is_v4() != other.is_v4() || self.prefix > other.prefix {
            return false;
        }
        mask_bits(other.addr, self.prefix) == mask_bits(self.addr, self.prefix)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other) || other.contains(self)
    }
}

/// The address as a 128-bit number with only the first `prefix` bits kept.
pub fn mask_bits(addr: IpAddr, prefix: u8) -> u128 {
    let (value, width) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128u32),
    };
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    let keep = u128::MAX << (128 - prefix) >> (128 - width);
    value & keep
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.is_v4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, other: &PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// One match line: every present field must hold (AND); an absent field matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Match {
    pub proto: Option<Proto>,
    pub src: Option<Vec<Cidr>>,
    pub dst: Option<Vec<Cidr>>,
    pub sport: Option<Vec<PortRange>>,
    pub dport: Option<Vec<PortRange>>,
    pub line: usize,
}

/// The `pods` block.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Pods {
    /// The CNI, when the policy names one (needed for conflist artefacts).
    pub cni: Option<Cni>,
    pub limits: Vec<PodLimit>,
    /// `burst`: the bucket the netqos CNI plugin gives every pod limit.
    pub burst: Option<crate::cni::burst::PodBurst>,
}

/// Which CNI the node runs, which decides where its conflist lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "flavour", content = "path", rename_all = "kebab-case")]
pub enum Cni {
    Flannel,
    Canal,
    K3s,
    Rke2Flannel,
    Rke2Canal,
    Calico,
    File(String),
}

impl Cni {
    pub const FLAVOURS: &'static [&'static str] = &[
        "flannel",
        "canal",
        "k3s",
        "rke2-flannel",
        "rke2-canal",
        "calico",
        "file",
    ];
}

/// `limit SELECTOR ingress RATE egress RATE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodLimit {
    /// `(key, value)` label pairs; `namespace=NAME` selects a namespace.
    pub selector: Vec<(String, String)>,
    pub ingress: Option<u64>,
    pub egress: Option<u64>,
    pub line: usize,
}
