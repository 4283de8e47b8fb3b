//! The generated scripts on a real kernel, each test in its own network namespaces:
//! the kernel state read back equals the plan, a second run changes nothing, rollback
//! returns the namespace to its pristine state (twice), and classification sends traffic
//! to the planned classes with nothing in HTB's direct queue.
//!
//! Skips only when namespaces are unavailable and `NETQOS_REQUIRE_NETNS` is unset.

use std::path::Path;

use crate::support::*;
use netqos::plan::Plan;
use netqos::vars::ExternalVars;

fn compile(src: &str, dir: &Path) -> Plan {
    let model = netqos::check_source(src, &ExternalVars::default())
        .model
        .expect("valid policy");
    let plan = netqos::lower::lower(&model);
    let t = netqos::backend::Templates::default();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("apply.sh"),
        netqos::backend::tc_script(&netqos::backend::Render::new(&plan, "policy.nq", &t)).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("rollback.sh"),
        netqos::backend::rollback_script(&netqos::backend::Render::new(&plan, "policy.nq", &t))
            .unwrap(),
    )
    .unwrap();
    plan
}

/// Everything tc and ip say about the namespace, with kernel-chosen action indexes removed.
fn dump(ns: &Netns) -> String {
    let text = ns.ok(
        "for d in $(ls /sys/class/net); do echo \"== $d\"; tc qdisc show dev $d; tc class show dev $d; \
         tc filter show dev $d; tc filter show dev $d ingress 2>/dev/null; done",
    );
    text.lines()
        .map(|l| match l.find("index ") {
            Some(i) if l.trim_start().starts_with("index") => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `1234Kbit` → 1234000.
fn tc_rate(text: &str) -> u64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    let mult = match unit {
        "bit" => 1.0,
        "Kbit" => 1e3,
        "Mbit" => 1e6,
        "Gbit" => 1e9,
        "Tbit" => 1e12,
        other => panic!("unknown tc rate unit {other} in {text}"),
    };
    (n * mult).round() as u64
}

fn close(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= (b / 500).max(1000)
}

fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next();
        }
    }
    None
}

/// The kernel's classes, default and filter targets equal the plan's.
fn assert_matches_plan(ns: &Netns, plan: &Plan) {
    for d in &plan.devices {
        let dev = &d.shaped_device;
        let root = ns.ok(&format!("tc qdisc show dev {dev} root"));
        assert!(root.starts_with("qdisc htb 1: root"), "{dev}: {root}");
        assert_eq!(
            word_after(&root, "default"),
            Some(format!("0x{}", d.root.default).as_str()),
            "{dev} default"
        );
        let classes = ns.ok(&format!("tc class show dev {dev}"));
        for c in &d.classes {
            let line = classes
                .lines()
                .find(|l| l.split_whitespace().nth(2) == Some(c.classid.to_string().as_str()))
                .unwrap_or_else(|| {
                    panic!(
                        "{dev}: class {} ({}) missing:\n{classes}",
                        c.classid, c.name
                    )
                });
            let parent = word_after(line, "parent").unwrap_or("1:");
            assert_eq!(
                parent,
                c.parent.to_string(),
                "{dev} {} parent: {line}",
                c.classid
            );
            let rate = tc_rate(word_after(line, "rate").unwrap());
            let ceil = tc_rate(word_after(line, "ceil").unwrap());
            assert!(
                close(rate, c.rate),
                "{dev} {} rate {rate} vs plan {}: {line}",
                c.classid,
                c.rate
            );
            assert!(
                close(ceil, c.ceil),
                "{dev} {} ceil {ceil} vs plan {}: {line}",
                c.classid,
                c.ceil
            );
            if c.leaf.is_some() {
                // tc prints prio for leaves only.
                assert_eq!(
                    word_after(line, "prio"),
                    Some(c.prio.to_string().as_str()),
                    "{line}"
                );
            }
        }
        assert_eq!(
            classes
                .lines()
                .filter(|l| l.starts_with("class htb"))
                .count(),
            d.classes.len(),
            "{dev}: class count"
        );
        // u32 filters of one qdisc share their hash tables, and a dump of any parent may list
        // nodes of the others: collect every parent's dump, keyed by the node's handle.
        let mut parents: Vec<String> = d.filters.iter().map(|f| f.parent.to_string()).collect();
        parents.push("1:".to_string());
        parents.sort_unstable();
        parents.dedup();
        let mut nodes = std::collections::BTreeMap::new();
        let mut shown = String::new();
        for p in parents {
            let text = ns.ok(&format!("tc filter show dev {dev} parent {p}"));
            for l in text.lines() {
                if let (Some(fh), Some(flow)) = (
                    word_after(l, "fh"),
                    word_after(l, "*flowid").or_else(|| word_after(l, "flowid")),
                ) {
                    nodes.insert(
                        format!("{} {fh}", word_after(l, "pref").unwrap_or("")),
                        flow.to_string(),
                    );
                }
            }
            shown.push_str(&text);
        }
        let mut got: Vec<String> = nodes.into_values().collect();
        let mut want: Vec<String> = d
            .filters
            .iter()
            .filter_map(|f| f.class().map(|c| c.to_string()))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{dev} filter targets:\n{shown}");
        if let Some(ifb) = &d.ifb {
            let redirect = ns.ok(&format!("tc filter show dev {} ingress", d.device));
            assert!(
                redirect.contains(&format!("Redirect to device {ifb}")),
                "{redirect}"
            );
        }
    }
}

