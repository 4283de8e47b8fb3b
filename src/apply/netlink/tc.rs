//! Traffic-control requests and dumps: `struct tcmsg`, HTB (root and classes), TBF,
//! pfifo/bfifo, ingress/clsact, u32 filters with a class id or a mirred redirect. Encoded
//! the way `tc` encodes them (golden tests compare bytes), except that no rate tables
//! (RTAB/CTAB) are sent: kernels since 3.11 do not need them.

use super::nla::{self, Attr, DecodeError, MsgWriter};
use super::nla::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use crate::apply::model::{Action, Class, Filter, Key, Qdisc, QdiscKind};

pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_GETQDISC: u16 = 38;
pub const RTM_NEWTCLASS: u16 = 40;
pub const RTM_DELTCLASS: u16 = 41;
pub const RTM_GETTCLASS: u16 = 42;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_DELTFILTER: u16 = 45;
pub const RTM_GETTFILTER: u16 = 46;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_STATS2: u16 = 7;

const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_DIRECT_QLEN: u16 = 5;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TC_HTB_PROTOVER: u32 = 3;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_PRATE64: u16 = 5;
const TCA_TBF_BURST: u16 = 6;
const TCA_TBF_PBURST: u16 = 7;

const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_HASH: u16 = 2;
const TCA_U32_LINK: u16 = 3;
const TCA_U32_DIVISOR: u16 = 4;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;

const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
const TC_ACT_STOLEN: i32 = 4;
const TCA_EGRESS_REDIR: i32 = 1;

const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_RATE_EST: u16 = 2;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_STATS_RATE_EST64: u16 = 5;

/// Ethernet link layer in `tc_ratespec`, as tc sends it.
const LINKLAYER_ETHERNET: u8 = 1;
/// tc's `cell_log` for its default 2047-byte MTU table; kept so requests equal tc's.
const CELL_LOG: u8 = 3;

/// How a create request treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `add`: fail if it exists.
    Add,
    /// `change`: modify the existing one in place.
    Change,
    /// `replace` of a qdisc: graft a new one at the parent.
    Replace,
}

fn mode_flags(m: Mode) -> u16 {
    NLM_F_REQUEST
        | NLM_F_ACK
        | match m {
            Mode::Add => NLM_F_CREATE | NLM_F_EXCL,
            Mode::Change => 0,
            Mode::Replace => NLM_F_CREATE | NLM_F_REPLACE,
        }
}

/// `struct tcmsg`.
pub fn tcmsg(ifindex: i32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    b[8..12].copy_from_slice(&handle.to_ne_bytes());
    b[12..16].copy_from_slice(&parent.to_ne_bytes());
    b[16..20].copy_from_slice(&info.to_ne_bytes());
    b
}

/// `struct tc_ratespec` for `rate` bytes/s (saturated at 32 bits; RATE64 carries more).
fn ratespec(rate: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = CELL_LOG;
    b[1] = LINKLAYER_ETHERNET;
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    b[8..12].copy_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
    b
}

fn needs64(rate: u64) -> bool {
    rate >= 1 << 32
}

