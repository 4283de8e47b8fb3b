//! containerd's own CRI plugin, the whole runtime path of a Kubernetes pod: containerd
//! (Debian's, as `.ci/run` installs it) runs inside a network namespace made here, with its
//! root, state, sockets, runc root and CNI dirs in a scratch directory; a sandbox image is
//! built here (a static binary that only pauses, packed as an OCI archive: nothing can be
//! pulled); pod sandboxes are made through CRI `RunPodSandbox` with the annotations of
//! netqos's `annotations` artefact (`tests/cri/cri.py`, a small gRPC client); the conflist
//! is swapped the way containerd reloads it (rename inside the directory, then wait for
//! `Status` to list the plugins). `ptp` stands in for flannel (not packaged).
//!
//! Proves, for a pod annotated `1M` both ways: without the patch, no tbf; with bandwidth
//! only, the seed's `burst 21474835b lat 4.12e+03s` and a first second far above the limit;
//! with netqos's patch (`burst 20ms`), at most 1.25 Mbit in the first second each way and
//! about 1 Mbit/s over three, and the plugin's line in containerd's log. Everything is
//! removed: pods through CRI, containerd by its PID, mounts, the namespace. `Lab`
//! (`new`, `start`, `import`, `cri`) is also the harness of `tests/image.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const IMAGE: &str = "localhost/pause:test";
const PLUGINS: &[&str] = &["ptp", "host-local", "bandwidth", "portmap", "loopback"];

fn system_plugins() -> Option<PathBuf> {
    ["/usr/lib/cni", "/opt/cni/bin"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| PLUGINS.iter().all(|p| d.join(p).exists()))
}