/// Bytes a class has sent, from `tc -s class show` output.
fn sent_bytes(stats: &str, classid: &str) -> u64 {
    let mut lines = stats.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().nth(2) == Some(classid) {
            return word_after(lines.next().unwrap_or(""), "Sent")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

fn devices(plan: &Plan) -> Vec<String> {
    let mut v: Vec<String> = plan.devices.iter().map(|d| d.device.clone()).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn every_example_applies_matches_its_plan_is_idempotent_and_rolls_back() {
    for (n, path) in policies(&root().join("examples")).into_iter().enumerate() {
        let Some(ns) = Netns::new(&format!("ex{n}")) else {
            return;
        };
        let src = std::fs::read_to_string(&path).unwrap();
        let dir = TempDir::new(&format!("kernel-{n}"));
        let plan = compile(&src, &dir);
        for (i, dev) in devices(&plan).iter().enumerate() {
            ns.ok(&format!("ip link add {dev} type veth peer name nqpeer{i} && ip link set {dev} up && ip link set nqpeer{i} up"));
        }
        let pristine = dump(&ns);
        let apply = format!("sh {}", dir.join("apply.sh").display());
        let rollback = format!("sh {}", dir.join("rollback.sh").display());
        ns.ok(&apply);
        assert_matches_plan(&ns, &plan);
        let first = dump(&ns);
        ns.ok(&apply);
        assert_eq!(
            dump(&ns),
            first,
            "{}: second run changed the kernel state",
            path.display()
        );
        ns.ok(&rollback);
        assert_eq!(
            dump(&ns),
            pristine,
            "{}: rollback did not restore the namespace",
            path.display()
        );
        ns.ok(&rollback);
        assert_eq!(dump(&ns), pristine, "{}: second rollback", path.display());
    }
}

#[test]
fn classification_sends_traffic_to_planned_classes_and_never_to_the_direct_queue() {
    if !kernel_tool("ping", "iputils-ping") {
        return;
    }
    if !kernel_tool("iperf3", "iperf3") {
        return;
    }
    let Some(ns) = Netns::new("cls") else { return };
    let Some(peer) = Netns::new("clspeer") else {
        return;
    };
    let src = std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap();
    let dir = TempDir::new("kernel-cls");
    let plan = compile(&src, &dir);
    ns.ok(&format!(
        "ip link add eth0 type veth peer name p0 netns {}",
        peer.0
    ));
    ns.ok("ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up && ip link set lo up");
    peer.ok(
        "ip addr add 10.0.0.10/24 dev p0 && ip addr add 10.0.0.99/24 dev p0 && ip link set p0 up",
    );
    ns.ok(&format!("sh {}", dir.join("apply.sh").display()));
    // 10.0.0.10:6443 is a control-plane API server; a ping to 10.0.0.10 and anything to
    // 10.0.0.99 is not control-plane traffic; ARP is neither.
    peer.ok("timeout 10 iperf3 -s -1 -p 6443 >/dev/null 2>&1 &");
    std::thread::sleep(std::time::Duration::from_millis(300));
    ns.ok("timeout 10 iperf3 -c 10.0.0.10 -p 6443 -t 1 -b 1M >/dev/null");
    ns.ok("ping -c 5 -i 0.2 -W 1 10.0.0.10 >/dev/null");
    ns.ok("ping -c 5 -i 0.2 -W 1 10.0.0.99 >/dev/null");
    let d = &plan.devices[0];
    let cp = d
        .classes
        .iter()
        .find(|c| c.name == "control-plane")
        .unwrap();
    let bulk = d.classes.iter().find(|c| c.name == "bulk").unwrap();
    let stats = ns.ok("tc -s class show dev eth0");
    let sent = |classid: &netqos::plan::Handle| sent_bytes(&stats, &classid.to_string());
    assert!(
        sent(&cp.classid) > 0,
        "control-plane class got no packets:\n{stats}"
    );
    assert!(
        sent(&bulk.classid) > 0,
        "default class got no packets:\n{stats}"
    );
    let root = ns.ok("tc -s qdisc show dev eth0 root");
    assert_eq!(
        word_after(&root, "direct_packets_stat"),
        Some("0"),
        "{root}"
    );
}

const HOSTILE: &[&str] = &[
    "a;id",
    "a$(id)",
    "a`id`",
    "-x",
    "abcdefghijklmnop",
    "a'b",
    "a b",
    "a|touch x",
];

#[test]
fn hostile_interface_names_are_refused_and_odd_valid_ones_are_harmless() {
    let d = TempDir::new("kernel-hostile");
    let policy = "netqos 1\ninterface $dev {\n    rate 10mbit\n    class a {\n        rate 1mbit\n        match tcp dport 22\n    }\n    class b {\n        rate 5mbit\n        default\n    }\n}\n";
    std::fs::write(d.join("p.nq"), policy).unwrap();
    for name in HOSTILE {
        let name = name.replace('x', &d.join("canary").display().to_string());
        let out = netqos(
            &[
                "compile",
                "p.nq",
                "-o",
                "out",
                "--var",
                &format!("dev={name}"),
            ],
            &d,
        );
        assert_eq!(out.status.code(), Some(1), "{name} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NQ030"),
            "{name}"
        );
        assert!(!d.join("out").exists(), "{name}: artefacts written");
    }
    // Names the kernel and netqos both accept, with characters a careless script would
    // mishandle, run cleanly and touch nothing outside tc.
    let Some(ns) = Netns::new("odd") else { return };
    for (i, name) in ["a.b-c_d", "x@y", "0eth"].iter().enumerate() {
        let src = policy.replace("$dev", name);
        let plan = compile(&src, &d.join(format!("odd{i}")));
        ns.ok(&format!(
            "ip link add '{name}' type veth peer name oddpeer{i} && ip link set '{name}' up"
        ));
        ns.ok(&format!(
            "cd {} && sh {}",
            d.display(),
            d.join(format!("odd{i}/apply.sh")).display()
        ));
        assert_matches_plan(&ns, &plan);
        ns.ok(&format!(
            "sh {}",
            d.join(format!("odd{i}/rollback.sh")).display()
        ));
    }
    let entries: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|e| e.contains("canary")), "{entries:?}");
}

