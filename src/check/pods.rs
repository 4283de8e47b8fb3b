//! The `pods` block: which CNI the node runs and the pod bandwidth limits (NQ038, NQ061,
//! NQ062), and what the node's links and runtimes make of them (NQ065–NQ067).

use super::build::Builder;
use super::suggest;
use super::values;
use crate::cni::burst::{self, BurstError, PodBurst};
use crate::cni::runtime_burst;
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::model::{Cidr, Cni, Overlay, PodLimit, Pods};
use crate::span::Span;
use crate::syntax::ast::{self, Direction, PodsStmtKind};
use crate::units;
use crate::units::{RateSpec, fmt_rate};

/// Kubernetes refuses annotations outside 1 kbit/s ..= 1 Pbit/s.
pub const MIN_POD_RATE: u64 = 1_000;
pub const MAX_POD_RATE: u64 = 1_000_000_000_000_000;

/// Where a pod rate was written, for the checks that need the whole policy.
pub struct RateSite {
    pub bits: u64,
    pub span: Span,
    pub direction: Direction,
    pub selector: String,
}

/// What [`post_check`] and the overlay checks need from a `pods` block.
#[derive(Default)]
pub struct Sites {
    pub rates: Vec<RateSite>,
    pub cni: Option<(Cni, Span)>,
    /// `cidr`, read, with the statement's span.
    pub cidr: Option<(Vec<Cidr>, Span)>,
    /// The overlay in force (explicit or the flavour's), and the `overlay` line if written.
    pub overlay: Option<(Overlay, Option<Span>)>,
    /// The `pods` block's head, when there is one.
    pub head: Option<Span>,
    pub burst: Option<(PodBurst, Span)>,
}

/// Reads one `pods` block.
pub fn read(b: &mut Builder<'_>, p: &ast::Pods, sites: &mut Sites) -> Option<Pods> {
    let mut r = Block::default();
    for stmt in &p.stmts {
        if !r.stmt(b, stmt, sites) {
            r.failed = true;
        }
    }
    let Block {
        cni,
        limits,
        burst,
        cidr,
        overlay,
        failed,
    } = r;
    sites.cni = cni.clone();
    sites.burst = burst;
    sites.cidr = cidr.clone();
    sites.head = Some(p.head);
    let resolved =
        overlay.map_or_else(|| Overlay::default_for(cni.as_ref().map(|c| &c.0)), |o| o.0);
    sites.overlay = Some((resolved, overlay.map(|o| o.1)));
    (!failed).then(|| Pods {
        cni: cni.map(|c| c.0),
        limits,
        cidr: cidr.map(|c| c.0).unwrap_or_default(),
        overlay: resolved,
        burst: burst.map(|x| x.0),
    })
}

/// What the statements of one `pods` block said so far, each with its statement's span.
#[derive(Default)]
struct Block {
    cni: Option<(Cni, Span)>,
    limits: Vec<PodLimit>,
    burst: Option<(PodBurst, Span)>,
    cidr: Option<(Vec<Cidr>, Span)>,
    overlay: Option<(Overlay, Span)>,
    /// A statement had an error (reported).
    failed: bool,
}

impl Block {
    /// Reads one statement; false when it had an error (reported).
    fn stmt(&mut self, b: &mut Builder<'_>, stmt: &ast::PodsStmt, sites: &mut Sites) -> bool {
        match &stmt.kind {
            PodsStmtKind::Cidr(list) => {
                if repeated(b, "cidr", stmt.span, self.cidr.as_ref().map(|c| c.1)) {
                    return false;
                }
                pod_network(b, list)
                    .map(|c| self.cidr = Some((c, stmt.span)))
                    .is_some()
            }
            PodsStmtKind::Overlay(kind, port) => {
                if repeated(b, "overlay", stmt.span, self.overlay.as_ref().map(|o| o.1)) {
                    return false;
                }
                overlay_kind(b, kind, port.as_ref())
                    .map(|o| self.overlay = Some((o, stmt.span)))
                    .is_some()
            }
            PodsStmtKind::Burst(_) if self.burst.is_some() => {
                let first = self.burst.as_ref().map_or(stmt.span, |c| c.1);
                b.diags.push(
                    Diagnostic::new(Code::NQ056, "`burst` is given twice in the pods block")
                        .label(stmt.span, "given again here")
                        .label(first, "first given here")
                        .help("every pod limit gets one bucket: keep one `burst` line"),
                );
                false
            }
            PodsStmtKind::Burst(v) => pod_burst(b, v)
                .map(|x| self.burst = Some((x, stmt.span)))
                .is_some(),
            PodsStmtKind::Cni(_) | PodsStmtKind::CniFile(_) => self.cni_stmt(b, stmt),
            PodsStmtKind::Limit(l) => limit(b, l, stmt.span, sites)
                .map(|l| self.limits.push(l))
                .is_some(),
            PodsStmtKind::Unknown(u) => {
                b.pods_unknown(u);
                false
            }
        }
    }

