//! What netqos knows about each `cni` flavour: where its conflist lives on the node, what the
//! file looks like by default, and the durable source that rewrites the file when the CNI pod
//! (or K3s) restarts.

use crate::model::Cni;

/// The source a flavour's conflist is regenerated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// A ConfigMap key holding the conflist JSON (upstream flannel, Canal, Calico).
    ConfigMap {
        namespace: &'static str,
        name: &'static str,
        key: &'static str,
        daemonset: &'static str,
    },
    /// RKE2's HelmChartConfig for the `rke2-flannel` chart (`flannel.cniConf`).
    Rke2FlannelChart,
    /// K3s writes the file at every start unless `--flannel-cni-conf FILE` names another.
    K3sFlag,
    /// A file the operator named: netqos does not know what rewrites it.
    Unknown,
}

/// Whether the flavour's current default already chains the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    /// The default lacks the entry (netqos patches it).
    Lacks(&'static str),
    /// The default has had the entry since the given release.
    Has(&'static str),
    /// Calico shapes pods itself from 3.30 on; before that its manifests chained the plugin.
    CalicoNative,
    /// Unknown (a `file` flavour).
    Unknown,
}

pub struct Flavour {
    pub conflist_path: String,
    pub durable: Durable,
    pub default: Default,
}

/// Upstream flannel's `cni-conf.json` (kube-flannel.yml v0.28.9), also RKE2's before March
/// 2025.
pub const FLANNEL_DEFAULT: &str = include_str!("defaults/flannel.conflist");

#[must_use]
pub fn of(cni: &Cni) -> Flavour {
    match cni {
        Cni::Flannel => Flavour {
            conflist_path: "/etc/cni/net.d/10-flannel.conflist".into(),
            durable: Durable::ConfigMap {
                namespace: "kube-flannel",
                name: "kube-flannel-cfg",
                key: "cni-conf.json",
                daemonset: "kube-flannel-ds",
            },
            default: Default::Lacks(FLANNEL_DEFAULT),
        },
        Cni::Rke2Flannel => Flavour {
            conflist_path: "/etc/cni/net.d/10-flannel.conflist".into(),
            durable: Durable::Rke2FlannelChart,
            // rke2-charts PR #640 added it in March 2025 (RKE2 v1.32.3, v1.31.7, v1.30.11);
            // older nodes (the seed's) have upstream flannel's chain.
            default: Default::Lacks(FLANNEL_DEFAULT),
        },
        Cni::K3s => Flavour {
            conflist_path: "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist".into(),
            durable: Durable::K3sFlag,
            default: Default::Has("K3s v1.27 (May 2023, backported to v1.24–v1.26)"),
        },
        Cni::Rke2Canal => Flavour {
            conflist_path: "/etc/cni/net.d/10-canal.conflist".into(),
            durable: Durable::ConfigMap {
                namespace: "kube-system",
                name: "rke2-canal-config",
                key: "cni_network_config",
                daemonset: "rke2-canal",
            },
            default: Default::Has("the first rke2-canal chart (2020)"),
        },
        Cni::Canal => Flavour {
            conflist_path: "/etc/cni/net.d/10-canal.conflist".into(),
            durable: Durable::ConfigMap {
                namespace: "kube-system",
                name: "canal-config",
                key: "cni_network_config",
                daemonset: "canal",
            },
            default: Default::CalicoNative,
        },
        Cni::Calico => Flavour {
            conflist_path: "/etc/cni/net.d/10-calico.conflist".into(),
            durable: Durable::ConfigMap {
                namespace: "kube-system",
                name: "calico-config",
                key: "cni_network_config",
                daemonset: "calico-node",
            },
            default: Default::CalicoNative,
        },
        Cni::File(path) => Flavour {
            conflist_path: path.clone(),
            durable: Durable::Unknown,
            default: Default::Unknown,
        },
    }
}

/// The flavour's name as written in a policy.
#[must_use]
pub fn name(cni: &Cni) -> String {
    match cni {
        Cni::Flannel => "flannel".into(),
        Cni::Canal => "canal".into(),
        Cni::K3s => "k3s".into(),
        Cni::Rke2Flannel => "rke2-flannel".into(),
        Cni::Rke2Canal => "rke2-canal".into(),
        Cni::Calico => "calico".into(),
        Cni::File(p) => format!("file \"{p}\""),
    }
}