/// More filters than u32 numbers in one priority: source order must still hold.
#[test]
fn source_order_survives_thousands_of_filters() {
    let Some(ns) = Netns::new("many") else { return };
    let Some(peer) = Netns::new("manypeer") else {
        return;
    };
    let hosts: Vec<String> = (0..2100)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let src = format!(
        "netqos 1\n\ninterface eth0 {{\n    rate 100mbit\n\n    class many {{\n        rate 10mbit\n        match dst {}\n    }}\n    class wide {{\n        rate 10mbit\n        match dst 10.0.0.0/8\n    }}\n    class rest {{\n        rate 10mbit\n        default\n    }}\n}}\n",
        hosts.join(", ")
    );
    let dir = TempDir::new("kernel-many");
    let plan = compile(&src, &dir);
    ns.ok(&format!(
        "ip link add eth0 type veth peer name p0 netns {}",
        peer.0
    ));
    ns.ok("ip addr add 10.0.0.1/8 dev eth0 && ip link set eth0 up");
    // Without chunking, `wide`'s filter would get a wrapped-around u32 handle and be tried
    // before the first 2048 filters of `many`: ping the first host.
    let last = &hosts[0];
    peer.ok(&format!("ip addr add {last}/8 dev p0 && ip link set p0 up"));
    ns.ok(&format!("sh {}", dir.join("apply.sh").display()));
    ns.ok(&format!("ping -c 3 -i 0.2 -W 1 {last} >/dev/null"));
    let d = &plan.devices[0];
    let many = d.classes.iter().find(|c| c.name == "many").unwrap();
    let wide = d.classes.iter().find(|c| c.name == "wide").unwrap();
    let stats = ns.ok("tc -s class show dev eth0");
    let sent = |classid: &netqos::plan::Handle| sent_bytes(&stats, &classid.to_string());
    assert!(sent(&many.classid) > 0, "`many` got nothing:\n{stats}");
    assert_eq!(
        sent(&wide.classid),
        0,
        "`wide` took `many`'s traffic:\n{stats}"
    );
}

