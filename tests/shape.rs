//! Code shape (ARCHITECTURE.md, "Code shape"): no function in `src/` is over 80 lines
//! unless `benches/fn_lengths.py`'s `ALLOWED` names it with the reason, and that check
//! itself catches a long function.

use crate::support::*;
use std::process::{Command, Output};

fn fn_lengths(dir: &std::path::Path, max: &str) -> Output {
    Command::new("python3")
        .arg(root().join("benches/fn_lengths.py"))
        .arg(dir)
        .args(["--max", max, "--list", "0"])
        .output()
        .expect("python3 runs (installed by .ci/run with python3-yaml)")
}

#[test]
fn no_function_in_src_is_over_80_lines() {
    let out = fn_lengths(&root().join("src"), "80");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_length_check_fails_on_a_long_function_and_skips_tests() {
    let t = TempDir::new("fn-lengths");
    let body = "    let _x = 1;\n".repeat(80);
    let long = format!("fn long() {{\n{body}}}\n");
    let test_only = format!(
        "fn short() {{}}\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    std::fs::write(t.path().join("tested.rs"), test_only).unwrap();
    let ok = fn_lengths(t.path(), "80");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(t.path().join("long.rs"), long).unwrap();
    let out = fn_lengths(t.path(), "80");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("long.rs:1 long is 82 lines (over 80)"),
        "{err}"
    );
    assert!(!err.contains("long_test"), "{err}");
}
