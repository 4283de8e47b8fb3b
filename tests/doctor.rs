//! `netqos doctor`: fake node trees under `--root` (each flavour's layout with the shared
//! conflist fixtures in `tests/fixtures/conflists`, plugin dirs with and without `bandwidth`, a fake `bandwidth` that
//! answers VERSION), and veth links in namespaces for the link-aware rates (NQ100, also
//! from `plan` and `apply`) and a root `mq` (NQ108).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::support::{Netns, TempDir, cli, root};

/// A `bandwidth` that speaks the CNI protocol's VERSION and prints its about text.
const FAKE_BANDWIDTH: &str = r#"#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
  cat >/dev/null
  echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}'
  exit 0
fi
echo "CNI bandwidth plugin RELEASE" >&2
echo "CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0" >&2
"#;

fn fixture(name: &str) -> String {
    let path = root().join("tests/fixtures/conflists").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A node tree: `conflist` at `conf` (node path), every chained plugin in `bin` (a fake
/// `bandwidth` of `release`, or none when `release` is `None`), `marker` dirs created.
fn tree(
    tag: &str,
    conf: &str,
    conflist: &str,
    bin: &str,
    release: Option<&str>,
    marker: &[&str],
) -> TempDir {
    let t = TempDir::new(tag);
    let at = |p: &str| t.path().join(p.trim_start_matches('/'));
    std::fs::create_dir_all(at(conf).parent().unwrap()).unwrap();
    std::fs::write(at(conf), conflist).unwrap();
    for m in marker {
        std::fs::create_dir_all(at(m)).unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(conflist).unwrap();
    for p in v["plugins"].as_array().unwrap() {
        let ty = p["type"].as_str().unwrap();
        if ty != "bandwidth" {
            executable(&at(&format!("{bin}/{ty}")), "#!/bin/sh\nexit 0\n");
        }
    }
    if let Some(r) = release {
        executable(
            &at(&format!("{bin}/bandwidth")),
            &FAKE_BANDWIDTH.replace("RELEASE", r),
        );
    }
    t
}

/// `CODE severity: message` per line of a `--format json` run.
fn messages(ran: crate::support::Ran) -> String {
    let v: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("JSON on stdout");
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}: {}\n",
                d["code"].as_str().unwrap(),
                d["severity"].as_str().unwrap(),
                d["message"].as_str().unwrap()
            )
        })
        .collect()
}

const RKE2: &[&str] = &["/var/lib/rancher/rke2"];
const K3S_CONF: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist";
const K3S_BIN: &str = "/var/lib/rancher/k3s/data/current/bin";

/// (fixture, flavour, conflist node path, bin dir, marker dirs).
const LAYOUTS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "flannel-upstream.conflist",
        "flannel",
        "/etc/cni/net.d/10-flannel.conflist",
        "/opt/cni/bin",
        &[],
    ),
    ("k3s-flannel.conflist", "k3s", K3S_CONF, K3S_BIN, &[]),
    (
        "rke2-canal.conflist",
        "rke2-canal",
        "/etc/cni/net.d/10-canal.conflist",
        "/opt/cni/bin",
        RKE2,
    ),
    (
        "rke2-flannel-with-bandwidth.conflist",
        "rke2-flannel",
        "/etc/cni/net.d/10-flannel.conflist",
        "/opt/cni/bin",
        RKE2,
    ),
    (
        "canal-v3.29.conflist",
        "canal",
        "/etc/cni/net.d/10-canal.conflist",
        "/opt/cni/bin",
        &[],
    ),
    (
        "canal-v3.30.conflist",
        "canal",
        "/etc/cni/net.d/10-canal.conflist",
        "/opt/cni/bin",
        &[],
    ),
];

#[test]
fn doctor_root_names_each_layouts_flavour_dirs_and_plugin_version() {
    for (fix, flavour, conf, bin, marker) in LAYOUTS {
        let t = tree(
            "doc-layout",
            conf,
            &fixture(fix),
            bin,
            Some("v1.6.2"),
            marker,
        );
        let conf_dir = Path::new(conf).parent().unwrap().display().to_string();
        let text = messages(
            cli(["doctor", "--format", "json", "--root"])
                .arg(t.path())
                .run()
                .code(0),
        );
        assert!(
            text.contains(&format!(
                "CNI flavour {flavour}: conflist {conf}, conf dir {conf_dir}, bin dir {bin}"
            )),
            "{fix}:\n{text}"
        );
        assert!(
            text.contains(&format!("bandwidth plugin {bin}/bandwidth: v1.6.2, CNI spec 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")),
            "{fix}:\n{text}"
        );
        let calico_native = *fix == "canal-v3.30.conflist";
        assert_eq!(text.contains("NQ106"), calico_native, "{fix}:\n{text}");
    }
}