    /// `cni FLAVOUR` or `cni file "PATH"` (NQ056 when given twice, NQ041, NQ057).
    fn cni_stmt(&mut self, b: &mut Builder<'_>, stmt: &ast::PodsStmt) -> bool {
        match &stmt.kind {
            _ if self.cni.is_some() => {
                let first = self.cni.as_ref().map_or(stmt.span, |c| c.1);
                b.diags.push(
                    Diagnostic::new(Code::NQ056, "`cni` is given twice in the pods block")
                        .label(stmt.span, "given again here")
                        .label(first, "first given here")
                        .help("a node runs one CNI: keep one `cni` line"),
                );
                false
            }
            PodsStmtKind::Cni(word) => match flavour(&word.node) {
                Some(c) => {
                    self.cni = Some((c, stmt.span));
                    true
                }
                None => {
                    b.diags.push(
                        Diagnostic::new(
                            Code::NQ041,
                            format!("unknown CNI flavour `{}`", word.node),
                        )
                        .label(word.span, "not a known CNI")
                        .help(suggest::help_for(&word.node, Cni::FLAVOURS)),
                    );
                    false
                }
            },
            PodsStmtKind::CniFile(s) => match b.env.one(s, "path", b.diags) {
                Some(item) if item.text.starts_with('/') => {
                    self.cni = Some((Cni::File(item.text), stmt.span));
                    true
                }
                Some(item) => {
                    b.diags.push(item.label(
                        Diagnostic::new(Code::NQ057, format!("CNI config path `{}` is not absolute", item.text)),
                        "relative path",
                    )
                    .help("write the full path, e.g. `cni file \"/etc/cni/net.d/10-flannel.conflist\"`"));
                    false
                }
                None => false,
            },
            // `stmt` dispatches only the two `cni` forms here.
            _ => true,
        }
    }
}

/// NQ056 when `key` was already given at `first`; true when it was.
fn repeated(b: &mut Builder<'_>, key: &str, now: Span, first: Option<Span>) -> bool {
    if let Some(first) = first {
        b.diags.push(
            Diagnostic::new(
                Code::NQ056,
                format!("`{key}` is given twice in the pods block"),
            )
            .label(now, "given again here")
            .label(first, "first given here")
            .help(format!(
                "keep one `{key}` line; list several values after one `{key}`"
            )),
        );
        return true;
    }
    false
}

