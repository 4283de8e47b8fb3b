//! Checks of what the kernel does with rates, bursts, quanta and leaf queues: the numbers
//! that pass `tc` silently but shape badly (NQ013–NQ021).

use std::fmt;

use super::build::{ClassDraft, IfaceDraft, Val};
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::LeafQdisc;
use crate::span::Span;
use crate::units::{fmt_duration_us, fmt_rate, fmt_size};

/// 2^32 − 1 bytes/s: above this, rates need the 64-bit netlink attributes.
pub const RATE32_LIMIT_BITS: u64 = (u32::MAX as u64) * 8;
/// The kernel clamps a derived quantum to this range.
const QUANTUM_MIN: u64 = 1000;
const QUANTUM_MAX: u64 = 200_000;

/// Checks one interface's queues.
pub fn check(i: &IfaceDraft, diags: &mut Diagnostics) {
    let max_packet = i.max_packet();
    if let Some(r) = &i.rate {
        rate64(r, &"interface rate", diags);
        let name = &"the interface";
        if let Some(b) = &i.burst {
            burst(name, "burst", b, r.v, max_packet, diags);
        }
        if let Some(b) = &i.cburst {
            burst(name, "cburst", b, r.v, max_packet, diags);
        }
    }
    for c in &i.classes {
        c.walk(&mut |c| class(i, c, max_packet, diags));
    }
}

fn rate64(r: &Val<u64>, what: &dyn fmt::Display, diags: &mut Diagnostics) {
    if r.v >= RATE32_LIMIT_BITS {
        diags.push(
            Diagnostic::new(
                Code::NQ013,
                format!("{what} {} is at or above 34.36 Gbit/s: netqos emits the 64-bit rate attributes", fmt_rate(r.v)),
            )
            .label(r.span, "needs TCA_HTB_RATE64/CEIL64")
            .help("nothing to do on kernels and iproute2 since 3.14; older tools would wrap this rate"),
        );
    }
}

/// `before`, the name, `after`: a class's words in a message.
struct Named<'a>(&'a str, &'a str, &'a str);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, self.2)
    }
}

fn class(i: &IfaceDraft, c: &ClassDraft, max_packet: u64, diags: &mut Diagnostics) {
    // Words for the messages, formatted only when one is written (100,000 classes).
    let name = &Named("class `", &c.name, "`");
    if let Some(r) = &c.rate {
        rate64(r, &Named("class `", &c.name, "` rate"), diags);
    }
    if let (true, Some(ceil)) = (c.ceil_explicit, &c.ceil) {
        rate64(ceil, &Named("class `", &c.name, "` ceil"), diags);
    }
    if let (Some(r2q), None, Some(rate)) = (&i.r2q, &c.quantum, &c.rate) {
        let q = rate.v / 8 / u64::from(r2q.v);
        if !(QUANTUM_MIN..=QUANTUM_MAX).contains(&q) && c.is_leaf() {
            let clamp = if q < QUANTUM_MIN { "small" } else { "big" };
            diags.push(
                Diagnostic::new(
                    Code::NQ014,
                    format!(
                        "quantum of {name} would be {q} bytes (rate {} / r2q {}), outside {QUANTUM_MIN}..{QUANTUM_MAX}",
                        fmt_rate(rate.v),
                        r2q.v
                    ),
                )
                .label(rate.span, format!("gives quantum {q}"))
                .label(r2q.span, "r2q set here")
                .help(format!(
                    "the kernel clamps it and logs \"quantum of class … is {clamp}\": remove `r2q` (netqos then computes quanta) or set `quantum` on this class"
                )),
            );
        }
    }
    if let Some(q) = &c.quantum
        && u64::from(q.v) < max_packet
    {
        diags.push(
            Diagnostic::new(
                Code::NQ015,
                format!(
                    "quantum {} of {name} is smaller than a full packet ({max_packet} B)",
                    q.v
                ),
            )
            .label(q.span, "below one packet")
            .help(format!(
                "set the quantum to at least one full packet: `quantum {max_packet}`"
            )),
        );
    }
    if let Some(r) = &c.rate
        && let Some(b) = &c.burst
    {
        burst(name, "burst", b, r.v, max_packet, diags);
    }
    if let Some(ceil) = &c.ceil
        && let Some(b) = &c.cburst
    {
        burst(name, "cburst", b, ceil.v, max_packet, diags);
    }
    if let Some(q) = &c.qdisc {
        leaf_qdisc(
            name,
            c,
            &q.q,
            q.span,
            q.params.get("burst").copied(),
            max_packet,
            diags,
        );
    }
}

/// Seconds-of-traffic helper: how long `bytes` last at `bits` per second, in µs.
fn duration_us(bytes: u64, bits: u64) -> u64 {
    if bits == 0 {
        return u64::MAX;
    }
    let us = u128::from(bytes) * 8 * 1_000_000 / u128::from(bits);
    u64::try_from(us).unwrap_or(u64::MAX)
}

