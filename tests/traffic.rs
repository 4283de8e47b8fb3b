//! Traffic through the generated scripts: two saturating iperf3 flows, one matching a
//! reserved class and one bulk, through egress shaping and through ingress shaping on an
//! IFB. The reserved flow gets at least 90 % of its guarantee and the bulk flow stays
//! within its ceil. Each run lasts a few seconds; all traffic stays between namespaces.

use std::process::Child;
use std::time::Duration;

use crate::support::*;
use netqos::vars::ExternalVars;

/// Traffic tests measure throughput: run them one at a time so they do not share the CPU
/// (`cni_run` takes the same lock).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn script(src: &str) -> String {
    let model = netqos::check_source(src, &ExternalVars::default())
        .model
        .expect("valid");
    let plan = netqos::lower::lower(&model);
    let t = netqos::backend::Templates::default();
    netqos::backend::tc_script(&netqos::backend::Render::new(&plan, "traffic.nq", &t)).unwrap()
}

/// Runs the reserved (port 5201) and bulk (5202) flows together; returns received Mbit/s.
fn two_flows(client: &Netns, server: &Netns, ip: &str) -> (f64, f64) {
    two_flows_to(client, server, ip, ip)
}

/// Like `two_flows`, with the reserved and bulk flows sent to different addresses.
fn two_flows_to(client: &Netns, server: &Netns, ip_a: &str, ip_b: &str) -> (f64, f64) {
    let mut servers = vec![
        server.spawn(&["iperf3", "-s", "-1", "-p", "5201"]),
        server.spawn(&["iperf3", "-s", "-1", "-p", "5202"]),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let a = client.spawn(&[
        "iperf3", "-c", ip_a, "-p", "5201", "-t", "4", "-O", "1", "-J",
    ]);
    let b = client.spawn(&[
        "iperf3", "-c", ip_b, "-p", "5202", "-t", "4", "-O", "1", "-J",
    ]);
    let rate = |c: Child| -> f64 {
        let out = c.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 output: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6
    };
    let (ra, rb) = (rate(a), rate(b));
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    (ra, rb)
}

const POLICY: &str = "netqos 1\n\ninterface eth0 DIR {\n    rate 100mbit\n\n    class reserved {\n        rate 60mbit\n        ceil 100mbit\n        prio 0\n        match tcp dport 5201\n    }\n    class bulk {\n        rate 20mbit\n        ceil 40mbit\n        prio 1\n        default\n    }\n}\n";

/// Two namespaces joined by `eth0` ↔ `eth0` (10.9.0.1 and .2); `None` (skip) without
/// namespaces or iperf3.
fn setup(tag: &str) -> Option<(Netns, Netns)> {
    if !kernel_tool("iperf3", "iperf3") {
        return None;
    }
    let a = Netns::new(&format!("tr{tag}a"))?;
    let b = a.peer(
        &format!("tr{tag}b"),
        "eth0",
        "10.9.0.1/24",
        "eth0",
        "10.9.0.2/24",
    )?;
    Some((a, b))
}

fn check(reserved: f64, bulk: f64) {
    eprintln!("reserved {reserved:.1} Mbit/s, bulk {bulk:.1} Mbit/s");
    assert!(
        reserved >= 54.0,
        "reserved flow got {reserved:.1} Mbit/s, less than 90 % of 60"
    );
    assert!(
        bulk <= 42.0,
        "bulk flow got {bulk:.1} Mbit/s, above its 40 Mbit/s ceil"
    );
    assert!(bulk > 1.0, "bulk flow starved: {bulk:.1} Mbit/s");
}

#[test]
fn egress_reservation_holds_under_contention() {
    let _serial = serial();
    let Some((a, b)) = setup("eg") else { return };
    let d = TempDir::new("traffic-eg");
    let sh = d.write("apply.sh", script(&POLICY.replace(" DIR", "")));
    a.ok(&format!("sh {}", sh.display()));
    let (reserved, bulk) = two_flows(&a, &b, "10.9.0.2");
    check(reserved, bulk);
}

#[test]
fn ingress_reservation_holds_through_the_ifb() {
    let _serial = serial();
    let Some((a, b)) = setup("in") else { return };
    let d = TempDir::new("traffic-in");
    let sh = d.write("apply.sh", script(&POLICY.replace(" DIR", " ingress")));
    b.ok(&format!("sh {}", sh.display()));
    let (reserved, bulk) = two_flows(&a, &b, "10.9.0.2");
    check(reserved, bulk);
}

/// The seed-002 reservation itself (examples/control-plane.nq): 200 Mbit/s for the control
/// plane on a 1 Gbit/s link saturated by bulk traffic, and nothing in the direct queue.
#[test]
fn seed_002_reservation_holds_and_nothing_bypasses_shaping() {
    let _serial = serial();
    if !kernel_tool("iperf3", "iperf3") {
        return;
    }
    let Some(a) = Netns::new("trseeda") else {
        return;
    };
    let Some(b) = a.peer("trseedb", "eth0", "10.0.0.1/24", "eth0", "10.0.0.10/24") else {
        return;
    };
    b.ok("ip addr add 10.0.0.99/24 dev eth0");
    let src = std::fs::read_to_string(root().join("examples/control-plane.nq")).unwrap();
    let d = TempDir::new("traffic-seed");
    let sh = d.write("apply.sh", script(&src));
    a.ok(&format!("sh {}", sh.display()));
    // 10.0.0.10 is a control-plane address; 10.0.0.99 is bulk.
    let (cp, bulk) = two_flows_to(&a, &b, "10.0.0.10", "10.0.0.99");
    eprintln!("control plane {cp:.1} Mbit/s, bulk {bulk:.1} Mbit/s");
    assert!(
        cp >= 180.0,
        "control plane got {cp:.1} Mbit/s, less than 90 % of 200"
    );
    assert!(
        bulk <= 1050.0,
        "bulk got {bulk:.1} Mbit/s, above the 1 Gbit/s link"
    );
    assert!(
        cp + bulk <= 1050.0,
        "the link carried {:.1} Mbit/s, more than 1 Gbit/s",
        cp + bulk
    );
    let text = a.ok("tc -s qdisc show dev eth0 root");
    assert!(text.contains("direct_packets_stat 0 "), "{text}");
}
