//! The `tree` artefact: each hierarchy as text for PR review.

use crate::plan::{ClassPlan, Plan};
use crate::units::{fmt_rate, fmt_size};

/// Renders every device's tree.
pub fn tree(plan: &Plan) -> String {
    let mut out = String::new();
    for d in &plan.devices {
        let on = match &d.ifb {
            Some(ifb) => format!("{} ingress (shaped on {ifb})", d.device),
            None => format!("{} egress", d.device),
        };
        out.push_str(&format!("{on}: htb 1: default 1:{}\n", d.root.default));
        let root = &d.classes[0];
        out.push_str(&format!("└─ 1:1 root  rate {}\n", fmt_rate(root.rate)));
        let children: Vec<&ClassPlan> = d.classes.iter().filter(|c| c.parent == "1:1").collect();
        walk(d, &children, "   ", &mut out);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn walk(d: &crate::plan::DevicePlan, classes: &[&ClassPlan], indent: &str, out: &mut String) {
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
        if d.root.default == c.classid.trim_start_matches("1:") {
            line.push_str("  [default]");
        }
        if let Some(leaf) = &c.leaf {
            line.push_str(&format!("  {} {}", leaf.kind, leaf.args.join(" ")));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        let child_indent = format!("{indent}{more}");
        let mut seen = false;
        for f in d.filters.iter().filter(|f| f.target == c.classid) {
            seen = true;
            let keys = f.keys.join(" && ");
            out.push_str(&format!("{child_indent}   ◂ {} {}\n", f.protocol, keys));
        }
        let _ = seen;
        let kids: Vec<&ClassPlan> = d.classes.iter().filter(|k| k.parent == c.classid).collect();
        if !kids.is_empty() {
            walk(d, &kids, &child_indent, out);
        }
        let _ = fmt_size;
    }
}
