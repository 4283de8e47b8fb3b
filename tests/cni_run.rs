//! The real CNI bandwidth plugin (Debian's containernetworking-plugins), run the way a
//! container runtime runs a conflist chain: each plugin in order with `prevResult`, and
//! `runtimeConfig.bandwidth` only for entries that declare the capability, derived from the
//! pod annotations netqos writes. A `ptp` chain stands in for flannel, whose binary is not
//! packaged. Everything happens in two namespaces made here: "host" (where the plugins run
//! and the pod's host veth lives) and "pod".
//!
//! Proves: without netqos's patch the annotations do nothing (the seed's bug); with it the
//! host veth gets `tbf rate 1Mbit` and the egress IFB; containerd's burst gives the seed's
//! `burst 21474835b` and lets a short iperf3 run far above the limit, while a 100 kbit burst
//! holds it to 1 Mbit/s both ways; with `pods { burst 20ms }` the netqos entry after
//! bandwidth holds containerd's own burst to the limit from the first second; DEL removes
//! the IFB.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

fn plugin_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var("NETQOS_CNI_PATH").ok(),
        Some("/usr/lib/cni".into()),
        Some("/opt/cni/bin".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|d| {
            ["ptp", "host-local", "bandwidth", "portmap"]
                .iter()
                .all(|p| d.join(p).exists())
        })
}

/// A minimal container runtime: libcni's chain semantics.
struct Runtime<'a> {
    bin: &'a Path,
    host: &'a Netns,
    pod: &'a Netns,
    container_id: &'a str,
}

