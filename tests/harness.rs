//! The harness itself: the runner `.cargo/config.toml` sets lists the tests that skipped
//! after the run and keeps the exit status; `TempDir` cleans up after itself.

use std::process::Command;

use crate::support::*;

#[test]
fn the_runner_lists_skipped_tests_and_keeps_the_exit_status() {
    let d = TempDir::new("harness-runner");
    // A stand-in test binary under `deps/`: two skips, then exit 3.
    let bin = d.write(
        "deps/fake-tests",
        "#!/bin/sh\necho 'kernel::b: no namespaces' >>\"$NETQOS_SKIP_LOG\"\necho 'ansible::a: ansible-playbook is not installed' >>\"$NETQOS_SKIP_LOG\"\necho 'test result: ok.'\nexit 3\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(root().join("tests/run-with-skip-summary.sh"))
        .arg(&bin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 tests skipped")
            && err.contains(
                "  ansible::a: ansible-playbook is not installed\n  kernel::b: no namespaces\n"
            ),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "test result: ok.\n");
    // No skip, no summary; a binary outside deps/ (cargo run) runs as it is.
    let quiet = d.write("deps/quiet", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&quiet, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(root().join("tests/run-with-skip-summary.sh"))
        .arg(&quiet)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty());
    let out = Command::new(root().join("tests/run-with-skip-summary.sh"))
        .args(["sh", "-c", "echo \"${NETQOS_SKIP_LOG:-unset}\""])
        .env_remove("NETQOS_SKIP_LOG")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset\n");
}

#[test]
fn temp_dirs_are_unique_and_removed() {
    let a = TempDir::new("harness-tmp");
    let b = TempDir::new("harness-tmp");
    assert_ne!(a.path(), b.path());
    let p = a.write("x/y.txt", "hi");
    assert_eq!(a.read("x/y.txt"), "hi");
    let dir = a.path().to_path_buf();
    drop(a);
    assert!(!dir.exists() && !p.exists());
}