/// Create, change or replace a qdisc.
pub fn qdisc_request(ifindex: i32, q: &Qdisc, mode: Mode) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_NEWQDISC, mode_flags(mode));
    w.raw(&tcmsg(ifindex, q.handle, q.parent, 0));
    w.attr_str(TCA_KIND, q.kind.name());
    match &q.kind {
        QdiscKind::Htb {
            default,
            r2q,
            direct_qlen,
        } => {
            let mut glob = [0u8; 20];
            glob[0..4].copy_from_slice(&TC_HTB_PROTOVER.to_ne_bytes());
            glob[4..8].copy_from_slice(&r2q.to_ne_bytes());
            glob[8..12].copy_from_slice(&default.to_ne_bytes());
            w.begin_nest(TCA_OPTIONS)
                .attr(TCA_HTB_INIT, &glob)
                .attr_u32(TCA_HTB_DIRECT_QLEN, *direct_qlen)
                .end_nest();
        }
        QdiscKind::Tbf {
            rate,
            peakrate,
            limit,
            buffer,
            mtu,
            burst,
            pburst,
        } => {
            let mut p = Vec::with_capacity(36);
            p.extend_from_slice(&ratespec(*rate));
            if *peakrate > 0 {
                p.extend_from_slice(&ratespec(*peakrate));
            } else {
                p.extend_from_slice(&[0u8; 12]);
            }
            p.extend_from_slice(&limit.to_ne_bytes());
            p.extend_from_slice(&buffer.to_ne_bytes());
            p.extend_from_slice(&mtu.to_ne_bytes());
            w.begin_nest(TCA_OPTIONS).attr(TCA_TBF_PARMS, &p);
            if let Some(b) = burst {
                w.attr_u32(TCA_TBF_BURST, *b);
            }
            if needs64(*rate) {
                w.attr_u64(TCA_TBF_RATE64, *rate);
            }
            if *peakrate > 0 {
                if needs64(*peakrate) {
                    w.attr_u64(TCA_TBF_PRATE64, *peakrate);
                }
                if let Some(b) = pburst {
                    w.attr_u32(TCA_TBF_PBURST, *b);
                }
            }
            w.end_nest();
        }
        QdiscKind::Pfifo { limit } | QdiscKind::Bfifo { limit } => {
            if let Some(l) = limit {
                w.attr_u32(TCA_OPTIONS, *l);
            }
        }
        QdiscKind::Ingress | QdiscKind::Clsact | QdiscKind::Other { .. } => {}
    }
    w
}

/// Delete the qdisc at `q`'s parent.
pub fn qdisc_delete(ifindex: i32, q: &Qdisc) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&tcmsg(ifindex, q.handle, q.parent, 0));
    w
}

/// Create or change an HTB class.
pub fn class_request(ifindex: i32, c: &Class, mode: Mode) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_NEWTCLASS, mode_flags(mode));
    // Without a quantum the kernel derives one from r2q and warns when it is out of range
    // ("quantum of class … is big"), in the ACK of a success.
    w.may_warn = c.quantum.is_none();
    w.raw(&tcmsg(ifindex, c.classid, c.parent, 0));
    w.attr_str(TCA_KIND, "htb");
    let mut opt = Vec::with_capacity(44);
    opt.extend_from_slice(&ratespec(c.rate));
    opt.extend_from_slice(&ratespec(c.ceil));
    opt.extend_from_slice(&c.buffer.to_ne_bytes());
    opt.extend_from_slice(&c.cbuffer.to_ne_bytes());
    opt.extend_from_slice(&c.quantum.unwrap_or(0).to_ne_bytes());
    opt.extend_from_slice(&0u32.to_ne_bytes());
    opt.extend_from_slice(&c.prio.to_ne_bytes());
    w.begin_nest(TCA_OPTIONS);
    if needs64(c.rate) {
        w.attr_u64(TCA_HTB_RATE64, c.rate);
    }
    if needs64(c.ceil) {
        w.attr_u64(TCA_HTB_CEIL64, c.ceil);
    }
    w.attr(TCA_HTB_PARMS, &opt).end_nest();
    w
}

pub fn class_delete(ifindex: i32, c: &Class) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_DELTCLASS, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&tcmsg(ifindex, c.classid, 0, 0));
    w
}

fn filter_info(f: &Filter) -> u32 {
    (u32::from(f.prio) << 16) | u32::from(f.protocol.to_be())
}

