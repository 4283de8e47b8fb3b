//! The `tree` artefact: each hierarchy as text for PR review, in the policy's words: every
//! class by id (as `tc class show` prints it) and name, rates and queue sizes in units, and
//! its match lines as written (variables expanded). `verbose` adds, under each match line,
//! the u32 filters it compiles to.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::plan::{ClassPlan, DevicePlan, FilterPlan, Handle, LeafQueue, Plan, PodRule, Protocol};
use crate::units::{fmt_duration_us, fmt_rate, fmt_size};

/// Renders every device's tree; `verbose` shows the u32 filters too.
pub fn tree(plan: &Plan, verbose: bool) -> String {
    let mut out = Vec::new();
    let _ = write_tree(plan, verbose, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// [`tree`] written to `w` one device at a time; devices are separated by a blank line.
pub fn write_tree(plan: &Plan, verbose: bool, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut out = String::new();
    let mut failed = None;
    // Past 64 KiB the text so far goes to the writer: a device of 50,000 classes is megabytes
    // of tree, never held whole.
    let mut flush = |out: &mut String, at_least: usize| {
        if out.len() >= at_least {
            if failed.is_none() {
                failed = w.write_all(out.as_bytes()).err();
            }
            out.clear();
        }
    };
    for (n, d) in plan.devices.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        device(plan, d, verbose, &mut out, &mut flush);
    }
    flush(&mut out, 0);
    failed.map_or(Ok(()), Err)
}

/// Hands the text so far to the writer when it holds at least this many bytes (0: all).
type Flush<'a> = dyn FnMut(&mut String, usize) + 'a;

fn device(plan: &Plan, d: &DevicePlan, verbose: bool, out: &mut String, flush: &mut Flush<'_>) {
    let on = match &d.ifb {
        Some(ifb) => format!("{} ingress (shaped on {ifb})", d.device),
        None => format!("{} egress", d.device),
    };
    let default = Handle::class(d.root.default.0);
    let name = d
        .classes
        .iter()
        .find(|c| c.classid == default)
        .map_or(String::new(), |c| format!(" ({})", leaf_name(c)));
    out.push_str(&format!(
        "{on}: htb 1: default {default}{name}; ids as `tc class show dev {}` prints them\n",
        d.shaped_device
    ));
    if let Some(root) = d.classes.first() {
        out.push_str(&format!("└─ 1:1 root  rate {}\n", fmt_rate(root.rate)));
    }
    let mut index = Index::new(d, verbose);
    if let Some(p) = plan
        .pod_rules
        .as_ref()
        .filter(|p| d.ifb.is_none() && p.device == d.device)
    {
        for r in &p.rules {
            index.pod_rules.entry(r.classid).or_default().push(r);
        }
    }
    index.walk(Handle::ROOT_CLASS, &mut String::from("   "), out, flush);
}

/// The last part of a class path: `pods/web` → `web`.
fn leaf_name(c: &ClassPlan) -> &str {
    c.name.rsplit('/').next().unwrap_or(&c.name)
}

/// A leaf queue with sizes, rates and times in units.
fn leaf_words(q: &LeafQueue) -> String {
    let packets = |l: &Option<u32>| l.map_or(String::new(), |n| format!(" limit {n} packets"));
    match q {
        LeafQueue::Pfifo { limit } | LeafQueue::FqCodel { limit } | LeafQueue::Sfq { limit } => {
            format!("{}{}", q.kind(), packets(limit))
        }
        LeafQueue::Bfifo { limit } => format!(
            "bfifo{}",
            limit.map_or(String::new(), |b| format!(" limit {}", fmt_size(b)))
        ),
        LeafQueue::Tbf(t) => {
            let mut s = format!("tbf rate {} burst {}", fmt_rate(t.rate), fmt_size(t.burst));
            if let Some(l) = t.limit {
                s.push_str(&format!(" limit {}", fmt_size(l)));
            }
            if let Some(l) = t.latency_us {
                s.push_str(&format!(" latency {}", fmt_duration_us(l)));
            }
            if let Some((rate, mtu)) = t.peak {
                s.push_str(&format!(
                    " peakrate {} mtu {}",
                    fmt_rate(rate),
                    fmt_size(u64::from(mtu))
                ));
            }
            s
        }
    }
}

/// Children and filters of each class, looked up once (large trees stay linear).
struct Index<'a> {
    device: &'a DevicePlan,
    children: BTreeMap<Handle, Vec<&'a ClassPlan>>,
    filters: BTreeMap<Handle, Vec<&'a FilterPlan>>,
    verbose: bool,
    /// Egress pod rules (nftables) by the class they select.
    pod_rules: BTreeMap<Handle, Vec<&'a PodRule>>,
}

