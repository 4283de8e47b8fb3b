//! The plan: what the kernel must hold, per device — the IR every backend renders. No spans;
//! source lines are kept only so generated scripts can point back at the policy.
//!
//! Schema version 1 (`netqos-plan/1`): the JSON form of these types, documented field by
//! field in ARCHITECTURE.md; a breaking change bumps the version.

use std::fmt;

use serde::Serialize;

use crate::model::Cidr;

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
    pub handle: Handle,
    /// Minor of the default leaf (hex, as tc reads it).
    pub default: Minor,
    pub r2q: Option<u32>,
    pub direct_qlen: u32,
}

/// An HTB class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassPlan {
    /// `path` of the class in the policy, `""` for the root class 1:1.
    pub name: String,
    pub classid: Handle,
    pub parent: Handle,
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

/// The qdisc of a leaf class. Serialized as `{"handle", "kind", "args"}`: the queue as tc
/// arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafPlan {
    pub handle: Handle,
    pub queue: LeafQueue,
}

impl Serialize for LeafPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("LeafPlan", 3)?;
        st.serialize_field("handle", &self.handle)?;
        st.serialize_field("kind", self.queue.kind())?;
        st.serialize_field("args", &self.queue.args())?;
        st.end()
    }
}

/// A leaf queue with its parameters, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafQueue {
    /// `limit` in packets.
    Pfifo {
        limit: Option<u32>,
    },
    /// `limit` in bytes.
    Bfifo {
        limit: Option<u64>,
    },
    /// `limit` in packets.
    FqCodel {
        limit: Option<u32>,
    },
    /// `limit` in packets.
    Sfq {
        limit: Option<u32>,
    },
    Tbf(Tbf),
}

/// A token bucket leaf queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tbf {
    /// bit/s.
    pub rate: u64,
    /// bytes.
    pub burst: u64,
    /// bytes; when absent, `latency_us` sets the queue length.
    pub limit: Option<u64>,
    pub latency_us: Option<u64>,
    /// The peak rate (bit/s) and the size (bytes) of its bucket, one packet.
    pub peak: Option<(u64, u32)>,
}

impl LeafQueue {
    /// The tc qdisc kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LeafQueue::Pfifo { .. } => "pfifo",
            LeafQueue::Bfifo { .. } => "bfifo",
            LeafQueue::FqCodel { .. } => "fq_codel",
            LeafQueue::Sfq { .. } => "sfq",
            LeafQueue::Tbf(_) => "tbf",
        }
    }

    /// The tc arguments after the kind (`limit 64000`).
    pub fn args(&self) -> Vec<String> {
        let limit =
            |l: Option<u64>| l.map_or_else(Vec::new, |l| vec!["limit".into(), l.to_string()]);
        match self {
            LeafQueue::Pfifo { limit: l }
            | LeafQueue::FqCodel { limit: l }
            | LeafQueue::Sfq { limit: l } => limit(l.map(u64::from)),
            LeafQueue::Bfifo { limit: l } => limit(*l),
            LeafQueue::Tbf(t) => t.args(),
        }
    }
}

impl Tbf {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "rate".into(),
            format!("{}bit", self.rate),
            "burst".into(),
            format!("{}b", self.burst),
        ];
        if let Some(l) = self.limit {
            a.extend(["limit".into(), format!("{l}b")]);
        }
        if let Some(t) = self.latency_us {
            a.extend(["latency".into(), format!("{t}us")]);
        }
        if let Some((rate, mtu)) = self.peak {
            a.extend([
                "peakrate".into(),
                format!("{rate}bit"),
                "mtu".into(),
                mtu.to_string(),
            ]);
        }
        a
    }
}

/// A u32 filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterPlan {
    /// The class (or `1:` for the root) whose filter list holds it.
    pub parent: Handle,
    pub protocol: Protocol,
    pub prio: u16,
    /// tc `match` selectors, all of which must hold; each names a different header field.
    pub keys: Vec<Selector>,
    pub target: Handle,
    pub line: usize,
}

/// A tc handle or class id, `major:minor`, shown in hex as tc reads it: `1:`, `1:3c3a`,
/// `3c3a:` (a minor of 0 is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle {
    pub major: u16,
    pub minor: u16,
}

impl Handle {
    /// `1:`, the HTB root qdisc.
    pub const ROOT: Handle = Handle::new(1, 0);
    /// `1:1`, the root class.
    pub const ROOT_CLASS: Handle = Handle::new(1, 1);

    pub const fn new(major: u16, minor: u16) -> Self {
        Handle { major, minor }
    }

    /// The class `1:minor`.
    pub const fn class(minor: u16) -> Self {
        Handle::new(1, minor)
    }

