//! Routes, read only: which devices carry a default route (apply warns before shaping
//! them without a safety net).

use super::nla::{self, DecodeError, MsgWriter, NLM_F_DUMP, NLM_F_REQUEST};

const RTM_GETROUTE: u16 = 26;
const RTA_OIF: u16 = 4;
const RTA_MULTIPATH: u16 = 9;
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// A dump of the routes of one address family.
pub fn dump_request(family: u8) -> MsgWriter {
    let mut w = MsgWriter::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut rtm = [0u8; 12];
    rtm[0] = family;
    w.raw(&rtm);
    w
}

/// The output devices (ifindexes) of one dumped route if it is a default route
/// (destination length 0), every next hop of a multipath route included.
pub fn default_route_oifs(payload: &[u8]) -> Result<Vec<i32>, DecodeError> {
    if payload.len() < 12 {
        return Err(DecodeError::Short {
            what: "a route message",
            len: payload.len(),
            header: "struct rtmsg",
        });
    }
    if payload[1] != 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for a in nla::attrs(&payload[12..])? {
        match a.kind {
            RTA_OIF => out.push(nla::i32_at(a.payload, 0)?),
            RTA_MULTIPATH => {
                // struct rtnexthop: len (u16), flags, hops, ifindex (i32), then attributes.
                let mut rest = a.payload;
                while rest.len() >= 8 {
                    let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
                    if len < 8 || len > rest.len() {
                        return Err(DecodeError::NextHop {
                            len,
                            left: rest.len(),
                        });
                    }
                    out.push(nla::i32_at(rest, 4)?);
                    rest = &rest[nla::align4(len).min(rest.len())..];
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(4 + payload.len()).unwrap().to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(nla::align4(v.len()), 0);
        v
    }

    fn route(dst_len: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![AF_INET, dst_len, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        for a in attrs {
            m.extend_from_slice(a);
        }
        m
    }

    fn nexthop(ifindex: i32) -> Vec<u8> {
        let mut v = 8u16.to_ne_bytes().to_vec();
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&ifindex.to_ne_bytes());
        v
    }

    #[test]
    fn default_routes_give_their_devices_others_none() {
        let oif = attr(RTA_OIF, &3i32.to_ne_bytes());
        assert_eq!(
            default_route_oifs(&route(0, std::slice::from_ref(&oif))).unwrap(),
            [3]
        );
        assert!(default_route_oifs(&route(24, &[oif])).unwrap().is_empty());
        let mp = attr(RTA_MULTIPATH, &[nexthop(2), nexthop(5)].concat());
        assert_eq!(default_route_oifs(&route(0, &[mp])).unwrap(), [2, 5]);
        let bad = attr(RTA_MULTIPATH, &[4, 0, 0, 0, 0, 0, 0, 0]);
        assert!(default_route_oifs(&route(0, &[bad])).is_err());
        assert!(default_route_oifs(&[2, 0, 0]).is_err());
    }
}