impl<'a> Index<'a> {
    fn new(d: &'a DevicePlan, verbose: bool) -> Self {
        let mut children: BTreeMap<Handle, Vec<&ClassPlan>> = BTreeMap::new();
        for c in d.classes.iter().skip(1) {
            children.entry(c.parent).or_default().push(c);
        }
        let mut filters: BTreeMap<Handle, Vec<&FilterPlan>> = BTreeMap::new();
        for f in &d.filters {
            if let Some(class) = f.class() {
                filters.entry(class).or_default().push(f);
            }
        }
        Index {
            device: d,
            children,
            filters,
            verbose,
            pod_rules: BTreeMap::new(),
        }
    }

    fn walk(&self, parent: Handle, indent: &mut String, out: &mut String, flush: &mut Flush<'_>) {
        let Some(classes) = self.children.get(&parent) else {
            return;
        };
        for (n, c) in classes.iter().enumerate() {
            let last = n + 1 == classes.len();
            let (branch, more) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let start = out.len();
            let _ = write!(
                out,
                "{indent}{branch}{} {}  rate {}  ceil {}  prio {}",
                c.classid,
                leaf_name(c),
                fmt_rate(c.rate),
                fmt_rate(c.ceil),
                c.prio
            );
            if c.is_default || c.classid == Handle::class(self.device.root.default.0) {
                out.push_str("  [default]");
            }
            if let Some(leaf) = &c.leaf {
                let _ = write!(out, "  {}", leaf_words(&leaf.queue));
            }
            let line = out[start..].trim_end().len();
            out.truncate(start + line);
            out.push('\n');
            let depth = indent.len();
            indent.push_str(more);
            self.matches(c, indent, out);
            flush(out, 1 << 16);
            self.walk(c.classid, indent, out, flush);
            indent.truncate(depth);
        }
    }

    /// The class's match lines; with `verbose`, each followed by its u32 filters, and the
    /// catch-all filter of a default child last.
    fn matches(&self, c: &ClassPlan, indent: &str, out: &mut String) {
        let filters = self.filters.get(&c.classid).map_or(&[][..], Vec::as_slice);
        let keys = |f: &FilterPlan| {
            let k: Vec<String> = f.keys.iter().map(ToString::to_string).collect();
            k.join(" && ")
        };
        for (words, line) in &c.matches {
            let _ = writeln!(out, "{indent}   ◂ {words}");
            if self.verbose {
                let rules = self
                    .pod_rules
                    .get(&c.classid)
                    .map_or(&[][..], Vec::as_slice);
                for r in rules.iter().filter(|r| r.line == *line) {
                    let text = super::nft::rule(r);
                    let cond = text.split(" meta priority set").next().unwrap_or(&text);
                    out.push_str(&format!("{indent}       nft {}: {cond}\n", r.hook.as_str()));
                }
                for f in filters
                    .iter()
                    .filter(|f| f.line == *line && f.protocol != Protocol::All)
                {
                    out.push_str(&format!("{indent}       u32 {}\n", keys(f)));
                }
            }
        }
        if self.verbose {
            for f in filters.iter().filter(|f| f.protocol == Protocol::All) {
                out.push_str(&format!(
                    "{indent}       u32 anything else (catch-all to the default, prio {})\n",
                    f.prio
                ));
            }
        }
    }
}