/// A device that already has a clsact qdisc with someone else's filter (Cilium, Calico):
/// ingress shaping uses it, and rollback leaves both alone.
#[test]
fn ingress_shaping_coexists_with_clsact_and_foreign_filters() {
    let Some(ns) = Netns::new("clsact") else {
        return;
    };
    let src = std::fs::read_to_string(root().join("examples/ingress.nq")).unwrap();
    let dir = TempDir::new("kernel-clsact");
    let plan = compile(&src, &dir);
    ns.ok("ip link add eth0 type veth peer name p0 && ip link set eth0 up && ip link set p0 up");
    ns.ok("tc qdisc add dev eth0 clsact && tc filter add dev eth0 ingress protocol ip prio 100 u32 match ip dst 192.0.2.1/32 flowid 1:1");
    let before = dump(&ns);
    ns.ok(&format!("sh {}", dir.join("apply.sh").display()));
    assert_matches_plan(&ns, &plan);
    let ingress = ns.ok("tc filter show dev eth0 ingress");
    assert!(
        ingress.contains("pref 100 "),
        "foreign filter kept:\n{ingress}"
    );
    ns.ok(&format!("sh {}", dir.join("apply.sh").display()));
    ns.ok(&format!("sh {}", dir.join("rollback.sh").display()));
    assert_eq!(
        dump(&ns),
        before,
        "rollback must leave clsact and its filter as they were"
    );
}

/// Running the script of an edited policy over the old tree: removed classes go, a leaf
/// queue of another kind is swapped, and the result equals the new plan.
#[test]
fn an_edited_policy_replaces_the_old_tree_without_leftovers() {
    let Some(ns) = Netns::new("edit") else { return };
    let old = std::fs::read_to_string(root().join("examples/pods.nq")).unwrap();
    let new = old
        .replace(
            "        class batch {\n            rate 100mbit\n            ceil 300mbit\n            match src 10.42.3.0/24\n        }\n",
            "",
        )
        .replace("            rate 400mbit\n            default", "            rate 400mbit\n            qdisc pfifo limit 100\n            default");
    assert_ne!(old, new, "the edit applies");
    let dir = TempDir::new("kernel-edit");
    compile(&old, &dir.join("old"));
    let plan = compile(&new, &dir.join("new"));
    ns.ok("ip link add eth0 type veth peer name p0 && ip link set eth0 up && ip link set p0 up");
    ns.ok(&format!("sh {}", dir.join("old/apply.sh").display()));
    ns.ok(&format!("sh {}", dir.join("new/apply.sh").display()));
    assert_matches_plan(&ns, &plan);
    let qdiscs = ns.ok("tc qdisc show dev eth0");
    let web = plan.devices[0]
        .classes
        .iter()
        .find(|c| c.name == "pods/web")
        .unwrap();
    let handle = &web.leaf.as_ref().unwrap().handle;
    assert!(
        qdiscs.contains(&format!("qdisc pfifo {handle} ")),
        "{qdiscs}"
    );
    assert_eq!(
        qdiscs.lines().count(),
        1 + plan.devices[0]
            .classes
            .iter()
            .filter(|c| c.leaf.is_some())
            .count(),
        "{qdiscs}"
    );
}