/// `cidr ADDRESSES`: prefixes, sorted, without duplicates.
fn pod_network(b: &mut Builder<'_>, list: &[ast::Value]) -> Option<Vec<Cidr>> {
    let mut out = Vec::new();
    let mut ok = true;
    for v in list {
        for item in b.env.items_of_value(v, b.diags)? {
            match values::cidr(&item, b.diags) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
    }
    out.sort();
    out.dedup();
    ok.then_some(out)
}

/// `overlay vxlan [PORT]` / `overlay none` (NQ095 for anything else).
fn overlay_kind(
    b: &mut Builder<'_>,
    kind: &crate::span::Spanned<String>,
    port: Option<&ast::Scalar>,
) -> Option<Overlay> {
    match (kind.node.as_str(), port) {
        ("none", None) => Some(Overlay::None),
        ("none", Some(p)) => {
            b.diags.push(
                Diagnostic::new(Code::NQ095, "`overlay none` takes no port")
                    .label(p.span(), "a port")
                    .help("write `overlay none` for routed pod traffic, or `overlay vxlan PORT`"),
            );
            None
        }
        ("vxlan", None) => Some(Overlay::Vxlan {
            port: Overlay::FLANNEL_PORT,
        }),
        ("vxlan", Some(p)) => {
            let item = b.env.one(p, "port", b.diags)?;
            let range = values::port_range(&item, b.diags)?;
            if range.lo != range.hi {
                b.diags.push(
                    item.label(
                        Diagnostic::new(
                            Code::NQ095,
                            format!("VXLAN port `{}` is a range", item.text),
                        ),
                        "one UDP port",
                    )
                    .help("flannel and canal use 8472, Calico's VXLAN 4789: write one port"),
                );
                return None;
            }
            Some(Overlay::Vxlan { port: range.lo })
        }
        (other, _) => {
            b.diags.push(
                Diagnostic::new(Code::NQ095, format!("unknown overlay `{other}`"))
                    .label(kind.span, "not an overlay netqos knows")
                    .help(format!(
                        "write `overlay vxlan PORT` (flannel, canal: 8472) or `overlay none` (routed pod traffic); {}",
                        suggest::help_for(other, &["vxlan", "none"])
                    )),
            );
            None
        }
    }
}

/// `burst DURATION|SIZE` (NQ085, NQ086).
fn pod_burst(b: &mut Builder<'_>, v: &ast::Scalar) -> Option<PodBurst> {
    let item = b.env.one(v, "burst", b.diags)?;
    let min = burst::min_bucket(burst::DEFAULT_MTU);
    match PodBurst::parse(&item.text) {
        Ok(PodBurst::Size { bytes }) if bytes < min => {
            b.diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ086,
                        format!(
                            "pod burst {} is less than one {}-byte frame{}",
                            units::fmt_size(bytes),
                            min,
                            item.origin_note()
                        ),
                    ),
                    "below one frame",
                )
                .help(format!(
                    "a tbf whose bucket is smaller than a frame drops every full-size packet: write at least `{min}b`, or a duration such as `20ms` (rate × duration, never below a frame)"
                )),
            );
            None
        }
        Ok(x) => Some(x),
        Err(e) => {
            let why = match e {
                BurstError::Zero => "is zero",
                BurstError::BitUnit => "is a size in bits",
                BurstError::Unreadable => "is neither a duration nor a size",
            };
            b.diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ085,
                        format!("pod burst `{}` {why}{}", item.text, item.origin_note()),
                    ),
                    "expected e.g. `20ms` or `64kib`",
                )
                .help("write a duration (us, ms, s: the bucket is rate × duration) or a size in bytes (b, kb, kib, mb, mib)"),
            );
            None
        }
    }
}

fn flavour(word: &str) -> Option<Cni> {
    Some(match word {
        "flannel" => Cni::Flannel,
        "canal" => Cni::Canal,
        "k3s" => Cni::K3s,
        "rke2-flannel" => Cni::Rke2Flannel,
        "rke2-canal" => Cni::Rke2Canal,
        "calico" => Cni::Calico,
        _ => return None,
    })
}

/// Kubernetes label key: optional DNS-subdomain prefix and `/`, then a 1–63 char name.
fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && valid_value(name) && !name.is_empty()
}

