//! Link-aware rates: a root rate close to the link's speed moves the queue from HTB into
//! the NIC (NQ100), and a single HTB replacing a multiqueue `mq` root (NQ108). Used by
//! `doctor`, `plan` and `apply`.

use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::model::Model;
use crate::span::Span;
use crate::units::fmt_rate;

use super::node::LinkInfo;

/// The fraction of the link's speed a root rate may reach, in percent: HTB counts neither
/// preamble, inter-frame gap nor FCS (24 bytes a frame, 1.6 % of a full-size frame and
/// more for small ones), so at 100 % the queue builds in the NIC, not in HTB.
pub const MAX_PERCENT: u64 = 95;

/// Reads `/sys/class/net/DEV/speed` (Mbit/s) of the running node; `None` when absent,
/// unknown (`-1`) or unreadable (a device that is down).
pub fn sysfs_speed(dev: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/speed"))
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|s| *s > 0)
        .map(|s| s as u64)
}

/// The span of the 1-based `line` of `src` without its indentation (empty at the end).
fn line_span(src: &str, line: usize) -> Span {
    let mut start = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let body = l.trim_end();
            let indent = body.len() - body.trim_start().len();
            return Span::new(start + indent, start + body.len());
        }
        start += l.len();
    }
    Span::new(src.len(), src.len())
}

/// NQ100 for each interface whose root rate is above [`MAX_PERCENT`] of its link's speed.
/// `speed` gives a device's Mbit/s (None: unknown, nothing is said).
pub fn rate_findings(
    model: &Model,
    src: &str,
    speed: &dyn Fn(&str) -> Option<u64>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for iface in &model.interfaces {
        let Some(mbit) = speed(&iface.device) else {
            continue;
        };
        let link = mbit.saturating_mul(1_000_000);
        if u128::from(iface.rate) * 100 <= u128::from(link) * u128::from(MAX_PERCENT) {
            continue;
        }
        let pct = u128::from(iface.rate) * 100 / u128::from(link.max(1));
        let suggested_mbit = mbit * MAX_PERCENT / 100;
        out.push(
            Diagnostic::new(
                Code::NQ100,
                format!(
                    "root rate {} on {} is {pct} % of its {} link (more than {MAX_PERCENT} %)",
                    fmt_rate(iface.rate),
                    iface.device,
                    fmt_rate(link)
                ),
            )
            .label(
                line_span(src, iface.line),
                format!("the link reports {mbit} Mbit/s"),
            )
            .help(format!(
                "set `rate {suggested_mbit}mbit` or lower: HTB does not count framing, so at \
                 line rate the queue (and the latency the reservations are for) moves into the \
                 NIC (`netqos explain NQ100`)"
            )),
        );
    }
    out
}

/// NQ108 for each device with more than one TX queue whose root is `mq` and that the
/// policy shapes (or, without a policy, any such device).
pub fn mq_findings(
    links: &[LinkInfo],
    roots: &[(String, String)],
    shaped: Option<&[String]>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (dev, kind) in roots {
        if kind != "mq" || shaped.is_some_and(|s| !s.contains(dev)) {
            continue;
        }
        let queues = links
            .iter()
            .find(|l| &l.name == dev)
            .map_or(0, |l| l.tx_queues);
        if queues < 2 {
            continue;
        }
        out.push(
            Diagnostic::new(
                Code::NQ108,
                format!(
                    "{dev} has {queues} TX queues under an `mq` root; a single HTB root replaces \
                     it and puts every queue behind one qdisc lock"
                ),
            )
            .help(
                "below 10 Gbit/s this is usually fine; at 10G and more, shape below the link \
                 rate and measure throughput, or keep `mq` and shape per queue outside netqos",
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(src: &str) -> Model {
        crate::check_source(src, &Default::default())
            .model
            .expect("valid policy")
    }

    const POLICY: &str = "netqos 1\n\ninterface veth0 {\n    rate RATE\n    class a {\n        rate 50%\n        default\n    }\n}\n";

    fn findings(rate: &str, speed: Option<u64>) -> Vec<Diagnostic> {
        let src = POLICY.replace("RATE", rate);
        rate_findings(&model(&src), &src, &|d| {
            (d == "veth0").then_some(speed).flatten()
        })
    }

    #[test]
    fn above_95_percent_of_the_link_warns_and_below_does_not() {
        let d = findings("10gbit", Some(10_000));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::NQ100);
        assert!(d[0].message.contains("100 %"), "{}", d[0].message);
        assert!(
            d[0].help.as_deref().unwrap().contains("rate 9500mbit"),
            "{:?}",
            d[0].help
        );
        assert!(findings("9gbit", Some(10_000)).is_empty());
        assert!(findings("9500mbit", Some(10_000)).is_empty());
        assert_eq!(findings("9501mbit", Some(10_000)).len(), 1);
        assert!(findings("10gbit", None).is_empty());
    }

    #[test]
    fn the_label_is_the_interface_line() {
        let src = POLICY.replace("RATE", "10gbit");
        let d = &findings("10gbit", Some(10_000))[0];
        let s = d.primary_span().unwrap();
        assert_eq!(&src[s.start..s.end], "interface veth0 {");
    }

    #[test]
    fn mq_on_a_multiqueue_device_is_named() {
        let links = vec![
            LinkInfo {
                name: "eth0".into(),
                speed_mbit: Some(10_000),
                tx_queues: 4,
            },
            LinkInfo {
                name: "eth1".into(),
                speed_mbit: None,
                tx_queues: 1,
            },
        ];
        let roots = vec![("eth0".into(), "mq".into()), ("eth1".into(), "mq".into())];
        let d = mq_findings(&links, &roots, None);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.starts_with("eth0 has 4 TX queues"));
        assert!(mq_findings(&links, &roots, Some(&["eth1".to_string()])).is_empty());
    }
}
