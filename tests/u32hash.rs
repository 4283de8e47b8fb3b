//! Hashed u32 classification (issue 16): a small u32 interpreter over the plan's filters
//! (lists by priority, hash tables, links, masks, offsets, HTB's descent through inner
//! classes) compares the hashed lowering with the linear one packet by packet on random
//! policies (IPv4, IPv6, ports, VXLAN inner headers, truncated packets); and, on a real
//! kernel in namespaces, a hashed policy applied by script and over netlink classifies
//! traffic into the planned classes, re-applies as a no-op, and rolls back.
//!
//! Kernel tests skip only when namespaces are unavailable and `NETQOS_REQUIRE_NETNS` is
//! unset.

use std::collections::BTreeMap;

use crate::support::*;

use netqos::apply::keys::encode;
use netqos::plan::{DevicePlan, FilterAction, Handle, Plan, Protocol};
use netqos::vars::ExternalVars;

// ---------------------------------------------------------------------------------------
// The interpreter

/// A packet as u32 sees it: bytes from the network header, and its ethertype.
struct Packet {
    v4: bool,
    bytes: Vec<u8>,
}

impl Packet {
    fn word(&self, off: i32) -> Option<u32> {
        let at = usize::try_from(off).ok()?;
        let b = self.bytes.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// What one u32 list did with a packet.
enum Walk {
    Class(Handle),
    /// No node took it: the next list.
    Miss,
    /// A key or hash read past the packet's end: the kernel leaves this list.
    Abort,
}

/// A node with its keys as the kernel holds them.
struct Node {
    keys: Vec<netqos::apply::model::Key>,
    action: FilterAction,
}

/// The nodes of one list, by table: `None` the list's own table, `Some(raw bucket)`.
type Tables = BTreeMap<Option<u32>, Vec<Node>>;

fn walk(tables: &Tables, at: Option<u32>, p: &Packet, depth: u32) -> Walk {
    assert!(depth < 8, "u32 link loop");
    for n in tables.get(&at).map_or(&[][..], Vec::as_slice) {
        let mut fits = true;
        for k in &n.keys {
            let Some(w) = p.word(k.off) else {
                return Walk::Abort;
            };
            if (w ^ k.val) & k.mask != 0 {
                fits = false;
                break;
            }
        }
        if !fits {
            continue;
        }
        match n.action {
            FilterAction::Class { target } => return Walk::Class(target),
            FilterAction::Link { link, hashkey } => {
                let Some(w) = p.word(i32::from(hashkey.at)) else {
                    return Walk::Abort;
                };
                let bucket = link.raw() | (u32::from(hashkey.bucket(w)) << 12);
                match walk(tables, Some(bucket), p, depth + 1) {
                    Walk::Miss => {}
                    other => return other,
                }
            }
        }
    }
    Walk::Miss
}

/// One device's filters as HTB and u32 evaluate them.
struct Tree {
    /// Lists in evaluation order: (parent, priority, protocol).
    lists: BTreeMap<(Handle, u16, Protocol), Tables>,
    leaves: std::collections::BTreeSet<Handle>,
    default: Handle,
}

impl Tree {
    fn new(d: &DevicePlan) -> Tree {
        let mut lists: BTreeMap<(Handle, u16, Protocol), Tables> = BTreeMap::new();
        for f in &d.filters {
            lists
                .entry((f.parent, f.prio, f.protocol))
                .or_default()
                .entry(f.ht.map(|b| b.raw()))
                .or_default()
                .push(Node {
                    keys: encode(&f.keys),
                    action: f.action,
                });
        }
        Tree {
            lists,
            leaves: d
                .classes
                .iter()
                .filter(|c| c.leaf.is_some())
                .map(|c| c.classid)
                .collect(),
            default: Handle::class(d.root.default.0),
        }
    }

    /// The class HTB gives the packet: each level's lists in priority order until one
    /// classifies it; an inner class's own lists next; the root's default when a level
    /// has no answer.
    fn classify(&self, p: &Packet) -> Handle {
        let mut parent = Handle::ROOT;
        for _ in 0..16 {
            let mut got = None;
            for ((par, _, proto), tables) in &self.lists {
                let applies = match proto {
                    Protocol::Ip => p.v4,
                    Protocol::Ipv6 => !p.v4,
                    Protocol::All => true,
                };
                if *par != parent || !applies {
                    continue;
                }
                if let Walk::Class(c) = walk(tables, None, p, 0) {
                    got = Some(c);
                    break;
                }
            }
            match got {
                Some(c) if self.leaves.contains(&c) => return c,
                Some(c) => parent = c,
                None => return self.default,
            }
        }
        panic!("classification does not end");
    }
}

// ---------------------------------------------------------------------------------------
// Random policies and packets

/// Addresses a policy uses, so packets can aim at them.
#[derive(Default)]
struct Pool {
    v4: Vec<[u8; 4]>,
    v6: Vec<[u8; 16]>,
    pods: Vec<[u8; 4]>,
    ports: Vec<u16>,
    used: std::collections::BTreeSet<String>,
}

/// A host no earlier line names (a repeated host would be shadowed: NQ023), in 10.0.0-2.x
/// (10.0.3.x for `third`).
fn host4(rng: &mut Rng, pool: &mut Pool, third: Option<u8>) -> String {
    loop {
        let c = third.unwrap_or_else(|| rng.below(3) as u8);
        let a = [10, 0, c, 1 + rng.below(254) as u8];
        let s = format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        if pool.used.insert(s.clone()) {
            pool.v4.push(a);
            return s;
        }
    }
}

fn host6(rng: &mut Rng, pool: &mut Pool) -> String {
    loop {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[7] = rng.below(2) as u8;
        a[14] = rng.below(3) as u8;
        a[15] = rng.below(256) as u8;
        let s = std::net::Ipv6Addr::from(a).to_string();
        if pool.used.insert(s.clone()) {
            pool.v6.push(a);
            return s;
        }
    }
}

/// One class's match line. Broad prefixes are in 10.0.3.x, 10.0.5.x and fd00:0:0:5::/64, where
/// hosts appear only beside a second host, so they shadow part of a line but no whole
/// line (NQ023).
fn match_line(rng: &mut Rng, pool: &mut Pool, pods: bool, narrow: bool) -> String {
    let roll = match (narrow, rng.below(10)) {
        (true, 0..=2) => 72 + rng.below(12),
        (true, _) => rng.below(67),
        (false, _) => rng.below(100),
    };
    let port = [80u16, 443, 8080, 53][(roll % 4) as usize];
    match roll {
        _ if pods && roll < 30 => loop {
            let a = [10, 42, rng.below(2) as u8, 1 + rng.below(254) as u8];
            let s = format!("10.42.{}.{}", a[2], a[3]);
            if pool.used.insert(s.clone()) {
                pool.pods.push(a);
                return format!("match pod dst {s}");
            }
        },
        0..=54 => format!("match dst {}", host4(rng, pool, None)),
        55..=59 => {
            let third = *rng.pick(&[3u8, 5]);
            let first = host4(rng, pool, Some(third));
            format!("match dst {first}, {}", host4(rng, pool, None))
        }
        60..=64 => {
            let net = format!("10.0.3.{}/30", 4 * rng.below(63));
            if !pool.used.insert(net.clone()) {
                return format!("match dst {}", host4(rng, pool, None));
            }
            format!("match dst {net}")
        }
        65..=66 if pool.used.insert("10.0.5.0/24".into()) => "match dst 10.0.5.0/24".into(),
        65..=71 => format!("match src {}", host4(rng, pool, None)),
        72..=83 => format!("match dst {}", host6(rng, pool)),
        84..=85 if pool.used.insert("fd00:0:0:5::/64".into()) => "match dst fd00:0:0:5::/64".into(),
        84..=92 => {
            pool.ports.push(port);
            format!("match dst {} tcp dport {port}", host4(rng, pool, None))
        }
        _ => {
            pool.ports.push(port);
            format!("match dst {} dport {port}", host4(rng, pool, None))
        }
    }
}

/// A random policy: many flat host classes, sometimes a group (last, matching the whole
/// test range) with its own host children (an inner class's lists), sometimes an ingress
/// tree with VXLAN pod matches.
fn policy(rng: &mut Rng, pool: &mut Pool) -> String {
    let ingress = rng.chance(25);
    // Mostly address rules (long runs to hash), or any mix.
    let narrow = rng.chance(50);
    let mut s = String::from("netqos 1\n\n");
    if ingress {
        s.push_str("pods {\n    cidr 10.42.0.0/16\n    overlay vxlan 8472\n}\n\n");
    }
    s.push_str("interface eth0");
    s.push_str(if ingress { " ingress" } else { "" });
    s.push_str(" {\n    rate 10gbit\n");
    let n = 10 + rng.below(90);
    for i in 0..n {
        s.push_str(&format!("    class c{i} {{\n        rate 1mbit\n"));
        s.push_str(&format!(
            "        {}\n",
            match_line(rng, pool, ingress, narrow)
        ));
        s.push_str("    }\n");
    }
    if rng.chance(50) {
        s.push_str(
            "    class group {\n        rate 1mbit\n        match dst 10.0.0.0/14, fd00::/16\n",
        );
        for k in 0..(16 + rng.below(30)) {
            s.push_str(&format!("        class g{k} {{\n            rate 10kbit\n"));
            s.push_str(&format!(
                "            {}\n",
                match_line(rng, pool, false, narrow)
            ));
            s.push_str("        }\n");
        }
        s.push_str("        class grest {\n            rate 10kbit\n            default\n        }\n    }\n");
    }
    s.push_str("    class rest {\n        rate 1mbit\n        default\n    }\n}\n");
    s
}

fn addr4(rng: &mut Rng, pool: &[[u8; 4]], base: [u8; 2]) -> [u8; 4] {
    if !pool.is_empty() && rng.chance(70) {
        let mut a = *rng.pick(pool);
        if rng.chance(10) {
            a[3] ^= 1 << rng.below(8);
        }
        return a;
    }
    [base[0], base[1], rng.below(6) as u8, rng.below(256) as u8]
}

/// IPv4 header (options, fragments and protocols sometimes odd) and 8 bytes of L4.
fn ip4(rng: &mut Rng, pool: &Pool, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let ihl = if rng.chance(10) { 6 } else { 5 };
    let mut b = vec![0u8; 4 * ihl + 8];
    b[0] = 0x40 | ihl as u8;
    if rng.chance(10) {
        b[6] = rng.below(2) as u8;
        b[7] = rng.below(256) as u8;
    }
    b[9] = *rng.pick(&[6u8, 17, 6, 17, 1, 47]);
    b[12..16].copy_from_slice(&src);
    b[16..20].copy_from_slice(&dst);
    let port = |rng: &mut Rng| {
        if !pool.ports.is_empty() && rng.chance(60) {
            *rng.pick(&pool.ports)
        } else {
            rng.below(65536) as u16
        }
    };
    let l4 = 4 * ihl;
    let (sp, dp) = (port(rng), port(rng));
    b[l4..l4 + 2].copy_from_slice(&sp.to_be_bytes());
    b[l4 + 2..l4 + 4].copy_from_slice(&dp.to_be_bytes());
    b
}

fn ip6(rng: &mut Rng, pool: &Pool) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0] = 0x60;
    b[6] = *rng.pick(&[6u8, 17, 58]);
    let addr = |rng: &mut Rng| {
        if !pool.v6.is_empty() && rng.chance(70) {
            let mut a = *rng.pick(&pool.v6);
            if rng.chance(10) {
                a[15] ^= 1;
            }
            a
        } else {
            let mut a = [0u8; 16];
            a[0] = 0xfd;
            a[7] = *rng.pick(&[0u8, 1, 5]);
            a[15] = rng.below(256) as u8;
            a
        }
    };
    let (s, d) = (addr(rng), addr(rng));
    b[8..24].copy_from_slice(&s);
    b[24..40].copy_from_slice(&d);
    b[42..44].copy_from_slice(&rng.pick(&[80u16, 443, 53, 9]).to_be_bytes());
    b
}

