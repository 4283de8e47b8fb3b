//! The agent's container image (`deploy/image/build.py`): built twice from the same binary
//! it has the same digest; imported into a private containerd (the harness of
//! `tests/cri.rs`) and started through containerd's CRI plugin the way the kubelet starts
//! the DaemonSet's container — the command, args, env (downward API values filled in),
//! security context and mounts read from the `kustomize build` of the flannel overlay, in
//! a host-network sandbox whose host is a namespace made here. The agent in it shapes that
//! namespace's `eth0` with the node's vars (read back with tc) and the pods rule with the
//! image's `nft`, its `/healthz` answers 200 over the namespace, and its process holds
//! exactly `NET_ADMIN` and `NET_RAW`; on a node without a vars file, the defaults.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cri::{Lab, must, tools_present};
use crate::deploy;
use crate::support::{TempDir, kernel_tool, root};
use serde_json::{Value, json};

const NODE_IP: &str = "10.231.0.1";

/// `build.py` on the test's netqos binary: (summary, archive).
fn build(dir: &Path) -> (Value, PathBuf) {
    let out = dir.join("netqos-agent.oci.tar");
    let script = root().join("deploy/image/build.py");
    let stdout = must(
        300,
        &[
            "python3",
            script.to_str().unwrap(),
            "--netqos",
            env!("CARGO_BIN_EXE_netqos"),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    (serde_json::from_str(&stdout).unwrap(), out)
}

fn tools() -> bool {
    let mut ok = deploy::tools();
    for (t, p) in [
        ("nft", "nftables"),
        ("dash", "dash"),
        ("strip", "binutils"),
        ("ldd", "libc-bin"),
    ] {
        ok &= kernel_tool(t, p);
    }
    ok && tools_present()
}

/// The DaemonSet's volumes as host directories under `host/`: hostPath volumes at their
/// path there, ConfigMap volumes filled with the built ConfigMap's data. Volume name →
/// host directory.
fn volumes(lab: &Lab, docs: &[Value], ds: &Value) -> Vec<(String, PathBuf)> {
    let host = lab.dir.join("host");
    let mut out = Vec::new();
    for v in ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
    {
        let name = v["name"].as_str().unwrap().to_string();
        let dir = if let Some(p) = v["hostPath"]["path"].as_str() {
            host.join(p.trim_start_matches('/'))
        } else {
            let cm = v["configMap"]["name"].as_str().unwrap();
            let d = host.join("configmaps").join(cm);
            let data = deploy::kind(docs, "ConfigMap", cm)["data"]
                .as_object()
                .unwrap();
            std::fs::create_dir_all(&d).unwrap();
            for (k, text) in data {
                std::fs::write(d.join(k), text.as_str().unwrap()).unwrap();
            }
            d
        };
        std::fs::create_dir_all(&dir).unwrap();
        out.push((name, dir));
    }
    out
}

/// The CRI container config the kubelet derives from the DaemonSet's container on `node`.
fn container_spec(lab: &Lab, docs: &[Value], ds: &Value, node: &str) -> Value {
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let vols = volumes(lab, docs, ds);
    let mounts: Vec<Value> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dir = &vols.iter().find(|(n, _)| *n == m["name"]).unwrap().1;
            json!({"container_path": m["mountPath"], "host_path": dir.display().to_string(),
                   "readonly": m["readOnly"].as_bool().unwrap_or(false)})
        })
        .collect();
    let mut envs = serde_json::Map::new();
    for e in c["env"].as_array().unwrap() {
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => node,
            Some("status.hostIP") => NODE_IP,
            other => panic!("no downward API value for {other:?}"),
        };
        envs.insert(e["name"].as_str().unwrap().to_string(), json!(value));
    }
    let sc = &c["securityContext"];
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], json!(true));
    json!({
        "name": c["name"], "image": c["image"], "command": c["command"], "args": c["args"],
        "envs": envs, "mounts": mounts, "log_path": format!("{node}.log"),
        "capabilities": sc["capabilities"], "privileged": sc["privileged"],
        "readonly_rootfs": sc["readOnlyRootFilesystem"],
        "no_new_privs": !sc["allowPrivilegeEscalation"].as_bool().unwrap(),
        "host_network": true,
    })
}

/// GET /healthz on the node address inside the namespace: the status code, 0 if none.
fn healthz(lab: &Lab) -> u16 {
    let probe = format!(
        "import urllib.request as u\ntry:\n print(u.urlopen('http://{NODE_IP}:9787/healthz', timeout=2).status)\nexcept Exception as e:\n print(getattr(e, 'code', 0))"
    );
    let (_, out, _) = crate::cri::run(
        10,
        &["ip", "netns", "exec", &lab.ns, "python3", "-c", &probe],
    );
    out.trim().parse().unwrap_or(0)
}

