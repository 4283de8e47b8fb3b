//! The kernel side of the plugin: finds the tbf qdiscs `bandwidth` made for one sandbox (on
//! the host veth, the peer of the pod's `CNI_IFNAME`, for traffic to the pod; on the IFB
//! `bwp` + sha512(network name + container id)[:12] for traffic from it), sets their bucket
//! in place over netlink (the crate's codec, `apply::netlink`) and reads them back.

use std::fs::File;

use sha2::{Digest, Sha512};

use super::protocol::{CniError, Config, code, host_interfaces};
use crate::apply::model::{H_ROOT, Qdisc, QdiscKind};
use crate::apply::netlink::nla::{self, MsgWriter, NLM_F_DUMP, NLM_F_REQUEST};
use crate::apply::netlink::tc::{self, Mode, RTM_GETQDISC};
use crate::apply::netlink::{Netlink, NlError};
use crate::units;

/// Kernel packet-scheduler ticks per second (64 ns each).
const TICKS_PER_SEC: u128 = 15_625_000;

const RTM_GETLINK: u16 = 18;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;

/// A device whose root tbf netqos sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// "to the pod" (host veth) or "from the pod" (IFB).
    pub direction: &'static str,
    pub dev: String,
    pub ifindex: i32,
    pub mtu: u32,
}

/// A device as the link dump shows it.
#[derive(Debug, Clone)]
struct LinkInfo {
    index: i32,
    name: String,
    mtu: u32,
    /// `IFLA_LINK`: a veth's peer ifindex (in the peer's namespace).
    peer: Option<i32>,
}

fn nl_err(what: &str, e: &NlError) -> CniError {
    CniError::new(code::IO, format!("netlink: {what}"), e.to_string())
}

/// The name `bandwidth` gives the IFB of a sandbox (`getIfbDeviceName`).
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("bwp{}", &hex[..12])
}

fn links(nl: &mut Netlink) -> Result<Vec<LinkInfo>, NlError> {
    let mut w = MsgWriter::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
    w.raw(&[0u8; 16]);
    let mut out = Vec::new();
    for payload in nl.dump(&w)? {
        if payload.len() < 16 {
            continue;
        }
        let index = nla::i32_at(&payload, 4)?;
        let mut l = LinkInfo {
            index,
            name: String::new(),
            mtu: 0,
            peer: None,
        };
        for a in nla::attrs(&payload[16..])? {
            match a.kind {
                IFLA_IFNAME => l.name = nla::string(a.payload)?,
                IFLA_MTU => l.mtu = nla::u32_at(a.payload, 0)?,
                IFLA_LINK => l.peer = Some(nla::i32_at(a.payload, 0)?),
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

/// The links of the network namespace at `path`: a thread enters it and asks (a netlink
/// socket belongs to the namespace it was opened in).
fn links_in(path: &str) -> Result<Vec<LinkInfo>, CniError> {
    let file = File::open(path).map_err(|e| {
        CniError::new(
            code::IO,
            format!("failed to open netns {path:?}"),
            e.to_string(),
        )
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| {
                CniError::new(
                    code::IO,
                    format!("failed to enter netns {path:?}"),
                    e.to_string(),
                )
            })?;
            let mut nl = Netlink::open().map_err(|e| nl_err("open", &e))?;
            links(&mut nl).map_err(|e| nl_err("link dump in the pod", &e))
        })
        .join()
        .unwrap_or_else(|_| Err(CniError::new(code::IO, "netns thread failed", "")))
    })
}

/// The devices whose tbf this sandbox's limits put there, the way `bandwidth` finds them.
pub fn targets(
    nl: &mut Netlink,
    config: &Config,
    container_id: &str,
    netns: &str,
    ifname: &str,
) -> Result<Vec<Target>, CniError> {
    let fail = |msg: String| CniError::new(code::NOT_ADJUSTED, msg, "");
    let prev = config.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "must be called as a chained plugin",
            "no prevResult: put netqos right after bandwidth in the conflist",
        )
    })?;
    let host_side = host_interfaces(prev);
    let pod_links = links_in(netns)?;
    let pod_if = pod_links
        .iter()
        .find(|l| l.name == ifname)
        .ok_or_else(|| fail(format!("no interface {ifname} in the pod's netns {netns}")))?;
    // The peer's index is in the host's numbering, and may equal the pod interface's own.
    let peer = pod_if
        .peer
        .ok_or_else(|| fail(format!("pod interface {ifname} has no veth peer")))?;
    let host = links(nl).map_err(|e| nl_err("link dump", &e))?;
    let veth = host
        .iter()
        .find(|l| l.index == peer && host_side.contains(&l.name))
        .ok_or_else(|| {
            fail(format!(
                "the veth peer of {ifname} (ifindex {peer}) is not among prevResult's host interfaces [{}]",
                host_side.join(", ")
            ))
        })?;
    let mut out = Vec::new();
    if config.bandwidth.ingress() {
        out.push(Target {
            direction: "to the pod",
            dev: veth.name.clone(),
            ifindex: veth.index,
            mtu: veth.mtu,
        });
    }
    if config.bandwidth.egress() {
        let name = ifb_name(&config.name, container_id);
        let ifb = host.iter().find(|l| l.name == name).ok_or_else(|| {
            fail(format!(
                "no IFB {name} (the device bandwidth makes for this sandbox's egress limit)"
            ))
        })?;
        out.push(Target {
            direction: "from the pod",
            dev: name,
            ifindex: ifb.index,
            mtu: veth.mtu,
        });
    }
    Ok(out)
}