/// An outer IPv4 VXLAN packet (UDP 8472) around an inner IPv4 pod packet.
fn vxlan(rng: &mut Rng, pool: &Pool) -> Vec<u8> {
    let mut outer = ip4(rng, pool, [10, 0, 9, 1], [10, 0, 9, 2]);
    outer.truncate(28);
    outer[0] = 0x45;
    outer[6] = 0;
    outer[7] = 0;
    outer[9] = 17;
    outer[22..24].copy_from_slice(&8472u16.to_be_bytes());
    let mut inner_eth = vec![0u8; 8 + 14];
    inner_eth[20..22].copy_from_slice(&0x0800u16.to_be_bytes());
    let (s, d) = (
        addr4(rng, &pool.pods, [10, 42]),
        addr4(rng, &pool.pods, [10, 42]),
    );
    let inner = ip4(rng, pool, s, d);
    [outer, inner_eth, inner].concat()
}

fn packet(rng: &mut Rng, pool: &Pool) -> Packet {
    let mut p = match rng.below(10) {
        0..=5 => {
            let (s, d) = (addr4(rng, &pool.v4, [10, 0]), addr4(rng, &pool.v4, [10, 0]));
            Packet {
                v4: true,
                bytes: ip4(rng, pool, s, d),
            }
        }
        6..=7 => Packet {
            v4: false,
            bytes: ip6(rng, pool),
        },
        _ => Packet {
            v4: true,
            bytes: vxlan(rng, pool),
        },
    };
    if rng.chance(5) {
        let len = rng.below(p.bytes.len() as u64) as usize;
        p.bytes.truncate(len);
    }
    p
}

