//! Metrics: the per-class counters of the kernel and the agent's own counters, as the
//! Prometheus text exposition format (0.0.4, through `prometheus-client`) and as JSON.
//! Pure: the caller reads the counters (`counters`) and fills an `Exposition`.
//!
//! Per class (labels `interface`, `direction`, `class`, `classid`): bytes, packets, drops,
//! overlimits (counters), backlog, guaranteed and ceiling rate (gauges). The agent adds
//! drift events and repairs by kind, applies by outcome, the policy's hash and load time,
//! health, and how the mirror was read.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::apply::model::fmt_handle;
use crate::apply::netlink::tc::Stats;
use crate::plan::Plan;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Drift kinds, always exported (zero until seen) so that queries find the series.
pub const DRIFT_KINDS: [&str; 7] = [
    "class",
    "root_qdisc",
    "leaf_qdisc",
    "filter",
    "ingress_hook",
    "link",
    "conflist",
];

/// Apply outcomes, always exported.
pub const OUTCOMES: [&str; 5] = [
    "applied",
    "unchanged",
    "refused",
    "rolled_back",
    "rollback_failed",
];

/// A class of the applied policy, with the names its metrics carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// The policy's interface (`eth0`, also for ingress, whose tree is on the IFB).
    pub interface: String,
    pub direction: String,
    /// The class path (`pods/web`); empty for the root class `1:1`.
    pub class: String,
    /// `1:3c3a`.
    pub classid: String,
    /// The device the tree is on (the interface, or its IFB).
    pub device: String,
    /// The parent class id (`1:` for the root class).
    #[serde(default)]
    pub parent: String,
    /// bit/s.
    pub rate: u64,
    pub ceil: u64,
}

impl ClassInfo {
    /// The class id as the kernel has it (`1:3c3a` → 0x0001_3c3a; 0 if malformed).
    pub fn handle(&self) -> u32 {
        let Some((maj, min)) = self.classid.split_once(':') else {
            return 0;
        };
        match (u16::from_str_radix(maj, 16), u16::from_str_radix(min, 16)) {
            (Ok(a), Ok(b)) => (u32::from(a) << 16) | u32::from(b),
            _ => 0,
        }
    }
}

/// The classes of a plan, in plan order (parents first).
pub fn classes_of(plan: &Plan) -> Vec<ClassInfo> {
    plan.devices
        .iter()
        .flat_map(|d| {
            d.classes.iter().map(move |c| ClassInfo {
                interface: d.device.clone(),
                direction: d.direction.as_str().to_string(),
                class: c.name.clone(),
                classid: c.classid.to_string(),
                device: d.shaped_device.clone(),
                parent: c.parent.to_string(),
                rate: c.rate,
                ceil: c.ceil,
            })
        })
        .collect()
}

/// One class and its counters (`None`: the class is not in the kernel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassSample {
    #[serde(flatten)]
    pub info: ClassInfo,
    pub stats: Option<Stats>,
}

/// The agent's own counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentCounters {
    pub drift_events: BTreeMap<String, u64>,
    pub drift_repairs: BTreeMap<String, u64>,
    pub applies: BTreeMap<String, u64>,
    /// FNV-1a of the policy text and its vars, hex.
    pub policy_hash: String,
    pub policy_file: String,
    /// Unix seconds of the last good load.
    pub policy_loaded: u64,
    pub healthy: bool,
    /// Why not healthy.
    pub reason: String,
    pub mirror_full_reads: u64,
    pub mirror_partial_reads: u64,
    /// Seconds of the last re-apply (tree and resources, not the check).
    pub last_apply_seconds: f64,
    /// Seconds from the event (or file change) that showed the last drift to its
    /// verified repair.
    pub last_repair_seconds: f64,
}

/// Everything one exposition shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Exposition {
    pub classes: Vec<ClassSample>,
    pub agent: Option<AgentCounters>,
    /// Differences between the kernel and the applied policy (`status`), if known.
    pub drift: Option<usize>,
}

/// The classes with the counters of `stats` (keyed by device and classid).
pub fn sample(classes: &[ClassInfo], stats: &BTreeMap<(String, u32), Stats>) -> Vec<ClassSample> {
    classes
        .iter()
        .map(|c| ClassSample {
            info: c.clone(),
            stats: stats.get(&(c.device.clone(), c.handle())).copied(),
        })
        .collect()
}

#[derive(Debug)]
struct Collect(Exposition);

type Labels = Vec<(&'static str, String)>;

fn class_labels(c: &ClassInfo) -> Labels {
    vec![
        ("interface", c.interface.clone()),
        ("direction", c.direction.clone()),
        ("class", c.class.clone()),
        ("classid", c.classid.clone()),
    ]
}

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ConstGauge::new(0.0f64).metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn by_kind(map: &BTreeMap<String, u64>, label: &'static str, all: &[&str]) -> Vec<(Labels, u64)> {
    let mut keys: Vec<String> = all.iter().map(|k| k.to_string()).collect();
    keys.extend(map.keys().cloned());
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let v = map.get(&k).copied().unwrap_or(0);
            (vec![(label, k)], v)
        })
        .collect()
}

