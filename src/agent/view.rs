//! The frame of `netqos top`: per class, as the tree (parents first, children indented
//! under them), the rate measured between two counter samples against the guarantee and
//! the ceiling, drops since the previous frame and the backlog. Pure: the CLI samples the
//! counters and draws the frame.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::agent::counters::ClassStats;
use crate::agent::metrics::ClassInfo;

/// bit/s for people, one decimal: `12.3 Mbit/s`.
pub fn rate(bits: f64) -> String {
    let (div, unit) = match bits {
        b if b >= 1e9 => (1e9, "Gbit/s"),
        b if b >= 1e6 => (1e6, "Mbit/s"),
        b if b >= 1e3 => (1e3, "kbit/s"),
        _ => (1.0, "bit/s"),
    };
    if div == 1.0 {
        format!("{bits:.0} {unit}")
    } else {
        format!("{:.1} {unit}", bits / div)
    }
}

/// The classes in tree order with their depth: each device's root classes, then
/// depth-first, children in plan order.
pub fn tree_order(classes: &[ClassInfo]) -> Vec<(usize, &ClassInfo)> {
    let mut out = Vec::new();
    let mut devices: Vec<&str> = Vec::new();
    for c in classes {
        if !devices.contains(&c.device.as_str()) {
            devices.push(&c.device);
        }
    }
    for dev in devices {
        let mine: Vec<&ClassInfo> = classes.iter().filter(|c| c.device == dev).collect();
        let ids: Vec<&str> = mine.iter().map(|c| c.classid.as_str()).collect();
        fn walk<'a>(
            all: &[&'a ClassInfo],
            parent: Option<&str>,
            ids: &[&str],
            depth: usize,
            out: &mut Vec<(usize, &'a ClassInfo)>,
        ) {
            for c in all {
                let is_child = match parent {
                    Some(p) => c.parent == p,
                    None => !ids.contains(&c.parent.as_str()),
                };
                if is_child {
                    out.push((depth, c));
                    walk(all, Some(&c.classid), ids, depth + 1, out);
                }
            }
        }
        walk(&mine, None, &ids, 0, &mut out);
    }
    out
}

/// How full a class is, for colour: under its guarantee, borrowing, at its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Idle,
    Guaranteed,
    Borrowing,
    AtCeiling,
}

pub fn load(bits: f64, c: &ClassInfo) -> Load {
    if bits < 1.0 {
        Load::Idle
    } else if bits <= c.rate as f64 {
        Load::Guaranteed
    } else if bits < 0.95 * c.ceil as f64 {
        Load::Borrowing
    } else {
        Load::AtCeiling
    }
}

/// One frame: a header line, a column line, one line per class. `colour`: ANSI colours
/// for the load and for drops.
pub fn frame(
    title: &str,
    classes: &[ClassInfo],
    before: &ClassStats,
    now: &ClassStats,
    dt: Duration,
    colour: bool,
) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let mut out = format!("{title}\n");
    let name_w = tree_order(classes)
        .iter()
        .map(|(d, c)| 2 * d + display_name(c).len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<10} {:<7} {:<name_w$} {:<8} {:>13} {:>13} {:>13} {:>5} {:>8} {:>10}\n",
        "IFACE", "DIR", "CLASS", "CLASSID", "RATE", "GUARANTEE", "CEIL", "USE", "DROPS", "BACKLOG"
    ));
    let mut seen_dev = BTreeMap::new();
    for (depth, c) in tree_order(classes) {
        let key = (c.device.clone(), c.handle());
        let (bits, drops, backlog) = match (before.get(&key), now.get(&key)) {
            (Some(b), Some(n)) => (
                n.bytes.saturating_sub(b.bytes) as f64 * 8.0 / secs,
                Some(n.drops.saturating_sub(b.drops)),
                Some(n.backlog),
            ),
            (None, Some(n)) => (0.0, Some(0), Some(n.backlog)),
            _ => (0.0, None, None),
        };
        seen_dev.insert(c.device.clone(), ());
        let name = format!("{:indent$}{}", "", display_name(c), indent = 2 * depth);
        let use_pct = if c.ceil > 0 {
            format!("{:.0}%", 100.0 * bits / c.ceil as f64)
        } else {
            "-".into()
        };
        let rate_text = match drops {
            Some(_) => rate(bits),
            None => "missing".into(),
        };
        let (on, off) = if colour {
            let code = match (drops, load(bits, c)) {
                (None, _) => "\x1b[31m",
                (_, Load::Idle) => "\x1b[2m",
                (_, Load::Guaranteed) => "\x1b[32m",
                (_, Load::Borrowing) => "\x1b[33m",
                (_, Load::AtCeiling) => "\x1b[31m",
            };
            (code, "\x1b[0m")
        } else {
            ("", "")
        };
        let drops_text = match drops {
            Some(d) if d > 0 && colour => format!("\x1b[31m{d:>8}\x1b[0m"),
            Some(d) => format!("{d:>8}"),
            None => format!("{:>8}", "-"),
        };
        out.push_str(&format!(
            "{:<10} {:<7} {:<name_w$} {:<8} {on}{:>13}{off} {:>13} {:>13} {:>5} {} {:>10}\n",
            c.interface,
            c.direction,
            name,
            c.classid,
            rate_text,
            rate(c.rate as f64),
            rate(c.ceil as f64),
            use_pct,
            drops_text,
            backlog.map_or("-".to_string(), |b| format!("{b} B")),
        ));
    }
    out
}