fn plans(src: &str) -> Option<(Plan, Plan)> {
    let model = netqos::check_source(src, &ExternalVars::default()).model?;
    Some((
        netqos::lower::lower(&model),
        netqos::lower::lower_linear(&model),
    ))
}

#[test]
fn hashed_and_linear_lowering_classify_every_packet_alike() {
    let mut rng = Rng(0x5eed_0032_9e37_79b9);
    let (mut checked, mut hashed, mut packets) = (0, 0, 0);
    for _ in 0..100 {
        let mut pool = Pool::default();
        let src = policy(&mut rng, &mut pool);
        let Some((h, l)) = plans(&src) else {
            if std::env::var_os("U32HASH_DEBUG").is_some() {
                let r = netqos::check_source(&src, &ExternalVars::default());
                let codes: Vec<String> = r
                    .diagnostics
                    .iter()
                    .map(|d| format!("{:?}", d.code))
                    .collect();
                eprintln!("invalid: {codes:?}");
                for d in r
                    .diagnostics
                    .iter()
                    .filter(|d| format!("{:?}", d.code) == "NQ023")
                    .take(1)
                {
                    eprintln!("NQ023MSG {}", d.message);
                }
            }
            continue;
        };
        checked += 1;
        for (dh, dl) in h.devices.iter().zip(&l.devices) {
            assert!(dl.hash_tables.is_empty() && dl.filters.iter().all(|f| f.ht.is_none()));
            hashed += usize::from(!dh.hash_tables.is_empty());
            let (th, tl) = (Tree::new(dh), Tree::new(dl));
            for _ in 0..400 {
                let p = packet(&mut rng, &pool);
                packets += 1;
                assert_eq!(
                    th.classify(&p),
                    tl.classify(&p),
                    "packet {:02x?} (v4 {}) of policy:\n{src}",
                    p.bytes,
                    p.v4
                );
            }
        }
    }
    // Two levels: 2,400 hosts, about ten per bucket of the last byte.
    let mut pool = Pool::default();
    let mut src = String::from("netqos 1\n\ninterface eth0 {\n    rate 10gbit\n");
    src.push_str("    class wide {\n        rate 1mbit\n        match dst 10.0.0.0/30, 10.0.30.0/24\n    }\n");
    for i in 0..2400u32 {
        let a = [10, 0, (i / 240) as u8, (i % 240 + 4) as u8];
        pool.v4.push(a);
        src.push_str(&format!(
            "    class h{i} {{\n        rate 1kbit\n        match dst 10.0.{}.{}\n    }}\n",
            a[2], a[3]
        ));
    }
    src.push_str("    class rest {\n        rate 1mbit\n        default\n    }\n}\n");
    let (h, l) = plans(&src).expect("valid");
    let d = &h.devices[0];
    assert!(d.hash_tables.len() > 100, "{} tables", d.hash_tables.len());
    let (th, tl) = (Tree::new(d), Tree::new(&l.devices[0]));
    for _ in 0..20_000 {
        let p = packet(&mut rng, &pool);
        assert_eq!(th.classify(&p), tl.classify(&p), "packet {:02x?}", p.bytes);
    }
    // The generator must produce valid policies, and most must hash something.
    assert!(checked >= 80, "only {checked} random policies were valid");
    assert!(hashed * 2 >= checked, "only {hashed} of {checked} hashed");
    assert!(packets >= 32_000, "{packets} packets");
}