impl Runtime<'_> {
    fn exec(&self, command: &str, conf: &Value) -> Result<Value, String> {
        let mut child = self
            .host
            .command(self.bin.join(conf["type"].as_str().unwrap()))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(conf.to_string().as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            return Err(format!(
                "{} {command}: {}{}",
                conf["type"],
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if out.stdout.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// One plugin's config: its entry plus the list's name and version, the previous result,
    /// and `runtimeConfig` for the capabilities it declares.
    fn conf(&self, list: &Value, entry: &Value, prev: Option<&Value>, caps: &Value) -> Value {
        let mut c = entry.clone();
        c["name"] = list["name"].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        let mut rc = serde_json::Map::new();
        if let Some(declared) = entry["capabilities"].as_object() {
            for (cap, on) in declared {
                if on.as_bool() == Some(true) && caps.get(cap).is_some() {
                    rc.insert(cap.clone(), caps[cap].clone());
                }
            }
        }
        if !rc.is_empty() {
            c["runtimeConfig"] = Value::Object(rc);
        }
        c
    }

    fn add(&self, list: &Value, caps: &Value) -> Value {
        let mut prev: Option<Value> = None;
        for entry in list["plugins"].as_array().unwrap() {
            let conf = self.conf(list, entry, prev.as_ref(), caps);
            prev = Some(self.exec("ADD", &conf).unwrap_or_else(|e| panic!("{e}")));
        }
        prev.unwrap()
    }

    fn del(&self, list: &Value, caps: &Value, result: &Value) {
        for entry in list["plugins"].as_array().unwrap().iter().rev() {
            let conf = self.conf(list, entry, Some(result), caps);
            self.exec("DEL", &conf).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Kubernetes quantity → integer (what containerd's `ParseQuantity(..).Value()` gives for
/// the values netqos writes).
fn quantity(q: &str) -> u64 {
    let units: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

/// The annotation values of the `annotations` artefact (first limit).
fn annotation(yaml: &str, key: &str) -> u64 {
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("{key} not in\n{yaml}"));
    quantity(line.split(':').nth(1).unwrap().trim().trim_matches('"'))
}

/// `runtimeConfig.bandwidth` as containerd builds it (untagged Go struct, so capitalised
/// keys), with its 4294967295-bit burst unless `burst` says otherwise.
fn containerd_caps(ingress: u64, egress: u64, burst: u64) -> Value {
    json!({"bandwidth": {
        "IngressRate": ingress, "IngressBurst": burst,
        "EgressRate": egress, "EgressBurst": burst,
    }})
}

fn host_veth(host: &Netns, result: &Value) -> String {
    let name = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i.get("sandbox").is_none_or(|s| s.as_str() == Some(""))
                && i["name"].as_str().unwrap().starts_with("veth")
        })
        .and_then(|i| i["name"].as_str())
        .unwrap()
        .to_string();
    assert!(host.ok(&format!("ip link show dev {name}")).contains(&name));
    name
}

fn pod_ip(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

/// iperf3 for 3 s from host to pod (`reverse`: pod to host), every step under a timeout:
/// received Mbit/s in the first second and over the whole run, measured where the data
/// arrives (the server into the pod, the client with -R out of it).
fn iperf(host: &Netns, pod: &Netns, ip: &str, port: u16, reverse: bool) -> (f64, f64) {
    let port = port.to_string();
    let mut server = pod
        .command("timeout")
        .args(["20", "iperf3", "-s", "-1", "-J", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut client = host.command("timeout");
    client.args([
        "-k", "5", "25", "iperf3", "-c", ip, "-t", "3", "-J", "-w", "64K", "-p", &port,
    ]);
    client.arg(if reverse { "-R" } else { "--get-server-output" });
    let out = client.output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let receiver = if reverse {
        &v
    } else {
        &v["server_output_json"]
    };
    let first = receiver["intervals"][0]["sum"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no first interval: {v}"));
    let total = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    (first / 1e6, total / 1e6)
}

#[test]
fn the_real_bandwidth_plugin_shapes_pods_only_with_the_patch() {
    let Some(bin) = plugin_dir() else {
        skip_unless_required(
            "NETQOS_REQUIRE_NETNS",
            "the CNI plugins are missing (.ci/run installs containernetworking-plugins)",
        );
        return;
    };
    if !kernel_tool("iperf3", "iperf3") {
        return;
    }
    let _serial = crate::traffic::serial();
    let work = TempDir::new("cni-run");

    // Seed 000's pod: `1M` both ways, compiled from a policy into annotations.
    let policy = work.write(
        "seed000.nq",
        "netqos 1\n\npods {\n    cni flannel\n    limit app=iperf ingress 1mbit egress 1mbit\n}\n",
    );
    // The stand-in node conflist: flannel's default chain with ptp in flannel's place.
    let flannel: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/conflists/flannel-upstream.conflist"))
            .unwrap(),
    )
    .unwrap();
    let mut standin = flannel.clone();
    standin["plugins"][0] = json!({
        "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/24",
                 "dataDir": work.join("ipam").display().to_string()}
    });
    let conf_path = work.write(
        "10-standin.conflist",
        serde_json::to_string_pretty(&standin).unwrap(),
    );
    let out_dir = work.join("out");
    cli(["compile"])
        .arg(&policy)
        .arg("-o")
        .arg(&out_dir)
        .arg("--conflist")
        .arg(&conf_path)
        .args(["--allow", "NQ066"])
        .code(0);
    let patched: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("conflist/10-flannel.conflist")).unwrap(),
    )
    .unwrap();
    // The same change netqos makes to the real flannel default: the entry at /plugins/1.
    let (o, _) = netqos::cni::conflist::analyse(
        &std::fs::read_to_string(root().join("tests/fixtures/conflists/flannel-upstream.conflist"))
            .unwrap(),
        true,
    );
    let Some(netqos::cni::conflist::Outcome::Patch(flannel_patch)) = o else {
        panic!()
    };
    assert_eq!(flannel_patch.index, 1);
    assert_eq!(
        patched["plugins"][1],
        netqos::cni::conflist::bandwidth_entry()
    );
    let ann = std::fs::read_to_string(out_dir.join("annotations.yaml")).unwrap();
    let (ing, eg) = (
        annotation(&ann, "kubernetes.io/ingress-bandwidth"),
        annotation(&ann, "kubernetes.io/egress-bandwidth"),
    );
    assert_eq!((ing, eg), (1_000_000, 1_000_000));

    let Some(host) = Netns::new("cnirun-host") else {
        return;
    };
    let Some(pod) = Netns::new("cnirun-pod") else {
        return;
    };
    let run = |id: &'static str| Runtime {
        bin: &bin,
        host: &host,
        pod: &pod,
        container_id: id,
    };

    // 1. Without the patch (the seed's node): the annotations reach no plugin.
    let caps = containerd_caps(ing, eg, 4_294_967_295);
    let rt = run("unpatched0001");
    let result = rt.add(&standin, &caps);
    let veth = host_veth(&host, &result);
    let qdiscs = host.ok(&format!("tc qdisc show dev {veth}"));
    assert!(
        !qdiscs.contains("tbf"),
        "unpatched chain shaped the pod: {qdiscs}"
    );
    assert!(
        !host.ok("ip -o link show").contains("bwp"),
        "no IFB without the patch"
    );
    rt.del(&standin, &caps, &result);

    // 2. With the patch and containerd's burst: the seed's exact qdisc, and a short transfer
    //    far above the limit.
    let rt = run("patchedburst01");
    let result = rt.add(&patched, &caps);
    let veth = host_veth(&host, &result);
    let qdiscs = host.ok(&format!("tc qdisc show dev {veth}"));
    assert!(
        qdiscs.contains("qdisc tbf 1: root") && qdiscs.contains("rate 1Mbit"),
        "{qdiscs}"
    );
    assert!(
        qdiscs.contains("burst 21474835b"),
        "containerd's wrapped burst: {qdiscs}"
    );
    assert!(qdiscs.contains("qdisc ingress ffff:"), "{qdiscs}");
    let links = host.ok("ip -o link show type ifb");
    let ifb = links
        .split_whitespace()
        .find(|w| w.starts_with("bwp"))
        .unwrap_or_else(|| panic!("no bwp IFB: {links}"))
        .trim_end_matches(':')
        .to_string();
    assert!(
        host.ok(&format!("tc qdisc show dev {ifb}"))
            .contains("rate 1Mbit")
    );
    let ip = pod_ip(&result);
    let (_, to_pod) = iperf(&host, &pod, &ip, 5311, false);
    let (_, from_pod) = iperf(&host, &pod, &ip, 5312, true);
    eprintln!(
        "containerd burst, 1M limit: to pod {to_pod:.2} Mbit/s, from pod {from_pod:.2} Mbit/s"
    );
    assert!(
        to_pod > 5.0 && from_pod > 5.0,
        "the runtime's burst passes unshaped: {to_pod} / {from_pod}"
    );
    rt.del(&patched, &caps, &result);
    assert!(
        !host.ok("ip -o link show").contains(&ifb),
        "DEL removes the IFB"
    );

    // 3. The same limit with a 100 kbit burst: 1 Mbit/s both ways.
    let caps = containerd_caps(ing, eg, 100_000);
    let rt = run("patchedshape01");
    let result = rt.add(&patched, &caps);
    let ip = pod_ip(&result);
    let (_, to_pod) = iperf(&host, &pod, &ip, 5313, false);
    let (_, from_pod) = iperf(&host, &pod, &ip, 5314, true);
    eprintln!("100 kbit burst, 1M limit: to pod {to_pod:.3} Mbit/s, from pod {from_pod:.3} Mbit/s");
    for r in [to_pod, from_pod] {
        assert!(
            r > 0.5 && r <= 1.1,
            "shaped to 1 Mbit/s (TCP rounding allowed): {to_pod} / {from_pod}"
        );
    }
    rt.del(&patched, &caps, &result);
    assert!(!host.ok("ip -o link show").contains("bwp"), "no IFB left");

    // 4. netqos's patch for `burst 20ms`, under containerd's own burst: the netqos entry
    //    right after bandwidth sets the bucket, and the limit holds from the first byte.
    let nq_policy = work.write(
        "burst.nq",
        "netqos 1\n\npods {\n    cni flannel\n    burst 20ms\n    limit app=iperf ingress 1mbit egress 1mbit\n}\n",
    );
    let nq_out = work.join("out-burst");
    cli(["compile"])
        .arg(&nq_policy)
        .arg("-o")
        .arg(&nq_out)
        .arg("--conflist")
        .arg(&conf_path)
        .code(0);
    let with_netqos: Value = serde_json::from_str(
        &std::fs::read_to_string(nq_out.join("conflist/10-flannel.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        with_netqos["plugins"][2],
        json!({"type": "netqos", "burst": "20ms", "capabilities": {"bandwidth": true}})
    );
    let chain_bin = work.join("bin");
    std::fs::create_dir_all(&chain_bin).unwrap();
    for p in ["ptp", "host-local", "bandwidth", "portmap"] {
        std::os::unix::fs::symlink(bin.join(p), chain_bin.join(p)).unwrap();
    }
    std::fs::copy(netqos_bin(), chain_bin.join("netqos")).unwrap();
    let caps = containerd_caps(ing, eg, 4_294_967_295);
    let rt = Runtime {
        bin: &chain_bin,
        host: &host,
        pod: &pod,
        container_id: "netqosburst01",
    };
    let result = rt.add(&with_netqos, &caps);
    let veth = host_veth(&host, &result);
    let qdiscs = host.ok(&format!("tc qdisc show dev {veth}"));
    assert!(qdiscs.contains("rate 1Mbit burst 2500b "), "{qdiscs}");
    let ip = pod_ip(&result);
    let (first_in, total_in) = iperf(&host, &pod, &ip, 5315, false);
    let (first_out, total_out) = iperf(&host, &pod, &ip, 5316, true);
    eprintln!(
        "netqos burst 20ms under containerd's burst, 1M: into the pod {first_in:.3} Mbit/s in the first second, {total_in:.3} over 3 s; out of it {first_out:.3}, {total_out:.3}"
    );
    for (first, total) in [(first_in, total_in), (first_out, total_out)] {
        assert!(
            first <= 1.25,
            "first second {first} Mbit/s above 1.25 × the limit"
        );
        assert!(
            (0.9..=1.1).contains(&total),
            "3 s average {total} Mbit/s not within 10 % of the limit"
        );
    }
    rt.del(&with_netqos, &caps, &result);
    assert!(!host.ok("ip -o link show").contains("bwp"), "no IFB left");
}