/// Filter nodes on a device, counted once each (u32 lists shared tables under every
/// parent of a priority, so the root's and each class's listing are merged).
fn filter_nodes(ns: &Netns, dev: &str) -> usize {
    let text = ns.ok(&format!(
        "for c in 1: $(tc class show dev {dev} | awk '{{print $3}}'); do tc filter show dev {dev} parent $c; done"
    ));
    let mut nodes: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let fh = word_after(l, "fh")?;
            let pref = word_after(l, "pref")?;
            fh.contains("::").then(|| format!("{pref} {fh}"))
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes.len()
}

/// Issue 18.7: two runs of the apply script at once take turns (a lock per network
/// namespace): the filters are there once, not twice. A re-run of the same script deletes
/// no filter (classification never stops: `tc monitor` sees no deletion), and a run leaves
/// no scratch directory behind, removing one a killed run left.
#[test]
fn the_apply_script_takes_turns_keeps_its_filters_and_cleans_up() {
    let Some(ns) = Netns::new("scriptlock") else {
        return;
    };
    let src = std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap();
    let dir = TempDir::new("kernel-scriptlock");
    let plan = compile(&src, &dir);
    let want = plan.devices[0].filters.len();
    let dev = &plan.devices[0].device;
    ns.ok(&format!(
        "ip link add {dev} type veth peer name p0 && ip link set {dev} up && ip link set p0 up"
    ));
    let run = dir.join("run");
    let script = format!(
        "NETQOS_RUN_DIR={} sh {}",
        run.display(),
        dir.join("apply.sh").display()
    );
    // A killed run's scratch directory (its process is gone).
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let _ = { dead }.wait();
    std::fs::create_dir_all(run.join(format!("work.{dead_pid}"))).unwrap();
    ns.ok(&format!("({script}) & ({script}) & wait"));
    assert_eq!(filter_nodes(&ns, dev), want, "each filter once");
    let left: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("work."))
        .collect();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
    let out = ns.ok(&format!(
        "tc monitor > {m} 2>&1 & pid=$!; sleep 0.3; {script}; sleep 0.3; kill $pid; cat {m}",
        m = dir.join("monitor").display()
    ));
    assert!(
        !out.lines().any(|l| l.starts_with("deleted filter")),
        "a re-run deleted filters:\n{out}"
    );
    assert_eq!(filter_nodes(&ns, dev), want);
    assert_matches_plan(&ns, &plan);
    // An edited policy whose IPv4 rules change: only that list is made again; the IPv6
    // list keeps classifying.
    let edited = src.replace("10.0.0.12 }", "10.0.0.13 }");
    assert_ne!(edited, src);
    let dir2 = TempDir::new("kernel-scriptlock-edit");
    let plan2 = compile(&edited, &dir2);
    let script2 = format!(
        "NETQOS_RUN_DIR={} sh {}",
        run.display(),
        dir2.join("apply.sh").display()
    );
    let out = ns.ok(&format!(
        "tc monitor > {m} 2>&1 & pid=$!; sleep 0.3; {script2}; sleep 0.3; kill $pid; cat {m}",
        m = dir.join("monitor2").display()
    ));
    let deleted: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("deleted filter"))
        .collect();
    assert!(
        !deleted.is_empty() && deleted.iter().all(|l| l.contains("pref 1 ")),
        "only the IPv4 list is re-made:\n{out}"
    );
    assert_matches_plan(&ns, &plan2);
    // Someone deletes a filter by hand: the next run sees it and installs them all again.
    ns.ok(&format!("tc filter del dev {dev} parent 1: prio 1"));
    ns.ok(&script2);
    assert_matches_plan(&ns, &plan2);
}
