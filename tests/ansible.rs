//! `examples/ansible/`: the playbook run by the real `ansible-playbook` (ansible-core).
//!
//! All at once, against localhost over a local connection, deploying into a temporary
//! root: check mode reports the deploy and changes nothing on the node, the real run
//! deploys exactly the compiled artefacts, a second run reports no change, and a host
//! variable that makes the policy invalid fails the play with the diagnostic.
//!
//! Rolling mode, against three nodes that are network namespaces (see [`Fleet`]): a canary
//! whose API server probe fails stops the rollout and ends exactly as before, the later
//! batches untouched; then a canary that passes its probe but fails its health gate is
//! rolled back and stops the rollout too; with both fixed the rollout converges batch by
//! batch; a last run changes nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use crate::support::*;

fn inventory(link: &str) -> String {
    format!(
        "nodes:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: \"{{{{ ansible_playbook_python }}}}\"\n      netqos_uplink: eth1\n      netqos_link: {link}\n      netqos_control_plane: [10.0.0.10, 10.0.0.11]\n"
    )
}

/// `ansible-playbook` bounded in time (every task has its own `timeout` as well), with
/// its state under `d` and no colour.
fn ansible(d: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=10", "600", "ansible-playbook"])
        .env("LC_ALL", "C.UTF-8")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_PIPELINING", "1")
        .env("ANSIBLE_HOME", d.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", d.join("ansible-home/tmp"))
        .env("NO_COLOR", "1");
    c
}

fn play(d: &Path, extra: &[&str]) -> Output {
    ansible(d)
        .arg("-i")
        .arg(d.join("inventory.yml"))
        .arg(d.join("playbook/playbook.yml"))
        .arg("-e")
        .arg(format!("netqos={}", netqos_bin()))
        .arg("-e")
        .arg(format!("netqos_root={}", d.join("node").display()))
        .args(["-e", "netqos_enable=false"])
        .args(extra)
        .output()
        .expect("ansible-playbook runs")
}

/// `(changed, failed)` from the PLAY RECAP line of localhost.
fn recap(o: &Output) -> (u32, u32) {
    host_recap(o, "localhost").unwrap_or_else(|| panic!("no recap of localhost:\n{}", text(o)))
}

/// `(changed, failed)` from the PLAY RECAP line of `host`, `None` when it did not run.
fn host_recap(o: &Output, host: &str) -> Option<(u32, u32)> {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(host) && l.contains("changed="))?;
    let field = |name: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    Some((field("changed="), field("failed=")))
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

// ---------------------------------------------------------------------------------------
// Rolling mode

/// An "API server": accepts every connection and closes it.
const LISTENER: &str = "import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
while True:
    c, _ = s.accept()
    c.close()
";

/// One node: the namespace `node` (its uplink `eth0`, 10.77.N.2/24) is the machine; a veth
/// pair joins it to `api` (10.77.N.1/24), where its API server listens on 6443 once
/// [`Fleet::serve`] starts it. Its files (state directory, deployed artefacts) live under
/// `root`, its `netqos_root`.
struct Node {
    name: String,
    apiserver: String,
    node: Netns,
    api: Netns,
    root: PathBuf,
}

impl Node {
    fn state(&self) -> PathBuf {
        self.root.join("var/lib/netqos")
    }

    /// Every qdisc, class and filter of every device, and the links (no counters).
    fn tc(&self) -> String {
        self.node.ok(
            "for d in $(ls /sys/class/net); do echo \"== $d\"; tc qdisc show dev $d; \
             tc class show dev $d; tc filter show dev $d; tc filter show dev $d ingress; \
             done; ip -br link",
        )
    }

    /// Every file under `root`, by relative path.
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![self.root.clone()];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.map(Result::unwrap) {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    let rel = p.strip_prefix(&self.root).unwrap();
                    out.insert(rel.display().to_string(), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    /// `netqos status --format json` of the node.
    fn status(&self) -> serde_json::Value {
        let st = self.state();
        let ran = self
            .node
            .netqos(["status", "--format", "json", "--state-dir"])
            .arg(&st)
            .run()
            .code(0);
        serde_json::from_str(&ran.stdout()).unwrap()
    }
}

/// Three nodes, each a network namespace with its own API server in a peer namespace. The
/// playbook reaches a node over a local connection whose Python interpreter is a wrapper
/// that runs `ip netns exec NODE python3`: every module Ansible runs on the node (`command`,
/// `wait_for`, `copy`) runs in the node's network namespace, as it would over SSH on a real
/// machine, so the playbook is the one a fleet uses, unchanged; the build steps delegated
/// to localhost run in the test's namespace, as on a controller.
struct Fleet {
    d: TempDir,
    nodes: Vec<Node>,
    /// The API servers started, stopped on drop (before the namespaces go).
    servers: Vec<Child>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Fleet {
    fn new() -> Option<Fleet> {
        let d = TempDir::new("fleetansible");
        let mut nodes = Vec::new();
        let mut inv = String::from("nodes:\n  hosts:\n");
        for n in 1..=3 {
            let node = Netns::new(&format!("fleetansible-n{n}"))?;
            let (a, p) = (format!("10.77.{n}.2/24"), format!("10.77.{n}.1/24"));
            let api = node.peer(&format!("fleetansible-a{n}"), "eth0", &a, "eth0", &p)?;
            let name = format!("node{n}");
            let python = d.write(
                &format!("python-{name}"),
                format!(
                    "#!/bin/sh\nexec ip netns exec {} python3 \"$@\"\n",
                    node.name()
                ),
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
            let root = d.join(&name);
            // The canary's own health check passes once the test creates the file.
            let check = d.join(format!("{name}-healthy"));
            writeln!(
                inv,
                "    {name}:\n      ansible_connection: local\n      ansible_python_interpreter: {}\n      \
                 netqos_root: {}\n      netqos_uplink: eth0\n      netqos_link: {n}gbit\n      \
                 netqos_control_plane: [10.77.{n}.1]\n      \
                 netqos_health_checks: [[test, -e, {}]]",
                python.display(),
                root.display(),
                check.display()
            )
            .unwrap();
            nodes.push(Node {
                name,
                apiserver: format!("10.77.{n}.1"),
                node,
                api,
                root,
            });
        }
        d.write("inventory.yml", inv);
        let st = Command::new("cp")
            .arg("-r")
            .arg(root().join("examples/ansible"))
            .arg(d.join("playbook"))
            .status()
            .unwrap();
        assert!(st.success());
        let _ = std::fs::remove_dir_all(d.join("playbook/build"));
        Some(Fleet {
            d,
            nodes,
            servers: Vec::new(),
        })
    }

    /// Starts node `i`'s API server and waits until it listens.
    fn serve(&mut self, i: usize) {
        let n = &self.nodes[i];
        let addr = &n.apiserver;
        let server = n.api.spawn(&["python3", "-c", LISTENER, addr, "6443"]);
        self.servers.push(server);
        for _ in 0..100 {
            if n.api.ok("ss -Hltn").contains(&format!("{addr}:6443")) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the API server of {} does not listen", n.name);
    }

    /// The playbook in rolling mode (default batches: 1, 30 %, the rest).
    fn play(&self) -> Output {
        let bin = netqos_bin();
        ansible(&self.d)
            .arg("-i")
            .arg(self.d.join("inventory.yml"))
            .arg(self.d.join("playbook/playbook.yml"))
            .args(["-e", &format!("netqos={bin}")])
            .args(["-e", &format!("netqos_node_bin={bin}")])
            .args(["-e", "netqos_enable=false", "-e", "netqos_rolling=true"])
            .args(["-e", "netqos_soak=1", "-e", "netqos_probe_timeout=2"])
            .output()
            .unwrap()
    }

    fn snapshot(&self) -> Snapshot {
        self.nodes.iter().map(|n| (n.tc(), n.files())).collect()
    }
}

/// Per node: its tc dump ([`Node::tc`]) and its files ([`Node::files`]).
type Snapshot = Vec<(String, BTreeMap<String, Vec<u8>>)>;

/// The files of a node's root without the state directory's lock (it holds the pid of the
/// last command) and revert log.
fn durable(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .filter(|(k, _)| !k.ends_with("netqos/lock") && !k.ends_with("netqos/revert.log"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The outcome records (`txn/ID.outcome`) in `after` and not in `before`.
fn new_outcomes(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(k, _)| k.ends_with(".outcome") && !before.contains_key(*k))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
        .collect()
}

#[test]
fn rolling_rollout_stops_at_a_failing_canary_and_converges_once_healthy() {
    if !tool("ansible-playbook", "ansible-core (pip)") {
        return;
    }
    let Some(mut f) = Fleet::new() else {
        return;
    };
    let policy = f.d.join("playbook/policy.nq");
    // The canary (first in the inventory) already runs an older version of the policy; the
    // other nodes run none. Its API server is down: its probe will fail.
    let canary = &f.nodes[0];
    canary
        .node
        .netqos(["apply", "-q", "--state-dir"])
        .arg(canary.state())
        .args(["--var", "uplink=eth0", "--var", "link=500mbit"])
        .args(["--var", "control_plane=10.77.1.1"])
        .arg(&policy)
        .run()
        .code(0);
    f.serve(1);
    f.serve(2);
    let before = f.snapshot();
    assert!(before[0].0.contains("rate 500Mbit"), "{}", before[0].0);

    let after = probe_failure_stops_at_the_canary(&f, &before);

    // The API server is back, but the canary's own health check fails after the apply.
    f.serve(0);
    let refused = gate_refuses_the_canary(&f, &after);

    // Healthy: the rollout goes through every batch.
    for n in &f.nodes {
        f.d.write(&format!("{}-healthy", n.name), "");
    }
    converges(&f, &refused);
    let converged = f.snapshot();

    let last = f.play();
    assert!(last.status.success(), "{}", text(&last));
    for (i, n) in f.nodes.iter().enumerate() {
        assert_eq!(host_recap(&last, &n.name), Some((0, 0)), "{}", text(&last));
        assert_eq!(converged[i].0, f.nodes[i].tc(), "{}: tc unchanged", n.name);
        assert_eq!(durable(&converged[i].1), durable(&n.files()), "{}", n.name);
    }
}

/// The first run: the canary's probe fails, so netqos undoes its apply and the playbook
/// stops. The canary's tc dump and undo point are exactly as before (netqos only added the
/// record of the attempt it undid); the later nodes never started.
fn probe_failure_stops_at_the_canary(f: &Fleet, before: &Snapshot) -> Snapshot {
    let first = f.play();
    assert!(!first.status.success(), "{}", text(&first));
    assert_eq!(
        host_recap(&first, "node1").map(|r| r.1),
        Some(1),
        "{}",
        text(&first)
    );
    assert!(
        text(&first).contains("the rollout stops here"),
        "{}",
        text(&first)
    );
    assert!(
        text(&first).contains("Connection refused"),
        "{}",
        text(&first)
    );
    let after = f.snapshot();
    for (i, n) in f.nodes.iter().enumerate() {
        assert_eq!(
            before[i].0, after[i].0,
            "{}: the same qdiscs, classes, filters",
            n.name
        );
        if i > 0 {
            assert_eq!(
                host_recap(&first, &n.name),
                None,
                "{} never started",
                n.name
            );
            assert!(
                after[i].1.is_empty() && !n.root.exists(),
                "{} untouched",
                n.name
            );
            assert!(!f.d.join(format!("playbook/build/{}", n.name)).exists());
        }
    }
    let (old, new) = (&before[0].1, &after[0].1);
    for (path, bytes) in durable(old) {
        assert_eq!(new.get(&path), Some(&bytes), "{path} unchanged");
    }
    assert_eq!(new_outcomes(old, new), ["failed, rolled back"]);
    assert!(
        durable(new)
            .keys()
            .all(|k| old.contains_key(k) || k.starts_with("var/lib/netqos/txn/")),
        "nothing else on the canary: {:?}",
        new.keys()
    );
    assert!(f.nodes[0].status()["pending"].is_null());
    after
}

/// The second run: the canary's probe passes, so its change is live and pending, but its
/// health check fails: the playbook rolls that transaction back and stops. The canary's
/// tc dump and undo point are as before (the rollback of an unconfirmed apply gives
/// `last` back to the apply before it); netqos recorded the transaction (its outcome says
/// rolled back).
fn gate_refuses_the_canary(f: &Fleet, before: &Snapshot) -> Snapshot {
    let second = f.play();
    let out = text(&second);
    assert!(!second.status.success(), "{out}");
    let rollback = out
        .find("TASK [netqos : Roll back the apply the gate refused]")
        .unwrap();
    assert!(out[rollback..].contains("changed: [node1]"), "{out}");
    assert_eq!(host_recap(&second, "node1").map(|r| r.1), Some(1), "{out}");
    let after = f.snapshot();
    for (i, n) in f.nodes.iter().enumerate() {
        assert_eq!(
            before[i].0, after[i].0,
            "{}: the same qdiscs, classes, filters",
            n.name
        );
        if i > 0 {
            assert_eq!(
                host_recap(&second, &n.name),
                None,
                "{} never started",
                n.name
            );
            assert!(after[i].1.is_empty(), "{} untouched", n.name);
        }
    }
    let (old, new) = (&before[0].1, &after[0].1);
    for (path, bytes) in durable(old) {
        assert_eq!(new.get(&path), Some(&bytes), "{path} unchanged");
    }
    assert_eq!(new_outcomes(old, new), ["rolled back"]);
    let status = f.nodes[0].status();
    assert!(status["pending"].is_null(), "{status}");
    assert_eq!(status["drift"]["count"], 0, "{status}");
    after
}

/// The third run, nothing failing: three batches in inventory order (the canary, 30 %
/// of three is one node, the rest), each node shaped at its own rate, confirmed (nothing
/// pending, no drift) and given the boot artefacts.
fn converges(f: &Fleet, before: &Snapshot) {
    let second = f.play();
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert_eq!(out.matches("\nPLAY [").count(), 3, "three batches:\n{out}");
    let order: Vec<usize> = f
        .nodes
        .iter()
        .map(|n| out.find(&format!("changed: [{}]", n.name)).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{out}");
    for (i, n) in f.nodes.iter().enumerate() {
        let (changed, failed) = host_recap(&second, &n.name).unwrap();
        assert!(changed > 0 && failed == 0, "{out}");
        let tc = n.tc();
        assert!(
            tc.contains(&format!("class htb 1:1 root rate {}Gbit", i + 1)),
            "{tc}"
        );
        let status = n.status();
        assert_eq!(status["drift"]["count"], 0, "{status}");
        assert!(status["pending"].is_null(), "{status}");
        let files = n.files();
        assert_eq!(new_outcomes(&before[i].1, &files), ["applied, confirmed"]);
        let built =
            f.d.join(format!("playbook/build/{}/out/netqos-apply.sh", n.name));
        assert_eq!(
            files.get("usr/local/lib/netqos/netqos-apply.sh"),
            Some(&std::fs::read(built).unwrap())
        );
    }
}