// ---------------------------------------------------------------------------------------
// On a real kernel

/// 300 host classes (one hashed run) behind a broader `/29` that must win
/// for the addresses it covers, and the hosts reached through the peer.
fn kernel_policy() -> String {
    let mut s = String::from(
        "netqos 1\n\ninterface eth0 {\n    rate 1gbit\n    class broad {\n        rate 1mbit\n        match dst 10.9.0.0/29\n    }\n",
    );
    for i in 1..=300u32 {
        let line = if i < 8 {
            format!("10.9.0.{i}, 10.9.5.{i}")
        } else {
            format!("10.9.{}.{}", i / 250, i % 250 + 1)
        };
        s.push_str(&format!(
            "    class h{i} {{\n        rate 1mbit\n        match dst {line}\n    }}\n"
        ));
    }
    s.push_str("    class rest {\n        rate 10mbit\n        default\n    }\n}\n");
    s
}

/// Where each probe must land: (address, class name).
const PROBES: &[(&str, &str)] = &[
    ("10.9.0.3", "broad"),
    ("10.9.5.3", "h3"),
    ("10.9.0.9", "h8"),
    ("10.9.0.250", "h249"),
    ("10.9.1.1", "h250"),
    ("10.9.1.51", "h300"),
    ("10.9.7.7", "rest"),
];

