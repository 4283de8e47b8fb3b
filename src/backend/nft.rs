//! netqos's nftables table as text: exactly what `nft list table inet netqos` prints for it
//! (so the live apply can compare the listing with the plan), and the one-transaction input
//! that replaces the table atomically.

use crate::model::Proto;
use crate::plan::{Hook, PodRule, PodRules};

/// The chain of each hook in netqos's table.
pub fn chain(hook: Hook) -> &'static str {
    match hook {
        Hook::Forward => "pods-forward",
        Hook::Output => "pods-output",
    }
}

/// The chain clearing netqos's priorities on the other shaped egress devices.
pub const CLEAR_CHAIN: &str = "pods-clear";

/// `a` or `{ a, b }`, as nft prints a value or an anonymous set.
fn set<T: ToString>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    if v.len() == 1 {
        v[0].clone()
    } else {
        format!("{{ {} }}", v.join(", "))
    }
}

fn l4(p: Proto, family: &str) -> &'static str {
    match (p, family) {
        (Proto::Tcp, _) => "tcp",
        (Proto::Udp, _) => "udp",
        (Proto::Icmp, "ip6") => "ipv6-icmp",
        (Proto::Icmp, _) => "icmp",
    }
}

/// One rule as nft lists it.
pub fn rule(r: &PodRule) -> String {
    let mut parts = Vec::new();
    if !r.saddr.is_empty() {
        parts.push(format!("{} saddr {}", r.family, set(&r.saddr)));
    }
    if !r.daddr.is_empty() {
        parts.push(format!("{} daddr {}", r.family, set(&r.daddr)));
    }
    let ports = !r.sport.is_empty() || !r.dport.is_empty();
    let single = (r.protos.len() == 1).then(|| r.protos[0]);
    match single {
        Some(p @ (Proto::Tcp | Proto::Udp)) if ports => {
            let w = l4(p, r.family);
            if !r.sport.is_empty() {
                parts.push(format!("{w} sport {}", set(&r.sport)));
            }
            if !r.dport.is_empty() {
                parts.push(format!("{w} dport {}", set(&r.dport)));
            }
        }
        _ => {
            if !r.protos.is_empty() {
                let names: Vec<&str> = r.protos.iter().map(|p| l4(*p, r.family)).collect();
                parts.push(format!("meta l4proto {}", set(&names)));
            }
            if !r.sport.is_empty() {
                parts.push(format!("th sport {}", set(&r.sport)));
            }
            if !r.dport.is_empty() {
                parts.push(format!("th dport {}", set(&r.dport)));
            }
        }
    }
    parts.push(format!("meta priority set {} accept", r.classid));
    parts.push(format!("comment \"policy line {}\"", r.line));
    parts.join(" ")
}

/// The table as `nft list table inet netqos` prints it.
pub fn listing(p: &PodRules) -> String {
    let mut chains = Vec::new();
    for hook in [Hook::Forward, Hook::Output] {
        let rules: Vec<&PodRule> = p.rules.iter().filter(|r| r.hook == hook).collect();
        if rules.is_empty() {
            continue;
        }
        let mut c = format!(
            "\tchain {} {{\n\t\ttype filter hook {} priority mangle; policy accept;\n",
            chain(hook),
            hook.as_str()
        );
        for r in rules {
            c.push_str(&format!("\t\t{}\n", rule(r)));
        }
        c.push_str("\t}\n");
        chains.push(c);
    }
    if !p.clear_on.is_empty() {
        let devs: Vec<String> = p.clear_on.iter().map(|d| format!("\"{d}\"")).collect();
        chains.push(format!(
            "\tchain {CLEAR_CHAIN} {{\n\t\ttype filter hook postrouting priority mangle; policy accept;\n\t\toifname {} meta priority 1:0-1:ffff meta priority set none\n\t}}\n",
            set(&devs)
        ));
    }
    format!("table inet {} {{\n{}}}\n", p.table, chains.join("\n"))
}

/// Input for `nft -f`: creates the table if missing, deletes it and adds it as planned, in
/// one transaction (the kernel applies all of it or none).
pub fn replace(p: &PodRules) -> String {
    format!(
        "table inet {t}\ndelete table inet {t}\n{}",
        listing(p),
        t = p.table
    )
}

/// Input for `nft -f` that removes the table if it exists (idempotent, one transaction).
pub fn remove(table: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cidr, PortRange};

    fn c(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }
    }

    #[test]
    fn rules_read_as_nft_lists_them() {
        let mut r = PodRule {
            hook: Hook::Forward,
            family: "ip",
            saddr: vec![c("10.42.0.6/32")],
            daddr: Vec::new(),
            protos: Vec::new(),
            sport: Vec::new(),
            dport: Vec::new(),
            classid: crate::plan::Handle::class(0xdf9e),
            line: 12,
        };
        assert_eq!(
            rule(&r),
            "ip saddr 10.42.0.6 meta priority set 1:df9e accept comment \"policy line 12\""
        );
        r.saddr.push(c("10.42.3.0/24"));
        r.protos = vec![Proto::Tcp, Proto::Udp];
        r.dport = vec![
            PortRange { lo: 80, hi: 80 },
            PortRange { lo: 2379, hi: 2380 },
        ];
        assert_eq!(
            rule(&r),
            "ip saddr { 10.42.0.6, 10.42.3.0/24 } meta l4proto { tcp, udp } th dport { 80, 2379-2380 } meta priority set 1:df9e accept comment \"policy line 12\""
        );
    }
}