#[test]
fn doctor_refuses_a_chain_whose_plugin_binary_is_missing() {
    for (fix, _, conf, bin, marker) in LAYOUTS {
        let text = fixture(fix);
        if !text.contains("\"bandwidth\"") {
            continue;
        }
        let t = tree("doc-nobw", conf, &text, bin, None, marker);
        let text = messages(
            cli(["doctor", "--format", "json", "--root"])
                .arg(t.path())
                .run()
                .code(1),
        );
        assert!(
            text.contains(&format!(
                "NQ104 error: {conf} chains `bandwidth` but {bin}/bandwidth is missing"
            )),
            "{fix}:\n{text}"
        );
    }
}

#[test]
fn doctor_with_a_pods_policy_checks_the_flavour_and_the_plugin_the_patch_needs() {
    let flannel = fixture("flannel-upstream.conflist");
    let conf = "/etc/cni/net.d/10-flannel.conflist";
    let policy =
        "netqos 1\nallow NQ066\n\npods {\n    cni flannel\n    limit app=backup egress 5gbit\n}\n";
    let without = tree("doc-pods", conf, &flannel, "/opt/cni/bin", None, &[]);
    let p = without.write("pods.nq", policy);
    cli(["doctor", "--root"])
        .arg(without.path())
        .arg(&p)
        .run()
        .code(1)
        .text_has("NQ104")
        .text_has("policy's `pods` block");
    let with = tree(
        "doc-pods2",
        conf,
        &flannel,
        "/opt/cni/bin",
        Some("v1.6.2"),
        &[],
    );
    cli(["doctor", "--root"])
        .arg(with.path())
        .arg(&p)
        .run()
        .code(0);
    let k3s = with.write("k3s.nq", policy.replace("cni flannel", "cni k3s"));
    cli(["doctor", "--root"])
        .arg(with.path())
        .arg(&k3s)
        .run()
        .code(1)
        .text_has("NQ109");
}

#[test]
fn doctor_names_cilium_old_plugins_and_empty_or_missing_roots() {
    let cilium = r#"{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni","enable-debug":false}]}"#;
    let t = tree(
        "doc-cilium",
        "/etc/cni/net.d/05-cilium.conflist",
        cilium,
        "/opt/cni/bin",
        None,
        &[],
    );
    cli(["doctor", "--root"])
        .arg(t.path())
        .run()
        .code(0)
        .text_has("NQ107")
        .text_has("CNI flavour cilium");
    let old = tree(
        "doc-old",
        "/etc/cni/net.d/10-flannel.conflist",
        &fixture("flannel-upstream.conflist"),
        "/opt/cni/bin",
        Some("v1.5.1"),
        &[],
    );
    cli(["doctor", "--root"])
        .arg(old.path())
        .run()
        .code(0)
        .text_has("NQ105")
        .text_has("v1.5.1");
    let empty = TempDir::new("doc-empty");
    cli(["doctor", "--root"])
        .arg(empty.path())
        .run()
        .code(0)
        .text_has("NQ110");
    cli(["doctor", "--root"])
        .arg(empty.path().join("absent"))
        .run()
        .code(3)
        .stderr_has("cannot read");
}

#[test]
fn doctor_formats_json_and_github() {
    let t = tree(
        "doc-fmt",
        K3S_CONF,
        &fixture("k3s-flannel.conflist"),
        K3S_BIN,
        None,
        &[],
    );
    let ran = cli(["doctor", "--format", "json", "--root"])
        .arg(t.path())
        .run()
        .code(1);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout()).expect("JSON on stdout");
    let codes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["NQ101", "NQ104"], "{v}");
    assert_eq!(v[1]["severity"], "error");
    cli(["doctor", "--format", "github", "--root"])
        .arg(t.path())
        .run()
        .code(1)
        .stdout_has("::error")
        .stdout_has("NQ104");
}

/// The policy of the acceptance test: a root rate on the namespace's veth.
fn rate_policy(rate: &str) -> String {
    format!(
        "netqos 1\n\ninterface dv0 {{\n    rate {rate}\n    class a {{\n        rate 50%\n        default\n    }}\n}}\n"
    )
}

