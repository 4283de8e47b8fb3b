//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use netqos::diagnostic::Diagnostic;
use netqos::report::{self, Source};
use netqos::vars::ExternalVars;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Checks a source, returning sorted diagnostics.
pub fn diagnose(src: &str, vars: &ExternalVars) -> Vec<Diagnostic> {
    netqos::check_source(src, vars).diagnostics.into_sorted()
}

/// Renders diagnostics without colour, the way `netqos check` prints them.
pub fn render(name: &str, src: &str, diags: &[Diagnostic]) -> String {
    report::human(
        diags,
        &Source {
            name: name.to_string(),
            text: src.to_string(),
        },
        false,
    )
}

/// Insta settings that keep snapshots in the top-level `snapshots/`.
pub fn insta_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

/// Runs the built `netqos` binary.
pub fn netqos(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netqos"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("netqos runs")
}

/// Every `*.nq` file directly in `dir`, sorted.
pub fn policies(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "nq"))
        .collect();
    v.sort();
    v
}

/// Whether a tool the test needs is installed. Outside CI a missing tool skips the test
/// (`false`); in CI (`CI` set) it fails it, since `.ci/run` installs `package`.
pub fn tool(name: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg("command -v \"$1\" >/dev/null")
        .arg("sh")
        .arg(name)
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required in CI (.ci/run installs {package})"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A network namespace (`nqt-TAG-PID`) deleted on drop; `None` (the test skips) when
/// namespaces are unavailable, unless `NETQOS_REQUIRE_NETNS` is set.
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("nqt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var_os("NETQOS_REQUIRE_NETNS").is_none(),
                "NETQOS_REQUIRE_NETNS is set but `ip netns add` failed (need root and iproute2)"
            );
            eprintln!("skipping kernel test: cannot create network namespaces");
            return None;
        }
        Some(Netns(name))
    }

    pub fn sh(&self, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec runs");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub fn ok(&self, cmd: &str) -> String {
        let (ok, text) = self.sh(cmd);
        assert!(ok, "`{cmd}` failed in {}:\n{text}", self.0);
        text
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