/// Waits (bounded) until /healthz answers 200; the container's state and log otherwise.
fn wait_ready(lab: &Lab, id: &str, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if healthz(lab) == 200 {
            return;
        }
        let status = lab.cri(&["cstatus", id]).unwrap_or(Value::Null);
        let log = std::fs::read_to_string(lab.dir.join("pods").join(log)).unwrap_or_default();
        assert!(
            Instant::now() < deadline && status["state"] != json!(2),
            "the agent did not become ready: {status}\n{log}\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_image_builds_twice_to_the_same_digest_and_is_small() {
    if !tools() {
        return;
    }
    let (a, b) = (TempDir::new("image-a"), TempDir::new("image-b"));
    let (pa, pb) = (a.path().to_path_buf(), b.path().to_path_buf());
    let other = std::thread::spawn(move || build(&pb));
    let (first, archive_a) = build(&pa);
    let (second, archive_b) = other.join().unwrap();
    assert_eq!(first["digest"], second["digest"]);
    assert_eq!(
        std::fs::read(&archive_a).unwrap(),
        std::fs::read(&archive_b).unwrap()
    );
    let files = first["files"].as_array().unwrap();
    for want in [
        "usr/bin/netqos",
        "usr/sbin/nft",
        "bin/sh",
        "lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(files.iter().any(|f| f == want), "{want}: {files:?}");
    }
    let bytes = first["archive_bytes"].as_u64().unwrap();
    eprintln!(
        "image {} ({} files): archive {bytes} B, layer {} B gzip, {} B unpacked",
        first["digest"],
        files.len(),
        first["layer_bytes"],
        first["uncompressed_bytes"]
    );
    // The test's binary is the debug build (stripped here); release is smaller still.
    assert!(bytes < 40 << 20, "{bytes} bytes");
}

#[test]
fn containerds_cri_starts_the_daemonsets_container_and_it_shapes_the_node() {
    if !tools() {
        return;
    }
    let _serial = crate::traffic::serial();
    let mut lab = Lab::new("nqfk8s");
    let work = lab.dir.join("work");
    let (summary, archive) = build(&work);
    let (_, docs) = deploy::validated("flannel", &work);
    let ds = deploy::kind(&docs, "DaemonSet", "netqos-agent").clone();
    lab.start();
    let imported = lab.import(&archive);
    assert!(
        imported.contains("localhost/netqos-agent:0.1.0"),
        "{imported}"
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("localhost/netqos-agent:0.1.0")
    );
    // The node: an eth0 with the address the downward API gives as status.hostIP.
    lab.in_ns(
        10,
        &format!("ip link add eth0 type veth peer name nqfk8s-peer && ip addr add {NODE_IP}/24 dev eth0 && ip link set eth0 up && ip link set nqfk8s-peer up"),
    );
    let pods = lab.dir.join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let pod = json!({"name": "netqos-agent-x", "uid": "uid-netqos-agent", "namespace": "netqos",
        "host_network": true, "log_directory": pods.display().to_string()});
    let sandbox = lab
        .cri(&["pod", &pod.to_string()])
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    let sandbox = sandbox["id"].as_str().unwrap().to_string();
    lab.pods.push(sandbox.clone());

    // worker-1 has a vars file: a 100 Mbit/s eth0 (the policy's default is 1 Gbit/s).
    let spec = container_spec(&lab, &docs, &ds, "worker-1");
    let id = run_agent(&lab, &sandbox, &pod, &spec);
    eprintln!("image {} ready through CRI", summary["digest"]);
    let classes = lab.in_ns(10, "tc class show dev eth0");
    assert!(
        lab.in_ns(10, "tc qdisc show dev eth0")
            .contains("qdisc htb 1: root"),
        "{classes}"
    );
    assert!(classes.contains("rate 100Mbit"), "{classes}");
    assert!(classes.contains("rate 20Mbit ceil 100Mbit"), "{classes}");
    // The pods block's rule went in through the image's own nft.
    let table = lab.in_ns(10, "nft list table inet netqos");
    assert!(table.contains("10.42.0.0/16"), "{table}");
    // Its process: not privileged, exactly NET_ADMIN (12) and NET_RAW (13).
    let status = lab.cri(&["cstatus", &id]).unwrap();
    assert_eq!(status["state"], json!(1), "{status}");
    let info: Value = serde_json::from_str(status["info"]["info"].as_str().unwrap()).unwrap();
    let pid = info["pid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        proc_status.contains("CapEff:\t0000000000003000"),
        "{proc_status}"
    );
    lab.cri(&["cstop", &id]).unwrap();
    lab.cri(&["cremove", &id]).unwrap();

    // A node with no file: the policy's defaults (1 Gbit/s on eth0).
    let mut spec = container_spec(&lab, &docs, &ds, "unlisted-node");
    spec["name"] = json!("agent-unlisted");
    let id = run_agent(&lab, &sandbox, &pod, &spec);
    let classes = lab.in_ns(10, "tc class show dev eth0");
    assert!(classes.contains("rate 1Gbit"), "{classes}");
    assert!(!classes.contains("rate 100Mbit"), "{classes}");
    lab.cri(&["cstop", &id]).unwrap();
    lab.cri(&["cremove", &id]).unwrap();
}

/// CreateContainer + StartContainer in `sandbox`, then waits until /healthz is ready.
fn run_agent(lab: &Lab, sandbox: &str, pod: &Value, spec: &Value) -> String {
    let created = lab
        .cri(&["create", sandbox, &pod.to_string(), &spec.to_string()])
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    let id = created["id"].as_str().unwrap().to_string();
    lab.cri(&["start", &id])
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    wait_ready(lab, &id, spec["log_path"].as_str().unwrap());
    id
}