/// The root tbf of a device, if it has one.
fn root_tbf(nl: &mut Netlink, ifindex: i32) -> Result<Option<Qdisc>, NlError> {
    let w = tc::dump_request(RTM_GETQDISC, ifindex, 0);
    for payload in nl.dump(&w)? {
        let (index, q, _) = tc::decode_qdisc(&payload)?;
        if index == ifindex && q.parent == H_ROOT && matches!(q.kind, QdiscKind::Tbf { .. }) {
            return Ok(Some(q));
        }
    }
    Ok(None)
}

/// Ticks a bucket of `bytes` lasts at `rate` bytes/s (what the kernel stores as `buffer`).
fn ticks(bytes: u64, rate: u64) -> u32 {
    let t = (u128::from(bytes) * TICKS_PER_SEC).div_ceil(u128::from(rate.max(1)));
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// The bucket in bytes of a tbf's `buffer` ticks at `rate` (what `tc` prints as `burst`).
fn bytes_of(buffer: u32, rate: u64) -> u64 {
    u64::try_from(u128::from(buffer) * u128::from(rate) / TICKS_PER_SEC).unwrap_or(u64::MAX)
}

fn rate_of(q: &Qdisc) -> u64 {
    match q.kind {
        QdiscKind::Tbf { rate, .. } => rate,
        _ => 0,
    }
}

fn buffer_of(q: &Qdisc) -> u32 {
    match q.kind {
        QdiscKind::Tbf { buffer, .. } => buffer,
        _ => 0,
    }
}

/// Close enough: the kernel rounds the bucket to its own time units.
fn same_buffer(a: u32, b: u32) -> bool {
    a.abs_diff(b) <= (b / 1000).max(2)
}

/// What one adjustment did, for the runtime's log.
pub struct Adjusted {
    pub target: Target,
    pub rate: u64,
    pub before: u64,
    pub after: u64,
}

impl Adjusted {
    pub fn log_line(&self, container_id: &str, burst: &str) -> String {
        format!(
            "netqos: sandbox {container_id}: tbf on {} ({}), rate {}: bucket {} -> {} (burst {burst})",
            self.target.dev,
            self.target.direction,
            units::fmt_rate(self.rate.saturating_mul(8)),
            units::fmt_size(self.before),
            units::fmt_size(self.after)
        )
    }
}

fn missing(t: &Target) -> CniError {
    CniError::new(
        code::NOT_ADJUSTED,
        format!(
            "no tbf at the root of {} ({}): bandwidth did not shape this sandbox as its runtime config asks",
            t.dev, t.direction
        ),
        "chain netqos right after bandwidth; the pod sandbox is refused rather than run with the runtime's bucket",
    )
}

/// Sets the bucket of the root tbf of `t` and reads it back.
pub fn adjust(nl: &mut Netlink, t: &Target, config: &Config) -> Result<Adjusted, CniError> {
    let q = root_tbf(nl, t.ifindex)
        .map_err(|e| nl_err(&format!("qdisc dump of {}", t.dev), &e))?
        .ok_or_else(|| missing(t))?;
    let QdiscKind::Tbf {
        rate,
        peakrate,
        mtu,
        buffer,
        limit,
        ..
    } = q.kind
    else {
        return Err(missing(t));
    };
    let bytes = config
        .burst
        .bucket_bytes(rate, t.mtu)
        .min(u64::from(u32::MAX));
    let want = ticks(bytes, rate);
    // Only the bucket changes: the queue (`limit`) stays what bandwidth made it.
    let new = Qdisc {
        dev: t.dev.clone(),
        parent: H_ROOT,
        handle: q.handle,
        kind: QdiscKind::Tbf {
            rate,
            peakrate,
            limit,
            buffer: want,
            mtu,
            burst: Some(u32::try_from(bytes).unwrap_or(u32::MAX)),
            pburst: None,
        },
    };
    nl.request(&tc::qdisc_request(t.ifindex, &new, Mode::Change))
        .map_err(|e| {
            CniError::new(
                code::NOT_ADJUSTED,
                format!("the kernel refused the new bucket of the tbf on {}", t.dev),
                e.to_string(),
            )
        })?;
    let back = root_tbf(nl, t.ifindex)
        .map_err(|e| nl_err(&format!("qdisc dump of {}", t.dev), &e))?
        .ok_or_else(|| missing(t))?;
    if !same_buffer(buffer_of(&back), want) {
        return Err(CniError::new(
            code::NOT_ADJUSTED,
            format!(
                "the tbf on {} reads back with a bucket of {} bytes, not {bytes}",
                t.dev,
                bytes_of(buffer_of(&back), rate)
            ),
            "",
        ));
    }
    Ok(Adjusted {
        target: t.clone(),
        rate,
        before: bytes_of(buffer, rate),
        after: bytes,
    })
}

/// CHECK: the root tbf of `t` has the configured bucket.
pub fn check(nl: &mut Netlink, t: &Target, config: &Config) -> Result<(), CniError> {
    let q = root_tbf(nl, t.ifindex)
        .map_err(|e| nl_err(&format!("qdisc dump of {}", t.dev), &e))?
        .ok_or_else(|| {
            CniError::new(code::DRIFT, format!("no tbf at the root of {}", t.dev), "")
        })?;
    let rate = rate_of(&q);
    let bytes = config
        .burst
        .bucket_bytes(rate, t.mtu)
        .min(u64::from(u32::MAX));
    let have = buffer_of(&q);
    if same_buffer(have, ticks(bytes, rate)) {
        Ok(())
    } else {
        Err(CniError::new(
            code::DRIFT,
            format!(
                "the tbf on {} ({}) has a bucket of {} bytes, the policy's is {bytes}",
                t.dev,
                t.direction,
                bytes_of(have, rate)
            ),
            "a hand edit or another agent changed it; recreate the pod to restore its limit",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_name_is_bandwidths() {
        // research/cni.md §1.6: bwp + sha512(network name + container id)[:12], 15 chars.
        let n = ifb_name("cbr0", "abc");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        let hex: String = Sha512::digest(b"cbr0abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&n[3..], &hex[..12]);
    }

    #[test]
    fn buckets_round_trip_through_ticks() {
        // 1 Mbit/s, 2500 bytes: 20 ms = 312500 ticks.
        assert_eq!(ticks(2_500, 125_000), 312_500);
        assert_eq!(bytes_of(312_500, 125_000), 2_500);
        assert!(same_buffer(312_501, 312_500));
        assert!(!same_buffer(2_684_354_435, 312_500));
    }
}
