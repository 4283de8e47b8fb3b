//! The man pages stay in sync with the CLI and the diagnostic catalogue, and lint clean.

use std::process::Command;

use crate::support::*;
use netqos::codes::Code;

/// Long options (`--name`) listed in a `--help` text.
fn long_flags(help: &str) -> Vec<String> {
    help.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')))
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn every_command_and_flag_is_in_netqos_1() {
    let page = std::fs::read_to_string(root().join("man/netqos.1")).unwrap();
    let text = page.replace("\\-", "-");
    let top = cli(["--help"]).run().stdout();
    let mut commands = Vec::new();
    let mut in_commands = false;
    for line in top.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            match line.split_whitespace().next() {
                Some(c) if line.starts_with("  ") && c != "help" => commands.push(c.to_string()),
                _ if line.trim().is_empty() => in_commands = false,
                _ => {}
            }
        }
    }
    assert!(commands.len() >= 4, "{commands:?}");
    let mut helps = vec![top];
    for c in &commands {
        assert!(
            text.contains(c.as_str()),
            "command `{c}` missing from netqos.1"
        );
        helps.push(cli([c, "--help"]).run().stdout());
    }
    for h in helps {
        for flag in long_flags(&h) {
            assert!(
                text.contains(&format!("--{flag}")),
                "flag --{flag} missing from netqos.1"
            );
        }
    }
}

#[test]
fn every_artefact_kind_and_value_is_in_netqos_1() {
    let text = std::fs::read_to_string(root().join("man/netqos.1"))
        .unwrap()
        .replace("\\-", "-");
    for kind in netqos::Artefact::ALL.map(netqos::Artefact::name) {
        assert!(
            text.contains(&format!(".B {kind}")) || text.contains(&format!(".BR {kind} ")),
            "artefact kind `{kind}` missing from netqos.1"
        );
    }
    for word in [
        "netqos completions",
        ".BR bash | zsh | fish",
        "netqos diff",
        "netqos.service",
        "cloud-init.yaml",
        "/usr/local/lib/netqos",
        "/etc/systemd/system/netqos.service",
    ] {
        assert!(text.contains(word), "`{word}` missing from netqos.1");
    }
}

#[test]
fn every_diagnostic_code_is_in_netqos_5() {
    let page = std::fs::read_to_string(root().join("man/netqos.5")).unwrap();
    for code in Code::ALL {
        assert!(
            page.contains(&code.to_string()),
            "{code} missing from netqos.5"
        );
    }
}

#[test]
fn man_pages_lint_clean() {
    if !tool("mandoc", "mandoc") {
        return;
    }
    for page in ["man/netqos.1", "man/netqos.5"] {
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(root().join(page))
            .output()
            .unwrap();
        let text = text(&out);
        assert!(text.trim().is_empty(), "{page}: mandoc -T lint:\n{text}");
    }
}

#[test]
fn man_pages_render_without_groff_warnings() {
    if !tool("groff", "groff-base") || !tool("man", "man-db") {
        return;
    }
    for page in ["man/netqos.1", "man/netqos.5"] {
        let groff = Command::new("groff")
            .args(["-ww", "-man", "-Tutf8", "-z"])
            .env("LC_ALL", "C.UTF-8")
            .arg(root().join(page))
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&groff.stderr);
        assert!(
            groff.status.success() && warnings.trim().is_empty(),
            "{page}: groff -ww:\n{warnings}"
        );
        let man = Command::new("man")
            .arg("-l")
            .arg(root().join(page))
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&man.stderr);
        assert!(
            man.status.success() && err.trim().is_empty(),
            "{page}: man -l:\n{err}"
        );
        assert!(String::from_utf8_lossy(&man.stdout).contains("NAME"));
    }
}