/// Create (`Add`) or re-point (`Change`) a u32 filter; `redirect_ifindex` is the ifindex of
/// a redirect's target.
pub fn filter_request(
    ifindex: i32,
    f: &Filter,
    mode: Mode,
    redirect_ifindex: Option<i32>,
) -> MsgWriter {
    let flags = match mode {
        // tc's `replace`: create, or change the node with this handle.
        Mode::Change | Mode::Replace => NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        Mode::Add => mode_flags(Mode::Add),
    };
    let mut w = MsgWriter::new(RTM_NEWTFILTER, flags);
    w.raw(&tcmsg(ifindex, f.handle, f.parent, filter_info(f)));
    w.attr_str(TCA_KIND, "u32");
    w.begin_nest(TCA_OPTIONS);
    let mut hash = (0, 0);
    match &f.action {
        Action::Flow { classid } => {
            w.attr_u32(TCA_U32_CLASSID, *classid);
        }
        Action::Table { divisor } => {
            // `handle 2: u32 divisor 256`: the table alone, no selector.
            w.attr_u32(TCA_U32_DIVISOR, *divisor).end_nest();
            return w;
        }
        Action::Link { link, hmask, hoff } => {
            w.attr_u32(TCA_U32_LINK, *link);
            hash = (*hmask, *hoff);
        }
        Action::Redirect { .. } => {
            let mut parms = Vec::with_capacity(28);
            parms.extend_from_slice(&0u32.to_ne_bytes()); // index: kernel-chosen
            parms.extend_from_slice(&0u32.to_ne_bytes()); // capab
            parms.extend_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
            parms.extend_from_slice(&0i32.to_ne_bytes()); // refcnt
            parms.extend_from_slice(&0i32.to_ne_bytes()); // bindcnt
            parms.extend_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
            parms.extend_from_slice(&redirect_ifindex.unwrap_or(0).to_ne_bytes());
            w.begin_nest(TCA_U32_ACT)
                .begin_nest(1)
                .attr_str(TCA_ACT_KIND, "mirred")
                .begin_nest(TCA_ACT_OPTIONS | nla::NLA_F_NESTED)
                .attr(TCA_MIRRED_PARMS, &parms)
                .end_nest()
                .end_nest()
                .end_nest();
        }
        Action::Foreign { .. } => {}
    }
    if crate::apply::model::is_netqos_table(f.handle) {
        // `ht 2:7b:`: the bucket of a netqos hash table.
        w.attr_u32(TCA_U32_HASH, f.handle & 0xffff_f000);
    }
    let sel = match f.action {
        Action::Link { .. } => link_selector(&f.keys, hash.0, hash.1),
        _ => selector(&f.keys),
    };
    w.attr(TCA_U32_SEL, &sel).end_nest();
    w
}

/// `struct tc_u32_sel` of a link node: not terminal (a packet no node of the linked
/// bucket takes goes on after it), with the hash key (`hmask`, `hoff`).
pub fn link_selector(keys: &[Key], hmask: u32, hoff: i32) -> Vec<u8> {
    let mut b = selector(keys);
    b[0] = 0;
    b[10..12].copy_from_slice(&i16::try_from(hoff).unwrap_or(0).to_ne_bytes());
    b[12..16].copy_from_slice(&hmask.to_be_bytes());
    b
}

/// `struct tc_u32_sel` with its keys, TERMINAL set (a class id or an action follows).
pub fn selector(keys: &[Key]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[0] = TC_U32_TERMINAL;
    b[2] = u8::try_from(keys.len()).unwrap_or(u8::MAX);
    for k in keys {
        b.extend_from_slice(&k.mask.to_be_bytes());
        b.extend_from_slice(&k.val.to_be_bytes());
        b.extend_from_slice(&k.off.to_ne_bytes());
        b.extend_from_slice(&k.offmask.to_ne_bytes());
    }
    b
}

/// Delete one u32 node (its full handle, hash table included).
pub fn filter_delete(ifindex: i32, f: &Filter) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&tcmsg(ifindex, f.handle, f.parent, filter_info(f)));
    w.attr_str(TCA_KIND, "u32");
    w
}

/// Asks for the root hash table of the u32 list at (`parent`, `prio`): its handle is the
/// hash-table id of that list's nodes. (A dump of one parent lists the nodes of every list
/// of that priority on the whole qdisc, since u32 shares its tables per qdisc.)
pub fn filter_get_root(ifindex: i32, parent: u32, prio: u16) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&tcmsg(ifindex, 0xfff0_0000, parent, u32::from(prio) << 16));
    w.attr_str(TCA_KIND, "u32");
    w
}

/// A dump of the filters of one parent, optionally of one priority only.
pub fn filter_dump(ifindex: i32, parent: u32, prio: Option<u16>) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_GETTFILTER, NLM_F_REQUEST | nla::NLM_F_DUMP);
    w.raw(&tcmsg(
        ifindex,
        0,
        parent,
        prio.map_or(0, |p| u32::from(p) << 16),
    ));
    w
}

/// A dump request of qdiscs (all devices), classes or filters (one device and parent).
pub fn dump_request(kind: u16, ifindex: i32, parent: u32) -> MsgWriter {
    let mut w = MsgWriter::new(kind, NLM_F_REQUEST | nla::NLM_F_DUMP);
    w.raw(&tcmsg(ifindex, 0, parent, 0));
    w
}

