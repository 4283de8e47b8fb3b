//! `examples/make/`: the Makefile compiles one policy for several hosts with the real
//! `make`; a second run does nothing and rewrites nothing (file times unchanged), a policy
//! touched but not changed re-runs netqos without rewriting an artefact, and a policy
//! error fails the build with its diagnostic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use crate::support::*;

fn make(dir: &Path, args: &[&str]) -> Output {
    Command::new("make")
        .arg("-C")
        .arg(dir)
        .arg(format!("NETQOS={}", netqos_bin()))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("make runs")
}

/// Modification time of every file under `dir`.
fn mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.clone(),
                    std::fs::metadata(&p).unwrap().modified().unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn makefile_compiles_every_host_and_is_idempotent() {
    if !tool("make", "make") {
        return;
    }
    let tmp = TempDir::new("make");
    let d = tmp.join("make");
    let st = Command::new("cp")
        .arg("-r")
        .arg(root().join("examples/make"))
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_dir_all(d.join("out"));

    let first = make(&d, &[]);
    assert!(first.status.success(), "{}", text(&first));
    for host in ["node1", "node2"] {
        for f in [
            "netqos-apply.sh",
            "netqos-rollback.sh",
            "plan.json",
            "tree.txt",
            "netqos.service",
            "cloud-init.yaml",
        ] {
            assert!(d.join("out").join(host).join(f).is_file(), "{host}/{f}");
        }
    }
    // Per-host values took effect.
    let tree = std::fs::read_to_string(d.join("out/node2/tree.txt")).unwrap();
    assert!(
        tree.starts_with("bond0 egress") && tree.contains("rate 10 Gbit/s"),
        "{tree}"
    );
    assert!(tree.contains("10.1.0.10"));

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = mtimes(&d);
    let second = make(&d, &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("Nothing to be done"),
        "{}",
        text(&second)
    );
    assert_eq!(mtimes(&d), before, "the second run rewrote nothing");

    // The policy touched, not changed: netqos runs again and rewrites no artefact.
    let policy = d.join("policy.nq");
    let src = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, &src).unwrap();
    let artefacts = |m: BTreeMap<PathBuf, SystemTime>| -> BTreeMap<PathBuf, SystemTime> {
        m.into_iter()
            .filter(|(p, _)| p.starts_with(d.join("out")) && !p.ends_with(".compiled"))
            .collect()
    };
    let before = artefacts(mtimes(&d));
    let third = make(&d, &[]);
    assert!(third.status.success(), "{}", text(&third));
    assert!(text(&third).contains(" compile "), "{}", text(&third));
    assert!(!text(&third).contains("wrote "), "{}", text(&third));
    assert_eq!(artefacts(mtimes(&d)), before);

    let check = make(&d, &["check"]);
    assert!(check.status.success(), "{}", text(&check));

    // A policy error fails the build with the diagnostic and writes nothing.
    std::fs::write(&policy, src.replace("rate 80%", "rate 100mbps")).unwrap();
    let before = artefacts(mtimes(&d));
    let broken = make(&d, &[]);
    assert!(!broken.status.success());
    let out = text(&broken);
    assert!(out.contains("error[NQ006]"), "{out}");
    assert!(out.contains("policy.nq:"), "{out}");
    assert_eq!(artefacts(mtimes(&d)), before);
}
