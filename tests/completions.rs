//! `netqos completions`: each script is accepted by its shell and completes commands and
//! option values when loaded the way a user loads it.

use std::process::Command;

use crate::support::*;

/// The completion script for `shell`, written into a temp dir (kept alive by the caller).
fn script(shell: &str) -> (TempDir, std::path::PathBuf) {
    let out = cli(["completions", shell]).code(0);
    let d = TempDir::new("completion");
    let p = d.write(&format!("netqos-completion.{shell}"), &out.output.stdout);
    (d, p)
}

fn shell(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("shell runs");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bash_completes_commands_and_formats() {
    let (_dir, f) = script("bash");
    let p = f.to_str().unwrap();
    shell("bash", &["-n", p]);
    let words = shell(
        "bash",
        &[
            "-c",
            "source \"$1\"; COMP_WORDS=(netqos com); COMP_CWORD=1; _netqos netqos com netqos; echo \"${COMPREPLY[*]}\"; COMP_WORDS=(netqos check --format ''); COMP_CWORD=3; _netqos netqos '' --format; echo \"${COMPREPLY[*]}\"",
            "bash",
            p,
        ],
    );
    assert_eq!(words, "compile completions\nhuman json github\n");
}

#[test]
fn zsh_accepts_and_registers_the_completion() {
    if !tool("zsh", "zsh") {
        return;
    }
    let (_dir, f) = script("zsh");
    let p = f.to_str().unwrap();
    shell("zsh", &["-n", p]);
    let out = shell(
        "zsh",
        &[
            "-f",
            "-c",
            "autoload -U compinit && compinit -u -D; source \"$1\"; echo ${_comps[netqos]}",
            "zsh",
            p,
        ],
    );
    assert_eq!(out, "_netqos\n");
}

#[test]
fn fish_completes_commands_and_formats() {
    if !tool("fish", "fish") {
        return;
    }
    let (_dir, f) = script("fish");
    let p = f.to_str().unwrap();
    shell("fish", &["-n", p]);
    let out = shell(
        "fish",
        &[
            "--no-config",
            "-c",
            "source $argv[1]; complete -C 'netqos com'; complete -C 'netqos check --format '",
            p,
        ],
    );
    let words: Vec<&str> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(l))
        .collect();
    assert_eq!(
        words,
        ["compile", "completions", "github", "human", "json"],
        "{out}"
    );
}

#[test]
fn unknown_shell_is_a_usage_error() {
    cli(["completions", "tcsh"]).code(2);
}

#[test]
fn no_script_or_help_offers_the_internal_reverter() {
    for sh in ["bash", "zsh", "fish"] {
        let out = cli(["completions", sh]).code(0);
        let text = String::from_utf8_lossy(&out.output.stdout);
        assert!(
            !text.contains("revert"),
            "{sh} completion offers the internal __revert-after"
        );
    }
    let help = cli(["--help"]).code(0);
    assert!(!String::from_utf8_lossy(&help.output.stdout).contains("revert"));
    // Still reachable by `apply --confirm`, which starts it: a usage error without its
    // arguments, not an unknown command.
    let bare = cli(["__revert-after"]).code(2);
    assert!(
        String::from_utf8_lossy(&bare.output.stderr).contains("<ID>"),
        "{}",
        String::from_utf8_lossy(&bare.output.stderr)
    );
}
