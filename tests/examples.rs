//! Every bundled example checks clean and is already in canonical format.

use crate::support::*;
use netqos::vars::ExternalVars;

/// The bundled policies, with those of the Makefile and Ansible examples.
fn all_examples() -> Vec<std::path::PathBuf> {
    ["examples", "examples/make", "examples/ansible"]
        .iter()
        .flat_map(|d| policies(&root().join(d)))
        .collect()
}

#[test]
fn examples_check_clean() {
    let files = all_examples();
    assert!(files.len() >= 4);
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        let checked = netqos::check_source(&src, &ExternalVars::default());
        let diags = checked.diagnostics.into_sorted();
        assert!(
            diags.is_empty(),
            "{}:\n{}",
            path.display(),
            render("example", &src, &diags)
        );
        assert!(checked.model.is_some());
    }
}

#[test]
fn examples_are_formatted() {
    for path in all_examples() {
        let src = std::fs::read_to_string(&path).unwrap();
        let formatted = netqos::format::format(&src).expect("formats");
        assert_eq!(
            formatted,
            src,
            "{} is not in canonical format",
            path.display()
        );
    }
}

#[test]
fn seed_002_reservation_model() {
    let src = std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap();
    let model = netqos::check_source(&src, &ExternalVars::default())
        .model
        .unwrap();
    let eth0 = &model.interfaces[0];
    assert_eq!(eth0.device, "eth0");
    assert_eq!(eth0.rate, 1_000_000_000);
    let cp = &eth0.classes[0];
    assert_eq!((cp.rate, cp.ceil, cp.prio), (200_000_000, 1_000_000_000, 0));
    let bulk = eth0.classes.iter().find(|c| c.name == "bulk").unwrap();
    assert_eq!(eth0.default_minor, bulk.minor);
    assert_ne!(cp.minor, bulk.minor);
}