/// Kubernetes label value: up to 63 chars, alphanumeric at both ends, `-_.` inside.
fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && v.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn selector(
    b: &mut Builder<'_>,
    sel: &crate::span::Spanned<String>,
) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in sel.node.split(',') {
        let pair = part
            .split_once('=')
            .filter(|(k, v)| valid_key(k) && valid_value(v));
        match pair {
            Some((k, v)) if !out.iter().any(|(ok, _): &(String, String)| ok == k) => {
                out.push((k.to_string(), v.to_string()));
            }
            Some((k, _)) => {
                b.diags.push(
                    Diagnostic::new(
                        Code::NQ061,
                        format!("pod selector `{}` names label `{k}` twice", sel.node),
                    )
                    .label(sel.span, "repeated key")
                    .help("a label has one value: keep one `key=value` per key"),
                );
                return None;
            }
            None => {
                let what = match part.split_once('=') {
                    None => format!("`{part}` is not `key=value`"),
                    Some((k, _)) if !valid_key(k) => {
                        format!("`{k}` is not a valid Kubernetes label key")
                    }
                    Some((_, v)) => format!("`{v}` is not a valid Kubernetes label value"),
                };
                let whole = if part == sel.node {
                    String::new()
                } else {
                    format!(" in pod selector `{}`", sel.node)
                };
                b.diags.push(
                    Diagnostic::new(Code::NQ061, format!("{what}{whole}"))
                        .label(sel.span, "invalid selector")
                        .help("write Kubernetes labels as `key=value`, several joined by commas: `app=backup,tier=batch`; `namespace=NAME` selects a namespace"),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn limit(b: &mut Builder<'_>, l: &ast::Limit, span: Span, sites: &mut Sites) -> Option<PodLimit> {
    let selector = selector(b, &l.selector);
    let mut ingress: Option<(u64, Span)> = None;
    let mut egress: Option<(u64, Span)> = None;
    let mut ok = selector.is_some();
    if l.rates.is_empty() {
        b.diags.push(
            Diagnostic::new(
                Code::NQ062,
                format!("`limit {}` limits nothing", l.selector.node),
            )
            .label(span, "no direction")
            .help(format!(
                "add `ingress RATE` and/or `egress RATE`: `limit {} egress 50mbit`",
                l.selector.node
            )),
        );
        return None;
    }
    for (dir, value) in &l.rates {
        let slot = match dir.node {
            Direction::Ingress => &mut ingress,
            Direction::Egress => &mut egress,
        };
        if let Some((_, first)) = slot {
            b.diags.push(
                Diagnostic::new(
                    Code::NQ062,
                    format!("`{}` is given twice in one limit", dir.node.as_str()),
                )
                .label(dir.span, "given again here")
                .label(*first, "first given here")
                .help("give each direction once"),
            );
            ok = false;
            continue;
        }
        let Some((item, bits)) = pod_rate(b, value, dir.node) else {
            ok = false;
            continue;
        };
        *slot = Some((bits, dir.span));
        sites.rates.push(RateSite {
            bits,
            span: item.span,
            direction: dir.node,
            selector: l.selector.node.clone(),
        });
    }
    let selector = selector?;
    ok.then(|| PodLimit {
        selector,
        ingress: ingress.map(|x| x.0),
        egress: egress.map(|x| x.0),
        line: b.lines.line(span.start),
    })
}

/// One direction's rate of a pod limit: absolute (NQ064) and within what Kubernetes
/// accepts (NQ038).
fn pod_rate(
    b: &mut Builder<'_>,
    value: &ast::Scalar,
    dir: Direction,
) -> Option<(crate::check::env::Item, u64)> {
    let item = b.env.one(value, "rate", b.diags)?;
    let bits = match values::rate(&item, b.diags)? {
        RateSpec::Bits(bits) => bits,
        RateSpec::Percent(_) => {
            b.diags.push(
                item.label(
                    Diagnostic::new(
                        Code::NQ064,
                        format!("pod limit `{}` is a percentage", item.text),
                    ),
                    "no parent rate here",
                )
                .help("pod annotations are absolute: write e.g. `50mbit`"),
            );
            return None;
        }
    };
    if !(MIN_POD_RATE..=MAX_POD_RATE).contains(&bits) {
        let (side, bound) = if bits < MIN_POD_RATE {
            ("small (< 1 kbit/s)", "at least 1kbit")
        } else {
            ("large (> 1 Pbit/s)", "at most 1000tbit")
        };
        b.diags.push(item.label(
            Diagnostic::new(
                Code::NQ038,
                format!("pod {} limit {} is unreasonably {side} for Kubernetes", dir.as_str(), fmt_rate(bits)),
            ),
            "outside 1 kbit/s ..= 1 Pbit/s",
        )
        .help(format!(
            "kubelet and containerd refuse such annotations and pod sandbox creation fails: use {bound}"
        )));
        return None;
    }
    Some((item, bits))
}

/// Checks of pod limits against the node: limits above every link (NQ065), the runtime's
/// burst (NQ066), and flavours that need no conflist patch (NQ067).
pub fn post_check(sites: &Sites, fastest_link: Option<u64>, diags: &mut Diagnostics) {
    cni_checks(sites, diags);
    for site in &sites.rates {
        rate_checks(sites, site, fastest_link, diags);
    }
}

/// NQ087 (`burst` on Calico/Canal) and NQ067 (a CNI that needs no conflist patch).
fn cni_checks(sites: &Sites, diags: &mut Diagnostics) {
    if let (Some((Cni::Canal | Cni::Calico, span)), Some((_, burst_span))) =
        (&sites.cni, &sites.burst)
    {
        diags.push(
            Diagnostic::new(
                Code::NQ087,
                "`burst` does nothing on Calico and Canal: Felix shapes the pods, not the bandwidth plugin",
            )
            .label(*burst_span, "no tbf of the bandwidth plugin to adjust")
            .label(*span, "this CNI")
            .help("drop `burst` and set the qos.projectcalico.org/ingressBurst and egressBurst annotations next to the rates (Calico 3.30+)"),
        );
    }
    let chains_netqos = sites.burst.is_some();
    if let Some((cni, span)) = sites.cni.as_ref().filter(|_| !chains_netqos) {
        let msg = match cni {
            Cni::K3s => Some(
                "K3s chains the bandwidth plugin by default (since May 2023): no conflist patch is needed",
            ),
            Cni::Rke2Canal => Some(
                "rke2-canal chains the bandwidth plugin by default: no conflist patch is needed",
            ),
            Cni::Canal | Cni::Calico => Some(
                "Calico 3.30+ shapes pods itself from the same annotations, and earlier Calico manifests chain the plugin: netqos adds no bandwidth entry",
            ),
            _ => None,
        };
        if let Some(msg) = msg {
            diags.push(
                Diagnostic::new(Code::NQ067, msg)
                    .label(*span, "this CNI")
                    .help("nothing to do; pass --conflist FILE to compile to have netqos confirm it on the node's own file"),
            );
        }
    }
}

/// NQ065 (a limit above every link) and NQ066 (the runtime's burst) for one pod rate.
fn rate_checks(sites: &Sites, site: &RateSite, fastest_link: Option<u64>, diags: &mut Diagnostics) {
    let dir = site.direction.as_str();
    if let Some(link) = fastest_link.filter(|&l| site.bits > l) {
        diags.push(
            Diagnostic::new(
                Code::NQ065,
                format!(
                    "pod {dir} limit {} for `{}` is above every link of this node (fastest {})",
                    fmt_rate(site.bits),
                    site.selector,
                    fmt_rate(link)
                ),
            )
            .label(site.span, "never limits")
            .help(format!(
                "use a rate below {}, or drop the limit",
                fmt_rate(link)
            )),
        );
    }
    let rate_bytes = site.bits as f64 / 8.0;
    let mut parts = Vec::new();
    for rt in runtime_burst::RUNTIMES {
        let bytes = runtime_burst::effective_burst_bytes(site.bits, rt.burst_bits);
        let secs = bytes as f64 / rate_bytes;
        if secs > UNSHAPED_SECS {
            parts.push(format!(
                "{} under {} ({:.0} s at this rate)",
                megabytes(bytes),
                rt.name,
                secs
            ));
        }
    }
    // On Calico and Canal there is no bandwidth tbf to adjust (NQ087): the limit does
    // not hold there, so NQ066 stays a warning.
    let calico = matches!(sites.cni, Some((Cni::Canal | Cni::Calico, _)));
    let burst = sites.burst.as_ref().filter(|_| !calico);
    if let (false, Some((burst, burst_span))) = (parts.is_empty(), burst) {
        let bytes = burst.bucket_bytes(site.bits / 8, burst::DEFAULT_MTU);
        diags.push(
            Diagnostic::new(
                Code::NQ066,
                format!(
                    "pod {dir} limit {} for `{}` holds from the first byte: the netqos CNI plugin sets its bucket to {} ({}), not the runtime's {}",
                    fmt_rate(site.bits),
                    site.selector,
                    units::fmt_size(bytes),
                    burst.describe(),
                    parts.join("; ")
                ),
            )
            .severity(Severity::Info)
            .label(site.span, "bucket set by netqos")
            .label(*burst_span, "the pods' burst")
            .help("the conflist artefact chains `netqos` after `bandwidth`; install the netqos binary as `netqos` in the CNI bin dir (the apply script and `netqos apply` refuse the conflist without it)"),
        );
    } else if !parts.is_empty() {
        diags.push(
            Diagnostic::new(
                Code::NQ066,
                format!(
                    "pod {dir} limit {} for `{}` lets the first {} pass unshaped",
                    fmt_rate(site.bits),
                    site.selector,
                    parts.join("; ")
                ),
            )
            .label(site.span, "runtime chooses the burst")
            .help("no runtime lets a pod set its burst: add `burst 20ms` to the pods block (the netqos CNI plugin then sets every pod's bucket); `netqos explain NQ066` for other remedies; `--allow NQ066` once accepted"),
        );
    }
}

/// Above this many seconds of unshaped traffic the runtime's burst is worth a warning.
const UNSHAPED_SECS: f64 = 2.0;

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}
