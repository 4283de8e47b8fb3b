//! Capability probes: each qdisc, classifier and action a plan needs is created on a veth
//! device inside a scratch network namespace `nqdoctor-PID` that the probe creates and
//! deletes, so the node's own devices are never touched. Runs `ip` and `tc` (iproute2) with
//! `-n NS`, and `nft` inside the namespace.

use std::process::{Command, Stdio};

use crate::model::{Direction, LeafQdisc, Model};

/// One kernel feature netqos may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cap {
    Htb,
    U32,
    FqCodel,
    Sfq,
    Tbf,
    Pfifo,
    /// An IFB device with an `ingress` qdisc redirecting to it (`mirred`): ingress shaping.
    IfbRedirect,
    /// nftables (the `nft` tool and the kernel's `nf_tables`): classifying pod traffic.
    Nft,
}

impl Cap {
    pub fn name(self) -> &'static str {
        match self {
            Cap::Htb => "htb qdisc",
            Cap::U32 => "u32 classifier",
            Cap::FqCodel => "fq_codel qdisc",
            Cap::Sfq => "sfq qdisc",
            Cap::Tbf => "tbf qdisc",
            Cap::Pfifo => "pfifo/bfifo qdisc",
            Cap::IfbRedirect => "ifb device, ingress qdisc and mirred redirect",
            Cap::Nft => "nftables",
        }
    }

    /// The commands that need it to work, `{ns}` the scratch namespace, `{d}` a veth.
    fn script(self) -> &'static [&'static str] {
        match self {
            Cap::Htb => &[
                "tc -n {ns} qdisc add dev {d} root handle 1: htb default 1",
                "tc -n {ns} class add dev {d} parent 1: classid 1:1 htb rate 1mbit",
            ],
            Cap::U32 => &[
                "tc -n {ns} qdisc add dev {d} root handle 1: htb default 1",
                "tc -n {ns} class add dev {d} parent 1: classid 1:1 htb rate 1mbit",
                "tc -n {ns} filter add dev {d} parent 1: protocol ip prio 1 u32 match ip dst 10.0.0.0/8 flowid 1:1",
            ],
            Cap::FqCodel => &["tc -n {ns} qdisc add dev {d} root fq_codel"],
            Cap::Sfq => &["tc -n {ns} qdisc add dev {d} root sfq"],
            Cap::Tbf => {
                &["tc -n {ns} qdisc add dev {d} root tbf rate 1mbit burst 10kb latency 50ms"]
            }
            Cap::Pfifo => &[
                "tc -n {ns} qdisc add dev {d} root pfifo limit 100",
                "tc -n {ns} qdisc replace dev {d} root bfifo limit 100000",
            ],
            Cap::IfbRedirect => &[
                "ip -n {ns} link add {d}i type ifb",
                "tc -n {ns} qdisc add dev {d} ingress",
                "tc -n {ns} filter add dev {d} parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {d}i",
            ],
            Cap::Nft => &["ip netns exec {ns} nft add table inet nqprobe"],
        }
    }
}

/// What the policy's plan needs (without a policy: everything).
pub fn needed(model: Option<&Model>) -> Vec<Cap> {
    let Some(m) = model else {
        return vec![
            Cap::Htb,
            Cap::U32,
            Cap::FqCodel,
            Cap::Sfq,
            Cap::Tbf,
            Cap::Pfifo,
            Cap::IfbRedirect,
            Cap::Nft,
        ];
    };
    let mut caps = Vec::new();
    if !m.interfaces.is_empty() {
        // Leaves without a `qdisc` get a bfifo (`lower`).
        caps.extend([Cap::Htb, Cap::U32, Cap::Pfifo]);
    }
    if m.interfaces
        .iter()
        .any(|i| i.direction == Direction::Ingress)
    {
        caps.push(Cap::IfbRedirect);
    }
    fn leaves(c: &[crate::model::Class], caps: &mut Vec<Cap>) {
        for c in c {
            match &c.qdisc {
                Some(LeafQdisc::FqCodel { .. }) => caps.push(Cap::FqCodel),
                Some(LeafQdisc::Sfq { .. }) => caps.push(Cap::Sfq),
                Some(LeafQdisc::Tbf { .. }) => caps.push(Cap::Tbf),
                Some(LeafQdisc::Pfifo { .. } | LeafQdisc::Bfifo { .. }) | None => {}
            }
            leaves(&c.children, caps);
        }
    }
    for i in &m.interfaces {
        leaves(&i.classes, &mut caps);
    }
    caps.sort();
    caps.dedup();
    caps
}

fn sh(cmd: &str) -> Result<(), String> {
    let out = Command::new("sh")
        .args(["-c", &format!("timeout 5 {cmd}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the probes of `caps` in a scratch namespace; `Err` when the namespace cannot be
/// created (not root, no iproute2). The namespace is deleted before returning.
pub fn run(caps: &[Cap]) -> super::node::ProbeResults {
    let ns = format!("nqdoctor-{}", std::process::id());
    sh(&format!("ip netns add {ns}"))?;
    let mut out = Vec::new();
    for (n, cap) in caps.iter().enumerate() {
        let d = format!("nqp{n}");
        let r = sh(&format!("ip -n {ns} link add {d} type veth peer name {d}p")).and_then(|()| {
            cap.script()
                .iter()
                .try_for_each(|c| sh(&c.replace("{ns}", &ns).replace("{d}", &d)))
        });
        out.push((*cap, r));
    }
    let _ = sh(&format!("ip netns del {ns}"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_policy_needs_htb_u32_and_the_default_bfifo_and_named_leaves_add_theirs() {
        let src = "netqos 1\n\ninterface eth0 ingress {\n    rate 1gbit\n    class a {\n        rate 50%\n        qdisc sfq\n        default\n    }\n}\n";
        let checked = crate::check_source(src, &Default::default());
        let model = checked.model.expect("valid policy");
        assert_eq!(
            needed(Some(&model)),
            vec![Cap::Htb, Cap::U32, Cap::Sfq, Cap::Pfifo, Cap::IfbRedirect]
        );
        assert!(needed(None).contains(&Cap::Nft));
    }
}
