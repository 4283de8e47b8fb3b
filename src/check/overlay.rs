//! Pod traffic on the wire (NQ090–NQ092, NQ094, NQ096): pod-side matches need the pod
//! network and stay inside it, and with a VXLAN overlay the checker says which outer-header
//! matches the overlay's packets would fall into (`research/overlay.md`).

use super::build::{ClassDraft, IfaceDraft, MatchDraft};
use super::pods::Sites;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Cidr, Direction, Match, Overlay, PortRange, Proto};
use crate::span::Span;

/// Every match of an interface with its class name, depth first in source order.
fn matches(i: &IfaceDraft) -> Vec<(&ClassDraft, &MatchDraft)> {
    let mut out = Vec::new();
    fn walk<'a>(c: &'a ClassDraft, out: &mut Vec<(&'a ClassDraft, &'a MatchDraft)>) {
        for m in &c.matches {
            out.push((c, m));
        }
        for k in &c.children {
            walk(k, out);
        }
    }
    for c in &i.classes {
        walk(c, &mut out);
    }
    out
}

/// The outer fields of a match as written in the language, e.g. `dst 10.0.0.2`.
pub fn outer_text(m: &Match) -> String {
    let mut parts = Vec::new();
    let list = |v: &[Cidr]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ports = |v: &[PortRange]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(p) = m.proto {
        parts.push(p.as_str().to_string());
    }
    if let Some(s) = &m.src {
        parts.push(format!("src {}", list(s)));
    }
    if let Some(d) = &m.dst {
        parts.push(format!("dst {}", list(d)));
    }
    if let Some(s) = &m.sport {
        parts.push(format!("sport {}", ports(s)));
    }
    if let Some(d) = &m.dport {
        parts.push(format!("dport {}", ports(d)));
    }
    parts.join(" ")
}

/// Whether an encapsulated packet (outer UDP to `port`, from an ephemeral source port,
/// between two node addresses outside the pod network) can match `m`.
fn takes_overlay(m: &Match, port: u16, cidr: &[Cidr]) -> bool {
    let addr_only = m.src.is_some() || m.dst.is_some();
    let proto_ok = matches!(m.proto, None | Some(Proto::Udp));
    let dport_ok = m
        .dport
        .as_ref()
        .is_none_or(|d| d.iter().any(|r| r.lo <= port && port <= r.hi));
    let node_addr = |l: &Option<Vec<Cidr>>| {
        l.as_ref()
            .is_none_or(|l| l.iter().any(|c| !cidr.iter().any(|p| p.contains(c))))
    };
    m.pod.is_none()
        && addr_only
        && proto_ok
        && dport_ok
        && m.sport.is_none()
        && node_addr(&m.src)
        && node_addr(&m.dst)
}

/// The pod-side checks of the whole policy.
pub fn check(ifaces: &[IfaceDraft], sites: &Sites, diags: &mut Diagnostics) {
    let cidr: Option<&[Cidr]> = sites.cidr.as_ref().map(|c| c.0.as_slice());
    let mut egress_pods: Option<Span> = None;
    for i in ifaces {
        let all = matches(i);
        let first_pod = pod_addresses(&all, cidr, diags);
        if i.direction == Direction::Egress
            && let Some(span) = first_pod
        {
            second_egress(span, &mut egress_pods, diags);
        }
        let Some((Overlay::Vxlan { port }, _)) = sites.overlay else {
            continue;
        };
        let net = cidr.unwrap_or(&[]);
        outer_matches(i, &all, port, net, diags);
    }
}

/// NQ091/NQ092 for the pod matches of one interface (no pod network, or an address
/// outside it); the span of its first pod match.
fn pod_addresses(
    all: &[(&ClassDraft, &MatchDraft)],
    cidr: Option<&[Cidr]>,
    diags: &mut Diagnostics,
) -> Option<Span> {
    let mut first_pod: Option<Span> = None;
    for (_, m) in all {
        let Some(span) = m.pod_span else { continue };
        first_pod.get_or_insert(span);
        match cidr {
            None => diags.push(
                Diagnostic::new(
                    Code::NQ091,
                    "a pod match, but the policy does not say which addresses are pods",
                )
                .label(span, "needs the pod network")
                .help(
                    "declare it in the pods block: `pods { cidr 10.42.0.0/16 }` (K3s and RKE2's default; kubeadm's flannel uses 10.244.0.0/16)",
                ),
            ),
            Some(net) => {
                for (c, at) in &m.pod_addrs {
                    if !net.iter().any(|p| p.contains(c)) {
                        let nets = net.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
                        diags.push(
                            Diagnostic::new(
                                Code::NQ092,
                                format!("pod address {c} is outside the pod network {nets}"),
                            )
                            .label(*at, "not a pod address")
                            .help(format!(
                                "use an address inside {nets}, widen `cidr`, or match a node address with `src`/`dst` in a line of its own"
                            )),
                        );
                    }
                }
            }
        }
    }
    first_pod
}

/// NQ094 when pod matches appear on a second egress interface (`first`: the first one's).
fn second_egress(span: Span, first: &mut Option<Span>, diags: &mut Diagnostics) {
    if let Some(earlier) = *first {
        diags.push(
            Diagnostic::new(
                Code::NQ094,
                "pod matches on a second egress interface: the forwarding rule that classifies pod packets cannot tell which uplink they will leave by",
            )
            .label(span, "second egress interface with pod matches")
            .label(earlier, "first one")
            .help("keep the pod classes on the uplink that carries the overlay; match node addresses and ports on the others"),
        );
    } else {
        *first = Some(span);
    }
}

/// With a VXLAN overlay: NQ090 for a node-address match that takes the overlay's packets,
/// NQ096 for an outer-header `src`/`dst` inside the pod network.
fn outer_matches(
    i: &IfaceDraft,
    all: &[(&ClassDraft, &MatchDraft)],
    port: u16,
    net: &[Cidr],
    diags: &mut Diagnostics,
) {
    let takes_all_pods = all
        .iter()
        .any(|(_, m)| m.m.pod.as_ref().is_some_and(|p| p.any));
    for (c, m) in all {
        if !takes_all_pods && takes_overlay(&m.m, port, net) {
            diags.push(
                Diagnostic::new(
                    Code::NQ090,
                    format!(
                        "every VXLAN packet (UDP {port}) between this node and an address of `match {}` lands in class `{}`: pod traffic of the overlay rides it",
                        outer_text(&m.m),
                        c.name
                    ),
                )
                .label(m.span, "takes the overlay's packets")
                .label(i.head, "no class takes pod traffic (`match pods`)")
                .help(format!(
                    "add the ports to this match (e.g. `match {} tcp dport 6443`) and give pod traffic its own class: `class pods {{ rate … match pods }}`",
                    outer_text(&m.m)
                )),
            );
        }
        let in_pods = |l: &Option<Vec<Cidr>>| {
            l.as_ref()
                .filter(|l| !net.is_empty() && l.iter().all(|c| net.iter().any(|p| p.contains(c))))
                .map(|l| {
                    l.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
        };
        for (dir, list) in [("src", &m.m.src), ("dst", &m.m.dst)] {
            if let Some(addrs) = in_pods(list) {
                diags.push(
                    Diagnostic::new(
                        Code::NQ096,
                        format!(
                            "`{dir} {addrs}` of class `{}` is inside the pod network: on the wire pod packets are inside VXLAN or masqueraded, so this outer-header match never sees them",
                            c.name
                        ),
                    )
                    .label(m.span, "reads the outer header")
                    .help(format!("write `match pod {dir} {addrs}` to classify the pod's own packets")),
                );
            }
        }
    }
}
