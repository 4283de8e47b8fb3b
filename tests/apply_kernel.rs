//! `netqos apply` over netlink on a real kernel, each test in its own network namespaces:
//! the same objects as the tc script (netlink plans nothing over a script-built tree, and
//! both trees dump alike); a one-class change keeps every other class's counters while a
//! ping flow loses nothing; a failure injected at every step, and SIGKILL at every step
//! followed by `netqos rollback`, return the kernel exactly to the snapshot;
//! `--confirm` reverts without confirmation, keeps with it, and reverts when the applying
//! process and its process group are killed; ingress creates and rollback removes the IFB.
//!
//! Skips only when namespaces are unavailable and `NETQOS_REQUIRE_NETNS` is unset.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The lab of these tests: `eth0` (10.0.0.1/24) in a namespace, joined to `peer0`
/// (10.0.0.2/24) in a second one, and a state directory for netqos (created when the first
/// policy is written). All removed on drop.
struct Lab {
    ns: Netns,
    peer: Netns,
    state: PathBuf,
    _dir: TempDir,
}

impl Lab {
    fn new(tag: &str) -> Option<Lab> {
        let ns = Netns::new(&format!("ak{tag}"))?;
        let peer = ns.peer(
            &format!("ak{tag}p"),
            "eth0",
            "10.0.0.1/24",
            "peer0",
            "10.0.0.2/24",
        )?;
        // The link's operstate is in every dump: wait (at most 5 s) for the carrier the
        // kernel reports asynchronously, or a loaded machine snapshots `down` and later
        // dumps `up`.
        ns.ok(
            "for i in $(seq 50); do [ \"$(cat /sys/class/net/eth0/operstate)\" = up ] && break; \
             sleep 0.1; done",
        );
        let dir = TempDir::new(&format!("ak-{tag}"));
        Some(Lab {
            ns,
            peer,
            state: dir.join("state"),
            _dir: dir,
        })
    }

    fn ok(&self, cmd: &str) -> String {
        self.ns.ok(cmd)
    }

    /// `netqos ARGS` in the namespace with the lab's state directory.
    fn netqos(&self, args: &[&str]) -> Cli {
        self.ns.netqos(args).env("NETQOS_STATE_DIR", &self.state)
    }

    /// `netqos ARGS`, asserting exit 0: stdout + stderr.
    fn netqos_ok(&self, args: &[&str]) -> String {
        self.netqos(args).code(0).text()
    }

    /// Everything tc and ip say about the namespace, normalised: kernel-chosen action
    /// indexes and u32 hash-table ids (which depend on creation order) removed.
    fn dump(&self) -> String {
        let t = self.ok(
            "for d in $(ls /sys/class/net | sort); do echo \"== $d $(cat /sys/class/net/$d/operstate)\"; \
             tc qdisc show dev $d; tc class show dev $d; tc filter show dev $d; \
             for c in $(tc class show dev $d | awk '{print $3}'); do tc filter show dev $d parent $c; done; \
             tc filter show dev $d ingress 2>/dev/null; done",
        );
        normalise(&t)
    }

    /// `tc -s class show` bytes per class id.
    fn class_bytes(&self, dev: &str) -> Vec<(String, u64)> {
        let t = self.ok(&format!("tc -s class show dev {dev}"));
        let mut out = Vec::new();
        let mut current = None;
        for l in t.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"class") {
                current = w.get(2).map(|s| s.to_string());
            } else if w.first() == Some(&"Sent")
                && let (Some(c), Some(b)) = (current.take(), w.get(1))
            {
                out.push((c, b.parse().unwrap_or(0)));
            }
        }
        out.sort();
        out
    }
}

/// Drops what depends on creation order: u32 hash-table ids and action indexes.
fn normalise(t: &str) -> String {
    let mut out = Vec::new();
    for l in t.lines() {
        let trimmed = l.trim_start();
        if trimmed.starts_with("index ") {
            continue;
        }
        let mut words = Vec::new();
        let mut it = l.split_whitespace().peekable();
        while let Some(w) = it.next() {
            match w {
                "fh" => {
                    let h = it.next().unwrap_or("");
                    words.push("fh".to_string());
                    words.push(match h.split_once("::") {
                        Some((_, node)) => format!("::{node}"),
                        None => "table".to_string(),
                    });
                }
                // A counter: packets sent while the tree was being built.
                "direct_packets_stat" => {
                    it.next();
                }
                "key" if it.peek() == Some(&"ht") => {
                    it.next();
                    it.next();
                }
                _ => words.push(w.to_string()),
            }
        }
        out.push(words.join(" "));
    }
    out.join("\n")
}