/// `eth0` (10.0.0.1/24) joined to a peer namespace, 10.9.0.0/16 routed through it.
fn lab(tag: &str) -> Option<(Netns, Netns)> {
    let ns = Netns::new(&format!("u32hash-{tag}"))?;
    let peer = ns.peer(
        &format!("u32hash-{tag}p"),
        "eth0",
        "10.0.0.1/24",
        "peer0",
        "10.0.0.2/24",
    )?;
    ns.ok("ip route add 10.9.0.0/16 via 10.0.0.2");
    ns.ok("ping -c 1 -W 2 10.0.0.2 >/dev/null");
    Some((ns, peer))
}

/// Sends pings to every probe at once, then checks each probe's class counted them and
/// classes no probe aims at counted nothing.
fn assert_probes_classified(ns: &Netns, plan: &Plan) {
    let class = |name: &str| {
        plan.devices[0]
            .classes
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("class {name}"))
            .classid
            .to_string()
    };
    let before = ns.ok("tc -s class show dev eth0");
    let pings: Vec<String> = PROBES
        .iter()
        .map(|(a, _)| format!("timeout 5 ping -c 3 -i 0.2 -w 2 {a} >/dev/null &"))
        .collect();
    ns.sh(&format!("{} wait", pings.join(" ")));
    let after = ns.ok("tc -s class show dev eth0");
    for (addr, name) in PROBES {
        let id = class(name);
        let grew = sent(&after, &id) - sent(&before, &id);
        assert!(
            grew >= 3 * 84,
            "{addr} → {name} ({id}): {grew} bytes\n{after}"
        );
    }
    for idle in ["h1", "h2", "h4", "h100", "h299"] {
        let id = class(idle);
        assert_eq!(
            sent(&after, &id),
            0,
            "{idle} ({id}) counted traffic\n{after}"
        );
    }
}