fn display_name(c: &ClassInfo) -> &str {
    if c.class.is_empty() {
        "(root)"
    } else {
        c.class.rsplit('/').next().unwrap_or(&c.class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::netlink::tc::Stats;

    fn class(name: &str, id: &str, parent: &str, rate: u64, ceil: u64) -> ClassInfo {
        ClassInfo {
            interface: "eth0".into(),
            direction: "egress".into(),
            class: name.into(),
            classid: id.into(),
            device: "eth0".into(),
            parent: parent.into(),
            rate,
            ceil,
        }
    }

    #[test]
    fn a_frame_shows_the_tree_with_measured_rates() {
        let classes = vec![
            class("", "1:1", "1:", 1_000_000_000, 1_000_000_000),
            class("pods", "1:20", "1:1", 600_000_000, 1_000_000_000),
            class("bulk", "1:30", "1:1", 100_000_000, 1_000_000_000),
            class("pods/web", "1:21", "1:20", 400_000_000, 600_000_000),
        ];
        let s = |bytes: u64, drops: u32| Stats {
            bytes,
            drops,
            ..Stats::default()
        };
        let before = ClassStats::from([
            (("eth0".into(), 0x10001), s(0, 0)),
            (("eth0".into(), 0x10020), s(0, 0)),
            (("eth0".into(), 0x10021), s(0, 0)),
        ]);
        let now = ClassStats::from([
            (("eth0".into(), 0x10001), s(125_000_000, 0)),
            (("eth0".into(), 0x10020), s(125_000_000, 3)),
            (("eth0".into(), 0x10021), s(125_000_000, 3)),
        ]);
        let f = frame("t", &classes, &before, &now, Duration::from_secs(2), false);
        let lines: Vec<&str> = f.lines().collect();
        assert!(
            lines[2].contains("(root)") && lines[2].contains("500.0 Mbit/s"),
            "{f}"
        );
        assert!(lines[3].contains("  pods"), "{f}");
        assert!(
            lines[4].contains("    web") && lines[4].contains("83%"),
            "{f}"
        );
        assert!(
            lines[5].contains("  bulk") && lines[5].contains("missing"),
            "{f}"
        );
        assert!(!f.contains('\x1b'));
        let coloured = frame("t", &classes, &before, &now, Duration::from_secs(2), true);
        assert!(coloured.contains("\x1b[33m"), "web borrows: yellow");
    }

    #[test]
    fn rates_read_like_tc() {
        assert_eq!(rate(0.0), "0 bit/s");
        assert_eq!(rate(1500.0), "1.5 kbit/s");
        assert_eq!(rate(2.5e9), "2.5 Gbit/s");
    }
}