/// Counters from `TCA_STATS2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub bytes: u64,
    pub packets: u32,
    /// bytes/s and packets/s from the rate estimator, when the kernel has one.
    pub rate_bps: u64,
    pub rate_pps: u32,
    pub qlen: u32,
    pub backlog: u32,
    pub drops: u32,
    pub requeues: u32,
    pub overlimits: u32,
}

/// The fixed header and attributes of a tc message.
struct Parsed<'a> {
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
    kind: String,
    options: Option<&'a [u8]>,
    stats: Stats,
}

fn parse(payload: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    if payload.len() < 20 {
        return Err(DecodeError::Short {
            what: "a tc message",
            len: payload.len(),
            header: "struct tcmsg",
        });
    }
    let mut p = Parsed {
        ifindex: nla::i32_at(payload, 4)?,
        handle: nla::u32_at(payload, 8)?,
        parent: nla::u32_at(payload, 12)?,
        info: nla::u32_at(payload, 16)?,
        kind: String::new(),
        options: None,
        stats: Stats::default(),
    };
    for a in nla::attrs(&payload[20..])? {
        match a.kind {
            TCA_KIND => p.kind = nla::string(a.payload)?,
            TCA_OPTIONS => p.options = Some(a.payload),
            TCA_STATS2 => p.stats = stats(a.payload)?,
            _ => {}
        }
    }
    Ok(p)
}

fn stats(b: &[u8]) -> Result<Stats, DecodeError> {
    let mut s = Stats::default();
    for a in nla::attrs(b)? {
        match a.kind {
            TCA_STATS_BASIC => {
                s.bytes = nla::u64_at(a.payload, 0)?;
                s.packets = nla::u32_at(a.payload, 8)?;
            }
            TCA_STATS_RATE_EST => {
                s.rate_bps = u64::from(nla::u32_at(a.payload, 0)?);
                s.rate_pps = nla::u32_at(a.payload, 4)?;
            }
            TCA_STATS_RATE_EST64 => {
                s.rate_bps = nla::u64_at(a.payload, 0)?;
                s.rate_pps = u32::try_from(nla::u64_at(a.payload, 8)?).unwrap_or(u32::MAX);
            }
            TCA_STATS_QUEUE => {
                s.qlen = nla::u32_at(a.payload, 0)?;
                s.backlog = nla::u32_at(a.payload, 4)?;
                s.drops = nla::u32_at(a.payload, 8)?;
                s.requeues = nla::u32_at(a.payload, 12)?;
                s.overlimits = nla::u32_at(a.payload, 16)?;
            }
            _ => {}
        }
    }
    Ok(s)
}

fn find<'a>(attrs: &[Attr<'a>], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|a| a.kind == kind).map(|a| a.payload)
}

fn rate_of(spec: &[u8], off: usize, rate64: Option<&[u8]>) -> Result<u64, DecodeError> {
    let r32 = u64::from(nla::u32_at(spec, off + 8)?);
    match rate64 {
        Some(b) => Ok(nla::u64_at(b, 0)?.max(r32)),
        None => Ok(r32),
    }
}

