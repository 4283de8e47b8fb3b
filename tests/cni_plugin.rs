//! The netqos binary as a CNI plugin, on its own: VERSION, the spec's error objects for bad
//! input (bad JSON, unknown version, no `burst`, no `prevResult`, an unknown command, a tbf
//! that is not there), the pass-through of `prevResult`, ADD setting the bucket of a tbf
//! made the way `bandwidth` makes it, CHECK reporting drift, DEL leaving nothing behind.
//! Kernel parts run in two namespaces made here ("host" with the veth and the IFB, "pod").

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::*;
use serde_json::{Value, json};

/// Runs the plugin with `CNI_COMMAND`, optionally inside namespace `ns`: (exit ok, stdout
/// JSON or Null, stderr).
fn plugin(
    ns: Option<&Netns>,
    command: &str,
    env: &[(&str, &str)],
    stdin: &str,
) -> (bool, Value, String) {
    let mut cmd = match ns {
        Some(n) => n.command(netqos_bin()),
        None => Command::new(netqos_bin()),
    };
    cmd.env("CNI_COMMAND", command)
        .env("CNI_PATH", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("netqos runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = if out.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (
        out.status.success(),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn conf(version: &str, extra: Value) -> String {
    let mut c = json!({"cniVersion": version, "name": "cbr0", "type": "netqos", "burst": "20ms"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn assert_error(out: &(bool, Value, String), code: u64, msg_part: &str) {
    assert!(!out.0, "expected a failure: {:?}", out.1);
    assert_eq!(out.1["code"], json!(code), "{:?} / {}", out.1, out.2);
    assert!(out.1["cniVersion"].is_string(), "{:?}", out.1);
    assert!(
        out.1["msg"].as_str().unwrap().contains(msg_part),
        "{:?}",
        out.1
    );
}

const ENV: &[(&str, &str)] = &[
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/none"),
    ("CNI_IFNAME", "eth0"),
];

#[test]
fn protocol_version_and_errors() {
    let (ok, v, _) = plugin(None, "VERSION", &[], r#"{"cniVersion":"1.0.0"}"#);
    assert!(ok);
    assert_eq!(v["cniVersion"], json!("1.1.0"));
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"1.1.0") && versions.contains(&"0.4.0")
    );

    // Bad JSON: 6 (failure to decode content).
    assert_error(&plugin(None, "ADD", ENV, "{not json"), 6, "failed to parse");
    // Unknown version: 1 (incompatible CNI version).
    assert_error(
        &plugin(None, "ADD", ENV, &conf("0.9.9", json!({}))),
        1,
        "incompatible",
    );
    // No burst, a bad burst: 7 (invalid network config).
    assert_error(
        &plugin(
            None,
            "ADD",
            ENV,
            r#"{"cniVersion":"1.0.0","name":"n","type":"netqos"}"#,
        ),
        7,
        "burst",
    );
    assert_error(
        &plugin(None, "ADD", ENV, &conf("1.0.0", json!({"burst": "8kbit"}))),
        7,
        "bits",
    );
    // No prevResult on ADD: 7 with the spec's chaining message.
    assert_error(
        &plugin(None, "ADD", ENV, &conf("1.0.0", json!({}))),
        7,
        "chained",
    );
    // Unknown command: 4 (invalid environment variables).
    assert_error(
        &plugin(None, "FROB", ENV, &conf("1.0.0", json!({}))),
        4,
        "CNI_COMMAND",
    );
    // A missing variable on ADD: 4.
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "veth0"}]});
    let with_limit = conf(
        "1.0.0",
        json!({"prevResult": prev, "runtimeConfig": {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 4294967295u64}}}),
    );
    assert_error(
        &plugin(None, "ADD", &ENV[..2], &with_limit),
        4,
        "CNI_IFNAME",
    );
    // CHECK is not part of 0.3.x.
    assert_error(
        &plugin(
            None,
            "CHECK",
            ENV,
            &conf("0.3.1", json!({"prevResult": prev})),
        ),
        1,
        "CHECK",
    );

    // A pod without limits: bandwidth made nothing, netqos passes prevResult through.
    let plain = conf("1.0.0", json!({"prevResult": prev}));
    let (ok, v, _) = plugin(None, "ADD", ENV, &plain);
    assert!(ok);
    assert_eq!(v, prev);
    // DEL and GC leave nothing behind (netqos creates nothing) and print nothing; STATUS
    // (1.1) answers ready.
    for (cmd, version) in [("DEL", "1.0.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")] {
        let (ok, v, err) = plugin(None, cmd, &[], &conf(version, json!({})));
        assert!(ok && v.is_null(), "{cmd}: {v:?} {err}");
    }
}

