//! Golden bytes: netqos's netlink requests equal what `tc` and `ip` (iproute2 6.1) send for
//! the same objects, captured with strace by `tests/fixtures/netlink/capture.sh`. The one
//! intended difference: tc's legacy rate tables (HTB RTAB/CTAB, TBF RTAB), which kernels
//! since 3.11 do not use, are removed from tc's bytes before comparing. Sequence numbers
//! are zeroed; the ifindex is taken from the capture.

use netqos::apply::model::*;
use netqos::apply::netlink::nla::{self, MsgWriter};
use netqos::apply::netlink::{link, tc};
use netqos::plan::{End, Family, Selector};

fn golden(name: &str) -> Vec<u8> {
    let path = crate::support::root().join(format!("tests/fixtures/netlink/{name}.hex"));
    let hex = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// tc's message without rate tables, seq zeroed.
fn strip_tables(msg: &[u8]) -> Vec<u8> {
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    let flags = u16::from_ne_bytes([msg[6], msg[7]]);
    let mut w = MsgWriter::new(kind, flags);
    w.raw(&msg[16..36]);
    let attrs = nla::attrs(&msg[36..]).expect("attrs");
    let tc_kind = attrs
        .iter()
        .find(|a| a.kind == 1)
        .map(|a| nla::string(a.payload).expect("kind"))
        .unwrap_or_default();
    let tables: &[u16] = match tc_kind.as_str() {
        "htb" => &[3, 4],
        "tbf" => &[2, 3],
        _ => &[],
    };
    for a in attrs {
        if a.kind == 2 && !tables.is_empty() {
            w.begin_nest(2);
            for i in nla::attrs(a.payload).expect("options") {
                if !tables.contains(&i.kind) {
                    w.attr(i.kind, i.payload);
                }
            }
            w.end_nest();
        } else {
            w.attr(a.kind, a.payload);
        }
    }
    w.finish(0)
}

fn zero_seq(mut b: Vec<u8>) -> Vec<u8> {
    b[8..12].copy_from_slice(&[0; 4]);
    b
}

fn ifindex(msg: &[u8]) -> i32 {
    i32::from_ne_bytes([msg[20], msg[21], msg[22], msg[23]])
}

fn check(name: &str, mine: &MsgWriter, strip: bool) {
    let g = golden(name);
    let want = if strip { strip_tables(&g) } else { zero_seq(g) };
    let have = mine.finish(0);
    assert_eq!(
        hex(&have),
        hex(&want),
        "{name}: netqos's bytes (left) differ from tc's (right)"
    );
}

fn hex(b: &[u8]) -> String {
    b.chunks(4)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn q(parent: u32, handle: u32, kind: QdiscKind) -> Qdisc {
    Qdisc {
        dev: "v0".into(),
        parent,
        handle,
        kind,
    }
}

fn class(classid: u32, parent: u32, rate: u64, ceil: u64, burst: u64, cburst: u64) -> Class {
    Class {
        dev: "v0".into(),
        classid,
        parent,
        rate,
        ceil,
        buffer: ticks(rate, burst),
        cbuffer: ticks(ceil, cburst),
        quantum: None,
        prio: 0,
    }
}

#[test]
fn htb_root() {
    let i = ifindex(&golden("htb_root"));
    let root = q(
        H_ROOT,
        0x1_0000,
        QdiscKind::Htb {
            default: 0x10,
            r2q: 10,
            direct_qlen: 1000,
        },
    );
    check(
        "htb_root",
        &tc::qdisc_request(i, &root, tc::Mode::Add),
        false,
    );
}

#[test]
fn htb_classes_including_64_bit_rates() {
    let i = ifindex(&golden("htb_class"));
    let mut c = class(0x1_0001, 0x1_0000, 1_000_000, 2_000_000, 10_000, 20_000);
    c.prio = 1;
    c.quantum = Some(1514);
    check("htb_class", &tc::class_request(i, &c, tc::Mode::Add), true);
    let mut c = class(0x1_0001, 0x1_0000, 2_000_000, 2_000_000, 20_000, 20_000);
    c.prio = 2;
    c.quantum = Some(3000);
    check(
        "htb_class_change",
        &tc::class_request(i, &c, tc::Mode::Change),
        true,
    );
    // 40gbit: above 2^32 bytes/s, so RATE64/CEIL64 carry the rate.
    let mut c = class(
        0x1_0002,
        0x1_0001,
        5_000_000_000,
        5_000_000_000,
        5_000_000,
        5_000_000,
    );
    c.quantum = Some(200_000);
    check(
        "htb_class_64",
        &tc::class_request(i, &c, tc::Mode::Add),
        true,
    );
    check(
        "class_del",
        &tc::class_delete(i, &class(0x1_0003, 0, 1, 1, 1, 1)),
        false,
    );
}

#[test]
fn leaf_qdiscs() {
    let i = ifindex(&golden("tbf"));
    let tbf = q(
        0x1_0002,
        0x10_0000,
        QdiscKind::Tbf {
            rate: 1_000_000,
            peakrate: 0,
            limit: 20_000,
            buffer: ticks(1_000_000, 10_000),
            mtu: 0,
            burst: Some(10_000),
            pburst: None,
        },
    );
    check("tbf", &tc::qdisc_request(i, &tbf, tc::Mode::Add), true);
    let pfifo = q(0x1_0003, 0x20_0000, QdiscKind::Pfifo { limit: Some(100) });
    check("pfifo", &tc::qdisc_request(i, &pfifo, tc::Mode::Add), false);
    let bfifo = q(
        0x1_0003,
        0x20_0000,
        QdiscKind::Bfifo {
            limit: Some(50_000),
        },
    );
    check("bfifo", &tc::qdisc_request(i, &bfifo, tc::Mode::Add), false);
    check("qdisc_del", &tc::qdisc_delete(i, &pfifo), false);
}

#[test]
fn ingress_and_clsact() {
    let i = ifindex(&golden("ingress"));
    let ing = q(H_INGRESS, H_INGRESS_QDISC, QdiscKind::Ingress);
    check("ingress", &tc::qdisc_request(i, &ing, tc::Mode::Add), false);
    let i = ifindex(&golden("clsact"));
    let cls = q(H_INGRESS, H_INGRESS_QDISC, QdiscKind::Clsact);
    check("clsact", &tc::qdisc_request(i, &cls, tc::Mode::Add), false);
}

fn filter(
    parent: u32,
    prio: u16,
    protocol: u16,
    handle: u32,
    sel: &[(&str, Selector)],
    action: Action,
) -> Filter {
    // The text is what capture.sh gave tc for the golden bytes.
    for (text, s) in sel {
        assert_eq!(s.to_string(), *text);
    }
    let sel: Vec<Selector> = sel.iter().map(|(_, s)| *s).collect();
    Filter {
        dev: "v0".into(),
        parent,
        prio,
        protocol,
        handle,
        keys: netqos::apply::keys::encode(&sel),
        action,
    }
}

fn protocol(family: Family, number: u8) -> Selector {
    Selector::Protocol { family, number }
}

fn addr(end: End, addr: &str, prefix: u8) -> Selector {
    Selector::Addr {
        end,
        cidr: netqos::model::Cidr {
            addr: addr.parse().expect("address"),
            prefix,
        },
    }
}

fn port(family: Family, end: End, value: u16, mask: u16) -> Selector {
    Selector::Port {
        family,
        end,
        value,
        mask,
    }
}

#[test]
fn u32_filters_and_redirect() {
    let i = ifindex(&golden("u32_ip"));
    let f = filter(
        0x1_0000,
        1,
        ETH_P_IP,
        0x800,
        &[
            ("ip protocol 6 0xff", protocol(Family::V4, 6)),
            ("ip dst 10.0.0.0/8", addr(End::Dst, "10.0.0.0", 8)),
            ("u8 0x05 0x0f at 0", Selector::Ipv4NoOptions),
            ("u16 0x0000 0x1fff at 6", Selector::Ipv4FirstFragment),
            (
                "ip sport 1024 0xfc00",
                port(Family::V4, End::Src, 1024, 0xfc00),
            ),
            (
                "ip dport 2379 0xffff",
                port(Family::V4, End::Dst, 2379, 0xffff),
            ),
        ],
        Action::Flow { classid: 0x1_0001 },
    );
    check(
        "u32_ip",
        &tc::filter_request(i, &f, tc::Mode::Add, None),
        false,
    );
    let f = filter(
        0x1_0001,
        30001,
        ETH_P_IPV6,
        0x801,
        &[
            ("ip6 protocol 17 0xff", protocol(Family::V6, 17)),
            ("ip6 src fd00:1::/40", addr(End::Src, "fd00:1::", 40)),
            ("ip6 dst fd00::1/128", addr(End::Dst, "fd00::1", 128)),
            (
                "ip6 dport 8472 0xffff",
                port(Family::V6, End::Dst, 8472, 0xffff),
            ),
        ],
        Action::Flow { classid: 0x1_0002 },
    );
    check(
        "u32_ip6",
        &tc::filter_request(i, &f, tc::Mode::Add, None),
        false,
    );
    let mut f = filter(
        0x1_0001,
        60001,
        ETH_P_ALL,
        0x800,
        &[("u32 0 0", Selector::Any)],
        Action::Flow { classid: 0x1_0002 },
    );
    check(
        "u32_all",
        &tc::filter_request(i, &f, tc::Mode::Add, None),
        false,
    );
    f.handle = 0x8000_0800;
    check("filter_del", &tc::filter_delete(i, &f), false);
    let g = golden("redirect");
    // The mirred target's ifindex is the word before the selector (36 bytes).
    let tail = &g[g.len() - 36 - 4..];
    let target = i32::from_ne_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let f = netqos::apply::state::redirect_filter("v0", H_CLSACT_INGRESS, "ifb0");
    check(
        "redirect",
        &tc::filter_request(ifindex(&g), &f, tc::Mode::Add, Some(target)),
        false,
    );
}

#[test]
fn links() {
    let l = Link {
        name: "ifb9".into(),
        kind: "ifb".into(),
        up: true,
    };
    check("ifb_add", &link::add(&l), false);
    let g = golden("link_up");
    check("link_up", &link::set_up(ifindex(&g), true), false);
}

#[test]
fn decoding_rejects_truncated_messages_without_panicking() {
    let g = golden("htb_class");
    for n in [0, 5, 19, 20, 30, 40] {
        let cut = &g[16..(16 + n).min(g.len())];
        let _ = tc::decode_class(cut);
        let _ = tc::decode_qdisc(cut);
        let _ = tc::decode_filter(cut);
    }
    let mut bad = g[16..].to_vec();
    bad[20] = 0xff; // first attribute length beyond the buffer
    bad[21] = 0x0f;
    assert!(tc::decode_class(&bad).is_err());
}

#[test]
fn u32_hash_table_link_and_bucket_node() {
    let i = ifindex(&golden("u32_table"));
    let table = Filter {
        dev: "v0".into(),
        parent: 0x1_0000,
        prio: 1,
        protocol: ETH_P_IP,
        handle: 0x0010_0000,
        keys: Vec::new(),
        action: Action::Table { divisor: 256 },
    };
    check(
        "u32_table",
        &tc::filter_request(i, &table, tc::Mode::Add, None),
        false,
    );
    let link = filter(
        0x1_0000,
        1,
        ETH_P_IP,
        0x801,
        &[(
            "u32 0x00000000 0x00000000 at 16",
            Selector::U32 {
                value: 0,
                mask: 0,
                at: 16,
            },
        )],
        Action::Link {
            link: 0x0010_0000,
            hmask: 0xff,
            hoff: 16,
        },
    );
    check(
        "u32_link",
        &tc::filter_request(i, &link, tc::Mode::Add, None),
        false,
    );
    let node = filter(
        0x1_0000,
        1,
        ETH_P_IP,
        0x0017_b800,
        &[("ip dst 10.0.0.123/32", addr(End::Dst, "10.0.0.123", 32))],
        Action::Flow { classid: 0x1_0001 },
    );
    check(
        "u32_bucket",
        &tc::filter_request(i, &node, tc::Mode::Add, None),
        false,
    );
}
