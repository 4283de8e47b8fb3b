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
    pub classid: Handle,
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
    /// u32 hash tables (long runs of address rules, `lower::hash`), each created before
    /// the nodes that link to it; absent from the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hash_tables: Vec<HashTablePlan>,
    /// In evaluation order per parent: the nodes of each list's own table, with the nodes
    /// of the hash tables they link to right after the linking node.
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
    #[must_use]
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

/// A u32 filter node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterPlan {
    /// The class (or `1:` for the root) whose filter list holds it.
    pub parent: Handle,
    pub protocol: Protocol,
    pub prio: u16,
    /// The hash-table bucket holding the node (`2:7b:`); absent: the list's own table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ht: Option<Bucket>,
    /// tc `match` selectors, all of which must hold; each names a different header field.
    pub keys: Vec<Selector>,
    /// A class (`"target"`), or a hash table to continue in (`"link"`, `"hashkey"`).
    #[serde(flatten)]
    pub action: FilterAction,
    pub line: usize,
}

impl FilterPlan {
    /// The class a packet matching this node goes to; `None` for a link node.
    #[must_use]
    pub fn class(&self) -> Option<Handle> {
        match self.action {
            FilterAction::Class { target } => Some(target),
            FilterAction::Link { .. } => None,
        }
    }
}

/// What a u32 node does with a packet its keys match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FilterAction {
    /// Classify into this class (`flowid`).
    Class { target: Handle },
    /// Look the packet up in the bucket of hash table `link` that `hashkey` picks; when
    /// no node there classifies it, continue after this node (a link node is not
    /// terminal).
    Link { link: TableId, hashkey: HashKey },
}

/// A u32 hash table netqos creates: `handle 2: u32 divisor 256` in the list
/// (`parent`, `protocol`, `prio`) whose nodes link to it. Its id is unique on the device
/// (u32 shares hash tables across the qdisc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HashTablePlan {
    pub parent: Handle,
    pub protocol: Protocol,
    pub prio: u16,
    pub handle: TableId,
    pub divisor: u16,
    pub line: usize,
}

/// A u32 hash-table id (12 bits, 1..=0x7ff: the kernel numbers lists' own tables from
/// 0x800), shown as tc reads it: `2:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u16);

impl TableId {
    /// The handle the kernel uses (`id << 20`).
    #[must_use]
    pub const fn raw(self) -> u32 {
        (self.0 as u32) << 20
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:", self.0)
    }
}

/// One bucket of a hash table, shown as tc reads it: `2:7b:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    pub table: TableId,
    pub bucket: u8,
}

impl Bucket {
    /// The kernel's hash id of the bucket (`id << 20 | bucket << 12`).
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.table.raw() | ((self.bucket as u32) << 12)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}:", self.table.0, self.bucket)
    }
}

/// The bits of one aligned 32-bit word that pick a bucket: `mask 0x000000ff at 16`
/// (tc's `hashkey`). The kernel shifts the masked word right to its lowest set bit and
/// keeps the bucket bits (divisor - 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashKey {
    pub mask: u32,
    /// A multiple of 4.
    pub at: u16,
}

impl HashKey {
    /// The bucket of a packet whose word at `at` is `word`, for a table of 256 buckets.
    #[must_use]
    pub fn bucket(self, word: u32) -> u8 {
        let shift = self.mask.trailing_zeros().min(31);
        u8::try_from(((word & self.mask) >> shift) & 0xff).unwrap_or(0)
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mask {:#010x} at {}", self.mask, self.at)
    }
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

    #[must_use]
    pub const fn new(major: u16, minor: u16) -> Self {
        Handle { major, minor }
    }

    /// The class `1:minor`.
    #[must_use]
    pub const fn class(minor: u16) -> Self {
        Handle::new(1, minor)
    }

    /// The 32-bit value the kernel uses.
    #[must_use]
    pub const fn raw(self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }
}

impl fmt::Display for Handle {
    /// Written by hand, not through `{:x}`: the backends print hundreds of thousands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 9];
        let mut n = hex(self.major, &mut buf);
        buf[n] = b':';
        n += 1;
        if self.minor != 0 {
            n += hex(self.minor, &mut buf[n..]);
        }
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or("?"))
    }
}

/// Writes `v` in lowercase hex without leading zeros into `out`; the digits written.
fn hex(v: u16, out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let len = (16 - v.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in out.iter_mut().take(len).enumerate() {
        *slot = DIGITS[usize::from((v >> (4 * (len - 1 - i))) & 0xf)];
    }
    len
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
    #[must_use]
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
    /// `u8 0x06 0xff at 59`: a byte at a fixed offset (the inner header behind VXLAN).
    U8 { value: u8, mask: u8, at: u16 },
    /// `u16 0x0a2a 0xffff at 62`: a 16-bit word at an even offset (inner addresses behind
    /// VXLAN are not 4-byte aligned, so each is 16-bit keys).
    U16 { value: u16, mask: u16, at: u16 },
    /// `u32 0x00060000 0x00ff0000 at 8`: an aligned 32-bit word (the keys a hash link node
    /// shares with every rule of its run).
    U32 { value: u32, mask: u32, at: u16 },
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::U8 { value, mask, at } => write!(f, "u8 {value:#04x} {mask:#04x} at {at}"),
            Selector::U16 { value, mask, at } => {
                write!(f, "u16 {value:#06x} {mask:#06x} at {at}")
            }
            Selector::U32 { value, mask, at } => {
                write!(f, "u32 {value:#010x} {mask:#010x} at {at}")
            }
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

serialize_as_text!(Handle, Minor, Protocol, Selector, TableId, Bucket, HashKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_tc_reads_them() {
        assert_eq!(Handle::ROOT.to_string(), "1:");
        assert_eq!(Handle::ROOT_CLASS.to_string(), "1:1");
        assert_eq!(Handle::class(0x3c3a).to_string(), "1:3c3a");
        assert_eq!(Handle::new(0x3c3a, 0).to_string(), "3c3a:");
        assert_eq!(Handle::new(0xffff, 0x10).to_string(), "ffff:10");
        assert_eq!(Handle::new(0, 0xf).to_string(), "0:f");
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