/// A dumped qdisc: (ifindex, qdisc, counters). The device name is filled in by the caller.
pub fn decode_qdisc(payload: &[u8]) -> Result<(i32, Qdisc, Stats), DecodeError> {
    let p = parse(payload)?;
    let what = || format!("{} qdisc {:#x}", p.kind, p.handle);
    let kind = match (p.kind.as_str(), p.options) {
        ("htb", Some(o)) => {
            let a = nla::attrs(o)?;
            let glob = find(&a, TCA_HTB_INIT).ok_or_else(|| DecodeError::Missing {
                object: what(),
                part: "TCA_HTB_INIT",
            })?;
            QdiscKind::Htb {
                r2q: nla::u32_at(glob, 4)?,
                default: nla::u32_at(glob, 8)?,
                direct_qlen: find(&a, TCA_HTB_DIRECT_QLEN)
                    .map(|b| nla::u32_at(b, 0))
                    .transpose()?
                    .unwrap_or(0),
            }
        }
        ("tbf", Some(o)) => {
            let a = nla::attrs(o)?;
            let parms = find(&a, TCA_TBF_PARMS).ok_or_else(|| DecodeError::Missing {
                object: what(),
                part: "TCA_TBF_PARMS",
            })?;
            QdiscKind::Tbf {
                rate: rate_of(parms, 0, find(&a, TCA_TBF_RATE64))?,
                peakrate: rate_of(parms, 12, find(&a, TCA_TBF_PRATE64))?,
                limit: nla::u32_at(parms, 24)?,
                buffer: nla::u32_at(parms, 28)?,
                mtu: nla::u32_at(parms, 32)?,
                burst: None,
                pburst: None,
            }
        }
        ("pfifo", Some(o)) => QdiscKind::Pfifo {
            limit: Some(nla::u32_at(o, 0)?),
        },
        ("bfifo", Some(o)) => QdiscKind::Bfifo {
            limit: Some(nla::u32_at(o, 0)?),
        },
        ("ingress", _) => QdiscKind::Ingress,
        ("clsact", _) => QdiscKind::Clsact,
        (k @ ("htb" | "tbf" | "pfifo" | "bfifo"), None) => {
            return Err(DecodeError::Missing {
                object: format!("{k} qdisc"),
                part: "options",
            });
        }
        (k, _) => QdiscKind::Other {
            name: k.to_string(),
        },
    };
    Ok((
        p.ifindex,
        Qdisc {
            dev: String::new(),
            parent: p.parent,
            handle: p.handle,
            kind,
        },
        p.stats,
    ))
}

/// A dumped class: HTB classes decoded, others `None` (netqos only manages HTB).
pub fn decode_class(payload: &[u8]) -> Result<Option<(i32, Class, Stats)>, DecodeError> {
    let p = parse(payload)?;
    if p.kind != "htb" {
        return Ok(None);
    }
    let o = p.options.ok_or_else(|| DecodeError::Missing {
        object: format!("htb class {:#x}", p.handle),
        part: "options",
    })?;
    let a = nla::attrs(o)?;
    let opt = find(&a, TCA_HTB_PARMS).ok_or_else(|| DecodeError::Missing {
        object: format!("htb class {:#x}", p.handle),
        part: "TCA_HTB_PARMS",
    })?;
    // The kernel reports a class directly under the qdisc with parent TC_H_ROOT; requests
    // name the qdisc (`parent 1:`), as the plan does.
    let parent = if p.parent == crate::apply::model::H_ROOT {
        p.handle & 0xffff_0000
    } else {
        p.parent
    };
    let c = Class {
        dev: String::new(),
        classid: p.handle,
        parent,
        rate: rate_of(opt, 0, find(&a, TCA_HTB_RATE64))?,
        ceil: rate_of(opt, 12, find(&a, TCA_HTB_CEIL64))?,
        buffer: nla::u32_at(opt, 24)?,
        cbuffer: nla::u32_at(opt, 28)?,
        quantum: Some(nla::u32_at(opt, 32)?),
        prio: nla::u32_at(opt, 40)?,
    };
    Ok(Some((p.ifindex, c, p.stats)))
}

/// One entry of a filter dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterEntry {
    /// The head of a (priority, protocol) list of the dumped parent.
    Head { prio: u16, protocol: u16 },
    /// A u32 hash table (its handle, its priority, its buckets); a root table (one
    /// bucket) answers `filter_get_root`.
    Table {
        handle: u32,
        protocol: u16,
        prio: u16,
        divisor: u32,
    },
    /// A filter node; a redirect's target as an ifindex for the caller to name.
    Node {
        ifindex: i32,
        filter: Filter,
        redirect: Option<i32>,
    },
}

/// A native-endian `short` at `at`.
fn i16_at(b: &[u8], at: usize) -> Result<i16, DecodeError> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(i16::from_ne_bytes([x, y])),
        _ => Err(DecodeError::Short {
            what: "a u32 selector",
            len: b.len(),
            header: "struct tc_u32_sel",
        }),
    }
}

/// The keys of a `struct tc_u32_sel`.
fn u32_keys(sel: &[u8]) -> Result<Vec<Key>, DecodeError> {
    let n = usize::from(*sel.get(2).unwrap_or(&0));
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let at = 16 + 16 * i;
        keys.push(Key {
            mask: nla::be32_at(sel, at)?,
            val: nla::be32_at(sel, at + 4)?,
            off: nla::i32_at(sel, at + 8)?,
            offmask: nla::i32_at(sel, at + 12)?,
        });
    }
    Ok(keys)
}

