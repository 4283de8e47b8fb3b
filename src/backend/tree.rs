//! The `tree` artefact: each hierarchy as text for PR review, in the policy's words: every
//! class by id (as `tc class show` prints it) and name, rates and queue sizes in units, and
//! its match lines as written (variables expanded). `verbose` adds, under each match line,
//! the u32 filters it compiles to.

use std::collections::BTreeMap;

use crate::plan::{ClassPlan, DevicePlan, FilterPlan, Plan};
use crate::units::{fmt_duration_us, fmt_rate, fmt_size};

/// Renders every device's tree; `verbose` shows the u32 filters too.
pub fn tree(plan: &Plan, verbose: bool) -> String {
    let mut out = String::new();
    for d in &plan.devices {
        let on = match &d.ifb {
            Some(ifb) => format!("{} ingress (shaped on {ifb})", d.device),
            None => format!("{} egress", d.device),
        };
        let default = d
            .classes
            .iter()
            .find(|c| c.classid == format!("1:{}", d.root.default))
            .map_or(String::new(), |c| format!(" ({})", leaf_name(c)));
        out.push_str(&format!(
            "{on}: htb 1: default 1:{}{default}; ids as `tc class show dev {}` prints them\n",
            d.root.default, d.shaped_device
        ));
        if let Some(root) = d.classes.first() {
            out.push_str(&format!("└─ 1:1 root  rate {}\n", fmt_rate(root.rate)));
        }
        let index = Index::new(d, verbose);
        index.walk("1:1", "   ", &mut out);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The last part of a class path: `pods/web` → `web`.
fn leaf_name(c: &ClassPlan) -> &str {
    c.name.rsplit('/').next().unwrap_or(&c.name)
}

/// A leaf queue's tc arguments with sizes, rates and times in units.
fn leaf_words(kind: &str, args: &[String]) -> String {
    let mut out = vec![kind.to_string()];
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let Some(v) = it.next() else {
            out.push(key.clone());
            break;
        };
        let num = |suffix: &str| v.strip_suffix(suffix).and_then(|n| n.parse::<u64>().ok());
        let shown = match (kind, key.as_str()) {
            ("bfifo", "limit") => num("").map(fmt_size),
            ("pfifo" | "fq_codel" | "sfq", "limit") => num("").map(|n| format!("{n} packets")),
            (_, "rate" | "peakrate") => num("bit").map(fmt_rate),
            (_, "burst" | "limit") => num("b").map(fmt_size),
            (_, "mtu") => num("").map(fmt_size),
            (_, "latency") => num("us").map(fmt_duration_us),
            _ => None,
        };
        out.push(format!("{key} {}", shown.unwrap_or_else(|| v.clone())));
    }
    out.join(" ")
}

/// Children and filters of each class, looked up once (large trees stay linear).
struct Index<'a> {
    device: &'a DevicePlan,
    children: BTreeMap<&'a str, Vec<&'a ClassPlan>>,
    filters: BTreeMap<&'a str, Vec<&'a FilterPlan>>,
    verbose: bool,
}

impl<'a> Index<'a> {
    fn new(d: &'a DevicePlan, verbose: bool) -> Self {
        let mut children: BTreeMap<&str, Vec<&ClassPlan>> = BTreeMap::new();
        for c in d.classes.iter().skip(1) {
            children.entry(c.parent.as_str()).or_default().push(c);
        }
        let mut filters: BTreeMap<&str, Vec<&FilterPlan>> = BTreeMap::new();
        for f in &d.filters {
            filters.entry(f.target.as_str()).or_default().push(f);
        }
        Index {
            device: d,
            children,
            filters,
            verbose,
        }
    }

    fn walk(&self, parent: &str, indent: &str, out: &mut String) {
        let Some(classes) = self.children.get(parent) else {
            return;
        };
        for (n, c) in classes.iter().enumerate() {
            let last = n + 1 == classes.len();
            let (branch, more) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let mut line = format!(
                "{indent}{branch}{} {}  rate {}  ceil {}  prio {}",
                c.classid,
                leaf_name(c),
                fmt_rate(c.rate),
                fmt_rate(c.ceil),
                c.prio
            );
            if c.is_default || self.device.root.default == c.classid.trim_start_matches("1:") {
                line.push_str("  [default]");
            }
            if let Some(leaf) = &c.leaf {
                line.push_str(&format!("  {}", leaf_words(&leaf.kind, &leaf.args)));
            }
            out.push_str(line.trim_end());
            out.push('\n');
            let child_indent = format!("{indent}{more}");
            self.matches(c, &child_indent, out);
            self.walk(&c.classid, &child_indent, out);
        }
    }

    /// The class's match lines; with `verbose`, each followed by its u32 filters, and the
    /// catch-all filter of a default child last.
    fn matches(&self, c: &ClassPlan, indent: &str, out: &mut String) {
        let filters = self.filters.get(c.classid.as_str());
        let filters = filters.map_or(&[][..], Vec::as_slice);
        for (words, line) in &c.matches {
            out.push_str(&format!("{indent}   ◂ {words}\n"));
            if self.verbose {
                for f in filters
                    .iter()
                    .filter(|f| f.line == *line && f.protocol != "all")
                {
                    out.push_str(&format!("{indent}       u32 {}\n", f.keys.join(" && ")));
                }
            }
        }
        if self.verbose {
            for f in filters.iter().filter(|f| f.protocol == "all") {
                out.push_str(&format!(
                    "{indent}       u32 anything else (catch-all to the default, prio {})\n",
                    f.prio
                ));
            }
        }
    }
}