/// Runs `cmd` under `timeout SECS`; (ok, stdout, stderr).
pub fn run(secs: u32, cmd: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("-k")
        .arg("5")
        .arg(secs.to_string())
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("timeout runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn must(secs: u32, cmd: &[&str]) -> String {
    let (ok, out, err) = run(secs, cmd);
    assert!(ok, "{cmd:?}: {out}{err}");
    out
}

/// The scratch world: namespace, containerd, pods. Dropping it removes everything.
pub struct Lab {
    pub ns: String,
    pub dir: PathBuf,
    containerd: Option<Child>,
    /// Sandboxes to stop and remove (with their containers) when the lab is dropped.
    pub pods: Vec<String>,
}

impl Lab {
    /// The scratch directory `/tmp/PREFIX-PID` (with `bin`, `net.d`, `ipam`, `work`) and
    /// the namespace name `PREFIX-PID`; nothing runs yet.
    pub fn new(prefix: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            ns: format!("{prefix}-{pid}"),
            dir: PathBuf::from(format!("/tmp/{prefix}-{pid}")),
            containerd: None,
            pods: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        for d in ["bin", "net.d", "ipam", "work"] {
            std::fs::create_dir_all(lab.dir.join(d)).unwrap();
        }
        lab
    }

    /// The namespace, containerd in it (bounded wait for its socket), and the sandbox
    /// image imported.
    pub fn start(&mut self) {
        let config = self.dir.join("config.toml");
        std::fs::write(&config, containerd_config(&self.dir)).unwrap();
        must(10, &["ip", "netns", "add", &self.ns]);
        self.in_ns(10, "ip link set lo up");
        let log = std::fs::File::create(self.dir.join("containerd.log")).unwrap();
        self.containerd = Some(
            // nsenter, not `ip netns exec`: that one remounts /sys for the namespace, which
            // hides the cgroup mounts runc needs ("no cgroup mount found in mountinfo").
            Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", self.ns))
                .args(["containerd", "--config", config.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cri(&["version"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let image = build_image(&self.dir.join("work"));
        self.import(&image);
    }

    /// `ctr -n k8s.io images import ARCHIVE` into this lab's containerd.
    pub fn import(&self, archive: &Path) -> String {
        must(
            120,
            &[
                "ctr",
                "-a",
                &self.sock(),
                "-n",
                "k8s.io",
                "images",
                "import",
                archive.to_str().unwrap(),
            ],
        )
    }

    fn sock(&self) -> String {
        self.dir.join("c.sock").display().to_string()
    }

    pub fn cri(&self, args: &[&str]) -> Result<Value, String> {
        let script = root().join("tests/cri/cri.py");
        let sock = self.sock();
        let mut cmd = vec!["/usr/bin/python3", script.to_str().unwrap(), sock.as_str()];
        cmd.extend(args);
        let (ok, out, err) = run(90, &cmd);
        if !ok {
            return Err(format!("cri {args:?}: {err}{out}"));
        }
        serde_json::from_str(&out).map_err(|e| format!("cri {args:?}: {e}: {out}"))
    }

    pub fn in_ns(&self, secs: u32, cmd: &str) -> String {
        must(secs, &["ip", "netns", "exec", &self.ns, "sh", "-c", cmd])
    }

    /// Installs `conflist` the way containerd reloads it: a temporary file in the directory
    /// (a name it does not load), renamed onto the conflist; then waits until `Status`
    /// lists exactly these plugin types.
    fn swap_conflist(&self, conflist: &Value) {
        let dir = self.dir.join("net.d");
        let tmp = dir.join("10-test.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(conflist).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join("10-test.conflist")).unwrap();
        let want: Vec<String> = conflist["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap().to_string())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.cri(&["status"]).unwrap_or(Value::Null);
            if loaded_types(&status) == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not load {want:?}: {status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn run_pod(&mut self, name: &str, annotations: &Value) -> Pod {
        let out = self
            .cri(&[
                "run",
                name,
                &format!("uid-{name}"),
                &annotations.to_string(),
            ])
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log()));
        let id = out["id"].as_str().unwrap().to_string();
        self.pods.push(id.clone());
        let status = self.cri(&["inspect", &id]).unwrap();
        let info: Value = serde_json::from_str(status["info"]["info"].as_str().unwrap()).unwrap();
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .and_then(|n| n["path"].as_str())
            .unwrap()
            .to_string();
        let ip = status["ip"].as_str().unwrap().to_string();
        // The host veth: the ptp route to the pod's address goes through it.
        let route = self.in_ns(10, &format!("ip -o route get {ip}"));
        let veth = route
            .split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .unwrap()
            .to_string();
        Pod {
            id,
            ip,
            netns,
            veth,
        }
    }

    fn remove_pod(&mut self, pod: &Pod) {
        self.cri(&["stop", &pod.id]).unwrap();
        self.cri(&["remove", &pod.id]).unwrap();
        self.pods.retain(|p| *p != pod.id);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// iperf3 for 3 s into the pod (`reverse`: out of it), measured where the data
    /// arrives: (first second, whole run) in Mbit/s.
    fn iperf(&self, pod: &Pod, port: u16, reverse: bool) -> (f64, f64) {
        let port = port.to_string();
        let mut server = Command::new("timeout")
            .args(["20", "nsenter", &format!("--net={}", pod.netns)])
            .args(["iperf3", "-s", "-1", "-J", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let mut args = vec![
            "ip", "netns", "exec", &self.ns, "iperf3", "-c", &pod.ip, "-p", &port, "-t", "3", "-w",
            "64K", "-J",
        ];
        args.push(if reverse { "-R" } else { "--get-server-output" });
        let (_, out, err) = run(25, &args);
        let _ = server.kill();
        let _ = server.wait();
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3: {e}: {out}{err}"));
        // Into the pod the server receives; out of it (-R) the client does.
        let receiver = if reverse {
            v.clone()
        } else {
            v["server_output_json"].clone()
        };
        let first = receiver["intervals"][0]["sum"]["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("no interval: {out}"));
        let total = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap();
        (first / 1e6, total / 1e6)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.pods) {
            let _ = self.cri(&["stop", &id]);
            let _ = self.cri(&["remove", &id]);
        }
        if let Some(mut c) = self.containerd.take() {
            let pid = rustix::process::Pid::from_child(&c);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever is still in the namespace was started by this test (shims, iperf3).
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        }
        if let Ok(o) = Command::new("findmnt")
            .args(["-rn", "-o", "TARGET"])
            .output()
        {
            let mut mounts: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|m| m.starts_with(self.dir.to_str().unwrap()))
                .map(str::to_string)
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = Command::new("umount").args(["-l", &m]).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Pod {
    id: String,
    ip: String,
    netns: String,
    veth: String,
}

/// The plugin types of the first network in `Status(verbose)`'s CNI config.
fn loaded_types(status: &Value) -> Vec<String> {
    let Some(cfg) = status["cniconfig"].as_str() else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(cfg).unwrap_or(Value::Null);
    // The loopback network comes first; ours is the last.
    v["Networks"]
        .as_array()
        .and_then(|n| n.last())
        .and_then(|n| n["Config"]["Plugins"].as_array())
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["Network"]["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A one-layer OCI image archive whose only file is a static `/pause`.
fn build_image(dir: &Path) -> PathBuf {
    let src = dir.join("pause.c");
    std::fs::write(
        &src,
        "#include <unistd.h>\n#include <signal.h>\n#include <stdlib.h>\nstatic void bye(int s) { (void)s; exit(0); }\nint main(void) { signal(SIGTERM, bye); signal(SIGINT, bye); for (;;) pause(); }\n",
    )
    .unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    must(
        60,
        &[
            "gcc",
            "-static",
            "-O2",
            "-o",
            rootfs.join("pause").to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let layer_path = dir.join("layer.tar");
    must(
        30,
        &[
            "tar",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            layer_path.to_str().unwrap(),
            "pause",
        ],
    );
    let layer = std::fs::read(&layer_path).unwrap();
    let oci = dir.join("oci");
    let blobs = oci.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let h = sha256(data);
        std::fs::write(blobs.join(&h), data).unwrap();
        (format!("sha256:{h}"), data.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    })
    .to_string();
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    })
    .to_string();
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size,
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "test"}
    }]});
    std::fs::write(oci.join("index.json"), index.to_string()).unwrap();
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = dir.join("image.tar");
    must(
        30,
        &[
            "tar",
            "-C",
            oci.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            "oci-layout",
            "index.json",
            "blobs",
        ],
    );
    archive
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  netns_mounts_under_state_dir = true
  # This machine may not lower oom_score_adj (the sandbox asks for -998).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/bin"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
"#
    )
}

/// Every tool the test needs; in CI (`NETQOS_REQUIRE_NETNS`) a missing one fails it.
pub fn tools_present() -> bool {
    let need = [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("gcc", "gcc"),
        ("iperf3", "iperf3"),
        ("nsenter", "util-linux"),
    ];
    let mut ok = need.iter().all(|(t, p)| {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipping: {t} is missing ({p})");
        }
        found
    });
    let grpc = Command::new("/usr/bin/python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !grpc {
        eprintln!("skipping: python3-grpcio is missing");
        ok = false;
    }
    if system_plugins().is_none() {
        eprintln!("skipping: the CNI plugins are missing (containernetworking-plugins)");
        ok = false;
    }
    assert!(
        ok || std::env::var_os("NETQOS_REQUIRE_NETNS").is_none(),
        "NETQOS_REQUIRE_NETNS is set: .ci/run installs containerd, runc, gcc, python3-grpcio"
    );
    ok
}

/// Compiles `policy` against `conflist` into `out`: (patched conflist, annotations of the
/// first limit as the pod's sandbox annotations).
fn compile(dir: &Path, name: &str, policy: &str, conflist: &Path) -> (Value, Value) {
    let p = dir.join(format!("{name}.nq"));
    std::fs::write(&p, policy).unwrap();
    let out = dir.join(format!("out-{name}"));
    let o = netqos(
        &[
            "compile",
            p.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--conflist",
            conflist.to_str().unwrap(),
            "--allow",
            "NQ066",
        ],
        &root(),
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let patched: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("conflist/10-test.conflist")).unwrap(),
    )
    .unwrap();
    let ann = std::fs::read_to_string(out.join("annotations.yaml")).unwrap();
    let mut annotations = serde_json::Map::new();
    for key in [
        "kubernetes.io/ingress-bandwidth",
        "kubernetes.io/egress-bandwidth",
    ] {
        let line = ann
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap();
        let v = line.split_once(':').unwrap().1.trim().trim_matches('"');
        annotations.insert(key.to_string(), json!(v));
    }
    (patched, Value::Object(annotations))
}

#[test]
fn containerds_cri_plugin_holds_pod_limits_from_the_first_byte_only_with_netqos() {
    if !tools_present() {
        return;
    }
    let Some(sys) = system_plugins() else { return };
    let _serial = crate::traffic::serial();
    let mut lab = Lab::new("nqcri");
    let work = lab.dir.join("work");
    for p in PLUGINS {
        std::os::unix::fs::symlink(sys.join(p), lab.dir.join("bin").join(p)).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_netqos"), lab.dir.join("bin/netqos")).unwrap();

    // The stand-in node conflist: flannel's chain with ptp in flannel's place.
    let mut standin: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/conflists/flannel-upstream.conflist"))
            .unwrap(),
    )
    .unwrap();
    standin["cniVersion"] = json!("1.0.0");
    standin["plugins"][0] = json!({"type": "ptp", "ipam": {"type": "host-local", "subnet": "10.97.0.0/24",
        "dataDir": lab.dir.join("ipam").display().to_string()}});
    let standin_path = work.join("10-test.conflist");
    std::fs::write(
        &standin_path,
        serde_json::to_string_pretty(&standin).unwrap(),
    )
    .unwrap();
    let pods = "netqos 1\n\npods {\n    cni file \"/etc/cni/net.d/10-test.conflist\"\n    limit app=iperf ingress 1mbit egress 1mbit\n}\n";
    let (bandwidth_only, annotations) = compile(&work, "bw", pods, &standin_path);
    let (with_netqos, _) = compile(
        &work,
        "nq",
        &pods.replace("    limit", "    burst 20ms\n    limit"),
        &standin_path,
    );
    assert_eq!(annotations["kubernetes.io/ingress-bandwidth"], json!("1M"));
    assert_eq!(with_netqos["plugins"][2]["type"], json!("netqos"));

    // containerd in its own namespace, the unpatched conflist in place before it starts.
    std::fs::write(
        lab.dir.join("net.d/10-test.conflist"),
        serde_json::to_string_pretty(&standin).unwrap(),
    )
    .unwrap();
    lab.start();
    lab.swap_conflist(&standin);

    // 1. Without the patch: the annotations reach no plugin.
    let pod = lab.run_pod("plain", &annotations);
    let q = lab.in_ns(10, &format!("tc qdisc show dev {}", pod.veth));
    assert!(!q.contains("tbf"), "unpatched chain shaped the pod: {q}");
    lab.remove_pod(&pod);

    // 2. bandwidth only: the seed's qdisc, and the runtime's bucket passes at full speed.
    lab.swap_conflist(&bandwidth_only);
    let pod = lab.run_pod("bwonly", &annotations);
    let q = lab.in_ns(10, &format!("tc qdisc show dev {}", pod.veth));
    assert!(
        q.contains("rate 1Mbit burst 21474835b lat 4.12e+03s"),
        "{q}"
    );
    let (first_in, _) = lab.iperf(&pod, 5401, false);
    let (first_out, _) = lab.iperf(&pod, 5402, true);
    eprintln!(
        "bandwidth only, 1M: first second into the pod {first_in:.1} Mbit/s, out of it {first_out:.1}"
    );
    assert!(
        first_in > 5.0 && first_out > 5.0,
        "{first_in} / {first_out}"
    );
    lab.remove_pod(&pod);
    assert!(
        !lab.in_ns(10, "ip -o link show").contains("bwp"),
        "DEL removed the IFB"
    );

    // 3. netqos's patch: the limit holds from the first byte.
    lab.swap_conflist(&with_netqos);
    let pod = lab.run_pod("netqos", &annotations);
    let q = lab.in_ns(10, &format!("tc qdisc show dev {}", pod.veth));
    assert!(q.contains("rate 1Mbit burst 2500b "), "{q}");
    let (first_in, total_in) = lab.iperf(&pod, 5403, false);
    let (first_out, total_out) = lab.iperf(&pod, 5404, true);
    eprintln!(
        "netqos burst 20ms, 1M: into the pod first second {first_in:.3} Mbit/s, 3 s {total_in:.3}; out of it {first_out:.3}, {total_out:.3}"
    );
    for (first, total) in [(first_in, total_in), (first_out, total_out)] {
        assert!(
            first <= 1.25,
            "first second {first} Mbit/s > 1.25 × the limit"
        );
        assert!(
            (0.9..=1.1).contains(&total),
            "3 s average {total} Mbit/s not within 10 % of 1"
        );
    }
    assert!(
        lab.log().contains(&format!("netqos: sandbox {}", pod.id)),
        "the plugin's line is in containerd's log:\n{}",
        lab.log()
    );
    lab.remove_pod(&pod);
    assert!(
        !lab.in_ns(10, "ip -o link show").contains("bwp"),
        "no IFB left"
    );

    // 4. The other path: netqos cannot adjust a tbf (chained before bandwidth, so there is
    //    none yet). The sandbox is refused with the plugin's error, in the CRI answer and
    //    in containerd's log, and containerd's teardown leaves nothing behind.
    let mut misplaced = with_netqos.clone();
    let plugins = misplaced["plugins"].as_array_mut().unwrap();
    let entry = plugins.remove(2);
    plugins.insert(1, entry);
    lab.swap_conflist(&misplaced);
    let err = lab
        .cri(&["run", "refused", "uid-refused", &annotations.to_string()])
        .expect_err("the sandbox is refused");
    assert!(
        err.contains("plugin type=\"netqos\" failed (add): no IFB bwp"),
        "{err}"
    );
    assert!(
        lab.log().contains("failed (add): no IFB bwp"),
        "the refusal is in containerd's log"
    );
    assert!(
        !lab.in_ns(10, "ip -o link show").contains("bwp"),
        "the failed sandbox left an IFB"
    );
}