/// Bytes a class has sent, from `tc -s class show`.
fn sent(stats: &str, classid: &str) -> u64 {
    let mut lines = stats.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().nth(2) == Some(classid) {
            let next = lines.next().unwrap_or("");
            let mut w = next.split_whitespace();
            while let Some(x) = w.next() {
                if x == "Sent" {
                    return w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                }
            }
        }
    }
    0
}

fn compiled(dir: &TempDir, src: &str) -> Plan {
    let policy = dir.write("policy.nq", src);
    cli(["compile"])
        .arg(&policy)
        .args(["-o"])
        .arg(dir.path())
        .args(["--emit", "tc,rollback"])
        .code(0);
    let model = netqos::check_source(src, &ExternalVars::default())
        .model
        .expect("valid policy");
    netqos::lower::lower(&model)
}

#[test]
fn hashed_policy_by_script_classifies_reapplies_and_rolls_back() {
    let Some((ns, _peer)) = lab("s") else {
        return;
    };
    let dir = TempDir::new("u32hash-script");
    let plan = compiled(&dir, &kernel_policy());
    assert_eq!(plan.devices[0].hash_tables.len(), 1);
    let apply = format!("sh {}/netqos-apply.sh", dir.path().display());
    ns.ok(&apply);
    let filters = "tc filter show dev eth0";
    let first = ns.ok(filters);
    assert!(
        first.contains("ht divisor 256") && first.contains("link 1:"),
        "{first}"
    );
    assert_probes_classified(&ns, &plan);
    ns.ok(&apply);
    assert_eq!(ns.ok(filters), first, "a second run changes the filters");
    // netlink reads the script's tree as its own: no filter to change.
    let state = dir.join("state");
    let planned = ns
        .netqos(["plan"])
        .arg(dir.join("policy.nq"))
        .env("NETQOS_STATE_DIR", &state)
        .code(0)
        .text();
    assert!(!planned.contains("filter"), "{planned}");
    ns.ok(&format!("sh {}/netqos-rollback.sh", dir.path().display()));
    assert!(ns.ok(filters).is_empty());
    assert!(
        ns.ok("tc qdisc show dev eth0 root")
            .starts_with("qdisc noqueue")
    );
}

#[test]
fn hashed_policy_over_netlink_classifies_reapplies_and_rolls_back() {
    let Some((ns, _peer)) = lab("n") else {
        return;
    };
    let dir = TempDir::new("u32hash-netlink");
    let plan = compiled(&dir, &kernel_policy());
    let policy = dir.join("policy.nq");
    let state = dir.join("state");
    let netqos = |args: &[&str]| ns.netqos(args).arg(&policy).env("NETQOS_STATE_DIR", &state);
    netqos(&["apply"]).code(0);
    assert_probes_classified(&ns, &plan);
    let again = netqos(&["apply"]).code(0).text();
    assert!(again.contains("nothing to change"), "{again}");
    let status = ns
        .netqos(["status"])
        .env("NETQOS_STATE_DIR", &state)
        .run()
        .text();
    assert!(status.contains("drift: none"), "{status}");
    ns.netqos(["rollback"])
        .env("NETQOS_STATE_DIR", &state)
        .code(0);
    assert!(ns.ok("tc filter show dev eth0").is_empty());
    assert!(
        ns.ok("tc qdisc show dev eth0 root")
            .starts_with("qdisc noqueue")
    );
}