impl Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let classes = &self.0.classes;
        let present: Present = classes
            .iter()
            .filter_map(|c| c.stats.map(|s| (&c.info, s)))
            .collect();
        class_counters(&mut enc, &present)?;
        class_gauges(&mut enc, &present)?;
        class_presence(&mut enc, classes)?;
        if let Some(n) = self.0.drift {
            gauge_family(
                &mut enc,
                "netqos_drift_differences",
                "Changes `netqos apply` would make to return the kernel to the applied policy",
                &[(vec![], n as f64)],
            )?;
        }
        let Some(a) = &self.0.agent else {
            return Ok(());
        };
        agent_events(&mut enc, a)?;
        agent_state(&mut enc, a)
    }
}

/// The classes of the applied policy that the kernel holds, with their counters.
type Present<'a> = Vec<(&'a ClassInfo, Stats)>;

/// The kernel counters of each present class.
fn class_counters(enc: &mut DescriptorEncoder, present: &Present) -> Result<(), std::fmt::Error> {
    let rows = |f: &dyn Fn(&Stats) -> u64| -> Vec<(Labels, u64)> {
        present
            .iter()
            .map(|(c, s)| (class_labels(c), f(s)))
            .collect()
    };
    // `_total` is added by the encoder for counters.
    counter_family(
        enc,
        "netqos_class_bytes",
        "Bytes sent by the class (kernel counter)",
        &rows(&|s| s.bytes),
    )?;
    counter_family(
        enc,
        "netqos_class_packets",
        "Packets sent by the class (kernel counter)",
        &rows(&|s| u64::from(s.packets)),
    )?;
    counter_family(
        enc,
        "netqos_class_drops",
        "Packets the class dropped",
        &rows(&|s| u64::from(s.drops)),
    )?;
    counter_family(
        enc,
        "netqos_class_overlimits",
        "Times the class was over its rate and had to wait or borrow",
        &rows(&|s| u64::from(s.overlimits)),
    )?;
    Ok(())
}

/// The backlog and configured rates of each present class.
fn class_gauges(enc: &mut DescriptorEncoder, present: &Present) -> Result<(), std::fmt::Error> {
    let g = |f: &dyn Fn(&ClassInfo, &Stats) -> f64| -> Vec<(Labels, f64)> {
        present
            .iter()
            .map(|(c, s)| (class_labels(c), f(c, s)))
            .collect()
    };
    gauge_family(
        enc,
        "netqos_class_backlog_bytes",
        "Bytes queued in the class now",
        &g(&|_, s| f64::from(s.backlog)),
    )?;
    gauge_family(
        enc,
        "netqos_class_guaranteed_bytes_per_second",
        "The class's guaranteed rate (HTB rate)",
        &g(&|c, _| (c.rate / 8) as f64),
    )?;
    gauge_family(
        enc,
        "netqos_class_ceiling_bytes_per_second",
        "The most the class may use when borrowing (HTB ceil)",
        &g(&|c, _| (c.ceil / 8) as f64),
    )?;
    Ok(())
}

/// 1 or 0 for each class of the applied policy: whether the kernel holds it.
fn class_presence(
    enc: &mut DescriptorEncoder,
    classes: &[ClassSample],
) -> Result<(), std::fmt::Error> {
    let missing: Vec<(Labels, f64)> = classes
        .iter()
        .map(|c| {
            (
                class_labels(&c.info),
                if c.stats.is_some() { 1.0 } else { 0.0 },
            )
        })
        .collect();
    gauge_family(
        enc,
        "netqos_class_present",
        "1 when the class of the applied policy is in the kernel, else 0",
        &missing,
    )
}

/// The agent's drift, repair and apply counters, by kind.
fn agent_events(enc: &mut DescriptorEncoder, a: &AgentCounters) -> Result<(), std::fmt::Error> {
    counter_family(
        enc,
        "netqos_drift_events",
        "Differences from the policy found in the kernel or the conflist, by kind",
        &by_kind(&a.drift_events, "kind", &DRIFT_KINDS),
    )?;
    counter_family(
        enc,
        "netqos_drift_repairs",
        "Differences repaired, by kind",
        &by_kind(&a.drift_repairs, "kind", &DRIFT_KINDS),
    )?;
    counter_family(
        enc,
        "netqos_applies",
        "Applies by outcome (refused: the policy did not check)",
        &by_kind(&a.applies, "outcome", &OUTCOMES),
    )?;
    Ok(())
}