#[test]
fn add_sets_the_bucket_check_reports_drift_and_a_missing_tbf_fails_the_sandbox() {
    let (Some(host), Some(pod)) = (Netns::new("cnip-h"), Netns::new("cnip-p")) else {
        return;
    };
    // A veth pair as ptp makes it, and bandwidth's objects with containerd's burst: the
    // host veth's tbf (traffic to the pod) and the IFB's (traffic from it).
    let veth = format!("vq{}", std::process::id() % 100_000);
    host.ok(&format!(
        "ip link add {veth} type veth peer name eth0 netns {}",
        pod.name()
    ));
    host.ok(&format!("ip link set {veth} up"));
    pod.ok("ip link set eth0 up");
    let ifb = netqos::plugin::sandbox::ifb_name("cbr0", "c0ffee");
    host.ok(&format!(
        "ip link add {ifb} type ifb && ip link set {ifb} up"
    ));
    for dev in [&veth, &ifb] {
        host.ok(&format!(
            "tc qdisc add dev {dev} root handle 1: tbf rate 125000bps burst 21474835b limit 536874036"
        ));
    }
    let netns = pod.path();
    let env = [
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [
        {"name": veth, "mac": "02:00:00:00:00:01"},
        {"name": "eth0", "sandbox": netns},
        {"name": ifb}
    ], "ips": [{"address": "10.99.0.2/24", "interface": 1}]});
    let rc = json!({"bandwidth": {"IngressRate": 1000000, "IngressBurst": 4294967295u64,
                                  "EgressRate": 1000000, "EgressBurst": 4294967295u64}});
    let add = conf("1.0.0", json!({"prevResult": prev, "runtimeConfig": rc}));
    let (ok, v, log) = plugin(Some(&host), "ADD", &env, &add);
    assert!(ok, "{v:?} {log}");
    assert_eq!(v, prev, "prevResult passes through unchanged");
    for dev in [&veth, &ifb] {
        let q = host.ok(&format!("tc qdisc show dev {dev} root"));
        // 1 Mbit/s × 20 ms = 2500 bytes; the queue stays bandwidth's.
        assert!(q.contains("rate 1Mbit burst 2500b "), "{dev}: {q}");
        assert!(
            log.contains(&format!("tbf on {dev}")),
            "logged for the runtime: {log}"
        );
    }
    assert!(log.contains("21.475 MB -> 2500 B"), "{log}");
    // CHECK agrees; a hand edit is drift (101).
    let (ok, _, err) = plugin(Some(&host), "CHECK", &env, &add);
    assert!(ok, "{err}");
    host.ok(&format!(
        "tc qdisc change dev {ifb} root handle 1: tbf rate 125000bps burst 9000b limit 20000"
    ));
    assert_error(&plugin(Some(&host), "CHECK", &env, &add), 101, &ifb);
    // A tbf that is not there: the sandbox fails (100), naming the device.
    host.ok(&format!("tc qdisc del dev {ifb} root"));
    let out = plugin(Some(&host), "ADD", &env, &add);
    assert_error(&out, 100, &ifb);
    assert!(
        out.2.contains("netqos: no tbf at the root"),
        "logged: {}",
        out.2
    );
    // No IFB at all: 100 too.
    host.ok(&format!("ip link del {ifb}"));
    assert_error(&plugin(Some(&host), "ADD", &env, &add), 100, "no IFB");
    // DEL succeeds with nothing to remove, whatever is left.
    let (ok, v, _) = plugin(Some(&host), "DEL", &env, &add);
    assert!(ok && v.is_null());
    // A prevResult whose host interfaces do not include the veth peer: 100.
    let stranger = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "cni0"}]});
    let add = conf(
        "1.0.0",
        json!({"prevResult": stranger, "runtimeConfig": {"bandwidth": {"ingressRate": 1000000, "ingressBurst": 8000000}}}),
    );
    assert_error(&plugin(Some(&host), "ADD", &env, &add), 100, "veth peer");
}