    /// The 32-bit value the kernel uses.
    pub const fn raw(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.minor == 0 {
            write!(f, "{:x}:", self.major)
        } else {
            write!(f, "{:x}:{:x}", self.major, self.minor)
        }
    }
}

/// A class minor on its own (the HTB `default`), in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor(pub u16);

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The protocol a filter is attached for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Ip,
    Ipv6,
    All,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Ip => "ip",
            Protocol::Ipv6 => "ipv6",
            Protocol::All => "all",
        })
    }
}

/// The address family of a selector's header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The word tc's u32 selectors use: `ip` or `ip6`.
    pub fn tc(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// Which end of a packet's flow a selector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    Src,
    Dst,
}

impl End {
    fn tc(self) -> &'static str {
        match self {
            End::Src => "src",
            End::Dst => "dst",
        }
    }

    fn tc_port(self) -> &'static str {
        match self {
            End::Src => "sport",
            End::Dst => "dport",
        }
    }
}

/// One u32 `match` selector, shown as tc reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// `u32 0 0`: every packet.
    Any,
    /// `u8 0x05 0x0f at 0`: an IPv4 header of 20 bytes (no options), so ports are where a
    /// fixed offset reads them.
    Ipv4NoOptions,
    /// `u16 0x0000 0x1fff at 6`: an unfragmented IPv4 packet or a first fragment.
    Ipv4FirstFragment,
    /// `ip protocol 6 0xff`.
    Protocol { family: Family, number: u8 },
    /// `ip dst 10.0.0.0/8`; the family is the address's.
    Addr { end: End, cidr: Cidr },
    /// `ip dport 2379 0xffff`: the ports `p` with `p & mask == value`.
    Port {
        family: Family,
        end: End,
        value: u16,
        mask: u16,
    },
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Any => f.write_str("u32 0 0"),
            Selector::Ipv4NoOptions => f.write_str("u8 0x05 0x0f at 0"),
            Selector::Ipv4FirstFragment => f.write_str("u16 0x0000 0x1fff at 6"),
            Selector::Protocol { family, number } => {
                write!(f, "{} protocol {number} 0xff", family.tc())
            }
            Selector::Addr { end, cidr } => {
                let family = if cidr.is_v4() { Family::V4 } else { Family::V6 };
                write!(
                    f,
                    "{} {} {}/{}",
                    family.tc(),
                    end.tc(),
                    cidr.addr,
                    cidr.prefix
                )
            }
            Selector::Port {
                family,
                end,
                value,
                mask,
            } => write!(f, "{} {} {value} {mask:#06x}", family.tc(), end.tc_port()),
        }
    }
}

/// Serializes as the `Display` text (the `netqos-plan/1` strings).
macro_rules! serialize_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(Handle, Minor, Protocol, Selector);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_tc_reads_them() {
        assert_eq!(Handle::ROOT.to_string(), "1:");
        assert_eq!(Handle::ROOT_CLASS.to_string(), "1:1");
        assert_eq!(Handle::class(0x3c3a).to_string(), "1:3c3a");
        assert_eq!(Handle::new(0x3c3a, 0).to_string(), "3c3a:");
        assert_eq!(Handle::class(0x3c3a).raw(), 0x1_3c3a);
        assert_eq!(Minor(0x57e0).to_string(), "57e0");
        assert_eq!(
            serde_json::to_string(&Handle::class(0xa)).unwrap(),
            "\"1:a\""
        );
    }

    #[test]
    fn selectors_and_leaves_print_as_tc_arguments() {
        let port = Selector::Port {
            family: Family::V6,
            end: End::Dst,
            value: 8472,
            mask: 0xffff,
        };
        assert_eq!(port.to_string(), "ip6 dport 8472 0xffff");
        let cidr = Cidr {
            addr: "10.0.0.10".parse().unwrap(),
            prefix: 32,
        };
        let addr = Selector::Addr {
            end: End::Src,
            cidr,
        };
        assert_eq!(addr.to_string(), "ip src 10.0.0.10/32");
        let tbf = LeafQueue::Tbf(Tbf {
            rate: 8000,
            burst: 1500,
            limit: None,
            latency_us: Some(50_000),
            peak: Some((16000, 1514)),
        });
        assert_eq!(
            tbf.args().join(" "),
            "rate 8000bit burst 1500b latency 50000us peakrate 16000bit mtu 1514"
        );
        let leaf = LeafPlan {
            handle: Handle::new(0xa, 0),
            queue: LeafQueue::Pfifo { limit: Some(50) },
        };
        assert_eq!(
            serde_json::to_string(&leaf).unwrap(),
            r#"{"handle":"a:","kind":"pfifo","args":["limit","50"]}"#
        );
    }
}