/// The agent's policy, health, mirror and timing figures.
fn agent_state(enc: &mut DescriptorEncoder, a: &AgentCounters) -> Result<(), std::fmt::Error> {
    gauge_family(
        enc,
        "netqos_policy_info",
        "The policy being enforced (value 1)",
        &[(
            vec![
                ("hash", a.policy_hash.clone()),
                ("file", a.policy_file.clone()),
            ],
            1.0,
        )],
    )?;
    gauge_family(
        enc,
        "netqos_policy_load_timestamp_seconds",
        "When the enforced policy was loaded (Unix time)",
        &[(vec![], a.policy_loaded as f64)],
    )?;
    gauge_family(
        enc,
        "netqos_healthy",
        "1 when the kernel holds the policy and the last apply succeeded",
        &[(vec![], if a.healthy { 1.0 } else { 0.0 })],
    )?;
    counter_family(
        enc,
        "netqos_mirror_reads",
        "Kernel reads of the mirror (full: every device; partial: dirty devices)",
        &[
            (vec![("kind", "full".to_string())], a.mirror_full_reads),
            (
                vec![("kind", "partial".to_string())],
                a.mirror_partial_reads,
            ),
        ],
    )?;
    gauge_family(
        enc,
        "netqos_last_apply_seconds",
        "How long the last apply took (diff, send, verify, resources)",
        &[(vec![], a.last_apply_seconds)],
    )?;
    gauge_family(
        enc,
        "netqos_last_repair_seconds",
        "From the event that showed the last drift to its verified repair",
        &[(vec![], a.last_repair_seconds)],
    )?;
    Ok(())
}

/// The Prometheus text exposition.
pub fn prometheus(e: &Exposition) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collect(e.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The same as JSON.
pub fn json(e: &Exposition) -> serde_json::Value {
    let classes: Vec<serde_json::Value> = e
        .classes
        .iter()
        .map(|c| {
            serde_json::json!({
                "interface": c.info.interface,
                "direction": c.info.direction,
                "class": c.info.class,
                "classid": c.info.classid,
                "device": c.info.device,
                "guaranteed_bits_per_second": c.info.rate,
                "ceiling_bits_per_second": c.info.ceil,
                "present": c.stats.is_some(),
                "bytes": c.stats.map(|s| s.bytes),
                "packets": c.stats.map(|s| s.packets),
                "drops": c.stats.map(|s| s.drops),
                "overlimits": c.stats.map(|s| s.overlimits),
                "backlog_bytes": c.stats.map(|s| s.backlog),
            })
        })
        .collect();
    serde_json::json!({ "classes": classes, "agent": e.agent, "drift": e.drift })
}

/// The classes of an applied target when their names are unknown (named by classid).
pub fn classes_of_target(t: &crate::apply::state::Target) -> Vec<ClassInfo> {
    let mut out = Vec::new();
    for tree in &t.trees {
        let interface = t
            .hooks
            .iter()
            .find(|(_, h)| {
                matches!(h, crate::apply::state::HookWant::Redirect { ifb } if *ifb == tree.dev)
            })
            .map(|(d, _)| d.clone());
        for c in &tree.classes {
            out.push(ClassInfo {
                interface: interface.clone().unwrap_or_else(|| tree.dev.clone()),
                direction: if interface.is_some() {
                    "ingress"
                } else {
                    "egress"
                }
                .into(),
                class: fmt_handle(c.classid),
                classid: fmt_handle(c.classid),
                device: tree.dev.clone(),
                parent: fmt_handle(c.parent),
                rate: c.rate.saturating_mul(8),
                ceil: c.ceil.saturating_mul(8),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClassInfo {
        ClassInfo {
            interface: "eth0".into(),
            direction: "egress".into(),
            class: "control-plane".into(),
            classid: "1:10".into(),
            device: "eth0".into(),
            parent: "1:1".into(),
            rate: 200_000_000,
            ceil: 950_000_000,
        }
    }

    #[test]
    fn class_counters_carry_their_labels() {
        let stats = BTreeMap::from([(
            ("eth0".to_string(), 0x0001_0010),
            Stats {
                bytes: 1234,
                packets: 5,
                ..Stats::default()
            },
        )]);
        let e = Exposition {
            classes: sample(&[info()], &stats),
            agent: Some(AgentCounters::default()),
            drift: None,
        };
        let text = prometheus(&e);
        assert!(text.contains(
            "netqos_class_bytes_total{interface=\"eth0\",direction=\"egress\",class=\"control-plane\",classid=\"1:10\"} 1234\n"
        ), "{text}");
        assert!(
            text.contains("# TYPE netqos_class_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("netqos_class_guaranteed_bytes_per_second{"),
            "{text}"
        );
        assert!(
            text.contains("netqos_drift_events_total{kind=\"conflist\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("netqos_applies_total{outcome=\"refused\"} 0"),
            "{text}"
        );
        let j = json(&e);
        assert_eq!(j["classes"][0]["bytes"], 1234);
    }

    #[test]
    fn a_missing_class_is_reported_absent_not_zero() {
        let e = Exposition {
            classes: sample(&[info()], &BTreeMap::new()),
            agent: None,
            drift: None,
        };
        let text = prometheus(&e);
        assert!(!text.contains("netqos_class_bytes_total{"), "{text}");
        assert!(text.contains("netqos_class_present{interface=\"eth0\",direction=\"egress\",class=\"control-plane\",classid=\"1:10\"} 0"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut i = info();
        i.class = "a\"b\\c".into();
        let e = Exposition {
            classes: sample(&[i], &BTreeMap::new()),
            agent: None,
            drift: None,
        };
        assert!(prometheus(&e).contains(r#"class="a\"b\\c""#));
    }
}
