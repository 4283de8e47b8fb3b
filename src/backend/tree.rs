//! The `tree` artefact: each hierarchy as text for PR review.

use std::collections::BTreeMap;

use crate::plan::{ClassPlan, DevicePlan, FilterPlan, Plan, PodRule};
use crate::units::fmt_rate;

/// Renders every device's tree.
pub fn tree(plan: &Plan) -> String {
    let mut out = String::new();
    for d in &plan.devices {
        let on = match &d.ifb {
            Some(ifb) => format!("{} ingress (shaped on {ifb})", d.device),
            None => format!("{} egress", d.device),
        };
        out.push_str(&format!("{on}: htb 1: default 1:{}\n", d.root.default));
        if let Some(root) = d.classes.first() {
            out.push_str(&format!("└─ 1:1 root  rate {}\n", fmt_rate(root.rate)));
        }
        let mut index = Index::new(d);
        if let Some(p) = plan
            .pod_rules
            .as_ref()
            .filter(|p| d.ifb.is_none() && p.device == d.device)
        {
            for r in &p.rules {
                index
                    .pod_rules
                    .entry(r.classid.as_str())
                    .or_default()
                    .push(r);
            }
        }
        index.walk("1:1", "   ", &mut out);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Children and filters of each class, looked up once (large trees stay linear).
struct Index<'a> {
    device: &'a DevicePlan,
    children: BTreeMap<&'a str, Vec<&'a ClassPlan>>,
    filters: BTreeMap<&'a str, Vec<&'a FilterPlan>>,
    /// Egress pod rules (nftables) by the class they select.
    pod_rules: BTreeMap<&'a str, Vec<&'a PodRule>>,
}

impl<'a> Index<'a> {
    fn new(d: &'a DevicePlan) -> Self {
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
            pod_rules: BTreeMap::new(),
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
            let name = c.name.rsplit('/').next().unwrap_or(&c.name);
            let mut line = format!(
                "{indent}{branch}{} {name}  rate {} ceil {} prio {}",
                c.classid,
                fmt_rate(c.rate),
                fmt_rate(c.ceil),
                c.prio
            );
            if self.device.root.default == c.classid.trim_start_matches("1:") {
                line.push_str("  [default]");
            }
            if let Some(leaf) = &c.leaf {
                line.push_str(&format!("  {} {}", leaf.kind, leaf.args.join(" ")));
            }
            out.push_str(line.trim_end());
            out.push('\n');
            let child_indent = format!("{indent}{more}");
            for r in self.pod_rules.get(c.classid.as_str()).into_iter().flatten() {
                let text = super::nft::rule(r);
                let cond = text.split(" meta priority set").next().unwrap_or(&text);
                out.push_str(&format!(
                    "{child_indent}   ◂ pod packet ({} hook): {cond}\n",
                    r.hook.as_str()
                ));
            }
            for f in self.filters.get(c.classid.as_str()).into_iter().flatten() {
                let what = if f.protocol == "all" {
                    "anything else (catch-all)".to_string()
                } else {
                    f.keys.join(" && ")
                };
                out.push_str(&format!("{child_indent}   ◂ {what}\n"));
            }
            self.walk(&c.classid, &child_indent, out);
        }
    }
}