#[test]
fn doctor_plan_and_apply_warn_for_a_root_rate_at_the_veth_speed() {
    let Some(ns) = Netns::new("doc") else { return };
    ns.veth("dv0", "dv1");
    let speed = ns.ok("cat /sys/class/net/dv0/speed");
    assert_eq!(speed.trim(), "10000", "a veth reports 10 Gbit/s");
    let t = TempDir::new("doc-rate");
    let state = t.path().join("state");
    for (rate, warns) in [("10gbit", true), ("9gbit", false)] {
        let p = t.write(&format!("p-{rate}.nq"), rate_policy(rate));
        let doctor = ns.netqos(["doctor"]).arg(&p).run().code(0);
        assert_eq!(
            doctor.text().contains("NQ100"),
            warns,
            "doctor {rate}:\n{}",
            doctor.text()
        );
        if warns {
            assert!(
                doctor.text().contains("set `rate 9500mbit` or lower"),
                "{}",
                doctor.text()
            );
        }
        let plan = ns.netqos(["plan"]).arg(&p).run().code(0);
        assert_eq!(
            plan.text().contains("NQ100"),
            warns,
            "plan {rate}:\n{}",
            plan.text()
        );
        let apply = ns
            .netqos(["apply", "--state-dir"])
            .arg(&state)
            .arg(&p)
            .run()
            .code(0);
        assert_eq!(
            apply.text().contains("NQ100"),
            warns,
            "apply {rate}:\n{}",
            apply.text()
        );
    }
    // The agent logs the same warning when it loads the policy (and applies it anyway).
    for (rate, warns) in [("10gbit", true), ("9gbit", false)] {
        let p = t.path().join(format!("p-{rate}.nq"));
        let log = ns.ok(&format!(
            "timeout -s TERM 3 {bin} agent --listen 127.0.0.1:0 --state-dir {st} {p} 2>&1; true",
            bin = env!("CARGO_BIN_EXE_netqos"),
            st = t.path().join(format!("agent-{rate}")).display(),
            p = p.display()
        ));
        assert_eq!(log.contains("NQ100"), warns, "agent {rate}:\n{log}");
    }
    // Without a policy: the link, its speed and its root.
    ns.netqos(["doctor"])
        .run()
        .code(0)
        .text_has("dv1: 10000 Mbit/s, 1 TX queue(s), root noqueue");
}

#[test]
fn doctor_names_a_multiqueue_mq_root_a_single_htb_would_replace() {
    let Some(ns) = Netns::new("docmq") else {
        return;
    };
    ns.ok("ip link add dm0 numtxqueues 4 type veth peer name dm1 && ip link set dm0 up && ip link set dm1 up");
    ns.ok("tc qdisc add dev dm0 root handle 1: mq");
    let t = TempDir::new("doc-mq");
    let p = t.write("p.nq", rate_policy("1gbit").replace("dv0", "dm0"));
    ns.netqos(["doctor"])
        .arg(&p)
        .run()
        .code(0)
        .text_has("NQ108")
        .text_has("dm0 has 4 TX queues");
    ns.netqos(["doctor"])
        .run()
        .code(0)
        .text_has("dm0: 10000 Mbit/s, 4 TX queue(s), root mq");
}

#[test]
fn doctor_probes_the_kernel_in_a_scratch_namespace_it_deletes() {
    let Some(ns) = Netns::new("docprobe") else {
        return;
    };
    let before = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let ran = ns.netqos(["doctor", "--format", "json"]).run().code(0);
    let text = messages(ran);
    assert!(
        text.contains("NQ114 info: the kernel provides: htb qdisc, u32 classifier"),
        "{text}"
    );
    let after = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let names = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("nqdoctor-"))
            .map(str::to_string)
            .collect()
    };
    // Other doctor runs (other tests) may be probing right now: a namespace counts as
    // left behind only when it is still listed and the process it is named after is gone.
    let again = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left: Vec<String> = names(&after)
        .into_iter()
        .filter(|n| !names(&before).contains(n) && names(&again).contains(n))
        .filter(|n| {
            let pid = n.trim_start_matches("nqdoctor-");
            !std::path::Path::new("/proc").join(pid).exists()
        })
        .collect();
    assert!(left.is_empty(), "scratch namespaces left behind: {left:?}");
    // Under --root the running kernel is not the image's: nothing is probed.
    let t = TempDir::new("doc-noprobe");
    let text = messages(
        cli(["doctor", "--format", "json", "--root"])
            .arg(t.path())
            .run()
            .code(0),
    );
    assert!(!text.contains("NQ114") && !text.contains("NQ112"), "{text}");
}
