//! The `tree` artefact: each hierarchy as text for PR review.

use std::collections::BTreeMap;

use crate::plan::{ClassPlan, DevicePlan, FilterPlan, Handle, Plan, Protocol};
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
        let index = Index::new(d);
        index.walk(Handle::ROOT_CLASS, "   ", &mut out);
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
    children: BTreeMap<Handle, Vec<&'a ClassPlan>>,
    filters: BTreeMap<Handle, Vec<&'a FilterPlan>>,
}

impl<'a> Index<'a> {
    fn new(d: &'a DevicePlan) -> Self {
        let mut children: BTreeMap<Handle, Vec<&ClassPlan>> = BTreeMap::new();
        for c in d.classes.iter().skip(1) {
            children.entry(c.parent).or_default().push(c);
        }
        let mut filters: BTreeMap<Handle, Vec<&FilterPlan>> = BTreeMap::new();
        for f in &d.filters {
            filters.entry(f.target).or_default().push(f);
        }
        Index {
            device: d,
            children,
            filters,
        }
    }

    fn walk(&self, parent: Handle, indent: &str, out: &mut String) {
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
            let name = c.name.rsplit('/').next().unwrap_or(&c.name);
            let mut line = format!(
                "{indent}{branch}{} {name}  rate {} ceil {} prio {}",
                c.classid,
                fmt_rate(c.rate),
                fmt_rate(c.ceil),
                c.prio
            );
            if c.classid == Handle::class(self.device.root.default.0) {
                line.push_str("  [default]");
            }
            if let Some(leaf) = &c.leaf {
                line.push_str(&format!(
                    "  {} {}",
                    leaf.queue.kind(),
                    leaf.queue.args().join(" ")
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
            let child_indent = format!("{indent}{more}");
            for f in self.filters.get(&c.classid).into_iter().flatten() {
                let what = if f.protocol == Protocol::All {
                    "anything else (catch-all)".to_string()
                } else {
                    let keys: Vec<String> = f.keys.iter().map(ToString::to_string).collect();
                    keys.join(" && ")
                };
                out.push_str(&format!("{child_indent}   ◂ {what}\n"));
            }
            self.walk(c.classid, &child_indent, out);
        }
    }
}