/// The smallest burst netqos accepts quietly: two packets or 200 µs of traffic.
pub fn min_burst(rate: u64, max_packet: u64) -> u64 {
    (2 * max_packet).max(rate / 8 / 5000)
}

/// What netqos recommends: four packets or 1 ms of traffic.
pub fn good_burst(rate: u64, max_packet: u64) -> u64 {
    (4 * max_packet).max(rate / 8 / 1000)
}

fn burst(
    name: &dyn fmt::Display,
    kind: &str,
    b: &Val<u64>,
    rate: u64,
    max_packet: u64,
    diags: &mut Diagnostics,
) {
    if rate == 0 {
        return;
    }
    let lasts = duration_us(b.v, rate);
    if b.v < min_burst(rate, max_packet) {
        diags.push(
            Diagnostic::new(
                Code::NQ017,
                format!(
                    "{kind} {} of {name} holds only {} of tokens at {}",
                    fmt_size(b.v),
                    fmt_duration_us(lasts),
                    fmt_rate(rate)
                ),
            )
            .label(b.span, "too small for the rate")
            .help(format!(
                "measured on this kernel, small bursts reach only part of the rate (1600 B: 53 % at 500 Mbit/s); use at least {}",
                fmt_size(good_burst(rate, max_packet))
            )),
        );
    } else if lasts > 1_000_000 {
        diags.push(
            Diagnostic::new(
                Code::NQ018,
                format!(
                    "{kind} {} of {name} is {} of traffic at {}",
                    fmt_size(b.v),
                    fmt_duration_us(lasts),
                    fmt_rate(rate)
                ),
            )
            .label(b.span, "longer than a second")
            .help(format!(
                "that much passes at full link speed before shaping starts (cf. kubernetes#90838); use at most {} (one second)",
                fmt_size(rate / 8)
            )),
        );
    }
}

fn leaf_qdisc(
    name: &dyn fmt::Display,
    c: &ClassDraft,
    q: &LeafQdisc,
    span: Span,
    burst_span: Option<Span>,
    max_packet: u64,
    diags: &mut Diagnostics,
) {
    if !c.is_leaf() {
        diags.push(
            Diagnostic::new(
                Code::NQ041,
                format!("{name} has children, so it has no leaf queue"),
            )
            .label(span, "qdisc on an inner class")
            .help("move `qdisc` into the leaf classes"),
        );
        return;
    }
    let Some(rate) = c.rate.as_ref().map(|r| r.v).filter(|r| *r > 0) else {
        return;
    };
    let queue = |bytes: u64, what: String, diags: &mut Diagnostics| {
        let lasts = duration_us(bytes, rate);
        if lasts > 1_000_000 {
            diags.push(
                Diagnostic::new(
                    Code::NQ021,
                    format!(
                        "leaf queue of {name} holds {what} ≈ {} of traffic at its rate {}",
                        fmt_duration_us(lasts),
                        fmt_rate(rate)
                    ),
                )
                .label(span, "queue too long")
                .help(format!(
                    "long queues add seconds of latency: bound it, e.g. `qdisc bfifo limit {}` (100 ms at the rate)",
                    fmt_size_token((rate / 8 / 10).max(2 * max_packet))
                )),
            );
        }
    };
    match q {
        LeafQdisc::Pfifo { limit_packets } => {
            let (n, what) = match limit_packets {
                Some(n) => (u64::from(*n), format!("{n} packets")),
                None => (
                    1000,
                    "1000 packets (txqueuelen, no limit given)".to_string(),
                ),
            };
            queue(n * max_packet, what, diags);
        }
        LeafQdisc::Bfifo {
            limit_bytes: Some(b),
        } => queue(*b, fmt_size(*b), diags),
        LeafQdisc::Tbf {
            rate: trate,
            burst: b,
            ..
        } => {
            let b = Val {
                v: *b,
                span: burst_span.unwrap_or(span),
            };
            tbf_burst(name, &b, *trate, max_packet, diags);
        }
        _ => {}
    }
}

/// NQ016 for a tbf burst below one packet, else the burst checks of any bucket.
fn tbf_burst(
    name: &dyn fmt::Display,
    b: &Val<u64>,
    rate: u64,
    max_packet: u64,
    diags: &mut Diagnostics,
) {
    if b.v < max_packet {
        diags.push(
            Diagnostic::new(
                Code::NQ016,
                format!(
                    "tbf burst {} of {name} is smaller than a full packet ({max_packet} B)",
                    fmt_size(b.v)
                ),
            )
            .label(b.span, "every full-size packet is dropped")
            .help(format!(
                "the kernel only logs \"burst … lower than device mtu\" and drops them: use at least {}",
                fmt_size(good_burst(rate, max_packet))
            )),
        );
    } else {
        burst(name, "tbf burst", b, rate, max_packet, diags);
    }
}

/// A size written the way the language reads it.
fn fmt_size_token(bytes: u64) -> String {
    if bytes.is_multiple_of(1000) {
        format!("{}kb", bytes / 1000)
    } else {
        format!("{bytes}b")
    }
}