/// Where a u32 node sends its packets: a class, a mirred redirect (the target's ifindex
/// beside it, for the caller to name), or something netqos does not manage.
fn u32_action(a: &[Attr<'_>]) -> Result<(Action, Option<i32>), DecodeError> {
    let foreign = |what: String| Ok((Action::Foreign { what }, None));
    let classid = find(a, TCA_U32_CLASSID)
        .map(|b| nla::u32_at(b, 0))
        .transpose()?;
    let acts = find(a, TCA_U32_ACT).map(nla::attrs).transpose()?;
    match (classid, acts) {
        (Some(c), None) => Ok((Action::Flow { classid: c }, None)),
        (None, Some(acts)) if acts.len() == 1 => {
            let act = nla::attrs(acts[0].payload)?;
            let kind = find(&act, TCA_ACT_KIND)
                .map(nla::string)
                .transpose()?
                .unwrap_or_default();
            let parms = find(&act, TCA_ACT_OPTIONS)
                .map(nla::attrs)
                .transpose()?
                .and_then(|o| find(&o, TCA_MIRRED_PARMS));
            match (kind.as_str(), parms) {
                ("mirred", Some(m))
                    if nla::i32_at(m, 20)? == TCA_EGRESS_REDIR
                        && nla::i32_at(m, 8)? == TC_ACT_STOLEN =>
                {
                    let to = nla::i32_at(m, 24)?;
                    Ok((Action::Redirect { to: String::new() }, Some(to)))
                }
                (k, _) => foreign(format!("u32 with action {k}")),
            }
        }
        (None, None) => foreign("u32 without target".into()),
        _ => foreign("u32 with several actions".into()),
    }
}

/// Decodes one entry of a filter dump (or the answer to `filter_get_root`).
pub fn decode_filter(payload: &[u8]) -> Result<FilterEntry, DecodeError> {
    let p = parse(payload)?;
    let prio = u16::try_from(p.info >> 16).unwrap_or(u16::MAX);
    let protocol = u16::from_be(u16::try_from(p.info & 0xffff).unwrap_or(0));
    let mut f = Filter {
        dev: String::new(),
        parent: p.parent,
        prio,
        protocol,
        handle: p.handle,
        keys: Vec::new(),
        action: Action::Foreign {
            what: format!("{} filter", p.kind),
        },
    };
    if p.handle == 0 {
        return Ok(FilterEntry::Head { prio, protocol });
    }
    let node = |f: Filter, redirect: Option<i32>| FilterEntry::Node {
        ifindex: p.ifindex,
        filter: f,
        redirect,
    };
    if p.kind != "u32" {
        return Ok(node(f, None));
    }
    let Some(o) = p.options else {
        return Err(DecodeError::Missing {
            object: format!("u32 filter {:#x}", p.handle),
            part: "options",
        });
    };
    let a = nla::attrs(o)?;
    if find(&a, TCA_U32_DIVISOR).is_some() || p.handle & 0xfff == 0 {
        return Ok(FilterEntry::Table {
            handle: p.handle,
            protocol,
            prio,
            divisor: find(&a, TCA_U32_DIVISOR)
                .map(|b| nla::u32_at(b, 0))
                .transpose()?
                .unwrap_or(1),
        });
    }
    let sel = find(&a, TCA_U32_SEL);
    if let Some(sel) = sel {
        f.keys = u32_keys(sel)?;
    }
    if let Some(link) = find(&a, TCA_U32_LINK) {
        let link = nla::u32_at(link, 0)?;
        let (hmask, hoff) = match sel {
            Some(s) => (nla::be32_at(s, 12)?, i32::from(i16_at(s, 10)?)),
            None => (0, 0),
        };
        let only_link = find(&a, TCA_U32_CLASSID).is_none() && find(&a, TCA_U32_ACT).is_none();
        f.action = if only_link && sel.is_some_and(|s| s[0] & TC_U32_TERMINAL == 0) {
            Action::Link { link, hmask, hoff }
        } else {
            Action::Foreign {
                what: "u32 link with a target".into(),
            }
        };
        return Ok(node(f, None));
    }
    let (action, redirect) = u32_action(&a)?;
    f.action = action;
    Ok(node(f, redirect))
}
