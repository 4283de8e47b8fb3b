//! Large policies: a generated 10,000-class policy is valid and checks. (Speed is measured
//! by `benches/check_10k.sh`, not here.)

use netqos::vars::ExternalVars;

/// A policy with `tenants` leaf classes in groups of 100 under one interface, each matching
/// its own /32, plus the control plane and a default.
pub fn big_policy(tenants: usize) -> String {
    let mut s = String::from("netqos 1\n\ninterface eth0 {\n    rate 20gbit\n\n");
    s.push_str("    class control-plane {\n        rate 1gbit\n        prio 0\n        match tcp dport 2379-2380, 6443, 10250\n    }\n");
    let groups = tenants.div_ceil(100);
    for g in 0..groups {
        s.push_str(&format!(
            "    class group{g} {{\n        rate 90mbit\n        prio 1\n        match dst 10.{}.{}.0/24\n",
            g / 256,
            g % 256
        ));
        for t in 0..100.min(tenants - g * 100) {
            s.push_str(&format!(
                "        class t{g}-{t} {{\n            rate 800kbit\n            ceil 100mbit\n            match dst 10.{}.{}.{}\n        }}\n",
                g / 256,
                g % 256,
                t + 1
            ));
        }
        s.push_str(&format!("        class rest{g} {{\n            rate 10kbit\n            default\n        }}\n    }}\n"));
    }
    s.push_str("    class bulk {\n        rate 1gbit\n        prio 1\n        default\n    }\n}\n");
    s
}

#[test]
fn ten_thousand_classes_check_clean() {
    let src = big_policy(10_000);
    let checked = netqos::check_source(&src, &ExternalVars::default());
    let diags = checked.diagnostics.into_sorted();
    assert!(diags.is_empty(), "{:?}", diags.first());
    let model = checked.model.expect("valid");
    let mut count = 0;
    fn walk(c: &netqos::model::Class, n: &mut usize) {
        *n += 1;
        c.children.iter().for_each(|k| walk(k, n));
    }
    model.interfaces[0]
        .classes
        .iter()
        .for_each(|c| walk(c, &mut count));
    assert!(count >= 10_000, "{count} classes");
    let mut minors: Vec<u16> = Vec::new();
    fn ids(c: &netqos::model::Class, v: &mut Vec<u16>) {
        v.push(c.minor);
        c.children.iter().for_each(|k| ids(k, v));
    }
    model.interfaces[0]
        .classes
        .iter()
        .for_each(|c| ids(c, &mut minors));
    let before = minors.len();
    minors.sort_unstable();
    minors.dedup();
    assert_eq!(before, minors.len(), "class ids are unique");
}

/// An NQ010 over thousands of children labels only the largest few and counts the rest,
/// so a big mistake renders in milliseconds instead of one label per child.
#[test]
fn nq010_over_many_children_summarises() {
    let mut src = String::from("netqos 1\n\ninterface eth0 {\n    rate 1mbit\n");
    for i in 0..2000 {
        let rate = if i == 700 {
            900
        } else if i == 1500 {
            800
        } else {
            1
        };
        src.push_str(&format!(
            "    class c{i} {{\n        rate {rate}kbit\n    }}\n"
        ));
    }
    src.push_str("    class bulk {\n        rate 1kbit\n        default\n    }\n}\n");
    let checked = netqos::check_source(&src, &ExternalVars::default());
    let diags = checked.diagnostics.into_sorted();
    let d = diags
        .iter()
        .find(|d| d.code == netqos::codes::Code::NQ010)
        .expect("NQ010");
    // Five children plus the parent's label, not 2001.
    assert_eq!(d.labels.len(), 6, "{:?}", d.labels);
    assert!(
        d.labels
            .iter()
            .any(|l| l.text == "`c700` reserves 900 kbit/s"),
        "{:?}",
        d.labels
    );
    assert!(
        d.labels
            .iter()
            .any(|l| l.text == "`c1500` reserves 800 kbit/s"),
        "{:?}",
        d.labels
    );
    let parent = d.labels.last().expect("parent label");
    assert!(
        parent.text.contains("1996 more children (not shown)"),
        "{}",
        parent.text
    );
}

/// NQ050 over thousands of siblings marked `default` names and labels the first five and
/// counts the rest.
#[test]
fn nq050_over_many_defaults_summarises() {
    let mut src = String::from("netqos 1\n\ninterface eth0 {\n    rate 10gbit\n");
    for i in 0..3000 {
        src.push_str(&format!(
            "    class c{i} {{\n        rate 1kbit\n        default\n    }}\n"
        ));
    }
    src.push_str("}\n");
    let checked = netqos::check_source(&src, &ExternalVars::default());
    let diags = checked.diagnostics.into_sorted();
    let d = diags
        .iter()
        .find(|d| d.code == netqos::codes::Code::NQ050)
        .expect("NQ050");
    assert_eq!(d.labels.len(), 5, "{:?}", d.labels);
    assert_eq!(
        d.message,
        "3000 classes under interface `eth0` are marked `default`: `c0`, `c1`, `c2`, `c3`, `c4` and 2995 more"
    );
}

/// 20,000 unknown statements: the first 1000 NQ041 are listed, the last of them
/// counts the rest, and the knock-on checks of the interface are still dropped.
#[test]
fn many_unknown_statements_are_capped() {
    let mut src = String::from("netqos 1\n\ninterface eth0 {\n    rate 10gbit\n");
    for i in 0..20_000 {
        src.push_str(&format!("    frobnicate {i}\n"));
    }
    src.push_str("}\n");
    let checked = netqos::check_source(&src, &ExternalVars::default());
    let diags = checked.diagnostics.into_sorted();
    let cap = netqos::diagnostic::MAX_PER_CODE;
    let unknown: Vec<_> = diags
        .iter()
        .filter(|d| d.code == netqos::codes::Code::NQ041)
        .collect();
    assert_eq!(unknown.len(), cap);
    let help = unknown[cap - 1].help.as_deref().unwrap_or("");
    assert!(
        help.ends_with(&format!(
            "{} more NQ041 diagnostics like this one are not listed",
            20_000 - cap
        )),
        "{help}"
    );
    // No NQ001 (no default): the unknown statements imply it.
    assert!(
        diags.iter().all(|d| d.code == netqos::codes::Code::NQ041),
        "{:?}",
        diags.iter().map(|d| d.code).collect::<Vec<_>>()
    );
}
