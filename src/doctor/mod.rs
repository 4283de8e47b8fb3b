//! `netqos doctor`: reads a node (read-only) and says whether a policy can hold there, each
//! finding an NQ100–NQ114 diagnostic. [`node::Node`] is what is read (a root-prefixed
//! filesystem and, on the live node, rtnetlink and [`probe`]s in a scratch namespace);
//! [`cni`] and [`links`] turn it into
//! findings; [`inspect`] puts them together.

pub mod cni;
pub mod links;
pub mod node;
pub mod probe;

use crate::codes::Code;
use crate::diagnostic::Diagnostic;
use crate::model::Model;

use node::Node;

/// What `doctor` found: diagnostics about the node (no span) and about the policy (spans in
/// its text).
#[derive(Debug, Default)]
pub struct Report {
    pub node: Vec<Diagnostic>,
    pub policy: Vec<Diagnostic>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.node
            .iter()
            .chain(&self.policy)
            .any(Diagnostic::is_error)
    }
}

/// Inspects `node`, against a checked policy (its model and text) when one is given.
pub fn inspect(node: &dyn Node, policy: Option<(&Model, &str)>) -> Report {
    let mut report = Report::default();
    let pods = policy
        .and_then(|(m, _)| m.pods.as_ref())
        .map(|p| cni::PolicyPods {
            cni: p.cni.as_ref(),
        });
    report.node.extend(cni::findings(node, pods));
    let links = node.links();
    let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    let roots = node.root_qdiscs(&names);
    if policy.is_none() {
        for l in &links {
            let root = match &roots {
                None => "root qdisc not read (only on the live node)".to_string(),
                Some(r) => r
                    .iter()
                    .find(|(d, _)| *d == l.name)
                    .map_or_else(|| "no root qdisc".to_string(), |(_, k)| format!("root {k}")),
            };
            let speed = l
                .speed_mbit
                .map_or_else(|| "speed unknown".to_string(), |s| format!("{s} Mbit/s"));
            report.node.push(Diagnostic::new(
                Code::NQ111,
                format!("{}: {speed}, {} TX queue(s), {root}", l.name, l.tx_queues),
            ));
        }
    }
    let shaped: Option<Vec<String>> =
        policy.map(|(m, _)| m.interfaces.iter().map(|i| i.device.clone()).collect());
    if let Some(roots) = &roots {
        report
            .node
            .extend(links::mq_findings(&links, roots, shaped.as_deref()));
    }
    report
        .node
        .extend(probe_findings(node, policy.map(|(m, _)| m)));
    if let Some((model, src)) = policy {
        let speed = |dev: &str| {
            links
                .iter()
                .find(|l| l.name == dev)
                .and_then(|l| l.speed_mbit)
        };
        report
            .policy
            .extend(links::rate_findings(model, src, &speed));
    }
    report
}

/// NQ112 for each feature the policy (or, without one, netqos) needs that the kernel lacks,
/// NQ113 when nothing could be probed, NQ114 listing what works (without a policy).
fn probe_findings(node: &dyn Node, model: Option<&Model>) -> Vec<Diagnostic> {
    let caps = probe::needed(model);
    let Some(results) = node.probe(&caps) else {
        return Vec::new();
    };
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            return vec![
                Diagnostic::new(
                    Code::NQ113,
                    format!("kernel capability probes not run: {e}"),
                )
                .help("run doctor as root (it creates and deletes a scratch network namespace)"),
            ];
        }
    };
    let mut out = Vec::new();
    let mut ok = Vec::new();
    for (cap, r) in results {
        match r {
            Ok(()) => ok.push(cap.name()),
            Err(e) => {
                let mut d = Diagnostic::new(
                    Code::NQ112,
                    format!("the kernel (or iproute2) cannot provide the {}: {e}", cap.name()),
                )
                .help("load the module (modprobe sch_htb, cls_u32, act_mirred, ifb, nf_tables, …) or install the tool");
                if model.is_none() {
                    d = d.severity(crate::diagnostic::Severity::Warning);
                }
                out.push(d);
            }
        }
    }
    if model.is_none() && !ok.is_empty() {
        out.push(Diagnostic::new(
            Code::NQ114,
            format!("the kernel provides: {}", ok.join(", ")),
        ));
    }
    out
}
