//! NQ083: a `prio` that gives no precedence. A class whose policy writes `prio N` asks to be
//! served before (or after) its siblings when they borrow, but HTB only orders classes with
//! different priorities: when every sibling ends up with the same `prio` (unset is 0), the
//! line does nothing, and a class meant to go first (a control plane) does not.

use super::build::{ClassDraft, IfaceDraft};
use crate::codes::Code;
use crate::diagnostic::{Diagnostic, Diagnostics};

/// Notes each sibling group with an explicit `prio` and all priorities equal.
pub fn check(iface: &IfaceDraft, diags: &mut Diagnostics) {
    group(&iface.classes, diags);
}

fn group(classes: &[ClassDraft], diags: &mut Diagnostics) {
    let prio = |c: &ClassDraft| c.prio.as_ref().map_or(0, |p| p.v);
    if classes.len() > 1
        && let Some(first) = classes.first()
        && classes.iter().all(|c| prio(c) == prio(first))
        && let Some((c, p)) = classes.iter().find_map(|c| c.prio.as_ref().map(|p| (c, p)))
    {
        let mut others: Vec<String> = classes
            .iter()
            .filter(|o| o.name != c.name)
            .map(|o| format!("`{}`", o.name))
            .collect();
        if others.len() > 4 {
            let more = others.len() - 3;
            others.truncate(3);
            others.push(format!("and {more} more"));
        }
        let unset = classes.iter().any(|o| o.prio.is_none());
        diags.push(
            Diagnostic::new(
                Code::NQ083,
                format!(
                    "`prio {}` gives class `{}` no precedence: {} {} prio {} too{}",
                    p.v,
                    c.name,
                    if others.len() == 1 {
                        "its sibling"
                    } else {
                        "its siblings"
                    },
                    others.join(", ") + if others.len() == 1 { " has" } else { " have" },
                    p.v,
                    if unset { " (unset is 0)" } else { "" }
                ),
            )
            .label(p.span, "the same as every sibling")
            .help(format!(
                "HTB lends spare bandwidth to the lowest prio first: give the other classes a \
                 higher number (e.g. `prio {}`) if `{}` should borrow first, or drop the line",
                p.v.saturating_add(1).min(7),
                c.name
            )),
        );
    }
    for c in classes {
        group(&c.children, diags);
    }
}
