//! Network devices: dump names, kinds and up state; create an IFB, set it up or down,
//! delete it.

use super::nla::{self, DecodeError, MsgWriter, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use super::nla::{NLM_F_DUMP, NLM_F_REQUEST};
use crate::apply::model::Link;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFF_UP: u32 = 1;

/// `struct ifinfomsg`.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `ip link add name NAME type KIND`.
pub fn add(link: &Link) -> MsgWriter {
    let mut w = MsgWriter::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    );
    w.raw(&ifinfomsg(0, 0, 0))
        .attr_str(IFLA_IFNAME, &link.name)
        .begin_nest(IFLA_LINKINFO)
        .attr(IFLA_INFO_KIND, link.kind.as_bytes())
        .end_nest();
    w
}

/// `ip link set dev INDEX up|down`.
pub fn set_up(index: i32, up: bool) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&ifinfomsg(index, if up { IFF_UP } else { 0 }, IFF_UP));
    w
}

pub fn delete(index: i32) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
    w.raw(&ifinfomsg(index, 0, 0));
    w
}

pub fn dump_request() -> MsgWriter {
    let mut w = MsgWriter::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
    w.raw(&ifinfomsg(0, 0, 0));
    w
}

/// One dumped device: (ifindex, link).
pub fn decode(payload: &[u8]) -> Result<(i32, Link), DecodeError> {
    if payload.len() < 16 {
        return Err(DecodeError::Short {
            what: "a link message",
            len: payload.len(),
            header: "struct ifinfomsg",
        });
    }
    let index = nla::i32_at(payload, 4)?;
    let flags = nla::u32_at(payload, 8)?;
    let mut link = Link {
        name: String::new(),
        kind: String::new(),
        up: flags & IFF_UP != 0,
    };
    for a in nla::attrs(&payload[16..])? {
        match a.kind {
            IFLA_IFNAME => link.name = nla::string(a.payload)?,
            IFLA_LINKINFO => {
                for i in nla::attrs(a.payload)? {
                    if i.kind == IFLA_INFO_KIND {
                        link.kind = nla::string(i.payload)?;
                    }
                }
            }
            _ => {}
        }
    }
    if link.name.is_empty() {
        return Err(DecodeError::NoName { index });
    }
    Ok((index, link))
}