fn write_policy(lab: &Lab, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(&lab.state).unwrap();
    let p = lab.state.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const POLICY: &str = "netqos 1
interface eth0 {
    rate 1gbit
    class control-plane {
        rate 200mbit
        prio 0
        match dst 10.0.0.10, 10.0.0.11
        match tcp dport 2379-2380, 6443, 10250
    }
    class pings { rate 100mbit  match icmp }
    class pods {
        rate 500mbit
        match udp dport 8472
        class batch { rate 100mbit ceil 300mbit match src 10.42.3.0/24 }
        class web { rate 300mbit default }
    }
    class bulk { rate 100mbit default }
}
";

/// The edit of the multi-step tests: a rate, a filter's keys, a new class, a removed one.
fn edited() -> String {
    POLICY
        .replace("class pings { rate 100mbit", "class pings { rate 90mbit")
        .replace("10.42.3.0/24", "10.42.4.0/24")
        .replace(
            "        class web { rate 300mbit default }\n",
            "        class web { rate 300mbit default }\n        class cron { rate 10mbit match dst 10.7.7.7 }\n",
        )
        .replace("        class batch { rate 100mbit ceil 300mbit match src 10.42.4.0/24 }\n", "")
}

#[test]
fn netlink_apply_builds_what_the_tc_script_builds() {
    let Some(a) = Lab::new("eqa") else { return };
    let Some(b) = Lab::new("eqb") else { return };
    for policy in [POLICY, INGRESS, LEAVES] {
        let pa = write_policy(&a, "p.nq", policy);
        let out = cli(["compile"])
            .arg(&pa)
            .args(["-o", "-", "--emit", "tc"])
            .code(0);
        let script = a.state.join("apply.sh");
        std::fs::write(&script, &out.output.stdout).unwrap();
        a.ok(&format!("sh {}", script.display()));
        // Netlink reads the script's tree and finds nothing to change…
        let plan = a.netqos_ok(&["plan", pa.to_str().unwrap()]);
        assert!(plan.contains("nothing to change"), "{plan}");
        // …and builds the same objects itself.
        let pb = write_policy(&b, "p.nq", policy);
        b.netqos_ok(&["apply", pb.to_str().unwrap()]);
        let (da, db) = (a.dump(), b.dump());
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("== peer0") && !l.contains("peer0"))
                .map(|l| l.replace(" ref 1 bind 1", ""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            strip(&da),
            strip(&db),
            "tc script (left) vs netlink apply (right)"
        );
        a.ok(&format!(
            "{} compile {} -o - --emit rollback | sh",
            netqos_bin(),
            pa.display()
        ));
        b.netqos_ok(&["rollback"]);
    }
}

/// Every leaf queue kind the netlink apply installs.
const LEAVES: &str = "netqos 1
interface eth0 {
    rate 1gbit
    class control-plane {
        rate 200mbit
        prio 0
        match dst 10.0.0.10
        match tcp dport 2379-2380, 6443, 10250
        qdisc pfifo limit 500
    }
    class a { rate 100mbit match dst 10.1.0.0/16 qdisc tbf rate 50mbit burst 64kb latency 50ms }
    class b { rate 100mbit match dst 10.2.0.0/16 qdisc tbf rate 20mbit burst 32kb limit 100kb peakrate 40mbit }
    class c { rate 100mbit match dst 10.3.0.0/16 qdisc bfifo limit 200kb }
    class rest { rate 100mbit default }
}
";

const INGRESS: &str = "netqos 1
interface eth0 ingress {
    rate 1gbit
    class control-plane { rate 300mbit prio 0 match src 10.0.0.10 match tcp sport 6443 }
    class rest { rate 700mbit default }
}
";

#[test]
fn one_class_change_keeps_the_other_counters_and_drops_no_packet() {
    let Some(lab) = Lab::new("inplace") else {
        return;
    };
    let p = write_policy(&lab, "p.nq", POLICY);
    lab.netqos_ok(&["apply", p.to_str().unwrap()]);
    lab.ok("ping -c 20 -i 0.01 -W 1 10.0.0.2 >/dev/null");
    let before = lab.class_bytes("eth0");
    assert!(before.iter().any(|(_, b)| *b > 0), "{before:?}");
    let p2 = write_policy(
        &lab,
        "p2.nq",
        &POLICY.replace(
            "class control-plane {\n        rate 200mbit",
            "class control-plane {\n        rate 250mbit",
        ),
    );
    let plan = lab.netqos_ok(&["plan", p2.to_str().unwrap()]);
    assert!(plan.contains("2 change(s)"), "{plan}");
    // A ping flow through the tree while the change is applied: nothing lost.
    let ping = lab
        .ns
        .command("ping")
        .args(["-c", "200", "-i", "0.005", "-W", "1", "10.0.0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    lab.netqos_ok(&["apply", p2.to_str().unwrap()]);
    let out = ping.wait_with_output().unwrap();
    let ping_text = text(&out);
    assert!(ping_text.contains(" 0% packet loss"), "{ping_text}");
    let after = lab.class_bytes("eth0");
    assert_eq!(before.len(), after.len());
    for ((c1, b1), (c2, b2)) in before.iter().zip(&after) {
        assert_eq!(c1, c2);
        assert!(
            b2 >= b1,
            "class {c1} counter went from {b1} to {b2}: it was re-created"
        );
    }
    assert!(
        lab.netqos_ok(&["plan", p2.to_str().unwrap()])
            .contains("nothing to change")
    );
    let status = lab.netqos_ok(&["status", "eth0"]);
    assert!(status.contains("drift: none"), "{status}");
}

/// (exit, dump) of an apply of `to` over a kernel holding `from`, failing at `step`.
fn changes_between(lab: &Lab, to: &Path) -> usize {
    // The JSON is stdout; stderr may carry the policy's infos.
    let plan = lab
        .netqos(&["plan", "--format", "json", to.to_str().unwrap()])
        .code(0)
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
    v["count"].as_u64().unwrap() as usize
}

#[test]
fn a_failure_at_every_step_is_undone_exactly() {
    let Some(lab) = Lab::new("failstep") else {
        return;
    };
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    let p2 = write_policy(&lab, "p2.nq", &edited());
    for (from, to) in [(None, &p1), (Some(&p1), &p2)] {
        if let Some(f) = from {
            lab.netqos_ok(&["apply", f.to_str().unwrap()]);
        }
        let before = lab.dump();
        let n = changes_between(&lab, to);
        assert!(n >= 4, "{n} changes");
        for step in 0..n {
            lab.netqos(&["apply", to.to_str().unwrap()])
                .env("NETQOS_FAIL_AFTER", step.to_string())
                .code(4);
            assert_eq!(lab.dump(), before, "after a failure at step {step} of {n}");
        }
    }
}

#[test]
fn sigkill_mid_apply_then_rollback_returns_to_the_snapshot() {
    let Some(lab) = Lab::new("kill") else { return };
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    let p2 = write_policy(&lab, "p2.nq", &edited());
    lab.netqos_ok(&["apply", p1.to_str().unwrap()]);
    let before = lab.dump();
    let n = changes_between(&lab, &p2);
    for step in 0..n {
        kill_at(&lab, &["apply", p2.to_str().unwrap()], step);
        if step > 0 {
            assert_ne!(
                lab.dump(),
                before,
                "the kill at step {step} left nothing to undo"
            );
        }
        lab.netqos_ok(&["rollback"]);
        assert_eq!(
            lab.dump(),
            before,
            "rollback after SIGKILL at step {step} of {n}"
        );
        // Journals of killed transactions stay for the record; start the next clean.
        let _ = std::fs::remove_dir_all(lab.state.join("txn"));
        std::fs::create_dir_all(lab.state.join("txn")).unwrap();
    }
}

/// Runs `netqos ARGS` paused after `step` changes (the fault hook) and kills it with
/// SIGKILL once its journal shows them done.
fn kill_at(lab: &Lab, args: &[&str], step: usize) {
    let journals = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(lab.state.join("txn"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "journal"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Journals of earlier transactions do not count: the kill waits for this one's.
    let earlier = journals();
    let mut child = lab
        .netqos(args)
        .env("NETQOS_PAUSE_AFTER", step.to_string())
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the journal shows `step` finished changes, then kill.
    let t0 = Instant::now();
    loop {
        // At step 0 too: the kill must come after the transaction is recorded, or the
        // rollback rightly undoes the previous one instead.
        let done = journals()
            .into_iter()
            .filter(|p| !earlier.contains(p))
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .matches("\"done\":true")
                    .count()
            })
            .max();
        if done.is_some_and(|d| d >= step) || t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.wait();
}

fn wait_for(mut ok: impl FnMut() -> bool, secs: u64) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

#[test]
fn confirm_window_reverts_keeps_and_survives_the_applying_process() {
    let Some(lab) = Lab::new("confirm") else {
        return;
    };
    let p = write_policy(&lab, "p.nq", POLICY);
    let pristine = lab.dump();
    let path = p.to_str().unwrap();

    // Not confirmed: reverts by itself.
    lab.netqos_ok(&["apply", "--confirm", "3s", path]);
    let applied = lab.dump();
    assert_ne!(applied, pristine);
    let status = lab.netqos_ok(&["status"]);
    assert!(status.contains("pending: transaction"), "{status}");
    assert!(
        wait_for(|| lab.dump() == pristine, 12),
        "no revert after 3 s"
    );

    // Confirmed: stays.
    lab.netqos_ok(&["apply", "--confirm", "3s", path]);
    lab.netqos_ok(&["confirm"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.dump(), applied, "a confirmed apply was reverted");
    // Nothing left to confirm.
    lab.netqos(&["confirm"]).code(3);
    lab.netqos_ok(&["rollback"]);
    assert_eq!(lab.dump(), pristine);

    // The applying process and its whole process group (what a dying terminal or SSH
    // session takes down: SIGHUP, then SIGKILL) killed mid-way: the detached revert, in a
    // session of its own, still runs.
    let mut child = lab
        .netqos(&["apply", "--confirm", "3s", path])
        .env("NETQOS_PAUSE_AFTER", "3")
        .command()
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let group = format!("-{}", child.id());
    for sig in ["-HUP", "-KILL"] {
        let _ = Command::new("kill").args([sig, "--", &group]).output();
    }
    let _ = child.wait();
    assert_ne!(lab.dump(), pristine);
    assert!(
        wait_for(|| lab.dump() == pristine, 15),
        "no revert after the applying process was killed:\n{}",
        std::fs::read_to_string(lab.state.join("revert.log")).unwrap_or_default()
    );
}

#[test]
fn ingress_apply_creates_the_ifb_and_rollback_removes_it() {
    let Some(lab) = Lab::new("ifb") else { return };
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", INGRESS);
    lab.netqos_ok(&["apply", p.to_str().unwrap()]);
    let links = lab.ok("ip -br link");
    assert!(links.contains("ifb-eth0"), "{links}");
    let f = lab.ok("tc filter show dev eth0 ingress");
    assert!(f.contains("Redirect to device ifb-eth0"), "{f}");
    assert!(
        lab.netqos_ok(&["plan", p.to_str().unwrap()])
            .contains("nothing to change")
    );
    lab.netqos_ok(&["rollback"]);
    assert_eq!(lab.dump(), pristine);
}

#[test]
fn a_kernel_refusal_shows_its_extended_ack_text_and_is_undone() {
    let Some(lab) = Lab::new("extack") else {
        return;
    };
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    lab.netqos_ok(&["apply", p1.to_str().unwrap()]);
    // Another tool's filter on the leaf class `batch`, sending to it: the kernel refuses
    // to delete a class in use.
    let classes = lab.ok("tc class show dev eth0");
    let batch = classes
        .lines()
        .find(|l| l.contains("rate 100Mbit ceil 300Mbit"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("batch class")
        .to_string();
    lab.ok(&format!(
        "tc filter add dev eth0 parent {batch} protocol ip prio 5 u32 match u32 0 0 flowid {batch}"
    ));
    let before = lab.dump();
    let p2 = write_policy(&lab, "p2.nq", &edited());
    let out = lab.netqos(&["apply", p2.to_str().unwrap()]).code(4).text();
    assert!(
        out.contains("HTB class in use"),
        "the kernel's own words: {out}"
    );
    assert_eq!(lab.dump(), before);
}

#[test]
fn status_shows_counters_and_drift_and_apply_repairs_it() {
    let Some(lab) = Lab::new("drift") else { return };
    let p = write_policy(&lab, "p.nq", POLICY);
    lab.netqos_ok(&["apply", p.to_str().unwrap()]);
    lab.ok("ping -c 5 -i 0.01 -W 1 10.0.0.2 >/dev/null");
    let status = lab.netqos_ok(&["status"]);
    assert!(status.contains("drift: none"), "{status}");
    assert!(
        status.contains("sent ") && status.contains("overlimits"),
        "{status}"
    );
    // Someone changes a class by hand.
    let classes = lab.ok("tc class show dev eth0");
    let pings = classes
        .lines()
        .find(|l| l.contains("rate 100Mbit ceil 1Gbit") && l.contains("leaf"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("pings class")
        .to_string();
    lab.ok(&format!(
        "tc class change dev eth0 parent 1:1 classid {pings} htb rate 5mbit ceil 1gbit"
    ));
    let status = lab.netqos_ok(&["status", "eth0"]);
    assert!(status.contains("drift: 1 difference(s)"), "{status}");
    assert!(
        status.contains(&format!("class {pings} on eth0 rate 100 Mbit/s")),
        "{status}"
    );
    let json = lab.netqos_ok(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["drift"]["count"], 1, "{json}");
    lab.netqos_ok(&["apply", p.to_str().unwrap()]);
    assert!(lab.netqos_ok(&["status"]).contains("drift: none"));
}

/// A batch is one datagram in which only the last request (and any whose success may carry
/// a kernel warning) asks for an ACK. A failure in the middle must still come back with the
/// kernel's own text, attributed to the right request, and the requests around it succeed.
/// Runs in a thread moved into a fresh namespace, on its loopback device.
#[test]
fn a_batch_attributes_a_middle_failure_and_its_silent_successes() {
    use netqos::apply::kernel::{Kernel, NetlinkKernel};
    use netqos::apply::model::{Change, Class, Qdisc, QdiscKind};
    let Some(ns) = crate::support::Netns::new("batch") else {
        return;
    };
    let path = format!("/run/netns/{}", ns.0);
    let outcome = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("namespace file");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the test namespace");
        let mut k = NetlinkKernel::open().expect("rtnetlink");
        let live = k.read(&["lo".to_string()]).expect("read lo");
        assert!(live.dev("lo").is_some_and(|d| d.exists));
        let root = Qdisc {
            dev: "lo".into(),
            parent: 0xffff_ffff,
            handle: 0x0001_0000,
            kind: QdiscKind::Htb {
                default: 0x10,
                r2q: 10,
                direct_qlen: 1000,
            },
        };
        k.send(&Change::AddQdisc { q: root }).expect("htb root");
        let class = |minor: u32, parent: u32| Change::AddClass {
            c: Class {
                dev: "lo".into(),
                classid: 0x0001_0000 | minor,
                parent,
                rate: 125_000,
                ceil: 125_000,
                buffer: 100_000,
                cbuffer: 100_000,
                quantum: Some(1514),
                prio: 0,
            },
        };
        let batch = [
            class(0x10, 0x0001_0000),
            class(0x11, 0x0001_0000),
            // 1:10 exists: the kernel refuses to add it again (EEXIST).
            class(0x10, 0x0001_0000),
            class(0x30, 0x0001_0000),
            class(0x31, 0x0001_0000),
        ];
        let results = k.send_many(&batch);
        let after = k.read(&["lo".to_string()]).expect("read lo again");
        let mut ids: Vec<u32> = after
            .dev("lo")
            .unwrap()
            .classes
            .iter()
            .map(|c| c.classid & 0xffff)
            .collect();
        ids.sort_unstable();
        (
            results
                .iter()
                .map(|r| r.as_ref().map_err(|e| format!("{e} {:?}", e.errno)))
                .map(|r| r.map(|()| "ok".to_string()).unwrap_or_else(|e| e))
                .collect::<Vec<_>>(),
            ids,
        )
    })
    .join();
    drop(ns);
    let (results, ids) = outcome.expect("the namespace thread did not panic");
    assert_eq!(results.len(), 5, "{results:?}");
    assert_eq!(results[0], "ok");
    assert_eq!(results[1], "ok");
    assert!(
        results[2].contains("File exists") && results[2].contains("Some(17)"),
        "EEXIST, in the kernel's words, for the duplicate: {results:?}"
    );
    assert_eq!(&results[3..], ["ok", "ok"]);
    assert_eq!(ids, [0x10, 0x11, 0x30, 0x31], "what the kernel holds");
}

/// `--probe`: a new connection to a listener in the peer namespace passes and the apply
/// stays; a probe nobody answers (connection refused) undoes the apply, exit 4, and the
/// kernel is as before.
#[test]
fn a_failed_probe_undoes_the_apply() {
    let Some(lab) = Lab::new("probe") else { return };
    let mut listener = lab
        .peer
        .command("python3")
        .arg("-c")
        .arg(
            "import socket, time\n\
             s = socket.socket(); s.bind(('10.0.0.2', 7443)); s.listen(8)\n\
             print('ready', flush=True)\n\
             end = time.time() + 60\n\
             while time.time() < end:\n    c, _ = s.accept(); c.close()\n",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 listener");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let pristine = lab.dump();
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    let out = lab.netqos_ok(&[
        "apply",
        "--probe",
        "tcp:10.0.0.2:7443",
        p1.to_str().unwrap(),
    ]);
    assert!(out.contains("probe tcp:10.0.0.2:7443: connected"), "{out}");
    let applied = lab.dump();
    assert_ne!(applied, pristine);
    let p2 = write_policy(&lab, "p2.nq", &edited());
    let failed = lab
        .netqos(&[
            "apply",
            "--probe",
            "tcp:10.0.0.2:7443",
            "--probe",
            "tcp:10.0.0.2:7444",
            "--probe-timeout",
            "3s",
            p2.to_str().unwrap(),
        ])
        .run();
    let _ = listener.kill();
    let _ = listener.wait();
    let out = failed.code(4).text();
    assert!(
        out.contains("probe tcp:10.0.0.2:7444") && out.contains("refused"),
        "{out}"
    );
    assert_eq!(lab.dump(), applied, "undone to the first apply");
    // A malformed probe is a usage error.
    let out = lab
        .netqos(&["apply", "--probe", "10.0.0.2:22", p2.to_str().unwrap()])
        .code(2)
        .text();
    assert!(out.contains("tcp:HOST:PORT"), "{out}");
    assert_eq!(lab.dump(), applied, "nothing applied");
}

/// Shaping the device that carries the default route without `--confirm` or `--probe`
/// draws a warning (reliability F11); with either, or on another device, none.
#[test]
fn the_default_route_device_draws_a_warning_without_a_safety_net() {
    let Some(lab) = Lab::new("defroute") else {
        return;
    };
    let hint = "eth0 carries the default route";
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    let out = lab.netqos_ok(&["apply", p1.to_str().unwrap()]);
    assert!(!out.contains(hint), "no default route yet: {out}");
    lab.ok(
        "ip route add default via 10.0.0.2 dev eth0 && ip -6 addr add fd00::1/64 dev eth0 nodad",
    );
    let p2 = write_policy(&lab, "p2.nq", &edited());
    let out = lab.netqos_ok(&["apply", p2.to_str().unwrap()]);
    assert!(out.contains(hint) && out.contains("--confirm"), "{out}");
    let out = lab.netqos_ok(&["apply", "--confirm", "60s", p1.to_str().unwrap()]);
    assert!(!out.contains(hint), "guarded by --confirm: {out}");
    lab.netqos_ok(&["confirm"]);
    // IPv6 only: the warning still comes.
    lab.ok("ip route del default && ip -6 route add default via fd00::2 dev eth0");
    let out = lab.netqos_ok(&["apply", p2.to_str().unwrap()]);
    assert!(out.contains(hint), "IPv6 default route: {out}");
}

/// Issue 18.1: SIGKILL mid-apply, the same apply again, rollback: the devices are exactly
/// as before the first apply, the foreign root it replaced included. Before the re-apply,
/// `status` and `plan` name the interrupted transaction.
#[test]
fn a_killed_apply_is_undone_by_the_next_and_rollback_returns_to_before_it() {
    let Some(lab) = Lab::new("intr") else { return };
    lab.ok("tc qdisc add dev eth0 root handle 5: tbf rate 100mbit burst 32kb latency 50ms");
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", POLICY);
    let path = p.to_str().unwrap();
    for step in [3, 9] {
        kill_at(&lab, &["apply", "--replace-foreign", path], step);
        assert_ne!(lab.dump(), pristine, "half-built at step {step}");
        let status = lab.netqos_ok(&["status"]);
        assert!(status.contains("interrupted: transaction"), "{status}");
        let json = lab.netqos_ok(&["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["interrupted"]["in_progress"], false, "{json}");
        assert!(v["interrupted"]["id"].is_string(), "{json}");
        lab.netqos(&["plan", "--replace-foreign", path])
            .code(0)
            .text_has("was interrupted");
        let out = lab.netqos_ok(&["apply", "--replace-foreign", path]);
        assert!(
            out.contains("was interrupted; undone to its snapshot first"),
            "{out}"
        );
        lab.netqos_ok(&["rollback"]);
        assert_eq!(lab.dump(), pristine, "after a kill at step {step}");
    }
}

/// Issue 18.7: apply A, apply B that fails (undone): rollback undoes A.
#[test]
fn a_failed_apply_keeps_the_undo_point_of_the_one_before() {
    let Some(lab) = Lab::new("undopt") else {
        return;
    };
    let pristine = lab.dump();
    let p1 = write_policy(&lab, "p1.nq", POLICY);
    let p2 = write_policy(&lab, "p2.nq", &edited());
    lab.netqos_ok(&["apply", p1.to_str().unwrap()]);
    lab.netqos(&["apply", p2.to_str().unwrap()])
        .env("NETQOS_FAIL_AFTER", "2")
        .code(4);
    lab.netqos_ok(&["rollback"]);
    assert_eq!(lab.dump(), pristine, "rollback undid A");
}

/// Issue 18.4: an apply whose outcome cannot be recorded (the fault hook stands for a full
/// disk) exits 3 and says what is live.
#[test]
fn an_apply_that_cannot_record_its_outcome_exits_3() {
    let Some(lab) = Lab::new("norec") else { return };
    let p = write_policy(&lab, "p.nq", POLICY);
    lab.netqos(&["apply", p.to_str().unwrap()])
        .env("NETQOS_FAIL_RECORD", "1")
        .code(3)
        .text_has("the kernel holds")
        .text_has("could not be recorded");
}

/// Issue 18.4: the confirm window survives its reverter's death. Kill the reverter: once
/// the deadline passes `status` says the change is still live, and a late `confirm` does
/// not keep it but reverts it (exit 3).
#[test]
fn a_dead_reverter_is_noticed_and_its_revert_done() {
    let Some(lab) = Lab::new("deadrev") else {
        return;
    };
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", POLICY);
    lab.netqos_ok(&["apply", "--confirm", "2s", p.to_str().unwrap()]);
    // The only process left in the namespace is the detached reverter.
    let pids = lab.ns.pids();
    assert!(!pids.is_empty(), "a reverter runs");
    for pid in &pids {
        let _ = Command::new("kill").args(["-9", pid]).output();
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(lab.dump(), pristine, "nobody reverted");
    let status = lab.netqos_ok(&["status"]);
    assert!(status.contains("its reverter is gone"), "{status}");
    lab.netqos(&["confirm"])
        .code(3)
        .text_has("reverting it now");
    assert_eq!(lab.dump(), pristine);
}

/// Issue 18.2: two applies on one device with different state directories: the second
/// is refused while the first runs, nothing is half-built by it, and rollback works.
#[test]
fn a_second_apply_on_the_device_with_another_state_dir_is_refused() {
    let Some(lab) = Lab::new("twodirs") else {
        return;
    };
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", POLICY);
    let path = p.to_str().unwrap();
    let mut first = lab
        .netqos(&["apply", path])
        .env("NETQOS_PAUSE_AFTER", "3")
        .env("NETQOS_PAUSE_SECS", "4")
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let other = lab.state.with_file_name("state-other");
    lab.netqos(&["apply", "--state-dir", other.to_str().unwrap(), path])
        .code(3)
        .text_has("device eth0 is being changed by another netqos");
    assert!(first.wait().unwrap().success(), "the first apply finishes");
    lab.netqos_ok(&["rollback"]);
    assert_eq!(lab.dump(), pristine);
    lab.netqos(&["apply", "--state-dir", other.to_str().unwrap(), path])
        .code(0);
}

/// Issue 18.3: the device renamed while the apply runs (changes go by ifindex): the apply
/// says it was renamed and that the undo could not reach it (exit 5), never "the devices
/// are as they were". Renamed back, rollback undoes the interrupted transaction.
#[test]
fn a_device_renamed_mid_apply_is_reported_and_rollback_works_once_renamed_back() {
    let Some(lab) = Lab::new("rename") else {
        return;
    };
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", POLICY);
    let child = lab
        .netqos(&["apply", p.to_str().unwrap()])
        .env("NETQOS_PAUSE_AFTER", "3")
        .env("NETQOS_PAUSE_SECS", "3")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    lab.ok("ip link set eth0 down && ip link set eth0 name eth9 && ip link set eth9 up");
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(said.contains("renamed or replaced"), "{said}");
    assert!(!said.contains("as they were"), "{said}");
    assert!(
        lab.ok("tc class show dev eth9").contains("htb"),
        "the tree is on eth9"
    );
    lab.ok("ip link set eth9 down && ip link set eth9 name eth0 && ip link set eth0 up");
    lab.netqos_ok(&["rollback"]);
    assert!(
        wait_for(|| lab.dump() == pristine, 5),
        "{}\n---\n{pristine}",
        lab.dump()
    );
}

/// A compiled apply script and a live apply in one namespace never interleave: the script
/// waits for (here: gives up on, after NETQOS_LOCK_WAIT) a live apply that is changing a
/// device, and a live apply is refused while a script holds the namespace (its `flock` on
/// `/run/netqos/dev/ns-NETNS.lock`, taken here by the same command). Nothing is changed
/// by the refused one.
#[test]
fn a_script_and_a_live_apply_in_one_namespace_exclude_each_other() {
    let Some(lab) = Lab::new("scriptlive") else {
        return;
    };
    let pristine = lab.dump();
    let p = write_policy(&lab, "p.nq", POLICY);
    let out = lab.state.with_file_name("out");
    lab.netqos_ok(&[
        "compile",
        p.to_str().unwrap(),
        "--emit",
        "tc",
        "-o",
        out.to_str().unwrap(),
    ]);
    let script = out.join("netqos-apply.sh");
    let mut live = lab
        .netqos(&["apply", p.to_str().unwrap()])
        .env("NETQOS_PAUSE_AFTER", "3")
        .env("NETQOS_PAUSE_SECS", "4")
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (_, refused) = lab.ns.sh(&format!(
        "NETQOS_LOCK_WAIT=1 sh {} 2>&1; echo \"exit $?\"",
        script.display()
    ));
    assert!(
        refused.contains("another netqos") && refused.ends_with("exit 3\n"),
        "{refused}"
    );
    assert!(live.wait().unwrap().success(), "the live apply finishes");
    lab.netqos_ok(&["rollback"]);
    assert_eq!(lab.dump(), pristine);
    // The script's own lock, held for three seconds.
    let mut holder = lab
        .ns
        .command("sh")
        .args([
            "-c",
            "mkdir -p /run/netqos/dev && \
             flock /run/netqos/dev/ns-$(stat -L -c %i /proc/self/ns/net).lock sleep 3",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.netqos(&["apply", p.to_str().unwrap()])
        .code(3)
        .text_has("a netqos apply or rollback script");
    assert_eq!(lab.dump(), pristine, "the refused apply changed nothing");
    assert!(holder.wait().unwrap().success());
    lab.netqos_ok(&["apply", p.to_str().unwrap()]);
    lab.netqos_ok(&["rollback"]);
}
