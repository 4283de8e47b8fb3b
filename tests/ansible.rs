//! `examples/ansible/`: the playbook run by the real `ansible-playbook` (ansible-core)
//! against localhost over a local connection, deploying into a temporary root: check mode
//! reports the deploy and changes nothing on the node, the real run deploys exactly the
//! compiled artefacts, a second run reports no change, and a host variable that makes the
//! policy invalid fails the play with the diagnostic.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn inventory(link: &str) -> String {
    format!(
        "nodes:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n      netqos_uplink: eth1\n      netqos_link: {link}\n      netqos_control_plane: [10.0.0.10, 10.0.0.11]\n"
    )
}

fn play(d: &Path, extra: &[&str]) -> Output {
    Command::new("ansible-playbook")
        .arg("-i")
        .arg(d.join("inventory.yml"))
        .arg(d.join("playbook/playbook.yml"))
        .arg("-e")
        .arg(format!("netqos={}", netqos_bin()))
        .arg("-e")
        .arg(format!("netqos_root={}", d.join("node").display()))
        .args(["-e", "netqos_enable=false"])
        .args(extra)
        .env("LC_ALL", "C.UTF-8")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOME", d.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", d.join("ansible-home/tmp"))
        .env("NO_COLOR", "1")
        .output()
        .expect("ansible-playbook runs")
}

/// `(changed, failed)` from the PLAY RECAP line of localhost.
fn recap(o: &Output) -> (u32, u32) {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap:\n{text}{}", String::from_utf8_lossy(&o.stderr)));
    let field = |name: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    (field("changed="), field("failed="))
}

#[test]
fn playbook_deploys_in_check_mode_for_real_and_idempotently() {
    if !tool("ansible-playbook", "ansible-core (pip)") {
        return;
    }
    let d = TempDir::new("ansible");
    let st = Command::new("cp")
        .arg("-r")
        .arg(root().join("examples/ansible"))
        .arg(d.join("playbook"))
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_dir_all(d.join("playbook/build"));
    std::fs::write(d.join("inventory.yml"), inventory("2gbit")).unwrap();
    let node = d.join("node");

    let check = play(&d, &["--check", "--diff"]);
    assert!(check.status.success(), "{}", text(&check));
    let (changed, failed) = recap(&check);
    assert!(changed > 0 && failed == 0, "{}", text(&check));
    assert!(!node.exists(), "check mode changed nothing on the node");
    assert!(
        text(&check).contains("+ExecStart=/usr/local/lib/netqos/netqos-apply.sh"),
        "the diff shows the unit"
    );

    let real = play(&d, &[]);
    assert!(real.status.success(), "{}", text(&real));
    let (changed, _) = recap(&real);
    assert!(changed > 0);
    let out = d.join("playbook/build/localhost/out");
    for (path, built, mode) in [
        (
            "usr/local/lib/netqos/netqos-apply.sh",
            "netqos-apply.sh",
            0o755,
        ),
        (
            "usr/local/lib/netqos/netqos-rollback.sh",
            "netqos-rollback.sh",
            0o755,
        ),
        ("etc/systemd/system/netqos.service", "netqos.service", 0o644),
    ] {
        let deployed = node.join(path);
        assert_eq!(
            std::fs::read(&deployed).unwrap(),
            std::fs::read(out.join(built)).unwrap(),
            "{path}"
        );
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&deployed).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{path}");
    }
    // The host's variables reached the policy.
    let tree = std::fs::read_to_string(out.join("tree.txt")).unwrap();
    assert!(
        tree.starts_with("eth1 egress") && tree.contains("rate 2 Gbit/s"),
        "{tree}"
    );

    let again = play(&d, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        recap(&again),
        (0, 0),
        "second run changes nothing:\n{}",
        text(&again)
    );

    // A host variable that makes the policy invalid fails at `netqos check`.
    std::fs::write(d.join("inventory.yml"), inventory("100mbps")).unwrap();
    let bad = play(&d, &[]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("NQ006"), "{}", text(&bad));
}
